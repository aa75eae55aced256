// GGUF checkpoints of architecture llama, qwen2 or qwen3: the model
// description from the metadata and F32/F16/BF16 or block-quantized (Q8_0,
// Q4_0, ...) tensors in place, under canonical names. llama.cpp's converter
// reorders a llama model's q/k rows for adjacent-pair RoPE (kvplan's order)
// but leaves a qwen2 or qwen3 model's in Hugging Face's rotate-half order
// (llama.cpp runs them with "NeoX" RoPE), so those are reordered here, as
// from safetensors.
#include "formats/Gguf.h"
#include "formats/WeightReaders.h"
#include "support/Format.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <tuple>
#include <unordered_map>

namespace kvplan {
namespace weights {

namespace {

// ggml's type numbers, for messages about the ones kvplan cannot read.
std::string ggmlTypeName(uint32_t t) {
  static const char *names[] = {
      "F32",    "F16",    "Q4_0",   "Q4_1",    "Q4_2",   "Q4_3",  "Q5_0",   "Q5_1",
      "Q8_0",   "Q8_1",   "Q2_K",   "Q3_K",    "Q4_K",   "Q5_K",  "Q6_K",   "Q8_K",
      "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S",  "IQ4_XS",
      "I8",     "I16",    "I32",    "I64",     "F64",    "IQ1_M", "BF16",  "Q4_0_4_4",
      "Q4_0_4_8", "Q4_0_8_8", "TQ1_0", "TQ2_0", "IQ4_NL_4_4", "IQ4_NL_4_8", "IQ4_NL_8_8",
      "MXFP4"};
  std::string name = t < sizeof(names) / sizeof(names[0]) ? names[t] : "unknown";
  return name + " (ggml type " + std::to_string(t) + ")";
}

std::optional<DType> ggmlDType(uint32_t t) {
  switch (t) {
  case GgufFile::kF32: return DType::f32;
  case GgufFile::kF16: return DType::f16;
  case GgufFile::kBF16: return DType::bf16;
  default: return std::nullopt;
  }
}

// The ggml types kvplan reads, for messages about the others.
constexpr const char *kReadableTypes =
    "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K and MXFP4";

// The weight type a matrix of ggml type `t` compiles to by default: its own
// float type, int4 for the 4-bit types int4 holds losslessly, int8 for the
// wider quantized types and for MXFP4 (whose non-uniform levels int4 cannot
// hold, but int8 does exactly: the doubled E2M1 value, the scale a power of
// two). MXFP4 experts stay mxfp4 (mxfp4Experts), a type of their own.
std::optional<DType> defaultWeightDtype(uint32_t t) {
  if (auto d = ggmlDType(t))
    return d;
  switch (quantTypeOfGgml(t).value_or(QuantType::none)) {
  case QuantType::q4_0:
  case QuantType::q4_1:
  case QuantType::q4_k: return DType::i4;
  case QuantType::none: return std::nullopt;
  default: return DType::i8;
  }
}

// Whether `name` is a layer's matrix: blk.N.attn_q.weight and so on, and a
// mixture's stacks of experts (most of its weights: gpt-oss's MXFP4 ones).
bool isLayerMatrix(const std::string &name) {
  static const std::set<std::string> matrices = {
      "attn_q.weight",        "attn_k.weight",      "attn_v.weight",
      "attn_output.weight",   "ffn_gate.weight",    "ffn_up.weight",
      "ffn_down.weight",      "ffn_gate_exps.weight", "ffn_up_exps.weight",
      "ffn_down_exps.weight"};
  const size_t dot = name.rfind("blk.", 0) == 0 ? name.find('.', 4) : std::string::npos;
  return dot != std::string::npos && matrices.count(name.substr(dot + 1)) > 0;
}

// Whether `name` is a mixture's stack of experts (blk.N.ffn_*_exps.weight).
bool isExpertStack(const std::string &name) {
  return name.size() > 12 && name.compare(name.size() - 12, 12, "_exps.weight") == 0;
}

// Whether every stack of experts is MXFP4 (gpt-oss's, as published): they
// compile to mxfp4 as they are, and the other matrices set the weight type.
bool mxfp4Experts(const GgufFile &g) {
  bool any = false;
  for (const GgufFile::Tensor &t : g.tensors()) {
    if (!isLayerMatrix(t.name) || !isExpertStack(t.name)) continue;
    if (quantTypeOfGgml(t.ggmlType) != QuantType::mxfp4) return false;
    any = true;
  }
  return any;
}

// The default weight type of a GGUF: that of its layer matrices (but for
// MXFP4 experts, `skipExperts`, kept as mxfp4), by element count (llama.cpp
// mixes types, e.g. Q4_K_M keeps some Q6_K), or nothing if it has none
// kvplan reads.
std::optional<DType> layerMatrixDtype(const GgufFile &g, bool skipExperts) {
  std::map<DType, double> elements;
  for (const GgufFile::Tensor &t : g.tensors()) {
    auto d = isLayerMatrix(t.name) && !(skipExperts && isExpertStack(t.name))
                 ? defaultWeightDtype(t.ggmlType)
                 : std::nullopt;
    if (!d) continue;
    double n = 1;
    for (int64_t dim : t.dims) n *= double(dim);
    elements[*d] += n;
  }
  std::optional<DType> best;
  for (const auto &[d, n] : elements)
    if (!best || n > elements[*best]) best = d;
  return best;
}

/// general.architecture as the file writes it ("qwen3moe"): the prefix of
/// the model's metadata keys ("qwen3moe.embedding_length").
std::string ggufArchName(const GgufFile &g) {
  auto arch = g.string("general.architecture");
  if (!arch)
    throw InputError(g.path() + ": GGUF metadata has no general.architecture string");
  return *arch;
}

/// general.architecture, one kvplan reads.
Architecture ggufArchitecture(const GgufFile &g) {
  const std::string arch = ggufArchName(g);
  // llama.cpp's names are kvplan's, but for Mistral, whose files are llama
  // (Mixtral's too: llama with experts), and Qwen2-MoE and Qwen3-MoE, Qwen2's
  // and Qwen3's layers with experts.
  if (arch == "qwen2moe") return Architecture::qwen2;
  if (arch == "qwen3moe") return Architecture::qwen3;
  if (std::optional<Architecture> a = parseArchitecture(arch); a && *a != Architecture::mistral)
    return *a;
  throw InputError(g.path() + ": GGUF architecture '" + arch +
                   "' is not supported; kvplan reads GGUF files of architecture llama, qwen2, "
                   "qwen2moe, qwen3, qwen3moe, phi3, smollm3, gemma2, gemma3 and gpt-oss");
}

/// Whether llama.cpp's converter left the file's q/k rows (and q/k norms) in
/// rotate-half order (the architectures llama.cpp runs with NEOX RoPE).
bool rotatesHalves(Architecture a) {
  return a == Architecture::qwen2 || a == Architecture::qwen3 || a == Architecture::phi3 ||
         a == Architecture::gemma3 || a == Architecture::gemma2 || a == Architecture::gpt_oss;
}

/// The metadata key `name` of the file's architecture ("llama.block_count").
std::string archKey(const GgufFile &g, const char *name) {
  return ggufArchName(g) + "." + name;
}

// Whether the classifier is the token embedding: no output.weight, or one
// that is a byte-for-byte copy (converters write the copy for tied models,
// as stories260K.gguf has). memcmp stops at the first difference, so an
// untied model costs almost nothing here.
bool tiedClassifier(const GgufFile &g) {
  const GgufFile::Tensor *out = g.tensor("output.weight");
  if (!out)
    return true;
  const GgufFile::Tensor *embed = g.tensor("token_embd.weight");
  return embed && embed->ggmlType == out->ggmlType && embed->dims == out->dims &&
         embed->bytes == out->bytes && embed->bytes > 0 &&
         std::memcmp(embed->data, out->data, embed->bytes) == 0;
}

// The rope_freqs tensor: rotary width / 2 positive F32 divisors of the RoPE
// frequencies, one per rotated pair of a head (`headDim` is that width).
std::vector<double> ropeFreqFactors(const GgufFile &g, const GgufFile::Tensor &t,
                                    int64_t headDim) {
  const std::string what = g.path() + ": tensor '" + t.name + "' (RoPE frequency factors)";
  if (t.ggmlType != GgufFile::kF32)
    throw InputError(what + " has type " + ggmlTypeName(t.ggmlType) + "; expected F32");
  if (t.dims.size() != 1 || t.dims[0] != headDim / 2) {
    std::string shape;
    for (int64_t d : t.dims) shape += (shape.empty() ? "" : ", ") + std::to_string(d);
    throw InputError(what + " has shape [" + shape + "]; expected [" +
                     std::to_string(headDim / 2) + "], one factor per pair of a head of " +
                     std::to_string(headDim) + " (" + archKey(g, "rope.dimension_count") +
                     " / 2)");
  }
  std::vector<double> factors(size_t(headDim / 2));
  for (size_t i = 0; i < factors.size(); ++i) {
    float f;
    std::memcpy(&f, static_cast<const char *>(t.data) + i * sizeof f, sizeof f);
    if (!(f > 0) || !std::isfinite(f))
      throw InputError(what + ": element " + std::to_string(i) + " is " + std::to_string(f) +
                       "; every factor must be positive and finite");
    factors[i] = f;
  }
  return factors;
}

// A positive finite number under `key`, or `fallback` where the key is absent.
double positiveNumber(const GgufFile &g, const std::string &key, double fallback,
                      const char *what) {
  const std::optional<double> v = g.number(key);
  if (!v) return fallback;
  if (!(*v > 0) || !std::isfinite(*v))
    throw InputError(g.path() + ": " + key + " is " + std::to_string(*v) + "; " + what +
                     " must be positive");
  return *v;
}

// YaRN as llama.cpp runs it from a GGUF: rope.scaling.factor over the
// pretraining context rope.scaling.original_context_length (else
// context_length), the band between 32 and 1 rotations rounded outwards to
// whole pairs, and cos and sin times rope.scaling.attn_factor (1 where
// absent) times 0.1 ln(factor) + 1.
RopeSpec yarnFromGguf(const GgufFile &g, RopeSpec r) {
  r.type = RopeType::yarn;
  const std::string factorKey = archKey(g, "rope.scaling.factor");
  if (!g.number(factorKey))
    throw InputError(g.path() + ": " + archKey(g, "rope.scaling.type") + " is 'yarn' but " +
                     factorKey + " is missing; YaRN needs its factor");
  r.factor = positiveNumber(g, factorKey, 1, "YaRN's factor");
  r.originalMaxPositions =
      g.integer(archKey(g, "rope.scaling.original_context_length"))
          .value_or(g.integer(archKey(g, "context_length")).value_or(0));
  // llama.cpp reads these for a few architectures of its own (grok,
  // deepseek2, mistral3), none of them kvplan's; a file that sets them
  // otherwise than plain YaRN is refused rather than run as llama.cpp would
  // run it, ignoring them.
  const std::pair<const char *, double> plain[] = {{"rope.scaling.yarn_beta_fast", 32},
                                                   {"rope.scaling.yarn_beta_slow", 1},
                                                   {"rope.scaling.yarn_ext_factor", 1},
                                                   {"rope.scaling.yarn_attn_factor", 1},
                                                   {"rope.scaling.yarn_log_multiplier", 0}};
  for (const auto &[key, value] : plain) {
    const std::optional<double> v = g.number(archKey(g, key));
    if (v && *v != value)
      throw InputError(g.path() + ": " + archKey(g, key) + " is " + formatNumber(*v) +
                       "; kvplan runs a GGUF's YaRN as llama.cpp runs this architecture, where "
                       "it is " + formatNumber(value) + ", so it cannot run this model");
  }
  for (const char *t : {"rope_freqs.weight", "rope_factors_long.weight"})
    if (g.tensor(t))
      throw InputError(g.path() + ": the GGUF has tensor '" + t + "' and " +
                       archKey(g, "rope.scaling.type") + " 'yarn'; expected one RoPE scaling");
  r.attentionFactor =
      positiveNumber(g, archKey(g, "rope.scaling.attn_factor"), 1, "RoPE's attention factor") *
      yarnAttentionFactor(r.factor);
  return r;
}

// RoPE as llama.cpp runs a llama GGUF: frequency i is freq_base^(-2i/d),
// divided by the linear scaling factor unless rope.scaling.type is "none"
// (an absent type means linear; an absent or zero factor, none) and by
// rope_freqs.weight[i] when that tensor is present (Llama 3.1's scaling, as
// convert_hf_to_gguf.py writes it), or by LongRoPE's rope_factors_short or
// _long.weight (phi3). rope.scaling.attn_factor multiplies cos and sin, as
// llama.cpp's does; YaRN as above. `rotaryDim` is the rotated width where
// it is narrower than the head (else 0), the factor lists one per rotated
// pair.
RopeSpec ropeFromGguf(const GgufFile &g, int64_t headDim, int64_t rotaryDim) {
  RopeSpec r;
  r.rotaryDim = rotaryDim;
  headDim = rotaryWidth(r, headDim);
  r.theta = g.number(archKey(g, "rope.freq_base")).value_or(10000.0);
  std::string type = "linear";
  const std::string typeKey = archKey(g, "rope.scaling.type");
  if (const GgufFile::Value *v = g.find(typeKey)) {
    if (v->type != GgufFile::Type::string)
      throw InputError(g.path() + ": GGUF metadata key '" + typeKey + "' is not a string");
    type = v->string;
  }
  if (type == "yarn") return yarnFromGguf(g, r);
  if (type != "none" && type != "linear")
    throw InputError(g.path() + ": " + typeKey + " is '" + type +
                     "'; kvplan implements the RoPE scaling types none, linear and yarn (and "
                     "Llama 3's rope_freqs.weight), so it cannot run this model");
  const std::string factorKey = g.find(archKey(g, "rope.scaling.factor"))
                                    ? archKey(g, "rope.scaling.factor")
                                    : archKey(g, "rope.scale_linear");
  if (auto factor = g.number(factorKey); factor && type == "linear" && *factor != 0 &&
                                         *factor != 1) {
    if (!(*factor > 0) || !std::isfinite(*factor))
      throw InputError(g.path() + ": " + factorKey + " is " + std::to_string(*factor) +
                       "; a linear RoPE scaling factor must be positive");
    r.type = RopeType::linear;
    r.factor = *factor;
  }
  r.attentionFactor =
      positiveNumber(g, archKey(g, "rope.scaling.attn_factor"), 1, "RoPE's attention factor");
  if (const GgufFile::Tensor *t = g.tensor("rope_freqs.weight"))
    r.freqFactors = ropeFreqFactors(g, *t, headDim);
  // LongRoPE (phi3): both lists, switched at the pretraining context
  // (rope.scaling.original_context_length, else context_length).
  const GgufFile::Tensor *longT = g.tensor("rope_factors_long.weight");
  const GgufFile::Tensor *shortT = g.tensor("rope_factors_short.weight");
  if (longT || shortT) {
    if (!longT || !shortT)
      throw InputError(g.path() + ": the GGUF has tensor '" +
                       (longT ? longT : shortT)->name + "' without '" +
                       (longT ? "rope_factors_short.weight" : "rope_factors_long.weight") +
                       "'; LongRoPE needs both lists");
    if (!r.freqFactors.empty() || r.type == RopeType::linear)
      throw InputError(g.path() + ": the GGUF has LongRoPE's rope_factors_long/short.weight "
                                  "and also " + (r.freqFactors.empty() ? "linear scaling" :
                                  "rope_freqs.weight") + "; expected one RoPE scaling");
    r.type = RopeType::longrope;
    r.longFactors = ropeFreqFactors(g, *longT, headDim);
    r.shortFactors = ropeFreqFactors(g, *shortT, headDim);
    r.originalMaxPositions =
        g.integer(archKey(g, "rope.scaling.original_context_length"))
            .value_or(g.integer(archKey(g, "context_length")).value_or(0));
  }
  return r;
}

/// gpt-oss's harmony format ends a reply with <|return|> (its EOS), a tool
/// call with <|call|>, and a text with <|endoftext|>: llama.cpp ends
/// generation at each of them (finding them by their text, as the file names
/// only the EOS), and so does kvplan.
void addHarmonyEndIds(const GgufFile::Value *tokens, std::vector<int64_t> &ids) {
  if (!tokens || tokens->type != GgufFile::Type::array) return;
  for (size_t i = 0; i < tokens->strings.size(); ++i) {
    const std::string &t = tokens->strings[i];
    if ((t == "<|return|>" || t == "<|call|>" || t == "<|endoftext|>") &&
        std::find(ids.begin(), ids.end(), int64_t(i)) == ids.end())
      ids.push_back(int64_t(i));
    // <|end|> ends a message within the answer, even where the file's
    // eot_token_id names it (llama.cpp takes it out of its ends too).
    if (t == "<|end|>") ids.erase(std::remove(ids.begin(), ids.end(), int64_t(i)), ids.end());
  }
}

/// End-of-generation ids: tokenizer.ggml.eos_token_id (2 when absent, as
/// llama.cpp's default), and the end-of-turn and end-of-message ids
/// (Llama 3's <|eot_id|>, <|eom_id|>) where the file names them; a gpt-oss
/// file's harmony ends besides.
std::vector<int64_t> eosIdsFromGguf(const GgufFile &g) {
  std::vector<int64_t> ids = {g.integer("tokenizer.ggml.eos_token_id").value_or(2)};
  for (const char *key : {"tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"}) {
    auto id = g.integer(key);
    // An unsigned -1 is how GGUF writers spell "none".
    if (id && *id >= 0 && *id != int64_t(UINT32_MAX) &&
        std::find(ids.begin(), ids.end(), *id) == ids.end())
      ids.push_back(*id);
  }
  if (ggufArchName(g) == "gpt-oss") addHarmonyEndIds(g.find("tokenizer.ggml.tokens"), ids);
  return ids;
}

// The head width, as llama.cpp reads it: attention.key_length, else (0
// here: hidden_size / num_heads, derived later) whatever rope.dimension_count
// says in a llama, qwen2 or qwen3 file that leaves the key width out (kvplan
// has read it so; llama.cpp requires the two to agree for llama files). A
// phi3 file writes no key width, so its heads are embedding_length /
// head_count wide and a narrower dimension_count is partial RoPE
// (Phi-4-mini's 96 of 128).
int64_t ggufHeadDim(const GgufFile &g, const ModelSpec &m) {
  const auto rot = g.integer(archKey(g, "rope.dimension_count"));
  const auto keyWidth = g.integer(archKey(g, "attention.key_length"));
  if (keyWidth) return *keyWidth;
  return rot && m.architecture != Architecture::phi3 ? *rot : 0;
}

// The rotated width: rope.dimension_count where it is narrower than the head
// (partial RoPE), else 0 (whole heads). Wider is refused.
int64_t ggufRotaryDim(const GgufFile &g, int64_t headDim) {
  const std::string key = archKey(g, "rope.dimension_count");
  const auto rot = g.integer(key);
  if (!rot || *rot == headDim) return 0;
  if (*rot > headDim || *rot < 2 || *rot % 2 != 0)
    throw InputError(g.path() + ": " + key + " " + std::to_string(*rot) +
                     " is not an even number from 2 to the head width " +
                     std::to_string(headDim) + " (" + archKey(g, "attention.key_length") +
                     ", else " + archKey(g, "embedding_length") + " / " +
                     archKey(g, "attention.head_count") + ")");
  return *rot;
}

void readGgufWindowPattern(const GgufFile &g, ModelSpec &m, int64_t defaultPeriod);

// A gemma3 or gemma2 file as llama.cpp runs it: GeGLU, post-norms (the
// file's norms hold 1 + weight already), embeddings times
// sqrt(embedding_length), every sixth layer (Gemma 2: every other) global
// under attention.sliding_window (or as attention.sliding_window_pattern
// says: a period, or a flag a layer, true where it slides); Gemma 3's q/k
// norms and local layers' RoPE on base 10000, unscaled; Gemma 2's
// soft-capping (attn_logit_softcapping, final_logit_softcapping); the
// softmax over sqrt(head_dim), or for the 27B (Gemma 3's 62 layers, Gemma
// 2's 46) over sqrt(embedding_length / head_count), llama.cpp's rule for
// the query_pre_attn_scalar a GGUF does not record.
void readGgufGemma(const GgufFile &g, ModelSpec &m) {
  const bool gemma2 = m.architecture == Architecture::gemma2;
  m.qkNorm = !gemma2;
  m.postNorms = true;
  m.activation = Activation::gelu_tanh;
  m.embeddingScale = std::sqrt(double(std::max<int64_t>(m.hiddenSize, 1)));
  if (m.numLayers == (gemma2 ? 46 : 62) && m.numHeads > 0)
    m.queryPreAttnScalar = double(m.hiddenSize / m.numHeads);
  if (gemma2) {
    m.attnSoftcap = g.number(archKey(g, "attn_logit_softcapping")).value_or(0.0);
    m.finalSoftcap = g.number(archKey(g, "final_logit_softcapping")).value_or(0.0);
  } else {
    m.rope.localTheta = 10000;
  }
  readGgufWindowPattern(g, m, gemma2 ? 2 : 6);
}

// attention.sliding_window over the layers attention.sliding_window_pattern
// says: a period (every period-th layer, from period - 1, reads every key,
// as llama.cpp's set_swa_pattern), or a flag a layer, true where it slides;
// `period` where the file gives none.
void readGgufWindowPattern(const GgufFile &g, ModelSpec &m, int64_t defaultPeriod) {
  const std::string windowKey = archKey(g, "attention.sliding_window");
  const auto window = g.integer(windowKey);
  if (!window || *window <= 0) return;
  m.slidingWindow = *window;
  const std::string patternKey = archKey(g, "attention.sliding_window_pattern");
  const GgufFile::Value *pattern = g.find(patternKey);
  if (pattern && pattern->type == GgufFile::Type::array) {
    if (int64_t(pattern->numbers.size()) != m.numLayers)
      throw InputError(g.path() + ": " + patternKey + " has " +
                       std::to_string(pattern->numbers.size()) + " flags for " +
                       std::to_string(m.numLayers) + " layers");
    for (size_t l = 0; l < pattern->numbers.size(); ++l)
      if (pattern->numbers[l] == 0) m.fullAttentionLayers.push_back(int64_t(l));
    return;
  }
  const int64_t period = g.integer(patternKey).value_or(defaultPeriod);
  if (period <= 0)
    throw InputError(g.path() + ": " + patternKey + " " + std::to_string(period) +
                     " is not a positive period");
  m.fullAttentionLayers = everyNthLayer(m.numLayers, period);
}

// A gpt-oss file as llama.cpp runs it (its openai-moe graph): biases on
// q/k/v, the output projection, the router and the experts; attention
// sinks; the clamped SwiGLU at llama.cpp's fixed limit 7 and alpha 1.702 (no
// key holds them); every other layer, from layer 0, under
// attention.sliding_window (attention.sliding_window_pattern's period, 2 by
// default); the chosen experts' weights the softmax of their logits alone
// (renormalized probabilities, the same numbers). A rope.freq_base_swa other
// than rope.freq_base (llama.cpp's sliding layers' own base, under the same
// scaling) is refused: kvplan's local base is unscaled.
void readGgufGptOss(const GgufFile &g, ModelSpec &m) {
  m.attentionBias = m.attentionOutBias = m.attentionSinks = m.expertBias = true;
  m.activation = Activation::swiglu_oai;
  readGgufWindowPattern(g, m, 2);
  const std::string swaBase = archKey(g, "rope.freq_base_swa");
  if (auto base = g.number(swaBase); base && *base != m.rope.theta)
    throw InputError(g.path() + ": " + swaBase + " " + formatNumber(*base) + " differs from " +
                     archKey(g, "rope.freq_base") + " " + formatNumber(m.rope.theta) +
                     "; kvplan rotates gpt-oss's sliding layers on the model's base");
}

// A mixture of experts (expert_count): Mixtral's llama files, qwen3moe and
// qwen2moe files, as llama.cpp runs them: the chosen experts' probabilities
// renormalized (qwen2moe's not), each expert expert_feed_forward_length wide
// (Mixtral's files: feed_forward_length); the experts stacked or apart
// (GgufSource); qwen2moe's shared expert (always, gated)
// expert_shared_feed_forward_length wide (else feed_forward_length).
void readGgufExperts(const GgufFile &g, ModelConfig &cfg) {
  ModelSpec &m = cfg.model;
  const std::string countKey = archKey(g, "expert_count");
  const auto count = g.integer(countKey);
  if (!count || *count == 0) return;
  const std::string usedKey = archKey(g, "expert_used_count");
  const auto used = g.integer(usedKey);
  if (!used)
    throw InputError(g.path() + ": GGUF metadata key '" + usedKey +
                     "' (model.num_experts_per_tok) is missing or not a number, and " + countKey +
                     " says the model has " + std::to_string(*count) + " experts");
  m.numExperts = *count;
  m.expertsPerToken = *used;
  const bool qwen2moe = ggufArchName(g) == "qwen2moe";
  m.normTopKProb = !qwen2moe;
  m.expertIntermediateSize =
      g.integer(archKey(g, "expert_feed_forward_length")).value_or(m.intermediateSize);
  for (const char *field : {"model.num_experts", "model.num_experts_per_tok",
                            "model.moe_intermediate_size"})
    cfg.given.insert(field);
  if (!qwen2moe) return;
  m.sharedExpertIntermediateSize =
      g.integer(archKey(g, "expert_shared_feed_forward_length")).value_or(m.intermediateSize);
  m.sharedExpertGate = true;
  cfg.given.insert("model.shared_expert_intermediate_size");
}

// Like a Hugging Face torch_dtype, the matrices' type is the natural weight
// type (and MXFP4 experts' mxfp4 theirs); defaults, not marked as given.
void readGgufWeightTypes(const GgufFile &g, ModelConfig &cfg) {
  const bool mxfp4 = mxfp4Experts(g);
  if (auto d = layerMatrixDtype(g, mxfp4))
    cfg.compile.weightDtype = *d;
  if (cfg.model.numExperts > 0 && mxfp4) cfg.compile.expertDtype = DType::mxfp4;
}

ModelConfig configFromGguf(const GgufFile &g) {
  ModelConfig cfg;
  cfg.sourcePath = g.path();
  ModelSpec &m = cfg.model;
  m.architecture = ggufArchitecture(g);
  auto key = [&](const char *name) { return archKey(g, name); };
  auto required = [&](const char *name, const char *field) {
    auto v = g.integer(key(name));
    if (!v)
      throw InputError(g.path() + ": GGUF metadata key '" + key(name) + "' (" + field +
                       ") is missing or not a number");
    cfg.given.insert(field);
    return *v;
  };
  // Qwen2's q/k/v products have biases (attn_q.bias, ...), and so do the
  // "llamafied" Qwen models written as llama (llama.cpp's llama reads the
  // biases where the file has them); Qwen3 normalizes each query and key
  // head (attn_q_norm, attn_k_norm).
  m.attentionBias = m.architecture == Architecture::qwen2 || g.tensor("blk.0.attn_q.bias");
  m.qkNorm = m.architecture == Architecture::qwen3;
  m.name = g.string("general.name").value_or(std::filesystem::path(g.path()).stem().string());
  m.hiddenSize = required("embedding_length", "model.hidden_size");
  m.intermediateSize = required("feed_forward_length", "model.intermediate_size");
  m.numLayers = required("block_count", "model.num_layers");
  if (m.architecture == Architecture::smollm3) // llama.cpp's n_no_rope_layer_step
    m.nopeLayers = everyNthLayer(m.numLayers, 4);
  m.numHeads = required("attention.head_count", "model.num_heads");
  m.numKvHeads = g.integer(key("attention.head_count_kv")).value_or(m.numHeads);
  if ((m.headDim = ggufHeadDim(g, m)))
    cfg.given.insert("model.head_dim");
  m.maxPositions = required("context_length", "model.max_position_embeddings");
  auto eps = g.number(key("attention.layer_norm_rms_epsilon"));
  if (!eps)
    throw InputError(g.path() + ": GGUF metadata key '" + key("attention.layer_norm_rms_epsilon") +
                     "' (model.rms_norm_eps) is missing or not a number");
  m.rmsNormEps = *eps;
  // Phi-3-mini-4k's window (2047). llama.cpp runs phi3 files with full
  // attention; transformers applies the window, which compile then holds to
  // (a context no longer than it, where the two are the same).
  if (m.architecture == Architecture::phi3)
    if (auto window = g.integer(key("attention.sliding_window")); window && *window > 0)
      m.slidingWindow = *window;
  // RoPE's width: dimension_count, else whole heads (validate() checks that
  // they divide hidden_size).
  const int64_t head = m.headDim ? m.headDim : m.hiddenSize / std::max<int64_t>(m.numHeads, 1);
  m.rope = ropeFromGguf(g, head, ggufRotaryDim(g, head));
  if (m.gemma()) readGgufGemma(g, m);
  readGgufExperts(g, cfg);
  if (m.architecture == Architecture::gpt_oss) readGgufGptOss(g, m);

  const GgufFile::Value *tokens = g.find("tokenizer.ggml.tokens");
  const GgufFile::Tensor *embed = g.tensor("token_embd.weight");
  if (tokens && tokens->type == GgufFile::Type::array && !tokens->strings.empty())
    m.vocabSize = int64_t(tokens->strings.size());
  else if (auto v = g.integer(key("vocab_size")))
    m.vocabSize = *v;
  else if (embed && embed->dims.size() == 2)
    m.vocabSize = embed->dims[1];
  else
    throw InputError(g.path() + ": cannot tell the vocabulary size (no tokenizer.ggml.tokens, " +
                     key("vocab_size") + " or token_embd.weight)");
  // An embedding of more rows than the vocabulary has tokens (Gemma 3 4B's
  // 262,208 for its 262,144; ids no tokenizer makes): the model's rows.
  if (embed && embed->dims.size() == 2 && embed->dims[1] > m.vocabSize)
    m.vocabSize = embed->dims[1];
  m.bosTokenId = g.integer("tokenizer.ggml.bos_token_id").value_or(1);
  m.eosTokenIds = eosIdsFromGguf(g);
  m.tieWordEmbeddings = tiedClassifier(g);
  for (const char *field : {"model.name", "model.architecture", "model.num_kv_heads",
                            "model.vocab_size", "model.rms_norm_eps", "model.rope.theta",
                            "model.tie_word_embeddings", "model.bos_token_id",
                            "model.eos_token_id", "model.attention_bias"})
    cfg.given.insert(field);

  readGgufWeightTypes(g, cfg);
  return cfg;
}

// Canonical names to GGUF's (llama.cpp's) names.
std::string ggufName(const std::string &name) {
  if (name == "tok_embeddings") return "token_embd.weight";
  if (name == "norm") return "output_norm.weight";
  if (name == "output") return "output.weight";
  int64_t layer = 0;
  std::string rest;
  if (!splitLayerName(name, layer, rest))
    return "";
  static const std::unordered_map<std::string, std::string> perLayer = {
      {"attention_norm", "attn_norm.weight"},   {"attention.wq", "attn_q.weight"},
      {"attention.wk", "attn_k.weight"},        {"attention.wv", "attn_v.weight"},
      {"attention.wo", "attn_output.weight"},   {"attention.bq", "attn_q.bias"},
      {"attention.bk", "attn_k.bias"},          {"attention.bv", "attn_v.bias"},
      {"attention.q_norm", "attn_q_norm.weight"}, {"attention.k_norm", "attn_k_norm.weight"},
      {"ffn_norm", "ffn_norm.weight"},          {"feed_forward.w1", "ffn_gate.weight"},
      {"post_attention_norm", "post_attention_norm.weight"}, // Gemma's
      {"post_ffn_norm", "post_ffw_norm.weight"},
      {"feed_forward.w3", "ffn_up.weight"},     {"feed_forward.w2", "ffn_down.weight"},
      // Fused (phi3): q, k and v rows; the gate's then the up projection's.
      {"attention.wqkv", "attn_qkv.weight"},    {"feed_forward.w13", "ffn_up.weight"},
      // A mixture of experts': the router, each stack of experts one tensor.
      {"feed_forward.router", "ffn_gate_inp.weight"},
      {"feed_forward.experts.w1", "ffn_gate_exps.weight"},
      {"feed_forward.experts.w3", "ffn_up_exps.weight"},
      {"feed_forward.experts.w2", "ffn_down_exps.weight"},
      // Qwen2-MoE's shared expert and its gate (one vector: [1, hidden]).
      {"feed_forward.shared_expert.w1", "ffn_gate_shexp.weight"},
      {"feed_forward.shared_expert.w3", "ffn_up_shexp.weight"},
      {"feed_forward.shared_expert.w2", "ffn_down_shexp.weight"},
      {"feed_forward.shared_expert_gate", "ffn_gate_inp_shexp.weight"},
      // gpt-oss's sinks and biases.
      {"attention.sinks", "attn_sinks.weight"},
      {"attention.bo", "attn_output.bias"},
      {"feed_forward.router_bias", "ffn_gate_inp.bias"},
      {"feed_forward.experts.b1", "ffn_gate_exps.bias"},
      {"feed_forward.experts.b3", "ffn_up_exps.bias"},
      {"feed_forward.experts.b2", "ffn_down_exps.bias"},
  };
  auto it = perLayer.find(rest);
  return it == perLayer.end() ? "" : "blk." + std::to_string(layer) + "." + it->second;
}

/// ggufName for a file of architecture `a`: gpt-oss's files hold the norm
/// before the experts (kvplan's ffn_norm) as post_attention_norm, the name
/// Gemma's norm of the attention's output has.
std::string ggufTensorName(const std::string &name, Architecture a) {
  int64_t layer = 0;
  std::string rest;
  if (a == Architecture::gpt_oss && splitLayerName(name, layer, rest) && rest == "ffn_norm")
    return "blk." + std::to_string(layer) + ".post_attention_norm.weight";
  return ggufName(name);
}

class GgufSource final : public WeightSource {
public:
  /// `model`'s q/k rows are reordered from rotate-half order when the file
  /// is a qwen2 or qwen3 GGUF.
  GgufSource(GgufFile file, const ModelSpec &model)
      : gguf(std::move(file)), rotateHalf(rotatesHalves(ggufArchitecture(gguf))), model(model),
        headDim(model.headDim ? model.headDim
                              : (model.numHeads ? model.hiddenSize / model.numHeads : 0)) {
    for (const GgufFile::Tensor &t : gguf.tensors())
      byName.emplace(t.name, &t);
    if (rotateHalf)
      for (const WeightDecl &d : weightTable(model))
        if (const Place p = place(d.name); p.tensor && isRopeRows(d.name))
          held += p.bytes;
  }

