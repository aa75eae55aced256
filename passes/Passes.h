// The kvplan passes and the pipeline that runs them in order.
#pragma once

#include "ir/LLMDialect.h"
#include "spec/ModelSpec.h"

#include "mlir/IR/PatternMatch.h"
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

/// The passes `kvplan compile` runs for `target`, in order (their flags);
/// partition-tensor-parallel first when `tensorParallel` > 1.
std::vector<std::string> pipelinePassNames(Target target, int64_t tensorParallel = 1);
/// The options the pipeline gives pass `name` (its flag) for settings `s`:
/// the ranks of partition-tensor-parallel; "" for the others (the rest of
/// the settings ride on the module: llm.settings, llm.speculate, llm.score_rows,
/// llm.decode_copies, llm.prefill_copies).
std::string pipelinePassOptions(llvm::StringRef name, const CompileSettings &s);
/// Adds the registered pass whose flag is `flag` to `pm` (nested on
/// functions where the pass runs on one function at a time); fails when no
/// pass has that flag.
mlir::LogicalResult addRegisteredPass(mlir::OpPassManager &pm, llvm::StringRef flag,
                                      llvm::StringRef options = "");
/// The whole pipeline for `target`: split, KV cache, prune, fusion, the
/// target's own transforms, buffer planning.
void buildKVPlanPipeline(mlir::OpPassManager &pm, Target target, int64_t tensorParallel = 1);
/// Registers every pass, `kvplan-pipeline` among them (the module's target's passes), for
/// kvplan-opt.
void registerKVPlanPassesAndPipeline();

/// Applies `patterns` to `op` until none matches, leaving the regions' shape
/// alone (the fusion passes' driver).
mlir::LogicalResult rewriteGreedily(mlir::Operation *op, mlir::RewritePatternSet &&patterns);

} // namespace kvplan
