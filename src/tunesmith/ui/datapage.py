"""The Data page: `tunesmith data check` over the files a run's manifest names, as a page (and, through
`view`, the single-file `tunesmith data report` over any files).

Only the files run.json lists under `data` are read (relative ones from the run dir), and the page
says when one changed since training (its sha256 no longer matches). All splits are checked
together, so a duplicate pair across train and test shows the split each copy landed in.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from tunesmith.data.check import Analysis, analyse, load_tokenizer, rule_messages
from tunesmith.data.dedup import dedup_text
from tunesmith.errors import UserError
from tunesmith.rules import RuleSet
from tunesmith.ui.catalog import NotFound, RunRef
from tunesmith.ui.charts import bar_chart
from tunesmith.ui.examples import PAGE_SIZE, highlight, word_diff
from tunesmith.ui.runs import load_config
from tunesmith.ui.spans import violation_spans

HISTOGRAM_BINS = 12


@dataclass
class Source:
    split: str
    path: Path
    recorded_sha: str | None
    current_sha: str

    @property
    def changed(self) -> bool:
        return bool(self.recorded_sha) and self.recorded_sha != self.current_sha


def sources(ref: RunRef) -> list[Source]:
    out = []
    for split, entry in ref.rundir.info().data.splits().items():
        if not entry.path:
            continue
        path = Path(entry.path).expanduser()
        path = path if path.is_absolute() else ref.path / path
        if path.is_file():
            out.append(Source(split, path, entry.sha256, hashlib.sha256(path.read_bytes()).hexdigest()))
    if not out:
        raise NotFound(f"run {ref.id}: none of the data files its run.json names exists any more")
    return out


def _tokenizer(ref: RunRef, base: str | None):
    """The run's own tokenizer (saved with the adapter) or its local base model's; None when neither is here."""
    for where in [ref.rundir.adapter] + ([Path(base).expanduser()] if base else []):
        if (where / "tokenizer_config.json").is_file():
            try:
                return load_tokenizer(where), str(where)
            except (UserError, OSError, ValueError):
                continue
    return None, None


_CACHE: dict[tuple, tuple[Analysis, str | None]] = {}


def check_run(ref: RunRef, srcs: list[Source]) -> tuple[Analysis, str | None]:
    """(analysis, why lengths are in words instead of tokens or None), cached until a file changes."""
    info = ref.rundir.info()
    cfg, _ = load_config(ref)
    max_len = (cfg.get("data") or {}).get("max_seq_len")
    rules = None
    if info.rules:
        rp = Path(info.rules) if Path(info.rules).is_absolute() else ref.path / info.rules
        rules = rp if rp.is_file() else None
    key = (ref.path, tuple((s.path, s.current_sha) for s in srcs), rules, max_len)
    if key in _CACHE:
        return _CACHE[key]
    tok, tok_name = _tokenizer(ref, info.base_model)
    note = None if tok is not None else "no tokenizer of this run's model is on this machine: lengths are in words"
    try:
        a = analyse([s.path for s in srcs], rules=rules, tokenizer=tok, max_seq_len=max_len if tok else None)
    except UserError as e:  # e.g. a tokenizer without a chat template: count words instead, and say so
        note = f"lengths are in words: {e}"
        a = analyse([s.path for s in srcs], rules=rules)
    if tok_name:
        a.tokenizer = tok_name
    if len(_CACHE) > 8:
        _CACHE.clear()
    _CACHE[key] = (a, note)
    return a, note


def _turn(record: Any) -> tuple[str, str]:
    """(the last answer, the user message it answers): what the rules were checked on."""
    answer, prompt, last_user = "", "", ""
    for m in rule_messages(record) or []:
        if m["role"] == "user":
            last_user = m["content"]
        elif m["role"] == "assistant":
            answer, prompt = m["content"], last_user
    return answer, prompt


def _violating(rules: RuleSet | None, rule: str, record: Any) -> str:
    """HTML of the answer with the words that break `rule` marked, where the rule can say which."""
    answer, prompt = _turn(record)
    spans = violation_spans(rules, answer, prompt, [rule]).get(rule, []) if rules is not None else []
    return highlight(answer, spans)


def histogram(lengths: list[int], limit: int | None, unit: str) -> str:
    if not lengths:
        return ""
    lo, hi = min(lengths), max(lengths)
    width = max(1, -(-(hi - lo + 1) // HISTOGRAM_BINS))
    counts = Counter((n - lo) // width for n in lengths)
    rows = [(f"{lo + b * width}–{lo + (b + 1) * width - 1}", {"records": counts.get(b, 0)})
            for b in range((hi - lo) // width + 1)]
    return bar_chart(rows, f"{unit} per record" + (f" (limit {limit})" if limit else ""))


def file_sources(files: list[Path]) -> list[Source]:
    """`data report FILES`: each file given is its own "split", named by its stem (its path if two share one)."""
    stems = [p.stem for p in files]
    return [Source(p.stem if stems.count(p.stem) == 1 else str(p), p, None,
                   hashlib.sha256(p.read_bytes()).hexdigest()) for p in files]


def context(ref: RunRef, params: dict[str, str]) -> dict[str, Any]:
    srcs = sources(ref)
    a, note = check_run(ref, srcs)
    return view(a, srcs, note, params)


def view(a: Analysis, srcs: list[Source], note: str | None, params: dict[str, str],
         static: bool = False) -> dict[str, Any]:
    """The Data page's context for an analysis of `srcs`; static: one file with no server (no search)."""
    report = a.report()
    split_of = {str(s.path): s.split for s in srcs}

    def where(i: int) -> dict[str, Any]:
        o = a.records[i].origin
        return {"split": split_of.get(o.file, "?"), "file": Path(o.file).name, "line": o.line}

    pairs = []
    for i, j in sorted(a.exact.items()):
        pairs.append({"kind": "exact", "a": where(i), "b": where(j), "similarity": 1.0,
                      "html": escape(dedup_text(a.records[i]))})
    for d in a.near:
        ta, tb = dedup_text(a.records[d.index]), dedup_text(a.records[d.duplicate_of])
        pairs.append({"kind": "near", "a": where(d.index), "b": where(d.duplicate_of), "similarity": d.similarity,
                      "html": word_diff(ta, tb) or escape(ta)})
    violations = [{"rule": rule, "n": len(idx),
                   "records": [{**where(i), "html": _violating(a.rules, rule, a.records[i])} for i in idx[:50]]}
                  for rule, idx in a.violations.items()]
    over = [{**where(i), "length": a.lengths[i]} for i in a.over_length[:200]]
    query = "" if static else params.get("q", "")[:200]
    q = query.lower()
    page = int(params["page"]) if params.get("page", "").isdigit() and int(params["page"]) > 0 else 1
    matching = [i for i in range(len(a.records)) if not q or q in dedup_text(a.records[i]).lower()]
    browse = [{**where(i), "text": dedup_text(a.records[i])} for i in matching[(page - 1) * PAGE_SIZE:page * PAGE_SIZE]]
    labels = report.get("label_counts")
    return {
        "sources": srcs, "report": report, "note": note, "pairs": pairs, "violations": violations,
        "per_file": Counter(split_of.get(r.origin.file, "?") for r in a.records),
        "invalid_per_file": Counter(split_of.get(x.file, "?") for x in a.read.invalid),
        "histogram": histogram(a.lengths, a.max_seq_len, a.length_unit),
        "labels_chart": bar_chart([(k, {"records": v}) for k, v in labels.items()], "label balance") if labels else "",
        "over": over, "static": static, "file_names": ", ".join(s.path.name for s in srcs),
        "browse": browse, "matching": len(matching), "q": query, "page": page,
        "pages": max(1, -(-len(matching) // PAGE_SIZE)),
    }
