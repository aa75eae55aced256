// A hostile artifact: a plan edited and re-checksummed must be refused when
// it is read, or run inside the buffers its bill allocated. The reported
// case (a decode step's [1, 64] output made [64]), every small edit of every
// operand's shape and every integer attribute of a compiled plan, and the
// inputs the engine writes before each step (positions, page ids, tokens).
#include "codegen/Compiler.h"
#include "frontend/ConfigParser.h"
#include "plan/Artifact.h"
#include "runtime/cpu/CpuExecutor.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <set>
#include <sstream>

using namespace kvplan;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

/// A two-layer model of hidden size 64 (stories260K's width) with GQA, for
/// the cpu target unless `target` says otherwise.
ModelConfig tinyConfig(int64_t maxBatch, const std::string &target = "cpu",
                       const std::string &architecture = "architecture = \"llama\"\n") {
  const std::string text = "[model]\nname = \"hostile\"\n" + architecture +
                           "hidden_size = 64\nintermediate_size = 96\nnum_layers = 2\n"
                           "num_heads = 4\nnum_kv_heads = 2\nvocab_size = 40\n"
                           "max_position_embeddings = 64\nrms_norm_eps = 1e-5\n"
                           "bos_token_id = 1\neos_token_id = 2\n[compile]\nmax_batch = " +
                           std::to_string(maxBatch) +
                           "\nmax_seq_len = 16\nprefill_chunk = 4\npage_size = 4\ntarget = \"" +
                           target + "\"\n";
  ModelConfig cfg = parseTomlSpec(text, "hostile.toml", [](const std::string &) {});
  validate(cfg);
  return cfg;
}

const Plan &tinyPlan(int64_t maxBatch) {
  static std::map<int64_t, Plan> plans;
  auto it = plans.find(maxBatch);
  if (it == plans.end())
    it = plans.emplace(maxBatch, compileModel(tinyConfig(maxBatch)).plan).first;
  return it->second;
}

/// The message reading `j` gives, or "(no error)".
std::string readError(const json &j) {
  try {
    planFromJson(j);
  } catch (const InputError &e) {
    return e.what();
  }
  return "(no error)";
}


/// The message opening an artifact whose plan is `j` gives (its checksums
/// are recomputed, as a hostile file's would be), or "(no error)".
std::string openError(const json &j) {
  const fs::path dir = fs::temp_directory_path() / "kvplan-hostile-open";
  fs::create_directories(dir);
  const std::string path = (dir / "edited.kvp").string();
  ArtifactWriter w;
  w.addSection("plan", j.dump());
  w.addSection("ir", "module {}\n");
  w.write(path);
  std::string msg = "(no error)";
  try {
    Artifact::open(path);
  } catch (const InputError &e) {
    msg = e.what();
  }
  fs::remove_all(dir);
  return msg;
}

/// The first decode step with a [1, 64] result and that result's field.
std::pair<size_t, std::string> firstWideResult(const json &steps) {
  static const std::set<std::string> results = {"result", "normed", "residual", "rotated_query"};
  for (size_t i = 0; i < steps.size(); ++i)
    for (const auto &[name, v] : steps[i].items())
      if (results.count(name) && v.is_object() && v.value("shape", json()) == json({1, 64}))
        return {i, name};
  return {steps.size(), ""};
}

