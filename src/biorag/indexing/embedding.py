"""Sentence-transformers embedders: batched, L2-normalised, fp16 on GPU, query/passage prompts,
and dual encoders (MedCPT): a query model beside the document model, each side with its own
pooling, length limit, prompt and normalisation, documents optionally read as (title, text)
pairs."""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from biorag.errors import BioragError

log = logging.getLogger(__name__)


@dataclass
class EmbedderConfig:
    """Which sentence-transformers model embeds chunks and queries, and how."""

    name: str = "???"
    model: str = "???"  # hub id, local path, or "package:<module>" (a PyPI package shipping it)
    revision: str | None = None  # hub revision (commit, tag or branch)
    query_prompt: str = ""  # prepended to queries (e5: "query: "; MedCPT-style asymmetric encoders)
    passage_prompt: str = ""  # prepended to passages (e5: "passage: ")
    query_model: str | None = None  # a separate query encoder (MedCPT); null: the same model
    query_revision: str | None = None  # hub revision of the query model; null: `revision`
    normalize: bool = True  # L2-normalise, so inner product = cosine
    query_normalize: bool | None = None  # null: as `normalize`
    # cls | mean | max | lasttoken ...; null: the model's own (its sentence-transformers
    # config, else mean). A plain hub BERT (MedCPT) needs "cls".
    pooling: str | None = None
    query_pooling: str | None = None  # null: as `pooling`
    batch_size: int = 64
    max_seq_length: int | None = None  # null: the model's own
    query_max_seq_length: int | None = None  # null: as `max_seq_length` (MedCPT queries: 64)
    # documents are encoded as the pair (title, text), as MedCPT's article encoder was
    # trained; false: one string, the title in front (chunking.include_title)
    title_pair: bool = False
    device: str = "auto"  # auto | cpu | cuda | mps
    # auto: fp16 on CUDA, bf16 on a CPU with native bf16 units (biorag.hardware), else fp32
    dtype: str = "auto"  # auto | float32 | float16 | bfloat16
    trust_remote_code: bool = False
    description: str = ""


def resolve_model_path(model: str) -> str:
    """A local path for "package:<module>" models; other ids pass through unchanged."""
    if not model.startswith("package:"):
        return model
    module_name = model.removeprefix("package:")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise BioragError(
            f"embedder model {model!r} needs the Python package '{module_name}' "
            f"(pip install {module_name.replace('_', '-')})"
        ) from e
    return str(module.get_model_path())


