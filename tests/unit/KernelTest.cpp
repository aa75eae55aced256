// The vector kernels against the portable ones, on every ISA this CPU has:
// every weight type, row counts that leave every remainder, and shapes with
// a tail after the last full vector.
#include "runtime/cpu/Kernels.h"
#include "formats/WeightFormats.h"
#include "runtime/cpu/Isa.h"
#include "runtime/cpu/IsaKernels.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

using namespace kvplan;
using namespace kvplan::cpu;

namespace {

std::vector<float> randomFloats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-1, 1);
  std::vector<float> v(n);
  for (float &x : v) x = d(rng);
  return v;
}

/// Runs `fn` on every ISA this CPU supports, restoring the active one.
template <typename F> void forEachIsa(F fn) {
  Isa saved = activeIsa();
  for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512}) {
    if (int(isa) > int(detectIsa())) continue;
    setActiveIsa(isa);
    SCOPED_TRACE(isaName(isa));
    fn(isa);
  }
  setActiveIsa(saved);
}

struct Matrix {
  std::vector<char> data;
  std::vector<float> scales;
  TensorRef ref;
  Matrix(DType dtype, int64_t J, int64_t K, uint32_t seed) {
    std::vector<float> f = randomFloats(size_t(J * K), seed);
    if (dtype == DType::i8) {
      const int64_t groups = (K + kInt8Group - 1) / kInt8Group;
      data.resize(size_t(J * K));
      for (int64_t j = 0; j < J; ++j)
        for (int64_t g = 0; g < groups; ++g) scales.push_back(0.01f * float(1 + (j + g) % 7));
      for (int64_t i = 0; i < J * K; ++i) data[size_t(i)] = int8_t(int(f[size_t(i)] * 127));
      ref = {data.data(), dtype, scales.data(), kInt8Group};
    } else {
      data.resize(size_t(J * K * dtypeBytes(dtype)));
      convertElements(f.data(), DType::f32, data.data(), dtype, J * K);
      ref = {data.data(), dtype};
    }
  }
};

} // namespace

TEST(Kernels, LinearMatchesThePortableKernelOnEveryIsa) {
  for (DType dtype : {DType::f32, DType::bf16, DType::f16, DType::i8}) {
    SCOPED_TRACE(dtypeName(dtype));
    for (auto [K, J] : {std::pair<int64_t, int64_t>{96, 37}, {100, 12}, {7, 5}, {256, 64}}) {
      Matrix w(dtype, J, K, 3);
      std::vector<float> bias = randomFloats(size_t(J), 4);
      for (int64_t rows : {1, 2, 3, 4, 5, 6, 7, 11, 13}) {
        std::vector<float> x = randomFloats(size_t(rows * K), 5);
        // The result split over two outputs, as a fused Q/K/V linear is.
        auto run = [&](bool portable) {
          const int64_t split = J / 2;
          std::vector<float> a(size_t(rows * split)), b(size_t(rows * (J - split)));
          LinearOutputs out;
          out.data = {a.data(), b.data()};
          out.firstColumn = {0, split};
          out.columns = {split, J - split};
          if (portable)
            linearScalar(x.data(), rows, K, w.ref, {bias.data(), DType::f32}, out, 0, J);
          else
            linear(x.data(), rows, K, w.ref, {bias.data(), DType::f32}, out, 0, J);
          a.insert(a.end(), b.begin(), b.end());
          return a;
        };
        std::vector<float> want = run(true);
        forEachIsa([&](Isa) {
          std::vector<float> got = run(false);
          for (size_t i = 0; i < want.size(); ++i)
            ASSERT_NEAR(got[i], want[i], 1e-4f * (1 + std::abs(want[i])))
                << "rows " << rows << " K " << K << " J " << J << " at " << i;
        });
      }
    }
  }
}

TEST(Kernels, AResultDoesNotDependOnTheRowsRunWithIt) {
  // Row 0 alone and row 0 among 13: bit for bit (chunked prefill relies on
  // it).
  forEachIsa([&](Isa) {
    for (DType dtype : {DType::f32, DType::bf16, DType::i8}) {
      Matrix w(dtype, 40, 200, 8);
      std::vector<float> x = randomFloats(13 * 200, 9);
      std::vector<float> one(40), many(13 * 40);
      LinearOutputs a{{one.data()}, {0}, {40}}, b{{many.data()}, {0}, {40}};
      linear(x.data(), 1, 200, w.ref, {}, a, 0, 40);
      linear(x.data(), 13, 200, w.ref, {}, b, 0, 40);
      for (int j = 0; j < 40; ++j) ASSERT_EQ(one[size_t(j)], many[size_t(j)]) << dtypeName(dtype);
    }
  });
}

