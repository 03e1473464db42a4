// Fused depthwise-separable convolution on the GPU, NHWC.
// A block owns an 8 x 8 (or 4 x 4) tile of output pixels of one image and a tile of output channels (all of them
// where the width fits and the grid is full), and walks the input channels in chunks: it stages the chunk's
// 3x3 halo of x once in shared memory (16-byte copies, cp.async on sm_80+), computes the depthwise result of the
// tile's pixels from it with threads over (pixel, channel) pairs, so an 8- or 12-channel layer keeps its lanes busy,
// and multiplies it by the chunk's pointwise weights; the depthwise result never goes to global memory.
// fp16/bf16 multiply on tensor cores (WMMA, fp32 accumulation, K padded to 16 and N to 32 for narrow layers), fp32
// on FMA; the tensor-core epilogue adds biases, ReLU and residual in registers and stores 16 bytes at a time.
//
// Tiles are chosen per launch from the shapes (plan); the bytes floor of each DFANet layer and the blocks per SM the
// rule gives it are in docs/ops.md ("The CUDA dwsep_conv tiles").
#include <mma.h>

#include <type_traits>

#include "common.cuh"
#include "launchers.h"

namespace dfanet::cuda {
namespace {

// A square tile of kTile x kTile output pixels (8, or 4 on maps too small to fill the GPU with 8), 4 threads a
// pixel: 256 or 64 threads.
template <int kTile>
struct Geometry {
  static constexpr int kPixels = kTile * kTile;
  static constexpr int kThreads = 4 * kPixels;
  // Blocks an SM for the launch bounds: 24 warps (at most 80 registers a thread) where a thread holds at most 12
  // accumulators, else 16 warps (128 registers): the wider tiles spilled at 80 (ptxas -v, sm_80 and sm_90).
  static constexpr int min_blocks_per_sm(int accumulators) { return (accumulators <= 12 ? 768 : 512) / kThreads; }
  // Input pixels under the tile's 3x3 windows at stride 2, the larger stride.
  static constexpr int kHaloPixels = (2 * kTile + 1) * (2 * kTile + 1);
  __device__ static int span(int stride) { return (kTile - 1) * stride + 3; }  // halo rows and columns
};
// The launcher narrows the output-channel tile until the grid has this many blocks of 8 x 8 per SM (what fits of
// any of them).
constexpr int kTargetBlocksPerSm = Geometry<8>::min_blocks_per_sm(128);
// Input channels per chunk: 64 bytes of x per halo pixel (4 x 16-byte copies) on the FMA path; 32 on the
// tensor-core path, two 16-deep MMA steps. Sized so each kernel's shared memory stays under the 48 KB static limit.
constexpr int kFmaChunk = 16;
constexpr int kMmaChunk = 32;
// Output-channel tile widths, narrowest first: 16 * kCols on the FMA path (16 threads across, kCols channels each),
// 32 * kFrags on tensor cores (2 warps across, kFrags 16-wide accumulators each). They match DFANet's output widths
// (12, 24, 48, 96, 192).
constexpr int kFmaWidths[] = {16, 32, 48, 96, 192};
constexpr int kMmaWidths[] = {32, 64, 96, 192};

template <typename T>
constexpr int kVec = 16 / static_cast<int>(sizeof(T));  // elements per 16-byte access

// Where a tile lies: image n, its top-left output pixel, its first output channel.
struct Tile {
  int64_t n, oh0, ow0, n0;
};

// Tiles numbered output-channel tile fastest, then along rows: blocks running together share x reads in L2.
struct TileGrid {
  int64_t tiles_w, tiles_h, splits;
  int edge, width;

