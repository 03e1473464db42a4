// A CPU emulation of the CUDA execution model, just wide enough to run csrc/cuda's kernels and launchers unchanged
// on host memory, so CI without a GPU still executes their indexing, tiling, barriers and epilogues
// (tests/test_cuda_emulated.py). Built with g++ and ASan/UBSan (out-of-bounds accesses) or TSan (shared-memory
// races between barriers).
//
// Model: blocks run one after another, each as blockDim real threads; __shared__ is a function-local static (one
// block alive at a time) and dynamic shared memory a buffer per block; __syncthreads, __syncwarp and the warp shuffles are std::barriers; a WMMA fragment is the whole 16x16
// tile held by every lane, and a warp's load/mma/store computes it redundantly (products of the 16-bit inputs in
// fp32, like the tensor cores). Launches go through emu::launch (test_cuda_emulated.py rewrites the <<<>>> syntax).
// Global atomics are std::atomic_ref operations and __threadfence a sequentially consistent fence (blocks never run
// at once, so a block that spins (__nanosleep) for another block's work aborts: it may only wait for blocks that
// ran before it). Not modelled: warp-synchronous code without barriers, caches (__ldcg is a plain load), timing.
#pragma once

// The kernels' headers (csrc/cuda/common.cuh) take the emulator's dynamic shared memory instead of `extern __shared__`.
#define DFANET_CUDA_EMULATOR 1

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <new>
#include <thread>
#include <type_traits>
#include <vector>

#undef __shared__
#define __shared__ static
#define __launch_bounds__(...)

#define EMU_CHECK(cond, msg)                                                     \
  do {                                                                           \
    if (!(cond)) {                                                               \
      std::fprintf(stderr, "emu: %s:%d: %s (%s)\n", __FILE__, __LINE__, msg, #cond); \
      std::abort();                                                              \
    }                                                                            \
  } while (0)

inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

namespace emu {

struct Block {
  Block(unsigned threads, size_t dynamic_bytes)
      : sync(threads), shfl(threads), dynamic(new (std::align_val_t{32}) unsigned char[dynamic_bytes]) {
    for (unsigned w = 0; w < threads / 32; ++w) warps.push_back(std::make_unique<std::barrier<>>(32));
  }
  std::barrier<> sync;
  std::vector<std::unique_ptr<std::barrier<>>> warps;
  std::vector<float> shfl;
  // The launch's dynamic shared memory, exactly its size (ASan flags any access past it), not zeroed, 32-byte
  // aligned as common.cuh declares it (WMMA pointers).
  struct AlignedDelete {
    void operator()(unsigned char* p) const { ::operator delete[](p, std::align_val_t{32}); }
  };
  std::unique_ptr<unsigned char[], AlignedDelete> dynamic;
};

inline Block* g_block = nullptr;
inline cudaError_t g_last_error = cudaSuccess;

inline unsigned linear_thread() { return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z); }

// `kernel<<<grid, block, smem, stream>>>(args)` becomes `emu::launch([&] { kernel(args); }, grid, block, smem, stream)`.
template <class Body>
void launch(Body body, dim3 grid, dim3 block, size_t dynamic_bytes = 0, cudaStream_t = nullptr) {
  const unsigned threads = block.x * block.y * block.z;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || threads == 0 || threads > 1024 || grid.y > 65535 ||
      grid.z > 65535) {
    g_last_error = cudaErrorInvalidConfiguration;
    return;
  }
  EMU_CHECK(threads % 32 == 0, "the emulator runs whole warps only");
  for (unsigned bz = 0; bz < grid.z; ++bz) {
    for (unsigned by = 0; by < grid.y; ++by) {
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        Block state(threads, dynamic_bytes);
        g_block = &state;
        std::vector<std::thread> pool;
        pool.reserve(threads);
        for (unsigned tz = 0; tz < block.z; ++tz) {
          for (unsigned ty = 0; ty < block.y; ++ty) {
            for (unsigned tx = 0; tx < block.x; ++tx) {
              pool.emplace_back([=, &body] {
                threadIdx = uint3{tx, ty, tz};
                blockIdx = uint3{bx, by, bz};
                blockDim = block;
                gridDim = grid;
                body();
              });
            }
          }
        }
        for (std::thread& t : pool) t.join();
        g_block = nullptr;
      }
    }
  }
}

