// A Llama 3.1-style GGUF runs as the Hugging Face checkpoint it came from.
// The test writes both: a tiny HF folder with llama3 rope_scaling and random
// weights, and the GGUF llama.cpp's convert_hf_to_gguf.py would make of it
// (q/k rows permuted to adjacent pairs, llama metadata, and rope_freqs, the
// per-pair frequency divisors its LlamaModel computes, re-derived here from
// the converter's formula). Both compile (f32) and decode greedily at
// positions where the low frequencies have turned far, so the factors
// matter; without rope_freqs the same GGUF gives other logits.
#include "codegen/Compiler.h"
#include "frontend/ConfigParser.h"
#include "runtime/Engine.h"
#include "runtime/Sampler.h"
#include "plan/WeightPacking.h"
#include "support/TempDir.h"
#include "tests/common/CheckpointWriters.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>

using namespace kvplan;
using kvplan::testing::F32Tensor;
namespace fs = std::filesystem;

namespace {

// The model: 4 query heads and 2 KV heads of 16, Llama 3.1's RoPE.
constexpr int64_t kHidden = 64, kFfn = 96, kLayers = 2, kHeads = 4, kKvHeads = 2,
                  kHeadDim = 16, kVocab = 128, kContext = 131072;
constexpr double kTheta = 500000.0, kFactor = 8.0, kLowFreqFactor = 1.0, kHighFreqFactor = 4.0;
constexpr int64_t kOriginalContext = 8192;

// Prompt and greedy steps: the last positions reach about 1540, where pair 4
// (wavelength 4443, in the blended band) has turned 2.2 rad unscaled against
// 0.8 scaled, and pairs 5 to 7 (beyond 8192) eight times less.
constexpr int kPromptTokens = 1500, kSteps = 40;

std::vector<float> randomValues(std::mt19937 &rng, int64_t n, float scale, float offset = 0) {
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (float &x : v) x = offset + u(rng);
  return v;
}

/// The checkpoint as Hugging Face stores it (q/k rows in rotate-half order).
std::vector<F32Tensor> hfTensors() {
  std::mt19937 rng(20240723);
  std::vector<F32Tensor> t;
  auto add = [&](const std::string &name, std::vector<int64_t> shape, float scale,
                 float offset = 0) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    t.push_back({name, shape, randomValues(rng, n, scale, offset)});
  };
  add("model.embed_tokens.weight", {kVocab, kHidden}, 1.0f);
  for (int64_t l = 0; l < kLayers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {kHidden}, 0.2f, 1.0f);
    add(p + "self_attn.q_proj.weight", {kHeads * kHeadDim, kHidden}, 0.3f);
    add(p + "self_attn.k_proj.weight", {kKvHeads * kHeadDim, kHidden}, 0.3f);
    add(p + "self_attn.v_proj.weight", {kKvHeads * kHeadDim, kHidden}, 0.2f);
    add(p + "self_attn.o_proj.weight", {kHidden, kHeads * kHeadDim}, 0.2f);
    add(p + "post_attention_layernorm.weight", {kHidden}, 0.2f, 1.0f);
    add(p + "mlp.gate_proj.weight", {kFfn, kHidden}, 0.2f);
    add(p + "mlp.up_proj.weight", {kFfn, kHidden}, 0.2f);
    add(p + "mlp.down_proj.weight", {kHidden, kFfn}, 0.2f);
  }
  add("model.norm.weight", {kHidden}, 0.2f, 1.0f);
  add("lm_head.weight", {kVocab, kHidden}, 0.5f);
  return t;
}

nlohmann::json hfConfig() {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"hidden_size", kHidden},
          {"intermediate_size", kFfn},
          {"num_hidden_layers", kLayers},
          {"num_attention_heads", kHeads},
          {"num_key_value_heads", kKvHeads},
          {"vocab_size", kVocab},
          {"max_position_embeddings", kContext},
          {"rms_norm_eps", 1e-5},
          {"rope_theta", kTheta},
          {"rope_scaling",
           {{"rope_type", "llama3"},
            {"factor", kFactor},
            {"low_freq_factor", kLowFreqFactor},
            {"high_freq_factor", kHighFreqFactor},
            {"original_max_position_embeddings", kOriginalContext}}},
          {"tie_word_embeddings", false},
          {"hidden_act", "silu"},
          {"bos_token_id", 1},
          {"eos_token_id", 2},
          {"torch_dtype", "float32"}};
}

