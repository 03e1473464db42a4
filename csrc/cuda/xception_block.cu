// A whole Xception block as one GPU kernel, NHWC: sep1 -> sep2 -> sep3 plus the shortcut (launchers.h,
// XceptionBlockParams), the intermediate maps y1 and y2 never in global memory.
//
// A block owns a kEdge x kEdge tile of output pixels of one image and a range of output channels. sep3 needs y2 on
// the tile and a 1-pixel halo, sep2 needs y1 on the tile and a 2-pixel halo: the block computes both on those
// regions ((kEdge + 4)^2 and (kEdge + 2)^2 pixels; the halo is recomputed by the neighbouring tiles, never
// exchanged) and keeps them in shared memory, ReLU already applied (each sep conv's act_in, applied once by the
// producer instead of at every depthwise tap; relu(0) = 0 keeps the zero padding outside the map). Input channels
// stream through in chunks: the chunk's input halo ((kEdge + 3) * stride + 3 pixels square) is staged in shared
// memory with the sep1 ReLU applied (16-byte loads from a plain input whose channels allow them), its depthwise result is formed there, and the pointwise product accumulates in
// registers. Every pointwise conv is a small GEMM over (pixels) x (output channels), K in chunks of 16: threads in
// kRows x 16, a thread holding kRm pixels x kRn channels of fp32 accumulators (FMA; the same for fp16/bf16, whose
// values are widened to fp32 as they are staged). The projection shortcut is one more K range of sep3's GEMM (the
// input at the strided output pixels times the shortcut weight), so it adds into the same accumulators; the
// identity shortcut and the biases are added in registers as the output is stored.
//
// The input is read in place as the concatenation of up to kXceptionBlockMaxSources sources, each bilinearly resized
// to H x W as upsample.cu computes it (the same axis taps and blend, in fp32): DFANet's aggregation inputs are
// never written to memory. One source at H x W is a plain input.
//
// Precision: y1 and y2 are kept in fp32 for every storage type (the three-launch composition rounds them to the
// storage type in global memory); the output is rounded once.
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

// Output-channel columns of the threads of sep3 (16 threads across, kOutCols channels each) for mid widths of
// 16 * kMidCols: 48 for 16 (DFANet A's 12 -> 48 stage, B's 8 -> 32), else 96 (A's 24 -> 96; 48 -> 192 in two
// passes over the same y2, each recomputing sep3's depthwise, 9 FMAs against the pass's 96 per value). 192 in one
// pass (48 accumulators) spilled at 128 registers (ptxas, sm_80/sm_90, 2026-12).
constexpr int out_cols(int mid_cols) { return mid_cols == 1 ? 3 : 6; }

template <int kEdge>
struct Geometry {
  static constexpr int kThreads = kEdge >= 8 ? 256 : 128;
  static constexpr int kRows = kThreads / 16;  // threads down the pixels of a GEMM; 16 across its channels
  static constexpr int kEdge1 = kEdge + 4, kEdge2 = kEdge + 2;  // the y1 and y2 regions
  static constexpr int kM1 = kEdge1 * kEdge1, kM2 = kEdge2 * kEdge2, kM3 = kEdge * kEdge;
  // Pixels per thread in each GEMM (rows past M compute zeros and are never stored).
  static constexpr int kRm1 = (kM1 + kRows - 1) / kRows, kRm2 = (kM2 + kRows - 1) / kRows,
                       kRm3 = (kM3 + kRows - 1) / kRows;
  // A chunk's depthwise result, [k][pixel]: an odd pitch, so that consecutive threads (consecutive k of one pixel)
  // write to distinct banks.
  static constexpr int kPitchA = kRows * kRm1 + 1;
  __host__ __device__ static int span(int stride) { return (kEdge + 3) * stride + 3; }  // input halo edge
};

// Blocks an SM for the launch bounds: 16 warps, at most 128 registers a thread (48 accumulators at most).
template <int kEdge>
constexpr int kMinBlocks = 512 / Geometry<kEdge>::kThreads;

__host__ __device__ inline int round4(int v) { return (v + 3) / 4 * 4; }

// The block's shared memory, in floats: the input halo chunk (later y2, which needs it no more), y1, the GEMM's
// A and B chunks, the depthwise weights (sep1's per chunk, sep2's and sep3's whole) and the y1 / y2 biases.
struct Layout {
  int x, y1, a, b, dw1, dw2, dw3, b1, b2, total;
};

