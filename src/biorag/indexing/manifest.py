"""What an index folder is: its files, where named indexes live, and `IndexManifest`, the
record of what built it (corpus fingerprint and counts, chunking, embedder, index type and
parameters, build seconds, library versions).

`IndexManifest.write(folder)` and `IndexManifest.read(folder)` round-trip `manifest.json`, as
peft's configs do, so every reader gets typed fields instead of string keys.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from biorag.atomic import write_json
from biorag.errors import BioragError, did_you_mean

INDEX_FILE = "index.faiss"
CHUNKS_FILE = "chunks.parquet"
IVFDATA_FILE = "index.ivfdata"  # the merged inverted lists of an on-disk index
MANIFEST_FILE = "manifest.json"
BM25_DIR = "bm25"
INDEX_DIR_ENV = "BIORAG_INDEX_DIR"


@dataclass
class CorpusRecord:
    """The corpus an index was built from."""

    name: str
    loader: str
    config: dict[str, Any]
    source_fingerprint: str  # of the source files (or the installed package)
    content_hash: str  # of the documents as read
    stats: dict[str, Any]


@dataclass
class FaissRecord:
    """The FAISS index: its type, its parameters as built, and how many vectors it holds."""

    type: str
    params: dict[str, Any]
    metric: str
    ntotal: int
    built_on_gpu: bool
    bm25: bool
    # the search setting the build found for this size (`biorag.indexing.tuning.recommend`):
    # {"k_factor" or "nprobe": value, "recall@10", "target_recall", "queries", "tried", "reached"}
    recommended: dict[str, Any] = field(default_factory=dict)


@dataclass
class IndexCounts:
    documents: int
    chunks: int
    skipped_empty: int = 0
    skipped_malformed: int = 0
    duplicate_ids: int = 0
    shards: int = 0
    resumed_shards: int = 0


@dataclass
class IndexManifest:
    """`manifest.json` of an index folder."""

    name: str
    fingerprint: str
    created_at: str
    corpus: CorpusRecord
    chunking: dict[str, Any]
    embedder: dict[str, Any]  # the embedder's identity (`Embedder.identity()`)
    index: FaissRecord
    counts: IndexCounts
    build_seconds: float
    embed_seconds: float
    chunks_per_second: float
    shard_size: int
    versions: dict[str, str] = field(default_factory=dict)
    files: dict[str, str | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, folder: str | os.PathLike) -> Path:
        path = Path(folder) / MANIFEST_FILE
        write_json(path, self.to_dict())
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = MANIFEST_FILE) -> IndexManifest:
        try:
            return cls(
                **{
                    **_known(cls, data),
                    "corpus": CorpusRecord(**_known(CorpusRecord, data["corpus"])),
                    "index": FaissRecord(**_known(FaissRecord, data["index"])),
                    "counts": IndexCounts(**_known(IndexCounts, data["counts"])),
                }
            )
        except (KeyError, TypeError) as e:
            raise BioragError(
                f"{where}: not a biorag index manifest ({type(e).__name__}: {e}); rebuild the "
                "index with --force"
            ) from None

    @classmethod
    def read(cls, folder: str | os.PathLike) -> IndexManifest:
        path = Path(folder) / MANIFEST_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise BioragError(f"{folder} is not an index folder (no {MANIFEST_FILE})") from None
        except ValueError as e:
            raise BioragError(f"{path}: not valid JSON ({e})") from None
        return cls.from_dict(data, str(path))


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The keys of `data` that are fields of `cls` (newer manifests may carry more)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def default_index_name(corpus: str, embedder: str, index_type: str = "flat") -> str:
    """The name an index gets when none is given, and the name an arm looks a corpus's index up
    by: `<corpus>-<embedder>`, then `-<type>` unless flat (hpo-minilm, pubmed-medcpt-ivfpq)."""
    return f"{corpus}-{embedder}" + ("" if index_type == "flat" else f"-{index_type}")


def index_root(root: str | os.PathLike | None = None) -> Path:
    """Where named indexes live: the argument, $BIORAG_INDEX_DIR, or ./indexes."""
    return Path(root or os.environ.get(INDEX_DIR_ENV) or "indexes")


def is_index(folder: str | os.PathLike) -> bool:
    return (Path(folder) / MANIFEST_FILE).is_file()


def list_indexes(root: str | os.PathLike | None = None) -> list[str]:
    base = index_root(root)
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if is_index(p))


def resolve_index_path(
    name_or_path: str | os.PathLike, root: str | os.PathLike | None = None
) -> Path:
    """An index folder from a name (under the index root) or a path; a clear error if missing."""
    p = Path(name_or_path)
    if is_index(p):
        return p
    named = index_root(root) / str(name_or_path)
    if is_index(named):
        return named
    known = list_indexes(root)
    raise BioragError(
        did_you_mean(str(name_or_path), known, what="index")
        + f" (looked in {index_root(root)}/). Build it with: biorag index build corpus=<corpus> name={name_or_path}"
    )
