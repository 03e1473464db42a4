// Bilinear upsample + concat / + add on the GPU, NHWC, in one pass over the output; and upsample + argmax over
// channels (labels), which reads a pixel's channels through the same taps and writes only its label.
// align_corners=False with PyTorch's source-index rule (src = (dst + 0.5) * in / out - 0.5, clamped at 0), the same
// fp32 arithmetic as PyTorch's CUDA kernel; a source already at the output size is copied exactly.
// A thread per kChannelsPerThread channels of a pixel, consecutive threads on consecutive channel groups: no idle
// lanes whatever the channel count (a warp per pixel left 13 of 32 lanes idle at 19 classes). Index arithmetic is
// 32-bit wherever every offset fits (DFANet's always do): 64-bit division is emulated in software, and with it a
// warp spent more time on a pixel's coordinates than on its memory traffic.
#include "common.cuh"
#include "launchers.h"

namespace dfanet::cuda {
namespace {

constexpr int kThreads = 256;
// Consecutive output channels of one pixel per thread: the pixel's coordinates and bilinear taps, ~100 instructions
// per source, are worked out once for all of them (with one value per thread the kernel was bound by instruction
// issue, not memory; review of sm_90 SASS).
constexpr int kChannelsPerThread = 4;
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

// kChannelsPerThread values in one aligned access (16 bytes of fp32, 8 of fp16/bf16), where every channel count
// and offset is a multiple of 4 and every tensor aligned to it (launch_indexed checks): a quarter of the load and
// store instructions.
template <typename T>
struct Vec4 {
  using type = uint2;
};
template <>
struct Vec4<float> {
  using type = float4;
};

template <typename T>
__device__ __forceinline__ void load4(const T* p, float (&v)[kChannelsPerThread]) {
  const typename Vec4<T>::type raw = *reinterpret_cast<const typename Vec4<T>::type*>(p);
  const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int j = 0; j < kChannelsPerThread; ++j) v[j] = to_float(e[j]);
}

template <typename T>
__device__ __forceinline__ void store4(T* p, const float (&v)[kChannelsPerThread]) {
  typename Vec4<T>::type raw;
  T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
  for (int j = 0; j < kChannelsPerThread; ++j) e[j] = from_float<T>(v[j]);
  *reinterpret_cast<typename Vec4<T>::type*>(p) = raw;
}

// Where and how much output pixel (n, oh, ow) reads from one source: its value at channel c is then a few loads
// and multiplies. Worked out once per pixel and source, not per channel.
template <typename T, typename Index>
struct SourceTaps {
  const T* row0;  // the two source rows (channel 0 of column 0); row0 alone when copying
  const T* row1;
  Index col0, col1;  // the two columns' element offsets in a row
  float h0, h1, w0, w1;
  bool copy;

  __device__ SourceTaps(const SourceArgs& s, Index n, Index oh, Index ow, Index Ho, Index Wo) {
    const Index C = static_cast<Index>(s.C), H = static_cast<Index>(s.H), W = static_cast<Index>(s.W);
    const T* plane = static_cast<const T*>(s.data) + n * H * W * C;
    // A bilinear weight of 0 times an inf neighbour would give NaN: the same size is a plain copy instead.
    copy = H == Ho && W == Wo;
    const AxisTap<Index> th = copy ? AxisTap<Index>{oh, oh, 1.f, 0.f} : axis_tap(oh, H, s.scale_h);
    const AxisTap<Index> tw = copy ? AxisTap<Index>{ow, ow, 1.f, 0.f} : axis_tap(ow, W, s.scale_w);
    row0 = plane + th.i0 * W * C;
    row1 = plane + th.i1 * W * C;
    col0 = tw.i0 * C;
    col1 = tw.i1 * C;
    h0 = th.w0;
    h1 = th.w1;
    w0 = tw.w0;
    w1 = tw.w1;
  }

