#!/usr/bin/env bash
# Sets up .venv (torch 2.13 CPU unless a torch is already there), builds the kernels, and runs the main job:
# the fused DFANet against eager, channels_last, torch.compile, ONNX Runtime and OpenVINO, side by side.
#   ./quickstart.sh               set up + run `dfanet bench` (DFANet A, 512x1024, batch 1, 2 threads)
#   ./quickstart.sh --setup-only  set up only (what CI does before the tests)
#   DFANET_BENCH_ARGS="--size 1024x1024 --rounds 20" ./quickstart.sh
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu ./quickstart.sh   torch's CPU-only wheel, not PyPI's
set -euo pipefail
cd "$(dirname "$0")"

log() { printf '\n== %s\n' "$*"; }

if [ ! -x .venv/bin/python ]; then
  log "creating .venv with ${PYTHON:-python3}"
  "${PYTHON:-python3}" -m venv .venv
fi
PY=.venv/bin/python

# A plain `torch` requirement would pull a multi-GB CUDA build; keep a torch that is already installed. PyPI's
# Linux x86-64 torch==2.13.0 is itself the CUDA build: TORCH_INDEX_URL picks another index for this one install.
if ! "$PY" -c "import torch" 2>/dev/null; then
  log "installing torch==2.13.0${TORCH_INDEX_URL:+ from $TORCH_INDEX_URL}"
  "$PY" -m pip install -q torch==2.13.0 ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
fi
log "installing build tools and the package (this compiles the C++ kernels, about a minute)"
"$PY" -m pip install -q setuptools wheel ninja pybind11
# --no-build-isolation: compile against the torch installed above, not a freshly downloaded one.
"$PY" -m pip install -q --no-build-isolation -e ".[app,test,bench,triton]"
"$PY" -c "import dfanet_kernels as dk; print('backends on this machine:', dk.available_backends('cpu'))"

if [ "${1:-}" = "--setup-only" ]; then
  exit 0
fi
log "running: dfanet bench ${DFANET_BENCH_ARGS:-}"
# shellcheck disable=SC2086  # DFANET_BENCH_ARGS is a list of flags
.venv/bin/dfanet bench ${DFANET_BENCH_ARGS:-}
