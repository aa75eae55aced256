// RoPE inverse frequencies: part of the rope op's meaning, so the CPU
// runtime and the CUDA codegen compute them the same way.
#pragma once

#include <cstdint>
#include <vector>

namespace kvplan {

/// The inverse frequencies of one RoPE op (head_dim / 2 of them), with
/// Llama 3 scaling when `llama3` (factor, low, high, original context).
std::vector<double> ropeFrequencies(int64_t headDim, double theta, bool llama3, double factor,
                                    double lowFreqFactor, double highFreqFactor,
                                    double originalMaxPositions);

} // namespace kvplan
