// A model spec (.toml) as `kvplan compile spec.toml` reads it: parsed, then
// validated with the settings' defaults, and its weight table laid out.
#include "FuzzCommon.h"
#include "frontend/ConfigParser.h"

using namespace kvplan;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  return fuzz::rejectsOrAccepts([&] {
    std::string text(reinterpret_cast<const char *>(data), size);
    ModelConfig cfg = parseTomlSpec(text, "fuzz.toml", [](const std::string &) {});
    cfg = applyAndValidate(std::move(cfg), {});
    parameterCount(cfg.model);
    kvCacheBytes(cfg.model, cfg.compile);
  });
}
