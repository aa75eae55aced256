// A compiled artifact (.kvp) as `kvplan run` and `kvplan inspect` open it:
// the header, the section table, the plan, every section's checksum and the
// stored tokenizer. Each input is opened as it is and again resealed, its
// file size and checksums made to match as a hostile file's would, so that
// mutations reach past the checksums (fuzz_plan_json reaches the plan
// reader directly).
#include "FuzzCommon.h"
#include "FuzzUse.h"
#include "plan/Artifact.h"

#include <cstring>

using namespace kvplan;

namespace {

// The container's layout (plan/Artifact.cpp): a 64-byte header with the
// file size at 24, the table's offset at 16 and checksum at 32, the
// header's checksum at 56 over the bytes before it; 64-byte section entries
// with offset, size and checksum at 32, 40 and 48.
uint64_t load(const std::string &b, size_t at) {
  uint64_t v;
  std::memcpy(&v, b.data() + at, 8);
  return v;
}
void store(std::string &b, size_t at, uint64_t v) { std::memcpy(&b[at], &v, 8); }

void reseal(std::string &b) {
  if (b.size() < 64)
    return;
  store(b, 24, b.size());
  uint32_t count;
  std::memcpy(&count, b.data() + 12, 4);
  const uint64_t table = load(b, 16), tableBytes = uint64_t(count) * 64;
  if (count <= 1024 && table <= b.size() && tableBytes <= b.size() - table) {
    for (uint64_t e = table; e < table + tableBytes; e += 64) {
      const uint64_t offset = load(b, e + 32), size = load(b, e + 40);
      if (offset <= b.size() && size <= b.size() - offset)
        store(b, e + 48, checksum64(b.data() + offset, size));
    }
    store(b, 32, checksum64(b.data() + table, tableBytes));
  }
  store(b, 56, checksum64(b.data(), 56));
}

void openAndUse(const std::string &path) {
  Artifact a = Artifact::open(path);
  for (const SectionInfo &s : a.sections())
    a.verifySection(s.name);
  if (!a.hasSection(kTokenizerSection))
    return;
  std::string_view t = a.section(kTokenizerSection);
  size_t nl = t.find('\n');
  if (nl != std::string_view::npos)
    fuzz::useTokenizer(*loadTokenizer(std::string(t.substr(0, nl)), t.substr(nl + 1)), "fuzz");
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string bytes(reinterpret_cast<const char *>(data), size);
  std::string path = fuzz::writeInput(data, size, "model.kvp");
  fuzz::rejectsOrAccepts([&] { openAndUse(path); });
  reseal(bytes);
  path = fuzz::writeInput(reinterpret_cast<const uint8_t *>(bytes.data()), bytes.size(),
                          "model.kvp");
  return fuzz::rejectsOrAccepts([&] { openAndUse(path); });
}