template <int kEdge, int kMidCols>
__host__ __device__ Layout layout(int64_t C1, int64_t C2, int stride) {
  using G = Geometry<kEdge>;
  const int c1 = static_cast<int>(C1), c2 = static_cast<int>(C2), span = G::span(stride);
  const int x_floats = span * span * input_chunk(stride), y2_floats = G::kM2 * c2;
  Layout l{};
  l.x = 0;
  l.y1 = round4(x_floats > y2_floats ? x_floats : y2_floats);
  l.a = round4(l.y1 + G::kM1 * c1);
  l.b = round4(l.a + kChunk * G::kPitchA);
  l.dw1 = round4(l.b + kChunk * (16 * out_cols(kMidCols) + 1));
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
// out_edge x out_edge pixels of a grid of `stride`, into A[k][pixel] for every pixel below `rows` (zeros past
// out_edge^2: the GEMM's padding rows). w: the kc channels' 9 taps each.
template <int kThreads>
__device__ void depthwise(const float* src, int span, int pitch, int c0, int stride, const float* w, int kc,
                          int out_edge, int rows, float* A, int pitch_a) {
  const int pixels = out_edge * out_edge;
  for (int e = threadIdx.x; e < rows * kc; e += kThreads) {
    const int m = e / kc, k = e % kc;
    float v = 0.f;
    if (m < pixels) {
      const float* taps = src + ((m / out_edge) * stride * span + (m % out_edge) * stride) * pitch + c0 + k;
      const float* wk = w + k * 9;
#pragma unroll
      for (int kh = 0; kh < 3; ++kh) {
#pragma unroll
        for (int kw = 0; kw < 3; ++kw) v = fmaf(taps[(kh * span + kw) * pitch], wk[kh * 3 + kw], v);
      }
    }
    A[k * pitch_a + m] = v;
  }
}

// B[k][j] = weight[(n0 + j) * K + k0 + k] (a Cout x K weight, rows n0 .. n1), zeros past n1: j < width, k < kc.
template <typename T, int kThreads>
__device__ void stage_weight(const void* weight, int64_t K, int64_t k0, int kc, int64_t n0, int64_t n1, int width,
                             float* B, int pitch_b) {
  const T* wt = static_cast<const T*>(weight);
  for (int e = threadIdx.x; e < width * kc; e += kThreads) {
    const int j = e / kc, k = e % kc;  // consecutive threads along k: coalesced reads of a weight row
    B[k * pitch_b + j] = n0 + j < n1 ? to_float(wt[(n0 + j) * K + k0 + k]) : 0.f;
  }
}

// acc[i][j] += sum over k < kc of A[k][ty + kRows i] * B[k][tx + 16 j].
template <int kRows, int kRm, int kRn>
__device__ __forceinline__ void multiply(float (&acc)[kRm][kRn], const float* A, int pitch_a, const float* B,
                                         int pitch_b, int kc, int tx, int ty) {
  for (int k = 0; k < kc; ++k) {
    float av[kRm], bv[kRn];
#pragma unroll
    for (int i = 0; i < kRm; ++i) av[i] = A[k * pitch_a + ty + kRows * i];
#pragma unroll
    for (int j = 0; j < kRn; ++j) bv[j] = B[k * pitch_b + tx + 16 * j];
#pragma unroll
    for (int i = 0; i < kRm; ++i) {
#pragma unroll
      for (int j = 0; j < kRn; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
  }
}

// relu(acc + bias) at the region's pixels inside the Ho x Wo map, 0 outside (the next conv's zero padding), into
// y[pixel][channel] (C channels): y1 or y2, a region of edge x edge pixels whose top-left is (r0, c0) on the map.
template <int kRows, int kRm, int kRn>
__device__ void store_mid(const float (&acc)[kRm][kRn], const float* bias, int64_t C, int edge, int64_t r0,
                          int64_t c0, const Args& a, float* y, int tx, int ty) {
#pragma unroll
  for (int i = 0; i < kRm; ++i) {
    const int m = ty + kRows * i;
    if (m >= edge * edge) continue;
    const int64_t r = r0 + m / edge, c = c0 + m % edge;
    const bool inside = r >= 0 && r < a.Ho && c >= 0 && c < a.Wo;
#pragma unroll
    for (int j = 0; j < kRn; ++j) {
      const int n = tx + 16 * j;
      if (n < C) y[m * C + n] = inside ? relu(acc[i][j] + bias[n]) : 0.f;
    }
  }
}

template <typename T, int kEdge, int kMidCols>
__global__ void __launch_bounds__(Geometry<kEdge>::kThreads, kMinBlocks<kEdge>) xception_block_kernel(const Args a) {
  using G = Geometry<kEdge>;
  constexpr int kThreads = G::kThreads, kRows = G::kRows, kOutCols = out_cols(kMidCols);
  constexpr int kPitchB = 16 * kOutCols + 1;  // odd: the staging writes (consecutive threads down a column) spread
  float* smem = static_cast<float*>(dynamic_shared_memory());
  const Layout l = layout<kEdge, kMidCols>(a.C1, a.C2, a.stride);
  float* X = smem + l.x;
  float* Y2 = smem + l.x;  // the input halo's place: sep2 stores y2 after sep1's last read of it
  float* Y1 = smem + l.y1;
  float* A = smem + l.a;
  float* B = smem + l.b;
  float* dw1 = smem + l.dw1;
  float* dw2 = smem + l.dw2;
  float* dw3 = smem + l.dw3;
  float* b1 = smem + l.b1;
  float* b2 = smem + l.b2;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
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
      float acc[G::kRm1][kMidCols] = {};
      const int64_t ih0 = (oh0 - 2) * s - 1, iw0 = (ow0 - 2) * s - 1;
      for (int64_t k0 = 0; k0 < a.C0; k0 += in_chunk) {
        const int kc = static_cast<int>(a.C0 - k0 < in_chunk ? a.C0 - k0 : in_chunk);
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
        stage_weight<T, kThreads>(a.pw[0], a.C0, k0, kc, 0, a.C1, 16 * kMidCols, B, kPitchB);
        __syncthreads();
        depthwise<kThreads>(X, span, in_chunk, 0, s, dw1, kc, G::kEdge1, kRows * G::kRm1, A, G::kPitchA);
        __syncthreads();
        multiply<kRows>(acc, A, G::kPitchA, B, kPitchB, kc, tx, ty);
      }
      // Y1's last reader, the previous tile's sep2, finished before this tile's first barrier.
      store_mid<kRows>(acc, b1, a.C1, G::kEdge1, oh0 - 2, ow0 - 2, a, Y1, tx, ty);
    }

    // ---- sep2: y2 on the tile + 1 halo, from y1, mid channels in chunks.
    {
      float acc[G::kRm2][kMidCols] = {};
      for (int k0 = 0; k0 < c1; k0 += kChunk) {
        const int kc = c1 - k0 < kChunk ? c1 - k0 : kChunk;
        __syncthreads();  // y1 is complete; the previous chunk's reads of A and B are done
        stage_weight<T, kThreads>(a.pw[1], a.C1, k0, kc, 0, a.C2, 16 * kMidCols, B, kPitchB);
        depthwise<kThreads>(Y1, G::kEdge1, c1, k0, 1, dw2 + k0 * 9, kc, G::kEdge2, kRows * G::kRm2, A, G::kPitchA);
        __syncthreads();
        multiply<kRows>(acc, A, G::kPitchA, B, kPitchB, kc, tx, ty);
      }
      // sep1's last read of X came before the barriers above.
      store_mid<kRows>(acc, b2, a.C2, G::kEdge2, oh0 - 1, ow0 - 1, a, Y2, tx, ty);
    }

    // ---- sep3 + shortcut: the output tile, output channels [n0, n1) in passes of 16 * kOutCols.
    for (int64_t t0 = n0; t0 < n1; t0 += 16 * kOutCols) {
      const int64_t t1 = t0 + 16 * kOutCols < n1 ? t0 + 16 * kOutCols : n1;
      float acc[G::kRm3][kOutCols] = {};
      for (int k0 = 0; k0 < c2; k0 += kChunk) {
        const int kc = c2 - k0 < kChunk ? c2 - k0 : kChunk;
        __syncthreads();  // y2 is complete; the previous chunk's reads of A and B are done
        stage_weight<T, kThreads>(a.pw[2], a.C2, k0, kc, t0, t1, 16 * kOutCols, B, kPitchB);
        depthwise<kThreads>(Y2, G::kEdge2, c2, k0, 1, dw3 + k0 * 9, kc, kEdge, kRows * G::kRm3, A, G::kPitchA);
        __syncthreads();
        multiply<kRows>(acc, A, G::kPitchA, B, kPitchB, kc, tx, ty);
      }
      // The projection shortcut: K continues over the input channels, A the input at the strided output pixels.
      if (a.sc_w) {
        for (int64_t k0 = 0; k0 < a.C0; k0 += kChunk) {
          const int kc = static_cast<int>(a.C0 - k0 < kChunk ? a.C0 - k0 : kChunk);
          __syncthreads();
          stage_weight<T, kThreads>(a.sc_w, a.C0, k0, kc, t0, t1, 16 * kOutCols, B, kPitchB);
          for (int e = threadIdx.x; e < kRows * G::kRm3 * kc; e += kThreads) {
            const int m = e / kc, k = e % kc;
            const int64_t oh = oh0 + m / kEdge, ow = ow0 + m % kEdge;
            const bool inside = m < G::kM3 && oh < a.Ho && ow < a.Wo;
            A[k * G::kPitchA + m] = inside ? input_value<T>(a, n, oh * s, ow * s, k0 + k) : 0.f;
          }
          __syncthreads();
          multiply<kRows>(acc, A, G::kPitchA, B, kPitchB, kc, tx, ty);
        }
      }
      // acc + pw3 bias + shortcut bias (or the input itself), stored; consecutive tx on consecutive channels.
      const T* pb3 = static_cast<const T*>(a.pb[2]);
      const T* sc_b = static_cast<const T*>(a.sc_b);
      T* out = static_cast<T*>(a.out);
#pragma unroll
      for (int i = 0; i < G::kRm3; ++i) {
        const int m = ty + kRows * i;
        const int64_t oh = oh0 + m / kEdge, ow = ow0 + m % kEdge;
        if (m >= G::kM3 || oh >= a.Ho || ow >= a.Wo) continue;
        const int64_t o = ((n * a.Ho + oh) * a.Wo + ow) * a.C3;
#pragma unroll
        for (int j = 0; j < kOutCols; ++j) {
          const int64_t c = t0 + tx + 16 * j;
          if (c >= t1) continue;
          float v = acc[i][j];
          if (pb3) v += to_float(pb3[c]);
          if (!a.sc_w) {
            v += input_value<T>(a, n, oh, ow, c);
          } else if (sc_b) {
            v += to_float(sc_b[c]);
          }
          out[o + c] = from_float<T>(v);
        }
      }
    }
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

template <typename T, int kEdge, int kMidCols>
cudaError_t launch_tiles(const Args& a, cudaStream_t stream) {
  const auto kernel = xception_block_kernel<T, kEdge, kMidCols>;
  const size_t bytes = layout<kEdge, kMidCols>(a.C1, a.C2, a.stride).total * sizeof(float);
  if (bytes > 48 * 1024) {  // past the default limit of dynamic shared memory
    const cudaError_t err = cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel),
                                                 cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
    if (err != cudaSuccess) return err;
  }
  const unsigned blocks = grid_size(a.N * a.tiles_h * a.tiles_w * a.splits, 1);
  xception_block_kernel<T, kEdge, kMidCols><<<blocks, Geometry<kEdge>::kThreads, bytes, stream>>>(a);
  return cudaGetLastError();
}

template <typename T, int kEdge>
cudaError_t launch_edge(const Args& a, cudaStream_t stream) {
  const int64_t mid = a.C1 > a.C2 ? a.C1 : a.C2;
  switch (ceil_div(mid, 16)) {
    case 1:
      return launch_tiles<T, kEdge, 1>(a, stream);
    case 2:
      return launch_tiles<T, kEdge, 2>(a, stream);
    case 3:
      return launch_tiles<T, kEdge, 3>(a, stream);
    default:
      return launch_tiles<T, kEdge, 4>(a, stream);
  }
}

}  // namespace

cudaError_t launch_xception_block(const XceptionBlockParams& p, cudaStream_t stream) {
  if (!xception_block_supported(p.C1, p.C2, p.num_sources) || p.num_sources < 1) return cudaErrorInvalidValue;
  int device = 0, sms = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
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
    return pl.edge == 8 ? launch_edge<T, 8>(a, stream) : launch_edge<T, 4>(a, stream);
  });
}

}  // namespace dfanet::cuda
