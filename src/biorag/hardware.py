"""What the machine computes fast: what `dtype: auto` resolves to.

On CUDA that is half precision. On a CPU with native bfloat16 arithmetic (AVX512-BF16 or AMX
tiles: recent Xeon and EPYC) bf16 inference runs 1.7x the speed of fp32 for the embedded
models, with embeddings within cosine 0.996 and log-likelihoods within 0.44 nats (one pick in
48 flipped, the same accuracy: `benchmarks/cpu_llm.py`), and
LoRA training keeps fp32 weights under bf16 autocast (mixed precision, 1.4x); on other CPUs
bf16 is emulated and slower, so `auto` stays fp32 there. `BIORAG_CPU_BF16=0` (or an
explicit `dtype: float32` for inference) keeps fp32 everywhere.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when torch reports bf16 matrix units on this CPU (AVX512-BF16 or AMX)."""
    import torch

    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        check = getattr(torch.cpu, probe, None)
        try:
            if check is not None and check():
                return True
        except RuntimeError:  # a torch built without the probe's backend
            continue
    return False


def mps_available() -> bool:
    """Whether torch can run on an Apple-silicon GPU (Metal Performance Shaders): `device:
    auto` then embeds, scores and trains there. Untested on Apple hardware in biorag's CI."""
    import torch

    mps = getattr(torch.backends, "mps", None)
    try:
        return bool(mps is not None and mps.is_available())
    except RuntimeError:
        return False


def require_mps(owner: str) -> None:
    """Refuse an explicit `device: mps` where torch reports no MPS device."""
    if not mps_available():
        from biorag.errors import BioragError

        raise BioragError(f"{owner}device mps asked for, but torch reports no Apple MPS device")


def cpu_bf16() -> bool:
    """Whether `dtype: auto` means bf16 on this CPU (inference; autocast for training)."""
    if os.environ.get("BIORAG_CPU_BF16", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    return cpu_has_native_bf16()


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def release_freed_memory() -> None:
    """Hand memory that glibc's allocator holds after frees back to the OS (`malloc_trim`).

    torch's CPU tensors come from malloc; batches of varying shapes leave freed, fragmented
    heap behind that would otherwise count as resident, so a long build's memory would grow
    with the corpus. A no-op where the C library has no malloc_trim (macOS, musl)."""
    if os.environ.get("BIORAG_MALLOC_TRIM", "1") == "0":
        return
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
