// Builds the llm-dialect module for a model: the weights and @forward, the
// whole-sequence model as its authors define it.
#pragma once

#include "spec/ModelSpec.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/OwningOpRef.h"

namespace kvplan {

/// Loads the dialects the compiler uses into `ctx`.
void loadDialects(mlir::MLIRContext &ctx);

/// The module for a validated config: `llm.weight` symbols in weightTable()
/// order and `func.func @forward(tokens, positions) -> logits` over
/// max_seq_len rows, with the compile settings in `llm.settings`.
mlir::OwningOpRef<mlir::ModuleOp> buildModelIR(mlir::MLIRContext &ctx, const ModelConfig &cfg);

} // namespace kvplan
