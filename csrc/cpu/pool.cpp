// A caching allocator for the outputs of the CPU kernels.
//
// Why: every op of a forward returns a fresh tensor, and glibc serves large blocks with mmap, so each forward
// faults its activations in page by page and the kernel zeroes every page. On the machines we measured (a VM with
// memory-cgroup accounting) writing a fresh 40 MB tensor took 25 ms against 7 ms for a reused one, and perf put
// ~21 ms of a 95 ms DFANet A forward (1 thread, 512 x 1024) in the kernel's page-fault path. ONNX Runtime and
// OpenVINO avoid this with their arenas; this pool does the same for our ops' outputs only.
//
// How: freed blocks are kept (up to a byte limit) and handed out again for a request of at most their size and at
// least half of it. A tensor's storage returns its block when the last reference dies, so nothing is ever reused
// while a caller can still see it. Blocks of 2 MiB and more are 2 MiB aligned and advised as huge pages (Linux),
// so even their first use faults 512x less often. Live bytes are reported to the profiler exactly as torch's own
// CPU allocator does (torch.profiler's profile_memory sees them; freed-but-cached bytes do not count as live).
//
// DFANET_CPU_POOL_MB (read once, default 1024) caps the cached (free) bytes; 0 disables caching.
#include "pool.h"

#include <ATen/EmptyTensor.h>
#include <c10/core/Allocator.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <new>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace dfanet::cpu {
namespace {

constexpr size_t kHuge = size_t{2} << 20;

struct Block {
  void* ptr;
  size_t capacity;
};

class Pool final : public c10::Allocator {
 public:
  Pool() {
    const char* env = std::getenv("DFANET_CPU_POOL_MB");
    limit_ = (env ? static_cast<size_t>(std::strtoull(env, nullptr, 10)) : size_t{1024}) << 20;
  }

  c10::DataPtr allocate(size_t n) override {
    Block* block = take(n);
    if (block == nullptr) block = fresh(n);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      live_ += block->capacity;
    }
    report(block->ptr, static_cast<int64_t>(block->capacity));
    return {block->ptr, block, &Pool::release, c10::Device(c10::DeviceType::CPU)};
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  static Pool& instance();

 private:
  static void release(void* ctx) { instance().give_back(static_cast<Block*>(ctx)); }

  // The smallest cached block that fits n bytes without wasting more than half of it, or nullptr.
  Block* take(size_t n) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = free_.lower_bound(n);
    if (it == free_.end() || it->first > 2 * n + 4096) return nullptr;
    Block* block = it->second;
    free_.erase(it);
    cached_ -= block->capacity;
    return block;
  }

  static Block* fresh(size_t n) {
    const size_t align = n >= kHuge ? kHuge : 64;
    const size_t capacity = (std::max<size_t>(n, 1) + align - 1) / align * align;
    void* ptr = std::aligned_alloc(align, capacity);
    if (ptr == nullptr) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (align == kHuge) madvise(ptr, capacity, MADV_HUGEPAGE);  // advice only: failure is harmless
#endif
    return new Block{ptr, capacity};
  }

  void give_back(Block* block) {
    report(block->ptr, -static_cast<int64_t>(block->capacity));
    {
      std::lock_guard<std::mutex> lock(mutex_);
      live_ -= block->capacity;
      if (cached_ + block->capacity <= limit_) {
        cached_ += block->capacity;
        free_.emplace(block->capacity, block);
        return;
      }
    }
    std::free(block->ptr);
    delete block;
  }

  void report(void* ptr, int64_t delta) {
    if (c10::memoryProfilingEnabled()) {
      size_t live, cached;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        live = live_, cached = cached_;
      }
      c10::reportMemoryUsageToProfiler(ptr, delta, live, live + cached, c10::Device(c10::DeviceType::CPU));
    }
  }

  std::mutex mutex_;
  std::multimap<size_t, Block*> free_;  // capacity -> cached block
  size_t cached_ = 0, live_ = 0, limit_ = 0;
};

// Never destroyed: tensors may outlive static destructors at interpreter exit.
Pool& Pool::instance() {
  static Pool* pool = new Pool();
  return *pool;
}

}  // namespace

at::Tensor pooled_empty_nhwc(at::IntArrayRef shape) {
  static Pool& pool = Pool::instance();
  return at::Tensor(at::detail::empty_generic(shape, &pool, c10::DispatchKeySet(c10::DispatchKey::CPU), at::kFloat,
                                              at::MemoryFormat::ChannelsLast));
}

}  // namespace dfanet::cpu
