// Torch glue of the CUDA xception_block (kernel in xception_block.cu): checks, device guard, NHWC layout, launch on
// the current stream. The inputs are the kernel's sources, read in place (their concatenation, each resized to
// inputs[0]'s size, is never written). A block the kernel does not take (mid widths past kXceptionBlockMaxMid, or
// more than kXceptionBlockMaxSources inputs) runs composed: the concatenation written by the upsample_concat op, then
// three dwsep_conv ops and a cuDNN 1x1 shortcut.
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <vector>

#include "../checks.h"
#include "glue.h"

namespace dfanet::cuda {
namespace {

// The composed path and the written concatenation call the registered ops (their CUDA kernels through the
// dispatcher), so their checks and launches are the ops' own.
at::Tensor upsample_concat(at::TensorList inputs, const at::Tensor& like) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("dfanet::upsample_concat", "")
                             .typed<at::Tensor(at::TensorList, c10::SymIntArrayRef)>();
  return op.call(inputs, c10::fromIntArrayRefSlow({like.size(2), like.size(3)}));
}

at::Tensor dwsep_conv(const at::Tensor& x, const at::Tensor& dw, const at::Tensor& pw,
                      const std::optional<at::Tensor>& pb, int64_t stride, const std::optional<at::Tensor>& residual) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("dfanet::dwsep_conv", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&, const at::Tensor&,
                            const std::optional<at::Tensor>&, int64_t, bool, bool, bool,
                            const std::optional<at::Tensor>&)>();
  return op.call(x, dw, std::nullopt, pw, pb, stride, /*act_in=*/true, /*act_mid=*/false, /*act_out=*/false, residual);
}

at::Tensor xception_block_cuda(at::TensorList inputs, const at::Tensor& dw1, const at::Tensor& pw1,
                               const std::optional<at::Tensor>& pb1, const at::Tensor& dw2, const at::Tensor& pw2,
                               const std::optional<at::Tensor>& pb2, const at::Tensor& dw3, const at::Tensor& pw3,
                               const std::optional<at::Tensor>& pb3, int64_t stride,
                               const std::optional<at::Tensor>& sc_weight, const std::optional<at::Tensor>& sc_bias) {
  const at::Tensor* dw[3] = {&dw1, &dw2, &dw3};
  const at::Tensor* pw[3] = {&pw1, &pw2, &pw3};
  const std::optional<at::Tensor>* pb[3] = {&pb1, &pb2, &pb3};
  const auto out_shape = check_xception_block(inputs, dw, pw, pb, stride, sc_weight, sc_bias);
  const DType dtype = check_cuda_input(inputs[0], "inputs[0]");  // the others share its device and dtype
  const c10::cuda::CUDAGuard device_guard(inputs[0].device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream().stream();

  std::vector<at::Tensor> keep;  // NHWC inputs and contiguous weights, alive until the kernels are queued
  std::vector<UpsampleSource> sources;
  keep.reserve(inputs.size() + 9);
  int64_t C0 = 0;
  for (const at::Tensor& t : inputs) {
    keep.push_back(nhwc(t));
    sources.push_back(UpsampleSource{keep.back().const_data_ptr(), t.size(1), t.size(2), t.size(3)});
    C0 += t.size(1);
  }
  const at::Tensor first = keep[0];  // a handle, not a reference into `keep`
  const int64_t C[4] = {C0, pw1.size(0), pw2.size(0), pw3.size(0)};

  if (!xception_block_supported(C[1], C[2], 1)) {  // mid widths past the kernel's: composed, as before the kernel
    const at::Tensor x = inputs.size() == 1 ? first : upsample_concat(inputs, first);
    const std::optional<at::Tensor> skip = sc_weight ? at::conv2d(x, *sc_weight, sc_bias, stride) : x;
    at::Tensor y = x;
    for (int i = 0; i < 3; ++i) {
      y = dwsep_conv(y, *dw[i], *pw[i], *pb[i], i == 0 ? stride : 1, i == 2 ? skip : std::nullopt);
    }
    return y;
  }

  const void* dw_ptr[3];
  const void* pw_ptr[3];
  const void* pb_ptr[3];
  for (int i = 0; i < 3; ++i) {
    keep.push_back(dw[i]->contiguous());
    dw_ptr[i] = keep.back().const_data_ptr();
    keep.push_back(pw[i]->contiguous());
    pw_ptr[i] = keep.back().const_data_ptr();
    keep.push_back(*pb[i] ? (*pb[i])->contiguous() : at::Tensor());
    pb_ptr[i] = data_or_null(keep.back());
  }

  at::Tensor out = empty_nhwc(out_shape, first);  // never empty: every channel count and size is checked >= 1
  at::Tensor cat;  // more sources than the kernel's parameters hold: the concatenation written first
  if (!xception_block_supported(C[1], C[2], static_cast<int64_t>(sources.size()))) {
    cat = upsample_concat(inputs, first);
    sources = {UpsampleSource{cat.const_data_ptr(), C0, first.size(2), first.size(3)}};
  }
  const at::Tensor scw = sc_weight ? sc_weight->contiguous() : at::Tensor();
  const at::Tensor scb = sc_bias ? sc_bias->contiguous() : at::Tensor();
  XceptionBlockParams p{};
  p.sources = sources.data();
  p.num_sources = static_cast<int64_t>(sources.size());
  for (int i = 0; i < 3; ++i) {
    p.dw_weight[i] = dw_ptr[i];
    p.pw_weight[i] = pw_ptr[i];
    p.pw_bias[i] = pb_ptr[i];
  }
  p.sc_weight = data_or_null(scw);
  p.sc_bias = data_or_null(scb);
  p.out = out.mutable_data_ptr();
  p.N = first.size(0);
  p.H = first.size(2);
  p.W = first.size(3);
  p.C0 = C[0];
  p.C1 = C[1];
  p.C2 = C[2];
  p.C3 = C[3];
  p.Ho = out_shape[2];
  p.Wo = out_shape[3];
  p.stride = static_cast<int>(stride);
  p.dtype = dtype;
  check_launch(launch_xception_block(p, stream), "xception_block");
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(dfanet, CUDA, m) { m.impl("xception_block", &xception_block_cuda); }

}  // namespace dfanet::cuda
