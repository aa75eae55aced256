// --fuse-ffn: gate/up projections -> one linear + llm.fused_ffn; linears of
// the same rows (Q, K, V) -> one linear with a result each.
#include "passes/Passes.h"

#include "mlir/IR/Builders.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/MapVector.h"

using namespace mlir;

namespace kvplan {
#define GEN_PASS_DEF_FUSEFFN
#include "passes/Passes.h.inc"
} // namespace kvplan

namespace kvplan {
namespace {

/// "layers.0.attention.wq", ".wk", ".wv" -> "layers.0.attention.wqkv".
std::string fusedName(ArrayRef<std::string> names) {
  std::string prefix = names.front();
  for (const std::string &n : names) {
    size_t i = 0;
    while (i < prefix.size() && i < n.size() && prefix[i] == n[i]) ++i;
    prefix.resize(i);
  }
  std::string out = prefix;
  for (const std::string &n : names) {
    std::string suffix = n.substr(prefix.size());
    out += (prefix.empty() && &n != &names.front()) ? "_" + suffix : suffix;
  }
  return out;
}

class WeightFuser {
public:
  explicit WeightFuser(ModuleOp module) : module(module), symbols(module) {}

  /// A weight concatenating `refs` along dimension 0 (made once, shared by
  /// every entry point), or null when their shapes or types do not match.
  FlatSymbolRefAttr concat(ArrayRef<FlatSymbolRefAttr> refs) {
    SmallVector<llm::WeightOp> parts;
    for (FlatSymbolRefAttr r : refs) {
      auto w = symbols.lookup<llm::WeightOp>(r.getValue());
      if (!w) return {};
      parts.push_back(w);
    }
    RankedTensorType first = parts.front().getTensorType();
    // Parts cut between tensor-parallel ranks concatenate rank by rank only
    // when each is cut the same way.
    llm::ShardAttr shard = parts.front().getShardAttr();
    if (llvm::any_of(parts, [&](llm::WeightOp w) { return w.getShardAttr() != shard; }))
      return {};
    if (shard && shard.getDim() != 0) return {};
    int64_t rows = 0;
    SmallVector<std::string> names, sources;
    for (llm::WeightOp w : parts) {
      RankedTensorType t = w.getTensorType();
      if (t.getElementType() != first.getElementType() || t.getRank() != first.getRank() ||
          t.getShape().drop_front() != first.getShape().drop_front())
        return {};
      rows += t.getDimSize(0);
      names.push_back(w.getSymName().str());
      // A part that is itself fused contributes its own parts.
      if (auto p = w.getParts())
        for (Attribute a : *p) sources.push_back(cast<StringAttr>(a).str());
      else
        sources.push_back(w.getSymName().str());
    }
    std::string name = fusedName(names);
    OpBuilder b(module.getContext());
    SmallVector<StringRef> srcRefs(sources.begin(), sources.end());
    ArrayAttr srcAttr = b.getStrArrayAttr(srcRefs);
    for (int n = 1;; ++n) {
      auto existing = symbols.lookup<llm::WeightOp>(name);
      if (!existing) break;
      if (existing.getParts() && *existing.getParts() == srcAttr)
        return FlatSymbolRefAttr::get(existing.getSymNameAttr());
      name = fusedName(names) + ".fused" + std::to_string(n);
    }
    SmallVector<int64_t> shape(first.getShape());
    shape[0] = rows;
    b.setInsertionPointAfter(parts.back());
    auto fused = b.create<llm::WeightOp>(parts.back().getLoc(), name,
                                         RankedTensorType::get(shape, first.getElementType()),
                                         srcAttr, shard);
    symbols.insert(fused);
    return FlatSymbolRefAttr::get(fused.getSymNameAttr());
  }

