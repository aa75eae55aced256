// The plan's ops: one struct per llm op a planned entry point holds, with its
// operands, weights and attributes typed and named as the dialect's ODS
// definition names them (ir/LLMOps.td). Each struct lists its fields once, in
// ODS argument order, in `fields()`; the JSON writer and reader, the plan
// emitter (codegen/PlanEmitter.cpp) and a test against the dialect's ODS
// records (tests/unit/PlanSchemaTest.cpp) all walk that list, and the back
// ends dispatch on the op's kind with a switch or std::visit.
#pragma once

#include "support/DType.h"

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace kvplan {

/// Where an operand of a step lives.
enum class OperandKind {
  arena,   // a tensor at `offset` in the entry point's arena
  kvCache, // the whole KV cache (written in place)
  kvView,  // one layer's cached keys or values, read in place
};

struct Operand {
  OperandKind kind = OperandKind::arena;
  std::string name;            // entry-point arguments only: tokens, positions, ...
  int64_t value = -1;          // arena: the SSA value it holds, numbered per entry point
  int64_t offset = 0;          // arena
  std::vector<int64_t> shape;  // arena
  DType dtype = DType::f32;    // arena
  int64_t layer = -1;          // kvView: the layer within its cache
  bool values = false;         // kvView: false = keys, true = values
  /// kvCache, kvView: the sliding layers' own pool (Plan::windowCache,
  /// entry-point arguments window_kv_cache and window_page_table), where
  /// windowed and full layers mix; else the main cache.
  bool window = false;

  int64_t numElements() const;
  /// Both throw InputError when the shape's product overflows 64 bits.
  int64_t bytes() const;
  /// "[4, 8] f32 tensor", for messages.
  std::string describe() const;
  /// Rows and row width of a 2-D arena tensor (1-D: its length and 1).
  int64_t rows() const { return shape.empty() ? 0 : shape.front(); }
  int64_t cols() const { return shape.size() < 2 ? 1 : shape.back(); }
};

/// What an operand field may hold; the names follow the dialect's type
/// constraints (LLM_Activations, LLM_Ids, ...).
enum class OperandClass {
  activations,  // [rows, cols] f32, bf16 or f16 in the arena
  logits,       // [rows, vocab] f32 in the arena
  ids,          // [rows] i32 in the arena
  pageTable,    // [sequences, pages] i32 in the arena
  cache,        // the KV cache
  view,         // a KV-cache view
  keysOrValues, // activations or a view
  rows,         // activations or ids
};
const char *operandClassName(OperandClass c);

enum class AttentionMask { causal, self, cache };
const char *attentionMaskName(AttentionMask m);

/// Llama 3's RoPE frequency scaling.
struct RopeScaling {
  double factor = 0, lowFreqFactor = 0, highFreqFactor = 0;
  int64_t originalMaxPositions = 0;
  bool operator==(const RopeScaling &o) const {
    return factor == o.factor && lowFreqFactor == o.lowFreqFactor &&
           highFreqFactor == o.highFreqFactor && originalMaxPositions == o.originalMaxPositions;
  }
};

/// The RoPE parameters the rope and rope_kv_write ops share.
struct RopeParams {
  int64_t headDim = 0;
  double theta = 0;
  std::optional<RopeScaling> scaling;
  /// Per-pair divisors of the frequencies (rotary_dim / 2, or empty for none).
  std::vector<double> freqFactors;
  /// Partial RoPE: the leading dimensions of a head that rotate (head_dim
  /// when absent).
  std::optional<int64_t> rotaryDim;
  /// The rotated pairs' factor (LongRoPE's where only part of a head rotates).
  std::optional<double> attentionFactor;
  int64_t rotated() const { return rotaryDim.value_or(headDim); }
  bool operator==(const RopeParams &o) const {
    return headDim == o.headDim && theta == o.theta && scaling == o.scaling &&
           freqFactors == o.freqFactors && rotaryDim == o.rotaryDim &&
           attentionFactor == o.attentionFactor;
  }
};
/// The inverse frequencies of a RoPE op (head_dim / 2 of them, 0 for the
/// pairs past rotary_dim / 2, which do not turn), as
/// ropeFrequencies(RopeSpec) computes them.
std::vector<double> ropeFrequencies(const RopeParams &p);
/// What a RoPE op multiplies each pair's cos and sin by (head_dim / 2 of
/// them): its attention factor for the rotated pairs, 1 for the rest.
std::vector<double> ropeAmplitudes(const RopeParams &p);

// Each op's fields(v) calls, in ODS argument order then result order:
//   v.operand(name, Operand&, OperandClass)   an operand
//   v.weight(name, std::string&)              a weight symbol
//   v.optionalWeight(name, std::optional<std::string>&)
//   v.attr(name, int64_t& | double& | AttentionMask&)
//   v.optionalAttr(name, std::optional<RopeScaling>& | std::vector<double>&)
//                                             (an empty vector: absent)
//   v.optionalOperand(name, std::optional<Operand>&, OperandClass)
//   v.attr(name, bool&)                       a unit attribute: present or not
//   v.optionalAttr(name, std::optional<double>& | std::optional<int64_t>&)
//   v.result(name, Operand&, OperandClass)    a result
//   v.results(name, std::vector<Operand>&, OperandClass)  variadic results
// Fields reads or writes them; the const overloads visit a const op.
/// A RoPE op's attributes, in ODS order.
template <typename R, typename V> void visitRopeFields(R &rope, V &v) {
  v.attr("head_dim", rope.headDim);
  v.attr("theta", rope.theta);
  v.optionalAttr("scaling", rope.scaling);
  v.optionalAttr("freq_factors", rope.freqFactors);
  v.optionalAttr("rotary_dim", rope.rotaryDim);
  v.optionalAttr("attention_factor", rope.attentionFactor);
}
/// The arguments from the cache to the layer of an op that rotates queries
/// and writes rotated keys into the cache (rope_kv_write,
/// matvec_rope_kv_write)...
template <typename Self, typename V> void visitRopeIntoCacheArgs(Self &s, V &v) {
  v.operand("cache", s.cache, OperandClass::cache);
  v.operand("page_table", s.pageTable, OperandClass::pageTable);
  v.operand("positions", s.positions, OperandClass::ids);
  visitRopeFields(s.rope, v);
  v.attr("layer", s.layer);
}
/// ... and its results.
template <typename Self, typename V> void visitRopeIntoCacheResults(Self &s, V &v) {
  v.result("rotated_query", s.rotatedQuery, OperandClass::activations);
  v.result("result", s.result, OperandClass::cache);
}
template <typename Self, typename V> void visitRopeIntoCacheFields(Self &s, V &v) {
  visitRopeIntoCacheArgs(s, v);
  visitRopeIntoCacheResults(s, v);
}

/// The weight, input, bias and norm prologue of a matvec op (matvec,
/// matvec_rope_kv_write), in ODS order.
template <typename Self, typename V> void visitMatVecInputFields(Self &s, V &v) {
  v.weight("weight", s.weight);
  v.operand("input", s.input, OperandClass::activations);
  v.optionalWeight("bias", s.bias);
  v.optionalWeight("norm", s.norm);
  v.optionalAttr("eps", s.eps);
}

#define KVPLAN_PLAN_OP(Struct, Name)                                                              \
  static constexpr const char *kName = Name;                                                      \
  template <typename V> void fields(V &&v) { visitFields(*this, v); }                             \
  template <typename V> void fields(V &&v) const { visitFields(*this, v); }

struct EmbeddingOp {
  KVPLAN_PLAN_OP(EmbeddingOp, "embedding")
  std::string weight;
  Operand tokens, result;
  std::optional<double> scale; // the rows' multiplier (Gemma's sqrt(hidden))
  template <typename Self, typename V> static void visitFields(Self &s, V &v) {
    v.weight("weight", s.weight);
    v.operand("tokens", s.tokens, OperandClass::ids);
    v.optionalAttr("scale", s.scale);
    v.result("result", s.result, OperandClass::activations);
  }
};

struct RMSNormOp {
  KVPLAN_PLAN_OP(RMSNormOp, "rms_norm")
  Operand input, result;
  std::string weight;
  double eps = 0;
  template <typename Self, typename V> static void visitFields(Self &s, V &v) {
    v.operand("input", s.input, OperandClass::activations);
    v.weight("weight", s.weight);
    v.attr("eps", s.eps);
    v.result("result", s.result, OperandClass::activations);
  }
};

struct HeadRMSNormOp {
  KVPLAN_PLAN_OP(HeadRMSNormOp, "head_rms_norm")
  Operand input, result;
  std::string weight;
  double eps = 0;
  int64_t headDim = 0;
  template <typename Self, typename V> static void visitFields(Self &s, V &v) {
    v.operand("input", s.input, OperandClass::activations);
    v.weight("weight", s.weight);
    v.attr("eps", s.eps);
    v.attr("head_dim", s.headDim);
    v.result("result", s.result, OperandClass::activations);
  }
};

struct AddRMSNormOp {
  KVPLAN_PLAN_OP(AddRMSNormOp, "add_rms_norm")
  Operand lhs, rhs, normed, residual;
  std::string weight;
  double eps = 0;
  template <typename Self, typename V> static void visitFields(Self &s, V &v) {
    v.operand("lhs", s.lhs, OperandClass::activations);
    v.operand("rhs", s.rhs, OperandClass::activations);
    v.weight("weight", s.weight);
    v.attr("eps", s.eps);
    v.result("normed", s.normed, OperandClass::activations);
    v.result("residual", s.residual, OperandClass::activations);
  }
};

struct LinearOp {
  KVPLAN_PLAN_OP(LinearOp, "linear")
  std::string weight;
  Operand input;
  std::optional<std::string> bias;
  std::vector<Operand> results; // the output columns, split in order
  template <typename Self, typename V> static void visitFields(Self &s, V &v) {
    v.weight("weight", s.weight);
    v.operand("input", s.input, OperandClass::activations);
    v.optionalWeight("bias", s.bias);
    v.results("results", s.results, OperandClass::activations);
  }
  /// Output columns in total (rows of the weight).
  int64_t outFeatures() const;
};

struct RopeOp {
  KVPLAN_PLAN_OP(RopeOp, "rope")
  Operand input, positions, result;
  RopeParams rope;
  template <typename Self, typename V> static void visitFields(Self &s, V &v) {
    v.operand("input", s.input, OperandClass::activations);
    v.operand("positions", s.positions, OperandClass::ids);
    visitRopeFields(s.rope, v);
    v.result("result", s.result, OperandClass::activations);
  }
};

struct AttentionOp {
  KVPLAN_PLAN_OP(AttentionOp, "attention")
  AttentionMask mask = AttentionMask::cache;
  Operand query, key, value, result;
  int64_t numHeads = 0, numKvHeads = 0, headDim = 0;
  double scale = 0;
  /// Sliding-window attention: a row at position p reads the keys above
  /// p - window. Absent: every key up to p.
  std::optional<int64_t> window;
  /// Gemma 2's: each scaled score s becomes softcap x tanh(s / softcap).
  std::optional<double> softcap;
  /// gpt-oss's attention sinks: an f32 weight of one logit a query head,
  /// which joins the head's softmax as a score with no value.
  std::optional<std::string> sinks;
  template <typename Self, typename V> static void visitFields(Self &s, V &v) {
    v.attr("mask", s.mask);
    v.operand("query", s.query, OperandClass::activations);
    v.operand("key", s.key, OperandClass::keysOrValues);
    v.operand("value", s.value, OperandClass::keysOrValues);
    v.attr("num_heads", s.numHeads);
    v.attr("num_kv_heads", s.numKvHeads);
    v.attr("head_dim", s.headDim);
    v.attr("scale", s.scale);
    v.optionalAttr("window", s.window);
    v.optionalAttr("softcap", s.softcap);
    v.optionalWeight("sinks", s.sinks);
    v.result("result", s.result, OperandClass::activations);
  }
};

struct SwiGLUOp {
  KVPLAN_PLAN_OP(SwiGLUOp, "swiglu")
  Operand gate, up, result;
  bool gelu = false; // GELU (tanh) rather than SiLU of the gate: GeGLU
  template <typename Self, typename V> static void visitFields(Self &s, V &v) {
    v.operand("gate", s.gate, OperandClass::activations);
    v.operand("up", s.up, OperandClass::activations);
    v.attr("gelu", s.gelu);
    v.result("result", s.result, OperandClass::activations);
  }
};

struct FusedFFNOp {
  KVPLAN_PLAN_OP(FusedFFNOp, "fused_ffn")
  Operand input, result;
  bool gelu = false; // as SwiGLUOp's
  template <typename Self, typename V> static void visitFields(Self &s, V &v) {
    v.operand("input", s.input, OperandClass::activations);
    v.attr("gelu", s.gelu);
    v.result("result", s.result, OperandClass::activations);
  }
};

struct AddOp {
  KVPLAN_PLAN_OP(AddOp, "add")
  Operand lhs, rhs, result;
  template <typename Self, typename V> static void visitFields(Self &s, V &v) {
    v.operand("lhs", s.lhs, OperandClass::activations);
    v.operand("rhs", s.rhs, OperandClass::activations);
    v.result("result", s.result, OperandClass::activations);
  }
};

struct LogitsOp {
  KVPLAN_PLAN_OP(LogitsOp, "logits")
  std::string weight;
  Operand input, result;
  std::optional<double> softcap; // Gemma 2's: each logit x is softcap x tanh(x / softcap)
  template <typename Self, typename V> static void visitFields(Self &s, V &v) {
    v.weight("weight", s.weight);
    v.operand("input", s.input, OperandClass::activations);
    v.optionalAttr("softcap", s.softcap);
    v.result("result", s.result, OperandClass::logits);
  }
};

struct TakeLastOp {
  KVPLAN_PLAN_OP(TakeLastOp, "take_last")
  Operand input, positions, result;
  template <typename Self, typename V> static void visitFields(Self &s, V &v) {
    v.operand("input", s.input, OperandClass::rows);
    v.operand("positions", s.positions, OperandClass::ids);
    v.result("result", s.result, OperandClass::rows);
  }
};

struct ConvertOp {
  KVPLAN_PLAN_OP(ConvertOp, "convert")
  Operand input, result;
  template <typename Self, typename V> static void visitFields(Self &s, V &v) {
    v.operand("input", s.input, OperandClass::activations);
    v.result("result", s.result, OperandClass::activations);
  }
};

struct KVCacheWriteOp {
  KVPLAN_PLAN_OP(KVCacheWriteOp, "kv_cache_write")
  Operand key, value, cache, pageTable, positions, result;
  int64_t layer = 0;
  template <typename Self, typename V> static void visitFields(Self &s, V &v) {
    v.operand("key", s.key, OperandClass::activations);
    v.operand("value", s.value, OperandClass::activations);
    v.operand("cache", s.cache, OperandClass::cache);
    v.operand("page_table", s.pageTable, OperandClass::pageTable);
    v.operand("positions", s.positions, OperandClass::ids);
    v.attr("layer", s.layer);
    v.result("result", s.result, OperandClass::cache);
  }
};

struct KVCacheReadOp {
  KVPLAN_PLAN_OP(KVCacheReadOp, "kv_cache_read")
  Operand cache, pageTable, positions, keys, values;
  int64_t layer = 0;
  template <typename Self, typename V> static void visitFields(Self &s, V &v) {
    v.operand("cache", s.cache, OperandClass::cache);
    v.operand("page_table", s.pageTable, OperandClass::pageTable);
    v.operand("positions", s.positions, OperandClass::ids);
    v.attr("layer", s.layer);
    v.result("keys", s.keys, OperandClass::view);
    v.result("values", s.values, OperandClass::view);
  }
};

/// RoPE of the queries and keys fused with the cache write of the rotated
/// keys and the values (made by --fuse-rope-kv-write for the cuda target).
/// Without key and value, each row of query holds the queries, the keys
/// and the values side by side (a fused QKV product's one result).
struct RopeKVWriteOp {
  KVPLAN_PLAN_OP(RopeKVWriteOp, "rope_kv_write")
  Operand query;
  std::optional<Operand> key, value;
  Operand cache, pageTable, positions, rotatedQuery, result;
  RopeParams rope;
  int64_t layer = 0;
  // Qwen3's q/k norms, folded in: all three or none.
  std::optional<std::string> qNorm, kNorm;
  std::optional<double> normEps;
  template <typename Self, typename V> static void visitFields(Self &s, V &v) {
    v.operand("query", s.query, OperandClass::activations);
    v.optionalOperand("key", s.key, OperandClass::activations);
    v.optionalOperand("value", s.value, OperandClass::activations);
    visitRopeIntoCacheArgs(s, v);
    v.optionalWeight("q_norm", s.qNorm);
    v.optionalWeight("k_norm", s.kNorm);
    v.optionalAttr("norm_eps", s.normEps);
    visitRopeIntoCacheResults(s, v);
  }
  bool packed() const { return !key; }
};

/// The sum of every tensor-parallel rank's rows (made by
/// --partition-tensor-parallel after a linear over features cut between
/// ranks). A collective: every rank runs it in the same order.
struct AllReduceOp {
  KVPLAN_PLAN_OP(AllReduceOp, "all_reduce")
  Operand input, result;
  template <typename Self, typename V> static void visitFields(Self &s, V &v) {
    v.operand("input", s.input, OperandClass::activations);
    v.result("result", s.result, OperandClass::activations);
  }
};

/// A product of a few rows with its neighbours folded in (made by
/// --fuse-matvec for the cuda target): the input rows RMS-normed first
/// (`norm`, `eps`), SwiGLU over the gate|up halves of the product
/// (`swiglu`; GeGLU with `gelu`), the addend added to it (`addend`).
struct MatVecOp {
  KVPLAN_PLAN_OP(MatVecOp, "matvec")
  std::string weight;
  Operand input;
  std::optional<std::string> bias, norm;
  std::optional<double> eps;
  bool swiglu = false;
  bool gelu = false; // with swiglu: GELU (tanh) of the gate, GeGLU
  std::optional<double> softcap; // a head's, as LogitsOp's
  std::optional<Operand> addend;
  std::vector<Operand> results;
  template <typename Self, typename V> static void visitFields(Self &s, V &v) {
    visitMatVecInputFields(s, v);
    v.attr("swiglu", s.swiglu);
    v.attr("gelu", s.gelu);
    v.optionalAttr("softcap", s.softcap);
    v.optionalOperand("addend", s.addend, OperandClass::activations);
    v.results("results", s.results, OperandClass::activations);
  }
  /// Rows of the weight: the output columns, twice them with swiglu.
  int64_t weightRows() const;
};

/// A QKV product of a few rows with RoPE and the cache write as its
/// epilogue (made by --fuse-matvec for the cuda target): the norm and bias
/// as matvec's, the rotated queries as the result, the rotated keys and the
/// values into the cache.
struct MatVecRopeKVWriteOp {
  KVPLAN_PLAN_OP(MatVecRopeKVWriteOp, "matvec_rope_kv_write")
  std::string weight;
  Operand input;
  std::optional<std::string> bias, norm;
  std::optional<double> eps;
  Operand cache, pageTable, positions, rotatedQuery, result;
  RopeParams rope;
  int64_t layer = 0;
  template <typename Self, typename V> static void visitFields(Self &s, V &v) {
    visitMatVecInputFields(s, v);
    visitRopeIntoCacheFields(s, v);
  }
};

/// A mixture of experts' FFN (llm.moe_ffn): each row's experts_per_token
/// experts by the router's softmax, their gated FFNs summed weighted by
/// their probabilities (renormalized with norm_top_k). The stacks `gate`,
/// `up` and `down` hold one matrix an expert. With `shared` (a shared
/// expert's output rows), each row adds its row of shared, times
/// sigmoid(input row . shared_gate) where `sharedGate` ([1, in]) is given.
struct MoEFFNOp {
  KVPLAN_PLAN_OP(MoEFFNOp, "moe_ffn")
  Operand input, result;
  std::string router, gate, up, down;
  int64_t expertsPerToken = 0;
  bool normTopK = false;
  bool gelu = false; // as SwiGLUOp's
  std::optional<Operand> shared;
  std::optional<std::string> sharedGate;
  /// gpt-oss's: the router's bias ([experts]), the experts' products'
  /// ([experts, ff], [experts, ff], [experts, in]; all three or none), and
  /// its clamped SwiGLU (both or neither).
  std::optional<std::string> routerBias, gateBias, upBias, downBias;
  std::optional<double> swigluLimit, swigluAlpha;
  template <typename Self, typename V> static void visitFields(Self &s, V &v) {
    v.operand("input", s.input, OperandClass::activations);
    v.weight("router", s.router);
    v.weight("gate", s.gate);
    v.weight("up", s.up);
    v.weight("down", s.down);
    v.attr("experts_per_token", s.expertsPerToken);
    v.attr("norm_top_k", s.normTopK);
    v.attr("gelu", s.gelu);
    v.optionalOperand("shared", s.shared, OperandClass::activations);
    v.optionalWeight("shared_gate", s.sharedGate);
    v.optionalWeight("router_bias", s.routerBias);
    v.optionalWeight("gate_bias", s.gateBias);
    v.optionalWeight("up_bias", s.upBias);
    v.optionalWeight("down_bias", s.downBias);
    v.optionalAttr("swiglu_limit", s.swigluLimit);
    v.optionalAttr("swiglu_alpha", s.swigluAlpha);
    v.result("result", s.result, OperandClass::activations);
  }
};

#undef KVPLAN_PLAN_OP

/// Every op a plan can hold. The order is OpKind's.
using PlanOp = std::variant<EmbeddingOp, RMSNormOp, AddRMSNormOp, LinearOp, RopeOp, AttentionOp,
                            SwiGLUOp, FusedFFNOp, AddOp, LogitsOp, TakeLastOp, ConvertOp,
                            KVCacheWriteOp, KVCacheReadOp, RopeKVWriteOp, AllReduceOp, MatVecOp,
                            MatVecRopeKVWriteOp, HeadRMSNormOp, MoEFFNOp>;
enum class OpKind {
  embedding, rmsNorm, addRmsNorm, linear, rope, attention, swiglu, fusedFFN, add, logits,
  takeLast, convert, kvCacheWrite, kvCacheRead, ropeKVWrite, allReduce, matVec,
  matVecRopeKVWrite, headRmsNorm, moeFfn,
};
inline constexpr size_t kNumOpKinds = std::variant_size_v<PlanOp>;
static_assert(size_t(OpKind::moeFfn) + 1 == kNumOpKinds, "OpKind follows PlanOp");

/// The op's name in the plan and the dialect ("rms_norm" for llm.rms_norm).
const char *opName(OpKind k);
/// A default-constructed op of kind `k`, for a reader to fill with fields().
PlanOp makeOp(OpKind k);
/// The kind whose name is `name`, if any.
std::optional<OpKind> opKindNamed(const std::string &name);

/// Rows [begin, end) of an f32, bf16 or f16 weight.
struct WeightRows {
  std::string weight;
  int64_t begin = 0, end = 0;
  bool operator==(const WeightRows &o) const {
    return weight == o.weight && begin == o.begin && end == o.end;
  }
};

/// One op of an entry point, run in order.
struct Step {
  PlanOp op;
  /// Where in the model it comes from (the IR location: "layers.3.attention",
  /// fused ops join their parts with " + "): for messages.
  std::string loc;
  /// The cuda target: weight rows the step's first kernel asks the GPU's L2
  /// for ahead, for the products after it (llm.prefetch, --prefetch-weights).
  std::vector<WeightRows> prefetch{};

  OpKind kind() const { return OpKind(op.index()); }
  const char *name() const { return opName(kind()); }
  template <typename T> const T &as() const { return std::get<T>(op); }
  template <typename T> T &as() { return std::get<T>(op); }
  template <typename T> const T *tryAs() const { return std::get_if<T>(&op); }
};

/// Calls fn(name, operand, isResult) for every operand and result of `s`,
/// in field order (each variadic result on its own).
template <typename Fn> void forEachOperand(const Step &s, Fn &&fn);
/// The step's operands (inputs) and results (outputs), in field order.
std::vector<const Operand *> stepInputs(const Step &s);
std::vector<const Operand *> stepOutputs(const Step &s);
/// The weights the step reads, in field order.
std::vector<std::string> stepWeights(const Step &s);
/// The RoPE parameters of a step that rotates (rope, rope_kv_write,
/// matvec_rope_kv_write), or null.
const RopeParams *stepRope(const Step &s);

/// A step's product with a weight matrix (linear, logits, matvec,
/// matvec_rope_kv_write): the input's rows times the weight's transpose.
struct StepProduct {
  const std::string *weight = nullptr;
  const Operand *input = nullptr; // its rows are the product's
};
/// The step's product, if it has one.
std::optional<StepProduct> stepProduct(const Step &s);

//===----------------------------------------------------------------------===//
// Implementation
//===----------------------------------------------------------------------===//

namespace detail {
template <typename Fn> struct OperandVisitor {
  Fn &fn;
  void operand(const char *n, const Operand &o, OperandClass) { fn(n, o, false); }
  void optionalOperand(const char *n, const std::optional<Operand> &o, OperandClass) {
    if (o) fn(n, *o, false);
  }
  void result(const char *n, const Operand &o, OperandClass) { fn(n, o, true); }
  void results(const char *n, const std::vector<Operand> &v, OperandClass) {
    for (const Operand &o : v) fn(n, o, true);
  }
  template <typename T> void weight(const char *, const T &) {}
  template <typename T> void optionalWeight(const char *, const T &) {}
  template <typename T> void attr(const char *, const T &) {}
  template <typename T> void optionalAttr(const char *, const T &) {}
};
} // namespace detail

template <typename Fn> void forEachOperand(const Step &s, Fn &&fn) {
  std::visit([&](const auto &op) { op.fields(detail::OperandVisitor<Fn>{fn}); }, s.op);
}

} // namespace kvplan
