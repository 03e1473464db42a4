// FC-attention channel scaling on the GPU, NHWC: pool -> two mat-vecs -> ReLU -> scale every pixel, in two launches.
//
// Kernel 1 (attention_vector_kernel) computes the scale vector; kernel 2 (scale_kernel) multiplies the map by it.
// Only fp32 vectors are materialised, in the caller's workspace: the pooling's partial sums (N x splits x C, see
// fc_attention_pool_splits), hidden (N x K) and scale (N x C).
//
// Why kernel 1 looks like this (roofline, H100, DFANet A: C = 192, K = 1000, maps 64x64 / 32x32 / 16x16, batch 1):
// the two mat-vecs are 2 x 192K MACs over 2 x 0.77 MB of fp32 weights (0.38 MB fp16). One SM streams about
// 25-50 GB/s from L2/HBM, so the "last block finishes the sample" design (one block reads both matrices) would take
// 30-60 us, more than the three launches it saves (~2 us each in a CUDA graph). The mat-vecs must be spread over
// many blocks, and each needs the whole previous vector: a grid-wide dependency. Kernel 1 therefore runs three
// phases of tiles in one grid, handed out in order by a ticket counter (atomicAdd, as CUB's single-pass scan does):
//   pool tiles    (N x splits x C/32)    partial sums of 32 channels over one pixel split (x read once);
//   hidden tiles  (N x K/32)             32 hidden units each (24 KB of fp32 weights at C = 192), after every pool
//                                        tile: each sums the partials (splits x C floats, L2-resident) itself;
//   scale tiles   (N x C/8)              8 channels of relu(conv_w @ hidden + conv_b) (32 KB at K = 1000).
// A tile waits only for counters of tiles with lower tickets, which were taken by blocks already running, so the
// waits finish however many blocks are resident (and never wait at all where blocks run one after another, as in
// the CPU emulator). At DFANet's shapes that is 192 + 32 + 24 = 248 tiles, each streaming at most ~32 KB (about
// 1 us per phase) with every block resident on 132 SMs; the phases' device-side handoffs cost an L2 round trip
// each instead of a dependent launch. The pool is the same bytes as before (x once); kernel 2 reads x again and
// writes out: the floor is 3 x the map's bytes plus the weights once.
//
// The counters (kFcAttentionCounters unsigned ints per (device, stream), see launchers.h) start at zero and the
// last block to leave kernel 1 sets them back to zero, so the next launch on the stream (or the next replay of a
// captured CUDA graph) finds them ready without a memset: no host synchronisation anywhere.
#include "common.cuh"
#include "launchers.h"

