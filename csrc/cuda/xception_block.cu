// A whole Xception block as one GPU kernel, NHWC: sep1 -> sep2 -> sep3 plus the shortcut (launchers.h,
// XceptionBlockParams), the intermediate maps y1 and y2 never in global memory.
//
// A block owns a kEdge x kEdge tile of output pixels of one image and a range of output channels. sep3 needs y2 on
// the tile and a 1-pixel halo, sep2 needs y1 on the tile and a 2-pixel halo: the block computes both on those
// regions ((kEdge + 4)^2 and (kEdge + 2)^2 pixels; the halo is recomputed by the neighbouring tiles, never
// exchanged) and keeps them in shared memory, ReLU already applied (each sep conv's act_in, applied once by the
// producer instead of at every depthwise tap; relu(0) = 0 keeps the zero padding outside the map). Input channels
// stream through in chunks: the chunk's input halo ((kEdge + 3) * stride + 3 pixels square) is staged in shared
// memory with the sep1 ReLU applied (16-byte loads from a plain input whose channels allow them), its depthwise
// result is formed there, and the pointwise product accumulates in registers. Every pointwise conv is a small GEMM
// over (pixels) x (output channels), K in chunks of up to 16, in one of two implementations:
// - FmaGemm (fp32, and fp16/bf16 before sm_80): CUDA-core FMAs, threads in kRows x 16, each holding pixels x
//   channels of fp32 accumulators; fp16/bf16 values are widened to fp32 as they are staged.
// - WmmaGemm (fp16/bf16 on sm_80+): tensor cores, WMMA 16x16x16 with fp32 accumulation as in dwsep_conv.cu. The
//   chunk's depthwise result is rounded to the storage type as it is staged, K padded to 16 with zeros (channel
//   counts such as 8, 12 and 24; stride 2's 8-channel input chunks), the pixels to a multiple of 16; the 16 x 16
//   accumulator tiles are dealt round the warps and read back through each warp's scratch (accumulator_row).
// Both hand their results to the same epilogues. The projection shortcut is one more K range of sep3's GEMM (the
// input at the strided output pixels times the shortcut weight), so it adds into the same accumulators; the
// identity shortcut and the biases are added in registers as the output is stored.
//
// The input is read in place as the concatenation of up to kXceptionBlockMaxSources sources, each bilinearly resized
// to H x W as upsample.cu computes it (the same axis taps and blend, in fp32): DFANet's aggregation inputs are
// never written to memory. One source at H x W is a plain input.
//
// Precision: y1 and y2 are kept in fp32 for every storage type (the three-launch composition rounds them to the
// storage type in global memory); the output is rounded once. On tensor cores each depthwise result feeding a
// product, and the shortcut's input where it is resized, is rounded once to the storage type too (as dwsep_conv's
// tensor-core path rounds its depthwise result).
#include <type_traits>

#include "common.cuh"
#include "launchers.h"

