"""`biorag tracking serve`: an MLflow tracking server that every machine of a study reaches."""

from __future__ import annotations

import signal
import socket
import sys
from pathlib import Path

import typer

app = typer.Typer(help="The MLflow tracking store: serve it to the machines of a cluster.", no_args_is_help=True)


@app.command("serve")
def serve(
    store: str = typer.Option(None, "--backend-store-uri", help="A SQL store: sqlite:///path.db, "
                              "postgresql://...; default: MLFLOW_TRACKING_URI if it is one, else ./mlflow.db."),
    artifacts: Path = typer.Option(Path("mlartifacts"), "--artifacts", help="Folder the server keeps artifacts "
                                   "in and serves to its clients (they need no access to it)."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind: 0.0.0.0 for the machines of a cluster "
                             "(on a network you trust: MLflow has no authentication by default)."),
    port: int = typer.Option(5000, help="Port to listen on; 0 picks a free one."),
) -> None:
    """Run `mlflow server` with a SQL backend and an artifact root, and print the URI to
    export on the machine that drives a study (`launcher=ray` logs from the driver only).

    Example:

      biorag tracking serve --host 0.0.0.0 --port 5000
      export MLFLOW_TRACKING_URI=http://<this host>:5000
    """
    from biorag.cli.console import console
    from biorag.errors import BioragError
    from biorag.tracking.runs import tracking_uri
    from biorag.tracking.ui import start_ui

    uri = store or tracking_uri()
    if uri.startswith(("http://", "https://")):
        raise BioragError(f"MLFLOW_TRACKING_URI is a server already ({uri}); give the store to serve with "
                          "--backend-store-uri sqlite:///path.db")
    if "://" not in uri or uri.startswith("file:"):
        raise BioragError(f"{uri} is a file store; a server needs a SQL one: --backend-store-uri sqlite:///path.db")
    artifacts.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # TERM stops the server too
    with start_ui(uri, host=host, port=port, artifacts=str(artifacts.resolve())) as server:
        reach = socket.getfqdn() if host in ("0.0.0.0", "::") else host
        console.print(f"MLflow tracking server on {uri}, artifacts in {artifacts.resolve()}\n"
                      f"On the machine that drives a study:\n  export MLFLOW_TRACKING_URI=http://{reach}:{server.port}"
                      "\nCtrl+C stops it.", highlight=False)
        server.wait()
