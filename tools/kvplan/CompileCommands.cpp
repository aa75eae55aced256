// kvplan compile and kvplan dump: the commands that need the compiler.
#include "tools/kvplan/Commands.h"

#include "codegen/Compiler.h"
#include "codegen/CudaCodegen.h"
#include "frontend/ConfigParser.h"
#include "passes/Passes.h"
#include "tools/kvplan/Runnable.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
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
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out)
    throw InputError(p.string() + ": cannot write");
}

} // namespace

void addCompileCommands(CLI::App &app, const GlobalOptions &global, Action &action) {
  // compile
  {
    auto *cmd = app.add_subcommand("compile", "Compile a model description to an artifact");
    auto opts = std::make_shared<ModelOptions>();
    auto out = std::make_shared<std::string>();
    opts->add(cmd,
              "A model: a .toml spec, a Hugging Face config.json (or its folder), a llama2.c "
              ".bin or a .gguf",
              true, true);
    cmd->add_option("-o,--output", *out, "The artifact to write (.kvp)")->required();
    auto arch = std::make_shared<std::string>();
    cmd->add_option("--arch", *arch,
                    std::string("CUDA architectures to build machine code for (--target cuda; "
                                "default ") + kDefaultCudaArchs + ")");
    cmd->callback([&action, &global, opts, out, arch] {
      action = [&global, opts, out, arch] {
        ModelSources src = resolveModelSources(*opts);
        const ModelConfig &cfg = src.config;
        const bool cuda = cfg.compile.target == Target::cuda;
        if (!arch->empty() && !cuda)
          throw InputError("--arch applies to the cuda target; add --target cuda (the model's "
                           "target is " + std::string(targetName(cfg.compile.target)) + ")");
        std::vector<std::string> archs;
        if (cuda) {
          archs = parseCudaArchs(arch->empty() ? kDefaultCudaArchs : *arch);
          findNvcc(); // before any work: a missing toolkit is the user's to fix
        }
        if (global.verbose)
          std::cerr << "compiling " << cfg.sourcePath << " (weights: "
                    << (src.weights.empty() ? "none" : src.weights) << ", tokenizer: "
                    << (src.tokenizer.empty() ? "none" : src.tokenizer) << ")\n";
        // Open the weights and the tokenizer first: their errors are the
        // user's and should not wait for the compiler.
        std::unique_ptr<WeightSource> weights;
        if (!src.weights.empty()) weights = openWeights(src.weights, cfg.model);
        std::unique_ptr<Tokenizer> tokenizer = loadSourceTokenizer(src);
        CompileOutput result = compileModel(cfg, {}, global.verbose);
        if (cuda) addCudaCode(result, archs, global.verbose);
        writeArtifact(*out, result, weights.get(), tokenizer.get());
        MemoryBill bill = result.plan.memoryBill();
        std::cerr << "wrote " << *out << ": " << cfg.model.name << ", "
                  << withCommas(bill.params) << " parameters ("
                  << (src.weights.empty() ? "no weights" : "weights " + src.weights) << "), memory bill "
                  << humanBytes(bill.totalBytes) << " (weights " << humanBytes(bill.weightsBytes)
                  << ", KV cache " << humanBytes(bill.kvCacheBytes) << ", arena "
                  << humanBytes(bill.arenaAllocBytes)
                  << (cuda ? ", CUDA workspace " + humanBytes(bill.workspaceBytes) : std::string())
                  << ")" << (cuda ? " for " + joinArchs(archs) : std::string()) << "\n";
        return 0;
      };
    });
  }

  // dump
  {
    auto *cmd = app.add_subcommand(
        "dump", "Print the IR after a pass (default: the last), or after every pass");
    auto opts = std::make_shared<ModelOptions>();
    auto after = std::make_shared<std::string>();
    auto all = std::make_shared<bool>(false);
    auto dir = std::make_shared<std::string>();
    opts->add(cmd, "A model: a .toml spec, a config.json (or its folder), a .bin or a .gguf",
              true, false);
    std::vector<std::string> stages = {"frontend"};
    for (Target t : {Target::cpu, Target::cuda})
      for (const std::string &p : pipelinePassNames(t))
        if (std::find(stages.begin(), stages.end(), p) == stages.end()) stages.push_back(p);
    auto *afterOpt = cmd->add_option("--after", *after, "The stage to print: frontend or a pass")
                         ->check(CLI::IsMember(stages));
    cmd->add_flag("--all", *all, "Every stage (to stdout, separated by // -----)")
        ->excludes(afterOpt);
    cmd->add_option("-o,--output-dir", *dir,
                    "Write one numbered file per stage (NN-stage.mlir) into this folder");
    cmd->callback([&action, &global, opts, after, all, dir] {
      action = [&global, opts, after, all, dir] {
        ModelConfig cfg = loadConfig(*opts);
        const std::vector<std::string> &passes = pipelinePassNames(cfg.compile.target);
        const std::string last = passes.back();
        if (!after->empty() && *after != "frontend" &&
            std::find(passes.begin(), passes.end(), *after) == passes.end())
          throw InputError("--after " + *after + ": the " + targetName(cfg.compile.target) +
                           " target's pipeline has no such pass (it runs for --target cuda)");
        // Which stages to show: one (--after, or the last by default) or all
        // (--all, or -o without --after).
        bool every = *all || (!dir->empty() && after->empty());
        std::string only = after->empty() ? last : *after;
        if (!dir->empty()) {
          std::error_code ec;
          fs::create_directories(*dir, ec);
          if (ec)
            throw InputError(*dir + ": cannot create the folder: " + ec.message());
        }
        bool first = true;
        compileModel(
            cfg,
            [&](int index, const std::string &stage, mlir::ModuleOp module) {
              if (!every && stage != only)
                return;
              std::string text = printModule(module);
              if (!dir->empty()) {
                char name[64];
                std::snprintf(name, sizeof name, "%02d-%s.mlir", index, stage.c_str());
                writeFile(fs::path(*dir) / name, "// kvplan dump: " + cfg.model.name +
                                                     " after " + stage + "\n" + text);
                return;
              }
              if (!first)
                std::cout << "// -----\n";
              first = false;
              std::cout << "// kvplan dump: " << cfg.model.name << " after " << stage << "\n"
                        << text;
            },
            global.verbose);
        if (!dir->empty() && global.verbose)
          std::cerr << "wrote the stages to " << *dir << "\n";
        return 0;
      };
    });
  }
}

} // namespace kvplan::cli
