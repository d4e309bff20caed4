"""The evaluation report: systems side by side, where they differ, and whether to promote.

`render_eval_report(results, path)` takes one dict and renders only the parts present:

    {
      "task": "classification" | "extraction" | "generation" | "compliance",
      "title": str,                                   # optional page title
      "test": {"path": str, "n": int},                # optional: the test file measured
      "few_shot": int,                                # optional: examples the prompted baseline was shown
      "systems": {                                    # insertion order = column order
        "base":     {"metrics": {...}, "compliance": {...}},
        "prompted": {...},
        "tuned":    {...},
      },
      "examples": [                                   # optional: test items with every system's output
        {"id": ..., "prompt": str, "reference": str | None,
         "outputs": {system: text}, "passes": {system: {rule: bool}}}   # passes optional
      ],
      "regression": {...} | None,                     # tunesmith.evaluate.regression.compare_regression()
      "gate": {...} | None,                           # tunesmith.evaluate.gate.decide()
      "judge": {system: {"n", "scored", "unparseable", "mean_score"}} | None,  # LLM judge, per system
      "loss_curve": [{"step": int, "loss": float, "eval_loss": float}] | None,  # either loss key may be absent
    }

A system's "metrics" is the dict `score_predictions` returns (what `tunesmith eval score
--json` prints). Its compliance rates ({rule: rate, "all": rate}) may sit inside it under
"compliance" or beside it as the system's "compliance"; a system may also be given as the
bare score dict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from tunesmith.evaluate.gate import metric_value
from tunesmith.report.html import badge, esc, fig_to_data_uri, img, page, section, swatch, system_colors, table
from tunesmith.report.plots import loss_figure
from tunesmith.report.verdict import verdict

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


def _metrics(entry: dict[str, Any]) -> dict[str, Any]:
    metrics = dict(entry.get("metrics", entry))
    if "compliance" in entry and "metrics" in entry:
        metrics["compliance"] = entry["compliance"]
    return metrics


# Predicted labels no reference has, shown one by one up to this many; more are summed up.
_MAX_INVENTED = 5


def _label(label: str) -> str:
    # an empty model answer is a predicted class of its own; a blank cell would hide it
    return label if label.strip() else "(empty answer)"


def _tick(label: str, width: int = 24) -> str:
    """A label short enough for a chart axis (the tables keep it whole)."""
    text = " ".join(_label(label).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def _grouped_bars(categories: list[str], values: dict[str, list[float]], colors: dict[str, str], ylabel: str) -> str:
    """Data URI of a grouped bar chart: one group per category, one bar per system."""
    fig = Figure(figsize=(max(5.0, 0.9 * len(categories) * max(1, len(values)) * 0.5 + 2), 3.2))
    ax = fig.subplots()
    width = 0.8 / max(1, len(values))
    for k, (system, vals) in enumerate(values.items()):
        xs = [i + (k - (len(values) - 1) / 2) * width for i in range(len(categories))]
        ax.bar(xs, vals, width=width, label=system, color=colors[system])
    ax.set_xticks(range(len(categories)))
    ax.set_xticklabels(categories, rotation=30 if len(categories) > 5 else 0, ha="right" if len(categories) > 5 else "center")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(frameon=False, ncols=len(values), loc="upper center", bbox_to_anchor=(0.5, 1.18))
    return fig_to_data_uri(fig)


def _metrics_section(systems: dict[str, dict], colors: dict[str, str]) -> str:
    names = list(systems)
    rows = []
    chart_keys = []
    for key, label in SCALARS.items():
        vals = [metric_value(systems[s], key) for s in names]
        if all(v is None for v in vals):
            continue
        chart_keys.append(key)
        best = max(v for v in vals if v is not None)
        cells: list[Any] = [esc(label)]
        for v in vals:
            cells.append((_fmt(v), "best") if v is not None and v == best and len(names) > 1 else _fmt(v))
        rows.append(cells)
    if not rows:
        return ""
    headers = ["metric"] + [swatch(colors[s]) + esc(s) for s in names]
    body = table(headers, rows, numeric=[False] + [True] * len(names))
    chart = _grouped_bars(
        [SCALARS[k] for k in chart_keys],
        {s: [metric_value(systems[s], k) or 0.0 for k in chart_keys] for s in names},
        colors,
        "score",
    )
    return section("Metrics", body + img(chart, "metrics by system"), note="Best value per row in bold.", anchor="metrics")


def _compliance_section(systems: dict[str, dict], colors: dict[str, str]) -> str:
    with_rules = [s for s in systems if isinstance(systems[s].get("compliance"), dict)]
    if not with_rules:
        return ""
    rules = [r for r in systems[with_rules[0]]["compliance"] if r != "all"]
    for s in with_rules[1:]:
        rules += [r for r in systems[s]["compliance"] if r != "all" and r not in rules]
    rows = []
    for rule in rules + ["all"]:
        label = "all rules" if rule == "all" else rule
        rows.append([esc(label)] + [_fmt(systems[s]["compliance"].get(rule)) for s in with_rules])
    headers = ["rule"] + [swatch(colors[s]) + esc(s) for s in with_rules]
    chart = _grouped_bars(
        rules + ["all rules"],
        {s: [systems[s]["compliance"].get(r, 0.0) for r in rules + ["all"]] for s in with_rules},
        colors,
        "pass rate",
    )
    return section(
        "Format compliance",
        table(headers, rows, numeric=[False] + [True] * len(with_rules)) + img(chart, "compliance per rule"),
        note="Share of test outputs passing each rule; 'all rules' = passing every rule at once.",
        anchor="compliance",
    )


def _per_class_section(systems: dict[str, dict], colors: dict[str, str]) -> str:
    with_classes = [s for s in systems if isinstance(systems[s].get("per_class"), dict)]
    if not with_classes:
        return ""
    labels: list[str] = []
    for s in with_classes:
        labels += [lab for lab in systems[s]["per_class"] if lab not in labels]
    refs = [lab for lab in labels if any(systems[s]["per_class"].get(lab, {}).get("support", 0) for s in with_classes)]
    invented = [lab for lab in labels if lab not in refs]
    # a base model answering in prose invents a label per answer; dozens of F1-0 bars hide the real classes
    shown = labels if len(invented) <= _MAX_INVENTED else refs
    chart = _grouped_bars(
        [_tick(lab) for lab in shown],
        {s: [systems[s]["per_class"].get(lab, {}).get("f1", 0.0) for lab in shown] for s in with_classes},
        colors,
        "F1",
    )
    rows = []
    for lab in shown:
        support = next((systems[s]["per_class"][lab]["support"] for s in with_classes if lab in systems[s]["per_class"]), 0)
        rows.append([esc(_label(lab)), str(support)] + [_fmt(systems[s]["per_class"].get(lab, {}).get("f1")) for s in with_classes])
    note = None
    if shown is refs:
        counts = [f"{s} {sum(lab in systems[s]['per_class'] for lab in invented)}" for s in with_classes]
        rows.append([esc(f"other answers ({len(invented)} labels no reference has)"), "0"]
                    + [_fmt(0.0) if any(lab in systems[s]["per_class"] for lab in invented) else _fmt(None)
                       for s in with_classes])
        note = ("Answers that are no reference label count as classes with F1 0 in macro F1; distinct ones per system: "
                + ", ".join(counts) + ".")
    headers = ["label", "support"] + [swatch(colors[s]) + esc(s) + " F1" for s in with_classes]
    return section(
        "Per-class F1",
        img(chart, "per-class F1") + table(headers, rows, numeric=[False, True] + [True] * len(with_classes)),
        note=note,
        anchor="per-class",
    )


def _collapsed_confusion(confusion: dict[str, Any]) -> tuple[list[str], list[str], list[list[int]]]:
    """(row labels, column labels, matrix): rows are the reference labels; predicted labels no
    reference has become one "other answers" column when there are more than a few of them."""
    labels, matrix = confusion["labels"], confusion["matrix"]
    rows = [i for i, row in enumerate(matrix) if sum(row)]
    others = [j for j in range(len(labels)) if j not in rows]
    if len(others) <= _MAX_INVENTED:
        cols = rows + others
        return ([_tick(labels[i]) for i in rows], [_tick(labels[j]) for j in cols],
                [[matrix[i][j] for j in cols] for i in rows])
    return ([_tick(labels[i]) for i in rows], [_tick(labels[j]) for j in rows] + [f"other answers ({len(others)})"],
            [[matrix[i][j] for j in rows] + [sum(matrix[i][j] for j in others)] for i in rows])


def _confusion_section(systems: dict[str, dict]) -> str:
    with_cm = [s for s in systems if isinstance(systems[s].get("confusion"), dict) and systems[s]["confusion"]["labels"]]
    if not with_cm:
        return ""
    views = {s: _collapsed_confusion(systems[s]["confusion"]) for s in with_cm}
    n_labels = max(len(cols) for _, cols, _ in views.values())
    side = min(6.0, 1.2 + 0.45 * n_labels)
    fig = Figure(figsize=(side * len(with_cm), side))
    axes = fig.subplots(1, len(with_cm), squeeze=False)[0]
    for ax, s in zip(axes, with_cm):
        row_labels, col_labels, matrix = views[s]
        ax.imshow(matrix, cmap="Blues")
        ax.set_title(s)
        ax.set_xticks(range(len(col_labels)))
        ax.set_yticks(range(len(row_labels)))
        ax.set_xticklabels(col_labels, rotation=45, ha="right")
        ax.set_yticklabels(row_labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("reference")
        top = max((v for row in matrix for v in row), default=0)
        if len(col_labels) <= 15:
            for i, row in enumerate(matrix):
                for j, v in enumerate(row):
                    ax.text(j, i, str(v), ha="center", va="center", fontsize=8, color="white" if v > top / 2 else "black")
    fig.tight_layout()
    return section(
        "Confusion matrices",
        img(fig_to_data_uri(fig), "confusion matrices"),
        note=f"Rows: reference label; columns: predicted label (labels the model invented too; more than "
        f"{_MAX_INVENTED} of them are summed into one 'other answers' column).",
        anchor="confusion",
    )


def _field_section(systems: dict[str, dict], colors: dict[str, str]) -> str:
    with_fields = [s for s in systems if isinstance(systems[s].get("field_accuracy"), dict)]
    if not with_fields:
        return ""
    fields: list[str] = []
    for s in with_fields:
        fields += [f for f in systems[s]["field_accuracy"] if f not in fields]
    rows = [[esc(f)] + [_fmt(systems[s]["field_accuracy"].get(f)) for s in with_fields] for f in fields]
    headers = ["field"] + [swatch(colors[s]) + esc(s) for s in with_fields]
    return section("Field accuracy", table(headers, rows, numeric=[False] + [True] * len(with_fields)), anchor="fields")


def _loss_section(curve: list[dict[str, Any]]) -> str:
    train = [(r["step"], r["loss"]) for r in curve if r.get("loss") is not None]
    val = [(r["step"], r["eval_loss"]) for r in curve if r.get("eval_loss") is not None]
    if not train and not val:
        return ""
    # HF log rows carry either key; drop explicit None so the shared plot sees only real points
    fig = loss_figure([{k: v for k, v in r.items() if v is not None} for r in curve])
    last = []
    if train:
        last.append(f"final train loss {train[-1][1]:.4f}")
    if val:
        last.append(f"final validation loss {val[-1][1]:.4f}")
    return section("Training loss", img(fig_to_data_uri(fig), "train and validation loss"), note="; ".join(last), anchor="loss")


def _regression_section(reg: dict[str, Any]) -> str:
    rows = []
    for cat, row in list(reg["by_category"].items()) + [("overall", reg["overall"])]:
        delta = row["delta"] * 100
        cls = "pos" if delta > 0 else "neg" if delta < 0 else ""
        rows.append(
            [
                esc(cat),
                f"{row['base'] * 100:.1f}%",
                f"{row['tuned'] * 100:.1f}%",
                f'<span class="{cls}">{delta:+.1f}</span>',
                badge(False, no="dropped") if row["flagged"] else badge(True, yes="ok"),
            ]
        )
    body = table(["category", "base", "tuned", "change (points)", ""], rows, numeric=[False, True, True, True, False])
    changed = reg.get("changed", [])
    if changed:
        body += table(
            ["item", "prompt", "base answer", "tuned answer", ""],
            [[esc(c["id"]), esc(c["prompt"]), esc(c["base"]), esc(c["tuned"]),
              badge(c["change"] == "gained", yes="gained", no="lost")] for c in changed],
            numeric=[False] * 5,
        )
    return section(
        "Regression suite",
        body,
        note=f"General-ability prompts answered by base and tuned; a drop over {reg['threshold'] * 100:.1f} points is "
        "flagged. Below: every item one of them passes and the other fails.",
        anchor="regression",
    )


def _judge_section(judge: dict[str, Any], colors: dict[str, str]) -> str:
    rows = []
    for system, v in judge.items():
        rows.append([swatch(colors.get(system, "#999999")) + esc(system),
                     "–" if v.get("mean_score") is None else f"{v['mean_score']:.2f}", str(v.get("scored", 0)),
                     str(v.get("unparseable", 0)), str(v.get("n", 0))])
    return section(
        "LLM judge",
        table(["system", "mean score (1-5)", "scored", "unparseable", "items"], rows, numeric=[False] + [True] * 4),
        note="Unparseable verdicts (no 1-5 JSON score after the retries) are left out of the mean.",
        anchor="judge",
    )


def _gate_section(gate: dict[str, Any], regression: dict[str, Any] | None, n_test: int | None) -> str:
    """Decision first, as on the web app's Eval page: the verdict in one sentence, then one row per check."""
    v = verdict(gate, regression, n_test)
    body = f'<p class="banner {v.kind}" id="verdict">{esc(v.sentence)}</p>'
    if v.checks:
        marks = {True: "✓ pass", False: "✗ fail", None: "? inconclusive"}
        body += table(["check", "value", "threshold", "n", "result"],
                      [[esc(c.name), esc(c.value), esc(c.threshold), "–" if c.n is None else str(c.n),
                        f'<span class="res {"ok" if c.passed else "warn" if c.passed is None else "bad"}">'
                        f"{marks[c.passed]}</span>"] for c in v.checks],
                      numeric=[False, True, False, True, False])
    items = "".join(f"<li>{esc(r)}</li>" for r in gate.get("reasons", []))
    head = (f"<p>{badge(bool(gate.get('passed')), 'promote', 'do not promote')} primary metric: "
            f"<b>{esc(gate.get('primary_metric', ''))}</b></p>")
    return section("Promotion gate", body + head + (f"<ul>{items}</ul>" if items else ""), anchor="gate")


