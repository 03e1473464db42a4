#!/usr/bin/env bash
# One short GPU session in one command: build the package (CUDA kernels included), run the test suite on the GPU
# and the GPU benchmark. Needs only what the GPU machine has (torch with CUDA, Triton, nvcc, ninja, pytest); no
# network. Stages: environment, install, import, bench, tests_gpu, sanitizer, tests_rest.
# The benchmark comes first after the build (it checks every candidate against eager before timing it, so it stands
# without the tests): within its budget (BENCH_TIMEOUT, 240 s; no new case after BENCH_BUDGET, 150 s) it runs, at
# 1024x1024 batch 1, the whole-model rows in fp16, then fp32, then bf16 (eager NCHW and channels_last,
# torch.compile reduce-overhead and max-autotune where the budget leaves their compile time, the fused Triton and
# CUDA models, each also from a CUDA graph, and their forward + argmax and predict rows; peak memory per row), then
# the per-op rows and the per-layer rows with their roofline floors (docs/benchmarking.md), then the other sizes and
# batch 8 as time allows. The fused model's AOTInductor package is a candidate only when asked for (minutes of
# compiling): BENCH_ARGS="--pt2 cuda" (or cuda,triton), with a BENCH_TIMEOUT that leaves it time. The GPU tests get
# what is left: ~4.5 minutes with a carried build (SKIP_INSTALL=1), little after a fresh install (up to 4 minutes).
# A bench-only session: SKIP_STAGES="tests_gpu sanitizer tests_rest" BENCH_TIMEOUT=480; a tests-only one:
# SKIP_STAGES=bench.
# Results, logs and a stage summary go to $OUT (else bench/results):
#   gpu_check.log      everything printed, with a timestamp per stage
#   stages.tsv         stage, exit code, seconds
#   pytest_*.xml       JUnit reports of the test stages
#   gpu_bench.json/.md the benchmark (python -m dfanet.tools.bench.gpu)
# Every stage has a time limit and a failing stage does not stop the next one; the script exits non-zero if any
# stage failed. Budget: 9 minutes at most (TOTAL_BUDGET).
# Knobs (seconds): TOTAL_BUDGET (540), INSTALL_TIMEOUT, TEST_GPU_TIMEOUT, BENCH_TIMEOUT, BENCH_BUDGET,
# SANITIZER_TIMEOUT, TEST_REST_TIMEOUT; also SKIP_STAGES (names of stages not to run, e.g. "tests_rest"),
# TESTS_GPU_K (a pytest -k expression selecting among the GPU tests), WHEELS (see below), BENCH_ARGS (extra
# arguments for python -m dfanet.tools.bench.gpu), SKIP_INSTALL=1 (already built), PYTHON (default python3: on the
# GPU machines here the one that holds CUDA torch), TORCH_CUDA_ARCH_LIST (default: this GPU's architecture alone,
# so the build compiles each .cu file once) and TEST_WORKERS (pytest-xdist processes where it is installed; Triton
# compiles each kernel variant on first use, and in parallel that stage takes a fraction of the time). A CPU
# rehearsal of the script's logic: SKIP_INSTALL=1 BENCH_ARGS=--dry-run TEST_REST_TIMEOUT=5 OUT=/tmp/x bash
# bench/gpu_check.sh
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
OUT_DIR=${OUT:-$REPO/bench/results}
mkdir -p "$OUT_DIR"
exec > >(tee -a "$OUT_DIR/gpu_check.log") 2>&1

# The kernels must run natively on the GPU, not in Triton's interpreter.
unset TRITON_INTERPRET
export PYTHONUNBUFFERED=1
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
export PYTHON=${PYTHON:-python3}
# Wheels of what the machine lacks and cannot download (the GPU image here has no cityscapesscripts, which the
# training tests import): WHEELS=<folder of .whl files>, installed without dependencies into a temporary folder.
if [ -n "${WHEELS:-}" ]; then
  SITE=$(mktemp -d)
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$WHEELS"/*.whl
  export PYTHONPATH="$PYTHONPATH:$SITE"
