"""FC-attention channel scaling in Triton (``dfanet::fc_attention_triton``).

``out = x * relu(conv_w @ (fc_w @ mean_hw(x) + fc_b) + conv_b)`` per sample, in two launches that materialise only
small fp32 vectors (N x SPLIT x C partial sums, N x K hidden, N x C scale):

1. ``_attention_vector_kernel``: the scale vector, as three phases of tiles in one grid, handed out in order by a
   ticket counter (``tl.atomic_add``): pool tiles (SPLIT per sample and channel tile, interleaved pixel tiles, so
   a batch-1 pool of a 64 x 64 map spreads over many SMs); hidden tiles (``fc_w @ mean + fc_b``, BLOCK_K units
   each, once every pool tile has counted itself done); scale tiles (``relu(conv_w @ hidden + conv_b)``, once every
   hidden tile has). A tile waits only for tiles with lower tickets, taken by programs already running, so the
   waits end however many programs are resident, and never spin under the interpreter (programs run one after
   another). Why phases and not "the last program finishes the sample": one program streaming both weight matrices
   (2 x 0.77 MB fp32 at DFANet's C = 192, K = 1000) at an SM's ~25-50 GB/s takes 30-60 us, far more than the ~2 us
   per dependent launch the fusion saves; spread over 16 + 6 tiles a sample, each reads at most ~50 KB.
   The csrc/cuda/fc_attention.cu header has the same argument with the CUDA kernel's tiles.
2. ``_scale_kernel``: one pass over x writing ``x * scale`` (NHWC).

The counters (``_COUNTERS`` int32 per device and stream) start at zero and the last program to leave kernel 1 sets
them back to zero, so calls (and CUDA graph replays) need no memset. The two mat-vecs are done with broadcast-multiply
+ tl.sum: a matrix-vector product has one column, below tl.dot's minimum tile of 16.
"""

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from ._common import (
    INTERPRET,
    TILE_ELEMENTS,
    TILE_WARPS,
    channel_block,
    check,
    check_activation,
    check_same,
    empty_nhwc,
    interpreter_tracing,
    is_nhwc,
    launchable,
    pixel_block,
    relu,
    static,
)

# ---------------------------------------------------------------------------------------------------------------
# Tuning constants
# ---------------------------------------------------------------------------------------------------------------
# Both kernels are memory/latency bound (DFANet A: C <= 192, K = 1000, at most 64 x 64 pixels per sample
# at 1024 x 1024 input), so tile sizes follow from the shapes instead of autotuning.
_MAX_BLOCK_C = 64 if not INTERPRET else 256  # channel tile of the pool and scale kernels (TILE_ELEMENTS values)
_MAX_SPLIT = 32  # pool programs per (sample, channel tile): 32 x 3 tiles x batch 1 = 96 programs on 132 SMs
_BLOCK_K = 64  # hidden units per hidden tile (1000 -> 16 tiles per sample)
_SCALE_BLOCK_C = 32  # channels per scale tile (192 -> 6 tiles per sample)
_MATVEC_BLOCK = 128  # reduction tile of both mat-vecs (TILE_WARPS warps: 4 spilled the weight tile)
_COUNTERS = 4  # ticket, pool tiles done, hidden tiles done, programs exited
# Programs of kernel 1: each takes tickets until they run out. Under the interpreter 3, so the loop goes round
# (the CUDA emulator caps its grids the same way).
_MAX_PROGRAMS = 8192 if not INTERPRET else 3


