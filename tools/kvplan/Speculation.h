// run's and bench's speculative decoding flags: --speculate prompt-lookup or
// a draft artifact, --speculate-k, and the proposer they make.
#pragma once

#include "tools/kvplan/Runnable.h"

#include "runtime/Engine.h"
#include "runtime/Speculate.h"

#include <memory>
#include <string>

namespace kvplan::cli {

struct SpeculateFlags {
  std::string mode;   // "", "prompt-lookup" or a draft model (artifact or description)
  int64_t k = 0;      // draft tokens per verify step (0: the artifact's, or 4 compiled in memory)

  bool on() const { return !mode.empty(); }
  /// A draft model runs beside the target (not prompt lookup).
  bool draftModel() const { return on() && mode != "prompt-lookup"; }
  void add(CLI::App *cmd);
  /// Before the target is loaded: a model compiled in memory gets a
  /// @verify entry point of k (default 4) draft tokens.
  void prepare(ModelOptions &target) const;
};

/// The proposer and what it owns (a draft model's runnable and engine).
struct Speculation {
  std::unique_ptr<Runnable> draft;
  std::unique_ptr<Engine> draftEngine;
  std::unique_ptr<Proposer> proposer;
  int64_t k = 0;
};

/// Checks the target can verify (compiled with --speculate) and makes the
/// proposer; a draft must share the target's vocabulary and tokenizer.
/// Throws InputError naming the flag or file.
Speculation makeSpeculation(const SpeculateFlags &f, const Runnable &target, const Engine &engine,
                            const SamplingOptions &sampling, const ExecOptions &exec,
                            bool verbose);

} // namespace kvplan::cli
