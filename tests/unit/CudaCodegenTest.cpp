// The CUDA target on a machine without a GPU: the generated source compiles
// with nvcc for several model shapes, the artifact holds machine code for
// each requested architecture, and the launch table covers every step.
// (What needs a GPU is in tests/gpu/.)
#include "codegen/Compiler.h"
#include "codegen/CudaCodegen.h"
#include "frontend/ConfigParser.h"
#include "runtime/Artifact.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <set>

using namespace kvplan;

namespace {

ModelConfig cudaConfig(const std::string &model, const std::string &compile,
                       const std::string &rope = "") {
  std::string text = "[model]\nname = \"cuda-shape\"\nmax_position_embeddings = 4096\n"
                     "rms_norm_eps = 1e-5\nbos_token_id = 1\neos_token_id = 2\n" +
                     model + "\n[compile]\ntarget = \"cuda\"\n" + compile + "\n" + rope;
  ModelConfig cfg = parseTomlSpec(text, "cuda-shape.toml", [](const std::string &) {});
  validate(cfg);
  return cfg;
}

bool haveNvcc() {
  try {
    findNvcc();
    return true;
  } catch (const InputError &) {
    return false;
  }
}

struct Shape {
  const char *what, *model, *compile, *rope;
};

// GQA with tied embeddings; Qwen2-style bias; MHA with head_dim 128 and
// Llama 3 RoPE; MQA (16 query heads on one KV head); f32 and f16 weights;
// pages of 4 and a batch of 3; batch 1, where the fused QKV is one product.
const Shape kShapes[] = {
    {"gqa-bf16",
     "architecture = \"llama\"\nhidden_size = 256\nintermediate_size = 688\nnum_layers = 2\n"
     "num_heads = 8\nnum_kv_heads = 4\nvocab_size = 512\ntie_word_embeddings = true",
     "weight_dtype = \"bf16\"\nmax_batch = 4\nmax_seq_len = 512\nprefill_chunk = 64", ""},
    {"qwen-bias-bf16",
     "architecture = \"qwen2\"\nhidden_size = 448\nintermediate_size = 1024\nnum_layers = 2\n"
     "num_heads = 7\nnum_kv_heads = 1\nhead_dim = 64\nvocab_size = 1000\nattention_bias = true",
     "weight_dtype = \"bf16\"\nmax_batch = 2\nmax_seq_len = 256\nprefill_chunk = 32", ""},
    {"mha-llama3-f16",
     "architecture = \"llama\"\nhidden_size = 512\nintermediate_size = 1024\nnum_layers = 2\n"
     "num_heads = 4\nnum_kv_heads = 4\nvocab_size = 300",
     "weight_dtype = \"f16\"\nmax_batch = 3\nmax_seq_len = 1024\nprefill_chunk = 128\npage_size = 4",
     "[model.rope]\ntheta = 500000.0\ntype = \"llama3\"\nfactor = 32.0\nlow_freq_factor = 1.0\n"
     "high_freq_factor = 4.0\noriginal_max_position_embeddings = 8192\n"},
    {"mqa-f32",
     "architecture = \"llama\"\nhidden_size = 512\nintermediate_size = 256\nnum_layers = 1\n"
     "num_heads = 16\nnum_kv_heads = 1\nvocab_size = 100",
     "weight_dtype = \"f32\"\nmax_batch = 1\nmax_seq_len = 128\nprefill_chunk = 16", ""},
    {"gqa-bf16-batch1",
     "architecture = \"llama\"\nhidden_size = 128\nintermediate_size = 320\nnum_layers = 2\n"
     "num_heads = 4\nnum_kv_heads = 2\nvocab_size = 300",
     "weight_dtype = \"bf16\"\nmax_batch = 1\nmax_seq_len = 256\nprefill_chunk = 32", ""},
};

TEST(CudaCodegen, LaunchTableCoversEveryStep) {
  for (const Shape &s : kShapes) {
    SCOPED_TRACE(s.what);
    ModelConfig cfg = cudaConfig(s.model, s.compile, s.rope);
    CompileOutput out = compileModel(cfg);
    CudaModule mod = generateCuda(out.plan, {"sm_90a"});
    // The JSON form reads back to the same table.
    CudaProgram back = cudaProgramFromJson(toJson(mod.program));
    EXPECT_EQ(toJson(back).dump(), toJson(mod.program).dump());
    for (const auto &[name, ep] : out.plan.entryPoints) {
      SCOPED_TRACE(name);
      const CudaEntry &e = mod.program.entries.at(name);
      std::set<int64_t> covered;
      int64_t fused = 0, gemms = 0, compactInputs = 0;
      for (const DeviceOp &op : e.ops) {
        for (int64_t st = op.firstStep; st <= op.lastStep; ++st) covered.insert(st);
        if (op.name.rfind("rope_qkv_write", 0) == 0) ++fused;
        if (op.kind == DeviceOp::gemm) {
          ++gemms;
          if (op.inputType != DType::f32) ++compactInputs;
          EXPECT_EQ(op.inputType, op.weightType) << "cuBLAS takes one input type";
          EXPECT_EQ(op.ldc, op.m);
        }
        if (op.kind == DeviceOp::kernel) {
          EXPECT_LE(op.pointers.size(), size_t(kKernelPointers));
          EXPECT_NE(mod.source.find(" " + op.name + "(KvArgs a)"), std::string::npos)
              << op.name << " is launched but not generated";
        }
      }
      for (size_t st = 0; st < ep.steps.size(); ++st) {
        if (ep.steps[st].op != "kv_cache_read") {
          EXPECT_TRUE(covered.count(int64_t(st))) << "step " << st << " (" << ep.steps[st].op
                                                  << ") has no device op";
        }
      }
      // RoPE is fused with the cache write once per layer.
      EXPECT_EQ(fused, cfg.model.numLayers);
      // With 16-bit weights every linear reads its input in the weights'
      // type, written so by the op before it (no conversion kernel).
      if (cfg.compile.weightDtype != DType::f32) {
        EXPECT_EQ(compactInputs, gemms);
        for (const DeviceOp &op : e.ops) {
          EXPECT_NE(op.name.rfind("convert_", 0), 0u) << op.name;
        }
      }
      EXPECT_EQ(e.inputTypes.size(), ep.steps.size());
      // At batch 1 the fused QKV is one product (where plan-buffers could
      // lay q, k and v end to end at aligned offsets): four per layer and
      // the head.
      if (name == "decode" && ep.rows == 1 && !cfg.model.attentionBias &&
          cfg.model.qDim() * 4 % 256 == 0 && cfg.model.kvDim() * 4 % 256 == 0) {
        EXPECT_EQ(gemms, 4 * cfg.model.numLayers + 1);
      }
      EXPECT_EQ(e.sample.name, "sample_" + std::to_string(cfg.model.vocabSize));
    }
    EXPECT_EQ(out.plan.memoryBill().workspaceBytes, 0) << "before addCudaCode";
    EXPECT_GE(mod.program.workspaceBytes, mod.program.cublasWorkspaceBytes);
  }
}

TEST(CudaCodegen, GeneratedSourceCompilesForEveryShape) {
  if (!haveNvcc()) GTEST_SKIP() << "no nvcc here (set CUDA_HOME): the CUDA source is not compiled";
  const std::string nvcc = findNvcc();
  for (const Shape &s : kShapes) {
    SCOPED_TRACE(s.what);
    CompileOutput out = compileModel(cudaConfig(s.model, s.compile, s.rope));
    CudaModule mod = generateCuda(out.plan, {"sm_90a"});
    std::string cubin;
    ASSERT_NO_THROW(cubin = compileCubin(nvcc, mod.source, "sm_90a"));
    EXPECT_EQ(cubinSmVersion(cubin), 90);
  }
}

TEST(CudaCodegen, ArtifactHoldsMachineCodeForEachArchitecture) {
  if (!haveNvcc()) GTEST_SKIP() << "no nvcc here (set CUDA_HOME)";
  CompileOutput out = compileModel(cudaConfig(kShapes[0].model, kShapes[0].compile));
  addCudaCode(out, parseCudaArchs("sm_80,sm_90a"));
  const std::string path =
      (std::filesystem::temp_directory_path() / "kvplan-cuda-test.kvp").string();
  writeArtifact(path, out);
  Artifact a = Artifact::open(path);
  EXPECT_EQ(a.plan().settings.target, Target::cuda);
  EXPECT_EQ(a.plan().cudaArchs, (std::vector<std::string>{"sm_80", "sm_90a"}));
  EXPECT_GT(a.plan().memoryBill().workspaceBytes, 0);
  EXPECT_EQ(a.plan().memoryBill().workspaceBytes, out.cuda->program.workspaceBytes);
  EXPECT_EQ(cubinSmVersion(std::string(a.section("cuda.cubin.sm_80"))), 80);
  EXPECT_EQ(cubinSmVersion(std::string(a.section("cuda.cubin.sm_90a"))), 90);
  std::string_view src = a.section(kCudaSourceSection);
  EXPECT_NE(src.find("Generated by kvplan"), std::string_view::npos);
  EXPECT_NE(src.find("attn_partial_"), std::string_view::npos);
  std::string_view prog = a.section(kCudaProgramSection);
  CudaProgram p = cudaProgramFromJson(nlohmann::json::parse(prog.begin(), prog.end()));
  EXPECT_EQ(p.entries.size(), 2u);
  std::remove(path.c_str());
}

TEST(CudaCodegen, RejectsWhatItCannotRun) {
  // int8 weights: the config check names the field.
  try {
    cudaConfig(kShapes[0].model, "weight_dtype = \"int8\"");
    FAIL() << "int8 on cuda was accepted";
  } catch (const InputError &e) {
    EXPECT_NE(std::string(e.what()).find("compile.weight_dtype"), std::string::npos) << e.what();
  }
  EXPECT_THROW(parseCudaArchs("sm_75"), InputError);
  EXPECT_THROW(parseCudaArchs("compute_90"), InputError);
  EXPECT_THROW(parseCudaArchs(""), InputError);
  EXPECT_EQ(parseCudaArchs("sm_90a,sm_80,sm_90a"), (std::vector<std::string>{"sm_90a", "sm_80"}));
  // A cpu plan is not the codegen's.
  ModelConfig cfg = cudaConfig(kShapes[0].model, kShapes[0].compile);
  cfg.compile.target = Target::cpu;
  EXPECT_THROW(generateCuda(compileModel(cfg).plan, {"sm_90a"}), InputError);
  // Without a toolkit, a clear message.
  const char *old = std::getenv("CUDA_HOME");
  std::string saved = old ? old : "";
  setenv("CUDA_HOME", "/nonexistent-cuda", 1);
  try {
    findNvcc();
    FAIL() << "found nvcc in a folder that does not exist";
  } catch (const InputError &e) {
    EXPECT_NE(std::string(e.what()).find("CUDA_HOME"), std::string::npos);
  }
  if (old) setenv("CUDA_HOME", saved.c_str(), 1);
  else unsetenv("CUDA_HOME");
}

} // namespace

