// The seed's claim, tested: the KV cache, chunked prefill, fusion and the
// planned arena save work and change no result. At every step of generation
// the runtime's logits equal a reference that recomputes the whole sequence.
#include "codegen/Compiler.h"
#include "frontend/ConfigParser.h"
#include "runtime/Engine.h"
#include "support/Align.h"
#include "runtime/Sampler.h"
#include "plan/WeightPacking.h"
#include "runtime/cpu/Isa.h"
#include "tests/common/ActivationsScope.h"
#include "tests/common/ServeCompare.h"
#include "tests/unit/ReferenceModel.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <map>
#include <set>
#include <tuple>

using namespace kvplan;

namespace {

struct ModelShape {
  const char *name;
  std::string model;   // lines added to [model]
  std::string compile; // the [compile] table's lines
};

ModelConfig config(const ModelShape &s) {
  std::string text = "[model]\nname = \"eq\"\nhidden_size = 64\nintermediate_size = 96\n"
                     "num_layers = 2\nvocab_size = 97\nmax_position_embeddings = 128\n"
                     "rms_norm_eps = 1e-5\nbos_token_id = 1\neos_token_id = 2\n" +
                     s.model + "[compile]\n" + s.compile;
  ModelConfig cfg = parseTomlSpec(text, std::string(s.name) + ".toml", [](const std::string &w) {
    ADD_FAILURE() << w;
  });
  validate(cfg);
  return cfg;
}

/// A compiled model with random weights, ready to run.
struct ShapeModel {
  ModelConfig cfg;
  Plan plan;
  std::unique_ptr<WeightSource> source;
  std::vector<char> weights;

