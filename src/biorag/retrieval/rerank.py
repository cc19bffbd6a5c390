"""A rerank stage after first-stage retrieval: the first stage fetches `candidates`, a reranker
scores each (query, passage) pair, and the best k go on.

Two kinds of reranker (experiments/reranker/):
- `cross-encoder`: sentence-transformers' `CrossEncoder` (MedCPT's cross-encoder, BGE's
  reranker, the MS MARCO MiniLM);
- `lm`: no extra model. A passage scores the log-likelihood of the question given it under a
  biorag generator, the unsupervised passage re-ranking (UPR) of Sachan et al. (2022). It goes
  through the generator's own batched `loglikelihood` (the hf backend's shared-head scoring).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from biorag.errors import BioragError, ConfigError
from biorag.retrieval.retrievers import Retriever
from biorag.retrieval.spec import DEFAULT_CANDIDATES
from biorag.types import Hit, titled

log = logging.getLogger(__name__)

KINDS = ("cross-encoder", "lm")
DEFAULT_LM = "smollm2"  # what an LM reranker scores with outside a cell, unless it names a model
UPR_INSTRUCTION = "Please write a question based on this passage."


@dataclass
class RerankerConfig:
    """A reranker: a cross-encoder model, or a language model scoring the question."""

    name: str = "???"
    kind: str = "cross-encoder"  # cross-encoder | lm
    # cross-encoder: hub id or local folder. lm: a model config (experiments/model/); null:
    # the cell's own model (with its adapter), or smollm2 outside a cell (index search,
    # retrieval eval)
    model: str | None = None
    revision: str | None = None  # hub revision of a cross-encoder
    max_length: int = 512  # tokens of a (query, passage) pair the cross-encoder reads
    batch_size: int = 32  # pairs per forward pass (cross-encoder)
    device: str = "auto"
    instruction: str = UPR_INSTRUCTION  # lm: what follows the passage, before the question
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"reranker.kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if self.kind == "cross-encoder" and not self.model:
            raise ConfigError(f"reranker '{self.name}' is a cross-encoder: set reranker.model")


def passage(hit: Hit) -> str:
    return titled(hit.chunk.title, hit.chunk.text)


class CrossEncoderReranker:
    """Scores (query, passage) pairs with a sentence-transformers CrossEncoder."""

    def __init__(self, cfg: RerankerConfig) -> None:
        from sentence_transformers import CrossEncoder

        from biorag.indexing.embedding import pick_device

        self.cfg = cfg
        try:
            self.model = CrossEncoder(str(cfg.model), max_length=cfg.max_length, device=pick_device(cfg.device),
                                      revision=cfg.revision)
        except OSError as e:
            raise BioragError(f"could not load cross-encoder {cfg.model!r}: {e}. A hub id needs the hub "
                              "(or a local copy of the model)") from e

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        if not pairs:
            return []
        out = self.model.predict(list(pairs), batch_size=self.cfg.batch_size, show_progress_bar=False,
                                 convert_to_numpy=True)
        return [float(x) for x in out]

    def identity(self) -> dict[str, Any]:
        return {"kind": self.cfg.kind, "model": self.cfg.model, "revision": self.cfg.revision,
                "max_length": self.cfg.max_length}


class LMReranker:
    """log p(question | passage) under a generator: the context is the passage and the
    instruction, the continuation the question."""

    def __init__(self, cfg: RerankerConfig, generator: Any = None, model_key: str = "") -> None:
        self.cfg = cfg
        self.generator, self.model_key = generator, model_key

    def bind(self, generator: Any, model_key: str) -> None:
        """Score with `generator` (the cell's model); `model_key` identifies it and its adapter."""
        self.generator, self.model_key = generator, model_key

    def requests(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        return [(f"Passage: {p}\n{self.cfg.instruction}\nQuestion:", f" {q.strip()}") for q, p in pairs]

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        if self.generator is None:  # outside a cell (search, retrieval eval): its own model, on first use
            from biorag.models.loading import load_generator, load_model_config

            model = load_model_config(self.cfg.model or DEFAULT_LM)
            log.info("reranker %s scores with model %s", self.cfg.name, model.name)
            self.bind(load_generator(model), model_key(model, "none"))
        if not pairs:
            return []
        return [r.logprob for r in self.generator.loglikelihood(self.requests(pairs))]

    def identity(self) -> dict[str, Any]:
        return {"kind": self.cfg.kind, "model": self.model_key, "instruction": self.cfg.instruction}


def load_reranker(cfg: RerankerConfig) -> CrossEncoderReranker | LMReranker:
    return CrossEncoderReranker(cfg) if cfg.kind == "cross-encoder" else LMReranker(cfg)


def load_reranker_config(name_or_path: str) -> RerankerConfig:
    from biorag.config import load_option

    return load_option("reranker", name_or_path, RerankerConfig)


class RerankingRetriever:
    """A first stage fetching `candidates` per query, reordered by a reranker; the hits keep
    their first-stage rank, and `seconds` adds up the time spent reranking."""

    def __init__(self, first: Retriever, reranker: CrossEncoderReranker | LMReranker,
                 candidates: int = DEFAULT_CANDIDATES) -> None:
        if candidates < 1:
            raise ConfigError(f"retriever.candidates must be at least 1, not {candidates}")
        self.first, self.reranker, self.candidates = first, reranker, candidates
        self.mode = f"{first.mode}+rerank"
        self.index = first.index
        self.seconds = 0.0
        self.scored = 0  # (query, passage) pairs scored

    def retrieve(self, query: str, k: int = 5) -> list[Hit]:
        return self.retrieve_batch([query], k)[0]

    def retrieve_batch(self, queries: Sequence[str], k: int = 5) -> list[list[Hit]]:
        found = self.first.retrieve_batch(queries, max(k, self.candidates))
        pairs = [(q, passage(h)) for q, hits in zip(queries, found, strict=True) for h in hits]
        t0 = time.perf_counter()
        scores = iter(self.reranker.score(pairs))
        self.seconds += time.perf_counter() - t0
        self.scored += len(pairs)
        out = []
        for hits in found:
            scored = [(next(scores), h) for h in hits]
            # the reranker's order; ties keep the first stage's
            scored.sort(key=lambda sh: (-sh[0], sh[1].rank))
            out.append([Hit(h.chunk, s, rank, first_rank=h.rank) for rank, (s, h) in enumerate(scored[:k], 1)])
        return out

    def identity(self) -> dict[str, Any]:
        return {"reranker": self.reranker.identity(), "candidates": self.candidates}


def stages(retriever: Any) -> Iterator[Any]:
    """`retriever` and the stages it wraps, outermost first (a cache's inner retriever, a
    rerank stage's first stage), down to the one that searches (or fuses) indexes."""
    while retriever is not None:
        yield retriever
        retriever = getattr(retriever, "inner", None) or getattr(retriever, "first", None)


def find(retriever: Any, kind: type) -> Any:
    """The retriever of type `kind` inside `retriever` (a cache, a rerank stage), or None."""
    return next((r for r in stages(retriever) if isinstance(r, kind)), None)


def bind_generator(retriever: Any, generator: Any, model_key: str) -> None:
    """Give an LM reranker inside `retriever` the cell's generator (no-op otherwise)."""
    stage = find(retriever, RerankingRetriever)
    if stage is not None and isinstance(stage.reranker, LMReranker) and not stage.reranker.cfg.model:
        stage.reranker.bind(generator, model_key)


def model_key(model_cfg: Any, adapter_fingerprint: str) -> str:
    """What identifies an LM reranker's scores: the model config and its adapter."""
    from dataclasses import asdict

    h = hashlib.sha256(json.dumps(asdict(model_cfg), sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{model_cfg.name}:{h}:{adapter_fingerprint}"
