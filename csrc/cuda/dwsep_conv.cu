// Fused depthwise-separable convolution on the GPU, NHWC.
// A block owns a tile of kTileM output pixels x 16-64 output channels and walks the input channels in chunks of
// kTileK: it writes the depthwise 3x3 result of the chunk for its pixels into shared memory, stages the matching
// pointwise weights beside it and multiplies the two, so the depthwise result never goes to global memory.
// fp16/bf16 multiply on tensor cores (WMMA, fp32 accumulation); fp32 and narrow layers take an FMA path.
#include <mma.h>

#include <type_traits>

#include "common.cuh"
#include "launchers.h"

namespace dfanet::cuda {
namespace {

constexpr int kTileM = 64;  // output pixels per tile
constexpr int kTileN = 64;  // output channels per tile of the tensor-core path (the FMA path's follows Cout)
// Input channels per chunk = one warp: each thread stages one channel, so its 9 depthwise weights stay in registers
// while consecutive lanes read consecutive channels of x (coalesced).
constexpr int kTileK = 32;

// Tile pixels whose depthwise loads are issued together (see stage_depthwise).
constexpr int kStagingGroup = 4;

// Below this many input or output channels the zero padding of a 16x16x16 WMMA tile wastes most of the multiply.
constexpr int64_t kMinTensorCoreChannels = 16;

// Where each output pixel of a tile reads x: filled once per tile, read for every chunk. With the window's offset
// and the validity of its nine taps worked out here, a tap costs ~8 instructions per chunk (a bit test, its 64-bit
// address, a predicated load) instead of ~18 of index math and bounds checks, most of the staging's issue slots
// (sm_90 SASS).
struct PixelTable {
  int64_t origin[kTileM];  // element offset in x of the window's top-left tap, channel 0 (may lie before x: padding)
  unsigned taps[kTileM];   // bit kh * 3 + kw: that tap lies inside the image; 0 for a pixel past the last one
};

__device__ void fill_pixel_table(PixelTable& t, const DwsepConvParams& p, int64_t m0, int64_t M) {
  for (int i = threadIdx.x; i < kTileM; i += blockDim.x) {
    const int64_t m = m0 + i;
    unsigned taps = 0;
    int64_t origin = 0;
    if (m < M) {
      const int64_t ow = m % p.Wo, rest = m / p.Wo;
      const int64_t oh = rest % p.Ho, n = rest / p.Ho;
      const int64_t ih0 = oh * p.stride - 1, iw0 = ow * p.stride - 1;
      origin = ((n * p.H + ih0) * p.W + iw0) * p.C;
      for (int kh = 0; kh < 3; ++kh) {
        for (int kw = 0; kw < 3; ++kw) {
          const bool inside = ih0 + kh >= 0 && ih0 + kh < p.H && iw0 + kw >= 0 && iw0 + kw < p.W;
          taps |= static_cast<unsigned>(inside) << (kh * 3 + kw);
        }
      }
    }
    t.origin[i] = origin;
    t.taps[i] = taps;
  }
}

// Element distances from a window's top-left tap to its other rows and columns (NHWC x), fixed per launch.
struct TapStrides {
  int64_t row, col;  // W * C, C
};

// One channel's depthwise weights and bias; zero for the padding channels past C.
struct DwChannel {
  float w[9];
  float b;
  bool valid;
};

template <typename T>
__device__ DwChannel load_dw_channel(const DwsepConvParams& p, int64_t c) {
  DwChannel ch{};
  ch.valid = c < p.C;
  if (ch.valid) {
    const T* w = static_cast<const T*>(p.dw_weight) + c * 9;
#pragma unroll
    for (int t = 0; t < 9; ++t) ch.w[t] = to_float(w[t]);
    ch.b = p.dw_bias ? to_float(static_cast<const T*>(p.dw_bias)[c]) : 0.f;
  }
  return ch;
}

// The nine input values (act_in applied) under tile pixel i's 3x3 window in channel c; 0 for padding, for a channel
// past C (whose weights and bias are 0 too, so its depthwise result is 0) and for a pixel past the last one (whose
// depthwise result is then act_mid(bias), harmless: its rows of the product are never stored).
template <typename T>
__device__ void load_taps(const DwsepConvParams& p, const PixelTable& t, const TapStrides& d, int i, int64_t c,
                          bool channel_ok, float (&taps)[9]) {
  const unsigned inside = channel_ok ? t.taps[i] : 0u;
  const int64_t origin = t.origin[i] + c;
  const T* x = static_cast<const T*>(p.x);
#pragma unroll
  for (int kh = 0; kh < 3; ++kh) {
#pragma unroll
    for (int kw = 0; kw < 3; ++kw) {
      const int k = kh * 3 + kw;
      // A predicated load, not a branch: the loads of a group of pixels issue back to back.
      const float v = (inside >> k) & 1u ? to_float(x[origin + kh * d.row + kw * d.col]) : 0.f;
      taps[k] = p.act_in ? relu(v) : v;
    }
  }
}

// act_mid(dw3x3 + b) of one pixel's taps.
__device__ __forceinline__ float depthwise(const DwsepConvParams& p, const float (&taps)[9], const DwChannel& ch) {
  float acc = ch.b;
#pragma unroll
  for (int k = 0; k < 9; ++k) acc = fmaf(taps[k], ch.w[k], acc);
  return p.act_mid ? relu(acc) : acc;
}

// Depthwise results of channel c at tile pixels row0, row0 + step, ... (kPixels of them), handed to store(i, v).
// The loads of kGroup pixels are issued before their first multiply: written pixel by pixel (branches around the
// padding, the multiplies right after each pixel's loads), ptxas waited for every three loads (sm_90 SASS), and a
// chunk's staging was a chain of round trips to memory. kStagingGroup = 4 pixels (36 loads) at a time: the most
// that keeps every kernel within 128 registers without spills on sm_80-sm_90 (8 spills; ptxas -v).
template <typename T, int kPixels, int kGroup, typename Store>
__device__ void stage_depthwise(const DwsepConvParams& p, const PixelTable& t, const TapStrides& d, int row0,
                                int step, int64_t c, const DwChannel& ch, Store store) {
  static_assert(kPixels % kGroup == 0, "whole groups");
#pragma unroll
  for (int g = 0; g < kPixels; g += kGroup) {
    float taps[kGroup][9];
#pragma unroll
    for (int r = 0; r < kGroup; ++r) load_taps<T>(p, t, d, row0 + (g + r) * step, c, ch.valid, taps[r]);
#pragma unroll
    for (int r = 0; r < kGroup; ++r) store(row0 + (g + r) * step, depthwise(p, taps[r], ch));
  }
}

// act_out(acc + pw_bias) + residual, stored at output pixel m, channel n.
template <typename T>
__device__ void store_output(const DwsepConvParams& p, int64_t m, int64_t n, float acc) {
  if (p.pw_bias) acc += to_float(static_cast<const T*>(p.pw_bias)[n]);
  if (p.act_out) acc = relu(acc);
  const int64_t o = m * p.Cout + n;
  if (p.residual) acc += to_float(static_cast<const T*>(p.residual)[o]);
  static_cast<T*>(p.out)[o] = from_float<T>(acc);
}

// Tiles of tile_n output channels, numbered output-channel-fastest, so blocks running at the same time share their
// x reads in L2.
__host__ __device__ inline int64_t num_tiles(const DwsepConvParams& p, int tile_n = kTileN) {
  return ceil_div(p.N * p.Ho * p.Wo, kTileM) * ceil_div(p.Cout, tile_n);
}

// ---- FMA path: 16 x 16 threads, each accumulating 4 pixels x kCols output channels in registers: a tile of
// 16 * kCols output channels. kCols follows Cout (1: up to 16, 2: up to 32, else 4), so a 12- or 24-channel layer
// does not multiply 64 columns of which most are padding (DFANet's first block of each stage has 12-48 outputs).

constexpr int kFmaThreads = 256;
// At most 128 registers a thread, so two blocks fit an SM: DFANet's batch-1 layers have only 1-2 tiles per SM
// (e.g. 240->12 at 128x128: 256 tiles on 132 SMs), so the grid, not registers, sets their occupancy.
constexpr int kMinBlocksPerSm = 2;

template <int kCols>
constexpr int kFmaTileN = 16 * kCols;

inline int fma_cols(int64_t cout) { return cout <= 16 ? 1 : cout <= 32 ? 2 : 4; }

template <typename T, int kCols>
__global__ void __launch_bounds__(kFmaThreads, kMinBlocksPerSm) dwsep_conv_fma_kernel(const DwsepConvParams p) {
  constexpr int kTileNCols = kFmaTileN<kCols>;
  __shared__ PixelTable table;
  // [k][pixel] and [k][out channel]: the product loop reads rows; +1 keeps the staging writes (one channel per lane,
  // so a warp writes down a column) on distinct banks.
  __shared__ float dw_tile[kTileK][kTileM + 1];
  __shared__ float pw_tile[kTileK][kTileNCols + 1];
  constexpr int kRowStep = kFmaThreads / kTileK;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int lane_k = threadIdx.x % kTileK, row0 = threadIdx.x / kTileK;
  const T* pw_weight = static_cast<const T*>(p.pw_weight);
  const TapStrides strides{p.W * p.C, p.C};
  const int64_t M = p.N * p.Ho * p.Wo, n_tiles = ceil_div(p.Cout, kTileNCols);

  for (int64_t tile = blockIdx.x; tile < num_tiles(p, kTileNCols); tile += gridDim.x) {
    const int64_t m0 = (tile / n_tiles) * kTileM, n0 = (tile % n_tiles) * kTileNCols;
    // The previous tile last read the table before its final chunk's second barrier, so no barrier is needed here.
    fill_pixel_table(table, p, m0, M);
    float acc[4][kCols] = {};
    for (int64_t c0 = 0; c0 < p.C; c0 += kTileK) {
      const int64_t c = c0 + lane_k;
      const DwChannel ch = load_dw_channel<T>(p, c);
      __syncthreads();  // the table is written; the previous chunk's products are done with the tiles
      stage_depthwise<T, kTileM / kRowStep, kStagingGroup>(p, table, strides, row0, kRowStep, c, ch,
                                                          [&](int i, float v) { dw_tile[lane_k][i] = v; });
      // A fixed trip count, unrolled: the weight loads are in flight together, as the depthwise ones.
#pragma unroll
      for (int r = 0; r < kTileNCols / kRowStep; ++r) {
        const int j = row0 + r * kRowStep;
        const int64_t n = n0 + j;
        pw_tile[lane_k][j] = (n < p.Cout && ch.valid) ? to_float(pw_weight[n * p.C + c]) : 0.f;
      }
      __syncthreads();
      const int k_end = static_cast<int>(p.C - c0 < kTileK ? p.C - c0 : kTileK);
      for (int k = 0; k < k_end; ++k) {
        float a[4], b[kCols];
#pragma unroll
        for (int i = 0; i < 4; ++i) a[i] = dw_tile[k][ty + 16 * i];
#pragma unroll
        for (int j = 0; j < kCols; ++j) b[j] = pw_tile[k][tx + 16 * j];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
#pragma unroll
          for (int j = 0; j < kCols; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
      }
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t m = m0 + ty + 16 * i;
      if (m >= M) continue;
#pragma unroll
      for (int j = 0; j < kCols; ++j) {
        const int64_t n = n0 + tx + 16 * j;  // consecutive tx: consecutive output channels, coalesced stores
        if (n < p.Cout) store_output<T>(p, m, n, acc[i][j]);
      }
    }
  }
}

// ---- Tensor-core path (fp16/bf16, sm_80+): 4 warps in 2 x 2, each 32 x 32 outputs = 2 x 2 WMMA 16x16x16 tiles.

constexpr int kWmmaThreads = 128;
// <= 128 registers, as the FMA path: 4 blocks an SM by registers; by shared memory (28.7 KB a block) 3 fit on
// sm_86/89 (100 KB an SM), 4 or more on sm_80/90.
constexpr int kWmmaMinBlocksPerSm = 4;

template <typename T>
__global__ void __launch_bounds__(kWmmaThreads, kWmmaMinBlocksPerSm) dwsep_conv_wmma_kernel(const DwsepConvParams p) {
#if __CUDA_ARCH__ >= 800  // bf16 WMMA needs sm_80; the launcher sends older GPUs to the FMA path
  using namespace nvcuda;
  // Row pitches: multiples of 8 halves / 4 floats as WMMA requires, keeping every fragment 32-byte aligned
  // (16 rows x 80 B, 16 rows x 272 B); the +8 / +4 also shift banks from row to row.
  constexpr int kLdAB = kTileK + 8;
  constexpr int kLdC = kTileN + 4;
  __shared__ PixelTable table;
  __shared__ __align__(32) T a_tile[kTileM * kLdAB];  // depthwise result [pixel][k]: row-major A
  __shared__ __align__(32) T b_tile[kTileN * kLdAB];  // pointwise weight [out channel][k], as in memory: col-major B
  __shared__ __align__(32) float c_tile[kTileM * kLdC];
  constexpr int kRowStep = kWmmaThreads / kTileK;
  const int warp = threadIdx.x / 32;
  const int warp_m = (warp / 2) * 32, warp_n = (warp % 2) * 32;
  const int lane_k = threadIdx.x % kTileK, row0 = threadIdx.x / kTileK;
  const T* pw_weight = static_cast<const T*>(p.pw_weight);
  const TapStrides strides{p.W * p.C, p.C};
  const int64_t M = p.N * p.Ho * p.Wo, n_tiles = ceil_div(p.Cout, kTileN);

  for (int64_t tile = blockIdx.x; tile < num_tiles(p); tile += gridDim.x) {
    const int64_t m0 = (tile / n_tiles) * kTileM, n0 = (tile % n_tiles) * kTileN;
    // As in the FMA kernel, the chunk loop's barriers separate this tile's writes from the previous tile's reads.
    fill_pixel_table(table, p, m0, M);
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.f);
    }
    for (int64_t c0 = 0; c0 < p.C; c0 += kTileK) {
      const int64_t c = c0 + lane_k;
      const DwChannel ch = load_dw_channel<T>(p, c);
      __syncthreads();  // the table is written; the previous chunk's fragments are loaded
      stage_depthwise<T, kTileM / kRowStep, kStagingGroup>(
          p, table, strides, row0, kRowStep, c, ch,
          [&](int i, float v) { a_tile[i * kLdAB + lane_k] = from_float<T>(v); });
#pragma unroll 8  // 16 in flight spilled the bf16 kernel on sm_80
      for (int r = 0; r < kTileN / kRowStep; ++r) {
        const int j = row0 + r * kRowStep;
        const int64_t n = n0 + j;
        b_tile[j * kLdAB + lane_k] = (n < p.Cout && ch.valid) ? pw_weight[n * p.C + c] : from_float<T>(0.f);
      }
      __syncthreads();
      const int k_steps = static_cast<int>(ceil_div(p.C - c0 < kTileK ? p.C - c0 : kTileK, 16));
      for (int ks = 0; ks < k_steps; ++ks) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a[2];
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b[2];
#pragma unroll
        for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(a[i], a_tile + (warp_m + 16 * i) * kLdAB + 16 * ks, kLdAB);
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(b[j], b_tile + (warp_n + 16 * j) * kLdAB + 16 * ks, kLdAB);
#pragma unroll
        for (int i = 0; i < 2; ++i) {
#pragma unroll
          for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
        }
      }
    }
    // Through shared memory, so the epilogue knows each value's pixel and channel and stores coalesced.
#pragma unroll
    for (int i = 0; i < 2; ++i) {
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        wmma::store_matrix_sync(c_tile + (warp_m + 16 * i) * kLdC + warp_n + 16 * j, acc[i][j], kLdC,
                                wmma::mem_row_major);
      }
    }
    __syncthreads();
    for (int e = threadIdx.x; e < kTileM * kTileN; e += kWmmaThreads) {
      const int i = e / kTileN, j = e % kTileN;
      const int64_t m = m0 + i, n = n0 + j;
      if (m < M && n < p.Cout) store_output<T>(p, m, n, c_tile[i * kLdC + j]);
    }
  }
