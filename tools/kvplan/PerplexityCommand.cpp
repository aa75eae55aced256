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
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>

namespace kvplan::cli {

namespace {

struct PerplexityCliOptions {
  ModelOptions model;
  std::string file, base;
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

void requireScore(const Runnable &r, const Engine &engine) {
  if (engine.scoreRows() == 0)
    throw InputError(r.source + ": the plan has no @score entry point, which scores every "
                     "token of a chunk; recompile the model with --score-rows N (64, say)");
}

/// --base: the model to compare with, loaded as the model is (its settings
/// from its own file). The text's tokens are the model's; the base's
/// tokenizer, where it has one, must split the text the same way.
std::unique_ptr<Runnable> loadBase(const PerplexityCliOptions &o, const std::string &text,
                                   const std::vector<int32_t> &tokens, bool verbose) {
  ModelOptions b;
  b.model = o.base;
  b.serveScoreRows = kPerplexityScoreRows;
  auto base = std::make_unique<Runnable>(loadRunnable(b, verbose));
  if (base->tokenizer && base->tokenizer->encode(text, true) != tokens)
    throw InputError(o.base + ": its tokenizer splits the text otherwise than " + o.model.model +
                     "'s; the divergence compares the two models on the same tokens");
  return base;
}

nlohmann::ordered_json resultJson(const PerplexityCliOptions &o, size_t tokens,
                                  const PerplexityResult &res) {
  nlohmann::ordered_json j = {{"file", o.file},
                              {"tokens", tokens},
                              {"ctx", res.ctx},
                              {"chunks", res.chunks},
                              {"scored", res.scored()},
                              {"ppl", res.ppl()},
                              {"ppl_error", res.pplError()},
                              {"mean_nll", res.model.mean()},
                              {"running_ppl", res.running}};
  if (!res.divergence.empty()) {
    const Divergence &d = res.divergence[0];
    j["base"] = {{"model", o.base},
                 {"ppl", d.base.ppl()},
                 {"ppl_error", d.base.pplError()},
                 {"ln_ppl_ratio", d.meanLnRatio()},
                 {"ln_ppl_ratio_error", d.meanLnRatioError()},
                 {"kld_mean", d.meanKld()},
                 {"kld_mean_error", d.meanKldError()},
                 {"kld_median", d.kldQuantile(0.5)},
                 {"kld_99", d.kldQuantile(0.99)},
                 {"kld_99_9", d.kldQuantile(0.999)},
                 {"kld_max", d.kldQuantile(1.0)},
                 {"same_top", double(d.sameTop) / double(d.kld.size())}};
  }
  j["seconds"] = res.seconds;
  return j;
}

void printDivergence(const Divergence &d) {
  const double n = double(d.kld.size()), same = double(d.sameTop) / n;
  std::printf("base PPL = %.4f +/- %.5f\n", d.base.ppl(), d.base.pplError());
  std::printf("ln(PPL / base PPL) = %.5f +/- %.5f\n", d.meanLnRatio(), d.meanLnRatioError());
  std::printf("KL divergence from the base: mean %.6f +/- %.6f, median %.6f, 99%% %.6f, "
              "99.9%% %.6f, max %.6f\n",
              d.meanKld(), d.meanKldError(), d.kldQuantile(0.5), d.kldQuantile(0.99),
              d.kldQuantile(0.999), d.kldQuantile(1.0));
  std::printf("same top token as the base: %.2f +/- %.2f %%\n", 100.0 * same,
              n > 1 ? 100.0 * std::sqrt(same * (1.0 - same) / (n - 1.0)) : 0.0);
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
  std::unique_ptr<Runnable> base = o.base.empty() ? nullptr : loadBase(o, text, tokens, verbose);
  if (base) checkExecFlags(*base, exec);
  Engine engine(makeExecutor(r, exec), {false});
  requireScore(r, engine);
  std::unique_ptr<Engine> baseEngine;
  if (base) {
    baseEngine = std::make_unique<Engine>(makeExecutor(*base, exec), EngineOptions{false});
    requireScore(*base, *baseEngine);
  }
  PerplexityOptions po;
  po.ctx = o.ctx ? o.ctx : std::min(kDefaultCtx, engine.maxSeqLen());
  if (!o.ctx && baseEngine) po.ctx = std::min(po.ctx, baseEngine->maxSeqLen());
  po.maxChunks = o.chunks;
  po.bos = tok.bosId();
  po.base = baseEngine.get();
  const int64_t chunks = perplexityChunks(engine, int64_t(tokens.size()), po);
  std::fprintf(stderr,
               "perplexity: %s: %s tokens; %s chunk%s of %lld tokens, each scoring its last "
               "%lld (llama.cpp's llama-perplexity's way); %s\n",
               o.file.c_str(), withCommas(int64_t(tokens.size())).c_str(),
               withCommas(chunks).c_str(), chunks == 1 ? "" : "s", (long long)po.ctx,
               (long long)(po.ctx - po.ctx / 2 - 1), engine.executor().describe().c_str());
  const PerplexityResult res =
      perplexity(engine, tokens, po, [&](int64_t chunk, double running) {
        if (o.json) return;
        std::printf("[%lld]%.4f,", (long long)chunk + 1, running);
        std::fflush(stdout);
      });
  if (o.json) {
    std::printf("%s\n", resultJson(o, tokens.size(), res).dump(2).c_str());
  } else {
    std::printf("\nPPL = %.4f +/- %.5f\n", res.ppl(), res.pplError());
    if (!res.divergence.empty()) printDivergence(res.divergence[0]);
  }
  std::fprintf(stderr, "perplexity: %s tokens scored in %.2f s (%.1f tokens/s of chunks run)\n",
               withCommas(res.scored()).c_str(), res.seconds,
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
                  "512, or the model's context when shorter, and the base's)");
  cmd->add_option("--chunks", o->chunks, "Score at most this many chunks (default: all)");
  cmd->add_option("--base", o->base,
                  "A model to compare with (the same model in more precision, say; an artifact "
                  "or a model): its perplexity, and at each scored token the KL divergence of "
                  "the model's distribution from the base's and whether their likeliest tokens "
                  "agree (llama.cpp's --kl-divergence)");
  addExecFlags(cmd, o->threads, o->noGraphs);
  cmd->add_flag("--json", o->json, "Print the result as one JSON object");
  o->model.addRunnableWeights(cmd);
  cmd->callback([&action, &global, o] {
    action = [&global, o] { return runPerplexity(*o, global.verbose); };
  });
}

} // namespace kvplan::cli
