#!/usr/bin/env bash
# Installs shrink and what it needs on a fresh machine: torch first and explicitly (so no other package
# pulls a multi-GB CUDA build onto a machine without a GPU), then the package with its test extra.
# Usage: bash tools/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" 2>/dev/null; then
  # On these machines the pinned version resolves to a local CPU build; with a GPU, pip's default build has CUDA.
  "$PY" -m pip install --quiet "torch==2.13.0"
fi
"$PY" -m pip install --quiet -e ".[test]"
