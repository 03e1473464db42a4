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

// Checks a list of activations that share batch size, dtype and device (those of inputs[0]); channels and sizes may
// differ. Errors name inputs[i].
inline void check_input_list(at::TensorList inputs) {
  TORCH_CHECK(!inputs.empty(), "inputs: expected at least one tensor");
  const at::Tensor& first = inputs[0];
  for (size_t i = 0; i < inputs.size(); ++i) {
    const at::Tensor& t = inputs[i];
    const std::string name = "inputs[" + std::to_string(i) + "]";
    check_activation(t, name.c_str());
    TORCH_CHECK(t.device() == first.device(), name, ": expected device ", first.device(), ", got ", t.device());
    TORCH_CHECK(t.scalar_type() == first.scalar_type(), name, ": expected dtype ", first.scalar_type(), ", got ",
                t.scalar_type());
    TORCH_CHECK(t.size(0) == first.size(0), name, ": expected batch ", first.size(0), ", got ", t.size(0));
  }
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

// The labels' dtype for `channels` classes: uint8 holds up to 256 (dfanet_kernels.constants.labels_dtype).
inline at::ScalarType labels_dtype(int64_t channels) { return channels <= 256 ? at::kByte : at::kLong; }

}  // namespace dfanet
