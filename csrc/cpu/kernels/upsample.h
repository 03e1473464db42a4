// Bilinear upsample + concat / + add, and upsample + argmax over channels, NHWC fp32, written once against `Vec`
// (kernels/simd.h) and compiled per instruction-set path by csrc/cpu/isa_<path>.cpp. No torch headers here (see
// csrc/cpu/isa.h).
//
// Separable, two taps per output value instead of four. A concat (and a block's virtual input), per output row:
// first the vertical blend of the two source rows, a flat axpy over W * C contiguous floats (vectorises whatever C
// is), into a per-thread row buffer; then per output pixel the horizontal blend of two pixels of that row,
// vectorised over channels. An add and the labels the other way round: each source row is resized horizontally
// once (per pixel, into a per-thread cache of two rows, ResizedRows), and every output row is the vertical blend
// of two such rows, a flat axpy over Wo * C floats writing the output. Upsampling 4x, as DFANet's decoder does, that
// runs the per-pixel pass on a quarter of the rows: the final resize of the 19 logits to 512 x 1024 went from 5.0
// to 3.6 ms (AMD EPYC, 1 thread), most of what is left the output's write; the whole fused forward at 512 x 1024,
// 2 threads, 36.1 -> 35.4 ms (A/B builds, alternating processes). A source already at the output size is copied
// bit for bit.
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

// out[j] = r0[j] (r1 == nullptr) or h0 * r0[j] + h1 * r1[j], the blend rounded as horizontal() rounds it; kAdd:
// out[j] + that. j < count. A concat's vertical blend of two source rows, and every term of an add. kStream: the
// whole vectors written with non-temporal stores (out vector-aligned; see blend_rows_streamed).
template <class V, bool kAdd, bool kStream = false>
void blend_rows(const float* r0, const float* r1, float h0, float h1, int64_t count, float* out) {
  static_assert(!(kAdd && kStream), "a streamed row is written, never read back");
  using T = typename V::T;
  const T a = V::set1(h0), b = V::set1(h1);
  const int64_t full = count / V::L * V::L;
  auto put = [&](int64_t j, T v) {
    if constexpr (kStream) {
      V::stream(out + j, v);
    } else {
      V::store(out + j, kAdd ? V::add(V::load(out + j), v) : v);
    }
  };
  if (r1) {
    for (int64_t j = 0; j < full; j += V::L) put(j, V::fma(V::load(r1 + j), b, V::mul(V::load(r0 + j), a)));
  } else {
    for (int64_t j = 0; j < full; j += V::L) put(j, V::load(r0 + j));
  }
  if (full < count) {
    const typename V::M m = V::mask(count - full);
    T v = V::loadm(r0 + full, m);
    if (r1) v = V::fma(V::loadm(r1 + full, m), b, V::mul(v, a));
    if (kAdd) v = V::add(V::loadm(out + full, m), v);
    V::storem(out + full, v, m);
  }
}