  __host__ __device__ TileGrid(const DwsepConvParams& p, int edge, int width)
      : tiles_w(ceil_div(p.Wo, edge)), tiles_h(ceil_div(p.Ho, edge)), splits(ceil_div(p.Cout, width)), edge(edge),
        width(width) {}
  __host__ __device__ int64_t count(const DwsepConvParams& p) const { return p.N * tiles_h * tiles_w * splits; }
  __device__ Tile tile(int64_t t) const {
    const int64_t split = t % splits;
    t /= splits;
    const int64_t tw = t % tiles_w;
    t /= tiles_w;
    return Tile{t / tiles_h, (t % tiles_h) * edge, tw * edge, split * width};
  }
};

// 16 bytes global -> shared. cp.async on sm_80+ skips the round trip through registers, so a thread's copies are
// all in flight at once; the emulator (no __CUDA_ARCH__) and older GPUs copy through registers.
__device__ __forceinline__ void copy16(void* dst, const void* src) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned smem = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem), "l"(__cvta_generic_to_global(src)));
#else
  *static_cast<uint4*>(dst) = *static_cast<const uint4*>(src);
#endif
}

// Waits for this thread's copy16s; a barrier after it publishes them to the block.
__device__ __forceinline__ void copy_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_all;\n" ::);
#endif
}

// Input channels [c0, c0 + kc) of the tile's halo into halo[pixel][kChunk] (row-major over the span x span square
// the stride needs), zeros for the padding. 16-byte copies where `vec_x` (C a multiple of 16 bytes and x aligned,
// so every copy is), else one element per thread.
template <typename T, int kTile, int kChunk>
__device__ void stage_halo(const DwsepConvParams& p, const Tile& t, int64_t c0, int kc, bool vec_x, T* halo) {
  const int span = Geometry<kTile>::span(p.stride);
  const int64_t ih0 = t.oh0 * p.stride - 1, iw0 = t.ow0 * p.stride - 1;
  const T* x = static_cast<const T*>(p.x) + t.n * p.H * p.W * p.C + c0;
  const int units = vec_x ? kc / kVec<T> : kc;  // per halo pixel
  for (int e = threadIdx.x; e < span * span * units; e += Geometry<kTile>::kThreads) {
    const int hp = e / units, u = e % units;
    const int64_t ih = ih0 + hp / span, iw = iw0 + hp % span;
    const bool inside = ih >= 0 && ih < p.H && iw >= 0 && iw < p.W;
    if (vec_x) {
      T* dst = halo + hp * kChunk + u * kVec<T>;
      if (inside) {
        copy16(dst, x + (ih * p.W + iw) * p.C + u * kVec<T>);
      } else {
        *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
      }
    } else {
      halo[hp * kChunk + u] = inside ? x[(ih * p.W + iw) * p.C + u] : from_float<T>(0.f);
    }
  }
}

// A chunk's depthwise weights and biases, fp32.
template <int kChunk>
struct DwWeights {
  float w[kChunk][9];
  float b[kChunk];
};

template <typename T, int kTile, int kChunk>
__device__ void stage_dw_weights(const DwsepConvParams& p, int64_t c0, int kc, DwWeights<kChunk>& dw) {
  for (int e = threadIdx.x; e < kc * 10; e += Geometry<kTile>::kThreads) {
    if (e < kc * 9) {
      dw.w[e / 9][e % 9] = to_float(static_cast<const T*>(p.dw_weight)[c0 * 9 + e]);
    } else {
      const int c = e - kc * 9;
      dw.b[c] = p.dw_bias ? to_float(static_cast<const T*>(p.dw_bias)[c0 + c]) : 0.f;
    }
  }
}

