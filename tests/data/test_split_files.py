"""The decisions `data split` and `data convert` make, called as library functions (no CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunesmith.data.convert import convert_file
from tunesmith.data.split import LeakError, split_files, stratify_key
from tunesmith.data.formats import read_file
from tunesmith.errors import UserError
from tests.helpers import FIXTURES

FIX = FIXTURES / "data"


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _labelled(n: int) -> list[dict]:
    return [{"text": f"ticket number {i} about {'refunds' if i % 2 else 'shipping'} and more words {i * 7}",
             "label": "billing" if i % 2 else "shipping"} for i in range(n)]


def test_auto_stratifies_by_label_only_when_every_record_has_one(tmp_path):
    labelled = read_file(_write(tmp_path / "a.jsonl", _labelled(4))).records
    chat = read_file(FIX / "sharegpt.jsonl").records
    assert stratify_key(labelled, "auto") == "label" and stratify_key(chat, "auto") is None
    assert stratify_key(labelled, "none") is None and stratify_key(chat, "label") == "label"


def test_split_files_names_its_inputs_and_lists_invalid_records(tmp_path):
    src = _write(tmp_path / "in.jsonl", _labelled(20))
    src.write_text(src.read_text() + "{broken\n")
    m = split_files([src], tmp_path / "out", "0.5,0.25,0.25", seed=1)
    assert m["source"] == [str(src)] and m["read"] == 21 and m["invalid"] == 1
    assert m["invalid_records"][0]["line"] == 21 and m["invalid_records"][0]["reason"] == "invalid_json"
    assert m["stratify"] == "label" and sum(m["counts"].values()) == 20
    assert json.loads((tmp_path / "out" / "manifest.json").read_text()) == m


def test_split_files_refuses_to_overwrite_an_input_and_bad_arguments(tmp_path):
    src = _write(tmp_path / "train.jsonl", _labelled(10))
    with pytest.raises(UserError, match="train.jsonl would be overwritten by the split; choose another --out"):
        split_files([src], tmp_path)
    with pytest.raises(UserError, match="--stratify must be auto, label or none, got 'labels'"):
        split_files([src], tmp_path / "o", stratify="labels")
    with pytest.raises(UserError, match="ratios must be three non-negative numbers"):
        split_files([src], tmp_path / "o", "0.5,0.5")
    assert not (tmp_path / "o").exists()


def test_split_files_refuses_a_leak_unless_forced(tmp_path):
    rows = _labelled(20)
    src = _write(tmp_path / "dup.jsonl", rows + [rows[0]])
    with pytest.raises(LeakError, match=r"dup.jsonl:21 repeats .*dup.jsonl:1 \(exact duplicate\)"):
        split_files([src], tmp_path / "o")
    assert split_files([src], tmp_path / "o", force=True)["duplicates_in_input"] == 1


def test_convert_file_summary_counts_what_was_written_and_skipped(tmp_path):
    out = tmp_path / "a.jsonl"
    s = convert_file(FIX / "sharegpt.jsonl", "alpaca", out)
    assert (s["from"], s["to"], s["read"], s["written"]) == ("sharegpt", "alpaca", 4, 1)
    assert len(out.read_text().splitlines()) == 1 and s["skipped"][0]["line"] == 1
    with pytest.raises(UserError, match="--to must be one of chat, alpaca, sharegpt, got 'xml'"):
        convert_file(FIX / "sharegpt.jsonl", "xml", tmp_path / "x.jsonl")
    assert not (tmp_path / "x.jsonl").exists()
