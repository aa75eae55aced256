// The per-op shape rules of validatePlan, and the check of the inputs the
// engine writes before each step. A plan is untrusted input: every row
// count, row width, head count and weight size a kernel reads or writes by
// is tied here to an operand whose byte range the dataflow check
// (plan/PlanJson.cpp) keeps inside the arena, to a weight of the table, or
// to the KV cache's geometry, so a plan that validates cannot make an
// executor touch memory outside the buffers its bill allocated.
#include "plan/PlanShapes.h"

#include "support/Align.h"

#include <algorithm>
#include <tuple>

namespace kvplan {

namespace {

std::string dims(const std::vector<int64_t> &shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

/// Checks one step's operands against each other, its attributes, its
/// weights and the cache, as the kernels of each back end index them.
class StepShapes {
public:
  StepShapes(const Plan &plan, const EntryPoint &ep, const std::string &at)
      : plan(plan), ep(ep), kv(plan.kvCache), at(at) {}

  void operator()(const EmbeddingOp &op) {
    entryArg("tokens", op.tokens, "tokens");
    const WeightEntry &w = matrix("weight", op.weight);
    shape("result", op.result, {op.tokens.rows(), w.shape[1]},
          "a row of weight '" + op.weight + "' per token");
  }
  void operator()(const RMSNormOp &op) {
    shape("result", op.result, op.input.shape, "the input's shape");
    normWeight(op.weight, op.input.cols());
  }
  void operator()(const HeadRMSNormOp &op) {
    shape("result", op.result, op.input.shape, "the input's shape");
    if (op.headDim < 1 || op.input.cols() % op.headDim != 0)
      fail("attribute 'head_dim' is " + std::to_string(op.headDim) + " for rows of " +
           std::to_string(op.input.cols()) + ", expected a divisor of the row width");
    normWeight(op.weight, op.headDim);
  }
  void operator()(const AddRMSNormOp &op) {
    for (auto [n, o] : {std::pair<const char *, const Operand *>{"rhs", &op.rhs},
                        {"normed", &op.normed}, {"residual", &op.residual}})
      shape(n, *o, op.lhs.shape, "the shape of 'lhs'");
    normWeight(op.weight, op.lhs.cols());
  }
  void operator()(const LinearOp &op) {
    const WeightEntry &w = matrix("weight", op.weight);
    equal("field 'input' has rows of", op.input.cols(), w.shape[1],
          "the columns of weight '" + op.weight + "' " + dims(w.shape));
    int64_t out = 0;
    for (const Operand &r : op.results) {
      equal("field 'results' has a result of rows", r.rows(), op.input.rows(),
            "the input's rows");
      out += r.cols();
    }
    equal("field 'results' has columns", out, w.shape[0],
          "the rows of weight '" + op.weight + "' " + dims(w.shape));
    if (op.bias) vector("bias", *op.bias, w.shape[0]);
  }
  void operator()(const LogitsOp &op) {
    const WeightEntry &w = matrix("weight", op.weight);
    equal("field 'input' has rows of", op.input.cols(), w.shape[1],
          "the columns of weight '" + op.weight + "' " + dims(w.shape));
    shape("result", op.result, {op.input.rows(), w.shape[0]},
          "a logit per row of weight '" + op.weight + "' for each input row");
  }
  void operator()(const RopeOp &op) {
    entryArg("positions", op.positions, "positions");
    entryRows("input", op.input);
    shape("result", op.result, op.input.shape, "the input's shape");
    heads(op.input, op.rope.headDim);
  }
  void operator()(const AttentionOp &op);
  void operator()(const SwiGLUOp &op) {
    shape("up", op.up, op.gate.shape, "the shape of 'gate'");
    shape("result", op.result, op.gate.shape, "the shape of 'gate'");
  }
  void operator()(const FusedFFNOp &op) {
    if (op.input.cols() % 2 != 0)
      fail("field 'input' has rows of " + std::to_string(op.input.cols()) +
           ", which is not a gate and an up projection of equal width");
    shape("result", op.result, {op.input.rows(), op.input.cols() / 2},
          "the input's rows, half its columns");
  }
  void operator()(const MoEFFNOp &op) {
    shape("result", op.result, op.input.shape, "the input's shape");
    const WeightEntry &router = matrix("router", op.router);
    const int64_t in = op.input.cols(), experts = router.shape[0];
    equal("field 'input' has rows of", in, router.shape[1],
          "the columns of weight '" + op.router + "' " + dims(router.shape));
    if (op.expertsPerToken < 1 || op.expertsPerToken > experts)
      fail("attribute 'experts_per_token' is " + std::to_string(op.expertsPerToken) +
           ", expected 1 to the router's " + std::to_string(experts) + " experts");
    equal("attribute 'experts_per_token' is", op.expertsPerToken, plan.model.expertsPerToken,
          "the model's num_experts_per_tok");
    const WeightEntry &gate = weight("gate", op.gate);
    const int64_t ff = gate.shape.size() == 3 ? gate.shape[1] : 0;
    for (auto [field, name, want] :
         {std::tuple<const char *, const std::string *, std::vector<int64_t>>{
              "gate", &op.gate, {experts, ff, in}},
          {"up", &op.up, {experts, ff, in}},
          {"down", &op.down, {experts, in, ff}}}) {
      const WeightEntry &w = weight(field, *name);
      if (w.shape != want || ff < 1)
        fail(std::string("field '") + field + "' names weight '" + *name + "' of shape " +
             dims(w.shape) + ", expected " + dims(want) + " (a matrix for each of the router's " +
             std::to_string(experts) + " experts)");
    }
    sharedExpert(op, in);
    expertBiases(op, experts, ff, in);
  }
  /// A shared expert's rows (the input's shape, f32) and its gate ([1, in]),
  /// each present where the model has it.
  void sharedExpert(const MoEFFNOp &op, int64_t in) const {
    if (op.shared.has_value() != plan.model.sharedExpert())
      fail(op.shared ? "field 'shared' adds a shared expert the model does not have"
                     : "has no field 'shared', and the model has a shared expert "
                       "(shared_expert_intermediate_size)");
    if (op.sharedGate.has_value() != (op.shared && plan.model.sharedExpertGate))
      fail(op.sharedGate ? "field 'shared_gate' gates a shared expert the model does not gate"
                         : "has no field 'shared_gate', and the model gates its shared expert");
    if (op.shared) {
      shape("shared", *op.shared, op.input.shape, "the input's shape");
      if (op.shared->dtype != DType::f32)
        fail("field 'shared' is " + op.shared->describe() + ", expected f32");
    }
    if (op.sharedGate) {
      const WeightEntry &g = matrix("shared_gate", *op.sharedGate);
      if (g.shape != std::vector<int64_t>{1, in})
        fail("field 'shared_gate' names weight '" + *op.sharedGate + "' of shape " +
             dims(g.shape) + ", expected " + dims({1, in}) + " (one row of the input's width)");
    }
  }
  void operator()(const AddOp &op) {
    shape("rhs", op.rhs, op.lhs.shape, "the shape of 'lhs'");
    shape("result", op.result, op.lhs.shape, "the shape of 'lhs'");
  }
  void operator()(const TakeLastOp &op) {
    entryArg("positions", op.positions, "positions");
    entryRows("input", op.input);
    std::vector<int64_t> last = op.input.shape;
    last[0] = 1;
    shape("result", op.result, last, "one row of the input");
    if (op.result.dtype != op.input.dtype)
      fail("field 'result' is " + op.result.describe() + " and the input is " +
           dtypeName(op.input.dtype) + "; take_last copies the row as it is");
  }
  void operator()(const ConvertOp &op) {
    shape("result", op.result, op.input.shape, "the input's shape");
  }
  void operator()(const KVCacheWriteOp &op) {
    cacheArgs(op.cache, op.pageTable, op.positions);
    entryRows("key", op.key);
    shape("key", op.key, {ep.rows, kv.kvHeads * kv.headDim}, cacheRow());
    shape("value", op.value, {ep.rows, kv.kvHeads * kv.headDim}, cacheRow());
  }
  void operator()(const KVCacheReadOp &op) {
    cacheArgs(op.cache, op.pageTable, op.positions);
    view("keys", op.keys, false, op.layer, op.cache.window);
    view("values", op.values, true, op.layer, op.cache.window);
  }
  void operator()(const RopeKVWriteOp &op);
  void operator()(const MatVecOp &op);
  void operator()(const MatVecRopeKVWriteOp &op);
  void operator()(const AllReduceOp &op) {
    if (plan.settings.tensorParallel < 2)
      fail("sums the ranks' rows, and the plan is not tensor parallel (tensor_parallel 1)");
    if (op.input.dtype != DType::f32)
      fail("sums " + op.input.describe() + "s; the ranks sum f32 rows");
    shape("result", op.result, op.input.shape, "the input's shape");
  }

private:
  [[noreturn]] void fail(const std::string &what) const {
    throw InputError("the plan is incompatible because " + at + " " + what +
                     "; recompile the model with this kvplan");
  }
  void shape(const char *field, const Operand &o, const std::vector<int64_t> &want,
             const std::string &why) const {
    if (o.shape != want)
      fail(std::string("field '") + field + "' is " + o.describe() + ", expected " + dims(want) +
           " (" + why + ")");
  }
  void equal(const std::string &what, int64_t found, int64_t want, const std::string &why) const {
    if (found != want)
      fail(what + " " + std::to_string(found) + ", expected " + std::to_string(want) + " (" + why +
           ")");
  }
  std::string cacheRow() const {
    return "a row per entry-point row of the cache's " + std::to_string(kv.kvHeads) +
           " kv_heads x head_dim " + std::to_string(kv.headDim);
  }
  const WeightEntry &weight(const char *field, const std::string &name) const {
    const WeightEntry *w = plan.findWeight(name);
    if (!w)
      fail(std::string("field '") + field + "' names weight '" + name +
           "', which is not in the weight table");
    return *w;
  }
  /// A matvec's weight against its input's columns, and its norm prologue.
  void matvecInput(const std::string &weight, const Operand &input,
                   const std::optional<std::string> &norm, const std::optional<double> &eps);
  const WeightEntry &matrix(const char *field, const std::string &name) const {
    const WeightEntry &w = weight(field, name);
    if (w.shape.size() != 2)
      fail(std::string("field '") + field + "' names weight '" + name + "' of shape " +
           dims(w.shape) + ", expected a matrix");
    return w;
  }
  /// A norm's scale or a linear's bias: `n` float elements.
  void vector(const char *field, const std::string &name, int64_t n) const {
    const WeightEntry &w = weight(field, name);
    if (!isFloatDType(w.dtype) || w.shape != std::vector<int64_t>{n})
      fail(std::string("field '") + field + "' names weight '" + name + "', " + dims(w.shape) +
           " " + dtypeName(w.dtype) + ", expected [" + std::to_string(n) +
           "] f32, bf16 or f16 (one per column)");
  }
  void normWeight(const std::string &name, int64_t cols) const { vector("weight", name, cols); }
  /// A stack of float vectors (gpt-oss's experts' biases), of shape `want`.
  void vectors(const char *field, const std::string &name, const std::vector<int64_t> &want) const {
    const WeightEntry &w = weight(field, name);
    if (!isFloatDType(w.dtype) || w.shape != want)
      fail(std::string("field '") + field + "' names weight '" + name + "', " + dims(w.shape) +
           " " + dtypeName(w.dtype) + ", expected " + dims(want) + " f32, bf16 or f16");
  }
  /// gpt-oss's parts of a mixture: the router's bias, the experts' biases
  /// (all three or none) and the clamped SwiGLU's limit and alpha.
  void expertBiases(const MoEFFNOp &op, int64_t experts, int64_t ff, int64_t in) const {
    const ModelSpec &m = plan.model;
    if (op.routerBias.has_value() != m.expertBias || op.gateBias.has_value() != m.expertBias)
      fail(std::string(m.expertBias ? "lacks" : "has") + " the router's or the experts' biases, "
           "and the model " + (m.expertBias ? "has them (expert_bias)" : "has none"));
    if (op.swigluLimit.has_value() != (m.activation == Activation::swiglu_oai))
      fail(std::string(op.swigluLimit ? "has" : "lacks") + " attribute 'swiglu_limit', and the "
           "model's activation is " + activationName(m.activation));
    if (op.routerBias) vector("router_bias", *op.routerBias, experts);
    const bool any = op.gateBias || op.upBias || op.downBias;
    // Each rank would add the downs' biases to its partial rows.
    if (any && plan.settings.tensorParallel > 1)
      fail("has experts' biases, which a tensor-parallel plan does not split");
    if (any && !(op.gateBias && op.upBias && op.downBias))
      fail("has some of fields 'gate_bias', 'up_bias' and 'down_bias', expected all or none");
    if (any) {
      vectors("gate_bias", *op.gateBias, {experts, ff});
      vectors("up_bias", *op.upBias, {experts, ff});
      vectors("down_bias", *op.downBias, {experts, in});
    }
    if (op.swigluLimit.has_value() != op.swigluAlpha.has_value())
      fail("has one of attributes 'swiglu_limit' and 'swiglu_alpha', expected both or neither");
    if (op.swigluLimit && (!(*op.swigluLimit > 0) || !(*op.swigluAlpha > 0) || op.gelu))
      fail("has attributes 'swiglu_limit' and 'swiglu_alpha' that are not both positive, or "
           "with 'gelu'");
  }
  /// A positions or page-table operand is the entry point's argument: the
  /// one the executor checks before each step.
  void entryArg(const char *field, const Operand &o, const char *role) const {
    const Operand *a = ep.arg(role);
    if (!a) fail(std::string("field '") + field + "' reads the entry point's argument '" + role +
                 "', which it does not have");
    if (o.value != a->value)
      fail(std::string("field '") + field + "' reads value " + std::to_string(o.value) +
           ", not the entry point's argument '" + role + "' (value " + std::to_string(a->value) +
           ")");
  }
  /// Ops that read positions (and the page table) per row cover the entry
  /// point's rows.
  void entryRows(const char *field, const Operand &o) const {
    if (o.rows() != ep.rows)
      fail(std::string("field '") + field + "' is " + o.describe() + " with " +
           std::to_string(o.rows()) + " rows, expected the entry point's " +
           std::to_string(ep.rows) + " (it is read by position)");
  }
  /// A cache op's page table is its cache's own (the sliding layers' pool
  /// has one of its own).
  void cacheArgs(const Operand &cache, const Operand &pageTable,
                 const Operand &positions) const {
    entryArg("page_table", pageTable, cache.window ? "window_page_table" : "page_table");
    entryArg("positions", positions, "positions");
  }
  /// `o` is the keys' (or values') view of `layer` of the main cache, or
  /// with `window` of the sliding layers'.
  void view(const char *field, const Operand &o, bool values, int64_t layer, bool window) const {
    if (o.kind != OperandKind::kvView || o.values != values || o.layer != layer ||
        o.window != window)
      fail(std::string("field '") + field + "' is not the " + (values ? "values" : "keys") +
           " view of layer " + std::to_string(layer) + " of the " +
           (window ? "sliding layers' cache" : "cache"));
  }
  /// `o`'s rows are whole heads of `headDim`, an even number (RoPE rotates
  /// pairs).
  void heads(const Operand &o, int64_t headDim) const {
    if (headDim < 2 || headDim % 2 != 0 || o.cols() % headDim != 0)
      fail("attribute 'head_dim' is " + std::to_string(headDim) + " for rows of " +
           std::to_string(o.cols()) + ", expected an even divisor of the row width");
  }

  const Plan &plan;
  const EntryPoint &ep;
  const KVCacheLayout &kv;
  const std::string &at;
};

void StepShapes::operator()(const AttentionOp &op) {
  if (op.numHeads < 1 || op.numKvHeads < 1 || op.headDim < 1 || op.numHeads % op.numKvHeads != 0)
    fail("has num_heads " + std::to_string(op.numHeads) + ", num_kv_heads " +
         std::to_string(op.numKvHeads) + " and head_dim " + std::to_string(op.headDim) +
         ", expected positive counts with num_heads a multiple of num_kv_heads");
  entryRows("query", op.query);
  shape("query", op.query, {ep.rows, op.numHeads * op.headDim}, "num_heads x head_dim per row");
  shape("result", op.result, op.query.shape, "the query's shape");
  // The model's sliding window, where the attention slides; the sliding
  // layers' own pool, where the plan has one, holds exactly the sliding
  // layers (the engine gives back their pages behind that window).
  if (op.window && *op.window != plan.model.slidingWindow)
    fail("attribute 'window' is " + std::to_string(*op.window) + " and the model's "
         "sliding_window " + std::to_string(plan.model.slidingWindow));
  if (op.sinks.has_value() != plan.model.attentionSinks)
    fail(op.sinks ? "field 'sinks' adds attention sinks the model does not have"
                  : "has no field 'sinks', and the model has attention sinks");
  if (op.sinks) {
    if (plan.settings.tensorParallel > 1)
      fail("has attention sinks, which a tensor-parallel plan does not split");
    const WeightEntry &w = weight("sinks", *op.sinks);
    if (w.dtype != DType::f32 || w.shape != std::vector<int64_t>{op.numHeads})
      fail("field 'sinks' names weight '" + *op.sinks + "', " + dims(w.shape) + " " +
           dtypeName(w.dtype) + ", expected [" + std::to_string(op.numHeads) +
           "] f32 (one logit a query head)");
  }
  if (op.mask == AttentionMask::cache) {
    if (op.key.kind != OperandKind::kvView)
      fail("field 'key' is not a KV-cache view, and mask 'cache' attends over the cache");
    if (plan.windowCache.layers > 0 && op.key.window != op.window.has_value())
      fail(std::string("reads the ") + (op.key.window ? "sliding layers'" : "main") +
           " pool, and " + (op.window ? "slides" : "reads every key"));
    view("key", op.key, false, op.key.layer, op.key.window);
    view("value", op.value, true, op.key.layer, op.key.window);
    equal("attribute 'num_kv_heads' is", op.numKvHeads, kv.kvHeads, "the cache's kv_heads");
    equal("attribute 'head_dim' is", op.headDim, kv.headDim, "the cache's head_dim");
    return;
  }
  for (auto [n, o] : {std::pair<const char *, const Operand *>{"key", &op.key},
                      {"value", &op.value}}) {
    if (o->kind != OperandKind::arena)
      fail(std::string("field '") + n + "' is a KV-cache view, and mask '" +
           attentionMaskName(op.mask) + "' attends over fresh keys and values");
    shape(n, *o, {ep.rows, op.numKvHeads * op.headDim}, "num_kv_heads x head_dim per row");
  }
}

void StepShapes::matvecInput(const std::string &weight, const Operand &input,
                             const std::optional<std::string> &norm,
                             const std::optional<double> &eps) {
  const WeightEntry &w = matrix("weight", weight);
  equal("field 'input' has rows of", input.cols(), w.shape[1],
        "the columns of weight '" + weight + "' " + dims(w.shape));
  if (norm.has_value() != eps.has_value())
    fail("has a norm without its eps, or an eps without a norm");
  if (norm) vector("norm", *norm, input.cols());
}

void StepShapes::operator()(const MatVecOp &op) {
  matvecInput(op.weight, op.input, op.norm, op.eps);
  const WeightEntry &w = *plan.findWeight(op.weight);
  for (const Operand &r : op.results)
    equal("field 'results' has a result of rows", r.rows(), op.input.rows(), "the input's rows");
  equal(op.swiglu ? "field 'results' has twice the columns" : "field 'results' has columns",
        op.weightRows(), w.shape[0], "the rows of weight '" + op.weight + "' " + dims(w.shape));
  if (op.bias) vector("bias", *op.bias, w.shape[0]);
  if ((op.swiglu || op.addend) && op.results.size() != 1)
    fail("has " + std::to_string(op.results.size()) + " results; with swiglu or an addend it has one");
  if (op.addend) shape("addend", *op.addend, op.results.front().shape, "the result's shape");
}

void StepShapes::operator()(const RopeKVWriteOp &op) {
  cacheArgs(op.cache, op.pageTable, op.positions);
  entryRows("query", op.query);
  entryRows("rotated_query", op.rotatedQuery);
  heads(op.rotatedQuery, op.rope.headDim);
  equal("attribute 'head_dim' is", op.rope.headDim, kv.headDim, "the cache's head_dim");
  const int64_t kvCols = kv.kvHeads * kv.headDim;
  if (op.key.has_value() != op.value.has_value())
    fail("has keys without values, or values without keys (or neither: packed in 'query')");
  if (op.qNorm.has_value() != op.kNorm.has_value() ||
      op.qNorm.has_value() != op.normEps.has_value())
    fail("has some of q_norm, k_norm and norm_eps, which come together or not at all");
  if (op.qNorm) {
    normWeight(*op.qNorm, op.rope.headDim);
    normWeight(*op.kNorm, op.rope.headDim);
  }
  if (op.packed()) {
    shape("query", op.query, {ep.rows, op.rotatedQuery.cols() + 2 * kvCols},
          "the rotated queries' columns, then the keys' and the values' side by side, " +
              cacheRow());
    return;
  }
  shape("rotated_query", op.rotatedQuery, op.query.shape, "the query's shape");
  shape("key", *op.key, {ep.rows, kvCols}, cacheRow());
  shape("value", *op.value, {ep.rows, kvCols}, cacheRow());
}

void StepShapes::operator()(const MatVecRopeKVWriteOp &op) {
  cacheArgs(op.cache, op.pageTable, op.positions);
  matvecInput(op.weight, op.input, op.norm, op.eps);
  entryRows("input", op.input);
  entryRows("rotated_query", op.rotatedQuery);
  heads(op.rotatedQuery, op.rope.headDim);
  equal("attribute 'head_dim' is", op.rope.headDim, kv.headDim, "the cache's head_dim");
  const WeightEntry &w = *plan.findWeight(op.weight);
  equal("field 'rotated_query' has columns, with the cache's keys and values,",
        op.rotatedQuery.cols() + 2 * kv.kvHeads * kv.headDim, w.shape[0],
        "the rows of weight '" + op.weight + "' " + dims(w.shape));
  if (op.bias) vector("bias", *op.bias, w.shape[0]);
}

std::string rowName(const EntryPoint &ep, int64_t r) {
  return "row " + std::to_string(r) + " of entry point '" + ep.name + "'";
}

[[noreturn]] void refuseInput(const std::string &what) {
  throw InputError("the step's inputs are refused: " + what +
                   " (the engine writes these; an executor never runs a step past its buffers)");
}

} // namespace

void checkStepShapes(const Plan &plan, const EntryPoint &ep, const Step &s,
                     const std::string &at) {
  StepShapes rules(plan, ep, at);
  std::visit([&](const auto &op) { rules(op); }, s.op);
}

void checkCacheGeometry(const Plan &p) {
  const KVCacheLayout &kv = p.kvCache;
  const ModelSpec &m = p.model;
  auto require = [](bool ok, const std::string &what) {
    if (!ok)
      throw InputError("the plan is incompatible because the KV cache " + what +
                       "; recompile the model with this kvplan");
  };
  const KVCacheLayout &w = p.windowCache;
  require(kv.layers + w.layers == m.numLayers,
          "has " + std::to_string(kv.layers + w.layers) + " layers and the model " +
              std::to_string(m.numLayers));
  require(int64_t(windowPoolLayers(m, p.settings).size()) == w.layers,
          "has " + std::to_string(w.layers) + " layers in the sliding layers' pool, and the "
          "model slides in " + std::to_string(windowPoolLayers(m, p.settings).size()) +
          " beside layers reading every key");
  const int64_t kvHeads = kvHeadsPerRank(m, p.ranks());
  require(kv.kvHeads == kvHeads,
          "has " + std::to_string(kv.kvHeads) + " kv_heads and the model " +
              std::to_string(m.numKvHeads) +
              (p.ranks() > 1 ? " (" + std::to_string(kvHeads) + " a rank of " +
                                   std::to_string(p.ranks()) + ")"
                             : std::string()));
  require(kv.headDim == m.headDim, "has head_dim " + std::to_string(kv.headDim) +
                                       " and the model " + std::to_string(m.headDim));
  require(kv.pageSize >= 1 && p.settings.maxSeqLen >= 1,
          "has pages of " + std::to_string(kv.pageSize) + " tokens for max_seq_len " +
              std::to_string(p.settings.maxSeqLen) + " (both must be at least 1)");
  const int64_t want = ceilDiv(p.settings.maxSeqLen, kv.pageSize);
  require(kv.pagesPerSequence == want,
          "has " + std::to_string(kv.pagesPerSequence) +
              " pages per sequence, and max_seq_len " + std::to_string(p.settings.maxSeqLen) +
              " in pages of " + std::to_string(kv.pageSize) + " takes " + std::to_string(want));
}

RunInputLimits runInputLimits(const Plan &p, const EntryPoint &ep) {
  RunInputLimits l;
  l.tokens = p.model.vocabSize;
  for (const Step &s : ep.steps)
    if (const EmbeddingOp *e = s.tryAs<EmbeddingOp>())
      if (const WeightEntry *w = p.findWeight(e->weight))
        l.tokens = std::min(l.tokens, w->shape.front());
  l.positions = std::min(p.settings.maxSeqLen, p.kvCache.pagesPerSequence * p.kvCache.pageSize);
  l.pages = p.kvCache.pages;
  l.pageSize = p.kvCache.pageSize;
  l.pagesPerSequence = p.kvCache.pagesPerSequence;
  l.tableRows = ep.arg("page_table")->rows();
  l.windowPages = p.windowCache.layers > 0 ? p.windowCache.pages : 0;
  return l;
}

namespace {
/// The entries [0, read) of one row's page-table row lie in [0, pages).
void checkTableRow(const EntryPoint &ep, int64_t r, int32_t p, const int32_t *table,
                   int64_t from, int64_t read, int64_t pages, const char *which) {
  for (int64_t i = from; i < read; ++i)
    if (table[i] < 0 || table[i] >= pages)
      refuseInput(rowName(ep, r) + " at position " + std::to_string(p) + " reads " + which +
                  "page-table entry " + std::to_string(i) + ", page " +
                  std::to_string(table[i]) + ", outside the cache's [0, " +
                  std::to_string(pages) + ")");
}
} // namespace

void checkRunInputs(const RunInputLimits &l, const EntryPoint &ep, const int32_t *tokens,
                    const int32_t *positions, const int32_t *pageTable, int64_t rows,
                    const int32_t *windowPageTable) {
  int64_t sharedChecked = 0; // entries of a shared table row checked so far
  for (int64_t r = 0; r < rows; ++r) {
    if (tokens[r] < 0 || tokens[r] >= l.tokens)
      refuseInput(rowName(ep, r) + " has token " + std::to_string(tokens[r]) + ", outside [0, " +
                  std::to_string(l.tokens) + ") (the vocabulary)");
    const int32_t p = positions[r];
    if (p == -1) continue; // padding: no cache slot is read or written
    if (p < 0 || p >= l.positions)
      refuseInput(rowName(ep, r) + " has position " + std::to_string(p) + ", outside [-1, " +
                  std::to_string(l.positions) + ") (-1 pads; max_seq_len)");
    // The attention reads pages [0, p / page_size] of the row's table row.
    const bool shared = l.tableRows == 1;
    const int64_t row = (shared ? 0 : r) * l.pagesPerSequence, read = p / l.pageSize + 1;
    const int64_t from = shared ? sharedChecked : 0;
    checkTableRow(ep, r, p, pageTable + row, from, read, l.pages, "");
    if (l.windowPages > 0)
      checkTableRow(ep, r, p, windowPageTable + row, from, read, l.windowPages,
                    "the sliding layers' ");
    if (shared) sharedChecked = std::max(sharedChecked, read);
  }
}

} // namespace kvplan
