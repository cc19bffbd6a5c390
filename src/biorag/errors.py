"""Errors that the CLI shows to the user as a message, not a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class BioragError(Exception):
    """An error caused by input or configuration, with a message for the user."""


class ConfigError(BioragError):
    """A config, override or name that does not exist or does not validate."""


class InputError(BioragError):
    """Bad input data; names the file, line (or row) and field where known."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.file, self.line, self.field = file, line, field
        where = ""
        if file is not None:
            where = f"{file}:{line}" if line is not None else str(file)
        if field is not None:
            where = f"{where} field '{field}'" if where else f"field '{field}'"
        super().__init__(f"{where}: {message}" if where else message)


class IndexMismatchError(BioragError):
    """An index used with another embedder (or settings) than it was built with."""


class ContaminationError(BioragError):
    """Training items that are (or overlap) the evaluation items they must be kept apart from."""


def did_you_mean(name: str, known: Iterable[str], what: str = "name") -> str:
    """A message for an unknown name that lists the close matches and all known names."""
    known = sorted(set(known))
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    msg = f"unknown {what} '{name}'."
    if close:
        msg += f" Did you mean {' or '.join(repr(c) for c in close)}?"
    if known:
        msg += f" Known: {', '.join(known)}."
    return msg
