// A mixture of experts' FFN on the CPU (the moe_ffn op): route each row to
// its top experts, run each expert once over all the rows routed to it, and
// sum the outputs weighted by the router's probabilities.
#pragma once

#include "plan/Plan.h"
#include "runtime/cpu/Kernels.h"
#include "runtime/cpu/ThreadPool.h"

namespace kvplan::cpu {

struct MoEWeights {
  TensorRef router;         // [experts, in]
  TensorRef gate, up, down; // [experts, ff, in], [experts, ff, in], [experts, in, ff]
  int64_t experts = 0, expertsPerToken = 0, in = 0, ff = 0;
  bool normTopK = false;
  bool gelu = false; // GELU (tanh) gates rather than SiLU
  TensorRef sharedGate; // [1, in], where the shared expert is gated (else no data)
  // gpt-oss's: the router's bias [experts] and the experts' products'
  // [experts, ff], [experts, ff], [experts, in] (no data: none), and its
  // clamped SwiGLU (swigluLimit > 0) in place of SiLU's.
  TensorRef routerBias, gateBias, upBias, downBias;
  float swigluLimit = 0, swigluAlpha = 0;
};

/// Row `e` of a stack of float vectors `n` wide (an expert's bias).
TensorRef expertRow(TensorRef stack, int64_t e, int64_t n);

/// Expert `e`'s matrix of a stack of [out, in] matrices (its codes, and for
/// int8 and int4 its scales and minimums).
TensorRef expertMatrix(TensorRef stack, int64_t e, int64_t out, int64_t in);

/// The experts_per_token largest of `probs[0, experts)` (the lower index
/// first among equals), in decreasing order, with their weights: the
/// probabilities, divided by their sum where `normTopK`.
void chooseExperts(const float *probs, int64_t experts, int64_t k, bool normTopK,
                   int32_t *chosen, float *weights);

/// out[r] = the mixture's output for rows [0, rows) of x ([rows, in]), plus
/// row r of `shared` (a shared expert's output, where not null) times
/// sigmoid(x[r] . sharedGate) where that is given. `scratch` holds
/// moeScratch(rows, experts, k, in, ff, gated).bytes bytes.
void moeFFN(ThreadPool &pool, const float *x, int64_t rows, const MoEWeights &w,
            const float *shared, char *scratch, float *out);

} // namespace kvplan::cpu
