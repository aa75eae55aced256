// The scheduler on a small compiled model with random weights: greedy
// outputs equal each request run alone on a fresh engine, whatever the
// batching, prefix-cache hits, preemptions or token budget; requests come
// and go in any order, stop where they should and give back every page.
#include "codegen/Compiler.h"
#include "frontend/ConfigParser.h"
#include "plan/WeightPacking.h"
#include "runtime/Scheduler.h"
#include "runtime/Speculate.h"
#include "tests/common/ServeCompare.h"
#include "tests/common/FailingExecutor.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>

using namespace kvplan;

namespace {

/// vocab 300 holds the byte tokenizer's ids (3..258) and more.
struct TinyModel {
  ModelConfig cfg;
  Plan plan;
  std::vector<char> weights;

  /// `architecture`: the [model] table's first lines.
  explicit TinyModel(const std::string &compile,
                     const std::string &architecture = "architecture = \"llama\"\n") {
    const std::string text =
        "[model]\nname = \"sched\"\n" + architecture + "hidden_size = 64\n"
        "intermediate_size = 96\nnum_layers = 2\nnum_heads = 4\nnum_kv_heads = 2\n"
        "vocab_size = 300\nmax_position_embeddings = 128\nrms_norm_eps = 1e-5\n"
        "bos_token_id = 1\neos_token_id = 2\n[compile]\n" + compile;
    cfg = parseTomlSpec(text, "sched.toml", [](const std::string &w) { ADD_FAILURE() << w; });
    validate(cfg);
    plan = compileModel(cfg).plan;
    weights = packWeightsInMemory(plan, *openWeights("random:11", cfg.model));
  }
  Engine engine(const EngineOptions &o = {}) const {
    return Engine(plan, weights.data(), weights.size(), 1, o);
  }
};

const char *kF32 = "max_seq_len = 64\nmax_batch = 4\npage_size = 4\nprefill_chunk = 8\n"
                   "weight_dtype = \"f32\"\nkv_dtype = \"f32\"\n";
const char *kBf16 = "max_seq_len = 64\nmax_batch = 4\npage_size = 4\nprefill_chunk = 8\n"
                    "weight_dtype = \"bf16\"\nkv_dtype = \"bf16\"\n";

std::vector<int32_t> randomTokens(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (int32_t &v : t) v = int32_t(3 + rng() % 290);
  return t;
}

/// What one request received.
struct Received {
  std::vector<int32_t> tokens;
  std::string text;
  bool finished = false;
  FinishReason reason = FinishReason::length;
  int32_t stopToken = -1; // the finish event's
  std::string stopString;
  int events = 0;
  std::vector<TokenLogprobs> logprobs; // one per token event that carried them
  std::optional<std::vector<TokenLogprobs>> prompt; // the prompt's, once
};

/// A request whose events land in `out`.
GenerationRequest request(std::vector<int32_t> prompt, int64_t maxNew, Received &out,
                          SamplingOptions sampling = {}) {
  GenerationRequest r;
  r.prompt = std::move(prompt);
  r.maxNewTokens = maxNew;
  r.sampling = sampling;
  r.onEvent = [&out](const TokenEvent &e) {
    EXPECT_FALSE(out.finished) << "an event after the last";
    ++out.events;
    if (e.token >= 0) out.tokens.push_back(e.token);
    if (e.logprobs) out.logprobs.push_back(*e.logprobs);
    if (e.promptLogprobs) {
      EXPECT_FALSE(out.prompt) << "the prompt's log-probabilities came twice";
      EXPECT_EQ(out.events, 1) << "the prompt's log-probabilities came after the first event";
      out.prompt = *e.promptLogprobs;
    }
    out.text += e.text;
    if (e.finished) {
      out.finished = true;
      out.reason = e.reason;
      out.stopToken = e.stopToken;
      out.stopString = e.stopString;
    }
  };
  return r;
}

/// The request run alone, without the scheduler, on a fresh engine.
std::vector<int32_t> alone(const TinyModel &m, const std::vector<int32_t> &prompt, int64_t maxNew,
                           SamplingOptions sampling = {}) {
  Engine e = m.engine({false});
  return kvplan::testing::runAlone(e, prompt, size_t(maxNew), sampling);
}

/// Every sequence closed and every page back in the pool, consistent.
void expectNoLeak(Engine &e) {
  e.pages().check();
  EXPECT_EQ(e.openSequences(), 0);
  EXPECT_EQ(e.pages().available(), e.pages().size());
  if (const PagePool *w = e.windowPages()) { // the sliding layers' own pool
    e.checkPools();
    EXPECT_EQ(e.freeWindowPages(), w->size());
  }
}

struct Load {
  std::vector<std::vector<int32_t>> prompts;
  std::vector<int64_t> maxNew;
};

/// Four requests of 30 + 30 tokens, three of them starting with the same 12.
Load fourLongRequests() {
  Load l;
  const std::vector<int32_t> common = randomTokens(12, 77);
  for (uint32_t i = 0; i < 4; ++i) {
    std::vector<int32_t> p = i < 3 ? common : randomTokens(12, 78);
    const std::vector<int32_t> own = randomTokens(18, 80 + i);
    p.insert(p.end(), own.begin(), own.end());
    l.prompts.push_back(p);
    l.maxNew.push_back(30);
  }
  return l;
}

/// Twelve requests of 1 to 30 prompt tokens and 1 to 20 new ones; with a
/// shared start when `shared` > 0.
Load makeLoad(uint32_t seed, int shared = 0) {
  std::mt19937 rng(seed);
  const std::vector<int32_t> common = randomTokens(shared, seed + 100);
  Load l;
  for (int i = 0; i < 12; ++i) {
    std::vector<int32_t> p = common;
    const int most = std::min(30, 44 - shared); // prompt + new tokens within 64
    std::vector<int32_t> own = randomTokens(1 + int(rng() % uint32_t(most)), seed * 31 + uint32_t(i));
    p.insert(p.end(), own.begin(), own.end());
    l.prompts.push_back(p);
    l.maxNew.push_back(1 + int64_t(rng() % 20));
  }
  return l;
}

/// Runs the load, `stagger` requests at first and one more after each step.
std::vector<Received> serve(Scheduler &s, const Load &l, size_t stagger,
                            SamplingOptions sampling = {}) {
  std::vector<Received> got(l.prompts.size());
  size_t next = 0;
  for (; next < std::min(stagger, got.size()); ++next)
    s.submit(request(l.prompts[next], l.maxNew[next], got[next], sampling));
  while (!s.idle() || next < got.size()) {
    s.step();
    EXPECT_LE(s.running(), s.engine().maxBatch());
    s.engine().pages().check();
    if (next < got.size()) {
      s.submit(request(l.prompts[next], l.maxNew[next], got[next], sampling));
      ++next;
    }
  }
  return got;
}

} // namespace

