"""The Playground's only contact with the serving code: today's `tunesmith.deploy.server` app,
mounted under /playground/v1 and built on its first request (loading the base model takes seconds,
and the other pages should not wait for it). The browser then speaks OpenAI-style chat streaming to
it, exactly as a client of `tunesmith serve` would; rule badges come from each version's own rules.

When the serving layers move, this is the one module to re-point.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import yaml

from tunesmith.deploy.registry import Registry
from tunesmith.deploy.server import ServeSettings, create_app
from tunesmith.rules import parse_rules

MOUNT = "/playground/v1"


class LazyServe:
    """An ASGI app that builds the serve app once, on the first request that reaches it."""

    def __init__(self, registry: Path | None):
        self.registry = registry
        self._app: Any = None
        self._lock = threading.Lock()

    def _build(self) -> Any:
        with self._lock:
            if self._app is None:
                reg = Registry(self.registry)
                # the playground's requests go to their own log, not into production traffic numbers
                self._app = create_app(ServeSettings(registry=reg.path, log=reg.path.with_name("ui-playground.db")))
        return self._app

    async def __call__(self, scope, receive, send):
        app = self._app or await asyncio.to_thread(self._build)
        # the serve app routes /v1/...: hand it the path it would see as `tunesmith serve`
        path = "/v1" + scope["path"].split(MOUNT, 1)[-1]
        await app({**scope, "path": path, "raw_path": path.encode(), "root_path": ""}, receive, send)


def models(registry: Registry) -> list[dict[str, str]]:
    """What can answer: the base, every alias and every version, with a word on what each is."""
    out = [{"id": "base", "label": "base model"}]
    out += [{"id": a.alias, "label": "alias → " + ", ".join(f"{v} {w:.0%}" for v, w in a.targets)}
            for a in registry.aliases()]
    out += [{"id": v.id, "label": f"version of run {v.lineage.get('run_name') or ''}".strip()}
            for v in registry.versions()]
    return out


def check_rules(registry: Registry, model: str, answer: str, prompt: str) -> dict[str, bool] | None:
    """The answer against the rules the model was trained for (an alias: its guard rules, else its main
    version's); None when it has none (the base model)."""
    alias = registry.find_alias(model)
    version = registry.find_version(alias.targets[0][0] if alias else model)
    text = (alias.rules_yaml if alias else None) or (version.rules_yaml if version else None)
    if not text:
        return None
    return parse_rules(yaml.safe_load(text), f"rules of {model}").check_answer(answer, prompt)
