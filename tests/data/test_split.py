"""data split (tunesmith.data.split): ratios kept with rare classes, duplicates across splits refused, every record
left out named, its own input never overwritten."""

from __future__ import annotations

import json
import random
from pathlib import Path

from typer.testing import CliRunner

from tunesmith.data.cli import app
from tests.helpers import chat as _chat, data_check as _check, random_words as _words, write_rows as _write

runner = CliRunner()


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


def test_split_refuses_to_overwrite_its_own_input(tmp_path: Path) -> None:
    rng = random.Random(7)
    src = _write(tmp_path / "train.jsonl", [{"text": _words(rng), "label": i % 2} for i in range(20)])
    res = runner.invoke(app, ["split", str(src), "-o", str(tmp_path)])
    assert res.exit_code == 2
    assert f"{src} would be overwritten by the split; choose another --out" in res.stderr.replace("\n", " ")
    assert len(src.read_text().splitlines()) == 20
