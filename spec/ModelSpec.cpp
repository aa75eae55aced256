// Model spec: names of enums, the weight table, exact sizes, validation and
// the JSON form stored in artifacts.
#include "spec/ModelSpec.h"
#include "support/Align.h"
#include "support/Format.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

namespace kvplan {

const char *architectureName(Architecture a) {
  switch (a) {
  case Architecture::llama: return "llama";
  case Architecture::mistral: return "mistral";
  case Architecture::qwen2: return "qwen2";
  case Architecture::qwen3: return "qwen3";
  case Architecture::phi3: return "phi3";
  case Architecture::smollm3: return "smollm3";
  case Architecture::gemma3: return "gemma3";
  case Architecture::gemma2: return "gemma2";
  case Architecture::gpt_oss: return "gpt-oss";
  }
  return "?";
}

std::optional<Architecture> parseArchitecture(const std::string &s) {
  if (s == "llama") return Architecture::llama;
  if (s == "mistral") return Architecture::mistral;
  if (s == "qwen2") return Architecture::qwen2;
  if (s == "qwen3") return Architecture::qwen3;
  if (s == "phi3") return Architecture::phi3;
  if (s == "smollm3") return Architecture::smollm3;
  if (s == "gemma3") return Architecture::gemma3;
  if (s == "gemma2") return Architecture::gemma2;
  if (s == "gpt-oss") return Architecture::gpt_oss;
  return std::nullopt;
}

const char *activationName(Activation a) {
  switch (a) {
  case Activation::silu: return "silu";
  case Activation::gelu_tanh: return "gelu_pytorch_tanh";
  case Activation::swiglu_oai: return "swiglu_oai";
  }
  return "?";
}

// Hugging Face's names: hidden_act "silu", Gemma's hidden_activation
// "gelu_pytorch_tanh" (GELU's tanh approximation; transformers' "gelu_new"
// and "gelu_fast" compute the same function).
std::optional<Activation> parseActivation(const std::string &s) {
  if (s == "silu" || s == "swish") return Activation::silu;
  if (s == "gelu_pytorch_tanh" || s == "gelu_new" || s == "gelu_fast")
    return Activation::gelu_tanh;
  if (s == "swiglu_oai") return Activation::swiglu_oai;
  return std::nullopt;
}

bool ModelSpec::slides(int64_t l) const {
  return slidingWindow > 0 &&
         !std::binary_search(fullAttentionLayers.begin(), fullAttentionLayers.end(), l);
}

const char *targetName(Target t) { return t == Target::cpu ? "cpu" : "cuda"; }

std::optional<Target> parseTarget(const std::string &s) {
  if (s == "cpu") return Target::cpu;
  if (s == "cuda") return Target::cuda;
  return std::nullopt;
}

const char *ropeTypeName(RopeType t) {
  switch (t) {
  case RopeType::standard: return "default";
  case RopeType::llama3: return "llama3";
  case RopeType::linear: return "linear";
  case RopeType::longrope: return "longrope";
  case RopeType::yarn: return "yarn";
  }
  return "?";
}

std::optional<RopeType> parseRopeType(const std::string &s) {
  if (s == "default") return RopeType::standard;
  if (s == "llama3") return RopeType::llama3;
  if (s == "linear") return RopeType::linear;
  if (s == "longrope") return RopeType::longrope;
  if (s == "yarn") return RopeType::yarn;
  return std::nullopt;
}

std::vector<int64_t> everyNthLayer(int64_t layers, int64_t interval) {
  std::vector<int64_t> out;
  for (int64_t l = interval - 1; interval > 0 && l < layers; l += interval) out.push_back(l);
  return out;
}

int64_t rotaryWidth(const RopeSpec &rope, int64_t headDim) {
  return rope.rotaryDim > 0 ? rope.rotaryDim : headDim;
}

std::vector<double> ropeFrequencies(const RopeSpec &r, int64_t headDim) {
  std::vector<double> f(size_t(headDim / 2), 0.0);
  const double pi = 3.14159265358979323846;
  const int64_t rot = std::min(rotaryWidth(r, headDim), headDim);
  const std::vector<double> divisors = ropeDivisors(r, headDim);
  for (int64_t i = 0; i < rot / 2; ++i) {
    double freq = std::pow(r.theta, -2.0 * double(i) / double(rot));
    if (r.type == RopeType::llama3) {
      // Llama 3: long wavelengths are slowed by `factor`, short ones kept,
      // and the band between blends the two.
      const double original = double(r.originalMaxPositions);
      const double wavelen = 2 * pi / freq;
      const double lowWavelen = original / r.lowFreqFactor;
      const double highWavelen = original / r.highFreqFactor;
      if (wavelen > lowWavelen) {
        freq /= r.factor;
      } else if (wavelen >= highWavelen) {
        const double smooth =
            (original / wavelen - r.lowFreqFactor) / (r.highFreqFactor - r.lowFreqFactor);
        freq = (1 - smooth) * freq / r.factor + smooth * freq;
      }
    }
    if (size_t(i) < divisors.size())
      freq /= divisors[size_t(i)];
    f[size_t(i)] = freq;
  }
  return f;
}

namespace {
// YaRN's pair index at which a frequency turns `rotations` times over the
// pretraining context: rot x ln(context / (2 pi rotations)) / (2 ln theta).
double yarnPair(const RopeSpec &r, int64_t rot, double rotations) {
  const double pi = 3.14159265358979323846;
  return double(rot) * std::log(double(r.originalMaxPositions) / (rotations * 2 * pi)) /
         (2 * std::log(r.theta));
}
} // namespace

std::vector<double> ropeDivisors(const RopeSpec &r, int64_t headDim) {
  const size_t pairs = size_t(std::min(rotaryWidth(r, headDim), headDim) / 2);
  if (r.freqFactors.empty() && r.type != RopeType::linear && r.type != RopeType::yarn)
    return {};
  std::vector<double> d = r.freqFactors;
  d.resize(pairs, 1.0);
  if (r.type == RopeType::linear)
    for (double &v : d) v *= r.factor;
  if (r.type == RopeType::yarn) {
    // The band from the pair turning beta_fast times to the one turning
    // beta_slow times ramps from unscaled (e = 1) to slowed by the factor.
    const int64_t rot = int64_t(pairs) * 2;
    double low = yarnPair(r, rot, r.betaFast), high = yarnPair(r, rot, r.betaSlow);
    if (r.yarnTruncate) {
      low = std::floor(low);
      high = std::ceil(high);
    }
    low = std::max(low, 0.0);
    high = std::min(high, double(rot - 1));
    if (high == low) high += 0.001;
    for (size_t i = 0; i < pairs; ++i) {
      const double ramp = std::clamp((double(i) - low) / (high - low), 0.0, 1.0);
      const double e = 1 - ramp;
      d[i] *= 1 / (e + (1 - e) / r.factor);
    }
  }
  return d;
}

double yarnAttentionFactor(double factor, double mscale, double mscaleAllDim) {
  auto m = [&](double s) { return factor <= 1 ? 1.0 : 0.1 * s * std::log(factor) + 1; };
  return mscaleAllDim != 0 ? m(mscale) / m(mscaleAllDim) : m(mscale);
}

int64_t ropeContext(const ModelSpec &m) {
  if (m.rope.type != RopeType::yarn) return m.maxPositions;
  const double scaled = std::floor(double(m.rope.originalMaxPositions) * m.rope.factor);
  return scaled > double(m.maxPositions) && scaled < 1e15 ? int64_t(scaled) : m.maxPositions;
}

std::string ModelConfig::where(const std::string &field) const {
  std::string out = sourcePath.empty() ? std::string("<model>") : sourcePath;
  auto it = fieldLines.find(field);
  if (it != fieldLines.end())
    out += ":" + std::to_string(it->second);
  return out + ": ";
}

std::string ModelConfig::nameOf(const std::string &field) const {
  auto it = fieldNames.find(field);
  if (it != fieldNames.end())
    return it->second;
  // An element ("model.rope.short_factors[3]") is named under its list's name.
  const size_t bracket = field.find('[');
  if (bracket != std::string::npos && (it = fieldNames.find(field.substr(0, bracket))) !=
                                          fieldNames.end())
    return it->second + field.substr(bracket);
  return field;
}

std::vector<WeightDecl> weightTable(const ModelSpec &m) {
  std::vector<WeightDecl> w;
  const int64_t h = m.hiddenSize, q = m.qDim(), kv = m.kvDim(),
                ff = m.intermediateSize;
  w.push_back({"tok_embeddings", {m.vocabSize, h}});
  for (int64_t i = 0; i < m.numLayers; ++i) {
    const std::string l = "layers." + std::to_string(i) + ".";
    w.push_back({l + "attention_norm", {h}});
    w.push_back({l + "attention.wq", {q, h}});
    w.push_back({l + "attention.wk", {kv, h}});
    w.push_back({l + "attention.wv", {kv, h}});
    if (m.attentionBias) {
      w.push_back({l + "attention.bq", {q}});
      w.push_back({l + "attention.bk", {kv}});
      w.push_back({l + "attention.bv", {kv}});
    }
    if (m.qkNorm) {
      w.push_back({l + "attention.q_norm", {m.headDim}});
      w.push_back({l + "attention.k_norm", {m.headDim}});
    }
    if (m.attentionSinks) w.push_back({l + "attention.sinks", {m.numHeads}, false, true});
    w.push_back({l + "attention.wo", {h, q}});
    if (m.attentionOutBias) w.push_back({l + "attention.bo", {h}});
    if (m.postNorms) w.push_back({l + "post_attention_norm", {h}});
    w.push_back({l + "ffn_norm", {h}});
    if (m.moe()) {
      const int64_t e = m.numExperts, eff = m.expertWidth();
      w.push_back({l + "feed_forward.router", {e, h}});
      w.push_back({l + "feed_forward.experts.w1", {e, eff, h}}); // gates
      w.push_back({l + "feed_forward.experts.w3", {e, eff, h}}); // ups
      w.push_back({l + "feed_forward.experts.w2", {e, h, eff}}); // downs
      if (m.expertBias) {
        w.push_back({l + "feed_forward.router_bias", {e}});
        w.push_back({l + "feed_forward.experts.b1", {e, eff}, true});
        w.push_back({l + "feed_forward.experts.b3", {e, eff}, true});
        w.push_back({l + "feed_forward.experts.b2", {e, h}, true});
      }
      if (m.sharedExpert()) {
        const int64_t sff = m.sharedExpertIntermediateSize;
        w.push_back({l + "feed_forward.shared_expert.w1", {sff, h}});
        w.push_back({l + "feed_forward.shared_expert.w3", {sff, h}});
        w.push_back({l + "feed_forward.shared_expert.w2", {h, sff}});
        if (m.sharedExpertGate) w.push_back({l + "feed_forward.shared_expert_gate", {1, h}});
      }
    } else {
      w.push_back({l + "feed_forward.w1", {ff, h}}); // gate
      w.push_back({l + "feed_forward.w3", {ff, h}}); // up
      w.push_back({l + "feed_forward.w2", {h, ff}}); // down
    }
    if (m.postNorms) w.push_back({l + "post_ffn_norm", {h}});
  }
  w.push_back({"norm", {h}});
  if (!m.tieWordEmbeddings)
    w.push_back({"output", {m.vocabSize, h}});
  return w;
}

int64_t parameterCount(const ModelSpec &m) {
  int64_t n = 0;
  for (const WeightDecl &w : weightTable(m)) {
    int64_t e = 1;
    for (int64_t d : w.shape) e *= d;
    n += e;
  }
  return n;
}

int64_t activeParameterCount(const ModelSpec &m) {
  if (!m.moe()) return parameterCount(m);
  const int64_t idle = m.numExperts - std::min(m.expertsPerToken, m.numExperts);
  const int64_t bias = m.expertBias ? 2 * m.expertWidth() + m.hiddenSize : 0;
  return parameterCount(m) -
         m.numLayers * idle * (3 * m.expertWidth() * m.hiddenSize + bias);
}

int64_t kvHeadsPerRank(const ModelSpec &m, int64_t ranks) {
  if (ranks <= 1) return m.numKvHeads;
  return m.numKvHeads % ranks == 0 ? m.numKvHeads / ranks : 1;
}

int64_t kvCacheBytes(const ModelSpec &m, const CompileSettings &c) {
  const int64_t windowed = int64_t(windowPoolLayers(m, c).size());
  const int64_t pageBytes =
      2 * kvHeadsPerRank(m, c.tensorParallel) * m.headDim * c.pageSize * dtypeBytes(c.kvDtype);
  return ((m.numLayers - windowed) * c.kvPages + windowed * c.windowKvPages) * pageBytes;
}

int64_t mixedWindow(const ModelSpec &m, const CompileSettings &c) {
  const bool mixed = m.slidingWindow > 0 && m.slidingWindow < c.maxSeqLen &&
                     !m.fullAttentionLayers.empty() &&
                     int64_t(m.fullAttentionLayers.size()) < m.numLayers;
  return mixed ? m.slidingWindow : 0;
}

std::vector<int64_t> windowPoolLayers(const ModelSpec &m, const CompileSettings &c) {
  std::vector<int64_t> layers;
  if (mixedWindow(m, c) > 0)
    for (int64_t l = 0; l < m.numLayers; ++l)
      if (m.slides(l)) layers.push_back(l);
  return layers;
}

int64_t attentionWindow(const ModelSpec &m, const CompileSettings &c) {
  return m.slidingWindow > 0 && m.slidingWindow < c.maxSeqLen && m.fullAttentionLayers.empty()
             ? m.slidingWindow
             : 0;
}

int64_t rowsPerCall(const CompileSettings &c) {
  return std::max({c.prefillChunk, c.speculate > 0 ? c.speculate + 1 : 0, c.scoreRows,
                   int64_t(1)});
}

int64_t pagesBehindWindow(int64_t window, int64_t pageSize, int64_t length) {
  if (window <= 0) return 0;
  // The next row, at position `length`, reads keys from length - window + 1.
  const int64_t firstKey = std::max<int64_t>(0, length - window + 1);
  return std::min(firstKey / pageSize, std::max<int64_t>(0, length / pageSize - 1));
}

int64_t sequencePeakPages(int64_t window, int64_t pageSize, int64_t rows, int64_t tokens) {
  if (window <= 0 || window >= tokens) return ceilDiv(tokens, pageSize);
  // A call appending [start, end) holds the pages up to end's and those
  // from the ones given back after `start` tokens on.
  auto held = [&](int64_t start) {
    const int64_t end = std::min(start + rows, tokens);
    return ceilDiv(end, pageSize) - pagesBehindWindow(window, pageSize, start);
  };
  // From start max(window - 1, page_size) on, a start page_size later
  // holds as many (each term grows by one), until the calls reach `tokens`;
  // from there on, fewer. So the first starts and the last decide.
  const int64_t head = std::min(tokens, window + 2 * pageSize + rows);
  int64_t most = 0;
  for (int64_t start = 0; start < head; ++start) most = std::max(most, held(start));
  for (int64_t start = std::max(head, tokens - rows - 2 * pageSize); start < tokens; ++start)
    most = std::max(most, held(start));
  return most;
}

int64_t sequencePeakPages(const ModelSpec &m, const CompileSettings &c) {
  return sequencePeakPages(attentionWindow(m, c), c.pageSize, rowsPerCall(c), c.maxSeqLen);
}

int64_t windowPeakPages(const ModelSpec &m, const CompileSettings &c) {
  const int64_t window = mixedWindow(m, c);
  return window > 0 ? sequencePeakPages(window, c.pageSize, rowsPerCall(c), c.maxSeqLen) : 0;
}

namespace {

// Generous bounds that keep every size product below 2^63.
constexpr int64_t kMaxDim = int64_t(1) << 24;
constexpr int64_t kMaxLayers = 4096;
constexpr int64_t kMaxBatch = 4096;
constexpr int64_t kMaxExperts = 4096;
// Page tables hold int32 page indices.
constexpr int64_t kMaxPages = std::numeric_limits<int32_t>::max();

class Checker {
public:
  explicit Checker(const ModelConfig &c) : cfg(c) {}