// act_mid(dw3x3(act_in(halo)) + b) of tile pixel i, chunk channel c, for every pair with c < kpad, handed to
// store(i, c, v); 0 for c >= kc (K padding). Consecutive threads take consecutive channels of a pixel: conflict-free
// halo reads, and a narrow layer's pairs still fill every lane. Pixels past the map read halo zeros or real
// neighbours: finite, and never stored.
template <typename T, int kTile, int kChunk, typename Store>
__device__ void depthwise_tile(const DwsepConvParams& p, const T* halo, const DwWeights<kChunk>& dw, int kc, int kpad,
                               Store store) {
  const int s = p.stride, span = Geometry<kTile>::span(s);
  for (int e = threadIdx.x; e < Geometry<kTile>::kPixels * kpad; e += Geometry<kTile>::kThreads) {
    const int i = e / kpad, c = e % kpad;
    float v = 0.f;
    if (c < kc) {
      const T* taps = halo + ((i / kTile) * s * span + (i % kTile) * s) * kChunk + c;
      float acc = dw.b[c];
#pragma unroll
      for (int kh = 0; kh < 3; ++kh) {
#pragma unroll
        for (int kw = 0; kw < 3; ++kw) {
          float xv = to_float(taps[(kh * span + kw) * kChunk]);
          if (p.act_in) xv = relu(xv);
          acc = fmaf(xv, dw.w[c][kh * 3 + kw], acc);
        }
      }
      v = p.act_mid ? relu(acc) : acc;
    }
    store(i, c, v);
  }
}