#endif
}

cudaError_t has_sm80(bool* yes) {
  int device = 0, major = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  *yes = major >= 8;
  return err;
}

// fp32 always takes the FMA path; fp16/bf16 take tensor cores on sm_80+ where the layer is wide enough.
template <typename T, int kCols>
cudaError_t launch_fma(const DwsepConvParams& p, cudaStream_t stream) {
  dwsep_conv_fma_kernel<T, kCols><<<grid_size(num_tiles(p, kFmaTileN<kCols>), 1), kFmaThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_typed(const DwsepConvParams& p, cudaStream_t stream) {
  switch (fma_cols(p.Cout)) {
    case 1:
      return launch_fma<T, 1>(p, stream);
    case 2:
      return launch_fma<T, 2>(p, stream);
    default:
      return launch_fma<T, 4>(p, stream);
  }
}

template <typename T>
cudaError_t launch_typed_16bit(const DwsepConvParams& p, cudaStream_t stream) {
  bool sm80 = false;
  const cudaError_t err = has_sm80(&sm80);
  if (err != cudaSuccess) return err;
  if (!sm80 || p.C < kMinTensorCoreChannels || p.Cout < kMinTensorCoreChannels) return launch_typed<T>(p, stream);
  dwsep_conv_wmma_kernel<T><<<grid_size(num_tiles(p), 1), kWmmaThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_dwsep_conv(const DwsepConvParams& p, cudaStream_t stream) {
  return dispatch_dtype(p.dtype, [&](auto type) {
    using T = typename decltype(type)::type;
    if constexpr (std::is_same_v<T, float>) {
      return launch_typed<T>(p, stream);
    } else {
      return launch_typed_16bit<T>(p, stream);
    }
  });
}

}  // namespace dfanet::cuda
