"""Several corpora read as one (`loader: union`): MedRAG's MedCorp is PubMed, textbooks,
StatPearls and Wikipedia. Each part is a corpus config of its own, read in the order given;
every document records the part it came from (`metadata.corpus`), and the first of two
documents with the same id wins (the shared rule of `CorpusReader`)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import replace

from biorag.corpora.base import CorpusConfig, CorpusReader
from biorag.errors import InputError
from biorag.types import Document


class UnionReader(CorpusReader):
    """The documents of every corpus named in `parts`, one part after the other."""

    def __init__(self, cfg: CorpusConfig) -> None:
        super().__init__(cfg)
        if not cfg.parts:
            raise InputError("a union corpus needs parts: the corpus configs it reads", field="parts")
        if cfg.name in cfg.parts:
            raise InputError(f"union corpus {cfg.name} names itself among its parts", field="parts")
        self._readers: list[CorpusReader] | None = None

    def readers(self) -> list[CorpusReader]:
        if self._readers is None:
            from biorag.config import load_option
            from biorag.corpora import open_corpus

            self._readers = [open_corpus(load_option("corpus", p, CorpusConfig)) for p in self.cfg.parts]
        return self._readers

    def _records(self) -> Iterator[Document | InputError]:
        for reader in self.readers():
            for doc in reader:
                yield replace(doc, metadata={**doc.metadata, "corpus": reader.cfg.name})

    def source_fingerprint(self) -> str:
        h = hashlib.sha256()
        for reader in self.readers():
            h.update(f"{reader.cfg.name}\0{reader.source_fingerprint()}\0".encode())
        return f"union:{h.hexdigest()}"
