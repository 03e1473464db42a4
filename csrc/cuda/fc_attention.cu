// FC-attention channel scaling on the GPU, NHWC: pool -> two mat-vecs -> ReLU -> scale every pixel.
// Four small launches on one stream; only fp32 vectors are materialised, in the caller's workspace: the pooling's
// partial sums (N x splits x C, see fc_attention_pool_splits), hidden (N x K) and scale (N x C).
#include "common.cuh"
#include "launchers.h"

namespace dfanet::cuda {
namespace {

// Pooling: 32 channels (one per lane, coalesced over NHWC) x kPoolRows pixel rows summing in parallel.
constexpr int kPoolRows = 8;
// Mat-vecs: one warp per output element, 8 warps a block, the vector staged in shared memory in chunks.
constexpr int kMatvecThreads = 256;
constexpr int kVecChunk = 1024;
constexpr int kScaleThreads = 256;

// partial[n][s][c] = sum of x[n][i][c] over split s's pixels i (every splits-th group of kPoolRows), in fp32.
template <typename T>
__global__ void __launch_bounds__(32 * kPoolRows)
    pool_partial_kernel(const T* __restrict__ x, float* __restrict__ partial, int64_t N, int64_t HW, int64_t C,
                        int64_t splits) {
  __shared__ float rows[kPoolRows][32];
  const int lane = threadIdx.x, row = threadIdx.y;
  const int64_t c_blocks = ceil_div(C, 32);
  for (int64_t b = blockIdx.x; b < N * c_blocks * splits; b += gridDim.x) {
    const int64_t s = b % splits, rest = b / splits;
    const int64_t n = rest / c_blocks, c = (rest % c_blocks) * 32 + lane;
    float sum = 0.f;
    if (c < C) {
      const T* xc = x + n * HW * C + c;
#pragma unroll 4
      for (int64_t i = s * kPoolRows + row; i < HW; i += splits * kPoolRows) sum += to_float(xc[i * C]);
    }
    rows[row][lane] = sum;
    __syncthreads();
    if (row == 0 && c < C) {
      float total = 0.f;
#pragma unroll
      for (int r = 0; r < kPoolRows; ++r) total += rows[r][lane];
      partial[(n * splits + s) * C + c] = total;
    }
    __syncthreads();  // rows is rewritten by the next block-iteration
  }
}

// out[n][r] = act(bias[r] + sum_k W[r][k] * v[n][k]): W is R x K row-major, out fp32, and v[n][k] = v_scale times
// the sum over s of parts[n][s][k] (the pooling's partial sums and 1 / HW; one part and 1 for the second mat-vec).
// A block computes kWarps rows of one sample, a warp per row; v is summed once per block into shared memory,
// kVecChunk values at a time (summed per row, every warp re-read all the partial sums).
template <typename T>
__global__ void __launch_bounds__(kMatvecThreads)
    matvec_kernel(const T* __restrict__ W, const T* __restrict__ bias, const float* __restrict__ parts,
                  int64_t num_parts, float v_scale, float* __restrict__ out, int64_t N, int64_t R, int64_t K,
                  bool relu_out) {
  constexpr int kWarps = kMatvecThreads / 32;
  __shared__ float v_chunk[kVecChunk];
  const int lane = threadIdx.x % 32;
  const int64_t row_groups = ceil_div(R, kWarps);
  // b is the same for the whole block, so every thread reaches the barriers; r past R idles through them.
  for (int64_t b = blockIdx.x; b < N * row_groups; b += gridDim.x) {
    const int64_t n = b / row_groups, r = (b % row_groups) * kWarps + threadIdx.x / 32;
    const float* vn = parts + n * num_parts * K;
    float sum = 0.f;
    for (int64_t k0 = 0; k0 < K; k0 += kVecChunk) {
      const int len = static_cast<int>(K - k0 < kVecChunk ? K - k0 : kVecChunk);
      __syncthreads();  // the previous chunk (or block-iteration) is done with v_chunk
      for (int i = threadIdx.x; i < len; i += kMatvecThreads) {
        float v = vn[k0 + i];
#pragma unroll 8
        for (int64_t s = 1; s < num_parts; ++s) v += vn[s * K + k0 + i];
        v_chunk[i] = v * v_scale;
      }
      __syncthreads();
      if (r < R) {
        const T* w = W + r * K + k0;
        for (int k = lane; k < len; k += 32) sum = fmaf(to_float(w[k]), v_chunk[k], sum);
      }
    }
    // r is the same for the whole warp, so every lane takes part in the shuffles.
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_down_sync(0xffffffffu, sum, offset);
    if (lane == 0 && r < R) {
      if (bias) sum += to_float(bias[r]);
      out[n * R + r] = relu_out ? relu(sum) : sum;
    }
  }
}

// out[n][i][c] = x[n][i][c] * scale[n][c] over the N x HW x C elements.
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
  pool_partial_kernel<T><<<grid_size(p.N * ceil_div(p.C, 32) * splits, 1), dim3(32, kPoolRows), 0, stream>>>(
      x, partial, p.N, p.HW, p.C, splits);
  constexpr int kWarps = kMatvecThreads / 32;
  if (p.K > 0) {  // an empty hidden layer leaves scale = relu(conv_bias)
    matvec_kernel<T><<<grid_size(p.N * ceil_div(p.K, kWarps), 1), kMatvecThreads, 0, stream>>>(
        static_cast<const T*>(p.fc_weight), static_cast<const T*>(p.fc_bias), partial, splits,
        1.f / static_cast<float>(p.HW), hidden, p.N, p.K, p.C, false);
  }
  matvec_kernel<T><<<grid_size(p.N * ceil_div(p.C, kWarps), 1), kMatvecThreads, 0, stream>>>(
      static_cast<const T*>(p.conv_weight), static_cast<const T*>(p.conv_bias), hidden, 1, 1.f, scale, p.N, p.C,
      p.K, true);
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
