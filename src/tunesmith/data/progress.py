"""Progress bars on stderr, so `--json` output on stdout stays one clean object."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

_console = Console(stderr=True)
MIN_TOTAL = 5000  # below this a bar would only flicker


@contextmanager
def task(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """Yields `advance(n)`; shows a bar with ETA for long jobs on an interactive stderr."""
    if total < MIN_TOTAL or not _console.is_terminal:
        yield lambda n=1: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=_console, transient=True) as bar:
        tid = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(tid, n)
