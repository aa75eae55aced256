// l2Prefetch (codegen/cuda/Kernels.cuh) in the emulator: how a kernel's grid
// deals out the weight ranges the plan has it ask L2 for.
#include "tests/fakegpu/EmuKernels.h"
#include "tests/fakegpu/FakeCuda.h"

#include <algorithm>
#include <array>
#include <tuple>

namespace kvplan::testing {
namespace {

class PrefetchKernel : public EmuKernels {};

// Whatever the grid (one warp, a 3-dimensional grid, both fewer threads
// than pieces; more threads than pieces), every byte of every range is asked for once, in pieces of at most
// 4 KiB at multiples of 16 from the range's start; no range, no request.
TEST_F(PrefetchKernel, EveryByteOfEveryRangeIsAskedForOnce) {
  compile({{"asks", "kvplan::l2Prefetch(a)"}});
  using Take = const FakeCudaPrefetch *(*)(size_t *);
  auto take = reinterpret_cast<Take>(::dlsym(library, "kvemu_prefetched"));
  ASSERT_NE(take, nullptr);
  std::vector<char> weights(size_t(4) << 20);
  // [offset, bytes]: a MiB and 48 bytes, one 16-byte piece, five pieces and
  // a bit; the fourth slot empty.
  const std::array<std::pair<int64_t, int64_t>, 3> ranges = {
      {{0, (1 << 20) + 48}, {3 << 19, 16}, {2 << 20, 5 * 4096 + 32}}};
  KernelLaunch::Args a{};
  for (size_t r = 0; r < ranges.size(); ++r) {
    a.pf[r] = weights.data() + ranges[r].first;
    a.pfBytes[r] = ranges[r].second;
  }
  for (auto [gx, gy, gz, threads] : {std::tuple{1, 1, 1, 32}, {2, 1, 2, 32}, {700, 1, 1, 128}}) {
    SCOPED_TRACE(std::to_string(gx) + "x" + std::to_string(gy) + "x" + std::to_string(gz) +
                 " blocks of " + std::to_string(threads));
    launch("asks", a, gx, gy, threads, gz);
    size_t n = 0;
    const FakeCudaPrefetch *asked = take(&n);
    std::vector<std::pair<int64_t, int64_t>> pieces;
    for (size_t i = 0; i < n; ++i) {
      const int64_t at = static_cast<const char *>(asked[i].start) - weights.data();
      ASSERT_TRUE(at >= 0 && at + asked[i].bytes <= int64_t(weights.size()));
      EXPECT_TRUE(asked[i].bytes > 0 && asked[i].bytes <= 4096 && asked[i].bytes % 16 == 0)
          << asked[i].bytes;
      pieces.push_back({at, asked[i].bytes});
    }
    std::sort(pieces.begin(), pieces.end());
    size_t i = 0;
    for (auto [from, bytes] : ranges)
      for (int64_t at = from; at < from + bytes; at += pieces[i++].second)
        ASSERT_TRUE(i < pieces.size() && pieces[i].first == at &&
                    at + pieces[i].second <= from + bytes)
            << "byte " << at;
    EXPECT_EQ(i, pieces.size()) << "asked for bytes of no range";
  }
  KernelLaunch::Args none{};
  launch("asks", none, 4, 1, 64);
  size_t n = 1;
  take(&n);
  EXPECT_EQ(n, 0u);
}

} // namespace
} // namespace kvplan::testing
