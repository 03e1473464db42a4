#!/usr/bin/env bash
# The CUDA op tests (the cuda cases of tests/kernels/test_<op>.py and tests/kernels/test_cuda_backend.py) under
# compute-sanitizer: memcheck (out-of-bounds and misaligned
# global/shared accesses, invalid frees; with PyTorch's caching allocator off, so every tensor is its own allocation
# and a read just past one is caught) and racecheck (shared-memory hazards between a block's threads).
# Called from bench/gpu_check.sh after the build; exits non-zero if a tool reports an error or a test fails.
#
#   bench/compute_sanitizer.sh [extra pytest arguments]
#
# The sanitizers slow kernels 10-100x and add seconds per test, so the "large" cases, the whole model, torch.compile,
# graphs and streams are left out; the small odd shapes reach every kernel path, edge and tile boundary. So are the
# NCHW and strided layouts (the glue hands every kernel a dense NHWC copy: same kernel, same accesses) and the 128
# activation/bias/residual combinations (the flags change arithmetic, not addresses; bias and residual reads are in
# the reference tests). racecheck takes only the tests of the kernels that use shared memory (dwsep_conv's two
# paths, fc_attention's pooling).
# Knobs: COMPUTE_SANITIZER (the binary), PYTHON, MEMCHECK_TESTS / RACECHECK_TESTS (pytest -k expressions),
# TOOLS (default "memcheck racecheck").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SANITIZER=${COMPUTE_SANITIZER:-$(command -v compute-sanitizer || echo "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer")}
PYTHON=${PYTHON:-python3}
ONE_LAYOUT="not nchw and not strided"
MEMCHECK_TESTS=${MEMCHECK_TESTS:-"not large and not dfanet and not compile and not graph and not stream and $ONE_LAYOUT \
and not every_activation"}
RACECHECK_TESTS=${RACECHECK_TESTS:-"(dwsep_conv_matches_reference or fc_attention_matches_reference) and not large \
and $ONE_LAYOUT"}
unset TRITON_INTERPRET
CUDA_TESTS=(tests/kernels/test_dwsep_conv.py tests/kernels/test_fc_attention.py tests/kernels/test_upsample.py
            tests/kernels/test_xception_block.py tests/kernels/test_cuda_backend.py)

status=0
for tool in ${TOOLS:-memcheck racecheck}; do
  case $tool in
    memcheck) tests=$MEMCHECK_TESTS ;;
    racecheck) tests=$RACECHECK_TESTS ;;
    *) echo "unknown tool $tool"; exit 2 ;;
  esac
  echo "=== compute-sanitizer --tool $tool: pytest ${CUDA_TESTS[*]} -k \"cuda and ($tests)\""
  if PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$SANITIZER" --tool "$tool" --error-exitcode 99 \
      --target-processes all "$PYTHON" -m pytest -q -p no:cacheprovider "${CUDA_TESTS[@]}" -k "cuda and ($tests)" "$@"; then
    echo "=== $tool: clean"
  else
    rc=$?
    echo "=== $tool: FAILED (exit $rc; 99 = the sanitizer reported errors, else pytest's exit code)"
    status=1
  fi
done
exit $status
