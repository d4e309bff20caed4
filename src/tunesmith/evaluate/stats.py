"""Paired statistics for comparing two systems item by item (each item passed or failed by both).

Only the discordant items carry information: `lost` (the reference passed, the candidate failed) and
`gained` (the other way round). The exact McNemar test conditions on their sum m: with no real
change, lost ~ Binomial(m, 1/2). scipy (a scikit-learn dependency) supplies the binomial tails.

Metrics that are not a mean of per-example passes (macro F1, mean field accuracy) have no 2x2 table:
their paired interval is a bootstrap over the examples (paired_bootstrap).
"""

from __future__ import annotations

from statistics import NormalDist
from typing import Any, Callable

ALPHA = 0.05
POWER = 0.8


def mcnemar_p(lost: int, gained: int, alternative: str = "greater") -> float:
    """Exact McNemar p-value. "greater": evidence that items are lost more often than gained (a drop);
    "less": gained more often (an improvement); "two-sided": either."""
    from scipy.stats import binomtest

    m = lost + gained
    if m == 0:
        return 1.0
    return float(binomtest(lost, m, 0.5, alternative=alternative).pvalue)


def drop_interval(n: int, lost: int, gained: int, level: float = 0.95) -> tuple[float, float]:
    """Confidence interval of the paired drop (lost - gained) / n, Agresti-Min adjusted Wald: half an
    item is added to each cell of the 2x2 table, so an interval never collapses to a point when no item
    changed (zero discordant items out of 30 is weaker evidence than out of 3000)."""
    if n <= 0:
        raise ValueError("an interval needs at least one paired item")
    # cells: lost, gained and the two concordant ones, each + 1/2
    nn = n + 2.0
    p_lost, p_gained = (lost + 0.5) / nn, (gained + 0.5) / nn
    drop = p_lost - p_gained
    se = ((p_lost + p_gained - drop * drop) / nn) ** 0.5
    z = NormalDist().inv_cdf(0.5 + level / 2)
    return max(-1.0, drop - z * se), min(1.0, drop + z * se)


def _critical(n: int, alpha: float):
    """For m = 1..n discordant items, the fewest lost ones the one-sided exact test calls a drop
    (m + 1 where none is enough)."""
    import numpy as np
    from scipy.stats import binom

    m = np.arange(1, n + 1)
    # isf gives the smallest k with P(X > k) <= alpha, so P(X >= k + 1) <= alpha
    return binom.isf(alpha, m, 0.5) + 1


def power(n: int, drop: float, churn: float, alpha: float = ALPHA) -> float:
    """Chance that the one-sided exact McNemar test at `alpha` calls a drop significant when each of n
    items is lost with probability churn + drop and gained with probability churn (exact: a sum over
    the number of discordant items)."""
    import numpy as np
    from scipy.stats import binom

    p_disc = min(2 * churn + drop, 1.0)
    if p_disc <= 0:
        return 0.0
    share_lost = (churn + drop) / (2 * churn + drop)
    m = np.arange(1, n + 1)
    return float(np.sum(binom.pmf(m, n, p_disc) * binom.sf(_critical(n, alpha) - 1, m, share_lost)))


def detectable_drop(n: int, churn: float = 0.0, alpha: float = ALPHA, target: float = POWER) -> float | None:
    """Smallest drop (a rate) the test sees with probability `target` at n paired items, on top of
    symmetric churn (items flipping both ways for reasons unrelated to forgetting); None when even
    losing every item is not enough (n too small for `alpha`). Found to 0.001 by bisection: power grows
    with the drop."""
    churn = max(0.0, min(churn, 0.5))
    hi = 1.0 - 2 * churn
    if n <= 0 or hi <= 0 or power(n, hi, churn, alpha) < target:
        return None
    lo = 0.0
    while hi - lo > 0.001:
        mid = (lo + hi) / 2
        if power(n, mid, churn, alpha) >= target:
            hi = mid
        else:
            lo = mid
    return round(hi, 3)


def paired_comparison(outcomes: list[tuple[bool, bool]], alpha: float = ALPHA) -> dict[str, float | int]:
    """Counts, drop and its interval for (reference passed, candidate passed) pairs.

    drop = reference rate - candidate rate; the interval is at level 1 - 2 * alpha (two-sided), so its
    lower end is the one-sided bound at `alpha`."""
    n = len(outcomes)
    lost = sum(1 for r, c in outcomes if r and not c)
    gained = sum(1 for r, c in outcomes if c and not r)
    low, high = drop_interval(n, lost, gained, level=1 - 2 * alpha)
    return {"n": n, "lost": lost, "gained": gained, "drop": (lost - gained) / n, "drop_low": low, "drop_high": high,
            "level": round(1 - 2 * alpha, 6),
            "p_drop": mcnemar_p(lost, gained, "greater"), "p_gain": mcnemar_p(lost, gained, "less")}


BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


def paired_bootstrap(
    statistic: Callable[[Any], tuple[float, float]],
    n: int,
    alpha: float = ALPHA,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, Any]:
    """Percentile interval of candidate - baseline for a metric that is not a mean of per-example passes
    (macro F1, mean field accuracy), on n examples both systems answered.

    `statistic(idx)` takes an array of example indices (repeats allowed) and returns (baseline value,
    candidate value) of the metric on those examples. Both systems are scored on the same resample, so
    the interval is paired: an example that is hard for both moves both values together. The interval is
    at level 1 - 2 * alpha, so its lower end is the one-sided bound at `alpha`, as drop_interval's is.
    A fixed seed makes the verdict repeatable: the same outputs give the same interval on every run."""
    import numpy as np

    if n <= 0:
        raise ValueError("a bootstrap needs at least one paired example")
    base, cand = statistic(np.arange(n))
    rng = np.random.default_rng(seed)
    deltas = np.empty(resamples)
    for b in range(resamples):
        lo, hi = statistic(rng.integers(0, n, size=n))
        deltas[b] = hi - lo
    low, high = np.quantile(deltas, [alpha, 1 - alpha])
    return {"n": n, "baseline": float(base), "candidate": float(cand), "delta": float(cand - base),
            "delta_low": float(low), "delta_high": float(high), "level": round(1 - 2 * alpha, 6),
            "resamples": resamples, "method": f"paired bootstrap, {resamples} resamples"}
