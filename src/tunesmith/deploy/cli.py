"""`tunesmith registry` commands; `export`, `flywheel` (export_cli.py) and `serve` (serve_cli.py) are
re-exported here so the top-level app registers every deploy command from one module."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from tunesmith.clikit import emit
from tunesmith.clikit import fail as _fail
from tunesmith.deploy.cli_common import JsonOpt, RegistryOpt, _open, err, out
from tunesmith.deploy.export_cli import export_app, flywheel_app  # noqa: F401 (re-exported)
from tunesmith.deploy.registry import GUARD_MODES, RegistryError
from tunesmith.deploy.serve_cli import serve  # noqa: F401 (re-exported)

registry_app = typer.Typer(help="Name adapter versions, point aliases at them, roll back.", no_args_is_help=True)


# ---- registry --------------------------------------------------------------------------------


@registry_app.command("add")
def registry_add(
    run: Annotated[Path, typer.Argument(help="Finished run directory (run.json + adapter/).")],
    name: Annotated[str, typer.Option("--name", "-n", help="Model family, e.g. legal.")],
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a run's adapter as the next version of NAME (copied into the registry store).

    Example: tunesmith registry add runs/legal-lora --name legal
    """
    reg = _open(registry, create=True)
    try:
        v = reg.add(run, name)
    except RegistryError as e:
        _fail(str(e))
    same = [o.id for o in reg.versions(name) if o.id != v.id and o.lineage.get("run") == v.lineage.get("run")
            and o.lineage.get("trained") == v.lineage.get("trained")]
    if same:  # registering twice is allowed (e.g. after a new eval) but is more often a slip
        err.print(f"note: this training run is already registered as {', '.join(same)}", highlight=False)
    emit(v.to_dict(), as_json, lambda: out.print(f"registered [bold]{v.id}[/bold] from {run} (stored in {v.store})"))


def _headline(metrics: dict | None, gate: dict | None) -> str:
    """The metric the gate decided on (what a reader compares across versions), else the first few numbers."""
    if not metrics:
        return "-"
    primary = (gate or {}).get("primary_metric")
    if isinstance(metrics.get(primary), (int, float)):
        return f"{primary} {metrics[primary]:.3f}"
    return json.dumps(metrics)[:40]


@registry_app.command("list")
def registry_list(
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="Only this model family.")] = None,
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List versions and aliases.

    Example: tunesmith registry list --name legal
    """
    reg = _open(registry)
    versions, aliases = reg.versions(name), reg.aliases()
    if name:
        aliases = [a for a in aliases if a.alias.split("@")[0] == name]

    def human() -> None:
        t = Table(title=f"versions ({reg.path})")
        # The id is what every other command takes: never cut it with an ellipsis on a narrow terminal.
        t.add_column("version", no_wrap=True)
        for col in ("created", "run", "data sha256 (train)", "tuned metrics", "gate"):
            t.add_column(col)
        for v in versions:
            lin = v.lineage
            metrics = (lin.get("eval") or {}).get("metrics")
            gate = lin.get("gate")
            t.add_row(v.id + ("\n[red](files missing)[/red]" if v.missing_files() else ""),
                      v.created[:16].replace("T", " "),
                      lin.get("run_name") or lin.get("run", ""),
                      (lin.get("data_sha256", {}).get("train") or "")[:12],
                      _headline(metrics, gate),
                      ("pass" if gate.get("passed") else "fail") if isinstance(gate, dict) and "passed" in gate else "-")
        out.print(t)
        if aliases:
            ta = Table(title="aliases")
            for col in ("alias", "targets", "guard"):
                ta.add_column(col)
            for a in aliases:
                ta.add_row(a.alias, ", ".join(f"{v} ({w:.0%})" for v, w in a.targets), a.guard)
            out.print(ta)

    emit({"registry": str(reg.path),
          "versions": [{**v.to_dict(), "files_ok": not v.missing_files()} for v in versions],
          "aliases": [a.to_dict() for a in aliases]}, as_json, human)


@registry_app.command("show")
def registry_show(
    name: Annotated[str, typer.Argument(help="A version id or an alias.")],
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a version's lineage, or an alias's targets and history.

    Example: tunesmith registry show legal@prod
    """
    reg = _open(registry)
    alias = reg.find_alias(name)
    if alias is not None:
        obj = alias.to_dict()

        def human() -> None:
            out.print(f"[bold]{alias.alias}[/bold] -> " + ", ".join(f"{v} ({w:.0%})" for v, w in alias.targets)
                      + f"   guard: {alias.guard}")
            t = Table(title="history")
            for col in ("#", "at", "action", "targets"):
                t.add_column(col)
            for h in alias.history:
                t.add_row(str(h["seq"]), h["at"], h["action"], ", ".join(f"{v} ({w:.0%})" for v, w in h["targets"]))
            out.print(t)
    else:
        try:
            v = reg.version(name)
        except RegistryError as e:
            _fail(str(e))
        obj = {**v.to_dict(), "files_ok": not v.missing_files()}

        def human() -> None:
            out.print(f"[bold]{v.id}[/bold]  base: {v.base_model}  store: {v.store}"
                      + (f"  [red](missing: {', '.join(v.missing_files())})[/red]" if v.missing_files() else ""))
            t = Table(show_header=False)
            for k, val in v.lineage.items():
                if k != "rules_yaml":
                    t.add_row(k, json.dumps(val) if isinstance(val, (dict, list)) else str(val))
            out.print(t)

    emit(obj, as_json, human)