  explicit ShapeModel(const ModelShape &s, uint64_t seed = 5) : cfg(config(s)) {
    plan = compileModel(cfg).plan;
    source = openWeights("random:" + std::to_string(seed), cfg.model);
    weights = packWeightsInMemory(plan, *source);
  }
  Engine engine(int threads = 2) const {
    return Engine(plan, weights.data(), weights.size(), threads);
  }
};

std::vector<int32_t> randomTokens(int n, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (int32_t &v : t) v = int32_t(rng() % uint32_t(vocab));
  return t;
}

const ModelShape kModelShapes[] = {
    {"gqa", "architecture = \"llama\"\nnum_heads = 4\nnum_kv_heads = 2\n", "max_seq_len = 48\n"},
    {"mha-separate-head", "architecture = \"llama\"\nnum_heads = 4\nnum_kv_heads = 4\n",
     "max_seq_len = 48\n"},
    {"mqa-tied", "architecture = \"llama\"\nnum_heads = 8\nnum_kv_heads = 1\n"
                 "tie_word_embeddings = true\n",
     "max_seq_len = 48\n"},
    {"qwen2-bias", "architecture = \"qwen2\"\nnum_heads = 4\nnum_kv_heads = 2\n"
                   "tie_word_embeddings = true\n",
     "max_seq_len = 48\n"},
    // Qwen3: heads of 24, wider than hidden_size / num_heads (16), each query
    // and key head normalized before RoPE.
    {"qwen3-qk-norm", "architecture = \"qwen3\"\nnum_heads = 4\nnum_kv_heads = 2\nhead_dim = 24\n"
                      "tie_word_embeddings = true\n",
     "max_seq_len = 48\n"},
    {"llama3-rope", "architecture = \"llama\"\nnum_heads = 4\nnum_kv_heads = 2\n"
                    "[model.rope]\ntheta = 500000.0\ntype = \"llama3\"\nfactor = 8.0\n"
                    "low_freq_factor = 1.0\nhigh_freq_factor = 4.0\n"
                    "original_max_position_embeddings = 16\n",
     "max_seq_len = 48\n"},
    // A GGUF's rope_freqs (head_dim 16: eight divisors) under linear scaling.
    {"freq-factors-linear", "architecture = \"llama\"\nnum_heads = 4\nnum_kv_heads = 2\n"
                            "[model.rope]\ntheta = 500000.0\ntype = \"linear\"\nfactor = 2.0\n"
                            "freq_factors = [1.0, 1.0, 1.0, 1.5, 3.0, 8.0, 8.0, 8.0]\n",
     "max_seq_len = 48\n"},
    // Phi-3's LongRoPE: a context of 48 beyond the pretraining 16 takes the
    // long factors, cos and sin scaled by the attention factor (the plan
    // scales the softmax by its square instead).
    {"phi3-longrope-long", "architecture = \"phi3\"\nnum_heads = 4\nnum_kv_heads = 2\n"
                           "[model.rope]\ntheta = 10000.0\ntype = \"longrope\"\n"
                           "original_max_position_embeddings = 16\nattention_factor = 1.3\n"
                           "short_factors = [1.0, 1.1, 1.2, 1.5, 2.0, 3.0, 4.0, 5.0]\n"
                           "long_factors = [1.0, 1.5, 3.0, 6.0, 12.0, 24.0, 48.0, 60.0]\n",
     "max_seq_len = 48\n"},
    // Within the pretraining context (64): the short factors.
    {"phi3-longrope-short", "architecture = \"phi3\"\nnum_heads = 4\nnum_kv_heads = 2\n"
                            "[model.rope]\ntheta = 10000.0\ntype = \"longrope\"\n"
                            "original_max_position_embeddings = 64\nattention_factor = 1.3\n"
                            "short_factors = [1.0, 1.1, 1.2, 1.5, 2.0, 3.0, 4.0, 5.0]\n"
                            "long_factors = [1.0, 1.5, 3.0, 6.0, 12.0, 24.0, 48.0, 60.0]\n",
     "max_seq_len = 48\n"},
    // Phi-4-mini's partial RoPE: 12 of each head's 16 dimensions turn, the
    // last 4 pass through; LongRoPE's long factors, one per rotated pair;
    // the attention factor scales the rotated pairs alone (the rope ops
    // carry it, the softmax keeps 1 / sqrt(16)).
    {"phi4-partial-longrope", "architecture = \"phi3\"\nnum_heads = 4\nnum_kv_heads = 2\n"
                              "[model.rope]\ntheta = 10000.0\nrotary_dim = 12\n"
                              "type = \"longrope\"\noriginal_max_position_embeddings = 16\n"
                              "attention_factor = 1.3\n"
                              "short_factors = [1.0, 1.1, 1.2, 1.5, 2.0, 3.0]\n"
                              "long_factors = [1.0, 1.5, 3.0, 6.0, 12.0, 24.0]\n",
     "max_seq_len = 48\n"},
    // YaRN (Qwen's long contexts): base 100 over a pretraining context of 64
    // puts the band from pair 0 to 5 (rounded outwards) of the head's eight,
    // its attention factor YaRN's own (0.1 ln 4 + 1, in the softmax scale).
    {"yarn", "architecture = \"qwen3\"\nnum_heads = 4\nnum_kv_heads = 2\n"
             "[model.rope]\ntheta = 100.0\ntype = \"yarn\"\nfactor = 4.0\n"
             "original_max_position_embeddings = 64\n",
     "max_seq_len = 48\n"},
    // gpt-oss's form, on 12 of 16 dimensions: the band not rounded (truncate
    // false) and betas of its own; the rope ops carry the attention factor.
    {"yarn-partial-untruncated", "architecture = \"llama\"\nnum_heads = 4\nnum_kv_heads = 2\n"
                                 "[model.rope]\ntheta = 500.0\nrotary_dim = 12\ntype = \"yarn\"\n"
                                 "factor = 8.0\noriginal_max_position_embeddings = 32\n"
                                 "beta_fast = 8.0\nbeta_slow = 0.5\ntruncate = false\n",
     "max_seq_len = 48\n"},
    // Half of each head turns, without scaling.
    {"partial-rope-half", "architecture = \"llama\"\nnum_heads = 4\nnum_kv_heads = 2\n"
                          "[model.rope]\ntheta = 10000.0\nrotary_dim = 8\n",
     "max_seq_len = 48\n"},
    // SmolLM3's NoPE: the second layer attends without RoPE; with LongRoPE's
    // attention factor beside, which the rotating layer's softmax takes and
    // the NoPE layer's does not.
    {"smollm3-nope", "architecture = \"smollm3\"\nnum_heads = 4\nnum_kv_heads = 2\n"
                     "nope_layers = [1]\n",
     "max_seq_len = 48\n"},
    {"nope-longrope", "architecture = \"phi3\"\nnum_heads = 4\nnum_kv_heads = 2\n"
                      "nope_layers = [0]\n[model.rope]\ntheta = 10000.0\ntype = \"longrope\"\n"
                      "original_max_position_embeddings = 16\nattention_factor = 1.3\n"
                      "short_factors = [1.0, 1.1, 1.2, 1.5, 2.0, 3.0, 4.0, 5.0]\n"
                      "long_factors = [1.0, 1.5, 3.0, 6.0, 12.0, 24.0, 48.0, 60.0]\n",
     "max_seq_len = 48\n"},
    {"pages-of-4-chunk-3", "architecture = \"llama\"\nnum_heads = 4\nnum_kv_heads = 2\n",
     "max_seq_len = 48\nprefill_chunk = 3\npage_size = 4\n"},
    // Sliding-window attention (Mistral's): each token reads its last 5 keys,
    // from the prompt's sixth token on; then in chunks of 4 over pages of 4,
    // windows that start mid-page and mid-chunk.
    {"mistral-window-5", "architecture = \"mistral\"\nnum_heads = 4\nnum_kv_heads = 2\n"
                         "sliding_window = 5\n",
     "max_seq_len = 48\n"},
    {"window-6-chunk-4", "architecture = \"mistral\"\nnum_heads = 4\nnum_kv_heads = 1\n"
                         "sliding_window = 6\n",
     "max_seq_len = 48\nprefill_chunk = 4\npage_size = 4\n"},
    // Gemma 3: GeGLU, post-norms, embeddings times sqrt(64), q/k norms,
    // heads of 24 under a softmax over sqrt(20) (query_pre_attn_scalar);
    // the first layer slides (a window of 5, RoPE on base 10000), the second
    // reads every key (base 1e6, linear scaling 8), as Gemma 3's local and
    // global layers; tied embeddings.
    {"gemma3-local-global", "architecture = \"gemma3\"\nnum_heads = 4\nnum_kv_heads = 1\n"
                            "head_dim = 24\nsliding_window = 5\nfull_attention_layers = [1]\n"
                            "query_pre_attn_scalar = 20\n[model.rope]\ntheta = 1000000.0\n"
                            "type = \"linear\"\nfactor = 8.0\nlocal_theta = 10000.0\n",
     "max_seq_len = 48\n"},
    // Gemma 2: no q/k norms, every other layer global (layer 0 under a
    // window of 5), scores soft-capped at 2 and the logits at 3 (Gemma 2's
    // are 50 and 30; these small ones bite on random weights).
    {"gemma2-softcap", "architecture = \"gemma2\"\nnum_heads = 4\nnum_kv_heads = 2\n"
                       "sliding_window = 5\nattn_logit_softcapping = 2.0\n"
                       "final_logit_softcapping = 3.0\n",
     "max_seq_len = 48\n"},
    {"gemma3-chunk-3-pages-of-4", "architecture = \"gemma3\"\nnum_heads = 2\nnum_kv_heads = 2\n"
                                  "sliding_window = 6\nfull_attention_layers = [0]\n"
                                  "[model.rope]\ntheta = 1000000.0\nlocal_theta = 10000.0\n",
     "max_seq_len = 48\nprefill_chunk = 3\npage_size = 4\n"},
    // Qwen3-MoE's FFN: 8 experts of 48, each token through its top 2, their
    // probabilities renormalized.
    {"qwen3moe-top-2-of-8", "architecture = \"qwen3\"\nnum_heads = 4\nnum_kv_heads = 2\n"
                            "num_experts = 8\nnum_experts_per_tok = 2\n"
                            "moe_intermediate_size = 48\n",
     "max_seq_len = 48\n"},
    // Top 3 of 6 (96 wide) by their raw probabilities (norm_topk_prob
    // false), GeGLU experts, prompts in chunks of 3.
    {"moe-gelu-top-3-of-6-raw", "architecture = \"llama\"\nnum_heads = 4\nnum_kv_heads = 2\n"
                                "num_experts = 6\nnum_experts_per_tok = 3\n"
                                "norm_topk_prob = false\n"
                                "hidden_activation = \"gelu_pytorch_tanh\"\n",
     "max_seq_len = 48\nprefill_chunk = 3\n"},
    // Qwen2-MoE's: q/k/v biases, top 2 of 8 as routed, beside a shared
    // expert of 80 gated by sigmoid(x . gate).
    {"qwen2moe-shared-gated", "architecture = \"qwen2\"\nnum_heads = 4\nnum_kv_heads = 2\n"
                              "num_experts = 8\nnum_experts_per_tok = 2\n"
                              "moe_intermediate_size = 48\nnorm_topk_prob = false\n"
                              "shared_expert_intermediate_size = 80\nshared_expert_gate = true\n",
     "max_seq_len = 48\n"},
    // gpt-oss's: attention sinks, q/k/v and output biases, heads of 24 (96
    // wide over a hidden size of 64), layer 0 under a window of 5 and layer
    // 1 reading every key, top 2 of 8 experts with router and expert biases
    // (the softmax of the two best logits) through a clamped SwiGLU whose
    // limit of 0.8 bites on these weights, YaRN with truncate false.
    {"gpt-oss-sinks-clamped", "architecture = \"gpt-oss\"\nnum_heads = 4\nnum_kv_heads = 2\n"
                              "head_dim = 24\nsliding_window = 5\nnum_experts = 8\n"
                              "num_experts_per_tok = 2\nmoe_intermediate_size = 48\n"
                              "swiglu_limit = 0.8\n[model.rope]\ntheta = 1000.0\n"
                              "type = \"yarn\"\nfactor = 4.0\n"
                              "original_max_position_embeddings = 32\ntruncate = false\n",
     "max_seq_len = 48\n"},
};

const ModelShape &shapeNamed(const std::string &name) {
  for (const ModelShape &s : kModelShapes)
    if (s.name == name) return s;
  throw std::logic_error("no shape " + name);
}

/// 34 tokens in sequence `seq`: a prompt of 30 random ones (`seed`), then
/// 5, 6, 5, 6 decoded one at a time.
std::vector<int32_t> thirtyFourTokens(Engine &e, int seq, uint32_t seed) {
  std::vector<int32_t> a = randomTokens(30, 97, seed);
  e.prefill(seq, a.data(), 30);
  for (int32_t t : {5, 6, 5, 6}) {
    a.push_back(t);
    e.decode({seq}, {t});
  }
  return a;
}

/// Greedy decode steps from `logits`, each step's logits against the
/// reference; the sequence's pages checked before each.
void decodeAgainstReference(Engine &e, int seq, std::vector<int32_t> &tokens, const float *logits,
                            test::ReferenceModel &ref, size_t until, int64_t mostPages) {
  while (tokens.size() < until) {
    EXPECT_LE(e.heldPages(seq), mostPages) << "at " << tokens.size() << " tokens";
    e.pages().check();
    const int32_t next = argmax(logits, 97);
    tokens.push_back(next);
    logits = e.decode({seq}, {next});
    const double err = test::relativeError(logits, ref.logits(tokens));
    EXPECT_LT(err, 1e-4) << "at " << tokens.size() << " tokens";
    if (err >= 1e-4) break;
  }
}

} // namespace

