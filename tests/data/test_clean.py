"""data clean and data convert: what they keep, what they reject, and where the rejected records go."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from tunesmith.data.cli import app
from tests.helpers import chat as _chat, write_rows as _write

runner = CliRunner()


def test_clean_always_writes_the_rejected_records(tmp_path: Path) -> None:
    src = _write(tmp_path / "d.jsonl", [_chat("a", "b"), _chat("a", "b"), {"messages": []}])
    out = tmp_path / "clean.jsonl"
    res = runner.invoke(app, ["clean", str(src), "-o", str(out), "--json"])
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)
    assert s["rejected_file"] == str(tmp_path / "clean.rejected.jsonl")
    rejected = [json.loads(x) for x in (tmp_path / "clean.rejected.jsonl").read_text().splitlines()]
    assert [(r["file"], r["line"], r["reason"]) for r in rejected] == [(str(src), 2, "exact_duplicate"), (str(src), 3, "empty_content")]
    res = runner.invoke(app, ["clean", str(src), "-o", str(out), "--rejected", str(out)])
    assert res.exit_code == 2 and "are the same file" in res.stderr


def test_convert_lists_invalid_lines_and_refuses_an_empty_file(tmp_path: Path) -> None:
    src = _write(tmp_path / "a.jsonl", [{"instruction": "i", "output": "o"}, {"instruction": "i2", "output": ""}])
    res = runner.invoke(app, ["convert", str(src), "--to", "chat", "-o", str(tmp_path / "c.jsonl")])
    assert res.exit_code == 0, res.output
    assert "invalid line 2: missing_assistant ('output' is empty: the record has no assistant answer)" in res.stdout
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n")
    res = runner.invoke(app, ["convert", str(empty), "--to", "chat", "-o", str(tmp_path / "e_out.jsonl")])
    assert res.exit_code == 2 and "no records" in res.stderr
