// Fused depthwise-separable convolution on the CPU, NHWC fp32.
// One output row at a time: the depthwise 3x3 result of the row (Wo x C floats) stays in a per-thread buffer in
// cache and feeds the pointwise product directly; biases, ReLUs and the residual are applied on the way out.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../checks.h"
#include "common.h"

namespace dfanet::cpu {
namespace {

// Depthwise 3x3 (padding 1) of output row `oh` into row[Wo][C]: bias, optional ReLU on input and result.
void depthwise_row(const float* x, const float* w9c, const float* bias, float* row, int64_t H, int64_t W, int64_t C,
                   int64_t Wo, int64_t oh, int64_t stride, bool act_in, bool act_mid) {
  for (int64_t ow = 0; ow < Wo; ++ow) {
    float* acc = row + ow * C;
    for (int64_t c = 0; c < C; ++c) acc[c] = bias ? bias[c] : 0.f;
    for (int64_t kh = 0; kh < 3; ++kh) {
      const int64_t ih = oh * stride - 1 + kh;
      if (ih < 0 || ih >= H) continue;
      for (int64_t kw = 0; kw < 3; ++kw) {
        const int64_t iw = ow * stride - 1 + kw;
        if (iw < 0 || iw >= W) continue;
        const float* xp = x + (ih * W + iw) * C;
        const float* wp = w9c + (kh * 3 + kw) * C;
        if (act_in) {
          for (int64_t c = 0; c < C; ++c) acc[c] += relu(xp[c]) * wp[c];
        } else {
          for (int64_t c = 0; c < C; ++c) acc[c] += xp[c] * wp[c];
        }
      }
    }
    if (act_mid) {
      for (int64_t c = 0; c < C; ++c) acc[c] = relu(acc[c]);
    }
  }
}

// out[Wo][Cout] = row[Wo][C] @ w_t[C][Cout] + bias, then optional ReLU, then + residual.
void pointwise_row(const float* row, const float* w_t, const float* bias, const float* residual, float* out,
                   int64_t C, int64_t Cout, int64_t Wo, bool act_out) {
  for (int64_t ow = 0; ow < Wo; ++ow) {
    float* o = out + ow * Cout;
    for (int64_t co = 0; co < Cout; ++co) o[co] = bias ? bias[co] : 0.f;
    const float* a = row + ow * C;
    for (int64_t c = 0; c < C; ++c) {
      const float av = a[c];
      const float* wr = w_t + c * Cout;
      for (int64_t co = 0; co < Cout; ++co) o[co] += av * wr[co];
    }
    if (act_out) {
      for (int64_t co = 0; co < Cout; ++co) o[co] = relu(o[co]);
    }
    if (residual) {
      const float* r = residual + ow * Cout;
      for (int64_t co = 0; co < Cout; ++co) o[co] += r[co];
    }
  }
}

at::Tensor dwsep_conv_cpu(const at::Tensor& x_in, const at::Tensor& dw_weight, const std::optional<at::Tensor>& dw_bias,
                          const at::Tensor& pw_weight, const std::optional<at::Tensor>& pw_bias, int64_t stride,
                          bool act_in, bool act_mid, bool act_out, const std::optional<at::Tensor>& residual) {
  const auto out_shape = check_dwsep_conv(x_in, dw_weight, dw_bias, pw_weight, pw_bias, stride, residual);
  check_cpu_float(x_in, "x");
  const int64_t N = x_in.size(0), C = x_in.size(1), H = x_in.size(2), W = x_in.size(3);
  const int64_t Cout = out_shape[1], Ho = out_shape[2], Wo = out_shape[3];

  const at::Tensor x = nhwc(x_in);
  const at::Tensor w9c = dw_weight.reshape({C, 9}).t().contiguous();      // [tap][C]: taps vectorise over C
  const at::Tensor w_t = pw_weight.reshape({Cout, C}).t().contiguous();  // [C][Cout]
  const at::Tensor dwb = dw_bias ? dw_bias->contiguous() : at::Tensor();
  const at::Tensor pwb = pw_bias ? pw_bias->contiguous() : at::Tensor();
  const at::Tensor res = residual ? nhwc(*residual) : at::Tensor();
  at::Tensor out = empty_nhwc(out_shape, x);

  const float* xp = x.data_ptr<float>();
  const float* w9cp = w9c.data_ptr<float>();
  const float* wtp = w_t.data_ptr<float>();
  const float* dwbp = dwb.defined() ? dwb.data_ptr<float>() : nullptr;
  const float* pwbp = pwb.defined() ? pwb.data_ptr<float>() : nullptr;
  const float* resp = res.defined() ? res.data_ptr<float>() : nullptr;
  float* outp = out.data_ptr<float>();

  at::parallel_for(0, N * Ho, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> row(Wo * C);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t n = i / Ho, oh = i % Ho;
      depthwise_row(xp + n * H * W * C, w9cp, dwbp, row.data(), H, W, C, Wo, oh, stride, act_in, act_mid);
      const int64_t offset = i * Wo * Cout;  // (n * Ho + oh) * Wo * Cout
      pointwise_row(row.data(), wtp, pwbp, resp ? resp + offset : nullptr, outp + offset, C, Cout, Wo, act_out);
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(dfanet, CPU, m) { m.impl("dwsep_conv", &dwsep_conv_cpu); }

}  // namespace dfanet::cpu
