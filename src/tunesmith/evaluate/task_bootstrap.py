"""The gate's task metrics recomputed on a resample of the test examples, for stats.paired_bootstrap.

Each builder turns the two systems' per-example outputs into a statistic(idx) -> (baseline, candidate)
that equals metrics.classification's macro F1 / metrics.extraction's mean field accuracy on the
examples idx names (repeats counted). The per-example work (label normalisation, JSON parsing) is done
once; a resample is then only counting, so 2000 resamples cost well under a second.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from tunesmith.evaluate import metrics

Statistic = Callable[[np.ndarray], tuple[float, float]]


def _macro_f1(codes_true: np.ndarray, codes_pred: np.ndarray, k: int) -> float:
    # the label set is the union of the labels the resample holds, as in metrics.classification:
    # a class with neither support nor predictions here is not a class of this resample
    support = np.bincount(codes_true, minlength=k)
    predicted = np.bincount(codes_pred, minlength=k)
    tp = np.bincount(codes_true[codes_true == codes_pred], minlength=k)
    present = support + predicted > 0
    if not present.any():
        return 0.0
    f1 = 2 * tp[present] / (support[present] + predicted[present])
    return float(f1.mean())


def classification_statistic(baseline: Sequence[Any], candidate: Sequence[Any], labels: Sequence[Any],
                             ignore_case: bool = False) -> Statistic:
    """(baseline, candidate) macro F1 on the examples idx names."""
    if not len(baseline) == len(candidate) == len(labels):
        raise ValueError(f"{len(baseline)} and {len(candidate)} predictions but {len(labels)} references")
    norm = [[metrics.normalize_label(x, ignore_case) for x in xs] for xs in (labels, baseline, candidate)]
    vocab = {lab: i for i, lab in enumerate(sorted(set().union(*norm)))}
    y, b, c = (np.array([vocab[x] for x in xs], dtype=np.int64) for xs in norm)
    k = len(vocab)

    def statistic(idx: np.ndarray) -> tuple[float, float]:
        yt = y[idx]
        return _macro_f1(yt, b[idx], k), _macro_f1(yt, c[idx], k)

    return statistic


def extraction_statistic(baseline: Sequence[Any], candidate: Sequence[Any], references: Sequence[Any]) -> Statistic:
    """(baseline, candidate) field_accuracy_mean on the examples idx names: per field, the share right
    among the resampled references that have it; then the unweighted mean over the fields seen."""
    refs = [metrics.as_object(r, f"reference #{i + 1}") for i, r in enumerate(references)]
    fields = sorted({f for r in refs for f in r})
    has = np.array([[f in r for f in fields] for r in refs], dtype=np.int64).reshape(len(refs), len(fields))

    def hits(preds: Sequence[Any]) -> np.ndarray:
        rows = metrics.field_hits(preds, refs)
        return np.array([[row.get(f, False) for f in fields] for row in rows], dtype=np.int64).reshape(has.shape)

    hb, hc = hits(baseline), hits(candidate)

    def mean_accuracy(h: np.ndarray, totals: np.ndarray, seen: np.ndarray) -> float:
        return float((h.sum(axis=0)[seen] / totals[seen]).mean()) if seen.any() else 0.0

    def statistic(idx: np.ndarray) -> tuple[float, float]:
        totals = has[idx].sum(axis=0)
        seen = totals > 0
        return mean_accuracy(hb[idx], totals, seen), mean_accuracy(hc[idx], totals, seen)

    return statistic


STATISTICS: dict[str, Callable[..., Statistic]] = {
    "macro_f1": classification_statistic,
    "field_accuracy_mean": extraction_statistic,
}
