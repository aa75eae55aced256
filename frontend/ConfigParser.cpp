// TOML model specs and Hugging Face config.json files -> ModelConfig.
#include "frontend/ConfigParser.h"

#include <nlohmann/json.hpp>
#include <toml++/toml.h>

#include "formats/WeightFormats.h"
#include "support/Format.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <tuple>

namespace fs = std::filesystem;

namespace kvplan {

void printWarningToStderr(const std::string &msg) {
  std::cerr << "warning: " << msg << "\n";
}

//===----------------------------------------------------------------------===//
// TOML
//===----------------------------------------------------------------------===//

namespace {

const char *tomlTypeName(const toml::node &n) {
  switch (n.type()) {
  case toml::node_type::string: return "a string";
  case toml::node_type::integer: return "an integer";
  case toml::node_type::floating_point: return "a number";
  case toml::node_type::boolean: return "a boolean";
  case toml::node_type::array: return "an array";
  case toml::node_type::table: return "a table";
  default: return "a date or time";
  }
}

/// Reads one [table] of the spec, recording lines and rejecting wrong types.
class TomlTable {
public:
  TomlTable(ModelConfig &cfg, const toml::table *tbl, std::string prefix, int64_t line)
      : cfg(cfg), tbl(tbl), prefix(std::move(prefix)), tableLine(line) {}

  bool present() const { return tbl != nullptr; }

  /// The node for `key`, or nullptr; records the key as known and given.
  const toml::node *get(const std::string &key) {
    known.insert(key);
    if (!tbl)
      return nullptr;
    const toml::node *n = tbl->get(key);
    if (n) {
      cfg.fieldLines[field(key)] = n->source().begin.line;
      cfg.given.insert(field(key));
    }
    return n;
  }

  [[noreturn]] void typeError(const std::string &key, const toml::node &n,
                              const char *expected) {
    throw InputError(cfg.where(field(key)) + "field '" + field(key) + "': expected " +
                     expected + ", got " + tomlTypeName(n));
  }

  [[noreturn]] void fail(const std::string &key, const std::string &msg) {
    throw InputError(cfg.where(field(key)) + "field '" + field(key) + "': " + msg);
  }

  [[noreturn]] void missing(const std::string &key, const char *expected) {
    std::string where = cfg.sourcePath;
    if (tableLine > 0)
      where += ":" + std::to_string(tableLine);
    throw InputError(where + ": missing required field '" + field(key) + "' (" + expected +
                     ")" + (tbl ? "" : "; add a [" + prefix + "] table"));
  }

  bool integer(const std::string &key, int64_t &out, bool required) {
    const toml::node *n = get(key);
    if (!n) {
      if (required) missing(key, "an integer");
      return false;
    }
    if (!n->is_integer()) typeError(key, *n, "an integer");
    out = n->as_integer()->get();
    return true;
  }

  bool real(const std::string &key, double &out, bool required) {
    const toml::node *n = get(key);
    if (!n) {
      if (required) missing(key, "a number");
      return false;
    }
    if (n->is_integer())
      out = double(n->as_integer()->get());
    else if (n->is_floating_point())
      out = n->as_floating_point()->get();
    else
      typeError(key, *n, "a number");
    return true;
  }

  bool boolean(const std::string &key, bool &out) {
    const toml::node *n = get(key);
    if (!n) return false;
    if (!n->is_boolean()) typeError(key, *n, "true or false");
    out = n->as_boolean()->get();
    return true;
  }

  bool string(const std::string &key, std::string &out, bool required) {
    const toml::node *n = get(key);
    if (!n) {
      if (required) missing(key, "a string");
      return false;
    }
    if (!n->is_string()) typeError(key, *n, "a string");
    out = n->as_string()->get();
    return true;
  }

  /// A string naming one of an enum's values.
  template <typename T, typename Parse>
  bool choice(const std::string &key, T &out, Parse parse, const char *choices,
              bool required) {
    std::string s;
    if (!string(key, s, required)) return false;
    auto v = parse(s);
    if (!v)
      throw InputError(cfg.where(field(key)) + "field '" + field(key) + "': unknown value '" +
                       s + "'; expected one of " + choices);
    out = *v;
    return true;
  }

  /// An integer or an array of integers (eos_token_id).
  bool integers(const std::string &key, std::vector<int64_t> &out, bool required) {
    const toml::node *n = get(key);
    if (!n) {
      if (required) missing(key, "an integer or an array of integers");
      return false;
    }
    out.clear();
    if (n->is_integer()) {
      out.push_back(n->as_integer()->get());
      return true;
    }
    if (!n->is_array()) typeError(key, *n, "an integer or an array of integers");
    for (const toml::node &e : *n->as_array()) {
      if (!e.is_integer()) typeError(key, e, "an array of integers");
      out.push_back(e.as_integer()->get());
    }
    return true;
  }

  /// A size in bytes: an integer, or a string parseByteSize reads ("24GiB").
  bool byteSize(const std::string &key, int64_t &out) {
    const toml::node *n = get(key);
    if (!n) return false;
    if (n->is_integer()) {
      out = n->as_integer()->get(); // its range is checked with the settings
      return true;
    }
    if (!n->is_string()) typeError(key, *n, "an integer or a string like \"24GiB\"");
    const std::string text = n->as_string()->get();
    const std::optional<int64_t> bytes = parseByteSize(text);
    if (!bytes) fail(key, "'" + text + "' is not a size; expected " + kByteSizeForms);
    out = *bytes;
    return true;
  }

  /// An array of numbers (rope.freq_factors).
  bool reals(const std::string &key, std::vector<double> &out) {
    const toml::node *n = get(key);
    if (!n) return false;
    if (!n->is_array()) typeError(key, *n, "an array of numbers");
    out.clear();
    for (const toml::node &e : *n->as_array()) {
      if (e.is_integer()) out.push_back(double(e.as_integer()->get()));
      else if (e.is_floating_point()) out.push_back(e.as_floating_point()->get());
      else typeError(key, e, "an array of numbers");
    }
    return true;
  }

  void warnUnknown(const WarningSink &warn) {
    if (!tbl) return;
    for (auto &&[k, v] : *tbl) {
      std::string key(k.str());
      if (known.count(key) || (v.is_table() && subtables.count(key))) continue;
      warn(cfg.sourcePath + ":" + std::to_string(k.source().begin.line) + ": unknown key '" +
           field(key) + "' is ignored");
    }
  }

  void allowSubtable(const std::string &key) { subtables.insert(key); }

