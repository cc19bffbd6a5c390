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
    from llama_index.core.schema import Document as LIDocument

    buffer: list[Document] = []
    for doc in docs:
        buffer.append(doc)
        if len(buffer) >= batch:
            yield from _split(buffer, splitter, LIDocument)
            buffer = []
    if buffer:
        yield from _split(buffer, splitter, LIDocument)


def _split(docs: list[Document], splitter, LIDocument) -> Iterator[Chunk]:
    for doc in docs:
        nodes = splitter.get_nodes_from_documents([LIDocument(text=doc.text, id_=doc.id)])
        for i, node in enumerate(nodes):
            start = node.start_char_idx if node.start_char_idx is not None else 0
            end = node.end_char_idx if node.end_char_idx is not None else start + len(node.text)
            yield Chunk(
                id=f"{doc.id}#{i}",
                doc_id=doc.id,
                text=node.text,
                title=doc.title,
                start=start,
                end=end,
                ordinal=i,
            )


def chunking_params(cfg: ChunkingConfig) -> dict:
    return asdict(cfg)