TEST(Scheduler, GreedyOutputsDoNotDependOnBatching) {
  for (const char *compile : {kF32, kBf16}) {
    SCOPED_TRACE(compile);
    TinyModel m(compile);
    const Load l = makeLoad(1);
    std::vector<std::vector<int32_t>> want;
    for (size_t i = 0; i < l.prompts.size(); ++i) want.push_back(alone(m, l.prompts[i], l.maxNew[i]));
    for (int64_t budget : {int64_t(0), int64_t(5)}) {
      for (size_t stagger : {size_t(1), size_t(12)}) {
        SCOPED_TRACE("budget " + std::to_string(budget) + ", stagger " + std::to_string(stagger));
        Engine e = m.engine();
        Scheduler s(e, nullptr, {budget});
        std::vector<Received> got = serve(s, l, stagger);
        for (size_t i = 0; i < got.size(); ++i) {
          EXPECT_TRUE(got[i].finished);
          EXPECT_EQ(got[i].reason, FinishReason::length);
          EXPECT_EQ(got[i].tokens, want[i]) << "request " << i;
        }
        expectNoLeak(e);
      }
    }
  }
}

TEST(Scheduler, SeededSamplingDoesNotDependOnBatching) {
  TinyModel m(kF32);
  const Load l = makeLoad(2);
  const SamplingOptions sampling{0.9, 40, 0.95, 1234};
  Engine e = m.engine();
  Scheduler s(e, nullptr);
  std::vector<Received> got = serve(s, l, 12, sampling);
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_EQ(got[i].tokens, alone(m, l.prompts[i], l.maxNew[i], sampling)) << "request " << i;
  expectNoLeak(e);
}

TEST(Scheduler, PrefixHitsShareFullPagesAndCopyTheLastPartOne) {
  TinyModel m(kF32);
  Engine e = m.engine();
  Scheduler s(e, nullptr);
  // A: 10 prompt tokens and 6 new: its cache holds 15 tokens, pages
  // [0,4) [4,8) [8,12) full and cached when it ends.
  const std::vector<int32_t> a = randomTokens(10, 1);
  Received ra;
  s.submit(request(a, 6, ra));
  s.runUntilIdle();
  EXPECT_EQ(e.pages().cachedPages(), 3);
  // B shares A's first 10 tokens, then goes its own way: two full pages
  // shared, and the third copied, as B writes into it.
  std::vector<int32_t> b = a;
  const std::vector<int32_t> own = randomTokens(5, 2);
  b.insert(b.end(), own.begin(), own.end());
  const int seq = e.open();
  EXPECT_EQ(e.reuse(seq, b.data(), int64_t(b.size())), 10);
  const PagePool::Match shared = e.pages().match(a.data(), 8); // A's two full pages
  ASSERT_EQ(shared.full.size(), 2u);
  EXPECT_EQ(e.pages().refs(shared.full[0]), 2); // B and this match
  e.pages().dropAll(shared.full);
  EXPECT_EQ(e.pages().cachedPages(), 3); // A's third page is intact
  e.close(seq);
  // Through the scheduler: the same tokens as alone, and the hit counted.
  Received rb;
  const SchedulerStats before = s.stats();
  s.submit(request(b, 5, rb));
  s.runUntilIdle();
  EXPECT_EQ(s.stats().cachedPromptTokens - before.cachedPromptTokens, 10);
  EXPECT_EQ(s.stats().prefillTokens - before.prefillTokens, 5);
  EXPECT_EQ(rb.tokens, alone(m, b, 5));
  EXPECT_EQ(ra.tokens, alone(m, a, 6));
  // The whole of A's prompt again: everything but its last token comes
  // from the cache.
  Received again;
  s.submit(request(a, 6, again));
  s.runUntilIdle();
  EXPECT_EQ(again.tokens, ra.tokens);
  expectNoLeak(e);
}

TEST(Scheduler, WithoutThePrefixCacheNothingIsReused) {
  TinyModel m(kF32);
  Engine e = m.engine({false});
  Scheduler s(e, nullptr);
  const Load l = makeLoad(3, 20);
  std::vector<Received> got = serve(s, l, 1);
  EXPECT_EQ(s.stats().cachedPromptTokens, 0);
  EXPECT_EQ(e.pages().cachedPages(), 0);
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_EQ(got[i].tokens, alone(m, l.prompts[i], l.maxNew[i])) << "request " << i;
  expectNoLeak(e);
}

TEST(Scheduler, ASharedPrefixIsPrefilledOnce) {
  TinyModel m(kF32);
  Engine e = m.engine();
  Scheduler s(e, nullptr);
  const Load l = makeLoad(4, 24); // 24 shared tokens: 6 pages
  std::vector<Received> got = serve(s, l, 1);
  // The first request computes the shared pages, a chunk of 8 tokens a
  // step, each page entering the cache as it fills; the others, arriving a
  // step apart, wait while it still prefills pages they start with, then
  // take all six from the cache: the shared prefix is computed once.
  EXPECT_EQ(s.stats().cachedPromptTokens, 11 * 24);
  // (A prompt one token past the cached pages decodes that token instead.)
  EXPECT_LE(s.stats().prefillTokens, s.stats().promptTokens - s.stats().cachedPromptTokens);
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_EQ(got[i].tokens, alone(m, l.prompts[i], l.maxNew[i])) << "request " << i;
  expectNoLeak(e);
}

