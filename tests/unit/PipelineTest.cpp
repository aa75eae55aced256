// The whole pipeline on models of several shapes: every stage re-parses, the
// planned arena never lets a live tensor be overwritten (checked by
// simulating the writes and reads of the planned IR), and the arena does not
// grow with depth.
#include "codegen/Compiler.h"
#include "frontend/ConfigParser.h"
#include "frontend/IRBuilder.h"
#include "ir/LLMDialect.h"
#include "passes/Passes.h"

#include "mlir/IR/Verifier.h"
#include "mlir/Parser/Parser.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <sstream>

using namespace kvplan;
using namespace mlir;

namespace {

/// A small model; `tweak` holds lines that replace the model's own (same
/// key) or add to it, then any further tables.
ModelConfig makeConfig(const std::string &tweak = "") {
  std::vector<std::string> model = {
      "name = \"shape\"", "architecture = \"llama\"", "hidden_size = 64",
      "intermediate_size = 96", "num_layers = 3", "num_heads = 4", "num_kv_heads = 2",
      "vocab_size = 50", "max_position_embeddings = 128", "rms_norm_eps = 1e-5",
      "bos_token_id = 1", "eos_token_id = 2"};
  std::string tables;
  std::istringstream in(tweak);
  bool inModel = true;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line[0] == '[') inModel = false;
    if (!inModel) {
      tables += line + "\n";
      continue;
    }
    std::string key = line.substr(0, line.find(" ="));
    auto it = std::find_if(model.begin(), model.end(),
                           [&](const std::string &l) { return l.rfind(key + " =", 0) == 0; });
    if (it != model.end()) *it = line;
    else model.push_back(line);
  }
  std::string text = "[model]\n";
  for (const std::string &l : model) text += l + "\n";
  ModelConfig cfg = parseTomlSpec(text + tables, "shape.toml", [](const std::string &) {});
  validate(cfg);
  return cfg;
}

/// Replays an entry point's planned memory: each op's results overwrite
/// their arena ranges; each operand, when read, must still be the value its
/// producer wrote there.
class ArenaSimulator {
public:
  explicit ArenaSimulator(func::FuncOp fn) : fn(fn) {}

  void run() {
    auto arena = fn->getAttrOfType<IntegerAttr>(attr::kArenaSize);
    ASSERT_TRUE(arena) << "no arena size";
    arenaSize = arena.getInt();
    for (BlockArgument a : fn.getArguments()) {
      if (!isa<RankedTensorType>(a.getType())) continue;
      auto off = fn.getArgAttrOfType<IntegerAttr>(a.getArgNumber(), attr::kOffset);
      ASSERT_TRUE(off) << "argument without an offset";
      write(a, off.getInt());
    }
    for (Operation &op : fn.getBody().front()) {
      for (Value v : op.getOperands()) {
        if (isa<RankedTensorType>(v.getType()))
          read(v, &op);
        // A cache view reads the page table and positions it was made from
        // when its reader runs.
        if (auto view = v.getDefiningOp<llm::KVCacheReadOp>()) {
          read(view.getPageTable(), &op);
          read(view.getPositions(), &op);
        }
      }
      auto offsets = op.getAttrOfType<DenseI64ArrayAttr>(attr::kOffsets);
      size_t i = 0;
      for (Value r : op.getResults()) {
        if (!isa<RankedTensorType>(r.getType())) continue;
        ASSERT_TRUE(offsets && int64_t(i) < int64_t(offsets.size())) << "result without an offset";
        write(r, offsets[i++]);
      }
    }
  }

private:
  void write(Value v, int64_t offset) {
    int64_t bytes = tensorBytes(cast<RankedTensorType>(v.getType()));
    EXPECT_EQ(offset % 256, 0);
    EXPECT_LE(offset + bytes, arenaSize);
    where[v] = {offset, bytes};
    // Drop what this write overlaps, keep the rest of partly covered ranges.
    std::map<int64_t, std::pair<int64_t, Value>> next;
    for (auto &[start, entry] : owners) {
      int64_t end = entry.first;
      if (end <= offset || start >= offset + bytes) {
        next[start] = entry;
        continue;
      }
      if (start < offset) next[start] = {offset, entry.second};
      if (end > offset + bytes) next[offset + bytes] = {end, entry.second};
    }
    next[offset] = {offset + bytes, v};
    owners = std::move(next);
  }

  void read(Value v, Operation *reader) {
    auto [offset, bytes] = where.at(v);
    auto it = owners.find(offset);
    bool intact = it != owners.end() && it->second.first == offset + bytes && it->second.second == v;
    EXPECT_TRUE(intact) << "'" << reader->getName().getStringRef().str()
                        << "' reads a tensor at offset " << offset
                        << " that a later write overwrote";
  }

  func::FuncOp fn;
  int64_t arenaSize = 0;
  llvm::DenseMap<Value, std::pair<int64_t, int64_t>> where;
  std::map<int64_t, std::pair<int64_t, Value>> owners; // start -> (end, value)
};

/// Compiles `cfg`, re-parsing every stage and simulating the planned arena.
CompileOutput compileAndCheck(const ModelConfig &cfg) {
  return compileModel(cfg, [&](int, const std::string &stage, ModuleOp module) {
    SCOPED_TRACE(stage);
    std::string text = printModule(module);
    MLIRContext ctx;
    loadDialects(ctx);
    OwningOpRef<ModuleOp> parsed = parseSourceString<ModuleOp>(text, &ctx);
    ASSERT_TRUE(parsed) << "stage does not re-parse";
    EXPECT_TRUE(succeeded(verify(*parsed)));
    EXPECT_EQ(printModule(*parsed), text) << "printing is not stable";
    if (stage == "plan-buffers")
      for (auto fn : module.getOps<func::FuncOp>())
        ArenaSimulator(fn).run();
  });
}

