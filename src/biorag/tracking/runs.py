"""MLflow tracking: one parent run per `experiment run`, one child run per (arm, model, task).

The store defaults to MLflow's own local default under the working directory (SQLite
`./mlflow.db`, artifacts in `./mlruns/`); `MLFLOW_TRACKING_URI` points it elsewhere. Runs are
found again by a fingerprint tag, so a killed invocation started again continues its runs
instead of leaving a dangling one beside a duplicate.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from biorag.errors import BioragError
from biorag.tracking import keys

log = logging.getLogger(__name__)

MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value is 6000 characters


def tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else SQLite in the working directory (MLflow's own default)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def check_store(uri: str | None = None, timeout: float = 5.0) -> str:
    """Fail now, before any model is loaded, if the store cannot be written or reached."""
    uri = uri or tracking_uri()
    if uri.startswith(("http://", "https://")):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                if r.status != 200:
                    raise BioragError(f"MLflow server {uri} answered {r.status} on /health")
        except (urllib.error.URLError, OSError) as e:
            raise BioragError(f"MLflow server {uri} is unreachable ({e}); start it or unset MLFLOW_TRACKING_URI") from e
        return uri
    if uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
    elif uri.startswith("file:"):
        folder = Path(uri.removeprefix("file://").removeprefix("file:"))
    elif "://" in uri:  # postgresql://, databricks, ...: MLflow reports its own errors
        return uri
    else:
        folder = Path(uri)
    _check_writable(folder, uri)
    _check_writable(Path.cwd() / "mlruns" if uri.startswith("sqlite") else folder, uri)
    if uri.startswith("sqlite:///"):
        _initialise_sqlite(uri)
    return uri


_INITIALISED: set[str] = set()


def store_lock(uri: str) -> AbstractContextManager[Any]:
    """A lock around what must not run twice at once on a SQLite store (creating its tables
    or an experiment); nothing for a server, which serialises its own writes."""
    if not uri.startswith("sqlite:///"):
        return nullcontext()
    from filelock import FileLock

    return FileLock(str(_lock_folder(uri) / "store.lock"))


def invocation_lock_folder(uri: str, fallback: Path) -> Path:
    """Where the locks of experiment invocations live: beside a SQLite store (so runs that
    share a store share their locks, whatever their cache folders), else under `fallback`."""
    if uri.startswith("sqlite:///"):
        return _lock_folder(uri) / "invocations"
    return fallback / "invocations"


def _lock_folder(uri: str) -> Path:
    """One hidden folder beside a SQLite store for all its locks (`.mlflow.db.locks/`), which
    git ignores by its own .gitignore: the locks must sit with the store, which is often in a
    user's working folder, and every process using that store must find the same ones."""
    db = Path(uri.removeprefix("sqlite:///"))
    folder = db.with_name(f".{db.name}.locks")
    ignore = folder / ".gitignore"
    if not ignore.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):  # read-only or full: the locks still work, git sees them
            ignore.write_text("# biorag's locks of the MLflow store beside this folder\n*\n")
    return folder


def _set_experiment(name: str, uri: str) -> Any:
    import mlflow

    with store_lock(uri):
        return mlflow.set_experiment(name)


def _initialise_sqlite(uri: str) -> None:
    """Create (or migrate) a SQLite store once, under a lock: MLflow's table creation is not
    safe when several processes open a new store at once."""
    if uri in _INITIALISED:
        return
    import sqlite3

    db = Path(uri.removeprefix("sqlite:///"))
    if db.is_dir():
        raise BioragError(f"the MLflow store {uri} is a folder, not a SQLite file; move it away or "
                          "point MLFLOW_TRACKING_URI elsewhere")
    if db.is_file() and db.stat().st_size:
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
                con.execute("PRAGMA schema_version").fetchone()
        except sqlite3.DatabaseError as e:
            raise BioragError(f"the MLflow store {db} is not a SQLite database ({e}); move it away "
                              "or point MLFLOW_TRACKING_URI elsewhere") from None
    with store_lock(uri):
        from mlflow.tracking import MlflowClient

        MlflowClient(uri).search_experiments(max_results=1)  # creates the tables, migrates old ones
    _INITIALISED.add(uri)