TEST(Scheduler, IdenticalPromptsSubmittedTogetherArePrefilledOnce) {
  // Four copies of a 30-token prompt at once (n choices of one request):
  // the first prefills it, the others wait for its 7 full pages, then
  // prefill only their last 2 tokens. Without the prefix cache there is
  // nothing to wait for: all four run at once.
  for (bool cache : {true, false}) {
    SCOPED_TRACE(cache ? "prefix cache" : "no prefix cache");
    TinyModel m(kF32);
    Engine e = m.engine({cache});
    Scheduler s(e, nullptr);
    const std::vector<int32_t> prompt = randomTokens(30, 12);
    std::vector<Received> got(4);
    for (Received &r : got)
      s.submit(request(prompt, 6, r, {0.9, 0, 1.0, uint64_t(&r - got.data())}));
    s.step();
    EXPECT_EQ(s.running(), cache ? 1 : 4);
    s.runUntilIdle();
    EXPECT_EQ(s.stats().cachedPromptTokens, cache ? 3 * 28 : 0);
    EXPECT_EQ(s.stats().prefillTokens, cache ? 30 + 3 * 2 : 4 * 30);
    for (size_t i = 0; i < got.size(); ++i)
      EXPECT_EQ(got[i].tokens, alone(m, prompt, 6, {0.9, 0, 1.0, uint64_t(i)})) << i;
    expectNoLeak(e);
  }
}

TEST(Scheduler, PreemptedRequestsResumeWithTheSameTokens) {
  // A pool of 18 pages (72 tokens) for four rows of up to 64: the load
  // needs about three times that at once.
  for (bool cache : {true, false}) {
    SCOPED_TRACE(cache ? "prefix cache" : "no prefix cache");
    TinyModel m(std::string(kF32) + "kv_pages = 18\n");
    Engine e = m.engine({cache});
    Scheduler s(e, nullptr);
    Load l = makeLoad(5);
    for (size_t i = 0; i < l.prompts.size(); ++i) l.maxNew[i] = 30 - int64_t(i % 3) * 5;
    std::vector<Received> got = serve(s, l, 12);
    EXPECT_GT(s.stats().preemptions, 0);
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_TRUE(got[i].finished);
      EXPECT_EQ(got[i].tokens, alone(m, l.prompts[i], l.maxNew[i])) << "request " << i;
    }
    expectNoLeak(e);
  }
}

TEST(Scheduler, UnderASlidingWindowLongRequestsShareASmallPool) {
  // Four requests of 30 + 30 tokens at once, three of them starting with
  // the same 12. Without a window each needs 15 pages of 4 at the end, 60
  // in all. Under a window of 8, a call of up to 8 rows reads keys from 7
  // before it: 3 + 7 + 8 = 18 positions from a page's start, 5 pages, so
  // the default pool is 4 x 5 = 20 pages and the four run to the end
  // together; the same pool without the window preempts. Pages behind the
  // windows go idle into the prefix cache, and taking them back takes the
  // held pages after them out of it.
  const Load l = fourLongRequests();
  for (bool windowed : {true, false}) {
    SCOPED_TRACE(windowed ? "window 8" : "no window");
    TinyModel m(std::string(kF32) + (windowed ? "" : "kv_pages = 20\n"),
                windowed ? "architecture = \"mistral\"\nsliding_window = 8\n"
                         : "architecture = \"llama\"\n");
    ASSERT_EQ(m.cfg.compile.kvPages, 20);
    Engine e = m.engine();
    Scheduler s(e, nullptr);
    std::vector<Received> got = serve(s, l, 4);
    if (windowed) {
      EXPECT_EQ(s.stats().preemptions, 0);
      EXPECT_GT(e.pages().evictions(), 0);
    } else
      EXPECT_GT(s.stats().preemptions, 0);
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_TRUE(got[i].finished);
      EXPECT_EQ(got[i].tokens, alone(m, l.prompts[i], l.maxNew[i])) << "request " << i;
    }
    expectNoLeak(e);
  }
}

TEST(Scheduler, MixedWindowsServeFromTwoPools) {
  // The same four requests on a Gemma-like model: layer 0 slides (a window
  // of 8), layer 1 reads every key. Each request holds 15 pages of 4 at the
  // end in layer 1's pool, and at most 5 at once in layer 0's (a call of 8
  // rows: 3 + 7 + 8 = 18 positions from a page's start). Either pool too
  // small for the four at once preempts the newest, which resumes from the
  // prefix cache: layer 1's pool of 20 pages (layer 0's the default, 4 x 5),
  // or layer 0's of 5 pages, one request's (layer 1's 60, all of them).
  const Load l = fourLongRequests();
  const char *gemma =
      "architecture = \"gemma3\"\nsliding_window = 8\nfull_attention_layers = [1]\n";
  for (const char *pools : {"kv_pages = 20\n", "kv_pages = 60\nwindow_kv_pages = 5\n"}) {
    SCOPED_TRACE(pools);
    TinyModel m(std::string(kF32) + pools, gemma);
    ASSERT_EQ(m.plan.windowCache.layers, 1);
    ASSERT_EQ(m.cfg.compile.windowKvPages, std::string(pools) == "kv_pages = 20\n" ? 20 : 5);
    Engine e = m.engine();
    Scheduler s(e, nullptr);
    std::vector<Received> got = serve(s, l, 4);
    EXPECT_GT(s.stats().preemptions, 0);
    EXPECT_GT(e.windowEvictions(), 0);
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_TRUE(got[i].finished);
      EXPECT_EQ(got[i].tokens, alone(m, l.prompts[i], l.maxNew[i])) << "request " << i;
    }
    expectNoLeak(e);
  }
}

TEST(Scheduler, TheTokenBudgetInterleavesPrefillWithDecode) {
  TinyModel m(kF32);
  Engine e = m.engine();
  const int64_t budget = 6; // max_batch 4 + 2
  Scheduler s(e, nullptr, {budget});
  std::vector<Received> got(4);
  for (int i = 0; i < 3; ++i) s.submit(request(randomTokens(3, 10 + i), 20, got[size_t(i)]));
  while (s.stats().decodeCalls < 2) s.step();
  // A long prompt arrives while three requests decode: it is prefilled
  // three tokens a step (6 - 3 rows) and they decode on every step.
  const std::vector<int32_t> longPrompt = randomTokens(40, 20);
  s.submit(request(longPrompt, 4, got[3]));
  int steps = 0;
  while (got[3].tokens.empty()) {
    const SchedulerStats before = s.stats();
    s.step();
    ++steps;
    const int64_t rows = s.stats().decodeRows - before.decodeRows;
    const int64_t prefill = s.stats().prefillTokens - before.prefillTokens;
    EXPECT_LE(rows + prefill, budget);
    EXPECT_EQ(s.stats().decodeCalls - before.decodeCalls, 1) << "step " << steps;
  }
  EXPECT_GE(steps, 40 / 3);
  s.runUntilIdle();
  EXPECT_EQ(got[3].tokens, alone(m, longPrompt, 4));
  EXPECT_THROW(Scheduler(e, nullptr, {4}), InputError); // below max_batch + 1
  expectNoLeak(e);
}

