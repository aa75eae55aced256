// The CPU kernels against plain computations written here (loops in double
// that share no code with runtime/cpu/), on every ISA this CPU has, the
// portable level included: every weight type, row counts that leave every
// remainder, and shapes with a tail after the last full vector.
#include "support/Half.h"
#include "plan/PlanOps.h"
#include "runtime/cpu/Kernels.h"
#include "runtime/cpu/Isa.h"
#include "runtime/cpu/IsaKernels.h"
#include "runtime/cpu/LinearInt4Impl.h"
#include "tests/common/ActivationsScope.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
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

/// The unit roundoff of f32.
constexpr double kU = 0x1p-24;

/// Higham's gamma_n = n u / (1 - n u): a value that went through at most n
/// f32 roundings (in any order) is within gamma_n of the exact one, relative
/// to the sum of the magnitudes of what was added up. The tolerances below
/// count roundings rather than trust how the kernels happen to block their
/// loops, so a kernel may reorder its sums without loosening a test.
double gammaBound(int64_t n) { return double(n) * kU / (1 - double(n) * kU); }

/// bf16 and f16 bits decoded here, not with runtime/ code, so that a decoding
/// bug shared by every ISA cannot hide.
double bf16Value(uint16_t h) {
  const uint32_t bits = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
double f16Value(uint16_t h) {
  const int e = (h >> 10) & 31, m = h & 1023;
  const double v = e == 0    ? std::ldexp(m, -24)
                   : e == 31 ? (m ? NAN : INFINITY)
                             : std::ldexp(1024 + m, e - 25);
  return h >> 15 ? -v : v;
}
/// Element i of f32, bf16 or f16 data, or of int8 data before its scale.
double valueAt(const void *data, DType dtype, int64_t i) {
  switch (dtype) {
  case DType::f32: return static_cast<const float *>(data)[i];
  case DType::bf16: return bf16Value(static_cast<const uint16_t *>(data)[i]);
  case DType::f16: return f16Value(static_cast<const uint16_t *>(data)[i]);
  case DType::i8: return static_cast<const int8_t *>(data)[i];
  case DType::i4: case DType::mxfp4: case DType::i32: break;
  }
  ADD_FAILURE() << "no float value in " << dtypeName(dtype);
  return 0;
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

/// forEachIsa under each activation mode (the int8 default first).
template <typename F> void forEachIsaAndActivations(F fn) {
  for (Activations mode : test::kBothActivations) {
    test::ActivationsScope scope(mode);
    SCOPED_TRACE(activationsName(mode));
    forEachIsa(fn);
  }
}

/// MXFP4's E2M1 code c as the OCP format defines it: sign in bit 3, a
/// two-bit exponent (bias 1; 0 is subnormal) and one mantissa bit.
double e2m1(int c) {
  const int e = (c >> 1) & 3, m = c & 1;
  const double v = e == 0 ? 0.5 * m : (1 + 0.5 * m) * std::ldexp(1.0, e - 1);
  return c & 8 ? -v : v;
}

struct Matrix {
  std::vector<char> data;
  std::vector<float> scales, mins;
  std::vector<int> codes; // int4, mxfp4: one per weight, as drawn
  std::vector<uint8_t> exponents; // mxfp4: each group's E8M0 byte, as drawn
  TensorRef ref;
  int64_t K;
  Matrix(DType dtype, int64_t J, int64_t K, uint32_t seed) : K(K) {
    std::vector<float> f = randomFloats(size_t(J * K), seed);
    if (dtype == DType::mxfp4) {
      // Random codes and scale bytes (2^-9 to 2^3 as scales), packed as
      // int4's nibbles; a partial last group's missing codes are 0.
      const int64_t groups = (K + 31) / 32;
      std::mt19937 rng(seed);
      std::uniform_int_distribution<int> code(0, 15), exponent(118, 130);
      data.assign(size_t(J * groups * 16), 0);
      for (int64_t j = 0; j < J; ++j) {
        for (int64_t g = 0; g < groups; ++g) exponents.push_back(uint8_t(exponent(rng)));
        for (int64_t k = 0; k < K; ++k) {
          codes.push_back(code(rng));
          const size_t byte = size_t((j * groups + k / 32) * 16 + k % 16);
          data[byte] = char(uint8_t(data[byte]) | uint8_t(codes.back() << (k % 32 < 16 ? 0 : 4)));
        }
      }
      ref = {data.data(), dtype, nullptr, kMxfp4Group, nullptr, exponents.data()};
    } else if (dtype == DType::i4) {
      // Random codes, scales and (mostly negative, as for centred weights)
      // minimums, packed here from the layout's definition: element i of
      // group g in the low nibble of byte 16g + i, element 16 + i in the
      // high nibble; a partial last group's missing codes are 0.
      const int64_t groups = (K + 31) / 32;
      std::mt19937 rng(seed);
      std::uniform_int_distribution<int> code(0, 15);
      data.assign(size_t(J * groups * 16), 0);
      for (int64_t j = 0; j < J; ++j) {
        for (int64_t g = 0; g < groups; ++g) {
          scales.push_back(0.01f * float(1 + (j + g) % 7));
          mins.push_back(scales.back() * (float((j * 3 + g) % 5) - 9.5f));
        }
        for (int64_t k = 0; k < K; ++k) {
          codes.push_back(code(rng));
          const size_t byte = size_t((j * groups + k / 32) * 16 + k % 16);
          data[byte] = char(uint8_t(data[byte]) | uint8_t(codes.back() << (k % 32 < 16 ? 0 : 4)));
        }
      }
      ref = {data.data(), dtype, scales.data(), kInt4Group, mins.data()};
    } else if (dtype == DType::i8) {
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
  /// w[j, k] as the kernels are to read it: widened to f32 (exactly), and
  /// for int8 times the scale of its group of kInt8Group along the row.
  double at(int64_t j, int64_t k) const {
    if (ref.dtype == DType::mxfp4)
      return e2m1(codes[size_t(j * K + k)]) *
             std::ldexp(1.0, exponents[size_t(j * ((K + 31) / 32) + k / 32)] - 127);
    if (ref.dtype == DType::i4) {
      const size_t g = size_t(j * ((K + 31) / 32) + k / 32);
      return codes[size_t(j * K + k)] * double(scales[g]) + double(mins[g]);
    }
    double v = valueAt(data.data(), ref.dtype, j * K + k);
    if (ref.dtype == DType::i8)
      v *= scales[size_t(j * ((K + kInt8Group - 1) / kInt8Group) + k / kInt8Group)];
    return v;
  }
  /// The magnitude a kernel's rounding of w[j, k]'s term scales with: its
  /// value's, or for int4 its code times scale and its minimum apart (the
  /// kernels sum those two parts apart).
  double magnitude(int64_t j, int64_t k) const {
    if (ref.dtype != DType::i4) return std::abs(at(j, k));
    const size_t g = size_t(j * ((K + 31) / 32) + k / 32);
    return std::abs(codes[size_t(j * K + k)] * double(scales[g])) + std::abs(double(mins[g]));
  }
  /// w[j, k] as an embedding lookup gives it: for int4, the code times the
  /// scale rounded to f32, plus the minimum rounded again (as ggml
  /// dequantizes).
  float lookup(int64_t j, int64_t k) const {
    if (ref.dtype != DType::i4) return float(at(j, k));
    const size_t g = size_t(j * ((K + 31) / 32) + k / 32);
    return float(double(float(codes[size_t(j * K + k)] * double(scales[g]))) + double(mins[g]));
  }
};

/// A linear's expected outputs and, for each, the sum of the magnitudes of
/// its terms (bias included), which scales its rounding error.
struct Expected {
  std::vector<double> value, magnitude;
};

/// out[r, j] = sum_k x[r, k] w[j, k] + bias[j] in double, laid out as the
/// kernels' outputs [rows, split] and [rows, J - split] one after the other.
Expected plainLinear(const std::vector<float> &x, int64_t rows, const Matrix &w, int64_t J,
                     const std::vector<float> &bias, int64_t split) {
  Expected e;
  e.value.resize(size_t(rows * J));
  e.magnitude.resize(size_t(rows * J));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < J; ++j) {
      double sum = bias[size_t(j)], mag = std::abs(sum);
      for (int64_t k = 0; k < w.K; ++k) {
        const double t = double(x[size_t(r * w.K + k)]) * w.at(j, k);
        sum += t;
        mag += std::abs(double(x[size_t(r * w.K + k)])) * w.magnitude(j, k);
      }
      const size_t at = size_t(j < split ? r * split + j
                                         : rows * split + r * (J - split) + (j - split));
      e.value[at] = sum;
      e.magnitude[at] = mag;
    }
  return e;
}

} // namespace

TEST(Kernels, LinearMatchesAPlainComputationOnEveryIsa) {
  // The f32-activation kernels; the int8-activation ones are LinearDot's.
  test::ActivationsScope f32Activations(Activations::f32);
  for (DType dtype : {DType::f32, DType::bf16, DType::f16, DType::i8, DType::i4, DType::mxfp4}) {
    SCOPED_TRACE(dtypeName(dtype));
    // K = 2048 makes the blocked kernels take the f32, bf16 and f16
    // features in several blocks (their weights would not fit in L2 at once);
    // K = 172 (stories260K's FFN) ends in a partial group of 12.
    for (const auto &shape : {std::pair<int64_t, int64_t>{96, 37}, {100, 12}, {7, 5}, {256, 64},
                              {2048, 70}, {172, 9}}) {
      const int64_t K = shape.first, J = shape.second; // variables: the lambdas capture them
      Matrix w(dtype, J, K, 3);
      std::vector<float> bias = randomFloats(size_t(J), 4);
      const int64_t split = J / 2;
      // Each term goes through at most its product, the int8 scale, the
      // additions on its way into the sum (fewer than K + ceil(K / 32) in
      // any order, the int8 group sums included) and the bias: gamma of
      // K + ceil(K / 32) + 3, relative to the sum of the terms' magnitudes.
      // Worst-case, so loose for large K, but it holds for every order of
      // summation; scaling an output by 1.001 still fails it at K <= 256.
      // int4 kernels sum code * x per group, scale that, and add each
      // minimum times its group's sum of x: through at most 32 + 2 ceil(K /
      // 32) + 6 roundings on one path and K + 4 on the other (the portable
      // kernel decodes each weight), relative to |x| (|code scale| + |min|).
      const int64_t groups = (K + kInt8Group - 1) / kInt8Group;
      const double bound = dtype == DType::i4 ? gammaBound(K + 2 * groups + 38)
                                              : gammaBound(K + groups + 3);
      for (int64_t rows : {1, 2, 3, 4, 5, 6, 7, 11, 13}) {
        std::vector<float> x = randomFloats(size_t(rows * K), 5);
        // The result split over two outputs, as a fused Q/K/V linear is.
        auto run = [&](bool portable) {
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
        const Expected want = plainLinear(x, rows, w, J, bias, split);
        const std::vector<float> portable = run(true);
        forEachIsa([&](Isa isa) {
          std::vector<float> got = run(false);
          for (size_t i = 0; i < got.size(); ++i) {
            ASSERT_LE(std::abs(got[i] - want.value[i]), bound * want.magnitude[i])
                << "rows " << rows << " K " << K << " J " << J << " at " << i << ": got "
                << got[i] << ", want " << want.value[i];
            // The vector kernels sum in another order than the portable one
            // (nothing promises bit identity across ISAs), yet at large K
            // they must agree more closely than the worst case above allows.
            // On the scalar level `linear` is the portable kernel itself.
            if (isa != Isa::scalar) {
              ASSERT_NEAR(got[i], portable[i], 1e-4f * (1 + std::abs(portable[i])))
                  << "rows " << rows << " K " << K << " J " << J << " at " << i;
            }
          }
        });
      }
    }
  }
}

TEST(Kernels, AResultDoesNotDependOnTheRowsRunWithIt) {
  // Each row alone and among 13: bit for bit (chunked prefill relies on it).
  // 13 rows take full tiles and a remainder whatever the tile's rows; K =
  // 2048 takes the narrower tiles of rows whose activations overflow L1.
  forEachIsaAndActivations([&](Isa) {
    for (DType dtype : {DType::f32, DType::bf16, DType::f16, DType::i8, DType::i4, DType::mxfp4})
      for (int64_t K : {200, 2048}) {
        Matrix w(dtype, 40, K, 8);
        std::vector<float> x = randomFloats(size_t(13 * K), 9);
        std::vector<float> one(40), many(13 * 40);
        LinearOutputs a{{one.data()}, {0}, {40}}, b{{many.data()}, {0}, {40}};
        linear(x.data(), 13, K, w.ref, {}, b, 0, 40);
        for (int64_t r = 0; r < 13; ++r) {
          linear(x.data() + r * K, 1, K, w.ref, {}, a, 0, 40);
          for (int64_t j = 0; j < 40; ++j)
            ASSERT_EQ(one[size_t(j)], many[size_t(r * 40 + j)])
                << dtypeName(dtype) << " K " << K << " row " << r << " feature " << j;
        }
      }
  });
}

TEST(Kernels, AResultDoesNotDependOnTheFeaturesRunWithIt) {
  // All 40 features in one call and split at 13 as two threads take them
  // (odd sizes, so a feature moves between a full tile and the remainder):
  // bit for bit, or the thread count would change results.
  forEachIsaAndActivations([&](Isa) {
    for (DType dtype :
         {DType::f32, DType::bf16, DType::f16, DType::i8, DType::i4, DType::mxfp4}) {
      for (int64_t rows : {1, 5, 11}) {
        Matrix w(dtype, 40, 200, 8);
        std::vector<float> x = randomFloats(size_t(rows * 200), 9);
        std::vector<float> whole(size_t(rows * 40)), parts(size_t(rows * 40));
        LinearOutputs a{{whole.data()}, {0}, {40}}, b{{parts.data()}, {0}, {40}};
        linear(x.data(), rows, 200, w.ref, {}, a, 0, 40);
        linear(x.data(), rows, 200, w.ref, {}, b, 0, 13);
        linear(x.data(), rows, 200, w.ref, {}, b, 13, 40);
        for (size_t i = 0; i < whole.size(); ++i)
          ASSERT_EQ(whole[i], parts[i]) << dtypeName(dtype) << " rows " << rows << " at " << i;
      }
    }
  });
}

namespace {

/// The AVX-512 level's shape in plain arrays (16 lanes, so an int4 group is
/// two vectors; its tile sizes), so that the int4 template runs as
/// KernelsAvx512.cpp instantiates it on a CPU without AVX-512. Only the
/// intrinsics of Avx512::int4Codes stay unexercised here.
struct Emulated512 {
  static constexpr int W = 16;
  struct V {
    float v[W];
  };
  static constexpr int R = 6, J = 4, GemvJ = 4;
  static V zero() { return V{}; }
  static V load(const float *p) {
    V r;
    for (int i = 0; i < W; ++i) r.v[i] = p[i];
    return r;
  }
  static V set1(float x) {
    V r;
    for (float &e : r.v) e = x;
    return r;
  }
  static V mul(V a, V b) {
    for (int i = 0; i < W; ++i) a.v[i] *= b.v[i];
    return a;
  }
  static V fma(V a, V b, V c) {
    for (int i = 0; i < W; ++i) c.v[i] = std::fma(a.v[i], b.v[i], c.v[i]);
    return c;
  }
  static float reduce(V a) {
    float s = 0;
    for (float e : a.v) s += e;
    return s;
  }
  static void int4Codes(const uint8_t *p, V c[2]) {
    for (int i = 0; i < 16; ++i) {
      c[0].v[i] = float(p[i] & 15);
      c[1].v[i] = float(p[i] >> 4);
    }
  }
  static void mxfp4Codes(const uint8_t *p, V c[2]) { // doubled, as the kernels take them
    for (int i = 0; i < 16; ++i) {
      c[0].v[i] = float(2 * e2m1(p[i] & 15));
      c[1].v[i] = float(2 * e2m1(p[i] >> 4));
    }
  }
};

} // namespace

TEST(Kernels, Int4TemplateAtAvx512sWidth) {
  for (DType dtype : {DType::i4, DType::mxfp4})
    for (auto [K, J] : {std::pair<int64_t, int64_t>{96, 37}, {7, 5}, {172, 9}, {2048, 70}}) {
      SCOPED_TRACE(dtypeName(dtype));
      Matrix w(dtype, J, K, 3);
      std::vector<float> bias = randomFloats(size_t(J), 4);
      const double bound = gammaBound(K + 2 * ((K + 31) / 32) + 38);
      std::vector<float> first; // row 0 of each run: independent of the rows run with it
      for (int64_t rows : {1, 2, 5, 6, 7, 13}) {
        std::vector<float> x = randomFloats(size_t(rows * K), 5);
        const Expected want = plainLinear(x, rows, w, J, bias, J);
        std::vector<float> got(size_t(rows * J)), split(size_t(rows * J));
        LinearOutputs out{{got.data()}, {0}, {J}}, parts{{split.data()}, {0}, {J}};
        const TensorRef b{bias.data(), DType::f32};
        auto run = [&](const LinearOutputs &o, int64_t j0, int64_t j1) {
          if (dtype == DType::mxfp4)
            impl::linearInt4<Emulated512, true>(x.data(), rows, K, w.ref, b, o, j0, j1);
          else
            impl::linearInt4<Emulated512>(x.data(), rows, K, w.ref, b, o, j0, j1);
        };
        run(out, 0, J);
        run(parts, 0, 3);
        run(parts, 3, J);
        for (size_t i = 0; i < got.size(); ++i) {
          ASSERT_LE(std::abs(got[i] - want.value[i]), bound * want.magnitude[i])
              << "rows " << rows << " K " << K << " at " << i;
          ASSERT_EQ(got[i], split[i]) << "rows " << rows << " K " << K << " at " << i;
        }
        if (first.empty()) first.assign(got.begin(), got.begin() + J);
        for (int64_t j = 0; j < J; ++j) ASSERT_EQ(got[size_t(j)], first[size_t(j)]) << rows;
      }
    }
}

TEST(Kernels, AttentionMatchesAPlainComputationOnEveryIsa) {
  for (DType dtype : {DType::f32, DType::bf16, DType::f16}) {
    SCOPED_TRACE(dtypeName(dtype));
    // Two layers, the second one read, so the layer's offset counts.
    const int64_t layers = 2, layer = 1;
    const int64_t heads = 4, kvHeads = 2, hd = 20, pageSize = 4, pages = 6, seqLen = 21;
    const double scale = 0.2;
    std::vector<float> f = randomFloats(size_t(layers * 2 * pages * kvHeads * pageSize * hd), 1);
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
    // Scattered pages: one table shared by every row (prefill) or one per
    // row (batched decode).
    const std::vector<int32_t> tables = {5, 0, 3, 1, 4, 2, 2, 4, 1, 3, 0, 5,
                                         0, 1, 2, 3, 4, 5, 3, 5, 0, 2, 1, 4};
    const std::vector<int32_t> positions = {seqLen - 1, 7, -1, 0};
    const std::vector<float> q = randomFloats(size_t(4 * heads * hd), 2);
    // Windows: none, one (each row its own key), 5 (rows 0 and 1 slide),
    // and 21 (row 0's keys, all of them).
    for (auto [tableRows, window] : std::vector<std::pair<int64_t, int64_t>>{
             {1, 0}, {4, 0}, {1, 5}, {4, 5}, {4, 1}, {1, 21}}) {
      SCOPED_TRACE("table rows " + std::to_string(tableRows) + " window " +
                   std::to_string(window));
      // softmax(q k^T * scale) v straight from the definition, in double,
      // from the cache's own (rounded) contents, over the keys at positions
      // p - window < t <= p.
      std::vector<double> want(q.size(), 0.0);
      for (int64_t r = 0; r < 4; ++r) {
        if (positions[size_t(r)] < 0) continue;
        const int32_t *table = tables.data() + (tableRows == 1 ? 0 : r) * pages;
        for (int64_t h = 0; h < heads; ++h) {
          const int64_t kvh = h / (heads / kvHeads);
          std::vector<double> s;
          double mx = -1e300, sum = 0;
          const int64_t p = positions[size_t(r)];
          auto attends = [&](int64_t t) { return t <= p && (window == 0 || t > p - window); };
          for (int64_t t = 0; t <= p; ++t) {
            if (!attends(t)) {
              s.push_back(0);
              continue;
            }
            const int64_t page = table[t / pageSize], slot = t % pageSize;
            double d = 0;
            for (int64_t i = 0; i < hd; ++i)
              d += double(q[size_t(r * heads * hd + h * hd + i)]) *
                   valueAt(g.base, dtype, g.offset(layer, 0, page, kvh, slot) + i);
            s.push_back(d * scale);
            mx = std::max(mx, s.back());
          }
          for (int64_t t = 0; t <= p; ++t)
            sum += (s[size_t(t)] = attends(t) ? std::exp(s[size_t(t)] - mx) : 0.0);
          for (int64_t t = 0; t <= p; ++t) {
            const int64_t page = table[t / pageSize], slot = t % pageSize;
            for (int64_t i = 0; i < hd; ++i)
              want[size_t(r * heads * hd + h * hd + i)] +=
                  s[size_t(t)] / sum * valueAt(g.base, dtype, g.offset(layer, 1, page, kvh, slot) + i);
          }
        }
      }
      // q, k and v lie in [-1, 1]. A score sums hd = 20 products of at most
      // 1 (gamma_20 * 20 = 400u) and is scaled by 0.2 and rounded (4u more):
      // within 84u. Scores off by d move a softmax weight by a factor within
      // e^(+-2d) (168u); the f32 exp of (score - the block's max), |arg| <=
      // 8, adds 11u on the numerator and as much on the sum, and the inverse
      // and its product 2u. Where the running maximum grows (at most once a
      // page of 4 keys after the first: 5 times) the output and the sum so
      // far are scaled by another such exp (11u each, on both: 110u): 302u
      // on each weight, so on the weighted sum of v. That sum accumulates at
      // most 21 positions in f32 (21u, the weights adding to 1). Under 330u
      // in all: 2^-15 = 512u (measured: under 2u).
      const double tol = 0x1p-15;
      forEachIsa([&](Isa) {
        std::vector<float> out(q.size(), 99.0f);
        cachedAttention(g, layer, q.data(), positions.data(), tables.data(), tableRows,
                        {heads, scale, window}, out.data(), 0, 4 * heads);
        for (size_t i = 0; i < want.size(); ++i)
          ASSERT_NEAR(out[i], want[i], tol) << "at " << i;
      });
    }
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

TEST(Kernels, VectorSiluAndGeluMatchTheLibmOnesOnEveryIsa) {
  // Gate values from -100 to 100, where exp under- and overflows.
  const int64_t ff = 1003;
  std::vector<float> in(size_t(2 * ff));
  for (int64_t i = 0; i < ff; ++i) {
    in[size_t(i)] = -100.0f + 200.0f * float(i) / float(ff - 1);
    in[size_t(ff + i)] = 1.0f + float(i % 7);
  }
  for (bool gelu : {false, true}) {
    SCOPED_TRACE(gelu ? "GELU (tanh), GeGLU" : "SiLU, SwiGLU");
    // The definitions: SiLU, and GELU's tanh approximation as PyTorch's
    // gelu(approximate="tanh") writes it (the kernels use its sigmoid form).
    const double pi = 3.14159265358979323846;
    std::vector<float> want(static_cast<size_t>(ff));
    for (int64_t i = 0; i < ff; ++i) {
      const double g = in[size_t(i)];
      const double act =
          gelu ? 0.5 * g * (1 + std::tanh(std::sqrt(2 / pi) * (g + 0.044715 * g * g * g)))
               : g / (1 + std::exp(-g));
      want[size_t(i)] = float(act * in[size_t(ff + i)]);
    }
    // Relative: the vector exp is a polynomial good to a few ulp, then 1 + e,
    // the division and the product by up round once each, under 10u (6e-7)
    // in all; 2e-6 (33u) leaves room for "a few ulp" being several (and
    // GELU's cubic argument's rounding). Absolute, for results near zero:
    // below a gate of -87 the vector exp clamps its argument, so a result of
    // ~1e-42 comes out as ~1e-36.
    auto tolerance = [](double want) { return 2e-6 * (1 + std::abs(want)); };
    forEachIsa([&](Isa) {
      std::vector<float> got(static_cast<size_t>(ff));
      fusedFFN(in.data(), ff, got.data(), 0, 1, gelu);
      for (int64_t i = 0; i < ff; ++i)
        ASSERT_NEAR(got[size_t(i)], want[size_t(i)], tolerance(want[size_t(i)]))
            << "gate " << in[size_t(i)];
      // The unfused form over a range that starts off a vector boundary;
      // what lies before it stays as it was.
      std::fill(got.begin(), got.end(), 99.0f);
      swiglu(in.data(), in.data() + ff, got.data(), 3, ff, gelu);
      for (int64_t i = 0; i < 3; ++i) ASSERT_EQ(got[size_t(i)], 99.0f);
      for (int64_t i = 3; i < ff; ++i)
        ASSERT_NEAR(got[size_t(i)], want[size_t(i)], tolerance(want[size_t(i)]))
            << "gate " << in[size_t(i)];
    });
  }
}

// The kernels below have one implementation for every ISA; they are checked
// against the definitions all the same, on the portable path they take.

TEST(Kernels, EmbeddingIsExactForEveryTableType) {
  // Widening is exact and an int8 row's value times its scale rounds once,
  // as in double rounded to f32; an int4 one rounds its product and then
  // its sum: bit for bit.
  const int64_t hidden = 100; // a partial int8 (and int4) group at the end
  const std::vector<int32_t> tokens = {3, 0, 36, 3};
  for (DType dtype : {DType::f32, DType::bf16, DType::f16, DType::i8, DType::i4, DType::mxfp4}) {
    Matrix table(dtype, 37, hidden, 11);
    std::vector<float> out(tokens.size() * size_t(hidden), 99.0f);
    embedding(tokens.data(), table.ref, hidden, 1.0f, out.data(), 1, int64_t(tokens.size()));
    for (int64_t k = 0; k < hidden; ++k) ASSERT_EQ(out[size_t(k)], 99.0f) << "row 0 is not asked for";
    for (int64_t r = 1; r < int64_t(tokens.size()); ++r)
      for (int64_t k = 0; k < hidden; ++k)
        ASSERT_EQ(out[size_t(r * hidden + k)], table.lookup(tokens[size_t(r)], k))
            << dtypeName(dtype) << " row " << r << " at " << k;
    // Gemma's scaled rows: the exact value times the scale, rounded once.
    const float scale = std::sqrt(1152.0f);
    embedding(tokens.data(), table.ref, hidden, scale, out.data(), 0, int64_t(tokens.size()));
    for (int64_t r = 0; r < int64_t(tokens.size()); ++r)
      for (int64_t k = 0; k < hidden; ++k)
        ASSERT_EQ(out[size_t(r * hidden + k)], table.lookup(tokens[size_t(r)], k) * scale)
            << dtypeName(dtype) << " scaled row " << r << " at " << k;
  }
}

TEST(Kernels, RmsNormMatchesAPlainComputation) {
  const int64_t rows = 3, cols = 100;
  const double eps = 1e-5;
  const std::vector<float> a = randomFloats(size_t(rows * cols), 12),
                           b = randomFloats(size_t(rows * cols), 13);
  for (DType dtype : {DType::f32, DType::bf16, DType::f16}) {
    SCOPED_TRACE(dtypeName(dtype));
    Matrix w(dtype, 1, cols, 14);
    // x / sqrt(mean(x^2) + eps) * w in double, for each row of x.
    auto plain = [&](const std::vector<double> &x, int64_t r) {
      double ss = 0;
      for (int64_t i = 0; i < cols; ++i) ss += x[size_t(r * cols + i)] * x[size_t(r * cols + i)];
      std::vector<double> y(static_cast<size_t>(cols));
      for (int64_t i = 0; i < cols; ++i)
        y[size_t(i)] = x[size_t(r * cols + i)] / std::sqrt(ss / double(cols) + eps) * w.at(0, i);
      return y;
    };
    // The kernel rounds the inverse rms to f32 and multiplies twice in f32:
    // three roundings (its sum of squares in double adds far under one u).
    std::vector<float> out(a.size());
    rmsNorm(a.data(), w.ref, cols, eps, out.data(), 0, rows);
    const std::vector<double> x(a.begin(), a.end());
    for (int64_t r = 0; r < rows; ++r) {
      const std::vector<double> want = plain(x, r);
      for (int64_t i = 0; i < cols; ++i)
        ASSERT_NEAR(out[size_t(r * cols + i)], want[size_t(i)], gammaBound(4) * std::abs(want[size_t(i)]))
            << "row " << r << " at " << i;
    }
    // With the residual added first: the residual is one f32 sum, which
    // carries its rounding into the normed row twice more (as x, and through
    // the rms as much again): five roundings, bounded by gamma_6.
    std::vector<float> normed(a.size()), residual(a.size());
    addRmsNorm(a.data(), b.data(), w.ref, cols, eps, normed.data(), residual.data(), 0, rows);
    std::vector<double> sum(a.size());
    for (size_t i = 0; i < a.size(); ++i) sum[i] = double(a[i]) + double(b[i]);
    for (int64_t r = 0; r < rows; ++r) {
      const std::vector<double> want = plain(sum, r);
      for (int64_t i = 0; i < cols; ++i) {
        const size_t at = size_t(r * cols + i);
        ASSERT_NEAR(residual[at], sum[at], gammaBound(1) * std::abs(sum[at])) << "at " << at;
        ASSERT_NEAR(normed[at], want[size_t(i)], gammaBound(6) * std::abs(want[size_t(i)]))
            << "row " << r << " at " << i;
      }
    }
  }
}

TEST(Kernels, RopeMatchesAPlainRotation) {
  // Two heads of 8; positions up to the thousands, and a padding row.
  const int64_t headDim = 8, half = headDim / 2, cols = 2 * headDim, rows = 4;
  const double theta = 10000;
  const std::vector<int32_t> positions = {0, 1, 4095, -1};
  const std::vector<float> x = randomFloats(size_t(rows * cols), 15);
  std::vector<double> freqs(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i)
    freqs[size_t(i)] = std::pow(theta, -2.0 * double(i) / double(headDim));
  const std::vector<double> fromRuntime = ropeFrequencies(RopeParams{headDim, theta, {}, {}});
  for (int64_t i = 0; i < half; ++i)
    ASSERT_NEAR(fromRuntime[size_t(i)], freqs[size_t(i)], 1e-15 * freqs[size_t(i)]) << i;

  std::vector<float> table(size_t(rows * half * 2)), out(x.size());
  ropeTable(positions.data(), half, freqs.data(), nullptr, table.data(), 0, rows);
  rope(x.data(), positions.data(), cols, headDim, table.data(), out.data(), 0, rows);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t h = 0; h < cols; h += headDim)
      for (int64_t i = 0; i < half; ++i) {
        const size_t at = size_t(r * cols + h + 2 * i);
        const double a = x[at], b = x[at + 1];
        if (positions[size_t(r)] < 0) {
          ASSERT_EQ(out[at], x[at]);
          ASSERT_EQ(out[at + 1], x[at + 1]);
          continue;
        }
        // The pair (a, b) rotated by position * freq. The kernel rounds cos
        // and sin to f32, both products and their sum: three roundings, each
        // within u of |a| + |b|.
        const double angle = double(positions[size_t(r)]) * freqs[size_t(i)];
        const double tol = gammaBound(3) * (std::abs(a) + std::abs(b));
        ASSERT_NEAR(out[at], a * std::cos(angle) - b * std::sin(angle), tol) << "row " << r << " at " << at;
        ASSERT_NEAR(out[at + 1], a * std::sin(angle) + b * std::cos(angle), tol)
            << "row " << r << " at " << at + 1;
      }
}

namespace {

/// Activations quantized as runtime/cpu/LinearDot.h defines it, written
/// here: per row and group of 32, d = max |x| / 127 in f32, and q = x times
/// (1 / d) in f32 rounded to the nearest integer, ties to even (0 where d is
/// 0).
struct QuantizedHere {
  std::vector<int> q;     // [rows, K]
  std::vector<float> d;   // [rows, groups]
  int64_t groups = 0;
};
QuantizedHere quantizeHere(const std::vector<float> &x, int64_t rows, int64_t K) {
  QuantizedHere h;
  h.groups = (K + 31) / 32;
  h.q.resize(size_t(rows * K));
  h.d.resize(size_t(rows * h.groups));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t g = 0; g < h.groups; ++g) {
      const int64_t k0 = g * 32, k1 = std::min(K, k0 + 32);
      float amax = 0;
      for (int64_t k = k0; k < k1; ++k) amax = std::max(amax, std::abs(x[size_t(r * K + k)]));
      const float d = amax / 127.0f, inverse = d == 0 ? 0.0f : 1.0f / d;
      h.d[size_t(r * h.groups + g)] = d;
      for (int64_t k = k0; k < k1; ++k)
        h.q[size_t(r * K + k)] = int(std::nearbyint(x[size_t(r * K + k)] * inverse));
    }
  return h;
}

/// Rows of very different scales, and a group of zeros.
std::vector<float> scaledRows(int64_t rows, int64_t K, uint32_t seed) {
  std::vector<float> x = randomFloats(size_t(rows * K), seed);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < K; ++k) x[size_t(r * K + k)] *= r % 3 == 0 ? 1.0f : r % 3 == 1 ? 1e-3f : 300.0f;
  if (rows > 1) // row 1's first group
    for (int64_t k = 0; k < std::min<int64_t>(K, 32); ++k) x[size_t(K + k)] = 0;
  return x;
}

} // namespace

TEST(LinearDot, ActivationsRoundToTheNearestStepOfTheirGroup) {
  for (int64_t K : {7, 32, 96, 172, 2048}) {
    const int64_t rows = 3;
    const std::vector<float> x = scaledRows(rows, K, 31);
    const QuantizedHere want = quantizeHere(x, rows, K);
    for (Isa isa : {Isa::scalar, Isa::avx2}) {
      if (int(isa) > int(detectIsa())) continue;
      SCOPED_TRACE(std::string(isaName(isa)) + " K " + std::to_string(K));
      QuantizedRows got;
      (isa == Isa::scalar ? quantizeRowsScalar : quantizeRowsAvx2)(x.data(), rows, K, true, got);
      ASSERT_EQ(got.groups, want.groups);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t g = 0; g < want.groups; ++g) {
          const size_t at = size_t(r * want.groups + g);
          ASSERT_EQ(got.d[at], want.d[at]) << "row " << r << " group " << g;
          const double d = want.d[at];
          int most = 0;
          double sum = 0, magnitude = 0;
          for (int64_t i = 0; i < 32; ++i) {
            const int q = got.q[at * 32 + size_t(i)];
            if (g * 32 + i >= K) { // past the row's end
              ASSERT_EQ(q, 0);
              continue;
            }
            const double v = x[size_t(r * K + g * 32 + i)];
            ASSERT_EQ(q, want.q[size_t(r * K + g * 32 + i)]) << "row " << r << " k " << g * 32 + i;
            ASSERT_LE(std::abs(q), 127);
            ASSERT_LE(std::abs(v - q * d), d / 2 * (1 + 1e-6)) << "row " << r << " k " << g * 32 + i;
            most = std::max(most, std::abs(q));
            sum += v;
            magnitude += std::abs(v);
          }
          ASSERT_EQ(most, d > 0 ? 127 : 0) << "row " << r << " group " << g;
          ASSERT_LE(std::abs(got.sums[at] - sum), gammaBound(32) * magnitude);
        }
    }
  }
}

TEST(LinearDot, LinearMatchesAPlainComputationOnEveryIsa) {
  // out = bias + sum over groups of s d sum(c q) (+ m sum(x) for int4), from
  // the q and d written here and the weights as drawn. Each product c q and
  // its group's sum are exact integers; what rounds is s d, its product
  // with the sum, the accumulation over at most `groups` groups and an
  // 8-lane reduction, and for int4 the f32 sum of a group's x (31 adds), m
  // times it and its own accumulation, then the bias: gamma of 2 groups + 48
  // relative to the sum of the terms' magnitudes.
  test::ActivationsScope int8Activations(Activations::reduced);
  for (DType dtype : {DType::i8, DType::i4, DType::mxfp4}) {
    SCOPED_TRACE(dtypeName(dtype));
    for (const auto &shape : {std::pair<int64_t, int64_t>{96, 37}, {100, 12}, {7, 5}, {256, 64},
                              {2048, 70}, {172, 9}}) {
      const int64_t K = shape.first, J = shape.second; // variables: the lambdas capture them
      Matrix w(dtype, J, K, 3);
      std::vector<float> bias = randomFloats(size_t(J), 4);
      const int64_t split = J / 2, groups = (K + 31) / 32;
      for (int64_t rows : {1, 2, 3, 4, 5, 7, 13}) {
        const std::vector<float> x = scaledRows(rows, K, 5);
        const QuantizedHere h = quantizeHere(x, rows, K);
        std::vector<double> want(size_t(rows * J)), magnitude(size_t(rows * J));
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t j = 0; j < J; ++j) {
            double sum = bias[size_t(j)], mag = std::abs(sum);
            for (int64_t g = 0; g < groups; ++g) {
              int64_t dot = 0;
              double xs = 0, xm = 0;
              for (int64_t k = g * 32; k < std::min(K, g * 32 + 32); ++k) {
                // mxfp4: the doubled E2M1 value, an integer
                const int64_t c =
                    dtype == DType::i4      ? w.codes[size_t(j * K + k)]
                    : dtype == DType::mxfp4 ? int64_t(2 * e2m1(w.codes[size_t(j * K + k)]))
                                            : int64_t(valueAt(w.data.data(), dtype, j * K + k));
                dot += c * h.q[size_t(r * K + k)];
                xs += x[size_t(r * K + k)];
                xm += std::abs(x[size_t(r * K + k)]);
              }
              const double scale =
                  dtype == DType::mxfp4
                      ? std::ldexp(1.0, w.exponents[size_t(j * groups + g)] - 128) // halved
                      : double(w.scales[size_t(j * groups + g)]);
              const double t = scale * double(h.d[size_t(r * groups + g)]) * double(dot);
              sum += t;
              mag += std::abs(t);
              if (dtype == DType::i4) {
                sum += double(w.mins[size_t(j * groups + g)]) * xs;
                mag += std::abs(double(w.mins[size_t(j * groups + g)])) * xm;
              }
            }
            const size_t at = size_t(j < split ? r * split + j
                                               : rows * split + r * (J - split) + (j - split));
            want[at] = sum;
            magnitude[at] = mag;
          }
        forEachIsa([&](Isa) {
          std::vector<float> a(size_t(rows * split)), b(size_t(rows * (J - split)));
          LinearOutputs out{{a.data(), b.data()}, {0, split}, {split, J - split}};
          linear(x.data(), rows, K, w.ref, {bias.data(), DType::f32}, out, 0, J);
          a.insert(a.end(), b.begin(), b.end());
          for (size_t i = 0; i < a.size(); ++i)
            ASSERT_LE(std::abs(a[i] - want[i]), gammaBound(2 * groups + 48) * magnitude[i])
                << "rows " << rows << " K " << K << " J " << J << " at " << i << ": got " << a[i]
                << ", want " << want[i];
        });
      }
    }
  }
}

