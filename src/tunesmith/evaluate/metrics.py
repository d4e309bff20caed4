"""Task metrics as pure functions: lists of outputs in, plain dicts of numbers out.

Nothing here loads a model, so the same functions score the base model, the prompted
baseline, the tuned model, or any other system's outputs saved to a file.
"""

from __future__ import annotations

import json
import re
import unicodedata
import warnings
from functools import lru_cache
from typing import Any, Sequence

from tunesmith.rules import RuleSet, compliance as rule_compliance, parse_json_answer


def _check_lengths(preds: Sequence[Any], refs: Sequence[Any]) -> None:
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions but {len(refs)} references")


def normalize_label(label: Any, ignore_case: bool = False) -> str:
    """Labels compare after strip(); case is kept unless asked, because label sets may differ only by case.
    A missing answer (null) is the empty answer, not the text "None", which may well be a real label.
    NFC makes "é" typed as one character and as e + accent (macOS copies) the same label."""
    text = "" if label is None else unicodedata.normalize("NFC", str(label)).strip()
    return text.casefold() if ignore_case else text


def classification(preds: Sequence[Any], refs: Sequence[Any], ignore_case: bool = False) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support, macro F1 and the confusion matrix.

    The label set is the sorted union of reference and predicted labels, so a label the
    model invents counts as a class with support 0 (it lowers precision of nothing but
    adds an F1 of 0 to the macro mean). This is scikit-learn's own default for
    `average="macro"`; classes with no predictions or no support score 0 (zero_division=0).
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    _check_lengths(preds, refs)
    y_pred = [normalize_label(p, ignore_case) for p in preds]
    y_true = [normalize_label(r, ignore_case) for r in refs]
    n = len(y_true)
    if n == 0:
        return {"n": 0, "accuracy": 0.0, "macro_f1": 0.0, "per_class": {}, "confusion": {"labels": [], "matrix": []}}
    labels = sorted(set(y_true) | set(y_pred))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    per_class = {
        lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i, lab in enumerate(labels)
    }
    with warnings.catch_warnings():
        # scikit-learn warns about a single label even when `labels` is passed, as it is here
        warnings.filterwarnings("ignore", message="A single label was found", category=UserWarning)
        matrix = confusion_matrix(y_true, y_pred, labels=labels)
    return {
        "n": n,
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f.mean()),
        "per_class": per_class,
        # rows are reference labels, columns predicted labels (scikit-learn's convention)
        "confusion": {"labels": labels, "matrix": matrix.tolist()},
    }


