// The AVX-512 path of the CPU kernels (x86-64 only). The target switch below covers only this file's own code: the
// kernels in kernels/*.h include no torch header and have internal linkage (see isa.h).
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#include <immintrin.h>

#include <cstdint>

#include "isa.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
// GCC 12's own _mm512_max_ps starts from an "undefined" vector and then warns about it being uninitialised.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#define DFANET_SIMD_AVX512
#include "kernels/simd.h"
#include "kernels/dwsep_conv.h"
#include "kernels/conv.h"
#include "kernels/upsample.h"
#include "kernels/xception_block.h"
#include "kernels/decoder.h"

namespace dfanet::cpu::avx512 {
#include "kernels/entry_points.h"
}  // namespace dfanet::cpu::avx512

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#endif
