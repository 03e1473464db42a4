// The whole-Xception-block kernel, NHWC fp32: three depthwise-separable convs and the shortcut streamed row by row
// (see BlockArgs in isa.h). Written once against `Vec` and compiled per instruction-set path by
// csrc/cpu/isa_<path>.cpp, after kernels/dwsep_conv.h and kernels/conv.h (the row kernels of the separable convs
// and the 1x1 shortcut) and kernels/upsample.h. No torch headers here.
#pragma once

#include <cstdint>

#include "../isa.h"

namespace dfanet::cpu {
namespace {

// The block's input rows, W x C0 floats each: rows of `x` itself, or rows of the virtual input (the concatenation of
// a.src, each source resized to H x W) built on demand into a ring of block_input_ring(stride) rows, row ih in slot
// ih % slots, each source's row exactly as upsample_concat computes it (kernels/upsample.h). The kernel's reads of
// input rows span at most 2 * stride + 2 consecutive rows at any moment (when the shortcut reads row oh * s, sep1
// has reached y1 row oh + 2, i.e. input row (oh + 2) * s + 1), and it asks for them in increasing order but for the
// shortcut's look back, so every row is built once per band and never evicted while still needed.
template <class V>
class InputRows {
 public:
  InputRows(const BlockArgs& a, float* scratch) : a_(a), ring_(scratch), slots_(block_input_ring(a.stride)) {
    blend_ = ring_ + slots_ * a.W * a.C0;
    for (int64_t& t : tags_) t = -1;
  }
  bool is_virtual() const { return a_.src_count > 0; }
  // Image n's row ih (0 <= ih < H); the pointer stays valid until slots_ - 1 further distinct rows are asked for.
  const float* get(int64_t n, int64_t ih) {
    if (!is_virtual()) return a_.x + (n * a_.H + ih) * a_.W * a_.C0;
    const int64_t slot = ih % slots_, tag = n * a_.H + ih;
    float* row = ring_ + slot * a_.W * a_.C0;
    if (tags_[slot] != tag) {
      for (int64_t i = 0; i < a_.src_count; ++i) concat_source_row<V>(a_.src[i], n, ih, a_.W, a_.C0, row, blend_);
      tags_[slot] = tag;
    }
    return row;
  }

