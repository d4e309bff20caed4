"""What the Eval page shows: verdict first, then per-metric and per-rule tables with charts,
general-ability regression with the items lost and gained, then the examples."""

from __future__ import annotations

from typing import Any

from tunesmith.evaluate.gate import metric_value
from tunesmith.evaluate.notes import eval_notes
from tunesmith.report.eval_report import SCALARS, _metrics
from tunesmith.rules import RuleSet
from tunesmith.rundir import EvalResults
from tunesmith.ui import examples as ex_mod
from tunesmith.ui.charts import bar_chart
from tunesmith.report.verdict import verdict


def metric_tables(systems: dict[str, dict[str, Any]]) -> dict[str, Any]:
    names = list(systems)
    metric_rows = []
    for key, label in SCALARS.items():
        vals = {s: metric_value(systems[s], key) for s in names}
        if any(v is not None for v in vals.values()):
            metric_rows.append((label, vals))
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


def context(results: EvalResults, params: dict[str, str], ruleset: RuleSet | None = None) -> dict[str, Any]:
    systems = {name: _metrics(entry.model_dump()) for name, entry in results.systems.items()}
    examples = [e.model_dump() for e in results.examples]  # triage filters and marks up plain rows
    names = list(systems) or list(dict.fromkeys(s for e in examples for s in (e.get("outputs") or {})))
    rules = ex_mod.rule_names(examples)
    filters = ex_mod.Filters.parse(params, names, rules)
    page, total = ex_mod.select(examples, filters)
    shown = [filters.system] if filters.system else names
    pages = max(1, -(-total // ex_mod.PAGE_SIZE))
    return {
        "results": results,
        "verdict": verdict(results.gate, results.regression, (results.test.n if results.test else None) or len(examples))
        if results.gate else None,
        **metric_tables(systems),
        "regression": regression_view(results.regression),
        "notes": eval_notes(results),
        "filters": filters,
        "rules": rules,
        "examples": [ex_mod.view(e, shown, ruleset) for e in page],
        "total": total,
        "all_examples": len(examples),
        "pages": pages,
    }
