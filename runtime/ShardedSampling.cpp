#include "runtime/ShardedSampling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

namespace kvplan {
namespace {

using Candidate = std::pair<float, int32_t>;
constexpr Candidate kNone{-std::numeric_limits<float>::infinity(), -1};

bool better(const Candidate &a, const Candidate &b) {
  return a.first != b.first ? a.first > b.first : a.second < b.second;
}

} // namespace

void ShardedSampler::gather(size_t each) {
  mine.resize(each, kNone);
  all.resize(each * size_t(comm.size()));
  comm.allGather(mine.data(), all.data(), int64_t(each * sizeof(Candidate)));
  all.erase(std::remove_if(all.begin(), all.end(), [](const Candidate &c) { return c.second < 0; }),
            all.end());
}

int32_t ShardedSampler::sample(const RowSampling &row, const float *local, int64_t width) {
  const int32_t first = int32_t(int64_t(comm.rank()) * width);
  mine.clear();
  if (row.greedy()) {
    const int32_t best = argmax(local, width);
    mine.push_back({local[best], first + best});
    gather(1);
    return pickCandidate(row, all.data(), all.size(), 0);
  }
  if (row.minP > 0) return sampleMinP(row, local, width);
  for (int64_t i = 0; i < width; ++i) mine.push_back({local[i], first + int32_t(i)});
  if (row.topK > 0) {
    const size_t k = size_t(std::min<int64_t>(row.topK, width));
    std::partial_sort(mine.begin(), mine.begin() + ptrdiff_t(k), mine.end(), better);
    gather(k);
    return pickCandidate(row, all.data(), all.size(), 0);
  }
  // Each rank's maximum and its sum of exp((logit - maximum) / T).
  std::pair<double, double> m{*std::max_element(local, local + width), 0.0};
  for (int64_t i = 0; i < width; ++i) m.second += std::exp((local[i] - m.first) / row.temperature);
  std::vector<std::pair<double, double>> mass(static_cast<size_t>(comm.size()));
  comm.allGather(&m, mass.data(), sizeof m);
  if (row.topP >= 1) return sampleTemperature(row, local, width, mass);
  double best = -std::numeric_limits<double>::infinity(), rowMass = 0;
  for (auto [mx, s] : mass) best = std::max(best, mx);
  for (auto [mx, s] : mass) rowMass += s * std::exp((mx - best) / row.temperature);
  // This rank's tokens in order until their share of the row reaches p: a
  // superset of its part of the nucleus.
  std::sort(mine.begin(), mine.end(), better);
  size_t keep = 0;
  for (double share = 0; keep < mine.size() && share < row.topP; ++keep)
    share += std::exp((mine[keep].first - best) / row.temperature) / rowMass;
  int64_t most = int64_t(keep);
  std::vector<int64_t> counts(static_cast<size_t>(comm.size()));
  comm.allGather(&most, counts.data(), sizeof most);
  mine.resize(keep);
  gather(size_t(*std::max_element(counts.begin(), counts.end())));
  return pickCandidate(row, all.data(), all.size(), rowMass);
}

int32_t ShardedSampler::sampleMinP(const RowSampling &row, const float *local, int64_t width) {
  const int32_t first = int32_t(int64_t(comm.rank()) * width);
  double best = *std::max_element(local, local + width);
  std::vector<double> maxima(static_cast<size_t>(comm.size()));
  comm.allGather(&best, maxima.data(), sizeof best);
  best = *std::max_element(maxima.begin(), maxima.end());
  // What min-p keeps of this slice, by the Sampler's own test
  // (keptCandidates), so the union holds exactly the row's survivors.
  for (int64_t i = 0; i < width; ++i)
    if (row.minPKeeps(row.weight(local[i], best))) mine.push_back({local[i], first + int32_t(i)});
  if (row.topK > 0 && mine.size() > size_t(row.topK)) {
    std::partial_sort(mine.begin(), mine.begin() + ptrdiff_t(row.topK), mine.end(), better);
    mine.resize(size_t(row.topK));
  }
  int64_t most = int64_t(mine.size());
  std::vector<int64_t> counts(static_cast<size_t>(comm.size()));
  comm.allGather(&most, counts.data(), sizeof most);
  gather(size_t(*std::max_element(counts.begin(), counts.end())));
  return pickCandidate(row, all.data(), all.size(), 0);
}

int32_t ShardedSampler::sampleTemperature(const RowSampling &row, const float *local,
                                          int64_t width,
                                          const std::vector<std::pair<double, double>> &mass) {
  const double t = row.temperature;
  double best = -std::numeric_limits<double>::infinity(), total = 0;
  for (auto [mx, s] : mass) best = std::max(best, mx);
  std::vector<double> share(mass.size());
  for (size_t r = 0; r < mass.size(); ++r)
    total += share[r] = mass[r].second * std::exp((mass[r].first - best) / t);
  // The draw picks the rank; what is left of it, rescaled to [0, 1), picks
  // the token within the rank's slice (inverse transform sampling, twice).
  double u = row.uniform * total;
  int owner = int(mass.size()) - 1;
  for (size_t r = 0; r < share.size(); ++r) {
    if (u < share[r]) {
      owner = int(r);
      break;
    }
    u -= share[r];
  }
  int32_t token = -1;
  if (owner == comm.rank()) {
    const double v = std::clamp(u / share[size_t(owner)], 0.0, 1.0);
    double left = v * mass[size_t(owner)].second;
    token = int32_t(width - 1);
    for (int64_t i = 0; i < width; ++i)
      if ((left -= std::exp((local[i] - mass[size_t(owner)].first) / t)) < 0) {
        token = int32_t(i);
        break;
      }
    token += int32_t(int64_t(owner) * width);
  }
  comm.broadcast(&token, sizeof token, owner);
  return token;
}

void gatherLogitRows(Collective &comm, const float *local, int64_t rows, int64_t width,
                     std::vector<float> &full) {
  const int ranks = comm.size();
  std::vector<float> parts(size_t(rows * width * ranks));
  comm.allGather(local, parts.data(), rows * width * int64_t(sizeof(float)));
  full.resize(parts.size());
  for (int r = 0; r < ranks; ++r)
    for (int64_t row = 0; row < rows; ++row)
      std::copy_n(parts.data() + (int64_t(r) * rows + row) * width, width,
                  full.data() + row * width * ranks + int64_t(r) * width);
}

} // namespace kvplan
