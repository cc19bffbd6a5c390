"""ONNX Runtime embedding for CPUs without bf16 units, int8 by default.

sentence-transformers' own `backend="onnx"` / `"openvino"` load through optimum-onnx and
optimum-intel, which pin transformers below the version biorag needs, so biorag exports the
model's transformer itself (`torch.onnx.export`, eager attention so that onnxruntime's BERT
optimizer fuses it), quantises its MatMul weights to int8 per channel
(`onnxruntime.quantization.quantize_dynamic`), and runs the session *inside* the
sentence-transformers model in place of the torch transformer: tokenisation, prompts,
(title, text) pairs, pooling, normalisation and length-sorted batching stay sentence-
transformers' own. The export is made once per model and cached under
`$BIORAG_CACHE/onnx/<key>/` (key: the model's files, revision, torch, onnxruntime, variant).

`backend: auto` measures instead of assuming: on a CPU without native bf16 the first passage
batch of a build is encoded both ways, and ONNX is kept only where it is faster and its vectors
keep cosine >= 0.99 to torch's fp32 ones and recall@10 >= 0.98 of their neighbours (the quality
guard); the verdict is cached per CPU and
model in `$BIORAG_CACHE/onnx/choices.json`. Measured on Sapphire Rapids, 2 threads, MiniLM
over 1,500 HPO chunks: torch fp32 47/s, bf16 124/s, ONNX fp32 40/s, ONNX int8 63/s (cosine
0.995, but neighbour recall@10 0.94 on 300 HPO terms: the guard rejects it), OpenVINO fp32
52/s and bf16 102/s: with bf16 units torch bf16 wins, so `auto` keeps it there.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from biorag.errors import BioragError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnx")
QUANTIZE = (None, "none", "int8")
MIN_COSINE = 0.99  # the quality guard: mean cosine of fast-path vectors to torch fp32 ones
MIN_RECALL = 0.98  # ... and recall@10 of their neighbours against fp32's exact ones
MIN_SPEEDUP = 1.1  # ONNX must beat torch by this much for `auto` to take it
CALIBRATION_TEXTS = 128
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def auto_allowed() -> bool:
    """Whether `backend: auto` may try ONNX: onnxruntime is installed and BIORAG_ONNX_AUTO is
    not 0 (0 keeps torch everywhere unless a config asks for onnx)."""
    off = os.environ.get("BIORAG_ONNX_AUTO", "1").strip().lower() in ("0", "false", "no", "off")
    return not off and available()


def variant(quantize: str | None) -> str:
    """What `identity()` records: 'onnx-int8' or 'onnx' (fp32)."""
    return "onnx" if quantize == "none" else "onnx-int8"


def cache_root() -> Path:
    from biorag.models.gguf import cache_root as biorag_cache

    return biorag_cache() / "onnx"


def _model_key(path: str, revision: str, quantize: str) -> str:
    import onnxruntime
    import torch

    files = []
    folder = Path(path)
    if folder.is_dir():  # a local copy: its weights' sizes and times, so an edit re-exports
        for f in sorted(folder.rglob("*")):
            if f.is_file() and f.suffix in (".safetensors", ".bin", ".json"):
                st = f.stat()
                files.append((str(f.relative_to(folder)), st.st_size, int(st.st_mtime)))
    payload = {"path": str(folder.resolve()) if folder.exists() else path, "revision": revision,
               "files": files, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
               "quantize": quantize, "format": 1}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


class _Exportable:
    """The transformer's forward over fixed named inputs, returning the token embeddings."""

    def __new__(cls, model: Any, names: tuple[str, ...]) -> Any:
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, *args: Any) -> Any:
                return self.model(**dict(zip(names, args, strict=True))).last_hidden_state

        return Wrapped()