# ---------------------------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------------------------
@triton.jit
def _pool_tile(
    x_ptr, part_ptr, n, s, ct,
    C, HW, W, SPLIT,
    sx_n, sx_c, sx_h, sx_w,
    X_NHWC: tl.constexpr, BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """part[n, s, c] for the channel tile ct: the sum of x over split s's pixel tiles (every SPLIT-th)."""
    offs_c = ct * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    acc = tl.zeros([BLOCK_HW, BLOCK_C], dtype=tl.float32)
    for start in range(s * BLOCK_HW, HW, SPLIT * BLOCK_HW):
        offs_hw = start + tl.arange(0, BLOCK_HW)
        mask_hw = offs_hw < HW
        if X_NHWC:
            ptrs = x_ptr + (n.to(tl.int64) * HW + offs_hw)[:, None] * C + offs_c[None, :]
        else:
            h = (offs_hw // W).to(tl.int64)
            w = (offs_hw % W).to(tl.int64)
            ptrs = x_ptr + (n.to(tl.int64) * sx_n + h * sx_h + w * sx_w)[:, None] + offs_c[None, :] * sx_c
        acc += tl.load(ptrs, mask=mask_hw[:, None] & mask_c[None, :], other=0.0).to(tl.float32)
    tl.store(part_ptr + (n * SPLIT + s) * C + offs_c, tl.sum(acc, axis=0), mask=mask_c)


@triton.jit
def _hidden_tile(
    part_ptr, fc_w_ptr, fc_b_ptr, hidden_ptr, n, kt,
    C, K, HW, SPLIT,
    sfw_k, sfw_c, sfb,
    HAS_BIAS: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """hidden[n, k] = fc_w @ mean + fc_b for the BLOCK_K units of tile kt; the mean from the partial sums (read
    through L2 with .cg: they were written during this launch)."""
    offs_k = kt * BLOCK_K + tl.arange(0, BLOCK_K)
    mask_k = offs_k < K
    offs_s = tl.arange(0, BLOCK_S)
    mask_s = offs_s < SPLIT
    acc = tl.zeros([BLOCK_K], dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        mask_c = offs_c < C
        part = tl.load(
            part_ptr + (n * SPLIT + offs_s)[:, None] * C + offs_c[None, :],
            mask=mask_s[:, None] & mask_c[None, :],
            other=0.0,
            cache_modifier=".cg",
        )
        pooled = tl.sum(part, axis=0) / HW  # the mean, as x.mean computes it: sum / count
        w = tl.load(
            fc_w_ptr + offs_k[:, None] * sfw_k + offs_c[None, :] * sfw_c,
            mask=mask_k[:, None] & mask_c[None, :],
            other=0.0,
        ).to(tl.float32)
        acc += tl.sum(w * pooled[None, :], axis=1)
    if HAS_BIAS:
        acc += tl.load(fc_b_ptr + offs_k * sfb, mask=mask_k, other=0.0).to(tl.float32)
    tl.store(hidden_ptr + n * K + offs_k, acc, mask=mask_k)


@triton.jit
def _scale_tile(
    hidden_ptr, conv_w_ptr, conv_b_ptr, scale_ptr, n, ct,
    C, K,
    scw_c, scw_k, scb,
    HAS_BIAS: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """scale[n, c] = relu(conv_w @ hidden + conv_b) for the BLOCK_C channels of tile ct."""
    offs_c = ct * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    acc = tl.zeros([BLOCK_C], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        hidden = tl.load(hidden_ptr + n * K + offs_k, mask=mask_k, other=0.0, cache_modifier=".cg")
        w = tl.load(
            conv_w_ptr + offs_c[:, None] * scw_c + offs_k[None, :] * scw_k,
            mask=mask_c[:, None] & mask_k[None, :],
            other=0.0,
        ).to(tl.float32)
        acc += tl.sum(w * hidden[None, :], axis=1)
    if HAS_BIAS:
        acc += tl.load(conv_b_ptr + offs_c * scb, mask=mask_c, other=0.0).to(tl.float32)
    tl.store(scale_ptr + n * C + offs_c, relu(acc), mask=mask_c)


@triton.jit
def _wait_for(counter_ptr, target):
    """Returns once ``target`` tiles have counted themselves done on the counter (acquire: their writes are then
    visible to this program)."""
    done = tl.atomic_add(counter_ptr, 0, sem="acquire")
    while done < target:
        done = tl.atomic_add(counter_ptr, 0, sem="acquire")
    tl.debug_barrier()


@triton.jit
def _signal_done(counter_ptr):
    """Counts this tile done once all of its threads' writes are made (release)."""
    tl.debug_barrier()
    tl.atomic_add(counter_ptr, 1, sem="release")


# Not specialised (see dwsep_conv.py): pixel counts and the general-layout strides never set a vector width.
@triton.jit(do_not_specialize=["HW", "W", "SPLIT", "sx_n", "sx_c", "sx_h", "sx_w"])
def _attention_vector_kernel(
    x_ptr, fc_w_ptr, fc_b_ptr, conv_w_ptr, conv_b_ptr, part_ptr, hidden_ptr, scale_ptr, count_ptr,
    N, C, K, HW, W, SPLIT,
    sx_n, sx_c, sx_h, sx_w,  # read only when not X_NHWC
    sfw_k, sfw_c, sfb, scw_c, scw_k, scb,
    X_NHWC: tl.constexpr, HAS_FC_BIAS: tl.constexpr, HAS_CONV_BIAS: tl.constexpr,
    BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_K: tl.constexpr,
    SCALE_BLOCK_C: tl.constexpr, HIDDEN_BLOCK_C: tl.constexpr, SCALE_BLOCK_K: tl.constexpr,
):
    """Tiles by ticket (see the module docstring): [0, pool) pool, then hidden, then scale tiles; each program takes
    tickets until they run out. count_ptr: ticket, pool tiles done, hidden tiles done, programs exited."""
    c_tiles = tl.cdiv(C, BLOCK_C)
    k_tiles = tl.cdiv(K, BLOCK_K)
    s_tiles = tl.cdiv(C, SCALE_BLOCK_C)
    pool_tiles = N * SPLIT * c_tiles
    hidden_tiles = N * k_tiles
    total = pool_tiles + hidden_tiles + N * s_tiles
    t = tl.atomic_add(count_ptr, 1)
    while t < total:
        if t < pool_tiles:
            pid = t // c_tiles  # n * SPLIT + s
            _pool_tile(x_ptr, part_ptr, pid // SPLIT, pid % SPLIT, t % c_tiles, C, HW, W, SPLIT,
                       sx_n, sx_c, sx_h, sx_w, X_NHWC, BLOCK_HW, BLOCK_C)
            _signal_done(count_ptr + 1)
        elif t < pool_tiles + hidden_tiles:
            _wait_for(count_ptr + 1, pool_tiles)
            h = t - pool_tiles
            _hidden_tile(part_ptr, fc_w_ptr, fc_b_ptr, hidden_ptr, h // k_tiles, h % k_tiles, C, K, HW, SPLIT,
                         sfw_k, sfw_c, sfb, HAS_FC_BIAS, BLOCK_S, BLOCK_K, HIDDEN_BLOCK_C)
            _signal_done(count_ptr + 2)
        else:
            _wait_for(count_ptr + 2, hidden_tiles)
            g = t - pool_tiles - hidden_tiles
            _scale_tile(hidden_ptr, conv_w_ptr, conv_b_ptr, scale_ptr, g // s_tiles, g % s_tiles, C, K,
                        scw_c, scw_k, scb, HAS_CONV_BIAS, SCALE_BLOCK_C, SCALE_BLOCK_K)
        tl.debug_barrier()  # every thread has the ticket before it is replaced
        t = tl.atomic_add(count_ptr, 1)
    # Every program has taken its last ticket and passed its last wait once all have got here: the last one resets
    # the counters for the next launch (kernel 2 and the next launch start only after this one has finished).
    if tl.atomic_add(count_ptr + 3, 1) == tl.num_programs(0) - 1:
        tl.atomic_xchg(count_ptr, 0)
        tl.atomic_xchg(count_ptr + 1, 0)
        tl.atomic_xchg(count_ptr + 2, 0)
        tl.atomic_xchg(count_ptr + 3, 0)


@triton.jit(do_not_specialize=["P", "HW", "W", "sx_n", "sx_c", "sx_h", "sx_w"])
def _scale_kernel(
    x_ptr, scale_ptr, out_ptr,  # out: dense NHWC
    P, C, HW, W,
    sx_n, sx_c, sx_h, sx_w,  # read only when not X_NHWC
    X_NHWC: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    offs_p = tl.program_id(0).to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    mask_p = offs_p < P
    n = offs_p // HW
    hw = offs_p % HW
    h = hw // W
    w = hw % W
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    mask = mask_p[:, None] & mask_c[None, :]
    dense = offs_p[:, None] * C + offs_c[None, :]  # offs_p = n * HW + h * W + w
    if X_NHWC:
        x = tl.load(x_ptr + dense, mask=mask, other=0.0)
    else:
        x = tl.load(x_ptr + (n * sx_n + h * sx_h + w * sx_w)[:, None] + offs_c[None, :] * sx_c, mask=mask, other=0.0)
    scale = tl.load(scale_ptr + n[:, None] * C + offs_c[None, :], mask=mask, other=0.0)
    y = x.to(tl.float32) * scale
    tl.store(out_ptr + dense, y.to(out_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------------------------------
# Host launcher and registration
# ---------------------------------------------------------------------------------------------------------------
_counter_buffers: dict = {}


def _counters(x: torch.Tensor) -> torch.Tensor:
    """Kernel 1's counters for x's device and current stream: zeroed on first use, then kept at zero by the kernel
    (no memset per call, nor a memset node in a CUDA graph; one set per stream, so launches on two streams never
    share them). While torch.compile or torch.export traces the op (x is then a tensor subclass), a fresh zeroed
    buffer instead: the traced graph must not capture this module's state."""
    if type(x) is not torch.Tensor or torch.compiler.is_compiling():
        return torch.zeros(_COUNTERS, dtype=torch.int32, device=x.device)
    stream = torch.cuda.current_stream(x.device).cuda_stream if x.is_cuda else None
    key = (x.device, stream)
    if key not in _counter_buffers:
        _counter_buffers[key] = torch.zeros(_COUNTERS, dtype=torch.int32, device=x.device)
    return _counter_buffers[key]


def tiles(c: int, hw: int) -> tuple[int, int, int]:
    """(BLOCK_HW of the pool kernel, BLOCK_P of the scale kernel, BLOCK_C of both) over C channels and HW pixels per
    sample; both launch TILE_WARPS warps."""
    block_c = channel_block(c, _MAX_BLOCK_C)
    block_p = pixel_block(block_c, TILE_ELEMENTS)
    return triton.next_power_of_2(min(block_p, static(hw))), block_p, block_c


def fc_attention_forward(
    x: torch.Tensor,
    fc_weight: torch.Tensor,
    fc_bias: torch.Tensor | None,
    conv_weight: torch.Tensor,
    conv_bias: torch.Tensor | None,
) -> torch.Tensor:
    """The Triton kernels behind ``dfanet_kernels.fc_attention(..., backend="triton")``; arguments are checked there.

    Takes any memory layout and returns NHWC. Pool, mat-vecs and scale accumulate in fp32 whatever x's dtype.
    """
    check_activation(x, "x")
    n, c, h, w = x.shape
    check(fc_weight.dim() == 2, lambda: f"fc_weight: expected K x C, got {tuple(fc_weight.shape)}")
    k = fc_weight.shape[0]
    check_same(fc_weight, x, "fc_weight", (k, c))
    check_same(fc_bias, x, "fc_bias", (k,))
    check_same(conv_weight, x, "conv_weight", (c, k, 1, 1))
    check_same(conv_bias, x, "conv_bias", (c,))
    hw = h * w
    out = empty_nhwc(x, (n, c, h, w))
    f32 = dict(dtype=torch.float32, device=x.device)
    if interpreter_tracing(x):
        return out

    block_hw, block_p, block_c = tiles(c, hw)
    split = min(_MAX_SPLIT, triton.cdiv(static(hw), block_hw))
    partial = torch.empty((n * split, c), **f32)
    hidden = torch.empty((n, k), **f32)
    scale = torch.empty((n, c), **f32)
    fc_b = partial if fc_bias is None else fc_bias  # never read without a bias
    conv_b = hidden if conv_bias is None else conv_bias
    scale_block_c = channel_block(c, _SCALE_BLOCK_C)
    tiles_ = n * (split * triton.cdiv(c, block_c) + triton.cdiv(k, _BLOCK_K) + triton.cdiv(c, scale_block_c))
    check(tiles_ + _MAX_PROGRAMS < 2**31, lambda: f"x: {tuple(x.shape)} is too large for the int32 ticket counter")
    launchable(_attention_vector_kernel)[(min(tiles_, _MAX_PROGRAMS),)](
        x, fc_weight, fc_b, conv_weight, conv_b, partial, hidden, scale, _counters(x), n, c, k, hw, w, split,
        *x.stride(), fc_weight.stride(0), fc_weight.stride(1), fc_b.stride(0),
        conv_weight.stride(0), conv_weight.stride(1), conv_b.stride(0),
        X_NHWC=is_nhwc(x), HAS_FC_BIAS=fc_bias is not None, HAS_CONV_BIAS=conv_bias is not None,
        BLOCK_HW=block_hw, BLOCK_C=block_c, BLOCK_S=triton.next_power_of_2(split), BLOCK_K=_BLOCK_K,
        SCALE_BLOCK_C=scale_block_c, HIDDEN_BLOCK_C=channel_block(c, _MATVEC_BLOCK), SCALE_BLOCK_K=_MATVEC_BLOCK,
        num_warps=TILE_WARPS,
    )

    launchable(_scale_kernel)[(triton.cdiv(n * hw, block_p), triton.cdiv(c, block_c))](
        x, scale, out, n * hw, c, hw, w, *x.stride(), X_NHWC=is_nhwc(x), BLOCK_P=block_p, BLOCK_C=block_c,
        num_warps=TILE_WARPS,
    )
    return out


# The op (its schema from the type hints); fc_attention_forward itself stays a plain function for eager calls.
fc_attention_triton = triton_op("dfanet::fc_attention_triton", mutates_args=())(fc_attention_forward)
