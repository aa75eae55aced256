// OpenAI's Responses API (POST /v1/responses) on kvplan serve's chat
// machinery: the response object, its output items (a reasoning item, the
// assistant's message, its function calls) and, streamed, the typed
// server-sent events OpenAI's clients read ("event: response.output_text.
// delta", ...), numbered in order. The request is read by
// parseResponsesRequest (server/OpenAiProtocol.h); nothing is stored.
#pragma once

#include "server/OpenAiProtocol.h"

#include <cstdint>
#include <string>
#include <vector>

namespace kvplan::server {

/// What one answer was, split as the Responses API returns it.
struct ResponsesAnswer {
  std::string reasoning, content;
  std::vector<ToolCall> calls;
  bool cut = false; // ended at max_output_tokens: the response is incomplete
};

struct ResponsesUsage {
  int64_t input = 0, output = 0;
  int64_t cached = 0;    // input tokens the prefix cache held
  int64_t reasoning = 0; // output tokens whose text was reasoning
};

/// Who a response is: "resp_N", its items "rs_N", "msg_N", "fc_N_K".
struct ResponsesHead {
  uint64_t n = 0;
  int64_t created = 0; // Unix seconds
  std::string model;
  OutJson echo; // ResponsesRequest::echo
  std::string id() const { return "resp_" + std::to_string(n); }
};

/// The response object: status "completed", "incomplete" (with
/// incomplete_details), "in_progress" or "failed" (with `error`); `output`
/// its items; usage null until it is known.
OutJson responseObject(const ResponsesHead &h, const std::string &status, const OutJson &output,
                       const OutJson &usage, const OutJson &error = nullptr);
OutJson responsesUsageJson(const ResponsesUsage &u);

/// The output items of a whole answer: reasoning when there was some, the
/// message (unless the answer is calls alone), then each function call.
OutJson responseOutput(const ResponsesHead &h, const ResponsesAnswer &a);

/// A streamed response's events, as the answer comes: begin() once, then
/// reasoning and text deltas (each opens its item when the other was open,
/// closing that), then finish() or fail() once.
class ResponsesStream {
public:
  explicit ResponsesStream(ResponsesHead h) : head(std::move(h)) {}
  /// response.created, response.in_progress.
  std::string begin();
  std::string reasoning(const std::string &delta) { return append(Open::reasoning, delta); }
  std::string text(const std::string &delta) { return append(Open::message, delta); }
  /// Closes the open item (a message at least), adds each call's item, and
  /// ends with response.completed or, when `cut`, response.incomplete.
  std::string finish(const std::vector<ToolCall> &calls, bool cut, const ResponsesUsage &u);
  /// response.failed, the server's error in it.
  std::string fail(const ApiError &e);

private:
  enum class Open { none, reasoning, message };
  std::string event(const char *type, OutJson data);
  std::string open(Open kind);
  std::string close(bool cut);
  std::string append(Open kind, const std::string &delta);

  ResponsesHead head;
  int64_t sequence = 0;
  OutJson items = OutJson::array(); // closed, in order
  Open opened = Open::none;
  std::string openText; // the open item's text so far
};

} // namespace kvplan::server
