// Loading what run and bench execute, and resolving a model's weights and
// tokenizer.
#include "tools/kvplan/Runnable.h"
#include "tools/kvplan/Commands.h"

#include "runtime/RankExecutor.h"
#include "runtime/cpu/CpuExecutor.h"
#include "formats/WeightFormats.h"
#include "plan/WeightPacking.h"
#include "support/Format.h"
#include "support/SystemResources.h"
#ifdef KVPLAN_HAVE_MPI
#include "runtime/mpi/MpiCollective.h"
#endif
#ifdef KVPLAN_HAVE_CUDA
#include "runtime/cuda/CudaExecutor.h"
#endif
#ifdef KVPLAN_HAVE_COMPILER
#include "codegen/Compiler.h"
#include "codegen/CudaCodegen.h"
#include "frontend/ConfigParser.h"
#endif

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>

namespace fs = std::filesystem;

namespace kvplan::cli {

void ModelOptions::add(CLI::App *cmd, const std::string &positional, bool compileSettings,
                       bool sources) {
  cmd->add_option("model", model, positional)->required();
  if (sources)
    cmd->add_option("--tokenizer", tokenizer,
                    "A tokenizer (.model, tokenizer.bin, tokenizer.json, .gguf) replacing the "
                    "model's");
  if (!compileSettings)
    return;
  if (sources)
    cmd->add_option("--weights", weights,
                    "Where the weights come from: a .bin, .gguf or safetensors checkpoint, "
                    "random:SEED, or none (default: the checkpoint MODEL is, else random:0)");
  cmd->add_option("--target", target, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  cmd->add_option("--dtype", dtype, "Weight type: f32, bf16, f16, int8, int4 or mxfp4")
      ->check(CLI::IsMember({"f32", "bf16", "f16", "int8", "int4", "mxfp4"}));
  cmd->add_option("--expert-dtype", expertDtype,
                  "A mixture's experts' weight type, where it differs from --dtype's (default: "
                  "--dtype's, or mxfp4 from a checkpoint whose experts are MXFP4)")
      ->check(CLI::IsMember({"f32", "bf16", "f16", "int8", "int4", "mxfp4"}));
  cmd->add_option("--max-batch", maxBatch, "Sequences per decode step")->check(CLI::PositiveNumber);
  cmd->add_option("--max-seq", maxSeq, "Context length (tokens per sequence)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--prefill-chunk", prefillChunk, "Prompt tokens per prefill call")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--page-size", pageSize, "KV-cache tokens per page")->check(CLI::PositiveNumber);
  cmd->add_option("--kv-pages", kvPages,
                  "KV-cache pages in the pool (default: max batch x max seq / page size)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--window-kv-pages", windowKvPages,
                  "Pages of the sliding-window layers' own pool where they mix with layers "
                  "reading every key, as Gemma's (default: max batch x one sequence's pages "
                  "under the window)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--memory-budget", memoryBudget,
                  "Bytes the whole memory bill may take, like 24GiB (one rank's), or for the cpu "
                  "target a share of the memory available now, like 80%: the KV-cache pools not "
                  "given get every page that fits, and a plan that cannot fit is refused");
  cmd->add_option("--tensor-parallel", tensorParallel,
                  "Ranks to split every layer between (a power of two; run with mpirun -np N)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--decode-copies", decodeCopies,
                  "Rows of smaller copies of decode, like 1,8,32 (the cuda default), or none: a "
                  "step of few sequences runs on the smallest copy holding them, with the "
                  "kernels of its rows");
  cmd->add_option("--prefill-copies", prefillCopies,
                  "Rows of smaller copies of prefill, like 8,32 (the cuda default), or none: a "
                  "chunk of few tokens runs on the smallest copy holding them");
  cmd->add_option("--l2-prefetch", l2Prefetch,
                  "The cuda target: MiB of the GPU's L2 each kernel may fill by asking ahead "
                  "for the weights the next products stream (0, the default: none; "
                  "docs/cuda.md)")
      ->check(CLI::Range(int64_t(0), CompileSettings::kMaxL2PrefetchMib));
  cmd->add_option("--score-rows", scoreRows,
                  "Compile a @score entry point of N rows with every row's logits, for the "
                  "prompt's log-probabilities (serve's echo with logprobs; 1 to " +
                      std::to_string(CompileSettings::kMaxScoreRows) + ")")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--yarn", yarn,
                  "YaRN RoPE scaling for a context FACTOR times the model's, as FACTOR or "
                  "FACTOR:ORIGINAL (the pretraining context; default max_position_embeddings), "
                  "like 4:32768 for Qwen3's 131,072 tokens; for a model whose RoPE is unscaled");
}

void ModelOptions::addSpeculate(CLI::App *cmd) {
  cmd->add_option("--speculate", speculate,
                  "Compile a @verify entry point checking K draft tokens at once (1 to " +
                      std::to_string(CompileSettings::kMaxSpeculate) +
                      "; speculative decoding, docs/speculative.md)");
}

void ModelOptions::addArtifactWeights(CLI::App *cmd) {
  cmd->add_option("--weights", weights,
                  "For an artifact compiled with --weights none: random:SEED or a checkpoint "
                  "(.bin, .gguf, safetensors) to pack in memory");
}

#ifdef KVPLAN_HAVE_COMPILER
void ModelOptions::addRunnable(CLI::App *cmd) {
  add(cmd,
      "An artifact (.kvp) or a model (TOML, config.json, .bin, .gguf) to compile in memory",
      true, true);
}

void ModelOptions::addRunnableWeights(CLI::App *) {}
#else
void ModelOptions::addRunnable(CLI::App *cmd) { add(cmd, "An artifact (.kvp)", false, true); }

void ModelOptions::addRunnableWeights(CLI::App *cmd) { addArtifactWeights(cmd); }
#endif

void addExecFlags(CLI::App *cmd, int &threads, bool &noGraphs) {
  cmd->add_option("--threads", threads,
                  "CPU: threads, at most the machine's hardware threads (default: all of them)");
  cmd->add_flag("--no-graphs", noGraphs,
                "CUDA: launch every kernel eagerly instead of replaying CUDA graphs");
}

bool isArtifactFile(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  char magic[8] = {};
  in.read(magic, 8);
  return in.gcount() == 8 && std::memcmp(magic, "\x89KVP\r\n\x1a\n", 8) == 0;
}

void refuseSettingsForArtifact(const ModelOptions &o) {
  std::vector<std::string> given;
  auto flag = [&](bool set, const char *name) {
    if (set) given.push_back(name);
  };
  flag(!o.target.empty(), "--target");
  flag(!o.dtype.empty(), "--dtype");
  flag(!o.expertDtype.empty(), "--expert-dtype");
  flag(o.maxBatch != 0, "--max-batch");
  flag(o.maxSeq != 0, "--max-seq");
  flag(o.prefillChunk != 0, "--prefill-chunk");
  flag(o.pageSize != 0, "--page-size");
  flag(o.kvPages != 0, "--kv-pages");
  flag(o.windowKvPages != 0, "--window-kv-pages");
  flag(!o.memoryBudget.empty(), "--memory-budget");
  flag(o.tensorParallel != 0, "--tensor-parallel");
  flag(!o.decodeCopies.empty(), "--decode-copies");
  flag(!o.prefillCopies.empty(), "--prefill-copies");
  flag(o.l2Prefetch >= 0, "--l2-prefetch");
  flag(o.scoreRows != 0, "--score-rows");
  flag(!o.yarn.empty(), "--yarn");
  if (given.empty()) return;
  std::string list;
  for (size_t i = 0; i < given.size(); ++i)
    list += (i == 0 ? "" : i + 1 == given.size() ? " and " : ", ") + given[i];
  throw InputError(o.model + " is an artifact, whose settings were fixed when it was compiled; "
                             "leave out " + list + ", or give the model description to compile "
                             "it with them");
}

const Tokenizer &requireTokenizer(const Runnable &r) {
  if (!r.tokenizer)
    throw InputError(r.source + ": the model carries no tokenizer; give one with --tokenizer "
                                "PATH, or give token ids with --prompt-ids");
  return *r.tokenizer;
}

#ifdef KVPLAN_HAVE_COMPILER
namespace {
/// --memory-budget N%: that share of the memory this machine has available
/// now, for the cpu target (the cuda target's bill is the GPU's, which a
/// compile does not see).
ModelConfig withMemoryShare(ModelConfig cfg, const std::string &text) {
  const std::string flag = "--memory-budget '" + text + "': ";
  const std::string number = text.substr(0, text.size() - 1);
  char *end = nullptr;
  const double share = std::strtod(number.c_str(), &end);
  if (number.empty() || end != number.c_str() + number.size() || !(share > 0 && share <= 100) ||
      !std::isdigit((unsigned char)number[0]))
    throw InputError(flag + "a share of the available memory is a number in (0, 100] and %, "
                            "like 80%");
  if (cfg.compile.target != Target::cpu)
    throw InputError(flag + "a share is of this machine's memory, and the cuda target's bill is "
                            "the GPU's: give bytes, like 70GiB (an out-of-memory error at load "
                            "names the GPU's free bytes)");
  const std::optional<ResourceFigure> have = availableMemory();
  if (!have)
    throw InputError(flag + "this machine's available memory cannot be read here; give bytes, "
                            "like 24GiB");
  SettingOverrides o;
  o.memoryBudget = int64_t(std::floor(double(have->bytes) * share / 100));
  if (*o.memoryBudget < 1) throw InputError(flag + "that is less than a byte");
  return applyAndValidate(std::move(cfg), o);
}

/// A --yarn value: FACTOR (a number above 1) or FACTOR:ORIGINAL (a positive
/// count of tokens).
SettingOverrides::Yarn parseYarn(const std::string &text) {
  const size_t colon = text.find(':');
  const std::string factor = text.substr(0, colon);
  SettingOverrides::Yarn y;
  char *end = nullptr;
  y.factor = std::strtod(factor.c_str(), &end);
  bool ok = !factor.empty() && end == factor.c_str() + factor.size() && y.factor > 1 &&
            std::isfinite(y.factor);
  if (ok && colon != std::string::npos) {
    const std::string original = text.substr(colon + 1);
    const long long n = std::strtoll(original.c_str(), &end, 10);
    ok = !original.empty() && end == original.c_str() + original.size() && n > 0 &&
         n <= (int64_t(1) << 24);
    y.original = n;
  }
  if (!ok)
    throw InputError("--yarn '" + text + "': expected FACTOR or FACTOR:ORIGINAL, a factor "
                     "above 1 and the pretraining context in tokens, like 4 or 4:32768");
  return y;
}

/// A --decode-copies value: "none", or row counts separated by commas.
std::vector<int64_t> parseRowList(const char *flag, const std::string &text) {
  if (text == "none") return {};
  std::vector<int32_t> rows;
  try {
    rows = parseIds(text, flag); // the ranges are checked with the settings
  } catch (const InputError &) {
    rows.clear();
  }
  if (rows.empty())
    throw InputError(std::string(flag) + " '" + text +
                     "': expected none or row counts separated by commas, like 1,8,32");
  return {rows.begin(), rows.end()};
}
} // namespace

ModelSources resolveModelSources(const ModelOptions &opts) {
  SettingOverrides o;
  if (!opts.target.empty()) o.target = parseTarget(opts.target);
  if (!opts.dtype.empty()) o.weightDtype = parseDType(opts.dtype);
  if (!opts.expertDtype.empty()) o.expertDtype = parseDType(opts.expertDtype);
  if (opts.maxBatch) o.maxBatch = opts.maxBatch;
  if (opts.maxSeq) o.maxSeqLen = opts.maxSeq;
  if (opts.prefillChunk) o.prefillChunk = opts.prefillChunk;
  if (opts.pageSize) o.pageSize = opts.pageSize;
  if (opts.kvPages) o.kvPages = opts.kvPages;
  if (opts.windowKvPages) o.windowKvPages = opts.windowKvPages;
  const bool budgetShare = !opts.memoryBudget.empty() && opts.memoryBudget.back() == '%';
  if (!opts.memoryBudget.empty() && !budgetShare) {
    o.memoryBudget = parseByteSize(opts.memoryBudget);
    if (!o.memoryBudget)
      throw InputError("--memory-budget '" + opts.memoryBudget + "': not a size; expected " +
                       kByteSizeForms + ", or a share of this machine's available memory: 80%");
  }
  if (opts.tensorParallel) o.tensorParallel = opts.tensorParallel;
  if (opts.speculate) o.speculate = opts.speculate;
  if (opts.scoreRows) o.scoreRows = opts.scoreRows;
  if (!opts.decodeCopies.empty())
    o.decodeCopies = parseRowList("--decode-copies", opts.decodeCopies);
  if (!opts.prefillCopies.empty())
    o.prefillCopies = parseRowList("--prefill-copies", opts.prefillCopies);
  if (opts.l2Prefetch >= 0) o.l2PrefetchMib = opts.l2Prefetch;
  if (!opts.yarn.empty()) o.yarn = parseYarn(opts.yarn);
  ModelSources s;
  s.config = loadModelConfig(opts.model, o);
  if (budgetShare) s.config = withMemoryShare(std::move(s.config), opts.memoryBudget);
  if (opts.serveBatch && !s.config.given.count("compile.max_batch")) {
    SettingOverrides shared;
    shared.maxBatch = opts.serveBatch;
    const std::set<std::string> &given = s.config.given;
    if (!given.count("compile.kv_pages") && !given.count("compile.memory_budget"))
      shared.kvPages = s.config.compile.maxSeqLen / s.config.compile.pageSize;
    s.config = applyAndValidate(std::move(s.config), shared);
    s.serveBatchApplied = true;
  }
  if (opts.serveScoreRows && !s.config.given.count("compile.score_rows")) {
    SettingOverrides score;
    score.scoreRows = std::min(opts.serveScoreRows, s.config.compile.maxSeqLen);
    s.config = applyAndValidate(std::move(s.config), score);
  }

  fs::path model(opts.model);
  fs::path dir = fs::is_directory(model) ? model : model.parent_path();
  const bool checkpoint = isCheckpointFile(opts.model);
  const bool hfDir = fs::is_directory(model) || model.filename() == "config.json";
  if (opts.weights == "none")
    s.weights = "";
  else if (!opts.weights.empty())
    s.weights = opts.weights;
  else if (checkpoint)
    s.weights = opts.model;
  else if (hfDir && hasSafetensors(dir.string()))
    s.weights = dir.string();
  else
    s.weights = "random:0";

  if (!opts.tokenizer.empty())
    s.tokenizer = opts.tokenizer;
  else if (model.extension() == ".gguf")
    s.tokenizer = opts.model;
  else if (hfDir && fs::exists(dir / "tokenizer.json"))
    s.tokenizer = (dir / "tokenizer.json").string();
  else if (hfDir && fs::exists(dir / "tokenizer.model"))
    s.tokenizer = (dir / "tokenizer.model").string();
  else if (s.weights.rfind("random:", 0) == 0 && s.config.model.vocabSize >= 259)
    s.tokenizer = "bytes"; // synthetic weights: any tokenizer of the right size will do
  return s;
}

std::unique_ptr<Tokenizer> loadSourceTokenizer(const ModelSources &s) {
  if (s.tokenizer.empty())
    return nullptr;
  std::unique_ptr<Tokenizer> t = s.tokenizer == "bytes"
                                     ? makeByteTokenizer(int32_t(s.config.model.vocabSize))
                                     : loadTokenizerFile(s.tokenizer);
  if (t->vocabSize() > s.config.model.vocabSize)
    throw InputError(s.tokenizer + ": the tokenizer has " + std::to_string(t->vocabSize()) +
                     " tokens but the model's vocabulary has " +
                     std::to_string(s.config.model.vocabSize));
  return t;
}
#endif

namespace {

/// Packs the weights in memory, in the plan's layout, once they are known
/// to fit.
void packWeights(Runnable &r, const WeightSource &src) {
  const uint64_t blob = uint64_t(r.plan.memoryBill().weightsBlobBytes);
  requireMemory(packingMemoryBytes(r.plan, src) + blob,
                "pack the weights of " + r.source + " in memory",
                "the packed weights take " + formatBytes(blob) + " and " + src.describe() +
                    " keep " + formatBytes(src.heldBytes()) +
                    " while packing; free memory, choose a smaller --dtype, or compile an "
                    "artifact first (kvplan compile) and run that");
  r.ownedWeights = packWeightsInMemory(r.plan, src, r.rank());
  r.weights = r.ownedWeights.data();
  r.weightsBytes = r.ownedWeights.size();
}

/// The artifact's weights, checksummed first, or --weights packed now for a
/// weightless artifact (or replacing its own).
void loadArtifactWeights(Runnable &r, const ModelOptions &opts, bool verbose) {
  if (!opts.weights.empty() && opts.weights != "none") {
    packWeights(r, *openWeights(opts.weights, r.plan.model));
    return;
  }
  const std::string section = weightsSectionName(r.rank());
  if (!r.artifact->hasSection(section)) {
    if (r.rank() > 0 && r.artifact->hasSection(kWeightsSection))
      throw InputError(opts.model + ": the artifact holds no weights for rank " +
                       std::to_string(r.rank()) + " (section " + section +
                       "); recompile it with --tensor-parallel " + std::to_string(r.plan.ranks()));
    throw InputError(opts.model + ": the artifact holds no weights (it was compiled with "
                                  "--weights none); compile it with weights, or give "
                                  "--weights random:SEED or a checkpoint");
  }
  auto t0 = std::chrono::steady_clock::now();
  r.artifact->verifySection(section);
  std::string_view w = r.artifact->section(section);
  if (verbose)
    std::fprintf(stderr, "  weights checksum      %8.2f ms for %s\n",
                 std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                     .count(),
                 humanBytes(int64_t(w.size())).c_str());
  r.weights = w.data();
  r.weightsBytes = w.size();
}

/// A cuda artifact's launch table, machine code for each architecture it
/// lists, and its generated source when stored.
CudaCode loadArtifactCudaCode(const Artifact &a, const Plan &plan, const std::string &path) {
  CudaCode code;
  if (!a.hasSection(kCudaProgramSection))
    throw InputError(path + ": incompatible because this cuda artifact has no launch "
                            "table (section cuda.program); recompile it");
  std::string_view prog = a.section(kCudaProgramSection);
  try {
    code.program = cudaProgramFromJson(nlohmann::json::parse(prog.begin(), prog.end()));
  } catch (const nlohmann::json::exception &e) {
    throw InputError(path + ": the cuda.program section is not JSON: " + e.what());
  }
  if (plan.cudaArchs.empty())
    throw InputError(path + ": incompatible because it holds no machine code (it was compiled "
                            "with --arch none, the CUDA source alone); recompile it with "
                            "--arch sm_80,sm_90a or your GPU's architecture");
  for (const std::string &arch : plan.cudaArchs) {
    if (!a.hasSection(cudaCubinSection(arch)))
      throw InputError(path + ": the artifact lists " + arch +
                       " but holds no machine code for it; recompile it");
    code.cubins[arch] = std::string(a.section(cudaCubinSection(arch)));
  }
  if (a.hasSection(kCudaSourceSection))
    code.source = std::string(a.section(kCudaSourceSection));
  return code;
}

/// --tokenizer, else the artifact's own (null when it has none).
std::unique_ptr<Tokenizer> loadArtifactTokenizer(const Artifact &a, const ModelOptions &opts) {
  if (!opts.tokenizer.empty())
    return loadTokenizerFile(opts.tokenizer);
  if (!a.hasSection(kTokenizerSection))
    return nullptr;
  std::string_view t = a.section(kTokenizerSection);
  size_t nl = t.find('\n');
  if (nl == std::string_view::npos)
    throw InputError(opts.model + ": the tokenizer section is malformed; recompile the model");
  return loadTokenizer(std::string(t.substr(0, nl)), t.substr(nl + 1));
}

/// This process's rank of a tensor-parallel plan (checked against the
/// ranks mpirun started and the plan every rank loaded), or null.
Collective *joinRanks(const Plan &plan, const std::string &source) {
  Collective *comm = nullptr;
#ifdef KVPLAN_HAVE_MPI
  comm = mpiWorld();
#else
  if (plan.ranks() > 1)
    throw InputError(source + ": the model is split between " + std::to_string(plan.ranks()) +
                     " tensor-parallel ranks, and this kvplan was built without MPI; install "
                     "Open MPI (libopenmpi-dev openmpi-bin) and rebuild it (scripts/setup.sh)");
#endif
  uint64_t hash = 0; // only ranks compare plans: no serialising at start-up otherwise
  if (comm) {
    const std::string text = toJson(plan).dump();
    hash = checksum64(text.data(), text.size());
  }
  checkRanks(plan.ranks(), comm, hash);
  return plan.ranks() > 1 ? comm : nullptr;
}

void loadArtifact(Runnable &r, const ModelOptions &opts, bool verbose) {
  r.artifact = std::make_unique<Artifact>(Artifact::open(opts.model));
  r.plan = r.artifact->plan();
  r.comm = joinRanks(r.plan, opts.model);
  loadArtifactWeights(r, opts, verbose);
  if (r.plan.settings.target == Target::cuda)
    r.cuda = loadArtifactCudaCode(*r.artifact, r.plan, opts.model);
  r.tokenizer = loadArtifactTokenizer(*r.artifact, opts);
  if (!opts.tokenizer.empty())
    r.chatTemplate = findModelChatTemplate(opts.tokenizer);
  else if (r.artifact->hasSection(kChatTemplateSection))
    r.chatTemplate = parseChatTemplateSection(
        std::string(r.artifact->section(kChatTemplateSection)), opts.model);
}

#ifdef KVPLAN_HAVE_COMPILER
void compileInMemory(Runnable &r, const ModelOptions &opts, bool verbose) {
  ModelSources s = resolveModelSources(opts);
  if (s.weights.empty())
    throw InputError(opts.model + ": --weights none leaves nothing to run");
  CompileOutput out = compileModel(s.config, {}, verbose);
  if (out.plan.settings.target == Target::cuda) {
    addCudaCode(out, parseCudaArchs(kDefaultCudaArchs), verbose);
    r.cuda = out.cuda;
  }
  std::unique_ptr<WeightSource> src = openWeights(s.weights, s.config.model);
  r.plan = out.plan;
  r.comm = joinRanks(r.plan, opts.model);
  packWeights(r, *src);
  r.tokenizer = loadSourceTokenizer(s);
  if (r.tokenizer) r.chatTemplate = findModelChatTemplate(s.tokenizer);
  r.serveBatchApplied = s.serveBatchApplied;
}
#else
void compileInMemory(Runnable &, const ModelOptions &opts, bool) {
  throw InputError(opts.model + ": not a kvplan artifact, and this kvplan was built without "
                                "the compiler (-DKVPLAN_COMPILER=OFF); compile the model with "
                                "`kvplan compile` where the compiler is installed");
}
#endif

} // namespace

Runnable loadRunnable(const ModelOptions &opts, bool verbose) {
  Runnable r;
  r.source = opts.model;
  if (isArtifactFile(opts.model)) {
    refuseSettingsForArtifact(opts);
    loadArtifact(r, opts, verbose);
  } else
    compileInMemory(r, opts, verbose);
#ifndef KVPLAN_HAVE_CUDA
  if (r.plan.settings.target != Target::cpu)
    throw InputError(opts.model + ": incompatible because it was compiled for target '" +
                     targetName(r.plan.settings.target) +
                     "' and this kvplan was built without the CUDA runtime (KVPLAN_CUDA=OFF); "
                     "recompile the model with --target cpu, or rebuild kvplan with CUDA");
#endif
  if (r.tokenizer && r.tokenizer->vocabSize() > r.plan.model.vocabSize)
    throw InputError(opts.tokenizer + ": the tokenizer has " +
                     std::to_string(r.tokenizer->vocabSize()) +
                     " tokens but the model's vocabulary has " +
                     std::to_string(r.plan.model.vocabSize));
  return r;
}

void checkThreadsFlag(int threads) {
  if (threads < 0)
    throw InputError("--threads must be positive (or 0 for all hardware threads), got " +
                     std::to_string(threads));
  const int hardware = defaultThreadCount();
  if (threads > hardware)
    throw InputError("--threads " + std::to_string(threads) + " is more than the " +
                     std::to_string(hardware) + " hardware threads of this machine; give at most " +
                     std::to_string(hardware) + ", or leave --threads out to use them all");
}

void checkExecFlags(const Runnable &r, const ExecOptions &o, bool draftModel) {
  const bool cuda = r.plan.settings.target == Target::cuda;
  if (!o.graphs && !cuda)
    throw InputError("--no-graphs: " + r.source + " targets cpu, whose steps launch no CUDA " +
                     "graphs to turn off; leave --no-graphs out");
  if (o.threads && cuda && !draftModel)
    throw InputError("--threads " + std::to_string(o.threads) + ": " + r.source +
                     " targets cuda, whose steps run on the GPU, not on CPU threads; leave " +
                     "--threads out");
}

/// This rank's share of the plan on its device, alone or with the other
/// ranks (r.comm).
std::unique_ptr<Executor> makeShare(const Runnable &r, const ExecOptions &o) {
  if (r.plan.settings.target == Target::cuda) {
#ifdef KVPLAN_HAVE_CUDA
    CudaOptions co;
    co.graphs = o.graphs;
    co.ranks = r.comm;
    return std::make_unique<CudaExecutor>(r.plan, *r.cuda, r.weights, r.weightsBytes, co);
#else
    throw InputError(r.source + ": incompatible because it targets cuda and this kvplan has no "
                                "CUDA runtime");
#endif
  }
  return std::make_unique<CpuExecutor>(r.plan, r.weights, r.weightsBytes,
                                       o.threads ? o.threads : defaultThreadCount(), r.comm);
}

std::unique_ptr<Executor> makeExecutor(const Runnable &r, const ExecOptions &o) {
  std::unique_ptr<Executor> share = makeShare(r, o);
  if (!r.comm) return share;
  if (r.comm->rank() == 0) return std::make_unique<LeaderExecutor>(std::move(share), *r.comm);
  followLeader(*share, *r.comm);
  throw RankFinished();
}

} // namespace kvplan::cli
