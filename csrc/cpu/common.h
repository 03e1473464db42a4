// Helpers shared by the CPU kernels.
#pragma once

#include <ATen/ATen.h>

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

}  // namespace dfanet::cpu
