#!/usr/bin/env bash
# The benchmark on a GPU machine in one call (under 8 minutes on one H200):
#   benchmarks/fetch_wheels.sh          # first, where there is internet: fills .whl/
#   benchmarks/gpu.sh [bench flags]     # on the GPU machine, from a copy of the tree + .whl/
# Installs what is missing from .whl/ only (no index), runs `python -m dllab_jax.bench` on the
# faithful suite (SUITE=quick for the smoke run; check it on a CPU with `SUITE=quick`), and
# writes bench.json and bench.md under $OUT (default benchmarks/results).
set -euo pipefail
cd "$(dirname "$0")/.."
SUITE=${SUITE:-faithful}
OUT=${OUT:-benchmarks/results}
if [ -d .whl ]; then
  # Already-installed packages are kept; only the missing ones come from .whl/.
  python -m pip install --quiet --no-index --find-links .whl ml_collections nltk matplotlib pillow
fi
python -c "import ml_collections, nltk, matplotlib" 2>/dev/null || {
  echo "error: ml_collections, nltk or matplotlib missing; run benchmarks/fetch_wheels.sh where there is internet, then copy .whl/ here" >&2
  exit 2
}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# JAX takes 75% of GPU memory up front by default; leave PyTorch room in the same process.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.45}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python -c "import jax, torch; print('jax', jax.__version__, jax.devices(), '| torch', torch.__version__, torch.cuda.is_available())"
# 5 of the 8 minutes for the suite (start-up, installs and compiles take the rest); the
# models with goals run first, the rest are marked skipped if time runs out.
python -m dllab_jax.bench --suite="$SUITE" --out="$OUT/$SUITE" --rounds=3 \
  --budget-s="${BUDGET_S:-300}" "$@"
