"""Regression suite scoring/comparison and the promotion gate."""

from __future__ import annotations

import pytest

from tunesmith.evaluate.gate import decide, primary_metric
from tunesmith.evaluate.regression import compare_regression, load_suite, regression_prompts, score_regression

# Answers that satisfy each suite item, written by hand from the prompts.
GOOD = {
    "arithmetic-01": "42", "arithmetic-02": "72", "arithmetic-03": "63", "arithmetic-04": "12",
    "arithmetic-05": "21", "arithmetic-06": "225", "arithmetic-07": "24 eggs", "arithmetic-08": "45",
    "facts-01": "Paris", "facts-02": "Tokyo.", "facts-03": "Au", "facts-04": "Seven days.",
    "facts-05": "Jupiter", "facts-06": "William Shakespeare", "facts-07": "Green", "facts-08": "8",
    "instructions-01": "HOT", "instructions-02": "Vast, deep, blue.", "instructions-03": "Yes.",
    "instructions-04": "Sure: apple", "instructions-05": "Cat. DONE", "instructions-06": "1. red\n2. blue\n3. green",
    "instructions-07": "ZX-4411", "instructions-08": "red and blue", "instructions-09": "A cat naps in sunlight.",
    "format-01": '{"x": 5}', "format-02": "[1, 2, 3]", "format-03": '```json\n{"name": "Ana", "age": 30}\n```',
    "format-04": '{"ok": true}', "format-05": '"Mars"',
}


def test_suite_shape_and_prompts() -> None:
    suite = load_suite()
    assert len(suite) == 30
    assert {it["category"] for it in suite} == {"arithmetic", "facts", "instructions", "format"}
    prompts = regression_prompts()
    assert [p["id"] for p in prompts] == list(GOOD)
    assert prompts[0]["messages"] == [{"role": "user", "content": "What is 17 + 25? Answer with the number only."}]


def test_good_answers_pass_and_near_misses_fail() -> None:
    assert score_regression(GOOD)["overall"] == 1.0
    near_miss = GOOD | {
        "arithmetic-01": "142",  # contains 42, but is not 42
        "instructions-01": "Hot",  # not all caps
        "instructions-02": "Vast and deep blue",  # four words
        "format-02": "[1, 2, 3, 4]",
        "format-04": '{"ok": "true"}',  # string, not boolean
    }
    got = score_regression(near_miss)
    failed = {i["id"] for i in got["items"] if not i["passed"]}
    assert failed == {"arithmetic-01", "instructions-01", "instructions-02", "format-02", "format-04"}
    assert got["by_category"]["arithmetic"] == {"passed": 7, "n": 8, "rate": 7 / 8}
    assert got["by_category"]["format"]["rate"] == pytest.approx(3 / 5)
    assert got["overall"] == pytest.approx(25 / 30)


def test_missing_and_unknown_ids_are_errors() -> None:
    partial = dict(GOOD)
    del partial["facts-03"]
    with pytest.raises(ValueError, match="no answer for facts-03"):
        score_regression(partial)
    with pytest.raises(ValueError, match="not in the suite: bogus"):
        score_regression(GOOD | {"bogus": "x"})


def test_compare_flags_drop_over_threshold() -> None:
    base = score_regression(GOOD)
    tuned = score_regression(GOOD | {"facts-01": "Lyon", "facts-02": "Kyoto"})  # facts 8/8 -> 6/8
    cmp = compare_regression(base, tuned)
    assert cmp["by_category"]["facts"] == {"base": 1.0, "tuned": 0.75, "delta": -0.25, "flagged": True}
    assert cmp["by_category"]["arithmetic"]["flagged"] is False
    assert cmp["overall"]["delta"] == pytest.approx(-2 / 30)
    assert cmp["flagged"] == ["facts", "overall"]
    assert [(c["id"], c["change"], c["tuned"]) for c in cmp["changed"]] == [("facts-01", "lost", "Lyon"),
                                                                          ("facts-02", "lost", "Kyoto")]
    assert cmp["changed"][0]["base"] == GOOD["facts-01"] and cmp["changed"][0]["failed_checks"]
    # a looser threshold lets the same 25-point category drop through but still flags nothing else
    assert compare_regression(base, tuned, threshold=0.25)["flagged"] == []


def classification_metrics(macro_f1: float) -> dict:
    return {"n": 10, "accuracy": macro_f1, "macro_f1": macro_f1}


def test_gate_passes_when_tuned_beats_prompted_without_regressions() -> None:
    base = score_regression(GOOD)
    reg = compare_regression(base, score_regression(GOOD | {"instructions-09": "The cat."}), threshold=0.2)
    gate = decide(
        "classification",
        {"base": classification_metrics(0.3), "prompted": classification_metrics(0.6), "tuned": classification_metrics(0.8)},
        reg,
    )
    assert gate["passed"] is True
    assert gate["primary_metric"] == "macro_f1"
    assert gate["delta"] == pytest.approx(0.2)
    assert gate["regression_flagged"] == []
    assert gate["reasons"][0].startswith("ok: tuned macro_f1 0.800 vs prompted 0.600")


def test_gate_fails_on_tie_margin_and_regression() -> None:
    systems = {"prompted": classification_metrics(0.7), "tuned": classification_metrics(0.7)}
    tie = decide("classification", systems)
    assert tie["passed"] is False and tie["reasons"][0].startswith("FAIL")

    better = {"prompted": classification_metrics(0.7), "tuned": classification_metrics(0.74)}
    assert decide("classification", better)["passed"] is True
    assert decide("classification", better, margin=0.05)["passed"] is False

    reg = compare_regression(score_regression(GOOD), score_regression(GOOD | {"arithmetic-01": "41"}))
    failed = decide("classification", better, reg)
    assert failed["passed"] is False
    assert failed["regression_flagged"] == ["arithmetic"]
    assert any("regression arithmetic dropped 12.5 points" in r for r in failed["reasons"])


def test_primary_metric_by_task() -> None:
    with_rules = {"rouge_l": 0.4, "compliance": {"r": 1.0, "all": 0.9}}
    assert primary_metric("compliance", with_rules) == "compliance.all"
    assert primary_metric("generation", with_rules) == "compliance.all"
    assert primary_metric("generation", {"rouge_l": 0.4}) == "rouge_l"
    assert primary_metric("extraction", {}) == "field_accuracy_mean"
    gate = decide(
        "compliance",
        {"prompted": {"compliance": {"all": 0.55}}, "tuned": {"compliance": {"all": 0.95}}},
    )
    assert gate["passed"] and gate["primary_metric"] == "compliance.all"
    with pytest.raises(ValueError, match="no metrics for system 'prompted'"):
        decide("compliance", {"tuned": {"compliance": {"all": 1.0}}})
