// The model-spec parsers on good and bad input: every error names the file,
// the line (TOML) and the field.
#include "frontend/ConfigParser.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>

using namespace kvplan;
namespace fs = std::filesystem;

namespace {

const char *kGood = R"(# test spec
[model]
name = "t"
architecture = "llama"
hidden_size = 64
intermediate_size = 128
num_layers = 2
num_heads = 4
num_kv_heads = 2
vocab_size = 100
max_position_embeddings = 256
rms_norm_eps = 1e-5
bos_token_id = 1
eos_token_id = 2

[compile]
max_seq_len = 128
)";

/// The good spec with one line replaced (or appended when `from` is empty).
std::string edit(const std::string &from, const std::string &to) {
  std::string s = kGood;
  if (from.empty())
    return s + to + "\n";
  size_t at = s.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  return s.replace(at, from.size(), to);
}

ModelConfig parseAndValidate(const std::string &text, std::vector<std::string> *warnings = nullptr) {
  ModelConfig cfg = parseTomlSpec(text, "spec.toml", [&](const std::string &w) {
    if (warnings) warnings->push_back(w);
  });
  validate(cfg);
  return cfg;
}

/// The InputError message parsing + validating `text` gives ("" if none).
std::string errorOf(const std::string &text) {
  try {
    parseAndValidate(text);
  } catch (const InputError &e) {
    return e.what();
  }
  return "";
}

#define EXPECT_ERROR(text, ...)                                                  \
  do {                                                                           \
    SCOPED_TRACE("EXPECT_ERROR at line " + std::to_string(__LINE__));             \
    std::string msg = errorOf(text);                                             \
    ASSERT_FALSE(msg.empty()) << "expected an error";                            \
    for (const char *part : {__VA_ARGS__})                                       \
      EXPECT_NE(msg.find(part), std::string::npos) << "'" << part << "' not in: " << msg; \
  } while (0)

} // namespace

TEST(SpecParser, GoodSpecAndDerivedFields) {
  ModelConfig cfg = parseAndValidate(kGood);
  EXPECT_EQ(cfg.model.name, "t");
  EXPECT_EQ(cfg.model.headDim, 16);         // hidden / heads
  EXPECT_EQ(cfg.compile.kvDtype, DType::f32); // follows weight dtype
  EXPECT_EQ(cfg.compile.prefillChunk, 64);
  EXPECT_EQ(cfg.compile.pageSize, 16);
  EXPECT_EQ(cfg.compile.kvPages, 8); // 1 sequence x 128 tokens / 16 per page
  EXPECT_EQ(cfg.model.eosTokenIds, std::vector<int64_t>{2});
  EXPECT_FALSE(cfg.model.attentionBias);
}

TEST(SpecParser, MalformedTomlNamesLineAndColumn) {
  EXPECT_ERROR(edit("num_layers = 2", "num_layers = = 2"), "spec.toml:7:", "malformed TOML");
}

TEST(SpecParser, MissingTablesAndFields) {
  EXPECT_ERROR("[compile]\nmax_batch = 1\n", "spec.toml", "missing the [model] table");
  EXPECT_ERROR(edit("hidden_size = 64\n", ""), "spec.toml:2:",
               "missing required field 'model.hidden_size'");
  EXPECT_ERROR(edit("rms_norm_eps = 1e-5\n", ""), "model.rms_norm_eps");
  EXPECT_ERROR(edit("bos_token_id = 1\n", ""), "model.bos_token_id");
}

TEST(SpecParser, WrongTypesNameLineAndField) {
  EXPECT_ERROR(edit("num_heads = 4", "num_heads = \"four\""), "spec.toml:8:",
               "field 'model.num_heads'", "expected an integer, got a string");
  EXPECT_ERROR(edit("num_heads = 4", "num_heads = 4.0"), "spec.toml:8:",
               "expected an integer, got a number");
  EXPECT_ERROR(edit("rms_norm_eps = 1e-5", "rms_norm_eps = \"small\""), "spec.toml:12:",
               "model.rms_norm_eps", "expected a number");
  EXPECT_ERROR(edit("bos_token_id = 1", "bos_token_id = 1\ntie_word_embeddings = 1"), "model.tie_word_embeddings",
               "expected true or false");
  EXPECT_ERROR(edit("eos_token_id = 2", "eos_token_id = [2, \"x\"]"), "model.eos_token_id",
               "array of integers");
  std::string notATable = std::string("compile = 3\n") + kGood;
  notATable.resize(notATable.find("[compile]"));
  EXPECT_ERROR(notATable, "spec.toml:1:", "'compile' must be a table");
}

TEST(SpecParser, NonPositiveAndOutOfRangeValues) {
  EXPECT_ERROR(edit("num_layers = 2", "num_layers = 0"), "spec.toml:7:", "model.num_layers",
               "expected a positive integer, got 0");
  EXPECT_ERROR(edit("hidden_size = 64", "hidden_size = -64"), "model.hidden_size",
               "got -64");
  EXPECT_ERROR(edit("vocab_size = 100", "vocab_size = 9223372036854775807"),
               "model.vocab_size", "larger than the supported maximum");
  EXPECT_ERROR(edit("rms_norm_eps = 1e-5", "rms_norm_eps = 0.0"), "model.rms_norm_eps");
  EXPECT_ERROR(edit("bos_token_id = 1", "bos_token_id = 100"), "spec.toml:13:",
               "model.bos_token_id", "outside the vocabulary [0, 100)");
  EXPECT_ERROR(edit("eos_token_id = 2", "eos_token_id = [2, -1]"), "model.eos_token_id");
  EXPECT_ERROR(edit("max_seq_len = 128", "max_seq_len = 512"), "spec.toml:17:",
               "compile.max_seq_len", "exceeds the model's max_position_embeddings 256");
  EXPECT_ERROR(edit("max_seq_len = 128", "max_seq_len = 128\nmax_batch = 0"),
               "compile.max_batch");
  EXPECT_ERROR(edit("", "[model.rope]\ntheta = -1.0"), "model.rope.theta");
}

TEST(SpecParser, InconsistentDimensions) {
  EXPECT_ERROR(edit("num_heads = 4", "num_heads = 5"), "model.hidden_size",
               "not a multiple of num_heads 5", "head_dim");
  EXPECT_ERROR(edit("num_kv_heads = 2", "num_kv_heads = 3"), "spec.toml:9:",
               "model.num_kv_heads", "not a multiple of num_kv_heads 3");
  EXPECT_ERROR(edit("num_heads = 4", "num_heads = 4\nhead_dim = 7"), "model.head_dim",
               "must be even");
  EXPECT_ERROR(edit("num_heads = 4", "num_heads = 4\nhead_dim = 0"), "model.head_dim",
               "positive");
  EXPECT_ERROR(edit("max_seq_len = 128", "max_seq_len = 128\npage_size = 48"),
               "compile.page_size", "must divide max_seq_len 128");
  EXPECT_ERROR(edit("max_seq_len = 128", "max_seq_len = 128\nprefill_chunk = 129"),
               "compile.prefill_chunk", "larger than max_seq_len");
}

TEST(SpecParser, KvPagesDefaultsToEverySequenceAtFullContext) {
  // max_batch x max_seq_len / page_size, after the page_size default.
  EXPECT_EQ(parseAndValidate(edit("max_seq_len = 128", "max_seq_len = 128\nmax_batch = 4"))
                .compile.kvPages,
            32);
  EXPECT_EQ(parseAndValidate(edit("max_seq_len = 128", "max_seq_len = 96\npage_size = 32"))
                .compile.kvPages,
            3);
  // A context that 16 does not divide is one page per sequence.
  EXPECT_EQ(parseAndValidate(edit("max_seq_len = 128", "max_seq_len = 100\nmax_batch = 2"))
                .compile.kvPages,
            2);
  // Under a sliding window, the pages one sequence holds at once: a call
  // of R rows from position S reads keys from S - (window - 1), at most
  // 15 + 31 + R positions from a page's start under a window of 32.
  auto windowed = [](const std::string &window, const std::string &compile) {
    std::string text = edit("architecture = \"llama\"", "architecture = \"mistral\"\n" + window);
    text.replace(text.find("max_seq_len = 128"), 17, compile);
    return parseAndValidate(text).compile.kvPages;
  };
  // Chunks of 64: 110 positions, 7 pages of 16 (of 8 at full context).
  EXPECT_EQ(windowed("sliding_window = 32", "max_seq_len = 128\nmax_batch = 2"), 2 * 7);
  // Chunks of 16: 62 positions, 4 pages; score calls of 40 rows: 86, 6.
  EXPECT_EQ(windowed("sliding_window = 32", "max_seq_len = 128\nmax_batch = 2\nprefill_chunk = 16"),
            2 * 4);
  EXPECT_EQ(windowed("sliding_window = 32",
                     "max_seq_len = 128\nmax_batch = 2\nprefill_chunk = 16\nscore_rows = 40"),
            2 * 6);
  // A window of the whole context is no window.
  EXPECT_EQ(windowed("sliding_window = 128", "max_seq_len = 128\nmax_batch = 2"), 2 * 8);
}

// The pages a sequence holds at once, against a count of every start: a
// call of `rows` rows from position S reads keys from S - window + 1 on,
// so the pages before that one's are given back, but for the last full
// page (the prefix cache chains the next to it).
TEST(SpecParser, ASequencesPagesAtOnceAreCountedAtEveryStart) {
  auto countEveryStart = [](int64_t w, int64_t p, int64_t rows, int64_t tokens) {
    int64_t most = 0;
    for (int64_t s = 0; s < tokens; ++s) {
      const int64_t end = std::min(s + rows, tokens);
      const int64_t before = std::max<int64_t>(0, s - w + 1) / p;
      const int64_t lastFull = s / p - 1;
      most = std::max(most, (end + p - 1) / p - std::max<int64_t>(0, std::min(before, lastFull)));
    }
    return most;
  };
  for (int64_t p : {1, 4, 16})
    for (int64_t w : {1, 2, 5, 16, 17, 40, 100})
      for (int64_t rows : {1, 3, 16, 64})
        for (int64_t tokens : {8, 64, 96, 300}) {
          EXPECT_EQ(sequencePeakPages(w, p, rows, tokens), countEveryStart(w, p, rows, tokens))
              << "window " << w << ", pages of " << p << ", " << rows << " rows, " << tokens;
        }
  EXPECT_EQ(sequencePeakPages(0, 16, 64, 100), 7); // no window: every page
}

TEST(SpecParser, ExplicitKvPagesMayBeLargerOrSmallerThanTheBatch) {
  ModelConfig cfg = parseAndValidate(edit("max_seq_len = 128", "max_seq_len = 128\nkv_pages = 100"));
  EXPECT_EQ(cfg.compile.kvPages, 100);
  EXPECT_TRUE(cfg.given.count("compile.kv_pages"));
  // Four decode rows sharing one sequence's pages.
  cfg = parseAndValidate(edit("max_seq_len = 128", "max_seq_len = 128\nmax_batch = 4\nkv_pages = 8"));
  EXPECT_EQ(cfg.compile.kvPages, 8);
  EXPECT_EQ(cfg.compile.maxBatch, 4);
  // The JSON form (the plan's settings) carries it.
  EXPECT_EQ(toJson(cfg.compile)["kv_pages"], 8);
  EXPECT_EQ(compileSettingsFromJson(toJson(cfg.compile)).kvPages, 8);
}

TEST(SpecParser, InvalidKvPagesNameTheFieldAndTheFix) {
  EXPECT_ERROR(edit("max_seq_len = 128", "max_seq_len = 128\nkv_pages = 7"), "spec.toml:18:",
               "field 'compile.kv_pages'",
               "kv_pages 7 cannot hold one sequence of max_seq_len 128 (8 pages of 16 tokens); "
               "give at least 8");
  EXPECT_ERROR(edit("max_seq_len = 128", "max_seq_len = 128\nkv_pages = 0"), "spec.toml:18:",
               "compile.kv_pages", "expected a positive integer, got 0");
  EXPECT_ERROR(edit("max_seq_len = 128", "max_seq_len = 128\nkv_pages = -8"), "compile.kv_pages",
               "got -8");
  EXPECT_ERROR(edit("max_seq_len = 128", "max_seq_len = 128\nkv_pages = 4294967296"),
               "compile.kv_pages", "larger than the supported maximum");
  EXPECT_ERROR(edit("max_seq_len = 128", "max_seq_len = 128\nkv_pages = \"many\""),
               "spec.toml:18:", "compile.kv_pages", "expected an integer, got a string");
}

// memory_budget: bytes, or a size with its unit; written to a plan's
// settings when set and read back (the compiler sizes the pools by it:
// ModelsTest).
TEST(SpecParser, MemoryBudgetIsASizeAsPeopleWriteIt) {
  auto budget = [](const std::string &line) {
    return parseAndValidate(edit("max_seq_len = 128", "max_seq_len = 128\n" + line))
        .compile.memoryBudget;
  };
  EXPECT_EQ(parseAndValidate(kGood).compile.memoryBudget, 0);
  EXPECT_EQ(budget("memory_budget = 123456789"), 123456789);
  EXPECT_EQ(budget("memory_budget = \"24GiB\""), int64_t(24) << 30);
  EXPECT_EQ(budget("memory_budget = \"1.5 GB\""), 1500000000);
  EXPECT_ERROR(edit("max_seq_len = 128", "max_seq_len = 128\nmemory_budget = \"24 gigs\""),
               "spec.toml:18:", "field 'compile.memory_budget': '24 gigs' is not a size; "
               "expected bytes, or a number and a unit: 24GiB");
  EXPECT_ERROR(edit("max_seq_len = 128", "max_seq_len = 128\nmemory_budget = true"),
               "spec.toml:18:", "compile.memory_budget",
               "expected an integer or a string like \"24GiB\", got a boolean");
  EXPECT_ERROR(edit("max_seq_len = 128", "max_seq_len = 128\nmemory_budget = -1"),
               "spec.toml:18:", "compile.memory_budget", "-1 bytes is outside [0, 2^62]");
  CompileSettings s = parseAndValidate(kGood).compile;
  EXPECT_FALSE(toJson(s).contains("memory_budget"));
  s.memoryBudget = int64_t(3) << 40;
  EXPECT_EQ(compileSettingsFromJson(toJson(s)).memoryBudget, int64_t(3) << 40);
}