inline float to_float(float v) { return v; }
inline float to_float(__half v) { return __half2float(v); }
inline float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

}  // namespace emu

namespace emu {
inline void* dynamic_shared() { return g_block->dynamic.get(); }
}  // namespace emu

inline void __syncthreads() { emu::g_block->sync.arrive_and_wait(); }

inline unsigned atomicAdd(unsigned* p, unsigned v) { return std::atomic_ref<unsigned>(*p).fetch_add(v); }
inline unsigned atomicExch(unsigned* p, unsigned v) { return std::atomic_ref<unsigned>(*p).exchange(v); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
// A spin-wait's pause: nothing the waiter waits for can happen while its block runs alone.
inline void __nanosleep(unsigned) { EMU_CHECK(false, "a block waits for a block that has not run (deadlock)"); }
template <class T>
T __ldcg(const T* p) {
  return *p;
}

// A barrier of the calling thread's warp (full mask only), as on Volta+ where lanes may diverge.
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  EMU_CHECK(mask == 0xffffffffu, "only full-warp __syncwarp is emulated");
  emu::g_block->warps[emu::linear_thread() / 32]->arrive_and_wait();
}

inline float __shfl_down_sync(unsigned mask, float v, unsigned delta, int width = 32) {
  EMU_CHECK(mask == 0xffffffffu && width == 32, "only full-warp shuffles are emulated");
  const unsigned t = emu::linear_thread(), lane = t % 32, warp = t / 32;
  std::barrier<>& bar = *emu::g_block->warps[warp];
  emu::g_block->shfl[t] = v;
  bar.arrive_and_wait();
  const float r = lane + delta < 32 ? emu::g_block->shfl[t + delta] : v;
  bar.arrive_and_wait();  // everyone has read before the next shuffle overwrites
  return r;
}

namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "the emulator has 16x16x16 fragments only");
  static_assert(!std::is_same_v<Use, accumulator> || std::is_same_v<T, float>, "fp32 accumulators only");
  static_assert(std::is_same_v<Use, accumulator> || std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>,
                "16-bit A/B fragments only");
  float v[16][16];
};

template <class F>
void fill_fragment(F& f, float value) {
  for (auto& row : f.v)
    for (float& x : row) x = value;
}

// WMMA's rules: a 256-bit aligned pointer and a pitch that is a multiple of 16 bytes.
template <class T>
void check_layout(const T* p, unsigned ldm) {
  EMU_CHECK(reinterpret_cast<std::uintptr_t>(p) % 32 == 0, "wmma pointer not 32-byte aligned");
  EMU_CHECK(ldm * sizeof(T) % 16 == 0, "wmma ldm not a multiple of 16 bytes");
}

template <class Use, class T, class Layout>
void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& f, const T* p, unsigned ldm) {
  check_layout(p, ldm);
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c)
      f.v[r][c] = emu::to_float(std::is_same_v<Layout, row_major> ? p[r * ldm + c] : p[c * ldm + r]);
}

template <class T, class LA, class LB>
void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, T, LA>& a,
              const fragment<matrix_b, 16, 16, 16, T, LB>& b, const fragment<accumulator, 16, 16, 16, float>& c) {
  float out[16][16];
  for (int r = 0; r < 16; ++r)
    for (int col = 0; col < 16; ++col) {
      float s = c.v[r][col];
      for (int k = 0; k < 16; ++k) s = std::fma(a.v[r][k], b.v[k][col], s);
      out[r][col] = s;
    }
  for (int r = 0; r < 16; ++r)
    for (int col = 0; col < 16; ++col) d.v[r][col] = out[r][col];
}

// Every lane holds the whole tile; lane 0 writes it (the other lanes' identical writes would only be races).
inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ldm,
                              layout_t layout) {
  check_layout(p, ldm);
  if (emu::linear_thread() % 32 != 0) return;
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) (layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = f.v[r][c];
}

}  // namespace nvcuda::wmma
