// The compile driver: model config -> IR -> pipeline (stage by stage) -> plan.
#pragma once

#include "frontend/ModelSpec.h"
#include "runtime/Plan.h"
#include "runtime/Tokenizer.h"
#include "runtime/WeightFormats.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"

#include <functional>
#include <string>

namespace kvplan {

/// The module as MLIR text that re-parses and diffs cleanly between stages
/// (no locations, generic form off).
std::string printModule(mlir::ModuleOp module);

/// Called with each stage's IR: stage 0 is "frontend", then one per pass.
using StageCallback = std::function<void(int index, const std::string &stage, mlir::ModuleOp)>;

struct CompileOutput {
  Plan plan;
  std::string finalIR;
};

/// An error inside the compiler: a pass or the emitter failed on a valid
/// spec. Tools exit 2 with it.
class InternalError : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// Builds the IR for `cfg` and runs every pass in order (verifying after
/// each); `onStage` sees every stage. `verbose` prints each stage's time on
/// stderr. Throws InternalError with the diagnostics when a stage fails.
CompileOutput compileModel(const ModelConfig &cfg, const StageCallback &onStage = {},
                           bool verbose = false);

/// Writes an artifact holding the plan, the final IR and, when given, the
/// weights (packed from `weights`) and the tokenizer.
void writeArtifact(const std::string &path, const CompileOutput &out,
                   const WeightSource *weights = nullptr, const Tokenizer *tokenizer = nullptr);

} // namespace kvplan
