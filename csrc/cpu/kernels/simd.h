// The vector type `Vec` of one instruction-set path. Included only by csrc/cpu/isa_<path>.cpp, after that file has
// defined DFANET_SIMD_AVX512 / DFANET_SIMD_AVX2 (or neither, for the portable path) and switched the compiler's
// target. Everything here has internal linkage, so each path keeps its own copy.
//
// Vec::L floats per vector; Vec::M is a lane mask for the last, partial vector of a channel range (loads fill the
// masked-off lanes with zeros and never touch their memory; stores leave it alone). kMaxNV and mr(nv) size the
// pointwise micro-kernel: an mr x nv grid of vector accumulators, plus nv weight vectors and one broadcast, must fit
// in the register file (32 zmm / 16 ymm).
#pragma once

#include <cstdint>

namespace dfanet::cpu {
namespace {

#if defined(DFANET_SIMD_AVX512)

struct Vec {
  static constexpr int L = 16;
  static constexpr int kMaxNV = 4;
  // 16x1, 12x2, 8x3, 6x4 accumulators: 16-24 of the 32 zmm registers.
  static constexpr int mr(int nv) { return nv == 1 ? 16 : nv == 2 ? 12 : nv == 3 ? 8 : 6; }
  using T = __m512;
  using M = __mmask16;
  static M mask(int64_t n) { return static_cast<M>((1u << n) - 1u); }  // 1 <= n <= 16
  static T zero() { return _mm512_setzero_ps(); }
  static T set1(float v) { return _mm512_set1_ps(v); }
  static T load(const float* p) { return _mm512_loadu_ps(p); }
  static T loadm(const float* p, M m) { return _mm512_maskz_loadu_ps(m, p); }
  static void store(float* p, T v) { _mm512_storeu_ps(p, v); }
  static void storem(float* p, T v, M m) { _mm512_mask_storeu_ps(p, m, v); }
  // A non-temporal store (p: L floats aligned), and the fence that orders such stores before the thread's next
  // barrier.
  static void stream(float* p, T v) { _mm512_stream_ps(p, v); }
  static void stream_fence() { _mm_sfence(); }
  static T fma(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
  static T mul(T a, T b) { return _mm512_mul_ps(a, b); }
  static T add(T a, T b) { return _mm512_add_ps(a, b); }
  // max(0, a) returns its second operand when either is NaN: NaN stays NaN, as in torch.relu.
  static T max0(T a) { return _mm512_max_ps(_mm512_setzero_ps(), a); }
  // For argmax over channels: the lanes' maximum, lane bit masks (lane i -> bit i), a blend.
  static T max(T a, T b) { return _mm512_max_ps(a, b); }
  static float hmax(T a) { return _mm512_reduce_max_ps(a); }
  static uint32_t eq_bits(T a, T b) { return _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ); }
  static uint32_t nan_bits(T a) { return _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q); }
  static T select(M m, T a, T b) { return _mm512_mask_blend_ps(m, b, a); }  // a where m, else b
};

#elif defined(DFANET_SIMD_AVX2)

struct Vec {
  static constexpr int L = 8;
  static constexpr int kMaxNV = 3;
  // 8x1, 6x2, 4x3 accumulators: at most 12 of the 16 ymm registers.
  static constexpr int mr(int nv) { return nv == 1 ? 8 : nv == 2 ? 6 : 4; }
  using T = __m256;
  // The lane mask and the live-lane count: loads use the mask, stores the count (see storem).
  struct M {
    __m256i bits;
    int n;
  };
  static M mask(int64_t n) {
    const int live = static_cast<int>(n);
    return {_mm256_cmpgt_epi32(_mm256_set1_epi32(live), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)), live};
  }
  static T zero() { return _mm256_setzero_ps(); }
  static T set1(float v) { return _mm256_set1_ps(v); }
  static T load(const float* p) { return _mm256_loadu_ps(p); }
  static T loadm(const float* p, M m) { return _mm256_maskload_ps(p, m.bits); }
  static void store(float* p, T v) { _mm256_storeu_ps(p, v); }
  static void stream(float* p, T v) { _mm256_stream_ps(p, v); }  // p: L floats aligned
  static void stream_fence() { _mm_sfence(); }
  // The first m.n lanes as 4-, 2- and 1-float stores rather than vmaskmovps, which AMD's Zen cores run as a long
  // microcoded sequence: 2.6 ns more per masked store on the AMD EPYC VM (a 12-channel pixel row in L3), and
  // upsample_add to 19 channels at 512 x 1024 took 1.4x as long per channel as to 24 (1 thread).
  static void storem(float* p, T v, M m) {
    __m128 part = _mm256_castps256_ps128(v);
    if (m.n >= 8) return _mm256_storeu_ps(p, v);
    if (m.n & 4) {
      _mm_storeu_ps(p, part);
      part = _mm256_extractf128_ps(v, 1);
      p += 4;
    }
    if (m.n & 2) {
      _mm_storel_pi(reinterpret_cast<__m64*>(p), part);
      part = _mm_movehl_ps(part, part);
      p += 2;
    }
    if (m.n & 1) _mm_store_ss(p, part);
  }
  static T fma(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
  static T mul(T a, T b) { return _mm256_mul_ps(a, b); }
  static T add(T a, T b) { return _mm256_add_ps(a, b); }
  // max(0, a) returns its second operand when either is NaN: NaN stays NaN, as in torch.relu.
  static T max0(T a) { return _mm256_max_ps(_mm256_setzero_ps(), a); }
  static T max(T a, T b) { return _mm256_max_ps(a, b); }
  static float hmax(T a) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
  }
  static uint32_t eq_bits(T a, T b) { return _mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_EQ_OQ)); }
  static uint32_t nan_bits(T a) { return _mm256_movemask_ps(_mm256_cmp_ps(a, a, _CMP_UNORD_Q)); }
  static T select(M m, T a, T b) { return _mm256_blendv_ps(b, a, _mm256_castsi256_ps(m.bits)); }
};

