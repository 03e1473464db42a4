// Which instruction-set path the CPU kernels take (see isa.h), and the dfanet::cpu_isa op that reports it.
#include "isa.h"

#include <torch/library.h>

#include <cstdlib>
#include <string>

namespace dfanet::cpu {
namespace {

// The best path this build and this CPU run. __builtin_cpu_supports also checks that the OS saves the vector
// registers (XCR0), so a kernel booted without AVX-512 state support gets the AVX2 path.
Isa best_isa() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  static const Isa best = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
      return Isa::kAvx512;
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
    return Isa::kScalar;
  }();
  return best;
#else
  return Isa::kScalar;
#endif
}

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512:
      return "avx512";
    case Isa::kAvx2:
      return "avx2";
    default:
      return "scalar";
  }
}

Isa active_isa() {
  const Isa best = best_isa();
  const char* env = std::getenv("DFANET_CPU_ISA");
  if (env == nullptr || env[0] == '\0') return best;
  const std::string want(env);
  Isa isa;
  if (want == "auto") {
    return best;
  } else if (want == "avx512") {
    isa = Isa::kAvx512;
  } else if (want == "avx2") {
    isa = Isa::kAvx2;
  } else if (want == "scalar") {
    isa = Isa::kScalar;
  } else {
    TORCH_CHECK(false, "DFANET_CPU_ISA: expected one of auto, avx512, avx2, scalar, got '", want, "'");
  }
  TORCH_CHECK(static_cast<int>(isa) <= static_cast<int>(best), "DFANET_CPU_ISA=", want,
              ": this CPU (or this build) has no ", want, " path; the best here is ", isa_name(best));
  return isa;
}

const CpuPath& cpu_path() {
  static const CpuPath scalar_path{
      &scalar::dwsep_rows,    &scalar::pointwise_rows,       &scalar::block_rows,   &scalar::conv3x3_rows,
      &scalar::upsample_rows, &scalar::upsample_labels_rows, &scalar::decoder_rows};
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  static const CpuPath avx2_path{
      &avx2::dwsep_rows,    &avx2::pointwise_rows,       &avx2::block_rows,   &avx2::conv3x3_rows,
      &avx2::upsample_rows, &avx2::upsample_labels_rows, &avx2::decoder_rows};
  static const CpuPath avx512_path{
      &avx512::dwsep_rows,    &avx512::pointwise_rows,       &avx512::block_rows,   &avx512::conv3x3_rows,
      &avx512::upsample_rows, &avx512::upsample_labels_rows, &avx512::decoder_rows};
  switch (active_isa()) {
    case Isa::kAvx512:
      return avx512_path;
    case Isa::kAvx2:
      return avx2_path;
    default:
      return scalar_path;
  }
#else
  active_isa();  // still rejects a bad DFANET_CPU_ISA
  return scalar_path;
#endif
}

namespace {
std::string cpu_isa() { return isa_name(active_isa()); }
}  // namespace

TORCH_LIBRARY_IMPL(dfanet, CompositeExplicitAutograd, m) { m.impl("cpu_isa", &cpu_isa); }

}  // namespace dfanet::cpu
