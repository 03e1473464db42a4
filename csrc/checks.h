// Argument checks shared by every backend's torch glue. The Python wrappers in dfanet_kernels/ops.py check the same
// things with friendlier messages; these guard direct torch.ops.dfanet.* calls so a bad call never reaches a kernel.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <vector>

namespace dfanet {

inline void check_activation(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 4, name, ": expected a 4-D N x C x H x W tensor, got ", t.dim(), "-D");
  TORCH_CHECK(t.numel() > 0, name, ": expected a non-empty tensor, got shape ", t.sizes());
}

inline void check_same(const at::Tensor& t, const at::Tensor& ref, const char* name, at::IntArrayRef shape) {
  TORCH_CHECK(t.sizes() == shape, name, ": expected shape ", shape, ", got ", t.sizes());
  TORCH_CHECK(t.device() == ref.device(), name, ": expected device ", ref.device(), ", got ", t.device());
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), name, ": expected dtype ", ref.scalar_type(), ", got ",
              t.scalar_type());
}

inline void check_optional(const std::optional<at::Tensor>& t, const at::Tensor& ref, const char* name,
                           at::IntArrayRef shape) {
  if (t.has_value()) check_same(*t, ref, name, shape);
}

inline int64_t conv_output_size(int64_t size, int64_t stride) { return (size - 1) / stride + 1; }

// Checks every dwsep_conv argument against x; returns the output shape {N, Cout, Ho, Wo}.
inline std::vector<int64_t> check_dwsep_conv(const at::Tensor& x, const at::Tensor& dw_weight,
                                             const std::optional<at::Tensor>& dw_bias, const at::Tensor& pw_weight,
                                             const std::optional<at::Tensor>& pw_bias, int64_t stride,
                                             const std::optional<at::Tensor>& residual) {
  check_activation(x, "x");
  const int64_t n = x.size(0), c = x.size(1);
  check_same(dw_weight, x, "dw_weight", {c, 1, 3, 3});
  check_optional(dw_bias, x, "dw_bias", {c});
  TORCH_CHECK(pw_weight.dim() == 4, "pw_weight: expected Cout x C x 1 x 1, got ", pw_weight.sizes());
  const int64_t cout = pw_weight.size(0);
  check_same(pw_weight, x, "pw_weight", {cout, c, 1, 1});
  check_optional(pw_bias, x, "pw_bias", {cout});
  TORCH_CHECK(stride == 1 || stride == 2, "stride: expected 1 or 2, got ", stride);
  std::vector<int64_t> out{n, cout, conv_output_size(x.size(2), stride), conv_output_size(x.size(3), stride)};
  check_optional(residual, x, "residual", out);
  return out;
}

// Checks a dense conv (kernel k x k, padding k / 2) weight [Cout, C, k, k], bias and stride; returns the output shape.
inline std::vector<int64_t> check_conv(const at::Tensor& x, const at::Tensor& weight,
                                       const std::optional<at::Tensor>& bias, int64_t k, int64_t stride) {
  check_activation(x, "x");
  TORCH_CHECK(weight.dim() == 4, "weight: expected Cout x C x ", k, " x ", k, ", got ", weight.sizes());
  const int64_t cout = weight.size(0);
  check_same(weight, x, "weight", {cout, x.size(1), k, k});
  check_optional(bias, x, "bias", {cout});
  TORCH_CHECK(stride == 1 || stride == 2, "stride: expected 1 or 2, got ", stride);
  return {x.size(0), cout, conv_output_size(x.size(2), stride), conv_output_size(x.size(3), stride)};
}

