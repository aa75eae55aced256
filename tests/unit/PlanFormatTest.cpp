// The plan's JSON form and the .kvp container: round trips, and every kind
// of damage is an InputError that says what is wrong.
#include "plan/Artifact.h"
#include "plan/Cost.h"
#include "runtime/cpu/CpuExecutor.h"

#include <gtest/gtest.h>

#include <cstring>
#include <malloc.h>
#include <functional>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <tuple>
#include <unistd.h>

using namespace kvplan;
namespace fs = std::filesystem;

namespace {

Operand tensor(int64_t value, int64_t offset, std::vector<int64_t> shape, DType t = DType::f32,
               std::string name = "") {
  Operand o;
  o.kind = OperandKind::arena;
  o.name = std::move(name);
  o.value = value;
  o.offset = offset;
  o.shape = std::move(shape);
  o.dtype = t;
  return o;
}

Operand cacheOperand() {
  Operand o;
  o.kind = OperandKind::kvCache;
  return o;
}

Operand view(bool values) {
  Operand o;
  o.kind = OperandKind::kvView;
  o.layer = 0;
  o.values = values;
  return o;
}

/// One decode step of a one-layer model, every kind of field in it: a
/// weight, an optional bias, variadic results, an f64 and an i64 attribute,
/// RoPE scaling and frequency factors, a mask, the cache and its views.
Plan samplePlan() {
  Plan p;
  p.formatVersion = int(kArtifactFormatVersion);
  p.kvplanVersion = "0.1.0";
  p.gitHash = "abc";
  p.model.name = "sample";
  p.model.hiddenSize = 8;
  p.model.intermediateSize = 16;
  p.model.numLayers = 1;
  p.model.numHeads = 2;
  p.model.numKvHeads = 1;
  p.model.headDim = 4;
  p.model.vocabSize = 10;
  p.model.slidingWindow = 24; // its attention's window
  p.model.maxPositions = 32;
  p.model.eosTokenIds = {2, 3};
  p.model.rope.type = RopeType::llama3;
  p.settings.weightDtype = DType::bf16;
  p.settings.kvDtype = DType::bf16;
  p.settings.maxSeqLen = 32;
  p.settings.prefillChunk = 4;
  p.settings.pageSize = 8;
  p.settings.kvPages = 4; // one sequence of 32 tokens
  p.weights = {{"tok_embeddings", {10, 8}, DType::bf16, 0, 0, {}},
               {"layers.0.attention_norm", {8}, DType::bf16, 0, 0, {}},
               {"layers.0.attention.wqkv", {16, 8}, DType::bf16, 0, 0,
                {"layers.0.attention.wq", "layers.0.attention.wk", "layers.0.attention.wv"}},
               {"layers.0.attention.bqkv", {16}, DType::bf16, 0, 0,
                {"layers.0.attention.bq", "layers.0.attention.bk", "layers.0.attention.bv"}},
               {"output", {10, 8}, DType::bf16, 0, 0, {}}};
  p.assignWeightOffsets();
  p.kvCache = {1, 4, 8, 1, 4, 4, DType::bf16};
  EntryPoint ep;
  ep.name = "decode";
  ep.rows = 1;
  ep.arenaBytes = 1024;
  // Steps name no operand; the arguments carry their roles.
  const Operand tokens = tensor(0, 0, {1}, DType::i32), positions = tensor(1, 64, {1}, DType::i32),
                table = tensor(2, 128, {1, 4}, DType::i32);
  const Operand cache = cacheOperand();
  ep.args = {tokens, positions, table, cache};
  for (auto [i, role] : {std::pair<int, const char *>{0, "tokens"}, {1, "positions"},
                         {2, "page_table"}, {3, "kv_cache"}})
    ep.args[size_t(i)].name = role;
  const Operand x = tensor(3, 256, {1, 8}), n = tensor(4, 320, {1, 8}), q = tensor(5, 384, {1, 8}),
                k = tensor(6, 448, {1, 4}), v = tensor(7, 512, {1, 4}), qr = tensor(8, 576, {1, 8}),
                att = tensor(9, 640, {1, 8}), logits = tensor(10, 704, {1, 10});
  EmbeddingOp emb{"tok_embeddings", tokens, x};
  RMSNormOp norm{x, n, "layers.0.attention_norm", 1e-5};
  LinearOp qkv{"layers.0.attention.wqkv", n, std::string("layers.0.attention.bqkv"), {q, k, v}};
  RopeOp rope{q, positions, qr,
              RopeParams{4, 500000.0, RopeScaling{8.0, 1.0, 4.0, 8192}, {1.0, 2.5}}};
  KVCacheWriteOp write{k, v, cache, table, positions, cacheOperand(), 0};
  KVCacheReadOp read{cache, table, positions, view(false), view(true), 0};
  AttentionOp attn{AttentionMask::cache, qr, view(false), view(true), att, 2, 1, 4, 0.5, 24};
  LogitsOp head{"output", att, logits};
  ep.steps = {{emb, "tok_embeddings"},
              {norm, "layers.0.attention_norm"},
              {qkv, "layers.0.attention.wq + layers.0.attention.wk"},
              {rope, "layers.0.attention.rope_q"},
              {write, "layers.0.attention"},
              {read, "layers.0.attention"},
              {attn, "layers.0.attention"},
              {head, "output"}};
  ep.results = {logits};
  p.entryPoints["decode"] = ep;
  return p;
}

std::string readAll(const fs::path &p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void writeAll(const fs::path &p, const std::string &bytes) {
  std::ofstream(p, std::ios::binary | std::ios::trunc) << bytes;
}

class ArtifactTest : public ::testing::Test {
protected:
  void SetUp() override {
    dir = fs::temp_directory_path() /
          ("kvplan-artifact-" + std::string(::testing::UnitTest::GetInstance()
                                                ->current_test_info()->name()));
    fs::create_directories(dir);
    path = (dir / "a.kvp").string();
    ArtifactWriter w;
    w.addSection("plan", toJson(samplePlan()).dump());
    w.addSection("ir", "module {}\n");
    w.write(path);
    good = readAll(path);
  }
  void TearDown() override { fs::remove_all(dir); }

  /// The message opening the damaged bytes gives.
  std::string openError(const std::string &bytes) {
    writeAll(path, bytes);
    try {
      Artifact::open(path);
    } catch (const InputError &e) {
      return e.what();
    }
    return "(no error)";
  }

  fs::path dir;
  std::string path, good;
};

} // namespace

TEST(PlanJson, RoundTripKeepsEveryField) {
  const Plan q = planFromJson(toJson(samplePlan()));
  EXPECT_EQ(q.weights[2].parts.size(), 3u);
  const EntryPoint &ep = q.entryPoints.at("decode");
  ASSERT_EQ(ep.steps.size(), 8u);
  EXPECT_EQ(ep.arg("page_table")->value, 2);
  EXPECT_EQ(ep.arg("page_table")->shape, (std::vector<int64_t>{1, 4}));
  EXPECT_EQ(ep.arg("kv_cache")->kind, OperandKind::kvCache);
  const std::vector<OpKind> kinds = {OpKind::embedding, OpKind::rmsNorm,      OpKind::linear,
                                     OpKind::rope,      OpKind::kvCacheWrite, OpKind::kvCacheRead,
                                     OpKind::attention, OpKind::logits};
  for (size_t i = 0; i < kinds.size(); ++i) EXPECT_EQ(ep.steps[i].kind(), kinds[i]) << i;
  EXPECT_EQ(ep.steps[1].as<RMSNormOp>().eps, 1e-5);
  EXPECT_EQ(ep.steps[1].as<RMSNormOp>().weight, "layers.0.attention_norm");
  const LinearOp &qkv = ep.steps[2].as<LinearOp>();
  EXPECT_EQ(qkv.bias.value_or("none"), "layers.0.attention.bqkv");
  ASSERT_EQ(qkv.results.size(), 3u);
  EXPECT_EQ(qkv.results[1].offset, 448);
  EXPECT_EQ(qkv.results[2].value, 7);
  EXPECT_EQ(qkv.outFeatures(), 16);
  EXPECT_EQ(ep.steps[2].loc, "layers.0.attention.wq + layers.0.attention.wk");
  const RopeOp &rope = ep.steps[3].as<RopeOp>();
  EXPECT_EQ(rope.rope.theta, 500000.0);
  ASSERT_TRUE(rope.rope.scaling);
  EXPECT_EQ(rope.rope.scaling->highFreqFactor, 4.0);
  EXPECT_EQ(rope.rope.scaling->originalMaxPositions, 8192);
  EXPECT_EQ(rope.rope.freqFactors, (std::vector<double>{1.0, 2.5}));
  EXPECT_EQ(ep.steps[4].as<KVCacheWriteOp>().layer, 0);
  const AttentionOp &attn = ep.steps[6].as<AttentionOp>();
  EXPECT_EQ(attn.mask, AttentionMask::cache);
  EXPECT_EQ(attn.key.kind, OperandKind::kvView);
  EXPECT_FALSE(attn.key.values);
  EXPECT_TRUE(attn.value.values);
  EXPECT_EQ(attn.numHeads, 2);
  EXPECT_EQ(attn.scale, 0.5);
  EXPECT_EQ(attn.window, 24);
  EXPECT_EQ(ep.results[0].value, 10);
  EXPECT_EQ(stepWeights(ep.steps[2]),
            (std::vector<std::string>{"layers.0.attention.wqkv", "layers.0.attention.bqkv"}));
}

// The format docs/artifact.md describes, written out by hand.
TEST(PlanJson, AStepIsItsOpsFieldsByName) {
  const nlohmann::json step = toJson(samplePlan())["entry_points"]["decode"]["steps"][1];
  const nlohmann::json expected = nlohmann::json::parse(R"({
    "op": "rms_norm", "loc": "layers.0.attention_norm",
    "input": {"kind": "arena", "value": 3, "offset": 256, "shape": [1, 8], "dtype": "f32"},
    "weight": "layers.0.attention_norm", "eps": 1e-05,
    "result": {"kind": "arena", "value": 4, "offset": 320, "shape": [1, 8], "dtype": "f32"}})");
  EXPECT_EQ(step, expected) << step.dump(1);
  const nlohmann::json read = toJson(samplePlan())["entry_points"]["decode"]["steps"][5];
  EXPECT_EQ(read["keys"], nlohmann::json::parse(R"({"kind": "kv_view", "layer": 0, "part": "keys"})"));
  EXPECT_EQ(read["cache"], nlohmann::json::parse(R"({"kind": "kv_cache"})"));
}

