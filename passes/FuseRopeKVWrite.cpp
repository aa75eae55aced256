// --fuse-rope-kv-write: llm.rope of the queries, llm.rope of the keys and
// the llm.kv_cache_write of the rotated keys -> one llm.rope_kv_write (with
// the llm.head_rms_norm of each, Qwen3's q/k norms, folded in too); the
// three results of a fused QKV llm.linear that only it reads -> one packed
// result.
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
         a.getFreqFactorsAttr() == b.getFreqFactorsAttr() &&
         a.getRotaryDimAttr() == b.getRotaryDimAttr() &&
         a.getAttentionFactorAttr() == b.getAttentionFactorAttr() &&
         a.getPositions() == b.getPositions();
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

/// The q and k norms before the two ropes, when both are llm.head_rms_norm
/// read by their rope alone, with one eps: they fold into the write.
std::optional<std::pair<llm::HeadRMSNormOp, llm::HeadRMSNormOp>> headNorms(llm::RopeOp q,
                                                                         llm::RopeOp k) {
  auto qn = q.getInput().getDefiningOp<llm::HeadRMSNormOp>();
  auto kn = k.getInput().getDefiningOp<llm::HeadRMSNormOp>();
  if (!qn || !kn || !qn->hasOneUse() || !kn->hasOneUse() || qn.getEps() != kn.getEps() ||
      qn.getHeadDim() != q.getHeadDim() || kn.getHeadDim() != k.getHeadDim())
    return std::nullopt;
  return std::pair{qn, kn};
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
    auto norms = headNorms(queries, keys);
    Value q = norms ? norms->first.getInput() : queries.getInput();
    Value k = norms ? norms->second.getInput() : keys.getInput();
    auto op = rewriter.create<llm::RopeKVWriteOp>(
        loc, queries.getType(), write.getType(), q, k, write.getValue(), write.getCache(),
        write.getPageTable(), write.getPositions(), queries.getHeadDimAttr(),
        queries.getThetaAttr(), queries.getScalingAttr(), queries.getFreqFactorsAttr(),
        queries.getRotaryDimAttr(), queries.getAttentionFactorAttr(), write.getLayerAttr(),
        norms ? norms->first.getWeightAttr() : FlatSymbolRefAttr(),
        norms ? norms->second.getWeightAttr() : FlatSymbolRefAttr(),
        norms ? norms->first.getEpsAttr() : FloatAttr());
    rewriter.replaceOp(queries, op.getRotatedQuery());
    rewriter.replaceOp(write, op.getResult());
    rewriter.eraseOp(keys);
    if (norms) {
      rewriter.eraseOp(norms->first);
      rewriter.eraseOp(norms->second);
    }
    return success();
  }
};

/// llm.linear (q, k, v) read only by one llm.rope_kv_write, in that order
/// -> one result [rows, q + k + v] the write reads packed: one matrix
/// product instead of one per part at any row count.
struct PackQKV : public OpRewritePattern<llm::RopeKVWriteOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(llm::RopeKVWriteOp write,
                                PatternRewriter &rewriter) const override {
    if (write.isPacked()) return rewriter.notifyMatchFailure(write, "already packed");
    auto product = dyn_cast_or_null<llm::LinearOp>(write.getSoleProducer());
    if (!product)
      return rewriter.notifyMatchFailure(write, "q, k and v are not one linear's alone");
    const Value qkv[] = {write.getQuery(), write.getKey(), write.getValue()};
    auto q = cast<RankedTensorType>(qkv[0].getType());
    int64_t width = 0;
    for (Value v : qkv) {
      auto t = cast<RankedTensorType>(v.getType());
      if (t.getElementType() != q.getElementType())
        return rewriter.notifyMatchFailure(write, "q, k and v differ in element type");
      width += t.getDimSize(1);
    }
    rewriter.setInsertionPoint(product);
    auto packed = rewriter.create<llm::LinearOp>(
        product.getLoc(), TypeRange{RankedTensorType::get({q.getDimSize(0), width},
                                                          q.getElementType())},
        product.getWeightAttr(), product.getInput(), product.getBiasAttr());
    rewriter.setInsertionPoint(write);
    auto op = rewriter.create<llm::RopeKVWriteOp>(
        write.getLoc(), write.getRotatedQuery().getType(), write.getResult().getType(),
        packed.getResult(0), Value(), Value(), write.getCache(), write.getPageTable(),
        write.getPositions(), write.getHeadDimAttr(), write.getThetaAttr(),
        write.getScalingAttr(), write.getFreqFactorsAttr(), write.getRotaryDimAttr(),
        write.getAttentionFactorAttr(), write.getLayerAttr(), write.getQNormAttr(),
        write.getKNormAttr(), write.getNormEpsAttr());
    rewriter.replaceOp(write, op.getResults());
    rewriter.eraseOp(product);
    return success();
  }
};

struct FuseRopeKVWritePass : public impl::FuseRopeKVWriteBase<FuseRopeKVWritePass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    patterns.add<FuseRopeIntoCacheWrite, PackQKV>(&getContext());
    if (failed(rewriteGreedily(getOperation(), std::move(patterns))))
      return signalPassFailure();
  }
};

} // namespace
} // namespace kvplan
