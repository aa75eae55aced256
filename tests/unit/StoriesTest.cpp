// A real trained model: stories260K (llama2.c's tinyllamas) reproduces the
// text its README quotes, from the .bin and the .gguf alike.
#include "codegen/Compiler.h"
#include "frontend/ConfigParser.h"
#include "runtime/Engine.h"
#include "runtime/Perplexity.h"
#include "runtime/Sampler.h"
#include "plan/WeightPacking.h"
#include "tests/common/ActivationsScope.h"
#include "tests/unit/ReferenceModel.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

using namespace kvplan;
namespace fs = std::filesystem;

namespace {

const fs::path kDir = fs::path(KVPLAN_SHARED_DIR) / "models" / "stories260K";

// From llama2.c's documentation: greedy decoding from BOS.
const char *kStory = "Once upon a time, there was a little girl named Lily. She loved to play "
                     "outside in the park. One day, she saw a big, red ball. She wanted to play "
                     "with it, but it was too high.";

/// A checkpoint compiled with `dtype` weights, ready to run.
struct Loaded {
  Plan plan;
  std::vector<char> weights;
  Loaded(const std::string &path, DType dtype = DType::f32) {
    SettingOverrides o;
    o.maxSeqLen = 512;
    o.prefillChunk = 16;
    o.weightDtype = dtype;
    ModelConfig cfg = loadModelConfig(path, o);
    plan = compileModel(cfg).plan;
    std::unique_ptr<WeightSource> src = openWeights(path, cfg.model);
    weights = packWeightsInMemory(plan, *src);
  }
  Engine engine() const { return Engine(plan, weights.data(), weights.size(), 2); }
};

/// Greedy ids after `prompt` from the checkpoint at `path`.
std::vector<int32_t> greedy(const std::string &path, const std::vector<int32_t> &prompt, int n,
                            DType dtype = DType::f32) {
  Loaded m(path, dtype);
  const Plan &plan = m.plan;
  Engine e = m.engine();
  int seq = e.open();
  const float *l = e.prefill(seq, prompt.data(), int64_t(prompt.size()));
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) {
    int32_t next = argmax(l, plan.model.vocabSize);
    out.push_back(next);
    l = e.decode({seq}, {next});
  }
  return out;
}

} // namespace

class Stories : public ::testing::Test {
protected:
  void SetUp() override {
    if (!fs::exists(kDir / "stories260K.bin"))
      GTEST_SKIP() << "no " << kDir.string()
                   << " (set KVPLAN_SHARED_DIR to the folder holding models/)";
  }
};

TEST_F(Stories, GreedyFromBosReproducesTheKnownText) {
  std::unique_ptr<Tokenizer> tok = loadTokenizerFile((kDir / "tok512.model").string());
  std::vector<int32_t> ids = greedy((kDir / "stories260K.bin").string(), {1}, 120);
  std::string text = tok->decode(ids);
  EXPECT_EQ(text.substr(0, std::string(kStory).size()), kStory) << text;
}

TEST_F(Stories, BinAndGgufGiveIdenticalIds) {
  std::vector<int32_t> bin = greedy((kDir / "stories260K.bin").string(), {1}, 120);
  std::vector<int32_t> gguf = greedy((kDir / "stories260K.gguf").string(), {1}, 120);
  EXPECT_EQ(bin, gguf);
}

TEST_F(Stories, APromptContinuesTheSameStory) {
  std::unique_ptr<Tokenizer> tok = loadTokenizerFile((kDir / "tok512.model").string());
  std::vector<int32_t> prompt = tok->encode("Once upon a time", true);
  std::vector<int32_t> ids = greedy((kDir / "stories260K.bin").string(), prompt, 120);
  std::vector<int32_t> all = prompt;
  all.insert(all.end(), ids.begin(), ids.end());
  std::string text = tok->decode(all);
  EXPECT_EQ(text.substr(0, std::string(kStory).size()), kStory) << text;
}

