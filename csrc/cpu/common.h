// Helpers shared by the CPU kernels.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <new>
#include <optional>
#include <vector>

#include "isa.h"
#include "pool.h"

namespace dfanet::cpu {

inline void check_cpu_float(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), name, ": the cpu backend takes CPU tensors, got ", t.device());
  TORCH_CHECK(t.scalar_type() == at::kFloat, name, ": the cpu backend takes float32, got ", t.scalar_type());
}

// NHWC storage for an N x C x H x W tensor (a no-op when it already is).
inline at::Tensor nhwc(const at::Tensor& t) { return t.contiguous(at::MemoryFormat::ChannelsLast); }

// The output of a CPU kernel: float32, channels_last, from the caching pool of pool.cpp.
inline at::Tensor empty_nhwc(at::IntArrayRef shape, const at::Tensor& like) {
  TORCH_INTERNAL_ASSERT(like.scalar_type() == at::kFloat && like.device().is_cpu());
  return pooled_empty_nhwc(shape);
}


// A zeroed, 64-byte aligned float array (packed weights, per-thread scratch): cheaper than an at::Tensor for the
// many small buffers of one call, and aligned so that 16-float rows start on a cache line.
class AlignedFloats {
 public:
  explicit AlignedFloats(int64_t n) {
    const size_t bytes = (static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(float) + 63) / 64 * 64;
    data_ = static_cast<float*>(std::aligned_alloc(64, bytes));
    if (data_ == nullptr) throw std::bad_alloc();
    std::memset(data_, 0, bytes);
  }
  ~AlignedFloats() { std::free(data_); }
  AlignedFloats(const AlignedFloats&) = delete;
  AlignedFloats& operator=(const AlignedFloats&) = delete;
  float* data() { return data_; }

 private:
  float* data_;
};

// Packing of weights for the kernels (layouts in isa.h), read through the strides so any layout needs no copy.
// Depthwise [C, 1, 3, 3] -> [9][ldc] (tap-major).
inline void pack_depthwise(const at::Tensor& w, int64_t ldc, float* dst) {
  const float* p = w.data_ptr<float>();
  const int64_t C = w.size(0), s0 = w.stride(0), s2 = w.stride(2), s3 = w.stride(3);
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t t = 0; t < 9; ++t) dst[t * ldc + c] = p[c * s0 + (t / 3) * s2 + (t % 3) * s3];
  }
}

// Dense [Cout, C, k, k] -> [C * k * k][ldo]: row (c * k + kh) * k + kw holds the Cout weights of that tap.
inline void pack_dense(const at::Tensor& w, int64_t ldo, float* dst) {
  const float* p = w.data_ptr<float>();
  const int64_t Cout = w.size(0), C = w.size(1), k = w.size(2);
  const int64_t s0 = w.stride(0), s1 = w.stride(1), s2 = w.stride(2), s3 = w.stride(3);
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t kh = 0; kh < k; ++kh) {
      for (int64_t kw = 0; kw < k; ++kw) {
        float* row = dst + ((c * k + kh) * k + kw) * ldo;
        const float* src = p + c * s1 + kh * s2 + kw * s3;
        for (int64_t co = 0; co < Cout; ++co) row[co] = src[co * s0];
      }
    }
  }
}

inline void pack_bias(const at::Tensor& b, float* dst) {
  const float* p = b.data_ptr<float>();
  for (int64_t i = 0; i < b.size(0); ++i) dst[i] = p[i * b.stride(0)];
}

// Whether the storage behind `t` holds `floats` floats from t's first element on: a view of packed weights may be
// read past its own elements, in the padding of its rows.
inline bool storage_holds(const at::Tensor& t, int64_t floats) {
  const int64_t bytes = static_cast<int64_t>(t.storage().nbytes());
  return t.scalar_type() == at::kFloat && (t.storage_offset() + floats) * static_cast<int64_t>(sizeof(float)) <= bytes;
}

// The weights one call of a CPU kernel reads, in the packed layouts of isa.h. A weight that already is a view of its
// packed layout (dfanet_kernels.cpu_layout lays the Prepared ops' folded weights out so) is read in place; any other
// is packed into a zeroed buffer owned by this object. Packing took a third of a small block call's fixed cost
// (192 -> 48 -> 192 ch: ~11 of 35 us with the zeroing; ~0.5 ms of a DFANet forward's 42 block calls).
class PackedWeights {
 public:
  // [C, 1, 3, 3] -> [9][ldc]: in place when the strides are (1, any, 3 * ldc, ldc).
  const float* depthwise(const at::Tensor& w, int64_t ldc) {
    if (w.stride(0) == 1 && w.stride(3) == ldc && w.stride(2) == 3 * ldc && storage_holds(w, 9 * ldc)) {
      return w.data_ptr<float>();
    }
    float* dst = fresh(9 * ldc);
    pack_depthwise(w, ldc, dst);
    return dst;
  }
  // [Cout, C, k, k] -> [C * k * k][ldo]: in place when the strides are (1, k * k * ldo, k * ldo, ldo).
  const float* dense(const at::Tensor& w, int64_t ldo) {
    const int64_t k = w.size(2);
    if (w.stride(0) == 1 && w.stride(3) == ldo && w.stride(2) == k * ldo && w.stride(1) == k * k * ldo &&
        storage_holds(w, w.size(1) * k * k * ldo)) {
      return w.data_ptr<float>();
    }
    float* dst = fresh(w.size(1) * k * k * ldo);
    pack_dense(w, ldo, dst);
    return dst;
  }
  // A bias vector read as `padded` floats: in place when contiguous with the padding in its storage; zeros if none.
  const float* bias(const std::optional<at::Tensor>& b, int64_t padded) {
    if (b && b->stride(0) == 1 && storage_holds(*b, padded)) return b->data_ptr<float>();
    float* dst = fresh(padded);
    if (b) pack_bias(*b, dst);
    return dst;
  }

