// Writing a file so that it is either the old file or the whole new one:
// the bytes go to a temporary with a unique name in the destination's
// folder, which is synced and renamed over the destination. Two writers of
// one path each leave a complete file (the last rename wins); a writer that
// fails, throws or is stopped by SIGINT or SIGTERM removes its temporary, and
// one that was killed outright leaves a temporary that the next writer of
// that path removes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace kvplan {

class AtomicFile {
public:
  /// Creates the temporary DEST.PID.XXXXXX.tmp beside `path` (after
  /// removing stale ones of dead processes). `what` names the file in
  /// errors ("the artifact"). Throws InputError naming `path` as given and
  /// saying what to do.
  AtomicFile(std::string path, std::string what);
  /// Removes the temporary unless commit() succeeded.
  ~AtomicFile();
  AtomicFile(const AtomicFile &) = delete;
  AtomicFile &operator=(const AtomicFile &) = delete;

  /// Appends (buffered); throws InputError when the disk refuses.
  void write(const void *data, size_t size);
  /// Writes at an absolute offset (after flushing what is buffered).
  void writeAt(uint64_t offset, const void *data, size_t size);
  /// Bytes appended so far.
  uint64_t size() const { return written; }
  /// Flushes, syncs the file, renames it over the destination and syncs the
  /// folder. Throws InputError (and removes the temporary) when it cannot.
  void commit();

  const std::string &tempPath() const { return temp; }

  /// The temporaries this naming gives `path`'s writers: `path` + "." + PID
  /// + "." + six characters + ".tmp". Returns whether `name` (a file name,
  /// no folder) is one for `base` (the destination's file name), and its pid.
  static bool isTemporaryName(const std::string &name, const std::string &base, long &pid);
  /// Removes the temporaries for `path` whose process is gone and that the
  /// current user owns; returns how many.
  static int removeStaleTemporaries(const std::string &path);

private:
  [[noreturn]] void fail(const std::string &action, int err);
  void flush();

  std::string path, what, folder, temp;
  int fd = -1;
  int slot = -1; // in the signal handler's table, or -1
  bool committed = false;
  uint64_t written = 0;
  std::vector<char> buffer;
};

} // namespace kvplan
