// Dense 3x3 convolution + bias + optional ReLU on the GPU, padding 1, stride 1 or 2: DFANet's stem (conv1, 3 -> 8
// channels, stride 2, on the network's input). The input is read through its strides (NCHW, channels_last or any
// view), so the model converts nothing before it; the output is NHWC; fp32 accumulation.
// A thread computes kGroup consecutive output channels (blockIdx.y's group) of kPixels output pixels, kThreads
// apart: consecutive threads take consecutive pixels of a row, so a warp reads each tap of an NCHW image from one
// span of a row, and writes its pixels' channels as one contiguous run (at the stem, one 16-byte store per pixel
// in fp16/bf16, two in fp32). The weights of the block's group are staged in shared memory in fp32, kChunk input
// channels at a time, a tap's kGroup weights side by side: two 16-byte shared loads serve kPixels x kGroup FMAs.
#include "common.cuh"
#include "launchers.h"

namespace dfanet::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kGroup = 8;
constexpr int kPixels = 4;
constexpr int kChunk = 16;  // input channels whose weights are staged at once: 4.5 KB of shared memory
constexpr int kTaps = 9;

// The kGroup values of one pixel in 16-byte stores (4 fp32 or 8 fp16/bf16 values each); p 16-byte aligned.
template <typename T>
__device__ __forceinline__ void store_group(T* p, const float (&v)[kGroup]) {
  constexpr int kPerStore = 16 / sizeof(T);
#pragma unroll
  for (int s = 0; s < kGroup; s += kPerStore) {
    uint4 raw;
    T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
    for (int j = 0; j < kPerStore; ++j) e[j] = from_float<T>(v[s + j]);
    *reinterpret_cast<uint4*>(p + s) = raw;
  }
}

