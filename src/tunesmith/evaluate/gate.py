"""The promotion gate: is the tuned model worth shipping over the prompted baseline?

Two conditions, both required:
1. the tuned system beats the baseline on the task's primary metric by more than
   `margin` (margin 0.0 means strictly greater: a tie does not justify a fine-tune);
2. no regression-suite category (nor the overall rate) dropped by more than its threshold.
"""

from __future__ import annotations

from typing import Any

# Compliance-style tasks are judged on the share of outputs passing every rule, since
# format is what fine-tuning is bought for there; generation falls back to ROUGE-L when
# it was scored without rules.
PRIMARY_METRIC = {
    "classification": "macro_f1",
    "extraction": "field_accuracy_mean",
    "generation": "compliance.all",
    "compliance": "compliance.all",
}
FALLBACK_METRIC = {"generation": "rouge_l"}


def primary_metric(task: str, metrics: dict[str, Any]) -> str:
    """Name of the metric that decides the gate for `task` given what `metrics` holds."""
    if task not in PRIMARY_METRIC:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(PRIMARY_METRIC)}")
    name = PRIMARY_METRIC[task]
    if metric_value(metrics, name) is None and task in FALLBACK_METRIC:
        return FALLBACK_METRIC[task]
    return name


def metric_value(metrics: dict[str, Any], name: str) -> float | None:
    """Look up a metric by dotted name ("compliance.all") in a score dict."""
    value: Any = metrics
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def decide(
    task: str,
    systems: dict[str, dict[str, Any]],
    regression: dict[str, Any] | None = None,
    margin: float = 0.0,
    candidate: str = "tuned",
    baseline: str = "prompted",
) -> dict[str, Any]:
    """Pass/fail with reasons.

    `systems` maps a system name to its score dict (what `score_predictions` returns);
    `regression` is `compare_regression`'s result or None when the suite was not run.
    Returns {"passed", "reasons", "primary_metric", "candidate", "baseline", "margin",
    "candidate_value", "baseline_value", "delta", "regression_flagged"}.
    """
    for name in (candidate, baseline):
        if name not in systems:
            raise ValueError(f"no metrics for system {name!r} (have: {', '.join(systems) or 'none'})")
    metric = primary_metric(task, systems[candidate])
    cand = metric_value(systems[candidate], metric)
    base = metric_value(systems[baseline], metric)
    missing = [n for n, v in ((candidate, cand), (baseline, base)) if v is None]
    if missing:
        raise ValueError(f"metric {metric!r} missing for {', '.join(missing)}")
    reasons = []
    delta = round(cand - base, 9)
    beats = delta > margin
    relation = ">" if beats else "<="
    reasons.append(
        f"{'ok' if beats else 'FAIL'}: {candidate} {metric} {cand:.3f} vs {baseline} {base:.3f} "
        f"(delta {delta:+.3f} {relation} margin {margin:.3f})"
    )
    flagged = list(regression["flagged"]) if regression else []
    if regression is not None:
        rows = regression["by_category"] | {"overall": regression["overall"]}
        for cat in flagged:
            row = rows[cat]
            reasons.append(
                f"FAIL: regression {cat} dropped {-row['delta'] * 100:.1f} points "
                f"({row['base']:.3f} -> {row['tuned']:.3f}; threshold {regression['threshold'] * 100:.1f})"
            )
        if not flagged:
            reasons.append(f"ok: no regression category dropped more than {regression['threshold'] * 100:.1f} points")
    return {
        "passed": beats and not flagged,
        "reasons": reasons,
        "primary_metric": metric,
        "candidate": candidate,
        "baseline": baseline,
        "margin": margin,
        "candidate_value": cand,
        "baseline_value": base,
        "delta": delta,
        "regression_flagged": flagged,
    }
