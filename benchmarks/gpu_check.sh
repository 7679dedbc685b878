#!/usr/bin/env bash
# The GPU check in one command (<= 8 minutes on one GPU): bash benchmarks/gpu_check.sh [--out DIR]
# CPU rehearsal (a few minutes): bash benchmarks/gpu_check.sh --device cpu --quick --out /tmp/gpu-check
# Results: OUT/gpu_check.md and OUT/gpu_check.json (default OUT: benchmarks/results/gpu-check).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python}"
[ -x .venv/bin/python ] && PY=.venv/bin/python
exec "$PY" benchmarks/gpu_check.py "$@"
