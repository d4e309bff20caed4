"""The promotion decision in one sentence plus one row per check, from whatever `gate` and
`regression` dicts a results.json holds.

Two shapes are read. A gate with a `checks` list (each with value / threshold / n / passed, passed
None meaning inconclusive) is shown as is. Otherwise the shape `evaluate.gate.decide` writes today
(primary metric candidate vs baseline with a margin, plus flagged regression categories from
`evaluate.regression.compare_regression`) is turned into the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Check:
    name: str
    value: str
    threshold: str
    n: int | None
    passed: bool | None  # None: inconclusive (too little evidence either way)


@dataclass
class Verdict:
    label: str  # PROMOTE / DO NOT PROMOTE / INCONCLUSIVE
    kind: str  # ok / bad / warn: the banner's style; the label says the same in words
    sentence: str
    checks: list[Check] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)


def _num(x: Any, spec: str = ".2f") -> str:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return "–" if x is None else str(x)
    return format(x, spec).replace("-", "−")


def _points(delta: float) -> str:
    delta = delta + 0.0 if abs(delta) >= 5e-4 else 0.0  # a 0.0 - 0.0 drop shows as +0.0, never −0.0
    return f"{delta * 100:+.1f}".replace("-", "−") + " points"


def _regression_counts(reg: dict[str, Any]) -> str:
    changed = reg.get("changed") or []
    lost = sum(c.get("change") == "lost" for c in changed)
    gained = sum(c.get("change") == "gained" for c in changed)
    n = reg.get("n") or sum(int(r.get("n", 0)) for r in (reg.get("by_category") or {}).values() if isinstance(r, dict))
    if not n and changed:  # today's compare_regression keeps no counts: the shipped suite is what was run
        from tunesmith.evaluate.regression import load_suite

        n = len(load_suite())
    return f"{lost} lost / {gained} gained" + (f" of {n}" if n else "")


def _generic(gate: dict[str, Any]) -> Verdict:
    checks = [Check(str(c.get("name") or c.get("check") or f"check {i + 1}"), _num(c.get("value"), ".3g"),
                    str(c.get("threshold", "–")), c.get("n"), c.get("passed"))
              for i, c in enumerate(gate["checks"]) if isinstance(c, dict)]
    word = str(gate.get("verdict") or "").replace("_", " ").replace("-", " ").strip().upper()
    if not word:
        word = "PROMOTE" if gate.get("passed") else "INCONCLUSIVE" if gate.get("passed") is None else "DO NOT PROMOTE"
    kind = {"PROMOTE": "ok", "INCONCLUSIVE": "warn"}.get(word, "bad")
    summary = gate.get("summary") or gate.get("sentence")
    if not summary:
        failing = [c for c in checks if c.passed is False] or [c for c in checks if c.passed is None]
        summary = ("every check passed: " if not failing else "") + "; ".join(
            f"{c.name} {c.value} (needs {c.threshold})" for c in (failing or checks))
    return Verdict(word, kind, f"{word} — {summary}", checks, [str(r) for r in gate.get("reasons") or []])


_PASSED = {"PASS": True, "FAIL": False, "inconclusive": None}  # a row's own verdict, where the gate wrote one


def _plain(x: Any) -> Any:
    return x.model_dump() if hasattr(x, "model_dump") else x  # EvalResults' typed gate / regression


def verdict(gate: Any, regression: Any = None, n_test: int | None = None) -> Verdict:
    gate = _plain(gate)
    v = _verdict(gate, _plain(regression), n_test)
    caveats = [str(c) for c in gate.get("caveats") or []]  # what the verdict cannot show, said in the sentence
    if caveats:
        v.sentence += " — but " + "; ".join(caveats)
    return v


def _verdict(gate: dict[str, Any], regression: Any, n_test: int | None) -> Verdict:
    if isinstance(gate.get("checks"), list):
        return _generic(gate)
    metric = str(gate.get("primary_metric", "primary metric")).removesuffix(".all")
    cand, base = gate.get("candidate", "tuned"), gate.get("baseline", "prompted")
    cv, bv, margin = gate.get("candidate_value"), gate.get("baseline_value"), gate.get("margin", 0.0) or 0.0
    delta = gate.get("delta")
    beats = isinstance(delta, (int, float)) and delta > margin
    task = gate.get("task") or {}
    value = _num(delta, "+.3f")
    if isinstance(task.get("delta_low"), (int, float)) and isinstance(task.get("delta_high"), (int, float)):
        # the verdict is on the interval, so the row shows it beside the delta it brackets
        level = f"{task['level'] * 100:g}% " if isinstance(task.get("level"), (int, float)) else ""
        value += f" ({level}{_num(task['delta_low'], '+.3f')} to {_num(task['delta_high'], '+.3f')})"
    checks = [Check(f"{metric}: {cand} − {base}", value, f"> {_num(margin, '.3f')}",
                    task.get("n") or n_test, _PASSED.get(task.get("verdict"), beats))]
    flagged = list(gate.get("regression_flagged") or [])
    reg = regression or {}
    threshold = reg.get("threshold")
    rows = dict(reg.get("by_category") or {})
    if reg.get("overall"):
        rows["overall"] = reg["overall"]
    for cat, r in rows.items():
        limit = r.get("threshold", threshold)
        checks.append(Check(f"general ability: {cat}", _points(r.get("delta", 0.0)),
                            f"≥ −{limit * 100:.1f} points" if limit is not None else "–", r.get("n"),
                            _PASSED[r["verdict"]] if r.get("verdict") in _PASSED
                            else not r.get("flagged", cat in flagged)))
    passed = bool(gate.get("passed"))
    if cv is None and bv is None:  # a gate that recorded only its conclusion: say that, no invented numbers
        word, kind = ("PROMOTE", "ok") if passed else ("DO NOT PROMOTE", "bad")
        why = gate.get("reason") or "; ".join(map(str, gate.get("reasons") or [])) or "no reason recorded"
        return Verdict(word, kind, f"{word} — {why}", [], [])
    head = f"{metric} {_num(cv)} {cand} vs {_num(bv)} {base}"
    parts = []
    if not beats:
        parts.append(f"{head}: not more than {_num(margin)} better")
    if flagged and reg:
        overall = (reg.get("overall") or {}).get("delta", 0.0)
        cats = ", ".join(f"{c} {_points(rows[c].get('delta', 0.0))}" for c in flagged if c in rows and c != "overall")
        general = f"general ability {_points(overall)} overall" + (f", {cats}" if cats else "")
        parts.append(f"{'but ' if beats else ''}{general}: {_regression_counts(reg)}")
    if gate.get("verdict") == "inconclusive":  # neither a pass nor a fail: the evidence could not decide
        unsure = [c.name for c in checks if c.passed is None]
        sentence = (f"INCONCLUSIVE — {head}" + (f"; {'; '.join(parts)}" if parts else "")
                    + (f"; too few items to tell on {', '.join(unsure)}" if unsure else ""))
        return Verdict("INCONCLUSIVE", "warn", sentence, checks, [str(r) for r in gate.get("reasons") or []])
    if passed:
        sentence = f"PROMOTE — {head}"
        per_category = reg.get("category_threshold")
        if threshold is not None and per_category is not None:
            sentence += (f", and no significant general-ability drop beyond {threshold * 100:.1f} points overall "
                         f"or {per_category * 100:.1f} per category")
        elif threshold is not None:
            sentence += f", and no general-ability category dropped more than {threshold * 100:.1f} points"
        return Verdict("PROMOTE", "ok", sentence, checks, [str(r) for r in gate.get("reasons") or []])
    lead = f"{head}, " if beats else ""
    return Verdict("DO NOT PROMOTE", "bad", f"DO NOT PROMOTE — {lead}{'; '.join(parts) or 'the gate failed'}",
                   checks, [str(r) for r in gate.get("reasons") or []])
