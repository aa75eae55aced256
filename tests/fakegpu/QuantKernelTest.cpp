// The int8 and int4 kernels of codegen/cuda/Kernels.cuh on odd shapes, run
// in the emulator (tests/emu) against a double-precision product computed
// here from the weight layouts as docs/artifact.md defines them: rows whose
// length is no multiple of the group (or of 16, 8, 4 or 2), features split
// among three outputs, a bias, fewer active rows than the kernel was built
// for, and row tiles past the last row; and --fuse-matvec's kernel (matvec)
// reading int8 and int4 codes, its rows ending in half a group. Inputs past
// the active rows are NaN and outputs start as NaN, so a read too far or a
// write missed shows. The same for the bf16 matrix-vector product on
// tensor cores (matvecMma), and for matvec over rows long enough that its
// lanes' loads go round their ring several times, in every weight type.
// And the emulator's tf32 products refuse what the hardware does not
// define.
#include "tests/fakegpu/EmuKernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using namespace kvplan;

namespace {

/// A quantized [n][k] matrix in the artifact's layout, with the value of
/// each weight decoded from it.
struct QuantMatrix {
  int bits = 8;
  int64_t n = 0, k = 0, groups = 0;
  std::vector<uint8_t> data;
  std::vector<float> scales, mins;

  double at(int64_t j, int64_t c) const {
    const int64_t g = c / 32, i = c % 32;
    const float s = scales[size_t(j * groups + g)];
    if (bits == 8) return double(int8_t(data[size_t(j * k + c)])) * s;
    const uint8_t b = data[size_t((j * groups + g) * 16 + i % 16)];
    return double(i < 16 ? b & 15 : b >> 4) * s + mins[size_t(j * groups + g)];
  }
};

QuantMatrix randomMatrix(int bits, int64_t n, int64_t k, std::mt19937 &rng) {
  QuantMatrix m;
  m.bits = bits;
  m.n = n;
  m.k = k;
  m.groups = (k + 31) / 32;
  std::uniform_real_distribution<float> scale(0.001f, 0.05f), mn(-0.4f, 0.0f);
  m.data.assign(size_t(bits == 8 ? n * k : n * m.groups * 16), 0);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t c = 0; c < k; ++c) {
      const uint8_t code = uint8_t(rng() % (bits == 8 ? 255 : 16));
      if (bits == 8) {
        m.data[size_t(j * k + c)] = uint8_t(int8_t(int(code) - 127));
      } else {
        const int64_t g = c / 32, i = c % 32;
        uint8_t &b = m.data[size_t((j * m.groups + g) * 16 + i % 16)];
        b = uint8_t(i < 16 ? (b & 0xf0) | code : (b & 0x0f) | (code << 4));
      }
    }
  for (int64_t i = 0; i < n * m.groups; ++i) {
    m.scales.push_back(scale(rng));
    m.mins.push_back(bits == 4 ? mn(rng) : 0.0f);
  }
  return m;
}

/// Feature j of row r of a product written to three outputs of cols[0],
/// cols[1] and cols[2] features.
float featureAt(const std::vector<float> (&outs)[3], const int64_t (&cols)[3], int64_t r,
                int64_t j) {
  const int o = j < cols[0] ? 0 : j < cols[0] + cols[1] ? 1 : 2;
  const int64_t c = j - (o > 0 ? cols[0] : 0) - (o > 1 ? cols[1] : 0);
  return outs[o][size_t(r * cols[o] + c)];
}

class QuantKernels : public kvplan::testing::EmuKernels {};

/// One product: the kernel `name` computing rows x (n0 + n1 + n2) features
/// of `w` into three outputs.
struct Product {
  std::string name;
  int bits;
  int64_t k, n0, n1, n2, builtRows, rows;
  bool bias, tiled;
  int64_t warps; // the matrix-vector kernels'
  bool matvec = false; // --fuse-matvec's kernel (MvFormat) instead of quantGemv
  int64_t fpw = 1;     // its features per warp
  std::string instance() const {
    const std::string n = std::to_string(n0) + ", " + std::to_string(n1) + ", " +
                          std::to_string(n2);
    if (matvec)
      return std::string("kvplan::matvec<") + (bits == 8 ? "int8_t" : "kvplan::Int4") +
             ", float, float, float, float, " + std::to_string(k) + ", " + n + ", " +
             std::to_string(warps) + ", " + std::to_string(fpw) + ", " +
             std::to_string(builtRows) + ", " + (bias ? "kvplan::kMvBias" : "0") + ">(a)";
    const std::string common = "float, " + std::to_string(bits) + ", " + std::to_string(k) + ", " +
                               n + ", " + (bias ? "true" : "false");
    return tiled ? "kvplan::quantGemm<" + common + ">(a)"
                 : "kvplan::quantGemv<" + common + ", " + std::to_string(warps) + ", " +
                       std::to_string(builtRows) + ">(a)";
  }
};