TEST(Kernels, AttentionMatchesAPlainComputationOnEveryIsa) {
  for (DType dtype : {DType::f32, DType::bf16, DType::f16}) {
    SCOPED_TRACE(dtypeName(dtype));
    const int64_t heads = 4, kvHeads = 2, hd = 20, pageSize = 4, pages = 6, seqLen = 21;
    std::vector<float> f = randomFloats(size_t(2 * pages * kvHeads * pageSize * hd), 1);
    std::vector<char> cache(f.size() * size_t(dtypeBytes(dtype)));
    convertElements(f.data(), DType::f32, cache.data(), dtype, int64_t(f.size()));
    CacheGeometry g;
    g.base = cache.data();
    g.dtype = dtype;
    g.pages = pages;
    g.pageSize = pageSize;
    g.kvHeads = kvHeads;
    g.headDim = hd;
    g.pagesPerSequence = pages;
    std::vector<int32_t> table = {5, 0, 3, 1, 4, 2}; // scattered pages
    std::vector<int32_t> positions = {seqLen - 1, 7, -1, 0};
    std::vector<float> q = randomFloats(size_t(4 * heads * hd), 2), scratch(64);
    auto run = [&] {
      std::vector<float> out(q.size(), 99.0f);
      cachedAttention(g, 0, q.data(), positions.data(), table.data(), 1, heads, 0.2, out.data(),
                      scratch.data(), 0, 4 * heads);
      return out;
    };
    // The expected values straight from the definition, in double, from the
    // cache's own (rounded) contents.
    std::vector<float> stored(f.size());
    convertElements(cache.data(), dtype, stored.data(), DType::f32, int64_t(f.size()));
    std::vector<float> want(q.size(), 0.0f);
    for (int64_t r = 0; r < 4; ++r) {
      if (positions[size_t(r)] < 0) continue;
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t kvh = h / (heads / kvHeads);
        std::vector<double> s;
        double mx = -1e300, sum = 0;
        for (int64_t t = 0; t <= positions[size_t(r)]; ++t) {
          const int64_t page = table[size_t(t / pageSize)], slot = t % pageSize;
          double d = 0;
          for (int64_t i = 0; i < hd; ++i)
            d += double(q[size_t(r * heads * hd + h * hd + i)]) *
                 stored[size_t(g.offset(0, 0, page, kvh, slot) + i)];
          s.push_back(d * 0.2);
          mx = std::max(mx, s.back());
        }
        for (double &v : s) sum += (v = std::exp(v - mx));
        for (int64_t t = 0; t <= positions[size_t(r)]; ++t) {
          const int64_t page = table[size_t(t / pageSize)], slot = t % pageSize;
          for (int64_t i = 0; i < hd; ++i)
            want[size_t(r * heads * hd + h * hd + i)] +=
                float(s[size_t(t)] / sum * stored[size_t(g.offset(0, 1, page, kvh, slot) + i)]);
        }
      }
    }
    const float tol = 1e-5f;
    forEachIsa([&](Isa) {
      std::vector<float> got = run();
      for (size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(got[i], want[i], tol) << i;
    });
  }
}

TEST(Kernels, IsaSelectionNeverExceedsTheCpu) {
  Isa saved = activeIsa();
  setActiveIsa(Isa::avx512);
  EXPECT_LE(int(activeIsa()), int(detectIsa()));
  setActiveIsa(Isa::scalar);
  EXPECT_EQ(activeIsa(), Isa::scalar);
  setActiveIsa(saved);
}

TEST(Kernels, VectorSiluMatchesTheLibmOneOnEveryIsa) {
  // Gate values from -100 to 100, where exp under- and overflows.
  const int64_t ff = 1003;
  std::vector<float> in(size_t(2 * ff));
  for (int64_t i = 0; i < ff; ++i) {
    in[size_t(i)] = -100.0f + 200.0f * float(i) / float(ff - 1);
    in[size_t(ff + i)] = 1.0f + float(i % 7);
  }
  std::vector<float> want(static_cast<size_t>(ff));
  for (int64_t i = 0; i < ff; ++i) {
    double g = in[size_t(i)];
    want[size_t(i)] = float(g / (1 + std::exp(-g)) * in[size_t(ff + i)]);
  }
  forEachIsa([&](Isa) {
    std::vector<float> got(static_cast<size_t>(ff));
    fusedFFN(in.data(), ff, got.data(), 0, 1);
    for (int64_t i = 0; i < ff; ++i)
      ASSERT_NEAR(got[size_t(i)], want[size_t(i)], 2e-6f * (1 + std::abs(want[size_t(i)])))
          << "gate " << in[size_t(i)];
  });
}