TEST(Equivalence, EveryStepMatchesTheReference) {
  for (const ModelShape &s : kModelShapes) {
    SCOPED_TRACE(s.name);
    ShapeModel c(s);
    test::ReferenceModel ref(c.cfg.model, *c.source, DType::f32, c.cfg.compile.maxSeqLen);
    Engine engine = c.engine();
    const int64_t vocab = c.cfg.model.vocabSize;
    std::vector<int32_t> tokens = randomTokens(7, int(vocab), 11);
    int seq = engine.open();
    const float *logits = engine.prefill(seq, tokens.data(), int64_t(tokens.size()));
    EXPECT_LT(test::relativeError(logits, ref.logits(tokens)), 1e-4) << "after the prompt";
    for (int step = 0; step < 20; ++step) {
      int32_t next = argmax(logits, vocab);
      tokens.push_back(next);
      logits = engine.decode({seq}, {next});
      double err = test::relativeError(logits, ref.logits(tokens));
      EXPECT_LT(err, 1e-4) << "decode step " << step;
      if (err >= 1e-4) break;
    }
  }
}

TEST(Equivalence, ChunkedPrefillIsIdenticalToTokenByToken) {
  const std::vector<int32_t> prompt = randomTokens(11, 97, 3);
  std::vector<float> byToken;
  {
    // Token by token: one prefill call per token.
    ShapeModel c(kModelShapes[0]);
    Engine e = c.engine();
    int seq = e.open();
    const float *l = nullptr;
    for (int32_t t : prompt) l = e.prefill(seq, &t, 1);
    byToken.assign(l, l + 97);
  }
  for (const char *chunk : {"1", "4", "11", "16"}) {
    SCOPED_TRACE(std::string("chunk ") + chunk);
    ModelShape s = kModelShapes[0];
    s.compile = std::string("max_seq_len = 48\nprefill_chunk = ") + chunk + "\n";
    ShapeModel c(s);
    Engine e = c.engine();
    int seq = e.open();
    const float *l = e.prefill(seq, prompt.data(), int64_t(prompt.size()));
    EXPECT_EQ(std::vector<float>(l, l + 97), byToken);
  }
  {
    // Token by token through decode steps also gives the same bits.
    ShapeModel c(kModelShapes[0]);
    Engine e = c.engine();
    int seq = e.open();
    const float *l = e.prefill(seq, prompt.data(), 1);
    for (size_t i = 1; i < prompt.size(); ++i) l = e.decode({seq}, {prompt[i]});
    EXPECT_EQ(std::vector<float>(l, l + 97), byToken);
  }
}

TEST(Equivalence, BatchedDecodeMatchesEachSequenceAlone) {
  // The pool of every sequence at full context (3 x 48 / 4 = 36 pages), and
  // one of a single sequence's 12 pages, which the three share: they end
  // at 15, 19 and 12 tokens, 4 + 5 + 3 pages.
  // The mixture of experts' shape too: each decode step's rows choose
  // experts apart, several rows meeting at one.
  for (const char *base : {"gqa", "qwen3moe-top-2-of-8"})
  for (const char *pool : {"", "kv_pages = 12\n"}) {
    SCOPED_TRACE(std::string(base) + ", pool: " + pool);
    ModelShape s = shapeNamed(base);
    s.compile = std::string("max_seq_len = 48\nmax_batch = 3\npage_size = 4\nprefill_chunk = 4\n") +
                pool;
    ShapeModel c(s);
    ASSERT_EQ(c.cfg.compile.kvPages, *pool ? 12 : 36);
    test::ReferenceModel ref(c.cfg.model, *c.source);
    Engine e = c.engine();
    // Three sequences of different lengths, prefilled in turns so their pages
    // interleave in the pool.
    std::vector<std::vector<int32_t>> toks = {randomTokens(5, 97, 1), randomTokens(9, 97, 2),
                                              randomTokens(2, 97, 3)};
    std::vector<int> seqs;
    for (auto &t : toks) {
      seqs.push_back(e.open());
      e.prefill(seqs.back(), t.data(), int64_t(t.size()));
    }
    for (int step = 0; step < 10; ++step) {
      std::vector<int32_t> next;
      for (size_t i = 0; i < toks.size(); ++i) next.push_back(int32_t((step * 7 + int(i) * 13) % 97));
      // Vary the batch order: rows are not tied to sequences.
      std::vector<int> order = step % 2 ? std::vector<int>{2, 0, 1} : std::vector<int>{0, 1, 2};
      std::vector<int> batch;
      std::vector<int32_t> batchTokens;
      for (int i : order) {
        batch.push_back(seqs[size_t(i)]);
        batchTokens.push_back(next[size_t(i)]);
      }
      const float *l = e.decode(batch, batchTokens);
      for (size_t row = 0; row < order.size(); ++row) {
        auto &t = toks[size_t(order[row])];
        t.push_back(next[size_t(order[row])]);
        EXPECT_LT(test::relativeError(l + row * 97, ref.logits(t)), 1e-4)
            << "step " << step << " sequence " << order[row];
      }
    }
    // Ending a sequence returns its pages; a new one reuses them.
    int64_t before = e.freePages();
    e.close(seqs[1]);
    EXPECT_EQ(e.freePages(), before + (int64_t(toks[1].size()) + 3) / 4);
    if (*pool) { EXPECT_EQ(before, 0); } // the three filled the small pool
    int again = e.open();
    std::vector<int32_t> t = randomTokens(6, 97, 9);
    const float *l = e.prefill(again, t.data(), 6);
    EXPECT_LT(test::relativeError(l, ref.logits(t)), 1e-4);
  }
}

// Under a sliding window a sequence gives back the pages behind it. The
// window-6-chunk-4 shape (pages of 4): a call of up to 4 rows from
// position S reads keys from S - 5 on, which span at most 3 pages
// ((4 - 1) + 5 + 4 = 12 positions from a page's start), so one sequence
// holds 3 pages at once, and the default pool (max_batch 1) is 3 pages,
// 12 tokens, where the context is 48 (12 pages).
TEST(Equivalence, AWindowedSequenceOutgrowsItsPool) {
  ShapeModel c(shapeNamed("window-6-chunk-4"));
  ASSERT_EQ(c.cfg.compile.kvPages, 3);
  test::ReferenceModel ref(c.cfg.model, *c.source, DType::f32, c.cfg.compile.maxSeqLen);
  Engine e = c.engine();
  const int seq = e.open();
  std::vector<int32_t> tokens = randomTokens(30, 97, 21);
  const float *logits = e.prefill(seq, tokens.data(), int64_t(tokens.size()));
  EXPECT_LT(test::relativeError(logits, ref.logits(tokens)), 1e-4) << "after the prompt";
  decodeAgainstReference(e, seq, tokens, logits, ref, 48, 3);
  EXPECT_EQ(e.length(seq), 48);
  e.close(seq);
  e.pages().check();
  EXPECT_EQ(e.freePages(), 3);
  // Two pages are too few, at compile time, naming the setting.
  ModelShape small = shapeNamed("window-6-chunk-4");
  small.compile += "kv_pages = 2\n";
  try {
    config(small);
    ADD_FAILURE() << "a pool of 2 pages compiled";
  } catch (const InputError &err) {
    EXPECT_NE(std::string(err.what()).find(
                  "field 'compile.kv_pages': kv_pages 2 cannot hold one sequence of max_seq_len 48 "
                  "(3 pages of 4 tokens at once: a sliding window of 6 keys and a call of 4 "
                  "rows); give at least 3"),
              std::string::npos)
        << err.what();
  }
}

