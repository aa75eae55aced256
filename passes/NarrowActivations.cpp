// --narrow-activations: tensors that only 16-bit linears read are stored in
// the weights' type; linears with 16-bit weights that still read f32 rows
// get an llm.convert.
#include "passes/Passes.h"

#include "mlir/IR/Builders.h"
#include "llvm/ADT/DenseMap.h"

using namespace mlir;

namespace kvplan {
#define GEN_PASS_DEF_NARROWACTIVATIONS
#include "passes/Passes.h.inc"
} // namespace kvplan

namespace kvplan {
namespace {

/// The element type of the weights a linear, logits or matvec op
/// multiplies its rows by, when that is a 16-bit float type; null
/// otherwise. A matvec that normalises its rows reads them in f32.
Type narrowWeightType(Operation *op) {
  FlatSymbolRefAttr weight;
  if (auto l = dyn_cast<llm::LinearOp>(op)) weight = l.getWeightAttr();
  else if (auto h = dyn_cast<llm::LogitsOp>(op)) weight = h.getWeightAttr();
  else if (auto m = dyn_cast<llm::MatVecOp>(op); m && !m.getNorm()) weight = m.getWeightAttr();
  else if (auto m = dyn_cast<llm::MatVecRopeKVWriteOp>(op); m && !m.getNorm())
    weight = m.getWeightAttr();
  else return {};
  auto w = SymbolTable::lookupNearestSymbolFrom<llm::WeightOp>(op, weight);
  if (!w) return {};
  Type t = w.getTensorType().getElementType();
  return t.isBF16() || t.isF16() ? t : Type();
}

/// The rows a linear, logits or matvec op multiplies.
Value linearInput(Operation *op) {
  if (auto l = dyn_cast<llm::LinearOp>(op)) return l.getInput();
  if (auto h = dyn_cast<llm::LogitsOp>(op)) return h.getInput();
  if (auto m = dyn_cast<llm::MatVecOp>(op)) return m.getInput();
  if (auto m = dyn_cast<llm::MatVecRopeKVWriteOp>(op)) return m.getInput();
  return {};
}

/// Whether the kernel of `v`'s producer can store it in a 16-bit type.
bool canStoreNarrow(Value v) {
  auto r = dyn_cast<OpResult>(v);
  if (!r) return false;
  Operation *op = r.getOwner();
  if (isa<llm::AddRMSNormOp>(op)) return r.getResultNumber() == 0; // the residual stays f32
  if (auto m = dyn_cast<llm::MatVecOp>(op)) return !m.getAddend();     // so does a residual sum
  return isa<llm::EmbeddingOp, llm::RMSNormOp, llm::AttentionOp, llm::FusedFFNOp, llm::SwiGLUOp,
             llm::TakeLastOp>(op);
}

Value withElementType(Value v, Type elt) {
  auto t = cast<RankedTensorType>(v.getType());
  v.setType(RankedTensorType::get(t.getShape(), elt));
  return v;
}

struct NarrowActivationsPass : public impl::NarrowActivationsBase<NarrowActivationsPass> {
  void runOnOperation() override {
    Block &body = getOperation().getBody().front();
    // What each value's readers want it stored as, last op first, so a
    // take_last's result is decided before its input.
    llvm::DenseMap<Value, Type> wanted;
    for (Operation &op : llvm::reverse(body))
      for (Value v : op.getResults())
        if (Type t = wantedType(v, wanted)) wanted[v] = t;
    // Narrow in program order: a take_last stores what its input holds.
    for (Operation &op : body)
      for (Value v : op.getResults()) {
        auto it = wanted.find(v);
        if (it == wanted.end() || !canStoreNarrow(v)) continue;
        if (auto last = dyn_cast<llm::TakeLastOp>(op))
          if (getElementTypeOrSelf(last.getInput().getType()) != it->second) continue;
        withElementType(v, it->second);
      }
    insertConverts(body);
  }

  /// The 16-bit type every reader of `v` multiplies it in, if they agree.
  static Type wantedType(Value v, const llvm::DenseMap<Value, Type> &wanted) {
    if (!isa<RankedTensorType>(v.getType()) || v.use_empty()) return {};
    Type want;
    for (OpOperand &use : v.getUses()) {
      Operation *reader = use.getOwner();
      Type t;
      if (linearInput(reader) == v) t = narrowWeightType(reader);
      else if (auto last = dyn_cast<llm::TakeLastOp>(reader); last && last.getInput() == v)
        t = wanted.lookup(last.getResult());
      if (!t || (want && t != want)) return {};
      want = t;
    }
    return want;
  }

  /// A linear with 16-bit weights reading rows of another type converts
  /// them first: cuBLAS multiplies one type by the same. (A matvec's kernel
  /// reads f32 rows as they are.)
  void insertConverts(Block &body) {
    OpBuilder b(&getContext());
    for (Operation &op : llvm::make_early_inc_range(body)) {
      if (isa<llm::MatVecOp, llm::MatVecRopeKVWriteOp>(op)) continue;
      Type t = narrowWeightType(&op);
      Value in = linearInput(&op);
      if (!t || !in || cast<RankedTensorType>(in.getType()).getElementType() == t) continue;
      b.setInsertionPoint(&op);
      auto type = RankedTensorType::get(cast<RankedTensorType>(in.getType()).getShape(), t);
      auto convert = b.create<llm::ConvertOp>(op.getLoc(), type, in);
      op.setOperand(0, convert.getResult());
    }
  }
};

} // namespace
} // namespace kvplan