// l2_prefetch_mib: 0 (none) unless given; the cuda target's alone, within
// [0, 1024]; written to a plan's settings only when set, and read back;
// given as --l2-prefetch, messages name the flag.
TEST(SpecParser, L2PrefetchIsTheCudaTargetsAndIsChecked) {
  const std::string cuda = "max_seq_len = 128\ntarget = \"cuda\"\n";
  ModelConfig cfg = parseAndValidate(edit("max_seq_len = 128", cuda));
  EXPECT_EQ(cfg.compile.l2PrefetchMib, 0);
  EXPECT_FALSE(toJson(cfg.compile).contains("l2_prefetch_mib"));
  cfg = parseAndValidate(edit("max_seq_len = 128", cuda + "l2_prefetch_mib = 24"));
  EXPECT_EQ(cfg.compile.l2PrefetchMib, 24);
  EXPECT_EQ(toJson(cfg.compile)["l2_prefetch_mib"], 24);
  EXPECT_EQ(compileSettingsFromJson(toJson(cfg.compile)).l2PrefetchMib, 24);
  EXPECT_ERROR(edit("max_seq_len = 128", cuda + "l2_prefetch_mib = 2048"), "spec.toml:19:",
               "field 'compile.l2_prefetch_mib': l2_prefetch_mib 2048 is outside [0, 1024]");
  EXPECT_ERROR(edit("max_seq_len = 128", "max_seq_len = 128\nl2_prefetch_mib = 8"),
               "spec.toml:18:", "l2_prefetch_mib 8 asks a GPU's L2 for weights ahead, which only "
               "the cuda target does; compile for cuda or leave it 0");
  nlohmann::json j = toJson(cfg.compile);
  j["l2_prefetch_mib"] = -1;
  EXPECT_THROW(compileSettingsFromJson(j), InputError);
  SettingOverrides o;
  o.l2PrefetchMib = 8;
  try {
    applyAndValidate(parseTomlSpec(edit("max_seq_len = 128", "max_seq_len = 128"), "spec.toml",
                                   [](const std::string &) {}),
                     o);
    FAIL() << "expected an error";
  } catch (const InputError &e) {
    EXPECT_NE(std::string(e.what()).find("field '--l2-prefetch': l2_prefetch_mib 8 asks"),
              std::string::npos)
        << e.what();
  }
  o.target = Target::cuda;
  EXPECT_EQ(applyAndValidate(parseTomlSpec(edit("max_seq_len = 128", "max_seq_len = 128"),
                                           "spec.toml", [](const std::string &) {}),
                             o)
                .compile.l2PrefetchMib,
            8);
}

TEST(SpecParser, SmallerCopiesDefaultByTargetAndAreChecked) {
  // Not given: cuda's 1, 8, 32 rows of decode and 8, 32 of prefill, those
  // below max_batch and prefill_chunk; the cpu target none.
  ModelConfig cfg = parseAndValidate(edit("max_seq_len = 128", "max_seq_len = 128\n"
                                          "target = \"cuda\"\nmax_batch = 16"));
  EXPECT_EQ(cfg.compile.decodeCopies, (std::vector<int64_t>{1, 8}));
  EXPECT_EQ(cfg.compile.prefillCopies, (std::vector<int64_t>{8, 32}));
  cfg = parseAndValidate(edit("max_seq_len = 128", "max_seq_len = 128\nmax_batch = 16"));
  EXPECT_TRUE(cfg.compile.decodeCopies.empty());
  EXPECT_TRUE(cfg.compile.prefillCopies.empty());
  EXPECT_FALSE(toJson(cfg.compile).contains("decode_copies"));
  // Given: ascending, each once; [] is none.
  cfg = parseAndValidate(edit("max_seq_len = 128",
                              "max_seq_len = 128\ntarget = \"cuda\"\nmax_batch = 16\n"
                              "decode_copies = [4, 2, 4]\nprefill_copies = []"));
  EXPECT_EQ(cfg.compile.decodeCopies, (std::vector<int64_t>{2, 4}));
  EXPECT_TRUE(cfg.compile.prefillCopies.empty());
  EXPECT_EQ(toJson(cfg.compile)["decode_copies"], nlohmann::json({2, 4}));
  EXPECT_EQ(compileSettingsFromJson(toJson(cfg.compile)).decodeCopies, cfg.compile.decodeCopies);
  // Each mistake names the field, its line and the fix.
  const std::string cuda = "max_seq_len = 128\ntarget = \"cuda\"\nmax_batch = 16\n";
  EXPECT_ERROR(edit("max_seq_len = 128", cuda + "decode_copies = [16]"), "spec.toml:20:",
               "field 'compile.decode_copies': 16 rows is not below max_batch 16: a copy of "
               "decode has fewer rows than decode itself, which serves 16");
  EXPECT_ERROR(edit("max_seq_len = 128", cuda + "prefill_copies = [8, 0]"), "spec.toml:20:",
               "field 'compile.prefill_copies': expected positive row counts, got 0");
  EXPECT_ERROR(edit("max_seq_len = 128", cuda + "decode_copies = [1, 2, 3, 4, 5, 6, 7, 8, 9]"),
               "9 copies of decode; at most 8");
  EXPECT_ERROR(edit("max_seq_len = 128", cuda + "decode_copies = [\"8\"]"), "spec.toml:20:",
               "field 'compile.decode_copies': expected an array of integers, got a string");
  EXPECT_ERROR(edit("max_seq_len = 128", "max_seq_len = 128\nmax_batch = 16\ndecode_copies = 1"),
               "spec.toml:19:", "the cpu target's kernels do not depend on a step's rows, so it "
               "makes no smaller copies of decode; leave the setting out for it");
  // A plan's settings are checked too: in range, ascending.
  nlohmann::json j = toJson(parseAndValidate(edit("max_seq_len = 128", cuda)).compile);
  j["decode_copies"] = {8, 4};
  EXPECT_THROW(compileSettingsFromJson(j), InputError);
  j["decode_copies"] = {4, 16};
  EXPECT_THROW(compileSettingsFromJson(j), InputError);
}

TEST(SpecParser, ExplicitHeadDimNeedNotDivideHidden) {
  ModelConfig cfg = parseAndValidate(edit("num_heads = 4", "num_heads = 6\nhead_dim = 16"));
  EXPECT_EQ(cfg.model.headDim, 16);
  EXPECT_EQ(cfg.model.qDim(), 96);
}

TEST(SpecParser, UnknownEnumValues) {
  EXPECT_ERROR(edit("architecture = \"llama\"", "architecture = \"gpt2\""), "spec.toml:4:",
               "unknown value 'gpt2'", "llama, mistral, qwen2");
  EXPECT_ERROR(edit("", "[model.rope]\ntype = \"dynamic\""), "model.rope.type",
               "unknown value 'dynamic'", "longrope, yarn");
  EXPECT_ERROR(edit("max_seq_len = 128", "weight_dtype = \"int2\""), "compile.weight_dtype",
               "f32, bf16, f16, int8, int4");
  EXPECT_ERROR(edit("max_seq_len = 128", "target = \"tpu\""), "compile.target", "cpu, cuda");
}

// Linear scaling and explicit per-pair factors (what a GGUF's rope_freqs
// becomes): head_dim 16 has eight.
TEST(SpecParser, LinearRopeAndFreqFactors) {
  const std::string rope = "[model.rope]\ntype = \"linear\"\nfactor = 4.0\n";
  ModelConfig cfg =
      parseAndValidate(edit("", rope + "freq_factors = [1, 1, 1, 1.5, 3.0, 8, 8, 8]"));
  EXPECT_EQ(cfg.model.rope.type, RopeType::linear);
  EXPECT_EQ(cfg.model.rope.factor, 4.0);
  EXPECT_EQ(cfg.model.rope.freqFactors,
            (std::vector<double>{1, 1, 1, 1.5, 3.0, 8, 8, 8}));
  // The JSON form (the artifact's model) carries them, and omits none.
  EXPECT_EQ(modelSpecFromJson(toJson(cfg.model)).rope.freqFactors, cfg.model.rope.freqFactors);
  EXPECT_EQ(modelSpecFromJson(toJson(cfg.model)).rope.type, RopeType::linear);
  EXPECT_FALSE(toJson(parseAndValidate(kGood).model)["rope"].contains("freq_factors"));
  // Frequencies: theta^(-2i/16) / 4 / freq_factors[i].
  const std::vector<double> f = ropeFrequencies(cfg.model.rope, 16);
  ASSERT_EQ(f.size(), 8u);
  EXPECT_DOUBLE_EQ(f[0], 1.0 / 4.0);
  EXPECT_DOUBLE_EQ(f[3], std::pow(10000.0, -6.0 / 16.0) / 4.0 / 1.5);
  EXPECT_DOUBLE_EQ(f[7], std::pow(10000.0, -14.0 / 16.0) / 4.0 / 8.0);

  EXPECT_ERROR(edit("", "[model.rope]\ntype = \"linear\""),
               "missing required field 'model.rope.factor'");
  EXPECT_ERROR(edit("", "[model.rope]\nfreq_factors = [1.0, 2.0, 4.0]"),
               "field 'model.rope.freq_factors'", "expected head_dim / 2 = 8 factors, got 3");
  EXPECT_ERROR(edit("", "[model.rope]\nfreq_factors = [1, -2, 1, 1, 1, 1, 1, 1]"),
               "field 'model.rope.freq_factors[1]'", "positive finite number, got -2");
  EXPECT_ERROR(edit("", "[model.rope]\nfreq_factors = [1, 0, 1, 1, 1, 1, 1, 1]"),
               "field 'model.rope.freq_factors[1]'", "got 0");
  EXPECT_ERROR(edit("", "[model.rope]\nfreq_factors = \"8\""), "model.rope.freq_factors",
               "expected an array of numbers, got a string");
  EXPECT_ERROR(edit("", "[model.rope]\ntype = \"llama3\"\nfactor = 8.0\nlow_freq_factor = 1.0\n"
                        "high_freq_factor = 4.0\noriginal_max_position_embeddings = 8192\n"
                        "freq_factors = [1, 1, 1, 1, 1, 1, 1, 8]"),
               "model.rope.freq_factors", "apply twice");
}

// YaRN's frequencies against transformers' _compute_yarn_parameters worked
// by hand in double precision (Python, not kvplan): every fourth pair of 64
// rotated dimensions. Base 10000, factor 4 over 4,096 tokens: the band from
// pair 10 to 23 (rounded outwards). gpt-oss's base 150000 and factor 32, the
// band not rounded (truncate false): from pair 8.09 to 17.40.
TEST(SpecParser, YarnFrequenciesAreTransformers) {
  RopeSpec r;
  r.type = RopeType::yarn;
  r.factor = 4;
  r.originalMaxPositions = 4096;
  const double qwen[] = {1,
                         0.31622776601683794,
                         0.10000000000000001,
                         0.02797399468610489,
                         0.0065384615384615381,
                         0.0013378867023789293,
                         0.00025000000000000001,
                         7.9056941504209485e-05};
  std::vector<double> f = ropeFrequencies(r, 64);
  ASSERT_EQ(f.size(), 32u);
  for (size_t i = 0; i < 8; ++i) EXPECT_NEAR(f[4 * i], qwen[i], 1e-12 * qwen[i]) << i;
  r.theta = 150000;
  r.factor = 32;
  r.yarnTruncate = false;
  const double gptOss[] = {1,
                           0.22541800020287081,
                           0.050813274815461475,
                           0.0067949594897322189,
                           0.00045648391922324086,
                           1.818833668168956e-05,
                           4.0999784818029795e-06,
                           9.242089502428301e-07};
  f = ropeFrequencies(r, 64);
  for (size_t i = 0; i < 8; ++i) EXPECT_NEAR(f[4 * i], gptOss[i], 1e-12 * gptOss[i]) << i;
  // Partial RoPE: the band is of the rotated width, the rest pass through.
  r.rotaryDim = 64;
  f = ropeFrequencies(r, 128);
  ASSERT_EQ(f.size(), 64u);
  EXPECT_NEAR(f[28], gptOss[7], 1e-12 * gptOss[7]);
  EXPECT_EQ(f[32], 0.0);
  // Its attention factor: 0.1 ln(s) + 1, and DeepSeek's ratio of two.
  EXPECT_DOUBLE_EQ(yarnAttentionFactor(4), 0.1 * std::log(4.0) + 1);
  EXPECT_DOUBLE_EQ(yarnAttentionFactor(40, 0.707, 0.707), 1.0);
  EXPECT_DOUBLE_EQ(yarnAttentionFactor(40, 1.0, 0.5),
                   (0.1 * std::log(40.0) + 1) / (0.05 * std::log(40.0) + 1));
  EXPECT_EQ(yarnAttentionFactor(0.5), 1.0);
}

// [model.rope] type yarn: the factor and the pretraining context required,
// the betas and truncate optional and YaRN's alone, the attention factor
// YaRN's unless given; max_seq_len may reach the pretraining context times
// the factor, past max_position_embeddings.
TEST(SpecParser, YarnRope) {
  const std::string rope = "[model.rope]\ntype = \"yarn\"\nfactor = 4.0\n";
  const std::string yarn = rope + "original_max_position_embeddings = 128";
  ModelConfig cfg = parseAndValidate(edit("", yarn));
  EXPECT_EQ(cfg.model.rope.type, RopeType::yarn);
  EXPECT_EQ(cfg.model.rope.originalMaxPositions, 128);
  EXPECT_EQ(cfg.model.rope.betaFast, 32.0);
  EXPECT_EQ(cfg.model.rope.betaSlow, 1.0);
  EXPECT_TRUE(cfg.model.rope.yarnTruncate);
  EXPECT_DOUBLE_EQ(cfg.model.rope.attentionFactor, 0.1 * std::log(4.0) + 1);
  const std::string wide = edit("max_seq_len = 128", "max_seq_len = 512");
  cfg = parseAndValidate(wide + yarn + "\nbeta_fast = 16.0\nbeta_slow = 2\ntruncate = false\n" +
                         "attention_factor = 1.5");
  EXPECT_EQ(cfg.compile.maxSeqLen, 512); // 128 x 4, past max_position_embeddings 256
  EXPECT_EQ(cfg.model.rope.betaFast, 16.0);
  EXPECT_EQ(cfg.model.rope.betaSlow, 2.0);
  EXPECT_FALSE(cfg.model.rope.yarnTruncate);
  EXPECT_EQ(cfg.model.rope.attentionFactor, 1.5);
  // The artifact's model carries all of it.
  const ModelSpec back = modelSpecFromJson(toJson(cfg.model));
  EXPECT_EQ(back.rope.type, RopeType::yarn);
  EXPECT_EQ(back.rope.betaFast, 16.0);
  EXPECT_EQ(back.rope.betaSlow, 2.0);
  EXPECT_FALSE(back.rope.yarnTruncate);
  EXPECT_EQ(ropeFrequencies(back.rope, 16), ropeFrequencies(cfg.model.rope, 16));
  EXPECT_FALSE(toJson(parseAndValidate(kGood).model)["rope"].contains("beta_fast"));

  EXPECT_ERROR(edit("max_seq_len = 128", "max_seq_len = 513") + yarn, "compile.max_seq_len",
               "exceeds YaRN's context, original_max_position_embeddings 128 x factor 4 = 512");
  EXPECT_ERROR(edit("", rope),
               "missing required field 'model.rope.original_max_position_embeddings'");
  EXPECT_ERROR(edit("", "[model.rope]\ntype = \"yarn\"\noriginal_max_position_embeddings = 64"),
               "missing required field 'model.rope.factor'");
  EXPECT_ERROR(edit("", yarn + "\nbeta_fast = 1.0"), "model.rope.beta_fast",
               "must be larger than model.rope.beta_slow");
  EXPECT_ERROR(edit("", yarn + "\nbeta_slow = -1.0"), "model.rope.beta_slow",
               "positive finite number, got -1");
  EXPECT_ERROR(edit("", "[model.rope]\nbeta_fast = 16.0"), "model.rope.beta_fast",
               "only type yarn reads it");
  EXPECT_ERROR(edit("", "[model.rope]\ntruncate = false"), "model.rope.truncate",
               "only type yarn reads it");
  EXPECT_ERROR(edit("", yarn + "\ntruncate = 1"), "model.rope.truncate", "true or false");
}

