// Static buffer planning: give every buffer an offset in one arena so that
// buffers alive at the same time never overlap. Pure C++ (no MLIR), so the
// algorithm is unit-tested on random lifetimes; --plan-buffers feeds it the
// liveness of an entry point.
#pragma once

#include <cstdint>
#include <vector>

namespace kvplan {

/// A buffer of `size` bytes, alive from step `start` to step `end`
/// (inclusive).
struct BufferRequest {
  int64_t size = 0;
  int64_t start = 0;
  int64_t end = 0;
};

struct BufferAssignment {
  std::vector<int64_t> offsets; // one per request, multiples of the alignment
  int64_t arenaSize = 0;        // a multiple of the alignment
};

/// Greedy by size: the largest buffers are placed first, each at the
/// smallest gap among the buffers it overlaps in time that fits it (else on
/// top of them). Deterministic. Sizes are rounded up to `alignment`.
BufferAssignment planBuffers(const std::vector<BufferRequest> &requests,
                             int64_t alignment = 256);

/// The most bytes (sizes rounded to `alignment`) alive at any one step: a
/// lower bound for any arena.
int64_t peakLiveBytes(const std::vector<BufferRequest> &requests, int64_t alignment = 256);

} // namespace kvplan
