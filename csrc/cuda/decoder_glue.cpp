// Torch glue of the CUDA decoder_head (kernel in decoder.cu): checks, device guard, NHWC maps, contiguous weights,
// launch on the current stream. The output: N x classes x H x W logits, channels_last, in the maps' dtype.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <vector>

#include "../checks.h"
#include "glue.h"

namespace dfanet::cuda {
namespace {

at::Tensor decoder_head_cuda(at::TensorList low, at::TensorList high, at::TensorList low_weights,
                             const c10::List<std::optional<at::Tensor>>& low_biases, const at::Tensor& fuse_weight,
                             const std::optional<at::Tensor>& fuse_bias, at::TensorList high_weights,
                             const c10::List<std::optional<at::Tensor>>& high_biases,
                             const at::Tensor& classifier_weight, const std::optional<at::Tensor>& classifier_bias) {
  const auto out_shape = check_decoder_head(low, high, low_weights, low_biases, fuse_weight, fuse_bias, high_weights,
                                            high_biases, classifier_weight, classifier_bias);
  const DType dtype = check_cuda_input(low[0], "low[0]");  // every other tensor shares its device and dtype
  const int64_t num_low = static_cast<int64_t>(low.size()), num_high = static_cast<int64_t>(high.size());
  TORCH_CHECK(num_low <= kDecoderHeadMaxMaps && num_high <= kDecoderHeadMaxMaps, "low, high: the cuda backend takes "
              "at most ", kDecoderHeadMaxMaps, " low and ", kDecoderHeadMaxMaps, " high maps, got ", num_low, " and ",
              num_high);
  TORCH_CHECK(fuse_weight.size(0) <= kDecoderHeadMaxWidth, "fuse_weight: the cuda backend takes at most ",
              kDecoderHeadMaxWidth, " decoder channels, got ", fuse_weight.size(0));
  const c10::cuda::CUDAGuard device_guard(low[0].device());

  std::vector<at::Tensor> keep;  // NHWC maps and contiguous weights, alive until the kernel is queued
  const auto contiguous = [&](const at::Tensor& t) {
    keep.push_back(t.contiguous());
    return keep.back().const_data_ptr();
  };
  const auto optional = [&](const std::optional<at::Tensor>& t) { return t ? contiguous(*t) : nullptr; };
  const auto maps = [&](at::TensorList list, at::TensorList weights,
                        const c10::List<std::optional<at::Tensor>>& biases) {
    std::vector<DecoderMap> result;
    for (size_t i = 0; i < list.size(); ++i) {
      keep.push_back(nhwc(list[i]));
      const void* data = keep.back().const_data_ptr();
      result.push_back(DecoderMap{data, contiguous(weights[i]), optional(biases.get(i)), list[i].size(1),
                                  list[i].size(2), list[i].size(3)});
    }
    return result;
  };
  const std::vector<DecoderMap> lows = maps(low, low_weights, low_biases);
  const std::vector<DecoderMap> highs = maps(high, high_weights, high_biases);
  at::Tensor out = empty_nhwc(out_shape, low[0]);  // never empty: every size and channel count is checked >= 1

  DecoderHeadParams p{};
  p.low = lows.data();
  p.num_low = num_low;
  p.high = highs.data();
  p.num_high = num_high;
  p.fuse_weight = contiguous(fuse_weight);
  p.fuse_bias = optional(fuse_bias);
  p.classifier_weight = contiguous(classifier_weight);
  p.classifier_bias = optional(classifier_bias);
  p.out = out.mutable_data_ptr();
  p.N = out_shape[0];
  p.K = out_shape[1];
  p.H = out_shape[2];
  p.W = out_shape[3];
  p.D = fuse_weight.size(0);
  p.dtype = dtype;
  check_launch(launch_decoder_head(p, at::cuda::getCurrentCUDAStream().stream()), "decoder_head");
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(dfanet, CUDA, m) { m.impl("decoder_head", &decoder_head_cuda); }

}  // namespace dfanet::cuda
