"""Contamination audit: n-gram overlap between training or retrieval text and task items.

The method is lm-evaluation-harness' decontamination (after GPT-3): texts are lower-cased,
ASCII punctuation is deleted, words are split on whitespace, and a task item overlaps when
any of its 13-grams appears in the source. An item shorter than 13 words is matched whole
when it has at least `min_words` words (GPT-3 clamped n to 8..13 the same way); shorter
items are counted as too short to audit rather than reported clean.

`audit_texts` scans any stream of (id, text) once against every task's items, so a corpus of
millions of words is read once whatever the number of tasks.
"""

from __future__ import annotations

import logging
import string
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from biorag.corpora.training import DataConfig
from biorag.errors import ConfigError
from biorag.tasks.config import TaskConfig
from biorag.tracking import keys
from biorag.types import Example, titled

log = logging.getLogger(__name__)

FIELDS = ("input", "query", "options", "documents")
_TABLE = str.maketrans("", "", string.punctuation)
_MAX_SOURCES = 3  # source ids kept per overlapping item


@dataclass
class AuditSettings:
    """What counts as overlap, and when a warning is raised."""

    tasks: list[str] = field(default_factory=list)  # task configs audited (experiments/task/)
    ngram: int = 13  # lm-eval decontamination's n
    min_words: int = 8  # items shorter than ngram words are matched whole from this length on
    threshold: float = 0.05  # share of overlapping items above which a warning is given
    fields: list[str] = field(default_factory=lambda: ["input"])  # Example fields audited

    def __post_init__(self) -> None:
        if not 1 <= self.min_words <= self.ngram:
            raise ConfigError(f"audit: min_words must be 1..ngram ({self.ngram}), not {self.min_words}")
        unknown = [f for f in self.fields if f not in FIELDS]
        if unknown or not self.fields:
            raise ConfigError(f"audit.fields must be among {', '.join(FIELDS)}, not {self.fields}")
        if not 0 <= self.threshold <= 1:
            raise ConfigError(f"audit.threshold is a share (0..1), not {self.threshold}")


@dataclass
class AuditConfig:
    """`biorag audit`: one data set (or index) against one or more tasks; experiments/audit.yaml."""

    data: DataConfig = MISSING
    task: TaskConfig = MISSING
    # a built index (name or folder) whose chunks are audited instead of `data`; not `index`,
    # which is the config group of index types
    retrieval_index: str | None = None
    ngram: int = 13
    min_words: int = 8
    threshold: float = 0.05
    fields: list[str] = field(default_factory=lambda: ["input"])

    def settings(self) -> AuditSettings:
        return AuditSettings([], self.ngram, self.min_words, self.threshold, list(self.fields))


@dataclass
class ItemOverlap:
    """One task item found in the source: the first matching n-gram and where it was."""

    task: str
    example_id: str
    ngram: str
    sources: list[str]  # ids of the first source texts holding it
    n_sources: int


@dataclass
class TaskAudit:
    task: str
    n_items: int
    n_audited: int  # items with at least one n-gram (the others are too short)
    n_overlapping: int
    share: float  # n_overlapping / n_audited
    items: list[ItemOverlap] = field(default_factory=list)

    @property
    def n_too_short(self) -> int:
        return self.n_items - self.n_audited


