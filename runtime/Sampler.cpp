// Greedy, temperature, top-k and top-p sampling.
#include "runtime/Sampler.h"

#include "spec/ModelSpec.h"

#include <algorithm>
#include <climits>
#include <cmath>

namespace kvplan {

int32_t argmax(const float *logits, int64_t vocab) {
  int64_t best = 0;
  for (int64_t i = 1; i < vocab; ++i)
    if (logits[i] > logits[best]) best = i;
  return int32_t(best);
}

Sampler::Sampler(const SamplingOptions &options) : opts(options), rng(options.seed) {
  if (!(opts.temperature >= 0) || !std::isfinite(opts.temperature))
    throw InputError("--temperature must be 0 (greedy) or positive, got " +
                     std::to_string(opts.temperature));
  if (opts.topK < 0)
    throw InputError("--top-k must be 0 (no limit) or positive, got " + std::to_string(opts.topK));
  if (!(opts.topP > 0 && opts.topP <= 1))
    throw InputError("--top-p must be in (0, 1], got " + std::to_string(opts.topP));
}

DeviceSamplingParams Sampler::deviceRow() {
  DeviceSamplingParams p;
  p.temperature = float(opts.temperature);
  p.topP = float(opts.topP);
  p.topK = int32_t(std::min<int64_t>(opts.topK, INT32_MAX));
  const bool greedy = opts.temperature == 0 || opts.topK == 1;
  p.uniform = greedy ? 0.0f : std::uniform_real_distribution<float>(0.0f, 1.0f)(rng);
  return p;
}

int32_t Sampler::sample(const float *logits, int64_t vocab) {
  if (opts.temperature == 0 || opts.topK == 1)
    return argmax(logits, vocab);
  candidates.resize(size_t(vocab));
  for (int64_t i = 0; i < vocab; ++i) candidates[size_t(i)] = {logits[i], int32_t(i)};
  // Highest logit first; equal logits keep index order, so ties resolve as
  // greedy does.
  auto byLogit = [](const auto &a, const auto &b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  };
  size_t keep = candidates.size();
  if (opts.topK > 0 && size_t(opts.topK) < keep) {
    keep = size_t(opts.topK);
    std::partial_sort(candidates.begin(), candidates.begin() + keep, candidates.end(), byLogit);
  } else {
    std::sort(candidates.begin(), candidates.end(), byLogit);
  }
  // Softmax at the temperature over the kept candidates (as probabilities
  // in place of logits).
  const double maxLogit = candidates[0].first;
  double sum = 0;
  for (size_t i = 0; i < keep; ++i) {
    double p = std::exp((double(candidates[i].first) - maxLogit) / opts.temperature);
    candidates[i].first = float(p);
    sum += p;
  }
  // Top-p: the smallest prefix whose probability reaches p.
  if (opts.topP < 1) {
    double cumulative = 0;
    for (size_t i = 0; i < keep; ++i) {
      cumulative += candidates[i].first / sum;
      if (cumulative >= opts.topP) {
        keep = i + 1;
        break;
      }
    }
    sum = 0;
    for (size_t i = 0; i < keep; ++i) sum += candidates[i].first;
  }
  double r = std::uniform_real_distribution<double>(0.0, sum)(rng);
  for (size_t i = 0; i < keep; ++i) {
    r -= candidates[i].first;
    if (r < 0) return candidates[i].second;
  }
  return candidates[keep - 1].second;
}

} // namespace kvplan
