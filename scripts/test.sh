#!/usr/bin/env bash
# Install everything (with the test tools), then run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --dev
.venv/bin/ruff check src tests benchmarks
.venv/bin/python -m pytest "$@"
