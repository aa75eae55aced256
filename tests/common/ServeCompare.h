// What the scheduler tests on a device share: a load served with the first
// request alone (it fills the prefix cache) and the rest at once, and each
// request run alone on an engine of its own, the log-probabilities its
// tokens should carry, and its greedy tokens under sampling penalties.
#pragma once

#include "runtime/Engine.h"
#include "runtime/Scheduler.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace kvplan::testing {

/// The tokens each request generated; maxNew[i] for request i.
inline std::vector<std::vector<int32_t>> serveAfterFirst(
    Scheduler &s, const std::vector<std::vector<int32_t>> &prompts,
    const std::vector<int64_t> &maxNew) {
  std::vector<std::vector<int32_t>> got(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    GenerationRequest r;
    r.prompt = prompts[i];
    r.maxNewTokens = maxNew[i];
    r.onEvent = [&got, i](const TokenEvent &e) {
      if (e.token >= 0) got[i].push_back(e.token);
    };
    s.submit(std::move(r));
    if (i == 0) s.runUntilIdle();
  }
  s.runUntilIdle();
  return got;
}

/// `n` tokens after the prompt (greedy by default), one sequence alone on
/// the engine, without the scheduler.
inline std::vector<int32_t> runAlone(Engine &e, const std::vector<int32_t> &prompt, size_t n,
                                     const SamplingOptions &sampling = {}) {
  e.setSampling(sampling);
  const int seq = e.open();
  std::vector<int32_t> out{e.prefillNext(seq, prompt.data(), int64_t(prompt.size()))};
  while (out.size() < n) out.push_back(e.decodeNext({seq}, {out.back()})[0]);
  e.close(seq);
  return out;
}

/// The log-softmax of a row of logits at `id`, in long double: the tests'
/// reference for tokenLogprobs (runtime/Sampler.h).
inline double referenceLogprob(const float *row, int64_t vocab, int32_t id) {
  long double best = -INFINITY, sum = 0;
  for (int64_t v = 0; v < vocab; ++v) best = std::max<long double>(best, row[v]);
  for (int64_t v = 0; v < vocab; ++v) sum += std::exp((long double)row[v] - best);
  return double((long double)row[id] - best - std::log(sum));
}

/// Each of `tokens`' log-probability after the prompt and the tokens
/// before it, the request run alone on `e` (prefill, then decode).
inline std::vector<double> logprobsAlone(Engine &e, const std::vector<int32_t> &prompt,
                                         const std::vector<int32_t> &tokens) {
  const int seq = e.open();
  const float *row = e.prefill(seq, prompt.data(), int64_t(prompt.size()));
  std::vector<double> out;
  for (size_t i = 0; i < tokens.size(); ++i) {
    out.push_back(referenceLogprob(row, e.vocabSize(), tokens[i]));
    if (i + 1 < tokens.size()) row = e.decode({seq}, {tokens[i]});
  }
  e.close(seq);
  return out;
}

/// Greedy tokens with sampling penalties, the request run alone on `e`:
/// its logits penalised here (vLLM's rule written out again: the
/// repetition penalty on the prompt's and the generated tokens, then
/// frequency and presence on the generated ones) and argmaxed.
inline std::vector<int32_t> penalisedAlone(Engine &e, const std::vector<int32_t> &prompt,
                                           int64_t n, const SamplingOptions &o) {
  const int seq = e.open();
  const float *row = e.prefill(seq, prompt.data(), int64_t(prompt.size()));
  std::vector<int32_t> out;
  while (int64_t(out.size()) < n) {
    std::vector<double> l(row, row + e.vocabSize());
    for (size_t t = 0; t < l.size(); ++t) {
      const int32_t id = int32_t(t);
      const auto count = std::count(out.begin(), out.end(), id);
      if (count || std::count(prompt.begin(), prompt.end(), id))
        l[t] = l[t] > 0 ? l[t] / o.repetitionPenalty : l[t] * o.repetitionPenalty;
      if (count) l[t] -= o.frequencyPenalty * double(count) + o.presencePenalty;
    }
    out.push_back(int32_t(std::max_element(l.begin(), l.end()) - l.begin()));
    if (int64_t(out.size()) < n) row = e.decode({seq}, {out.back()});
  }
  e.close(seq);
  return out;
}

} // namespace kvplan::testing
