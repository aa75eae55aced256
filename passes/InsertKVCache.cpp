// --insert-kv-cache: attention over fresh K/V -> cache write + cache read.
#include "passes/Passes.h"
#include "spec/ModelSpec.h"

#include "mlir/IR/Builders.h"

using namespace mlir;

namespace kvplan {
#define GEN_PASS_DEF_INSERTKVCACHE
#include "passes/Passes.h.inc"
} // namespace kvplan

namespace kvplan {
namespace {

/// The cache's element type: llm.settings' kv_dtype, f32 without settings.
Type kvElementType(ModuleOp module, Builder &b) {
  llm::SettingsAttr settings = moduleSettings(module);
  return settings ? settings.getKvElementType() : b.getF32Type();
}

/// Pages in the pool: the kv-pages option; else llm.settings' pool, its
/// kv_pages x page_size tokens cut into pages of `page` tokens (the same
/// count unless a page-size option differs); else, as before pools were a
/// setting, max_seq_len tokens for each row of @decode.
int64_t poolPages(ModuleOp module, llm::SettingsAttr settings, int64_t option, int64_t page,
                  int64_t seq) {
  if (option) return option;
  if (settings) return settings.getKvPages() * settings.getPageSize() / page;
  int64_t batch = 1;
  if (auto decode = module.lookupSymbol<func::FuncOp>("decode"))
    if (BlockArgument t = findArg(decode, "tokens"))
      batch = std::max<int64_t>(cast<RankedTensorType>(t.getType()).getDimSize(0), 1);
  return batch * (seq / page);
}

/// The sliding window of the module's attention (0 where an op reads every
/// key; the widest where they differ) and the most rows an entry point
/// appends to one sequence at once: what one sequence's pages at once
/// depend on (spec/ModelSpec.h's sequencePeakPages).
int64_t moduleWindow(ModuleOp module) {
  bool full = false;
  int64_t widest = 0;
  module.walk([&](llm::AttentionOp op) {
    if (std::optional<uint64_t> w = op.getWindow())
      widest = std::max(widest, int64_t(*w));
    else
      full = true;
  });
  return full ? 0 : widest;
}

int64_t rowsPerCall(ModuleOp module) {
  int64_t rows = 1;
  for (auto fn : module.getOps<func::FuncOp>())
    if (fn->hasAttr(attr::kEntry))
      if (BlockArgument t = findArg(fn, "tokens"))
        rows = std::max(rows, cast<RankedTensorType>(t.getType()).getDimSize(0));
  return rows;
}

struct InsertKVCachePass : public impl::InsertKVCacheBase<InsertKVCachePass> {
  using InsertKVCacheBase::InsertKVCacheBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    llm::SettingsAttr settings = moduleSettings(module);
    int64_t page = pageSize ? int64_t(pageSize) : settings ? settings.getPageSize() : 0;
    int64_t seq = maxSeqLen ? int64_t(maxSeqLen) : settings ? settings.getMaxSeqLen() : 0;
    if (page <= 0 || seq <= 0 || seq % page != 0) {
      module.emitError() << "insert-kv-cache needs a page size that divides max_seq_len (got "
                         << page << " and " << seq << ")";
      return signalPassFailure();
    }
    // Prefill and decode share one pool, so both see the same cache type.
    int64_t pages = poolPages(module, settings, kvPages, page, seq);
    const int64_t window = moduleWindow(module);
    const int64_t need = sequencePeakPages(window, page, rowsPerCall(module), seq);
    if (pages < need) {
      InFlightDiagnostic d = module.emitError() << "insert-kv-cache: a pool of " << pages
                                                << " pages cannot hold one sequence of " << need
                                                << " pages (";
      if (window > 0)
        d << "at once, under a sliding window of " << window << " keys";
      else
        d << "max_seq_len " << seq << " / page_size " << page;
      d << "); give kv-pages >= " << need;
      return signalPassFailure();
    }
    bool any = false;
    for (auto fn : module.getOps<func::FuncOp>()) {
      auto entry = fn->getAttrOfType<StringAttr>(attr::kEntry);
      if (!entry)
        continue;
      any = true;
      if (findArg(fn, "kv_cache")) {
        fn.emitOpError() << "already has a KV cache; run insert-kv-cache once";
        return signalPassFailure();
      }
      if (failed(rewrite(fn, entry.getValue() == "decode", page, seq, pages)))
        return signalPassFailure();
    }
    if (!any) {
      module.emitError() << "no entry points (llm.entry) to give a KV cache; run "
                            "split-prefill-decode first";
      return signalPassFailure();
    }
  }

  LogicalResult rewrite(func::FuncOp fn, bool isDecode, int64_t page, int64_t seq,
                        int64_t pages) {
    SmallVector<llm::AttentionOp> attns;
    fn.walk([&](llm::AttentionOp op) { attns.push_back(op); });
    if (attns.empty())
      return fn.emitOpError() << "has no attention to give a KV cache";
    BlockArgument positions = findArg(fn, "positions");
    BlockArgument tokens = findArg(fn, "tokens");
    if (!positions || !tokens)
      return fn.emitOpError() << "needs tokens and positions arguments (llm.arg)";
    int64_t rows = cast<RankedTensorType>(tokens.getType()).getDimSize(0);

    OpBuilder b(fn.getContext());
    int64_t pagesPerSeq = seq / page;
    auto first = attns.front();
    auto cacheType = llm::KVCacheType::get(
        fn.getContext(), int64_t(attns.size()), pages, page,
        first.getNumKvHeads(), first.getHeadDim(), kvElementType(fn->getParentOfType<ModuleOp>(), b));
    auto tableType = RankedTensorType::get({isDecode ? rows : 1, pagesPerSeq}, b.getI32Type());

    unsigned n = fn.getNumArguments();
    auto role = [&](StringRef r) {
      return b.getDictionaryAttr(b.getNamedAttr(attr::kArg, b.getStringAttr(r)));
    };
    fn.insertArgument(n, tableType, role("page_table"), fn.getLoc());
    fn.insertArgument(n + 1, cacheType, role("kv_cache"), fn.getLoc());
    Value table = fn.getArgument(n), cache = fn.getArgument(n + 1);

    auto viewType = llm::KVViewType::get(fn.getContext(), cacheType.getKvHeads(),
                                         cacheType.getHeadDim(), cacheType.getElementType());
    for (auto [layer, op] : llvm::enumerate(attns)) {
      if (op.getMask() == llm::AttentionMask::cache)
        return op.emitOpError() << "already reads a KV cache";
      if (int64_t(op.getNumKvHeads()) != cacheType.getKvHeads() ||
          int64_t(op.getHeadDim()) != cacheType.getHeadDim())
        return op.emitOpError() << "every layer must have the same KV heads and head_dim";
      b.setInsertionPoint(op);
      auto write = b.create<llm::KVCacheWriteOp>(op.getLoc(), cacheType, op.getKey(),
                                                 op.getValue(), cache, table, positions,
                                                 b.getI64IntegerAttr(int64_t(layer)));
      cache = write.getResult();
      auto read = b.create<llm::KVCacheReadOp>(op.getLoc(), viewType, viewType, cache, table,
                                               positions, b.getI64IntegerAttr(int64_t(layer)));
      op.getKeyMutable().assign(read.getKeys());
      op.getValueMutable().assign(read.getValues());
      op.setMask(llm::AttentionMask::cache);
    }
    return success();
  }
};

} // namespace
} // namespace kvplan