TEST(LinearDot, RoundingTheActivationsMovesAnOutputByAtMostHalfAStepPerWeight) {
  // Against the f32-activation kernel on the same ISA: rounding x to q d
  // moves each x by at most d / 2, so an output by at most the sum over
  // groups of d / 2 times the group's sum of |c s| (int4's minimums meet
  // the exact sums of x), plus both kernels' f32 rounding.
  for (DType dtype : {DType::i8, DType::i4, DType::mxfp4}) {
    for (int64_t K : {172, 2048}) {
      SCOPED_TRACE(std::string(dtypeName(dtype)) + " K " + std::to_string(K));
      const int64_t J = 16, rows = 3, groups = (K + 31) / 32;
      Matrix w(dtype, J, K, 11);
      const std::vector<float> x = scaledRows(rows, K, 12);
      const QuantizedHere h = quantizeHere(x, rows, K);
      forEachIsa([&](Isa) {
        std::vector<float> exact(size_t(rows * J)), rounded(size_t(rows * J));
        LinearOutputs e{{exact.data()}, {0}, {J}}, q{{rounded.data()}, {0}, {J}};
        {
          test::ActivationsScope f32(Activations::f32);
          linear(x.data(), rows, K, w.ref, {}, e, 0, J);
        }
        {
          test::ActivationsScope int8(Activations::reduced);
          linear(x.data(), rows, K, w.ref, {}, q, 0, J);
        }
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t j = 0; j < J; ++j) {
            double moved = 0, magnitude = 0;
            for (int64_t k = 0; k < K; ++k) {
              const double cs = dtype == DType::i4
                                    ? w.codes[size_t(j * K + k)] * double(w.scales[size_t(j * groups + k / 32)])
                                    : w.at(j, k);
              const double d = h.d[size_t(r * groups + k / 32)];
              moved += d / 2 * std::abs(cs);
              magnitude += (std::abs(x[size_t(r * K + k)]) + d / 2) * w.magnitude(j, k);
            }
            const size_t at = size_t(r * J + j);
            ASSERT_LE(std::abs(double(rounded[at]) - double(exact[at])),
                      moved + 2 * gammaBound(K + 2 * groups + 48) * magnitude)
                << "row " << r << " feature " << j;
          }
      });
    }
  }
}

