"""The MLflow UI over the project's store: `mlflow server` on 127.0.0.1, started and stopped
as one process group (the server's own workers included)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from biorag.errors import BioragError

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


@dataclass
class UIServer:
    """A running MLflow UI."""

    process: subprocess.Popen
    uri: str  # the tracking store it serves
    host: str
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def runs_url(self, experiment: str | None = None) -> str:
        """The runs page of an experiment (default: that of the latest study run), where the
        child runs `<arm>/<model>/<task>` are listed under their parent and can be compared."""
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.uri)
        if experiment:
            exp = client.get_experiment_by_name(experiment)
            exp_id = exp.experiment_id if exp else None
        else:
            ids = [e.experiment_id for e in client.search_experiments()]
            runs = client.search_runs(ids, "tags.`biorag.kind` = 'study'", max_results=1,
                                      order_by=["attributes.start_time DESC"]) if ids else []
            exp_id = runs[0].info.experiment_id if runs else None
        return f"{self.url}/#/experiments/{exp_id}/runs" if exp_id else f"{self.url}/#/experiments"

    def wait(self) -> None:
        """Block until the server exits or Ctrl+C."""
        with suppress(KeyboardInterrupt):
            self.process.wait()

    def stop(self, grace: float = 10.0) -> None:
        """Stop the server and every process it started (its own process group)."""
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=grace)
        with suppress(ProcessLookupError):  # workers slower to exit than the server itself
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


@contextmanager
def start_ui(uri: str, host: str = "127.0.0.1", port: int = 5000, timeout: float = 180.0,
             artifacts: str | None = None) -> Iterator[UIServer]:
    """Start `mlflow server` over `uri`, wait until it answers /health, and stop it on exit.
    `artifacts`: a folder the server keeps the artifacts of new experiments in and serves to its
    clients (`--artifacts-destination`), so they need no access to it themselves."""
    port = port or free_port(host)
    if _port_in_use(host, port):
        raise BioragError(f"port {port} on {host} is in use; choose another with --port (0: any free port)")
    log_path = Path(tempfile.mkstemp(prefix="biorag-mlflow-ui-", suffix=".log")[1])
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
           "--host", host, "--port", str(port), "--workers", "1",
           *(["--serve-artifacts", "--artifacts-destination", artifacts] if artifacts else [])]
    log.info("starting %s (log: %s)", " ".join(cmd), log_path)
    # MLflow's background job runner (GenAI scoring, trace archival) is not needed to browse
    # runs and starts about eight more processes; a user who wants it sets the variable
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
    with log_path.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
    server = UIServer(proc, uri, host, port, log_path)
    try:
        _wait_healthy(server, timeout)
        yield server
    finally:
        server.stop()


def _wait_healthy(server: UIServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{server.url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if server.process.poll() is not None or time.monotonic() > deadline:
            tail = server.log_path.read_text(errors="replace")[-2000:]
            why = "exited" if server.process.poll() is not None else f"did not answer within {timeout:.0f}s"
            raise BioragError(f"the MLflow UI {why}; its log ({server.log_path}) ends:\n{tail}")
        time.sleep(0.5)
