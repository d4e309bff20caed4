"""The `tunesmith ui` command: checks the listening address, then serves the web app with uvicorn."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

err = Console(stderr=True)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything, so it counts as exposed
        return False


def check_host(host: str, api_key: str | None) -> str | None:
    """Why this address must not be served, or None. Anything beyond this machine needs a key."""
    if not is_loopback(host) and not api_key:
        return (f"--host {host} makes the app reachable from other machines, and it can move registry aliases; "
                "refusing to start without --api-key KEY (or bind 127.0.0.1)")
    return None


def ui(
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 7860,
    host: Annotated[str, typer.Option("--host", help="Address to bind; anything but loopback needs --api-key.")]
    = "127.0.0.1",
    runs: Annotated[Optional[list[Path]], typer.Option(
        "--runs", help="Folder of run directories (repeatable; default: ./runs).")] = None,
    registry: Annotated[Optional[Path], typer.Option("--registry", help="Registry database (default: "
                                                     "TUNESMITH_REGISTRY or the per-user cache).")] = None,
    api_key: Annotated[Optional[str], typer.Option("--api-key", envvar="TUNESMITH_UI_API_KEY",
                                                   help="Key every request must carry.")] = None,
) -> None:
    """Browse runs, evaluations and the registry in a local web app (offline, one process).

    Example: tunesmith ui --runs tunesmith-quickstart/runs
    """
    problem = check_host(host, api_key)
    if problem:
        err.print(f"[red]error:[/red] {problem}", highlight=False)
        raise typer.Exit(2)
    roots = list(runs or [Path("runs")])
    missing = [str(r) for r in roots if not r.is_dir()]
    if missing:
        err.print(f"[red]error:[/red] no folder {', '.join(missing)} (give the folder holding your run "
                  "directories with --runs)", highlight=False)
        raise typer.Exit(2)
    import uvicorn

    from tunesmith.ui.app import Settings, create_app

    app = create_app(Settings(runs=roots, registry=registry, api_key=api_key))
    err.print(f"tunesmith ui on http://{host}:{port}/  (runs: {', '.join(map(str, roots))})", highlight=False)
    uvicorn.run(app, host=host, port=port, log_level="warning")