  uint64_t heldBytes() const override { return held; }

  std::string describe() const override { return "GGUF checkpoint " + gguf.path(); }

  SourceTensor tensor(const std::string &name,
                      const std::vector<int64_t> &expected) const override {
    const Place p = place(name);
    const std::string &stored = p.stored;
    if (!p.tensor)
      if (std::optional<SourceTensor> apart = expertsApart(name, expected)) return *apart;
    if (!p.tensor) {
      std::string hint;
      if (name == "output")
        hint = "the GGUF has no output.weight, so its classifier is the token embedding; the "
               "model should set tie_word_embeddings";
      else if (std::optional<FusedRows> f = fusedRows(name, model))
        hint = "and no fused '" + ggufName(f->fused) + "' (where phi3 files hold it)";
      missingTensor(gguf.path(), name, stored, hint);
    }
    const GgufFile::Tensor &t = *p.tensor;
    const std::optional<DType> dtype = readableType(t);
    // ggml lists the fastest-varying dimension first; its memory is already
    // row-major [out, in] (for a quantized type, each row whole blocks), so
    // reversing the list gives the canonical shape.
    std::vector<int64_t> shape(t.dims.rbegin(), t.dims.rend());
    // A one-row matrix that the file keeps as a vector (ffn_gate_inp_shexp).
    if (shape.size() == 1 && expected.size() == 2 && expected[0] == 1)
      shape.insert(shape.begin(), 1);
    if (p.fused) {
      std::vector<int64_t> whole = expected;
      if (!whole.empty()) whole[0] = p.fused->total;
      checkShape(gguf.path(), p.fused->fused, stored, shape, whole);
      shape[0] = p.fused->rows;
    } else {
      checkShape(gguf.path(), name, stored, shape, expected);
    }
    checkAligned(t, p.data, dtype);
    SourceTensor out;
    out.shape = std::move(shape);
    out.dtype = dtype.value_or(DType::f32);
    out.data = p.data;
    out.quant = t.quant;
    if (rotateHalf && isRopeRows(name))
      out.data = permuted(name, p, out.shape[0]);
    return out;
  }

private:
  /// The element type of a tensor kvplan reads (none for a quantized one);
  /// throws InputError naming any other.
  std::optional<DType> readableType(const GgufFile::Tensor &t) const {
    std::optional<DType> dtype = ggmlDType(t.ggmlType);
    if (!dtype && t.quant == QuantType::none)
      throw InputError(gguf.path() + ": tensor '" + t.name + "' has type " +
                       ggmlTypeName(t.ggmlType) + ", which kvplan does not read; it reads " +
                       kReadableTypes + " GGUF tensors (re-quantize the model with "
                       "llama-quantize to one of those)");
    return dtype;
  }

