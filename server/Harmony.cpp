// gpt-oss's chat template (chat_template.jinja in its Hugging Face
// repository) written natively, whitespace and all: its TypeScript
// rendering of a tool's parameters keeps the template's every newline and
// indent, since the model was trained on what the template writes.
#include "server/Harmony.h"

#include "server/Jinja.h"
#include "server/ToolCalls.h"

#include <algorithm>
#include <ctime>

namespace kvplan::server {

namespace {

using ojson = nlohmann::ordered_json;

const char *const kChannelTagsContent =
    "You have passed a message containing <|channel|> tags in the content field. Instead of "
    "doing this, you should pass analysis messages (the string between '<|message|>' and "
    "'<|end|>') in the 'thinking' field, and final messages (the string between '<|message|>' "
    "and '<|end|>') in the 'content' field.";
const char *const kChannelTagsThinking =
    "You have passed a message containing <|channel|> tags in the thinking field. Instead of "
    "doing this, you should pass analysis messages (the string between '<|message|>' and "
    "'<|end|>') in the 'thinking' field, and final messages (the string between '<|message|>' "
    "and '<|end|>') in the 'content' field.";

/// A value as Python's str() writes it (jinja2's join and "+" on strings).
std::string pythonStr(const ojson &v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "True" : "False";
  if (v.is_null()) return "None";
  return pythonJsonDumps(v);
}

/// Jinja's truth of a member: present, and not false, null, 0, "" or empty.
bool truthy(const ojson &spec, const char *key) {
  const auto it = spec.find(key);
  if (it == spec.end() || it->is_null()) return false;
  if (it->is_boolean()) return it->get<bool>();
  if (it->is_number()) return it->get<double>() != 0;
  if (it->is_string() || it->is_array() || it->is_object()) return !it->empty();
  return true;
}

bool isType(const ojson &spec, const char *type) {
  const auto it = spec.find("type");
  return it != spec.end() && it->is_string() && it->get<std::string>() == type;
}

std::string nullable(const ojson &spec) { return truthy(spec, "nullable") ? " | null" : ""; }

std::string tsType(const ojson &spec);

/// The template's render_typescript_type for an array.
std::string arrayType(const ojson &spec) {
  if (!spec.contains("items")) return "any[]" + nullable(spec);
  const ojson &items = spec["items"];
  std::string out;
  if (isType(items, "string")) out = "string[]";
  else if (isType(items, "number") || isType(items, "integer")) out = "number[]";
  else if (isType(items, "boolean")) out = "boolean[]";
  else {
    const std::string inner = tsType(items);
    out = inner == "object | object" || inner.size() > 50 ? "any[]" : inner + "[]";
  }
  return out + nullable(spec);
}

/// oneOf's variants, each with its description and default as the
/// template writes them (its indents included). Its test for object
/// variants sets a variable inside a loop, which Jinja does not carry out
/// of it: every oneOf is written out.
std::string oneOfType(const ojson &spec) {
  std::string out;
  const ojson &variants = spec["oneOf"];
  for (size_t i = 0; i < variants.size(); ++i) {
    const ojson &v = variants[i];
    out += tsType(v);
    if (v.is_object() && truthy(v, "description"))
      out += "// " + pythonStr(v["description"]);
    if (v.is_object() && v.contains("default"))
      out += std::string(20, ' ') + "// default: " + pythonJsonDumps(v["default"]);
    if (i + 1 < variants.size()) out += " | \n";
  }
  return out;
}

std::string objectType(const ojson &spec) {
  if (!truthy(spec, "properties")) return "object";
  const ojson required = spec.contains("required") && spec["required"].is_array()
                             ? spec["required"] : ojson::array();
  std::string out = "{\n";
  const ojson &props = spec["properties"];
  for (auto it = props.begin(); it != props.end(); ++it) {
    if (it != props.begin()) out += ", ";
    out += it.key();
    if (std::find(required.begin(), required.end(), ojson(it.key())) == required.end()) out += "?";
    out += ": \n" + std::string(16, ' ') + tsType(it.value());
  }
  return out + "}";
}

/// The template's render_typescript_type.
std::string tsType(const ojson &spec) {
  if (!spec.is_object()) return "any";
  if (isType(spec, "array")) return arrayType(spec);
  const auto type = spec.find("type");
  if (type != spec.end() && type->is_array() && !type->empty()) {
    std::string out;
    for (size_t i = 0; i < type->size(); ++i) out += (i ? " | " : "") + pythonStr((*type)[i]);
    return out;
  }
  if (truthy(spec, "oneOf")) return oneOfType(spec);
  if (isType(spec, "string")) {
    if (!truthy(spec, "enum")) return "string" + nullable(spec);
    std::string out = "\"";
    const ojson &values = spec["enum"];
    for (size_t i = 0; i < values.size(); ++i)
      out += (i ? "\" | \"" : "") + pythonStr(values[i]);
    return out + "\"";
  }
  if (isType(spec, "number") || isType(spec, "integer")) return "number";
  if (isType(spec, "boolean")) return "boolean";
  if (isType(spec, "object")) return objectType(spec);
  return "any";
}

/// A tool as the template's render_tool_namespace writes it.
std::string toolType(const ToolFunction &tool) {
  std::string out;
  if (!tool.description.empty()) out += "// " + tool.description + "\n";
  out += "type " + tool.name + " = ";
  const ojson &params = tool.parameters;
  if (!tool.hasParameters || !params.is_object() || !truthy(params, "properties"))
    return out + "() => any;\n\n";
  const ojson required = params.contains("required") && params["required"].is_array()
                             ? params["required"] : ojson::array();
  out += "(_: {\n";
  const ojson &props = params["properties"];
  for (auto it = props.begin(); it != props.end(); ++it) {
    const ojson &spec = it.value();
    if (spec.is_object() && truthy(spec, "description"))
      out += "// " + pythonStr(spec["description"]) + "\n";
    out += it.key();
    if (std::find(required.begin(), required.end(), ojson(it.key())) == required.end()) out += "?";
    out += ": " + tsType(spec);
    if (spec.is_object() && spec.contains("default")) {
      if (truthy(spec, "enum")) out += ", // default: " + pythonStr(spec["default"]);
      else if (truthy(spec, "oneOf")) out += "// default: " + pythonStr(spec["default"]);
      else out += ", // default: " + pythonJsonDumps(spec["default"]);
    }
    out += ",\n";
  }
  return out + "}) => any;\n\n";
}

std::string kwarg(const ojson &kwargs, const char *key, const char *otherwise) {
  const auto it = kwargs.is_object() ? kwargs.find(key) : kwargs.end();
  return it != kwargs.end() && it->is_string() ? it->get<std::string>() : otherwise;
}

ChatPiece text(std::string s) { return {ChatPiece::text, std::move(s)}; }
ChatPiece marker(const char *s) { return {ChatPiece::marker, s}; }

/// <|start|>{head}<|message|>{body}{end}, with <|channel|> where the head
/// names one ("assistant<|channel|>final").
void message(std::vector<ChatPiece> &out, const std::string &role, const std::string &channel,
             const std::string &body, const char *end) {
  out.push_back(marker("<|start|>"));
  out.push_back(text(role));
  if (!channel.empty()) {
    out.push_back(marker("<|channel|>"));
    out.push_back(text(channel));
  }
  out.push_back(marker("<|message|>"));
  out.push_back(text(body));
  out.push_back(marker(end));
}

std::string systemText(const ojson &kwargs, bool tools, const std::string &date) {
  return kwarg(kwargs, "model_identity",
               "You are ChatGPT, a large language model trained by OpenAI.") +
         "\nKnowledge cutoff: 2024-06\nCurrent date: " + date + "\n\nReasoning: " +
         kwarg(kwargs, "reasoning_effort", "medium") +
         "\n\n# Valid channels: analysis, commentary, final. Channel must be included for "
         "every message." +
         (tools ? "\nCalls to these tools must go to the commentary channel: 'functions'." : "");
}

std::string developerText(const std::string &instructions, const std::vector<ToolFunction> &tools) {
  std::string out;
  if (!instructions.empty()) out += "# Instructions\n\n" + instructions + "\n\n";
  if (tools.empty()) return out;
  out += "# Tools\n\n## functions\n\nnamespace functions {\n\n";
  for (const ToolFunction &t : tools) out += toolType(t);
  return out + "} // namespace functions";
}

bool hasChannelTags(const std::string &s) {
  return s.find("<|channel|>analysis<|message|>") != std::string::npos ||
         s.find("<|channel|>final<|message|>") != std::string::npos;
}

/// An assistant message with calls: its thought (or its content, standing
/// for one) unless a later answer without calls follows, then its first
/// call (the template writes one a message).
void renderCall(std::vector<ChatPiece> &out, const std::vector<ChatMessage> &m, size_t i,
                std::string &lastCall) {
  const ChatMessage &msg = m[i];
  bool finalLater = false;
  for (size_t j = i + 1; j < m.size(); ++j)
    finalLater = finalLater || (m[j].role == "assistant" && m[j].toolCalls.empty());
  const std::string thinking = msg.reasoning.value_or("");
  if (!msg.content.empty() && !thinking.empty())
    throw badField("messages", "Cannot pass both content and thinking in an assistant message "
                               "with tool calls! Put the analysis message in one or the other, "
                               "but not both.");
  const std::string &analysis = msg.content.empty() ? thinking : msg.content;
  if (!analysis.empty() && !finalLater)
    message(out, "assistant", "analysis", analysis, "<|end|>");
  const ToolCall &c = msg.toolCalls[0];
  const ojson args = ojson::parse(c.arguments, nullptr, false);
  if (args.is_discarded())
    throw badField("messages", "messages[" + std::to_string(i) + "].tool_calls: the arguments "
                               "of '" + c.name + "' are not JSON");
  message(out, "assistant to=functions." + c.name, "commentary json", pythonJsonDumps(args),
          "<|call|>");
  lastCall = c.name;
}

} // namespace

std::vector<ChatPiece> renderHarmony(const std::vector<ChatMessage> &messages,
                                     const std::vector<ToolFunction> &tools, const ojson &kwargs,
                                     bool generation, const std::string &date) {
  std::vector<ChatPiece> out;
  message(out, "system", "", systemText(kwargs, !tools.empty(), date), "<|end|>");
  const bool first = !messages.empty() && messages[0].role == "system";
  const std::string instructions = first ? messages[0].content : "";
  if (!instructions.empty() || !tools.empty())
    message(out, "developer", "", developerText(instructions, tools), "<|end|>");
  std::vector<ChatMessage> m(messages.begin() + (first ? 1 : 0), messages.end());
  std::string lastCall; // the name a tool result is written with
  for (size_t i = 0; i < m.size(); ++i) {
    const ChatMessage &msg = m[i];
    if (msg.role == "user") {
      message(out, "user", "", msg.content, "<|end|>");
    } else if (msg.role == "tool") {
      if (lastCall.empty())
        throw badField("messages", "Message has tool role, but there was no previous assistant "
                                   "message with a tool call!");
      message(out, "functions." + lastCall + " to=assistant", "commentary",
              pythonJsonDumps(ojson(msg.content)), "<|end|>");
    } else if (msg.role == "assistant") {
      if (hasChannelTags(msg.content)) throw badField("messages", kChannelTagsContent);
      if (msg.reasoning && hasChannelTags(*msg.reasoning))
        throw badField("messages", kChannelTagsThinking);
      if (!msg.toolCalls.empty()) {
        renderCall(out, m, i, lastCall);
      } else if (i + 1 == m.size() && !generation) {
        // An answer to train on: its thought, then the final ending the turn.
        if (msg.reasoning) message(out, "assistant", "analysis", *msg.reasoning, "<|end|>");
        message(out, "assistant", "final", msg.content, "<|return|>");
      } else {
        message(out, "assistant", "final", msg.content, "<|end|>");
        lastCall.clear();
      }
    }
  }
  if (generation) {
    out.push_back(marker("<|start|>"));
    out.push_back(text("assistant"));
  }
  return out;
}

std::string harmonyToday() {
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  char buf[16];
  return std::string(buf, std::strftime(buf, sizeof buf, "%Y-%m-%d", &local));
}

std::string harmonyEffort(const std::string &e) {
  if (e == "none" || e == "minimal") return "low";
  if (e == "xhigh") return "high";
  return e;
}

void checkHarmonyKwargs(const ojson &kwargs) {
  for (auto it = kwargs.begin(); it != kwargs.end(); ++it) {
    const std::string &key = it.key();
    if (key == "enable_thinking") continue; // gpt-oss always thinks: read, not acted on
    if (key != "reasoning_effort" && key != "model_identity")
      throw badField("chat_template_kwargs",
                     "chat_template_kwargs." + key + " is not offered: this server's chat "
                     "template is kvplan's built-in harmony, which takes reasoning_effort, "
                     "model_identity and enable_thinking (a model's own Jinja template takes "
                     "any: start the server with --chat-template FILE)");
    if (!it->is_string())
      throw badField("chat_template_kwargs",
                     "chat_template_kwargs." + key + " must be a string");
  }
}

std::vector<ChatPiece> harmonyOpening(const std::string &tool) {
  if (tool.empty()) return {marker("<|channel|>"), text("final"), marker("<|message|>")};
  return {text(" to=functions." + tool), marker("<|channel|>"), text("commentary json"),
          marker("<|message|>")};
}

std::shared_ptr<const JsonSchema> harmonyCallSchema(const ApiRequest &a, const std::string &tool) {
  for (size_t i = 0; i < a.tools.size(); ++i) {
    const ToolFunction &f = a.tools[i];
    if (f.name != tool) continue;
    try {
      return JsonSchema::compile(f.hasParameters ? f.parameters
                                                 : ojson{{"type", "object"},
                                                         {"properties", ojson::object()}},
                                 "tools[" + std::to_string(i) + "].function.parameters");
    } catch (const InputError &e) {
      throw badField("tools", e.what());
    }
  }
  throw badField("tool_choice", "tool_choice names '" + tool + "', which is not among the tools");
}

HarmonyTokens HarmonyTokens::of(const Tokenizer &tok) {
  HarmonyTokens t;
  t.start = tok.specialTokenId("<|start|>");
  t.end = tok.specialTokenId("<|end|>");
  t.message = tok.specialTokenId("<|message|>");
  t.channel = tok.specialTokenId("<|channel|>");
  t.constrain = tok.specialTokenId("<|constrain|>");
  t.ret = tok.specialTokenId("<|return|>");
  t.call = tok.specialTokenId("<|call|>");
  return t;
}

HarmonyReader::HarmonyReader(HarmonyTokens tokens, std::vector<std::string> tools, bool parallel)
    : t(tokens), names(std::move(tools)), parallel(parallel) {}

void HarmonyReader::beginInCall(const std::string &name) {
  inBody = spoke = true;
  where = Route::call;
  callName = name;
}

void HarmonyReader::beginInFinal() {
  inBody = spoke = true;
  where = Route::content;
}

namespace {

/// The word after `at` in `s` (to the next space or tag).
std::string wordAt(const std::string &s, size_t at) {
  const size_t end = s.find_first_of(" \t\n<", at);
  return s.substr(at, end == std::string::npos ? std::string::npos : end - at);
}

} // namespace

void HarmonyReader::open() {
  // "assistant<|channel|>analysis", "assistant to=functions.f<|channel|>
  // commentary json", "<|channel|>commentary to=functions.f <|constrain|>json"
  std::string channel, recipient;
  const size_t c = header.find("<|channel|>");
  if (c != std::string::npos) channel = wordAt(header, c + 11);
  for (size_t to = header.find("to="); to != std::string::npos; to = header.find("to=", to + 1))
    if (to == 0 || std::string(" \t\n>").find(header[to - 1]) != std::string::npos) {
      recipient = wordAt(header, to + 3);
      break;
    }
  header.clear();
  inBody = spoke = true;
  held.clear();
  if (!recipient.empty() && !names.empty()) {
    where = Route::call;
    callName = recipient.compare(0, 10, "functions.") == 0 ? recipient.substr(10) : recipient;
  } else if (channel == "analysis") {
    where = Route::reasoning;
  } else {
    where = Route::content;
  }
}

void HarmonyReader::close() {
  inBody = false;
  reasoned = reasoned || thinking;
  thinking = false;
  if (where != Route::call) return;
  const ojson args = ojson::parse(held, nullptr, false);
  const bool offered = std::find(names.begin(), names.end(), callName) != names.end();
  if (offered && args.is_object() && (parallel || calls.empty())) {
    calls.push_back({newCallId(ChatTemplate::harmony), callName, held});
  } else if (!(offered && args.is_object())) {
    given += held; // not a call of an offered tool: the text it wrote
  }
  held.clear();
}

ReasoningReader::Split HarmonyReader::route(const std::string &text) {
  ReasoningReader::Split out;
  if (where == Route::call) held += text;
  else if (where == Route::reasoning) out.reasoning = text;
  else out.content = text;
  return out;
}

ReasoningReader::Split HarmonyReader::feed(int32_t token, const std::string &text) {
  // (An event without a token carries held text: a stop string's, at the end.)
  auto is = [&](int32_t id) { return token >= 0 && token == id; };
  if (done) return {};
  if (is(t.ret) || is(t.call)) {
    if (inBody) close();
    done = is(t.ret);
    return {};
  }
  if (!inBody) {
    if (is(t.start)) header.clear();
    else if (is(t.channel)) header += "<|channel|>";
    else if (is(t.constrain)) header += "<|constrain|>";
    else if (is(t.message)) open();
    else if (!is(t.end)) {
      header += text;
      if (!spoke) unspoken += text;
    }
    return {};
  }
  if (is(t.end)) {
    close();
    return {};
  }
  if (is(t.start) || is(t.channel) || is(t.message) || is(t.constrain))
    return {}; // out of place in a message's text: not text
  ReasoningReader::Split out = route(text);
  if (!out.reasoning.empty()) {
    if (reasoned && !thinking) out.reasoning = "\n" + out.reasoning;
    thinking = true;
  }
  return out;
}

HarmonyReader::Result HarmonyReader::finish() {
  Result r;
  if (inBody) close();
  if (!spoke) r.content = unspoken; // no message came: the model did not write harmony
  r.content += given;
  r.calls = std::move(calls);
  return r;
}

} // namespace kvplan::server
