// --fuse-rope-kv-write: llm.rope of the queries, llm.rope of the keys and
// the llm.kv_cache_write of the rotated keys -> one llm.rope_kv_write.
#include "passes/Passes.h"

#include "mlir/IR/PatternMatch.h"

using namespace mlir;

namespace kvplan {
#define GEN_PASS_DEF_FUSEROPEKVWRITE
#include "passes/Passes.h.inc"
} // namespace kvplan

namespace kvplan {
namespace {

bool sameRope(llm::RopeOp a, llm::RopeOp b) {
  return a.getHeadDim() == b.getHeadDim() && a.getTheta() == b.getTheta() &&
         a.getScalingAttr() == b.getScalingAttr() &&
         a.getFreqFactorsAttr() == b.getFreqFactorsAttr() && a.getPositions() == b.getPositions();
}

/// The RoPE of the queries the attention over `write`'s cache reads, when it
/// can move to the write: every reader of the rotated queries comes after
/// the write, and the queries it rotates exist before it.
llm::RopeOp queryRope(llm::KVCacheWriteOp write, llm::RopeOp keys) {
  for (Operation *user : write.getResult().getUsers()) {
    auto read = dyn_cast<llm::KVCacheReadOp>(user);
    if (!read || read.getPositions() != write.getPositions() ||
        read.getPageTable() != write.getPageTable())
      continue;
    for (Operation *reader : read.getKeys().getUsers()) {
      auto attention = dyn_cast<llm::AttentionOp>(reader);
      auto q = attention ? attention.getQuery().getDefiningOp<llm::RopeOp>() : llm::RopeOp();
      if (!q || !sameRope(q, keys) || q->getBlock() != write->getBlock()) continue;
      Operation *in = q.getInput().getDefiningOp();
      bool movable = !in || in->isBeforeInBlock(write);
      for (Operation *u : q->getUsers()) movable &= write->isBeforeInBlock(u);
      if (movable) return q;
    }
  }
  return {};
}

struct FuseRopeIntoCacheWrite : public OpRewritePattern<llm::KVCacheWriteOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(llm::KVCacheWriteOp write, PatternRewriter &rewriter) const override {
    auto keys = write.getKey().getDefiningOp<llm::RopeOp>();
    if (!keys) return rewriter.notifyMatchFailure(write, "keys are not rotated by llm.rope");
    if (!keys->hasOneUse())
      return rewriter.notifyMatchFailure(write, "the rotated keys have other readers");
    if (keys.getPositions() != write.getPositions())
      return rewriter.notifyMatchFailure(write, "keys are rotated by other positions");
    llm::RopeOp queries = queryRope(write, keys);
    if (!queries)
      return rewriter.notifyMatchFailure(write, "no attention reads queries rotated alike");
    rewriter.setInsertionPoint(write);
    Location loc = rewriter.getFusedLoc({queries.getLoc(), keys.getLoc(), write.getLoc()});
    auto op = rewriter.create<llm::RopeKVWriteOp>(
        loc, queries.getType(), write.getType(), queries.getInput(), keys.getInput(),
        write.getValue(), write.getCache(), write.getPageTable(), write.getPositions(),
        queries.getHeadDimAttr(), queries.getThetaAttr(), queries.getScalingAttr(),
        queries.getFreqFactorsAttr(), write.getLayerAttr());
    rewriter.replaceOp(queries, op.getRotatedQuery());
    rewriter.replaceOp(write, op.getResult());
    rewriter.eraseOp(keys);
    return success();
  }
};

struct FuseRopeKVWritePass : public impl::FuseRopeKVWriteBase<FuseRopeKVWritePass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    patterns.add<FuseRopeIntoCacheWrite>(&getContext());
    if (failed(rewriteGreedily(getOperation(), std::move(patterns))))
      return signalPassFailure();
  }
};

} // namespace
} // namespace kvplan
