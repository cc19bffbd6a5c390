#!/usr/bin/env bash
# The documentation site (mkdocs.yml, docs/).
#   bash scripts/docs.sh          serve it on http://127.0.0.1:8000, rebuilt as pages change
#   bash scripts/docs.sh build    build it into ./site/ (git-ignored), failing on any warning
# Needs the dev tools: bash scripts/install.sh --dev
set -euo pipefail
cd "$(dirname "$0")/.."
export NO_MKDOCS_2_WARNING=1  # Material's end-of-life banner
MKDOCS=${MKDOCS:-.venv/bin/mkdocs}
if [[ "${1:-serve}" == build ]]; then
  exec "$MKDOCS" build --strict "${@:2}"
fi
exec "$MKDOCS" serve -a 127.0.0.1:8000 "${@:2}"
