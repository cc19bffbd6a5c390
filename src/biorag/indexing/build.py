"""Streaming, resumable, atomic index builds.

Chunks are embedded in shards written to `<root>/.<name>.partial/`; a build killed at any
point and started again with the same settings skips the finished shards and ends with the
same vectors. The index folder appears (by rename) only when complete. Precomputed vectors are
not copied into shards: the shards hold their chunks, and the index reads the vectors where they
lie (`biorag.indexing.precomputed.InPlaceVectors`). Before anything is written, the disk the
build needs is estimated and compared with what is free (`biorag.indexing.disk`)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from biorag import progress
from biorag.atomic import (
    artifact_lock,
    check_name,
    guard_target,
    resume_state,
    swap_into_place,
    write_json,
    writing,
)
from biorag.corpora import CorpusConfig, open_corpus
from biorag.errors import BioragError, ConfigError, did_you_mean
from biorag.hardware import release_freed_memory
from biorag.indexing.assemble import assemble_faiss, write_index_for
from biorag.indexing.bm25 import build_bm25
from biorag.indexing.chunking import ChunkingConfig, chunk_documents, make_splitter
from biorag.indexing.disk import DiskEstimate, check_space, gb, plan_build
from biorag.indexing.embedding import EmbedderConfig, load_embedder, model_revision
from biorag.indexing.faiss_index import (
    SEARCH_SETTINGS,
    IndexConfig,
    library_versions,
    to_cpu,
    want_gpu,
)
from biorag.indexing.manifest import (
    BM25_DIR,
    CHUNKS_FILE,
    INDEX_FILE,
    IVFDATA_FILE,
    MANIFEST_FILE,
    CorpusRecord,
    FaissRecord,
    IndexCounts,
    IndexManifest,
    default_index_name,
    index_root,
    is_index,
)
from biorag.indexing.precomputed import PrecomputedVectors, VectorsConfig
from biorag.indexing.refine import REFINE_CODES_FILE, DiskRefined
from biorag.indexing.shards import (
    SHARDS_DIR,
    batched,
    encode_groups,
    merge_chunk_shards,
    shard_paths,
    write_shard,
)
from biorag.indexing.tuning import ExactTopK, query_rows, recommend
from biorag.types import Chunk, Document, titled

log = logging.getLogger(__name__)

STATE_FILE = "build-state.json"
ENGINES = ("local", "ray")
# search-time settings: changing them does not change what is built
_SEARCH_ONLY = (*SEARCH_SETTINGS, "use_gpu", "description", "target_recall")


@dataclass
class BuildConfig:
    """Everything `biorag index build` needs; composed from experiments/build.yaml."""

    name: str | None = None  # folder name under the index root; null: <corpus>-<embedder>[-<type>]
    root: str | None = None  # index root; null: $BIORAG_INDEX_DIR or ./indexes
    shard_size: int = 4096  # chunks embedded and saved per shard (the unit of resumption)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    chunking: ChunkingConfig = field(default_factory=ChunkingConfig)
    embedder: EmbedderConfig = field(default_factory=EmbedderConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    # passage vectors computed elsewhere (MedCPT's PubMed embeddings, .npy, Parquet), read
    # instead of embedding the corpus; `corpus` then only names the index's corpus
    vectors: VectorsConfig = field(default_factory=VectorsConfig)
    # local: embed in this process | ray: on Ray Data, an actor pool of the embedder
    # (biorag.indexing.ray_engine); either writes the same shards, so neither enters the fingerprint
    engine: str = "local"
    ray_workers: int | None = None  # embedding actors; null: one per GPU, else one per 2 CPUs
    ray_cpus: int | None = None  # CPUs of a local Ray (no RAY_ADDRESS); null: all
    # refuse a build whose estimated disk (biorag.indexing.disk) is more than the index root's
    # filesystem has free; false (--ignore-disk): build anyway
    check_disk: bool = True

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError("engine: " + did_you_mean(self.engine, ENGINES, what="engine"))
        for key in ("ray_workers", "ray_cpus"):
            if (value := getattr(self, key)) is not None and value < 1:
                raise ConfigError(f"{key} must be at least 1 (or null), not {value}")
        if self.shard_size < 1:
            raise ConfigError(f"shard_size must be at least 1 chunk, not {self.shard_size}")
        if self.name is not None:
            check_name(self.name, "index name", "root")

    def index_name(self) -> str:
        if self.name:
            return self.name
        return check_name(default_index_name(self.corpus.name, self.embedder.name, self.index.type),
                          "index name", "root")


@dataclass
class BuildResult:
    path: Path
    manifest: IndexManifest
    up_to_date: bool  # nothing was built: an identical index was already there
    resumed_shards: int = 0
    disk: DiskEstimate | None = None  # the estimate the build was checked against (None: not known)
    # search-time settings (nprobe, ef_search, k_factor) given to a build of an index that
    # already exists: not stored, because they are chosen per search: {key: (built, given)}
    search_settings_ignored: dict[str, tuple[Any, Any]] = field(default_factory=dict)


def search_settings_changed(manifest: IndexManifest, cfg: IndexConfig) -> dict[str, tuple[Any, Any]]:
    """Search-time settings of `cfg` that differ from the ones the index was built with."""
    built = manifest.index.params
    return {k: (built.get(k), getattr(cfg, k)) for k in SEARCH_SETTINGS
            if k in built and built.get(k) != getattr(cfg, k)}


def passage_text(chunk: Chunk, include_title: bool) -> str:
    """The text embedded and BM25-indexed for a chunk: its title first, unless already there."""
    return titled(chunk.title, chunk.text) if include_title else chunk.text


def build_fingerprint(cfg: BuildConfig, source_fingerprint: str) -> str:
    """A hash of everything that determines the built vectors and chunk store."""
    corpus = {k: v for k, v in asdict(cfg.corpus).items() if k not in ("name", "description")}
    embedder = {
        k: v
        for k, v in asdict(cfg.embedder).items()
        if k not in ("name", "description", "batch_size", "device", "dtype", "backend", "quantize")
    }
    if cfg.embedder.backend != "auto":  # a forced backend is another build; auto's is recorded
        embedder["backend"] = cfg.embedder.backend_label()
    embedder["revision"] = model_revision(cfg.embedder)
    payload = {
        "corpus": corpus,
        "source": source_fingerprint,
        "chunking": asdict(cfg.chunking),
        "embedder": embedder,
        # on_disk enters only when set, so the fingerprints of in-memory builds are unchanged
        "index": {k: v for k, v in asdict(cfg.index).items() if k not in _SEARCH_ONLY and (k != "on_disk" or v)},
        "shard_size": cfg.shard_size,
    }
    if cfg.vectors.path:  # entered only when set, so embedded builds' fingerprints are unchanged
        payload["vectors"] = {k: v for k, v in asdict(cfg.vectors).items() if k not in ("verify", "min_cosine")}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[
        :16
    ]


def build_index(
    cfg: BuildConfig,
    *,
    force: bool = False,
    on_shard_done: Callable[[int], None] | None = None,
) -> BuildResult:
    """Build (or resume, or skip) the index `cfg` describes; returns where it is.

    One build of a name at a time: a second waits for the first (and then finds its index up
    to date). A failed build that finished no shard leaves nothing behind; one that did is
    resumed by the next run of the same command."""
    root = index_root(cfg.root)
    name = cfg.index_name()
    final = root / name
    if final.exists() or final.is_symlink():
        guard_target(final, MANIFEST_FILE, "index")  # before any work: never a user's folder
    reader = PrecomputedVectors(cfg.vectors) if cfg.vectors.path else open_corpus(cfg.corpus)
    source_fingerprint = reader.source_fingerprint()
    fingerprint = build_fingerprint(cfg, source_fingerprint)
    with artifact_lock(final, "index"):
        return _build_locked(cfg, reader, fingerprint, source_fingerprint, final, force, on_shard_done)


def _build_locked(cfg: BuildConfig, reader: Any, fingerprint: str, source_fingerprint: str, final: Path,
                  force: bool, on_shard_done: Callable[[int], None] | None) -> BuildResult:
    started = time.perf_counter()
    name, root = final.name, final.parent
    if not force and is_index(final):
        manifest = IndexManifest.read(final)
        if manifest.fingerprint == fingerprint:
            log.info(
                "index %s is up to date (fingerprint %s); use --force to rebuild", name, fingerprint
            )
            return BuildResult(
                final, manifest, up_to_date=True,
                search_settings_ignored=search_settings_changed(manifest, cfg.index),
            )
        log.info("index %s exists with other settings; rebuilding", name)

    partial = root / f".{name}.partial"
    _remove_old_copies(final)
    assembled = _assembled(partial, fingerprint)
    if assembled is not None and not force:  # stopped during its finish: only the swap is left
        log.info("finishing the build of %s that was stopped after it was assembled", name)
        return _finish(partial, final, assembled, resumed=assembled.counts.shards)
    if isinstance(reader, PrecomputedVectors) and not force:
        _refuse_changed_source(reader, partial)
    estimate = plan_build(cfg)
    if estimate is not None and cfg.check_disk:
        resumed = not force and _resumable(partial, fingerprint)  # what it wrote is counted as written
        needed, free = check_space(estimate, root, partial if resumed else root / ".none")
        log.info("disk: %s; %s still to write, %s free in %s", estimate.describe(), gb(needed), gb(free), root)
    state = resume_state(
        partial, STATE_FILE, fingerprint, force=force, what="build", shards_done=0, chunks_done=0
    )
    if isinstance(reader, PrecomputedVectors):
        state.setdefault("sources", reader.file_fingerprints())
    (partial / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
    state["shards_done"] = _shards_present(partial, state["shards_done"], isinstance(reader, PrecomputedVectors))
    resumed = state["shards_done"]
    if resumed:
        log.info("resuming %s: %d shard(s) already embedded", name, resumed)
    try:
        result = _embed_and_assemble(cfg, reader, state, fingerprint, source_fingerprint, final, partial,
                                     started, on_shard_done)
        result.disk = estimate
        return result
    except BioragError:
        if state["shards_done"] == 0:  # bad input found before any work worth keeping
            shutil.rmtree(partial, ignore_errors=True)
        raise


def _embed_and_assemble(cfg: BuildConfig, reader: Any, state: dict[str, Any], fingerprint: str,
                        source_fingerprint: str, final: Path, partial: Path, started: float,
                        on_shard_done: Callable[[int], None] | None) -> BuildResult:
    name = final.name
    resumed = state["shards_done"]

    embedder = load_embedder(cfg.embedder, state.get("embedder_backend"))  # resumed: as before
    precomputed = isinstance(reader, PrecomputedVectors)
    docs_hash = hashlib.sha256()
    if precomputed:  # the vectors exist: check them against the embedder before writing any
        reader.check(embedder)
        if "verified" not in state:
            state["verified"] = reader.verify(embedder, cfg.chunking.include_title)

    embed_started = time.perf_counter()
    n_chunks = 0
    what = "reading vectors of" if precomputed else "embedding"
    with progress.bar(f"{what} {name}", total=reader.rows if precomputed else None) as bar:
        if precomputed:  # the shards hold the chunks; the vectors are read in place when assembling
            source = reader.chunk_shards(cfg.shard_size, state["shards_done"], bar)
        else:
            chunks = chunk_documents(_hashing(iter(reader), docs_hash),
                                     make_splitter(cfg.chunking, embedder.token_ids))
            if cfg.engine == "ray":
                from biorag.indexing import ray_engine

                source = ray_engine.embedded_shards(cfg, embedder, chunks, state["shards_done"], bar)
            else:
                source = _embedded_shards(cfg, embedder, chunks, state["shards_done"], bar)
        for shard_no, (count, shard, vectors) in enumerate(source):
            n_chunks += count
            if shard is None:  # written by an earlier run
                continue
            write_shard(partial, shard_no, shard, vectors)  # vectors None: chunks only
            del shard, vectors
            release_freed_memory()
            state["shards_done"] = shard_no + 1
            state["embedder_backend"] = embedder.backend_label
            state["chunks_done"] = n_chunks
            write_json(partial / STATE_FILE, state)
            if on_shard_done is not None:
                on_shard_done(shard_no)
    content_hash = source_fingerprint if precomputed else docs_hash.hexdigest()[:16]
    embed_seconds = time.perf_counter() - embed_started
    n_shards = state["shards_done"]
    if n_chunks == 0:
        raise BioragError(
            f"corpus '{cfg.corpus.name}' gave no chunks (stats: {asdict(reader.stats)})"
        )

    gpu = want_gpu(cfg.index)
    vectors = (reader.vectors(cfg.shard_size, embedder.cfg.normalize) if precomputed
               else [shard_paths(partial, k)[1] for k in range(n_shards)])
    truth = _exact_neighbours(cfg.index, vectors, n_chunks)
    index = assemble_faiss(cfg.index, vectors, n_chunks,
                           embedder.dimension, gpu, partial, partial / SHARDS_DIR / "ivf", truth)
    if precomputed and (changed := reader.changed_file(state["sources"])):
        raise BioragError(f"{changed} since this build began reading it; the index would mix two versions. "
                          "Run again with --force to build from the files as they are now")
    recommended = recommend(DiskRefined(index, partial, cfg.index.k_factor) if cfg.index.disk_refine else index,
                            cfg.index, truth)
    tmp = partial / f"{INDEX_FILE}.tmp"
    with writing(partial, int(index.ntotal) * embedder.dimension * 4, f"writing {INDEX_FILE}", tmp):
        write_index_for(to_cpu(index), tmp, final)
    os.replace(partial / f"{INDEX_FILE}.tmp", partial / INDEX_FILE)
    merge_chunk_shards(partial, n_shards)
    if cfg.index.bm25:
        build_bm25(partial / CHUNKS_FILE, partial / BM25_DIR, cfg.chunking.include_title)

    manifest = IndexManifest(
        name=name,
        fingerprint=fingerprint,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        corpus=CorpusRecord(
            name=cfg.corpus.name,
            loader=f"precomputed:{reader.format}" if precomputed else cfg.corpus.loader,
            config=asdict(cfg.vectors) if precomputed else asdict(cfg.corpus),
            source_fingerprint=source_fingerprint,
            content_hash=content_hash,
            stats=asdict(reader.stats),
        ),
        chunking=asdict(cfg.chunking),
        embedder={**embedder.identity(),  # the passages' origin, beside the query side's identity
                  **({} if precomputed else {"engine": cfg.engine}),
                  **({"vectors": {**reader.record(), "verified": state["verified"]}} if precomputed else {})},
        index=FaissRecord(
            type=cfg.index.type,
            params=asdict(cfg.index),
            metric="inner_product",
            ntotal=int(index.ntotal),
            built_on_gpu=bool(gpu),
            bm25=cfg.index.bm25,
            recommended=recommended,
        ),
        counts=IndexCounts(
            documents=reader.stats.documents,
            chunks=n_chunks,
            skipped_empty=reader.stats.skipped_empty,
            skipped_malformed=reader.stats.skipped_malformed,
            duplicate_ids=reader.stats.duplicate_ids,
            shards=n_shards,
            resumed_shards=resumed,
        ),
        build_seconds=round(time.perf_counter() - started, 3),
        embed_seconds=round(embed_seconds, 3),
        chunks_per_second=round(n_chunks / max(embed_seconds, 1e-9), 1),
        shard_size=cfg.shard_size,
        versions=library_versions(),
        files={"index": INDEX_FILE, "chunks": CHUNKS_FILE, "bm25": BM25_DIR if cfg.index.bm25 else None,
               **({"ivfdata": IVFDATA_FILE} if cfg.index.on_disk else {}),
               **({"refine": REFINE_CODES_FILE} if cfg.index.disk_refine else {})},
    )
    manifest.write(partial)  # from here the partial is a whole index: a stopped finish resumes at the swap
    log.info("built %s: %d chunks in %.1fs", name, n_chunks, manifest.build_seconds)
    return _finish(partial, final, manifest, resumed)


def _finish(partial: Path, final: Path, manifest: IndexManifest, resumed: int) -> BuildResult:
    """Drop the build's working files and swap the assembled index into place. Each step may
    be cut short by a kill: the next run finds the manifest and does what is left."""
    (partial / STATE_FILE).unlink(missing_ok=True)
    shutil.rmtree(partial / SHARDS_DIR, ignore_errors=True)
    swap_into_place(partial, final, MANIFEST_FILE, "index")
    _remove_old_copies(final)
    return BuildResult(final, manifest, up_to_date=False, resumed_shards=resumed)


def _assembled(partial: Path, fingerprint: str) -> IndexManifest | None:
    """The manifest of a partial that was assembled with these settings (its manifest is
    written last, after the index, chunks and BM25), else None."""
    if not (partial / MANIFEST_FILE).is_file():
        return None
    try:
        manifest = IndexManifest.read(partial)
    except BioragError:
        return None
    whole = (partial / INDEX_FILE).is_file() and (partial / CHUNKS_FILE).is_file()
    return manifest if manifest.fingerprint == fingerprint and whole else None


def _shards_present(partial: Path, counted: int, chunks_only: bool = False) -> int:
    """How many of the `counted` finished shards are whole on disk (both files; `chunks_only`:
    the chunks, for vectors read in place); a build whose later shards went missing re-embeds
    from the first gap rather than failing."""
    for k in range(counted):
        if not all(p.is_file() for p in shard_paths(partial, k)[: 1 if chunks_only else 2]):
            log.warning("%s: shard %d of %d is missing; embedding again from it", partial, k, counted)
            return k
    return counted


def _resumable(partial: Path, fingerprint: str) -> bool:
    try:
        return json.loads((partial / STATE_FILE).read_text()).get("fingerprint") == fingerprint
    except (OSError, ValueError):
        return False


def _refuse_changed_source(reader: PrecomputedVectors, partial: Path) -> None:
    """An unfinished build whose source files changed since it began: refused by file name,
    not resumed over vectors it never read nor silently started again."""
    try:
        recorded = json.loads((partial / STATE_FILE).read_text()).get("sources")
    except (OSError, ValueError):
        return
    if recorded and (changed := reader.changed_file(recorded)):
        raise BioragError(f"{changed} since the unfinished build in {partial} began; its shards were read "
                          "from the files as they were. Restore them, or run again with --force to start over")


def _exact_neighbours(cfg: Any, vectors: Any, n: int) -> ExactTopK | None:
    """The held-out queries' exact neighbours, filled as the assembly reads every vector."""
    from biorag.indexing.assemble import as_vectors

    rows = query_rows(n, cfg.seed) if cfg.type in ("ivf", "ivfpq") and cfg.target_recall else None
    return None if rows is None else ExactTopK(as_vectors(vectors).take(rows), rows)


