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

template <class V, int P>
void conv3x3_pixels(const Conv3x3Args& a, const float* image, const int64_t* ih, int64_t ow, int64_t co,
                    typename V::M m, bool masked, float* out) {
  using T = typename V::T;
  const int64_t CoutP = round_up(a.Cout, kPad);
  T acc[P];
  const T b = V::load(a.b + co);
  for (int p = 0; p < P; ++p) acc[p] = b;
  for (int64_t ci = 0; ci < a.C; ++ci) {
    const float* plane = image + ci * a.sC;
    for (int kh = 0; kh < 3; ++kh) {
      if (ih[kh] < 0) continue;
      const float* row = plane + ih[kh] * a.sH;
      for (int kw = 0; kw < 3; ++kw) {
        const T w = V::load(a.w + ((ci * 3 + kh) * 3 + kw) * CoutP + co);
        for (int p = 0; p < P; ++p) {
          const int64_t iw = (ow + p) * a.stride - 1 + kw;
          if (P == 1 && (iw < 0 || iw >= a.W)) continue;  // P > 1 is used only where every tap is inside
          acc[p] = V::fma(V::set1(row[iw * a.sW]), w, acc[p]);
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
  constexpr int P = 4;
  // Columns whose three taps are inside the image: ow >= 1 and ow * stride + 1 <= W - 1.
  const int64_t lo = a.Wo > 1 ? 1 : a.Wo, hi = a.W >= 2 ? (a.W - 2) / a.stride + 1 : 0;
  for (int64_t r = begin; r < end; ++r) {
    const int64_t n = r / a.Ho, oh = r % a.Ho;
    const float* image = a.x + n * a.sN;
    int64_t ih[3];
    for (int kh = 0; kh < 3; ++kh) {
      ih[kh] = oh * a.stride - 1 + kh;
      if (ih[kh] >= a.H) ih[kh] = -1;
    }
    float* out = a.out + r * a.Wo * a.Cout;
    for (int64_t co = 0; co < a.Cout; co += V::L) {
      const bool masked = a.Cout - co < V::L;
      const typename V::M m = V::mask(masked ? a.Cout - co : V::L);
      int64_t ow = 0;
      for (; ow < lo && ow < a.Wo; ++ow) conv3x3_pixels<V, 1>(a, image, ih, ow, co, m, masked, out);
      for (; ow + P <= hi && ow + P <= a.Wo; ow += P) conv3x3_pixels<V, P>(a, image, ih, ow, co, m, masked, out);
      for (; ow < a.Wo; ++ow) conv3x3_pixels<V, 1>(a, image, ih, ow, co, m, masked, out);
    }
  }
}

}  // namespace
}  // namespace dfanet::cpu
