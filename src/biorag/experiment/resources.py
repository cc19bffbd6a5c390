"""What a cell needs before any model loads: its examples, its index (built when missing),
its adapter, and the fingerprint of all that; and the model, loaded once for the cells that
share it."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from biorag.errors import BioragError
from biorag.experiment.arms import RunConfig
from biorag.experiment.plan import cell_fingerprint
from biorag.indexing.manifest import IndexManifest
from biorag.models.base import Generator
from biorag.models.config import ModelConfig
from biorag.retrieval.retrievers import Retriever
from biorag.types import Example

log = logging.getLogger(__name__)


@dataclass
class PreparedCell:
    """Everything a cell needs that can fail on bad input, checked before any model loads."""

    examples: list[Example]
    retriever: Retriever | None  # None: closed-book
    index_manifest: IndexManifest | None
    adapter: str | None  # the adapter folder; None: no fine-tune
    adapter_manifest: dict[str, Any] | None
    index_fingerprint: str  # "none" without an index
    adapter_fingerprint: str  # "none" without an adapter
    fingerprint: str  # the cell's: names its prediction cache and finds its child run again


def index_targets(cfg: RunConfig) -> list[tuple[str, str | None]]:
    """(index name or folder, corpus to build it from or None) for each index a rag arm
    searches: `arm.retriever.index`, else the task's `index`, as a name, a folder, a corpus,
    or a list of these (a corpus group such as medcorp in a list standing for its parts);
    else the task's corpus: its index <corpus>-<embedder>, or the built index of that name
    when no corpus config has it."""
    from biorag.config import load_option, options
    from biorag.corpora import CorpusConfig
    from biorag.indexing.manifest import is_index

    r = cfg.arm.retriever
    assert r is not None
    suffix = "" if r.index_type == "flat" else f"-{r.index_type}"
    root, corpora = index_root_of(cfg), set(options("corpus"))
    index = r.index if r.index is not None else cfg.task.index
    if index is None:
        corpus = r.corpus or cfg.task.corpus
        if not corpus:
            raise BioragError(
                f"arm '{cfg.arm.name}' retrieves, but task '{cfg.task.name}' names no index and no "
                f"corpus: set task.index=<index> (built: {_built(root)}), task.corpus=<corpus> or "
                "arm.retriever.index=<index>"
            )
        if corpus in corpora or corpus.endswith((".yaml", ".yml")):
            return [(f"{corpus}-{r.embedder}{suffix}", corpus)]
        for name in (corpus, f"{corpus}-{r.embedder}{suffix}"):  # a built index of that name
            if is_index(root / name) or is_index(name):
                return [(name, None)]
        raise BioragError(unknown_source(cfg, corpus, [corpus, f"{corpus}-{r.embedder}{suffix}"]))
    names = [index] if isinstance(index, str) else list(index)
    out: list[tuple[str, str | None]] = []
    for name in names:
        if is_index(name) or is_index(root / name) or name not in corpora:
            out.append((name, (r.corpus or cfg.task.corpus) if len(names) == 1 else None))
            continue
        parts = load_option("corpus", name, CorpusConfig).parts if len(names) > 1 else []
        out.extend((f"{c}-{r.embedder}{suffix}", c) for c in (parts or [name]))
    return out


def unknown_source(cfg: RunConfig, corpus: str, looked_for: list[str]) -> str:
    """Why a rag cell has nothing to search: the corpus it names is no corpus config and no
    index by the names tried is built; with the indexes and corpus configs there are."""
    import difflib

    from biorag.config import options

    root = index_root_of(cfg)
    whose = f"arm '{cfg.arm.name}'" if cfg.arm.retriever and cfg.arm.retriever.corpus else f"task '{cfg.task.name}'"
    close = difflib.get_close_matches(corpus, [*_built(root, listed=True), *options("corpus")], n=3, cutoff=0.5)
    return (
        f"{whose} names corpus '{corpus}', which is no corpus config, and no index "
        f"{' or '.join(repr(n) for n in dict.fromkeys(looked_for))} is built in {root}/ (indexes there: "
        f"{_built(root)}; corpus configs: {', '.join(options('corpus'))})."
        + (f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else "")
        + f" Build it with: biorag index build corpus=jsonl-example corpus.path=FILE name={corpus}; "
        f"or name a built index with task.index=NAME"
    )


def _built(root: Path, listed: bool = False) -> Any:
    """The indexes built under `root`: a list, or (listed=False) a phrase for a message."""
    from biorag.indexing.manifest import list_indexes

    names = list_indexes(root)
    return names if listed else (", ".join(names) or "none yet")


def index_root_of(cfg: RunConfig) -> Path:
    from biorag.indexing.manifest import index_root

    return index_root(cfg.index_root)


def ensure_index(cfg: RunConfig) -> Retriever | None:
    """The retriever of a rag arm (building its indexes when missing), or None: one index, or
    several fused by RRF, then the rerank stage when the arm has one."""
    r = cfg.arm.retriever
    if r is None:
        return None
    from biorag.config import options
    from biorag.indexing.index import SEARCH_SETTINGS, SearchSettings
    from biorag.indexing.manifest import is_index
    from biorag.retrieval import open_retriever

    root = index_root_of(cfg)
    search = SearchSettings(**{k: getattr(r, k) for k in SEARCH_SETTINGS})
    members = []
    for name, corpus in index_targets(cfg):
        path = Path(name) if is_index(name) else root / name
        if not is_index(path):
            if not (r.build_if_missing and corpus):
                raise BioragError(
                    f"index '{name}' of arm '{cfg.arm.name}' does not exist in {root}/ (indexes "
                    f"there: {_built(root)}). Build it with: biorag index build corpus="
                    f"{corpus or '<corpus>'} embedder={r.embedder} index={r.index_type} name={name}"
                )
            if corpus not in options("corpus") and not corpus.endswith((".yaml", ".yml")):
                raise BioragError(unknown_source(cfg, corpus, [name]))
            from biorag.indexing.build import build_index, load_build_config

            log.info("index %s is missing: building it from corpus %s", name, corpus)
            overrides = [f"corpus={corpus}", f"embedder={r.embedder}", f"index={r.index_type}", f"name={name}"]
            if cfg.index_root:
                overrides.append(f"root={cfg.index_root}")
            build_index(load_build_config(overrides))
        members.append(open_retriever(path, r.mode, rrf_k=r.rrf_k, search=search, fetch_k=r.fetch_k))
    retriever: Retriever = members[0]
    if len(members) > 1:
        from biorag.retrieval.fusion import FusedRetriever

        retriever = FusedRetriever(members, rrf_k=r.rrf_k, fetch_k=r.fetch_k)
        log.info("arm %s fuses %d indexes (%s) by RRF, k=%d, %d fetched from each", cfg.arm.name,
                 len(members), retriever.index.name, r.rrf_k, r.fetch_k)
    if r.rerank:
        from biorag.retrieval.rerank import RerankingRetriever, load_reranker, load_reranker_config

        retriever = RerankingRetriever(retriever, load_reranker(load_reranker_config(r.rerank)), r.candidates)
    return retriever


def resolve_adapter(cfg: RunConfig) -> tuple[str | None, dict[str, Any] | None]:
    """The adapter folder of a lora arm and its manifest (None, None without an adapter)."""
    if not cfg.arm.adapter:
        return None, None
    path = Path(cfg.arm.adapter)
    if not path.is_dir():
        path = Path(cfg.adapters_dir) / cfg.arm.adapter
    if not path.is_dir():
        raise BioragError(
            f"adapter '{cfg.arm.adapter}' of arm '{cfg.arm.name}' not found (looked in "
            f"{cfg.adapters_dir}/). Train it with: biorag finetune model={cfg.model.name} name={cfg.arm.adapter}"
        )
    from biorag.finetune.adapters import check_base, read_manifest

    manifest = read_manifest(path)
    check_base(path, manifest, cfg.model, cfg.arm.name)  # another base model: error naming both
    return str(path), manifest


def check_adapter_items(cfg: RunConfig, adapter: str | None, manifest: dict[str, Any] | None,
                        examples: list[Example]) -> None:
    """A RAFT adapter must not have been trained on the cell's evaluation items."""
    if adapter and manifest:
        from biorag.finetune.adapters import check_disjoint

        check_disjoint(adapter, manifest, cfg.task.name, examples, cfg.arm.name)


