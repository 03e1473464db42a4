// Helpers shared by the CPU kernels.
#pragma once

#include <ATen/ATen.h>

#include <cstdlib>
#include <cstring>
#include <new>
#include <optional>

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

inline void pack_bias(const std::optional<at::Tensor>& b, float* dst) {
  if (!b) return;
  const float* p = b->data_ptr<float>();
  for (int64_t i = 0; i < b->size(0); ++i) dst[i] = p[i * b->stride(0)];
}

// Output pixels per depthwise / gathered tile: the tile (tile_w rows of tile_stride(C) floats) is sized to ~16 KiB so
// it stays in L1 next to the streaming input rows while the pointwise GEMM reads it once per panel of output
// channels; a multiple of 16, the widest micro-kernel. (Tiles of 16..256 px measured within noise of each other at
// 48 -> 12, 96 -> 24, 12 -> 48 and 192 -> 48 ch; 32-64 px was never worse.)
inline int64_t tile_width(int64_t Wo, int64_t C) {
  return std::min(Wo, std::max<int64_t>(16, 4096 / tile_stride(C) / 16 * 16));
}

// A parallel_for task should carry at least this many multiply-adds (~10 us on one core with AVX-512): below that,
// waking the second thread costs more than it saves (the deepest DFANet layers are 8 x 16 pixels).
constexpr int64_t kMinTaskMacs = int64_t{1} << 17;

// Row grain for at::parallel_for: at least min_work units of work per task.
inline int64_t row_grain(int64_t row_work, int64_t min_work) {
  return std::max<int64_t>(1, min_work / std::max<int64_t>(1, row_work));
}

}  // namespace dfanet::cpu
