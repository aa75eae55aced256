// The prefill chunk's attention kernels of codegen/cuda/Kernels.cuh
// (attnTiledMma for a bf16 cache, on bf16 tensor cores; attnTiled, on tf32)
// run in the emulator against a double-precision softmax(q k^T) v computed
// here from the cache's layout (docs/artifact.md): a chunk starting
// mid-sequence, its pages out of order in the table, fewer active rows than
// the kernel was built for (the rest padding), head_dim 32, 64 and 128. Queries
// past the active rows and outputs start as NaN, so a read too far or a
// write missed shows. The tolerance (1e-5 of the outputs' scale) holds only
// with the queries and the probabilities split into two bf16 parts.
#include "tests/fakegpu/EmuKernels.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using namespace kvplan;

namespace {

class AttentionKernels : public kvplan::testing::EmuKernels {};

uint16_t bf16Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u); // round to nearest, ties to even
  return uint16_t(u >> 16);
}
float bf16Float(uint16_t h) {
  const uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

constexpr int kHeads = 4, kKvHeads = 2, kPage = 16, kPages = 8, kBuilt = 64, kActive = 45,
              kFirst = 50;

/// One kernel for head_dim `hd` (and a sliding window, 0: none): the launch
/// of its wrapper `name`.
struct AttnCase {
  std::string name;
  int hd;
  bool mma;
  int window = 0;
  std::string instance() const {
    const std::string dims = std::to_string(kHeads) + ", " + std::to_string(kKvHeads) + ", " +
                             std::to_string(hd) + ", " + std::to_string(kPage) + ", " +
                             std::to_string(kPages) + "LL, 2, 2" +
                             (window ? ", " + std::to_string(window) : "") + ">(a)";
    return mma ? "kvplan::attnTiledMma<float, " + dims
               : "kvplan::attnTiled<__nv_bfloat16, float, " + dims;
  }
};

TEST_F(AttentionKernels, TiledAttentionMatchesADoublePrecisionReference) {
  // Windows: 20 (the block's rows start reading at keys 31 to 63, the first
  // tile skipped where the block's rows are the later ones), 7, and 1 (each
  // row its own key alone).
  const AttnCase cases[] = {{"mma32", 32, true},          {"mma64", 64, true},
                            {"mma128", 128, true},        {"tf32_64", 64, false},
                            {"tf32_128", 128, false},     {"mma64_w20", 64, true, 20},
                            {"tf32_64_w20", 64, false, 20}, {"mma32_w7", 32, true, 7},
                            {"tf32_64_w1", 64, false, 1}};
  std::vector<std::pair<std::string, std::string>> kernels;
  for (const AttnCase &c : cases) kernels.push_back({c.name, c.instance()});
  compile(kernels);
  std::mt19937 rng(41);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int32_t table[kPages] = {3, 0, 7, 5, 1, 6, 2, 4};
  std::vector<int32_t> pos(kBuilt, -1);
  for (int r = 0; r < kActive; ++r) pos[size_t(r)] = kFirst + r;
  for (const AttnCase &c : cases) {
    SCOPED_TRACE(c.name);
    const int hd = c.hd, g = kHeads / kKvHeads;
    // The layer's keys and values ([2][pages][kv heads][page][hd]), every
    // slot up to the chunk's last position written (as the chunk's own
    // cache write does before its attention), the rest NaN.
    std::vector<uint16_t> cache(size_t(2 * kPages * kKvHeads * kPage * hd), bf16Bits(NAN));
    auto slot = [&](int kv, int t, int head) {
      return size_t((((kv * kPages + table[t / kPage]) * kKvHeads + head) * kPage + t % kPage) *
                    hd);
    };
    for (int kv = 0; kv < 2; ++kv)
      for (int t = 0; t < kFirst + kActive; ++t)
        for (int head = 0; head < kKvHeads; ++head)
          for (int d = 0; d < hd; ++d) cache[slot(kv, t, head) + size_t(d)] = bf16Bits(nd(rng));
    // q 32-byte aligned, as the plan places it (wmma's loads need it).
    const size_t n = size_t(kBuilt * kHeads * hd);
    std::vector<float> qBuffer(n + 8, NAN), out(n, NAN);
    float *q = qBuffer.data() + (8 - reinterpret_cast<uintptr_t>(qBuffer.data()) % 32 / 4) % 8;
    for (size_t i = 0; i < size_t(kActive * kHeads * hd); ++i) q[i] = nd(rng);
    const double scale = 1.0 / std::sqrt(double(hd));
    KernelLaunch::Args a{};
    a.p[0] = reinterpret_cast<char *>(q);
    a.p[1] = reinterpret_cast<char *>(cache.data());
    a.p[2] = reinterpret_cast<char *>(pos.data());
    a.p[3] = reinterpret_cast<char *>(const_cast<int32_t *>(table));
    a.p[4] = reinterpret_cast<char *>(out.data());
    a.i[0] = kActive;
    a.i[1] = 0;
    a.d[0] = scale;
    // Block (kv head, 2 tiles of 16 rows, the group's 2 heads): 4 warps.
    launch(c.name, a, kKvHeads, kBuilt / 32, 128, g / 2);
    double worst = 0;
    for (int r = 0; r < kBuilt; ++r)
      for (int h = 0; h < kHeads; ++h) {
        const float *got = &out[size_t((r * kHeads + h) * hd)];
        if (r >= kActive) {
          for (int d = 0; d < hd; ++d) ASSERT_TRUE(std::isnan(got[d])) << "padding row " << r;
          continue;
        }
        const int kvh = h / g, last = pos[size_t(r)];
        const int first = c.window ? std::max(0, last - c.window + 1) : 0;
        std::vector<double> s(size_t(last + 1)), want(size_t(hd), 0.0);
        double mx = -INFINITY, sum = 0;
        for (int t = first; t <= last; ++t) {
          double dot = 0;
          for (int d = 0; d < hd; ++d)
            dot += double(q[size_t((r * kHeads + h) * hd + d)]) *
                   bf16Float(cache[slot(0, t, kvh) + size_t(d)]);
          s[size_t(t)] = dot * scale;
          mx = std::max(mx, s[size_t(t)]);
        }
        for (int t = first; t <= last; ++t) {
          const double p = std::exp(s[size_t(t)] - mx);
          sum += p;
          for (int d = 0; d < hd; ++d)
            want[size_t(d)] += p * bf16Float(cache[slot(1, t, kvh) + size_t(d)]);
        }
        for (int d = 0; d < hd; ++d)
          worst = std::max(worst, std::abs(double(got[d]) - want[size_t(d)] / sum));
      }
    // The outputs are averages of values of about 1: 1e-5 is about 2^-17
    // (measured: 3e-6 on bf16 tensor cores, 2e-3 without the queries' small
    // part; 7e-7 on tf32).
    EXPECT_LT(worst, 1e-5) << "largest error of an output";
  }
}

} // namespace
