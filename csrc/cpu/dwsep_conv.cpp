// Fused depthwise-separable convolution on the CPU, NHWC fp32: the torch glue. It checks the arguments, packs the
// weights (zero padded, see isa.h), splits the output rows over at::parallel_for's threads and runs the SIMD path
// chosen by active_isa() (kernels/dwsep_conv.h: depthwise tile kept in cache, register-blocked pointwise GEMM with
// bias, ReLU and residual applied in registers).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>

#include "../checks.h"
#include "common.h"
#include "isa.h"

namespace dfanet::cpu {
namespace {

at::Tensor dwsep_conv_cpu(const at::Tensor& x_in, const at::Tensor& dw_weight, const std::optional<at::Tensor>& dw_bias,
                          const at::Tensor& pw_weight, const std::optional<at::Tensor>& pw_bias, int64_t stride,
                          bool act_in, bool act_mid, bool act_out, const std::optional<at::Tensor>& residual) {
  const auto out_shape = check_dwsep_conv(x_in, dw_weight, dw_bias, pw_weight, pw_bias, stride, residual);
  check_cpu_float(x_in, "x");
  const auto run = cpu_path().dwsep_rows;
  const int64_t N = x_in.size(0), C = x_in.size(1), H = x_in.size(2), W = x_in.size(3);
  const int64_t Cout = out_shape[1], Ho = out_shape[2], Wo = out_shape[3];
  const int64_t Cp = round_up(C, kPad), CoutP = round_up(Cout, kPad);

  const at::Tensor x = nhwc(x_in);
  const at::Tensor res = residual ? nhwc(*residual) : at::Tensor();
  at::Tensor out = empty_nhwc(out_shape, x);

  PackedWeights packed;
  const float* dw_w = packed.depthwise(dw_weight, Cp);
  const float* dw_b = dw_bias ? packed.bias(dw_bias, Cp) : nullptr;
  const float* pw_w = packed.dense(pw_weight, CoutP);
  const float* pw_b = packed.bias(pw_bias, CoutP);

  DwsepArgs args;
  args.x = x.data_ptr<float>();
  args.N = N, args.H = H, args.W = W, args.C = C;
  args.Ho = Ho, args.Wo = Wo, args.Cout = Cout, args.stride = stride;
  args.dw_w = dw_w;
  args.dw_b = dw_b;
  args.pw_w = pw_w;
  args.pw_b = pw_b;
  args.residual = res.defined() ? res.data_ptr<float>() : nullptr;
  args.out = out.data_ptr<float>();
  args.act_in = act_in, args.act_mid = act_mid, args.act_out = act_out;
  args.tile_w = tile_width(Wo, C);

  const int64_t grain = row_grain(Wo * C * (9 + Cout), kMinTaskMacs);
  at::parallel_for(0, N * Ho, grain, [&](int64_t begin, int64_t end) {
    AlignedFloats scratch(dwsep_scratch_floats(args));
    run(args, begin, end, scratch.data());
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(dfanet, CPU, m) { m.impl("dwsep_conv", &dwsep_conv_cpu); }

}  // namespace dfanet::cpu
