// Sampling from logits cut by vocabulary between tensor-parallel ranks
// (--partition-tensor-parallel splits the LM head): each rank holds the
// logits of its slice of the vocabulary, and only each rank's best
// candidates cross between ranks, never a whole row. Every rank calls it
// with the same RowSampling (rank 0 draws it and sends it) and returns the
// same token.
#pragma once

#include "runtime/Collective.h"
#include "runtime/Sampler.h"

#include <cstdint>
#include <utility>
#include <vector>

namespace kvplan {

class ShardedSampler {
public:
  explicit ShardedSampler(Collective &comm) : comm(comm) {}

  /// The next token of one row; `local` is this rank's `width` logits,
  /// tokens [rank * width, (rank + 1) * width).
  ///  - greedy: each rank's best (logit, id); the best of those.
  ///  - top-k: each rank's k best; the Sampler's rule on their union (the
  ///    same token the Sampler draws from the whole row with that draw).
  ///  - top-p: each rank's best until its share of the whole row's mass
  ///    (the ranks' maxima and sums are gathered first) reaches p, which
  ///    holds its part of the nucleus; the Sampler's rule on their union.
  ///  - min-p: each rank's tokens min-p keeps (the ranks' maxima gathered
  ///    first), at most k of them with top-k; the Sampler's rule on their
  ///    union, which holds every token min-p keeps (top-p then applies to
  ///    their mass).
  ///  - temperature alone: the draw picks a rank by its share of the mass,
  ///    then, rescaled, a token of that rank's slice by its probability;
  ///    that rank sends it. The same distribution as the Sampler's, though
  ///    not the same token for the same draw.
  int32_t sample(const RowSampling &row, const float *local, int64_t width);

private:
  int32_t sampleMinP(const RowSampling &row, const float *local, int64_t width);
  int32_t sampleTemperature(const RowSampling &row, const float *local, int64_t width,
                            const std::vector<std::pair<double, double>> &mass);
  /// Gathers every rank's first `each` candidates of `mine` into `all`.
  void gather(size_t each);
  Collective &comm;
  std::vector<std::pair<float, int32_t>> mine, all;
};

/// The whole rows of logits cut by vocabulary: `local` is this rank's
/// [rows, width]; `full` gets [rows, ranks * width] on every rank.
void gatherLogitRows(Collective &comm, const float *local, int64_t rows, int64_t width,
                     std::vector<float> &full);

} // namespace kvplan
