// kvplan compile and kvplan dump: the commands that need the compiler.
#include "tools/kvplan/Commands.h"

#include "codegen/Compiler.h"
#include "frontend/ConfigParser.h"
#include "passes/Passes.h"

#include <filesystem>
#include <fstream>
#include <iostream>

namespace fs = std::filesystem;

namespace kvplan::cli {

namespace {

/// Options every command that reads a model shares: the settings to override.
struct ModelOptions {
  std::string model;
  std::string target, dtype;
  int64_t maxBatch = 0, maxSeq = 0, prefillChunk = 0, pageSize = 0;

  void add(CLI::App *cmd) {
    cmd->add_option("model", model,
                    "A model description: a .toml spec, a Hugging Face config.json, or a "
                    "directory holding one")
        ->required();
    cmd->add_option("--target", target, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
    cmd->add_option("--dtype", dtype, "Weight type: f32, bf16 or f16")
        ->check(CLI::IsMember({"f32", "bf16", "f16"}));
    cmd->add_option("--max-batch", maxBatch, "Sequences per decode step")
        ->check(CLI::PositiveNumber);
    cmd->add_option("--max-seq", maxSeq, "Context length (tokens per sequence)")
        ->check(CLI::PositiveNumber);
    cmd->add_option("--prefill-chunk", prefillChunk, "Prompt tokens per prefill call")
        ->check(CLI::PositiveNumber);
    cmd->add_option("--page-size", pageSize, "KV-cache tokens per page")
        ->check(CLI::PositiveNumber);
  }

  ModelConfig load() const {
    SettingOverrides o;
    if (!target.empty()) o.target = parseTarget(target);
    if (!dtype.empty()) o.weightDtype = parseDType(dtype);
    if (maxBatch) o.maxBatch = maxBatch;
    if (maxSeq) o.maxSeqLen = maxSeq;
    if (prefillChunk) o.prefillChunk = prefillChunk;
    if (pageSize) o.pageSize = pageSize;
    return loadModelConfig(model, o);
  }
};

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
    auto weights = std::make_shared<std::string>("none");
    opts->add(cmd);
    cmd->add_option("-o,--output", *out, "The artifact to write (.kvp)")->required();
    cmd->add_option("--weights", *weights,
                    "Where the weights come from; 'none' writes the plan without weights")
        ->capture_default_str();
    cmd->callback([&action, &global, opts, out, weights] {
      action = [&global, opts, out, weights] {
        if (*weights != "none")
          throw InputError("--weights '" + *weights +
                           "': this version of kvplan writes plans without weights; use "
                           "--weights none");
        ModelConfig cfg = opts->load();
        if (global.verbose)
          std::cerr << "compiling " << cfg.sourcePath << "\n";
        CompileOutput result = compileModel(cfg, {}, global.verbose);
        writeArtifact(*out, result);
        MemoryBill bill = result.plan.memoryBill();
        std::cerr << "wrote " << *out << ": " << cfg.model.name << ", "
                  << withCommas(bill.params) << " parameters, memory bill "
                  << humanBytes(bill.totalBytes) << " (weights " << humanBytes(bill.weightsBytes)
                  << ", KV cache " << humanBytes(bill.kvCacheBytes) << ", arena "
                  << humanBytes(bill.arenaAllocBytes) << ")\n";
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
    opts->add(cmd);
    std::vector<std::string> stages = {"frontend"};
    for (const std::string &p : pipelinePassNames()) stages.push_back(p);
    auto *afterOpt = cmd->add_option("--after", *after, "The stage to print: frontend or a pass")
                         ->check(CLI::IsMember(stages));
    cmd->add_flag("--all", *all, "Every stage (to stdout, separated by // -----)")
        ->excludes(afterOpt);
    cmd->add_option("-o,--output-dir", *dir,
                    "Write one numbered file per stage (NN-stage.mlir) into this folder");
    cmd->callback([&action, &global, opts, after, all, dir] {
      action = [&global, opts, after, all, dir] {
        ModelConfig cfg = opts->load();
        const std::string last = pipelinePassNames().back();
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
