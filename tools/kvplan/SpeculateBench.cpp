// kvplan bench --speculate.
#include "tools/kvplan/SpeculateBench.h"

#include "runtime/Engine.h"
#include "runtime/Sampler.h"
#include "runtime/cpu/ThreadPool.h"
#include "support/Error.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <random>

namespace kvplan::cli {

namespace {

using Clock = std::chrono::steady_clock;
double seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

/// --prompt-len 1 is the model's BOS alone (so the model tells its own
/// story); longer prompts are BOS and random tokens, the same every run. A
/// model without BOS (SmolLM3) starts from its first random token.
std::vector<int32_t> specPrompt(const Plan &plan, int64_t length) {
  std::mt19937 rng(1234);
  std::vector<int32_t> prompt(static_cast<size_t>(length));
  for (int32_t &t : prompt) t = int32_t(rng() % uint32_t(plan.model.vocabSize));
  if (plan.model.bosTokenId >= 0) prompt[0] = int32_t(plan.model.bosTokenId);
  return prompt;
}

struct Outcome {
  std::vector<int32_t> tokens;
  double seconds = 0;
  SpeculationStats stats;
};

Outcome plainGreedy(Engine &engine, const std::vector<int32_t> &prompt, int64_t gen) {
  Outcome out;
  const auto t0 = Clock::now();
  int seq = engine.open();
  const float *l = engine.prefill(seq, prompt.data(), int64_t(prompt.size()));
  for (int64_t i = 0; i < gen; ++i) {
    out.tokens.push_back(argmax(l, engine.vocabSize()));
    if (i + 1 < gen) l = engine.decode({seq}, {out.tokens.back()});
  }
  engine.close(seq);
  out.seconds = seconds(t0, Clock::now());
  return out;
}

Outcome speculativeGreedy(Engine &engine, Speculation &spec, const std::vector<int32_t> &prompt,
                          int64_t gen) {
  Outcome out;
  SpeculativeRequest req;
  req.prompt = prompt;
  req.maxNew = gen;
  req.k = spec.k;
  const auto t0 = Clock::now();
  out.stats = generateSpeculatively(engine, *spec.proposer, req,
                                    [&](int32_t t) { out.tokens.push_back(t); });
  out.seconds = seconds(t0, Clock::now());
  return out;
}

/// Seconds per decode step and per verify step of k + 1 rows, at the
/// prompt's length, alternating so that both see the same machine.
std::pair<double, double> stepCosts(Engine &engine, const std::vector<int32_t> &prompt, int64_t k,
                                    int reps) {
  int seq = engine.open();
  engine.prefill(seq, prompt.data(), int64_t(prompt.size()));
  const int64_t len = engine.length(seq);
  const std::vector<int32_t> rows(size_t(k + 1), prompt.back());
  double decodeS = 0, verifyS = 0;
  for (int i = 0; i < reps + 2; ++i) {
    auto a = Clock::now();
    engine.decode({seq}, {rows[0]});
    auto b = Clock::now();
    engine.truncate(seq, len);
    auto c = Clock::now();
    engine.verify(seq, rows.data(), k + 1);
    auto d = Clock::now();
    engine.truncate(seq, len);
    if (i < 2) continue; // warm-up
    decodeS += seconds(a, b);
    verifyS += seconds(c, d);
  }
  engine.close(seq);
  return {decodeS / reps, verifyS / reps};
}

void printBench(const SpeculateBenchOptions &o, const Plan &plan, int threads,
                const Speculation &spec, const Outcome &plain, const Outcome &fast,
                std::pair<double, double> steps) {
  const double plainTokS = double(plain.tokens.size()) / plain.seconds;
  const double fastTokS = double(fast.tokens.size()) / fast.seconds;
  const bool same = plain.tokens == fast.tokens;
  const std::string proposer = spec.proposer->name() + (spec.draft ? " " + spec.draft->source : "");
  if (o.json) {
    nlohmann::json j = {{"model", plan.model.name},
                        {"weight_dtype", dtypeName(plan.settings.weightDtype)},
                        {"threads", threads},
                        {"prompt_len", o.promptLen},
                        {"gen", o.gen},
                        {"proposer", proposer},
                        {"k", spec.k},
                        {"verify_steps", fast.stats.verifySteps},
                        {"decode_steps", fast.stats.decodeSteps},
                        {"drafts_proposed", fast.stats.proposed},
                        {"drafts_accepted", fast.stats.accepted},
                        {"tokens_per_verify", fast.stats.tokensPerVerify()},
                        {"decode_step_ms", steps.first * 1e3},
                        {"verify_step_ms", steps.second * 1e3},
                        {"verify_decode_ratio", steps.second / steps.first},
                        {"plain_tok_s", plainTokS},
                        {"speculative_tok_s", fastTokS},
                        {"speedup", fastTokS / plainTokS},
                        {"outputs_identical", same}};
    std::cout << j.dump() << "\n";
    return;
  }
  std::printf("model      %s (weights %s), %d threads, greedy, prompt %lld, %lld new tokens\n",
              plan.model.name.c_str(), plan.settings.weightTypesText().c_str(), threads,
              (long long)o.promptLen, (long long)o.gen);
  std::printf("proposer   %s, up to %lld drafts per verify step\n", proposer.c_str(),
              (long long)spec.k);
  std::printf("accepted   %lld of %lld drafts in %lld verify steps (%lld plain decode steps): "
              "%.2f tokens per verify step\n",
              (long long)fast.stats.accepted, (long long)fast.stats.proposed,
              (long long)fast.stats.verifySteps, (long long)fast.stats.decodeSteps,
              fast.stats.tokensPerVerify());
  std::printf("step cost  decode %.3f ms, verify of %lld rows %.3f ms: %.2fx\n",
              steps.first * 1e3, (long long)spec.k + 1, steps.second * 1e3,
              steps.second / steps.first);
  std::printf("tok/s      plain %.1f, speculative %.1f: %.2fx (prefill included in both)\n",
              plainTokS, fastTokS, fastTokS / plainTokS);
  std::printf("outputs    %s\n", same ? "identical" : "DIFFER");
}

} // namespace

int runSpeculateBench(const SpeculateBenchOptions &o, const Runnable &r, bool verbose) {
  if (r.plan.settings.target != Target::cpu)
    throw InputError(r.source + ": bench --speculate runs on the CPU executor only for now");
  const int threads = o.threads ? o.threads : defaultThreadCount();
  Engine engine(r.plan, r.weights, r.weightsBytes, threads, EngineOptions{false});
  Speculation spec = makeSpeculation(o.speculate, r, engine, SamplingOptions{}, {threads, true},
                                     verbose);
  const std::vector<int32_t> prompt = specPrompt(r.plan, o.promptLen);
  plainGreedy(engine, prompt, std::min<int64_t>(o.gen, 4)); // warm-up
  const Outcome plain = plainGreedy(engine, prompt, o.gen);
  const Outcome fast = speculativeGreedy(engine, spec, prompt, o.gen);
  const auto steps = stepCosts(engine, prompt, spec.k, 50);
  printBench(o, r.plan, engine.threads(), spec, plain, fast, steps);
  return plain.tokens == fast.tokens ? 0 : 1;
}

} // namespace kvplan::cli
