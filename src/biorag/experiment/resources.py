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
from biorag.indexing.manifest import IndexManifest, index_root
from biorag.models.base import Generator
from biorag.models.config import ModelConfig
from biorag.retrieval.open import IndexContext, open_retriever
from biorag.retrieval.open import index_targets as targets_of
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


def index_context(cfg: RunConfig) -> IndexContext:
    """What a cell's retriever spec falls back on: its task's index and corpus, its index root."""
    return IndexContext(owner=f"arm '{cfg.arm.name}'", task=cfg.task.name, task_index=cfg.task.index,
                        task_corpus=cfg.task.corpus, root=cfg.index_root)


def index_targets(cfg: RunConfig) -> list[tuple[str, str | None]]:
    """(index name or folder, corpus to build it from or None) for each index a rag cell
    searches (`biorag.retrieval.open.index_targets`)."""
    assert cfg.arm.retriever is not None
    return targets_of(cfg.arm.retriever, index_context(cfg))


def index_root_of(cfg: RunConfig) -> Path:
    return index_root(cfg.index_root)


def cell_retriever(cfg: RunConfig) -> Retriever | None:
    """The retriever of a rag arm (building its indexes when missing), or None: closed-book."""
    spec = cfg.arm.retriever
    return open_retriever(spec, index_context(cfg)) if spec is not None and spec.retrieve else None


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


class LoadedModels:
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
    retriever = cell_retriever(cfg)
    index_manifest = retriever.index.manifest if retriever is not None else None
    adapter, adapter_manifest = resolve_adapter(cfg)
    check_adapter_items(cfg, adapter, adapter_manifest, examples)
    index_fp = index_manifest.fingerprint if index_manifest else "none"
    adapter_fp = (adapter_manifest or {}).get("fingerprint", "none") if adapter else "none"
    if adapter and adapter_fp == "none":
        adapter_fp = hashlib.sha256(str(sorted(p.stat().st_size for p in Path(adapter).iterdir())).encode()).hexdigest()[:16]
    return PreparedCell(examples, retriever, index_manifest, adapter, adapter_manifest, index_fp,
                        adapter_fp, cell_fingerprint(cfg, index_fp, adapter_fp))
