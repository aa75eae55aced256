// The validated description of a model and how to compile it; shared by the
// compiler and the runtime, so it depends on no MLIR header.
#pragma once

#include "support/DType.h"
#include "support/Error.h"

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace kvplan {

// smollm3: Llama's layers with every fourth one's attention unrotated
// (NoPE), as SmolLM3 has them. gemma3: Gemma 3's text model (GeGLU, norms
// after attention and FFN as well as before, scaled embeddings, q/k norms,
// five sliding-window layers to one global). gemma2: Gemma 2's (the same
// but for q/k norms, every other layer global, and soft-capped attention
// scores and logits). gpt_oss: OpenAI's gpt-oss (a mixture of experts with
// biases and clamped SwiGLU, attention sinks, biased projections, every
// other layer under a sliding window).
enum class Architecture { llama, mistral, qwen2, qwen3, phi3, smollm3, gemma3, gemma2, gpt_oss };
const char *architectureName(Architecture a);
std::optional<Architecture> parseArchitecture(const std::string &s);

/// The FFN gate's activation: SiLU (SwiGLU, Llama's), GELU's tanh
/// approximation (GeGLU, Gemma's gelu_pytorch_tanh), or gpt-oss's clamped
/// SwiGLU (ggml's swiglu_oai): with the gate g clamped to at most `limit` and
/// the up u to [-limit, limit], g sigmoid(alpha g) (u + 1).
enum class Activation { silu, gelu_tanh, swiglu_oai };
const char *activationName(Activation a);
std::optional<Activation> parseActivation(const std::string &s);

enum class Target { cpu, cuda };
const char *targetName(Target t);
std::optional<Target> parseTarget(const std::string &s);

enum class RopeType { standard, llama3, linear, longrope, yarn };
const char *ropeTypeName(RopeType t);
std::optional<RopeType> parseRopeType(const std::string &s);

struct RopeSpec {
  double theta = 10000.0;
  RopeType type = RopeType::standard;
  // Llama 3 frequency scaling (type llama3), or linear scaling (type linear:
  // every frequency divided by `factor`, i.e. positions / factor).
  double factor = 8.0;
  // Read only when type == llama3.
  double lowFreqFactor = 1.0;
  double highFreqFactor = 4.0;
  // The context the model was pretrained at (llama3, longrope and yarn).
  int64_t originalMaxPositions = 8192;
  // YaRN (type yarn): the pairs that turn fewer than betaSlow times over
  // originalMaxPositions are slowed by `factor`, those that turn more than
  // betaFast times are kept, and the band between blends the two; its
  // bounds are rounded outwards to whole pairs unless !yarnTruncate (as
  // transformers' `truncate`, false for gpt-oss). The attention factor below
  // is YaRN's mscale, 0.1 ln(factor) + 1 unless the model gives its own.
  double betaFast = 32.0;
  double betaSlow = 1.0;
  bool yarnTruncate = true;
  // LongRoPE (Phi-3's rope_scaling type longrope, once su): per-pair
  // divisors for contexts up to originalMaxPositions (short) and beyond
  // (long), head_dim / 2 each. The compile settings' max_seq_len chooses one
  // list for every position, as llama.cpp does by its context size;
  // deriveCompileDefaults() copies it into freqFactors.
  std::vector<double> shortFactors, longFactors;
  // cos and sin multiplied by this (LongRoPE's and YaRN's attention factor):
  // every query-key product scaled by its square, which kvplan folds into
  // the attention's softmax scale.
  double attentionFactor = 1.0;
  // Explicit per-dimension divisors: frequency i is theta^(-2i/rotary_dim) /
  // freqFactors[i] (llama.cpp's rope_freqs, which a GGUF converted from a
  // Llama 3.1 checkpoint carries). Empty: none; otherwise rotary_dim / 2 of them.
  std::vector<double> freqFactors;
  // Partial RoPE (Phi-4-mini's partial_rotary_factor 0.75): only a head's
  // first rotaryDim dimensions rotate, the rest pass through. 0: the whole
  // head. Every factor list above then has rotaryDim / 2 entries.
  int64_t rotaryDim = 0;
  // The base of the sliding-window layers' RoPE where it is their own,
  // unscaled (Gemma 3's rope_local_base_freq: 10000 under global layers'
  // 1e6 with linear scaling); 0: every layer rotates alike.
  double localTheta = 0;
};

/// The dimensions of a head that rotate: rope.rotaryDim, else the head.
int64_t rotaryWidth(const RopeSpec &rope, int64_t headDim);

/// Every `interval`-th layer of `layers`, counted from 1 (layers interval -
/// 1, 2 x interval - 1, ...): transformers' SmolLM3 and llama.cpp's NoPE
/// layers for an interval (4 for SmolLM3).
std::vector<int64_t> everyNthLayer(int64_t layers, int64_t interval);

/// The inverse frequencies RoPE rotates pair i of a head by (head_dim / 2 of
/// them): theta^(-2i/rotary_dim), Llama 3's scaling applied, then divided by
/// ropeDivisors()[i]; 0 (no rotation) for the pairs past rotary_dim / 2,
/// which pass through. Every back end and checkpoint check uses this.
std::vector<double> ropeFrequencies(const RopeSpec &rope, int64_t headDim);

/// What each rotated pair's frequency is divided by (rotary_dim / 2 of them):
/// freqFactors[i] (1 without them) times linear scaling's factor or YaRN's
/// blend, 1 / (e + (1 - e) / factor) with e the pair's share kept unscaled;
/// empty where every divisor is 1. The rope ops carry these.
std::vector<double> ropeDivisors(const RopeSpec &rope, int64_t headDim);

/// YaRN's attention factor (its mscale) for a context `factor` times the
/// pretraining one: 0.1 x mscale x ln(factor) + 1 (1 for a factor up to 1),
/// over the same with mscaleAllDim where that is given (DeepSeek's
/// rope_scaling.mscale and mscale_all_dim), as transformers computes it.
double yarnAttentionFactor(double factor, double mscale = 1, double mscaleAllDim = 0);

struct ModelSpec;

/// The longest context the model's RoPE holds: max_position_embeddings, or
/// under YaRN the pretraining context times its factor where that is longer
/// (Qwen3's 32,768 x 4 beyond its 40,960).
int64_t ropeContext(const ModelSpec &m);

/// What the model is: everything needed to define its forward pass.
struct ModelSpec {
  std::string name;
  Architecture architecture = Architecture::llama;
  int64_t hiddenSize = 0;
  int64_t intermediateSize = 0;
  int64_t numLayers = 0;
  int64_t numHeads = 0;
  int64_t numKvHeads = 0;
  int64_t headDim = 0; // hiddenSize / numHeads unless given
  int64_t vocabSize = 0;
  int64_t maxPositions = 0;
  // Sliding-window attention: a row at position p reads the keys above
  // p - slidingWindow, in every layer but fullAttentionLayers. 0: full
  // attention.
  int64_t slidingWindow = 0;
  // Layers that read every key under a sliding window (Gemma 3's every
  // sixth), increasing; empty: every layer slides.
  std::vector<int64_t> fullAttentionLayers;
  double rmsNormEps = 1e-5;
  bool tieWordEmbeddings = false;
  bool attentionBias = false; // q/k/v bias (Qwen2)
  bool attentionOutBias = false; // the output projection's bias (gpt-oss)
  // Attention sinks (gpt-oss): a learned logit per query head
  // (layers.N.attention.sinks) joins each row's softmax as one more
  // unscaled score whose value is zero, so the weights of the keys sum to
  // less than one.
  bool attentionSinks = false;
  // RMSNorm of each query and key head before RoPE, with weights
  // attention.q_norm and attention.k_norm of head_dim each (Qwen3).
  bool qkNorm = false;
  // Layers whose attention has no RoPE (NoPE: SmolLM3's every fourth, from
  // layer 3), increasing; empty: every layer rotates.
  std::vector<int64_t> nopeLayers;
  // The FFN gate's activation (Gemma's gelu_pytorch_tanh, gpt-oss's
  // swiglu_oai with its limit and alpha).
  Activation activation = Activation::silu;
  double swigluLimit = 7.0, swigluAlpha = 1.702;
  // Gemma's sandwich norms: the attention's and the FFN's outputs each
  // RMS-normed (layers.N.post_attention_norm, layers.N.post_ffn_norm)
  // before they join the residual stream.
  bool postNorms = false;
  // The token embeddings multiplied by this (Gemma's sqrt(hidden_size)).
  double embeddingScale = 1.0;
  // The softmax scale is 1 / sqrt(this) (Gemma's query_pre_attn_scalar);
  // 0: head_dim.
  double queryPreAttnScalar = 0;
  // Gemma 2's soft-capping: each scaled attention score s becomes
  // cap x tanh(s / cap) (attention), and so does each logit (final); 0: none.
  double attnSoftcap = 0, finalSoftcap = 0;
  // A sparse mixture-of-experts FFN in every layer (Mixtral's, Qwen3-MoE's):
  // a router (layers.N.feed_forward.router, [experts, hidden]) scores each
  // row's experts, the experts_per_token best by softmax run their gated
  // FFN (layers.N.feed_forward.experts.w1/w3/w2, one matrix an expert,
  // expert_intermediate_size wide) and their outputs are summed weighted by
  // the probabilities, renormalized to sum to 1 where normTopKProb. 0: the
  // dense FFN.
  int64_t numExperts = 0;
  int64_t expertsPerToken = 0;
  int64_t expertIntermediateSize = 0; // 0: intermediate_size
  bool normTopKProb = true;
  // gpt-oss's biases in the mixture: the router's (feed_forward.router_bias,
  // [experts]) and each expert's products'
  // (feed_forward.experts.b1/b3/b2, [experts, width] and [experts, hidden]).
  bool expertBias = false;
  // Qwen2-MoE's shared expert: a dense gated FFN
  // (layers.N.feed_forward.shared_expert.w1/w3/w2, sharedExpertIntermediateSize
  // wide) every row runs beside its routed experts, its output added to
  // theirs, times sigmoid(x . layers.N.feed_forward.shared_expert_gate) where
  // sharedExpertGate. 0: none.
  int64_t sharedExpertIntermediateSize = 0;
  bool sharedExpertGate = false;
  int64_t bosTokenId = 1; // -1: the model has none (SmolLM3's config.json)
  std::vector<int64_t> eosTokenIds{2};
  RopeSpec rope;

  int64_t qDim() const { return numHeads * headDim; }
  /// Gemma 2 or Gemma 3: GeGLU, post-norms, sqrt(hidden) embeddings and
  /// 1 + offset norms (kept f32, read from a checkpoint's offsets).
  bool gemma() const {
    return architecture == Architecture::gemma3 || architecture == Architecture::gemma2;
  }
  /// Whether layer `l` attends under the sliding window (one is set and the
  /// layer is not among fullAttentionLayers).
  bool slides(int64_t l) const;
  int64_t kvDim() const { return numKvHeads * headDim; }
  /// Whether each layer's FFN is a mixture of experts.
  bool moe() const { return numExperts > 0; }
  /// One expert's FFN width (the dense FFN's where the model has none).
  int64_t expertWidth() const {
    return expertIntermediateSize > 0 ? expertIntermediateSize : intermediateSize;
  }
  /// Whether each layer's mixture has a shared expert.
  bool sharedExpert() const { return sharedExpertIntermediateSize > 0; }
};

/// How to compile it.
struct CompileSettings {
  Target target = Target::cpu;
  DType weightDtype = DType::f32;
  // A mixture's routed experts' stacks (most of its weights), where they
  // differ from weightDtype: gpt-oss's MXFP4 experts kept as published.
  std::optional<DType> expertDtype;
  DType kvDtype = DType::f32;     // element type of the KV cache
  int64_t maxBatch = 1;           // decode rows (sequences per step)
  int64_t maxSeqLen = 2048;       // context length the plan supports
  int64_t prefillChunk = 64;      // prompt tokens per prefill call
  int64_t pageSize = 16;          // KV-cache tokens per page
  // Pages in the KV-cache pool. Defaults to max_batch x max_seq_len /
  // page_size (every decode row can reach max_seq_len); a server keeping
  // prefix-cached pages wants more, a batch of mostly short sequences fewer.
  int64_t kvPages = 128;
  // Where some layers slide and others read every key (Gemma 2 and 3, Qwen's
  // mixes, under a context past the window): the sliding layers keep their
  // keys and values in a pool of their own, of window_kv_pages pages, from
  // which a sequence gives back the pages behind its window; the other
  // layers' pool (kv_pages) keeps every page. At least the pages one
  // sequence holds at once under the window, by default max_batch x that;
  // 0 where the layers do not mix (one pool).
  int64_t windowKvPages = 0;
  // Bytes the plan's whole bill may take (one rank's, under tensor
  // parallelism), 0 for no bound: the compiler gives the KV-cache pools not
  // given (kv_pages, window_kv_pages) every page that fits in it
  // (codegen/Compiler.h), and refuses a plan that does not fit.
  int64_t memoryBudget = 0;
  // Ranks each layer is split between (tensor parallelism, a power of two):
  // the plan and its bill are one rank's.
  int64_t tensorParallel = 1;
  // Speculative decoding: draft tokens one verify call checks (its rows are
  // speculate + 1); 0 compiles no @verify entry point.
  int64_t speculate = 0;
  // Prompt log-probabilities: rows of the @score entry point, one sequence's
  // tokens with every row's logits (a prompt is scored score_rows tokens a
  // call); 0 compiles no @score.
  int64_t scoreRows = 0;
  // Rows of smaller copies of decode and of prefill (decode.N, prefill.N),
  // ascending, each below max_batch or prefill_chunk: a step of few rows runs
  // on the smallest copy that holds them, with the kernels chosen for its
  // rows (the cuda target's; the cpu target's kernels do not depend on rows,
  // so it takes none). Not given: defaultDecodeCopies and
  // defaultPrefillCopies, those below the entry point's rows.
  std::vector<int64_t> decodeCopies, prefillCopies;
  // The cuda target: MiB of the GPU's L2 a kernel may fill by asking ahead
  // for the weights the next products stream, beside the one it streams
  // itself (--prefetch-weights, docs/cuda.md); 0 asks for none.
  int64_t l2PrefetchMib = 0;

  /// The experts' type: expertDtype, else weightDtype.
  DType expertWeightDtype() const { return expertDtype.value_or(weightDtype); }
  /// The weight types as messages name them: "int8", or "int8, experts
  /// mxfp4" where the experts' differs.
  std::string weightTypesText() const;

  static std::vector<int64_t> defaultDecodeCopies(Target t);
  static std::vector<int64_t> defaultPrefillCopies(Target t);

  static constexpr int64_t kMaxSpeculate = 8;
  static constexpr int64_t kMaxScoreRows = 512;
  static constexpr int64_t kMaxL2PrefetchMib = 1024;
  static constexpr int64_t kMaxMemoryBudget = int64_t(1) << 62;
  // Weights one op asks L2 for at most (the cuda target's kernels take as
  // many byte ranges).
  static constexpr int64_t kMaxPrefetchWeights = 4;
  static constexpr size_t kMaxCopies = 8; // of decode, and of prefill
  static constexpr int64_t kDefaultMaxSeqLen = 2048;
  static constexpr int64_t kDefaultPrefillChunk = 64;
  static constexpr int64_t kDefaultPageSize = 16;
};

/// A model file read from disk: the spec, the settings and where they came
/// from (for messages).
struct ModelConfig {
  ModelSpec model;
  CompileSettings compile;
  std::string sourcePath;
  /// Field paths given explicitly ("compile.kv_dtype"); settings not given
  /// take defaults derived from other fields when validate() runs, so a
  /// command-line override of weight_dtype also moves kv_dtype.
  std::set<std::string> given;
  /// Source line of each field path ("model.num_heads") where the format
  /// records one (TOML); messages cite it.
  std::map<std::string, int64_t> fieldLines;
  /// The key each field path has in the source file where it differs from
  /// kvplan's ("num_attention_heads" in a config.json for "model.num_heads");
  /// messages name the key as the user wrote it.
  std::map<std::string, std::string> fieldNames;

  /// "file:line: " for a field, or "file: " when no line is known.
  std::string where(const std::string &field) const;
  /// The field's key as the source file writes it.
  std::string nameOf(const std::string &field) const;
};

/// One tensor the model reads, under kvplan's canonical name (Meta's Llama
/// naming: tok_embeddings, layers.N.attention.wq, ..., norm, output).
struct WeightDecl {
  std::string name;
  std::vector<int64_t> shape; // [out, in] for matrices, PyTorch order
  // Whether it is a matrix (or a stack of them), stored at the weight type;
  // the others (norms, biases, sinks, a stack of experts' biases) are
  // vectors, kept in floating point.
  bool matrix() const { return shape.size() >= 2 && !vectors; }
  /// Whether it is a stack of a mixture's routed experts' matrices (the only
  /// stacks of matrices), stored at the expert type.
  bool experts() const { return shape.size() == 3 && !vectors; }
  bool vectors = false; // a stack of vectors ([experts, width] biases)
  bool f32 = false;     // f32 at any weight type (attention sinks, as llama.cpp has them)
};

/// The tensors of the model in a fixed order; the IR builder, the loaders and
/// the parameter count all use this list.
std::vector<WeightDecl> weightTable(const ModelSpec &m);
int64_t parameterCount(const ModelSpec &m);
/// The parameters one token's forward pass reads: all of them, but of a
/// mixture of experts' only the experts_per_token experts it is routed to.
int64_t activeParameterCount(const ModelSpec &m);
/// KV cache bytes of the whole pool, kv_pages x page_size tokens:
/// 2 x layers x kv_heads x head_dim x kv_pages x page_size x element size;
/// where windowed and full layers mix, the windowed layers' pool counts
/// window_kv_pages for them. With tensor parallelism, one rank's cache
/// (kvHeadsPerRank heads).
int64_t kvCacheBytes(const ModelSpec &m, const CompileSettings &c);
/// The KV heads one of `ranks` tensor-parallel ranks holds: its share when
/// the ranks divide them, else the one its query heads read.
int64_t kvHeadsPerRank(const ModelSpec &m, int64_t ranks);

/// Sliding-window attention over the page pool (runtime/Engine.h). The
/// window every attention op applies: the model's sliding_window where the
/// context passes it and every layer slides, else 0 (some layer reads every
/// key, so no page is given back), as the frontend sets it.
int64_t attentionWindow(const ModelSpec &m, const CompileSettings &c);
/// Where some layers slide and others read every key, and the context
/// passes the window: the sliding layers' window, which their own pool of
/// window_kv_pages pages serves; else 0 (one pool).
int64_t mixedWindow(const ModelSpec &m, const CompileSettings &c);
/// The layers of that pool, ascending (empty where there is one pool).
std::vector<int64_t> windowPoolLayers(const ModelSpec &m, const CompileSettings &c);
/// The most rows one call appends to a sequence: prefill_chunk, or more
/// where a verify (speculate + 1) or score call (score_rows) takes more.
int64_t rowsPerCall(const CompileSettings &c);
/// The leading pages a sequence of `length` tokens gives back under a
/// window of `window` keys (0: none): those wholly before its next row's
/// window, but for its last full page, which the prefix cache chains the
/// next full page to.
int64_t pagesBehindWindow(int64_t window, int64_t pageSize, int64_t length);
/// The most pages one sequence holds at once on its way to `tokens` tokens,
/// in calls of at most `rows` rows: ceil(tokens / page_size) without a
/// window; with one, the window's pages and a call's (pagesBehindWindow).
int64_t sequencePeakPages(int64_t window, int64_t pageSize, int64_t rows, int64_t tokens);
/// The same for the settings' max_seq_len: the fewest pages kv_pages may be.
int64_t sequencePeakPages(const ModelSpec &m, const CompileSettings &c);
/// Where the layers mix (mixedWindow): the most pages one sequence holds at
/// once in the sliding layers' pool; else 0.
int64_t windowPeakPages(const ModelSpec &m, const CompileSettings &c);

/// Checks every field and cross-field rule; throws InputError naming the
/// source file, line and field. Fills in derived fields (head_dim) and the
/// defaults of settings not given (kv_dtype, max_seq_len, prefill_chunk,
/// page_size, kv_pages).
void validate(ModelConfig &cfg);

nlohmann::json toJson(const ModelSpec &m);
nlohmann::json toJson(const CompileSettings &c);
ModelSpec modelSpecFromJson(const nlohmann::json &j);
CompileSettings compileSettingsFromJson(const nlohmann::json &j);

} // namespace kvplan
