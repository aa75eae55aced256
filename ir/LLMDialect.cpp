// The llm dialect: registration and type verifiers.
#include "ir/LLMDialect.h"
#include "support/Align.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace kvplan;
using namespace kvplan::llm;

#include "ir/LLMDialect.cpp.inc"
#include "ir/LLMEnums.cpp.inc"

#define GET_TYPEDEF_CLASSES
#include "ir/LLMTypes.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "ir/LLMAttrs.cpp.inc"

void LLMDialect::initialize() {
  addTypes<
#define GET_TYPEDEF_LIST
#include "ir/LLMTypes.cpp.inc"
      >();
  addAttributes<
#define GET_ATTRDEF_LIST
#include "ir/LLMAttrs.cpp.inc"
      >();
  addOperations<
#define GET_OP_LIST
#include "ir/LLMOps.cpp.inc"
      >();
}

static bool isLLMFloat(Type t) { return t.isF32() || t.isBF16() || t.isF16(); }

LogicalResult KVCacheType::verify(function_ref<InFlightDiagnostic()> emitError,
                                  int64_t layers, int64_t pages, int64_t pageSize,
                                  int64_t kvHeads, int64_t headDim, Type elementType) {
  if (layers <= 0 || pages <= 0 || pageSize <= 0 || kvHeads <= 0 || headDim <= 0)
    return emitError() << "kv_cache sizes must be positive";
  if (!isLLMFloat(elementType))
    return emitError() << "kv_cache element type must be f32, bf16 or f16, got " << elementType;
  return success();
}

int64_t KVCacheType::getSizeInBytes() const {
  return 2 * getLayers() * getPages() * getPageSize() * getKvHeads() * getHeadDim() *
         (getElementType().getIntOrFloatBitWidth() / 8);
}

LogicalResult KVViewType::verify(function_ref<InFlightDiagnostic()> emitError,
                                 int64_t kvHeads, int64_t headDim, Type elementType) {
  if (kvHeads <= 0 || headDim <= 0)
    return emitError() << "kv_view sizes must be positive";
  if (!isLLMFloat(elementType))
    return emitError() << "kv_view element type must be f32, bf16 or f16, got " << elementType;
  return success();
}

//===----------------------------------------------------------------------===//
// Attributes
//===----------------------------------------------------------------------===//

static Type floatTypeNamed(MLIRContext *ctx, StringRef name) {
  if (name == "f32") return Float32Type::get(ctx);
  if (name == "bf16") return BFloat16Type::get(ctx);
  if (name == "f16") return Float16Type::get(ctx);
  return {};
}

namespace {

/// The `<key = value, ...>` body of an llm attribute: every key in `keys`
/// exactly once, in any order. Strings, integers and floats are kept apart.
struct Fields {
  llvm::StringMap<std::string> strings;
  llvm::StringMap<int64_t> integers;
  llvm::StringMap<double> reals;

  ParseResult parse(AsmParser &p, StringRef what, ArrayRef<StringRef> stringKeys,
                    ArrayRef<StringRef> intKeys, ArrayRef<StringRef> realKeys) {
    auto known = [&](StringRef k, ArrayRef<StringRef> in) { return llvm::is_contained(in, k); };
    if (p.parseLess()) return failure();
    llvm::StringSet<> seen;
    auto one = [&]() -> ParseResult {
      std::string key;
      SMLoc at = p.getCurrentLocation();
      if (p.parseKeywordOrString(&key) || p.parseEqual()) return failure();
      if (!seen.insert(key).second) return p.emitError(at) << what << ": " << key << " given twice";
      if (known(key, stringKeys)) return p.parseString(&strings[key]);
      if (known(key, intKeys)) return p.parseInteger(integers[key]);
      if (known(key, realKeys)) return p.parseFloat(reals[key]);
      return p.emitError(at) << what << ": unknown key '" << key << "'";
    };
    if (p.parseCommaSeparatedList(one) || p.parseGreater()) return failure();
    for (ArrayRef<StringRef> keys : {stringKeys, realKeys, intKeys})
      for (StringRef k : keys)
        if (!seen.contains(k)) return p.emitError(p.getCurrentLocation()) << what << " needs " << k;
    return success();
  }
};

} // namespace

