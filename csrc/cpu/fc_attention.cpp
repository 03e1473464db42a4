// FC-attention channel scaling on the CPU, NHWC fp32: pool -> two small mat-vecs -> ReLU -> scale every pixel.
// Only the N x C pooled vector, the N x K hidden vector and the N x C scale are materialised.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../checks.h"
#include "common.h"

namespace dfanet::cpu {
namespace {

at::Tensor fc_attention_cpu(const at::Tensor& x_in, const at::Tensor& fc_weight, const std::optional<at::Tensor>& fc_bias,
                            const at::Tensor& conv_weight, const std::optional<at::Tensor>& conv_bias) {
  check_fc_attention(x_in, fc_weight, fc_bias, conv_weight, conv_bias);
  check_cpu_float(x_in, "x");
  const int64_t N = x_in.size(0), C = x_in.size(1), HW = x_in.size(2) * x_in.size(3);
  const at::Tensor x = nhwc(x_in);

  // The two mat-vecs are a few hundred thousand MACs: ATen's GEMV is as good as it gets here.
  const at::Tensor pooled = x.mean({2, 3});                                             // N x C
  const at::Tensor hidden = at::linear(pooled, fc_weight, fc_bias);                   // N x K
  const at::Tensor scale = at::relu(at::linear(hidden, conv_weight.flatten(1), conv_bias)).contiguous();  // N x C

  at::Tensor out = empty_nhwc(x.sizes(), x);
  const float* xp = x.data_ptr<float>();
  const float* sp = scale.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t grain = std::max<int64_t>(1, 32768 / C);
  at::parallel_for(0, N * HW, grain, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const float* s = sp + (p / HW) * C;
      const float* xr = xp + p * C;
      float* o = op + p * C;
      for (int64_t c = 0; c < C; ++c) o[c] = xr[c] * s[c];
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(dfanet, CPU, m) { m.impl("fc_attention", &fc_attention_cpu); }

}  // namespace dfanet::cpu
