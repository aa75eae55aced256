// Checkpoint reader tests: half-precision conversion, random weights, the
// shared llama2.c and GGUF models, safetensors fixtures written here, and the
// errors each format reports.
#include "support/Progress.h"
#include "support/TempDir.h"
#include "formats/Gguf.h"
#include "formats/WeightFormats.h"
#include "tests/common/CheckpointWriters.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cfloat>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <map>
#include <optional>
#include <set>
#include <thread>
#include <unistd.h>
#include <utility>

namespace fs = std::filesystem;
using namespace kvplan;
using kvplan::testing::F32Tensor;
using kvplan::testing::GgufWriter;

namespace {

//===----------------------------------------------------------------------===//
// Helpers
//===----------------------------------------------------------------------===//

fs::path modelsDir() { return fs::path(KVPLAN_SHARED_DIR) / "models"; }

#define REQUIRE_FILE(p)                                                                   \
  do {                                                                                    \
    if (!fs::exists(p))                                                                   \
      GTEST_SKIP() << "shared test model " << (p) << " is absent (set KVPLAN_SHARED_DIR)"; \
  } while (0)

/// A scratch folder for a test's files.
struct ScratchDir {
  TempDir dir{"kvplan-weights"};
  const fs::path &path = dir.path();
  ScratchDir() {
    if (!dir.made()) throw std::runtime_error("cannot create a temporary folder");
  }
};

int64_t elements(const std::vector<int64_t> &shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string bytesOf(const SourceTensor &t) {
  const int64_t n = elements(t.shape);
  const int64_t bytes = t.quant == QuantType::none
                            ? n * dtypeBytes(t.dtype)
                            : n / quantBlockElements(t.quant) * quantBlockBytes(t.quant);
  return std::string(static_cast<const char *>(t.data), size_t(bytes));
}

std::vector<float> toF32(const SourceTensor &t) {
  std::vector<float> out(size_t(elements(t.shape)));
  sourceRowsToF32(t, 0, int64_t(out.size()) / t.shape.back(), out.data());
  return out;
}

// Runs `fn`, which must throw InputError whose message holds every one of
// `parts`.
void expectInputError(const std::function<void()> &fn, std::initializer_list<std::string> parts) {
  try {
    fn();
  } catch (const InputError &e) {
    const std::string msg = e.what();
    for (const std::string &p : parts)
      EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
    return;
  }
  ADD_FAILURE() << "no InputError thrown";
}

void writeFile(const fs::path &p, const std::string &bytes) {
  std::ofstream out(p, std::ios::binary);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

std::string readFile(const fs::path &p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

uint32_t bitsOf(float v) {
  uint32_t b;
  std::memcpy(&b, &v, 4);
  return b;
}

float floatOf(uint32_t b) {
  float v;
  std::memcpy(&v, &b, 4);
  return v;
}

bool isF16Nan(uint16_t h) { return (h & 0x7c00) == 0x7c00 && (h & 0x03ff) != 0; }
bool isBf16Nan(uint16_t h) { return (h & 0x7f80) == 0x7f80 && (h & 0x007f) != 0; }

ModelSpec smallSpec(bool qwen) {
  ModelSpec m;
  m.name = qwen ? "tiny-qwen" : "tiny-gqa";
  m.architecture = qwen ? Architecture::qwen2 : Architecture::llama;
  m.hiddenSize = 32;
  m.intermediateSize = 48;
  m.numLayers = 2;
  m.numHeads = 4;
  m.numKvHeads = qwen ? 1 : 2;
  m.headDim = 8;
  m.vocabSize = 64;
  m.maxPositions = 128;
  m.tieWordEmbeddings = qwen;
  m.attentionBias = qwen;
  return m;
}

/// Phi-4-mini's partial RoPE on the small shape: 6 of each head's 8 rows
/// turn (Hugging Face orders those 6 by halves), the last 2 do not.
ModelSpec partialRopeSpec() {
  ModelSpec m = smallSpec(false);
  m.name = "tiny-phi4";
  m.architecture = Architecture::phi3;
  m.rope.rotaryDim = 6;
  return m;
}

/// Qwen3's shape: no biases, q/k norms, heads of 16 on a hidden size of 32
/// with 4 heads.
ModelSpec qwen3Spec() {
  ModelSpec m = smallSpec(true);
  m.architecture = Architecture::qwen3;
  m.attentionBias = false;
  m.qkNorm = true;
  m.headDim = 16;
  return m;
}

//===----------------------------------------------------------------------===//
// Half-precision conversion
//===----------------------------------------------------------------------===//

TEST(Conversion, F16RoundTripIsExactForEveryBitPattern) {
  std::vector<uint16_t> all(65536), back(65536);
  std::vector<float> wide(65536);
  for (uint32_t i = 0; i < 65536; ++i) all[i] = uint16_t(i);
  convertElements(all.data(), DType::f16, wide.data(), DType::f32, 65536);
  convertElements(wide.data(), DType::f32, back.data(), DType::f16, 65536);
  for (uint32_t i = 0; i < 65536; ++i) {
    const uint16_t h = uint16_t(i);
    // The bulk and scalar paths agree bit for bit.
    ASSERT_EQ(bitsOf(wide[i]), bitsOf(f16ToF32(h))) << std::hex << i;
    ASSERT_EQ(back[i], f32ToF16(wide[i])) << std::hex << i;
    if (isF16Nan(h)) {
      ASSERT_TRUE(std::isnan(wide[i])) << std::hex << i;
      ASSERT_TRUE(isF16Nan(back[i])) << std::hex << i;
      ASSERT_EQ(back[i] & 0x8000, h & 0x8000) << std::hex << i;
    } else {
      ASSERT_EQ(back[i], h) << std::hex << i;
    }
  }
  EXPECT_EQ(f16ToF32(0x3c00), 1.0f);
  EXPECT_EQ(f16ToF32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(f16ToF32(0x03ff), std::ldexp(1023.0f, -24));
  EXPECT_EQ(f16ToF32(0x7bff), 65504.0f);
  EXPECT_EQ(f16ToF32(0xfc00), -INFINITY);
}

TEST(Conversion, Bf16RoundTripIsExactForEveryBitPattern) {
  for (uint32_t i = 0; i < 65536; ++i) {
    const uint16_t h = uint16_t(i);
    const float f = bf16ToF32(h);
    ASSERT_EQ(bitsOf(f), i << 16);
    if (isBf16Nan(h))
      ASSERT_TRUE(isBf16Nan(f32ToBf16(f))) << std::hex << i;
    else
      ASSERT_EQ(f32ToBf16(f), h) << std::hex << i;
  }
}

TEST(Conversion, Bf16RoundsToNearestEven) {
  EXPECT_EQ(f32ToBf16(1.0f), 0x3f80);
  EXPECT_EQ(f32ToBf16(floatOf(0x3f808000)), 0x3f80); // tie, even below
  EXPECT_EQ(f32ToBf16(floatOf(0x3f818000)), 0x3f82); // tie, even above
  EXPECT_EQ(f32ToBf16(floatOf(0x3f807fff)), 0x3f80); // below half
  EXPECT_EQ(f32ToBf16(floatOf(0x3f808001)), 0x3f81); // above half
  EXPECT_EQ(f32ToBf16(floatOf(0xbf818000)), 0xbf82); // negative tie
  EXPECT_EQ(f32ToBf16(floatOf(0x007f8000)), 0x0080); // subnormal rounds up into normal
  EXPECT_EQ(f32ToBf16(floatOf(0x7f7fffff)), 0x7f80); // largest f32 rounds to infinity
  EXPECT_EQ(f32ToBf16(-0.0f), 0x8000);
  EXPECT_EQ(f32ToBf16(INFINITY), 0x7f80);
  EXPECT_EQ(f32ToBf16(-INFINITY), 0xff80);
  // A NaN whose payload lies only in the dropped bits stays a NaN.
  EXPECT_TRUE(isBf16Nan(f32ToBf16(floatOf(0x7f800001))));
  EXPECT_TRUE(isBf16Nan(f32ToBf16(floatOf(0xff800001))));
  EXPECT_EQ(f32ToBf16(floatOf(0xff800001)) & 0x8000, 0x8000);
}

TEST(Conversion, F16OverflowUnderflowAndTies) {
  EXPECT_EQ(f32ToF16(65504.0f), 0x7bff);
  EXPECT_EQ(f32ToF16(65519.996f), 0x7bff); // just below the halfway point
  EXPECT_EQ(f32ToF16(65520.0f), 0x7c00);   // halfway ties to even: infinity
  EXPECT_EQ(f32ToF16(1e10f), 0x7c00);
  EXPECT_EQ(f32ToF16(-1e10f), 0xfc00);
  EXPECT_EQ(f32ToF16(FLT_MAX), 0x7c00);
  EXPECT_EQ(f32ToF16(INFINITY), 0x7c00);
  EXPECT_EQ(f32ToF16(-INFINITY), 0xfc00);
  EXPECT_TRUE(isF16Nan(f32ToF16(NAN)));
  EXPECT_TRUE(isF16Nan(f32ToF16(floatOf(0x7f800001)))); // payload only in dropped bits
  EXPECT_EQ(f32ToF16(1.0f), 0x3c00);
  EXPECT_EQ(f32ToF16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);     // tie, even below
  EXPECT_EQ(f32ToF16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02); // tie, even above
  EXPECT_EQ(f32ToF16(-2.0f), 0xc000);
  // Subnormals: multiples of 2^-24, ties to even.
  EXPECT_EQ(f32ToF16(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(f32ToF16(std::ldexp(1.0f, -25)), 0x0000);                // tie to 0
  EXPECT_EQ(f32ToF16(std::ldexp(1.0000001f, -25)), 0x0001);          // above the tie
  EXPECT_EQ(f32ToF16(std::ldexp(3.0f, -25)), 0x0002);                // tie to 2
  EXPECT_EQ(f32ToF16(std::ldexp(1023.0f, -24)), 0x03ff);             // largest subnormal
  EXPECT_EQ(f32ToF16(std::ldexp(1023.5f, -24)), 0x0400);             // rounds to 2^-14
  EXPECT_EQ(f32ToF16(std::ldexp(1.0f, -14)), 0x0400);                // smallest normal
  EXPECT_EQ(f32ToF16(std::ldexp(1.0f, -30)), 0x0000);                // underflow
  EXPECT_EQ(f32ToF16(-std::ldexp(1.0f, -30)), 0x8000);               // keeps the sign
  EXPECT_EQ(f32ToF16(floatOf(0x00000001)), 0x0000);                  // f32 subnormal
}

TEST(Conversion, EveryPairMatchesTheScalarFunctions) {
  std::vector<float> src = {0.0f, -0.0f, 1.0f, -1.5f, 3.14159f, 1e-6f, -7e-8f, 65519.0f,
                            70000.0f, 1e30f, INFINITY, -INFINITY, 0.1f, 255.9f, -1e-40f};
  const int64_t n = int64_t(src.size());
  std::vector<uint16_t> h(src.size()), b(src.size()), hb(src.size()), bh(src.size());
  std::vector<float> fromH(src.size()), fromB(src.size()), same(src.size());
  convertElements(src.data(), DType::f32, h.data(), DType::f16, n);
  convertElements(src.data(), DType::f32, b.data(), DType::bf16, n);
  convertElements(h.data(), DType::f16, fromH.data(), DType::f32, n);
  convertElements(b.data(), DType::bf16, fromB.data(), DType::f32, n);
  convertElements(h.data(), DType::f16, hb.data(), DType::bf16, n);
  convertElements(b.data(), DType::bf16, bh.data(), DType::f16, n);
  convertElements(src.data(), DType::f32, same.data(), DType::f32, n);
  for (size_t i = 0; i < src.size(); ++i) {
    EXPECT_EQ(h[i], f32ToF16(src[i])) << i;
    EXPECT_EQ(b[i], f32ToBf16(src[i])) << i;
    EXPECT_EQ(bitsOf(fromH[i]), bitsOf(f16ToF32(h[i]))) << i;
    EXPECT_EQ(bitsOf(fromB[i]), bitsOf(bf16ToF32(b[i]))) << i;
    EXPECT_EQ(hb[i], f32ToBf16(f16ToF32(h[i]))) << i;
    EXPECT_EQ(bh[i], f32ToF16(bf16ToF32(b[i]))) << i;
    EXPECT_EQ(bitsOf(same[i]), bitsOf(src[i])) << i;
  }
  EXPECT_THROW(convertElements(src.data(), DType::i32, same.data(), DType::f32, n),
               std::invalid_argument);
}

//===----------------------------------------------------------------------===//
// random:SEED
//===----------------------------------------------------------------------===//

TEST(RandomWeights, SameSeedSameBytesOtherSeedOtherBytes) {
  const ModelSpec m = smallSpec(true);
  auto a = openWeights("random:42", m), b = openWeights("random:42", m),
       c = openWeights("random:43", m);
  EXPECT_NE(a->describe().find("42"), std::string::npos);
  for (const WeightDecl &w : weightTable(m)) {
    const SourceTensor ta = a->tensor(w.name, w.shape);
    EXPECT_EQ(ta.dtype, DType::f32);
    EXPECT_EQ(ta.shape, w.shape);
    EXPECT_EQ(bytesOf(ta), bytesOf(b->tensor(w.name, w.shape))) << w.name;
    EXPECT_NE(bytesOf(ta), bytesOf(c->tensor(w.name, w.shape))) << w.name;
    // Asking again hands out the same storage.
    EXPECT_EQ(ta.data, a->tensor(w.name, w.shape).data);
  }
}

TEST(RandomWeights, IndependentOfRequestOrder) {
  const ModelSpec m = smallSpec(false);
  std::vector<WeightDecl> table = weightTable(m);
  auto forward = openWeights("random:7", m), backward = openWeights("random:7", m);
  std::vector<std::string> last;
  for (auto it = table.rbegin(); it != table.rend(); ++it)
    last.push_back(bytesOf(backward->tensor(it->name, it->shape)));
  for (size_t i = 0; i < table.size(); ++i)
    EXPECT_EQ(bytesOf(forward->tensor(table[i].name, table[i].shape)),
              last[table.size() - 1 - i])
        << table[i].name;
  // A model with more layers draws the same values for the layers it shares.
  ModelSpec deeper = m;
  deeper.numLayers = 5;
  auto other = openWeights("random:7", deeper);
  const std::vector<int64_t> wq = {m.qDim(), m.hiddenSize};
  EXPECT_EQ(bytesOf(forward->tensor("layers.1.attention.wq", wq)),
            bytesOf(other->tensor("layers.1.attention.wq", wq)));
}

TEST(RandomWeights, LargeTensorsMadeOnManyThreadsHoldTheSameValues) {
  // Element i depends on (seed, name, i) alone: an embedding of 140,000 rows
  // (4.5 M elements, made in slices on every core) starts with the 64 rows
  // a small vocabulary's embedding has (made in one piece), and no slice is
  // left unwritten (a value is 0 with probability 2^-24).
  const ModelSpec small = smallSpec(false);
  ModelSpec large = small;
  large.vocabSize = 140000;
  auto a = openWeights("random:5", small), b = openWeights("random:5", large);
  const std::vector<float> few = toF32(a->tensor("tok_embeddings", {64, 32}));
  const std::vector<float> many = toF32(b->tensor("tok_embeddings", {140000, 32}));
  ASSERT_EQ(many.size(), size_t(140000) * 32);
  EXPECT_TRUE(std::equal(few.begin(), few.end(), many.begin()));
  EXPECT_LT(std::count(many.begin(), many.end(), 0.0f), 8);
  std::set<float> distinct(many.end() - 1000, many.end());
  EXPECT_GT(distinct.size(), 900u) << "the last slice is not a copy of one value";
}

TEST(RandomWeights, HeldBytesAreEveryTensorAsF32) {
  // What a compile's memory check counts: the source keeps every tensor it
  // made, 4 bytes an element, and hands out nothing else.
  const ModelSpec m = smallSpec(true);
  auto src = openWeights("random:9", m);
  uint64_t handedOut = 0, elementsInTable = 0;
  for (const WeightDecl &w : weightTable(m)) {
    handedOut += bytesOf(src->tensor(w.name, w.shape)).size();
    elementsInTable += uint64_t(elements(w.shape));
  }
  EXPECT_EQ(src->heldBytes(), handedOut);
  EXPECT_EQ(src->heldBytes(), 4 * elementsInTable);
}

TEST(RandomWeights, MagnitudesAreBounded) {
  ModelSpec m = smallSpec(true);
  m.hiddenSize = 256;
  m.intermediateSize = 512;
  m.numHeads = 8;
  m.numKvHeads = 2;
  m.headDim = 32;
  auto src = openWeights("random:1", m);
  for (const WeightDecl &w : weightTable(m)) {
    const std::vector<float> v = toF32(src->tensor(w.name, w.shape));
    double sum = 0, sumSq = 0;
    for (float x : v) {
      ASSERT_TRUE(std::isfinite(x)) << w.name;
      sum += x;
      sumSq += double(x) * x;
    }
    const double mean = sum / double(v.size());
    const double sd = std::sqrt(sumSq / double(v.size()) - mean * mean);
    const bool isNorm = w.name == "norm" || w.name.find("_norm") != std::string::npos;
    if (isNorm) {
      for (float x : v) ASSERT_NEAR(x, 1.0f, 0.06f) << w.name;
    } else if (w.shape.size() == 1) {
      for (float x : v) ASSERT_LE(std::fabs(x), 0.05f) << w.name;
    } else {
      const double in = double(w.shape.back());
      for (float x : v) ASSERT_LE(std::fabs(x), std::sqrt(3.0 / in) * 1.0001) << w.name;
      EXPECT_NEAR(sd * std::sqrt(in), 1.0, 0.1) << w.name;
      EXPECT_NEAR(mean, 0.0, 0.02) << w.name;
    }
  }
}

TEST(RandomWeights, Errors) {
  const ModelSpec m = smallSpec(false);
  for (const char *bad : {"random:x", "random:", "random:-1", "random:12abc"})
    expectInputError([&] { openWeights(bad, m); }, {bad, "SEED"});
  auto src = openWeights("random:3", m);
  expectInputError([&] { src->tensor("layers.9.attention.wq", {32, 32}); },
                   {"random:3", "layers.9.attention.wq", "missing"});
  expectInputError([&] { src->tensor("layers.0.attention.wk", {32, 32}); },
                   {"random:3", "layers.0.attention.wk", "[16, 32]", "[32, 32]"});
}

//===----------------------------------------------------------------------===//
// The shared llama2.c and GGUF models
//===----------------------------------------------------------------------===//

TEST(SharedModels, Stories260KBinAndGgufAgree) {
  const fs::path bin = modelsDir() / "stories260K" / "stories260K.bin";
  const fs::path gguf = modelsDir() / "stories260K" / "stories260K.gguf";
  REQUIRE_FILE(bin);
  REQUIRE_FILE(gguf);
  EXPECT_TRUE(isCheckpointFile(bin.string()));
  EXPECT_TRUE(isCheckpointFile(gguf.string()));
  ModelConfig a = readCheckpointConfig(bin.string());
  ModelConfig b = readCheckpointConfig(gguf.string());
  validate(a);
  validate(b);
  EXPECT_EQ(a.model.name, "stories260K");
  EXPECT_EQ(a.sourcePath, bin.string());
  for (const ModelSpec *m : {&a.model, &b.model}) {
    EXPECT_EQ(m->architecture, Architecture::llama);
    EXPECT_EQ(m->hiddenSize, 64);
    EXPECT_EQ(m->intermediateSize, 172);
    EXPECT_EQ(m->numLayers, 5);
    EXPECT_EQ(m->numHeads, 8);
    EXPECT_EQ(m->numKvHeads, 4);
    EXPECT_EQ(m->headDim, 8);
    EXPECT_EQ(m->vocabSize, 512);
    EXPECT_TRUE(m->tieWordEmbeddings);
    EXPECT_FLOAT_EQ(float(m->rmsNormEps), 1e-5f);
    EXPECT_EQ(m->rope.theta, 10000.0);
    EXPECT_EQ(m->bosTokenId, 1);
    EXPECT_EQ(m->eosTokenIds, std::vector<int64_t>{2});
  }
  EXPECT_EQ(a.model.maxPositions, 512);
  EXPECT_EQ(b.model.maxPositions, 2048);
  EXPECT_EQ(b.compile.weightDtype, DType::f32);

  auto fromBin = openWeights(bin.string(), a.model);
  auto fromGguf = openWeights(gguf.string(), b.model);
  EXPECT_NE(fromBin->describe().find("stories260K.bin"), std::string::npos);
  EXPECT_NE(fromGguf->describe().find("stories260K.gguf"), std::string::npos);
  const std::vector<WeightDecl> table = weightTable(a.model);
  ASSERT_EQ(table.size(), 2u + 9u * 5u);
  for (const WeightDecl &w : table) {
    const SourceTensor x = fromBin->tensor(w.name, w.shape);
    const SourceTensor y = fromGguf->tensor(w.name, w.shape);
    EXPECT_EQ(x.dtype, DType::f32);
    EXPECT_EQ(y.dtype, DType::f32);
    EXPECT_EQ(x.shape, w.shape);
    EXPECT_EQ(y.shape, w.shape);
    EXPECT_EQ(bytesOf(x), bytesOf(y)) << w.name;
  }
  // Trained RMSNorm gains are not all equal; a sanity check that the
  // layout is right rather than reading the wrong region.
  const std::vector<float> norm = toF32(fromBin->tensor("norm", {64}));
  EXPECT_NE(norm.front(), norm.back());
}

TEST(SharedModels, TinyRandomGgufF16) {
  const fs::path gguf = modelsDir() / "tiny-random-gguf" / "llama-2-tiny-random.gguf";
  REQUIRE_FILE(gguf);
  ModelConfig cfg = readCheckpointConfig(gguf.string());
  validate(cfg);
  const ModelSpec &m = cfg.model;
  EXPECT_EQ(m.hiddenSize, 8);
  EXPECT_EQ(m.numLayers, 1);
  EXPECT_EQ(m.numHeads, 2);
  EXPECT_EQ(m.numKvHeads, 2);
  EXPECT_EQ(m.intermediateSize, 32);
  EXPECT_EQ(m.vocabSize, 32000);
  EXPECT_EQ(m.maxPositions, 4096);
  EXPECT_FALSE(m.tieWordEmbeddings);
  EXPECT_EQ(cfg.compile.weightDtype, DType::f16);

  auto src = openWeights(gguf.string(), m);
  int f16 = 0, f32 = 0;
  for (const WeightDecl &w : weightTable(m)) {
    const SourceTensor t = src->tensor(w.name, w.shape);
    if (w.shape.size() == 2) {
      EXPECT_EQ(t.dtype, DType::f16) << w.name;
      ++f16;
    } else {
      EXPECT_EQ(t.dtype, DType::f32) << w.name;
      ++f32;
    }
    const std::vector<float> v = toF32(t);
    for (size_t i = 0; i < v.size(); i += std::max<size_t>(1, v.size() / 97))
      ASSERT_TRUE(std::isfinite(v[i])) << w.name << "[" << i << "]";
  }
  EXPECT_EQ(f16, 9); // embedding, q, k, v, o, gate, up, down, output
  EXPECT_EQ(f32, 3); // two layer norms and the final one
}

//===----------------------------------------------------------------------===//
// Safetensors fixtures
//===----------------------------------------------------------------------===//

struct HFTensor {
  std::string name;
  std::string dtype; // "F32", "BF16", ...
  std::vector<int64_t> shape;
  std::string bytes;
};

// Writes a safetensors file; `pad` aligns the data to 8 bytes as real
// writers do, and without it a header of odd length misaligns the data.
void writeSafetensors(const fs::path &p, const std::vector<HFTensor> &tensors, bool pad = true) {
  nlohmann::json header = nlohmann::json::object();
  header["__metadata__"] = {{"format", "pt"}};
  std::string data;
  for (const HFTensor &t : tensors) {
    header[t.name] = {{"dtype", t.dtype},
                      {"shape", t.shape},
                      {"data_offsets", {data.size(), data.size() + t.bytes.size()}}};
    data += t.bytes;
  }
  std::string text = header.dump();
  if (pad)
    while ((8 + text.size()) % 8 != 0) text += ' ';
  else if ((8 + text.size()) % 2 == 0)
    text += ' ';
  std::string out(8, '\0');
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out[size_t(i)] = char((n >> (8 * i)) & 0xff);
  writeFile(p, out + text + data);
}

std::string hfNameOf(const std::string &canonical) {
  if (canonical == "tok_embeddings") return "model.embed_tokens.weight";
  if (canonical == "norm") return "model.norm.weight";
  if (canonical == "output") return "lm_head.weight";
  const size_t dot = canonical.find('.', 7);
  const std::string layer = canonical.substr(7, dot - 7), rest = canonical.substr(dot + 1);
  const std::map<std::string, std::string> names = {
      {"attention_norm", "input_layernorm.weight"},
      {"attention.wq", "self_attn.q_proj.weight"},
      {"attention.wk", "self_attn.k_proj.weight"},
      {"attention.wv", "self_attn.v_proj.weight"},
      {"attention.wo", "self_attn.o_proj.weight"},
      {"attention.bq", "self_attn.q_proj.bias"},
      {"attention.bk", "self_attn.k_proj.bias"},
      {"attention.bv", "self_attn.v_proj.bias"},
      {"attention.q_norm", "self_attn.q_norm.weight"},
      {"attention.k_norm", "self_attn.k_norm.weight"},
      {"ffn_norm", "post_attention_layernorm.weight"},
      {"feed_forward.w1", "mlp.gate_proj.weight"},
      {"feed_forward.w3", "mlp.up_proj.weight"},
      {"feed_forward.w2", "mlp.down_proj.weight"},
  };
  // Others (Gemma's post-norms) under their canonical names; a test that
  // stores them names them itself.
  const auto it = names.find(rest);
  return "model.layers." + layer + "." + (it == names.end() ? rest : it->second);
}

bool isQK(const std::string &name) {
  for (const char *s : {".attention.wq", ".attention.wk", ".attention.bq", ".attention.bk",
                        ".attention.q_norm", ".attention.k_norm"})
    if (name.size() > std::strlen(s) &&
        name.compare(name.size() - std::strlen(s), std::strlen(s), s) == 0)
      return true;
  return false;
}

// The model's canonical tensors as Hugging Face stores them: HF names, and
// q/k rows put back in rotate-half order (HF row (h, j + e*r/2) holds
// canonical row (h, 2j + e), for the r rows of a head that turn: all d, or
// partial RoPE's first r, the rest in place).
std::vector<HFTensor> toHF(const ModelSpec &m, const WeightSource &src, DType dtype) {
  std::vector<HFTensor> out;
  for (const WeightDecl &w : weightTable(m)) {
    std::vector<float> v = toF32(src.tensor(w.name, w.shape));
    if (isQK(w.name)) {
      const int64_t rows = w.shape[0], cols = w.shape.size() == 2 ? w.shape[1] : 1;
      const int64_t d = m.headDim, half = (m.rope.rotaryDim ? m.rope.rotaryDim : d) / 2;
      std::vector<float> hf = v;
      for (int64_t h = 0; h < rows / d; ++h)
        for (int64_t j = 0; j < half; ++j)
          for (int64_t e = 0; e < 2; ++e)
            std::memcpy(&hf[size_t((h * d + j + e * half) * cols)],
                        &v[size_t((h * d + 2 * j + e) * cols)], size_t(cols) * 4);
      v = hf;
    }
    HFTensor t{hfNameOf(w.name), dtype == DType::f32 ? "F32" : "BF16", w.shape, {}};
    t.bytes.resize(v.size() * size_t(dtypeBytes(dtype)));
    convertElements(v.data(), DType::f32, t.bytes.data(), dtype, int64_t(v.size()));
    out.push_back(std::move(t));
  }
  return out;
}

// Every canonical tensor read back equals the original (rounded to `dtype`).
void expectSameWeights(const ModelSpec &m, const WeightSource &original, const WeightSource &read,
                       DType dtype) {
  for (const WeightDecl &w : weightTable(m)) {
    const SourceTensor t = read.tensor(w.name, w.shape);
    ASSERT_EQ(t.dtype, dtype) << w.name;
    ASSERT_EQ(t.shape, w.shape) << w.name;
    ASSERT_EQ(reinterpret_cast<uintptr_t>(t.data) % uintptr_t(dtypeBytes(dtype)), 0u) << w.name;
    const SourceTensor o = original.tensor(w.name, w.shape);
    std::string want(size_t(elements(w.shape) * dtypeBytes(dtype)), '\0');
    convertElements(o.data, o.dtype, want.data(), dtype, elements(w.shape));
    EXPECT_EQ(bytesOf(t), want) << w.name;
  }
}

/// Gemma 3 on the small shape: q/k norms, post-norms, tied embeddings.
ModelSpec gemma3Spec() {
  ModelSpec m = qwen3Spec();
  m.name = "tiny-gemma3";
  m.architecture = Architecture::gemma3;
  m.postNorms = true;
  m.activation = Activation::gelu_tanh;
  return m;
}

// A Gemma 3 checkpoint as transformers saves it: Gemma's names (its
// post_attention_layernorm norms the attention's output; the FFN has
// pre_ and post_feedforward_layernorm), each norm's weight the offset from
// 1 (Gemma's RMSNorm scales by 1 + weight), bf16; and the same tensors
// under a multimodal checkpoint's text-model prefix. kvplan reads each norm
// as the f32 scale 1 + weight, the rest as stored.
TEST(Safetensors, Gemma3NamesAndNormsPlusOne) {
  const ModelSpec m = gemma3Spec();
  auto original = openWeights("random:9", m);
  const std::map<std::string, std::string> gemmaNames = {
      {"attention_norm", "input_layernorm.weight"},
      {"post_attention_norm", "post_attention_layernorm.weight"},
      {"ffn_norm", "pre_feedforward_layernorm.weight"},
      {"post_ffn_norm", "post_feedforward_layernorm.weight"}};
  for (const char *body : {"model.", "language_model.model.", "model.language_model."}) {
    SCOPED_TRACE(body);
    std::vector<HFTensor> hf = toHF(m, *original, DType::bf16);
    std::map<std::string, std::vector<float>> offsets; // canonical norm -> stored offset
    size_t at = 0;
    for (const WeightDecl &w : weightTable(m)) {
      HFTensor &t = hf[at++];
      const size_t dot = w.name.find('.', 7);
      if (w.name.rfind("layers.", 0) == 0 && gemmaNames.count(w.name.substr(dot + 1)))
        t.name = "model.layers." + w.name.substr(7, dot - 7) + "." +
                 gemmaNames.at(w.name.substr(dot + 1));
      const bool norm = w.name == "norm" || w.name.size() > 5 &&
                                                w.name.compare(w.name.size() - 5, 5, "_norm") == 0;
      if (norm) { // bf16(value - 1), as a checkpoint stores Gemma's norms
        std::vector<float> v(size_t(elements(w.shape)));
        convertElements(t.bytes.data(), DType::bf16, v.data(), DType::f32, int64_t(v.size()));
        for (float &x : v) x -= 1.0f;
        convertElements(v.data(), DType::f32, t.bytes.data(), DType::bf16, int64_t(v.size()));
        convertElements(t.bytes.data(), DType::bf16, v.data(), DType::f32, int64_t(v.size()));
        offsets[w.name] = v;
      }
      if (t.name.rfind("model.", 0) == 0) t.name = body + t.name.substr(6);
    }
    ScratchDir dir;
    writeSafetensors(dir.path / "model.safetensors", hf);
    auto read = openWeights(dir.path.string(), m);
    for (const WeightDecl &w : weightTable(m)) {
      const SourceTensor t = read.get()->tensor(w.name, w.shape);
      if (!offsets.count(w.name)) {
        EXPECT_EQ(t.dtype, DType::bf16) << w.name;
        continue;
      }
      ASSERT_EQ(t.dtype, DType::f32) << w.name;
      const std::vector<float> got = toF32(t), &off = offsets.at(w.name);
      // q/k norms come back in adjacent-pair order, as their heads' rows.
      const bool qk = isQK(w.name);
      const int64_t half = m.headDim / 2;
      for (int64_t i = 0; i < int64_t(got.size()); ++i) {
        const int64_t hfRow = qk ? (i % 2) * half + i / 2 : i;
        ASSERT_EQ(got[size_t(i)], off[size_t(hfRow)] + 1.0f) << w.name << "[" << i << "]";
      }
    }
  }
}

TEST(Safetensors, SingleFileF32RoundTripsWithRopePermutation) {
  for (const ModelSpec &m : {smallSpec(false), smallSpec(true), qwen3Spec(), partialRopeSpec()}) {
    SCOPED_TRACE(m.name + " (" + architectureName(m.architecture) + ")");
    auto original = openWeights("random:7", m);
    ScratchDir dir;
    writeSafetensors(dir.path / "model.safetensors", toHF(m, *original, DType::f32));
    EXPECT_TRUE(hasSafetensors(dir.path.string()));
    EXPECT_FALSE(isCheckpointFile(dir.path.string()));
    auto fromDir = openWeights(dir.path.string(), m);
    EXPECT_NE(fromDir->describe().find("model.safetensors"), std::string::npos);
    expectSameWeights(m, *original, *fromDir, DType::f32);
    auto fromFile = openWeights((dir.path / "model.safetensors").string(), m);
    expectSameWeights(m, *original, *fromFile, DType::f32);
    // The permutation is not the identity, so the raw HF rows differ.
    const SourceTensor wq = fromDir->tensor("layers.0.attention.wq", {m.qDim(), m.hiddenSize});
    const std::vector<HFTensor> hf = toHF(m, *original, DType::f32);
    for (const HFTensor &t : hf) {
      if (t.name == "model.layers.0.self_attn.q_proj.weight") {
        EXPECT_NE(bytesOf(wq), t.bytes);
      }
    }
  }
}

/// llama.cpp's name for a Hugging Face tensor (convert_hf_to_gguf.py's map).
std::string ggufNameOfHf(const std::string &hf) {
  if (hf == "model.embed_tokens.weight") return "token_embd.weight";
  if (hf == "model.norm.weight") return "output_norm.weight";
  if (hf == "lm_head.weight") return "output.weight";
  const size_t dot = hf.find('.', 13);
  const std::string layer = hf.substr(13, dot - 13), rest = hf.substr(dot + 1);
  const std::map<std::string, std::string> names = {
      {"input_layernorm.weight", "attn_norm.weight"}, {"self_attn.q_proj.weight", "attn_q.weight"},
      {"self_attn.k_proj.weight", "attn_k.weight"},   {"self_attn.v_proj.weight", "attn_v.weight"},
      {"self_attn.o_proj.weight", "attn_output.weight"}, {"self_attn.q_proj.bias", "attn_q.bias"},
      {"self_attn.k_proj.bias", "attn_k.bias"},       {"self_attn.v_proj.bias", "attn_v.bias"},
      {"self_attn.q_norm.weight", "attn_q_norm.weight"},
      {"self_attn.k_norm.weight", "attn_k_norm.weight"},
      {"post_attention_layernorm.weight", "ffn_norm.weight"},
      {"mlp.gate_proj.weight", "ffn_gate.weight"},    {"mlp.up_proj.weight", "ffn_up.weight"},
      {"mlp.down_proj.weight", "ffn_down.weight"},
  };
  return "blk." + layer + "." + names.at(rest);
}

/// The metadata llama.cpp's converter writes for a model `m` of
/// architecture llama, qwen2 or qwen3 (qwen3: the key and value widths, its
/// heads not hidden_size / num_heads).
kvplan::testing::GgufWriter ggufHeader(const ModelSpec &m) {
  kvplan::testing::GgufWriter w;
  const std::string a = architectureName(m.architecture);
  w.string("general.architecture", a);
  w.string("general.name", "tiny qwen");
  w.u32(a + ".block_count", uint32_t(m.numLayers));
  w.u32(a + ".context_length", uint32_t(m.maxPositions));
  w.u32(a + ".embedding_length", uint32_t(m.hiddenSize));
  w.u32(a + ".feed_forward_length", uint32_t(m.intermediateSize));
  w.u32(a + ".attention.head_count", uint32_t(m.numHeads));
  w.u32(a + ".attention.head_count_kv", uint32_t(m.numKvHeads));
  if (m.architecture == Architecture::qwen3) {
    w.u32(a + ".attention.key_length", uint32_t(m.headDim));
    w.u32(a + ".attention.value_length", uint32_t(m.headDim));
  }
  w.f32(a + ".rope.freq_base", float(m.rope.theta));
  w.f32(a + ".attention.layer_norm_rms_epsilon", float(m.rmsNormEps));
  w.u32(a + ".vocab_size", uint32_t(m.vocabSize));
  w.u32("tokenizer.ggml.eos_token_id", 5);
  w.u32("tokenizer.ggml.eot_token_id", 6);
  return w;
}

// A qwen2 or qwen3 GGUF is Hugging Face's tensors under llama.cpp's names,
// its q/k rows (and biases, and q/k norms) still in rotate-half order: read,
// it gives the canonical weights, as the same model's safetensors do.
void expectQwenGgufReads(ModelSpec m) {
  m.rope.theta = 1000000.0;
  m.rmsNormEps = 1e-6;
  auto original = openWeights("random:7", m);
  ScratchDir dir;
  const fs::path p = dir.path / "tiny-qwen.gguf";
  kvplan::testing::GgufWriter w = ggufHeader(m);
  uint64_t qkBytes = 0;
  for (const HFTensor &t : toHF(m, *original, DType::f32)) {
    std::vector<float> v(t.bytes.size() / 4);
    std::memcpy(v.data(), t.bytes.data(), t.bytes.size());
    w.tensor({ggufNameOfHf(t.name), t.shape, v});
    for (const char *rope : {"q_proj", "k_proj", "q_norm", "k_norm"})
      if (t.name.find(rope) != std::string::npos) qkBytes += t.bytes.size();
  }
  w.write(p);

  ModelConfig cfg = readCheckpointConfig(p.string());
  EXPECT_EQ(cfg.model.architecture, m.architecture);
  EXPECT_EQ(cfg.model.attentionBias, m.attentionBias);
  EXPECT_EQ(cfg.model.qkNorm, m.qkNorm);
  EXPECT_EQ(cfg.model.headDim, m.architecture == Architecture::qwen3 ? m.headDim : 0);
  EXPECT_TRUE(cfg.model.tieWordEmbeddings); // no output.weight
  EXPECT_EQ(cfg.model.numKvHeads, m.numKvHeads);
  EXPECT_EQ(cfg.model.hiddenSize, m.hiddenSize);
  EXPECT_EQ(cfg.model.rope.theta, 1000000.0);
  EXPECT_FLOAT_EQ(float(cfg.model.rmsNormEps), 1e-6f);
  EXPECT_EQ(cfg.model.eosTokenIds, (std::vector<int64_t>{5, 6}));
  auto read = openWeights(p.string(), m);
  expectSameWeights(m, *original, *read, DType::f32);
  EXPECT_EQ(read->heldBytes(), qkBytes); // wq, wk, bq, bk, q/k norms: reordered copies

  // The rows' order is not the model's business to guess: a llama model
  // over a qwen file is refused.
  ModelSpec llama = m;
  llama.architecture = Architecture::llama;
  llama.attentionBias = false;
  llama.qkNorm = false;
  expectInputError([&] { openWeights(p.string(), llama); },
                   {p.string(), std::string("architecture ") + architectureName(m.architecture) +
                                    " but the model is llama"});
}

// A gemma3 GGUF as llama.cpp's converter writes it (its tensors in
// rotate-half order, each norm 1 + the checkpoint's offset, Gemma's
// post-norm names) reads as llama.cpp runs it: GeGLU, post-norms, q/k
// norms, embeddings times sqrt(32), every sixth layer global under the
// file's window, the local layers' RoPE on base 10000, the softmax over
// sqrt(head_dim) but for the 62-layer 27B's sqrt(embedding_length /
// head_count); the weights as the canonical ones.
TEST(Gguf, Gemma3FileReadsAsLlamaCppRunsIt) {
  ModelSpec m = gemma3Spec();
  m.numLayers = 7;
  m.slidingWindow = 16;
  m.fullAttentionLayers = {5};
  m.rope.localTheta = 10000;
  m.rope.theta = 1000000.0;
  m.rmsNormEps = 1e-6;
  m.embeddingScale = std::sqrt(32.0);
  auto original = openWeights("random:13", m);
  ScratchDir dir;
  const fs::path p = dir.path / "gemma3.gguf";
  auto write = [&](int64_t layers, int64_t embedRows) {
    ModelSpec shape = m;
    shape.numLayers = layers;
    kvplan::testing::GgufWriter w = ggufHeader(shape);
    w.u32("gemma3.attention.key_length", uint32_t(m.headDim));
    w.u32("gemma3.attention.value_length", uint32_t(m.headDim));
    w.u32("gemma3.attention.sliding_window", 16);
    for (const HFTensor &t : toHF(m, *original, DType::f32)) {
      if (t.name.find("layers.") != std::string::npos &&
          std::stoll(t.name.substr(t.name.find("layers.") + 7)) >= layers)
        continue;
      std::vector<float> v(t.bytes.size() / 4);
      std::memcpy(v.data(), t.bytes.data(), t.bytes.size());
      std::vector<int64_t> shapeOf = t.shape;
      if (t.name == "model.embed_tokens.weight") {
        v.resize(size_t(embedRows * m.hiddenSize), 0.5f);
        shapeOf[0] = embedRows;
      }
      std::string name = t.name;
      for (auto [hf, gguf] : {std::pair{"post_attention_norm", "post_attention_norm.weight"},
                              std::pair{"post_ffn_norm", "post_ffw_norm.weight"}})
        if (name.size() > std::strlen(hf) &&
            name.compare(name.size() - std::strlen(hf), std::strlen(hf), hf) == 0)
          name = name.substr(0, name.size() - std::strlen(hf)) + "X" + gguf;
      const size_t x = name.find(".X");
      w.tensor({x == std::string::npos
                    ? ggufNameOfHf(name)
                    : "blk." + name.substr(13, name.find('.', 13) - 13) + "." + name.substr(x + 2),
                shapeOf, v});
    }
    w.write(p);
  };
  write(7, m.vocabSize);
  const ModelSpec got = readCheckpointConfig(p.string()).model;
  EXPECT_EQ(got.architecture, Architecture::gemma3);
  EXPECT_EQ(got.activation, Activation::gelu_tanh);
  EXPECT_TRUE(got.postNorms && got.qkNorm && got.tieWordEmbeddings);
  EXPECT_EQ(got.embeddingScale, std::sqrt(32.0));
  EXPECT_EQ(got.queryPreAttnScalar, 0.0); // head_dim
  EXPECT_EQ(got.slidingWindow, 16);
  EXPECT_EQ(got.fullAttentionLayers, (std::vector<int64_t>{5}));
  EXPECT_EQ(got.rope.localTheta, 10000.0);
  EXPECT_EQ(got.headDim, m.headDim);
  auto read = openWeights(p.string(), m);
  expectSameWeights(m, *original, *read, DType::f32);
  // The 27B's rule: 62 layers, the softmax over sqrt(32 / 4) = sqrt(8).
  write(62, m.vocabSize);
  EXPECT_EQ(readCheckpointConfig(p.string()).model.queryPreAttnScalar, 8.0);
  // An embedding of more rows than the vocabulary's: the model's rows.
  write(7, m.vocabSize + 8);
  EXPECT_EQ(readCheckpointConfig(p.string()).model.vocabSize, m.vocabSize + 8);
}

TEST(Gguf, QwenReadsAsItsSafetensorsDo) {
  for (ModelSpec m : {smallSpec(true), qwen3Spec()}) {
    SCOPED_TRACE(architectureName(m.architecture));
    expectQwenGgufReads(m);
  }
}

/// `src`'s canonical weights as a GGUF of `m`'s architecture, rows as they
/// are (a llama file's order: adjacent pairs).
void writeLlamaOrderGguf(const fs::path &p, const ModelSpec &m, const WeightSource &src) {
  kvplan::testing::GgufWriter w = ggufHeader(m);
  for (const WeightDecl &d : weightTable(m))
    w.tensor({ggufNameOfHf(hfNameOf(d.name)), d.shape, toF32(src.tensor(d.name, d.shape))});
  w.write(p);
}

// A Qwen model written as architecture llama ("llamafied": its q/k rows
// reordered as for any llama file, its q/k/v biases kept): the biases are
// read, as llama.cpp's llama reads them where a file has them.
TEST(Gguf, ALlamaFileWithBiasesKeepsThem) {
  ModelSpec m = smallSpec(true);
  m.architecture = Architecture::llama;
  auto original = openWeights("random:3", m);
  ScratchDir dir;
  const fs::path p = dir.path / "llamafied.gguf";
  writeLlamaOrderGguf(p, m, *original);
  ModelConfig cfg = readCheckpointConfig(p.string());
  EXPECT_EQ(cfg.model.architecture, Architecture::llama);
  EXPECT_TRUE(cfg.model.attentionBias);
  auto read = openWeights(p.string(), m);
  expectSameWeights(m, *original, *read, DType::f32);
  EXPECT_EQ(read->heldBytes(), 0u); // a llama file's rows are read in place
}

// A smollm3 GGUF (llama.cpp's SmolLM3: Llama's tensors, q/k rows reordered
// for adjacent pairs as a llama file's) runs every fourth layer without
// RoPE, which the file does not record: read in place, its layer 3 NoPE; a
// model whose NoPE layers differ is refused, as is a llama model.
TEST(Gguf, SmolLM3FileLeavesEveryFourthLayerUnrotated) {
  ModelSpec m = smallSpec(false);
  m.architecture = Architecture::smollm3;
  m.numLayers = 4;
  m.nopeLayers = {3};
  m.tieWordEmbeddings = true;
  auto original = openWeights("random:5", m);
  ScratchDir dir;
  const fs::path p = dir.path / "smollm3.gguf";
  writeLlamaOrderGguf(p, m, *original);
  const ModelConfig cfg = readCheckpointConfig(p.string());
  EXPECT_EQ(cfg.model.architecture, Architecture::smollm3);
  EXPECT_EQ(cfg.model.nopeLayers, (std::vector<int64_t>{3}));
  auto read = openWeights(p.string(), m);
  expectSameWeights(m, *original, *read, DType::f32);
  EXPECT_EQ(read->heldBytes(), 0u); // rows read in place
  ModelSpec other = m;
  other.nopeLayers = {1};
  expectInputError([&] { openWeights(p.string(), other); },
                   {p.string(), "a smollm3 GGUF runs every fourth layer without RoPE"});
  other = m;
  other.architecture = Architecture::llama;
  other.nopeLayers.clear();
  expectInputError([&] { openWeights(p.string(), other); },
                   {"architecture smollm3 but the model is llama"});
}

/// Phi-3's checkpoint of `hf` (toHF's tensors): each layer's q, k and v rows
/// in one qkv_proj, its gate's then its up projection's in one gate_up_proj.
std::vector<HFTensor> fusePhi3(const std::vector<HFTensor> &hf) {
  std::map<std::string, const HFTensor *> by;
  for (const HFTensor &t : hf) by[t.name] = &t;
  std::vector<HFTensor> out;
  auto fuse = [&](const std::string &name, std::initializer_list<std::string> parts) {
    HFTensor f{name, "F32", by.at(*parts.begin())->shape, ""};
    f.shape[0] = 0;
    for (const std::string &part : parts) {
      f.shape[0] += by.at(part)->shape[0];
      f.bytes += by.at(part)->bytes;
    }
    out.push_back(f);
  };
  for (const HFTensor &t : hf) {
    const size_t at = t.name.find("self_attn.q_proj.weight");
    const size_t gate = t.name.find("mlp.gate_proj.weight");
    if (at != std::string::npos) {
      const std::string l = t.name.substr(0, at);
      fuse(l + "self_attn.qkv_proj.weight", {l + "self_attn.q_proj.weight",
                                             l + "self_attn.k_proj.weight",
                                             l + "self_attn.v_proj.weight"});
    } else if (gate != std::string::npos) {
      const std::string l = t.name.substr(0, gate);
      fuse(l + "mlp.gate_up_proj.weight", {l + "mlp.gate_proj.weight", l + "mlp.up_proj.weight"});
    } else if (t.name.find("k_proj.weight") == std::string::npos &&
               t.name.find("v_proj.weight") == std::string::npos &&
               t.name.find("up_proj.weight") == std::string::npos) {
      out.push_back(t);
    }
  }
  return out;
}

// Phi-3 keeps q/k/v and gate/up fused, in safetensors (qkv_proj,
// gate_up_proj) and in llama.cpp's GGUF (attn_qkv, an ffn_up twice the FFN
// wide), q/k rows in rotate-half order in both: each weight reads as its own
// rows, the same canonical weights; q and k are reordered copies, the rest
// read in place. A checkpoint without them names the fused tensor too.
void expectPhi3FusedRowsRead(const ModelSpec &m) {
  auto original = openWeights("random:9", m);
  const std::vector<HFTensor> fused = fusePhi3(toHF(m, *original, DType::f32));
  const uint64_t qkBytes =
      uint64_t(m.numLayers * (m.qDim() + m.kvDim()) * m.hiddenSize) * sizeof(float);
  ScratchDir dir;
  writeSafetensors(dir.path / "model.safetensors", fused);
  auto hf = openWeights(dir.path.string(), m);
  expectSameWeights(m, *original, *hf, DType::f32);
  EXPECT_EQ(hf->heldBytes(), qkBytes);

  const fs::path p = dir.path / "phi3.gguf";
  kvplan::testing::GgufWriter w = ggufHeader(m);
  if (m.rope.rotaryDim) w.u32("phi3.rope.dimension_count", uint32_t(m.rope.rotaryDim));
  for (const HFTensor &t : fused) {
    std::vector<float> v(t.bytes.size() / 4);
    std::memcpy(v.data(), t.bytes.data(), t.bytes.size());
    std::string name = t.name;
    for (const auto &[from, to] : {std::pair<std::string, std::string>{"self_attn.qkv_proj",
                                                                       "self_attn.q_proj"},
                                   {"mlp.gate_up_proj", "mlp.up_proj"}})
      if (name.find(from) != std::string::npos) name.replace(name.find(from), from.size(), to);
    name = ggufNameOfHf(name);
    if (t.name.find("qkv_proj") != std::string::npos) name.replace(name.find("attn_q"), 6, "attn_qkv");
    w.tensor({name, t.shape, v});
  }
  w.write(p);
  const ModelConfig cfg = readCheckpointConfig(p.string());
  EXPECT_EQ(cfg.model.architecture, Architecture::phi3);
  EXPECT_EQ(cfg.model.headDim, 0); // embedding_length / head_count, derived later
  EXPECT_EQ(cfg.model.rope.rotaryDim, m.rope.rotaryDim);
  if (m.rope.rotaryDim) { // the file's rotated width is not the model's to differ from
    ModelSpec whole = m;
    whole.rope.rotaryDim = 0;
    expectInputError([&] { openWeights(p.string(), whole); },
                     {p.string(), "it rotates 6 dimensions of each head in the file "
                                  "(phi3.rope.dimension_count) but 8 for the model"});
  }
  auto gguf = openWeights(p.string(), m);
  expectSameWeights(m, *original, *gguf, DType::f32);
  EXPECT_EQ(gguf->heldBytes(), qkBytes);

  // Neither q_proj nor qkv_proj: the message names both.
  std::vector<HFTensor> none;
  for (const HFTensor &t : fused)
    if (t.name.find("layers.1.self_attn.qkv_proj") == std::string::npos) none.push_back(t);
  writeSafetensors(dir.path / "model.safetensors", none);
  expectInputError([&] { openWeights(dir.path.string(), m)->tensor("layers.1.attention.wk",
                                                                    {m.kvDim(), m.hiddenSize}); },
                   {"missing tensor 'layers.1.attention.wk'", "self_attn.k_proj.weight",
                    "and no fused 'model.layers.1.self_attn.qkv_proj.weight'"});
}

// Partial RoPE's q/k rows (Phi-4-mini's): only the rows that turn are
// reordered, in safetensors and in the GGUF, whose rope.dimension_count
// below the head width is the rotated width.
TEST(Gguf, Phi3FusedRowsReadAsTheirParts) {
  ModelSpec m = smallSpec(false);
  m.architecture = Architecture::phi3;
  for (const ModelSpec &spec : {m, partialRopeSpec()}) {
    SCOPED_TRACE(spec.name);
    expectPhi3FusedRowsRead(spec);
  }
}

// Quantized rows move whole: a Q8_0 q projection of a qwen2 GGUF reads as
// the canonical rows, dequantized here from the blocks as written.
TEST(Gguf, Qwen2QuantizedRowsAreReordered) {
  ModelSpec m = smallSpec(true);
  const int64_t rows = m.qDim(), cols = m.hiddenSize, half = m.headDim / 2;
  ASSERT_EQ(cols, 32); // one Q8_0 block a row
  std::string blocks;
  std::vector<float> hfRows(size_t(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    const uint16_t scale = f32ToF16(float(r + 1) / 64.0f);
    blocks.append(reinterpret_cast<const char *>(&scale), 2);
    for (int64_t c = 0; c < cols; ++c) {
      const int8_t q = int8_t((r * 37 + c * 11) % 255 - 127);
      blocks += char(q);
      hfRows[size_t(r * cols + c)] = f16ToF32(scale) * float(q);
    }
  }
  ScratchDir dir;
  const fs::path p = dir.path / "q8.gguf";
  kvplan::testing::GgufWriter w = ggufHeader(m);
  w.tensor("blk.0.attn_q.weight", {rows, cols}, 8 /* GGML_TYPE_Q8_0 */, blocks);
  w.write(p);
  auto src = openWeights(p.string(), m);
  const SourceTensor t = src->tensor("layers.0.attention.wq", {rows, cols});
  EXPECT_EQ(t.quant, QuantType::q8_0);
  std::vector<float> got(size_t(rows * cols));
  sourceRowsToF32(t, 0, rows, got.data());
  for (int64_t h = 0; h < rows / m.headDim; ++h)
    for (int64_t j = 0; j < half; ++j)
      for (int64_t e = 0; e < 2; ++e)
        for (int64_t c = 0; c < cols; ++c)
          ASSERT_EQ(got[size_t((h * m.headDim + 2 * j + e) * cols + c)],
                    hfRows[size_t((h * m.headDim + j + e * half) * cols + c)])
              << "head " << h << " pair " << j << " half " << e << " column " << c;
}

TEST(Safetensors, HeldBytesAreThePermutedCopies) {
  // Aligned tensors are handed out from the mapping; wq and wk (their RoPE
  // rows reordered) are copies the source keeps.
  const ModelSpec m = smallSpec(false);
  auto original = openWeights("random:7", m);
  ScratchDir dir;
  writeSafetensors(dir.path / "model.safetensors", toHF(m, *original, DType::bf16));
  auto src = openWeights(dir.path.string(), m);
  uint64_t permuted = 0;
  for (const WeightDecl &w : weightTable(m)) {
    const bool rope = w.name.size() > 13 && (w.name.rfind(".attention.wq") == w.name.size() - 13 ||
                                             w.name.rfind(".attention.wk") == w.name.size() - 13);
    if (rope) permuted += uint64_t(elements(w.shape)) * 2;
  }
  ASSERT_GT(permuted, 0u);
  EXPECT_EQ(src->heldBytes(), permuted);
}

TEST(Safetensors, Bf16ReadsTheRoundedOriginal) {
  for (bool qwen : {false, true}) {
    const ModelSpec m = smallSpec(qwen);
    auto original = openWeights("random:7", m);
    ScratchDir dir;
    writeSafetensors(dir.path / "model.safetensors", toHF(m, *original, DType::bf16));
    expectSameWeights(m, *original, *openWeights(dir.path.string(), m), DType::bf16);
  }
}

TEST(Safetensors, ShardedWithIndex) {
  const ModelSpec m = smallSpec(true);
  auto original = openWeights("random:7", m);
  const std::vector<HFTensor> all = toHF(m, *original, DType::f32);
  ScratchDir dir;
  std::vector<HFTensor> first(all.begin(), all.begin() + long(all.size() / 2)),
      second(all.begin() + long(all.size() / 2), all.end());
  const char *names[2] = {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"};
  writeSafetensors(dir.path / names[0], first);
  writeSafetensors(dir.path / names[1], second);
  nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", nlohmann::json::object()}};
  for (const HFTensor &t : first) index["weight_map"][t.name] = names[0];
  for (const HFTensor &t : second) index["weight_map"][t.name] = names[1];
  writeFile(dir.path / "model.safetensors.index.json", index.dump(2));
  EXPECT_TRUE(hasSafetensors(dir.path.string()));
  expectSameWeights(m, *original, *openWeights(dir.path.string(), m), DType::f32);
  const std::string indexPath = (dir.path / "model.safetensors.index.json").string();
  EXPECT_TRUE(hasSafetensors(indexPath));
  expectSameWeights(m, *original, *openWeights(indexPath, m), DType::f32);

  // An index that sends a tensor to the wrong shard names both.
  index["weight_map"]["model.norm.weight"] = names[0];
  writeFile(dir.path / "model.safetensors.index.json", index.dump(2));
  expectInputError([&] { openWeights(dir.path.string(), m); },
                   {"model.safetensors.index.json", "model.norm.weight", names[0]});
}

TEST(Safetensors, MisalignedDataIsCopied) {
  const ModelSpec m = smallSpec(false);
  auto original = openWeights("random:7", m);
  ScratchDir dir;
  writeSafetensors(dir.path / "model.safetensors", toHF(m, *original, DType::f32), false);
  expectSameWeights(m, *original, *openWeights(dir.path.string(), m), DType::f32);
}

TEST(Safetensors, Errors) {
  const ModelSpec m = smallSpec(false);
  auto original = openWeights("random:7", m);
  std::vector<HFTensor> hf = toHF(m, *original, DType::f32);
  ScratchDir dir;
  const fs::path file = dir.path / "model.safetensors";
  const std::string fileName = file.string();

  // Missing tensor: opening works, asking for it names file and tensor.
  std::vector<HFTensor> noNorm;
  for (const HFTensor &t : hf)
    if (t.name != "model.norm.weight") noNorm.push_back(t);
  writeSafetensors(file, noNorm);
  auto src = openWeights(dir.path.string(), m);
  expectInputError([&] { src->tensor("norm", {32}); },
                   {fileName, "missing", "'norm'", "model.norm.weight"});
  expectInputError([&] { src->tensor("layers.0.attention.bq", {32}); },
                   {fileName, "self_attn.q_proj.bias", "attention_bias"});
  // Wrong shape.
  expectInputError([&] { src->tensor("layers.0.feed_forward.w1", {40, 32}); },
                   {fileName, "layers.0.feed_forward.w1", "[48, 32]", "[40, 32]"});

  // An unsupported dtype is reported when the tensor is read.
  std::vector<HFTensor> f64 = hf;
  f64[0].dtype = "F64";
  f64[0].bytes += f64[0].bytes;
  writeSafetensors(file, f64);
  auto f64src = openWeights(dir.path.string(), m);
  expectInputError([&] { f64src->tensor("tok_embeddings", {64, 32}); },
                   {fileName, "model.embed_tokens.weight", "F64"});

  const std::string good = readFile(file);
  // Corrupt JSON.
  std::string corrupt = good;
  corrupt[8] = '#';
  writeFile(file, corrupt);
  expectInputError([&] { openWeights(dir.path.string(), m); }, {fileName, "corrupt"});
  // A header length past the end of the file.
  std::string huge = good;
  huge[6] = 1;
  writeFile(file, huge);
  expectInputError([&] { openWeights(dir.path.string(), m); }, {fileName, "header length"});
  // Truncated data: the last tensor's range runs past the end.
  writeFile(file, good.substr(0, good.size() - 10));
  expectInputError([&] { openWeights(dir.path.string(), m); },
                   {fileName, "truncated", hf.back().name});
  // Shorter than the length field.
  writeFile(file, good.substr(0, 5));
  expectInputError([&] { openWeights(dir.path.string(), m); }, {fileName, "truncated"});
  // data_offsets that disagree with the shape.
  {
    std::vector<HFTensor> shortT = hf;
    shortT[1].shape = {7};
    writeSafetensors(file, shortT);
    expectInputError([&] { openWeights(dir.path.string(), m); },
                     {fileName, "corrupt", shortT[1].name});
  }
  // A corrupt index.
  ScratchDir sharded;
  writeFile(sharded.path / "model.safetensors.index.json", "{\"weight_map\": [1, 2]}");
  expectInputError([&] { openWeights(sharded.path.string(), m); },
                   {"model.safetensors.index.json", "weight_map"});
  // A directory without weights.
  ScratchDir empty;
  EXPECT_FALSE(hasSafetensors(empty.path.string()));
  expectInputError([&] { openWeights(empty.path.string(), m); },
                   {empty.path.string(), "model.safetensors"});
}

//===----------------------------------------------------------------------===//
// llama2.c and GGUF errors
//===----------------------------------------------------------------------===//

TEST(LlamaC, TruncatedFile) {
  const fs::path bin = modelsDir() / "stories260K" / "stories260K.bin";
  REQUIRE_FILE(bin);
  ScratchDir dir;
  const fs::path cut = dir.path / "cut.bin";
  writeFile(cut, readFile(bin).substr(0, 500000));
  expectInputError([&] { readCheckpointConfig(cut.string()); },
                   {cut.string(), "truncated", "1056540", "500000"});
  ModelConfig cfg = readCheckpointConfig(bin.string());
  expectInputError([&] { openWeights(cut.string(), cfg.model); },
                   {cut.string(), "truncated", "1056540", "500000"});
  writeFile(cut, readFile(bin).substr(0, 20));
  expectInputError([&] { readCheckpointConfig(cut.string()); }, {cut.string(), "truncated", "20"});
  // Extra bytes mean the file is not what the header says.
  writeFile(cut, readFile(bin) + "extra");
  expectInputError([&] { readCheckpointConfig(cut.string()); }, {cut.string(), "1056545"});
}

TEST(LlamaC, HeaderDisagreesWithModel) {
  const fs::path bin = modelsDir() / "stories260K" / "stories260K.bin";
  REQUIRE_FILE(bin);
  ModelConfig cfg = readCheckpointConfig(bin.string());
  ModelSpec m = cfg.model;
  m.intermediateSize = 128;
  auto src = openWeights(bin.string(), m);
  expectInputError([&] { src->tensor("layers.0.feed_forward.w1", {128, 64}); },
                   {bin.string(), "layers.0.feed_forward.w1", "[172, 64]", "[128, 64]"});
  expectInputError([&] { src->tensor("layers.5.attention.wq", {64, 64}); },
                   {bin.string(), "layers.5.attention.wq", "5 layers"});
  // The file shares its classifier; an untied model asks for one.
  expectInputError([&] { src->tensor("output", {512, 64}); },
                   {bin.string(), "'output'", "tie_word_embeddings"});
  // A header that is not a model.
  ScratchDir dir;
  std::string bytes = readFile(bin);
  const int32_t zero = 0;
  std::memcpy(bytes.data() + 12, &zero, 4); // n_heads
  writeFile(dir.path / "bad.bin", bytes);
  expectInputError([&] { readCheckpointConfig((dir.path / "bad.bin").string()); },
                   {"bad.bin", "n_heads"});
}

// Writes a minimal GGUF v3 file: string and u32 metadata, then tensors of any
// ggml type (data zeros of `bytes` each). A tensor with `fileByte` set gets
// the offset that, added to the data section's start modulo 2^64, lands on
// that byte of the file (a corrupt offset that wraps).
struct GgufTensorSpec {
  std::string name;
  std::vector<uint64_t> dims;
  uint32_t type;
  uint64_t bytes;
  std::optional<uint64_t> fileByte = std::nullopt;
};

void writeGguf(const fs::path &p, const std::map<std::string, std::string> &strings,
               const std::map<std::string, uint32_t> &u32s,
               const std::vector<GgufTensorSpec> &tensors) {
  std::string out = "GGUF";
  auto u32 = [&](uint32_t v) { out.append(reinterpret_cast<const char *>(&v), 4); };
  auto u64 = [&](uint64_t v) { out.append(reinterpret_cast<const char *>(&v), 8); };
  auto str = [&](const std::string &s) { u64(s.size()); out += s; };
  u32(3);
  u64(tensors.size());
  u64(strings.size() + u32s.size() + 1);
  for (const auto &[k, v] : strings) { str(k); u32(8); str(v); }
  for (const auto &[k, v] : u32s) { str(k); u32(4); u32(v); }
  str("llama.attention.layer_norm_rms_epsilon");
  u32(6);
  const float eps = 1e-5f;
  out.append(reinterpret_cast<const char *>(&eps), 4);
  uint64_t offset = 0;
  std::vector<std::pair<size_t, uint64_t>> wrapped; // where the offset is, the byte it targets
  for (const GgufTensorSpec &t : tensors) {
    str(t.name);
    u32(uint32_t(t.dims.size()));
    for (uint64_t d : t.dims) u64(d);
    u32(t.type);
    if (t.fileByte)
      wrapped.emplace_back(out.size(), *t.fileByte);
    u64(offset);
    offset += (t.bytes + 31) / 32 * 32;
  }
  while (out.size() % 32) out += '\0';
  for (const auto &[at, target] : wrapped) {
    const uint64_t v = target - uint64_t(out.size()); // wraps on purpose
    std::memcpy(&out[at], &v, 8);
  }
  out += std::string(offset, '\0');
  writeFile(p, out);
}

ModelSpec ggufSpec() {
  ModelSpec m;
  m.hiddenSize = 32;
  m.intermediateSize = 64;
  m.numLayers = 1;
  m.numHeads = 4;
  m.numKvHeads = 4;
  m.headDim = 8;
  m.vocabSize = 16;
  m.maxPositions = 64;
  m.tieWordEmbeddings = true;
  return m;
}

const std::map<std::string, uint32_t> kGgufDims = {
    {"llama.embedding_length", 32}, {"llama.feed_forward_length", 64},
    {"llama.block_count", 1},       {"llama.attention.head_count", 4},
    {"llama.context_length", 64},   {"llama.vocab_size", 16}};

TEST(Gguf, QuantizedAndUnsupportedTensorTypes) {
  ScratchDir dir;
  const fs::path p = dir.path / "q8.gguf";
  writeGguf(p, {{"general.architecture", "llama"}}, kGgufDims,
            {{"token_embd.weight", {32, 16}, 0, 32 * 16 * 4},
             {"blk.0.attn_q.weight", {32, 32}, 8, 32 * 34},      // Q8_0: 34-byte blocks of 32
             {"blk.0.attn_k.weight", {256, 2}, 12, 2 * 144},     // Q4_K: 144-byte blocks of 256
             {"blk.0.attn_v.weight", {32, 32}, 10, 32 * 42}}); // Q2_K: not read
  ModelConfig cfg = readCheckpointConfig(p.string());
  EXPECT_EQ(cfg.model.name, "q8");
  EXPECT_EQ(cfg.model.vocabSize, 16);
  EXPECT_TRUE(cfg.model.tieWordEmbeddings);
  // 1024 Q8_0 elements outweigh 512 Q4_K ones: int8.
  EXPECT_EQ(cfg.compile.weightDtype, DType::i8);
  auto src = openWeights(p.string(), ggufSpec());
  EXPECT_EQ(src->tensor("tok_embeddings", {16, 32}).quant, QuantType::none);
  const SourceTensor q = src->tensor("layers.0.attention.wq", {32, 32});
  EXPECT_EQ(q.quant, QuantType::q8_0);
  EXPECT_EQ(q.shape, (std::vector<int64_t>{32, 32}));
  EXPECT_EQ(toF32(q), std::vector<float>(32 * 32, 0.0f));
  const SourceTensor k = src->tensor("layers.0.attention.wk", {2, 256});
  EXPECT_EQ(k.quant, QuantType::q4_k);
  EXPECT_EQ(k.shape, (std::vector<int64_t>{2, 256}));
  expectInputError([&] { src->tensor("layers.0.attention.wv", {32, 32}); },
                   {p.string(), "blk.0.attn_v.weight", "Q2_K", "Q8_0, Q4_0", "Q6_K"});
  expectInputError([&] { src->tensor("layers.0.attention.wo", {32, 32}); },
                   {p.string(), "layers.0.attention.wo", "blk.0.attn_output.weight", "missing"});
  expectInputError([&] { src->tensor("tok_embeddings", {32, 16}); },
                   {p.string(), "token_embd.weight", "[16, 32]", "[32, 16]"});
  // A row that is not whole blocks is a corrupt file, named at open.
  writeGguf(p, {{"general.architecture", "llama"}}, kGgufDims,
            {{"blk.0.attn_q.weight", {48, 32}, 2, 32 * 2 * 18}});
  expectInputError([&] { readCheckpointConfig(p.string()); },
                   {p.string(), "blk.0.attn_q.weight", "Q4_0", "48", "blocks of 32"});
  // Sizes that overflow 64 bits are refused, not wrapped.
  writeGguf(p, {{"general.architecture", "llama"}}, kGgufDims,
            {{"blk.0.attn_q.weight", {uint64_t(1) << 40, uint64_t(1) << 40}, 0, 0}});
  expectInputError([&] { readCheckpointConfig(p.string()); },
                   {p.string(), "blk.0.attn_q.weight", "64 bits"});
}

TEST(Gguf, TensorOffsetsThatWrapAreRefused) {
  ScratchDir dir;
  const fs::path p = dir.path / "wrap.gguf";
  // An offset near 2^64 that the data section's start wraps to byte 0: the
  // tensor would point into the header.
  writeGguf(p, {{"general.architecture", "llama"}}, kGgufDims,
            {{"token_embd.weight", {32, 16}, 0, 32 * 16 * 4, 0}});
  const uint64_t size = fs::file_size(p), dataStart = size - 32 * 16 * 4;
  const std::string offset = std::to_string(uint64_t(0) - dataStart);
  expectInputError([&] { readCheckpointConfig(p.string()); },
                   {p.string(), "token_embd.weight", "offset " + offset, "2048 bytes",
                    "data section starts at byte " + std::to_string(dataStart)});
  expectInputError([&] { openWeights(p.string(), ggufSpec()); },
                   {p.string(), "token_embd.weight", "offset " + offset});
  // Also for a tensor of a type kvplan does not read (its size is unknown).
  writeGguf(p, {{"general.architecture", "llama"}}, kGgufDims,
            {{"blk.0.attn_v.weight", {32, 32}, 10, 32 * 42, 8}});
  expectInputError([&] { readCheckpointConfig(p.string()); },
                   {p.string(), "blk.0.attn_v.weight", "offset "});
  // An offset that ends exactly at the end of the file is accepted; one byte
  // further is not.
  writeGguf(p, {{"general.architecture", "llama"}}, kGgufDims,
            {{"token_embd.weight", {32, 16}, 0, 32 * 16 * 4}});
  EXPECT_NO_THROW(readCheckpointConfig(p.string()));
  writeGguf(p, {{"general.architecture", "llama"}}, kGgufDims,
            {{"token_embd.weight", {32, 16}, 0, 32 * 16 * 4, dataStart + 32}});
  expectInputError([&] { readCheckpointConfig(p.string()); },
                   {p.string(), "token_embd.weight", "offset 32", "2048 bytes",
                    std::to_string(size) + " bytes"});
  // The alignment that places the data section is bounded before use.
  std::map<std::string, uint32_t> dims = kGgufDims;
  dims["general.alignment"] = uint32_t(1) << 31;
  writeGguf(p, {{"general.architecture", "llama"}}, dims, {});
  expectInputError([&] { readCheckpointConfig(p.string()); },
                   {p.string(), "general.alignment 2.14748e+09", "at most 2^30"});
}

TEST(Gguf, ArchitectureAndRopeScalingAreChecked) {
  ScratchDir dir;
  const fs::path p = dir.path / "m.gguf";
  writeGguf(p, {{"general.architecture", "gemma"}}, kGgufDims, {});
  expectInputError([&] { readCheckpointConfig(p.string()); },
                   {p.string(), "'gemma'",
                    "llama, qwen2, qwen2moe, qwen3, qwen3moe, phi3, smollm3, gemma2, gemma3 "
                    "and gpt-oss"});
  expectInputError([&] { openWeights(p.string(), ggufSpec()); }, {p.string(), "'gemma'"});
  writeGguf(p, {{"general.architecture", "llama"}, {"llama.rope.scaling.type", "dynamic"}},
            kGgufDims, {});
  expectInputError([&] { readCheckpointConfig(p.string()); },
                   {p.string(), "llama.rope.scaling.type", "'dynamic'", "none, linear and yarn"});
  expectInputError([&] { openWeights(p.string(), ggufSpec()); },
                   {p.string(), "llama.rope.scaling.type", "'dynamic'"});
  // A rope_freqs tensor of zeros divides by zero: refused.
  writeGguf(p, {{"general.architecture", "llama"}}, kGgufDims,
            {{"rope_freqs.weight", {4}, 0, 16}});
  expectInputError([&] { openWeights(p.string(), ggufSpec()); },
                   {p.string(), "rope_freqs.weight", "element 0", "positive"});
  writeGguf(p, {{"general.architecture", "llama"}}, {{"llama.embedding_length", 32}}, {});
  expectInputError([&] { readCheckpointConfig(p.string()); },
                   {p.string(), "llama.feed_forward_length"});
  // A classifier that copies the embedding is a tied one.
  writeGguf(p, {{"general.architecture", "llama"}, {"general.name", "Named"}}, kGgufDims,
            {{"token_embd.weight", {32, 16}, 0, 32 * 16 * 4},
             {"output.weight", {32, 16}, 0, 32 * 16 * 4}});
  EXPECT_EQ(readCheckpointConfig(p.string()).model.name, "Named");
  EXPECT_TRUE(readCheckpointConfig(p.string()).model.tieWordEmbeddings);
  EXPECT_NO_THROW(openWeights(p.string(), ggufSpec()));
  // A separate classifier under a tied model would be ignored: refused.
  writeGguf(p, {{"general.architecture", "llama"}}, kGgufDims,
            {{"output.weight", {32, 16}, 0, 32 * 16 * 4}});
  EXPECT_FALSE(readCheckpointConfig(p.string()).model.tieWordEmbeddings);
  expectInputError([&] { openWeights(p.string(), ggufSpec()); },
                   {p.string(), "output.weight", "tie_word_embeddings"});
}

// A GGUF of ggufSpec()'s shape with RoPE metadata and tensors added by `add`.
ModelConfig ropeGguf(const fs::path &p, const std::function<void(GgufWriter &)> &add) {
  GgufWriter g;
  g.string("general.architecture", "llama");
  for (const auto &[k, v] : kGgufDims) g.u32(k, v);
  g.f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  add(g);
  g.write(p);
  return readCheckpointConfig(p.string());
}

TEST(Gguf, RopeKeysAndRopeFreqsAreRead) {
  ScratchDir dir;
  const fs::path p = dir.path / "rope.gguf";
  // Llama 3.1's factors: one per pair of an 8-wide head. A scaling type of
  // none ignores the linear factor, as llama.cpp does.
  ModelConfig cfg = ropeGguf(p, [](GgufWriter &g) {
    g.f32("llama.rope.freq_base", 500000.0f);
    g.string("llama.rope.scaling.type", "none");
    g.f32("llama.rope.scaling.factor", 4.0f);
    g.tensor({"rope_freqs.weight", {4}, {1.0f, 1.5f, 4.0f, 8.0f}});
  });
  EXPECT_EQ(cfg.model.rope.theta, 500000.0);
  EXPECT_EQ(cfg.model.rope.type, RopeType::standard);
  EXPECT_EQ(cfg.model.rope.freqFactors, (std::vector<double>{1.0, 1.5, 4.0, 8.0}));
  ModelSpec m = ggufSpec();
  m.rope = cfg.model.rope;
  EXPECT_NO_THROW(openWeights(p.string(), m));
  // Linear scaling: rope.scaling.factor, or the older rope.scale_linear, under
  // type linear or no type at all (llama.cpp's default); a factor of 1 is none.
  for (const char *key : {"llama.rope.scaling.factor", "llama.rope.scale_linear"})
    for (bool typed : {true, false}) {
      cfg = ropeGguf(p, [&](GgufWriter &g) {
        if (typed) g.string("llama.rope.scaling.type", "linear");
        g.f32(key, 4.0f);
      });
      EXPECT_EQ(cfg.model.rope.type, RopeType::linear) << key;
      EXPECT_EQ(cfg.model.rope.factor, 4.0) << key;
      EXPECT_TRUE(cfg.model.rope.freqFactors.empty());
    }
  cfg = ropeGguf(p, [](GgufWriter &g) { g.f32("llama.rope.scaling.factor", 1.0f); });
  EXPECT_EQ(cfg.model.rope.type, RopeType::standard);
  // LongRoPE as convert_hf_to_gguf.py writes Phi-3's: both lists, the
  // pretraining context and the attention factor (which multiplies cos and
  // sin, as in llama.cpp); without the context key, context_length.
  cfg = ropeGguf(p, [](GgufWriter &g) {
    g.u32("llama.rope.scaling.original_context_length", 16);
    g.f32("llama.rope.scaling.attn_factor", 1.25f);
    g.tensor({"rope_factors_long.weight", {4}, {1.0f, 2.0f, 4.0f, 8.0f}});
    g.tensor({"rope_factors_short.weight", {4}, {1.0f, 1.0f, 1.5f, 2.0f}});
  });
  EXPECT_EQ(cfg.model.rope.type, RopeType::longrope);
  EXPECT_EQ(cfg.model.rope.longFactors, (std::vector<double>{1.0, 2.0, 4.0, 8.0}));
  EXPECT_EQ(cfg.model.rope.shortFactors, (std::vector<double>{1.0, 1.0, 1.5, 2.0}));
  EXPECT_EQ(cfg.model.rope.originalMaxPositions, 16);
  EXPECT_EQ(cfg.model.rope.attentionFactor, 1.25);
  validate(cfg); // max_seq_len chooses a list: 64, beyond 16
  EXPECT_EQ(cfg.model.rope.freqFactors, cfg.model.rope.longFactors);
  cfg = ropeGguf(p, [](GgufWriter &g) {
    g.tensor({"rope_factors_long.weight", {4}, {1.0f, 2.0f, 4.0f, 8.0f}});
    g.tensor({"rope_factors_short.weight", {4}, {1.0f, 1.0f, 1.5f, 2.0f}});
  });
  EXPECT_EQ(cfg.model.rope.originalMaxPositions, cfg.model.maxPositions);
  validate(cfg);
  EXPECT_EQ(cfg.model.rope.freqFactors, cfg.model.rope.shortFactors);
}

// YaRN as llama.cpp runs a llama or qwen3 GGUF: the factor, the pretraining
// context (else context_length), the betas 32 and 1, cos and sin times the
// file's attn_factor times 0.1 ln(factor) + 1. A model given YaRN over the
// file's unscaled RoPE (compile's --yarn) is checked on the RoPE it scales.
TEST(Gguf, YarnIsReadAsLlamaCppRunsIt) {
  ScratchDir dir;
  const fs::path p = dir.path / "yarn.gguf";
  ModelConfig cfg = ropeGguf(p, [](GgufWriter &g) {
    g.f32("llama.rope.freq_base", 1000000.0f);
    g.string("llama.rope.scaling.type", "yarn");
    g.f32("llama.rope.scaling.factor", 4.0f);
    g.u32("llama.rope.scaling.original_context_length", 32);
  });
  EXPECT_EQ(cfg.model.rope.type, RopeType::yarn);
  EXPECT_EQ(cfg.model.rope.factor, 4.0);
  EXPECT_EQ(cfg.model.rope.originalMaxPositions, 32);
  EXPECT_EQ(cfg.model.rope.betaFast, 32.0);
  EXPECT_EQ(cfg.model.rope.betaSlow, 1.0);
  EXPECT_TRUE(cfg.model.rope.yarnTruncate);
  EXPECT_NEAR(cfg.model.rope.attentionFactor, 0.1 * std::log(4.0) + 1, 1e-12);
  EXPECT_EQ(ropeContext(cfg.model), 128); // 32 x 4, past context_length 64
  ModelSpec m = ggufSpec();
  m.rope = cfg.model.rope;
  EXPECT_NO_THROW(openWeights(p.string(), m));
  m.rope.factor = 8; // the frequencies differ: refused
  expectInputError([&] { openWeights(p.string(), m); }, {p.string(), "RoPE differs"});
  cfg = ropeGguf(p, [](GgufWriter &g) {
    g.string("llama.rope.scaling.type", "yarn");
    g.f32("llama.rope.scaling.factor", 2.0f);
    g.f32("llama.rope.scaling.attn_factor", 0.5f);
    g.f32("llama.rope.scaling.yarn_beta_fast", 32.0f); // plain values may be written
  });
  EXPECT_EQ(cfg.model.rope.originalMaxPositions, cfg.model.maxPositions);
  EXPECT_NEAR(cfg.model.rope.attentionFactor, 0.5 * (0.1 * std::log(2.0) + 1), 1e-7);
  // YaRN given over a file without scaling: its base and width still checked.
  writeGguf(p, {{"general.architecture", "llama"}}, kGgufDims, {});
  m = ggufSpec();
  m.rope.type = RopeType::yarn;
  m.rope.factor = 4;
  m.rope.originalMaxPositions = 64;
  m.rope.attentionFactor = 1.2;
  EXPECT_NO_THROW(openWeights(p.string(), m));
  m.rope.theta = 500000;
  expectInputError([&] { openWeights(p.string(), m); }, {p.string(), "RoPE differs"});

  const std::string f = p.string();
  auto refused = [&](const std::function<void(GgufWriter &)> &add,
                     std::initializer_list<std::string> parts) {
    expectInputError([&] { ropeGguf(p, add); }, parts);
  };
  refused([](GgufWriter &g) { g.string("llama.rope.scaling.type", "yarn"); },
          {f, "llama.rope.scaling.factor is missing"});
  for (const char *key : {"llama.rope.scaling.yarn_beta_fast", "llama.rope.scaling.yarn_ext_factor",
                          "llama.rope.scaling.yarn_log_multiplier"})
    refused([&](GgufWriter &g) {
      g.string("llama.rope.scaling.type", "yarn");
      g.f32("llama.rope.scaling.factor", 4.0f);
      g.f32(key, 0.25f);
    }, {f, key, "0.25", "as llama.cpp runs this architecture"});
  refused([](GgufWriter &g) {
    g.string("llama.rope.scaling.type", "yarn");
    g.f32("llama.rope.scaling.factor", 4.0f);
    g.tensor({"rope_freqs.weight", {4}, {1, 2, 4, 8}});
  }, {f, "rope_freqs.weight", "'yarn'", "one RoPE scaling"});
}

TEST(Gguf, BadRopeFreqsAndScalingAreRefused) {
  ScratchDir dir;
  const fs::path p = dir.path / "bad.gguf";
  const std::string f = p.string();
  auto refused = [&](const std::function<void(GgufWriter &)> &add,
                     std::initializer_list<std::string> parts) {
    expectInputError([&] { ropeGguf(p, add); }, parts);
  };
  refused([](GgufWriter &g) { g.tensor({"rope_freqs.weight", {3}, {1, 2, 4}}); },
          {f, "rope_freqs.weight", "shape [3]", "expected [4]"});
  refused([](GgufWriter &g) { g.tensor({"rope_freqs.weight", {2, 4}, std::vector<float>(8, 1)}); },
          {f, "rope_freqs.weight", "shape [4, 2]", "expected [4]"});
  refused([](GgufWriter &g) { g.tensor({"rope_freqs.weight", {4}, {1, 2, -4, 8}}); },
          {f, "rope_freqs.weight", "element 2", "-4", "positive and finite"});
  refused([](GgufWriter &g) { g.tensor({"rope_freqs.weight", {4}, {1, 0, 4, 8}}); },
          {f, "rope_freqs.weight", "element 1", "positive"});
  refused([](GgufWriter &g) { g.tensor({"rope_freqs.weight", {4}, {1, 2, NAN, 8}}); },
          {f, "rope_freqs.weight", "element 2", "nan"});
  refused([](GgufWriter &g) { g.string("llama.rope.scaling.type", "longrope"); },
          {f, "llama.rope.scaling.type", "'longrope'"});
  refused([](GgufWriter &g) { g.f32("llama.rope.scaling.factor", -2.0f); },
          {f, "llama.rope.scaling.factor", "-2", "positive"});
  refused([](GgufWriter &g) { g.f32("llama.rope.scaling.attn_factor", -0.5f); },
          {f, "llama.rope.scaling.attn_factor", "-0.5", "must be positive"});
  refused([](GgufWriter &g) { g.tensor({"rope_factors_long.weight", {4}, {1, 2, 4, 8}}); },
          {f, "rope_factors_long.weight", "without 'rope_factors_short.weight'"});
  refused([](GgufWriter &g) {
    g.tensor({"rope_factors_long.weight", {4}, {1, 2, 4, 8}});
    g.tensor({"rope_factors_short.weight", {4}, {1, 1, 2, 2}});
    g.tensor({"rope_freqs.weight", {4}, {1, 2, 4, 8}});
  }, {f, "LongRoPE's rope_factors_long/short.weight", "rope_freqs.weight"});
  refused([](GgufWriter &g) {
    g.tensor({"rope_factors_long.weight", {4}, {1, 2, 4, 8}});
    g.tensor({"rope_factors_short.weight", {3}, {1, 1, 2}});
  }, {f, "rope_factors_short.weight", "shape [3]", "expected [4]"});
  // Not F32: refused by type.
  writeGguf(p, {{"general.architecture", "llama"}}, kGgufDims,
            {{"rope_freqs.weight", {4}, GgufFile::kF16, 8}});
  expectInputError([&] { readCheckpointConfig(f); }, {f, "rope_freqs.weight", "F16", "F32"});
}

// The file's weights under a model described elsewhere: its RoPE must be the
// model's, factors and all.
TEST(Gguf, ModelWithoutTheFilesRopeIsRefused) {
  ScratchDir dir;
  const fs::path p = dir.path / "llama3.gguf";
  ropeGguf(p, [](GgufWriter &g) {
    g.f32("llama.rope.freq_base", 10000.0f);
    g.tensor({"rope_freqs.weight", {4}, {1.0f, 1.0f, 2.0f, 8.0f}});
  });
  ModelSpec m = ggufSpec();
  expectInputError([&] { openWeights(p.string(), m); },
                   {p.string(), "RoPE differs", "frequency 2", "rope_freqs.weight"});
  m.rope.freqFactors = {1.0, 1.0, 2.0, 8.0};
  EXPECT_NO_THROW(openWeights(p.string(), m));
  m.rope.theta = 500000.0;
  expectInputError([&] { openWeights(p.string(), m); }, {p.string(), "frequency 1"});
}

TEST(Dispatch, SourcesAndCheckpointFiles) {
  const ModelSpec m = smallSpec(false);
  EXPECT_TRUE(isCheckpointFile("model.bin"));
  EXPECT_TRUE(isCheckpointFile("model.gguf"));
  EXPECT_FALSE(isCheckpointFile("model.toml"));
  EXPECT_FALSE(isCheckpointFile("config.json"));
  expectInputError([&] { openWeights("/nonexistent/weights.bin", m); },
                   {"/nonexistent/weights.bin", "no such file"});
  expectInputError([&] { readCheckpointConfig("model.toml"); }, {"model.toml"});
  ScratchDir dir;
  writeFile(dir.path / "w.txt", "hello");
  expectInputError([&] { openWeights((dir.path / "w.txt").string(), m); },
                   {"w.txt", "unknown weight format"});
}

//===----------------------------------------------------------------------===//
// Progress
//===----------------------------------------------------------------------===//

TEST(Progress, SilentWhenStderrIsNotATerminal) {
  ::testing::internal::CaptureStderr();
  {
    Progress p("loading", 1000);
    for (int i = 0; i < 10; ++i) {
      p.advance(100);
      std::this_thread::sleep_for(std::chrono::milliseconds(30));
    }
  }
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
}

TEST(Progress, DrawsAtMostTenTimesASecondOnATerminal) {
  const int master = posix_openpt(O_RDWR | O_NOCTTY);
  if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0)
    GTEST_SKIP() << "no pseudo-terminal available";
  const int slave = open(ptsname(master), O_RDWR | O_NOCTTY);
  ASSERT_GE(slave, 0);
  fflush(stderr);
  const int saved = dup(2);
  dup2(slave, 2);
  {
    Progress quick("quick", 10); // finishes at once: no bar
    quick.advance(10);
  }
  {
    Progress p("packing", 100);
    for (int i = 0; i < 50; ++i) {
      p.advance(2);
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  close(slave);
  std::string out;
  char buf[4096];
  fcntl(master, F_SETFL, O_NONBLOCK);
  for (ssize_t n; (n = read(master, buf, sizeof buf)) > 0;) out.append(buf, size_t(n));
  close(master);
  EXPECT_EQ(out.find("quick"), std::string::npos) << out;
  size_t draws = 0;
  for (size_t at = out.find("packing"); at != std::string::npos; at = out.find("packing", at + 1))
    ++draws;
  // About 0.5 s of work: a handful of redraws plus the final one.
  EXPECT_GE(draws, 2u) << out;
  EXPECT_LE(draws, 8u) << out;
  EXPECT_NE(out.find("100%"), std::string::npos) << out;
}

} // namespace

TEST(LlamaC, SeparateClassifierIsReadFromTheEnd) {
  // A llama2.c checkpoint written here from random weights, with a negative
  // vocab_size: the classifier follows the RoPE tables at the end.
  ModelSpec m;
  m.hiddenSize = 16;
  m.intermediateSize = 24;
  m.numLayers = 2;
  m.numHeads = 4;
  m.numKvHeads = 2;
  m.headDim = 4;
  m.vocabSize = 11;
  m.maxPositions = 8;
  std::unique_ptr<WeightSource> random = openWeights("random:3", m);
  auto t = [&](const std::string &name, std::vector<int64_t> shape) {
    SourceTensor s = random->tensor(name, shape);
    const float *p = static_cast<const float *>(s.data);
    return std::vector<float>(p, p + elements(shape));
  };
  const int64_t H = 16, F = 24, KV = 8, L = 2, V = 11, S = 8;
  int32_t header[7] = {int32_t(H), int32_t(F), int32_t(L), 4, 2, -int32_t(V), int32_t(S)};
  std::vector<float> body;
  auto put = [&](const std::vector<float> &v) { body.insert(body.end(), v.begin(), v.end()); };
  auto perLayer = [&](const std::string &suffix, std::vector<int64_t> shape) {
    for (int64_t l = 0; l < L; ++l) put(t("layers." + std::to_string(l) + "." + suffix, shape));
  };
  put(t("tok_embeddings", {V, H}));
  perLayer("attention_norm", {H});
  perLayer("attention.wq", {H, H});
  perLayer("attention.wk", {KV, H});
  perLayer("attention.wv", {KV, H});
  perLayer("attention.wo", {H, H});
  perLayer("ffn_norm", {H});
  perLayer("feed_forward.w1", {F, H});
  perLayer("feed_forward.w2", {H, F});
  perLayer("feed_forward.w3", {F, H});
  put(t("norm", {H}));
  put(std::vector<float>(size_t(S * 4 / 2 * 2), 0.5f)); // freq_cis_real, freq_cis_imag
  std::vector<float> classifier = t("output", {V, H});
  put(classifier);

  ScratchDir dir;
  fs::path bin = dir.path / "separate.bin";
  {
    std::ofstream out(bin, std::ios::binary);
    out.write(reinterpret_cast<const char *>(header), sizeof header);
    out.write(reinterpret_cast<const char *>(body.data()), std::streamsize(body.size() * 4));
  }
  ModelConfig cfg = readCheckpointConfig(bin.string());
  EXPECT_FALSE(cfg.model.tieWordEmbeddings);
  EXPECT_EQ(cfg.model.vocabSize, V);
  std::unique_ptr<WeightSource> src = openWeights(bin.string(), cfg.model);
  SourceTensor out = src->tensor("output", {V, H});
  EXPECT_EQ(std::memcmp(out.data, classifier.data(), classifier.size() * 4), 0);
  SourceTensor w2 = src->tensor("layers.1.feed_forward.w2", {H, F});
  std::vector<float> want = t("layers.1.feed_forward.w2", {H, F});
  EXPECT_EQ(std::memcmp(w2.data, want.data(), want.size() * 4), 0);
}

TEST(SharedModels, QuantizedGgufDefaultWeightDtype) {
  // By the layer matrices' types, weighted by element count: the 4-bit
  // types int4 holds losslessly give int4, wider quantized types int8.
  const fs::path dir = modelsDir() / "gguf-quants";
  REQUIRE_FILE(dir / "q256-Q8_0.gguf");
  const std::pair<const char *, DType> files[] = {
      {"q256-f32.gguf", DType::f32},  {"q256-Q8_0.gguf", DType::i8},
      {"q256-Q4_0.gguf", DType::i4},  {"q256-Q4_1.gguf", DType::i4},
      {"q256-Q5_0.gguf", DType::i8},  {"q256-Q4_K_M.gguf", DType::i4}, // Q4_K with some Q6_K
      {"q256-Q5_K_M.gguf", DType::i8}, {"q256-Q6_K.gguf", DType::i8}};
  for (const auto &[file, dtype] : files) {
    ModelConfig cfg = readCheckpointConfig((dir / file).string());
    EXPECT_EQ(cfg.compile.weightDtype, dtype) << file;
    EXPECT_EQ(cfg.model.hiddenSize, 256) << file;
    EXPECT_FALSE(cfg.model.tieWordEmbeddings) << file; // an untied output
  }
}

//===----------------------------------------------------------------------===//
// Mixtures of experts
//===----------------------------------------------------------------------===//

namespace {

/// Mixtral's shape on the small model: 3 experts of 48, 2 a token.
ModelSpec moeSpec() {
  ModelSpec m = smallSpec(false);
  m.name = "tiny-moe";
  m.numExperts = 3;
  m.expertsPerToken = 2;
  return m;
}

/// Distinct values: tensor `t`'s element i is t * 1000 + i.
std::vector<float> numbered(int t, int64_t n) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = float(t * 1000 + i);
  return v;
}

} // namespace

// Hugging Face keeps each expert's matrix in a tensor of its own (Mixtral's
// block_sparse_moe.experts.E.w1, Qwen3-MoE's mlp.experts.E.gate_proj); the
// source hands the stack out as slabs, in expert order, read in place.
TEST(Safetensors, ExpertsAreStackedFromTheirOwnTensors) {
  const ModelSpec m = moeSpec();
  const std::vector<int64_t> stack = {3, 48, 32}, one = {48, 32};
  for (bool mixtral : {true, false}) {
    SCOPED_TRACE(mixtral ? "mixtral" : "qwen3_moe");
    const std::string l = "model.layers.0.";
    std::vector<F32Tensor> tensors = {
        {l + (mixtral ? "block_sparse_moe.gate.weight" : "mlp.gate.weight"), {3, 32},
         numbered(9, 96)}};
    for (int e = 0; e < 3; ++e)
      tensors.push_back({l + (mixtral ? "block_sparse_moe.experts." + std::to_string(e) + ".w1"
                                      : "mlp.experts." + std::to_string(e) + ".gate_proj") +
                             ".weight",
                         one, numbered(e, 48 * 32)});
    ScratchDir dir;
    writeSafetensorsF32(dir.path / "model.safetensors", tensors);
    auto source = openWeights(dir.path.string(), m);
    const SourceTensor router = source->tensor("layers.0.feed_forward.router", {3, 32});
    EXPECT_EQ(toF32(router), numbered(9, 96));
    const SourceTensor t = source->tensor("layers.0.feed_forward.experts.w1", stack);
    ASSERT_EQ(t.slabs.size(), 3u);
    EXPECT_EQ(t.data, nullptr);
    // Rows 40 to 60 cross from expert 0's matrix into expert 1's.
    std::vector<float> rows(20 * 32);
    sourceRowsToF32(t, 40, 20, rows.data());
    for (int64_t r = 0; r < 20; ++r)
      for (int64_t c = 0; c < 32; ++c) {
        const int64_t row = 40 + r, e = row / 48;
        ASSERT_EQ(rows[size_t(r * 32 + c)], float(e * 1000 + (row % 48) * 32 + c));
      }
    // The up stack has no tensors: the first missing expert is named.
    try {
      source->tensor("layers.0.feed_forward.experts.w3", stack);
      ADD_FAILURE() << "expected an error";
    } catch (const InputError &e) {
      const std::string msg = e.what();
      for (const char *part : {"missing tensor 'layers.0.feed_forward.experts.w3'",
                               mixtral ? "block_sparse_moe.experts.0.w3.weight"
                                       : "mlp.experts.0.up_proj.weight",
                               "expert 0 of the model's 3"})
        EXPECT_NE(msg.find(part), std::string::npos) << part << " not in: " << msg;
    }
  }
}

// A GGUF stacks them (ffn_gate_exps: ggml's [in, out, experts]); a file
// from before llama.cpp stacked them keeps one tensor an expert
// (ffn_gate.E.weight), which reads as the same stack, in place.
TEST(Gguf, ExpertsAreReadStackedOrApart) {
  std::vector<float> all;
  for (int e = 0; e < 3; ++e) {
    const std::vector<float> one = numbered(e, 64 * 32);
    all.insert(all.end(), one.begin(), one.end());
  }
  for (bool stacked : {true, false}) {
    SCOPED_TRACE(stacked ? "stacked" : "apart");
    ScratchDir dir;
    const fs::path p = dir.path / "moe.gguf";
    GgufWriter g;
    g.string("general.architecture", "llama");
    for (const auto &[key, v] : kGgufDims) g.u32(key, v);
    g.u32("llama.expert_count", 3);
    g.u32("llama.expert_used_count", 2);
    g.f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
    g.tensor({"blk.0.ffn_gate_inp.weight", {3, 32}, numbered(9, 96)});
    if (stacked)
      g.tensor({"blk.0.ffn_gate_exps.weight", {3, 64, 32}, all});
    else
      for (int e = 0; e < 3; ++e)
        g.tensor({"blk.0.ffn_gate." + std::to_string(e) + ".weight", {64, 32},
                  numbered(e, 64 * 32)});
    g.tensor({"blk.0.ffn_up.0.weight", {64, 32}, numbered(5, 64 * 32)}); // expert 0 alone
    g.write(p);
    ModelConfig cfg = readCheckpointConfig(p.string());
    EXPECT_EQ(cfg.model.numExperts, 3);
    EXPECT_EQ(cfg.model.expertsPerToken, 2);
    EXPECT_EQ(cfg.model.expertWidth(), 64); // feed_forward_length: Mixtral's files
    EXPECT_TRUE(cfg.model.normTopKProb);
    auto source = openWeights(p.string(), cfg.model);
    const SourceTensor t = source->tensor("layers.0.feed_forward.experts.w1", {3, 64, 32});
    EXPECT_EQ(t.slabs.size(), stacked ? 0u : 3u);
    EXPECT_EQ(toF32(t), all);
    // An expert missing from the tensors apart is named.
    try {
      source->tensor("layers.0.feed_forward.experts.w3", {3, 64, 32});
      ADD_FAILURE() << "expected an error";
    } catch (const InputError &e) {
      const std::string msg = e.what();
      for (const char *part : {"missing tensor 'layers.0.feed_forward.experts.w3'",
                               "blk.0.ffn_up.1.weight", "expert 1 of the model's 3"})
        EXPECT_NE(msg.find(part), std::string::npos) << part << " not in: " << msg;
    }
  }
}

// A gpt-oss file: the parts llama.cpp's openai-moe graph runs (biases
// everywhere, sinks, the clamped SwiGLU), every other layer under its window
// from layer 0, the norm before the experts under post_attention_norm, and
// the refusals: a sliding layers' base of their own, MXFP4 experts.
TEST(Gguf, GptOssIsReadAsLlamaCppRunsIt) {
  ScratchDir dir;
  const fs::path p = dir.path / "gpt-oss.gguf";
  auto write = [&](const std::function<void(GgufWriter &)> &add) {
    GgufWriter g;
    g.string("general.architecture", "gpt-oss");
    for (const auto &[key, v] : kGgufDims) g.u32("gpt-oss" + key.substr(5), v);
    g.u32("gpt-oss.block_count", 4);
    g.u32("gpt-oss.attention.head_count_kv", 2);
    g.u32("gpt-oss.attention.key_length", 16);
    g.u32("gpt-oss.attention.value_length", 16);
    g.u32("gpt-oss.expert_count", 4);
    g.u32("gpt-oss.expert_used_count", 2);
    g.u32("gpt-oss.expert_feed_forward_length", 48);
    g.u32("gpt-oss.attention.sliding_window", 8);
    g.f32("gpt-oss.rope.freq_base", 150000.0f);
    g.f32("gpt-oss.attention.layer_norm_rms_epsilon", 1e-5f);
    g.tensor({"blk.0.post_attention_norm.weight", {32}, numbered(3, 32)});
    g.tensor({"blk.0.attn_sinks.weight", {4}, {0.5f, -1, 2, 0}});
    // The harmony format's end tokens, its EOS <|return|> among them.
    g.strings("tokenizer.ggml.tokens", {"a", "<|endoftext|>", "b", "<|return|>", "<|call|>",
                                        "<|end|>", "c", "d", "e", "f", "g", "h", "i", "j", "k",
                                        "l"});
    g.u32("tokenizer.ggml.eos_token_id", 3);
    add(g);
    g.write(p);
  };
  write([](GgufWriter &) {});
  ModelConfig cfg = readCheckpointConfig(p.string());
  const ModelSpec &m = cfg.model;
  EXPECT_EQ(m.architecture, Architecture::gpt_oss);
  EXPECT_TRUE(m.attentionBias && m.attentionOutBias && m.attentionSinks && m.expertBias);
  EXPECT_EQ(m.activation, Activation::swiglu_oai);
  EXPECT_EQ(m.swigluLimit, 7.0); // llama.cpp's, which no key holds
  EXPECT_EQ(m.swigluAlpha, 1.702);
  EXPECT_TRUE(m.normTopKProb); // the softmax of the chosen logits alone
  EXPECT_EQ(m.headDim, 16);    // 4 heads of 16 over a hidden size of 32
  EXPECT_EQ(m.expertWidth(), 48);
  EXPECT_EQ(m.slidingWindow, 8);
  EXPECT_EQ(m.fullAttentionLayers, (std::vector<int64_t>{1, 3})); // layer 0 slides
  // Generation ends at <|return|>, <|call|> and <|endoftext|>, not <|end|> (a message's end
  // within a reply), as llama.cpp has them.
  EXPECT_EQ(m.eosTokenIds, (std::vector<int64_t>{3, 1, 4}));
  // Also where eot_token_id names <|end|>.
  write([](GgufWriter &g) { g.u32("tokenizer.ggml.eot_token_id", 5); });
  EXPECT_EQ(readCheckpointConfig(p.string()).model.eosTokenIds, (std::vector<int64_t>{3, 1, 4}));
  write([](GgufWriter &) {});
  // The norm before the experts is post_attention_norm; the sinks stay f32.
  auto source = openWeights(p.string(), m);
  EXPECT_EQ(toF32(source->tensor("layers.0.ffn_norm", {32})), numbered(3, 32));
  EXPECT_EQ(toF32(source->tensor("layers.0.attention.sinks", {4})),
            (std::vector<float>{0.5f, -1, 2, 0}));
  expectInputError([&] { source->tensor("layers.0.feed_forward.experts.b1", {4, 48}); },
                   {p.string(), "blk.0.ffn_gate_exps.bias", "missing"});
  // No stack of experts MXFP4: every matrix at one type (F32's here).
  EXPECT_FALSE(cfg.compile.expertDtype);
  // Its published GGUFs' MXFP4 experts stay mxfp4; the other matrices (here
  // Q8_0 ones) set the weight type, as if the experts were not there.
  write([](GgufWriter &g) {
    for (const char *stack : {"gate", "up", "down"})
      g.tensor("blk.0.ffn_" + std::string(stack) + "_exps.weight", {4, 48, 32}, 39,
               std::string(4 * 48 * 17, '\0'));
    g.tensor("blk.0.attn_q.weight", {64, 32}, 8, std::string(64 * 34, '\0'));
  });
  cfg = readCheckpointConfig(p.string());
  EXPECT_EQ(cfg.compile.expertDtype, DType::mxfp4);
  EXPECT_EQ(cfg.compile.weightDtype, DType::i8);
  // A period of 4: layers 3 reads every key.
  write([](GgufWriter &g) { g.u32("gpt-oss.attention.sliding_window_pattern", 4); });
  EXPECT_EQ(readCheckpointConfig(p.string()).model.fullAttentionLayers,
            (std::vector<int64_t>{3}));
  write([](GgufWriter &g) { g.f32("gpt-oss.rope.freq_base_swa", 10000.0f); });
  expectInputError([&] { readCheckpointConfig(p.string()); },
                   {p.string(), "gpt-oss.rope.freq_base_swa 10000", "gpt-oss.rope.freq_base 150000",
                    "sliding layers"});
  write([](GgufWriter &g) { g.f32("gpt-oss.rope.freq_base_swa", 150000.0f); }); // the same: read
  EXPECT_NO_THROW(readCheckpointConfig(p.string()));
  // gpt-oss's published GGUFs keep the experts in MXFP4 (ggml type 39):
  // read as its blocks, the default weight type int8 (which holds them
  // exactly); GgmlQuants.Mxfp4BlocksAreTheOcpFormatsValues has the values.
  const fs::path q = dir.path / "mxfp4.gguf";
  writeGguf(q, {{"general.architecture", "llama"}}, kGgufDims,
            {{"blk.0.attn_q.weight", {32, 32}, 39, 32 * 17}});
  EXPECT_EQ(readCheckpointConfig(q.string()).compile.weightDtype, DType::i8);
  auto mx = openWeights(q.string(), ggufSpec());
  const SourceTensor t = mx->tensor("layers.0.attention.wq", {32, 32});
  EXPECT_EQ(t.quant, QuantType::mxfp4);
  EXPECT_EQ(toF32(t), std::vector<float>(32 * 32, 0.0f));
}

// gpt-oss's checkpoint holds a layer's experts in two tensors applied as
// x @ W: gate_up_proj [experts, hidden, 2 x ff], gate column j at 2j and up
// column j at 2j + 1, and down_proj [experts, ff, hidden]; the source hands
// out the canonical [out, in] stacks transposed out of them, and the
// router, sinks and output bias under gpt-oss's names.
TEST(Safetensors, GptOssExpertsAreTransposedOutOfGateUp) {
  ModelSpec m = moeSpec();
  m.architecture = Architecture::gpt_oss;
  m.attentionBias = m.attentionOutBias = m.attentionSinks = m.expertBias = true;
  m.activation = Activation::swiglu_oai;
  const int64_t E = 3, H = m.hiddenSize, F = m.expertWidth();
  const std::string l = "model.layers.0.";
  ScratchDir dir;
  kvplan::testing::writeSafetensorsF32(dir.path / "model.safetensors",
                      {{l + "mlp.router.weight", {E, H}, numbered(1, E * H)},
                       {l + "mlp.router.bias", {E}, numbered(2, E)},
                       {l + "mlp.experts.gate_up_proj", {E, H, 2 * F}, numbered(3, E * H * 2 * F)},
                       {l + "mlp.experts.gate_up_proj_bias", {E, 2 * F}, numbered(4, E * 2 * F)},
                       {l + "mlp.experts.down_proj", {E, F, H}, numbered(5, E * F * H)},
                       {l + "mlp.experts.down_proj_bias", {E, H}, numbered(6, E * H)},
                       {l + "self_attn.sinks", {m.numHeads}, numbered(7, m.numHeads)},
                       {l + "self_attn.o_proj.bias", {H}, numbered(8, H)}});
  auto source = openWeights(dir.path.string(), m);
  EXPECT_EQ(toF32(source->tensor("layers.0.feed_forward.router", {E, H})), numbered(1, E * H));
  EXPECT_EQ(toF32(source->tensor("layers.0.feed_forward.router_bias", {E})), numbered(2, E));
  EXPECT_EQ(toF32(source->tensor("layers.0.attention.sinks", {m.numHeads})),
            numbered(7, m.numHeads));
  EXPECT_EQ(toF32(source->tensor("layers.0.attention.bo", {H})), numbered(8, H));
  EXPECT_EQ(toF32(source->tensor("layers.0.feed_forward.experts.b2", {E, H})), numbered(6, E * H));
  const std::string x = "layers.0.feed_forward.experts.";
  const std::vector<float> gates = toF32(source->tensor(x + "w1", {E, F, H}));
  const std::vector<float> ups = toF32(source->tensor(x + "w3", {E, F, H}));
  const std::vector<float> downs = toF32(source->tensor(x + "w2", {E, H, F}));
  const std::vector<float> gateBias = toF32(source->tensor(x + "b1", {E, F}));
  const std::vector<float> upBias = toF32(source->tensor(x + "b3", {E, F}));
  for (int64_t e = 0; e < E; ++e)
    for (int64_t j = 0; j < F; ++j) {
      for (int64_t h = 0; h < H; ++h) {
        const size_t at = size_t((e * F + j) * H + h);
        ASSERT_EQ(gates[at], float(3000 + (e * H + h) * 2 * F + 2 * j)) << e << " " << j;
        ASSERT_EQ(ups[at], float(3000 + (e * H + h) * 2 * F + 2 * j + 1)) << e << " " << j;
        ASSERT_EQ(downs[size_t((e * H + h) * F + j)], float(5000 + (e * F + j) * H + h));
      }
      EXPECT_EQ(gateBias[size_t(e * F + j)], float(4000 + e * 2 * F + 2 * j));
      EXPECT_EQ(upBias[size_t(e * F + j)], float(4000 + e * 2 * F + 2 * j + 1));
    }
  // The copies are the held bytes: gates, ups, downs and two biases.
  EXPECT_EQ(source->heldBytes(), uint64_t(4 * (3 * E * F * H + 2 * E * F)));
  expectInputError([&] { source->tensor(x + "w1", {E, F + 1, H}); },
                   {"model.safetensors", "model.layers.0.mlp.experts.gate_up_proj"});
}

/// A safetensors file of U8 tensors (MXFP4 blocks and scales).
void writeSafetensorsU8(const fs::path &p,
                        const std::vector<std::pair<std::string, std::vector<int64_t>>> &shapes,
                        const std::vector<std::vector<uint8_t>> &data) {
  nlohmann::json header = nlohmann::json::object();
  std::string bytes;
  for (size_t i = 0; i < shapes.size(); ++i) {
    header[shapes[i].first] = {{"dtype", "U8"},
                               {"shape", shapes[i].second},
                               {"data_offsets", {bytes.size(), bytes.size() + data[i].size()}}};
    bytes.append(data[i].begin(), data[i].end());
  }
  std::string text = header.dump();
  while (text.size() % 8 != 0) text += ' ';
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[size_t(i)] = char((uint64_t(text.size()) >> (8 * i)) & 0xff);
  std::ofstream(p, std::ios::binary) << out << text << bytes;
}

// OpenAI's own checkpoint: the experts in MXFP4, `*_blocks` [experts, out,
// in / 32, 16] (element 2k of a block in byte k's low nibble, 2k + 1 in its
// high one) and `*_scales` [experts, out, in / 32]; gate_up's rows the
// gate's and the up's in turn. The source repacks them into ggml's blocks
// (the scale byte, then element j low and 16 + j high in byte j), whose
// values the dequantizer gives: element i of expert e's row r is code
// (e + r + i) % 16 under scale byte 120 + r % 8 (all distinct positions
// recognisable).
TEST(Safetensors, GptOssMxfp4ExpertsAreRepackedAsGgmlBlocks) {
  ModelSpec m = moeSpec();
  m.architecture = Architecture::gpt_oss;
  m.expertBias = m.attentionSinks = true;
  m.activation = Activation::swiglu_oai;
  m.expertIntermediateSize = 64; // whole blocks of 32
  const int64_t E = 3, H = m.hiddenSize, F = m.expertWidth();
  ASSERT_EQ(H % 32, 0);
  ASSERT_EQ(F % 32, 0);
  auto code = [](int64_t e, int64_t r, int64_t i) { return uint8_t((e + r + i) % 16); };
  auto scale = [](int64_t r) { return uint8_t(120 + r % 8); };
  // Stored row r of `rows`, `in` wide, each expert's.
  auto write = [&](int64_t rows, int64_t in, std::vector<uint8_t> &blocks,
                   std::vector<uint8_t> &scales) {
    for (int64_t e = 0; e < E; ++e)
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t g = 0; g < in / 32; ++g) {
          scales.push_back(scale(r));
          for (int k = 0; k < 16; ++k)
            blocks.push_back(uint8_t(code(e, r, g * 32 + 2 * k) |
                                     (code(e, r, g * 32 + 2 * k + 1) << 4)));
        }
  };
  std::vector<uint8_t> guBlocks, guScales, dBlocks, dScales;
  write(2 * F, H, guBlocks, guScales);
  write(H, F, dBlocks, dScales);
  const std::string x = "model.layers.0.mlp.experts.";
  ScratchDir dir;
  writeSafetensorsU8(dir.path / "model.safetensors",
                     {{x + "gate_up_proj_blocks", {E, 2 * F, H / 32, 16}},
                      {x + "gate_up_proj_scales", {E, 2 * F, H / 32}},
                      {x + "down_proj_blocks", {E, H, F / 32, 16}},
                      {x + "down_proj_scales", {E, H, F / 32}}},
                     {guBlocks, guScales, dBlocks, dScales});
  auto source = openWeights(dir.path.string(), m);
  const double e2m1[16] = {0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6};
  auto check = [&](const std::string &which, int64_t rows, int64_t in, int64_t stride,
                   int64_t first) {
    SCOPED_TRACE(which);
    const SourceTensor t = source->tensor("layers.0.feed_forward.experts." + which, {E, rows, in});
    EXPECT_EQ(t.quant, QuantType::mxfp4);
    const std::vector<float> v = toF32(t);
    for (int64_t e = 0; e < E; ++e)
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t stored = r * stride + first;
        for (int64_t i = 0; i < in; ++i)
          ASSERT_EQ(double(v[size_t((e * rows + r) * in + i)]),
                    std::ldexp(e2m1[code(e, stored, i)], scale(stored) - 127))
              << e << " " << r << " " << i;
      }
  };
  check("w1", F, H, 2, 0); // the gates: stored rows 0, 2, 4, ...
  check("w3", F, H, 2, 1); // the ups: 1, 3, 5, ...
  check("w2", H, F, 1, 0);
  EXPECT_EQ(source->heldBytes(), uint64_t(E * (2 * F * H + H * F) / 32 * 17));
}