def _check_writable(folder: Path, uri: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".biorag-write-check"):
            pass
    except OSError as e:
        raise BioragError(f"the MLflow store {uri} is not writable ({folder}: {e.strerror or e})") from e


def git_sha(cwd: str | Path | None = None) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True,
            text=True, timeout=5,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


_SECRETS = (
    (re.compile(r"\b(sk|pk|rk)-[A-Za-z0-9_\-]{8,}"), r"\1-***"),  # OpenAI-style keys
    (re.compile(r"\bhf_[A-Za-z0-9]{16,}"), "hf_***"),  # Hugging Face tokens
    (re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=\-]{8,}", re.IGNORECASE), r"\1 ***"),
    (re.compile(r"((?:api[_-]?key|access[_-]?token|token|secret|password|passwd|pwd|key)=)[^&\s,;'\"]+",
                re.IGNORECASE), r"\1***"),
    (re.compile(r"(://)[^/@\s:]+:[^/@\s]+@"), r"\1***@"),  # user:password@host
)


def scrub(text: str) -> str:
    """`text` with anything that looks like a credential replaced by `***`: API keys
    (`sk-…`, `hf_…`), `token=` / `key=` / `password=` values, `Bearer …`, `user:pass@` in
    URLs. Every param biorag logs goes through it (the command line, `model.base_url`)."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def as_params(flat: dict[str, Any]) -> dict[str, str]:
    out = {}
    for k, v in flat.items():
        s = scrub(json.dumps(v) if isinstance(v, list | dict) else str(v))
        out[k] = s if len(s) <= MAX_PARAM_CHARS else s[: MAX_PARAM_CHARS - 3] + "..."
    return out


@contextmanager
def _start_run(**kwargs: Any) -> Iterator[Any]:
    """mlflow.start_run, except that a run stopped by Ctrl-C or SIGTERM (KeyboardInterrupt)
    ends KILLED, not FAILED: it was stopped, nothing went wrong, and the same command resumes it."""
    import mlflow
    from mlflow.tracking import MlflowClient

    opened = None
    try:
        with mlflow.start_run(**kwargs) as run:
            opened = run.info.run_id
            yield run
    except KeyboardInterrupt:
        if opened:
            MlflowClient().set_terminated(opened, "KILLED")
        raise


class Tracker:
    """Opens (or re-opens) the parent run of one invocation and its child runs."""

    def __init__(self, experiment: str, invocation: str, uri: str | None = None) -> None:
        """`experiment`: the MLflow experiment; `invocation`: a fingerprint of the cells."""
        import mlflow

        self.uri = check_store(uri)
        mlflow.set_tracking_uri(self.uri)
        self.experiment = _set_experiment(experiment, self.uri)
        self.invocation = invocation
        self.parent_id: str | None = None

    def _find(self, filter_string: str) -> str | None:
        from mlflow.tracking import MlflowClient

        runs = MlflowClient().search_runs(
            [self.experiment.experiment_id], filter_string=filter_string, max_results=1,
            order_by=["attributes.start_time DESC"],
        )
        return runs[0].info.run_id if runs else None

    @contextmanager
    def parent(self, name: str, params: dict[str, Any], tags: dict[str, str]) -> Iterator[str]:
        import mlflow

        run_id = self._find(f"tags.`{keys.INVOCATION}` = '{self.invocation}'")
        if run_id:
            log.info("continuing MLflow run %s of this invocation", run_id)
        with _start_run(run_id=run_id, run_name=None if run_id else name) as run:
            self.parent_id = run.info.run_id
            mlflow.set_tags({**tags, keys.INVOCATION: self.invocation})
            if not run_id:
                mlflow.log_params(as_params(params))
            yield run.info.run_id

    @contextmanager
    def child(self, name: str, cell: str, params: dict[str, Any], tags: dict[str, str]) -> Iterator[str]:
        """A child run for one cell (its run id); re-opened when this cell was started before."""
        import mlflow

        run_id = self._find(f"tags.`{keys.CELL}` = '{cell}' and tags.`{keys.PARENT_RUN_ID}` = '{self.parent_id}'")
        with _start_run(run_id=run_id, run_name=None if run_id else name, nested=True) as run:
            mlflow.set_tags({**tags, keys.CELL: cell})
            if not run_id:
                mlflow.log_params(as_params(params))
            yield run.info.run_id


@contextmanager
def open_run(experiment: str, run_id: str | None = None, name: str | None = None,
             uri: str | None = None) -> Iterator[str]:
    """A run of its own (a fine-tune): re-opened by `run_id` when given; yields the run id."""
    import mlflow

    uri = check_store(uri)
    mlflow.set_tracking_uri(uri)
    _set_experiment(experiment, uri)
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else name) as run:
        yield run.info.run_id


def active_run_id() -> str | None:
    import mlflow

    run = mlflow.active_run()
    return run.info.run_id if run is not None else None


def last_logged_step(key: str) -> int:
    """The highest step at which the active run has logged `key` (0: never)."""
    import mlflow

    run = mlflow.active_run()
    if run is None:
        return 0
    history = mlflow.tracking.MlflowClient().get_metric_history(run.info.run_id, key)
    return max((m.step for m in history), default=0)


def log_params(flat: dict[str, Any]) -> None:
    import mlflow

    mlflow.log_params(as_params(flat))


def set_tags(tags: dict[str, Any]) -> None:
    import mlflow

    mlflow.set_tags({k: str(v) for k, v in tags.items()})


def log_new_params(params: dict[str, Any]) -> None:
    """Params of the active run that it does not have yet; one it has with another value (MLflow
    keeps a param's first value) becomes a tag of the same name, with a warning."""
    import mlflow
    from mlflow.tracking import MlflowClient

    run = mlflow.active_run()
    have = MlflowClient().get_run(run.info.run_id).data.params
    new = as_params({k: v for k, v in params.items() if k not in have})
    changed = {k: v for k, v in as_params(params).items() if k in have and have[k] != v}
    if new:
        mlflow.log_params(new)
    if changed:
        log.warning("params %s changed since this run was first judged; the new values are tags",
                    ", ".join(sorted(changed)))
        mlflow.set_tags(changed)


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    """Metrics of the active run; None values are left out."""
    import mlflow

    mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None}, step=step)


