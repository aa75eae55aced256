// A request body as kvplan serve parses it: the first byte picks the
// endpoint (/v1/completions, /v1/chat/completions, /tokenize or
// /detokenize: its two low bits; /v1/responses where its three low bits
// are 4, whose answer is also made into a response and its stream's
// events), the rest is the body up to its first line
// feed; /tokenize's messages are rendered by each template. ApiError is
// the server's answer to a bad request (a 4xx). What follows the line feed
// is read as an answer: by the request's JSON schema (and, its bytes as
// choices, a walk over the bytes the schema allows must never reach a dead
// end), and for chat with tools by the tool-call reader of each template
// with a tool format, which also renders the prompt (and the schema of a
// forced call).
#include "FuzzCommon.h"
#include "runtime/JsonSchema.h"
#include "server/ChatTemplate.h"
#include "server/Harmony.h"
#include "server/OpenAiProtocol.h"
#include "server/Reasoning.h"
#include "server/Responses.h"
#include "server/ToolCalls.h"

#include <vector>

using namespace kvplan;

namespace {

/// A walk over the bytes the schema's recogniser allows, each step's byte
/// chosen by the answer's next: it must never reach a state where no byte
/// is allowed and the object has not closed (a text it cannot finish).
void walkSchema(const std::shared_ptr<const JsonSchema> &schema, const std::string &answer) {
  SchemaState s(schema), t;
  std::vector<uint8_t> allowed;
  for (size_t k = 0; k < answer.size() && k < 64 && !s.complete(); ++k) {
    allowed.clear();
    for (int b = 0; b < 256; ++b) {
      t = s;
      if (t.push(uint8_t(b))) allowed.push_back(uint8_t(b));
    }
    if (allowed.empty()) __builtin_trap(); // a dead end
    s.push(allowed[uint8_t(answer[k]) % allowed.size()]);
  }
}

void readAnswer(const server::ApiRequest &r, const std::string &answer) {
  if (r.jsonSchema) {
    SchemaState s(r.jsonSchema);
    for (char c : answer)
      if (!s.push(uint8_t(c))) break;
    walkSchema(r.jsonSchema, answer);
  }
  if (!r.chat) return;
  for (server::ChatTemplate t : {server::ChatTemplate::chatml, server::ChatTemplate::qwen3,
                                 server::ChatTemplate::llama3, server::ChatTemplate::harmony}) {
    try {
      server::renderChat(t, r.messages, r.tools, server::ChatEnd::generationPrompt, nullptr,
                         r.templateKwargs);
      if (r.toolChoice == server::ToolChoice::named && t == server::ChatTemplate::harmony)
        server::harmonyCallSchema(r, r.toolName);
      else if (r.toolChoice == server::ToolChoice::required ||
               r.toolChoice == server::ToolChoice::named)
        server::forcedCallSchema(t, r);
    } catch (const server::ApiError &e) {
      e.body();
    }
    server::ToolCallReader reader(t, r);
    for (size_t i = 0; i < answer.size(); i += 3) reader.feed(answer.substr(i, 3));
    reader.finish();
  }
  for (bool opened : {false, true}) { // a thinking model's answer, in pieces
    server::ReasoningReader thought(opened);
    for (size_t i = 0; i < answer.size(); i += 2) thought.feed(answer.substr(i, 2));
    thought.finish();
  }
}

/// A /v1/responses request: its chat as chat's, and the answer (split at
/// its middle into reasoning and text, and its first byte's parity cutting
/// it) as a whole response and as a stream's events.
void readResponses(const server::ResponsesRequest &r, const std::string &answer) {
  readAnswer(r.api, answer);
  const server::ResponsesHead h{1, 0, "m", r.echo};
  server::ResponsesAnswer a{answer.substr(0, answer.size() / 2), answer.substr(answer.size() / 2),
                            {}, !answer.empty() && (answer[0] & 1)};
  if (answer.size() > 4) a.calls.push_back({"call_1", "f", answer.substr(0, 4)});
  server::dumpJson(server::responseObject(h, "completed", server::responseOutput(h, a),
                                          server::responsesUsageJson({3, 4, 0, 1})));
  server::ResponsesStream s(h);
  s.begin();
  for (size_t i = 0; i < answer.size(); i += 3)
    (i < answer.size() / 2 ? s.reasoning(answer.substr(i, 3)) : s.text(answer.substr(i, 3)));
  s.finish(a.calls, a.cut, {3, 4, 0, 1});
}

void renderTokenize(const server::TokenizeRequest &r) {
  if (r.prompt) return;
  using server::ChatTemplate;
  for (ChatTemplate t : {ChatTemplate::chatml, ChatTemplate::qwen3, ChatTemplate::deepseek_r1,
                         ChatTemplate::llama3, ChatTemplate::llama2, ChatTemplate::mistral,
                         ChatTemplate::harmony}) {
    try {
      server::renderChat(t, r.messages, r.tools);
    } catch (const server::ApiError &e) {
      e.body();
    }
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0)
    return 0;
  const std::string rest(reinterpret_cast<const char *>(data) + 1, size - 1);
  const size_t split = rest.find('\n');
  const std::string body = rest.substr(0, split);
  const std::string answer = split == std::string::npos ? "" : rest.substr(split + 1);
  try {
    if ((data[0] & 7) == 4) {
      readResponses(server::parseResponsesRequest(body), answer);
      return 0;
    }
    switch (data[0] & 3) {
    case 0: readAnswer(server::parseCompletionRequest(body), answer); break;
    case 1: readAnswer(server::parseChatRequest(body), answer); break;
    case 2: renderTokenize(server::parseTokenizeRequest(body)); break;
    default: server::parseDetokenizeRequest(body);
    }
  } catch (const server::ApiError &e) {
    e.body();
  }
  return 0;
}
