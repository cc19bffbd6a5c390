"""biorag: does adapting an LLM to medicine help, and which way?"""

import os as _os

__version__ = "0.1.0"

# oneDNN (torch's CPU kernels for bf16) caches a compiled primitive per input shape, up to 1,024
# by default; an index build meets a new shape with every batch's sequence length, so a bf16
# build's memory grew with the corpus (+120 MiB from 5k to 20k chunks). 16 keeps it flat at
# the same speed (measured: benchmarks/index_build.py, eval_throughput.py). Read by oneDNN
# when it first builds a primitive, so it is set here, before any model runs; a value the
# user set wins.
_os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "16")


def _faiss_blas_core() -> str | None:
    """The OpenBLAS core to name for faiss, or None to leave OpenBLAS's own choice.

    faiss-cpu's wheels bundle OpenBLAS 0.3.15, which takes a CPU with AVX512-BF16 (Sapphire
    Rapids, Cooper Lake, Zen 4) for a Cooper Lake and runs sgemm, the k-means of every IVF
    build and each add's coarse assignment, at 32-37 GFLOPS on 2 cores, where its SkylakeX
    kernels (the ones numpy's newer OpenBLAS picks on the same CPU) run 190 (measured:
    IndexFlatL2 search, 40k x 4,096 x 768-d, Xeon with AMX). Read by OpenBLAS when its library
    is loaded, so it is set here, before faiss is imported; a value the user set wins."""
    import sys

    if "OPENBLAS_CORETYPE" in _os.environ or "faiss" in sys.modules or not sys.platform.startswith("linux"):
        return None
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return None
    return "SkylakeX" if "avx512_bf16" in flags and "avx512f" in flags else None


if (_core := _faiss_blas_core()) is not None:
    _os.environ["OPENBLAS_CORETYPE"] = _core
