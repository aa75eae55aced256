// The artifact container (.kvp): a fixed header, a section table and
// checksummed sections (the plan as JSON, the planned IR, the weights).
// Layout and compatibility rules: docs/artifact.md.
#pragma once

#include "support/MappedFile.h"
#include "plan/Plan.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace kvplan {

/// Bumped whenever a reader of the old version would misread the new one
/// (2: typed plan ops, value ids, the cuda target's passes and the exact bill;
/// 3: the KV-cache pool size is a setting, `kv_pages`; 4: tensor
/// parallelism: `tensor_parallel`, weight shards, all_reduce, a weights
/// section per rank; 5: the cuda target's kernels take 12 pointers and
/// rotate by RoPE cos/sin tables the launch table places in the workspace;
/// 6: the cuda target's sampling kernel reads min-p, 20 bytes a row;
/// 7: the cuda target's kernels take the weight ranges they ask L2 for;
/// 8: where windowed and full layers mix, the sliding layers' own pool,
/// `window_kv_cache`, with its page table).
constexpr uint32_t kArtifactFormatVersion = 8;
/// Sections start at multiples of this, so weights can be mapped and used in
/// place.
constexpr uint64_t kSectionAlignment = 4096;

/// Receives a streamed section's bytes in order.
class SectionSink {
public:
  virtual ~SectionSink() = default;
  virtual void write(const void *data, size_t size) = 0;
};

class ArtifactWriter {
public:
  void addSection(std::string name, std::string bytes);
  /// A section of exactly `size` bytes that `fill` writes when the file is
  /// written (so a weights section never has to fit in memory).
  void addSection(std::string name, uint64_t size, std::function<void(SectionSink &)> fill);
  /// The size of the file write() makes.
  uint64_t fileSize() const;
  /// Writes the file through a uniquely named temporary beside it, synced
  /// and renamed over `path` (support/AtomicFile.h): a failed, stopped or
  /// concurrent write leaves no partial artifact. Throws InputError when it
  /// cannot.
  void write(const std::string &path) const;

private:
  struct Pending {
    std::string name, bytes;
    uint64_t size = 0;
    std::function<void(SectionSink &)> fill; // empty: `bytes` is the content
  };
  std::vector<Pending> sections;
};

struct SectionInfo {
  std::string name;
  uint64_t offset = 0, size = 0, checksum = 0;
};

/// A read-only, memory-mapped artifact. Opening checks the header, the
/// format version, the section table, the checksum of every section but
/// `weights` (the loader checks those) and the plan; every failure is an
/// InputError that says what is wrong and what to do.
class Artifact {
public:
  static Artifact open(const std::string &path);

  const std::string &path() const { return file.path(); }
  uint32_t formatVersion() const { return version_; }
  const Plan &plan() const { return plan_; }
  const std::vector<SectionInfo> &sections() const { return sections_; }
  bool hasSection(std::string_view name) const;
  /// The bytes of a section, in place.
  std::string_view section(std::string_view name) const;
  /// Recomputes a section's checksum; throws InputError when it differs.
  void verifySection(std::string_view name) const;

private:
  Artifact() = default;
  MappedFile file;
  uint32_t version_ = 0;
  std::vector<SectionInfo> sections_;
  Plan plan_;
};

/// The tokenizer section: Tokenizer::kind(), a newline, Tokenizer::serialize().
inline constexpr const char *kTokenizerSection = "tokenizer";
/// The model's own chat template, when it came with one (formats/ChatTemplateFile.h).
inline constexpr const char *kChatTemplateSection = "chat_template";

/// The checksum the container uses (XXH3, 64 bits).
uint64_t checksum64(const void *data, size_t size);

} // namespace kvplan
