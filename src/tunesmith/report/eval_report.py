"""report.html: the web app's Eval page as one self-contained file next to the run.

`render_eval_report(results, path)` takes what `evaluate_run` returns (or the typed `EvalResults`
of eval/results.json) and renders the same body the app's /runs/ID/eval includes, through the same
context (`tunesmith.ui.evalpage`): verdict and gate checks first, then metrics, rules, general
ability and the examples. CSS and the filter script are inlined and charts are inline SVG, so the
file opens from disk, mailed or archived, with nothing fetched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunesmith.rundir import EvalResults, RunDir
from tunesmith.ui import evalpage
from tunesmith.ui.spans import run_rules
from tunesmith.ui.templating import render_standalone


def _rules_of(run_dir: Path, results: EvalResults):
    """The run's rules, so violating words are marked as in the app; None when the report has no run."""
    declared = results.rules
    if not declared and RunDir(run_dir).is_run():
        declared = RunDir(run_dir).info().rules
    return run_rules(run_dir, declared)


def render_eval_report(results: dict[str, Any] | EvalResults, path: str | Path) -> Path:
    """Write the report to `path` (parents created) and return it."""
    typed = results if isinstance(results, EvalResults) else EvalResults.model_validate(results)
    out = Path(path)
    ctx = evalpage.context(typed, {}, _rules_of(out.parent, typed), static=True)
    title = typed.title or "Evaluation report"
    html = render_standalone("report_eval.html.jinja", title, where=f"eval report · {out.parent.resolve()}", **ctx)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    return out
