"""Nothing lost, nothing overwritten: artifact names that stay inside their root, one writer
per artifact (a lock file), and write-then-rename, so a reader never sees a half-written file
or folder and a swap never replaces a folder that is not the artifact it claims to be; and
append-only record logs (the prediction and retrieval caches) that a kill cannot tear."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from biorag.errors import BioragError, ConfigError, DiskFullError

log = logging.getLogger(__name__)

LOCK_TIMEOUT_ENV = "BIORAG_LOCK_TIMEOUT"  # seconds a second writer waits (default: as long as it takes)
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+=@-]*$")


def check_name(name: str, what: str, root_option: str = "") -> str:
    """An index, adapter, report or study name: one folder name inside its root. No `/`, no
    `..`, no leading `.`, not absolute; a path goes in the option made for paths
    (`root_option`, named in the message)."""
    text = str(name)
    if not _NAME.match(text) or ".." in text:
        why = ("is empty" if not text else "is a path" if "/" in text or "\\" in text or text.startswith("~")
               else "starts with '.'" if text.startswith(".") else "contains '..'" if ".." in text
               else "has characters other than letters, digits and ._+=@-")
        where = f"; to write somewhere else, set {root_option}=FOLDER" if root_option else ""
        raise ConfigError(f"{what} {text!r} {why}: give a folder name (letters, digits, ._+=@-, "
                          f"not starting with '.'){where}")
    return text


# the keys a biorag manifest of each kind has: a folder is that artifact only if its manifest
# parses and has them (a web app's manifest.json does not make a folder an index)
MANIFEST_KEYS = {
    "index": ("fingerprint", "corpus", "embedder", "index", "counts"),
    "adapter": ("fingerprint", "base_model", "lora", "train"),
}


def swap_into_place(stage: Path, final: Path, manifest: str = "manifest.json", what: str = "artifact") -> None:
    """Rename a finished folder into place; an older one is removed only afterwards, and only
    if it is the same kind of artifact (its `manifest` is biorag's, of kind `what`): a user's
    folder is never replaced."""
    old = None
    if final.exists() or final.is_symlink():
        guard_target(final, manifest, what)
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(stage, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def guard_target(final: Path, manifest: str, what: str) -> None:
    """Refuse to write over something at `final` that is not a biorag artifact of this kind."""
    kind = None
    if final.is_symlink() or not final.is_dir() or not (final / manifest).is_file():
        kind = "a link" if final.is_symlink() else "a file" if not final.is_dir() else f"a folder without {manifest}"
    else:
        try:
            data = json.loads((final / manifest).read_text())
        except (OSError, ValueError):
            data = None
        needed = MANIFEST_KEYS.get(what, ("fingerprint",))
        if not isinstance(data, dict) or any(k not in data for k in needed):
            kind = f"a folder whose {manifest} is not a biorag {what} manifest"
    if kind is not None:
        raise BioragError(
            f"refusing to replace {final}: it is {kind}, not a biorag {what}. Move it away or "
            "choose another name; biorag never deletes what it did not write."
        )


@contextmanager
def artifact_lock(target: Path, what: str) -> Iterator[None]:
    """Hold the one-writer lock of an artifact (`<target>.lock` beside it). A second writer
    says who holds it and waits (at most $BIORAG_LOCK_TIMEOUT seconds, if set)."""
    from filelock import FileLock, Timeout

    target.parent.mkdir(parents=True, exist_ok=True)
    path = target.with_name(f".{target.name}.lock")
    holder = path.with_name(path.name + ".holder")
    lock = FileLock(str(path))
    try:
        with writing(target.parent, 0, f"taking the lock of {what} {target.name}"):
            lock.acquire(timeout=0)
    except Timeout:
        who = _read_holder(holder)
        log.warning("%s %s is being written by %s; waiting for it to finish", what, target, who)
        raw = os.environ.get(LOCK_TIMEOUT_ENV) or "-1"
        try:
            limit = float(raw)
        except ValueError:
            raise ConfigError(f"${LOCK_TIMEOUT_ENV} must be a number of seconds, not {raw!r}") from None
        try:
            lock.acquire(timeout=limit)
        except Timeout:
            raise BioragError(
                f"{what} {target} is still being written by {who} after {limit:g}s "
                f"(${LOCK_TIMEOUT_ENV}); try again when it has finished"
            ) from None
    try:
        with writing(target.parent, 0, f"noting who holds the lock of {what} {target.name}", holder):
            holder.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                          "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                                          "command": _scrubbed(" ".join(sys.argv))[:500]}))
        yield
    finally:
        holder.unlink(missing_ok=True)
        lock.release()


def _scrubbed(text: str) -> str:
    from biorag.tracking.runs import scrub

    return scrub(text)


def _read_holder(holder: Path) -> str:
    try:
        h = json.loads(holder.read_text())
        return f"process {h['pid']} on {h['host']} (since {h['since']}: {h['command']})"
    except (OSError, ValueError, KeyError):
        return "another process"


def write_json(path: Path, obj: Any) -> None:
    """JSON written to a temporary file beside `path`, then renamed over it."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    text = json.dumps(obj, indent=2, default=str)
    with writing(path.parent, len(text.encode()), f"writing {path.name}", tmp):
        tmp.write_text(text)
    os.replace(tmp, path)


# a write that fails while less than this is free is taken for a full disk: numpy and pyarrow
# report a short write without ENOSPC ("1572864 requested and 1324000 written")
_FULL_MARGIN = 1 << 20
# how a C++ writer that raises RuntimeError (faiss's fwrite checks) says ENOSPC: strerror's text
NO_SPACE = "No space left on device"


@contextmanager
def writing(folder: Path, needed: int, what: str, *tmps: Path) -> Iterator[None]:
    """Around a write of about `needed` bytes into `folder` through the temporary files `tmps`:
    if it fails, the temporary files are removed (nothing half-written stays), and a full disk
    is one message saying where, how much was needed and how much is free, and that the same
    command resumes once there is space. Finished files and steps are not touched."""
    try:
        yield
    except (OSError, RuntimeError) as e:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
        if isinstance(e, RuntimeError) and NO_SPACE not in str(e):
            raise
        free = _free_bytes(folder)
        if getattr(e, "errno", None) == 28 or NO_SPACE in str(e) \
                or (free is not None and free < max(needed, _FULL_MARGIN)):
            raise DiskFullError(
                f"{folder}: no space left on the device while {what} (needed about {_mb(needed)}, "
                f"{_mb(free or 0)} free there). Nothing half-written was left and finished steps are "
                "kept: free some space and run the same command again") from None
        raise
    except BaseException:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
        raise


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _mb(n: int) -> str:
    return f"{n / 2**20:,.1f} MB"


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


class RecordLog:
    """Append-only JSONL of records keyed by their `id` (the prediction and retrieval caches):
    what a killed run resumes from.

    A kill can cut the last line short. Reading skips any line that is not a whole record
    (that example is simply redone), and the first append after a kill truncates the torn
    tail, so a kill costs at most the batch in flight, once, and the file never grows with
    broken lines. Hold `lock()` while writing: one writer per file.
    """

    what = "record log"  # what a lock held on it is called in messages

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._repaired = False

    def lock(self) -> AbstractContextManager[None]:
        return artifact_lock(self.path, self.what)

    def load(self) -> dict[str, dict[str, Any]]:
        return {rec["id"]: rec for _, rec in self.lines()}

    def lines(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """(line number, record) of every whole line."""
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

    def append(self, records: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(rec) + "\n" for rec in records)
        # a torn line a full disk leaves is cut by the next append's repair, as a kill's is
        with writing(self.path.parent, len(text.encode()), f"appending to {self.path.name}"):
            self._repair_tail()  # writes too (a newline, a truncation): under the same guard
            with self.path.open("a") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())


def _record(line: bytes) -> dict[str, Any] | None:
    """A cache line as its record, or None for a line that is not a whole record."""
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) and "id" in rec else None
