"""Readers for record files: JSONL, Parquet and CSV.

Each maps three configurable fields of a record (`id_field`, `title_field`, `text_field`) to a
`Document`. `path` is one file, a folder (every matching file under it) or a glob; files are
read in sorted order, one record at a time. Errors name the file, the position and the field:
JSONL and CSV count physical lines from 1 (what an editor shows); Parquet counts rows from 0
(what pandas and pyarrow index with).

The helpers here (`resolve_files`, `record_to_document`, `fingerprint_files`)
are shared by the folder and Hugging Face readers.
"""

from __future__ import annotations

import codecs
import csv
import glob
import gzip
import hashlib
import io
import json
import logging
import os
import zlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from biorag.corpora.base import CorpusConfig, CorpusReader, hash_file
from biorag.errors import InputError, input_lines, too_long
from biorag.types import Document

log = logging.getLogger(__name__)

_GLOB_CHARS = set("*?[")


# -- shared helpers -------------------------------------------------------------------------
def resolve_files(path: str | None, suffixes: tuple[str, ...], what: str) -> list[Path]:
    """The files `path` names: a file, a folder (searched recursively) or a glob; sorted.

    Raises InputError when `path` is unset or names nothing, so a typo is never an empty corpus.
    """
    if not path:
        raise InputError(f"the {what} corpus needs a path (corpus.path=...)", field="path")
    expanded = os.path.expanduser(path)
    if _GLOB_CHARS & set(expanded):
        files = sorted(Path(p) for p in glob.glob(expanded, recursive=True) if os.path.isfile(p))
        if not files:
            raise InputError(f"no files match the pattern {path!r}", field="path")
        return files
    p = Path(expanded)
    if not p.is_absolute() and not p.exists():
        # a path in a shipped config (corpora/sample/...) is relative to the project folder
        from biorag.config import packaged_config_dir

        shipped = packaged_config_dir().parent / p
        p = shipped if shipped.exists() else p
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted(
            f
            for f in p.rglob("*")
            if f.is_file()
            and f.name.lower().endswith(suffixes)
            and not any(part.startswith(".") for part in f.relative_to(p).parts)
        )
        if not files:
            raise InputError(
                f"no {what} files ({', '.join(suffixes)}) in the folder", file=str(p), field="path"
            )
        return files
    raise InputError("no such file or folder", file=path, field="path")


def record_to_document(
    record: Any, cfg: CorpusConfig, *, file: str, line: int, source: str
) -> Document:
    """Map one record (a dict) to a Document with the config's field names; InputError if bad."""
    if not isinstance(record, Mapping):
        raise InputError(
            f"expected an object with fields, got {type(record).__name__}", file=file, line=line
        )
    doc_id = _required(record, cfg.id_field, file, line)
    if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)):
        raise InputError(
            f"id must be a string or an integer, got {type(doc_id).__name__}",
            file=file,
            line=line,
            field=cfg.id_field,
        )
    doc_id = str(doc_id)
    if not doc_id.strip():
        raise InputError("empty id", file=file, line=line, field=cfg.id_field)
    text = _required(record, cfg.text_field, file, line)
    if text is None:  # a record with no text is empty, not malformed (e.g. PubMed without abstract)
        text = ""
    if not isinstance(text, str):
        raise InputError(
            f"text must be a string, got {type(text).__name__}",
            file=file,
            line=line,
            field=cfg.text_field,
        )
    title = record.get(cfg.title_field) if cfg.title_field else None
    if title is None:
        title = ""
    elif not isinstance(title, str):
        raise InputError(
            f"title must be a string, got {type(title).__name__}",
            file=file,
            line=line,
            field=cfg.title_field,
        )
    return Document(id=doc_id, text=text, title=title, source=source)


def _required(record: Mapping, name: str, file: str, line: int) -> Any:
    if name not in record:
        present = ", ".join(str(k) for k in list(record)[:12]) or "none"
        raise InputError(
            f"missing field (fields here: {present})", file=file, line=line, field=name
        )
    return record[name]


def fingerprint_files(files: Iterable[Path], extra: Mapping[str, Any]) -> str:
    """sha256 over the bytes of `files` (in order) and a JSON of `extra` (the field mapping)."""
    h = hashlib.sha256()
    h.update(json.dumps(dict(extra), sort_keys=True).encode())
    for f in files:
        h.update(b"\0file\0")
        hash_file(str(f), h)
    return h.hexdigest()


def _reading_encoding(encoding: str) -> str:
    """utf-8 read as utf-8-sig: a byte-order mark (Excel, Windows tools) is dropped, not
    glued to the first field name or id."""
    return "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding


