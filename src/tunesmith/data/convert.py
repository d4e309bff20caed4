"""`data convert`: canonical records → chat, Alpaca or ShareGPT JSON lines.

Lossless where the target can hold the record; everything else is skipped or dropped
and said so (multi-turn conversations in Alpaca, preference and text records anywhere,
labels in ShareGPT).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from tunesmith.data.formats import read_file, require_records, write_jsonl
from tunesmith.data.records import Conversation, Record
from tunesmith.errors import UserError

TARGETS = ("chat", "alpaca", "sharegpt")
_SHAREGPT_FROM = {"system": "system", "user": "human", "assistant": "gpt"}


@dataclass
class Converted:
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)  # {"line", "file", "reason"}
    notes: Counter = field(default_factory=Counter)  # what was dropped or moved, with counts


class _Skip(Exception):
    pass


def _alpaca(r: Conversation, notes: Counter) -> dict[str, Any]:
    turns = [m for m in r.messages if m.role != "system"]
    if len(turns) != 2:
        raise _Skip(f"multi-turn conversation ({len(turns)} turns): Alpaca holds one instruction and one output")
    user, answer = turns[0].content, turns[1].content
    original = r.meta.get("alpaca")
    if original and (f"{original['instruction']}\n\n{original['input']}" if original["input"].strip() else original["instruction"]) == user:
        row = {"instruction": original["instruction"], "input": original["input"], "output": answer}
    else:
        row = {"instruction": user, "input": "", "output": answer}
    if r.system is not None:
        row["system"] = r.system  # not in the original Alpaca format; tunesmith and most trainers read it
        notes["system prompt written to the non-standard Alpaca 'system' field"] += 1
    if r.label is not None:
        notes["label kept only as the output text"] += 1
    return row


def _sharegpt(r: Conversation, notes: Counter) -> dict[str, Any]:
    if r.label is not None:
        notes["label dropped (ShareGPT has no label field; it remains the answer text)"] += 1
    return {"conversations": [{"from": _SHAREGPT_FROM[m.role], "value": m.content} for m in r.messages]}


def convert(records: Sequence[Record], to: str) -> Converted:
    if to not in TARGETS:
        raise UserError(f"--to must be one of {', '.join(TARGETS)}, got {to!r}")
    out = Converted()
    for r in records:
        try:
            if not isinstance(r, Conversation):
                raise _Skip(f"a {r.kind} record cannot be written as {to}")
            if to == "chat":
                out.rows.append(r.to_dict())
            elif to == "alpaca":
                out.rows.append(_alpaca(r, out.notes))
            else:
                out.rows.append(_sharegpt(r, out.notes))
        except _Skip as e:
            out.skipped.append({"line": r.origin.line, "file": r.origin.file, "reason": str(e)})
    return out


def convert_file(file: Path, to: str, out: Path, format: str = "auto") -> dict[str, Any]:
    """Read `file`, write what `to` can hold to `out`; the summary lists the invalid and the skipped records."""
    read = require_records(read_file(file, format))
    result = convert(read.records, to)
    write_jsonl(result.rows, out)
    return {"from": read.format, "to": to, "read": read.total, "written": len(result.rows),
            "invalid": [x.to_dict() for x in read.invalid], "skipped": result.skipped, "notes": dict(result.notes),
            "out": str(out)}