  std::string field(const std::string &key) const { return prefix + "." + key; }

private:
  ModelConfig &cfg;
  const toml::table *tbl;
  std::string prefix;
  int64_t tableLine;
  std::set<std::string> known, subtables;
};

TomlTable subTable(ModelConfig &cfg, const toml::table &parent, const std::string &key,
                   const std::string &prefix) {
  const toml::node *n = parent.get(key);
  if (n && !n->is_table())
    throw InputError(cfg.sourcePath + ":" + std::to_string(n->source().begin.line) +
                     ": '" + prefix + "' must be a table ([" + prefix + "]), got " +
                     tomlTypeName(*n));
  return TomlTable(cfg, n ? n->as_table() : nullptr, prefix,
                   n ? n->source().begin.line : 0);
}

/// [model.rope]: the scaling's own keys are required once its type is.
void readTomlRope(TomlTable &rope, RopeSpec &r) {
  rope.real("theta", r.theta, false);
  rope.choice("type", r.type, parseRopeType, "default, llama3, linear, longrope, yarn", false);
  const bool longrope = r.type == RopeType::longrope, yarn = r.type == RopeType::yarn;
  rope.real("factor", r.factor, r.type != RopeType::standard && !longrope);
  rope.real("low_freq_factor", r.lowFreqFactor, r.type == RopeType::llama3);
  rope.real("high_freq_factor", r.highFreqFactor, r.type == RopeType::llama3);
  rope.integer("original_max_position_embeddings", r.originalMaxPositions,
               r.type == RopeType::llama3 || longrope || yarn);
  const bool betaFast = rope.real("beta_fast", r.betaFast, false);
  const bool betaSlow = rope.real("beta_slow", r.betaSlow, false);
  const bool truncate = rope.boolean("truncate", r.yarnTruncate);
  if (!yarn && (betaFast || betaSlow || truncate))
    rope.fail(betaFast ? "beta_fast" : betaSlow ? "beta_slow" : "truncate",
              "only type yarn reads it; set type = \"yarn\" or leave it out");
  // LongRoPE's lists are its own, and it chooses its divisors from them.
  if (rope.reals("freq_factors", r.freqFactors) && longrope)
    rope.fail("freq_factors", "type longrope divides by short_factors or long_factors (as "
                              "max_seq_len chooses); leave freq_factors out");
  const std::pair<const char *, std::vector<double> *> lists[] = {
      {"short_factors", &r.shortFactors}, {"long_factors", &r.longFactors}};
  for (const auto &[key, list] : lists)
    if (rope.reals(key, *list) && !longrope)
      rope.fail(key, "only type longrope reads it; set type = \"longrope\" or leave it out");
  // YaRN's own attention factor unless the spec gives one.
  if (!rope.real("attention_factor", r.attentionFactor, false) && yarn)
    r.attentionFactor = yarnAttentionFactor(r.factor);
  rope.integer("rotary_dim", r.rotaryDim, false);
  rope.real("local_theta", r.localTheta, false);
}

// Gemma's ways, its defaults where the architecture is gemma3 or gemma2:
// GeGLU, post-norms, embeddings times sqrt(hidden_size), under the sliding
// window every sixth layer global (Gemma 3) or every other (Gemma 2). Any
// architecture may set them, and Gemma 2's soft-capping.
void readTomlGemmaFields(TomlTable &model, ModelSpec &m) {
  const bool gemma = m.gemma();
  if (gemma) m.activation = Activation::gelu_tanh;
  if (m.architecture == Architecture::gpt_oss) m.activation = Activation::swiglu_oai;
  model.choice("hidden_activation", m.activation, parseActivation,
               "silu, gelu_pytorch_tanh, swiglu_oai", false);
  model.real("swiglu_limit", m.swigluLimit, false);
  model.real("swiglu_alpha", m.swigluAlpha, false);
  m.postNorms = gemma;
  model.boolean("post_norms", m.postNorms);
  if (gemma && m.hiddenSize > 0) m.embeddingScale = std::sqrt(double(m.hiddenSize));
  model.real("embedding_scale", m.embeddingScale, false);
  model.real("query_pre_attn_scalar", m.queryPreAttnScalar, false);
  model.real("attn_logit_softcapping", m.attnSoftcap, false);
  model.real("final_logit_softcapping", m.finalSoftcap, false);
  // Gemma 2's and gpt-oss's odd layers read every key, Gemma 3's every sixth.
  const bool mixes = gemma || m.architecture == Architecture::gpt_oss;
  if (!model.integers("full_attention_layers", m.fullAttentionLayers, false) && mixes &&
      m.slidingWindow > 0)
    m.fullAttentionLayers =
        everyNthLayer(m.numLayers, m.architecture == Architecture::gemma3 ? 6 : 2);
}

void readTomlCompile(TomlTable &comp, CompileSettings &c);

} // namespace

ModelConfig parseTomlSpec(const std::string &text, const std::string &path,
                          const WarningSink &warn) {
  ModelConfig cfg;
  cfg.sourcePath = path;
  toml::table root;
  try {
    root = toml::parse(text, path);
  } catch (const toml::parse_error &e) {
    throw InputError(path + ":" + std::to_string(e.source().begin.line) + ":" +
                     std::to_string(e.source().begin.column) + ": malformed TOML: " +
                     std::string(e.description()));
  }

  TomlTable model = subTable(cfg, root, "model", "model");
  if (!model.present())
    throw InputError(path + ": missing the [model] table (see docs/model-spec.md)");
  ModelSpec &m = cfg.model;
  if (!model.string("name", m.name, false))
    m.name = fs::path(path).stem().string();
  model.choice("architecture", m.architecture, parseArchitecture,
               "llama, mistral, qwen2, qwen3, phi3, smollm3, gemma3, gemma2, gpt-oss", true);
  model.integer("hidden_size", m.hiddenSize, true);
  model.integer("intermediate_size", m.intermediateSize, true);
  model.integer("num_layers", m.numLayers, true);
  model.integer("num_heads", m.numHeads, true);
  if (!model.integer("num_kv_heads", m.numKvHeads, false))
    m.numKvHeads = m.numHeads;
  if (model.integer("head_dim", m.headDim, false) && m.headDim <= 0)
    throw InputError(cfg.where("model.head_dim") +
                     "field 'model.head_dim': expected a positive integer, got " +
                     std::to_string(m.headDim) + " (leave it out to use hidden_size / num_heads)");
  model.integer("vocab_size", m.vocabSize, true);
  model.integer("max_position_embeddings", m.maxPositions, true);
  model.integer("sliding_window", m.slidingWindow, false);
  model.real("rms_norm_eps", m.rmsNormEps, true);
  m.tieWordEmbeddings = m.gemma();
  model.boolean("tie_word_embeddings", m.tieWordEmbeddings);
  const bool gptOss = m.architecture == Architecture::gpt_oss;
  m.attentionBias = m.architecture == Architecture::qwen2 || gptOss;
  model.boolean("attention_bias", m.attentionBias);
  m.attentionOutBias = m.attentionSinks = m.expertBias = gptOss;
  model.boolean("attention_output_bias", m.attentionOutBias);
  model.boolean("attention_sinks", m.attentionSinks);
  model.boolean("expert_bias", m.expertBias);
  m.qkNorm = m.architecture == Architecture::qwen3 || m.architecture == Architecture::gemma3;
  model.boolean("qk_norm", m.qkNorm);
  readTomlGemmaFields(model, m);
  model.integer("num_experts", m.numExperts, false);
  model.integer("num_experts_per_tok", m.expertsPerToken, false);
  model.integer("moe_intermediate_size", m.expertIntermediateSize, false);
  model.boolean("norm_topk_prob", m.normTopKProb);
  model.integer("shared_expert_intermediate_size", m.sharedExpertIntermediateSize, false);
  model.boolean("shared_expert_gate", m.sharedExpertGate);
  model.integer("bos_token_id", m.bosTokenId, true);
  model.integers("eos_token_id", m.eosTokenIds, true);
  // SmolLM3 leaves every fourth layer unrotated unless told otherwise.
  if (!model.integers("nope_layers", m.nopeLayers, false) &&
      m.architecture == Architecture::smollm3)
    m.nopeLayers = everyNthLayer(m.numLayers, 4);

  model.allowSubtable("rope");
  TomlTable rope = subTable(cfg, *root["model"].as_table(), "rope", "model.rope");
  readTomlRope(rope, m.rope);

  TomlTable comp = subTable(cfg, root, "compile", "compile");
  readTomlCompile(comp, cfg.compile);

  model.warnUnknown(warn);
  rope.warnUnknown(warn);
  comp.warnUnknown(warn);
  for (auto &&[k, v] : root) {
    std::string key(k.str());
    if (key != "model" && key != "compile")
      warn(path + ":" + std::to_string(k.source().begin.line) + ": unknown key '" + key +
           "' is ignored (the spec has [model], [model.rope] and [compile])");
  }
  return cfg;
}

namespace {
// [compile]: every setting optional.
void readTomlCompile(TomlTable &comp, CompileSettings &c) {
  comp.choice("target", c.target, parseTarget, "cpu, cuda", false);
  comp.choice("weight_dtype", c.weightDtype, parseDType, "f32, bf16, f16, int8, int4, mxfp4",
              false);
  DType experts = c.weightDtype;
  if (comp.choice("expert_dtype", experts, parseDType, "f32, bf16, f16, int8, int4, mxfp4", false))
    c.expertDtype = experts;
  comp.choice("kv_dtype", c.kvDtype, parseDType, "f32, bf16, f16", false);
  comp.integer("max_batch", c.maxBatch, false);
  comp.integer("max_seq_len", c.maxSeqLen, false);
  comp.integer("prefill_chunk", c.prefillChunk, false);
  comp.integer("page_size", c.pageSize, false);
  comp.integer("kv_pages", c.kvPages, false);
  comp.integer("window_kv_pages", c.windowKvPages, false);
  comp.byteSize("memory_budget", c.memoryBudget);
  comp.integer("tensor_parallel", c.tensorParallel, false);
  comp.integer("speculate", c.speculate, false);
  comp.integer("score_rows", c.scoreRows, false);
  comp.integers("decode_copies", c.decodeCopies, false);
  comp.integers("prefill_copies", c.prefillCopies, false);
  comp.integer("l2_prefetch_mib", c.l2PrefetchMib, false);
}
} // namespace

//===----------------------------------------------------------------------===//
// Hugging Face config.json
//===----------------------------------------------------------------------===//

namespace {

const char *jsonTypeName(const nlohmann::json &j) {
  switch (j.type()) {
  case nlohmann::json::value_t::null: return "null";
  case nlohmann::json::value_t::boolean: return "a boolean";
  case nlohmann::json::value_t::string: return "a string";
  case nlohmann::json::value_t::number_float: return "a fractional number";
  case nlohmann::json::value_t::number_integer:
  case nlohmann::json::value_t::number_unsigned: return "an integer";
  case nlohmann::json::value_t::array: return "an array";
  case nlohmann::json::value_t::object: return "an object";
  default: return "an unexpected value";
  }
}

/// Reads fields of a JSON object with messages that name the file and key.
class JsonFields {
public:
  JsonFields(ModelConfig &cfg, const nlohmann::json &obj, std::string prefix)
      : cfg(cfg), obj(obj), prefix(std::move(prefix)) {}