TEST(LinearDot, ANonFiniteActivationMakesItsRowsOutputsNaN) {
  // As with f32 activations, where a NaN or an infinity in x reaches every
  // output of its row: never a finite wrong number. The other rows keep
  // their values.
  test::ActivationsScope int8Activations(Activations::reduced);
  for (DType dtype : {DType::i8, DType::i4, DType::mxfp4}) {
    const int64_t K = 96, J = 9, rows = 3;
    Matrix w(dtype, J, K, 21);
    std::vector<float> x = randomFloats(size_t(rows * K), 22);
    std::vector<float> clean(static_cast<size_t>(J));
    LinearOutputs c{{clean.data()}, {0}, {J}};
    forEachIsa([&](Isa isa) {
      SCOPED_TRACE(dtypeName(dtype));
      linear(x.data(), 1, K, w.ref, {}, c, 0, J);
      std::vector<float> bad = x;
      bad[size_t(K + 40)] = std::numeric_limits<float>::quiet_NaN();
      bad[size_t(2 * K + 5)] = std::numeric_limits<float>::infinity();
      QuantizedRows q;
      (isa == Isa::scalar ? quantizeRowsScalar : quantizeRowsAvx2)(bad.data(), rows, K, true, q);
      EXPECT_TRUE(std::isnan(q.d[size_t(1 * q.groups + 1)]));
      EXPECT_TRUE(std::isnan(q.d[size_t(2 * q.groups + 0)]));
      EXPECT_FALSE(std::isnan(q.d[size_t(2 * q.groups + 1)]));
      std::vector<float> out(size_t(rows * J));
      LinearOutputs o{{out.data()}, {0}, {J}};
      linear(bad.data(), rows, K, w.ref, {}, o, 0, J);
      for (int64_t j = 0; j < J; ++j) {
        EXPECT_EQ(out[size_t(j)], clean[size_t(j)]) << "row 0 feature " << j;
        EXPECT_TRUE(std::isnan(out[size_t(J + j)])) << "row 1 feature " << j;
        EXPECT_TRUE(std::isnan(out[size_t(2 * J + j)])) << "row 2 feature " << j;
      }
    });
  }
}

