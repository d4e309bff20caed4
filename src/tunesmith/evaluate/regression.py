"""A small general-ability suite: did fine-tuning break what the model could already do?

`regression_suite.jsonl` ships with the package: 30 prompts in four categories
(arithmetic, facts, instructions, format), each with `checks`, a list of rule specs in the
rules language (`tunesmith.rules`); an answer passes when every check passes. Run the
prompts through the base and the tuned model, score both, and compare per category.

With ~8 items per category one item is worth 12.5 points, so the default 5-point
threshold flags any single lost item: deliberately strict for a smoke test.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

from tunesmith.rules import Rule

SUITE_FILE = "regression_suite.jsonl"
DEFAULT_THRESHOLD = 0.05


@lru_cache(maxsize=1)
def load_suite() -> tuple[dict[str, Any], ...]:
    text = resources.files("tunesmith.evaluate").joinpath(SUITE_FILE).read_text(encoding="utf-8")
    items = []
    for line in text.splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        item["rules"] = [
            Rule.model_validate({"name": f"{item['id']}#{k + 1}", **spec}) for k, spec in enumerate(item["checks"])
        ]
        items.append(item)
    return tuple(items)


def regression_prompts() -> list[dict[str, Any]]:
    """What to generate answers for: [{"id", "category", "messages": [{"role": "user", ...}]}]."""
    return [
        {"id": it["id"], "category": it["category"], "messages": [{"role": "user", "content": it["prompt"]}]}
        for it in load_suite()
    ]


def score_regression(outputs: dict[str, str]) -> dict[str, Any]:
    """Pass rates of one model's answers (id -> text).

    Returns {"overall": rate, "by_category": {cat: {"rate", "passed", "n"}},
    "items": [{"id", "category", "prompt", "output", "passed", "failed_checks"}]}.
    Every suite id must be answered; unknown ids are an error too, so a typo cannot
    silently shrink the suite.
    """
    suite = load_suite()
    known = {it["id"] for it in suite}
    missing = sorted(known - outputs.keys())
    unknown = sorted(set(outputs) - known)
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"no answer for {', '.join(missing)}")
        if unknown:
            parts.append(f"ids not in the suite: {', '.join(unknown)}")
        raise ValueError("regression outputs: " + "; ".join(parts))
    items = []
    for it in suite:
        answer = outputs[it["id"]]
        failed = [r.describe() for r in it["rules"] if not r.check(answer, it["prompt"])]
        items.append(
            {
                "id": it["id"],
                "category": it["category"],
                "prompt": it["prompt"],
                "output": answer,
                "passed": not failed,
                "failed_checks": failed,
            }
        )
    by_category: dict[str, dict[str, Any]] = {}
    for item in items:
        cat = by_category.setdefault(item["category"], {"passed": 0, "n": 0})
        cat["passed"] += item["passed"]
        cat["n"] += 1
    for cat in by_category.values():
        cat["rate"] = cat["passed"] / cat["n"]
    return {
        "overall": sum(i["passed"] for i in items) / len(items),
        "by_category": by_category,
        "items": items,
    }


def compare_regression(base: dict[str, Any], tuned: dict[str, Any], threshold: float = DEFAULT_THRESHOLD) -> dict[str, Any]:
    """Per-category change from base to tuned; a drop larger than `threshold` (a rate, 0.05 = 5 points) is flagged.

    Returns {"threshold", "overall": {"base", "tuned", "delta"},
    "by_category": {cat: {"base", "tuned", "delta", "flagged"}}, "flagged": [cat, ...],
    "changed": [items lost or gained, both answers]}
    where delta = tuned - base, and "overall" is flagged by the same rule.
    """
    rows: dict[str, dict[str, Any]] = {}
    for cat in sorted(base["by_category"].keys() | tuned["by_category"].keys()):
        b = base["by_category"].get(cat, {}).get("rate", 0.0)
        t = tuned["by_category"].get(cat, {}).get("rate", 0.0)
        rows[cat] = _delta(b, t, threshold)
    overall = _delta(base["overall"], tuned["overall"], threshold)
    flagged = [cat for cat, row in rows.items() if row["flagged"]] + (["overall"] if overall["flagged"] else [])
    return {"threshold": threshold, "overall": overall, "by_category": rows, "flagged": flagged,
            "changed": changed_items(base, tuned)}


def changed_items(base: dict[str, Any], tuned: dict[str, Any]) -> list[dict[str, Any]]:
    """The items one model passes and the other fails, both answers side by side: what forgetting looks like."""
    tuned_items = {it["id"]: it for it in tuned.get("items", [])}
    out = []
    for b in base.get("items", []):
        t = tuned_items.get(b["id"])
        if t is not None and t["passed"] != b["passed"]:
            out.append({"id": b["id"], "category": b["category"], "prompt": b["prompt"], "change": "lost"
                        if b["passed"] else "gained", "base": b["output"], "tuned": t["output"],
                        "failed_checks": t["failed_checks"] or b["failed_checks"]})
    return out


def _delta(base: float, tuned: float, threshold: float) -> dict[str, Any]:
    # rounding keeps a drop of exactly the threshold (e.g. 0.55 -> 0.50) from flagging on float noise
    delta = round(tuned - base, 9)
    return {"base": base, "tuned": tuned, "delta": delta, "flagged": -delta > threshold}
