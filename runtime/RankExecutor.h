// Tensor-parallel ranks as one executor. Rank 0 runs the engine (and the
// scheduler, the HTTP server, the benchmark: every command) over a
// LeaderExecutor, which sends each call's inputs to the other ranks before
// running its own share; ranks 1.. run followLeader(), which repeats each
// call on their share until the leader stops. All ranks then meet in the
// plan's all_reduce steps and in the sampling of the sharded logits
// (runtime/ShardedSampling.h). The messages go through the Collective
// (MPI), so a rank never needs the engine, the tokenizer or the socket.
#pragma once

#include "runtime/Collective.h"
#include "runtime/Executor.h"
#include "runtime/ShardedSampling.h"

#include <map>
#include <memory>
#include <vector>

namespace kvplan {

class LeaderExecutor : public Executor {
public:
  /// `share` runs rank 0's share of the plan; `comm` reaches the others.
  LeaderExecutor(std::unique_ptr<Executor> share, Collective &comm);
  /// Tells the other ranks to stop.
  ~LeaderExecutor() override;

  const Plan &plan() const override { return share->plan(); }
  std::string describe() const override { return share->describe(); }
  int threads() const override { return share->threads(); }
  std::vector<Allocation> allocations() const override { return share->allocations(); }
  int32_t *tokens(const std::string &e) override { return share->tokens(e); }
  int32_t *positions(const std::string &e) override { return share->positions(e); }
  int32_t *pageTable(const std::string &e) override { return share->pageTable(e); }
  int32_t *windowPageTable(const std::string &e) override { return share->windowPageTable(e); }
  /// Sends the inputs to every rank, then runs this rank's share.
  void run(const std::string &entry, int64_t activeRows) override;
  /// The whole vocabulary's logits, gathered from every rank: of decode and
  /// verify, the last run's active rows (the others NaN); of prefill, its
  /// one row. Gathered once per run: a second call (a penalised row and a
  /// token's log-probabilities in one step) returns the same rows.
  const float *logits(const std::string &entry) override;
  /// How many times logits() gathered rows from the ranks.
  int64_t logitGathers() const { return gathers; }
  void copyPage(int32_t from, int32_t to, bool windowPool) override;
  Collective *collective() const override { return &comm; }
  /// Every rank's, gathered.
  std::vector<double> allReduceSeconds() override;
  /// Rank 0's (every rank runs the same entry points).
  const std::map<std::string, int64_t> &callsByEntry() const override {
    return share->callsByEntry();
  }
  /// The ranks draw rows [0, count) of the last run of `entry` together.
  void sampleRows(const std::string &entry, const RowSampling *rows, int64_t count,
                  int32_t *out) override;
  Executor &rankShare() { return *share; }

private:
  void send(int32_t command, const std::string &entry, int64_t a, int64_t b);
  std::unique_ptr<Executor> share;
  Collective &comm;
  std::vector<float> gathered;
  std::string gatheredFor; // the entry point whose last run `gathered` holds ("": none)
  int64_t gathers = 0;
  std::vector<int32_t> inputs;
  std::vector<RowSampling> rowsBuffer;
  std::map<std::string, int64_t> lastRows; // each entry point's last run's active rows
  ShardedSampler sampler;
};

/// Ranks 1..: repeats the leader's calls on `share` until it stops.
void followLeader(Executor &share, Collective &comm);

} // namespace kvplan