const Product kProducts[] = {
    // Matrix-vector: K 172 (4-byte runs, a partial group of 12), one row.
    {"gemv8_a", 8, 172, 37, 0, 0, 1, 1, false, false, 2},
    // K 200 (8-byte runs), three outputs and a bias, 3 of 4 rows active.
    {"gemv8_b", 8, 200, 20, 9, 9, 4, 3, false, false, 8},
    {"gemv8_c", 8, 200, 20, 9, 9, 4, 3, true, false, 8},
    // K 37: odd, byte runs; 8 rows.
    {"gemv8_d", 8, 37, 33, 0, 0, 8, 8, false, false, 4},
    // K 2048 (16-byte runs, several per lane).
    {"gemv8_e", 8, 2048, 24, 8, 0, 2, 2, true, false, 8},
    {"gemv4_a", 4, 172, 37, 0, 0, 1, 1, false, false, 2},
    {"gemv4_b", 4, 200, 20, 9, 9, 4, 3, true, false, 8},
    {"gemv4_c", 4, 37, 33, 0, 0, 8, 8, false, false, 4},
    {"gemv4_d", 4, 2080, 24, 8, 0, 2, 2, true, false, 8},
    // Tiled: 70 rows (a second row tile of 6), features across outputs and
    // past the last feature tile.
    {"gemm8_a", 8, 172, 65, 17, 0, 70, 70, true, true, 0},
    {"gemm8_b", 8, 37, 100, 0, 0, 64, 9, false, true, 0},
    {"gemm8_c", 8, 256, 64, 0, 0, 128, 128, false, true, 0},
    {"gemm4_a", 4, 172, 65, 17, 0, 70, 70, true, true, 0},
    {"gemm4_b", 4, 37, 100, 0, 0, 64, 9, false, true, 0},
    {"gemm4_c", 4, 200, 30, 30, 40, 96, 96, true, true, 0},
    // --fuse-matvec's kernel: K 48 (a full group, then half of one), three
    // outputs, 3 of 4 rows, two features a warp (the second in another
    // output); K 2064 (several runs a lane, ending in half a group) with a
    // bias, two features a warp; K 2080 in whole groups, 8 rows.
    {"mv8_a", 8, 48, 19, 9, 10, 4, 3, false, false, 8, true, 2},
    {"mv8_b", 8, 2064, 24, 8, 0, 2, 1, true, false, 4, true, 2},
    {"mv8_c", 8, 2080, 33, 0, 0, 8, 8, true, false, 2, true},
    {"mv4_a", 4, 48, 19, 9, 10, 4, 3, false, false, 8, true, 2},
    {"mv4_b", 4, 2064, 24, 8, 0, 2, 1, true, false, 4, true, 2},
    {"mv4_c", 4, 2080, 33, 0, 0, 8, 8, true, false, 2, true},
};

