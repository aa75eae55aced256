// kvplan bench --requests: throughput, latency and the scheduler's own cost
// under a closed loop of requests, and a hash of every output so that runs
// can be checked for greedy exactness against each other.
#include "tools/kvplan/LoadBench.h"

#include "plan/Cost.h"
#include "runtime/Engine.h"
#include "runtime/Scheduler.h"
#include "support/Error.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <map>
#include <optional>
#include <random>

namespace kvplan::cli {

namespace {

using Clock = std::chrono::steady_clock;
double seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

const char *const kLoadFlags[] = {"--concurrency", "--shared-prefix", "--no-prefix-cache",
                                  "--seed", "--token-budget"};

/// The flags' own errors, before the model is loaded.
void checkLoadOptions(const LoadBenchOptions &o) {
  auto atLeast = [](int64_t v, int64_t min, const char *flag) {
    if (v < min)
      throw InputError(std::string(flag) + " must be at least " + std::to_string(min) + ", got " +
                       std::to_string(v));
  };
  atLeast(o.requests, 1, "--requests");
  atLeast(o.concurrency, 1, "--concurrency");
  atLeast(o.promptLen, 1, "--prompt-len");
  atLeast(o.gen, 1, "--gen");
  atLeast(o.sharedPrefix, 0, "--shared-prefix");
  atLeast(o.tokenBudget, 0, "--token-budget");
  checkThreadsFlag(o.threads);
}

/// Every request's prompt and length, drawn from --seed alone, so that runs
/// at any concurrency or pool size get the same load.
struct Workload {
  std::vector<std::vector<int32_t>> prompts;
  std::vector<int64_t> gens;
  int64_t clamped = 0; // requests cut to fit the context
};

/// Uniform in [n/2, 3n/2], at least 1.
int64_t around(std::mt19937_64 &rng, int64_t n) {
  const int64_t lo = std::max<int64_t>(1, n / 2), hi = std::max(lo, n + n / 2);
  return lo + int64_t(rng() % uint64_t(hi - lo + 1));
}

/// Each prompt is the shared prefix and then its own tokens, about
/// promptLen - sharedPrefix of them (at least one), so that --prompt-len
/// stays the typical prompt whatever the prefix; lengths are clamped to
/// the context, the prompt first.
Workload drawWorkload(const LoadBenchOptions &o, const Plan &plan) {
  std::mt19937_64 rng(o.seed);
  const uint64_t vocab = uint64_t(plan.model.vocabSize);
  const int64_t maxSeq = plan.settings.maxSeqLen;
  std::vector<int32_t> shared(size_t(o.sharedPrefix));
  for (int32_t &t : shared) t = int32_t(rng() % vocab);
  Workload w;
  for (int64_t i = 0; i < o.requests; ++i) {
    const int64_t own = around(rng, std::max<int64_t>(1, o.promptLen - o.sharedPrefix));
    const int64_t drawnGen = around(rng, o.gen);
    const int64_t promptLen = std::min(o.sharedPrefix + own, maxSeq - 1);
    const int64_t gen = std::min(drawnGen, maxSeq - promptLen);
    w.clamped += promptLen + gen < o.sharedPrefix + own + drawnGen;
    std::vector<int32_t> prompt = shared;
    prompt.resize(size_t(promptLen));
    for (size_t k = shared.size(); k < prompt.size(); ++k) prompt[k] = int32_t(rng() % vocab);
    w.prompts.push_back(std::move(prompt));
    w.gens.push_back(gen);
  }
  return w;
}

/// Settings the plan cannot meet, said with the flag to change; before the
/// load is drawn.
void checkAgainstPlan(const LoadBenchOptions &o, const Plan &plan) {
  const int64_t maxSeq = plan.settings.maxSeqLen, batch = plan.settings.maxBatch;
  if (o.sharedPrefix + 2 > maxSeq)
    throw InputError("--shared-prefix " + std::to_string(o.sharedPrefix) +
                     " leaves no room in the compiled context of " + std::to_string(maxSeq) +
                     " tokens: each prompt holds the prefix and at least one token of its own, "
                     "then generates at least one (give --shared-prefix at most " +
                     std::to_string(maxSeq - 2) + ", or compile with a larger --max-seq)");
  if (o.tokenBudget != 0 && o.tokenBudget < batch + 1)
    throw InputError("--token-budget must be 0 (max_batch + prefill_chunk) or at least "
                     "max_batch + 1 = " + std::to_string(batch + 1) + ", got " +
                     std::to_string(o.tokenBudget));
}

/// The longest request must fit the KV cache alone (under a sliding
/// window, the pages it holds at once).
void checkFitsPool(const Plan &plan, const Workload &w) {
  int64_t longest = 0;
  for (size_t i = 0; i < w.prompts.size(); ++i)
    longest = std::max(longest, int64_t(w.prompts[i].size()) + w.gens[i]);
  const int64_t need = sequencePeakPages(plan, longest);
  if (need > plan.kvCache.pages)
    throw InputError("a request of " + std::to_string(longest) + " tokens needs " +
                     std::to_string(need) + " KV-cache pages but the plan has " +
                     std::to_string(plan.kvCache.pages) +
                     " (lower --prompt-len or --gen, or compile with more --kv-pages)");
}

/// When each request was submitted and got its tokens, and the tokens.
struct RequestRecord {
  Clock::time_point submitted, first, last;
  std::vector<int32_t> tokens;
};

/// Engine time of the steps that decoded, and of those that only decoded
/// (no prefill): the decode step the scheduler's cost is measured against.
struct StepCosts {
  int64_t decodeSteps = 0, decodeOnlySteps = 0;
  double decodeEngineS = 0, decodeOnlyEngineS = 0;
  void add(const SchedulerStats &before, const SchedulerStats &after) {
    if (after.decodeCalls == before.decodeCalls) return;
    const double engine = after.engineSeconds - before.engineSeconds;
    ++decodeSteps;
    decodeEngineS += engine;
    if (after.prefillCalls == before.prefillCalls) {
      ++decodeOnlySteps;
      decodeOnlyEngineS += engine;
    }
  }
};

GenerationRequest makeRequest(const Workload &w, size_t i, RequestRecord &rec, int64_t &finished) {
  GenerationRequest g;
  g.prompt = w.prompts[i];
  g.maxNewTokens = w.gens[i];
  g.sampling = SamplingOptions{}; // greedy, and no stop ids: every request runs its length
  rec.tokens.reserve(size_t(w.gens[i]));
  g.onEvent = [&rec, &finished](const TokenEvent &e) {
    const Clock::time_point now = Clock::now();
    if (e.token >= 0) {
      if (rec.tokens.empty()) rec.first = now;
      rec.last = now;
      rec.tokens.push_back(e.token);
    }
    if (e.finished) ++finished;
  };
  return g;
}

/// Keeps `concurrency` requests submitted, the next submitted as one
/// finishes, until all have; returns the seconds from the first submit to
/// the last finish.
double runClosedLoop(Scheduler &sched, const Workload &w, int64_t concurrency,
                     std::vector<RequestRecord> &records, StepCosts &costs) {
  const int64_t total = int64_t(w.prompts.size());
  int64_t submitted = 0, finished = 0;
  const Clock::time_point start = Clock::now();
  Clock::time_point end = start;
  while (finished < total) {
    for (; submitted < total && submitted - finished < concurrency; ++submitted) {
      RequestRecord &rec = records[size_t(submitted)];
      rec.submitted = Clock::now();
      sched.submit(makeRequest(w, size_t(submitted), rec, finished));
    }
    const SchedulerStats before = sched.stats();
    const int64_t finishedBefore = finished;
    if (!sched.step()) throw std::logic_error("the scheduler stopped with requests unfinished");
    costs.add(before, sched.stats());
    if (finished != finishedBefore) end = Clock::now();
  }
  return seconds(start, end);
}

/// A few short requests first, as many as will decode together, so that the
/// measured run does not pay for first touches (threads, caches, pages);
/// each no longer than the load's first request, so each fits the pool.
/// Their prompts follow no pattern of the load's, so the load finds none of
/// their pages in the prefix cache, and the pool takes those back as needed.
void warmUp(Engine &engine, const LoadBenchOptions &o, const Workload &w) {
  Scheduler sched(engine, nullptr, {o.tokenBudget});
  const int64_t rows = std::min(o.concurrency, engine.maxBatch());
  const int64_t len = std::min(engine.prefillRows(), int64_t(w.prompts[0].size()));
  for (int64_t i = 0; i < rows; ++i) {
    GenerationRequest g;
    for (int64_t k = 0; k < len; ++k)
      g.prompt.push_back(int32_t((i * 7919 + k * 104729) % engine.vocabSize()));
    g.maxNewTokens = std::min<int64_t>(2, w.gens[0]);
    sched.submit(std::move(g));
  }
  sched.runUntilIdle();
}

/// p in [0, 100], interpolating between ranks; empty when there are none.
std::optional<double> percentile(std::vector<double> v, double p) {
  if (v.empty()) return std::nullopt;
  std::sort(v.begin(), v.end());
  const double rank = p / 100 * double(v.size() - 1);
  const size_t lo = size_t(rank), hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (rank - double(lo));
}

/// FNV-1a 64 over every generated id, request by request, each as four
/// little-endian bytes.
std::string outputsHash(const std::vector<RequestRecord> &records) {
  uint64_t h = 14695981039346656037ull;
  for (const RequestRecord &r : records)
    for (int32_t t : r.tokens)
      for (int b = 0; b < 4; ++b) {
        h ^= (uint32_t(t) >> (8 * b)) & 0xff;
        h *= 1099511628211ull;
      }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)h);
  return buf;
}

