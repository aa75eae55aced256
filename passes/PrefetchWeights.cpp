// --prefetch-weights: each kernel of an entry point asks the GPU's L2 for
// the first rows of the weights the matrix-vector products after it will
// stream, as many as fit in a budget beside what it streams itself
// (llm.prefetch on the op), so that memory keeps streaming across kernel
// boundaries and a product's first loads meet L2 instead of memory.
#include "passes/Passes.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinAttributes.h"

using namespace mlir;

namespace kvplan {
#define GEN_PASS_DEF_PREFETCHWEIGHTS
#include "passes/Passes.h.inc"
} // namespace kvplan

namespace kvplan {
namespace {

/// A product that streams its weight once, row by row: an llm.matvec or an
/// llm.matvec_rope_kv_write of f32, bf16 or f16 weights, whose rows can be
/// asked for ahead; `asked` of its rows (from the first) have been.
struct Stream {
  Operation *op = nullptr;
  FlatSymbolRefAttr weight;
  int64_t rows = 0, rowBytes = 0, asked = 0;
  int64_t bytes() const { return rows * rowBytes; }
};

/// The weight `op` streams whole: a matvec's (`streams`: whether rows of it
/// may be asked for ahead, f32, bf16 or f16); or a linear's and a logits'
/// (cuBLAS products, which cannot ask). Null for ops that stream none.
FlatSymbolRefAttr streamedWeight(Operation *op, bool &streams) {
  streams = isa<llm::MatVecOp, llm::MatVecRopeKVWriteOp>(op);
  if (auto m = dyn_cast<llm::MatVecOp>(op)) return m.getWeightAttr();
  if (auto m = dyn_cast<llm::MatVecRopeKVWriteOp>(op)) return m.getWeightAttr();
  if (auto l = dyn_cast<llm::LinearOp>(op)) return l.getWeightAttr();
  if (auto h = dyn_cast<llm::LogitsOp>(op)) return h.getWeightAttr();
  return {};
}

/// The rows and the bytes of a row of `weight`; rows 0 where its element
/// type is not f32, bf16 or f16 (quantized weights keep their scales apart).
std::pair<int64_t, int64_t> weightRows(Operation *from, FlatSymbolRefAttr weight) {
  auto w = SymbolTable::lookupNearestSymbolFrom<llm::WeightOp>(from, weight);
  if (!w) return {0, 0};
  RankedTensorType t = w.getTensorType();
  Type e = t.getElementType();
  if (!(e.isF32() || e.isBF16() || e.isF16()) || t.getRank() < 1) return {0, 0};
  const int64_t cols = t.getShape().back();
  return {t.getNumElements() / std::max<int64_t>(cols, 1), cols * (e.isF32() ? 4 : 2)};
}

/// The ops of one function in order, with the products that stream weights.
class Planner {
public:
  Planner(Block &body, int64_t budget) : budget(budget) {
    for (Operation &op : body) {
      bool askable = false;
      FlatSymbolRefAttr w = streamedWeight(&op, askable);
      int index = kNone;
      if (w) {
        auto [rows, rowBytes] = weightRows(&op, w);
        index = askable && rows > 0 ? int(streams.size()) : kBarrier;
        if (index >= 0) streams.push_back({&op, w, rows, rowBytes});
      }
      ops.push_back(&op);
      streamOf.push_back(index);
    }
  }

  /// Marks each op that runs a kernel of its own with what it asks for.
  void run() {
    size_t next = 0; // the first stream after the op
    for (size_t i = 0; i < ops.size(); ++i) {
      const int self = streamOf[i];
      if (self >= 0) next = size_t(self) + 1;
      // A cuBLAS product cannot ask; the cache read (a view the attention
      // reads in place) and a sum over ranks (NCCL) run no kernel.
      if (self == kBarrier || isa<llm::KVCacheReadOp, llm::AllReduceOp>(ops[i])) continue;
      ask(i, self >= 0 ? streams[size_t(self)].bytes() : 0, next);
    }
  }

private:
  static constexpr int kNone = -1, kBarrier = -2;

  /// Asks, at op `at` (which streams `own` bytes itself), for the next rows
  /// of the streams from `first` on, in order, up to the first barrier after
  /// the op, as many as the budget leaves beside `own` and the rows asked
  /// for already and not yet read; marks the op with them (llm.prefetch).
  void ask(size_t at, int64_t own, size_t first) {
    Operation *barrier = nullptr;
    for (size_t j = at + 1; j < ops.size() && !barrier; ++j)
      if (streamOf[j] == kBarrier) barrier = ops[j];
    int64_t room = budget - own;
    for (size_t s = first; s < streams.size(); ++s) room -= streams[s].asked * streams[s].rowBytes;
    Builder b(ops[at]->getContext());
    SmallVector<Attribute> asks;
    for (size_t s = first; s < streams.size() && room > 0 &&
                           int64_t(asks.size()) < CompileSettings::kMaxPrefetchWeights;
         ++s) {
      Stream &st = streams[s];
      if (barrier && barrier->isBeforeInBlock(st.op)) break;
      if (st.asked == st.rows) continue;
      const int64_t take = std::min(st.rows - st.asked, room / st.rowBytes);
      if (take <= 0) break;
      asks.push_back(b.getDictionaryAttr(
          {b.getNamedAttr("weight", st.weight),
           b.getNamedAttr("rows", b.getDenseI64ArrayAttr({st.asked, st.asked + take}))}));
      st.asked += take;
      room -= take * st.rowBytes;
      if (st.asked < st.rows) break; // rows in order: the next stream waits for this one's
    }
    if (!asks.empty()) ops[at]->setAttr(attr::kPrefetch, b.getArrayAttr(asks));
  }

  int64_t budget;
  std::vector<Operation *> ops;
  std::vector<int> streamOf; // index into streams, kNone or kBarrier
  std::vector<Stream> streams;
};

struct PrefetchWeightsPass : public impl::PrefetchWeightsBase<PrefetchWeightsPass> {
  using PrefetchWeightsBase::PrefetchWeightsBase;

  /// The budget in bytes: the option, else the module's llm.l2_prefetch_mib.
  int64_t budget() {
    int64_t mib = budgetMib;
    if (mib < 0) {
      auto m = getOperation()->getParentOfType<ModuleOp>();
      auto a = m ? m->getAttrOfType<IntegerAttr>(attr::kL2PrefetchMib) : IntegerAttr();
      mib = a ? a.getInt() : 0;
    }
    return mib * (int64_t(1) << 20);
  }

  void runOnOperation() override {
    const int64_t limit = budget();
    if (limit <= 0 || getOperation().getBody().empty()) return;
    Planner(getOperation().getBody().front(), limit).run();
  }
};

} // namespace
} // namespace kvplan