def _open_binary(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


# -- readers --------------------------------------------------------------------------------
class _RecordFileReader(CorpusReader):
    """A reader over one or more record files; subclasses read one file."""

    kind = ""
    suffixes: tuple[str, ...] = ()

    def __init__(self, cfg: CorpusConfig) -> None:
        super().__init__(cfg)
        try:
            codecs.lookup(cfg.encoding)
        except LookupError:
            raise InputError(f"unknown encoding {cfg.encoding!r}", field="encoding") from None

    def _records(self) -> Iterator[Document]:
        # Resolved here, outside the generator, so a missing path raises even under on_error=skip.
        files = resolve_files(self.cfg.path, self.suffixes, self.kind)
        return (item for f in files for item in self._guarded(f))

    def _guarded(self, path: Path) -> Iterator[Document | InputError]:
        """One file's records; a file that breaks mid-way (truncated gzip, I/O error) ends
        with an error naming it, and the next file is read."""
        try:
            yield from self._read_file(path)
        except (OSError, EOFError, zlib.error) as e:
            yield InputError(f"cannot read further: {type(e).__name__}: {e}", file=str(path))

    def _read_file(self, path: Path) -> Iterator[Document | InputError]:
        raise NotImplementedError

    def source_fingerprint(self) -> str:
        files = resolve_files(self.cfg.path, self.suffixes, self.kind)
        mapping = {
            "loader": self.kind,
            "id_field": self.cfg.id_field,
            "title_field": self.cfg.title_field,
            "text_field": self.cfg.text_field,
            "encoding": self.cfg.encoding,
        }
        return fingerprint_files(files, mapping)

    def _missing_title_warning(self, path: Path, columns: Iterable[str]) -> None:
        if self.cfg.title_field and self.cfg.title_field not in set(columns):
            log.warning(
                "%s has no column %r: documents get no title (set title_field: null to silence)",
                path,
                self.cfg.title_field,
            )


class JsonlReader(_RecordFileReader):
    """JSON Lines: one object per line (`.jsonl`, `.ndjson`, optionally gzipped)."""

    kind = "jsonl"
    suffixes = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")

    def _read_file(self, path: Path) -> Iterator[Document | InputError]:
        file = str(path)
        encoding = _reading_encoding(self.cfg.encoding)
        with _open_binary(path) as f:
            # Bytes in, decoded per line: a bad byte costs one line, not the rest of the file.
            for n, raw in input_lines(f):
                if raw is None:
                    yield InputError(too_long(), file=file, line=n)
                    continue
                try:
                    line = raw.decode(encoding if n == 1 else self.cfg.encoding)
                except UnicodeDecodeError as e:
                    yield InputError(f"not valid {self.cfg.encoding}: {e}", file=file, line=n)
                    continue
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    yield InputError(f"malformed JSON: {e}", file=file, line=n)
                    continue
                try:
                    yield record_to_document(
                        record, self.cfg, file=file, line=n, source=f"{file}:{n}"
                    )
                except InputError as e:
                    yield e


class CsvReader(_RecordFileReader):
    """CSV with a header row (`.csv`, `.tsv` is read with a tab delimiter; optionally gzipped)."""

    kind = "csv"
    suffixes = (".csv", ".tsv", ".csv.gz", ".tsv.gz")

    def _read_file(self, path: Path) -> Iterator[Document | InputError]:
        file = str(path)
        # Documents can be long; the csv module's default cap is 128 KiB per field.
        csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
        delimiter = "\t" if path.name.lower().endswith((".tsv", ".tsv.gz")) else ","
        with _open_binary(path) as raw:
            f = io.TextIOWrapper(raw, encoding=_reading_encoding(self.cfg.encoding), newline="")
            reader = csv.DictReader(f, delimiter=delimiter)
            try:
                columns = reader.fieldnames or []
            except (csv.Error, UnicodeDecodeError) as e:
                yield InputError(f"cannot read the header: {e}", file=file, line=1)
                return
            if not columns:
                return  # an empty file holds no documents
            for name in (self.cfg.id_field, self.cfg.text_field):
                if name not in columns:
                    yield InputError(
                        f"no such column (columns: {', '.join(columns)})",
                        file=file,
                        line=1,
                        field=name,
                    )
                    return
            self._missing_title_warning(path, columns)
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except csv.Error as e:
                    yield InputError(f"malformed CSV: {e}", file=file, line=reader.line_num)
                    continue
                except UnicodeDecodeError as e:
                    # The text decoder cannot resynchronise; the rest of the file is lost.
                    yield InputError(
                        f"not valid {self.cfg.encoding} (rest of file skipped): {e}",
                        file=file,
                        line=reader.line_num + 1,
                    )
                    return
                n = reader.line_num
                # DictReader files surplus values under None and fills missing ones with None.
                if None in row or any(v is None for v in row.values()):
                    found = (
                        len(columns) + len(row[None])
                        if None in row
                        else sum(v is not None for v in row.values())
                    )
                    yield InputError(
                        f"row has {found} fields, the header has {len(columns)}", file=file, line=n
                    )
                    continue
                try:
                    yield record_to_document(row, self.cfg, file=file, line=n, source=f"{file}:{n}")
                except InputError as e:
                    yield e


class ParquetReader(_RecordFileReader):
    """Parquet, read in record batches of only the mapped columns."""

    kind = "parquet"
    suffixes = (".parquet", ".pq")
    batch_size = 1024

    def _read_file(self, path: Path) -> Iterator[Document | InputError]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        file = str(path)
        try:
            pf = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as e:
            yield InputError(f"not a readable Parquet file: {e}", file=file)
            return
        columns = pf.schema_arrow.names
        for name in (self.cfg.id_field, self.cfg.text_field):
            if name not in columns:
                yield InputError(
                    f"no such column (columns: {', '.join(columns)})", file=file, field=name
                )
                return
        self._missing_title_warning(path, columns)
        wanted = [self.cfg.id_field, self.cfg.text_field]
        if self.cfg.title_field in columns and self.cfg.title_field not in wanted:
            wanted.append(self.cfg.title_field)
        row = 0
        try:
            for batch in pf.iter_batches(batch_size=self.batch_size, columns=wanted):
                for record in batch.to_pylist():
                    try:
                        yield record_to_document(
                            record, self.cfg, file=file, line=row, source=f"{file}:{row}"
                        )
                    except InputError as e:
                        yield e
                    row += 1
        except (pa.ArrowException, OSError) as e:
            yield InputError(f"unreadable from row index {row} on: {e}", file=file, line=row)
