"""What the deploy commands share: consoles, the --registry/--json options, opening the registry, naming a version."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from tunesmith.clikit import fail as _fail
from tunesmith.deploy.registry import Registry, Version

out = Console()
err = Console(stderr=True)


RegistryOpt = Annotated[
    Optional[Path],
    typer.Option("--registry", envvar="TUNESMITH_REGISTRY",
                 help="Registry database (default: ~/.cache/tunesmith/registry.db).", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print exactly one JSON object to stdout.")]


def _open(registry: Path | None, create: bool = False) -> Registry:
    # Only `registry add` may start a new database: elsewhere a mistyped --registry would silently read an
    # empty registry (and leave a stray file behind).
    if registry is not None and not create and not registry.expanduser().exists():
        _fail(f"no registry at {registry} (`tunesmith registry add RUN --name NAME --registry {registry}` creates one)")
    try:
        return Registry(registry)
    except Exception as e:  # an unreadable or foreign file given as --registry
        _fail(f"cannot open registry {registry}: {e}")
        raise


def _os_error(e: OSError, output: Path) -> str:
    # errno set: the file system refused the output; otherwise a library's OSError (e.g. a model it cannot load)
    return f"cannot write {output}: {e.strerror}" if e.errno is not None else str(e)


def _resolve_version(reg: Registry, name: str) -> Version:
    """A version id, or an alias (its main target)."""
    alias = reg.find_alias(name)
    return reg.version(alias.targets[0][0] if alias else name)
