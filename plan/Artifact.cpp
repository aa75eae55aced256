// Reading and writing the .kvp container.
#include "plan/Artifact.h"
#include "support/Align.h"
#include "support/AtomicFile.h"

#include <xxhash.h>

#include <cstring>

namespace kvplan {

namespace {

// Eight bytes that no text file starts with and that a text-mode copy or a
// truncated transfer mangles visibly (the PNG trick).
constexpr char kMagic[8] = {'\x89', 'K', 'V', 'P', '\r', '\n', '\x1a', '\n'};

// All integers little-endian; the structs are written as they lie in memory
// on the little-endian hosts kvplan supports.
struct FileHeader {
  char magic[8];
  uint32_t formatVersion;
  uint32_t sectionCount;
  uint64_t sectionTableOffset;
  uint64_t fileSize;
  uint64_t tableChecksum;  // XXH3 of the section table
  uint8_t reserved[16];
  uint64_t headerChecksum; // XXH3 of the 56 bytes above
};
static_assert(sizeof(FileHeader) == 64, "header is 64 bytes");

struct SectionEntry {
  char name[32]; // NUL-padded
  uint64_t offset;
  uint64_t size;
  uint64_t checksum; // XXH3 of the section's bytes
  uint64_t reserved;
};
static_assert(sizeof(SectionEntry) == 64, "section entries are 64 bytes");


} // namespace

uint64_t checksum64(const void *data, size_t size) { return XXH3_64bits(data, size); }

//===----------------------------------------------------------------------===//
// Writer
//===----------------------------------------------------------------------===//

void ArtifactWriter::addSection(std::string name, std::string bytes) {
  uint64_t size = bytes.size();
  addSection(std::move(name), size, {});
  sections.back().bytes = std::move(bytes);
}

void ArtifactWriter::addSection(std::string name, uint64_t size,
                                std::function<void(SectionSink &)> fill) {
  if (name.empty() || name.size() >= sizeof(SectionEntry::name))
    throw std::logic_error("artifact section name must be 1-31 characters: " + name);
  Pending p;
  p.name = std::move(name);
  p.size = size;
  p.fill = std::move(fill);
  sections.push_back(std::move(p));
}

namespace {

/// Writes a section to the file, hashing as it goes.
class FileSink : public SectionSink {
public:
  explicit FileSink(AtomicFile &out) : out(out), state(XXH3_createState()) {
    XXH3_64bits_reset(state);
  }
  ~FileSink() override { XXH3_freeState(state); }
  void write(const void *data, size_t size) override {
    out.write(data, size);
    XXH3_64bits_update(state, data, size);
    written += size;
  }
  uint64_t digest() const { return XXH3_64bits_digest(state); }
  uint64_t written = 0;

private:
  AtomicFile &out;
  XXH3_state_t *state;
};

} // namespace

uint64_t ArtifactWriter::fileSize() const {
  const uint64_t tableEnd = sizeof(FileHeader) + sections.size() * sizeof(SectionEntry);
  uint64_t off = alignUp(tableEnd, kSectionAlignment), end = tableEnd;
  for (const Pending &p : sections) {
    end = off + p.size;
    off = alignUp(end, kSectionAlignment);
  }
  return end;
}

void ArtifactWriter::write(const std::string &path) const {
  std::vector<SectionEntry> table(sections.size());
  uint64_t tableOffset = sizeof(FileHeader);
  uint64_t off = alignUp(tableOffset + table.size() * sizeof(SectionEntry), kSectionAlignment);
  for (size_t i = 0; i < sections.size(); ++i) {
    SectionEntry &e = table[i];
    std::memset(&e, 0, sizeof e);
    std::memcpy(e.name, sections[i].name.data(), sections[i].name.size());
    e.offset = off;
    e.size = sections[i].size;
    off = alignUp(off + e.size, kSectionAlignment);
  }
  const uint64_t size = fileSize();

  // A temporary with a unique name, synced and renamed over `path`: a
  // failed, stopped or concurrent write never leaves a partial artifact.
  AtomicFile out(path, "the artifact");
  auto pad = [&](uint64_t to) {
    static const char zeros[4096] = {};
    while (out.size() < to)
      out.write(zeros, size_t(std::min<uint64_t>(sizeof zeros, to - out.size())));
  };
  // The header and table are written last, once the checksums are known.
  pad(table.empty() ? tableOffset : table[0].offset);
  for (size_t i = 0; i < sections.size(); ++i) {
    pad(table[i].offset);
    FileSink sink(out);
    if (sections[i].fill)
      sections[i].fill(sink);
    else
      sink.write(sections[i].bytes.data(), sections[i].bytes.size());
    if (sink.written != table[i].size)
      throw std::logic_error("section '" + sections[i].name + "' wrote " +
                             std::to_string(sink.written) + " bytes, not " +
                             std::to_string(table[i].size));
    table[i].checksum = sink.digest();
  }
  FileHeader h;
  std::memset(&h, 0, sizeof h);
  std::memcpy(h.magic, kMagic, sizeof kMagic);
  h.formatVersion = kArtifactFormatVersion;
  h.sectionCount = uint32_t(table.size());
  h.sectionTableOffset = tableOffset;
  h.fileSize = size;
  h.tableChecksum = checksum64(table.data(), table.size() * sizeof(SectionEntry));
  h.headerChecksum = checksum64(&h, offsetof(FileHeader, headerChecksum));
  out.writeAt(0, &h, sizeof h);
  out.writeAt(tableOffset, table.data(), table.size() * sizeof(SectionEntry));
  out.commit();
}

//===----------------------------------------------------------------------===//
// Reader
//===----------------------------------------------------------------------===//

Artifact Artifact::open(const std::string &path) {
  auto fail = [&](const std::string &msg) -> InputError { return InputError(path + ": " + msg); };
  Artifact a;
  a.file = MappedFile::open(path, "artifact");
  const char *data = a.file.data();
  const uint64_t size = a.file.size();
  if (size < sizeof(FileHeader))
    throw fail("not a kvplan artifact (only " + std::to_string(size) +
               " bytes; compile one with `kvplan compile`)");

  FileHeader h;
  std::memcpy(&h, data, sizeof h);
  if (std::memcmp(h.magic, kMagic, sizeof kMagic) != 0)
    throw fail("not a kvplan artifact (wrong magic bytes; compile one with `kvplan compile`)");
  a.version_ = h.formatVersion;
  if (h.formatVersion != kArtifactFormatVersion)
    throw fail("incompatible because the artifact has format version " +
               std::to_string(h.formatVersion) + " and this kvplan reads version " +
               std::to_string(kArtifactFormatVersion) +
               "; recompile the model with this kvplan (`kvplan compile`)");
  if (checksum64(&h, offsetof(FileHeader, headerChecksum)) != h.headerChecksum)
    throw fail("the artifact header is damaged (checksum mismatch); recompile the model");
  if (h.fileSize != size)
    throw fail(h.fileSize > size
                   ? "truncated: the header promises " + std::to_string(h.fileSize) +
                         " bytes but the file has " + std::to_string(size) +
                         "; copy it again or recompile"
                   : "has " + std::to_string(size - h.fileSize) +
                         " unexpected trailing bytes; copy it again or recompile");
  uint64_t tableBytes = uint64_t(h.sectionCount) * sizeof(SectionEntry);
  if (h.sectionCount > 1024 || h.sectionTableOffset > size ||
      tableBytes > size - h.sectionTableOffset)
    throw fail("the section table is damaged; recompile the model");
  const char *tablePtr = data + h.sectionTableOffset;
  if (checksum64(tablePtr, tableBytes) != h.tableChecksum)
    throw fail("the section table is damaged (checksum mismatch); recompile the model");
  for (uint32_t i = 0; i < h.sectionCount; ++i) {
    SectionEntry e;
    std::memcpy(&e, tablePtr + i * sizeof e, sizeof e);
    SectionInfo s;
    s.name.assign(e.name, strnlen(e.name, sizeof e.name));
    s.offset = e.offset;
    s.size = e.size;
    s.checksum = e.checksum;
    if (s.offset > size || s.size > size - s.offset)
      throw fail("section '" + s.name + "' lies outside the file; recompile the model");
    a.sections_.push_back(std::move(s));
  }
  if (!a.hasSection("plan"))
    throw fail("the artifact holds no plan section; recompile the model");
  // The weights are checked by whoever loads them (they are the large
  // sections, and a tensor-parallel rank reads only its own, "weights.R");
  // everything else is small and checked now.
  for (const SectionInfo &s : a.sections_)
    if (s.name.rfind("weights", 0) != 0)
      a.verifySection(s.name);
  std::string_view planText = a.section("plan");
  nlohmann::json j = nlohmann::json::parse(planText.begin(), planText.end(), nullptr, false);
  if (j.is_discarded())
    throw fail("the plan section is not valid JSON; recompile the model");
  try {
    a.plan_ = planFromJson(j);
  } catch (const InputError &e) {
    throw fail(e.what());
  }
  if (a.plan_.formatVersion != int(h.formatVersion))
    throw fail("the plan's format version disagrees with the header; recompile the model");
  return a;
}

bool Artifact::hasSection(std::string_view name) const {
  for (const SectionInfo &s : sections_)
    if (s.name == name) return true;
  return false;
}

std::string_view Artifact::section(std::string_view name) const {
  for (const SectionInfo &s : sections_)
    if (s.name == name) return std::string_view(file.data() + s.offset, s.size);
  throw InputError(path() + ": the artifact has no '" + std::string(name) + "' section");
}

void Artifact::verifySection(std::string_view name) const {
  for (const SectionInfo &s : sections_) {
    if (s.name != name) continue;
    if (checksum64(file.data() + s.offset, s.size) != s.checksum)
      throw InputError(path() + ": section '" + s.name +
                       "' is damaged (checksum mismatch); copy the file again or recompile");
    return;
  }
  throw InputError(path() + ": the artifact has no '" + std::string(name) + "' section");
}

} // namespace kvplan
