"""A built index opened for search: FAISS vectors (flat, HNSW, IVF-Flat, IVF-PQ; the index
itself is `biorag.indexing.faiss_index`) with its chunk store and manifest.

An index folder is self-describing: `manifest.json` says which corpus, chunking, embedder
and index settings produced it, so a search with another embedder is refused and a run can
be checked against the files alone. Row i of `chunks.parquet` is vector i of `index.faiss`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from biorag.errors import BioragError, IndexMismatchError
from biorag.indexing.chunkstore import ChunkStore, rows_in_order
from biorag.indexing.faiss_index import (
    IndexConfig,
    SearchSettings,
    open_faiss,
    set_search_params,
    to_gpu,
    want_gpu,
)
from biorag.indexing.manifest import (
    CHUNKS_FILE,
    INDEX_FILE,
    IndexManifest,
    resolve_index_path,
)
from biorag.types import Chunk

log = logging.getLogger(__name__)


class BioragIndex:
    """A built index opened for search: FAISS vectors, the chunk store and the manifest."""

    def __init__(
        self,
        path: Path,
        *,
        use_gpu: str = "auto",
        search: SearchSettings | None = None,
    ) -> None:
        self.path = Path(path)
        self.manifest = IndexManifest.read(self.path)
        self.config = IndexConfig(
            **{
                k: v
                for k, v in self.manifest.index.params.items()
                if k in IndexConfig.__dataclass_fields__
            }
        )
        # the setting the build found for this size (a recall check) replaces the configured
        # one; search-time settings given here win over both
        for key in ("k_factor", "nprobe"):
            if key in self.manifest.index.recommended:
                setattr(self.config, key, int(self.manifest.index.recommended[key]))
        for key, value in (search or SearchSettings()).given().items():
            setattr(self.config, key, value)
        self.config.use_gpu = use_gpu
        index = open_faiss(self.path / INDEX_FILE, self.config.on_disk, refine=self.config.disk_refine)
        set_search_params(index, self.config)
        self.faiss = to_gpu(index) if want_gpu(self.config) else index
        if self.manifest.index.type != "hnsw":
            set_search_params(self.faiss, self.config)
        self.chunks = ChunkStore(self.path / CHUNKS_FILE)  # read lazily, row group by row group
        if len(self.chunks) != self.faiss.ntotal:
            raise BioragError(
                f"{self.path}: {len(self.chunks)} chunks but {self.faiss.ntotal} vectors; rebuild with --force"
            )

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def fingerprint(self) -> str:
        return self.manifest.fingerprint

    @property
    def embedder(self) -> dict[str, Any]:
        return self.manifest.embedder

    def __len__(self) -> int:
        return len(self.chunks)

    def chunk(self, row: int) -> Chunk:
        return self.chunks.chunk(row)

    def found_rows(self, chunk_ids: Sequence[str]) -> dict[str, int]:
        """{chunk id: its row, the first where an id is held twice} for those of `chunk_ids` in
        the index; one pass over the id column, however many ids."""
        return {c: rows[0] for c, rows in self.chunks.rows_where("id", chunk_ids).items()}

    def rows_of(self, chunk_ids: Sequence[str]) -> list[int]:
        """The row of each chunk id (KeyError for an id the index lacks)."""
        return rows_in_order(self.found_rows(chunk_ids), chunk_ids)

    def row_of(self, chunk_id: str) -> int:
        """The row of a chunk id (KeyError when absent)."""
        return self.rows_of([chunk_id])[0]

    def held_docs(self, doc_ids: Iterable[str]) -> set[str]:
        """Those of `doc_ids` with at least one chunk in the index."""
        return set(self.chunks.rows_where("doc_id", doc_ids))

    def rows_of_docs(self, doc_ids: Iterable[str]) -> dict[str, list[int]]:
        """{document id: the rows of its chunks, in order} for those of `doc_ids` in the index."""
        return self.chunks.rows_where("doc_id", doc_ids)

    def chunk_texts(self) -> list[str]:
        return list(self.chunks.column("text"))  # a copy: the store keeps its own

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores and row numbers of the k nearest chunks for each query vector (-1: none)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.faiss.d:
            raise IndexMismatchError(
                f"query vectors have shape {vectors.shape}; index {self.name} holds {self.faiss.d}-d vectors"
            )
        return self.faiss.search(vectors, min(k, len(self)))

    def check_embedder(self, identity: dict[str, Any]) -> None:
        """Refuse an embedder other than the one the index was built with, naming both."""
        built = self.embedder
        keys = ("model", "revision", "dimension", "normalize", "query_prompt", "query_model",
                "query_revision", "query_pooling", "query_normalize", "backend")
        # fields an older manifest lacks are not compared (its queries were made the one way)
        diff = [k for k in keys if k in built and built.get(k) != identity.get(k)]
        if built.get("query_model") != identity.get("query_model"):
            raise IndexMismatchError(
                f"index '{self.name}' was built for queries encoded by "
                f"{built.get('query_model') or built.get('model')} (embedder '{built.get('name')}') but the query "
                f"embedder '{identity.get('name')}' encodes them with "
                f"{identity.get('query_model') or identity.get('model')}. Search with embedder={built.get('name')} "
                "or rebuild the index."
            )
        if diff == ["backend"]:
            raise IndexMismatchError(
                f"index '{self.name}' holds passages encoded by the {built['backend']} backend, but the "
                f"query embedder encodes with {identity.get('backend')}; search with "
                f"embedder.backend={str(built['backend']).split('-')[0]} (or auto, which follows the "
                "index), or rebuild the index"
            )
        if diff:
            raise IndexMismatchError(
                f"index '{self.name}' was built with embedder '{built.get('name')}' "
                f"({built.get('model')} @ {built.get('revision')}, dim {built.get('dimension')}) but the "
                f"query embedder is '{identity.get('name')}' ({identity.get('model')} @ "
                f"{identity.get('revision')}, dim {identity.get('dimension')}); they differ in "
                f"{', '.join(diff)}. Search with embedder={built.get('name')} or rebuild the index."
            )


def open_index(
    name_or_path: str | os.PathLike, root: str | os.PathLike | None = None, **kw: Any
) -> BioragIndex:
    return BioragIndex(resolve_index_path(name_or_path, root), **kw)
