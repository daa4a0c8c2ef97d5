#!/usr/bin/env bash
# Downloads, on a machine with internet, the wheels that the GPU machine lacks into the
# git-ignored .whl/ (never committed). That machine (Python 3.12, jax 0.11 + CUDA plugin,
# torch, flax, optax, orbax, tensorboard, transformers) has no ml_collections, nltk or
# matplotlib; these wheels and their own dependencies are about 27 MB, so the working tree
# and .whl/ travel together within the 64 MiB a device call carries.
#   benchmarks/fetch_wheels.sh [python-version]     (default 3.12)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-3.12}
mkdir -p .whl
python -m pip download --quiet --only-binary=:all: --no-deps -d .whl \
  --python-version "$PY" --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux_2_28_x86_64 --platform any \
  ml_collections nltk regex click joblib tqdm \
  matplotlib contourpy cycler fonttools kiwisolver pyparsing pillow python-dateutil six
du -sh .whl