def _json_equal(a: Any, b: Any) -> bool:
    """JSON value equality where 1 == 1.0 but true != 1 (Python's == conflates bool and int)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


def as_object(value: Any, what: str) -> dict[str, Any]:
    if isinstance(value, str):
        ok, parsed = parse_json_answer(value)
        if not ok:
            raise ValueError(f"{what} is not valid JSON")
        value = parsed
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _parse_pred(pred: Any) -> tuple[bool, dict[str, Any] | None]:
    """(valid JSON, the object or None when it is not one) for a text or already-parsed prediction."""
    ok, obj = (True, pred) if isinstance(pred, (dict, list)) else parse_json_answer(str(pred))
    return ok, obj if ok and isinstance(obj, dict) else None


def _hits(obj: dict[str, Any] | None, ref: dict[str, Any]) -> dict[str, bool]:
    return {f: obj is not None and f in obj and _json_equal(obj[f], v) for f, v in ref.items()}


def field_hits(preds: Sequence[Any], ref_objs: Sequence[dict[str, Any]]) -> list[dict[str, bool]]:
    """Per example, each field of its reference and whether the prediction got it right: what
    field accuracy is counted from, kept per example so the gate can resample examples."""
    _check_lengths(preds, ref_objs)
    return [_hits(_parse_pred(pred)[1], ref) for pred, ref in zip(preds, ref_objs)]


def extraction(preds: Sequence[Any], refs: Sequence[Any]) -> dict[str, Any]:
    """JSON validity, per-field accuracy and whole-object match for structured extraction.

    A field's accuracy is measured over the references that have that field. A prediction
    that is not a JSON object (invalid JSON, or a list/number) is wrong on every field.
    Predictions may be text (a ```json fence is accepted) or already-parsed objects.
    """
    _check_lengths(preds, refs)
    ref_objs = [as_object(r, f"reference #{i + 1}") for i, r in enumerate(refs)]
    n = len(ref_objs)
    valid = 0
    exact = 0
    hits: dict[str, int] = {}
    totals: dict[str, int] = {}
    for pred, ref in zip(preds, ref_objs):
        ok, obj = _parse_pred(pred)
        valid += ok
        exact += obj is not None and _json_equal(obj, ref)
        for field, hit in _hits(obj, ref).items():
            totals[field] = totals.get(field, 0) + 1
            hits[field] = hits.get(field, 0) + hit
    field_accuracy = {f: hits[f] / totals[f] for f in sorted(totals)}
    return {
        "n": n,
        "json_valid_rate": valid / n if n else 0.0,
        "field_accuracy": field_accuracy,
        # unweighted mean over fields: a rare field counts as much as a common one
        "field_accuracy_mean": sum(field_accuracy.values()) / len(field_accuracy) if field_accuracy else 0.0,
        "exact_match": exact / n if n else 0.0,
    }


# Scripts written without spaces: each character is a token, as ROUGE is usually computed for them.
_UNSPACED = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u0e00-\u0e7f"
_TOKEN = re.compile(f"[{_UNSPACED}]|[^\\W_{_UNSPACED}]+")


class _UnicodeTokenizer:
    """rouge-score's tokenizer keeps only ASCII letters and digits, so identical Chinese, Russian or
    Greek answers would score 0. This one keeps letters and digits of every script and is identical
    to it on ASCII text: lower-case, split on anything else, Porter-stem ASCII words over 3 letters."""

    def __init__(self) -> None:
        from nltk.stem import porter

        # stemming is most of ROUGE's time and answers repeat their words: memoise it
        self._stem = lru_cache(maxsize=1 << 16)(porter.PorterStemmer().stem)

    def tokenize(self, text: str) -> list[str]:
        tokens = _TOKEN.findall(unicodedata.normalize("NFKC", text).lower())
        return [self._stem(t) if len(t) > 3 and t.isascii() else t for t in tokens]


def generation(preds: Sequence[str], refs: Sequence[str]) -> dict[str, Any]:
    """Mean ROUGE-L F-measure (rouge-score, Porter stemming on) and strip-equal exact match.

    Tokens are letters and digits of any script (characters, for Chinese, Japanese and Thai);
    on ASCII text the numbers equal rouge-score's own tokenizer's.
    """
    from rouge_score import rouge_scorer

    _check_lengths(preds, refs)
    n = len(refs)
    if n == 0:
        return {"n": 0, "rouge_l": 0.0, "exact_match": 0.0}
    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_UnicodeTokenizer())
    rouge = sum(scorer.score(str(r), str(p))["rougeL"].fmeasure for p, r in zip(preds, refs))
    exact = sum(str(p).strip() == str(r).strip() for p, r in zip(preds, refs))
    return {"n": n, "rouge_l": rouge / n, "exact_match": exact / n}


def compliance_checks(outputs: Sequence[str], prompts: Sequence[str] | None, ruleset: RuleSet) -> list[dict[str, bool]]:
    """Per-output rule results; `prompts` (last user message) feed `echo` rules."""
    prompts = prompts if prompts is not None else [""] * len(outputs)
    _check_lengths(outputs, prompts)
    return [ruleset.check_answer(str(o), p or "") for o, p in zip(outputs, prompts)]


def compliance(outputs: Sequence[str], prompts: Sequence[str] | None, ruleset: RuleSet) -> dict[str, float]:
    """Pass rate per rule and `all` (share of outputs passing every rule)."""
    return rule_compliance(compliance_checks(outputs, prompts, ruleset), ruleset.names)


def dumps_output(value: Any) -> str:
    """Text form of an output that may already be parsed JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