TEST_F(QuantKernels, ProductsMatchADoublePrecisionReference) {
  std::vector<std::pair<std::string, std::string>> kernels;
  for (const Product &p : kProducts) kernels.push_back({p.name, p.instance()});
  compile(kernels);
  std::mt19937 rng(23);
  for (const Product &p : kProducts) {
    SCOPED_TRACE(p.name);
    const int64_t n = p.n0 + p.n1 + p.n2;
    const QuantMatrix w = randomMatrix(p.bits, n, p.k, rng);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> x(static_cast<size_t>(p.builtRows * p.k), NAN);
    std::vector<float> bias(static_cast<size_t>(n));
    for (int64_t i = 0; i < p.rows * p.k; ++i) x[size_t(i)] = nd(rng);
    for (float &b : bias) b = nd(rng);
    const int64_t cols[3] = {p.n0, p.n1, p.n2};
    std::vector<float> outs[3];
    for (int o = 0; o < 3; ++o)
      outs[o].assign(size_t(p.builtRows * std::max<int64_t>(cols[o], 1)), NAN);
    KernelLaunch::Args a{};
    a.p[0] = reinterpret_cast<char *>(x.data());
    a.p[1] = reinterpret_cast<char *>(const_cast<uint8_t *>(w.data.data()));
    a.p[2] = reinterpret_cast<char *>(const_cast<float *>(w.scales.data()));
    a.p[3] = reinterpret_cast<char *>(const_cast<float *>(w.mins.data()));
    a.p[4] = reinterpret_cast<char *>(bias.data());
    // matvec finds the scales and minimums from the codes' pointer, as in
    // the weights section: codes, then scales, then minimums, each start
    // 64-byte aligned.
    std::vector<char> packed;
    if (p.matvec) {
      auto align = [](size_t b) { return (b + 63) / 64 * 64; };
      const size_t scalesAt = align(w.data.size()), minsAt = align(scalesAt + 4 * w.scales.size());
      packed.assign(minsAt + 4 * w.mins.size(), 0);
      std::memcpy(packed.data(), w.data.data(), w.data.size());
      std::memcpy(packed.data() + scalesAt, w.scales.data(), 4 * w.scales.size());
      std::memcpy(packed.data() + minsAt, w.mins.data(), 4 * w.mins.size());
      a.p[1] = packed.data();
      a.i[1] = (long long)scalesAt;
      a.i[2] = (long long)minsAt;
      a.p[2] = a.p[3] = nullptr; // matvec's norm and addend: not folded here
    }
    for (int o = 0; o < 3; ++o) a.p[5 + o] = reinterpret_cast<char *>(outs[o].data());
    a.i[0] = p.rows;
    if (p.tiled) launch(p.name, a, (n + 63) / 64, (p.rows + 63) / 64, 256);
    else launch(p.name, a, (n / p.fpw + p.warps - 1) / p.warps, 1, p.warps * 32);
    for (int64_t r = 0; r < p.builtRows; ++r)
      for (int64_t j = 0; j < n; ++j) {
        const float got = featureAt(outs, cols, r, j);
        if (r >= p.rows) {
          EXPECT_TRUE(std::isnan(got)) << "row " << r << " is not active but was written";
          continue;
        }
        double want = p.bias ? bias[size_t(j)] : 0.0, size = 0;
        for (int64_t kk = 0; kk < p.k; ++kk) {
          want += double(x[size_t(r * p.k + kk)]) * w.at(j, kk);
          size += std::abs(double(x[size_t(r * p.k + kk)]) * w.at(j, kk));
        }
        ASSERT_NEAR(got, want, 1e-5 * size + 1e-6) << "row " << r << ", feature " << j;
      }
  }
}

TEST_F(QuantKernels, EmbeddingRowsDequantize) {
  compile({{"emb8_172", "kvplan::embeddingQuant<8, float, 172, 256>(a)"},
           {"emb4_172", "kvplan::embeddingQuant<4, float, 172, 256>(a)"},
           {"emb8_37", "kvplan::embeddingQuant<8, float, 37, 256>(a)"},
           {"emb4_37", "kvplan::embeddingQuant<4, float, 37, 256>(a)"}});
  std::mt19937 rng(29);
  for (int bits : {8, 4})
    for (int64_t cols : {172, 37}) {
      SCOPED_TRACE(std::to_string(bits) + " bits, " + std::to_string(cols) + " columns");
      const int64_t vocab = 11;
      const QuantMatrix t = randomMatrix(bits, vocab, cols, rng);
      std::vector<int32_t> tokens = {0, 10, 3, 3};
      std::vector<float> out(tokens.size() * size_t(cols), NAN);
      KernelLaunch::Args a{};
      a.p[0] = reinterpret_cast<char *>(tokens.data());
      a.p[1] = reinterpret_cast<char *>(const_cast<uint8_t *>(t.data.data()));
      a.p[2] = reinterpret_cast<char *>(const_cast<float *>(t.scales.data()));
      a.p[3] = reinterpret_cast<char *>(const_cast<float *>(t.mins.data()));
      a.p[4] = reinterpret_cast<char *>(out.data());
      launch("emb" + std::to_string(bits) + "_" + std::to_string(cols), a, int64_t(tokens.size()),
             1, 256);
      for (size_t r = 0; r < tokens.size(); ++r)
        for (int64_t c = 0; c < cols; ++c)
          ASSERT_NEAR(out[r * size_t(cols) + size_t(c)], t.at(tokens[r], c), 1e-6)
              << "row " << r << ", column " << c;
    }
}

