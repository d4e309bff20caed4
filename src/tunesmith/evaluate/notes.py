"""What an evaluation's numbers cannot show by themselves, in one or two sentences for the CLI, the quickstart
summary, report.html and the web app's Eval page: a pretrained base model whose baselines never stop (they
run to the token limit, so the tuned model beats a system that never answered), and a regression suite the
base model mostly fails (there was little to lose). Read from results.json (EvalResults), never recomputed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunesmith.evaluate.gate import little_to_lose

BASELINES = ("base", "prompted")


def _plain(x: Any) -> Any:
    return x.model_dump(mode="json") if hasattr(x, "model_dump") else (x or {})


def never_stop(stops: dict[str, Any]) -> tuple[int, int, int | None]:
    """(answers that ran to the token limit, answers, the limit) over the baselines that were run."""
    rows = [stops[s] for s in BASELINES if s in stops]
    return (sum(r["ran_to_limit"] for r in rows), sum(r["n"] for r in rows),
            next((r.get("limit") for r in rows), None))


def eval_notes(results: Any) -> list[str]:
    """The notes for one results.json (a dict or EvalResults); [] when there is nothing to say."""
    r = _plain(results)
    notes = []
    stops = r.get("stops") or {}
    pretrained = r.get("base_model_kind") == "pretrained"
    hit, n, limit = never_stop(stops)
    name = Path(r["model"]).name if r.get("model") else "the base model"  # a .gguf path: its file name
    if n and (pretrained or hit == n):
        how = "never stop" if hit == n else "rarely stop" if hit > n / 2 else "mostly stop"
        tuned = stops.get("tuned")
        tail = f"; tuned: {tuned['ran_to_limit']}/{tuned['n']}" if tuned else ""
        who = f"{name} is a pretrained base model: its baselines" if pretrained else "the baselines"
        notes.append(f"{who} {how} ({hit}/{n} ran to the {limit}-token limit{tail})")
    elif pretrained:
        notes.append(f"{name} is a pretrained base model, not instruction-tuned")
    reg = r.get("regression")
    if reg and little_to_lose(reg):
        notes.append(f"the regression suite has little to lose (base passes {reg['overall']['base']:.0%} of it)")
    return notes
