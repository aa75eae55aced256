// Greedy-by-size static buffer planning.
#include "passes/BufferPlanner.h"
#include "support/Align.h"

#include <algorithm>
#include <limits>
#include <map>
#include <numeric>
#include <stdexcept>

namespace kvplan {


BufferAssignment planBuffers(const std::vector<BufferRequest> &requests, int64_t alignment) {
  if (alignment <= 0)
    throw std::invalid_argument("alignment must be positive");
  const size_t n = requests.size();
  std::vector<int64_t> size(n);
  for (size_t i = 0; i < n; ++i) {
    if (requests[i].size < 0 || requests[i].end < requests[i].start)
      throw std::invalid_argument("buffer request with negative size or empty lifetime");
    size[i] = alignUp(requests[i].size, alignment);
  }

  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (size[a] != size[b]) return size[a] > size[b];
    return requests[a].start < requests[b].start;
  });

  BufferAssignment out;
  out.offsets.assign(n, -1);
  std::vector<size_t> placed;
  std::vector<size_t> overlapping;
  for (size_t i : order) {
    if (size[i] == 0) {
      out.offsets[i] = 0;
      continue;
    }
    overlapping.clear();
    for (size_t j : placed)
      if (requests[j].start <= requests[i].end && requests[i].start <= requests[j].end)
        overlapping.push_back(j);
    std::sort(overlapping.begin(), overlapping.end(), [&](size_t a, size_t b) {
      return out.offsets[a] != out.offsets[b] ? out.offsets[a] < out.offsets[b] : a < b;
    });
    int64_t best = -1, bestGap = std::numeric_limits<int64_t>::max();
    int64_t top = 0; // end of the highest buffer seen so far
    for (size_t j : overlapping) {
      int64_t gap = out.offsets[j] - top;
      if (gap >= size[i] && gap < bestGap) {
        best = top;
        bestGap = gap;
      }
      top = std::max(top, out.offsets[j] + size[j]);
    }
    out.offsets[i] = best >= 0 ? best : top;
    out.arenaSize = std::max(out.arenaSize, out.offsets[i] + size[i]);
    placed.push_back(i);
  }
  return out;
}

int64_t peakLiveBytes(const std::vector<BufferRequest> &requests, int64_t alignment) {
  // Sweep over lifetime boundaries: +size at start, -size after end.
  std::map<int64_t, int64_t> delta;
  for (const BufferRequest &r : requests) {
    int64_t s = alignUp(r.size, alignment);
    delta[r.start] += s;
    delta[r.end + 1] -= s;
  }
  int64_t live = 0, peak = 0;
  for (const auto &[t, d] : delta) {
    live += d;
    peak = std::max(peak, live);
  }
  return peak;
}

} // namespace kvplan