  /// Whether the object has `key`, null or not.
  bool present(const std::string &key) {
    known.insert(key);
    return obj.contains(key);
  }

  const nlohmann::json *get(const std::string &key) {
    known.insert(key);
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return nullptr;
    return &*it;
  }

  [[noreturn]] void fail(const std::string &key, const std::string &msg) {
    throw InputError(cfg.sourcePath + ": field '" + prefix + key + "': " + msg);
  }

  /// A key as the file names it: under this object's own path.
  std::string path(const std::string &key) const { return prefix + key; }

  bool integer(const std::string &key, int64_t &out, bool required) {
    const nlohmann::json *j = get(key);
    if (!j) {
      if (required) fail(key, "missing (expected an integer)");
      return false;
    }
    if (!j->is_number_integer())
      fail(key, std::string("expected an integer, got ") + jsonTypeName(*j));
    if (j->is_number_unsigned() && j->get<uint64_t>() > uint64_t(INT64_MAX))
      fail(key, "integer out of range");
    out = j->get<int64_t>();
    return true;
  }

  bool real(const std::string &key, double &out, bool required) {
    const nlohmann::json *j = get(key);
    if (!j) {
      if (required) fail(key, "missing (expected a number)");
      return false;
    }
    if (!j->is_number()) fail(key, std::string("expected a number, got ") + jsonTypeName(*j));
    out = j->get<double>();
    return true;
  }

  bool boolean(const std::string &key, bool &out) {
    const nlohmann::json *j = get(key);
    if (!j) return false;
    if (!j->is_boolean())
      fail(key, std::string("expected true or false, got ") + jsonTypeName(*j));
    out = j->get<bool>();
    return true;
  }

  bool string(const std::string &key, std::string &out, bool required) {
    const nlohmann::json *j = get(key);
    if (!j) {
      if (required) fail(key, "missing (expected a string)");
      return false;
    }
    if (!j->is_string()) fail(key, std::string("expected a string, got ") + jsonTypeName(*j));
    out = j->get<std::string>();
    return true;
  }

  bool integers(const std::string &key, std::vector<int64_t> &out, bool required) {
    const nlohmann::json *j = get(key);
    if (!j) {
      if (required) fail(key, "missing (expected an integer or a list of integers)");
      return false;
    }
    out.clear();
    if (j->is_number_integer()) {
      if (j->is_number_unsigned() && j->get<uint64_t>() > uint64_t(INT64_MAX))
        fail(key, "integer " + j->dump() + " out of range");
      out.push_back(j->get<int64_t>());
      return true;
    }
    if (!j->is_array())
      fail(key, std::string("expected an integer or a list of integers, got ") +
                    jsonTypeName(*j));
    for (const nlohmann::json &e : *j) {
      if (!e.is_number_integer())
        fail(key, std::string("expected a list of integers, found ") + jsonTypeName(e));
      if (e.is_number_unsigned() && e.get<uint64_t>() > uint64_t(INT64_MAX))
        fail(key, "integer " + e.dump() + " out of range");
      out.push_back(e.get<int64_t>());
    }
    return true;
  }

  bool reals(const std::string &key, std::vector<double> &out, bool required) {
    const nlohmann::json *j = get(key);
    if (!j) {
      if (required) fail(key, "missing (expected a list of numbers)");
      return false;
    }
    if (!j->is_array())
      fail(key, std::string("expected a list of numbers, got ") + jsonTypeName(*j));
    out.clear();
    for (size_t i = 0; i < j->size(); ++i) {
      if (!(*j)[i].is_number())
        fail(key, "expected a list of numbers, found " + std::string(jsonTypeName((*j)[i])) +
                      " at [" + std::to_string(i) + "]");
      out.push_back((*j)[i].get<double>());
    }
    return true;
  }

  /// Keys every Hugging Face config carries that do not change the forward
  /// pass kvplan builds; they draw no warning.
  void ignore(std::initializer_list<const char *> keys) {
    for (const char *k : keys) known.insert(k);
  }