/// One matrix-vector product on tensor cores (matvecMma): rows x F features
/// of K, with its folds.
struct MmaProduct {
  std::string name;
  bool xBf16;      // x in bf16 (else f32, split into two bf16 parts)
  int64_t k, n0, n1, n2, rows, warps;
  bool norm, swiglu, add, bias;
  int bits = 16; // weights: bf16 (16), int8 (8) or int4 (4) codes
  int64_t tiles = 1; // rows built: 8 a tile (mvTiles from 2)
  std::string instance() const {
    std::string flags = "0";
    if (tiles > 1) flags += " | kvplan::mvTiles(" + std::to_string(tiles) + ")";
    if (norm) flags += " | kvplan::kMvNorm";
    if (swiglu) flags += " | kvplan::kMvSwiglu";
    if (add) flags += " | kvplan::kMvAdd";
    if (bias) flags += " | kvplan::kMvBias";
    const char *w = bits == 8 ? "int8_t, " : bits == 4 ? "kvplan::Int4, " : "__nv_bfloat16, ";
    return std::string("kvplan::matvecMma<") + w +
           (xBf16 ? "__nv_bfloat16" : "float") +
           ", float, __nv_bfloat16, float, " + std::to_string(k) + ", " + std::to_string(n0) +
           ", " + std::to_string(n1) + ", " + std::to_string(n2) + ", " +
           std::to_string(warps) + ", " + flags + ">(a)";
  }
};

/// bf16 bits of f, rounded to nearest even; and back.
uint16_t toBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
double fromBf16(uint16_t h) {
  const uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

/// The inputs of one matrix-vector product with its folds: weights of
/// `bits` (32: f32, 16: bf16, 8 and 4: int8 and int4 codes, then, 64-byte
/// aligned, the scales and int4's minimums, as in the weights section),
/// bf16 norm weights, `rows` of the `built` rows of x (the rest NaN; f32,
/// and its bf16 bits in xh), an addend and a bias.
struct ProductInputs {
  int bits = 16;
  int64_t k = 0;
  std::vector<uint16_t> w, nw, xh;
  std::vector<float> wf, x, addend, bias;
  QuantMatrix q;
  std::vector<char> packed;
  size_t scalesAt = 0, minsAt = 0;

  /// Weight (j, c) as its layout decodes it.
  double weight(int64_t j, int64_t c) const {
    if (bits == 32) return wf[size_t(j * k + c)];
    return bits == 16 ? fromBf16(w[size_t(j * k + c)]) : q.at(j, c);
  }
  char *weights() {
    if (bits == 32) return reinterpret_cast<char *>(wf.data());
    return bits == 16 ? reinterpret_cast<char *>(w.data()) : packed.data();
  }
};

/// wrows weight rows of k, f features (addend), `built` rows of x of which
/// `rows` are active; x's values made bf16 where xBf16.
ProductInputs productInputs(int bits, bool xBf16, int64_t k, int64_t wrows, int64_t f,
                            int64_t built, int64_t rows, std::mt19937 &rng) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  ProductInputs in;
  in.bits = bits;
  in.k = k;
  in.w.resize(size_t(wrows * k));
  in.nw.resize(size_t(k));
  in.xh.assign(size_t(built * k), 0x7fc0);
  for (uint16_t &v : in.w) v = toBf16(0.05f * nd(rng));
  const bool quant = bits < 16;
  in.q = randomMatrix(bits == 4 ? 4 : 8, quant ? wrows : 0, k, rng);
  in.scalesAt = (in.q.data.size() + 63) / 64 * 64;
  in.minsAt = in.scalesAt + (4 * in.q.scales.size() + 63) / 64 * 64;
  in.packed.assign(in.minsAt + 4 * in.q.mins.size(), 0);
  std::memcpy(in.packed.data(), in.q.data.data(), in.q.data.size());
  std::memcpy(in.packed.data() + in.scalesAt, in.q.scales.data(), 4 * in.q.scales.size());
  std::memcpy(in.packed.data() + in.minsAt, in.q.mins.data(), 4 * in.q.mins.size());
  for (uint16_t &v : in.nw) v = toBf16(1.0f + 0.3f * nd(rng));
  in.x.assign(size_t(built * k), NAN);
  in.addend.resize(size_t(built * f));
  in.bias.resize(size_t(wrows));
  for (int64_t i = 0; i < rows * k; ++i) {
    in.x[size_t(i)] = 2.0f * nd(rng);
    in.xh[size_t(i)] = toBf16(in.x[size_t(i)]);
    if (xBf16) in.x[size_t(i)] = float(fromBf16(in.xh[size_t(i)]));
  }
  for (float &v : in.addend) v = nd(rng);
  for (float &v : in.bias) v = nd(rng);
  if (bits == 32) {
    in.wf.resize(size_t(wrows * k));
    for (float &v : in.wf) v = 0.05f * nd(rng);
  }
  return in;
}