  /// Quantized blocks are read byte by byte: any offset will do.
  void checkAligned(const GgufFile::Tensor &t, const void *data,
                    std::optional<DType> dtype) const {
    if (dtype && reinterpret_cast<uintptr_t>(data) % uintptr_t(dtypeBytes(*dtype)) != 0)
      throw InputError(gguf.path() + ": corrupt GGUF file: tensor '" + t.name +
                       "' starts at a misaligned offset");
  }

  /// A stack of experts that the file keeps one tensor an expert
  /// (blk.N.ffn_gate.E.weight, ..., as llama.cpp wrote Mixtral before it
  /// stacked them; it reads them no longer), as slabs in place; nothing where it has
  /// no such tensors. Each must be the expert's shape, all of one type.
  std::optional<SourceTensor> expertsApart(const std::string &name,
                                           const std::vector<int64_t> &expected) const {
    static const std::map<std::string, std::string> parts = {
        {"feed_forward.experts.w1", "ffn_gate"},
        {"feed_forward.experts.w3", "ffn_up"},
        {"feed_forward.experts.w2", "ffn_down"}};
    int64_t layer = 0;
    std::string rest;
    if (!splitLayerName(name, layer, rest) || !parts.count(rest) || expected.size() != 3)
      return std::nullopt;
    const std::string prefix = "blk." + std::to_string(layer) + "." + parts.at(rest) + ".";
    if (!byName.count(prefix + "0.weight")) return std::nullopt;
    SourceTensor out;
    out.shape = expected;
    const std::vector<int64_t> one(expected.begin() + 1, expected.end());
    for (int64_t e = 0; e < expected.front(); ++e) {
      const std::string stored = prefix + std::to_string(e) + ".weight";
      auto it = byName.find(stored);
      if (it == byName.end())
        missingTensor(gguf.path(), name, stored,
                      "expert " + std::to_string(e) + " of the model's " +
                          std::to_string(expected.front()) + " (expert_count) is not in the file");
      const GgufFile::Tensor &t = *it->second;
      const std::optional<DType> dtype = readableType(t);
      checkShape(gguf.path(), name, stored, std::vector<int64_t>(t.dims.rbegin(), t.dims.rend()),
                 one);
      checkAligned(t, t.data, dtype);
      if (e > 0 && (t.quant != out.quant || dtype.value_or(DType::f32) != out.dtype))
        throw InputError(gguf.path() + ": tensor '" + stored + "' has type " +
                         ggmlTypeName(t.ggmlType) + " and '" + prefix + "0.weight' another; "
                         "kvplan reads a layer's experts in one type");
      out.dtype = dtype.value_or(DType::f32);
      out.quant = t.quant;
      out.slabs.push_back(t.data);
    }
    return out;
  }

