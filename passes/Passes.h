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

} // namespace kvplan
