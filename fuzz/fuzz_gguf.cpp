// A .gguf file as `kvplan compile model.gguf` and `kvplan tokenize` read it:
// the metadata and tensor table, the model description it carries, every
// weight that description names, and its embedded tokenizer.
#include "FuzzCommon.h"
#include "FuzzUse.h"
#include "formats/Gguf.h"
#include "frontend/ConfigParser.h"

using namespace kvplan;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string path = fuzz::writeInput(data, size, "model.gguf");
  fuzz::rejectsOrAccepts([&] { GgufFile::open(path); });
  fuzz::rejectsOrAccepts([&] {
    ModelConfig cfg = applyAndValidate(readCheckpointConfig(path), {});
    fuzz::readEveryWeight(*openWeights(path, cfg.model), cfg.model);
  });
  fuzz::rejectsOrAccepts([&] { fuzz::useTokenizer(*loadTokenizerFile(path), "fuzz"); });
  return 0;
}
