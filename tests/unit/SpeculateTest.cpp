// Speculative decoding: the compiled @verify entry point against decode,
// rollback, proposers, the acceptance rule's distribution, and greedy
// outputs identical with and without speculation.
#include "codegen/Compiler.h"
#include "frontend/ConfigParser.h"
#include "plan/WeightPacking.h"
#include "runtime/Engine.h"
#include "runtime/Sampler.h"
#include "runtime/Scheduler.h"
#include "runtime/Speculate.h"
#include "support/Error.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <random>

using namespace kvplan;
namespace fs = std::filesystem;

namespace {

constexpr int64_t kSpecVocab = 97;

ModelConfig config(const std::string &compile, int64_t vocab = kSpecVocab,
                   const std::string &architecture = "architecture = \"llama\"\n") {
  std::string text = "[model]\nname = \"spec\"\n" + architecture + "hidden_size = 64\n"
                     "intermediate_size = 96\nnum_layers = 2\nnum_heads = 4\nnum_kv_heads = 2\n"
                     "vocab_size = " + std::to_string(vocab) + "\n"
                     "max_position_embeddings = 128\nrms_norm_eps = 1e-5\nbos_token_id = 1\n"
                     "eos_token_id = 2\n[compile]\n" + compile;
  ModelConfig cfg = parseTomlSpec(text, "spec.toml", [](const std::string &w) { ADD_FAILURE() << w; });
  validate(cfg);
  return cfg;
}

/// A compiled model with random weights.
struct SpecModel {
  ModelConfig cfg;
  Plan plan;
  std::vector<char> weights;
  explicit SpecModel(const std::string &compile, uint64_t seed = 5, int64_t vocab = kSpecVocab,
                     const std::string &architecture = "architecture = \"llama\"\n")
      : cfg(config(compile, vocab, architecture)) {
    plan = compileModel(cfg).plan;
    auto source = openWeights("random:" + std::to_string(seed), cfg.model);
    weights = packWeightsInMemory(plan, *source);
  }
  Engine engine(bool prefixCache = true) const {
    return Engine(plan, weights.data(), weights.size(), 2, EngineOptions{prefixCache});
  }
};

const char *kSpec4 = "max_seq_len = 48\npage_size = 4\nprefill_chunk = 8\nmax_batch = 2\n"
                     "kv_pages = 40\nspeculate = 4\n";

std::vector<int32_t> randomIds(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (int32_t &v : t) v = int32_t(rng() % uint32_t(kSpecVocab));
  return t;
}

std::vector<float> row(const float *l, int64_t i) {
  return std::vector<float>(l + i * kSpecVocab, l + (i + 1) * kSpecVocab);
}

/// The logits after each of `tokens`, decoded one at a time after `prompt`.
std::vector<std::vector<float>> decodeOneByOne(const SpecModel &c,
                                               const std::vector<int32_t> &prompt,
                                               const std::vector<int32_t> &tokens) {
  Engine e = c.engine();
  int seq = e.open();
  e.prefill(seq, prompt.data(), int64_t(prompt.size()));
  std::vector<std::vector<float>> out;
  for (int32_t t : tokens) out.push_back(row(e.decode({seq}, {t}), 0));
  return out;
}

} // namespace

TEST(Speculate, PlanHasAVerifyEntryOfKPlusOneRows) {
  SpecModel c(kSpec4);
  ASSERT_EQ(c.plan.entryPoints.count("verify"), 1u);
  const EntryPoint &v = c.plan.entryPoints.at("verify");
  EXPECT_EQ(v.rows, 5);
  EXPECT_EQ(v.results.at(0).rows(), 5); // every row's logits: not pruned
  EXPECT_EQ(c.plan.entryPoints.at("prefill").results.at(0).rows(), 1);
  EXPECT_EQ(c.plan.settings.speculate, 4);
  MemoryBill bill = c.plan.memoryBill();
  EXPECT_GT(bill.arenaBytes.at("verify"), 0);
  // The plan round-trips through JSON with its verify entry.
  Plan back = planFromJson(toJson(c.plan));
  EXPECT_EQ(back.settings.speculate, 4);
  EXPECT_EQ(back.entryPoints.at("verify").rows, 5);
  // Without --speculate there is none.
  SpecModel plain("max_seq_len = 48\n");
  EXPECT_EQ(plain.plan.entryPoints.count("verify"), 0u);
  EXPECT_EQ(plain.engine().verifyRows(), 0);
}

