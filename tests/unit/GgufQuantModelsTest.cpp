// llama.cpp's quantized GGUF files compiled and run end to end: the shared
// q256-*.gguf (one random-weight model in every quantized type kvplan reads)
// compiled to f32 match a reference forward pass fed the exactly
// dequantized weights, and a lossless int8 repack of Q8_0 computes the very
// same logits as f32.
#include "codegen/Compiler.h"
#include "frontend/ConfigParser.h"
#include "runtime/Engine.h"
#include "runtime/cpu/Isa.h"
#include "runtime/Sampler.h"
#include "plan/WeightPacking.h"
#include "tests/common/ActivationsScope.h"
#include "tests/unit/ReferenceModel.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <map>

using namespace kvplan;
namespace fs = std::filesystem;

namespace {

const fs::path kQuantDir = fs::path(KVPLAN_SHARED_DIR) / "models" / "gguf-quants";

const char *kFiles[] = {"q256-f32.gguf",    "q256-Q8_0.gguf",    "q256-Q4_0.gguf",
                        "q256-Q4_1.gguf",   "q256-Q5_0.gguf",    "q256-Q4_K_M.gguf",
                        "q256-Q5_K_M.gguf", "q256-Q6_K.gguf"};

const std::vector<int32_t> kPrompt = {1, 417, 23, 300, 88};

/// A q256 file compiled with `dtype` weights and an f32 KV cache (so that
/// int8 and f32 plans differ in their weights only), ready to run.
struct QuantModel {
  ModelConfig cfg;
  Plan plan;
  std::unique_ptr<WeightSource> source;
  std::vector<char> weights;
  QuantModel(const std::string &file, DType dtype) {
    SettingOverrides o;
    o.maxSeqLen = 64;
    o.prefillChunk = 8;
    o.weightDtype = dtype;
    cfg = readCheckpointConfig((kQuantDir / file).string());
    cfg.compile.kvDtype = DType::f32;
    cfg.given.insert("compile.kv_dtype");
    cfg = applyAndValidate(std::move(cfg), o);
    plan = compileModel(cfg).plan;
    source = openWeights((kQuantDir / file).string(), cfg.model);
    weights = packWeightsInMemory(plan, *source);
  }
  Engine engine() const { return Engine(plan, weights.data(), weights.size(), 2); }
};

/// Greedy ids after kPrompt.
std::vector<int32_t> greedy(const QuantModel &m, int n) {
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
    if (!fs::exists(kQuantDir / "q256-Q8_0.gguf"))
      GTEST_SKIP() << "no " << kQuantDir.string()
                   << " (set KVPLAN_SHARED_DIR to the folder holding models/)";
  }
};

