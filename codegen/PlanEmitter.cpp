// Planned IR -> Plan: every llm op becomes the plan op of the same name,
// filled field by field from the op's operands, results and attributes in
// the order plan/PlanOps.h lists them (the ODS order).
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
  if (t.isInteger(4)) return DType::i4;
  if (isa<llm::MXFP4Type>(t)) return DType::mxfp4;
  return where->emitOpError() << "has an element type the plan cannot store: " << t;
}

/// The model-level name of a location: "layers.3.attention" for a NameLoc,
/// its parts joined with " + " for a fused one.
std::string locName(Location loc) {
  if (auto n = dyn_cast<NameLoc>(loc)) return n.getName().str();
  if (auto f = dyn_cast<FusedLoc>(loc)) {
    std::string s;
    for (Location part : f.getLocations()) {
      std::string p = locName(part);
      if (!p.empty()) s += (s.empty() ? "" : " + ") + p;
    }
    return s;
  }
  return "";
}

/// The entry point's values as plan operands, numbered as they are defined.
class ValueTable {
public:
  explicit ValueTable(func::FuncOp fn) : fn(fn) {}

  /// Defines `v` (an argument or a result) at `offset` in the arena.
  FailureOr<Operand> defineArena(Value v, int64_t offset) {
    auto t = cast<RankedTensorType>(v.getType());
    Operation *where = v.getDefiningOp() ? v.getDefiningOp() : fn.getOperation();
    FailureOr<DType> dt = dtypeOf(t.getElementType(), where);
    if (failed(dt)) return failure();
    Operand o;
    o.kind = OperandKind::arena;
    o.value = next++;
    o.offset = offset;
    o.shape.assign(t.getShape().begin(), t.getShape().end());
    o.dtype = *dt;
    operands[v] = o;
    return o;
  }
  void define(Value v, const Operand &o) { operands[v] = o; }
  const Operand *lookup(Value v) const {
    auto it = operands.find(v);
    return it == operands.end() ? nullptr : &it->second;
  }

private:
  func::FuncOp fn;
  int64_t next = 0;
  llvm::DenseMap<Value, Operand> operands;
};

/// Fills one plan op from one llm op: operands and results in order,
/// weights and attributes by their ODS names.
class StepEmitter {
public:
  StepEmitter(Operation *op, ValueTable &values) : op(op), values(values) {
    std::optional<Attribute> sizes = op->getInherentAttr("operandSegmentSizes");
    if (auto s = sizes ? dyn_cast_or_null<DenseI32ArrayAttr>(*sizes) : DenseI32ArrayAttr())
      segments.assign(s.asArrayRef().begin(), s.asArrayRef().end());
  }