@dataclass
class AuditReport:
    source: str  # what was scanned: "data hpo", "index hpo-minilm"
    source_fingerprint: str
    ngram: int
    min_words: int
    threshold: float
    n_texts: int
    n_words: int
    seconds: float
    tasks: list[TaskAudit] = field(default_factory=list)

    @property
    def over_threshold(self) -> list[TaskAudit]:
        return [t for t in self.tasks if t.share > self.threshold]

    def metrics(self, prefix: str = keys.CONTAMINATION_METRICS) -> dict[str, float]:
        """Flat figures for MLflow: `<prefix>/<task>/share` and friends."""
        out: dict[str, float] = {}
        for t in self.tasks:
            out[f"{prefix}/{t.task}/share"] = t.share
            out[f"{prefix}/{t.task}/items_overlapping"] = t.n_overlapping
            out[f"{prefix}/{t.task}/items_too_short"] = t.n_too_short
        return out

    def tags(self) -> dict[str, str]:
        """A one-task audit (a rag cell's index) as run tags: `contamination.share`, `.items`,
        `.audited`, `.ngram`. Tags, not metrics: every arm logs the same metric names, and a
        closed-book arm has no index to audit."""
        t = self.tasks[0]
        return {f"{keys.CONTAMINATION}share": f"{t.share:.4f}",
                f"{keys.CONTAMINATION}items": str(t.n_overlapping),
                f"{keys.CONTAMINATION}audited": str(t.n_audited),
                f"{keys.CONTAMINATION}ngram": str(self.ngram)}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for t, td in zip(self.tasks, d["tasks"], strict=True):
            td["n_too_short"] = t.n_too_short
        return d

    def summary(self) -> dict[str, Any]:
        """The figures without the item lists (for manifests)."""
        d = self.to_dict()
        d["tasks"] = [{k: v for k, v in t.items() if k != "items"} for t in d["tasks"]]
        return d


def normalise(text: str) -> list[str]:
    """lm-eval's janitor normalisation: lower case, punctuation deleted, whitespace split."""
    return text.lower().translate(_TABLE).split()


def _item_texts(example: Example, fields: Sequence[str]) -> list[str]:
    out = []
    for f in fields:
        value = getattr(example, f)
        if isinstance(value, tuple):
            out.extend(value)
        elif value:
            out.append(value)
    return out


class _Grams:
    """The n-grams of every task item, looked up by their first word."""

    def __init__(self, tasks: Mapping[str, Sequence[Example]], settings: AuditSettings) -> None:
        self.owners: dict[tuple[str, ...], list[tuple[str, int]]] = {}
        self.audited: dict[str, set[int]] = {name: set() for name in tasks}
        for name, examples in tasks.items():
            for i, ex in enumerate(examples):
                for text in _item_texts(ex, settings.fields):
                    for gram in _grams_of(normalise(text), settings.ngram, settings.min_words):
                        self.owners.setdefault(gram, []).append((name, i))
                        self.audited[name].add(i)
        self.lengths: dict[str, tuple[int, ...]] = {}
        by_first: dict[str, set[int]] = {}
        for gram in self.owners:
            by_first.setdefault(gram[0], set()).add(len(gram))
        self.lengths = {w: tuple(sorted(ls)) for w, ls in by_first.items()}

    def scan(self, words: list[str]) -> set[tuple[str, ...]]:
        found: set[tuple[str, ...]] = set()
        lengths, owners = self.lengths, self.owners
        n = len(words)
        for i, w in enumerate(words):
            ls = lengths.get(w)
            if ls is None:
                continue
            for k in ls:
                if i + k <= n:
                    gram = tuple(words[i : i + k])
                    if gram in owners:
                        found.add(gram)
        return found


def _grams_of(words: list[str], n: int, min_words: int) -> list[tuple[str, ...]]:
    if len(words) >= n:
        return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if len(words) >= min_words:
        return [tuple(words)]
    return []


def audit_texts(
    texts: Iterable[tuple[str, str]],
    tasks: Mapping[str, Sequence[Example]],
    settings: AuditSettings,
    *,
    source: str = "",
    source_fingerprint: str = "",
) -> AuditReport:
    """Scan (id, text) pairs once and report, per task, the items whose n-grams occur."""
    started = time.perf_counter()
    grams = _Grams(tasks, settings)
    hits: dict[tuple[str, int], tuple[str, list[str], int]] = {}  # item -> (gram, ids, count)
    n_texts = n_words = 0
    for text_id, text in texts:
        words = normalise(text)
        n_texts += 1
        n_words += len(words)
        for gram in grams.scan(words):
            for owner in grams.owners[gram]:
                first, ids, count = hits.get(owner, (" ".join(gram), [], 0))
                if len(ids) < _MAX_SOURCES and text_id not in ids:
                    ids.append(text_id)
                hits[owner] = (first, ids, count + 1)
    report = AuditReport(
        source, source_fingerprint, settings.ngram, settings.min_words, settings.threshold,
        n_texts, n_words, 0.0,
    )
    for name, examples in tasks.items():
        items = [
            ItemOverlap(name, examples[i].id, gram, ids, count)
            for (task, i), (gram, ids, count) in sorted(hits.items(), key=lambda kv: kv[0][1])
            if task == name
        ]
        audited = len(grams.audited[name])
        report.tasks.append(
            TaskAudit(name, len(examples), audited, len(items), len(items) / max(audited, 1), items)
        )
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def load_task_examples(names: Sequence[str], overrides: Sequence[str] = ()) -> dict[str, list[Example]]:
    """The items of tasks named in a config (their own YAMLs, with optional overrides)."""
    from biorag.tasks import load_examples, load_task_config

    return {name: load_examples(load_task_config(name, list(overrides))) for name in names}


