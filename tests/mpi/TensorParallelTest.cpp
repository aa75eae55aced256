// Tensor parallelism over MPI, checked against one process: run as
// `mpirun -np 2 kvplan-tp-tests` (ctest does). Rank 0 drives an engine over
// the leader of the ranks and compares every step with a model compiled
// without tensor parallelism from the same weights; rank 1 follows it.
#include "codegen/Compiler.h"
#include "frontend/ConfigParser.h"
#include "plan/WeightPacking.h"
#include "runtime/Engine.h"
#include "runtime/RankExecutor.h"
#include "runtime/cpu/CpuExecutor.h"
#include "runtime/mpi/MpiCollective.h"
#include "tests/common/MpiTestMain.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

using namespace kvplan;

namespace {

struct Shape {
  const char *name;
  std::string model; // lines added to [model]
};

const Shape kShapes[] = {
    {"gqa", "architecture = \"llama\"\nnum_heads = 4\nnum_kv_heads = 2\n"},
    {"mha-untied", "architecture = \"llama\"\nnum_heads = 4\nnum_kv_heads = 4\n"},
    // One KV head for two ranks: each keeps it (replicated).
    {"mqa-tied", "architecture = \"llama\"\nnum_heads = 8\nnum_kv_heads = 1\n"
                 "tie_word_embeddings = true\n"},
    // Q/K/V biases cut with their projections.
    {"qwen2-bias-tied", "architecture = \"qwen2\"\nnum_heads = 4\nnum_kv_heads = 2\n"
                        "tie_word_embeddings = true\n"},
    // Gemma 3: each rank's post-norms after the all_reduce, GeGLU on its
    // FFN columns, a local layer under a window of 6 beside a global one.
    {"gemma3", "architecture = \"gemma3\"\nnum_heads = 4\nnum_kv_heads = 2\n"
               "sliding_window = 6\nfull_attention_layers = [1]\n"
               "[model.rope]\ntheta = 1000000.0\nlocal_theta = 10000.0\n"},
    // Mixtures of experts: each rank routes every row as one process does
    // and runs its half of every chosen expert's features (Qwen3-MoE's 2 of
    // 8 renormalized, Mixtral's 2 of 4 experts of the FFN's width).
    {"qwen3moe", "architecture = \"qwen3\"\nnum_heads = 4\nnum_kv_heads = 2\nnum_experts = 8\n"
                 "num_experts_per_tok = 2\nmoe_intermediate_size = 48\n"},
    {"mixtral", "architecture = \"mistral\"\nnum_heads = 4\nnum_kv_heads = 2\nnum_experts = 4\n"
                "num_experts_per_tok = 2\n"},
    // Qwen2-MoE: biased q/k/v, 2 of 8 experts as routed, and a gated shared
    // expert cut as a dense FFN, its partial rows summed by the mixture's
    // one all-reduce.
    {"qwen2moe", "architecture = \"qwen2\"\nnum_heads = 4\nnum_kv_heads = 2\nnum_experts = 8\n"
                 "num_experts_per_tok = 2\nmoe_intermediate_size = 48\nnorm_topk_prob = false\n"
                 "shared_expert_intermediate_size = 80\nshared_expert_gate = true\n"},
};

ModelConfig config(const Shape &s, int64_t ranks, int64_t maxSeq = 64) {
  std::string text = "[model]\nname = \"tp\"\nhidden_size = 64\nintermediate_size = 96\n"
                     "num_layers = 2\nvocab_size = 98\nmax_position_embeddings = 128\n"
                     "rms_norm_eps = 1e-5\nbos_token_id = 1\neos_token_id = 2\n" +
                     s.model + "[compile]\nmax_seq_len = " + std::to_string(maxSeq) +
                     "\nprefill_chunk = 8\npage_size = 8\nmax_batch = 2\nscore_rows = 4\n"
                     "tensor_parallel = " +
                     std::to_string(ranks) + "\n";
  ModelConfig cfg = parseTomlSpec(text, std::string(s.name) + ".toml",
                                  [](const std::string &w) { ADD_FAILURE() << w; });
  validate(cfg);
  return cfg;
}

/// A model compiled for `ranks` ranks with this rank's weights.
struct Compiled {
  Plan plan;
  std::vector<char> weights;
  Compiled(const ModelConfig &cfg, int64_t rank) {
    plan = compileModel(cfg).plan;
    auto source = openWeights("random:11", cfg.model);
    weights = packWeightsInMemory(plan, *source, rank);
  }
};

Collective &world() { return *mpiWorld(); }

uint64_t planHash(const Plan &p) {
  const std::string text = toJson(p).dump();
  return checksum64(text.data(), text.size());
}

/// Every row of `got` within 1e-5 of `want`, relative to the row's largest
/// logit.
void expectClose(const float *got, const float *want, int64_t rows, int64_t vocab,
                 const std::string &where) {
  for (int64_t r = 0; r < rows; ++r) {
    float scale = 0, worst = 0;
    for (int64_t i = 0; i < vocab; ++i) scale = std::max(scale, std::abs(want[r * vocab + i]));
    for (int64_t i = 0; i < vocab; ++i)
      worst = std::max(worst, std::abs(got[r * vocab + i] - want[r * vocab + i]));
    EXPECT_LE(worst, 1e-5f * std::max(scale, 1.0f)) << where << " row " << r;
  }
}

std::vector<int32_t> tokens(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (int32_t &v : t) v = int32_t(3 + rng() % 95u);
  return t;
}

/// Rank 0: prefill two prompts (three chunks and one), then decode both
/// together, comparing every call's logits; then generate greedily and
/// with top-k sampling, comparing the ids.
void lead(const Shape &s, Engine &tp) {
  Compiled one(config(s, 1), 0);
  Engine ref(one.plan, one.weights.data(), one.weights.size(), 1);
  const int64_t vocab = ref.vocabSize();
  const std::vector<int32_t> a = tokens(21, 1), b = tokens(5, 2);
  int sa = tp.open(), sb = tp.open(), ra = ref.open(), rb = ref.open();
  std::vector<float> want(ref.prefill(ra, a.data(), 21), ref.logits("prefill") + vocab);
  expectClose(tp.prefill(sa, a.data(), 21), want.data(), 1, vocab, std::string(s.name) + " prefill a");
  want.assign(ref.prefill(rb, b.data(), 5), ref.logits("prefill") + vocab);
  expectClose(tp.prefill(sb, b.data(), 5), want.data(), 1, vocab, std::string(s.name) + " prefill b");
  for (int step = 0; step < 12; ++step) {
    const std::vector<int32_t> next = {int32_t(10 + step), int32_t(40 + step)};
    const float *r = ref.decode({ra, rb}, next);
    want.assign(r, r + 2 * vocab);
    expectClose(tp.decode({sa, sb}, next), want.data(), 2, vocab,
                std::string(s.name) + " decode step " + std::to_string(step));
  }
  // One sequence of the two: the leader gathers its row alone, the padding
  // row stays NaN.
  const float *r = ref.decode({rb}, {int32_t(77)});
  want.assign(r, r + vocab);
  const float *lone = tp.decode({sb}, {int32_t(77)});
  expectClose(lone, want.data(), 1, vocab, std::string(s.name) + " decode of one sequence");
  EXPECT_TRUE(std::isnan(lone[vocab]) && std::isnan(lone[2 * vocab - 1])) << s.name;
  // Asked again before the next run (a penalised row and log-probabilities
  // in one step), the leader hands back the rows it gathered.
  auto &leader = dynamic_cast<LeaderExecutor &>(tp.executor());
  const int64_t gathers = leader.logitGathers();
  EXPECT_EQ(leader.logits("decode"), lone) << s.name;
  EXPECT_EQ(leader.logitGathers(), gathers) << s.name;
  tp.decode({sb}, {int32_t(78)}); // a new run gathers anew
  EXPECT_EQ(leader.logitGathers(), gathers + 1) << s.name;
  SamplingOptions minP{1.2, 0, 1.0, 11}, minPTopK{0.9, 40, 0.9, 13};
  minP.minP = 0.02;
  minPTopK.minP = 0.2;
  for (SamplingOptions o : {SamplingOptions{}, SamplingOptions{0.9, 6, 1.0, 7},
                            SamplingOptions{0.9, 0, 0.8, 9}, minP, minPTopK}) {
    tp.setSampling(o);
    ref.setSampling(o);
    int t = tp.open(), r = ref.open();
    int32_t x = tp.prefillNext(t, a.data(), 9), y = ref.prefillNext(r, a.data(), 9);
    std::vector<int32_t> got{x}, exp{y};
    for (int i = 0; i < 16; ++i) {
      got.push_back(x = tp.decodeNext({t}, {x})[0]);
      exp.push_back(y = ref.decodeNext({r}, {y})[0]);
    }
    EXPECT_EQ(got, exp) << s.name << " temperature " << o.temperature << " top-k " << o.topK
                        << " top-p " << o.topP << " min-p " << o.minP;
    tp.close(t);
    ref.close(r);
  }
  // @score (the prompt's log-probabilities): every row of each call, the
  // last a part one (21 = 5 x 4 + 1), which the leader gathers alone.
  const int ts = tp.open(), rs = ref.open();
  for (int64_t at = 0; at < 21; at += 4) {
    const int64_t n = std::min<int64_t>(4, 21 - at);
    const float *w = ref.score(rs, a.data() + at, n);
    want.assign(w, w + n * vocab);
    expectClose(tp.score(ts, a.data() + at, n), want.data(), n, vocab,
                std::string(s.name) + " score from " + std::to_string(at));
  }
  tp.close(ts);
  ref.close(rs);
}

class TensorParallel : public ::testing::TestWithParam<Shape> {
protected:
  void SetUp() override {
    if (!mpiWorld() || world().size() != 2) GTEST_SKIP() << "run as mpirun -np 2 kvplan-tp-tests";
  }
};

TEST_P(TensorParallel, EveryStepMatchesOneProcess) {
  const Shape &s = GetParam();
  Collective &comm = world();
  Compiled mine(config(s, 2), comm.rank());
  checkRanks(2, &comm, planHash(mine.plan));
  auto share = std::make_unique<CpuExecutor>(mine.plan, mine.weights.data(), mine.weights.size(),
                                             1, &comm);
  if (comm.rank() != 0) return followLeader(*share, comm);
  Engine tp(std::make_unique<LeaderExecutor>(std::move(share), comm));
  lead(s, tp);
}

INSTANTIATE_TEST_SUITE_P(Shapes, TensorParallel, ::testing::ValuesIn(kShapes),
                         [](const auto &info) {
                           std::string n = info.param.name;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

TEST(TensorParallelRanks, RanksWithAnotherPlanAreRefused) {
  if (!mpiWorld() || world().size() != 2) GTEST_SKIP() << "run as mpirun -np 2 kvplan-tp-tests";
  Collective &comm = world();
  // Rank 1 compiled another context length: the plans differ.
  const Plan plan = compileModel(config(kShapes[0], 2, comm.rank() == 0 ? 64 : 32)).plan;
  try {
    checkRanks(2, &comm, planHash(plan));
    ADD_FAILURE() << "ranks with different plans were not refused";
  } catch (const InputError &e) {
    EXPECT_NE(std::string(e.what()).find("loaded another plan"), std::string::npos) << e.what();
  }
}

TEST(TensorParallelRanks, AWrongNumberOfRanksIsRefused) {
  if (!mpiWorld() || world().size() != 2) GTEST_SKIP() << "run as mpirun -np 2 kvplan-tp-tests";
  const Plan plan = compileModel(config(kShapes[0], 1)).plan;
  try {
    checkRanks(1, &world(), planHash(plan));
    ADD_FAILURE() << "a plan for one rank ran on two";
  } catch (const InputError &e) {
    EXPECT_NE(std::string(e.what()).find("not tensor parallel"), std::string::npos) << e.what();
  }
  Compiled mine(config(kShapes[0], 2), world().rank());
  try {
    CpuExecutor alone(mine.plan, mine.weights.data(), mine.weights.size(), 1, nullptr);
    ADD_FAILURE() << "a rank's share ran without the other ranks";
  } catch (const InputError &e) {
    EXPECT_NE(std::string(e.what()).find("mpirun -np 2"), std::string::npos) << e.what();
  }
}

} // namespace

int main(int argc, char **argv) { return runMpiTests(argc, argv); }