TEST(Scheduler, LeftoverBudgetIsNotSpentOnATinyChunk) {
  TinyModel m(kF32);
  Engine e = m.engine();
  Scheduler s(e, nullptr, {9}); // a chunk of 8, then 1 token left
  Received a, b;
  s.submit(request(randomTokens(20, 1), 2, a));
  s.submit(request(randomTokens(20, 2), 2, b));
  s.step();
  // A whole chunk for the first; a 1-token chunk for the second would read
  // every weight for one token: it waits for the next step.
  EXPECT_EQ(s.stats().prefillCalls, 1);
  EXPECT_EQ(s.stats().prefillTokens, 8);
  s.step();
  EXPECT_EQ(s.stats().prefillCalls, 2); // 8 for the first again
  s.runUntilIdle();
  EXPECT_EQ(a.tokens, alone(m, randomTokens(20, 1), 2));
  EXPECT_EQ(b.tokens, alone(m, randomTokens(20, 2), 2));
  expectNoLeak(e);
}

TEST(Scheduler, RequestsFinishInAnyOrderAndTheirRowsAreReused) {
  TinyModel m(kF32);
  Engine e = m.engine();
  Scheduler s(e, nullptr);
  std::vector<Received> got(8);
  std::vector<int> finishOrder;
  const int64_t lengths[8] = {12, 2, 7, 1, 9, 3, 5, 4};
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 8; ++i) {
    prompts.push_back(randomTokens(2 + i, 40 + i));
    GenerationRequest r = request(prompts.back(), lengths[i], got[size_t(i)]);
    auto inner = r.onEvent;
    r.onEvent = [inner, &finishOrder, i](const TokenEvent &ev) {
      inner(ev);
      if (ev.finished) finishOrder.push_back(i);
    };
    s.submit(std::move(r));
  }
  int64_t most = 0;
  while (!s.idle()) {
    s.step();
    most = std::max(most, s.running());
  }
  // Four rows: 0-3 start at once; 1 and 3 (two tokens and one) end first
  // and later requests take their rows; 0, the longest of the four, ends
  // after the other three.
  EXPECT_EQ(most, 4);
  ASSERT_EQ(finishOrder.size(), 8u);
  EXPECT_TRUE(finishOrder.front() == 1 || finishOrder.front() == 3);
  auto rank = [&](int i) { return std::find(finishOrder.begin(), finishOrder.end(), i) - finishOrder.begin(); };
  for (int i : {1, 2, 3}) EXPECT_LT(rank(i), rank(0));
  EXPECT_LT(rank(5), rank(4)); // 5 (three tokens) started after 4 (nine)
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(int64_t(got[size_t(i)].tokens.size()), lengths[i]);
    EXPECT_EQ(got[size_t(i)].tokens, alone(m, prompts[size_t(i)], lengths[i]));
  }
  expectNoLeak(e);
}

TEST(Scheduler, CancellingMidPrefillAndMidDecode) {
  TinyModel m(kF32);
  Engine e = m.engine();
  Scheduler s(e, nullptr, {5}); // one prefill token a step beside 4 rows
  Received prefilling, decoding, waiting, other;
  const uint64_t d = s.submit(request(randomTokens(2, 1), 30, decoding));
  s.step();
  s.step();
  ASSERT_FALSE(decoding.tokens.empty());
  const uint64_t p = s.submit(request(randomTokens(40, 2), 5, prefilling));
  s.submit(request(randomTokens(5, 3), 3, other));
  s.step();
  s.step();
  EXPECT_TRUE(prefilling.tokens.empty()); // still prefilling
  s.cancel(p);
  s.cancel(d);
  s.cancel(12345); // unknown: ignored
  s.step();
  EXPECT_TRUE(prefilling.finished);
  EXPECT_EQ(prefilling.reason, FinishReason::cancelled);
  EXPECT_TRUE(decoding.finished);
  EXPECT_EQ(decoding.reason, FinishReason::cancelled);
  EXPECT_LT(decoding.tokens.size(), 30u);
  // A request cancelled before it was admitted.
  const uint64_t w = s.submit(request(randomTokens(3, 4), 3, waiting));
  s.cancel(w);
  s.runUntilIdle();
  EXPECT_EQ(waiting.reason, FinishReason::cancelled);
  EXPECT_TRUE(waiting.tokens.empty());
  EXPECT_EQ(other.reason, FinishReason::length);
  s.cancel(d); // finished already: ignored
  s.step();
  expectNoLeak(e);
}

TEST(Scheduler, StopTokenIdsEndARequestUnsent) {
  TinyModel m(kF32);
  const std::vector<int32_t> prompt = randomTokens(6, 7);
  const std::vector<int32_t> free = alone(m, prompt, 12);
  Engine e = m.engine();
  Scheduler s(e, nullptr);
  Received got;
  GenerationRequest r = request(prompt, 12, got);
  r.stopIds = {free[4]};
  s.submit(std::move(r));
  s.runUntilIdle();
  const size_t first = size_t(std::find(free.begin(), free.end(), free[4]) - free.begin());
  EXPECT_EQ(got.tokens, std::vector<int32_t>(free.begin(), free.begin() + long(first)));
  EXPECT_EQ(got.reason, FinishReason::stop);
  expectNoLeak(e);
}

TEST(Scheduler, StopStringsSpanTokensAndAreNotSent) {
  TinyModel m(kF32);
  std::unique_ptr<Tokenizer> bytes = makeByteTokenizer(300);
  // A prompt that makes the random model say something printable enough:
  // any bytes do, as the check is on the decoded text.
  const std::vector<int32_t> prompt = randomTokens(5, 8);
  Engine e = m.engine();
  Scheduler s(e, bytes.get());
  Received full;
  s.submit(request(prompt, 40, full));
  s.runUntilIdle();
  ASSERT_GE(full.text.size(), 6u) << "the model's 40 tokens decode to too little text";
  // The text's bytes 3 and 4 come from different tokens (each byte id is
  // one byte): stop at them.
  const std::string stop = full.text.substr(3, 2);
  const size_t at = full.text.find(stop);
  Received cut;
  GenerationRequest r = request(prompt, 40, cut);
  r.stopStrings = {"never appears \x01\x02\x03", stop};
  std::vector<std::string> pieces;
  auto inner = r.onEvent;
  r.onEvent = [inner, &pieces](const TokenEvent &ev) {
    inner(ev);
    pieces.push_back(ev.text);
  };
  s.submit(std::move(r));
  s.runUntilIdle();
  EXPECT_EQ(cut.text, full.text.substr(0, at));
  EXPECT_EQ(cut.reason, FinishReason::stop);
  EXPECT_LT(cut.tokens.size(), full.tokens.size());
  // No piece sent ever held the stop string's first byte at its end, as
  // that might have begun the stop string.
  for (const std::string &p : pieces) EXPECT_EQ(p.find(stop), std::string::npos);
  expectNoLeak(e);
}

