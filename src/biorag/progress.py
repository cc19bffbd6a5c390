"""Progress bars for long work. The library reports; the CLI decides whether bars show."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

_enabled = os.environ.get("BIORAG_PROGRESS", "1") != "0"


def set_enabled(enabled: bool) -> None:
    global _enabled
    _enabled = enabled


def enabled() -> bool:
    return _enabled


class _Bar:
    def __init__(self, progress: Progress | None, task_id: int | None) -> None:
        self._progress, self._task = progress, task_id

    def advance(self, n: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def update(self, *, total: int | None = None, completed: int | None = None) -> None:
        if self._progress is not None:
            self._progress.update(self._task, total=total, completed=completed)


@contextmanager
def bar(description: str, total: int | None = None, completed: int = 0) -> Iterator[_Bar]:
    """A progress bar on stderr (a no-op when disabled); `total=None` shows a spinner."""
    if not _enabled:
        yield _Bar(None, None)
        return
    progress = Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(file=sys.stderr),
        transient=False,
    )
    with progress:
        task_id = progress.add_task(description, total=total, completed=completed)
        yield _Bar(progress, task_id)


class _NoBar:
    def advance(self, n: int = 1) -> None:
        pass

    def update(self, *, total: int | None = None, completed: int | None = None) -> None:
        pass


def bar_if(description: str, total: int, show: bool) -> Any:
    """A progress bar when `show` (work that takes more than one batch); silence otherwise."""
    return bar(description, total=total) if show else nullcontext(_NoBar())


class WorkClock:
    """Time left in a list of jobs of known sizes (a study's cells, in items), from the
    seconds per item of the jobs done so far; items that cost nothing (taken from a cache)
    are left out of the rate."""

    def __init__(self, items: Sequence[int]) -> None:
        self.items, self.seconds, self.predicted = list(items), 0.0, 0

    def done(self, predicted: int, seconds: float) -> None:
        self.seconds += seconds
        self.predicted += predicted

    def remaining(self, i: int) -> str:
        """The time left for the jobs from the i-th on; empty before a rate is known."""
        if not self.predicted:
            return ""
        left = sum(self.items[i:]) * self.seconds / self.predicted
        return f" (about {duration(left)} left)"


def duration(seconds: float) -> str:
    m, s = divmod(int(seconds + 0.5), 60)
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s" if m else f"{s} s"