TEST(PlanJson, MemoryBillIsExact) {
  Plan p = samplePlan();
  MemoryBill b = p.memoryBill();
  EXPECT_EQ(b.params, 10 * 8 + 8 + 16 * 8 + 16 + 10 * 8);
  EXPECT_EQ(b.weightsBytes, 2 * b.params);
  // Each weight starts at a multiple of 64: 160, 16 (at 192), 256 (at 256),
  // 32 (at 512), 160 (at 576) bytes.
  EXPECT_EQ(b.weightsBlobBytes, 576 + 160);
  for (const WeightEntry &w : p.weights) EXPECT_EQ(w.offset % kWeightAlignment, 0u) << w.name;
  // [layers][2][pages][kv_heads][page_size][head_dim] x bf16
  EXPECT_EQ(b.kvCacheBytes, 1 * 2 * 4 * 1 * 8 * 4 * 2);
  EXPECT_EQ(b.arenaBytes.at("decode"), 1024);
  // One RoPE table: 2 frequencies (doubles) and one row of 4 floats, each
  // part rounded up to 64 bytes; nothing per thread.
  EXPECT_EQ(b.workspaceBytes, 64 + 64);
  EXPECT_EQ(b.totalBytes, b.weightsBlobBytes + b.kvCacheBytes + 1024 + 128);
  EXPECT_EQ(b.hostPinnedBytes + b.reserveBytes, 0);
}

/// The message planFromJson gives for the sample's plan after `damage`.
std::string readError(const std::function<void(nlohmann::json &)> &damage) {
  nlohmann::json j = toJson(samplePlan());
  damage(j);
  try {
    planFromJson(j);
  } catch (const InputError &e) {
    return e.what();
  }
  return "(no error)";
}

nlohmann::json &step(nlohmann::json &j, int i) { return j["entry_points"]["decode"]["steps"][i]; }

