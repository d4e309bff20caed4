"""`data report`: the web app's Data page over any files, as one self-contained HTML file.

The page body, its context (`tunesmith.ui.datapage.view`) and its charts are the app's; CSS is
inlined and charts are inline SVG, so the file opens from disk with nothing fetched.
"""

from __future__ import annotations

from pathlib import Path

from tunesmith.data.check import Analysis
from tunesmith.ui.datapage import file_sources, view
from tunesmith.ui.templating import render_standalone


def render(a: Analysis) -> str:
    srcs = file_sources([Path(f) for f in a.files])
    ctx = view(a, srcs, None, {}, static=True)
    return render_standalone("report_data.html.jinja", f"data report: {ctx['file_names']}",
                             where="data report · " + ", ".join(str(s.path) for s in srcs), **ctx)


def write_report(a: Analysis, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(render(a), encoding="utf-8")
    return p
