"""What one running server holds -- the registry, the request log, an engine over one base model -- and the
one place a model name is resolved.

The registry is read on every request, so `tunesmith registry alias` or `rollback` takes effect on the
next request without a restart. A model name is only ever a registry key, never a path.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tunesmith.deploy.flywheel import RequestLog
from tunesmith.deploy.merge import tokenizer_dir
from tunesmith.deploy.registry import Registry, RegistryError, Version
from tunesmith.deploy.serve.embedded import EmbeddedEngine
from tunesmith.deploy.serve.engine import Engine
from tunesmith.deploy.serve.protocol import ApiError
from tunesmith.deploy.serve.settings import ServeSettings
from tunesmith.models import load_tokenizer, stop_token_ids
from tunesmith.rules import RuleSet, parse_rules

_MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9_.@-]{0,130}$")


@dataclass
class Target:
    """What a requested model name resolved to for one request."""

    requested: str
    version: Version | None  # None: the base model
    guard: str  # off | report | reject | retry
    rules: RuleSet | None
    system_prompt: str | None
    chat_template: str | None = None
    stop_ids: list[int] | None = None

    @property
    def answered_by(self) -> str:
        return self.version.id if self.version else "base"


class Server:
    def __init__(self, settings: ServeSettings,
                 make_engine: Callable[[str, str, ServeSettings], Engine] = EmbeddedEngine):
        """`make_engine(base dir, tokenizer dir, settings)` builds what runs the model (the seam for engines
        outside this process)."""
        self.settings = settings
        self.registry = Registry(settings.registry)
        self.log = RequestLog(settings.log or self.registry.path.with_name("requests.db"))
        self.rng = random.Random(settings.seed)
        versions = self.registry.versions()
        if settings.base:
            self.base = str(Path(settings.base).expanduser().resolve())
        elif versions:
            self.base = str(Path(max(versions, key=lambda v: v.created).base_model).resolve())
        else:
            raise ValueError(f"registry {self.registry.path} has no versions; pass --base to serve a base model alone")
        if not (Path(self.base) / "config.json").is_file():
            raise ValueError(f"base model {self.base} does not exist (moved or deleted?); pass --base DIR")
        tokenizer_from = self.base
        same_base = [v for v in versions if self._same_base(v)]
        if same_base and not (Path(self.base) / "tokenizer_config.json").is_file():
            tokenizer_from = str(same_base[0].adapter_dir)
        self.engine = make_engine(self.base, tokenizer_from, settings)
        self._chat_formats: dict[str, tuple[str | None, list[int]]] = {}

    def chat_format(self, version: Version | None) -> tuple[str | None, list[int]]:
        """The chat template and end tokens a version was trained with: its run may have replaced the base's
        template (data.chat_template), or the base may have none; the stored tokenizer says which."""
        if version is None:
            return self.engine.tok.chat_template, self.engine.stops
        if version.id not in self._chat_formats:
            tok = load_tokenizer(tokenizer_dir(version), chat=False)
            template = tok.chat_template or self.engine.tok.chat_template
            tok.chat_template = template
            self._chat_formats[version.id] = (template, stop_token_ids(tok, self.engine.generation_config))
        return self._chat_formats[version.id]

    def _same_base(self, v: Version) -> bool:
        return str(Path(v.base_model).resolve()) == self.base

    def resolve(self, name: str) -> Target:
        if name == "base":
            return Target(name, None, "off", None, None, *self.chat_format(None))
        # Names are registry keys only: anything path-like is unknown, never opened.
        alias = self.registry.find_alias(name) if _MODEL_NAME.match(name) else None
        if alias is not None:
            ids, weights = zip(*alias.targets)
            version = self.registry.find_version(self.rng.choices(ids, weights)[0])
            guard, rules_yaml = alias.guard, alias.rules_yaml
        else:
            version = self.registry.find_version(name) if _MODEL_NAME.match(name) else None
            guard, rules_yaml = "off", None
        if version is None:
            raise ApiError(404, f"The model '{name}' does not exist", "model_not_found", param="model")
        if not self._same_base(version):
            raise ApiError(404, f"The model '{name}' was trained on another base model than this server holds",
                           "model_not_found", param="model")
        if version.id not in self.engine.loaded_adapters():
            try:
                version.check_files()
            except RegistryError:
                raise ApiError(503, f"The model '{name}' cannot be loaded: files of {version.id} are missing on "
                               "the server", "model_unavailable", "server_error", param="model") from None
        rules = None
        text = rules_yaml or version.rules_yaml
        if guard != "off" and text:  # both were validated when registered
            import yaml

            rules = parse_rules(yaml.safe_load(text), f"rules of {name}")
        elif guard != "off":
            guard = "off"  # a guard with no rules anywhere has nothing to check
        return Target(name, version, guard, rules, version.lineage.get("system_prompt"), *self.chat_format(version))

    def model_ids(self) -> list[str]:
        ids = ["base"] + [v.id for v in self.registry.versions() if self._same_base(v)]
        # an alias whose versions were trained on another base would only ever answer 404
        return ids + [a.alias for a in self.registry.aliases() if all(v in ids for v, _ in a.targets)]
