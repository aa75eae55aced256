// --fuse-rmsnorm: llm.add followed by llm.rms_norm -> llm.add_rms_norm.
#include "passes/Passes.h"

#include "mlir/IR/PatternMatch.h"

using namespace mlir;

namespace kvplan {
#define GEN_PASS_DEF_FUSERMSNORM
#include "passes/Passes.h.inc"
} // namespace kvplan

namespace kvplan {
namespace {

struct FuseAddIntoRMSNorm : public OpRewritePattern<llm::RMSNormOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(llm::RMSNormOp norm, PatternRewriter &rewriter) const override {
    auto add = norm.getInput().getDefiningOp<llm::AddOp>();
    if (!add)
      return rewriter.notifyMatchFailure(norm, "input is not a residual add");
    // The fused op is placed at the add, so the norm's other operands (none
    // today but the weight symbol) need no moving.
    rewriter.setInsertionPoint(add);
    auto fused = rewriter.create<llm::AddRMSNormOp>(norm.getLoc(), add.getLhs(), add.getRhs(),
                                                    norm.getWeightAttr(), norm.getEpsAttr());
    rewriter.replaceOp(norm, fused.getNormed());
    rewriter.replaceOp(add, fused.getResidual());
    return success();
  }
};

struct FuseRMSNormPass : public impl::FuseRMSNormBase<FuseRMSNormPass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    patterns.add<FuseAddIntoRMSNorm>(&getContext());
    if (failed(rewriteGreedily(getOperation(), std::move(patterns))))
      return signalPassFailure();
  }
};

} // namespace
} // namespace kvplan
