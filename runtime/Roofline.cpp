// Bandwidth and FMA-rate probes.
#include "runtime/Roofline.h"

#include "runtime/cpu/Isa.h"
#include "runtime/cpu/IsaKernels.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <vector>

namespace kvplan {

namespace {

using Clock = std::chrono::steady_clock;

/// Sums [p, p + n), n a multiple of kSumBlock.
float sum(const float *p, int64_t n) {
  switch (cpu::activeIsa()) {
  case cpu::Isa::avx512: return cpu::sumAvx512(p, n);
  case cpu::Isa::avx2: return cpu::sumAvx2(p, n);
  case cpu::Isa::scalar: break;
  }
  return cpu::sumScalar(p, n);
}

double fmaLoop(int64_t iterations, float *sink) {
  switch (cpu::activeIsa()) {
  case cpu::Isa::avx512: return cpu::fmaLoopAvx512(iterations, sink);
  case cpu::Isa::avx2: return cpu::fmaLoopAvx2(iterations, sink);
  case cpu::Isa::scalar: break;
  }
  return cpu::fmaLoopScalar(iterations, sink);
}

} // namespace

double measureReadBandwidth(ThreadPool &pool, uint64_t bytes) {
  // STREAM's method, for a read-only kernel (decode reads its weights and
  // writes next to nothing): a buffer far larger than the last-level cache,
  // every thread reading its own contiguous share in whole 4 KiB blocks, a
  // pass timed from the first thread's start to the last one's end, the
  // fastest of several passes after an untimed one.
  const int64_t blocks = std::max<int64_t>(1, int64_t(bytes / 4 / cpu::kSumBlock));
  const uint64_t used = uint64_t(blocks) * cpu::kSumBlock * 4;
  float *buf = static_cast<float *>(std::aligned_alloc(4096, size_t(used)));
  if (!buf) throw std::runtime_error("cannot allocate the bandwidth probe's buffer");
  // Each thread first touches the part it will read, as the kernels do (the
  // pool splits a count the same way every time).
  pool.parallelFor(blocks, [&](int64_t b, int64_t e) {
    std::fill(buf + b * cpu::kSumBlock, buf + e * cpu::kSumBlock, 1.0f);
  });
  double best = 0;
  std::vector<float> sink(size_t(pool.size()));
  for (int pass = 0; pass <= 10; ++pass) {
    auto t0 = Clock::now();
    pool.parallelForThreads(blocks, [&](int t, int64_t b, int64_t e) {
      sink[size_t(t)] = sum(buf + b * cpu::kSumBlock, (e - b) * cpu::kSumBlock);
    });
    double s = std::chrono::duration<double>(Clock::now() - t0).count();
    if (pass > 0) best = std::max(best, double(used) / s / 1e9);
  }
  volatile float keep = sink[0];
  (void)keep;
  std::free(buf);
  return best;
}

double measurePeakGflops(ThreadPool &pool) {
  double best = 0;
  std::vector<float> sink(size_t(pool.size()));
  std::vector<double> flops(size_t(pool.size()));
  const int64_t iterations = 1 << 22;
  for (int run = 0; run < 3; ++run) {
    auto t0 = Clock::now();
    pool.onEachThread([&](int t) { flops[size_t(t)] = fmaLoop(iterations, &sink[size_t(t)]); });
    double s = std::chrono::duration<double>(Clock::now() - t0).count();
    double total = 0;
    for (double f : flops) total += f;
    best = std::max(best, total / s / 1e9);
  }
  volatile float keep = sink[0];
  (void)keep;
  return best;
}

} // namespace kvplan
