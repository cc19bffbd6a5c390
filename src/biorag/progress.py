"""Progress bars for long work. The library reports; the CLI decides whether bars show."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
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
# the step of an outer bar that the work running now belongs to (see `step`)
_step: ContextVar[_Step | None] = ContextVar("biorag_progress_step", default=None)


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


class _Step:
    """`items` of an outer bar, advanced in fractions by the bars opened inside the step."""

    def __init__(self, outer: _Bar, items: int) -> None:
        self.outer, self.items, self.done = outer, items, 0.0

    def share(self, n: float) -> None:
        n = min(n, self.items - self.done)
        if n > 0:
            self.done += n
            self.outer.advance(n)


class _Inner:
    """A bar opened inside a step: its units advance the step's outer bar pro rata."""

    def __init__(self, step: _Step, total: int | None) -> None:
        self._step, self._scale = step, step.items / total if total else 0.0

    def advance(self, n: int = 1) -> None:
        self._step.share(n * self._scale)

    def update(self, *, total: int | None = None, completed: int | None = None) -> None:
        pass


@contextmanager
def step(outer: _Bar, items: int) -> Iterator[None]:
    """A step of `items` of `outer` (a runner's batch of examples). Bars the step's work
    opens (a backend's batches of requests) draw nothing themselves and move `outer` by
    their share, so it counts items as they progress rather than only at the step's end."""
    state = _Step(outer, items)
    token = _step.set(state)
    try:
        yield
    finally:
        _step.reset(token)
    state.share(items - state.done)  # what the step's work did not report


@contextmanager
def bar(description: str, total: int | None = None, completed: int = 0) -> Iterator[Any]:
    """A progress bar on stderr (a no-op when disabled); `total=None` shows a spinner."""
    inside = _step.get()
    if inside is not None:
        yield _Inner(inside, total)
        return
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
    """A progress bar when `show` (work that takes more than one batch) or inside a `step`;
    silence otherwise."""
    return bar(description, total=total) if show or _step.get() is not None else nullcontext(_NoBar())


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
