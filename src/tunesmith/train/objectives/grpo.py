"""grpo: TRL's GRPOTrainer, rewarded by the rules contract.

Prompts are the chat records without their final assistant turn (system prompt kept).
For each prompt the model samples `grpo.num_generations` answers; an answer's reward is
the fraction of the rules in data.rules it passes (`echo` rules see the last user message),
the same check `tunesmith eval` reports as format compliance. There is no loss to evaluate,
so data.val is not read.
"""

from __future__ import annotations

from typing import Any

from tunesmith.config import RunConfig
from tunesmith.data.records import Conversation
from tunesmith.rules import RuleSet, load_rules
from tunesmith.train.objective import Built, Data, Objective, Setup
from tunesmith.train.tokenize import DataError, TemplateError, record_location, render_chat


def prompt_data(cfg: RunConfig, tokenizer, splits, console) -> Data:
    """The prompts, each rendered once here so that a template that refuses one names its line (rather than
    failing inside TRL's sampling)."""
    from datasets import Dataset

    if splits.get("val"):
        console.print("[dim]grpo: data.val is not used (there is no loss to evaluate on it)[/]")
    records: list[Conversation] = splits["train"]
    rows = [{"prompt": c.prompt_messages(), "question": c.last_user()} for c in records]
    for i, (c, row) in enumerate(zip(records, rows)):
        try:
            render_chat(tokenizer, row["prompt"], tokenize=False, add_generation_prompt=True)
        except TemplateError as e:
            raise DataError(f"{record_location(c, i)}: {e}") from None
    return Data(Dataset.from_list(rows))


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


def grpo_trainer(setup: Setup, data: Data) -> Built:
    from trl import GRPOConfig, GRPOTrainer

    g = setup.cfg.grpo
    args = GRPOConfig(**setup.args(has_eval=False), num_generations=g.num_generations,
                      max_completion_length=g.max_completion_length, temperature=g.temperature, beta=g.beta)
    return Built(GRPOTrainer(model=setup.model, reward_funcs=rules_reward(load_rules(setup.cfg.data.rules)),
                             args=args, train_dataset=data.train, processing_class=setup.tokenizer,
                             callbacks=setup.callbacks))


OBJECTIVE = Objective("grpo", Conversation, datasets=prompt_data, trainer=grpo_trainer, uses_val=False)
