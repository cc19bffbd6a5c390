"""BM25 over an index's chunk store (bm25s), built beside the FAISS vectors.

The tokenizer's settings and vocabulary are saved with the index, so the query side
(`biorag.retrieval.BM25Retriever`) tokenises exactly as the build did.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from biorag import progress
from biorag.atomic import writing
from biorag.types import titled

BM25_SETTINGS = "biorag-bm25.json"


def bm25_tokenizer(settings: dict[str, Any]) -> Any:
    import Stemmer
    from bm25s.tokenization import Tokenizer

    stemmer = Stemmer.Stemmer(settings["stemmer"]).stemWord if settings.get("stemmer") else None
    return Tokenizer(stopwords=settings["stopwords"], stemmer=stemmer)


def build_bm25(
    chunks_file: Path,
    out_dir: Path,
    include_title: bool = True,
    stopwords: str = "en",
    stemmer: str | None = "english",
) -> None:
    """Index a chunk store with bm25s; the tokenizer's vocabulary and settings are saved beside it."""
    import bm25s
    import pyarrow.parquet as pq

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    table = pq.read_table(chunks_file, columns=["title", "text"])
    titles, texts = table.column("title").to_pylist(), table.column("text").to_pylist()
    settings = {"stopwords": stopwords, "stemmer": stemmer, "include_title": include_title}
    tokenizer = bm25_tokenizer(settings)
    with progress.bar("bm25 tokenising", total=len(texts)) as bar:
        ids = []
        for start in range(0, len(texts), 10_000):
            batch = [
                titled(t, x) if include_title else x
                for t, x in zip(
                    titles[start : start + 10_000], texts[start : start + 10_000], strict=True
                )
            ]
            ids.extend(tokenizer.tokenize(batch, return_as="ids", show_progress=False))
            bar.advance(len(batch))
    retriever = bm25s.BM25()
    retriever.index(ids, show_progress=False)
    # written into a folder of its own, renamed into place when whole; a failed write (a full
    # disk) removes it
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    needed = retriever.scores["data"].nbytes * 3 if isinstance(getattr(retriever, "scores", None), dict) else 0
    try:
        with writing(out_dir.parent, needed, "writing the BM25 index"):
            tmp.mkdir()
            retriever.save(str(tmp), show_progress=False)
            tokenizer.save_vocab(str(tmp))
            tokenizer.save_stopwords(str(tmp))
            (tmp / BM25_SETTINGS).write_text(json.dumps(settings, indent=2))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(out_dir, ignore_errors=True)  # one a stopped build left
    os.replace(tmp, out_dir)