namespace dfanet::cuda {
namespace {

constexpr int kThreads = 256;  // every block of kernel 1: 8 warps
constexpr int kWarps = kThreads / 32;
// Pooling: 32 channels (one per lane, coalesced over NHWC) x kPoolRows pixel rows summing in parallel.
constexpr int kPoolRows = kWarps;
// Mat-vec tiles: each warp owns this many output rows; the vector is staged in shared memory in chunks.
constexpr int kHiddenRowsPerWarp = 4;  // 32 hidden units a tile
constexpr int kScaleRowsPerWarp = 1;   // 8 channels a tile
constexpr int kVecChunk = 1024;
constexpr int kScaleThreads = 256;

enum Counter { kTicket, kPooled, kHidden, kExited };
static_assert(kExited < kFcAttentionCounters, "launchers.h reserves too few counters");

// Tile bookkeeping: after __syncthreads, thread 0's atomic on counter `c` publishes the block's global writes.
__device__ __forceinline__ void signal_done(unsigned* counter) {
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    atomicAdd(counter, 1u);
  }
}

// Returns once `target` tiles have signalled `counter`; their writes are then visible to the whole block (read them
// with __ldcg: the read-only path may not see data written during the kernel).
__device__ __forceinline__ void wait_for(unsigned* counter, int64_t target) {
  if (threadIdx.x == 0) {
    while (static_cast<int64_t>(atomicAdd(counter, 0u)) < target) __nanosleep(100);
    __threadfence();
  }
  __syncthreads();
}

// partial[n][s][c] = sum of x[n][i][c] over split s's pixels i (every splits-th group of kPoolRows), in fp32, for
// the 32 channels of channel block cb.
template <typename T>
__device__ void pool_tile(const T* __restrict__ x, float* partial, int64_t n, int64_t cb, int64_t s, int64_t HW,
                          int64_t C, int64_t splits, float* rows) {
  const int lane = threadIdx.x % 32, row = threadIdx.x / 32;
  const int64_t c = cb * 32 + lane;
  float sum = 0.f;
  if (c < C) {
    const T* xc = x + n * HW * C + c;
#pragma unroll 4
    for (int64_t i = s * kPoolRows + row; i < HW; i += splits * kPoolRows) sum += to_float(xc[i * C]);
  }
  rows[row * 32 + lane] = sum;
  __syncthreads();
  if (row == 0 && c < C) {
    float total = 0.f;
#pragma unroll
    for (int r = 0; r < kPoolRows; ++r) total += rows[r * 32 + lane];
    partial[(n * splits + s) * C + c] = total;
  }
}

// Rows [r0, r0 + kRows x kWarps) of out[n] = act(bias + W @ v): W is R x K row-major, out fp32, and v[k] = v_scale
// times the sum over s of parts[s][k] (the pooling's partial sums and 1 / HW; one part and 1 for the second mat-vec).
// Warp w owns rows r0 + w + j x kWarps; v is summed once per block into shared memory, kVecChunk values at a time.
template <int kRows, typename T>
__device__ void matvec_tile(const T* __restrict__ W, const T* __restrict__ bias, const float* parts, int64_t num_parts,
                            float v_scale, float* out, int64_t R, int64_t K, int64_t r0, bool relu_out,
                            float* v_chunk) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  float sum[kRows];
#pragma unroll
  for (int j = 0; j < kRows; ++j) sum[j] = 0.f;
  for (int64_t k0 = 0; k0 < K; k0 += kVecChunk) {
    const int len = static_cast<int>(K - k0 < kVecChunk ? K - k0 : kVecChunk);
    __syncthreads();  // the previous chunk (or tile) is done with v_chunk
    for (int i = threadIdx.x; i < len; i += kThreads) {
      float v = __ldcg(parts + k0 + i);
#pragma unroll 8
      for (int64_t s = 1; s < num_parts; ++s) v += __ldcg(parts + s * K + k0 + i);
      v_chunk[i] = v * v_scale;
    }
    __syncthreads();
#pragma unroll
    for (int j = 0; j < kRows; ++j) {
      const int64_t r = r0 + warp + j * kWarps;
      if (r < R) {
        const T* w = W + r * K + k0;
        for (int k = lane; k < len; k += 32) sum[j] = fmaf(to_float(w[k]), v_chunk[k], sum[j]);
      }
    }
  }
#pragma unroll
  for (int j = 0; j < kRows; ++j) {
    const int64_t r = r0 + warp + j * kWarps;  // the same for the whole warp: every lane takes part in the shuffles
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) sum[j] += __shfl_down_sync(0xffffffffu, sum[j], offset);
    if (lane == 0 && r < R) {
      float y = sum[j];
      if (bias) y += to_float(bias[r]);
      out[r] = relu_out ? relu(y) : y;
    }
  }
}