  // Channels c + j of the source, j < kChannelsPerThread, into v: as one aligned vector per source pixel where
  // kVector, else value by value, from j = count on a repeat of channel c (keeps every read inside the source: those
  // values are not stored). All the loads issue before the first blend: with a value per channel behind a branch,
  // each channel's loads waited for the previous channel's (sm_90 SASS).
  template <bool kVector>
  __device__ void values(Index c, int count, float (&v)[kChannelsPerThread]) const {
    float v00[kChannelsPerThread], v01[kChannelsPerThread], v10[kChannelsPerThread], v11[kChannelsPerThread];
    if constexpr (kVector) {
      load4(row0 + col0 + c, v00);
      if (!copy) {
        load4(row0 + col1 + c, v01);
        load4(row1 + col0 + c, v10);
        load4(row1 + col1 + c, v11);
      }
    } else {
      Index at[kChannelsPerThread];
#pragma unroll
      for (int j = 0; j < kChannelsPerThread; ++j) at[j] = c + (j < count ? j : 0);
#pragma unroll
      for (int j = 0; j < kChannelsPerThread; ++j) {
        v00[j] = to_float(row0[col0 + at[j]]);
        if (!copy) {
          v01[j] = to_float(row0[col1 + at[j]]);
          v10[j] = to_float(row1[col0 + at[j]]);
          v11[j] = to_float(row1[col1 + at[j]]);
        }
      }
    }
#pragma unroll
    for (int j = 0; j < kChannelsPerThread; ++j) {
      v[j] = copy ? v00[j] : h0 * (w0 * v00[j] + w1 * v01[j]) + h1 * (w0 * v10[j] + w1 * v11[j]);
    }
  }
};

// Output channels [c_begin, c_begin + c_count) of every pixel from the group's sources: their concatenation, or
// their sum (added to what the output holds when `accumulate`, i.e. after a first group of 8). A thread writes
// kChannelsPerThread consecutive channels of one pixel (`count` of them in a pixel's last, partial group).
template <typename T, typename Index, bool kVector>
__global__ void __launch_bounds__(kThreads)
    upsample_kernel(const SourceGroup g, T* __restrict__ out, Index Ho, Index Wo, Index Cout, Index c_begin,
                    Index c_count, Index total, bool add, bool accumulate) {
  const Index groups = (c_count + kChannelsPerThread - 1) / kChannelsPerThread;  // per pixel
  const Index step = static_cast<Index>(gridDim.x) * kThreads;
  for (Index e = static_cast<Index>(blockIdx.x) * kThreads + static_cast<Index>(threadIdx.x); e < total; e += step) {
    const Index pix = e / groups, first = (e - pix * groups) * kChannelsPerThread;
    const Index ow = pix % Wo, rest = pix / Wo;
    const Index oh = rest % Ho, n = rest / Ho;
    const Index c0 = c_begin + first;
    const int count = static_cast<int>(c_count - first < kChannelsPerThread ? c_count - first : kChannelsPerThread);
    T* o = out + pix * Cout + c0;
    float v[kChannelsPerThread];
    if (add) {
      // Summed left to right as the reference does; starting from the first term, not 0.f, keeps a lone input's
      // -0.0 (0.f + -0.f is +0.f).
      float sum[kChannelsPerThread];
      if (accumulate) {
        if constexpr (kVector) {
          load4(o, sum);
        } else {
#pragma unroll
          for (int j = 0; j < kChannelsPerThread; ++j) sum[j] = to_float(o[j < count ? j : 0]);
        }
      }
      for (int s = 0; s < g.count; ++s) {
        SourceTaps<T, Index>(g.s[s], n, oh, ow, Ho, Wo).template values<kVector>(c0, count, v);
#pragma unroll
        for (int j = 0; j < kChannelsPerThread; ++j) sum[j] = s > 0 || accumulate ? sum[j] + v[j] : v[j];
      }
      if constexpr (kVector) {
        store4(o, sum);
      } else {
#pragma unroll
        for (int j = 0; j < kChannelsPerThread; ++j) {
          if (j < count) o[j] = from_float<T>(sum[j]);
        }
      }
    } else {
      // The source that holds channel c0. With kVector the whole group lies in it; else a source may end inside
      // the group, and the next one holds the rest.
      int s = 0;
      while (s + 1 < g.count && c0 >= static_cast<Index>(g.s[s + 1].channel_offset)) ++s;
      if constexpr (kVector) {
        SourceTaps<T, Index>(g.s[s], n, oh, ow, Ho, Wo).template values<true>(
            c0 - static_cast<Index>(g.s[s].channel_offset), count, v);
        store4(o, v);
      } else {
        for (int j = 0; j < count; ++s) {
          const Index offset = static_cast<Index>(g.s[s].channel_offset), c = c0 + j;
          const Index end = s + 1 < g.count ? static_cast<Index>(g.s[s + 1].channel_offset) : c0 + count;
          const int here = static_cast<int>(end - c < count - j ? end - c : count - j);
          SourceTaps<T, Index>(g.s[s], n, oh, ow, Ho, Wo).template values<false>(c - offset, here, v);
#pragma unroll
          for (int i = 0; i < kChannelsPerThread; ++i) {
            if (i < here) o[j + i] = from_float<T>(v[i]);
          }
          j += here;
        }
      }
    }
  }
}

// The label of each output pixel, a thread per pixel: its channels read kChannelsPerThread at a time through the
// pixel's taps (one aligned vector per source pixel where kVector), the first maximum kept. !(v <= best) takes a
// greater value or a NaN; once best is NaN nothing replaces it: torch.argmax's choice.
template <typename T, typename Index, typename Label, bool kVector>
__global__ void __launch_bounds__(kThreads)
    upsample_labels_kernel(const SourceArgs s, Label* __restrict__ out, Index Ho, Index Wo, Index total) {
  const Index C = static_cast<Index>(s.C);
  const Index step = static_cast<Index>(gridDim.x) * kThreads;
  for (Index pix = static_cast<Index>(blockIdx.x) * kThreads + static_cast<Index>(threadIdx.x); pix < total;
       pix += step) {
    const Index ow = pix % Wo, rest = pix / Wo;
    const Index oh = rest % Ho, n = rest / Ho;
    const SourceTaps<T, Index> taps(s, n, oh, ow, Ho, Wo);
    float best = -INFINITY;
    Index label = 0;
    for (Index c = 0; c < C; c += kChannelsPerThread) {
      const int count = static_cast<int>(C - c < kChannelsPerThread ? C - c : kChannelsPerThread);
      float v[kChannelsPerThread];
      taps.template values<kVector>(c, count, v);
#pragma unroll
      for (int j = 0; j < kChannelsPerThread; ++j) {
        if (j < count && !(v[j] <= best) && best == best) {
          best = v[j];
          label = c + j;
        }
      }
    }
    out[pix] = static_cast<Label>(label);
  }
}

bool source_fits_int32(int64_t N, const UpsampleSource& s) { return N * s.H * s.W * s.C < kInt32IndexLimit; }

bool fits_int32(const UpsampleParams& p) {
  if (p.N * p.Ho * p.Wo * p.Cout >= kInt32IndexLimit) return false;
  for (int64_t i = 0; i < p.num_sources; ++i) {
    if (!source_fits_int32(p.N, p.sources[i])) return false;
  }
  return true;
}

template <typename T>
bool vector_aligned(const void* ptr) {
  return reinterpret_cast<uintptr_t>(ptr) % (kChannelsPerThread * sizeof(T)) == 0;
}

template <typename T>
bool vector_source(const UpsampleSource& s) {
  return s.C % kChannelsPerThread == 0 && vector_aligned<T>(s.data);
}

// Whether every thread's channel group can be one aligned vector access (see Vec4).
template <typename T>
bool vectorizable(const UpsampleParams& p) {
  if (p.Cout % kChannelsPerThread || !vector_aligned<T>(p.out)) return false;
  for (int64_t i = 0; i < p.num_sources; ++i) {
    if (!vector_source<T>(p.sources[i])) return false;
  }
  return true;
}

template <typename T, typename Index, bool kVector>
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
    const int64_t total = p.N * p.Ho * p.Wo * ceil_div(c_count, kChannelsPerThread);
    upsample_kernel<T, Index, kVector><<<grid_size(total, kThreads), kThreads, 0, stream>>>(
        g, static_cast<T*>(p.out), static_cast<Index>(p.Ho), static_cast<Index>(p.Wo), static_cast<Index>(p.Cout),
        static_cast<Index>(c_begin), static_cast<Index>(c_count), static_cast<Index>(total), p.add,
        /*accumulate=*/first > 0);
  }
  return cudaGetLastError();
}

