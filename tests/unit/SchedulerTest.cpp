// The scheduler on a small compiled model with random weights: greedy
// outputs equal each request run alone on a fresh engine, whatever the
// batching, prefix-cache hits, preemptions or token budget; requests come
// and go in any order, stop where they should and give back every page.
#include "codegen/Compiler.h"
#include "frontend/ConfigParser.h"
#include "plan/WeightPacking.h"
#include "runtime/Scheduler.h"

#include <gtest/gtest.h>

#include <map>
#include <random>

using namespace kvplan;

namespace {

/// vocab 300 holds the byte tokenizer's ids (3..258) and more.
struct TinyModel {
  ModelConfig cfg;
  Plan plan;
  std::vector<char> weights;

  explicit TinyModel(const std::string &compile, int64_t kvPages = 0) {
    const std::string text =
        "[model]\nname = \"sched\"\narchitecture = \"llama\"\nhidden_size = 64\n"
        "intermediate_size = 96\nnum_layers = 2\nnum_heads = 4\nnum_kv_heads = 2\n"
        "vocab_size = 300\nmax_position_embeddings = 128\nrms_norm_eps = 1e-5\n"
        "bos_token_id = 1\neos_token_id = 2\n[compile]\n" + compile;
    cfg = parseTomlSpec(text, "sched.toml", [](const std::string &w) { ADD_FAILURE() << w; });
    validate(cfg);
    plan = compileModel(cfg).plan;
    if (kvPages) plan.kvCache.pages = kvPages; // a pool smaller than the batch's
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
  int events = 0;
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
    out.text += e.text;
    if (e.finished) {
      out.finished = true;
      out.reason = e.reason;
    }
  };
  return r;
}

/// The request run alone, without the scheduler, on a fresh engine.
std::vector<int32_t> alone(const TinyModel &m, const std::vector<int32_t> &prompt, int64_t maxNew,
                           SamplingOptions sampling = {}) {
  Engine e = m.engine({false});
  e.setSampling(sampling);
  const int seq = e.open();
  std::vector<int32_t> out{e.prefillNext(seq, prompt.data(), int64_t(prompt.size()))};
  while (int64_t(out.size()) < maxNew) out.push_back(e.decodeNext({seq}, {out.back()})[0]);
  e.close(seq);
  return out;
}

/// Every sequence closed and every page back in the pool, consistent.
void expectNoLeak(Engine &e) {
  e.pages().check();
  EXPECT_EQ(e.openSequences(), 0);
  EXPECT_EQ(e.pages().available(), e.pages().size());
}

struct Load {
  std::vector<std::vector<int32_t>> prompts;
  std::vector<int64_t> maxNew;
};

/// Twelve requests of 1 to 30 prompt tokens and 1 to 20 new ones; with a
/// shared start when `shared` > 0.
Load makeLoad(uint32_t seed, int shared = 0) {
  std::mt19937 rng(seed);
  const std::vector<int32_t> common = randomTokens(shared, seed + 100);
  Load l;
  for (int i = 0; i < 12; ++i) {
    std::vector<int32_t> p = common;
    std::vector<int32_t> own = randomTokens(1 + int(rng() % 30), seed * 31 + uint32_t(i));
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
