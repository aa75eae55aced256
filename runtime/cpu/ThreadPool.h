// A persistent pool of worker threads for the CPU kernels: created once,
// reused for every step, no allocation on the hot path.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace kvplan {

class ThreadPool {
public:
  /// `threads` workers in all, the calling thread included (at least 1).
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool &) = delete;
  ThreadPool &operator=(const ThreadPool &) = delete;

  int size() const { return int(workers.size()) + 1; }

  /// Runs fn(begin, end) over [0, count) split into one contiguous range per
  /// thread, and returns when all are done. A template, so a lambda is
  /// called directly and nothing is allocated.
  template <typename F> void parallelFor(int64_t count, F &&fn) {
    parallelForThreads(count, [&](int, int64_t b, int64_t e) { fn(b, e); });
  }

  /// parallelFor that also passes the thread's index (for per-thread
  /// scratch memory).
  template <typename F> void parallelForThreads(int64_t count, F &&fn) {
    if (count <= 0) return;
    int64_t n = size();
    if (n == 1 || count == 1) {
      fn(0, int64_t(0), count);
      return;
    }
    struct Range {
      int64_t count, n;
      F *fn;
    } range{count, n, &fn};
    run(
        [](void *c, int t) {
          auto *r = static_cast<Range *>(c);
          int64_t begin = r->count * t / r->n, end = r->count * (t + 1) / r->n;
          if (begin < end) (*r->fn)(t, begin, end);
        },
        &range);
  }
  /// Runs fn(thread index) once on every thread.
  void onEachThread(const std::function<void(int)> &fn);

private:
  // Jobs are a function pointer and a context on the caller's stack, so
  // dispatching allocates nothing.
  using Job = void (*)(void *context, int thread);
  void workerLoop(int index);
  void run(Job fn, void *context);

  // A decode step hands the pool hundreds of short jobs, so workers spin on
  // `generation` for a while before sleeping on the condition variable, and
  // the caller spins on `pending`: a futex wake-up per job would cost more
  // than many of the jobs.
  std::vector<std::thread> workers;
  std::mutex mutex;
  std::condition_variable wake;
  Job job = nullptr;
  void *jobContext = nullptr;
  std::atomic<uint64_t> generation{0};
  std::atomic<int> pending{0};
  std::atomic<int> sleeping{0};
  std::atomic<bool> stopping{false};
};

/// The number of threads to use when none is given: the machine's cores.
int defaultThreadCount();

} // namespace kvplan
