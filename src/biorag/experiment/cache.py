"""The prediction cache: raw model outputs per example, appended as they are made, so a killed
run started again with the same command continues where it stopped."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from biorag.atomic import RecordLog
from biorag.errors import InputError
from biorag.experiment.arms import RunConfig
from biorag.types import CellRecord

CACHE_ENV = "BIORAG_CACHE_DIR"


class PredictionCache(RecordLog):
    """Raw model outputs per example, appended as they are made; the unit a killed run resumes
    from. A cell's lines are `CellRecord`s (`load_records`, `append_records`)."""

    what = "prediction cache"

    def load_records(self) -> dict[str, CellRecord]:
        """The cell's records made so far, by example id. A whole line that is not a record
        is an error naming the file, line and field (delete the file to predict the cell again)."""
        done: dict[str, CellRecord] = {}
        for n, rec in self.lines():
            try:
                done[rec["id"]] = CellRecord.from_json(rec)
            except ValueError as e:
                raise InputError(f"not a prediction record ({e}); delete the file to predict the cell again",
                                 file=str(self.path), line=n) from None
        return done

    def append_records(self, records: Sequence[CellRecord]) -> None:
        self.append([r.to_json() for r in records])


def cache_root(cfg: RunConfig) -> Path:
    return Path(cfg.cache_dir or os.environ.get(CACHE_ENV) or ".biorag-cache")
