// --fuse-matvec: a product of a few rows (llm.linear, llm.logits) becomes an
// llm.matvec that also normalises its input (llm.rms_norm), applies SwiGLU
// to its result (llm.fused_ffn) and adds the residual stream to it (llm.add,
// the add half of llm.add_rms_norm); a QKV product whose results only
// llm.rope_kv_write reads becomes llm.matvec_rope_kv_write.
#include "passes/Passes.h"

#include "mlir/IR/PatternMatch.h"

using namespace mlir;

namespace kvplan {
#define GEN_PASS_DEF_FUSEMATVEC
#include "passes/Passes.h.inc"
} // namespace kvplan

namespace kvplan {
namespace {

/// One llm.matvec's fields, gathered from the ops it replaces.
struct MatVecParts {
  FlatSymbolRefAttr weight, bias, norm;
  FloatAttr eps;
  bool swiglu = false, gelu = false;
  FloatAttr softcap; // a head's (Gemma 2's)
  Value input, addend;

  llm::MatVecOp build(PatternRewriter &rewriter, Location loc, TypeRange results) const {
    auto unit = [&](bool set) { return set ? rewriter.getUnitAttr() : UnitAttr(); };
    return rewriter.create<llm::MatVecOp>(loc, results, weight, input, bias, norm, eps,
                                          unit(swiglu), unit(gelu), softcap, addend);
  }
};

/// The most rows a product may have to become llm.matvec: of f32 and f16
/// weights, of bf16 ones, and of int8 or int4 ones (bf16, int8 and int4: the
/// cuda target's tensor-core kernels take them in groups of rows).
struct RowLimits {
  int64_t rows, bf16Rows, tensorCoreRows;
};

/// Whether the matrix-vector kernel takes a product of `weight` over
/// `input`: at most `most.rows` rows (bf16: `most.bf16Rows`; int8 and int4:
/// `most.tensorCoreRows`), and
/// rows of whole 16-byte runs of f32, bf16 or f16 weights, or of int8 or
/// int4 codes in runs of 16 (their groups of 32, the last maybe half) over
/// f32 rows.
bool fits(Operation *op, FlatSymbolRefAttr weight, Value input, RowLimits most) {
  auto w = SymbolTable::lookupNearestSymbolFrom<llm::WeightOp>(op, weight);
  auto in = dyn_cast<RankedTensorType>(input.getType());
  if (!w || !in || in.getRank() != 2) return false;
  Type t = w.getTensorType().getElementType();
  const bool codes = t.isInteger(8) || t.isInteger(4);
  const int64_t limit = codes ? most.tensorCoreRows : t.isBF16() ? most.bf16Rows : most.rows;
  if (in.getDimSize(0) > limit) return false;
  if (codes) return in.getElementType().isF32() && in.getDimSize(1) % 16 == 0;
  if (!t.isF32() && !t.isBF16() && !t.isF16()) return false;
  const int64_t run = 16 / (t.getIntOrFloatBitWidth() / 8);
  return in.getDimSize(1) % run == 0;
}

/// The parts of a product op (llm.linear, llm.logits or llm.matvec), if
/// the matrix-vector kernel takes it.
std::optional<MatVecParts> partsOf(Operation *op, RowLimits maxRows) {
  MatVecParts p;
  if (auto l = dyn_cast<llm::LinearOp>(op)) {
    p.weight = l.getWeightAttr();
    p.bias = l.getBiasAttr();
    p.input = l.getInput();
  } else if (auto h = dyn_cast<llm::LogitsOp>(op)) {
    p.weight = h.getWeightAttr();
    p.input = h.getInput();
    p.softcap = h.getSoftcapAttr();
  } else if (auto m = dyn_cast<llm::MatVecOp>(op)) {
    p.weight = m.getWeightAttr();
    p.bias = m.getBiasAttr();
    p.norm = m.getNormAttr();
    p.eps = m.getEpsAttr();
    p.swiglu = m.getSwiglu();
    p.gelu = m.getGelu();
    p.softcap = m.getSoftcapAttr();
    p.input = m.getInput();
    p.addend = m.getAddend();
  } else {
    return std::nullopt;
  }
  if (!fits(op, p.weight, p.input, maxRows)) return std::nullopt;
  return p;
}

/// The parts of the product that makes `v`, when `v` is its only result and
/// nothing else reads it, and it has no epilogue yet.
std::optional<MatVecParts> productOf(Value v, RowLimits maxRows) {
  Operation *def = v.getDefiningOp();
  if (!def || def->getNumResults() != 1 || !v.hasOneUse()) return std::nullopt;
  std::optional<MatVecParts> p = partsOf(def, maxRows);
  if (!p || p->swiglu || p->addend || p->softcap) return std::nullopt;
  return p;
}

/// The rms_norm of `p`'s input when only `p` reads its rows and it reads
/// f32: made `p`'s prologue, for the caller to erase; null otherwise.
llm::RMSNormOp foldNorm(MatVecParts &p) {
  auto norm = p.input.getDefiningOp<llm::RMSNormOp>();
  if (p.norm || !norm || !norm.getResult().hasOneUse() ||
      !getElementTypeOrSelf(norm.getInput().getType()).isF32())
    return {};
  p.norm = norm.getWeightAttr();
  p.eps = norm.getEpsAttr();
  p.input = norm.getInput();
  return norm;
}

/// rms_norm -> a product of its rows: the norm becomes the product's
/// prologue.
struct NormPrologue : public RewritePattern {
  NormPrologue(MLIRContext *ctx, RowLimits maxRows)
      : RewritePattern(MatchAnyOpTypeTag(), 1, ctx), maxRows(maxRows) {}