struct LoadReport {
  int64_t generated = 0;
  double wallS = 0, outputTokS = 0;
  std::optional<double> ttftP50, ttftP99, tpotP50, tpotP99; // ms
  double schedulerMsPerStep = 0;
  std::optional<double> overheadPct, decodeStepMs;
  std::string hash;
  std::map<std::string, int64_t> entryCalls; // steps by the entry point (copy) that ran them
};

/// The executor's calls of each entry point since `before`.
std::map<std::string, int64_t> callsSince(const Executor &e,
                                          const std::map<std::string, int64_t> &before) {
  std::map<std::string, int64_t> calls = e.callsByEntry();
  for (auto it = calls.begin(); it != calls.end();) {
    auto was = before.find(it->first);
    it->second -= was == before.end() ? 0 : was->second;
    it = it->second > 0 ? std::next(it) : calls.erase(it);
  }
  return calls;
}

LoadReport summarise(const std::vector<RequestRecord> &records, double wallS,
                     const SchedulerStats &s, const StepCosts &c) {
  LoadReport r;
  std::vector<double> ttft, tpot;
  for (const RequestRecord &rec : records) {
    const int64_t n = int64_t(rec.tokens.size());
    r.generated += n;
    if (n > 0) ttft.push_back(1e3 * seconds(rec.submitted, rec.first));
    if (n > 1) tpot.push_back(1e3 * seconds(rec.first, rec.last) / double(n - 1));
  }
  r.wallS = wallS;
  r.outputTokS = wallS > 0 ? double(r.generated) / wallS : 0;
  r.ttftP50 = percentile(ttft, 50);
  r.ttftP99 = percentile(ttft, 99);
  r.tpotP50 = percentile(tpot, 50);
  r.tpotP99 = percentile(tpot, 99);
  const double schedulerS = s.steps ? (s.stepSeconds - s.engineSeconds) / double(s.steps) : 0;
  r.schedulerMsPerStep = 1e3 * schedulerS;
  // A decode step without prefill is the step the goal speaks of; where
  // every decode shared its step with a prefill, those steps stand in.
  if (c.decodeOnlySteps)
    r.decodeStepMs = 1e3 * c.decodeOnlyEngineS / double(c.decodeOnlySteps);
  else if (c.decodeSteps)
    r.decodeStepMs = 1e3 * c.decodeEngineS / double(c.decodeSteps);
  if (r.decodeStepMs && *r.decodeStepMs > 0)
    r.overheadPct = 100 * r.schedulerMsPerStep / *r.decodeStepMs;
  r.hash = outputsHash(records);
  return r;
}

