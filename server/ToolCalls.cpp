// Tool calls: the templates' JSON, a forced call's schema, and the reader
// of calls in an answer.
#include "server/ToolCalls.h"
#include "server/Jinja.h"

#include "support/Error.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <random>

namespace kvplan::server {

using ojson = nlohmann::ordered_json;

namespace {

const char *const kCallOpen = "<tool_call>";
const char *const kCallClose = "</tool_call>";
const char *const kPythonTag = "<|python_tag|>";
const char *const kMistralCalls = "[TOOL_CALLS]";
const char *const kMistralArgs = "[ARGS]";
const char *const kMistralCallId = "[CALL_ID]";

std::string trim(const std::string &s) {
  const char *space = " \t\n\r";
  const size_t b = s.find_first_not_of(space);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(space) - b + 1);
}

/// $refs inside a tool's parameters point into the parameters; nested in
/// the call's schema at `base` (a JSON pointer), they point there.
void rebase(ojson &schema, const std::string &base) {
  if (schema.is_object())
    for (auto it = schema.begin(); it != schema.end(); ++it) {
      if (it.key() == "$ref" && it.value().is_string()) {
        const std::string ref = it.value().get<std::string>();
        if (!ref.empty() && ref[0] == '#') it.value() = "#" + base + ref.substr(1);
      } else {
        rebase(it.value(), base);
      }
    }
  else if (schema.is_array())
    for (ojson &item : schema) rebase(item, base);
}

} // namespace

std::string newCallId(ChatTemplate t) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  const char *alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  const bool mistral = t == ChatTemplate::mistral;
  std::string id = mistral ? "" : "call_";
  for (int i = 0; i < (mistral ? 9 : 24); ++i) id += alphabet[rng() % 62];
  return id;
}

std::string pythonJson(const ojson &v, int indent) {
  return pythonJsonDumps(v, indent > 0 ? indent : -1);
}

ojson toolJson(const ToolFunction &t) {
  ojson fn = {{"name", t.name}};
  if (!t.description.empty()) fn["description"] = t.description;
  if (t.hasParameters) fn["parameters"] = t.parameters;
  return {{"type", "function"}, {"function", fn}};
}

void checkToolTemplate(ChatTemplate t) {
  if (t == ChatTemplate::llama3 || t == ChatTemplate::mistral || isChatMl(t) ||
      t == ChatTemplate::harmony)
    return;
  throw ApiError(400, std::string("tools need a chat template with a tool-call format, and "
                                  "kvplan writes llama3's, chatml's, qwen3's, mistral's and "
                                  "harmony's; this server's is ") +
                          chatTemplateName(t) + " (start it with --chat-template llama3, chatml, "
                          "qwen3, mistral or harmony if the model was trained so, or leave out "
                          "tools)",
                 "tools");
}

std::string forcedCallPrefix(ChatTemplate t) {
  return isChatMl(t) ? std::string(kCallOpen) + "\n" : "";
}

std::vector<ChatPiece> forcedCallPieces(ChatTemplate t) {
  if (t == ChatTemplate::mistral)
    return {{ChatPiece::marker, kMistralCalls}, {ChatPiece::text, " ["}};
  return {{ChatPiece::text, forcedCallPrefix(t)}};
}

std::shared_ptr<const JsonSchema> forcedCallSchema(ChatTemplate t, const ApiRequest &a) {
  const char *argKey = t == ChatTemplate::llama3 ? "parameters" : "arguments";
  ojson alternatives = ojson::array();
  for (size_t i = 0; i < a.tools.size(); ++i) {
    const ToolFunction &tool = a.tools[i];
    if (a.toolChoice == ToolChoice::named && tool.name != a.toolName) continue;
    ojson params = tool.hasParameters
                       ? tool.parameters
                       : ojson{{"type", "object"}, {"properties", ojson::object()}};
    try { // alone first, so that an error names the tool's own path
      JsonSchema::compile(params, "tools[" + std::to_string(i) + "].function.parameters");
    } catch (const InputError &e) {
      throw badField("tools", e.what());
    }
    rebase(params, "/anyOf/" + std::to_string(alternatives.size()) + "/properties/" + argKey);
    alternatives.push_back({{"type", "object"},
                            {"properties", {{"name", {{"const", tool.name}}}, {argKey, params}}},
                            {"required", {"name", argKey}},
                            {"additionalProperties", false}});
  }
  try {
    return JsonSchema::compile(ojson{{"anyOf", alternatives}}, "tools");
  } catch (const InputError &e) {
    throw badField("tools", e.what());
  }
}

