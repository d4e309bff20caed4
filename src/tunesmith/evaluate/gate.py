"""The promotion gate: is the tuned model worth shipping over the prompted baseline?

Two questions, each answered PASS, FAIL or inconclusive, on paired outcomes (the same items seen by
both systems) rather than on two rates:

1. Task: does tuned beat the baseline (the prompted one, or any system named by eval.gate_against, such as
   an endpoint running the production prompt) on the primary metric by more than `margin`?
   FAIL when the observed delta is not above the margin (a tie does not justify a fine-tune);
   PASS when the whole interval of the delta lies above the margin; inconclusive in between: better
   here, but by too few examples to tell. With per-example passes (compliance tasks) the interval is
   the paired one of tuned - prompted (stats.drop_interval). Macro F1 and mean field accuracy are not
   a per-example pass rate, so there is no 2x2 table: given both systems' per-example outputs and the
   references, the interval is a paired bootstrap (stats.paired_bootstrap, 2000 resamples of the
   examples, a fixed seed: the same outputs always give the same verdict), the metric recomputed on
   each resample for both systems (evaluate.task_bootstrap). Only when no per-example outputs are
   given (a gate over summary scores alone) does the delta alone decide.
2. Regression (the built-in suite and any eval.lm_eval tasks, each one category "lm-eval:TASK"; base vs
   tuned): did general ability drop? Per category and overall, a non-inferiority reading of the paired
   interval of the drop:
   - FAIL: a significant drop (one-sided exact McNemar, p < alpha) larger than the threshold;
   - PASS: the interval's upper end (the one-sided bound at alpha) is below the threshold: whatever the
     tuned model lost, the suite rules out losing as much as the threshold. This is where the suite's
     power shows: with too few items the bound cannot get below the threshold;
   - inconclusive ("n too small"): neither; never read as a pass.
   The power rule used before (PASS when the drop detectable with 80% power at the observed gained rate
   is within the threshold) penalised a category where the model gained items: more gains, more assumed
   churn, less power, so a better model got a worse verdict. The detectable drop is still reported, at
   the churn the data shows (the smaller of the lost and gained rates: flips both ways).

Thresholds (rates; 0.05 = 5 points of pass rate):
- REGRESSION_THRESHOLD (overall, 434 items): a drop above it means the model lost a visible share of
  what it could do; at alpha 0.05 the suite sees about 2 points with no churn and 5 points at 4% churn.
- CATEGORY_THRESHOLD (per category, 80-154 items, alpha shared across categories by Bonferroni): a
  category that loses more than this lost a skill, even when the overall rate hides it.
- ALPHA: the false-alarm rate of each decision; intervals are two-sided at 1 - 2 * alpha, so their
  lower end is the one-sided bound the test uses.
"""

from __future__ import annotations

from typing import Any, Sequence

from tunesmith.evaluate import stats

ALPHA = stats.ALPHA
POWER = stats.POWER
REGRESSION_THRESHOLD = 0.05
CATEGORY_THRESHOLD = 0.15
# A drop can be no larger than what the base passed: below this base pass rate the suite's PASS is said to
# carry little weight (a pretrained base that never stops fails most generated items before any tuning).
LITTLE_TO_LOSE = 0.25

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


def judge_drop(pairs: list[tuple[bool, bool]], threshold: float, alpha: float = ALPHA) -> dict[str, Any]:
    """Verdict on (base passed, tuned passed) pairs: stats.paired_comparison's numbers plus "delta"
    (tuned - base rate), "threshold", "alpha", "churn" (flips both ways: the smaller of the lost and
    gained rates), "detectable_drop" (smallest drop seen with POWER at that churn; None: not even losing
    everything), "verdict" and "flagged" (verdict is FAIL)."""
    row: dict[str, Any] = stats.paired_comparison(pairs, alpha)
    churn = min(row["lost"], row["gained"]) / row["n"]
    detectable = stats.detectable_drop(row["n"], churn, alpha, POWER)
    if row["p_drop"] < alpha and row["drop"] > threshold:
        verdict = "FAIL"
    elif row["drop_high"] < threshold:
        verdict = "PASS"
    else:
        verdict = "inconclusive"
    return row | {"delta": -row["drop"], "threshold": threshold, "alpha": alpha, "churn": churn,
                  "detectable_drop": detectable, "verdict": verdict, "flagged": verdict == "FAIL"}