// Output pixel index of tile pixel i, or -1 past the map.
template <int kTile>
__device__ __forceinline__ int64_t output_pixel(const DwsepConvParams& p, const Tile& t, int i) {
  const int64_t oh = t.oh0 + i / kTile, ow = t.ow0 + i % kTile;
  return oh < p.Ho && ow < p.Wo ? (t.n * p.Ho + oh) * p.Wo + ow : -1;
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

// The same for kVec<T> consecutive channels n.. of pixel m (those below Cout): one 16-byte residual load and
// store where `vec_out` (Cout a multiple of kVec and out, residual aligned) and all of them are channels.
template <typename T>
__device__ void store_outputs(const DwsepConvParams& p, int64_t m, int64_t n, bool vec_out, float (&v)[kVec<T>]) {
  constexpr int kN = kVec<T>;
  if (!vec_out || n + kN > p.Cout) {
    for (int q = 0; q < kN && n + q < p.Cout; ++q) store_output<T>(p, m, n + q, v[q]);
    return;
  }
  const int64_t o = m * p.Cout + n;
  uint4 raw = p.residual ? *reinterpret_cast<const uint4*>(static_cast<const T*>(p.residual) + o) : uint4{};
  T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
  for (int q = 0; q < kN; ++q) {
    float acc = v[q];
    if (p.pw_bias) acc += to_float(static_cast<const T*>(p.pw_bias)[n + q]);
    if (p.act_out) acc = relu(acc);
    if (p.residual) acc += to_float(e[q]);
    e[q] = from_float<T>(acc);
  }
  *reinterpret_cast<uint4*>(static_cast<T*>(p.out) + o) = raw;
}

// ---- FMA path (fp32; fp16/bf16 before sm_80): (pixels / 4) x 16 threads, each accumulating 4 pixels x kCols
// output channels in registers, a tile of 16 * kCols channels.

template <typename T, int kTile, int kCols>
__global__ void __launch_bounds__(Geometry<kTile>::kThreads, Geometry<kTile>::min_blocks_per_sm(4 * kCols))
    dwsep_conv_fma_kernel(const DwsepConvParams p, bool vec_x) {
  using G = Geometry<kTile>;
  constexpr int kWidth = 16 * kCols, kRows = G::kPixels / 4;
  __shared__ __align__(16) T halo[G::kHaloPixels * kFmaChunk];
  __shared__ DwWeights<kFmaChunk> dw;
  // [k][pixel] and [k][out channel]: the product loop reads rows; +1 keeps the writes (consecutive threads on
  // consecutive k, so down a column) on distinct banks.
  __shared__ float a_tile[kFmaChunk][G::kPixels + 1];
  __shared__ float b_tile[kFmaChunk][kWidth + 1];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const T* pw_weight = static_cast<const T*>(p.pw_weight);
  const TileGrid grid(p, kTile, kWidth);

  for (int64_t tile = blockIdx.x; tile < grid.count(p); tile += gridDim.x) {
    const Tile t = grid.tile(tile);
    float acc[4][kCols] = {};
    for (int64_t c0 = 0; c0 < p.C; c0 += kFmaChunk) {
      const int kc = static_cast<int>(p.C - c0 < kFmaChunk ? p.C - c0 : kFmaChunk);
      // The previous chunk's depthwise read the halo and weights before its last barrier: overwrite them now, so
      // the copies overlap the previous chunk's products.
      stage_halo<T, kTile, kFmaChunk>(p, t, c0, kc, vec_x, halo);
      stage_dw_weights<T, kTile, kFmaChunk>(p, c0, kc, dw);
      __syncthreads();  // the previous chunk's products are done with a_tile and b_tile
      for (int e = threadIdx.x; e < kWidth * kFmaChunk; e += G::kThreads) {
        const int j = e / kFmaChunk, k = e % kFmaChunk;
        const int64_t n = t.n0 + j;
        b_tile[k][j] = k < kc && n < p.Cout ? to_float(pw_weight[n * p.C + c0 + k]) : 0.f;
      }
      copy_wait();
      __syncthreads();
      depthwise_tile<T, kTile, kFmaChunk>(p, halo, dw, kc, kc, [&](int i, int c, float v) { a_tile[c][i] = v; });
      __syncthreads();
      for (int k = 0; k < kc; ++k) {
        float a[4], b[kCols];
#pragma unroll
        for (int i = 0; i < 4; ++i) a[i] = a_tile[k][ty + kRows * i];
#pragma unroll
        for (int j = 0; j < kCols; ++j) b[j] = b_tile[k][tx + 16 * j];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
#pragma unroll
          for (int j = 0; j < kCols; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
      }
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t m = output_pixel<kTile>(p, t, ty + kRows * i);
      if (m < 0) continue;
#pragma unroll
      for (int j = 0; j < kCols; ++j) {
        const int64_t n = t.n0 + tx + 16 * j;  // consecutive tx: consecutive output channels, coalesced stores
        if (n < p.Cout) store_output<T>(p, m, n, acc[i][j]);
      }
    }
  }
}

// ---- Tensor-core path (fp16/bf16, sm_80+): warps in (pixels / 16) x 2, each 16 pixels x 16 * kFrags output
// channels (kFrags WMMA 16x16x16 accumulators), a tile of 32 * kFrags channels.

template <typename T, int kTile, int kFrags>
__global__ void __launch_bounds__(Geometry<kTile>::kThreads, Geometry<kTile>::min_blocks_per_sm(8 * kFrags))
    dwsep_conv_wmma_kernel(const DwsepConvParams p, bool vec_x, bool vec_out) {
#if __CUDA_ARCH__ >= 800  // bf16 WMMA needs sm_80; the launcher sends older GPUs to the FMA path
  using namespace nvcuda;
  using G = Geometry<kTile>;
  constexpr int kWidth = 32 * kFrags, kWarpRows = G::kPixels / 16;
  // Row pitch: a multiple of 8 halves as WMMA requires, keeping every fragment 32-byte aligned; the +8 also shifts
  // banks from row to row.
  constexpr int kLd = kMmaChunk + 8;
  constexpr int kHaloBytes = G::kHaloPixels * kMmaChunk * static_cast<int>(sizeof(T));
  constexpr int kScratchBytes = (G::kThreads / 32) * 16 * kWmmaScratchPitch * static_cast<int>(sizeof(float));
  static_assert(kScratchBytes <= kHaloBytes, "the epilogue's scratch lives in the halo");
  // The halo, then (once the last chunk's depthwise has read it) each warp's 16 x 16 accumulator for the epilogue.
  __shared__ __align__(32) unsigned char halo_bytes[kHaloBytes];
  __shared__ DwWeights<kMmaChunk> dw;
  __shared__ __align__(32) T a_tile[G::kPixels * kLd];  // depthwise result [pixel][k]: row-major A
  __shared__ __align__(32) T b_tile[kWidth * kLd];  // pointwise weight [out channel][k], as in memory: col-major B
  T* halo = reinterpret_cast<T*>(halo_bytes);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int warp_m = (warp % kWarpRows) * 16, warp_n = (warp / kWarpRows) * 16 * kFrags;
  const T* pw_weight = static_cast<const T*>(p.pw_weight);
  const TileGrid grid(p, kTile, kWidth);

  for (int64_t tile = blockIdx.x; tile < grid.count(p); tile += gridDim.x) {
    const Tile t = grid.tile(tile);
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[kFrags];
#pragma unroll
    for (int j = 0; j < kFrags; ++j) wmma::fill_fragment(acc[j], 0.f);
    for (int64_t c0 = 0; c0 < p.C; c0 += kMmaChunk) {
      const int kc = static_cast<int>(p.C - c0 < kMmaChunk ? p.C - c0 : kMmaChunk);
      const int kpad = (kc + 15) / 16 * 16;
      // As in the FMA kernel; the previous tile's epilogue ends with a barrier before this reuses its scratch.
      stage_halo<T, kTile, kMmaChunk>(p, t, c0, kc, vec_x, halo);
      stage_dw_weights<T, kTile, kMmaChunk>(p, c0, kc, dw);
      __syncthreads();  // the previous chunk's fragments are loaded
      for (int e = threadIdx.x; e < kWidth * kMmaChunk; e += G::kThreads) {
        const int j = e / kMmaChunk, k = e % kMmaChunk;
        const int64_t n = t.n0 + j;
        b_tile[j * kLd + k] = k < kc && n < p.Cout ? pw_weight[n * p.C + c0 + k] : from_float<T>(0.f);
      }
      copy_wait();
      __syncthreads();
      depthwise_tile<T, kTile, kMmaChunk>(p, halo, dw, kc, kpad,
                                          [&](int i, int c, float v) { a_tile[i * kLd + c] = from_float<T>(v); });
      __syncthreads();
      for (int ks = 0; ks < kpad / 16; ++ks) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
        wmma::load_matrix_sync(a, a_tile + warp_m * kLd + 16 * ks, kLd);
#pragma unroll
        for (int j = 0; j < kFrags; ++j) {
          wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b;
          wmma::load_matrix_sync(b, b_tile + (warp_n + 16 * j) * kLd + 16 * ks, kLd);
          wmma::mma_sync(acc[j], a, b, acc[j]);
        }
      }
    }
    // Each accumulator through the warp's own scratch (accumulator_row): a lane holds 8 consecutive channels of one
    // pixel, lane / 2 the row, lane % 2 the half.
    float* scratch = reinterpret_cast<float*>(halo_bytes) + warp * 16 * kWmmaScratchPitch;
    const int64_t m = output_pixel<kTile>(p, t, warp_m + lane / 2);
#pragma unroll
    for (int j = 0; j < kFrags; ++j) {
      float v[kVec<T>];
      accumulator_row(acc[j], scratch, v);
      if (m >= 0) store_outputs<T>(p, m, t.n0 + warp_n + 16 * j + (lane % 2) * kVec<T>, vec_out, v);
    }
    __syncthreads();  // the scratch is read before the next tile stages its halo there
  }
#endif
}

struct Device {
  bool sm80;
  int sms;
};

cudaError_t query_device(Device* d) {
  int device = 0, major = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&d->sms, cudaDevAttrMultiProcessorCount, device);
  d->sm80 = major >= 8;
  return err;
}

