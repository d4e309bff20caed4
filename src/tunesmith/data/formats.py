"""Read every supported input format into canonical records; write canonical JSONL.

Shapes (one per file, auto-detected from its first rows, or forced with `format=`):
  chat            {"messages": [{"role", "content"}, ...]}            → Conversation
  sharegpt        {"conversations": [{"from", "value"}, ...]}         → Conversation (role/content turns too)
  alpaca          {"instruction", "input"?, "output", "system"?}      → Conversation
  classification  {"text", "label"}  (user = text, assistant = label) → Conversation with .label
  preference      {"prompt", "chosen", "rejected"} (strings or message lists) → Preference
  text            {"text"} or a .txt file (one document per line)     → Text

Containers: JSONL, JSON array, CSV or TSV (header row), Parquet, TXT; all text UTF-8 (containers.py
reads a file into rows, parsers.py turns a row of each shape into a record).
Tool-calling turns, image parts and per-turn fields such as 'name' or 'weight' are not read:
the first two make a record invalid, the others are reported by `data check`.

Line numbers (Origin.line) are 1-based and mean:
  JSONL / TXT   physical line in the file; blank lines count as lines but are not records
  JSON array    element index + 1
  CSV           data row number, header excluded (first data row = 1)
  Parquet       row index + 1
A bad line or row becomes an `Invalid` entry with a reason code; reading never stops on it.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from tunesmith.data.containers import Bad, read_rows
from tunesmith.data.parsers import PARSERS
from tunesmith.data.records import Origin, Record
from tunesmith.errors import DataError  # the one DataError; importing it from here still works

FORMATS = ("chat", "alpaca", "sharegpt", "classification", "preference", "text")
REASONS = (
    "invalid_json",
    "invalid_csv",
    "unknown_shape",
    "wrong_type",
    "missing_assistant",
    "empty_content",
    "invalid_role",
    "non_string_content",
    "no_user_turn",
    "invalid_encoding",
)
_DETECT_SAMPLE = 200  # rows looked at to decide a file's shape; enough to outvote a few broken lines


@dataclass
class Invalid:
    line: int
    reason: str
    message: str
    file: str
    raw: str | None = None  # the offending line/row as text, for rejected files and reports

    def to_dict(self, with_raw: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {"line": self.line, "reason": self.reason, "message": self.message, "file": self.file}
        if with_raw:
            d["raw"] = self.raw
        return d


@dataclass
class ReadResult:
    format: str
    records: list[Record] = field(default_factory=list)
    invalid: list[Invalid] = field(default_factory=list)
    total: int = 0  # records read: non-blank lines / rows / elements
    formats: dict[str, str] = field(default_factory=dict)  # file → detected format (several files)


# ---------------------------------------------------------------- shape detection


def detect_shape(obj: Any) -> str | None:
    """The format a single parsed row looks like, or None."""
    if not isinstance(obj, dict):
        return None
    if "messages" in obj:
        msgs = obj["messages"]
        if isinstance(msgs, list) and msgs and isinstance(msgs[0], dict) and "from" in msgs[0]:
            return "sharegpt"
        return "chat"
    if "conversations" in obj:
        return "sharegpt"
    if "chosen" in obj and "rejected" in obj:
        return "preference"
    if "instruction" in obj and "output" in obj:
        return "alpaca"
    if "text" in obj and "label" in obj:
        return "classification"
    if "text" in obj:
        return "text"
    return None


def _detect(values: Iterable[Any]) -> str | None:
    votes = Counter(s for s in (detect_shape(v) for v in values) if s)
    return votes.most_common(1)[0][0] if votes else None


# ---------------------------------------------------------------- public reading API


def require_file(p: Path) -> None:
    """A DataError naming what `p` is when it is not a readable data file."""
    if p.is_dir():
        raise DataError(f"{p}: is a directory, not a data file")
    if not p.is_file():
        raise DataError(f"{p}: no such file")


def read_file(path: str | Path, format: str = "auto") -> ReadResult:
    """Read one file into canonical records; bad rows become `Invalid` entries (never an exception)."""
    p = Path(path)
    if format != "auto" and format not in FORMATS:
        raise DataError(f"unknown format {format!r}; use auto or one of {', '.join(FORMATS)}")
    require_file(p)
    rows_iter, plain = read_rows(p)
    try:
        rows = list(rows_iter)
    except OSError as e:
        raise DataError(f"{p}: cannot read: {e.strerror}") from None
    fmt = format
    if fmt == "auto":
        fmt = "text" if plain else _detect(v for _, v, _ in rows[:_DETECT_SAMPLE] if not isinstance(v, Bad))
        if fmt is None:
            # keep scanning: the first rows may all be broken
            fmt = _detect(v for _, v, _ in rows if not isinstance(v, Bad))
    guessed = fmt is None  # no row has a known shape: every row is reported with its keys
    fmt = fmt or "chat"
    parse = PARSERS[fmt]
    result = ReadResult(format=fmt, total=len(rows), formats={str(p): fmt})
    name = str(p)
    for line, value, raw in rows:
        if isinstance(value, Bad):
            result.invalid.append(Invalid(line, value.reason, value.message, name, raw))
            continue
        try:
            result.records.append(parse(value, Origin(name, line)))
        except Bad as bad:
            nulls = _null_cells(raw) if bad.reason == "unknown_shape" and p.suffix.lower() == ".parquet" else []
            if nulls:
                bad = Bad("empty_content", f"null cell(s) in {', '.join(nulls)}: {bad.message}")
            elif bad.reason == "unknown_shape":
                bad = Bad(bad.reason, _shape_hint(value, fmt, name, bad.message, guessed, format != "auto"))
            result.invalid.append(Invalid(line, bad.reason, bad.message, name, raw))
    return result


def _shape_hint(value: Any, fmt: str, name: str, message: str, guessed: bool, forced: bool) -> str:
    """An unknown-shape message that says what the row does look like, so a mixed or unsupported file is obvious."""
    shape = detect_shape(value)
    if shape is not None and shape != fmt and (fmt, shape) != ("classification", "text"):
        article = "an" if shape[0] in "aeiou" else "a"
        why = "--format" if forced else "the shape of most of its rows"
        return (f"this row is {article} {shape} record, but {name} was read as {fmt} ({why}); "
                "a file holds one format: split it into one file per format")
    if guessed and isinstance(value, dict):
        keys = ", ".join(repr(k) for k in list(value)[:8]) or "none"
        return (f"no supported format has the keys {keys}; expected messages, conversations, "
                "instruction+output, text, text+label or prompt+chosen+rejected")
    return message


def _null_cells(raw: str) -> list[str]:
    row = json.loads(raw)
    return [k for k, v in row.items() if v is None] if isinstance(row, dict) else []


def read_files(paths: Iterable[str | Path], format: str = "auto") -> ReadResult:
    """Read several files; `format` is "mixed" when they were detected as different formats."""
    results = [read_file(p, format) for p in paths]
    if not results:
        raise DataError("no input files given")
    formats = {f: r.format for r in results for f in r.formats}
    merged = ReadResult(format=results[0].format if len(set(formats.values())) == 1 else "mixed", formats=formats)
    for r in results:
        merged.records.extend(r.records)
        merged.invalid.extend(r.invalid)
        merged.total += r.total
    return merged


def require_records(result: ReadResult) -> ReadResult:
    """The result, or a DataError when nothing was read: an empty file must not pass as clean data."""
    if result.total == 0:
        raise DataError(
            f"{', '.join(result.formats)}: no records (the file is empty or holds only blank lines or a header row)"
        )
    return result


def require_one_kind(result: ReadResult, what: str) -> ReadResult:
    """The result, or a DataError when it mixes conversations, preference pairs and texts: one output file
    would hold several shapes, and reading it back would reject every record of the minority kind."""
    kinds = sorted({r.kind for r in result.records})
    if len(kinds) > 1:
        by_file = ", ".join(f"{f}: {fmt}" for f, fmt in result.formats.items())
        raise DataError(f"the inputs hold {' and '.join(kinds)} records ({by_file}); {what} holds one kind: "
                        "give each kind its own command")
    return result


# ---------------------------------------------------------------- writing


def record_dict(record: Record) -> dict[str, Any]:
    """Canonical JSON form: chat records as {"messages": [...]} (+ "label"), preference and text as-is."""
    return record.to_dict()


def write_jsonl(records: Iterable[Record | dict], path: str | Path) -> int:
    """Write canonical records (or ready dicts) as UTF-8 JSONL; returns the number written."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with p.open("w", encoding="utf-8", newline="\n") as f:
        for r in records:
            f.write(json.dumps(r if isinstance(r, dict) else record_dict(r), ensure_ascii=False) + "\n")
            n += 1
    return n


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes: what manifests and run.json record to pin a data version."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
