// llama.cpp's quantized GGUF files compiled and run end to end: the shared
// q256-*.gguf (one random-weight model in every quantized type kvplan reads)
// compiled to f32 match a reference forward pass fed the exactly
// dequantized weights, and a lossless int8 repack of Q8_0 computes the very
// same logits as f32.
#include "codegen/Compiler.h"
#include "frontend/ConfigParser.h"
#include "runtime/Engine.h"
#include "runtime/Sampler.h"
#include "plan/WeightPacking.h"
#include "tests/unit/ReferenceModel.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

using namespace kvplan;
namespace fs = std::filesystem;

namespace {

const fs::path kDir = fs::path(KVPLAN_SHARED_DIR) / "models" / "gguf-quants";

const char *kFiles[] = {"q256-f32.gguf",    "q256-Q8_0.gguf",    "q256-Q4_0.gguf",
                        "q256-Q4_1.gguf",   "q256-Q5_0.gguf",    "q256-Q4_K_M.gguf",
                        "q256-Q5_K_M.gguf", "q256-Q6_K.gguf"};

const std::vector<int32_t> kPrompt = {1, 417, 23, 300, 88};

/// A q256 file compiled with `dtype` weights, ready to run.
struct Loaded {
  ModelConfig cfg;
  Plan plan;
  std::unique_ptr<WeightSource> source;
  std::vector<char> weights;
  Loaded(const std::string &file, DType dtype) {
    SettingOverrides o;
    o.maxSeqLen = 64;
    o.prefillChunk = 8;
    o.weightDtype = dtype;
    cfg = loadModelConfig((kDir / file).string(), o);
    plan = compileModel(cfg).plan;
    source = openWeights((kDir / file).string(), cfg.model);
    weights = packWeightsInMemory(plan, *source);
  }
  Engine engine() const { return Engine(plan, weights.data(), weights.size(), 2); }
};

/// Greedy ids after kPrompt.
std::vector<int32_t> greedy(const Loaded &m, int n) {
  Engine e = m.engine();
  int seq = e.open();
  const float *l = e.prefill(seq, kPrompt.data(), int64_t(kPrompt.size()));
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) {
    out.push_back(argmax(l, m.plan.model.vocabSize));
    l = e.decode({seq}, {out.back()});
  }
  return out;
}

} // namespace

class QuantGguf : public ::testing::Test {
protected:
  void SetUp() override {
    if (!fs::exists(kDir / "q256-Q8_0.gguf"))
      GTEST_SKIP() << "no " << kDir.string()
                   << " (set KVPLAN_SHARED_DIR to the folder holding models/)";
  }
};

TEST_F(QuantGguf, EveryFileCompiledToF32MatchesTheReference) {
  for (const char *file : kFiles) {
    SCOPED_TRACE(file);
    Loaded m(file, DType::f32);
    test::ReferenceModel ref(m.cfg.model, *m.source);
    Engine e = m.engine();
    const int64_t vocab = m.cfg.model.vocabSize;
    std::vector<int32_t> tokens = kPrompt;
    int seq = e.open();
    const float *logits = e.prefill(seq, tokens.data(), int64_t(tokens.size()));
    EXPECT_LT(test::relativeError(logits, ref.logits(tokens)), 1e-4) << "after the prompt";
    for (int step = 0; step < 4; ++step) {
      tokens.push_back(argmax(logits, vocab));
      logits = e.decode({seq}, {tokens.back()});
      const double err = test::relativeError(logits, ref.logits(tokens));
      EXPECT_LT(err, 1e-4) << "decode step " << step;
      if (err >= 1e-4) break;
    }
  }
}

TEST_F(QuantGguf, Q8_0RepackedToInt8GivesTheF32LogitsBitForBit) {
  Loaded f32("q256-Q8_0.gguf", DType::f32), int8("q256-Q8_0.gguf", DType::i8);
  int matrices = 0;
  for (const WeightEntry &w : int8.plan.weights) matrices += w.dtype == DType::i8;
  ASSERT_GT(matrices, 4); // the layers' matrices, the embedding and the classifier
  Engine a = f32.engine(), b = int8.engine();
  const int64_t vocab = f32.cfg.model.vocabSize;
  int sa = a.open(), sb = b.open();
  const float *la = a.prefill(sa, kPrompt.data(), int64_t(kPrompt.size()));
  const float *lb = b.prefill(sb, kPrompt.data(), int64_t(kPrompt.size()));
  for (int step = 0; step < 6; ++step) {
    ASSERT_EQ(std::memcmp(la, lb, size_t(vocab) * sizeof(float)), 0) << "step " << step;
    const int32_t next = argmax(la, vocab);
    la = a.decode({sa}, {next});
    lb = b.decode({sb}, {next});
  }
}

TEST_F(QuantGguf, LosslessInt8KeepsTheGreedyIds) {
  // Q8_0: every tensor repacks losslessly.
  EXPECT_EQ(greedy(Loaded("q256-Q8_0.gguf", DType::f32), 16),
            greedy(Loaded("q256-Q8_0.gguf", DType::i8), 16));
}
