#!/usr/bin/env bash
# One set-up shared by the README's two commands and CI: a virtual environment in .venv with the
# CPU build of torch installed first (so no multi-GB CUDA build is ever pulled), then the project.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch first: 2.13.0 is the CPU build on local disk; a later range it satisfies installs nothing more.
"$VENV/bin/python" -c "import torch" 2>/dev/null || "$VENV/bin/python" -m pip install -q "torch==2.13.0"
# the ray extra: `harness replay --engine ray` and its tests (ray 2.60, about 240 MB, a few seconds from cache)
"$VENV/bin/python" -m pip install -q -e ".[dev,ray]"
# gbstats (GrowthBook's engine) is a test-only reference for the Bayesian view and the sequential
# tuning. Its metadata pins numpy<2 and pandas<2, which conflict with this project, but the modules the
# tests compare against (gbstats.bayesian, gbstats.frequentist) need only numpy, scipy and pydantic
# (present via typer): install it without its declared dependencies.
"$VENV/bin/python" -c "import gbstats" 2>/dev/null || "$VENV/bin/python" -m pip install -q --no-deps "gbstats==0.8.0"
