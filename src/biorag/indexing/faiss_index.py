"""The FAISS index itself: its config (type, lists, PQ, HNSW, refine, on disk, GPU), the
factory that makes an empty one, moves to and from GPUs, search-time settings, and opening a
written one (memory-mapped lists of an on-disk index, the on-disk refine store).

What a built index folder holds around it (the chunk store, the manifest) and searching it
are `biorag.indexing.index.BioragIndex`.
"""

from __future__ import annotations

import logging
import math
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from biorag.errors import BioragError, did_you_mean
from biorag.indexing.manifest import IVFDATA_FILE
from biorag.indexing.refine import REFINE_CODES_FILE, DiskRefined

log = logging.getLogger(__name__)

INDEX_TYPES = ("flat", "hnsw", "ivf", "ivfpq")
REFINES = ("sq8", "flat", "none")


@dataclass
class IndexConfig:
    """The FAISS index type and its parameters (inner product on normalised vectors)."""

    type: str = "flat"  # flat (exact) | hnsw | ivf (IVF-Flat) | ivfpq
    hnsw_m: int = 32  # hnsw: links per node
    ef_construction: int = 200  # hnsw: build-time breadth
    ef_search: int = 128  # hnsw: search-time breadth (recall vs speed)
    nlist: int | None = None  # ivf/ivfpq: number of lists; null: 4*sqrt(n), capped by n/39
    nprobe: int = 16  # ivf/ivfpq: lists visited per query
    pq_m: int = 16  # ivfpq: sub-quantisers (must divide the dimension)
    pq_nbits: int = 8  # ivfpq: bits per sub-quantiser code
    train_size: int = 50_000  # ivf/ivfpq: vectors sampled (seeded) to train the quantiser
    # ivfpq: re-rank the PQ shortlist with 8-bit (sq8) or full (flat) copies of the vectors;
    # none: PQ distances only (recall@10 ~0.6 on 384-d MiniLM vectors at m=16)
    refine: str = "sq8"
    k_factor: int = 8  # ivfpq with refine: shortlist k_factor * k candidates to re-rank
    seed: int = 0
    # ivf, ivfpq: at build time, the smallest k_factor (refined ivfpq) or nprobe (else), from the
    # value above up, reaching this recall@10 against exact search on held-out sample queries is
    # recorded in the manifest and used by searches that set none (biorag.indexing.tuning); null: off
    target_recall: float | None = 0.95
    use_gpu: str = "auto"  # auto: GPU when faiss sees one | true | false
    # ivf, ivfpq (refine sq8 or none): inverted lists merged on disk (index.ivfdata) and the sq8
    # refine codes in refine.sq8.npy, both memory-mapped at search, so neither the build nor a
    # search holds them in RAM (biorag.indexing.assemble, biorag.indexing.refine)
    on_disk: bool = False
    bm25: bool = True  # also build a BM25 index (bm25s) for bm25 and hybrid retrieval
    description: str = ""

    def __post_init__(self) -> None:
        from biorag.errors import ConfigError

        if self.type not in INDEX_TYPES:
            raise ConfigError("index.type: " + did_you_mean(self.type, INDEX_TYPES, what="index type"))
        if self.refine not in REFINES:
            raise ConfigError("index.refine: " + did_you_mean(self.refine, REFINES, what="refine"))
        for key in ("hnsw_m", "ef_construction", "ef_search", "nprobe", "pq_m", "pq_nbits",
                    "train_size", "k_factor"):
            if getattr(self, key) < 1:
                raise ConfigError(f"index.{key} must be at least 1, not {getattr(self, key)}")
        if self.on_disk and self.type not in ("ivf", "ivfpq"):
            raise ConfigError(f"index.on_disk needs an IVF index (ivf or ivfpq), not {self.type}")
        if self.on_disk and self.type == "ivfpq" and self.refine == "flat":
            raise ConfigError("index.on_disk keeps ivfpq's refine codes on disk in 8 bits: set "
                              "index.refine=sq8 (or none)")
        if self.target_recall is not None and not 0 < self.target_recall <= 1:
            raise ConfigError(f"index.target_recall must be in (0, 1] (or null: no check), not {self.target_recall}")
        if self.nlist is not None and self.nlist < 1:
            raise ConfigError(f"index.nlist must be at least 1 (or null: 4*sqrt(n)), not {self.nlist}")

    @property
    def disk_refine(self) -> bool:
        """Whether ivfpq's sq8 re-ranking codes live on disk (`biorag.indexing.refine`)."""
        return self.on_disk and self.type == "ivfpq" and self.refine == "sq8"


