"""Inline SVG charts drawn on the server: no script library, nothing fetched, readable at 420 px.

Every chart scales with its container (viewBox + width 100%), labels each value it draws, and
keeps a zero-length bar visible as a hairline so "0" never looks like "missing".
"""

from __future__ import annotations

import math
from html import escape
from typing import Sequence

# Okabe-Ito: colour-blind safe; series also differ by dash so colour is never the only cue.
# Fixed per system so every chart, in the app and in report.html, agrees.
SYSTEM_COLORS = {"base": "#7f7f7f", "prompted": "#e69f00", "tuned": "#0072b2"}
PALETTE = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9")
DASHES = ("", "6 3", "2 3", "8 3 2 3")


def color_of(series: str, k: int) -> str:
    """base / prompted / tuned keep their fixed colours; other series take the palette."""
    return SYSTEM_COLORS.get(series, PALETTE[k % len(PALETTE)])


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (1, 2, 2.5 or 5 times a power of ten apart)."""
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(1, count - 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks, t = [], start
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    if ticks[-1] < hi:
        ticks.append(round(t, 12))
    return ticks


def fmt(v: float) -> str:
    """Short number for a label: 3 significant digits, scientific only for tiny learning rates."""
    if v == 0:
        return "0"
    if abs(v) < 1e-3:
        return f"{v:.1e}"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def tick_labels(ticks: list[float]) -> list[str]:
    """One format for every tick of an axis (no "5.0e-04" next to "0.001"), as few digits as tell them apart."""
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else abs(ticks[0]) or 1.0
    if step < 1e-3:
        return [f"{t:.1e}" if t else "0" for t in ticks]
    decimals = max(0, -math.floor(math.log10(step)) + (0 if round(step / 10 ** math.floor(math.log10(step)), 6)
                                                          in (1.0, 2.0, 5.0) else 1))
    return [f"{t:,.{decimals}f}" for t in ticks]


def _spread(ys: list[float], gap: float) -> list[float]:
    """Label positions moved apart so no two are closer than `gap` (the end values of two lines often meet)."""
    order = sorted(range(len(ys)), key=lambda i: ys[i])
    out = list(ys)
    for prev, cur in zip(order, order[1:]):
        out[cur] = max(out[cur], out[prev] + gap)
    return out


def line_chart(series: dict[str, Sequence[tuple[float, float]]], title: str, x_label: str = "step",
               width: int = 560, height: int = 240) -> str:
    """Lines of (x, y) points sharing axes; the last point of each line is labelled with its value."""
    pts = [p for s in series.values() for p in s]
    if not pts:
        return f'<p class="empty">{escape(title)}: no values logged yet.</p>'
    left, right, top, bottom = 56, 64, 46, 36
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    xt = nice_ticks(min(xs), max(xs), 6)
    # one value (a run that logged a single loss): centre it instead of pinning it to the bottom axis
    pad = 0.0 if max(ys) > min(ys) else abs(ys[0]) * 0.1 or 1.0
    yt = nice_ticks(min(ys) - pad, max(ys) + pad, 5)
    w, h = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + (x - xt[0]) / ((xt[-1] - xt[0]) or 1) * w

    def sy(y: float) -> float:
        return top + h - (y - yt[0]) / ((yt[-1] - yt[0]) or 1) * h

    out = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
           f'<text x="{left}" y="16" class="ct">{escape(title)}</text>']
    for t, label in zip(yt, tick_labels(yt)):
        out.append(f'<line x1="{left}" x2="{left + w}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" class="grid"/>'
                   f'<text x="{left - 6}" y="{sy(t) + 4:.1f}" text-anchor="end">{label}</text>')
    for t, label in zip(xt, tick_labels(xt)):
        out.append(f'<text x="{sx(t):.1f}" y="{top + h + 16}" text-anchor="middle">{label}</text>')
    out.append(f'<text x="{left + w / 2}" y="{height - 2}" text-anchor="middle" class="axis">{escape(x_label)}</text>')
    legend_x = left
    drawn = [(k, name, s) for k, (name, s) in enumerate(series.items()) if s]
    label_ys = _spread([sy(s[-1][1]) + 4 for _, _, s in drawn], 13)
    for (k, name, s), label_y in zip(drawn, label_ys):
        color, dash = color_of(name, k), DASHES[k % len(DASHES)]
        path = " ".join(f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for i, (x, y) in enumerate(s))
        out.append(f'<path d="{path}" fill="none" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}"/>')
        if len(s) == 1:
            out.append(f'<circle cx="{sx(s[0][0]):.1f}" cy="{sy(s[0][1]):.1f}" r="3" fill="{color}"/>')
        lx, ly = s[-1]
        out.append(f'<text x="{sx(lx) + 5:.1f}" y="{label_y:.1f}" fill="{color}" class="val">{fmt(ly)}</text>')
        out.append(f'<line x1="{legend_x}" x2="{legend_x + 18}" y1="31" y2="31" stroke="{color}" '
                   f'stroke-width="2" stroke-dasharray="{dash}"/><text x="{legend_x + 22}" y="35">'
                   f'{escape(name)}</text>')
        legend_x += 34 + 8 * len(name)
    out.append("</svg>")
    return "".join(out)


def bar_chart(rows: Sequence[tuple[str, dict[str, float | None]]], title: str, lo: float = 0.0,
              hi: float | None = None, percent: bool = False) -> str:
    """Horizontal grouped bars: one group per row label, one bar per series, each with its value.

    Horizontal so long rule and metric names stay readable on a phone instead of rotating."""
    series = list(dict.fromkeys(k for _, vals in rows for k in vals))
    if not rows or not series:
        return f'<p class="empty">{escape(title)}: nothing to chart.</p>'
    top_v = hi if hi is not None else max([v for _, vals in rows for v in vals.values() if v is not None] + [lo + 1e-9])
    width, label_w, bar_h, gap, first = 560, 190, 16, 12, 46
    plot_w = width - label_w - 62
    height = first + len(rows) * (len(series) * bar_h + gap)
    out = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
           f'<text x="4" y="16" class="ct">{escape(title)}</text>']
    legend_x = 4
    for k, name in enumerate(series):
        out.append(f'<rect x="{legend_x}" y="25" width="11" height="11" fill="{color_of(name, k)}"/>'
                   f'<text x="{legend_x + 15}" y="35">{escape(name)}</text>')
        legend_x += 30 + 8 * len(name)
    y = first
    for label, vals in rows:
        short = label if len(label) <= 26 else label[:25] + "…"
        group_h = len(series) * bar_h
        out.append(f'<text x="{label_w - 6}" y="{y + group_h / 2 + 4:.1f}" text-anchor="end"><title>{escape(label)}'
                   f'</title>{escape(short)}</text>')
        for k, name in enumerate(series):
            v = vals.get(name)
            color = color_of(name, k)
            if v is None:
                out.append(f'<text x="{label_w + 4}" y="{y + bar_h - 3}" class="muted">n/a</text>')
            else:
                frac = (v - lo) / ((top_v - lo) or 1)
                bw = max(1.5, min(1.0, max(0.0, frac)) * plot_w)  # a zero bar stays a visible hairline
                text = f"{v * 100:.1f}%" if percent else fmt(v)
                out.append(f'<rect x="{label_w}" y="{y}" width="{bw:.1f}" height="{bar_h - 2}" fill="{color}">'
                           f'<title>{escape(name)}: {text}</title></rect>'
                           f'<text x="{label_w + bw + 4:.1f}" y="{y + bar_h - 3}" class="val">{text}</text>')
            y += bar_h
        y += gap
    out.append(f'<line x1="{label_w}" x2="{label_w}" y1="{first - 2}" y2="{y - gap + 2}" class="axisline"/></svg>')
    return "".join(out)
