"""Score saved outputs of any system against references, with no model loaded.

Both files are JSONL, one `{"id": ..., "output": ...}` per line, joined by id. For
compliance a line may also carry `"prompt"` (the last user message) for `echo` rules; it
is read from the reference line first, then from the prediction line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from tunesmith.evaluate import metrics
from tunesmith.rules import RuleSet
from tunesmith.errors import UserError

Task = Literal["classification", "extraction", "generation", "compliance"]
TASKS: tuple[str, ...] = ("classification", "extraction", "generation", "compliance")


class ScoreError(UserError):
    """Inputs that cannot be scored; the message names the file, line or id."""


def _id_key(value: Any) -> str | None:
    """Ids join as text, so 7, 7.0 and "7" are one id; null, true and containers are no ids
    (str() would otherwise silently join null with "None" and true with "True")."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    return str(value)


def read_outputs(path: str | Path) -> dict[str, dict[str, Any]]:
    """id -> line object, in file order. Ids are compared as text so 7 and "7" join."""
    p = Path(path)
    try:
        # utf-8-sig: files saved by Windows tools start with a BOM that json.loads rejects
        # split on \n only: str.splitlines() also breaks at U+2028, U+0085 and others, which
        # JSON allows raw inside strings and models do emit; a trailing \r is JSON whitespace
        lines = p.read_text(encoding="utf-8-sig").split("\n")
    except OSError as e:
        raise ScoreError(f"{p}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ScoreError(f"{p}: not UTF-8 text") from None
    rows: dict[str, dict[str, Any]] = {}
    first_line: dict[str, int] = {}
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ScoreError(f"{p}:{no}: not valid JSON: {e.msg}") from None
        except RecursionError:
            raise ScoreError(f"{p}:{no}: not valid JSON: nested too deeply") from None
        if not isinstance(obj, dict):
            raise ScoreError(f"{p}:{no}: expected a JSON object with 'id' and 'output'")
        for key in ("id", "output"):
            if key not in obj:
                raise ScoreError(f"{p}:{no}: missing '{key}'")
        key = _id_key(obj["id"])
        if key is None:
            raise ScoreError(f"{p}:{no}: 'id' must be a string or an integer, got {json.dumps(obj['id'])}")
        if key in rows:
            raise ScoreError(f"{p}:{no}: duplicate id {key!r} (first on line {first_line[key]})")
        rows[key] = obj
        first_line[key] = no
    if not rows:
        raise ScoreError(f"{p}: no records")
    return rows


def join_ids(preds: dict[str, dict], refs: dict[str, dict], pred_path: Path, ref_path: Path) -> list[str]:
    """Reference ids in order; every reference needs a prediction and every prediction a reference."""
    missing = [k for k in refs if k not in preds]
    if missing:
        raise ScoreError(f"{pred_path}: no prediction for id {_ids(missing)} found in {ref_path}")
    extra = [k for k in preds if k not in refs]
    if extra:
        raise ScoreError(f"{ref_path}: no reference for id {_ids(extra)} found in {pred_path}")
    return list(refs)


def _ids(keys: list[str]) -> str:
    shown = ", ".join(repr(k) for k in keys[:5])
    return shown + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")


def _prompt(ref: dict[str, Any], pred: dict[str, Any]) -> str:
    """The reference line's prompt, else the prediction line's; a null prompt counts as absent."""
    for row in (ref, pred):
        if isinstance(row.get("prompt"), str):
            return row["prompt"]
    return ""


def _texts(rows: list[dict[str, Any]], path: Path, field: str = "output") -> list[str]:
    out = []
    for row in rows:
        value = row[field]
        if not isinstance(value, str):
            raise ScoreError(f"{path}: id {str(row['id'])!r}: '{field}' must be a string, got {type(value).__name__}")
        out.append(value)
    return out


def score_predictions(
    predictions: str | Path,
    references: str | Path | None,
    task: Task,
    rules: RuleSet | None = None,
    ignore_case: bool = False,
) -> dict[str, Any]:
    """Metrics for one system's outputs: the dict `tunesmith eval score --json` prints.

    Keys by task: classification -> accuracy, macro_f1, per_class, confusion;
    extraction -> json_valid_rate, field_accuracy, field_accuracy_mean, exact_match;
    generation -> rouge_l, exact_match; plus `compliance` ({rule: rate, "all": rate})
    whenever rules are given (required for the compliance task). Always `n`.
    """
    if task not in TASKS:
        raise ScoreError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    pred_path = Path(predictions)
    preds = read_outputs(pred_path)
    if task == "compliance" and rules is None:
        raise ScoreError("the compliance task needs --rules")
    if references is None:
        if task != "compliance":
            raise ScoreError(f"the {task} task needs --references")
        ids = list(preds)
        refs: dict[str, dict] = {}
        ref_path = pred_path
    else:
        ref_path = Path(references)
        refs = read_outputs(ref_path)
        ids = join_ids(preds, refs, pred_path, ref_path)

    pred_rows = [preds[i] for i in ids]
    ref_rows = [refs[i] for i in ids] if refs else []
    result: dict[str, Any] = {"n": len(ids)}
    try:
        if task == "classification":
            result |= metrics.classification(
                [r["output"] for r in pred_rows], [r["output"] for r in ref_rows], ignore_case=ignore_case
            )
        elif task == "extraction":
            objs = [metrics.as_object(r["output"], f"id {str(r['id'])!r}: reference output") for r in ref_rows]
            result |= metrics.extraction([r["output"] for r in pred_rows], objs)
        elif task == "generation":
            result |= metrics.generation(_texts(pred_rows, pred_path), _texts(ref_rows, ref_path))
    except ValueError as e:
        if isinstance(e, ScoreError):
            raise
        raise ScoreError(f"{ref_path}: {e}") from None
    if rules is not None:
        outputs = [metrics.dumps_output(r["output"]) for r in pred_rows]
        prompts = [_prompt(refs.get(i, {}), preds[i]) for i in ids]
        result["compliance"] = metrics.compliance(outputs, prompts, rules)
    return result
