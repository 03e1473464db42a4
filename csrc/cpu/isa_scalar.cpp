// The portable path of the CPU kernels: no intrinsics, built for whatever the compiler targets (SSE2 on x86-64,
// NEON on aarch64, ...). It runs on CPUs without AVX2 and on other architectures, and under DFANET_CPU_ISA=scalar.
#include <cstdint>

#include "isa.h"
#include "kernels/simd.h"
#include "kernels/dwsep_conv.h"
#include "kernels/conv.h"
#include "kernels/upsample.h"
#include "kernels/xception_block.h"
#include "kernels/decoder.h"

namespace dfanet::cpu::scalar {
#include "kernels/entry_points.h"
}  // namespace dfanet::cpu::scalar