namespace {

/// stories260K with `dtype` weights, an f32 KV cache (the plain reference's;
/// int8 weights default to a bf16 one) and a @score entry point of 8 rows,
/// ready to run.
struct Scored {
  ModelConfig cfg;
  Plan plan;
  std::vector<char> weights;
  explicit Scored(DType dtype) {
    SettingOverrides o;
    o.maxSeqLen = 512;
    o.scoreRows = 8;
    o.weightDtype = dtype;
    cfg = loadModelConfig(path(), o);
    cfg.compile.kvDtype = DType::f32;
    cfg.given.insert("compile.kv_dtype");
    cfg = applyAndValidate(std::move(cfg), {});
    plan = compileModel(cfg).plan;
    weights = packWeightsInMemory(plan, *openWeights(path(), cfg.model));
  }
  Engine engine() const { return Engine(plan, weights.data(), weights.size(), 2); }
  static std::string path() { return (kDir / "stories260K.bin").string(); }
};

/// The text's tokens: kStory twice, 3 chunks of 16 and a part.
std::vector<int32_t> storyTokens() {
  std::unique_ptr<Tokenizer> tok = loadTokenizerFile((kDir / "tok512.model").string());
  return tok->encode(std::string(kStory) + " " + kStory, true);
}

/// One scored position as the plain reference sees it: -log p of the next
/// token, the log-probabilities and the likeliest token.
struct RefPosition {
  double nll;
  std::vector<double> logp;
  size_t top;
};
RefPosition refPosition(const test::ReferenceModel &ref, const std::vector<int32_t> &chunk,
                        int64_t j) {
  const std::vector<double> l = ref.logits({chunk.begin(), chunk.begin() + j + 1});
  RefPosition p{0, l, 0};
  double best = l[0], sum = 0;
  for (size_t i = 0; i < l.size(); ++i)
    if (l[i] > best) best = l[i], p.top = i;
  for (double v : l) sum += std::exp(v - best);
  for (double &v : p.logp) v -= best + std::log(sum);
  p.nll = -p.logp[size_t(chunk[size_t(j + 1)])];
  return p;
}

/// Calls f(chunk, j) for every position kvplan perplexity scores in 3
/// chunks of `ctx` of `tokens` (BOS first in each).
template <class F> void forScored(const std::vector<int32_t> &tokens, int64_t ctx, F f) {
  for (int64_t c = 0; c < 3; ++c) {
    std::vector<int32_t> chunk(tokens.begin() + c * ctx, tokens.begin() + (c + 1) * ctx);
    chunk[0] = 1; // BOS
    for (int64_t j = ctx / 2; j < ctx - 1; ++j) f(c, chunk, j);
  }
}

} // namespace

// kvplan perplexity's definition (llama.cpp's): chunks of ctx tokens, each
// begun with BOS and run from an empty cache, their second halves scored.
// Against the plain reference in double precision, position by position,
// with the text's chunks scored in two @score calls each.
TEST_F(Stories, PerplexityIsTheReferenceModelsOverEachChunksSecondHalf) {
  const std::vector<int32_t> tokens = storyTokens();
  constexpr int64_t kCtx = 16;
  ASSERT_GE(tokens.size(), size_t(3 * kCtx + 5)); // 3 whole chunks and a part left out
  Scored m(DType::f32);
  Engine engine = m.engine();
  PerplexityOptions po;
  po.ctx = kCtx;
  po.maxChunks = 3;
  po.bos = 1;
  std::vector<int64_t> order;
  const PerplexityResult got =
      perplexity(engine, tokens, po, [&](int64_t c, double) { order.push_back(c); });

  test::ReferenceModel ref(m.plan.model, *openWeights(Scored::path(), m.cfg.model));
  double nll = 0, nll2 = 0;
  std::vector<double> running(3);
  int64_t n = 0;
  forScored(tokens, kCtx, [&](int64_t c, const std::vector<int32_t> &chunk, int64_t j) {
    const double v = refPosition(ref, chunk, j).nll;
    nll += v;
    nll2 += v * v;
    running[size_t(c)] = std::exp(nll / double(++n));
  });
  EXPECT_EQ(got.chunks, 3);
  EXPECT_EQ(got.scored(), 3 * (kCtx - kCtx / 2 - 1));
  EXPECT_EQ(order, (std::vector<int64_t>{0, 1, 2}));
  ASSERT_EQ(got.running.size(), running.size());
  for (size_t c = 0; c < running.size(); ++c)
    EXPECT_NEAR(got.running[c], running[c], 1e-4 * running[c]) << "after chunk " << c + 1;
  const double ppl = std::exp(nll / double(n));
  const double mean = nll / double(n), sd = std::sqrt((nll2 / double(n) - mean * mean) / (n - 1));
  EXPECT_NEAR(got.ppl(), ppl, 1e-4 * ppl);
  EXPECT_NEAR(got.pplError(), sd * ppl, 1e-3 * sd * ppl);
  EXPECT_GT(ppl, 1.0);
  EXPECT_TRUE(got.divergence.empty());
}

