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
  bool greedy() const { return temperature == 0 || topK == 1; }
};

/// One row's sampling: the options and the uniform draw in [0, 1) that
/// picks its token (0 for greedy).
struct RowSampling {
  double temperature = 0, topP = 1, uniform = 0;
  int64_t topK = 0;
  bool greedy() const { return temperature == 0 || topK == 1; }
};

/// The token `row` draws among `count` (logit, token id) candidates, as the
/// Sampler draws it from a whole row of logits when the candidates hold
/// every token the options can draw: the top-k when top-k is set, else the
/// nucleus (with top-p) or every token. `rowMass` is the whole row's sum of
/// exp((logit - its best logit) / temperature) when the candidates are only
/// part of it and top-p applies, else 0. Reorders `cands`.
int32_t pickCandidate(const RowSampling &row, std::pair<float, int32_t> *cands, size_t count,
                      double rowMass);

/// The probabilities sampling with `o` draws each token of a row of logits
/// from (`out`: vocab of them): softmax at the temperature over the top-k,
/// then the top-p prefix, renormalised, by the same rule sample() draws
/// with; greedy is a point mass on the argmax.
void samplingProbabilities(const float *logits, int64_t vocab, const SamplingOptions &o,
                           std::vector<double> &out);

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
  bool greedy() const { return opts.greedy(); }
  /// This row's options and draw, for sampling done elsewhere (the ranks of
  /// a tensor-parallel plan: runtime/ShardedSampling.h); sample() would
  /// have drawn the same number.
  RowSampling row();

private:
  SamplingOptions opts;
  std::mt19937_64 rng;
  std::vector<std::pair<float, int32_t>> candidates; // reused: no allocation per token
};

/// The index of the largest logit (the lowest index among equals).
int32_t argmax(const float *logits, int64_t vocab);

} // namespace kvplan
