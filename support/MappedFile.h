// A read-only memory-mapped file (RAII), shared by the artifact and
// checkpoint readers.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace kvplan {

class MappedFile {
public:
  /// Maps `path`; throws InputError naming it when it cannot be opened or is
  /// not a regular file. `what` names the kind of file in messages.
  static MappedFile open(const std::string &path, const char *what = "file");
  MappedFile() = default;
  MappedFile(MappedFile &&o) noexcept { *this = std::move(o); }
  MappedFile &operator=(MappedFile &&o) noexcept;
  MappedFile(const MappedFile &) = delete;
  MappedFile &operator=(const MappedFile &) = delete;
  ~MappedFile();

  const char *data() const { return data_; }
  uint64_t size() const { return size_; }
  std::string_view bytes() const { return {data_, size_}; }
  const std::string &path() const { return path_; }

private:
  std::string path_;
  const char *data_ = nullptr;
  uint64_t size_ = 0;
};

} // namespace kvplan
