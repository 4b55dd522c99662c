#!/usr/bin/env bash
# The GPU check, for a machine with a CUDA GPU, in under 5 minutes:
#   1. the compiled hot path, built in place for this machine's Python (a build made elsewhere is
#      for another interpreter and is not loaded); where it cannot be built, it says so and the
#      pure-Python hot path is checked alone;
#   2. the CUDA tests, with the compiled hot path and again with TORCHWATCH_PURE_PYTHON=1:
#      tests/test_gpu.py (steady-state steps of a watched loop under
#      torch.cuda.set_sync_debug_mode("error"), i.e. zero host-device syncs per step) and
#      tests/test_testing.py (count_syncs on CUDA);
#   3. the overhead table on CUDA (CUDA-event timing, syncs per step from CUDA's sync debug mode).
# Run from anywhere: bash benchmarks/gpu_check.sh   (torchwatch need not be installed; PYTHON
# names the interpreter that has torch, python3 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
py="${PYTHON:-python3}"
"$py" - <<'PY'
import torch
assert torch.cuda.is_available(), "gpu_check.sh needs a CUDA GPU"
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}")
PY
"$py" setup.py -q build_ext --inplace >/dev/null 2>&1 \
    || echo "gpu_check: the compiled hot path could not be built here"
"$py" -c "from torchwatch.compiled import speedups
print('hot path:', 'compiled' if speedups is not None else 'pure Python (not built)')"
status=0
tests=(tests/test_gpu.py tests/test_testing.py)
timeout 120 "$py" -m pytest -q -rs -p no:cacheprovider "${tests[@]}" || status=$?
TORCHWATCH_PURE_PYTHON=1 timeout 120 "$py" -m pytest -q -rs -p no:cacheprovider "${tests[@]}" \
    || status=$?
# 10 rounds x 200 steps: 91 s for the CPU table on the 2-CPU machine of CI without Ignite,
# Lightning and Fabric (20 x 300 took 199 s); about two minutes with them
timeout 240 "$py" benchmarks/overhead.py --device cuda --rounds 10 --steps 200 --startup 1 \
    --micro 1 || status=$?
exit $status
