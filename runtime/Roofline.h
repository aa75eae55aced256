// The machine's limits, measured in the same process and with the same
// threads as the model: read bandwidth (decode's floor) and peak FMA rate
// (prefill's).
#pragma once

#include "runtime/cpu/ThreadPool.h"

#include <cstdint>

namespace kvplan {

/// GB/s of a streaming sum over a buffer far larger than the caches
/// (`bytes`), split across the pool; the best of several passes.
double measureReadBandwidth(ThreadPool &pool, uint64_t bytes = uint64_t(1) << 30);

/// GFLOP/s of independent f32 FMAs on every thread of the pool, with the
/// widest vectors the kernels use; the best of several runs.
double measurePeakGflops(ThreadPool &pool);

} // namespace kvplan