// A windowed sequence starts from pages another left in the prefix cache,
// behind its window (idle) and within it (held, and copied where it goes on
// writing), and gives back at once those behind its own window.
TEST(Equivalence, AWindowedSequenceStartsFromCachedPages) {
  ModelShape s = shapeNamed("window-6-chunk-4");
  s.compile += "kv_pages = 24\n";
  ShapeModel c(s);
  test::ReferenceModel ref(c.cfg.model, *c.source, DType::f32, c.cfg.compile.maxSeqLen);
  Engine e = c.engine();
  const int first = e.open();
  const std::vector<int32_t> a = thirtyFourTokens(e, first, 22);
  // 34 tokens: the next row reads keys from 29 on, in pages 7 and 8; the
  // seven before are given back, full and in the prefix cache.
  EXPECT_EQ(e.heldPages(first), 2);
  EXPECT_EQ(e.pages().cachedPages(), 8);
  std::vector<int32_t> b(a.begin(), a.begin() + 30);
  for (int32_t t : {7, 8, 9}) b.push_back(t);
  const int second = e.open();
  // Pages 0-6 (28 tokens) and the first 2 tokens of page 7, copied.
  EXPECT_EQ(e.reuse(second, b.data(), int64_t(b.size())), 30);
  EXPECT_EQ(e.heldPages(second), 2); // page 6 (its keys from 25 on) and the copy
  const float *logits = e.prefill(second, b.data() + 30, 3);
  EXPECT_LT(test::relativeError(logits, ref.logits(b)), 1e-4) << "after the prompt";
  decodeAgainstReference(e, second, b, logits, ref, 40, 3);
  e.close(first);
  e.close(second);
  e.pages().check();
  EXPECT_EQ(e.freePages(), 24);
}

// Where windowed and full layers mix, the sliding layers keep their keys and
// values in a pool of their own. gemma3-chunk-3-pages-of-4 (layer 0 global,
// layer 1 under a window of 6; calls of 3 rows, pages of 4, context 48): a
// call from position S reads keys from S - 5 on, through S + 2, so at most
// 3 pages at once (S = 6: positions 1 to 8, pages 0, 1, 2); the sliding
// layer's pool is max_batch (1) x 3 pages, the global layer's 12 pages (48
// tokens). Each page of one layer is 2 (keys, values) x 2 heads x 32 x 4
// tokens x 4 bytes = 2,048 bytes: a cache of (12 + 3) x 2,048 = 30,720
// bytes, where one pool for both layers would take 2 x 12 x 2,048 = 49,152.
TEST(Equivalence, MixedWindowsKeepTheSlidingLayersInAPoolOfTheirOwn) {
  ShapeModel c(shapeNamed("gemma3-chunk-3-pages-of-4"));
  ASSERT_EQ(c.cfg.compile.kvPages, 12);
  ASSERT_EQ(c.cfg.compile.windowKvPages, 3);
  EXPECT_EQ(c.plan.kvCache.layers, 1);
  EXPECT_EQ(c.plan.kvCache.pages, 12);
  EXPECT_EQ(c.plan.windowCache.layers, 1);
  EXPECT_EQ(c.plan.windowCache.pages, 3);
  EXPECT_EQ(c.plan.memoryBill().kvCacheBytes, 30720);
  EXPECT_EQ(c.plan.memoryBill().windowKvCacheBytes, 3 * 2048);
  test::ReferenceModel ref(c.cfg.model, *c.source, DType::f32, c.cfg.compile.maxSeqLen);
  Engine e = c.engine();
  ASSERT_NE(e.windowPages(), nullptr);
  EXPECT_EQ(e.poolWindow(), 6);
  const int seq = e.open();
  std::vector<int32_t> tokens = randomTokens(30, 97, 23);
  const float *logits = e.prefill(seq, tokens.data(), int64_t(tokens.size()));
  EXPECT_LT(test::relativeError(logits, ref.logits(tokens)), 1e-4) << "after the prompt";
  // The global layer keeps every page; the sliding one at most 3 at once.
  while (tokens.size() < 48) {
    const int64_t pages = ceilDiv(int64_t(tokens.size()), 4);
    EXPECT_EQ(e.heldPages(seq), pages) << "at " << tokens.size() << " tokens";
    e.pages().check();
    e.checkPools();
    const int32_t next = argmax(logits, 97);
    tokens.push_back(next);
    logits = e.decode({seq}, {next});
    const double err = test::relativeError(logits, ref.logits(tokens));
    ASSERT_LT(err, 1e-4) << "at " << tokens.size() << " tokens";
  }
  // 48 tokens: the next row would read keys from 43 on, in pages 10 and
  // 11; pages 0 to 9 of the sliding layer are given back (one of them may
  // stay for the prefix cache, taken back on demand).
  EXPECT_EQ(e.freeWindowPages(), 1);
  e.close(seq);
  e.pages().check();
  e.checkPools();
  EXPECT_EQ(e.pages().available(), 12);
  EXPECT_EQ(e.freeWindowPages(), 3);
  EXPECT_EQ(e.freePages(), 3); // the fewer of the two
  // A pool too small for one sequence at once, and one for a model
  // whose layers do not mix, are refused naming the setting.
  for (const auto &[shape, pages, want] :
       {std::tuple<const char *, const char *, const char *>{
            "gemma3-chunk-3-pages-of-4", "window_kv_pages = 2\n",
            "field 'compile.window_kv_pages': window_kv_pages 2 cannot hold one sequence's 3 "
            "pages of 4 tokens at once (a sliding window of 6 keys and a call of 3 rows); "
            "give at least 3"},
        {"window-6-chunk-4", "window_kv_pages = 8\n",
         "field 'compile.window_kv_pages': is the pool of the layers under a sliding window "
         "where others read every key, and this model's layers do not mix at max_seq_len 48; "
         "leave it out"}}) {
    ModelShape bad = shapeNamed(shape);
    bad.compile += pages;
    try {
      config(bad);
      ADD_FAILURE() << shape << " compiled with " << pages;
    } catch (const InputError &err) {
      EXPECT_NE(std::string(err.what()).find(want), std::string::npos) << err.what();
    }
  }
}

