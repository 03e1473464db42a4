// A whole Xception block in one call on the CPU, NHWC fp32: the torch glue. Three depthwise-separable convs and the
// shortcut run row by row (kernels/xception_block.h, block_rows_impl): the intermediate maps y1, y2 live only in
// two rings of three rows per thread, in cache, and are never allocated; the shortcut is written into the output
// row and the third conv adds onto it in registers. The input may be a list of tensors, read as their
// concatenation along channels with each one bilinearly resized to the first's size (DFANet's aggregation inputs):
// the kernel builds the concatenated rows it needs per thread, in cache (kernels/xception_block.h, InputRows), so
// the concatenation (at 1024 x 1024 the 240-channel, 63 MB input of the second and third backbones) is never
// written to memory.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "../checks.h"
#include "common.h"
#include "isa.h"

namespace dfanet::cpu {
namespace {

// Two bands recompute two rows of y2 and four of y1 at their common edge: keep bands at least this tall. 4, not 8:
// DFANet's 8-row maps (1/64 of 512 x 1024) then split in two; their four blocks went from 0.36 + 3 x 0.10 to
// 0.23 + 3 x 0.07 ms at 2 threads (AMD EPYC, torch.profiler, median of 10 forwards).
constexpr int64_t kMinBandRows = 4;

// The projection shortcut's parts (BlockArgs::sc_ranges): a resized source smaller than the output is multiplied
// by its rows of the 1x1 weight at its own size and resized afterwards, which takes Hs * Ws / (Ho * Wo) of the
// multiply-adds (DFANet's aggregation inputs: the attention map 4x upsampled, 192 of 240 channels, at stride 2:
// a quarter); every other source's channels are multiplied at the output's pixels.
struct ShortcutParts {
  std::vector<int64_t> ranges;
  std::vector<UpsampleSource> resized;
  std::vector<at::Tensor> products;
};

ShortcutParts split_shortcut(const BlockArgs& a, const ResizeSources* virtual_input) {
  ShortcutParts parts;
  const int64_t C3 = a.sep[2].Cout, C3p = round_up(C3, kPad);
  auto take_range = [&](int64_t lo, int64_t hi) {
    if (!parts.ranges.empty() && parts.ranges.back() == lo) {
      parts.ranges.back() = hi;
    } else {
      parts.ranges.insert(parts.ranges.end(), {lo, hi});
    }
  };
  if (!virtual_input) {
    take_range(0, a.C0);
    return parts;
  }
  for (const UpsampleSource& s : virtual_input->sources) {
    if (s.same || s.H * s.W >= a.Ho * a.Wo) {
      take_range(s.channel_offset, s.channel_offset + s.C);
      continue;
    }
    at::Tensor product = empty_nhwc({a.N, C3, s.H, s.W}, virtual_input->tensor(0));
    PointwiseArgs pa;
    pa.x = s.data;
    pa.N = a.N, pa.H = s.H, pa.W = s.W, pa.C = s.C;
    pa.Ho = s.H, pa.Wo = s.W, pa.Cout = C3;
    pa.w = a.sc_w + s.channel_offset * C3p;
    pa.b = a.sc_zero;
    pa.out = product.data_ptr<float>();
    pa.tile_w = tile_width(s.W, s.C);
    run_pointwise(pa);
    UpsampleSource r = s;
    r.data = product.data_ptr<float>();
    r.C = C3;
    r.channel_offset = 0;
    parts.resized.push_back(r);
    parts.products.push_back(std::move(product));
  }
  return parts;
}

at::Tensor xception_block_cpu(at::TensorList inputs, const at::Tensor& dw1, const at::Tensor& pw1,
                              const std::optional<at::Tensor>& pb1, const at::Tensor& dw2, const at::Tensor& pw2,
                              const std::optional<at::Tensor>& pb2, const at::Tensor& dw3, const at::Tensor& pw3,
                              const std::optional<at::Tensor>& pb3, int64_t stride,
                              const std::optional<at::Tensor>& sc_weight, const std::optional<at::Tensor>& sc_bias) {
  const at::Tensor* dw[3] = {&dw1, &dw2, &dw3};
  const at::Tensor* pw[3] = {&pw1, &pw2, &pw3};
  const std::optional<at::Tensor>* pb[3] = {&pb1, &pb2, &pb3};
  const auto out_shape = check_xception_block(inputs, dw, pw, pb, stride, sc_weight, sc_bias);
  for (size_t i = 0; i < inputs.size(); ++i) check_cpu_float(inputs[i], ("inputs[" + std::to_string(i) + "]").c_str());
  const auto run = cpu_path().block_rows;
  const int64_t N = inputs[0].size(0), H = inputs[0].size(2), W = inputs[0].size(3);
  const int64_t Ho = out_shape[2], Wo = out_shape[3];
  // Several inputs: a virtual concatenation, its rows built by the kernel (BlockArgs::src); one input: read as is.
  std::optional<ResizeSources> virtual_input;
  at::Tensor x;
  if (inputs.size() > 1) {
    virtual_input.emplace(inputs, H, W, /*add=*/false);
  } else {
    x = nhwc(inputs[0]);
  }
  const int64_t C[4] = {virtual_input ? virtual_input->channels : x.size(1), pw1.size(0), pw2.size(0), pw3.size(0)};

  PackedWeights packed;
  BlockArgs a;
  for (int i = 0; i < 3; ++i) {
    a.sep[i].Cout = C[i + 1];
    a.sep[i].dw_w = packed.depthwise(*dw[i], round_up(C[i], kPad));
    a.sep[i].pw_w = packed.dense(*pw[i], round_up(C[i + 1], kPad));
    a.sep[i].pw_b = packed.bias(*pb[i], round_up(C[i + 1], kPad));
  }
  if (sc_weight) {
    a.sc_w = packed.dense(*sc_weight, round_up(C[3], kPad));
    a.sc_b = packed.bias(sc_bias, round_up(C[3], kPad));
    a.sc_zero = packed.bias(std::nullopt, round_up(C[3], kPad));
  }

  at::Tensor out = empty_nhwc(out_shape, inputs[0]);
  if (virtual_input) {
    a.src = virtual_input->sources.data();
    a.src_count = static_cast<int64_t>(virtual_input->sources.size());
  } else {
    a.x = x.data_ptr<float>();
  }
  a.N = N, a.H = H, a.W = W, a.C0 = C[0];
  a.Ho = Ho, a.Wo = Wo, a.stride = stride;
  a.out = out.data_ptr<float>();
  a.tile_w = tile_width(Wo, std::max({C[0], C[1], C[2]}));
  ShortcutParts shortcut;
  if (sc_weight) {
    shortcut = split_shortcut(a, virtual_input ? &*virtual_input : nullptr);
    a.sc_ranges = shortcut.ranges.data();
    a.sc_range_count = static_cast<int64_t>(shortcut.ranges.size()) / 2;
    a.sc_resized = shortcut.resized.data();
    a.sc_resized_count = static_cast<int64_t>(shortcut.resized.size());
  }
  int64_t row_macs = C[0] * (9 + C[1]) + C[1] * (9 + C[2]) + C[2] * (9 + C[3]) + (sc_weight ? C[0] * C[3] : 0);
  row_macs *= Wo;
  const int64_t grain = std::max(kMinBandRows, row_grain(row_macs, kMinTaskMacs));
  at::parallel_for(0, N * Ho, grain, [&](int64_t begin, int64_t end) {
    AlignedFloats scratch(block_scratch_floats(a));
    run(a, begin, end, scratch.data());
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(dfanet, CPU, m) { m.impl("xception_block", &xception_block_cpu); }

}  // namespace dfanet::cpu