/// The folds of a matrix-vector product (llm.matvec's).
struct Folds {
  bool norm, swiglu, add, bias;
};

/// A product's `built` rows of f features in three outputs (cols) against a
/// double-precision reference from its inputs, within f32's tolerance: the
/// active rows' features, and the rows past them never written.
void expectProduct(const std::vector<float> (&outs)[3], const int64_t (&cols)[3], int64_t built,
                   int64_t rows, const ProductInputs &in, Folds fold) {
  const int64_t f = cols[0] + cols[1] + cols[2], k = in.k;
  for (int64_t r = 0; r < built; ++r) {
    double ss = 0;
    for (int64_t c = 0; r < rows && c < k; ++c)
      ss += double(in.x[size_t(r * k + c)]) * in.x[size_t(r * k + c)];
    const double inv = fold.norm ? 1.0 / std::sqrt(ss / double(k) + 1e-5) : 1.0;
    for (int64_t j = 0; j < f; ++j) {
      const float got = featureAt(outs, cols, r, j);
      if (r >= rows) {
        EXPECT_TRUE(std::isnan(got)) << "row " << r << " is not active but was written";
        continue;
      }
      // Each weight row's product (gate, then up), and the sum of its
      // terms' sizes.
      double y[2] = {0, 0}, size[2] = {0, 0};
      for (int h = 0; h < (fold.swiglu ? 2 : 1); ++h) {
        for (int64_t c = 0; c < k; ++c) {
          const double term = double(in.x[size_t(r * k + c)]) *
                              (fold.norm ? fromBf16(in.nw[size_t(c)]) : 1.0) *
                              in.weight(j + h * f, c);
          y[h] += term;
          size[h] += std::abs(term);
        }
        y[h] = y[h] * inv + (fold.bias ? in.bias[size_t(j + h * f)] : 0.0);
        size[h] *= inv;
      }
      double want = y[0], tol = 1e-5 * size[0];
      if (fold.swiglu) {
        const double silu = y[0] / (1.0 + std::exp(-y[0]));
        want = silu * y[1];
        tol = 1e-5 * (1.2 * std::abs(y[1]) * size[0] + std::abs(silu) * size[1]);
      }
      if (fold.add) want += in.addend[size_t(r * f + j)];
      ASSERT_NEAR(got, want, tol + 1e-5) << "row " << r << ", feature " << j;
    }
  }
}

/// The arguments of a product of three outputs (matvec's and matvecMma's).
KernelLaunch::Args productArgs(ProductInputs &in, bool xBf16, std::vector<float> (&outs)[3],
                               int64_t rows) {
  KernelLaunch::Args a{};
  a.p[0] = xBf16 ? reinterpret_cast<char *>(in.xh.data()) : reinterpret_cast<char *>(in.x.data());
  a.p[1] = in.weights();
  a.i[1] = (long long)in.scalesAt, a.i[2] = (long long)in.minsAt; // int8 and int4
  a.p[2] = reinterpret_cast<char *>(in.nw.data());
  a.p[3] = reinterpret_cast<char *>(in.addend.data());
  a.p[4] = reinterpret_cast<char *>(in.bias.data());
  for (int o = 0; o < 3; ++o) a.p[5 + o] = reinterpret_cast<char *>(outs[o].data());
  a.i[0] = rows;
  a.d[0] = 1e-5;
  return a;
}