// With a base model (--base): int8 weights against f32, each position's
// KL divergence, likeliest token and both log-likelihoods against the plain
// reference's int8 and f32 forward passes (f32 activations, the plan's
// arithmetic). And a model against a copy of itself diverges by nothing.
TEST_F(Stories, PerplexityDivergenceFromABaseIsTheReferences) {
  test::ActivationsScope f32Activations(cpu::Activations::f32);
  const std::vector<int32_t> tokens = storyTokens();
  constexpr int64_t kCtx = 16;
  Scored quant(DType::i8), full(DType::f32);
  Engine q = quant.engine(), b = full.engine();
  PerplexityOptions po;
  po.ctx = kCtx;
  po.maxChunks = 3;
  po.bos = 1;
  po.base = &b;
  const PerplexityResult got = perplexity(q, tokens, po);
  ASSERT_EQ(got.divergence.size(), 1u);
  const Divergence &d = got.divergence[0];

  auto weights = openWeights(Scored::path(), full.cfg.model);
  test::ReferenceModel refQ(quant.plan.model, *weights, DType::i8);
  test::ReferenceModel refB(full.plan.model, *weights, DType::f32);
  std::vector<double> kld;
  double lnRatio = 0, baseNll = 0;
  int64_t same = 0;
  forScored(tokens, kCtx, [&](int64_t, const std::vector<int32_t> &chunk, int64_t j) {
    const RefPosition pq = refPosition(refQ, chunk, j), pb = refPosition(refB, chunk, j);
    double kl = 0;
    for (size_t i = 0; i < pb.logp.size(); ++i)
      kl += std::exp(pb.logp[i]) * (pb.logp[i] - pq.logp[i]);
    kld.push_back(kl);
    same += pq.top == pb.top;
    lnRatio += pq.nll - pb.nll;
    baseNll += pb.nll;
  });
  ASSERT_EQ(d.kld.size(), kld.size());
  double mean = 0;
  // Each divergence within 1e-4 of itself, as the perplexities above (the
  // two runs' f32 logits carry rounding the double-precision reference has
  // not), and 1e-7 where it is near 0.
  for (size_t k = 0; k < kld.size(); ++k) {
    EXPECT_NEAR(d.kld[k], kld[k], 1e-7 + 1e-4 * kld[k]) << "position " << k;
    mean += kld[k] / double(kld.size());
  }
  EXPECT_GT(mean, 1e-5); // int8 weights do move the distributions
  EXPECT_NEAR(d.meanKld(), mean, 1e-7 + 1e-4 * mean);
  EXPECT_EQ(d.sameTop, same);
  const double n = double(kld.size());
  EXPECT_NEAR(d.meanLnRatio(), lnRatio / n, 1e-4);
  EXPECT_NEAR(d.base.ppl(), std::exp(baseNll / n), 1e-4 * std::exp(baseNll / n));
  EXPECT_LE(d.kldQuantile(0.5), d.kldQuantile(0.99));
  EXPECT_EQ(d.kldQuantile(1.0), *std::max_element(d.kld.begin(), d.kld.end()));

  Engine same1 = full.engine(), same2 = full.engine();
  po.base = &same2;
  const PerplexityResult self = perplexity(same1, tokens, po);
  EXPECT_EQ(self.divergence[0].kldQuantile(1.0), 0.0);
  EXPECT_EQ(self.divergence[0].sameTop, int64_t(kld.size()));
  EXPECT_EQ(self.divergence[0].meanLnRatio(), 0.0);
  EXPECT_EQ(self.ppl(), self.divergence[0].base.ppl());
}

namespace {

// The quantized runs follow the f32 greedy path, so every step compares
// logits for the same tokens; each step's cosine against f32's.
struct Cosines {
  double worst = 1, mean = 0;
};
Cosines cosinesAgainstF32(const std::string &path, DType dtype, int steps) {
  Loaded f32(path), quant(path, dtype);
  Engine a = f32.engine(), b = quant.engine();
  int sa = a.open(), sb = b.open();
  int32_t bos = 1;
  const float *la = a.prefill(sa, &bos, 1), *lb = b.prefill(sb, &bos, 1);
  Cosines c;
  for (int step = 0; step < steps; ++step) {
    std::vector<double> want(la, la + 512);
    const double cs = test::cosineSimilarity(lb, want);
    c.worst = std::min(c.worst, cs);
    c.mean += cs / steps;
    int32_t next = argmax(la, 512);
    la = a.decode({sa}, {next});
    lb = b.decode({sb}, {next});
  }
  return c;
}

} // namespace

// int8 weights (round-to-nearest per group of 32), with the CPU's int8
// activations (the default) and with f32 ones. Measured (AVX2 and portable
// alike): cosine 0.99923 at worst (mean 0.99995) with int8 activations,
// 0.99961 (0.99998) with f32 ones; the bounds leave a margin for other
// summation orders.
TEST_F(Stories, Int8KeepsTheLogitsDirection) {
  for (cpu::Activations mode : test::kBothActivations) {
    test::ActivationsScope scope(mode);
    const Cosines c = cosinesAgainstF32((kDir / "stories260K.bin").string(), DType::i8, 150);
    std::printf("int8 weights, %s: logits cosine against f32 min %.5f, mean %.5f\n",
                cpu::activationsName(mode), c.worst, c.mean);
    EXPECT_GE(c.worst, mode == cpu::Activations::f32 ? 0.999 : 0.998) << cpu::activationsName(mode);
  }
}

