"""The corpus reader interface and its config.

A reader streams `Document`s (never the whole corpus in memory), counts what it skipped,
and gives a fingerprint of its source that changes when the data changes.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

from biorag.errors import InputError
from biorag.types import Document

log = logging.getLogger(__name__)


@dataclass
class CorpusConfig:
    """Where a corpus comes from and how its records map to documents."""

    name: str = "???"
    loader: str = "???"  # a registered corpus loader: jsonl, parquet, csv, folder, hf, hpo, icd10cm, union
    description: str = ""
    path: str | None = None  # file or folder for jsonl / parquet / csv / folder
    id_field: str = "id"
    title_field: str | None = "title"  # null: documents have no title
    text_field: str = "text"
    extensions: list[str] = field(default_factory=lambda: [".txt", ".md", ".html", ".pdf"])
    dataset: str | None = None  # hf: hub id or local path for datasets.load_dataset
    subset: str | None = None  # hf: the dataset config name
    split: str = "train"
    revision: str | None = None
    streaming: bool = False  # hf: stream the dataset instead of downloading it whole
    encoding: str = "utf-8"
    include_obsolete: bool = False  # hpo: include obsolete terms
    # icd10cm: "fold" lists 7th-character codes (S52.521A "…, initial encounter") in their
    # subcategory's document; "codes" makes each one a document of its own (+51k documents)
    seventh_character: str = "fold"
    parts: list[str] = field(default_factory=list)  # union: the corpus configs it reads, in order
    limit: int | None = None  # take the first N documents (smoke runs)
    on_error: str = "raise"  # raise | skip: what a malformed record does

    def __post_init__(self) -> None:
        from biorag.errors import ConfigError

        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"corpus.limit must be at least 1 (or null: every document), not {self.limit}")
        if self.on_error not in ("raise", "skip"):
            raise ConfigError(f"corpus.on_error must be raise or skip, not {self.on_error!r}")


@dataclass
class CorpusStats:
    """What a reader passed over; recorded in the index manifest."""

    documents: int = 0
    skipped_empty: int = 0
    skipped_malformed: int = 0
    duplicate_ids: int = 0
    duplicate_examples: list[str] = field(default_factory=list)
    malformed_examples: list[str] = field(default_factory=list)


class CorpusReader:
    """Base class: subclasses implement `_records()` and `source_fingerprint()`.

    `__iter__` applies the shared rules: empty texts are skipped and counted, duplicate ids
    are skipped (the first wins) and reported, `limit` stops early, and malformed records
    (yielded `InputError`s) are raised or, with `on_error=skip`, counted.
    """

    def __init__(self, cfg: CorpusConfig) -> None:
        if cfg.on_error not in ("raise", "skip"):
            raise InputError(
                f"on_error must be 'raise' or 'skip', not {cfg.on_error!r}", field="on_error"
            )
        self.cfg = cfg
        self.stats = CorpusStats()

    # -- to implement -------------------------------------------------------------------
    def _records(self) -> Iterator[Document | InputError]:
        """Yield documents in a stable order, and an `InputError` (yielded, not raised) for a
        malformed record: a generator that raises is finished, so raising would end the corpus
        where `on_error=skip` should go on to the next record."""
        raise NotImplementedError

    def source_fingerprint(self) -> str:
        """A hash of the source data (file bytes, package version, dataset fingerprint)."""
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Document]:
        self.stats = CorpusStats()
        seen: set[str] = set()
        for doc in self._records():
            if self.cfg.limit is not None and self.stats.documents >= self.cfg.limit:
                return
            if isinstance(doc, InputError):
                if self.cfg.on_error == "raise":
                    raise doc
                self.stats.skipped_malformed += 1
                if len(self.stats.malformed_examples) < 10:
                    self.stats.malformed_examples.append(str(doc))
                log.warning("skipped malformed record: %s", doc)
                continue
            if not doc.text or not doc.text.strip():
                self.stats.skipped_empty += 1
                continue
            if doc.id in seen:
                self.stats.duplicate_ids += 1
                if len(self.stats.duplicate_examples) < 10:
                    self.stats.duplicate_examples.append(f"{doc.id} ({doc.source})")
                log.warning("duplicate document id %r at %s: kept the first", doc.id, doc.source)
                continue
            seen.add(doc.id)
            self.stats.documents += 1
            yield doc


def hash_file(path: str, h: hashlib._Hash | None = None, block: int = 1 << 20) -> str:
    """sha256 of a file's bytes, streamed."""
    h = h or hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()
