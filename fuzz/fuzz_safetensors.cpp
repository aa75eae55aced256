// A model.safetensors file as `kvplan compile DIR` reads it for a fixed tiny
// Llama (the one fuzz/make-corpus.py writes seeds for): the header, then
// every weight of the model.
#include "FuzzCommon.h"
#include "FuzzUse.h"
#include "frontend/ConfigParser.h"

using namespace kvplan;

static const char *kConfig = R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8,
  "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
  "num_key_value_heads": 1, "vocab_size": 16, "max_position_embeddings": 32,
  "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false,
  "bos_token_id": 1, "eos_token_id": 2})";

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const ModelConfig cfg = applyAndValidate(
      parseHFConfig(kConfig, "config.json", [](const std::string &) {}), {});
  std::string path = fuzz::writeInput(data, size, "model.safetensors");
  return fuzz::rejectsOrAccepts([&] {
    fuzz::readEveryWeight(*openWeights(path, cfg.model), cfg.model);
  });
}