// The tensor-core matrix-vector product of bf16 weights (matvecMma) against
// a double-precision reference, within f32's tolerance: f32 rows of x split
// into two bf16 parts (the test fails with the small part left out), or bf16
// x; K of whole steps of 32 and not (a lane's run past K), features past the
// last whole 16 and across three outputs, 1 to 8 rows of the 8 a product
// takes (x's rows past them NaN, never read; their outputs never written),
// warps of a block splitting K unevenly, and the folds: norm (bf16 scale),
// SwiGLU, addend, bias; and int8 and int4 codes with their groups' scales
// (and int4's minimums; a last group of 16); more than 8 rows in tiles of 8
// (mvTiles), the last tile partial or whole, or not reached by the active
// rows, with every fold.
TEST_F(QuantKernels, TensorCoreMatvecMatchesADoublePrecisionReference) {
  const MmaProduct kMma[] = {
      {"mma_a", false, 200, 20, 9, 9, 3, 2, false, false, false, true},
      {"mma_b", false, 256, 24, 0, 0, 8, 4, true, true, false, false},
      {"mma_c", true, 2048, 32, 0, 0, 5, 3, false, false, true, false},
      {"mma_d", false, 2064, 16, 0, 0, 1, 8, true, false, true, true},
      {"mma_e", true, 96, 40, 0, 0, 7, 3, false, true, true, true},
      // int8 codes (f32 x): K 208 (a last group of 16), three outputs and a
      // bias; K 2048 with norm and SwiGLU.
      {"mma_i8a", false, 208, 20, 9, 9, 4, 2, false, false, false, true, 8},
      {"mma_i8b", false, 2048, 24, 0, 0, 8, 4, true, true, false, false, 8},
      // int4 the same, and K 2064 (a last group of 16 past many steps a
      // warp) over 8 warps, with the norm and an addend.
      {"mma_i4a", false, 208, 20, 9, 9, 4, 2, false, false, false, true, 4},
      {"mma_i4b", false, 2048, 24, 0, 0, 8, 4, true, true, false, false, 4},
      {"mma_i4c", false, 2064, 16, 0, 0, 3, 8, true, false, true, false, 4},
      // Tiles: 19 rows of 24 (bf16 weights, three outputs, a bias); 13 of
      // 24 in int8 (the third tile not reached, its rows not written); 32 in
      // int4 with the norm and an addend; 17 with SwiGLU, an addend and a
      // bias over bf16 x; 9 of 32 in bf16 with the norm, SwiGLU and an
      // addend (two tiles active of four), 5 of 16 (one of two), 21 of 32
      // in int8 (three of four): each number of active tiles has a main
      // loop of its own.
      {"mma_g16", false, 256, 20, 9, 11, 19, 4, false, false, false, true, 16, 3},
      {"mma_g8", false, 208, 20, 9, 9, 13, 2, false, false, false, true, 8, 3},
      {"mma_g4", false, 2064, 16, 0, 0, 32, 8, true, false, true, false, 4, 4},
      {"mma_gs", true, 96, 40, 0, 0, 17, 3, false, true, true, true, 16, 3},
      {"mma_gn", false, 256, 24, 0, 0, 9, 4, true, true, true, false, 16, 4},
      {"mma_g1", false, 200, 20, 9, 9, 5, 2, true, false, false, true, 16, 2},
      {"mma_g3", false, 2048, 24, 0, 0, 21, 4, true, false, true, false, 8, 4},
  };
  std::vector<std::pair<std::string, std::string>> kernels;
  for (const MmaProduct &p : kMma) kernels.push_back({p.name, p.instance()});
  compile(kernels);
  std::mt19937 rng(29);
  for (const MmaProduct &p : kMma) {
    SCOPED_TRACE(p.name);
    const int64_t f = p.n0 + p.n1 + p.n2, wrows = p.swiglu ? 2 * f : f, built = 8 * p.tiles;
    ProductInputs in = productInputs(p.bits, p.xBf16, p.k, wrows, f, built, p.rows, rng);
    const int64_t cols[3] = {p.n0, p.n1, p.n2};
    std::vector<float> outs[3];
    for (int o = 0; o < 3; ++o)
      outs[o].assign(size_t(built * std::max<int64_t>(cols[o], 1)), NAN);
    const KernelLaunch::Args a = productArgs(in, p.xBf16, outs, p.rows);
    launch(p.name, a, (f + 15) / 16, 1, p.warps * 32);
    expectProduct(outs, cols, built, p.rows, in, {p.norm, p.swiglu, p.add, p.bias});
  }
}

/// One matrix-vector product of --fuse-matvec's kernel (matvec): up to
/// `built` rows (R) of x, `rows` of them active, f32 results.
struct MvProduct {
  std::string name;
  int bits; // weights: f32 (32), bf16 (16), int8 (8) or int4 (4)
  bool xBf16;
  int64_t k, n0, n1, n2, built, rows, warps, fpw;
  bool norm, swiglu, add, bias;
  std::string instance() const {
    std::string flags = "0";
    if (norm) flags += " | kvplan::kMvNorm";
    if (swiglu) flags += " | kvplan::kMvSwiglu";
    if (add) flags += " | kvplan::kMvAdd";
    if (bias) flags += " | kvplan::kMvBias";
    const char *w = bits == 32   ? "float, "
                    : bits == 8  ? "int8_t, "
                    : bits == 4  ? "kvplan::Int4, "
                                 : "__nv_bfloat16, ";
    return std::string("kvplan::matvec<") + w + (xBf16 ? "__nv_bfloat16" : "float") +
           ", float, __nv_bfloat16, float, " + std::to_string(k) + ", " + std::to_string(n0) +
           ", " + std::to_string(n1) + ", " + std::to_string(n2) + ", " +
           std::to_string(warps) + ", " + std::to_string(fpw) + ", " + std::to_string(built) +
           ", " + flags + ">(a)";
  }
};

