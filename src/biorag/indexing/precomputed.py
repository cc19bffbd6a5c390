"""Passage vectors computed elsewhere as a build's input, instead of embedding a corpus.

Three layouts (`vectors.format`, or `auto` from the folder's files):

- `medcpt`: NCBI's MedCPT PubMed embeddings, as their README (ftp.ncbi.nlm.nih.gov/pub/lu/MedCPT/
  pubmed_embeddings/) lays them out: `embeds_chunk_N.npy` (an (n, 768) float32 matrix from the
  MedCPT article encoder), `pmids_chunk_N.json` (the n PMIDs, row for row) and
  `pubmed_chunk_N.json` (PMID -> {"t": title, "a": abstract, "d": date, "m": MeSH terms}).
- `npy`: any `X.npy` with `X.jsonl` beside it (one {"id", "title", "text"} per row) or `X.json`
  (a list of ids: a store of ids without texts).
- `parquet`: Parquet files with an id, title, text and a vector column (a list of floats).

Each row becomes one chunk (no chunking: the vectors were made for these texts). The build's shards
hold only the chunks: the vectors are read where they lie (`vectors()`: memory-mapped .npy, or
Parquet row groups), block by block, converted to float32 per block, straight into the index, so
a build needs the source, the index and no copy of the vectors between them. Each source file is
fingerprinted by its size and a hash of sampled blocks (`file_fingerprints`, never a full read):
a file changed under an unfinished build is refused by name. Before anything is written a sample
of rows is encoded again with the configured embedder and compared (`vectors.verify`): vectors
made by another model than the one that will encode the queries are refused, not silently
searched."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from biorag.corpora.base import CorpusStats
from biorag.errors import BioragError, ConfigError, did_you_mean
from biorag.types import Chunk

log = logging.getLogger(__name__)

FORMATS = ("auto", "medcpt", "npy", "parquet")
_BLOCK = 65_536  # rows read, converted and checked at a time
_SAMPLES, _SAMPLE_BYTES = 16, 1 << 16  # a file's fingerprint: the hash of 16 blocks of 64 KiB
_MEDCPT = re.compile(r"embeds_chunk_(\d+)\.npy$")


@dataclass
class VectorsConfig:
    """Precomputed passage vectors (`biorag index build vectors.path=...`); null path: embed."""

    path: str | None = None  # a folder (or one .npy / .parquet file); null: embed the corpus
    format: str = "auto"  # auto | medcpt | npy | parquet
    made_by: str | None = None  # the model that computed them; null: the embedder's document model
    vector_column: str = "vector"  # parquet: a list<float> column
    id_column: str = "id"  # parquet
    title_column: str | None = "title"  # parquet; null: no titles
    text_column: str = "text"  # parquet
    verify: int = 16  # rows re-encoded with the embedder and compared; 0: trust the files
    min_cosine: float = 0.98  # mean cosine those rows must reach against the files' vectors

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ConfigError("vectors.format: " + did_you_mean(self.format, FORMATS, what="format"))
        if self.verify < 0:
            raise ConfigError(f"vectors.verify must be 0 (no check) or more rows, not {self.verify}")


@dataclass
class _Part:
    vectors: Path  # .npy or .parquet
    meta: tuple[Path, ...]  # the ids/texts files beside it (npy, medcpt)
    rows: int
    dim: int
    dtype: str = "float32"


class PrecomputedVectors:
    """The parts of a folder of precomputed vectors, checked at open (headers only)."""

    def __init__(self, cfg: VectorsConfig) -> None:
        self.cfg = cfg
        root = Path(cfg.path or "").expanduser()
        if not cfg.path or not root.exists():
            raise BioragError(f"vectors.path {cfg.path!r} does not exist")
        self.format = cfg.format if cfg.format != "auto" else _detect(root)
        self.root = root
        self.parts = {"medcpt": _medcpt_parts, "npy": _npy_parts, "parquet": _parquet_parts}[self.format](root, cfg)
        dims = {p.dim for p in self.parts}
        if len(dims) > 1:
            first = self.parts[0]
            other = next(p for p in self.parts if p.dim != first.dim)
            raise BioragError(f"{other.vectors}: {other.dim}-d vectors, but {first.vectors.name} has "
                              f"{first.dim}-d: one index holds vectors of one dimension")
        self.dimension = self.parts[0].dim
        self.rows = sum(p.rows for p in self.parts)
        self.stats = CorpusStats(documents=self.rows)
        self.made_by = cfg.made_by
        if self.rows == 0:
            raise BioragError(f"vectors.path {root}: the vector files hold no rows")

    def file_fingerprints(self) -> list[dict[str, Any]]:
        """Every source file's name, size and a hash of `_SAMPLES` blocks spread over it (the
        first and last among them): cheap at 100 GB, and changed by a re-export, a truncation or
        a rewrite of any sampled block."""
        out = []
        for part in self.parts:
            for path in (part.vectors, *part.meta):
                out.append({"file": str(path), "size": path.stat().st_size, "sampled": _sampled_hash(path)})
        return out

    def changed_file(self, recorded: list[dict[str, Any]]) -> str | None:
        """The first file of `recorded` (an earlier `file_fingerprints`) that is not as it was
        then (changed, gone, or another set of files), named with what differs; None if all are."""
        now = {f["file"]: f for f in self.file_fingerprints()}
        for before in recorded:
            after = now.pop(before["file"], None)
            if after is None:
                return f"{before['file']} is gone"
            if after["size"] != before["size"]:
                return f"{before['file']} is {after['size']:,} bytes, not {before['size']:,}"
            if after["sampled"] != before["sampled"]:
                return f"{before['file']} has other contents (same size, {_SAMPLES} sampled blocks differ)"
        return f"{next(iter(now))} is new" if now else None

    def source_fingerprint(self) -> str:
        """The format and every file's fingerprint (`file_fingerprints`)."""
        h = hashlib.sha256(self.format.encode())
        for f in self.file_fingerprints():
            h.update(f"{Path(f['file']).name}\0{f['size']}\0{f['sampled']}\0".encode())
        return h.hexdigest()[:16]

    def meta_bytes(self) -> int:
        """Bytes of the ids and texts beside the vectors (Parquet: the file less its vectors):
        about what the chunk store will hold."""
        if self.format == "parquet":
            return sum(max(p.vectors.stat().st_size - p.rows * p.dim * 4, 0) for p in self.parts)
        return sum(m.stat().st_size for p in self.parts for m in p.meta)

    def check(self, embedder: Any) -> None:
        """The files' dimension and maker against the embedder that will encode the queries."""
        made_by = self.made_by = self.cfg.made_by or embedder.cfg.model
        if made_by != embedder.cfg.model:
            raise BioragError(
                f"vectors.made_by says {made_by} computed these vectors, but embedder "
                f"'{embedder.cfg.name}' encodes passages with {embedder.cfg.model}: its queries would "
                f"be searched against another model's space. Build with an embedder whose model is {made_by}.")
        if self.dimension != embedder.dimension:
            raise BioragError(
                f"{self.parts[0].vectors}: {self.dimension}-d vectors, but embedder '{embedder.cfg.name}' "
                f"({embedder.cfg.model}) gives {embedder.dimension}-d ones")

    def verify(self, embedder: Any, include_title: bool) -> dict[str, Any]:
        """Encode `cfg.verify` rows (spread over the first file) and compare them with the
        files' vectors by cosine; refuse the files below `cfg.min_cosine`."""
        n = min(self.cfg.verify, self.parts[0].rows)
        if n == 0:
            return {"rows": 0}
        chunks, vectors = next(self._part_rows(self.parts[0], 0, normalize=False))
        pick = np.unique(np.linspace(0, len(chunks) - 1, n).astype(int))
        mine = embedder.embed_passages(embedder.passage_inputs([chunks[i] for i in pick], include_title))
        theirs = vectors[pick]
        cos = np.sum(_unit(mine) * _unit(theirs), axis=1)
        found = {"rows": len(pick), "mean_cosine": round(float(cos.mean()), 5), "min_cosine": round(float(cos.min()), 5)}
        if cos.mean() < self.cfg.min_cosine:
            raise BioragError(
                f"{self.parts[0].vectors}: {len(pick)} rows re-encoded with embedder '{embedder.cfg.name}' "
                f"({embedder.cfg.model}) have mean cosine {cos.mean():.3f} (min {cos.min():.3f}) with the "
                f"file's vectors, under vectors.min_cosine={self.cfg.min_cosine}: they were not made by this "
                f"model with these settings (prompt, pooling, title_pair, max_seq_length). "
                "vectors.verify=0 skips the check.")
        return found

    def record(self) -> dict[str, Any]:
        """What the manifest says of the vectors' origin."""
        return {"format": self.format, "path": str(self.root.resolve()), "files": len(self.parts),
                "rows": self.rows, "made_by": self.made_by, "read_in_place": True,
                "dtypes": sorted({p.dtype for p in self.parts}), "sources": self.file_fingerprints()}

    def chunk_shards(self, size: int, skip: int,
                     bar: Any) -> Iterator[tuple[int, list[Chunk] | None, None]]:
        """(rows, chunks, None) per shard of `size` rows, the vectors left where they are (read
        by `vectors()` when the index is assembled); the first `skip` shards as (rows, None, None)."""
        n_shards = math.ceil(self.rows / size)
        for k in range(min(skip, n_shards)):
            count = min(size, self.rows - k * size)
            bar.advance(count)
            yield count, None, None
        held: list[Chunk] = []
        for chunks in self._chunks(skip * size):
            while chunks:
                take = size - len(held)
                held += chunks[:take]
                chunks = chunks[take:]
                if len(held) == size:
                    bar.advance(size)
                    yield size, held, None
                    held = []
        if held:
            bar.advance(len(held))
            yield len(held), held, None

    def vectors(self, shard_size: int, normalize: bool) -> InPlaceVectors:
        """The vectors as the index assembly reads them: shard by shard, from the source files."""
        return InPlaceVectors(self, shard_size, normalize)

    def _chunks(self, start: int) -> Iterator[list[Chunk]]:
        offset = 0
        for part in self.parts:
            if offset + part.rows > start:
                first = max(start - offset, 0)
                if self.format == "parquet":
                    yield from (c for c, _ in _parquet_blocks(part, self.cfg, first, vectors=False))
                else:
                    every = (_medcpt_chunks if self.format == "medcpt" else _npy_chunks)(part)
                    yield from (every[a:a + _BLOCK] for a in range(first, part.rows, _BLOCK))
            offset += part.rows

    def _part_rows(self, part: _Part, start: int, normalize: bool) -> Iterator[tuple[list[Chunk], np.ndarray]]:
        if self.format == "parquet":
            blocks = _parquet_blocks(part, self.cfg, start)
        else:
            every = (_medcpt_chunks if self.format == "medcpt" else _npy_chunks)(part)
            matrix = np.load(part.vectors, mmap_mode="r")
            blocks = ((every[a:a + _BLOCK], matrix[a:a + _BLOCK]) for a in range(start, part.rows, _BLOCK))
        row = start
        for chunks, block in blocks:
            if len(chunks) != len(block):  # the files' lengths were checked: this is a reader bug
                raise BioragError(f"{part.vectors}: {len(chunks)} chunks read for {len(block)} vectors at row {row}")
            vectors = _float32(part, row, block, normalize)
            row += len(vectors)
            yield chunks, vectors


