// What `kvplan run` and `kvplan bench` execute: an artifact loaded from disk,
// or (with the compiler) a model description compiled in memory.
#pragma once

#include "spec/ModelSpec.h"
#include "plan/Artifact.h"
#include "plan/CudaProgram.h"
#include "runtime/Executor.h"
#include "formats/ChatTemplateFile.h"
#include "formats/Tokenizer.h"

#include <CLI/CLI.hpp>

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace kvplan::cli {

/// Command-line settings for a model given by its description: they replace
/// the file's, as in `kvplan compile`.
struct ModelOptions {
  std::string model;
  std::string target, dtype, expertDtype, weights, tokenizer;
  int64_t maxBatch = 0, maxSeq = 0, prefillChunk = 0, pageSize = 0, kvPages = 0;
  int64_t windowKvPages = 0;
  std::string memoryBudget; // "24GiB"; "": the file's
  int64_t tensorParallel = 0;
  int64_t speculate = 0; // draft tokens per verify step (compile's --speculate K)
  int64_t scoreRows = 0; // rows of @score (prompt log-probabilities)
  std::string decodeCopies, prefillCopies; // "none" or "1,8,32"; "": the target's
  int64_t l2Prefetch = -1;                 // MiB (--l2-prefetch); -1: the file's
  std::string yarn;                        // "4" or "4:32768" (--yarn); "": none
  /// serve's default for a model compiled in memory: when neither the
  /// model's file nor --max-batch gives max_batch, this many sequences (0:
  /// the file's default, 1), sharing one full context's pages unless the
  /// pool is given, as llama-server's slots share one unified cache.
  int64_t serveBatch = 0;
  /// serve's default for a model compiled in memory whose file gives no
  /// score_rows: a @score entry point of this many rows (at most the
  /// context), so that echo with logprobs is answered; 0: none.
  int64_t serveScoreRows = 0;

  /// `positional`: the MODEL argument's help text. `compileSettings` adds
  /// the settings flags, `sources` --tokenizer (and --weights with
  /// compileSettings).
  void add(CLI::App *cmd, const std::string &positional, bool compileSettings, bool sources);
  /// compile's and dump's --speculate K (run and bench name the proposer
  /// with --speculate and take K as --speculate-k).
  void addSpeculate(CLI::App *cmd);
  /// Adds --weights for artifacts alone (builds without the compiler).
  void addArtifactWeights(CLI::App *cmd);
  /// run's and bench's MODEL: an artifact, or with the compiler a model
  /// description too, whose settings flags are then offered.
  void addRunnable(CLI::App *cmd);
  /// Without the compiler, addArtifactWeights, called after the command's
  /// own flags so that --weights lists last in its help.
  void addRunnableWeights(CLI::App *cmd);
};

struct Runnable {
  Plan plan;
  std::unique_ptr<Artifact> artifact;  // loaded from a file
  std::vector<char> ownedWeights;      // compiled in memory
  const char *weights = nullptr;
  uint64_t weightsBytes = 0;
  std::unique_ptr<Tokenizer> tokenizer; // null: the model has none
  /// The chat template the model came with (the artifact's, or the one
  /// beside --tokenizer); unset when it came with none.
  std::optional<ChatTemplateText> chatTemplate;
  std::string source;                   // for messages
  std::optional<CudaCode> cuda;         // cuda target: launch table and cubins
  Collective *comm = nullptr;           // tensor-parallel ranks (mpirun), or null
  bool serveBatchApplied = false;       // max_batch is ModelOptions::serveBatch's
  int64_t rank() const { return comm ? comm->rank() : 0; }
};

/// How run and bench execute.
struct ExecOptions {
  int threads = 0;     // CPU threads (0: the machine's cores)
  bool graphs = true;  // CUDA graphs (--no-graphs: eager launches)
};

/// run's, serve's and perplexity's --threads and --no-graphs (ExecOptions).
void addExecFlags(CLI::App *cmd, int &threads, bool &noGraphs);

/// Checks --threads before the model is loaded: 0 uses the machine's
/// hardware threads; more than it has are refused (each extra thread only
/// waits for a core), negative ones too. The same for run, serve and bench.
void checkThreadsFlag(int threads);

/// Once the model is loaded: --no-graphs means something to a cuda model
/// only, --threads to a cpu one (or to a draft model beside a cuda target,
/// which may run on the cpu: `draftModel`). Throws InputError naming the
/// flag, the model and the fix.
void checkExecFlags(const Runnable &r, const ExecOptions &o, bool draftModel = false);

/// Thrown by makeExecutor() on ranks 1.. of a tensor-parallel model once
/// the leader (rank 0, which runs the command) has stopped: the command is
/// over for this rank, successfully.
struct RankFinished {};

/// The executor for the runnable's target: the CPU, or a CUDA GPU when
/// this kvplan has the CUDA runtime. Throws InputError ("incompatible
/// because ...", no device, out of memory). A tensor-parallel model's rank
/// 0 gets the leader of the ranks (runtime/RankExecutor.h); the other
/// ranks follow it inside this call, then throw RankFinished.
std::unique_ptr<Executor> makeExecutor(const Runnable &r, const ExecOptions &o);

/// True when the file starts with the artifact magic.
bool isArtifactFile(const std::string &path);
/// Throws when `opts` gives compile settings (--max-batch, --decode-copies,
/// ...) for an artifact, whose settings were fixed when it was compiled.
void refuseSettingsForArtifact(const ModelOptions &opts);

/// Loads an artifact (checking its weights), or compiles a model description
/// in memory when this kvplan has the compiler. `--tokenizer` replaces the
/// artifact's tokenizer. Throws InputError.
Runnable loadRunnable(const ModelOptions &opts, bool verbose);

/// The tokenizer of a model or artifact, or an error saying how to give one.
const Tokenizer &requireTokenizer(const Runnable &r);

#ifdef KVPLAN_HAVE_COMPILER
/// Where a model description's weights and tokenizer come from:
/// `--weights`/`--tokenizer` when given; else the checkpoint itself (.bin,
/// .gguf, safetensors beside config.json); else random:0 weights, with the
/// byte tokenizer when the vocabulary holds bytes.
struct ModelSources {
  ModelConfig config;
  std::string weights;   // "" = none
  std::string tokenizer; // a path, "" = none, "bytes" = the byte tokenizer
  bool serveBatchApplied = false; // ModelOptions::serveBatch set max_batch
};
ModelSources resolveModelSources(const ModelOptions &opts);
/// Loads the tokenizer ModelSources names (null for none).
std::unique_ptr<Tokenizer> loadSourceTokenizer(const ModelSources &s);
#endif

} // namespace kvplan::cli
