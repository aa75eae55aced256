// Every config in models/ compiles, its memory bill is exact, and the CPU
// executor allocates exactly that bill; so too with KV-cache pools of other
// sizes than the batch needs.
#include "codegen/Compiler.h"
#include "frontend/ConfigParser.h"
#include "runtime/cpu/CpuExecutor.h"
#include "support/Align.h"
#include "support/Error.h"
#include "support/Format.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <map>

#include <malloc.h>
#include <sys/mman.h>

using namespace kvplan;
namespace fs = std::filesystem;

namespace {

struct Known {
  const char *file;
  int64_t params; // as published for the model
};

// Parameter counts of the published checkpoints (embeddings counted once when
// tied).
const Known kModels[] = {
    {"tiny.toml", 3033344},
    {"llama-2-7b.toml", 6738415616},
    {"llama-3.2-1b.toml", 1235814400},
    {"llama-3.1-8b.toml", 8030261248},
    {"tinyllama-1.1b.toml", 1100048384},
    {"qwen2.5-0.5b.toml", 494032768},
    // 440,467,456 without the embedding: the model card's "0.44B non-embedding".
    {"qwen3-0.6b.toml", 596049920},
    {"smollm2-135m.toml", 134515008},
    {"mistral-7b-v0.3.toml", 7248023552},
    // v0.3's less its 768 added vocabulary rows (embedding and output).
    {"mistral-7b-v0.1.toml", 7241732096},
    {"stories110m.toml", 109529856},
    // The safetensors index's total_size, 7,642,159,104 bf16 bytes.
    {"phi-3-mini-4k.toml", 3821079552},
    {"phi-3.5-mini.toml", 3821079552}, // Phi-3-mini's layers
    // The safetensors headers' total (the embedding tied, counted once).
    {"phi-4-mini.toml", 3836021760},
    // The safetensors index's total_parameters (its embedding tied).
    {"smollm3-3b.toml", 3075098624},
    // The safetensors' total (Hugging Face's API and llama.cpp's n_params
    // agree), the embedding tied.
    {"gemma-3-1b.toml", 999885952},
    // Hugging Face's count for google/gemma-2-2b-it (the embedding tied).
    {"gemma-2-2b.toml", 2614341888},
    // Hugging Face's counts: every expert of every layer (the safetensors'
    // totals; 3.35 B and 12.9 B of them a token).
    {"qwen3-30b-a3b.toml", 30532122624},
    {"mixtral-8x7b-v0.1.toml", 46702792704},
    // By hand from config.json's shapes (SpecParser.SharedExpert; the model
    // card: 14.3 B, 2.7 B activated).
    {"qwen1.5-moe-a2.7b.toml", 14315784192},
    // Qwen3-8B: by hand from config.json's shapes, the safetensors' total
    // (8.2 B on the model card; its head untied).
    {"qwen3-8b-yarn.toml", 8190735360},
    // gpt-oss-20b: by hand from config.json's shapes (the model card's
    // 20.91 B: 19.12 B of experts, 0.64 B of attention, 1.16 B of embedding
    // and head).
    {"gpt-oss-20b.toml", 20914757184},
    // gpt-oss-120b: the same by hand (the model card's 116.83 B).
    {"gpt-oss-120b.toml", 116829156672},
};

ModelConfig load(const std::string &file, const SettingOverrides &o = {}) {
  return loadModelConfig((fs::path(KVPLAN_SOURCE_DIR) / "models" / file).string(), o,
                         [](const std::string &w) { ADD_FAILURE() << "warning: " << w; });
}

/// The bytes docs/artifact.md gives a weight of `shape` in `t`: a float
/// type's elements; int8 a byte an element, zeros to a multiple of 64, an
/// f32 scale a group of 32 along a row; int4 16 bytes a group, zeros, the
/// f32 scales, zeros, the f32 minimums; mxfp4 16 bytes a group, zeros, a
/// scale byte a group.
int64_t documentedBytes(const std::vector<int64_t> &shape, DType t) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  const int64_t cols = shape.back(), groups = n / cols * ((cols + 31) / 32);
  switch (t) {
  case DType::i8: return alignUp(n, int64_t(64)) + groups * 4;
  case DType::i4:
    return alignUp(alignUp(groups * 16, int64_t(64)) + groups * 4, int64_t(64)) + groups * 4;
  case DType::mxfp4: return alignUp(groups * 16, int64_t(64)) + groups;
  default: return n * dtypeBytes(t);
  }
}

