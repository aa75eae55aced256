// What GET /metrics reports, in Prometheus' text format: requests by status,
// tokens in and out, the scheduler's queue and running sequences, KV-cache
// pages, the prefix cache's hit rate, and histograms of time to first token
// and time per output token.
//
// HTTP threads add counts as requests end; the scheduler's state is owned by
// the thread that steps it, so that thread copies it in (sample()) after
// every step and nobody reads the scheduler across threads.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace kvplan {
class Scheduler;
}

namespace kvplan::server {

/// A Prometheus histogram: cumulative counts per upper bound, the sum and
/// the count.
class Histogram {
public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double v);
  /// name_bucket{le=...}, name_sum and name_count lines.
  void render(std::string &out, const std::string &name) const;

private:
  std::vector<double> bounds;
  std::vector<uint64_t> counts; // per bound, then +Inf; not cumulative
  double sum = 0;
  uint64_t count = 0;
};

/// The scheduler's and the KV cache's state at one moment.
struct EngineGauges {
  int64_t inFlight = 0; // the server's count: submitted and not finished
  int64_t waiting = 0, running = 0;
  int64_t pagesTotal = 0, pagesUsed = 0, pagesCached = 0;
  // The sliding-window layers' own pool, where the plan has one (total 0: none).
  int64_t windowPagesTotal = 0, windowPagesUsed = 0;
  int64_t promptTokens = 0, cachedPromptTokens = 0; // admitted so far
  int64_t preemptions = 0, steps = 0;
  int64_t verifyCalls = 0, draftsProposed = 0, draftsAccepted = 0; // speculative decoding
  std::map<std::string, int64_t> entryCalls; // the executor's calls by entry point
};

class Metrics {
public:
  Metrics();
  /// A request answered with HTTP `status` (any endpoint).
  void request(int status);
  /// A generation that ended: its tokens and times (seconds), and how it
  /// ended ("stop", "length", "cancelled").
  void generation(int64_t promptTokens, int64_t outputTokens, double ttft, double perToken,
                  const std::string &finish);
  /// From the scheduler's thread, after a step.
  void sample(Scheduler &s);
  /// Requests submitted and not yet finished (what --max-queue bounds).
  void setInFlight(int64_t n);
  EngineGauges gauges() const;
  /// The exposition text.
  std::string render() const;

private:
  mutable std::mutex m;
  std::map<int, uint64_t> byStatus;
  std::map<std::string, uint64_t> byFinish;
  uint64_t promptTokens = 0, outputTokens = 0;
  Histogram ttft, tpot;
  EngineGauges g;
};

} // namespace kvplan::server