/// The converter's LlamaModel.permute: rows viewed as [heads, 2, d/2] and
/// the last two axes swapped, so rotate-half pairs (j, j + d/2) become
/// adjacent rows (2j, 2j + 1).
std::vector<float> converterPermute(const std::vector<float> &w, int64_t heads, int64_t cols) {
  const int64_t rows = int64_t(w.size()) / cols, half = rows / heads / 2;
  std::vector<float> out(w.size());
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t e = 0; e < 2; ++e)
      for (int64_t j = 0; j < half; ++j)
        std::copy_n(&w[size_t(((h * 2 + e) * half + j) * cols)], cols,
                    &out[size_t(((h * half + j) * 2 + e) * cols)]);
  return out;
}

/// The converter's generate_extra_tensors for rope_type llama3, in float32
/// as its torch tensors compute: 1 for short wavelengths, `factor` for long
/// ones, 1 / ((1 - smooth) / factor + smooth) between. (It reads
/// original_max_position_embeddings from the top level of config.json,
/// where Llama 3.1 has none, so 8192, which the config's rope_scaling also
/// says.)
std::vector<float> converterRopeFreqs() {
  const float pi2 = float(2 * 3.14159265358979323846);
  const float lowWavelen = float(kOriginalContext / kLowFreqFactor);
  const float highWavelen = float(kOriginalContext / kHighFreqFactor);
  std::vector<float> factors;
  for (int64_t i = 0; i < kHeadDim; i += 2) {
    const float freq = 1.0f / std::pow(float(kTheta), float(i) / float(kHeadDim));
    const float wavelen = pi2 / freq;
    if (wavelen < highWavelen) {
      factors.push_back(1.0f);
    } else if (wavelen > lowWavelen) {
      factors.push_back(float(kFactor));
    } else {
      const float smooth = (float(kOriginalContext) / wavelen - float(kLowFreqFactor)) /
                           float(kHighFreqFactor - kLowFreqFactor);
      factors.push_back(1.0f / ((1.0f - smooth) / float(kFactor) + smooth));
    }
  }
  return factors;
}

std::string ggufName(const std::string &hf) {
  static const std::vector<std::pair<std::string, std::string>> renames = {
      {"model.embed_tokens.weight", "token_embd.weight"},
      {"model.norm.weight", "output_norm.weight"},
      {"lm_head.weight", "output.weight"},
      {"input_layernorm", "attn_norm"},
      {"self_attn.q_proj", "attn_q"},
      {"self_attn.k_proj", "attn_k"},
      {"self_attn.v_proj", "attn_v"},
      {"self_attn.o_proj", "attn_output"},
      {"post_attention_layernorm", "ffn_norm"},
      {"mlp.gate_proj", "ffn_gate"},
      {"mlp.up_proj", "ffn_up"},
      {"mlp.down_proj", "ffn_down"},
      {"model.layers.", "blk."}};
  std::string name = hf;
  for (const auto &[from, to] : renames)
    if (size_t at = name.find(from); at != std::string::npos) name.replace(at, from.size(), to);
  return name;
}

/// What convert_hf_to_gguf.py writes for the HF checkpoint (f32), with or
/// without the rope_freqs tensor.
void writeConvertedGguf(const fs::path &path, const std::vector<F32Tensor> &hf,
                        bool withRopeFreqs) {
  kvplan::testing::GgufWriter g;
  g.string("general.architecture", "llama");
  g.string("general.name", "Tiny Llama 3.1");
  g.u32("llama.block_count", uint32_t(kLayers));
  g.u32("llama.context_length", uint32_t(kContext));
  g.u32("llama.embedding_length", uint32_t(kHidden));
  g.u32("llama.feed_forward_length", uint32_t(kFfn));
  g.u32("llama.attention.head_count", uint32_t(kHeads));
  g.u32("llama.attention.head_count_kv", uint32_t(kKvHeads));
  g.f32("llama.rope.freq_base", float(kTheta));
  g.f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  g.u32("general.file_type", 0);
  g.u32("llama.vocab_size", uint32_t(kVocab));
  g.u32("llama.rope.dimension_count", uint32_t(kHeadDim));
  if (withRopeFreqs) g.tensor({"rope_freqs.weight", {kHeadDim / 2}, converterRopeFreqs()});
  for (const F32Tensor &t : hf) {
    F32Tensor out{ggufName(t.name), t.shape, t.data};
    if (t.name.find("q_proj") != std::string::npos)
      out.data = converterPermute(t.data, kHeads, kHidden);
    if (t.name.find("k_proj") != std::string::npos)
      out.data = converterPermute(t.data, kKvHeads, kHidden);
    g.tensor(out);
  }
  g.write(path);
}

/// A checkpoint compiled to f32, ready to run.
struct RopeModel {
  ModelConfig cfg;
  CompileOutput out;
  std::vector<char> weights;
  explicit RopeModel(const fs::path &model) {
    SettingOverrides o;
    o.maxSeqLen = 2048;
    o.weightDtype = DType::f32;
    cfg = loadModelConfig(model.string(), o, [](const std::string &w) { ADD_FAILURE() << w; });
    out = compileModel(cfg);
    weights = packWeightsInMemory(out.plan, *openWeights(model.string(), cfg.model));
  }
};