// The matrix-vector kernel (matvec) over rows long enough that a lane's
// weight loads go round its ring of U slots (kMvUnroll) several times
// (mvAccumulate), against a double-precision reference: a lane's runs P
// whole rounds of U (Llama-3.2-1B's down product at one row: 32 runs, U 8),
// P past them (the last two rounds, a slot loading again in the first), P
// under 2U and under U (no whole round), lanes with different P (a row's
// runs not whole rounds of the warp), U from 8 to 2 (with G weight rows a
// warp: SwiGLU, several features a warp), 4 for a grid of many warps; f32,
// bf16, int8 and int4 weights (a last group of 16), bf16 and f32 x, every
// fold (at one row the addends of a warp's features loaded before the
// weights: int4's down product, two features a warp), and 5 of 8 rows
// (past them NaN, never written).
TEST_F(QuantKernels, MatvecRingOverLongRowsMatchesADoublePrecisionReference) {
  const MvProduct kMv[] = {
      // bits, x bf16, K, outputs, rows built and active, warps, features a warp, folds
      {"mv_down", 16, true, 8192, 24, 0, 0, 1, 1, 4, 1, false, false, true, false},
      {"mv_p35", 16, false, 8960, 20, 0, 0, 1, 1, 4, 1, true, false, false, true},
      {"mv_swiglu", 16, false, 4104, 12, 0, 0, 1, 1, 2, 1, true, true, false, false},
      {"mv_f32", 32, false, 4100, 10, 6, 0, 2, 2, 4, 2, false, false, false, true},
      {"mv_rows", 16, false, 4096, 16, 0, 0, 8, 5, 4, 1, true, false, true, false},
      {"mv_i8", 8, false, 8208, 16, 0, 0, 1, 1, 4, 1, true, false, false, false},
      {"mv_i4", 4, false, 16400, 8, 0, 0, 1, 1, 4, 1, false, false, true, false},
      {"mv_i4_swiglu", 4, false, 8192, 16, 0, 0, 1, 1, 4, 2, true, true, false, false},
      {"mv_i4_add", 4, false, 8192, 16, 0, 0, 1, 1, 2, 2, false, false, true, false},
      {"mv_many", 16, true, 2056, 2120, 0, 0, 1, 1, 8, 1, false, false, true, false},
      {"mv_short", 16, false, 1000, 9, 5, 3, 1, 1, 4, 1, false, false, false, true},
  };
  std::vector<std::pair<std::string, std::string>> kernels;
  for (const MvProduct &p : kMv) kernels.push_back({p.name, p.instance()});
  compile(kernels);
  std::mt19937 rng(31);
  for (const MvProduct &p : kMv) {
    SCOPED_TRACE(p.name);
    const int64_t f = p.n0 + p.n1 + p.n2, wrows = p.swiglu ? 2 * f : f;
    ProductInputs in = productInputs(p.bits, p.xBf16, p.k, wrows, f, p.built, p.rows, rng);
    const int64_t cols[3] = {p.n0, p.n1, p.n2};
    std::vector<float> outs[3];
    for (int o = 0; o < 3; ++o)
      outs[o].assign(size_t(p.built * std::max<int64_t>(cols[o], 1)), NAN);
    const KernelLaunch::Args a = productArgs(in, p.xBf16, outs, p.rows);
    launch(p.name, a, (f / p.fpw + p.warps - 1) / p.warps, 1, p.warps * 32);
    expectProduct(outs, cols, p.built, p.rows, in, {p.norm, p.swiglu, p.add, p.bias});
  }
}

