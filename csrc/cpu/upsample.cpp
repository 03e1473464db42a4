// Bilinear upsample + concat / + add, and upsample + argmax (labels), on the CPU, NHWC fp32, in one pass over the
// output: the torch glue. It checks the inputs, computes each axis's taps once per call, splits the output rows over
// at::parallel_for's threads and runs the SIMD path chosen by active_isa() (kernels/upsample.h: vertical blend of
// two source rows, then the horizontal blend per pixel, vectorised over channels; same-size sources copied exactly).
// align_corners=False, with PyTorch's source-index rule (src = (dst + 0.5) * in / out - 0.5, clamped at 0).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../checks.h"
#include "common.h"
#include "isa.h"

namespace dfanet::cpu {
namespace {

// Output elements per parallel_for task: below ~64 K floats, waking the second thread costs more than it saves.
constexpr int64_t kMinTaskFloats = int64_t{1} << 16;
// An add of one source writes its output with non-temporal stores (kernels/upsample.h, blend_rows_streamed) from
// this size on: half the L3 of the AMD EPYC it was measured on, a map its reader will not find in cache anyway.
// DFANet's full-size logits (19 channels, 512 x 1024: 40 MB) take this path; the decoder's maps (6 MB) do not.
constexpr int64_t kStreamBytes = int64_t{16} << 20;

at::Tensor upsample_cpu(at::TensorList inputs, c10::SymIntArrayRef size_sym, bool add) {
  const at::IntArrayRef size = C10_AS_INTARRAYREF_SLOW(size_sym);
  check_upsample(inputs, size, /*same_channels=*/add);
  for (const at::Tensor& t : inputs) check_cpu_float(t, "inputs");
  const auto run = cpu_path().upsample_rows;
  const int64_t N = inputs[0].size(0), Ho = size[0], Wo = size[1];
  ResizeSources prepared(inputs, Ho, Wo, add);
  const std::vector<UpsampleSource>& sources = prepared.sources;
  const int64_t Cout = add ? inputs[0].size(1) : prepared.channels;
  at::Tensor out = empty_nhwc({N, Cout, Ho, Wo}, prepared.tensor(0));

  UpsampleArgs args;
  args.N = N, args.Ho = Ho, args.Wo = Wo, args.Cout = Cout;
  args.add = add;
  args.stream = add && sources.size() == 1 && out.numel() * static_cast<int64_t>(sizeof(float)) >= kStreamBytes;
  args.out = out.data_ptr<float>();
  const int64_t grain = std::max<int64_t>(1, kMinTaskFloats / std::max<int64_t>(1, Wo * Cout));
  // The kernel sums at most kMaxUpsampleSources terms per pass; a longer add list continues from the partial sum.
  at::Tensor partial;
  for (size_t first = 0; first < sources.size(); first += kMaxUpsampleSources) {
    std::vector<UpsampleSource> group(sources.begin() + first,
                                      sources.begin() + std::min(sources.size(), first + kMaxUpsampleSources));
    if (add && first > 0) {  // fold the sum so far in as a same-size first term
      partial = out.clone(at::MemoryFormat::ChannelsLast);
      UpsampleSource s;
      s.data = partial.data_ptr<float>();
      s.C = Cout, s.H = Ho, s.W = Wo, s.same = true;
      group.insert(group.begin(), s);
    }
    args.src = group.data();
    args.count = static_cast<int64_t>(group.size());
    at::parallel_for(0, N * Ho, grain, [&](int64_t begin, int64_t end) {
      AlignedFloats scratch(upsample_scratch_floats(args));
      run(args, begin, end, scratch.data());
    });
  }
  return out;
}

// Labels are N x Ho x Wo integers from torch's allocator (the pool holds NHWC float32 maps): a fraction of the
// size of the logits they replace.
at::Tensor upsample_labels_cpu(const at::Tensor& x, c10::SymIntArrayRef size_sym) {
  const at::IntArrayRef size = C10_AS_INTARRAYREF_SLOW(size_sym);
  check_upsample_labels(x, size);
  check_cpu_float(x, "x");
  const auto run = cpu_path().upsample_labels_rows;
  const int64_t N = x.size(0), C = x.size(1), Ho = size[0], Wo = size[1];
  const ResizeSources prepared({x}, Ho, Wo, /*add=*/true);
  at::Tensor out = at::empty({N, Ho, Wo}, x.options().dtype(labels_dtype(C)));

  LabelsArgs args;
  args.src = prepared.sources[0];
  args.N = N, args.Ho = Ho, args.Wo = Wo;
  args.out = out.data_ptr();
  args.u8 = out.scalar_type() == at::kByte;
  const int64_t grain = std::max<int64_t>(1, kMinTaskFloats / std::max<int64_t>(1, Wo * C));
  at::parallel_for(0, N * Ho, grain, [&](int64_t begin, int64_t end) {
    AlignedFloats scratch(labels_scratch_floats(args));
    run(args, begin, end, scratch.data());
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
  m.impl("upsample_labels", &upsample_labels_cpu);
}

}  // namespace dfanet::cpu
