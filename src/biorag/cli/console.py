"""Where the CLI writes what the user sees (the library logs; it never prints).

On a terminal rich fits tables to the window. Piped or redirected, nothing is cut: a table's
cells wrap (folding a word longer than its column) instead of ending in "…", the width is
$COLUMNS or wide enough for a paper's column names, and a line of text is never broken."""

from __future__ import annotations

import os
from typing import Any

from rich.console import Console
from rich.table import Table

PIPED_WIDTH = 160


class _Console(Console):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not self.is_terminal:
            self.soft_wrap = True  # a line of text (a command to copy) stays one line
            if "COLUMNS" not in os.environ:
                self.width = PIPED_WIDTH

    def print(self, *objects: Any, **kwargs: Any) -> None:
        if not self.is_terminal:
            for obj in objects:
                if isinstance(obj, Table):
                    uncut(obj)
        super().print(*objects, **kwargs)


def uncut(table: Table) -> Table:
    """Wrap, never truncate, every column of `table`."""
    for col in table.columns:
        col.overflow = "fold"
        col.no_wrap = False
    return table


console = _Console()
err_console = _Console(stderr=True)