 private:
  const BlockArgs& a_;
  float* ring_;
  float* blend_;
  int64_t slots_;
  int64_t tags_[block_input_ring(2)];
};

// Output row `oh` of image n of the projection shortcut into `out` (see BlockArgs::sc_ranges): its channel ranges
// multiplied from input row `in_row`, the first with the bias, then the resized products added. `blend`: the
// largest sc_resized row.
template <class V>
void shortcut_row(const BlockArgs& a, const float* in_row, int64_t n, int64_t oh, float* out, float* buf,
                  float* blend) {
  const int64_t C3 = a.sep[2].Cout, C3p = round_up(C3, kPad);
  for (int64_t i = 0; i < a.sc_range_count; ++i) {
    const int64_t lo = a.sc_ranges[2 * i], hi = a.sc_ranges[2 * i + 1];
    pointwise_row<V>(in_row + lo, a.C0, hi - lo, a.stride, a.Wo, a.tile_w, a.sc_w + lo * C3p, i ? a.sc_zero : a.sc_b,
                     C3, false, i ? out : nullptr, out, buf);
  }
  if (a.sc_range_count == 0) {
    for (int64_t ow = 0; ow < a.Wo; ++ow) {
      for (int64_t c = 0; c < C3; ++c) out[ow * C3 + c] = a.sc_b[c];
    }
  }
  for (int64_t i = 0; i < a.sc_resized_count; ++i) {
    add_resized_row<V>(a.sc_resized[i], n, oh * a.stride, a.stride, a.Wo, out, blend);
  }
}

// Xception block, rows streamed through two rings of three rows each (see BlockArgs). The rings hold ReLU(y1) and
// ReLU(y2): the ReLU that sep2 and sep3 apply to their input is applied once, in the producer's epilogue, instead
// of at every depthwise tap.
template <class V>
void block_rows_impl(const BlockArgs& a, int64_t begin, int64_t end, float* scratch) {
  const int64_t C1 = a.sep[0].Cout, C2 = a.sep[1].Cout, C3 = a.sep[2].Cout;
  float* ring1 = scratch;
  float* ring2 = ring1 + 3 * a.Wo * C1;
  float* buf = ring2 + 3 * a.Wo * C2;
  InputRows<V> input(a, buf + block_tile_floats(a));
  float* sc_blend = scratch + block_scratch_floats(a) - block_shortcut_blend_floats(a);
  const SepConv s1{a.sep[0].dw_w, nullptr, a.sep[0].pw_w, a.sep[0].pw_b, a.C0, C1, true, false, true};
  const SepConv s2{a.sep[1].dw_w, nullptr, a.sep[1].pw_w, a.sep[1].pw_b, C1, C2, false, false, true};
  const SepConv s3{a.sep[2].dw_w, nullptr, a.sep[2].pw_w, a.sep[2].pw_b, C2, C3, false, false, false};
  const int64_t row_in = a.W * a.C0;
  auto slot1 = [&](int64_t i) { return ring1 + (i % 3) * a.Wo * C1; };
  auto slot2 = [&](int64_t i) { return ring2 + (i % 3) * a.Wo * C2; };
  int64_t image_n = -1, next1 = 0, next2 = 0;  // the next y1 / y2 row to compute
  for (int64_t r = begin; r < end; ++r) {
    const int64_t n = r / a.Ho, oh = r % a.Ho;
    if (n != image_n) {  // a new image (or the band's start): the rings restart at the rows this row needs
      image_n = n;
      next1 = imax(0, oh - 2);
      next2 = imax(0, oh - 1);
    }
    for (const int64_t last2 = imin(a.Ho - 1, oh + 1); next2 <= last2; ++next2) {
      for (const int64_t last1 = imin(a.Ho - 1, next2 + 1); next1 <= last1; ++next1) {
        const float* rows[3];
        for (int kh = 0; kh < 3; ++kh) {
          const int64_t ih = next1 * a.stride - 1 + kh;
          rows[kh] = (ih >= 0 && ih < a.H) ? input.get(n, ih) : nullptr;
        }
        // A built row was just written and is in cache; rows of x are prefetched ahead of their first use.
        Prefetcher pf;
        if (!input.is_virtual()) {
          pf = next_rows_prefetcher<V>(a.x + n * a.H * row_in, a.H, row_in, next1, a.Ho, a.stride, a.Wo, a.C0);
        }
        sep_row<V>(s1, rows, a.W, a.stride, a.Wo, a.tile_w, nullptr, slot1(next1), buf, pf);
      }
      const float* rows[3];
      for (int kh = 0; kh < 3; ++kh) {
        const int64_t i = next2 - 1 + kh;
        rows[kh] = (i >= 0 && i < a.Ho) ? slot1(i) : nullptr;
      }
      Prefetcher none;
      sep_row<V>(s2, rows, a.Wo, 1, a.Wo, a.tile_w, nullptr, slot2(next2), buf, none);
    }
    float* out = a.out + r * a.Wo * C3;
    const float* res;
    if (a.sc_w) {  // projection shortcut: 1x1 conv of stride s into the output row, which sep3 then adds to
      shortcut_row<V>(a, input.get(n, oh * a.stride), n, oh, out, buf, sc_blend);
      res = out;
    } else {  // identity: stride 1 and C3 == C0 (a built row stays valid: sep3 asks for no input row)
      res = input.get(n, oh);
    }
    const float* rows[3];
    for (int kh = 0; kh < 3; ++kh) {
      const int64_t i = oh - 1 + kh;
      rows[kh] = (i >= 0 && i < a.Ho) ? slot2(i) : nullptr;
    }
    Prefetcher none;
    sep_row<V>(s3, rows, a.Wo, 1, a.Wo, a.tile_w, res, out, buf, none);
  }
}

}  // namespace
}  // namespace dfanet::cpu
