// Continuous batching: admission, the token budget, preemption and the
// events a request's caller receives.
#include "runtime/Scheduler.h"
#include "runtime/Speculate.h"
#include "support/Align.h"
#include "support/Error.h"

#include <algorithm>

namespace kvplan {

const char *finishReasonName(FinishReason r) {
  switch (r) {
  case FinishReason::length: return "length";
  case FinishReason::stop: return "stop";
  case FinishReason::cancelled: return "cancelled";
  case FinishReason::error: return "error";
  }
  return "?";
}

struct Scheduler::Request {
  uint64_t id = 0;
  GenerationRequest req;
  Sampler sampler;
  std::vector<int32_t> tokens; // the prompt, then what was generated
  int64_t generated = 0;
  int seq = -1;                // the engine's sequence while admitted
  bool admittedOnce = false, done = false;
  std::unique_ptr<StreamDecoder> text;
  std::string held;            // text that may begin a stop string
  int32_t stopToken = -1;      // the stop id that ended it
  std::string stopString;      // or the stop string
  std::mt19937_64 rng;         // speculative sampling's draws
  bool scored = false;         // the prompt's log-probabilities are computed
  bool firstSent = false;      // an event has gone to the caller
  int64_t cachedTokens = 0;    // prompt tokens the prefix cache held at first admission
  std::vector<TokenLogprobs> promptScores;

