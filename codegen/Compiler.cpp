// The compile driver.
#include "codegen/Compiler.h"

#include "codegen/CudaCodegen.h"
#include "codegen/PlanEmitter.h"
#include "frontend/IRBuilder.h"
#include "passes/Passes.h"
#include "plan/Artifact.h"
#include "plan/WeightPacking.h"
#include "support/SystemResources.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/OperationSupport.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/Support/raw_ostream.h"

#include <chrono>
#include <cstdio>
#include <filesystem>

using namespace mlir;

namespace kvplan {

std::string printModule(ModuleOp module) {
  std::string text;
  llvm::raw_string_ostream os(text);
  OpPrintingFlags flags;
  flags.enableDebugInfo(false);
  module->print(os, flags);
  os.flush();
  if (text.empty() || text.back() != '\n')
    text += '\n';
  return text;
}

CompileOutput compileModel(const ModelConfig &cfg, const StageCallback &onStage, bool verbose) {
  MLIRContext ctx;
  ctx.printOpOnDiagnostic(false);
  std::string diagnostics;
  ScopedDiagnosticHandler handler(&ctx, [&](Diagnostic &d) {
    llvm::raw_string_ostream os(diagnostics);
    os << d.getLocation() << ": " << d << "\n";
    for (Diagnostic &note : d.getNotes())
      os << note.getLocation() << ": note: " << note << "\n";
    return success();
  });
  auto fail = [&](const std::string &stage) -> InternalError {
    return InternalError("compiling " + cfg.model.name + " failed in " + stage + ":\n" +
                         diagnostics);
  };
  using clock = std::chrono::steady_clock;
  auto report = [&](const std::string &stage, clock::time_point t0) {
    if (verbose)
      std::fprintf(stderr, "  %-22s %8.2f ms\n", stage.c_str(),
                   std::chrono::duration<double, std::milli>(clock::now() - t0).count());
  };

  auto t0 = clock::now();
  OwningOpRef<ModuleOp> module = buildModelIR(ctx, cfg);
  if (failed(verify(*module)))
    throw fail("frontend");
  report("frontend", t0);
  if (onStage)
    onStage(0, "frontend", *module);

  const std::vector<std::string> &passes = pipelinePassNames(cfg.compile.target, cfg.compile.tensorParallel);
  for (size_t i = 0; i < passes.size(); ++i) {
    t0 = clock::now();
    PassManager pm(&ctx, ModuleOp::getOperationName(), OpPassManager::Nesting::Implicit);
    const std::string options = pipelinePassOptions(passes[i], cfg.compile);
    if (failed(addRegisteredPass(pm, passes[i], options)) || failed(pm.run(*module)))
      throw fail(passes[i]);
    report(passes[i], t0);
    if (onStage)
      onStage(int(i + 1), passes[i], *module);
  }

  t0 = clock::now();
  FailureOr<Plan> plan = emitPlan(*module, cfg);
  if (failed(plan))
    throw fail("codegen");
  try {
    validatePlan(*plan); // what every executor checks at load
  } catch (const InputError &e) {
    throw InternalError("compiling " + cfg.model.name + " made a plan the runtime refuses: " +
                        e.what());
  }
  report("codegen", t0);
  return {std::move(*plan), printModule(*module), std::nullopt};
}

void addCudaCode(CompileOutput &out, const std::vector<std::string> &archs, bool verbose) {
  using clock = std::chrono::steady_clock;
  auto t0 = clock::now();
  CudaModule mod = generateCuda(out.plan, archs);
  if (verbose)
    std::fprintf(stderr, "  %-22s %8.2f ms\n", "cuda-codegen",
                 std::chrono::duration<double, std::milli>(clock::now() - t0).count());
  // --arch none: the source and its launch table alone, with no nvcc.
  const std::string nvcc = archs.empty() ? std::string() : findNvcc();
  CudaCode code;
  for (const std::string &arch : archs) {
    t0 = clock::now();
    try {
      code.cubins[arch] = compileCubin(nvcc, mod.source, arch);
    } catch (const NvccError &e) {
      throw InternalError(std::string("compiling ") + out.plan.model.name + "'s CUDA kernels: " +
                          e.what());
    }
    if (verbose)
      std::fprintf(stderr, "  %-22s %8.2f ms\n", ("nvcc " + arch).c_str(),
                   std::chrono::duration<double, std::milli>(clock::now() - t0).count());
  }
  out.plan.cudaArchs = archs;
  out.plan.deviceWorkspaceBytes = mod.program.workspaceBytes;
  code.source = std::move(mod.source);
  code.program = std::move(mod.program);
  out.cuda = std::move(code);
}

void checkArtifactResources(const std::string &path, uint64_t fileBytes, uint64_t memoryBytes,
                            const std::string &weights, bool verbose) {
  if (verbose) {
    std::optional<ResourceFigure> mem = availableMemory();
    std::optional<ResourceFigure> disk = freeDisk(std::filesystem::path(path).parent_path());
    std::fprintf(stderr, "  packing needs %s of memory (%s available), writes %s (%s free)\n",
                 formatBytes(memoryBytes).c_str(), mem ? formatBytes(mem->bytes).c_str() : "?",
                 formatBytes(fileBytes).c_str(), disk ? formatBytes(disk->bytes).c_str() : "?");
  }
  if (memoryBytes)
    requireMemory(memoryBytes, "pack the weights for " + path,
                  weights + "; free memory, or compile with --weights none (the artifact "
                            "then has no weights)");
  requireDisk(fileBytes, path,
              "free space there, write elsewhere with -o, or make a smaller artifact with a "
              "smaller --dtype (bf16, int8, int4) or --weights none");
}

void writeArtifact(const std::string &path, const CompileOutput &out, const WeightSource *weights,
                   const Tokenizer *tokenizer, bool verbose,
                   const ChatTemplateText *chatTemplate) {
  ArtifactWriter w;
  w.addSection("plan", toJson(out.plan).dump(1));
  w.addSection("ir", out.finalIR);
  if (out.plan.settings.target == Target::cuda) {
    if (!out.cuda)
      throw InternalError("a cuda-target plan reached the artifact writer without its CUDA code");
    w.addSection(kCudaProgramSection, toJson(out.cuda->program).dump(1));
    w.addSection(kCudaSourceSection, out.cuda->source);
    for (const auto &[arch, cubin] : out.cuda->cubins) w.addSection(cudaCubinSection(arch), cubin);
  }
  if (tokenizer)
    w.addSection(kTokenizerSection, tokenizer->kind() + "\n" + tokenizer->serialize());
  if (chatTemplate) w.addSection(kChatTemplateSection, chatTemplateSection(*chatTemplate));
  if (weights)
    addWeightsSection(w, out.plan, *weights);
  checkArtifactResources(path, w.fileSize(),
                         weights ? packingMemoryBytes(out.plan, *weights) : 0,
                         weights ? weights->describe() + " keep " +
                                       formatBytes(weights->heldBytes()) +
                                       " of it while packing"
                                 : "",
                         verbose);
  w.write(path);
}

} // namespace kvplan
