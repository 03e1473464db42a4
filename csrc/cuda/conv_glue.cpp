// Torch glue of the CUDA conv3x3 (kernel in conv.cu): checks, device guard, launch on the current stream. The input
// goes to the kernel in its own layout (its strides), not made NHWC first as the other ops' inputs are.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../checks.h"
#include "glue.h"

namespace dfanet::cuda {
namespace {

at::Tensor conv3x3_cuda(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                        int64_t stride, bool relu) {
  const auto out_shape = check_conv(x, weight, bias, 3, stride);
  const DType dtype = check_cuda_input(x, "x");
  const c10::cuda::CUDAGuard device_guard(x.device());

  const at::Tensor w = weight.contiguous();  // Cout x C x 9
  const at::Tensor b = bias ? bias->contiguous() : at::Tensor();
  at::Tensor out = empty_nhwc(out_shape, x);
  if (out.numel() == 0) return out;  // Cout == 0

  Conv3x3Params p{};
  p.x = x.const_data_ptr();  // the view's first element: the strides address the rest
  p.weight = w.const_data_ptr();
  p.bias = data_or_null(b);
  p.out = out.mutable_data_ptr();
  p.N = x.size(0);
  p.C = x.size(1);
  p.H = x.size(2);
  p.W = x.size(3);
  p.Cout = out_shape[1];
  p.Ho = out_shape[2];
  p.Wo = out_shape[3];
  p.sN = x.stride(0);
  p.sC = x.stride(1);
  p.sH = x.stride(2);
  p.sW = x.stride(3);
  p.stride = static_cast<int>(stride);
  p.relu = relu;
  p.dtype = dtype;
  check_launch(launch_conv3x3(p, at::cuda::getCurrentCUDAStream().stream()), "conv3x3");
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(dfanet, CUDA, m) { m.impl("conv3x3", &conv3x3_cuda); }

}  // namespace dfanet::cuda
