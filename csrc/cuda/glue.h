// Shared by the CUDA backend's torch glue (csrc/cuda/*_glue.cpp, built only with a CUDA torch): the input check that
// also picks the kernels' dtype, and the launch-error check.
#pragma once

#include <ATen/ATen.h>

#include "launchers.h"

namespace dfanet::cuda {

// NHWC storage for an N x C x H x W tensor (a no-op when it already is): the layout every kernel reads.
inline at::Tensor nhwc(const at::Tensor& t) { return t.contiguous(at::MemoryFormat::ChannelsLast); }

// A kernel's output: channels_last, on like's device, in like's dtype (torch's caching allocator; the CPU backend's
// own pool is for CPU float32 alone).
inline at::Tensor empty_nhwc(at::IntArrayRef shape, const at::Tensor& like) {
  return at::empty(shape, like.options().memory_format(at::MemoryFormat::ChannelsLast));
}

// `t` (whose dtype and device the other arguments were checked against) is a CUDA tensor of a dtype the kernels
// take; returns that dtype for the launcher.
inline DType check_cuda_input(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), name, ": the cuda backend takes CUDA tensors, got ", t.device());
  const at::ScalarType s = t.scalar_type();
  TORCH_CHECK(s == at::kFloat || s == at::kHalf || s == at::kBFloat16, name,
              ": the cuda backend takes float32, float16 or bfloat16, got ", s);
  return s == at::kHalf ? DType::kFloat16 : s == at::kBFloat16 ? DType::kBFloat16 : DType::kFloat32;
}

inline const void* data_or_null(const at::Tensor& t) { return t.defined() ? t.const_data_ptr() : nullptr; }

inline void check_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA kernel launch failed: ", cudaGetErrorString(err));
}

}  // namespace dfanet::cuda
