// Choosing the next token from logits: greedy, or temperature with top-k and
// top-p, from a seeded generator so a run is reproducible.
#pragma once

#include "plan/CudaProgram.h"
#include "runtime/JsonGrammar.h"
#include "runtime/JsonSchema.h"

#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace kvplan {

class Tokenizer;

struct SamplingOptions {
  double temperature = 0.0; // 0: greedy
  int64_t topK = 0;         // 0: no limit
  double topP = 1.0;        // in (0, 1]
  uint64_t seed = 0;
  // Penalties on the logits before the rest, as vLLM's: a token generated
  // n times so far loses frequencyPenalty x n + presencePenalty (OpenAI's,
  // in [-2, 2]); a token of the prompt or generated has its logit divided
  // by repetitionPenalty when positive, multiplied when not (CTRL's, > 0).
  double presencePenalty = 0, frequencyPenalty = 0, repetitionPenalty = 1;
  // Added to the named tokens' logits after the penalties (OpenAI's
  // logit_bias, each in [-100, 100]; -100 all but bans a token).
  std::vector<std::pair<int32_t, double>> logitBias = {};
  // JSON mode (runtime/JsonGrammar.h): after the biases, only tokens that
  // keep the generated text a prefix of one JSON object. Null: off.
  std::shared_ptr<const JsonVocabulary> json = nullptr;
  // Structured output (runtime/JsonSchema.h): with `json` set, only tokens
  // that keep the text a prefix of an object this schema accepts (null:
  // any object).
  std::shared_ptr<const JsonSchema> schema = nullptr;
  // min-p (vLLM's and llama.cpp's), in [0, 1]: after the temperature, only
  // the tokens at least minP times as likely as the most likely one; top-k
  // and top-p then apply to those (vLLM's order). 0: off.
  double minP = 0;
  // vLLM's min_tokens: until this many tokens are drawn, `endTokens` (the
  // request's stop ids, which Scheduler::submit sets) are never drawn.
  int64_t minTokens = 0;
  std::vector<int32_t> endTokens = {};
  // vLLM's allowed_token_ids: when not empty, only these may be drawn.
  std::vector<int32_t> allowedTokens = {};
  // vLLM's bad_words as token sequences: the last token of each is never
  // drawn right after the others were (a one-token word never is).
  std::vector<std::vector<int32_t>> badWords = {};
  bool greedy() const { return temperature == 0 || topK == 1; }
  /// Penalties, biases, allowed tokens, bad words, JSON mode or min_tokens: the row is
  /// changed on the host before the draw (mostly by rules that depend on
  /// the tokens drawn so far), which the speculative acceptance rule does
  /// not know: such a request is not speculated on.
  bool changesRow() const {
    return presencePenalty != 0 || frequencyPenalty != 0 || repetitionPenalty != 1 ||
           !logitBias.empty() || json || minTokens > 0 || !allowedTokens.empty() ||
           !badWords.empty();
  }
};

/// One row's sampling: the options and the uniform draw in [0, 1) that
/// picks its token (0 for greedy).
struct RowSampling {
  double temperature = 0, topP = 1, uniform = 0;
  int64_t topK = 0;
  double minP = 0; // only where the candidates hold every token it keeps
  bool greedy() const { return temperature == 0 || topK == 1; }
  /// A logit's unnormalised probability at the temperature, relative to the
  /// row's best logit.
  double weight(double logit, double best) const { return std::exp((logit - best) / temperature); }
  /// Whether min-p keeps a token of that weight (the one test of the
  /// Sampler and of the tensor-parallel ranks' candidates).
  bool minPKeeps(double weight) const { return !(weight < minP); }
};

/// The token `row` draws among `count` (logit, token id) candidates, as the
/// Sampler draws it from a whole row of logits when the candidates hold
/// every token the options can draw: the top-k when top-k is set, else the
/// nucleus (with top-p) or every token; with min-p the whole row. `rowMass`
/// is the whole row's sum of exp((logit - its best logit) / temperature)
/// when the candidates are only part of it and top-p applies, else 0.
/// Reorders `cands`.
int32_t pickCandidate(const RowSampling &row, std::pair<float, int32_t> *cands, size_t count,
                      double rowMass);