TEST(Scheduler, MinTokensHoldsBackTheStopIds) {
  TinyModel m(kF32);
  const std::vector<int32_t> prompt = randomTokens(6, 7);
  const int32_t stop = alone(m, prompt, 2)[1]; // greedy's second token
  const size_t least = 5, most = 12;
  // The reference: greedy run alone, the stop id's logit -inf for the
  // first `least` draws; the request ends (unsent) at its first draw after.
  Engine ref = m.engine({false});
  const int seq = ref.open();
  const float *row = ref.prefill(seq, prompt.data(), int64_t(prompt.size()));
  std::vector<int32_t> want;
  bool stopped = false;
  while (want.size() < most) {
    std::vector<float> l(row, row + ref.vocabSize());
    if (want.size() < least) l[size_t(stop)] = -INFINITY;
    const int32_t t = int32_t(std::max_element(l.begin(), l.end()) - l.begin());
    if ((stopped = t == stop)) break;
    want.push_back(t);
    if (want.size() < most) row = ref.decode({seq}, {t});
  }
  ref.close(seq);
  Engine e = m.engine();
  Scheduler s(e, nullptr);
  Received got;
  GenerationRequest r = request(prompt, int64_t(most), got);
  r.stopIds = {stop};
  r.sampling.minTokens = int64_t(least);
  s.submit(std::move(r));
  s.runUntilIdle();
  EXPECT_EQ(got.tokens, want);
  EXPECT_GE(got.tokens.size(), least);
  EXPECT_EQ(got.reason, stopped ? FinishReason::stop : FinishReason::length);
  EXPECT_EQ(got.stopToken, stopped ? stop : -1);
  // More than may be generated is refused, and so is allowing only the stop
  // ids that min_tokens holds back (nothing could be drawn).
  GenerationRequest over = request(prompt, 4, got);
  over.sampling.minTokens = 5;
  EXPECT_THROW(s.submit(std::move(over)), InputError);
  GenerationRequest stuck = request(prompt, 12, got);
  stuck.stopIds = {stop};
  stuck.sampling.minTokens = 2;
  stuck.sampling.allowedTokens = {stop};
  EXPECT_THROW(s.submit(std::move(stuck)), InputError);
  expectNoLeak(e);
}

namespace {

/// A greedy run of 40 tokens after `prompt` on `s` into `out`; each token's
/// text, in order.
std::vector<std::string> freeRun(Scheduler &s, const std::vector<int32_t> &prompt,
                                 Received &out) {
  GenerationRequest r = request(prompt, 40, out);
  std::vector<std::string> texts;
  auto inner = r.onEvent;
  r.onEvent = [inner, &texts](const TokenEvent &ev) {
    inner(ev);
    if (ev.token >= 0) texts.push_back(ev.text);
  };
  s.submit(std::move(r));
  s.runUntilIdle();
  return texts;
}

} // namespace

TEST(Scheduler, MinTokensLetsAStopStringPassUntilThatManyAreGenerated) {
  TinyModel m(kF32);
  std::unique_ptr<Tokenizer> bytes = makeByteTokenizer(300);
  const std::vector<int32_t> prompt = randomTokens(5, 8);
  Engine e = m.engine();
  Scheduler s(e, bytes.get());
  Received full;
  std::vector<size_t> ends; // bytes of text after each token
  for (const std::string &t : freeRun(s, prompt, full))
    ends.push_back((ends.empty() ? 0 : ends.back()) + t.size());
  // A printable byte that comes again later; the token that wrote its first
  // appearance and the one after are within min_tokens, so that appearance
  // does not stop the request, and the next one at or past the text of the
  // first min_tokens - 1 tokens does.
  size_t first = 0;
  while (first < full.text.size() &&
         !(full.text[first] > ' ' && full.text[first] < 127 &&
           full.text.find(full.text[first], first + 1) != std::string::npos))
    ++first;
  ASSERT_LT(first, full.text.size()) << "no printable byte comes twice in: " << full.text;
  const std::string stop(1, full.text[first]);
  const size_t writer = size_t(std::upper_bound(ends.begin(), ends.end(), first) - ends.begin());
  const size_t least = writer + 2;
  ASSERT_LT(least, full.tokens.size());
  const size_t at = full.text.find(stop, ends[least - 2]);
  Received cut;
  GenerationRequest q = request(prompt, 40, cut);
  q.stopStrings = {stop};
  q.sampling.minTokens = int64_t(least);
  s.submit(std::move(q));
  s.runUntilIdle();
  EXPECT_EQ(cut.text, full.text.substr(0, at));
  EXPECT_EQ(cut.reason, at == std::string::npos ? FinishReason::length : FinishReason::stop);
  EXPECT_EQ(cut.stopString, at == std::string::npos ? "" : stop);
  EXPECT_GE(cut.tokens.size(), least);
  // Without min_tokens, the first appearance stops it.
  Received early;
  GenerationRequest plain = request(prompt, 40, early);
  plain.stopStrings = {stop};
  s.submit(std::move(plain));
  s.runUntilIdle();
  EXPECT_EQ(early.text, full.text.substr(0, first));
  EXPECT_EQ(early.stopString, stop);
  expectNoLeak(e);
}

