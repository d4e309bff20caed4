"""Types of the gate's and the regression suite's numbers in eval/results.json (EvalResults.gate and
EvalResults.regression); what tunesmith.evaluate.gate and .regression compute, field by field.

Every field a reader may need is declared with its meaning; results written before a field existed
still load (it is optional), and keys not listed here are kept (extra="allow").
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Verdict = Literal["PASS", "FAIL", "inconclusive"]


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())


class DropRow(_Loose):
    """One category (or "overall") of the regression suite, base vs tuned paired by item."""

    n: int | None = Field(None, description="Items in the category.")
    base: float = Field(description="Base model pass rate.")
    tuned: float = Field(description="Tuned model pass rate.")
    delta: float = Field(description="tuned - base pass rate (negative: a drop).")
    lost: int | None = Field(None, description="Items the base passed and the tuned model failed.")
    gained: int | None = Field(None, description="Items the tuned model passed and the base failed.")
    drop: float | None = Field(None, description="(lost - gained) / n = base - tuned.")
    drop_low: float | None = Field(None, description="Lower end of the drop's interval (Agresti-Min paired).")
    drop_high: float | None = Field(None, description="Upper end of the drop's interval.")
    level: float | None = Field(None, description="Confidence level of the interval (two-sided, 1 - 2 * alpha).")
    p_drop: float | None = Field(None, description="One-sided exact McNemar p-value for a drop.")
    p_gain: float | None = Field(None, description="One-sided exact McNemar p-value for an improvement.")
    threshold: float | None = Field(None, description="Largest drop accepted (a rate: 0.05 = 5 points).")
    alpha: float | None = Field(None, description="Significance level of this row's test (Bonferroni-shared "
                                "across categories).")
    churn: float | None = Field(None, description="Flips both ways (the smaller of the lost and gained "
                                "rates): the background the detectable drop is computed at.")
    detectable_drop: float | None = Field(None, description="Smallest drop the test sees with 80% power at this n "
                                          "and churn; null: none, n too small.")
    verdict: Verdict | None = Field(None, description="FAIL: significant drop above the threshold; PASS: the "
                                    "interval's upper end (drop_high) below the threshold; inconclusive: neither.")
    flagged: bool = Field(description="verdict is FAIL.")


class RegressionResult(_Loose):
    """The regression suite: base vs tuned per category and overall."""

    threshold: float = Field(description="Overall drop threshold (rate).")
    category_threshold: float | None = Field(None, description="Per-category drop threshold (rate).")
    alpha: float | None = Field(None, description="Overall significance level.")
    category_alpha: float | None = Field(None, description="Per-category significance level (alpha / categories).")
    overall: DropRow
    by_category: dict[str, DropRow]
    flagged: list[str] = Field(description="Rows whose verdict is FAIL.")
    inconclusive: list[str] = Field([], description="Rows that could not be decided (n too small).")
    verdict: Verdict | None = Field(None, description="FAIL if any row fails, PASS if all pass, else inconclusive.")
    changed: list[dict[str, Any]] = Field([], description="Items lost or gained: id, category, prompt, change "
                                          "(lost|gained), base and tuned answers, failed_checks.")


class TaskRow(_Loose):
    """Tuned vs the baseline (prompted, or the system eval.gate_against names) on the task's primary metric."""

    delta: float = Field(description="candidate - baseline on the primary metric.")
    margin: float = Field(description="How much the candidate must beat the baseline by.")
    n: int | None = Field(None, description="Paired test examples (null: no per-example data, no interval).")
    better: int | None = Field(None, description="Examples the candidate passes and the baseline fails "
                               "(per-example pass metrics only).")
    worse: int | None = Field(None, description="Examples the baseline passes and the candidate fails "
                              "(per-example pass metrics only).")
    delta_low: float | None = Field(None, description="Lower end of the delta's paired interval.")
    delta_high: float | None = Field(None, description="Upper end of the delta's paired interval.")
    level: float | None = Field(None, description="Confidence level of the interval.")
    method: str | None = Field(None, description="How the interval was computed: the paired Agresti-Min interval "
                               "(pass rates) or a paired bootstrap of the examples (macro F1, mean field accuracy).")
    resamples: int | None = Field(None, description="Bootstrap resamples (bootstrap intervals only).")
    p_better: float | None = Field(None, description="One-sided exact McNemar p-value for an improvement "
                                   "(per-example pass metrics only).")
    verdict: Verdict = Field(description="FAIL: delta <= margin; PASS: the whole interval above the margin (or, "
                             "without per-example data, delta > margin); inconclusive otherwise.")


class GateResult(_Loose):
    """The promotion decision (tunesmith.evaluate.gate.decide)."""

    passed: bool = Field(description="verdict is PASS.")
    verdict: Verdict | None = Field(None, description="FAIL if the task or the suite fails, PASS if both pass, "
                                    "else inconclusive (not a pass).")
    reasons: list[str] = Field([], description="One line per decision, prefixed ok / FAIL / inconclusive.")
    primary_metric: str | None = Field(None, description="Metric the task verdict is on.")
    candidate: str | None = None
    baseline: str | None = None
    margin: float | None = None
    candidate_value: float | None = None
    baseline_value: float | None = None
    delta: float | None = Field(None, description="candidate_value - baseline_value.")
    task: TaskRow | None = None
    regression_verdict: Verdict | None = Field(None, description="The suite's verdict; null when it was not run.")
    regression_flagged: list[str] = Field([], description="Suite rows that failed.")
    regression_inconclusive: list[str] = Field([], description="Suite rows without the power to decide.")
    caveats: list[str] = Field([], description="What the verdict cannot show, e.g. a suite the base model mostly "
                               "fails has little to lose (gate.little_to_lose); never changes the verdict.")


class LmEvalTask(_Loose):
    """One lm-evaluation-harness task, run on base and tuned (tunesmith.evaluate.lm_eval_backend)."""

    metric: str | None = Field(None, description="Per-item 0/1 metric that pairs base and tuned (acc, acc_norm, "
                               "exact_match); null: the task has none, so it is scored but not in the regression check.")
    n: int = Field(description="Items scored (after eval.lm_eval.limit).")
    category: str | None = Field(None, description="Its row in regression.by_category (lm-eval:TASK); null when "
                                 "not paired.")
    base: dict[str, Any] = Field({}, description="lm-eval's aggregate scores of the base model (metric -> value).")
    tuned: dict[str, Any] = Field({}, description="lm-eval's aggregate scores of the tuned model.")


class LmEvalResult(_Loose):
    """eval.lm_eval: the lm-eval tasks' scores; their paired verdicts are rows of `regression`."""

    version: str | None = Field(None, description="lm-eval version that scored them.")
    limit: int | None = Field(None, description="Items per task (null: all).")
    num_fewshot: int | None = Field(None, description="Few-shot override (null: each task's own).")
    tasks: dict[str, LmEvalTask] = {}
