// The persistent thread pool.
#include "runtime/ThreadPool.h"

#include <algorithm>

namespace kvplan {

int defaultThreadCount() {
  unsigned n = std::thread::hardware_concurrency();
  return n ? int(n) : 1;
}

ThreadPool::ThreadPool(int threads) {
  int n = std::max(threads, 1);
  for (int i = 1; i < n; ++i)
    workers.emplace_back([this, i] { workerLoop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex);
    stopping = true;
  }
  wake.notify_all();
  for (std::thread &t : workers) t.join();
}

void ThreadPool::workerLoop(int index) {
  uint64_t seen = 0;
  for (;;) {
    Job current;
    void *context;
    {
      std::unique_lock<std::mutex> lock(mutex);
      wake.wait(lock, [&] { return stopping || generation != seen; });
      if (stopping) return;
      seen = generation;
      current = job;
      context = jobContext;
    }
    current(context, index);
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (--pending == 0) done.notify_one();
    }
  }
}

void ThreadPool::run(Job fn, void *context) {
  if (workers.empty()) {
    fn(context, 0);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mutex);
    job = fn;
    jobContext = context;
    pending = int(workers.size());
    ++generation;
  }
  wake.notify_all();
  fn(context, 0);
  std::unique_lock<std::mutex> lock(mutex);
  done.wait(lock, [&] { return pending == 0; });
  job = nullptr;
}

void ThreadPool::onEachThread(const std::function<void(int)> &fn) {
  run([](void *c, int t) { (*static_cast<const std::function<void(int)> *>(c))(t); },
      const_cast<std::function<void(int)> *>(&fn));
}

} // namespace kvplan
