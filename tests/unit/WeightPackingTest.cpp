// Packing into kvplan's int4 (docs/artifact.md): the layout read back here
// from its definition, and the round-to-nearest quantization's promises
// checked against the source values.
#include "frontend/ConfigParser.h"
#include "plan/WeightPacking.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <random>

using namespace kvplan;

namespace {

/// Tensors handed out from memory, in f32.
class MapSource : public WeightSource {
public:
  std::map<std::string, std::vector<float>> tensors;
  std::string describe() const override { return "test tensors"; }
  SourceTensor tensor(const std::string &name, const std::vector<int64_t> &shape) const override {
    return {shape, DType::f32, tensors.at(name).data()};
  }
};

/// A one-layer model 40 wide (one full group and one of 8) with an FFN of 72
/// (two full groups and one of 8), and three int4 weights: the embedding
/// table, the fused Q/K/V and the FFN's down projection.
Plan int4Plan() {
  Plan p;
  ModelSpec &m = p.model;
  m.hiddenSize = 40;
  m.intermediateSize = 72;
  m.numLayers = 1;
  m.numHeads = 2;
  m.numKvHeads = 1;
  m.headDim = 20;
  m.vocabSize = 6;
  p.weights = {{"tok_embeddings", {6, 40}, DType::i4, 0, 0, {}},
               {"layers.0.attention.wqkv", {80, 40}, DType::i4, 0, 0,
                {"layers.0.attention.wq", "layers.0.attention.wk", "layers.0.attention.wv"}},
               {"layers.0.feed_forward.w2", {40, 72}, DType::i4, 0, 0, {}}};
  p.assignWeightOffsets();
  return p;
}

/// Random values of both signs, with an outlier per row, and in the
/// embedding's first row a constant group (its scale must be 0).
MapSource sourceFor(const Plan &p) {
  MapSource s;
  std::mt19937 rng(7);
  std::normal_distribution<float> d(0, 0.05f);
  for (const WeightDecl &w : weightTable(p.model)) {
    if (w.shape.size() != 2) continue;
    std::vector<float> v(size_t(w.shape[0] * w.shape[1]));
    for (float &x : v) x = d(rng);
    for (int64_t r = 0; r < w.shape[0]; ++r) v[size_t(r * w.shape[1] + (r * 7) % w.shape[1])] *= 20;
    s.tensors[w.name] = v;
  }
  std::fill_n(s.tensors["tok_embeddings"].begin(), 32, 0.125f);
  return s;
}

/// Code k of a row of `groups` groups starting at `codes`, read by the
/// layout's words: element i of a group in the low nibble of its byte i,
/// element 16 + i in the high nibble of byte i.
int codeAt(const uint8_t *codes, int64_t k) {
  const uint8_t byte = codes[(k / 32) * 16 + (k % 32) % 16];
  return k % 32 < 16 ? byte & 15 : byte >> 4;
}

} // namespace