  LogicalResult matchAndRewrite(Operation *op, PatternRewriter &rewriter) const override {
    if (auto qkv = dyn_cast<llm::MatVecRopeKVWriteOp>(op)) return foldInto(qkv, rewriter);
    std::optional<MatVecParts> p = partsOf(op, maxRows);
    if (!p || p->norm) return failure();
    llm::RMSNormOp norm = foldNorm(*p);
    if (!norm)
      return rewriter.notifyMatchFailure(op, "input is not f32 rows only this product normalises");
    rewriter.replaceOp(op, p->build(rewriter, op->getLoc(), op->getResultTypes()));
    rewriter.eraseOp(norm);
    return success();
  }
  /// A QKV product that took RoPE and the cache write takes the norm before
  /// it in place, whether that norm came first or was left later by an
  /// add_rms_norm whose add another product took.
  static LogicalResult foldInto(llm::MatVecRopeKVWriteOp qkv, PatternRewriter &rewriter) {
    MatVecParts p;
    p.input = qkv.getInput();
    p.norm = qkv.getNormAttr();
    llm::RMSNormOp norm = foldNorm(p);
    if (!norm)
      return rewriter.notifyMatchFailure(qkv, "input is not f32 rows only this product normalises");
    rewriter.modifyOpInPlace(qkv, [&] {
      qkv.getInputMutable().assign(p.input);
      qkv.setNormAttr(p.norm);
      qkv.setEpsAttr(p.eps);
    });
    rewriter.eraseOp(norm);
    return success();
  }
  RowLimits maxRows;
};

/// linear -> fused_ffn: SwiGLU becomes the product's epilogue.
struct SwiGLUEpilogue : public OpRewritePattern<llm::FusedFFNOp> {
  SwiGLUEpilogue(MLIRContext *ctx, RowLimits maxRows) : OpRewritePattern(ctx), maxRows(maxRows) {}

  LogicalResult matchAndRewrite(llm::FusedFFNOp ffn, PatternRewriter &rewriter) const override {
    std::optional<MatVecParts> p = productOf(ffn.getInput(), maxRows);
    if (!p) return rewriter.notifyMatchFailure(ffn, "input is not a matrix-vector product's alone");
    Operation *product = ffn.getInput().getDefiningOp();
    p->swiglu = true;
    p->gelu = ffn.getGelu();
    rewriter.setInsertionPoint(product);
    rewriter.replaceOp(ffn, p->build(rewriter, ffn.getLoc(), ffn.getResult().getType()));
    rewriter.eraseOp(product);
    return success();
  }
  RowLimits maxRows;
};

/// The operand of a residual add (lhs, rhs) made by a product only it
/// reads: that product's parts with the other operand as their addend, and
/// the product's value; nothing where neither operand is.
std::optional<std::pair<MatVecParts, Value>> productWithAddend(Value lhs, Value rhs,
                                                              RowLimits maxRows) {
  for (auto [product, addend] : {std::pair{lhs, rhs}, std::pair{rhs, lhs}}) {
    std::optional<MatVecParts> p = productOf(product, maxRows);
    if (p && getElementTypeOrSelf(addend.getType()).isF32() &&
        getElementTypeOrSelf(product.getType()).isF32()) {
      p->addend = addend;
      return std::pair{*p, product};
    }
  }
  return std::nullopt;
}

/// linear -> add (or the add of add_rms_norm): the add becomes the
/// product's epilogue; add_rms_norm leaves an rms_norm of the sum. Not where
/// a mixture of experts reads the norm: its kernels take no prologue, so
/// the norm would stay a kernel of its own either way, and add_rms_norm
/// makes the sum and the norm in one.
struct ResidualEpilogue : public RewritePattern {
  ResidualEpilogue(MLIRContext *ctx, RowLimits maxRows)
      : RewritePattern(MatchAnyOpTypeTag(), 1, ctx), maxRows(maxRows) {}

