// What the scheduler tests on a device share: a load served with the first
// request alone (it fills the prefix cache) and the rest at once, and each
// request run alone on an engine of its own.
#pragma once

#include "runtime/Engine.h"
#include "runtime/Scheduler.h"

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

} // namespace kvplan::testing
