// The CPU executor, but its runs throw while a flag is set: a device that
// failed, for the tests of what the scheduler and the server do then.
#pragma once

#include "runtime/cpu/CpuExecutor.h"

#include <atomic>
#include <stdexcept>

namespace kvplan::testing {

class FailingExecutor : public Executor {
public:
  FailingExecutor(const Plan &plan, const std::vector<char> &weights, std::atomic<bool> &failing)
      : cpu(plan, weights.data(), weights.size(), 1), failing(failing) {}
  const Plan &plan() const override { return cpu.plan(); }
  std::string describe() const override { return "failing " + cpu.describe(); }
  std::vector<Allocation> allocations() const override { return cpu.allocations(); }
  int32_t *tokens(const std::string &e) override { return cpu.tokens(e); }
  int32_t *positions(const std::string &e) override { return cpu.positions(e); }
  int32_t *pageTable(const std::string &e) override { return cpu.pageTable(e); }
  int32_t *windowPageTable(const std::string &e) override { return cpu.windowPageTable(e); }
  const float *logits(const std::string &e) override { return cpu.logits(e); }
  void copyPage(int32_t from, int32_t to, bool windowPool) override {
    cpu.copyPage(from, to, windowPool);
  }
  void run(const std::string &e, int64_t rows) override {
    if (failing) throw std::runtime_error("device lost");
    cpu.run(e, rows);
  }

private:
  CpuExecutor cpu;
  std::atomic<bool> &failing;
};

} // namespace kvplan::testing