  void eraseUnused() {
    // One walk for every use, rather than one per weight.
    llvm::DenseSet<StringAttr> used;
    if (auto uses = SymbolTable::getSymbolUses(&module.getBodyRegion()))
      for (const SymbolTable::SymbolUse &use : *uses)
        used.insert(use.getSymbolRef().getRootReference());
    SmallVector<llm::WeightOp> dead;
    for (auto w : module.getOps<llm::WeightOp>())
      if (!used.contains(w.getSymNameAttr()))
        dead.push_back(w);
    for (auto w : dead)
      symbols.erase(w);
  }

private:
  ModuleOp module;
  SymbolTable symbols;
};

RankedTensorType withCols(Type t, int64_t cols) {
  auto r = cast<RankedTensorType>(t);
  return RankedTensorType::get({r.getDimSize(0), cols}, r.getElementType());
}

bool isPlainLinear(llm::LinearOp op) { return op && op.getNumResults() == 1 && !op.getBias(); }

/// swiglu(linear(x, w1), linear(x, w3)) -> fused_ffn(linear(x, w13)).
void fuseGateUp(func::FuncOp fn, WeightFuser &weights) {
  SmallVector<llm::SwiGLUOp> ops;
  fn.walk([&](llm::SwiGLUOp op) { ops.push_back(op); });
  for (llm::SwiGLUOp op : ops) {
    auto gate = op.getGate().getDefiningOp<llm::LinearOp>();
    auto up = op.getUp().getDefiningOp<llm::LinearOp>();
    if (!isPlainLinear(gate) || !isPlainLinear(up) || gate == up ||
        gate.getInput() != up.getInput() || !gate->hasOneUse() || !up->hasOneUse())
      continue;
    FlatSymbolRefAttr w = weights.concat({gate.getWeightAttr(), up.getWeightAttr()});
    if (!w)
      continue;
    OpBuilder b(op);
    int64_t ff = cast<RankedTensorType>(op.getType()).getDimSize(1);
    Operation *first = gate->isBeforeInBlock(up) ? gate : up;
    b.setInsertionPoint(first);
    auto linear = b.create<llm::LinearOp>(op.getLoc(), TypeRange{withCols(op.getType(), 2 * ff)},
                                          w, gate.getInput(), FlatSymbolRefAttr());
    b.setInsertionPoint(op);
    auto ffn = b.create<llm::FusedFFNOp>(op.getLoc(), op.getType(), linear.getResult(0),
                                         op.getGelu());
    op.replaceAllUsesWith(ffn.getResult());
    op.erase();
    gate.erase();
    up.erase();
  }
}

/// Linears that read the same rows -> one linear with a result each.
void fuseSiblings(func::FuncOp fn, WeightFuser &weights) {
  llvm::MapVector<Value, SmallVector<llm::LinearOp>> groups;
  fn.walk([&](llm::LinearOp op) {
    if (op.getNumResults() == 1)
      groups[op.getInput()].push_back(op);
  });
  for (auto &[input, ops] : groups) {
    if (ops.size() < 2)
      continue;
    bool biased = bool(ops.front().getBias());
    if (llvm::any_of(ops, [&](llm::LinearOp o) { return bool(o.getBias()) != biased; }))
      continue;
    SmallVector<FlatSymbolRefAttr> ws, bs;
    SmallVector<Type> types;
    for (llm::LinearOp o : ops) {
      ws.push_back(o.getWeightAttr());
      if (biased) bs.push_back(o.getBiasAttr());
      types.push_back(o.getResult(0).getType());
    }
    FlatSymbolRefAttr w = weights.concat(ws);
    FlatSymbolRefAttr bias = biased ? weights.concat(bs) : FlatSymbolRefAttr();
    if (!w || (biased && !bias))
      continue;
    OpBuilder b(ops.front()); // the first in block order: walk visits in order
    auto fused = b.create<llm::LinearOp>(ops.front().getLoc(), types, w, input, bias);
    for (auto [i, o] : llvm::enumerate(ops)) {
      o.getResult(0).replaceAllUsesWith(fused.getResult(i));
      o.erase();
    }
  }
}

struct FuseFFNPass : public impl::FuseFFNBase<FuseFFNPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    WeightFuser weights(module);
    for (auto fn : module.getOps<func::FuncOp>()) {
      fuseGateUp(fn, weights);
      fuseSiblings(fn, weights);
    }
    weights.eraseUnused();
  }
};

} // namespace
} // namespace kvplan
