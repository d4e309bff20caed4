"""Readers (tunesmith.data.formats): each shape a user brings, planted in the test, read as given or refused at its
line with the reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunesmith.data.cli import app
from tunesmith.data.formats import read_file
from tests.helpers import chat as _chat, data_check as _check, write_rows as _write

runner = CliRunner()


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


def test_tool_call_turns_are_named_as_unsupported_not_as_null_content(tmp_path: Path) -> None:
    call = {"role": "assistant", "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}
    rows = [
        {"messages": [{"role": "user", "content": "weather?"}, call, {"role": "tool", "tool_call_id": "c1", "content": "18C"},
                      {"role": "assistant", "content": "18C"}]},
        {"messages": [{"role": "user", "content": "q"}, {"role": "tool", "content": "x"}, {"role": "assistant", "content": "a"}]},
        _chat("fine", "ok"),
    ]
    code, rep = _check(str(_write(tmp_path / "tools.jsonl", rows)))
    assert code == 1
    assert [(x["line"], x["reason"], x["message"]) for x in rep["invalid"]] == [
        (1, "invalid_role", "messages[2]: a tool call or tool result; tool-calling conversations are not supported"),
        (2, "invalid_role", "messages[2]: a tool call or tool result; tool-calling conversations are not supported"),
    ]


def test_sharegpt_conversations_with_role_content_turns_are_read(tmp_path: Path) -> None:
    rows = [
        {"conversations": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]},
        {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
    ]
    result = read_file(_write(tmp_path / "sg.jsonl", rows))
    assert result.format == "sharegpt" and result.invalid == []
    assert [r.to_dict() for r in result.records] == [_chat("hello", "hi"), _chat("q", "a")]


def test_tsv_columns_are_split_on_tabs(tmp_path: Path) -> None:
    path = tmp_path / "c.tsv"
    path.write_text("text\tlabel\nhello, world\tpos\nbad day\tneg\n", encoding="utf-8")
    result = read_file(path)
    assert (result.format, len(result.invalid)) == ("classification", 0)
    assert [(r.messages[0].content, r.label) for r in result.records] == [("hello, world", "pos"), ("bad day", "neg")]


def test_whole_number_float_labels_are_classes(tmp_path: Path) -> None:
    import pandas as pd

    # pandas stores an int column with a gap as floats: 1.0, 0.0, NaN
    path = tmp_path / "p.parquet"
    pd.DataFrame({"text": ["a b", "c d", "e f"], "label": [1.0, 0.0, None]}).to_parquet(path)
    result = read_file(path)
    assert [r.label for r in result.records] == ["1", "0"]
    assert [(x.line, x.reason) for x in result.invalid] == [(3, "empty_content")]
    rows = [{"text": "x", "label": 2.0}, {"text": "y", "label": 1.5}]
    result = read_file(_write(tmp_path / "f.jsonl", rows))
    assert [r.label for r in result.records] == ["2"]
    assert [(x.line, x.message) for x in result.invalid] == [(2, "'label' must be a string or integer, got float")]


def test_unknown_and_mixed_shapes_say_what_the_row_is(tmp_path: Path) -> None:
    code, rep = _check(str(_write(tmp_path / "qa.jsonl", [{"question": "q", "answer": "a"}])))
    assert code == 1
    assert rep["invalid"][0]["message"] == (
        "no supported format has the keys 'question', 'answer'; expected messages, conversations, "
        "instruction+output, text, text+label or prompt+chosen+rejected"
    )
    mixed = _write(tmp_path / "mixed.jsonl", [_chat("a", "b"), {"instruction": "i", "output": "o"}, _chat("c", "d")])
    code, rep = _check(str(mixed))
    assert [(x["line"], x["reason"], x["message"]) for x in rep["invalid"]] == [
        (2, "unknown_shape", (f"this row is an alpaca record, but {mixed} was read as chat (the shape of most of its rows); "
                              "a file holds one format: split it into one file per format"))
    ]
    code, rep = _check(str(mixed), "--format", "alpaca")
    assert rep["invalid"][0]["message"].startswith(f"this row is a chat record, but {mixed} was read as alpaca (--format)")
    pref = _write(tmp_path / "p.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}, {"prompt": "q", "chosen": "a"}])
    code, rep = _check(str(pref))
    assert rep["invalid"][0]["message"] == (
        "expected a preference record with 'prompt', 'chosen' and 'rejected'; 'rejected' missing"
    )


def test_jsonl_whose_first_line_is_an_array_keeps_its_other_lines(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text('[1, 2\n{"text": "b", "label": "y"}\n{"text": "c", "label": "z"}\n', encoding="utf-8")
    result = read_file(path)
    assert (result.total, len(result.records)) == (3, 2)
    assert [(x.line, x.reason) for x in result.invalid] == [(1, "invalid_json")]
    path.write_text('[{"text": "a", "label": "x"}]\n{"text": "b", "label": "y"}\n', encoding="utf-8")
    result = read_file(path)
    assert [r.label for r in result.records] == ["y"]
    assert [(x.line, x.reason) for x in result.invalid] == [(1, "wrong_type")]


@pytest.mark.parametrize("name", ["deep.jsonl", "deep.json"])
def test_deeply_nested_json_is_an_invalid_record_not_a_traceback(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("[" * 100_000 + "\n", encoding="utf-8")
    code, rep = _check(str(path))
    assert code == 1
    assert [(x["line"], x["reason"]) for x in rep["invalid"]] == [(1, "invalid_json")]
    # parseable, but deep enough that walking it again would overflow
    path = tmp_path / "deep_element.json"
    path.write_text('[{"text": "a", "label": "x"}, ' + "[" * 900 + "]" * 900 + "]", encoding="utf-8")
    result = read_file(path)
    assert [(x.line, x.reason, x.message) for x in result.invalid] == [(2, "invalid_json", "element is nested too deeply")]
    assert len(result.records) == 1


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("d.jsonl.gz", b"\x1f\x8b\x08\x00\x00\x00", "gzip-compressed; decompress it first (gunzip)"),
        ("d.jsonl", '{"text": "a"}\n'.encode("utf-16"), "UTF-16 text; save it as UTF-8"),
        ("d.xlsx", b"PK\x03\x04rest", "a ZIP archive or an Excel workbook; extract it, or export the sheet as CSV"),
        ("d.txt", "line one\n".encode("utf-16"), "UTF-16 text; save it as UTF-8"),
        ("d.dat", b"PAR1" + b"\0" * 8 + b"PAR1", "a Parquet file; name it with the .parquet extension"),
    ],
)
def test_files_in_an_unread_container_are_named_not_read_as_bad_lines(tmp_path: Path, name: str, content: bytes,
                                                                       message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    res = runner.invoke(app, ["check", str(path)])
    assert res.exit_code == 2
    assert f"{path}: {message}" in res.stderr.replace("\n", " ")


def test_csv_quote_left_open_is_reported_on_its_row(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text('text,label\nfirst,pos\n"never closed,pos\nswallowed,neg\n', encoding="utf-8")
    result = read_file(path)
    assert [r.label for r in result.records] == ["pos"]
    assert [(x.line, x.reason) for x in result.invalid] == [(2, "invalid_csv")]
    assert result.invalid[0].message.startswith("a quote opened in this row is never closed")


def test_turn_fields_that_are_left_out_are_warned_about(tmp_path: Path) -> None:
    rows = [
        {"messages": [{"role": "user", "name": "alice", "content": "Hi there"},
                      {"role": "assistant", "name": "bot", "content": "Hello", "weight": 0, "refusal": None}]},
        _chat("plain", "fine"),
        {"messages": [{"role": "user", "content": "w"}, {"role": "assistant", "content": "x", "weight": 1}]},
        {"instruction": "i", "output": "o", "history": [["q", "a"]]},
    ]
    code, rep = _check(str(_write(tmp_path / "n.jsonl", rows[:3])))
    assert code == 0
    assert "2 records hold fields tunesmith does not read and leaves out of what it writes: 'weight' in 2, 'name' in 1" \
        in rep["warnings"]
    code, rep = _check(str(_write(tmp_path / "a.jsonl", rows[3:])))
    assert "1 records hold fields tunesmith does not read and leaves out of what it writes: 'history' in 1" \
        in rep["warnings"]


def test_preference_whose_answers_follow_different_turns_is_invalid(tmp_path: Path) -> None:
    def turns(user: str, answer: str) -> list:
        return [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]

    rows = [{"prompt": "q", "chosen": turns("X", "a"), "rejected": turns("Y", "b")},
            {"prompt": "q", "chosen": turns("X", "a"), "rejected": turns("X", "b")}]
    result = read_file(_write(tmp_path / "p.jsonl", rows))
    assert [(x.line, x.reason, x.message) for x in result.invalid] == [
        (1, "invalid_role", "chosen and rejected start with different turns before their answers")]
    assert [m.content for m in result.records[0].prompt] == ["q", "X"]


def test_chat_label_is_checked_like_a_classification_label(tmp_path: Path) -> None:
    rows = [dict(_chat("a", "b"), label={"x": 1}), dict(_chat("c", "d"), label=3)]
    result = read_file(_write(tmp_path / "c.jsonl", rows))
    assert [r.label for r in result.records] == ["3"]
    assert [(x.line, x.message) for x in result.invalid] == [(1, "'label' must be a string or integer, got dict")]


def test_image_content_parts_are_named(tmp_path: Path) -> None:
    parts = [{"type": "text", "text": "what is it?"}, {"type": "image_url", "image_url": {"url": "http://x/cat.png"}}]
    rows = [{"messages": [{"role": "user", "content": parts}, {"role": "assistant", "content": "a cat"}]}]
    result = read_file(_write(tmp_path / "i.jsonl", rows))
    assert [(x.line, x.reason, x.message) for x in result.invalid] == [
        (1, "non_string_content", "messages[1]: content parts of type image_url are not supported (text only)")]


def test_csv_prompt_text_that_starts_with_a_bracket_stays_text(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text('prompt,chosen,rejected\n"[Context] What is 2+2?",4,5\n"{name} is a placeholder",yes,no\n'
                    '"[{""role"": ""user"", ""content"": ""hi""}]",hello,go away\n', encoding="utf-8")
    result = read_file(path)
    assert result.invalid == []
    assert [(r.prompt[-1].content, r.chosen) for r in result.records] == [
        ("[Context] What is 2+2?", "4"), ("{name} is a placeholder", "yes"), ("hi", "hello")]
    path.write_text('messages\n"[{broken"\n', encoding="utf-8")
    assert [(x.line, x.reason) for x in read_file(path).invalid] == [(1, "invalid_json")]


@pytest.mark.parametrize("name", ["s.jsonl", "s.json"])
def test_half_a_surrogate_pair_is_an_invalid_record_not_a_crash(tmp_path: Path, name: str) -> None:
    rows = ['{"text": "cut emoji \\ud83d", "label": "x"}', '{"text": "whole emoji \\ud83d\\ude00", "label": "y"}']
    path = tmp_path / name
    path.write_text("\n".join(rows) + "\n" if name.endswith("l") else "[" + ",".join(rows) + "]", encoding="utf-8")
    out = tmp_path / "clean.jsonl"
    res = runner.invoke(app, ["clean", str(path), "-o", str(out), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["rejected_by_reason"] == {"invalid_encoding": 1}
    assert json.loads(out.read_text(encoding="utf-8"))["messages"][0]["content"] == "whole emoji \U0001F600"
    rejected = json.loads((tmp_path / "clean.rejected.jsonl").read_text(encoding="utf-8"))
    assert (rejected["line"], rejected["reason"]) == (1, "invalid_encoding")


def test_a_text_file_that_starts_with_the_parquet_magic_is_still_text(tmp_path: Path) -> None:
    path = tmp_path / "par.txt"
    path.write_text("PAR1 is the first word\nanother line\n", encoding="utf-8")
    assert [r.text for r in read_file(path).records] == ["PAR1 is the first word", "another line"]


def test_json_error_message_says_at_once(tmp_path):
    from tunesmith.data.check import check

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "abc\n')

    report = check([bad])
    text = json.dumps(report.to_dict() if hasattr(report, "to_dict") else report)
    assert "Unterminated string starting at column 43" in text and "at at" not in text
