// Helpers shared by the CPU kernels.
#pragma once

#include <ATen/ATen.h>

#include <cstdlib>
#include <cstring>
#include <new>

namespace dfanet::cpu {

inline void check_cpu_float(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), name, ": the cpu backend takes CPU tensors, got ", t.device());
  TORCH_CHECK(t.scalar_type() == at::kFloat, name, ": the cpu backend takes float32, got ", t.scalar_type());
}

// NHWC storage for an N x C x H x W tensor (a no-op when it already is).
inline at::Tensor nhwc(const at::Tensor& t) { return t.contiguous(at::MemoryFormat::ChannelsLast); }

inline at::Tensor empty_nhwc(at::IntArrayRef shape, const at::Tensor& like) {
  return at::empty(shape, like.options().memory_format(at::MemoryFormat::ChannelsLast));
}

inline float relu(float v) { return v > 0.f ? v : 0.f; }

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

}  // namespace dfanet::cpu
