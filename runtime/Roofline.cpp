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

/// Sums [p, p + n) as two interleaved halves.
float sum(const float *p, int64_t n) {
  const int64_t h = n / 2;
  float tail = n % 2 ? p[n - 1] : 0.0f;
  switch (cpu::activeIsa()) {
  case cpu::Isa::avx512: return cpu::sumAvx512(p, p + h, h) + tail;
  case cpu::Isa::avx2: return cpu::sumAvx2(p, p + h, h) + tail;
  case cpu::Isa::scalar: break;
  }
  return cpu::sumScalar(p, p + h, h) + tail;
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
  const int64_t n = int64_t(bytes / 4);
  float *buf = static_cast<float *>(std::aligned_alloc(4096, size_t(n) * 4));
  if (!buf) throw std::runtime_error("cannot allocate the bandwidth probe's buffer");
  // Each thread first touches the part it will read, as the kernels do.
  pool.parallelFor(n, [&](int64_t b, int64_t e) {
    std::fill(buf + b, buf + e, 1.0f);
  });
  double best = 0;
  std::vector<float> sink(size_t(pool.size()));
  for (int pass = 0; pass < 6; ++pass) {
    auto t0 = Clock::now();
    pool.parallelForThreads(n, [&](int t, int64_t b, int64_t e) {
      sink[size_t(t)] = sum(buf + b, e - b);
    });
    double s = std::chrono::duration<double>(Clock::now() - t0).count();
    best = std::max(best, double(bytes) / s / 1e9);
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
