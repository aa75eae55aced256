// Planned IR -> Plan: every op becomes a step over arena offsets.
#include "codegen/PlanEmitter.h"

#include "ir/LLMDialect.h"
#include "plan/Artifact.h"

#include "kvplan/Version.h"

#include "llvm/ADT/DenseMap.h"

using namespace mlir;

namespace kvplan {
namespace {

FailureOr<DType> dtypeOf(Type t, Operation *where) {
  if (t.isF32()) return DType::f32;
  if (t.isBF16()) return DType::bf16;
  if (t.isF16()) return DType::f16;
  if (t.isInteger(32)) return DType::i32;
  if (t.isInteger(8)) return DType::i8;
  return where->emitOpError() << "has an element type the plan cannot store: " << t;
}

/// An inherent attribute as JSON (numbers, strings, the attention mask,
/// dictionaries).
nlohmann::json attrJson(Attribute a) {
  if (auto m = dyn_cast<llm::AttentionMaskAttr>(a))
    return llm::stringifyAttentionMask(m.getValue()).str();
  if (auto i = dyn_cast<IntegerAttr>(a))
    return i.getType().isInteger(1) ? nlohmann::json(bool(i.getInt())) : nlohmann::json(i.getInt());
  if (auto f = dyn_cast<FloatAttr>(a))
    return f.getValueAsDouble();
  if (auto s = dyn_cast<StringAttr>(a))
    return s.str();
  if (auto d = dyn_cast<DictionaryAttr>(a)) {
    nlohmann::json j = nlohmann::json::object();
    for (NamedAttribute n : d)
      j[n.getName().str()] = attrJson(n.getValue());
    return j;
  }
  return nullptr;
}

class EntryEmitter {
public:
  explicit EntryEmitter(func::FuncOp fn) : fn(fn) {}

  FailureOr<EntryPoint> emit() {
    EntryPoint ep;
    ep.name = fn->getAttrOfType<StringAttr>(attr::kEntry).str();
    auto arena = fn->getAttrOfType<IntegerAttr>(attr::kArenaSize);
    if (!arena)
      return fn.emitOpError() << "has no buffer plan; run --plan-buffers";
    ep.arenaBytes = arena.getInt();
    BlockArgument tokens = findArg(fn, "tokens");
    if (!tokens)
      return fn.emitOpError() << "has no tokens argument";
    ep.rows = cast<RankedTensorType>(tokens.getType()).getDimSize(0);

    for (BlockArgument a : fn.getArguments()) {
      Operand o;
      auto role = fn.getArgAttrOfType<StringAttr>(a.getArgNumber(), attr::kArg);
      if (!role)
        return fn.emitOpError() << "argument #" << a.getArgNumber() << " has no llm.arg role";
      if (isa<llm::KVCacheType>(a.getType())) {
        o.kind = OperandKind::kvCache;
      } else {
        auto off = fn.getArgAttrOfType<IntegerAttr>(a.getArgNumber(), attr::kOffset);
        if (!off)
          return fn.emitOpError() << "argument '" << role.getValue()
                                  << "' has no arena offset; run --plan-buffers";
        if (failed(arenaOperand(a, off.getInt(), o)))
          return failure();
      }
      o.name = role.str();
      operands[a] = o;
      ep.args.push_back(o);
    }

    for (Operation &op : fn.getBody().front()) {
      if (auto ret = dyn_cast<func::ReturnOp>(op)) {
        for (Value v : ret.getOperands())
          ep.results.push_back(operands.lookup(v));
        continue;
      }
      FailureOr<Step> step = emitStep(op);
      if (failed(step))
        return failure();
      ep.steps.push_back(std::move(*step));
    }
    return ep;
  }

private:
  LogicalResult arenaOperand(Value v, int64_t offset, Operand &o) {
    auto t = cast<RankedTensorType>(v.getType());
    Operation *where = v.getDefiningOp() ? v.getDefiningOp() : fn.getOperation();
    FailureOr<DType> dt = dtypeOf(t.getElementType(), where);
    if (failed(dt))
      return failure();
    o.kind = OperandKind::arena;
    o.offset = offset;
    o.shape.assign(t.getShape().begin(), t.getShape().end());
    o.dtype = *dt;
    return success();
  }

