// --partition-tensor-parallel: @forward -> one rank's share of every layer.
#include "passes/Passes.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/SymbolTable.h"
#include "llvm/Support/MathExtras.h"

#include <string>

using namespace mlir;

namespace kvplan {
#define GEN_PASS_DEF_PARTITIONTENSORPARALLEL
#include "passes/Passes.h.inc"
} // namespace kvplan

namespace kvplan {
namespace {

RankedTensorType withDim(RankedTensorType t, int64_t dim, int64_t size) {
  SmallVector<int64_t> shape(t.getShape());
  shape[size_t(dim)] = size;
  return RankedTensorType::get(shape, t.getElementType());
}

/// Cuts one function's layers between `ranks` ranks (see Passes.td).
class Partitioner {
public:
  Partitioner(ModuleOp module, func::FuncOp fn, int64_t ranks)
      : module(module), fn(fn), ranks(ranks), symbols(module) {}

  LogicalResult run() {
    SmallVector<llm::AttentionOp> attentions;
    SmallVector<llm::SwiGLUOp> ffns;
    SmallVector<llm::LogitsOp> heads;
    SmallVector<llm::MoEFFNOp> mixtures;
    fn.walk([&](Operation *op) {
      if (auto a = dyn_cast<llm::AttentionOp>(op)) attentions.push_back(a);
      if (auto s = dyn_cast<llm::SwiGLUOp>(op)) ffns.push_back(s);
      if (auto l = dyn_cast<llm::LogitsOp>(op)) heads.push_back(l);
      if (auto m = dyn_cast<llm::MoEFFNOp>(op)) mixtures.push_back(m);
    });
    for (llm::AttentionOp a : attentions)
      if (failed(attention(a))) return failure();
    for (llm::SwiGLUOp s : ffns)
      if (failed(ffn(s))) return failure();
    for (llm::MoEFFNOp m : mixtures)
      if (failed(experts(m))) return failure();
    for (llm::LogitsOp l : heads)
      if (failed(head(l))) return failure();
    Operation *ret = fn.getBody().front().getTerminator();
    fn.setFunctionType(FunctionType::get(fn.getContext(), fn.getBody().getArgumentTypes(),
                                         ret->getOperandTypes()));
    return success();
  }

private:
  /// The linear that makes `v`, through an llm.rope when `throughRope` and
  /// the llm.head_rms_norm before it (Qwen3's), if any: each normalizes
  /// whole heads, so a rank's heads need nothing from the others.
  llm::LinearOp producer(Value v, bool throughRope, llm::RopeOp *rope = nullptr,
                         llm::HeadRMSNormOp *norm = nullptr) {
    Operation *def = v.getDefiningOp();
    if (throughRope)
      if (auto r = dyn_cast_or_null<llm::RopeOp>(def)) {
        if (rope) *rope = r;
        def = r.getInput().getDefiningOp();
        if (auto n = dyn_cast_or_null<llm::HeadRMSNormOp>(def); n && norm) {
          *norm = n;
          def = n.getInput().getDefiningOp();
        }
      }
    auto lin = dyn_cast_or_null<llm::LinearOp>(def);
    if (lin && lin.getNumResults() == 1 && v.hasOneUse() &&
        (!rope || !*rope || rope->getInput().hasOneUse()) &&
        (!norm || !*norm || norm->getInput().hasOneUse()))
      return lin;
    return {};
  }

  /// The one linear that reads `v`, or null.
  llm::LinearOp consumer(Value v) {
    if (!v.hasOneUse()) return {};
    auto lin = dyn_cast<llm::LinearOp>(*v.getUsers().begin());
    return lin && lin.getInput() == v ? lin : llm::LinearOp();
  }

  /// Marks `name` as cut along `dim` into `pieces` and gives it one piece's
  /// type. A weight read twice must be cut the same way both times.
  LogicalResult shard(Operation *user, StringRef name, int64_t dim, int64_t pieces,
                      StringRef why = "") {
    auto w = symbols.lookup<llm::WeightOp>(name);
    if (!w) return user->emitOpError() << "reads @" << name << ", which is not an llm.weight";
    auto want = llm::ShardAttr::get(module.getContext(), dim, pieces, why);
    if (w.getShardAttr()) {
      if (w.getShardAttr() == want) return success();
      return user->emitOpError() << "reads @" << name << ", which another op cut differently";
    }
    RankedTensorType t = w.getTensorType();
    if (dim >= t.getRank() || t.getDimSize(dim) % pieces != 0)
      return user->emitOpError() << "cannot cut @" << name << " (" << t << ") into " << pieces
                                 << " pieces along dimension " << dim;
    w.setType(withDim(t, dim, t.getDimSize(dim) / pieces));
    w.setShardAttr(want);
    return success();
  }

