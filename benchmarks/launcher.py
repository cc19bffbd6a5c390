"""The same small study sequential (launcher=local) and on a local Ray with 1 and 2 workers.

    python benchmarks/launcher.py                   # fake model, 0.05 s an item, 4 cells of 24 items
    python benchmarks/launcher.py --n 40 --delay 0.1
    python benchmarks/launcher.py --embedded        # SmolLM2-135M (the embedded model) instead

The study: arm base x two models (the fake backend with seeds 0 and 1, or SmolLM2 with two
batch sizes, so that there are two models to place) x two embedded tasks. The fake backend's
`options.delay_s` is a fixed cost per item, standing in for a model call that does not need the
driver's CPU; the embedded model is real CPU work. Each row runs in a fresh process with a fresh
cache and MLflow store: wall time of the whole `run_experiment` (Ray's start included), its
ratio to the sequential run, the Ray overhead per cell ((ray 1 worker - sequential) / cells),
and whether every cell's metrics equal the sequential run's (timings left out).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import emit, machine_line, run_child, table

TASKS = "hpo-term-mcq,icd10-code-mcq"
TIMED = ("seconds", "_per_s", "latency")


def overrides(args: argparse.Namespace) -> list[str]:
    if args.embedded:
        model = ["model=smollm2", "model.batch_size=8,9"]  # two configs: two models to place
    else:
        model = ["model=fake", "model.options.seed=0,1", f"model.options.delay_s={args.delay}"]
    return ["arm=base", *model, f"task={TASKS}", f"task.n={args.n}", "task.scoring=loglikelihood", "batch_size=4"]


def one(args: argparse.Namespace) -> None:
    """A child: one launcher setting, timed, its quality metrics emitted."""
    from biorag import progress
    from biorag.experiment.runner import run_experiment

    progress.set_enabled(False)
    extra = [] if args.workers == 0 else ["launcher=ray", f"launcher.ray_cpus={args.workers}"]
    with tempfile.TemporaryDirectory() as d:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(d) / 'mlflow.db'}"
        start = time.perf_counter()
        result = run_experiment([*overrides(args), f"cache_dir={d}/cache", "experiment=bench", *extra])
        wall = time.perf_counter() - start
    emit({"wall": wall, "cells": len(result.cells),
          "metrics": {c.name + str(i): {k: v for k, v in c.metrics.items() if not any(t in k for t in TIMED)}
                      for i, c in enumerate(result.cells)}})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=24, help="items per task")
    ap.add_argument("--delay", type=float, default=0.05, help="fake model: seconds per item")
    ap.add_argument("--embedded", action="store_true", help="SmolLM2-135M instead of the fake model")
    ap.add_argument("--workers", type=int, default=None, help=argparse.SUPPRESS)  # a child's setting
    args = ap.parse_args()
    if args.workers is not None:
        return one(args)
    print(machine_line())
    print(f"study: {' '.join(overrides(args))}")
    rows, ref = [], None
    env = {"BIORAG_PROGRESS": "0", "HF_HUB_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)
    for label, workers in (("sequential (launcher=local)", 0), ("launcher=ray, 1 worker", 1),
                           ("launcher=ray, 2 workers", 2)):
        argv = [__file__, f"--n={args.n}", f"--delay={args.delay}", f"--workers={workers}",
                *(["--embedded"] if args.embedded else [])]
        got = run_child(argv, env={**env, "RAY_ADDRESS": ""})
        ref = ref or got
        same = json.dumps(got["metrics"], sort_keys=True) == json.dumps(ref["metrics"], sort_keys=True)
        rows.append([label, got["cells"], round(got["wall"], 2), round(got["wall"] / ref["wall"], 2),
                     "yes" if same else "NO"])
    overhead = (rows[1][2] - rows[0][2]) / max(rows[0][1], 1)
    print(table(["launcher", "cells", "wall s", "x sequential", "metrics equal"], rows))
    print(f"Ray overhead: {overhead:+.2f} s a cell (1 worker vs sequential: Ray's start, an actor and a "
          "model load per model, the cells' inputs prepared again on the worker)")


if __name__ == "__main__":
    main()
