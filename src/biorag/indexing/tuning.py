"""A scale-aware search default: the shortlist (`k_factor`) or lists visited (`nprobe`) an index
needs for its size, found at build time rather than guessed.

Recall@10 at a fixed `k_factor` falls with N (0.983 at 1M, 0.914 at 8M on the scale benchmark),
so one default cannot fit every size. While the build streams every vector into the index,
`ExactTopK` keeps the exact inner-product top 10 of a seeded sample of the vectors themselves
(each query's own row left out, so it stands for a held-out query); `recommend` then searches the
built index with growing settings, from the configured one up, and records the smallest that
reaches `index.target_recall` in the manifest, where a search takes it unless the user sets one.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from biorag.indexing.faiss_index import release_list_pages

log = logging.getLogger(__name__)

K = 10
QUERIES = 100  # held-out queries: recall is read to about +-0.01 at 0.95
_LADDER = (1, 2, 3, 4, 6, 8)  # multiples of the configured value tried, in order


def query_rows(n: int, seed: int) -> np.ndarray | None:
    """The sorted rows used as held-out queries; None when the index is too small to say."""
    if n < 20 * K:
        return None
    rng = np.random.default_rng(seed + 7919)
    return np.sort(rng.choice(n, size=min(QUERIES, n // 20), replace=False))


class ExactTopK:
    """The exact top `K` rows by inner product for `queries` over every vector added, block by
    block, leaving out each query's own row."""

    def __init__(self, queries: np.ndarray, rows: np.ndarray) -> None:
        self.queries, self.rows = np.ascontiguousarray(queries, dtype=np.float32), rows
        self.scores = np.full((len(rows), K), -np.inf, dtype=np.float32)
        self.ids = np.full((len(rows), K), -1, dtype=np.int64)

    def add(self, offset: int, vectors: np.ndarray) -> None:
        s = self.queries @ vectors.T
        own = (self.rows >= offset) & (self.rows < offset + len(vectors))
        s[np.flatnonzero(own), self.rows[own] - offset] = -np.inf  # not its own neighbour
        k = min(K, s.shape[1])
        top = np.argpartition(-s, k - 1, axis=1)[:, :k]
        cand_s = np.concatenate([self.scores, np.take_along_axis(s, top, 1)], 1)
        cand_i = np.concatenate([self.ids, top + offset], 1)
        order = np.argsort(-cand_s, axis=1, kind="stable")[:, :K]
        self.scores, self.ids = np.take_along_axis(cand_s, order, 1), np.take_along_axis(cand_i, order, 1)


def recall(index: Any, truth: ExactTopK, batch: int = 10) -> float:
    """Recall@10 of `index` on the held-out queries, searched `batch` at a time; an on-disk
    index's mapped lists leave the resident set after each batch (`release_list_pages`)."""
    parts = []
    for a in range(0, len(truth.queries), batch):
        parts.append(index.search(truth.queries[a:a + batch], K + 1)[1])
        release_list_pages(index)
    found = np.concatenate(parts)
    hits = [len(set(f[f != r][:K].tolist()) & set(t.tolist())) / K
            for f, r, t in zip(found, truth.rows, truth.ids, strict=True)]
    return float(np.mean(hits))


def recommend(index: Any, cfg: Any, truth: ExactTopK | None) -> dict[str, Any]:
    """The smallest search setting, from the configured one up, whose recall@10 against exact
    search reaches `cfg.target_recall`: `k_factor` for a refined IVF-PQ, else `nprobe`; {} for
    indexes without such a setting, or when the check is off or the index too small."""
    import faiss

    if truth is None or cfg.target_recall is None or cfg.type not in ("ivf", "ivfpq"):
        return {}
    refined = cfg.type == "ivfpq" and cfg.refine != "none"
    key = "k_factor" if refined else "nprobe"
    ivf = faiss.extract_index_ivf(index.base if hasattr(index, "base") else index)
    start = getattr(cfg, key)
    ladder = sorted({start * m for m in _LADDER} if refined else {min(start * m, ivf.nlist) for m in _LADDER})
    ivf.nprobe = cfg.nprobe
    measured: dict[str, float] = {}
    chosen = ladder[-1]
    for value in ladder:
        if refined:
            index.k_factor = value
        else:
            ivf.nprobe = value
        measured[str(value)] = round(recall(index, truth), 4)
        if measured[str(value)] >= cfg.target_recall:
            chosen = value
            break
    ivf.nprobe = cfg.nprobe
    if refined:
        index.k_factor = cfg.k_factor
    reached = measured[str(chosen)] >= cfg.target_recall
    log.info("search default %s=%d: recall@10 %.3f on %d held-out queries (target %.2f)%s", key, chosen,
             measured[str(chosen)], len(truth.rows), cfg.target_recall, "" if reached else ", not reached")
    return {key: int(chosen), "recall@10": measured[str(chosen)], "target_recall": cfg.target_recall,
            "queries": len(truth.rows), "tried": measured, "reached": reached}
