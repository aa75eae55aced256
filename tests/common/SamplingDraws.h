// The device's sampling kernels alone, against the rule they implement
// computed in double precision, for any device with CudaExecutor's test
// interface (the GPU, or the CPU emulator of tests/emu): random rows of
// logits and sampling parameters in, each row's token compared.
#pragma once

#include "plan/CudaProgram.h"
#include "plan/Plan.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace kvplan::testing {

/// The device's draw in double precision: the tokens at least min-p times
/// as likely as the best (vLLM's order), of those the top-k logits (ties
/// with the k-th kept), then the smallest most-probable set whose mass
/// reaches top-p of theirs (ties with its last kept), and the token where
/// uniform times their mass falls, walking them in index order.
inline int32_t referenceDraw(const float *l, int64_t v, const DeviceSamplingParams &p) {
  std::vector<float> sorted(l, l + v);
  std::sort(sorted.begin(), sorted.end(), std::greater<float>());
  auto weight = [&](float x) { return std::exp((double(x) - sorted[0]) / p.temperature); };
  // min-p: weight(x) >= minP, as a logit.
  const double least = p.minP > 0 ? sorted[0] + p.temperature * std::log(double(p.minP))
                                  : -double(INFINITY);
  std::vector<float> minKept;
  for (float x : sorted)
    if (double(x) >= least) minKept.push_back(x);
  const int64_t n = int64_t(minKept.size());
  const float kth = p.topK > 0 && p.topK < n ? minKept[size_t(p.topK - 1)] : minKept.back();
  double total = 0;
  for (float x : minKept)
    if (x >= kth) total += weight(x);
  float threshold = kth;
  if (p.topP < 1) {
    double cum = 0;
    for (float x : minKept) {
      cum += weight(x);
      threshold = x;
      if (cum >= double(p.topP) * total) break;
    }
  }
  double mass = 0;
  for (int64_t i = 0; i < v; ++i)
    if (l[i] >= threshold && double(l[i]) >= least) mass += weight(l[i]);
  const double target = double(p.uniform) * mass;
  double c = 0;
  for (int64_t i = 0; i < v; ++i)
    if (l[i] >= threshold && double(l[i]) >= least && (c += weight(l[i])) > target)
      return int32_t(i);
  return -1;
}

/// The sampling kernels of `entry` alone on device `x`: the logits (rows x
/// vocabulary) and each row's parameters in, the sampled tokens out.
template <class Device>
std::vector<int32_t> drawOnDevice(Device &x, const Plan &plan, const CudaProgram &program,
                                  const std::vector<float> &logits,
                                  const std::vector<DeviceSamplingParams> &params,
                                  const std::string &entry = "decode") {
  const EntryPoint &ep = plan.entryPoints.at(entry);
  const CudaEntry &ce = program.entries.at(entry);
  const int64_t rows = ep.rows;
  x.upload(DeviceBuffer::arena, ep.results[0].offset, logits.data(), int64_t(logits.size()) * 4);
  x.upload(DeviceBuffer::work, ce.samplingParamsOffset, params.data(),
           int64_t(params.size() * sizeof(DeviceSamplingParams)));
  x.fill(DeviceBuffer::work, ce.sampledOffset, 0xff, rows * 4);
  x.runOps(entry, rows, ce.ops.size(), ce.ops.size()); // the sampling kernels alone
  std::vector<int32_t> t(static_cast<size_t>(rows));
  x.download(DeviceBuffer::work, ce.sampledOffset, t.data(), rows * 4);
  return t;
}

/// `trials` calls of `draw` (logits, parameters -> tokens) on random rows
/// of `v` logits: peaked and flat, top-k from 3 past the candidates (32 an
/// argmax slice) to 700, top-p 0.5 to 0.99 or none, min-p from 0.001 (below
/// the candidates on flat rows) to 1 or none, nothing cut; each token must
/// be referenceDraw's. Returns the draws made.
inline int checkRandomDraws(
    const std::function<std::vector<int32_t>(const std::vector<float> &,
                                             const std::vector<DeviceSamplingParams> &)> &draw,
    int64_t v, int64_t rows, int trials, uint32_t seed) {
  std::mt19937 rng(seed);
  const float temperatures[] = {0.3f, 0.7f, 1.0f, 1.6f};
  const int32_t topKs[] = {0, 0, 3, 20, 40, 64, 100, 700};
  const float topPs[] = {1.0f, 1.0f, 0.9f, 0.5f, 0.99f};
  const float spreads[] = {0.5f, 2.0f, 6.0f};
  const float minPs[] = {0.0f, 0.0f, 0.0f, 0.001f, 0.05f, 0.3f, 1.0f};
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  int draws = 0;
  for (int trial = 0; trial < trials; ++trial) {
    std::vector<float> logits(size_t(rows * v));
    std::vector<DeviceSamplingParams> params(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) {
      std::normal_distribution<float> nd(0.0f, spreads[rng() % 3]);
      for (int64_t i = 0; i < v; ++i) logits[size_t(r * v + i)] = nd(rng);
      params[size_t(r)] = {temperatures[rng() % 4], topPs[rng() % 5], topKs[rng() % 8],
                           unit(rng), minPs[rng() % 7]};
    }
    const std::vector<int32_t> got = draw(logits, params);
    for (int64_t r = 0; r < rows; ++r, ++draws) {
      const DeviceSamplingParams &p = params[size_t(r)];
      EXPECT_EQ(got.at(size_t(r)), referenceDraw(logits.data() + r * v, v, p))
          << "trial " << trial << " row " << r << ": temperature " << p.temperature << ", top-k "
          << p.topK << ", top-p " << p.topP << ", min-p " << p.minP << ", uniform "
          << p.uniform;
    }
  }
  return draws;
}

} // namespace kvplan::testing
