"""What the Eval page and report.html show: verdict first, then per-metric and per-rule tables with
charts, per-class F1 and confusion for classifiers, general-ability regression with the items lost and
gained, then the examples. One context feeds both; `static` only changes how the examples are filtered
(query parameters on the server, a precomputed lookup in the single file)."""

from __future__ import annotations

import json
from typing import Any

from markupsafe import Markup

from tunesmith.evaluate.gate import metric_value
from tunesmith.report.verdict import verdict
from tunesmith.evaluate.notes import eval_notes
from tunesmith.rules import RuleSet
from tunesmith.rundir import EvalResults
from tunesmith.ui import examples as ex_mod
from tunesmith.ui.charts import bar_chart, line_chart

# Scalar metrics shown in the summary table, in this order, with readable names.
SCALARS = {
    "accuracy": "Accuracy",
    "macro_f1": "Macro F1",
    "json_valid_rate": "Valid JSON",
    "field_accuracy_mean": "Field accuracy (mean)",
    "exact_match": "Exact match",
    "rouge_l": "ROUGE-L",
    "compliance.all": "Format compliance (all rules)",
}
# Predicted labels no reference has, shown one by one up to this many; more are summed up.
MAX_INVENTED = 5
# report.html carries every example's markup; past this many it would be too heavy to open.
STATIC_EXAMPLES = 500


def system_metrics(entry: dict[str, Any]) -> dict[str, Any]:
    """A system's score dict, with compliance rates given beside "metrics" folded into it (a bare
    score dict, as `eval score --json` prints it, is taken as the metrics themselves)."""
    metrics = dict(entry.get("metrics") or {k: v for k, v in entry.items() if k != "metrics"})
    if "compliance" in entry and "metrics" in entry:
        metrics["compliance"] = entry["compliance"]
    return metrics


def label(text: str) -> str:
    # an empty model answer is a predicted class of its own; a blank cell would hide it
    return text if text.strip() else "(empty answer)"


def metric_tables(systems: dict[str, dict[str, Any]]) -> dict[str, Any]:
    names = list(systems)
    metric_rows = []
    for key, name in SCALARS.items():
        vals = {s: metric_value(systems[s], key) for s in names}
        if any(v is not None for v in vals.values()):
            metric_rows.append((name, vals))
    rules: dict[str, None] = {}
    for s in names:
        comp = systems[s].get("compliance")
        if isinstance(comp, dict):
            rules.update(dict.fromkeys(r for r in comp if r != "all"))
    rule_rows = []
    for rule in [*rules, "all"]:
        vals = {s: (systems[s].get("compliance") or {}).get(rule) for s in names}
        if any(isinstance(v, (int, float)) for v in vals.values()):
            rule_rows.append(("all rules" if rule == "all" else rule, vals))
    return {
        "systems": names,
        "metric_rows": metric_rows,
        "metric_chart": bar_chart(metric_rows, "metrics by system", hi=1.0) if metric_rows else "",
        "rule_rows": rule_rows,
        "rule_chart": bar_chart(rule_rows, "rule pass rate", hi=1.0, percent=True) if rule_rows else "",
    }


def collapsed_confusion(confusion: dict[str, Any]) -> tuple[list[str], list[str], list[list[int]]]:
    """(row labels, column labels, matrix): rows are the reference labels; predicted labels no
    reference has become one "other answers" column when there are more than a few of them."""
    labels, matrix = confusion["labels"], confusion["matrix"]
    rows = [i for i, row in enumerate(matrix) if sum(row)]
    others = [j for j in range(len(labels)) if j not in rows]
    if len(others) <= MAX_INVENTED:
        cols = rows + others
        return ([label(labels[i]) for i in rows], [label(labels[j]) for j in cols],
                [[matrix[i][j] for j in cols] for i in rows])
    return ([label(labels[i]) for i in rows], [label(labels[j]) for j in rows] + [f"other answers ({len(others)})"],
            [[matrix[i][j] for j in rows] + [sum(matrix[i][j] for j in others)] for i in rows])


def _heat(v: int, top: int) -> int:
    """Shade 0-4 of a confusion cell (CSS classes: the app's CSP allows no inline styles)."""
    return 0 if not v or not top else 1 + min(3, int(4 * v / (top + 1)))