TEST(WeightPacking, Int4RoundsEachGroupToTheNearestOf16Levels) {
  const Plan p = int4Plan();
  const MapSource src = sourceFor(p);
  const std::vector<char> blob = packWeightsInMemory(p, src);
  ASSERT_EQ(blob.size(), size_t(p.memoryBill().weightsBlobBytes));
  for (const WeightEntry &w : p.weights) {
    SCOPED_TRACE(w.name);
    const int64_t cols = w.shape[1], groups = (cols + 31) / 32;
    const char *base = blob.data() + w.offset;
    const auto *codes = reinterpret_cast<const uint8_t *>(base);
    const auto *scales = reinterpret_cast<const float *>(base + w.scalesOffset);
    const auto *mins = reinterpret_cast<const float *>(base + w.minsOffset);
    // The fused weight's parts follow one another, rows and groups alike.
    std::vector<float> source;
    for (const std::string &part : w.parts.empty() ? std::vector<std::string>{w.name} : w.parts)
      source.insert(source.end(), src.tensors.at(part).begin(), src.tensors.at(part).end());
    ASSERT_EQ(int64_t(source.size()), w.numElements());
    for (int64_t r = 0; r < w.shape[0]; ++r)
      for (int64_t g = 0; g < groups; ++g) {
        const uint8_t *row = codes + r * groups * 16;
        const float scale = scales[r * groups + g], min = mins[r * groups + g];
        const int64_t k0 = g * 32, end = std::min(cols, k0 + 32);
        float lo = source[size_t(r * cols + k0)], hi = lo;
        for (int64_t k = k0; k < end; ++k) {
          lo = std::min(lo, source[size_t(r * cols + k)]);
          hi = std::max(hi, source[size_t(r * cols + k)]);
        }
        ASSERT_EQ(min, lo) << "row " << r << " group " << g;
        ASSERT_EQ(scale, (hi - lo) / 15.0f) << "row " << r << " group " << g;
        for (int64_t k = k0; k < end; ++k) {
          const float v = source[size_t(r * cols + k)];
          const int c = codeAt(row, k);
          const double decoded = c * double(scale) + double(min);
          // Within half a step (and a few ulps of the step's arithmetic).
          ASSERT_LE(std::abs(decoded - v), 0.5 * scale * (1 + 1e-5) + 1e-7 * std::abs(v))
              << "row " << r << " col " << k << " code " << c;
          if (v == lo) {
            ASSERT_EQ(c, 0);
          } else if (v == hi) {
            ASSERT_EQ(c, 15);
          }
        }
        for (int64_t k = end; k < k0 + 32; ++k)
          ASSERT_EQ(codeAt(row, k), 0) << "row " << r << ": a missing code of a partial group";
      }
    // Padding between the parts is zero.
    for (uint64_t b = uint64_t(w.shape[0] * groups * 16); b < w.scalesOffset; ++b)
      ASSERT_EQ(base[b], 0) << "byte " << b;
    for (uint64_t b = w.scalesOffset + uint64_t(w.shape[0] * groups * 4); b < w.minsOffset; ++b)
      ASSERT_EQ(base[b], 0) << "byte " << b;
  }
  // The constant group: every code 0, the minimum the value, scale 0.
  const WeightEntry &emb = p.weights[0];
  EXPECT_EQ(reinterpret_cast<const float *>(blob.data() + emb.scalesOffset)[0], 0.0f);
  EXPECT_EQ(reinterpret_cast<const float *>(blob.data() + emb.minsOffset)[0], 0.125f);
  for (int k = 0; k < 16; ++k) EXPECT_EQ(blob[size_t(k)], 0);
}

TEST(WeightPacking, Int4ReproducesValuesOnItsGrid) {
  // Weights that are codes of a grid already (min + c * step, every code
  // present) come back exactly: the rounding adds nothing of its own.
  Plan p = int4Plan();
  MapSource src = sourceFor(p);
  std::vector<float> &w2 = src.tensors["layers.0.feed_forward.w2"];
  for (int64_t r = 0; r < 40; ++r)
    for (int64_t k = 0; k < 72; ++k) w2[size_t(r * 72 + k)] = -1.0f + 0.25f * float((k * 7 + r) % 16);
  const std::vector<char> blob = packWeightsInMemory(p, src);
  const WeightEntry &w = p.weights[2];
  const auto *codes = reinterpret_cast<const uint8_t *>(blob.data() + w.offset);
  const auto *scales = reinterpret_cast<const float *>(blob.data() + w.offset + w.scalesOffset);
  const auto *mins = reinterpret_cast<const float *>(blob.data() + w.offset + w.minsOffset);
  for (int64_t r = 0; r < 40; ++r)
    for (int64_t k = 0; k < 64; ++k) { // the full groups hold every code
      const int64_t g = k / 32;
      EXPECT_EQ(scales[r * 3 + g], 0.25f);
      EXPECT_EQ(mins[r * 3 + g], -1.0f);
      EXPECT_EQ(codeAt(codes + r * 3 * 16, k), (k * 7 + r) % 16) << r << " " << k;
    }
}