fi

STAGES="$OUT_DIR/stages.tsv"
printf 'stage\texit_code\tseconds\n' > "$STAGES"
FAILED=()
NOT_RUN=()
START=$SECONDS
# The whole script stays within TOTAL_BUDGET seconds (one GPU command may run 10 minutes): every stage's limit is
# cut to what is left, and a stage with less than a minute left is not started.
TOTAL_BUDGET=${TOTAL_BUDGET:-540}
remaining() { echo $((TOTAL_BUDGET - (SECONDS - START))); }

# stage NAME LIMIT_S COMMAND...: run it with a time limit (SIGINT first, so pytest still writes its report),
# log its time and exit code, and carry on whatever happens.
stage() {
  local name=$1 limit=$2
  shift 2
  local left
  left=$(($(remaining) - 10))
  if [[ " ${SKIP_STAGES:-} " == *" $name "* ]]; then
    echo "=== stage $name: skipped (SKIP_STAGES)"
    printf '%s\t%s\t%s\n' "$name" "skipped" 0 >> "$STAGES"
    return 0
  fi
  if [ "$left" -lt 60 ]; then
    echo "=== stage $name: NOT RUN, ${left}s of the ${TOTAL_BUDGET}s budget left"
    printf '%s\t%s\t%s\n' "$name" "not-run" 0 >> "$STAGES"
    NOT_RUN+=("$name")
    return 0
  fi
  if [ "$limit" -gt "$left" ]; then limit=$left; fi
  echo
  echo "=== [$(date -u +%H:%M:%S)] stage $name (limit ${limit}s, $((SECONDS - START))s elapsed): $*"
  local t0=$SECONDS rc=0
  timeout --signal=INT --kill-after=20 "$limit" "$@" || rc=$?
  local dt=$((SECONDS - t0))
  printf '%s\t%s\t%s\n' "$name" "$rc" "$dt" >> "$STAGES"
  if [ "$rc" -eq 0 ]; then
    echo "=== stage $name: ok in ${dt}s"
  else
    if [ "$rc" -eq 124 ]; then
      echo "=== stage $name: TIMED OUT after ${limit}s"
    else
      echo "=== stage $name: FAILED (exit $rc) in ${dt}s"
    fi
    FAILED+=("$name")
  fi
}

stage environment 60 bash -c '
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
  nvcc --version | tail -n 2 || true
  git -C "$0" log --oneline -1 || true
  "$PYTHON" -c "
