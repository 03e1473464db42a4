// Dense 3x3 convolution (padding 1, stride 1 or 2) for few input channels: DFANet's conv1 (3 -> 8 channels). Written
// once against `Vec` (kernels/simd.h), compiled per instruction-set path by csrc/cpu/isa_<path>.cpp.
//
// The input is read through its element strides, so it may be NCHW (the image as the caller has it) or NHWC: the
// model's one layout conversion (the image to channels_last, 4.3 ms of a 1-thread forward at 512 x 1024 for 3
// channels) disappears. Output NHWC; output channels are the vector lanes, each input tap a broadcast-FMA, four
// pixels at a time so that every weight vector loaded serves four pixels.
#pragma once

#include <cstdint>

#include "../isa.h"

namespace dfanet::cpu {
namespace {

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
