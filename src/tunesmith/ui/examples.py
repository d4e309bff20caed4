"""Example triage for the Eval page: filter, sort and page the test examples, and mark up each
output (word diff against the reference, violating spans, cut-off answers).

Filtering happens on the server with query parameters, so a filtered view has its own URL and a
run with thousands of examples still sends one page of them.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from html import escape
from typing import Any

from tunesmith.rules import RuleSet
from tunesmith.ui.spans import violation_spans

PAGE_SIZE = 50
# Outputs longer than this start collapsed: a page of 50 essays is unreadable.
COLLAPSE_CHARS = 600
SORTS = ("id", "failures", "length")
# Below this word overlap a diff marks nearly every word and reads worse than the plain answer.
MIN_DIFF_SIMILARITY = 0.4
# A word with the whitespace after it: half as many tokens as words-and-gaps, and newlines are kept.
_TOKEN = re.compile(r"\s*\S+\s*|\s+")


@dataclass
class Filters:
    system: str = ""
    rule: str = ""
    differ: bool = False
    q: str = ""
    sort: str = "id"
    page: int = 1

    @classmethod
    def parse(cls, params: dict[str, str], systems: list[str], rules: list[str]) -> "Filters":
        """Unknown values fall back to "no filter" rather than an error: a stale bookmark still opens."""
        page = params.get("page", "1")
        return cls(
            system=params.get("system", "") if params.get("system") in systems else "",
            rule=params.get("rule", "") if params.get("rule") in rules else "",
            differ=params.get("differ") in ("1", "on", "true"),
            q=params.get("q", "")[:200],
            sort=params.get("sort") if params.get("sort") in SORTS else "id",
            page=max(1, int(page)) if page.isdigit() else 1,
        )


def rule_names(examples: list[dict[str, Any]]) -> list[str]:
    names: dict[str, None] = {}
    for ex in examples:
        for checks in (ex.get("passes") or {}).values():
            names.update(dict.fromkeys(checks))
    return list(names)


def differs(ex: dict[str, Any]) -> bool:
    """Systems differ: different text (ignoring surrounding whitespace) or different rule results."""
    outputs = {str(v).strip() for v in (ex.get("outputs") or {}).values()}
    passes = {tuple(sorted(p.items())) for p in (ex.get("passes") or {}).values()}
    return len(outputs) > 1 or len(passes) > 1


def _failures(ex: dict[str, Any], systems: list[str]) -> int:
    return sum(not ok for s in systems for ok in (ex.get("passes") or {}).get(s, {}).values())


def select(examples: list[dict[str, Any]], f: Filters, page_size: int | None = PAGE_SIZE
           ) -> tuple[list[dict[str, Any]], int]:
    """(this page's examples, how many match the filters in all); page_size None: every match."""
    systems = [f.system] if f.system else None
    q = f.q.lower()
    out = []
    for ex in examples:
        names = systems or list(ex.get("outputs") or {})
        if f.rule and all((ex.get("passes") or {}).get(s, {}).get(f.rule, True) for s in names):
            continue
        if f.differ and not differs(ex):
            continue
        if q and q not in (str(ex.get("prompt", "")) + " " + " ".join(
                str((ex.get("outputs") or {}).get(s, "")) for s in names)).lower():
            continue
        out.append(ex)
    if f.sort == "failures":
        out.sort(key=lambda ex: -_failures(ex, systems or list(ex.get("outputs") or {})))
    elif f.sort == "length":
        out.sort(key=lambda ex: -max((len(str(v)) for v in (ex.get("outputs") or {}).values()), default=0))
    if page_size is None:
        return out, len(out)
    start = (f.page - 1) * page_size
    return out[start:start + page_size], len(out)


def word_diff(text: str, reference: str) -> str | None:
    """HTML of `text` with words the reference lacks in <ins> and reference words it dropped in <del>;
    None when the two share too little for a diff to help."""
    a, b = _TOKEN.findall(reference), _TOKEN.findall(text)
    # compared without the whitespace, so "advice." at the end of a line still matches "advice. "
    matcher = difflib.SequenceMatcher(None, [t.strip() for t in a], [t.strip() for t in b], autojunk=False)
    if matcher.quick_ratio() < MIN_DIFF_SIMILARITY or matcher.ratio() < MIN_DIFF_SIMILARITY:
        return None
    out = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            out.append(escape("".join(b[j1:j2])))
            continue
        if i2 > i1:
            out.append(f"<del>{escape(''.join(a[i1:i2]).strip())}</del> ")
        if j2 > j1:
            out.append(f"<ins>{escape(''.join(b[j1:j2]))}</ins>")
    return "".join(out)


def highlight(text: str, spans: list[Any]) -> str:
    """HTML of `text` with each [start, end) span a rule reported as violating wrapped in <mark>."""
    clean = sorted((int(s[0]), int(s[1])) for s in spans
                   if isinstance(s, (list, tuple)) and len(s) >= 2 and 0 <= int(s[0]) < int(s[1]) <= len(text))
    out, pos = [], 0
    for start, end in clean:
        if start < pos:
            continue
        out.append(escape(text[pos:start]) + f"<mark>{escape(text[start:end])}</mark>")
        pos = end
    return "".join(out) + escape(text[pos:])


def view(ex: dict[str, Any], systems: list[str], rules: RuleSet | None = None) -> dict[str, Any]:
    """One example ready for the template: per system its marked-up text and rule badges. Violating spans
    come from the example when eval recorded them, else from the run's rules."""
    ref = ex.get("reference")
    cut = ex.get("cut_off") or ex.get("truncated") or {}
    spans = ex.get("spans") or ex.get("violations") or {}
    if not spans and rules is not None:
        spans = {s: violation_spans(rules, str(out), str(ex.get("prompt", "")),
                                    [r for r, ok in (ex.get("passes") or {}).get(s, {}).items() if not ok])
                 for s, out in (ex.get("outputs") or {}).items()}
    cols = []
    for s in systems:
        if s not in (ex.get("outputs") or {}):
            continue
        text = str(ex["outputs"][s])
        sys_spans = [sp for rule_spans in (spans.get(s) or {}).values() for sp in rule_spans] \
            if isinstance(spans.get(s), dict) else []
        diff = word_diff(text, ref) if isinstance(ref, str) and ref and not sys_spans else None
        body = highlight(text, sys_spans) if sys_spans else diff if diff is not None else escape(text)
        if not text.strip():  # an empty box reads as "not loaded"; say the model answered nothing
            body = '<span class="muted">(empty output)</span>'
        cols.append({"system": s, "html": body, "long": len(text) > COLLAPSE_CHARS, "words": len(text.split()),
                     "empty": not text.strip(),
                     "diffed": diff is not None,
                     "cut_off": bool(cut.get(s)) if isinstance(cut, dict) else False,
                     "checks": list((ex.get("passes") or {}).get(s, {}).items())})
    return {"id": ex.get("id"), "line": ex.get("line"), "prompt": str(ex.get("prompt", "")),
            "reference": ref if isinstance(ref, str) else None, "cols": cols, "differs": differs(ex)}


def every_selection(examples: list[dict[str, Any]], systems: list[str], rules: list[str]) -> dict[str, list[int]]:
    """For a page with no server behind it (report.html): the ordered indices `select` picks for every
    system × failing rule × "systems differ" × sort, keyed "system|rule|0 or 1|sort"; the page's script
    only looks its filters up here, so the filtering itself stays in this module."""
    index = {id(ex): i for i, ex in enumerate(examples)}
    out = {}
    for system in ["", *systems]:
        for rule in ["", *rules]:
            for differ in (False, True):
                for sort in SORTS:
                    picked, _ = select(examples, Filters(system, rule, differ, "", sort), page_size=None)
                    out[f"{system}|{rule}|{int(differ)}|{sort}"] = [index[id(ex)] for ex in picked]
    return out