#else  // portable: four-float structs in plain loops; the compiler vectorises them for whatever it targets

struct Vec {
  static constexpr int L = 4;
  static constexpr int kMaxNV = 3;
  static constexpr int mr(int nv) { return nv == 1 ? 8 : nv == 2 ? 6 : 4; }
  struct T {
    float v[4];
  };
  using M = int64_t;  // the number of live lanes
  static M mask(int64_t n) { return n; }
  static T zero() { return T{{0.f, 0.f, 0.f, 0.f}}; }
  static T set1(float s) { return T{{s, s, s, s}}; }
  static T load(const float* p) { return T{{p[0], p[1], p[2], p[3]}}; }
  static T loadm(const float* p, M n) {
    T r = zero();
    for (int64_t i = 0; i < n; ++i) r.v[i] = p[i];
    return r;
  }
  static void store(float* p, T a) {
    for (int i = 0; i < 4; ++i) p[i] = a.v[i];
  }
  static void storem(float* p, T a, M n) {
    for (int64_t i = 0; i < n; ++i) p[i] = a.v[i];
  }
  static void stream(float* p, T a) { store(p, a); }
  static void stream_fence() {}
  static T fma(T a, T b, T c) {
    for (int i = 0; i < 4; ++i) c.v[i] += a.v[i] * b.v[i];
    return c;
  }
  static T mul(T a, T b) {
    for (int i = 0; i < 4; ++i) a.v[i] *= b.v[i];
    return a;
  }
  static T add(T a, T b) {
    for (int i = 0; i < 4; ++i) a.v[i] += b.v[i];
    return a;
  }
  static T max0(T a) {
    for (int i = 0; i < 4; ++i) a.v[i] = a.v[i] < 0.f ? 0.f : a.v[i];
    return a;
  }
  static T max(T a, T b) {
    for (int i = 0; i < 4; ++i) a.v[i] = a.v[i] > b.v[i] ? a.v[i] : b.v[i];
    return a;
  }
  static float hmax(T a) {
    float m = a.v[0];
    for (int i = 1; i < 4; ++i) m = a.v[i] > m ? a.v[i] : m;
    return m;
  }
  static uint32_t eq_bits(T a, T b) {
    uint32_t bits = 0;
    for (int i = 0; i < 4; ++i) bits |= static_cast<uint32_t>(a.v[i] == b.v[i]) << i;
    return bits;
  }
  static uint32_t nan_bits(T a) {
    uint32_t bits = 0;
    for (int i = 0; i < 4; ++i) bits |= static_cast<uint32_t>(a.v[i] != a.v[i]) << i;
    return bits;
  }
  static T select(M n, T a, T b) {
    for (int64_t i = n; i < 4; ++i) a.v[i] = b.v[i];
    return a;
  }
};

#endif

}  // namespace
}  // namespace dfanet::cpu