TEST_F(Stories, Int8GreedyTextStillTellsTheStory) {
  std::unique_ptr<Tokenizer> tok = loadTokenizerFile((kDir / "tok512.model").string());
  std::vector<int32_t> ids = greedy((kDir / "stories260K.bin").string(), {1}, 60, DType::i8);
  std::string text = tok->decode(ids);
  // The start of the known story survives quantization.
  EXPECT_EQ(text.substr(0, 30), std::string(kStory).substr(0, 30)) << text;
}

// bf16 weights against f32, with the reduced mode (bf16 activations and
// vdpbf16ps where the CPU has AVX512_BF16, f32 activations elsewhere) and
// with f32 activations. Measured over 150 steps on a CPU with AVX512_BF16
// (AMD EPYC): bf16 activations cosine 0.99979 at worst, 0.999992 on average;
// f32 activations 0.99981 and 0.999993. The bounds leave a margin for other
// summation orders.
TEST_F(Stories, Bf16KeepsTheLogitsDirection) {
  for (cpu::Activations mode : test::kBothActivations) {
    test::ActivationsScope scope(mode);
    const Cosines c = cosinesAgainstF32((kDir / "stories260K.bin").string(), DType::bf16, 150);
    std::printf("bf16 weights, %s activations: logits cosine against f32 min %.6f, mean %.6f\n",
                cpu::activationsFor(DType::bf16), c.worst, c.mean);
    EXPECT_GE(c.worst, 0.999) << cpu::activationsFor(DType::bf16);
    EXPECT_GE(c.mean, 0.9999) << cpu::activationsFor(DType::bf16);
  }
}

// Greedy bf16 text against f32's, in both modes. Measured (AVX512_BF16):
// bf16 activations follow f32's ids for 185 of 200 tokens, f32 activations
// for all 200.
TEST_F(Stories, Bf16GreedyTextFollowsF32) {
  const std::string path = (kDir / "stories260K.bin").string();
  const std::vector<int32_t> f32 = greedy(path, {1}, 200);
  for (cpu::Activations mode : test::kBothActivations) {
    test::ActivationsScope scope(mode);
    const std::vector<int32_t> bf16 = greedy(path, {1}, 200, DType::bf16);
    size_t same = 0;
    while (same < f32.size() && f32[same] == bf16[same]) ++same;
    std::printf("bf16 weights, %s activations: greedy ids equal f32's for %zu of %zu tokens\n",
                cpu::activationsFor(DType::bf16), same, f32.size());
    EXPECT_GE(same, 100u) << cpu::activationsFor(DType::bf16);
  }
}

// int4 (groups of 32 with a scale and a minimum, round-to-nearest) against
// f32 on the f32 greedy path: every step's logits keep their direction.
// Measured on this model over 150 steps, AVX2 and portable kernels alike:
// with f32 activations cosine 0.8778 at worst and 0.9932 on average; with
// int8 activations (the default) 0.8772 and 0.9932. 64 weights a row is
// little for 16 levels a group (int8 keeps 0.9996); the bounds leave a
// margin for other summation orders.
TEST_F(Stories, Int4KeepsTheLogitsDirection) {
  for (cpu::Activations mode : test::kBothActivations) {
    test::ActivationsScope scope(mode);
    const Cosines c = cosinesAgainstF32((kDir / "stories260K.bin").string(), DType::i4, 150);
    std::printf("int4 weights, %s: logits cosine against f32 min %.5f, mean %.5f\n",
                cpu::activationsName(mode), c.worst, c.mean);
    EXPECT_GE(c.worst, 0.85) << cpu::activationsName(mode);
    EXPECT_GE(c.mean, 0.99) << cpu::activationsName(mode);
  }
}

// Greedy int4 text follows f32's for its first 38 tokens (measured, AVX2 and
// portable kernels alike, f32 and int8 activations alike: "... One day, she
// saw a big"), then tells its own story.
TEST_F(Stories, Int4GreedyTextFollowsF32) {
  std::unique_ptr<Tokenizer> tok = loadTokenizerFile((kDir / "tok512.model").string());
  const std::string path = (kDir / "stories260K.bin").string();
  const std::vector<int32_t> f32 = greedy(path, {1}, 120);
  for (cpu::Activations mode : test::kBothActivations) {
    test::ActivationsScope scope(mode);
    const std::vector<int32_t> int4 = greedy(path, {1}, 120, DType::i4);
    size_t same = 0;
    while (same < f32.size() && f32[same] == int4[same]) ++same;
    std::printf("int4 weights, %s: greedy ids equal f32's for %zu of %zu tokens:\n%s\n",
                cpu::activationsName(mode), same, f32.size(), tok->decode(int4).c_str());
    EXPECT_GE(same, 32u) << cpu::activationsName(mode);
  }
}