  void operand(const char *n, Operand &o, OperandClass) {
    ++segment;
    if (next >= op->getNumOperands()) return fail(std::string("has no operand '") + n + "'");
    const Operand *known = values.lookup(op->getOperand(next++));
    if (!known) return fail(std::string("reads a value the plan does not know as '") + n + "'");
    o = *known;
  }
  /// An optional operand is the op's next one where its segment (an op with
  /// several optional operands) has one, or else where the op has one more.
  void optionalOperand(const char *n, std::optional<Operand> &o, OperandClass c) {
    const bool present = segment < segments.size() ? segments[segment] != 0
                                                   : next < op->getNumOperands();
    if (present) return operand(n, o.emplace(), c);
    ++segment;
  }
  void result(const char *n, Operand &o, OperandClass c) {
    if (nextResult >= op->getNumResults()) return fail(std::string("has no result '") + n + "'");
    defineResult(op->getResult(nextResult++), o, c);
  }
  void results(const char *n, std::vector<Operand> &v, OperandClass c) {
    while (nextResult < op->getNumResults()) {
      v.emplace_back();
      defineResult(op->getResult(nextResult++), v.back(), c);
    }
  }
  void weight(const char *n, std::string &w) {
    auto ref = op->getAttrOfType<FlatSymbolRefAttr>(n);
    if (!ref) return fail(std::string("has no weight '") + n + "'");
    w = ref.getValue().str();
  }
  void optionalWeight(const char *n, std::optional<std::string> &w) {
    if (auto ref = op->getAttrOfType<FlatSymbolRefAttr>(n)) w = ref.getValue().str();
  }
  void attr(const char *n, int64_t &v) {
    if (auto a = op->getAttrOfType<IntegerAttr>(n)) v = a.getInt();
    else fail(std::string("has no integer attribute '") + n + "'");
  }
  void attr(const char *n, double &v) {
    if (auto a = op->getAttrOfType<FloatAttr>(n)) v = a.getValueAsDouble();
    else fail(std::string("has no float attribute '") + n + "'");
  }
  void attr(const char *n, AttentionMask &m) {
    auto a = op->getAttrOfType<llm::AttentionMaskAttr>(n);
    if (!a) return fail(std::string("has no mask attribute '") + n + "'");
    switch (a.getValue()) {
    case llm::AttentionMask::causal: m = AttentionMask::causal; break;
    case llm::AttentionMask::self: m = AttentionMask::self; break;
    case llm::AttentionMask::cache: m = AttentionMask::cache; break;
    }
  }
  void attr(const char *n, bool &v) { v = bool(op->getAttrOfType<UnitAttr>(n)); }
  void optionalAttr(const char *n, std::optional<double> &v) {
    if (auto a = op->getAttrOfType<FloatAttr>(n)) v = a.getValueAsDouble();
  }
  void optionalAttr(const char *n, std::optional<int64_t> &v) {
    if (auto a = op->getAttrOfType<IntegerAttr>(n)) v = a.getInt();
  }
  void optionalAttr(const char *n, std::optional<RopeScaling> &s) {
    if (auto a = op->getAttrOfType<llm::RopeScalingAttr>(n))
      s = RopeScaling{a.getFactor().convertToDouble(), a.getLowFreqFactor().convertToDouble(),
                      a.getHighFreqFactor().convertToDouble(),
                      a.getOriginalMaxPositionEmbeddings()};
  }
  void optionalAttr(const char *n, std::vector<double> &v) {
    if (auto a = op->getAttrOfType<DenseF64ArrayAttr>(n))
      v.assign(a.asArrayRef().begin(), a.asArrayRef().end());
  }

  /// Every operand and result used, and nothing failed.
  LogicalResult finish() {
    if (failed(status)) return failure();
    if (next != op->getNumOperands() || nextResult != op->getNumResults())
      return op->emitOpError() << "has operands or results the plan's op does not list";
    return success();
  }

private:
  void fail(const std::string &what) {
    if (succeeded(status)) op->emitOpError() << what << " (plan/PlanOps.h disagrees with the op)";
    status = failure();
  }
  /// Whether the op's cache operand is the sliding layers' pool.
  bool readsWindowCache() const {
    for (Value v : op->getOperands())
      if (isa<llm::KVCacheType>(v.getType()))
        if (const Operand *known = values.lookup(v)) return known->window;
    return false;
  }
  void defineResult(Value r, Operand &o, OperandClass c) {
    if (c == OperandClass::cache) {
      o.kind = OperandKind::kvCache;
      o.window = readsWindowCache();
    } else if (c == OperandClass::view) {
      auto layer = op->getAttrOfType<IntegerAttr>("layer");
      if (!layer) return fail("makes a KV-cache view without a layer");
      o.kind = OperandKind::kvView;
      o.layer = layer.getInt();
      o.values = views++ == 1;
      o.window = readsWindowCache();
    } else {
      auto offsets = op->getAttrOfType<DenseI64ArrayAttr>(attr::kOffsets);
      if (!offsets || tensorIndex >= size_t(offsets.size())) {
        op->emitOpError() << "has no arena offset for result #" << cast<OpResult>(r).getResultNumber()
                          << "; run --plan-buffers";
        status = failure();
        return;
      }
      FailureOr<Operand> a = values.defineArena(r, offsets[tensorIndex++]);
      if (failed(a)) {
        status = failure();
        return;
      }
      o = *a;
      return;
    }
    values.define(r, o);
  }

