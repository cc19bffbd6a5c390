"""What can be checked of planned cells without loading a model: the task's data and
template, the index a rag arm searches (or the corpus it would be built from), its reranker,
the adapter and where the model's weights are. Every problem is listed, not the first.

`biorag experiment validate` prints them; the runner can call `check_cells` before it opens
a run. A hub id or a server cannot be checked offline: that is a note, not a problem.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from biorag.errors import BioragError
from biorag.experiment.arms import RunConfig, cell_name
from biorag.tasks.config import EMBEDDED_LOADERS

FILE_CORPORA = ("jsonl", "parquet", "csv", "folder")  # corpus loaders that read `path`


@dataclass(frozen=True)
class Problem:
    """Something wrong with a cell (or, `error=False`, a note on what was not checked)."""

    cell: str  # rag/smollm2/medqa
    what: str  # task data | template | index | corpus | reranker | adapter | model
    why: str
    error: bool = True

    def __str__(self) -> str:
        return f"{self.cell}: {self.what}: {self.why}"


Found = tuple[str, str, bool]  # (what, why, error)


def check_cells(cells: Sequence[RunConfig]) -> list[Problem]:
    """Every problem (and note) of every cell; a check shared by cells runs once."""
    memo: dict[str, list[Found]] = {}
    out: list[Problem] = []
    for cfg in cells:
        name = cell_name(cfg.arm.name, cfg.model.name, cfg.task.name, cfg.task.protocol)
        for check, part in ((_task, cfg.task), (_retrieval, cfg), (_adapter, cfg), (_model, cfg.model)):
            key = f"{check.__name__}:{json.dumps(asdict(part), sort_keys=True, default=str)}"
            if key not in memo:
                memo[key] = check(part)
            out += [Problem(name, what, why, error) for what, why, error in memo[key]]
        out += [Problem(name, what, why, error) for what, why, error in _judges(cfg)]
    return out


def _judges(cfg: RunConfig) -> list[Found]:
    """The judges exist; a task that lists a judged metric has a judge to give it."""
    from biorag import registry
    from biorag.experiment.arms import cell_judges
    from biorag.judges.config import load_judge_config

    found: list[Found] = []
    names = cell_judges(cfg)
    for n in names:
        found += _guard("judge", lambda n=n: (load_judge_config(n), None)[1])
    judged = [m for m in cfg.task.metrics
              if getattr(getattr(registry.resolve("scorer", m), "info", None), "judged", False)]
    if judged and not names:
        found.append(("judge", f"task {cfg.task.name} lists {', '.join(judged)}, which a judge gives: set "
                               "judges=[NAME] (biorag ls judges) or the task's judge:", True))
    return found


def _guard(what: str, fn: Callable[[], list[Found] | None]) -> list[Found]:
    """fn's findings, or its BioragError as one problem of kind `what`."""
    try:
        return fn() or []
    except BioragError as e:
        return [(what, str(e), True)]


def _task(task) -> list[Found]:
    from biorag.prompting import check_template

    found = _guard("template", lambda: check_template(task))
    if task.shots_path and not Path(task.shots_path).expanduser().exists():
        found.append(("task data", f"task.shots_path {task.shots_path} does not exist", True))
    if task.loader in EMBEDDED_LOADERS:
        return found
    if task.path is None:
        if task.dataset and not Path(task.dataset).expanduser().exists():
            found.append(("task data", f"not checked (hub): dataset {task.dataset}", False))
        return found
    if not Path(task.path).expanduser().exists():
        return [*found, ("task data", f"task.path {task.path} does not exist (task {task.name}: set "
                         f"task.path=FILE or path: in its YAML)", True)]
    return found + _guard("task data", lambda: _task_rows(task))


def _task_rows(task) -> list[Found]:
    from biorag.tasks import Problem as RowProblem
    from biorag.tasks import load_examples

    rows: list[RowProblem] = []
    examples = load_examples(task, rows)
    if rows:
        return [("task data", f"{len(rows)} bad row(s) in {task.path}, the first: {rows[0]} (`biorag "
                 f"task validate {task.path} --task {task.name}` lists them all)", True)]
    if not examples:
        return [("task data", f"{task.path} holds no items", True)]
    return []


def _retrieval(cfg: RunConfig) -> list[Found]:
    r = cfg.arm.retriever
    if r is None or not r.retrieve:  # closed-book, or generated passages only
        return []
    from biorag.experiment.resources import index_root_of, index_targets

    found: list[Found] = []
    try:
        targets = index_targets(cfg)
    except BioragError as e:
        return [("index", str(e), True)]
    root = index_root_of(cfg)
    for name, corpus in targets:
        found += _index(cfg, name, corpus, root)
    if r.rerank:
        from biorag.retrieval.rerank import load_reranker_config

        found += _guard("reranker", lambda: load_reranker_config(r.rerank) and None)
    if r.filter == "cross-encoder":
        from biorag.retrieval.rerank import load_reranker_config

        found += _guard("filter", lambda: _cross_encoder(load_reranker_config(str(r.filter_model))))
    elif r.filter == "lm" and r.filter_model:
        from biorag.models.loading import load_model_config

        found += _guard("filter", lambda: load_model_config(r.filter_model) and None)
    return found


def _cross_encoder(cfg) -> None:
    if cfg.kind != "cross-encoder":
        raise BioragError(f"arm.retriever.filter_model={cfg.name} is an {cfg.kind} reranker; filter=cross-encoder "
                          "needs a cross-encoder config (biorag ls rerankers), or use filter=lm")