def _differs(ex: dict[str, Any]) -> bool:
    outputs = {str(v).strip() for v in ex.get("outputs", {}).values()}
    passes = [tuple(sorted(p.items())) for p in ex.get("passes", {}).values()]
    return len(outputs) > 1 or len(set(passes)) > 1


def _examples_section(examples: list[dict[str, Any]], colors: dict[str, str], limit: int) -> str:
    differing = [ex for ex in examples if _differs(ex)]
    if not differing:
        return ""
    cards = []
    for ex in differing[:limit]:
        cols = []
        for system, text in ex.get("outputs", {}).items():
            checks = ex.get("passes", {}).get(system, {})
            marks = " ".join(badge(ok, rule, rule) for rule, ok in checks.items())
            cols.append(
                f"<div><h3>{swatch(colors.get(system, '#999'))}{esc(system)}</h3>"
                f"<pre class=\"out\">{esc(text)}</pre><p>{marks}</p></div>"
            )
        ref = ex.get("reference")
        ref_html = f"<h3>reference</h3><pre class=\"out\">{esc(ref)}</pre>" if ref not in (None, "") else ""
        cards.append(
            f"<div class=\"card\"><h3>example {esc(ex.get('id', ''))}: prompt</h3><pre class=\"out\">{esc(ex.get('prompt', ''))}</pre>"
            f"{ref_html}<div class=\"grid\">{''.join(cols)}</div></div>"
        )
    note = f"{len(differing)} of {len(examples)} test examples where the systems' outputs or rule results differ"
    if len(differing) > limit:
        note += f"; first {limit} shown"
    return section("Where the systems differ", "".join(cards), note=note + ".", anchor="examples")