// Kernel 1: the scale vector, scale[n][c] = relu(conv_w @ (fc_w @ mean(x[n]) + fc_b) + conv_b), in the three phases
// of tiles described at the top of the file. Each block takes tickets until they run out (grid-stride style).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    attention_vector_kernel(const T* __restrict__ x, const T* __restrict__ fc_w, const T* __restrict__ fc_b,
                            const T* __restrict__ conv_w, const T* __restrict__ conv_b, float* partial, float* hidden,
                            float* scale, unsigned* counters, int64_t N, int64_t HW, int64_t C, int64_t K,
                            int64_t splits) {
  __shared__ float smem[kVecChunk];  // the pool tiles' rows, the mat-vec tiles' vector chunk
  __shared__ unsigned ticket;
  static_assert(kPoolRows * 32 <= kVecChunk, "pool rows do not fit the shared buffer");
  const int64_t c_blocks = ceil_div(C, 32);
  constexpr int kHiddenRows = kHiddenRowsPerWarp * kWarps, kScaleRows = kScaleRowsPerWarp * kWarps;
  const int64_t hidden_groups = ceil_div(K, kHiddenRows), scale_groups = ceil_div(C, kScaleRows);
  const int64_t pool_tiles = N * c_blocks * splits, hidden_tiles = N * hidden_groups;
  const int64_t total = pool_tiles + hidden_tiles + N * scale_groups;
  for (;;) {
    __syncthreads();  // the previous tile is done with smem and ticket
    if (threadIdx.x == 0) ticket = atomicAdd(&counters[kTicket], 1u);
    __syncthreads();
    int64_t t = ticket;  // the same for the whole block, so every thread reaches the barriers below
    if (t >= total) break;
    if (t < pool_tiles) {
      const int64_t s = t % splits, rest = t / splits;
      pool_tile(x, partial, rest / c_blocks, rest % c_blocks, s, HW, C, splits, smem);
      signal_done(&counters[kPooled]);
    } else if ((t -= pool_tiles) < hidden_tiles) {
      wait_for(&counters[kPooled], pool_tiles);
      const int64_t n = t / hidden_groups;
      matvec_tile<kHiddenRowsPerWarp>(fc_w, fc_b, partial + n * splits * C, splits, 1.f / static_cast<float>(HW),
                                      hidden + n * K, K, C, (t % hidden_groups) * kHiddenRows, false, smem);
      signal_done(&counters[kHidden]);
    } else {
      t -= hidden_tiles;
      wait_for(&counters[kHidden], hidden_tiles);
      const int64_t n = t / scale_groups;
      matvec_tile<kScaleRowsPerWarp>(conv_w, conv_b, hidden + n * K, 1, 1.f, scale + n * C, C, K,
                                     (t % scale_groups) * kScaleRows, true, smem);
    }
  }
  // Every block has taken its last ticket and passed its last wait once all have got here: the last one resets the
  // counters for the next launch (kernel 2 and the next launch start only after this kernel has finished).
  if (threadIdx.x == 0) {
    __threadfence();
    if (atomicAdd(&counters[kExited], 1u) == gridDim.x - 1) {
      for (int i = 0; i < kFcAttentionCounters; ++i) atomicExch(&counters[i], 0u);
    }
  }
}

// Kernel 2: out[n][i][c] = x[n][i][c] * scale[n][c] over the N x HW x C elements.
template <typename T, typename Index>
__global__ void __launch_bounds__(kScaleThreads)
    scale_kernel(const T* __restrict__ x, const float* __restrict__ scale, T* __restrict__ out, Index total,
                 Index per_sample, Index C) {
  const Index step = static_cast<Index>(gridDim.x) * kScaleThreads;
  for (Index e = static_cast<Index>(blockIdx.x) * kScaleThreads + static_cast<Index>(threadIdx.x); e < total;
       e += step) {
    out[e] = from_float<T>(to_float(x[e]) * scale[(e / per_sample) * C + e % C]);
  }
}

template <typename T, typename Index>
void launch_scale(const T* x, const float* scale, T* out, int64_t N, int64_t HW, int64_t C, cudaStream_t stream) {
  scale_kernel<T, Index><<<grid_size(N * HW * C, kScaleThreads), kScaleThreads, 0, stream>>>(
      x, scale, out, static_cast<Index>(N * HW * C), static_cast<Index>(HW * C), static_cast<Index>(C));
}

template <typename T>
cudaError_t launch_typed(const FcAttentionParams& p, cudaStream_t stream) {
  const T* x = static_cast<const T*>(p.x);
  const int64_t splits = fc_attention_pool_splits(p.HW);
  float* partial = p.workspace;
  float* hidden = partial + p.N * splits * p.C;
  float* scale = hidden + p.N * p.K;
  const int64_t tiles = p.N * (ceil_div(p.C, 32) * splits + ceil_div(p.K, kHiddenRowsPerWarp * kWarps) +
                               ceil_div(p.C, kScaleRowsPerWarp * kWarps));
  if (tiles + kMaxBlocks >= (int64_t{1} << 32)) return cudaErrorInvalidValue;  // the 32-bit ticket counter
  attention_vector_kernel<T><<<grid_size(tiles, 1), kThreads, 0, stream>>>(
      x, static_cast<const T*>(p.fc_weight), static_cast<const T*>(p.fc_bias), static_cast<const T*>(p.conv_weight),
      static_cast<const T*>(p.conv_bias), partial, hidden, scale, p.counters, p.N, p.HW, p.C, p.K, splits);
  if (p.N * p.HW * p.C < kInt32IndexLimit) {
    launch_scale<T, int32_t>(x, scale, static_cast<T*>(p.out), p.N, p.HW, p.C, stream);
  } else {
    launch_scale<T, int64_t>(x, scale, static_cast<T*>(p.out), p.N, p.HW, p.C, stream);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_fc_attention(const FcAttentionParams& p, cudaStream_t stream) {
  return dispatch_dtype(p.dtype, [&](auto type) { return launch_typed<typename decltype(type)::type>(p, stream); });
}

}  // namespace dfanet::cuda