nlohmann::json orNull(const std::optional<double> &v) {
  return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
}

void printLoadJson(const LoadBenchOptions &o, Engine &engine, const SchedulerStats &s,
                   const LoadReport &r) {
  const Plan &plan = engine.plan();
  nlohmann::json j = {{"model", plan.model.name},
                      {"requests", o.requests},
                      {"concurrency", o.concurrency},
                      {"prompt_len", o.promptLen},
                      {"gen", o.gen},
                      {"shared_prefix", o.sharedPrefix},
                      {"prefix_cache", !o.noPrefixCache},
                      {"output_tok_s", r.outputTokS},
                      {"ttft_ms_p50", orNull(r.ttftP50)},
                      {"ttft_ms_p99", orNull(r.ttftP99)},
                      {"tpot_ms_p50", orNull(r.tpotP50)},
                      {"tpot_ms_p99", orNull(r.tpotP99)},
                      {"prefix_hit_rate", s.prefixHitRate()},
                      {"preemptions", s.preemptions},
                      {"scheduler_ms_per_step", r.schedulerMsPerStep},
                      {"scheduler_overhead_pct", orNull(r.overheadPct)},
                      {"outputs_hash", r.hash},
                      {"kv_pages", plan.kvCache.pages},
                      {"max_batch", engine.maxBatch()},
                      {"entry_point_calls", r.entryCalls},
                      {"executor", engine.executor().describe()}};
  std::cout << j.dump() << "\n";
}