TEST(PlanJson, EachDamageNamesTheStepAndField) {
  const std::pair<std::function<void(nlohmann::json &)>, std::string> cases[] = {
      {[](nlohmann::json &j) { j.erase("kv_cache"); }, "the plan has no 'kv_cache'"},
      // 0 as a file has it (nlohmann::json reads it as unsigned) is below
      // the least (the fuzzer's artifact: ranks 0, then a division by 0).
      {[](nlohmann::json &j) { j["settings"]["tensor_parallel"] = nlohmann::json::parse("0"); },
       "settings field 'tensor_parallel' is 0, outside [1, 64]"},
      {[](nlohmann::json &j) { j["model"]["num_layers"] = nlohmann::json::parse("0"); },
       "model field 'num_layers' is 0, outside [1, "},
      {[](nlohmann::json &j) { j["weights"][0]["dtype"] = "f8"; }, "names no element type"},
      {[](nlohmann::json &j) { step(j, 1)["op"] = "rms_norm2"; },
       "step 1 of entry point 'decode' is op 'rms_norm2', which this kvplan does not know"},
      {[](nlohmann::json &j) { step(j, 1).erase("eps"); },
       "step 1 of entry point 'decode' ('rms_norm' at layers.0.attention_norm) has no field "
       "'eps' (a number)"},
      {[](nlohmann::json &j) { step(j, 1)["epsilon"] = 1e-5; },
       "has a field 'epsilon' its op does not have"},
      {[](nlohmann::json &j) { step(j, 4)["layer"] = "0"; }, "attribute 'layer' is not an integer"},
      {[](nlohmann::json &j) { step(j, 3)["freq_factors"] = {1.0, 2.0, 3.0}; },
       "has 3 freq_factors for head_dim 4 (expected head_dim / 2)"},
      {[](nlohmann::json &j) { step(j, 3)["freq_factors"] = {1.0, -2.0}; },
       "attribute 'freq_factors'[1] is not a positive finite number"},
      // Partial RoPE: an even part of the head, one factor per rotated pair.
      {[](nlohmann::json &j) { step(j, 3)["rotary_dim"] = 3; },
       "has rotary_dim 3 for head_dim 4 (expected an even number from 2 to head_dim)"},
      {[](nlohmann::json &j) { step(j, 3)["rotary_dim"] = 6; },
       "has rotary_dim 6 for head_dim 4"},
      {[](nlohmann::json &j) {
         step(j, 3)["rotary_dim"] = 2;
         step(j, 3)["freq_factors"] = {1.0, 2.0};
       },
       "has 2 freq_factors for rotary_dim 2 (expected rotary_dim / 2)"},
      {[](nlohmann::json &j) { step(j, 3)["attention_factor"] = -1.5; },
       "has attention_factor -1.5 (expected a positive number)"},
      {[](nlohmann::json &j) { step(j, 3)["freq_factors"] = 2.0; },
       "attribute 'freq_factors' is not a list of numbers"},
      {[](nlohmann::json &j) { step(j, 1)["result"]["offset"] = 1e30; },
       "field 'result' offset is not an integer (1e+30)"},
      {[](nlohmann::json &j) { step(j, 1)["result"]["shape"] = {1, -8}; }, "outside [1, "},
      {[](nlohmann::json &j) { step(j, 6)["window"] = 0; },
       "step 6 of entry point 'decode' ('attention' at layers.0.attention) attribute 'window' is "
       "0, outside [1, "},
      {[](nlohmann::json &j) { step(j, 6)["window"] = 25; },
       "step 6 ('attention' at layers.0.attention) of entry point 'decode' attribute 'window' is "
       "25 and the model's sliding_window 24"},
      {[](nlohmann::json &j) { step(j, 6)["key"] = {{"kind", "kv_cache"}}; },
       "field 'key' is not a tensor or a KV-cache view"},
      {[](nlohmann::json &j) { step(j, 1)["input"]["value"] = 9; },
       "reads value 9, which no earlier step defines"},
      {[](nlohmann::json &j) { step(j, 2)["results"][0]["offset"] = 320; },
       "writes over its own input"},
      {[](nlohmann::json &j) { step(j, 3)["input"]["offset"] = 640; },
       "reads value 5 where it does not live"},
      {[](nlohmann::json &j) { step(j, 7)["result"]["offset"] = 1000; },
       "outside the arena of 1024"},
      {[](nlohmann::json &j) { step(j, 2)["weight"] = "layers.0.attention.wqkv2"; },
       "names weight 'layers.0.attention.wqkv2', which is not in the weight table"},
      {[](nlohmann::json &j) { step(j, 4)["layer"] = 3; }, "names layer 3 of a cache of 1"},
      {[](nlohmann::json &j) { step(j, 3)["result"]["offset"] = 448; },
       "reads value 6 after a later write overwrote it"},
      {[](nlohmann::json &j) {
         step(j, 1)["result"]["offset"] = 64;
         step(j, 2)["input"]["offset"] = 64;
       },
       "step 3 ('rope' at layers.0.attention.rope_q) of entry point 'decode' reads value 1 after "
       "a later write overwrote it"},
      // The attention reads, through its views, the positions and page
      // table the cache read was given.
      {[](nlohmann::json &j) { step(j, 6)["result"]["offset"] = 128; },
       "step 6 ('attention' at layers.0.attention) of entry point 'decode' writes over its own "
       "input (value 2)"},
      {[](nlohmann::json &j) { j["entry_points"]["decode"]["steps"].erase(5); },
       "reads a view of layer 0 that no kv_cache_read made"},
      // The cache is the pool the settings name, and holds one sequence.
      {[](nlohmann::json &j) { j["kv_cache"]["pages"] = 8; },
       "the KV cache has 8 pages and the settings' kv_pages is 4"},
      {[](nlohmann::json &j) { j["settings"]["kv_pages"] = 12; },
       "the KV cache has 4 pages and the settings' kv_pages is 12"},
      {[](nlohmann::json &j) {
         j["kv_cache"]["pages"] = 3;
         j["settings"]["kv_pages"] = 3;
       },
       "the KV cache has 3 pages, fewer than the 4 one sequence at full context holds at once "
       "(pages_per_sequence)"},
      // Under a window of 4 a sequence holds 3 pages of 8 at once: a call of
      // 4 rows reads from 3 keys before it, at most (8 - 1) + 3 + 4 = 14
      // positions from a page's start (2 pages), and its last full page
      // stays held until the next fills, for the prefix cache to chain to.
      {[](nlohmann::json &j) {
         step(j, 6)["window"] = 4;
         j["model"]["sliding_window"] = 4;
         j["kv_cache"]["pages"] = 2;
         j["settings"]["kv_pages"] = 2;
       },
       "the KV cache has 2 pages, fewer than the 3 one sequence at full context holds at once "
       "(under a sliding window of 4 keys)"},
      {[](nlohmann::json &j) { j["kv_cache"]["page_size"] = 4; },
       "the KV cache has pages of 4 tokens and the settings' page_size is 8"},
  };
  for (const auto &[damage, want] : cases) {
    const std::string msg = readError(damage);
    EXPECT_NE(msg.find(want), std::string::npos) << "want: " << want << "\ngot: " << msg;
    EXPECT_NE(msg.find("recompile"), std::string::npos) << msg;
  }
  EXPECT_EQ(readError([](nlohmann::json &) {}), "(no error)");
}

Plan int4Plan();

