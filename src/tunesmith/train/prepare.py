"""The run directory around a training run: whether to train at all, resume or start over, and when
the directory is written. Nothing is written until the data, model and trainer are ready, so a run
refused on the way (an unloadable model, bad data, a bad adapter setting) leaves no directory behind
and a refused --force leaves the finished run it would have replaced as it was."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import yaml
from rich.console import Console

from tunesmith.config import RunConfig, dump_config
from tunesmith.rundir import RunDir
from tunesmith.train.tokenize import DataError


def is_main_process() -> bool:
    """Rank 0 (or a single process): the one that writes the run directory under accelerate/torchrun."""
    return int(os.environ.get("RANK", "0")) == 0


@dataclass
class Start:
    checkpoint: Path | None  # the checkpoint a resumed run continues from
    created: bool  # the run directory did not exist: this invocation makes it, and removes it if refused


def config_changes(previous: Path, cfg: RunConfig, shown: int = 5) -> str:
    """'train.lr 0.0002 → 0.01, …' between a run dir's saved config.yaml and `cfg`; '' if equal or none saved."""
    if not previous.is_file():
        return ""
    try:
        old = yaml.safe_load(previous.read_text()) or {}
    except yaml.YAMLError:
        return ""

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    a, b = flat(old), flat(cfg.model_dump(mode="json"))
    diffs = [f"{k} {a.get(k)!r} → {b.get(k)!r}" for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]
    more = f", and {len(diffs) - shown} more" if len(diffs) > shown else ""
    return ", ".join(diffs[:shown]) + more


def prepare(cfg: RunConfig, run: RunDir, *, resume: bool, force: bool, console: Console) -> Start | None:
    """How this invocation starts the run; None when it is finished and not forced (nothing to do)."""
    changed = config_changes(run.path / "config.yaml", cfg)
    if run.finished() and not force:
        console.print(f"[green]{run.path} is already finished[/]; nothing to do (use --force to train again).")
        if changed:
            console.print(f"[yellow]warning:[/] this config differs from the finished run's: {changed}. "
                          "The finished run is kept; --force retrains it, or give the run a new name.")
        return None
    interrupted = run.last_checkpoint()
    if interrupted and not (resume or force):
        raise DataError(f"{run.path} is an interrupted run with a checkpoint at step "
                        f"{interrupted.name.rsplit('-', 1)[-1]}: --resume continues it, --force starts it over "
                        "(deleting its checkpoints)")
    checkpoint = interrupted if resume else None
    if resume and checkpoint is None:
        console.print(f"[yellow]--resume:[/] no complete checkpoint in {run.checkpoints}; starting from step 0")
    elif checkpoint and changed:
        console.print(f"[yellow]warning:[/] resuming with a config that differs from the interrupted run's: {changed}")
    return Start(checkpoint, created=not run.path.exists())


@contextmanager
def refusals_leave_nothing(run: RunDir, start: Start) -> Iterator[None]:
    """Around everything before training starts: a directory this invocation created goes if it fails
    (the Trainer itself makes checkpoints/ when it is built). A directory that was there stays."""
    try:
        yield
    except BaseException:
        if start.created and is_main_process():
            shutil.rmtree(run.path, ignore_errors=True)
        raise


def begin(cfg: RunConfig, run: RunDir, start: Start, info: dict[str, Any]) -> None:
    """Training starts now: a fresh start clears the old run's artefacts, then config.yaml and run.json."""
    main = is_main_process()
    if main and not start.checkpoint:
        run.reset()
    run.path.mkdir(parents=True, exist_ok=True)
    if main:
        run.write_text("config.yaml", dump_config(cfg))
        run.write_info(info)
        run.truncate_metrics(int(start.checkpoint.name.split("-")[-1]) if start.checkpoint else 0)
