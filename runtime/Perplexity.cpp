#include "runtime/Perplexity.h"

#include "runtime/Scheduler.h"
#include "support/Error.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <string>

namespace kvplan {

double PerplexityResult::ppl() const { return scored ? std::exp(nll / double(scored)) : 0.0; }

double PerplexityResult::pplError() const {
  if (scored < 2) return 0.0;
  const double mean = nll / double(scored), var = nll2 / double(scored) - mean * mean;
  return var > 0 ? std::sqrt(var / double(scored - 1)) * ppl() : 0.0;
}

int64_t perplexityChunks(const Engine &engine, int64_t tokens, const PerplexityOptions &o) {
  if (engine.scoreRows() == 0)
    throw InputError("the model's plan has no @score entry point, which scores every token of "
                     "a chunk; compile it with --score-rows N");
  if (o.ctx < 3 || o.ctx > engine.maxSeqLen())
    throw InputError("--ctx " + std::to_string(o.ctx) + ": a chunk takes 3 tokens to the "
                     "model's context of " + std::to_string(engine.maxSeqLen()) +
                     " (it scores its second half)");
  if (tokens < o.ctx)
    throw InputError("the text is " + std::to_string(tokens) + " tokens, fewer than one chunk "
                     "of --ctx " + std::to_string(o.ctx) + "; give a longer text or a smaller "
                     "--ctx");
  if (o.maxChunks < 0)
    throw InputError("--chunks " + std::to_string(o.maxChunks) + ": give 0 (every whole chunk "
                     "of the text) or more");
  const int64_t whole = tokens / o.ctx;
  return o.maxChunks > 0 ? std::min(whole, o.maxChunks) : whole;
}

PerplexityResult perplexity(Engine &engine, const std::vector<int32_t> &tokens,
                            const PerplexityOptions &o,
                            const std::function<void(int64_t, double)> &onChunk) {
  PerplexityResult res;
  res.ctx = o.ctx;
  res.chunks = perplexityChunks(engine, int64_t(tokens.size()), o);
  const int64_t first = o.ctx / 2;
  // Each chunk's -log p of its scored tokens, kept until the chunks before
  // it are in: the sums then add in chunk order, whatever order they end in.
  std::vector<std::vector<double>> nlls(size_t(res.chunks));
  std::vector<char> done(size_t(res.chunks), 0);
  std::string failure;
  int64_t next = 0; // the first chunk not yet added
  const auto t0 = std::chrono::steady_clock::now();
  Scheduler scheduler(engine, nullptr);
  for (int64_t c = 0; c < res.chunks; ++c) {
    GenerationRequest req;
    req.prompt.assign(tokens.begin() + c * o.ctx, tokens.begin() + (c + 1) * o.ctx);
    if (o.bos >= 0) req.prompt[0] = o.bos;
    req.maxNewTokens = 0;
    req.promptLogprobs = 0;
    req.onEvent = [&, c](const TokenEvent &e) {
      if (!e.finished) return;
      if (e.reason == FinishReason::error || !e.promptLogprobs ||
          int64_t(e.promptLogprobs->size()) != o.ctx - 1) {
        if (failure.empty())
          failure = "chunk " + std::to_string(c + 1) + " failed: " +
                    (e.error.empty() ? std::string("no log-probabilities came back") : e.error);
        return;
      }
      // Entry j: the log-probability of token j + 1 after tokens 0..j.
      for (int64_t j = first; j < o.ctx - 1; ++j)
        nlls[size_t(c)].push_back(-(*e.promptLogprobs)[size_t(j)].chosen.logprob);
      done[size_t(c)] = 1;
      for (; next < res.chunks && done[size_t(next)]; ++next) {
        for (double v : nlls[size_t(next)]) {
          res.nll += v;
          res.nll2 += v * v;
          ++res.scored;
        }
        nlls[size_t(next)] = {};
        res.running.push_back(res.ppl());
        if (onChunk) onChunk(next, res.running.back());
      }
    };
    scheduler.submit(std::move(req));
  }
  scheduler.runUntilIdle();
  if (!failure.empty()) throw InputError(failure);
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

} // namespace kvplan
