// Torch glue of the CUDA fc_attention (kernels in fc_attention.cu): checks, device guard, NHWC layout, fp32
// workspace, the per-stream counters, launch on the current stream.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <map>
#include <mutex>
#include <utility>

#include "../checks.h"
#include "glue.h"

namespace dfanet::cuda {
namespace {

// The kernels' counters for `stream`: zeroed when the stream first runs fc_attention, then kept at zero by the
// kernels themselves (so no launch ever needs a memset, nor a CUDA graph a memset node). One set per stream, so that
// launches on two streams never share them; launches on one stream run in order. Allocated on first use, which under
// CUDA graph capture takes the graph's memory pool and records the zeroing in the graph (harmless: it zeroes zeros).
// The map is never destroyed: its tensors must not be freed after the CUDA runtime at exit.
unsigned* stream_counters(const at::Tensor& like, const c10::cuda::CUDAStream& stream) {
  static std::mutex mutex;
  static auto* counters = new std::map<std::pair<int64_t, int64_t>, at::Tensor>();
  const std::lock_guard<std::mutex> lock(mutex);
  at::Tensor& t = (*counters)[{static_cast<int64_t>(stream.device_index()), static_cast<int64_t>(stream.id())}];
  if (!t.defined()) t = at::zeros({kFcAttentionCounters}, like.options().dtype(at::kInt));
  return reinterpret_cast<unsigned*>(t.mutable_data_ptr<int32_t>());
}

at::Tensor fc_attention_cuda(const at::Tensor& x_in, const at::Tensor& fc_weight,
                             const std::optional<at::Tensor>& fc_bias, const at::Tensor& conv_weight,
                             const std::optional<at::Tensor>& conv_bias) {
  check_fc_attention(x_in, fc_weight, fc_bias, conv_weight, conv_bias);  // rejects an empty x: out is never empty
  const DType dtype = check_cuda_input(x_in, "x");
  const c10::cuda::CUDAGuard device_guard(x_in.device());

  const at::Tensor x = nhwc(x_in);
  const at::Tensor fcw = fc_weight.contiguous();    // K x C
  const at::Tensor convw = conv_weight.contiguous();  // C x K
  const at::Tensor fcb = fc_bias ? fc_bias->contiguous() : at::Tensor();
  const at::Tensor convb = conv_bias ? conv_bias->contiguous() : at::Tensor();
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3), K = fcw.size(0);
  at::Tensor out = empty_nhwc(x.sizes(), x);
  at::Tensor workspace = at::empty({fc_attention_workspace_floats(N, HW, C, K)}, x.options().dtype(at::kFloat));

  FcAttentionParams p{};
  p.x = x.const_data_ptr();
  p.fc_weight = fcw.const_data_ptr();
  p.fc_bias = data_or_null(fcb);
  p.conv_weight = convw.const_data_ptr();
  p.conv_bias = data_or_null(convb);
  p.out = out.mutable_data_ptr();
  p.workspace = workspace.mutable_data_ptr<float>();
  const c10::cuda::CUDAStream stream = c10::cuda::getCurrentCUDAStream();
  p.counters = stream_counters(x, stream);
  p.N = N;
  p.HW = HW;
  p.C = C;
  p.K = K;
  p.dtype = dtype;
  check_launch(launch_fc_attention(p, stream.stream()), "fc_attention");
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(dfanet, CUDA, m) { m.impl("fc_attention", &fc_attention_cuda); }

}  // namespace dfanet::cuda
