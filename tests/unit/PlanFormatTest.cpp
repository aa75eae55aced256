// The plan's JSON form and the .kvp container: round trips, and every kind
// of damage is an InputError that says what is wrong.
#include "plan/Artifact.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

using namespace kvplan;
namespace fs = std::filesystem;

namespace {

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
  p.model.maxPositions = 32;
  p.model.eosTokenIds = {2, 3};
  p.model.rope.type = RopeType::llama3;
  p.settings.weightDtype = DType::bf16;
  p.settings.kvDtype = DType::bf16;
  p.settings.maxSeqLen = 32;
  p.settings.prefillChunk = 4;
  p.settings.pageSize = 8;
  p.weights = {{"tok_embeddings", {10, 8}, DType::bf16, 0, 0, {}},
               {"layers.0.attention.wqkv", {16, 8}, DType::bf16, 0, 0,
                {"layers.0.attention.wq", "layers.0.attention.wk", "layers.0.attention.wv"}},
               {"norm", {8}, DType::bf16, 0, 0, {}}};
  p.assignWeightOffsets();
  p.kvCache = {1, 4, 8, 1, 4, 4, DType::bf16};
  EntryPoint ep;
  ep.name = "decode";
  ep.rows = 1;
  ep.arenaBytes = 1024;
  Operand tokens{OperandKind::arena, "tokens", 0, {1}, DType::i32, -1, false};
  Operand cache{OperandKind::kvCache, "kv_cache", 0, {}, DType::f32, -1, false};
  ep.args = {tokens, cache};
  Step s;
  s.op = "embedding";
  s.weights["weight"] = "tok_embeddings";
  s.inputs = {tokens};
  s.outputs = {{OperandKind::arena, "", 256, {1, 8}, DType::f32, -1, false}};
  ep.steps.push_back(s);
  Step r;
  r.op = "attention";
  r.inputs = {s.outputs[0], {OperandKind::kvView, "", 0, {}, DType::f32, 0, false},
              {OperandKind::kvView, "", 0, {}, DType::f32, 0, true}};
  r.outputs = {{OperandKind::arena, "", 512, {1, 8}, DType::f32, -1, false}};
  r.attrs = {{"mask", "cache"}, {"num_heads", 2}, {"scale", 0.5}};
  ep.steps.push_back(r);
  ep.results = {r.outputs[0]};
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

TEST(PlanJson, RoundTrip) {
  Plan p = samplePlan();
  nlohmann::json j = toJson(p);
  Plan q = planFromJson(j);
  EXPECT_EQ(toJson(q).dump(), j.dump());
  EXPECT_EQ(q.weights[1].parts.size(), 3u);
  EXPECT_EQ(q.entryPoints.at("decode").steps[1].inputs[2].kind, OperandKind::kvView);
  EXPECT_TRUE(q.entryPoints.at("decode").steps[1].inputs[2].values);
}

TEST(PlanJson, MemoryBillIsExact) {
  Plan p = samplePlan();
  MemoryBill b = p.memoryBill();
  EXPECT_EQ(b.params, 10 * 8 + 16 * 8 + 8);
  EXPECT_EQ(b.weightsBytes, 2 * b.params);
  // [layers][2][pages][kv_heads][page_size][head_dim] x bf16
  EXPECT_EQ(b.kvCacheBytes, 1 * 2 * 4 * 1 * 8 * 4 * 2);
  EXPECT_EQ(b.arenaBytes.at("decode"), 1024);
  EXPECT_EQ(b.totalBytes, b.weightsBytes + b.kvCacheBytes + 1024);
  // Weights are laid out at 64-byte boundaries.
  for (const WeightEntry &w : p.weights)
    EXPECT_EQ(w.offset % kWeightAlignment, 0u) << w.name;
  EXPECT_GE(b.weightsBlobBytes, b.weightsBytes);
}

TEST(PlanJson, MissingFieldIsAnInputError) {
  nlohmann::json j = toJson(samplePlan());
  j.erase("kv_cache");
  EXPECT_THROW(planFromJson(j), InputError);
  j = toJson(samplePlan());
  j["weights"][0]["dtype"] = "f8";
  EXPECT_THROW(planFromJson(j), InputError);
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
  std::string bad = good;
  uint32_t v = kArtifactFormatVersion + 1;
  std::memcpy(&bad[8], &v, 4);
  std::string msg = openError(bad);
  EXPECT_NE(msg.find("incompatible because the artifact has format version " + std::to_string(v)),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("recompile"), std::string::npos) << msg;
}

TEST_F(ArtifactTest, DamagedHeaderTableAndSections) {
  std::string bad = good;
  bad[24] ^= 1; // file size field
  EXPECT_NE(openError(bad).find("header is damaged"), std::string::npos);
  bad = good;
  bad[64 + 40] ^= 1; // the first section entry's size
  EXPECT_NE(openError(bad).find("section table is damaged"), std::string::npos);
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

TEST_F(ArtifactTest, MissingFile) {
  try {
    Artifact::open((dir / "nope.kvp").string());
    FAIL();
  } catch (const InputError &e) {
    EXPECT_NE(std::string(e.what()).find("cannot open the artifact"), std::string::npos);
  }
}