def _remove_old_copies(final: Path) -> None:
    """Earlier indexes of this name left by a swap that was stopped before it removed them
    (`.NAME.old-PID`); the build holds the name's lock, so no other swap is using them."""
    for old in final.parent.glob(f".{final.name}.old-*"):
        if is_index(old):
            shutil.rmtree(old, ignore_errors=True)


def _embedded_shards(cfg: BuildConfig, embedder: Any, chunks: Iterator[Chunk], skip: int,
                     bar: Any) -> Iterator[tuple[int, list[Chunk] | None, np.ndarray | None]]:
    """(rows, chunks, vectors) per shard; the first `skip` (written before) as (rows, None, None)."""
    for shard_no, shard in enumerate(batched(chunks, cfg.shard_size)):
        if shard_no < skip:
            bar.advance(len(shard))
            yield len(shard), None, None
            continue
        texts = embedder.passage_inputs(shard, cfg.chunking.include_title)
        vectors = np.empty((len(texts), embedder.dimension), dtype=np.float32)
        for rows in encode_groups(texts, cfg.embedder.batch_size):
            vectors[rows] = embedder.embed_passages([texts[i] for i in rows])
            bar.advance(len(rows))
        del texts
        yield len(shard), shard, vectors


def _hashing(docs: Iterator[Document], h: Any) -> Iterator[Document]:
    for d in docs:
        h.update(f"{d.id}\0{d.title}\0{d.text}\0".encode())
        yield d


def load_build_config(overrides: list[str] | None = None) -> BuildConfig:
    """Compose experiments/build.yaml with overrides and validate it."""
    from biorag.config import compose, to_typed

    return to_typed(compose("build", overrides), BuildConfig, where="build config")
