"""The base of every config section (config.py, eval_settings.py): unknown keys are errors, not ignored."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    # `name: 2026` or `--set data.system_prompt=42` mean the text the user wrote.
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)
