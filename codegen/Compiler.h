// The compile driver: model config -> IR -> pipeline (stage by stage) -> plan.
#pragma once

#include "spec/ModelSpec.h"
#include "plan/CudaProgram.h"
#include "plan/Plan.h"
#include "formats/ChatTemplateFile.h"
#include "formats/Tokenizer.h"
#include "formats/WeightFormats.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"

#include <functional>
#include <optional>
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
  std::optional<CudaCode> cuda; // cuda target, after addCudaCode
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
/// With a memory_budget, the pools the settings leave free get every page
/// the budget pays for after the rest of the bill (the pipeline runs once
/// with the fewest pages to take that bill, then with the pages); the
/// settings of the plan say how many. Throws InputError naming the field
/// where even the fewest do not fit.
CompileOutput compileModel(const ModelConfig &cfg, const StageCallback &onStage = {},
                           bool verbose = false);

/// For a plan compiled for the cuda target: generates the CUDA source and
/// launch table, compiles a cubin per architecture with nvcc, and records
/// the architectures and the device workspace in the plan (and so its
/// bill); with no architectures, the source and launch table alone (no nvcc
/// needed). Throws InputError (no nvcc, an unsupported plan) or InternalError
/// (nvcc rejected the generated source).
void addCudaCode(CompileOutput &out, const std::vector<std::string> &archs, bool verbose = false);

/// Throws InputError, naming both figures and the fix, when writing an
/// artifact of `fileBytes` to `path` would not fit in the free space of its
/// folder, or packing its weights would hold more than the memory
/// available (`memoryBytes`; `weights` says what holds it). `verbose` prints
/// both needs and what the machine has on stderr.
void checkArtifactResources(const std::string &path, uint64_t fileBytes, uint64_t memoryBytes,
                            const std::string &weights, bool verbose = false);

/// Writes an artifact holding the plan, the final IR and, when given, the
/// weights (packed from `weights`), the tokenizer, the model's chat template
/// and, for the cuda target, the CUDA source, launch table and cubins.
/// Checks first that the file fits on the disk and the packing in memory
/// (checkArtifactResources).
void writeArtifact(const std::string &path, const CompileOutput &out,
                   const WeightSource *weights = nullptr, const Tokenizer *tokenizer = nullptr,
                   bool verbose = false, const ChatTemplateText *chatTemplate = nullptr);

} // namespace kvplan
