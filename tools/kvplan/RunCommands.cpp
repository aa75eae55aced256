// kvplan run, bench, tokenize and detokenize: the commands that execute.
#include "tools/kvplan/Commands.h"
#include "tools/kvplan/Runnable.h"

#include "plan/Cost.h"
#include "runtime/Engine.h"
#include "runtime/Roofline.h"
#include "runtime/cpu/Isa.h"
#include "runtime/Sampler.h"
#include "runtime/cpu/ThreadPool.h"
#ifdef KVPLAN_HAVE_CUDA
#include "runtime/cuda/CudaExecutor.h"
#endif

#include <chrono>
#include <cstdio>
#include <iostream>
#include <random>
#include <set>
#include <sstream>
#include <unistd.h>

namespace kvplan::cli {

namespace {

using Clock = std::chrono::steady_clock;
double seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

/// "1,2,3" or "1 2 3" -> ids; throws InputError naming the bad item.
std::vector<int32_t> parseIds(const std::string &text, const char *flag) {
  std::vector<int32_t> ids;
  std::string item;
  std::istringstream in(text);
  while (in >> item) {
    std::istringstream parts(item);
    std::string part;
    while (std::getline(parts, part, ',')) {
      if (part.empty()) continue;
      size_t used = 0;
      long long v = 0;
      try {
        v = std::stoll(part, &used);
      } catch (const std::exception &) {
        used = 0;
      }
      if (used != part.size() || v < INT32_MIN || v > INT32_MAX)
        throw InputError(std::string(flag) + ": '" + part + "' is not a token id");
      ids.push_back(int32_t(v));
    }
  }
  return ids;
}

void printIds(const std::vector<int32_t> &ids, bool &first) {
  for (int32_t id : ids) {
    std::printf(first ? "%d" : " %d", id);
    first = false;
  }
}

/// Writes generated text. On a terminal, control characters other than
/// newline, tab and carriage return are shown as \xNN, so a model's output
/// (random weights emit any byte) cannot drive the terminal.
void emit(const std::string &text) {
  static const bool tty = isatty(1);
  if (!tty) {
    std::fputs(text.c_str(), stdout);
    return;
  }
  for (unsigned char c : text) {
    if ((c < 0x20 && c != '\n' && c != '\t' && c != '\r') || c == 0x7f)
      std::printf("\\x%02x", c);
    else
      std::putchar(c);
  }
}

struct RunOptions {
  ModelOptions model;
  std::string prompt, promptIds;
  bool promptGiven = false;
  int64_t tokens = 256;
  SamplingOptions sampling{1.0, 0, 0.9, 0};
  bool ignoreEos = false, printIds = false, stats = false, noBos = false;
  int threads = 0;
  bool noGraphs = false;
};

int runGenerate(const RunOptions &o, bool verbose) {
  Sampler check(o.sampling); // checks the sampling flags before any work
  if (o.tokens < 0) throw InputError("-n must be 0 or more, got " + std::to_string(o.tokens));
  if (o.threads < 0) throw InputError("--threads must be positive");
  if (!o.promptIds.empty() && o.promptGiven)
    throw InputError("give either -p TEXT or --prompt-ids, not both");
  Runnable r = loadRunnable(o.model, verbose);
  const Tokenizer *tok = r.tokenizer.get();

  std::vector<int32_t> prompt;
  if (!o.promptIds.empty()) {
    prompt = parseIds(o.promptIds, "--prompt-ids");
  } else {
    const Tokenizer &t = requireTokenizer(r);
    prompt = t.encode(o.prompt, !o.noBos);
  }
  if (prompt.empty())
    throw InputError("the prompt is empty: give -p TEXT or --prompt-ids (BOS is added to text "
                     "unless --no-bos)");
  for (int32_t id : prompt)
    if (id < 0 || id >= r.plan.model.vocabSize)
      throw InputError("prompt token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                       std::to_string(r.plan.model.vocabSize) + ")");
  if (int64_t(prompt.size()) > r.plan.settings.maxSeqLen)
    throw InputError("the prompt has " + std::to_string(prompt.size()) +
                     " tokens but the model was compiled for a context of " +
                     std::to_string(r.plan.settings.maxSeqLen) +
                     " (compile with a larger --max-seq)");

  Engine engine(makeExecutor(r, {o.threads, !o.noGraphs}));
  engine.setSampling(o.sampling);
  if (verbose) std::fprintf(stderr, "running on %s\n", engine.executor().describe().c_str());
  const std::vector<int64_t> &eos = r.plan.model.eosTokenIds;
  std::vector<int32_t> stopIds(eos.begin(), eos.end());
  if (tok)
    for (int32_t id : tok->eosIds()) stopIds.push_back(id);
  auto isEos = [&](int32_t id) {
    return std::find(stopIds.begin(), stopIds.end(), id) != stopIds.end();
  };

  std::unique_ptr<StreamDecoder> stream;
  bool firstId = true;
  if (o.printIds) {
    printIds(prompt, firstId);
  } else if (tok) {
    stream = std::make_unique<StreamDecoder>(*tok);
    for (int32_t id : prompt) emit(stream->push(id));
  }
  std::fflush(stdout);

  const int seq = engine.open();
  auto t0 = Clock::now();
  int32_t next = engine.prefillNext(seq, prompt.data(), int64_t(prompt.size()));
  auto t1 = Clock::now();
  int64_t generated = 0;
  std::vector<int32_t> out;
  while (generated < o.tokens) {
    if (!o.ignoreEos && isEos(next)) break;
    out.push_back(next);
    ++generated;
    if (o.printIds) {
      printIds({next}, firstId);
    } else if (stream) {
      emit(stream->push(next));
    } else {
      std::printf("%s%d", generated == 1 ? "" : " ", next);
    }
    std::fflush(stdout);
    if (generated >= o.tokens) break;
    if (engine.length(seq) >= engine.maxSeqLen()) {
      std::fprintf(stderr, "\n[stopped: the context of %lld tokens is full]\n",
                   (long long)engine.maxSeqLen());
      break;
    }
    next = engine.decodeNext({seq}, {next})[0];
  }
  auto t2 = Clock::now();
  if (stream) emit(stream->flush());
  std::printf("\n");
  std::fflush(stdout);
  if (o.stats) {
    double pre = seconds(t0, t1), dec = seconds(t1, t2);
    // The first generated token comes from the prefill; each later one from
    // a decode step.
    int64_t steps = std::max<int64_t>(generated - 1, 0);
    std::fprintf(stderr,
                 "prefill: %zu tokens in %.3f s (%.1f tok/s); decode: %lld tokens in %.3f s "
                 "(%.1f tok/s); %s\n",
                 prompt.size(), pre, double(prompt.size()) / pre, (long long)steps, dec,
                 steps ? double(steps) / dec : 0.0, engine.executor().describe().c_str());
  }
  return 0;
}

struct BenchOptions {
  ModelOptions model;
  int64_t promptLen = 128, gen = 128;
  int threads = 0;
  bool json = false;
  bool noGraphs = false;
};

int runBenchCuda(const BenchOptions &o, Runnable &r, bool verbose);

int runBench(const BenchOptions &o, bool verbose) {
  if (o.promptLen < 1 || o.gen < 1)
    throw InputError("--prompt-len and --gen must be at least 1");
  Runnable r = loadRunnable(o.model, verbose);
  if (o.promptLen + o.gen > r.plan.settings.maxSeqLen)
    throw InputError("--prompt-len + --gen = " + std::to_string(o.promptLen + o.gen) +
                     " exceeds the compiled context " + std::to_string(r.plan.settings.maxSeqLen));
  if (r.plan.settings.target == Target::cuda) return runBenchCuda(o, r, verbose);
  const int threads = o.threads ? o.threads : defaultThreadCount();
  // The machine's limits, with the threads the model will use; measured
  // before and after the model runs, keeping the better figure, since a
  // shared machine's bandwidth drifts (fractions are then conservative).
  double bandwidth = 0, peak = 0;
  auto probeMachine = [&] {
    ThreadPool probe(threads);
    bandwidth = std::max(bandwidth, measureReadBandwidth(probe));
    peak = std::max(peak, measurePeakGflops(probe));
  };
  probeMachine();
  Engine engine(r.plan, r.weights, r.weightsBytes, threads);
  std::mt19937 rng(1234);
  std::vector<int32_t> prompt(size_t(o.promptLen));
  for (int32_t &t : prompt) t = int32_t(rng() % uint32_t(r.plan.model.vocabSize));

  // A warm-up pass (page faults, caches), then the measured one. Prefill
  // is short, so its time is the best of five runs on fresh sequences.
  for (int pass = 0; pass < 2; ++pass) {
    double prefillS = 1e300;
    const float *logits = nullptr;
    for (int rep = 0; rep < 5; ++rep) {
      int s = engine.open();
      auto a = Clock::now();
      logits = engine.prefill(s, prompt.data(), o.promptLen);
      prefillS = std::min(prefillS, seconds(a, Clock::now()));
      engine.close(s);
    }
    int seq = engine.open();
    logits = engine.prefill(seq, prompt.data(), o.promptLen);
    auto t1 = Clock::now();
    int32_t next = argmax(logits, r.plan.model.vocabSize);
    const int64_t steps = pass == 0 ? std::min<int64_t>(o.gen, 4) : o.gen;
    for (int64_t i = 0; i < steps; ++i) {
      logits = engine.decode({seq}, {next});
      next = argmax(logits, r.plan.model.vocabSize);
    }
    auto t2 = Clock::now();
    engine.close(seq);
    if (pass == 0) continue;
    probeMachine();
    const double prefillTokS = double(o.promptLen) / prefillS;
    const double decodeTokS = double(steps) / seconds(t1, t2);
    const int64_t weightBytes = decodeWeightBytes(r.plan, 1);
    const double decodeGBs = double(weightBytes) * decodeTokS / 1e9;
    const double prefillGflops = prefillFlops(r.plan, o.promptLen) / prefillS / 1e9;
    if (o.json) {
      nlohmann::json j = {{"model", r.plan.model.name},
                          {"weight_dtype", dtypeName(r.plan.settings.weightDtype)},
                          {"isa", cpu::isaName(cpu::activeIsa())},
                          {"prompt_len", o.promptLen},
                          {"gen", o.gen},
                          {"threads", engine.threads()},
                          {"prefill_tok_s", prefillTokS},
                          {"decode_tok_s", decodeTokS},
                          {"weights_bytes", weightBytes},
                          {"bandwidth_gb_s", bandwidth},
                          {"decode_roofline_fraction", decodeGBs / bandwidth},
                          {"prefill_gflops", prefillGflops},
                          {"peak_gflops", peak},
                          {"prefill_peak_fraction", prefillGflops / peak}};
      std::cout << j.dump() << "\n";
    } else {
      std::printf("model    %s (%s weights), %d threads, %s kernels\n", r.plan.model.name.c_str(),
                  dtypeName(r.plan.settings.weightDtype), engine.threads(),
                  cpu::isaName(cpu::activeIsa()));
      std::printf("machine  read bandwidth %.1f GB/s, peak FMA %.1f GFLOP/s\n", bandwidth, peak);
      std::printf("prefill  %lld tokens: %.1f tok/s, %.1f GFLOP/s = %.0f%% of peak\n",
                  (long long)o.promptLen, prefillTokS, prefillGflops, 100 * prefillGflops / peak);
      std::printf("decode   %lld tokens: %.1f tok/s, %s of weights per token = %.1f GB/s = "
                  "%.0f%% of the bandwidth roofline\n",
                  (long long)o.gen, decodeTokS, humanBytes(weightBytes).c_str(), decodeGBs,
                  100 * decodeGBs / bandwidth);
    }
  }
  return 0;
}


#ifdef KVPLAN_HAVE_CUDA
/// bench on a GPU: decode with graph replay and eagerly in one process, the
/// device-to-device copy bandwidth measured in the same run.
int runBenchCuda(const BenchOptions &o, Runnable &r, bool verbose) {
  const double bandwidth = measureCudaCopyBandwidth(); // before the model takes memory
  CudaOptions co;
  co.graphs = !o.noGraphs;
  auto exec = std::make_unique<CudaExecutor>(r.plan, *r.cuda, r.weights, r.weightsBytes, co);
  CudaExecutor *cuda = exec.get();
  Engine engine(std::move(exec));
  if (verbose) std::fprintf(stderr, "running on %s\n", cuda->describe().c_str());
  std::mt19937 rng(1234);
  std::vector<int32_t> prompt(size_t(o.promptLen));
  for (int32_t &t : prompt) t = int32_t(rng() % uint32_t(r.plan.model.vocabSize));

  auto prefillBest = [&] {
    double best = 1e300;
    for (int rep = 0; rep < 5; ++rep) {
      int s = engine.open();
      auto a = Clock::now();
      engine.prefillNext(s, prompt.data(), o.promptLen);
      best = std::min(best, seconds(a, Clock::now()));
      engine.close(s);
    }
    return best;
  };
  // Seconds per decode step over `steps` greedy steps after the prompt.
  auto decodeStep = [&](int64_t steps) {
    int seq = engine.open();
    int32_t next = engine.prefillNext(seq, prompt.data(), o.promptLen);
    auto t1 = Clock::now();
    for (int64_t i = 0; i < steps; ++i) next = engine.decodeNext({seq}, {next})[0];
    const double s = seconds(t1, Clock::now()) / double(steps);
    engine.close(seq);
    return s;
  };
  prefillBest(); // warm-up: graph capture, cuBLAS heuristics
  decodeStep(std::min<int64_t>(o.gen, 4));
  const double prefillS = prefillBest();
  const double mainStep = decodeStep(o.gen);
  // The other mode, same kernels, same engine.
  cuda->setGraphs(o.noGraphs);
  decodeStep(std::min<int64_t>(o.gen, 4));
  const double otherStep = decodeStep(o.gen);
  cuda->setGraphs(!o.noGraphs);
  const double graphStep = o.noGraphs ? otherStep : mainStep;
  const double eagerStep = o.noGraphs ? mainStep : otherStep;

  const double prefillTokS = double(o.promptLen) / prefillS;
  const double decodeTokS = 1.0 / mainStep;
  const int64_t weightBytes = decodeWeightBytes(r.plan, 1);
  const double decodeGBs = double(weightBytes) * decodeTokS / 1e9;
  const double bandwidthGBs = bandwidth / 1e9;
  const double fraction = bandwidthGBs > 0 ? decodeGBs / bandwidthGBs : 0;
  if (o.json) {
    nlohmann::json j = {{"model", r.plan.model.name},
                        {"weight_dtype", dtypeName(r.plan.settings.weightDtype)},
                        {"device", cuda->describe()},
                        {"graphs", !o.noGraphs},
                        {"prompt_len", o.promptLen},
                        {"gen", o.gen},
                        {"prefill_tok_s", prefillTokS},
                        {"decode_tok_s", decodeTokS},
                        {"decode_step_ms_graph", graphStep * 1e3},
                        {"decode_step_ms_eager", eagerStep * 1e3},
                        {"graph_speedup", eagerStep / graphStep},
                        {"graphs_captured", cuda->graphsCaptured()},
                        {"weights_bytes", weightBytes},
                        {"bandwidth_gb_s", bandwidthGBs},
                        {"decode_roofline_fraction", fraction}};
    std::cout << j.dump() << "\n";
  } else {
    std::printf("model    %s (%s weights) on %s\n", r.plan.model.name.c_str(),
                dtypeName(r.plan.settings.weightDtype), cuda->describe().c_str());
    std::printf("device   device-to-device copy %.1f GB/s (read + write)\n", bandwidthGBs);
    std::printf("prefill  %lld tokens: %.1f tok/s\n", (long long)o.promptLen, prefillTokS);
    std::printf("decode   %lld tokens: %.1f tok/s, %s of weights per token = %.1f GB/s = %.0f%% "
                "of the copy roofline\n",
                (long long)o.gen, decodeTokS, humanBytes(weightBytes).c_str(), decodeGBs,
                100 * fraction);
    std::printf("graphs   %.3f ms per decode step replayed, %.3f ms eager: %.2fx\n",
                graphStep * 1e3, eagerStep * 1e3, eagerStep / graphStep);
  }
  return 0;
}
#else
int runBenchCuda(const BenchOptions &, Runnable &r, bool) {
  throw InputError(r.source + ": incompatible because it targets cuda and this kvplan has no "
                              "CUDA runtime");
}
#endif

} // namespace

void addRunCommands(CLI::App &app, const GlobalOptions &global, Action &action) {
#ifdef KVPLAN_HAVE_COMPILER
  const bool compileSettings = true;
  const std::string what = "An artifact (.kvp) or a model (TOML, config.json, .bin, .gguf) to "
                           "compile in memory";
#else
  const bool compileSettings = false;
  const std::string what = "An artifact (.kvp)";
#endif
  // run
  {
    auto *cmd = app.add_subcommand("run", "Generate text from an artifact or a model");
    auto o = std::make_shared<RunOptions>();
    o->model.add(cmd, what, compileSettings, true);
    auto *p = cmd->add_option("-p,--prompt", o->prompt, "The prompt text");
    cmd->add_option("--prompt-ids", o->promptIds, "The prompt as token ids: 1,2,3");
    cmd->add_option("-n,--tokens", o->tokens, "New tokens to generate")->capture_default_str();
    cmd->add_option("--temperature", o->sampling.temperature, "0 for greedy")
        ->capture_default_str();
    cmd->add_option("--top-k", o->sampling.topK, "Sample among the K likeliest (0: all)")
        ->capture_default_str();
    cmd->add_option("--top-p", o->sampling.topP, "Sample among the likeliest up to this mass")
        ->capture_default_str();
    cmd->add_option("--seed", o->sampling.seed, "Random seed for sampling")->capture_default_str();
    cmd->add_flag("--ignore-eos", o->ignoreEos, "Do not stop at the end-of-sequence token");
    cmd->add_flag("--no-bos", o->noBos, "Do not put BOS before the prompt text");
    cmd->add_flag("--print-ids", o->printIds,
                  "Print the prompt ids then the generated ids, and nothing else, on stdout");
    cmd->add_flag("--stats", o->stats, "Print prefill and decode tokens per second on stderr");
    cmd->add_option("--threads", o->threads, "Threads (default: the machine's cores)");
    cmd->add_flag("--no-graphs", o->noGraphs,
                  "CUDA: launch every kernel eagerly instead of replaying CUDA graphs");
    if (!compileSettings) o->model.addArtifactWeights(cmd);
    cmd->callback([&action, &global, o, p] {
      o->promptGiven = p->count() > 0;
      action = [&global, o] { return runGenerate(*o, global.verbose); };
    });
  }
  // bench
  {
    auto *cmd = app.add_subcommand("bench", "Measure prefill and decode throughput");
    auto o = std::make_shared<BenchOptions>();
    o->model.add(cmd, what, compileSettings, true);
    cmd->add_option("--prompt-len", o->promptLen, "Prompt tokens")->capture_default_str();
    cmd->add_option("--gen", o->gen, "Tokens to decode")->capture_default_str();
    cmd->add_option("--threads", o->threads, "Threads (default: the machine's cores)");
    cmd->add_flag("--json", o->json,
                  "Print one JSON object: prefill_tok_s, decode_tok_s, weights_bytes, ...");
    cmd->add_flag("--no-graphs", o->noGraphs,
                  "CUDA: measure eager launches first (both modes are measured)");
    if (!compileSettings) o->model.addArtifactWeights(cmd);
    cmd->callback([&action, &global, o] {
      action = [&global, o] { return runBench(*o, global.verbose); };
    });
  }
  // tokenize / detokenize
  {
    auto *cmd = app.add_subcommand("tokenize", "Print the token ids of a text");
    auto path = std::make_shared<std::string>();
    auto text = std::make_shared<std::vector<std::string>>();
    auto noBos = std::make_shared<bool>(false);
    cmd->add_option("--tokenizer", *path, "A tokenizer file")->required();
    cmd->add_flag("--no-bos", *noBos, "Do not put BOS first");
    cmd->add_option("text", *text, "The text (after --)")->required();
    cmd->callback([&action, path, text, noBos] {
      action = [path, text, noBos] {
        std::string joined;
        for (size_t i = 0; i < text->size(); ++i) joined += (i ? " " : "") + (*text)[i];
        std::unique_ptr<Tokenizer> t = loadTokenizerFile(*path);
        bool first = true;
        printIds(t->encode(joined, !*noBos), first);
        std::printf("\n");
        return 0;
      };
    });
  }
  {
    auto *cmd = app.add_subcommand("detokenize", "Print the text of token ids");
    auto path = std::make_shared<std::string>();
    auto ids = std::make_shared<std::vector<std::string>>();
    cmd->add_option("--tokenizer", *path, "A tokenizer file")->required();
    cmd->add_option("ids", *ids, "Token ids: 1 2 3 or 1,2,3")->required();
    cmd->callback([&action, path, ids] {
      action = [path, ids] {
        std::string joined;
        for (const std::string &s : *ids) joined += s + " ";
        std::unique_ptr<Tokenizer> t = loadTokenizerFile(*path);
        std::vector<int32_t> v = parseIds(joined, "ids");
        for (int32_t id : v)
          if (id < 0 || id >= t->vocabSize())
            throw InputError("token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                             std::to_string(t->vocabSize()) + ")");
        std::printf("%s\n", t->decode(v).c_str());
        return 0;
      };
    });
  }
}

} // namespace kvplan::cli
