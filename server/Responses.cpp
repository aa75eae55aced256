// The Responses API's objects and events (Responses.h).
#include "server/Responses.h"

#include <algorithm>

namespace kvplan::server {

namespace {

std::string itemId(const ResponsesHead &h, const char *prefix) {
  return prefix + std::to_string(h.n);
}

OutJson textPart(const char *type, const std::string &text) {
  OutJson p = {{"type", type}, {"text", text}};
  if (std::string(type) == "output_text") {
    p["annotations"] = OutJson::array();
    p["logprobs"] = OutJson::array();
  }
  return p;
}

/// An item of reasoning or of the assistant's message: with its text when
/// `whole`, else as it opens (no content yet).
OutJson item(const ResponsesHead &h, bool reasoning, const std::string &text,
             const std::string &status, bool whole) {
  OutJson content = OutJson::array();
  if (whole) content.push_back(textPart(reasoning ? "reasoning_text" : "output_text", text));
  if (reasoning)
    return {{"id", itemId(h, "rs_")}, {"type", "reasoning"}, {"summary", OutJson::array()},
            {"content", content}, {"status", status}};
  return {{"id", itemId(h, "msg_")}, {"type", "message"}, {"status", status},
          {"role", "assistant"}, {"content", content}};
}

OutJson callItem(const ResponsesHead &h, size_t k, const ToolCall &c, const std::string &status,
                 bool whole) {
  return {{"id", itemId(h, "fc_") + "_" + std::to_string(k)},
          {"type", "function_call"},
          {"status", status},
          {"arguments", whole ? c.arguments : std::string()},
          {"call_id", c.id},
          {"name", c.name}};
}

} // namespace

OutJson responsesUsageJson(const ResponsesUsage &u) {
  return {{"input_tokens", u.input},
          {"input_tokens_details", {{"cached_tokens", u.cached}}},
          {"output_tokens", u.output},
          {"output_tokens_details", {{"reasoning_tokens", u.reasoning}}},
          {"total_tokens", u.input + u.output}};
}

OutJson responseObject(const ResponsesHead &h, const std::string &status, const OutJson &output,
                       const OutJson &usage, const OutJson &error) {
  OutJson r = {{"id", h.id()},
               {"object", "response"},
               {"created_at", h.created},
               {"status", status},
               {"background", false},
               {"error", error},
               {"incomplete_details", status == "incomplete"
                                          ? OutJson{{"reason", "max_output_tokens"}}
                                          : OutJson(nullptr)}};
  for (const auto &[key, value] : h.echo.items()) {
    if (key == "metadata") continue; // last, as OpenAI's
    r[key] = value;
    if (key == "max_output_tokens") {
      r["model"] = h.model;
      r["output"] = output;
    }
  }
  r["usage"] = usage;
  r["metadata"] = h.echo.contains("metadata") ? h.echo["metadata"] : OutJson::object();
  return r;
}

OutJson responseOutput(const ResponsesHead &h, const ResponsesAnswer &a) {
  OutJson out = OutJson::array();
  if (!a.reasoning.empty()) out.push_back(item(h, true, a.reasoning, "completed", true));
  if (!a.content.empty() || a.calls.empty())
    out.push_back(item(h, false, a.content, a.cut ? "incomplete" : "completed", true));
  for (size_t k = 0; k < a.calls.size(); ++k)
    out.push_back(callItem(h, k, a.calls[k], "completed", true));
  return out;
}

std::string ResponsesStream::event(const char *type, OutJson data) {
  OutJson e = {{"type", type}, {"sequence_number", sequence++}};
  for (auto &[key, value] : data.items()) e[key] = std::move(value);
  return std::string("event: ") + type + "\ndata: " + dumpJson(e) + "\n\n";
}

std::string ResponsesStream::begin() {
  const OutJson r = responseObject(head, "in_progress", OutJson::array(), nullptr);
  // (Each event in its own statement: the events are numbered as made.)
  std::string out = event("response.created", {{"response", r}});
  return out + event("response.in_progress", {{"response", r}});
}

/// Opens an item of `kind`: its output_item.added and content_part.added.
std::string ResponsesStream::open(Open kind) {
  const bool reasoning = kind == Open::reasoning;
  opened = kind;
  openText.clear();
  const OutJson it = item(head, reasoning, "", "in_progress", false);
  std::string out =
      event("response.output_item.added", {{"output_index", items.size()}, {"item", it}});
  return out + event("response.content_part.added",
                     {{"item_id", it["id"]},
                      {"output_index", items.size()},
                      {"content_index", 0},
                      {"part", textPart(reasoning ? "reasoning_text" : "output_text", "")}});
}

/// Closes the open item: its text's done, content_part.done and
/// output_item.done (a message cut at max_output_tokens is incomplete).
std::string ResponsesStream::close(bool cut) {
  if (opened == Open::none) return "";
  const bool reasoning = opened == Open::reasoning;
  const OutJson whole =
      item(head, reasoning, openText, !reasoning && cut ? "incomplete" : "completed", true);
  const OutJson where = {{"item_id", whole["id"]}, {"output_index", items.size()},
                         {"content_index", 0}};
  OutJson done = where;
  done["text"] = openText;
  if (!reasoning) done["logprobs"] = OutJson::array();
  OutJson part = where;
  part["part"] = whole["content"][0];
  std::string out =
      event(reasoning ? "response.reasoning_text.done" : "response.output_text.done", done);
  out += event("response.content_part.done", part);
  out += event("response.output_item.done", {{"output_index", items.size()}, {"item", whole}});
  items.push_back(whole);
  opened = Open::none;
  return out;
}

/// A delta of the item of `kind`, opening it (and closing the other) first.
std::string ResponsesStream::append(Open kind, const std::string &delta) {
  if (delta.empty()) return "";
  const bool reasoning = kind == Open::reasoning;
  std::string out;
  if (opened != kind) {
    out = close(false);
    out += open(kind);
  }
  openText += delta;
  OutJson data = {{"item_id", itemId(head, reasoning ? "rs_" : "msg_")},
                  {"output_index", items.size()},
                  {"content_index", 0},
                  {"delta", delta}};
  if (!reasoning) data["logprobs"] = OutJson::array();
  return out + event(reasoning ? "response.reasoning_text.delta" : "response.output_text.delta",
                     std::move(data));
}

std::string ResponsesStream::finish(const std::vector<ToolCall> &calls, bool cut,
                                    const ResponsesUsage &u) {
  std::string out;
  // A message at least, unless the answer is calls alone.
  const bool messageSent = opened == Open::message ||
                           std::any_of(items.begin(), items.end(), [](const OutJson &i) {
                             return i["type"] == "message";
                           });
  if (!messageSent && calls.empty()) {
    out += close(false);
    out += open(Open::message);
  }
  out += close(cut);
  for (size_t k = 0; k < calls.size(); ++k) {
    const OutJson added = callItem(head, k, calls[k], "in_progress", false);
    const OutJson where = {{"item_id", added["id"]}, {"output_index", items.size()}};
    OutJson delta = where, done = where;
    delta["delta"] = calls[k].arguments;
    done["arguments"] = calls[k].arguments;
    const OutJson whole = callItem(head, k, calls[k], "completed", true);
    out += event("response.output_item.added", {{"output_index", items.size()}, {"item", added}});
    out += event("response.function_call_arguments.delta", delta);
    out += event("response.function_call_arguments.done", done);
    out += event("response.output_item.done", {{"output_index", items.size()}, {"item", whole}});
    items.push_back(whole);
  }
  const char *status = cut ? "incomplete" : "completed";
  return out + event(cut ? "response.incomplete" : "response.completed",
                     {{"response", responseObject(head, status, items, responsesUsageJson(u))}});
}

std::string ResponsesStream::fail(const ApiError &e) {
  const OutJson error = {{"code", e.code.empty() ? "server_error" : e.code},
                         {"message", e.what()}};
  return event("response.failed",
               {{"response", responseObject(head, "failed", items, nullptr, error)}});
}

} // namespace kvplan::server