  void warnUnknown(const WarningSink &warn) {
    for (auto it = obj.begin(); it != obj.end(); ++it)
      if (!known.count(it.key()))
        warn(cfg.sourcePath + ": unknown key '" + prefix + it.key() + "' is ignored");
  }

private:
  ModelConfig &cfg;
  const nlohmann::json &obj;
  std::string prefix;
  std::set<std::string> known;
};

// The library's message without its "[json.exception.NAME.ID] " prefix.
std::string jsonDetail(const nlohmann::json::exception &e) {
  const std::string what = e.what();
  const size_t end = what.rfind("] ", what.find(' '));
  return end == std::string::npos ? what : what.substr(end + 2);
}

// A file that is not JSON, or not an object, is reported as such before any
// field is read. The parse tracks the key being read, so that a value the
// library cannot hold (a number beyond a double, 1e999) is an error naming
// that key as written (rope_scaling.factor).
nlohmann::json parseJsonObject(const std::string &text, const std::string &path) {
  using Event = nlohmann::json::parse_event_t;
  std::vector<std::string> keys; // the key being read in each enclosing object
  auto track = [&](int, Event event, nlohmann::json &parsed) {
    if (event == Event::object_start) keys.emplace_back();
    else if (event == Event::object_end && !keys.empty()) keys.pop_back();
    else if (event == Event::key && !keys.empty()) keys.back() = parsed.get<std::string>();
    return true;
  };
  nlohmann::json root;
  try {
    root = nlohmann::json::parse(text, track);
  } catch (const nlohmann::json::parse_error &e) {
    throw InputError(path + ": malformed JSON: " + e.what());
  } catch (const nlohmann::json::exception &e) {
    std::string key;
    for (const std::string &k : keys) key += (key.empty() ? "" : ".") + k;
    throw InputError(path + ": " + (key.empty() ? "" : "field '" + key + "': ") +
                     jsonDetail(e) + ": the value is out of range; write a number a 64-bit "
                                     "float can hold");
  }
  if (!root.is_object())
    throw InputError(path + ": expected a JSON object (a Hugging Face config.json)");
  return root;
}

// The architecture and activation decide whether kvplan can build the model
// at all, so they are read first.
void readHFArchitecture(JsonFields &f, ModelSpec &m, const std::string &path) {
  std::string modelType;
  f.string("model_type", modelType, true);
  // gemma3_text: Gemma3ForCausalLM's (Gemma 3 1B, and the text model of
  // the larger ones). Mixtral's, Qwen2-MoE's and Qwen3-MoE's layers are
  // Mistral's, Qwen2's and Qwen3's with a mixture of experts for the FFN
  // (readHFExperts).
  static const std::map<std::string, std::string> same = {{"gemma3_text", "gemma3"},
                                                          {"mixtral", "mistral"},
                                                          {"qwen2_moe", "qwen2"},
                                                          {"qwen3_moe", "qwen3"},
                                                          {"gpt_oss", "gpt-oss"}};
  const auto alias = same.find(modelType);
  auto arch = parseArchitecture(alias == same.end() ? modelType : alias->second);
  if (!arch || modelType == "gemma3" || modelType == "gpt-oss")
    f.fail("model_type", "'" + modelType + "' is not supported; kvplan compiles llama, "
                                            "mistral, mixtral, qwen2, qwen2_moe, qwen3, "
                                            "qwen3_moe, phi3, smollm3, gemma2, gemma3_text "
                                            "(gemma3 with its text_config) and gpt_oss");
  m.architecture = *arch;
  fs::path p(path);
  m.name = p.filename() == "config.json" && p.has_parent_path()
               ? fs::absolute(p).parent_path().filename().string()
               : p.stem().string();
  // gpt-oss's experts apply their clamped SwiGLU whatever hidden_act says
  // (transformers' GptOssExperts), at swiglu_limit (as its MXFP4 path reads
  // it; 7) and alpha 1.702.
  if (m.architecture == Architecture::gpt_oss) {
    m.activation = Activation::swiglu_oai;
    f.real("swiglu_limit", m.swigluLimit, false);
    f.real("swiglu_alpha", m.swigluAlpha, false);
    f.ignore({"hidden_act"});
    return;
  }
  // Gemma's configs name it hidden_activation (and may carry a hidden_act
  // that transformers' Gemma ignores).
  const char *actKey = f.get("hidden_activation") ? "hidden_activation" : "hidden_act";
  std::string act = m.gemma() ? "gelu_pytorch_tanh" : "silu";
  f.string(actKey, act, false);
  if (std::optional<Activation> a = parseActivation(act)) m.activation = *a;
  else
    f.fail(actKey, "'" + act + "' is not supported; kvplan's gated FFNs take silu "
                   "(SwiGLU) or gelu_pytorch_tanh (GeGLU)");
  if (m.gemma()) f.ignore({"hidden_act"});
}

// Gemma's own fields, with Gemma3TextConfig's and Gemma2Config's defaults:
// post-norms always, q/k norms for Gemma 3, embeddings times
// sqrt(hidden_size), the softmax over sqrt(query_pre_attn_scalar), Gemma
// 3's local layers' RoPE base, Gemma 2's soft-capping (50 and 30 unless
// given; null: none); no bidirectional attention (EmbeddingGemma's).
void readHFGemmaFields(JsonFields &f, ModelSpec &m) {
  if (!m.gemma()) return;
  const bool gemma2 = m.architecture == Architecture::gemma2;
  m.qkNorm = !gemma2;
  m.postNorms = true;
  m.embeddingScale = std::sqrt(double(std::max<int64_t>(m.hiddenSize, 1)));
  m.queryPreAttnScalar = 256;
  f.real("query_pre_attn_scalar", m.queryPreAttnScalar, false);
  if (!gemma2) {
    m.rope.localTheta = 10000;
    f.real("rope_local_base_freq", m.rope.localTheta, false);
  }
  const std::tuple<const char *, double *, double> caps[] = {
      {"attn_logit_softcapping", &m.attnSoftcap, 50.0},
      {"final_logit_softcapping", &m.finalSoftcap, 30.0}};
  for (auto [key, cap, gemma2Default] : caps) {
    *cap = gemma2 && !f.present(key) ? gemma2Default : 0.0; // null: none
    f.real(key, *cap, false);
  }
  bool bidirectional = false;
  f.boolean("use_bidirectional_attention", bidirectional);
  if (bidirectional)
    f.fail("use_bidirectional_attention", "bidirectional attention (an embedding model's) "
                                          "is not supported; kvplan compiles causal models");
  f.ignore({"cache_implementation", "sliding_window_pattern", "_sliding_window_pattern"});
}

// Partial RoPE (Phi-4-mini rotates 3/4 of each head): transformers rotates
// int(head_dim x partial_rotary_factor) leading dimensions of a head, where
// head_dim is the file's, else hidden_size / num_attention_heads.
void readHFPartialRotary(JsonFields &f, ModelSpec &m) {
  double factor = 1;
  if (!f.real("partial_rotary_factor", factor, false) || factor == 1)
    return;
  const int64_t head = m.headDim > 0 ? m.headDim
                       : m.numHeads > 0 ? m.hiddenSize / m.numHeads
                                        : 0;
  const double dims = double(head) * factor;
  std::ostringstream os;
  os << factor;
  if (!(factor > 0 && factor < 1))
    f.fail("partial_rotary_factor", "expected a number above 0 and at most 1, got " + os.str());
  m.rope.rotaryDim = int64_t(dims);
  if (m.rope.rotaryDim < 2 || m.rope.rotaryDim % 2 != 0)
    f.fail("partial_rotary_factor",
           os.str() + " of the head's " + std::to_string(head) + " dimensions is " +
               std::to_string(m.rope.rotaryDim) + "; RoPE rotates pairs, so it must be even "
               "and at least 2");
}

// SmolLM3's NoPE layers as transformers reads them: no_rope_layers, one
// flag a layer (1: RoPE, 0: none), at least num_hidden_layers of them; else
// every no_rope_layer_interval-th layer (default 4) goes without.
void readHFNopeLayers(JsonFields &f, ModelSpec &m) {
  if (m.architecture != Architecture::smollm3) return;
  std::vector<int64_t> flags;
  if (f.integers("no_rope_layers", flags, false)) {
    if (int64_t(flags.size()) < m.numLayers)
      f.fail("no_rope_layers", "has " + std::to_string(flags.size()) + " flags for " +
                                   std::to_string(m.numLayers) + " layers (num_hidden_layers)");
    for (int64_t l = 0; l < m.numLayers; ++l) {
      if (flags[size_t(l)] != 0 && flags[size_t(l)] != 1)
        f.fail("no_rope_layers", "expected 1 (RoPE) or 0 (none) for each layer, got " +
                                     std::to_string(flags[size_t(l)]) + " at [" +
                                     std::to_string(l) + "]");
      if (flags[size_t(l)] == 0) m.nopeLayers.push_back(l);
    }
    f.ignore({"no_rope_layer_interval"});
    return;
  }
  int64_t interval = 4;
  if (f.integer("no_rope_layer_interval", interval, false) && interval <= 0)
    f.fail("no_rope_layer_interval", "expected a positive integer");
  m.nopeLayers = everyNthLayer(m.numLayers, interval);
}

// A mixture of experts, as transformers' MixtralConfig (num_local_experts,
// always renormalizing the chosen experts' probabilities, each expert
// intermediate_size wide), Qwen3MoeConfig (num_experts,
// moe_intermediate_size, norm_topk_prob, default false) and Qwen2MoeConfig
// (Qwen3MoeConfig's and a shared expert, shared_expert_intermediate_size
// wide, always gated) read it; Qwen-MoE's dense layers (mlp_only_layers,
// decoder_sparse_step) are refused.
void readHFExperts(JsonFields &f, ModelConfig &cfg, const std::string &modelType) {
  ModelSpec &m = cfg.model;
  // gpt-oss's are Mixtral's keys (every expert intermediate_size wide, the
  // chosen experts' weights the softmax of their logits alone), with biases.
  const bool mixtral = modelType == "mixtral" || modelType == "gpt_oss";
  if (!mixtral && modelType != "qwen3_moe" && modelType != "qwen2_moe") return;
  if (modelType == "gpt_oss") {
    m.expertBias = true;
    f.ignore({"experts_per_token", "initial_context_length"}); // OpenAI's own names
  }
  const char *count = mixtral ? "num_local_experts" : "num_experts";
  cfg.fieldNames["model.num_experts"] = count;
  cfg.fieldNames["model.num_experts_per_tok"] = "num_experts_per_tok";
  f.integer(count, m.numExperts, true);
  f.integer("num_experts_per_tok", m.expertsPerToken, true);
  f.ignore({"output_router_logits", "router_aux_loss_coef", "router_jitter_noise"});
  if (mixtral) return;
  cfg.fieldNames["model.moe_intermediate_size"] = "moe_intermediate_size";
  f.integer("moe_intermediate_size", m.expertIntermediateSize, true);
  m.normTopKProb = false;
  f.boolean("norm_topk_prob", m.normTopKProb);
  if (modelType == "qwen2_moe") {
    cfg.fieldNames["model.shared_expert_intermediate_size"] = "shared_expert_intermediate_size";
    f.integer("shared_expert_intermediate_size", m.sharedExpertIntermediateSize, true);
    m.sharedExpertGate = true;
  }
  int64_t step = 1;
  if (f.integer("decoder_sparse_step", step, false) && step != 1)
    f.fail("decoder_sparse_step", "is " + std::to_string(step) + ": only every " +
                                      std::to_string(step) + "th layer would be sparse, and "
                                      "kvplan builds a mixture of experts in every layer (1)");
  std::vector<int64_t> dense;
  if (f.integers("mlp_only_layers", dense, false) && !dense.empty())
    f.fail("mlp_only_layers", "lists layers with a dense FFN among the experts' layers, which "
                              "kvplan does not build (every layer has the experts)");
}

// Sizes, biases and special tokens; absent optional keys default as in
// transformers (num_key_value_heads = num_attention_heads, biases for qwen2,
// q/k norms for qwen3).
void readHFModelFields(JsonFields &f, ModelSpec &m) {
  f.integer("hidden_size", m.hiddenSize, true);
  f.integer("intermediate_size", m.intermediateSize, true);
  f.integer("num_hidden_layers", m.numLayers, true);
  f.integer("num_attention_heads", m.numHeads, true);
  if (!f.integer("num_key_value_heads", m.numKvHeads, false))
    m.numKvHeads = m.numHeads;
  f.integer("head_dim", m.headDim, false);
  f.integer("vocab_size", m.vocabSize, true);
  f.integer("max_position_embeddings", m.maxPositions, true);
  f.real("rms_norm_eps", m.rmsNormEps, true);
  f.real("rope_theta", m.rope.theta, false);
  m.tieWordEmbeddings = m.gemma(); // Gemma3TextConfig's and Gemma2Config's default
  f.boolean("tie_word_embeddings", m.tieWordEmbeddings);
  const bool gptOss = m.architecture == Architecture::gpt_oss;
  m.attentionBias = m.architecture == Architecture::qwen2 || gptOss;
  f.boolean("attention_bias", m.attentionBias);
  // gpt-oss's attention_bias covers the output projection too, and every
  // layer has its sinks.
  m.attentionOutBias = gptOss && m.attentionBias;
  m.attentionSinks = gptOss;
  m.qkNorm = m.architecture == Architecture::qwen3;
  bool mlpBias = false;
  f.boolean("mlp_bias", mlpBias);
  if (mlpBias)
    f.fail("mlp_bias", "biases on the FFN projections are not supported");
  // SmolLM3's config.json has none (null), nor has gpt-oss's: their
  // tokenizers add no BOS.
  if (!f.integer("bos_token_id", m.bosTokenId,
                 m.architecture != Architecture::smollm3 && !gptOss))
    m.bosTokenId = -1;
  f.integers("eos_token_id", m.eosTokenIds, true);
  readHFPartialRotary(f, m);
  readHFNopeLayers(f, m);
  readHFGemmaFields(f, m);
}

// A checkpoint quantized by its publisher (quantization_config): gpt-oss's
// MXFP4 experts, as OpenAI publishes the model, compile to mxfp4 as they
// are (expert_dtype), and the other matrices (bf16) to int8, as llama.cpp's
// GGUFs hold them in Q8_0; --dtype int8 alone reads the experts exactly
// into int8 too (each block's doubled E2M1 codes and its power-of-two
// scale). Other methods, and MXFP4 on another model, are refused.
void readHFQuantization(JsonFields &f, ModelConfig &cfg) {
  const nlohmann::json *q = f.get("quantization_config");
  if (!q) return;
  const std::string method =
      q->is_object() && q->contains("quant_method") && (*q)["quant_method"].is_string()
          ? (*q)["quant_method"].get<std::string>()
          : "";
  if (method == "mxfp4" && cfg.model.architecture == Architecture::gpt_oss) {
    cfg.compile.weightDtype = DType::i8;
    cfg.compile.expertDtype = DType::mxfp4;
    return;
  }
  f.fail("quantization_config",
         "quantization method '" + method + "' is not supported" +
             (method == "mxfp4" ? " but for gpt-oss's experts" : "") +
             "; kvplan reads float checkpoints (and quantizes them itself: --dtype int8 or "
             "int4)");
}

// Which layers slide, as transformers decides it: `layer_types` where the
// file lists them; else for Gemma 3 all but every sliding_window_pattern-th
// (6); else for Qwen2, Qwen3 and SmolLM3 (which record a window and disable
// it with use_sliding_window) the layers from max_window_layers up; else,
// for Mistral and Phi-3, every layer. Llama's attention has no window.
std::vector<bool> hfSlidingLayers(JsonFields &f, const ModelSpec &m, bool qwen) {
  const int64_t layers = std::max<int64_t>(m.numLayers, 0); // checked later
  std::vector<bool> slides(size_t(layers), true);
  int64_t fromLayer = 28; // transformers' default for Qwen2 and Qwen3
  f.integer("max_window_layers", fromLayer, false);
  int64_t pattern = 6; // Gemma3TextConfig's
  const char *patternKey =
      f.get("sliding_window_pattern") ? "sliding_window_pattern" : "_sliding_window_pattern";
  if (m.architecture == Architecture::gemma3 && f.integer(patternKey, pattern, false) &&
      pattern <= 0)
    f.fail(patternKey, "expected a positive integer (every such layer is global)");
  const bool everyOther = m.architecture == Architecture::gemma2 ||
                          m.architecture == Architecture::gpt_oss;
  if (everyOther) pattern = 2; // even layers slide
  for (int64_t l = 0; l < layers; ++l) {
    if (m.gemma() || everyOther) slides[size_t(l)] = (l + 1) % pattern != 0;
    else if (qwen) slides[size_t(l)] = l >= fromLayer;
  }
  const nlohmann::json *types = f.get("layer_types");
  if (!types) return slides;
  if (!types->is_array() || int64_t(types->size()) != m.numLayers)
    f.fail("layer_types", "expected a list of num_hidden_layers (" +
                              std::to_string(m.numLayers) + ") layer types");
  for (size_t l = 0; l < types->size(); ++l) {
    const nlohmann::json &t = (*types)[l];
    if (t != "sliding_attention" && t != "full_attention")
      f.fail("layer_types", "expected \"full_attention\" or \"sliding_attention\", got " +
                                t.dump() + " at [" + std::to_string(l) + "]");
    slides[l] = t == "sliding_attention";
  }
  return slides;
}

// The window and the layers under it; those that read every key besides
// become full_attention_layers.
void readHFSlidingWindow(JsonFields &f, ModelSpec &m, const WarningSink &warn) {
  const bool qwen = m.architecture == Architecture::qwen2 ||
                    m.architecture == Architecture::qwen3 ||
                    m.architecture == Architecture::smollm3;
  // Absent, Gemma's configs' default is 4096 (null: none).
  int64_t window = m.gemma() && !f.present("sliding_window") ? 4096 : 0;
  f.integer("sliding_window", window, false);
  bool useSliding = !qwen;
  f.boolean("use_sliding_window", useSliding);
  if (!useSliding) window = 0;
  if (window < 0) f.fail("sliding_window", "expected a positive window or null");
  const std::vector<bool> slides = hfSlidingLayers(f, m, qwen);
  const int64_t sliding = std::count(slides.begin(), slides.end(), true);
  // transformers' layers of either type attend to every key without a window.
  if (window == 0 || sliding == 0) {
    m.slidingWindow = 0;
    return;
  }
  if (m.architecture == Architecture::llama) {
    warn("sliding_window " + std::to_string(window) +
         " ignored: transformers' Llama attends to every earlier key (model_type mistral "
         "applies the window)");
    return;
  }
  m.slidingWindow = window;
  for (size_t l = 0; l < slides.size(); ++l)
    if (!slides[l]) m.fullAttentionLayers.push_back(int64_t(l));
}

// LongRoPE (Phi-3, Phi-3.5): short and long factors, switched at the
// pretraining context. As transformers reads it: that context is
// original_max_position_embeddings (Phi-3 writes it beside rope_scaling),
// else max_position_embeddings; the factor is rope_scaling.factor, else
// max_position_embeddings over that context; the attention factor, unless
// given, is sqrt(1 + ln(factor) / ln(that context)), 1 for a factor up to 1.
void readHFLongRope(JsonFields &f, JsonFields &r, ModelSpec &m) {
  m.rope.type = RopeType::longrope;
  r.reals("short_factor", m.rope.shortFactors, true);
  r.reals("long_factor", m.rope.longFactors, true);
  for (const char *key : {"short_mscale", "long_mscale"})
    if (r.get(key))
      r.fail(key, "per-list attention factors (Phi-3.5-MoE's) are not supported; kvplan "
                  "reads LongRoPE with one attention_factor");
  const char *originalKey = "original_max_position_embeddings";
  m.rope.originalMaxPositions = m.maxPositions;
  const bool top = f.integer(originalKey, m.rope.originalMaxPositions, false);
  if (top || r.integer(originalKey, m.rope.originalMaxPositions, false)) {
    if (m.rope.originalMaxPositions <= 0)
      (top ? f : r).fail(originalKey, "expected a positive integer");
  }
  double factor = double(m.maxPositions) / double(m.rope.originalMaxPositions);
  r.real("factor", factor, false);
  if (!(factor > 0) || !std::isfinite(factor))
    r.fail("factor", "expected a positive number");
  if (!r.real("attention_factor", m.rope.attentionFactor, false))
    m.rope.attentionFactor =
        factor <= 1 ? 1.0
                    : std::sqrt(1 + std::log(factor) /
                                        std::log(double(m.rope.originalMaxPositions)));
}

// YaRN (Qwen's long contexts, gpt-oss, DeepSeek) as transformers reads it:
// the pretraining context is rope_scaling.original_max_position_embeddings,
// else max_position_embeddings; beta_fast and beta_slow 32 and 1 where
// absent, null or 0; truncate true where absent; the attention factor, unless
// given, 0.1 ln(factor) + 1, or DeepSeek's ratio of two such where mscale and
// mscale_all_dim are both given. The factor is taken as given, as llama.cpp,
// vLLM and transformers since its fix for #38224 take it (before, transformers
// replaced it by max_position_embeddings over the pretraining context).
void readHFYarn(JsonFields &r, ModelSpec &m) {
  m.rope.type = RopeType::yarn;
  r.real("factor", m.rope.factor, true);
  if (!(m.rope.factor > 0) || !std::isfinite(m.rope.factor))
    r.fail("factor", "expected a positive number");
  m.rope.originalMaxPositions = m.maxPositions;
  if (r.integer("original_max_position_embeddings", m.rope.originalMaxPositions, false) &&
      m.rope.originalMaxPositions <= 0)
    r.fail("original_max_position_embeddings", "expected a positive integer");
  double beta = 0;
  if (r.real("beta_fast", beta, false) && beta != 0) m.rope.betaFast = beta;
  if (r.real("beta_slow", beta, false) && beta != 0) m.rope.betaSlow = beta;
  r.boolean("truncate", m.rope.yarnTruncate);
  double mscale = 0, mscaleAllDim = 0;
  r.real("mscale", mscale, false);
  r.real("mscale_all_dim", mscaleAllDim, false);
  if (!r.real("attention_factor", m.rope.attentionFactor, false))
    m.rope.attentionFactor = mscale != 0 && mscaleAllDim != 0
                                 ? yarnAttentionFactor(m.rope.factor, mscale, mscaleAllDim)
                                 : yarnAttentionFactor(m.rope.factor);
}

// Qwen2.5-1M's dual chunk attention, which kvplan does not implement: within
// one chunk (chunk_size tokens) it is full attention, the model's own, so
// the context is held to that, with a warning; past it, it is not.
void readHFDualChunk(JsonFields &f, ModelConfig &cfg, const WarningSink &warn) {
  const nlohmann::json *d = f.get("dual_chunk_attention_config");
  if (!d) return;
  if (!d->is_object())
    f.fail("dual_chunk_attention_config", std::string("expected an object, got ") +
                                              jsonTypeName(*d));
  JsonFields c(cfg, *d, f.path("dual_chunk_attention_config."));
  int64_t chunk = 0;
  c.integer("chunk_size", chunk, true);
  if (chunk <= 0) c.fail("chunk_size", "expected a positive integer");
  c.ignore({"local_size", "original_max_position_embeddings"});
  c.warnUnknown(warn);
  ModelSpec &m = cfg.model;
  if (chunk >= m.maxPositions) return;
  warn(cfg.sourcePath + ": dual chunk attention (" + c.path("chunk_size") + " " +
       std::to_string(chunk) + ") is not implemented; kvplan runs full attention, which is "
       "the model's own within one chunk, so its context is held to " + withCommas(chunk) +
       " tokens of max_position_embeddings' " + withCommas(m.maxPositions));
  m.maxPositions = chunk;
}

// One RoPE object: rope_scaling, or transformers v5's rope_parameters (whose
// rope_type "default" is no scaling, and which carries rope_theta and may
// carry partial_rotary_factor). Its unknown keys are warned about.
void readHFRopeObject(JsonFields &f, JsonFields &r, ModelConfig &cfg, bool parameters,
                      const WarningSink &warn) {
  ModelSpec &m = cfg.model;
  std::string type = "default";
  if (!r.string("rope_type", type, false) && !r.string("type", type, false) && !parameters)
    r.fail("rope_type", "missing (expected \"llama3\", \"linear\", \"longrope\" or \"yarn\")");
  r.ignore({"type", "rope_type"});
  if (parameters) {
    r.real("rope_theta", m.rope.theta, false);
    if (r.present("partial_rotary_factor")) readHFPartialRotary(r, m);
  }
  if (type == "default") {
  } else if (type == "longrope" || type == "su") { // "su": Phi-3's first name for it
    readHFLongRope(f, r, m);
  } else if (type == "yarn") {
    readHFYarn(r, m);
  } else if (type == "llama3" || type == "linear") {
    m.rope.type = *parseRopeType(type);
    r.real("factor", m.rope.factor, true);
    if (m.rope.type == RopeType::llama3) {
      r.real("low_freq_factor", m.rope.lowFreqFactor, true);
      r.real("high_freq_factor", m.rope.highFreqFactor, true);
      r.integer("original_max_position_embeddings", m.rope.originalMaxPositions, true);
    }
  } else {
    r.fail("rope_type", "'" + type + "' scaling is not supported; kvplan implements llama3, "
                                     "linear, longrope and yarn scaling");
  }
  r.warnUnknown(warn);
}

// Messages about RoPE fields name them under `prefix` (rope_parameters.)
// instead of rope_scaling. and rope_theta.
void renameRopeFields(ModelConfig &cfg, const std::string &prefix) {
  for (auto &[field, key] : cfg.fieldNames) {
    const size_t at = key.find("rope_scaling.");
    if (at != std::string::npos) key = prefix + key.substr(at + 13);
    else if (field == "model.rope.theta") key = prefix + "rope_theta";
  }
}

// rope_parameters by layer type: full_attention the model's RoPE, and
// sliding_attention the sliding-window layers' own base, unscaled (Gemma
// 3's; any other model's must be full_attention's).
void readHFRopeLayerTypes(JsonFields &f, JsonFields &top, const nlohmann::json &p,
                          ModelConfig &cfg, const WarningSink &warn) {
  for (auto it = p.begin(); it != p.end(); ++it)
    if (it.key() != "full_attention" && it.key() != "sliding_attention")
      top.fail(it.key(), "is not a layer type kvplan knows (full_attention, "
                         "sliding_attention)");
  const nlohmann::json *full = top.get("full_attention");
  if (!full || !full->is_object())
    top.fail("full_attention", "expected an object (the global layers' RoPE)");
  renameRopeFields(cfg, top.path("full_attention."));
  JsonFields global(cfg, *full, top.path("full_attention."));
  readHFRopeObject(f, global, cfg, true, warn);
  const nlohmann::json *sliding = top.get("sliding_attention");
  if (!sliding) return;
  if (!sliding->is_object()) top.fail("sliding_attention", "expected an object");
  JsonFields local(cfg, *sliding, top.path("sliding_attention."));
  std::string type = "default";
  if (local.string("rope_type", type, false) && type != "default")
    local.fail("rope_type", "'" + type + "': kvplan rotates the sliding-window layers on "
                            "their own base unscaled (rope_type default), as Gemma 3 does");
  double theta = cfg.model.rope.theta;
  local.real("rope_theta", theta, false);
  if (cfg.model.architecture == Architecture::gemma3) {
    cfg.model.rope.localTheta = theta;
    cfg.fieldNames["model.rope.local_theta"] = local.path("rope_theta");
  } else if (theta != cfg.model.rope.theta) {
    local.fail("rope_theta", "differs from full_attention's; only Gemma 3's sliding-window "
                             "layers rotate on a base of their own");
  }
  local.warnUnknown(warn);
}

// transformers v5's rope_parameters, in place of rope_theta and rope_scaling:
// one object, or one a layer type. A file may keep rope_theta beside it
// (remote code's configs do), and then they must agree; rope_scaling beside
// it is one scaling too many.
void readHFRopeParameters(JsonFields &f, const nlohmann::json &p, ModelConfig &cfg,
                          const WarningSink &warn) {
  if (f.get("rope_scaling"))
    f.fail("rope_scaling", "is given beside rope_parameters, transformers v5's form of the "
                           "same; keep one of them");
  const double theta = cfg.model.rope.theta;
  JsonFields top(cfg, p, f.path("rope_parameters."));
  if (p.contains("full_attention") || p.contains("sliding_attention")) {
    readHFRopeLayerTypes(f, top, p, cfg, warn);
  } else {
    renameRopeFields(cfg, top.path(""));
    readHFRopeObject(f, top, cfg, true, warn);
  }
  if (f.get("rope_theta") && cfg.model.rope.theta != theta)
    f.fail("rope_theta", "differs from rope_parameters' rope_theta; keep one of them");
}

// rope_scaling is a nested object with its own unknown-key warnings; llama3,
// linear, longrope and yarn scaling are implemented. transformers v5 writes
// rope_parameters instead.
void readHFRopeScaling(JsonFields &f, ModelConfig &cfg, const WarningSink &warn) {
  f.ignore({"original_max_position_embeddings"}); // LongRoPE's; no other type reads it
  if (const nlohmann::json *p = f.get("rope_parameters")) {
    if (!p->is_object())
      f.fail("rope_parameters", std::string("expected an object, got ") + jsonTypeName(*p));
    readHFRopeParameters(f, *p, cfg, warn);
    return;
  }
  if (const nlohmann::json *rs = f.get("rope_scaling")) {
    if (!rs->is_object())
      f.fail("rope_scaling", std::string("expected an object or null, got ") + jsonTypeName(*rs));
    JsonFields r(cfg, *rs, f.path("rope_scaling."));
    readHFRopeObject(f, r, cfg, false, warn);
  }
}

// torch_dtype (dtype since transformers 4.56) only suggests the weight type;
// one kvplan cannot compile is a warning, not an error, and leaves f32.
void readHFTorchDtype(JsonFields &f, ModelConfig &cfg, const std::string &path,
                      const WarningSink &warn) {
  std::string torchDtype;
  const char *key = f.present("torch_dtype") ? "torch_dtype" : "dtype";
  if (f.string(key, torchDtype, false)) {
    if (auto d = parseDType(torchDtype); d && isFloatDType(*d)) {
      cfg.compile.weightDtype = *d;
    } else {
      warn(path + ": " + key + " '" + torchDtype + "' is not a weight type kvplan compiles; "
                  "using f32");
    }
  }
}

// kvplan's field paths under the keys a config.json writes, for messages
// from validate(); the others (bos_token_id, ...) are the same.
const std::map<std::string, std::string> &hfFieldNames() {
  static const std::map<std::string, std::string> names = {
      {"model.hidden_size", "hidden_size"},
      {"model.intermediate_size", "intermediate_size"},
      {"model.num_layers", "num_hidden_layers"},
      {"model.num_heads", "num_attention_heads"},
      {"model.num_kv_heads", "num_key_value_heads"},
      {"model.head_dim", "head_dim"},
      {"model.vocab_size", "vocab_size"},
      {"model.max_position_embeddings", "max_position_embeddings"},
      {"model.rms_norm_eps", "rms_norm_eps"},
      {"model.rope.theta", "rope_theta"},
      {"model.rope.factor", "rope_scaling.factor"},
      {"model.rope.low_freq_factor", "rope_scaling.low_freq_factor"},
      {"model.rope.high_freq_factor", "rope_scaling.high_freq_factor"},
      {"model.rope.original_max_position_embeddings",
       "rope_scaling.original_max_position_embeddings"},
      {"model.rope.short_factors", "rope_scaling.short_factor"},
      {"model.rope.long_factors", "rope_scaling.long_factor"},
      {"model.rope.attention_factor", "rope_scaling.attention_factor"},
      {"model.rope.beta_fast", "rope_scaling.beta_fast"},
      {"model.rope.beta_slow", "rope_scaling.beta_slow"},
      {"model.rope.rotary_dim", "partial_rotary_factor"},
      {"model.nope_layers", "no_rope_layers"},
      {"model.full_attention_layers", "layer_types"},
      {"model.rope.local_theta", "rope_local_base_freq"},
      {"model.query_pre_attn_scalar", "query_pre_attn_scalar"},
      {"model.attn_logit_softcapping", "attn_logit_softcapping"},
      {"model.final_logit_softcapping", "final_logit_softcapping"},
      {"model.bos_token_id", "bos_token_id"},
      {"model.eos_token_id", "eos_token_id"},
      {"model.sliding_window", "sliding_window"},
      {"model.tie_word_embeddings", "tie_word_embeddings"},
  };
  return names;
}

/// Gemma 3 4B and up (Gemma3ForConditionalGeneration, model_type gemma3):
/// the text model's config is its text_config, which lists only what
/// differs from Gemma3TextConfig's defaults (transformers'), with the end
/// ids and the weights' type at the top. Null where `root` is another
/// model's.
std::optional<nlohmann::json> gemma3TextConfig(const nlohmann::json &root) {
  const auto type = root.find("model_type"), text = root.find("text_config");
  if (type == root.end() || *type != "gemma3" || text == root.end() || !text->is_object())
    return std::nullopt;
  nlohmann::json c = {
      {"model_type", "gemma3_text"}, {"vocab_size", 262208}, {"hidden_size", 2304},
      {"intermediate_size", 9216}, {"num_hidden_layers", 26}, {"num_attention_heads", 8},
      {"num_key_value_heads", 4}, {"head_dim", 256}, {"max_position_embeddings", 131072},
      {"rms_norm_eps", 1e-6}, {"bos_token_id", 2}, {"eos_token_id", 1},
      {"rope_theta", 1000000.0}, {"sliding_window", 4096}};
  for (const char *key : {"eos_token_id", "torch_dtype", "bos_token_id"})
    if (root.contains(key)) c[key] = root[key];
  for (auto it = text->begin(); it != text->end(); ++it)
    if (it.key() != "model_type") c[it.key()] = it.value();
  return c;
}

} // namespace

ModelConfig parseHFConfig(const std::string &text, const std::string &path,
                          const WarningSink &warn) {
  ModelConfig cfg;
  cfg.sourcePath = path;
  cfg.fieldNames = hfFieldNames();
  nlohmann::json root = parseJsonObject(text, path);
  // A multimodal Gemma 3's text model: its fields named under text_config.
  std::string prefix;
  if (std::optional<nlohmann::json> gemma = gemma3TextConfig(root)) {
    root = std::move(*gemma);
    prefix = "text_config.";
    for (auto &[field, key] : cfg.fieldNames) key = prefix + key;
  }

  JsonFields f(cfg, root, prefix);
  try {
    readHFArchitecture(f, cfg.model, path);
    readHFModelFields(f, cfg.model);
    readHFExperts(f, cfg, root.at("model_type").get<std::string>());
    readHFSlidingWindow(f, cfg.model, warn);
    readHFRopeScaling(f, cfg, warn);
    readHFDualChunk(f, cfg, warn);
    readHFTorchDtype(f, cfg, path, warn);
    readHFQuantization(f, cfg);
  } catch (const nlohmann::json::exception &e) {
    // A value of a JSON type that no check above caught: still the file's
    // error, never an internal one.
    throw InputError(path + ": unexpected config.json content: " + jsonDetail(e));
  }
  f.ignore({"architectures", "transformers_version", "initializer_range", "use_cache",
            "pretraining_tp", "attention_dropout", "pad_token_id", "_name_or_path",
            "model_type", "torch_dtype", "unsloth_fixed", "is_llama_config", "rope_interleaved",
            "dtype", "embd_pdrop", "resid_pdrop", "auto_map"});
  f.warnUnknown(warn);
  return cfg;
}

void addGenerationEndIds(ModelConfig &cfg, const std::string &text, const std::string &path) {
  const nlohmann::json root = parseJsonObject(text, path);
  auto where = [&](const std::string &msg) {
    return InputError(path + ": field 'eos_token_id': " + msg);
  };
  const auto it = root.find("eos_token_id");
  if (it == root.end() || it->is_null())
    return;
  const nlohmann::json ids = it->is_array() ? *it : nlohmann::json::array({*it});
  for (const nlohmann::json &id : ids) {
    if (!id.is_number_integer())
      throw where(std::string("expected a token id or a list of them, found ") +
                  jsonTypeName(id));
    const int64_t v = id.is_number_unsigned() && id.get<uint64_t>() > uint64_t(INT64_MAX)
                          ? -1
                          : id.get<int64_t>();
    if (v < 0 || (cfg.model.vocabSize > 0 && v >= cfg.model.vocabSize)) // else validate()'s
      throw where("token " + id.dump() + " is outside the vocabulary [0, " +
                  std::to_string(cfg.model.vocabSize) + ") of the config.json beside it");
    std::vector<int64_t> &eos = cfg.model.eosTokenIds;
    if (std::find(eos.begin(), eos.end(), v) == eos.end())
      eos.push_back(v);
  }
}

//===----------------------------------------------------------------------===//
// Files
//===----------------------------------------------------------------------===//

static std::string readText(const fs::path &p) {
  std::ifstream in(p, std::ios::binary);
  if (!in)
    throw InputError(p.string() + ": cannot open the model file (" +
                     (fs::exists(p) ? "permission denied or not a regular file"
                                    : "no such file") + ")");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

ModelConfig loadModelConfig(const std::string &path, const SettingOverrides &o,
                            const WarningSink &warn) {
  fs::path p(path);
  if (fs::is_directory(p)) {
    if (!fs::exists(p / "config.json"))
      throw InputError(path + ": directory holds no config.json (expected a Hugging Face "
                              "model directory)");
    p /= "config.json";
  }
  std::string ext = p.extension().string();
  ModelConfig cfg;
  if (isCheckpointFile(p.string())) {
    cfg = readCheckpointConfig(p.string());
    return applyAndValidate(std::move(cfg), o);
  }
  std::string text = readText(p);
  if (ext == ".toml") {
    cfg = parseTomlSpec(text, p.string(), warn);
  } else if (ext == ".json") {
    cfg = parseHFConfig(text, p.string(), warn);
    const fs::path generation = p.parent_path() / "generation_config.json";
    if (fs::exists(generation))
      addGenerationEndIds(cfg, readText(generation), generation.string());
  } else
    throw InputError(p.string() + ": unknown model format '" + ext +
                     "'; expected a .toml spec, a config.json (or a directory holding one), a "
                     "llama2.c .bin or a .gguf");
  return applyAndValidate(std::move(cfg), o);
}

namespace {
// --yarn: YaRN over a model whose RoPE is unscaled, with its defaults (the
// betas 32 and 1, its attention factor); the factor's messages name the flag.
void applyYarn(ModelConfig &cfg, const SettingOverrides::Yarn &y) {
  RopeSpec &r = cfg.model.rope;
  const std::string scaled = r.type != RopeType::standard
                                 ? std::string(ropeTypeName(r.type)) + " scaling"
                             : !r.freqFactors.empty() ? "per-pair factors"
                             : r.attentionFactor != 1 ? "an attention factor"
                                                      : "";
  if (!scaled.empty())
    throw InputError(cfg.where("model.rope.type") + "--yarn: the model's RoPE is already "
                     "scaled (" + scaled + "); YaRN applies to an unscaled one, so leave "
                     "--yarn out");
  r.type = RopeType::yarn;
  r.factor = y.factor;
  r.originalMaxPositions = y.original > 0 ? y.original : cfg.model.maxPositions;
  r.attentionFactor = yarnAttentionFactor(y.factor);
  for (const char *field : {"model.rope.factor", "model.rope.original_max_position_embeddings"}) {
    cfg.fieldLines.erase(field);
    cfg.fieldNames[field] = "--yarn";
  }
}
} // namespace

ModelConfig applyAndValidate(ModelConfig cfg, const SettingOverrides &o) {
  auto set = [&](const char *field) {
    cfg.given.insert(field);
    cfg.fieldLines.erase(field); // the value no longer comes from the file
  };
  if (o.target) { cfg.compile.target = *o.target; set("compile.target"); }
  if (o.weightDtype) { cfg.compile.weightDtype = *o.weightDtype; set("compile.weight_dtype"); }
  if (o.expertDtype) {
    cfg.compile.expertDtype = *o.expertDtype;
    set("compile.expert_dtype");
    cfg.fieldNames["compile.expert_dtype"] = "--expert-dtype";
  } else if (o.weightDtype && !cfg.given.count("compile.expert_dtype")) {
    // A reader's default for the experts (a GGUF's MXFP4 ones) yields to
    // --dtype, which then names every matrix's type.
    cfg.compile.expertDtype.reset();
  }
  // Messages about a setting a flag gave name the flag.
  auto flag = [&](const char *field, const char *name) {
    set(field);
    cfg.fieldNames[field] = name;
  };
  if (o.maxBatch) {
    cfg.compile.maxBatch = *o.maxBatch;
    flag("compile.max_batch", "--max-batch");
  }
  if (o.maxSeqLen) {
    cfg.compile.maxSeqLen = *o.maxSeqLen;
    flag("compile.max_seq_len", "--max-seq");
  }
  if (o.prefillChunk) {
    cfg.compile.prefillChunk = *o.prefillChunk;
    flag("compile.prefill_chunk", "--prefill-chunk");
  }
  if (o.pageSize) { cfg.compile.pageSize = *o.pageSize; flag("compile.page_size", "--page-size"); }
  if (o.kvPages) { cfg.compile.kvPages = *o.kvPages; flag("compile.kv_pages", "--kv-pages"); }
  if (o.windowKvPages) {
    cfg.compile.windowKvPages = *o.windowKvPages;
    flag("compile.window_kv_pages", "--window-kv-pages");
  }
  if (o.memoryBudget) {
    cfg.compile.memoryBudget = *o.memoryBudget;
    flag("compile.memory_budget", "--memory-budget");
  }
  if (o.tensorParallel) {
    cfg.compile.tensorParallel = *o.tensorParallel;
    set("compile.tensor_parallel");
    cfg.fieldNames["compile.tensor_parallel"] = "--tensor-parallel"; // messages name the flag
  }
  if (o.speculate) {
    cfg.compile.speculate = *o.speculate;
    set("compile.speculate");
    cfg.fieldNames["compile.speculate"] = "--speculate"; // messages name the flag
  }
  if (o.scoreRows) {
    cfg.compile.scoreRows = *o.scoreRows;
    set("compile.score_rows");
    cfg.fieldNames["compile.score_rows"] = "--score-rows";
  }
  if (o.decodeCopies) {
    cfg.compile.decodeCopies = *o.decodeCopies;
    set("compile.decode_copies");
    cfg.fieldNames["compile.decode_copies"] = "--decode-copies";
  }
  if (o.prefillCopies) {
    cfg.compile.prefillCopies = *o.prefillCopies;
    set("compile.prefill_copies");
    cfg.fieldNames["compile.prefill_copies"] = "--prefill-copies";
  }
  if (o.l2PrefetchMib) {
    cfg.compile.l2PrefetchMib = *o.l2PrefetchMib;
    set("compile.l2_prefetch_mib");
    cfg.fieldNames["compile.l2_prefetch_mib"] = "--l2-prefetch";
  }
  if (o.yarn) applyYarn(cfg, *o.yarn);
  validate(cfg);
  return cfg;
}

} // namespace kvplan
