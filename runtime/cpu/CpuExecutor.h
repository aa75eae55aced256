// Runs a plan's entry points on the CPU: every step is bound once, at load,
// to arena addresses, weight pointers and KV-cache geometry, so running a
// step allocates nothing.
#pragma once

#include "runtime/Executor.h"
#include "runtime/cpu/Kernels.h"
#include "plan/Plan.h"
#include "runtime/cpu/ThreadPool.h"

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace kvplan {

class CpuExecutor : public Executor {
public:
  /// Binds `plan` to the weights (the artifact's weights section, laid out
  /// as the plan's weight table says), allocates the arena and the KV cache.
  /// Throws InputError when the plan and the weights disagree.
  CpuExecutor(const Plan &plan, const char *weights, uint64_t weightsBytes, int threads);
  ~CpuExecutor() override;
  CpuExecutor(const CpuExecutor &) = delete;
  CpuExecutor &operator=(const CpuExecutor &) = delete;

  const Plan &plan() const override { return plan_; }
  std::string describe() const override;
  int threads() const override { return pool.size(); }

  /// Inputs of an entry point, in the arena: write them before run().
  int32_t *tokens(const std::string &entry) override;
  int32_t *positions(const std::string &entry) override;
  int32_t *pageTable(const std::string &entry) override;
  /// The entry point's logits, in the arena: [rows, vocab] f32.
  const float *logits(const std::string &entry) override;

  /// Runs `entry` on its first `activeRows` rows (the others are padding:
  /// their positions must be -1).
  void run(const std::string &entry, int64_t activeRows) override;
  /// Runs only the plan steps firstStep..lastStep (RoPE tables included),
  /// for tests that compare another device step by step.
  void runSteps(const std::string &entry, int64_t activeRows, int64_t firstStep, int64_t lastStep);
  /// The arena and the KV cache, for such tests.
  char *arenaData() { return arena; }
  void *cacheData() { return cache; }

private:
  struct Instr;
  struct Program;
  Program &program(const std::string &entry);
  const Program &program(const std::string &entry) const;
  Program bind(const EntryPoint &ep);

  Plan plan_;
  const char *weights;
  uint64_t weightsBytes;
  ThreadPool pool;
  char *arena = nullptr;
  void *cache = nullptr;
  cpu::CacheGeometry geometry;
  std::vector<std::vector<float>> scratch; // per thread: attention scores
  std::map<std::string, std::unique_ptr<Program>> programs;
};

} // namespace kvplan