ToolCallReader::ToolCallReader(ChatTemplate t, const ApiRequest &a, const Tokenizer *tok)
    : chat(t),
      forced(a.toolChoice == ToolChoice::required || a.toolChoice == ToolChoice::named),
      parallel(a.parallelToolCalls) {
  if (forced) calling = true;
  for (const ToolFunction &f : a.tools) names.push_back(f.name);
  // A forced call's prompt opens v0.3's list (forcedCallPieces), which the
  // schema holds the answer to: read as v0.3's.
  v11 = !forced && t == ChatTemplate::mistral && tok && tok->specialTokenId(kMistralArgs) >= 0;
}

std::string ToolCallReader::feed(const std::string &text) {
  held += text;
  if (calling) return "";
  if (decided) {
    std::string out;
    out.swap(held);
    return out;
  }
  // ChatML's, Qwen3's and Mistral v11's content may come before the calls.
  if (isChatMl(chat) || v11) {
    const char *open = v11 ? kMistralCalls : kCallOpen;
    const size_t at = held.find(open);
    size_t keep = held.size() - (at == std::string::npos ? held.size() : at);
    if (at == std::string::npos) // keep what may be the marker's start
      for (size_t n = std::min(held.size(), std::strlen(open) - 1); n > 0 && !keep; --n)
        if (held.compare(held.size() - n, n, open, n) == 0) keep = n;
    calling = at != std::string::npos;
    std::string out = held.substr(0, held.size() - keep);
    held.erase(0, held.size() - keep);
    return out;
  }
  // Llama 3: a call is the whole answer, opening with '{' or <|python_tag|>;
  // Mistral's with [TOOL_CALLS] (a control token, so often not in the text)
  // and the calls' list.
  const size_t b = held.find_first_not_of(" \t\n\r");
  if (b == std::string::npos) return "";
  const std::string rest = held.substr(b);
  const char *tag = chat == ChatTemplate::mistral ? kMistralCalls : kPythonTag;
  const char open = chat == ChatTemplate::mistral ? '[' : '{';
  if (rest[0] == open || rest.compare(0, std::strlen(tag), tag) == 0) {
    calling = true;
    return "";
  }
  if (std::string(tag).compare(0, rest.size(), rest) == 0) return ""; // may be the tag
  decided = true; // content: sent as it comes
  std::string out;
  out.swap(held);
  return out;
}

ToolCallReader::Result ToolCallReader::finish() {
  Result r;
  if (calling) r.calls = parseCalls(held);
  if (r.calls.empty()) r.content = held;
  held.clear();
  return r;
}

bool ToolCallReader::parseOne(const std::string &text, std::vector<ToolCall> &out) const {
  return parseObject(ojson::parse(trim(text), nullptr, false), out);
}

bool ToolCallReader::parseObject(const ojson &v, std::vector<ToolCall> &out) const {
  if (v.is_discarded() || !v.is_object() || !v.contains("name") || !v["name"].is_string())
    return false;
  ToolCall c;
  c.name = v["name"].get<std::string>();
  if (std::find(names.begin(), names.end(), c.name) == names.end()) return false;
  const char *key = v.contains("arguments") ? "arguments" : "parameters";
  const ojson args = v.contains(key) ? v[key] : ojson::object();
  if (args.is_string()) { // some models write the arguments as JSON text
    const ojson inner = ojson::parse(args.get<std::string>(), nullptr, false);
    if (inner.is_discarded() || !inner.is_object()) return false;
    c.arguments = args.get<std::string>();
  } else if (args.is_object()) {
    c.arguments = args.dump(-1, ' ', false, ojson::error_handler_t::replace);
  } else {
    return false;
  }
  c.id = newCallId(chat);
  out.push_back(std::move(c));
  return true;
}

