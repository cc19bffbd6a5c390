"""The prediction cache: raw model outputs per example, appended as they are made, so a killed
run started again with the same command continues where it stopped."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from biorag.experiment.arms import RunConfig

CACHE_ENV = "BIORAG_CACHE_DIR"


class PredictionCache:
    """Append-only JSONL of raw model outputs per example; the unit a killed run resumes from."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def load(self) -> dict[str, dict[str, Any]]:
        done: dict[str, dict[str, Any]] = {}
        if not self.path.exists():
            return done
        with self.path.open() as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # the line a kill cut short: redo that example
                    break
                done[rec["id"]] = rec
        return done

    def append(self, records: list[dict[str, Any]]) -> None:
        with self.path.open("a") as f:
            for rec in records:
                f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())


def cache_root(cfg: RunConfig) -> Path:
    return Path(cfg.cache_dir or os.environ.get(CACHE_ENV) or ".biorag-cache")


