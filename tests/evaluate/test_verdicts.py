"""results.json carries the gate's and the suite's numbers typed, through tunesmith.rundir only."""

from __future__ import annotations

from tunesmith.evaluate.gate import decide
from tunesmith.evaluate.regression import compare_regression, load_suite, score_regression
from tunesmith.rundir import EvalResults, RunDir


def test_gate_and_regression_round_trip_typed(tmp_path) -> None:
    suite = load_suite()
    good = {it["id"]: it["reference"] if it["kind"] == "generate" else it["answer"] for it in suite}
    reg = compare_regression(score_regression(good), score_regression(good))
    pairs = [(i < 5, i < 20) for i in range(24)]
    gate = decide("compliance", {"prompted": {"compliance": {"all": 5 / 24}}, "tuned": {"compliance": {"all": 20 / 24}}},
                  reg, pairs=pairs)
    run = RunDir(tmp_path)
    run.write_results(EvalResults(task="compliance", regression=reg, gate=gate))
    back = run.results()
    assert back.gate.verdict == gate["verdict"] == "PASS" and back.gate.task.better == 15
    assert back.gate.task.delta_low == gate["task"]["delta_low"] > 0
    assert back.regression.verdict == "PASS" and back.regression.overall.n == len(suite)
    assert back.regression.by_category["facts"].detectable_drop == reg["by_category"]["facts"]["detectable_drop"]


def test_results_written_before_the_verdicts_still_load(tmp_path) -> None:
    run = RunDir(tmp_path)
    run.results_path.parent.mkdir(parents=True)
    run.results_path.write_text('{"task": "compliance", "gate": {"passed": true, "reason": "tuned beats base"}, '
                                '"regression": {"threshold": 0.05, "overall": {"base": 0.4, "tuned": 0.3, '
                                '"delta": -0.1, "flagged": true}, "by_category": {}, "flagged": ["overall"]}}')
    back = run.results()
    assert back.gate.passed and back.gate.verdict is None
    assert back.regression.overall.flagged and back.regression.overall.lost is None
