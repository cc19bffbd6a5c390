"""What a cell's retrieval measures (`cell_retrieval`, for the runner), and `biorag retrieval
eval`: which retriever should my rag arm use? The retrieval measures of
one or more indexes x modes x tasks, without loading a language model.

Each combination is planned as the rag arm would be (`arm=rag` with the given overrides,
the index built when missing), retrieves through the same cache as the experiment runner
(a later rag cell of the same retriever reuses it), and packs prompts with the task's
template under `context_tokens` for evidence-in-prompt, counting tokens as about four
characters each (no model tokenizer is loaded: the cell's own figure, with the model's
tokenizer, can differ slightly). Logged as one MLflow parent run with a child per
combination, `<task>/<measure>` as in rag cells, plus the TREC run and qrels files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from biorag import progress
from biorag.errors import ConfigError
from biorag.experiment.cache import cache_root
from biorag.experiment.plan import plan
from biorag.experiment.resources import cell_retriever
from biorag.retrieval.cache import CachedRetriever
from biorag.retrieval.evidence import (
    DEPTH,
    EVIDENCE_IN_PROMPT,
    RECALL_AT,
    RetrievalScores,
    doc_ranking,
    first_per_doc,
    retrieve_ranked,
    score_retrieval,
    source_in_index,
    trec_files,
)
from biorag.retrieval.spec import modes as retrieval_modes
from biorag.retrieval.spec import search_query
from biorag.scoring.metrics import MetricResult
from biorag.tracking import keys
from biorag.types import CellRecord, Example

log = logging.getLogger(__name__)

EXPERIMENT = "biorag-retrieval-eval"


@dataclass
class RetrievalRow:
    """The measures of one (index, mode, task)."""

    index: str
    mode: str
    task: str
    k: int  # passages a rag arm would put in the prompt
    queries: int
    judged: int  # queries with gold evidence
    metrics: dict[str, MetricResult] = field(default_factory=dict)
    seconds: float = 0.0  # retrieval wall time (0 when every query came from the cache)
    reused: int = 0
    run_id: str | None = None


def evaluate_retrieval(overrides: Sequence[str], modes: Sequence[str] = ("dense",),
                       recall_at: Sequence[int] = RECALL_AT, log_run: bool = True) -> list[RetrievalRow]:
    """Plan `arm=rag` cells from `overrides` (`index=` is `arm.retriever.index=`, `task=`
    sweeps), one per mode, and measure each one's retrieval."""
    bad = [m for m in modes if m not in retrieval_modes()]
    if bad:
        raise ConfigError(f"--mode: {bad[0]!r} is not one of {', '.join(retrieval_modes())}")
    mapped = [f"arm.retriever.index={o.split('=', 1)[1]}" if o.split("=", 1)[0] == "index" else o
              for o in overrides]
    if any(o.split("=", 1)[0] in ("arm", "model") for o in mapped):
        raise ConfigError("retrieval eval plans the rag arm itself and loads no model: leave out arm= and model=")
    cells = []
    for mode in modes:
        _, planned, _ = plan(["arm=rag", "model=fake", *mapped, f"arm.retriever.mode={mode}"])
        cells += planned
    depth = max(DEPTH, *recall_at)
    rows: list[RetrievalRow] = []
    files: list[dict[str, str]] = []
    from biorag.prompting import approx_tokens, build_prompt
    from biorag.tasks import load_examples

    for cfg in cells:
        spec = cfg.arm.retriever
        assert spec is not None
        examples = load_examples(cfg.task)
        retriever = CachedRetriever(cell_retriever(cfg), cache_root(cfg) / "retrieval")
        queries = [search_query(e, spec.query) for e in examples]
        t0 = time.perf_counter()
        ranked = []
        with progress.bar(f"{spec.mode} {retriever.index.name} {cfg.task.name}", total=len(examples)) as bar:
            for i in range(0, len(examples), 64):
                ranked += retrieve_ranked(retriever, examples[i:i + 64], queries[i:i + 64],
                                          max(spec.k, depth), spec.exclude)
                bar.advance(len(examples[i:i + 64]))
        seconds = time.perf_counter() - t0
        prompt_docs = []
        for e, hits in zip(examples, ranked, strict=True):
            shown = set(build_prompt(cfg.task, e, hits[: spec.k], approx_tokens).hit_ids)
            prompt_docs.append(doc_ranking([h for h in hits if h.chunk.id in shown]))
        runs = [first_per_doc((h.chunk.doc_id, h.score) for h in hits) for hits in ranked]
        scores = score_retrieval(examples, [[doc for doc, _ in run] for run in runs], prompt_docs,
                                 recall_at=recall_at, seed=cfg.seed)
        rows.append(RetrievalRow(retriever.index.name, retriever.mode, cfg.task.name, spec.k, len(examples),
                                 scores.judged, scores.metrics, seconds if retriever.searched else 0.0,
                                 retriever.reused))
        files.append(trec_files(examples, runs, retriever))
    if log_run:
        _log(rows, files, list(overrides), cells[0].experiment if any(o.startswith("experiment=") for o in overrides)
             else EXPERIMENT)
    return rows


