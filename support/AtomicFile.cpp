// Temporary, sync, rename, sync the folder; temporaries of stopped and
// killed writers are removed.
#include "support/AtomicFile.h"
#include "support/Error.h"

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fstream>
#include <mutex>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace kvplan {

namespace {

constexpr size_t kBufferBytes = size_t(1) << 20;

//===----------------------------------------------------------------------===//
// The temporaries in progress, for the signal handler
//===----------------------------------------------------------------------===//

// A handler may only read memory and call async-signal-safe functions, so
// the paths lie in fixed slots: state 0 is free, 1 being filled, 2 in use.
// A writer that finds no free slot still works; a signal then leaves its
// temporary to the next writer's cleanup.
struct Slot {
  std::atomic<int> state{0};
  char path[4096];
};
Slot slots[32];

void onStopSignal(int sig) {
  for (Slot &s : slots)
    if (s.state.load() == 2) ::unlink(s.path);
  ::signal(sig, SIG_DFL);
  ::raise(sig); // delivered when the handler returns: the usual death
}

/// Installs the handler for SIGINT and SIGTERM where their action is still
/// the default (a program with its own handler, like kvplan serve, keeps it).
void installStopHandlers() {
  static std::once_flag once;
  std::call_once(once, [] {
    for (int sig : {SIGINT, SIGTERM}) {
      struct sigaction old = {};
      if (sigaction(sig, nullptr, &old) != 0 || (old.sa_flags & SA_SIGINFO) ||
          old.sa_handler != SIG_DFL)
        continue;
      struct sigaction sa = {};
      sa.sa_handler = onStopSignal;
      sigemptyset(&sa.sa_mask);
      sigaction(sig, &sa, nullptr);
    }
  });
}

int registerTemporary(const std::string &path) {
  if (path.size() >= sizeof(Slot::path)) return -1;
  for (int i = 0; i < int(std::size(slots)); ++i) {
    int expected = 0;
    if (!slots[i].state.compare_exchange_strong(expected, 1)) continue;
    std::memcpy(slots[i].path, path.c_str(), path.size() + 1);
    slots[i].state.store(2);
    return i;
  }
  return -1;
}

void unregisterTemporary(int slot) {
  if (slot >= 0) slots[slot].state.store(0);
}

/// The permissions a plain new file gets (0666 less the umask), read without
/// changing the umask, which other threads may be relying on.
mode_t newFileMode() {
  static const mode_t mode = [] {
    std::ifstream status("/proc/self/status");
    std::string key;
    while (status >> key) {
      if (key == "Umask:") {
        std::string octal;
        status >> octal;
        return mode_t(0666 & ~std::stoul(octal, nullptr, 8));
      }
    }
    return mode_t(0644);
  }();
  return mode;
}

bool writeFully(int fd, const char *data, size_t size, int64_t offset) {
  while (size > 0) {
    ssize_t n = offset < 0 ? ::write(fd, data, size) : ::pwrite(fd, data, size, offset);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (n == 0) {
      errno = ENOSPC;
      return false;
    }
    data += n;
    size -= size_t(n);
    if (offset >= 0) offset += n;
  }
  return true;
}

std::string folderOf(const std::string &path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

std::string baseOf(const std::string &path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

} // namespace

//===----------------------------------------------------------------------===//
// AtomicFile
//===----------------------------------------------------------------------===//

bool AtomicFile::isTemporaryName(const std::string &name, const std::string &base, long &pid) {
  const std::string suffix = ".tmp";
  if (name.size() <= base.size() + 1 + suffix.size() || name.compare(0, base.size(), base) != 0 ||
      name[base.size()] != '.' ||
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
    return false;
  // What is left must be PID.XXXXXX.
  std::string middle =
      name.substr(base.size() + 1, name.size() - base.size() - 1 - suffix.size());
  size_t dot = middle.find('.');
  if (dot == 0 || dot == std::string::npos || dot > 9 || middle.size() != dot + 7) return false;
  for (size_t i = 0; i < middle.size(); ++i) {
    char c = middle[i];
    bool ok = i < dot ? (c >= '0' && c <= '9')
                      : i == dot || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
                            (c >= 'A' && c <= 'Z');
    if (!ok) return false;
  }
  pid = std::stol(middle.substr(0, dot));
  return pid > 0;
}

int AtomicFile::removeStaleTemporaries(const std::string &path) {
  const std::string folder = folderOf(path), base = baseOf(path);
  DIR *dir = ::opendir(folder.c_str());
  if (!dir) return 0;
  int removed = 0;
  while (struct dirent *e = ::readdir(dir)) {
    long pid = 0;
    if (!isTemporaryName(e->d_name, base, pid) || pid == long(::getpid())) continue;
    // Only a process that is gone: ESRCH (EPERM means it lives, as another user's).
    if (::kill(pid_t(pid), 0) == 0 || errno != ESRCH) continue;
    const std::string file = folder + "/" + e->d_name;
    struct stat st;
    if (::lstat(file.c_str(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != ::getuid())
      continue;
    if (::unlink(file.c_str()) == 0) ++removed;
  }
  ::closedir(dir);
  return removed;
}

AtomicFile::AtomicFile(std::string path_, std::string what_)
    : path(std::move(path_)), what(std::move(what_)), folder(folderOf(path)) {
  struct stat st;
  if (path.empty() || path.back() == '/' || (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)))
    throw InputError((path.empty() ? std::string("''") : path) + ": cannot write " + what +
                     " there: it is a folder; give a file name (for example " +
                     (path.empty() || path.back() == '/' ? path : path + "/") + "out.kvp)");
  removeStaleTemporaries(path);
  installStopHandlers();
  std::string name = path + "." + std::to_string(::getpid()) + ".XXXXXX.tmp";
  fd = ::mkostemps(name.data(), 4, O_CLOEXEC);
  if (fd < 0) fail("creating", errno);
  temp = name;
  slot = registerTemporary(temp);
  buffer.reserve(kBufferBytes);
}

AtomicFile::~AtomicFile() {
  if (committed) return;
  if (fd >= 0) ::close(fd);
  if (!temp.empty()) ::unlink(temp.c_str());
  unregisterTemporary(slot);
}

void AtomicFile::fail(const std::string &action, int err) {
  if (fd >= 0) ::close(fd);
  if (!temp.empty()) ::unlink(temp.c_str());
  unregisterTemporary(slot);
  fd = -1;
  temp.clear();
  slot = -1;
  const std::string why = std::strerror(err);
  const std::string in = folder == "." ? "the current folder" : "the folder " + folder;
  std::string msg;
  if (err == ENOSPC || err == EDQUOT || err == EFBIG)
    msg = "writing " + what + " failed: " + why + "; free space on the disk that holds " + in +
          " or write it elsewhere";
  else if (err == EACCES || err == EPERM || err == EROFS)
    msg = "cannot write " + what + ": " + in + " is not writable (" + why +
          "); write it to a folder you can write to, or fix the folder's permissions";
  else if ((err == ENOENT || err == ENOTDIR) && action == "creating")
    msg = "cannot write " + what + ": " + in + " does not exist; create it first";
  else if (err == EISDIR)
    msg = "cannot write " + what + " there: it is a folder; give a file name";
  else
    msg = action + " " + what + " failed: " + why;
  throw InputError(path + ": " + msg);
}

void AtomicFile::flush() {
  if (buffer.empty()) return;
  if (!writeFully(fd, buffer.data(), buffer.size(), -1)) fail("writing", errno);
  buffer.clear();
}

void AtomicFile::write(const void *data, size_t size) {
  if (fd < 0) throw std::logic_error("AtomicFile: write after commit or failure");
  const char *bytes = static_cast<const char *>(data);
  written += size;
  if (buffer.size() + size <= kBufferBytes) {
    buffer.insert(buffer.end(), bytes, bytes + size);
    return;
  }
  flush();
  if (size >= kBufferBytes) {
    if (!writeFully(fd, bytes, size, -1)) fail("writing", errno);
    return;
  }
  buffer.insert(buffer.end(), bytes, bytes + size);
}

void AtomicFile::writeAt(uint64_t offset, const void *data, size_t size) {
  if (fd < 0) throw std::logic_error("AtomicFile: write after commit or failure");
  flush();
  if (!writeFully(fd, static_cast<const char *>(data), size, int64_t(offset)))
    fail("writing", errno);
}

void AtomicFile::commit() {
  if (fd < 0) throw std::logic_error("AtomicFile: commit after commit or failure");
  flush();
  if (::fchmod(fd, newFileMode()) != 0) fail("writing", errno);
  if (::fsync(fd) != 0) fail("syncing", errno);
  if (::close(fd) != 0) {
    fd = -1;
    fail("closing", errno);
  }
  fd = -1;
  if (::rename(temp.c_str(), path.c_str()) != 0) fail("renaming the temporary to", errno);
  committed = true;
  unregisterTemporary(slot);
  slot = -1;
  // The rename is durable once the folder is synced; a file system that
  // cannot sync folders (EINVAL) has already done what it can.
  int dir = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
}

} // namespace kvplan
