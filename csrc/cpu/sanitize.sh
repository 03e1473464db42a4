#!/usr/bin/env bash
# Builds the CPU kernels with AddressSanitizer + UndefinedBehaviorSanitizer into a temporary copy of the project and
# runs the CPU op tests there, once per instruction-set path (tests/kernels/test_cpu_isa.py and the block/conv tests switch
# DFANET_CPU_ISA themselves). The checkout's own build is left alone.
#
#   csrc/cpu/sanitize.sh [extra pytest args]        (from the repository root, in the project's venv)
#
# Takes ~4-6 minutes on 2 cores (build ~2 min at -O1, tests ~3x slower under ASan). Notes:
# - libasan must be loaded before Python: LD_PRELOAD of the compiler's libasan.so; leak detection is off (CPython
#   and torch keep allocations alive at exit on purpose).
# - A C++ exception thrown from the sanitized library (a TORCH_CHECK on bad input) aborts the process under the
#   preloaded libasan here (GCC 12, torch 2.13 wheel), so the tests that expect such errors are deselected (-k);
#   they run in the ordinary suite. Every kernel test still runs.
# - GCC does not instrument the memory accesses of SIMD intrinsics (masked loads/stores included): the AVX paths
#   are checked for out-of-bounds pointers only where scalar code touches them, so the portable "scalar" path
#   (plain C++ on the same tiling and indexing logic) is the one ASan checks element by element.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/dfanet-sanitize.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cd "$root"
cp -r setup.py pyproject.toml csrc dfanet_kernels dfanet tests "$work"/
rm -f "$work"/dfanet_kernels/_C*.so
cd "$work"
echo "sanitize: building in $work"
DFANET_SANITIZE=1 DFANET_SKIP_CUDA=1 python setup.py build_ext --inplace > build.log 2>&1 || { tail -40 build.log; exit 1; }
libasan="$(${CXX:-c++} -print-file-name=libasan.so)"
echo "sanitize: running the CPU op tests with LD_PRELOAD=$libasan"
LD_PRELOAD="$libasan" ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  python -m pytest -q -p no:cacheprovider tests/kernels/test_cpu_isa.py tests/kernels/test_xception_block.py tests/kernels/test_conv.py \
  tests/kernels/test_dwsep_conv.py tests/kernels/test_fc_attention.py tests/kernels/test_upsample.py \
  tests/kernels/test_prepared.py tests/kernels/test_weight_layouts.py tests/kernels/test_decoder_head.py \
  -k "not bad_input and not bad_isa and not direct_op_call and not rejects_other_dtypes and not raises_not_crashes" "$@"