// vLLM's include_stop_str_in_output: a sent stop string or stop id ends the
// request as any other, its text sent with the answer's; the other stops'
// text is not.
TEST(Scheduler, SentStopsComeWithTheText) {
  TinyModel m(kF32);
  std::unique_ptr<Tokenizer> bytes = makeByteTokenizer(300);
  const std::vector<int32_t> prompt = randomTokens(5, 8);
  Engine e = m.engine();
  Scheduler s(e, bytes.get());
  Received full;
  const std::vector<std::string> texts = freeRun(s, prompt, full);
  ASSERT_EQ(texts.size(), full.tokens.size());
  // A token first drawn at i >= 3 that writes one printable byte: as a stop
  // id it ends the request there, its byte sent only when it is a sent one.
  size_t i = 3;
  while (i < texts.size() &&
         !(texts[i].size() == 1 && texts[i][0] > ' ' && texts[i][0] < 127 &&
           std::find(full.tokens.begin(), full.tokens.begin() + long(i), full.tokens[i]) ==
               full.tokens.begin() + long(i)))
    ++i;
  ASSERT_LT(i, texts.size()) << "no token writes a new printable byte in: " << full.text;
  std::string before;
  for (size_t k = 0; k < i; ++k) before += texts[k];
  const std::string stopText = full.text.substr(before.size() > 2 ? before.size() - 2 : 0, 3);
  const size_t at = full.text.find(stopText);
  int32_t never = 0;
  while (std::find(full.tokens.begin(), full.tokens.end(), never) != full.tokens.end()) ++never;
  for (bool sent : {false, true}) {
    Received byId, byString;
    GenerationRequest q = request(prompt, 40, byId);
    q.stopIds = {full.tokens[i], never}; // one never drawn, never sent
    if (sent) q.sentStopIds = {full.tokens[i]};
    s.submit(std::move(q));
    GenerationRequest w = request(prompt, 40, byString);
    w.stopStrings = {"\x01\x02", stopText};
    if (sent) w.sentStopStrings = {stopText};
    s.submit(std::move(w));
    s.runUntilIdle();
    EXPECT_EQ(byId.text, sent ? before + texts[i] : before) << "sent " << sent;
    EXPECT_EQ(byId.reason, FinishReason::stop);
    EXPECT_EQ(byId.stopToken, full.tokens[i]);
    EXPECT_EQ(byString.text, full.text.substr(0, at + (sent ? stopText.size() : 0)))
        << "sent " << sent;
    EXPECT_EQ(byString.stopString, stopText);
  }
  // A sent stop must be one of the stops.
  Received r2;
  GenerationRequest bad = request(prompt, 4, r2);
  bad.sentStopStrings = {"x"};
  EXPECT_THROW(s.submit(std::move(bad)), std::logic_error);
  expectNoLeak(e);
}

TEST(Scheduler, RefusesWhatCouldNeverRun) {
  TinyModel m(kF32);
  Engine e = m.engine();
  Scheduler s(e, nullptr);
  Received r;
  EXPECT_THROW(s.submit(request({}, 4, r)), InputError);
  EXPECT_THROW(s.submit(request({300}, 4, r)), InputError);
  SamplingOptions banned;
  banned.badWords = {{5, 300}}; // a token outside the vocabulary
  EXPECT_THROW(s.submit(request({5}, 4, r, banned)), InputError);
  EXPECT_THROW(s.submit(request({5}, 0, r)), InputError);
  EXPECT_THROW(s.submit(request(randomTokens(60, 1), 5, r)), InputError); // 65 > 64
  EXPECT_NO_THROW(s.submit(request(randomTokens(60, 1), 4, r)));
  EXPECT_THROW(s.submit(request({5}, 4, r, {-1.0, 0, 1.0, 0})), InputError);
  GenerationRequest stops = request({5}, 4, r);
  stops.stopStrings = {"x"};
  EXPECT_THROW(s.submit(std::move(stops)), InputError); // no tokenizer
  for (int64_t n : {int64_t(-2), kMaxTopLogprobs + 1}) {
    GenerationRequest q = request({5}, 4, r);
    q.logprobs = n;
    EXPECT_THROW(s.submit(std::move(q)), InputError) << "logprobs " << n;
  }
  // The prompt's log-probabilities need @score, which this plan lacks.
  GenerationRequest scored = request({5, 6}, 4, r);
  scored.promptLogprobs = 0;
  EXPECT_THROW(s.submit(std::move(scored)), InputError);
  s.runUntilIdle();
  EXPECT_EQ(r.tokens.size(), 4u); // only the one that fit ran
  expectNoLeak(e);
}

TEST(Scheduler, AnEngineFailureEndsTheRunningRequestsOnly) {
  TinyModel m(kF32);
  std::atomic<bool> failing{false};
  Engine e(std::make_unique<kvplan::testing::FailingExecutor>(m.plan, m.weights, failing));
  Scheduler s(e, nullptr);
  std::vector<Received> got(6);
  std::vector<TokenEvent> last(6);
  for (int i = 0; i < 6; ++i) {
    GenerationRequest r = request(randomTokens(4, 60 + i), 10, got[size_t(i)]);
    auto inner = r.onEvent;
    r.onEvent = [inner, &last, i](const TokenEvent &ev) {
      inner(ev);
      if (ev.finished) last[size_t(i)] = ev;
    };
    s.submit(std::move(r));
  }
  s.step();
  s.step();
  failing = true;
  EXPECT_NO_THROW(s.step());
  failing = false;
  // The four that ran end with the error; the two waiting were untouched.
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(got[size_t(i)].reason, FinishReason::error) << i;
    EXPECT_EQ(last[size_t(i)].error, "the engine failed: device lost");
  }
  EXPECT_FALSE(got[4].finished);
  s.runUntilIdle();
  for (int i = 4; i < 6; ++i) {
    EXPECT_EQ(got[size_t(i)].reason, FinishReason::length);
    EXPECT_EQ(got[size_t(i)].tokens, alone(m, randomTokens(4, 60 + i), 10));
  }
  expectNoLeak(e);
}