/// A figure with its unit, or n/a.
std::string figure(const std::optional<double> &v, const char *format) {
  if (!v) return "n/a";
  char buf[32];
  std::snprintf(buf, sizeof buf, format, *v);
  return buf;
}
std::string ms(const std::optional<double> &v) { return figure(v, "%.2f ms"); }

void printLoadText(const LoadBenchOptions &o, Engine &engine, const SchedulerStats &s,
                   const LoadReport &r) {
  const Plan &plan = engine.plan();
  std::printf("model     %s (weights %s) on %s; max_batch %lld, %lld KV pages of %lld\n",
              plan.model.name.c_str(), plan.settings.weightTypesText().c_str(),
              engine.executor().describe().c_str(), (long long)engine.maxBatch(),
              (long long)plan.kvCache.pages, (long long)plan.kvCache.pageSize);
  std::printf("load      %lld requests, %lld in flight; prompts about %lld tokens (%lld shared), "
              "about %lld new; prefix cache %s\n",
              (long long)o.requests, (long long)o.concurrency, (long long)o.promptLen,
              (long long)o.sharedPrefix, (long long)o.gen, o.noPrefixCache ? "off" : "on");
  std::printf("output    %lld tokens in %.3f s: %.1f tok/s\n", (long long)r.generated, r.wallS,
              r.outputTokS);
  std::printf("ttft      p50 %s, p99 %s\n", ms(r.ttftP50).c_str(), ms(r.ttftP99).c_str());
  std::printf("tpot      p50 %s, p99 %s\n", ms(r.tpotP50).c_str(), ms(r.tpotP99).c_str());
  std::printf("cache     %.1f%% of prompt tokens from the prefix cache; %lld preemptions\n",
              100 * s.prefixHitRate(), (long long)s.preemptions);
  std::printf("steps     %lld (%lld decode calls, %.2f rows each; %lld prefill calls)\n",
              (long long)s.steps, (long long)s.decodeCalls,
              s.decodeCalls ? double(s.decodeRows) / double(s.decodeCalls) : 0.0,
              (long long)s.prefillCalls);
  std::string entries;
  for (const auto &[name, n] : r.entryCalls)
    entries += (entries.empty() ? "" : ", ") + name + " " + std::to_string(n);
  std::printf("entries   %s (calls by the entry point that ran them)\n", entries.c_str());
  std::printf("scheduler %.4f ms per step = %s of a decode step (%s)\n", r.schedulerMsPerStep,
              figure(r.overheadPct, "%.2f%%").c_str(),
              ms(r.decodeStepMs).c_str());
  std::printf("outputs   fnv1a64 %s\n", r.hash.c_str());
}

} // namespace