namespace {

/// f32 to bf16 rounded to nearest, even on ties (finite values), written
/// here from the definition: the 16 bits dropped decide.
double roundToBf16(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  const uint32_t dropped = bits & 0xffff, kept = bits >> 16;
  const uint32_t up = dropped > 0x8000 || (dropped == 0x8000 && (kept & 1)) ? 1 : 0;
  return bf16Value(uint16_t(kept + up));
}

/// Runs fn with bf16 weights meeting bf16 activations, or skips.
template <typename F> void withBf16Dot(F fn) {
  if (!cpuHasAvx512Bf16()) GTEST_SKIP() << "this CPU has no AVX512_BF16";
  test::ActivationsScope reduced(Activations::reduced);
  const Isa saved = activeIsa();
  setActiveIsa(Isa::avx512);
  ASSERT_TRUE(bf16Dot());
  fn();
  setActiveIsa(saved);
}

} // namespace

TEST(LinearBf16Dot, MatchesAPlainComputationOnBf16RoundedActivations) {
  // out = bias + sum_k bf16(x[k]) w[k] in double, bf16() rounding here.
  // Each product of two bf16 values is exact in f32; what rounds is each
  // lane's accumulation (two products a step of 32: K / 16 additions), the
  // 16 lanes' reduction (4) and the bias: gamma of K / 16 + 6, relative to
  // the sum of the terms' magnitudes. The f32 activations' result lies
  // outside that bound somewhere, so the test tells the two apart.
  withBf16Dot([] {
    for (const auto &shape : {std::pair<int64_t, int64_t>{96, 37}, {100, 12}, {7, 5}, {256, 64},
                              {2048, 70}, {172, 9}}) {
      const int64_t K = shape.first, J = shape.second; // variables: the lambdas capture them
      Matrix w(DType::bf16, J, K, 3);
      std::vector<float> bias = randomFloats(size_t(J), 4);
      const double bound = gammaBound(K / 16 + 6);
      for (int64_t rows : {1, 2, 3, 5, 6, 7, 13}) {
        const std::vector<float> x = scaledRows(rows, K, 5);
        std::vector<float> got(size_t(rows * J));
        LinearOutputs out{{got.data()}, {0}, {J}};
        linear(x.data(), rows, K, w.ref, {bias.data(), DType::f32}, out, 0, J);
        bool f32Told = false;
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t j = 0; j < J; ++j) {
            double want = bias[size_t(j)], mag = std::abs(want), unrounded = want;
            for (int64_t k = 0; k < K; ++k) {
              const double xv = roundToBf16(x[size_t(r * K + k)]);
              want += xv * w.at(j, k);
              mag += std::abs(xv * w.at(j, k));
              unrounded += double(x[size_t(r * K + k)]) * w.at(j, k);
            }
            const double g = got[size_t(r * J + j)];
            ASSERT_LE(std::abs(g - want), bound * mag)
                << "rows " << rows << " K " << K << " row " << r << " feature " << j << ": got "
                << g << ", want " << want;
            f32Told = f32Told || std::abs(unrounded - want) > bound * mag;
          }
        EXPECT_TRUE(f32Told) << "rows " << rows << " K " << K;
      }
    }
  });
}

