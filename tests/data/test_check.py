"""data check / readers on fixtures with planted defects (tests/fixtures/data): exact counts and lines."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunesmith.data.check import check
from tunesmith.data.cli import app
from tunesmith.data.formats import read_file, read_files, write_jsonl
from tunesmith.data.records import Conversation, Preference, Text
from tunesmith.rules import parse_json_answer
from tests.helpers import FIXTURES
from tests.helpers import chat as _chat, data_check as _check, random_words as _words, write_rows as _write

FIX = FIXTURES / "data"
CHAT = FIX / "chat_defects.jsonl"
RULES = FIX / "rules.yaml"
runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_tokenizer(tmp_path_factory) -> Path:
    from tunesmith.demo.tiny import build_tokenizer

    out = tmp_path_factory.mktemp("tok")
    build_tokenizer(out)
    return out


def test_every_invalid_reason_on_its_line():
    r = read_file(CHAT)
    assert r.format == "chat"
    assert r.total == 18  # 20 physical lines, 2 blank (CRLF blank and whitespace-only)
    assert [(x.line, x.reason) for x in r.invalid] == [
        (4, "invalid_json"),
        (5, "unknown_shape"),
        (6, "wrong_type"),
        (7, "missing_assistant"),
        (8, "empty_content"),
        (9, "invalid_role"),
        (10, "non_string_content"),
        (11, "no_user_turn"),
        (12, "invalid_encoding"),
    ]
    assert [rec.origin.line for rec in r.records] == [1, 2, 13, 14, 15, 16, 18, 19, 20]
    # BOM stripped and CRLF removed: line 1 reads like line 13, its exact copy
    assert r.records[0].to_dict() == r.records[2].to_dict()
    assert r.records[0].messages[0].content.startswith("You are")


def test_check_report_exact_numbers():
    rep = check(CHAT, rules=RULES)
    assert rep["format"] == "chat"
    assert rep["records"] == 18 and rep["valid"] == 9
    assert len(rep["invalid"]) == 9
    assert set(rep["invalid"][0]) >= {"line", "reason", "message"}
    assert rep["exact_duplicates"] == 1
    assert rep["exact_duplicate_pairs"] == [{"line": 13, "duplicate_of": 1}]
    assert rep["near_duplicates"] == 2
    pairs = [(p["line"], p["duplicate_of"]) for p in rep["near_duplicate_pairs"]]
    # line 20 differs from line 1 only in its system prompt: dedup ignores system prompts
    assert pairs == [(14, 2), (20, 1)]
    assert rep["near_duplicate_pairs"][1]["similarity"] == 1.0
    assert rep["rule_violations"] == {"disclaimer": [15], "numbered": [16]}
    assert rep["label_counts"] is None
    assert rep["length_unit"] == "words"
    assert rep["errors"] == 11 and rep["ok"] is False
    warnings = " | ".join(rep["warnings"])
    assert "only 9 valid records" in warnings
    assert "1 of 9 conversations have none" in warnings
    assert "3 different ones" in warnings


def test_over_length_with_tiny_tokenizer(tiny_tokenizer):
    rep = check(CHAT, tokenizer=str(tiny_tokenizer), max_seq_len=512)
    assert rep["length_unit"] == "tokens"
    assert rep["over_length"] == {"count": 1, "lines": [19], "max_seq_len": 512}
    assert rep["length_tokens"]["max"] > 512 > rep["length_tokens"]["p50"]
    assert any("longer than --max-seq-len 512 tokens" in w for w in rep["warnings"])
    # the chat template counts: a record is longer in tokens than its contents alone
    from transformers import AutoTokenizer

    from tunesmith.data.check import token_lengths

    tok = AutoTokenizer.from_pretrained(str(tiny_tokenizer))
    first = read_file(CHAT).records[0]
    bare = sum(len(tok(m.content, add_special_tokens=False)["input_ids"]) for m in first.messages)
    assert token_lengths([first], tok)[0] > bare


def test_classification_csv_labels_and_imbalance():
    r = read_file(FIX / "classification.csv")
    assert r.format == "classification"
    assert r.total == 12  # 13 data rows, one blank
    assert [(x.line, x.reason) for x in r.invalid] == [(11, "invalid_encoding"), (13, "empty_content")]
    multi = next(x for x in r.records if x.origin.line == 6)
    assert isinstance(multi, Conversation) and multi.label == "technical"
    assert multi.messages[0].content == "The app crashes\nwhen I open settings"
    assert multi.messages[1].content == "technical"
    rep = check(FIX / "classification.csv")
    assert rep["label_counts"] == {"billing": 8, "technical": 2}
    assert any("class imbalance 4.0:1" in w for w in rep["warnings"])


@pytest.mark.parametrize(
    "name,fmt,total,valid,invalid",
    [
        ("alpaca.json", "alpaca", 4, 2, [(3, "missing_assistant"), (4, "non_string_content")]),
        ("sharegpt.jsonl", "sharegpt", 4, 2, [(3, "invalid_role"), (4, "missing_assistant")]),
        ("preference.jsonl", "preference", 4, 3, [(4, "empty_content")]),
        ("raw.txt", "text", 3, 2, [(3, "invalid_encoding")]),
        ("text.jsonl", "text", 3, 2, [(2, "empty_content")]),
    ],
)
def test_format_detection(name, fmt, total, valid, invalid):
    r = read_file(FIX / name)
    assert (r.format, r.total, len(r.records)) == (fmt, total, valid)
    assert [(x.line, x.reason) for x in r.invalid] == invalid


def test_canonical_records_per_format():
    alpaca = read_file(FIX / "alpaca.json").records[0]
    assert alpaca.to_dict() == {
        "messages": [{"role": "user", "content": "Translate to French\n\nGood morning"}, {"role": "assistant", "content": "Bonjour"}]
    }
    share = read_file(FIX / "sharegpt.jsonl").records[0]
    assert [m.role for m in share.messages] == ["system", "user", "assistant", "user", "assistant"]
    prefs = read_file(FIX / "preference.jsonl").records
    assert all(isinstance(p, Preference) for p in prefs)
    assert prefs[2].to_dict() == {"prompt": [{"role": "user", "content": "2+2?"}], "chosen": "4", "rejected": "5"}
    assert prefs[1].chosen == "Hi there!" and prefs[1].prompt[0].content == "Say hi"
    texts = read_file(FIX / "raw.txt").records
    assert [t.origin.line for t in texts] == [1, 4] and all(isinstance(t, Text) for t in texts)


def test_forced_format_overrides_detection():
    r = read_file(FIX / "text.jsonl", format="chat")
    assert r.format == "chat" and not r.records
    assert {x.reason for x in r.invalid} == {"unknown_shape"}


def test_parquet_and_json_array_inputs(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]},
        {"messages": [{"role": "user", "content": "Bye"}]},
        {"messages": [{"role": "user", "content": "Why?"}, {"role": "assistant", "content": "Because."}]},
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    r = read_file(tmp_path / "d.parquet")
    assert (r.format, r.total, [x.origin.line for x in r.records]) == ("chat", 3, [1, 3])
    assert [(x.line, x.reason) for x in r.invalid] == [(2, "missing_assistant")]
    # null cells of a column the format needs are empty content, named by column; the other rows still read
    table = {"text": ["fine text", None, "more"], "label": ["a", "b", None]}
    pq.write_table(pa.Table.from_pydict(table), tmp_path / "n.parquet")
    r = read_file(tmp_path / "n.parquet")
    assert (r.format, len(r.records)) == ("classification", 1)
    assert [(x.line, x.reason, x.message.split(":")[0]) for x in r.invalid] == [
        (2, "empty_content", "null cell(s) in text"), (3, "empty_content", "null cell(s) in label")]
    (tmp_path / "d.json").write_text(json.dumps(rows, indent=2))
    r = read_file(tmp_path / "d.json")
    assert (r.total, [x.origin.line for x in r.records]) == (3, [1, 3])
    # a JSON array with bytes that are not UTF-8: only that element is invalid
    (tmp_path / "bad.json").write_bytes(b'[{"text": "ok"}, {"text": "bad \xff"}, {"text": "fine"}]')
    r = read_file(tmp_path / "bad.json")
    assert [(x.line, x.reason) for x in r.invalid] == [(2, "invalid_encoding")] and len(r.records) == 2
    # a CSV with a messages column holding JSON
    (tmp_path / "c.csv").write_text('id,messages\n7,"[{""role"": ""user"", ""content"": ""Hi""}, {""role"": ""assistant"", ""content"": ""Yo""}]"\n')
    r = read_file(tmp_path / "c.csv")
    assert r.format == "chat" and r.records[0].messages[1].content == "Yo"


def test_very_long_line_and_several_files(tmp_path):
    long_rec = {"messages": [{"role": "user", "content": "x " * 200_000}, {"role": "assistant", "content": "ok"}]}
    p = tmp_path / "long.jsonl"
    p.write_text(json.dumps(long_rec) + "\n" + "{broken\n")
    r = read_files([p, FIX / "text.jsonl"])
    assert r.format == "mixed" and r.total == 5
    assert [(x.file, x.line, x.reason) for x in r.invalid] == [
        (str(p), 2, "invalid_json"),
        (str(FIX / "text.jsonl"), 2, "empty_content"),
    ]
    rep = check([CHAT, FIX / "sharegpt.jsonl"], rules=RULES)
    assert rep["rule_violations"]["disclaimer"][0] == f"{CHAT}:15"
    assert all("file" in x for x in rep["invalid"])


def test_write_jsonl_round_trip(tmp_path):
    recs = read_file(FIX / "classification.csv").records
    write_jsonl(recs, tmp_path / "out.jsonl")
    first = json.loads((tmp_path / "out.jsonl").read_text().splitlines()[0])
    assert first == {
        "messages": [{"role": "user", "content": "I was charged twice this month"}, {"role": "assistant", "content": "billing"}],
        "label": "billing",
    }
    again = read_file(tmp_path / "out.jsonl")
    assert [r.to_dict() for r in again.records] == [r.to_dict() for r in recs]


def test_cli_check_json_and_exit_codes(tmp_path):
    res = runner.invoke(app, ["check", str(CHAT), "--rules", str(RULES), "--json"])
    assert res.exit_code == 1
    rep = json.loads(res.stdout)
    assert rep["valid"] == 9 and rep["rule_violations"]["numbered"] == [16]
    clean = tmp_path / "clean.jsonl"
    clean.write_text("\n".join(json.dumps(r) for r in _good_records(3)) + "\n")
    res = runner.invoke(app, ["check", str(clean), "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["ok"] is True
    res = runner.invoke(app, ["check", str(CHAT)])
    assert res.exit_code == 1 and "invalid_json" in res.stdout and "near" in res.stdout


def test_cli_unusable_arguments_exit_2(tmp_path):
    bad_rules = tmp_path / "bad.yaml"
    bad_rules.write_text("rules:\n  - name: x\n    regex: '('\n")
    res = runner.invoke(app, ["check", str(CHAT), "--rules", str(bad_rules)])
    assert res.exit_code == 2 and "invalid regex" in res.stderr
    assert runner.invoke(app, ["check", str(tmp_path / "missing.jsonl")]).exit_code == 2
    assert runner.invoke(app, ["check", str(CHAT), "--format", "yaml"]).exit_code == 2
    assert runner.invoke(app, ["check", str(CHAT), "--near-dup-threshold", "1.5"]).exit_code == 2
    res = runner.invoke(app, ["check", str(CHAT), "--tokenizer", str(tmp_path)])
    assert res.exit_code == 2 and "Traceback" not in res.output


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


def test_nan_and_infinity_are_not_valid_json_answers(tmp_path: Path) -> None:
    assert parse_json_answer("NaN") == (False, None)
    assert parse_json_answer('{"a": Infinity}') == (False, None)
    assert parse_json_answer('```json\n{"a": 1}\n```') == (True, {"a": 1})
    rules = tmp_path / "r.yaml"
    rules.write_text("rules:\n  - name: json\n    valid_json: true\n", encoding="utf-8")
    data = _write(tmp_path / "d.jsonl", [_chat("q1", "NaN"), _chat("q2", '{"a": 1}'), _chat("q3", "[1, -Infinity]")])
    code, rep = _check(str(data), "--rules", str(rules))
    assert (code, rep["rule_violations"]) == (1, {"json": [1, 3]})


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


def _good_records(n: int) -> list[dict]:
    from tunesmith.demo import legal

    return legal.generate(n, seed=5)


def _run_config(tmp_path: Path, model: Path) -> Path:
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"model: {model}\ndata:\n  train: {CHAT}\n  rules: {RULES}\n  max_seq_len: 40\n")
    return cfg


def test_check_takes_data_rules_tokenizer_and_max_seq_len_from_a_run_config(tmp_path, tiny_model_dir):
    res = runner.invoke(app, ["check", "--config", str(_run_config(tmp_path, tiny_model_dir)), "--json"])
    assert res.exit_code == 1, res.output
    rep = json.loads(res.stdout)
    expected = check([CHAT], rules=RULES, tokenizer=str(tiny_model_dir), max_seq_len=40)
    assert rep["files"] == [str(CHAT)] and rep["length_unit"] == "tokens"
    assert rep["over_length"] == expected["over_length"] and rep["over_length"]["max_seq_len"] == 40
    assert rep["over_length"]["count"] > 0
    assert rep["rule_violations"] == expected["rule_violations"] and rep["rule_violations"]["numbered"] == [16]


def test_check_flags_override_the_run_config(tmp_path, tiny_model_dir):
    clean = tmp_path / "clean.jsonl"
    clean.write_text("\n".join(json.dumps(r) for r in _good_records(3)) + "\n")
    res = runner.invoke(app, ["check", str(clean), "--config", str(_run_config(tmp_path, tiny_model_dir)),
                              "--max-seq-len", "4000", "--json"])
    rep = json.loads(res.stdout)
    assert rep["files"] == [str(clean)] and rep["over_length"] == {**rep["over_length"], "max_seq_len": 4000, "count": 0}
    assert res.exit_code == 0, res.output
    empty = tmp_path / "empty.yaml"
    empty.write_text("name: x\n")
    res = runner.invoke(app, ["check", "--config", str(empty)])
    assert res.exit_code == 2 and "give the data files to check, or --config run.yaml with data.train" in res.stderr
