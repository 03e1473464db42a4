// DFANet's decoder head as one GPU kernel, NHWC (launchers.h, DecoderHeadParams), after the Triton kernel
// (dfanet_kernels/triton/decoder.py): the D-channel maps at the output's size, which the composed decoder wrote and
// read back (~17 launches: a cuDNN conv and a ReLU per map, two upsample_add, the fuse conv, the classifier), never
// reach memory.
//
// A block owns a kEdge x kEdge tile of output pixels of one image, with all D decoder channels and all K classes;
// warp w holds tile row w, lane l channels l + 32 j (kCols = D / 32 rounded up to 1, 2 or 4). The ReLU comes before
// the resize, so each map's relu(conv) is computed once on the source pixels the tile's bilinear taps read (its
// "set", kept in shared memory in fp32), then blended per output pixel with upsample.cu's taps and arithmetic:
// - a map at the output's size: the tile's own pixels, copied (no blend: a weight of 0 times inf would give NaN);
// - per axis, the range of source rows from the tile's first lower tap to its last upper one where that range is
//   at most kMaxAxis long (maps up to about twice the output's size: 8, 5 and 4 x 4 source pixels for DFANet's
//   1/2-, 1/4- and 1/8-size maps, instead of 4 taps of 64 pixels each);
// - else (maps much larger than the output) each tile row's two taps, 2 kEdge entries.
// Each relu(conv) is a small GEMM, (set pixels) x D x C: C in chunks of kChunk staged in shared memory (the
// pixels' channels as [channel][pixel], the weights as [channel][d]) and multiplied on CUDA cores, a thread
// accumulating kPx consecutive pixels x kCols channels in fp32 (two 16-byte broadcast loads and kCols loads a
// channel for 8 kCols FMAs). The low-level sum stays in registers, goes through shared memory as the fuse GEMM's
// input (same GEMM, K = D), the merged map likewise into the classifier (32 kCols classes a pass); each logit is
// written once.
//
// Precision: fp32 throughout for every storage type (loads widened to fp32, fp32 FMAs, the reduced maps, the sums
// and the merged map fp32); the logits are rounded once. Not timed (no GPU where it was written).
#include <cmath>

#include "common.cuh"
#include "launchers.h"

namespace dfanet::cuda {
namespace {

constexpr int kEdge = 8;
constexpr int kThreads = 32 * kEdge;  // a warp per tile row
constexpr int kPixels = kEdge * kEdge;
constexpr int kPx = kEdge;  // pixels per thread in a GEMM pass: a tile row's worth, so a pass is kPixels pixels
constexpr int kChunk = 32;  // channels of a staged K chunk
constexpr int kMaxAxis = 2 * kEdge;  // source rows (or columns) of a map one tile reads at most
// Row pitch of the [channel][pixel] A operand in floats: a multiple of 4 (16-byte loads); the +4 puts the 8
// channels x 4 pixels of a staging warp on 32 different banks.
constexpr int kPitchA = kPixels + 4;
constexpr int kMaxMaps = static_cast<int>(2 * kDecoderHeadMaxMaps);

// How one axis of a map's set is laid out (the launcher's choice per map, plan_axis).
enum class AxisMode : int { kCopy, kRange, kTaps };

struct Map {
  const void* data;  // N x H x W x C
  const void* weight;
  const void* bias;
  int64_t C, H, W;
  float scale_h, scale_w;  // in / out, as upsample.cu
  AxisMode mode_h, mode_w;
};

struct Args {
  Map maps[kMaxMaps];  // the low maps, then the high ones
  int num_low, num_maps;
  const void* fuse_w;
  const void* fuse_b;
  const void* cls_w;
  const void* cls_b;
  void* out;
  int64_t N, H, W, tiles_h, tiles_w;
  int D, K;
  int set_pixels;  // the largest set of any map: the rows of the reduced-map buffer
};

// One axis of a map's set within a tile: `count` entries, entry e being source index first + e (copy, range) or
// tap e % 2 of tile row e / 2 (taps). Worked out by every thread (the count, uniform over the block) and, entry by
// entry and row by row, by the threads that fill the tile's tables (set_tables).
template <typename Index>
struct AxisSet {
  Index o0, in;
  float scale;
  AxisMode mode;
  Index first;
  int count;

