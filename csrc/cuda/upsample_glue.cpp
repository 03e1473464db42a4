// Torch glue of the CUDA upsample_concat / upsample_add / upsample_labels (kernels in upsample.cu): checks, device
// guard, NHWC layout, launch on the current stream.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <vector>

#include "../checks.h"
#include "glue.h"

namespace dfanet::cuda {
namespace {

at::Tensor upsample_cuda(at::TensorList inputs, c10::SymIntArrayRef size_sym, bool add) {
  const at::IntArrayRef size = C10_AS_INTARRAYREF_SLOW(size_sym);
  check_upsample(inputs, size, /*same_channels=*/add);  // non-empty inputs, positive size: out is never empty
  const DType dtype = check_cuda_input(inputs[0], "inputs[0]");  // the others share its device and dtype
  const c10::cuda::CUDAGuard device_guard(inputs[0].device());

  std::vector<at::Tensor> keep;  // the NHWC copies stay alive until the kernel is queued
  std::vector<UpsampleSource> sources;
  keep.reserve(inputs.size());
  sources.reserve(inputs.size());
  int64_t channels = 0;
  for (const at::Tensor& t : inputs) {
    keep.push_back(nhwc(t));
    sources.push_back(UpsampleSource{keep.back().const_data_ptr(), t.size(1), t.size(2), t.size(3)});
    channels += t.size(1);
  }
  const int64_t N = inputs[0].size(0), Cout = add ? inputs[0].size(1) : channels;
  at::Tensor out = empty_nhwc({N, Cout, size[0], size[1]}, keep[0]);

  UpsampleParams p{};
  p.sources = sources.data();
  p.num_sources = static_cast<int64_t>(sources.size());
  p.out = out.mutable_data_ptr();
  p.N = N;
  p.Ho = size[0];
  p.Wo = size[1];
  p.Cout = Cout;
  p.add = add;
  p.dtype = dtype;
  check_launch(launch_upsample(p, at::cuda::getCurrentCUDAStream().stream()), add ? "upsample_add" : "upsample_concat");
  return out;
}

at::Tensor upsample_labels_cuda(const at::Tensor& x, c10::SymIntArrayRef size_sym) {
  const at::IntArrayRef size = C10_AS_INTARRAYREF_SLOW(size_sym);
  check_upsample_labels(x, size);  // non-empty x, positive size: out is never empty
  const DType dtype = check_cuda_input(x, "x");
  const c10::cuda::CUDAGuard device_guard(x.device());
  const at::Tensor src = nhwc(x);  // alive until the kernel is queued
  at::Tensor out = at::empty({x.size(0), size[0], size[1]}, x.options().dtype(labels_dtype(x.size(1))));

  UpsampleLabelsParams p{};
  p.source = UpsampleSource{src.const_data_ptr(), x.size(1), x.size(2), x.size(3)};
  p.out = out.mutable_data_ptr();
  p.N = x.size(0);
  p.Ho = size[0];
  p.Wo = size[1];
  p.int64_labels = out.scalar_type() == at::kLong;
  p.dtype = dtype;
  check_launch(launch_upsample_labels(p, at::cuda::getCurrentCUDAStream().stream()), "upsample_labels");
  return out;
}

at::Tensor upsample_concat_cuda(at::TensorList inputs, c10::SymIntArrayRef size) {
  return upsample_cuda(inputs, size, /*add=*/false);
}

at::Tensor upsample_add_cuda(at::TensorList inputs, c10::SymIntArrayRef size) {
  return upsample_cuda(inputs, size, /*add=*/true);
}

}  // namespace

TORCH_LIBRARY_IMPL(dfanet, CUDA, m) {
  m.impl("upsample_concat", &upsample_concat_cuda);
  m.impl("upsample_add", &upsample_add_cuda);
  m.impl("upsample_labels", &upsample_labels_cuda);
}

}  // namespace dfanet::cuda