// [model.rope] type longrope: both lists, the pretraining context, an
// attention factor; max_seq_len (kGood's 128) chooses a list.
TEST(SpecParser, LongRopeListsAndTheirChoice) {
  const std::string lists = "short_factors = [1, 1, 1, 1, 2, 2, 3, 3]\n"
                            "long_factors = [1, 2, 4, 8, 16, 32, 64, 128]\n";
  const std::string rope = "[model.rope]\ntype = \"longrope\"\nattention_factor = 1.2\n" + lists;
  ModelConfig cfg = parseAndValidate(edit("", rope + "original_max_position_embeddings = 64"));
  EXPECT_EQ(cfg.model.rope.type, RopeType::longrope);
  EXPECT_EQ(cfg.model.rope.attentionFactor, 1.2);
  EXPECT_EQ(cfg.model.rope.freqFactors, cfg.model.rope.longFactors); // 128 > 64
  cfg = parseAndValidate(edit("", rope + "original_max_position_embeddings = 128"));
  EXPECT_EQ(cfg.model.rope.freqFactors, cfg.model.rope.shortFactors);
  EXPECT_EQ(cfg.model.rope.freqFactors, (std::vector<double>{1, 1, 1, 1, 2, 2, 3, 3}));
  // Validating again (as a command does after a flag) chooses the same.
  validate(cfg);
  EXPECT_EQ(cfg.model.rope.freqFactors, cfg.model.rope.shortFactors);

  EXPECT_ERROR(edit("", rope), "missing required field 'model.rope.original_max_position_"
                               "embeddings'");
  EXPECT_ERROR(edit("", "[model.rope]\ntype = \"longrope\"\n"
                        "original_max_position_embeddings = 64\nshort_factors = [1, 1]\n"
                        "long_factors = [1, 2, 4, 8, 16, 32, 64, 128]"),
               "field 'model.rope.short_factors'", "expected head_dim / 2 = 8 factors, got 2");
  EXPECT_ERROR(edit("", "[model.rope]\ntype = \"longrope\"\nattention_factor = 0\n" + lists +
                        "original_max_position_embeddings = 64"),
               "field 'model.rope.attention_factor'", "positive finite number, got 0");
  EXPECT_ERROR(edit("", rope + "original_max_position_embeddings = 64\n"
                               "freq_factors = [1, 1, 1, 1, 1, 1, 1, 1]"),
               "field 'model.rope.freq_factors'", "leave freq_factors out");
  EXPECT_ERROR(edit("", "[model.rope]\n" + lists), "field 'model.rope.short_factors'",
               "only type longrope reads it");
  EXPECT_ERROR(edit("", "[model.rope]\nattention_factor = -1.0"),
               "field 'model.rope.attention_factor'", "positive finite number");
}

TEST(SpecParser, Llama3RopeNeedsItsFactors) {
  EXPECT_ERROR(edit("", "[model.rope]\ntype = \"llama3\"\ntheta = 500000.0"),
               "missing required field 'model.rope.factor'");
  ModelConfig cfg = parseAndValidate(edit(
      "", "[model.rope]\ntype = \"llama3\"\ntheta = 500000.0\nfactor = 8.0\nlow_freq_factor = 1.0\n"
          "high_freq_factor = 4.0\noriginal_max_position_embeddings = 8192"));
  EXPECT_EQ(cfg.model.rope.type, RopeType::llama3);
  EXPECT_DOUBLE_EQ(cfg.model.rope.factor, 8.0);
  EXPECT_ERROR(edit("", "[model.rope]\ntype = \"llama3\"\nfactor = 8.0\nlow_freq_factor = 4.0\n"
                        "high_freq_factor = 1.0\noriginal_max_position_embeddings = 8192"),
               "model.rope.high_freq_factor");
}

TEST(SpecParser, UnknownKeysWarnWithLine) {
  std::vector<std::string> warnings;
  parseAndValidate(edit("num_layers = 2", "num_layers = 2\nnum_layer = 3") + "[extra]\nx = 1\n",
                   &warnings);
  ASSERT_EQ(warnings.size(), 2u);
  EXPECT_NE(warnings[0].find("spec.toml:8: unknown key 'model.num_layer'"), std::string::npos)
      << warnings[0];
  EXPECT_NE(warnings[1].find("unknown key 'extra'"), std::string::npos) << warnings[1];
}

TEST(SpecParser, Qwen2ImpliesAttentionBias) {
  ModelConfig cfg = parseAndValidate(edit("architecture = \"llama\"", "architecture = \"qwen2\""));
  EXPECT_TRUE(cfg.model.attentionBias);
  cfg = parseAndValidate(
      edit("architecture = \"llama\"", "architecture = \"qwen2\"\nattention_bias = false"));
  EXPECT_FALSE(cfg.model.attentionBias);
}

TEST(SpecParser, OverridesMoveDependentDefaults) {
  fs::path dir = fs::temp_directory_path() / "kvplan-spec-test";
  fs::create_directories(dir);
  std::ofstream(dir / "t.toml") << kGood;
  SettingOverrides o;
  o.weightDtype = DType::bf16;
  o.maxSeqLen = 32;
  ModelConfig cfg = loadModelConfig((dir / "t.toml").string(), o, [](const std::string &) {});
  EXPECT_EQ(cfg.compile.weightDtype, DType::bf16);
  EXPECT_EQ(cfg.compile.kvDtype, DType::bf16); // not given: follows the weights
  EXPECT_EQ(cfg.compile.maxSeqLen, 32);
  EXPECT_EQ(cfg.compile.prefillChunk, 32); // default 64 clamped to the context
  EXPECT_EQ(cfg.compile.kvPages, 2);        // the pool follows max_seq_len
  o.maxBatch = 3;
  o.kvPages = 5;
  cfg = loadModelConfig((dir / "t.toml").string(), o, [](const std::string &) {});
  EXPECT_EQ(cfg.compile.kvPages, 5);
  o.kvPages = 1;
  try {
    loadModelConfig((dir / "t.toml").string(), o, [](const std::string &) {});
    FAIL() << "expected an error";
  } catch (const InputError &e) {
    // A flag has no line to cite; the flag and the fix are named.
    EXPECT_NE(std::string(e.what()).find("t.toml: field '--kv-pages': kv_pages 1 cannot "
                                         "hold one sequence of max_seq_len 32 (2 pages of 16 "
                                         "tokens); give at least 2"),
              std::string::npos)
        << e.what();
  }
  // Copies given as flags: messages name the flag.
  o = {};
  o.target = Target::cuda;
  o.maxBatch = 4;
  o.decodeCopies = std::vector<int64_t>{};
  o.prefillCopies = std::vector<int64_t>{3};
  cfg = loadModelConfig((dir / "t.toml").string(), o, [](const std::string &) {});
  EXPECT_TRUE(cfg.compile.decodeCopies.empty());
  EXPECT_EQ(cfg.compile.prefillCopies, (std::vector<int64_t>{3}));
  o.decodeCopies = std::vector<int64_t>{1, 8};
  try {
    loadModelConfig((dir / "t.toml").string(), o, [](const std::string &) {});
    FAIL() << "expected an error";
  } catch (const InputError &e) {
    EXPECT_NE(std::string(e.what()).find("field '--decode-copies': 8 rows is not below "
                                         "--max-batch 4"),
              std::string::npos)
        << e.what();
  }
  o = {};
  o.pageSize = 7;
  try {
    loadModelConfig((dir / "t.toml").string(), o, [](const std::string &) {});
    FAIL() << "expected an error";
  } catch (const InputError &e) {
    EXPECT_NE(std::string(e.what()).find("field '--page-size': page_size 7 must divide"),
              std::string::npos)
        << e.what();
  }
  fs::remove_all(dir);
}

TEST(SpecParser, FileErrors) {
  auto msg = [](const std::string &path) {
    try {
      loadModelConfig(path, {}, [](const std::string &) {});
    } catch (const InputError &e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(msg("/nonexistent/model.toml").find("no such file"), std::string::npos);
  fs::path dir = fs::temp_directory_path() / "kvplan-spec-empty";
  fs::create_directories(dir);
  EXPECT_NE(msg(dir.string()).find("holds no config.json"), std::string::npos);
  std::ofstream(dir / "m.yaml") << "x: 1";
  EXPECT_NE(msg((dir / "m.yaml").string()).find("unknown model format '.yaml'"), std::string::npos);
  fs::remove_all(dir);
}

//===----------------------------------------------------------------------===//
// Hugging Face config.json
//===----------------------------------------------------------------------===//

namespace {

std::string hfErrorOf(const std::string &text) {
  try {
    ModelConfig cfg = parseHFConfig(text, "config.json", [](const std::string &) {});
    validate(cfg);
  } catch (const InputError &e) {
    return e.what();
  }
  return "";
}

const char *kHF = R"({"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
  "vocab_size": 100, "max_position_embeddings": 256, "rms_norm_eps": 1e-5,
  "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16"})";

std::string hfWith(const std::string &key, const std::string &value) {
  nlohmann::json j = nlohmann::json::parse(kHF);
  if (value.empty())
    j.erase(key);
  else
    j[key] = nlohmann::json::parse(value);
  return j.dump();
}

ModelConfig readQuietly(const nlohmann::json &j) {
  ModelConfig cfg =
      parseHFConfig(j.dump(), "config.json", [](const std::string &w) { ADD_FAILURE() << w; });
  validate(cfg);
  return cfg;
}

ModelConfig readQuietly(const std::string &text) {
  return readQuietly(nlohmann::json::parse(text));
}

} // namespace

TEST(HFConfig, GoodConfig) {
  ModelConfig cfg = parseHFConfig(kHF, "config.json", [](const std::string &) {});
  validate(cfg);
  EXPECT_EQ(cfg.model.numKvHeads, 2);
  EXPECT_EQ(cfg.compile.weightDtype, DType::bf16); // from torch_dtype
  EXPECT_EQ(cfg.compile.maxSeqLen, 256);           // min(max positions, 2048)
}

TEST(HFConfig, BadConfigs) {
  auto has = [](const std::string &msg, const std::string &part) {
    EXPECT_NE(msg.find(part), std::string::npos) << "'" << part << "' not in: " << msg;
  };
  has(hfErrorOf("{not json"), "config.json: malformed JSON");
  has(hfErrorOf("[1, 2]"), "expected a JSON object");
  has(hfErrorOf(hfWith("model_type", "\"gpt2\"")), "'gpt2' is not supported");
  has(hfErrorOf(hfWith("hidden_size", "")), "field 'hidden_size': missing");
  has(hfErrorOf(hfWith("hidden_size", "\"big\"")), "expected an integer, got a string");
  has(hfErrorOf(hfWith("hidden_size", "64.5")), "expected an integer, got a fractional number");
  has(hfErrorOf(hfWith("num_key_value_heads", "3")), "field 'num_key_value_heads'");
  has(hfErrorOf(hfWith("hidden_act", "\"gelu\"")), "'gelu' is not supported");
  has(hfErrorOf(hfWith("mlp_bias", "true")), "mlp_bias");
  has(hfErrorOf(hfWith("rope_scaling", R"({"rope_type": "dynamic", "factor": 4.0})")),
      "'dynamic' scaling is not supported");
  has(hfErrorOf(hfWith("rope_scaling", R"({"rope_type": "llama3", "factor": 8.0})")),
      "rope_scaling.low_freq_factor");
  has(hfErrorOf(hfWith("eos_token_id", "[2, 500]")), "outside the vocabulary");
  has(hfErrorOf(hfWith("rope_scaling", R"({"rope_type": "linear"})")), "rope_scaling.factor");
}

// rope_scaling type yarn as transformers reads it: Qwen's (factor 4 from
// 64 tokens), DeepSeek's mscale ratio, gpt-oss's truncate false; the factor
// as given (not max_position_embeddings over the pretraining context), and
// the context YaRN reaches.
TEST(HFConfig, Yarn) {
  ModelConfig cfg = readQuietly(hfWith("rope_scaling", R"({"rope_type": "yarn", "factor": 4.0,
      "original_max_position_embeddings": 64})"));
  EXPECT_EQ(cfg.model.rope.type, RopeType::yarn);
  EXPECT_EQ(cfg.model.rope.factor, 4.0);
  EXPECT_EQ(cfg.model.rope.originalMaxPositions, 64);
  EXPECT_DOUBLE_EQ(cfg.model.rope.attentionFactor, 0.1 * std::log(4.0) + 1);
  EXPECT_EQ(cfg.model.rope.betaFast, 32.0);
  EXPECT_TRUE(cfg.model.rope.yarnTruncate);
  EXPECT_EQ(ropeContext(cfg.model), 256); // max_position_embeddings 256 over 64 x 4
  // No pretraining context given: max_position_embeddings is it.
  cfg = readQuietly(hfWith("rope_scaling", R"({"type": "yarn", "factor": 2.0})"));
  EXPECT_EQ(cfg.model.rope.originalMaxPositions, 256);
  EXPECT_EQ(ropeContext(cfg.model), 512);
  // DeepSeek-V3's: null betas are the defaults; mscale over mscale_all_dim.
  cfg = readQuietly(hfWith("rope_scaling", R"({"type": "yarn", "factor": 40, "mscale": 1.0,
      "mscale_all_dim": 0.5, "beta_fast": null, "beta_slow": 0,
      "original_max_position_embeddings": 64})"));
  EXPECT_DOUBLE_EQ(cfg.model.rope.attentionFactor,
                   (0.1 * std::log(40.0) + 1) / (0.05 * std::log(40.0) + 1));
  EXPECT_EQ(cfg.model.rope.betaFast, 32.0);
  EXPECT_EQ(cfg.model.rope.betaSlow, 1.0);
  // gpt-oss's.
  cfg = readQuietly(hfWith("rope_scaling", R"({"rope_type": "yarn", "factor": 32.0,
      "beta_fast": 32.0, "beta_slow": 1.0, "truncate": false, "attention_factor": 1.25,
      "original_max_position_embeddings": 8})"));
  EXPECT_FALSE(cfg.model.rope.yarnTruncate);
  EXPECT_EQ(cfg.model.rope.attentionFactor, 1.25);

  EXPECT_NE(hfErrorOf(hfWith("rope_scaling", R"({"rope_type": "yarn"})"))
                .find("field 'rope_scaling.factor': missing"), std::string::npos);
  EXPECT_NE(hfErrorOf(hfWith("rope_scaling", R"({"rope_type": "yarn", "factor": 4,
      "beta_fast": 1, "beta_slow": 2})")).find("field 'rope_scaling.beta_fast': must be larger "
                                               "than rope_scaling.beta_slow"),
            std::string::npos);
  EXPECT_NE(hfErrorOf(hfWith("rope_scaling", R"({"rope_type": "yarn", "factor": -4})"))
                .find("field 'rope_scaling.factor'"), std::string::npos);
}