/// Greedy decoding after `prompt`: the ids and each step's logits.
struct Decoded {
  std::vector<int32_t> ids;
  std::vector<std::vector<float>> logits;
};

Decoded greedy(const RopeModel &m, const std::vector<int32_t> &prompt) {
  Engine e(m.out.plan, m.weights.data(), m.weights.size(), 2);
  const int seq = e.open();
  const float *l = e.prefill(seq, prompt.data(), int64_t(prompt.size()));
  Decoded r;
  for (int i = 0; i < kSteps; ++i) {
    r.logits.emplace_back(l, l + kVocab);
    r.ids.push_back(argmax(l, kVocab));
    l = e.decode({seq}, {r.ids.back()});
  }
  return r;
}

/// The largest logit difference of a step relative to its largest logit.
double relativeDifference(const std::vector<float> &a, const std::vector<float> &b) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(double(a[i]) - double(b[i])));
    scale = std::max(scale, std::abs(double(a[i])));
  }
  return diff / scale;
}

} // namespace

TEST(GgufRope, Llama3GgufAndItsHuggingFaceCheckpointGiveTheSameIds) {
  TempDir dir("kvplan-gguf-rope");
  ASSERT_TRUE(dir.made());
  const fs::path hfDir = dir.path() / "tiny-llama-3.1";
  fs::create_directories(hfDir);
  const std::vector<F32Tensor> hf = hfTensors();
  kvplan::testing::writeSafetensorsF32(hfDir / "model.safetensors", hf);
  kvplan::testing::writeBytes(hfDir / "config.json", hfConfig().dump(2));
  writeConvertedGguf(dir.path() / "tiny.gguf", hf, true);
  writeConvertedGguf(dir.path() / "no-rope-freqs.gguf", hf, false);

  RopeModel fromHF(hfDir), fromGguf(dir.path() / "tiny.gguf");
  // The GGUF's model carries the file's factors, and its IR divides by them.
  const std::vector<float> want = converterRopeFreqs();
  EXPECT_EQ(fromGguf.cfg.model.rope.freqFactors, std::vector<double>(want.begin(), want.end()));
  EXPECT_EQ(fromGguf.cfg.model.rope.type, RopeType::standard);
  EXPECT_EQ(fromHF.cfg.model.rope.type, RopeType::llama3);
  EXPECT_NE(fromGguf.out.finalIR.find("freq_factors = array<f64: 1.000000e+00"),
            std::string::npos);
  EXPECT_EQ(want.back(), float(kFactor));
  EXPECT_GT(want[4], 1.0f);
  EXPECT_LT(want[4], float(kFactor));

  // The GGUF's weights under the HF config's model: its llama3 RoPE is the
  // file's (to the F32 rounding of the factors); without them it is not.
  EXPECT_NO_THROW(openWeights((dir.path() / "tiny.gguf").string(), fromHF.cfg.model));
  try {
    openWeights((dir.path() / "no-rope-freqs.gguf").string(), fromHF.cfg.model);
    ADD_FAILURE() << "a GGUF without rope_freqs was accepted under a llama3 model";
  } catch (const InputError &e) {
    EXPECT_NE(std::string(e.what()).find("RoPE differs"), std::string::npos) << e.what();
  }

  std::mt19937 rng(7);
  std::vector<int32_t> prompt(static_cast<size_t>(kPromptTokens));
  for (int32_t &t : prompt) t = int32_t(rng() % uint32_t(kVocab));
  const Decoded a = greedy(fromHF, prompt), b = greedy(fromGguf, prompt);
  EXPECT_EQ(a.ids, b.ids);
  double worst = 0;
  for (size_t i = 0; i < a.logits.size(); ++i)
    worst = std::max(worst, relativeDifference(a.logits[i], b.logits[i]));
  EXPECT_LE(worst, 1e-5);
  char worstText[32];
  std::snprintf(worstText, sizeof worstText, "%.3g", worst);
  RecordProperty("worst_relative_logit_difference", worstText);

  // The factors matter here: without them the same GGUF decodes otherwise.
  const Decoded c = greedy(RopeModel(dir.path() / "no-rope-freqs.gguf"), prompt);
  EXPECT_NE(a.ids, c.ids);
  int differing = 0;
  for (size_t i = 0; i < a.ids.size(); ++i) differing += a.ids[i] != c.ids[i];
  RecordProperty("ids_differing_without_rope_freqs", differing);
  EXPECT_GT(relativeDifference(a.logits[0], c.logits[0]), 1e-2);
}
