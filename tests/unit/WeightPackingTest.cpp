// Packing into kvplan's int4 (docs/artifact.md): the layout read back here
// from its definition, and the round-to-nearest quantization's promises
// checked against the source values.
#include "plan/WeightPacking.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
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
