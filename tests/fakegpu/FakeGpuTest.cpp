// The real CUDA executor (runtime/cuda/CudaExecutor.cpp) on a fake CUDA
// runtime and cuBLAS (tests/fakegpu), whose kernels run in the emulator:
// what the GPU tests check, here on any machine, for the executor's own
// logic: the launch table replayed with the right buffers and rows, graphs
// captured once per (entry point, rows) and replayed, inputs and sampled
// tokens crossing through pinned buffers, the cubin chosen for the device,
// the bill checked before any allocation, and no device reported cleanly.
#include "codegen/Compiler.h"
#include "codegen/CudaCodegen.h"
#include "frontend/ConfigParser.h"
#include "runtime/cpu/CpuExecutor.h"
#include "runtime/Engine.h"
#include "runtime/Perplexity.h"
#include "runtime/Scheduler.h"
#include "formats/WeightFormats.h"
#include "plan/WeightPacking.h"
#include "runtime/cuda/CudaExecutor.h"
#include "tests/common/ActivationsScope.h"
#include "tests/common/CudaShapes.h"
#include "tests/common/SamplingDraws.h"
#include "tests/common/ServeCompare.h"
#include "tests/common/StepCompare.h"
#include "tests/emu/EmuCompile.h"
#include "tests/fakegpu/FakeCuda.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <fstream>
#include <map>
#include <numeric>

#include <sys/mman.h>
#include <set>
#include <tuple>

// The CPU runtime is these tests' reference for the CUDA target, whose
// kernels compute the plan's f32 activations: the CPU takes them too, not
// its default int8 ones (runtime/cpu/LinearDot.h).
static const kvplan::test::ActivationsScope kF32Activations(kvplan::cpu::Activations::f32);

using namespace kvplan;
using kvplan::testing::runAlone;
using kvplan::testing::normalisedError;
using kvplan::testing::serveAfterFirst;
using kvplan::testing::tolerance;

