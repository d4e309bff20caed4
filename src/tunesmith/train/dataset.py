"""Training data for a run: read with the data stage's readers, system prompt applied, mixed, hashed.

The objective decides the record type a file must hold: sft and grpo read conversations,
dpo reads preference pairs, pretrain reads raw text.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from tunesmith.config import RunConfig
from tunesmith.data.formats import sha256_file
from tunesmith.data.records import Conversation, Message, Preference, Record, Text
from tunesmith.errors import UserError

RECORD_TYPES: dict[str, type] = {"sft": Conversation, "grpo": Conversation, "dpo": Preference, "pretrain": Text}
_NEEDS = {Conversation: "chat data", Preference: "preference pairs (prompt, chosen, rejected)", Text: "raw text"}


class TrainingDataError(UserError):
    pass


def read_conversations(path: str, fmt: str = "auto", system_prompt: str | None = None) -> list[Conversation]:
    """Valid conversations of a file; any invalid record stops training with its line and reason."""
    return read_records(path, fmt, system_prompt, Conversation, "sft")


def read_records(path: str, fmt: str, system_prompt: str | None, kind: type, objective: str) -> list[Record]:
    """Valid records of one type; an invalid record, or a record of another type, stops training."""
    from tunesmith.data.formats import read_file

    result = read_file(path, fmt)
    if result.invalid:
        shown = "; ".join(f"line {i.line}: {i.reason} ({i.message})" for i in result.invalid[:5])
        more = f" and {len(result.invalid) - 5} more" if len(result.invalid) > 5 else ""
        raise TrainingDataError(
            f"{path}: {len(result.invalid)} invalid record(s): {shown}{more}. "
            f"Run `tunesmith data check {path}` for the full list and `tunesmith data clean` to set them aside."
        )
    if not result.records:  # an empty val or mix file would otherwise be skipped without a word
        raise TrainingDataError(f"{path}: no records in the file (it is empty or holds only blank lines)")
    records = [r for r in result.records if isinstance(r, kind)]
    if len(records) != len(result.records):
        raise TrainingDataError(
            f"{path}: format {result.format!r} does not hold {_NEEDS[kind]}, which objective {objective} needs"
        )
    if system_prompt:
        for r in records:
            if isinstance(r, Conversation) and r.system is None:
                r.messages.insert(0, Message("system", system_prompt))
            elif isinstance(r, Preference) and not (r.prompt and r.prompt[0].role == "system"):
                r.prompt.insert(0, Message("system", system_prompt))
    return records


def _mix(train: list[Record], cfg: RunConfig, seed: int) -> tuple[list[Record], list[dict[str, Any]]]:
    """Add each mix source so that it makes up `weight` of the final set (sampled with a fixed seed)."""
    rng = random.Random(seed)
    total_weight = sum(m.weight for m in cfg.data.mix)
    if total_weight >= 1:
        raise TrainingDataError("data.mix weights must add up to less than 1 (the rest is the main training set)")
    final_size = round(len(train) / (1 - total_weight))
    out = list(train)
    info = []
    for m in cfg.data.mix:
        extra = read_records(m.path, "auto", cfg.data.system_prompt, RECORD_TYPES[cfg.objective], cfg.objective)
        k = round(final_size * m.weight)
        if k == 0:
            raise TrainingDataError(f"data.mix: {m.path}: weight {m.weight} of {final_size} training examples is 0 "
                                    "examples; raise its weight or leave the source out")
        picked = [extra[i % len(extra)] for i in rng.sample(range(max(k, len(extra))), k)] if extra else []
        out.extend(picked)
        info.append({"path": m.path, "sha256": sha256_file(m.path), "weight": m.weight, "count": len(picked)})
    rng.shuffle(out)
    return out, info


def load_training_records(cfg: RunConfig) -> tuple[dict[str, list[Record]], dict[str, Any]]:
    """{"train": [...], "val": [...]} and the data manifest (paths, sha256, counts) recorded in run.json."""
    if not cfg.data.train:
        raise TrainingDataError("data.train is not set")
    kind = RECORD_TYPES[cfg.objective]
    splits: dict[str, list[Record]] = {}
    manifest: dict[str, Any] = {}
    for name in ("train", "val", "test"):
        path = getattr(cfg.data, name)
        if not path:
            continue
        if not Path(path).is_file():
            raise TrainingDataError(f"data.{name}: {path} does not exist")
        manifest[name] = {"path": str(path), "sha256": sha256_file(path)}
        if name != "test":  # sealed: only its hash is recorded here
            splits[name] = read_records(path, cfg.data.format, cfg.data.system_prompt, kind, cfg.objective)
            manifest[name]["count"] = len(splits[name])
    if cfg.data.mix:
        splits["train"], manifest["mix"] = _mix(splits["train"], cfg, cfg.train.seed)
    return splits, manifest
