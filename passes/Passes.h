// The kvplan passes and the pipeline that runs them in order.
#pragma once

#include "ir/LLMDialect.h"

#include "mlir/Pass/Pass.h"
#include "mlir/Pass/PassManager.h"

#include <optional>
#include <string>
#include <vector>

namespace kvplan {

#define GEN_PASS_DECL
#include "passes/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "passes/Passes.h.inc"

/// The passes `kvplan compile` runs, in order (their command-line flags).
const std::vector<std::string> &pipelinePassNames();
/// Adds the pass named by its flag to `pm` (nested on functions where the
/// pass runs on one function at a time).
mlir::LogicalResult addPassByName(mlir::OpPassManager &pm, const std::string &flag);
/// The whole pipeline: split, KV cache, prune, fusion, buffer planning.
void buildKVPlanPipeline(mlir::OpPassManager &pm);
/// Registers every pass and the `kvplan-pipeline` pipeline (for kvplan-opt).
void registerKVPlanPassesAndPipeline();

/// Attribute names shared by the passes, the IR builder and codegen.
namespace attr {
constexpr const char *kSettings = "llm.settings"; // module: compile settings
constexpr const char *kModel = "llm.model";       // module: model name
constexpr const char *kEntry = "llm.entry";       // func: "prefill" / "decode"
constexpr const char *kArg = "llm.arg";           // func arg: its role
constexpr const char *kOffsets = "llm.offsets";   // op: arena offset per result
constexpr const char *kOffset = "llm.offset";     // func arg: arena offset
constexpr const char *kArenaSize = "llm.arena_size"; // func: arena bytes
} // namespace attr

/// Reads an integer compile setting from the module's llm.settings.
std::optional<int64_t> moduleSetting(mlir::ModuleOp module, llvm::StringRef key);
/// The function argument whose llm.arg is `role`, or null.
mlir::BlockArgument findArg(mlir::func::FuncOp fn, llvm::StringRef role);
/// Bytes of a tensor type (element width x elements).
int64_t tensorBytes(mlir::RankedTensorType t);

} // namespace kvplan
