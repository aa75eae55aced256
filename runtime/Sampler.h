// Choosing the next token from logits: greedy, or temperature with top-k and
// top-p, from a seeded generator so a run is reproducible.
#pragma once

#include "plan/CudaProgram.h"

#include <cstdint>
#include <random>
#include <utility>
#include <vector>

namespace kvplan {

struct SamplingOptions {
  double temperature = 0.0; // 0: greedy
  int64_t topK = 0;         // 0: no limit
  double topP = 1.0;        // in (0, 1]
  uint64_t seed = 0;
};

class Sampler {
public:
  /// Throws InputError for a negative temperature, a negative top-k or a
  /// top-p outside (0, 1].
  explicit Sampler(const SamplingOptions &options);
  /// The next token for one row of logits.
  int32_t sample(const float *logits, int64_t vocab);
  /// The same choice made on the device (runtime/cuda): the options and
  /// this step's draw from the same generator.
  DeviceSamplingParams deviceRow();
  const SamplingOptions &options() const { return opts; }

private:
  SamplingOptions opts;
  std::mt19937_64 rng;
  std::vector<std::pair<float, int32_t>> candidates; // reused: no allocation per token
};

/// The index of the largest logit (the lowest index among equals).
int32_t argmax(const float *logits, int64_t vocab);

} // namespace kvplan
