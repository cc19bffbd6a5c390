"""The prediction cache: raw model outputs per example, appended as they are made, so a killed
run started again with the same command continues where it stopped."""

from __future__ import annotations

import os
from pathlib import Path

from biorag.atomic import RecordLog
from biorag.experiment.arms import RunConfig

CACHE_ENV = "BIORAG_CACHE_DIR"


class PredictionCache(RecordLog):
    """Raw model outputs per example, appended as they are made; the unit a killed run resumes from."""

    what = "prediction cache"


def cache_root(cfg: RunConfig) -> Path:
    return Path(cfg.cache_dir or os.environ.get(CACHE_ENV) or ".biorag-cache")


