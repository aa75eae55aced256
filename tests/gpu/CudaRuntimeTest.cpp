// The CUDA runtime against the CPU runtime, on a GPU. Labelled `gpu` in
// ctest; every case skips with a message where there is no CUDA device or no
// cuda artifacts. The artifacts (compiled beforehand with `kvplan compile
// --target cuda --weights none`, scripts/gpu-kit.sh) are read from the folder
// $KVPLAN_GPU_ARTIFACTS; the weights are random, packed here.
#include "plan/Artifact.h"
#include "runtime/cpu/CpuExecutor.h"
#include "runtime/Engine.h"
#include "runtime/Perplexity.h"
#include "runtime/Scheduler.h"
#include "formats/WeightFormats.h"
#include "plan/WeightPacking.h"
#include "runtime/cuda/CudaExecutor.h"
#include "tests/common/ActivationsScope.h"
#include "tests/common/SamplingDraws.h"
#include "tests/common/ServeCompare.h"
#include "tests/common/StepCompare.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <numeric>
#include <optional>
#include <random>
#include <regex>
#include <set>
#include <thread>

// The CPU runtime is these tests' reference for the CUDA target, whose
// kernels compute the plan's f32 activations: the CPU takes them too, not
// its default int8 ones (runtime/cpu/LinearDot.h).
static const kvplan::test::ActivationsScope kF32Activations(kvplan::cpu::Activations::f32);

using namespace kvplan;
namespace fs = std::filesystem;
using kvplan::testing::runAlone;
using kvplan::testing::normalisedError;
using kvplan::testing::serveAfterFirst;
using kvplan::testing::tolerance;