CLI::Option *addLoadBenchFlags(CLI::App *cmd, LoadBenchOptions &o) {
  CLI::Option *requests = cmd->add_option(
      "--requests", o.requests,
      "Load benchmark: run N requests through the scheduler and report throughput, time to "
      "first token, time per output token, prefix-cache hits and the scheduler's cost");
  cmd->add_option("--concurrency", o.concurrency,
                  "With --requests: requests kept in flight (default 1). A model description "
                  "is compiled with --max-batch equal to it unless --max-batch is given");
  cmd->add_option("--shared-prefix", o.sharedPrefix,
                  "With --requests: prompt tokens common to every request (default 0)");
  cmd->add_flag("--no-prefix-cache", o.noPrefixCache,
                "With --requests: keep no KV-cache pages for reuse across requests");
  cmd->add_option("--seed", o.seed,
                  "With --requests: seed for the prompts and lengths (default 1)");
  cmd->add_option("--token-budget", o.tokenBudget,
                  "With --requests: tokens per scheduler step (default 0: max_batch + one "
                  "prefill chunk)");
  return requests;
}

void checkNoLoadFlags(CLI::App *cmd) {
  for (const char *flag : kLoadFlags)
    if (cmd->get_option(flag)->count() > 0)
      throw InputError(std::string(flag) + " needs --requests N (the load benchmark)");
}

int runLoadBench(LoadBenchOptions o, bool verbose) {
  checkLoadOptions(o);
  if (!isArtifactFile(o.model.model) && o.model.maxBatch == 0)
    o.model.maxBatch = o.concurrency;
  Runnable r = loadRunnable(o.model, verbose);
  checkExecFlags(r, {o.threads, !o.noGraphs});
  checkAgainstPlan(o, r.plan);
  const Workload w = drawWorkload(o, r.plan);
  checkFitsPool(r.plan, w);
  EngineOptions eo;
  eo.prefixCache = !o.noPrefixCache;
  Engine engine(makeExecutor(r, {o.threads, !o.noGraphs}), eo);
  if (verbose) std::fprintf(stderr, "running on %s\n", engine.executor().describe().c_str());
  if (engine.maxBatch() < o.concurrency)
    std::fprintf(stderr,
                 "note: %s decodes at most %lld sequences at once (max_batch); of %lld "
                 "requests in flight, the others wait in the queue\n",
                 o.model.model.c_str(), (long long)engine.maxBatch(), (long long)o.concurrency);
  if (w.clamped)
    std::fprintf(stderr,
                 "note: %lld of %lld requests were cut to the context of %lld tokens (prompt "
                 "first, then new tokens)\n",
                 (long long)w.clamped, (long long)o.requests, (long long)engine.maxSeqLen());
  warmUp(engine, o, w);
  Scheduler sched(engine, nullptr, {o.tokenBudget});
  std::vector<RequestRecord> records(size_t(o.requests));
  StepCosts costs;
  const std::map<std::string, int64_t> callsBefore = engine.executor().callsByEntry();
  const double wallS = runClosedLoop(sched, w, o.concurrency, records, costs);
  LoadReport report = summarise(records, wallS, sched.stats(), costs);
  report.entryCalls = callsSince(engine.executor(), callsBefore);
  if (o.json)
    printLoadJson(o, engine, sched.stats(), report);
  else
    printLoadText(o, engine, sched.stats(), report);
  return 0;
}

} // namespace kvplan::cli
