// Torch glue of the CUDA dwsep_conv (kernels in dwsep_conv.cu): checks, device guard, NHWC layout, launch on the
// current stream.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../checks.h"
#include "glue.h"

namespace dfanet::cuda {
namespace {

at::Tensor dwsep_conv_cuda(const at::Tensor& x_in, const at::Tensor& dw_weight, const std::optional<at::Tensor>& dw_bias,
                           const at::Tensor& pw_weight, const std::optional<at::Tensor>& pw_bias, int64_t stride,
                           bool act_in, bool act_mid, bool act_out, const std::optional<at::Tensor>& residual) {
  const auto out_shape = check_dwsep_conv(x_in, dw_weight, dw_bias, pw_weight, pw_bias, stride, residual);
  const DType dtype = check_cuda_input(x_in, "x");
  const c10::cuda::CUDAGuard device_guard(x_in.device());

  const at::Tensor x = nhwc(x_in);
  const at::Tensor dw = dw_weight.contiguous();  // C x 9
  const at::Tensor pw = pw_weight.contiguous();  // Cout x C
  const at::Tensor dwb = dw_bias ? dw_bias->contiguous() : at::Tensor();
  const at::Tensor pwb = pw_bias ? pw_bias->contiguous() : at::Tensor();
  const at::Tensor res = residual ? nhwc(*residual) : at::Tensor();
  at::Tensor out = empty_nhwc(out_shape, x);
  if (out.numel() == 0) return out;  // Cout == 0

  DwsepConvParams p{};
  p.x = x.const_data_ptr();
  p.dw_weight = dw.const_data_ptr();
  p.dw_bias = data_or_null(dwb);
  p.pw_weight = pw.const_data_ptr();
  p.pw_bias = data_or_null(pwb);
  p.residual = data_or_null(res);
  p.out = out.mutable_data_ptr();
  p.N = x.size(0);
  p.C = x.size(1);
  p.H = x.size(2);
  p.W = x.size(3);
  p.Cout = out_shape[1];
  p.Ho = out_shape[2];
  p.Wo = out_shape[3];
  p.stride = static_cast<int>(stride);
  p.act_in = act_in;
  p.act_mid = act_mid;
  p.act_out = act_out;
  p.dtype = dtype;
  check_launch(launch_dwsep_conv(p, at::cuda::getCurrentCUDAStream().stream()), "dwsep_conv");
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(dfanet, CUDA, m) { m.impl("dwsep_conv", &dwsep_conv_cuda); }

}  // namespace dfanet::cuda