@dataclass(frozen=True)
class SearchSettings:
    """Search-time settings, chosen per search (None: as the index was built). They change
    speed and recall, never what is built, so they are not part of an index's fingerprint."""

    nprobe: int | None = None  # ivf / ivfpq: lists visited per query
    ef_search: int | None = None  # hnsw: search breadth
    k_factor: int | None = None  # ivfpq with refine: shortlist k_factor * k candidates

    def __post_init__(self) -> None:
        for key, value in asdict(self).items():
            if value is not None and value < 1:
                raise BioragError(f"{key} must be at least 1, not {value}")

    def given(self) -> dict[str, int]:
        return {k: v for k, v in asdict(self).items() if v is not None}


# the names of the search-time settings (IndexConfig and arm.retriever fields of those names)
SEARCH_SETTINGS = tuple(f.name for f in fields(SearchSettings))


def gpu_count() -> int:
    import faiss

    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def want_gpu(cfg: IndexConfig) -> bool:
    flag = str(cfg.use_gpu).lower()
    if flag in ("false", "0", "no") or cfg.on_disk:  # on-disk lists stay on disk, on the CPU
        return False
    n = gpu_count()
    if flag in ("true", "1", "yes") and n == 0:
        raise BioragError(
            "index.use_gpu=true but faiss sees no GPU (install biorag[gpu]: faiss-gpu)"
        )
    return n > 0