std::map<std::string, int> opCounts(const EntryPoint &ep) {
  std::map<std::string, int> n;
  for (const Step &s : ep.steps) n[s.name()]++;
  return n;
}

} // namespace

TEST(Pipeline, ShapesCompileAndPlansHold) {
  const std::pair<const char *, std::string> shapes[] = {
      {"gqa", ""},
      {"mha", "num_kv_heads = 4\n"},
      {"multi-query", "num_kv_heads = 1\n"},
      {"qwen2 bias", "attention_bias = true\n"},
      {"tied", "tie_word_embeddings = true\n"},
      {"llama3 rope", "[model.rope]\ntype = \"llama3\"\ntheta = 500000.0\nfactor = 8.0\n"
                      "low_freq_factor = 1.0\nhigh_freq_factor = 4.0\n"
                      "original_max_position_embeddings = 64\n"},
      {"chunk 1", "[compile]\nprefill_chunk = 1\n"},
      {"chunk = context", "[compile]\nmax_seq_len = 32\nprefill_chunk = 32\n"},
      {"contiguous cache", "[compile]\nmax_seq_len = 32\npage_size = 32\n"},
      {"batch 8 bf16", "[compile]\nmax_batch = 8\nweight_dtype = \"bf16\"\n"},
      // Every activation fits one 256-byte slot, so slots are reused the most.
      {"narrow", "hidden_size = 16\nintermediate_size = 32\nnum_heads = 2\nnum_kv_heads = 1\n"
                 "vocab_size = 16\n[compile]\nmax_seq_len = 32\npage_size = 4\n"},
      {"narrow batch 2", "hidden_size = 16\nintermediate_size = 32\nnum_heads = 2\n"
                         "num_kv_heads = 1\nvocab_size = 16\n[compile]\nmax_batch = 2\n"
                         "max_seq_len = 32\nprefill_chunk = 2\npage_size = 4\n"},
  };
  for (const auto &[name, tweak] : shapes) {
    SCOPED_TRACE(name);
    ModelConfig cfg = makeConfig(tweak);
    CompileOutput out = compileAndCheck(cfg);
    const EntryPoint &decode = out.plan.entryPoints.at("decode");
    const EntryPoint &prefill = out.plan.entryPoints.at("prefill");
    EXPECT_EQ(decode.rows, cfg.compile.maxBatch);
    EXPECT_EQ(prefill.rows, cfg.compile.prefillChunk);
    // Decode: a cache write and read per layer, fused norms and FFNs only.
    auto d = opCounts(decode);
    int64_t L = cfg.model.numLayers;
    EXPECT_EQ(d["kv_cache_write"], L);
    EXPECT_EQ(d["kv_cache_read"], L);
    EXPECT_EQ(d["attention"], L);
    EXPECT_EQ(d["add_rms_norm"], 2 * L);
    EXPECT_EQ(d["rms_norm"], 1); // the first layer's, of the embeddings
    EXPECT_EQ(d["fused_ffn"], L);
    EXPECT_EQ(d["linear"], 4 * L); // qkv, o, w13, w2
    EXPECT_EQ(d["swiglu"] + d["add"], 0);
    // Prefill returns the last token's logits only.
    ASSERT_EQ(prefill.results.size(), 1u);
    EXPECT_EQ(prefill.results[0].shape, (std::vector<int64_t>{1, cfg.model.vocabSize}));
    EXPECT_EQ(decode.results[0].shape,
              (std::vector<int64_t>{cfg.compile.maxBatch, cfg.model.vocabSize}));
    if (cfg.compile.prefillChunk > 1) {
      EXPECT_GE(opCounts(prefill)["take_last"], 1);
    }
  }
}

TEST(Pipeline, ArenaDoesNotGrowWithLayers) {
  // Llama-3.1-8B widths at 2 and 32 layers.
  auto widths = [](int layers) {
    std::string t = "[model]\nname = \"w\"\narchitecture = \"llama\"\nhidden_size = 4096\n"
                    "intermediate_size = 14336\nnum_layers = " +
                    std::to_string(layers) +
                    "\nnum_heads = 32\nnum_kv_heads = 8\nvocab_size = 128256\n"
                    "max_position_embeddings = 8192\nrms_norm_eps = 1e-5\nbos_token_id = 1\n"
                    "eos_token_id = 2\n[compile]\nmax_batch = 4\nmax_seq_len = 2048\n"
                    "prefill_chunk = 256\n";
    ModelConfig cfg = parseTomlSpec(t, "w.toml", [](const std::string &) {});
    validate(cfg);
    return cfg;
  };
  MemoryBill two = compileModel(widths(2)).plan.memoryBill();
  MemoryBill many = compileModel(widths(32)).plan.memoryBill();
  EXPECT_EQ(two.arenaBytes.at("decode"), many.arenaBytes.at("decode"));
  EXPECT_EQ(two.arenaBytes.at("prefill"), many.arenaBytes.at("prefill"));
  // Far less than every intermediate of 32 layers side by side.
  EXPECT_LT(many.arenaBytes.at("prefill"), 256LL * 14336 * 4 * 4);
}

TEST(Pipeline, StepsReferenceKnownWeights) {
  CompileOutput out = compileModel(makeConfig("attention_bias = true\n"));
  for (const auto &[name, ep] : out.plan.entryPoints)
    for (const Step &s : ep.steps)
      for (const std::string &weight : stepWeights(s))
        EXPECT_NE(out.plan.findWeight(weight), nullptr) << s.name() << " " << weight;
}
