// The AVX2 + FMA path of the CPU kernels (x86-64 only). The target switch below covers only this file's own code: the
// kernels in kernels/*.h include no torch header and have internal linkage (see isa.h).
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#include <immintrin.h>

#include <cstdint>

#include "isa.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif

#define DFANET_SIMD_AVX2
#include "kernels/simd.h"
#include "kernels/dwsep_conv.h"
#include "kernels/conv.h"
#include "kernels/upsample.h"
#include "kernels/xception_block.h"
#include "kernels/decoder.h"

namespace dfanet::cpu::avx2 {
#include "kernels/entry_points.h"
}  // namespace dfanet::cpu::avx2

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#endif
