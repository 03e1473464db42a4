// Helpers shared by the .cu kernels: the dtype dispatch, fp32 conversions of the three storage types, launch geometry,
// the tensor-core accumulators' read-back.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cstdint>

#include "launchers.h"

namespace dfanet::cuda {

// Grid-stride loops cover any size, so grids stop growing here: enough blocks to fill an H100 many times over.
constexpr int64_t kMaxBlocks = 8192;

// Kernels whose cost is index arithmetic (one thread per output value) use 32-bit indices when every element offset
// is below this, as DFANet's always are: 64-bit division is emulated in software. The margin keeps a grid-stride
// step past the last element (at most kMaxBlocks x 1024 threads, 2^23) from overflowing.
constexpr int64_t kInt32IndexLimit = int64_t{1} << 30;

__host__ __device__ inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline unsigned grid_size(int64_t work_items, int64_t items_per_block) {
  const int64_t blocks = ceil_div(work_items, items_per_block);
  return static_cast<unsigned>(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// The storage type of `dtype` as a value, for the launchers' one switch: f(StorageType<float>{}) etc.
template <typename T>
struct StorageType {
  using type = T;
};

// Calls f(StorageType<T>{}) with T the storage type of `dtype` (float, __half or __nv_bfloat16); returns its status.
template <typename F>
cudaError_t dispatch_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat32:
      return f(StorageType<float>{});
    case DType::kFloat16:
      return f(StorageType<__half>{});
    case DType::kBFloat16:
      return f(StorageType<__nv_bfloat16>{});
  }
  return cudaErrorInvalidValue;
}

// The two source indices and weights of output index `dst` along one axis of a bilinear resize (align_corners=False,
// PyTorch's source-index rule: src = (dst + 0.5) * in / out - 0.5, clamped at 0; scale = in / out in fp32, as
// PyTorch computes it): upsample.cu's resize, and xception_block.cu's reads of a concatenated input.
template <typename Index>
struct AxisTap {
  Index i0, i1;
  float w0, w1;
};

template <typename Index>
__device__ AxisTap<Index> axis_tap(Index dst, Index in, float scale) {
  float src = scale * (static_cast<float>(dst) + 0.5f) - 0.5f;
  if (src < 0.f) src = 0.f;
  Index i0 = static_cast<Index>(src);
  if (i0 > in - 1) i0 = in - 1;  // never taken by the formula; keeps a rounding surprise inside the image
  const float w1 = src - static_cast<float>(i0);
  return AxisTap<Index>{i0, i0 + (i0 < in - 1 ? 1 : 0), 1.f - w1, w1};
}

// The block's dynamic shared memory (the launch's third <<<>>> argument), 32-byte aligned as WMMA's pointers must be.
// The CUDA emulator (tests/kernels/cuda_emu/emu.h) gives each emulated block a buffer of its own instead.
#ifdef DFANET_CUDA_EMULATOR
__device__ inline void* dynamic_shared_memory() { return emu::dynamic_shared(); }
#else
__device__ inline void* dynamic_shared_memory() {
  extern __shared__ __align__(32) unsigned char dfanet_dynamic_shared[];
  return dfanet_dynamic_shared;
}
#endif

// NaN passes through, as in torch.relu.
__device__ __forceinline__ float relu(float v) { return v < 0.f ? 0.f : v; }

// A tensor-core GEMM's 16 x 16 fp32 accumulator read back through the warp's own scratch (16 rows of
// kWmmaScratchPitch floats, 32-byte aligned; the +4 shifts banks from row to row), since WMMA's register layout is
// opaque: each lane gets 8 consecutive values of one row, lane / 2 the row, (lane % 2) * 8 the first column.
constexpr int kWmmaScratchPitch = 16 + 4;

template <typename Accumulator>
__device__ __forceinline__ void accumulator_row(const Accumulator& acc, float* scratch, float (&v)[8]) {
  nvcuda::wmma::store_matrix_sync(scratch, acc, kWmmaScratchPitch, nvcuda::wmma::mem_row_major);
  __syncwarp();
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int q = 0; q < 8; ++q) v[q] = scratch[(lane / 2) * kWmmaScratchPitch + (lane % 2) * 8 + q];
  __syncwarp();  // read before the next accumulator overwrites the scratch
}

}  // namespace dfanet::cuda