def class_tables(systems: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per-class F1 (prose answers summed into one row, not a class each) and confusion matrices."""
    with_classes = [s for s in systems if isinstance(systems[s].get("per_class"), dict)]
    if not with_classes:
        return {"class_systems": [], "class_rows": [], "class_chart": "", "class_note": None, "confusions": []}
    labels: list[str] = []
    for s in with_classes:
        labels += [lab for lab in systems[s]["per_class"] if lab not in labels]
    refs = [lab for lab in labels if any(systems[s]["per_class"].get(lab, {}).get("support", 0) for s in with_classes)]
    invented = [lab for lab in labels if lab not in refs]
    shown = labels if len(invented) <= MAX_INVENTED else refs
    rows = []
    for lab in shown:
        support = next((systems[s]["per_class"][lab]["support"] for s in with_classes if lab in systems[s]["per_class"]), 0)
        rows.append((label(lab), support, {s: systems[s]["per_class"].get(lab, {}).get("f1") for s in with_classes}))
    note = None
    if shown is refs:
        rows.append((f"other answers ({len(invented)} labels no reference has)", 0,
                     {s: 0.0 if any(lab in systems[s]["per_class"] for lab in invented) else None for s in with_classes}))
        counts = [f"{s} {sum(lab in systems[s]['per_class'] for lab in invented)}" for s in with_classes]
        note = ("Answers that are no reference label count as classes with F1 0 in macro F1; distinct ones per "
                "system: " + ", ".join(counts) + ".")
    confusions = []
    for s in systems:
        cm = systems[s].get("confusion")
        if isinstance(cm, dict) and cm.get("labels"):
            row_labels, col_labels, matrix = collapsed_confusion(cm)
            top = max((v for r in matrix for v in r), default=0)
            confusions.append({"system": s, "cols": col_labels,
                               "rows": [(lab, [(v, _heat(v, top)) for v in r]) for lab, r in zip(row_labels, matrix)]})
    chart = bar_chart([(lab, vals) for lab, _, vals in rows[:len(shown)]], "F1 per class", hi=1.0)
    return {"class_systems": with_classes, "class_rows": rows, "class_chart": chart, "class_note": note,
            "confusions": confusions}


def field_rows(systems: dict[str, dict[str, Any]]) -> tuple[list[str], list[tuple[str, dict[str, Any]]]]:
    with_fields = [s for s in systems if isinstance(systems[s].get("field_accuracy"), dict)]
    fields: list[str] = []
    for s in with_fields:
        fields += [f for f in systems[s]["field_accuracy"] if f not in fields]
    return with_fields, [(f, {s: systems[s]["field_accuracy"].get(f) for s in with_fields}) for f in fields]


def loss_chart(curve: list[dict[str, Any]]) -> dict[str, Any] | None:
    train = [(r["step"], r["loss"]) for r in curve if r.get("loss") is not None and r.get("step") is not None]
    val = [(r["step"], r["eval_loss"]) for r in curve if r.get("eval_loss") is not None and r.get("step") is not None]
    if not train and not val:
        return None
    return {"chart": line_chart({"train": train, "validation": val}, "loss"),
            "train": train[-1][1] if train else None, "validation": val[-1][1] if val else None}


def regression_view(reg: Any) -> dict[str, Any] | None:
    reg = reg.model_dump() if hasattr(reg, "model_dump") else reg
    if not reg or not isinstance(reg.get("by_category"), dict):
        return None
    rows = [(cat, r) for cat, r in reg["by_category"].items() if isinstance(r, dict)]
    if isinstance(reg.get("overall"), dict):
        rows.append(("overall", reg["overall"]))
    chart = bar_chart([(cat, {"base": r.get("base"), "tuned": r.get("tuned")}) for cat, r in rows],
                      "general ability pass rate", hi=1.0, percent=True)
    changed = [c for c in reg.get("changed") or [] if isinstance(c, dict)]
    return {"rows": rows, "chart": chart, "threshold": reg.get("threshold"),
            "lost": [c for c in changed if c.get("change") == "lost"],
            "gained": [c for c in changed if c.get("change") == "gained"]}


def _json_script(data: Any) -> Markup:
    # inside <script type="application/json">: "<" escaped so no "</script" can end it early
    return Markup(json.dumps(data, separators=(",", ":")).replace("<", "\\u003c"))


def usage_rows(results: EvalResults) -> tuple[list[dict[str, Any]], list[str]]:
    """Tokens per request of each system that recorded them, and what endpoints failed to answer."""
    rows, failures = [], []
    for name, entry in results.systems.items():
        u, ep = entry.usage, entry.endpoint
        if ep is None and (u is None or not u.requests):  # an endpoint that answered nothing still has a row
            continue
        rows.append({"system": name, "where": f"{ep.model} at {ep.url}" if ep else "local",
                     "requests": u.requests if u else 0, "prompt": u.mean_prompt_tokens if u else None,
                     "completion": u.mean_completion_tokens if u else None, "source": (u.source if u else None) or "–",
                     "failed": f"{ep.failed} of {ep.requests}" if ep else "–"})
        if ep and ep.summary:
            failures.append(ep.summary)
    return rows, failures


def context(results: EvalResults, params: dict[str, str], ruleset: RuleSet | None = None,
            static: bool = False) -> dict[str, Any]:
    systems = {name: system_metrics(entry.model_dump()) for name, entry in results.systems.items()}
    examples = [e.model_dump() for e in results.examples]  # triage filters and marks up plain rows
    names = list(systems) or list(dict.fromkeys(s for e in examples for s in (e.get("outputs") or {})))
    rules = ex_mod.rule_names(examples)
    filters = ex_mod.Filters.parse(params, names, rules)
    if static:  # every example on the page, all columns; the script shows the ones the filters pick
        page, total = examples[:STATIC_EXAMPLES], len(examples)
        shown, selections = names, _json_script(ex_mod.every_selection(page, names, rules))
    else:
        page, total = ex_mod.select(examples, filters)
        shown, selections = [filters.system] if filters.system else names, None
    judge = (results.model_extra or {}).get("judge")
    with_fields, fields = field_rows(systems)
    usage, usage_failures = usage_rows(results)
    return {
        "results": results,
        "static": static,
        "verdict": verdict(results.gate, results.regression, (results.test.n if results.test else None) or len(examples))
        if results.gate else None,
        **metric_tables(systems),
        **class_tables(systems),
        "field_systems": with_fields,
        "field_rows": fields,
        "judge": judge if isinstance(judge, dict) and judge else None,
        "usage": usage,
        "usage_failures": usage_failures,
        "loss": loss_chart(results.loss_curve),
        "regression": regression_view(results.regression),
        "notes": eval_notes(results),
        "filters": filters,
        "rules": rules,
        "examples": [ex_mod.view(e, shown, ruleset) for e in page],
        "selections": selections,
        "total": total,
        "all_examples": len(examples),
        "pages": 1 if static else max(1, -(-total // ex_mod.PAGE_SIZE)),
    }
