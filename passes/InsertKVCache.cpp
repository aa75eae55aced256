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

/// The sliding windows of the module's attention ops, and the most rows an
/// entry point appends to one sequence at once: what one sequence's pages
/// at once depend on (spec/ModelSpec.h's sequencePeakPages).
struct AttentionWindows {
  int64_t widest = 0; // of the sliding ops
  bool full = false;  // some op reads every key
  explicit AttentionWindows(ModuleOp module) {
    module.walk([&](llm::AttentionOp op) {
      if (std::optional<uint64_t> w = op.getWindow())
        widest = std::max(widest, int64_t(*w));
      else
        full = true;
    });
  }
  /// The window of a pool that holds every layer: 0 where one reads every
  /// key (no page is given back).
  int64_t ofAll() const { return full ? 0 : widest; }
  /// Sliding and full ops mix: the sliding ones may have a pool of their own.
  bool mixed() const { return full && widest > 0; }
};

int64_t rowsPerCall(ModuleOp module) {
  int64_t rows = 1;
  for (auto fn : module.getOps<func::FuncOp>())
    if (fn->hasAttr(attr::kEntry))
      if (BlockArgument t = findArg(fn, "tokens"))
        rows = std::max(rows, cast<RankedTensorType>(t.getType()).getDimSize(0));
  return rows;
}

/// The sliding layers' own pool where windowed and full attention mix and
/// the module (or the option) sizes one; else 0.
int64_t windowPoolPages(ModuleOp module, const AttentionWindows &windows, int64_t option) {
  if (!windows.mixed()) return 0;
  if (option) return option;
  auto a = module->getAttrOfType<IntegerAttr>(attr::kWindowKvPages);
  return a ? a.getInt() : 0;
}

/// One pool's page table and cache as the rewrite threads them.
struct Pool {
  llm::KVCacheType type;
  Value table, cache;
  int64_t layers = 0;
};

struct InsertKVCachePass : public impl::InsertKVCacheBase<InsertKVCachePass> {
  using InsertKVCacheBase::InsertKVCacheBase;

  /// Refuses a pool too small for one sequence at once.
  LogicalResult checkPool(ModuleOp module, const char *what, const char *option, int64_t pages,
                          int64_t need, int64_t window, int64_t page, int64_t seq) {
    if (pages >= need) return success();
    InFlightDiagnostic d = module.emitError() << "insert-kv-cache: a " << what << "of " << pages
                                              << " pages cannot hold one sequence of " << need
                                              << " pages (";
    if (window > 0)
      d << "at once, under a sliding window of " << window << " keys";
    else
      d << "max_seq_len " << seq << " / page_size " << page;
    d << "); give " << option << " >= " << need;
    return failure();
  }

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
    // Prefill and decode share the pools, so both see the same cache types.
    int64_t pages = poolPages(module, settings, kvPages, page, seq);
    const AttentionWindows windows(module);
    const int64_t window = windows.ofAll(), widest = windows.widest, rows = rowsPerCall(module);
    if (failed(checkPool(module, "pool ", "kv-pages", pages,
                         sequencePeakPages(window, page, rows, seq), window, page, seq)))
      return signalPassFailure();
    const int64_t windowPages = windowPoolPages(module, windows, windowKvPages);
    if (windowPages > 0 &&
        failed(checkPool(module, "sliding layers' pool ", "window-kv-pages", windowPages,
                         sequencePeakPages(widest, page, rows, seq), widest, page, seq)))
      return signalPassFailure();
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
      if (failed(rewrite(fn, entry.getValue() == "decode", page, seq, pages, windowPages)))
        return signalPassFailure();
    }
    if (!any) {
      module.emitError() << "no entry points (llm.entry) to give a KV cache; run "
                            "split-prefill-decode first";
      return signalPassFailure();
    }
  }

  LogicalResult rewrite(func::FuncOp fn, bool isDecode, int64_t page, int64_t seq,
                        int64_t pages, int64_t windowPages) {
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
    const int64_t pagesPerSeq = seq / page;
    auto first = attns.front();
    // With a window pool, the sliding layers are its layers, the rest the
    // main pool's.
    const int64_t windowed = windowPages > 0 ? llvm::count_if(attns, [](llm::AttentionOp op) {
      return op.getWindow().has_value();
    }) : 0;
    Type element = kvElementType(fn->getParentOfType<ModuleOp>(), b);
    auto cacheType = [&](int64_t layers, int64_t n) {
      return llm::KVCacheType::get(fn.getContext(), layers, n, page, first.getNumKvHeads(),
                                   first.getHeadDim(), element);
    };
    auto tableType = RankedTensorType::get({isDecode ? rows : 1, pagesPerSeq}, b.getI32Type());
    auto role = [&](StringRef r) {
      return b.getDictionaryAttr(b.getNamedAttr(attr::kArg, b.getStringAttr(r)));
    };
    auto addPool = [&](llm::KVCacheType type, StringRef table, StringRef cache) {
      unsigned n = fn.getNumArguments();
      fn.insertArgument(n, tableType, role(table), fn.getLoc());
      fn.insertArgument(n + 1, type, role(cache), fn.getLoc());
      return Pool{type, fn.getArgument(n), fn.getArgument(n + 1)};
    };
    Pool main = addPool(cacheType(int64_t(attns.size()) - windowed, pages), "page_table",
                        "kv_cache");
    Pool window;
    if (windowed > 0)
      window = addPool(cacheType(windowed, windowPages), "window_page_table", "window_kv_cache");

    auto viewType = llm::KVViewType::get(fn.getContext(), main.type.getKvHeads(),
                                         main.type.getHeadDim(), main.type.getElementType());
    for (llm::AttentionOp op : attns) {
      if (op.getMask() == llm::AttentionMask::cache)
        return op.emitOpError() << "already reads a KV cache";
      if (int64_t(op.getNumKvHeads()) != main.type.getKvHeads() ||
          int64_t(op.getHeadDim()) != main.type.getHeadDim())
        return op.emitOpError() << "every layer must have the same KV heads and head_dim";
      Pool &pool = windowed > 0 && op.getWindow() ? window : main;
      const IntegerAttr layer = b.getI64IntegerAttr(pool.layers++);
      b.setInsertionPoint(op);
      auto write = b.create<llm::KVCacheWriteOp>(op.getLoc(), pool.type, op.getKey(),
                                                 op.getValue(), pool.cache, pool.table,
                                                 positions, layer);
      pool.cache = write.getResult();
      auto read = b.create<llm::KVCacheReadOp>(op.getLoc(), viewType, viewType, pool.cache,
                                               pool.table, positions, layer);
      op.getKeyMutable().assign(read.getKeys());
      op.getValueMutable().assign(read.getValues());
      op.setMask(llm::AttentionMask::cache);
    }
    return success();
  }
};

} // namespace
} // namespace kvplan
