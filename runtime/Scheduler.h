// Serving many requests on one engine: iteration-level (continuous)
// batching with chunked prefill, the prefix cache and preemption.
//
// Each step() admits waiting requests (first come, first served) while
// fewer than max_batch run, then spends a token budget: one decode row for
// every running request that has a token to append (one decode call), the
// rest on prefill chunks of the others, oldest first, so a long prompt is
// cut into pieces between decode steps instead of stalling them. A request
// that finishes or is cancelled leaves at once; its row is taken on the next
// step. When the KV cache cannot give every running request its next page,
// the newest is preempted: its pages go back (the full ones into the prefix
// cache), its tokens are kept, and it waits at the head of the queue to be
// prefilled again, mostly from the prefix cache. docs/serving.md has the
// picture.
//
// Threads: submit(), cancel() and wake() may be called from any thread;
// step() and every callback run on the thread that steps, and idle(),
// waiting(), running(), stats() and engine() belong to that thread too.
#pragma once

#include "formats/Tokenizer.h"
#include "runtime/Engine.h"
#include "runtime/Sampler.h"

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace kvplan {

enum class FinishReason {
  length,    // max_new_tokens generated
  stop,      // a stop token id or stop string
  cancelled, // cancel()
  error,     // the engine failed while the request ran (TokenEvent::error says how)
};
const char *finishReasonName(FinishReason r);

/// What a request's callback receives: each generated token as it comes
/// (`token` >= 0, with the text it completes where the scheduler has a
/// tokenizer), then one last event with `finished` set and `token` -1.
/// Text is held back while it could be the start of a stop string, and a
/// stop string and what follows it are never sent. A stop token id is not
/// sent either.
struct TokenEvent {
  uint64_t request = 0;
  int32_t token = -1;
  std::string text;
  bool finished = false;
  FinishReason reason = FinishReason::length;
  std::string error; // reason error: the engine's message
  /// Reason stop: the stop id that ended the request (-1: none), or the
  /// stop string ("": none; the JSON object closed).
  int32_t stopToken = -1;
  std::string stopString;
  /// With GenerationRequest::logprobs: the token's log-probability and the
  /// most likely tokens at its position.
  std::optional<TokenLogprobs> logprobs;
  /// With GenerationRequest::promptLogprobs, on the request's first event
  /// (its first token's, or the finish when none came): entry i for prompt
  /// token i + 1 (the first token has none).
  std::optional<std::vector<TokenLogprobs>> promptLogprobs;
  /// On the finishing event: the prompt tokens the prefix cache held when
  /// the request was first admitted (their keys and values were not
  /// computed again), as OpenAI's usage reports cached_tokens.
  int64_t cachedPromptTokens = 0;
};

struct GenerationRequest {
  std::vector<int32_t> prompt;
  SamplingOptions sampling;
  int64_t maxNewTokens = 256;
  std::vector<int32_t> stopIds;          // e.g. the model's end-of-sequence ids
  // (with sampling.minTokens, none is drawn, nor a stop string taken, until
  // that many tokens are generated)
  std::vector<std::string> stopStrings;  // needs a tokenizer
  /// Those of stopIds and stopStrings whose text is sent, up to and with
  /// the stop (vLLM's include_stop_str_in_output); the others' is not.
  std::vector<int32_t> sentStopIds = {};
  std::vector<std::string> sentStopStrings = {};
  /// -1: none. 0 to kMaxTopLogprobs: each generated token's event carries
  /// its log-probability and this many most likely tokens (runtime/Sampler.h).
  int64_t logprobs = -1;
  /// -1: none. 0 to kMaxTopLogprobs: the prompt's log-probabilities (each
  /// token's given the ones before it, with this many most likely tokens),
  /// for which the prompt runs through the plan's @score entry point
  /// instead of prefill, never from the prefix cache. With it,
  /// maxNewTokens may be 0: the prompt is scored and nothing generated.
  int64_t promptLogprobs = -1;
  std::function<void(const TokenEvent &)> onEvent;
};

class Proposer;

struct SchedulerOptions {
  /// Tokens per step: decode rows plus prefill tokens. 0: max_batch plus
  /// one prefill chunk. At least max_batch + 1, so prefill always moves.
  int64_t tokenBudget = 0;
  /// Speculative decoding (runtime/Speculate.h): a running request the
  /// proposer has drafts for takes a verify call of up to `speculate`
  /// drafts (0: all the engine's @verify checks) instead of a decode row;
  /// the others, and every request whose sampler changes its row
  /// (SamplingOptions::changesRow: penalties, JSON, min_tokens), decode together as
  /// before. Null: no speculation.
  Proposer *proposer = nullptr;
  int64_t speculate = 0;
};

struct SchedulerStats {
  int64_t steps = 0, decodeCalls = 0, prefillCalls = 0;
  int64_t decodeRows = 0;      // summed over decode calls
  int64_t prefillTokens = 0;   // run through prefill (prefix-cache hits not counted)
  int64_t promptTokens = 0;    // of admitted requests, at their first admission
  int64_t cachedPromptTokens = 0; // of those, taken from the prefix cache
  int64_t generatedTokens = 0;
  int64_t preemptions = 0;
  int64_t finished = 0;
  int64_t verifyCalls = 0, draftsProposed = 0, draftsAccepted = 0; // speculation
  int64_t scoreCalls = 0, scoredTokens = 0; // prompts run through @score
  double engineSeconds = 0;    // inside Engine calls (the executor, mostly)
  double stepSeconds = 0;      // all of step(), the requests' callbacks included
  double prefixHitRate() const {
    return promptTokens ? double(cachedPromptTokens) / double(promptTokens) : 0;
  }
};

class Scheduler {
public:
  /// `tokenizer` (may be null) decodes text for events and stop strings.
  /// Throws InputError for a bad token budget.
  Scheduler(Engine &engine, const Tokenizer *tokenizer, const SchedulerOptions &options = {});
  ~Scheduler();
  Scheduler(const Scheduler &) = delete;
  Scheduler &operator=(const Scheduler &) = delete;

  /// Queues a request and returns its id (from 1). Throws InputError, and
  /// queues nothing, when it could never run: an empty prompt, a token
  /// outside the vocabulary, prompt + max_new_tokens beyond the context,
  /// bad sampling options, stop strings without a tokenizer, or logprobs
  /// or promptLogprobs outside [-1, kMaxTopLogprobs], promptLogprobs
  /// without a @score entry point.
  uint64_t submit(GenerationRequest request);
  /// Ends a request at the next step (waiting, prefilling or decoding);
  /// its callback gets a `cancelled` event. Unknown or finished ids are
  /// ignored.
  void cancel(uint64_t id);

  /// One iteration; returns false when there was nothing to do. When the
  /// engine throws (a device error, say), the requests it was running end
  /// with FinishReason::error and the message, their pages go back, and
  /// the scheduler goes on with the others: step() itself does not throw.
  bool step();
  /// Steps until every request submitted so far has finished.
  void runUntilIdle();
  /// Blocks until a request or a cancellation arrives or wake() is called
  /// (for a serving loop that steps while there is work).
  void waitForWork();
  void wake();

  bool idle() const;
  int64_t waiting() const;
  int64_t running() const;
  const SchedulerStats &stats() const { return stats_; }
  Engine &engine() { return eng; }

private:
  struct Request;
  using Clock = std::chrono::steady_clock;

  void drainInbox();
  void finish(Request &r, FinishReason reason, const std::string &error = "");
  void runStep();
  void failRunning(const std::string &why);
  void removeFinished();
  void admit();
  /// Whether a running request is still prefilling whole pages that `r`
  /// starts with (n choices of one prompt, requests with one system
  /// prompt): `r` then waits to take them from the prefix cache rather
  /// than compute them again. Never without the prefix cache.
  bool awaitsTwin(const Request &r) const;
  bool makeRoom(Request &forRequest, int64_t pages);
  void preempt(Request &r);
  void decodeAll(int64_t &budget);
  /// Drafts for the requests about to decode (none without a proposer).
  void propose(const std::vector<Request *> &rows, std::vector<std::vector<int32_t>> &drafts,
               std::vector<std::vector<float>> &probs);
  void verifyOne(Request &r, const std::vector<int32_t> &draft, const std::vector<float> &probs);
  void prefillSome(int64_t budget);
  /// Prompt tokens [have, have + n) of a request that asks for the
  /// prompt's log-probabilities, through @score; draws the first new token
  /// after the prompt's last.
  void scoreSome(Request &r, int64_t have, int64_t n);
  /// Moves the prompt's log-probabilities into the request's first event.
  static void attachPrompt(Request &r, TokenEvent &e);
  /// `logits`: the row the token was drawn from (read only when the
  /// request asks for log-probabilities).
  void accept(Request &r, int32_t token, const float *logits);
  /// Adds a token's text; sets `out` to what may be sent now and returns
  /// true when a stop string was found (`out` ends before it).
  bool takeText(Request &r, const std::string &piece, bool last, std::string &out);
  static bool olderFirst(const Request *a, const Request *b);

  Engine &eng;
  const Tokenizer *tokenizer;
  int64_t budget;
  Proposer *proposer;
  int64_t speculate;
  SchedulerStats stats_;

  mutable std::mutex inboxMutex;
  std::condition_variable inboxReady;
  std::vector<std::unique_ptr<Request>> inbox;
  std::vector<uint64_t> cancels;
  bool woken = false;
  uint64_t nextId = 1;

  // Owned by the stepping thread.
  std::deque<Request *> queue;   // waiting, first come first; preempted ones in front
  std::vector<Request *> active; // admitted, oldest first
  std::list<std::unique_ptr<Request>> all;
};

} // namespace kvplan