  /// Where a weight's bytes are: its own tensor, or its rows of a fused one
  /// (phi3's attn_qkv; its ffn_up, which holds the gate's rows and then the
  /// up projection's). `stored`: the name looked for.
  struct Place {
    const GgufFile::Tensor *tensor = nullptr;
    std::string stored;
    std::optional<FusedRows> fused;
    const char *data = nullptr;
    uint64_t bytes = 0;
  };

  Place place(const std::string &name) const {
    auto find = [&](const std::string &stored) -> const GgufFile::Tensor * {
      auto it = stored.empty() ? byName.end() : byName.find(stored);
      return it == byName.end() ? nullptr : it->second;
    };
    StoredRows where = storedRows(
        name, model, [&](const std::string &n) { return ggufTensorName(n, model.architecture); },
        [&](const std::string &n) { return find(n) != nullptr; });
    Place p{find(where.stored), where.stored, where.fused};
    if (p.tensor) // ggml lists the fastest-varying dimension first: rows last
      std::tie(p.data, p.bytes) =
          weightBytes(static_cast<const char *>(p.tensor->data), p.tensor->bytes,
                      p.tensor->dims.empty() ? 1 : p.tensor->dims.back(), p.fused);
    return p;
  }

  /// The rows at `p` in adjacent-pair order, copied once and kept.
  const void *permuted(const std::string &name, const Place &p, int64_t rows) const {
    std::lock_guard<std::mutex> lock(mutex);
    auto cached = owned.find(name);
    if (cached == owned.end())
      cached = owned.emplace(name, permutedRopeRows(gguf.path(), p.stored, p.data, p.bytes, rows,
                                                    headDim, model.rope.rotaryDim)).first;
    return cached->second.data();
  }

