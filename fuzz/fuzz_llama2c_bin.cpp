// A llama2.c checkpoint (.bin) as `kvplan compile model.bin` reads it: the
// header's model description, then every weight it names.
#include "FuzzCommon.h"
#include "FuzzUse.h"
#include "frontend/ConfigParser.h"

using namespace kvplan;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string path = fuzz::writeInput(data, size, "model.bin");
  return fuzz::rejectsOrAccepts([&] {
    ModelConfig cfg = applyAndValidate(readCheckpointConfig(path), {});
    fuzz::readEveryWeight(*openWeights(path, cfg.model), cfg.model);
  });
}
