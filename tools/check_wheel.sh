#!/usr/bin/env bash
# Builds the wheel, installs it into a fresh virtual environment and runs `distill --demo` from an empty
# folder, so anything the package needs but the wheel lacks (recipes, data files) fails here, not for users.
# The environment sees the system's packages (torch etc. are not reinstalled); the wheel goes in without
# dependencies and shadows the editable install.
# Usage: bash tools/check_wheel.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# Built from a copy of the tracked files (the whole folder outside a git checkout): what a clean checkout
# holds, and no build/ left in this tree.
mkdir "$WORK/src"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git ls-files -z | xargs -0 cp --parents -t "$WORK/src"
else
  cp -r . "$WORK/src"
fi
"$PY" -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir "$WORK/dist" "$WORK/src"
"$PY" -m venv --system-site-packages "$WORK/venv"
"$WORK/venv/bin/python" -m pip install --quiet --no-deps "$WORK"/dist/shrink-*.whl
mkdir "$WORK/elsewhere"
cd "$WORK/elsewhere"
env -u PYTHONPATH "$WORK/venv/bin/python" -c \
  "import shrink, sys; sys.exit(0 if shrink.__file__.startswith('$WORK/venv') else f'shrink imported from {shrink.__file__}, not the wheel')"
env -u PYTHONPATH "$WORK/venv/bin/shrink" recipes > "$WORK/recipes.txt"
grep -q '^demo ' "$WORK/recipes.txt"
env -u PYTHONPATH "$WORK/venv/bin/distill" --demo
