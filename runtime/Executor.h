// What the engine drives: a plan's entry points bound to one device (the
// CPU, or a CUDA GPU), with host-side input buffers written before each run.
#pragma once

#include "plan/CudaProgram.h"
#include "plan/Plan.h"
#include "runtime/Collective.h"
#include "runtime/Sampler.h"

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace kvplan {

/// A buffer an executor allocated when it loaded the plan: each is a line
/// of the plan's memory bill.
struct Allocation {
  enum Memory { host, device, pinnedHost };
  std::string what; // "arena", "KV cache", "workspace", ...
  int64_t bytes = 0;
  Memory memory = host;
};

class Executor {
public:
  virtual ~Executor() = default;

  virtual const Plan &plan() const = 0;
  /// One line for humans: "cpu (avx512, 2 threads)", "cuda: NVIDIA H100 ...".
  virtual std::string describe() const = 0;
  virtual int threads() const { return 1; }
  /// Every buffer allocated at load (the mapped weights of an artifact are
  /// not allocated, but a device's copy of them is).
  virtual std::vector<Allocation> allocations() const = 0;

  /// Inputs of an entry point in host memory: write them before run().
  virtual int32_t *tokens(const std::string &entry) = 0;
  virtual int32_t *positions(const std::string &entry) = 0;
  virtual int32_t *pageTable(const std::string &entry) = 0;
  /// The sliding layers' page table where the plan gives them a pool of
  /// their own (Plan::windowCache), laid out as pageTable's; else null.
  virtual int32_t *windowPageTable(const std::string &entry) = 0;

  /// Runs `entry` on its first `activeRows` rows (the others are padding:
  /// their positions must be -1).
  virtual void run(const std::string &entry, int64_t activeRows) = 0;
  /// The last run's logits, [rows, vocab] f32 in host memory, valid until
  /// the next run; a tensor-parallel rank's are its slice of the
  /// vocabulary, [rows, vocab / ranks]. Rows past the run's active rows
  /// are padding (NaN from a tensor-parallel leader, which gathers the
  /// active rows alone).
  virtual const float *logits(const std::string &entry) = 0;

  /// Copies KV-cache page `from` onto page `to`, keys and values of every
  /// layer of one pool (a private copy of a shared page a sequence goes on
  /// writing): the main cache's, or with `windowPool` the sliding layers'.
  virtual void copyPage(int32_t from, int32_t to, bool windowPool) = 0;

  /// The ranks a tensor-parallel plan runs with (null: this process alone).
  virtual Collective *collective() const { return nullptr; }
  /// Seconds spent in all_reduce steps since the executor was made, by
  /// each rank (one figure for an executor alone). The rank that reaches an
  /// all-reduce last waits for no one: its time is the exchange itself; the
  /// others' include waiting for it.
  virtual std::vector<double> allReduceSeconds() { return {0.0}; }
  /// Calls of run() so far, by the entry point that ran each: a smaller
  /// copy (decode.8) where one served the call (GET /metrics shows them).
  virtual const std::map<std::string, int64_t> &callsByEntry() const { return calls; }
  /// Tensor parallelism (runtime/RankExecutor.h): the ranks draw the tokens
  /// of rows [0, count) of the last run of `entry` together from their
  /// slices of the logits, each row by rows[i].
  virtual void sampleRows(const std::string &entry, const RowSampling *rows, int64_t count,
                          int32_t *out) {
    throw std::logic_error("this executor runs alone; its logits are whole");
  }

  /// Executors that sample on the device (CUDA) take the per-row sampling
  /// parameters before run() and give the tokens after it, so only token
  /// ids cross to the host.
  virtual bool samplesOnDevice() const { return false; }
  virtual void setSampling(const std::string &entry, const DeviceSamplingParams *rows,
                           int64_t count) {
    throw std::logic_error("this executor samples on the host");
  }
  virtual const int32_t *sampled(const std::string &entry) {
    throw std::logic_error("this executor samples on the host");
  }

protected:
  std::map<std::string, int64_t> calls; // run() counts each call it ran here
};

} // namespace kvplan