namespace dfanet::cuda {
namespace {

template <typename T>
constexpr int kVec = 16 / static_cast<int>(sizeof(T));  // elements per 16-byte access

// K of a GEMM chunk: the mid and output channels of sep2, sep3 and the shortcut stream through 16 at a time.
constexpr int kChunk = 16;
// Input channels per staged halo chunk: 16 at stride 1 ((kEdge + 6)^2 pixels), 8 at stride 2 ((2 kEdge + 9)^2
// pixels, 2.5x as many, the same shared memory within 30%).
__host__ __device__ inline int input_chunk(int stride) { return stride == 1 ? 16 : 8; }

// Output-channel columns of 16 in a sep3 pass (on the FMA path 16 threads across, kOutCols channels each; on tensor
// cores kOutCols accumulator tiles across) for mid widths of 16 * kMidCols: 48 for 16 (DFANet A's 12 -> 48 stage,
// B's 8 -> 32), else 96 (A's 24 -> 96; 48 -> 192 in two passes over the same y2, each recomputing sep3's depthwise,
// 9 FMAs against the pass's 96 per value). 192 in one pass (48 accumulators) spilled at 128 registers on the FMA
// path (ptxas, sm_80/sm_90, 2026-12).
constexpr int out_cols(int mid_cols) { return mid_cols == 1 ? 3 : 6; }

template <int kEdge>
struct Geometry {
  static constexpr int kThreads = kEdge >= 8 ? 256 : 128;
  static constexpr int kEdge1 = kEdge + 4, kEdge2 = kEdge + 2;  // the y1 and y2 regions
  static constexpr int kM1 = kEdge1 * kEdge1, kM2 = kEdge2 * kEdge2, kM3 = kEdge * kEdge;  // the GEMMs' pixels
  __host__ __device__ static int span(int stride) { return (kEdge + 3) * stride + 3; }  // input halo edge
};

// Blocks an SM for the launch bounds: 16 warps, at most 128 registers a thread (48 accumulators at most).
template <int kEdge>
constexpr int kMinBlocks = 512 / Geometry<kEdge>::kThreads;

// The pointwise GEMMs, (pixels) x (output channels) x K in chunks of up to kChunk, in one of two implementations
// with one interface: a chunk's A (pixel m, k) and B (output channel n, k) go to shared memory through set_a and
// set_b, multiply adds their product to an Acc of kM pixels x 16 kCols channels (zero when constructed), and
// for_each hands each of the Acc's values to f(m, n, v), m < kM. K is padded to k_padded(kc), the GEMM's rows to
// padded(kM): the padding is zeros. G: the Geometry, kOutCols: sep3's columns, the widest B.

// CUDA-core FMAs (fp32; fp16/bf16 before sm_80): A [k][pixel] and B [k][channel] in fp32, threads in kRows x 16, a
// thread accumulating pixels ty + kRows i and channels tx + 16 j.
template <typename G, int kOutCols>
struct FmaGemm {
  static constexpr int kRows = G::kThreads / 16;
  __host__ __device__ static constexpr int padded(int m) { return (m + kRows - 1) / kRows * kRows; }
  __device__ static int k_padded(int kc) { return kc; }
  // Odd pitches, so that the staging writes (consecutive threads on consecutive k, so down a column) spread over
  // the banks.
  static constexpr int kPitchA = padded(G::kM1) + 1, kPitchB = 16 * kOutCols + 1;
  static constexpr int kAFloats = kChunk * kPitchA, kBFloats = kChunk * kPitchB, kScratchFloats = 0;

  template <int kM, int kCols>
  struct Acc {
    float v[padded(kM) / kRows][kCols] = {};
  };

  float* A;
  float* B;
  int tx, ty;

  __device__ FmaGemm(float* a, float* b, float*) : A(a), B(b), tx(threadIdx.x % 16), ty(threadIdx.x / 16) {}
  __device__ void set_a(int m, int k, float v) const { A[k * kPitchA + m] = v; }
  template <typename T>
  __device__ void set_b(int n, int k, T v) const {
    B[k * kPitchB + n] = to_float(v);
  }

  template <int kM, int kCols>
  __device__ __forceinline__ void multiply(Acc<kM, kCols>& acc, int kc) const {
    constexpr int kRm = padded(kM) / kRows;
    for (int k = 0; k < kc; ++k) {
      float av[kRm], bv[kCols];
#pragma unroll
      for (int i = 0; i < kRm; ++i) av[i] = A[k * kPitchA + ty + kRows * i];
#pragma unroll
      for (int j = 0; j < kCols; ++j) bv[j] = B[k * kPitchB + tx + 16 * j];
#pragma unroll
      for (int i = 0; i < kRm; ++i) {
#pragma unroll
        for (int j = 0; j < kCols; ++j) acc.v[i][j] = fmaf(av[i], bv[j], acc.v[i][j]);
      }
    }
  }

  template <int kM, int kCols, typename F>
  __device__ __forceinline__ void for_each(const Acc<kM, kCols>& acc, F&& f) const {
#pragma unroll
    for (int i = 0; i < padded(kM) / kRows; ++i) {
      const int m = ty + kRows * i;
      if (m >= kM) continue;
#pragma unroll
      for (int j = 0; j < kCols; ++j) f(m, tx + 16 * j, acc.v[i][j]);  // consecutive tx: consecutive channels
    }
  }
};

// `v`, hidden from the optimizer: what is computed from it is recomputed where it is used, not hoisted out of the
// tile and chunk loops, where the offsets of each accumulator tile of each GEMM would hold registers for the whole
// kernel (spills in the tensor-core kernels with 3 or 4 mid columns; ptxas, sm_80 and sm_90, 2026-12).
__device__ __forceinline__ int unhoisted(int v) {
  asm volatile("" : "+r"(v));
  return v;
}

// Tensor cores (fp16/bf16 on sm_80+; WMMA 16x16x16, fp32 accumulation, as dwsep_conv.cu's wmma kernel): A
// [pixel][k] and B [channel][k] in the storage type (the depthwise results rounded to it), every chunk K = 16. An
// Acc is padded(kM) / 16 x kCols accumulator tiles, tile t on warp t % kWarps.
template <typename T, typename G, int kOutCols>
struct WmmaGemm {
  static constexpr int kWarps = G::kThreads / 32;
  // Row pitch in elements: a multiple of 8 halves as WMMA requires, keeping every 16th row 32-byte aligned; the +8
  // also shifts banks from row to row.
  static constexpr int kLd = kChunk + 8;
  __host__ __device__ static constexpr int padded(int m) { return (m + 15) / 16 * 16; }
  __device__ static int k_padded(int) { return kChunk; }
  static constexpr int kAFloats = padded(G::kM1) * kLd / 2, kBFloats = 16 * kOutCols * kLd / 2;
  static constexpr int kScratchFloats = kWarps * 16 * kWmmaScratchPitch;  // accumulator_row's, a warp each

