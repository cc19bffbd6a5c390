"""Where the CLI writes what the user sees (the library logs; it never prints).

On a terminal rich fits tables to the window, folding a long cell rather than cutting it.
Piped or redirected, nothing is cut or broken: a table prints at its natural width, one line
per row, and a line of text stays one line. A command whose output is a table takes
`--format table|md|csv|json` (`print_tables`): with md, csv and json only the tables go to
stdout, messages to stderr."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from biorag.errors import BioragError
from biorag.report.tables import Table as PlainTable
from biorag.report.tables import tables_as

FORMATS = ("table", "md", "csv", "json")
FORMAT_HELP = ("How tables are printed: table (rich), md, csv or json; with md, csv and json only the "
               "tables go to stdout, messages to stderr.")


class _Console(Console):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not self.is_terminal:
            self.soft_wrap = True  # a line of text (a command to copy) stays one line

    def print(self, *objects: Any, **kwargs: Any) -> None:
        tables = [o for o in objects if isinstance(o, Table)]
        if self.is_terminal or not tables:
            for t in tables:
                uncut(t)
            super().print(*objects, **kwargs)
            return
        # piped: at the natural width of the widest table, so no cell wraps or is cut
        natural = max(self.measure(uncut(t), options=self.options.update_width(10_000)).maximum for t in tables)
        width = self.width
        try:
            self.width = max(width, natural)
            super().print(*objects, **kwargs)
        finally:
            self.width = width


def uncut(table: Table) -> Table:
    """Fold, never truncate, every column of `table`."""
    for col in table.columns:
        col.overflow = "fold"
    return table


def rich_table(t: PlainTable, left: int = 1) -> Table:
    """A plain table for the terminal: the first `left` columns left-aligned, the rest right."""
    table = Table(title=Text(t.title), caption=Text(t.note) if t.note else None, title_justify="left",
                  caption_justify="left")
    for i, h in enumerate(t.headers):
        table.add_column(Text(h), justify="left" if i < left else "right", overflow="fold")
    for row in t.rows:
        table.add_row(*map(Text, row))  # cells are text, never markup: "[doc-1#0]" stays as it is
    return table


def check_format(fmt: str) -> Console:
    """The console that messages go to under `--format fmt` (stderr unless it is `table`)."""
    if fmt not in FORMATS:
        raise BioragError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
    return console if fmt == "table" else err_console


def print_tables(tables: Sequence[PlainTable], fmt: str, left: int = 1) -> None:
    """Tables on stdout: rich, or as Markdown, CSV or JSON (`biorag.report.tables.tables_as`)."""
    check_format(fmt)
    if fmt == "table":
        for t in tables:
            console.print(rich_table(t, left))
        return
    sys.stdout.write(tables_as(list(tables), fmt))
    sys.stdout.flush()


console = _Console()
err_console = _Console(stderr=True)