TEST_F(QuantGguf, EveryFileCompiledToF32MatchesTheReference) {
  for (const char *file : kFiles) {
    SCOPED_TRACE(file);
    QuantModel m(file, DType::f32);
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
  // With f32 activations the vector kernels multiply each int8 code by its
  // scale before the FMA, so a lossless repack computes exactly what f32
  // weights do. The scalar kernel sums a group's products in the codes'
  // scale and applies the scale once per group: the same values, rounded
  // differently, so there the logits only agree closely. The CPU's default
  // int8 activations (as llama.cpp's Q8_0 dot products) round x per group
  // of 32: the logits keep f32's direction (measured: cosine 0.99982 at
  // worst over these steps, AVX2 and portable alike) and its greedy choices.
  QuantModel f32("q256-Q8_0.gguf", DType::f32), int8("q256-Q8_0.gguf", DType::i8);
  int matrices = 0;
  for (const WeightEntry &w : int8.plan.weights) matrices += w.dtype == DType::i8;
  ASSERT_GT(matrices, 4); // the layers' matrices, the embedding and the classifier
  const int64_t vocab = f32.cfg.model.vocabSize;
  const cpu::Isa was = cpu::activeIsa();
  for (cpu::Activations mode : test::kBothActivations)
    for (cpu::Isa isa : {cpu::Isa::scalar, cpu::Isa::avx2, cpu::Isa::avx512}) {
      if (isa > cpu::detectIsa()) continue;
      SCOPED_TRACE(std::string(cpu::isaName(isa)) + ", " + cpu::activationsName(mode));
      cpu::setActiveIsa(isa);
      Engine a = f32.engine();
      test::ActivationsScope scope(mode);
      Engine b = int8.engine();
      int sa = a.open(), sb = b.open();
      const float *la = a.prefill(sa, kPrompt.data(), int64_t(kPrompt.size()));
      const float *lb = b.prefill(sb, kPrompt.data(), int64_t(kPrompt.size()));
      double worst = 1;
      for (int step = 0; step < 6; ++step) {
        const std::vector<double> want(la, la + vocab);
        if (mode == cpu::Activations::reduced) {
          worst = std::min(worst, test::cosineSimilarity(lb, want));
          EXPECT_EQ(argmax(lb, vocab), argmax(la, vocab)) << "step " << step;
        } else if (isa == cpu::Isa::scalar) {
          EXPECT_LT(test::relativeError(lb, want), 1e-5);
        } else {
          ASSERT_EQ(std::memcmp(la, lb, size_t(vocab) * sizeof(float)), 0) << "step " << step;
        }
        const int32_t next = argmax(la, vocab);
        la = a.decode({sa}, {next});
        lb = b.decode({sb}, {next});
      }
      if (mode == cpu::Activations::reduced) {
        std::printf("%s, int8 activations: logits cosine against f32 weights %.6f at worst\n",
                    cpu::isaName(isa), worst);
        EXPECT_GE(worst, 0.9995);
      }
    }
  cpu::setActiveIsa(was);
}

TEST_F(QuantGguf, Int8PacksQ8_0AndQ5_0BlocksUnchanged) {
  // Each int8 entry whose parts are all Q8_0 or Q5_0 holds exactly their
  // blocks' codes and scales (int8Groups), not a requantization.
  for (const char *file : {"q256-Q8_0.gguf", "q256-Q5_0.gguf"}) {
    SCOPED_TRACE(file);
    QuantModel m(file, DType::i8);
    std::map<std::string, std::vector<int64_t>> shapes;
    for (const WeightDecl &d : weightTable(m.plan.model)) shapes[d.name] = d.shape;
    int entries = 0;
    for (const WeightEntry &w : m.plan.weights) {
      if (w.dtype != DType::i8) continue;
      const std::vector<std::string> parts =
          w.parts.empty() ? std::vector<std::string>{w.name} : w.parts;
      std::vector<int8_t> codes;
      std::vector<float> scales;
      bool lossless = true;
      for (const std::string &part : parts) {
        const SourceTensor t = m.source->tensor(part, shapes.at(part));
        lossless = lossless && (t.quant == QuantType::q8_0 || t.quant == QuantType::q5_0);
        if (!lossless) break;
        const int64_t n = sourceElements(t);
        codes.resize(codes.size() + size_t(n));
        scales.resize(scales.size() + size_t(n / 32));
        ASSERT_TRUE(int8Groups(t.quant, t.data, n, codes.data() + codes.size() - size_t(n),
                               scales.data() + scales.size() - size_t(n / 32)));
      }
      if (!lossless) continue;
      const char *at = m.weights.data() + w.offset;
      EXPECT_EQ(std::memcmp(at, codes.data(), codes.size()), 0) << w.name;
      EXPECT_EQ(std::memcmp(at + w.scalesOffset, scales.data(), scales.size() * 4), 0) << w.name;
      ++entries;
    }
    EXPECT_GE(entries, 4 * 4); // every layer's matrices (however fused)
  }
}

TEST_F(QuantGguf, LosslessInt8KeepsTheGreedyIds) {
  // Q8_0: every tensor repacks losslessly. Q5_0: every tensor but the
  // classifier (Q6_K, requantized by round to nearest).
  for (const char *file : {"q256-Q8_0.gguf", "q256-Q5_0.gguf"})
    EXPECT_EQ(greedy(QuantModel(file, DType::f32), 16), greedy(QuantModel(file, DType::i8), 16))
        << file;
}
