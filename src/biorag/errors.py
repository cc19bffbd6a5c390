"""Errors that the CLI shows to the user as a message, not a traceback."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import IO, Any, get_type_hints


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


class DiskFullError(BioragError):
    """A write that ran out of space: which folder, how much it needed, how much is free."""


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


def key_line(path: str | os.PathLike, key: str) -> int | None:
    """The line of a YAML file where `key:` first appears (1-based), or None."""
    pattern = re.compile(rf"^\s*{re.escape(key)}\s*:")
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    return next((i for i, line in enumerate(lines, 1) if pattern.match(line)), None)


def check_file_name(name: str, path: Path) -> None:
    """A config option is named by its file: a `name:` that says otherwise would run (and
    log) it under another option's name."""
    if name != path.stem:
        raise ConfigError(
            f"{path}: name '{name}' differs from the file name '{path.stem}': runs and results "
            f"are named by `name:`; rename the file to {name}.yaml or set name: {path.stem} "
            "(or leave `name:` out)")


def schema_keys(schema: type, dotted: str) -> list[str]:
    """The field names at the level of `dotted` inside a dataclass schema (the keys an
    unknown key is matched against)."""
    cls: Any = schema
    for part in dotted.split(".")[:-1]:
        nxt = get_type_hints(cls).get(part) if is_dataclass(cls) else None
        if nxt is None or not is_dataclass(nxt):
            return []
        cls = nxt
    return [f.name for f in fields(cls)] if is_dataclass(cls) else []


def first_line(msg: str) -> str:
    lines = [ln for ln in msg.strip().splitlines() if ln.strip()]
    return lines[0] if lines else msg


MAX_LINE_ENV = "BIORAG_MAX_LINE_MB"
MAX_LINE_MB = 64  # one record of a JSON-lines file: a whole book fits; a file on one line does not


def max_line_bytes() -> int:
    raw = os.environ.get(MAX_LINE_ENV) or str(MAX_LINE_MB)
    try:
        return max(1, int(float(raw) * 2**20))
    except ValueError:
        raise ConfigError(f"${MAX_LINE_ENV} must be a number of megabytes, not {raw!r}") from None


def input_lines(f: IO[bytes]) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes) of each line of a binary file, read with bounded memory: a line
    longer than $BIORAG_MAX_LINE_MB (64 MB by default) is read past in blocks and given as None,
    for the reader to report (`too_long`) and go on with the next line."""
    limit = max_line_bytes()
    n = 0
    while True:
        raw = f.readline(limit + 1)
        if not raw:
            return
        n += 1
        if len(raw) <= limit or raw.endswith(b"\n"):
            yield n, raw
            continue
        while raw and not raw.endswith(b"\n"):  # the rest of the long line, a block at a time
            raw = f.readline(1 << 20)
        yield n, None


def too_long() -> str:
    return (f"line longer than {max_line_bytes() / 2**20:g} MB: not one record (a whole file on one line?). "
            f"If a record really is that long, raise ${MAX_LINE_ENV}")
