"""Corpus readers: one per source, all streaming `Document`s."""

from __future__ import annotations

from biorag import registry
from biorag.corpora.base import CorpusConfig, CorpusReader, CorpusStats

__all__ = ["CorpusConfig", "CorpusReader", "CorpusStats", "open_corpus"]


def open_corpus(cfg: CorpusConfig) -> CorpusReader:
    """The reader for a corpus config (the loader name is looked up in the registry)."""
    return registry.resolve("corpus_loader", cfg.loader)(cfg)
