// Instruction-set paths of the CPU kernels and the plain-C++ interface between the torch glue and them.
//
// The SIMD kernels live in translation units that include no torch header (kernels/*.h, compiled three times by
// isa_avx512.cpp, isa_avx2.cpp and isa_scalar.cpp, each under its own target). They see only raw pointers and the
// argument structs below, so no inline function of torch or the standard library is ever compiled for AVX-512 and
// then picked by the linker for code that runs on an older CPU. The glue (dwsep_conv.cpp, ...) checks and packs the
// arguments, splits the work with at::parallel_for and calls the path that `active_isa()` chooses.
#pragma once

#include <cstdint>

namespace dfanet::cpu {

enum class Isa : int { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

// Every packed weight / bias vector is padded with zeros to a multiple of this many floats (the widest vector),
// so one packing serves every path.
constexpr int64_t kPad = 16;
constexpr int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// One depthwise-separable conv, all tensors NHWC fp32, weights packed by the glue.
struct DwsepArgs {
  const float* x = nullptr;  // [N][H][W][C]
  int64_t N = 0, H = 0, W = 0, C = 0;
  int64_t Ho = 0, Wo = 0, Cout = 0, stride = 1;
  const float* dw_w = nullptr;      // [9][round_up(C, kPad)], tap-major (kh * 3 + kw), zero padded
  const float* dw_b = nullptr;      // [round_up(C, kPad)] or nullptr
  const float* pw_w = nullptr;      // [C][round_up(Cout, kPad)]: the transposed 1x1 weight, zero padded
  const float* pw_b = nullptr;      // [round_up(Cout, kPad)], zeros when the op has no bias (never nullptr)
  const float* residual = nullptr;  // [N][Ho][Wo][Cout] or nullptr
  float* out = nullptr;             // [N][Ho][Wo][Cout]
  bool act_in = false, act_mid = false, act_out = false;
  int64_t tile_w = 0;  // output pixels per depthwise tile (see dwsep_scratch_floats)
};

// Row stride (floats) of the depthwise tile of C channels. The pointwise micro-kernel is compiled for the two
// fixed strides, so that its MR broadcasts per input channel address one moving pointer plus constant offsets
// (see pointwise_micro in kernels/dwsep.h); wider tiles use round_up(C, kPad) at run time. 304 = 19 cache lines,
// an odd number, so the MR rows of a micro-tile fall in different L1 sets.
constexpr int64_t tile_stride(int64_t C) {
  return round_up(C, kPad) <= 64 ? 64 : round_up(C, kPad) <= 304 ? 304 : round_up(C, kPad);
}

// Floats of per-thread scratch that dwsep_rows needs: one depthwise tile of tile_w pixels, plus kPad rows so that
// the micro-kernel's last pixel group may read past the tile.
inline int64_t dwsep_scratch_floats(const DwsepArgs& a) { return (a.tile_w + kPad) * tile_stride(a.C); }

// Computes output rows [begin, end) of the flattened N * Ho rows, with `scratch` (dwsep_scratch_floats(a) floats,
// zero-initialised) private to the calling thread. One function per path; the AVX ones exist only on x86-64
// builds and may be called only when the CPU has the instructions (see active_isa()).
#define DFANET_CPU_PATH_FUNCTIONS \
  void dwsep_rows(const DwsepArgs& a, int64_t begin, int64_t end, float* scratch);

namespace scalar {
DFANET_CPU_PATH_FUNCTIONS
}
namespace avx2 {
DFANET_CPU_PATH_FUNCTIONS
}
namespace avx512 {
DFANET_CPU_PATH_FUNCTIONS
}

// The path the kernels take now: the best this CPU runs, or a lower one forced with the environment variable
// DFANET_CPU_ISA=avx512|avx2|scalar (read at every call, so tests can cover each path in one process). Raises a
// c10::Error naming the variable if its value is unknown or names a path this CPU (or this build) lacks.
Isa active_isa();
const char* isa_name(Isa isa);

}  // namespace dfanet::cpu