// Qwen2.5-1M's dual chunk attention is not implemented: the context is held
// to one chunk, where it is full attention, with a warning naming the key.
TEST(HFConfig, DualChunkAttentionHoldsTheContextToAChunk) {
  nlohmann::json j = nlohmann::json::parse(kHF);
  j["max_position_embeddings"] = 1024;
  j["dual_chunk_attention_config"] = nlohmann::json::parse(
      R"({"chunk_size": 256, "local_size": 64, "original_max_position_embeddings": 256})");
  std::vector<std::string> warnings;
  ModelConfig cfg = parseHFConfig(j.dump(), "config.json",
                                  [&](const std::string &w) { warnings.push_back(w); });
  validate(cfg);
  EXPECT_EQ(cfg.model.maxPositions, 256);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("dual chunk attention (dual_chunk_attention_config.chunk_size 256) "
                             "is not implemented"), std::string::npos) << warnings[0];
  EXPECT_NE(warnings[0].find("held to 256 tokens of max_position_embeddings' 1,024"),
            std::string::npos) << warnings[0];
  // A chunk as long as the context changes nothing.
  j["dual_chunk_attention_config"]["chunk_size"] = 1024;
  EXPECT_EQ(readQuietly(j).model.maxPositions, 1024);
  j["dual_chunk_attention_config"].erase("chunk_size");
  EXPECT_NE(hfErrorOf(j.dump()).find("field 'dual_chunk_attention_config.chunk_size': missing"),
            std::string::npos);
  j["dual_chunk_attention_config"] = 5;
  EXPECT_NE(hfErrorOf(j.dump()).find("field 'dual_chunk_attention_config': expected an object"),
            std::string::npos);
}

// transformers v5 writes rope_parameters (rope_theta inside) in place of
// rope_theta and rope_scaling: read alike, messages naming its keys.
TEST(HFConfig, RopeParameters) {
  ModelConfig cfg = readQuietly(
      hfWith("rope_parameters", R"({"rope_theta": 500000.0, "rope_type": "default"})"));
  EXPECT_EQ(cfg.model.rope.theta, 500000.0);
  EXPECT_EQ(cfg.model.rope.type, RopeType::standard);
  cfg = readQuietly(hfWith("rope_parameters", R"({"rope_theta": 1000000.0, "rope_type": "yarn",
      "factor": 4.0, "original_max_position_embeddings": 64})"));
  EXPECT_EQ(cfg.model.rope.theta, 1e6);
  EXPECT_EQ(cfg.model.rope.type, RopeType::yarn);
  EXPECT_EQ(cfg.model.rope.originalMaxPositions, 64);
  cfg = readQuietly(hfWith("rope_parameters", R"({"rope_theta": 500000.0, "rope_type": "llama3",
      "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 64})"));
  EXPECT_EQ(cfg.model.rope.type, RopeType::llama3);
  EXPECT_EQ(cfg.model.rope.factor, 8.0);
  // v5's dtype, torch_dtype's new name.
  nlohmann::json d = nlohmann::json::parse(hfWith("torch_dtype", ""));
  d["dtype"] = "float16";
  EXPECT_EQ(readQuietly(d).compile.weightDtype, DType::f16);
  // rope_theta kept beside it must agree; rope_scaling beside it is refused.
  nlohmann::json j = nlohmann::json::parse(
      hfWith("rope_parameters", R"({"rope_theta": 500000.0, "rope_type": "default"})"));
  j["rope_theta"] = 500000.0;
  EXPECT_EQ(readQuietly(j).model.rope.theta, 500000.0);
  j["rope_theta"] = 10000.0;
  EXPECT_NE(hfErrorOf(j.dump()).find("field 'rope_theta': differs from rope_parameters'"),
            std::string::npos);
  j.erase("rope_theta");
  j["rope_scaling"] = nlohmann::json::parse(R"({"rope_type": "linear", "factor": 2.0})");
  EXPECT_NE(hfErrorOf(j.dump()).find("field 'rope_scaling': is given beside rope_parameters"),
            std::string::npos);
  // Messages name the key under rope_parameters, the reader's and validate()'s.
  auto has = [](const std::string &msg, const std::string &part) {
    EXPECT_NE(msg.find(part), std::string::npos) << "'" << part << "' not in: " << msg;
  };
  has(hfErrorOf(hfWith("rope_parameters", R"({"rope_type": "yarn"})")),
      "field 'rope_parameters.factor': missing");
  has(hfErrorOf(hfWith("rope_parameters", R"({"rope_type": "linear", "factor": -2.0})")),
      "field 'rope_parameters.factor'");
  has(hfErrorOf(hfWith("rope_parameters", R"({"rope_theta": -1.0})")),
      "field 'rope_parameters.rope_theta'");
  has(hfErrorOf(hfWith("rope_parameters", R"({"rope_type": "proportional"})")),
      "field 'rope_parameters.rope_type': 'proportional' scaling is not supported");
  has(hfErrorOf(hfWith("rope_parameters", "[1]")), "field 'rope_parameters': expected an object");
  // partial_rotary_factor where a file puts it, inside: read and named there.
  EXPECT_EQ(readQuietly(hfWith("rope_parameters", R"({"partial_rotary_factor": 0.5})"))
                .model.rope.rotaryDim, 8);
  has(hfErrorOf(hfWith("rope_parameters", R"({"partial_rotary_factor": 1.5})")),
      "field 'rope_parameters.partial_rotary_factor': expected a number above 0 and at most 1");
  has(hfErrorOf(hfWith("rope_parameters", R"({"full_attention": {"rope_theta": 1e6},
      "sliding_attention": {"rope_theta": 1e4}})")),
      "field 'rope_parameters.sliding_attention.rope_theta': differs from full_attention's");
  has(hfErrorOf(hfWith("rope_parameters", R"({"full_attention": {"rope_theta": 1e6},
      "chunked_attention": {"rope_theta": 1e4}})")),
      "field 'rope_parameters.chunked_attention': is not a layer type kvplan knows");
}

// Numbers the JSON library cannot hold are the file's errors, named by the key
// as written, not internal errors.
TEST(HFConfig, NumbersOutOfRangeNameTheKey) {
  auto has = [](const std::string &msg, std::initializer_list<const char *> parts) {
    ASSERT_FALSE(msg.empty()) << "expected an error";
    for (const char *part : parts)
      EXPECT_NE(msg.find(part), std::string::npos) << "'" << part << "' not in: " << msg;
  };
  std::string text = kHF;
  text.replace(text.find("1e-5"), 4, "1e999");
  has(hfErrorOf(text), {"config.json: field 'rms_norm_eps'", "1e999", "out of range"});
  text = hfWith("rope_scaling", R"({"rope_type": "linear", "factor": 2.0})");
  text.replace(text.find("2.0"), 3, "-1e400");
  has(hfErrorOf(text), {"config.json: field 'rope_scaling.factor'", "-1e400"});
  has(hfErrorOf(hfWith("eos_token_id", "[2, 18446744073709551615]")),
      {"config.json: field 'eos_token_id'", "out of range"});
}

// Values that parse but are out of range name the key as config.json writes
// it, not kvplan's field (model.num_heads), and the file.
TEST(HFConfig, RangeErrorsNameTheKeyAsWritten) {
  auto has = [](const std::string &msg, const std::string &part) {
    EXPECT_NE(msg.find("config.json: field '" + part + "': "), std::string::npos)
        << "'" << part << "' not in: " << msg;
    EXPECT_EQ(msg.find("model."), std::string::npos) << msg;
  };
  has(hfErrorOf(hfWith("num_attention_heads", "-4")), "num_attention_heads");
  has(hfErrorOf(hfWith("hidden_size", "0")), "hidden_size");
  has(hfErrorOf(hfWith("hidden_size", "66")), "hidden_size"); // not a multiple of 4 heads
  has(hfErrorOf(hfWith("intermediate_size", "-1")), "intermediate_size");
  has(hfErrorOf(hfWith("num_hidden_layers", "0")), "num_hidden_layers");
  has(hfErrorOf(hfWith("num_key_value_heads", "-2")), "num_key_value_heads");
  has(hfErrorOf(hfWith("vocab_size", "0")), "vocab_size");
  has(hfErrorOf(hfWith("max_position_embeddings", "-256")), "max_position_embeddings");
  has(hfErrorOf(hfWith("rms_norm_eps", "2.0")), "rms_norm_eps");
  has(hfErrorOf(hfWith("rope_theta", "-10000")), "rope_theta");
  has(hfErrorOf(hfWith("head_dim", "7")), "head_dim");
  has(hfErrorOf(hfWith("bos_token_id", "100")), "bos_token_id");
  has(hfErrorOf(hfWith("sliding_window", "-1")), "sliding_window");
  has(hfErrorOf(hfWith("rope_scaling", R"({"rope_type": "llama3", "factor": 8.0,
      "low_freq_factor": 4.0, "high_freq_factor": 1.0, "original_max_position_embeddings": 64})")),
      "rope_scaling.high_freq_factor");
  has(hfErrorOf(hfWith("rope_scaling", R"({"type": "linear", "factor": -2.0})")),
      "rope_scaling.factor");
  // A message that names another field names it as written too.
  const std::string msg = hfErrorOf(hfWith("hidden_size", "66"));
  EXPECT_NE(msg.find("num_attention_heads 4"), std::string::npos) << msg;
  EXPECT_NE(msg.find("set head_dim"), std::string::npos) << msg;
}

TEST(HFConfig, LinearRopeScaling) {
  ModelConfig cfg = parseHFConfig(hfWith("rope_scaling", R"({"type": "linear", "factor": 2.0})"),
                                  "config.json", [](const std::string &w) { ADD_FAILURE() << w; });
  validate(cfg);
  EXPECT_EQ(cfg.model.rope.type, RopeType::linear);
  EXPECT_EQ(cfg.model.rope.factor, 2.0);
}

// Which layers slide, as transformers reads config.json: the window, and
// where they mix, the layers that read every key (full_attention_layers).
TEST(HFConfig, SlidingWindowAsTransformersReadsIt) {
  nlohmann::json j = nlohmann::json::parse(kHF);
  auto read = [](const nlohmann::json &c) {
    std::vector<std::string> warnings;
    ModelConfig cfg = parseHFConfig(c.dump(), "config.json",
                                    [&](const std::string &w) { warnings.push_back(w); });
    validate(cfg);
    EXPECT_TRUE(warnings.empty()) << warnings.front();
    return cfg.model;
  };
  auto windowOf = [&](const nlohmann::json &c) { return read(c).slidingWindow; };
  auto fullOf = [&](const nlohmann::json &c) { return read(c).fullAttentionLayers; };
  // Mistral (and Phi-3): every layer, a context past the window allowed.
  j["model_type"] = "mistral";
  j["sliding_window"] = 128;
  EXPECT_EQ(windowOf(j), 128);
  ModelConfig cfg = parseHFConfig(j.dump(), "config.json", [](const std::string &) {});
  validate(cfg);
  EXPECT_EQ(cfg.compile.maxSeqLen, 256); // the model's context, not the window
  j["sliding_window"] = nullptr;
  EXPECT_EQ(windowOf(j), 0);
  // Qwen2 and Qwen3: only where use_sliding_window, from max_window_layers up.
  for (const char *qwen : {"qwen2", "qwen3"}) {
    SCOPED_TRACE(qwen);
    j["model_type"] = qwen;
    j["sliding_window"] = 128;
    j["use_sliding_window"] = false;
    EXPECT_EQ(windowOf(j), 0);
    j["use_sliding_window"] = true;
    j["max_window_layers"] = 2; // both layers below it: full attention
    EXPECT_EQ(windowOf(j), 0);
    j.erase("max_window_layers"); // transformers' default, 28
    EXPECT_EQ(windowOf(j), 0);
    j["max_window_layers"] = 0;
    EXPECT_EQ(windowOf(j), 128);
    EXPECT_TRUE(fullOf(j).empty());
    j["max_window_layers"] = 1; // layer 0 below it reads every key, layer 1 slides
    EXPECT_EQ(windowOf(j), 128);
    EXPECT_EQ(fullOf(j), (std::vector<int64_t>{0}));
    j.erase("max_window_layers");
    j.erase("use_sliding_window");
  }
  // layer_types, where the file lists them, decide.
  j["model_type"] = "mistral";
  j["layer_types"] = {"sliding_attention", "sliding_attention"};
  EXPECT_EQ(windowOf(j), 128);
  j["layer_types"] = {"full_attention", "full_attention"};
  EXPECT_EQ(windowOf(j), 0);
  j["layer_types"] = {"full_attention", "sliding_attention"};
  EXPECT_EQ(windowOf(j), 128);
  EXPECT_EQ(fullOf(j), (std::vector<int64_t>{0}));
  j["layer_types"] = {"full_attention", "chunked_attention"};
  EXPECT_EQ(hfErrorOf(j.dump()),
            "config.json: field 'layer_types': expected \"full_attention\" or "
            "\"sliding_attention\", got \"chunked_attention\" at [1]");
  j["layer_types"] = {"full_attention"};
  EXPECT_EQ(hfErrorOf(j.dump()), "config.json: field 'layer_types': expected a list of "
                                 "num_hidden_layers (2) layer types");
  j.erase("layer_types");
  // transformers' Llama has no window: a warning, and full attention.
  j["model_type"] = "llama";
  std::vector<std::string> warnings;
  cfg = parseHFConfig(j.dump(), "config.json",
                      [&](const std::string &w) { warnings.push_back(w); });
  EXPECT_EQ(cfg.model.slidingWindow, 0);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("sliding_window 128 ignored"), std::string::npos) << warnings[0];
  j["sliding_window"] = -1;
  EXPECT_NE(hfErrorOf(j.dump()).find("field 'sliding_window': expected a positive window"),
            std::string::npos);
}