// A step's prefetch (--prefetch-weights, the cuda target) reads back as
// written; one that names no weight, rows past the weight's, rows of a
// quantized weight or no rows, or that is not a list of triples, is refused,
// named.
TEST(PlanJson, AStepsPrefetchReadsBackAndIsChecked) {
  nlohmann::json j = toJson(samplePlan());
  step(j, 1)["prefetch"] = {{"layers.0.attention.wqkv", 0, 16}, {"output", 2, 10}};
  const Plan p = planFromJson(j);
  const std::vector<WeightRows> want = {{"layers.0.attention.wqkv", 0, 16}, {"output", 2, 10}};
  EXPECT_EQ(p.entryPoints.at("decode").steps[1].prefetch, want);
  EXPECT_TRUE(p.entryPoints.at("decode").steps[2].prefetch.empty());
  EXPECT_EQ(toJson(p).dump(), j.dump());
  const std::pair<std::function<void(nlohmann::json &)>, std::string> cases[] = {
      {[](nlohmann::json &j) { step(j, 1)["prefetch"] = {{"wqkv", 0, 4}}; },
       "step 1 ('rms_norm' at layers.0.attention_norm) of entry point 'decode' names weight "
       "'wqkv', which is not in the weight table"},
      {[](nlohmann::json &j) { step(j, 1)["prefetch"] = {{"output", 2, 11}}; },
       "asks L2 for rows 2 to 11 of weight 'output', which has 10"},
      {[](nlohmann::json &j) { step(j, 1)["prefetch"] = {{"output", 4, 4}}; },
       "field 'prefetch'[0] asks for no row (end <= first)"},
      {[](nlohmann::json &j) { step(j, 1)["prefetch"] = {{"output", -1, 4}}; },
       "field 'prefetch'[0] first row is -1, outside [0, "},
      {[](nlohmann::json &j) { step(j, 1)["prefetch"] = {"output", 0, 4}; },
       "field 'prefetch'[0] is not [weight, first row, end row]"},
      {[](nlohmann::json &j) { step(j, 1)["prefetch"] = "output"; },
       "field 'prefetch' is not a list of [weight, first row, end row]"},
  };
  for (const auto &[damage, wanted] : cases) {
    const std::string msg = readError(damage);
    EXPECT_NE(msg.find(wanted), std::string::npos) << "want: " << wanted << "\ngot: " << msg;
  }
  // Rows of a quantized weight: its scales lie apart from its codes.
  nlohmann::json q = toJson(int4Plan());
  step(q, 1)["prefetch"] = {{"output", 0, 4}};
  try {
    planFromJson(q);
    ADD_FAILURE() << "accepted";
  } catch (const InputError &e) {
    EXPECT_NE(std::string(e.what()).find("asks L2 for rows of weight 'output', which is int4 (rows "
                                         "of f32, bf16 and f16 weights only)"),
              std::string::npos)
        << e.what();
  }
}

// A matvec step (--fuse-matvec, the cuda target) is read and written with
// its optional fields: the norm and its eps, swiglu (present only when
// true) and the addend; what is absent stays absent.
TEST(PlanJson, AMatVecStepKeepsItsOptionalFields) {
  auto asMatVec = [](nlohmann::json &j) {
    step(j, 2)["op"] = "matvec";
    step(j, 2)["norm"] = "layers.0.attention_norm";
    step(j, 2)["eps"] = 1e-5;
  };
  nlohmann::json j = toJson(samplePlan());
  asMatVec(j);
  const Plan p = planFromJson(j);
  const MatVecOp &mv = p.entryPoints.at("decode").steps[2].as<MatVecOp>();
  EXPECT_EQ(mv.norm.value_or("none"), "layers.0.attention_norm");
  EXPECT_EQ(mv.eps.value_or(0), 1e-5);
  EXPECT_EQ(mv.bias.value_or("none"), "layers.0.attention.bqkv");
  EXPECT_FALSE(mv.swiglu);
  EXPECT_FALSE(mv.addend);
  EXPECT_EQ(mv.results.size(), 3u);
  EXPECT_EQ(mv.weightRows(), 16);
  EXPECT_EQ(toJson(p)["entry_points"]["decode"]["steps"][2], step(j, 2));
  EXPECT_FALSE(step(j, 2).contains("swiglu"));
  const std::pair<std::function<void(nlohmann::json &)>, std::string> cases[] = {
      {[](nlohmann::json &j) { step(j, 2)["swiglu"] = false; },
       "attribute 'swiglu' is not true (absent means false)"},
      {[](nlohmann::json &j) { step(j, 2).erase("eps"); },
       "has a norm without its eps, or an eps without a norm"},
      {[](nlohmann::json &j) { step(j, 2)["eps"] = "small"; }, "attribute 'eps' is not a number"},
      {[](nlohmann::json &j) { step(j, 2)["norm"] = "output"; }, "'output'"},
      {[](nlohmann::json &j) { step(j, 2)["addend"] = step(j, 1)["input"]; },
       "has 3 results; with swiglu or an addend it has one"},
      {[](nlohmann::json &j) { step(j, 2)["swiglu"] = true; }, "twice the columns"},
  };
  for (const auto &c : cases) {
    const auto &damage = c.first; // a variable: the lambda captures it
    const std::string &want = c.second;
    const std::string msg = readError([&](nlohmann::json &j) {
      asMatVec(j);
      damage(j);
    });
    EXPECT_NE(msg.find(want), std::string::npos) << "want: " << want << "\ngot: " << msg;
  }
}

// The QKV product with RoPE and the cache write as its epilogue reads back
// with every field, and a step that does not add up is refused by field.
TEST(PlanJson, AMatVecRopeKVWriteStepReadsBackAndIsChecked) {
  auto asFused = [](nlohmann::json &j) {
    const nlohmann::json rope = step(j, 3), write = step(j, 4);
    nlohmann::json &s = step(j, 2);
    s.erase("results");
    s["op"] = "matvec_rope_kv_write";
    s["input"] = step(j, 1)["input"];
    s["norm"] = "layers.0.attention_norm";
    s["eps"] = 1e-5;
    for (const char *f : {"cache", "page_table", "positions", "layer", "result"}) s[f] = write[f];
    for (const char *f : {"head_dim", "theta", "scaling", "freq_factors"}) s[f] = rope[f];
    s["rotated_query"] = rope["result"];
    nlohmann::json &steps = j["entry_points"]["decode"]["steps"];
    steps.erase(4); // the cache write and the RoPE of q are the step's own
    steps.erase(3);
  };
  nlohmann::json j = toJson(samplePlan());
  asFused(j);
  const Plan p = planFromJson(j);
  const auto &f = p.entryPoints.at("decode").steps[2].as<MatVecRopeKVWriteOp>();
  EXPECT_EQ(f.weight, "layers.0.attention.wqkv");
  EXPECT_EQ(f.norm.value_or("none"), "layers.0.attention_norm");
  EXPECT_EQ(f.bias.value_or("none"), "layers.0.attention.bqkv");
  EXPECT_EQ(f.rope.headDim, 4);
  EXPECT_EQ(f.rope.freqFactors, (std::vector<double>{1.0, 2.5}));
  EXPECT_TRUE(f.rope.scaling.has_value());
  EXPECT_EQ(f.rotatedQuery.cols(), 8);
  EXPECT_EQ(p.entryPoints.at("decode").steps.size(), 6u);
  EXPECT_EQ(toJson(p)["entry_points"]["decode"]["steps"][2], step(j, 2));
  const std::pair<std::function<void(nlohmann::json &)>, std::string> cases[] = {
      {[](nlohmann::json &j) { step(j, 2)["weight"] = "output"; }, "the rows of weight 'output'"},
      {[](nlohmann::json &j) { step(j, 2).erase("eps"); },
       "has a norm without its eps, or an eps without a norm"},
      {[](nlohmann::json &j) { step(j, 2)["freq_factors"] = {1.0}; },
       "has 1 freq_factors for head_dim 4"},
      {[](nlohmann::json &j) { step(j, 2)["bias"] = "layers.0.attention_norm"; },
       "'layers.0.attention_norm'"},
      {[](nlohmann::json &j) { step(j, 2).erase("cache"); }, "'cache'"},
      {[](nlohmann::json &j) { step(j, 2)["layer"] = 3; }, "names layer 3 of a cache of 1"},
  };
  for (const auto &c : cases) {
    const auto &damage = c.first; // a variable: the lambda captures it
    const std::string &want = c.second;
    const std::string msg = readError([&](nlohmann::json &j) {
      asFused(j);
      damage(j);
    });
    EXPECT_NE(msg.find(want), std::string::npos) << "want: " << want << "\ngot: " << msg;
  }
}