def _drop_reason(name: str, row: dict[str, Any]) -> str:
    counts = (f"{row['lost']} lost, {row['gained']} gained of {row['n']}; {row['level'] * 100:g}% interval "
              f"{row['drop_low'] * 100:+.1f} to {row['drop_high'] * 100:+.1f} points; p={row['p_drop']:.3g}")
    seen = ("no drop is detectable" if row["detectable_drop"] is None else
            f"detects {row['detectable_drop'] * 100:.1f} points with {POWER:.0%} power at {row['churn']:.0%} churn")
    if row["verdict"] == "FAIL":
        return (f"FAIL: regression {name} dropped {row['drop'] * 100:.1f} points ({row['base']:.3f} -> "
                f"{row['tuned']:.3f}; {counts} < alpha {row['alpha']:.3g}; threshold {row['threshold'] * 100:.1f})")
    if row["verdict"] == "PASS":
        return (f"ok: regression {name} {row['delta'] * 100 + 0.0:+.1f} points ({counts}); a drop is at most "
                f"{row['drop_high'] * 100:.1f} points, below the {row['threshold'] * 100:.1f}-point threshold")
    return (f"inconclusive: regression {name}: n too small ({counts}); the drop may reach "
            f"{row['drop_high'] * 100:.1f} points, above the {row['threshold'] * 100:.1f}-point threshold; {seen}")


def little_to_lose(regression: dict[str, Any]) -> str | None:
    """The caveat on a suite the base model mostly fails (None when it passes at least LITTLE_TO_LOSE of it).
    It never changes a verdict: it says how little a regression PASS (or a small drop) means here."""
    base = regression["overall"]["base"]
    if base >= LITTLE_TO_LOSE:
        return None
    low = [f"{cat} {row['base']:.0%}" for cat, row in regression["by_category"].items() if row["base"] < LITTLE_TO_LOSE]
    return (f"the regression suite has little to lose: the base model passes {base:.0%} of it"
            + (f" ({', '.join(low)})" if low else "") + ", so its verdict cannot show that general ability was kept")


def _bootstrap(metric: str, cand: float, base: float, outputs: dict[str, Sequence[Any]] | None,
               references: Sequence[Any] | None, candidate: str, baseline: str) -> dict[str, Any] | None:
    """stats.paired_bootstrap of the primary metric when it has a resampling statistic and per-example
    outputs of both systems are given; None otherwise."""
    from tunesmith.evaluate.task_bootstrap import STATISTICS

    if metric not in STATISTICS or not outputs or references is None or not len(references):
        return None
    missing = [s for s in (candidate, baseline) if s not in outputs]
    if missing:
        raise ValueError(f"no per-example outputs for {', '.join(missing)}")
    boot = stats.paired_bootstrap(STATISTICS[metric](outputs[baseline], outputs[candidate], references),
                                  len(references))
    # the full sample must reproduce the scores being gated, or the interval is about other outputs
    if abs(boot["candidate"] - cand) > 1e-9 or abs(boot["baseline"] - base) > 1e-9:
        raise ValueError(f"per-example outputs give {metric} {boot['candidate']:.6f} ({candidate}) and "
                         f"{boot['baseline']:.6f} ({baseline}), not the scored {cand:.6f} and {base:.6f}")
    return boot


