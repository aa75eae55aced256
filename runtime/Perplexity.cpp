#include "runtime/Perplexity.h"

#include "support/Error.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <stdexcept>
#include <string>
#include <thread>

namespace kvplan {

void Moments::add(double v) {
  sum += v;
  sum2 += v * v;
  ++n;
}

double Moments::mean() const { return n ? sum / double(n) : 0.0; }

double Moments::standardError() const {
  if (n < 2) return 0.0;
  const double var = sum2 / double(n) - mean() * mean();
  return var > 0 ? std::sqrt(var / double(n - 1)) : 0.0;
}

double LogLikelihood::ppl() const { return n ? std::exp(mean()) : 0.0; }

double Divergence::kldQuantile(double q) const {
  if (kld.empty()) return 0.0;
  std::vector<double> sorted = kld;
  std::sort(sorted.begin(), sorted.end());
  const double at = std::clamp(q, 0.0, 1.0) * double(sorted.size() - 1);
  return sorted[size_t(std::lround(at))];
}

int64_t perplexityChunks(const Engine &engine, int64_t tokens, const PerplexityOptions &o) {
  if (o.base == &engine) // one executor's logits would overwrite the other's
    throw std::logic_error("perplexity: the base model needs an engine of its own");
  if (engine.scoreRows() == 0)
    throw InputError("the model's plan has no @score entry point, which scores every token of "
                     "a chunk; compile it with --score-rows N");
  if (o.base && o.base->scoreRows() == 0)
    throw InputError("the base model's plan has no @score entry point, which scores every token "
                     "of a chunk; compile it with --score-rows N");
  if (o.base && o.base->vocabSize() != engine.vocabSize())
    throw InputError("the base model's vocabulary has " + std::to_string(o.base->vocabSize()) +
                     " tokens and the model's " + std::to_string(engine.vocabSize()) +
                     "; compare two versions of one model");
  const int64_t context =
      o.base ? std::min(engine.maxSeqLen(), o.base->maxSeqLen()) : engine.maxSeqLen();
  if (o.ctx < 3 || o.ctx > context)
    throw InputError("--ctx " + std::to_string(o.ctx) + ": a chunk takes from 3 tokens up to "
                     "the " + (o.base ? "models' shorter" : "model's") + " context of " +
                     std::to_string(context) + " (it scores its second half); a longer one "
                     "needs a model compiled with a longer --max-seq");
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

namespace {

/// log(sum(exp(row))) in double, and the row's first likeliest token.
double logSumExp(const float *row, int64_t vocab, int64_t &top) {
  top = 0;
  for (int64_t i = 1; i < vocab; ++i)
    if (row[i] > row[top]) top = i;
  const double best = row[top];
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(double(row[i]) - best);
  return best + std::log(sum);
}

/// KL(base || model) at one position: sum of p_base (log p_base - log p).
double klDivergence(const float *model, double modelLse, const float *base, double baseLse,
                    int64_t vocab) {
  double kl = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    const double lb = double(base[i]) - baseLse;
    kl += std::exp(lb) * (lb - (double(model[i]) - modelLse));
  }
  return std::max(kl, 0.0); // rounding may leave a tiny negative for equal rows
}

/// One scored position's figures, computed from its logits rows alone.
struct Position {
  double nll = 0, baseNll = 0, kl = 0;
  int64_t top = 0, baseTop = 0;
};

/// The positions of one score call (rows [from, m) of `logits`, and of
/// `baseLogits` where given), each on its own, several threads at once (a
/// row is an exp() in double for each token of the vocabulary, two with a
/// base).
std::vector<Position> positions(const float *logits, const float *baseLogits, int64_t vocab,
                                const int32_t *next, int64_t from, int64_t m) {
  std::vector<Position> out(size_t(std::max<int64_t>(m - from, 0)));
  auto work = [&](size_t begin, size_t end) {
    for (size_t k = begin; k < end; ++k) {
      const int64_t i = from + int64_t(k);
      const float *row = logits + i * vocab;
      Position &p = out[k];
      const double lse = logSumExp(row, vocab, p.top);
      p.nll = lse - double(row[next[i]]);
      if (!baseLogits) continue;
      const float *baseRow = baseLogits + i * vocab;
      const double baseLse = logSumExp(baseRow, vocab, p.baseTop);
      p.baseNll = baseLse - double(baseRow[next[i]]);
      p.kl = klDivergence(row, lse, baseRow, baseLse, vocab);
    }
  };
  const size_t threads =
      std::min<size_t>(std::max(1u, std::thread::hardware_concurrency()), out.size());
  std::vector<std::thread> pool;
  const size_t per = threads ? (out.size() + threads - 1) / threads : 0;
  for (size_t t = 1; t < threads; ++t)
    pool.emplace_back(work, std::min(out.size(), t * per), std::min(out.size(), (t + 1) * per));
  work(0, std::min(out.size(), per));
  for (std::thread &t : pool) t.join();
  return out;
}

/// Runs one chunk through the engines' @score, a piece of rows at a time,
/// adding each scored position (j >= first: the token after j) to `res`,
/// in order.
void scoreChunk(Engine &engine, const std::vector<int32_t> &chunk, int64_t chunkIndex,
                int64_t first, const PerplexityOptions &o, PerplexityResult &res) {
  const int64_t vocab = engine.vocabSize(), ctx = int64_t(chunk.size());
  const int seq = engine.open(), baseSeq = o.base ? o.base->open() : -1;
  int64_t rows = engine.scoreRows();
  if (o.base) rows = std::min(rows, o.base->scoreRows());
  for (int64_t at = 0; at < ctx - 1; at += rows) {
    const int64_t m = std::min(rows, ctx - 1 - at); // the last token predicts nothing
    const float *logits = engine.score(seq, chunk.data() + at, m);
    const float *baseLogits = o.base ? o.base->score(baseSeq, chunk.data() + at, m) : nullptr;
    const int64_t from = std::max<int64_t>(0, first - at);
    int64_t j = at + from; // the position scored
    for (const Position &p : positions(logits, baseLogits, vocab, chunk.data() + at + 1, from,
                                       m)) {
      if (!std::isfinite(p.nll) || (o.base && !std::isfinite(p.baseNll)))
        throw InputError(std::string("the ") + (std::isfinite(p.nll) ? "base " : "") +
                         "model's log-probability of the token after position " +
                         std::to_string(j) + " of chunk " + std::to_string(chunkIndex + 1) +
                         " is not finite (its logits hold NaN or infinity)");
      ++j;
      res.model.add(p.nll);
      if (!o.base) continue;
      Divergence &d = res.divergence[0];
      d.base.add(p.baseNll);
      d.kld.push_back(p.kl);
      d.kldMoments.add(p.kl);
      d.lnRatio.add(p.nll - p.baseNll);
      d.sameTop += p.top == p.baseTop;
    }
  }
  engine.close(seq);
  if (o.base) o.base->close(baseSeq);
}

} // namespace

PerplexityResult perplexity(Engine &engine, const std::vector<int32_t> &tokens,
                            const PerplexityOptions &o,
                            const std::function<void(int64_t, double)> &onChunk) {
  PerplexityResult res;
  res.ctx = o.ctx;
  res.chunks = perplexityChunks(engine, int64_t(tokens.size()), o);
  if (o.base) res.divergence.resize(1);
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t c = 0; c < res.chunks; ++c) {
    std::vector<int32_t> chunk(tokens.begin() + c * o.ctx, tokens.begin() + (c + 1) * o.ctx);
    if (o.bos >= 0) chunk[0] = o.bos;
    scoreChunk(engine, chunk, c, o.ctx / 2, o, res);
    res.running.push_back(res.ppl());
    if (onChunk) onChunk(c, res.running.back());
  }
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

} // namespace kvplan
