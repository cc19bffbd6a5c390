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
    # auto: fp16 on CUDA and MPS, bf16 on a CPU with native bf16 units (biorag.hardware), else fp32
    dtype: str = "auto"  # auto | float32 | float16 | bfloat16
    # auto: torch on a GPU or a CPU with bf16 units; elsewhere the first passages of a build
    # are encoded both ways and ONNX Runtime is kept where it is faster and keeps cosine >= 0.99
    # to fp32 (biorag.indexing.onnx_backend); a search follows the backend its index was built
    # with. torch | onnx (CPU only) force one.
    backend: str = "auto"
    quantize: str | None = None  # the onnx backend's weights: int8 (null: int8) | none (fp32)
    trust_remote_code: bool = False
    description: str = ""

    def backend_label(self) -> str:
        """A forced backend as manifests record it: torch, onnx (fp32) or onnx-int8."""
        from biorag.indexing.onnx_backend import variant

        return "torch" if self.backend == "torch" else variant(self.quantize)


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


def load_embedder(cfg: EmbedderConfig, backend: str | None = None) -> Embedder:
    """An Embedder for `cfg` (the weights are shared with any loaded before in this process);
    `backend` (torch, onnx, onnx-int8) fixes the backend, as a resumed build's first shards had."""
    embedder = Embedder(cfg)
    if backend:
        embedder.use_backend(backend)
    return embedder


def pick_device(requested: str = "auto") -> str:
    """auto: CUDA, else Apple's MPS where torch reports it, else the CPU."""
    import torch

    from biorag.hardware import mps_available, require_mps

    if requested == "mps":
        require_mps("")
    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if mps_available():
        return "mps"
    return "cpu"


