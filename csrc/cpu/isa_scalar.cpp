// The portable path of the CPU kernels: no intrinsics, built for whatever the compiler targets (SSE2 on x86-64,
// NEON on aarch64, ...). It runs on CPUs without AVX2 and on other architectures, and under DFANET_CPU_ISA=scalar.
#include <cstdint>

#include "isa.h"
#include "kernels/simd.h"
#include "kernels/dwsep.h"

namespace dfanet::cpu::scalar {
void dwsep_rows(const DwsepArgs& a, int64_t begin, int64_t end, float* scratch) {
  dwsep_rows_impl<Vec>(a, begin, end, scratch);
}
}  // namespace dfanet::cpu::scalar
