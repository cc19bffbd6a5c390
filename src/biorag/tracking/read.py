"""Reading runs back from the MLflow store, as plain `RunRecord`s (for `biorag report`)."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biorag.errors import BioragError
from biorag.tracking import keys
from biorag.tracking.runs import check_store, tracking_uri


@dataclass
class RunRecord:
    """One MLflow run as data: its ids, tags, params, metrics and artifact names."""

    run_id: str
    experiment_id: str
    start_time: int
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    status: str = ""  # MLflow's: RUNNING, FINISHED, FAILED, KILLED

    @property
    def name(self) -> str:
        return self.tags.get(keys.RUN_NAME, "")

    @property
    def parent_id(self) -> str | None:
        return self.tags.get(keys.PARENT_RUN_ID)

    @property
    def kind(self) -> str | None:
        return self.tags.get(keys.KIND)


def _record(run: Any) -> RunRecord:
    return RunRecord(run.info.run_id, run.info.experiment_id, run.info.start_time or 0,
                     dict(run.data.tags), dict(run.data.params), dict(run.data.metrics),
                     run.info.status or "")


class StoreReader:
    """Look-ups in one tracking store ($MLFLOW_TRACKING_URI or ./mlflow.db by default)."""

    def __init__(self, uri: str | None = None) -> None:
        import mlflow
        from mlflow.tracking import MlflowClient

        # MLflow draws a progress bar per downloaded file; a report downloads a few per cell
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        uri = uri or tracking_uri()
        if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
            raise BioragError(f"no MLflow store at {uri.removeprefix('sqlite:///')}: run an experiment "
                              "first (biorag experiment run study=embedded), or point "
                              "MLFLOW_TRACKING_URI at your store")
        self.uri = check_store(uri)
        mlflow.set_tracking_uri(self.uri)
        self._client = MlflowClient(self.uri)
        self._tmp = tempfile.TemporaryDirectory(prefix="biorag-read-")

    def run(self, run_id: str) -> RunRecord:
        from mlflow.exceptions import MlflowException

        try:
            return _record(self._client.get_run(run_id))
        except MlflowException:
            raise BioragError(f"no run {run_id} in the MLflow store {self.uri}") from None

    def experiment_names(self) -> list[str]:
        return [e.name for e in self._client.search_experiments()]

    def experiment_id(self, name: str) -> str | None:
        exp = self._client.get_experiment_by_name(name)
        return exp.experiment_id if exp else None

    def experiment_name(self, experiment_id: str) -> str:
        return self._client.get_experiment(experiment_id).name

    def search(self, experiment_ids: list[str] | None, filter_string: str = "",
               max_results: int | None = None) -> list[RunRecord]:
        """Runs newest first, over every page (or the first `max_results`)."""
        ids = experiment_ids if experiment_ids is not None else [
            e.experiment_id for e in self._client.search_experiments()]
        if not ids:
            return []
        runs: list[RunRecord] = []
        token = None
        while True:
            page = self._client.search_runs(ids, filter_string=filter_string,
                                            max_results=max_results or 1000,
                                            order_by=["attributes.start_time DESC"], page_token=token)
            runs.extend(_record(r) for r in page)
            token = page.token
            if not token or (max_results and len(runs) >= max_results):
                return runs

    def latest(self, experiment_ids: list[str] | None, kind: str) -> RunRecord | None:
        """The newest run of a kind (`keys.KIND_STUDY`, ...)."""
        runs = self.search(experiment_ids, f"tags.`{keys.KIND}` = '{kind}'", 1)
        return runs[0] if runs else None

    def newest(self, experiment_ids: list[str] | None, kind: str, limit: int = 50) -> list[RunRecord]:
        """The newest runs of a kind, newest first (at most `limit`)."""
        return self.search(experiment_ids, f"tags.`{keys.KIND}` = '{kind}'", limit)[:limit]

    def children(self, parent: RunRecord, kind: str | None = None) -> list[RunRecord]:
        """A parent's child runs (of a kind), oldest first."""
        runs = self.search([parent.experiment_id], f"tags.`{keys.PARENT_RUN_ID}` = '{parent.run_id}'")
        runs = [r for r in runs if kind is None or r.kind == kind]
        return sorted(runs, key=lambda r: r.start_time)

    def artifact_names(self, run: RunRecord) -> list[str]:
        """The run's top-level artifacts."""
        return [a.path for a in self._client.list_artifacts(run.run_id)]

    def artifact_text(self, run: RunRecord, name: str) -> str | None:
        """A top-level artifact's text, or None when the run has no such artifact."""
        import mlflow

        if name not in {a.path for a in self._client.list_artifacts(run.run_id)}:
            return None
        path = mlflow.artifacts.download_artifacts(
            run_id=run.run_id, artifact_path=name, dst_path=str(Path(self._tmp.name) / run.run_id))
        return Path(path).read_text()
