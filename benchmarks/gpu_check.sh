#!/usr/bin/env bash
# The GPU check, for a machine with a CUDA GPU, in under 5 minutes:
#   1. tests/test_gpu.py: steady-state steps of a watched loop under
#      torch.cuda.set_sync_debug_mode("error"), i.e. zero host-device syncs per step;
#   2. the overhead table on CUDA (CUDA-event timing, syncs per step from CUDA's sync debug mode).
# Run from anywhere: bash benchmarks/gpu_check.sh   (torchwatch need not be installed)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python - <<'PY'
import torch
assert torch.cuda.is_available(), "gpu_check.sh needs a CUDA GPU"
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}")
PY
status=0
timeout 120 python -m pytest -q -rs -p no:cacheprovider tests/test_gpu.py || status=$?
timeout 150 python benchmarks/overhead.py --device cuda --rounds 20 --steps 300 --startup 1 \
    --micro 1 || status=$?
exit $status
