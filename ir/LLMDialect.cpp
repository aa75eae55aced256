// The llm dialect: registration and type verifiers.
#include "ir/LLMDialect.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace kvplan::llm;

#include "ir/LLMDialect.cpp.inc"
#include "ir/LLMEnums.cpp.inc"

#define GET_TYPEDEF_CLASSES
#include "ir/LLMTypes.cpp.inc"

void LLMDialect::initialize() {
  addTypes<
#define GET_TYPEDEF_LIST
#include "ir/LLMTypes.cpp.inc"
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

namespace kvplan {

std::optional<int64_t> moduleSetting(ModuleOp module, llvm::StringRef key) {
  auto settings = module->getAttrOfType<DictionaryAttr>(attr::kSettings);
  if (!settings)
    return std::nullopt;
  if (auto v = dyn_cast_or_null<IntegerAttr>(settings.get(key)))
    return v.getInt();
  return std::nullopt;
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