  LogicalResult matchAndRewrite(Operation *op, PatternRewriter &rewriter) const override {
    Value lhs, rhs;
    if (auto add = dyn_cast<llm::AddOp>(op)) std::tie(lhs, rhs) = std::pair{add.getLhs(), add.getRhs()};
    else if (auto an = dyn_cast<llm::AddRMSNormOp>(op)) std::tie(lhs, rhs) = std::pair{an.getLhs(), an.getRhs()};
    else return failure();
    if (auto an = dyn_cast<llm::AddRMSNormOp>(op))
      for (Operation *user : an.getNormed().getUsers())
        if (isa<llm::MoEFFNOp>(user))
          return rewriter.notifyMatchFailure(op, "a mixture of experts reads the norm");
    std::optional<std::pair<MatVecParts, Value>> found = productWithAddend(lhs, rhs, maxRows);
    if (!found) return rewriter.notifyMatchFailure(op, "no operand is a matrix-vector product's alone");
    auto &[p, product] = *found;
    // At the add, where both the product's input and the addend are defined.
    rewriter.setInsertionPoint(op);
    auto fused = p.build(rewriter, op->getLoc(), product.getType());
    if (auto an = dyn_cast<llm::AddRMSNormOp>(op)) {
      auto norm = rewriter.create<llm::RMSNormOp>(an.getLoc(), an.getNormed().getType(),
                                                  fused.getResult(0), an.getWeightAttr(),
                                                  an.getEpsAttr());
      rewriter.replaceOp(op, ValueRange{norm.getResult(), fused.getResult(0)});
    } else {
      rewriter.replaceOp(op, fused.getResults());
    }
    rewriter.eraseOp(product.getDefiningOp());
    return success();
  }
  RowLimits maxRows;
};

/// matvec (q, k, v) -> rope_kv_write of exactly those three (or of the
/// one packed result): RoPE and the cache write become the product's
/// epilogue, up to the rows a product of its weight may have.
struct RopeKVWriteEpilogue : public OpRewritePattern<llm::RopeKVWriteOp> {
  RopeKVWriteEpilogue(MLIRContext *ctx, RowLimits maxRows)
      : OpRewritePattern(ctx), maxRows(maxRows) {}

  LogicalResult matchAndRewrite(llm::RopeKVWriteOp write,
                                PatternRewriter &rewriter) const override {
    // Qwen3's q/k norms need whole heads: not a matrix-vector warp's pair.
    if (write.getQNorm())
      return rewriter.notifyMatchFailure(write, "the write normalizes q/k heads first");
    Operation *product = write.getSoleProducer();
    std::optional<MatVecParts> p = product ? partsOf(product, maxRows) : std::nullopt;
    if (!p || p->swiglu || p->addend)
      return rewriter.notifyMatchFailure(write,
                                         "q, k and v are not one matrix-vector product's alone");
    // A norm before the product not folded yet folds in place later
    // (NormPrologue).
    rewriter.setInsertionPoint(write);
    auto fused = rewriter.create<llm::MatVecRopeKVWriteOp>(
        rewriter.getFusedLoc({product->getLoc(), write.getLoc()}),
        write.getRotatedQuery().getType(), write.getResult().getType(), p->weight, p->input,
        p->bias, p->norm, p->eps, write.getCache(), write.getPageTable(), write.getPositions(),
        write.getHeadDimAttr(), write.getThetaAttr(), write.getScalingAttr(),
        write.getFreqFactorsAttr(), write.getRotaryDimAttr(), write.getAttentionFactorAttr(),
        write.getLayerAttr());
    rewriter.replaceOp(write, fused.getResults());
    rewriter.eraseOp(product);
    return success();
  }
  RowLimits maxRows;
};

/// A product with nothing to fold (Gemma's attention output and down
/// products, which a norm follows before the residual add, and its head,
/// which reads the last add_rms_norm's rows) still becomes llm.matvec where
/// the kernel takes its rows: tried after the folds.
struct LoneProduct : public RewritePattern {
  LoneProduct(MLIRContext *ctx, RowLimits maxRows)
      : RewritePattern(MatchAnyOpTypeTag(), /*benefit=*/0, ctx), maxRows(maxRows) {}

  LogicalResult matchAndRewrite(Operation *op, PatternRewriter &rewriter) const override {
    if (!isa<llm::LinearOp, llm::LogitsOp>(op)) return failure();
    std::optional<MatVecParts> p = partsOf(op, maxRows);
    if (!p) return rewriter.notifyMatchFailure(op, "the matrix-vector kernel does not take it");
    rewriter.replaceOp(op, p->build(rewriter, op->getLoc(), op->getResultTypes()));
    return success();
  }
  RowLimits maxRows;
};

struct FuseMatVecPass : public impl::FuseMatVecBase<FuseMatVecPass> {
  using FuseMatVecBase::FuseMatVecBase;

  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    patterns.add<NormPrologue, SwiGLUEpilogue, ResidualEpilogue, RopeKVWriteEpilogue,
                 LoneProduct>(
        &getContext(),
        RowLimits{int64_t(maxRows), int64_t(maxBf16Rows), int64_t(maxTensorCoreRows)});
    if (failed(rewriteGreedily(getOperation(), std::move(patterns))))
      return signalPassFailure();
  }
};

} // namespace
} // namespace kvplan
