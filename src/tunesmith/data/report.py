"""`data report`: the `data check` findings as one self-contained HTML page (inline SVG plots)."""

from __future__ import annotations

import html
import io
from pathlib import Path
from typing import Any

from tunesmith.data.check import Analysis, rule_messages
from tunesmith.data.dedup import dedup_text
from tunesmith.data.records import Record

_MAX_ROWS = 200  # rows per table; the JSON report from `data check --json` has them all
_EXCERPT = 240

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1f3a5f;color:#fff;padding:24px 40px}header h1{margin:0 0 4px;font-size:24px}
header p{margin:0;opacity:.8;font-size:14px}main{padding:24px 40px;max-width:1200px}
section{background:#fff;border-radius:10px;box-shadow:0 1px 3px rgba(0,0,0,.08);padding:20px 24px;margin-bottom:20px}
h2{font-size:18px;margin:0 0 12px}.cards{display:flex;flex-wrap:wrap;gap:12px;margin-bottom:20px}
.card{background:#fff;border-radius:10px;box-shadow:0 1px 3px rgba(0,0,0,.08);padding:14px 18px;min-width:130px}
.card .v{font-size:26px;font-weight:600}.card .k{font-size:12px;color:#5b6475;text-transform:uppercase;letter-spacing:.04em}
.bad .v{color:#b42318}.good .v{color:#067647}.warn .v{color:#b54708}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #eaecf0;vertical-align:top}
th{background:#f9fafb;font-weight:600}td.num{font-variant-numeric:tabular-nums;white-space:nowrap}
code,.txt{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px;white-space:pre-wrap;word-break:break-word}
.tag{display:inline-block;background:#fef3f2;color:#b42318;border-radius:6px;padding:1px 6px;font-size:12px}
ul.warn li{margin:4px 0;color:#b54708}.plots{display:flex;flex-wrap:wrap;gap:20px}.plots svg{max-width:100%;height:auto}
.more{color:#5b6475;font-size:12px;margin-top:6px}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _excerpt(text: str) -> str:
    text = text if len(text) <= _EXCERPT else text[:_EXCERPT] + " …"
    return f'<span class="txt">{_esc(text)}</span>'


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    svg = buf.getvalue()
    return svg[svg.index("<svg") :]


def _plots(a: Analysis) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    if a.lengths:
        fig, ax = plt.subplots(figsize=(6.4, 3.4))
        ax.hist(a.lengths, bins=min(40, max(5, len(set(a.lengths)))), color="#3b6ea8", edgecolor="white")
        if a.max_seq_len:
            ax.axvline(a.max_seq_len, color="#b42318", linestyle="--", label=f"max_seq_len {a.max_seq_len}")
            ax.legend(frameon=False)
        ax.set_title(f"Record length ({a.length_unit})")
        ax.set_xlabel(a.length_unit)
        ax.set_ylabel("records")
        ax.spines[["top", "right"]].set_visible(False)
        out.append(_svg(fig))
        plt.close(fig)
    labels = a.label_counts()
    if labels:
        fig, ax = plt.subplots(figsize=(6.4, 3.4))
        names = list(labels)
        ax.barh(names[::-1], [labels[k] for k in names][::-1], color="#5a9e6f")
        ax.set_title("Label counts")
        ax.set_xlabel("records")
        ax.spines[["top", "right"]].set_visible(False)
        out.append(_svg(fig))
        plt.close(fig)
    return out


def _table(headers: list[str], rows: list[list[str]], total: int | None = None) -> str:
    if not rows:
        return '<p class="more">None.</p>'
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows[:_MAX_ROWS])
    more = total if total is not None else len(rows)
    tail = f'<p class="more">… and {more - _MAX_ROWS} more (see <code>data check --json</code>)</p>' if more > _MAX_ROWS else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{tail}"


def _answer(r: Record) -> str:
    msgs = rule_messages(r)
    return msgs[-1]["content"] if msgs else dedup_text(r)


def render(a: Analysis) -> str:
    rep = a.report()
    loc = lambda i: _esc(a.loc(i))  # noqa: E731 - tiny local formatter
    cards = [
        ("records", rep["records"], ""),
        ("valid", rep["valid"], "good"),
        ("invalid", len(rep["invalid"]), "bad" if rep["invalid"] else "good"),
        ("exact dups", rep["exact_duplicates"], "warn" if rep["exact_duplicates"] else "good"),
        ("near dups", rep["near_duplicates"], "warn" if rep["near_duplicates"] else "good"),
        ("rule violations", len(a.violating()), "bad" if a.violating() else "good"),
        ("over length", rep["over_length"]["count"], "warn" if rep["over_length"]["count"] else "good"),
    ]
    card_html = "".join(f'<div class="card {c}"><div class="v">{v}</div><div class="k">{k}</div></div>' for k, v, c in cards)
    stats = rep["length_tokens"]
    invalid_rows = [
        [_esc((f"{x.file}:" if len(a.files) > 1 else "") + str(x.line)), f'<span class="tag">{_esc(x.reason)}</span>', _esc(x.message), _excerpt(x.raw or "")]
        for x in a.read.invalid
    ]
    exact_rows = [[loc(i), loc(j), _excerpt(dedup_text(a.records[i]))] for i, j in sorted(a.exact.items())]
    near_rows = [
        [loc(d.index), loc(d.duplicate_of), f"{d.similarity:.2f}", _excerpt(dedup_text(a.records[d.index])), _excerpt(dedup_text(a.records[d.duplicate_of]))]
        for d in a.near
    ]
    viol_rows = [
        [_esc(name), loc(i), _excerpt(_answer(a.records[i]))] for name, idx in a.violations.items() for i in idx
    ]
    over_rows = [[loc(i), f"{a.lengths[i]}", _excerpt(dedup_text(a.records[i]))] for i in a.over_length]
    warnings = "".join(f"<li>{_esc(w)}</li>" for w in rep["warnings"]) or "<li>None.</li>"
    plots = "".join(_plots(a))
    rules = ", ".join(_esc(n) for n in rep["rules"]) or "none given"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tunesmith data report</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>
<body><header><h1>Data report</h1><p>{_esc(", ".join(a.files))} · format {_esc(rep["format"])} · rules: {rules}</p></header>
<main><div class="cards">{card_html}</div>
<section><h2>Warnings</h2><ul class="warn">{warnings}</ul></section>
<section><h2>Lengths and labels</h2>
<p>Length in {_esc(rep["length_unit"])}{f" (tokenizer {_esc(rep['tokenizer'])}, chat template applied)" if rep["tokenizer"] else ""}:
min {stats["min"]} · median {stats["p50"]} · p95 {stats["p95"]} · max {stats["max"]}</p>
<div class="plots">{plots}</div></section>
<section><h2>Invalid records ({len(invalid_rows)})</h2>{_table(["line", "reason", "message", "content"], invalid_rows)}</section>
<section><h2>Rule violations ({len(viol_rows)})</h2>{_table(["rule", "line", "answer"], viol_rows)}</section>
<section><h2>Exact duplicates ({len(exact_rows)})</h2>{_table(["line", "repeats line", "text"], exact_rows)}</section>
<section><h2>Near duplicates ({len(near_rows)}, Jaccard ≥ {a.near_dup_threshold})</h2>
{_table(["flagged line", "kept line", "similarity", "flagged text", "kept text"], near_rows)}</section>
<section><h2>Over length ({len(over_rows)})</h2>{_table(["line", a.length_unit, "text"], over_rows)}</section>
</main></body></html>
"""


def write_report(a: Analysis, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(render(a), encoding="utf-8")
    return p
