// Planned IR -> the runtime's Plan (and the artifact that stores it).
#pragma once

#include "spec/ModelSpec.h"
#include "plan/Plan.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Support/LogicalResult.h"

namespace kvplan {

/// Reads the entry points, weights and KV-cache layout out of a module the
/// whole pipeline has run on. Emits a diagnostic and fails when something
/// is not planned.
mlir::FailureOr<Plan> emitPlan(mlir::ModuleOp module, const ModelConfig &cfg);

} // namespace kvplan