def _task_row(cand: float, base: float, margin: float, pairs: list[tuple[bool, bool]] | None,
              boot: dict[str, Any] | None = None) -> dict[str, Any]:
    delta = round(cand - base, 9)
    row: dict[str, Any] = {"delta": delta, "margin": margin}
    if pairs:
        c = stats.paired_comparison(pairs)  # (baseline passed, candidate passed): its drop is -gain
        row |= {"n": c["n"], "better": c["gained"], "worse": c["lost"], "level": c["level"],
                "delta_low": -c["drop_high"], "delta_high": -c["drop_low"], "p_better": c["p_gain"],
                "method": "paired Agresti-Min interval"}
    elif boot:
        row |= {k: boot[k] for k in ("n", "level", "delta_low", "delta_high", "resamples", "method")}
    if delta <= margin:
        row["verdict"] = "FAIL"
    elif "delta_low" not in row or row["delta_low"] > margin:
        row["verdict"] = "PASS"
    else:
        row["verdict"] = "inconclusive"
    return row


def decide(
    task: str,
    systems: dict[str, dict[str, Any]],
    regression: dict[str, Any] | None = None,
    margin: float = 0.0,
    candidate: str = "tuned",
    baseline: str = "prompted",
    pairs: list[tuple[bool, bool]] | None = None,
    outputs: dict[str, Sequence[Any]] | None = None,
    references: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """The verdict with reasons.

    `systems` maps a system name to its score dict (what `score_predictions` returns); `regression`
    is `compare_regression`'s result or None when the suite was not run; `pairs` are per-example
    (baseline passed, candidate passed) on the primary metric, when it is a pass rate. For macro F1 and
    mean field accuracy, `outputs` (system -> per-example outputs, in the order of `references`: labels
    for classification, reference objects for extraction) give the bootstrap interval instead.
    Returns {"verdict": "PASS" | "FAIL" | "inconclusive", "passed" (verdict is PASS), "reasons",
    "primary_metric", "candidate", "baseline", "margin", "candidate_value", "baseline_value", "delta",
    "task": _task_row (delta, interval, better/worse counts, verdict), "regression_verdict",
    "regression_flagged", "regression_inconclusive", "caveats" (what the verdict cannot show: little_to_lose)}.
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
    boot = None if pairs else _bootstrap(metric, cand, base, outputs, references, candidate, baseline)
    row = _task_row(cand, base, margin, pairs, boot)
    relation = ">" if row["delta"] > margin else "<="
    interval = ""
    if pairs:
        interval = (f"; {row['level'] * 100:g}% interval {row['delta_low']:+.3f} to {row['delta_high']:+.3f}, "
                    f"{row['better']} examples better, {row['worse']} worse of {row['n']}")
    elif boot:
        interval = (f"; {row['level'] * 100:g}% interval {row['delta_low']:+.3f} to {row['delta_high']:+.3f} "
                    f"({row['method']}) over {row['n']} examples")
    prefix = {"PASS": "ok", "FAIL": "FAIL", "inconclusive": "inconclusive"}[row["verdict"]]
    reasons = [(f"{prefix}: {candidate} {metric} {cand:.3f} vs {baseline} {base:.3f} "
                f"(delta {row['delta']:+.3f} {relation} margin {margin:.3f}{interval})")]
    if row["verdict"] == "inconclusive":
        reasons.append(f"inconclusive: the interval reaches down to {row['delta_low']:+.3f}: too few test "
                       f"examples to tell {candidate} from {baseline}")
    verdicts = [row["verdict"]]
    if regression is not None:
        rows = regression["by_category"] | {"overall": regression["overall"]}
        reasons += [_drop_reason(name, r) for name, r in rows.items()]
        verdicts.append(regression["verdict"])
    caveats = [c for c in [regression and little_to_lose(regression)] if c]
    reasons += [f"caveat: {c}" for c in caveats]
    verdict = "FAIL" if "FAIL" in verdicts else "inconclusive" if "inconclusive" in verdicts else "PASS"
    return {
        "verdict": verdict,
        "passed": verdict == "PASS",
        "reasons": reasons,
        "primary_metric": metric,
        "candidate": candidate,
        "baseline": baseline,
        "margin": margin,
        "candidate_value": cand,
        "baseline_value": base,
        "delta": row["delta"],
        "task": row,
        "regression_verdict": regression["verdict"] if regression else None,
        "regression_flagged": list(regression["flagged"]) if regression else [],
        "regression_inconclusive": list(regression["inconclusive"]) if regression else [],
        "caveats": caveats,
    }