// Checks a list of activations that share batch size, dtype and device with `first`; channels and sizes may
// differ. Errors name <list>[i].
inline void check_maps(at::TensorList maps, const at::Tensor& first, const char* list) {
  for (size_t i = 0; i < maps.size(); ++i) {
    const at::Tensor& t = maps[i];
    const std::string name = std::string(list) + "[" + std::to_string(i) + "]";
    check_activation(t, name.c_str());
    TORCH_CHECK(t.device() == first.device(), name, ": expected device ", first.device(), ", got ", t.device());
    TORCH_CHECK(t.scalar_type() == first.scalar_type(), name, ": expected dtype ", first.scalar_type(), ", got ",
                t.scalar_type());
    TORCH_CHECK(t.size(0) == first.size(0), name, ": expected batch ", first.size(0), ", got ", t.size(0));
  }
}

inline void check_input_list(at::TensorList inputs) {
  TORCH_CHECK(!inputs.empty(), "inputs: expected at least one tensor");
  check_maps(inputs, inputs[0], "inputs");
}

// Checks every xception_block argument against its input, the concatenation of `inputs` along channels at
// inputs[0]'s size; returns the output shape {N, C3, Ho, Wo}.
inline std::vector<int64_t> check_xception_block(at::TensorList inputs, const at::Tensor* dw[3],
                                                 const at::Tensor* pw[3], const std::optional<at::Tensor>* pb[3],
                                                 int64_t stride, const std::optional<at::Tensor>& sc_weight,
                                                 const std::optional<at::Tensor>& sc_bias) {
  check_input_list(inputs);
  const at::Tensor& x = inputs[0];
  int64_t c0 = 0;
  for (const at::Tensor& t : inputs) c0 += t.size(1);
  static const char* dw_names[3] = {"dw1", "dw2", "dw3"};
  static const char* pw_names[3] = {"pw1", "pw2", "pw3"};
  static const char* pb_names[3] = {"pb1", "pb2", "pb3"};
  int64_t c = c0;
  for (int i = 0; i < 3; ++i) {
    check_same(*dw[i], x, dw_names[i], {c, 1, 3, 3});
    TORCH_CHECK(pw[i]->dim() == 4, pw_names[i], ": expected Cout x C x 1 x 1, got ", pw[i]->sizes());
    const int64_t cout = pw[i]->size(0);
    check_same(*pw[i], x, pw_names[i], {cout, c, 1, 1});
    check_optional(*pb[i], x, pb_names[i], {cout});
    c = cout;
  }
  TORCH_CHECK(stride == 1 || stride == 2, "stride: expected 1 or 2, got ", stride);
  if (sc_weight) {
    check_same(*sc_weight, x, "shortcut_weight", {c, c0, 1, 1});
  } else {
    TORCH_CHECK(stride == 1 && c == c0, "shortcut_weight: an identity shortcut needs stride 1 and as many "
                "output channels as input channels (", c0, "), got stride ", stride, " and ", c);
  }
  check_optional(sc_bias, x, "shortcut_bias", {c});
  TORCH_CHECK(!sc_bias || sc_weight, "shortcut_bias: given without shortcut_weight");
  return {x.size(0), c, conv_output_size(x.size(2), stride), conv_output_size(x.size(3), stride)};
}

inline void check_fc_attention(const at::Tensor& x, const at::Tensor& fc_weight,
                               const std::optional<at::Tensor>& fc_bias, const at::Tensor& conv_weight,
                               const std::optional<at::Tensor>& conv_bias) {
  check_activation(x, "x");
  const int64_t c = x.size(1);
  TORCH_CHECK(fc_weight.dim() == 2, "fc_weight: expected K x C, got ", fc_weight.sizes());
  const int64_t k = fc_weight.size(0);
  check_same(fc_weight, x, "fc_weight", {k, c});
  check_optional(fc_bias, x, "fc_bias", {k});
  check_same(conv_weight, x, "conv_weight", {c, k, 1, 1});
  check_optional(conv_bias, x, "conv_bias", {c});
}