// A sequence of a model with both pools starts from cached pages: the main
// pool's prefix cache, and for the sliding layer the pages within the window
// of the point reused, which each cached main page keeps (its companion)
// while their pool has room. Pages of 4 under a window of 6: reusing 30
// tokens, the next row reads keys from 25 on, pages 6 and 7 (the partial
// one, copied), so the sliding layer needs those two, not pages 0 to 5; a
// pool of 3 still holds them when the sequence that wrote them ends, and
// gives them back for another sequence's pages (then nothing is reused),
// where a pool of 24 keeps them.
TEST(Equivalence, MixedWindowsReuseWhatBothPoolsHold) {
  for (int64_t windowPages : {24, 3}) {
    for (bool between : {false, true}) {
      SCOPED_TRACE("window_kv_pages " + std::to_string(windowPages) +
                   (between ? ", another sequence between" : ""));
      ModelShape s = shapeNamed("gemma3-chunk-3-pages-of-4");
      s.compile += "kv_pages = 24\nwindow_kv_pages = " + std::to_string(windowPages) + "\n";
      ShapeModel c(s);
      test::ReferenceModel ref(c.cfg.model, *c.source, DType::f32, c.cfg.compile.maxSeqLen);
      Engine e = c.engine();
      const int first = e.open();
      const std::vector<int32_t> a = thirtyFourTokens(e, first, 24);
      e.close(first);
      EXPECT_EQ(e.pages().cachedPages(), 8); // 34 tokens: 8 full pages
      if (between) { // 12 tokens of another prompt, its 3 pages in each pool
        const int other = e.open();
        const std::vector<int32_t> o = randomTokens(12, 97, 25);
        e.prefill(other, o.data(), 12);
        e.close(other);
      }
      std::vector<int32_t> b(a.begin(), a.begin() + 30);
      for (int32_t t : {7, 8, 9}) b.push_back(t);
      const int second = e.open();
      // Pages 0-6 (28 tokens) and the first 2 of page 7, copied in each
      // pool; or, with the sliding layer's pages 6 and 7 taken back,
      // nothing.
      const int64_t reused = e.reuse(second, b.data(), int64_t(b.size()));
      EXPECT_EQ(reused, windowPages == 3 && between ? 0 : 30);
      const float *logits = e.prefill(second, b.data() + reused, int64_t(b.size()) - reused);
      EXPECT_LT(test::relativeError(logits, ref.logits(b)), 1e-4) << "after the prompt";
      while (b.size() < 40) {
        const int32_t next = argmax(logits, 97);
        b.push_back(next);
        logits = e.decode({second}, {next});
        ASSERT_LT(test::relativeError(logits, ref.logits(b)), 1e-4) << "at " << b.size();
      }
      e.close(second);
      e.pages().check();
      e.checkPools();
      EXPECT_EQ(e.pages().available(), 24);
      EXPECT_EQ(e.freeWindowPages(), windowPages);
    }
  }
}

// Prompts that share starts of every length with earlier ones, through pools
// too small to keep much (the sliding layer's 8 pages, one sequence's 3 and
// five more for the prefix cache): whatever is reused, from whichever pages
// each pool still holds, every prompt's logits and a few greedy steps after
// it stay within 1e-4 of the reference, and both pools stay consistent.
TEST(Equivalence, MixedWindowsReuseIsExactWhateverThePoolsKept) {
  ModelShape s = shapeNamed("gemma3-chunk-3-pages-of-4");
  s.compile += "kv_pages = 20\nwindow_kv_pages = 8\n";
  ShapeModel c(s);
  test::ReferenceModel ref(c.cfg.model, *c.source, DType::f32, c.cfg.compile.maxSeqLen);
  Engine e = c.engine();
  std::mt19937 rng(7);
  const std::vector<std::vector<int32_t>> bases = {randomTokens(40, 97, 31),
                                                   randomTokens(40, 97, 32)};
  int64_t reusedTokens = 0;
  for (int i = 0; i < 24; ++i) {
    SCOPED_TRACE("prompt " + std::to_string(i));
    const std::vector<int32_t> &base = bases[rng() % 2];
    std::vector<int32_t> t(base.begin(), base.begin() + 2 + rng() % 34);
    for (uint32_t k = 0, extra = 1 + rng() % 3; k < extra; ++k) t.push_back(int32_t(rng() % 97));
    const int seq = e.open();
    const int64_t reused = e.reuse(seq, t.data(), int64_t(t.size()));
    reusedTokens += reused;
    const float *logits = e.prefill(seq, t.data() + reused, int64_t(t.size()) - reused);
    ASSERT_LT(test::relativeError(logits, ref.logits(t)), 1e-4) << "reused " << reused;
    for (int step = 0; step < 3 && t.size() < 48; ++step) {
      const int32_t next = argmax(logits, 97);
      t.push_back(next);
      logits = e.decode({seq}, {next});
      ASSERT_LT(test::relativeError(logits, ref.logits(t)), 1e-4) << "step " << step;
    }
    e.checkPools();
    e.close(seq);
    e.checkPools();
  }
  EXPECT_GT(reusedTokens, 0);
  EXPECT_GT(e.windowEvictions(), 0);
  EXPECT_EQ(e.pages().available(), 20);
  EXPECT_EQ(e.freeWindowPages(), 8);
}

TEST(Equivalence, ThreadCountDoesNotChangeResults) {
  ShapeModel c(kModelShapes[0]);
  std::vector<int32_t> prompt = randomTokens(9, 97, 4);
  std::vector<float> one;
  for (int threads : {1, 2, 3}) {
    Engine e = c.engine(threads);
    int seq = e.open();
    const float *l = e.prefill(seq, prompt.data(), int64_t(prompt.size()));
    l = e.decode({seq}, {5});
    if (one.empty())
      one.assign(l, l + 97);
    else
      EXPECT_EQ(std::vector<float>(l, l + 97), one) << threads << " threads";
  }
}

TEST(Equivalence, Bf16WeightsStayCloseToTheirReference) {
  ModelShape s = kModelShapes[0];
  s.compile = "max_seq_len = 48\nweight_dtype = \"bf16\"\nkv_dtype = \"f32\"\n";
  ShapeModel c(s);
  test::ReferenceModel ref(c.cfg.model, *c.source, DType::bf16);
  std::vector<int32_t> t = randomTokens(8, 97, 6);
  const std::vector<double> want = ref.logits(t);
  // The plan's arithmetic (f32 activations) closely; where the CPU rounds
  // activations to bf16 for vdpbf16ps (runtime/cpu/LinearDot.h), each
  // linear's inputs move by up to 2^-9 of themselves, through two layers:
  // measured 4.8e-3 (AMD EPYC with AVX512_BF16).
  for (cpu::Activations mode : test::kBothActivations) {
    test::ActivationsScope scope(mode);
    Engine e = c.engine();
    int seq = e.open();
    const float *l = e.prefill(seq, t.data(), int64_t(t.size()));
    const double err = test::relativeError(l, want);
    std::printf("bf16 weights, %s activations: logits relative error %.3g\n",
                cpu::activationsFor(DType::bf16), err);
    EXPECT_LT(err, cpu::bf16Dot() ? 2e-2 : 1e-4) << cpu::activationsFor(DType::bf16);
  }
}

TEST(Equivalence, BadInputsAreInputErrors) {
  ShapeModel c(kModelShapes[0]);
  Engine e = c.engine();
  int seq = e.open();
  int32_t bad = 97;
  EXPECT_THROW(e.prefill(seq, &bad, 1), InputError);
  std::vector<int32_t> tooLong(49, 3);
  EXPECT_THROW(e.prefill(seq, tooLong.data(), 49), InputError);
  // More sequences than decode rows may be open (the scheduler picks which
  // run), but the pool's pages run out: 48 tokens of pages of 16 are all
  // the pages of a max_batch 1 plan.
  std::vector<int32_t> full(40, 3);
  e.prefill(seq, full.data(), 40);
  int other = e.open();
  EXPECT_THROW(e.prefill(other, full.data(), 1), InputError);
  EXPECT_EQ(e.length(other), 0);
}

