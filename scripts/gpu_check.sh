#!/usr/bin/env bash
# The CUDA checks, on a machine with a GPU and torch (no Ray, Postgres or Optuna needed: the
# in-process worker tests and the packed-vs-one-by-one benchmark need torch, pytest, pydantic
# and scikit-learn only). About 3-5 minutes on one modern GPU.
#   bash scripts/gpu_check.sh [python]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python}
"$PY" -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"; print("torch", torch.__version__, torch.cuda.get_device_name())'
# training, probes and packed training on CUDA against the CPU (tests marked gpu)
PYTHONPATH=. "$PY" -m pytest -m gpu $(cat tests/workers/GPU_TESTS) -q -p no:cacheprovider
# packed against one-by-one on that GPU (benchmarks/packed_gpu.py)
PYTHONPATH=. "$PY" benchmarks/packed_gpu.py --device cuda --runs 64 --steps 500 --repeats 3
