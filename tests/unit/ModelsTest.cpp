// Every config in models/ compiles, and its memory bill is exact.
#include "codegen/Compiler.h"
#include "frontend/ConfigParser.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>

using namespace kvplan;
namespace fs = std::filesystem;

namespace {

struct Known {
  const char *file;
  int64_t params; // as published for the model
};

// Parameter counts of the published checkpoints (embeddings counted once when
// tied).
const Known kModels[] = {
    {"tiny.toml", 3033344},
    {"llama-2-7b.toml", 6738415616},
    {"llama-3.2-1b.toml", 1235814400},
    {"llama-3.1-8b.toml", 8030261248},
    {"tinyllama-1.1b.toml", 1100048384},
    {"qwen2.5-0.5b.toml", 494032768},
    {"smollm2-135m.toml", 134515008},
    {"mistral-7b-v0.3.toml", 7248023552},
    {"stories110m.toml", 109529856},
};

ModelConfig load(const std::string &file) {
  return loadModelConfig((fs::path(KVPLAN_SOURCE_DIR) / "models" / file).string(), {},
                         [](const std::string &w) { ADD_FAILURE() << "warning: " << w; });
}

} // namespace

TEST(Models, EveryConfigIsTested) {
  size_t files = 0;
  for (const auto &e : fs::directory_iterator(fs::path(KVPLAN_SOURCE_DIR) / "models"))
    if (e.path().extension() == ".toml") {
      ++files;
      std::string name = e.path().filename().string();
      EXPECT_TRUE(std::any_of(std::begin(kModels), std::end(kModels),
                              [&](const Known &k) { return name == k.file; }))
          << name << " has no entry in kModels";
    }
  EXPECT_EQ(files, std::size(kModels));
}

TEST(Models, CompileWithExactBills) {
  for (const Known &k : kModels) {
    SCOPED_TRACE(k.file);
    ModelConfig cfg = load(k.file);
    EXPECT_EQ(parameterCount(cfg.model), k.params);
    CompileOutput out = compileModel(cfg);
    MemoryBill b = out.plan.memoryBill();
    const ModelSpec &m = cfg.model;
    const CompileSettings &s = cfg.compile;
    EXPECT_EQ(b.params, k.params);
    EXPECT_EQ(b.weightsBytes, k.params * dtypeBytes(s.weightDtype));
    EXPECT_EQ(b.kvCacheBytes, 2 * m.numLayers * m.numKvHeads * m.headDim * s.maxSeqLen *
                                  s.maxBatch * dtypeBytes(s.kvDtype));
    ASSERT_EQ(b.arenaBytes.size(), 2u);
    EXPECT_GT(b.arenaBytes.at("prefill"), 0);
    EXPECT_GT(b.arenaBytes.at("decode"), 0);
    EXPECT_EQ(b.arenaAllocBytes, std::max(b.arenaBytes.at("prefill"), b.arenaBytes.at("decode")));
    EXPECT_EQ(b.totalBytes, b.weightsBytes + b.kvCacheBytes + b.arenaAllocBytes);
    // The fused weights still account for every parameter once.
    int64_t fusedParts = 0;
    for (const WeightEntry &w : out.plan.weights)
      fusedParts += int64_t(w.parts.size());
    EXPECT_EQ(fusedParts, m.numLayers * (m.attentionBias ? 8 : 5));
  }
}

TEST(Models, Llama31_8BInBf16) {
  CompileOutput out = compileModel(load("llama-3.1-8b.toml"));
  MemoryBill b = out.plan.memoryBill();
  EXPECT_EQ(b.params, 8030261248);
  EXPECT_EQ(b.weightsBytes, 16060522496);
}
