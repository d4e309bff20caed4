"""What an objective is to the recipe (train/recipe.py): the records it reads, the datasets it builds
from them and the trainer it trains them with. Everything else (run directory, model, adapter,
callbacks, saving, run.json) is the recipe's and the same for every objective.

An objective is one module under train/objectives/ exposing `OBJECTIVE`, plus its line in the
registry (train/objectives/__init__.py).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from rich.console import Console

from tunesmith.config import RunConfig
from tunesmith.rundir import RunDir
from tunesmith.train.args import resolved_checkpointing, training_args
from tunesmith.train.objectives import REGISTRY
from tunesmith.train.tokenize import EncodeReport


@dataclass
class Data:
    """An objective's datasets, in whatever form its own trainer takes them."""

    train: Any
    val: Any | None = None
    report: EncodeReport | None = None  # run.json "encode"; None when the objective encodes nothing itself


@dataclass
class Setup:
    """What every objective's trainer is built from."""

    cfg: RunConfig
    run: RunDir
    model: Any  # the model to train, adapter already applied
    tokenizer: Any
    callbacks: list
    console: Console
    packing: bool  # examples may share a row (off for methods that prepend virtual tokens)

    def args(self, has_eval: bool, checkpointing: bool | None = None) -> dict[str, Any]:
        """TrainingArguments kwargs; `checkpointing` None is the plain path's own choice."""
        if checkpointing is None:
            checkpointing = resolved_checkpointing(self.cfg)
        return training_args(self.cfg, self.run, has_eval, self.model, checkpointing)


@dataclass
class Built:
    """A trainer ready to train, and what run.json records about how it runs."""

    trainer: Any
    fast_path: dict[str, Any] | None = None  # the fast path's plan and packed rows; None on the plain path


@dataclass(frozen=True)
class Objective:
    """One objective: `datasets` turns the records into Data, `trainer` builds the trainer that trains it."""

    name: str
    record_type: type  # what every data file of the run must hold (train/dataset.py enforces it)
    datasets: Callable[[RunConfig, Any, dict[str, list], Console], Data]  # (cfg, tokenizer, splits, console)
    trainer: Callable[[Setup, Data], Built]
    chat: bool = True  # the tokenizer must have a chat template
    tokens: bool = False  # Data holds tokenize.Encoded lists: examples tokenized elsewhere can stand in for files
    uses_val: bool = True  # data.val gives an eval loss


def find_objective(name: str) -> Objective:
    """The objective called `name` (train/objectives/); its module is imported only when a run asks for it."""
    return importlib.import_module(REGISTRY[name]).OBJECTIVE
