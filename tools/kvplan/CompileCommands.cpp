// kvplan compile and kvplan dump: the commands that need the compiler.
#include "tools/kvplan/Commands.h"

#include "codegen/Compiler.h"
#include "codegen/CudaCodegen.h"
#include "frontend/ConfigParser.h"
#include "passes/Passes.h"
#include "plan/WeightPacking.h"
#include "support/AtomicFile.h"
#include "tools/kvplan/Runnable.h"

#include <algorithm>
#include <filesystem>
#include <iostream>

namespace fs = std::filesystem;

namespace kvplan::cli {

namespace {

/// Settings for commands that only compile (dump): as run's, without
/// weights or a tokenizer.
ModelConfig loadConfig(const ModelOptions &o) { return resolveModelSources(o).config; }

std::string joinArchs(const std::vector<std::string> &archs) {
  std::string s;
  for (const std::string &a : archs) s += (s.empty() ? "" : ",") + a;
  return s;
}

void writeFile(const fs::path &p, const std::string &text) {
  AtomicFile out(p.string(), "the dump");
  out.write(text.data(), text.size());
  out.commit();
}

struct CompileOptions {
  ModelOptions model;
  std::string output, arch;
};

/// The architectures to build machine code for (none for cpu). Checks for
/// nvcc here, before any work: a missing toolkit is the user's to fix.
std::vector<std::string> compileArchs(const ModelConfig &cfg, const std::string &arch) {
  const bool cuda = cfg.compile.target == Target::cuda;
  if (!arch.empty() && !cuda)
    throw InputError("--arch applies to the cuda target; add --target cuda (the model's "
                     "target is " + std::string(targetName(cfg.compile.target)) + ")");
  if (!cuda)
    return {};
  std::vector<std::string> archs = parseCudaArchs(arch.empty() ? kDefaultCudaArchs : arch);
  if (!archs.empty()) findNvcc();
  return archs;
}

/// One line on stderr; the bill's parts are listed so that they add up to
/// its total, which is what the runtime allocates at load (one CPU thread).
void printCompileSummary(const std::string &output, const ModelSources &src,
                         const MemoryBill &bill, const std::vector<std::string> &archs) {
  const bool cuda = src.config.compile.target == Target::cuda;
  std::string parts = "weights " + humanBytes(bill.weightsBlobBytes) + ", KV cache " +
                      humanBytes(bill.kvCacheBytes) + ", arena " +
                      humanBytes(bill.arenaAllocBytes);
  if (cuda)
    parts += ", CUDA workspace " + humanBytes(bill.workspaceBytes) + ", reserve " +
             humanBytes(bill.reserveBytes);
  else
    parts += ", workspace " + humanBytes(bill.workspaceBytes);
  const int64_t ranks = src.config.compile.tensorParallel;
  const std::string perRank = ranks > 1 ? " per rank" : "";
  std::cerr << "wrote " << output << ": " << src.config.model.name << ", "
            << (ranks > 1 ? std::to_string(ranks) + " tensor-parallel ranks, " : std::string())
            << withCommas(bill.params) << " parameters" << perRank << " ("
            << (src.weights.empty() ? "no weights" : "weights " + src.weights)
            << "), memory bill " << humanBytes(bill.totalBytes) << perRank << " (" << parts << ")"
            << (!cuda           ? std::string()
                : archs.empty() ? std::string(", CUDA source only (--arch none: no machine code)")
                                : " for " + joinArchs(archs))
            << "\n";
}

int runCompile(const CompileOptions &o, bool verbose) {
  ModelSources src = resolveModelSources(o.model);
  const ModelConfig &cfg = src.config;
  const std::vector<std::string> archs = compileArchs(cfg, o.arch);
  if (verbose)
    std::cerr << "compiling " << cfg.sourcePath << " (weights: "
              << (src.weights.empty() ? "none" : src.weights) << ", tokenizer: "
              << (src.tokenizer.empty() ? "none" : src.tokenizer) << ")\n";
  // Open the weights and the tokenizer first: their errors are the user's
  // and should not wait for the compiler.
  std::unique_ptr<WeightSource> weights;
  if (!src.weights.empty()) weights = openWeights(src.weights, cfg.model);
  std::unique_ptr<Tokenizer> tokenizer = loadSourceTokenizer(src);
  // The chat template the tokenizer's model came with, kept for serve and
  // run --chat.
  std::optional<ChatTemplateText> chat;
  if (tokenizer) chat = findModelChatTemplate(src.tokenizer);
  CompileOutput result = compileModel(cfg, {}, verbose);
  if (cfg.compile.target == Target::cuda) addCudaCode(result, archs, verbose);
  writeArtifact(o.output, result, weights.get(), tokenizer.get(), verbose,
                chat ? &*chat : nullptr);
  printCompileSummary(o.output, src, result.plan.memoryBill(), archs);
  for (const WeightEntry &w : result.plan.weights) {
    if (std::string why = cutGroupsWarning(result.plan, w); !why.empty())
      std::cerr << "warning: " << why << "\n";
    if (!weights) continue;
    if (std::string why = cutSourceBlocksWarning(result.plan, w, *weights); !why.empty())
      std::cerr << "warning: " << why << "\n";
  }
  return 0;
}

struct DumpOptions {
  ModelOptions model;
  std::string after, dir;
  bool all = false;
};

/// What --after accepts: the frontend and every pass of either target's
/// pipeline, in pipeline order.
std::vector<std::string> dumpStages() {
  std::vector<std::string> stages = {"frontend"};
  for (Target t : {Target::cpu, Target::cuda})
    for (const std::string &p : pipelinePassNames(t, 2))
      if (std::find(stages.begin(), stages.end(), p) == stages.end()) stages.push_back(p);
  return stages;
}

int runDump(const DumpOptions &o, bool verbose) {
  ModelConfig cfg = loadConfig(o.model);
  const std::vector<std::string> passes =
      pipelinePassNames(cfg.compile.target, cfg.compile.tensorParallel);
  if (!o.after.empty() && o.after != "frontend" &&
      std::find(passes.begin(), passes.end(), o.after) == passes.end())
    throw InputError("--after " + o.after + ": the " + targetName(cfg.compile.target) +
                     " target's pipeline has no such pass (" +
                     (o.after == "partition-tensor-parallel"
                          ? "it runs with --tensor-parallel 2 or more"
                          : "it runs for --target cuda") +
                     ")");
  // Which stages to show: one (--after, or the last by default) or all
  // (--all, or -o without --after).
  const bool every = o.all || (!o.dir.empty() && o.after.empty());
  const std::string only = o.after.empty() ? passes.back() : o.after;
  if (!o.dir.empty()) {
    std::error_code ec;
    fs::create_directories(o.dir, ec);
    if (ec)
      throw InputError(o.dir + ": cannot create the folder: " + ec.message());
  }
  bool first = true;
  auto show = [&](int index, const std::string &stage, mlir::ModuleOp module) {
    if (!every && stage != only)
      return;
    const std::string text =
        "// kvplan dump: " + cfg.model.name + " after " + stage + "\n" + printModule(module);
    if (!o.dir.empty()) {
      char name[64];
      std::snprintf(name, sizeof name, "%02d-%s.mlir", index, stage.c_str());
      writeFile(fs::path(o.dir) / name, text);
      return;
    }
    if (!first)
      std::cout << "// -----\n";
    first = false;
    std::cout << text;
  };
  compileModel(cfg, show, verbose);
  if (!o.dir.empty() && verbose)
    std::cerr << "wrote the stages to " << o.dir << "\n";
  return 0;
}

} // namespace

void addCompileCommand(CLI::App &app, const GlobalOptions &global, Action &action) {
  auto *cmd = app.add_subcommand("compile", "Compile a model description to an artifact");
  auto o = std::make_shared<CompileOptions>();
  o->model.add(cmd,
               "A model: a .toml spec, a Hugging Face config.json (or its folder), a llama2.c "
               ".bin or a .gguf",
               true, true);
  o->model.addSpeculate(cmd);
  cmd->add_option("-o,--output", o->output, "The artifact to write (.kvp)")->required();
  cmd->add_option("--arch", o->arch,
                  std::string("CUDA architectures to build machine code for (--target cuda; "
                              "default ") + kDefaultCudaArchs +
                      "), or none: the CUDA source alone, for reading, without nvcc (such "
                      "an artifact does not run)");
  cmd->callback([&action, &global, o] {
    action = [&global, o] { return runCompile(*o, global.verbose); };
  });
}

void addDumpCommand(CLI::App &app, const GlobalOptions &global, Action &action) {
  auto *cmd = app.add_subcommand(
      "dump", "Print the IR after a pass (default: the last), or after every pass");
  auto o = std::make_shared<DumpOptions>();
  o->model.add(cmd, "A model: a .toml spec, a config.json (or its folder), a .bin or a .gguf",
               true, false);
  o->model.addSpeculate(cmd);
  auto *afterOpt = cmd->add_option("--after", o->after, "The stage to print: frontend or a pass")
                       ->check(CLI::IsMember(dumpStages()));
  cmd->add_flag("--all", o->all, "Every stage (to stdout, separated by // -----)")
      ->excludes(afterOpt);
  cmd->add_option("-o,--output-dir", o->dir,
                  "Write one numbered file per stage (NN-stage.mlir) into this folder");
  cmd->callback([&action, &global, o] {
    action = [&global, o] { return runDump(*o, global.verbose); };
  });
}

} // namespace kvplan::cli
