"""Self-distilled replay data against forgetting: general prompts answered by the base model itself.

Mixed into training (`data.mix`, 10-20%), these conversations pull the adapter towards the base
model's own behaviour everywhere outside the task, which is what the regression suite measures.
The answers are the base model's, so nothing new is taught and no teacher or download is needed.
The 72 shipped prompts (replay_prompts.txt) are general (arithmetic, facts, instructions, formats,
short writing) and deliberately none of the regression suite's prompts: a test checks that no
replay prompt is a near duplicate of a suite prompt, so the suite keeps measuring held-out ability.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from rich.console import Console

PROMPTS_FILE = "replay_prompts.txt"
# Answers of the embedded models to the shipped prompts, made by `cached_self_distill` itself: a first
# quickstart then spends no time on them. Looked up by the same key as the cache, so they are only
# used for exactly those weights (the GGUF's sha256), prompts and settings.
SHIPPED_DIR = "replay_answers"


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


def replay_key(model_dir: Path, prompts: list[str], system_prompt: str | None, max_new_tokens: int) -> str:
    """Greedy answers of the same weights to the same prompts never change: the weights are named by the
    GGUF's sha256 where the model came from one (the same file converts to the same folder anywhere), else
    by the folder."""
    from tunesmith.models import model_facts

    source = model_facts(model_dir).get("model_source") or {}
    identity = source.get("sha256") or str(Path(model_dir).resolve())
    blob = json.dumps([identity, prompts, system_prompt, max_new_tokens], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cached_self_distill(model_spec: str, prompts: list[str], *, system_prompt: str | None = None,
                        max_new_tokens: int = 128, console: Console | None = None,
                        show_progress: bool = True) -> tuple[Replay, str]:
    """`self_distill`, computed once per model: (the answers, "cache" | "shipped" | "computed")."""
    from tunesmith.models import cache_dir, resolve_model

    key = replay_key(resolve_model(model_spec), prompts, system_prompt, max_new_tokens)
    cached = cache_dir() / "replay" / f"{key}.json"
    shipped = resources.files("tunesmith.data").joinpath(SHIPPED_DIR, f"{key}.json")
    for origin, path in (("cache", cached), ("shipped", shipped)):
        if path.is_file():
            return Replay(**json.loads(path.read_text(encoding="utf-8"))), origin
    result = self_distill(model_spec, prompts, system_prompt=system_prompt, max_new_tokens=max_new_tokens,
                          console=console, show_progress=show_progress)
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps({"records": result.records, "empty": result.empty}, ensure_ascii=False),
                      encoding="utf-8")
    return result, "computed"
