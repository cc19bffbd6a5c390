"""A Ray worker computes with the driver's torch thread count: Ray would start it with one
thread a CPU it asked for, and bf16 CPU kernels then sum in another order (measured: the
embedded study's log-likelihoods differed by up to 0.81 nats under launcher=ray until this)."""

from __future__ import annotations

import torch

from biorag.experiment.launch import THREADS_ENV, CellWorker, _worker_env


def test_a_worker_takes_the_drivers_thread_count(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the worker changes to the driver's folder; restored after
    before = torch.get_num_threads()
    try:
        env = _worker_env([])
        assert env[THREADS_ENV] == str(before)
        torch.set_num_threads(1)  # as Ray starts a worker that asked for one CPU
        CellWorker(str(tmp_path), {THREADS_ENV: str(before)})
        assert torch.get_num_threads() == before
    finally:
        torch.set_num_threads(before)