namespace {

struct Model {
  Plan plan;    // the cuda target's
  Plan cpuPlan; // the same model compiled for the CPU, the reference
  CudaCode code;
  std::vector<char> weights;
};

Model build(const ModelConfig &cfg) {
  CompileOutput out = compileModel(cfg);
  ModelConfig cpuCfg = cfg;
  cpuCfg.compile.target = Target::cpu;
  cpuCfg.compile.l2PrefetchMib = 0; // a GPU's; the cpu target refuses it
  validate(cpuCfg); // the cpu target's defaults: no smaller copies
  CudaModule mod = generateCuda(out.plan, {"sm_90a"});
  Model m;
  m.plan = out.plan;
  m.cpuPlan = compileModel(cpuCfg).plan;
  m.plan.cudaArchs = {"sm_90a"};
  m.plan.deviceWorkspaceBytes = mod.program.workspaceBytes;
  m.code.program = mod.program;
  m.code.source = mod.source;
  m.code.cubins["sm_90a"] = mod.source; // the fake runtime "loads" source into the emulator
  std::unique_ptr<WeightSource> src = openWeights("random:9", m.plan.model);
  m.weights = packWeightsInMemory(m.plan, *src);
  // One weights section serves both plans: the targets' passes change no weight.
  EXPECT_EQ(toJson(m.plan)["weights"], toJson(m.cpuPlan)["weights"]);
  return m;
}
Model build(const std::string &model, const std::string &compile) {
  return build(kvplan::testing::cudaConfig(model, compile));
}

const char *kGqa = "architecture = \"llama\"\nhidden_size = 128\nintermediate_size = 320\n"
                   "num_layers = 2\nnum_heads = 4\nnum_kv_heads = 2\nvocab_size = 300";
const char *kBatch3 = "weight_dtype = \"bf16\"\nmax_batch = 3\nmax_seq_len = 256\nprefill_chunk = 32";
const char *kBatch1 = "weight_dtype = \"bf16\"\nmax_batch = 1\nmax_seq_len = 256\nprefill_chunk = 32";
// The same in f16, whose products of more than 8 rows (the prefill chunks)
// are cuBLAS's; bf16 ones take the tensor-core kernels up to 32 rows.
const char *kBatch3F16 = "weight_dtype = \"f16\"\nmax_batch = 3\nmax_seq_len = 256\nprefill_chunk = 32";

class FakeGpu : public ::testing::Test {
protected:
  void SetUp() override {
    if (emuCudaIncludeDir().empty())
      GTEST_SKIP() << "no CUDA headers in this build: the kernel emulator needs cuda_bf16.h";
    setenv("KVPLAN_CUBLAS_LIBRARY", KVPLAN_FAKE_CUBLAS, 1);
    fakecuda_configure(1, 9, 0, 80LL << 30);
  }
};

// Every device op against the CPU runtime's step, for every shape of
// tests/common/CudaShapes.h.
TEST_F(FakeGpu, EveryKernelMatchesTheCpuRuntime) {
  for (const kvplan::testing::Shape &s : kvplan::testing::kShapes) {
    SCOPED_TRACE(s.what);
    Model m = build(kvplan::testing::cudaConfig(s.model, s.compile, s.rope));
    CpuExecutor cpu(m.cpuPlan, m.weights.data(), m.weights.size(), 2);
    CudaExecutor gpu(m.plan, m.code, m.weights.data(), m.weights.size());
    std::mt19937 rng(11);
    kvplan::testing::compareStepByStep(gpu, cpu, m.plan, m.code.program, rng);
  }
}

// Prefill longer than a chunk (the second chunk reads the first's cache) and
// four decode steps, for every shape.
TEST_F(FakeGpu, WholeModelMatchesTheCpuRuntime) {
  for (const kvplan::testing::Shape &s : kvplan::testing::kShapes) {
    SCOPED_TRACE(s.what);
    Model m = build(kvplan::testing::cudaConfig(s.model, s.compile, s.rope));
    Engine cpu(m.cpuPlan, m.weights.data(), m.weights.size(), 2);
    Engine gpu(std::make_unique<CudaExecutor>(m.plan, m.code, m.weights.data(), m.weights.size()));
    std::mt19937 rng(3);
    std::vector<int32_t> prompt(size_t(m.plan.settings.prefillChunk + 5));
    for (int32_t &t : prompt) t = int32_t(rng() % uint32_t(m.plan.model.vocabSize));
    kvplan::testing::followCpu(cpu, gpu, prompt, 4, 4 * tolerance(m.plan.settings.weightDtype));
  }
}

// Every device op against the CPU's step (inputs from stepSeed), then
// whole-model logits over a prompt of a chunk and 5 tokens (from
// promptSeed) and `decodeSteps` greedy steps, within `tol`.
void stepsThenWholeModel(const Model &m, unsigned stepSeed, unsigned promptSeed, int decodeSteps,
                         double tol) {
  {
    CpuExecutor cpu(m.cpuPlan, m.weights.data(), m.weights.size(), 2);
    CudaExecutor gpu(m.plan, m.code, m.weights.data(), m.weights.size());
    std::mt19937 rng(stepSeed);
    kvplan::testing::compareStepByStep(gpu, cpu, m.plan, m.code.program, rng);
  }
  Engine cpu(m.cpuPlan, m.weights.data(), m.weights.size(), 2);
  Engine gpu(std::make_unique<CudaExecutor>(m.plan, m.code, m.weights.data(), m.weights.size()));
  std::mt19937 rng(promptSeed);
  std::vector<int32_t> prompt(size_t(m.plan.settings.prefillChunk + 5));
  for (int32_t &t : prompt) t = int32_t(rng() % uint32_t(m.plan.model.vocabSize));
  kvplan::testing::followCpu(cpu, gpu, prompt, decodeSteps, tol);
}

// A prefill chunk that is not whole tiles of 16 rows keeps the split
// attention kernel (attnPartial) that decode uses, not the tiled one:
// every step, then whole-model logits over two chunks.
TEST_F(FakeGpu, PrefillChunksOfPartTilesKeepTheSplitAttention) {
  Model m = build(kGqa, "weight_dtype = \"bf16\"\nmax_batch = 2\nmax_seq_len = 128\n"
                        "prefill_chunk = 24");
  int64_t split = 0;
  for (const DeviceOp &op : m.code.program.entries.at("prefill").ops) {
    EXPECT_NE(op.name.rfind("attn_tiled_", 0), 0u) << op.name;
    split += op.name.rfind("attn_", 0) == 0;
  }
  EXPECT_EQ(split, m.plan.model.numLayers);
  stepsThenWholeModel(m, 23, 29, 3, 4 * tolerance(m.plan.settings.weightDtype));
}

// Sliding-window attention (Mistral's): a window of 20 keys, shorter than
// the prompt (a chunk of 32 and 5 more), in the tiled prefill kernel (on
// bf16 tensor cores; the tf32 one in AttentionKernelTest) and the split
// decode one at batch 3: every step, then whole-model logits.
// With a window of 8 the prompt's second chunk starts after page 0 (16
// tokens) was given back: its first row (32) reads keys from 25 on, in a
// key tile of 32 from 0, so the tiled kernel's masked loads go through the
// table entry of a page given back (which names page 1, one the sequence
// holds).
TEST_F(FakeGpu, SlidingWindowMatchesTheCpuRuntime) {
  for (int window : {20, 8}) {
    SCOPED_TRACE("window " + std::to_string(window));
    std::string model = kGqa;
    model.replace(model.find("llama"), 5, "mistral");
    Model m = build(model + "\nsliding_window = " + std::to_string(window), kBatch3);
    const std::string suffix = "_w" + std::to_string(window);
    int64_t windowed = 0;
    for (const char *entry : {"prefill", "decode"})
      for (const DeviceOp &op : m.code.program.entries.at(entry).ops)
        windowed += op.name.rfind("attn_", 0) == 0 && op.name.find(suffix) != std::string::npos;
    EXPECT_EQ(windowed, 2 * m.plan.model.numLayers);
    stepsThenWholeModel(m, 31, 37, 6, 4 * tolerance(m.plan.settings.weightDtype));
  }
}

// A mixture of 64 experts (each lane of the routing's warps holds two), its
// routers as drawn, then all zero: every row's experts tie, and the kernel,
// as the CPU, takes the lowest indices (equal weights, 1 / k each
// renormalized); a choice another way round sums other experts' outputs.
// Every step, then whole-model logits, each way.
TEST_F(FakeGpu, SixtyFourExpertsAndTiesGoToTheLowerIndex) {
  const auto *shape =
      std::find_if(std::begin(kvplan::testing::kShapes), std::end(kvplan::testing::kShapes),
                   [](const auto &s) { return std::string(s.what) == "qwen3moe-bf16"; });
  ASSERT_NE(shape, std::end(kvplan::testing::kShapes));
  std::string model = shape->model;
  model.replace(model.find("num_experts = 8"), 15, "num_experts = 64");
  Model m = build(kvplan::testing::cudaConfig(model, shape->compile, shape->rope));
  ASSERT_EQ(m.plan.model.numExperts, 64);
  const double tol = 4 * tolerance(m.plan.settings.weightDtype);
  stepsThenWholeModel(m, 47, 53, 3, tol);
  int64_t routers = 0;
  for (const WeightEntry &w : m.plan.weights)
    if (w.name.find("feed_forward.router") != std::string::npos) {
      std::memset(m.weights.data() + w.offset, 0, size_t(w.bytes));
      ++routers;
    }
  ASSERT_EQ(routers, m.plan.model.numLayers);
  stepsThenWholeModel(m, 41, 43, 3, tol);
}

// The same for int8 and int4 weights: every step, then whole-model logits.
TEST_F(FakeGpu, QuantizedWeightsMatchTheCpuRuntime) {
  for (const kvplan::testing::Shape &s : kvplan::testing::kQuantShapes) {
    SCOPED_TRACE(s.what);
    Model m = build(kvplan::testing::cudaConfig(s.model, s.compile, s.rope));
    stepsThenWholeModel(m, 17, 5, 5, kvplan::testing::modelTolerance(m.plan));
  }
}

// Eleven sequences of different lengths decoding together in a plan for 12:
// decode's products in two tiles of 8 rows a block (the second tile 3 rows
// of its 8), the QKV with RoPE and the cache write at each row's own
// position and page table, in bf16 and int8; every row of each step's
// logits against the CPU's.
TEST_F(FakeGpu, RowTileDecodeMatchesTheCpuRuntime) {
  for (const char *dtype : {"bf16", "int8"}) {
    SCOPED_TRACE(dtype);
    Model m = build(kGqa, "weight_dtype = \"" + std::string(dtype) +
                              "\"\nmax_batch = 12\nmax_seq_len = 256\nprefill_chunk = 32");
    int64_t tiled = 0;
    for (const DeviceOp &op : m.code.program.entries.at("decode").ops)
      tiled += op.rowsDim == -1 && op.name.rfind("matvec_", 0) == 0 &&
               op.name.compare(op.name.size() - 2, 2, "r2") == 0;
    EXPECT_EQ(tiled, 4 * m.plan.model.numLayers + 1) << "QKV, o, gate|up, down and the head";
    Engine cpu(m.cpuPlan, m.weights.data(), m.weights.size(), 2);
    Engine gpu(std::make_unique<CudaExecutor>(m.plan, m.code, m.weights.data(), m.weights.size()));
    kvplan::testing::followCpuBatch(cpu, gpu, {3, 9, 17, 40, 4, 6, 33, 12, 5, 21, 8}, 3,
                                    kvplan::testing::modelTolerance(m.plan));
  }
}

// A plan for 40 sequences carries decode.1, decode.8 and decode.32, copies
// of decode at fewer rows, and prefill.8 and prefill.32 (its chunk is 48):
// their ops match
// the CPU's step by step (on their rows of the CPU's decode or prefill), and
// the engine's calls run on the smallest that holds them (1 sequence:
// decode.1's matrix-vector kernels on CUDA cores; 3: decode.8's on tensor
// cores; 20: decode.32's, 4 tiles of 8 rows a block);
// 36: decode's of 40; a prompt of 5 tokens: prefill.8, of 20: prefill.32,
// of 40: prefill's cuBLAS products), each row's logits following the
// CPU's, as they do with the copies turned off.
TEST_F(FakeGpu, SmallerCopiesOfDecodeServeFewSequences) {
  Model m = build(kGqa, "weight_dtype = \"bf16\"\nmax_batch = 40\nmax_seq_len = 128\n"
                        "prefill_chunk = 48");
  for (const char *copy : {"decode.1", "decode.8", "decode.32", "prefill.8", "prefill.32"})
    ASSERT_EQ(m.plan.entryPoints.count(copy), 1u) << copy;
  EXPECT_EQ(m.plan.entryPoints.size(), 7u);
  auto gemms = [&](const std::string &entry) {
    const std::vector<DeviceOp> &ops = m.code.program.entries.at(entry).ops;
    return std::count_if(ops.begin(), ops.end(),
                         [](const DeviceOp &op) { return op.kind == DeviceOp::gemm; });
  };
  EXPECT_GT(gemms("decode"), 0) << "bf16 products of 40 rows are cuBLAS's";
  EXPECT_EQ(gemms("decode.32"), 0) << "bf16 products of 32 rows on tensor cores";
  EXPECT_EQ(gemms("decode.8"), 0);
  EXPECT_EQ(gemms("decode.1"), 0);
  EXPECT_GT(gemms("prefill"), 0) << "bf16 products of 48 rows are cuBLAS's";
  EXPECT_EQ(gemms("prefill.32"), 0);
  EXPECT_EQ(gemms("prefill.8"), 0);
  EXPECT_LT(m.code.program.entries.at("decode.8").ops.size(),
            m.code.program.entries.at("decode").ops.size())
      << "the norms, SwiGLU and residual adds folded into decode.8's products";
  {
    CpuExecutor cpu(m.cpuPlan, m.weights.data(), m.weights.size(), 2);
    CudaExecutor gpu(m.plan, m.code, m.weights.data(), m.weights.size());
    std::mt19937 rng(5);
    kvplan::testing::compareStepByStep(gpu, cpu, m.plan, m.code.program, rng);
  }
  Engine cpu(m.cpuPlan, m.weights.data(), m.weights.size(), 2);
  auto exec = std::make_unique<CudaExecutor>(m.plan, m.code, m.weights.data(), m.weights.size());
  CudaExecutor *raw = exec.get();
  Engine gpu(std::move(exec));
  const double tol = kvplan::testing::modelTolerance(m.plan);
  auto lengths = [](int64_t n) {
    std::vector<int64_t> lens;
    for (int64_t i = 0; i < n; ++i) lens.push_back(2 + (7 * i) % 23);
    return lens;
  };
  for (const auto &[n, served] : std::vector<std::pair<int64_t, std::string>>{
           {1, "decode.1"}, {3, "decode.8"}, {20, "decode.32"}, {36, "decode"}, {8, "decode.8"}}) {
    SCOPED_TRACE(std::to_string(n) + " sequences");
    auto calls = [&] {
      auto it = raw->callsByEntry().find(served);
      return it == raw->callsByEntry().end() ? int64_t(0) : it->second;
    };
    const int64_t before = calls();
    kvplan::testing::followCpuBatch(cpu, gpu, lengths(n), 2, tol);
    EXPECT_EQ(raw->servedBy("decode"), served);
    EXPECT_GE(calls(), before + 2) << "counted where it ran";
  }
  for (const auto &[len, served] :
       std::vector<std::pair<int64_t, std::string>>{
           {5, "prefill.8"}, {20, "prefill.32"}, {40, "prefill"}}) {
    std::vector<int32_t> prompt(static_cast<size_t>(len));
    for (int64_t i = 0; i < len; ++i) prompt[size_t(i)] = int32_t((11 * i + 3) % 300);
    kvplan::testing::followCpu(cpu, gpu, prompt, 1, tol);
    EXPECT_EQ(raw->servedBy("prefill"), served) << len << " tokens";
  }
  raw->setVariants(false);
  kvplan::testing::followCpuBatch(cpu, gpu, lengths(3), 2, tol);
  EXPECT_EQ(raw->servedBy("decode"), "decode");
}

// Three sequences of different lengths (one over a prefill chunk) decoding
// together: every row of each step's [3, vocab] logits against the CPU's;
// the float shapes (bf16: decode's products on tensor cores) and the
// quantized ones.
TEST_F(FakeGpu, BatchDecodeMatchesTheCpuRuntime) {
  std::vector<kvplan::testing::Shape> shapes(std::begin(kvplan::testing::kShapes),
                                             std::end(kvplan::testing::kShapes));
  shapes.insert(shapes.end(), std::begin(kvplan::testing::kQuantShapes),
                std::end(kvplan::testing::kQuantShapes));
  for (const kvplan::testing::Shape &s : shapes) {
    Model m = build(kvplan::testing::cudaConfig(s.model, s.compile, s.rope));
    if (m.plan.settings.maxBatch < 3) continue;
    SCOPED_TRACE(s.what);
    Engine cpu(m.cpuPlan, m.weights.data(), m.weights.size(), 2);
    Engine gpu(std::make_unique<CudaExecutor>(m.plan, m.code, m.weights.data(), m.weights.size()));
    kvplan::testing::followCpuBatch(cpu, gpu, {5, 40, m.plan.settings.prefillChunk + 7}, 4,
                                    kvplan::testing::modelTolerance(m.plan));
  }
}

std::vector<std::vector<float>> followCpu(Engine &cpu, Engine &gpu, int64_t promptLen, int steps,
                                          double tol) {
  std::vector<int32_t> prompt(static_cast<size_t>(promptLen));
  for (int64_t i = 0; i < promptLen; ++i) prompt[size_t(i)] = int32_t((i * 37 + 5) % cpu.vocabSize());
  return kvplan::testing::followCpu(cpu, gpu, prompt, steps, tol);
}

// m's generation follows the CPU's; each (entry point, rows) is captured as
// a graph once and replayed, and eagerly gives the same numbers.
void generationReplays(const Model &m, double tol) {
  Engine cpu(m.cpuPlan, m.weights.data(), m.weights.size(), 2);
  auto exec = std::make_unique<CudaExecutor>(m.plan, m.code, m.weights.data(), m.weights.size());
  CudaExecutor *raw = exec.get();
  Engine gpu(std::move(exec));
  // 45 tokens: a full 32-row chunk, then 13 rows run as 16.
  auto graphs = followCpu(cpu, gpu, 45, 5, tol);
  EXPECT_EQ(raw->graphsCaptured(), 3) << "prefill 32 and 16 rows, decode 1 row";
  FakeCudaCounters before = fakecuda_counters();
  followCpu(cpu, gpu, 45, 5, tol);
  FakeCudaCounters after = fakecuda_counters();
  EXPECT_EQ(raw->graphsCaptured(), 3) << "nothing is captured twice";
  EXPECT_EQ(after.captures, before.captures);
  EXPECT_EQ(after.graphLaunches - before.graphLaunches, 2 + 5);
  EXPECT_EQ(after.launches, before.launches) << "replays launch nothing new";

  // Eagerly: the same numbers, bit for bit.
  raw->setGraphs(false);
  auto eager = followCpu(cpu, gpu, 45, 5, tol);
  ASSERT_EQ(eager.size(), graphs.size());
  for (size_t i = 0; i < eager.size(); ++i)
    EXPECT_EQ(std::memcmp(eager[i].data(), graphs[i].data(), eager[i].size() * 4), 0) << i;
  EXPECT_EQ(fakecuda_counters().graphLaunches, after.graphLaunches);

  // Two sequences in one decode step: a new graph for 2 rows.
  raw->setGraphs(true);
  const int a = gpu.open(), b = gpu.open();
  std::vector<int32_t> p = {1, 2, 3};
  const int32_t ta = gpu.prefillNext(a, p.data(), 3), tb = gpu.prefillNext(b, p.data(), 3);
  EXPECT_EQ(ta, tb);
  std::vector<int32_t> both = gpu.decodeNext({a, b}, {ta, tb});
  EXPECT_EQ(both[0], both[1]) << "the same sequence twice decodes the same";
  EXPECT_EQ(raw->graphsCaptured(), 5) << "prefill of 3 rows, decode of 2 rows";
}

// In bf16 (every product a generated kernel) and f16 (cuBLAS's products in
// the prefill graphs).
TEST_F(FakeGpu, GenerationMatchesTheCpuAndGraphsReplay) {
  for (auto [compile, dtype] : {std::pair{kBatch3, DType::bf16}, {kBatch3F16, DType::f16}}) {
    SCOPED_TRACE(dtypeName(dtype));
    generationReplays(build(kGqa, compile), 4 * tolerance(dtype));
  }
}

// Speculative decoding's @verify on the device: every row's logits match the
// CPU's verify, it is captured as a graph once and replayed, and a rollback
// of the device's cache leaves the next step right.
TEST_F(FakeGpu, VerifyMatchesTheCpuAndIsCapturedAsAGraph) {
  Model m = build(kGqa, std::string(kBatch1) + "\nspeculate = 4");
  Engine cpu(m.cpuPlan, m.weights.data(), m.weights.size(), 2);
  auto exec = std::make_unique<CudaExecutor>(m.plan, m.code, m.weights.data(), m.weights.size());
  CudaExecutor *raw = exec.get();
  Engine gpu(std::move(exec));
  ASSERT_EQ(gpu.verifyRows(), 5);
  const double tol = 4 * tolerance(DType::bf16);
  const int64_t v = cpu.vocabSize();
  std::mt19937 rng(17);
  std::vector<int32_t> prompt(20), rows(5);
  for (int32_t &t : prompt) t = int32_t(rng() % uint32_t(v));
  for (int32_t &t : rows) t = int32_t(rng() % uint32_t(v));
  const int sc = cpu.open(), sd = gpu.open();
  cpu.prefill(sc, prompt.data(), 20);
  gpu.prefill(sd, prompt.data(), 20);
  int64_t captured = 0;
  for (int rep = 0; rep < 2; ++rep) {
    SCOPED_TRACE("verify " + std::to_string(rep));
    const float *lc = cpu.verify(sc, rows.data(), 5);
    const std::vector<float> c(lc, lc + 5 * v);
    const float *ld = gpu.verify(sd, rows.data(), 5);
    for (int64_t i = 0; i < 5; ++i)
      EXPECT_LE(normalisedError(std::vector<float>(ld + i * v, ld + (i + 1) * v),
                                std::vector<float>(c.begin() + i * v, c.begin() + (i + 1) * v)),
                tol)
          << "row " << i;
    if (rep == 0) captured = raw->graphsCaptured();
    cpu.truncate(sc, 20 + rep);
    gpu.truncate(sd, 20 + rep);
  }
  EXPECT_EQ(raw->graphsCaptured(), captured) << "the second verify replays the first's graph";
  // After the rollback (21 tokens kept), a decode step agrees.
  const float *lc = cpu.decode({sc}, {rows[1]});
  const std::vector<float> c(lc, lc + v);
  const float *ld = gpu.decode({sd}, {rows[1]});
  EXPECT_LE(normalisedError(std::vector<float>(ld, ld + v), c), tol);
  gpu.close(sd);
  gpu.pages().check();
}

// The prompt's log-probabilities on the device: @score's rows match the
// CPU's, for whole calls and a part one (8, 8 and 4 of its 8 rows), and the
// cache they wrote serves the next decode step.
TEST_F(FakeGpu, ScoreMatchesTheCpuRowForRow) {
  Model m = build(kGqa, std::string(kBatch1) + "\nscore_rows = 8");
  Engine cpu(m.cpuPlan, m.weights.data(), m.weights.size(), 2);
  Engine gpu(std::make_unique<CudaExecutor>(m.plan, m.code, m.weights.data(), m.weights.size()));
  ASSERT_EQ(gpu.scoreRows(), 8);
  const double tol = 4 * tolerance(DType::bf16);
  const int64_t v = cpu.vocabSize();
  std::mt19937 rng(23);
  std::vector<int32_t> prompt(20);
  for (int32_t &t : prompt) t = int32_t(rng() % uint32_t(v));
  const int sc = cpu.open(), sd = gpu.open();
  kvplan::testing::compareScoreCalls(cpu, sc, gpu, sd, prompt, tol);
  const float *lc = cpu.decode({sc}, {prompt[3]});
  const std::vector<float> c(lc, lc + v);
  const float *ld = gpu.decode({sd}, {prompt[3]});
  EXPECT_LE(normalisedError(std::vector<float>(ld, ld + v), c), tol);
  gpu.close(sd);
  gpu.pages().check();

  // kvplan perplexity on the device, with the CPU's engine as its base
  // (--base): the same perplexity, and distributions that hardly diverge,
  // over chunks of 20 tokens scored in three calls each.
  Engine cpu2(m.cpuPlan, m.weights.data(), m.weights.size(), 2);
  std::vector<int32_t> text(3 * 20 + 7);
  for (int32_t &t : text) t = int32_t(rng() % uint32_t(v));
  PerplexityOptions po;
  po.ctx = 20;
  po.bos = 1;
  po.base = &cpu2;
  const PerplexityResult r = perplexity(gpu, text, po);
  ASSERT_EQ(r.chunks, 3);
  ASSERT_EQ(r.divergence.size(), 1u);
  const Divergence &d = r.divergence[0];
  EXPECT_NEAR(r.ppl(), d.base.ppl(), tol * r.ppl());
  EXPECT_LT(d.kldQuantile(1.0), 1e-3);
  EXPECT_EQ(gpu.openSequences(), 0);
  gpu.pages().check();
}

// The scheduler on the CUDA executor: a prefix-cache hit copies a page on
// the device (the partial last one), and each request's greedy tokens equal
// the same request run alone on a fresh executor.
TEST_F(FakeGpu, TheSchedulerServesOnTheDevice) {
  Model m = build(kGqa, kBatch3);
  auto fresh = [&] {
    return std::make_unique<CudaExecutor>(m.plan, m.code, m.weights.data(), m.weights.size());
  };
  std::vector<std::vector<int32_t>> prompts;
  // Pages of 16: the first request (16 new tokens) fills three pages; the
  // others share two, and the third's first 5 tokens, which they copy.
  std::vector<int32_t> shared(37);
  std::iota(shared.begin(), shared.end(), 5);
  for (int i = 0; i < 3; ++i) {
    prompts.push_back(shared);
    for (int j = 0; j <= i; ++j) prompts.back().push_back(int32_t(100 + 7 * i + j));
  }
  prompts.push_back(shared); // all of it cached but its last token
  Engine served(fresh());
  Scheduler s(served, nullptr);
  std::vector<int64_t> maxNew(prompts.size(), 4);
  maxNew[0] = 16;
  const std::vector<std::vector<int32_t>> got = serveAfterFirst(s, prompts, maxNew);
  EXPECT_EQ(s.stats().cachedPromptTokens, 2 * 37 + 36);
  for (size_t i = 0; i < prompts.size(); ++i) {
    Engine alone(fresh(), {false});
    EXPECT_EQ(got[i].size(), size_t(maxNew[i]));
    EXPECT_EQ(got[i], runAlone(alone, prompts[i], got[i].size())) << "request " << i;
  }
  served.pages().check();
  EXPECT_EQ(served.pages().available(), served.pages().size());
}

// What needs whole rows of logits on the device path, where tokens are
// otherwise drawn on the device: a request asking for log-probabilities
// gets the rows its tokens came from copied back; a step with a penalised
// request draws every row on the host. Beside them, a plain request stays
// greedy. Each equals its own run alone (the penalised one by the tests'
// rule).
TEST_F(FakeGpu, LogprobsAndPenaltiesTakeTheRowsToTheHost) {
  Model m = build(kGqa, kBatch3);
  auto fresh = [&] {
    return std::make_unique<CudaExecutor>(m.plan, m.code, m.weights.data(), m.weights.size());
  };
  Engine served(fresh());
  Scheduler s(served, nullptr);
  // The plain request first: the one with log-probabilities is not row 0.
  const std::vector<std::vector<int32_t>> prompts = {{23, 42, 7}, {4, 8, 15, 16},
                                                     {4, 8, 15, 16, 4, 8}};
  std::vector<SamplingOptions> options(3);
  options[2].repetitionPenalty = 1.5;
  options[2].frequencyPenalty = 0.5;
  std::vector<std::vector<int32_t>> got(3);
  std::vector<TokenLogprobs> logprobs;
  for (size_t i = 0; i < prompts.size(); ++i) {
    GenerationRequest r;
    r.prompt = prompts[i];
    r.maxNewTokens = 8;
    r.sampling = options[i];
    r.logprobs = i == 1 ? 2 : -1;
    r.onEvent = [&, i](const TokenEvent &e) {
      if (e.token >= 0) got[i].push_back(e.token);
      if (e.logprobs) logprobs.push_back(*e.logprobs);
    };
    s.submit(std::move(r));
  }
  s.runUntilIdle();
  ASSERT_EQ(logprobs.size(), got[1].size()) << "only the request that asked";
  Engine alone(fresh(), {false});
  const std::vector<double> want = kvplan::testing::logprobsAlone(alone, prompts[1], got[1]);
  for (size_t t = 0; t < got[1].size(); ++t) {
    EXPECT_EQ(logprobs[t].chosen.token, got[1][t]);
    // Three rows run other kernels (a copy of decode for more rows) than
    // one alone: their sums round differently, by a few thousandths of a
    // logit here. Another row's logits would be off by whole units.
    EXPECT_NEAR(logprobs[t].chosen.logprob, want[t], 1e-2) << "token " << t;
    ASSERT_EQ(logprobs[t].top.size(), 2u);
    EXPECT_EQ(logprobs[t].top[0].token, got[1][t]) << "greedy: the most likely";
    EXPECT_DOUBLE_EQ(logprobs[t].top[0].logprob, logprobs[t].chosen.logprob);
  }
  EXPECT_EQ(got[0], runAlone(alone, prompts[0], 8));
  EXPECT_EQ(got[1], runAlone(alone, prompts[1], 8));
  EXPECT_EQ(got[2], kvplan::testing::penalisedAlone(alone, prompts[2], 8, options[2]));
  EXPECT_NE(got[2], runAlone(alone, prompts[2], 8)) << "the penalties change its tokens";
}

TEST_F(FakeGpu, SamplingParametersReachTheDevice) {
  Model m = build(kGqa, kBatch1);
  Engine gpu(std::make_unique<CudaExecutor>(m.plan, m.code, m.weights.data(), m.weights.size()));
  SamplingOptions o;
  o.temperature = 3.0;
  o.topK = 2;
  o.seed = 5;
  gpu.setSampling(o);
  std::vector<int32_t> p = {4, 8, 15};
  const int s = gpu.open();
  int32_t t = gpu.prefillNext(s, p.data(), 3);
  std::set<int32_t> seen;
  auto copiesOf = [](const std::function<int32_t()> &step, int32_t &next) {
    const long long before = fakecuda_counters().copies;
    next = step();
    return fakecuda_counters().copies - before;
  };
  long long deviceCopies = 0; // a step's copies when the device draws
  for (int i = 0; i < 30; ++i) {
    int32_t next = -1;
    deviceCopies = copiesOf([&] { return gpu.decodeNext({s}, {t})[0]; }, next);
    const float *l = gpu.executor().logits("decode");
    std::vector<int32_t> idx(static_cast<size_t>(gpu.vocabSize()));
    std::iota(idx.begin(), idx.end(), 0);
    std::partial_sort(idx.begin(), idx.begin() + 2, idx.end(),
                      [&](int32_t x, int32_t y) { return l[x] > l[y]; });
    EXPECT_TRUE(next == idx[0] || next == idx[1]) << "step " << i;
    seen.insert(next == idx[0] ? 0 : 1);
    t = next;
  }
  EXPECT_EQ(seen.size(), 2u) << "at temperature 3 both of the top two come up";
  // min-p is drawn on the device too: its steps copy what a top-k step
  // copies (a penalised one also brings the logits back to the host), and
  // each token is one min-p keeps.
  o.topK = 0;
  o.minP = 0.5;
  gpu.setSampling(o);
  std::set<int32_t> drawn;
  int64_t cut = 0; // steps where min-p left tokens out
  for (int i = 0; i < 30; ++i) {
    int32_t next = -1;
    EXPECT_EQ(copiesOf([&] { return gpu.decodeNext({s}, {t})[0]; }, next), deviceCopies);
    const float *l = gpu.executor().logits("decode");
    const float best = *std::max_element(l, l + gpu.vocabSize());
    auto kept = [&](int32_t x) { return std::exp((double(l[x]) - best) / o.temperature) >= 0.5; };
    EXPECT_TRUE(kept(next)) << "step " << i << ": token " << next;
    int64_t n = 0;
    for (int32_t x = 0; x < gpu.vocabSize(); ++x) n += kept(x);
    cut += n < gpu.vocabSize();
    drawn.insert(next);
    t = next;
  }
  EXPECT_GT(cut, 20) << "min-p should leave tokens out";
  EXPECT_GT(drawn.size(), 3u);
  o.presencePenalty = 0.5;
  gpu.setSampling(o);
  int32_t next = -1;
  EXPECT_GT(copiesOf([&] { return gpu.decodeNext({s}, {t})[0]; }, next), deviceCopies);
}

namespace {

/// The sampling kernels alone on the 4-row shape (vocabulary 512, two
/// argmax slices of 256 tokens): logits and parameters in, tokens out.
struct SamplingKernels {
  Model m;
  CudaExecutor gpu;
  const EntryPoint &ep;
  const CudaEntry &ce;
  const int64_t v, rows;
  SamplingKernels()
      : m(build(kvplan::testing::cudaConfig(kvplan::testing::kShapes[0].model,
                                            kvplan::testing::kShapes[0].compile,
                                            kvplan::testing::kShapes[0].rope))),
        gpu(m.plan, m.code, m.weights.data(), m.weights.size()),
        ep(m.plan.entryPoints.at("decode")), ce(m.code.program.entries.at("decode")),
        v(m.plan.model.vocabSize), rows(ep.rows) {}
  std::vector<int32_t> draw(const std::vector<float> &logits,
                            const std::vector<DeviceSamplingParams> &p) {
    return kvplan::testing::drawOnDevice(gpu, m.plan, m.code.program, logits, p);
  }
};

} // namespace

// The sampling kernel on crafted logits: greedy ties, top-k, top-p and the
// draw's split in index order.
TEST_F(FakeGpu, SamplingKernelFollowsTopKTopPAndTheDraw) {
  SamplingKernels k;
  const CudaEntry &ce = k.ce;
  const int64_t v = k.v, rows = k.rows;
  ASSERT_EQ(rows, 4);
  std::vector<float> logits(size_t(rows * v), -100.0f);
  auto at = [&](int64_t r, int64_t i) -> float & { return logits[size_t(r * v + i)]; };
  for (int64_t i = 0; i < v; ++i) at(0, i) = 0.0f;
  at(0, 7) = at(0, 9) = 5.0f;                  // greedy, a tie: the lower index
  at(1, 3) = 0.0f, at(1, 10) = std::log(3.0f); // top-2: 1/4 and 3/4 in index order
  at(2, 3) = std::log(3.0f), at(2, 10) = 0.0f; // top-p 0.5 keeps token 3 alone
  at(3, 1) = at(3, 2) = 0.0f;                  // two equal: the draw splits at 1/2
  auto sample = [&](const std::vector<DeviceSamplingParams> &p) { return k.draw(logits, p); };
  EXPECT_EQ(
      sample({{0, 1, 0, 0.9f, 0}, {1, 1, 2, 0.2f, 0}, {1, 0.5f, 0, 0.99f, 0}, {1, 1, 0, 0.49f, 0}}),
      (std::vector<int32_t>{7, 3, 3, 1}));
  EXPECT_EQ(
      sample({{2, 1, 1, 0.5f, 0}, {1, 1, 2, 0.3f, 0}, {1, 0.5f, 0, 0.0f, 0}, {1, 1, 0, 0.51f, 0}}),
      (std::vector<int32_t>{7, 10, 3, 2}));
  // Top-k 2 of 512 equal logits keeps the ties: any token may come.
  for (int64_t i = 0; i < v; ++i) at(1, i) = 1.0f;
  std::vector<int32_t> t =
      sample({{0, 1, 0, 0, 0}, {1, 1, 2, 0.999f, 0}, {0, 1, 0, 0, 0}, {0, 1, 0, 0, 0}});
  EXPECT_EQ(t[1], int32_t(v - 1));
  // Top-k 100 of 512 distinct logits that share their first key bytes in
  // runs (every warp counts many tokens in one bin): the kept tokens are
  // 412..511, and a draw of 0 takes the first of them in index order.
  for (int64_t i = 0; i < v; ++i) at(1, i) = float(i) / 1000.0f;
  t = sample({{0, 1, 0, 0, 0}, {1, 1, 100, 0.0f, 0}, {0, 1, 0, 0, 0}, {0, 1, 0, 0, 0}});
  EXPECT_EQ(t[1], 412);
  t = sample({{0, 1, 0, 0, 0}, {1, 1, 101, 0.0f, 0}, {0, 1, 0, 0, 0}, {0, 1, 0, 0, 0}});
  EXPECT_EQ(t[1], 411);
  for (int64_t i = 0; i < v; ++i) at(1, i) = 1.0f;
  // The greedy choice merged from the argmax pass's slices (256 tokens
  // each, two here): a tie across slices keeps the lower index, a maximum
  // in the second slice wins, also with top-k 1 at a temperature.
  ASSERT_EQ(ce.sampling.at(0).grid[0], 2);
  at(0, 300) = 5.0f;
  at(2, 400) = at(2, 450) = 9.0f;
  EXPECT_EQ(sample({{0, 1, 0, 0, 0}, {0, 1, 0, 0, 0}, {0, 1, 0, 0, 0}, {0, 1, 0, 0, 0}}),
            (std::vector<int32_t>{7, 0, 400, 1}));
  EXPECT_EQ(sample({{0, 1, 0, 0, 0}, {0, 1, 0, 0, 0}, {1, 1, 1, 0.7f, 0}, {0, 1, 0, 0, 0}})[2],
            400);
  // A slice of -inf logits weighs nothing: the draw by slices still splits
  // tokens 1 and 2 at 1/2.
  for (int64_t i = 256; i < v; ++i) at(3, i) = -INFINITY;
  EXPECT_EQ(sample({{0, 1, 0, 0, 0}, {0, 1, 0, 0, 0}, {0, 1, 0, 0, 0}, {1, 1, 0, 0.51f, 0}})[3], 2);
  EXPECT_EQ(sample({{0, 1, 0, 0, 0}, {0, 1, 0, 0, 0}, {0, 1, 0, 0, 0}, {1, 1, 0, 0.49f, 0}})[3], 1);
}

// min-p on the device, in vLLM's order (temperature, min-p, then top-k and
// top-p among what min-p keeps): probabilities 0.4, 0.3, 0.2, 0.06 and
// 0.04; and a flat row whose min-p set reaches below the candidates.
TEST_F(FakeGpu, SamplingKernelKeepsMinPBeforeTopKAndTopP) {
  SamplingKernels k;
  const int64_t v = k.v;
  ASSERT_EQ(k.rows, 4);
  std::vector<float> logits(size_t(4 * v), -100.0f);
  auto at = [&](int64_t r, int64_t i) -> float & { return logits[size_t(r * v + i)]; };
  const float probs[] = {0.4f, 0.3f, 0.2f, 0.06f, 0.04f};
  for (int64_t r = 0; r < 3; ++r)
    for (int i = 0; i < 5; ++i) at(r, 10 + i) = std::log(probs[i]);
  for (int64_t i = 0; i < v; ++i) at(3, i) = float(i) / 1000.0f;
  auto sample = [&](const std::vector<DeviceSamplingParams> &p) { return k.draw(logits, p); };
  // A draw of 0.99 falls on the last token kept: 14 with nothing cut; with
  // min-p 0.2 (at least 0.08) on 12; min-p 0.2 then top-p 0.75 keeps two
  // (0.4 and 0.3 are 0.78 of 0.9), where top-p alone keeps three; min-p 1
  // keeps the best alone, as does min-p 0.8 (at least 0.32) before top-k 2.
  // Row 3: min-p 0.7 keeps logits >= 0.511 + ln 0.7,
  // tokens 155 to 511 (the candidates hold 64), and a draw of 0 takes 155.
  EXPECT_EQ(sample({{1, 1, 0, 0.99f, 0}, {1, 1, 0, 0.99f, 0.2f}, {1, 0.75f, 0, 0.99f, 0.2f},
                    {1, 1, 0, 0.0f, 0.7f}}),
            (std::vector<int32_t>{14, 12, 11, 155}));
  EXPECT_EQ(sample({{1, 1, 0, 0.99f, 1.0f}, {1, 0.75f, 0, 0.99f, 0}, {1, 1, 2, 0.99f, 0.8f},
                    {1, 1, 0, 0.999f, 0.7f}}),
            (std::vector<int32_t>{10, 12, 10, 511}));
  // The temperature first: at 0.5, 0.06 is 0.0225 of 0.4's likelihood, so
  // min-p 0.03 leaves out tokens 13 and 14 (kept at temperature 1).
  EXPECT_EQ(sample({{0.5f, 1, 0, 0.9999f, 0.03f}, {1, 1, 0, 0.9999f, 0.03f}, {0, 1, 0, 0, 0.5f},
                    {1, 1, 0, 0.0f, 0.99f}}),
            (std::vector<int32_t>{12, 14, 10, 501}));
}

// The sampling kernels on random logits against referenceDraw: peaked and
// flat rows, top-k within the candidates (32 a slice of 256 tokens: 64) and
// beyond them, top-p sets small and large, and draws with nothing cut. The
// candidates decide the peaked rows; the flat ones and top-k 100 go over
// the whole row; temperature alone draws by slices.
TEST_F(FakeGpu, SamplingKernelDrawsAsADoublePrecisionReference) {
  SamplingKernels k;
  ASSERT_EQ(k.ce.sampling.at(0).grid[0], 2) << "two slices of 256 tokens";
  const int draws = kvplan::testing::checkRandomDraws(
      [&](const std::vector<float> &l, const std::vector<DeviceSamplingParams> &p) {
        return k.draw(l, p);
      },
      k.v, k.rows, 24, 7);
  EXPECT_EQ(draws, 96);
}

TEST_F(FakeGpu, TheBillIsCheckedBeforeAnyAllocation) {
  Model m = build(kGqa, kBatch3);
  fakecuda_configure(1, 9, 0, 64LL << 20); // 64 MiB free
  try {
    CudaExecutor x(m.plan, m.code, m.weights.data(), m.weights.size());
    FAIL() << "a plan needing more than the free memory was accepted";
  } catch (const InputError &e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("out of GPU memory: the plan needs"), std::string::npos) << msg;
    EXPECT_NE(msg.find("kvplan fake GPU has 64.0 MiB free"), std::string::npos) << msg;
    EXPECT_NE(msg.find("short by"), std::string::npos) << msg;
  }
  EXPECT_EQ(fakecuda_counters().deviceAllocations, 0);
}

