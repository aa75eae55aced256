// A text's perplexity under a model, as llama.cpp's llama-perplexity
// computes it, so that the two can be compared on the same weights: the
// text's tokens (BOS first) cut into chunks of `ctx` tokens, each chunk's
// first token replaced by BOS and the chunk run from an empty cache, and
// only the second half of each chunk scored (the token after position j
// for j from ctx / 2 to ctx - 2), so that every scored token has at least
// half a chunk of context. The prompts run through the scheduler's scoring
// (the plan's @score entry point, every row's logits).
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
};

struct PerplexityResult {
  int64_t ctx = 0, chunks = 0;
  int64_t scored = 0;       // tokens scored: chunks x (ctx - ctx / 2 - 1)
  double nll = 0, nll2 = 0; // sums of -log p and of its square over them
  std::vector<double> running; // after chunk i: the perplexity of chunks 0..i
  double seconds = 0;
  /// exp(mean -log p).
  double ppl() const;
  /// llama.cpp's "+/-": the standard error of the mean -log p, times the
  /// perplexity (0 for fewer than 2 tokens or no spread).
  double pplError() const;
};

/// How many chunks perplexity() scores: every whole chunk of `tokens`, at
/// most maxChunks. Throws InputError when `tokens` hold no whole chunk,
/// `ctx` is outside 3 to the engine's context, maxChunks is negative or the
/// engine has no @score entry point.
int64_t perplexityChunks(const Engine &engine, int64_t tokens, const PerplexityOptions &options);

/// Throws InputError as perplexityChunks does, or when a chunk fails (the
/// engine's message). `onChunk(i, running)` is called in
/// chunk order as the chunks finish.
PerplexityResult perplexity(Engine &engine, const std::vector<int32_t> &tokens,
                            const PerplexityOptions &options,
                            const std::function<void(int64_t, double)> &onChunk = {});

} // namespace kvplan