def _index(cfg: RunConfig, name: str, corpus: str | None, root: Path) -> list[Found]:
    from biorag.config import load_option, options
    from biorag.corpora import CorpusConfig
    from biorag.experiment.resources import index_context
    from biorag.indexing.manifest import is_index, list_indexes
    from biorag.retrieval.open import unknown_source

    if is_index(name) or is_index(root / name):
        return []
    r = cfg.arm.retriever
    assert r is not None
    if not (r.build_if_missing and corpus):
        return [("index", f"index '{name}' is not built in {root}/ (indexes there: "
                 f"{', '.join(list_indexes(root)) or 'none yet'}) and has no corpus to build it from: build it with "
                 f"biorag index build corpus=<corpus> name={name}", True)]
    if corpus not in options("corpus") and not corpus.endswith((".yaml", ".yml")):
        return [("index", unknown_source(r, index_context(cfg), corpus, [name]), True)]
    try:
        c = load_option("corpus", corpus, CorpusConfig)
    except BioragError as e:
        return [("corpus", str(e), True)]
    parts = [load_option("corpus", p, CorpusConfig) for p in c.parts] if c.loader == "union" else [c]
    for part in parts:
        if part.loader in FILE_CORPORA and part.path and not _exists(part.path):
            return [("corpus", f"index '{name}' is not built, and corpus '{part.name}' that would "
                     f"build it reads {part.path}, which does not exist (set corpus.path in "
                     f"experiments/corpus/{part.name}.yaml)", True)]
        if part.loader == "hf" and part.dataset and not _exists(part.dataset):
            return [("corpus", f"not checked (hub): index '{name}' is not built; corpus "
                     f"'{part.name}' reads the hub dataset {part.dataset}", False)]
    return [("index", f"'{name}' is not built yet: the run builds it from corpus '{corpus}'", False),
            *_disk(cfg, name, corpus, root)]


def _disk(cfg: RunConfig, name: str, corpus: str, root: Path) -> list[Found]:
    """The disk the build of `name` will need, against what is free under `root`."""
    from biorag.indexing.build import load_build_config
    from biorag.indexing.disk import free_space, gb, plan_build

    r = cfg.arm.retriever
    assert r is not None
    try:
        estimate = plan_build(load_build_config([f"corpus={corpus}", f"embedder={r.embedder}",
                                                 f"index={r.index_type}", f"name={name}", f"root={root}"]))
    except BioragError as e:
        return [("disk", f"index '{name}': no disk estimate ({e})", False)]
    if estimate is None:
        return [("disk", f"index '{name}': no disk estimate before corpus '{corpus}' is read", False)]
    free = free_space(root)
    short = estimate.peak_bytes > free
    return [("disk", f"index '{name}' needs about {gb(estimate.peak_bytes)} while building, {gb(free)} free in "
             f"{root}/" + (f": {gb(estimate.peak_bytes - free)} missing" if short else "")
             + f" ({estimate.describe()})", short)]


def _exists(path: str) -> bool:
    p = os.path.expanduser(path)
    return Path(p).exists() or bool(glob.glob(p))


def _adapter(cfg: RunConfig) -> list[Found]:
    from biorag.experiment.resources import resolve_adapter

    return _guard("adapter", lambda: resolve_adapter(cfg) and None)


def _model(model) -> list[Found]:
    """Where the weights are, as `biorag.models.loading.weights_location` finds them, without
    reading (or dequantising) them."""
    from biorag import registry
    from biorag.models.gguf import package_folder

    found = _guard("model", lambda: registry.target("model_backend", model.backend) and None)
    if model.backend == "fake":
        return found
    if model.backend == "openai":
        return [*found, ("model", f"not checked (server): {model.base_url or '$OPENAI_BASE_URL'} "
                         f"serving '{model.id or model.name}'", False)]
    if model.source.startswith("package:"):
        try:
            folder: Path | None = package_folder(model.source.removeprefix("package:"))
        except BioragError as e:
            return [*found, ("model", str(e), True)]
    else:
        folder = Path(model.id).expanduser() if model.id and Path(model.id).expanduser().exists() else None
    if folder is None:
        local = model.id.startswith((".", "~", "/")) or os.path.isabs(model.id) or model.id.count("/") > 1
        if not model.id:
            return [*found, ("model", f"model '{model.name}': set `id` to a hub id or a local folder", True)]
        if local:
            return [*found, ("model", f"local model folder {model.id} does not exist", True)]
        return [*found, ("model", f"not checked (hub): {model.id}", False)]
    if not folder.is_dir():
        return [*found, ("model", f"{folder} is a file; `id` must be a folder", True)]
    if model.gguf_file and not (folder / model.gguf_file).is_file():
        return [*found, ("model", f"{folder} holds no {model.gguf_file} (gguf_file)", True)]
    return found


def grouped(problems: Sequence[Problem]) -> dict[tuple[str, str], list[str]]:
    """(what, why) -> every cell it hits, in order: one line per problem, not per cell."""
    shared: dict[tuple[str, str], list[str]] = {}
    for p in problems:
        shared.setdefault((p.what, p.why), []).append(p.cell)
    return shared


def require_runnable(cells: Sequence[RunConfig]) -> None:
    """Raise one error listing every problem of `cells` (the runner calls it before anything
    is built, loaded or logged)."""
    problems = [p for p in check_cells(cells) if p.error]
    if not problems:
        return
    lines = [f"  {', '.join(names) if len(names) <= 3 else f'{names[0]} and {len(names) - 1} more cells'}: "
             f"{what}: {why}" for (what, why), names in grouped(problems).items()]
    raise BioragError(f"{len(lines)} problem(s) before anything ran (biorag experiment validate lists "
                      "them too):\n" + "\n".join(lines))
