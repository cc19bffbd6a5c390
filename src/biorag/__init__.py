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
