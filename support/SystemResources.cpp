// /proc/meminfo, the memory cgroup and statvfs.
#include "support/SystemResources.h"
#include "support/Error.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include <sys/statvfs.h>

namespace kvplan {

namespace {

namespace fs = std::filesystem;

/// The variable's value in bytes, or empty when it is unset.
std::optional<uint64_t> assumedBytes(const char *variable) {
  const char *text = std::getenv(variable);
  if (!text) return std::nullopt;
  const std::string s(text);
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size())
    throw InputError(std::string(variable) + "=" + s +
                     ": expected a number of bytes (a non-negative integer), or unset it");
  return v;
}

/// The first number in a file (a cgroup's "max" reads as empty).
std::optional<uint64_t> readNumber(const fs::path &p) {
  std::ifstream in(p);
  std::string word;
  if (!(in >> word)) return std::nullopt;
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(word.data(), word.data() + word.size(), v);
  if (ec != std::errc() || end != word.data() + word.size()) return std::nullopt;
  return v;
}

/// A "key value" line of a stat file (memory.stat), or empty.
std::optional<uint64_t> readStat(const fs::path &p, const std::string &key) {
  std::ifstream in(p);
  std::string k;
  uint64_t v = 0;
  while (in >> k >> v)
    if (k == key) return v;
  return std::nullopt;
}

/// MemAvailable in /proc/meminfo, in bytes.
std::optional<uint64_t> memAvailable() {
  std::ifstream in("/proc/meminfo");
  std::string line;
  while (std::getline(in, line)) {
    unsigned long long kib = 0;
    if (std::sscanf(line.c_str(), "MemAvailable: %llu kB", &kib) == 1)
      return uint64_t(kib) * 1024;
  }
  return std::nullopt;
}

/// The folders that may hold this process's memory cgroup: its own path
/// under the mount and each parent (limits of ancestors apply too), then
/// the mount itself (inside a container the path is the host's and the
/// mount is the container's own cgroup).
std::vector<fs::path> cgroupFolders(const fs::path &mount, const std::string &controller,
                                    const std::string &selfCgroup) {
  std::vector<fs::path> out;
  std::istringstream in(selfCgroup);
  std::string line;
  while (std::getline(in, line)) {
    const size_t a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    const std::string controllers = line.substr(a + 1, b - a - 1);
    if (controllers != controller && ("," + controllers + ",").find("," + controller + ",") ==
                                         std::string::npos)
      continue;
    for (fs::path p = line.substr(b + 1); !p.empty() && p != "/"; p = p.parent_path())
      out.push_back(mount / p.relative_path());
  }
  out.push_back(mount);
  return out;
}

} // namespace

std::optional<uint64_t> cgroupMemoryAvailable(const std::string &root,
                                              const std::string &selfCgroup) {
  struct Files {
    fs::path mount;
    std::string controller, limit, usage, inactive;
  };
  const Files kinds[] = {
      {"sys/fs/cgroup", "", "memory.max", "memory.current", "inactive_file"},
      {"sys/fs/cgroup/memory", "memory", "memory.limit_in_bytes", "memory.usage_in_bytes",
       "total_inactive_file"},
  };
  std::optional<uint64_t> best;
  for (const Files &k : kinds) {
    const fs::path mount = fs::path(root) / k.mount;
    for (const fs::path &dir : cgroupFolders(mount, k.controller, selfCgroup)) {
      std::optional<uint64_t> limit = readNumber(dir / k.limit);
      std::optional<uint64_t> usage = readNumber(dir / k.usage);
      // v1 writes "no limit" as a number near 2^63.
      if (!limit || !usage || *limit >= (uint64_t(1) << 62)) continue;
      const uint64_t inactive = readStat(dir / "memory.stat", k.inactive).value_or(0);
      const uint64_t used = *usage - std::min(*usage, inactive);
      const uint64_t left = *limit - std::min(*limit, used);
      best = best ? std::min(*best, left) : left;
    }
  }
  return best;
}

std::optional<ResourceFigure> availableMemory() {
  if (std::optional<uint64_t> v = assumedBytes("KVPLAN_ASSUME_AVAILABLE_MEMORY"))
    return ResourceFigure{*v, "KVPLAN_ASSUME_AVAILABLE_MEMORY"};
  std::ifstream self("/proc/self/cgroup");
  std::stringstream selfCgroup;
  selfCgroup << self.rdbuf();
  std::optional<uint64_t> mem = memAvailable(),
                          group = cgroupMemoryAvailable("/", selfCgroup.str());
  if (group && (!mem || *group < *mem))
    return ResourceFigure{*group, "the memory cgroup's limit less its usage"};
  if (mem) return ResourceFigure{*mem, "MemAvailable in /proc/meminfo"};
  return std::nullopt;
}

std::optional<ResourceFigure> freeDisk(const std::string &folder) {
  if (std::optional<uint64_t> v = assumedBytes("KVPLAN_ASSUME_FREE_DISK"))
    return ResourceFigure{*v, "KVPLAN_ASSUME_FREE_DISK"};
  struct statvfs st{};
  if (::statvfs(folder.empty() ? "." : folder.c_str(), &st) != 0) return std::nullopt;
  return ResourceFigure{uint64_t(st.f_bavail) * uint64_t(st.f_frsize), "statvfs"};
}

void requireMemory(uint64_t needed, const std::string &doing, const std::string &fix) {
  std::optional<ResourceFigure> have = availableMemory();
  if (!have || needed <= have->bytes) return;
  throw InputError("not enough memory to " + doing + ": it needs " + formatBytes(needed) +
                   " but " + formatBytes(have->bytes) + " is available (" + have->source +
                   "); " + fix);
}

void requireDisk(uint64_t needed, const std::string &path, const std::string &fix) {
  const fs::path folder = fs::path(path).parent_path();
  const std::string shown = folder.empty() ? "." : folder.string();
  std::optional<ResourceFigure> have = freeDisk(shown);
  if (!have || needed <= have->bytes) return;
  throw InputError("not enough disk space to write " + path + ": it needs " +
                   formatBytes(needed) + " but " + formatBytes(have->bytes) + " is free in " +
                   shown + " (" + have->source + "); " + fix);
}

} // namespace kvplan
