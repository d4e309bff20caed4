"""What every `tunesmith` sub-app shares at its edge: one way to fail and one way to print a result.

A failure is `error: MESSAGE` on stderr and an exit code (2 unless told): never a traceback, and the
message printed exactly as written, because it carries file names, roles and labels the user typed
("[bold]" or "[/]" in one must print as typed, not restyle or break the line). A result is either the
human view (tables) or, with --json, exactly one JSON object on stdout, so scripts can parse it.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from tunesmith.errors import UserError

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def fail(error: str | BaseException, code: int = 2) -> NoReturn:
    """Print the message (a UserError's is file:line: field: message (hint)) to stderr and exit with `code`."""
    # soft_wrap: rich would otherwise break a long path across lines, and it would no longer be copyable
    err.print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True)
    raise typer.Exit(code)


def require_finite(**values: float | None) -> None:
    """Typer's min=0 lets inf through, which would print Infinity/NaN (not JSON) and meaningless sums."""
    for name, value in values.items():
        if value is not None and not math.isfinite(value):
            fail(f"--{name.replace('_', '-')} must be a finite number, not {value}")


@contextmanager
def user_errors(*also: type[BaseException], code: int = 2) -> Iterator[None]:
    """Inside: a UserError, or one of the `also` types (OSError for a file the library opens), ends in fail()."""
    try:
        yield
    except (UserError, *also) as e:
        fail(e, code)


def emit(result: Mapping[str, Any], as_json: bool, show: Callable[[], None]) -> None:
    """With --json, `result` as one line of JSON on stdout; otherwise `show()` prints the human view."""
    if as_json:
        # default=str: paths and dates in a result are written as the text a user would type
        sys.stdout.write(json.dumps(result, ensure_ascii=False, default=str) + "\n")
    else:
        show()
