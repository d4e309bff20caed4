"""The data commands as a user meets them: a folder or an empty file given as data, markup in text and paths,
inputs of two kinds that one output cannot hold."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunesmith.data.cli import app
from tests.helpers import chat as _chat, write_rows as _write

runner = CliRunner()


def _no_traceback(res) -> None:
    assert "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)


@pytest.mark.parametrize("command", ["check", "clean", "split", "report"])
def test_directory_as_input_is_named_as_a_directory(tmp_path: Path, command: str) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    extra = [] if command == "check" else ["-o", str(tmp_path / ("out.html" if command == "report" else "out"))]
    res = runner.invoke(app, [command, str(folder), *extra])
    assert res.exit_code == 2
    assert "is a directory" in res.output
    _no_traceback(res)


@pytest.mark.parametrize(
    ("name", "content"),
    [("empty.jsonl", b""), ("blank.jsonl", b"\r\n   \n\n"), ("header.csv", b"text,label\n"), ("bom.jsonl", b"\xef\xbb\xbf\n")],
)
@pytest.mark.parametrize("command", ["check", "clean", "split", "report"])
def test_file_without_records_is_refused_not_reported_clean(tmp_path: Path, name: str, content: bytes, command: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    extra = [] if command == "check" else ["-o", str(tmp_path / ("out.html" if command == "report" else "out"))]
    res = runner.invoke(app, [command, str(path), "--json", *extra])
    assert res.exit_code == 2
    assert res.stdout == ""
    assert f"{path}: no records" in res.output
    _no_traceback(res)


def test_markup_like_text_in_data_and_paths_is_printed_not_a_crash(tmp_path: Path) -> None:
    folder = tmp_path / "we[/]ird"  # two folders, "we[" and "]ird": the path holds a markup closing tag
    folder.mkdir(parents=True)
    rows = [{"messages": [{"role": "[/]", "content": "a"}, {"role": "assistant", "content": "b"}]}]
    src = _write(folder / "d.jsonl", rows)
    res = runner.invoke(app, ["check", str(src)])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "'[/]'" in res.stdout  # the role, in the invalid-records table
    res = runner.invoke(app, ["check", str(folder / "missing.jsonl")])
    assert res.exit_code == 2 and f"{folder / 'missing.jsonl'}: no such file" in res.stderr
    labels = _write(folder / "l.jsonl", [{"text": "x y", "label": "[bold]"}, {"text": "z w", "label": "[/]"}])
    res = runner.invoke(app, ["split", str(labels), "-o", str(folder / "out")])
    assert res.exit_code == 0, res.output
    assert "train: [/] 1, [bold] 1" in res.stdout


@pytest.mark.parametrize(("command", "what"), [("split", "a split"), ("clean", "a cleaned file")])
def test_conversations_and_preference_pairs_are_not_mixed_in_one_output(tmp_path: Path, command: str, what: str) -> None:
    chat = _write(tmp_path / "c.jsonl", [_chat("a", "b"), _chat("c", "d")])
    pref = _write(tmp_path / "p.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}])
    out = tmp_path / ("out" if command == "split" else "out.jsonl")
    res = runner.invoke(app, [command, str(chat), str(pref), "-o", str(out)])
    assert res.exit_code == 2
    assert (f"the inputs hold conversation and preference records ({chat}: chat, {pref}: preference); {what} holds "
            "one kind: give each kind its own command") in res.stderr.replace("\n", " ")
    assert not out.exists()