namespace {

/// The logits each of `tokens` was drawn from when the request runs alone
/// on a fresh engine: prefill's after the prompt, then decode's after each
/// token but the last.
std::vector<std::vector<float>> logitsAlone(const TinyModel &m, const std::vector<int32_t> &prompt,
                                            const std::vector<int32_t> &tokens) {
  Engine e = m.engine({false});
  const int seq = e.open();
  const int64_t vocab = e.vocabSize();
  const float *row = e.prefill(seq, prompt.data(), int64_t(prompt.size()));
  std::vector<std::vector<float>> out;
  for (size_t i = 0; i < tokens.size(); ++i) {
    out.emplace_back(row, row + vocab);
    if (i + 1 < tokens.size()) row = e.decode({seq}, {tokens[i]});
  }
  e.close(seq);
  return out;
}

/// Each token's log-probability and the `top` most likely, checked against
/// the reference log-softmax of `logits` and a full sort.
void expectLogprobs(const std::vector<float> &logits, int32_t token, int64_t top,
                    const TokenLogprobs &got) {
  auto logprob = [&](int32_t id) {
    return kvplan::testing::referenceLogprob(logits.data(), int64_t(logits.size()), id);
  };
  EXPECT_EQ(got.chosen.token, token);
  EXPECT_NEAR(got.chosen.logprob, logprob(token), 1e-6); // float exponentials
  std::vector<int32_t> order(logits.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = int32_t(i);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return logits[size_t(a)] > logits[size_t(b)]; });
  ASSERT_EQ(got.top.size(), size_t(top));
  for (size_t i = 0; i < got.top.size(); ++i) {
    EXPECT_EQ(got.top[i].token, order[i]) << "rank " << i;
    EXPECT_NEAR(got.top[i].logprob, logprob(order[i]), 1e-6);
  }
}

/// Request i's sampling in the mixed loads below: greedy and sampled in
/// turn, the sampled with seed `seed` + i.
SamplingOptions alternating(size_t i, uint64_t seed) {
  return i % 2 ? SamplingOptions{0.8, 0, 0.9, seed + i} : SamplingOptions{};
}

/// Submits the load, `first` new tokens for request 0 and 5 fewer for each
/// of the next two (then again), sampled as alternating(i, seed), each set
/// up by `ask` with asks[i % 4].
void submitMixed(Scheduler &s, Load &l, std::vector<Received> &got, int64_t first, uint64_t seed,
                 const int64_t (&asks)[4], int64_t GenerationRequest::*ask) {
  for (size_t i = 0; i < got.size(); ++i) {
    l.maxNew[i] = first - int64_t(i % 3) * 5;
    GenerationRequest r = request(l.prompts[i], l.maxNew[i], got[i], alternating(i, seed));
    r.*ask = asks[i % 4];
    s.submit(std::move(r));
  }
}

} // namespace

TEST(Scheduler, LogprobsAreTheModelsLogSoftmaxWhateverTheBatch) {
  // Requests asking for none, 0, 3 and 20 alternatives side by side, greedy
  // and sampled, in a pool that preempts: each token's log-probabilities
  // are those of the logits it was drawn from when run alone.
  TinyModel m(std::string(kF32) + "kv_pages = 18\n");
  Engine e = m.engine();
  Scheduler s(e, nullptr);
  Load l = makeLoad(7);
  const int64_t asks[] = {-1, 0, 3, 20};
  std::vector<Received> got(l.prompts.size());
  submitMixed(s, l, got, 30, 77, asks, &GenerationRequest::logprobs);
  s.runUntilIdle();
  EXPECT_GT(s.stats().preemptions, 0);
  for (size_t i = 0; i < got.size(); ++i) {
    SCOPED_TRACE("request " + std::to_string(i));
    const int64_t top = asks[i % 4];
    ASSERT_EQ(got[i].logprobs.size(), top < 0 ? 0 : got[i].tokens.size());
    if (top < 0) continue;
    const std::vector<std::vector<float>> rows = logitsAlone(m, l.prompts[i], got[i].tokens);
    for (size_t t = 0; t < rows.size(); ++t)
      expectLogprobs(rows[t], got[i].tokens[t], top, got[i].logprobs[t]);
    if (i % 2 == 0) // greedy: the token drawn is the most likely
      for (const TokenLogprobs &lp : got[i].logprobs)
        if (!lp.top.empty()) {
          EXPECT_EQ(lp.top[0].token, lp.chosen.token);
        }
  }
  expectNoLeak(e);
}

TEST(Scheduler, LogprobsOfTokensAVerifyCallKept) {
  // With prompt lookup on a repetitive prompt, most tokens come from verify
  // calls, whose rows give their log-probabilities.
  TinyModel m(std::string(kF32) + "speculate = 4\n");
  Engine e = m.engine();
  PromptLookup lookup;
  SchedulerOptions o;
  o.proposer = &lookup;
  Scheduler s(e, nullptr, o);
  std::vector<int32_t> prompt;
  for (int i = 0; i < 4; ++i)
    for (int32_t t : {40, 41, 42, 43, 44}) prompt.push_back(t);
  Received got;
  GenerationRequest r = request(prompt, 24, got);
  r.logprobs = 2;
  s.submit(std::move(r));
  s.runUntilIdle();
  EXPECT_GT(s.stats().verifyCalls, 0);
  ASSERT_EQ(got.logprobs.size(), got.tokens.size());
  const std::vector<std::vector<float>> rows = logitsAlone(m, prompt, got.tokens);
  for (size_t t = 0; t < rows.size(); ++t)
    expectLogprobs(rows[t], got.tokens[t], 2, got.logprobs[t]);
  expectNoLeak(e);
}

TEST(Scheduler, MinPRequestsAreSpeculatedOnAndMinTokensOnesDecode) {
  // min-p 1 leaves only the likeliest token: at temperature 1.5 the answer
  // is greedy's, through verify calls (the acceptance rule knows min-p).
  // min_tokens changes rows by how many tokens came, which the rule does
  // not know: such a request decodes.
  TinyModel m(std::string(kF32) + "speculate = 4\n");
  std::vector<int32_t> prompt;
  for (int i = 0; i < 4; ++i)
    for (int32_t t : {40, 41, 42, 43, 44}) prompt.push_back(t);
  const std::vector<int32_t> greedy = alone(m, prompt, 24);
  for (bool minTokens : {false, true}) {
    SCOPED_TRACE(minTokens ? "min_tokens" : "min-p");
    Engine e = m.engine();
    PromptLookup lookup;
    SchedulerOptions o;
    o.proposer = &lookup;
    Scheduler s(e, nullptr, o);
    Received got;
    SamplingOptions sampling{1.5, 0, 1.0, 9};
    sampling.minP = 1;
    sampling.minTokens = minTokens ? 3 : 0;
    s.submit(request(prompt, 24, got, sampling));
    s.runUntilIdle();
    EXPECT_EQ(got.tokens, greedy);
    if (minTokens)
      EXPECT_EQ(s.stats().verifyCalls, 0);
    else
      EXPECT_GT(s.stats().draftsAccepted, 0);
    expectNoLeak(e);
  }
}

