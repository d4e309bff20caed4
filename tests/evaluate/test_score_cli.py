"""`tunesmith eval score`: user errors name the file, line or id and exit 2; tables otherwise."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from tunesmith.evaluate.cli import app

runner = CliRunner()


def write(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def rows(*pairs: tuple) -> list[str]:
    return [json.dumps({"id": i, "output": o}) for i, o in pairs]


def test_missing_prediction_names_the_id(tmp_path: Path) -> None:
    refs = write(tmp_path / "r.jsonl", rows((1, "a"), ("q-77", "b"), (3, "a")))
    preds = write(tmp_path / "p.jsonl", rows((1, "a"), (3, "a")))
    result = runner.invoke(app, ["score", "-p", preds, "-r", refs, "--task", "classification", "--json"])
    assert result.exit_code == 2
    assert "'q-77'" in result.stderr and "p.jsonl" in result.stderr
    assert result.stdout == ""


def test_extra_prediction_names_the_id(tmp_path: Path) -> None:
    refs = write(tmp_path / "r.jsonl", rows((1, "a")))
    preds = write(tmp_path / "p.jsonl", rows((1, "a"), (42, "b")))
    result = runner.invoke(app, ["score", "-p", preds, "-r", refs, "--task", "classification"])
    assert result.exit_code == 2
    assert "no reference for id '42'" in result.stderr


def test_duplicate_id_and_bad_json_name_file_and_line(tmp_path: Path) -> None:
    refs = write(tmp_path / "r.jsonl", rows((1, "a"), (2, "b")))
    dup = write(tmp_path / "dup.jsonl", rows((1, "a"), (2, "b"), ("1", "c")))
    result = runner.invoke(app, ["score", "-p", dup, "-r", refs, "--task", "classification"])
    assert result.exit_code == 2
    assert "dup.jsonl:3: duplicate id '1' (first on line 1)" in result.stderr

    bad = write(tmp_path / "bad.jsonl", [rows((1, "a"))[0], "{not json"])
    result = runner.invoke(app, ["score", "-p", bad, "-r", refs, "--task", "classification"])
    assert result.exit_code == 2
    assert "bad.jsonl:2: not valid JSON" in result.stderr

    no_output = write(tmp_path / "no.jsonl", ['{"id": 1}'])
    result = runner.invoke(app, ["score", "-p", no_output, "-r", refs, "--task", "classification"])
    assert result.exit_code == 2 and "no.jsonl:1: missing 'output'" in result.stderr


def test_unusable_arguments_exit_2(tmp_path: Path) -> None:
    preds = write(tmp_path / "p.jsonl", rows((1, "a")))
    for args, message in [
        (["--task", "compliance"], "needs --rules"),
        (["--task", "classification"], "needs --references"),
        (["--task", "summarise", "-r", preds], "unknown task"),
        (["--task", "compliance", "--rules", str(tmp_path / "none.yaml")], "cannot read rules file"),
    ]:
        result = runner.invoke(app, ["score", "-p", preds, *args])
        assert result.exit_code == 2, args
        assert message in result.stderr
    bad_ref = write(tmp_path / "r.jsonl", rows((1, "not json")))
    result = runner.invoke(app, ["score", "-p", preds, "-r", bad_ref, "--task", "extraction"])
    assert result.exit_code == 2 and "id '1': reference output is not valid JSON" in result.stderr


def test_tables_without_json(tmp_path: Path) -> None:
    refs = write(tmp_path / "r.jsonl", rows((1, "billing"), (2, "bug")))
    preds = write(tmp_path / "p.jsonl", rows((1, "billing"), (2, "billing")))
    result = runner.invoke(app, ["score", "-p", preds, "-r", refs, "--task", "classification"])
    assert result.exit_code == 0
    assert "macro_f1" in result.stdout and "billing" in result.stdout and "per class" in result.stdout


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def _score(*args: str) -> tuple[int, dict | None, str]:
    res = runner.invoke(app, ["score", *args, "--json"])
    return res.exit_code, (json.loads(res.stdout) if res.exit_code == 0 else None), res.output


def test_classification_matches_sklearn_with_missing_extra_and_padded_labels(tmp_path):
    from sklearn.metrics import accuracy_score, f1_score

    refs = ["cat", "dog", "bird", "fish", "cat", "dog", "bird", "fish", "cat", "cat"]
    preds = [" cat", "dog\n", "cat", "cat", "cat", "horse", "bird ", "dog", "cat", "dog"]
    r = _write(tmp_path / "r.jsonl", [{"id": i, "output": x} for i, x in enumerate(refs)])
    # string ids in reverse order: 1 and "1" are the same id
    p = _write(tmp_path / "p.jsonl", [{"id": str(i), "output": x} for i, x in reversed(list(enumerate(preds)))])
    code, out, _ = _score("-p", str(p), "-r", str(r), "-t", "classification")
    assert code == 0
    y_pred = [x.strip() for x in preds]
    assert out["accuracy"] == accuracy_score(refs, y_pred) == 0.5
    assert abs(out["macro_f1"] - f1_score(refs, y_pred, average="macro", zero_division=0)) < 1e-12
    assert abs(out["macro_f1"] - 0.3466666666666667) < 1e-12
    assert out["per_class"]["fish"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert out["per_class"]["horse"]["support"] == 0


def test_bom_at_file_start_is_accepted(tmp_path):
    r = _write(tmp_path / "r.jsonl", [{"id": 0, "output": "cat"}, {"id": 1, "output": "dog"}])
    p = tmp_path / "p.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + r.read_bytes())
    code, out, msg = _score("-p", str(p), "-r", str(r), "-t", "classification")
    assert code == 0, msg
    assert out["accuracy"] == 1.0


def test_null_and_boolean_ids_are_rejected_not_joined_as_text(tmp_path):
    r = _write(tmp_path / "r.jsonl", [{"id": "None", "output": "cat"}, {"id": "True", "output": "dog"}])
    p = _write(tmp_path / "p.jsonl", [{"id": None, "output": "cat"}, {"id": True, "output": "dog"}])
    code, _, msg = _score("-p", str(p), "-r", str(r), "-t", "classification")
    assert code == 2
    assert "p.jsonl:1" in msg and "'id' must be a string or an integer" in msg


def test_integral_float_id_joins_integer_id(tmp_path):
    r = _write(tmp_path / "r.jsonl", [{"id": 1, "output": "cat"}])
    p = _write(tmp_path / "p.jsonl", [{"id": 1.0, "output": "cat"}])
    code, out, msg = _score("-p", str(p), "-r", str(r), "-t", "classification")
    assert code == 0, msg
    assert out["n"] == 1


def test_extraction_fences_nested_fields_and_non_json(tmp_path):
    r = _write(tmp_path / "r.jsonl", [
        {"id": "a", "output": {"name": "Ann", "age": 30, "addr": {"city": "Oslo", "zip": "0150"}, "tags": ["x", "y"]}},
        {"id": "b", "output": {"name": "Bob", "age": 41, "addr": {"city": "Rome", "zip": "00100"}, "tags": []}},
        {"id": "c", "output": {"name": "Cy", "age": 5, "addr": {"city": "Nice", "zip": "06000"}, "tags": ["z"]}},
        {"id": "d", "output": {"name": "Di", "age": 7}},
    ])
    p = _write(tmp_path / "p.jsonl", [
        {"id": "a", "output": '```json\n{"name":"Ann","age":30,"addr":{"city":"Oslo","zip":"0150"},"tags":["x","y"]}\n```'},
        {"id": "b", "output": json.dumps({"name": "Bob", "age": 41.0, "addr": {"city": "Rome", "zip": 100}, "tags": [], "x": 1})},
        {"id": "c", "output": 'Sure! {"name":"Cy"}'},
        {"id": "d", "output": '{"name": "Di", "age": "7"}'},
    ])
    code, out, msg = _score("-p", str(p), "-r", str(r), "-t", "extraction")
    assert code == 0, msg
    assert out["json_valid_rate"] == 0.75
    assert out["field_accuracy"] == {"addr": 1 / 3, "age": 0.5, "name": 0.75, "tags": 2 / 3}
    assert out["exact_match"] == 0.25


def test_generation_with_empty_outputs_matches_rouge_score(tmp_path):
    from rouge_score import rouge_scorer

    refs = ["The cats are running quickly.", "Paris is the capital of France.", "", "hello world", "Numbers 123 and 456"]
    preds = ["the cat ran quick", "", "", "hello world ", "numbers 123"]
    r = _write(tmp_path / "r.jsonl", [{"id": i, "output": x} for i, x in enumerate(refs)])
    p = _write(tmp_path / "p.jsonl", [{"id": i, "output": x} for i, x in enumerate(preds)])
    code, out, msg = _score("-p", str(p), "-r", str(r), "-t", "generation")
    assert code == 0, msg
    sc = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    expected = sum(sc.score(a, b)["rougeL"].fmeasure for a, b in zip(refs, preds)) / len(refs)
    assert abs(out["rouge_l"] - expected) < 1e-12
    assert out["exact_match"] == 0.4  # strip-equal: "" == "" and "hello world " == "hello world"


def test_compliance_echo_prompt_from_reference_and_null_prompt_falls_back(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text('rules:\n  - name: disclaimer\n    ends_with: "Not legal advice."\n'
                     '  - name: case_ref\n    echo: "LF-\\\\d{4}-\\\\d{4}"\n')
    r = _write(tmp_path / "r.jsonl", [
        {"id": 1, "output": "x", "prompt": "About case LF-2024-0001"},
        {"id": 2, "output": "x", "prompt": "About LF-2024-0002 and LF-2024-0003"},
        {"id": 3, "output": "x", "prompt": None},
    ])
    p = _write(tmp_path / "p.jsonl", [
        {"id": 1, "output": "Re LF-2024-0001. Not legal advice.", "prompt": "ignored LF-1111-1111"},
        {"id": 2, "output": "Re LF-2024-0002. Not legal advice."},
        {"id": 3, "output": "Nothing.", "prompt": "case LF-2023-9999"},
    ])
    code, out, msg = _score("-p", str(p), "-r", str(r), "-t", "compliance", "--rules", str(rules))
    assert code == 0, msg
    assert out["compliance"] == {"disclaimer": 2 / 3, "case_ref": 1 / 3, "all": 1 / 3}


def test_input_errors_name_the_file_and_exit_2(tmp_path):
    r = _write(tmp_path / "r.jsonl", [{"id": i, "output": "cat"} for i in range(3)])
    short = _write(tmp_path / "short.jsonl", [{"id": i, "output": "cat"} for i in range(2)])
    dup = _write(tmp_path / "dup.jsonl", [{"id": 0, "output": "a"}, {"id": "0", "output": "b"}])
    bad = _write(tmp_path / "bad.jsonl", [{"id": 0, "output": "a"}, '{"id": 1, "output": '])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    cases = [
        (["-p", str(short), "-r", str(r), "-t", "classification"], "no prediction for id '2'"),
        (["-p", str(r), "-r", str(short), "-t", "classification"], "no reference for id '2'"),
        (["-p", str(dup), "-r", str(r), "-t", "classification"], "dup.jsonl:2: duplicate id '0'"),
        (["-p", str(bad), "-r", str(r), "-t", "classification"], "bad.jsonl:2: not valid JSON"),
        (["-p", str(empty), "-r", str(r), "-t", "classification"], "empty.jsonl: no records"),
        (["-p", str(r), "-r", str(r), "-t", "sentiment"], "unknown task 'sentiment'"),
    ]
    for args, needle in cases:
        code, _, msg = _score(*args)
        assert code == 2, (args, msg)
        assert needle in " ".join(msg.split()), (needle, msg)


def test_deeply_nested_line_is_a_named_error(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text('{"id": 1, "output": {"a": 1}}\n{"id": 2, "output": ' + "[" * 50000 + "]" * 50000 + "}\n")
    res = runner.invoke(app, ["score", "-p", str(p), "-r", str(p), "-t", "extraction"])
    assert res.exit_code == 2
    assert "p.jsonl:2: not valid JSON: nested too deeply" in res.stderr


def test_help_has_examples() -> None:
    for command in ("score", "judge"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0
        assert f"Example: tunesmith eval {command}" in result.stdout
