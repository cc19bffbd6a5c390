#!/usr/bin/env bash
# Install everything, then run the main job on the embedded default (no internet needed):
# build the HPO index with the embedded embedder and search it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
B=.venv/bin/biorag
$B index build corpus=hpo name=hpo-minilm
$B index search hpo-minilm "seizures in infancy" -k 5
$B index search hpo-minilm "seizures in infancy" -k 5 --mode hybrid
