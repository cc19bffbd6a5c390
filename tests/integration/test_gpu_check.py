"""benchmarks/gpu_check.py is run on a GPU machine only now and then (a short slot, no faiss,
vLLM or MLflow there), so it must not rot in between: its --smoke mode runs every part on
CPU at tiny sizes, through the same code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_runs_every_part_in_smoke_mode() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke",
                           "--only", "embedding,scoring,lora"],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout[proc.stdout.index("\n{") + 1:])
    assert report["embedding"]["sentences_per_s"] > 0
    assert report["embedding"]["biorag_sentences_per_s"] > 0  # biorag's encode path ran too
    assert report["scoring"]["biorag_items_per_s"] > 0 and report["scoring"]["naive_items_per_s"] > 0
    assert report["lora"]["biorag_tokens_per_s"] > 0 and report["lora"]["plain_peft_tokens_per_s"] > 0
