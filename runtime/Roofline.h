// The machine's limits, measured in the same process and with the same
// threads as the model: read bandwidth (decode's floor) and peak FMA rate
// (prefill's).
#pragma once

#include "runtime/cpu/ThreadPool.h"

#include <cstdint>

namespace kvplan {

/// Read bandwidth in GB/s, measured as STREAM does but read-only: a
/// streaming sum with vector loads over `bytes` (by default 1 GiB, far more
/// than any last-level cache), each of the pool's threads reading its own
/// contiguous share; the fastest of ten passes after an untimed one.
/// A model whose weights are not many times the last-level cache can decode
/// above this figure: part of the weights is still cached from the last token.
double measureReadBandwidth(ThreadPool &pool, uint64_t bytes = uint64_t(1) << 30);

/// GFLOP/s of independent f32 FMAs on every thread of the pool, with the
/// widest vectors the kernels use; the best of several runs.
double measurePeakGflops(ThreadPool &pool);

} // namespace kvplan
