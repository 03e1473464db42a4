// Shared by the CUDA backend's torch glue (csrc/cuda/*_glue.cpp, built only with a CUDA torch): the input check that
// also picks the kernels' dtype, and the launch-error check.
#pragma once

#include <ATen/ATen.h>

#include "../cpu/common.h"  // nhwc / empty_nhwc: the NHWC layout helpers both backends use
#include "launchers.h"

namespace dfanet::cuda {

using cpu::empty_nhwc;
using cpu::nhwc;

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
