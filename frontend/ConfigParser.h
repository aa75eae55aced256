// Reads model descriptions: kvplan's TOML spec (docs/model-spec.md) and
// Hugging Face config.json files, into one ModelConfig.
#pragma once

#include "spec/ModelSpec.h"

#include <functional>
#include <optional>
#include <string>

namespace kvplan {

/// Receives each warning (unknown keys, ignored fields); tools print them.
using WarningSink = std::function<void(const std::string &)>;
void printWarningToStderr(const std::string &msg);

/// Parses a TOML spec. Type errors throw InputError citing file and line;
/// unknown keys go to `warn`. The result is not yet validated.
ModelConfig parseTomlSpec(const std::string &text, const std::string &path,
                          const WarningSink &warn = printWarningToStderr);

/// Parses a Hugging Face config.json (model_type llama, mistral, qwen2,
/// qwen3 or phi3). The result is not yet validated.
ModelConfig parseHFConfig(const std::string &text, const std::string &path,
                          const WarningSink &warn = printWarningToStderr);

/// Adds the end-of-generation ids of the generation_config.json beside a
/// config.json (`text`, read from `path`): its eos_token_id, one id or a
/// list, where chat models name their end-of-turn token (Llama 3's
/// <|eot_id|>, Phi-3's <|end|>) that config.json leaves out.
void addGenerationEndIds(ModelConfig &cfg, const std::string &text, const std::string &path);

/// Compile settings given on the command line; each replaces the file's.
struct SettingOverrides {
  std::optional<Target> target;
  std::optional<DType> weightDtype;
  std::optional<DType> expertDtype;
  std::optional<int64_t> maxBatch;
  std::optional<int64_t> maxSeqLen;
  std::optional<int64_t> prefillChunk;
  std::optional<int64_t> pageSize;
  std::optional<int64_t> kvPages;
  std::optional<int64_t> windowKvPages;
  std::optional<int64_t> memoryBudget; // bytes
  std::optional<int64_t> tensorParallel;
  std::optional<int64_t> speculate;
  std::optional<int64_t> scoreRows;
  std::optional<std::vector<int64_t>> decodeCopies, prefillCopies; // empty: none
  std::optional<int64_t> l2PrefetchMib;
  /// YaRN RoPE scaling by `factor` from a pretraining context of `original`
  /// tokens (0: max_position_embeddings), for a model whose own RoPE is
  /// unscaled (Qwen's long contexts: compile's --yarn 4:32768).
  struct Yarn {
    double factor = 0;
    int64_t original = 0;
  };
  std::optional<Yarn> yarn;
};

/// Reads `path` (a .toml file, a config.json or a directory holding one, a
/// llama2.c .bin or a .gguf checkpoint), applies `overrides` and validates.
/// Throws InputError.
ModelConfig loadModelConfig(const std::string &path,
                            const SettingOverrides &overrides = {},
                            const WarningSink &warn = printWarningToStderr);

/// Applies `overrides` to a config read elsewhere and validates it.
ModelConfig applyAndValidate(ModelConfig cfg, const SettingOverrides &overrides);

} // namespace kvplan