  [[noreturn]] void fail(const std::string &field, const std::string &msg) {
    throw InputError(cfg.where(field) + "field '" + cfg.nameOf(field) + "': " + msg);
  }

  /// The field as the source file writes it.
  std::string name(const std::string &field) const { return cfg.nameOf(field); }
  /// The same without its table ("num_heads" for a TOML spec's
  /// model.num_heads), for naming a field inside a message.
  std::string key(const std::string &field) const {
    const std::string n = cfg.nameOf(field);
    return n == field ? n.substr(n.rfind('.') + 1) : n;
  }

  void positive(const std::string &field, int64_t v, int64_t max) {
    if (v <= 0)
      fail(field, "expected a positive integer, got " + std::to_string(v));
    if (v > max)
      fail(field, "value " + std::to_string(v) + " is larger than the supported maximum " +
                      std::to_string(max));
  }

  void positiveReal(const std::string &field, double v) {
    if (!(v > 0) || v == std::numeric_limits<double>::infinity()) {
      std::ostringstream os;
      os << "expected a positive finite number, got " << v;
      fail(field, os.str());
    }
  }

  /// Layer indices, increasing, each below `layers`.
  void layerList(const std::string &field, const std::vector<int64_t> &list, int64_t layers) {
    for (size_t i = 0; i < list.size(); ++i) {
      const int64_t l = list[i];
      if (l < 0 || l >= layers || (i > 0 && l <= list[i - 1]))
        fail(field, "expected increasing layer indices from 0 to num_layers - 1 = " +
                        std::to_string(layers - 1) + ", got " + std::to_string(l) + " at [" +
                        std::to_string(i) + "]");
    }
  }

