// The CUDA runtime against the CPU runtime, on a GPU. Labelled `gpu` in
// ctest; every case skips with a message where there is no CUDA device or no
// cuda artifacts. The artifacts (compiled beforehand with `kvplan compile
// --target cuda --weights none`, scripts/gpu-kit.sh) are read from the folder
// $KVPLAN_GPU_ARTIFACTS; the weights are random, packed here.
#include "runtime/Artifact.h"
#include "runtime/CpuExecutor.h"
#include "runtime/Engine.h"
#include "runtime/WeightFormats.h"
#include "runtime/WeightPacking.h"
#include "runtime/cuda/CudaExecutor.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <numeric>
#include <random>
#include <set>

using namespace kvplan;
namespace fs = std::filesystem;

namespace {

struct Model {
  std::string path;
  Plan plan;
  CudaCode code;
  std::vector<char> weights;
};

std::vector<std::string> artifactPaths() {
  std::vector<std::string> out;
  const char *dir = std::getenv("KVPLAN_GPU_ARTIFACTS");
  if (!dir || !fs::is_directory(dir)) return out;
  for (const auto &e : fs::directory_iterator(dir))
    if (e.path().extension() == ".kvp" && e.path().filename().string().rfind("bench-", 0) != 0)
      out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

Model load(const std::string &path) {
  Model m;
  m.path = path;
  Artifact a = Artifact::open(path);
  m.plan = a.plan();
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

float toFloat(const char *p, DType t) {
  uint16_t h;
  switch (t) {
  case DType::f32: {
    float f;
    std::memcpy(&f, p, 4);
    return f;
  }
  case DType::bf16:
  case DType::f16: {
    std::memcpy(&h, p, 2);
    float f;
    convertElements(&h, t, &f, DType::f32, 1);
    return f;
  }
  default: return 0;
  }
}

/// ||a - b|| / ||b||, with NaN (an element the kernel never wrote, after
/// the poison) counted as a failure.
double normalisedError(const std::vector<float> &a, const std::vector<float> &b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num += double(a[i] - b[i]) * (a[i] - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

double tolerance(DType weights) {
  return weights == DType::f32 ? 1e-4 : weights == DType::f16 ? 4e-3 : 2e-2;
}

/// Fills an entry point's inputs on both executors: `active` rows, each at
/// its own position over a cache whose history is random.
void setInputs(Executor &x, const Plan &plan, const std::string &entry, int64_t active,
               std::mt19937 &rng) {
  const EntryPoint &ep = plan.entryPoints.at(entry);
  const int64_t pps = plan.kvCache.pagesPerSequence, rows = ep.rows;
  int64_t tableRows = 1;
  for (const Operand &a : ep.args)
    if (a.name == "page_table") tableRows = a.shape[0];
  for (int64_t r = 0; r < tableRows; ++r)
    for (int64_t p = 0; p < pps; ++p)
      x.pageTable(entry)[r * pps + p] = int32_t((r * pps + p) % plan.kvCache.pages);
  for (int64_t r = 0; r < rows; ++r) {
    x.tokens(entry)[r] = int32_t(rng() % uint32_t(plan.model.vocabSize));
    if (r >= active) x.positions(entry)[r] = -1;
    else if (entry == "prefill") x.positions(entry)[r] = int32_t(3 + r);
    else x.positions(entry)[r] = int32_t((7 * r + 5) % plan.settings.maxSeqLen);
  }
}

TEST(CudaRuntime, EveryKernelMatchesTheCpuRuntime) {
  REQUIRE_GPU();
  for (const std::string &path : artifactPaths()) {
    SCOPED_TRACE(path);
    Model m = load(path);
    CpuExecutor cpu(m.plan, m.weights.data(), m.weights.size(), 4);
    CudaExecutor gpu(m.plan, m.code, m.weights.data(), m.weights.size());
    const MemoryBill bill = m.plan.memoryBill();
    // A random cache history, the same on both.
    std::mt19937 rng(11);
    {
      std::vector<float> f(size_t(bill.kvCacheBytes / dtypeBytes(m.plan.kvCache.dtype)));
      std::normal_distribution<float> nd(0.0f, 1.0f);
      for (float &v : f) v = nd(rng);
      convertElements(f.data(), DType::f32, cpu.cacheData(), m.plan.kvCache.dtype, int64_t(f.size()));
    }
    for (const auto &[name, ep] : m.plan.entryPoints) {
      SCOPED_TRACE(name);
      const CudaEntry &ce = m.code.program.entries.at(name);
      const int64_t active = std::max<int64_t>(1, ep.rows - (ep.rows > 3 ? 3 : 0));
      setInputs(cpu, m.plan, name, active, rng);
      // Run the CPU up to each device op's steps, hand the device the same
      // state (inputs converted to the types it stores), poison what the op
      // writes, run the op, compare.
      for (const Operand &a : ep.args)
        if (a.kind == OperandKind::arena)
          gpu.upload(DeviceBuffer::arena, a.offset, cpu.arenaData() + a.offset, a.bytes());
      std::vector<char> staged;
      size_t op = 0;
      int64_t cpuDone = -1;
      while (op < ce.ops.size()) {
        size_t last = op;
        while (last + 1 < ce.ops.size() && ce.ops[last + 1].firstStep == ce.ops[op].firstStep)
          ++last;
        const int64_t first = ce.ops[op].firstStep, lastStep = ce.ops[last].lastStep;
        if (first > cpuDone + 1) cpu.runSteps(name, active, cpuDone + 1, first - 1);
        gpu.upload(DeviceBuffer::cache, 0, cpu.cacheData(), bill.kvCacheBytes);
        for (int64_t st = first; st <= lastStep; ++st) {
          const Step &s = ep.steps[size_t(st)];
          for (size_t i = 0; i < s.inputs.size(); ++i) {
            const Operand &o = s.inputs[i];
            if (o.kind != OperandKind::arena) continue;
            const DType t = ce.inputTypes[size_t(st)][i];
            const int64_t n = o.numElements();
            staged.resize(size_t(n * 4));
            if (o.dtype == DType::i32 || t == DType::f32)
              std::memcpy(staged.data(), cpu.arenaData() + o.offset, size_t(n * 4));
            else
              convertElements(cpu.arenaData() + o.offset, DType::f32, staged.data(), t, n);
            gpu.upload(DeviceBuffer::arena, o.offset, staged.data(),
                       n * (o.dtype == DType::i32 ? 4 : dtypeBytes(t)));
          }
          for (const Operand &o : s.outputs)
            if (o.kind == OperandKind::arena)
              gpu.fill(DeviceBuffer::arena, o.offset, 0xff, o.bytes()); // NaN in every type
        }
        gpu.runOps(name, active, op, last);
        cpu.runSteps(name, active, first, lastStep);
        cpuDone = lastStep;
        for (int64_t st = first; st <= lastStep; ++st) {
          const Step &s = ep.steps[size_t(st)];
          for (size_t k = 0; k < s.outputs.size(); ++k) {
            const Operand &o = s.outputs[k];
            if (o.kind != OperandKind::arena) continue;
            if (st < lastStep && s.op == "rope") continue; // fused: k goes to the cache only
            const DType t = ce.outputTypes[size_t(st)][k];
            const int64_t rows = o.shape[0] == ep.rows ? active : o.shape[0];
            const int64_t n = rows * (o.numElements() / o.shape[0]);
            std::vector<char> dev(size_t(n * dtypeBytes(t)));
            gpu.download(DeviceBuffer::arena, o.offset, dev.data(), int64_t(dev.size()));
            std::vector<float> g(static_cast<size_t>(n)), c(static_cast<size_t>(n));
            for (int64_t i = 0; i < n; ++i) {
              g[size_t(i)] = toFloat(dev.data() + i * dtypeBytes(t), t);
              c[size_t(i)] = reinterpret_cast<const float *>(cpu.arenaData() + o.offset)[i];
            }
            const double err = normalisedError(g, c);
            EXPECT_LE(err, tolerance(m.plan.settings.weightDtype))
                << "step " << st << " (" << s.op << ") output " << k;
          }
          if (s.op == "kv_cache_write") {
            std::vector<char> dev(size_t(bill.kvCacheBytes));
            gpu.download(DeviceBuffer::cache, 0, dev.data(), bill.kvCacheBytes);
            const int64_t n = bill.kvCacheBytes / dtypeBytes(m.plan.kvCache.dtype);
            std::vector<float> g(static_cast<size_t>(n)), c(static_cast<size_t>(n));
            convertElements(dev.data(), m.plan.kvCache.dtype, g.data(), DType::f32, n);
            convertElements(cpu.cacheData(), m.plan.kvCache.dtype, c.data(), DType::f32, n);
            EXPECT_LE(normalisedError(g, c), 1e-2) << "KV cache after step " << st;
          }
        }
        op = last + 1;
      }
    }
  }
}

/// Logits of a prompt and `steps` greedy decode steps.
std::vector<std::vector<float>> generate(Engine &e, const std::vector<int32_t> &prompt, int steps,
                                         std::vector<int32_t> *tokens = nullptr) {
  std::vector<std::vector<float>> out;
  const int64_t v = e.vocabSize();
  int seq = e.open();
  const float *l = e.prefill(seq, prompt.data(), int64_t(prompt.size()));
  out.emplace_back(l, l + v);
  int32_t next = int32_t(std::max_element(l, l + v) - l);
  for (int i = 0; i < steps; ++i) {
    if (tokens) tokens->push_back(next);
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
    Engine cpu(m.plan, m.weights.data(), m.weights.size(), 4);
    Engine gpu(std::make_unique<CudaExecutor>(m.plan, m.code, m.weights.data(), m.weights.size()));
    std::mt19937 rng(3);
    // Longer than one prefill chunk, so chunks meet the cache.
    std::vector<int32_t> prompt(size_t(m.plan.settings.prefillChunk + 5));
    for (int32_t &t : prompt) t = int32_t(rng() % uint32_t(m.plan.model.vocabSize));
    if (int64_t(prompt.size()) + 8 > m.plan.settings.maxSeqLen) prompt.resize(4);
    std::vector<int32_t> cpuTokens;
    auto c = generate(cpu, prompt, 6, &cpuTokens);
    // The GPU follows the CPU's tokens so both see the same sequence.
    int seq = gpu.open();
    const int64_t v = gpu.vocabSize();
    const float *l = gpu.prefill(seq, prompt.data(), int64_t(prompt.size()));
    EXPECT_LE(normalisedError(std::vector<float>(l, l + v), c[0]),
              5 * tolerance(m.plan.settings.weightDtype)) << "prefill";
    for (size_t i = 0; i < cpuTokens.size(); ++i) {
      l = gpu.decode({seq}, {cpuTokens[i]});
      EXPECT_LE(normalisedError(std::vector<float>(l, l + v), c[i + 1]),
                5 * tolerance(m.plan.settings.weightDtype)) << "decode step " << i;
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
  }
}

TEST(CudaRuntime, WithoutADeviceTheErrorIsClear) {
  std::string why;
  if (cudaDeviceAvailable(&why)) GTEST_SKIP() << "a device is present";
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