struct Billed {
  std::string what;
  ModelConfig cfg;
  int64_t params;
};

/// Every model as its file has it, and pools (kv_pages) other than
/// max_batch x max_seq_len / page_size: larger, as a server keeping
/// prefix-cached pages wants, and one sequence's pages for four decode rows.
std::vector<Billed> billedConfigs() {
  std::vector<Billed> out;
  for (const Known &k : kModels) out.push_back({k.file, load(k.file), k.params});
  SettingOverrides larger, oneSequence, oneSequenceBf16;
  larger.kvPages = 1000; // tiny's default: 4 x 512 / 16 = 128
  oneSequence.kvPages = 32;
  oneSequenceBf16.maxBatch = 4;
  oneSequenceBf16.kvPages = 512; // 8192 / 16
  out.push_back({"tiny.toml --kv-pages 1000", load("tiny.toml", larger), 3033344});
  out.push_back({"tiny.toml --kv-pages 32", load("tiny.toml", oneSequence), 3033344});
  out.push_back({"llama-3.2-1b.toml --max-batch 4 --kv-pages 512",
                 load("llama-3.2-1b.toml", oneSequenceBf16), 1235814400});
  return out;
}

} // namespace

TEST(Models, EveryConfigIsTested) {
  size_t files = 0;
  for (const auto &e : fs::directory_iterator(fs::path(KVPLAN_SOURCE_DIR) / "models"))
    if (e.path().extension() == ".toml") {
      ++files;
      std::string name = e.path().filename().string();
      EXPECT_TRUE(std::any_of(std::begin(kModels), std::end(kModels),
                              [&](const Known &k) { return name == k.file; }))
          << name << " has no entry in kModels";
    }
  EXPECT_EQ(files, std::size(kModels));
}

/// The most arena bytes alive at once, from the plan's own dataflow: a value
/// lives from the step that writes it (the arguments: from the start) to
/// the last step that reads it; a KV-cache view is read, when its reader
/// runs, through the page table and positions its cache read was given.
/// Each value takes a multiple of the planner's 256-byte alignment.
int64_t peakLiveBytes(const EntryPoint &ep) {
  std::map<int64_t, std::pair<int64_t, int64_t>> span; // value -> (first, last) step
  std::map<int64_t, int64_t> bytes;
  std::map<int64_t, std::vector<int64_t>> viewReads;  // layer -> values its views read
  const int64_t end = int64_t(ep.steps.size());
  for (const Operand &a : ep.args)
    if (a.kind == OperandKind::arena) {
      span[a.value] = {-1, -1};
      bytes[a.value] = alignUp(a.bytes(), 256);
    }
  for (int64_t i = 0; i < end; ++i) {
    const Step &st = ep.steps[size_t(i)];
    if (const KVCacheReadOp *r = st.tryAs<KVCacheReadOp>())
      viewReads[r->layer] = {r->pageTable.value, r->positions.value};
    forEachOperand(st, [&](const char *, const Operand &o, bool result) {
      if (o.kind == OperandKind::kvView && !result)
        for (int64_t v : viewReads[o.layer]) span[v].second = std::max(span[v].second, i);
      if (o.kind != OperandKind::arena) return;
      if (result) {
        span[o.value] = {i, i};
        bytes[o.value] = alignUp(o.bytes(), 256);
      } else {
        span[o.value].second = std::max(span[o.value].second, i);
      }
    });
  }
  for (const Operand &r : ep.results) span[r.value].second = end;
  int64_t peak = 0;
  for (int64_t i = -1; i <= end; ++i) {
    int64_t live = 0;
    for (const auto &[v, s] : span)
      if (s.first <= i && i <= s.second) live += bytes[v];
    peak = std::max(peak, live);
  }
  return peak;
}