// The tiles of a launch. The output-channel tile is the narrowest width that covers Cout (the widest past it: the
// depthwise is then recomputed per tile), narrowed while the grid of 8 x 8 tiles has fewer than
// kTargetBlocksPerSm blocks per SM: on a small map more threads in flight are worth recomputing the depthwise for
// another 16 or 32 channels. At the narrowest width, a grid with fewer blocks than SMs takes 4 x 4 tiles: the same
// threads in 4x the blocks, so that no SM idles, for 2.25x the halo reads per output pixel at stride 1 (from L2).
struct Plan {
  int edge, width;
};

template <size_t kCount>
Plan plan(const int (&widths)[kCount], const DwsepConvParams& p, int sms) {
  const auto blocks = [&](int edge, int width) { return TileGrid(p, edge, width).count(p); };
  const int64_t target = int64_t{kTargetBlocksPerSm} * sms;
  size_t w = 0;
  while (w + 1 < kCount && widths[w] < p.Cout) ++w;
  while (w > 0 && blocks(8, widths[w]) < target) --w;
  return Plan{w == 0 && blocks(8, widths[0]) < sms ? 4 : 8, widths[w]};
}

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

template <typename T>
bool vector_x(const DwsepConvParams& p) {
  return p.C % kVec<T> == 0 && aligned16(p.x);
}