  void tokenId(const std::string &field, int64_t id, int64_t vocab) {
    if (id < 0 || id >= vocab)
      fail(field, "token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                      std::to_string(vocab) + ")");
  }

private:
  const ModelConfig &cfg;
};

// Sizes and head layout; derives head_dim when the spec leaves it out.
void checkModelShape(Checker &c, ModelSpec &m) {
  c.positive("model.hidden_size", m.hiddenSize, kMaxDim);
  c.positive("model.intermediate_size", m.intermediateSize, kMaxDim);
  c.positive("model.num_layers", m.numLayers, kMaxLayers);
  c.positive("model.num_heads", m.numHeads, kMaxDim);
  c.positive("model.num_kv_heads", m.numKvHeads, kMaxDim);
  c.positive("model.vocab_size", m.vocabSize, kMaxDim);
  c.positive("model.max_position_embeddings", m.maxPositions, kMaxDim);

  if (m.headDim == 0) {
    if (m.hiddenSize % m.numHeads != 0)
      c.fail("model.hidden_size",
             c.key("model.hidden_size") + " " + std::to_string(m.hiddenSize) +
                 " is not a multiple of " + c.key("model.num_heads") + " " +
                 std::to_string(m.numHeads) + "; set " + c.name("model.head_dim") +
                 " explicitly if the model's heads are not " + c.key("model.hidden_size") +
                 " / " + c.key("model.num_heads") + " wide");
    m.headDim = m.hiddenSize / m.numHeads;
  }
  c.positive("model.head_dim", m.headDim, 1 << 16);
  if (m.headDim % 2 != 0)
    c.fail("model.head_dim", "RoPE rotates pairs of dimensions, so head_dim must be even, got " +
                                 std::to_string(m.headDim));
  if (m.numHeads % m.numKvHeads != 0)
    c.fail("model.num_kv_heads", c.key("model.num_heads") + " " + std::to_string(m.numHeads) +
                                     " is not a multiple of " + c.key("model.num_kv_heads") +
                                     " " + std::to_string(m.numKvHeads) +
                                     " (grouped-query attention shares each KV head among "
                                     "an equal number of query heads)");
  if (m.qDim() > kMaxDim)
    c.fail("model.head_dim", "num_heads x head_dim = " + std::to_string(m.qDim()) +
                                 " is larger than the supported maximum");
}

// What the factor lists' length is named as in a message.
std::string pairsName(const ModelSpec &m) {
  return m.rope.rotaryDim > 0 ? "rotary_dim / 2" : "head_dim / 2";
}

// Partial RoPE: an even number of a head's dimensions, at most all of them.
void checkRotaryDim(Checker &c, const ModelSpec &m) {
  const int64_t r = m.rope.rotaryDim;
  if (r == 0)
    return;
  if (r < 2 || r > m.headDim || r % 2 != 0)
    c.fail("model.rope.rotary_dim",
           "expected an even number of dimensions from 2 to head_dim " +
               std::to_string(m.headDim) + " (RoPE rotates pairs of a head's leading "
               "dimensions), got " + std::to_string(r));
}

// Explicit frequency factors: one per pair of a head, each positive, and not
// on top of llama3 scaling, which they would apply a second time.
void checkFreqFactors(Checker &c, const ModelSpec &m) {
  const std::vector<double> &f = m.rope.freqFactors;
  if (f.empty())
    return;
  const int64_t pairs = rotaryWidth(m.rope, m.headDim) / 2;
  if (int64_t(f.size()) != pairs)
    c.fail("model.rope.freq_factors", "expected " + pairsName(m) + " = " +
                                          std::to_string(pairs) + " factors, got " +
                                          std::to_string(f.size()));
  for (size_t i = 0; i < f.size(); ++i)
    c.positiveReal("model.rope.freq_factors[" + std::to_string(i) + "]", f[i]);
  if (m.rope.type == RopeType::llama3)
    c.fail("model.rope.freq_factors",
           "per-dimension factors already hold Llama 3's scaling (a GGUF's rope_freqs); "
           "with type llama3 it would apply twice: drop one of them");
}

// LongRoPE: two lists of head_dim / 2 positive divisors, the pretraining
// context they switch at, and no explicit list besides (the compile settings
// choose one of the two). Any scaling may carry an attention factor.
void checkLongRope(Checker &c, const ModelSpec &m) {
  c.positiveReal("model.rope.attention_factor", m.rope.attentionFactor);
  if (m.rope.type != RopeType::longrope)
    return;
  const std::pair<const char *, const std::vector<double> *> lists[] = {
      {"model.rope.short_factors", &m.rope.shortFactors},
      {"model.rope.long_factors", &m.rope.longFactors}};
  for (const auto &[field, factors] : lists) {
    const std::vector<double> &f = *factors;
    const int64_t pairs = rotaryWidth(m.rope, m.headDim) / 2;
    if (int64_t(f.size()) != pairs)
      c.fail(field, "expected " + pairsName(m) + " = " + std::to_string(pairs) +
                        " factors, got " + std::to_string(f.size()));
    for (size_t i = 0; i < f.size(); ++i)
      c.positiveReal(std::string(field) + "[" + std::to_string(i) + "]", f[i]);
  }
  c.positive("model.rope.original_max_position_embeddings", m.rope.originalMaxPositions,
             kMaxDim);
}

// YaRN: a factor, the pretraining context, and the two rotation counts that
// bound its band, the fast one above the slow one.
void checkYarn(Checker &c, const ModelSpec &m) {
  c.positiveReal("model.rope.factor", m.rope.factor);
  c.positive("model.rope.original_max_position_embeddings", m.rope.originalMaxPositions,
             kMaxDim);
  c.positiveReal("model.rope.beta_fast", m.rope.betaFast);
  c.positiveReal("model.rope.beta_slow", m.rope.betaSlow);
  if (m.rope.betaFast <= m.rope.betaSlow)
    c.fail("model.rope.beta_fast", "must be larger than " + c.name("model.rope.beta_slow") +
                                       " for YaRN (the pairs turning more often than it are "
                                       "kept, those turning less than beta_slow slowed)");
}

// The norm epsilon and RoPE; llama3 scaling brings its own factors.
void checkNormAndRope(Checker &c, const ModelSpec &m) {
  c.positiveReal("model.rms_norm_eps", m.rmsNormEps);
  if (m.rmsNormEps >= 1)
    c.fail("model.rms_norm_eps", "expected a small positive number (e.g. 1e-5), got " +
                                     std::to_string(m.rmsNormEps));
  c.positiveReal("model.rope.theta", m.rope.theta);
  checkRotaryDim(c, m);
  if (m.rope.type != RopeType::longrope)
    checkFreqFactors(c, m);
  checkLongRope(c, m);
  if (m.rope.type == RopeType::linear)
    c.positiveReal("model.rope.factor", m.rope.factor);
  if (m.rope.type == RopeType::llama3) {
    c.positiveReal("model.rope.factor", m.rope.factor);
    c.positiveReal("model.rope.low_freq_factor", m.rope.lowFreqFactor);
    c.positiveReal("model.rope.high_freq_factor", m.rope.highFreqFactor);
    if (m.rope.highFreqFactor <= m.rope.lowFreqFactor)
      c.fail("model.rope.high_freq_factor", "must be larger than " +
                                                c.name("model.rope.low_freq_factor") +
                                                " for llama3 RoPE scaling");
    c.positive("model.rope.original_max_position_embeddings", m.rope.originalMaxPositions,
               kMaxDim);
  }
  if (m.rope.type == RopeType::yarn)
    checkYarn(c, m);
}

// Token ids are checked against vocab_size, which must already be valid.
void checkTokensAndWindow(Checker &c, const ModelSpec &m) {
  if (m.bosTokenId != -1) // none
    c.tokenId("model.bos_token_id", m.bosTokenId, m.vocabSize);
  if (m.eosTokenIds.empty())
    c.fail("model.eos_token_id", "expected at least one end-of-sequence token id");
  for (int64_t id : m.eosTokenIds)
    c.tokenId("model.eos_token_id", id, m.vocabSize);

  if (m.slidingWindow < 0)
    c.fail("model.sliding_window", "expected a positive window or none");
  c.layerList("model.nope_layers", m.nopeLayers, m.numLayers);
  c.layerList("model.full_attention_layers", m.fullAttentionLayers, m.numLayers);
  if (!m.fullAttentionLayers.empty() && m.slidingWindow == 0)
    c.fail("model.full_attention_layers",
           "lists the layers that read every key under a sliding window, and the model has "
           "none: set sliding_window or leave it out");
  if (m.rope.localTheta != 0) {
    c.positiveReal("model.rope.local_theta", m.rope.localTheta);
    if (m.slidingWindow == 0)
      c.fail("model.rope.local_theta", "is the sliding-window layers' RoPE base, and the "
                                       "model has none: set sliding_window or leave it out");
  }
}

// A mixture of experts: at least two experts, each token routed to from one
// to all of them.
void checkExperts(Checker &c, const ModelSpec &m) {
  if (m.numExperts == 0) {
    const std::pair<const char *, int64_t> settings[] = {
        {"model.num_experts_per_tok", m.expertsPerToken},
        {"model.moe_intermediate_size", m.expertIntermediateSize},
        {"model.shared_expert_intermediate_size", m.sharedExpertIntermediateSize},
        {"model.shared_expert_gate", m.sharedExpertGate ? 1 : 0},
        {"model.expert_bias", m.expertBias ? 1 : 0}};
    if (m.activation == Activation::swiglu_oai)
      c.fail("model.hidden_activation", "swiglu_oai is gpt-oss's experts' activation, and the "
                                        "model has no experts: set num_experts or choose silu");
    for (auto [field, v] : settings)
      if (v != 0)
        c.fail(field, "is a mixture of experts' setting, and the model has none: set "
                      "num_experts or leave it out");
    return;
  }
  if (m.sharedExpertIntermediateSize != 0)
    c.positive("model.shared_expert_intermediate_size", m.sharedExpertIntermediateSize, kMaxDim);
  else if (m.sharedExpertGate)
    c.fail("model.shared_expert_gate", "gates a shared expert, and the model has none: set "
                                       "shared_expert_intermediate_size or leave it out");
  c.positive("model.num_experts", m.numExperts, kMaxExperts);
  if (m.numExperts < 2)
    c.fail("model.num_experts", "a mixture of experts has at least 2, got " +
                                    std::to_string(m.numExperts) +
                                    " (leave it out for the dense FFN)");
  if (m.expertsPerToken < 1 || m.expertsPerToken > m.numExperts)
    c.fail("model.num_experts_per_tok", "expected the experts each token is routed to, from 1 "
                                        "to num_experts " + std::to_string(m.numExperts) +
                                        ", got " + std::to_string(m.expertsPerToken));
  if (m.expertIntermediateSize != 0)
    c.positive("model.moe_intermediate_size", m.expertIntermediateSize, kMaxDim);
  if (m.activation == Activation::swiglu_oai) {
    c.positiveReal("model.swiglu_limit", m.swigluLimit);
    c.positiveReal("model.swiglu_alpha", m.swigluAlpha);
    if (m.sharedExpert())
      c.fail("model.shared_expert_intermediate_size",
             "a shared expert under swiglu_oai (gpt-oss's clamped experts) is not supported");
  }
}

// gpt-oss's parts, which the cuda target's kernels do not have yet.
void checkTargetRuns(Checker &c, const ModelSpec &m, const CompileSettings &s) {
  if (s.target != Target::cuda) return;
  const char *why = m.attentionSinks ? "model.attention_sinks"
                    : m.expertBias   ? "model.expert_bias"
                    : m.activation == Activation::swiglu_oai ? "model.hidden_activation"
                                                             : nullptr;
  if (why)
    c.fail(why, "the cuda target does not run gpt-oss's attention sinks, expert biases and "
                "clamped SwiGLU yet; compile for the cpu target (--target cpu)");
  const char *mx = s.weightDtype == DType::mxfp4 ? "compile.weight_dtype"
                   : s.expertWeightDtype() == DType::mxfp4 ? "compile.expert_dtype"
                                                            : nullptr;
  if (mx)
    c.fail(mx, "the cuda target has no MXFP4 kernels yet; choose int8 (--dtype int8, "
               "--expert-dtype int8), or compile for the cpu target (--target cpu)");
}

// Gemma's scalars: the embeddings' multiplier and the softmax's divisor.
void checkScales(Checker &c, const ModelSpec &m) {
  c.positiveReal("model.embedding_scale", m.embeddingScale);
  if (m.queryPreAttnScalar != 0)
    c.positiveReal("model.query_pre_attn_scalar", m.queryPreAttnScalar);
  if (m.attnSoftcap != 0) c.positiveReal("model.attn_logit_softcapping", m.attnSoftcap);
  if (m.finalSoftcap != 0) c.positiveReal("model.final_logit_softcapping", m.finalSoftcap);
}

// Weights come first: the defaults for the cache type derive from them.
void checkWeightDType(Checker &c, const ModelSpec &m, const CompileSettings &s) {
  if (!isWeightDType(s.weightDtype))
    c.fail("compile.weight_dtype", "expected one of f32, bf16, f16, int8, int4, mxfp4");
  if (!s.expertDtype) return;
  if (!isWeightDType(*s.expertDtype))
    c.fail("compile.expert_dtype", "expected one of f32, bf16, f16, int8, int4, mxfp4");
  if (m.numExperts == 0)
    c.fail("compile.expert_dtype",
           "the model has no experts (model.num_experts is 0); leave it out");
}

// Fills the compile settings the spec did not give from the model, so that
// the checks after it see the values the plan will use.
void deriveCompileDefaults(ModelConfig &cfg) {
  const ModelSpec &m = cfg.model;
  CompileSettings &s = cfg.compile;
  auto given = [&](const char *f) { return cfg.given.count(f) != 0; };
  // The cache follows 16-bit weights; int8 and int4 weights keep a bf16 cache.
  if (!given("compile.kv_dtype"))
    s.kvDtype = isFloatDType(s.weightDtype) ? s.weightDtype : DType::bf16;
  if (!given("compile.max_seq_len"))
    s.maxSeqLen = std::min(m.maxPositions, CompileSettings::kDefaultMaxSeqLen);
  // LongRoPE's short factors hold up to the pretraining context, its long
  // ones beyond: max_seq_len picks one list for every position.
  if (m.rope.type == RopeType::longrope)
    cfg.model.rope.freqFactors = s.maxSeqLen > m.rope.originalMaxPositions
                                     ? m.rope.longFactors
                                     : m.rope.shortFactors;
  if (!given("compile.prefill_chunk"))
    s.prefillChunk = std::min(s.maxSeqLen, CompileSettings::kDefaultPrefillChunk);
  if (!given("compile.page_size"))
    s.pageSize = s.maxSeqLen % CompileSettings::kDefaultPageSize == 0
                     ? CompileSettings::kDefaultPageSize
                     : s.maxSeqLen;
}

// The smaller copies of `role` (decode or prefill, `rows` rows) the plan
// gets: given ones must be for the cuda target, positive and below `rows`;
// the target's defaults are kept where below. Ascending, each once.
void settleCopies(Checker &c, ModelConfig &cfg, const char *role, int64_t rows, const char *limit,
                  const std::vector<int64_t> &defaults, std::vector<int64_t> &copies) {
  const std::string field = std::string("compile.") + role + "_copies";
  const CompileSettings &s = cfg.compile;
  if (!cfg.given.count(field)) {
    copies = defaults;
    copies.erase(std::remove_if(copies.begin(), copies.end(), [&](int64_t r) { return r >= rows; }),
                 copies.end());
    return;
  }
  if (!copies.empty() && s.target != Target::cuda)
    c.fail(field, std::string("the ") + targetName(s.target) +
                      " target's kernels do not depend on a step's rows, so it makes no "
                      "smaller copies of " + role + "; leave the setting out for it");
  for (int64_t r : copies) {
    if (r <= 0)
      c.fail(field, "expected positive row counts, got " + std::to_string(r));
    if (r >= rows)
      c.fail(field, std::to_string(r) + " rows is not below " + c.key(limit) + " " +
                        std::to_string(rows) + ": a copy of " + role + " has fewer rows than " +
                        role + " itself, which serves " + std::to_string(rows));
  }
  std::sort(copies.begin(), copies.end());
  copies.erase(std::unique(copies.begin(), copies.end()), copies.end());
  if (copies.size() > CompileSettings::kMaxCopies)
    c.fail(field, std::to_string(copies.size()) + " copies of " + role + "; at most " +
                      std::to_string(CompileSettings::kMaxCopies) +
                      " (each is compiled and stored in full)");
}

// Runs after the defaults are filled in, so a derived value out of range is
// caught as well as a given one.
void checkCompileSettings(Checker &c, const CompileSettings &s) {
  if (!isFloatDType(s.kvDtype))
    c.fail("compile.kv_dtype", "expected one of f32, bf16, f16");
  c.positive("compile.max_batch", s.maxBatch, kMaxBatch);
  c.positive("compile.max_seq_len", s.maxSeqLen, kMaxDim);
  c.positive("compile.prefill_chunk", s.prefillChunk, kMaxDim);
  c.positive("compile.page_size", s.pageSize, kMaxDim);
  if (s.tensorParallel < 1 || s.tensorParallel > 64 ||
      (s.tensorParallel & (s.tensorParallel - 1)) != 0)
    c.fail("compile.tensor_parallel", "tensor_parallel must be a power of two from 1 to 64, got " +
                                          std::to_string(s.tensorParallel));
}

// Tensor parallelism cuts whole heads, the FFN and the vocabulary evenly.
void checkTensorParallel(Checker &c, const ModelSpec &m, const CompileSettings &s) {
  const int64_t n = s.tensorParallel;
  if (n <= 1) return;
  auto share = [&](int64_t count, const char *what) {
    if (count % n != 0)
      c.fail("compile.tensor_parallel", "tensor_parallel " + std::to_string(n) + " does not divide " +
                                            what + " (" + std::to_string(count) +
                                            "); choose a power of two that does");
  };
  if (m.attentionSinks || m.attentionOutBias || m.expertBias)
    c.fail("compile.tensor_parallel", "tensor parallelism does not split gpt-oss's attention "
                                      "sinks and output and expert biases yet; leave it out");
  share(m.numHeads, "num_heads");
  // A mixture of experts: every rank holds every expert's share of its
  // features (the FFN width the ranks cut is the experts').
  if (m.moe() && m.expertIntermediateSize > 0)
    share(m.expertIntermediateSize, "moe_intermediate_size");
  else
    share(m.intermediateSize, "intermediate_size");
  if (m.sharedExpert()) share(m.sharedExpertIntermediateSize, "shared_expert_intermediate_size");
  share(m.vocabSize, "vocab_size");
  if (m.numKvHeads % n != 0 && n % m.numKvHeads != 0)
    c.fail("compile.tensor_parallel", "tensor_parallel " + std::to_string(n) +
                                          " and num_kv_heads " + std::to_string(m.numKvHeads) +
                                          ": neither divides the other, so the KV heads cannot "
                                          "follow the query heads to their ranks");
}

// Rules between fields, once each field is valid on its own.
void checkCrossFieldRules(Checker &c, const ModelSpec &m, const CompileSettings &s) {
  if (s.maxSeqLen > ropeContext(m))
    c.fail("compile.max_seq_len",
           "max_seq_len " + std::to_string(s.maxSeqLen) +
               (m.rope.type == RopeType::yarn
                    ? " exceeds YaRN's context, original_max_position_embeddings " +
                          std::to_string(m.rope.originalMaxPositions) + " x factor " +
                          formatNumber(m.rope.factor) + " = " + std::to_string(ropeContext(m))
                    : " exceeds the model's max_position_embeddings " +
                          std::to_string(m.maxPositions)) +
               "; use a context the model was trained for");
  if (s.prefillChunk > s.maxSeqLen)
    c.fail("compile.prefill_chunk", "prefill_chunk " + std::to_string(s.prefillChunk) +
                                        " is larger than max_seq_len " +
                                        std::to_string(s.maxSeqLen));
  if (s.speculate < 0 || s.speculate > CompileSettings::kMaxSpeculate)
    c.fail("compile.speculate", "speculate " + std::to_string(s.speculate) +
                                    " is outside [0, " +
                                    std::to_string(CompileSettings::kMaxSpeculate) +
                                    "] (draft tokens per verify step; 0 turns it off)");
  else if (s.speculate > 0 && s.speculate + 1 > s.maxSeqLen)
    c.fail("compile.speculate", "speculate " + std::to_string(s.speculate) +
                                    " needs a verify step of " + std::to_string(s.speculate + 1) +
                                    " rows, more than max_seq_len " +
                                    std::to_string(s.maxSeqLen));
  if (s.scoreRows < 0 || s.scoreRows > CompileSettings::kMaxScoreRows)
    c.fail("compile.score_rows", "score_rows " + std::to_string(s.scoreRows) +
                                     " is outside [0, " +
                                     std::to_string(CompileSettings::kMaxScoreRows) +
                                     "] (prompt tokens per @score call; 0 compiles none)");
  else if (s.scoreRows > s.maxSeqLen)
    c.fail("compile.score_rows", "score_rows " + std::to_string(s.scoreRows) +
                                     " is larger than max_seq_len " +
                                     std::to_string(s.maxSeqLen));
  if (s.l2PrefetchMib < 0 || s.l2PrefetchMib > CompileSettings::kMaxL2PrefetchMib)
    c.fail("compile.l2_prefetch_mib",
           "l2_prefetch_mib " + std::to_string(s.l2PrefetchMib) + " is outside [0, " +
               std::to_string(CompileSettings::kMaxL2PrefetchMib) +
               "] (MiB of the GPU's L2 a kernel may fill with the next products' weights; "
               "0 turns it off)");
  else if (s.l2PrefetchMib > 0 && s.target != Target::cuda)
    c.fail("compile.l2_prefetch_mib",
           "l2_prefetch_mib " + std::to_string(s.l2PrefetchMib) +
               " asks a GPU's L2 for weights ahead, which only the cuda target does; "
               "compile for cuda or leave it 0");
  if (s.memoryBudget < 0 || s.memoryBudget > CompileSettings::kMaxMemoryBudget)
    c.fail("compile.memory_budget",
           std::to_string(s.memoryBudget) +
               " bytes is outside [0, 2^62]: give the bytes the plan's bill may take, like "
               "\"24GiB\" (0: no bound)");
  if (s.pageSize > s.maxSeqLen || s.maxSeqLen % s.pageSize != 0)
    c.fail("compile.page_size", "page_size " + std::to_string(s.pageSize) +
                                    " must divide max_seq_len " + std::to_string(s.maxSeqLen) +
                                    " (each sequence owns max_seq_len / page_size pages; "
                                    "page_size = max_seq_len gives a contiguous cache)");
}

// The pool's default derives from sizes that must be valid first (a
// page_size of 0 or a huge max_batch would make it meaningless), so it is
// filled in after the other checks rather than with the other defaults.
void deriveKvPages(ModelConfig &cfg) {
  CompileSettings &s = cfg.compile;
  if (!cfg.given.count("compile.kv_pages"))
    s.kvPages = s.maxBatch * sequencePeakPages(cfg.model, s);
  if (!cfg.given.count("compile.window_kv_pages"))
    s.windowKvPages = s.maxBatch * windowPeakPages(cfg.model, s);
}

// The sliding layers' own pool, where layers mix: one sequence's pages under
// the window at least, by default max_batch of them (the full layers' pool,
// kv_pages, holds one sequence at least too; the scheduler makes room in
// either by preemption).
void checkWindowKvPages(Checker &c, const ModelConfig &cfg) {
  const CompileSettings &s = cfg.compile;
  const int64_t window = mixedWindow(cfg.model, s);
  if (window == 0) {
    if (cfg.given.count("compile.window_kv_pages"))
      c.fail("compile.window_kv_pages",
             "is the pool of the layers under a sliding window where others read every key, "
             "and this model's layers do not mix at max_seq_len " +
                 std::to_string(s.maxSeqLen) + "; leave it out");
    return;
  }
  const int64_t need = windowPeakPages(cfg.model, s);
  c.positive("compile.window_kv_pages", s.windowKvPages, kMaxPages);
  if (s.windowKvPages < need)
    c.fail("compile.window_kv_pages",
           "window_kv_pages " + std::to_string(s.windowKvPages) +
               " cannot hold one sequence's " + std::to_string(need) + " pages of " +
               std::to_string(s.pageSize) + " tokens at once (a sliding window of " +
               std::to_string(window) + " keys and a call of " +
               std::to_string(rowsPerCall(s)) + " rows); give at least " + std::to_string(need));
}

// The pool must hold one sequence at full context; more or fewer than
// max_batch of them is the serving engine's choice. Under a sliding window
// a sequence gives back the pages behind it, and holds fewer at once.
void checkKvPages(Checker &c, const ModelConfig &cfg) {
  const ModelSpec &m = cfg.model;
  const CompileSettings &s = cfg.compile;
  const int64_t perSeq = sequencePeakPages(m, s), window = attentionWindow(m, s);
  if (!cfg.given.count("compile.kv_pages") && s.kvPages > kMaxPages)
    c.fail("compile.kv_pages", "the default pool of max_batch x " + std::to_string(perSeq) +
                                   " pages (one sequence at max_seq_len) = " +
                                   std::to_string(s.kvPages) +
                                   " pages is larger than the supported maximum " +
                                   std::to_string(kMaxPages) +
                                   "; give kv_pages, or a larger page_size");
  c.positive("compile.kv_pages", s.kvPages, kMaxPages);
  std::string held = " pages of " + std::to_string(s.pageSize) + " tokens";
  if (window > 0)
    held += " at once: a sliding window of " + std::to_string(window) + " keys and a call of " +
            std::to_string(rowsPerCall(s)) + " rows";
  if (s.kvPages < perSeq)
    c.fail("compile.kv_pages", "kv_pages " + std::to_string(s.kvPages) +
                                   " cannot hold one sequence of max_seq_len " +
                                   std::to_string(s.maxSeqLen) + " (" + std::to_string(perSeq) +
                                   held + "); give at least " + std::to_string(perSeq));
  checkWindowKvPages(c, cfg);
  // Every byte count the plan reports must fit comfortably in 64 bits.
  const long double kv = 2.0L * m.numLayers * m.numKvHeads * m.headDim *
                         std::max(s.kvPages, s.windowKvPages) * s.pageSize * dtypeBytes(s.kvDtype);
  if (kv > 1e18L)
    c.fail(cfg.given.count("compile.kv_pages") ? "compile.kv_pages" : "compile.max_seq_len",
           "the KV cache of kv_pages x page_size tokens would exceed 10^18 bytes; lower "
           "kv_pages, max_seq_len or max_batch");
}

} // namespace

void validate(ModelConfig &cfg) {
  Checker c(cfg);
  for (const char *field : {"model.swiglu_limit", "model.swiglu_alpha"})
    if (cfg.given.count(field) && cfg.model.activation != Activation::swiglu_oai)
      c.fail(field, "is swiglu_oai's (gpt-oss's experts' activation), and the model's is " +
                        std::string(activationName(cfg.model.activation)) + ": leave it out");
  checkModelShape(c, cfg.model);
  checkNormAndRope(c, cfg.model);
  checkTokensAndWindow(c, cfg.model);
  checkScales(c, cfg.model);
  checkExperts(c, cfg.model);
  checkWeightDType(c, cfg.model, cfg.compile);
  deriveCompileDefaults(cfg);
  checkCompileSettings(c, cfg.compile);
  checkCrossFieldRules(c, cfg.model, cfg.compile);
  checkTensorParallel(c, cfg.model, cfg.compile);
  checkTargetRuns(c, cfg.model, cfg.compile);
  deriveKvPages(cfg);
  checkKvPages(c, cfg);
  CompileSettings &s = cfg.compile;
  settleCopies(c, cfg, "decode", s.maxBatch, "compile.max_batch",
               CompileSettings::defaultDecodeCopies(s.target), s.decodeCopies);
  settleCopies(c, cfg, "prefill", s.prefillChunk, "compile.prefill_chunk",
               CompileSettings::defaultPrefillCopies(s.target), s.prefillCopies);
}

std::string CompileSettings::weightTypesText() const {
  std::string t = dtypeName(weightDtype);
  if (expertWeightDtype() != weightDtype) t += std::string(", experts ") + dtypeName(*expertDtype);
  return t;
}

std::vector<int64_t> CompileSettings::defaultDecodeCopies(Target t) {
  // The cuda kernels of a product change at 1 row (CUDA cores), up to 8
  // (matvecMma) and up to 32 (tensor-core row groups).
  return t == Target::cuda ? std::vector<int64_t>{1, 8, 32} : std::vector<int64_t>{};
}

std::vector<int64_t> CompileSettings::defaultPrefillCopies(Target t) {
  // A prompt's last token alone is already one row of decode's kind.
  return t == Target::cuda ? std::vector<int64_t>{8, 32} : std::vector<int64_t>{};
}

namespace {
// A mixture of experts' (absent: the dense FFN).
void writeExperts(nlohmann::json &j, const ModelSpec &m) {
  if (!m.moe()) return;
  j["num_experts"] = m.numExperts;
  j["num_experts_per_tok"] = m.expertsPerToken;
  j["moe_intermediate_size"] = m.expertWidth();
  j["norm_topk_prob"] = m.normTopKProb;
  if (m.expertBias) j["expert_bias"] = true;
  if (m.sharedExpert()) {
    j["shared_expert_intermediate_size"] = m.sharedExpertIntermediateSize;
    j["shared_expert_gate"] = m.sharedExpertGate;
  }
}
} // namespace

nlohmann::json toJson(const ModelSpec &m) {
  nlohmann::json j = {
      {"name", m.name},
      {"architecture", architectureName(m.architecture)},
      {"hidden_size", m.hiddenSize},
      {"intermediate_size", m.intermediateSize},
      {"num_layers", m.numLayers},
      {"num_heads", m.numHeads},
      {"num_kv_heads", m.numKvHeads},
      {"head_dim", m.headDim},
      {"vocab_size", m.vocabSize},
      {"max_position_embeddings", m.maxPositions},
      {"sliding_window", m.slidingWindow},
      {"rms_norm_eps", m.rmsNormEps},
      {"tie_word_embeddings", m.tieWordEmbeddings},
      {"attention_bias", m.attentionBias},
      {"qk_norm", m.qkNorm},
      {"bos_token_id", m.bosTokenId},
      {"eos_token_id", m.eosTokenIds},
      {"rope",
       {{"theta", m.rope.theta},
        {"type", ropeTypeName(m.rope.type)},
        {"factor", m.rope.factor},
        {"low_freq_factor", m.rope.lowFreqFactor},
        {"high_freq_factor", m.rope.highFreqFactor},
        {"original_max_position_embeddings", m.rope.originalMaxPositions}}},
  };
  // Only a model that has them lists them (a GGUF's rope_freqs; LongRoPE's
  // list max_seq_len chose, with the two it chose from).
  if (!m.rope.freqFactors.empty())
    j["rope"]["freq_factors"] = m.rope.freqFactors;
  if (m.rope.type == RopeType::longrope) {
    j["rope"]["short_factors"] = m.rope.shortFactors;
    j["rope"]["long_factors"] = m.rope.longFactors;
  }
  if (m.rope.attentionFactor != 1)
    j["rope"]["attention_factor"] = m.rope.attentionFactor;
  if (m.rope.type == RopeType::yarn) { // absent for the other types
    j["rope"]["beta_fast"] = m.rope.betaFast;
    j["rope"]["beta_slow"] = m.rope.betaSlow;
    j["rope"]["truncate"] = m.rope.yarnTruncate;
  }
  if (m.rope.rotaryDim > 0)
    j["rope"]["rotary_dim"] = m.rope.rotaryDim;
  if (!m.nopeLayers.empty())
    j["nope_layers"] = m.nopeLayers;
  // Gemma's, written only where they differ from Llama's.
  if (m.rope.localTheta != 0)
    j["rope"]["local_theta"] = m.rope.localTheta;
  if (!m.fullAttentionLayers.empty())
    j["full_attention_layers"] = m.fullAttentionLayers;
  if (m.activation != Activation::silu)
    j["hidden_activation"] = activationName(m.activation);
  if (m.activation == Activation::swiglu_oai) {
    j["swiglu_limit"] = m.swigluLimit;
    j["swiglu_alpha"] = m.swigluAlpha;
  }
  // gpt-oss's, written only where a model has them.
  if (m.attentionOutBias)
    j["attention_output_bias"] = true;
  if (m.attentionSinks)
    j["attention_sinks"] = true;
  if (m.postNorms)
    j["post_norms"] = true;
  if (m.embeddingScale != 1)
    j["embedding_scale"] = m.embeddingScale;
  if (m.queryPreAttnScalar != 0)
    j["query_pre_attn_scalar"] = m.queryPreAttnScalar;
  if (m.attnSoftcap != 0)
    j["attn_logit_softcapping"] = m.attnSoftcap;
  if (m.finalSoftcap != 0)
    j["final_logit_softcapping"] = m.finalSoftcap;
  writeExperts(j, m);
  return j;
}

nlohmann::json toJson(const CompileSettings &c) {
  nlohmann::json j = {{"target", targetName(c.target)},
          {"weight_dtype", dtypeName(c.weightDtype)},
          {"kv_dtype", dtypeName(c.kvDtype)},
          {"max_batch", c.maxBatch},
          {"max_seq_len", c.maxSeqLen},
          {"prefill_chunk", c.prefillChunk},
          {"page_size", c.pageSize},
          {"kv_pages", c.kvPages},
          {"tensor_parallel", c.tensorParallel}};
  // Written only when set, so that plans without it read as before.
  if (c.expertDtype) j["expert_dtype"] = dtypeName(*c.expertDtype);
  if (c.windowKvPages > 0) j["window_kv_pages"] = c.windowKvPages;
  if (c.memoryBudget > 0) j["memory_budget"] = c.memoryBudget;
  // Written only when set, so plans without a verify entry read as before.
  if (c.speculate > 0) j["speculate"] = c.speculate;
  if (c.scoreRows > 0) j["score_rows"] = c.scoreRows;
  if (!c.decodeCopies.empty()) j["decode_copies"] = c.decodeCopies;
  if (!c.prefillCopies.empty()) j["prefill_copies"] = c.prefillCopies;
  if (c.l2PrefetchMib > 0) j["l2_prefetch_mib"] = c.l2PrefetchMib;
  return j;
}

namespace {
template <typename T, typename Parse>
T parseEnum(const nlohmann::json &j, const char *key, Parse parse) {
  std::string s = j.at(key).get<std::string>();
  auto v = parse(s);
  if (!v)
    throw InputError(std::string("unknown ") + key + " '" + s + "'");
  return *v;
}

/// An integer field of the plan's model or settings (`at` names it), as a
/// JSON integer in [lo, hi]: a float (1e30) or a huge value converted to
/// int64_t would wrap.
int64_t integerField(const nlohmann::json &v, const std::string &at, int64_t lo, int64_t hi) {
  if (!v.is_number_integer())
    throw InputError(at + " is not an integer (" + v.dump() + ")");
  // nlohmann::json reads every non-negative integer as unsigned: 0 must
  // still meet `lo`.
  const bool huge = v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX);
  if (huge || v.get<int64_t>() < lo || v.get<int64_t>() > hi)
    throw InputError(at + " is " + v.dump() + ", outside [" + std::to_string(lo) + ", " +
                     std::to_string(hi) + "]");
  return v.get<int64_t>();
}
int64_t modelInteger(const nlohmann::json &j, const char *key, int64_t lo, int64_t hi) {
  return integerField(j.at(key), std::string("model field '") + key + "'", lo, hi);
}
/// An optional list of increasing layer indices (nope_layers, ...).
std::vector<int64_t> layerListField(const nlohmann::json &j, const char *key, int64_t layers) {
  std::vector<int64_t> out;
  const auto list = j.find(key);
  if (list == j.end()) return out;
  if (!list->is_array())
    throw InputError(std::string("model field '") + key + "' is not a list of layers");
  for (size_t i = 0; i < list->size(); ++i)
    out.push_back(integerField((*list)[i],
                               std::string("model field '") + key + "'[" + std::to_string(i) + "]",
                               out.empty() ? 0 : out.back() + 1, layers - 1));
  return out;
}
int64_t settingsInteger(const nlohmann::json &j, const char *key, int64_t lo, int64_t hi) {
  return integerField(j.at(key), std::string("settings field '") + key + "'", lo, hi);
}
} // namespace