def export(st_model: Any, folder: Path, quantize: str) -> tuple[Path, dict[str, Any]]:
    """Export `st_model`'s transformer to `folder/model.onnx` (and `model-int8.onnx`); atomic:
    a crash leaves no half-written cache. Returns the file and what was done."""
    import torch

    target = folder / ("model-int8.onnx" if quantize == "int8" else "model.onnx")
    meta_file = folder / "export.json"
    if target.exists() and meta_file.exists():
        return target, json.loads(meta_file.read_text())
    started = time.perf_counter()
    body = copy.deepcopy(st_model[0].auto_model).float().eval()
    if hasattr(body, "set_attn_implementation"):
        with contextlib.suppress(ValueError, AttributeError):
            body.set_attn_implementation("eager")  # the pattern onnxruntime's optimizer fuses
    sample = st_model.tokenizer(["a short sentence", "a somewhat longer second sentence here"],
                                padding=True, return_tensors="pt")
    names = tuple(n for n in INPUTS if n in sample)
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=folder.parent))
    try:
        raw = work / "raw.onnx"
        axes = {n: {0: "batch", 1: "sequence"} for n in (*names, "last_hidden_state")}
        with torch.no_grad():
            torch.onnx.export(_Exportable(body, names), tuple(sample[n] for n in names), str(raw),
                              input_names=list(names), output_names=["last_hidden_state"],
                              dynamic_axes=axes, opset_version=17, dynamo=False)
        fused = _optimise(raw, work / "model.onnx", body.config)
        meta = {"inputs": list(names), "fused": fused, "model_type": body.config.model_type}
        if quantize == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            # MatMul weights only, one scale per output channel: per-tensor int8 over every op
            # measured mean cosine 0.953 to fp32 on HPO, this 0.995
            quantize_dynamic(str(work / "model.onnx"), str(work / "model-int8.onnx"),
                             weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=["MatMul"], extra_options={"DefaultTensorType": 1})
        raw.unlink()
        meta["export_seconds"] = round(time.perf_counter() - started, 2)
        (work / "export.json").write_text(json.dumps(meta, indent=2))
        shutil.rmtree(folder, ignore_errors=True)  # a stale or foreign copy: ours replaces it
        os.replace(work, folder)
    except Exception as e:
        raise BioragError(
            f"could not export embedder {getattr(body.config, '_name_or_path', '?')} to ONNX ({e}); "
            "use embedder.backend=torch"
        ) from e
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("exported %s to ONNX in %.1f s (%s)", target.name, meta["export_seconds"], folder)
    return target, meta


def _optimise(raw: Path, out: Path, config: Any) -> bool:
    """onnxruntime's transformer fusions (attention, layer norm, GELU) where it knows the
    architecture; the plain export otherwise. True when attention was fused."""
    from onnxruntime.transformers import optimizer

    heads = getattr(config, "num_attention_heads", 0)
    hidden = getattr(config, "hidden_size", 0)
    kind = config.model_type if config.model_type in ("bert", "roberta", "xlm-roberta") else None
    if kind and heads and hidden:
        try:
            model = optimizer.optimize_model(str(raw), model_type="bert", num_heads=heads,
                                             hidden_size=hidden, opt_level=1)
            model.save_model_to_file(str(out))
            return bool(model.get_fused_operator_statistics().get("Attention"))
        except Exception as e:
            log.warning("onnxruntime could not optimise the export (%s); running it unfused", e)
    shutil.copyfile(raw, out)
    return False