  template <int kM, int kCols>
  struct Acc {
    static constexpr int kTiles = padded(kM) / 16 * kCols, kPerWarp = (kTiles + kWarps - 1) / kWarps;
    nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> tile[kPerWarp];
    __device__ Acc() {
#pragma unroll
      for (int i = 0; i < kPerWarp; ++i) nvcuda::wmma::fill_fragment(tile[i], 0.f);
    }
  };

  T* A;
  T* B;
  float* scratch;
  int warp;

  __device__ WmmaGemm(float* a, float* b, float* s)
      : A(reinterpret_cast<T*>(a)), B(reinterpret_cast<T*>(b)),
        scratch(s + (threadIdx.x / 32) * 16 * kWmmaScratchPitch), warp(threadIdx.x / 32) {}
  __device__ void set_a(int m, int k, float v) const { A[m * kLd + k] = from_float<T>(v); }
  __device__ void set_b(int n, int k, T v) const { B[n * kLd + k] = v; }

  template <int kM, int kCols>
  __device__ __forceinline__ void multiply(Acc<kM, kCols>& acc, int) const {
    using namespace nvcuda;
#pragma unroll
    for (int i = 0; i < Acc<kM, kCols>::kPerWarp; ++i) {
      const int t = unhoisted(warp) + kWarps * i;
      if (t < Acc<kM, kCols>::kTiles) {  // the same for the whole warp
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b;
        wmma::load_matrix_sync(a, A + (t / kCols) * 16 * kLd, kLd);
        wmma::load_matrix_sync(b, B + (t % kCols) * 16 * kLd, kLd);
        wmma::mma_sync(acc.tile[i], a, b, acc.tile[i]);
      }
    }
  }

