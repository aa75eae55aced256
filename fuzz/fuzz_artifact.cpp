// A compiled artifact (.kvp) as `kvplan run` and `kvplan inspect` open it:
// the header, the section table, the plan, every section's checksum and the
// stored tokenizer. (The checksums stop most mutations early; fuzz_plan_json
// reaches the plan reader directly.)
#include "FuzzCommon.h"
#include "FuzzUse.h"
#include "plan/Artifact.h"

using namespace kvplan;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string path = fuzz::writeInput(data, size, "model.kvp");
  return fuzz::rejectsOrAccepts([&] {
    Artifact a = Artifact::open(path);
    for (const SectionInfo &s : a.sections())
      a.verifySection(s.name);
    if (!a.hasSection(kTokenizerSection))
      return;
    std::string_view t = a.section(kTokenizerSection);
    size_t nl = t.find('\n');
    if (nl != std::string_view::npos)
      fuzz::useTokenizer(*loadTokenizer(std::string(t.substr(0, nl)), t.substr(nl + 1)), "fuzz");
  });
}