namespace {

struct Model {
  std::string path;
  Plan plan;    // the cuda artifact's
  Plan cpuPlan; // its twin's for the CPU (NAME.cpu.kvp), the reference
  CudaCode code;
  std::vector<char> weights;
};

std::vector<std::string> artifactPaths() {
  std::vector<std::string> out;
  const char *dir = std::getenv("KVPLAN_GPU_ARTIFACTS");
  if (!dir || !fs::is_directory(dir)) return out;
  for (const auto &e : fs::directory_iterator(dir))
    // Not the benchmark's, not the CPU twins, not the tensor-parallel ones
    // (gpu-check runs those under mpirun where there are GPUs enough).
    if (e.path().extension() == ".kvp" && e.path().filename().string().rfind("bench-", 0) != 0 &&
        e.path().filename().string().rfind("tp", 0) != 0 && e.path().stem().extension() != ".cpu")
      out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

Model load(const std::string &path) {
  Model m;
  m.path = path;
  Artifact a = Artifact::open(path);
  m.plan = a.plan();
  fs::path twin = fs::path(path).replace_extension(".cpu.kvp");
  m.cpuPlan = Artifact::open(twin.string()).plan();
  std::string_view prog = a.section(kCudaProgramSection);
  m.code.program = cudaProgramFromJson(nlohmann::json::parse(prog.begin(), prog.end()));
  for (const std::string &arch : m.plan.cudaArchs)
    m.code.cubins[arch] = std::string(a.section(cudaCubinSection(arch)));
  std::unique_ptr<WeightSource> src = openWeights("random:7", m.plan.model);
  m.weights = packWeightsInMemory(m.plan, *src);
  return m;
}

#define REQUIRE_GPU()                                                                              \
  do {                                                                                             \
    std::string why;                                                                               \
    if (!cudaDeviceAvailable(&why)) GTEST_SKIP() << why;                                           \
    if (artifactPaths().empty())                                                                   \
      GTEST_SKIP() << "no cuda artifacts: set KVPLAN_GPU_ARTIFACTS to the folder "                 \
                      "scripts/gpu-kit.sh fills";                                                  \
  } while (0)

TEST(CudaRuntime, EveryKernelMatchesTheCpuRuntime) {
  REQUIRE_GPU();
  for (const std::string &path : artifactPaths()) {
    SCOPED_TRACE(path);
    Model m = load(path);
    CpuExecutor cpu(m.cpuPlan, m.weights.data(), m.weights.size(), 4);
    CudaExecutor gpu(m.plan, m.code, m.weights.data(), m.weights.size());
    std::mt19937 rng(11);
    kvplan::testing::compareStepByStep(gpu, cpu, m.plan, m.code.program, rng);
  }
}

/// Logits of a prompt and `steps` greedy decode steps.
std::vector<std::vector<float>> generate(Engine &e, const std::vector<int32_t> &prompt, int steps) {
  std::vector<std::vector<float>> out;
  const int64_t v = e.vocabSize();
  int seq = e.open();
  const float *l = e.prefill(seq, prompt.data(), int64_t(prompt.size()));
  out.emplace_back(l, l + v);
  int32_t next = int32_t(std::max_element(l, l + v) - l);
  for (int i = 0; i < steps; ++i) {
    l = e.decode({seq}, {next});
    out.emplace_back(l, l + v);
    next = int32_t(std::max_element(l, l + v) - l);
  }
  e.close(seq);
  return out;
}

TEST(CudaRuntime, WholeModelLogitsMatchTheCpuRuntime) {
  REQUIRE_GPU();
  for (const std::string &path : artifactPaths()) {
    SCOPED_TRACE(path);
    Model m = load(path);
    Engine cpu(m.cpuPlan, m.weights.data(), m.weights.size(), 4);
    Engine gpu(std::make_unique<CudaExecutor>(m.plan, m.code, m.weights.data(), m.weights.size()));
    std::mt19937 rng(3);
    // Longer than one prefill chunk, so chunks meet the cache.
    std::vector<int32_t> prompt(size_t(m.plan.settings.prefillChunk + 5));
    for (int32_t &t : prompt) t = int32_t(rng() % uint32_t(m.plan.model.vocabSize));
    if (int64_t(prompt.size()) + 8 > m.plan.settings.maxSeqLen) prompt.resize(4);
    kvplan::testing::followCpu(cpu, gpu, prompt, 6, kvplan::testing::modelTolerance(m.plan));
  }
}

/// Greedy ids of a prompt and `steps` steps, each engine following its own.
std::vector<int32_t> greedyIds(Engine &e, const std::vector<int32_t> &prompt, int steps) {
  e.setSampling(SamplingOptions{});
  const int seq = e.open();
  std::vector<int32_t> ids{e.prefillNext(seq, prompt.data(), int64_t(prompt.size()))};
  for (int i = 0; i < steps; ++i) ids.push_back(e.decodeNext({seq}, {ids.back()})[0]);
  e.close(seq);
  return ids;
}

// The benchmark's shape (Llama-3.2-1B, random weights), not only the tiny
// ones: bf16's logits for a short prompt and four decode steps within the
// whole-model tolerance of the CPU runtime's, and an f32 variant's greedy ids
// equal to the CPU's over 32 steps; the batch-8 artifact (decode's products
// on tensor cores) with 8 sequences decoding together, every row's logits.
TEST(CudaRuntime, TheBenchmarkShapeMatchesTheCpuRuntime) {
  REQUIRE_GPU();
  const fs::path dir = std::getenv("KVPLAN_GPU_ARTIFACTS");
  const int threads = int(std::max(1u, std::thread::hardware_concurrency()));
  for (const char *name :
       {"bench-llama-3.2-1b.kvp", "bench-llama-3.2-1b-f32.kvp", "bench-llama-3.2-1b-b8.kvp"}) {
    SCOPED_TRACE(name);
    const fs::path path = dir / name;
    if (!fs::exists(path) || !fs::exists(fs::path(path).replace_extension(".cpu.kvp"))) {
      ADD_FAILURE() << path << " or its .cpu.kvp twin is missing: rerun scripts/gpu-kit.sh";
      continue;
    }
    Model m = load(path.string());
    Engine cpu(m.cpuPlan, m.weights.data(), m.weights.size(), threads);
    Engine gpu(std::make_unique<CudaExecutor>(m.plan, m.code, m.weights.data(), m.weights.size()));
    std::mt19937 rng(17);
    std::vector<int32_t> prompt(16);
    for (int32_t &t : prompt) t = int32_t(rng() % uint32_t(m.plan.model.vocabSize));
    kvplan::testing::followCpu(cpu, gpu, prompt, 4, kvplan::testing::modelTolerance(m.plan));
    if (m.plan.settings.maxBatch >= 8)
      kvplan::testing::followCpuBatch(cpu, gpu, {3, 9, 16, 17, 31, 40, 64, 100}, 4,
                                      kvplan::testing::modelTolerance(m.plan));
    if (m.plan.settings.weightDtype == DType::f32) {
      EXPECT_EQ(greedyIds(gpu, prompt, 32), greedyIds(cpu, prompt, 32));
    }
  }
}

TEST(CudaRuntime, GraphReplayIsBitIdenticalToEager) {
  REQUIRE_GPU();
  for (const std::string &path : artifactPaths()) {
    SCOPED_TRACE(path);
    Model m = load(path);
    CudaOptions eagerOpts;
    eagerOpts.graphs = false;
    auto graphExec = std::make_unique<CudaExecutor>(m.plan, m.code, m.weights.data(), m.weights.size());
    CudaExecutor *graphRaw = graphExec.get();
    Engine graph(std::move(graphExec));
    Engine eager(std::make_unique<CudaExecutor>(m.plan, m.code, m.weights.data(), m.weights.size(),
                                                eagerOpts));
    std::vector<int32_t> prompt = {1, 5, 9, 2, 7, 3, 3};
    auto g = generate(graph, prompt, 12);
    auto e = generate(eager, prompt, 12);
    ASSERT_EQ(g.size(), e.size());
    for (size_t i = 0; i < g.size(); ++i)
      EXPECT_EQ(std::memcmp(g[i].data(), e[i].data(), g[i].size() * 4), 0) << "step " << i;
    // Each (entry point, rows) was captured once, then replayed.
    EXPECT_EQ(graphRaw->graphsCaptured(), 2);
    generate(graph, prompt, 3);
    EXPECT_EQ(graphRaw->graphsCaptured(), 2);
  }
}

// Programmatic dependent launches (Hopper on: each kernel may start while
// the one before finishes, and waits for it inside) change no bit: a kernel
// reading what the one before writes ahead of its wait would show here, in
// graphs and eager.
TEST(CudaRuntime, DependentLaunchesChangeNoBit) {
  REQUIRE_GPU();
  for (const std::string &path : artifactPaths()) {
    SCOPED_TRACE(path);
    Model m = load(path);
    for (bool graphs : {true, false}) {
      SCOPED_TRACE(graphs ? "graphs" : "eager");
      CudaOptions opts;
      opts.graphs = graphs;
      auto onExec = std::make_unique<CudaExecutor>(m.plan, m.code, m.weights.data(),
                                                   m.weights.size(), opts);
      if (!onExec->dependentLaunches()) GTEST_SKIP() << "no programmatic dependent launches on " << onExec->describe();
      Engine on(std::move(onExec));
      auto offExec = std::make_unique<CudaExecutor>(m.plan, m.code, m.weights.data(),
                                                    m.weights.size(), opts);
      offExec->setDependentLaunches(false);
      Engine off(std::move(offExec));
      std::vector<int32_t> prompt = {4, 8, 15, 16, 23, 42, 7, 1, 9};
      auto a = generate(on, prompt, 12);
      auto b = generate(off, prompt, 12);
      ASSERT_EQ(a.size(), b.size());
      for (size_t i = 0; i < a.size(); ++i)
        EXPECT_EQ(std::memcmp(a[i].data(), b[i].data(), a[i].size() * 4), 0) << "step " << i;
    }
  }
}

// --l2-prefetch changes no bit on the device: tiny's bf16 artifact compiled
// with it (tiny-bf16-l2, whose entry points' first kernels ask L2 for the
// whole model) gives the logits of the one without (tiny-bf16), the same
// weights, over a prompt longer than a chunk and 12 greedy steps, in graphs
// and eager.
TEST(CudaRuntime, AskingL2AheadChangesNoBit) {
  REQUIRE_GPU();
  const fs::path dir = std::getenv("KVPLAN_GPU_ARTIFACTS");
  const fs::path with = dir / "tiny-bf16-l2.kvp", without = dir / "tiny-bf16.kvp";
  if (!fs::exists(with) || !fs::exists(without))
    GTEST_FAIL() << with << " or " << without << " is missing: rerun scripts/gpu-kit.sh";
  Model a = load(with.string()), b = load(without.string());
  ASSERT_TRUE(a.weights == b.weights) << "not the same model";
  size_t asking = 0, asked = 0;
  for (const auto &[name, e] : a.code.program.entries)
    for (const DeviceOp &op : e.ops) asking += !op.prefetch.empty();
  for (const auto &[name, e] : b.code.program.entries)
    for (const DeviceOp &op : e.ops) asked += !op.prefetch.empty();
  EXPECT_GT(asking, 0u);
  EXPECT_EQ(asked, 0u);
  std::vector<int32_t> prompt(80);
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = int32_t((7 * i + 3) % 500);
  for (bool graphs : {true, false}) {
    SCOPED_TRACE(graphs ? "graphs" : "eager");
    CudaOptions opts;
    opts.graphs = graphs;
    Engine on(std::make_unique<CudaExecutor>(a.plan, a.code, a.weights.data(), a.weights.size(),
                                             opts));
    Engine off(std::make_unique<CudaExecutor>(b.plan, b.code, b.weights.data(), b.weights.size(),
                                              opts));
    auto x = generate(on, prompt, 12), y = generate(off, prompt, 12);
    ASSERT_EQ(x.size(), y.size());
    for (size_t i = 0; i < x.size(); ++i)
      EXPECT_EQ(std::memcmp(x[i].data(), y[i].data(), x[i].size() * 4), 0) << "step " << i;
  }
}

TEST(CudaRuntime, SamplingOnTheDevice) {
  REQUIRE_GPU();
  Model m = load(artifactPaths().front());
  Engine gpu(std::make_unique<CudaExecutor>(m.plan, m.code, m.weights.data(), m.weights.size()));
  std::vector<int32_t> prompt = {1, 4, 8, 15, 16, 23, 42};
  for (int32_t &t : prompt) t %= int32_t(m.plan.model.vocabSize);
  const int64_t v = gpu.vocabSize();
  // Greedy: the argmax of the logits.
  int seq = gpu.open();
  int32_t next = gpu.prefillNext(seq, prompt.data(), int64_t(prompt.size()));
  const float *l = gpu.executor().logits("prefill");
  EXPECT_EQ(next, int32_t(std::max_element(l, l + v) - l));
  for (int i = 0; i < 5; ++i) {
    next = gpu.decodeNext({seq}, {next})[0];
    l = gpu.executor().logits("decode");
    EXPECT_EQ(next, int32_t(std::max_element(l, l + v) - l)) << "step " << i;
  }
  gpu.close(seq);
  // Top-k 3 at a high temperature: always one of the three likeliest.
  SamplingOptions o;
  o.temperature = 5.0;
  o.topK = 3;
  o.seed = 9;
  gpu.setSampling(o);
  seq = gpu.open();
  next = gpu.prefillNext(seq, prompt.data(), int64_t(prompt.size()));
  std::set<int32_t> seen;
  for (int i = 0; i < 20; ++i) {
    const int32_t t = gpu.decodeNext({seq}, {next})[0];
    const float *dl = gpu.executor().logits("decode");
    std::vector<int32_t> idx(static_cast<size_t>(v));
    std::iota(idx.begin(), idx.end(), 0);
    std::partial_sort(idx.begin(), idx.begin() + 3, idx.end(),
                      [&](int32_t a, int32_t b) { return dl[a] > dl[b]; });
    EXPECT_TRUE(t == idx[0] || t == idx[1] || t == idx[2]) << "token " << t << " at step " << i;
    seen.insert(t);
    next = t;
  }
  gpu.close(seq);
  EXPECT_GT(seen.size(), 1u) << "a temperature of 5 never left the argmax";
}

// The sampling kernels alone on random logits, against the rule they
// implement in double precision (tests/common/SamplingDraws.h): top-k and
// top-p decided from the slices' candidates, by the whole row, and the
// draw by slices, with the device's own expf and atomics.
TEST(CudaRuntime, SamplingKernelsDrawAsADoublePrecisionReference) {
  REQUIRE_GPU();
  for (const std::string &path : artifactPaths()) {
    SCOPED_TRACE(path);
    Model m = load(path);
    CudaExecutor gpu(m.plan, m.code, m.weights.data(), m.weights.size());
    const int64_t rows = m.plan.entryPoints.at("decode").rows;
    const int draws = kvplan::testing::checkRandomDraws(
        [&](const std::vector<float> &l, const std::vector<DeviceSamplingParams> &p) {
          return kvplan::testing::drawOnDevice(gpu, m.plan, m.code.program, l, p);
        },
        m.plan.model.vocabSize, rows, 8, 11);
    EXPECT_EQ(draws, 8 * rows);
  }
}

// A request asking for log-probabilities on the device: its tokens are
// drawn there and the rows they came from are copied back for it; alone,
// they are the rows a fresh engine's prefill and decode give.
TEST(CudaRuntime, LogprobsOnTheDevice) {
  REQUIRE_GPU();
  Model m = load(artifactPaths().front());
  auto fresh = [&] {
    return std::make_unique<CudaExecutor>(m.plan, m.code, m.weights.data(), m.weights.size());
  };
  const std::vector<int32_t> prompt = {1, 17, 33, 49, 65};
  Engine served(fresh());
  Scheduler s(served, nullptr);
  std::vector<int32_t> got;
  std::vector<TokenLogprobs> logprobs;
  GenerationRequest r;
  r.prompt = prompt;
  r.maxNewTokens = 8;
  r.logprobs = 3;
  r.onEvent = [&](const TokenEvent &e) {
    if (e.token >= 0) got.push_back(e.token);
    if (e.logprobs) logprobs.push_back(*e.logprobs);
  };
  s.submit(std::move(r));
  s.runUntilIdle();
  ASSERT_EQ(got.size(), 8u);
  ASSERT_EQ(logprobs.size(), 8u);
  Engine alone(fresh(), {false});
  const std::vector<double> want = kvplan::testing::logprobsAlone(alone, prompt, got);
  for (size_t t = 0; t < got.size(); ++t) {
    EXPECT_NEAR(logprobs[t].chosen.logprob, want[t], 1e-5) << "token " << t;
    ASSERT_EQ(logprobs[t].top.size(), 3u);
    EXPECT_EQ(logprobs[t].top[0].token, got[t]) << "greedy: the most likely, token " << t;
  }
}

// The prompt's log-probabilities on the device: @score's rows, whole calls
// and a part one, against the CPU twin's, and a request asking for them
// through the scheduler: each prompt token's value against the device's own
// prefill and decode one token at a time.
TEST(CudaRuntime, ScoreOnTheDevice) {
  REQUIRE_GPU();
  std::optional<Model> found;
  for (const std::string &path : artifactPaths())
    if (Artifact::open(path).plan().entryPoints.count("score")) {
      found = load(path);
      break;
    }
  ASSERT_TRUE(found) << "no artifact with @score: scripts/gpu-kit.sh compiles tiny-f32 with "
                        "--score-rows 8";
  Model &m = *found;
  auto fresh = [&] {
    return std::make_unique<CudaExecutor>(m.plan, m.code, m.weights.data(), m.weights.size());
  };
  Engine cpu(m.cpuPlan, m.weights.data(), m.weights.size(), 4);
  Engine gpu(fresh());
  const int64_t v = cpu.vocabSize();
  std::vector<int32_t> prompt(size_t(2 * gpu.scoreRows() + 3));
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = int32_t((i * 11 + 5) % size_t(v));
  const int sc = cpu.open(), sd = gpu.open();
  kvplan::testing::compareScoreCalls(cpu, sc, gpu, sd, prompt,
                                     tolerance(m.plan.settings.weightDtype));
  gpu.close(sd);
  Scheduler s(gpu, nullptr);
  std::vector<TokenLogprobs> scores;
  GenerationRequest r;
  r.prompt = prompt;
  r.maxNewTokens = 0;
  r.promptLogprobs = 2;
  r.onEvent = [&](const TokenEvent &e) {
    if (e.promptLogprobs) scores = *e.promptLogprobs;
  };
  s.submit(std::move(r));
  s.runUntilIdle();
  ASSERT_EQ(scores.size(), prompt.size() - 1);
  Engine alone(fresh(), {false});
  const std::vector<int32_t> rest(prompt.begin() + 1, prompt.end());
  const std::vector<double> want = kvplan::testing::logprobsAlone(alone, {prompt[0]}, rest);
  for (size_t t = 0; t < scores.size(); ++t) {
    EXPECT_EQ(scores[t].chosen.token, rest[t]);
    EXPECT_NEAR(scores[t].chosen.logprob, want[t], 1e-3) << "prompt token " << t + 1;
  }
  // kvplan perplexity on the device, the CPU's engine its base (--base):
  // the same perplexity, and distributions that hardly diverge.
  Engine onDevice(fresh(), {false}), onCpu(m.cpuPlan, m.weights.data(), m.weights.size(), 4);
  PerplexityOptions po;
  po.ctx = int64_t(prompt.size());
  po.bos = prompt[0];
  po.base = &onCpu;
  const PerplexityResult p = perplexity(onDevice, prompt, po);
  ASSERT_EQ(p.divergence.size(), 1u);
  EXPECT_NEAR(p.ppl(), p.divergence[0].base.ppl(), 1e-3 * p.ppl());
  EXPECT_LT(p.divergence[0].kldQuantile(1.0), 1e-4);
}

// The scheduler on the device: requests sharing a prefix, more of them
// than rows, all finish with every page back. The first runs alone, so its
// tokens equal a run on a fresh engine bit for bit; the others reuse cached
// pages and run beside each other, where cuBLAS may pick other algorithms
// for other row counts (docs/serving.md): how many agree is recorded.
TEST(CudaRuntime, TheSchedulerServesOnTheDevice) {
  REQUIRE_GPU();
  Model m = load(artifactPaths().front());
  auto fresh = [&] {
    return std::make_unique<CudaExecutor>(m.plan, m.code, m.weights.data(), m.weights.size());
  };
  const int32_t vocab = int32_t(m.plan.model.vocabSize);
  const int64_t page = m.plan.kvCache.pageSize, rows = m.plan.settings.maxBatch;
  std::vector<int32_t> shared(size_t(2 * page + 3));
  for (size_t i = 0; i < shared.size(); ++i) shared[i] = int32_t((i * 7 + 3) % size_t(vocab));
  std::vector<std::vector<int32_t>> prompts;
  for (int64_t i = 0; i < 2 * rows + 1; ++i) {
    prompts.push_back(shared);
    prompts.back().push_back(int32_t((100 + i) % vocab));
  }
  Engine served(fresh());
  Scheduler s(served, nullptr);
  const std::vector<std::vector<int32_t>> got =
      serveAfterFirst(s, prompts, std::vector<int64_t>(prompts.size(), 8));
  EXPECT_GE(s.stats().cachedPromptTokens, int64_t(prompts.size() - 1) * 2 * page);
  served.pages().check();
  EXPECT_EQ(served.pages().available(), served.pages().size());
  int agree = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_EQ(got[i].size(), 8u) << "request " << i;
    Engine alone(fresh(), {false});
    const std::vector<int32_t> want = runAlone(alone, prompts[i], 8);
    if (i == 0) { EXPECT_EQ(got[i], want); }
    agree += got[i] == want;
  }
  ::testing::Test::RecordProperty("requests_equal_to_alone", agree);
  std::printf("scheduler on the device: %d of %zu requests equal to each alone\n", agree,
              prompts.size());
}

TEST(CudaRuntime, MemoryBillIsCheckedBeforeAllocating) {
  REQUIRE_GPU();
  Model m = load(artifactPaths().front());
  Plan huge = m.plan;
  huge.kvCache.pages = int64_t(1) << 32; // petabytes of cache
  try {
    CudaExecutor x(huge, m.code, m.weights.data(), m.weights.size());
    FAIL() << "a plan larger than the GPU was accepted";
  } catch (const InputError &e) {
    EXPECT_NE(std::string(e.what()).find("out of GPU memory"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("short by"), std::string::npos) << e.what();
    // The budget that fits: the free bytes, exactly.
    EXPECT_TRUE(std::regex_search(std::string(e.what()),
                                  std::regex("Compile with --memory-budget [1-9][0-9]+ \\(what is "
                                             "free\\) for a KV cache that fits")))
        << e.what();
  }
}

// Runs everywhere (gpu-check.sh counts a skipped gpu test as a failure): with
// a device it checks that the device is reported usable.
TEST(CudaRuntime, WithoutADeviceTheErrorIsClear) {
  std::string why;
  if (cudaDeviceAvailable(&why)) {
    EXPECT_TRUE(why.empty()) << why;
    return;
  }
  EXPECT_NE(why.find("no CUDA device"), std::string::npos) << why;
  Plan plan;
  plan.settings.target = Target::cuda;
  try {
    CudaExecutor x(plan, CudaCode{}, nullptr, 0);
    FAIL() << "constructed without a device";
  } catch (const InputError &e) {
    EXPECT_NE(std::string(e.what()).find("no CUDA device"), std::string::npos) << e.what();
  }
}

} // namespace
