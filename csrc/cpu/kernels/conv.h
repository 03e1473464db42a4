// Dense convolutions with bias and optional ReLU, NHWC fp32 output: conv1x1 (DFANet's decoder convs) and conv3x3
// (conv1). Written once against `Vec` (kernels/simd.h), compiled per instruction-set path by
// csrc/cpu/isa_<path>.cpp after kernels/dwsep_conv.h, whose register-blocked pointwise GEMM the 1x1 conv runs.
//
// conv3x3, for few input channels (conv1: 3 -> 8 channels): the input is read through its element strides, so it
// may be NCHW (the image as the caller has it) or NHWC: the model's one layout conversion (the image to
// channels_last, 4.3 ms of a 1-thread forward at 512 x 1024 for 3 channels) disappears. Output channels are the
// vector lanes, each input tap a broadcast-FMA, four pixels at a time so that every weight vector loaded serves four
// pixels.
#pragma once

#include <cstdint>

#include "../isa.h"

namespace dfanet::cpu {
namespace {

// ---------------------------------------------------------------------------------------------------------------
// conv1x1 (also the Xception block's shortcut, kernels/xception_block.h).
// ---------------------------------------------------------------------------------------------------------------

// One output row of a 1x1 conv of stride `stride` from the C channels of input row `row` (pixel stride ld >= C):
// the pixels it reads are gathered into tiles of `buf` (so the micro-kernel sees the fixed stride LD), then
// multiplied.
template <class V, int LD>
void pointwise_row_t(const float* row, int64_t ld, int64_t C, int64_t stride, int64_t Wo, int64_t tile_w,
                     const float* w, const float* b, int64_t Cout, bool relu, const float* res, float* out,
                     float* buf) {
  const int64_t ldt = tile_stride(C), CoutP = round_up(Cout, kPad);
  for (int64_t ow0 = 0; ow0 < Wo; ow0 += tile_w) {
    const int64_t cnt = imin(tile_w, Wo - ow0);
    for (int64_t p = 0; p < cnt; ++p) {
      const float* src = row + (ow0 + p) * stride * ld;
      float* dst = buf + p * ldt;
      int64_t c = 0;
      for (; c + V::L <= C; c += V::L) V::store(dst + c, V::load(src + c));
      if (c < C) V::store(dst + c, V::loadm(src + c, V::mask(C - c)));
    }
    pointwise<V, LD>(buf, ldt, cnt, C, w, CoutP, b, relu, res ? res + ow0 * Cout : nullptr, out + ow0 * Cout, Cout);
  }
}

template <class V>
void pointwise_row(const float* row, int64_t ld, int64_t C, int64_t stride, int64_t Wo, int64_t tile_w,
                   const float* w, const float* b, int64_t Cout, bool relu, const float* res, float* out, float* buf) {
  switch (tile_stride(C)) {
    case 64:
      return pointwise_row_t<V, 64>(row, ld, C, stride, Wo, tile_w, w, b, Cout, relu, res, out, buf);
    case 304:
      return pointwise_row_t<V, 304>(row, ld, C, stride, Wo, tile_w, w, b, Cout, relu, res, out, buf);
    default:
      return pointwise_row_t<V, 0>(row, ld, C, stride, Wo, tile_w, w, b, Cout, relu, res, out, buf);
  }
}

template <class V>
void pointwise_rows_impl(const PointwiseArgs& a, int64_t begin, int64_t end, float* buf) {
  for (int64_t r = begin; r < end; ++r) {
    const int64_t n = r / a.Ho, oh = r % a.Ho;
    const float* row = a.x + ((n * a.H + oh * a.stride) * a.W) * a.C;
    pointwise_row<V>(row, a.C, a.C, a.stride, a.Wo, a.tile_w, a.w, a.b, a.Cout, a.relu, nullptr,
                     a.out + r * a.Wo * a.Cout, buf);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// conv3x3.
// ---------------------------------------------------------------------------------------------------------------

// Output pixels [ow, ow + P) of one row, output channels [co, co + L) (masked: the last, partial vector).
// rows[kh]: input row oh * stride - 1 + kh of channel 0 (nullptr outside the image); P > 1 only where every tap is
// inside the image. Addresses are one moving weight pointer and, per tap, a row pointer plus compile-time multiples
// of the pixel step: with the taps' element offsets recomputed from the strides at every product (imul / lea per
// FMA) DFANet's stem (3 -> 8 ch, stride 2, a 512 x 1024 NCHW image) took 2.05 ms at 1 thread, 1.51 ms this way
// (0.76 ms at 2 threads; AMD EPYC), near the time to read the image and write the 4 MB output.
template <class V, int P>
void conv3x3_pixels(const Conv3x3Args& a, const float* const rows[3], int64_t ow, int64_t co, typename V::M m,
                    bool masked, float* out) {
  using T = typename V::T;
  const int64_t CoutP = round_up(a.Cout, kPad), step = a.stride * a.sW;
  T acc[P];
  const T b = V::load(a.b + co);
  for (int p = 0; p < P; ++p) acc[p] = b;
  const float* w = a.w + co;
  for (int64_t ci = 0; ci < a.C; ++ci) {
    for (int kh = 0; kh < 3; ++kh, w += 3 * CoutP) {
      if (!rows[kh]) continue;
      const float* tap = rows[kh] + ci * a.sC + (ow * a.stride - 1) * a.sW;
      for (int kw = 0; kw < 3; ++kw, tap += a.sW) {
        const T wv = V::load(w + kw * CoutP);
        for (int p = 0; p < P; ++p) {
          if (P == 1) {
            const int64_t iw = ow * a.stride - 1 + kw;
            if (iw < 0 || iw >= a.W) continue;
          }
          acc[p] = V::fma(V::set1(tap[p * step]), wv, acc[p]);
        }
      }
    }
  }
  for (int p = 0; p < P; ++p) {
    T v = a.relu ? V::max0(acc[p]) : acc[p];
    float* o = out + (ow + p) * a.Cout + co;
    if (masked) {
      V::storem(o, v, m);
    } else {
      V::store(o, v);
    }
  }
}

template <class V>
void conv3x3_rows_impl(const Conv3x3Args& a, int64_t begin, int64_t end, float*) {
  constexpr int P = 8;
  // Columns whose three taps are inside the image: ow >= 1 and ow * stride + 1 <= W - 1.
  const int64_t lo = a.Wo > 1 ? 1 : a.Wo, hi = a.W >= 2 ? (a.W - 2) / a.stride + 1 : 0;
  for (int64_t r = begin; r < end; ++r) {
    const int64_t n = r / a.Ho, oh = r % a.Ho;
    const float* rows[3];
    for (int kh = 0; kh < 3; ++kh) {
      const int64_t ih = oh * a.stride - 1 + kh;
      rows[kh] = ih >= 0 && ih < a.H ? a.x + n * a.sN + ih * a.sH : nullptr;
    }
    float* out = a.out + r * a.Wo * a.Cout;
    for (int64_t co = 0; co < a.Cout; co += V::L) {
      const bool masked = a.Cout - co < V::L;
      const typename V::M m = V::mask(masked ? a.Cout - co : V::L);
      int64_t ow = 0;
      for (; ow < lo && ow < a.Wo; ++ow) conv3x3_pixels<V, 1>(a, rows, ow, co, m, masked, out);
      for (; ow + P <= hi && ow + P <= a.Wo; ow += P) conv3x3_pixels<V, P>(a, rows, ow, co, m, masked, out);
      for (; ow < a.Wo; ++ow) conv3x3_pixels<V, 1>(a, rows, ow, co, m, masked, out);
    }
  }
}

}  // namespace
}  // namespace dfanet::cpu
