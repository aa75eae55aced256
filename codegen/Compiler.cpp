// The compile driver.
#include "codegen/Compiler.h"

#include "codegen/CudaCodegen.h"
#include "codegen/PlanEmitter.h"
#include "frontend/IRBuilder.h"
#include "passes/Passes.h"
#include "plan/Artifact.h"
#include "plan/WeightPacking.h"
#include "support/Format.h"
#include "support/SystemResources.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/OperationSupport.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/Support/raw_ostream.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <limits>

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

namespace {

CompileOutput runPipeline(const ModelConfig &cfg, const StageCallback &onStage, bool verbose) {
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

/// The plan's whole bill, the cuda target's device workspace included
/// (which addCudaCode records later).
MemoryBill wholeBill(Plan plan) {
  if (plan.settings.target == Target::cuda)
    plan.deviceWorkspaceBytes = generateCuda(plan, {}).program.workspaceBytes;
  return plan.memoryBill();
}

/// "1.95 GiB (2,093,465,600 bytes)".
std::string budgetBytes(int64_t v) {
  return formatBytes(uint64_t(v)) + " (" + withCommas(v) + " bytes)";
}

/// The settings whose pools fill `cfg`'s memory budget, and their bill
/// (`deviceWorkspace` of it: the cuda target's, which addCudaCode adds).
struct Budgeted {
  ModelConfig cfg;
  int64_t bill = 0, deviceWorkspace = 0;
};

/// Pages the pools may have at most: a page table's int32 entries, and the
/// KV cache's bytes below 10^18 (as validate() bounds a given pool).
int64_t mostPages(const ModelConfig &cfg) {
  const ModelSpec &m = cfg.model;
  const CompileSettings &s = cfg.compile;
  const long double page =
      2.0L * m.numLayers * m.numKvHeads * m.headDim * s.pageSize * dtypeBytes(s.kvDtype);
  return int64_t(std::min<long double>(std::numeric_limits<int32_t>::max(), 1e18L / page));
}

/// Where the settings give memory_budget: compiles the plan with the
/// fewest pages in each pool the settings leave free (one sequence of
/// max_seq_len), takes its bill, and gives those pools every page the
/// rest of the budget pays for. Both free (where sliding and full layers
/// mix), they grow alike: as many more sequences of max_seq_len in each,
/// then a page of either while one fits. Throws InputError, naming the
/// field as the user wrote it, where even the fewest pages do not fit.
Budgeted fitMemoryBudget(const ModelConfig &cfg, bool verbose) {
  const ModelSpec &m = cfg.model;
  const CompileSettings &s = cfg.compile;
  const bool mixed = mixedWindow(m, s) > 0;
  const bool freeMain = !cfg.given.count("compile.kv_pages");
  const bool freeWin = mixed && !cfg.given.count("compile.window_kv_pages");
  const int64_t peakMain = sequencePeakPages(m, s), peakWin = windowPeakPages(m, s);
  Budgeted b{cfg, 0, 0};
  b.cfg.compile.memoryBudget = 0; // the fewest pages may not fit: that is said below
  if (freeMain) b.cfg.compile.kvPages = peakMain;
  if (freeWin) b.cfg.compile.windowKvPages = peakWin;
  const Plan fewest = runPipeline(b.cfg, {}, false).plan;
  const MemoryBill parts = wholeBill(fewest);
  const int64_t least = parts.totalBytes, budget = s.memoryBudget;
  if (s.target == Target::cuda) b.deviceWorkspace = parts.workspaceBytes;
  const std::string field = "compile.memory_budget";
  const std::string at = cfg.where(field) + "field '" + cfg.nameOf(field) + "': ";
  if (least > budget) {
    const std::string bill =
        budgetBytes(least) + ": weights " + formatBytes(parts.weightsBlobBytes) +
        ", KV cache " + formatBytes(parts.kvCacheBytes) + ", arena " +
        formatBytes(parts.arenaAllocBytes) + ", workspace " + formatBytes(parts.workspaceBytes) +
        (parts.reserveBytes > 0 ? ", reserve " + formatBytes(parts.reserveBytes) : std::string());
    if (!freeMain && !freeWin)
      throw InputError(at + budgetBytes(budget) + " is less than the plan's bill of " + bill +
                       "; give a larger budget, or fewer kv_pages" +
                       (mixed ? std::string(" or window_kv_pages") : std::string()));
    throw InputError(at + budgetBytes(budget) +
                     " is less than the plan's bill with the fewest KV-cache pages (one "
                     "sequence of max_seq_len " + withCommas(s.maxSeqLen) + " tokens), " + bill +
                     "; give at least that, or a smaller max_seq_len, max_batch, "
                     "prefill_chunk or weight dtype");
  }
  const int64_t mainPage = fewest.kvCache.bytes() / fewest.kvCache.pages;
  const int64_t winPage = mixed ? fewest.windowCache.bytes() / fewest.windowCache.pages : 0;
  int64_t left = budget - least, addMain = 0, addWin = 0;
  if (freeMain && freeWin) {
    const int64_t sequence = peakMain * mainPage + peakWin * winPage;
    const int64_t whole = left / sequence;
    addMain = whole * peakMain;
    addWin = whole * peakWin;
    left -= whole * sequence;
    // The part of a sequence left, shared alike (rounded down).
    const int64_t partMain = left * peakMain / sequence, partWin = left * peakWin / sequence;
    addMain += partMain;
    addWin += partWin;
    left -= partMain * mainPage + partWin * winPage;
  }
  if (freeMain) {
    addMain += left / mainPage;
    left %= mainPage;
  }
  if (freeWin) addWin += left / winPage;
  const int64_t most = mostPages(cfg);
  CompileSettings &out = b.cfg.compile;
  out.memoryBudget = budget;
  out.kvPages = std::min(out.kvPages + addMain, std::max(most, out.kvPages));
  if (mixed)
    out.windowKvPages = std::min(out.windowKvPages + addWin, std::max(most, out.windowKvPages));
  b.bill = least + (out.kvPages - fewest.kvCache.pages) * mainPage +
           (mixed ? (out.windowKvPages - fewest.windowCache.pages) * winPage : 0);
  if (verbose)
    std::fprintf(stderr, "  memory budget %s: bill %s with %lld KV pages%s\n",
                 formatBytes(uint64_t(budget)).c_str(), formatBytes(uint64_t(b.bill)).c_str(),
                 (long long)out.kvPages,
                 mixed ? (" and " + std::to_string(out.windowKvPages) + " sliding-layer pages")
                             .c_str()
                       : "");
  return b;
}

} // namespace

CompileOutput compileModel(const ModelConfig &cfg, const StageCallback &onStage, bool verbose) {
  if (cfg.compile.memoryBudget == 0) return runPipeline(cfg, onStage, verbose);
  const Budgeted b = fitMemoryBudget(cfg, verbose);
  CompileOutput out = runPipeline(b.cfg, onStage, verbose);
  // The bill grows by a page's bytes a page and by nothing else (the cuda
  // target's workspace, as with the fewest pages, is checked again with its
  // kernels by addCudaCode).
  const int64_t bill = out.plan.memoryBill().totalBytes + b.deviceWorkspace;
  if (bill != b.bill || bill > cfg.compile.memoryBudget)
    throw InternalError("compiling " + cfg.model.name + " within memory_budget " +
                        withCommas(cfg.compile.memoryBudget) + " made a bill of " +
                        withCommas(bill) + " bytes where " + withCommas(b.bill) +
                        " were expected");
  return out;
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
  if (const int64_t budget = out.plan.settings.memoryBudget;
      budget > 0 && out.plan.memoryBill().totalBytes > budget)
    throw InternalError("compiling " + out.plan.model.name + "'s CUDA kernels made a bill of " +
                        withCommas(out.plan.memoryBill().totalBytes) +
                        " bytes, more than memory_budget " + withCommas(budget));
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