/// The probabilities sampling with `o` draws each token of a row of logits
/// from (`out`: vocab of them): softmax at the temperature over the tokens
/// min-p keeps, the top-k of them, then the top-p prefix, renormalised, by
/// the same rule sample() draws with; greedy is a point mass on the argmax.
void samplingProbabilities(const float *logits, int64_t vocab, const SamplingOptions &o,
                           std::vector<double> &out);

class Sampler {
public:
  /// Throws InputError for a negative temperature, a negative top-k, a
  /// top-p outside (0, 1], a min-p outside [0, 1], a negative min_tokens,
  /// presence or frequency penalties outside [-2, 2], a repetition penalty
  /// not above 0, or a bias outside [-100, 100] or for a negative id (ids
  /// past the vocabulary: Scheduler::submit).
  explicit Sampler(const SamplingOptions &options);
  /// With a repetition penalty: adds prompt tokens, which it counts beside
  /// the ones this sampler draws (it keeps those itself).
  void setPrompt(const std::vector<int32_t> &prompt);
  /// The next token for one row of logits (after the penalties, and in
  /// JSON mode one that keeps the text a prefix of a JSON object).
  int32_t sample(const float *logits, int64_t vocab);
  /// JSON mode: whether the tokens drawn so far spell a whole object.
  bool jsonComplete() const { return opts.json && schemaState.complete(); }
  /// The same choice made on the device (runtime/cuda): the options and
  /// this step's draw from the same generator. Not with changesRow(), whose
  /// row is changed on the host first (sample()).
  DeviceSamplingParams deviceRow();
  const SamplingOptions &options() const { return opts; }
  bool greedy() const { return opts.greedy(); }
  /// This row's options and draw, for sampling done elsewhere (the ranks of
  /// a tensor-parallel plan: runtime/ShardedSampling.h); sample() would
  /// have drawn the same number.
  RowSampling row();

private:
  /// The row with the penalties applied, in `penalizedRow`.
  const float *penalize(const float *logits, int64_t vocab);
  SamplingOptions opts;
  std::mt19937_64 rng;
  std::vector<std::pair<float, int32_t>> candidates; // reused: no allocation per token
  std::map<int32_t, int64_t> drawn;    // with penalties: each token drawn, how often
  int64_t draws = 0;                   // tokens sample() drew (for min_tokens)
  std::vector<int32_t> history;        // with bad words: the tokens drawn, in order
  std::set<int32_t> prompt;            // with a repetition penalty: the prompt's tokens
  std::vector<float> penalizedRow;
  SchemaState schemaState; // JSON mode: where the text drawn so far is against the schema
};

/// vLLM's bad_words as SamplingOptions::badWords, tokenized as vLLM does:
/// each word (leading white space dropped) alone, and after a space where
/// that gives a different first token and as many tokens (the word inside
/// a text). Throws InputError for a word that is only white space or has
/// no tokens.
std::vector<std::vector<int32_t>> badWordSequences(const std::vector<std::string> &words,
                                                   const Tokenizer &tok);

/// The index of the largest logit (the lowest index among equals).
int32_t argmax(const float *logits, int64_t vocab);

/// A token and its log-probability.
struct TokenLogprob {
  int32_t token = -1;
  double logprob = 0;
  int64_t rank = 0; // 1 + how many tokens of the row are likelier (vLLM's)
};

/// What a request that asks for log-probabilities gets with each token:
/// its log-probability under the model (the log-softmax of its raw logits,
/// before temperature, top-k and top-p, as vLLM's) and the `top` most
/// likely tokens, most likely first (lower ids first among equals).
struct TokenLogprobs {
  TokenLogprob chosen;
  std::vector<TokenLogprob> top;
};

/// At most this many most likely tokens (OpenAI's chat API allows 20).
constexpr int64_t kMaxTopLogprobs = 20;

/// `token`'s log-probability in a row of `vocab` logits and the `top` most
/// likely (0 to kMaxTopLogprobs): the exponentials of the log-sum-exp in
/// float (AVX2 where the CPU kernels use it), summed in double; within
/// about 1e-7 of an exact log-softmax.
TokenLogprobs tokenLogprobs(const float *logits, int64_t vocab, int32_t token, int64_t top);

} // namespace kvplan
