// The portable path of the CPU kernels: no intrinsics, built for whatever the compiler targets (SSE2 on x86-64,
// NEON on aarch64, ...). It runs on CPUs without AVX2 and on other architectures, and under DFANET_CPU_ISA=scalar.
#include <cstdint>

#include "isa.h"
#include "kernels/simd.h"
#include "kernels/dwsep.h"
#include "kernels/upsample.h"
#include "kernels/conv3x3.h"

namespace dfanet::cpu::scalar {
void dwsep_rows(const DwsepArgs& a, int64_t begin, int64_t end, float* scratch) {
  dwsep_rows_impl<Vec>(a, begin, end, scratch);
}
void pointwise_rows(const PointwiseArgs& a, int64_t begin, int64_t end, float* scratch) {
  pointwise_rows_impl<Vec>(a, begin, end, scratch);
}
void block_rows(const BlockArgs& a, int64_t begin, int64_t end, float* scratch) {
  block_rows_impl<Vec>(a, begin, end, scratch);
}
void conv3x3_rows(const Conv3x3Args& a, int64_t begin, int64_t end, float* scratch) {
  conv3x3_rows_impl<Vec>(a, begin, end, scratch);
}
void upsample_rows(const UpsampleArgs& a, int64_t begin, int64_t end, float* scratch) {
  upsample_rows_impl<Vec>(a, begin, end, scratch);
}
}  // namespace dfanet::cpu::scalar