  Operation *op;
  ValueTable &values;
  unsigned next = 0, nextResult = 0, views = 0;
  size_t tensorIndex = 0;
  std::vector<int32_t> segments; // operands per ODS operand, where the op sizes them
  size_t segment = 0;            // the ODS operand next
  LogicalResult status = success();
};

class EntryEmitter {
public:
  explicit EntryEmitter(func::FuncOp fn) : fn(fn), values(fn) {}

  FailureOr<EntryPoint> emit() {
    EntryPoint ep;
    ep.name = fn.getSymName().str(); // "decode.8": a smaller copy of @decode
    auto arena = fn->getAttrOfType<IntegerAttr>(attr::kArenaSize);
    if (!arena) return fn.emitOpError() << "has no buffer plan; run --plan-buffers";
    ep.arenaBytes = arena.getInt();
    BlockArgument tokens = findArg(fn, "tokens");
    if (!tokens) return fn.emitOpError() << "has no tokens argument";
    ep.rows = cast<RankedTensorType>(tokens.getType()).getDimSize(0);
    if (failed(emitArgs(ep))) return failure();
    for (Operation &op : fn.getBody().front()) {
      if (auto ret = dyn_cast<func::ReturnOp>(op)) {
        for (Value v : ret.getOperands()) ep.results.push_back(*values.lookup(v));
        continue;
      }
      FailureOr<Step> step = emitStep(op);
      if (failed(step)) return failure();
      ep.steps.push_back(std::move(*step));
    }
    return ep;
  }

private:
  LogicalResult emitArgs(EntryPoint &ep) {
    for (BlockArgument a : fn.getArguments()) {
      auto role = fn.getArgAttrOfType<StringAttr>(a.getArgNumber(), attr::kArg);
      if (!role)
        return fn.emitOpError() << "argument #" << a.getArgNumber() << " has no llm.arg role";
      Operand o;
      if (isa<llm::KVCacheType>(a.getType())) {
        o.kind = OperandKind::kvCache;
        o.window = role.getValue() == "window_kv_cache";
        values.define(a, o);
      } else {
        auto off = fn.getArgAttrOfType<IntegerAttr>(a.getArgNumber(), attr::kOffset);
        if (!off)
          return fn.emitOpError() << "argument '" << role.getValue()
                                  << "' has no arena offset; run --plan-buffers";
        FailureOr<Operand> arena = values.defineArena(a, off.getInt());
        if (failed(arena)) return failure();
        o = *arena;
      }
      o.name = role.str();
      ep.args.push_back(o);
    }
    return success();
  }

  /// The op's llm.prefetch (--prefetch-weights) as the step's prefetch; the
  /// dialect's verifier has checked its form (LLMDialect.cpp, verifyPrefetch).
  static void emitPrefetch(Operation &op, Step &s) {
    if (auto list = op.getAttrOfType<ArrayAttr>(attr::kPrefetch))
      for (Attribute item : list) {
        auto d = cast<DictionaryAttr>(item);
        ArrayRef<int64_t> rows = d.getAs<DenseI64ArrayAttr>("rows").asArrayRef();
        s.prefetch.push_back({d.getAs<FlatSymbolRefAttr>("weight").getValue().str(), rows[0],
                              rows[1]});
      }
  }

  FailureOr<Step> emitStep(Operation &op) {
    if (!isa_and_nonnull<llm::LLMDialect>(op.getDialect()))
      return op.emitOpError() << "is not an llm op; the plan holds llm ops only";
    std::optional<OpKind> kind = opKindNamed(op.getName().stripDialect().str());
    if (!kind) return op.emitOpError() << "has no plan op (plan/PlanOps.h)";
    StepEmitter e(&op, values);
    Step s{makeOp(*kind), locName(op.getLoc())};
    std::visit([&](auto &planOp) { planOp.fields(e); }, s.op);
    if (failed(e.finish())) return failure();
    emitPrefetch(op, s);
    return s;
  }

  func::FuncOp fn;
  ValueTable values;
};

