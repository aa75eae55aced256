// Microbenchmarks of the CPU kernels (Google Benchmark), runnable alone:
//   build/bin/kvplan-kernel-bench [--benchmark_filter=Gemv]
// GEMV and attention report bytes per second (they stream memory); GEMM
// reports FLOPs per second. KVPLAN_ISA=scalar|avx2|avx512 picks the kernels;
// KVPLAN_BENCH_THREADS the thread count (default: all cores).
#include "runtime/cpu/Kernels.h"
#include "runtime/cpu/ThreadPool.h"
#include "support/Half.h"
#include "runtime/cpu/Isa.h"

#include <benchmark/benchmark.h>

#include <cstdlib>
#include <random>
#include <vector>

using namespace kvplan;

namespace {

ThreadPool &pool() {
  static ThreadPool p([] {
    const char *env = std::getenv("KVPLAN_BENCH_THREADS");
    return env ? std::atoi(env) : defaultThreadCount();
  }());
  return p;
}

std::vector<float> randomFloats(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-1, 1);
  std::vector<float> v(static_cast<size_t>(n));
  for (float &x : v) x = d(rng);
  return v;
}

/// A [J, K] weight matrix in `dtype` (int8: with group scales; int4: with
/// group scales and minimums), kept alive.
struct Weights {
  std::vector<char> data;
  std::vector<float> scales, mins;
  std::vector<uint8_t> exponents;
  cpu::TensorRef ref;
  int64_t bytes = 0;

  Weights(DType dtype, int64_t J, int64_t K) {
    std::vector<float> f = randomFloats(J * K, 7);
    if (dtype == DType::mxfp4) {
      // Codes from the random values' bits, a scale byte a group: the
      // layout's bytes are what the kernel reads, whatever the values.
      const int64_t groups = (K + kMxfp4Group - 1) / kMxfp4Group;
      data.resize(size_t(J * groups * 16));
      for (size_t i = 0; i < data.size(); ++i) data[i] = char(int((f[i] + 1) * 127.5f));
      exponents.assign(size_t(J * groups), 120);
      ref = {data.data(), dtype, nullptr, kMxfp4Group, nullptr, exponents.data()};
      bytes = int64_t(data.size() + exponents.size());
    } else if (dtype == DType::i4) {
      // Codes from the random values; the layout's bytes, scales and
      // minimums are what the kernel reads, whatever the values.
      const int64_t groups = (K + kInt4Group - 1) / kInt4Group;
      data.assign(size_t(J * groups * 16), 0);
      for (int64_t j = 0; j < J; ++j)
        for (int64_t k = 0; k < K; ++k) {
          const int code = int((f[size_t(j * K + k)] + 1) * 7.5f);
          data[size_t((j * groups + k / 32) * 16 + k % 16)] |= char(code << (k % 32 < 16 ? 0 : 4));
        }
      scales.assign(size_t(J * groups), 2.0f / 15);
      mins.assign(size_t(J * groups), -1.0f);
      ref = {data.data(), dtype, scales.data(), kInt4Group, mins.data()};
      bytes = int64_t(data.size() + scales.size() * 8);
    } else if (dtype == DType::i8) {
      data.resize(size_t(J * K));
      const int64_t groups = (K + kInt8Group - 1) / kInt8Group;
      for (int64_t j = 0; j < J; ++j)
        for (int64_t g = 0; g < groups; ++g) {
          scales.push_back(1.0f / 127);
          for (int64_t k = g * kInt8Group; k < std::min(K, (g + 1) * kInt8Group); ++k)
            data[size_t(j * K + k)] = int8_t(f[size_t(j * K + k)] * 127);
        }
      ref = {data.data(), dtype, scales.data(), kInt8Group};
      bytes = J * K + int64_t(scales.size()) * 4;
    } else {
      data.resize(size_t(J * K * dtypeBytes(dtype)));
      convertElements(f.data(), DType::f32, data.data(), dtype, J * K);
      ref = {data.data(), dtype};
      bytes = int64_t(data.size());
    }
  }
};

void runLinear(benchmark::State &state, DType dtype, int64_t rows) {
  const int64_t K = state.range(0), J = state.range(1);
  Weights w(dtype, J, K);
  std::vector<float> x = randomFloats(rows * K, 3), y(static_cast<size_t>(rows * J));
  cpu::LinearOutputs out;
  out.data = {y.data()};
  out.firstColumn = {0};
  out.columns = {J};
  for (auto _ : state) {
    pool().parallelFor(J, [&](int64_t b, int64_t e) {
      cpu::linear(x.data(), rows, K, w.ref, {}, out, b, e);
    });
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * w.bytes);
  state.counters["GFLOP/s"] = benchmark::Counter(double(2 * rows * K * J) * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(cpu::isaName(cpu::activeIsa())) + ", " +
                 std::to_string(pool().size()) + " threads");
}

void BM_Gemv_f32(benchmark::State &s) { runLinear(s, DType::f32, 1); }
void BM_Gemv_bf16(benchmark::State &s) { runLinear(s, DType::bf16, 1); }
void BM_Gemv_f16(benchmark::State &s) { runLinear(s, DType::f16, 1); }
void BM_Gemv_int8(benchmark::State &s) { runLinear(s, DType::i8, 1); }
void BM_Gemv_int4(benchmark::State &s) { runLinear(s, DType::i4, 1); }
void BM_Gemv_mxfp4(benchmark::State &s) { runLinear(s, DType::mxfp4, 1); }
void BM_Gemm64_f32(benchmark::State &s) { runLinear(s, DType::f32, 64); }
void BM_Gemm64_bf16(benchmark::State &s) { runLinear(s, DType::bf16, 64); }
// A decode step of 8 sequences: each weight serves eight rows.
void BM_Batch8_bf16(benchmark::State &s) { runLinear(s, DType::bf16, 8); }
void BM_Gemm64_int8(benchmark::State &s) { runLinear(s, DType::i8, 64); }
void BM_Gemm64_int4(benchmark::State &s) { runLinear(s, DType::i4, 64); }
void BM_Gemm64_mxfp4(benchmark::State &s) { runLinear(s, DType::mxfp4, 64); }