class GeneratorCache:
    """Keeps the last loaded model, so cells of one model (base, rag) load it once. A backend
    whose engine serves several adapters (vllm with `enable_lora`) has `with_adapter`: the
    lora cells of that model then reuse the engine too."""

    def __init__(self, loader: Callable[[ModelConfig, str | None], Generator]) -> None:
        self._loader = loader
        self._key: tuple[str, str | None] | None = None
        self._gen: Generator | None = None

    def get(self, cfg: ModelConfig, adapter: str | None) -> Generator:
        model = json.dumps(asdict(cfg), sort_keys=True, default=str)
        if self._key == (model, adapter):
            assert self._gen is not None
            return self._gen
        switch = getattr(self._gen, "with_adapter", None)
        sibling = switch(adapter) if switch is not None and self._key and self._key[0] == model else None
        if sibling is None:
            self.close()  # free the previous model before loading the next
            sibling = self._loader(cfg, adapter)
        self._gen, self._key = sibling, (model, adapter)
        return sibling

    def close(self) -> None:
        """Release the loaded model (a vLLM engine's processes, an HTTP client)."""
        gen, self._gen, self._key = self._gen, None, None
        close = getattr(gen, "close", None)
        if close is not None:
            close()


def check_servers(cells: list[RunConfig]) -> None:
    """Every remote model's server answers and serves it (and each lora arm's adapter):
    asked before any index is built or run opened, so a dead endpoint leaves nothing behind."""
    from biorag.models.loading import preflight

    preflight([(c.model, c.arm.adapter) for c in cells])


def prepare(cfg: RunConfig) -> PreparedCell:
    """Everything a cell needs that can fail on bad input (task files, indexes, adapters),
    checked for every cell before the parent run opens or any model is loaded."""
    from biorag.tasks import load_examples

    examples = load_examples(cfg.task)
    if not examples:
        raise BioragError(f"task '{cfg.task.name}' has no examples")
    retriever = ensure_index(cfg)
    index_manifest = retriever.index.manifest if retriever is not None else None
    adapter, adapter_manifest = resolve_adapter(cfg)
    check_adapter_items(cfg, adapter, adapter_manifest, examples)
    index_fp = index_manifest.fingerprint if index_manifest else "none"
    adapter_fp = (adapter_manifest or {}).get("fingerprint", "none") if adapter else "none"
    if adapter and adapter_fp == "none":
        adapter_fp = hashlib.sha256(str(sorted(p.stat().st_size for p in Path(adapter).iterdir())).encode()).hexdigest()[:16]
    return PreparedCell(examples, retriever, index_manifest, adapter, adapter_manifest, index_fp,
                        adapter_fp, cell_fingerprint(cfg, index_fp, adapter_fp))