TEST(Speculate, SettingsRefuseKOutOfRange) {
  for (const char *bad : {"speculate = 9\n", "speculate = -1\n",
                          "max_seq_len = 4\npage_size = 4\nprefill_chunk = 4\nspeculate = 4\n"}) {
    SCOPED_TRACE(bad);
    try {
      config(std::string(bad));
      FAIL() << "accepted";
    } catch (const InputError &e) {
      EXPECT_NE(std::string(e.what()).find("speculate"), std::string::npos) << e.what();
    }
  }
  // From the command line, the message names the flag.
  ModelConfig cfg = config("max_seq_len = 4\npage_size = 4\nprefill_chunk = 4\n");
  SettingOverrides o;
  o.speculate = 4;
  try {
    applyAndValidate(cfg, o);
    FAIL() << "accepted";
  } catch (const InputError &e) {
    EXPECT_NE(std::string(e.what()).find("'--speculate'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("max_seq_len 4"), std::string::npos) << e.what();
  }
}

TEST(Speculate, VerifyIsBitIdenticalToDecodingOneByOne) {
  SpecModel c(kSpec4);
  // Offsets before, at and across page boundaries (pages of 4).
  for (int promptLen : {1, 3, 4, 6, 11}) {
    SCOPED_TRACE("prompt of " + std::to_string(promptLen));
    const std::vector<int32_t> prompt = randomIds(promptLen, 7);
    const std::vector<int32_t> rows = randomIds(5, 100 + uint32_t(promptLen));
    const auto expected = decodeOneByOne(c, prompt, rows);
    for (int64_t count : {5, 3, 1}) {
      Engine e = c.engine();
      int seq = e.open();
      e.prefill(seq, prompt.data(), int64_t(prompt.size()));
      const float *l = e.verify(seq, rows.data(), count);
      EXPECT_EQ(e.length(seq), promptLen + count);
      for (int64_t i = 0; i < count; ++i)
        EXPECT_EQ(row(l, i), expected[size_t(i)]) << "row " << i << " of " << count;
    }
  }
}

TEST(Speculate, RollbackAtPageBoundariesFreesPagesAndForgetsTheTokens) {
  SpecModel c(kSpec4);
  const std::vector<int32_t> prompt = randomIds(7, 3);
  const std::vector<int32_t> wrong = randomIds(5, 4), right = randomIds(6, 5);
  for (int64_t keep : {0, 1, 2}) {
    SCOPED_TRACE("keep " + std::to_string(keep));
    Engine e = c.engine(false);
    int seq = e.open();
    e.prefill(seq, prompt.data(), 7); // 2 pages, the second with room for 1
    const int64_t free0 = e.freePages();
    e.verify(seq, wrong.data(), 5); // positions 7..11: into a third page
    EXPECT_EQ(e.freePages(), free0 - 1);
    e.truncate(seq, 7 + keep);     // back to 7, 8 (page boundary) or 9 tokens
    EXPECT_EQ(e.length(seq), 7 + keep);
    EXPECT_EQ(e.freePages(), free0 - (7 + keep > 8 ? 1 : 0));
    e.pages().check();
    // Going on gives exactly what a sequence that never saw the rejected
    // tokens gives.
    std::vector<int32_t> kept(prompt);
    kept.insert(kept.end(), wrong.begin(), wrong.begin() + keep);
    const auto expected = decodeOneByOne(c, kept, right);
    const float *l = e.verify(seq, right.data(), 5);
    for (int64_t i = 0; i < 5; ++i) EXPECT_EQ(row(l, i), expected[size_t(i)]) << "row " << i;
    e.truncate(seq, e.length(seq) - 5);
    for (size_t i = 0; i < right.size(); ++i)
      EXPECT_EQ(row(e.decode({seq}, {right[i]}), 0), expected[i]) << "decode " << i;
  }
}

TEST(Speculate, RollbackNeverEntersPagesSharedThroughThePrefixCache) {
  SpecModel c(kSpec4);
  Engine e = c.engine(true);
  const std::vector<int32_t> prompt = randomIds(6, 9);
  int seq = e.open();
  e.prefill(seq, prompt.data(), 6);
  const std::vector<int32_t> drafts = randomIds(5, 10);
  e.verify(seq, drafts.data(), 5); // 11 tokens: pages 0 and 1 are full
  // The verified pages are not offered to the cache until kept.
  EXPECT_EQ(e.publishedTokens(seq), 4);
  EXPECT_THROW(e.truncate(seq, 3), std::logic_error); // inside the shared first page
  e.truncate(seq, 9);                                  // keeps 3 drafts: page 1 full
  EXPECT_EQ(e.publishedTokens(seq), 8);
  EXPECT_THROW(e.truncate(seq, 7), std::logic_error);
  e.truncate(seq, 8);
  EXPECT_EQ(e.length(seq), 8);
  e.pages().check();
  // A second sequence with the same start reuses both pages.
  std::vector<int32_t> same(prompt);
  same.insert(same.end(), drafts.begin(), drafts.begin() + 3);
  int other = e.open();
  EXPECT_EQ(e.reuse(other, same.data(), int64_t(same.size())), 8);
}

TEST(Speculate, VerifyInsideABatchLeavesTheOtherSequencesAlone) {
  SpecModel c(kSpec4);
  const std::vector<int32_t> pa = randomIds(5, 21), pb = randomIds(9, 22);
  const std::vector<int32_t> ta = randomIds(8, 23), tb = randomIds(8, 24);
  const auto expectA = decodeOneByOne(c, pa, ta), expectB = decodeOneByOne(c, pb, tb);
  Engine e = c.engine();
  int a = e.open(), b = e.open();
  e.prefill(a, pa.data(), 5);
  e.prefill(b, pb.data(), 9);
  // Step 1: both decode together. Step 2: a verifies 4 tokens (keeping 2),
  // b decodes. Step 3: both decode. Step 4: b verifies, a decodes.
  const float *l = e.decode({a, b}, {ta[0], tb[0]});
  EXPECT_EQ(row(l, 0), expectA[0]);
  EXPECT_EQ(row(l, 1), expectB[0]);
  l = e.verify(a, &ta[1], 4);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(row(l, i), expectA[size_t(1 + i)]);
  e.truncate(a, 5 + 1 + 2);
  EXPECT_EQ(row(e.decode({b}, {tb[1]}), 0), expectB[1]);
  l = e.decode({a, b}, {ta[3], tb[2]});
  EXPECT_EQ(row(l, 0), expectA[3]);
  EXPECT_EQ(row(l, 1), expectB[2]);
  l = e.verify(b, &tb[3], 5);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(row(l, i), expectB[size_t(3 + i)]);
  EXPECT_EQ(row(e.decode({a}, {ta[4]}), 0), expectA[4]);
  e.pages().check();
}

TEST(Speculate, PromptLookupProposesWhatFollowedTheLatestLongestMatch) {
  PromptLookup pl(3, 1);
  // "5 6 7" occurs earlier twice; the later one is followed by 9 8.
  std::vector<int32_t> c = {5, 6, 7, 1, 2, 5, 6, 7, 9, 8, 4, 5, 6, 7};
  EXPECT_EQ(pl.propose(0, c, 2).tokens, (std::vector<int32_t>{9, 8}));
  EXPECT_EQ(pl.propose(0, c, 10).tokens, (std::vector<int32_t>{9, 8, 4, 5, 6, 7}));
  // A longer n-gram wins over a later shorter one: "2 3" matches at 1, "3" at 5.
  EXPECT_EQ(pl.propose(0, {2, 3, 4, 0, 0, 3, 7, 2, 3}, 1).tokens, (std::vector<int32_t>{4}));
  // Nothing repeats: no proposal.
  EXPECT_TRUE(pl.propose(0, {1, 2, 3, 4}, 4).tokens.empty());
  EXPECT_TRUE(pl.propose(0, {1}, 4).tokens.empty());
}

namespace {

/// Pearson's chi-square of `counts` against probabilities `p`.
double chiSquare(const std::vector<int64_t> &counts, const std::vector<double> &p, int64_t n) {
  double x = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    const double e = p[i] * double(n);
    x += (double(counts[i]) - e) * (double(counts[i]) - e) / e;
  }
  return x;
}

// A tiny vocabulary where p and q differ everywhere.
const std::vector<double> kP = {0.45, 0.25, 0.2, 0.1};
const std::vector<float> kQ = {0.1f, 0.2f, 0.3f, 0.4f};
// 99.9th percentile of chi-square with 3 degrees of freedom.
constexpr double kChi3 = 16.27;

using Rule = std::function<int32_t(int32_t draft, std::mt19937_64 &)>;

/// Draws a draft from q, runs `rule`, and counts the first token it yields.
double firstTokenChiSquare(const Rule &rule, int64_t n) {
  std::mt19937_64 rng(1234);
  std::discrete_distribution<int32_t> fromQ(kQ.begin(), kQ.end());
  std::vector<int64_t> counts(4, 0);
  for (int64_t i = 0; i < n; ++i) ++counts[size_t(rule(fromQ(rng), rng))];
  return chiSquare(counts, kP, n);
}

} // namespace

TEST(Speculate, SpeculativeSamplingKeepsTheTargetDistribution) {
  // p for the draft's row and for the row after it (the same here).
  std::vector<double> p2(kP);
  p2.insert(p2.end(), kP.begin(), kP.end());
  const Rule exact = [&](int32_t x, std::mt19937_64 &rng) {
    Verdict v = speculativeSample(&x, 1, p2.data(), kQ.data(), 4, rng);
    return v.accepted == 1 ? x : v.next;
  };
  EXPECT_LT(firstTokenChiSquare(exact, 200000), kChi3);
  // Wrong rules the test must catch: always accepting; accepting with
  // p/q but redrawing from p instead of the residual.
  const Rule always = [](int32_t x, std::mt19937_64 &) { return x; };
  EXPECT_GT(firstTokenChiSquare(always, 200000), kChi3 * 10);
  const Rule redrawFromP = [&](int32_t x, std::mt19937_64 &rng) {
    if (std::uniform_real_distribution<double>(0, 1)(rng) < std::min(1.0, kP[size_t(x)] / kQ[size_t(x)]))
      return x;
    return std::discrete_distribution<int32_t>(kP.begin(), kP.end())(rng);
  };
  EXPECT_GT(firstTokenChiSquare(redrawFromP, 200000), kChi3);
  // Prompt lookup's point mass: a fixed draft token is accepted with
  // probability p(x) and otherwise replaced from p without x.
  for (int32_t fixed : {0, 3}) {
    const Rule point = [&](int32_t, std::mt19937_64 &rng) {
      int32_t x = fixed;
      Verdict v = speculativeSample(&x, 1, p2.data(), nullptr, 4, rng);
      return v.accepted == 1 ? x : v.next;
    };
    EXPECT_LT(firstTokenChiSquare(point, 200000), kChi3) << "point mass at " << fixed;
  }
}

TEST(Speculate, TwoDraftsKeepTheJointDistribution) {
  // Rows of p differ per position; the pair of the first two tokens must
  // follow p0 x p1 (15 degrees of freedom; 99.9th percentile 37.70).
  const std::vector<double> p = {0.45, 0.25, 0.2, 0.1, 0.1, 0.1, 0.3, 0.5, 0.25, 0.25, 0.25, 0.25};
  std::vector<float> q(kQ);
  q.insert(q.end(), {0.4f, 0.3f, 0.2f, 0.1f});
  std::mt19937_64 rng(99);
  std::discrete_distribution<int32_t> q0(q.begin(), q.begin() + 4), q1(q.begin() + 4, q.end());
  std::discrete_distribution<int32_t> p1(p.begin() + 4, p.begin() + 8);
  const int64_t n = 300000;
  std::vector<int64_t> counts(16, 0);
  std::vector<double> expected(16);
  for (int i = 0; i < 16; ++i) expected[size_t(i)] = p[size_t(i / 4)] * p[size_t(4 + i % 4)];
  for (int64_t t = 0; t < n; ++t) {
    int32_t d[2] = {q0(rng), q1(rng)};
    Verdict v = speculativeSample(d, 2, p.data(), q.data(), 4, rng);
    int32_t first = v.accepted >= 1 ? d[0] : v.next;
    int32_t second = v.accepted >= 2 ? d[1] : v.accepted == 1 ? v.next : p1(rng);
    ++counts[size_t(first * 4 + second)];
  }
  EXPECT_LT(chiSquare(counts, expected, n), 37.70);
}

namespace {

std::vector<int32_t> greedyPlain(const SpecModel &c, const std::vector<int32_t> &prompt, int n) {
  Engine e = c.engine();
  int seq = e.open();
  const float *l = e.prefill(seq, prompt.data(), int64_t(prompt.size()));
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) {
    out.push_back(argmax(l, c.cfg.model.vocabSize));
    if (i + 1 < n) l = e.decode({seq}, {out.back()});
  }
  return out;
}

std::vector<int32_t> greedySpeculative(Engine &e, Proposer &p, const std::vector<int32_t> &prompt,
                                       int n, SpeculationStats *stats = nullptr) {
  SpeculativeRequest req;
  req.prompt = prompt;
  req.maxNew = n;
  std::vector<int32_t> out;
  SpeculationStats s = generateSpeculatively(e, p, req, [&](int32_t t) { out.push_back(t); });
  if (stats) *stats = s;
  return out;
}

} // namespace