TEST(Models, CompileWithExactBills) {
  for (const Billed &k : billedConfigs()) {
    SCOPED_TRACE(k.what);
    const ModelConfig &cfg = k.cfg;
    EXPECT_EQ(parameterCount(cfg.model), k.params);
    CompileOutput out = compileModel(cfg);
    MemoryBill b = out.plan.memoryBill();
    const ModelSpec &m = cfg.model;
    const CompileSettings &s = cfg.compile;
    EXPECT_EQ(b.params, k.params);
    // Each entry at the type its parts take: a mixture's stacks of experts
    // the experts' (expert_dtype), other matrices the weight type, vectors
    // the weight type where it is a float one, else f32; Gemma's vectors
    // (its norms, 1 + an offset) and gpt-oss's attention sinks f32 at any
    // type. Its bytes are those its type's layout documents.
    std::map<std::string, DType> want;
    for (const WeightDecl &w : weightTable(m))
      want[w.name] = w.experts()                            ? s.expertWeightDtype()
                     : w.matrix()                           ? s.weightDtype
                     : w.f32 || (m.gemma() && w.shape.size() == 1) ||
                               !isFloatDType(s.weightDtype) ? DType::f32
                                                            : s.weightDtype;
    int64_t bytes = 0, elements = 0;
    for (const WeightEntry &w : out.plan.weights) {
      for (const std::string &part : w.parts.empty() ? std::vector<std::string>{w.name} : w.parts)
        EXPECT_EQ(dtypeName(w.dtype), dtypeName(want.at(part))) << w.name << " (" << part << ")";
      bytes += documentedBytes(w.shape, w.dtype);
      elements += w.numElements();
    }
    EXPECT_EQ(elements, k.params);
    EXPECT_EQ(b.weightsBytes, bytes);
    // The weights section: tensors in table order, each at the next multiple
    // of 64 bytes.
    int64_t blob = 0;
    for (const WeightEntry &w : out.plan.weights) {
      EXPECT_EQ(int64_t(w.offset), alignUp(blob, int64_t(64))) << w.name;
      blob = int64_t(w.offset + w.bytes);
    }
    EXPECT_EQ(b.weightsBlobBytes, blob);
    // The pool is the kv_pages setting, whatever max_batch is.
    EXPECT_EQ(out.plan.kvCache.pages, s.kvPages);
    EXPECT_EQ(out.plan.kvCache.pagesPerSequence, s.maxSeqLen / s.pageSize);
    // Where some layers slide and others read every key, the sliding
    // layers' pool is window_kv_pages pages: Gemma 3 1B's window of 512 and
    // calls of 512 rows span at most 15 + 511 + 512 = 1,038 positions from
    // a page's start, 65 pages of 16; Gemma 2 2B's window of 4,096, 15 +
    // 4,095 + 512 = 4,622 positions, 289 pages.
    int64_t windowed = 0;
    if (!m.fullAttentionLayers.empty() && m.slidingWindow < s.maxSeqLen)
      windowed = m.numLayers - int64_t(m.fullAttentionLayers.size());
    if (m.name == "gemma-3-1b") {
      EXPECT_EQ(s.windowKvPages, 65);
    }
    if (m.name == "gemma-2-2b") {
      EXPECT_EQ(s.windowKvPages, 289);
    }
    EXPECT_EQ(out.plan.windowCache.layers, windowed);
    EXPECT_EQ(b.kvCacheBytes, 2 * m.numKvHeads * m.headDim * s.pageSize * dtypeBytes(s.kvDtype) *
                                  ((m.numLayers - windowed) * s.kvPages +
                                   windowed * s.windowKvPages));
    EXPECT_EQ(b.kvCacheBytes, kvCacheBytes(m, s));
    ASSERT_EQ(b.arenaBytes.size(), 2u);
    for (const auto &[name, ep] : out.plan.entryPoints) {
      SCOPED_TRACE(name);
      int64_t all = 0;
      for (const Step &st : ep.steps)
        for (const Operand *o : stepOutputs(st))
          if (o->kind == OperandKind::arena) all += alignUp(o->bytes(), 256);
      for (const Operand &a : ep.args)
        if (a.kind == OperandKind::arena) all += alignUp(a.bytes(), 256);
      // Never less than what is alive at once, and reuse makes it far less
      // than every tensor side by side.
      EXPECT_GE(b.arenaBytes.at(name), peakLiveBytes(ep));
      EXPECT_LT(b.arenaBytes.at(name), all / 2);
    }
    EXPECT_EQ(b.arenaAllocBytes, std::max(b.arenaBytes.at("prefill"), b.arenaBytes.at("decode")));
    // One RoPE table per entry point (every layer's rope shares its
    // frequencies; Gemma's local and global layers have one each): head_dim
    // / 2 doubles (twice that with partial RoPE's attention factor: the
    // pairs' amplitudes) and rows x head_dim floats, each rounded up to 64
    // bytes. Nothing per thread.
    const bool amplitudes = m.rope.rotaryDim > 0 && m.rope.attentionFactor != 1;
    const int64_t tables = m.rope.localTheta > 0 && !m.fullAttentionLayers.empty() ? 2 : 1;
    int64_t rope = 0;
    for (const auto &[name, ep] : out.plan.entryPoints)
      rope += tables * (alignUp(m.headDim / 2 * (amplitudes ? 16 : 8), 64) +
                        alignUp(ep.rows * m.headDim * 4, 64));
    // A mixture of experts' scratch beside them, for a prefill chunk's
    // rows (the largest step): the router's probabilities, each row's k
    // choices (an id and a weight), their slots, each expert's first slot,
    // then each slot's input, gate, up and output rows, and a gated shared
    // expert's gate for each row, each part rounded up to 64 bytes.
    int64_t scratch = 0;
    if (m.moe()) {
      const int64_t rows = s.prefillChunk, slots = rows * m.expertsPerToken;
      for (int64_t part : {rows * m.numExperts * 4, slots * 8, slots * 4, (m.numExperts + 1) * 4,
                           slots * m.hiddenSize * 4, slots * m.expertWidth() * 4,
                           slots * m.expertWidth() * 4, slots * m.hiddenSize * 4,
                           m.sharedExpertGate ? rows * 4 : 0})
        scratch += alignUp(part, int64_t(64));
    }
    EXPECT_EQ(b.workspaceBytes, rope + scratch);
    EXPECT_EQ(b.totalBytes, blob + b.kvCacheBytes + b.arenaAllocBytes + rope + scratch);
    // The fused weights still account for every parameter once: q|k|v (and
    // their biases), the FFN's gate|up (a mixture of experts has none, but
    // for a shared expert's).
    int64_t fusedParts = 0;
    for (const WeightEntry &w : out.plan.weights)
      fusedParts += int64_t(w.parts.size());
    EXPECT_EQ(fusedParts, m.numLayers * (3 + (m.attentionBias ? 3 : 0) +
                                         (!m.moe() || m.sharedExpert() ? 2 : 0)));
  }
}