import sys, torch, triton
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
print(\"python\", sys.version.split()[0], \"torch\", torch.__version__, \"cuda\", torch.version.cuda,
      \"triton\", triton.__version__, \"gpu\", gpu)
sys.exit(0 if gpu else \"no CUDA device visible to torch\")
"
' "$REPO"

# --no-build-isolation: build against the installed CUDA torch; --no-deps: no package index here.
if [ "${SKIP_INSTALL:-0}" = 1 ]; then
  echo "=== stage install: skipped (SKIP_INSTALL=1)"
else
  if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
    TORCH_CUDA_ARCH_LIST=$("$PYTHON" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())' \
      2>/dev/null || true)
    export TORCH_CUDA_ARCH_LIST  # empty (no GPU visible): setup.py's default list
  fi
  stage install "${INSTALL_TIMEOUT:-240}" "$PYTHON" -m pip install --no-deps --no-build-isolation -e .
fi

stage import 60 "$PYTHON" -c '
import torch, dfanet_kernels as dk, dfanet
dev = torch.device("cuda")
print("backends on cuda:", dk.available_backends(dev))
for b in ("cuda", "triton"):
    print(b, "->", dk.backends.unavailable_reason(b, dev) or "available")
'

# The benchmark: model rows in fp16 and fp32 first (see the top). It writes its JSON/Markdown after every case; its
# --budget-s (no new model case after it) leaves ~90 s of its time limit for the op and layer rows and the report.
BENCH_TIMEOUT=${BENCH_TIMEOUT:-240}
BENCH_BUDGET=${BENCH_BUDGET:-$((BENCH_TIMEOUT > 120 ? BENCH_TIMEOUT - 90 : 30))}
# shellcheck disable=SC2086  # BENCH_ARGS is a list of arguments
stage bench "$BENCH_TIMEOUT" "$PYTHON" -m dfanet.tools.bench.gpu --out "$OUT_DIR" --budget-s "$BENCH_BUDGET" ${BENCH_ARGS:-}

# Tests in two stages: first the tests that exercise the GPU (the CPU-only tests also run in CI), then, after the
# sanitizer, the rest of tests/ if time allows: together they are `pytest tests`. DFANET_TRITON_AUTOTUNE=0: one config
# per Triton kernel, or every small test shape would be autotuned. The GPU tests: each with the triton or cuda backend
# in its id (the op and model tests take the backend as a parameter), tests/kernels/test_{triton,cuda}_backend.py,
# tests/model/test_cuda_graph.py and tests/app/test_train_gpu.py; the nvcc compile check
# (tests/kernels/test_cuda_compile.py) is with the rest.
GPU_K="(triton or cuda or train_gpu) and not cuda_compile"
PARALLEL=()
TEST_THREADS=$(nproc)
if "$PYTHON" -c "import xdist" 2>/dev/null; then
  PARALLEL=(-n "${TEST_WORKERS:-8}")
  # The references run in float64 on the CPU: each worker gets its share of the cores, as OpenMP threads of a dozen
  # workers contending for 16 cores turned one 240-channel reference into 40 s (GPU run of 2026-11-26).
  TEST_THREADS=$((TEST_THREADS / ${TEST_WORKERS:-8} > 0 ? TEST_THREADS / ${TEST_WORKERS:-8} : 1))
fi
SELECT=(-k "$GPU_K")
if [ -n "${TESTS_GPU_K:-}" ]; then SELECT=(-k "($GPU_K) and ($TESTS_GPU_K)"); fi
stage tests_gpu "${TEST_GPU_TIMEOUT:-200}" env DFANET_TRITON_AUTOTUNE=0 OMP_NUM_THREADS="$TEST_THREADS" \
  "$PYTHON" -m pytest -q -p no:cacheprovider \
  "${PARALLEL[@]}" -r fE --durations=15 --junitxml="$OUT_DIR/pytest_gpu.xml" "${SELECT[@]}" tests

# compute-sanitizer (memcheck, racecheck) over the CUDA op tests (31 s on an H200, 2026-11-26), before the CPU-side
# rest of tests/ (CI runs those).
stage sanitizer "${SANITIZER_TIMEOUT:-90}" bash bench/compute_sanitizer.sh

stage tests_rest "${TEST_REST_TIMEOUT:-150}" env DFANET_TRITON_AUTOTUNE=0 OMP_NUM_THREADS="$TEST_THREADS" \
  "$PYTHON" -m pytest -q -p no:cacheprovider \
  "${PARALLEL[@]}" -r fE --durations=10 --junitxml="$OUT_DIR/pytest_rest.xml" tests -k "not ($GPU_K)"

echo
echo "=== summary ($((SECONDS - START))s total; results in $OUT_DIR)"
column -t "$STAGES" 2>/dev/null || cat "$STAGES"
if [ "${#NOT_RUN[@]}" -gt 0 ]; then
  echo "=== not run for lack of time: ${NOT_RUN[*]} (raise TOTAL_BUDGET, or run them in a second session)"
fi
if [ "${#FAILED[@]}" -gt 0 ]; then
  echo "=== failed stages: ${FAILED[*]}"
  exit 1
fi
echo "=== no stage failed"