  template <int kM, int kCols, typename F>
  __device__ __forceinline__ void for_each(const Acc<kM, kCols>& acc, F&& f) const {
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int i = 0; i < Acc<kM, kCols>::kPerWarp; ++i) {
      const int t = unhoisted(warp) + kWarps * i;
      if (t < Acc<kM, kCols>::kTiles) {
        float v[8];
        accumulator_row(acc.tile[i], scratch, v);
        const int m = (t / kCols) * 16 + lane / 2, n = (t % kCols) * 16 + (lane % 2) * 8;
#pragma unroll
        for (int q = 0; q < 8; ++q) {
          if (m < kM) f(m, n + q, v[q]);
        }
      }
    }
  }
};

// The GEMM implementation of a kernel instantiation.
template <typename T, int kEdge, int kMidCols, bool kTensorCores>
using GemmOf = std::conditional_t<kTensorCores, WmmaGemm<T, Geometry<kEdge>, out_cols(kMidCols)>,
                                  FmaGemm<Geometry<kEdge>, out_cols(kMidCols)>>;

// Offsets 32 bytes apart: WMMA's pointers.
__host__ __device__ inline int round8(int v) { return (v + 7) / 8 * 8; }

// The block's shared memory, in floats: the input halo chunk (later y2, which needs it no more), y1, the GEMM's
// A and B chunks and (tensor cores) the accumulators' scratch, the depthwise weights (sep1's per chunk, sep2's and
// sep3's whole) and the y1 / y2 biases.
struct Layout {
  int x, y1, a, b, scratch, dw1, dw2, dw3, b1, b2, total;
};

template <typename Gemm, int kEdge>
__host__ __device__ Layout layout(int64_t C1, int64_t C2, int stride) {
  using G = Geometry<kEdge>;
  const int c1 = static_cast<int>(C1), c2 = static_cast<int>(C2), span = G::span(stride);
  const int x_floats = span * span * input_chunk(stride), y2_floats = G::kM2 * c2;
  Layout l{};
  l.x = 0;
  l.y1 = round8(x_floats > y2_floats ? x_floats : y2_floats);
  l.a = round8(l.y1 + G::kM1 * c1);
  l.b = round8(l.a + Gemm::kAFloats);
  l.scratch = round8(l.b + Gemm::kBFloats);
  l.dw1 = round8(l.scratch + Gemm::kScratchFloats);
  l.dw2 = l.dw1 + kChunk * 9;
  l.dw3 = l.dw2 + c1 * 9;
  l.b1 = l.dw3 + c2 * 9;
  l.b2 = l.b1 + c1;
  l.total = l.b2 + c2;
  return l;
}

struct Source {
  const void* data;  // N x H x W x C
  int64_t C, H, W;
  int64_t offset;          // its first channel in the concatenation
  float scale_h, scale_w;  // in / out, as upsample.cu
  bool copy;               // already at the block's H x W
};

struct Args {
  Source src[kXceptionBlockMaxSources];
  int count;
  const void* dw[3];
  const void* pw[3];
  const void* pb[3];
  const void* sc_w;
  const void* sc_b;
  void* out;
  int64_t N, H, W, C0, C1, C2, C3, Ho, Wo;
  int stride;
  bool vec_x;  // a plain input read 16 bytes at a time (one source, C0 a multiple of 16 bytes, aligned)
  // The tiles: image, tile row, tile column, output-channel split (fastest), split_width channels each.
  int64_t tiles_h, tiles_w, splits, split_width;
};

// Channel c of the (virtual) input at pixel (ih, iw) of image n, inside the H x W map: the source that holds c,
// read as is or bilinearly resized (upsample.cu's taps and blend).
template <typename T>
__device__ float input_value(const Args& a, int64_t n, int64_t ih, int64_t iw, int64_t c) {
  if (a.count == 1) {  // a plain input (the launcher's one source is at H x W): no source search, no taps
    return to_float(static_cast<const T*>(a.src[0].data)[((n * a.H + ih) * a.W + iw) * a.C0 + c]);
  }
  int s = 0;
  while (s + 1 < a.count && c >= a.src[s + 1].offset) ++s;
  const Source& src = a.src[s];
  const T* plane = static_cast<const T*>(src.data) + n * src.H * src.W * src.C + (c - src.offset);
  if (src.copy) return to_float(plane[(ih * src.W + iw) * src.C]);
  const AxisTap<int64_t> th = axis_tap(ih, src.H, src.scale_h), tw = axis_tap(iw, src.W, src.scale_w);
  const T* row0 = plane + th.i0 * src.W * src.C;
  const T* row1 = plane + th.i1 * src.W * src.C;
  const float v00 = to_float(row0[tw.i0 * src.C]), v01 = to_float(row0[tw.i1 * src.C]);
  const float v10 = to_float(row1[tw.i0 * src.C]), v11 = to_float(row1[tw.i1 * src.C]);
  return th.w0 * (tw.w0 * v00 + tw.w1 * v01) + th.w1 * (tw.w0 * v10 + tw.w1 * v11);
}

// The depthwise 3x3 of channels [c0, c0 + kc) of `src` (a span x span square of pixels, `pitch` floats each) at the
// out_edge x out_edge pixels of a grid of `stride`, into the GEMM's A for every pixel below `rows` and k below kpad
// (zeros past out_edge^2 and kc: the GEMM's padding). w: the kc channels' 9 taps each.
template <int kThreads, typename Gemm>
__device__ void depthwise(const float* src, int span, int pitch, int c0, int stride, const float* w, int kc, int kpad,
                          int out_edge, int rows, const Gemm& gemm) {
  const int pixels = out_edge * out_edge;
  for (int e = threadIdx.x; e < rows * kpad; e += kThreads) {
    const int m = e / kpad, k = e % kpad;
    float v = 0.f;
    if (m < pixels && k < kc) {
      const float* taps = src + ((m / out_edge) * stride * span + (m % out_edge) * stride) * pitch + c0 + k;
      const float* wk = w + k * 9;
#pragma unroll
      for (int kh = 0; kh < 3; ++kh) {
#pragma unroll
        for (int kw = 0; kw < 3; ++kw) v = fmaf(taps[(kh * span + kw) * pitch], wk[kh * 3 + kw], v);
      }
    }
    gemm.set_a(m, k, v);
  }
}

// The GEMM's B chunk: (j, k) = weight[(n0 + j) * K + k0 + k] (a Cout x K weight, rows n0 .. n1) for j < width and
// k < kpad, zeros past n1 and kc.
template <typename T, int kThreads, typename Gemm>
__device__ void stage_weight(const void* weight, int64_t K, int64_t k0, int kc, int kpad, int64_t n0, int64_t n1,
                             int width, const Gemm& gemm) {
  const T* wt = static_cast<const T*>(weight);
  for (int e = threadIdx.x; e < width * kpad; e += kThreads) {
    const int j = e / kpad, k = e % kpad;  // consecutive threads along k: coalesced reads of a weight row
    gemm.set_b(j, k, n0 + j < n1 && k < kc ? wt[(n0 + j) * K + k0 + k] : from_float<T>(0.f));
  }
}

// relu(v + bias) at pixel m of the region inside the Ho x Wo map, 0 outside (the next conv's zero padding), into
// y[m][n] (C channels; none past C): y1 or y2, a region of edge x edge pixels whose top-left is (r0, c0) on the map.
__device__ __forceinline__ void store_mid(float v, int m, int n, const float* bias, int C, int edge, int64_t r0,
                                          int64_t c0, const Args& a, float* y) {
  if (n >= C) return;
  const int64_t r = r0 + m / edge, c = c0 + m % edge;
  const bool inside = r >= 0 && r < a.Ho && c >= 0 && c < a.Wo;
  y[m * C + n] = inside ? relu(v + bias[n]) : 0.f;
}

// The kernel's body, with the GEMMs of `Gemm`.
template <typename T, int kEdge, int kMidCols, typename Gemm>
__device__ __forceinline__ void block_tiles(const Args& a) {
  using G = Geometry<kEdge>;
  constexpr int kThreads = G::kThreads, kOutCols = out_cols(kMidCols);
  float* smem = static_cast<float*>(dynamic_shared_memory());
  const Layout l = layout<Gemm, kEdge>(a.C1, a.C2, a.stride);
  const Gemm gemm(smem + l.a, smem + l.b, smem + l.scratch);
  float* X = smem + l.x;
  float* Y2 = smem + l.x;  // the input halo's place: sep2 stores y2 after sep1's last read of it
  float* Y1 = smem + l.y1;
  float* dw1 = smem + l.dw1;
  float* dw2 = smem + l.dw2;
  float* dw3 = smem + l.dw3;
  float* b1 = smem + l.b1;
  float* b2 = smem + l.b2;
  const int s = a.stride, span = G::span(s), in_chunk = input_chunk(s);
  const int c1 = static_cast<int>(a.C1), c2 = static_cast<int>(a.C2);

  // sep2's and sep3's depthwise weights and the y1 / y2 biases, once per block (published by sep1's first barrier).
  for (int e = threadIdx.x; e < (c1 + c2) * 10; e += kThreads) {
    if (e < c1 * 9) {
      dw2[e] = to_float(static_cast<const T*>(a.dw[1])[e]);
    } else if (e < (c1 + c2) * 9) {
      dw3[e - c1 * 9] = to_float(static_cast<const T*>(a.dw[2])[e - c1 * 9]);
    } else {
      const int c = e - (c1 + c2) * 9;
      const void* bias = c < c1 ? a.pb[0] : a.pb[1];
      const int ci = c < c1 ? c : c - c1;
      (c < c1 ? b1 : b2)[ci] = bias ? to_float(static_cast<const T*>(bias)[ci]) : 0.f;
    }
  }

  const int64_t tiles = a.N * a.tiles_h * a.tiles_w * a.splits;
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    int64_t t = tile;
    const int64_t split = t % a.splits;
    t /= a.splits;
    const int64_t ow0 = (t % a.tiles_w) * kEdge;
    t /= a.tiles_w;
    const int64_t oh0 = (t % a.tiles_h) * kEdge, n = t / a.tiles_h;
    const int64_t n0 = split * a.split_width, n1 = n0 + a.split_width < a.C3 ? n0 + a.split_width : a.C3;

    // ---- sep1: y1 on the tile + 2 halo, from the input halo, input channels in chunks.
    {
      typename Gemm::template Acc<G::kM1, kMidCols> acc;
      const int64_t ih0 = (oh0 - 2) * s - 1, iw0 = (ow0 - 2) * s - 1;
      for (int64_t k0 = 0; k0 < a.C0; k0 += in_chunk) {
        const int kc = static_cast<int>(a.C0 - k0 < in_chunk ? a.C0 - k0 : in_chunk), kpad = Gemm::k_padded(kc);
        __syncthreads();  // the previous chunk's (or tile's) reads of X (y2), A, B and dw1 are done
        if (a.vec_x) {  // kVec<T> channels a thread: kc, a whole chunk or C0's last part, is a multiple of it
          const int units = kc / kVec<T>;
          const T* x = static_cast<const T*>(a.src[0].data) + n * a.H * a.W * a.C0 + k0;
          for (int e = threadIdx.x; e < span * span * units; e += kThreads) {
            const int hp = e / units, k = (e % units) * kVec<T>;
            const int64_t ih = ih0 + hp / span, iw = iw0 + hp % span;
            const bool inside = ih >= 0 && ih < a.H && iw >= 0 && iw < a.W;
            const uint4 raw = inside ? *reinterpret_cast<const uint4*>(x + (ih * a.W + iw) * a.C0 + k) : uint4{};
            const T* v = reinterpret_cast<const T*>(&raw);
#pragma unroll
            for (int q = 0; q < kVec<T>; ++q) X[hp * in_chunk + k + q] = relu(to_float(v[q]));
          }
        } else {
          for (int e = threadIdx.x; e < span * span * kc; e += kThreads) {
            const int hp = e / kc, k = e % kc;
            const int64_t ih = ih0 + hp / span, iw = iw0 + hp % span;
            const bool inside = ih >= 0 && ih < a.H && iw >= 0 && iw < a.W;
            X[hp * in_chunk + k] = inside ? relu(input_value<T>(a, n, ih, iw, k0 + k)) : 0.f;
          }
        }
        for (int e = threadIdx.x; e < kc * 9; e += kThreads) {
          dw1[e] = to_float(static_cast<const T*>(a.dw[0])[k0 * 9 + e]);
        }
        stage_weight<T, kThreads>(a.pw[0], a.C0, k0, kc, kpad, 0, a.C1, 16 * kMidCols, gemm);
        __syncthreads();
        depthwise<kThreads>(X, span, in_chunk, 0, s, dw1, kc, kpad, G::kEdge1, Gemm::padded(G::kM1), gemm);
        __syncthreads();
        gemm.multiply(acc, kpad);
      }
      // Y1's last reader, the previous tile's sep2, finished before this tile's first barrier.
      gemm.for_each(acc,
                    [&](int m, int n, float v) { store_mid(v, m, n, b1, c1, G::kEdge1, oh0 - 2, ow0 - 2, a, Y1); });
    }

    // ---- sep2: y2 on the tile + 1 halo, from y1, mid channels in chunks.
    {
      typename Gemm::template Acc<G::kM2, kMidCols> acc;
      for (int k0 = 0; k0 < c1; k0 += kChunk) {
        const int kc = c1 - k0 < kChunk ? c1 - k0 : kChunk, kpad = Gemm::k_padded(kc);
        __syncthreads();  // y1 is complete; the previous chunk's reads of A and B are done
        stage_weight<T, kThreads>(a.pw[1], a.C1, k0, kc, kpad, 0, a.C2, 16 * kMidCols, gemm);
        depthwise<kThreads>(Y1, G::kEdge1, c1, k0, 1, dw2 + k0 * 9, kc, kpad, G::kEdge2, Gemm::padded(G::kM2), gemm);
        __syncthreads();
        gemm.multiply(acc, kpad);
      }
      // sep1's last read of X came before the barriers above.
      gemm.for_each(acc,
                    [&](int m, int n, float v) { store_mid(v, m, n, b2, c2, G::kEdge2, oh0 - 1, ow0 - 1, a, Y2); });
    }

    // ---- sep3 + shortcut: the output tile, output channels [n0, n1) in passes of 16 * kOutCols.
    for (int64_t t0 = n0; t0 < n1; t0 += 16 * kOutCols) {
      const int64_t t1 = t0 + 16 * kOutCols < n1 ? t0 + 16 * kOutCols : n1;
      typename Gemm::template Acc<G::kM3, kOutCols> acc;
      for (int k0 = 0; k0 < c2; k0 += kChunk) {
        const int kc = c2 - k0 < kChunk ? c2 - k0 : kChunk, kpad = Gemm::k_padded(kc);
        __syncthreads();  // y2 is complete; the previous chunk's reads of A and B are done
        stage_weight<T, kThreads>(a.pw[2], a.C2, k0, kc, kpad, t0, t1, 16 * kOutCols, gemm);
        depthwise<kThreads>(Y2, G::kEdge2, c2, k0, 1, dw3 + k0 * 9, kc, kpad, kEdge, Gemm::padded(G::kM3), gemm);
        __syncthreads();
        gemm.multiply(acc, kpad);
      }
      // The projection shortcut: K continues over the input channels, A the input at the strided output pixels.
      if (a.sc_w) {
        for (int64_t k0 = 0; k0 < a.C0; k0 += kChunk) {
          const int kc = static_cast<int>(a.C0 - k0 < kChunk ? a.C0 - k0 : kChunk), kpad = Gemm::k_padded(kc);
          __syncthreads();
          stage_weight<T, kThreads>(a.sc_w, a.C0, k0, kc, kpad, t0, t1, 16 * kOutCols, gemm);
          for (int e = threadIdx.x; e < Gemm::padded(G::kM3) * kpad; e += kThreads) {
            const int m = e / kpad, k = e % kpad;
            const int64_t oh = oh0 + m / kEdge, ow = ow0 + m % kEdge;
            const bool inside = m < G::kM3 && k < kc && oh < a.Ho && ow < a.Wo;
            gemm.set_a(m, k, inside ? input_value<T>(a, n, oh * s, ow * s, k0 + k) : 0.f);
          }
          __syncthreads();
          gemm.multiply(acc, kpad);
        }
      }
      // acc + pw3 bias + shortcut bias (or the input itself), stored.
      const T* pb3 = static_cast<const T*>(a.pb[2]);
      const T* sc_b = static_cast<const T*>(a.sc_b);
      T* out = static_cast<T*>(a.out);
      gemm.for_each(acc, [&](int m, int j, float v) {
        const int64_t oh = oh0 + m / kEdge, ow = ow0 + m % kEdge, c = t0 + j;
        if (oh >= a.Ho || ow >= a.Wo || c >= t1) return;
        if (pb3) v += to_float(pb3[c]);
        if (!a.sc_w) {
          v += input_value<T>(a, n, oh, ow, c);
        } else if (sc_b) {
          v += to_float(sc_b[c]);
        }
        out[((n * a.Ho + oh) * a.Wo + ow) * a.C3 + c] = from_float<T>(v);
      });
    }
  }
}

