"""Write-then-rename helpers: a reader never sees a half-written file or folder."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any


def swap_into_place(stage: Path, final: Path) -> None:
    """Rename a finished folder into place; an older one is removed only afterwards."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(stage, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_json(path: Path, obj: Any) -> None:
    """JSON written to a temporary file beside `path`, then renamed over it."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)
