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


def test_help_has_examples() -> None:
    for command in ("score", "judge"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0
        assert f"Example: tunesmith eval {command}" in result.stdout