TEST(Speculate, GreedyOutputIsIdenticalWithPromptLookup) {
  SpecModel c(kSpec4);
  // A repetitive prompt, so that lookups find matches.
  std::vector<int32_t> prompt = randomIds(6, 31);
  prompt.insert(prompt.end(), prompt.begin(), prompt.end());
  const std::vector<int32_t> expected = greedyPlain(c, prompt, 30);
  for (bool cache : {true, false}) {
    Engine e = c.engine(cache);
    PromptLookup pl;
    SpeculationStats s;
    EXPECT_EQ(greedySpeculative(e, pl, prompt, 30, &s), expected) << "prefix cache " << cache;
    EXPECT_GT(s.verifySteps, 0);
    EXPECT_EQ(e.openSequences(), 0);
  }
}

// Where the sliding layers have a pool of their own (layer 0 under a window
// of 6, layer 1 reading every key), a verify call writes and a rollback
// gives back pages in both pools alike, and never rolls back behind the
// sliding layers' window.
TEST(Speculate, GreedyOutputIsIdenticalOverTwoPools) {
  SpecModel c(kSpec4, 5, kSpecVocab,
              "architecture = \"gemma3\"\nsliding_window = 6\nfull_attention_layers = [1]\n");
  ASSERT_EQ(c.plan.windowCache.layers, 1);
  std::vector<int32_t> prompt = randomIds(9, 32);
  prompt.insert(prompt.end(), prompt.begin(), prompt.end());
  const std::vector<int32_t> expected = greedyPlain(c, prompt, 24);
  for (bool cache : {true, false}) {
    Engine e = c.engine(cache);
    PromptLookup pl;
    SpeculationStats s;
    EXPECT_EQ(greedySpeculative(e, pl, prompt, 24, &s), expected) << "prefix cache " << cache;
    EXPECT_GT(s.verifySteps, 0);
    EXPECT_EQ(e.openSequences(), 0);
    e.checkPools();
    EXPECT_EQ(e.freeWindowPages(), e.windowPages()->size());
  }
  // A rollback behind the sliding layers' window is refused: at 18 tokens
  // the next row reads keys from 13 on, and pages 0 to 2 (positions 0 to
  // 11) are given back; back to 17 tokens the next row reads from 12 on,
  // back to 16 from 11 on, in page 2.
  Engine e = c.engine(false);
  const int seq = e.open();
  e.prefill(seq, prompt.data(), 18);
  EXPECT_THROW(e.truncate(seq, 16), std::logic_error);
  EXPECT_NO_THROW(e.truncate(seq, 17));
  EXPECT_EQ(e.length(seq), 17);
}