// The cuda target's rope_kv_write of a fused QKV product's one result, read
// packed: no key or value fields, the query rows the queries, keys and
// values side by side.
TEST(PlanJson, APackedRopeKVWriteStepReadsBackAndIsChecked) {
  auto asPacked = [](nlohmann::json &j) {
    const nlohmann::json rope = step(j, 3), write = step(j, 4);
    nlohmann::json packed = step(j, 2)["results"][0];
    packed["shape"] = {1, 16};
    step(j, 2)["results"] = nlohmann::json::array({packed});
    nlohmann::json &s = step(j, 3);
    s = nlohmann::json::object();
    s["op"] = "rope_kv_write";
    s["loc"] = rope["loc"];
    s["query"] = packed;
    for (const char *f : {"cache", "page_table", "positions", "layer", "result"}) s[f] = write[f];
    for (const char *f : {"head_dim", "theta", "scaling", "freq_factors"}) s[f] = rope[f];
    s["rotated_query"] = rope["result"];
    j["entry_points"]["decode"]["steps"].erase(4);
  };
  nlohmann::json j = toJson(samplePlan());
  asPacked(j);
  const Plan p = planFromJson(j);
  const auto &w = p.entryPoints.at("decode").steps[3].as<RopeKVWriteOp>();
  EXPECT_TRUE(w.packed());
  EXPECT_EQ(w.query.cols(), 16);
  EXPECT_EQ(w.rotatedQuery.cols(), 8);
  EXPECT_EQ(p.entryPoints.at("decode").steps[2].as<LinearOp>().results.size(), 1u);
  EXPECT_EQ(toJson(p)["entry_points"]["decode"]["steps"][3], step(j, 3));
  EXPECT_FALSE(toJson(p)["entry_points"]["decode"]["steps"][3].contains("key"));
  const std::pair<std::function<void(nlohmann::json &)>, std::string> cases[] = {
      {[](nlohmann::json &j) { step(j, 3)["rotated_query"]["shape"] = {1, 4}; },
       "field 'query' is [1, 16] f32 tensor, expected [1, 12] (the rotated queries' columns, "
       "then the keys' and the values' side by side"},
      {[](nlohmann::json &j) { step(j, 3)["key"] = step(j, 3)["query"]; },
       "has keys without values, or values without keys"},
      {[](nlohmann::json &j) { step(j, 3)["rotated_query"]["shape"] = {1, 6}; },
       "attribute 'head_dim' is 4 for rows of 6"},
  };
  for (const auto &c : cases) {
    const auto &damage = c.first; // a variable: the lambda captures it
    const std::string &want = c.second;
    const std::string msg = readError([&](nlohmann::json &j) {
      asPacked(j);
      damage(j);
    });
    EXPECT_NE(msg.find(want), std::string::npos) << "want: " << want << "\ngot: " << msg;
  }
}

/// The sample with int4 matrices (the fused one 40 wide, so that its rows
/// end in a partial group) and f32 vectors.
Plan int4Plan() {
  Plan p = samplePlan();
  p.settings.weightDtype = DType::i4;
  for (WeightEntry &w : p.weights) w.dtype = w.shape.size() == 2 ? DType::i4 : DType::f32;
  p.weights[2].shape = {16, 40};
  p.assignWeightOffsets();
  return p;
}

TEST(PlanJson, Int4WeightsAreLaidOutAsDocumented) {
  const Plan p = int4Plan();
  // [10, 8]: 10 rows of one group: 160 bytes of codes, scales at 192 (40
  // bytes), minimums at 256 (40 bytes).
  const WeightEntry &emb = p.weights[0];
  EXPECT_EQ(emb.groupSize, 32);
  EXPECT_EQ(emb.scalesOffset, 192u);
  EXPECT_EQ(emb.minsOffset, 256u);
  EXPECT_EQ(emb.bytes, 296u);
  EXPECT_EQ(emb.rowBytes(), 16 + 4 + 4);
  // [16, 40]: two groups a row: 512 bytes of codes, 128 of scales, 128 of
  // minimums, each part at a multiple of 64.
  const WeightEntry &qkv = p.weights[2];
  EXPECT_EQ(qkv.offset, 384u); // after the f32 norm (32 bytes at 320)
  EXPECT_EQ(qkv.scalesOffset, 512u);
  EXPECT_EQ(qkv.minsOffset, 640u);
  EXPECT_EQ(qkv.bytes, 768u);
  // Vectors stay f32, without group fields.
  EXPECT_EQ(p.weights[1].groupSize, 0);
  EXPECT_EQ(p.weights[1].bytes, 32u);
  const MemoryBill b = p.memoryBill();
  EXPECT_EQ(b.params, 10 * 8 + 8 + 16 * 40 + 16 + 10 * 8);
  EXPECT_EQ(b.weightsBytes, 296 + 32 + 768 + 64 + 296);

  const nlohmann::json j = toJson(p);
  EXPECT_EQ(j["weights"][0]["dtype"], "int4");
  EXPECT_EQ(j["weights"][0]["mins_offset"], 256);
  EXPECT_FALSE(j["weights"][1].contains("group_size"));
  // The widened matrix no longer fits the sample's steps: read the weight
  // table alone.
  nlohmann::json table = j;
  table["entry_points"] = nlohmann::json::object();
  const Plan q = planFromJson(table);
  for (size_t i = 0; i < p.weights.size(); ++i) {
    EXPECT_EQ(q.weights[i].dtype, p.weights[i].dtype) << i;
    EXPECT_EQ(q.weights[i].groupSize, p.weights[i].groupSize) << i;
    EXPECT_EQ(q.weights[i].scalesOffset, p.weights[i].scalesOffset) << i;
    EXPECT_EQ(q.weights[i].minsOffset, p.weights[i].minsOffset) << i;
    EXPECT_EQ(q.weights[i].bytes, p.weights[i].bytes) << i;
  }
}