template <typename T, int kTile, int kCols>
cudaError_t launch_fma(const DwsepConvParams& p, cudaStream_t stream) {
  const unsigned blocks = grid_size(TileGrid(p, kTile, 16 * kCols).count(p), 1);
  const bool vec_x = vector_x<T>(p);
  dwsep_conv_fma_kernel<T, kTile, kCols><<<blocks, Geometry<kTile>::kThreads, 0, stream>>>(p, vec_x);
  return cudaGetLastError();
}

template <typename T, int kTile, int kFrags>
cudaError_t launch_wmma(const DwsepConvParams& p, cudaStream_t stream) {
  const bool vec_out = p.Cout % kVec<T> == 0 && aligned16(p.out) && (!p.residual || aligned16(p.residual));
  const bool vec_x = vector_x<T>(p);
  const unsigned blocks = grid_size(TileGrid(p, kTile, 32 * kFrags).count(p), 1);
  dwsep_conv_wmma_kernel<T, kTile, kFrags><<<blocks, Geometry<kTile>::kThreads, 0, stream>>>(p, vec_x, vec_out);
  return cudaGetLastError();
}

// 4 x 4 tiles come only at the narrowest width (plan), so they have one instantiation per dtype and path.
template <typename T>
cudaError_t launch_fma_path(const DwsepConvParams& p, int sms, cudaStream_t stream) {
  const Plan tiles = plan(kFmaWidths, p, sms);
  if (tiles.edge == 4) return launch_fma<T, 4, 1>(p, stream);
  switch (tiles.width) {
    case 16:
      return launch_fma<T, 8, 1>(p, stream);
    case 32:
      return launch_fma<T, 8, 2>(p, stream);
    case 48:
      return launch_fma<T, 8, 3>(p, stream);
    case 96:
      return launch_fma<T, 8, 6>(p, stream);
    default:
      return launch_fma<T, 8, 12>(p, stream);
  }
}

// fp32, and fp16/bf16 before sm_80, take the FMA path; fp16/bf16 on sm_80+ take tensor cores.
template <typename T>
cudaError_t launch_typed(const DwsepConvParams& p, cudaStream_t stream) {
  Device d{};
  const cudaError_t err = query_device(&d);
  if (err != cudaSuccess) return err;
  if constexpr (std::is_same_v<T, float>) {
    return launch_fma_path<T>(p, d.sms, stream);
  } else {
    if (!d.sm80) return launch_fma_path<T>(p, d.sms, stream);
    const Plan tiles = plan(kMmaWidths, p, d.sms);
    if (tiles.edge == 4) return launch_wmma<T, 4, 1>(p, stream);
    switch (tiles.width) {
      case 32:
        return launch_wmma<T, 8, 1>(p, stream);
      case 64:
        return launch_wmma<T, 8, 2>(p, stream);
      case 96:
        return launch_wmma<T, 8, 3>(p, stream);
      default:
        return launch_wmma<T, 8, 6>(p, stream);
    }
  }
}

}  // namespace

cudaError_t launch_dwsep_conv(const DwsepConvParams& p, cudaStream_t stream) {
  return dispatch_dtype(p.dtype, [&](auto type) { return launch_typed<typename decltype(type)::type>(p, stream); });
}

}  // namespace dfanet::cuda
