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
  LifetimeCollector(Block &body, int64_t alignment) : body(body), alignment(alignment) {
    // Step index of every op; arguments are written before step 0 and
    // returned values are read by the terminator, the last step.
    int64_t n = 0;
    for (Operation &op : body)
      step[&op] = n++;
  }

  void collect(func::FuncOp fn) {
    for (BlockArgument a : fn.getArguments())
      request({Value(a)}, 0);
    for (Operation &op : body) {
      if (sharesOneBuffer(op)) {
        SmallVector<Value> results(op.getResults().begin(), op.getResults().end());
        request(results, step[&op]);
        continue;
      }
      for (Value r : op.getResults())
        request({r}, step[&op]);
    }
  }

  std::vector<BufferRequest> requests;
  std::vector<SmallVector<Value>> groups; // the values each request holds, in order

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

  // Each request is one value, or the results of a multi-result linear
  // (the fused QKV) laid end to end in one buffer: a device can then write
  // them with one matrix product where they form one matrix (one row).
  void request(ArrayRef<Value> group, int64_t start) {
    int64_t bytes = 0, end = start;
    SmallVector<Value> tensors;
    for (Value v : group) {
      auto t = dyn_cast<RankedTensorType>(v.getType());
      if (!t)
        continue; // the KV cache and its views live in the cache, not the arena
      bytes += tensorBytes(t);
      end = std::max(end, lastUse(v, start));
      tensors.push_back(v);
    }
    if (tensors.empty())
      return;
    groups.push_back(tensors);
    requests.push_back({bytes, start, end});
  }

  // A multi-result linear shares one buffer only where every part is a whole
  // number of alignment units, so each part keeps an aligned offset.
  bool sharesOneBuffer(Operation &op) const {
    bool group = isa<llm::LinearOp>(op) && op.getNumResults() > 1;
    for (Value r : op.getResults())
      if (auto t = dyn_cast<RankedTensorType>(r.getType()))
        group = group && tensorBytes(t) % alignment == 0;
    return group;
  }

  Block &body;
  int64_t alignment;
  llvm::DenseMap<Operation *, int64_t> step;
};

// A group's values follow one another from the offset its request was given.
llvm::DenseMap<Value, int64_t> valueOffsets(const std::vector<SmallVector<Value>> &groups,
                                            const BufferAssignment &plan) {
  llvm::DenseMap<Value, int64_t> offsetOf;
  for (size_t i = 0; i < groups.size(); ++i) {
    int64_t offset = plan.offsets[i];
    for (Value v : groups[i]) {
      offsetOf[v] = offset;
      offset += tensorBytes(cast<RankedTensorType>(v.getType()));
    }
  }
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

    LifetimeCollector lifetimes(body, alignment);
    lifetimes.collect(fn);
    BufferAssignment plan = planBuffers(lifetimes.requests, alignment);
    recordOffsets(fn, body, valueOffsets(lifetimes.groups, plan), plan.arenaSize);
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