Attribute SettingsAttr::parse(AsmParser &p, Type) {
  Fields f;
  if (f.parse(p, "settings", {"target", "weight_dtype", "kv_dtype"},
              {"max_batch", "max_seq_len", "prefill_chunk", "page_size", "kv_pages"}, {}))
    return {};
  return getChecked([&] { return p.emitError(p.getNameLoc()); }, p.getContext(),
                    f.strings["target"], f.strings["weight_dtype"], f.strings["kv_dtype"],
                    f.integers["max_batch"], f.integers["max_seq_len"], f.integers["prefill_chunk"],
                    f.integers["page_size"], f.integers["kv_pages"]);
}

void SettingsAttr::print(AsmPrinter &p) const {
  p << "<target = \"" << getTarget() << "\", weight_dtype = \"" << getWeightDtype()
    << "\", kv_dtype = \"" << getKvDtype() << "\", max_batch = " << getMaxBatch()
    << ", max_seq_len = " << getMaxSeqLen() << ", prefill_chunk = " << getPrefillChunk()
    << ", page_size = " << getPageSize() << ", kv_pages = " << getKvPages() << ">";
}

Attribute RopeScalingAttr::parse(AsmParser &p, Type) {
  Fields f;
  if (f.parse(p, "rope_scaling", {}, {"original_max_position_embeddings"},
              {"factor", "low_freq_factor", "high_freq_factor"}))
    return {};
  return getChecked([&] { return p.emitError(p.getNameLoc()); }, p.getContext(),
                    APFloat(f.reals["factor"]), APFloat(f.reals["low_freq_factor"]),
                    APFloat(f.reals["high_freq_factor"]),
                    f.integers["original_max_position_embeddings"]);
}

void RopeScalingAttr::print(AsmPrinter &p) const {
  p << "<factor = ";
  p.printFloat(getFactor());
  p << ", low_freq_factor = ";
  p.printFloat(getLowFreqFactor());
  p << ", high_freq_factor = ";
  p.printFloat(getHighFreqFactor());
  p << ", original_max_position_embeddings = " << getOriginalMaxPositionEmbeddings() << ">";
}

LogicalResult SettingsAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                                   StringRef target, StringRef weightDtype, StringRef kvDtype,
                                   int64_t maxBatch, int64_t maxSeqLen, int64_t prefillChunk,
                                   int64_t pageSize, int64_t kvPages) {
  if (target != "cpu" && target != "cuda")
    return emitError() << "settings: target '" << target << "' is not cpu or cuda";
  if (weightDtype != "f32" && weightDtype != "bf16" && weightDtype != "f16" &&
      weightDtype != "int8" && weightDtype != "int4" && weightDtype != "mxfp4")
    return emitError() << "settings: weight_dtype '" << weightDtype
                       << "' is not f32, bf16, f16, int8, int4 or mxfp4";
  if (kvDtype != "f32" && kvDtype != "bf16" && kvDtype != "f16")
    return emitError() << "settings: kv_dtype '" << kvDtype << "' is not f32, bf16 or f16";
  if (maxBatch <= 0 || maxSeqLen <= 0 || prefillChunk <= 0 || pageSize <= 0 || kvPages <= 0)
    return emitError() << "settings: max_batch, max_seq_len, prefill_chunk, page_size and "
                          "kv_pages must be positive";
  if (maxSeqLen % pageSize != 0)
    return emitError() << "settings: page_size " << pageSize << " does not divide max_seq_len "
                       << maxSeqLen;
  // One sequence at full context holds max_seq_len / page_size pages, or
  // under a sliding window (llm.attention's) fewer: insert-kv-cache checks
  // the window's count. Every sequence holds a prefill chunk's pages.
  const int64_t chunkPages =
      std::min(maxSeqLen / pageSize, ceilDiv(pageSize - 1 + prefillChunk, pageSize));
  if (kvPages < chunkPages)
    return emitError() << "settings: kv_pages " << kvPages << " cannot hold one prefill chunk of "
                       << prefillChunk << " tokens (" << chunkPages << " pages of " << pageSize
                       << " tokens)";
  return success();
}

Type SettingsAttr::getKvElementType() const { return floatTypeNamed(getContext(), getKvDtype()); }