class InPlaceVectors:
    """Precomputed vectors read where they lie, as `biorag.indexing.assemble` reads a build's
    vectors: shard k is rows [k * shard_size, (k + 1) * shard_size) of the files in order, read in
    blocks of `_BLOCK` rows (memory-mapped .npy; Parquet row groups), each converted to float32,
    checked and normalised on its own; nothing is written."""

    def __init__(self, source: PrecomputedVectors, shard_size: int, normalize: bool) -> None:
        self.source, self.shard_size, self.normalize = source, shard_size, normalize
        self.rows, self.dimension = source.rows, source.dimension
        self.starts = np.cumsum([0] + [p.rows for p in source.parts])
        self.shard_rows = [min(shard_size, self.rows - a) for a in range(0, self.rows, shard_size)]

    def shard(self, k: int) -> np.ndarray:
        a = k * self.shard_size
        return self.range(a, min(a + self.shard_size, self.rows))

    def range(self, a: int, b: int) -> np.ndarray:
        """Rows [a, b) as one float32 array."""
        out = np.empty((b - a, self.dimension), dtype=np.float32)
        for i, part in enumerate(self.source.parts):
            lo, hi = max(a, int(self.starts[i])), min(b, int(self.starts[i + 1]))
            if lo >= hi:
                continue
            first = lo - int(self.starts[i])
            for at, block in self._blocks(part, first, first + hi - lo):
                out[lo - a + at - first: lo - a + at - first + len(block)] = block
        return out

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The float32 vectors of sorted global `rows` (a training or recall sample)."""
        out = np.empty((len(rows), self.dimension), dtype=np.float32)
        for i, part in enumerate(self.source.parts):
            sel = np.flatnonzero((rows >= self.starts[i]) & (rows < self.starts[i + 1]))
            if not len(sel):
                continue
            local = rows[sel] - int(self.starts[i])
            if self.source.format == "parquet":  # row group by row group, those holding a row of `rows`
                for at, block in self._blocks(part, int(local[0]), int(local[-1]) + 1):
                    mine = (local >= at) & (local < at + len(block))
                    out[sel[mine]] = block[local[mine] - at]
            else:
                for j in range(0, len(local), _BLOCK):
                    idx = local[j:j + _BLOCK]
                    block = np.load(part.vectors, mmap_mode="r")[idx]
                    out[sel[j:j + _BLOCK]] = _float32(part, int(idx[0]), block, self.normalize, rows=idx)
        return out

    def _blocks(self, part: _Part, first: int, last: int) -> Iterator[tuple[int, np.ndarray]]:
        """(local row, float32 block) over rows [first, last) of one file."""
        if self.source.format == "parquet":
            for at, block in _parquet_vectors(part, self.source.cfg, first, last):
                yield at, _float32(part, at, block, self.normalize)
            return
        matrix = np.load(part.vectors, mmap_mode="r")
        for at in range(first, last, _BLOCK):
            yield at, _float32(part, at, matrix[at:min(at + _BLOCK, last)], self.normalize)


def _float32(part: _Part, row: int, block: Any, normalize: bool, rows: np.ndarray | None = None) -> np.ndarray:
    """A block of a file's vectors as float32, refused with its row when not finite or all zero
    (normalised); `rows`: the block's local row numbers when not consecutive from `row`."""
    vectors = np.array(block, dtype=np.float32)
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        at = int(rows[np.argmax(bad)]) if rows is not None else row + int(np.argmax(bad))
        raise BioragError(f"{part.vectors}: row {at} holds NaN or infinite values")
    if normalize:
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        if (norms == 0).any():
            zero = int(np.argmax(norms[:, 0] == 0))
            raise BioragError(f"{part.vectors}: row {int(rows[zero]) if rows is not None else row + zero} is all zeros")
        vectors /= norms
    return vectors