  /// A linear cut by output features: its weight (and bias) by rows, its
  /// result by columns.
  LogicalResult splitOutputs(llm::LinearOp lin, int64_t pieces, StringRef why = "") {
    if (failed(shard(lin, lin.getWeight(), 0, pieces, why))) return failure();
    if (auto bias = lin.getBias())
      if (failed(shard(lin, *bias, 0, pieces, why))) return failure();
    auto t = cast<RankedTensorType>(lin.getResult(0).getType());
    lin.getResult(0).setType(withDim(t, 1, t.getDimSize(1) / pieces));
    return success();
  }

  /// A linear cut by input features, whose partial sums an llm.all_reduce
  /// adds up.
  LogicalResult splitInputs(llm::LinearOp lin) {
    if (lin.getBias())
      return lin.emitOpError() << "has a bias and reads features cut between ranks: every rank "
                                  "would add it; tensor parallelism needs it without one";
    if (failed(shard(lin, lin.getWeight(), 1, ranks))) return failure();
    allReduceAfter(lin, lin.getResult(0));
    return success();
  }

  /// An llm.all_reduce of `partial` (made by `op`) right after `op`, read
  /// wherever `partial` was.
  static void allReduceAfter(Operation *op, Value partial) {
    OpBuilder b(op->getContext());
    b.setInsertionPointAfter(op);
    auto sum = b.create<llm::AllReduceOp>(op->getLoc(), partial.getType(), partial);
    partial.replaceAllUsesExcept(sum.getResult(), sum);
  }

  LogicalResult attention(llm::AttentionOp a) {
    const int64_t heads = a.getNumHeads(), kvHeads = a.getNumKvHeads(), dim = a.getHeadDim();
    if (heads % ranks != 0)
      return a.emitOpError() << "has num_heads = " << heads << ", which " << ranks
                             << " tensor-parallel ranks cannot share: choose ranks that divide it";
    int64_t kvPieces = ranks;
    std::string why;
    if (kvHeads % ranks != 0) {
      if (ranks % kvHeads != 0)
        return a.emitOpError() << "has num_kv_heads = " << kvHeads << ", which neither divides "
                               << "nor is divided by " << ranks << " tensor-parallel ranks";
      kvPieces = kvHeads;
      why = "num_kv_heads = " + std::to_string(kvHeads) + " < " + std::to_string(ranks) +
            " ranks: each rank keeps the KV head its query heads read, replicated on " +
            std::to_string(ranks / kvHeads) + " ranks";
    }
    llm::RopeOp ropeQ, ropeK;
    llm::HeadRMSNormOp normQ, normK;
    llm::LinearOp q = producer(a.getQuery(), true, &ropeQ, &normQ);
    llm::LinearOp k = producer(a.getKey(), true, &ropeK, &normK);
    llm::LinearOp v = producer(a.getValue(), false);
    llm::LinearOp o = consumer(a.getResult());
    if (!q || !k || !v || !o)
      return a.emitOpError() << "is not the frontend's attention block (linear, head_rms_norm if "
                                "any, rope, attention, linear, each result read once): run "
                                "partition-tensor-parallel before the other passes";
    if (failed(splitOutputs(q, ranks)) || failed(splitOutputs(k, kvPieces, why)) ||
        failed(splitOutputs(v, kvPieces, why)) || failed(splitInputs(o)))
      return failure();
    for (llm::HeadRMSNormOp n : {normQ, normK})
      if (n) n.getResult().setType(n.getInput().getType());
    for (llm::RopeOp r : {ropeQ, ropeK})
      if (r) r.getResult().setType(r.getInput().getType());
    a.setNumHeads(heads / ranks);
    a.setNumKvHeads(kvHeads / kvPieces);
    auto t = cast<RankedTensorType>(a.getResult().getType());
    a.getResult().setType(withDim(t, 1, heads / ranks * dim));
    return success();
  }

  LogicalResult ffn(llm::SwiGLUOp s) {
    llm::LinearOp gate = producer(s.getGate(), false), up = producer(s.getUp(), false);
    llm::LinearOp down = consumer(s.getResult());
    if (!gate || !up || !down)
      return s.emitOpError() << "is not the frontend's FFN (gate and up linears, swiglu, down "
                                "linear): run partition-tensor-parallel before the other passes";
    auto t = cast<RankedTensorType>(s.getResult().getType());
    if (t.getDimSize(1) % ranks != 0)
      return s.emitOpError() << "has an FFN width of " << t.getDimSize(1) << ", which " << ranks
                             << " tensor-parallel ranks cannot share";
    if (failed(splitOutputs(gate, ranks)) || failed(splitOutputs(up, ranks)) ||
        failed(splitInputs(down)))
      return failure();
    s.getResult().setType(withDim(t, 1, t.getDimSize(1) / ranks));
    return success();
  }

