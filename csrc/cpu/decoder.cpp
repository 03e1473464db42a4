// DFANet's decoder head on the CPU (dfanet::decoder_head): the torch glue of kernels/decoder.h. Every map but the
// first low-level one is reduced (1x1 conv + bias + ReLU) at its own size first, by the pointwise kernel of conv1x1;
// those are the small maps (a half, a quarter of the output's side; the attention maps an eighth and less). Then
// one pass over the output rows computes the first map's reduce conv, the resized sums, the fuse conv and the
// classifier with the D-channel intermediates in per-thread rows (at 512 x 1024 input, the composed decoder moved
// ~25 MB through memory for them).
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

// relu(maps[i] @ weights[i] + biases[i]) for i >= first, each at its map's own size (conv1x1's kernel).
std::vector<at::Tensor> reduced_maps(at::TensorList maps, at::TensorList weights,
                                     const c10::List<std::optional<at::Tensor>>& biases, size_t first) {
  std::vector<at::Tensor> reduced;
  for (size_t i = first; i < maps.size(); ++i) {
    reduced.push_back(conv1x1_cpu(maps[i], weights[i], biases.get(i), 1, true));
  }
  return reduced;
}

at::Tensor decoder_head_cpu(at::TensorList low, at::TensorList high, at::TensorList low_weights,
                            const c10::List<std::optional<at::Tensor>>& low_biases, const at::Tensor& fuse_weight,
                            const std::optional<at::Tensor>& fuse_bias, at::TensorList high_weights,
                            const c10::List<std::optional<at::Tensor>>& high_biases,
                            const at::Tensor& classifier_weight, const std::optional<at::Tensor>& classifier_bias) {
  const auto out_shape = check_decoder_head(low, high, low_weights, low_biases, fuse_weight, fuse_bias, high_weights,
                                            high_biases, classifier_weight, classifier_bias);
  for (size_t i = 0; i < low.size(); ++i) check_cpu_float(low[i], ("low[" + std::to_string(i) + "]").c_str());
  for (size_t i = 0; i < high.size(); ++i) check_cpu_float(high[i], ("high[" + std::to_string(i) + "]").c_str());
  TORCH_CHECK(static_cast<int64_t>(std::max(low.size() - 1, high.size())) <= kMaxUpsampleSources,
              "low, high: the cpu backend takes at most ", kMaxUpsampleSources + 1, " low and ", kMaxUpsampleSources,
              " high maps, got ", low.size(), " and ", high.size());
  const auto run = cpu_path().decoder_rows;
  const at::Tensor x = nhwc(low[0]);
  DecoderArgs a;
  a.N = out_shape[0], a.Cout = out_shape[1], a.Ho = out_shape[2], a.Wo = out_shape[3];
  a.C = x.size(1), a.D = fuse_weight.size(0);
  const int64_t DP = round_up(a.D, kPad);
  PackedWeights packed;
  a.low_w = packed.dense(low_weights[0], DP);
  a.low_b = packed.bias(low_biases.get(0), DP);
  a.fuse_w = packed.dense(fuse_weight, DP);
  a.fuse_b = packed.bias(fuse_bias, DP);
  a.cls_w = packed.dense(classifier_weight, round_up(a.Cout, kPad));
  a.cls_b = packed.bias(classifier_bias, round_up(a.Cout, kPad));
  // The smaller maps reduced, then read as resize sources of an add (low[0] is reduced in the row pass).
  const ResizeSources lows(reduced_maps(low, low_weights, low_biases, 1), a.Ho, a.Wo, /*add=*/true);
  const ResizeSources highs(reduced_maps(high, high_weights, high_biases, 0), a.Ho, a.Wo, /*add=*/true);
  a.low_src = lows.sources.data(), a.low_count = static_cast<int64_t>(lows.sources.size());
  a.high_src = highs.sources.data(), a.high_count = static_cast<int64_t>(highs.sources.size());
  at::Tensor out = empty_nhwc(out_shape, x);
  a.x = x.data_ptr<float>();
  a.out = out.data_ptr<float>();
  a.tile_w = tile_width(a.Wo, std::max(a.C, a.D));
  const int64_t row_macs = a.Wo * (a.C * a.D + a.D * a.D + a.D * a.Cout);
  at::parallel_for(0, a.N * a.Ho, row_grain(row_macs, kMinTaskMacs), [&](int64_t begin, int64_t end) {
    AlignedFloats scratch(decoder_scratch_floats(a));
    run(a, begin, end, scratch.data());
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(dfanet, CPU, m) { m.impl("decoder_head", &decoder_head_cpu); }

}  // namespace dfanet::cpu
