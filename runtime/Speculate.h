// Speculative decoding: proposals of draft tokens (prompt lookup, or a
// smaller draft model), the rule that accepts them against the target's
// verify logits while keeping the target's distribution, and a generator
// that runs one sequence with them (docs/speculative.md).
#pragma once

#include "runtime/Engine.h"
#include "runtime/Sampler.h"

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace kvplan {

/// Draft tokens and, for a proposer that samples them, the distribution
/// each was drawn from ([tokens.size(), vocab]); empty `probs` means each
/// token is certain (a point mass), as prompt lookup's are.
struct Draft {
  std::vector<int32_t> tokens;
  std::vector<float> probs;
};

/// Proposes draft tokens to continue a sequence; `stream` names the
/// sequence (a proposer may keep state per stream, as a draft model keeps
/// its KV cache).
class Proposer {
public:
  virtual ~Proposer() = default;
  virtual std::string name() const = 0;
  /// Up to `max` tokens to follow `context` (every token so far, the one
  /// not yet run included). May propose none.
  virtual Draft propose(uint64_t stream, const std::vector<int32_t> &context, int64_t max) = 0;
  /// The stream is done: drop what is kept for it.
  virtual void release(uint64_t stream) {}
};

/// Prompt lookup: the longest recent n-gram (maxNgram down to minNgram
/// tokens) ending the context that also occurs earlier in it proposes the
/// tokens that followed its latest earlier occurrence. No second model.
class PromptLookup : public Proposer {
public:
  explicit PromptLookup(int64_t maxNgram = 3, int64_t minNgram = 1)
      : maxNgram(maxNgram), minNgram(minNgram) {}
  std::string name() const override { return "prompt-lookup"; }
  Draft propose(uint64_t stream, const std::vector<int32_t> &context, int64_t max) override;

private:
  int64_t maxNgram, minNgram;
};

/// A second, smaller model with the same tokenizer proposes by decoding
/// ahead (greedily, or sampling with the target's settings). Its engine
/// keeps one sequence per stream and rolls it back to what the target kept.
class DraftModel : public Proposer {
public:
  /// Throws InputError when the draft's vocabulary differs from the
  /// target's (`draftName` names it in the message).
  DraftModel(Engine &draft, int64_t targetVocab, const SamplingOptions &sampling,
             const std::string &draftName);
  std::string name() const override { return "draft model"; }
  Draft propose(uint64_t stream, const std::vector<int32_t> &context, int64_t max) override;
  void release(uint64_t stream) override;

private:
  struct Stream {
    int seq = -1;
    std::vector<int32_t> tokens; // what the draft's cache holds
  };
  const float *catchUp(Stream &s, const std::vector<int32_t> &context);
  void draftAhead(Stream &s, const std::vector<int32_t> &context, int64_t max, Draft &d);
  Engine &engine;
  SamplingOptions sampling;
  std::mt19937_64 rng;
  std::map<uint64_t, Stream> streams;
};

/// samplingProbabilities (runtime/Sampler.h) gives p and q from logits.

/// How many draft tokens a verify step keeps, and the token after them.
struct Verdict {
  int64_t accepted = 0;
  int32_t next = -1;
};

/// The speculative sampling rule on distributions: draft i is kept with
/// probability min(1, p_i(x) / q_i(x)); at the first rejection the next
/// token is drawn from the normalised residual max(0, p_i - q_i); when all
/// are kept, from p_k. `p` is [k + 1, vocab], `q` [k, vocab] or null (each
/// draft a point mass). The tokens it yields follow the target's p exactly.
Verdict speculativeSample(const int32_t *drafts, int64_t k, const double *p, const float *q,
                          int64_t vocab, std::mt19937_64 &rng);

/// The generator the acceptance rule draws from for a request sampled with
/// `o` (apart from the Sampler's, so that its tokens stay the same).
std::mt19937_64 acceptanceRng(const SamplingOptions &o);

/// One verify step's verdict from the target's [k + 1, vocab] logits:
/// greedy keeps drafts while each is the argmax (so the output equals
/// greedy decoding's); otherwise speculativeSample on the sampling
/// distributions.
Verdict judgeDrafts(const Draft &d, const float *logits, int64_t vocab,
                    const SamplingOptions &o, std::mt19937_64 &rng);

struct SpeculationStats {
  int64_t verifySteps = 0, decodeSteps = 0;
  int64_t proposed = 0, accepted = 0;
  /// Tokens a verify step yields on average: the accepted drafts and the
  /// token after them.
  double tokensPerVerify() const {
    return verifySteps ? double(accepted + verifySteps) / double(verifySteps) : 0.0;
  }
};

/// Generates for one sequence with speculation: prefill, then verify steps
/// over each proposal (a plain decode step when there is none), rolling the
/// cache back past what is rejected. Tokens go to `onToken` as they are
/// kept; generation stops at `maxNew` tokens, a stop id (not passed on) or a
/// full context. Draft tokens per step: at most `k` (0: the plan's).
struct SpeculativeRequest {
  std::vector<int32_t> prompt;
  int64_t maxNew = 256;
  std::vector<int32_t> stopIds;
  SamplingOptions sampling;
  int64_t k = 0;
};
SpeculationStats generateSpeculatively(Engine &engine, Proposer &proposer,
                                       const SpeculativeRequest &req,
                                       const std::function<void(int32_t)> &onToken);

} // namespace kvplan
