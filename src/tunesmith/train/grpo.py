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


def prompt_dataset(records: list[Conversation]):
    from datasets import Dataset

    return Dataset.from_list([{"prompt": c.prompt_messages(), "question": c.last_user()} for c in records])


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