template <typename T, typename Index>
cudaError_t launch_indexed(const UpsampleParams& p, cudaStream_t stream) {
  return vectorizable<T>(p) ? launch_typed<T, Index, true>(p, stream) : launch_typed<T, Index, false>(p, stream);
}

template <typename T, typename Index, typename Label>
cudaError_t launch_labels_typed(const UpsampleLabelsParams& p, cudaStream_t stream) {
  const UpsampleSource& src = p.source;
  const SourceArgs s{src.data, src.C, src.H, src.W, 0, static_cast<float>(src.H) / static_cast<float>(p.Ho),
                     static_cast<float>(src.W) / static_cast<float>(p.Wo)};
  const int64_t total = p.N * p.Ho * p.Wo;
  Label* out = static_cast<Label*>(p.out);
  const auto Ho = static_cast<Index>(p.Ho), Wo = static_cast<Index>(p.Wo);
  const unsigned grid = grid_size(total, kThreads);
  if (vector_source<T>(src)) {
    upsample_labels_kernel<T, Index, Label, true><<<grid, kThreads, 0, stream>>>(s, out, Ho, Wo, Index(total));
  } else {
    upsample_labels_kernel<T, Index, Label, false><<<grid, kThreads, 0, stream>>>(s, out, Ho, Wo, Index(total));
  }
  return cudaGetLastError();
}

template <typename T, typename Index>
cudaError_t launch_labels_indexed(const UpsampleLabelsParams& p, cudaStream_t stream) {
  return p.int64_labels ? launch_labels_typed<T, Index, int64_t>(p, stream)
                        : launch_labels_typed<T, Index, uint8_t>(p, stream);
}

}  // namespace

cudaError_t launch_upsample(const UpsampleParams& p, cudaStream_t stream) {
  return dispatch_dtype(p.dtype, [&](auto type) {
    using T = typename decltype(type)::type;
    return fits_int32(p) ? launch_indexed<T, int32_t>(p, stream) : launch_indexed<T, int64_t>(p, stream);
  });
}

cudaError_t launch_upsample_labels(const UpsampleLabelsParams& p, cudaStream_t stream) {
  return dispatch_dtype(p.dtype, [&](auto type) {
    using T = typename decltype(type)::type;
    return p.N * p.Ho * p.Wo < kInt32IndexLimit && source_fits_int32(p.N, p.source)
               ? launch_labels_indexed<T, int32_t>(p, stream)
               : launch_labels_indexed<T, int64_t>(p, stream);
  });
}

}  // namespace dfanet::cuda