// Checks the inputs of upsample_concat / upsample_add; same_channels for the add.
inline void check_upsample(at::TensorList inputs, at::IntArrayRef size, bool same_channels) {
  TORCH_CHECK(!inputs.empty(), "inputs: expected at least one tensor");
  TORCH_CHECK(size.size() == 2 && size[0] > 0 && size[1] > 0, "size: expected two positive ints, got ", size);
  check_input_list(inputs);
  for (size_t i = 1; i < inputs.size(); ++i) {
    TORCH_CHECK(!same_channels || inputs[i].size(1) == inputs[0].size(1), "inputs[", i, "]: expected ",
                inputs[0].size(1), " channels, got ", inputs[i].size(1));
  }
}

// Checks the input of upsample_labels.
inline void check_upsample_labels(const at::Tensor& x, at::IntArrayRef size) {
  check_activation(x, "x");
  TORCH_CHECK(size.size() == 2 && size[0] > 0 && size[1] > 0, "size: expected two positive ints, got ", size);
}

// Checks the arguments of decoder_head (DFANet's decoder up to the quarter-size logits); returns the output shape
// {N, classes, H, W} of low[0]. Every map shares low[0]'s batch, dtype and device; the weights are 1x1 convs:
// low_weights[i] D x C_i, high_weights[j] D x C_j, fuse_weight D x D, classifier_weight classes x D.
inline std::vector<int64_t> check_decoder_head(at::TensorList low, at::TensorList high, at::TensorList low_weights,
                                               const c10::List<std::optional<at::Tensor>>& low_biases,
                                               const at::Tensor& fuse_weight,
                                               const std::optional<at::Tensor>& fuse_bias, at::TensorList high_weights,
                                               const c10::List<std::optional<at::Tensor>>& high_biases,
                                               const at::Tensor& classifier_weight,
                                               const std::optional<at::Tensor>& classifier_bias) {
  TORCH_CHECK(!low.empty(), "low: expected at least one tensor");
  const at::Tensor& x = low[0];
  check_maps(low, x, "low");
  check_maps(high, x, "high");
  TORCH_CHECK(fuse_weight.dim() == 4, "fuse_weight: expected D x D x 1 x 1, got ", fuse_weight.sizes());
  const int64_t d = fuse_weight.size(0);
  check_same(fuse_weight, x, "fuse_weight", {d, d, 1, 1});
  check_optional(fuse_bias, x, "fuse_bias", {d});
  auto check_reduce = [&](at::TensorList maps, at::TensorList weights,
                          const c10::List<std::optional<at::Tensor>>& biases, const char* kind) {
    TORCH_CHECK(weights.size() == maps.size(), kind, "_weights: expected ", maps.size(), " tensors (one per map), got ",
                weights.size());
    TORCH_CHECK(biases.size() == maps.size(), kind, "_biases: expected ", maps.size(), " entries (one per map), got ",
                biases.size());
    for (size_t i = 0; i < maps.size(); ++i) {
      const std::string w = std::string(kind) + "_weights[" + std::to_string(i) + "]";
      const std::string b = std::string(kind) + "_biases[" + std::to_string(i) + "]";
      check_same(weights[i], x, w.c_str(), {d, maps[i].size(1), 1, 1});
      check_optional(biases.get(i), x, b.c_str(), {d});
    }
  };
  check_reduce(low, low_weights, low_biases, "low");
  check_reduce(high, high_weights, high_biases, "high");
  TORCH_CHECK(classifier_weight.dim() == 4, "classifier_weight: expected classes x D x 1 x 1, got ",
              classifier_weight.sizes());
  const int64_t classes = classifier_weight.size(0);
  check_same(classifier_weight, x, "classifier_weight", {classes, d, 1, 1});
  check_optional(classifier_bias, x, "classifier_bias", {classes});
  return {x.size(0), classes, x.size(2), x.size(3)};
}

// The labels' dtype for `channels` classes: uint8 holds up to 256 (dfanet_kernels.constants.labels_dtype).
inline at::ScalarType labels_dtype(int64_t channels) { return channels <= 256 ? at::kByte : at::kLong; }

}  // namespace dfanet