def _parse_split(items: list[str]) -> dict[str, float]:
    split: dict[str, float] = {}
    for item in items:
        vid, sep, frac = item.rpartition("=")
        try:
            split[vid] = float(frac)
        except ValueError:
            sep = ""
        if not sep or not vid:
            _fail(f"--split {item!r}: expected VERSION=FRACTION, e.g. legal-v3-20261122=0.1")
    return split


@registry_app.command("alias")
def registry_alias(
    alias: Annotated[str, typer.Argument(help="NAME@LABEL, e.g. legal@prod.")],
    version: Annotated[str, typer.Argument(help="Version that gets the remaining traffic.")],
    split: Annotated[list[str], typer.Option("--split", help="VERSION=FRACTION sent elsewhere (repeatable).")] = [],
    guard: Annotated[Optional[str], typer.Option("--guard", help=f"Rules guard: {' | '.join(GUARD_MODES)}.")] = None,
    rules: Annotated[Optional[Path], typer.Option("--rules", help="Rules file for the guard "
                                                                 "(default: the run's rules).")] = None,
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Point an alias at a version, optionally splitting traffic (canary) and guarding answers with rules.

    Example: tunesmith registry alias legal@prod legal-v2-20261122 --split legal-v3-20261123=0.1 --guard retry
    """
    from tunesmith.rules import RulesError, load_rules

    rules_yaml = None
    if rules is not None:
        try:
            rules_yaml = load_rules(rules).to_yaml()
        except RulesError as e:
            _fail(str(e))
    reg = _open(registry)
    try:
        a = reg.set_alias(alias, version, _parse_split(split), guard, rules_yaml)
    except RegistryError as e:
        _fail(str(e))
    emit(a.to_dict(), as_json,
         lambda: out.print(f"{a.alias} -> " + ", ".join(f"{v} ({w:.0%})" for v, w in a.targets) + f"  guard: {a.guard}"))


@registry_app.command("rollback")
def registry_rollback(
    alias: Annotated[str, typer.Argument(help="Alias to move back to its previous target.")],
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Point an alias back at the target it had before its last change (history is kept).

    Example: tunesmith registry rollback legal@prod
    """
    reg = _open(registry)
    try:
        a = reg.rollback(alias)
    except RegistryError as e:
        _fail(str(e))
    emit(a.to_dict(), as_json,
         lambda: out.print(f"rolled back {a.alias} -> " + ", ".join(f"{v} ({w:.0%})" for v, w in a.targets)))


@registry_app.command("remove")
def registry_remove(
    version: Annotated[str, typer.Argument(help="Version id to delete (refused while an alias uses it).")],
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete a version and its stored adapter.

    Example: tunesmith registry remove legal-v1-20261122
    """
    reg = _open(registry)
    try:
        reg.remove(version)
    except RegistryError as e:
        _fail(str(e))
    emit({"removed": version}, as_json, lambda: out.print(f"removed {version}"))
