"""Self-distilled replay data against forgetting: general prompts answered by the base model itself.

Mixed into training (`data.mix`, 10-20%), these conversations pull the adapter towards the base
model's own behaviour everywhere outside the task, which is what the regression suite measures.
The answers are the base model's, so nothing new is taught and no teacher or download is needed.
The 72 shipped prompts (replay_prompts.txt) are general (arithmetic, facts, instructions, formats,
short writing) and deliberately none of the regression suite's prompts: a test checks that no
replay prompt is a near duplicate of a suite prompt, so the suite keeps measuring held-out ability.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from rich.console import Console

PROMPTS_FILE = "replay_prompts.txt"


def general_prompts() -> list[str]:
    text = resources.files("tunesmith.data").joinpath(PROMPTS_FILE).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_prompts(path: Path) -> list[str]:
    """The prompts of a file, read as `data synth` reads them (.txt: one per line; any data format: each
    record up to its last user turn); an invalid line stops with its line and reason."""
    from tunesmith.data.formats import DataError
    from tunesmith.data.synth import read_prompts as read_synth_prompts

    prompts, invalid = read_synth_prompts(path)
    if invalid:
        shown = "; ".join(f"line {i.line}: {i.reason} ({i.message})" for i in invalid[:5])
        raise DataError(f"{path}: {len(invalid)} invalid prompt(s): {shown}")
    if not prompts:
        raise DataError(f"{path}: no user prompts found")
    return [p.messages[-1]["content"].strip() for p in prompts]


@dataclass
class Replay:
    records: list[dict] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)  # prompts the model answered with nothing: not written

    def summary(self, out: Path) -> dict:
        return {"written": len(self.records), "empty_answers": len(self.empty), "empty_prompts": self.empty,
                "out": str(out)}


def self_distill(model_spec: str, prompts: list[str], *, system_prompt: str | None = None, max_new_tokens: int = 128,
                 batch_size: int = 16, console: Console | None = None, show_progress: bool = True) -> Replay:
    """Greedy answers of the model to each prompt, as chat records (with the system prompt when given)."""
    from tunesmith.evaluate.generate import generate
    from tunesmith.models import load_model, load_tokenizer, resolve_model

    path = resolve_model(model_spec)
    model, tokenizer = load_model(path), load_tokenizer(path)
    head = [{"role": "system", "content": system_prompt}] if system_prompt else []
    conversations = [head + [{"role": "user", "content": p}] for p in prompts]
    answers = generate(model, tokenizer, conversations, max_new_tokens=max_new_tokens, batch_size=batch_size,
                       label="replay", console=console, show_progress=show_progress)
    out = Replay()
    for conv, answer in zip(conversations, answers):
        if answer.strip():
            out.records.append({"messages": conv + [{"role": "assistant", "content": answer.strip()}]})
        else:
            out.empty.append(conv[-1]["content"])
    return out