class Embedder:
    """Encodes passages and queries with a sentence-transformers model."""

    def __init__(self, cfg: EmbedderConfig) -> None:
        for key in ("pooling", "query_pooling"):
            if getattr(cfg, key) not in (None, *POOLING_MODES):
                raise BioragError(f"embedder.{key} must be one of {', '.join(POOLING_MODES)} "
                                  f"(or null: the model's own), not {getattr(cfg, key)!r}")
        from biorag.indexing import onnx_backend

        if cfg.backend not in onnx_backend.BACKENDS:
            raise BioragError(f"embedder.backend must be one of {', '.join(onnx_backend.BACKENDS)}, "
                              f"not {cfg.backend!r}")
        if cfg.quantize not in onnx_backend.QUANTIZE:
            raise BioragError(f"embedder.quantize must be int8, none or null, not {cfg.quantize!r}")
        self.cfg = cfg
        self.device = pick_device(cfg.device)
        if cfg.backend == "onnx" and self.device != "cpu":
            raise BioragError(f"embedder.backend=onnx runs on the CPU; this embedder's device is "
                              f"{self.device} (set embedder.device=cpu, or embedder.backend=torch)")
        doc_source = (cfg.model, cfg.revision, cfg.pooling, cfg.max_seq_length)
        self._model = self._load(*doc_source)
        q_pooling = cfg.query_pooling or cfg.pooling
        q_length = cfg.query_max_seq_length or cfg.max_seq_length
        if cfg.query_model or (q_pooling, q_length) != (cfg.pooling, cfg.max_seq_length):
            q_revision = cfg.query_revision or (cfg.revision if not cfg.query_model else None)
            query_source = (cfg.query_model or cfg.model, q_revision, q_pooling, q_length)
            self._query_model = self._load(*query_source)
        else:
            query_source, self._query_model = doc_source, self._model
        self._sources = (doc_source, query_source)  # model, revision, pooling, length: each side
        self.dimension = int(self._model.get_embedding_dimension())
        q_dim = int(self._query_model.get_embedding_dimension())
        if q_dim != self.dimension:
            raise BioragError(f"embedder '{cfg.name}': the query model gives {q_dim}-d vectors, the "
                              f"document model {self.dimension}-d; a dual encoder needs one space")
        self.revision = model_revision(cfg)
        self.query_revision = (model_revision(cfg, cfg.query_model, cfg.query_revision)
                               if cfg.query_model else self.revision)
        self.query_normalize = cfg.normalize if cfg.query_normalize is None else cfg.query_normalize
        self._torch = (self._model, self._query_model)
        self.choice: dict[str, Any] | None = None  # what `auto` measured, when it measured
        # torch | onnx | onnx-int8, as manifests record it; None: auto, decided by the first passages
        self.backend: str | None = None
        if cfg.backend != "auto":
            self.use_backend(cfg.backend_label())
        elif self.device != "cpu" or self.dtype != "float32" or not onnx_backend.auto_allowed():
            self.use_backend("torch")  # measured: with bf16 units torch bf16 is the fastest
        elif (cached := onnx_backend.cached_choice(self._choice_key())) is not None:
            self.choice = cached
            self.use_backend(cached["backend"])

    @property
    def backend_label(self) -> str:
        """What the manifest records: torch, onnx (fp32) or onnx-int8 (undecided: torch)."""
        return self.backend or "torch"

    def use_backend(self, label: str) -> None:
        """Encode with torch, or with ONNX Runtime: 'onnx' (fp32) or 'onnx-int8'."""
        if label == "torch":
            self._model, self._query_model = self._torch
            self.backend = "torch"
            return
        from biorag.indexing import onnx_backend

        if label not in ("onnx", "onnx-int8"):
            raise BioragError(f"unknown embedding backend {label!r} (torch, onnx or onnx-int8)")
        if not onnx_backend.available():
            raise BioragError("the onnx embedding backend needs onnxruntime (pip install onnxruntime)")
        quantize = "int8" if label == "onnx-int8" else "none"
        (doc, query), (doc_source, query_source) = self._torch, self._sources
        self._model = self._onnx(doc, quantize, *doc_source)
        self._query_model = self._model if query is doc else self._onnx(query, quantize, *query_source)
        self.backend = label

    def _onnx(self, st_model: Any, quantize: str, model: str, revision: str | None, pooling: str | None,
              max_len: int | None) -> Any:
        from biorag.indexing import onnx_backend

        path = resolve_model_path(model)
        return onnx_backend.onnx_model(_sentence_transformer.__wrapped__, path,
                                       model_revision(self.cfg, model, revision), quantize,
                                       "cpu", "float32", revision, self.cfg.trust_remote_code,
                                       pooling, max_len or st_model.max_seq_length)

    def follow(self, built: dict[str, Any]) -> None:
        """Take the backend an index was built with, when this embedder's is `auto`."""
        if self.cfg.backend == "auto":
            self.use_backend(built.get("backend") or "torch")

    def _choice_key(self) -> str:
        import torch

        from biorag.indexing import onnx_backend

        return "|".join([onnx_backend.cpu_name(), f"threads={torch.get_num_threads()}", self.cfg.model,
                         self.revision, str(self.cfg.query_model), onnx_backend.variant(self.cfg.quantize)])

    def _decide(self, texts: list[Any]) -> None:
        """`auto` on a CPU without bf16 units: measure both backends on these passages."""
        from biorag.indexing import onnx_backend

        if len(texts) < 32:  # too few to time: torch, and nothing cached
            self.use_backend("torch")
            return
        torch_model = self._torch[0]
        label = onnx_backend.variant(self.cfg.quantize)
        self.use_backend(label)
        onnx_model = self._model
        choice = onnx_backend.calibrate(
            lambda t: self._encode(torch_model, t, self.cfg.passage_prompt, self.cfg.normalize, False),
            lambda t: self._encode(onnx_model, t, self.cfg.passage_prompt, self.cfg.normalize, False),
            texts, label)
        log.info("embedder %s: onnx %s is %.2fx torch fp32 here, cosine %.4f: using %s", self.cfg.name,
                 self.backend_label, choice["speedup"], choice["cosine"], choice["backend"])
        self.choice = choice
        onnx_backend.save_choice(self._choice_key(), choice)
        self.use_backend(choice["backend"])

    def _load(self, model: str, revision: str | None, pooling: str | None, max_len: int | None) -> Any:
        dtype = self.cfg.dtype
        if dtype == "auto":
            from biorag.hardware import cpu_bf16

            if self.device.startswith("cuda") or self.device == "mps":
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
        if self.backend is None:
            self._decide(texts)
        return self._encode(self._model, texts, self.cfg.passage_prompt, self.cfg.normalize, show_progress)

    def embed_queries(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        if self.backend is None:  # not yet told an index's backend (`follow`): torch
            self.use_backend("torch")
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
            # recorded, not checked (onnx-int8: int8 weights, fp32 activations)
            "dtype": {"onnx": "float32", "onnx-int8": "int8"}.get(self.backend_label, self.dtype),
            "backend": self.backend_label,  # checked: queries are encoded as the passages were
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
