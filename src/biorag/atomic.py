"""Write-then-rename helpers: a reader never sees a half-written file or folder."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


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


def resume_state(
    partial: Path, state_file: str, fingerprint: str, *, force: bool, what: str, **initial: Any
) -> dict[str, Any]:
    """The saved progress of an unfinished `partial` folder of these settings (`fingerprint`),
    or a fresh folder with `initial` progress when there is none, the settings differ, or
    `force`. `what` names the work in the log line ("build", "fine-tune")."""
    state_path = partial / state_file
    if partial.exists():
        try:
            state = json.loads(state_path.read_text())
        except (OSError, ValueError):
            state = {}
        if not force and state.get("fingerprint") == fingerprint:
            return state
        log.info("discarding an unfinished %s of other settings at %s", what, partial)
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    state = {"fingerprint": fingerprint, **initial}
    write_json(state_path, state)
    return state