 private:
  float* fresh(int64_t floats) { return buffers_.emplace_back(floats).data(); }
  std::deque<AlignedFloats> buffers_;  // a deque: its elements never move
};

// Output pixels per depthwise / gathered tile: the tile (tile_w rows of tile_stride(C) floats) is sized to ~16 KiB so
// it stays in L1 next to the streaming input rows while the pointwise GEMM reads it once per panel of output
// channels; a multiple of 16, the widest micro-kernel. (Tiles of 16..256 px measured within noise of each other at
// 48 -> 12, 96 -> 24, 12 -> 48 and 192 -> 48 ch; 32-64 px was never worse.)
inline int64_t tile_width(int64_t Wo, int64_t C) {
  return std::min(Wo, std::max<int64_t>(16, 4096 / tile_stride(C) / 16 * 16));
}

// The two source indices and their weights for every output index along one axis of a bilinear resize
// (align_corners=False), in PyTorch's fp32 arithmetic: src = (dst + 0.5) * in / out - 0.5, clamped at 0.
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

// The sources of a bilinear resize to Ho x Wo (upsample_concat / upsample_add, or a block's virtual input): NHWC
// copies of the inputs (no copy when already NHWC), each one's axis taps, and the kernel's UpsampleSource records
// pointing at both, valid while this object lives. For a concat, channel_offset is the running channel count.
class ResizeSources {
 public:
  ResizeSources(at::TensorList inputs, int64_t Ho, int64_t Wo, bool add) {
    keep_.reserve(inputs.size());
    sources.reserve(inputs.size());
    for (const at::Tensor& input : inputs) {
      keep_.push_back(nhwc(input));
      const at::Tensor& t = keep_.back();
      UpsampleSource s;
      s.data = t.data_ptr<float>();
      s.C = t.size(1), s.H = t.size(2), s.W = t.size(3);
      s.channel_offset = add ? 0 : channels;
      s.same = s.H == Ho && s.W == Wo;
      if (!s.same) {
        const AxisTaps& rows = taps_.emplace_back(s.H, Ho);
        const AxisTaps& cols = taps_.emplace_back(s.W, Wo);
        s.row_i0 = rows.i0.data(), s.row_i1 = rows.i1.data(), s.row_w0 = rows.w0.data(), s.row_w1 = rows.w1.data();
        s.col_i0 = cols.i0.data(), s.col_i1 = cols.i1.data(), s.col_w0 = cols.w0.data(), s.col_w1 = cols.w1.data();
      }
      sources.push_back(s);
      channels += s.C;
    }
  }
  const at::Tensor& tensor(size_t i) const { return keep_[i]; }

  std::vector<UpsampleSource> sources;
  int64_t channels = 0;

 private:
  std::vector<at::Tensor> keep_;
  std::deque<AxisTaps> taps_;  // a deque: the records point into its elements, which never move
};

// A parallel_for task should carry at least this many multiply-adds (~10 us on one core with AVX-512): below that,
// waking the second thread costs more than it saves (the deepest DFANet layers are 8 x 16 pixels).
constexpr int64_t kMinTaskMacs = int64_t{1} << 17;

// Row grain for at::parallel_for: at least min_work units of work per task.
inline int64_t row_grain(int64_t row_work, int64_t min_work) {
  return std::max<int64_t>(1, min_work / std::max<int64_t>(1, row_work));
}

// dfanet::conv1x1 on the CPU (conv.cpp), for other ops' glue too (decoder.cpp reduces its smaller maps with it).
at::Tensor conv1x1_cpu(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                       int64_t stride, bool relu);

// A 1x1 convolution (conv1x1, and the part of a block's shortcut computed before the resize) on the active path,
// its output rows split over at::parallel_for's threads.
inline void run_pointwise(const PointwiseArgs& a) {
  const auto run = cpu_path().pointwise_rows;
  at::parallel_for(0, a.N * a.Ho, row_grain(a.Wo * a.C * a.Cout, kMinTaskMacs), [&](int64_t begin, int64_t end) {
    AlignedFloats scratch(pointwise_scratch_floats(a));
    run(a, begin, end, scratch.data());
  });
}

}  // namespace dfanet::cpu
