// The static buffer planner on random lifetimes: buffers alive at the same
// time never overlap, the arena is at least the peak and at most the sum.
#include "passes/BufferPlanner.h"
#include "support/Align.h"

#include <gtest/gtest.h>

#include <random>

using namespace kvplan;

namespace {


/// Checks every property a plan must have; returns the number of checks
/// that failed (reported through gtest).
void expectValid(const std::vector<BufferRequest> &reqs, const BufferAssignment &plan,
                 int64_t align) {
  ASSERT_EQ(plan.offsets.size(), reqs.size());
  int64_t sum = 0;
  for (size_t i = 0; i < reqs.size(); ++i) {
    int64_t size = alignUp(reqs[i].size, align);
    sum += size;
    EXPECT_EQ(plan.offsets[i] % align, 0) << "buffer " << i;
    EXPECT_GE(plan.offsets[i], 0);
    EXPECT_LE(plan.offsets[i] + size, plan.arenaSize) << "buffer " << i;
    for (size_t j = 0; j < i; ++j) {
      int64_t sizeJ = alignUp(reqs[j].size, align);
      if (size == 0 || sizeJ == 0) continue;
      bool liveTogether = reqs[i].start <= reqs[j].end && reqs[j].start <= reqs[i].end;
      bool overlap = plan.offsets[i] < plan.offsets[j] + sizeJ &&
                     plan.offsets[j] < plan.offsets[i] + size;
      EXPECT_FALSE(liveTogether && overlap) << "buffers " << i << " and " << j << " overlap";
    }
  }
  EXPECT_GE(plan.arenaSize, peakLiveBytes(reqs, align));
  EXPECT_LE(plan.arenaSize, sum);
  EXPECT_EQ(plan.arenaSize % align, 0);
}

} // namespace

TEST(BufferPlanner, RandomLifetimes) {
  for (uint32_t seed = 0; seed < 300; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937 rng(seed);
    int n = std::uniform_int_distribution<int>(1, 120)(rng);
    int steps = std::uniform_int_distribution<int>(1, 60)(rng);
    // A few size classes, as a model has, plus odd sizes and empty buffers.
    std::vector<int64_t> classes = {0, 1, 100, 256, 4096, 65536, 12345};
    std::vector<BufferRequest> reqs;
    for (int i = 0; i < n; ++i) {
      BufferRequest r;
      r.size = rng() % 3 ? classes[rng() % classes.size()] : int64_t(rng() % 200000);
      r.start = std::uniform_int_distribution<int>(0, steps - 1)(rng);
      r.end = r.start + std::uniform_int_distribution<int>(0, steps / 3 + 1)(rng);
      reqs.push_back(r);
    }
    int64_t align = seed % 2 ? 256 : 64;
    BufferAssignment plan = planBuffers(reqs, align);
    expectValid(reqs, plan, align);
    if (HasFailure()) return;
  }
}

TEST(BufferPlanner, Deterministic) {
  std::mt19937 rng(7);
  std::vector<BufferRequest> reqs;
  for (int i = 0; i < 50; ++i)
    reqs.push_back({int64_t(rng() % 5000), int64_t(i / 3), int64_t(i / 3 + rng() % 5)});
  BufferAssignment a = planBuffers(reqs), b = planBuffers(reqs);
  EXPECT_EQ(a.offsets, b.offsets);
  EXPECT_EQ(a.arenaSize, b.arenaSize);
}

TEST(BufferPlanner, DisjointLifetimesShareMemory) {
  std::vector<BufferRequest> reqs = {{1000, 0, 1}, {1000, 2, 3}, {1000, 4, 5}};
  BufferAssignment plan = planBuffers(reqs);
  EXPECT_EQ(plan.arenaSize, 1024);
  EXPECT_EQ(plan.offsets, (std::vector<int64_t>{0, 0, 0}));
}

TEST(BufferPlanner, ChainOfOpsUsesTwoSlots) {
  // x0 -> x1 -> x2 -> ...: each op reads the previous result while writing
  // the next, so two slots suffice however long the chain.
  std::vector<BufferRequest> reqs;
  for (int i = 0; i < 40; ++i)
    reqs.push_back({4096, i, i + 1});
  BufferAssignment plan = planBuffers(reqs);
  expectValid(reqs, plan, 256);
  EXPECT_EQ(plan.arenaSize, 2 * 4096);
}

TEST(BufferPlanner, ArenaDoesNotGrowWithLayers) {
  // One decoder layer's buffers, repeated: the residual stream crosses layer
  // boundaries, everything else lives inside a layer.
  auto layers = [](int n) {
    std::vector<BufferRequest> reqs;
    const int perLayer = 10;
    for (int l = 0; l < n; ++l) {
      int t = l * perLayer;
      reqs.push_back({4096, t, t + 1});            // norm
      reqs.push_back({8192, t + 1, t + 3});        // qkv
      reqs.push_back({4096, t + 3, t + 4});        // attention
      reqs.push_back({4096, t + 4, t + 5});        // o-proj
      reqs.push_back({4096, t + 5, t + 10});       // residual (into the next layer)
      reqs.push_back({4096, t + 5, t + 6});        // ffn norm
      reqs.push_back({22016, t + 6, t + 7});       // gate|up
      reqs.push_back({11008, t + 7, t + 8});       // silu*mul
      reqs.push_back({4096, t + 8, t + 9});        // down
    }
    return reqs;
  };
  BufferAssignment two = planBuffers(layers(2)), many = planBuffers(layers(32));
  expectValid(layers(32), many, 256);
  EXPECT_EQ(two.arenaSize, many.arenaSize);
}

TEST(BufferPlanner, EmptyAndInvalid) {
  EXPECT_EQ(planBuffers({}).arenaSize, 0);
  EXPECT_THROW(planBuffers({{16, 3, 2}}), std::invalid_argument);
  EXPECT_THROW(planBuffers({{-1, 0, 0}}), std::invalid_argument);
  EXPECT_THROW(planBuffers({{16, 0, 0}}, 0), std::invalid_argument);
}
