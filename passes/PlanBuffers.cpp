// --plan-buffers: liveness over an entry point -> one arena with fixed offsets.
#include "passes/BufferPlanner.h"
#include "passes/Passes.h"

#include "mlir/IR/Builders.h"
#include "llvm/ADT/DenseMap.h"

using namespace mlir;

namespace kvplan {
#define GEN_PASS_DEF_PLANBUFFERS
#include "passes/Passes.h.inc"
} // namespace kvplan

namespace kvplan {
namespace {

/// The arena requests of one single-block entry point, each live from the
/// step that writes it to the last step that reads it.
class LifetimeCollector {
public:
  explicit LifetimeCollector(Block &body) : body(body) {
    // Step index of every op; arguments are written before step 0 and
    // returned values are read by the terminator, the last step.
    int64_t n = 0;
    for (Operation &op : body)
      step[&op] = n++;
  }

  void collect(func::FuncOp fn) {
    for (BlockArgument a : fn.getArguments())
      request(a, 0);
    for (Operation &op : body)
      for (Value r : op.getResults())
        request(r, step[&op]);
  }

  std::vector<BufferRequest> requests;
  std::vector<Value> values; // the value each request holds

private:
  // The last step that reads `v`, directly or through a KV-cache view made from it.
  int64_t lastUse(Value v, int64_t start) const {
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
    return end;
  }

  // Each tensor is one request, live from `start` to its last reader; the
  // results of a multi-result linear (a fused QKV that
  // --fuse-rope-kv-write did not pack) are placed each on its own, so each
  // part is freed when its own last reader has run.
  void request(Value v, int64_t start) {
    auto t = dyn_cast<RankedTensorType>(v.getType());
    if (!t)
      return; // the KV cache and its views live in the cache, not the arena
    values.push_back(v);
    requests.push_back({tensorBytes(t), start, lastUse(v, start)});
  }

  Block &body;
  llvm::DenseMap<Operation *, int64_t> step;
};

// Each value at the offset its request was given.
llvm::DenseMap<Value, int64_t> valueOffsets(const std::vector<Value> &values,
                                            const BufferAssignment &plan) {
  llvm::DenseMap<Value, int64_t> offsetOf;
  for (size_t i = 0; i < values.size(); ++i)
    offsetOf[values[i]] = plan.offsets[i];
  return offsetOf;
}

// The offsets become attributes on the arguments, the ops and the function,
// which is all later passes and codegen read of the plan.
void recordOffsets(func::FuncOp fn, Block &body,
                   const llvm::DenseMap<Value, int64_t> &offsetOf, int64_t arenaSize) {
  Builder b(fn.getContext());
  for (BlockArgument a : fn.getArguments())
    if (offsetOf.count(a))
      fn.setArgAttr(a.getArgNumber(), attr::kOffset, b.getI64IntegerAttr(offsetOf.lookup(a)));
  for (Operation &op : body) {
    SmallVector<int64_t> offsets;
    for (Value r : op.getResults())
      if (offsetOf.count(r))
        offsets.push_back(offsetOf.lookup(r));
    if (!offsets.empty())
      op.setAttr(attr::kOffsets, b.getDenseI64ArrayAttr(offsets));
  }
  fn->setAttr(attr::kArenaSize, b.getI64IntegerAttr(arenaSize));
}

struct PlanBuffersPass : public impl::PlanBuffersBase<PlanBuffersPass> {
  using PlanBuffersBase::PlanBuffersBase;

  void runOnOperation() override {
    func::FuncOp fn = getOperation();
    if (!fn->hasAttr(attr::kEntry) || fn.isExternal())
      return;
    if (failed(checkPlannable(fn)))
      return signalPassFailure();
    Block &body = fn.getBody().front();

    LifetimeCollector lifetimes(body);
    lifetimes.collect(fn);
    BufferAssignment plan = planBuffers(lifetimes.requests, alignment);
    recordOffsets(fn, body, valueOffsets(lifetimes.values, plan), plan.arenaSize);
  }

  // The option and IR shape the planner relies on; failure is diagnosed here.
  LogicalResult checkPlannable(func::FuncOp fn) {
    if (alignment <= 0 || (alignment & (alignment - 1)) != 0) {
      fn.emitOpError() << "plan-buffers alignment must be a power of two, got " << int64_t(alignment);
      return failure();
    }
    if (!fn.getBody().hasOneBlock()) {
      fn.emitOpError() << "plan-buffers needs a single-block entry point";
      return failure();
    }
    return success();
  }
};

} // namespace
} // namespace kvplan
