// FC-attention channel scaling on the GPU, NHWC: pool -> two mat-vecs -> ReLU -> scale every pixel.
// Four small launches on one stream; only the fp32 pooled (N x C), hidden (N x K) and scale (N x C) vectors are
// materialised, in the caller's workspace.
#include "common.cuh"
#include "launchers.h"

namespace dfanet::cuda {
namespace {

// Pooling: 32 channels (one per lane, coalesced over NHWC) x kPoolRows pixel rows summing in parallel.
constexpr int kPoolRows = 8;
// Mat-vecs: one warp per output element, 8 warps a block.
constexpr int kMatvecThreads = 256;
constexpr int kScaleThreads = 256;

// pooled[n][c] = mean over the HW pixels of x[n][.][c], accumulated in fp32.
template <typename T>
__global__ void __launch_bounds__(32 * kPoolRows) mean_pool_kernel(const T* __restrict__ x, float* __restrict__ pooled,
                                                                   int64_t N, int64_t HW, int64_t C) {
  __shared__ float partial[kPoolRows][32];
  const int lane = threadIdx.x, row = threadIdx.y;
  const int64_t c_blocks = ceil_div(C, 32);
  for (int64_t b = blockIdx.x; b < N * c_blocks; b += gridDim.x) {
    const int64_t n = b / c_blocks, c = (b % c_blocks) * 32 + lane;
    float sum = 0.f;
    if (c < C) {
      for (int64_t i = row; i < HW; i += kPoolRows) sum += to_float(x[(n * HW + i) * C + c]);
    }
    partial[row][lane] = sum;
    __syncthreads();
    if (row == 0 && c < C) {
      float total = 0.f;
#pragma unroll
      for (int r = 0; r < kPoolRows; ++r) total += partial[r][lane];
      pooled[n * C + c] = total / static_cast<float>(HW);
    }
    __syncthreads();  // partial is rewritten by the next block-iteration
  }
}

// out[n][r] = act(bias[r] + sum_k W[r][k] * v[n][k]): W is R x K row-major, v and out fp32.
template <typename T>
__global__ void __launch_bounds__(kMatvecThreads) matvec_kernel(const T* __restrict__ W, const T* __restrict__ bias,
                                                                const float* __restrict__ v, float* __restrict__ out,
                                                                int64_t N, int64_t R, int64_t K, bool relu_out) {
  constexpr int kWarps = kMatvecThreads / 32;
  const int lane = threadIdx.x % 32;
  // o is the same for the whole warp, so every lane takes part in the shuffles below.
  for (int64_t o = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32; o < N * R;
       o += static_cast<int64_t>(gridDim.x) * kWarps) {
    const int64_t n = o / R, r = o % R;
    const T* w = W + r * K;
    const float* vn = v + n * K;
    float sum = 0.f;
    for (int64_t k = lane; k < K; k += 32) sum = fmaf(to_float(w[k]), vn[k], sum);
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_down_sync(0xffffffffu, sum, offset);
    if (lane == 0) {
      if (bias) sum += to_float(bias[r]);
      out[o] = relu_out ? relu(sum) : sum;
    }
  }
}

// out[n][i][c] = x[n][i][c] * scale[n][c] over the N x HW x C elements.
template <typename T>
__global__ void __launch_bounds__(kScaleThreads) scale_kernel(const T* __restrict__ x, const float* __restrict__ scale,
                                                              T* __restrict__ out, int64_t N, int64_t HW, int64_t C) {
  const int64_t total = N * HW * C, per_sample = HW * C;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * kScaleThreads + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * kScaleThreads) {
    const int64_t n = e / per_sample, c = e % C;
    out[e] = from_float<T>(to_float(x[e]) * scale[n * C + c]);
  }
}

template <typename T>
cudaError_t launch_typed(const FcAttentionParams& p, cudaStream_t stream) {
  const T* x = static_cast<const T*>(p.x);
  float* pooled = p.workspace;
  float* hidden = pooled + p.N * p.C;
  float* scale = hidden + p.N * p.K;
  mean_pool_kernel<T><<<grid_size(p.N * ceil_div(p.C, 32), 1), dim3(32, kPoolRows), 0, stream>>>(x, pooled, p.N,
                                                                                                     p.HW, p.C);
  constexpr int kWarps = kMatvecThreads / 32;
  if (p.K > 0) {  // an empty hidden layer leaves scale = relu(conv_bias)
    matvec_kernel<T><<<grid_size(p.N * p.K, kWarps), kMatvecThreads, 0, stream>>>(
        static_cast<const T*>(p.fc_weight), static_cast<const T*>(p.fc_bias), pooled, hidden, p.N, p.K, p.C, false);
  }
  matvec_kernel<T><<<grid_size(p.N * p.C, kWarps), kMatvecThreads, 0, stream>>>(
      static_cast<const T*>(p.conv_weight), static_cast<const T*>(p.conv_bias), hidden, scale, p.N, p.C, p.K, true);
  scale_kernel<T><<<grid_size(p.N * p.HW * p.C, kScaleThreads), kScaleThreads, 0, stream>>>(
      x, scale, static_cast<T*>(p.out), p.N, p.HW, p.C);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_fc_attention(const FcAttentionParams& p, cudaStream_t stream) {
  return dispatch_dtype(p.dtype, [&](auto type) { return launch_typed<typename decltype(type)::type>(p, stream); });
}

}  // namespace dfanet::cuda
