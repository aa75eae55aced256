// --split-prefill-decode: @forward -> @prefill (a chunk) and @decode (a
// batch), smaller copies of them (@prefill.8, @decode.8, ...) where asked, and with
// speculation @verify (draft tokens of one sequence), and for prompt
// log-probabilities @score (a prompt's tokens, every row's logits).
#include "passes/Passes.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"

using namespace mlir;

namespace kvplan {
#define GEN_PASS_DEF_SPLITPREFILLDECODE
#include "passes/Passes.h.inc"
} // namespace kvplan

namespace kvplan {
namespace {

/// Sets the leading dimension of every `from`-row tensor in `fn` to `to`.
LogicalResult retypeRows(func::FuncOp fn, int64_t from, int64_t to) {
  auto retype = [&](Value v) -> LogicalResult {
    auto t = dyn_cast<RankedTensorType>(v.getType());
    if (!t)
      return success();
    if (t.getRank() == 0 || t.getDimSize(0) != from) {
      if (auto op = v.getDefiningOp())
        return op->emitOpError() << "expected " << from << " rows (one per token of @forward), got "
                                 << t;
      return fn.emitOpError() << "expected every tensor argument to have " << from << " rows";
    }
    SmallVector<int64_t> shape(t.getShape());
    shape[0] = to;
    v.setType(RankedTensorType::get(shape, t.getElementType()));
    return success();
  };
  for (BlockArgument a : fn.getArguments())
    if (failed(retype(a)))
      return failure();
  WalkResult r = fn.walk([&](Operation *op) {
    for (Value res : op->getResults())
      if (failed(retype(res)))
        return WalkResult::interrupt();
    return WalkResult::advance();
  });
  if (r.wasInterrupted())
    return failure();
  Operation *ret = fn.getBody().front().getTerminator();
  fn.setFunctionType(FunctionType::get(fn.getContext(), fn.getBody().getArgumentTypes(),
                                       ret->getOperandTypes()));
  return success();
}

struct SplitPrefillDecodePass
    : public impl::SplitPrefillDecodeBase<SplitPrefillDecodePass> {
  using SplitPrefillDecodeBase::SplitPrefillDecodeBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto forward = module.lookupSymbol<func::FuncOp>("forward");
    if (!forward) {
      module.emitError() << "split-prefill-decode needs a func.func @forward (the whole-sequence "
                            "model the frontend builds)";
      return signalPassFailure();
    }
    for (StringRef name : {"prefill", "decode", "verify", "score"})
      if (module.lookupSymbol(name)) {
        module.emitError() << "module already has @" << name << "; run split-prefill-decode once";
        return signalPassFailure();
      }
    BlockArgument tokens = findArg(forward, "tokens");
    if (!tokens || !isa<RankedTensorType>(tokens.getType())) {
      forward.emitOpError() << "needs a tokens argument (llm.arg = \"tokens\")";
      return signalPassFailure();
    }
    int64_t seqRows = cast<RankedTensorType>(tokens.getType()).getDimSize(0);

    llm::SettingsAttr settings = moduleSettings(module);
    int64_t prefillRows = chunk ? int64_t(chunk) : settings ? settings.getPrefillChunk() : 0;
    int64_t decodeRows = maxBatch ? int64_t(maxBatch) : settings ? settings.getMaxBatch() : 0;
    if (prefillRows <= 0 || decodeRows <= 0) {
      module.emitError() << "prefill chunk and max batch must be positive: set llm.settings "
                            "(prefill_chunk, max_batch) or the pass options chunk, max-batch";
      return signalPassFailure();
    }
    FailureOr<int64_t> draft = draftTokens(module, seqRows);
    FailureOr<int64_t> scored = scoreRowsOf(module, seqRows);
    if (failed(draft) || failed(scored))
      return signalPassFailure();

    FailureOr<SmallVector<int64_t>> prefillCopies =
        copyRows(module, prefillVariantRows, attr::kPrefillCopies, "prefill-rows", "prefill",
                 prefillRows);
    FailureOr<SmallVector<int64_t>> decodeCopies = copyRows(
        module, decodeVariantRows, attr::kDecodeCopies, "decode-rows", "decode", decodeRows);
    if (failed(prefillCopies) || failed(decodeCopies))
      return signalPassFailure();

    OpBuilder b(module.getContext());
    b.setInsertionPointAfter(forward);
    // (symbol, role, rows)
    SmallVector<std::tuple<std::string, StringRef, int64_t>> entries = {
        {"prefill", "prefill", prefillRows}, {"decode", "decode", decodeRows}};
    for (int64_t rows : *prefillCopies)
      entries.push_back({"prefill." + std::to_string(rows), "prefill", rows});
    for (int64_t rows : *decodeCopies)
      entries.push_back({"decode." + std::to_string(rows), "decode", rows});
    if (*draft > 0)
      entries.push_back({"verify", "verify", *draft + 1});
    if (*scored > 0)
      entries.push_back({"score", "score", *scored});
    for (auto &[name, role, rows] : entries) {
      auto fn = cast<func::FuncOp>(b.clone(*forward));
      fn.setSymName(name);
      fn->setAttr(attr::kEntry, b.getStringAttr(role));
      if (failed(retypeRows(fn, seqRows, rows)))
        return signalPassFailure();
      if (role == "decode")
        fn.walk([&](llm::AttentionOp op) { op.setMask(llm::AttentionMask::self); });
    }
    forward.erase();
  }