@contextmanager
def mlflow_writes(what: str) -> Iterator[None]:
    """Around a write into MLflow's store: a failure there (a full disk) is MLflow's, and the
    message says so, and where the store is."""
    try:
        yield
    except Exception as e:
        from mlflow.exceptions import MlflowException

        if not isinstance(e, OSError | MlflowException):
            raise
        full = getattr(e, "errno", None) == 28 or "No space left on device" in str(e)
        raise BioragError(
            f"MLflow could not write {what} into its store ({tracking_uri()}; artifacts under "
            f"./mlruns for a SQLite store): {e}. This write is MLflow's own"
            + (": the disk is full; free some space and run the same command again (finished steps "
               "are kept)" if full else "")) from None


def log_table(frame: Any, name: str) -> None:
    """A pandas table as an MLflow table artifact (shown as a table in the UI)."""
    import mlflow

    with mlflow_writes(f"the table {name}"):
        mlflow.log_table(frame, artifact_file=name)


def log_folder(folder: str | Path, artifact_path: str | None = None, run_id: str | None = None) -> None:
    """Every file of a folder as artifacts: of the active run, or of `run_id`."""
    import mlflow

    with mlflow_writes(f"the artifacts of {folder}"):
        if run_id is None:
            mlflow.log_artifacts(str(folder), artifact_path=artifact_path)
        else:
            mlflow.tracking.MlflowClient(tracking_uri()).log_artifacts(run_id, str(folder), artifact_path)


def log_json_to_run(run_id: str, obj: Any, name: str) -> None:
    """A JSON artifact onto a run that need not be active (a finished study's parent run)."""
    from mlflow.tracking import MlflowClient

    MlflowClient().log_dict(run_id, obj, name)


def log_json_artifact(obj: Any, name: str, artifact_path: str | None = None) -> None:
    import mlflow

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / name
        p.write_text(json.dumps(obj, indent=2, default=str))
        with mlflow_writes(f"the artifact {name}"):
            mlflow.log_artifact(str(p), artifact_path=artifact_path)


def log_text_artifact(text: str, name: str, artifact_path: str | None = None) -> None:
    import mlflow

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / name
        p.write_text(text)
        with mlflow_writes(f"the artifact {name}"):
            mlflow.log_artifact(str(p), artifact_path=artifact_path)
