// Tensor-parallel CUDA ranks on the fake GPU: run as
// `mpirun -np 2 kvplan-fakegpu-tp-tests` (ctest does). Each process is one
// rank with its own fake device, running the real CUDA executor: its kernels
// in the emulator, its all_reduce steps through the fake NCCL
// (tests/fakegpu/FakeNccl.cpp: an MPI_Allreduce recorded into the graph like
// any launch), the NCCL unique id sent over MPI. Rank 0 drives an engine over
// the leader of the ranks and compares every step with the CPU runtime
// running the model unsplit; rank 1 follows.
#include "codegen/Compiler.h"
#include "codegen/CudaCodegen.h"
#include "formats/WeightFormats.h"
#include "plan/WeightPacking.h"
#include "runtime/Engine.h"
#include "runtime/RankExecutor.h"
#include "runtime/cuda/CudaExecutor.h"
#include "runtime/mpi/MpiCollective.h"
#include "tests/common/MpiTestMain.h"
#include "tests/common/ActivationsScope.h"
#include "tests/common/CudaShapes.h"
#include "tests/common/StepCompare.h"
#include "tests/emu/EmuCompile.h"
#include "tests/fakegpu/FakeCuda.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>

// The CPU reference computes with f32 activations, as the CUDA kernels do.
static const kvplan::test::ActivationsScope kF32Activations(kvplan::cpu::Activations::f32);

extern "C" long long fakenccl_all_reduces();

using namespace kvplan;