  FailureOr<Step> emitStep(Operation &op) {
    if (op.getDialect() == nullptr || op.getDialect()->getNamespace() != "llm")
      return op.emitOpError() << "is not an llm op; the plan holds llm ops only";
    Step s;
    s.op = op.getName().stripDialect().str();
    for (NamedAttribute a : op.getAttrs()) {
      std::string name = a.getName().str();
      if (name == attr::kOffsets)
        continue;
      if (auto ref = dyn_cast<FlatSymbolRefAttr>(a.getValue()))
        s.weights[name] = ref.getValue().str();
      else
        s.attrs[name] = attrJson(a.getValue());
    }
    for (Value v : op.getOperands()) {
      auto it = operands.find(v);
      if (it == operands.end())
        return op.emitOpError() << "reads a value the plan does not know";
      s.inputs.push_back(it->second);
    }
    auto offsets = op.getAttrOfType<DenseI64ArrayAttr>(attr::kOffsets);
    size_t tensorIndex = 0;
    for (OpResult r : op.getResults()) {
      Operand o;
      if (isa<llm::KVCacheType>(r.getType())) {
        o.kind = OperandKind::kvCache;
      } else if (isa<llm::KVViewType>(r.getType())) {
        auto read = cast<llm::KVCacheReadOp>(op);
        o.kind = OperandKind::kvView;
        o.layer = read.getLayer();
        o.values = r.getResultNumber() == 1;
      } else {
        if (!offsets || int64_t(tensorIndex) >= int64_t(offsets.size()))
          return op.emitOpError() << "has no arena offset for result #" << r.getResultNumber()
                                  << "; run --plan-buffers";
        if (failed(arenaOperand(r, offsets[tensorIndex++], o)))
          return failure();
      }
      operands[r] = o;
      s.outputs.push_back(o);
    }
    return s;
  }

  func::FuncOp fn;
  llvm::DenseMap<Value, Operand> operands;
};

} // namespace

FailureOr<Plan> emitPlan(ModuleOp module, const ModelConfig &cfg) {
  Plan plan;
  plan.formatVersion = int(kArtifactFormatVersion);
  plan.kvplanVersion = KVPLAN_VERSION;
  plan.gitHash = KVPLAN_GIT_HASH;
  plan.model = cfg.model;
  plan.settings = cfg.compile;

  for (auto w : module.getOps<llm::WeightOp>()) {
    WeightEntry e;
    e.name = w.getSymName().str();
    RankedTensorType t = w.getTensorType();
    e.shape.assign(t.getShape().begin(), t.getShape().end());
    FailureOr<DType> dt = dtypeOf(t.getElementType(), w);
    if (failed(dt))
      return failure();
    e.dtype = *dt;
    if (auto parts = w.getParts())
      for (Attribute p : *parts)
        e.parts.push_back(cast<StringAttr>(p).str());
    plan.weights.push_back(std::move(e));
  }
  plan.assignWeightOffsets();

  bool haveCache = false;
  for (auto fn : module.getOps<func::FuncOp>()) {
    if (!fn->hasAttr(attr::kEntry))
      continue;
    FailureOr<EntryPoint> ep = EntryEmitter(fn).emit();
    if (failed(ep))
      return failure();
    BlockArgument cache = findArg(fn, "kv_cache");
    BlockArgument table = findArg(fn, "page_table");
    if (!cache || !table)
      return fn.emitOpError() << "has no KV cache; run --insert-kv-cache";
    auto ct = cast<llm::KVCacheType>(cache.getType());
    KVCacheLayout kv;
    kv.layers = ct.getLayers();
    kv.pages = ct.getPages();
    kv.pageSize = ct.getPageSize();
    kv.kvHeads = ct.getKvHeads();
    kv.headDim = ct.getHeadDim();
    kv.pagesPerSequence = cast<RankedTensorType>(table.getType()).getDimSize(1);
    FailureOr<DType> dt = dtypeOf(ct.getElementType(), fn);
    if (failed(dt))
      return failure();
    kv.dtype = *dt;
    if (haveCache && kv.bytes() != plan.kvCache.bytes())
      return fn.emitOpError() << "has a KV cache unlike the other entry point's";
    plan.kvCache = kv;
    haveCache = true;
    plan.entryPoints[ep->name] = std::move(*ep);
  }
  for (const char *name : {"prefill", "decode"})
    if (!plan.entryPoints.count(name))
      return module.emitError() << "has no @" << name << " entry point";
  return plan;
}

} // namespace kvplan
