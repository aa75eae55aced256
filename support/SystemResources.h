// What the machine has to give: memory a process may still take and free
// disk space in a folder, for checks made before a large allocation or
// write, so that a model too large for the machine is an error that names
// both figures instead of an allocation failure, the OOM killer or a full
// disk halfway through a file.
#pragma once

#include "support/Format.h" // formatBytes, which the messages use

#include <cstdint>
#include <optional>
#include <string>

namespace kvplan {

/// A figure and where it was read, e.g. "MemAvailable in /proc/meminfo".
struct ResourceFigure {
  uint64_t bytes = 0;
  std::string source;
};

/// The memory this process may still take: the smaller of the kernel's
/// estimate (MemAvailable) and what the cgroup's memory.max leaves above
/// memory.current (cgroup v2; v1's memory.limit_in_bytes likewise). The
/// environment variable KVPLAN_ASSUME_AVAILABLE_MEMORY (bytes) replaces it,
/// for tests. Empty when neither can be read. Throws InputError when the
/// variable is not a number.
std::optional<ResourceFigure> availableMemory();

/// What the memory cgroups above this process leave, read under `root`
/// ("/" but in tests) with `selfCgroup` the text of /proc/self/cgroup: for
/// each cgroup with a limit, on its path and each parent's (v2's memory.max
/// under sys/fs/cgroup, v1's memory.limit_in_bytes under
/// sys/fs/cgroup/memory), and the mount's own, the limit less the usage the
/// kernel cannot reclaim (the usage less the inactive file cache); the
/// smallest. Empty when no cgroup has a limit.
std::optional<uint64_t> cgroupMemoryAvailable(const std::string &root,
                                              const std::string &selfCgroup);

/// The space an unprivileged writer may still use in `folder` (statvfs's
/// f_bavail), or KVPLAN_ASSUME_FREE_DISK (bytes). Empty when the folder
/// cannot be examined (the writer then reports its own error).
std::optional<ResourceFigure> freeDisk(const std::string &folder);

/// Throws InputError "not enough memory to DOING: it needs N but M is
/// available (SOURCE); FIX" when `needed` is more than availableMemory().
void requireMemory(uint64_t needed, const std::string &doing, const std::string &fix);

/// Throws InputError "not enough disk space to write PATH: it needs N but
/// M is free in FOLDER (SOURCE); FIX" when `needed` is more than the free
/// space in `path`'s folder.
void requireDisk(uint64_t needed, const std::string &path, const std::string &fix);

} // namespace kvplan