/// {name}[ARGS]{arguments}, or {name}[CALL_ID]{id}[ARGS]{arguments}, after
/// each [TOOL_CALLS]; the id is kept where it is one Mistral's template
/// takes (9 letters or digits), else a new one.
bool ToolCallReader::parseMistralV11(const std::string &text, std::vector<ToolCall> &out) const {
  const size_t n = std::strlen(kMistralCalls);
  for (size_t at = text.find(kMistralCalls); at != std::string::npos;) {
    const size_t next = text.find(kMistralCalls, at + n);
    const std::string call = text.substr(at + n, next == std::string::npos ? next : next - at - n);
    at = next;
    const size_t args = call.find(kMistralArgs);
    if (args == std::string::npos) return false;
    const size_t idAt = call.find(kMistralCallId);
    ToolCall c;
    c.name = trim(call.substr(0, std::min(args, idAt)));
    const ojson v = ojson::parse(trim(call.substr(args + std::strlen(kMistralArgs))), nullptr,
                                 false);
    if (std::find(names.begin(), names.end(), c.name) == names.end() || !v.is_object())
      return false;
    c.arguments = v.dump(-1, ' ', false, ojson::error_handler_t::replace);
    const std::string id =
        idAt < args ? trim(call.substr(idAt + std::strlen(kMistralCallId),
                                       args - idAt - std::strlen(kMistralCallId)))
                    : "";
    const bool kept = id.size() == 9 && std::all_of(id.begin(), id.end(), [](char ch) {
                        return std::isalnum(static_cast<unsigned char>(ch));
                      });
    c.id = kept ? id : newCallId(chat);
    out.push_back(std::move(c));
  }
  return !out.empty();
}

bool ToolCallReader::parseMistral(const std::string &text, std::vector<ToolCall> &out) const {
  if (v11) return parseMistralV11(trim(text), out);
  std::string s = trim(text);
  if (s.compare(0, std::strlen(kMistralCalls), kMistralCalls) == 0)
    s = trim(s.substr(std::strlen(kMistralCalls)));
  // A forced call is the one object after the prompt's "[TOOL_CALLS] [".
  if (forced) return parseOne(s, out);
  const ojson v = ojson::parse(s, nullptr, false);
  if (!v.is_array() || v.empty()) return false;
  for (const ojson &call : v)
    if (!parseObject(call, out)) return false;
  return true;
}

std::vector<ToolCall> ToolCallReader::parseCalls(const std::string &text) const {
  std::vector<ToolCall> out;
  if (isChatMl(chat)) {
    // A forced call's opening was in the prompt: the answer starts inside it.
    size_t pos = 0;
    std::string s = forced ? forcedCallPrefix(chat) + text : text;
    while ((pos = s.find_first_not_of(" \t\n\r", pos)) != std::string::npos) {
      if (s.compare(pos, std::strlen(kCallOpen), kCallOpen) != 0) return {};
      pos += std::strlen(kCallOpen);
      const size_t end = s.find(kCallClose, pos);
      if (!parseOne(s.substr(pos, end == std::string::npos ? std::string::npos : end - pos), out))
        return {};
      pos = end == std::string::npos ? s.size() : end + std::strlen(kCallClose);
    }
  } else if (chat == ChatTemplate::mistral) {
    if (!parseMistral(text, out)) return {};
  } else {
    std::string s = trim(text);
    if (s.compare(0, std::strlen(kPythonTag), kPythonTag) == 0)
      s = s.substr(std::strlen(kPythonTag));
    if (!parseOne(s, out)) { // several calls, as Llama 3.1 joins them: "; "
      out.clear();
      size_t from = 0;
      for (size_t at; (at = s.find(';', from)) != std::string::npos || from < s.size();) {
        if (at == std::string::npos) at = s.size();
        if (!parseOne(s.substr(from, at - from), out)) return {};
        from = at + 1;
      }
    }
  }
  if (!parallel && out.size() > 1) out.resize(1);
  return out;
}

} // namespace kvplan::server