// GGUF's 4-bit types are int4 groups already: repacked, every weight decodes
// (code * scale, rounded, plus the minimum, rounded) to the tensor's exact
// dequantization bit for bit. The 5-, 6- and 8-bit types are rounded to
// nearest from that dequantization, with the promises above.
TEST(WeightPacking, GgufTensorsBecomeInt4) {
  const std::filesystem::path dir =
      std::filesystem::path(KVPLAN_SHARED_DIR) / "models" / "gguf-quants";
  if (!std::filesystem::exists(dir / "q256-Q4_0.gguf"))
    GTEST_SKIP() << "no " << dir.string() << " (set KVPLAN_SHARED_DIR)";
  std::map<QuantType, int> lossless, rounded;
  for (const char *file : {"q256-Q4_0.gguf", "q256-Q4_1.gguf", "q256-Q4_K_M.gguf",
                           "q256-Q5_K_M.gguf", "q256-Q8_0.gguf"}) {
    SCOPED_TRACE(file);
    const std::string path = (dir / file).string();
    SettingOverrides o;
    o.weightDtype = DType::i4;
    const ModelConfig cfg = loadModelConfig(path, o);
    Plan p;
    p.model = cfg.model;
    for (const WeightDecl &d : weightTable(cfg.model))
      p.weights.push_back({d.name, d.shape, d.shape.size() == 2 ? DType::i4 : DType::f32, 0, 0, {}});
    p.assignWeightOffsets();
    const std::unique_ptr<WeightSource> src = openWeights(path, cfg.model);
    const std::vector<char> blob = packWeightsInMemory(p, *src);
    for (const WeightEntry &w : p.weights) {
      if (w.dtype != DType::i4) continue;
      const SourceTensor t = src->tensor(w.name, w.shape);
      const int64_t rows = w.shape[0], cols = w.shape[1], groups = (cols + 31) / 32;
      std::vector<float> exact(size_t(rows * cols));
      sourceRowsToF32(t, 0, rows, exact.data());
      const auto *codes = reinterpret_cast<const uint8_t *>(blob.data() + w.offset);
      const auto *scales = reinterpret_cast<const float *>(blob.data() + w.offset + w.scalesOffset);
      const auto *mins = reinterpret_cast<const float *>(blob.data() + w.offset + w.minsOffset);
      const bool repacked = t.quant == QuantType::q4_0 || t.quant == QuantType::q4_1 ||
                            t.quant == QuantType::q4_k;
      (repacked ? lossless : rounded)[t.quant]++;
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t k = 0; k < cols; ++k) {
          const size_t g = size_t(r * groups + k / 32);
          const float product = float(codeAt(codes + r * groups * 16, k)) * scales[g];
          const float decoded = product + mins[g], want = exact[size_t(r * cols + k)];
          if (repacked)
            ASSERT_EQ(decoded, want) << w.name << " (" << quantTypeName(t.quant) << ") row " << r
                                     << " col " << k;
          else
            ASSERT_LE(std::abs(double(decoded) - want), 0.5 * scales[g] * (1 + 1e-5) + 1e-6 * std::abs(want))
                << w.name << " (" << quantTypeName(t.quant) << ") row " << r << " col " << k;
        }
    }
  }
  // Every kind of source met: the three 4-bit types, and Q5_K, Q6_K, Q8_0.
  for (QuantType q : {QuantType::q4_0, QuantType::q4_1, QuantType::q4_k})
    EXPECT_GT(lossless[q], 0) << quantTypeName(q);
  for (QuantType q : {QuantType::q5_k, QuantType::q6_k, QuantType::q8_0})
    EXPECT_GT(rounded[q], 0) << quantTypeName(q);
}