def _log(rows: list[RetrievalRow], files: list[dict[str, str]], overrides: list[str], experiment: str) -> None:
    from biorag.tracking.runs import Tracker, log_metrics, log_text_artifact, set_tags, tracking_uri

    ident = json.dumps([overrides, [(r.index, r.mode, r.task) for r in rows]], sort_keys=True)
    tracker = Tracker(experiment, hashlib.sha256(ident.encode()).hexdigest()[:16], tracking_uri())
    params = {"overrides": " ".join(overrides) or "(none)", "modes": ",".join(sorted({r.mode for r in rows})),
              "indexes": ",".join(sorted({r.index for r in rows})), "tasks": ",".join(sorted({r.task for r in rows}))}
    with tracker.parent(f"retrieval eval:{len(rows)}", params, {keys.KIND: "retrieval-eval"}):
        for row, texts in zip(rows, files, strict=True):
            name = f"{row.mode}/{row.index}/{row.task}"
            cell = hashlib.sha256((ident + name).encode()).hexdigest()[:16]
            with tracker.child(name, cell, {"index": row.index, "mode": row.mode, "task": row.task, "k": row.k},
                               {keys.TASK: row.task, "mode": row.mode, "index": row.index}) as run_id:
                row.run_id = run_id
                metrics = {keys.metric(row.task, keys.N): row.queries,
                           keys.metric(row.task, "retrieval_judged"): row.judged,
                           keys.metric(row.task, "retrieval_seconds"): row.seconds}
                for key, m in row.metrics.items():
                    metrics |= {keys.metric(row.task, key): m.value, keys.metric(row.task, key + keys.CI_LOW): m.lo,
                                keys.metric(row.task, key + keys.CI_HIGH): m.hi}
                log_metrics(metrics)
                set_tags({keys.RETRIEVAL_CACHE: f"{row.reused} reused, {row.queries - row.reused} searched"})
                for fname, text in texts.items():
                    log_text_artifact(text, fname)


def table_columns(rows: Sequence[RetrievalRow]) -> list[str]:
    """The measure keys to show, in order: recall@k..., nDCG, MRR, evidence-in-prompt."""
    seen = list(dict.fromkeys(k for r in rows for k in r.metrics))
    return [k for k in seen if k != EVIDENCE_IN_PROMPT] + ([EVIDENCE_IN_PROMPT] if EVIDENCE_IN_PROMPT in seen else [])


def cell_retrieval(examples: Sequence[Example], records: Sequence[CellRecord],
                   retriever: CachedRetriever, seed: int) -> tuple[RetrievalScores, dict[str, str]]:
    """A rag cell's retrieval measures (with evidence-in-prompt and the source-in-index
    flag) and its TREC files {name: text}, from its prediction records."""
    if any(r.ranked is None for r in records):  # predictions cached before biorag kept rankings
        log.warning("some predictions were cached without their rankings: no retrieval measures "
                    "for this cell (clear its prediction cache to measure them)")
        return RetrievalScores(), {}
    runs = [first_per_doc((h.doc_id, h.score) for h in r.ranked or ()) for r in records]
    scores = score_retrieval(examples, [[doc for doc, _ in run] for run in runs],
                             [r.prompt_docs for r in records], seed=seed)
    leak = source_in_index(examples, retriever.index.held_docs(d for e in examples for d in e.source_docs), seed=seed)
    scores.metrics.update(leak.metrics)
    scores.per_example.update(leak.per_example)
    files = trec_files(examples, runs, retriever)
    return scores, files
