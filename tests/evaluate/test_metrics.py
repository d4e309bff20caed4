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
from tests.helpers import write_rows as _write

FIXTURES = _FIXTURES / "eval"
runner = CliRunner()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def score_json(*args: str) -> dict:
    result = runner.invoke(app, ["score", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


_score = score_json  # the name the tests folded in from tests/evaluate/test_qa3.py call it by


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


def test_rouge_l_counts_words_of_every_script(tmp_path):
    refs = ["今天天气很好", "Привет мир", "Καλημέρα κόσμε", "The cats are running."]
    preds = ["今天天气不好", "Привет мир", "Καλημέρα", "the cat ran"]
    r = _write(tmp_path / "r.jsonl", [{"id": i, "output": x} for i, x in enumerate(refs)])
    p = _write(tmp_path / "p.jsonl", [{"id": i, "output": x} for i, x in enumerate(preds)])
    out = _score("-p", str(p), "-r", str(r), "-t", "generation")
    # Chinese by character: LCS 5 of 6 -> F 5/6; Russian identical -> 1; Greek 1 of 2 words ->
    # P 1, R 1/2, F 2/3; English as rouge-score stems it: the|cat|are|run vs the|cat|ran -> LCS 2, F 4/7
    assert out["rouge_l"] == pytest.approx((5 / 6 + 1.0 + 2 / 3 + 4 / 7) / 4, abs=1e-12)
    assert out["exact_match"] == 0.25


def test_rouge_l_on_ascii_is_rouge_scores_own():
    import random
    import string

    from rouge_score import rouge_scorer

    from tunesmith.evaluate.metrics import generation

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rng = random.Random(0)
    for _ in range(300):
        a = "".join(rng.choice(string.printable) for _ in range(rng.randint(0, 30)))
        b = "".join(rng.choice(string.ascii_letters + "  _-.") for _ in range(rng.randint(0, 30)))
        assert generation([a], [b])["rouge_l"] == pytest.approx(scorer.score(b, a)["rougeL"].fmeasure, abs=1e-12)


def test_null_prediction_is_an_empty_answer_not_the_label_none(tmp_path):
    r = _write(tmp_path / "r.jsonl", [{"id": 1, "output": "None"}, {"id": 2, "output": "spam"}])
    p = _write(tmp_path / "p.jsonl", [{"id": 1, "output": None}, {"id": 2, "output": "spam"}])
    out = _score("-p", str(p), "-r", str(r), "-t", "classification")
    assert out["accuracy"] == 0.5
    assert out["per_class"]["None"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert out["confusion"] == {"labels": ["", "None", "spam"], "matrix": [[0, 0, 0], [1, 0, 0], [0, 0, 1]]}
    table = runner.invoke(app, ["score", "-p", str(p), "-r", str(r), "-t", "classification"])
    assert "(empty answer)" in table.stdout


def test_line_separators_inside_json_strings_do_not_split_records(tmp_path):
    # U+2028, U+0085 and U+001C are legal raw inside JSON strings; str.splitlines() breaks lines at them
    outputs = ["one\u2028two", "nel\x85here", "fs\x1cx"]
    p = _write(tmp_path / "p.jsonl", [{"id": i, "output": o} for i, o in enumerate(outputs)])
    r = tmp_path / "r.jsonl"
    r.write_bytes(b"".join(json.dumps({"id": i, "output": o}).encode() + b"\r\n" for i, o in enumerate(outputs)))
    out = _score("-p", str(p), "-r", str(r), "-t", "generation")
    assert (out["n"], out["exact_match"], out["rouge_l"]) == (3, 1.0, 1.0)


def test_labels_in_composed_and_decomposed_unicode_are_one_class(tmp_path):
    r = _write(tmp_path / "r.jsonl", [{"id": 1, "output": "caf\u00e9"}, {"id": 2, "output": "th\u00e9"}])
    p = _write(tmp_path / "p.jsonl", [{"id": 1, "output": "cafe\u0301"}, {"id": 2, "output": "the"}])
    out = _score("-p", str(p), "-r", str(r), "-t", "classification")
    assert out["accuracy"] == 0.5
    assert out["confusion"]["labels"] == ["caf\u00e9", "the", "th\u00e9"]


def test_compliance_function_matches_rules_contract() -> None:
    rs = parse_rules({"rules": [{"name": "end", "ends_with": "Done."}, {"name": "json", "valid_json": True}]})
    got = metrics.compliance(['{"a": 1} Done.', "```json\n{}\n```", "x"], None, rs)
    assert got == pytest.approx({"end": 1 / 3, "json": 1 / 3, "all": 0.0})
