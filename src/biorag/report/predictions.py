"""Error analysis: one cell's items as a person reads them — the item, its gold answer, the
model's answer and output, the passages that went into its prompt, and its per-item scores.

A cell is named by its child run id, or by its name (`rag/smollm2/hpo-term-mcq`) within a
study run (default: the latest with results). The items' texts come from the task as the
cell's logged config loads it, and the passages' texts from the index it searched, where
both are still on this machine; otherwise the ids are shown and a note says why.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from biorag.augment.run import is_generated
from biorag.errors import BioragError, did_you_mean
from biorag.report.compare import headline_metric
from biorag.report.study import Cell, read_study
from biorag.retrieval.evidence import EVIDENCE_IN_PROMPT, SOURCE_IN_INDEX
from biorag.tracking import keys
from biorag.tracking.read import StoreReader
from biorag.types import answer_text

log = logging.getLogger(__name__)

# --stratum NAME: (per-item score, the value that puts an item in the stratum)
STRATA = {
    "evidence": (EVIDENCE_IN_PROMPT, 1.0),  # a gold document reached the prompt
    "no-evidence": (EVIDENCE_IN_PROMPT, 0.0),  # retrieval failed
    "leaked": (SOURCE_IN_INDEX, 1.0),  # the item's own source document is in the index
    "clean": (SOURCE_IN_INDEX, 0.0),
}


@dataclass
class Passage:
    chunk_id: str
    text: str | None  # None: the index is not on this machine
    generated: bool = False  # written by the model (a RAG method), not retrieved: never evidence


@dataclass
class Item:
    """One prediction of a cell, with what it was asked and what it read."""

    id: str
    correct: float  # the cell's headline metric for this item (1/0 for accuracy; NaN: unscored)
    gold: str
    answer: str  # the parsed answer ("" when none could be read)
    output: str  # the generated text ("" when options were scored by log-likelihood)
    input: str | None = None  # the item's text; None where the task could not be loaded
    options: tuple[str, ...] = ()
    passages: list[Passage] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    option_logprobs: tuple[float, ...] = ()  # each option's log-likelihood, where they were scored
    queries: tuple[str, ...] = ()  # RAG methods: every query searched (rewrites, follow-ups)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


@dataclass
class CellItems:
    """The items of one cell that a filter kept, and what could not be shown."""

    cell: str
    run_id: str
    metric: str  # the headline metric `correct` holds
    n_total: int
    items: list[Item]
    notes: list[str] = field(default_factory=list)


def find_cell(target: str, study: str | None = None) -> Cell:
    """A cell by child run id, or by name (`arm/model/task[@protocol]`) in `study` (a study
    name, parent run id or experiment; default: the latest study run with results)."""
    if len(target) == 32 and all(c in "0123456789abcdef" for c in target):
        run = StoreReader().run(target)
        if run.tags.get(keys.KIND) == keys.KIND_CELL:
            cells = read_study(run.parent_id).cells
            return next(c for c in cells if c.run_id == target)
        raise BioragError(f"run {target} is not a cell's run: name a cell (arm/model/task) and pass "
                          f"--study {target}")
    cells = read_study(study).cells
    found = [c for c in cells if c.name == target or c.name.split("@")[0] == target]
    if not found:
        raise BioragError("no cell " + did_you_mean(target, [c.name for c in cells], what="cell")
                          + " in that study run")
    return found[0]


def cell_items(target: str, study: str | None = None, *, wrong: bool = False, stratum: str | None = None,
               metric: str | None = None) -> CellItems:
    """The items of a cell, optionally only those answered wrongly (headline metric below 1)
    and those of one retrieval stratum (`STRATA`)."""
    cell = find_cell(target, study)
    if stratum is not None and stratum not in STRATA:
        raise BioragError(f"--stratum: {did_you_mean(stratum, list(STRATA), what='stratum')}")
    metric = metric or headline_metric(cell.metrics, cell.label, cell.task_info.metrics,
                                       cell.task_info.continuation)
    notes: list[str] = []
    rows = cell.predictions
    if not rows:
        raise BioragError(f"cell {cell.name} (run {cell.run_id}) logged no {keys.PREDICTIONS_FILE}")
    if metric not in rows[0].scores:
        scored = sorted(rows[0].scores)
        raise BioragError(f"cell {cell.name} has no per-item '{metric}': " + ", ".join(scored))
    if wrong:
        rows = [r for r in rows if r.scores.get(metric, math.nan) < 1]
    if stratum is not None:
        key, value = STRATA[stratum]
        if not any(key in r.scores for r in cell.predictions):
            raise BioragError(f"cell {cell.name} has no per-item {key}: strata are for rag cells whose "
                              "items have gold evidence")
        rows = [r for r in rows if r.scores.get(key) == value]
    examples, passages = _sources(cell, [cid for r in rows for cid in r.retrieved], notes)
    items = []
    for r in rows:
        e = examples.get(r.example_id)
        items.append(Item(
            id=r.example_id, correct=r.scores.get(metric, math.nan),
            gold=answer_text(r.gold), answer=answer_text(r.parsed),
            output=r.output, input=e.input if e else None, options=e.options if e else (),
            passages=[Passage(cid, passages.get(cid)) if not is_generated(cid) else
                      Passage(cid, _written(r.generated, cid), generated=True) for cid in r.retrieved],
            scores=dict(r.scores), option_logprobs=r.option_logprobs, queries=r.queries,
        ))
    return CellItems(cell.name, cell.run_id, metric, len(cell.predictions), items, notes)


def _sources(cell: Cell, chunk_ids: list[str], notes: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The cell's examples by id and its passages' texts by chunk id, as far as this machine
    still has the task's data and the index."""
    from biorag.config import to_typed
    from biorag.experiment.arms import RunConfig

    reader = StoreReader()
    text = reader.artifact_text(reader.run(cell.run_id), keys.CONFIG_FILE)
    if text is None:
        notes.append(f"the cell logged no {keys.CONFIG_FILE}: items are shown by id")
        return {}, {}
    from omegaconf import OmegaConf

    try:
        cfg = to_typed(OmegaConf.create(text), RunConfig, where=f"{keys.CONFIG_FILE} of run {cell.run_id}")
    except BioragError as e:
        notes.append(f"{e}: items are shown by id")
        return {}, {}
    examples: dict[str, Any] = {}
    try:
        from biorag.tasks import load_examples

        examples = {e.id: e for e in load_examples(cfg.task)}
    except (BioragError, OSError) as e:
        notes.append(f"task {cfg.task.name} could not be loaded here ({e}): items are shown without their text")
    return examples, _passages(cfg, chunk_ids, notes)


def _written(generated: Sequence[str], chunk_id: str) -> str | None:
    """A generated passage's text from its id (`<prefix><item>:<n>`)."""
    try:
        n = int(chunk_id.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None
    return generated[n] if 0 <= n < len(generated) else None


def _passages(cfg: Any, chunk_ids: list[str], notes: list[str]) -> dict[str, str]:
    if cfg.arm.retriever is None or not chunk_ids:
        return {}
    from biorag.experiment.resources import index_root_of, index_targets
    from biorag.indexing.index import open_index

    out: dict[str, str] = {}
    wanted = list(dict.fromkeys(c for c in chunk_ids if not is_generated(c)))
    for name, _ in index_targets(cfg):
        try:
            index = open_index(name, index_root_of(cfg))
        except BioragError as e:
            notes.append(f"index {name} is not here ({e}): passages are shown by id")
            continue
        found = index.found_rows([c for c in wanted if c not in out])
        out.update({cid: index.chunk(row).text for cid, row in found.items()})
    return out
