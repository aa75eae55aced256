// kvplan perplexity: a text file's perplexity under a model, computed as
// llama.cpp's llama-perplexity computes it (runtime/Perplexity.h), so that a
// model's quantizations, and kvplan and llama.cpp on the same GGUF, can be
// compared by one number.
#include "tools/kvplan/Commands.h"
#include "tools/kvplan/Runnable.h"

#include "runtime/Engine.h"
#include "runtime/Perplexity.h"
#include "support/Error.h"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

namespace kvplan::cli {

namespace {

struct PerplexityCliOptions {
  ModelOptions model;
  std::string file;
  int64_t ctx = 0, chunks = 0;
  int threads = 0;
  bool noGraphs = false, json = false;
};

/// Rows of the @score entry point a model compiled in memory gets when its
/// file gives none: a chunk of 512 tokens takes 8 calls.
constexpr int64_t kPerplexityScoreRows = 64;
/// --ctx's default, at most the model's context (llama.cpp's usual -c 512).
constexpr int64_t kDefaultCtx = 512;

std::string readText(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path + ": cannot read it (" + std::strerror(errno) + ")");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

int runPerplexity(const PerplexityCliOptions &o, bool verbose) {
  checkThreadsFlag(o.threads);
  const std::string text = readText(o.file); // before the model loads
  ModelOptions target = o.model;
  target.serveScoreRows = kPerplexityScoreRows;
  Runnable r = loadRunnable(target, verbose);
  const Tokenizer &tok = requireTokenizer(r);
  const ExecOptions exec{o.threads, !o.noGraphs};
  checkExecFlags(r, exec);
  const std::vector<int32_t> tokens = tok.encode(text, true);
  Engine engine(makeExecutor(r, exec), {false});
  PerplexityOptions po;
  po.ctx = o.ctx ? o.ctx : std::min(kDefaultCtx, engine.maxSeqLen());
  po.maxChunks = o.chunks;
  po.bos = tok.bosId();
  if (engine.scoreRows() == 0)
    throw InputError(r.source + ": the plan has no @score entry point, which scores every "
                     "token of a chunk; recompile the model with --score-rows N (64, say)");
  const int64_t chunks = perplexityChunks(engine, int64_t(tokens.size()), po);
  std::fprintf(stderr,
               "perplexity: %s: %s tokens; %s chunks of %lld tokens, each scoring its last "
               "%lld (llama.cpp's llama-perplexity's way); %s\n",
               o.file.c_str(), withCommas(int64_t(tokens.size())).c_str(),
               withCommas(chunks).c_str(), (long long)po.ctx,
               (long long)(po.ctx - po.ctx / 2 - 1), engine.executor().describe().c_str());
  const PerplexityResult res =
      perplexity(engine, tokens, po, [&](int64_t chunk, double running) {
        if (o.json) return;
        std::printf("[%lld]%.4f,", (long long)chunk + 1, running);
        std::fflush(stdout);
      });
  if (o.json) {
    nlohmann::ordered_json j = {{"file", o.file},
                                {"tokens", tokens.size()},
                                {"ctx", res.ctx},
                                {"chunks", res.chunks},
                                {"scored", res.scored},
                                {"ppl", res.ppl()},
                                {"ppl_error", res.pplError()},
                                {"mean_nll", res.nll / double(res.scored)},
                                {"running_ppl", res.running},
                                {"seconds", res.seconds}};
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("\nPPL = %.4f +/- %.5f\n", res.ppl(), res.pplError());
  }
  std::fprintf(stderr, "perplexity: %s tokens scored in %.2f s (%.1f tokens/s of chunks run)\n",
               withCommas(res.scored).c_str(), res.seconds,
               double(res.chunks * res.ctx) / res.seconds);
  return 0;
}

} // namespace

void addPerplexityCommand(CLI::App &app, const GlobalOptions &global, Action &action) {
  auto *cmd = app.add_subcommand(
      "perplexity", "A text file's perplexity under a model (as llama.cpp's llama-perplexity)");
  auto o = std::make_shared<PerplexityCliOptions>();
  o->model.addRunnable(cmd);
  cmd->add_option("-f,--file", o->file, "The text to score (UTF-8)")->required();
  cmd->add_option("--ctx", o->ctx,
                  "Tokens a chunk: each starts with BOS and scores its second half (default: "
                  "512, or the model's context when shorter)");
  cmd->add_option("--chunks", o->chunks, "Score at most this many chunks (default: all)");
  addExecFlags(cmd, o->threads, o->noGraphs);
  cmd->add_flag("--json", o->json, "Print the result as one JSON object");
  o->model.addRunnableWeights(cmd);
  cmd->callback([&action, &global, o] {
    action = [&global, o] { return runPerplexity(*o, global.verbose); };
  });
}

} // namespace kvplan::cli
