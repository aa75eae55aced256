// The figures the memory and disk checks compare with: the memory cgroup's
// limits on a fake /sys tree, the overrides, and the errors' wording.
#include "support/Error.h"
#include "support/SystemResources.h"

#include <gtest/gtest.h>

#include <limits>

#include <cstdlib>
#include <filesystem>
#include <fstream>

using namespace kvplan;
namespace fs = std::filesystem;

namespace {

struct FakeRoot {
  fs::path path = fs::temp_directory_path() /
                  ("kvplan-sysres-" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
                   "-" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
  FakeRoot() { fs::remove_all(path); }
  ~FakeRoot() { fs::remove_all(path); }
  void write(const std::string &file, const std::string &text) const {
    fs::create_directories((path / file).parent_path());
    std::ofstream(path / file) << text;
  }
};

/// Sets an environment variable for one scope.
struct Env {
  std::string name;
  Env(std::string n, const char *value) : name(std::move(n)) { ::setenv(name.c_str(), value, 1); }
  ~Env() { ::unsetenv(name.c_str()); }
};

constexpr uint64_t MiB = uint64_t(1) << 20;

} // namespace

TEST(CgroupMemory, V2LimitLessTheUsageThatCannotBeReclaimed) {
  FakeRoot r;
  // The process's own cgroup: 1000 MiB allowed, 700 MiB used of which
  // 200 MiB inactive page cache: 500 MiB left.
  r.write("sys/fs/cgroup/job/task/memory.max", std::to_string(1000 * MiB) + "\n");
  r.write("sys/fs/cgroup/job/task/memory.current", std::to_string(700 * MiB) + "\n");
  r.write("sys/fs/cgroup/job/task/memory.stat",
          "anon 1\nactive_file 7\ninactive_file " + std::to_string(200 * MiB) + "\n");
  EXPECT_EQ(cgroupMemoryAvailable(r.path.string(), "0::/job/task\n"), 500 * MiB);
  // A parent's tighter limit applies too; "max" is no limit.
  r.write("sys/fs/cgroup/job/memory.max", std::to_string(800 * MiB));
  r.write("sys/fs/cgroup/job/memory.current", std::to_string(750 * MiB));
  EXPECT_EQ(cgroupMemoryAvailable(r.path.string(), "0::/job/task\n"), 50 * MiB);
  r.write("sys/fs/cgroup/job/memory.max", "max\n");
  EXPECT_EQ(cgroupMemoryAvailable(r.path.string(), "0::/job/task\n"), 500 * MiB);
  // Usage over the limit leaves nothing, not a wrapped-around number.
  r.write("sys/fs/cgroup/job/task/memory.current", std::to_string(2000 * MiB));
  EXPECT_EQ(cgroupMemoryAvailable(r.path.string(), "0::/job/task\n"), 0u);
}

TEST(CgroupMemory, V1AndContainersMountRoot) {
  FakeRoot r;
  // Inside a container the path in /proc/self/cgroup is the host's, absent
  // here: the mount's own files are the container's cgroup.
  r.write("sys/fs/cgroup/memory/memory.limit_in_bytes", std::to_string(512 * MiB));
  r.write("sys/fs/cgroup/memory/memory.usage_in_bytes", std::to_string(300 * MiB));
  r.write("sys/fs/cgroup/memory/memory.stat",
          "cache 5\ntotal_inactive_file " + std::to_string(100 * MiB) + "\n");
  const std::string self = "12:pids:/docker/abc\n4:cpu,memory:/docker/abc\n0::/\n";
  EXPECT_EQ(cgroupMemoryAvailable(r.path.string(), self), 312 * MiB);
  // v1's "no limit" is a number near 2^63.
  r.write("sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n");
  EXPECT_EQ(cgroupMemoryAvailable(r.path.string(), self), std::nullopt);
  EXPECT_EQ(cgroupMemoryAvailable((r.path / "nothing").string(), self), std::nullopt);
}

TEST(SystemResources, OverridesAndMessages) {
  {
    Env mem("KVPLAN_ASSUME_AVAILABLE_MEMORY", "1048576");
    ASSERT_TRUE(availableMemory());
    EXPECT_EQ(availableMemory()->bytes, MiB);
    EXPECT_EQ(availableMemory()->source, "KVPLAN_ASSUME_AVAILABLE_MEMORY");
    EXPECT_NO_THROW(requireMemory(MiB, "pack", "fix"));
    try {
      requireMemory(3 * MiB / 2, "pack the weights", "free memory");
      ADD_FAILURE() << "no error";
    } catch (const InputError &e) {
      EXPECT_STREQ(e.what(), "not enough memory to pack the weights: it needs 1.50 MiB but 1.00 "
                             "MiB is available (KVPLAN_ASSUME_AVAILABLE_MEMORY); free memory");
    }
  }
  {
    Env disk("KVPLAN_ASSUME_FREE_DISK", "100");
    EXPECT_NO_THROW(requireDisk(100, "out/a.kvp", "fix"));
    try {
      requireDisk(101, "out/a.kvp", "write elsewhere");
      ADD_FAILURE() << "no error";
    } catch (const InputError &e) {
      EXPECT_STREQ(e.what(), "not enough disk space to write out/a.kvp: it needs 101 B but 100 B "
                             "is free in out (KVPLAN_ASSUME_FREE_DISK); write elsewhere");
    }
  }
  Env bad("KVPLAN_ASSUME_FREE_DISK", "12GB");
  EXPECT_THROW(freeDisk("."), InputError);
  // Unset, the machine's own figures: this machine has some memory and disk.
  ::unsetenv("KVPLAN_ASSUME_FREE_DISK");
  EXPECT_GT(freeDisk(fs::temp_directory_path().string()).value_or(ResourceFigure{}).bytes, 0u);
  EXPECT_GT(availableMemory().value_or(ResourceFigure{}).bytes, 0u);
  EXPECT_EQ(formatBytes(0), "0 B");
  EXPECT_EQ(formatBytes(11 * (uint64_t(1) << 40) + (uint64_t(1) << 38)), "11.25 TiB");
}

TEST(Format, ThousandsSeparatorsForEveryInteger) {
  EXPECT_EQ(withCommas(0), "0");
  EXPECT_EQ(withCommas(999), "999");
  EXPECT_EQ(withCommas(1000), "1,000");
  EXPECT_EQ(withCommas(-1234567), "-1,234,567");
  EXPECT_EQ(withCommas(std::numeric_limits<int64_t>::min()), "-9,223,372,036,854,775,808");
}

TEST(Format, ByteSizesAsPeopleWriteThem) {
  EXPECT_EQ(parseByteSize("2147483648"), int64_t(2147483648));
  EXPECT_EQ(parseByteSize("2GiB"), int64_t(2) << 30);
  EXPECT_EQ(parseByteSize(" 1.5 GiB "), int64_t(3) << 29);
  EXPECT_EQ(parseByteSize("800MB"), int64_t(800000000));
  EXPECT_EQ(parseByteSize("24 GB"), int64_t(24000000000));
  EXPECT_EQ(parseByteSize("512KiB"), int64_t(524288));
  EXPECT_EQ(parseByteSize("3kB"), int64_t(3000));
  EXPECT_EQ(parseByteSize("1TiB"), int64_t(1) << 40);
  EXPECT_EQ(parseByteSize("100 B"), int64_t(100));
  EXPECT_EQ(parseByteSize("0.5KiB"), int64_t(512));
  EXPECT_EQ(parseByteSize("0.001KB"), int64_t(1));
  // Past 2^53 a count of bytes is kept exact; past 2^62 refused.
  EXPECT_EQ(parseByteSize("4611686018427387903"), int64_t(4611686018427387903));
  EXPECT_EQ(parseByteSize("4611686018427387905"), std::nullopt);
  EXPECT_EQ(parseByteSize("5000000TiB"), std::nullopt);
  for (const char *bad : {"", "GiB", "0", "0.4", "-1GiB", "+1GiB", "2 gib", "2G", "2 GiBs",
                          "1e9", "1..5GB", "2GiB 3", "0x100", "nan", "inf"})
    EXPECT_EQ(parseByteSize(bad), std::nullopt) << bad;
}

TEST(Format, NumbersJoinedBySeparators) {
  EXPECT_EQ(joinNumbers({}), "");
  EXPECT_EQ(joinNumbers({32}), "32");
  EXPECT_EQ(joinNumbers({1, 8, 32}), "1, 8, 32");
  EXPECT_EQ(joinNumbers({1, 8, 32}, ","), "1,8,32");
}