def render_eval_report(results: dict[str, Any], path: str | Path, max_examples: int = 25) -> Path:
    """Write the report to `path` (parents created) and return it. See the module docstring for `results`."""
    systems = {name: _metrics(entry) for name, entry in (results.get("systems") or {}).items()}
    colors = system_colors(systems)
    for ex in results.get("examples") or []:
        for name in ex.get("outputs", {}):
            colors.setdefault(name, "#999999")
    from tunesmith.evaluate.notes import eval_notes

    notes = eval_notes(results)  # a pretrained base whose baselines never stop; a suite with little to lose
    parts = [f'<p class="banner warn" id="model-notes">note: {esc("; ".join(notes))}</p>'] if notes else []
    if results.get("gate"):
        parts.append(_gate_section(results["gate"], results.get("regression"),
                                   (results.get("test") or {}).get("n") or len(results.get("examples") or []) or None))
    if systems:
        parts += [
            _metrics_section(systems, colors),
            _compliance_section(systems, colors),
            _per_class_section(systems, colors),
            _confusion_section(systems),
            _field_section(systems, colors),
        ]
    if results.get("judge"):
        parts.append(_judge_section(results["judge"], colors))
    if results.get("loss_curve"):
        parts.append(_loss_section(results["loss_curve"]))
    if results.get("regression"):
        parts.append(_regression_section(results["regression"]))
    if results.get("examples"):
        parts.append(_examples_section(results["examples"], colors, max_examples))
    task = results.get("task", "")
    subtitle = f"task: {task} · systems: {', '.join(systems) or 'none'}"
    test = results.get("test") or {}
    if test.get("path"):  # `eval RUN --test other.jsonl` rewrites this report: say which file it measured
        subtitle += f" · test: {test['path']} ({test.get('n', '?')} examples)"
    if results.get("few_shot") is not None and "prompted" in systems:
        subtitle += f" · prompted baseline: {results['few_shot']}-shot from train"
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page(results.get("title", "Evaluation report"), "".join(p for p in parts if p), subtitle), encoding="utf-8")
    return out