TEST(PlanJson, Mxfp4WeightsAreLaidOutAsDocumented) {
  Plan p = int4Plan();
  for (WeightEntry &w : p.weights)
    if (w.dtype == DType::i4) w.dtype = DType::mxfp4;
  p.assignWeightOffsets();
  // [10, 8]: 10 rows of one group: 160 bytes of codes, then at 192 one
  // scale byte a group (10), no minimums.
  const WeightEntry &emb = p.weights[0];
  EXPECT_EQ(emb.groupSize, 32);
  EXPECT_EQ(emb.scalesOffset, 192u);
  EXPECT_EQ(emb.minsOffset, 0u);
  EXPECT_EQ(emb.bytes, 202u);
  EXPECT_EQ(emb.rowBytes(), 16 + 1);
  // [16, 40]: two groups a row: 512 bytes of codes, 32 scale bytes at 512.
  const WeightEntry &qkv = p.weights[2];
  EXPECT_EQ(qkv.scalesOffset, 512u);
  EXPECT_EQ(qkv.bytes, 544u);
  nlohmann::json j = toJson(p);
  EXPECT_EQ(j["weights"][0]["dtype"], "mxfp4");
  EXPECT_FALSE(j["weights"][0].contains("mins_offset"));
  j["entry_points"] = nlohmann::json::object();
  const Plan q = planFromJson(j);
  EXPECT_EQ(q.weights[2].dtype, DType::mxfp4);
  EXPECT_EQ(q.weights[2].scalesOffset, 512u);
  EXPECT_EQ(q.weights[2].bytes, 544u);
  // A layout other than the documented one is refused, as int4's is.
  for (const auto &[field, value, want] :
       {std::tuple<const char *, int, const char *>{"mins_offset", 256,
                                                     "is mxfp4 and has 'mins_offset'"},
        {"bytes", 232, "holds 232 bytes and a [16,40] mxfp4 weight takes 544"},
        {"scales_offset", 640, "the codes of a [16,40] mxfp4 matrix end at 512"}}) {
    nlohmann::json bad = j;
    bad["weights"][2][field] = value;
    try {
      planFromJson(bad);
      ADD_FAILURE() << field << " " << value << " was read";
    } catch (const InputError &e) {
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    }
  }
}

TEST(PlanJson, InconsistentQuantizedWeightsAreRefused) {
  using J = nlohmann::json;
  const std::pair<std::function<void(J &)>, std::string> cases[] = {
      {[](J &w) { w[0].erase("mins_offset"); }, "weight 'tok_embeddings' has no 'mins_offset'"},
      {[](J &w) { w[0].erase("scales_offset"); }, "has no 'scales_offset'"},
      {[](J &w) { w[0]["mins_offset"] = 300; },
       "weight 'tok_embeddings' has mins_offset 300, but the scales of a [10,8] int4 matrix end "
       "at 256 (64-byte aligned), where its minimums start"},
      {[](J &w) { w[2]["scales_offset"] = 256; },
       "has scales_offset 256, but the codes of a [16,40] int4 matrix end at 512"},
      {[](J &w) { w[2]["bytes"] = 700; }, "holds 700 bytes and a [16,40] int4 weight takes 768"},
      {[](J &w) { w[0]["group_size"] = 64; },
       "is int4 in groups of 64 and this kvplan reads groups of 32"},
      {[](J &w) { w[0]["mins_offset"] = -64; }, "mins_offset is -64, outside [0, "},
      {[](J &w) { w[1]["mins_offset"] = 0; },
       "weight 'layers.0.attention_norm' is f32 and has 'mins_offset', which f32 weights do not"},
      {[](J &w) {
         w[1]["dtype"] = "int4";
         w[1]["group_size"] = 32;
         w[1]["scales_offset"] = 64;
         w[1]["mins_offset"] = 128;
       },
       "is int4 but not a matrix or a stack of them ([8])"},
      {[](J &w) {
         w[0]["dtype"] = "int8";
         w[0]["bytes"] = 232;
       },
       "is int8 and has 'mins_offset', which int8 weights do not"},
  };
  for (const auto &[damage, want] : cases) {
    J j = toJson(int4Plan());
    damage(j["weights"]);
    std::string msg = "(no error)";
    try {
      planFromJson(j);
    } catch (const InputError &e) {
      msg = e.what();
    }
    EXPECT_NE(msg.find(want), std::string::npos) << "want: " << want << "\ngot: " << msg;
    EXPECT_NE(msg.find("recompile"), std::string::npos) << msg;
  }
}