/// Bytes the process has taken from the allocator (heap and mapped blocks).
int64_t heapBytes() {
  struct mallinfo2 mi = mallinfo2();
  return int64_t(mi.uordblks + mi.hblkhd);
}

// What the CPU executor allocates at load is the bill, line for line, for
// every model and any thread count, as the allocator itself counts it.
TEST(Models, TheCpuExecutorAllocatesExactlyTheBill) {
  for (const Billed &k : billedConfigs()) {
    SCOPED_TRACE(k.what);
    CompileOutput out = compileModel(k.cfg);
    const MemoryBill b = out.plan.memoryBill();
    // The weights are the caller's (an artifact's mapping): reserved address
    // space that any read at load would fault on.
    void *weights = mmap(nullptr, size_t(b.weightsBlobBytes), PROT_NONE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    ASSERT_NE(weights, MAP_FAILED);
    int64_t steps = 0;
    for (const auto &[name, ep] : out.plan.entryPoints) steps += int64_t(ep.steps.size());
    for (int threads : {1, 3}) {
      const int64_t before = heapBytes();
      {
        CpuExecutor cpu(out.plan, static_cast<const char *>(weights),
                        uint64_t(b.weightsBlobBytes), threads);
        const int64_t grown = heapBytes() - before;
        std::map<std::string, int64_t> lines;
        int64_t sum = 0;
        for (const Allocation &a : cpu.allocations()) {
          lines[a.what] += a.bytes;
          sum += a.bytes;
        }
        EXPECT_EQ(lines["arena"], b.arenaAllocBytes);
        EXPECT_EQ(lines["KV cache"], b.kvCacheBytes);
        EXPECT_EQ(lines["workspace"], b.workspaceBytes);
        EXPECT_EQ(lines.size(), 3u);
        EXPECT_EQ(sum + b.weightsBlobBytes, b.totalBytes);
        // Bookkeeping (the executor's copy of the plan and its bound steps,
        // about 2 KiB a step) is not billed: nothing else may be.
        EXPECT_GE(grown, sum);
        EXPECT_LT(grown - sum, 4096 * steps) << "unbilled allocations at load";
      }
    }
    munmap(weights, size_t(b.weightsBlobBytes));
  }
}

// Under a sliding window the default pool is the pages one sequence holds
// at once: a prefill chunk of 512 from position S reads keys from
// S - (window - 1) on, at most (16 - 1) + (window - 1) + 512 positions from
// a page's start, in pages of 16.
TEST(Models, AWindowedModelsDefaultPoolIsItsWindowsPages) {
  const ModelConfig mistral = load("mistral-7b-v0.1.toml");
  EXPECT_EQ(mistral.compile.maxSeqLen, 32768);
  EXPECT_EQ(mistral.compile.kvPages, 289); // 4,622 positions, of 2,048 pages at full context
  // 2 x 32 layers x 8 KV heads x 128 x 289 x 16 tokens x 2 bytes: 578 MiB,
  // where the whole context would take 4 GiB.
  EXPECT_EQ(kvCacheBytes(mistral.model, mistral.compile), 606076928);
  const ModelConfig phi = load("phi-3-mini-4k.toml");
  EXPECT_EQ(phi.compile.kvPages, 161); // 2,573 positions, of 256 pages
}

// memory_budget: the pools not given take every page the rest of the budget
// pays for, the bill as with those pages given; too small a budget is refused
// naming the field and the least bill.
TEST(Models, AMemoryBudgetGivesThePoolsEveryPageThatFits) {
  auto billOf = [](const ModelConfig &cfg, bool cuda = false) {
    CompileOutput out = compileModel(cfg);
    if (cuda) addCudaCode(out, {});
    return std::make_pair(out.plan, out.plan.memoryBill().totalBytes);
  };
  // tiny: a page is 2 x 4 layers x 4 KV heads x 32 x 16 tokens x 4 bytes;
  // one sequence of 512 tokens holds 32 pages.
  const int64_t page = 65536;
  for (bool cuda : {false, true}) {
    SCOPED_TRACE(cuda ? "cuda" : "cpu");
    SettingOverrides fewest, budget;
    fewest.kvPages = 32;
    // The cuda target's bill keeps 256 MiB for the CUDA runtime and cuBLAS.
    budget.memoryBudget = int64_t(cuda ? 320 : 20) << 20;
    if (cuda) fewest.target = budget.target = Target::cuda;
    const int64_t least = billOf(load("tiny.toml", fewest), cuda).second;
    const int64_t pages = 32 + (*budget.memoryBudget - least) / page;
    const auto [plan, bill] = billOf(load("tiny.toml", budget), cuda);
    EXPECT_EQ(plan.kvCache.pages, pages);
    EXPECT_EQ(plan.settings.memoryBudget, *budget.memoryBudget);
    EXPECT_LE(bill, *budget.memoryBudget);
    EXPECT_GT(bill + page, *budget.memoryBudget);
    SettingOverrides given = fewest;
    given.kvPages = pages;
    EXPECT_EQ(bill, billOf(load("tiny.toml", given), cuda).second);
    // The plan reader holds an artifact to its budget.
    nlohmann::json j = toJson(plan);
    EXPECT_NO_THROW(planFromJson(j));
    j["settings"]["memory_budget"] = bill - 1;
    try {
      planFromJson(j);
      ADD_FAILURE() << "a bill past the budget was read";
    } catch (const std::exception &e) {
      EXPECT_NE(std::string(e.what()).find("memory bill of " + std::to_string(bill) +
                                           " bytes is more than its settings' memory_budget of " +
                                           std::to_string(bill - 1)),
                std::string::npos)
          << e.what();
    }
  }

  // Under tensor parallelism the budget is one rank's: 2 of tiny's 4 KV
  // heads a rank, a page of 32,768 bytes.
  SettingOverrides ranks;
  ranks.tensorParallel = 2;
  ranks.memoryBudget = int64_t(12) << 20;
  const int64_t rankBill = billOf(load("tiny.toml", ranks)).second;
  EXPECT_LE(rankBill, *ranks.memoryBudget);
  EXPECT_GT(rankBill + page / 2, *ranks.memoryBudget);

  // Gemma 3 1B: a page of its 4 global layers is 2 x 4 x 256 x 16 x 2 bytes,
  // of its 22 sliding ones 2 x 22 x 256 x 16 x 2; one sequence holds 512 and
  // 65. Both pools free, they hold as many sequences (within a few pages),
  // and not one page more of either fits.
  const int64_t mainPage = 65536, winPage = 360448;
  SettingOverrides gemma;
  gemma.memoryBudget = int64_t(5) << 29; // 2.5 GiB
  const auto [g, gBill] = billOf(load("gemma-3-1b.toml", gemma));
  const int64_t P = g.kvCache.pages, W = g.windowCache.pages;
  EXPECT_LE(gBill, *gemma.memoryBudget);
  EXPECT_GT(gBill + std::min(mainPage, winPage), *gemma.memoryBudget);
  EXPECT_GT(P, 5 * 512);
  EXPECT_NEAR(double(P) / 512, double(W) / 65, 0.05) << P << " and " << W << " pages";
  SettingOverrides both;
  both.kvPages = P;
  both.windowKvPages = W;
  EXPECT_EQ(gBill, billOf(load("gemma-3-1b.toml", both)).second);
  // kv_pages given: the sliding layers' pool takes the rest.
  SettingOverrides mainGiven = gemma, fewestWin = both;
  mainGiven.kvPages = fewestWin.kvPages = 600;
  fewestWin.windowKvPages = 65;
  const int64_t least = billOf(load("gemma-3-1b.toml", fewestWin)).second;
  EXPECT_EQ(billOf(load("gemma-3-1b.toml", mainGiven)).first.windowCache.pages,
            65 + (*gemma.memoryBudget - least) / winPage);

  // Too small: the least bill named, and the field as the flag or the file
  // wrote it.
  SettingOverrides small;
  small.memoryBudget = int64_t(2) << 20;
  try {
    compileModel(load("tiny.toml", small));
    ADD_FAILURE() << "a budget of 2 MiB compiled";
  } catch (const InputError &e) {
    SettingOverrides fewest;
    fewest.kvPages = 32;
    const std::string least = withCommas(billOf(load("tiny.toml", fewest)).second);
    EXPECT_NE(std::string(e.what()).find("field '--memory-budget': 2.00 MiB (2,097,152 bytes) "
                                         "is less than the plan's bill with the fewest KV-cache "
                                         "pages"),
              std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("(" + least + " bytes)"), std::string::npos) << e.what();
  }
  ModelConfig toml = parseTomlSpec(
      "[model]\nname = \"t\"\narchitecture = \"llama\"\nhidden_size = 64\n"
      "intermediate_size = 96\nnum_layers = 2\nnum_heads = 4\nnum_kv_heads = 2\n"
      "vocab_size = 97\nmax_position_embeddings = 128\nrms_norm_eps = 1e-5\n"
      "bos_token_id = 1\neos_token_id = 2\n[compile]\nmax_seq_len = 128\nkv_pages = 64\n"
      "memory_budget = \"64KiB\"\n",
      "t.toml", [](const std::string &w) { ADD_FAILURE() << w; });
  validate(toml);
  EXPECT_EQ(toml.compile.memoryBudget, 65536);
  try {
    compileModel(toml);
    ADD_FAILURE() << "a budget of 64 KiB compiled";
  } catch (const InputError &e) {
    EXPECT_NE(std::string(e.what()).find("t.toml:17: field 'compile.memory_budget': 64.00 KiB "
                                         "(65,536 bytes) is less than the plan's bill of "),
              std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("fewer kv_pages"), std::string::npos) << e.what();
  }
}

TEST(Models, Llama31_8BInBf16) {
  CompileOutput out = compileModel(load("llama-3.1-8b.toml"));
  MemoryBill b = out.plan.memoryBill();
  EXPECT_EQ(b.params, 8030261248);
  EXPECT_EQ(b.weightsBytes, 16060522496);
}