class OrtTransformer:
    """Stands in for a sentence-transformers Transformer module's `model`: the same keyword
    inputs, a `last_hidden_state` from an onnxruntime session."""

    def __new__(cls, file: Path, names: list[str], config: Any, threads: int) -> Any:
        import onnxruntime as ort
        import torch

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])

        class Module(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.config = config
                self.register_buffer("anchor", torch.zeros(1), persistent=False)  # its device

            def forward(self, **kw: Any) -> dict[str, Any]:
                feed = {n: kw[n].cpu().numpy().astype(np.int64) for n in names if n in kw}
                for n in names:  # a tokenizer that gave no token types: all zeros, as torch does
                    feed.setdefault(n, np.zeros_like(feed["input_ids"]))
                return {"last_hidden_state": torch.from_numpy(session.run(None, feed)[0])}

        return Module()


@functools.lru_cache(maxsize=4)
def onnx_model(load: Any, path: str, revision: str, quantize: str, *load_args: Any) -> Any:
    """A sentence-transformers model (loaded by `load(path, *load_args)` in fp32) whose
    transformer runs in onnxruntime; exported on first use, then read from the cache."""
    import torch

    st_model = load(path, *load_args)
    folder = cache_root() / _model_key(path, revision, quantize)
    file, meta = export(st_model, folder, quantize)
    st_model[0].model = OrtTransformer(file, meta["inputs"], st_model[0].auto_model.config,
                                       torch.get_num_threads())
    st_model.biorag_onnx = {"file": str(file), **meta}
    return st_model


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _choices_file() -> Path:
    return cache_root() / "choices.json"


def cached_choice(key: str) -> dict[str, Any] | None:
    try:
        return json.loads(_choices_file().read_text()).get(key)
    except (OSError, ValueError):
        return None


def save_choice(key: str, choice: dict[str, Any]) -> None:
    from biorag.atomic import write_json

    file = _choices_file()
    try:
        choices = json.loads(file.read_text())
    except (OSError, ValueError):
        choices = {}
    choices[key] = choice
    file.parent.mkdir(parents=True, exist_ok=True)
    write_json(file, choices)


def calibrate(encode_torch: Any, encode_onnx: Any, texts: list[Any], label: str) -> dict[str, Any]:
    """Encode a sample of `texts` both ways (after one warm-up batch each) and say which to
    keep, `label` (an ONNX variant) or torch: ONNX where it is at least MIN_SPEEDUP faster
    and keeps mean cosine >= MIN_COSINE."""
    step = max(1, len(texts) // CALIBRATION_TEXTS)
    sample = texts[::step][:CALIBRATION_TEXTS]
    timings, vectors = {}, {}
    for side, encode in (("torch", encode_torch), ("onnx", encode_onnx)):
        encode(sample[:16])
        started = time.perf_counter()
        vectors[side] = encode(sample)
        timings[side] = time.perf_counter() - started
    cosine = float(np.mean(np.sum(vectors["torch"] * vectors["onnx"], axis=1)
                           / (np.linalg.norm(vectors["torch"], axis=1) * np.linalg.norm(vectors["onnx"], axis=1))))
    recall = recall_at_10(vectors["torch"], vectors["onnx"])
    speedup = timings["torch"] / max(timings["onnx"], 1e-9)
    keep = speedup >= MIN_SPEEDUP and cosine >= MIN_COSINE and recall >= MIN_RECALL
    return {"backend": label if keep else "torch", "speedup": round(speedup, 3),
            "cosine": round(cosine, 5), "recall_at_10": round(recall, 4), "texts": len(sample),
            "torch_per_s": round(len(sample) / timings["torch"], 1),
            "onnx_per_s": round(len(sample) / timings["onnx"], 1)}


def recall_at_10(ref: np.ndarray, fast: np.ndarray, queries: int | None = None) -> float:
    """Share of each vector's 10 exact nearest neighbours under `ref` (fp32) that `fast`
    finds too, each of the first `queries` vectors (null: all) a query, itself left out."""
    k = min(10, len(ref) - 1)
    if k < 1:
        return 1.0
    q = len(ref) if queries is None else min(queries, len(ref))

    def top(v: np.ndarray) -> np.ndarray:
        v = v / np.linalg.norm(v, axis=1, keepdims=True)
        sims = v[:q] @ v.T
        sims[np.arange(q), np.arange(q)] = -np.inf
        return np.argsort(-sims, axis=1, kind="stable")[:, :k]

    a, b = top(ref), top(fast)
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(a, b, strict=True)]))
