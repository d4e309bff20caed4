"""QA session 3 of the data stage: inputs a new user brings, each planted in the test, exact expected answers."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunesmith.data.cli import app
from tunesmith.data.formats import read_file
from tunesmith.rules import RulesError, parse_json_answer, parse_rules

runner = CliRunner()


def _chat(user: str, answer: str, system: str | None = None) -> dict:
    msgs = [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return {"messages": ([{"role": "system", "content": system}] if system else []) + msgs}


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _words(rng: random.Random, n: int = 15) -> str:
    return " ".join(f"w{rng.randrange(5000)}" for _ in range(n))


def _check(*args: str) -> tuple[int, dict]:
    res = runner.invoke(app, ["check", *args, "--json"])
    assert "Traceback" not in res.output
    return res.exit_code, json.loads(res.stdout)


# ---------------------------------------------------------------- reading


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


# ---------------------------------------------------------------- check


def test_one_class_only_is_warned(tmp_path: Path) -> None:
    rng = random.Random(0)
    code, rep = _check(str(_write(tmp_path / "one.jsonl", [{"text": _words(rng), "label": "spam"} for _ in range(5)])))
    assert code == 0
    assert "every labelled record has the label 'spam': a classifier needs at least two classes" in rep["warnings"]


def _tokenizer(path: Path, template: bool) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(["alpha beta gamma delta"], trainers.WordLevelTrainer(special_tokens=["<unk>", "</s>"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="</s>")
    if template:
        fast.chat_template = "{% for m in messages %}{{ m['role'] }} {{ m['content'] }}</s>{% endfor %}"
    fast.save_pretrained(path)
    return path


def test_raw_text_lengths_with_a_tokenizer_that_has_no_chat_template(tmp_path: Path) -> None:
    tok = _tokenizer(tmp_path / "tok", template=False)
    raw = tmp_path / "raw.txt"
    raw.write_text("alpha beta gamma\nalpha delta unknownword beta gamma\n", encoding="utf-8")
    code, rep = _check(str(raw), "--tokenizer", str(tok), "--max-seq-len", "4")
    assert code == 0, rep
    assert rep["length_unit"] == "tokens"
    assert rep["length_tokens"] == {"min": 3, "p50": 3, "p95": 5, "max": 5}
    assert rep["over_length"] == {"count": 1, "lines": [2], "max_seq_len": 4}
    chat = _write(tmp_path / "chat.jsonl", [_chat("alpha", "beta")])
    res = runner.invoke(app, ["check", str(chat), "--tokenizer", str(tok)])
    assert res.exit_code == 2
    assert "no chat template; conversations and preference pairs need one" in res.stderr


def test_chat_token_lengths_apply_the_local_template(tmp_path: Path) -> None:
    tok = _tokenizer(tmp_path / "tok", template=True)
    # "user alpha beta</s>assistant gamma</s>": user alpha beta </s> assistant gamma </s> → 'user'/'assistant' are <unk>
    code, rep = _check(str(_write(tmp_path / "c.jsonl", [_chat("alpha beta", "gamma")])), "--tokenizer", str(tok))
    assert code == 0, rep
    assert rep["length_tokens"]["max"] == 7


# ---------------------------------------------------------------- rules


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"name": "w", "forbidden": ["however", ""]}, "rule 'w': forbidden needs one or more non-empty words"),
        ({"name": "w", "forbidden": []}, "rule 'w': forbidden needs one or more non-empty words"),
        ({"name": "n", "ends_with": "  "}, "rule 'n': ends_with is empty"),
        ({"name": "m", "max_words": -1}, "rule 'm': max_words must be 0 or more, got -1"),
    ],
)
def test_rules_that_would_match_everything_are_refused(rule: dict, message: str) -> None:
    with pytest.raises(RulesError) as e:
        parse_rules({"rules": [rule]}, "r.yaml")
    assert str(e.value) == f"r.yaml: rule #1 ({rule['name']}): {message}"


def test_nan_and_infinity_are_not_valid_json_answers(tmp_path: Path) -> None:
    assert parse_json_answer("NaN") == (False, None)
    assert parse_json_answer('{"a": Infinity}') == (False, None)
    assert parse_json_answer('```json\n{"a": 1}\n```') == (True, {"a": 1})
    rules = tmp_path / "r.yaml"
    rules.write_text("rules:\n  - name: json\n    valid_json: true\n", encoding="utf-8")
    data = _write(tmp_path / "d.jsonl", [_chat("q1", "NaN"), _chat("q2", '{"a": 1}'), _chat("q3", "[1, -Infinity]")])
    code, rep = _check(str(data), "--rules", str(rules))
    assert (code, rep["rule_violations"]) == (1, {"json": [1, 3]})


# ---------------------------------------------------------------- clean, convert


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


# ---------------------------------------------------------------- split


def test_split_manifest_names_every_record_it_left_out(tmp_path: Path) -> None:
    rng = random.Random(1)
    rows: list = [{"text": _words(rng), "label": i % 2} for i in range(20)]
    rows[4] = {"text": _words(rng), "label": None}
    rows[9] = "not an object"
    src = _write(tmp_path / "cls.jsonl", rows)
    res = runner.invoke(app, ["split", str(src), "-o", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    assert f"left out {src}:5: wrong_type ('label' must be a string or integer, got null)" in res.stdout
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["invalid"] == 2
    assert [(x["file"], x["line"], x["reason"]) for x in manifest["invalid_records"]] == [
        (str(src), 5, "wrong_type"), (str(src), 10, "wrong_type")]
    assert sum(manifest["counts"].values()) == 18


def test_stratified_split_with_many_rare_classes_keeps_the_ratios(tmp_path: Path) -> None:
    rng = random.Random(2)
    rows = [{"text": _words(rng), "label": f"rare{c}"} for c in range(10) for _ in range(3)]
    rows += [{"text": _words(rng), "label": "big"} for _ in range(70)]
    src = _write(tmp_path / "rare.jsonl", rows)
    res = runner.invoke(app, ["split", str(src), "-o", str(tmp_path / "s"), "--json"])
    assert res.exit_code == 0, res.output
    m = json.loads(res.stdout)
    # rounding each class alone gave 76 / 7 / 17: every 3-record class sent one record to test, none to val
    assert m["counts"] == {"train": 80, "val": 10, "test": 10}
    assert m["label_counts"]["val"]["big"] == 7 and m["label_counts"]["test"]["big"] == 7
    assert sum(v for k, v in m["label_counts"]["val"].items() if k != "big") == 3
    assert sum(v for k, v in m["label_counts"]["test"].items() if k != "big") == 3
    for c in range(10):
        assert sum(m["label_counts"][s].get(f"rare{c}", 0) for s in ("train", "val", "test")) == 3
    plain = runner.invoke(app, ["split", str(src), "-o", str(tmp_path / "p"), "--stratify", "none", "--json"])
    assert json.loads(plain.stdout)["counts"] == {"train": 80, "val": 10, "test": 10}


def test_split_calls_a_case_changed_copy_a_near_duplicate(tmp_path: Path) -> None:
    rng = random.Random(3)
    texts = [_words(rng, 30) for _ in range(10)]
    rows = [_chat(t, "ok") for t in texts] + [_chat(texts[2].upper(), "ok"), _chat(texts[5], "ok")]
    src = _write(tmp_path / "d.jsonl", rows)
    res = runner.invoke(app, ["split", str(src), "-o", str(tmp_path / "s")])
    assert res.exit_code == 1
    assert "2 records duplicate other records" in res.stderr
    assert f"{src}:11 repeats {src}:3 (near duplicate, Jaccard 1.00)" in res.stderr
    assert f"{src}:12 repeats {src}:6 (exact duplicate)" in res.stderr


def test_split_ratios_that_are_not_numbers_are_explained(tmp_path: Path) -> None:
    src = _write(tmp_path / "d.jsonl", [_chat("a", "b")])
    res = runner.invoke(app, ["split", str(src), "-o", str(tmp_path / "s"), "--ratios", "a,b,c"])
    assert res.exit_code == 2
    assert "ratios must be three non-negative numbers summing to 1 (train,val,test), got 'a,b,c'" in res.stderr


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


def test_synth_lists_the_prompts_it_could_not_read_and_refuses_an_empty_file(tmp_path: Path) -> None:
    prompts = _write(tmp_path / "p.jsonl", [{"messages": [{"role": "assistant", "content": "no question"}]},
                                            {"messages": []}])
    args = ["synth", "--teacher-url", "http://127.0.0.1:9/v1", "--teacher-model", "t", "-o", str(tmp_path / "o.jsonl")]
    res = runner.invoke(app, [*args, "--prompts", str(prompts), "--json"])
    assert res.exit_code == 1, res.output
    s = json.loads(res.stdout)
    assert (s["prompts"], s["written"], s["invalid_prompts"]) == (0, 0, 2)
    assert [(x["file"], x["line"], x["reason"]) for x in s["invalid_prompt_records"]] == [
        (str(prompts), 1, "no_user_turn"), (str(prompts), 2, "empty_content")]
    res = runner.invoke(app, [*args, "--prompts", str(prompts)])
    assert "invalid prompt, line 1: no_user_turn (the prompt does not end on a user turn)" in res.stdout
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    res = runner.invoke(app, [*args, "--prompts", str(empty)])
    assert res.exit_code == 2 and f"{empty}: no prompts" in res.stderr


def test_records_the_chat_template_refuses_are_errors_not_a_traceback(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    path = _tokenizer(tmp_path / "tok", template=True)
    tok = AutoTokenizer.from_pretrained(path)
    # like Mistral's and Gemma's templates: roles must alternate, starting with the user
    tok.chat_template = (
        "{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('roles must alternate') }}{% endif %}{{ m['content'] }}</s>{% endfor %}"
    )
    tok.save_pretrained(path)
    rows = [_chat("alpha", "beta"), {"messages": [{"role": "user", "content": "alpha"}, {"role": "user", "content": "gamma"},
                                                  {"role": "assistant", "content": "delta"}]}, _chat("gamma", "delta", "beta")]
    res = runner.invoke(app, ["check", str(_write(tmp_path / "d.jsonl", rows)), "--tokenizer", str(path), "--json"])
    assert res.exit_code == 1, res.output
    rep = json.loads(res.stdout)
    assert rep["template_refused"] == [{"line": 2, "message": "roles must alternate"},
                                       {"line": 3, "message": "roles must alternate"}]
    assert (rep["errors"], rep["length_tokens"]) == (2, {"min": 4, "p50": 4, "p95": 4, "max": 4})


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


def test_near_duplicates_in_a_script_without_spaces_are_found(tmp_path: Path) -> None:
    a = "今天天气很好，我们去公园散步吧。然后我们去吃午饭，下午再回家休息一下。晚上一起看电影怎么样？"
    rows = [_chat(a, "好的"), _chat(a.replace("怎么样", "好吗"), "好的"), _chat("明天我要去北京出差，大概一周后回来。", "好的")]
    code, rep = _check(str(_write(tmp_path / "zh.jsonl", rows)))
    assert code == 0, rep
    assert [(p["line"], p["duplicate_of"]) for p in rep["near_duplicate_pairs"]] == [(2, 1)]
    assert rep["near_duplicate_pairs"][0]["similarity"] > 0.8


def test_labels_differing_only_in_case_or_spaces_are_warned_about(tmp_path: Path) -> None:
    rows = [{"text": "a b", "label": "pos"}, {"text": "c d", "label": "Pos"}, {"text": "e f", "label": "pos "},
            {"text": "g h", "label": "neg"}]
    code, rep = _check(str(_write(tmp_path / "l.jsonl", rows)))
    assert code == 0, rep
    assert rep["label_counts"] == {"Pos": 1, "neg": 1, "pos": 1, "pos ": 1}
    assert "labels 'Pos', 'pos', 'pos ' differ only in case or spaces; they are counted as different classes" \
        in rep["warnings"]


def test_image_content_parts_are_named(tmp_path: Path) -> None:
    parts = [{"type": "text", "text": "what is it?"}, {"type": "image_url", "image_url": {"url": "http://x/cat.png"}}]
    rows = [{"messages": [{"role": "user", "content": parts}, {"role": "assistant", "content": "a cat"}]}]
    result = read_file(_write(tmp_path / "i.jsonl", rows))
    assert [(x.line, x.reason, x.message) for x in result.invalid] == [
        (1, "non_string_content", "messages[1]: content parts of type image_url are not supported (text only)")]


def test_yaml_booleans_in_a_rule_are_explained(tmp_path: Path) -> None:
    import yaml

    data = yaml.safe_load("rules:\n  - name: neg\n    forbidden: [no, never]\n")
    with pytest.raises(RulesError) as e:
        parse_rules(data, "r.yaml")
    assert str(e.value) == ("r.yaml: rule #1 (neg): forbidden.0: Input should be a valid string "
                            "(YAML read it as False: put the text in quotes)")


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


def test_duplicate_table_names_the_files_when_there_are_several(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # short names: the table has room for them
    rng = random.Random(4)
    texts = [_words(rng, 20) for _ in range(3)]
    _write(tmp_path / "a.jsonl", [_chat(t, "ok") for t in texts])
    _write(tmp_path / "b.jsonl", [_chat(texts[1], "ok")])
    res = runner.invoke(app, ["check", "a.jsonl", "b.jsonl"])
    rows = [line for line in res.stdout.splitlines() if "b.jsonl:1" in line]  # old table: "1 │ 2", no file
    assert len(rows) == 1
    row = rows[0]
    assert [cell.strip() for cell in row.split("│")[1:4]] == ["b.jsonl:1", "a.jsonl:2", "exact"]


def test_rules_on_raw_text_say_they_checked_nothing(tmp_path: Path) -> None:
    rules = tmp_path / "r.yaml"
    rules.write_text("rules:\n  - name: notice\n    ends_with: Not legal advice.\n", encoding="utf-8")
    raw = tmp_path / "raw.txt"
    raw.write_text("one document\nanother document\n", encoding="utf-8")
    code, rep = _check(str(raw), "--rules", str(rules))
    assert (code, rep["rule_violations"]) == (0, {"notice": []})
    assert "2 text records have no answer: the rules were not checked on them" in rep["warnings"]


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


def test_same_text_with_different_labels_is_warned_and_kept_in_one_split(tmp_path: Path) -> None:
    rng = random.Random(5)
    rows = [{"text": _words(rng), "label": ["billing", "shipping"][i % 2]} for i in range(40)]
    text = "the parcel never arrived and support ignores me"
    rows += [{"text": text, "label": "shipping"}, {"text": text, "label": "billing"}]
    src = _write(tmp_path / "c.jsonl", rows)
    code, rep = _check(str(src))
    assert code == 0, rep
    assert rep["label_conflicts"] == [{"lines": [41, 42], "labels": ["billing", "shipping"]}]
    assert "1 texts carry different labels (lines 41, 42: billing / shipping); see label_conflicts" in rep["warnings"]
    for seed in range(6):
        res = runner.invoke(app, ["split", str(src), "-o", str(tmp_path / f"s{seed}"), "--seed", str(seed), "--json"])
        assert res.exit_code == 0, res.output
        holding = [name for name in ("train", "val", "test")
                   if text in (tmp_path / f"s{seed}" / f"{name}.jsonl").read_text()]
        assert len(holding) == 1, (seed, holding)


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


def test_checking_train_and_test_together_names_the_leak(tmp_path: Path) -> None:
    rng = random.Random(6)
    texts = [_words(rng, 30) for _ in range(8)]
    train = _write(tmp_path / "train.jsonl", [_chat(t, "ok") for t in texts])
    test = _write(tmp_path / "test.jsonl", [_chat(texts[2] + " please", "ok"), _chat(texts[4], "ok"),
                                            _chat(_words(rng, 30), "ok")])
    code, rep = _check(str(train), str(test))
    assert code == 0, rep
    assert f"2 records of {test} repeat records of {train}: if these are train and test data, the test set leaks" \
        in rep["warnings"]
    assert [(p["file"], p["line"], p["duplicate_of"]) for p in rep["exact_duplicate_pairs"]] == [(str(test), 2, 5)]
    assert [(p["file"], p["line"], p["duplicate_of"]) for p in rep["near_duplicate_pairs"]] == [(str(test), 1, 3)]


def test_a_text_file_that_starts_with_the_parquet_magic_is_still_text(tmp_path: Path) -> None:
    path = tmp_path / "par.txt"
    path.write_text("PAR1 is the first word\nanother line\n", encoding="utf-8")
    assert [r.text for r in read_file(path).records] == ["PAR1 is the first word", "another line"]


def test_split_refuses_to_overwrite_its_own_input(tmp_path: Path) -> None:
    rng = random.Random(7)
    src = _write(tmp_path / "train.jsonl", [{"text": _words(rng), "label": i % 2} for i in range(20)])
    res = runner.invoke(app, ["split", str(src), "-o", str(tmp_path)])
    assert res.exit_code == 2
    assert f"{src} would be overwritten by the split; choose another --out" in res.stderr.replace("\n", " ")
    assert len(src.read_text().splitlines()) == 20


def test_json_error_message_says_at_once(tmp_path):
    from tunesmith.data.check import check

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "abc\n')

    report = check([bad])
    text = json.dumps(report.to_dict() if hasattr(report, "to_dict") else report)
    assert "Unterminated string starting at column 43" in text and "at at" not in text
