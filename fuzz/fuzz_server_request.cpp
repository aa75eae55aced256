// A request body as kvplan serve parses it: the first byte picks the
// endpoint (/v1/completions or /v1/chat/completions), the rest is the body.
// ApiError is the server's answer to a bad request (a 4xx).
#include "FuzzCommon.h"
#include "server/OpenAiProtocol.h"

using namespace kvplan;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0)
    return 0;
  std::string body(reinterpret_cast<const char *>(data) + 1, size - 1);
  try {
    if (data[0] & 1)
      server::parseChatRequest(body);
    else
      server::parseCompletionRequest(body);
  } catch (const server::ApiError &e) {
    e.body();
  }
  return 0;
}
