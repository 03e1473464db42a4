// Dense convolutions with bias and optional ReLU on the CPU, output NHWC fp32: the torch glue of conv1x1 (DFANet's
// decoder convs: kernels/conv.h, pointwise_rows_impl, on the same micro-kernel as the separable convs) and conv3x3
// (conv1: kernels/conv.h, conv3x3_rows_impl, input read in whatever layout it comes, NCHW images included).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../checks.h"
#include "common.h"
#include "isa.h"

namespace dfanet::cpu {

at::Tensor conv1x1_cpu(const at::Tensor& x_in, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                       int64_t stride, bool relu) {
  const auto out_shape = check_conv(x_in, weight, bias, 1, stride);
  check_cpu_float(x_in, "x");
  const at::Tensor x = nhwc(x_in);
  PointwiseArgs a;
  a.N = x.size(0), a.C = x.size(1), a.H = x.size(2), a.W = x.size(3);
  a.Cout = out_shape[1], a.Ho = out_shape[2], a.Wo = out_shape[3], a.stride = stride;
  const int64_t CoutP = round_up(a.Cout, kPad);
  PackedWeights packed;
  a.w = packed.dense(weight, CoutP);
  a.b = packed.bias(bias, CoutP);
  at::Tensor out = empty_nhwc(out_shape, x);
  a.x = x.data_ptr<float>();
  a.relu = relu;
  a.out = out.data_ptr<float>();
  a.tile_w = tile_width(a.Wo, a.C);
  run_pointwise(a);
  return out;
}

namespace {

at::Tensor conv3x3_cpu(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                       int64_t stride, bool relu) {
  const auto out_shape = check_conv(x, weight, bias, 3, stride);
  check_cpu_float(x, "x");
  const auto run = cpu_path().conv3x3_rows;
  Conv3x3Args a;
  a.N = x.size(0), a.C = x.size(1), a.H = x.size(2), a.W = x.size(3);
  a.sN = x.stride(0), a.sC = x.stride(1), a.sH = x.stride(2), a.sW = x.stride(3);
  a.Cout = out_shape[1], a.Ho = out_shape[2], a.Wo = out_shape[3], a.stride = stride;
  const int64_t CoutP = round_up(a.Cout, kPad);
  PackedWeights packed;
  a.w = packed.dense(weight, CoutP);
  a.b = packed.bias(bias, CoutP);
  at::Tensor out = empty_nhwc(out_shape, x);
  a.x = x.data_ptr<float>();  // the view's first element: strides address the rest
  a.relu = relu;
  a.out = out.data_ptr<float>();
  at::parallel_for(0, a.N * a.Ho, row_grain(a.Wo * a.C * 9 * a.Cout, kMinTaskMacs), [&](int64_t begin, int64_t end) {
    run(a, begin, end, nullptr);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(dfanet, CPU, m) {
  m.impl("conv1x1", &conv1x1_cpu);
  m.impl("conv3x3", &conv3x3_cpu);
}

}  // namespace dfanet::cpu
