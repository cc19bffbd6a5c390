"""The prediction cache: a cell's record of each example (`biorag.types.CellRecord`), appended
as it is made, so a killed run started again with the same command continues where it stopped."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from biorag.atomic import artifact_lock
from biorag.errors import InputError
from biorag.experiment.arms import RunConfig
from biorag.types import CellRecord

log = logging.getLogger(__name__)

CACHE_ENV = "BIORAG_CACHE_DIR"


class PredictionCache:
    """Append-only JSONL of one JSON object per example; the unit a killed run resumes from.

    A cell's predictions are `CellRecord`s (`load_records`, `append_records`); `load` and
    `append` take any objects with an "id" (the retrieval cache keeps its ranked lists so).

    A kill can cut the last line short. Reading skips any line that is not a whole record
    (that example is simply redone), and the first append after a kill truncates the torn
    tail, so a kill costs at most the batch in flight, once, and the file never grows with
    broken lines. Hold `lock()` while predicting: one writer per cache file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._repaired = False

    def lock(self) -> AbstractContextManager[None]:
        return artifact_lock(self.path, "prediction cache")

    def load(self) -> dict[str, dict[str, Any]]:
        return {rec["id"]: rec for _, rec in self._lines()}

    def load_records(self) -> dict[str, CellRecord]:
        """The cell's records made so far, by example id. A whole line that is not a record
        is an error naming the file, line and field (delete the file to predict the cell again)."""
        done: dict[str, CellRecord] = {}
        for n, rec in self._lines():
            try:
                done[rec["id"]] = CellRecord.from_json(rec)
            except ValueError as e:
                raise InputError(f"not a prediction record ({e}); delete the file to predict the cell again",
                                 file=str(self.path), line=n) from None
        return done

    def _lines(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """(line number, object) of every whole line."""
        if not self.path.exists():
            return
        with self.path.open("rb") as f:
            for n, line in enumerate(f, 1):
                rec = _record(line)
                if rec is None:  # a line a kill cut short: redo that example
                    log.info("%s: skipping a torn line (%d bytes)", self.path, len(line))
                    continue
                yield n, rec

    def _repair_tail(self) -> None:
        """Cut the file back to its last complete line (what a kill mid-write leaves)."""
        if self._repaired or not self.path.exists():
            return
        with self.path.open("rb+") as f:
            size = f.seek(0, os.SEEK_END)
            if size:
                f.seek(max(0, size - 1))
                if f.read(1) != b"\n":
                    f.seek(0)
                    data = f.read()
                    keep = data.rfind(b"\n") + 1
                    if _record(data[keep:]) is not None:  # whole, only its newline lost: keep it
                        f.write(b"\n")
                    else:
                        log.warning("%s: truncating a torn last line (%d bytes) left by a kill",
                                    self.path, size - keep)
                        f.truncate(keep)
                    f.flush()
                    os.fsync(f.fileno())
        self._repaired = True

    def append_records(self, records: Sequence[CellRecord]) -> None:
        self.append([r.to_json() for r in records])

    def append(self, records: Sequence[dict[str, Any]]) -> None:
        self._repair_tail()
        with self.path.open("a") as f:
            for rec in records:
                f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _record(line: bytes) -> dict[str, Any] | None:
    """A cache line as its record, or None for a line that is not a whole record."""
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) and "id" in rec else None


def cache_root(cfg: RunConfig) -> Path:
    return Path(cfg.cache_dir or os.environ.get(CACHE_ENV) or ".biorag-cache")