namespace {

/// Phi-3.5-mini's config.json, scaled down: LongRoPE over a pretraining
/// context of 4,096 stretched to 131,072, heads of 16 (8 factors a list).
nlohmann::json phi35() {
  nlohmann::json j = nlohmann::json::parse(kHF);
  j["model_type"] = "phi3";
  j["architectures"] = {"Phi3ForCausalLM"};
  j["max_position_embeddings"] = 131072;
  j["original_max_position_embeddings"] = 4096;
  j["sliding_window"] = 262144;
  j["partial_rotary_factor"] = 1.0;
  j["embd_pdrop"] = 0.0;
  j["resid_pdrop"] = 0.0;
  j["rope_scaling"] = {{"type", "longrope"},
                       {"short_factor", {1.0, 1.0, 1.1, 1.3, 1.6, 2.0, 2.5, 3.0}},
                       {"long_factor", {1.0, 1.5, 3.0, 6.0, 12.0, 24.0, 40.0, 60.0}}};
  return j;
}

ModelConfig phiConfig(const nlohmann::json &j, int64_t maxSeq = 0) {
  ModelConfig cfg = parseHFConfig(j.dump(), "config.json",
                                  [](const std::string &w) { ADD_FAILURE() << w; });
  if (maxSeq) {
    cfg.compile.maxSeqLen = maxSeq;
    cfg.given.insert("compile.max_seq_len");
  }
  validate(cfg);
  return cfg;
}

} // namespace

// LongRoPE as transformers reads it: the attention factor from the context
// stretch (sqrt(1 + ln 32 / ln 4096) = sqrt(17 / 12): ln 32 / ln 4096 is
// 5 / 12), the short factors up to 4,096 positions, the long ones beyond.
TEST(HFConfig, Phi3LongRope) {
  ModelConfig cfg = phiConfig(phi35());
  const RopeSpec &r = cfg.model.rope;
  EXPECT_EQ(cfg.model.architecture, Architecture::phi3);
  EXPECT_EQ(r.type, RopeType::longrope);
  EXPECT_EQ(r.originalMaxPositions, 4096);
  EXPECT_NEAR(r.attentionFactor, std::sqrt(17.0 / 12.0), 1e-15);
  EXPECT_EQ(cfg.compile.maxSeqLen, 2048);
  EXPECT_EQ(r.freqFactors, phi35()["rope_scaling"]["short_factor"].get<std::vector<double>>());
  EXPECT_EQ(phiConfig(phi35(), 4096).model.rope.freqFactors, r.shortFactors);
  EXPECT_EQ(phiConfig(phi35(), 4097).model.rope.freqFactors,
            phi35()["rope_scaling"]["long_factor"].get<std::vector<double>>());
  // "su", Phi-3's first name; an explicit attention factor; a factor given
  // in rope_scaling and no original context (then max_position_embeddings).
  nlohmann::json j = phi35();
  j["rope_scaling"]["type"] = "su";
  j["rope_scaling"]["attention_factor"] = 1.25;
  EXPECT_EQ(phiConfig(j).model.rope.attentionFactor, 1.25);
  j = phi35();
  j.erase("original_max_position_embeddings");
  j["rope_scaling"]["factor"] = 4.0;
  cfg = phiConfig(j);
  EXPECT_EQ(cfg.model.rope.originalMaxPositions, 131072);
  EXPECT_NEAR(cfg.model.rope.attentionFactor,
              std::sqrt(1 + std::log(4.0) / std::log(131072.0)), 1e-15);
  // Within the context (factor 1 or less): no attention factor.
  j = phi35();
  j["original_max_position_embeddings"] = 131072;
  EXPECT_EQ(phiConfig(j).model.rope.attentionFactor, 1.0);
  // The round trip through an artifact's JSON keeps all of it.
  cfg = phiConfig(phi35(), 8192);
  const ModelSpec back = modelSpecFromJson(toJson(cfg.model));
  EXPECT_EQ(back.rope.shortFactors, cfg.model.rope.shortFactors);
  EXPECT_EQ(back.rope.longFactors, cfg.model.rope.longFactors);
  EXPECT_EQ(back.rope.freqFactors, cfg.model.rope.longFactors);
  EXPECT_EQ(back.rope.attentionFactor, cfg.model.rope.attentionFactor);
  EXPECT_EQ(back.rope.type, RopeType::longrope);
}

// SmolLM3's config.json, scaled down to 8 layers: every fourth layer
// (3, 7) without RoPE, as its no_rope_layers flags say (1: RoPE, 0: none)
// or, without them, as no_rope_layer_interval (default 4) makes them; no
// BOS (null); a window recorded but not used.
TEST(HFConfig, SmolLM3NopeLayers) {
  nlohmann::json j = nlohmann::json::parse(kHF);
  j["model_type"] = "smollm3";
  j["architectures"] = {"SmolLM3ForCausalLM"};
  j["num_hidden_layers"] = 8;
  j["no_rope_layers"] = {1, 1, 1, 0, 1, 1, 1, 0};
  j["no_rope_layer_interval"] = 4;
  j["bos_token_id"] = nullptr;
  j["use_sliding_window"] = false;
  j["sliding_window"] = nullptr;
  j["max_window_layers"] = 8;
  j["pad_token_id"] = 0;
  j["pretraining_tp"] = 2;
  auto read = [](const nlohmann::json &c) {
    ModelConfig cfg = parseHFConfig(c.dump(), "config.json",
                                    [](const std::string &w) { ADD_FAILURE() << w; });
    validate(cfg);
    return cfg;
  };
  ModelConfig cfg = read(j);
  EXPECT_EQ(cfg.model.architecture, Architecture::smollm3);
  EXPECT_EQ(cfg.model.nopeLayers, (std::vector<int64_t>{3, 7}));
  EXPECT_EQ(cfg.model.bosTokenId, -1);
  EXPECT_EQ(cfg.model.slidingWindow, 0);
  // The round trip through an artifact's JSON keeps them.
  const ModelSpec back = modelSpecFromJson(toJson(cfg.model));
  EXPECT_EQ(back.nopeLayers, cfg.model.nopeLayers);
  EXPECT_EQ(back.bosTokenId, -1);
  // Flags that differ from the interval are the file's to say.
  j["no_rope_layers"] = {0, 1, 1, 1, 1, 1, 1, 1, 1};
  EXPECT_EQ(read(j).model.nopeLayers, (std::vector<int64_t>{0}));
  j.erase("no_rope_layers");
  EXPECT_EQ(read(j).model.nopeLayers, (std::vector<int64_t>{3, 7}));
  j["no_rope_layer_interval"] = 3;
  EXPECT_EQ(read(j).model.nopeLayers, (std::vector<int64_t>{2, 5}));
  // Refusals name the key.
  auto has = [](nlohmann::json c, const std::string &part) {
    const std::string msg = hfErrorOf(c.dump());
    EXPECT_NE(msg.find(part), std::string::npos) << "'" << part << "' not in: " << msg;
  };
  j["no_rope_layers"] = {1, 1, 0};
  has(j, "field 'no_rope_layers': has 3 flags for 8 layers (num_hidden_layers)");
  j["no_rope_layers"] = {1, 1, 2, 1, 1, 1, 1, 1};
  has(j, "field 'no_rope_layers': expected 1 (RoPE) or 0 (none) for each layer, got 2 at [2]");
  j.erase("no_rope_layers");
  j["no_rope_layer_interval"] = 0;
  has(j, "field 'no_rope_layer_interval': expected a positive integer");
  // Another architecture keeps its BOS required.
  has(nlohmann::json::parse(hfWith("bos_token_id", "")), "field 'bos_token_id': missing");
}

namespace {

/// Gemma 3 1B's config.json (transformers 4.50), scaled down to 12 layers
/// of hidden_size 64, heads of 32: every sixth layer global.
nlohmann::json gemma3() {
  return nlohmann::json::parse(R"({
    "architectures": ["Gemma3ForCausalLM"], "attention_bias": false,
    "attention_dropout": 0.0, "attn_logit_softcapping": null, "bos_token_id": 2,
    "cache_implementation": "hybrid", "eos_token_id": [1, 106],
    "final_logit_softcapping": null, "head_dim": 32,
    "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 64, "initializer_range": 0.02,
    "intermediate_size": 96, "max_position_embeddings": 32768, "model_type": "gemma3_text",
    "num_attention_heads": 4, "num_hidden_layers": 12, "num_key_value_heads": 1,
    "pad_token_id": 0, "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06,
    "rope_local_base_freq": 10000, "rope_scaling": null, "rope_theta": 1000000,
    "sliding_window": 512, "sliding_window_pattern": 6, "torch_dtype": "bfloat16",
    "transformers_version": "4.50.0.dev0", "use_cache": true, "vocab_size": 262144})");
}

} // namespace

// Gemma 3's config.json as transformers v5 writes it: rope_parameters by
// layer type, the global layers' scaling and the local layers' base.
TEST(HFConfig, Gemma3RopeParametersByLayerType) {
  nlohmann::json j = gemma3();
  for (const char *key : {"rope_local_base_freq", "rope_scaling", "rope_theta"}) j.erase(key);
  j["rope_parameters"] = nlohmann::json::parse(R"({
      "full_attention": {"rope_theta": 1000000.0, "rope_type": "linear", "factor": 8.0},
      "sliding_attention": {"rope_theta": 10000.0, "rope_type": "default"}})");
  ModelConfig cfg = readQuietly(j);
  EXPECT_EQ(cfg.model.rope.theta, 1e6);
  EXPECT_EQ(cfg.model.rope.type, RopeType::linear);
  EXPECT_EQ(cfg.model.rope.factor, 8.0);
  EXPECT_EQ(cfg.model.rope.localTheta, 1e4);
  j["rope_parameters"]["sliding_attention"]["rope_type"] = "linear";
  EXPECT_NE(hfErrorOf(j.dump()).find("field 'rope_parameters.sliding_attention.rope_type'"),
            std::string::npos);
  j["rope_parameters"]["sliding_attention"]["rope_type"] = "default";
  j["rope_parameters"]["full_attention"]["factor"] = -8.0;
  EXPECT_NE(hfErrorOf(j.dump()).find("field 'rope_parameters.full_attention.factor'"),
            std::string::npos);
}

// Gemma 3 as transformers' Gemma3TextConfig reads it: GeGLU, post-norms,
// q/k norms, tied embeddings times sqrt(64) = 8, the softmax over
// sqrt(query_pre_attn_scalar), layers 5 and 11 global (sliding_window_pattern
// 6), the local layers' RoPE on rope_local_base_freq.
TEST(HFConfig, Gemma3) {
  nlohmann::json j = gemma3();
  ModelConfig cfg = readQuietly(j);
  const ModelSpec &m = cfg.model;
  EXPECT_EQ(m.architecture, Architecture::gemma3);
  EXPECT_EQ(m.activation, Activation::gelu_tanh);
  EXPECT_TRUE(m.postNorms && m.qkNorm && m.tieWordEmbeddings);
  EXPECT_FALSE(m.attentionBias);
  EXPECT_EQ(m.embeddingScale, 8.0);
  EXPECT_EQ(m.queryPreAttnScalar, 256.0);
  EXPECT_EQ(m.headDim, 32);
  EXPECT_EQ(m.slidingWindow, 512);
  EXPECT_EQ(m.fullAttentionLayers, (std::vector<int64_t>{5, 11}));
  EXPECT_EQ(m.rope.theta, 1e6);
  EXPECT_EQ(m.rope.localTheta, 1e4);
  EXPECT_EQ(m.eosTokenIds, (std::vector<int64_t>{1, 106}));
  EXPECT_EQ(cfg.compile.weightDtype, DType::bf16);
  // The weights: the sandwich norms besides Llama's.
  int64_t postNorms = 0;
  for (const WeightDecl &w : weightTable(m))
    postNorms += w.name.find("post_") != std::string::npos;
  EXPECT_EQ(postNorms, 2 * 12);
  // A page is given back only where every layer slides: here none is.
  EXPECT_EQ(attentionWindow(m, cfg.compile), 0);
  // The round trip through an artifact's JSON keeps every field.
  const ModelSpec back = modelSpecFromJson(toJson(m));
  EXPECT_EQ(back.activation, m.activation);
  EXPECT_EQ(back.postNorms, m.postNorms);
  EXPECT_EQ(back.embeddingScale, m.embeddingScale);
  EXPECT_EQ(back.queryPreAttnScalar, m.queryPreAttnScalar);
  EXPECT_EQ(back.fullAttentionLayers, m.fullAttentionLayers);
  EXPECT_EQ(back.rope.localTheta, m.rope.localTheta);
  // layer_types (newer transformers) decide over the pattern; Gemma 3 4B's
  // linear scaling is the global layers'.
  j["layer_types"] = nlohmann::json::array();
  for (int l = 0; l < 12; ++l)
    j["layer_types"].push_back(l % 4 == 3 ? "full_attention" : "sliding_attention");
  j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 8.0}};
  cfg = readQuietly(j);
  EXPECT_EQ(cfg.model.fullAttentionLayers, (std::vector<int64_t>{3, 7, 11}));
  EXPECT_EQ(cfg.model.rope.type, RopeType::linear);
  j.erase("layer_types");
  j["sliding_window_pattern"] = 4;
  EXPECT_EQ(readQuietly(j).model.fullAttentionLayers, (std::vector<int64_t>{3, 7, 11}));
  // Gemma3TextConfig's defaults where the file says nothing.
  for (const char *key : {"query_pre_attn_scalar", "rope_local_base_freq", "hidden_activation",
                          "sliding_window_pattern"})
    j.erase(key);
  cfg = readQuietly(j);
  EXPECT_EQ(cfg.model.queryPreAttnScalar, 256.0);
  EXPECT_EQ(cfg.model.rope.localTheta, 1e4);
  EXPECT_EQ(cfg.model.activation, Activation::gelu_tanh);
  EXPECT_EQ(cfg.model.fullAttentionLayers, (std::vector<int64_t>{5, 11}));
  EXPECT_EQ(cfg.model.finalSoftcap, 0.0); // null
  j["final_logit_softcapping"] = 30.0; // Gemma 2's, where a Gemma 3 config sets one
  EXPECT_EQ(readQuietly(j).model.finalSoftcap, 30.0);
  // What kvplan does not compile, refused by the key as written.
  auto has = [](nlohmann::json c, const std::string &part) {
    const std::string msg = hfErrorOf(c.dump());
    EXPECT_NE(msg.find(part), std::string::npos) << "'" << part << "' not in: " << msg;
  };
  nlohmann::json bad = gemma3();
  bad["use_bidirectional_attention"] = true;
  has(bad, "field 'use_bidirectional_attention': bidirectional attention");
  bad = gemma3();
  bad["hidden_activation"] = "relu";
  has(bad, "field 'hidden_activation': 'relu' is not supported");
  bad = gemma3();
  bad["sliding_window_pattern"] = 0;
  has(bad, "field 'sliding_window_pattern': expected a positive integer");
  bad = gemma3();
  bad["query_pre_attn_scalar"] = -1;
  has(bad, "field 'query_pre_attn_scalar': expected a positive finite number, got -1");
}