LogicalResult RopeScalingAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                                      APFloat factorValue, APFloat lowValue, APFloat highValue,
                                      int64_t originalMaxPositions) {
  const double factor = factorValue.convertToDouble(), lowFreqFactor = lowValue.convertToDouble(),
               highFreqFactor = highValue.convertToDouble();
  if (!(factor > 0) || !(lowFreqFactor > 0) || !(highFreqFactor > 0) || originalMaxPositions <= 0)
    return emitError() << "rope_scaling: every parameter must be positive";
  if (!(highFreqFactor > lowFreqFactor))
    return emitError() << "rope_scaling: high_freq_factor must exceed low_freq_factor";
  return success();
}

LogicalResult ShardAttr::verify(function_ref<InFlightDiagnostic()> emitError, int64_t dim,
                                int64_t pieces, StringRef) {
  if (dim != 0 && dim != 1)
    return emitError() << "shard: dim must be 0 (output features) or 1 (input features), got "
                       << dim;
  if (pieces < 1) return emitError() << "shard: pieces must be positive, got " << pieces;
  return success();
}

/// llm.prefetch (--prefetch-weights): on an llm op, a list of
/// {weight = @w, rows = array<i64: first, end>}, rows of an llm.weight.
static LogicalResult verifyPrefetch(Operation *op, Attribute v) {
  auto list = dyn_cast<ArrayAttr>(v);
  if (!list || op->getDialect() != op->getContext()->getLoadedDialect<LLMDialect>())
    return op->emitOpError() << "attribute '" << attr::kPrefetch
                             << "' must be a list on an llm op";
  for (Attribute item : list) {
    auto d = dyn_cast<DictionaryAttr>(item);
    auto w = d ? d.getAs<FlatSymbolRefAttr>("weight") : FlatSymbolRefAttr();
    auto rows = d ? d.getAs<DenseI64ArrayAttr>("rows") : DenseI64ArrayAttr();
    if (!w || !rows || d.size() != 2 || rows.size() != 2 || rows[0] < 0 || rows[1] <= rows[0])
      return op->emitOpError() << "attribute '" << attr::kPrefetch << "' holds " << item
                               << ", not {weight = @w, rows = array<i64: first, end>} with "
                                  "0 <= first < end";
    auto weight = SymbolTable::lookupNearestSymbolFrom<WeightOp>(op, w);
    if (!weight)
      return op->emitOpError() << "attribute '" << attr::kPrefetch << "' names " << w
                               << ", which is no llm.weight";
    RankedTensorType t = weight.getTensorType();
    const int64_t cols = t.getRank() ? std::max<int64_t>(t.getShape().back(), 1) : 1,
                  have = t.getRank() ? t.getNumElements() / cols : 0;
    if (rows[1] > have)
      return op->emitOpError() << "attribute '" << attr::kPrefetch << "' asks for rows "
                               << rows[0] << " to " << rows[1] << " of " << w << ", which has "
                               << have;
  }
  return success();
}