namespace {
// Absent from plans written before mixtures of experts, and for dense FFNs.
void readExperts(const nlohmann::json &j, ModelSpec &m) {
  if (!j.contains("num_experts")) return;
  m.numExperts = modelInteger(j, "num_experts", 2, kMaxExperts);
  m.expertsPerToken = modelInteger(j, "num_experts_per_tok", 1, m.numExperts);
  m.expertIntermediateSize = modelInteger(j, "moe_intermediate_size", 1, kMaxDim);
  m.normTopKProb = j.at("norm_topk_prob").get<bool>();
  m.expertBias = j.value("expert_bias", false); // absent before gpt-oss
  // Absent from plans written before shared experts, and without one.
  if (j.contains("shared_expert_intermediate_size")) {
    m.sharedExpertIntermediateSize = modelInteger(j, "shared_expert_intermediate_size", 1, kMaxDim);
    m.sharedExpertGate = j.at("shared_expert_gate").get<bool>();
  }
}
} // namespace

ModelSpec modelSpecFromJson(const nlohmann::json &j) {
  ModelSpec m;
  m.name = j.at("name").get<std::string>();
  m.architecture = parseEnum<Architecture>(j, "architecture", parseArchitecture);
  m.hiddenSize = modelInteger(j, "hidden_size", 1, kMaxDim);
  m.intermediateSize = modelInteger(j, "intermediate_size", 1, kMaxDim);
  m.numLayers = modelInteger(j, "num_layers", 1, kMaxLayers);
  m.numHeads = modelInteger(j, "num_heads", 1, kMaxDim);
  m.numKvHeads = modelInteger(j, "num_kv_heads", 1, kMaxDim);
  m.headDim = modelInteger(j, "head_dim", 1, 1 << 16);
  m.vocabSize = modelInteger(j, "vocab_size", 1, kMaxDim);
  m.maxPositions = modelInteger(j, "max_position_embeddings", 1, kMaxDim);
  m.slidingWindow = modelInteger(j, "sliding_window", 0, kMaxDim);
  m.rmsNormEps = j.at("rms_norm_eps").get<double>();
  m.tieWordEmbeddings = j.at("tie_word_embeddings").get<bool>();
  m.attentionBias = j.at("attention_bias").get<bool>();
  // Absent from plans written before Qwen3.
  m.qkNorm = j.value("qk_norm", false);
  m.bosTokenId = modelInteger(j, "bos_token_id", -1, kMaxDim); // -1: none
  // Absent from plans written before NoPE layers, and where every layer
  // rotates.
  m.nopeLayers = layerListField(j, "nope_layers", m.numLayers);
  // Absent from plans written before Gemma 3, and for Llama's layers.
  m.fullAttentionLayers = layerListField(j, "full_attention_layers", m.numLayers);
  if (j.contains("hidden_activation"))
    m.activation = parseEnum<Activation>(j, "hidden_activation", parseActivation);
  if (m.activation == Activation::swiglu_oai) {
    m.swigluLimit = j.at("swiglu_limit").get<double>();
    m.swigluAlpha = j.at("swiglu_alpha").get<double>();
  }
  // Absent from plans written before gpt-oss, and for the models without.
  m.attentionOutBias = j.value("attention_output_bias", false);
  m.attentionSinks = j.value("attention_sinks", false);
  m.postNorms = j.value("post_norms", false);
  m.embeddingScale = j.value("embedding_scale", 1.0);
  m.queryPreAttnScalar = j.value("query_pre_attn_scalar", 0.0);
  m.attnSoftcap = j.value("attn_logit_softcapping", 0.0);
  m.finalSoftcap = j.value("final_logit_softcapping", 0.0);
  readExperts(j, m);
  const nlohmann::json &eos = j.at("eos_token_id");
  if (!eos.is_array()) throw InputError("model field 'eos_token_id' is not a list of token ids");
  m.eosTokenIds.clear();
  for (size_t i = 0; i < eos.size(); ++i)
    m.eosTokenIds.push_back(
        integerField(eos[i], "model field 'eos_token_id'[" + std::to_string(i) + "]", 0, kMaxDim));
  const nlohmann::json &r = j.at("rope");
  m.rope.theta = r.at("theta").get<double>();
  m.rope.type = parseEnum<RopeType>(r, "type", parseRopeType);
  m.rope.factor = r.at("factor").get<double>();
  m.rope.lowFreqFactor = r.at("low_freq_factor").get<double>();
  m.rope.highFreqFactor = r.at("high_freq_factor").get<double>();
  m.rope.originalMaxPositions =
      integerField(r.at("original_max_position_embeddings"),
                   "model field 'rope' original_max_position_embeddings", 0, kMaxDim);
  if (r.contains("freq_factors"))
    m.rope.freqFactors = r.at("freq_factors").get<std::vector<double>>();
  // Absent from plans written before LongRoPE.
  if (r.contains("short_factors"))
    m.rope.shortFactors = r.at("short_factors").get<std::vector<double>>();
  if (r.contains("long_factors"))
    m.rope.longFactors = r.at("long_factors").get<std::vector<double>>();
  m.rope.attentionFactor = r.value("attention_factor", 1.0);
  m.rope.betaFast = r.value("beta_fast", 32.0);
  m.rope.betaSlow = r.value("beta_slow", 1.0);
  m.rope.yarnTruncate = r.value("truncate", true);
  m.rope.localTheta = r.value("local_theta", 0.0);
  // Absent from plans written before partial RoPE, and for whole heads.
  if (r.contains("rotary_dim"))
    m.rope.rotaryDim = integerField(r.at("rotary_dim"), "model field 'rope' rotary_dim", 2,
                                    m.headDim);
  return m;
}

