"""data clean / split / convert / report and the dedup engine: accounting adds up, leaks are refused."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunesmith.data import dedup
from tunesmith.data.check import analyse, check
from tunesmith.data.cli import app
from tunesmith.data.formats import read_file
from tunesmith.data.split import LeakError, split_records, write_split
from tests.helpers import FIXTURES

FIX = FIXTURES / "data"
CHAT = FIX / "chat_defects.jsonl"
RULES = FIX / "rules.yaml"
runner = CliRunner()
_WORDS = [f"{a}{b}" for a in ("bal", "cor", "den", "fip", "gur", "hom", "jat", "kel") for b in ("an", "ek", "is", "op", "ur", "ya")]


def _sentence(rng: random.Random, n: int = 12) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n))


def _classification(path: Path, per_label: int = 20, extra: list[dict] | None = None) -> list[dict]:
    rng = random.Random(7)
    rows = [{"text": _sentence(rng), "label": label} for label in ("billing", "shipping", "technical") for _ in range(per_label)]
    rows += extra or []
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


# ---------------------------------------------------------------- clean


def test_clean_accounting_default(tmp_path):
    out, rej = tmp_path / "clean.jsonl", tmp_path / "rejected.jsonl"
    res = runner.invoke(app, ["clean", str(CHAT), "-o", str(out), "--rejected", str(rej), "--json"])
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)
    assert (s["read"], s["kept"], s["rejected"]) == (18, 8, 10)
    assert s["rejected_by_reason"]["exact_duplicate"] == 1
    rejected = [json.loads(x) for x in rej.read_text().splitlines()]
    assert [(r["line"], r["reason"]) for r in rejected][-1] == (13, "exact_duplicate")
    assert rejected[0]["line"] == 4 and rejected[0]["raw"].startswith('{"messages"')
    assert len(out.read_text().splitlines()) == 8


def test_clean_drops_near_dups_and_violations(tmp_path):
    out, rej = tmp_path / "clean.jsonl", tmp_path / "rejected.jsonl"
    res = runner.invoke(
        app,
        ["clean", str(CHAT), "-o", str(out), "--rejected", str(rej), "--drop-near-dups", "--drop-violations", "--rules", str(RULES)],
    )
    assert res.exit_code == 0, res.output
    assert "read 18 = kept 4 + rejected 14" in res.stdout
    kept_lines = [r.origin.line for r in read_file(CHAT).records if r.to_dict() in [json.loads(x) for x in out.read_text().splitlines()]]
    assert kept_lines[:2] == [1, 2]
    reasons = {(r["line"], r["reason"]) for r in map(json.loads, rej.read_text().splitlines())}
    assert {(14, "near_duplicate"), (20, "near_duplicate"), (15, "rule_violation"), (16, "rule_violation")} <= reasons
    assert runner.invoke(app, ["clean", str(CHAT), "-o", str(out), "--drop-violations"]).exit_code == 2


# ---------------------------------------------------------------- split


def test_split_stratified_deterministic(tmp_path):
    src = tmp_path / "cls.jsonl"
    _classification(src)
    res = runner.invoke(app, ["split", str(src), "--out", str(tmp_path / "a"), "--json"])
    assert res.exit_code == 0, res.output
    m = json.loads(res.stdout)
    assert m["counts"] == {"train": 48, "val": 6, "test": 6}
    assert m["stratify"] == "label"
    for name, n in (("train", 16), ("val", 2), ("test", 2)):
        assert m["label_counts"][name] == {"billing": n, "shipping": n, "technical": n}
    for name in ("train", "val", "test"):
        data = (tmp_path / "a" / f"{name}.jsonl").read_bytes()
        assert hashlib.sha256(data).hexdigest() == m["sha256"][f"{name}.jsonl"]
        assert json.loads(data.splitlines()[0])["label"] in ("billing", "shipping", "technical")
    again = runner.invoke(app, ["split", str(src), "--out", str(tmp_path / "b"), "--json"])
    assert json.loads(again.stdout)["sha256"] == m["sha256"]
    other = runner.invoke(app, ["split", str(src), "--out", str(tmp_path / "c"), "--seed", "1", "--json"])
    assert json.loads(other.stdout)["sha256"]["test.jsonl"] != m["sha256"]["test.jsonl"]
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["counts"] == m["counts"] and manifest["read"] == 60


def test_split_warns_about_empty_splits_and_missing_labels(tmp_path):
    src = tmp_path / "tiny.jsonl"
    rng = random.Random(3)
    # 2 records per label, 4 in all: 3.2 / 0.4 / 0.4 → 3 to train, the one left over to test (ties favour test)
    rows = [{"text": _sentence(rng), "label": label} for label in ("a", "b") for _ in range(2)]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = runner.invoke(app, ["split", str(src), "--out", str(tmp_path / "o"), "--json"])
    assert res.exit_code == 0, res.output
    m = json.loads(res.stdout)
    assert m["counts"] == {"train": 3, "val": 0, "test": 1}
    assert m["warnings"] == ["the val split is empty: 4 records × 0.1 rounds to none; add records or raise its ratio",
                             "the test split has no record of label(s) a: their scores there cannot be measured"]
    # one label too rare for the test split: every record of it lands elsewhere
    rows += [{"text": _sentence(rng), "label": "a"} for _ in range(16)] + [{"text": _sentence(rng), "label": "b"}
                                                                           for _ in range(16)]
    rows += [{"text": _sentence(rng), "label": "rare"}]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = runner.invoke(app, ["split", str(src), "--out", str(tmp_path / "p")])
    assert res.exit_code == 0, res.output
    assert "warning: the val split has no record of label(s) rare" in res.stdout
    assert "warning: the test split has no record of label(s) rare" in res.stdout


def test_planted_leak_refused_then_grouped_with_force(tmp_path):
    rows = _classification(tmp_path / "x.jsonl")
    near = dict(rows[3], text=rows[3]["text"] + " please")
    src = tmp_path / "leaky.jsonl"
    _classification(src, extra=[rows[0], near])  # line 61 repeats line 1, line 62 nearly repeats line 4
    res = runner.invoke(app, ["split", str(src), "--out", str(tmp_path / "s")])
    assert res.exit_code == 1
    assert "leaky.jsonl:61 repeats" in res.stderr and "leaky.jsonl:62 repeats" in res.stderr
    assert not (tmp_path / "s" / "train.jsonl").exists()
    res = runner.invoke(app, ["split", str(src), "--out", str(tmp_path / "s"), "--force", "--json"])
    assert res.exit_code == 0, res.output
    m = json.loads(res.stdout)
    assert m["duplicates_in_input"] == 2 and m["duplicate_groups"] == 2 and m["leaks"] == []
    texts = {name: [json.loads(x)["messages"][0]["content"] for x in (tmp_path / "s" / f"{name}.jsonl").read_text().splitlines()] for name in ("train", "val", "test")}
    for t in (rows[0]["text"], rows[3]["text"]):
        holding = [name for name, ts in texts.items() if t in ts]
        assert len(holding) == 1  # the whole group sits in one split
    assert sum(len(v) for v in texts.values()) == 62


def test_split_records_api_and_cross_check(tmp_path):
    src = tmp_path / "cls.jsonl"
    _classification(src)
    recs = read_file(src).records
    parts = split_records(recs, (0.5, 0.25, 0.25), seed=3, stratify="label")
    assert {k: len(v) for k, v in parts.items()} == {"train": 30, "val": 15, "test": 15}
    assert split_records(recs, (0.5, 0.25, 0.25), seed=3, stratify="label") == parts
    leaks = dedup.cross_duplicates(parts["train"], [parts["train"][5], parts["test"][0]])
    assert leaks == [(0, 5, 1.0)]
    with pytest.raises(LeakError):
        write_split(recs + [recs[0]], tmp_path / "out")
    with pytest.raises(ValueError):
        split_records(recs, (0.5, 0.5, 0.5))
    assert runner.invoke(app, ["split", str(src), "--out", str(tmp_path / "o"), "--ratios", "0.9,0.2"]).exit_code == 2


# ---------------------------------------------------------------- convert


def test_convert_alpaca_round_trip_and_limits(tmp_path):
    res = runner.invoke(app, ["convert", str(FIX / "alpaca.json"), "--to", "alpaca", "-o", str(tmp_path / "a.jsonl"), "--json"])
    assert res.exit_code == 0
    rows = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    original = json.loads((FIX / "alpaca.json").read_text())
    assert rows == original[:2]
    res = runner.invoke(app, ["convert", str(FIX / "sharegpt.jsonl"), "--to", "alpaca", "-o", str(tmp_path / "b.jsonl"), "--json"])
    s = json.loads(res.stdout)
    assert (s["read"], s["written"]) == (4, 1)
    assert s["skipped"][0]["line"] == 1 and "multi-turn" in s["skipped"][0]["reason"]
    res = runner.invoke(app, ["convert", str(FIX / "sharegpt.jsonl"), "--to", "chat", "-o", str(tmp_path / "c.jsonl")])
    assert "read 4, wrote 2" in res.stdout
    back = runner.invoke(app, ["convert", str(tmp_path / "c.jsonl"), "--to", "sharegpt", "-o", str(tmp_path / "d.jsonl")])
    assert back.exit_code == 0
    assert [json.loads(x) for x in (tmp_path / "d.jsonl").read_text().splitlines()] == [
        json.loads(x) for x in (FIX / "sharegpt.jsonl").read_text().splitlines()[:2]
    ]
    res = runner.invoke(app, ["convert", str(FIX / "preference.jsonl"), "--to", "chat", "-o", str(tmp_path / "p.jsonl"), "--json"])
    assert json.loads(res.stdout)["written"] == 0 and len(json.loads(res.stdout)["skipped"]) == 3
    assert runner.invoke(app, ["convert", str(FIX / "alpaca.json"), "--to", "xml", "-o", str(tmp_path / "x")]).exit_code == 2


# ---------------------------------------------------------------- report


def test_html_report_self_contained(tmp_path):
    out = tmp_path / "r.html"
    res = runner.invoke(app, ["report", str(CHAT), "--rules", str(RULES), "-o", str(out), "--max-seq-len", "300"])
    assert res.exit_code == 0, res.output
    page = out.read_text()
    assert page.count("<svg") == 1  # length histogram (no labels here)
    # self-contained: its one script and its styles are inline, nothing is fetched
    assert "<script src" not in page and "<link" not in page and 'src="http' not in page
    # counts that add up, in the web app's Data page layout
    assert "18 read = 9 kept + 9 rejected; 1 exact and 2 near duplicates; 2 rule violations." in page
    assert "<code>chat_defects.jsonl:12</code></td><td>invalid_encoding</td>" in page
    assert "limit: 300 (1 over)" in page
    cls = tmp_path / "c.html"
    runner.invoke(app, ["report", str(FIX / "classification.csv"), "-o", str(cls)])
    assert cls.read_text().count("<svg") == 2 and "class imbalance" in cls.read_text()


# ---------------------------------------------------------------- dedup engine


def test_minhash_estimates_jaccard_and_threshold_is_configurable():
    rng = random.Random(0)
    base = " ".join(f"w{rng.randrange(10_000)}" for _ in range(200))
    words = base.split()
    variant = " ".join(words[:150] + [f"z{i}" for i in range(50)])
    sh = lambda t: {tuple(t.split()[i : i + 3]) for i in range(len(t.split()) - 2)}  # noqa: E731
    true = len(sh(base) & sh(variant)) / len(sh(base) | sh(variant))
    sigs = dedup.MinHasher().signatures([base, variant, base.upper()])
    est = float((sigs[0] == sigs[1]).mean())
    assert abs(est - true) < 0.12
    assert (sigs[0] == sigs[2]).all()  # case-insensitive words
    assert check(CHAT, near_dup_threshold=0.95)["near_duplicates"] == 1  # only the 1.0 pair remains


def test_near_duplicates_found_at_scale():
    rng = random.Random(1)
    texts = [" ".join(f"w{rng.randrange(50_000)}" for _ in range(60)) for _ in range(3000)]
    planted = {}
    for i in range(0, 3000, 100):
        w = texts[i].split()
        w[30] = "changed"
        texts[i + 1] = " ".join(w)
        planted[i + 1] = i
    found = {d.index: d.duplicate_of for d in dedup.find_near_duplicates(texts, 0.8)}
    assert found == planted


def test_analysis_timings_and_lengths():
    a = analyse([CHAT], rules=RULES)
    assert set(a.timings) == {"read", "exact_duplicates", "near_duplicates", "rules", "lengths"}
    assert len(a.lengths) == 9 and a.report()["length_tokens"]["max"] == max(a.lengths)
