"""The one-sentence verdict reads both gate shapes: today's decide() dict and a list of checks."""

from __future__ import annotations

from tunesmith.report.verdict import verdict


def test_todays_gate_shape_names_the_metric_and_the_forgetting():
    gate = {"passed": False, "primary_metric": "compliance.all", "candidate": "tuned", "baseline": "prompted",
            "margin": 0.0, "candidate_value": 1.0, "baseline_value": 0.52, "delta": 0.48,
            "regression_flagged": ["facts", "overall"], "reasons": ["ok: ...", "FAIL: ..."]}
    reg = {"threshold": 0.05, "overall": {"base": 0.4, "tuned": 0.233, "delta": -0.167, "flagged": True},
           "by_category": {"facts": {"base": 0.5, "tuned": 0.125, "delta": -0.375, "flagged": True, "n": 8},
                           "format": {"base": 0.25, "tuned": 0.25, "delta": 0.0, "flagged": False, "n": 22}},
           "changed": [{"change": "lost"}] * 5}
    v = verdict(gate, reg, n_test=23)
    assert v.label == "DO NOT PROMOTE" and v.kind == "bad"
    assert v.sentence == ("DO NOT PROMOTE — compliance 1.00 tuned vs 0.52 prompted, but general ability −16.7 points "
                          "overall, facts −37.5 points: 5 lost / 0 gained of 30")
    assert [(c.name, c.passed, c.n) for c in v.checks] == [
        ("compliance: tuned − prompted", True, 23), ("general ability: facts", False, 8),
        ("general ability: format", True, 22), ("general ability: overall", False, None)]


def test_a_tie_is_not_a_win():
    gate = {"passed": False, "primary_metric": "macro_f1", "candidate_value": 0.8, "baseline_value": 0.8,
            "delta": 0.0, "margin": 0.0, "regression_flagged": []}
    v = verdict(gate)
    assert v.sentence == "DO NOT PROMOTE — macro_f1 0.80 tuned vs 0.80 prompted: not more than 0.00 better"
    assert v.checks[0].passed is False


def test_checks_shape_with_an_inconclusive_check():
    gate = {"verdict": "inconclusive", "checks": [
        {"name": "compliance vs prompted (McNemar)", "value": 0.031, "threshold": "p < 0.05", "n": 23, "passed": True},
        {"name": "facts vs base", "value": 0.25, "threshold": "p < 0.05", "n": 8, "passed": None}]}
    v = verdict(gate)
    assert v.label == "INCONCLUSIVE" and v.kind == "warn"
    assert v.sentence == "INCONCLUSIVE — facts vs base 0.25 (needs p < 0.05)"
    assert [c.passed for c in v.checks] == [True, None]
    assert verdict({"passed": True, "checks": [{"name": "a", "value": 1, "threshold": "> 0", "passed": True}]}
                   ).sentence == "PROMOTE — every check passed: a 1 (needs > 0)"


def test_a_gate_with_only_its_conclusion_invents_no_numbers():
    v = verdict({"passed": True, "reason": "tuned beats base"})
    assert v.sentence == "PROMOTE — tuned beats base" and v.checks == []