namespace {

/// int4Plan()'s weights in mxfp4.
Plan mxfp4Plan() {
  Plan p = int4Plan();
  for (WeightEntry &w : p.weights) w.dtype = DType::mxfp4;
  p.assignWeightOffsets();
  return p;
}

/// MXFP4's E2M1 code c as the OCP format defines it: sign in bit 3, a
/// two-bit exponent (bias 1; 0 is subnormal) and one mantissa bit.
double e2m1(int c) {
  const int e = (c >> 1) & 3, m = c & 1;
  const double v = e == 0 ? 0.5 * m : (1 + 0.5 * m) * std::ldexp(1.0, e - 1);
  return c & 8 ? -v : v;
}

/// Element k of row r of an mxfp4 weight packed at `base`, decoded from the
/// layout's definition.
double mxfp4At(const char *base, const WeightEntry &w, int64_t r, int64_t k) {
  const int64_t groups = (w.shape.back() + 31) / 32;
  const auto *codes = reinterpret_cast<const uint8_t *>(base) + r * groups * 16;
  const auto e = uint8_t(base[w.scalesOffset + uint64_t(r * groups + k / 32)]);
  return e2m1(codeAt(codes, k)) * std::ldexp(1.0, int(e) - 127);
}

} // namespace

TEST(WeightPacking, Mxfp4RoundsEachGroupByTheOcpRule) {
  // Each group's scale 2^X with X = floor(log2 max|w|) - 2 (its byte X +
  // 127); each weight the nearest of the 15 values E2M1 x 2^X, ties to the
  // even code, past 6 x 2^X saturating.
  const Plan p = mxfp4Plan();
  MapSource src = sourceFor(p);
  // Hand-made groups in w2's row 0: values on the grid come back exactly,
  // 2.5 and 5 are ties (to 2 and 4, the even codes), 7 saturates to 6.
  std::vector<float> &w2 = src.tensors["layers.0.feed_forward.w2"];
  const float exact[8] = {6, -3, 0.5f, 1.5f, -4, 0, 2, -1};
  const float ties[4] = {2.5f, 5, 7, -0.25f}, tiesWant[4] = {2, 4, 6, 0};
  for (int k = 0; k < 32; ++k) w2[size_t(k)] = exact[k % 8] * 0.125f;
  for (int k = 32; k < 64; ++k) w2[size_t(k)] = ties[k % 4];
  const std::vector<char> blob = packWeightsInMemory(p, src);
  ASSERT_EQ(blob.size(), size_t(p.memoryBill().weightsBlobBytes));
  for (const WeightEntry &w : p.weights) {
    SCOPED_TRACE(w.name);
    ASSERT_EQ(w.bytes, w.scalesOffset + uint64_t(w.shape[0] * ((w.shape[1] + 31) / 32)));
    const int64_t cols = w.shape[1], groups = (cols + 31) / 32;
    const char *base = blob.data() + w.offset;
    std::vector<float> source;
    for (const std::string &part : w.parts.empty() ? std::vector<std::string>{w.name} : w.parts)
      source.insert(source.end(), src.tensors.at(part).begin(), src.tensors.at(part).end());
    for (int64_t r = 0; r < w.shape[0]; ++r)
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t k0 = g * 32, end = std::min(cols, k0 + 32);
        double amax = 0;
        for (int64_t k = k0; k < end; ++k)
          amax = std::max(amax, std::abs(double(source[size_t(r * cols + k)])));
        const int x = amax > 0 ? int(std::floor(std::log2(amax))) - 2 : -127;
        ASSERT_EQ(int(uint8_t(base[w.scalesOffset + uint64_t(r * groups + g)])), x + 127)
            << "row " << r << " group " << g;
        for (int64_t k = k0; k < end; ++k) {
          const double v = source[size_t(r * cols + k)], got = mxfp4At(base, w, r, k);
          for (int c = 0; c < 16; ++c) // no value of the grid is nearer
            ASSERT_LE(std::abs(got - v), std::abs(e2m1(c) * std::ldexp(1.0, x) - v))
                << "row " << r << " col " << k << ": " << v << " became " << got;
        }
        for (int64_t k = end; k < k0 + 32; ++k)
          ASSERT_EQ(codeAt(reinterpret_cast<const uint8_t *>(base) + r * groups * 16, k), 0);
      }
  }
  const WeightEntry &w = p.weights[2];
  const char *base = blob.data() + w.offset;
  for (int k = 0; k < 32; ++k) EXPECT_EQ(mxfp4At(base, w, 0, k), exact[k % 8] * 0.125) << k;
  for (int k = 32; k < 64; ++k) EXPECT_EQ(mxfp4At(base, w, 0, k), tiesWant[k % 4]) << k;
}

