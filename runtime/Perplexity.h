// A text's perplexity under a model, as llama.cpp's llama-perplexity
// computes it, so that the two can be compared on the same weights: the
// text's tokens (BOS first) cut into chunks of `ctx` tokens, each chunk's
// first token replaced by BOS and the chunk run from an empty cache, and
// only the second half of each chunk scored (the token after position j
// for j from ctx / 2 to ctx - 2), so that every scored token has at least
// half a chunk of context. Each chunk runs through the plan's @score entry
// point (every row's logits). With a base model beside (the same model in
// more precision, say), each scored position's distribution is also
// compared with the base's: the Kullback-Leibler divergence from it and
// whether the likeliest token is the same, as llama.cpp's --kl-divergence.
#pragma once

#include "runtime/Engine.h"

#include <cstdint>
#include <functional>
#include <vector>

namespace kvplan {

struct PerplexityOptions {
  int64_t ctx = 0;       // tokens a chunk (3 to the model's context)
  int64_t maxChunks = 0; // at most this many chunks (0: every whole chunk)
  int32_t bos = -1;      // replaces each chunk's first token (-1: none)
  /// The model to compare with (same vocabulary), or null.
  Engine *base = nullptr;
};

/// A running mean: the sum of values and of their squares.
struct Moments {
  double sum = 0, sum2 = 0;
  int64_t n = 0;
  void add(double v);
  double mean() const;
  /// The standard error of the mean (0 for fewer than 2 values or no spread).
  double standardError() const;
};

/// -log p over the scored tokens.
struct LogLikelihood : Moments {
  /// exp(mean -log p).
  double ppl() const;
  /// llama.cpp's "+/-": the standard error of the mean -log p, times the
  /// perplexity.
  double pplError() const { return standardError() * ppl(); }
};

/// The comparison with the base model, over the scored positions.
struct Divergence {
  LogLikelihood base;      // the base model's own
  std::vector<double> kld; // KL(base || model) at each position
  Moments kldMoments;      // of the same
  Moments lnRatio;         // nll - base nll: ln(PPL / base PPL) is its mean
  int64_t sameTop = 0;     // positions whose likeliest tokens agree
  double meanKld() const { return kldMoments.mean(); }
  double meanKldError() const { return kldMoments.standardError(); }
  /// The q-th quantile (0 to 1) of the divergences, nearest rank.
  double kldQuantile(double q) const;
  double meanLnRatio() const { return lnRatio.mean(); }
  double meanLnRatioError() const { return lnRatio.standardError(); }
};

struct PerplexityResult {
  int64_t ctx = 0, chunks = 0;
  LogLikelihood model;
  std::vector<double> running; // after chunk i: the perplexity of chunks 0..i
  std::vector<Divergence> divergence; // one entry with a base model
  double seconds = 0;
  int64_t scored() const { return model.n; }
  double ppl() const { return model.ppl(); }
  double pplError() const { return model.pplError(); }
};

/// How many chunks perplexity() scores: every whole chunk of `tokens`, at
/// most maxChunks. Throws InputError when `tokens` hold no whole chunk,
/// `ctx` is outside 3 to the engine's context (or the base's), maxChunks is
/// negative, an engine has no @score entry point, or the base's vocabulary
/// is not the model's.
int64_t perplexityChunks(const Engine &engine, int64_t tokens, const PerplexityOptions &options);

/// Throws InputError as perplexityChunks does, or when a chunk fails (the
/// engine's message). `onChunk(i, running)` is called after each chunk.
PerplexityResult perplexity(Engine &engine, const std::vector<int32_t> &tokens,
                            const PerplexityOptions &options,
                            const std::function<void(int64_t, double)> &onChunk = {});

} // namespace kvplan
