"""The objectives `objective:` can name: each is one module here exposing OBJECTIVE (train/objective.py).

This module imports nothing of tunesmith at import time, so the config schema could take its names
from REGISTRY without an import circle."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tunesmith.train.objective import Objective

REGISTRY = {
    "sft": "tunesmith.train.objectives.sft",
    "pretrain": "tunesmith.train.objectives.pretrain",
    "dpo": "tunesmith.train.objectives.dpo",
    "grpo": "tunesmith.train.objectives.grpo",
}


def objective(name: str) -> Objective:
    """The objective called `name`; its module is imported only when a run asks for it."""
    return importlib.import_module(REGISTRY[name]).OBJECTIVE