TEST(Sampling, SeededAndTopKOneIsGreedy) {
  std::vector<float> logits(50);
  std::mt19937 rng(1);
  for (float &v : logits) v = float(rng() % 1000) / 100.0f;
  const int32_t greedy = argmax(logits.data(), 50);
  Sampler topK1({1.5, 1, 1.0, 42});
  for (int i = 0; i < 20; ++i) EXPECT_EQ(topK1.sample(logits.data(), 50), greedy);
  Sampler zero({0.0, 0, 1.0, 42});
  EXPECT_EQ(zero.sample(logits.data(), 50), greedy);
  Sampler a({1.0, 10, 0.9, 7}), b({1.0, 10, 0.9, 7});
  std::vector<int32_t> sa, sb;
  for (int i = 0; i < 50; ++i) {
    sa.push_back(a.sample(logits.data(), 50));
    sb.push_back(b.sample(logits.data(), 50));
  }
  EXPECT_EQ(sa, sb);
  // Sampling really samples: not every draw is the greedy token.
  EXPECT_TRUE(std::any_of(sa.begin(), sa.end(), [&](int32_t t) { return t != greedy; }));
  // top-p keeps only the likeliest tokens up to its mass: with a tiny p, only
  // the top one.
  Sampler tinyP({1.0, 0, 1e-6, 3});
  for (int i = 0; i < 10; ++i) EXPECT_EQ(tinyP.sample(logits.data(), 50), greedy);
  EXPECT_THROW(Sampler({-1.0, 0, 1.0, 0}), InputError);
  EXPECT_THROW(Sampler({1.0, 0, 0.0, 0}), InputError);
  EXPECT_THROW(Sampler({1.0, 0, 1.5, 0}), InputError);
}

TEST(Sampling, LogprobsAreTheLogSoftmaxOnEveryIsa) {
  // Rows of Llama 2's and Llama 3's vocabulary sizes (not multiples of 8
  // for the tails), spread like logits, with ties and a very low tail.
  const cpu::Isa was = cpu::activeIsa();
  for (int64_t vocab : {int64_t(32003), int64_t(128256)}) {
    std::vector<float> row(static_cast<size_t>(vocab));
    std::mt19937 rng(static_cast<uint32_t>(vocab));
    std::normal_distribution<float> spread(0.0f, 4.0f);
    for (float &v : row) v = spread(rng);
    row[7] = row[11] = 25.0f; // tied at the top: the lower id first
    row[13] = -200.0f;        // e^-225: nothing, not a NaN
    std::vector<int32_t> order(row.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = int32_t(i);
    std::stable_sort(order.begin(), order.end(),
                     [&](int32_t a, int32_t b) { return row[size_t(a)] > row[size_t(b)]; });
    for (cpu::Isa isa : {cpu::Isa::scalar, cpu::Isa::avx2, cpu::Isa::avx512}) {
      if (isa > cpu::detectIsa()) continue;
      SCOPED_TRACE(std::string(cpu::isaName(isa)) + ", vocab " + std::to_string(vocab));
      cpu::setActiveIsa(isa);
      for (int32_t token : {int32_t(7), int32_t(11), int32_t(13), int32_t(vocab - 1)}) {
        const TokenLogprobs got = tokenLogprobs(row.data(), vocab, token, kMaxTopLogprobs);
        EXPECT_NEAR(got.chosen.logprob,
                    kvplan::testing::referenceLogprob(row.data(), vocab, token), 1e-6);
        // vLLM's rank: 1 + how many are likelier (11, tied with 7, is 1 too).
        int64_t rank = 1;
        while (row[size_t(order[size_t(rank - 1)])] > row[size_t(token)]) ++rank;
        EXPECT_EQ(got.chosen.rank, rank) << "token " << token;
        ASSERT_EQ(got.top.size(), size_t(kMaxTopLogprobs));
        for (size_t i = 0; i < got.top.size(); ++i) {
          EXPECT_EQ(got.top[i].rank, int64_t(i) + 1);
          EXPECT_EQ(got.top[i].token, order[i]) << "rank " << i;
          EXPECT_NEAR(got.top[i].logprob,
                      kvplan::testing::referenceLogprob(row.data(), vocab, order[i]), 1e-6);
        }
      }
      EXPECT_TRUE(tokenLogprobs(row.data(), vocab, 0, 0).top.empty());
    }
  }
  cpu::setActiveIsa(was);
}

TEST(Sampling, PenaltiesMoveTheLogitsTheyName) {
  // Each case sits on a threshold the formula decides: greedy picks token 0
  // or 1 by a margin the penalty closes or not.
  auto options = [](double presence, double frequency, double repetition) {
    SamplingOptions o;
    o.presencePenalty = presence;
    o.frequencyPenalty = frequency;
    o.repetitionPenalty = repetition;
    return o;
  };
  std::vector<float> row = {2.0f, 1.5f, 1.0f};
  // Repetition: 2.0 / 2 = 1.0 < 1.5 for a token of the prompt; 2.0 / 1.2
  // stays above.
  Sampler rep(options(0, 0, 2.0));
  rep.setPrompt({0});
  EXPECT_EQ(rep.sample(row.data(), 3), 1);
  Sampler mild(options(0, 0, 1.2));
  mild.setPrompt({0});
  EXPECT_EQ(mild.sample(row.data(), 3), 0);
  Sampler notInPrompt(options(0, 0, 2.0));
  notInPrompt.setPrompt({2});
  EXPECT_EQ(notInPrompt.sample(row.data(), 3), 0);
  // A negative logit is multiplied: -1 x 2 = -2 < -1.5.
  std::vector<float> negative = {-1.0f, -1.5f};
  Sampler repNeg(options(0, 0, 2.0));
  repNeg.setPrompt({0});
  EXPECT_EQ(repNeg.sample(negative.data(), 2), 1);
  // Frequency 0.3 and presence 0.1 on what the sampler drew: once,
  // 2.0 - 0.4 = 1.6 > 1.5; twice, 2.0 - 0.7 = 1.3 < 1.5. The prompt does
  // not count for them.
  Sampler freq(options(0.1, 0.3, 1.0));
  freq.setPrompt({0, 0, 0});
  EXPECT_EQ(freq.sample(row.data(), 3), 0); // nothing drawn yet
  EXPECT_EQ(freq.sample(row.data(), 3), 0); // drawn once
  EXPECT_EQ(freq.sample(row.data(), 3), 1); // drawn twice
  // A negative presence penalty favours what was drawn.
  std::vector<float> close = {1.0f, 1.1f};
  Sampler favour(options(-0.2, 0, 1.0));
  EXPECT_EQ(favour.sample(close.data(), 2), 1);
  EXPECT_EQ(favour.sample(close.data(), 2), 1);
  EXPECT_THROW(Sampler(options(2.5, 0, 1)), InputError);
  EXPECT_THROW(Sampler(options(0, -3, 1)), InputError);
  EXPECT_THROW(Sampler(options(0, 0, 0)), InputError);
  // A bias is added after the penalties: +0.6 lifts 1.5 over 2.0, +0.4
  // does not; -100 all but bans the best token, also at a temperature.
  SamplingOptions lift = options(0, 0, 1.0);
  lift.logitBias = {{1, 0.6}};
  EXPECT_EQ(Sampler(lift).sample(row.data(), 3), 1);
  lift.logitBias = {{1, 0.4}};
  EXPECT_EQ(Sampler(lift).sample(row.data(), 3), 0);
  SamplingOptions ban = options(0, 0, 1.0);
  ban.temperature = 1.0;
  ban.seed = 3;
  ban.logitBias = {{0, -100}};
  Sampler banned(ban);
  for (int i = 0; i < 50; ++i) EXPECT_NE(banned.sample(row.data(), 3), 0);
  SamplingOptions bad = options(0, 0, 1.0);
  bad.logitBias = {{1, 101}};
  EXPECT_THROW(Sampler{bad}, InputError);
  bad.logitBias = {{-1, 1}};
  EXPECT_THROW(Sampler{bad}, InputError);
  // Penalties need the row on the host: there is no device draw for them.
  EXPECT_THROW(Sampler(options(0.5, 0, 1)).deviceRow(), std::logic_error);
  EXPECT_NO_THROW(Sampler(options(0, 0, 1)).deviceRow());
}

namespace {

/// vLLM's order, written out plainly: softmax at the temperature; the
/// tokens at least min-p times as likely as the likeliest; the top-k of
/// those; the shortest prefix of them (most likely first) whose
/// renormalised mass reaches top-p; renormalised.
std::vector<double> minPReference(const std::vector<float> &logits, double t, int64_t k,
                                  double topP, double minP) {
  std::vector<double> p(logits.size()), out(logits.size(), 0.0);
  double total = 0;
  for (size_t i = 0; i < p.size(); ++i) total += p[i] = std::exp(double(logits[i]) / t);
  for (double &v : p) v /= total;
  const double best = *std::max_element(p.begin(), p.end());
  std::vector<size_t> kept;
  for (size_t i = 0; i < p.size(); ++i)
    if (p[i] >= minP * best) kept.push_back(i);
  std::stable_sort(kept.begin(), kept.end(), [&](size_t a, size_t b) { return p[a] > p[b]; });
  if (k > 0 && kept.size() > size_t(k)) kept.resize(size_t(k));
  double mass = 0;
  for (size_t i : kept) mass += p[i];
  double cumulative = 0;
  size_t n = 0;
  while (n < kept.size() && cumulative < topP) cumulative += p[kept[n++]] / mass;
  kept.resize(n);
  mass = 0;
  for (size_t i : kept) mass += p[i];
  for (size_t i : kept) out[i] = p[i] / mass;
  return out;
}

} // namespace

TEST(Sampling, MinPKeepsTokensAFractionAsLikelyAsTheBestBeforeTopKAndTopP) {
  // Probabilities 0.4, 0.3, 0.2, 0.06, 0.04 at temperature 1.
  std::vector<float> logits;
  for (double p : {0.4, 0.3, 0.2, 0.06, 0.04}) logits.push_back(float(std::log(p)));
  struct Case {
    double t;
    int64_t k;
    double topP, minP;
    size_t kept; // how many tokens can be drawn
  };
  // min-p 0.2 of 0.4 keeps three (0.9 of the mass); top-p 0.75 of those
  // keeps two (0.4 / 0.9 < 0.75 <= 0.7 / 0.9), where top-p over the whole
  // row first would keep three (0.7 < 0.75): the order is vLLM's.
  const Case cases[] = {{1.0, 0, 1.0, 0.2, 3}, {1.0, 0, 0.75, 0.2, 2}, {1.0, 0, 0.75, 0.0, 3},
                        {0.5, 0, 1.0, 0.3, 2}, {2.0, 0, 1.0, 0.2, 5}, {1.0, 2, 1.0, 0.1, 2},
                        {1.0, 0, 1.0, 1.0, 1}, {0.7, 4, 0.9, 0.05, 3}};
  for (const Case &c : cases) {
    SCOPED_TRACE("temperature " + std::to_string(c.t) + " top-k " + std::to_string(c.k) +
                 " top-p " + std::to_string(c.topP) + " min-p " + std::to_string(c.minP));
    SamplingOptions o{c.t, c.k, c.topP, 5};
    o.minP = c.minP;
    std::vector<double> got;
    samplingProbabilities(logits.data(), 5, o, got);
    const std::vector<double> want = minPReference(logits, c.t, c.k, c.topP, c.minP);
    for (size_t i = 0; i < 5; ++i) EXPECT_NEAR(got[i], want[i], 1e-6) << "token " << i;
    EXPECT_EQ(size_t(std::count_if(got.begin(), got.end(), [](double p) { return p > 0; })),
              c.kept);
    Sampler s(o);
    for (int i = 0; i < 300; ++i) EXPECT_GT(want[size_t(s.sample(logits.data(), 5))], 0);
  }
  // Greedy keeps the argmax, which min-p always keeps.
  SamplingOptions greedy;
  greedy.minP = 0.9;
  EXPECT_EQ(Sampler(greedy).sample(logits.data(), 5), 0);
  // min-p changes no logit: the device draws it, a tensor-parallel leader
  // from its ranks' candidates, and speculation's acceptance rule
  // (samplingProbabilities) still holds.
  EXPECT_FALSE(greedy.changesRow());
  SamplingOptions hot = greedy;
  hot.temperature = 0.7;
  EXPECT_FLOAT_EQ(Sampler(hot).deviceRow().minP, 0.9f);
  hot.minTokens = 1;
  EXPECT_THROW(Sampler(hot).deviceRow(), std::logic_error);
  for (double bad : {-0.1, 1.5, double(NAN)}) {
    SamplingOptions o;
    o.minP = bad;
    EXPECT_THROW(Sampler{o}, InputError) << bad;
  }
}

TEST(Sampling, AllowedTokensAreTheOnlyOnesDrawn) {
  const std::vector<float> row = {2.0f, 1.0f, 0.5f, 3.0f, -1.0f};
  SamplingOptions o;
  o.allowedTokens = {1, 2, 4, 9}; // an id past the row is ignored
  EXPECT_TRUE(o.changesRow());
  EXPECT_EQ(Sampler(o).sample(row.data(), 5), 1); // the best of them
  std::set<int32_t> seen;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    o.temperature = 2.0;
    o.seed = seed;
    seen.insert(Sampler(o).sample(row.data(), 5));
  }
  EXPECT_EQ(seen, (std::set<int32_t>{1, 2, 4}));
  // With a penalty too: the allowed ones are penalised, the others stay out.
  o.temperature = 0;
  o.logitBias = {{1, -2.0}, {3, 5.0}};
  EXPECT_EQ(Sampler(o).sample(row.data(), 5), 2);
  SamplingOptions bad;
  bad.allowedTokens = {-1};
  EXPECT_THROW(Sampler{bad}, InputError);
}

