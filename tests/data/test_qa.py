"""Independent QA of the data stage: planted-defect files written inside each test, exact expected answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunesmith.data.cli import app

runner = CliRunner()


def _chat(user: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


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


def test_bom_crlf_chat_file_every_reason_code_at_its_line(tmp_path: Path) -> None:
    good = [_chat(f"question number {w} about the weather", f"answer {w} is sunny") for w in ("one", "two", "three")]
    lines: list[bytes] = [json.dumps(g).encode() for g in good]  # 1-3
    lines += [
        b"",  # 4 blank
        b'{"messages": [',  # 5 invalid_json
        json.dumps({"prompt_text": "x"}).encode(),  # 6 unknown_shape
        json.dumps({"messages": "hi"}).encode(),  # 7 wrong_type
        json.dumps({"messages": [{"role": "user", "content": "only a question"}]}).encode(),  # 8 missing_assistant
        json.dumps(_chat("  ", "fine")).encode(),  # 9 empty_content
        json.dumps({"messages": [{"role": "robot", "content": "a"}, {"role": "assistant", "content": "b"}]}).encode(),  # 10
        json.dumps(_chat("a question", 42)).encode(),  # 11 non_string_content
        json.dumps({"messages": [{"role": "assistant", "content": "b"}]}).encode(),  # 12 no_user_turn
        b'{"messages": "\xff\xfe"}',  # 13 invalid_encoding
        json.dumps(good[1]).encode(),  # 14 exact duplicate of 2
        b"  ",  # 15 blank
    ]
    path = tmp_path / "planted.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b"".join(line + b"\r\n" for line in lines))
    res = runner.invoke(app, ["check", str(path), "--json"])
    assert res.exit_code == 1
    rep = json.loads(res.stdout)
    assert rep["format"] == "chat"
    assert (rep["records"], rep["valid"]) == (13, 4)
    assert {x["line"]: x["reason"] for x in rep["invalid"]} == {
        5: "invalid_json",
        6: "unknown_shape",
        7: "wrong_type",
        8: "missing_assistant",
        9: "empty_content",
        10: "invalid_role",
        11: "non_string_content",
        12: "no_user_turn",
        13: "invalid_encoding",
    }
    assert [(p["line"], p["duplicate_of"]) for p in rep["exact_duplicate_pairs"]] == [(14, 2)]
    out = tmp_path / "clean.jsonl"
    res = runner.invoke(app, ["clean", str(path), "-o", str(out), "--json"])
    s = json.loads(res.stdout)
    assert (s["read"], s["kept"], s["rejected"]) == (13, 3, 10)
    assert len(out.read_text(encoding="utf-8").splitlines()) == 3
