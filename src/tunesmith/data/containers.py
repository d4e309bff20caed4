"""Containers: a data file's bytes → rows, before any shape is known.

JSONL, JSON array (or one object), CSV/TSV with a header row, Parquet and TXT, all text UTF-8. A row is
(line, value, raw): value is the parsed object, or a `Bad` for a row that failed before it had a shape
(bad bytes, bad JSON); `raw` keeps the row's text for reports. See formats.py for what line numbers mean.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any, Iterator

from tunesmith.errors import DataError

_BOM = b"\xef\xbb\xbf"
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


class Bad(Exception):
    """A row that cannot become a record: `reason` is one of formats.REASONS."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


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
        raise Bad("invalid_encoding", f"bytes at column {e.start + 1} are not valid UTF-8 ({data[e.start:e.start + 4]!r})")


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as f:
        for n, data in enumerate(f, 1):
            if n == 1 and data.startswith(_BOM):
                data = data[len(_BOM):]
            yield n, data.rstrip(b"\r\n")


def _decoded(path: Path) -> Iterator[tuple[int, str | Bad, str]]:
    """Non-blank lines as (line number, the text or why it cannot be decoded, the text as shown)."""
    for n, data in _lines(path):
        if not data.strip():
            continue
        try:
            text = _decode_line(data)
        except Bad as bad:
            yield n, bad, data.decode("utf-8", "replace")
            continue
        yield n, text, text


def _rows_jsonl(path: Path) -> Iterator[Row]:
    for n, text, shown in _decoded(path):
        if isinstance(text, Bad):
            yield n, text, shown
            continue
        try:
            value = json.loads(text)
            if _SURROGATE_ESCAPE.search(text) and _has_surrogates(value):
                # valid JSON, but half a surrogate pair (a cut emoji) is not text: writing it back would fail
                value = Bad("invalid_encoding", "a \\u escape holds half of a UTF-16 surrogate pair, not a character")
            yield n, value, text
        except json.JSONDecodeError as e:
            # json's message may already end in "at" ("Unterminated string starting at")
            where = f"column {e.colno}" if e.msg.endswith(" at") else f"at column {e.colno}"
            yield n, Bad("invalid_json", f"not valid JSON: {e.msg} {where}"), text
        except RecursionError:
            yield n, Bad("invalid_json", "not valid JSON: nested too deeply"), text


def _rows_txt(path: Path) -> Iterator[Row]:
    for n, text, shown in _decoded(path):
        yield n, text if isinstance(text, Bad) else {"text": text}, shown


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
            return iter([(e.lineno, Bad("invalid_json", f"not a valid JSON array: {e.msg} at line {e.lineno} column {e.colno}"), "")])
        return None
    except RecursionError:
        if jsonl:
            return None
        return iter([(1, Bad("invalid_json", "not valid JSON: nested too deeply"), "")])
    items = doc if isinstance(doc, list) else [doc]
    return (_json_element(i, v) for i, v in enumerate(items, 1))


def _json_element(i: int, v: Any) -> Row:
    try:
        if _has_surrogates(v):
            # raw escaped to ASCII: the offending characters cannot be written as UTF-8
            return i, Bad("invalid_encoding", "element holds bytes that are not valid UTF-8 or half a surrogate pair"), json.dumps(v)
        return i, v, json.dumps(v, ensure_ascii=False)
    except RecursionError:  # the parser's depth limit is close to the interpreter's: walking it again can hit it
        return i, Bad("invalid_json", "element is nested too deeply"), ""


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
            yield n, Bad("invalid_csv", "a quote opened in this row is never closed: the row runs to the end of the "
                          "file and holds every line after it"), raw
            continue
        if any(_has_surrogates(c) for c in cells):
            yield n, Bad("invalid_encoding", "row holds bytes that are not valid UTF-8"), raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            continue
        if len(cells) > len(header):
            yield n, Bad("unknown_shape", f"row has {len(cells)} fields, the header has {len(header)}"), raw
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
            yield n, Bad("invalid_json", f"column {key!r} is not valid JSON: {e.msg}"), raw
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


def read_rows(path: Path) -> tuple[Iterator[Row], bool]:
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
