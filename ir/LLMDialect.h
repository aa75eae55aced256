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

#include <optional>

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

#define GET_ATTRDEF_CLASSES
#include "ir/LLMAttrs.h.inc"

#define GET_OP_CLASSES
#include "ir/LLMOps.h.inc"

namespace kvplan {

/// Discardable attributes the frontend, the passes and codegen share.
namespace attr {
constexpr const char *kSettings = "llm.settings"; // module: compile settings
constexpr const char *kModel = "llm.model";       // module: model name
constexpr const char *kTensorParallel = "llm.tensor_parallel"; // module: ranks (absent: 1)
constexpr const char *kEntry = "llm.entry"; // func: "prefill" / "decode" / "verify" / "score"
constexpr const char *kSpeculate = "llm.speculate"; // module: draft tokens per verify (i64)
constexpr const char *kScoreRows = "llm.score_rows"; // module: rows of @score (i64)
// module: pages of the sliding-window layers' own pool where windowed and
// full layers mix (i64, absent: one pool)
constexpr const char *kWindowKvPages = "llm.window_kv_pages";
// module: rows of the smaller copies of @decode / @prefill (array<i64>, absent: none)
constexpr const char *kDecodeCopies = "llm.decode_copies";
constexpr const char *kPrefillCopies = "llm.prefill_copies";
// module: MiB of L2 the cuda target's kernels may ask for ahead (i64, absent: 0)
constexpr const char *kL2PrefetchMib = "llm.l2_prefetch_mib";
// op: weight rows its kernel asks L2 for ([{weight = @w, rows = array<i64: begin, end>}])
constexpr const char *kPrefetch = "llm.prefetch";
constexpr const char *kArg = "llm.arg";           // func arg: its role
constexpr const char *kOffsets = "llm.offsets";   // op: arena offset per result
constexpr const char *kOffset = "llm.offset";     // func arg: arena offset
constexpr const char *kArenaSize = "llm.arena_size"; // func: arena bytes
} // namespace attr

/// The module's compile settings (llm.settings), or null when it has none.
llm::SettingsAttr moduleSettings(mlir::ModuleOp module);
/// The module's tensor-parallel ranks (llm.tensor_parallel), 1 when unset.
int64_t tensorParallelRanks(mlir::ModuleOp module);
/// The function argument whose llm.arg is `role`, or null.
mlir::BlockArgument findArg(mlir::func::FuncOp fn, llvm::StringRef role);
/// Bytes of a tensor type (element width x elements).
int64_t tensorBytes(mlir::RankedTensorType t);

} // namespace kvplan