CompileSettings compileSettingsFromJson(const nlohmann::json &j) {
  CompileSettings c;
  c.target = parseEnum<Target>(j, "target", parseTarget);
  c.weightDtype = parseEnum<DType>(j, "weight_dtype", parseDType);
  c.kvDtype = parseEnum<DType>(j, "kv_dtype", parseDType);
  if (j.contains("expert_dtype"))
    c.expertDtype = parseEnum<DType>(j, "expert_dtype", parseDType);
  c.maxBatch = settingsInteger(j, "max_batch", 1, kMaxBatch);
  c.maxSeqLen = settingsInteger(j, "max_seq_len", 1, kMaxDim);
  c.prefillChunk = settingsInteger(j, "prefill_chunk", 1, kMaxDim);
  c.pageSize = settingsInteger(j, "page_size", 1, kMaxDim);
  c.kvPages = settingsInteger(j, "kv_pages", 1, kMaxPages);
  if (j.contains("window_kv_pages"))
    c.windowKvPages = settingsInteger(j, "window_kv_pages", 0, kMaxPages);
  if (j.contains("memory_budget"))
    c.memoryBudget = settingsInteger(j, "memory_budget", 0, CompileSettings::kMaxMemoryBudget);
  c.tensorParallel = settingsInteger(j, "tensor_parallel", 1, 64);
  if ((c.tensorParallel & (c.tensorParallel - 1)) != 0)
    throw InputError("settings field 'tensor_parallel' is " + std::to_string(c.tensorParallel) +
                     ", not a power of two");
  if (j.contains("speculate"))
    c.speculate = settingsInteger(j, "speculate", 0, CompileSettings::kMaxSpeculate);
  if (j.contains("score_rows"))
    c.scoreRows = settingsInteger(j, "score_rows", 0, CompileSettings::kMaxScoreRows);
  auto copies = [&](const char *key, int64_t rows, std::vector<int64_t> &out) {
    if (!j.contains(key)) return;
    const nlohmann::json &list = j.at(key);
    const std::string what = std::string("settings field '") + key + "'";
    if (!list.is_array() || list.size() > CompileSettings::kMaxCopies)
      throw InputError(what + " is not a list of at most " +
                       std::to_string(CompileSettings::kMaxCopies) + " row counts");
    for (size_t i = 0; i < list.size(); ++i) {
      out.push_back(integerField(list[i], what + "[" + std::to_string(i) + "]", 1, rows - 1));
      if (i > 0 && out[i] <= out[i - 1])
        throw InputError(what + " is not ascending");
    }
  };
  copies("decode_copies", c.maxBatch, c.decodeCopies);
  copies("prefill_copies", c.prefillChunk, c.prefillCopies);
  if (j.contains("l2_prefetch_mib"))
    c.l2PrefetchMib =
        settingsInteger(j, "l2_prefetch_mib", 0, CompileSettings::kMaxL2PrefetchMib);
  return c;
}

} // namespace kvplan