// Every integer of a plan, in its model and settings too, is a JSON integer
// in range: a float or a huge value converted to int64_t would wrap (1e30 and
// -1e308 became INT64_MIN) and overflow the sizes computed from it.
TEST(PlanJson, IntegersThatAreFloatsHugeOrNegativeAreRefused) {
  const int64_t k2to62 = int64_t(1) << 62;
  const std::pair<std::function<void(nlohmann::json &)>, std::string> cases[] = {
      {[](nlohmann::json &j) { j["settings"]["page_size"] = -1e308; },
       "the plan's settings field 'page_size' is not an integer (-1e+308)"},
      {[](nlohmann::json &j) { j["settings"]["max_seq_len"] = 1.5; },
       "settings field 'max_seq_len' is not an integer (1.5)"},
      {[&](nlohmann::json &j) { j["settings"]["max_seq_len"] = k2to62; },
       "settings field 'max_seq_len' is 4611686018427387904, outside [1, 16777216]"},
      {[](nlohmann::json &j) { j["settings"]["kv_pages"] = -4; },
       "settings field 'kv_pages' is -4, outside [1, 2147483647]"},
      {[](nlohmann::json &j) { j["settings"]["max_batch"] = uint64_t(1) << 63; },
       "settings field 'max_batch' is 9223372036854775808, outside [1, 4096]"},
      {[](nlohmann::json &j) { j["model"]["hidden_size"] = 1e30; },
       "the plan's model field 'hidden_size' is not an integer (1e+30)"},
      {[](nlohmann::json &j) { j["model"]["num_layers"] = 0; },
       "model field 'num_layers' is 0, outside [1, 4096]"},
      {[](nlohmann::json &j) { j["model"]["vocab_size"] = -1; },
       "model field 'vocab_size' is -1, outside [1, 16777216]"},
      {[](nlohmann::json &j) { j["model"]["eos_token_id"] = {2, 3.5}; },
       "model field 'eos_token_id'[1] is not an integer (3.5)"},
      {[](nlohmann::json &j) { j["model"]["rope"]["original_max_position_embeddings"] = 1e19; },
       "model field 'rope' original_max_position_embeddings is not an integer"},
      // The plan's own fields: shapes, offsets, sizes and the cache.
      {[](nlohmann::json &j) { j["weights"][0]["shape"] = {1e30, 8}; },
       "weight 'tok_embeddings' shape[0] is not an integer (1e+30)"},
      {[&](nlohmann::json &j) { j["weights"][0]["shape"] = {k2to62, 8}; },
       "weight 'tok_embeddings' shape[0] is 4611686018427387904, outside [1, 1125899906842624]"},
      {[](nlohmann::json &j) { step(j, 1)["result"]["shape"] = {1, 8.5}; },
       "field 'result' shape[1] is not an integer (8.5)"},
      {[](nlohmann::json &j) { step(j, 1)["result"]["shape"] = {1 << 30, 1 << 30}; },
       "field 'result' shape holds more than 2^50 elements"},
      {[](nlohmann::json &j) { j["weights"][1]["offset"] = -64; },
       "weight 'layers.0.attention_norm' offset is -64, outside [0, "},
      {[](nlohmann::json &j) { j["kv_cache"]["page_size"] = -1e308; },
       "the KV cache page_size is not an integer (-1e+308)"},
      {[](nlohmann::json &j) { j["entry_points"]["decode"]["arena_bytes"] = 1.5; },
       "entry point 'decode' arena_bytes is not an integer (1.5)"},
  };
  for (const auto &[damage, want] : cases) {
    const std::string msg = readError(damage);
    EXPECT_NE(msg.find(want), std::string::npos) << "want: " << want << "\ngot: " << msg;
    EXPECT_NE(msg.find("the plan is incompatible because"), std::string::npos) << msg;
    EXPECT_NE(msg.find("recompile"), std::string::npos) << msg;
  }
}

// Sizes computed from a plan's numbers refuse rather than wrap: an operand,
// a weight or a cache whose product passes 2^63 is an InputError naming it.
TEST(PlanJson, SizeProductsThatOverflowAreRefused) {
  const int64_t big = int64_t(1) << 40;
  auto error = [](const std::function<void()> &f) -> std::string {
    try {
      f();
    } catch (const InputError &e) {
      return e.what();
    }
    return "(no error)";
  };
  const Operand huge = tensor(0, 0, {big, big});
  EXPECT_NE(error([&] { (void)huge.bytes(); })
                .find("the elements of a [1099511627776, 1099511627776] f32 tensor: "
                      "1099511627776 x 1099511627776 does not fit in 64 bits"),
            std::string::npos)
      << error([&] { (void)huge.bytes(); });
  // 2^61 elements fit; their bytes (x 4) do not.
  const Operand wide = tensor(0, 0, {int64_t(1) << 31, int64_t(1) << 30});
  EXPECT_NE(error([&] { (void)wide.bytes(); }).find("the bytes of a [2147483648, 1073741824] f32 "
                                                    "tensor"),
            std::string::npos);
  KVCacheLayout kv{1 << 16, INT32_MAX, 1 << 20, 1 << 16, 1 << 16, 1, DType::f32};
  EXPECT_NE(error([&] { (void)kv.bytes(); }).find("the bytes of the KV cache"), std::string::npos);
  Plan p = samplePlan();
  p.weights[0].shape = {big, big};
  EXPECT_NE(error([&] { p.assignWeightOffsets(); }).find("the elements of a [1099511627776,"),
            std::string::npos);
  // The bill's sums: weights that each fit but together pass 2^63.
  p = samplePlan();
  for (WeightEntry &w : p.weights) w.bytes = uint64_t(1) << 62;
  EXPECT_NE(error([&] { (void)p.memoryBill(); }).find("does not fit in 64 bits"),
            std::string::npos);
  EXPECT_EQ(error([] { (void)samplePlan().memoryBill(); }), "(no error)");
}

// A pool larger than the batch needs (pages kept for prefix caching) is a
// plan like any other, and the bill counts every page.
TEST(PlanJson, APoolLargerThanTheBatchIsRead) {
  nlohmann::json j = toJson(samplePlan());
  j["kv_cache"]["pages"] = 12;
  j["settings"]["kv_pages"] = 12;
  Plan p = planFromJson(j);
  EXPECT_EQ(p.settings.kvPages, 12);
  EXPECT_EQ(p.kvCache.pages, 12);
  EXPECT_EQ(p.kvCache.pagesPerSequence, 4);
  EXPECT_EQ(p.memoryBill().kvCacheBytes, 1 * 2 * 12 * 1 * 8 * 4 * 2);
  // Under a window of 4, a pool of the 3 pages one sequence holds at once
  // (EachDamageNamesTheStepAndField), below pages_per_sequence.
  j["entry_points"]["decode"]["steps"][6]["window"] = 4;
  j["model"]["sliding_window"] = 4;
  j["kv_cache"]["pages"] = 3;
  j["settings"]["kv_pages"] = 3;
  p = planFromJson(j);
  EXPECT_EQ(p.kvCache.pages, 3);
  EXPECT_EQ(sequencePeakPages(p), 3);
}

// The window a sequence gives pages back under is the widest of the plan's
// attention steps', none where one reads every key.
TEST(PlanJson, TheWindowIsTheWidestOfTheAttentionSteps) {
  Plan p = samplePlan();
  std::vector<Step> &steps = p.entryPoints.at("decode").steps;
  EXPECT_EQ(attentionWindow(p), 24);
  steps.push_back(steps[6]);
  steps.back().as<AttentionOp>().window = 30;
  EXPECT_EQ(attentionWindow(p), 30);
  steps.back().as<AttentionOp>().window = 20;
  EXPECT_EQ(attentionWindow(p), 24);
  steps.back().as<AttentionOp>().window = std::nullopt;
  EXPECT_EQ(attentionWindow(p), 0);
}

TEST_F(ArtifactTest, RoundTrip) {
  Artifact a = Artifact::open(path);
  EXPECT_EQ(a.formatVersion(), kArtifactFormatVersion);
  EXPECT_EQ(toJson(a.plan()).dump(), toJson(samplePlan()).dump());
  EXPECT_EQ(a.section("ir"), "module {}\n");
  EXPECT_FALSE(a.hasSection("weights"));
  for (const SectionInfo &s : a.sections())
    EXPECT_EQ(s.offset % kSectionAlignment, 0u) << s.name;
  EXPECT_THROW(a.section("weights"), InputError);
}