// Gemma 3 4B's config.json (Gemma3ForConditionalGeneration): the text
// model's fields under text_config, only those that differ from
// Gemma3TextConfig's defaults; its text model is 3,880,263,168 parameters
// (of the checkpoint's 4,300,079,472 with the vision tower), the embedding
// 262,208 x 2,560.
TEST(HFConfig, Gemma3MultimodalTextConfig) {
  const nlohmann::json j = nlohmann::json::parse(R"({
    "architectures": ["Gemma3ForConditionalGeneration"], "boi_token_index": 255999,
    "eoi_token_index": 256000, "eos_token_id": [1, 106], "image_token_index": 262144,
    "initializer_range": 0.02, "mm_tokens_per_image": 256, "model_type": "gemma3",
    "text_config": {"hidden_size": 2560, "intermediate_size": 10240,
                    "model_type": "gemma3_text", "num_attention_heads": 8,
                    "num_hidden_layers": 34, "num_key_value_heads": 4,
                    "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                    "sliding_window": 1024},
    "torch_dtype": "bfloat16", "transformers_version": "4.50.0.dev0",
    "vision_config": {"hidden_size": 1152, "model_type": "siglip_vision_model"}})");
  const ModelConfig cfg = readQuietly(j);
  const ModelSpec &m = cfg.model;
  EXPECT_EQ(m.architecture, Architecture::gemma3);
  EXPECT_EQ(parameterCount(m), 3880263168);
  EXPECT_EQ(m.vocabSize, 262208);
  EXPECT_EQ(m.headDim, 256);
  EXPECT_EQ(m.slidingWindow, 1024);
  EXPECT_EQ(m.fullAttentionLayers, (std::vector<int64_t>{5, 11, 17, 23, 29}));
  EXPECT_EQ(m.rope.type, RopeType::linear);
  EXPECT_EQ(m.rope.factor, 8.0);
  EXPECT_EQ(m.rope.localTheta, 1e4);
  EXPECT_EQ(m.eosTokenIds, (std::vector<int64_t>{1, 106}));
  EXPECT_EQ(m.maxPositions, 131072);
  EXPECT_EQ(cfg.compile.weightDtype, DType::bf16);
  // A refusal names the key under text_config.
  nlohmann::json bad = j;
  bad["text_config"]["num_hidden_layers"] = 0;
  EXPECT_NE(hfErrorOf(bad.dump()).find("text_config.num_hidden_layers"), std::string::npos)
      << hfErrorOf(bad.dump());
}