def default_nlist(n: int) -> int:
    # faiss wants >= 39 training points per list; 4*sqrt(n) is its usual rule of thumb
    return max(1, min(int(4 * math.sqrt(max(n, 1))), n // 39 or 1))


def new_index(cfg: IndexConfig, dim: int, n_expected: int) -> Any:
    """An empty CPU index of the configured type (trained later when it needs training)."""
    import faiss

    if cfg.type == "flat":
        return faiss.IndexFlatIP(dim)
    if cfg.type == "hnsw":
        index = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = cfg.ef_construction
        index.hnsw.efSearch = cfg.ef_search
        return index
    nlist = cfg.nlist or default_nlist(n_expected)
    quantizer = faiss.IndexFlatIP(dim)
    if cfg.type == "ivf":
        return faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    if cfg.type == "ivfpq":
        if dim % cfg.pq_m:
            raise BioragError(f"index.pq_m={cfg.pq_m} must divide the embedding dimension {dim}")
        pq = faiss.IndexIVFPQ(
            quantizer, dim, nlist, cfg.pq_m, cfg.pq_nbits, faiss.METRIC_INNER_PRODUCT
        )
        if cfg.refine == "none":
            return pq
        if cfg.refine == "flat":
            index = faiss.IndexRefineFlat(pq)
        elif cfg.refine == "sq8":
            sq8 = faiss.IndexScalarQuantizer(
                dim, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
            )
            index = faiss.IndexRefine(pq, sq8)
        else:
            raise BioragError(did_you_mean(cfg.refine, REFINES, what="index.refine"))
        index.k_factor = cfg.k_factor
        return index
    raise BioragError(did_you_mean(cfg.type, INDEX_TYPES, what="index type"))


def to_gpu(index: Any) -> Any:
    """Move an index to GPU 0, or shard it across all GPUs where faiss sees several, where
    faiss supports its type. HNSW and a refined IVF-PQ stay on the CPU (faiss has no GPU
    version of either); `index.refine=none` puts IVF-PQ there."""
    import faiss

    if isinstance(index, faiss.IndexHNSW | faiss.IndexRefine):
        return index
    try:
        # each GPU holds 1/n of the vectors and searches merge the shards' hits; only a trained
        # index (flat, or an opened IVF) is sharded: untrained, each shard would train its own lists
        if gpu_count() > 1 and index.is_trained:
            multi = faiss.GpuMultipleClonerOptions()
            multi.shard = True
            multi.useFloat16 = isinstance(index, faiss.IndexIVFPQ)
            return faiss.index_cpu_to_all_gpus(index, co=multi)
        res = faiss.StandardGpuResources()
        co = faiss.GpuClonerOptions()
        co.useFloat16 = isinstance(index, faiss.IndexIVFPQ)  # PQ lookup tables fit in shared memory
        return faiss.index_cpu_to_gpu(res, 0, index, co)
    except Exception as e:  # an unsupported type or shape: CPU is still correct, just slower
        log.warning(
            "faiss could not move %s to the GPU (%s); using the CPU", type(index).__name__, e
        )
        return index


def to_cpu(index: Any) -> Any:
    import faiss

    if not isinstance(index, faiss.IndexShards):
        return faiss.index_gpu_to_cpu(index) if hasattr(index, "getDevice") else index
    shards = faiss.index_gpu_to_cpu(index)  # sharded across GPUs (a flat index): one again, in id order
    merged = faiss.IndexFlat(index.d, index.metric_type)
    for i in range(shards.count()):
        part = faiss.downcast_index(shards.at(i))
        merged.add(part.reconstruct_n(0, part.ntotal))
    return merged


def set_search_params(index: Any, cfg: IndexConfig) -> None:
    import faiss

    if isinstance(index, DiskRefined):
        index.k_factor = cfg.k_factor
        index = index.base
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = cfg.ef_search
    if isinstance(index, faiss.IndexRefine):
        index.k_factor = cfg.k_factor
    ivf = faiss.try_extract_index_ivf(index) if hasattr(faiss, "try_extract_index_ivf") else None
    if ivf is not None:
        ivf.nprobe = cfg.nprobe
    elif hasattr(index, "nprobe"):
        index.nprobe = cfg.nprobe


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": sys.version.split()[0]}
    for dist in (
        "biorag",
        "faiss-cpu",
        "faiss-gpu-cu12",
        "torch",
        "sentence-transformers",
        "transformers",
        "bm25s",
        "llama-index-core",
        "numpy",
    ):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return out


def open_faiss(path: Path, on_disk: bool, *, refine: bool = False) -> Any:
    """Read `index.faiss`; an on-disk index maps `index.ivfdata` from the same folder (the
    folder may have been renamed since the build) rather than reading its lists, and with
    `refine` (ivfpq, sq8) re-ranks with the codes in `refine.sq8.npy` (`DiskRefined`)."""
    import faiss

    if not on_disk:
        return faiss.read_index(str(path))
    for needed in (IVFDATA_FILE, *([REFINE_CODES_FILE] if refine else [])):
        if not (path.parent / needed).exists():
            raise BioragError(f"{path.parent}: an on-disk index without its {needed}; rebuild with --force")
    # the lists are mapped from this folder's index.ivfdata, wherever the build recorded them
    # (faiss's IO_FLAG_ONDISK_SAME_DIR does the same but prints a line to stdout at every open),
    # and read-only: a search writes nothing, and the index may sit on read-only storage
    index = faiss.read_index(str(path), faiss.IO_FLAG_SKIP_IVF_DATA)
    lists = on_disk_lists(index)
    if lists is None:
        raise BioragError(f"{path}: the manifest says on-disk but the index holds its lists in memory; "
                          "rebuild with --force")
    data = path.parent / IVFDATA_FILE
    if data.stat().st_size < lists.totsize:
        raise BioragError(f"{data}: {data.stat().st_size:,} bytes, but the index's lists need "
                          f"{lists.totsize:,} (a truncated copy?); rebuild with --force")
    lists.filename, lists.read_only = str(data), True
    lists.do_mmap()
    return DiskRefined(index, path.parent) if refine else index


def on_disk_lists(index: Any) -> Any:
    """The `OnDiskInvertedLists` of an IVF index whose lists are on disk (mapped), else None."""
    import faiss

    ivf = faiss.try_extract_index_ivf(index)
    lists = faiss.downcast_InvertedLists(ivf.invlists) if ivf is not None else None
    return lists if isinstance(lists, faiss.OnDiskInvertedLists) else None


def release_list_pages(index: Any) -> None:
    """Drop an on-disk index's mapped lists from this process's resident set
    (`madvise(MADV_DONTNEED)`): the pages a search touched stay in the OS page cache, shared and
    reclaimable, but no longer count as this process's memory. The build's recall check calls it
    between batches of queries, so its resident set does not grow with the lists' size (at 24M
    x 768-d, 100 queries at nprobe 32 touched about 1 GB of `index.ivfdata`). A no-op for lists
    in memory, or where the C library has no madvise."""
    import ctypes

    import faiss

    lists = on_disk_lists(getattr(index, "base", index))
    if lists is None or lists.ptr is None or not lists.totsize or not sys.platform.startswith("linux"):
        return
    try:
        madvise = ctypes.CDLL(None).madvise
    except (OSError, AttributeError):
        return
    address = faiss.rev_swig_ptr(lists.ptr, 1).__array_interface__["data"][0]
    madvise(ctypes.c_void_p(address), ctypes.c_size_t(int(lists.totsize)), 4)  # MADV_DONTNEED
