"""The Registry page and its two actions, done with the same `Registry` operations as
`tunesmith registry alias` / `rollback`, so a running `tunesmith serve` sees them at its next request."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.deploy.registry import ALIAS_RE, Registry, RegistryError, Version
from tunesmith.report.verdict import Verdict, verdict


class ActionRefused(ValueError):
    """A registry action the page will not do as asked; the message says why and what to do instead."""


@dataclass
class Evidence:
    version: Version
    alias: str
    verdict: Verdict | None
    current: list[tuple[str, float]] | None

    @property
    def gate_failed(self) -> bool:
        return self.verdict is not None and self.verdict.kind == "bad"


def open_registry(path: Path | None) -> Registry | None:
    """The registry, or None when the given file does not exist (the page says so; it never creates one)."""
    if path is not None and not path.expanduser().is_file():
        return None
    return Registry(path)


def _headline(v: Version) -> str:
    gate = v.lineage.get("gate") or {}
    metrics = (v.lineage.get("eval") or {}).get("metrics") or {}
    primary = gate.get("primary_metric")
    value = gate.get("candidate_value")
    if value is None and primary:
        from tunesmith.evaluate.gate import metric_value

        value = metric_value(metrics, primary)
    return f"{primary} {value:.3f}" if primary and isinstance(value, (int, float)) else "–"


def _version_verdict(v: Version) -> Verdict | None:
    gate = v.lineage.get("gate")
    return verdict(gate) if isinstance(gate, dict) and gate else None


def overview(reg: Registry) -> dict[str, Any]:
    versions = reg.versions()
    served: dict[str, list[str]] = {}
    aliases = reg.aliases()
    for a in aliases:
        for vid, w in a.targets:
            served.setdefault(vid, []).append(f"{a.alias} {w:.0%}")
    rows = [{"v": v, "run": v.lineage.get("run_name") or v.lineage.get("run", ""),
             "data": (v.lineage.get("data_sha256") or {}).get("train") or "",
             "metric": _headline(v), "verdict": _version_verdict(v), "served": served.get(v.id, []),
             "missing": v.missing_files()} for v in versions]
    return {"path": reg.path, "versions": rows, "aliases": aliases}


def evidence(reg: Registry, alias: str, vid: str) -> Evidence:
    if not ALIAS_RE.match(alias):
        raise ActionRefused(f"alias {alias!r}: expected NAME@LABEL, e.g. legal@prod")
    try:
        v = reg.version(vid)
    except RegistryError as e:
        raise ActionRefused(str(e)) from None
    current = reg.find_alias(alias)
    return Evidence(v, alias, _version_verdict(v), current.targets if current else None)


def promote(reg: Registry, alias: str, vid: str, force: bool) -> None:
    ev = evidence(reg, alias, vid)
    if ev.gate_failed and not force:
        raise ActionRefused(f"{vid} failed its promotion gate ({ev.verdict.sentence}); tick \"promote anyway\" "
                            "to override, or promote a version that passed")
    try:
        reg.set_alias(alias, vid)
    except RegistryError as e:
        raise ActionRefused(str(e)) from None


def rollback(reg: Registry, alias: str) -> None:
    try:
        reg.rollback(alias)
    except RegistryError as e:
        raise ActionRefused(str(e)) from None
