#!/usr/bin/env bash
# Install everything, then run the main job on the embedded default (no internet needed):
# train the embedded LoRA adapter, audit the data against the tasks, run the embedded study
# (SmolLM2-135M-Instruct: base, rag, lora, lora_rag on the HPO and ICD-10-CM tasks; the rag
# arms build their FAISS + BM25 indexes on first use) and write the report.
# Re-running is quick: indexes, the adapter and finished predictions are reused.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
B=.venv/bin/biorag
$B finetune model=smollm2 data=hpo-mini name=smollm2-hpo
$B audit data=hpo-mini task=hpo-term-mcq,icd10-code-mcq
$B experiment run study=embedded
$B report
echo
echo "Browse the runs in the MLflow UI (on 127.0.0.1 only):  .venv/bin/biorag ui"