POOLING_MODES = ("cls", "mean", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")


def model_revision(cfg: EmbedderConfig, model: str | None = None, revision: str | None = None) -> str:
    """What identifies the weights of `model` (default: the document model): the package
    version, the configured revision, or 'local'."""
    model = model or cfg.model
    if model.startswith("package:"):
        dist = model.removeprefix("package:").replace("_", "-")
        try:
            return f"{dist}=={importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            return "unknown"
    if revision or cfg.revision:
        return str(revision or cfg.revision)
    return "local" if Path(model).exists() else "main"


def load_embedder(cfg: EmbedderConfig) -> Embedder:
    """An Embedder for `cfg` (the weights are shared with any loaded before in this process)."""
    return Embedder(cfg)


def pick_device(requested: str = "auto") -> str:
    import torch

    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


class Embedder:
    """Encodes passages and queries with a sentence-transformers model."""

    def __init__(self, cfg: EmbedderConfig) -> None:
        for key in ("pooling", "query_pooling"):
            if getattr(cfg, key) not in (None, *POOLING_MODES):
                raise BioragError(f"embedder.{key} must be one of {', '.join(POOLING_MODES)} "
                                  f"(or null: the model's own), not {getattr(cfg, key)!r}")
        self.cfg = cfg
        self.device = pick_device(cfg.device)
        self._model = self._load(cfg.model, cfg.revision, cfg.pooling, cfg.max_seq_length)
        q_pooling = cfg.query_pooling or cfg.pooling
        q_length = cfg.query_max_seq_length or cfg.max_seq_length
        if cfg.query_model or (q_pooling, q_length) != (cfg.pooling, cfg.max_seq_length):
            q_revision = cfg.query_revision or (cfg.revision if not cfg.query_model else None)
            self._query_model = self._load(cfg.query_model or cfg.model, q_revision, q_pooling, q_length)
        else:
            self._query_model = self._model
        self.dimension = int(self._model.get_embedding_dimension())
        q_dim = int(self._query_model.get_embedding_dimension())
        if q_dim != self.dimension:
            raise BioragError(f"embedder '{cfg.name}': the query model gives {q_dim}-d vectors, the "
                              f"document model {self.dimension}-d; a dual encoder needs one space")
        self.revision = model_revision(cfg)
        self.query_revision = (model_revision(cfg, cfg.query_model, cfg.query_revision)
                               if cfg.query_model else self.revision)
        self.query_normalize = cfg.normalize if cfg.query_normalize is None else cfg.query_normalize

    def _load(self, model: str, revision: str | None, pooling: str | None, max_len: int | None) -> Any:
        dtype = self.cfg.dtype
        if dtype == "auto":
            from biorag.hardware import cpu_bf16

            if self.device == "cuda":
                dtype = "float16"
            else:
                dtype = "bfloat16" if self.device == "cpu" and cpu_bf16() else "float32"
        self.dtype = dtype
        return _sentence_transformer(resolve_model_path(model), self.device, dtype, revision,
                                     self.cfg.trust_remote_code, pooling, max_len)

    @property
    def query_max_length(self) -> int:
        """Tokens a query is cut to (special tokens included)."""
        return int(self._query_model.max_seq_length or 0)

    def queries_over(self, texts: list[str]) -> list[bool]:
        """Which of `texts` (with the query prompt) are longer than the query encoder reads
        (one tokenizer call for all of them)."""
        limit = self.query_max_length
        if not limit or not texts:
            return [False] * len(texts)
        prompt = self.cfg.query_prompt
        ids = self._query_model.tokenizer([prompt + t for t in texts], add_special_tokens=True)["input_ids"]
        return [len(x) > limit for x in ids]

    def passage_inputs(self, chunks: list[Any], include_title: bool) -> list[Any]:
        """What is encoded for each chunk: a (title, text) pair (`title_pair`), or one string."""
        from biorag.types import titled

        if self.cfg.title_pair:
            return [[c.title, c.text] for c in chunks]
        return [titled(c.title, c.text) if include_title else c.text for c in chunks]

    @property
    def tokenizer(self) -> Any:
        return self._model.tokenizer

    def token_ids(self, text: str) -> list[int]:
        """Token ids without special tokens (the chunker measures chunk sizes with this)."""
        # verbose=False: chunk candidates longer than the model's limit are expected here
        return self._model.tokenizer.encode(text, add_special_tokens=False, verbose=False)

    def embed_passages(self, texts: list[Any], show_progress: bool = False) -> np.ndarray:
        """Passage vectors of strings, or of (title, text) pairs with `title_pair`."""
        return self._encode(self._model, texts, self.cfg.passage_prompt, self.cfg.normalize, show_progress)

    def embed_queries(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        return self._encode(self._query_model, texts, self.cfg.query_prompt, self.query_normalize, show_progress)

    def _encode(self, model: Any, texts: list[Any], prompt: str, normalize: bool, show_progress: bool) -> np.ndarray:
        if prompt and texts and not isinstance(texts[0], str):  # a pair: the prompt goes before its first part
            texts = [[prompt + t[0], *t[1:]] for t in texts]
            prompt = ""
        vectors = model.encode(
            texts,
            prompt=prompt or None,
            batch_size=self.cfg.batch_size,
            normalize_embeddings=normalize,
            convert_to_numpy=True,
            show_progress_bar=show_progress,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def identity(self) -> dict[str, Any]:
        """What an index records about its embedder, and checks at search time."""
        return {
            "name": self.cfg.name,
            "model": self.cfg.model,
            "query_model": self.cfg.query_model,
            "revision": self.revision,
            "query_revision": self.query_revision,
            "dimension": self.dimension,
            "normalize": self.cfg.normalize,
            "query_normalize": self.query_normalize,
            "pooling": self.cfg.pooling,
            "query_pooling": self.cfg.query_pooling or self.cfg.pooling,
            "title_pair": self.cfg.title_pair,
            "query_prompt": self.cfg.query_prompt,
            "passage_prompt": self.cfg.passage_prompt,
            "max_seq_length": int(self._model.max_seq_length or 0),
            "query_max_seq_length": self.query_max_length,
            "dtype": self.dtype,  # recorded, not checked: an fp32 query searches a bf16 build
        }


@functools.lru_cache(maxsize=4)
def _sentence_transformer(
    path: str, device: str, dtype: str, revision: str | None, trust_remote_code: bool,
    pooling: str | None = None, max_seq_length: int | None = None,
) -> Any:
    """Load a model once per process; queries, builds and runs in one process share it.
    `pooling` builds it as a transformer plus that pooling (a plain hub encoder such as
    MedCPT's, whatever sentence-transformers config it has or lacks)."""
    import torch
    from sentence_transformers import SentenceTransformer

    kw: dict[str, Any] = {"revision": revision, "trust_remote_code": trust_remote_code}
    try:
        if pooling:
            from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

            body = Transformer(path, max_seq_length=max_seq_length, model_kwargs={"dtype": getattr(torch, dtype), **kw},
                               processor_kwargs=dict(kw), config_kwargs=dict(kw))
            model = SentenceTransformer(modules=[body, Pooling(body.get_embedding_dimension(), pooling_mode=pooling)],
                                        device=device)
        else:
            model = SentenceTransformer(path, device=device, model_kwargs={"dtype": getattr(torch, dtype)}, **kw)
        if max_seq_length:
            model.max_seq_length = max_seq_length
        return model
    except OSError as e:
        raise BioragError(
            f"could not load embedder {path!r}: {e}. If it is a hub id, the hub may be "
            "unreachable from this machine; a local path or a package:<module> model works offline."
        ) from e