  explicit Request(GenerationRequest r)
      : req(std::move(r)), sampler(req.sampling), rng(acceptanceRng(req.sampling)) {
    sampler.setPrompt(req.prompt);
  }
  /// Tokens still to run through the model: 1 for a request whose next step
  /// is a decode row (its last token is not in the cache yet).
  int64_t pending(const Engine &e) const { return int64_t(tokens.size()) - e.length(seq); }
  /// Whether its prompt still runs through @score.
  bool scoring() const { return req.promptLogprobs >= 0 && !scored; }
};

namespace {
using Seconds = std::chrono::duration<double>;
}

bool Scheduler::olderFirst(const Request *a, const Request *b) { return a->id < b->id; }

Scheduler::Scheduler(Engine &engine, const Tokenizer *tokenizer, const SchedulerOptions &options)
    : eng(engine), tokenizer(tokenizer), budget(options.tokenBudget), proposer(options.proposer),
      speculate(options.speculate) {
  if (proposer && eng.verifyRows() == 0)
    throw InputError("speculative decoding needs a plan with a verify entry point (compile with "
                     "--speculate K)");
  if (speculate <= 0 || speculate >= eng.verifyRows()) speculate = eng.verifyRows() - 1;
  if (budget == 0) budget = eng.maxBatch() + eng.prefillRows();
  if (budget < eng.maxBatch() + 1)
    throw InputError("the token budget must be at least max_batch + 1 = " +
                     std::to_string(eng.maxBatch() + 1) + " (got " + std::to_string(budget) +
                     "), so that prompts are prefilled while every row decodes");
}

Scheduler::~Scheduler() {
  for (Request *r : active)
    if (r->seq >= 0) eng.close(r->seq);
  if (proposer)
    for (auto &r : all) proposer->release(r->id);
}

uint64_t Scheduler::submit(GenerationRequest request) {
  const GenerationRequest &q = request;
  if (q.prompt.empty()) throw InputError("the prompt is empty: give at least one token");
  for (int32_t t : q.prompt)
    if (t < 0 || t >= eng.vocabSize())
      throw InputError("prompt token id " + std::to_string(t) + " is outside the vocabulary [0, " +
                       std::to_string(eng.vocabSize()) + ")");
  if (q.maxNewTokens < (q.promptLogprobs >= 0 ? 0 : 1))
    throw InputError("max new tokens must be at least 1 (0 only with the prompt's "
                     "log-probabilities), got " + std::to_string(q.maxNewTokens));
  const int64_t total = int64_t(q.prompt.size()) + q.maxNewTokens;
  if (total > eng.maxSeqLen())
    throw InputError("the prompt has " + std::to_string(q.prompt.size()) + " tokens and up to " +
                     std::to_string(q.maxNewTokens) + " may be generated: " +
                     std::to_string(total) + " tokens exceed the context of " +
                     std::to_string(eng.maxSeqLen()) +
                     " (ask for fewer new tokens, shorten the prompt, or compile with a larger "
                     "--max-seq)");
  if (eng.peakPages(total) > eng.pages().size())
    throw InputError("the request needs " + std::to_string(eng.peakPages(total)) +
                     " KV-cache pages but the plan has " + std::to_string(eng.pages().size()) +
                     " (compile with more --kv-pages)");
  for (const std::string &s : q.stopStrings)
    if (s.empty()) throw InputError("a stop string is empty");
  for (const std::string &s : q.sentStopStrings)
    if (std::find(q.stopStrings.begin(), q.stopStrings.end(), s) == q.stopStrings.end())
      throw std::logic_error("a sent stop string is not one of the stop strings");
  for (int32_t id : q.sentStopIds)
    if (std::find(q.stopIds.begin(), q.stopIds.end(), id) == q.stopIds.end())
      throw std::logic_error("a sent stop id is not one of the stop ids");
  if (!q.stopStrings.empty() && !tokenizer)
    throw InputError("stop strings need a tokenizer, and this model has none");
  for (const auto &[token, bias] : q.sampling.logitBias)
    if (token >= eng.vocabSize())
      throw InputError("logit bias for token " + std::to_string(token) +
                       ", outside the vocabulary [0, " + std::to_string(eng.vocabSize()) + ")");
  if (q.logprobs < -1 || q.logprobs > kMaxTopLogprobs)
    throw InputError("logprobs must be -1 (none) or 0 to " + std::to_string(kMaxTopLogprobs) +
                     " most likely tokens, got " + std::to_string(q.logprobs));
  if (q.promptLogprobs < -1 || q.promptLogprobs > kMaxTopLogprobs)
    throw InputError("prompt logprobs must be -1 (none) or 0 to " +
                     std::to_string(kMaxTopLogprobs) + " most likely tokens, got " +
                     std::to_string(q.promptLogprobs));
  if (q.promptLogprobs >= 0 && eng.scoreRows() == 0)
    throw InputError("the prompt's log-probabilities need a plan with a @score entry point, and "
                     "this one has none (compile, or serve, with --score-rows N)");
  if (q.sampling.minTokens > q.maxNewTokens)
    throw InputError("at least " + std::to_string(q.sampling.minTokens) +
                     " tokens must be generated (min_tokens) but at most " +
                     std::to_string(q.maxNewTokens) + " may be: ask for fewer or allow more");
  for (int32_t t : q.sampling.allowedTokens)
    if (t >= eng.vocabSize())
      throw InputError("allowed token " + std::to_string(t) + " is outside the vocabulary [0, " +
                       std::to_string(eng.vocabSize()) + ")");
  for (const std::vector<int32_t> &w : q.sampling.badWords)
    for (int32_t t : w)
      if (t >= eng.vocabSize())
        throw InputError("bad word token " + std::to_string(t) +
                         " is outside the vocabulary [0, " + std::to_string(eng.vocabSize()) +
                         ")");
  const auto &ends = q.stopIds;
  if (q.sampling.minTokens > 0 && !q.sampling.allowedTokens.empty() &&
      std::all_of(q.sampling.allowedTokens.begin(), q.sampling.allowedTokens.end(),
                  [&](int32_t t) { return std::find(ends.begin(), ends.end(), t) != ends.end(); }))
    throw InputError("every allowed token ends the request, and min_tokens forbids them: no "
                     "token could be drawn");
  // min_tokens holds back exactly the ids that would end the request.
  request.sampling.endTokens = q.sampling.minTokens > 0 ? q.stopIds : std::vector<int32_t>();
  auto r = std::make_unique<Request>(std::move(request)); // checks the sampling options
  r->tokens = r->req.prompt;
  // The text goes on from the prompt's: a first piece keeps its leading space.
  if (tokenizer) r->text = std::make_unique<StreamDecoder>(*tokenizer, r->req.prompt);
  std::lock_guard<std::mutex> lock(inboxMutex);
  r->id = nextId++;
  const uint64_t id = r->id;
  inbox.push_back(std::move(r));
  inboxReady.notify_all();
  return id;
}

void Scheduler::cancel(uint64_t id) {
  std::lock_guard<std::mutex> lock(inboxMutex);
  cancels.push_back(id);
  inboxReady.notify_all();
}

void Scheduler::wake() {
  std::lock_guard<std::mutex> lock(inboxMutex);
  woken = true;
  inboxReady.notify_all();
}

void Scheduler::waitForWork() {
  std::unique_lock<std::mutex> lock(inboxMutex);
  inboxReady.wait(lock, [&] { return !inbox.empty() || !cancels.empty() || woken; });
  woken = false;
}

bool Scheduler::idle() const {
  std::lock_guard<std::mutex> lock(inboxMutex);
  return inbox.empty() && cancels.empty() && queue.empty() && active.empty();
}
int64_t Scheduler::waiting() const { return int64_t(queue.size()); }
int64_t Scheduler::running() const { return int64_t(active.size()); }

void Scheduler::drainInbox() {
  std::vector<std::unique_ptr<Request>> arrived;
  std::vector<uint64_t> cancelled;
  {
    std::lock_guard<std::mutex> lock(inboxMutex);
    arrived.swap(inbox);
    cancelled.swap(cancels);
  }
  for (auto &r : arrived) {
    queue.push_back(r.get());
    all.push_back(std::move(r));
  }
  for (uint64_t id : cancelled)
    for (auto &r : all)
      if (r->id == id && !r->done) finish(*r, FinishReason::cancelled);
}

bool Scheduler::takeText(Request &r, const std::string &piece, bool last, std::string &out) {
  r.held += piece;
  size_t cut = std::string::npos;
  // Before min_tokens, a stop string does not end the request (as vLLM).
  if (r.generated >= r.req.sampling.minTokens)
    for (const std::string &s : r.req.stopStrings)
      if (size_t at = r.held.find(s); at < cut) {
        cut = at;
        r.stopString = s;
      }
  if (cut != std::string::npos) {
    const auto &sent = r.req.sentStopStrings;
    if (std::find(sent.begin(), sent.end(), r.stopString) != sent.end())
      cut += r.stopString.size();
    out = r.held.substr(0, cut);
    r.held.clear();
    return true;
  }
  // Hold back the longest tail that a stop string could begin with.
  size_t keep = 0;
  if (!last)
    for (const std::string &s : r.req.stopStrings)
      for (size_t n = std::min(s.size() - 1, r.held.size()); n > keep; --n)
        if (r.held.compare(r.held.size() - n, n, s, 0, n) == 0) {
          keep = n;
          break;
        }
  out = r.held.substr(0, r.held.size() - keep);
  r.held.erase(0, r.held.size() - keep);
  return false;
}

void Scheduler::finish(Request &r, FinishReason reason, const std::string &error) {
  TokenEvent e;
  e.request = r.id;
  e.finished = true;
  e.reason = reason;
  e.error = error;
  e.stopToken = r.stopToken;
  e.cachedPromptTokens = r.cachedTokens;
  // What the stream decoder still holds (an incomplete UTF-8 tail) and any
  // text held back for a stop string that never came.
  const bool ended = reason == FinishReason::length || reason == FinishReason::stop;
  if (ended && r.text && takeText(r, r.text->flush(), true, e.text))
    e.reason = FinishReason::stop;
  e.stopString = r.stopString;
  r.held.clear();
  r.done = true;
  attachPrompt(r, e);
  if (proposer) proposer->release(r.id);
  if (r.seq >= 0) {
    eng.close(r.seq);
    r.seq = -1;
  }
  ++stats_.finished;
  if (r.req.onEvent) r.req.onEvent(e);
}

/// A token drawn for the request: kept, sent, and checked against the
/// request's stop conditions.
void Scheduler::accept(Request &r, int32_t token, const float *logits) {
  r.tokens.push_back(token);
  ++r.generated;
  ++stats_.generatedTokens;
  const std::vector<int32_t> &stop = r.req.stopIds;
  if (std::find(stop.begin(), stop.end(), token) != stop.end()) {
    r.stopToken = token;
    const auto &sent = r.req.sentStopIds;
    if (r.text && std::find(sent.begin(), sent.end(), token) != sent.end())
      r.held += r.text->push(token); // finish sends it
    finish(r, FinishReason::stop);
    return;
  }
  TokenEvent e;
  e.request = r.id;
  e.token = token;
  if (r.req.logprobs >= 0)
    e.logprobs = tokenLogprobs(logits, eng.vocabSize(), token, r.req.logprobs);
  const bool stopped = r.text && takeText(r, r.text->push(token), false, e.text);
  attachPrompt(r, e);
  if (r.req.onEvent) r.req.onEvent(e);
  if (stopped) {
    r.text.reset(); // nothing after the stop string is sent
    finish(r, FinishReason::stop);
  } else if (r.sampler.jsonComplete()) { // JSON mode: the object closed
    finish(r, FinishReason::stop);
  } else if (r.generated >= r.req.maxNewTokens) {
    finish(r, FinishReason::length);
  }
}

void Scheduler::attachPrompt(Request &r, TokenEvent &e) {
  if (r.firstSent) return;
  r.firstSent = true;
  if (r.req.promptLogprobs >= 0) e.promptLogprobs = std::move(r.promptScores);
}

void Scheduler::removeFinished() {
  auto gone = [](Request *r) { return r->done; };
  queue.erase(std::remove_if(queue.begin(), queue.end(), gone), queue.end());
  active.erase(std::remove_if(active.begin(), active.end(), gone), active.end());
  all.remove_if([](const std::unique_ptr<Request> &r) { return r->done; });
}

void Scheduler::preempt(Request &r) {
  eng.close(r.seq); // the full pages stay in the prefix cache
  r.seq = -1;
  active.erase(std::find(active.begin(), active.end(), &r));
  // Back to the queue in arrival order: ahead of everything not yet admitted.
  auto at = std::upper_bound(queue.begin(), queue.end(), &r, olderFirst);
  queue.insert(at, &r);
  ++stats_.preemptions;
}

bool Scheduler::makeRoom(Request &forRequest, int64_t pages) {
  while (eng.freePages() < pages && active.back() != &forRequest) preempt(*active.back());
  return eng.freePages() >= pages;
}

void Scheduler::admit() {
  while (!queue.empty() && int64_t(active.size()) < eng.maxBatch()) {
    Request &r = *queue.front();
    // Admit only with room for its first chunk, counted as if nothing were
    // cached, and a page for each request running (so that their next
    // decode steps do not preempt it at once); unless nothing runs: then
    // it fits, as submit() checked. Checked before the prefix cache is
    // looked up, so a request left waiting costs nothing.
    const int64_t first = std::min(int64_t(r.tokens.size()), eng.prefillRows());
    const int64_t need = ceilDiv(first, eng.pageSize()) + int64_t(active.size());
    if (!active.empty() && need > eng.freePages()) return;
    if (!r.scoring() && awaitsTwin(r)) return;
    r.seq = eng.open();
    auto t0 = Clock::now();
    // A prompt being scored needs every token's logits: nothing from the
    // cache, and (preempted half way) its scores again from the start.
    r.promptScores.clear();
    const int64_t reused =
        r.scoring() ? 0 : eng.reuse(r.seq, r.tokens.data(), int64_t(r.tokens.size()));
    stats_.engineSeconds += Seconds(Clock::now() - t0).count();
    if (!r.admittedOnce) {
      r.admittedOnce = true;
      stats_.promptTokens += int64_t(r.req.prompt.size());
      stats_.cachedPromptTokens += reused;
      r.cachedTokens = reused;
    }
    queue.pop_front();
    // Oldest first: a resumed request goes back among the others by age.
    active.insert(std::upper_bound(active.begin(), active.end(), &r, olderFirst), &r);
  }
}

bool Scheduler::awaitsTwin(const Request &r) const {
  if (!eng.pages().caching()) return false;
  const int64_t page = eng.pageSize();
  for (const Request *a : active) {
    if (a->pending(eng) <= 1) continue; // not prefilling
    const size_t most = std::min(r.tokens.size(), a->tokens.size());
    const int64_t common =
        std::mismatch(r.tokens.begin(), r.tokens.begin() + most, a->tokens.begin()).first -
        r.tokens.begin();
    // Whole pages r could take from the cache (its last token always runs).
    const int64_t shared = std::min(common, int64_t(r.tokens.size()) - 1) / page * page;
    if (shared > eng.length(a->seq)) return true;
  }
  return false;
}

/// One decode call for every running request with one token to append,
/// except those with drafts: each of them takes a verify call.
/// Preempts the newest requests while the pool cannot give each its pages.
void Scheduler::decodeAll(int64_t &left) {
  std::vector<Request *> rows;
  std::vector<std::vector<int32_t>> drafts;
  std::vector<std::vector<float>> probs;
  for (;;) {
    rows.clear();
    for (Request *r : active)
      if (r->pending(eng) == 1 && !r->scoring()) rows.push_back(r);
    propose(rows, drafts, probs);
    int64_t pages = 0;
    for (size_t i = 0; i < rows.size(); ++i)
      pages += eng.pagesToGrow(rows[i]->seq,
                               eng.length(rows[i]->seq) + 1 + int64_t(drafts[i].size()));
    if (pages <= eng.freePages() || active.size() <= 1) break;
    preempt(*active.back());
  }
  if (rows.empty()) return;
  std::vector<Request *> decoding;
  std::vector<int> seqs;
  std::vector<int32_t> tokens;
  std::vector<Sampler *> samplers;
  for (size_t i = 0; i < rows.size(); ++i) {
    if (!drafts[i].empty()) continue;
    decoding.push_back(rows[i]);
    seqs.push_back(rows[i]->seq);
    tokens.push_back(rows[i]->tokens.back());
    samplers.push_back(&rows[i]->sampler);
  }
  if (!decoding.empty()) {
    auto t0 = Clock::now();
    const std::vector<int32_t> next = eng.decodeStep(seqs, tokens, samplers);
    stats_.engineSeconds += Seconds(Clock::now() - t0).count();
    ++stats_.decodeCalls;
    stats_.decodeRows += int64_t(decoding.size());
    left -= int64_t(decoding.size());
    // Whole rows of logits cross to the host only for log-probabilities.
    const bool wanted = std::any_of(decoding.begin(), decoding.end(),
                                    [](const Request *r) { return r->req.logprobs >= 0; });
    const float *logits = wanted ? eng.logits("decode") : nullptr;
    for (size_t i = 0; i < decoding.size(); ++i)
      accept(*decoding[i], next[i], logits ? logits + int64_t(i) * eng.vocabSize() : nullptr);
  }
  for (size_t i = 0; i < rows.size(); ++i)
    if (!drafts[i].empty()) {
      left -= 1 + int64_t(drafts[i].size());
      verifyOne(*rows[i], drafts[i], probs[i]);
    }
}

void Scheduler::propose(const std::vector<Request *> &rows,
                        std::vector<std::vector<int32_t>> &drafts,
                        std::vector<std::vector<float>> &probs) {
  drafts.assign(rows.size(), {});
  probs.assign(rows.size(), {});
  if (!proposer) return;
  for (size_t i = 0; i < rows.size(); ++i) {
    const Request &r = *rows[i];
    // The acceptance rule knows no penalties nor min_tokens: such a request
    // decodes (min-p it knows: samplingProbabilities).
    if (r.req.sampling.changesRow()) continue;
    // Drafts past the request's last token or the context are wasted.
    const int64_t k = std::min({speculate, r.req.maxNewTokens - r.generated - 1,
                                eng.maxSeqLen() - eng.length(r.seq) - 1});
    if (k <= 0) continue;
    Draft d = proposer->propose(r.id, r.tokens, k);
    if (int64_t(d.tokens.size()) > k) d.tokens.resize(size_t(k));
    drafts[i] = std::move(d.tokens);
    probs[i] = std::move(d.probs);
  }
}

/// One verify call over the request's pending token and its drafts; keeps
/// what the rule accepts and the token after it, and rolls the rest back.
void Scheduler::verifyOne(Request &r, const std::vector<int32_t> &draft,
                          const std::vector<float> &probs) {
  std::vector<int32_t> rows = {r.tokens.back()};
  rows.insert(rows.end(), draft.begin(), draft.end());
  const int64_t before = eng.length(r.seq);
  auto t0 = Clock::now();
  const float *logits = eng.verify(r.seq, rows.data(), int64_t(rows.size()));
  const Verdict v = judgeDrafts({draft, probs}, logits, eng.vocabSize(), r.req.sampling, r.rng);
  eng.truncate(r.seq, before + 1 + v.accepted);
  stats_.engineSeconds += Seconds(Clock::now() - t0).count();
  ++stats_.verifyCalls;
  stats_.draftsProposed += int64_t(draft.size());
  stats_.draftsAccepted += v.accepted;
  const int64_t vocab = eng.vocabSize();
  for (int64_t i = 0; i < v.accepted && !r.done; ++i)
    accept(r, draft[size_t(i)], logits + i * vocab);
  if (!r.done) accept(r, v.next, logits + v.accepted * vocab);
}

/// Prefill chunks for the requests with more than one token to run, oldest
/// first, within what is left of the step's budget.
void Scheduler::prefillSome(int64_t left) {
  bool ran = false;
  for (size_t i = 0; i < active.size() && left > 0; ++i) {
    Request &r = *active[i];
    if (r.done) continue;
    const int64_t have = eng.length(r.seq), pending = r.pending(eng);
    if (pending <= 1 && !r.scoring()) continue; // a decode row next step
    int64_t n = std::min({pending, eng.prefillRows(), left});
    // A prefill call reads every weight whatever its rows: after the
    // step's first call, what is left of the budget goes to a short chunk
    // only if it ends a prompt.
    if (ran && n < pending && n < std::max<int64_t>(1, eng.prefillRows() / 4)) break;
    if (!makeRoom(r, eng.pagesToGrow(r.seq, have + n))) {
      // As much as fits in the pages it has and the free ones.
      const int64_t room =
          (ceilDiv(have, eng.pageSize()) + eng.freePages()) * eng.pageSize() - have;
      n = std::min(n, room);
      if (n <= 0) continue;
    }
    if (r.scoring()) {
      scoreSome(r, have, n);
      left -= n;
      ran = true;
      continue;
    }
    const bool last = n == pending;
    auto t0 = Clock::now();
    const int32_t token =
        eng.prefillStep(r.seq, r.tokens.data() + have, n, last ? &r.sampler : nullptr);
    stats_.engineSeconds += Seconds(Clock::now() - t0).count();
    ++stats_.prefillCalls;
    stats_.prefillTokens += n;
    left -= n;
    ran = true;
    if (last) accept(r, token, r.req.logprobs >= 0 ? eng.logits("prefill") : nullptr);
  }
}

void Scheduler::scoreSome(Request &r, int64_t have, int64_t n) {
  const int64_t vocab = eng.vocabSize(), prompt = int64_t(r.req.prompt.size());
  for (int64_t at = have; at < have + n && !r.done;) {
    const int64_t m = std::min(have + n - at, eng.scoreRows());
    auto t0 = Clock::now();
    const float *logits = eng.score(r.seq, r.tokens.data() + at, m);
    stats_.engineSeconds += Seconds(Clock::now() - t0).count();
    ++stats_.scoreCalls;
    stats_.scoredTokens += m;
    stats_.prefillTokens += m;
    // Row i holds the distribution of the token after tokens[at + i].
    for (int64_t i = 0; i < m && at + i + 1 < prompt; ++i)
      r.promptScores.push_back(tokenLogprobs(logits + i * vocab, vocab,
                                             r.tokens[size_t(at + i + 1)], r.req.promptLogprobs));
    at += m;
    if (at < prompt) continue;
    r.scored = true;
    const float *row = logits + (m - 1) * vocab;
    if (r.req.maxNewTokens == 0)
      finish(r, FinishReason::length);
    else
      accept(r, r.sampler.sample(row, vocab), row);
  }
}

bool Scheduler::step() {
  const auto t0 = Clock::now();
  drainInbox();
  removeFinished();
  if (queue.empty() && active.empty()) return false;
  ++stats_.steps;
  try {
    runStep();
  } catch (const std::exception &e) {
    failRunning(e.what());
  }
  removeFinished();
  stats_.stepSeconds += Seconds(Clock::now() - t0).count();
  return true;
}

void Scheduler::runStep() {
  admit();
  int64_t left = budget;
  decodeAll(left);
  removeFinished();
  prefillSome(left);
}

/// The engine threw mid-step: whatever it was running may be half done, so
/// every admitted request ends with the error; the waiting ones were not
/// touched and stay queued.
void Scheduler::failRunning(const std::string &why) {
  for (Request *r : active)
    if (!r->done) finish(*r, FinishReason::error, "the engine failed: " + why);
}

void Scheduler::runUntilIdle() {
  while (!idle()) step();
}

} // namespace kvplan
