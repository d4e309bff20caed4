"""The objectives `objective:` can name: each is one module here exposing OBJECTIVE (train/objective.py).

This module imports nothing: the config schema takes the objective names from REGISTRY, and
`tunesmith.train.objective.find_objective` imports an objective's module when a run asks for it."""

from __future__ import annotations

REGISTRY = {
    "sft": "tunesmith.train.objectives.sft",
    "pretrain": "tunesmith.train.objectives.pretrain",
    "dpo": "tunesmith.train.objectives.dpo",
    "grpo": "tunesmith.train.objectives.grpo",
}