def warn_if_contaminated(report: AuditReport) -> list[str]:
    """Log a warning per task above the threshold; returns the messages."""
    messages = []
    for t in report.over_threshold:
        msg = (
            f"{report.source}: {t.n_overlapping}/{t.n_audited} items of task '{t.task}' "
            f"({t.share:.1%}) share a {report.ngram}-gram with it, above the "
            f"{report.threshold:.1%} threshold; scores on this task may be inflated"
        )
        log.warning(msg)
        messages.append(msg)
    return messages


# -- indexes --------------------------------------------------------------------------------


def index_texts(path: str | Path) -> Iterable[tuple[str, str]]:
    """(chunk id, passage text) of a built index, as the prompt shows them (title first)."""
    import pyarrow.parquet as pq

    from biorag.indexing.manifest import CHUNKS_FILE

    table = pq.read_table(Path(path) / CHUNKS_FILE, columns=["id", "title", "text"])
    for cid, title, text in zip(*(table.column(c).to_pylist() for c in ("id", "title", "text")), strict=True):
        yield cid, titled(title, text)


def audit_index(
    path: str | Path, tasks: Mapping[str, Sequence[Example]], settings: AuditSettings
) -> AuditReport:
    from biorag.indexing.manifest import IndexManifest

    manifest = IndexManifest.read(path)
    return audit_texts(
        index_texts(path), tasks, settings,
        source=f"index {manifest.name}",
        source_fingerprint=manifest.fingerprint,
    )


def audit_cell_index(path: str | Path, task: str, examples: Sequence[Example]) -> AuditReport:
    """For a rag cell's run: the audit of its index against its task (logged as tags, see
    `AuditReport.tags`, and in full as contamination.json), warning when items overlap."""
    report = audit_index(path, {task: examples}, AuditSettings())
    warn_if_contaminated(report)
    return report


# -- the command --------------------------------------------------------------------------


def plan_audit(overrides: Sequence[str]) -> list[AuditConfig]:
    """One config per task: `task=a,b` sweeps as in `biorag experiment run`."""
    from biorag.config import compose, expand_sweeps, to_typed

    return [to_typed(compose("audit", combo), AuditConfig, where="audit config")
            for combo in expand_sweeps(list(overrides))]


def run_audit(overrides: Sequence[str]) -> AuditReport:
    """The overlap of one data set or index with every task the overrides name."""
    from biorag.corpora.training import data_source_fingerprint, data_texts
    from biorag.indexing.manifest import resolve_index_path
    from biorag.tasks import load_examples

    cfgs = plan_audit(overrides)
    first = cfgs[0]
    sources = {(c.data.name, c.retrieval_index, c.ngram, c.min_words, tuple(c.fields)) for c in cfgs}
    if len(sources) > 1:
        raise ConfigError("audit: sweep only the task; one data set or index per audit")
    tasks = {c.task.name: load_examples(c.task) for c in cfgs}
    if first.retrieval_index:
        path = resolve_index_path(first.retrieval_index)
        return audit_index(path, tasks, first.settings())
    return audit_texts(data_texts(first.data), tasks, first.settings(),
                       source=f"data '{first.data.name}'",
                       source_fingerprint=data_source_fingerprint(first.data))