TEST(WeightPacking, Mxfp4TensorsAreCopiedAsTheyAre) {
  // An MXFP4 source (a GGUF's experts, OpenAI's blocks) keeps every code
  // and scale byte, whatever rounding its values would get afresh: here
  // codes drawn at random, so most groups do not use their range's top.
  class BlockSource : public WeightSource {
  public:
    std::map<std::string, std::vector<uint8_t>> blocks;
    std::string describe() const override { return "MXFP4 blocks"; }
    SourceTensor tensor(const std::string &name, const std::vector<int64_t> &shape) const override {
      SourceTensor t{shape, DType::f32, blocks.at(name).data()};
      t.quant = QuantType::mxfp4;
      return t;
    }
  };
  Plan p;
  p.model.hiddenSize = 64;
  p.model.intermediateSize = 96;
  p.model.numLayers = 1;
  p.model.numHeads = 2;
  p.model.numKvHeads = 2;
  p.model.headDim = 32;
  p.model.vocabSize = 4;
  p.weights = {{"layers.0.feed_forward.w2", {64, 96}, DType::mxfp4, 0, 0, {}}};
  p.assignWeightOffsets();
  BlockSource src;
  std::vector<uint8_t> &b = src.blocks["layers.0.feed_forward.w2"];
  std::mt19937 rng(3);
  for (int64_t block = 0; block < 64 * 3; ++block) {
    b.push_back(uint8_t(110 + rng() % 30)); // the scale byte, then 16 bytes of codes
    for (int i = 0; i < 16; ++i) b.push_back(uint8_t(rng()));
  }
  const std::vector<char> blob = packWeightsInMemory(p, src);
  const WeightEntry &w = p.weights[0];
  for (int64_t block = 0; block < 64 * 3; ++block) {
    EXPECT_EQ(uint8_t(blob[w.offset + w.scalesOffset + uint64_t(block)]), b[size_t(block * 17)]);
    EXPECT_EQ(std::memcmp(blob.data() + w.offset + block * 16, b.data() + block * 17 + 1, 16), 0)
        << "block " << block;
  }
  // Their values (a bf16 copy of the model holds them exactly), rounded
  // afresh, come back the same: MXFP4 rounding keeps what it can hold.
  MapSource values;
  std::vector<float> &v = values.tensors["layers.0.feed_forward.w2"];
  for (int64_t r = 0; r < 64; ++r)
    for (int64_t k = 0; k < 96; ++k) v.push_back(float(mxfp4At(blob.data() + w.offset, w, r, k)));
  const std::vector<char> again = packWeightsInMemory(p, values);
  for (int64_t r = 0; r < 64; ++r)
    for (int64_t k = 0; k < 96; ++k)
      ASSERT_EQ(mxfp4At(again.data() + w.offset, w, r, k), v[size_t(r * 96 + k)]) << r << " " << k;
}

TEST(WeightPacking, Mxfp4RefusesANaNNamingTheWeight) {
  const Plan p = mxfp4Plan();
  MapSource src = sourceFor(p);
  src.tensors["layers.0.feed_forward.w2"][77] = std::numeric_limits<float>::quiet_NaN();
  try {
    packWeightsInMemory(p, src);
    FAIL() << "packed a NaN into mxfp4";
  } catch (const InputError &e) {
    EXPECT_NE(std::string(e.what()).find("weight 'layers.0.feed_forward.w2' holds a NaN"),
              std::string::npos)
        << e.what();
  }
}