// vLLM's bad_words as token sequences: a one-token word is never drawn; a
// longer one's last token never right after the others.
TEST(Sampling, BadWordsBanTheirLastTokenAfterTheRest) {
  const std::vector<float> first = {0.0f, 5.0f, 0.0f, 0.0f, 0.0f}; // 1 is likeliest
  const std::vector<float> then = {1.0f, 0.0f, 2.0f, 3.0f, -1.0f}; // 3, then 2, then 0
  SamplingOptions o;
  o.badWords = {{3}, {1, 2}, {4, 0, 2}, {9, 9}}; // an id past the row is ignored
  EXPECT_TRUE(o.changesRow());
  Sampler greedy(o);
  EXPECT_EQ(greedy.sample(first.data(), 5), 1);
  EXPECT_EQ(greedy.sample(then.data(), 5), 0); // 3 banned, 2 after 1 banned
  EXPECT_EQ(greedy.sample(then.data(), 5), 2); // after 0 (not 4, 0), 2 may come
  // Sampled: 3 never; 2 never right after 1.
  std::map<int32_t, int> afterOne;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    o.temperature = 2.0;
    o.seed = seed;
    Sampler s(o);
    int32_t last = -1;
    for (int i = 0; i < 8; ++i) {
      const int32_t t = s.sample(then.data(), 5);
      EXPECT_NE(t, 3) << "seed " << seed;
      if (last == 1) ++afterOne[t];
      last = t;
    }
  }
  EXPECT_EQ(afterOne.count(2), 0u);
  EXPECT_GT(afterOne.size(), 1u) << "after 1 the other tokens still come";
  // Without the ban, the same seeds draw 3 and 2 after 1.
  o.badWords.clear();
  std::set<int32_t> unbanned;
  for (uint64_t seed = 0; seed < 50; ++seed) {
    o.seed = seed;
    unbanned.insert(Sampler(o).sample(then.data(), 5));
  }
  EXPECT_TRUE(unbanned.count(3));
  for (const auto &words : std::vector<std::vector<std::vector<int32_t>>>{{{}}, {{2, -1}}}) {
    SamplingOptions bad;
    bad.badWords = words;
    EXPECT_THROW(Sampler{bad}, InputError);
  }
  SamplingOptions both;
  both.badWords = {{1}};
  both.allowedTokens = {1, 2};
  EXPECT_THROW(Sampler{both}, InputError);
}