TEST(LinearBf16Dot, ANonFiniteActivationMakesItsRowsOutputsNonFinite) {
  withBf16Dot([] {
    const int64_t K = 96, J = 9, rows = 3;
    Matrix w(DType::bf16, J, K, 21);
    std::vector<float> x = randomFloats(size_t(rows * K), 22);
    std::vector<float> clean(static_cast<size_t>(J)), out(static_cast<size_t>(rows * J));
    LinearOutputs c{{clean.data()}, {0}, {J}}, o{{out.data()}, {0}, {J}};
    linear(x.data(), 1, K, w.ref, {}, c, 0, J);
    x[size_t(K + 40)] = std::numeric_limits<float>::quiet_NaN();
    x[size_t(2 * K + 5)] = std::numeric_limits<float>::infinity();
    linear(x.data(), rows, K, w.ref, {}, o, 0, J);
    for (int64_t j = 0; j < J; ++j) {
      EXPECT_EQ(out[size_t(j)], clean[size_t(j)]) << "row 0 feature " << j;
      EXPECT_TRUE(std::isnan(out[size_t(J + j)])) << "row 1 feature " << j;
      EXPECT_FALSE(std::isfinite(out[size_t(2 * J + j)])) << "row 2 feature " << j;
    }
  });
}

TEST(LinearBf16Dot, OnlyAvx512WithBf16AndTheReducedModeUseIt) {
  test::ActivationsScope f32(Activations::f32);
  EXPECT_FALSE(bf16Dot());
  EXPECT_STREQ(activationsFor(DType::bf16), "f32");
  test::ActivationsScope reduced(Activations::reduced);
  const Isa saved = activeIsa();
  setActiveIsa(Isa::avx2);
  EXPECT_FALSE(bf16Dot());
  EXPECT_STREQ(activationsFor(DType::bf16), "f32");
  EXPECT_STREQ(activationsFor(DType::i4), "int8");
  EXPECT_STREQ(activationsFor(DType::mxfp4), "int8");
  setActiveIsa(Isa::avx512);
  EXPECT_EQ(bf16Dot(), cpuHasAvx512Bf16());
  EXPECT_STREQ(activationsFor(DType::bf16), cpuHasAvx512Bf16() ? "bf16" : "f32");
  EXPECT_STREQ(activationsFor(DType::f16), "f32");
  setActiveIsa(saved);
}