// blend_rows<V, false> with the vector-aligned middle of `out` written by non-temporal stores (blend_rows<V, false,
// true>), which skip reading each line for ownership first: for rows not read again soon (upsample_add of one source
// to a map larger than the caches, DFANet's full-size logits). Writing 40 MB that way took 1.06 ms instead of 1.87 ms
// at 2 threads, 2.1 instead of 4.0 ms at 1 (AMD EPYC). The caller fences (V::stream_fence).
template <class V>
void blend_rows_streamed(const float* r0, const float* r1, float h0, float h1, int64_t count, float* out) {
  const int64_t misaligned = static_cast<int64_t>(reinterpret_cast<uintptr_t>(out) / sizeof(float) % V::L);
  const int64_t head = imin(count, (V::L - misaligned) % V::L);
  const int64_t full = head + (count - head) / V::L * V::L;
  auto r1_at = [&](int64_t j) { return r1 ? r1 + j : nullptr; };
  blend_rows<V, false>(r0, r1, h0, h1, head, out);
  blend_rows<V, false, true>(r0 + head, r1_at(head), h0, h1, full - head, out + head);  // whole vectors only
  blend_rows<V, false>(r0 + full, r1_at(full), h0, h1, count - full, out + full);
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

// Channels [0, C) of one output pixel from its taps into `out`. The last partial vector, when C >= L, is the full
// vector ending at channel C: it rewrites a few channels with the values they already hold instead of masking
// (19 channels: 8 + 8 + the 8 from channel 11; masked loads and the split store of AVX2's storem cost more).
template <class V>
void horizontal_pixel(const PixelTaps& t, int64_t C, float* out) {
  int64_t c0 = 0;
  for (; c0 + V::L <= C; c0 += V::L) V::store(out + c0, horizontal<V, false>(t, c0, V::mask(V::L)));
  if (c0 < C) {
    if (C >= V::L) {
      V::store(out + C - V::L, horizontal<V, false>(t, C - V::L, V::mask(V::L)));
    } else {
      const typename V::M m = V::mask(C - c0);
      V::storem(out + c0, horizontal<V, true>(t, c0, m), m);
    }
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
  blend_rows<V, false>(plane + s.row_i0[oh] * row_len, plane + s.row_i1[oh] * row_len, s.row_w0[oh],
                       s.row_w1[oh], row_len, buf);
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

// Source rows resized horizontally to Wo pixels (Wo x C floats each), the last two built per source: an output row
// blends two consecutive source rows, and along a band of output rows they only move forward, so each source row
// is resized once per band. A source of the output's width is read in place.
template <class V>
class ResizedRows {
 public:
  void init(const UpsampleSource& s, int64_t Wo, float* scratch) {
    s_ = &s, Wo_ = Wo;
    if (s.W != Wo) slots_[0] = scratch, slots_[1] = scratch + Wo * s.C;  // else read in place: no scratch
  }
  // Source row r of image n resized; `keep`: the tag (n * H + r) of a row that must stay cached with it, or -1.
  const float* get(int64_t n, int64_t r, int64_t keep) {
    const UpsampleSource& s = *s_;
    const float* row = s.data + (n * s.H + r) * s.W * s.C;
    if (s.W == Wo_) return row;
    const int64_t tag = n * s.H + r;
    for (int i = 0; i < 2; ++i) {
      if (tags_[i] == tag) return slots_[i];
    }
    const int victim = tags_[0] == keep ? 1 : 0;
    for (int64_t ow = 0; ow < Wo_; ++ow) horizontal_pixel<V>(pixel_taps(s, row, ow), s.C, slots_[victim] + ow * s.C);
    tags_[victim] = tag;
    return slots_[victim];
  }

 private:
  const UpsampleSource* s_ = nullptr;
  int64_t Wo_ = 0;
  float* slots_[2] = {nullptr, nullptr};
  int64_t tags_[2] = {-1, -1};
};

// The resized rows that output row `oh` of image n blends and their weights (rows[1] == nullptr: rows[0] alone).
struct VerticalTaps {
  const float* rows[2];
  float w0, w1;
};

template <class V>
VerticalTaps vertical_taps(const UpsampleSource& s, ResizedRows<V>& cache, int64_t n, int64_t oh) {
  if (s.same) return {{s.data + (n * s.H + oh) * s.W * s.C, nullptr}, 1.f, 0.f};
  const int64_t r0 = s.row_i0[oh];
  const float* first = cache.get(n, r0, -1);
  if (!needs_blend(s, oh)) return {{first, nullptr}, 1.f, 0.f};
  return {{first, cache.get(n, s.row_i1[oh], n * s.H + r0)}, s.row_w0[oh], s.row_w1[oh]};
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

// upsample_add: every output row the sum, in source order, of each source's vertical blend of two resized rows.
template <class V>
void add_rows(const UpsampleArgs& a, int64_t begin, int64_t end, float* scratch) {
  ResizedRows<V> caches[kMaxUpsampleSources];
  for (int64_t i = 0; i < a.count; ++i) {
    caches[i].init(a.src[i], a.Wo, scratch);
    scratch += resized_rows_floats(a.src[i], a.Wo);
  }
  const int64_t row_len = a.Wo * a.Cout;
  for (int64_t r = begin; r < end; ++r) {
    const int64_t n = r / a.Ho, oh = r % a.Ho;
    float* out_row = a.out + r * row_len;
    for (int64_t i = 0; i < a.count; ++i) {
      const VerticalTaps t = vertical_taps<V>(a.src[i], caches[i], n, oh);
      if (a.stream) {
        blend_rows_streamed<V>(t.rows[0], t.rows[1], t.w0, t.w1, row_len, out_row);
      } else if (i == 0) {
        blend_rows<V, false>(t.rows[0], t.rows[1], t.w0, t.w1, row_len, out_row);
      } else {
        blend_rows<V, true>(t.rows[0], t.rows[1], t.w0, t.w1, row_len, out_row);
      }
    }
  }
  if (a.stream) V::stream_fence();
}

template <class V>
void upsample_rows_impl(const UpsampleArgs& a, int64_t begin, int64_t end, float* scratch) {
  if (a.add) return add_rows<V>(a, begin, end, scratch);
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
    for (int64_t ow = 0; ow < a.Wo; ++ow) {
      float* o = out_row + ow * a.Cout;
      for (int64_t i = 0; i < a.count; ++i) {
        horizontal_pixel<V>(pixel_taps(a.src[i], rows[i], ow), a.src[i].C, o + a.src[i].channel_offset);
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

// The labels of output row `oh` of image n: each pixel's channels blended from the two resized rows exactly as
// add_rows blends them (horizontal() on the pixel's two rows), then compared.
template <class V, class Label>
void labels_row(const LabelsArgs& a, const VerticalTaps& t, Label* out, float* vals) {
  const int64_t C = a.src.C;
  for (int64_t ow = 0; ow < a.Wo; ++ow) {
    const PixelTaps p{t.rows[0] + ow * C, t.rows[1] ? t.rows[1] + ow * C : nullptr, t.w0, t.w1};
    out[ow] = static_cast<Label>(argmax_pixel<V>(p, C, vals));
  }
}

template <class V>
void upsample_labels_rows_impl(const LabelsArgs& a, int64_t begin, int64_t end, float* scratch) {
  float* vals = scratch;
  ResizedRows<V> cache;
  cache.init(a.src, a.Wo, scratch + round_up(a.src.C, kPad));
  for (int64_t r = begin; r < end; ++r) {
    const VerticalTaps t = vertical_taps<V>(a.src, cache, r / a.Ho, r % a.Ho);
    if (a.u8) {
      labels_row<V>(a, t, static_cast<uint8_t*>(a.out) + r * a.Wo, vals);
    } else {
      labels_row<V>(a, t, static_cast<int64_t*>(a.out) + r * a.Wo, vals);
    }
  }
}

}  // namespace
}  // namespace dfanet::cpu