def _sampled_hash(path: Path) -> str:
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        starts = {0, max(size - _SAMPLE_BYTES, 0)} | {
            (size - _SAMPLE_BYTES) * i // (_SAMPLES - 1) for i in range(1, _SAMPLES - 1) if size > _SAMPLE_BYTES}
        for start in sorted(starts):
            f.seek(start)
            h.update(f.read(_SAMPLE_BYTES))
    return h.hexdigest()[:16]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _detect(root: Path) -> str:
    if root.is_file():
        if root.suffix in (".npy", ".parquet"):
            return root.suffix[1:]
        raise BioragError(f"vectors.path {root}: a .npy or .parquet file, or a folder of them")
    names = [p.name for p in root.iterdir()]
    if any(_MEDCPT.match(n) for n in names):
        return "medcpt"
    for fmt in ("npy", "parquet"):
        if any(n.endswith(f".{fmt}") for n in names):
            return fmt
    raise BioragError(f"vectors.path {root} holds no embeds_chunk_N.npy, .npy or .parquet files")


def _npy_header(path: Path) -> tuple[int, int, str]:
    try:
        matrix = np.load(path, mmap_mode="r")
    except (ValueError, OSError) as e:
        raise BioragError(f"{path}: not a readable .npy file ({e})") from None
    if matrix.ndim != 2:
        raise BioragError(f"{path}: a {matrix.ndim}-d array {matrix.shape}; vectors are a 2-d (rows, dim) matrix")
    if matrix.dtype.kind != "f":
        raise BioragError(f"{path}: vectors of dtype {matrix.dtype}; expected floating point (float32, "
                          "float16 or float64)")
    return int(matrix.shape[0]), int(matrix.shape[1]), str(matrix.dtype)


def _medcpt_parts(root: Path, cfg: VectorsConfig) -> list[_Part]:
    numbers = sorted(int(m.group(1)) for p in root.iterdir() if (m := _MEDCPT.match(p.name)))
    if not numbers:
        raise BioragError(f"vectors.path {root} holds no embeds_chunk_N.npy (MedCPT layout)")
    missing = sorted(set(range(numbers[0], numbers[-1] + 1)) - set(numbers))
    if missing:
        raise BioragError(f"{root}: embeds_chunk_{missing[0]}.npy is missing (chunks {numbers[0]}..{numbers[-1]} "
                          f"are there but for {len(missing)}); a partial download would build a partial index")
    parts = []
    for i in numbers:
        meta = (root / f"pmids_chunk_{i}.json", root / f"pubmed_chunk_{i}.json")
        for m in meta:
            if not m.exists():
                raise BioragError(f"{root}: embeds_chunk_{i}.npy has no {m.name} beside it")
        parts.append(_Part(root / f"embeds_chunk_{i}.npy", meta, *_npy_header(root / f"embeds_chunk_{i}.npy")))
    return parts


def _npy_parts(root: Path, cfg: VectorsConfig) -> list[_Part]:
    files = [root] if root.is_file() else sorted(root.glob("*.npy"), key=_natural)
    parts = []
    for path in files:
        meta = next((m for m in (path.with_suffix(".jsonl"), path.with_suffix(".json")) if m.exists()), None)
        if meta is None:
            raise BioragError(f"{path}: no {path.with_suffix('.jsonl').name} (id, title, text per row) or "
                              f"{path.with_suffix('.json').name} (a list of ids) beside it")
        parts.append(_Part(path, (meta,), *_npy_header(path)))
    return parts


def _natural(path: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def _lengths(part: _Part, n: int, what: Path) -> None:
    if n != part.rows:
        raise BioragError(f"{what}: {n} ids for the {part.rows} vectors of {part.vectors.name}; "
                          "ids and vectors must match row for row")


def _medcpt_chunks(part: _Part) -> list[Chunk]:
    pmids_path, texts_path = part.meta
    pmids = _read_json(pmids_path)
    if not isinstance(pmids, list):
        raise BioragError(f"{pmids_path}: expected a JSON list of PMIDs")
    _lengths(part, len(pmids), pmids_path)
    articles = _read_json(texts_path)
    chunks = []
    for pmid in map(str, pmids):
        record = articles.get(pmid)
        if record is None:
            raise BioragError(f"{texts_path}: no article for PMID {pmid} (listed in {pmids_path.name})")
        title, text = str(record.get("t") or ""), str(record.get("a") or "")
        chunks.append(Chunk(id=pmid, doc_id=pmid, title=title, text=text, start=0, end=len(text), ordinal=0))
    return chunks


def _npy_chunks(part: _Part) -> list[Chunk]:
    (meta,) = part.meta
    if meta.suffix == ".json":
        ids = _read_json(meta)
        if not isinstance(ids, list):
            raise BioragError(f"{meta}: expected a JSON list of ids")
        records = [{"id": i} for i in ids]
    else:
        records = []
        with open(meta, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise BioragError(f"{meta}:{line_no}: not JSON ({e.msg})") from None
                if not isinstance(record, dict) or "id" not in record:
                    raise BioragError(f"{meta}:{line_no}: each line is an object with an 'id'")
                records.append(record)
    _lengths(part, len(records), meta)
    return [_chunk(r["id"], r.get("title"), r.get("text")) for r in records]


def _chunk(id_: Any, title: Any, text: Any) -> Chunk:
    text = "" if text is None else str(text)
    return Chunk(id=str(id_), doc_id=str(id_), title="" if title is None else str(title), text=text,
                 start=0, end=len(text), ordinal=0)


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise BioragError(f"{path}:{e.lineno}: not JSON ({e.msg})") from None


def _parquet_parts(root: Path, cfg: VectorsConfig) -> list[_Part]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = []
    for path in [root] if root.is_file() else sorted(root.glob("*.parquet"), key=_natural):
        schema = pq.read_schema(path)
        for col in (cfg.vector_column, cfg.id_column, cfg.text_column, cfg.title_column):
            if col is not None and col not in schema.names:
                raise BioragError(f"{path}: no column {col!r} (columns: {', '.join(schema.names)})")
        kind = schema.field(cfg.vector_column).type
        if not (pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind) or pa.types.is_large_list(kind)) \
                or not pa.types.is_floating(kind.value_type):
            raise BioragError(f"{path}: column {cfg.vector_column!r} is {kind}; expected a list of floats")
        meta = pq.ParquetFile(path).metadata
        first = pq.ParquetFile(path).read_row_group(0, columns=[cfg.vector_column]) if meta.num_row_groups else None
        dim = len(first.column(0)[0].as_py()) if first is not None and len(first) else 0
        parts.append(_Part(path, (), int(meta.num_rows), dim, str(kind.value_type)))
    return parts


def _parquet_blocks(part: _Part, cfg: VectorsConfig, start: int,
                    vectors: bool = True) -> Iterator[tuple[list[Chunk], np.ndarray | None]]:
    """(chunks, vectors) from row `start` of a Parquet file, in batches; `vectors=False` reads
    the ids and texts only (the vector column stays on disk)."""
    import pyarrow.parquet as pq

    cols = [c for c in (cfg.id_column, cfg.title_column, cfg.text_column) if c] + ([cfg.vector_column] if vectors else [])
    row = 0
    for batch in pq.ParquetFile(part.vectors).iter_batches(batch_size=_BLOCK, columns=cols, use_threads=False):
        first, row = row, row + len(batch)
        if row <= start:
            continue
        if first < start:
            batch, first = batch.slice(start - first), start
        ids = batch.column(cfg.id_column).to_pylist()
        titles = batch.column(cfg.title_column).to_pylist() if cfg.title_column else [None] * len(ids)
        texts = batch.column(cfg.text_column).to_pylist()
        chunks = [_chunk(*r) for r in zip(ids, titles, texts, strict=True)]
        yield chunks, _list_vectors(part, batch.column(cfg.vector_column), first) if vectors else None


def _parquet_vectors(part: _Part, cfg: VectorsConfig, first: int, last: int) -> Iterator[tuple[int, np.ndarray]]:
    """(local row, vectors) over rows [first, last) of a Parquet file, reading only the row
    groups that hold them, and only the vector column."""
    import pyarrow.parquet as pq

    f = pq.ParquetFile(part.vectors)
    at = 0
    for g in range(f.metadata.num_row_groups):
        n = f.metadata.row_group(g).num_rows
        lo, hi = max(first, at), min(last, at + n)
        if lo < hi:
            lists = f.read_row_group(g, columns=[cfg.vector_column], use_threads=False).column(0).slice(lo - at, hi - lo)
            yield lo, _list_vectors(part, lists.combine_chunks(), lo)
        at += n
        if at >= last:
            return


def _list_vectors(part: _Part, lists: Any, first: int) -> np.ndarray:
    import pyarrow.compute as pc

    lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
    if (lengths != part.dim).any():
        bad = int(np.argmax(lengths != part.dim))
        raise BioragError(f"{part.vectors}: row {first + bad} has a {lengths[bad]}-d vector, "
                          f"not {part.dim}-d like the first row")
    return lists.flatten().to_numpy(zero_copy_only=False).reshape(-1, part.dim)
