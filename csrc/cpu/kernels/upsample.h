// Bilinear upsample + concat / + add, and upsample + argmax over channels, NHWC fp32, written once against `Vec`
// (kernels/simd.h) and compiled per instruction-set path by csrc/cpu/isa_<path>.cpp. No torch headers here (see
// csrc/cpu/isa.h).
//
// Separable, per output row: first the vertical blend of the two source rows, a flat axpy over W * C contiguous
// floats (vectorises whatever C is), into a per-thread row buffer; then per output pixel the horizontal blend of
// two pixels of that row, vectorised over channels. Two taps per output value instead of four, and the source rows
// are read once per output row. A source already at the output size is copied bit for bit.
// Plain stores, not non-temporal ones: streaming the rows out made the 31 MB enc2 concat 25% faster on its own but
// the whole forward 9% slower (78 -> 85 ms, 1 thread, A/B in one process), its consumer then reading from DRAM.
// The labels kernel blends each pixel exactly as the one-source add does, then compares the channels in vectors:
// 1 byte written per pixel instead of C floats.
#pragma once

#include <cstdint>
#include <limits>

#include "../isa.h"

namespace dfanet::cpu {
namespace {

// out[j] = h0 * r0[j] + h1 * r1[j], j < count.
template <class V>
void blend_rows(const float* r0, const float* r1, float h0, float h1, int64_t count, float* out) {
  using T = typename V::T;
  const T a = V::set1(h0), b = V::set1(h1);
  int64_t j = 0;
  for (; j + V::L <= count; j += V::L) V::store(out + j, V::fma(V::load(r1 + j), b, V::mul(V::load(r0 + j), a)));
  if (j < count) {
    const typename V::M m = V::mask(count - j);
    V::storem(out + j, V::fma(V::loadm(r1 + j, m), b, V::mul(V::loadm(r0 + j, m), a)), m);
  }
}

// The row (W x C floats) that output row `oh` of source `s` reads horizontally: a source row itself when the
// vertical weight of the second row is 0 (or the output row is a source row), else the blend, written to `buf`.
inline bool needs_blend(const UpsampleSource& s, int64_t oh) {
  return !s.same && s.row_w1[oh] != 0.f && s.row_i1[oh] != s.row_i0[oh];
}

// Where output pixel `ow` of source `s` reads in the source row `row`: pixel p0 alone (a source column, a clamped
// edge, or a same-size source), or w0 * p0 + w1 * p1. Read once per pixel, not once per channel vector: the
// vector stores into the output may alias the float tap arrays, so the compiler reloaded all four per vector.
struct PixelTaps {
  const float* p0;
  const float* p1;  // nullptr: no blend
  float w0, w1;
};

inline PixelTaps pixel_taps(const UpsampleSource& s, const float* row, int64_t ow) {
  if (s.same) return {row + ow * s.C, nullptr, 0.f, 0.f};
  const float* p0 = row + s.col_i0[ow] * s.C;
  if (s.col_w1[ow] == 0.f) return {p0, nullptr, 0.f, 0.f};  // no blend: exact
  return {p0, row + s.col_i1[ow] * s.C, s.col_w0[ow], s.col_w1[ow]};
}

// One channel vector [c0, c0 + L) (masked: [c0, c0 + count)) of an output pixel from its taps.
template <class V, bool kMasked>
typename V::T horizontal(const PixelTaps& t, int64_t c0, typename V::M m) {
  auto ld = [&](const float* p) {
    if constexpr (kMasked) {
      return V::loadm(p, m);
    } else {
      return V::load(p);
    }
  };
  const typename V::T a = ld(t.p0 + c0);
  if (!t.p1) return a;
  return V::fma(ld(t.p1 + c0), V::set1(t.w1), V::mul(a, V::set1(t.w0)));
}

// Channels [0, C) of one output pixel from its taps into `out`.
template <class V>
void horizontal_pixel(const PixelTaps& t, int64_t C, float* out) {
  int64_t c0 = 0;
  for (; c0 + V::L <= C; c0 += V::L) V::store(out + c0, horizontal<V, false>(t, c0, V::mask(V::L)));
  if (c0 < C) {
    const typename V::M m = V::mask(C - c0);
    V::storem(out + c0, horizontal<V, true>(t, c0, m), m);
  }
}

// The source row (W x C floats) that output row `oh` of image `n` reads horizontally: a row of the source itself, or
// the vertical blend of two, written to `buf` (W * C floats). Sets `used` when it wrote to `buf`.
template <class V>
const float* source_row(const UpsampleSource& s, int64_t n, int64_t oh, float* buf, bool& used) {
  const float* plane = s.data + n * s.H * s.W * s.C;
  const int64_t row_len = s.W * s.C;
  used = false;
  if (s.same) return plane + oh * row_len;
  if (!needs_blend(s, oh)) return plane + s.row_i0[oh] * row_len;
  blend_rows<V>(plane + s.row_i0[oh] * row_len, plane + s.row_i1[oh] * row_len, s.row_w0[oh], s.row_w1[oh], row_len,
                buf);
  used = true;
  return buf;
}

// Output row `oh` of image `n` of the concatenation, channels [s.channel_offset, + s.C) of each of the Wo pixels of
// `out` (pixel stride ldo), for one source: the same values upsample_concat writes. `buf`: s.W * s.C floats.
template <class V>
void concat_source_row(const UpsampleSource& s, int64_t n, int64_t oh, int64_t Wo, int64_t ldo, float* out,
                       float* buf) {
  bool used;
  const float* row = source_row<V>(s, n, oh, buf, used);
  for (int64_t ow = 0; ow < Wo; ++ow) {
    horizontal_pixel<V>(pixel_taps(s, row, ow), s.C, out + ow * ldo + s.channel_offset);
  }
}

// out[ow] += source `s` resized to its output size, at input row ih and columns ow * stride, for ow < Wo (pixel
// stride s.C): the Xception block's shortcut adds its resized products this way. `buf`: s.W * s.C floats.
template <class V>
void add_resized_row(const UpsampleSource& s, int64_t n, int64_t ih, int64_t stride, int64_t Wo, float* out,
                     float* buf) {
  bool used;
  const float* row = source_row<V>(s, n, ih, buf, used);
  const int64_t C = s.C;
  for (int64_t ow = 0; ow < Wo; ++ow) {
    const PixelTaps t = pixel_taps(s, row, ow * stride);
    float* o = out + ow * C;
    int64_t c0 = 0;
    for (; c0 + V::L <= C; c0 += V::L) {
      V::store(o + c0, V::add(V::load(o + c0), horizontal<V, false>(t, c0, V::mask(V::L))));
    }
    if (c0 < C) {
      const typename V::M m = V::mask(C - c0);
      V::storem(o + c0, V::add(V::loadm(o + c0, m), horizontal<V, true>(t, c0, m)), m);
    }
  }
}

template <class V>
void upsample_rows_impl(const UpsampleArgs& a, int64_t begin, int64_t end, float* scratch) {
  const float* rows[kMaxUpsampleSources];
  for (int64_t r = begin; r < end; ++r) {
    const int64_t n = r / a.Ho, oh = r % a.Ho;
    float* buf = scratch;
    for (int64_t i = 0; i < a.count; ++i) {
      bool used;
      rows[i] = source_row<V>(a.src[i], n, oh, buf, used);
      if (used) buf += a.src[i].W * a.src[i].C;
    }
    float* out_row = a.out + r * a.Wo * a.Cout;
    if (a.add && a.count > 1) {
      // Sum in registers, starting from the first term (so a lone same-size input keeps -0.0), one store. Taps per
      // vector here: an array of every source's taps per pixel, or the sum built source by source in the output
      // row, measured 1.2-1.3x slower (3 and 4 sources, 128 x 256 x 32).
      const int64_t C = a.Cout;
      for (int64_t ow = 0; ow < a.Wo; ++ow) {
        float* o = out_row + ow * C;
        int64_t c0 = 0;
        for (; c0 + V::L <= C; c0 += V::L) {
          const typename V::M m = V::mask(V::L);
          typename V::T acc = horizontal<V, false>(pixel_taps(a.src[0], rows[0], ow), c0, m);
          for (int64_t i = 1; i < a.count; ++i) {
            acc = V::add(acc, horizontal<V, false>(pixel_taps(a.src[i], rows[i], ow), c0, m));
          }
          V::store(o + c0, acc);
        }
        if (c0 < C) {
          const typename V::M m = V::mask(C - c0);
          typename V::T acc = horizontal<V, true>(pixel_taps(a.src[0], rows[0], ow), c0, m);
          for (int64_t i = 1; i < a.count; ++i) {
            acc = V::add(acc, horizontal<V, true>(pixel_taps(a.src[i], rows[i], ow), c0, m));
          }
          V::storem(o + c0, acc, m);
        }
      }
    } else {  // a concat, or an add of one source (a plain resize: DFANet's final upsample of the logits)
      for (int64_t ow = 0; ow < a.Wo; ++ow) {
        float* o = out_row + ow * a.Cout;
        for (int64_t i = 0; i < a.count; ++i) {
          horizontal_pixel<V>(pixel_taps(a.src[i], rows[i], ow), a.src[i].C, o + a.src[i].channel_offset);
        }
      }
    }
  }
}

// The label of one output pixel: the first channel holding the maximum, or the first NaN (as torch.argmax). Its
// C blended values go to `vals` (round_up(C, kPad) floats, lanes past C at -inf) while their maximum is reduced, then
// are compared against it a vector at a time.
template <class V>
int64_t argmax_pixel(const PixelTaps& t, int64_t C, float* vals) {
  using T = typename V::T;
  const T lowest = V::set1(-std::numeric_limits<float>::infinity());
  T top = lowest;
  int64_t c0 = 0;
  for (; c0 < C; c0 += V::L) {
    T v;
    if (c0 + V::L <= C) {
      v = horizontal<V, false>(t, c0, V::mask(V::L));
    } else {
      const typename V::M m = V::mask(C - c0);
      v = V::select(m, horizontal<V, true>(t, c0, m), lowest);
    }
    if (const uint32_t nan = V::nan_bits(v)) return c0 + __builtin_ctz(nan);
    V::store(vals + c0, v);
    top = V::max(top, v);
  }
  const T best = V::set1(V::hmax(top));
  for (c0 = 0;; c0 += V::L) {  // some lane equals the maximum: the loop ends
    if (const uint32_t hit = V::eq_bits(V::load(vals + c0), best)) return c0 + __builtin_ctz(hit);
  }
}

template <class V, class Label>
void labels_row(const UpsampleSource& s, const float* row, int64_t Wo, Label* out, float* vals) {
  for (int64_t ow = 0; ow < Wo; ++ow) out[ow] = static_cast<Label>(argmax_pixel<V>(pixel_taps(s, row, ow), s.C, vals));
}

template <class V>
void upsample_labels_rows_impl(const LabelsArgs& a, int64_t begin, int64_t end, float* scratch) {
  float* vals = scratch;
  float* buf = scratch + round_up(a.src.C, kPad);
  for (int64_t r = begin; r < end; ++r) {
    bool used;
    const float* row = source_row<V>(a.src, r / a.Ho, r % a.Ho, buf, used);
    if (a.u8) {
      labels_row<V>(a.src, row, a.Wo, static_cast<uint8_t*>(a.out) + r * a.Wo, vals);
    } else {
      labels_row<V>(a.src, row, a.Wo, static_cast<int64_t*>(a.out) + r * a.Wo, vals);
    }
  }
}

}  // namespace
}  // namespace dfanet::cpu
