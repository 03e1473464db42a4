// DFANet's decoder head, NHWC fp32, row by row (see DecoderArgs in isa.h): written once against `Vec` and compiled
// per instruction-set path by csrc/cpu/isa_<path>.cpp, after kernels/conv.h (the 1x1 convs on the pointwise GEMM)
// and kernels/upsample.h (the resized rows and their blend). No torch headers here.
//
// The composed decoder wrote and read back four maps of D channels at the output's size (the first reduce conv's,
// the low-level sum, the fuse conv's, the sum before the classifier): here each output row keeps them in two rows
// of scratch. The other maps are reduced at their own, smaller sizes by the glue (csrc/cpu/decoder.cpp) and enter
// as resized sources.
#pragma once

#include <cstdint>

#include "../isa.h"

namespace dfanet::cpu {
namespace {

template <class V>
void decoder_rows_impl(const DecoderArgs& a, int64_t begin, int64_t end, float* scratch) {
  float* low = scratch;
  float* fused = low + a.Wo * a.D;
  float* buf = fused + a.Wo * a.D;
  float* resized = buf + (a.tile_w + kPad) * tile_stride(imax(a.C, a.D));
  ResizedRows<V> low_rows[kMaxUpsampleSources], high_rows[kMaxUpsampleSources];
  for (int64_t i = 0; i < a.low_count; ++i) {
    low_rows[i].init(a.low_src[i], a.Wo, resized);
    resized += resized_rows_floats(a.low_src[i], a.Wo);
  }
  for (int64_t i = 0; i < a.high_count; ++i) {
    high_rows[i].init(a.high_src[i], a.Wo, resized);
    resized += resized_rows_floats(a.high_src[i], a.Wo);
  }
  // row += each source resized to the output, in list order (as upsample_add sums them).
  auto add_sources = [&](const UpsampleSource* src, ResizedRows<V>* rows, int64_t count, int64_t n, int64_t oh,
                         float* row) {
    for (int64_t i = 0; i < count; ++i) {
      const VerticalTaps t = vertical_taps<V>(src[i], rows[i], n, oh);
      blend_rows<V, true>(t.rows[0], t.rows[1], t.w0, t.w1, a.Wo * a.D, row);
    }
  };
  for (int64_t r = begin; r < end; ++r) {
    const int64_t n = r / a.Ho, oh = r % a.Ho;
    pointwise_row<V>(a.x + r * a.Wo * a.C, a.C, a.C, 1, a.Wo, a.tile_w, a.low_w, a.low_b, a.D, true, nullptr, low,
                     buf);
    add_sources(a.low_src, low_rows, a.low_count, n, oh, low);
    pointwise_row<V>(low, a.D, a.D, 1, a.Wo, a.tile_w, a.fuse_w, a.fuse_b, a.D, true, nullptr, fused, buf);
    add_sources(a.high_src, high_rows, a.high_count, n, oh, fused);
    pointwise_row<V>(fused, a.D, a.D, 1, a.Wo, a.tile_w, a.cls_w, a.cls_b, a.Cout, false, nullptr,
                     a.out + r * a.Wo * a.Cout, buf);
  }
}

}  // namespace
}  // namespace dfanet::cpu