// kVector: Cout a multiple of kGroup and `out` 16-byte aligned (launch_typed checks), so every group is whole and
// aligned; else a group is stored value by value, the last one cut at Cout.
template <typename T, typename Index, bool kVector>
__global__ void __launch_bounds__(kThreads) conv3x3_kernel(const Conv3x3Params p, Index pixels) {
  __shared__ __align__(16) float w_s[kChunk * kTaps * kGroup];  // [channel][tap][output channel of the group]
  const T* x = static_cast<const T*>(p.x);
  const T* weight = static_cast<const T*>(p.weight);
  const T* bias = static_cast<const T*>(p.bias);
  T* out = static_cast<T*>(p.out);
  const Index C = static_cast<Index>(p.C), H = static_cast<Index>(p.H), W = static_cast<Index>(p.W);
  const Index Ho = static_cast<Index>(p.Ho), Wo = static_cast<Index>(p.Wo), Cout = static_cast<Index>(p.Cout);
  const Index sN = static_cast<Index>(p.sN), sC = static_cast<Index>(p.sC), sH = static_cast<Index>(p.sH),
              sW = static_cast<Index>(p.sW);
  const Index stride = p.stride;
  const Index co0 = static_cast<Index>(blockIdx.y) * kGroup;
  const int count = static_cast<int>(Cout - co0 < kGroup ? Cout - co0 : kGroup);
  float b[kGroup];
#pragma unroll
  for (int j = 0; j < kGroup; ++j) b[j] = bias != nullptr && j < count ? to_float(bias[co0 + j]) : 0.f;

  // Block-uniform loop (the barriers below): kThreads x kPixels pixels a round.
  const Index per_block = kThreads * kPixels, step = static_cast<Index>(gridDim.x) * per_block;
  for (Index first = static_cast<Index>(blockIdx.x) * per_block; first < pixels; first += step) {
    // Per pixel: the element offset of its tap (0, 0) at channel 0 (negative at the image's top and left edge: only
    // taps inside the image are read) and a bit per tap inside it (none for a pixel past the end).
    Index origin[kPixels];
    unsigned inside[kPixels];
#pragma unroll
    for (int k = 0; k < kPixels; ++k) {
      const Index pix = first + k * kThreads + static_cast<Index>(threadIdx.x);
      const Index ow = pix % Wo, rest = pix / Wo;
      const Index oh = rest % Ho, n = rest / Ho;
      const Index ih0 = oh * stride - 1, iw0 = ow * stride - 1;
      origin[k] = n * sN + ih0 * sH + iw0 * sW;
      inside[k] = 0;
#pragma unroll
      for (int tap = 0; tap < kTaps; ++tap) {
        const Index ih = ih0 + tap / 3, iw = iw0 + tap % 3;
        if (pix < pixels && ih >= 0 && ih < H && iw >= 0 && iw < W) inside[k] |= 1u << tap;
      }
    }
    float acc[kPixels][kGroup] = {};
    for (Index c0 = 0; c0 < C; c0 += kChunk) {
      const int chunk = static_cast<int>(C - c0 < kChunk ? C - c0 : kChunk);
      __syncthreads();  // every thread is done with the previous chunk's weights
      for (int i = static_cast<int>(threadIdx.x); i < chunk * kTaps * kGroup; i += kThreads) {
        const int j = i % kGroup, tap = i / kGroup % kTaps, c = i / (kGroup * kTaps);
        w_s[i] = j < count ? to_float(weight[((co0 + j) * C + c0 + c) * kTaps + tap]) : 0.f;
      }
      __syncthreads();
      for (int c = 0; c < chunk; ++c) {
        const Index channel = (c0 + c) * sC;
#pragma unroll
        for (int tap = 0; tap < kTaps; ++tap) {
          const float4 lo = *reinterpret_cast<const float4*>(&w_s[(c * kTaps + tap) * kGroup]);
          const float4 hi = *reinterpret_cast<const float4*>(&w_s[(c * kTaps + tap) * kGroup + 4]);
          const float wt[kGroup] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
          const Index at = channel + (tap / 3) * sH + (tap % 3) * sW;
#pragma unroll
          for (int k = 0; k < kPixels; ++k) {
            if (inside[k] >> tap & 1u) {
              const float v = to_float(x[origin[k] + at]);
#pragma unroll
              for (int j = 0; j < kGroup; ++j) acc[k][j] = fmaf(v, wt[j], acc[k][j]);
            }
          }
        }
      }
    }
#pragma unroll
    for (int k = 0; k < kPixels; ++k) {
      const Index pix = first + k * kThreads + static_cast<Index>(threadIdx.x);
      if (pix >= pixels) continue;
      float v[kGroup];
#pragma unroll
      for (int j = 0; j < kGroup; ++j) v[j] = p.relu ? relu(acc[k][j] + b[j]) : acc[k][j] + b[j];
      T* o = out + pix * Cout + co0;
      if constexpr (kVector) {
        store_group(o, v);
      } else {
#pragma unroll
        for (int j = 0; j < kGroup; ++j) {
          if (j < count) o[j] = from_float<T>(v[j]);
        }
      }
    }
  }
}

// Every element offset (of the input through its strides, the weight, the output) below kInt32IndexLimit.
bool fits_int32(const Conv3x3Params& p) {
  const int64_t reach = (p.N - 1) * p.sN + (p.C - 1) * p.sC + (p.H - 1) * p.sH + (p.W - 1) * p.sW;
  return reach < kInt32IndexLimit && p.Cout * p.C * kTaps < kInt32IndexLimit &&
         p.N * p.Ho * p.Wo * p.Cout < kInt32IndexLimit;
}

template <typename T, typename Index>
cudaError_t launch_typed(const Conv3x3Params& p, cudaStream_t stream) {
  const int64_t pixels = p.N * p.Ho * p.Wo;
  const dim3 grid(grid_size(pixels, kThreads * kPixels), static_cast<unsigned>(ceil_div(p.Cout, kGroup)));
  if (p.Cout % kGroup == 0 && reinterpret_cast<uintptr_t>(p.out) % 16 == 0) {
    conv3x3_kernel<T, Index, true><<<grid, kThreads, 0, stream>>>(p, static_cast<Index>(pixels));
  } else {
    conv3x3_kernel<T, Index, false><<<grid, kThreads, 0, stream>>>(p, static_cast<Index>(pixels));
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_conv3x3(const Conv3x3Params& p, cudaStream_t stream) {
  return dispatch_dtype(p.dtype, [&](auto type) {
    using T = typename decltype(type)::type;
    return fits_int32(p) ? launch_typed<T, int32_t>(p, stream) : launch_typed<T, int64_t>(p, stream);
  });
}

}  // namespace dfanet::cuda
