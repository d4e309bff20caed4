"""Shared building blocks of the HTML reports: one self-contained file, no external assets.

Every report is a `page()` of `section()`s holding `table()`s, figures embedded as data
URIs and `badge()`s. All text passes through `esc()`; helpers that take `html` strings
expect markup built by these same helpers.
"""

from __future__ import annotations

import base64
import html as _html
import io
from typing import Any, Iterable, Sequence

# Colour-blind-safe (Okabe-Ito) colours, fixed per system so every plot and table agrees.
SYSTEM_COLORS = {"base": "#7f7f7f", "prompted": "#e69f00", "tuned": "#0072b2"}
_EXTRA_COLORS = ("#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442")

CSS = """
:root { --fg:#1f2328; --muted:#656d76; --line:#d0d7de; --bg:#f6f8fa; --ok:#1a7f37; --bad:#cf222e; }
* { box-sizing: border-box; }
body { margin:0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:var(--fg); background:var(--bg); }
main { max-width: 1100px; margin: 0 auto; padding: 24px 20px 64px; }
h1 { font-size: 1.7rem; margin: 0 0 4px; }
h2 { font-size: 1.2rem; margin: 0 0 12px; }
h3 { font-size: 1rem; margin: 16px 0 8px; }
.subtitle { color: var(--muted); margin: 0 0 20px; }
.card { background:#fff; border:1px solid var(--line); border-radius:10px; padding:18px 20px; margin:16px 0; }
.note { color: var(--muted); font-size: .9rem; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: var(--bg); font-weight: 600; }
td.num, th.num { text-align: right; }
td.best { font-weight: 700; }
.pos { color: var(--ok); } .neg { color: var(--bad); }
.badge { display:inline-block; padding:1px 8px; border-radius:999px; font-size:.8rem; font-weight:600; color:#fff; }
.badge.ok { background: var(--ok); } .badge.bad { background: var(--bad); }
.sys { display:inline-block; width:10px; height:10px; border-radius:2px; margin-right:6px; vertical-align:baseline; }
img.fig { max-width: 100%; height: auto; display:block; margin: 8px 0; }
pre.out { white-space: pre-wrap; word-break: break-word; margin:0; font: 13px/1.45 ui-monospace, SFMono-Regular, Menlo, monospace; background: var(--bg); padding: 8px; border-radius: 6px; }
.banner { border-radius:10px; padding:12px 16px; margin:0 0 12px; border:2px solid; font-weight:600; font-size:1.05rem; }
.banner.ok { background:#dafbe1; border-color:var(--ok); } .banner.bad { background:#ffebe9; border-color:var(--bad); }
.banner.warn { background:#fff8c5; border-color:#9a6700; }
.res { display:inline-block; padding:0 7px; border-radius:6px; font-size:.82rem; font-weight:600; border:1px solid; white-space:nowrap; }
.res.ok { color:var(--ok); } .res.bad { color:var(--bad); } .res.warn { color:#9a6700; }
.grid { display:grid; gap:12px; grid-template-columns: repeat(auto-fit, minmax(260px, 1fr)); }
"""


def esc(value: Any) -> str:
    return _html.escape(str(value), quote=True)


def color_for(system: str, index: int = 0) -> str:
    """A system's colour: fixed for base/prompted/tuned, a stable extra colour otherwise."""
    return SYSTEM_COLORS.get(system, _EXTRA_COLORS[index % len(_EXTRA_COLORS)])


def system_colors(systems: Iterable[str]) -> dict[str, str]:
    extra = 0
    out = {}
    for name in systems:
        out[name] = color_for(name, extra)
        extra += name not in SYSTEM_COLORS
    return out


def fig_to_data_uri(fig: Any, dpi: int = 110) -> str:
    """PNG data URI of a matplotlib figure; the figure is closed so long report runs do not leak."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def img(data_uri: str, alt: str) -> str:
    return f'<img class="fig" src="{data_uri}" alt="{esc(alt)}">'


def badge(passed: bool, yes: str = "pass", no: str = "fail") -> str:
    return f'<span class="badge {"ok" if passed else "bad"}">{esc(yes if passed else no)}</span>'


def swatch(color: str) -> str:
    return f'<span class="sys" style="background:{esc(color)}"></span>'


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[bool] | None = None) -> str:
    """A table whose cells are already HTML (escape text with `esc` first); numeric columns right-align."""
    numeric = list(numeric) if numeric is not None else [False] * len(headers)
    head = "".join(f'<th class="num">{h}</th>' if n else f"<th>{h}</th>" for h, n in zip(headers, numeric))
    body = []
    for row in rows:
        cells = []
        for cell, n in zip(row, numeric):
            classes = ["num"] if n else []
            if isinstance(cell, tuple):  # (html, extra css class), e.g. ("0.91", "best")
                cell, extra = cell
                classes.append(extra)
            attr = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{attr}>{cell}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def section(title: str, body_html: str, note: str | None = None, anchor: str | None = None) -> str:
    ident = f' id="{esc(anchor)}"' if anchor else ""
    note_html = f'<p class="note">{esc(note)}</p>' if note else ""
    return f'<section class="card"{ident}><h2>{esc(title)}</h2>{note_html}{body_html}</section>'


def page(title: str, body_html: str, subtitle: str | None = None) -> str:
    sub = f'<p class="subtitle">{esc(subtitle)}</p>' if subtitle else ""
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>"
        f"<body><main><h1>{esc(title)}</h1>{sub}{body_html}</main></body></html>\n"
    )
