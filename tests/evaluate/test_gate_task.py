"""The task gate's paired bootstrap interval for metrics that are not a per-example pass rate."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tunesmith.evaluate import metrics, stats
from tunesmith.evaluate.gate import decide
from tunesmith.evaluate.task_bootstrap import classification_statistic, extraction_statistic
from tunesmith.report.verdict import verdict

LABELS = ["billing", "bug", "feature", "other"]
REFS = [LABELS[i % 4] for i in range(40)]  # 40 examples, 10 per class


def labels_wrong_on(wrong: set[int]) -> list[str]:
    """REFS with the next label in place of the right one on the examples in `wrong`."""
    return [LABELS[(i + 1) % 4] if i in wrong else REFS[i] for i in range(40)]


def classify(prompted_wrong: set[int], tuned_wrong: set[int], margin: float = 0.0) -> dict:
    b, c = labels_wrong_on(prompted_wrong), labels_wrong_on(tuned_wrong)
    systems = {"prompted": metrics.classification(b, REFS), "tuned": metrics.classification(c, REFS)}
    return decide("classification", systems, margin=margin, outputs={"prompted": b, "tuned": c}, references=REFS)


def test_clearly_better_classification_passes_on_its_interval() -> None:
    gate = classify(set(range(16)), set(range(2)))  # 24 vs 38 of 40 right
    task = gate["task"]
    # tuned: billing 9 of 9 predicted, bug 9 of 10, feature 10 of 11, other 10 of 10; prompted 6 of 10 on each
    assert gate["verdict"] == "PASS" and gate["candidate_value"] == pytest.approx((18 / 19 + 18 / 20 + 20 / 21 + 1) / 4)
    assert gate["baseline_value"] == pytest.approx(0.6)
    assert task["n"] == 40 and task["resamples"] == 2000 and task["level"] == 0.9
    assert task["method"] == "paired bootstrap, 2000 resamples"
    assert 0 < task["delta_low"] < task["delta"] < task["delta_high"]
    # golden values of the seed-0 resampling (numpy's PCG64 stream)
    assert task["delta_low"] == pytest.approx(0.2313810164, abs=1e-9)
    assert task["delta_high"] == pytest.approx(0.4868404330, abs=1e-9)
    assert gate["reasons"] == ["ok: tuned macro_f1 0.950 vs prompted 0.600 (delta +0.350 > margin 0.000; 90% interval "
                               "+0.231 to +0.487 (paired bootstrap, 2000 resamples) over 40 examples)"]
    # a margin the interval does not clear: better here, not provably by that much
    assert classify(set(range(16)), set(range(2)), margin=0.3)["verdict"] == "inconclusive"


def test_one_example_of_difference_is_inconclusive_and_a_tie_fails() -> None:
    narrow = classify(set(range(10)), set(range(9)))  # 30 vs 31 of 40 right
    assert narrow["verdict"] == "inconclusive" and not narrow["passed"]
    # the one differing example is left out of 36% of resamples, where both systems tie: the lower end is 0
    assert narrow["task"]["delta_low"] == 0.0 < narrow["task"]["delta"] == pytest.approx(0.025)
    assert narrow["reasons"][1] == ("inconclusive: the interval reaches down to +0.000: too few test examples to "
                                    "tell tuned from prompted")
    tie = classify(set(range(10)), set(range(10)))
    assert tie["verdict"] == "FAIL" and tie["task"]["delta_low"] == tie["task"]["delta_high"] == 0.0
    # the same wrong count on other examples: a tie on the metric, the interval straddles zero
    swapped = classify(set(range(10)), set(range(20, 30)))
    assert swapped["verdict"] == "FAIL" and swapped["task"]["delta_low"] < 0 < swapped["task"]["delta_high"]


def test_the_interval_is_deterministic() -> None:
    a, b = classify(set(range(12)), set(range(4))), classify(set(range(12)), set(range(4)))
    assert a == b
    stat = classification_statistic(labels_wrong_on(set(range(12))), labels_wrong_on(set(range(4))), REFS)
    other_seed = stats.paired_bootstrap(stat, 40, seed=1)
    assert other_seed["delta"] == pytest.approx(a["task"]["delta"])
    assert other_seed["delta_low"] != a["task"]["delta_low"]


def _equals_metric_on_resamples(stat, b, c, refs, score, seed: int) -> None:
    """stat(idx) is (score of b, score of c) on the examples idx names: the whole sample and 20 resamples."""
    rng = np.random.default_rng(seed)
    for idx in [np.arange(40)] + [rng.integers(0, 40, size=40) for _ in range(20)]:
        ref = [refs[i] for i in idx]
        expected = (score([b[i] for i in idx], ref), score([c[i] for i in idx], ref))
        assert stat(idx) == pytest.approx(expected, abs=1e-12)


def test_the_statistic_is_the_metric_on_the_resample() -> None:
    # prompted also invents a label ("spam"), which counts as a class of its own in macro F1
    b = labels_wrong_on(set(range(7)))[:-1] + ["spam"]
    c = labels_wrong_on({3, 17, 30})
    _equals_metric_on_resamples(classification_statistic(b, c, REFS), b, c, REFS,
                                lambda p, r: metrics.classification(p, r)["macro_f1"], seed=7)


def field_refs() -> list[dict]:
    """40 invoices; every fourth has no amount, so the amount field is averaged over 30 references."""
    return [{"vendor": f"v{i}", "date": f"2024-01-{i % 28 + 1:02d}"} | ({} if i % 4 == 3 else {"amount": i * 10})
            for i in range(40)]


def answers(refs: list[dict], wrong_vendor: set[int], broken: set[int] = frozenset()) -> list[str]:
    """JSON answers right on every field except the vendor on `wrong_vendor`; `broken` ones are not JSON."""
    out = []
    for i, r in enumerate(refs):
        obj = r | ({"vendor": "?"} if i in wrong_vendor else {})
        out.append("{not json" if i in broken else json.dumps(obj))
    return out


def extract(prompted: list[str], tuned: list[str], refs: list[dict]) -> dict:
    systems = {"prompted": metrics.extraction(prompted, refs), "tuned": metrics.extraction(tuned, refs)}
    return decide("extraction", systems, outputs={"prompted": prompted, "tuned": tuned},
                  references=[json.dumps(r) for r in refs])


def test_extraction_field_accuracy_gets_the_same_interval_rule() -> None:
    refs = field_refs()
    clear = extract(answers(refs, set(range(20)), broken=set(range(20, 26))), answers(refs, {0}), refs)
    task = clear["task"]
    # prompted: vendor 14/40, date 34/40, amount 25/30 (6 broken answers, 1 of them without an amount)
    assert clear["baseline_value"] == pytest.approx((14 / 40 + 34 / 40 + 25 / 30) / 3)
    assert clear["candidate_value"] == pytest.approx((39 / 40 + 1 + 1) / 3)
    assert clear["verdict"] == "PASS" and task["n"] == 40 and task["delta_low"] > 0
    assert task["delta_low"] < task["delta"] < task["delta_high"]
    assert clear["reasons"][0].endswith("(paired bootstrap, 2000 resamples) over 40 examples)")
    narrow = extract(answers(refs, {1, 2}), answers(refs, {1}), refs)
    assert narrow["verdict"] == "inconclusive" and narrow["task"]["delta"] == pytest.approx(1 / 40 / 3)
    tie = extract(answers(refs, {5}), answers(refs, {6}), refs)
    assert tie["verdict"] == "FAIL" and tie["task"]["delta"] == 0.0


def test_extraction_statistic_is_the_metric_on_the_resample() -> None:
    refs = field_refs()
    b, c = answers(refs, set(range(0, 40, 3)), broken={4, 11}), answers(refs, {2, 9}, broken={7})
    _equals_metric_on_resamples(extraction_statistic(b, c, refs), b, c, refs,
                                lambda p, r: metrics.extraction(p, r)["field_accuracy_mean"], seed=3)


def test_the_bootstrap_contains_its_observed_delta_and_is_at_level() -> None:
    b = np.array([i % 3 == 0 for i in range(60)], float)
    c = np.array([i % 3 != 2 for i in range(60)], float)
    boot = stats.paired_bootstrap(lambda idx: (b[idx].mean(), c[idx].mean()), 60, alpha=0.025, resamples=500)
    assert boot["delta"] == pytest.approx(20 / 60) and boot["baseline"] == pytest.approx(1 / 3)
    assert boot["delta_low"] < boot["delta"] < boot["delta_high"]
    assert boot["level"] == 0.95 and boot["resamples"] == 500 and boot["method"] == "paired bootstrap, 500 resamples"
    with pytest.raises(ValueError, match="at least one"):
        stats.paired_bootstrap(lambda idx: (0.0, 0.0), 0)


def test_outputs_that_do_not_reproduce_the_scores_are_refused() -> None:
    b, c = labels_wrong_on(set(range(10))), labels_wrong_on(set())
    systems = {"prompted": metrics.classification(b, REFS), "tuned": metrics.classification(c, REFS)}
    with pytest.raises(ValueError, match="not the scored"):
        decide("classification", systems, outputs={"prompted": c, "tuned": b}, references=REFS)
    with pytest.raises(ValueError, match="no per-example outputs for prompted"):
        decide("classification", systems, outputs={"tuned": c}, references=REFS)
    # without per-example outputs the delta alone decides, as before: no interval in the row
    assert "delta_low" not in decide("classification", systems)["task"]


def test_the_report_row_shows_the_interval() -> None:
    gate = classify(set(range(16)), set(range(2)))
    row = verdict(gate).checks[0]
    assert (row.name, row.value, row.threshold, row.n, row.passed) == (
        "macro_f1: tuned − prompted", "+0.350 (90% +0.231 to +0.487)", "> 0.000", 40, True)
    narrow = verdict(classify(set(range(10)), set(range(9))))
    assert narrow.label == "INCONCLUSIVE" and narrow.checks[0].passed is None
    assert narrow.checks[0].value == "+0.025 (90% +0.000 to +0.074)"
