// The persistent thread pool.
#include "runtime/cpu/ThreadPool.h"

#include <algorithm>

namespace kvplan {

int defaultThreadCount() {
  unsigned n = std::thread::hardware_concurrency();
  return n ? int(n) : 1;
}

namespace {
inline void cpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}
// About a millisecond of spinning before a worker sleeps: longer than the
// gap between the jobs of one step, short enough not to keep a core busy
// when nothing runs.
constexpr int kSpins = 1 << 14;
} // namespace

ThreadPool::ThreadPool(int threads) {
  int n = std::max(threads, 1);
  for (int i = 1; i < n; ++i)
    workers.emplace_back([this, i] { workerLoop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex);
    stopping.store(true);
    generation.fetch_add(1, std::memory_order_release);
  }
  wake.notify_all();
  for (std::thread &t : workers) t.join();
}

void ThreadPool::workerLoop(int index) {
  uint64_t seen = 0;
  for (;;) {
    uint64_t g = generation.load(std::memory_order_acquire);
    for (int i = 0; g == seen && i < kSpins; ++i) {
      cpuRelax();
      g = generation.load(std::memory_order_acquire);
    }
    if (g == seen) {
      std::unique_lock<std::mutex> lock(mutex);
      sleeping.fetch_add(1);
      wake.wait(lock, [&] { return generation.load(std::memory_order_acquire) != seen; });
      sleeping.fetch_sub(1);
      g = generation.load(std::memory_order_acquire);
    }
    seen = g;
    if (stopping.load()) return;
    job(jobContext, index);
    pending.fetch_sub(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::run(Job fn, void *context) {
  if (workers.empty()) {
    fn(context, 0);
    return;
  }
  job = fn;
  jobContext = context;
  pending.store(int(workers.size()), std::memory_order_relaxed);
  {
    // Publishing under the lock orders it with a worker about to sleep:
    // that worker either sees the new generation or is already waiting.
    std::lock_guard<std::mutex> lock(mutex);
    generation.fetch_add(1, std::memory_order_release);
  }
  if (sleeping.load() > 0)
    wake.notify_all();
  fn(context, 0);
  while (pending.load(std::memory_order_acquire) != 0) cpuRelax();
}

void ThreadPool::onEachThread(const std::function<void(int)> &fn) {
  run([](void *c, int t) { (*static_cast<const std::function<void(int)> *>(c))(t); },
      const_cast<std::function<void(int)> *>(&fn));
}

} // namespace kvplan
