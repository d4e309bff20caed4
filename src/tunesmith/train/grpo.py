"""GRPO with TRL's GRPOTrainer, rewarded by the rules contract.

Prompts are the chat records without their final assistant turn (system prompt kept).
For each prompt the model samples `grpo.num_generations` answers; an answer's reward is
the fraction of the rules in data.rules it passes (`echo` rules see the last user message),
the same check `tunesmith eval` reports as format compliance.
"""

from __future__ import annotations

from typing import Any

from tunesmith.config import RunConfig
from tunesmith.data.records import Conversation
from tunesmith.rules import RuleSet, load_rules


def prompt_dataset(records: list[Conversation], tokenizer):
    """The prompts, each rendered once here so that a template that refuses one names its line (rather than
    failing inside TRL's sampling)."""
    from datasets import Dataset

    from tunesmith.train.sft import DataError, record_location
    from tunesmith.train.tokenize import TemplateError, render_chat

    rows = [{"prompt": c.prompt_messages(), "question": c.last_user()} for c in records]
    for i, (c, row) in enumerate(zip(records, rows)):
        try:
            render_chat(tokenizer, row["prompt"], tokenize=False, add_generation_prompt=True)
        except TemplateError as e:
            raise DataError(f"{record_location(c, i)}: {e}") from None
    return Dataset.from_list(rows)


def _text(completion: Any) -> str:
    if isinstance(completion, list):  # conversational: [{"role": "assistant", "content": ...}]
        return "".join(m.get("content") or "" for m in completion)
    return str(completion)


def rules_reward(rules: RuleSet):
    """A TRL reward function: fraction of rules passed by each completion."""

    def rules_passed(prompts, completions, question, **_) -> list[float]:
        return [sum(r.values()) / len(r) for r in
                (rules.check_answer(_text(c), q) for c, q in zip(completions, question))]

    return rules_passed


def grpo_trainer(cfg: RunConfig, model, tokenizer, common: dict[str, Any], train_ds, callbacks):
    from trl import GRPOConfig, GRPOTrainer

    g = cfg.grpo
    args = GRPOConfig(**common, num_generations=g.num_generations, max_completion_length=g.max_completion_length,
                      temperature=g.temperature, beta=g.beta)
    return GRPOTrainer(model=model, reward_funcs=rules_reward(load_rules(cfg.data.rules)), args=args,
                       train_dataset=train_ds, processing_class=tokenizer, callbacks=callbacks)