// The emulator's mma.sync m16n8k16 (kvplan::mmaBf16) takes and gives each
// lane's fragment registers where PTX's ISA puts them ("Matrix Fragments for
// mma.m16n8k16 with floating point type"), written out here on their own, so
// that the kernels and the emulator cannot drift together from the device:
// lane (g = l / 4, t = l % 4) holds A's a_i at row g + 8 * (i / 2 % 2),
// column 2t + i % 2 + 8 * (i / 4); B's b_i at row 2t + i % 2 + 8 * (i / 2),
// column g; two to a 32-bit register, the lower i in the low half; and D's
// d_i at row g + 8 * (i / 2), column 2t + i % 2. Small integers: exact.
TEST_F(QuantKernels, MmaBf16FollowsPtxFragmentLayout) {
  compile({{"mma_layout",
            "const unsigned *in = reinterpret_cast<const unsigned *>(a.p[0]) + threadIdx.x * 6; "
            "const unsigned fa[4] = {in[0], in[1], in[2], in[3]}, fb[2] = {in[4], in[5]}; "
            "float d[4] = {0.5f, 0.5f, 0.5f, 0.5f}; kvplan::mmaBf16(d, fa, fb); "
            "for (int i = 0; i < 4; ++i) "
            "reinterpret_cast<float *>(a.p[1])[threadIdx.x * 4 + i] = d[i]"}});
  float A[16][16], B[16][8];
  for (int m = 0; m < 16; ++m)
    for (int k = 0; k < 16; ++k) A[m][k] = float((m * 3 + k * 7) % 11 - 5);
  for (int k = 0; k < 16; ++k)
    for (int n = 0; n < 8; ++n) B[k][n] = float((k * 5 + n * 3) % 7 - 3);
  std::vector<unsigned> in(32 * 6, 0);
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    for (int i = 0; i < 8; ++i) {
      const float v = A[g + 8 * (i / 2 % 2)][2 * t + i % 2 + 8 * (i / 4)];
      in[size_t(l * 6 + i / 2)] |= unsigned(toBf16(v)) << (16 * (i % 2));
    }
    for (int i = 0; i < 4; ++i)
      in[size_t(l * 6 + 4 + i / 2)] |= unsigned(toBf16(B[2 * t + i % 2 + 8 * (i / 2)][g]))
                                       << (16 * (i % 2));
  }
  std::vector<float> out(32 * 4, NAN);
  KernelLaunch::Args args{};
  args.p[0] = reinterpret_cast<char *>(in.data());
  args.p[1] = reinterpret_cast<char *>(out.data());
  launch("mma_layout", args, 1, 1, 32);
  for (int l = 0; l < 32; ++l)
    for (int i = 0; i < 4; ++i) {
      const int row = l / 4 + 8 * (i / 2), col = 2 * (l % 4) + i % 2;
      float want = 0.5f;
      for (int k = 0; k < 16; ++k) want += A[row][k] * B[k][col];
      EXPECT_EQ(out[size_t(l * 4 + i)], want) << "lane " << l << ", d" << i;
    }
}

// The emulator's tf32 products take tf32 values only (__float_to_tf32's, or
// no more bits), as CUDA defines them: an f32 with more bits stops the
// kernel, named, instead of giving a product the hardware may not; the
// same values converted multiply.
TEST_F(QuantKernels, Tf32ProductsTakeOnlyTf32Values) {
  const std::string body =
      "namespace wmma = nvcuda::wmma; float *p = reinterpret_cast<float *>(a.p[0]); "
      "kvplan::QFragA x; kvplan::QFragB w; kvplan::QFragC acc; "
      "wmma::load_matrix_sync(x, p, 16); wmma::load_matrix_sync(w, p, 16); "
      "if (a.i[1]) { for (int t = 0; t < x.num_elements; ++t) "
      "x.x[t] = wmma::__float_to_tf32(x.x[t]); for (int t = 0; t < w.num_elements; ++t) "
      "w.x[t] = wmma::__float_to_tf32(w.x[t]); } "
      "wmma::fill_fragment(acc, 0.0f); wmma::mma_sync(acc, x, w, acc); "
      "wmma::store_matrix_sync(p + 256, acc, 16, wmma::mem_row_major)";
  compile({{"tf32_product", body}});
  alignas(32) static float buf[512];
  std::fill(buf, buf + 256, 1.0f + std::ldexp(1.0f, -20)); // 1 + 2^-20: not a tf32 value
  KernelLaunch::Args args{};
  args.p[0] = reinterpret_cast<char *>(buf);
  args.i[1] = 1;
  launch("tf32_product", args, 1, 1, 32);
  for (int i = 0; i < 256; ++i) ASSERT_EQ(buf[256 + i], 8.0f) << i; // 8 products of 1 x 1
  args.i[1] = 0;
  EXPECT_DEATH(launch("tf32_product", args, 1, 1, 32), "a tf32 mma's A holds .* not a tf32 value");
}

} // namespace