TEST(Speculate, GreedyOutputIsIdenticalWithADraftModel) {
  SpecModel c(kSpec4);
  const std::vector<int32_t> prompt = randomIds(9, 41);
  const std::vector<int32_t> expected = greedyPlain(c, prompt, 25);
  // The target itself as draft: every draft is kept.
  {
    Engine e = c.engine(), d = c.engine(false);
    DraftModel dm(d, kSpecVocab, SamplingOptions{}, "self");
    SpeculationStats s;
    EXPECT_EQ(greedySpeculative(e, dm, prompt, 25, &s), expected);
    EXPECT_EQ(s.accepted, s.proposed);
    EXPECT_GT(s.tokensPerVerify(), 4.0);
  }
  // Another model (other weights): most drafts are rejected, and the
  // output is the same.
  {
    SpecModel other("max_seq_len = 48\npage_size = 4\n", 77);
    Engine e = c.engine(), d = other.engine(false);
    DraftModel dm(d, kSpecVocab, SamplingOptions{}, "other");
    SpeculationStats s;
    EXPECT_EQ(greedySpeculative(e, dm, prompt, 25, &s), expected);
    EXPECT_LT(s.accepted, s.proposed);
  }
}

TEST(Speculate, ADraftWithAnotherVocabularyIsRefused) {
  SpecModel c(kSpec4);
  SpecModel other("max_seq_len = 48\n", 5, 101);
  Engine d = other.engine(false);
  try {
    DraftModel dm(d, kSpecVocab, SamplingOptions{}, "small.kvp");
    FAIL() << "accepted";
  } catch (const InputError &e) {
    EXPECT_NE(std::string(e.what()).find("small.kvp"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("101"), std::string::npos) << e.what();
  }
}

TEST(Speculate, SamplingRunsAndStopsAtTheBudget) {
  SpecModel c(kSpec4);
  Engine e = c.engine();
  PromptLookup pl;
  SpeculativeRequest req;
  req.prompt = randomIds(10, 51);
  req.prompt.insert(req.prompt.end(), req.prompt.begin(), req.prompt.end());
  req.maxNew = 20;
  req.sampling = {0.8, 0, 0.95, 3};
  std::vector<int32_t> out;
  generateSpeculatively(e, pl, req, [&](int32_t t) { out.push_back(t); });
  EXPECT_EQ(out.size(), 20u);
  // The context bounds the budget: 48 - 20 prompt tokens.
  req.maxNew = 1000;
  out.clear();
  generateSpeculatively(e, pl, req, [&](int32_t t) { out.push_back(t); });
  EXPECT_EQ(out.size(), 28u);
}

TEST(Speculate, Stories260KGreedyIsIdenticalAndPromptLookupPays) {
  const fs::path dir = fs::path(KVPLAN_SHARED_DIR) / "models" / "stories260K";
  if (!fs::exists(dir / "stories260K.bin")) GTEST_SKIP() << "no " << dir;
  SettingOverrides o;
  o.maxSeqLen = 512;
  o.speculate = 4;
  ModelConfig cfg = loadModelConfig((dir / "stories260K.bin").string(), o);
  Plan plan = compileModel(cfg).plan;
  auto src = openWeights((dir / "stories260K.bin").string(), cfg.model);
  std::vector<char> weights = packWeightsInMemory(plan, *src);
  Engine e(plan, weights.data(), weights.size(), 2);
  const std::vector<int32_t> prompt = {1}; // BOS: llama2.c's story
  std::vector<int32_t> expected;
  {
    int seq = e.open();
    const float *l = e.prefill(seq, prompt.data(), 1);
    for (int i = 0; i < 200; ++i) {
      expected.push_back(argmax(l, 512));
      l = e.decode({seq}, {expected.back()});
    }
    e.close(seq);
  }
  PromptLookup pl;
  SpeculationStats s;
  EXPECT_EQ(greedySpeculative(e, pl, prompt, 200, &s), expected);
  EXPECT_GE(s.tokensPerVerify(), 1.5) << s.accepted << " kept of " << s.proposed << " in "
                                      << s.verifySteps << " verify steps";
}

namespace {

/// Greedy outputs of `prompts` served together by a scheduler, with or
/// without a proposer.
std::vector<std::vector<int32_t>> serveAll(Engine &e, const std::vector<std::vector<int32_t>> &prompts,
                                           int64_t n, Proposer *proposer, SchedulerStats *stats) {
  SchedulerOptions so;
  so.proposer = proposer;
  Scheduler s(e, nullptr, so);
  std::vector<std::vector<int32_t>> out(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    GenerationRequest r;
    r.prompt = prompts[i];
    r.maxNewTokens = n;
    r.sampling.temperature = 0;
    r.onEvent = [&out, i](const TokenEvent &ev) {
      if (ev.token >= 0) out[i].push_back(ev.token);
    };
    s.submit(std::move(r));
  }
  s.runUntilIdle();
  if (stats) *stats = s.stats();
  return out;
}

} // namespace

TEST(Speculate, SchedulerMixesVerifyCallsWithDecodeRows) {
  SpecModel c(kSpec4);
  // Two repetitive prompts (prompt lookup proposes) and one of distinct
  // tokens, which a lookup may not match at first.
  std::vector<int32_t> a = randomIds(5, 61), b = randomIds(4, 62);
  a.insert(a.end(), a.begin(), a.end());
  b.insert(b.end(), b.begin(), b.end());
  b.insert(b.end(), b.begin(), b.begin() + 4);
  const std::vector<std::vector<int32_t>> prompts = {a, b, {3, 14, 15, 92, 65}};
  for (bool cache : {true, false}) {
    SCOPED_TRACE(cache ? "prefix cache" : "no prefix cache");
    Engine plain = c.engine(cache), fast = c.engine(cache);
    SchedulerStats st;
    const auto expected = serveAll(plain, prompts, 20, nullptr, nullptr);
    PromptLookup pl;
    EXPECT_EQ(serveAll(fast, prompts, 20, &pl, &st), expected);
    EXPECT_GT(st.verifyCalls, 0);
    EXPECT_GT(st.decodeCalls, 0);
    EXPECT_EQ(st.generatedTokens, 60);
    EXPECT_EQ(fast.openSequences(), 0);
    fast.pages().check();
  }
}

TEST(Speculate, SchedulerRefusesAPlanWithoutVerify) {
  SpecModel plain("max_seq_len = 48\n");
  Engine e = plain.engine();
  PromptLookup pl;
  SchedulerOptions so;
  so.proposer = &pl;
  EXPECT_THROW(Scheduler(e, nullptr, so), InputError);
}

TEST(Speculate, ADraftModelWhosePoolIsFullProposesNothingAndServingGoesOn) {
  SpecModel c(kSpec4);
  // The draft's pool holds one sequence at full context (12 pages of 4):
  // two requests of 30 tokens each cannot both keep a draft sequence.
  SpecModel small("max_seq_len = 48\npage_size = 4\nkv_pages = 12\n", 5);
  const std::vector<std::vector<int32_t>> prompts = {randomIds(12, 71), randomIds(14, 72)};
  Engine plain = c.engine(), fast = c.engine(), draft = small.engine(false);
  const auto expected = serveAll(plain, prompts, 18, nullptr, nullptr);
  DraftModel dm(draft, kSpecVocab, SamplingOptions{}, "small");
  SchedulerStats st;
  EXPECT_EQ(serveAll(fast, prompts, 18, &dm, &st), expected);
  EXPECT_GT(st.verifyCalls, 0);
  EXPECT_EQ(st.draftsAccepted, st.draftsProposed) << "the same weights: every draft is kept";
  EXPECT_EQ(draft.openSequences(), 0);
}

TEST(Speculate, TheRulesTargetDistributionIsWhatTheSamplerDraws) {
  // samplingProbabilities must be the distribution Sampler draws from, or
  // speculation would keep another distribution than plain sampling.
  const std::vector<float> logits = {1.0f, 2.5f, 0.3f, 2.5f, -1.0f, 1.7f, 0.9f, 2.0f};
  auto withMinP = [](SamplingOptions o, double minP) {
    o.minP = minP;
    return o;
  };
  for (SamplingOptions o : {SamplingOptions{0.7, 0, 1.0, 1}, SamplingOptions{1.3, 5, 1.0, 2},
                            SamplingOptions{0.9, 0, 0.8, 3}, SamplingOptions{1.0, 6, 0.7, 4},
                            withMinP({1.0, 0, 1.0, 5}, 0.3), withMinP({0.8, 0, 0.9, 6}, 0.1),
                            withMinP({1.2, 3, 1.0, 7}, 0.5)}) {
    SCOPED_TRACE("temperature " + std::to_string(o.temperature) + " top-k " +
                 std::to_string(o.topK) + " top-p " + std::to_string(o.topP) + " min-p " +
                 std::to_string(o.minP));
    std::vector<double> p;
    samplingProbabilities(logits.data(), 8, o, p);
    Sampler s(o);
    const int64_t n = 200000;
    std::vector<int64_t> counts(8, 0);
    for (int64_t i = 0; i < n; ++i) ++counts[size_t(s.sample(logits.data(), 8))];
    // Tokens outside the kept set are never drawn; over the kept ones,
    // chi-square (at most 7 degrees of freedom; 99.9th percentile 24.32).
    std::vector<int64_t> kept;
    std::vector<double> pk;
    for (size_t v = 0; v < 8; ++v) {
      if (p[v] == 0) {
        EXPECT_EQ(counts[v], 0) << "token " << v;
        continue;
      }
      kept.push_back(counts[v]);
      pk.push_back(p[v]);
    }
    EXPECT_LT(chiSquare(kept, pk, n), 24.32);
  }
}