namespace {

struct Shape {
  const char *name, *model, *compile;
};

// GQA with f32 weights (the tight check); MQA, its one KV head kept by both
// ranks, with tied bf16 embeddings cut by vocabulary; Qwen2 biases cut with
// their projections, f16, batch 1 (the fused Q/K/V is one product); GQA
// with int8 and int4 weights: each rank's down rows (160 codes) are whole
// groups of the unsplit rows, so both runtimes hold the same codes, and the
// prefill chunks (16 rows) take the tiled product; Qwen3's per-head q/k
// norms, each rank normalizing its own heads, f32; mixtures of experts,
// each rank routing every row and running half of each chosen expert's
// features (Qwen3-MoE's in bf16, Mixtral's in int8, its down rows of 64
// codes whole groups, beside a gated shared expert whose partial rows the
// mixture's one all-reduce sums).
const Shape kShapes[] = {
    {"gqa_f32",
     "architecture = \"llama\"\nhidden_size = 128\nintermediate_size = 320\nnum_layers = 2\n"
     "num_heads = 4\nnum_kv_heads = 2\nvocab_size = 300",
     "weight_dtype = \"f32\"\nmax_batch = 2\nmax_seq_len = 128\nprefill_chunk = 16"},
    {"mqa_tied_bf16",
     "architecture = \"llama\"\nhidden_size = 256\nintermediate_size = 512\nnum_layers = 2\n"
     "num_heads = 8\nnum_kv_heads = 1\nvocab_size = 512\ntie_word_embeddings = true",
     "weight_dtype = \"bf16\"\nmax_batch = 2\nmax_seq_len = 128\nprefill_chunk = 16"},
    {"qwen2_bias_f16",
     "architecture = \"qwen2\"\nhidden_size = 128\nintermediate_size = 256\nnum_layers = 2\n"
     "num_heads = 4\nnum_kv_heads = 2\nvocab_size = 200\nattention_bias = true",
     "weight_dtype = \"f16\"\nmax_batch = 1\nmax_seq_len = 128\nprefill_chunk = 16"},
    {"gqa_int8",
     "architecture = \"llama\"\nhidden_size = 128\nintermediate_size = 320\nnum_layers = 2\n"
     "num_heads = 4\nnum_kv_heads = 2\nvocab_size = 300",
     "weight_dtype = \"int8\"\nmax_batch = 2\nmax_seq_len = 128\nprefill_chunk = 16"},
    {"gqa_int4",
     "architecture = \"llama\"\nhidden_size = 128\nintermediate_size = 320\nnum_layers = 2\n"
     "num_heads = 4\nnum_kv_heads = 2\nvocab_size = 300",
     "weight_dtype = \"int4\"\nmax_batch = 2\nmax_seq_len = 128\nprefill_chunk = 16"},
    {"qwen3_qk_norm_f32",
     "architecture = \"qwen3\"\nhidden_size = 128\nintermediate_size = 256\nnum_layers = 2\n"
     "num_heads = 4\nnum_kv_heads = 2\nhead_dim = 64\nvocab_size = 200",
     "weight_dtype = \"f32\"\nmax_batch = 2\nmax_seq_len = 128\nprefill_chunk = 16"},
    {"qwen3moe_bf16",
     "architecture = \"qwen3\"\nhidden_size = 128\nintermediate_size = 256\nnum_layers = 2\n"
     "num_heads = 4\nnum_kv_heads = 2\nhead_dim = 32\nvocab_size = 200\nnum_experts = 8\n"
     "num_experts_per_tok = 2\nmoe_intermediate_size = 64",
     "weight_dtype = \"bf16\"\nmax_batch = 2\nmax_seq_len = 128\nprefill_chunk = 16"},
    {"mixtral_shared_int8",
     "architecture = \"mistral\"\nhidden_size = 128\nintermediate_size = 128\nnum_layers = 2\n"
     "num_heads = 4\nnum_kv_heads = 2\nvocab_size = 300\nnum_experts = 4\n"
     "num_experts_per_tok = 2\nshared_expert_intermediate_size = 64\nshared_expert_gate = true",
     "weight_dtype = \"int8\"\nmax_batch = 2\nmax_seq_len = 128\nprefill_chunk = 16"},
};

Collective &world() { return *mpiWorld(); }

ModelConfig config(const Shape &s, int64_t ranks, Target target) {
  ModelConfig cfg = kvplan::testing::cudaConfig(
      s.model, std::string(s.compile) + "\ntensor_parallel = " + std::to_string(ranks));
  cfg.compile.target = target;
  validate(cfg); // the target's defaults (the cpu target has no smaller copies)
  return cfg;
}

/// This rank's share of the model for the fake GPU: the plan, the launch
/// table, the generated source as its "machine code", and its weights.
struct RankModel {
  Plan plan;
  CudaCode code;
  std::vector<char> weights;
  RankModel(const Shape &s, int rank) {
    plan = compileModel(config(s, 2, Target::cuda)).plan;
    CudaModule mod = generateCuda(plan, {"sm_90a"});
    plan.cudaArchs = {"sm_90a"};
    plan.deviceWorkspaceBytes = mod.program.workspaceBytes;
    code.program = mod.program;
    code.source = mod.source;
    code.cubins["sm_90a"] = mod.source;
    weights = packWeightsInMemory(plan, *openWeights("random:9", plan.model), rank);
  }
  std::unique_ptr<CudaExecutor> executor(Collective *ranks) const {
    CudaOptions o;
    o.ranks = ranks;
    return std::make_unique<CudaExecutor>(plan, code, weights.data(), weights.size(), o);
  }
};

class FakeGpuRanks : public ::testing::Test {
protected:
  void SetUp() override {
    if (!mpiWorld() || world().size() != 2)
      GTEST_SKIP() << "run as mpirun -np 2 kvplan-fakegpu-tp-tests";
    if (emuCudaIncludeDir().empty())
      GTEST_SKIP() << "no CUDA headers in this build: the kernel emulator needs cuda_bf16.h";
    setenv("KVPLAN_CUBLAS_LIBRARY", KVPLAN_FAKE_CUBLAS, 1);
    setenv("KVPLAN_NCCL_LIBRARY", KVPLAN_FAKE_NCCL, 1);
    fakecuda_configure(2, 9, 0, 80LL << 30); // a machine with two GPUs, one per rank
  }
};

/// Rank 0: a prompt of two chunks and a bit, then decode steps following
/// the CPU's greedy tokens; every call's logits within the weights'
/// tolerance of the CPU's, and the ranks' shared greedy pick equal to the
/// argmax of the gathered logits. A second pass replays the graphs.
void lead(const Shape &s, Engine &tp, LeaderExecutor &leader) {
  const ModelConfig one = config(s, 1, Target::cpu);
  const Plan cpuPlan = compileModel(one).plan;
  const std::vector<char> w = packWeightsInMemory(cpuPlan, *openWeights("random:9", one.model));
  Engine cpu(cpuPlan, w.data(), w.size(), 1);
  std::vector<int32_t> prompt(37);
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = int32_t((i * 37 + 5) % 150 + 3);
  const double tol = kvplan::testing::modelTolerance(cpuPlan);
  const long long reducesBefore = fakenccl_all_reduces();
  const auto first = kvplan::testing::followCpu(cpu, tp, prompt, 8, tol);
  EXPECT_GT(fakenccl_all_reduces(), reducesBefore) << "the ranks summed nothing through NCCL";
  auto &share = static_cast<CudaExecutor &>(leader.rankShare());
  const int64_t captured = share.graphsCaptured();
  EXPECT_GE(captured, 2) << "prefill and decode are captured after their first, eager, run";
  const FakeCudaCounters before = fakecuda_counters();
  const auto again = kvplan::testing::followCpu(cpu, tp, prompt, 8, tol);
  EXPECT_EQ(share.graphsCaptured(), captured) << "nothing is captured twice";
  EXPECT_EQ(fakecuda_counters().launches, before.launches) << "replays launch nothing new";
  ASSERT_EQ(again.size(), first.size());
  for (size_t i = 0; i < first.size(); ++i)
    EXPECT_EQ(again[i], first[i]) << "replayed graphs compute what the eager runs did, call " << i;
}

TEST_F(FakeGpuRanks, EveryStepMatchesTheCpuRuntimeUnsplit) {
  for (const Shape &s : kShapes) {
    SCOPED_TRACE(s.name);
    Collective &comm = world();
    RankModel mine(s, comm.rank());
    std::unique_ptr<CudaExecutor> share = mine.executor(&comm);
    EXPECT_NE(share->describe().find("rank " + std::to_string(comm.rank()) + " of 2 on device " +
                                     std::to_string(comm.rank())),
              std::string::npos)
        << share->describe();
    EXPECT_FALSE(share->samplesOnDevice()) << "the ranks sample together, on the host";
    if (comm.rank() != 0) {
      followLeader(*share, comm);
      continue;
    }
    auto leader = std::make_unique<LeaderExecutor>(std::move(share), comm);
    LeaderExecutor *raw = leader.get();
    Engine tp(std::move(leader));
    lead(s, tp, *raw);
  }
}

TEST_F(FakeGpuRanks, TwoRanksOnOneGpuAreRefusedByEveryRank) {
  fakecuda_configure(1, 9, 0, 80LL << 30);
  RankModel mine(kShapes[0], world().rank());
  try {
    mine.executor(&world());
    ADD_FAILURE() << "two ranks shared one GPU";
  } catch (const InputError &e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("rank 1: its machine runs 2 ranks and has 1 CUDA device"), std::string::npos)
        << m;
    EXPECT_NE(m.find("--map-by ppr:1:node"), std::string::npos) << m;
  }
}

TEST_F(FakeGpuRanks, MissingNcclIsReportedCleanly) {
  setenv("KVPLAN_NCCL_LIBRARY", "/nonexistent/libnccl.so.2", 1);
  RankModel mine(kShapes[0], world().rank());
  try {
    mine.executor(&world());
    ADD_FAILURE() << "ran without NCCL";
  } catch (const InputError &e) {
    EXPECT_NE(std::string(e.what()).find("cannot load NCCL"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("KVPLAN_NCCL_LIBRARY"), std::string::npos) << e.what();
  }
}

TEST_F(FakeGpuRanks, ARankAloneIsToldToUseMpirun) {
  RankModel mine(kShapes[0], world().rank());
  try {
    mine.executor(nullptr);
    ADD_FAILURE() << "a rank's share ran without the other ranks";
  } catch (const InputError &e) {
    EXPECT_NE(std::string(e.what()).find("mpirun -np 2, one rank per GPU"), std::string::npos)
        << e.what();
  }
}

} // namespace

int main(int argc, char **argv) { return runMpiTests(argc, argv); }