TEST(Scheduler, PenaltiesFollowEachRequestsOwnTokens) {
  // Greedy requests with and without penalties side by side, in a pool
  // that preempts: each request's tokens are its own penalised argmax run
  // alone, the others' plain greedy ones.
  TinyModel m(std::string(kF32) + "kv_pages = 18\n");
  Engine e = m.engine();
  Scheduler s(e, nullptr);
  Load l = makeLoad(9);
  std::vector<SamplingOptions> options(l.prompts.size());
  std::vector<Received> got(l.prompts.size());
  for (size_t i = 0; i < got.size(); ++i) {
    l.maxNew[i] = 30 - int64_t(i % 3) * 5;
    if (i % 3 == 1) options[i].repetitionPenalty = 1.3;
    if (i % 3 == 2) options[i].frequencyPenalty = 0.6, options[i].presencePenalty = 0.3;
    s.submit(request(l.prompts[i], l.maxNew[i], got[i], options[i]));
  }
  s.runUntilIdle();
  EXPECT_GT(s.stats().preemptions, 0);
  int changed = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    Engine fresh = m.engine({false});
    const std::vector<int32_t> want =
        kvplan::testing::penalisedAlone(fresh, l.prompts[i], l.maxNew[i], options[i]);
    EXPECT_EQ(got[i].tokens, want) << "request " << i;
    changed += options[i].changesRow() && want != alone(m, l.prompts[i], l.maxNew[i]);
  }
  EXPECT_GT(changed, 4) << "the penalties change most penalised requests' tokens";
  expectNoLeak(e);
}

namespace {

/// The logits after each prompt token, the prompt run alone one token at a
/// time (prefill of the first, then decode): row i is the distribution of
/// prompt token i + 1.
std::vector<std::vector<float>> promptRowsAlone(const TinyModel &m,
                                                const std::vector<int32_t> &prompt) {
  Engine e = m.engine({false});
  const int seq = e.open();
  const int64_t vocab = e.vocabSize();
  const float *row = e.prefill(seq, prompt.data(), 1);
  std::vector<std::vector<float>> out;
  for (size_t i = 1; i < prompt.size(); ++i) {
    out.emplace_back(row, row + vocab);
    row = e.decode({seq}, {prompt[i]});
  }
  e.close(seq);
  return out;
}

} // namespace

TEST(Scheduler, PromptLogprobsAreEachTokensGivenTheOnesBefore) {
  // Requests asking for their prompt's log-probabilities (0, 3 and 20
  // alternatives) beside requests that do not, sampled and greedy, in a
  // pool that preempts, with @score at 3 rows (prompts take several
  // calls): each prompt token's entry is the log-softmax of the logits
  // after the tokens before it, run alone token by token, and what the
  // requests generate is what they generate alone.
  TinyModel m(std::string(kF32) + "kv_pages = 18\nscore_rows = 3\n");
  Engine e = m.engine();
  Scheduler s(e, nullptr);
  Load l = makeLoad(11, 9); // a shared start the prefix cache holds
  const int64_t asks[] = {-1, 0, 3, 20};
  std::vector<Received> got(l.prompts.size());
  submitMixed(s, l, got, 24, 91, asks, &GenerationRequest::promptLogprobs);
  s.runUntilIdle();
  EXPECT_GT(s.stats().preemptions, 0);
  EXPECT_GT(s.stats().scoreCalls, 0);
  for (size_t i = 0; i < got.size(); ++i) {
    SCOPED_TRACE("request " + std::to_string(i));
    EXPECT_EQ(got[i].tokens, alone(m, l.prompts[i], l.maxNew[i], alternating(i, 91)));
    const int64_t top = asks[i % 4];
    ASSERT_EQ(got[i].prompt.has_value(), top >= 0);
    if (top < 0) continue;
    const std::vector<std::vector<float>> rows = promptRowsAlone(m, l.prompts[i]);
    ASSERT_EQ(got[i].prompt->size(), rows.size());
    for (size_t t = 0; t < rows.size(); ++t)
      expectLogprobs(rows[t], l.prompts[i][t + 1], top, (*got[i].prompt)[t]);
  }
  expectNoLeak(e);
}

TEST(Scheduler, APromptScoredAloneGeneratesNothing) {
  // max new tokens 0: the prompt is scored, one event carries it, and the
  // request ends with length. A one-token prompt has nothing to score. A
  // scored prompt takes nothing from the prefix cache, though its pages
  // enter it.
  TinyModel m(std::string(kF32) + "score_rows = 4\n");
  Engine e = m.engine();
  Scheduler s(e, nullptr);
  const std::vector<int32_t> prompt = randomTokens(14, 5);
  Received plain, scored, one;
  s.submit(request(prompt, 3, plain));
  s.runUntilIdle();
  const int64_t cachedBefore = s.stats().cachedPromptTokens;
  GenerationRequest r = request(prompt, 0, scored);
  r.promptLogprobs = 2;
  s.submit(std::move(r));
  GenerationRequest single = request({7}, 2, one);
  single.promptLogprobs = 1;
  s.submit(std::move(single));
  s.runUntilIdle();
  EXPECT_EQ(s.stats().cachedPromptTokens, cachedBefore);
  EXPECT_EQ(scored.events, 1);
  EXPECT_TRUE(scored.tokens.empty());
  EXPECT_EQ(scored.reason, FinishReason::length);
  ASSERT_TRUE(scored.prompt);
  const std::vector<std::vector<float>> rows = promptRowsAlone(m, prompt);
  ASSERT_EQ(scored.prompt->size(), rows.size());
  for (size_t t = 0; t < rows.size(); ++t)
    expectLogprobs(rows[t], prompt[t + 1], 2, (*scored.prompt)[t]);
  ASSERT_TRUE(one.prompt);
  EXPECT_TRUE(one.prompt->empty());
  EXPECT_EQ(one.tokens, alone(m, {7}, 2));
  // Without the prompt's log-probabilities, max new tokens 0 is refused.
  Received none;
  EXPECT_THROW(s.submit(request(prompt, 0, none)), InputError);
  GenerationRequest tooMany = request(prompt, 1, none);
  tooMany.promptLogprobs = kMaxTopLogprobs + 1;
  EXPECT_THROW(s.submit(std::move(tooMany)), InputError);
  expectNoLeak(e);
}
