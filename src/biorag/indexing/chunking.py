"""Documents to chunks with llama-index's sentence splitter, sizes in embedder tokens."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass

from biorag.types import Chunk, Document


@dataclass
class ChunkingConfig:
    """How documents are split; part of the index fingerprint."""

    splitter: str = "sentence"  # llama-index SentenceSplitter
    chunk_size: int = 200  # tokens of the embedder's tokenizer
    chunk_overlap: int = 20  # tokens shared by neighbouring chunks
    include_title: bool = True  # prefix each chunk's text with its document title when embedding

    def __post_init__(self) -> None:
        from biorag.errors import ConfigError

        if self.chunk_size < 1:
            raise ConfigError(f"chunking.chunk_size must be at least 1 token, not {self.chunk_size}")
        if not 0 <= self.chunk_overlap < self.chunk_size:
            raise ConfigError(f"chunking.chunk_overlap must be in [0, chunk_size={self.chunk_size}), "
                              f"not {self.chunk_overlap}")


def make_splitter(cfg: ChunkingConfig, count_tokens: Callable[[str], list]) -> object:
    """A llama-index SentenceSplitter measuring length with `count_tokens` (a tokenizer's encode).

    The tokenizer is passed explicitly: llama-index's default (tiktoken) downloads its
    vocabulary at first use and measures in another model's tokens.
    """
    from llama_index.core.node_parser import SentenceSplitter

    if cfg.splitter != "sentence":
        raise ValueError(f"unknown splitter {cfg.splitter!r}; known: sentence")
    if cfg.chunk_overlap >= cfg.chunk_size:
        raise ValueError("chunking.chunk_overlap must be smaller than chunking.chunk_size")
    return SentenceSplitter(
        chunk_size=cfg.chunk_size,
        chunk_overlap=cfg.chunk_overlap,
        tokenizer=count_tokens,
        include_metadata=False,
        include_prev_next_rel=False,
    )


def chunk_documents(
    docs: Iterable[Document], splitter: object, batch: int = 256
) -> Iterator[Chunk]:
    """Stream chunks of `docs` in order, keeping doc id, title and character offsets."""
    buffer: list[Document] = []
    for doc in docs:
        buffer.append(doc)
        if len(buffer) >= batch:
            yield from _split(buffer, splitter)
            buffer = []
    if buffer:
        yield from _split(buffer, splitter)


def _split(docs: list[Document], splitter) -> Iterator[Chunk]:
    # split_text is what get_nodes_from_documents runs for each document; the offsets are
    # found as it finds them (each chunk searched for from one past the previous start),
    # without building a llama-index Document and node objects per chunk
    for doc in docs:
        search = 0
        for i, text in enumerate(t for t in splitter.split_text(doc.text) if t):
            found = doc.text.find(text, search)
            start = max(found, 0)
            if found >= 0:
                search = found + 1
            yield Chunk(
                id=f"{doc.id}#{i}",
                doc_id=doc.id,
                text=text,
                title=doc.title,
                start=start,
                end=start + len(text),
                ordinal=i,
            )


def chunking_params(cfg: ChunkingConfig) -> dict:
    return asdict(cfg)
