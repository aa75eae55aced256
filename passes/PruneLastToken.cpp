// --prune-last-token: in @prefill only the last token's row reaches the head.
#include "passes/Passes.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"
#include "llvm/ADT/SetVector.h"

using namespace mlir;

namespace kvplan {
#define GEN_PASS_DEF_PRUNELASTTOKEN
#include "passes/Passes.h.inc"
} // namespace kvplan

namespace kvplan {
namespace {

RankedTensorType oneRow(Type t) {
  auto r = cast<RankedTensorType>(t);
  SmallVector<int64_t> shape(r.getShape());
  shape[0] = 1;
  return RankedTensorType::get(shape, r.getElementType());
}

/// The take_last of `v` that already exists, or a new one right after `v`.
llm::TakeLastOp takeLastOf(OpBuilder &b, Value v, Value positions) {
  for (Operation *user : v.getUsers())
    if (auto t = dyn_cast<llm::TakeLastOp>(user))
      if (t.getPositions() == positions)
        return t;
  OpBuilder::InsertionGuard guard(b);
  if (Operation *def = v.getDefiningOp())
    b.setInsertionPointAfter(def);
  else
    b.setInsertionPointToStart(cast<BlockArgument>(v).getOwner());
  return b.create<llm::TakeLastOp>(v.getLoc(), oneRow(v.getType()), v, positions);
}

/// When only take_last ops read `v` and a row-wise op defines it, rebuilds
/// that op on the last row of each operand. Returns the operands now read
/// through take_last (to move further up), or nothing.
SmallVector<Value> hoist(OpBuilder &b, Value v, Value positions) {
  Operation *def = v.getDefiningOp();
  if (!def || !def->hasTrait<llm::RowWise>() || def->getNumResults() != 1)
    return {};
  SmallVector<llm::TakeLastOp> users;
  for (Operation *u : v.getUsers()) {
    auto t = dyn_cast<llm::TakeLastOp>(u);
    if (!t || t.getPositions() != positions)
      return {};
    users.push_back(t);
  }
  int64_t rows = cast<RankedTensorType>(def->getResult(0).getType()).getDimSize(0);
  SmallVector<llm::TakeLastOp> created;
  SmallVector<Value> operands;
  IRMapping map;
  for (Value operand : def->getOperands()) {
    auto t = dyn_cast<RankedTensorType>(operand.getType());
    if (!t || t.getDimSize(0) != rows)
      continue;
    llm::TakeLastOp last = takeLastOf(b, operand, positions);
    map.map(operand, last.getResult());
    created.push_back(last);
    operands.push_back(operand);
  }
  b.setInsertionPoint(def);
  Operation *pruned = b.clone(*def, map);
  pruned->getResult(0).setType(oneRow(def->getResult(0).getType()));
  for (llm::TakeLastOp t : users) {
    t.replaceAllUsesWith(pruned->getResult(0));
    t.erase();
  }
  def->erase();
  // The ops built after `def` must come after their new operands.
  for (llm::TakeLastOp t : created)
    if (t->getBlock() == pruned->getBlock() && pruned->isBeforeInBlock(t))
      t->moveBefore(pruned);
  return operands;
}

struct PruneLastTokenPass : public impl::PruneLastTokenBase<PruneLastTokenPass> {
  void runOnOperation() override {
    func::FuncOp fn = getOperation();
    auto entry = fn->getAttrOfType<StringAttr>(attr::kEntry);
    if (!entry || entry.getValue() != "prefill")
      return;
    BlockArgument positions = findArg(fn, "positions");
    if (!positions) {
      fn.emitOpError() << "needs a positions argument (llm.arg = \"positions\") to find the "
                          "last token";
      return signalPassFailure();
    }
    SmallVector<llm::LogitsOp> heads;
    fn.walk([&](llm::LogitsOp op) { heads.push_back(op); });
    if (heads.empty()) {
      fn.emitOpError() << "has no llm.logits to prune";
      return signalPassFailure();
    }
    OpBuilder b(fn.getContext());
    for (llm::LogitsOp head : heads) {
      auto in = cast<RankedTensorType>(head.getInput().getType());
      if (in.getDimSize(0) == 1)
        continue; // a chunk of one row has nothing to prune
      b.setInsertionPoint(head);
      auto last = b.create<llm::TakeLastOp>(head.getLoc(), oneRow(in), head.getInput(), positions);
      head.getInputMutable().assign(last.getResult());
      head.getResult().setType(oneRow(head.getResult().getType()));
    }
    // Move the selections up until none moves: a value read twice (the
    // residual stream) moves once both of its readers have.
    for (bool changed = true; changed;) {
      changed = false;
      SetVector<Value> inputs;
      fn.walk([&](llm::TakeLastOp t) { inputs.insert(t.getInput()); });
      for (Value v : inputs)
        if (!hoist(b, v, positions).empty())
          changed = true;
    }
    Operation *ret = fn.getBody().front().getTerminator();
    fn.setFunctionType(
        FunctionType::get(fn.getContext(), fn.getBody().getArgumentTypes(),
                          ret->getOperandTypes()));
  }
};

} // namespace
} // namespace kvplan
