"""Helpers shared by the benchmark scripts: threads, timing, peak memory, child runs, tables.

Benchmarks print what they measure; they are scripts, not library code, so `print` is the
interface. Each measurement that reports peak memory runs in its own fresh process, because
a process's peak resident set size only ever grows.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from typing import Any

RESULT_MARK = "BENCH-RESULT "  # a child prints one line starting with this, then JSON


def cpu_count() -> int:
    """Cores this process may run on (the affinity mask, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def set_threads(n: int) -> dict[str, int]:
    """Pin torch and faiss (OpenMP) to `n` threads; returns what each reports back."""
    out: dict[str, int] = {}
    try:
        import torch

        torch.set_num_threads(n)
        out["torch"] = torch.get_num_threads()
    except ImportError:
        pass
    import faiss

    faiss.omp_set_num_threads(n)
    out["faiss"] = faiss.omp_get_max_threads()
    return out


def _proc_status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def rss_mb() -> float | None:
    """The resident set size now, MiB (Linux; None elsewhere)."""
    return _proc_status_mb("VmRSS")


def reset_peak_rss() -> float:
    """Start measuring a new peak from now (Linux: /proc/self/clear_refs, so a part of the
    run gets its own peak rather than the process's, model loading included); returns the
    resident set size now, in MiB. Elsewhere the peak stays the process's."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    now = rss_mb()
    return now if now is not None else peak_rss_mb()


def peak_rss_mb() -> float:
    """The peak resident set size since the last `reset_peak_rss` (or process start), MiB."""
    hwm = _proc_status_mb("VmHWM")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


@contextmanager
def timer(memory: bool = False) -> Iterator[dict[str, float]]:
    """`with timer() as t: ...` then `t["s"]` holds the elapsed wall-clock seconds. With
    memory=True also `t["peak_rss_mb"]`, the peak RSS inside the block (see
    `reset_peak_rss`), and `t["build_rss_mb"]`, that peak less the RSS when it began."""
    t: dict[str, float] = {}
    rss = reset_peak_rss() if memory else 0.0
    start = time.perf_counter()
    try:
        yield t
    finally:
        t["s"] = time.perf_counter() - start
        if memory:
            peak = peak_rss_mb()
            t["peak_rss_mb"], t["build_rss_mb"] = round(peak, 1), round(peak - rss, 1)


def emit(result: dict[str, Any]) -> None:
    """Hand a child's result to its parent (one marked JSON line on stdout), with the
    process's peak RSS unless the child measured its own at the end of the part it times."""
    result.setdefault("peak_rss_mb", round(peak_rss_mb(), 1))
    print(RESULT_MARK + json.dumps(result), flush=True)


def run_child(argv: Sequence[str], env: dict[str, str] | None = None,
              timeout: float | None = None) -> dict[str, Any]:
    """Run `python <argv>` in a fresh process and return the result it emitted.

    The child's stderr (progress bars, warnings) is kept and shown only when it fails. Past
    `timeout` seconds the child is killed and `subprocess.TimeoutExpired` raised.
    """
    proc = subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
        timeout=timeout,
    )
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK) :])
    sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
    raise SystemExit(f"benchmark child {' '.join(argv)} failed (exit {proc.returncode})")


def machine_line(threads: dict[str, int] | None = None) -> str:
    """One line saying where and when the figures were taken."""
    import importlib.metadata as md

    versions = []
    for dist in ("biorag", "torch", "sentence-transformers", "faiss-cpu", "llama-index-core"):
        try:
            versions.append(f"{dist} {md.version(dist)}")
        except md.PackageNotFoundError:
            continue
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    parts = [
        f"{date.today().isoformat()}",
        f"{platform.machine()} {cpu_count()} cores",
        f"load {load:.2f}",
        ", ".join(versions),
    ]
    if threads:
        parts.append("threads " + ", ".join(f"{k}={v}" for k, v in threads.items()))
    return " | ".join(parts)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table, numbers right-aligned."""
    cells = [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    numeric = [all(_is_num(r[i]) for r in rows) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        )

    out = [line(headers), line(["-" * w for w in widths])]
    out.extend(line(r) for r in cells)
    return "\n".join(out)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.3f}" if abs(v) < 1 else f"{v:.2f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)