TEST_F(ArtifactTest, Truncated) {
  EXPECT_NE(openError(good.substr(0, good.size() - 10)).find("truncated"), std::string::npos);
  EXPECT_NE(openError(good.substr(0, 20)).find("not a kvplan artifact"), std::string::npos);
  EXPECT_NE(openError("").find("not a kvplan artifact"), std::string::npos);
}

TEST_F(ArtifactTest, TrailingBytes) {
  EXPECT_NE(openError(good + "xx").find("trailing bytes"), std::string::npos);
}

TEST_F(ArtifactTest, WrongMagic) {
  std::string bad = good;
  bad[1] = 'X';
  EXPECT_NE(openError(bad).find("not a kvplan artifact"), std::string::npos);
  EXPECT_NE(openError("{\"format_version\": 1}                                                 ")
                .find("not a kvplan artifact"),
            std::string::npos);
}

TEST_F(ArtifactTest, WrongFormatVersion) {
  // A newer artifact, and an older one (version 2 had no kv_pages setting).
  for (uint32_t v : {kArtifactFormatVersion + 1, kArtifactFormatVersion - 1}) {
    std::string bad = good;
    std::memcpy(&bad[8], &v, 4);
    std::string msg = openError(bad);
    EXPECT_NE(msg.find("incompatible because the artifact has format version " +
                       std::to_string(v) + " and this kvplan reads version " +
                       std::to_string(kArtifactFormatVersion)),
              std::string::npos)
        << msg;
    EXPECT_NE(msg.find("recompile"), std::string::npos) << msg;
  }
}

TEST_F(ArtifactTest, DamagedHeaderTableAndSections) {
  std::string bad = good;
  bad[24] ^= 1; // file size field
  EXPECT_NE(openError(bad).find("header is damaged"), std::string::npos);
  bad = good;
  bad[64 + 40] ^= 1; // the first section entry's size
  EXPECT_NE(openError(bad).find("section table is damaged"), std::string::npos);
  // A table offset that wraps past 2^64 to just before the file, under a
  // header checksum made to match (a hostile file), is refused, not read.
  // (Found while making fuzz_artifact reach past the checksums.)
  bad = good;
  const uint64_t wrapping = uint64_t(0) - 64;
  std::memcpy(&bad[16], &wrapping, 8);
  const uint64_t sealed = checksum64(bad.data(), 56);
  std::memcpy(&bad[56], &sealed, 8);
  EXPECT_NE(openError(bad).find("the section table is damaged; recompile the model"),
            std::string::npos)
      << openError(bad);
  writeAll(path, good);
  Artifact a = Artifact::open(path);
  uint64_t planOffset = a.sections()[0].offset;
  bad = good;
  bad[planOffset + 5] ^= 0x20;
  EXPECT_NE(openError(bad).find("section 'plan' is damaged"), std::string::npos);
  bad = good;
  bad[a.sections()[1].offset] ^= 1; // the IR text
  EXPECT_NE(openError(bad).find("section 'ir' is damaged"), std::string::npos);
}

TEST_F(ArtifactTest, InvalidPlanJson) {
  ArtifactWriter w;
  w.addSection("plan", "{\"format_version\": ");
  w.write(path);
  EXPECT_NE(openError(readAll(path)).find("not valid JSON"), std::string::npos);
  w = ArtifactWriter();
  w.addSection("ir", "x");
  w.write(path);
  EXPECT_NE(openError(readAll(path)).find("no plan section"), std::string::npos);
}

// A plan edited and re-checksummed (as a hostile file would be) is refused
// when the artifact is opened, naming the artifact and the step.
TEST_F(ArtifactTest, AnEditedPlanIsRefusedAtOpen) {
  nlohmann::json j = toJson(samplePlan());
  step(j, 1).erase("eps");
  ArtifactWriter w;
  w.addSection("plan", j.dump());
  w.write(path);
  const std::string msg = openError(readAll(path));
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("incompatible because step 1 of entry point 'decode' ('rms_norm' at "
                     "layers.0.attention_norm) has no field 'eps'"),
            std::string::npos)
      << msg;
}

TEST_F(ArtifactTest, MissingFile) {
  try {
    Artifact::open((dir / "nope.kvp").string());
    FAIL();
  } catch (const InputError &e) {
    EXPECT_NE(std::string(e.what()).find("cannot open the artifact"), std::string::npos);
  }
}

/// The bytes malloc has handed out and not had back (its heap in use and
/// its separately mapped blocks), whether or not their pages were touched.
static int64_t heapInUse() {
  struct mallinfo2 mi = mallinfo2();
  return int64_t(mi.uordblks + mi.hblkhd);
}

// A plan that validates but that the CPU runtime cannot bind (here a norm
// whose result, and the linear reading it, are bf16) throws from the
// executor's constructor after the arena and the cache are allocated: they
// must be freed, not leaked, each time. They come zeroed from calloc, which
// touches no page of fresh memory, so the allocator's count is what tells
// (resident memory would not grow with a leak). Under AddressSanitizer
// malloc is ASan's, and its leak check at exit answers the same question.
#if defined(__SANITIZE_ADDRESS__)
#define KVPLAN_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KVPLAN_ASAN 1
#endif
#endif
TEST(CpuExecutorLoad, AFailedBindFreesTheArenaAndTheCache) {
#ifdef KVPLAN_ASAN
  GTEST_SKIP() << "malloc is AddressSanitizer's here; its leak check covers this";
#endif
  Plan p = samplePlan();
  const int64_t arena = int64_t(64) << 20; // past malloc's mmap threshold: freed is unmapped
  p.entryPoints["decode"].arenaBytes = arena;
  std::get<RMSNormOp>(p.entryPoints["decode"].steps[1].op).result.dtype = DType::bf16;
  std::get<LinearOp>(p.entryPoints["decode"].steps[2].op).input.dtype = DType::bf16;
  const std::vector<char> weights(size_t(p.memoryBill().weightsBlobBytes), 0);
  auto load = [&] {
    try {
      CpuExecutor e(p, weights.data(), weights.size(), 1);
    } catch (const InputError &e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  const std::string first = load();
  ASSERT_NE(first.find("the plan cannot run on this CPU runtime: step 1 ('rms_norm'"),
            std::string::npos)
      << first;
  const int64_t before = heapInUse();
  for (int i = 0; i < 6; ++i) ASSERT_EQ(load(), first);
  // Leaked, six arenas would add 384 MiB.
  EXPECT_LT(heapInUse() - before, arena) << "malloc's bytes in use grew by "
                                         << (heapInUse() - before) << " bytes";
}
