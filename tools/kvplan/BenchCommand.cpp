// kvplan bench: prefill and decode throughput against the machine's limits.
#include "tools/kvplan/Commands.h"
#include "tools/kvplan/LoadBench.h"
#include "tools/kvplan/Runnable.h"
#include "tools/kvplan/SpeculateBench.h"

#include "plan/Cost.h"
#include "runtime/Engine.h"
#include "runtime/RankExecutor.h"
#include "runtime/Roofline.h"
#include "runtime/Sampler.h"
#include "runtime/cpu/Isa.h"
#include "runtime/cpu/LinearDot.h"
#include "runtime/cpu/ThreadPool.h"
#ifdef KVPLAN_HAVE_CUDA
#include "runtime/cuda/CudaExecutor.h"
#endif

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <random>
#include <tuple>
#include <utility>

namespace kvplan::cli {

namespace {

using Clock = std::chrono::steady_clock;
double seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

struct BenchOptions {
  ModelOptions model;
  int64_t promptLen = 128, gen = 128;
  int64_t batch = 1; // sequences decoded together
  int threads = 0;
  bool json = false;
  bool noGraphs = false;
  LoadBenchOptions load; // its own flags; the load benchmark runs with --requests
  SpeculateFlags speculate;
};

/// The same prompt on every run, so that runs compare.
std::vector<int32_t> benchPrompt(const Plan &plan, int64_t length) {
  std::mt19937 rng(1234);
  std::vector<int32_t> prompt(static_cast<size_t>(length));
  for (int32_t &t : prompt) t = int32_t(rng() % uint32_t(plan.model.vocabSize));
  return prompt;
}

/// `batch` sequences, each prefilled with `prompt` rotated by its index (no
/// two share a prefix), decoded together: the sequences and each one's next
/// token.
struct DecodeBatch {
  std::vector<int> seqs;
  std::vector<int32_t> next;
};
DecodeBatch openBatch(Engine &engine, const std::vector<int32_t> &prompt, int64_t batch) {
  DecodeBatch b;
  for (int64_t i = 0; i < batch; ++i) {
    std::vector<int32_t> p = prompt;
    std::rotate(p.begin(), p.begin() + i % int64_t(p.size()), p.end());
    b.seqs.push_back(engine.open());
    b.next.push_back(engine.prefillNext(b.seqs.back(), p.data(), int64_t(p.size())));
  }
  return b;
}
/// `steps` decode steps of the whole batch.
void decodeBatch(Engine &engine, DecodeBatch &b, int64_t steps) {
  for (int64_t i = 0; i < steps; ++i) b.next = engine.decodeNext(b.seqs, b.next);
}
void closeBatch(Engine &engine, const DecodeBatch &b) {
  for (int s : b.seqs) engine.close(s);
}

/// The machine's limits, with the threads the model will use; measured
/// before and after the model runs, keeping the better figure, since a
/// shared machine's bandwidth drifts (fractions are then conservative).
struct MachineLimits {
  double bandwidth = 0, peak = 0; // GB/s, GFLOP/s
  void probe(int threads) {
    ThreadPool pool(threads);
    bandwidth = std::max(bandwidth, measureReadBandwidth(pool));
    peak = std::max(peak, measurePeakGflops(pool));
  }
};

/// " each of 8 sequences at once" where the batch is more than one.
std::string batchNote(int64_t batch) {
  return batch > 1 ? " each of " + std::to_string(batch) + " sequences at once" : "";
}

struct CpuTimes {
  double prefillS = 0, decodeS = 0; // decodeS: all `steps` steps
  int64_t steps = 0;
  // Tensor parallelism: the all_reduce steps' time in the best prefill and
  // in the decode steps, the least of the ranks' (the exchange itself: that
  // rank arrived last) and the most (with waiting for the slowest rank).
  double prefillReduceS = 0, decodeReduceS = 0, prefillReduceMaxS = 0, decodeReduceMaxS = 0;
};

/// The least and the most of the ranks' all-reduce seconds since `before`.
std::pair<double, double> reduceSpan(Engine &engine, const std::vector<double> &before) {
  const std::vector<double> now = engine.executor().allReduceSeconds();
  double lo = 1e300, hi = 0;
  for (size_t r = 0; r < now.size(); ++r) {
    lo = std::min(lo, now[r] - before.at(r));
    hi = std::max(hi, now[r] - before.at(r));
  }
  return {lo, hi};
}

/// One pass: prefill is short, so its time is the best of five runs on
/// fresh sequences; then `steps` greedy decode steps of `batch` sequences
/// after their prompts.
/// Tokens are drawn by the engine (a tensor-parallel model's ranks draw them
/// together from their slices of the logits).
CpuTimes measureCpu(Engine &engine, const std::vector<int32_t> &prompt, int64_t steps,
                    int64_t batch) {
  const int64_t len = int64_t(prompt.size());
  engine.setSampling(SamplingOptions{}); // greedy
  CpuTimes t;
  t.steps = steps;
  t.prefillS = 1e300;
  for (int rep = 0; rep < 5; ++rep) {
    int s = engine.open();
    const std::vector<double> r0 = engine.executor().allReduceSeconds();
    auto a = Clock::now();
    engine.prefillNext(s, prompt.data(), len);
    const double took = seconds(a, Clock::now());
    if (took < t.prefillS) {
      t.prefillS = took;
      std::tie(t.prefillReduceS, t.prefillReduceMaxS) = reduceSpan(engine, r0);
    }
    engine.close(s);
  }
  DecodeBatch b = openBatch(engine, prompt, batch);
  const std::vector<double> r0 = engine.executor().allReduceSeconds();
  auto t1 = Clock::now();
  decodeBatch(engine, b, steps);
  t.decodeS = seconds(t1, Clock::now());
  std::tie(t.decodeReduceS, t.decodeReduceMaxS) = reduceSpan(engine, r0);
  closeBatch(engine, b);
  return t;
}

void printCpuBench(const BenchOptions &o, const Plan &plan, int threads, const MachineLimits &m,
                   const CpuTimes &t) {
  const double prefillTokS = double(o.promptLen) / t.prefillS;
  const double decodeTokS = double(t.steps * o.batch) / t.decodeS;
  // Weights are read once a step, whatever the batch.
  const int64_t weightBytes = decodeWeightBytes(plan, o.batch);
  const double decodeGBs = double(weightBytes) * double(t.steps) / t.decodeS / 1e9;
  const double prefillGflops = prefillFlops(plan, o.promptLen) / t.prefillS / 1e9;
  const char *isa = cpu::isaName(cpu::activeIsa());
  const CompileSettings &settings = plan.settings;
  const std::string activations = cpu::activationsFor(settings);
  if (o.json) {
    nlohmann::json j = {{"model", plan.model.name},
                        {"weight_dtype", dtypeName(settings.weightDtype)},
                        {"isa", isa},
                        // what the matrices meet (runtime/cpu/LinearDot.h)
                        {"activations", activations},
                        {"prompt_len", o.promptLen},
                        {"gen", o.gen},
                        {"batch", o.batch},
                        {"threads", threads},
                        {"prefill_tok_s", prefillTokS},
                        {"decode_tok_s", decodeTokS},
                        {"weights_bytes", weightBytes},
                        {"bandwidth_gb_s", m.bandwidth},
                        {"decode_roofline_fraction", decodeGBs / m.bandwidth},
                        {"prefill_gflops", prefillGflops},
                        {"peak_gflops", m.peak},
                        {"prefill_peak_fraction", prefillGflops / m.peak}};
    if (settings.expertDtype) j["expert_dtype"] = dtypeName(*settings.expertDtype);
    if (plan.ranks() > 1) {
      j["ranks"] = plan.ranks();
      j["decode_all_reduce_ms"] = 1e3 * t.decodeReduceS / double(t.steps);
      j["decode_all_reduce_fraction"] = t.decodeReduceS / t.decodeS;
      j["prefill_all_reduce_ms"] = 1e3 * t.prefillReduceS;
      j["prefill_all_reduce_fraction"] = t.prefillReduceS / t.prefillS;
      j["decode_all_reduce_with_waiting_ms"] = 1e3 * t.decodeReduceMaxS / double(t.steps);
      j["prefill_all_reduce_with_waiting_ms"] = 1e3 * t.prefillReduceMaxS;
    }
    std::cout << j.dump() << "\n";
    return;
  }
  std::printf("model    %s (weights %s), %d threads, %s kernels, activations %s\n",
              plan.model.name.c_str(), settings.weightTypesText().c_str(), threads, isa,
              activations.c_str());
  std::printf("machine  read bandwidth %.1f GB/s, peak FMA %.1f GFLOP/s\n", m.bandwidth, m.peak);
  std::printf("prefill  %lld tokens: %.1f tok/s, %.1f GFLOP/s = %.0f%% of peak\n",
              (long long)o.promptLen, prefillTokS, prefillGflops, 100 * prefillGflops / m.peak);
  std::printf("decode   %lld tokens%s: %.1f tok/s, %s of weights per step = %.1f GB/s = "
              "%.0f%% of the bandwidth roofline\n",
              (long long)o.gen, batchNote(o.batch).c_str(), decodeTokS,
              humanBytes(weightBytes).c_str(), decodeGBs, 100 * decodeGBs / m.bandwidth);
  if (plan.ranks() > 1)
    std::printf("ranks    %lld tensor-parallel ranks (figures are rank 0's share of the weights); "
                "all-reduce %.3f ms per decode step = %.1f%% of it, %.3f ms per prefill = "
                "%.1f%% (the rank arriving last; with waiting for it: %.3f and %.3f ms)\n",
                (long long)plan.ranks(), 1e3 * t.decodeReduceS / double(t.steps),
                100 * t.decodeReduceS / t.decodeS, 1e3 * t.prefillReduceS,
                100 * t.prefillReduceS / t.prefillS, 1e3 * t.decodeReduceMaxS / double(t.steps),
                1e3 * t.prefillReduceMaxS);
}

int runBenchCpu(const BenchOptions &o, const Runnable &r) {
  const int threads = o.threads ? o.threads : defaultThreadCount();
  MachineLimits machine;
  machine.probe(threads);
  Engine engine(makeExecutor(r, {threads, true}));
  const std::vector<int32_t> prompt = benchPrompt(r.plan, o.promptLen);
  measureCpu(engine, prompt, std::min<int64_t>(o.gen, 4), o.batch); // warm-up: page faults
  const CpuTimes times = measureCpu(engine, prompt, o.gen, o.batch);
  machine.probe(threads);
  printCpuBench(o, r.plan, engine.threads(), machine, times);
  return 0;
}

#ifdef KVPLAN_HAVE_CUDA
/// Seconds per decode step, graph replay and eager, in the mode given first
/// (main) and the other; and replayed without programmatic dependent
/// launches, where the device has them (0 where not).
struct CudaTimes {
  double prefillS = 0, mainStep = 0, otherStep = 0, plainGraphStep = 0;
  double sampledStep = 0; // in the main mode, sampling as kSampledBench asks
  // Where a smaller copy of decode (decode.8) serves the batch: the main
  // mode on decode itself, at all its rows (0 where decode serves it).
  double wholeDecodeStep = 0;
};

/// The sampled decode the CUDA bench times beside greedy: what chat
/// clients commonly ask (the draw from the top-p set at a temperature).
const SamplingOptions kSampledBench{0.8, 0, 0.95, 1};

double cudaPrefillBest(Engine &engine, const std::vector<int32_t> &prompt) {
  double best = 1e300;
  for (int rep = 0; rep < 5; ++rep) {
    int s = engine.open();
    auto a = Clock::now();
    engine.prefillNext(s, prompt.data(), int64_t(prompt.size()));
    best = std::min(best, seconds(a, Clock::now()));
    engine.close(s);
  }
  return best;
}

/// Seconds per decode step of `batch` sequences over `steps` steps after
/// their prompts.
double cudaDecodeStep(Engine &engine, const std::vector<int32_t> &prompt, int64_t steps,
                      int64_t batch) {
  DecodeBatch b = openBatch(engine, prompt, batch);
  auto t1 = Clock::now();
  decodeBatch(engine, b, steps);
  const double s = seconds(t1, Clock::now()) / double(steps);
  closeBatch(engine, b);
  return s;
}

CudaTimes measureCuda(Engine &engine, CudaExecutor &cuda, const std::vector<int32_t> &prompt,
                      const BenchOptions &o) {
  const int64_t warmSteps = std::min<int64_t>(o.gen, 4);
  CudaTimes t;
  cudaPrefillBest(engine, prompt); // warm-up: graph capture, cuBLAS heuristics
  cudaDecodeStep(engine, prompt, warmSteps, o.batch);
  t.prefillS = cudaPrefillBest(engine, prompt);
  t.mainStep = cudaDecodeStep(engine, prompt, o.gen, o.batch);
  // Tensor-parallel ranks switch modes together only at start-up.
  if (cuda.collective()) return t;
  // The other mode, same kernels, same engine.
  cuda.setGraphs(o.noGraphs);
  cudaDecodeStep(engine, prompt, warmSteps, o.batch);
  t.otherStep = cudaDecodeStep(engine, prompt, o.gen, o.batch);
  cuda.setGraphs(!o.noGraphs);
  // Graphs again, each kernel waiting for the one before to finish before
  // it starts (the graphs are captured anew).
  if (cuda.dependentLaunches()) {
    cuda.setGraphs(true);
    cuda.setDependentLaunches(false);
    cudaDecodeStep(engine, prompt, warmSteps, o.batch);
    t.plainGraphStep = cudaDecodeStep(engine, prompt, o.gen, o.batch);
    cuda.setDependentLaunches(true);
    cuda.setGraphs(!o.noGraphs);
  }
  // On decode itself where a smaller copy of it serves the batch: what the
  // copy's kernels (chosen for its rows) gain.
  if (servingEntry(cuda.plan(), "decode", o.batch).name != "decode") {
    cuda.setVariants(false);
    cudaDecodeStep(engine, prompt, warmSteps, o.batch);
    t.wholeDecodeStep = cudaDecodeStep(engine, prompt, o.gen, o.batch);
    cuda.setVariants(true);
  }
  // Sampled on the device, the main mode again: what drawing adds to a step.
  engine.setSampling(kSampledBench);
  cudaDecodeStep(engine, prompt, warmSteps, o.batch);
  t.sampledStep = cudaDecodeStep(engine, prompt, o.gen, o.batch);
  engine.setSampling(SamplingOptions{});
  return t;
}

/// The decode step in the modes the CUDA bench compares: graph replay and
/// eager, programmatic dependent launches or plain, decode's copy or itself,
/// sampled or greedy.
void printCudaModes(const BenchOptions &o, const Plan &plan, const CudaTimes &t) {
  const double graphStep = o.noGraphs ? t.otherStep : t.mainStep;
  const double eagerStep = o.noGraphs ? t.mainStep : t.otherStep;
  std::printf("graphs   %.3f ms per decode step replayed, %.3f ms eager: %.2fx\n",
              graphStep * 1e3, eagerStep * 1e3, eagerStep / graphStep);
  if (t.plainGraphStep > 0)
    std::printf("launches %.3f ms per decode step replayed with programmatic dependent launches, "
                "%.3f ms without: %.2fx\n",
                graphStep * 1e3, t.plainGraphStep * 1e3, t.plainGraphStep / graphStep);
  if (t.wholeDecodeStep > 0) {
    const EntryPoint &copy = servingEntry(plan, "decode", o.batch);
    std::printf("rows     %.3f ms per decode step on %s (decode's kernels for %lld rows), %.3f ms "
                "on decode itself (for %lld): %.2fx\n",
                t.mainStep * 1e3, copy.name.c_str(), (long long)copy.rows,
                t.wholeDecodeStep * 1e3, (long long)plan.entryPoints.at("decode").rows,
                t.wholeDecodeStep / t.mainStep);
  }
  if (t.sampledStep > 0)
    std::printf("sampled  %.3f ms per decode step drawing at temperature %.1f and top-p %.2f, "
                "%.3f ms greedy\n",
                t.sampledStep * 1e3, kSampledBench.temperature, kSampledBench.topP,
                t.mainStep * 1e3);
}

void printCudaBench(const BenchOptions &o, const Plan &plan, CudaExecutor &cuda,
                    double bandwidth, const CudaTimes &t) {
  const double graphStep = o.noGraphs ? t.otherStep : t.mainStep;
  const double eagerStep = o.noGraphs ? t.mainStep : t.otherStep;
  const double prefillTokS = double(o.promptLen) / t.prefillS;
  const double decodeTokS = double(o.batch) / t.mainStep;
  // Weights are read once a step, whatever the batch.
  const int64_t weightBytes = decodeWeightBytes(plan, o.batch);
  const double decodeGBs = double(weightBytes) / t.mainStep / 1e9;
  const double bandwidthGBs = bandwidth / 1e9;
  const double fraction = bandwidthGBs > 0 ? decodeGBs / bandwidthGBs : 0;
  if (o.json) {
    nlohmann::json j = {{"model", plan.model.name},
                        {"weight_dtype", dtypeName(plan.settings.weightDtype)},
                        {"device", cuda.describe()},
                        {"graphs", !o.noGraphs},
                        {"prompt_len", o.promptLen},
                        {"gen", o.gen},
                        {"batch", o.batch},
                        {"prefill_tok_s", prefillTokS},
                        {"decode_tok_s", decodeTokS},
                        {"decode_step_ms_graph", graphStep * 1e3},
                        {"decode_step_ms_eager", eagerStep * 1e3},
                        {"graph_speedup", eagerStep / graphStep},
                        {"graphs_captured", cuda.graphsCaptured()},
                        {"dependent_launches", cuda.dependentLaunches()},
                        {"weights_bytes", weightBytes},
                        {"bandwidth_gb_s", bandwidthGBs},
                        {"decode_roofline_fraction", fraction}};
    if (t.plainGraphStep > 0) {
      j["decode_step_ms_graph_plain_launches"] = t.plainGraphStep * 1e3;
      j["dependent_launch_speedup"] = t.plainGraphStep / graphStep;
    }
    j["decode_entry"] = servingEntry(plan, "decode", o.batch).name;
    if (t.wholeDecodeStep > 0) {
      j["decode_step_ms_whole_decode"] = t.wholeDecodeStep * 1e3;
      j["decode_variant_speedup"] = t.wholeDecodeStep / t.mainStep;
    }
    if (t.sampledStep > 0) {
      j["decode_step_ms_sampled"] = t.sampledStep * 1e3;
      j["sampled_temperature"] = kSampledBench.temperature;
      j["sampled_top_p"] = kSampledBench.topP;
    }
    if (plan.ranks() > 1) {
      j["ranks"] = plan.ranks();
      j["all_reduce_bytes_per_decode_step"] = allReduceTraffic(plan, "decode", 1).bytes;
      j.erase("decode_step_ms_eager");
      j.erase("graph_speedup");
    }
    std::cout << j.dump() << "\n";
    return;
  }
  std::printf("model    %s (%s weights) on %s\n", plan.model.name.c_str(),
              dtypeName(plan.settings.weightDtype), cuda.describe().c_str());
  std::printf("device   device-to-device copy %.1f GB/s (read + write)\n", bandwidthGBs);
  std::printf("prefill  %lld tokens: %.1f tok/s\n", (long long)o.promptLen, prefillTokS);
  std::printf("decode   %lld tokens%s: %.1f tok/s, %s of weights per step = %.1f GB/s = %.0f%% "
              "of the copy roofline\n",
              (long long)o.gen, batchNote(o.batch).c_str(), decodeTokS,
              humanBytes(weightBytes).c_str(), decodeGBs, 100 * fraction);
  if (plan.ranks() > 1) {
    std::printf("ranks    %lld tensor-parallel ranks over NCCL (figures are rank 0's share of the "
                "weights); %s all-reduced per decode step, inside its CUDA graph; eager "
                "launches are not measured with ranks\n",
                (long long)plan.ranks(),
                humanBytes(allReduceTraffic(plan, "decode", 1).bytes).c_str());
    return;
  }
  printCudaModes(o, plan, t);
}

/// bench on a GPU: decode with graph replay and eagerly in one process, the
/// device-to-device copy bandwidth measured in the same run.
int runBenchCuda(const BenchOptions &o, const Runnable &r, bool verbose) {
  // Before the model takes memory; on device 0, rank 0's (the others'
  // copies would share it).
  const double bandwidth = r.comm && r.comm->rank() != 0 ? 0 : measureCudaCopyBandwidth();
  std::unique_ptr<Executor> exec = makeExecutor(r, {o.threads, !o.noGraphs});
  // Tensor parallelism: rank 0's share, under the leader of the ranks.
  auto *leader = dynamic_cast<LeaderExecutor *>(exec.get());
  auto *cuda = dynamic_cast<CudaExecutor *>(leader ? &leader->rankShare() : exec.get());
  Engine engine(std::move(exec));
  if (verbose) std::fprintf(stderr, "running on %s\n", cuda->describe().c_str());
  const std::vector<int32_t> prompt = benchPrompt(r.plan, o.promptLen);
  const CudaTimes times = measureCuda(engine, *cuda, prompt, o);
  printCudaBench(o, r.plan, *cuda, bandwidth, times);
  return 0;
}
#else
int runBenchCuda(const BenchOptions &, const Runnable &r, bool) {
  throw InputError(r.source + ": incompatible because it targets cuda and this kvplan has no "
                              "CUDA runtime");
}
#endif

/// --batch against what the artifact was compiled for: its decode rows
/// (max_batch) and its pool of KV pages.
void checkBatch(const BenchOptions &o, const Runnable &r) {
  if (o.speculate.on() && o.batch != 1)
    throw InputError("--speculate measures one sequence; it does not combine with --batch");
  const int64_t rows = r.plan.entryPoints.at("decode").rows;
  if (o.batch < 1 || o.batch > rows)
    throw InputError("--batch " + std::to_string(o.batch) + ": " + r.source +
                     " decodes at most " + std::to_string(rows) +
                     " sequences a step (max_batch); give 1 to " + std::to_string(rows) +
                     ", or recompile with --max-batch " +
                     std::to_string(std::max<int64_t>(o.batch, 1)));
  const KVCacheLayout &kv = r.plan.kvCache;
  const int64_t pagesEach = sequencePeakPages(r.plan, o.promptLen + o.gen);
  if (o.batch * pagesEach > kv.pages)
    throw InputError("--batch " + std::to_string(o.batch) +
                     " sequences of --prompt-len + --gen = " +
                     std::to_string(o.promptLen + o.gen) + " tokens need " +
                     std::to_string(o.batch * pagesEach) + " KV pages of " +
                     std::to_string(kv.pageSize) + " tokens; " + r.source + " has " +
                     std::to_string(kv.pages) + " (recompile with more --kv-pages, or measure "
                     "fewer or shorter sequences)");
}

int runBench(const BenchOptions &o, bool verbose) {
  if (o.promptLen < 1 || o.gen < 1)
    throw InputError("--prompt-len and --gen must be at least 1");
  checkThreadsFlag(o.threads);
  ModelOptions target = o.model;
  o.speculate.prepare(target);
  Runnable r = loadRunnable(target, verbose);
  checkExecFlags(r, {o.threads, !o.noGraphs}, o.speculate.draftModel());
  if (o.promptLen + o.gen > r.plan.settings.maxSeqLen)
    throw InputError("--prompt-len + --gen = " + std::to_string(o.promptLen + o.gen) +
                     " exceeds the compiled context " + std::to_string(r.plan.settings.maxSeqLen));
  checkBatch(o, r);
  if (o.speculate.on())
    return runSpeculateBench({o.promptLen, o.gen, o.threads, o.json, o.speculate}, r, verbose);
  if (r.plan.settings.target == Target::cuda) return runBenchCuda(o, r, verbose);
  return runBenchCpu(o, r);
}

} // namespace

void addBenchCommand(CLI::App &app, const GlobalOptions &global, Action &action) {
  auto *cmd = app.add_subcommand(
      "bench", "Measure prefill and decode throughput; with --requests, serving under load");
  auto o = std::make_shared<BenchOptions>();
  o->model.addRunnable(cmd);
  cmd->add_option("--prompt-len", o->promptLen, "Prompt tokens")->capture_default_str();
  cmd->add_option("--gen", o->gen, "Tokens to decode")->capture_default_str();
  cmd->add_option("--batch", o->batch,
                  "Sequences decoded together, at most the artifact's max_batch (decode_tok_s "
                  "counts all of them)")
      ->capture_default_str();
  cmd->add_option("--threads", o->threads,
                  "CPU: threads, at most the machine's hardware threads (default: all of them)");
  cmd->add_flag("--json", o->json,
                "Print one JSON object: prefill_tok_s, decode_tok_s, weights_bytes, ...");
  cmd->add_flag("--no-graphs", o->noGraphs,
                "CUDA: measure eager launches first (both modes are measured)");
  o->speculate.add(cmd);
  CLI::Option *requests = addLoadBenchFlags(cmd, o->load);
  o->model.addRunnableWeights(cmd);
  cmd->callback([&action, &global, o, cmd, requests] {
    if (requests->count() == 0) {
      action = [&global, o, cmd] {
        checkNoLoadFlags(cmd);
        return runBench(*o, global.verbose);
      };
      return;
    }
    action = [&global, o, cmd] {
      if (cmd->get_option("--batch")->count())
        throw InputError("--batch is the plain benchmark's; with --requests, --concurrency says "
                         "how many sequences run at once");
      if (o->speculate.on())
        throw InputError("--speculate measures one sequence; it does not combine with --requests");
      LoadBenchOptions l = o->load;
      l.model = o->model;
      l.promptLen = o->promptLen;
      l.gen = o->gen;
      l.threads = o->threads;
      l.json = o->json;
      l.noGraphs = o->noGraphs;
      return runLoadBench(l, global.verbose);
    };
  });
}

} // namespace kvplan::cli
