// Bilinear upsample + concat / + add on the GPU, NHWC, in one pass over the output.
// align_corners=False with PyTorch's source-index rule (src = (dst + 0.5) * in / out - 0.5, clamped at 0), the same
// fp32 arithmetic as PyTorch's CUDA kernel; a source already at the output size is copied exactly.
// One thread per output value, consecutive threads on consecutive channels: every store is coalesced whatever the
// channel count (the 19 classes included, which left 13 of 32 lanes idle with a warp per pixel), and a pixel's
// bilinear taps are recomputed per channel, a few float operations. Index arithmetic is 32-bit wherever every offset
// fits (DFANet's always do): 64-bit division is emulated in software, and with it a warp spent more time on a
// pixel's coordinates than on its memory traffic.
#include "common.cuh"
#include "launchers.h"

namespace dfanet::cuda {
namespace {

constexpr int kThreads = 256;
// Sources travel in the kernel's parameters; DFANet merges 2 to 4, more than 8 take one extra pass per 8.
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
template <typename Index>
struct AxisTap {
  Index i0, i1;
  float w0, w1;
};

template <typename Index>
__device__ AxisTap<Index> axis_tap(Index dst, Index in, float scale) {
  float src = scale * (static_cast<float>(dst) + 0.5f) - 0.5f;
  if (src < 0.f) src = 0.f;
  Index i0 = static_cast<Index>(src);
  if (i0 > in - 1) i0 = in - 1;  // never taken by the formula; keeps a rounding surprise inside the image
  const float w1 = src - static_cast<float>(i0);
  return AxisTap<Index>{i0, i0 + (i0 < in - 1 ? 1 : 0), 1.f - w1, w1};
}

// Source s resized to the output grid: its channel c at output pixel (n, oh, ow).
template <typename T, typename Index>
__device__ float sample(const SourceArgs& s, Index n, Index oh, Index ow, Index c, Index Ho, Index Wo) {
  const Index C = static_cast<Index>(s.C), H = static_cast<Index>(s.H), W = static_cast<Index>(s.W);
  const T* plane = static_cast<const T*>(s.data) + n * H * W * C + c;
  // A bilinear weight of 0 times an inf neighbour would give NaN: the same size is a plain copy instead.
  if (H == Ho && W == Wo) return to_float(plane[(oh * W + ow) * C]);
  const AxisTap<Index> th = axis_tap(oh, H, s.scale_h), tw = axis_tap(ow, W, s.scale_w);
  const T* row0 = plane + th.i0 * W * C;
  const T* row1 = plane + th.i1 * W * C;
  return th.w0 * (tw.w0 * to_float(row0[tw.i0 * C]) + tw.w1 * to_float(row0[tw.i1 * C])) +
         th.w1 * (tw.w0 * to_float(row1[tw.i0 * C]) + tw.w1 * to_float(row1[tw.i1 * C]));
}

// Output channels [c_begin, c_begin + c_count) of every pixel from the group's sources: their concatenation, or
// their sum (added to what the output holds when `accumulate`, i.e. after a first group of 8).
template <typename T, typename Index>
__global__ void __launch_bounds__(kThreads)
    upsample_kernel(const SourceGroup g, T* __restrict__ out, Index Ho, Index Wo, Index Cout, Index c_begin,
                    Index c_count, Index total, bool add, bool accumulate) {
  const Index step = static_cast<Index>(gridDim.x) * kThreads;
  for (Index e = static_cast<Index>(blockIdx.x) * kThreads + static_cast<Index>(threadIdx.x); e < total; e += step) {
    const Index pix = e / c_count, c = c_begin + (e - pix * c_count);
    const Index ow = pix % Wo, rest = pix / Wo;
    const Index oh = rest % Ho, n = rest / Ho;
    T* o = out + pix * Cout + c;
    if (add) {
      // Summed left to right as the reference does; starting from the first term, not 0.f, keeps a lone input's
      // -0.0 (0.f + -0.f is +0.f).
      int s = 0;
      float sum = accumulate ? to_float(*o) : sample<T>(g.s[s++], n, oh, ow, c, Ho, Wo);
      for (; s < g.count; ++s) sum += sample<T>(g.s[s], n, oh, ow, c, Ho, Wo);
      *o = from_float<T>(sum);
    } else {
      int s = 0;  // the source that holds output channel c
      while (s + 1 < g.count && c >= static_cast<Index>(g.s[s + 1].channel_offset)) ++s;
      *o = from_float<T>(sample<T>(g.s[s], n, oh, ow, c - static_cast<Index>(g.s[s].channel_offset), Ho, Wo));
    }
  }
}

bool fits_int32(const UpsampleParams& p) {
  if (p.N * p.Ho * p.Wo * p.Cout >= kInt32IndexLimit) return false;
  for (int64_t i = 0; i < p.num_sources; ++i) {
    const UpsampleSource& s = p.sources[i];
    if (p.N * s.H * s.W * s.C >= kInt32IndexLimit) return false;
  }
  return true;
}

template <typename T, typename Index>
cudaError_t launch_typed(const UpsampleParams& p, cudaStream_t stream) {
  int64_t channel_offset = 0;
  for (int64_t first = 0; first < p.num_sources; first += kMaxSourcesPerLaunch) {
    SourceGroup g{};
    g.count = static_cast<int>(p.num_sources - first < kMaxSourcesPerLaunch ? p.num_sources - first
                                                                             : kMaxSourcesPerLaunch);
    const int64_t c_begin = p.add ? 0 : channel_offset;
    for (int i = 0; i < g.count; ++i) {
      const UpsampleSource& src = p.sources[first + i];
      g.s[i] = SourceArgs{src.data, src.C, src.H, src.W, p.add ? 0 : channel_offset,
                          static_cast<float>(src.H) / static_cast<float>(p.Ho),
                          static_cast<float>(src.W) / static_cast<float>(p.Wo)};
      channel_offset += src.C;
    }
    const int64_t c_count = p.add ? p.Cout : channel_offset - c_begin;
    const int64_t total = p.N * p.Ho * p.Wo * c_count;
    upsample_kernel<T, Index><<<grid_size(total, kThreads), kThreads, 0, stream>>>(
        g, static_cast<T*>(p.out), static_cast<Index>(p.Ho), static_cast<Index>(p.Wo), static_cast<Index>(p.Cout),
        static_cast<Index>(c_begin), static_cast<Index>(c_count), static_cast<Index>(total), p.add,
        /*accumulate=*/first > 0);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_upsample(const UpsampleParams& p, cudaStream_t stream) {
  return dispatch_dtype(p.dtype, [&](auto type) {
    using T = typename decltype(type)::type;
    return fits_int32(p) ? launch_typed<T, int32_t>(p, stream) : launch_typed<T, int64_t>(p, stream);
  });
}

}  // namespace dfanet::cuda
