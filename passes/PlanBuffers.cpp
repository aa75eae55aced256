// --plan-buffers: liveness over an entry point -> one arena with fixed offsets.
#include "passes/BufferPlanner.h"
#include "passes/Passes.h"

#include "mlir/IR/Builders.h"
#include "llvm/ADT/DenseMap.h"

#define DEBUG_TYPE "plan-buffers"

using namespace mlir;

namespace kvplan {
#define GEN_PASS_DEF_PLANBUFFERS
#include "passes/Passes.h.inc"
} // namespace kvplan

namespace kvplan {
namespace {

struct PlanBuffersPass : public impl::PlanBuffersBase<PlanBuffersPass> {
  using PlanBuffersBase::PlanBuffersBase;

  void runOnOperation() override {
    func::FuncOp fn = getOperation();
    if (!fn->hasAttr(attr::kEntry) || fn.isExternal())
      return;
    if (alignment <= 0 || (alignment & (alignment - 1)) != 0) {
      fn.emitOpError() << "plan-buffers alignment must be a power of two, got " << int64_t(alignment);
      return signalPassFailure();
    }
    if (!fn.getBody().hasOneBlock()) {
      fn.emitOpError() << "plan-buffers needs a single-block entry point";
      return signalPassFailure();
    }
    Block &body = fn.getBody().front();

    // Step index of every op; arguments are written before step 0 and
    // returned values are read by the terminator, the last step.
    llvm::DenseMap<Operation *, int64_t> step;
    int64_t n = 0;
    for (Operation &op : body)
      step[&op] = n++;

    SmallVector<Value> values;
    std::vector<BufferRequest> requests;
    auto request = [&](Value v, int64_t start) {
      auto t = dyn_cast<RankedTensorType>(v.getType());
      if (!t)
        return; // the KV cache and its views live in the cache, not the arena
      int64_t end = start;
      for (Operation *user : v.getUsers()) {
        end = std::max(end, step.lookup(body.findAncestorOpInBlock(*user)));
        // A KV-cache view reads the page table and positions it was made
        // from whenever its own reader runs: they live until then.
        for (Value r : user->getResults())
          if (isa<llm::KVViewType>(r.getType()))
            for (Operation *viewUser : r.getUsers())
              end = std::max(end, step.lookup(body.findAncestorOpInBlock(*viewUser)));
      }
      values.push_back(v);
      requests.push_back({tensorBytes(t), start, end});
    };
    for (BlockArgument a : fn.getArguments())
      request(a, 0);
    for (Operation &op : body)
      for (Value r : op.getResults())
        request(r, step[&op]);

    BufferAssignment plan = planBuffers(requests, alignment);
    llvm::DenseMap<Value, int64_t> offsetOf;
    for (size_t i = 0; i < values.size(); ++i)
      offsetOf[values[i]] = plan.offsets[i];

    Builder b(fn.getContext());
    for (BlockArgument a : fn.getArguments())
      if (offsetOf.count(a))
        fn.setArgAttr(a.getArgNumber(), attr::kOffset, b.getI64IntegerAttr(offsetOf[a]));
    for (Operation &op : body) {
      SmallVector<int64_t> offsets;
      for (Value r : op.getResults())
        if (offsetOf.count(r))
          offsets.push_back(offsetOf[r]);
      if (!offsets.empty())
        op.setAttr(attr::kOffsets, b.getDenseI64ArrayAttr(offsets));
    }
    fn->setAttr(attr::kArenaSize, b.getI64IntegerAttr(plan.arenaSize));
  }
};

} // namespace
} // namespace kvplan
