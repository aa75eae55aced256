// Runs a plan's entry points on the CPU: every step is bound once, at load,
// to arena addresses, weight pointers and KV-cache geometry, so running a
// step allocates nothing. The executor allocates exactly what the plan's
// memory bill lists: the arena, the KV cache and the workspace (RoPE tables,
// and attention scores per thread).
#pragma once

#include "plan/Plan.h"
#include "runtime/Executor.h"
#include "runtime/cpu/Kernels.h"
#include "runtime/cpu/ThreadPool.h"

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace kvplan {

class CpuExecutor : public Executor {
public:
  /// Binds `plan` to the weights (the artifact's weights section, laid out
  /// as the plan's weight table says), allocates the arena, the KV cache and
  /// the workspace. Throws InputError when the plan and the weights disagree
  /// or the plan holds an op or a type this runtime does not run.
  /// A tensor-parallel plan runs as one rank of `comm` (its all_reduce
  /// steps sum over it); refused without one of the plan's ranks.
  CpuExecutor(const Plan &plan, const char *weights, uint64_t weightsBytes, int threads,
              Collective *comm = nullptr);
  ~CpuExecutor() override;
  CpuExecutor(const CpuExecutor &) = delete;
  CpuExecutor &operator=(const CpuExecutor &) = delete;

  const Plan &plan() const override { return plan_; }
  std::string describe() const override;
  int threads() const override { return pool.size(); }
  std::vector<Allocation> allocations() const override;

  /// Inputs of an entry point, in the arena: write them before run().
  int32_t *tokens(const std::string &entry) override;
  int32_t *positions(const std::string &entry) override;
  int32_t *pageTable(const std::string &entry) override;
  int32_t *windowPageTable(const std::string &entry) override;
  /// The entry point's logits, in the arena: [rows, vocab] f32.
  const float *logits(const std::string &entry) override;
  void copyPage(int32_t from, int32_t to, bool windowPool) override;
  Collective *collective() const override { return comm; }
  /// Seconds this rank spent in all_reduce steps, and the bytes it sent.
  std::vector<double> allReduceSeconds() override { return {reduceSeconds}; }
  int64_t allReduceBytes() const { return reduceBytes; }

  /// Runs `entry` on its first `activeRows` rows (the others are padding:
  /// their positions must be -1).
  void run(const std::string &entry, int64_t activeRows) override;
  /// Runs only the plan steps firstStep..lastStep (RoPE tables included),
  /// for tests that compare another device step by step. The inputs are
  /// checked (checkRunInputs) when firstStep is 0: later steps find them as
  /// that first part left them, or their arena bytes reused once read.
  void runSteps(const std::string &entry, int64_t activeRows, int64_t firstStep, int64_t lastStep);
  /// The arena and the KV cache, for such tests.
  char *arenaData() { return arena.get(); }
  void *cacheData() { return cache.get(); }

  struct Instr;
  struct Program;

private:
  struct Free {
    void operator()(void *p) const;
  };
  using Buffer = std::unique_ptr<char, Free>;
  Buffer allocate(const char *what, int64_t bytes);
  void checkMemory(const MemoryBill &bill) const;

  Program &program(const std::string &entry);
  void runInstr(const Program &prog, const Instr &in, int64_t activeRows);
  /// out = the sum of every rank's x (n floats), timed.
  void allReduce(const float *x, float *out, int64_t n);

  Plan plan_;
  const char *weights;
  uint64_t weightsBytes;
  ThreadPool pool;
  CpuWorkspace layout;
  Buffer arena, cache, workspace;
  std::vector<Allocation> allocated;
  cpu::CacheGeometry geometry;
  cpu::CacheGeometry windowGeometry; // the sliding layers' pool, after the main cache
  /// The cache and page table a cache op reads: the main pool's, or the
  /// sliding layers'.
  const cpu::CacheGeometry &cacheOf(const Instr &in) const;
  static const int32_t *tableOf(const Program &prog, const Instr &in);
  std::map<std::string, std::unique_ptr<Program>> programs;
  Collective *comm = nullptr;
  double reduceSeconds = 0;
  int64_t reduceBytes = 0;
};

} // namespace kvplan