template <typename T, int kEdge, int kMidCols, bool kTensorCores>
__global__ void __launch_bounds__(Geometry<kEdge>::kThreads, kMinBlocks<kEdge>) xception_block_kernel(const Args a) {
  if constexpr (kTensorCores) {
#if __CUDA_ARCH__ >= 800  // bf16 WMMA needs sm_80; the launcher sends older GPUs to the FMA path
    block_tiles<T, kEdge, kMidCols, GemmOf<T, kEdge, kMidCols, true>>(a);
#endif
  } else {
    block_tiles<T, kEdge, kMidCols, GemmOf<T, kEdge, kMidCols, false>>(a);
  }
}

// The tiles of a launch. 8 x 8 output pixels where the map gives every SM a block of them, else 4 x 4 (y1 is
// computed on 4x the tile's pixels then, instead of 2.25x); then, while the grid has fewer blocks than SMs, the
// output channels split over more blocks, at least kMinSplitWidth each. Each split recomputes y1 and y2, which on
// 4 x 4 tiles cost about 5x sep3 per output pixel (DFANet's 4x wider outputs): splitting shortens a block's
// critical path little, so it stops early. DFANet A at 1024 x 1024, batch 1: 8 x 8 tiles down to 128 x 128 maps
// (256+ blocks), 4 x 4 below; 32 x 32 maps with 192 channels in 3 splits (192 blocks), 16 x 16 in 4 (64);
// the table is in docs/ops.md ("The CUDA xception_block kernel").
constexpr int64_t kMinSplitWidth = 48;