namespace {

/// Loads `cfg` on the dry fake runtime and checks that the CUDA executor
/// allocates its bill, line for line, and is refused with one byte less.
void expectTheExecutorAllocatesTheBill(ModelConfig cfg) {
  cfg.compile.target = Target::cuda;
  validate(cfg);
  CompileOutput out = compileModel(cfg);
  CudaModule mod = generateCuda(out.plan, {"sm_90a"});
  out.plan.cudaArchs = {"sm_90a"};
  out.plan.deviceWorkspaceBytes = mod.program.workspaceBytes;
  CudaCode code{mod.source, mod.program, {{"sm_90a", mod.source}}};
  const MemoryBill b = out.plan.memoryBill();
  void *weights = mmap(nullptr, size_t(b.weightsBlobBytes), PROT_NONE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  ASSERT_NE(weights, MAP_FAILED);
  fakecuda_configure(1, 9, 0, b.totalBytes);
  {
    CudaExecutor x(out.plan, code, static_cast<const char *>(weights), uint64_t(b.weightsBlobBytes));
    std::map<std::string, int64_t> lines;
    for (const Allocation &a : x.allocations()) lines[a.what] += a.bytes;
    EXPECT_EQ(lines["weights"], b.weightsBlobBytes);
    EXPECT_EQ(lines["KV cache"], b.kvCacheBytes);
    EXPECT_EQ(lines["arena"], b.arenaAllocBytes);
    EXPECT_EQ(lines["workspace"], b.workspaceBytes);
    EXPECT_EQ(lines["host staging"], b.hostPinnedBytes);
    EXPECT_EQ(lines.size(), 5u);
    const FakeCudaCounters c = fakecuda_counters();
    EXPECT_EQ(c.deviceBytes + b.reserveBytes, b.totalBytes);
    EXPECT_EQ(c.pinnedBytes, b.hostPinnedBytes);
  }
  // One byte less free than the bill: refused before any allocation.
  fakecuda_configure(1, 9, 0, b.totalBytes - 1);
  EXPECT_THROW(CudaExecutor(out.plan, code, static_cast<const char *>(weights),
                            uint64_t(b.weightsBlobBytes)),
               InputError);
  EXPECT_EQ(fakecuda_counters().deviceAllocations, 0);
  munmap(weights, size_t(b.weightsBlobBytes));
}

} // namespace

// What the CUDA executor allocates at load is the bill, line for line, for
// every model in models/ (compiled for the cuda target), as the CUDA runtime
// counts it; the free memory it needs is that plus the reserve, to the byte.
// The fake runtime gives address space only (the weights alone are 16 GB).
TEST_F(FakeGpu, TheExecutorAllocatesExactlyTheBill) {
  fakecuda_set_dry(1);
  const std::filesystem::path models = std::filesystem::path(KVPLAN_SOURCE_DIR) / "models";
  for (const auto &e : std::filesystem::directory_iterator(models)) {
    if (e.path().extension() != ".toml") continue;
    SCOPED_TRACE(e.path().filename().string());
    ModelConfig cfg = loadModelConfig(e.path().string(), {}, [](const std::string &) {});
    // gpt-oss: the cuda target refuses it by name (SpecParser.GptOss).
    if (cfg.model.attentionSinks) continue;
    expectTheExecutorAllocatesTheBill(cfg);
  }
  // Pools (kv_pages) other than tiny's 4 x 512 / 16 = 128 pages: larger, for
  // prefix caching, and one sequence's 32 pages for its four decode rows.
  for (int64_t pages : {1000, 32}) {
    SCOPED_TRACE("tiny.toml --kv-pages " + std::to_string(pages));
    SettingOverrides o;
    o.kvPages = pages;
    ModelConfig cfg = loadModelConfig((models / "tiny.toml").string(), o);
    ASSERT_EQ(cfg.compile.kvPages, pages);
    expectTheExecutorAllocatesTheBill(cfg);
  }
  fakecuda_set_dry(0);
}

// Out of GPU memory, the error names the budget that fits (the free bytes);
// compiled within it, the same model loads on the same device, its pool
// smaller, the device's free memory all taken but the reserve's.
TEST_F(FakeGpu, OutOfMemoryNamesTheBudgetThatFits) {
  fakecuda_set_dry(1);
  const std::string tiny = std::string(KVPLAN_SOURCE_DIR) + "/models/tiny.toml";
  auto load = [&](int64_t budget) {
    SettingOverrides o;
    o.target = Target::cuda;
    if (budget > 0) o.memoryBudget = budget;
    CompileOutput out = compileModel(loadModelConfig(tiny, o, [](const std::string &) {}));
    CudaModule mod = generateCuda(out.plan, {"sm_90a"});
    out.plan.cudaArchs = {"sm_90a"};
    out.plan.deviceWorkspaceBytes = mod.program.workspaceBytes;
    return std::make_pair(out.plan, CudaCode{mod.source, mod.program, {{"sm_90a", mod.source}}});
  };
  const auto [plan, code] = load(0);
  const int64_t bill = plan.memoryBill().totalBytes, page = 65536; // tiny's page, f32
  const int64_t free = bill - 5 * page / 2;                        // 2.5 pages short
  const int64_t weightsBytes = plan.memoryBill().weightsBlobBytes;
  void *weights = mmap(nullptr, size_t(weightsBytes), PROT_NONE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  ASSERT_NE(weights, MAP_FAILED);
  const char *w = static_cast<const char *>(weights);
  fakecuda_configure(1, 9, 0, free);
  std::string msg;
  try {
    CudaExecutor x(plan, code, w, uint64_t(weightsBytes));
  } catch (const InputError &e) {
    msg = e.what();
  }
  const std::string want = "Compile with --memory-budget " + std::to_string(free) +
                           " (what is free) for a KV cache that fits";
  EXPECT_NE(msg.find(want), std::string::npos) << msg;
  const auto [fitted, fittedCode] = load(free);
  EXPECT_EQ(fitted.kvCache.pages, plan.kvCache.pages - 3);
  EXPECT_EQ(fitted.memoryBill().totalBytes, bill - 3 * page);
  {
    CudaExecutor x(fitted, fittedCode, w, uint64_t(weightsBytes));
    EXPECT_EQ(fakecuda_counters().deviceBytes + fitted.memoryBill().reserveBytes,
              fitted.memoryBill().totalBytes);
  }
  munmap(weights, size_t(weightsBytes));
  fakecuda_set_dry(0);
}

// The generated kernels index the cache and the embedding table by the
// inputs the host writes without a check of their own: the executor checks
// them on the host before each run, so a wild one is an error, not a write
// outside the cache.
TEST_F(FakeGpu, StepInputsOutsideTheCacheAreRefusedOnTheHost) {
  Model m = build(kGqa, kBatch1);
  CudaExecutor gpu(m.plan, m.code, m.weights.data(), m.weights.size());
  const int64_t pages = m.plan.kvCache.pages, pageSize = m.plan.kvCache.pageSize;
  auto runError = [&](int32_t position, int32_t page, int32_t token) {
    int32_t *table = gpu.pageTable("decode");
    std::fill(table, table + m.plan.kvCache.pagesPerSequence, 0);
    table[position / pageSize] = page;
    gpu.tokens("decode")[0] = token;
    gpu.positions("decode")[0] = position;
    try {
      gpu.run("decode", 1);
    } catch (const InputError &e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  EXPECT_EQ(runError(20, 1, 5), "(no error)");
  EXPECT_NE(runError(256, 1, 5).find("row 0 of entry point 'decode' has position 256, outside "
                                     "[-1, 256)"),
            std::string::npos);
  EXPECT_NE(runError(20, int32_t(pages), 5)
                .find("reads page-table entry " + std::to_string(20 / pageSize) + ", page " +
                      std::to_string(pages) +
                      ", outside the cache's [0, " + std::to_string(pages) + ")"),
            std::string::npos);
  EXPECT_NE(runError(20, 1, 300).find("has token 300, outside [0, 300)"), std::string::npos);
}

TEST_F(FakeGpu, MachineCodeIsChosenForTheDevice) {
  Model m = build(kGqa, kBatch1);
  // An sm_86 device runs sm_80 code; sm_90a code runs on sm_90 alone.
  CudaCode code = m.code;
  code.cubins = {{"sm_80", m.code.source}};
  fakecuda_configure(1, 8, 6, 80LL << 30);
  EXPECT_NO_THROW(CudaExecutor(m.plan, code, m.weights.data(), m.weights.size()));
  fakecuda_configure(1, 8, 0, 80LL << 30);
  try {
    CudaExecutor x(m.plan, m.code, m.weights.data(), m.weights.size());
    FAIL() << "sm_90a code was accepted for an sm_80 device";
  } catch (const InputError &e) {
    EXPECT_STREQ(e.what(), "incompatible because the artifact holds machine code for sm_90a and "
                           "this GPU (kvplan fake GPU) is sm_80; recompile with --arch sm_80");
  }
}

// The RoPE cos/sin tables the executor fills must serve the plan: one for
// every rotating step's frequencies, max_seq_len positions long; a launch
// table that does not is refused before the kernels could read past one.
TEST_F(FakeGpu, RopeTablesThatDoNotServeThePlanAreRefused) {
  Model m = build(kGqa, kBatch1);
  ASSERT_EQ(m.code.program.ropeTables.size(), 1u);
  auto refusal = [&](const CudaCode &code) {
    try {
      CudaExecutor x(m.plan, code, m.weights.data(), m.weights.size());
    } catch (const InputError &e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  CudaCode shorter = m.code;
  shorter.program.ropeTables[0].positions = m.plan.settings.maxSeqLen - 1;
  EXPECT_EQ(refusal(shorter),
            "incompatible because the launch table's RoPE table has " +
                std::to_string(m.plan.settings.maxSeqLen - 1) +
                " positions and the plan's max_seq_len is " +
                std::to_string(m.plan.settings.maxSeqLen) + "; recompile the model");
  CudaCode other = m.code;
  other.program.ropeTables[0].freqs[1] *= 2;
  const std::string why = refusal(other);
  EXPECT_EQ(why.rfind("incompatible because the launch table has no RoPE table for step ", 0), 0u)
      << why;
  EXPECT_NO_THROW(CudaExecutor(m.plan, m.code, m.weights.data(), m.weights.size()));
}

// On compute capability 9.0 every kernel is launched as a programmatic
// dependent (it may start while the one before finishes, and waits for it
// inside); not on 8.x, nor with KVPLAN_CUDA_PDL=0, nor under
// KVPLAN_CUDA_SYNC. The generated source waits in every kernel. What it
// computes is the same bit for bit.
TEST_F(FakeGpu, KernelsLaunchAsProgrammaticDependentsFromHopperOn) {
  Model m = build(kGqa, kBatch1);
  CudaCode sm80 = m.code;
  sm80.cubins = {{"sm_80", m.code.source}};
  auto decode = [&](const CudaCode &code, int major) {
    fakecuda_configure(1, major, 0, 80LL << 30);
    Engine gpu(std::make_unique<CudaExecutor>(m.plan, code, m.weights.data(), m.weights.size()));
    const int s = gpu.open();
    std::vector<int32_t> prompt = {5, 6, 7};
    const int32_t t = gpu.prefillNext(s, prompt.data(), 3);
    gpu.decodeNext({s}, {t});
    const float *l = gpu.executor().logits("decode");
    const std::string says = gpu.executor().describe();
    const FakeCudaCounters c = fakecuda_counters();
    return std::tuple{std::vector<float>(l, l + m.plan.model.vocabSize), c, says};
  };
  auto [hopper, c90, d90] = decode(m.code, 9);
  EXPECT_GT(c90.launches, 0);
  EXPECT_EQ(c90.dependentLaunches, c90.launches);
  EXPECT_NE(d90.find("programmatic dependent launches"), std::string::npos) << d90;
  auto [ampere, c80, d80] = decode(sm80, 8);
  EXPECT_EQ(c80.launches, c90.launches);
  EXPECT_EQ(c80.dependentLaunches, 0);
  EXPECT_EQ(d80.find("programmatic"), std::string::npos) << d80;
  EXPECT_EQ(std::memcmp(hopper.data(), ampere.data(), hopper.size() * 4), 0);
  for (auto [env, value] : {std::pair{"KVPLAN_CUDA_PDL", "0"}, {"KVPLAN_CUDA_SYNC", "1"}}) {
    setenv(env, value, 1);
    auto [off, coff, doff] = decode(m.code, 9);
    unsetenv(env);
    EXPECT_EQ(coff.dependentLaunches, 0) << env;
    EXPECT_EQ(std::memcmp(hopper.data(), off.data(), hopper.size() * 4), 0) << env;
  }
  // Every kernel asks L2 for what the plan says (l2Prefetch: nothing
  // without --l2-prefetch), then lets the next start and waits for the one
  // before, but a matvec (matvec, matvecMma, matvecRopeKv(Mma)), which first asks
  // for its weights into L2 and loads its first runs, and the decode
  // attention (attnPartial), which first reads the call's inputs.
  size_t wrappers = 0, waits = 0, ownWait = 0;
  for (size_t at = 0; (at = m.code.source.find("extern \"C\" __global__", at)) != std::string::npos; ++at) {
    std::string line = m.code.source.substr(at, m.code.source.find('\n', at) - at);
    ++wrappers;
    const std::string asks = "(KvArgs a) { kvplan::l2Prefetch(a); ";
    const size_t body = line.find(asks);
    if (body == std::string::npos) ADD_FAILURE() << line;
    else line.replace(body, asks.size(), "(KvArgs a) { ");
    if (line.find("{ kvplan::pdlLaunchDependents(); kvplan::pdlWait(); kvplan::") != std::string::npos) ++waits;
    else if (line.find("{ kvplan::matvec<") != std::string::npos ||
             line.find("{ kvplan::matvecMma<") != std::string::npos ||
             line.find("{ kvplan::matvecRopeKv<") != std::string::npos ||
             line.find("{ kvplan::matvecRopeKvMma<") != std::string::npos ||
             line.find("{ kvplan::attnPartial<") != std::string::npos)
      ++ownWait;
    else ADD_FAILURE() << line;
  }
  EXPECT_GT(ownWait, 0u);
  EXPECT_EQ(waits + ownWait, wrappers);
}

// --l2-prefetch: a decode step's kernels ask L2 for exactly the weight bytes
// the launch table names (the plan's rows, as bytes of the weights
// section), each byte once, in pieces of at most 4 KiB at multiples of 16,
// and compute what they compute without.
TEST_F(FakeGpu, KernelsAskL2ForThePlannedWeightRowsAndChangeNoResult) {
  Model with = build(kGqa, std::string(kBatch1) + "\nl2_prefetch_mib = 1");
  Model without = build(kGqa, kBatch1);
  std::vector<std::pair<int64_t, int64_t>> planned; // [offset, end) in the weights section
  for (const DeviceOp &op : with.code.program.entries.at("decode").ops)
    for (const DeviceRange &r : op.prefetch)
      planned.push_back({r.start.offset, r.start.offset + r.bytes});
  ASSERT_FALSE(planned.empty());
  for (const auto &[name, e] : without.code.program.entries)
    for (const DeviceOp &op : e.ops) EXPECT_TRUE(op.prefetch.empty()) << name << " " << op.name;
  std::vector<std::vector<float>> logits;
  std::vector<FakeCudaPrefetch> asked(1 << 16);
  size_t n = 0;
  for (Model *m : {&with, &without}) {
    CudaOptions opts;
    opts.graphs = false;
    CudaExecutor x(m->plan, m->code, m->weights.data(), m->weights.size(), opts);
    std::mt19937 rng(5);
    kvplan::testing::setInputs(x, m->plan, "decode", 1, rng);
    fakecuda_take_prefetched(nullptr, 0);
    x.run("decode", 1);
    const size_t got = fakecuda_take_prefetched(asked.data(), asked.size());
    if (m == &with) n = got;
    else EXPECT_EQ(got, 0u);
    const float *l = x.logits("decode");
    logits.emplace_back(l, l + m->plan.model.vocabSize);
  }
  EXPECT_EQ(std::memcmp(logits[0].data(), logits[1].data(), logits[0].size() * 4), 0);
  ASSERT_GT(n, 0u);
  ASSERT_LE(n, asked.size());
  // The pieces against the planned ranges, both from their lowest byte (the
  // weights' device address is the executor's).
  std::vector<std::pair<int64_t, int64_t>> pieces;
  const char *lowest = static_cast<const char *>(asked[0].start);
  for (size_t i = 0; i < n; ++i)
    lowest = std::min(lowest, static_cast<const char *>(asked[i].start));
  int64_t askedBytes = 0, plannedBytes = 0;
  for (size_t i = 0; i < n; ++i) {
    const int64_t at = static_cast<const char *>(asked[i].start) - lowest;
    EXPECT_TRUE(asked[i].bytes > 0 && asked[i].bytes <= 4096 && asked[i].bytes % 16 == 0 &&
                at % 16 == 0) << at << " " << asked[i].bytes;
    pieces.push_back({at, at + asked[i].bytes});
    askedBytes += asked[i].bytes;
  }
  int64_t first = planned[0].first;
  for (auto &[lo, hi] : planned) first = std::min(first, lo), plannedBytes += hi - lo;
  for (auto &[lo, hi] : planned) lo -= first, hi -= first;
  EXPECT_EQ(askedBytes, plannedBytes); // each byte once: the pieces do not overlap
  auto merged = [](std::vector<std::pair<int64_t, int64_t>> v) {
    std::sort(v.begin(), v.end());
    std::vector<std::pair<int64_t, int64_t>> out;
    for (const auto &r : v)
      if (!out.empty() && r.first <= out.back().second)
        out.back().second = std::max(out.back().second, r.second);
      else
        out.push_back(r);
    return out;
  };
  EXPECT_EQ(merged(pieces), merged(planned));
}

// A run copies its inputs (tokens, positions, page table, sampling
// parameters) to the device in one transfer and the sampled ids back in
// another: two copies per call, eager or captured (the fake runtime counts
// a copy when it is enqueued or captured, not when a graph replays it).
TEST_F(FakeGpu, ARunIsOneCopyInAndOneOut) {
  Model m = build(kGqa, kBatch3);
  for (bool graphs : {false, true}) {
    CudaOptions opts;
    opts.graphs = graphs;
    CudaExecutor x(m.plan, m.code, m.weights.data(), m.weights.size(), opts);
    std::mt19937 rng(5);
    kvplan::testing::setInputs(x, m.plan, "decode", 2, rng);
    const long long before = fakecuda_counters().copies;
    x.run("decode", 2); // with graphs: eagerly once, then captured
    EXPECT_EQ(fakecuda_counters().copies - before, graphs ? 4 : 2) << (graphs ? "graphs" : "eager");
  }
}

TEST_F(FakeGpu, NoDeviceIsReportedCleanly) {
  Model m = build(kGqa, kBatch1);
  fakecuda_configure(0, 0, 0, 0);
  std::string why;
  EXPECT_FALSE(cudaDeviceAvailable(&why));
  EXPECT_EQ(why, "no CUDA device: no CUDA-capable device is detected");
  try {
    CudaExecutor x(m.plan, m.code, m.weights.data(), m.weights.size());
    FAIL();
  } catch (const InputError &e) {
    EXPECT_NE(std::string(e.what()).find("no CUDA device"), std::string::npos) << e.what();
  }
}

} // namespace

namespace {

// KVPLAN_CUDA_SYNC: every launch waited for and checked, so a faulting
// kernel is named with the plan step it lowers; without it the fault comes
// back only when the call is waited for.
TEST_F(FakeGpu, KvplanCudaSyncNamesTheFailingLaunchAndItsStep) {
  Model m = build(kGqa, kBatch1);
  // A prefill of 4 tokens runs on prefill.8, prefill's copy for 8: its
  // kernel fails, and the error names the copy.
  const std::string served = servingEntry(m.plan, "prefill", 4).name;
  ASSERT_EQ(served, "prefill.8");
  const CudaEntry &pe = m.code.program.entries.at(served);
  const DeviceOp *victim = nullptr;
  for (const DeviceOp &op : pe.ops)
    if (!victim && op.kind == DeviceOp::kernel &&
        (op.name.rfind("rope_qkv_write", 0) == 0 || op.name.rfind("matvec_rope_kv", 0) == 0))
      victim = &op; // the first launch of that kernel: the first layer's
  ASSERT_NE(victim, nullptr) << "no RoPE + cache-write kernel in prefill";
  const Step &step = m.plan.entryPoints.at(served).steps.at(size_t(victim->step));
  auto runPrefill = [&](CudaExecutor &x) {
    std::mt19937 rng(5);
    kvplan::testing::setInputs(x, m.plan, "prefill", 4, rng);
    x.run("prefill", 4);
  };
  fakecuda_fail_kernel(victim->name.c_str());
  {
    CudaExecutor plain(m.plan, m.code, m.weights.data(), m.weights.size());
    try {
      runPrefill(plain);
      ADD_FAILURE() << "the fault went unnoticed";
    } catch (const std::runtime_error &e) {
      EXPECT_NE(std::string(e.what()).find("CUDA error in running prefill"), std::string::npos)
          << e.what();
    }
  }
  fakecuda_fail_kernel(victim->name.c_str()); // the fault is sticky: start clean
  setenv("KVPLAN_CUDA_SYNC", "1", 1);
  CudaExecutor checked(m.plan, m.code, m.weights.data(), m.weights.size());
  unsetenv("KVPLAN_CUDA_SYNC");
  EXPECT_NE(checked.describe().find("each checked (KVPLAN_CUDA_SYNC)"), std::string::npos)
      << checked.describe();
  EXPECT_FALSE(checked.graphs()) << "checked launches are eager";
  try {
    runPrefill(checked);
    ADD_FAILURE() << "the fault went unnoticed";
  } catch (const std::runtime_error &e) {
    const std::string want = "CUDA error in kernel " + victim->name + " of prefill.8, plan step " +
                             std::to_string(victim->step) + " (" + step.name();
    EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("on 4 rows: cudaErrorIllegalAddress"), std::string::npos)
        << e.what();
  }
  fakecuda_fail_kernel("");
}

// KVPLAN_CUDA_PROFILE: the first run of each (entry point, rows) times
// every op once more, in order, into the file (entry, rows, op, step, kind,
// kernel, ms); later runs add nothing, and what the runs compute is the
// same as without it. A file that cannot be written is named.
TEST_F(FakeGpu, KvplanCudaProfileTimesEveryOpOnce) {
  Model m = build(kGqa, kBatch1);
  const std::string path = ::testing::TempDir() + "kvplan-profile.tsv";
  std::remove(path.c_str());
  auto logitsOf = [&](CudaExecutor &x, const std::string &entry, int64_t rows) {
    std::mt19937 rng(7);
    kvplan::testing::setInputs(x, m.plan, entry, rows, rng);
    x.run(entry, rows);
    const float *l = x.logits(entry);
    return std::vector<float>(l, l + m.plan.model.vocabSize);
  };
  CudaExecutor plain(m.plan, m.code, m.weights.data(), m.weights.size());
  setenv("KVPLAN_CUDA_PROFILE", path.c_str(), 1);
  CudaExecutor profiled(m.plan, m.code, m.weights.data(), m.weights.size());
  unsetenv("KVPLAN_CUDA_PROFILE");
  EXPECT_NE(profiled.describe().find("op times to " + path), std::string::npos);
  for (int call = 0; call < 2; ++call) {
    EXPECT_EQ(logitsOf(profiled, "prefill", 4), logitsOf(plain, "prefill", 4)) << call;
    EXPECT_EQ(logitsOf(profiled, "decode", 1), logitsOf(plain, "decode", 1)) << call;
  }
  std::ifstream in(path);
  std::vector<std::vector<std::string>> lines;
  for (std::string line; std::getline(in, line);) {
    std::vector<std::string> f;
    std::stringstream ss(line);
    for (std::string x; std::getline(ss, x, '\t');) f.push_back(x);
    ASSERT_EQ(f.size(), 7u) << line;
    lines.push_back(f);
  }
  size_t at = 0;
  for (const auto &[called, rows] : {std::pair<std::string, int>{"prefill", 4}, {"decode", 1}}) {
    // The entry point that ran the call: prefill.8 for 4 tokens.
    const std::string entry = servingEntry(m.plan, called, rows).name;
    const CudaEntry &ce = m.code.program.entries.at(entry);
    std::vector<const DeviceOp *> ops;
    for (const DeviceOp &op : ce.ops) ops.push_back(&op);
    for (const DeviceOp &op : ce.sampling) ops.push_back(&op);
    for (size_t i = 0; i < ops.size(); ++i, ++at) {
      ASSERT_LT(at, lines.size()) << entry << " op " << i << " has no line";
      const std::vector<std::string> &f = lines[at];
      EXPECT_EQ(f[0], entry);
      EXPECT_EQ(f[1], std::to_string(rows));
      EXPECT_EQ(f[2], std::to_string(i));
      EXPECT_EQ(f[3], std::to_string(ops[i]->step));
      EXPECT_EQ(f[5], ops[i]->kind == DeviceOp::kernel ? ops[i]->name : std::string("cublas"));
      EXPECT_GE(std::stod(f[6]), 0.0) << f[6];
    }
  }
  EXPECT_EQ(at, lines.size()) << "a later run was profiled again";
  setenv("KVPLAN_CUDA_PROFILE", "/nonexistent-kvplan-dir/profile.tsv", 1);
  CudaExecutor broken(m.plan, m.code, m.weights.data(), m.weights.size());
  unsetenv("KVPLAN_CUDA_PROFILE");
  try {
    logitsOf(broken, "decode", 1);
    ADD_FAILURE() << "an unwritable profile went unnoticed";
  } catch (const InputError &e) {
    EXPECT_NE(std::string(e.what()).find("'/nonexistent-kvplan-dir/profile.tsv' "
                                         "(KVPLAN_CUDA_PROFILE)"),
              std::string::npos)
        << e.what();
  }
  std::remove(path.c_str());
}

TEST_F(FakeGpu, AMissingCublasIsReportedCleanly) {
  Model m = build(kGqa, kBatch3F16);
  setenv("KVPLAN_CUBLAS_LIBRARY", "/nonexistent/libcublas.so.13", 1);
  try {
    CudaExecutor x(m.plan, m.code, m.weights.data(), m.weights.size());
    FAIL() << "ran without cuBLAS";
  } catch (const InputError &e) {
    EXPECT_NE(std::string(e.what()).find("cannot load cuBLAS, which the cuda target's linears use"),
              std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("LD_LIBRARY_PATH"), std::string::npos) << e.what();
  }
  // Quantized weights are generated kernels only: no cuBLAS is opened, and
  // the workspace holds none of its 32 MiB.
  const kvplan::testing::Shape &q = kvplan::testing::kQuantShapes[2];
  Model quant = build(kvplan::testing::cudaConfig(q.model, q.compile, q.rope));
  EXPECT_EQ(quant.code.program.cublasWorkspaceBytes, 0);
  EXPECT_LT(quant.plan.memoryBill().workspaceBytes, 1 << 20);
  EXPECT_NO_THROW(CudaExecutor(quant.plan, quant.code, quant.weights.data(), quant.weights.size()));
  setenv("KVPLAN_CUBLAS_LIBRARY", KVPLAN_FAKE_CUBLAS, 1);
}

} // namespace
