// A fresh folder under the system's temporary directory, removed with
// everything in it when the object goes (nvcc's and the emulator's scratch,
// tests' files).
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>

namespace kvplan {

class TempDir {
public:
  /// Makes TMP/PREFIX-XXXXXX. When that fails, made() is false and errno
  /// says why: callers throw their own error.
  explicit TempDir(const std::string &prefix) {
    std::string tmpl = (std::filesystem::temp_directory_path() / (prefix + "-XXXXXX")).string();
    if (::mkdtemp(tmpl.data())) dir = tmpl;
  }
  ~TempDir() {
    std::error_code ignored;
    if (!dir.empty()) std::filesystem::remove_all(dir, ignored);
  }
  TempDir(const TempDir &) = delete;
  TempDir &operator=(const TempDir &) = delete;

  bool made() const { return !dir.empty(); }
  const std::filesystem::path &path() const { return dir; }

private:
  std::filesystem::path dir;
};

} // namespace kvplan