  /// A mixture of experts by the experts' features: every rank routes each
  /// row as the others do (the router whole), runs its share of every
  /// chosen expert's gate and up features (the stacks' rows) and of their
  /// down product's inputs (its columns), and an llm.all_reduce adds the
  /// ranks' weighted partial sums. A shared expert is a dense FFN, cut as
  /// one (ffn() ran first); its gate whole, the op adds each rank's partial
  /// rows, gated alike on every rank, into its own partial sums, so the one
  /// all-reduce after the op sums both, and the shared expert's goes.
  LogicalResult experts(llm::MoEFFNOp m) {
    auto gate = symbols.lookup<llm::WeightOp>(m.getGate());
    if (!gate)
      return m.emitOpError() << "reads @" << m.getGate() << ", which is not an llm.weight";
    const int64_t ff = gate.getTensorType().getDimSize(1);
    if (ff % ranks != 0)
      return m.emitOpError() << "has experts " << ff << " features wide, which " << ranks
                             << " tensor-parallel ranks cannot share";
    if (failed(shard(m, m.getGate(), 1, ranks)) || failed(shard(m, m.getUp(), 1, ranks)) ||
        failed(shard(m, m.getDown(), 2, ranks)))
      return failure();
    if (Value shared = m.getShared()) {
      auto sum = shared.getDefiningOp<llm::AllReduceOp>();
      if (!sum || !shared.hasOneUse())
        return m.emitOpError() << "reads a shared expert that is not the frontend's FFN (an "
                                  "llm.all_reduce of its down product, read once): run "
                                  "partition-tensor-parallel before the other passes";
      m.getSharedMutable().assign(sum.getInput());
      sum.erase();
    }
    allReduceAfter(m, m.getResult());
    return success();
  }

  /// The LM head by vocabulary. Tied embeddings stay whole for the
  /// embedding; the head reads its own cut copy, @output.
  LogicalResult head(llm::LogitsOp l) {
    auto t = cast<RankedTensorType>(l.getResult().getType());
    if (t.getDimSize(1) % ranks != 0)
      return l.emitOpError() << "has a vocabulary of " << t.getDimSize(1) << ", which " << ranks
                             << " tensor-parallel ranks cannot share";
    StringRef name = l.getWeight();
    bool tied = false;
    fn.walk([&](llm::EmbeddingOp e) { tied |= e.getWeight() == name; });
    if (tied) {
      auto emb = symbols.lookup<llm::WeightOp>(name);
      if (!emb || emb.getParts()) return l.emitOpError() << "reads an unexpected tied weight";
      if (symbols.lookup("output"))
        return l.emitOpError() << "ties @" << name << " but the module has an @output already";
      OpBuilder b(emb);
      b.setInsertionPointAfter(emb);
      auto out = b.create<llm::WeightOp>(emb.getLoc(), "output", emb.getTensorType(),
                                         b.getStrArrayAttr({name}), llm::ShardAttr());
      symbols.insert(out);
      l.setWeight("output");
      name = "output";
    }
    if (failed(shard(l, name, 0, ranks))) return failure();
    l.getResult().setType(withDim(t, 1, t.getDimSize(1) / ranks));
    return success();
  }

  ModuleOp module;
  func::FuncOp fn;
  int64_t ranks;
  SymbolTable symbols;
};

struct PartitionTensorParallelPass
    : public impl::PartitionTensorParallelBase<PartitionTensorParallelPass> {
  using PartitionTensorParallelBase::PartitionTensorParallelBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    const int64_t n = ranks ? int64_t(ranks) : tensorParallelRanks(module);
    if (n < 1 || !llvm::isPowerOf2_64(uint64_t(n))) {
      module.emitError() << "tensor parallel needs a power of two of ranks, got " << n;
      return signalPassFailure();
    }
    if (n == 1) return;
    auto forward = module.lookupSymbol<func::FuncOp>("forward");
    if (!forward) {
      module.emitError() << "partition-tensor-parallel runs on func.func @forward, before "
                            "split-prefill-decode";
      return signalPassFailure();
    }
    for (auto w : module.getOps<llm::WeightOp>())
      if (w.getShardAttr()) {
        w.emitOpError() << "is cut already; run partition-tensor-parallel once";
        return signalPassFailure();
      }
    module->setAttr(attr::kTensorParallel, IntegerAttr::get(IntegerType::get(&getContext(), 64), n));
    if (failed(Partitioner(module, forward, n).run())) return signalPassFailure();
  }
};

} // namespace
} // namespace kvplan
