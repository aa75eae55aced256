// A tokenizer file as `kvplan tokenize --tokenizer FILE` reads it (through
// loadTokenizer with its kind, as an artifact's stored copy is), then
// encoding and decoding with it.
#include "FuzzCommon.h"
#include "FuzzUse.h"

using namespace kvplan;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char *>(data), size);
  return fuzz::rejectsOrAccepts([&] {
    fuzz::useTokenizer(*loadTokenizer("hf-bpe", bytes), bytes.substr(0, 64));
  });
}
