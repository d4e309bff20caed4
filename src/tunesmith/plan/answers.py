"""The advisor's answers: read from a YAML file, merged with flags, checked into AdvisorInputs.

Every problem is a UserError that names the file (and YAML line) or the answer that is wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tunesmith.errors import UserError
from tunesmith.plan.advisor import AdvisorInputs


def load_answers(path: Path) -> dict[str, Any]:
    """The file's answers, keys as the flags with underscores (`daily-volume:` is `daily_volume`)."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, not an answers file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read ({exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise UserError(f"{path}:{mark.line + 1 if mark else '?'}: not valid YAML") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of answers (task: ..., examples: ...)")
    return {k.replace("-", "_"): v for k, v in raw.items()}


def advisor_inputs(answers: dict[str, Any], source: Path | None = None) -> AdvisorInputs:
    """Checked inputs; `source` (the answers file) prefixes the message when an answer is wrong."""
    try:
        return AdvisorInputs.model_validate(answers)
    except ValidationError as exc:
        where = f"{source}: " if source else ""
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'answers'}: {e['msg']}" for e in exc.errors())
        raise UserError(f"{where}{problems}") from None
