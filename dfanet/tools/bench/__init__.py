"""The one benchmark harness behind ``dfanet bench``, ``pytest bench/`` and the GPU comparison.

Method: docs/benchmarking.md ("The rules"); which module does what: its section "How the harness is built".

- ``timing``: a timer per device, interleaved rounds, quantiles.
- ``machine``: what the numbers were measured on (CPU and GPU).
- ``check``: an output compared with its reference before anything is timed; tolerances per precision.
- ``op_calls``: the op calls at the model's shapes (named cases, and every distinct layer of a recorded forward).
- ``report``: Markdown tables, JSON and the PNG chart.
- ``models``: the seeded random DFANet and its twins that every comparison times.
- ``log``: progress lines on stderr.
- ``cpu_candidates`` + ``cpu_comparison``: the whole-model CPU comparison (``dfanet bench``).
- ``gpu``: the GPU comparison (model, ops, layers), run by bench/gpu_check.sh as ``python -m dfanet.tools.bench.gpu``.
- ``roofline`` + ``kernel_resources``: the floor of every kernel of one fused forward on a named GPU, and the
  kernels' registers, spills and occupancy on sm_90, without a GPU (``python -m dfanet.tools.bench.roofline``).
"""
