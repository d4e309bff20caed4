"""Trainer callbacks: a rich progress bar with ETA and loss, and the run's metrics.jsonl."""

from __future__ import annotations

import json
import math
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import TrainerCallback


class RichProgress(TrainerCallback):
    """Optimizer steps as a progress bar with ETA; the latest train and eval loss beside it."""

    def __init__(self, console: Console | None = None, enabled: bool = True):
        self.console = console or Console(stderr=True)
        self.enabled = enabled
        self.progress: Progress | None = None
        self.task = None
        self.loss = "…"
        self.eval_loss = "—"

    def on_train_begin(self, args, state, control, **kw):
        if not self.enabled:
            return
        self.progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  val {task.fields[val]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=state.max_steps, completed=state.global_step,
                                           loss=self.loss, val=self.eval_loss)

    def on_step_end(self, args, state, control, **kw):
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step, loss=self.loss, val=self.eval_loss)

    def on_log(self, args, state, control, logs=None, **kw):
        logs = logs or {}
        if "loss" in logs:
            self.loss = f"{logs['loss']:.4f}"
        elif "train_loss" in logs and self.loss == "…":  # fewer steps than logging_steps: the run's mean at the end
            self.loss = f"{logs['train_loss']:.4f}"
        if "eval_loss" in logs:
            self.eval_loss = f"{logs['eval_loss']:.4f}"
        if self.progress is not None:
            self.progress.update(self.task, loss=self.loss, val=self.eval_loss)

    def on_train_end(self, args, state, control, **kw):
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)
            self.progress.stop()
            self.progress = None


class MetricsLog(TrainerCallback):
    """Appends every logged train/eval loss to run_dir/metrics.jsonl, one JSON object per line."""

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kw):
        if not state.is_world_process_zero or not logs:
            return
        row = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
        for key in ("loss", "eval_loss", "learning_rate", "grad_norm", "reward"):
            if key in logs and isinstance(logs[key], (int, float)) and math.isfinite(logs[key]):
                row[key] = float(logs[key])
        if len(row) > 2:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")


class OverfitWarning(TrainerCallback):
    """Warns when validation loss rises for two evals in a row while train loss keeps falling."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.evals: list[float] = []
        self.train_losses: list[float] = []
        self.warned = False

    def on_log(self, args, state, control, logs=None, **kw):
        logs = logs or {}
        if "loss" in logs:
            self.train_losses.append(logs["loss"])
        if "eval_loss" in logs:
            self.evals.append(logs["eval_loss"])
            e = self.evals
            t = self.train_losses
            if (not self.warned and len(e) >= 3 and e[-1] > e[-2] > e[-3] and len(t) >= 2 and t[-1] < t[0]):
                self.warned = True
                self.console.print(
                    f"[yellow]warning:[/] validation loss rose for two evals in a row ({e[-3]:.4f} → {e[-1]:.4f}) "
                    "while train loss fell: the model is starting to overfit. Consider fewer epochs or early stopping."
                )
