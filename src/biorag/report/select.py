"""Which study run a report reads: a run id, a study or MLflow experiment name (its latest
run with results), or the latest study run with results in the store.

A study run that failed before any cell finished has nothing to report; asked for "the
latest", the report takes the newest run that has results and says which runs it passed
over, and why. Asked for such a run by its id, it says so instead of printing empty tables.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from biorag.errors import BioragError, did_you_mean
from biorag.tracking import keys
from biorag.tracking.read import RunRecord, StoreReader

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
SEARCH_DEPTH = 50  # study runs looked through for one with results
FINISHED = "FINISHED"


@dataclass
class Selection:
    """The parent run to report on, its cell runs with results, and what the choice passed over."""

    run: RunRecord
    cells: list[RunRecord]
    notes: list[str] = field(default_factory=list)


def has_results(cell: RunRecord) -> bool:
    """Whether a cell run logged a quality metric (with its interval): a cell that failed
    before scoring has none."""
    return any(k.endswith(keys.CI_LOW) for k in cell.metrics)


def _describe(run: RunRecord) -> str:
    return f"{run.run_id} ({run.name or 'unnamed'}, {run.status or 'status unknown'})"


def _with_results(run: RunRecord, reader: StoreReader) -> tuple[list[RunRecord], list[RunRecord]]:
    """A study run's cell runs: (those with results, those without)."""
    children = reader.children(run, keys.KIND_CELL)
    done = [c for c in children if has_results(c)]
    return done, [c for c in children if not has_results(c)]


def _partial_notes(run: RunRecord, done: list[RunRecord], empty: list[RunRecord]) -> list[str]:
    notes = []
    if run.status and run.status != FINISHED:
        notes.append(f"study run {_describe(run)} did not finish: the report covers the {len(done)} of its "
                     f"{len(done) + len(empty)} cells that logged results")
    notes += [f"cell run {_describe(c)} logged no results: left out of the report" for c in empty]
    return notes


def _latest_with_results(experiment_ids: list[str] | None, reader: StoreReader, where: str) -> Selection:
    runs = reader.newest(experiment_ids, keys.KIND_STUDY, SEARCH_DEPTH)
    if not runs:
        raise BioragError(f"no study runs in {where}; run one first: biorag experiment run study=embedded")
    passed: list[RunRecord] = []
    for run in runs:
        done, empty = _with_results(run, reader)
        if done:
            break
        passed.append(run)
    else:
        raise BioragError(f"none of the {len(runs)} newest study runs in {where} has results (the newest: "
                          f"{_describe(runs[0])}); see its MLflow run for the error, fix it and run the study again")
    notes = []
    if passed:
        newer = ", ".join(_describe(r) for r in passed)
        notes.append(f"reporting on study run {_describe(run)}, the latest with results: the newer "
                     f"{'run' if len(passed) == 1 else 'runs'} {newer} logged no results")
    return Selection(run, done, notes + _partial_notes(run, done, empty))


def select_run(target: str | None = None, reader: StoreReader | None = None) -> Selection:
    """The parent run to report on: a run id (a child's id gives its parent), a study name
    (its latest run with results), an MLflow experiment name (likewise), or — with no
    target — the latest study run with results in the store."""
    reader = reader or StoreReader()
    if target and _RUN_ID.match(target):
        run = reader.run(target)
        run = reader.run(run.parent_id) if run.parent_id else run
        done, empty = _with_results(run, reader)
        if not done and empty:
            raise BioragError(f"study run {_describe(run)} has no cell with results: its cells "
                              f"{', '.join(c.name for c in empty)} logged none; see the MLflow run for the error")
        return Selection(run, done, _partial_notes(run, done, empty))
    if target is None:
        return _latest_with_results(None, reader, f"the MLflow store {reader.uri}")
    experiment = _experiment_of(target)
    exp_id = reader.experiment_id(experiment)
    if exp_id is None:
        raise BioragError(did_you_mean(experiment, reader.experiment_names(), what="MLflow experiment")
                          + f" (store {reader.uri})")
    return _latest_with_results([exp_id], reader, f"MLflow experiment '{experiment}'")


def resolve_parent(target: str | None = None, reader: StoreReader | None = None) -> RunRecord:
    """The parent run `select_run` chooses."""
    return select_run(target, reader).run


def _experiment_of(target: str) -> str:
    """A study's MLflow experiment; anything that is not a study is taken as an experiment."""
    from biorag.config import options

    if target in options("study") or target.endswith((".yaml", ".yml")):
        from biorag.experiment.plan import load_study_config

        study = load_study_config(target)
        return study.experiment or f"biorag-{study.name}"
    return target