TEST(Sampling, MinTokensHoldsBackTheEndTokensUntilThatManyAreDrawn) {
  const std::vector<float> row = {2.0f, 1.0f, 0.5f};
  SamplingOptions o;
  o.minTokens = 3;
  o.endTokens = {0, 7}; // an id past the row is ignored
  EXPECT_TRUE(o.changesRow());
  Sampler greedy(o);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(greedy.sample(row.data(), 3), 1) << "draw " << i;
  EXPECT_EQ(greedy.sample(row.data(), 3), 0);
  // Sampled: never an end token among the first three draws; after them,
  // the likeliest token comes back.
  int ends = 0;
  for (uint64_t seed = 0; seed < 100; ++seed) {
    o.temperature = 1.0;
    o.seed = seed;
    Sampler s(o);
    for (int i = 0; i < 3; ++i) EXPECT_NE(s.sample(row.data(), 3), 0) << "seed " << seed;
    ends += s.sample(row.data(), 3) == 0;
  }
  EXPECT_GT(ends, 40); // e^2 / (e^2 + e + e^0.5): 0.63
  SamplingOptions bad;
  bad.minTokens = -1;
  EXPECT_THROW(Sampler{bad}, InputError);
}

namespace {

/// A prompt of 6 random ids (`seed`) and 8 greedy steps in a sequence of
/// its own, each step's logits within 1e-4 of the reference's.
void greedyStepsMatch(Engine &e, const test::ReferenceModel &ref, uint32_t seed) {
  std::vector<int32_t> tokens = randomTokens(6, 97, seed);
  int seq = e.open();
  const float *l = e.prefill(seq, tokens.data(), int64_t(tokens.size()));
  for (int step = 0; step < 8; ++step) {
    ASSERT_LT(test::relativeError(l, ref.logits(tokens)), 1e-4) << "step " << step;
    int32_t next = argmax(l, 97);
    tokens.push_back(next);
    l = e.decode({seq}, {next});
  }
  e.close(seq);
}

ModelShape withDtype(ModelShape s, DType dtype) {
  // The cache stays f32 so only the weights' rounding differs.
  s.compile += std::string("weight_dtype = \"") + dtypeName(dtype) + "\"\nkv_dtype = \"f32\"\n";
  return s;
}

} // namespace

TEST(Equivalence, EveryWeightTypeMatchesAReferenceWithTheSameWeights) {
  // The reference rounds (or quantizes) its weights exactly as the artifact
  // stores them, so the runtime must match it as tightly as in f32: with
  // f32 activations (the CPU's int8 ones are checked against f32 below and
  // in KernelTest's LinearDot cases).
  test::ActivationsScope f32Activations(cpu::Activations::f32);
  for (DType dtype : {DType::bf16, DType::f16, DType::i8, DType::i4, DType::mxfp4}) {
    // The experts' stacks: each expert's rows, scales and minimums found
    // inside one weight of every type (the down stack's rows of 48 end in
    // a partial group).
    for (const ModelShape &base :
         {kModelShapes[0], kModelShapes[3], shapeNamed("qwen3moe-top-2-of-8")}) {
      ModelShape s = withDtype(base, dtype);
      SCOPED_TRACE(std::string(s.name) + " " + dtypeName(dtype));
      ShapeModel c(s);
      test::ReferenceModel ref(c.cfg.model, *c.source, dtype);
      Engine e = c.engine();
      greedyStepsMatch(e, ref, 21);
    }
  }
}

TEST(Equivalence, Mxfp4ExpertsBesideInt8MatricesMatchAReferenceWithTheSameWeights) {
  // gpt-oss as its checkpoints compile by default: the experts' stacks in
  // mxfp4 (expert_dtype), every other matrix in int8; the reference rounds
  // each the same way, so f32 activations match it as tightly as f32
  // weights. (The CPU's int8 activations are checked kernel by kernel in
  // KernelTest's LinearDot cases: over whole models this small and random,
  // rounding x flips a router's choice at some step of one seed in five or
  // so, as often with int8 experts as with mxfp4 ones.)
  test::ActivationsScope f32Activations(cpu::Activations::f32);
  for (const char *name : {"gpt-oss-sinks-clamped", "qwen3moe-top-2-of-8"}) {
    ModelShape s = withDtype(shapeNamed(name), DType::i8);
    s.compile += "expert_dtype = \"mxfp4\"\n";
    SCOPED_TRACE(name);
    ShapeModel c(s);
    test::ReferenceModel ref(c.cfg.model, *c.source, DType::i8, c.cfg.compile.maxSeqLen,
                             DType::mxfp4);
    Engine e = c.engine();
    int stacks = 0;
    for (const WeightEntry &w : e.plan().weights) { // the stacks alone are mxfp4
      const bool stack = w.shape.size() == 3;
      stacks += stack;
      EXPECT_EQ(w.dtype == DType::mxfp4, stack) << w.name;
    }
    EXPECT_EQ(stacks, 3 * c.cfg.model.numLayers);
    for (uint32_t seed : {23u, 24u}) greedyStepsMatch(e, ref, seed);
  }
}

TEST(Equivalence, ReducedPrecisionStaysCloseToF32) {
  // Against the unrounded f32 reference: bf16 and f16 within their element
  // types' precision, int8 in direction (cosine similarity).
  for (DType dtype : {DType::bf16, DType::f16, DType::i8}) {
    for (const ModelShape &base : {kModelShapes[0], kModelShapes[1], kModelShapes[3]}) {
      ModelShape s = withDtype(base, dtype);
      SCOPED_TRACE(std::string(s.name) + " " + dtypeName(dtype));
      ShapeModel c(s);
      test::ReferenceModel ref(c.cfg.model, *c.source, DType::f32);
      Engine e = c.engine();
      std::vector<int32_t> tokens = randomTokens(6, 97, 22);
      int seq = e.open();
      const float *l = e.prefill(seq, tokens.data(), int64_t(tokens.size()));
      for (int step = 0; step < 8; ++step) {
        std::vector<double> want = ref.logits(tokens);
        if (dtype == DType::i8) {
          EXPECT_GE(test::cosineSimilarity(l, want), 0.999) << "step " << step;
        } else {
          // A few units of the type's epsilon (bf16 2^-8, f16 2^-11), since
          // every weight carries that much relative error.
          const double eps = dtype == DType::bf16 ? 1.0 / 256 : 1.0 / 2048;
          EXPECT_LT(test::relativeError(l, want), 4 * eps) << "step " << step;
        }
        int32_t next = argmax(l, 97);
        tokens.push_back(next);
        l = e.decode({seq}, {next});
      }
    }
  }
}
