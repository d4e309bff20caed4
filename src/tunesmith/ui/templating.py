"""The Jinja environment the web app and the static reports share, and the standalone wrapper.

A standalone page is one file that opens from disk with nothing fetched: ui.css and ui.js are
inlined, charts are inline SVG, and the page body is the same partial the app's page includes.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

STATIC = Path(__file__).parent / "static"


def env() -> Environment:
    e = Environment(loader=PackageLoader("tunesmith.ui", "templates"), autoescape=select_autoescape(["jinja"]),
                    trim_blocks=True, lstrip_blocks=True)
    e.filters["num"] = lambda x, spec=".4f": "–" if x is None else format(x, spec)
    e.filters["pct"] = lambda x: "–" if not isinstance(x, (int, float)) else f"{x * 100:.1f}%"
    return e


@lru_cache(maxsize=1)
def _shared() -> Environment:
    return env()


def _inline(name: str, closing: str) -> Markup:
    # an inlined file must not close its own element early: "</style" or "</script" would end it
    text = (STATIC / name).read_text(encoding="utf-8")
    return Markup(text.replace(closing, closing.replace("/", "\\/")))


def render_standalone(template: str, title: str, **ctx: Any) -> str:
    """A self-contained HTML document of `template` (a page extending standalone.html.jinja)."""
    return _shared().get_template(template).render(
        {**ctx, "title": title, "static": True, "inline_css": _inline("ui.css", "</style"),
         "inline_js": _inline("ui.js", "</script")})
