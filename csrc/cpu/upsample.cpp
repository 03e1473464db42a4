// Bilinear upsample + concat / + add on the CPU, NHWC fp32, in one pass over the output.
// align_corners=False, with PyTorch's source-index rule (src = (dst + 0.5) * in / out - 0.5, clamped at 0).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../checks.h"
#include "common.h"

namespace dfanet::cpu {
namespace {

// The two source indices and their weights for every output index along one axis.
struct AxisTaps {
  std::vector<int64_t> i0, i1;
  std::vector<float> w0, w1;

  AxisTaps(int64_t in, int64_t out) : i0(out), i1(out), w0(out), w1(out) {
    const float scale = static_cast<float>(in) / static_cast<float>(out);
    for (int64_t d = 0; d < out; ++d) {
      float src = scale * (static_cast<float>(d) + 0.5f) - 0.5f;
      if (src < 0.f) src = 0.f;
      const int64_t lo = std::min<int64_t>(static_cast<int64_t>(src), in - 1);
      i0[d] = lo;
      i1[d] = lo + (lo < in - 1 ? 1 : 0);
      w1[d] = src - static_cast<float>(lo);
      w0[d] = 1.f - w1[d];
    }
  }
};

struct Source {
  const float* data;
  int64_t C, H, W, channel_offset;
  AxisTaps rows, cols;
};

// Writes (accumulate=false) or adds (accumulate=true) the resized row `oh` of `src` (channels [0, C)) into
// out_row, whose pixels are `out_stride` floats apart.
void resize_row(const Source& src, int64_t n, int64_t oh, int64_t Wo, float* out_row, int64_t out_stride,
                bool accumulate) {
  const int64_t C = src.C;
  const float* plane = src.data + n * src.H * src.W * C;
  const float* r0 = plane + src.rows.i0[oh] * src.W * C;
  const float* r1 = plane + src.rows.i1[oh] * src.W * C;
  const float h0 = src.rows.w0[oh], h1 = src.rows.w1[oh];
  for (int64_t ow = 0; ow < Wo; ++ow) {
    const float* a = r0 + src.cols.i0[ow] * C;
    const float* b = r0 + src.cols.i1[ow] * C;
    const float* c = r1 + src.cols.i0[ow] * C;
    const float* d = r1 + src.cols.i1[ow] * C;
    const float w0 = src.cols.w0[ow], w1 = src.cols.w1[ow];
    float* o = out_row + ow * out_stride;
    for (int64_t k = 0; k < C; ++k) {
      const float v = h0 * (w0 * a[k] + w1 * b[k]) + h1 * (w0 * c[k] + w1 * d[k]);
      o[k] = accumulate ? o[k] + v : v;
    }
  }
}

at::Tensor upsample_cpu(at::TensorList inputs, c10::SymIntArrayRef size_sym, bool add) {
  const at::IntArrayRef size = C10_AS_INTARRAYREF_SLOW(size_sym);
  check_upsample(inputs, size, /*same_channels=*/add);
  const int64_t N = inputs[0].size(0), Ho = size[0], Wo = size[1];
  std::vector<at::Tensor> keep;  // NHWC copies stay alive while the kernel reads them
  std::vector<Source> sources;
  int64_t channels = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    check_cpu_float(inputs[i], "inputs");
    keep.push_back(nhwc(inputs[i]));
    const at::Tensor& t = keep.back();
    sources.push_back(Source{t.data_ptr<float>(), t.size(1), t.size(2), t.size(3), add ? 0 : channels,
                             AxisTaps(t.size(2), Ho), AxisTaps(t.size(3), Wo)});
    channels += t.size(1);
  }
  const int64_t Cout = add ? inputs[0].size(1) : channels;
  at::Tensor out = empty_nhwc({N, Cout, Ho, Wo}, keep[0]);
  float* op = out.data_ptr<float>();

  at::parallel_for(0, N * Ho, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t n = i / Ho, oh = i % Ho;
      float* row = op + i * Wo * Cout;
      for (size_t s = 0; s < sources.size(); ++s) {
        resize_row(sources[s], n, oh, Wo, row + sources[s].channel_offset, Cout, /*accumulate=*/add && s > 0);
      }
    }
  });
  return out;
}

at::Tensor upsample_concat_cpu(at::TensorList inputs, c10::SymIntArrayRef size) {
  return upsample_cpu(inputs, size, /*add=*/false);
}

at::Tensor upsample_add_cpu(at::TensorList inputs, c10::SymIntArrayRef size) {
  return upsample_cpu(inputs, size, /*add=*/true);
}

}  // namespace

TORCH_LIBRARY_IMPL(dfanet, CPU, m) {
  m.impl("upsample_concat", &upsample_concat_cpu);
  m.impl("upsample_add", &upsample_add_cpu);
}

}  // namespace dfanet::cpu
