// Speculative decoding flags for run and bench.
#include "tools/kvplan/Speculation.h"

#include "support/Error.h"

#include <filesystem>

namespace kvplan::cli {

void SpeculateFlags::add(CLI::App *cmd) {
  cmd->add_option("--speculate", mode,
                  "Speculative decoding: prompt-lookup, or a draft model (an artifact or a model "
                  "description with the same tokenizer) proposing tokens the model verifies");
  cmd->add_option("--speculate-k", k,
                  "Draft tokens per verify step (default: the artifact's --speculate K; 4 for a "
                  "model compiled in memory)");
}

void SpeculateFlags::prepare(ModelOptions &target) const {
  if (!on()) return;
  if (k < 0 || k > CompileSettings::kMaxSpeculate)
    throw InputError("--speculate-k must be 1 to " +
                     std::to_string(CompileSettings::kMaxSpeculate) + ", got " +
                     std::to_string(k));
  if (!isArtifactFile(target.model) && target.speculate == 0) target.speculate = k ? k : 4;
}

namespace {

/// The draft's tokenizer must give every id the target's text.
void checkSameTokenizer(const Runnable &target, const Runnable &draft, const std::string &flag) {
  if (!target.tokenizer || !draft.tokenizer) return; // ids alone: the vocabulary check decides
  const Tokenizer &a = *target.tokenizer, &b = *draft.tokenizer;
  bool same = a.vocabSize() == b.vocabSize();
  for (int32_t id = 0; same && id < a.vocabSize(); ++id) same = a.decode({id}) == b.decode({id});
  if (!same)
    throw InputError(flag + ": the draft model's tokenizer differs from the target's (" +
                     std::to_string(b.vocabSize()) + " and " + std::to_string(a.vocabSize()) +
                     " tokens" + (a.vocabSize() == b.vocabSize() ? ", other pieces" : "") +
                     "); a draft must share the target's tokenizer");
}

} // namespace

Speculation makeSpeculation(const SpeculateFlags &f, const Runnable &target, const Engine &engine,
                            const SamplingOptions &sampling, const ExecOptions &exec,
                            bool verbose) {
  Speculation s;
  const int64_t compiled = engine.verifyRows() - 1;
  if (compiled <= 0)
    throw InputError(target.source + ": --speculate needs a verify entry point; compile the "
                                     "model with --speculate K (1 to " +
                     std::to_string(CompileSettings::kMaxSpeculate) + ")");
  if (f.k > compiled)
    throw InputError("--speculate-k " + std::to_string(f.k) + " is more than the " +
                     std::to_string(compiled) + " draft tokens " + target.source +
                     " was compiled to verify (--speculate " + std::to_string(compiled) + ")");
  s.k = f.k ? f.k : compiled;
  if (f.mode == "prompt-lookup") {
    s.proposer = std::make_unique<PromptLookup>();
    return s;
  }
  if (!std::filesystem::exists(f.mode))
    throw InputError("--speculate " + f.mode +
                     ": expected prompt-lookup or a draft model's file, and there is no such file");
  if (target.comm)
    throw InputError("--speculate " + f.mode + ": a draft model beside a tensor-parallel " +
                     "target (" + std::to_string(target.plan.ranks()) +
                     " ranks) is not supported yet; use --speculate prompt-lookup");
  ModelOptions draft;
  draft.model = f.mode;
  s.draft = std::make_unique<Runnable>(loadRunnable(draft, verbose));
  checkSameTokenizer(target, *s.draft, "--speculate " + f.mode);
  s.draftEngine = std::make_unique<Engine>(makeExecutor(*s.draft, exec), EngineOptions{false});
  s.proposer = std::make_unique<DraftModel>(*s.draftEngine, engine.vocabSize(), sampling,
                                            "--speculate " + f.mode);
  return s;
}

} // namespace kvplan::cli
