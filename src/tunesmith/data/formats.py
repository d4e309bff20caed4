"""Read every supported input format into canonical records; write canonical JSONL.

Shapes (one per file, auto-detected from its first rows, or forced with `format=`):
  chat            {"messages": [{"role", "content"}, ...]}            → Conversation
  sharegpt        {"conversations": [{"from", "value"}, ...]}         → Conversation (role/content turns too)
  alpaca          {"instruction", "input"?, "output", "system"?}      → Conversation
  classification  {"text", "label"}  (user = text, assistant = label) → Conversation with .label
  preference      {"prompt", "chosen", "rejected"} (strings or message lists) → Preference
  text            {"text"} or a .txt file (one document per line)     → Text

Containers: JSONL, JSON array, CSV or TSV (header row), Parquet, TXT; all text UTF-8.
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

import csv
import hashlib
import io
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from tunesmith.data.records import ROLES, Conversation, Message, Origin, Preference, Record, Text
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
_SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "model": "assistant",
    "system": "system",
}
_TOOL_ROLES = ("tool", "function", "function_call", "observation", "tool_call", "ipython")
_DETECT_SAMPLE = 200  # rows looked at to decide a file's shape; enough to outvote a few broken lines
_BOM = b"\xef\xbb\xbf"
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


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


class _Bad(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


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


# ---------------------------------------------------------------- shape parsers (row → record)


def _content(value: Any, where: str) -> str:
    """Message content as a string; OpenAI-style lists of text parts are joined."""
    if isinstance(value, list) and value and all(isinstance(p, dict) and p.get("type") == "text" for p in value):
        if not all(isinstance(p.get("text"), str) for p in value):
            raise _Bad("non_string_content", f"{where}: a text part has no string 'text'")
        value = "".join(p["text"] for p in value)
    if isinstance(value, list) and value and all(isinstance(p, dict) for p in value):
        kinds = sorted({str(p.get("type")) for p in value} - {"text"})
        raise _Bad("non_string_content", f"{where}: content parts of type {', '.join(kinds)} are not supported (text only)")
    if not isinstance(value, str):
        raise _Bad("non_string_content", f"{where}: content must be a string, got {_type(value)}")
    if not value.strip():
        raise _Bad("empty_content", f"{where}: content is empty")
    return value


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _require_dict(obj: Any) -> dict:
    if not isinstance(obj, dict):
        raise _Bad("wrong_type", f"expected a JSON object, got {_type(obj)}")
    return obj


def _check_turns(messages: list[Message]) -> None:
    for i, m in enumerate(messages):
        if m.role == "system" and i != 0:
            raise _Bad("invalid_role", f"message {i + 1}: a system message must come first")
    if not any(m.role == "user" for m in messages):
        raise _Bad("no_user_turn", "conversation has no user turn")
    if messages[-1].role != "assistant":
        raise _Bad("missing_assistant", f"conversation ends on a {messages[-1].role} turn, not an assistant turn")


def _messages(value: Any, key: str, role_key: str, content_key: str, roles: dict[str, str]) -> list[Message]:
    if not isinstance(value, list):
        raise _Bad("wrong_type", f"'{key}' must be a list, got {_type(value)}")
    if not value:
        raise _Bad("empty_content", f"'{key}' is empty")
    out: list[Message] = []
    for i, m in enumerate(value, 1):
        if not isinstance(m, dict):
            raise _Bad("wrong_type", f"{key}[{i}] must be an object, got {_type(m)}")
        role = m.get(role_key)
        if m.get("tool_calls") or m.get("function_call") or role in _TOOL_ROLES:
            raise _Bad("invalid_role", f"{key}[{i}]: a tool call or tool result; tool-calling conversations are not supported")
        if not isinstance(role, str) or role not in roles:
            raise _Bad("invalid_role", f"{key}[{i}]: {role_key} {role!r} is not one of {', '.join(sorted(roles))}")
        if content_key not in m:
            raise _Bad("non_string_content", f"{key}[{i}]: no '{content_key}'")
        out.append(Message(roles[role], _content(m[content_key], f"{key}[{i}]")))
    return out


def _parse_chat(obj: Any, origin: Origin) -> Conversation:
    obj = _require_dict(obj)
    if "messages" not in obj:
        raise _Bad("unknown_shape", "expected a chat record with a 'messages' list")
    msgs = _messages(obj["messages"], "messages", "role", "content", {r: r for r in ROLES})
    _check_turns(msgs)
    label = obj.get("label")
    return Conversation(msgs, origin=origin, label=None if label is None else _label(label),
                        meta=_ignored(obj["messages"], {"role", "content"}))


def _ignored(turns: list, used: set[str]) -> dict[str, Any]:
    """meta["ignored"]: turn fields the canonical record cannot hold ('name', 'weight'), so `data check` can say
    they are left out instead of losing them silently."""
    keys = sorted({k for t in turns for k, v in t.items() if v not in (None, "", [], {})} - used)  # empty: nothing lost
    return {"ignored": keys} if keys else {}


def _sharegpt_messages(turns: Any, key: str) -> list[Message]:
    # many exports keep the 'conversations' key but write OpenAI-style role/content turns
    openai_style = isinstance(turns, list) and turns and isinstance(turns[0], dict) and "from" not in turns[0] and "role" in turns[0]
    return _messages(turns, key, *(("role", "content") if openai_style else ("from", "value")), _SHAREGPT_ROLES)


def _parse_sharegpt(obj: Any, origin: Origin) -> Conversation:
    obj = _require_dict(obj)
    key = "conversations" if "conversations" in obj else "messages" if "messages" in obj else None
    if key is None:
        raise _Bad("unknown_shape", "expected a ShareGPT record with a 'conversations' list")
    msgs = _sharegpt_messages(obj[key], key)
    if isinstance(obj.get("system"), str) and obj["system"].strip() and msgs[0].role != "system":
        msgs.insert(0, Message("system", obj["system"]))
    _check_turns(msgs)
    return Conversation(msgs, origin=origin, meta=_ignored(obj[key], {"from", "value", "role", "content"}))


def _opt_str(obj: dict, key: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _Bad("non_string_content", f"'{key}' must be a string, got {_type(value)}")
    return value


def _parse_alpaca(obj: Any, origin: Origin) -> Conversation:
    obj = _require_dict(obj)
    if "instruction" not in obj or "output" not in obj:
        raise _Bad("unknown_shape", "expected an Alpaca record with 'instruction' and 'output'")
    instruction = _content(obj["instruction"], "instruction")
    extra = _opt_str(obj, "input")
    if obj["output"] is None or (isinstance(obj["output"], str) and not obj["output"].strip()):
        raise _Bad("missing_assistant", "'output' is empty: the record has no assistant answer")
    output = _content(obj["output"], "output")
    system = _opt_str(obj, "system")
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    msgs = ([Message("system", system)] if system.strip() else []) + [Message("user", user), Message("assistant", output)]
    # keep the instruction/input split so alpaca → alpaca conversion is lossless
    meta: dict[str, Any] = {"alpaca": {"instruction": instruction, "input": extra}}
    if obj.get("history"):
        meta["ignored"] = ["history"]  # earlier turns in a list of pairs: not read (see `data check` warnings)
    return Conversation(msgs, origin=origin, meta=meta)


def _label(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 1.0 from a float column (pandas turns an int column with a gap into floats) is class 1
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _Bad("wrong_type", f"'label' must be a string or integer, got {_type(value)}")
    label = str(value)
    if not label.strip():
        raise _Bad("empty_content", "'label' is empty")
    return label


def _parse_classification(obj: Any, origin: Origin) -> Conversation:
    obj = _require_dict(obj)
    if "text" not in obj or "label" not in obj:
        missing = " and ".join(repr(k) for k in ("text", "label") if k not in obj)
        raise _Bad("unknown_shape", f"expected a classification record with 'text' and 'label'; {missing} missing")
    text = _content(obj["text"], "text")
    label = _label(obj["label"])
    msgs = [Message("user", text), Message("assistant", label)]
    system = _opt_str(obj, "system")
    if system.strip():
        msgs.insert(0, Message("system", system))
    return Conversation(msgs, origin=origin, label=label)


def _pref_answer(value: Any, key: str) -> tuple[list[Message], str]:
    """(leading messages, final assistant answer) of a chosen/rejected field."""
    if isinstance(value, list):
        msgs = _messages(value, key, "role", "content", {r: r for r in ROLES})
        if msgs[-1].role != "assistant":
            raise _Bad("missing_assistant", f"'{key}' does not end on an assistant turn")
        return msgs[:-1], msgs[-1].content
    return [], _content(value, key)


def _parse_preference(obj: Any, origin: Origin) -> Preference:
    obj = _require_dict(obj)
    if "chosen" not in obj or "rejected" not in obj:
        missing = " and ".join(repr(k) for k in ("chosen", "rejected") if k not in obj)
        raise _Bad("unknown_shape", f"expected a preference record with 'prompt', 'chosen' and 'rejected'; {missing} missing")
    head_c, chosen = _pref_answer(obj["chosen"], "chosen")
    head_r, rejected = _pref_answer(obj["rejected"], "rejected")
    prompt_value = obj.get("prompt")
    if prompt_value is None:
        # TRL's implicit-prompt form: the prompt is the turns chosen and rejected share
        if not head_c or [m.to_dict() for m in head_c] != [m.to_dict() for m in head_r]:
            raise _Bad("no_user_turn", "no 'prompt', and chosen/rejected do not share leading prompt turns")
        prompt = head_c
    elif [m.to_dict() for m in head_c] != [m.to_dict() for m in head_r]:
        # one prompt is kept: rejected's own leading turns would be lost without a word
        raise _Bad("invalid_role", "chosen and rejected start with different turns before their answers")
    elif isinstance(prompt_value, list):
        prompt = _messages(prompt_value, "prompt", "role", "content", {r: r for r in ROLES}) + head_c
    else:
        prompt = [Message("user", _content(prompt_value, "prompt"))] + head_c
    if not any(m.role == "user" for m in prompt):
        raise _Bad("no_user_turn", "the prompt has no user turn")
    if prompt[-1].role != "user":
        raise _Bad("invalid_role", f"the prompt ends on a {prompt[-1].role} turn; it must end on a user turn")
    return Preference(prompt, chosen, rejected, origin=origin)


def _parse_text(obj: Any, origin: Origin) -> Text:
    obj = _require_dict(obj)
    if "text" not in obj:
        raise _Bad("unknown_shape", "expected a text record with 'text'")
    return Text(_content(obj["text"], "text"), origin=origin)


PARSERS = {
    "chat": _parse_chat,
    "sharegpt": _parse_sharegpt,
    "alpaca": _parse_alpaca,
    "classification": _parse_classification,
    "preference": _parse_preference,
    "text": _parse_text,
}


# ---------------------------------------------------------------- containers (file → rows)

# A row is (line, value) where value is a parsed object, or an _Bad for a row that failed
# before it had a shape (bad bytes, bad JSON). `raw` keeps the row's text for reports.
Row = tuple[int, Any, str]


def _has_surrogates(value: Any) -> bool:
    """Text that cannot be written as UTF-8: bad bytes kept by surrogateescape, or a lone \\ud800-\\udfff escape."""
    if isinstance(value, str):
        return any("\ud800" <= ch <= "\udfff" for ch in value)
    if isinstance(value, dict):
        return any(_has_surrogates(k) or _has_surrogates(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_surrogates(v) for v in value)
    return False


def _decode_line(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _Bad("invalid_encoding", f"bytes at column {e.start + 1} are not valid UTF-8 ({data[e.start:e.start + 4]!r})")


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as f:
        for n, data in enumerate(f, 1):
            if n == 1 and data.startswith(_BOM):
                data = data[len(_BOM):]
            yield n, data.rstrip(b"\r\n")


def _rows_jsonl(path: Path) -> Iterator[Row]:
    for n, data in _lines(path):
        if not data.strip():
            continue
        try:
            text = _decode_line(data)
        except _Bad as bad:
            yield n, bad, data.decode("utf-8", "replace")
            continue
        try:
            value = json.loads(text)
            if _SURROGATE_ESCAPE.search(text) and _has_surrogates(value):
                # valid JSON, but half a surrogate pair (a cut emoji) is not text: writing it back would fail
                value = _Bad("invalid_encoding", "a \\u escape holds half of a UTF-16 surrogate pair, not a character")
            yield n, value, text
        except json.JSONDecodeError as e:
            # json's message may already end in "at" ("Unterminated string starting at")
            where = f"column {e.colno}" if e.msg.endswith(" at") else f"at column {e.colno}"
            yield n, _Bad("invalid_json", f"not valid JSON: {e.msg} {where}"), text
        except RecursionError:
            yield n, _Bad("invalid_json", "not valid JSON: nested too deeply"), text


def _rows_txt(path: Path) -> Iterator[Row]:
    for n, data in _lines(path):
        if not data.strip():
            continue
        try:
            text = _decode_line(data)
        except _Bad as bad:
            yield n, bad, data.decode("utf-8", "replace")
            continue
        yield n, {"text": text}, text


def _rows_json(path: Path, text: str) -> Iterator[Row] | None:
    """Rows of a whole-file JSON document (array or single object); None when it is not one (→ JSONL)."""
    jsonl = path.suffix.lower() in (".jsonl", ".ndjson")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        # "Extra data" after a complete value, or a .jsonl name: JSON lines whose first line is an array or is
        # broken, read line by line so the other lines are not lost with it
        if text.lstrip().startswith("[") and not jsonl and e.msg != "Extra data":
            # a broken array cannot be split into elements: it counts as one invalid record
            return iter([(e.lineno, _Bad("invalid_json", f"not a valid JSON array: {e.msg} at line {e.lineno} column {e.colno}"), "")])
        return None
    except RecursionError:
        if jsonl:
            return None
        return iter([(1, _Bad("invalid_json", "not valid JSON: nested too deeply"), "")])
    items = doc if isinstance(doc, list) else [doc]
    return (_json_element(i, v) for i, v in enumerate(items, 1))


def _json_element(i: int, v: Any) -> Row:
    try:
        if _has_surrogates(v):
            # raw escaped to ASCII: the offending characters cannot be written as UTF-8
            return i, _Bad("invalid_encoding", "element holds bytes that are not valid UTF-8 or half a surrogate pair"), json.dumps(v)
        return i, v, json.dumps(v, ensure_ascii=False)
    except RecursionError:  # the parser's depth limit is close to the interpreter's: walking it again can hit it
        return i, _Bad("invalid_json", "element is nested too deeply"), ""


_JSON_CELLS = ("messages", "conversations", "prompt", "chosen", "rejected")
_JSON_ONLY_CELLS = ("messages", "conversations")  # lists of turns: never plain text


def _rows_csv(path: Path) -> Iterator[Row]:
    # surrogateescape keeps bad bytes as marker characters, so one bad row is reported on its own
    text = path.read_bytes().decode("utf-8", "surrogateescape").lstrip("\ufeff")
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    if not rows:
        return
    header = [h.strip() for h in rows[0]]
    # the lenient reader lets an unclosed quote swallow every later line into the last row's cell
    runaway = _unterminated_quote(text, delimiter)
    for n, cells in enumerate(rows[1:], 1):
        raw = ",".join(cells)
        if not any(c.strip() for c in cells):
            continue
        if runaway and n == len(rows) - 1:
            yield n, _Bad("invalid_csv", "a quote opened in this row is never closed: the row runs to the end of the "
                          "file and holds every line after it"), raw
            continue
        if any(_has_surrogates(c) for c in cells):
            yield n, _Bad("invalid_encoding", "row holds bytes that are not valid UTF-8"), raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            continue
        if len(cells) > len(header):
            yield n, _Bad("unknown_shape", f"row has {len(cells)} fields, the header has {len(header)}"), raw
            continue
        row: dict[str, Any] = {h: (cells[i] if i < len(cells) else None) for i, h in enumerate(header)}
        try:
            for key in _JSON_CELLS:
                cell = row.get(key)
                if isinstance(cell, str) and cell.lstrip()[:1] in ("[", "{"):
                    try:
                        row[key] = json.loads(cell)
                    except json.JSONDecodeError:
                        # prompt, chosen and rejected may be plain text that starts with a bracket ("[Context] …")
                        if key in _JSON_ONLY_CELLS:
                            raise
        except json.JSONDecodeError as e:
            yield n, _Bad("invalid_json", f"column {key!r} is not valid JSON: {e.msg}"), raw
            continue
        yield n, row, raw


def _unterminated_quote(text: str, delimiter: str) -> bool:
    try:
        for _ in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True):
            pass
    except csv.Error as e:
        return "unexpected end of data" in str(e)
    return False


def _rows_parquet(path: Path) -> Iterator[Row]:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as e:  # pyarrow raises several unrelated types for a corrupt file
        raise DataError(f"{path}: cannot read Parquet file: {e}") from None
    for n, row in enumerate(rows, 1):
        # Columns of other formats are null in a mixed file: dropped here. The raw line keeps them, so a
        # record that a null cell breaks is reported as empty content, not as an unknown shape.
        raw = json.dumps(row, ensure_ascii=False, default=str)
        yield n, {k: v for k, v in row.items() if v is not None}, raw


# Whole files in a container tunesmith does not read: without this check every line would be
# reported as bad bytes, and the count of "records" would be meaningless.
_NOT_TEXT = (
    (b"\x1f\x8b", "gzip-compressed; decompress it first (gunzip)"),
    (b"PK\x03\x04", "a ZIP archive or an Excel workbook; extract it, or export the sheet as CSV"),
    (b"\xff\xfe", "UTF-16 text; save it as UTF-8"),
    (b"\xfe\xff", "UTF-16 text; save it as UTF-8"),
)


def _rows(path: Path) -> tuple[Iterator[Row], bool]:
    """(rows, is_plain_text) for any supported container."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _rows_parquet(path), False
    with path.open("rb") as f:
        magic = f.read(4)
        f.seek(max(0, path.stat().st_size - 4))
        tail = f.read(4)
    for prefix, what in _NOT_TEXT:
        if magic.startswith(prefix):
            raise DataError(f"{path}: {what}")
    if magic == tail == b"PAR1":  # Parquet opens and ends with its magic; a text file may well start with "PAR1"
        raise DataError(f"{path}: a Parquet file; name it with the .parquet extension")
    if suffix in (".csv", ".tsv"):
        return _rows_csv(path), False
    if suffix == ".txt":
        return _rows_txt(path), True
    with path.open("rb") as f:
        head = f.read(4096).lstrip(_BOM).lstrip()
    if head.startswith(b"[") or suffix == ".json":
        data = path.read_bytes()
        if data.startswith(_BOM):
            data = data[len(_BOM):]
        rows = _rows_json(path, data.decode("utf-8", "surrogateescape"))
        if rows is not None:
            return rows, False
    return _rows_jsonl(path), False


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
    rows_iter, plain = _rows(p)
    try:
        rows = list(rows_iter)
    except OSError as e:
        raise DataError(f"{p}: cannot read: {e.strerror}") from None
    fmt = format
    if fmt == "auto":
        fmt = "text" if plain else _detect(v for _, v, _ in rows[:_DETECT_SAMPLE] if not isinstance(v, _Bad))
        if fmt is None:
            # keep scanning: the first rows may all be broken
            fmt = _detect(v for _, v, _ in rows if not isinstance(v, _Bad))
    guessed = fmt is None  # no row has a known shape: every row is reported with its keys
    fmt = fmt or "chat"
    parse = PARSERS[fmt]
    result = ReadResult(format=fmt, total=len(rows), formats={str(p): fmt})
    name = str(p)
    for line, value, raw in rows:
        if isinstance(value, _Bad):
            result.invalid.append(Invalid(line, value.reason, value.message, name, raw))
            continue
        try:
            result.records.append(parse(value, Origin(name, line)))
        except _Bad as bad:
            nulls = _null_cells(raw) if bad.reason == "unknown_shape" and p.suffix.lower() == ".parquet" else []
            if nulls:
                bad = _Bad("empty_content", f"null cell(s) in {', '.join(nulls)}: {bad.message}")
            elif bad.reason == "unknown_shape":
                bad = _Bad(bad.reason, _shape_hint(value, fmt, name, bad.message, guessed, format != "auto"))
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
