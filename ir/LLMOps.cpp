// The llm dialect's op verifiers: shapes, element types and weight symbols.
#include "ir/LLMDialect.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/OpImplementation.h"

#include <cmath>
#include <string>

using namespace mlir;
using namespace kvplan::llm;

namespace {

std::string shapeStr(ArrayRef<int64_t> shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

RankedTensorType tensorOf(Value v) { return cast<RankedTensorType>(v.getType()); }
int64_t rows(Value v) { return tensorOf(v).getDimSize(0); }
int64_t cols(Value v) { return tensorOf(v).getDimSize(1); }

/// Looks up the weight `ref` names and checks its shape.
LogicalResult verifyWeight(Operation *op, SymbolTableCollection &symbols, FlatSymbolRefAttr ref,
                           ArrayRef<int64_t> expected, StringRef role) {
  auto w = symbols.lookupNearestSymbolFrom<WeightOp>(op, ref);
  if (!w)
    return op->emitOpError() << role << " " << ref << " does not name an llm.weight";
  ArrayRef<int64_t> shape = w.getTensorType().getShape();
  if (shape != expected)
    return op->emitOpError() << role << " " << ref << " has shape " << shapeStr(shape)
                             << " but this op needs " << shapeStr(expected);
  return success();
}

LogicalResult sameRows(Operation *op, Value a, Value b, StringRef what) {
  if (rows(a) != rows(b))
    return op->emitOpError() << what << ": " << rows(a) << " vs " << rows(b) << " rows";
  return success();
}

/// `stored` holds the same rows as `computed`, in any float type.
LogicalResult sameShape(Operation *op, Value computed, Value stored, StringRef what) {
  if (tensorOf(computed).getShape() != tensorOf(stored).getShape())
    return op->emitOpError() << what << " must have shape "
                             << shapeStr(tensorOf(computed).getShape()) << ", got "
                             << shapeStr(tensorOf(stored).getShape());
  return success();
}

/// A linear reads rows in f32 or in its weights' element type.
LogicalResult verifyInputType(Operation *op, SymbolTableCollection &symbols,
                              FlatSymbolRefAttr weight, Value input) {
  auto w = symbols.lookupNearestSymbolFrom<WeightOp>(op, weight);
  Type in = tensorOf(input).getElementType();
  if (w && !in.isF32() && in != w.getTensorType().getElementType())
    return op->emitOpError() << "reads " << in << " rows, which must be f32 or the weights' type "
                             << w.getTensorType().getElementType();
  return success();
}

} // namespace

/// `: T` when the result is stored in the operand's type, `: T -> U` when
/// it is stored narrower.
static ParseResult parseStoredAs(OpAsmParser &parser, Type &operand, Type &result) {
  if (parser.parseType(operand))
    return failure();
  if (succeeded(parser.parseOptionalArrow()))
    return parser.parseType(result);
  result = operand;
  return success();
}

static void printStoredAs(OpAsmPrinter &printer, Operation *, Type operand, Type result) {
  printer << operand;
  if (result != operand)
    printer << " -> " << result;
}

#define GET_OP_CLASSES
#include "ir/LLMOps.cpp.inc"

//===----------------------------------------------------------------------===//
// WeightOp
//===----------------------------------------------------------------------===//

LogicalResult WeightOp::verify() {
  RankedTensorType t = getTensorType();
  if (t.getRank() < 1 || t.getRank() > 3)
    return emitOpError() << "weights are vectors, matrices or stacks of matrices (a mixture of "
                            "experts'), got rank "
                         << t.getRank();
  Type elt = t.getElementType();
  bool isFloat = elt.isF32() || elt.isBF16() || elt.isF16();
  const bool grouped = elt.isInteger(8) || elt.isInteger(4) || isa<MXFP4Type>(elt);
  if (!isFloat && !(grouped && t.getRank() >= 2))
    return emitOpError() << "weight element type must be f32, bf16 or f16 (or for matrices i8: "
                            "int8 groups of 32 with f32 scales, i4: int4 groups of 32 with f32 "
                            "scales and minimums, or !llm.mxfp4: MXFP4 groups of 32 with E8M0 "
                            "scales), got "
                         << elt;
  for (int64_t d : t.getShape())
    if (d <= 0)
      return emitOpError() << "weight dimensions must be positive, got "
                           << shapeStr(t.getShape());
  if (getParts() && getParts()->empty())
    return emitOpError() << "concat needs at least one part";
  return success();
}

//===----------------------------------------------------------------------===//
// Model ops
//===----------------------------------------------------------------------===//

/// Gemma 2's soft-capping, where an op has it: a positive finite cap.
static LogicalResult verifySoftcap(Operation *op, std::optional<APFloat> cap) {
  if (cap && !(cap->convertToDouble() > 0 && std::isfinite(cap->convertToDouble())))
    return op->emitOpError() << "softcap must be positive and finite (absent: none)";
  return success();
}

LogicalResult EmbeddingOp::verify() {
  if (tensorOf(getTokens()).getDimSize(0) != rows(getResult()))
    return emitOpError() << "one row per token: " << tensorOf(getTokens()).getDimSize(0)
                         << " tokens but " << rows(getResult()) << " result rows";
  if (std::optional<APFloat> s = getScale();
      s && !(s->convertToDouble() > 0 && std::isfinite(s->convertToDouble())))
    return emitOpError() << "scale must be positive and finite";
  return success();
}

LogicalResult EmbeddingOp::verifySymbolUses(SymbolTableCollection &symbols) {
  auto w = symbols.lookupNearestSymbolFrom<WeightOp>(*this, getWeightAttr());
  if (!w)
    return emitOpError() << "table " << getWeightAttr() << " does not name an llm.weight";
  ArrayRef<int64_t> shape = w.getTensorType().getShape();
  if (shape.size() != 2 || shape[1] != cols(getResult()))
    return emitOpError() << "table " << getWeightAttr() << " has shape " << shapeStr(shape)
                         << " but rows of width " << cols(getResult()) << " are needed";
  return success();
}

LogicalResult RMSNormOp::verify() {
  if (!(getEps().convertToDouble() > 0))
    return emitOpError() << "eps must be positive";
  return sameShape(*this, getInput(), getResult(), "result");
}

LogicalResult RMSNormOp::verifySymbolUses(SymbolTableCollection &symbols) {
  return verifyWeight(*this, symbols, getWeightAttr(), {cols(getInput())}, "scale");
}

LogicalResult HeadRMSNormOp::verify() {
  if (!(getEps().convertToDouble() > 0))
    return emitOpError() << "eps must be positive";
  const int64_t hd = getHeadDim();
  if (hd <= 0 || cols(getInput()) % hd != 0)
    return emitOpError() << "row width " << cols(getInput())
                         << " is not a whole number of heads of head_dim " << hd;
  return success();
}

LogicalResult HeadRMSNormOp::verifySymbolUses(SymbolTableCollection &symbols) {
  return verifyWeight(*this, symbols, getWeightAttr(), {int64_t(getHeadDim())}, "scale");
}

LogicalResult AddRMSNormOp::verify() {
  if (!(getEps().convertToDouble() > 0))
    return emitOpError() << "eps must be positive";
  return sameShape(*this, getLhs(), getNormed(), "normed");
}

LogicalResult AddRMSNormOp::verifySymbolUses(SymbolTableCollection &symbols) {
  return verifyWeight(*this, symbols, getWeightAttr(), {cols(getLhs())}, "scale");
}

LogicalResult MoEFFNOp::verify() {
  if (failed(sameShape(*this, getInput(), getResult(), "result")))
    return failure();
  if (!tensorOf(getResult()).getElementType().isF32())
    return emitOpError() << "result is f32, got " << tensorOf(getResult()).getElementType();
  if (getExpertsPerToken() < 1)
    return emitOpError() << "experts_per_token must be positive, got " << getExpertsPerToken();
  if (getShared() && failed(sameShape(*this, getInput(), getShared(), "shared")))
    return failure();
  if (getShared() && !tensorOf(getShared()).getElementType().isF32())
    return emitOpError() << "shared is f32, got " << tensorOf(getShared()).getElementType();
  if (getSharedGateAttr() && !getShared())
    return emitOpError() << "gates a shared expert's output and has none (shared)";
  if (bool(getGateBiasAttr()) != bool(getUpBiasAttr()) ||
      bool(getGateBiasAttr()) != bool(getDownBiasAttr()))
    return emitOpError() << "has gate_bias, up_bias and down_bias, or none of them";
  if (bool(getSwigluLimit()) != bool(getSwigluAlpha()))
    return emitOpError() << "has swiglu_limit and swiglu_alpha, or neither";
  if (getSwigluLimit() && (!(getSwigluLimit()->convertToDouble() > 0) ||
                           !(getSwigluAlpha()->convertToDouble() > 0) || getGelu()))
    return emitOpError() << "swiglu_limit and swiglu_alpha are positive, without gelu";
  return success();
}

LogicalResult MoEFFNOp::verifySymbolUses(SymbolTableCollection &symbols) {
  auto router = symbols.lookupNearestSymbolFrom<WeightOp>(*this, getRouterAttr());
  auto gate = symbols.lookupNearestSymbolFrom<WeightOp>(*this, getGateAttr());
  if (!router || !gate || gate.getTensorType().getRank() != 3)
    return emitOpError() << "router " << getRouterAttr() << " and gate " << getGateAttr()
                         << " must name an llm.weight and a stack of experts' matrices";
  const int64_t in = cols(getInput()), experts = router.getTensorType().getDimSize(0),
                ff = gate.getTensorType().getDimSize(1);
  if (getExpertsPerToken() > uint64_t(experts))
    return emitOpError() << "experts_per_token " << getExpertsPerToken() << " is more than the "
                         << experts << " experts";
  if (failed(verifyWeight(*this, symbols, getRouterAttr(), {experts, in}, "router")) ||
      failed(verifyWeight(*this, symbols, getGateAttr(), {experts, ff, in}, "gate")) ||
      failed(verifyWeight(*this, symbols, getUpAttr(), {experts, ff, in}, "up")) ||
      failed(verifyWeight(*this, symbols, getDownAttr(), {experts, in, ff}, "down")))
    return failure();
  if (getSharedGateAttr() &&
      failed(verifyWeight(*this, symbols, getSharedGateAttr(), {1, in}, "shared_gate")))
    return failure();
  if (getRouterBiasAttr() &&
      failed(verifyWeight(*this, symbols, getRouterBiasAttr(), {experts}, "router_bias")))
    return failure();
  if (getGateBiasAttr() &&
      (failed(verifyWeight(*this, symbols, getGateBiasAttr(), {experts, ff}, "gate_bias")) ||
       failed(verifyWeight(*this, symbols, getUpBiasAttr(), {experts, ff}, "up_bias")) ||
       failed(verifyWeight(*this, symbols, getDownBiasAttr(), {experts, in}, "down_bias"))))
    return failure();
  return verifyInputType(*this, symbols, getGateAttr(), getInput());
}

int64_t LinearOp::getOutFeatures() {
  int64_t n = 0;
  for (Value r : getResults())
    n += cols(r);
  return n;
}

LogicalResult LinearOp::verify() {
  if (getResults().empty())
    return emitOpError() << "needs at least one result";
  for (Value r : getResults()) {
    if (failed(sameRows(*this, getInput(), r, "each result has the input's rows")))
      return failure();
    if (!tensorOf(r).getElementType().isF32())
      return emitOpError() << "results are f32, got " << tensorOf(r).getElementType();
  }
  return success();
}

LogicalResult LinearOp::verifySymbolUses(SymbolTableCollection &symbols) {
  int64_t out = getOutFeatures();
  if (failed(verifyWeight(*this, symbols, getWeightAttr(), {out, cols(getInput())}, "weight")) ||
      failed(verifyInputType(*this, symbols, getWeightAttr(), getInput())))
    return failure();
  if (getBiasAttr())
    return verifyWeight(*this, symbols, getBiasAttr(), {out}, "bias");
  return success();
}

/// RoPE's rotated width (an even number up to head_dim), its attention
/// factor (positive and finite), and its frequency factors, when given: one
/// positive number per rotated pair.
static LogicalResult verifyRopeAttrs(Operation *op, int64_t headDim,
                                     std::optional<uint64_t> rotaryDim,
                                     std::optional<APFloat> attentionFactor,
                                     std::optional<ArrayRef<double>> factors) {
  const int64_t rot = rotaryDim ? int64_t(*rotaryDim) : headDim;
  if (rot < 2 || rot > headDim || rot % 2 != 0)
    return op->emitOpError() << "rotary_dim must be even and from 2 to head_dim " << headDim
                             << ", got " << rot;
  if (attentionFactor) {
    const double a = attentionFactor->convertToDouble();
    if (!(a > 0) || !std::isfinite(a))
      return op->emitOpError() << "attention_factor must be positive and finite, got " << a;
  }
  if (!factors)
    return success();
  if (int64_t(factors->size()) * 2 != rot)
    return op->emitOpError() << "freq_factors has " << factors->size() << " entries; expected "
                             << (rotaryDim ? "rotary_dim" : "head_dim") << " / 2 = " << rot / 2;
  for (double f : *factors)
    if (!(f > 0) || !std::isfinite(f))
      return op->emitOpError() << "freq_factors must be positive and finite, got " << f;
  return success();
}

LogicalResult RopeOp::verify() {
  if (failed(sameRows(*this, getInput(), getPositions(), "one position per row")))
    return failure();
  int64_t hd = getHeadDim();
  if (hd <= 0 || hd % 2 != 0)
    return emitOpError() << "head_dim must be positive and even, got " << hd;
  if (cols(getInput()) % hd != 0)
    return emitOpError() << "row width " << cols(getInput()) << " is not a multiple of head_dim "
                         << hd;
  if (!(getTheta().convertToDouble() > 0))
    return emitOpError() << "theta must be positive";
  return verifyRopeAttrs(*this, hd, getRotaryDim(), getAttentionFactor(), getFreqFactors());
}

LogicalResult AttentionOp::verify() {
  int64_t h = getNumHeads(), kvh = getNumKvHeads(), d = getHeadDim();
  if (h <= 0 || kvh <= 0 || d <= 0)
    return emitOpError() << "num_heads, num_kv_heads and head_dim must be positive";
  if (h % kvh != 0)
    return emitOpError() << "num_heads " << h << " is not a multiple of num_kv_heads " << kvh;
  if (cols(getQuery()) != h * d)
    return emitOpError() << "query rows must be num_heads x head_dim = " << h * d
                         << " wide, got " << cols(getQuery());
  if (failed(sameShape(*this, getQuery(), getResult(), "result")))
    return failure();
  if (!(getScale().convertToDouble() > 0))
    return emitOpError() << "scale must be positive";
  if (std::optional<uint64_t> w = getWindow(); w && int64_t(*w) <= 0)
    return emitOpError() << "window must be positive (absent: every earlier key)";
  if (failed(verifySoftcap(*this, getSoftcap())))
    return failure();
  bool cached = getMask() == AttentionMask::cache;
  for (Value kv : {getKey(), getValue()}) {
    if (auto view = dyn_cast<KVViewType>(kv.getType())) {
      if (!cached)
        return emitOpError() << "KV-cache views need mask 'cache'";
      if (view.getKvHeads() != kvh || view.getHeadDim() != d)
        return emitOpError() << "KV-cache view has " << view.getKvHeads() << " heads of "
                             << view.getHeadDim() << " but the op needs " << kvh << " of " << d;
      continue;
    }
    if (cached)
      return emitOpError() << "mask 'cache' needs keys and values from llm.kv_cache_read";
    if (rows(kv) != rows(getQuery()))
      return emitOpError() << "fresh keys and values need one row per query row";
    if (cols(kv) != kvh * d)
      return emitOpError() << "keys and values must be num_kv_heads x head_dim = " << kvh * d
                           << " wide, got " << cols(kv);
    if (tensorOf(kv).getElementType() != tensorOf(getQuery()).getElementType())
      return emitOpError() << "fresh keys and values must have the query's element type";
  }
  return success();
}

LogicalResult AttentionOp::verifySymbolUses(SymbolTableCollection &symbols) {
  if (!getSinksAttr()) return success();
  if (failed(verifyWeight(*this, symbols, getSinksAttr(), {int64_t(getNumHeads())}, "sinks")))
    return failure();
  auto w = symbols.lookupNearestSymbolFrom<WeightOp>(*this, getSinksAttr());
  if (!w.getTensorType().getElementType().isF32())
    return emitOpError() << "sinks " << getSinksAttr() << " must be f32, got "
                         << w.getTensorType().getElementType();
  return success();
}

LogicalResult FusedFFNOp::verify() {
  if (failed(sameRows(*this, getInput(), getResult(), "result has the input's rows")))
    return failure();
  if (cols(getInput()) != 2 * cols(getResult()))
    return emitOpError() << "input must hold gate and up side by side: " << cols(getInput())
                         << " columns for a result of " << cols(getResult());
  return success();
}

LogicalResult SwiGLUOp::verify() { return sameShape(*this, getGate(), getResult(), "result"); }

LogicalResult ConvertOp::verify() {
  if (failed(sameShape(*this, getInput(), getResult(), "result")))
    return failure();
  if (tensorOf(getInput()).getElementType() == tensorOf(getResult()).getElementType())
    return emitOpError() << "must change the element type";
  return success();
}

LogicalResult LogitsOp::verify() {
  if (failed(verifySoftcap(*this, getSoftcap())))
    return failure();
  return sameRows(*this, getInput(), getResult(), "one row of logits per input row");
}

LogicalResult LogitsOp::verifySymbolUses(SymbolTableCollection &symbols) {
  if (failed(verifyWeight(*this, symbols, getWeightAttr(), {cols(getResult()), cols(getInput())},
                          "head")))
    return failure();
  return verifyInputType(*this, symbols, getWeightAttr(), getInput());
}

LogicalResult TakeLastOp::verify() {
  if (failed(sameRows(*this, getInput(), getPositions(), "one position per row")))
    return failure();
  RankedTensorType in = tensorOf(getInput()), out = tensorOf(getResult());
  SmallVector<int64_t> expected(in.getShape());
  expected[0] = 1;
  if (out.getShape() != ArrayRef<int64_t>(expected) || out.getElementType() != in.getElementType())
    return emitOpError() << "result must be one row of the input: expected "
                         << RankedTensorType::get(expected, in.getElementType());
  return success();
}

//===----------------------------------------------------------------------===//
// KV cache
//===----------------------------------------------------------------------===//

namespace {

/// Page table and positions of a cache access agree with its `rows` rows.
LogicalResult verifyCacheAccess(Operation *op, KVCacheType cache, Value pageTable,
                                Value positions, int64_t rowCount, int64_t layer) {
  if (layer < 0 || layer >= cache.getLayers())
    return op->emitOpError() << "layer " << layer << " is outside the cache's "
                             << cache.getLayers() << " layers";
  if (tensorOf(positions).getDimSize(0) != rowCount)
    return op->emitOpError() << "one position per row: " << tensorOf(positions).getDimSize(0)
                             << " positions for " << rowCount << " rows";
  int64_t tableRows = rows(pageTable);
  if (tableRows != 1 && tableRows != rowCount)
    return op->emitOpError() << "page table needs one row (one sequence) or one row per row ("
                             << rowCount << "), got " << tableRows;
  // A table may list more pages than the pool has: under a sliding window
  // a sequence gives back those behind it (insert-kv-cache checks the pool).
  return success();
}

/// The RoPE of queries `queryCols` wide and of keys written to `cache`:
/// whole heads of an even head_dim that is the cache's, a positive theta,
/// one frequency factor per pair if any.
template <typename Op>
LogicalResult verifyRopeIntoCache(Op op, KVCacheType cache, int64_t hd, int64_t queryCols) {
  if (hd != cache.getHeadDim())
    return op->emitOpError() << "head_dim " << hd << " differs from the cache's "
                             << cache.getHeadDim();
  if (hd % 2 != 0)
    return op->emitOpError() << "head_dim must be even, got " << hd;
  if (queryCols % hd != 0)
    return op->emitOpError() << "query rows of " << queryCols
                             << " are not a whole number of heads of " << hd;
  if (!(op.getTheta().convertToDouble() > 0))
    return op->emitOpError() << "theta must be positive";
  return verifyRopeAttrs(op, hd, op.getRotaryDim(), op.getAttentionFactor(),
                         op.getFreqFactors());
}

} // namespace

LogicalResult KVCacheWriteOp::verify() {
  auto cache = cast<KVCacheType>(getCache().getType());
  if (getKey().getType() != getValue().getType())
    return emitOpError() << "keys and values must have the same type";
  if (cols(getKey()) != cache.getKvHeads() * cache.getHeadDim())
    return emitOpError() << "rows must be kv_heads x head_dim = "
                         << cache.getKvHeads() * cache.getHeadDim() << " wide, got "
                         << cols(getKey());
  return verifyCacheAccess(*this, cache, getPageTable(), getPositions(), rows(getKey()),
                           getLayer());
}

LogicalResult KVCacheReadOp::verify() {
  auto cache = cast<KVCacheType>(getCache().getType());
  for (Type t : {getKeys().getType(), getValues().getType()}) {
    auto v = cast<KVViewType>(t);
    if (v.getKvHeads() != cache.getKvHeads() || v.getHeadDim() != cache.getHeadDim() ||
        v.getElementType() != cache.getElementType())
      return emitOpError() << "views must match the cache's kv_heads, head_dim and element type";
  }
  int64_t n = tensorOf(getPositions()).getDimSize(0);
  return verifyCacheAccess(*this, cache, getPageTable(), getPositions(), n, getLayer());
}

Operation *RopeKVWriteOp::getSoleProducer() {
  Operation *producer = getQuery().getDefiningOp();
  const Value rows[] = {getQuery(), getKey(), getValue()};
  const unsigned parts = isPacked() ? 1 : 3;
  if (!producer || producer->getNumResults() != parts) return nullptr;
  for (unsigned i = 0; i < parts; ++i)
    if (rows[i] != producer->getResult(i) || !rows[i].hasOneUse()) return nullptr;
  return producer;
}

LogicalResult RopeKVWriteOp::verify() {
  auto cache = cast<KVCacheType>(getCache().getType());
  const int64_t hd = getHeadDim(), kvCols = cache.getKvHeads() * hd;
  const int64_t qcols = cols(getRotatedQuery());
  if (failed(verifyRopeIntoCache(*this, cache, hd, qcols)))
    return failure();
  if (bool(getKey()) != bool(getValue()))
    return emitOpError() << "takes keys and values together, or neither (packed in the query rows)";
  if (bool(getQNorm()) != bool(getKNorm()) || bool(getQNorm()) != bool(getNormEps()))
    return emitOpError() << "takes q_norm, k_norm and norm_eps together, or none of them";
  if (getNormEps() && !(getNormEps()->convertToDouble() > 0))
    return emitOpError() << "norm_eps must be positive";
  if (isPacked()) {
    if (cols(getQuery()) != qcols + 2 * kvCols)
      return emitOpError() << "packed rows must be the " << qcols << " query columns and 2 x "
                           << kvCols << " of keys and values wide, got " << cols(getQuery());
    if (tensorOf(getQuery()).getElementType() != tensorOf(getRotatedQuery()).getElementType())
      return emitOpError() << "rotated queries must have the packed rows' element type";
    if (failed(sameRows(*this, getQuery(), getRotatedQuery(), "packed and rotated queries")))
      return failure();
  } else {
    if (getQuery().getType() != getRotatedQuery().getType())
      return emitOpError() << "rotated queries must have the queries' type";
    if (getKey().getType() != getValue().getType())
      return emitOpError() << "keys and values must have the same type";
    if (cols(getKey()) != kvCols)
      return emitOpError() << "key rows must be kv_heads x head_dim = " << kvCols << " wide, got "
                           << cols(getKey());
    if (failed(sameRows(*this, getQuery(), getKey(), "queries and keys")))
      return failure();
  }
  return verifyCacheAccess(*this, cache, getPageTable(), getPositions(), rows(getQuery()),
                           getLayer());
}

namespace {

/// A matvec's norm prologue: a scale and its eps together, a positive eps,
/// f32 rows to normalise.
LogicalResult verifyNormPrologue(Operation *op, std::optional<StringRef> norm,
                                 std::optional<APFloat> eps, Value input) {
  if (norm.has_value() != eps.has_value())
    return op->emitOpError() << "a norm needs its eps, and eps a norm";
  if (eps && !(eps->convertToDouble() > 0))
    return op->emitOpError() << "eps must be positive";
  if (norm && !tensorOf(input).getElementType().isF32())
    return op->emitOpError() << "normalises f32 rows, got " << tensorOf(input).getElementType();
  return success();
}

/// A matvec's weights: `rows` x the input's columns, in a type the input
/// may be read against; its bias one per weight row, its norm scale one per
/// input column.
LogicalResult verifyMatVecWeights(Operation *op, SymbolTableCollection &symbols, int64_t rows,
                                  Value input, FlatSymbolRefAttr weight, FlatSymbolRefAttr bias,
                                  FlatSymbolRefAttr norm) {
  if (failed(verifyWeight(op, symbols, weight, {rows, cols(input)}, "weight")) ||
      failed(verifyInputType(op, symbols, weight, input)))
    return failure();
  if (bias && failed(verifyWeight(op, symbols, bias, {rows}, "bias")))
    return failure();
  if (norm)
    return verifyWeight(op, symbols, norm, {cols(input)}, "scale");
  return success();
}

} // namespace

int64_t MatVecOp::getWeightRows() {
  int64_t n = 0;
  for (Value r : getResults())
    n += cols(r);
  return getSwiglu() ? 2 * n : n;
}

LogicalResult MatVecOp::verify() {
  if (getResults().empty())
    return emitOpError() << "needs at least one result";
  for (Value r : getResults())
    if (failed(sameRows(*this, getInput(), r, "each result has the input's rows")))
      return failure();
  if (failed(verifyNormPrologue(*this, getNorm(), getEps(), getInput())))
    return failure();
  if (getGelu() && !getSwiglu())
    return emitOpError() << "gelu is the gate's activation: it needs swiglu";
  if (failed(verifySoftcap(*this, getSoftcap())))
    return failure();
  if (getSoftcap() && (getSwiglu() || getAddend()))
    return emitOpError() << "softcap caps a head's logits: not with swiglu or an addend";
  if ((getSwiglu() || getAddend()) && getResults().size() != 1)
    return emitOpError() << "with swiglu or an addend has one result, got "
                         << getResults().size();
  if (Value addend = getAddend()) {
    Value r = getResults().front();
    if (tensorOf(addend).getShape() != tensorOf(r).getShape())
      return emitOpError() << "addend must have the result's shape "
                           << shapeStr(tensorOf(r).getShape()) << ", got "
                           << shapeStr(tensorOf(addend).getShape());
    if (!tensorOf(addend).getElementType().isF32() || !tensorOf(r).getElementType().isF32())
      return emitOpError() << "adds f32 rows into an f32 result";
  }
  return success();
}

LogicalResult MatVecOp::verifySymbolUses(SymbolTableCollection &symbols) {
  return verifyMatVecWeights(*this, symbols, getWeightRows(), getInput(), getWeightAttr(),
                             getBiasAttr(), getNormAttr());
}

int64_t MatVecRopeKVWriteOp::getWeightRows() {
  auto cache = cast<KVCacheType>(getCache().getType());
  return cols(getRotatedQuery()) + 2 * cache.getKvHeads() * cache.getHeadDim();
}

LogicalResult MatVecRopeKVWriteOp::verify() {
  auto cache = cast<KVCacheType>(getCache().getType());
  if (failed(verifyRopeIntoCache(*this, cache, getHeadDim(), cols(getRotatedQuery()))) ||
      failed(sameRows(*this, getInput(), getRotatedQuery(),
                      "rotated_query has the input's rows")) ||
      failed(verifyNormPrologue(*this, getNorm(), getEps(), getInput())))
    return failure();
  return verifyCacheAccess(*this, cache, getPageTable(), getPositions(), rows(getInput()),
                           getLayer());
}

LogicalResult MatVecRopeKVWriteOp::verifySymbolUses(SymbolTableCollection &symbols) {
  return verifyMatVecWeights(*this, symbols, getWeightRows(), getInput(), getWeightAttr(),
                             getBiasAttr(), getNormAttr());
}
