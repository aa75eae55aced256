// The llm dialect: C++ declarations generated from LLMDialect.td and
// LLMOps.td, plus what ODS cannot say.
#pragma once

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

namespace kvplan::llm {

/// Marks ops whose output row i depends only on row i of each operand.
template <typename ConcreteType>
class RowWise : public mlir::OpTrait::TraitBase<ConcreteType, RowWise> {};

/// The KV cache, as a memory resource: writes and reads of it are ordered.
struct KVCacheResource : public mlir::SideEffects::Resource::Base<KVCacheResource> {
  llvm::StringRef getName() final { return "<KVCache>"; }
};

} // namespace kvplan::llm

#include "ir/LLMDialect.h.inc"
#include "ir/LLMEnums.h.inc"

#define GET_TYPEDEF_CLASSES
#include "ir/LLMTypes.h.inc"

#define GET_OP_CLASSES
#include "ir/LLMOps.h.inc"