/// The discardable llm.* attributes, where they may appear and what they hold.
LogicalResult LLMDialect::verifyOperationAttribute(Operation *op, NamedAttribute a) {
  StringRef name = a.getName().getValue();
  Attribute v = a.getValue();
  auto expect = [&](bool ok, const char *what) -> LogicalResult {
    if (ok) return success();
    return op->emitOpError() << "attribute '" << name << "' must be " << what;
  };
  if (name == attr::kSettings)
    return expect(isa<ModuleOp>(op) && isa<SettingsAttr>(v), "an #llm.settings on the module");
  if (name == attr::kModel)
    return expect(isa<ModuleOp>(op) && isa<StringAttr>(v), "a string on the module");
  if (name == attr::kTensorParallel) {
    auto i = dyn_cast<IntegerAttr>(v);
    return expect(isa<ModuleOp>(op) && i && i.getInt() >= 1 && llvm::isPowerOf2_64(i.getInt()),
                  "a power of two on the module (the tensor-parallel ranks)");
  }
  if (name == attr::kEntry) {
    auto s = dyn_cast<StringAttr>(v);
    return expect(isa<func::FuncOp>(op) && s &&
                      (s.getValue() == "prefill" || s.getValue() == "decode" ||
                       s.getValue() == "verify" || s.getValue() == "score"),
                  "\"prefill\", \"decode\", \"verify\" or \"score\" on a function");
  }
  if (name == attr::kScoreRows) {
    auto i = dyn_cast<IntegerAttr>(v);
    return expect(isa<ModuleOp>(op) && i && i.getInt() >= 0,
                  "a non-negative integer on the module (rows of @score)");
  }
  if (name == attr::kWindowKvPages) {
    auto i = dyn_cast<IntegerAttr>(v);
    return expect(isa<ModuleOp>(op) && i && i.getInt() >= 1,
                  "a positive integer on the module (pages of the sliding layers' pool)");
  }
  if (name == attr::kSpeculate) {
    auto i = dyn_cast<IntegerAttr>(v);
    return expect(isa<ModuleOp>(op) && i && i.getInt() >= 0,
                  "a non-negative integer on the module (draft tokens per @verify)");
  }
  if (name == attr::kDecodeCopies || name == attr::kPrefillCopies) {
    auto rows = dyn_cast<DenseI64ArrayAttr>(v);
    bool ascending = rows && isa<ModuleOp>(op);
    for (int64_t i = 0; ascending && i < rows.size(); ++i)
      ascending = rows[i] > (i ? rows[i - 1] : 0);
    return expect(ascending, "an array<i64> of positive row counts in ascending order, each "
                             "once, on the module");
  }
  if (name == attr::kL2PrefetchMib) {
    auto i = dyn_cast<IntegerAttr>(v);
    return expect(isa<ModuleOp>(op) && i && i.getInt() >= 0,
                  "a non-negative integer on the module (MiB of L2 to ask for ahead)");
  }
  if (name == attr::kPrefetch) return verifyPrefetch(op, v);
  if (name == attr::kArenaSize) {
    auto i = dyn_cast<IntegerAttr>(v);
    return expect(isa<func::FuncOp>(op) && i && i.getInt() >= 0,
                  "a non-negative integer on a function");
  }
  if (name == attr::kOffsets) {
    auto offsets = dyn_cast<DenseI64ArrayAttr>(v);
    if (!offsets || op->getDialect() != op->getContext()->getLoadedDialect<LLMDialect>())
      return expect(false, "an array<i64> on an llm op");
    for (int64_t o : offsets.asArrayRef())
      if (o < 0) return expect(false, "non-negative offsets");
    return success();
  }
  return op->emitOpError() << "has an unknown llm attribute '" << name << "'";
}

LogicalResult LLMDialect::verifyRegionArgAttribute(Operation *op, unsigned, unsigned argIndex,
                                                   NamedAttribute a) {
  StringRef name = a.getName().getValue();
  if (name == attr::kArg) {
    if (!isa<StringAttr>(a.getValue()))
      return op->emitOpError() << "argument #" << argIndex << ": llm.arg must be a string";
    return success();
  }
  if (name == attr::kOffset) {
    auto i = dyn_cast<IntegerAttr>(a.getValue());
    if (!i || i.getInt() < 0)
      return op->emitOpError() << "argument #" << argIndex
                               << ": llm.offset must be a non-negative integer";
    return success();
  }
  return op->emitOpError() << "argument #" << argIndex << " has an unknown llm attribute '"
                           << name << "'";
}

namespace kvplan {

SettingsAttr moduleSettings(ModuleOp module) {
  return module->getAttrOfType<SettingsAttr>(attr::kSettings);
}

int64_t tensorParallelRanks(ModuleOp module) {
  auto a = module->getAttrOfType<IntegerAttr>(attr::kTensorParallel);
  return a ? a.getInt() : 1;
}

BlockArgument findArg(func::FuncOp fn, llvm::StringRef role) {
  for (BlockArgument a : fn.getArguments())
    if (auto r = fn.getArgAttrOfType<StringAttr>(a.getArgNumber(), attr::kArg))
      if (r.getValue() == role)
        return a;
  return {};
}

int64_t tensorBytes(RankedTensorType t) {
  return t.getNumElements() * int64_t((t.getElementTypeBitWidth() + 7) / 8);
}

} // namespace kvplan