// Shapes of a stories110M-sized layer (hidden 768, ffn 2048) and a larger
// matrix that no cache holds.
#define SHAPES ->Args({768, 2048})->Args({2048, 768})->Args({8192, 8192})->Args({768, 32000})->UseRealTime()
BENCHMARK(BM_Gemv_f32) SHAPES;
BENCHMARK(BM_Gemv_bf16) SHAPES;
BENCHMARK(BM_Gemv_f16) SHAPES;
BENCHMARK(BM_Gemv_int8) SHAPES;
BENCHMARK(BM_Gemv_int4) SHAPES;
BENCHMARK(BM_Gemv_mxfp4) SHAPES;
BENCHMARK(BM_Gemm64_f32)->Args({768, 2048})->Args({2048, 768})->Args({768, 2304})->Args({768, 768})->UseRealTime();
BENCHMARK(BM_Gemm64_bf16)->Args({768, 2048})->UseRealTime();
BENCHMARK(BM_Batch8_bf16)->Args({768, 2048})->Args({768, 32000})->UseRealTime();
BENCHMARK(BM_Gemm64_int8)->Args({768, 2048})->UseRealTime();
BENCHMARK(BM_Gemm64_int4)->Args({768, 2048})->UseRealTime();
BENCHMARK(BM_Gemm64_mxfp4)->Args({768, 2048})->UseRealTime();

/// One decode row at position seq - 1 over a cache of `layers` layers of
/// `seq` keys in pages of 16 (in order), each layer's attention split
/// between the pool's threads as the executor splits it; bytes: the keys and
/// values read once.
void attentionOverCache(benchmark::State &state, DType dtype, int64_t heads, int64_t kvHeads,
                        int64_t layers) {
  const int64_t seq = state.range(0), hd = 64, pageSize = 16;
  const int64_t pages = (seq + pageSize - 1) / pageSize;
  std::vector<float> f = randomFloats(layers * 2 * pages * kvHeads * pageSize * hd, 5);
  std::vector<char> cache(f.size() * size_t(dtypeBytes(dtype)));
  convertElements(f.data(), DType::f32, cache.data(), dtype, int64_t(f.size()));
  cpu::CacheGeometry g;
  g.base = cache.data();
  g.dtype = dtype;
  g.pages = pages;
  g.pageSize = pageSize;
  g.kvHeads = kvHeads;
  g.headDim = hd;
  g.pagesPerSequence = pages;
  std::vector<int32_t> table(static_cast<size_t>(pages));
  for (int64_t i = 0; i < pages; ++i) table[size_t(i)] = int32_t(i);
  int32_t pos = int32_t(seq - 1);
  std::vector<float> q = randomFloats(heads * hd, 6), out(static_cast<size_t>(heads * hd));
  for (auto _ : state) {
    for (int64_t layer = 0; layer < layers; ++layer)
      pool().parallelFor(heads, [&](int64_t b, int64_t e) {
        cpu::cachedAttention(g, layer, q.data(), &pos, table.data(), 1, {heads, 0.125, 0},
                             out.data(), b, e);
      });
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * layers * 2 * seq * kvHeads * hd *
                          dtypeBytes(dtype));
}

// f32, 12 heads of their own, one layer (the cache in the CPU's caches).
void BM_AttentionOverCache(benchmark::State &state) {
  attentionOverCache(state, DType::f32, 12, 12, 1);
}
BENCHMARK(BM_AttentionOverCache)->Arg(256)->Arg(2048)->UseRealTime();

// SmolLM2-135M's bf16 cache: 9 query heads on 3 KV heads in each of 30
// layers (94 MiB at 4096 keys: it streams from memory, as in a decode step).
void BM_AttentionGqaBf16(benchmark::State &state) {
  attentionOverCache(state, DType::bf16, 9, 3, 30);
}
BENCHMARK(BM_AttentionGqaBf16)->Arg(512)->Arg(4096)->UseRealTime();

void BM_AddRmsNorm(benchmark::State &state) {
  const int64_t rows = state.range(0), cols = 768;
  std::vector<float> a = randomFloats(rows * cols, 1), b = randomFloats(rows * cols, 2);
  std::vector<float> w = randomFloats(cols, 3), n(a.size()), r(a.size());
  for (auto _ : state) {
    pool().parallelFor(rows, [&](int64_t lo, int64_t hi) {
      cpu::addRmsNorm(a.data(), b.data(), {w.data(), DType::f32}, cols, 1e-5, n.data(), r.data(),
                      lo, hi);
    });
    benchmark::DoNotOptimize(n.data());
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * rows * cols * 4 * 4);
}
BENCHMARK(BM_AddRmsNorm)->Arg(1)->Arg(64)->UseRealTime();

/// The cost of handing the pool an empty job: the floor under every kernel
/// of a decode step.
void BM_PoolDispatch(benchmark::State &state) {
  for (auto _ : state) pool().parallelFor(pool().size(), [](int64_t, int64_t) {});
}
BENCHMARK(BM_PoolDispatch)->UseRealTime();

} // namespace

BENCHMARK_MAIN();
