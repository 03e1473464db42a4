// Bilinear upsample + concat / + add on the GPU, NHWC, in one pass over the output.
// align_corners=False with PyTorch's source-index rule (src = (dst + 0.5) * in / out - 0.5, clamped at 0), the same
// fp32 arithmetic as PyTorch's CUDA kernel; a source already at the output size is copied exactly.
// One warp per output pixel, lanes over channels: reads and writes are contiguous in NHWC.
#include "common.cuh"
#include "launchers.h"

namespace dfanet::cuda {
namespace {

constexpr int kPixelsPerBlock = 8;
// Sources travel in the kernel's parameters; DFANet merges 2 or 3, more than 8 take one extra pass per 8.
constexpr int kMaxSourcesPerLaunch = 8;

struct SourceArgs {
  const void* data;  // N x H x W x C
  int64_t C, H, W;
  int64_t channel_offset;  // where the source's channels start in the output (0 for add)
  float scale_h, scale_w;  // in / out, as PyTorch computes it
};

struct SourceGroup {
  SourceArgs s[kMaxSourcesPerLaunch];
  int count;
};

// The two source indices and weights of output index `dst` along one axis.
struct AxisTap {
  int64_t i0, i1;
  float w0, w1;
};

__device__ AxisTap axis_tap(int64_t dst, int64_t in, float scale) {
  float src = scale * (static_cast<float>(dst) + 0.5f) - 0.5f;
  if (src < 0.f) src = 0.f;
  int64_t i0 = static_cast<int64_t>(src);
  if (i0 > in - 1) i0 = in - 1;  // never taken by the formula; keeps a rounding surprise inside the image
  const float w1 = src - static_cast<float>(i0);
  return AxisTap{i0, i0 + (i0 < in - 1 ? 1 : 0), 1.f - w1, w1};
}

// Reads one source's value at an output pixel, channel by channel.
template <typename T>
struct Sampler {
  const T* p00;  // the four source pixels (channel 0); p00 alone when copying
  const T* p01;
  const T* p10;
  const T* p11;
  float h0, h1, w0, w1;
  bool copy;

  __device__ Sampler(const SourceArgs& s, int64_t n, int64_t oh, int64_t ow, int64_t Ho, int64_t Wo) {
    const T* plane = static_cast<const T*>(s.data) + n * s.H * s.W * s.C;
    // A bilinear weight of 0 times an inf neighbour would give NaN: the same size is a plain copy instead.
    copy = s.H == Ho && s.W == Wo;
    const AxisTap th = copy ? AxisTap{oh, oh, 1.f, 0.f} : axis_tap(oh, s.H, s.scale_h);
    const AxisTap tw = copy ? AxisTap{ow, ow, 1.f, 0.f} : axis_tap(ow, s.W, s.scale_w);
    p00 = plane + (th.i0 * s.W + tw.i0) * s.C;
    p01 = plane + (th.i0 * s.W + tw.i1) * s.C;
    p10 = plane + (th.i1 * s.W + tw.i0) * s.C;
    p11 = plane + (th.i1 * s.W + tw.i1) * s.C;
    h0 = th.w0;
    h1 = th.w1;
    w0 = tw.w0;
    w1 = tw.w1;
  }

  __device__ float operator()(int64_t c) const {
    if (copy) return to_float(p00[c]);
    return h0 * (w0 * to_float(p00[c]) + w1 * to_float(p01[c])) +
           h1 * (w0 * to_float(p10[c]) + w1 * to_float(p11[c]));
  }
};

// Writes (or, for add with accumulate, adds to) every output pixel's channels from the group's sources.
template <typename T>
__global__ void __launch_bounds__(32 * kPixelsPerBlock) upsample_kernel(const SourceGroup g, T* __restrict__ out,
                                                                        int64_t N, int64_t Ho, int64_t Wo,
                                                                        int64_t Cout, bool add, bool accumulate) {
  const int lane = threadIdx.x;
  const int64_t pixels = N * Ho * Wo;
  for (int64_t pix = static_cast<int64_t>(blockIdx.x) * kPixelsPerBlock + threadIdx.y; pix < pixels;
       pix += static_cast<int64_t>(gridDim.x) * kPixelsPerBlock) {
    const int64_t ow = pix % Wo, rest = pix / Wo;
    const int64_t oh = rest % Ho, n = rest / Ho;
    T* o = out + pix * Cout;
    if (add) {
      for (int64_t c = lane; c < Cout; c += 32) {
        // Summed left to right as the reference does; starting from the first term, not 0.f, keeps a lone
        // input's -0.0 (0.f + -0.f is +0.f).
        int s = 0;
        float sum = accumulate ? to_float(o[c]) : Sampler<T>(g.s[s++], n, oh, ow, Ho, Wo)(c);
        for (; s < g.count; ++s) sum += Sampler<T>(g.s[s], n, oh, ow, Ho, Wo)(c);
        o[c] = from_float<T>(sum);
      }
    } else {
      for (int s = 0; s < g.count; ++s) {
        const Sampler<T> sample(g.s[s], n, oh, ow, Ho, Wo);
        T* os = o + g.s[s].channel_offset;
        for (int64_t c = lane; c < g.s[s].C; c += 32) os[c] = from_float<T>(sample(c));
      }
    }
  }
}

template <typename T>
cudaError_t launch_typed(const UpsampleParams& p, cudaStream_t stream) {
  const unsigned grid = grid_size(p.N * p.Ho * p.Wo, kPixelsPerBlock);
  int64_t channel_offset = 0;
  for (int64_t first = 0; first < p.num_sources; first += kMaxSourcesPerLaunch) {
    SourceGroup g{};
    g.count = static_cast<int>(p.num_sources - first < kMaxSourcesPerLaunch ? p.num_sources - first
                                                                             : kMaxSourcesPerLaunch);
    for (int i = 0; i < g.count; ++i) {
      const UpsampleSource& src = p.sources[first + i];
      g.s[i] = SourceArgs{src.data, src.C, src.H, src.W, p.add ? 0 : channel_offset,
                          static_cast<float>(src.H) / static_cast<float>(p.Ho),
                          static_cast<float>(src.W) / static_cast<float>(p.Wo)};
      channel_offset += src.C;
    }
    upsample_kernel<T><<<grid, dim3(32, kPixelsPerBlock), 0, stream>>>(g, static_cast<T*>(p.out), p.N, p.Ho, p.Wo,
                                                                        p.Cout, p.add, /*accumulate=*/first > 0);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_upsample(const UpsampleParams& p, cudaStream_t stream) {
  return dispatch_dtype(p.dtype, [&](auto type) { return launch_typed<typename decltype(type)::type>(p, stream); });
}

}  // namespace dfanet::cuda