// Gemma 2's config.json (gemma-2-2b's, scaled down to 4 layers): every
// other layer global (layer_types where given), no q/k norms, soft-capped
// scores and logits at Gemma2Config's 50 and 30 (null: none).
TEST(HFConfig, Gemma2) {
  nlohmann::json j = nlohmann::json::parse(R"({
    "architectures": ["Gemma2ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
    "attn_logit_softcapping": 50.0, "bos_token_id": 2, "cache_implementation": "hybrid",
    "eos_token_id": [1, 107], "final_logit_softcapping": 30.0, "head_dim": 32,
    "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh",
    "hidden_size": 64, "initializer_range": 0.02, "intermediate_size": 96,
    "max_position_embeddings": 8192, "model_type": "gemma2", "num_attention_heads": 8,
    "num_hidden_layers": 4, "num_key_value_heads": 4, "pad_token_id": 0,
    "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06, "rope_theta": 10000.0,
    "sliding_window": 4096, "torch_dtype": "float32", "transformers_version": "4.42.4",
    "use_cache": true, "vocab_size": 256000})");
  ModelConfig cfg = readQuietly(j);
  const ModelSpec &m = cfg.model;
  EXPECT_EQ(m.architecture, Architecture::gemma2);
  EXPECT_EQ(m.activation, Activation::gelu_tanh);
  EXPECT_TRUE(m.postNorms && m.tieWordEmbeddings);
  EXPECT_FALSE(m.qkNorm);
  EXPECT_EQ(m.embeddingScale, 8.0);
  EXPECT_EQ(m.queryPreAttnScalar, 256.0);
  EXPECT_EQ(m.attnSoftcap, 50.0);
  EXPECT_EQ(m.finalSoftcap, 30.0);
  EXPECT_EQ(m.slidingWindow, 4096);
  EXPECT_EQ(m.fullAttentionLayers, (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(m.rope.localTheta, 0.0); // every layer on rope_theta
  const ModelSpec back = modelSpecFromJson(toJson(m));
  EXPECT_EQ(back.attnSoftcap, 50.0);
  EXPECT_EQ(back.finalSoftcap, 30.0);
  // Absent: Gemma2Config's defaults; null: none.
  j.erase("attn_logit_softcapping");
  j["final_logit_softcapping"] = nullptr;
  cfg = readQuietly(j);
  EXPECT_EQ(cfg.model.attnSoftcap, 50.0);
  EXPECT_EQ(cfg.model.finalSoftcap, 0.0);
  j["layer_types"] = {"full_attention", "sliding_attention", "sliding_attention",
                      "full_attention"};
  EXPECT_EQ(readQuietly(j).model.fullAttentionLayers, (std::vector<int64_t>{0, 3}));
  // The window: absent, Gemma2Config's 4096; null, none.
  j.erase("sliding_window");
  EXPECT_EQ(readQuietly(j).model.slidingWindow, 4096);
  j["sliding_window"] = nullptr;
  EXPECT_EQ(readQuietly(j).model.slidingWindow, 0);
  EXPECT_TRUE(readQuietly(j).model.fullAttentionLayers.empty());
  j["attn_logit_softcapping"] = -1.0;
  EXPECT_NE(hfErrorOf(j.dump()).find("field 'attn_logit_softcapping': expected a positive"),
            std::string::npos)
      << hfErrorOf(j.dump());
  // Gemma 3's multimodal config has no text model of its own at the top.
  nlohmann::json bare = gemma3();
  bare["model_type"] = "gemma3";
  EXPECT_NE(hfErrorOf(bare.dump()).find("gemma3 with its text_config"), std::string::npos)
      << hfErrorOf(bare.dump());
}

// A TOML spec's Gemma fields: gemma3's defaults (GeGLU, post-norms, q/k
// norms, tied, sqrt(hidden_size), every sixth layer global under a window),
// and their checks by field name.
TEST(SpecParser, Gemma3Fields) {
  auto replace = [](std::string s, const std::string &from, const std::string &to) {
    return s.replace(s.find(from), from.size(), to);
  };
  const std::string g = replace(edit("architecture = \"llama\"", "architecture = \"gemma3\""),
                                "num_layers = 2", "num_layers = 12");
  ModelSpec m = parseAndValidate(g).model;
  EXPECT_EQ(m.activation, Activation::gelu_tanh);
  EXPECT_TRUE(m.postNorms && m.qkNorm && m.tieWordEmbeddings);
  EXPECT_EQ(m.embeddingScale, std::sqrt(double(m.hiddenSize)));
  EXPECT_TRUE(m.fullAttentionLayers.empty()); // no window: every layer reads every key
  m = parseAndValidate(replace(g, "eos_token_id = 2", "eos_token_id = 2\nsliding_window = 8"))
          .model;
  EXPECT_EQ(m.fullAttentionLayers, (std::vector<int64_t>{5, 11}));
  // Any architecture may take them.
  m = parseAndValidate(edit("eos_token_id = 2",
                            "eos_token_id = 2\nhidden_activation = \"gelu_pytorch_tanh\"\n"
                            "post_norms = true\nembedding_scale = 2.5\n"
                            "query_pre_attn_scalar = 10.0\nsliding_window = 4\n"
                            "full_attention_layers = [1]\n[model.rope]\nlocal_theta = 100.0"))
          .model;
  EXPECT_EQ(m.activation, Activation::gelu_tanh);
  EXPECT_TRUE(m.postNorms);
  EXPECT_EQ(m.embeddingScale, 2.5);
  EXPECT_EQ(m.queryPreAttnScalar, 10.0);
  EXPECT_EQ(m.fullAttentionLayers, (std::vector<int64_t>{1}));
  EXPECT_EQ(m.rope.localTheta, 100.0);
  auto field = [](const std::string &line) {
    return edit("eos_token_id = 2", "eos_token_id = 2\n" + line);
  };
  EXPECT_ERROR(field("hidden_activation = \"relu\""), "model.hidden_activation",
               "unknown value 'relu'; expected one of silu, gelu_pytorch_tanh");
  EXPECT_ERROR(field("full_attention_layers = [1]"), "model.full_attention_layers",
               "the model has none: set sliding_window");
  EXPECT_ERROR(field("sliding_window = 4\nfull_attention_layers = [2]"),
               "model.full_attention_layers", "got 2 at [0]");
  EXPECT_ERROR(field("embedding_scale = 0.0"), "model.embedding_scale",
               "expected a positive finite number");
  EXPECT_ERROR(field("query_pre_attn_scalar = -4.0"), "model.query_pre_attn_scalar",
               "expected a positive finite number");
  EXPECT_ERROR(field("[model.rope]\nlocal_theta = 100.0"), "model.rope.local_theta",
               "the model has none: set sliding_window");
  EXPECT_ERROR(field("attn_logit_softcapping = -1.0"), "model.attn_logit_softcapping",
               "expected a positive finite number");
  // gemma2: every other layer global under a window, no q/k norms.
  const std::string g2 = replace(replace(g, "\"gemma3\"", "\"gemma2\""), "eos_token_id = 2",
                                 "eos_token_id = 2\nsliding_window = 8\n"
                                 "final_logit_softcapping = 30.0");
  m = parseAndValidate(g2).model;
  EXPECT_EQ(m.fullAttentionLayers, (std::vector<int64_t>{1, 3, 5, 7, 9, 11}));
  EXPECT_FALSE(m.qkNorm);
  EXPECT_TRUE(m.postNorms);
  EXPECT_EQ(m.finalSoftcap, 30.0);
}

// A TOML spec's nope_layers: any architecture's, smollm3's every fourth
// layer when left out; increasing layers of the model, else refused by name.
TEST(SpecParser, NopeLayers) {
  auto nope = [](const std::string &list) {
    return edit("eos_token_id = 2", "eos_token_id = 2\nnope_layers = " + list);
  };
  EXPECT_EQ(parseAndValidate(nope("[0, 1]")).model.nopeLayers, (std::vector<int64_t>{0, 1}));
  EXPECT_TRUE(parseAndValidate(kGood).model.nopeLayers.empty());
  const std::string smol = edit("architecture = \"llama\"", "architecture = \"smollm3\"");
  EXPECT_TRUE(parseAndValidate(smol).model.nopeLayers.empty()); // 2 layers: no fourth
  std::string nine = edit("num_layers = 2", "num_layers = 9");
  nine.replace(nine.find("\"llama\""), 7, "\"smollm3\"");
  EXPECT_EQ(parseAndValidate(nine).model.nopeLayers, (std::vector<int64_t>{3, 7}));
  EXPECT_ERROR(nope("[1, 1]"), "spec.toml", "model.nope_layers",
               "expected increasing layer indices from 0 to num_layers - 1 = 1, got 1 at [1]");
  EXPECT_ERROR(nope("[2]"), "model.nope_layers", "got 2 at [0]");
}

// Phi-4-mini's partial RoPE as transformers reads it: int(head_dim x
// partial_rotary_factor) leading dimensions of each head rotate (12 of 16
// here; 96 of 128 in the model), LongRoPE's lists one factor per rotated
// pair. The attention factor stays the model's; the compiled rope ops carry
// it (it scales only the rotated pairs) and the softmax keeps 1 / sqrt(16).
TEST(HFConfig, Phi4MiniPartialRope) {
  nlohmann::json j = phi35();
  j["partial_rotary_factor"] = 0.75;
  j["rope_scaling"]["short_factor"] = {1.0, 1.0, 1.1, 1.3, 1.6, 2.0};
  j["rope_scaling"]["long_factor"] = {1.0, 1.5, 3.0, 6.0, 12.0, 24.0};
  ModelConfig cfg = phiConfig(j);
  EXPECT_EQ(cfg.model.headDim, 16);
  EXPECT_EQ(cfg.model.rope.rotaryDim, 12);
  EXPECT_EQ(cfg.model.rope.freqFactors,
            j["rope_scaling"]["short_factor"].get<std::vector<double>>());
  EXPECT_NEAR(cfg.model.rope.attentionFactor, std::sqrt(17.0 / 12.0), 1e-15);
  // Frequency i of the 6 rotated pairs is 10000^(-2i/12) / factor i; the
  // last 2 pairs do not turn.
  const std::vector<double> f = ropeFrequencies(cfg.model.rope, cfg.model.headDim);
  ASSERT_EQ(f.size(), 8u);
  for (int i = 0; i < 6; ++i)
    EXPECT_NEAR(f[size_t(i)], std::pow(10000.0, -i / 6.0) / cfg.model.rope.freqFactors[size_t(i)],
                1e-15) << i;
  EXPECT_EQ(f[6], 0.0);
  EXPECT_EQ(f[7], 0.0);
  const ModelSpec back = modelSpecFromJson(toJson(cfg.model));
  EXPECT_EQ(back.rope.rotaryDim, 12);
  EXPECT_EQ(modelSpecFromJson(toJson(phiConfig(phi35()).model)).rope.rotaryDim, 0);
  // A factor of 1 is whole heads, as transformers reads it.
  EXPECT_EQ(phiConfig(phi35()).model.rope.rotaryDim, 0);
  // Phi-4-mini's own sizes: 96 of 128.
  j["hidden_size"] = 3072;
  j["num_attention_heads"] = 24;
  j["num_key_value_heads"] = 8;
  j["rope_scaling"]["short_factor"] = std::vector<double>(48, 1.0);
  j["rope_scaling"]["long_factor"] = std::vector<double>(48, 2.0);
  EXPECT_EQ(phiConfig(j).model.rope.rotaryDim, 96);
}

TEST(HFConfig, Phi3RefusalsNameTheKey) {
  auto has = [](nlohmann::json j, const std::string &part) {
    const std::string msg = hfErrorOf(j.dump());
    EXPECT_NE(msg.find(part), std::string::npos) << "'" << part << "' not in: " << msg;
  };
  nlohmann::json j = phi35();
  j["rope_scaling"]["short_factor"] = {1.0, 2.0};
  has(j, "field 'rope_scaling.short_factor': expected head_dim / 2 = 8 factors, got 2");
  j = phi35();
  j["rope_scaling"]["long_factor"][3] = -1.0;
  has(j, "field 'rope_scaling.long_factor[3]': expected a positive finite number");
  j = phi35();
  j["rope_scaling"]["long_factor"][1] = "x";
  has(j, "field 'rope_scaling.long_factor': expected a list of numbers, found a string at [1]");
  j = phi35();
  j["rope_scaling"].erase("long_factor");
  has(j, "field 'rope_scaling.long_factor': missing");
  j = phi35();
  j["rope_scaling"]["short_mscale"] = 1.1;
  has(j, "field 'rope_scaling.short_mscale'");
  j = phi35();
  j["partial_rotary_factor"] = 0.75; // Phi-4-mini's, but the lists are a whole head's
  has(j, "field 'rope_scaling.short_factor': expected rotary_dim / 2 = 6 factors, got 8");
  j["partial_rotary_factor"] = 1.5;
  has(j, "field 'partial_rotary_factor': expected a number above 0 and at most 1, got 1.5");
  j["partial_rotary_factor"] = 0.1; // 1.6 dimensions of 16: one, not a pair
  has(j, "field 'partial_rotary_factor': 0.1 of the head's 16 dimensions is 1; RoPE rotates "
         "pairs");
  j["partial_rotary_factor"] = 0.3125; // 5 of 16: odd
  has(j, "of the head's 16 dimensions is 5;");
  j = phi35();
  j["original_max_position_embeddings"] = 0;
  has(j, "field 'original_max_position_embeddings': expected a positive integer");
  // Phi-3-mini-4k: no scaling, a window of 2047 that the default context
  // (2048) passes by one key, and its own 4096 by many.
  j = phi35();
  j["rope_scaling"] = nullptr;
  j["max_position_embeddings"] = 4096;
  j["sliding_window"] = 2047;
  ModelConfig cfg = phiConfig(j);
  EXPECT_EQ(cfg.model.rope.type, RopeType::standard);
  EXPECT_EQ(cfg.model.slidingWindow, 2047);
  EXPECT_EQ(cfg.compile.maxSeqLen, 2048);
  EXPECT_EQ(cfg.compile.pageSize, 16);
  EXPECT_EQ(phiConfig(j, 4096).compile.maxSeqLen, 4096);
  j["sliding_window"] = 7;
  EXPECT_EQ(phiConfig(j).model.slidingWindow, 7);
  EXPECT_EQ(hfErrorOf(j.dump()), "");
}

// generation_config.json names the end-of-turn ids config.json leaves out
// (Phi-3's config ends at <|endoftext|> 32000, its generation config also at
// <|end|> 32007); they join the model's end ids, each once.
TEST(HFConfig, GenerationConfigAddsEndIds) {
  const fs::path dir = fs::temp_directory_path() / "kvplan-generation-config-test";
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ofstream(dir / "config.json") << kHF;
  auto load = [&](const std::string &generation) {
    std::ofstream(dir / "generation_config.json") << generation;
    return loadModelConfig(dir.string(), SettingOverrides{}, [](const std::string &) {});
  };
  auto errorOf = [&](const std::string &generation) -> std::string {
    try {
      load(generation);
    } catch (const InputError &e) {
      return e.what();
    }
    return "";
  };
  EXPECT_EQ(load(R"({"eos_token_id": [2, 7, 9], "bos_token_id": 1})").model.eosTokenIds,
            (std::vector<int64_t>{2, 7, 9}));
  EXPECT_EQ(load(R"({"eos_token_id": 9})").model.eosTokenIds, (std::vector<int64_t>{2, 9}));
  EXPECT_EQ(load(R"({"do_sample": true})").model.eosTokenIds, (std::vector<int64_t>{2}));
  const std::string file = (dir / "generation_config.json").string();
  EXPECT_NE(errorOf(R"({"eos_token_id": [2, 100]})")
                .find(file + ": field 'eos_token_id': token 100 is outside the vocabulary [0, "
                             "100)"),
            std::string::npos)
      << errorOf(R"({"eos_token_id": [2, 100]})");
  EXPECT_NE(errorOf(R"({"eos_token_id": "x"})").find("found a string"), std::string::npos);
  EXPECT_NE(errorOf("{oops").find(file + ": malformed JSON"), std::string::npos);
  fs::remove_all(dir);
}

TEST(HFConfig, MatchesTheTomlSpecs) {
  const fs::path src = KVPLAN_SOURCE_DIR;
  const std::pair<const char *, const char *> pairs[] = {
      {"llama-3.2-1b", "llama-3.2-1b.toml"},
      {"llama-3.1-8b", "llama-3.1-8b.toml"},
      {"qwen2.5-0.5b", "qwen2.5-0.5b.toml"},
      {"qwen3-0.6b", "qwen3-0.6b.toml"},
      {"mistral-7b-v0.3", "mistral-7b-v0.3.toml"},
      {"smollm2-135m", "smollm2-135m.toml"},
      {"phi-3-mini-4k", "phi-3-mini-4k.toml"},
      {"phi-3.5-mini", "phi-3.5-mini.toml"},
      {"qwen3-30b-a3b", "qwen3-30b-a3b.toml"},
      {"mixtral-8x7b-v0.1", "mixtral-8x7b-v0.1.toml"},
      {"qwen1.5-moe-a2.7b", "qwen1.5-moe-a2.7b.toml"},
      {"qwen3-8b-yarn", "qwen3-8b-yarn.toml"},
      {"gpt-oss-20b", "gpt-oss-20b.toml"},
      {"gpt-oss-120b", "gpt-oss-120b.toml"},
  };
  for (auto [dir, toml] : pairs) {
    SCOPED_TRACE(dir);
    SettingOverrides o;
    ModelConfig fromToml = loadModelConfig((src / "models" / toml).string(), o);
    // Same settings as the TOML file, so only the model part can differ.
    o.weightDtype = fromToml.compile.weightDtype;
    o.expertDtype = fromToml.compile.expertDtype; // gpt-oss-20b's mxfp4 (its bf16 copy's config)
    o.maxSeqLen = fromToml.compile.maxSeqLen;
    o.maxBatch = fromToml.compile.maxBatch;
    o.prefillChunk = fromToml.compile.prefillChunk;
    o.pageSize = fromToml.compile.pageSize;
    ModelConfig fromHF = loadModelConfig((src / "tests/data/hf" / dir).string(), o);
    nlohmann::json a = toJson(fromToml.model), b = toJson(fromHF.model);
    a.erase("name");
    b.erase("name");
    EXPECT_EQ(a.dump(1), b.dump(1));
    EXPECT_EQ(toJson(fromToml.compile).dump(), toJson(fromHF.compile).dump());
    EXPECT_EQ(fromHF.model.name, dir); // named after the model's folder
  }
}

// A mixture of experts in a TOML spec: every layer's FFN, its settings
// checked against each other and against what kvplan builds for it.
/// The shape `m`'s weight table gives `name` (empty: none).
static std::vector<int64_t> declaredShape(const ModelSpec &m, const std::string &name) {
  for (const WeightDecl &w : weightTable(m))
    if (w.name == name) return w.shape;
  return {};
}

TEST(SpecParser, MixtureOfExperts) {
  const std::string moe = "num_experts = 8\nnum_experts_per_tok = 2\n";
  ModelConfig cfg = parseAndValidate(edit("num_layers = 2", "num_layers = 2\n" + moe));
  EXPECT_TRUE(cfg.model.moe());
  EXPECT_EQ(cfg.model.expertWidth(), 128); // intermediate_size where not given
  EXPECT_TRUE(cfg.model.normTopKProb);
  auto find = [&](const std::string &name) { return declaredShape(cfg.model, name); };
  EXPECT_EQ(find("layers.1.feed_forward.router"), (std::vector<int64_t>{8, 64}));
  EXPECT_EQ(find("layers.1.feed_forward.experts.w1"), (std::vector<int64_t>{8, 128, 64}));
  EXPECT_EQ(find("layers.1.feed_forward.experts.w2"), (std::vector<int64_t>{8, 64, 128}));
  EXPECT_TRUE(find("layers.1.feed_forward.w1").empty());
  // 6 of the 8 experts idle for a token: 3 matrices of 128 x 64 each, 2 layers.
  EXPECT_EQ(parameterCount(cfg.model) - activeParameterCount(cfg.model), 2 * 6 * 3 * 128 * 64);
  // The published counts: Qwen3-30B-A3B's 30.5 B (3.3 B a token), Mixtral
  // 8x7B's 46.7 B (12.9 B a token).
  const fs::path src = KVPLAN_SOURCE_DIR;
  const ModelSpec qwen = loadModelConfig((src / "models/qwen3-30b-a3b.toml").string(), {}).model;
  EXPECT_NEAR(double(parameterCount(qwen)) / 1e9, 30.5, 0.05);
  // 3,353,... M: "3.3B activated" as Qwen writes it (every weight but the
  // 120 experts a token leaves idle).
  EXPECT_GE(double(activeParameterCount(qwen)) / 1e9, 3.3);
  EXPECT_LT(double(activeParameterCount(qwen)) / 1e9, 3.4);
  const ModelSpec mixtral =
      loadModelConfig((src / "models/mixtral-8x7b-v0.1.toml").string(), {}).model;
  EXPECT_NEAR(double(parameterCount(mixtral)) / 1e9, 46.7, 0.05);
  EXPECT_NEAR(double(activeParameterCount(mixtral)) / 1e9, 12.9, 0.05);

  EXPECT_ERROR(edit("num_layers = 2", "num_layers = 2\nnum_experts = 8\nnum_experts_per_tok = 9"),
               "spec.toml:", "field 'model.num_experts_per_tok'", "from 1 to num_experts 8",
               "got 9");
  EXPECT_ERROR(edit("num_layers = 2", "num_layers = 2\nnum_experts = 8"),
               "field 'model.num_experts_per_tok'", "got 0");
  EXPECT_ERROR(edit("num_layers = 2", "num_layers = 2\nnum_experts = 1\nnum_experts_per_tok = 1"),
               "field 'model.num_experts'", "at least 2");
  EXPECT_ERROR(edit("num_layers = 2", "num_layers = 2\nnum_experts_per_tok = 2"),
               "field 'model.num_experts_per_tok'", "the model has none");
  EXPECT_ERROR(edit("num_layers = 2", "num_layers = 2\n" + moe + "moe_intermediate_size = -4"),
               "field 'model.moe_intermediate_size'", "expected a positive integer");
  for (const char *dtype : {"bf16", "int8", "int4"}) // both targets run it
    EXPECT_NO_THROW(parseAndValidate(edit("num_layers = 2", "num_layers = 2\n" + moe) +
                                     "target = \"cuda\"\nweight_dtype = \"" + dtype + "\"\n"))
        << dtype;
  // Tensor parallelism cuts the experts' width (moe_intermediate_size, else
  // intermediate_size), not the dense FFN's the model has none of.
  EXPECT_NO_THROW(parseAndValidate(edit("num_layers = 2", "num_layers = 2\n" + moe) +
                                   "tensor_parallel = 2\n"));
  const std::string narrow = "intermediate_size = 100\n" + moe + "moe_intermediate_size = 32";
  EXPECT_NO_THROW(
      parseAndValidate(edit("intermediate_size = 128", narrow) + "tensor_parallel = 4\n"));
  EXPECT_ERROR(edit("num_layers = 2", "num_layers = 2\n" + moe + "moe_intermediate_size = 30") +
                   "tensor_parallel = 4\n",
               "field 'compile.tensor_parallel'",
               "tensor_parallel 4 does not divide moe_intermediate_size (30)");
}

// Qwen2-MoE's shared expert: its weights, its share of the parameters
// (always active), its settings checked.
TEST(SpecParser, SharedExpert) {
  const std::string moe = "num_experts = 8\nnum_experts_per_tok = 2\n";
  const std::string shared = moe + "shared_expert_intermediate_size = 96\n";
  ModelConfig cfg = parseAndValidate(
      edit("num_layers = 2", "num_layers = 2\n" + shared + "shared_expert_gate = true"));
  EXPECT_TRUE(cfg.model.sharedExpert());
  EXPECT_TRUE(cfg.model.sharedExpertGate);
  auto find = [&](const std::string &name) { return declaredShape(cfg.model, name); };
  EXPECT_EQ(find("layers.1.feed_forward.shared_expert.w1"), (std::vector<int64_t>{96, 64}));
  EXPECT_EQ(find("layers.1.feed_forward.shared_expert.w3"), (std::vector<int64_t>{96, 64}));
  EXPECT_EQ(find("layers.1.feed_forward.shared_expert.w2"), (std::vector<int64_t>{64, 96}));
  EXPECT_EQ(find("layers.1.feed_forward.shared_expert_gate"), (std::vector<int64_t>{1, 64}));
  // Still only the 6 idle routed experts' matrices are inactive.
  EXPECT_EQ(parameterCount(cfg.model) - activeParameterCount(cfg.model), 2 * 6 * 3 * 128 * 64);
  ModelConfig ungated = parseAndValidate(edit("num_layers = 2", "num_layers = 2\n" + shared));
  EXPECT_FALSE(ungated.model.sharedExpertGate);
  EXPECT_EQ(parameterCount(cfg.model) - parameterCount(ungated.model), 2 * 64);
  // Qwen1.5-MoE-A2.7B by hand from its config.json: an embedding and a head
  // of 151936 x 2048, and each of 24 layers 4 x 2048^2 of attention, 3 x 2048
  // of biases, 2 x 2048 of norms, a router of 60 x 2048, 60 experts of 3 x
  // 1408 x 2048, a shared expert of 3 x 5632 x 2048 and its gate of 2048; the
  // final norm. The model card: 14.3 B in total, 2.7 B activated.
  const int64_t layer = 4LL * 2048 * 2048 + 3 * 2048 + 2 * 2048 + 60 * 2048 +
                        60LL * 3 * 1408 * 2048 + 3LL * 5632 * 2048 + 2048;
  const ModelSpec q = loadModelConfig(
      (fs::path(KVPLAN_SOURCE_DIR) / "models/qwen1.5-moe-a2.7b.toml").string(), {}).model;
  EXPECT_EQ(parameterCount(q), 2LL * 151936 * 2048 + 24 * layer + 2048);
  EXPECT_EQ(parameterCount(q) - activeParameterCount(q), 24LL * 56 * 3 * 1408 * 2048);
  EXPECT_NEAR(double(activeParameterCount(q)) / 1e9, 2.7, 0.05);

  EXPECT_ERROR(edit("num_layers = 2", "num_layers = 2\nshared_expert_intermediate_size = 96"),
               "field 'model.shared_expert_intermediate_size'", "the model has none");
  EXPECT_ERROR(edit("num_layers = 2", "num_layers = 2\n" + moe + "shared_expert_gate = true"),
               "field 'model.shared_expert_gate'", "set shared_expert_intermediate_size");
  EXPECT_ERROR(edit("num_layers = 2", "num_layers = 2\n" + moe +
                                          "shared_expert_intermediate_size = -8"),
               "field 'model.shared_expert_intermediate_size'", "expected a positive integer");
  EXPECT_ERROR(edit("num_layers = 2", "num_layers = 2\n" + moe +
                                          "shared_expert_intermediate_size = 90") +
                   "tensor_parallel = 4\n",
               "field 'compile.tensor_parallel'",
               "does not divide shared_expert_intermediate_size (90)");
  for (const char *dtype : {"bf16", "int8", "int4"})
    EXPECT_NO_THROW(parseAndValidate(edit("num_layers = 2", "num_layers = 2\n" + shared) +
                                     "target = \"cuda\"\nweight_dtype = \"" + dtype + "\"\n"))
        << dtype;
}

// Mixtral's, Qwen3-MoE's and Qwen2-MoE's config.json, as transformers reads
// them.
TEST(HFConfig, MixturesOfExperts) {
  auto parse = [](const std::string &text) {
    ModelConfig cfg = parseHFConfig(text, "config.json", [](const std::string &w) {
      ADD_FAILURE() << w;
    });
    validate(cfg);
    return cfg;
  };
  nlohmann::json mixtral = nlohmann::json::parse(kHF);
  mixtral.update({{"model_type", "mixtral"}, {"num_local_experts", 8},
                  {"num_experts_per_tok", 2}, {"router_aux_loss_coef", 0.02},
                  {"output_router_logits", false}, {"router_jitter_noise", 0.0},
                  {"sliding_window", nullptr}});
  ModelConfig m = parse(mixtral.dump());
  EXPECT_EQ(m.model.architecture, Architecture::mistral);
  EXPECT_EQ(m.model.numExperts, 8);
  EXPECT_EQ(m.model.expertsPerToken, 2);
  EXPECT_EQ(m.model.expertWidth(), 128); // intermediate_size: each expert's
  EXPECT_TRUE(m.model.normTopKProb);     // Mixtral always renormalizes

  nlohmann::json qwen = nlohmann::json::parse(kHF);
  qwen.update({{"model_type", "qwen3_moe"}, {"num_experts", 16}, {"num_experts_per_tok", 4},
               {"moe_intermediate_size", 32}, {"decoder_sparse_step", 1},
               {"mlp_only_layers", nlohmann::json::array()}, {"head_dim", 32},
               {"use_sliding_window", false}});
  ModelConfig q = parse(qwen.dump());
  EXPECT_EQ(q.model.architecture, Architecture::qwen3);
  EXPECT_TRUE(q.model.qkNorm);
  EXPECT_EQ(q.model.expertWidth(), 32);
  EXPECT_FALSE(q.model.normTopKProb); // Qwen3MoeConfig's default
  qwen["norm_topk_prob"] = true;
  EXPECT_TRUE(parse(qwen.dump()).model.normTopKProb);

  auto has = [](const std::string &msg, std::initializer_list<const char *> parts) {
    ASSERT_FALSE(msg.empty()) << "expected an error";
    for (const char *part : parts)
      EXPECT_NE(msg.find(part), std::string::npos) << "'" << part << "' not in: " << msg;
  };
  nlohmann::json bad = mixtral;
  bad["num_experts_per_tok"] = 9;
  // Named as the file writes it.
  has(hfErrorOf(bad.dump()), {"config.json: field 'num_experts_per_tok'", "got 9"});
  bad = mixtral;
  bad.erase("num_local_experts");
  has(hfErrorOf(bad.dump()), {"field 'num_local_experts': missing"});
  bad = qwen;
  bad["mlp_only_layers"] = {1};
  has(hfErrorOf(bad.dump()), {"field 'mlp_only_layers'", "dense FFN"});
  bad = qwen;
  bad["decoder_sparse_step"] = 2;
  has(hfErrorOf(bad.dump()), {"field 'decoder_sparse_step'", "every layer"});

  // Qwen2-MoE: Qwen2's attention (biases on q, k, v) and Qwen3-MoE's
  // experts beside a shared expert, always gated.
  nlohmann::json qwen2 = qwen;
  qwen2.erase("head_dim");
  qwen2.erase("norm_topk_prob"); // Qwen2MoeConfig's default: false
  qwen2.update({{"model_type", "qwen2_moe"}, {"shared_expert_intermediate_size", 96}});
  ModelConfig q2 = parse(qwen2.dump());
  EXPECT_EQ(q2.model.architecture, Architecture::qwen2);
  EXPECT_TRUE(q2.model.attentionBias);
  EXPECT_FALSE(q2.model.qkNorm);
  EXPECT_EQ(q2.model.expertWidth(), 32);
  EXPECT_EQ(q2.model.sharedExpertIntermediateSize, 96);
  EXPECT_TRUE(q2.model.sharedExpertGate);
  EXPECT_FALSE(q2.model.normTopKProb);
  bad = qwen2;
  bad.erase("shared_expert_intermediate_size");
  has(hfErrorOf(bad.dump()), {"field 'shared_expert_intermediate_size': missing"});
  bad = qwen2;
  bad["shared_expert_intermediate_size"] = -4;
  has(hfErrorOf(bad.dump()), {"config.json: field 'shared_expert_intermediate_size'", "-4"});
  bad = qwen2;
  bad["mlp_only_layers"] = {1};
  has(hfErrorOf(bad.dump()), {"field 'mlp_only_layers'", "dense FFN"});
}

/// gpt-oss's parts, as its spec, config.json and GGUF all give them.
static void expectGptOssParts(const ModelSpec &m) {
  EXPECT_EQ(m.architecture, Architecture::gpt_oss);
  EXPECT_TRUE(m.attentionBias && m.attentionOutBias && m.attentionSinks && m.expertBias);
  EXPECT_EQ(m.activation, Activation::swiglu_oai);
  EXPECT_EQ(m.swigluLimit, 7.0);
  EXPECT_EQ(m.swigluAlpha, 1.702);
  EXPECT_TRUE(m.normTopKProb); // the softmax of the chosen logits alone: the same numbers
}

// architecture gpt-oss: its parts on by default (biases, sinks, the clamped
// SwiGLU, every other layer from layer 1 reading every key), each one a key
// of its own; the weight table's new tensors; the refusals, named.
TEST(SpecParser, GptOss) {
  // Lines added to [model].
  auto model = [](const std::string &lines, const std::string &arch = "gpt-oss",
                  const std::string &compile = "") {
    std::string s = edit("architecture = \"llama\"", "architecture = \"" + arch + "\"\n" + lines);
    return compile.empty() ? s : s + compile + "\n";
  };
  const std::string experts = "num_experts = 4\nnum_experts_per_tok = 2\nsliding_window = 16\n";
  ModelConfig cfg = parseAndValidate(model(experts));
  const ModelSpec &m = cfg.model;
  expectGptOssParts(m);
  EXPECT_EQ(m.fullAttentionLayers, (std::vector<int64_t>{1}));
  std::map<std::string, WeightDecl> table;
  for (const WeightDecl &w : weightTable(m)) table[w.name] = w;
  ASSERT_TRUE(table.count("layers.1.attention.sinks"));
  EXPECT_EQ(table["layers.1.attention.sinks"].shape, (std::vector<int64_t>{4}));
  EXPECT_TRUE(table["layers.1.attention.sinks"].f32);
  EXPECT_EQ(table["layers.1.attention.bo"].shape, (std::vector<int64_t>{64}));
  EXPECT_EQ(table["layers.1.feed_forward.router_bias"].shape, (std::vector<int64_t>{4}));
  EXPECT_EQ(table["layers.1.feed_forward.experts.b1"].shape, (std::vector<int64_t>{4, 128}));
  EXPECT_EQ(table["layers.1.feed_forward.experts.b2"].shape, (std::vector<int64_t>{4, 64}));
  EXPECT_FALSE(table["layers.1.feed_forward.experts.b3"].matrix());
  EXPECT_TRUE(table["layers.1.feed_forward.experts.w3"].matrix());
  // Parameters: each idle expert's three matrices and three biases not read.
  EXPECT_EQ(parameterCount(m) - activeParameterCount(m), 2 * 2 * (3 * 128 * 64 + 2 * 128 + 64));
  const ModelSpec back = modelSpecFromJson(toJson(m));
  EXPECT_TRUE(back.attentionOutBias && back.attentionSinks && back.expertBias);
  EXPECT_EQ(back.activation, Activation::swiglu_oai);
  EXPECT_EQ(back.swigluLimit, 7.0);
  EXPECT_EQ(back.swigluAlpha, 1.702);
  EXPECT_FALSE(toJson(parseAndValidate(kGood).model).contains("attention_sinks"));

  cfg = parseAndValidate(model(experts + "attention_sinks = false\nexpert_bias = false\n"
                               "attention_output_bias = false\nswiglu_limit = 3.5\n"
                               "swiglu_alpha = 2"));
  EXPECT_FALSE(cfg.model.attentionSinks || cfg.model.expertBias || cfg.model.attentionOutBias);
  EXPECT_EQ(cfg.model.swigluLimit, 3.5);
  EXPECT_EQ(cfg.model.swigluAlpha, 2.0);
  // Each part on another architecture.
  cfg = parseAndValidate(model("attention_sinks = true\nattention_output_bias = true", "llama"));
  EXPECT_TRUE(cfg.model.attentionSinks && cfg.model.attentionOutBias);

  EXPECT_ERROR(model(""), "model.hidden_activation", "swiglu_oai is gpt-oss's experts' activation",
               "set num_experts or choose silu");
  EXPECT_ERROR(model("expert_bias = true", "llama"), "model.expert_bias", "set num_experts");
  EXPECT_ERROR(model(experts + "swiglu_limit = 0"), "model.swiglu_limit",
               "positive finite number, got 0");
  EXPECT_ERROR(model("swiglu_limit = 5", "llama"), "model.swiglu_limit",
               "is swiglu_oai's (gpt-oss's experts' activation), and the model's is silu");
  EXPECT_ERROR(model(experts + "shared_expert_intermediate_size = 32"),
               "model.shared_expert_intermediate_size", "under swiglu_oai");
  EXPECT_ERROR(model("attention_sinks = true", "llama", "target = \"cuda\""),
               "model.attention_sinks", "the cuda target does not run gpt-oss's",
               "--target cpu");
  EXPECT_ERROR(model("attention_output_bias = true", "llama", "tensor_parallel = 2"),
               "compile.tensor_parallel", "gpt-oss's attention sinks");

  // The experts' own weight type (mxfp4, as gpt-oss publishes them).
  cfg = parseAndValidate(model(experts, "gpt-oss", "weight_dtype = \"int8\"\n"
                                                  "expert_dtype = \"mxfp4\""));
  EXPECT_EQ(cfg.compile.weightDtype, DType::i8);
  EXPECT_EQ(cfg.compile.expertWeightDtype(), DType::mxfp4);
  EXPECT_EQ(compileSettingsFromJson(toJson(cfg.compile)).expertDtype, DType::mxfp4);
  EXPECT_FALSE(toJson(parseAndValidate(kGood).compile).contains("expert_dtype"));
  EXPECT_FALSE(compileSettingsFromJson(toJson(parseAndValidate(kGood).compile)).expertDtype);
  EXPECT_EQ(parseAndValidate(kGood).compile.expertWeightDtype(),
            parseAndValidate(kGood).compile.weightDtype);
  // A reader's default for the experts (a GGUF's MXFP4 ones, not given)
  // yields to --dtype, which names every matrix's type; --expert-dtype
  // names theirs.
  ModelConfig read = parseAndValidate(model(experts));
  read.compile.expertDtype = DType::mxfp4;
  SettingOverrides o;
  o.weightDtype = DType::bf16;
  EXPECT_EQ(applyAndValidate(read, o).compile.expertWeightDtype(), DType::bf16);
  o.expertDtype = DType::i4;
  EXPECT_EQ(applyAndValidate(read, o).compile.expertWeightDtype(), DType::i4);
  o = {};
  EXPECT_EQ(applyAndValidate(read, o).compile.expertWeightDtype(), DType::mxfp4);
  EXPECT_ERROR(model("", "llama", "expert_dtype = \"mxfp4\""), "compile.expert_dtype",
               "the model has no experts", "leave it out");
  EXPECT_ERROR(model(experts, "gpt-oss", "expert_dtype = \"int2\""), "compile.expert_dtype",
               "unknown value 'int2'", "mxfp4");
  // The cuda target has no MXFP4 kernels: refused by the setting's name.
  EXPECT_ERROR(model("", "llama", "target = \"cuda\"\nweight_dtype = \"mxfp4\""),
               "compile.weight_dtype", "no MXFP4 kernels", "--dtype int8");
  EXPECT_ERROR(model("num_experts = 4\nnum_experts_per_tok = 2", "llama",
                     "target = \"cuda\"\nexpert_dtype = \"mxfp4\""),
               "compile.expert_dtype", "no MXFP4 kernels", "--expert-dtype int8");
}

// gpt-oss as transformers' GptOssConfig reads it: biases on q/k/v and the
// output projection (attention_bias), sinks, the clamped SwiGLU whatever
// hidden_act says (at swiglu_limit), Mixtral's expert keys with biases, the
// even layers sliding where layer_types is absent, no BOS; MXFP4 refused.
TEST(HFConfig, GptOss) {
  std::ifstream in(fs::path(KVPLAN_SOURCE_DIR) / "tests/data/hf/gpt-oss-20b/config.json");
  nlohmann::json j = nlohmann::json::parse(in);
  ModelConfig cfg = readQuietly(j);
  const ModelSpec &m = cfg.model;
  expectGptOssParts(m);
  EXPECT_EQ(m.numExperts, 32);
  EXPECT_EQ(m.expertsPerToken, 4);
  EXPECT_EQ(m.expertWidth(), 2880);
  EXPECT_EQ(m.bosTokenId, -1);
  EXPECT_EQ(m.slidingWindow, 128);
  EXPECT_EQ(m.fullAttentionLayers.size(), 12u);
  EXPECT_EQ(m.fullAttentionLayers.front(), 1);
  EXPECT_FALSE(m.rope.yarnTruncate);
  EXPECT_EQ(cfg.nameOf("model.num_experts"), "num_local_experts");
  j.erase("layer_types"); // GptOssConfig's default: the even layers slide
  j["hidden_act"] = "gelu";  // not read: the experts' activation is fixed
  j["swiglu_limit"] = 5.5;
  j["attention_bias"] = false;
  cfg = readQuietly(j);
  EXPECT_EQ(cfg.model.fullAttentionLayers, readQuietly(j).model.fullAttentionLayers);
  EXPECT_EQ(cfg.model.fullAttentionLayers.size(), 12u);
  EXPECT_EQ(cfg.model.fullAttentionLayers.back(), 23);
  EXPECT_EQ(cfg.model.activation, Activation::swiglu_oai);
  EXPECT_EQ(cfg.model.swigluLimit, 5.5);
  EXPECT_FALSE(cfg.model.attentionBias || cfg.model.attentionOutBias);
  EXPECT_EQ(cfg.compile.weightDtype, DType::bf16); // torch_dtype
  // OpenAI's MXFP4 checkpoint: its experts mxfp4 as they are, the other
  // matrices int8 (as llama.cpp's GGUFs hold them, Q8_0).
  j["quantization_config"] = {{"quant_method", "mxfp4"}};
  EXPECT_EQ(readQuietly(j).compile.weightDtype, DType::i8);
  EXPECT_EQ(readQuietly(j).compile.expertDtype, DType::mxfp4);
  j["quantization_config"] = {{"quant_method", "gptq"}};
  EXPECT_NE(hfErrorOf(j.dump()).find("field 'quantization_config': quantization method 'gptq' "
                                     "is not supported; kvplan reads float checkpoints"),
            std::string::npos);
  nlohmann::json llama = nlohmann::json::parse(kHF);
  llama["quantization_config"] = {{"quant_method", "mxfp4"}};
  EXPECT_NE(hfErrorOf(llama.dump()).find("'mxfp4' is not supported but for gpt-oss's experts"),
            std::string::npos);
}
