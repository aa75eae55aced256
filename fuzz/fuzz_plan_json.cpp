// The plan section of an artifact (JSON) as Artifact::open reads it, without
// the container's checksums in the way.
#include "FuzzCommon.h"
#include "plan/Plan.h"

using namespace kvplan;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, false);
  if (j.is_discarded())
    return 0; // Artifact::open rejects text that is not JSON before this
  return fuzz::rejectsOrAccepts([&] { planFromJson(j); });
}
