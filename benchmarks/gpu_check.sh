#!/usr/bin/env bash
# The prepared device check (benchmarks/gpu_check.py): picks a Python whose torch sees a GPU and runs it
# from this tree (dsp3d from src/, nothing installed). Arguments go to gpu_check.py; its files go to $OUT
# when set, else benchmarks/out/gpu/.
#
#   benchmarks/gpu_check.sh                      # on a CUDA machine: under 8 minutes on one H100
#   benchmarks/gpu_check.sh --device cpu --steps 3 --quick     # a smoke run anywhere
#
# The Python: $PYTHON if set; else the first of python3 (on the device machines, the one that holds a
# CUDA build of torch) and .venv/bin/python (make venv: the CPU build, unless a CUDA build was put there)
# whose torch sees a GPU; else the first whose torch imports, and gpu_check.py then stops at once with a
# clear message (exit status 2) unless --device cpu was asked for. dsp3d itself is not installed: it is
# imported from src/ (PYTHONPATH), so no build backend, network or write into that Python is needed; its
# dependencies (numpy, scipy, torch, pyyaml, matplotlib) must be there.
set -euo pipefail
cd "$(dirname "$0")/.."

candidates=()
if [ -n "${PYTHON:-}" ]; then
    candidates=("$PYTHON")
else
    candidates=(python3 .venv/bin/python)
fi

chosen=""
for python in "${candidates[@]}"; do
    command -v "$python" >/dev/null 2>&1 || continue
    if "$python" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then
        chosen="$python"
        break
    fi
done
if [ -z "$chosen" ]; then
    for python in "${candidates[@]}"; do
        command -v "$python" >/dev/null 2>&1 || continue
        if "$python" -c "import torch" >/dev/null 2>&1; then
            chosen="$python"
            break
        fi
    done
fi
if [ -z "$chosen" ]; then
    echo "gpu_check: no Python with torch among: ${candidates[*]} (set PYTHON=... or run make venv)" >&2
    exit 2
fi

export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
exec "$chosen" benchmarks/gpu_check.py "$@"