  /// The rows of @entry's copies, @entry.N: option `flag`'s row counts
  /// below `entry`'s rows (the others left out), ascending and each once;
  /// without the option, the module's attribute `attrName` (the settings'
  /// list, the verifier's ascending positive rows), each below the entry's.
  FailureOr<SmallVector<int64_t>> copyRows(ModuleOp module, ArrayRef<int64_t> option,
                                           StringRef attrName, StringRef flag, StringRef entry,
                                           int64_t entryRows) {
    auto listed = module->getAttrOfType<DenseI64ArrayAttr>(attrName);
    if (option.empty() && listed) {
      for (int64_t r : listed.asArrayRef())
        if (r >= entryRows) {
          module.emitError() << attrName << " lists " << r << " rows, not below @" << entry
                             << "'s " << entryRows << ": a copy has fewer rows than its entry "
                             << "point; leave " << r << " out";
          return failure();
        }
      return SmallVector<int64_t>(listed.asArrayRef());
    }
    SmallVector<int64_t> rows;
    for (int64_t r : option) {
      if (r <= 0) {
        module.emitError() << flag << " " << r << " must be positive: the rows of a smaller "
                           << "copy of @" << entry;
        return failure();
      }
      if (r < entryRows && !llvm::is_contained(rows, r))
        rows.push_back(r);
    }
    llvm::sort(rows);
    return rows;
  }

  /// Draft tokens per @verify call: the option, else the module's
  /// llm.speculate, else 0 (no @verify).
  FailureOr<int64_t> draftTokens(ModuleOp module, int64_t seqRows) {
    int64_t k = speculate;
    if (!k)
      if (auto a = module->getAttrOfType<IntegerAttr>(attr::kSpeculate))
        k = a.getInt();
    if (k < 0 || k > CompileSettings::kMaxSpeculate || (k > 0 && k + 1 > seqRows)) {
      module.emitError() << "speculate " << k << " must be 0 (off) or 1 to "
                         << CompileSettings::kMaxSpeculate
                         << ", with speculate + 1 rows fitting the context of " << seqRows;
      return failure();
    }
    return k;
  }

  /// Rows of @score: the option, else the module's llm.score_rows, else 0
  /// (no @score).
  FailureOr<int64_t> scoreRowsOf(ModuleOp module, int64_t seqRows) {
    int64_t rows = scoreRows;
    if (!rows)
      if (auto a = module->getAttrOfType<IntegerAttr>(attr::kScoreRows))
        rows = a.getInt();
    if (rows < 0 || rows > CompileSettings::kMaxScoreRows || rows > seqRows) {
      module.emitError() << "score rows " << rows << " must be 0 (no @score) or 1 to "
                         << std::min(CompileSettings::kMaxScoreRows, seqRows)
                         << " (at most the context of " << seqRows << ")";
      return failure();
    }
    return rows;
  }
};

} // namespace
} // namespace kvplan
