// Fused depthwise-separable convolution, NHWC fp32, written once against `Vec` (kernels/simd.h) and compiled once
// per instruction-set path by csrc/cpu/isa_<path>.cpp. No torch headers here (see csrc/cpu/isa.h for why).
//
// Per output row, per tile of tile_w output pixels:
//   1. depthwise 3x3 (+ bias, ReLUs) of the tile into `buf` [pixel][Cp], vectorised over channels, the 9 tap
//      weights of a channel vector held in registers while the pixels stream by;
//   2. pointwise 1x1 as a register-blocked GEMM buf[tile x C] @ W[C x Cout]: an MR-pixel x NV-vector block of
//      output accumulators stays in registers over the whole C reduction (one weight-row load of NV vectors and MR
//      broadcast-FMAs per input channel), then bias (the accumulators' start value), ReLU and the residual are
//      applied in registers and the block is stored once.
// The depthwise tile never leaves L1/L2: it is written and read back while hot.
// The pointwise GEMM (pointwise()) also runs the 1x1 convs of kernels/conv.h and the Xception block's shortcut.
#pragma once

#include <cstdint>

#include "../isa.h"

namespace dfanet::cpu {
namespace {

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }

// Walks a byte range one cache line at a time, `per_step` lines per step(), prefetching it into L1. The depthwise
// loop steps it once per interior pixel, so the input rows that the *next* output row adds (one row at stride 1,
// two at stride 2) arrive while this row computes. Without it the first pass over a new row waited on L3/DRAM at
// every pixel: half the depthwise samples sat on that one load (perf annotate, 48 -> 12 ch at 128 x 256).
struct Prefetcher {
  const char* p = nullptr;
  const char* end = nullptr;
  int64_t per_step = 0;
  void step() {
    for (int64_t i = 0; i < per_step && p < end; ++i, p += 64) __builtin_prefetch(p, 0, 3);
  }
};

// ---------------------------------------------------------------------------------------------------------------
// Depthwise 3x3, padding 1, one channel vector [c0, c0 + L) of output pixels [ow0, ow0 + n) of one output row.
// rows[kh]: input row oh * stride - 1 + kh (pixel stride C, already offset by c0), or nullptr outside the image.
// w: tap weights (w + t * ldw, t = kh * 3 + kw), bias: nullptr or the bias vector; out: buf + c0, pixel stride ldo.
// ---------------------------------------------------------------------------------------------------------------
template <class V, bool kActIn, bool kActMid, bool kMasked>
void depthwise_vector(const float* const rows[3], const float* w, int64_t ldw, const float* bias, int64_t W,
                      int64_t C, int64_t stride, int64_t ow0, int64_t n, typename V::M m, float* out, int64_t ldo,
                      Prefetcher& pf) {
  using T = typename V::T;
  T wt[9];
  for (int t = 0; t < 9; ++t) wt[t] = V::load(w + t * ldw);  // packed and zero padded: full loads are in bounds
  const T b = bias ? V::load(bias) : V::zero();
  auto ld = [&](const float* p) {
    T v;
    if constexpr (kMasked) {
      v = V::loadm(p, m);
    } else {
      v = V::load(p);
    }
    if constexpr (kActIn) v = V::max0(v);
    return v;
  };
  auto finish = [&](T acc, int64_t p) {
    if constexpr (kActMid) acc = V::max0(acc);
    V::store(out + p * ldo, acc);
  };
  // Generic pixel: any tap may fall outside the image.
  auto edge = [&](int64_t p) {
    const int64_t iw0 = (ow0 + p) * stride - 1;
    T acc = b;
    for (int kh = 0; kh < 3; ++kh) {
      if (!rows[kh]) continue;
      for (int kw = 0; kw < 3; ++kw) {
        const int64_t iw = iw0 + kw;
        if (iw >= 0 && iw < W) acc = V::fma(ld(rows[kh] + iw * C), wt[kh * 3 + kw], acc);
      }
    }
    finish(acc, p);
  };
  // Interior pixels (all 9 taps inside): ow >= 1 and ow * stride + 1 <= W - 1.
  int64_t lo = n, hi = n;
  if (rows[0] && rows[1] && rows[2] && W >= 2) {
    lo = imin(n, imax(0, 1 - ow0));
    hi = imax(lo, imin(n, (W - 2) / stride + 1 - ow0));
  }
  for (int64_t p = 0; p < lo; ++p) edge(p);
  const float* r0 = rows[0];
  const float* r1 = rows[1];
  const float* r2 = rows[2];
  if (lo < hi) {
    // Interior pixels, the 3 x 3 window sliding along the row in registers: a column (three rows) of input vectors
    // is loaded (and ReLU'd) once and reused by the next output pixels, one new column per pixel at stride 1 and
    // two at stride 2, instead of nine loads per pixel. (48 -> 1 ch at 128 x 256, AVX-512, 1 thread: depthwise
    // 0.60 -> 0.38 ms; the nine-load version spent as many cycles on the ReLUs as on the FMAs.)
    // The nine products are written out in both loops on purpose: as one shared lambda the AVX-512 code is the
    // same, but GCC 12 compiles the portable path differently and it ran 4-9% slower (2026-11-27, 1 thread).
    int64_t off = ((ow0 + lo) * stride - 1) * C;
    T a0 = ld(r0 + off), b0 = ld(r1 + off), c0 = ld(r2 + off);
    if (stride == 1) {
      off += C;
      T a1 = ld(r0 + off), b1 = ld(r1 + off), c1 = ld(r2 + off);
      for (int64_t p = lo; p < hi; ++p) {
        off += C;
        const T a2 = ld(r0 + off), b2 = ld(r1 + off), c2 = ld(r2 + off);
        pf.step();
        T s = V::fma(a0, wt[0], b);
        T t = V::mul(c0, wt[6]);
        s = V::fma(a1, wt[1], s);
        t = V::fma(c1, wt[7], t);
        s = V::fma(a2, wt[2], s);
        t = V::fma(c2, wt[8], t);
        s = V::fma(b0, wt[3], s);
        s = V::fma(b1, wt[4], s);
        s = V::fma(b2, wt[5], s);
        finish(V::add(s, t), p);
        a0 = a1, b0 = b1, c0 = c1;
        a1 = a2, b1 = b2, c1 = c2;
      }
    } else {
      for (int64_t p = lo; p < hi; ++p) {
        const T a1 = ld(r0 + off + C), b1 = ld(r1 + off + C), c1 = ld(r2 + off + C);
        off += 2 * C;
        const T a2 = ld(r0 + off), b2 = ld(r1 + off), c2 = ld(r2 + off);
        pf.step();
        T s = V::fma(a0, wt[0], b);
        T t = V::mul(c0, wt[6]);
        s = V::fma(a1, wt[1], s);
        t = V::fma(c1, wt[7], t);
        s = V::fma(a2, wt[2], s);
        t = V::fma(c2, wt[8], t);
        s = V::fma(b0, wt[3], s);
        s = V::fma(b1, wt[4], s);
        s = V::fma(b2, wt[5], s);
        finish(V::add(s, t), p);
        a0 = a2, b0 = b2, c0 = c2;
      }
    }
  }
  for (int64_t p = hi; p < n; ++p) edge(p);
}

template <class V, bool kActIn, bool kActMid>
void depthwise_tile_t(const float* const rows[3], const float* w, int64_t ldw, const float* bias, int64_t W, int64_t C,
                      int64_t stride, int64_t ow0, int64_t n, float* buf, int64_t ldb, Prefetcher& pf) {
  for (int64_t c0 = 0; c0 < C; c0 += V::L) {
    const float* r[3] = {rows[0] ? rows[0] + c0 : nullptr, rows[1] ? rows[1] + c0 : nullptr,
                         rows[2] ? rows[2] + c0 : nullptr};
    const float* bc = bias ? bias + c0 : nullptr;
    if (C - c0 >= V::L) {
      depthwise_vector<V, kActIn, kActMid, false>(r, w + c0, ldw, bc, W, C, stride, ow0, n, V::mask(V::L), buf + c0,
                                                  ldb, pf);
    } else {
      depthwise_vector<V, kActIn, kActMid, true>(r, w + c0, ldw, bc, W, C, stride, ow0, n, V::mask(C - c0), buf + c0,
                                                 ldb, pf);
    }
  }
}

// The depthwise result of output pixels [ow0, ow0 + n) of one row into buf[p][ldb] (channels [0, C) written).
template <class V>
void depthwise_tile(const float* const rows[3], const float* w, int64_t ldw, const float* bias, int64_t W, int64_t C,
                    int64_t stride, bool act_in, bool act_mid, int64_t ow0, int64_t n, float* buf, int64_t ldb,
                    Prefetcher& pf) {
  if (act_in) {
    if (act_mid) {
      depthwise_tile_t<V, true, true>(rows, w, ldw, bias, W, C, stride, ow0, n, buf, ldb, pf);
    } else {
      depthwise_tile_t<V, true, false>(rows, w, ldw, bias, W, C, stride, ow0, n, buf, ldb, pf);
    }
  } else if (act_mid) {
    depthwise_tile_t<V, false, true>(rows, w, ldw, bias, W, C, stride, ow0, n, buf, ldb, pf);
  } else {
    depthwise_tile_t<V, false, false>(rows, w, ldw, bias, W, C, stride, ow0, n, buf, ldb, pf);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Pointwise micro-kernel: out[i][j] = act(bias[j] + sum_k a[i][k] * b[k][j]) (+ res[i][j]) for i < m (<= MR) and
// j < ncols (<= NV * L). a: MR rows of stride lda, readable even past m; b: rows of stride ldb, NV vectors readable
// (zero padded); bias: NV vectors readable. res/out: rows of stride ldo, only [i < m][j < ncols] touched.
// ---------------------------------------------------------------------------------------------------------------

// On the SIMD paths every loop over MR or NV below is unrolled by force (DFANET_UNROLL): the accumulators live in
// registers only if every acc[i][j] is a compile-time index. GCC 12 unrolled some of these loops by its own measure
// and left others as loops, which made acc[][] a stack array, written after the bias, read before the k loop,
// written again after it and read by the epilogue: half of this kernel's samples at K = 12 (perf annotate,
// 12 -> 48 ch). Check with objdump after a change: no zmm/ymm moves to or from (%rsp) in any pointwise_micro. Not on
// the portable path, whose four-float structs GCC already keeps in registers: there forcing it halved the speed.
#if defined(DFANET_SIMD_AVX512) || defined(DFANET_SIMD_AVX2)
#define DFANET_UNROLL _Pragma("GCC unroll 16")
#else
#define DFANET_UNROLL
#endif

template <class V, int MR, int NV, int LD>
void pointwise_micro(const float* a, int64_t lda_rt, int64_t m, int64_t K, const float* b, int64_t ldb,
                     const float* bias, bool act_out, const float* res, float* out, int64_t ldo, int64_t ncols) {
  using T = typename V::T;
  // With the row stride of `a` a compile-time constant, the MR broadcasts of one k address a single moving pointer
  // plus constant offsets (vfmadd231ps off(%reg){1to16}) instead of MR row pointers, which do not fit in the 16
  // general registers and were spilled (48 -> 12 ch, AVX-512, one row of 64 px in L1: 1.29 -> 0.80 us).
  const int64_t lda = LD > 0 ? LD : lda_rt;
  T acc[MR][NV];
  DFANET_UNROLL
  for (int j = 0; j < NV; ++j) {
    const T bj = V::load(bias + j * V::L);
    DFANET_UNROLL
    for (int i = 0; i < MR; ++i) acc[i][j] = bj;
  }
  for (int64_t k = 0; k < K; ++k) {
    T bk[NV];
    DFANET_UNROLL
    for (int j = 0; j < NV; ++j) bk[j] = V::load(b + k * ldb + j * V::L);
    DFANET_UNROLL
    for (int i = 0; i < MR; ++i) {
      const T ai = V::set1(a[i * lda + k]);
      DFANET_UNROLL
      for (int j = 0; j < NV; ++j) acc[i][j] = V::fma(ai, bk[j], acc[i][j]);
    }
  }
  // No early exits in these loops (a `break` also made acc[][] a stack array).
  DFANET_UNROLL
  for (int i = 0; i < MR; ++i) {
    DFANET_UNROLL
    for (int j = 0; j < NV; ++j) {
      const int64_t cols = ncols - j * V::L;
      if (i >= m || cols <= 0) continue;
      T v = acc[i][j];
      if (act_out) v = V::max0(v);
      if (cols >= V::L) {
        if (res) v = V::add(v, V::load(res + i * ldo + j * V::L));
        V::store(out + i * ldo + j * V::L, v);
      } else {
        const typename V::M mk = V::mask(cols);
        if (res) v = V::add(v, V::loadm(res + i * ldo + j * V::L, mk));
        V::storem(out + i * ldo + j * V::L, v, mk);
      }
    }
  }
}

#if defined(DFANET_SIMD_AVX2)
// AVX2, Cout = 12 (DFANet's enc2 width): two output pixels' 24 channels fill three vectors exactly, where one pixel
// per row of accumulators (pointwise_micro, NV = 2) leaves a third of the second vector idle. Pixels p, p + 1:
//   acc0 = p[0..7] += a[p][k] * w[k][0..7]
//   acc1 = p[8..11] | q[0..3] += (a[p][k] x4 | a[q][k] x4) * (w[k][8..11] | w[k][0..3])
//   acc2 = q[4..11] += a[q][k] * w[k][4..11]
// 9 FMAs per k for 6 pixels instead of 12, the middle weight vector one lane permute of the other two, the mixed
// broadcast one blend. The fused forward at 512 x 1024: 33.8 -> 33.0 ms at 2 threads, 57.3 -> 55.6 ms at 1 (AMD
// EPYC, A/B). `out` / `res`: the pixels' 12 channels contiguous (row stride 12); n even; b: rows of ldb floats,
// w[k][0..11] at b + k * ldb.
template <int LD>
void pointwise_pairs12(const float* a, int64_t lda_rt, int64_t n, int64_t K, const float* b, int64_t ldb,
                       const float* bias, bool act_out, const float* res, float* out) {
  constexpr int kPairs = 3;
  const int64_t lda = LD > 0 ? LD : lda_rt;
  const __m256 b0 = _mm256_loadu_ps(bias), b2 = _mm256_loadu_ps(bias + 4);
  const __m256 b1 = _mm256_permute2f128_ps(b2, b0, 0x21);
  for (int64_t p0 = 0; p0 < n; p0 += 2 * kPairs) {
    const int pairs = static_cast<int>(imin(kPairs, (n - p0) / 2));
    __m256 acc[kPairs][3];
    DFANET_UNROLL
    for (int i = 0; i < kPairs; ++i) acc[i][0] = b0, acc[i][1] = b1, acc[i][2] = b2;
    const float* ap = a + p0 * lda;
    for (int64_t k = 0; k < K; ++k) {
      const __m256 w0 = _mm256_loadu_ps(b + k * ldb), w2 = _mm256_loadu_ps(b + k * ldb + 4);
      const __m256 w1 = _mm256_permute2f128_ps(w2, w0, 0x21);
      DFANET_UNROLL
      for (int i = 0; i < kPairs; ++i) {
        const __m256 x = _mm256_broadcast_ss(ap + (2 * i) * lda + k);
        const __m256 y = _mm256_broadcast_ss(ap + (2 * i + 1) * lda + k);
        acc[i][0] = _mm256_fmadd_ps(x, w0, acc[i][0]);
        acc[i][1] = _mm256_fmadd_ps(_mm256_blend_ps(x, y, 0xF0), w1, acc[i][1]);
        acc[i][2] = _mm256_fmadd_ps(y, w2, acc[i][2]);
      }
    }
    DFANET_UNROLL
    for (int i = 0; i < kPairs; ++i) {
      if (i >= pairs) continue;
      DFANET_UNROLL
      for (int j = 0; j < 3; ++j) {
        const int64_t off = (p0 + 2 * i) * 12 + j * 8;
        __m256 v = act_out ? _mm256_max_ps(_mm256_setzero_ps(), acc[i][j]) : acc[i][j];
        if (res) v = _mm256_add_ps(v, _mm256_loadu_ps(res + off));
        _mm256_storeu_ps(out + off, v);
      }
    }
  }
}
#endif
#undef DFANET_UNROLL

template <class V, int NV, int LD>
void pointwise_panel(const float* a, int64_t lda, int64_t n, int64_t K, const float* b, int64_t ldb,
                     const float* bias, bool act_out, const float* res, float* out, int64_t ldo, int64_t ncols) {
  constexpr int MR = V::mr(NV);
  for (int64_t i0 = 0; i0 < n; i0 += MR) {
    pointwise_micro<V, MR, NV, LD>(a + i0 * lda, lda, imin(MR, n - i0), K, b, ldb, bias, act_out,
                               res ? res + i0 * ldo : nullptr, out + i0 * ldo, ldo, ncols);
  }
}

// How many vectors of output channels one panel takes, given `left` vectors still to do: as wide as the register
// file allows, preferring a width that divides the rest evenly (96 channels = 6 zmm -> 3 + 3, not 4 + 2).
template <class V>
int panel_vectors(int64_t left) {
  constexpr int kMax = V::kMaxNV;
  if (left <= kMax) return static_cast<int>(left);
  for (int nv = kMax; nv >= 2; --nv) {
    if (left % nv == 0) return nv;
  }
  return kMax;
}

// out[n][Cout] (row stride ldo) = act(a[n][K] @ b[K][Cout] + bias) (+ res): every panel of output channels, for
// every MR-pixel group. a may be read up to row n + MR - 1.
template <class V, int LD>
void pointwise(const float* a, int64_t lda, int64_t n, int64_t K, const float* b, int64_t ldb, const float* bias,
               bool act_out, const float* res, float* out, int64_t Cout) {
#if defined(DFANET_SIMD_AVX2)
  if (Cout == 12 && n >= 2) {  // pixel pairs, then the odd one out (if any) below
    const int64_t even = n / 2 * 2;
    pointwise_pairs12<LD>(a, lda, even, K, b, ldb, bias, act_out, res, out);
    if (even == n) return;
    a += even * lda, res = res ? res + even * Cout : nullptr, out += even * Cout, n -= even;
  }
#endif
  const int64_t nvec = (Cout + V::L - 1) / V::L;
  for (int64_t v = 0; v < nvec;) {
    const int nv = panel_vectors<V>(nvec - v);
    const int64_t c0 = v * V::L;
    const int64_t ncols = imin(nv * V::L, Cout - c0);
    const float* r = res ? res + c0 : nullptr;
    switch (nv) {
      case 1:
        pointwise_panel<V, 1, LD>(a, lda, n, K, b + c0, ldb, bias + c0, act_out, r, out + c0, Cout, ncols);
        break;
      case 2:
        pointwise_panel<V, 2, LD>(a, lda, n, K, b + c0, ldb, bias + c0, act_out, r, out + c0, Cout, ncols);
        break;
      case 3:
        pointwise_panel<V, 3, LD>(a, lda, n, K, b + c0, ldb, bias + c0, act_out, r, out + c0, Cout, ncols);
        break;
      default:
        if constexpr (V::kMaxNV >= 4) {
          pointwise_panel<V, (V::kMaxNV >= 4 ? 4 : 1), LD>(a, lda, n, K, b + c0, ldb, bias + c0, act_out, r, out + c0,
                                                        Cout, ncols);
        }
        break;
    }
    v += nv;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Output rows [begin, end) of the flattened N * Ho rows.
// ---------------------------------------------------------------------------------------------------------------
// ---------------------------------------------------------------------------------------------------------------
// Whole rows.
// ---------------------------------------------------------------------------------------------------------------

// One depthwise-separable conv's packed weights and flags (layouts as in DwsepArgs).
struct SepConv {
  const float* dw_w;
  const float* dw_b;
  const float* pw_w;
  const float* pw_b;
  int64_t C, Cout;
  bool act_in, act_mid, act_out;
};

// Prefetches the input rows that output row oh + 1 adds to those of row oh: (oh * s + 1, (oh + 1) * s + 1], within
// the image (row_len floats per row), spread over the depthwise steps of row oh.
template <class V>
Prefetcher next_rows_prefetcher(const float* image, int64_t H, int64_t row_len, int64_t oh, int64_t Ho,
                                int64_t stride, int64_t Wo, int64_t C) {
  Prefetcher pf;
  if (oh + 1 < Ho) {
    const int64_t first = oh * stride + 2, last = imin(H - 1, (oh + 1) * stride + 1);
    if (first <= last) {
      pf.p = reinterpret_cast<const char*>(image + first * row_len);
      pf.end = reinterpret_cast<const char*>(image + (last + 1) * row_len);
      const int64_t lines = (pf.end - pf.p + 63) / 64, steps = imax(1, Wo * ((C + V::L - 1) / V::L));
      pf.per_step = (lines + steps - 1) / steps;
    }
  }
  return pf;
}

// One output row (Wo x Cout, pixel stride Cout) of a depthwise-separable conv from the three input rows `rows`
// (nullptr outside the image; W x C each), through depthwise tiles of tile_w pixels in `buf`.
// LD: the tile's row stride as a compile-time constant (tile_stride in isa.h), or 0 for a run-time one.
template <class V, int LD>
void sep_row_t(const SepConv& s, const float* const rows[3], int64_t W, int64_t stride, int64_t Wo, int64_t tile_w,
               const float* res, float* out, float* buf, Prefetcher& pf) {
  const int64_t Cp = round_up(s.C, kPad), CoutP = round_up(s.Cout, kPad);
  const int64_t ldt = tile_stride(s.C);
  for (int64_t ow0 = 0; ow0 < Wo; ow0 += tile_w) {
    const int64_t cnt = imin(tile_w, Wo - ow0);
    depthwise_tile<V>(rows, s.dw_w, Cp, s.dw_b, W, s.C, stride, s.act_in, s.act_mid, ow0, cnt, buf, ldt, pf);
    pointwise<V, LD>(buf, ldt, cnt, s.C, s.pw_w, CoutP, s.pw_b, s.act_out, res ? res + ow0 * s.Cout : nullptr,
                     out + ow0 * s.Cout, s.Cout);
  }
}

template <class V>
void sep_row(const SepConv& s, const float* const rows[3], int64_t W, int64_t stride, int64_t Wo, int64_t tile_w,
             const float* res, float* out, float* buf, Prefetcher& pf) {
  switch (tile_stride(s.C)) {
    case 64:
      return sep_row_t<V, 64>(s, rows, W, stride, Wo, tile_w, res, out, buf, pf);
    case 304:
      return sep_row_t<V, 304>(s, rows, W, stride, Wo, tile_w, res, out, buf, pf);
    default:
      return sep_row_t<V, 0>(s, rows, W, stride, Wo, tile_w, res, out, buf, pf);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Entry points (see isa.h).
// ---------------------------------------------------------------------------------------------------------------

template <class V>
void dwsep_rows_impl(const DwsepArgs& a, int64_t begin, int64_t end, float* buf) {
  const SepConv s{a.dw_w, a.dw_b, a.pw_w, a.pw_b, a.C, a.Cout, a.act_in, a.act_mid, a.act_out};
  const int64_t row_in = a.W * a.C;
  for (int64_t r = begin; r < end; ++r) {
    const int64_t n = r / a.Ho, oh = r % a.Ho;
    const float* image = a.x + n * a.H * row_in;
    const float* rows[3];
    for (int kh = 0; kh < 3; ++kh) {
      const int64_t ih = oh * a.stride - 1 + kh;
      rows[kh] = (ih >= 0 && ih < a.H) ? image + ih * row_in : nullptr;
    }
    Prefetcher pf = next_rows_prefetcher<V>(image, a.H, row_in, oh, a.Ho, a.stride, a.Wo, a.C);
    const int64_t px = r * a.Wo;
    sep_row<V>(s, rows, a.W, a.stride, a.Wo, a.tile_w, a.residual ? a.residual + px * a.Cout : nullptr,
               a.out + px * a.Cout, buf, pf);
  }
}

}  // namespace
}  // namespace dfanet::cpu