// The reported case: one decode step's [1, 64] output made [64], the
// checksums recomputed; and the same kind of edit that keeps every byte
// range in the arena but gives a kernel other counts (an attention told 8
// heads of 8 over a cache of heads of 16). Opening (what inspect and run do
// first) refuses both and names the step.
TEST(HostileArtifact, AnEditedDecodeStepIsRefusedAtOpen) {
  const json good = toJson(tinyPlan(1));
  ASSERT_EQ(openError(good), "(no error)");
  json flat = good;
  json &steps = flat["entry_points"]["decode"]["steps"];
  const auto [edited, field] = firstWideResult(steps);
  ASSERT_LT(edited, steps.size()) << "no decode step has a [1, 64] result";
  steps[edited][field]["shape"] = {64};
  std::string msg = openError(flat);
  EXPECT_NE(msg.find("step " + std::to_string(edited) + " of entry point 'decode'"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("field '" + field + "'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("recompile"), std::string::npos) << msg;

  json heads = good;
  json &decode = heads["entry_points"]["decode"]["steps"];
  size_t attention = 0;
  while (attention < decode.size() && decode[attention]["op"] != "attention") ++attention;
  ASSERT_LT(attention, decode.size());
  ASSERT_EQ(decode[attention]["head_dim"], 16);
  decode[attention]["num_heads"] = 8;
  decode[attention]["head_dim"] = 8;
  msg = openError(heads);
  EXPECT_NE(msg.find("step " + std::to_string(attention) + " ('attention' at "), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("attribute 'head_dim' is 8, expected 16 (the cache's head_dim)"),
            std::string::npos)
      << msg;
}

/// One edit of a compiled plan's JSON.
struct Mutation {
  std::string what;  // "prefill step 3 ('rope') input shape[1] 16 -> 17"
  std::string field; // the field edited: "shape", "offset", "value" or the attribute
  std::function<void(json &)> apply;
};

/// Every edit of one operand: each dimension +1, -1, x2 and 0, each
/// dimension dropped, the offset moved by one element either way, the
/// value id +-1.
void operandMutations(const std::string &where, const json &o,
                      const std::function<json &(json &)> &at, std::vector<Mutation> &out) {
  if (!o.contains("shape")) return;
  const json shape = o["shape"];
  for (size_t d = 0; d < shape.size(); ++d) {
    const int64_t n = shape[d].get<int64_t>();
    for (int64_t v : {n + 1, n - 1, n * 2, int64_t(0)}) {
      if (v == n) continue;
      out.push_back({where + " shape[" + std::to_string(d) + "] " + std::to_string(n) + " -> " +
                         std::to_string(v),
                     "shape", [=](json &j) { at(j)["shape"][d] = v; }});
    }
    out.push_back({where + " shape " + shape.dump() + " without dimension " + std::to_string(d),
                   "shape", [=](json &j) { at(j)["shape"].erase(d); }});
  }
  const int64_t elem = o["dtype"] == "f32" || o["dtype"] == "i32" ? 4 : 2;
  for (auto [field, delta] : {std::pair<const char *, int64_t>{"offset", elem},
                              {"offset", -elem}, {"value", 1}, {"value", -1}})
    out.push_back({where + " " + field + (delta > 0 ? " +" : " ") + std::to_string(delta), field,
                   [=, f = std::string(field)](json &j) {
                     json &v = at(j)[f];
                     v = v.get<int64_t>() + delta;
                   }});
}

/// Every edit of every step of `plan`: its operands' shapes, offsets and
/// value ids, and each integer attribute +-1.
std::vector<Mutation> mutations(const json &plan) {
  std::vector<Mutation> out;
  for (const auto &[entry, e] : plan["entry_points"].items()) {
    const json &steps = e["steps"];
    for (size_t i = 0; i < steps.size(); ++i) {
      const std::string step = entry + " step " + std::to_string(i) + " ('" +
                               steps[i]["op"].get<std::string>() + "')";
      auto stepAt = [entry = entry, i](json &j) -> json & {
        return j["entry_points"][entry]["steps"][i];
      };
      for (const auto &[key, v] : steps[i].items()) {
        if (v.is_object())
          operandMutations(step + " " + key, v, [=](json &j) -> json & { return stepAt(j)[key]; },
                           out);
        if (v.is_array() && !v.empty() && v[0].is_object())
          for (size_t k = 0; k < v.size(); ++k)
            operandMutations(step + " " + key + "[" + std::to_string(k) + "]", v[k],
                             [=](json &j) -> json & { return stepAt(j)[key][k]; }, out);
        if (v.is_number_integer())
          for (int64_t delta : {1, -1})
            out.push_back({step + " " + key + (delta > 0 ? " +1" : " -1"), key,
                           [=](json &j) {
                             json &a = stepAt(j)[key];
                             a = a.get<int64_t>() + delta;
                           }});
      }
    }
  }
  return out;
}

/// Calls fn(operand) for every arena operand of `entry` (arguments,
/// results, and each step's operands), as JSON to edit.
void forEachArenaOperand(json &entry, const std::function<void(json &)> &fn) {
  auto visit = [&](json &o) {
    if (o.is_object() && o.contains("shape")) fn(o);
  };
  for (json &a : entry["args"]) visit(a);
  for (json &r : entry["results"]) visit(r);
  for (json &step : entry["steps"])
    for (auto &[key, v] : step.items()) {
      visit(v);
      if (v.is_array())
        for (json &e : v) visit(e);
    }
}

/// Edits the dataflow check cannot see: one value's shape changed (a
/// dimension +1, -1 or x2) everywhere it is written and read, so producer
/// and readers still agree; only the ops' shape rules can refuse them.
std::vector<Mutation> consistentMutations(const json &plan) {
  std::vector<Mutation> out;
  for (const auto &[entry, e] : plan["entry_points"].items()) {
    std::map<int64_t, json> shapes;
    json copy = e;
    forEachArenaOperand(copy, [&](json &o) { shapes[o["value"].get<int64_t>()] = o["shape"]; });
    int64_t table = -1;
    for (const json &a : e["args"])
      if (a.value("name", "") == "page_table") table = a["value"].get<int64_t>();
    for (const auto &[value, shape] : shapes)
      for (size_t d = 0; d < shape.size(); ++d) {
        const int64_t n = shape[d].get<int64_t>();
        for (int64_t v : {n + 1, n - 1, n * 2}) {
          if (v < 1) continue;
          out.push_back({entry + " value " + std::to_string(value) + " everywhere: shape[" +
                             std::to_string(d) + "] " + std::to_string(n) + " -> " +
                             std::to_string(v),
                         // One page-table row shared by every row is a
                         // valid plan (prefill's).
                         value == table && d == 0 && v == 1 ? "page_table rows" : "shape",
                         [entry = entry, value, d, v](json &j) {
                           forEachArenaOperand(j["entry_points"][entry], [&](json &o) {
                             if (o["value"] == value) o["shape"][d] = v;
                           });
                         }});
        }
      }
  }
  return out;
}

/// Runs a prefill of 3 tokens and a decode of two sequences on `plan` with
/// zero weights; InputError when the executor refuses the plan.
void runOnCpu(const Plan &plan) {
  const std::vector<char> weights(size_t(plan.memoryBill().weightsBlobBytes), 0);
  CpuExecutor exec(plan, weights.data(), weights.size(), 2);
  const int64_t pps = plan.kvCache.pagesPerSequence;
  for (const auto &[name, ep] : plan.entryPoints) {
    int32_t *tok = exec.tokens(name), *pos = exec.positions(name), *table = exec.pageTable(name);
    int32_t *windowTable = exec.windowPageTable(name);
    const int64_t tableRows = ep.arg("page_table")->rows();
    for (int64_t i = 0; i < tableRows * pps; ++i) {
      table[i] = int32_t(i % plan.kvCache.pages);
      if (windowTable) windowTable[i] = int32_t(i % plan.windowCache.pages);
    }
    for (int64_t r = 0; r < ep.rows; ++r) {
      tok[r] = int32_t(3 + r);
      pos[r] = r < 3 ? int32_t(r + 1) : -1;
    }
    exec.run(name, std::min<int64_t>(ep.rows, 3));
  }
}

/// Applies every mutation to `plan` and counts what the reader refuses.
/// Those it accepts must be edits that only choose another place inside a
/// checked range: a cache layer that exists, an offset that keeps a result
/// nothing reads inside the arena (the final norm's residual), or decode's
/// page table made one row that every row shares. On the cpu target they
/// are run too, so a sanitizer build sees any access outside the buffers.
void mutateAll(const Plan &plan, bool run) {
  const json good = toJson(plan);
  ASSERT_EQ(readError(good), "(no error)");
  std::vector<Mutation> all = mutations(good);
  for (Mutation &m : consistentMutations(good)) all.push_back(std::move(m));
  int refused = 0, refusedAtBind = 0;
  std::vector<std::string> accepted;
  for (const Mutation &m : all) {
    json j = good;
    m.apply(j);
    Plan edited;
    try {
      edited = planFromJson(j);
    } catch (const InputError &) {
      ++refused;
      continue;
    }
    if (m.field != "layer" && m.field != "offset" && m.field != "page_table rows")
      accepted.push_back(m.what);
    if (!run) continue;
    try {
      runOnCpu(edited);
    } catch (const InputError &) {
      ++refusedAtBind;
    }
  }
  std::cout << targetName(plan.settings.target) << " plan: " << all.size() << " mutations, "
            << refused << " refused when read, " << refusedAtBind
            << " refused by the CPU executor, "
            << all.size() - size_t(refused + refusedAtBind) << " ran\n";
  EXPECT_GT(refused, int(all.size() * 9 / 10));
  for (const std::string &a : accepted) ADD_FAILURE() << "accepted: " << a;
}

TEST(HostileArtifact, EveryEditOfAShapeOrAnIntegerIsRefusedOrHarmless) {
  const Plan &plan = tinyPlan(2);
  ASSERT_NO_THROW(runOnCpu(plan)); // the unedited plan runs
  mutateAll(plan, true);
}

TEST(HostileArtifact, EveryEditOfACudaPlanIsRefusedOrHarmless) {
  mutateAll(compileModel(tinyConfig(2, "cuda")).plan, false);
}

/// Layer 0 under a window of 5 and layer 1 reading every key, at a context
/// of 16: the sliding layer's own pool (window_kv_cache).
const char *kTwoPools =
    "architecture = \"gemma3\"\nsliding_window = 5\nfull_attention_layers = [1]\n";

TEST(HostileArtifact, EveryEditOfAPlanWithTwoPoolsIsRefusedOrHarmless) {
  const Plan plan = compileModel(tinyConfig(2, "cpu", kTwoPools)).plan;
  ASSERT_EQ(plan.windowCache.layers, 1);
  ASSERT_NO_THROW(runOnCpu(plan));
  mutateAll(plan, true);
}

const char *kMixture = "architecture = \"qwen3\"\nnum_experts = 4\nnum_experts_per_tok = 2\n"
                       "moe_intermediate_size = 32\n";

// A mixture of experts (4 of 32, 2 a token): its steps' experts_per_token
// and the shapes beside them, edited, are refused or run inside the bill
// (the experts' scratch sized from the step as the executor sizes it).
TEST(HostileArtifact, EveryEditOfAMixtureOfExpertsPlanIsRefusedOrHarmless) {
  const Plan plan = compileModel(tinyConfig(2, "cpu", kMixture)).plan;
  ASSERT_GT(plan.memoryBill().workspaceBytes, cpuWorkspace(plan).ropeBytes);
  ASSERT_NO_THROW(runOnCpu(plan));
  mutateAll(plan, true);
  // The cuda pipeline's plan of the same model (its add_rms_norm kept
  // whole before each mixture), read only.
  mutateAll(compileModel(tinyConfig(2, "cuda", kMixture)).plan, false);
}

// Qwen2-MoE's: a gated shared expert beside the experts. Every edit is
// refused or harmless too, and a mixture step without the shared expert's
// rows or gate that the model has, or with them where it has none, is
// refused naming the field.
TEST(HostileArtifact, AMixtureLosesNoSharedExpert) {
  const std::string shared = std::string(kMixture) +
                             "norm_topk_prob = false\nshared_expert_intermediate_size = 48\n"
                             "shared_expert_gate = true\n";
  const Plan plan = compileModel(tinyConfig(2, "cpu", shared.c_str())).plan;
  ASSERT_NO_THROW(runOnCpu(plan));
  mutateAll(plan, true);
  const json good = toJson(plan);
  const json &steps = good.at("entry_points").at("decode").at("steps");
  size_t moe = steps.size();
  for (size_t i = 0; i < steps.size() && moe == steps.size(); ++i)
    if (steps[i]["op"] == "moe_ffn") moe = i;
  ASSERT_LT(moe, steps.size());
  ASSERT_TRUE(steps[moe].contains("shared") && steps[moe].contains("shared_gate"));
  for (const char *field : {"shared", "shared_gate"}) {
    json j = good;
    j["entry_points"]["decode"]["steps"][moe].erase(field);
    EXPECT_NE(readError(j).find(std::string("has no field '") + field + "'"), std::string::npos)
        << readError(j);
  }
  const json plain = toJson(compileModel(tinyConfig(2, "cpu", kMixture)).plan);
  json j = plain;
  for (json &st : j["entry_points"]["decode"]["steps"])
    if (st["op"] == "moe_ffn") st["shared"] = st["input"];
  EXPECT_NE(readError(j).find("field 'shared' adds a shared expert the model does not have"),
            std::string::npos)
      << readError(j);
}

// gpt-oss's: attention sinks, output and expert biases, the clamped SwiGLU.
// Every edit is refused or harmless, and a step that drops a part the model
// has (or adds one it has not) is refused naming it.
TEST(HostileArtifact, AGptOssPlanLosesNoPart) {
  const char *gptOss = "architecture = \"gpt-oss\"\nnum_experts = 4\nnum_experts_per_tok = 2\n"
                       "moe_intermediate_size = 32\nsliding_window = 4\n";
  const Plan plan = compileModel(tinyConfig(2, "cpu", gptOss)).plan;
  ASSERT_NO_THROW(runOnCpu(plan));
  mutateAll(plan, true);
  const json good = toJson(plan);
  auto without = [&](const char *op, const char *field) {
    json j = good;
    for (json &st : j["entry_points"]["decode"]["steps"])
      if (st["op"] == op) st.erase(field);
    return readError(j);
  };
  for (auto [op, field, message] :
       {std::tuple<const char *, const char *, const char *>{
            "attention", "sinks", "has no field 'sinks', and the model has attention sinks"},
        {"moe_ffn", "router_bias", "lacks the router's or the experts' biases"},
        {"moe_ffn", "swiglu_limit",
         "lacks attribute 'swiglu_limit', and the model's activation"}}) {
    const std::string e = without(op, field);
    EXPECT_NE(e.find(message), std::string::npos) << field << ": " << e;
  }
  json j = good;
  j["settings"]["tensor_parallel"] = 2;
  EXPECT_NE(readError(j), "(no error)");
}

// A step that reads the sliding layers' pool through the main page table
// (or the main pool through theirs), a view of the other pool, or a plan
// whose second pool is missing or not the one its settings name, is
// refused when read, naming what is wrong.
TEST(HostileArtifact, EachPoolIsReadThroughItsOwnPageTable) {
  const json good = toJson(compileModel(tinyConfig(2, "cpu", kTwoPools)).plan);
  ASSERT_EQ(readError(good), "(no error)");
  const json &steps = good.at("entry_points").at("decode").at("steps");
  size_t write = steps.size();
  for (size_t i = 0; i < steps.size() && write == steps.size(); ++i)
    if (steps[i]["op"] == "kv_cache_write" && steps[i]["cache"].value("window", false))
      write = i;
  ASSERT_LT(write, steps.size());
  auto step = [&](json &j) -> json & { return j["entry_points"]["decode"]["steps"][write]; };
  struct Edit {
    const char *what, *want;
    std::function<void(json &)> apply;
  };
  const Edit edits[] = {
      {"the sliding layer's write through the main table",
       "field 'page_table' reads value",
       [&](json &j) {
         for (const json &a : j["entry_points"]["decode"]["args"])
           if (a["name"] == "page_table") {
             json table = a;
             table.erase("name");
             step(j)["page_table"] = table;
           }
       }},
      {"the sliding layer's write into the main cache, a layer it has not",
       "names layer 5 of a cache of 1",
       [&](json &j) {
         step(j)["cache"].erase("window");
         step(j)["layer"] = 5;
       }},
      {"no second pool", "has no 'window_kv_cache'", [](json &j) { j.erase("window_kv_cache"); }},
      {"a second pool of other pages", "has 7 pages and the settings' window_kv_pages is",
       [](json &j) { j["window_kv_cache"]["pages"] = 7; }},
      {"a window flag on an arena operand", "has a 'window' that is not",
       [&](json &j) { step(j)["key"]["window"] = true; }},
  };
  for (const Edit &e : edits) {
    SCOPED_TRACE(e.what);
    json j = good;
    e.apply(j);
    EXPECT_NE(readError(j).find(e.want), std::string::npos) << readError(j);
  }
}

// A cuda plan for 12 sequences carries decode.1 and decode.8, copies of
// decode at 1 and 8 rows that serve steps of that many sequences; a copy
// misnamed, unknown, or without the decode it copies is refused.
TEST(HostileArtifact, SmallerCopiesOfDecodeAreNamedByTheirRows) {
  const Plan plan = compileModel(tinyConfig(12, "cuda")).plan;
  ASSERT_EQ(plan.entryPoints.count("decode.8"), 1u);
  ASSERT_EQ(plan.entryPoints.count("decode.1"), 1u);
  EXPECT_EQ(plan.entryPoints.count("decode.32"), 0u) << "not below the max batch";
  EXPECT_EQ(plan.entryPoints.at("decode.8").rows, 8);
  EXPECT_EQ(servingEntry(plan, "decode", 1).name, "decode.1");
  EXPECT_EQ(servingEntry(plan, "decode", 2).name, "decode.8");
  EXPECT_EQ(servingEntry(plan, "decode", 8).name, "decode.8");
  EXPECT_EQ(servingEntry(plan, "decode", 9).name, "decode");
  EXPECT_EQ(servingEntry(plan, "prefill", 1).name, "prefill");
  EXPECT_EQ(compileModel(tinyConfig(12)).plan.entryPoints.size(), 2u)
      << "the cpu target's kernels do not depend on the rows";
  const json good = toJson(plan);
  ASSERT_EQ(readError(good), "(no error)");
  auto renamed = [&](const std::string &from, const std::string &to) {
    json j = good;
    j["entry_points"][to] = j["entry_points"][from];
    j["entry_points"].erase(from);
    return readError(j);
  };
  EXPECT_NE(renamed("decode.8", "decode.7").find("entry point 'decode.7' has 8 rows; a smaller "
                                                 "copy of decode is named decode.N after its N "
                                                 "rows, fewer than decode's"),
            std::string::npos);
  EXPECT_NE(renamed("decode.8", "prefill.8").find("entry point 'prefill.8' has 8 rows; a smaller "
                                                  "copy of prefill is named prefill.N after its "
                                                  "N rows, fewer than prefill's"),
            std::string::npos)
      << "prefill's chunk is 4 rows";
  EXPECT_NE(renamed("decode.8", "warmup").find("entry point 'warmup' is none of prefill, decode, "
                                               "verify, score, prefill.N or decode.N"),
            std::string::npos);
  json orphan = good;
  orphan["entry_points"].erase("decode");
  EXPECT_NE(readError(orphan).find("entry point 'decode.1' has 1 row; a smaller copy of decode "
                                   "is named"),
            std::string::npos);
}

TEST(HostileArtifact, TheScoreEntryPointIsTheOneTheSettingsName) {
  ModelConfig cfg = tinyConfig(2);
  cfg.compile.scoreRows = 3;
  const Plan plan = compileModel(cfg).plan;
  ASSERT_EQ(plan.entryPoints.count("score"), 1u);
  EXPECT_EQ(plan.entryPoints.at("score").rows, 3);
  EXPECT_EQ(plan.entryPoints.at("score").results.at(0).rows(), 3) << "every row's logits";
  const json good = toJson(plan);
  ASSERT_EQ(readError(good), "(no error)");
  EXPECT_EQ(planFromJson(good).settings.scoreRows, 3);
  json more = good;
  more["settings"]["score_rows"] = 4;
  EXPECT_NE(readError(more).find("entry point 'score' has 3 rows, but the settings' score_rows "
                                 "is 4"),
            std::string::npos)
      << readError(more);
  json gone = good;
  gone["entry_points"].erase("score");
  EXPECT_NE(readError(gone).find("settings have score_rows 3 but there is no 'score' entry "
                                 "point"),
            std::string::npos)
      << readError(gone);
  json unasked = good;
  unasked["settings"].erase("score_rows");
  EXPECT_NE(readError(unasked).find("entry point 'score' has 3 rows, but the settings' "
                                    "score_rows is 0"),
            std::string::npos)
      << readError(unasked);
}

TEST(HostileArtifact, TheSettingsListTheSmallerCopies) {
  ModelConfig cfg = tinyConfig(12, "cuda");
  EXPECT_EQ(cfg.compile.decodeCopies, (std::vector<int64_t>{1, 8}));
  cfg.compile.decodeCopies = {2};
  const Plan plan = compileModel(cfg).plan;
  EXPECT_EQ(plan.entryPoints.size(), 3u);
  EXPECT_EQ(plan.entryPoints.count("decode.2"), 1u);
  EXPECT_EQ(servingEntry(plan, "decode", 1).name, "decode.2");
  cfg.compile.decodeCopies = {};
  EXPECT_EQ(compileModel(cfg).plan.entryPoints.size(), 2u) << "none asked for";

  const json good = toJson(plan);
  ASSERT_EQ(good["settings"]["decode_copies"], json({2}));
  json missing = good;
  missing["entry_points"].erase("decode.2");
  EXPECT_NE(readError(missing).find("the plan's settings list the smaller copies decode.2 but the "
                                    "entry points are none; the artifact is damaged or from "
                                    "another kvplan: recompile the model"),
            std::string::npos)
      << readError(missing);
  json unlisted = good;
  unlisted["settings"]["decode_copies"] = {1};
  EXPECT_NE(readError(unlisted).find("settings list the smaller copies decode.1 but the entry "
                                     "points are decode.2"),
            std::string::npos);
  // A plan whose settings do not list copies takes them from its entry points.
  json older = good;
  older["settings"].erase("decode_copies");
  ASSERT_EQ(readError(older), "(no error)");
  EXPECT_EQ(planFromJson(older).settings.decodeCopies, (std::vector<int64_t>{2}));
}

/// The message the CPU executor gives running `entry` after `edit` writes
/// its inputs (which start as a valid step of 2 rows).
std::string runError(const std::string &entry,
                     const std::function<void(int32_t *, int32_t *, int32_t *)> &edit) {
  const Plan &plan = tinyPlan(2);
  const std::vector<char> weights(size_t(plan.memoryBill().weightsBlobBytes), 0);
  CpuExecutor exec(plan, weights.data(), weights.size(), 1);
  int32_t *tok = exec.tokens(entry), *pos = exec.positions(entry), *table = exec.pageTable(entry);
  const EntryPoint &ep = plan.entryPoints.at(entry);
  for (int64_t i = 0; i < ep.arg("page_table")->numElements(); ++i) table[i] = int32_t(i % 8);
  for (int64_t r = 0; r < ep.rows; ++r) {
    tok[r] = 5;
    pos[r] = r < 2 ? int32_t(r) : -1;
  }
  edit(tok, pos, table);
  try {
    exec.run(entry, 2);
  } catch (const InputError &e) {
    return e.what();
  }
  return "(no error)";
}

// Positions, page ids and tokens are the engine's, but each is checked where
// the step reads it: a wild one is an error, not a write outside the cache.
TEST(HostileArtifact, StepInputsOutsideTheCacheOrVocabularyAreRefused) {
  // The tiny plan: max_seq_len 16 in pages of 4, 8 pages, 40 tokens.
  EXPECT_EQ(runError("decode", [](int32_t *, int32_t *, int32_t *) {}), "(no error)");
  EXPECT_EQ(runError("prefill", [](int32_t *, int32_t *, int32_t *) {}), "(no error)");
  const std::pair<std::function<void(int32_t *, int32_t *, int32_t *)>, std::string> cases[] = {
      {[](int32_t *, int32_t *pos, int32_t *) { pos[1] = 16; },
       "row 1 of entry point 'decode' has position 16, outside [-1, 16)"},
      {[](int32_t *, int32_t *pos, int32_t *) { pos[0] = -2; },
       "row 0 of entry point 'decode' has position -2, outside [-1, 16)"},
      {[](int32_t *, int32_t *pos, int32_t *table) {
         pos[1] = 9; // reads pages 0 to 2 of row 1's table
         table[4 + 2] = 8;
       },
       "row 1 of entry point 'decode' at position 9 reads page-table entry 2, page 8, outside "
       "the cache's [0, 8)"},
      {[](int32_t *, int32_t *, int32_t *table) { table[4] = -1; },
       "reads page-table entry 0, page -1"},
      {[](int32_t *tok, int32_t *, int32_t *) { tok[1] = 40; },
       "row 1 of entry point 'decode' has token 40, outside [0, 40)"},
  };
  for (const auto &[edit, want] : cases) {
    const std::string msg = runError("decode", edit);
    EXPECT_NE(msg.find(want), std::string::npos) << "want: " << want << "\ngot: " << msg;
  }
  // Entries past what a row's position reads are not read, and a padding
  // row reads no page.
  EXPECT_EQ(runError("decode", [](int32_t *, int32_t *, int32_t *table) { table[7] = 99; }),
            "(no error)");
  EXPECT_EQ(runError("decode", [](int32_t *, int32_t *pos, int32_t *table) {
              pos[1] = -1;
              table[4] = 99;
            }),
            "(no error)");
  // Prefill shares one table row.
  const std::string shared = runError("prefill", [](int32_t *, int32_t *pos, int32_t *table) {
    pos[1] = 4;
    table[1] = 8;
  });
  EXPECT_NE(shared.find("row 1 of entry point 'prefill' at position 4 reads page-table entry 1, "
                        "page 8"),
            std::string::npos)
      << shared;
}

} // namespace

// A plan built in code rather than read (the compiler's, an executor's
// caller's) is validated too: zero geometry is an error, not a division by
// zero.
TEST(HostileArtifact, ZeroCacheGeometryIsAnErrorNotACrash) {
  Plan plan;
  plan.settings.maxSeqLen = 16;
  plan.kvCache.pageSize = 0;
  try {
    validatePlan(plan);
    FAIL() << "a cache of pages of 0 tokens validated";
  } catch (const InputError &e) {
    EXPECT_NE(std::string(e.what()).find("pages of 0 tokens"), std::string::npos) << e.what();
  }
}