struct Plan {
  int edge;
  int64_t tiles_h, tiles_w, splits, split_width;
  int64_t blocks(int64_t N) const { return N * tiles_h * tiles_w * splits; }
};

Plan plan(const XceptionBlockParams& p, int sms) {
  Plan pl{8, ceil_div(p.Ho, 8), ceil_div(p.Wo, 8), 1, p.C3};
  if (pl.blocks(p.N) < sms) pl = Plan{4, ceil_div(p.Ho, 4), ceil_div(p.Wo, 4), 1, p.C3};
  // Widths a multiple of 16 (the threads across), so a count of parts may repeat the previous width: count on.
  for (int64_t parts = 2; pl.blocks(p.N) < sms; ++parts) {
    const int64_t width = ceil_div(ceil_div(p.C3, parts), 16) * 16;
    if (width < kMinSplitWidth) break;
    pl.split_width = width;
    pl.splits = ceil_div(p.C3, width);
  }
  return pl;
}

template <typename T, int kEdge, int kMidCols, bool kTensorCores>
cudaError_t launch_tiles(const Args& a, cudaStream_t stream) {
  const auto kernel = xception_block_kernel<T, kEdge, kMidCols, kTensorCores>;
  const size_t bytes =
      layout<GemmOf<T, kEdge, kMidCols, kTensorCores>, kEdge>(a.C1, a.C2, a.stride).total * sizeof(float);
  if (bytes > 48 * 1024) {  // past the default limit of dynamic shared memory
    const cudaError_t err = cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel),
                                                 cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
    if (err != cudaSuccess) return err;
  }
  const unsigned blocks = grid_size(a.N * a.tiles_h * a.tiles_w * a.splits, 1);
  xception_block_kernel<T, kEdge, kMidCols, kTensorCores><<<blocks, Geometry<kEdge>::kThreads, bytes, stream>>>(a);
  return cudaGetLastError();
}