  __device__ AxisSet(Index o0_, int rows, Index in_, float scale_, AxisMode mode_)
      : o0(o0_), in(in_), scale(scale_), mode(mode_), first(0), count(2 * rows) {
    if (mode == AxisMode::kCopy) {
      first = o0, count = rows;
    } else if (mode == AxisMode::kRange) {
      // The taps are monotone in the output index: the first row's lower tap to the last row's upper one.
      first = axis_tap(o0, in, scale).i0;
      count = static_cast<int>(axis_tap(o0 + rows - 1, in, scale).i1 - first) + 1;
    }
  }

  __device__ Index source(int e) const {
    if (mode != AxisMode::kTaps) return first + e;
    const AxisTap<Index> t = axis_tap(o0 + e / 2, in, scale);
    return e % 2 ? t.i1 : t.i0;
  }

  // Tile row r's taps as (entry, entry, weight, weight).
  __device__ AxisTap<int> tap(int r) const {
    if (mode == AxisMode::kCopy) return AxisTap<int>{r, r, 1.f, 0.f};
    const AxisTap<Index> t = axis_tap(o0 + r, in, scale);
    if (mode == AxisMode::kTaps) return AxisTap<int>{2 * r, 2 * r + 1, t.w0, t.w1};
    return AxisTap<int>{static_cast<int>(t.i0 - first), static_cast<int>(t.i1 - first), t.w0, t.w1};
  }
};

// The block's shared memory, in floats: the current map's tables (the pass's pixel offsets, kPixels Index values;
// each axis's set entries as source indices, kMaxAxis Index values; each axis's tile rows as taps), the A operand
// ([channel][pixel], kChunk channels of a map, or the D channels of the low sum / merged map), the B operand
// ([channel][column], a chunk of weights) and the reduced map ([set pixel][32 kCols]). Index values get 64 bits.
template <int kCols>
struct Layout {
  static constexpr int kWidth = 32 * kCols, kPitchB = kWidth + 1;  // odd: staging writes down a column
  static constexpr int kOffsets = 0, kSources = 2 * kPixels, kTaps = kSources + 2 * 2 * kMaxAxis;
  static constexpr int kA = kTaps + 2 * kEdge * 4;
  static constexpr int kB = kA + (kChunk > kWidth ? kChunk : kWidth) * kPitchA;
  static constexpr int kR = kB + kChunk * kPitchB;
  static int floats(int set_pixels) { return kR + set_pixels * kWidth; }
};

// acc[i][j] += sum over k < kc of A[k][p0 + i] * B[k][lane + 32 j]: the thread's kPx pixels from p0 x its kCols
// channels.
template <int kCols>
__device__ __forceinline__ void multiply(const float* A, const float* B, int kc, int p0, float (&acc)[kPx][kCols]) {
  const int lane = threadIdx.x % 32;
  for (int k = 0; k < kc; ++k) {
    const float4 a0 = *reinterpret_cast<const float4*>(A + k * kPitchA + p0);
    const float4 a1 = *reinterpret_cast<const float4*>(A + k * kPitchA + p0 + 4);
    const float a[kPx] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
    float b[kCols];
#pragma unroll
    for (int j = 0; j < kCols; ++j) b[j] = B[k * Layout<kCols>::kPitchB + lane + 32 * j];
#pragma unroll
    for (int i = 0; i < kPx; ++i) {
#pragma unroll
      for (int j = 0; j < kCols; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
  }
}

// B[k][n] = w[(n0 + n) * ld + c0 + k] for the chunk's k < kChunk and columns n < 32 kCols: zero past `rows`
// (D or K) and past `cols` (the weight's columns). Consecutive threads on consecutive k: the global reads run along
// a weight row, the shared writes down a column of the odd pitch.
template <typename T, int kCols>
__device__ void stage_weights(float* B, const void* w, int ld, int n0, int rows, int c0, int cols) {
  const T* weight = static_cast<const T*>(w);
  for (int e = threadIdx.x; e < kChunk * 32 * kCols; e += kThreads) {
    const int k = e % kChunk, n = e / kChunk;
    B[k * Layout<kCols>::kPitchB + n] =
        n0 + n < rows && c0 + k < cols ? to_float(weight[static_cast<int64_t>(n0 + n) * ld + c0 + k]) : 0.f;
  }
}

template <typename T>
__device__ __forceinline__ float bias_of(const void* b, int d, int rows) {
  return b != nullptr && d < rows ? to_float(static_cast<const T*>(b)[d]) : 0.f;
}

// The thread's kPx x kCols values of the tile (row warp, columns 0..kPx), written to A as [channel][pixel]: the
// input of the fuse and classifier GEMMs.
template <int kCols>
__device__ void store_transposed(float* A, const float (&v)[kPx][kCols], int D) {
  const int lane = threadIdx.x % 32, p0 = (threadIdx.x / 32) * kPx;
#pragma unroll
  for (int j = 0; j < kCols; ++j) {
    const int d = lane + 32 * j;
    if (d < D) {
#pragma unroll
      for (int i = 0; i < kPx; ++i) A[d * kPitchA + p0 + i] = v[i][j];
    }
  }
}

// acc = the product of A (the tile's D channels, [channel][pixel]) and the weight's rows n0 .. n0 + 32 kCols
// (K x D or D x D), K in chunks of kChunk. Starts and ends on a barrier.
template <typename T, int kCols>
__device__ void tile_gemm(const float* A, float* B, const void* w, int n0, int rows, int D,
                          float (&acc)[kPx][kCols]) {
  const int p0 = (threadIdx.x / 32) * kPx;
#pragma unroll
  for (int i = 0; i < kPx; ++i) {
#pragma unroll
    for (int j = 0; j < kCols; ++j) acc[i][j] = 0.f;
  }
  for (int c0 = 0; c0 < D; c0 += kChunk) {
    __syncthreads();  // the previous chunk's B read
    stage_weights<T, kCols>(B, w, D, n0, rows, c0, D);
    __syncthreads();
    multiply<kCols>(A + c0 * kPitchA, B, D - c0 < kChunk ? D - c0 : kChunk, p0, acc);
  }
  __syncthreads();
}

// The tile's tables of one map (see Layout): the set entries' source indices and the rows' and columns' taps,
// a thread an entry.
template <typename Index>
__device__ void set_tables(const AxisSet<Index>& sh, const AxisSet<Index>& sw, int rows, int cols, Index* sources,
                           AxisTap<int>* taps) {
  const int t = threadIdx.x;
  if (t < kMaxAxis) {
    if (t < sh.count) sources[t] = sh.source(t);
  } else if (t < 2 * kMaxAxis) {
    if (t - kMaxAxis < sw.count) sources[t] = sw.source(t - kMaxAxis);
  } else if (t < 2 * kMaxAxis + kEdge) {
    const int r = t - 2 * kMaxAxis;
    taps[r] = sh.tap(r < rows ? r : rows - 1);  // rows past the output's edge repeat its last one
  } else if (t < 2 * kMaxAxis + 2 * kEdge) {
    const int c = t - 2 * kMaxAxis - kEdge;
    taps[kEdge + c] = sw.tap(c < cols ? c : cols - 1);
  }
}

// Adds (or, for the first map of a sum, sets) map m's resized relu(conv) at the thread's kPx pixels x kCols
// channels of the tile (tile_h0, tile_w0) of image n, `rows` x `cols` of it inside the output.
template <typename T, typename Index, int kCols>
__device__ void add_map(const Map& m, int D, float* smem, Index n, Index tile_h0, Index tile_w0, int rows, int cols,
                        bool first, float (&sum)[kPx][kCols]) {
  using L = Layout<kCols>;
  Index* offsets = reinterpret_cast<Index*>(smem + L::kOffsets);
  Index* sources = reinterpret_cast<Index*>(smem + L::kSources);
  AxisTap<int>* taps = reinterpret_cast<AxisTap<int>*>(smem + L::kTaps);
  float* A = smem + L::kA;
  float* B = smem + L::kB;
  float* R = smem + L::kR;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, p0 = warp * kPx;
  const Index H = static_cast<Index>(m.H), W = static_cast<Index>(m.W);
  const int C = static_cast<int>(m.C);
  int set_w, set;
  {
    const AxisSet<Index> sh(tile_h0, rows, H, m.scale_h, m.mode_h), sw(tile_w0, cols, W, m.scale_w, m.mode_w);
    set_tables(sh, sw, rows, cols, sources, taps);
    set_w = sw.count;
    set = sh.count * sw.count;
  }
  const T* x = static_cast<const T*>(m.data);

  // relu(conv) on the set, kPixels set pixels a pass, into R.
  for (int q0 = 0; q0 < set; q0 += kPixels) {
    __syncthreads();  // the tables written; the previous pass's offsets read
    if (threadIdx.x < kPixels) {
      const int q = q0 + static_cast<int>(threadIdx.x);
      offsets[threadIdx.x] =
          q < set ? ((n * H + sources[q / set_w]) * W + sources[kMaxAxis + q % set_w]) * static_cast<Index>(C) : -1;
    }
    float acc[kPx][kCols] = {};
    for (int c0 = 0; c0 < C; c0 += kChunk) {
      __syncthreads();  // the offsets written; the previous chunk's A and B read
      // A[k][q]: a warp stages 8 channels x 4 pixels (32-byte runs of a pixel's channels in global memory, 32
      // banks in shared memory).
      for (int e = threadIdx.x; e < kChunk * kPixels; e += kThreads) {
        const int l = e % 32, g = e / 32;
        const int k = l % 8 + 8 * (g % (kChunk / 8)), q = l / 8 + 4 * (g / (kChunk / 8));
        const Index at = offsets[q];
        A[k * kPitchA + q] = at >= 0 && c0 + k < C ? to_float(x[at + c0 + k]) : 0.f;
      }
      stage_weights<T, kCols>(B, m.weight, C, 0, D, c0, C);
      __syncthreads();
      multiply<kCols>(A, B, C - c0 < kChunk ? C - c0 : kChunk, p0, acc);
    }
#pragma unroll
    for (int j = 0; j < kCols; ++j) {
      const float b = bias_of<T>(m.bias, lane + 32 * j, D);
#pragma unroll
      for (int i = 0; i < kPx; ++i) {
        const int q = q0 + p0 + i;
        if (q < set) R[q * L::kWidth + lane + 32 * j] = relu(acc[i][j] + b);
      }
    }
  }
  __syncthreads();  // R written

  // The blend at the thread's pixels (pixels past the output's edge repeat its last row and column).
  const AxisTap<int> th = taps[warp];
  const bool copy = m.mode_h == AxisMode::kCopy;
  const float* r0 = R + th.i0 * set_w * L::kWidth + lane;
  const float* r1 = R + th.i1 * set_w * L::kWidth + lane;
#pragma unroll
  for (int i = 0; i < kPx; ++i) {
    const AxisTap<int> tw = taps[kEdge + i];
#pragma unroll
    for (int j = 0; j < kCols; ++j) {
      const int c0 = tw.i0 * L::kWidth + 32 * j, c1 = tw.i1 * L::kWidth + 32 * j;
      const float v = copy ? r0[c0]
                           : th.w0 * (tw.w0 * r0[c0] + tw.w1 * r0[c1]) + th.w1 * (tw.w0 * r1[c0] + tw.w1 * r1[c1]);
      sum[i][j] = first ? v : sum[i][j] + v;
    }
  }
  __syncthreads();  // R and the tables read before the next map's
}

// Blocks an SM for the launch bounds: 2 at D <= 32 (128 registers a thread), else 1. ptxas spilled at 64 and 80
// registers for D <= 32 and at 128 for D <= 64 (sm_90, CUDA 13, 2026-12).
template <int kCols>
constexpr int kMinBlocks = kCols == 1 ? 2 : 1;

template <typename T, typename Index, int kCols>
__global__ void __launch_bounds__(kThreads, kMinBlocks<kCols>) decoder_head_kernel(const Args a) {
  using L = Layout<kCols>;
  float* smem = static_cast<float*>(dynamic_shared_memory());
  float* A = smem + L::kA;
  float* B = smem + L::kB;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const Index tiles_per_image = static_cast<Index>(a.tiles_h * a.tiles_w);
  const Index tiles = static_cast<Index>(a.N) * tiles_per_image;
  const Index Ho = static_cast<Index>(a.H), Wo = static_cast<Index>(a.W), K = static_cast<Index>(a.K);
  for (Index t = blockIdx.x; t < tiles; t += gridDim.x) {
    const Index n = t / tiles_per_image, rest = t - n * tiles_per_image;
    const Index tile_h0 = rest / static_cast<Index>(a.tiles_w) * kEdge;
    const Index tile_w0 = rest % static_cast<Index>(a.tiles_w) * kEdge;
    const int rows = static_cast<int>(Ho - tile_h0 < kEdge ? Ho - tile_h0 : kEdge);
    const int cols = static_cast<int>(Wo - tile_w0 < kEdge ? Wo - tile_w0 : kEdge);

    float sum[kPx][kCols];  // the low-level sum, then the merged map
    for (int m = 0; m < a.num_low; ++m) {
      add_map<T, Index, kCols>(a.maps[m], a.D, smem, n, tile_h0, tile_w0, rows, cols, m == 0, sum);
    }
    store_transposed<kCols>(A, sum, a.D);
    tile_gemm<T, kCols>(A, B, a.fuse_w, 0, a.D, a.D, sum);
#pragma unroll
    for (int j = 0; j < kCols; ++j) {
      const float b = bias_of<T>(a.fuse_b, lane + 32 * j, a.D);
#pragma unroll
      for (int i = 0; i < kPx; ++i) sum[i][j] = relu(sum[i][j] + b);
    }
    for (int m = a.num_low; m < a.num_maps; ++m) {
      add_map<T, Index, kCols>(a.maps[m], a.D, smem, n, tile_h0, tile_w0, rows, cols, false, sum);
    }

    // The classifier, 32 kCols classes a pass.
    store_transposed<kCols>(A, sum, a.D);
    const Index row = tile_h0 + (warp < rows ? warp : rows - 1);  // rows past the edge compute, write nothing
    T* out = static_cast<T*>(a.out) + ((n * Ho + row) * Wo + tile_w0) * K;
    for (int k0 = 0; k0 < a.K; k0 += L::kWidth) {
      float logits[kPx][kCols];
      tile_gemm<T, kCols>(A, B, a.cls_w, k0, a.K, a.D, logits);
#pragma unroll
      for (int j = 0; j < kCols; ++j) {
        const int k = k0 + lane + 32 * j;
        const float b = bias_of<T>(a.cls_b, k, a.K);
#pragma unroll
        for (int i = 0; i < kPx; ++i) {
          if (warp < rows && i < cols && k < a.K) out[i * K + k] = from_float<T>(logits[i][j] + b);
        }
      }
    }
  }
}

// How a map's set is laid out along one axis of in source pixels for out output pixels (scale in / out, fp32):
// its size, which add_map's buffer must hold, and mode. Along the axis a tile's taps span at most
// ceil(scale (kEdge - 1)) + 3 source pixels (the lower taps move by at most scale a pixel, their upper neighbours
// add one, fp32 rounding of the source index at most one more; as the Triton kernel's plan): a range where that is
// at most kMaxAxis, else the 2 kEdge taps.
struct AxisPlan {
  AxisMode mode;
  int size;
};

AxisPlan plan_axis(int64_t in, float scale) {
  const int64_t span = static_cast<int64_t>(std::ceil(static_cast<double>(scale) * (kEdge - 1))) + 3;
  if (span > kMaxAxis) return AxisPlan{AxisMode::kTaps, kMaxAxis};
  return AxisPlan{AxisMode::kRange, static_cast<int>(span < in ? span : in)};
}

bool fits_int32(const DecoderHeadParams& p) {
  const auto fits = [&](const DecoderMap& m) { return p.N * m.H * m.W * m.C < kInt32IndexLimit; };
  for (int64_t i = 0; i < p.num_low; ++i) {
    if (!fits(p.low[i])) return false;
  }
  for (int64_t i = 0; i < p.num_high; ++i) {
    if (!fits(p.high[i])) return false;
  }
  return p.N * p.H * p.W * p.K < kInt32IndexLimit;
}

template <typename T, typename Index, int kCols>
cudaError_t launch_typed(const Args& a, cudaStream_t stream) {
  const auto kernel = decoder_head_kernel<T, Index, kCols>;
  const size_t bytes = static_cast<size_t>(Layout<kCols>::floats(a.set_pixels)) * sizeof(float);
  if (bytes > 48 * 1024) {  // past the default limit of dynamic shared memory
    const cudaError_t err = cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel),
                                                 cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
    if (err != cudaSuccess) return err;
  }
  decoder_head_kernel<T, Index, kCols><<<grid_size(a.N * a.tiles_h * a.tiles_w, 1), kThreads, bytes, stream>>>(a);
  return cudaGetLastError();
}

template <typename T, typename Index>
cudaError_t launch_indexed(const Args& a, cudaStream_t stream) {
  if (a.D <= 32) return launch_typed<T, Index, 1>(a, stream);
  if (a.D <= 64) return launch_typed<T, Index, 2>(a, stream);
  return launch_typed<T, Index, 4>(a, stream);
}

}  // namespace

cudaError_t launch_decoder_head(const DecoderHeadParams& p, cudaStream_t stream) {
  if (!decoder_head_supported(p.num_low, p.num_high, p.D)) return cudaErrorInvalidValue;
  Args a{};
  a.num_low = static_cast<int>(p.num_low);
  a.num_maps = static_cast<int>(p.num_low + p.num_high);
  a.set_pixels = 0;
  for (int i = 0; i < a.num_maps; ++i) {
    const DecoderMap& s = i < a.num_low ? p.low[i] : p.high[i - a.num_low];
    Map& m = a.maps[i];
    m = Map{s.data, s.weight, s.bias, s.C, s.H, s.W, static_cast<float>(s.H) / static_cast<float>(p.H),
            static_cast<float>(s.W) / static_cast<float>(p.W), AxisMode::kCopy, AxisMode::kCopy};
    int pixels = kPixels;
    if (s.H != p.H || s.W != p.W) {
      const AxisPlan h = plan_axis(s.H, m.scale_h), w = plan_axis(s.W, m.scale_w);
      m.mode_h = h.mode, m.mode_w = w.mode;
      pixels = h.size * w.size;
    }
    a.set_pixels = pixels > a.set_pixels ? pixels : a.set_pixels;
  }
  a.fuse_w = p.fuse_weight, a.fuse_b = p.fuse_bias;
  a.cls_w = p.classifier_weight, a.cls_b = p.classifier_bias;
  a.out = p.out;
  a.N = p.N, a.H = p.H, a.W = p.W;
  a.tiles_h = ceil_div(p.H, kEdge), a.tiles_w = ceil_div(p.W, kEdge);
  a.D = static_cast<int>(p.D), a.K = static_cast<int>(p.K);
  return dispatch_dtype(p.dtype, [&](auto type) {
    using T = typename decltype(type)::type;
    return fits_int32(p) ? launch_indexed<T, int32_t>(a, stream) : launch_indexed<T, int64_t>(a, stream);
  });
}

}  // namespace dfanet::cuda