/// The layout of the cache argument `cacheRole` with its page table
/// `tableRole`; an absent optional one is a layout of no layers.
FailureOr<KVCacheLayout> cacheLayout(func::FuncOp fn, StringRef cacheRole = "kv_cache",
                                     StringRef tableRole = "page_table", bool optional = false) {
  BlockArgument cache = findArg(fn, cacheRole);
  BlockArgument table = findArg(fn, tableRole);
  if (optional && !cache && !table) return KVCacheLayout{};
  if (!cache || !table)
    return fn.emitOpError() << "has no " << cacheRole << " and " << tableRole
                            << "; run --insert-kv-cache";
  auto ct = cast<llm::KVCacheType>(cache.getType());
  KVCacheLayout kv;
  kv.layers = ct.getLayers();
  kv.pages = ct.getPages();
  kv.pageSize = ct.getPageSize();
  kv.kvHeads = ct.getKvHeads();
  kv.headDim = ct.getHeadDim();
  kv.pagesPerSequence = cast<RankedTensorType>(table.getType()).getDimSize(1);
  FailureOr<DType> dt = dtypeOf(ct.getElementType(), fn);
  if (failed(dt)) return failure();
  kv.dtype = *dt;
  return kv;
}

LogicalResult emitWeights(ModuleOp module, Plan &plan) {
  for (auto w : module.getOps<llm::WeightOp>()) {
    WeightEntry e;
    e.name = w.getSymName().str();
    RankedTensorType t = w.getTensorType();
    e.shape.assign(t.getShape().begin(), t.getShape().end());
    FailureOr<DType> dt = dtypeOf(t.getElementType(), w);
    if (failed(dt)) return failure();
    e.dtype = *dt;
    if (auto parts = w.getParts())
      for (Attribute p : *parts) e.parts.push_back(cast<StringAttr>(p).str());
    if (llm::ShardAttr s = w.getShardAttr()) {
      e.shardDim = s.getDim();
      e.shardPieces = s.getPieces();
      e.shardWhy = s.getWhy().str();
    }
    plan.weights.push_back(std::move(e));
  }
  plan.assignWeightOffsets();
  return success();
}

} // namespace

FailureOr<Plan> emitPlan(ModuleOp module, const ModelConfig &cfg) {
  Plan plan;
  plan.formatVersion = int(kArtifactFormatVersion);
  plan.kvplanVersion = KVPLAN_VERSION;
  plan.gitHash = KVPLAN_GIT_HASH;
  plan.model = cfg.model;
  plan.settings = cfg.compile;
  if (failed(emitWeights(module, plan))) return failure();

  bool haveCache = false;
  for (auto fn : module.getOps<func::FuncOp>()) {
    if (!fn->hasAttr(attr::kEntry)) continue;
    FailureOr<EntryPoint> ep = EntryEmitter(fn).emit();
    if (failed(ep)) return failure();
    FailureOr<KVCacheLayout> kv = cacheLayout(fn);
    FailureOr<KVCacheLayout> window =
        cacheLayout(fn, "window_kv_cache", "window_page_table", /*optional=*/true);
    if (failed(kv) || failed(window)) return failure();
    if (haveCache && (kv->bytes() != plan.kvCache.bytes() ||
                      window->bytes() != plan.windowCache.bytes()))
      return fn.emitOpError() << "has a KV cache unlike the other entry point's";
    plan.kvCache = *kv;
    plan.windowCache = *window;
    haveCache = true;
    plan.entryPoints[ep->name] = std::move(*ep);
  }
  for (const char *name : {"prefill", "decode"})
    if (!plan.entryPoints.count(name))
      return module.emitError() << "has no @" << name << " entry point";
  if (cfg.compile.speculate > 0 && !plan.entryPoints.count("verify"))
    return module.emitError() << "has no @verify entry point for --speculate "
                              << cfg.compile.speculate;
  if (cfg.compile.scoreRows > 0 && !plan.entryPoints.count("score"))
    return module.emitError() << "has no @score entry point for --score-rows "
                              << cfg.compile.scoreRows;
  return plan;
}

} // namespace kvplan