  GgufFile gguf;
  bool rotateHalf;
  ModelSpec model;
  int64_t headDim;
  uint64_t held = 0; // heldBytes(): the reordered copies
  std::unordered_map<std::string, const GgufFile::Tensor *> byName;
  // Reordered copies, kept for the source's lifetime so the pointers handed
  // out stay valid; std::map nodes never move.
  mutable std::mutex mutex;
  mutable std::map<std::string, std::vector<char>> owned;
};

// Weights from a GGUF under a model described elsewhere (a TOML spec, a
// config.json): the file's RoPE (its rope_freqs above all) must be the one
// the model computes, or the weights would decode wrongly. The factors are
// F32, so the frequencies agree to float rounding, not exactly.
void checkFrequenciesAgree(const GgufFile &g, const RopeSpec &fileRope, const RopeSpec &modelRope,
                           int64_t headDim, const char *which) {
  const std::vector<double> file = ropeFrequencies(fileRope, headDim);
  const std::vector<double> spec = ropeFrequencies(modelRope, headDim);
  for (size_t i = 0; i < file.size(); ++i)
    if (std::abs(file[i] - spec[i]) > 1e-5 * file[i]) {
      char values[80];
      std::snprintf(values, sizeof values, " is %g in the file (", file[i]);
      std::string msg = g.path() + ": the GGUF's RoPE differs from the model's: " + which +
                        "frequency " + std::to_string(i) + values +
                        archKey(g, "rope.freq_base") +
                        (g.tensor("rope_freqs.weight") ? ", rope_freqs.weight" : "") +
                        (fileRope.type == RopeType::longrope ? ", rope_factors_*.weight" : "") +
                        ", " + archKey(g, "rope.scaling.*") + ")";
      std::snprintf(values, sizeof values, " but %g for the model", spec[i]);
      throw InputError(msg + values + " (rope.theta, rope.type, rope.freq_factors); compile "
                                      "the .gguf itself, or give the model the file's RoPE");
    }
}

// LongRoPE's two lists are compared each (the model's max_seq_len chose one
// of them already), with the context they switch at.
void checkRopeAgrees(const GgufFile &g, const ModelSpec &given) {
  RopeSpec file = ropeFromGguf(g, given.headDim, ggufRotaryDim(g, given.headDim));
  // YaRN over a file whose RoPE is unscaled (compile's --yarn, or a spec
  // extending the file's context) is checked on the RoPE it scales.
  ModelSpec model = given;
  if (model.rope.type == RopeType::yarn && file.type == RopeType::standard &&
      file.freqFactors.empty() && file.attentionFactor == 1) {
    model.rope.type = RopeType::standard;
    model.rope.attentionFactor = 1;
  }
  const auto mismatch = [&](const std::string &what) {
    return InputError(g.path() + ": the GGUF's RoPE differs from the model's: " + what +
                      "; compile the .gguf itself, or give the model the file's RoPE");
  };
  if (rotaryWidth(file, model.headDim) != rotaryWidth(model.rope, model.headDim))
    throw mismatch("it rotates " + std::to_string(rotaryWidth(file, model.headDim)) +
                   " dimensions of each head in the file (" +
                   archKey(g, "rope.dimension_count") + ") but " +
                   std::to_string(rotaryWidth(model.rope, model.headDim)) +
                   " for the model (rope.rotary_dim)");
  if ((file.type == RopeType::longrope) != (model.rope.type == RopeType::longrope))
    throw mismatch(file.type == RopeType::longrope
                       ? "the file has LongRoPE (short and long factors) and the model has not"
                       : "the model has LongRoPE (short and long factors) and the file has not");
  if (file.type == RopeType::longrope) {
    if (file.originalMaxPositions != model.rope.originalMaxPositions)
      throw mismatch("LongRoPE switches at " + std::to_string(file.originalMaxPositions) +
                     " positions in the file (" +
                     archKey(g, "rope.scaling.original_context_length") + ") but at " +
                     std::to_string(model.rope.originalMaxPositions) + " for the model");
    RopeSpec spec = model.rope;
    file.freqFactors = file.shortFactors;
    spec.freqFactors = spec.shortFactors;
    checkFrequenciesAgree(g, file, spec, model.headDim, "the short factors' ");
    file.freqFactors = file.longFactors;
    spec.freqFactors = spec.longFactors;
    checkFrequenciesAgree(g, file, spec, model.headDim, "the long factors' ");
  } else {
    checkFrequenciesAgree(g, file, model.rope, model.headDim, "");
  }
  if (std::abs(file.attentionFactor - model.rope.attentionFactor) >
      1e-6 * model.rope.attentionFactor) {
    char values[120];
    std::snprintf(values, sizeof values, "the attention factor is %g in the file (%s) but %g "
                  "for the model", file.attentionFactor,
                  archKey(g, "rope.scaling.attn_factor").c_str(), model.rope.attentionFactor);
    throw mismatch(values);
  }
}

} // namespace

ModelConfig readGgufConfig(const std::string &path) {
  return configFromGguf(GgufFile::open(path));
}

std::unique_ptr<WeightSource> openGguf(const std::string &path, const ModelSpec &model) {
  GgufFile g = GgufFile::open(path);
  const Architecture arch = ggufArchitecture(g);
  // A qwen2 or qwen3 file's q/k rows are in another order, and each has
  // weights the others lack; a mistral model is a llama GGUF to llama.cpp.
  auto family = [](Architecture a) { return a == Architecture::mistral ? Architecture::llama : a; };
  if (family(arch) != family(model.architecture))
    throw InputError(path + ": the GGUF is of architecture " + architectureName(arch) +
                     " but the model is " + architectureName(model.architecture) +
                     "; compile the .gguf itself, or describe it as " + architectureName(arch));
  checkRopeAgrees(g, model);
  // llama.cpp leaves every fourth layer of a smollm3 file unrotated (its
  // n_no_rope_layer_step, which the file does not record).
  if (arch == Architecture::smollm3 &&
      model.nopeLayers != everyNthLayer(model.numLayers, 4))
    throw InputError(path + ": a smollm3 GGUF runs every fourth layer without RoPE (layers 3, "
                            "7, ...), and the model's nope_layers differ; leave nope_layers "
                            "out, or compile the .gguf itself");
  if (model.tieWordEmbeddings && !tiedClassifier(g))
    throw InputError(path + ": the GGUF has a separate classifier (output.weight, unlike "
                            "token_embd.weight) but the model ties word embeddings; set "
                            "tie_word_embeddings = false");
  return std::make_unique<GgufSource>(std::move(g), model);
}

} // namespace weights
} // namespace kvplan
