// Names of the plan's ops and operand classes, and what the ops compute that
// every back end must agree on (RoPE frequencies).
#include "plan/PlanOps.h"
#include "spec/ModelSpec.h"
#include "support/CheckedMath.h"

#include <array>
#include <cmath>
#include <utility>

namespace kvplan {

namespace {

template <size_t... I> constexpr std::array<const char *, kNumOpKinds> opNames(std::index_sequence<I...>) {
  return {std::variant_alternative_t<I, PlanOp>::kName...};
}
constexpr auto kOpNames = opNames(std::make_index_sequence<kNumOpKinds>());

template <size_t... I> PlanOp makeOpAt(size_t k, std::index_sequence<I...>) {
  using Make = PlanOp (*)();
  static constexpr Make make[] = {[] { return PlanOp(std::in_place_index<I>); }...};
  return make[k]();
}

} // namespace

std::string Operand::describe() const {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "] " + dtypeName(dtype) + " tensor";
}

int64_t Operand::numElements() const {
  int64_t n = 1;
  for (int64_t d : shape) n = checkedMul(n, d, [&] { return "the elements of a " + describe(); });
  return n;
}

int64_t Operand::bytes() const {
  return checkedMul(numElements(), dtypeBytes(dtype),
                    [&] { return "the bytes of a " + describe(); });
}

int64_t LinearOp::outFeatures() const {
  int64_t n = 0;
  for (const Operand &r : results) n += r.cols();
  return n;
}

int64_t MatVecOp::weightRows() const {
  int64_t n = 0;
  for (const Operand &r : results) n += r.cols();
  return swiglu ? 2 * n : n;
}

const char *opName(OpKind k) { return kOpNames[size_t(k)]; }

PlanOp makeOp(OpKind k) { return makeOpAt(size_t(k), std::make_index_sequence<kNumOpKinds>()); }

std::optional<OpKind> opKindNamed(const std::string &name) {
  for (size_t i = 0; i < kNumOpKinds; ++i)
    if (name == kOpNames[i]) return OpKind(i);
  return std::nullopt;
}

const char *operandClassName(OperandClass c) {
  switch (c) {
  case OperandClass::activations: return "a tensor of f32, bf16 or f16 rows";
  case OperandClass::logits: return "a tensor of f32 rows";
  case OperandClass::ids: return "a vector of i32";
  case OperandClass::pageTable: return "a page table (i32 rows)";
  case OperandClass::cache: return "the KV cache";
  case OperandClass::view: return "a KV-cache view";
  case OperandClass::keysOrValues: return "a tensor or a KV-cache view";
  case OperandClass::rows: return "a tensor of rows or a vector of i32";
  }
  return "?";
}

const char *attentionMaskName(AttentionMask m) {
  switch (m) {
  case AttentionMask::causal: return "causal";
  case AttentionMask::self: return "self";
  case AttentionMask::cache: return "cache";
  }
  return "?";
}

std::vector<const Operand *> stepInputs(const Step &s) {
  std::vector<const Operand *> v;
  forEachOperand(s, [&](const char *, const Operand &o, bool result) {
    if (!result) v.push_back(&o);
  });
  return v;
}

std::vector<const Operand *> stepOutputs(const Step &s) {
  std::vector<const Operand *> v;
  forEachOperand(s, [&](const char *, const Operand &o, bool result) {
    if (result) v.push_back(&o);
  });
  return v;
}

namespace {
struct WeightNames {
  std::vector<std::string> &names;
  void weight(const char *, const std::string &w) { names.push_back(w); }
  void optionalWeight(const char *, const std::optional<std::string> &w) {
    if (w) names.push_back(*w);
  }
  template <typename... T> void operand(const T &...) {}
  template <typename... T> void optionalOperand(const T &...) {}
  template <typename... T> void result(const T &...) {}
  template <typename... T> void results(const T &...) {}
  template <typename... T> void attr(const T &...) {}
  template <typename... T> void optionalAttr(const T &...) {}
};
} // namespace

std::optional<StepProduct> stepProduct(const Step &s) {
  if (const LinearOp *l = s.tryAs<LinearOp>()) return StepProduct{&l->weight, &l->input};
  if (const LogitsOp *h = s.tryAs<LogitsOp>()) return StepProduct{&h->weight, &h->input};
  if (const MatVecOp *m = s.tryAs<MatVecOp>()) return StepProduct{&m->weight, &m->input};
  if (const MatVecRopeKVWriteOp *m = s.tryAs<MatVecRopeKVWriteOp>())
    return StepProduct{&m->weight, &m->input};
  return std::nullopt;
}

std::vector<std::string> stepWeights(const Step &s) {
  std::vector<std::string> names;
  std::visit([&](const auto &op) { op.fields(WeightNames{names}); }, s.op);
  return names;
}

const RopeParams *stepRope(const Step &s) {
  if (const RopeOp *op = s.tryAs<RopeOp>()) return &op->rope;
  if (const RopeKVWriteOp *op = s.tryAs<RopeKVWriteOp>()) return &op->rope;
  if (const MatVecRopeKVWriteOp *op = s.tryAs<MatVecRopeKVWriteOp>()) return &op->rope;
  return nullptr;
}

std::vector<double> ropeFrequencies(const RopeParams &p) {
  RopeSpec r;
  r.theta = p.theta;
  if (p.scaling) {
    r.type = RopeType::llama3;
    r.factor = p.scaling->factor;
    r.lowFreqFactor = p.scaling->lowFreqFactor;
    r.highFreqFactor = p.scaling->highFreqFactor;
    r.originalMaxPositions = p.scaling->originalMaxPositions;
  }
  r.freqFactors = p.freqFactors;
  r.rotaryDim = p.rotaryDim.value_or(0);
  return ropeFrequencies(r, p.headDim);
}

std::vector<double> ropeAmplitudes(const RopeParams &p) {
  std::vector<double> a(size_t(p.headDim / 2), 1.0);
  for (int64_t i = 0; i < std::min(p.rotated(), p.headDim) / 2; ++i)
    a[size_t(i)] = p.attentionFactor.value_or(1.0);
  return a;
}

} // namespace kvplan
