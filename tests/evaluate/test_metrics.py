"""`tunesmith eval score`: numbers equal scikit-learn / rouge-score, planted fixtures give exact values."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunesmith.evaluate import metrics
from tunesmith.evaluate.cli import app
from tunesmith.rules import parse_rules

from tests.helpers import FIXTURES as _FIXTURES

FIXTURES = _FIXTURES / "eval"
runner = CliRunner()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def score_json(*args: str) -> dict:
    result = runner.invoke(app, ["score", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_equals_sklearn(tmp_path: Path, seed: int) -> None:
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    rng = random.Random(seed)
    labels = ["billing", "bug", "feature", "account"]
    refs = [rng.choice(labels) for _ in range(200)]
    # the model sometimes invents a label and pads with whitespace
    preds = [rng.choice(labels + ["other"]) if rng.random() < 0.6 else r for r in refs]
    padded = [f"  {p}\n" if rng.random() < 0.2 else p for p in preds]
    ids = list(range(200))
    rng.shuffle(ids)  # prediction file order must not matter
    write_jsonl(tmp_path / "r.jsonl", [{"id": i, "output": refs[i]} for i in range(200)])
    write_jsonl(tmp_path / "p.jsonl", [{"id": i, "output": padded[i]} for i in ids])
    got = score_json("-p", str(tmp_path / "p.jsonl"), "-r", str(tmp_path / "r.jsonl"), "--task", "classification")

    assert got["n"] == 200
    assert got["accuracy"] == pytest.approx(accuracy_score(refs, preds), abs=1e-12)
    assert got["macro_f1"] == pytest.approx(f1_score(refs, preds, average="macro", zero_division=0), abs=1e-12)
    want_labels = sorted(set(refs) | set(preds))
    p, r, f, s = precision_recall_fscore_support(refs, preds, labels=want_labels, zero_division=0)
    assert list(got["per_class"]) == want_labels
    for i, lab in enumerate(want_labels):
        row = got["per_class"][lab]
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == pytest.approx((p[i], r[i], f[i], s[i]))
    assert sum(map(sum, got["confusion"]["matrix"])) == 200


def test_classification_golden() -> None:
    got = metrics.classification(["a", "b", "b", "x"], ["a", "a", "b", "c"])
    assert got["accuracy"] == 0.5
    assert got["per_class"]["a"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert got["per_class"]["b"]["precision"] == 0.5 and got["per_class"]["b"]["recall"] == 1.0
    assert got["per_class"]["x"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert got["macro_f1"] == pytest.approx(1 / 3)
    assert got["confusion"] == {"labels": ["a", "b", "c", "x"], "matrix": [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]]}


def test_classification_case_folding_is_opt_in() -> None:
    assert metrics.classification(["Billing"], ["billing"])["accuracy"] == 0.0
    assert metrics.classification(["Billing"], ["billing"], ignore_case=True)["accuracy"] == 1.0


def test_generation_equals_rouge_score(tmp_path: Path) -> None:
    from rouge_score import rouge_scorer

    rng = random.Random(7)
    vocab = "the cat dog sat ran on mat rug quickly slowly jumped jumping over under a big small".split()
    refs = [" ".join(rng.choices(vocab, k=rng.randint(3, 12))) for _ in range(60)]
    preds = [" ".join(rng.choices(vocab, k=rng.randint(1, 12))) for _ in range(60)]
    preds[:5] = [r + "  " for r in refs[:5]]  # exact up to whitespace
    write_jsonl(tmp_path / "r.jsonl", [{"id": f"g{i}", "output": t} for i, t in enumerate(refs)])
    write_jsonl(tmp_path / "p.jsonl", [{"id": f"g{i}", "output": t} for i, t in enumerate(preds)])
    got = score_json("-p", str(tmp_path / "p.jsonl"), "-r", str(tmp_path / "r.jsonl"), "--task", "generation")

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    want = sum(scorer.score(r, p)["rougeL"].fmeasure for r, p in zip(refs, preds)) / len(refs)
    assert got["rouge_l"] == pytest.approx(want, abs=1e-12)
    assert 0.0 < got["rouge_l"] < 1.0
    assert got["exact_match"] == pytest.approx(sum(p.strip() == r for p, r in zip(preds, refs)) / 60)
    assert got["exact_match"] >= 5 / 60


def test_extraction_planted_fixture() -> None:
    got = score_json(
        "-p", str(FIXTURES / "extraction_preds.jsonl"), "-r", str(FIXTURES / "extraction_refs.jsonl"),
        "--task", "extraction", "--rules", str(FIXTURES / "extraction_rules.yaml"),
    )
    assert got["n"] == 6
    assert got["json_valid_rate"] == pytest.approx(5 / 6)
    assert got["field_accuracy"] == pytest.approx(
        {"amount": 2 / 6, "currency": 3 / 6, "date": 1.0, "name": 4 / 6, "paid": 1.0}
    )
    assert got["field_accuracy_mean"] == pytest.approx(0.7)
    assert got["exact_match"] == pytest.approx(1 / 6)
    assert got["compliance"] == pytest.approx({"json": 5 / 6, "has_name": 4 / 6, "all": 4 / 6})


def test_compliance_without_references_uses_prompts(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - name: ref\n    echo: 'LF-\\d{4}'\n  - name: short\n    max_words: 4\n")
    write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"id": 1, "prompt": "about LF-1234", "output": "See LF-1234."},
            {"id": 2, "prompt": "about LF-9999", "output": "See LF-1234 and more words here."},
            {"id": 3, "prompt": "no case", "output": "fine"},
            {"id": 4, "prompt": "LF-0001", "output": "nope"},
        ],
    )
    got = score_json("-p", str(tmp_path / "p.jsonl"), "--task", "compliance", "--rules", str(rules))
    assert got == {"n": 4, "compliance": {"ref": 0.5, "short": 0.75, "all": 0.5}}


def test_compliance_function_matches_rules_contract() -> None:
    rs = parse_rules({"rules": [{"name": "end", "ends_with": "Done."}, {"name": "json", "valid_json": True}]})
    got = metrics.compliance(['{"a": 1} Done.', "```json\n{}\n```", "x"], None, rs)
    assert got == pytest.approx({"end": 1 / 3, "json": 1 / 3, "all": 0.0})