// ---------------------------------------------------------------------------
// The generated kernels run, on the CPU, through the emulator of tests/emu:
// every kernel and the whole model against the CPU runtime, and sampling on
// crafted logits. (The same comparison runs on a real GPU in tests/gpu.)

#include "runtime/Engine.h"
#include "runtime/WeightFormats.h"
#include "runtime/WeightPacking.h"
#include "tests/common/StepCompare.h"
#include "tests/emu/EmuExecutor.h"

namespace {

#define REQUIRE_EMULATOR()                                                                         \
  if (EmuExecutor::cudaIncludeDir().empty())                                                       \
  GTEST_SKIP() << "no CUDA headers in this build: the kernel emulator needs cuda_bf16.h"

struct Emulated {
  Plan plan;
  CudaModule mod;
  std::vector<char> weights;
};

Emulated prepare(const Shape &s) {
  Emulated e;
  CompileOutput out = compileModel(cudaConfig(s.model, s.compile, s.rope));
  e.mod = generateCuda(out.plan, {"sm_90a"});
  e.plan = out.plan;
  e.plan.deviceWorkspaceBytes = e.mod.program.workspaceBytes;
  std::unique_ptr<WeightSource> src = openWeights("random:5", e.plan.model);
  e.weights = packWeightsInMemory(e.plan, *src);
  return e;
}

TEST(CudaEmulated, EveryKernelMatchesTheCpuRuntime) {
  REQUIRE_EMULATOR();
  for (const Shape &s : kShapes) {
    SCOPED_TRACE(s.what);
    Emulated e = prepare(s);
    CpuExecutor cpu(e.plan, e.weights.data(), e.weights.size(), 2);
    EmuExecutor emu(e.plan, e.mod.program, e.mod.source, e.weights.data(), e.weights.size());
    std::mt19937 rng(11);
    kvplan::testing::compareStepByStep(emu, cpu, e.plan, e.mod.program, rng);
  }
}

TEST(CudaEmulated, WholeModelMatchesTheCpuRuntime) {
  REQUIRE_EMULATOR();
  for (const Shape &s : kShapes) {
    SCOPED_TRACE(s.what);
    Emulated e = prepare(s);
    Engine cpu(e.plan, e.weights.data(), e.weights.size(), 2);
    Engine emu(std::make_unique<EmuExecutor>(e.plan, e.mod.program, e.mod.source,
                                             e.weights.data(), e.weights.size()));
    std::mt19937 rng(3);
    // Longer than a prefill chunk: the second chunk reads the first's cache.
    std::vector<int32_t> prompt(size_t(e.plan.settings.prefillChunk + 5));
    for (int32_t &t : prompt) t = int32_t(rng() % uint32_t(e.plan.model.vocabSize));
    kvplan::testing::followCpu(cpu, emu, prompt, 4,
                               4 * kvplan::testing::tolerance(e.plan.settings.weightDtype));
  }
}

TEST(CudaEmulated, SamplingKernelFollowsTopKTopPAndTheDraw) {
  REQUIRE_EMULATOR();
  Emulated e = prepare(kShapes[0]); // decode runs 4 rows, vocabulary 512
  EmuExecutor emu(e.plan, e.mod.program, e.mod.source, e.weights.data(), e.weights.size());
  const EntryPoint &ep = e.plan.entryPoints.at("decode");
  const CudaEntry &ce = e.mod.program.entries.at("decode");
  const int64_t v = e.plan.model.vocabSize, rows = ep.rows;
  ASSERT_EQ(rows, 4);
  std::vector<float> logits(size_t(rows * v), -100.0f);
  auto at = [&](int64_t r, int64_t i) -> float & { return logits[size_t(r * v + i)]; };
  for (int64_t i = 0; i < v; ++i) at(0, i) = 0.0f;
  at(0, 7) = at(0, 9) = 5.0f;             // greedy, a tie: the lower index
  at(1, 3) = 0.0f, at(1, 10) = std::log(3.0f); // top-2: 1/4 and 3/4 in index order
  at(2, 3) = std::log(3.0f), at(2, 10) = 0.0f; // top-p 0.5 keeps token 3 alone
  at(3, 1) = at(3, 2) = 0.0f;             // two equal: the draw splits at 1/2
  auto sample = [&](std::vector<DeviceSamplingParams> p) {
    emu.upload(DeviceBuffer::arena, ep.results[0].offset, logits.data(), int64_t(logits.size()) * 4);
    emu.upload(DeviceBuffer::work, ce.samplingParamsOffset, p.data(),
               int64_t(p.size() * sizeof(DeviceSamplingParams)));
    emu.fill(DeviceBuffer::work, ce.sampledOffset, 0xff, rows * 4);
    emu.runOps("decode", rows, ce.ops.size(), ce.ops.size());
    std::vector<int32_t> t(static_cast<size_t>(rows));
    emu.download(DeviceBuffer::work, ce.sampledOffset, t.data(), rows * 4);
    return t;
  };
  EXPECT_EQ(sample({{0, 1, 0, 0.9f}, {1, 1, 2, 0.2f}, {1, 0.5f, 0, 0.99f}, {1, 1, 0, 0.49f}}),
            (std::vector<int32_t>{7, 3, 3, 1}));
  EXPECT_EQ(sample({{2, 1, 1, 0.5f}, {1, 1, 2, 0.3f}, {1, 0.5f, 0, 0.0f}, {1, 1, 0, 0.51f}}),
            (std::vector<int32_t>{7, 10, 3, 2}));
  // Top-k 2 of 512 equal logits keeps the ties: any token may come.
  for (int64_t i = 0; i < v; ++i) at(1, i) = 1.0f;
  std::vector<int32_t> t = sample({{0, 1, 0, 0}, {1, 1, 2, 0.999f}, {0, 1, 0, 0}, {0, 1, 0, 0}});
  EXPECT_EQ(t[1], int32_t(v - 1));
}

} // namespace