TEST(LinearDot, VnniGivesTheAvx2KernelsResultsBitForBit) {
  // The same integers, scaled and summed in the same order: vpdpbusd only
  // replaces vpmaddubsw + vpmaddwd.
  if (!cpuHasAvx512Vnni()) GTEST_SKIP() << "this CPU has no AVX512_VNNI";
  test::ActivationsScope reduced(Activations::reduced);
  for (DType dtype : {DType::i8, DType::i4, DType::mxfp4})
    for (auto [K, J] : {std::pair<int64_t, int64_t>{96, 37}, {172, 9}, {2048, 70}, {7, 5}})
      for (int64_t rows : {1, 2, 5, 13}) {
        Matrix w(dtype, J, K, 3);
        const std::vector<float> x = scaledRows(rows, K, 5);
        std::vector<float> bias = randomFloats(size_t(J), 4);
        std::vector<float> a(size_t(rows * J)), b(size_t(rows * J));
        LinearOutputs oa{{a.data()}, {0}, {J}}, ob{{b.data()}, {0}, {J}};
        linearDotAvx2(x.data(), rows, K, w.ref, {bias.data(), DType::f32}, oa, 0, J);
        linearDotVnni(x.data(), rows, K, w.ref, {bias.data(), DType::f32}, ob, 0, J);
        for (size_t i = 0; i < a.size(); ++i)
          ASSERT_EQ(std::memcmp(&a[i], &b[i], 4), 0)
              << dtypeName(dtype) << " K " << K << " rows " << rows << " at " << i << ": avx2 "
              << a[i] << ", vnni " << b[i];
      }
}