template <typename T, int kEdge, bool kTensorCores>
cudaError_t launch_edge(const Args& a, cudaStream_t stream) {
  const int64_t mid = a.C1 > a.C2 ? a.C1 : a.C2;
  switch (ceil_div(mid, 16)) {
    case 1:
      return launch_tiles<T, kEdge, 1, kTensorCores>(a, stream);
    case 2:
      return launch_tiles<T, kEdge, 2, kTensorCores>(a, stream);
    case 3:
      return launch_tiles<T, kEdge, 3, kTensorCores>(a, stream);
    default:
      return launch_tiles<T, kEdge, 4, kTensorCores>(a, stream);
  }
}

// fp32, and fp16/bf16 before sm_80, take the FMA path; fp16/bf16 on sm_80+ take tensor cores.
template <typename T>
cudaError_t launch_typed(const Args& a, int edge, bool sm80, cudaStream_t stream) {
  if constexpr (!std::is_same_v<T, float>) {
    if (sm80) return edge == 8 ? launch_edge<T, 8, true>(a, stream) : launch_edge<T, 4, true>(a, stream);
  }
  return edge == 8 ? launch_edge<T, 8, false>(a, stream) : launch_edge<T, 4, false>(a, stream);
}

}  // namespace

cudaError_t launch_xception_block(const XceptionBlockParams& p, cudaStream_t stream) {
  if (!xception_block_supported(p.C1, p.C2, p.num_sources) || p.num_sources < 1) return cudaErrorInvalidValue;
  int device = 0, sms = 0, major = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  if (err != cudaSuccess) return err;
  const Plan pl = plan(p, sms);
  Args a{};
  int64_t offset = 0;
  for (int64_t i = 0; i < p.num_sources; ++i) {
    const UpsampleSource& s = p.sources[i];
    a.src[i] = Source{s.data, s.C, s.H, s.W, offset, static_cast<float>(s.H) / static_cast<float>(p.H),
                      static_cast<float>(s.W) / static_cast<float>(p.W), s.H == p.H && s.W == p.W};
    offset += s.C;
  }
  a.count = static_cast<int>(p.num_sources);
  for (int i = 0; i < 3; ++i) {
    a.dw[i] = p.dw_weight[i];
    a.pw[i] = p.pw_weight[i];
    a.pb[i] = p.pw_bias[i];
  }
  a.sc_w = p.sc_weight;
  a.sc_b = p.sc_bias;
  a.out = p.out;
  a.N = p.N, a.H = p.H, a.W = p.W, a.C0 = p.C0, a.C1 = p.C1, a.C2 = p.C2, a.C3 = p.C3, a.Ho = p.Ho, a.Wo = p.Wo;
  a.stride = p.stride;
  a.tiles_h = pl.tiles_h, a.tiles_w = pl.tiles_w, a.splits = pl.splits, a.split_width = pl.split_width;
  return dispatch_dtype(p.dtype, [&](auto type) {
    using T = typename decltype(type)::type;
    a.vec_x = a.count == 1 && p.C0 % kVec<T> == 0 && reinterpret_cast<uintptr_t>(p.sources[0].data) % 16 == 0;
    return launch_typed<T>(a, pl.edge, major >= 8, stream);
  });
}

}  // namespace dfanet::cuda
