// Request checking and response building for the OpenAI API: field names,
// types, defaults and ranges follow OpenAI's API reference; what kvplan
// does not do (best_of other than n, a JSON schema keyword it cannot hold
// generation to, tools of another type than function, the sampling fields
// of vLLM and llama.cpp it lacks) is refused by name rather than ignored,
// so that a client never gets silently different sampling.
#include "server/OpenAiProtocol.h"

#include "runtime/JsonSchema.h"
#include "support/Error.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <regex>
#include <set>

namespace kvplan::server {

using json = nlohmann::json;

ApiError::ApiError(int status, const std::string &message, std::string param, std::string type,
                   std::string code)
    : std::runtime_error(message), status(status), type(std::move(type)),
      param(std::move(param)), code(std::move(code)) {
  if (this->type.empty())
    this->type = status >= 500 ? "server_error" : "invalid_request_error";
}

OutJson ApiError::body() const {
  auto orNull = [](const std::string &s) { return s.empty() ? OutJson(nullptr) : OutJson(s); };
  return {{"error", {{"message", what()}, {"type", type}, {"param", orNull(param)},
                     {"code", orNull(code)}}}};
}

ApiError badField(const std::string &param, const std::string &message) {
  return ApiError(400, message, param);
}

namespace {

std::string show(double v) {
  json j = v;
  return j.dump();
}

/// The body's fields by name; a field set to null counts as not given, as
/// in OpenAI's API.
class Fields {
public:
  explicit Fields(const json &j) : j(j) {}

  const json *get(const char *name) const {
    auto it = j.find(name);
    return it == j.end() || it->is_null() ? nullptr : &*it;
  }
  std::optional<double> number(const char *name) const {
    const json *v = get(name);
    if (!v) return std::nullopt;
    if (!v->is_number()) throw badField(name, std::string(name) + " must be a number");
    return v->get<double>();
  }
  std::optional<int64_t> integer(const char *name) const {
    const json *v = get(name);
    if (!v) return std::nullopt;
    if (v->is_number_integer()) return v->get<int64_t>();
    // 16.0 is an integer to JSON's reader in most clients; 16.5 is not.
    if (v->is_number_float() && std::floor(v->get<double>()) == v->get<double>() &&
        std::fabs(v->get<double>()) < 9e15)
      return int64_t(v->get<double>());
    throw badField(name, std::string(name) + " must be an integer");
  }
  std::optional<bool> boolean(const char *name) const {
    const json *v = get(name);
    if (!v) return std::nullopt;
    if (!v->is_boolean()) throw badField(name, std::string(name) + " must be true or false");
    return v->get<bool>();
  }
  std::optional<std::string> string(const char *name) const {
    const json *v = get(name);
    if (!v) return std::nullopt;
    if (!v->is_string()) throw badField(name, std::string(name) + " must be a string");
    return v->get<std::string>();
  }

private:
  const json &j;
};

/// The deepest nesting of arrays and objects in JSON text (strings skipped).
size_t jsonNesting(const std::string &text) {
  size_t depth = 0, deepest = 0;
  bool inString = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (inString) {
      if (c == '\\') ++i;
      else if (c == '"') inString = false;
    } else if (c == '"') {
      inString = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

/// How deep a body may nest: the readers of schemas, tools and templates
/// walk it recursively.
constexpr size_t kMaxNesting = 128;

json parseBody(const std::string &body) {
  if (jsonNesting(body) > kMaxNesting)
    throw ApiError(400, "the body nests arrays and objects more than " +
                            std::to_string(kMaxNesting) + " deep");
  json j;
  try {
    j = json::parse(body);
  } catch (const json::exception &e) {
    throw ApiError(400, std::string("the body is not valid JSON: ") + e.what());
  }
  if (!j.is_object()) throw ApiError(400, "the body must be a JSON object");
  return j;
}

/// An array of token ids; throws naming `field`, with `shape`, otherwise.
std::vector<int32_t> tokenIdArray(const json &ids, const char *field, const char *shape) {
  if (!ids.is_array()) throw badField(field, shape);
  std::vector<int32_t> out;
  for (const json &t : ids) {
    if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() > INT32_MAX)
      throw badField(field, shape);
    out.push_back(int32_t(t.get<int64_t>()));
  }
  return out;
}

void parseStop(const Fields &f, ApiRequest &r) {
  const json *v = f.get("stop");
  if (!v) return;
  if (v->is_string()) {
    r.stop.push_back(v->get<std::string>());
  } else if (v->is_array()) {
    if (v->size() > 4) throw badField("stop", "stop takes at most 4 sequences");
    for (const json &s : *v) {
      if (!s.is_string()) throw badField("stop", "stop must be a string or an array of strings");
      r.stop.push_back(s.get<std::string>());
    }
  } else {
    throw badField("stop", "stop must be a string or an array of strings");
  }
  for (const std::string &s : r.stop)
    if (s.empty()) throw badField("stop", "a stop sequence is empty");
}

/// {"token id": bias in [-100, 100], ...}; the ids are checked against the
/// vocabulary later.
void parseLogitBias(const json &b, ApiRequest &r) {
  if (!b.is_object())
    throw badField("logit_bias", "logit_bias must be an object of token ids to biases");
  for (const auto &[key, value] : b.items()) {
    size_t end = 0;
    long long id = -1;
    try {
      id = std::stoll(key, &end);
    } catch (const std::exception &) {
      end = 0;
    }
    if (end == 0 || end != key.size() || id < 0 || id > INT32_MAX)
      throw badField("logit_bias", "logit_bias key '" + key + "' is not a token id");
    if (!value.is_number() || !(std::fabs(value.get<double>()) <= 100))
      throw badField("logit_bias", "logit_bias for token " + key +
                                       " must be a number from -100 to 100");
    r.sampling.logitBias.push_back({int32_t(id), value.get<double>()});
  }
}

/// vLLM's bad_words: a string or an array of up to kMaxBadWords strings,
/// each with more than white space.
void parseBadWords(const Fields &f, ApiRequest &r) {
  const json *v = f.get("bad_words");
  if (!v) return;
  const char *shape = "bad_words must be a string or an array of strings";
  if (v->is_string()) {
    r.badWords.push_back(v->get<std::string>());
  } else if (v->is_array()) {
    if (v->size() > kMaxBadWords)
      throw badField("bad_words", "bad_words takes at most " + std::to_string(kMaxBadWords) +
                                      " words, got " + std::to_string(v->size()));
    for (const json &w : *v) {
      if (!w.is_string()) throw badField("bad_words", shape);
      r.badWords.push_back(w.get<std::string>());
    }
  } else {
    throw badField("bad_words", shape);
  }
  for (const std::string &w : r.badWords)
    if (w.find_first_not_of(" \t\n\r\f\v") == std::string::npos)
      throw badField("bad_words", "a bad word is empty or only white space");
}

/// vLLM's extensions: min_p, min_tokens, allowed_token_ids, stop_token_ids,
/// include_stop_str_in_output, prompt_logprobs and bad_words (the ids are
/// checked against the vocabulary later, min_tokens against max_tokens once
/// its default is known, bad_words tokenized by the server).
void parseVllmSampling(const Fields &f, ApiRequest &r) {
  if (auto p = f.number("min_p")) {
    if (!(*p >= 0 && *p <= 1))
      throw badField("min_p", "min_p must be from 0 (off) to 1, got " + show(*p));
    r.sampling.minP = *p;
  }
  if (auto n = f.integer("min_tokens")) {
    if (*n < 0)
      throw badField("min_tokens", "min_tokens must be 0 or more, got " + std::to_string(*n));
    r.sampling.minTokens = *n;
  }
  if (const json *ids = f.get("allowed_token_ids")) {
    r.sampling.allowedTokens = tokenIdArray(*ids, "allowed_token_ids",
                                            "allowed_token_ids must be an array of token ids");
    if (r.sampling.allowedTokens.empty())
      throw badField("allowed_token_ids", "allowed_token_ids must list at least one token");
  }
  if (const json *ids = f.get("stop_token_ids"))
    r.stopTokenIds =
        tokenIdArray(*ids, "stop_token_ids", "stop_token_ids must be an array of token ids");
  r.includeStop = f.boolean("include_stop_str_in_output").value_or(false);
  if (const json *l = f.get("prompt_logprobs"); l && !l->is_null()) {
    if (!l->is_number_integer() || l->get<int64_t>() < 0 || l->get<int64_t>() > kMaxTopLogprobs)
      throw badField("prompt_logprobs", "prompt_logprobs must be an integer from 0 to " +
                                            std::to_string(kMaxTopLogprobs) +
                                            " (the most likely tokens listed beside each)");
    r.vllmPromptLogprobs = l->get<int64_t>();
  }
  parseBadWords(f, r);
}

void parseSampling(const Fields &f, ApiRequest &r) {
  if (auto t = f.number("temperature")) {
    if (!(*t >= 0 && *t <= 2))
      throw badField("temperature", "temperature must be between 0 and 2, got " + show(*t));
    r.sampling.temperature = *t;
  }
  if (auto p = f.number("top_p")) {
    if (!(*p > 0 && *p <= 1))
      throw badField("top_p", "top_p must be greater than 0 and at most 1, got " + show(*p));
    r.sampling.topP = *p;
  }
  if (auto k = f.integer("top_k")) {
    // -1 is vLLM's "no limit", as 0 is kvplan's.
    if (*k < -1) throw badField("top_k", "top_k must be -1, 0 (no limit) or positive");
    r.sampling.topK = *k < 0 ? 0 : *k;
  }
  if (auto s = f.integer("seed")) {
    r.sampling.seed = uint64_t(*s);
    r.seedGiven = true;
  }
  for (auto [name, value] : {std::pair<const char *, double *>{"presence_penalty",
                                                                 &r.sampling.presencePenalty},
                              {"frequency_penalty", &r.sampling.frequencyPenalty}})
    if (auto p = f.number(name)) {
      if (!(*p >= -2 && *p <= 2))
        throw badField(name, std::string(name) + " must be between -2 and 2, got " + show(*p));
      *value = *p;
    }
  if (auto p = f.number("repetition_penalty")) { // vLLM's
    if (!(*p > 0))
      throw badField("repetition_penalty",
                     "repetition_penalty must be above 0 (1: none), got " + show(*p));
    r.sampling.repetitionPenalty = *p;
  }
  if (auto n = f.integer("n")) {
    if (*n < 1 || *n > kMaxChoices)
      throw badField("n", "n must be from 1 to " + std::to_string(kMaxChoices) + ", got " +
                              std::to_string(*n));
    r.n = *n;
  }
  if (const json *b = f.get("logit_bias")) parseLogitBias(*b, r);
  parseStop(f, r);
  parseVllmSampling(f, r);
}

/// response_format json_schema: {"type": "json_schema", "json_schema": {"name":
/// ..., "schema": {...}, "strict": ...}}. The schema is read again from the
/// body, keeping its properties in the order written (they are generated
/// so); no schema is any object. kvplan always holds generation to the
/// schema, so strict false asks for nothing less.
std::shared_ptr<const JsonSchema> parseJsonSchema(const json &rf, const std::string &body) {
  const char *shape = "response_format json_schema is {\"type\": \"json_schema\", "
                      "\"json_schema\": {\"name\": \"...\", \"schema\": {...}}}";
  if (!rf.contains("json_schema") || !rf["json_schema"].is_object())
    throw badField("response_format", shape);
  const json &js = rf["json_schema"];
  if (js.contains("name") && !js["name"].is_string())
    throw badField("response_format", "response_format.json_schema.name must be a string");
  if (js.contains("strict") && !js["strict"].is_boolean() && !js["strict"].is_null())
    throw badField("response_format", "response_format.json_schema.strict must be a boolean");
  if (!js.contains("schema") || js["schema"].is_null())
    return JsonSchema::compile(nlohmann::ordered_json::object(), "response_format.json_schema");
  const auto ordered = nlohmann::ordered_json::parse(body);
  try {
    return JsonSchema::compile(ordered["response_format"]["json_schema"]["schema"],
                               "response_format.json_schema.schema");
  } catch (const InputError &e) {
    throw badField("response_format", e.what());
  }
}

void parseResponseFormat(const json &rf, const std::string &body, ApiRequest &r) {
  const json *t = rf.is_object() && rf.contains("type") ? &rf["type"] : nullptr;
  const std::string type = t && t->is_string() ? t->get<std::string>() : "";
  if (type == "json_object" || type == "json_schema")
    r.jsonObject = true;
  else if (type != "text")
    throw badField("response_format", "response_format must be {\"type\": \"text\"}, "
                                      "{\"type\": \"json_object\"} or {\"type\": "
                                      "\"json_schema\", \"json_schema\": {...}}");
  if (type == "json_schema") r.jsonSchema = parseJsonSchema(rf, body);
}

/// Fields of vLLM's and llama.cpp's servers that kvplan serve does not
/// offer: refused by name when they ask for anything but what it does (a
/// neutral value, e.g. skip_special_tokens true, passes), so a client
/// written for those servers never gets silently different sampling.
void refuseUnoffered(const Fields &f) {
  struct Unoffered {
    const char *name;
    json neutral; // null: every value asks for something
    const char *instead;
  };
  static const Unoffered fields[] = {
      {"skip_special_tokens", true, ""},
      {"spaces_between_special_tokens", true, ""},
      {"use_beam_search", false, ""},
      {"length_penalty", 1, ""},
      {"truncate_prompt_tokens", json(), ""},
      {"guided_json", json(), "; use response_format json_schema"},
      {"guided_regex", json(), ""},
      {"guided_choice", json(), "; response_format json_schema with an enum does it as JSON"},
      {"guided_grammar", json(), ""},
      {"structured_outputs", json(), "; use response_format json_schema"},
      {"typical_p", 1, ""},
      {"tfs_z", 1, ""},
      {"mirostat", 0, ""},
      {"dry_multiplier", 0, ""},
      {"xtc_probability", 0, ""},
      {"repeat_penalty", 1, "; repetition_penalty (vLLM's) applies over the whole prompt and "
                            "answer, not llama.cpp's last 64 tokens"},
  };
  for (const Unoffered &u : fields) {
    const json *v = f.get(u.name);
    if (!v || (!u.neutral.is_null() && *v == u.neutral)) continue;
    const std::string shown = v->dump();
    throw badField(u.name, std::string(u.name) + (shown.size() <= 40 ? " " + shown : "") +
                               " is not offered by kvplan serve" + u.instead);
  }
}

void parseCommon(const json &j, const std::string &body, ApiRequest &r) {
  Fields f(j);
  refuseUnoffered(f);
  if (auto m = f.string("model")) r.model = *m;
  parseSampling(f, r);
  r.stream = f.boolean("stream").value_or(false);
  if (const json *o = f.get("stream_options")) {
    if (!o->is_object()) throw badField("stream_options", "stream_options must be an object");
    if (!r.stream)
      throw badField("stream_options", "stream_options is only allowed when stream is true");
    r.includeUsage = Fields(*o).boolean("include_usage").value_or(false);
  }
  r.ignoreEos = f.boolean("ignore_eos").value_or(false);
  r.returnTokenIds = f.boolean("return_token_ids").value_or(false);
  if (auto user = f.get("user"); user && !user->is_string())
    throw badField("user", "user must be a string");
  if (const json *rf = f.get("response_format"); rf && !rf->is_null())
    parseResponseFormat(*rf, body, r);
}

int64_t positiveTokens(const Fields &f, const char *name) {
  auto n = f.integer(name);
  if (n && *n < 1) throw badField(name, std::string(name) + " must be at least 1");
  return n.value_or(0);
}

/// A prompt of token ids (`ids` an array of integers); throws naming prompt.
std::vector<int32_t> promptIds(const json &ids) {
  return tokenIdArray(ids, "prompt", "prompt must be a string, an array of token ids, or an "
                                     "array holding one of them");
}

void parsePrompt(const Fields &f, ApiRequest &r) {
  const json *p = f.get("prompt");
  if (!p) throw badField("prompt", "prompt is required");
  if (p->is_string()) {
    r.promptText = p->get<std::string>();
    return;
  }
  if (!p->is_array() || p->empty())
    throw badField("prompt", "prompt must be a string, an array of token ids, or an array "
                             "holding one of them");
  const json &first = (*p)[0];
  if (first.is_string() || first.is_array()) {
    if (p->size() > 1)
      throw badField("prompt", "one prompt per request: kvplan serve returns one choice");
    if (first.is_string())
      r.promptText = first.get<std::string>();
    else
      r.promptIds = promptIds(first);
  } else {
    r.promptIds = promptIds(*p);
  }
  if (!r.promptText && r.promptIds.empty()) throw badField("prompt", "the prompt is empty");
}

} // namespace

ApiRequest parseCompletionRequest(const std::string &body) {
  const json j = parseBody(body);
  ApiRequest r;
  parseCommon(j, body, r);
  Fields f(j);
  parsePrompt(f, r);
  r.echo = f.boolean("echo").value_or(false);
  const json *l = f.get("logprobs");
  const bool scoring = (r.echo && l && l->is_number_integer()) || r.vllmPromptLogprobs >= 0;
  if (auto n = f.integer("max_tokens"); n && *n == 0 && scoring)
    r.maxTokens = 0; // the prompt's log-probabilities alone
  else if (int64_t n = positiveTokens(f, "max_tokens"))
    r.maxTokens = n;
  if (auto b = f.integer("best_of"); b && *b != r.n)
    throw badField("best_of", "best_of must equal n (" + std::to_string(r.n) +
                                  "): kvplan serve returns every choice it generates");
  if (auto s = f.string("suffix"); s && !s->empty())
    throw badField("suffix", "suffix is not supported");
  if (l && !l->is_null()) {
    if (!l->is_number_integer() || l->get<int64_t>() < 0 || l->get<int64_t>() > kMaxTopLogprobs)
      throw badField("logprobs", "logprobs must be an integer from 0 to " +
                                     std::to_string(kMaxTopLogprobs) +
                                     " (the most likely tokens listed beside each token)");
    r.logprobs = l->get<int64_t>();
    if (r.echo) r.promptLogprobs = r.logprobs; // the prompt's tokens' too
  }
  return r;
}

namespace {

/// Whether object `o` has "type": `type` (nlohmann's value() throws when
/// the member is there with another JSON type, e.g. null).
bool hasType(const json &o, const char *type) {
  return o.contains("type") && o["type"].is_string() && o["type"].get<std::string>() == type;
}

/// A message's content: a string, or an array of {"type": "text"} parts.
std::string messageContent(const json &c, const std::string &where) {
  if (c.is_null()) return "";
  if (c.is_string()) return c.get<std::string>();
  if (!c.is_array())
    throw badField(where + ".content", where + ".content must be a string or an array of parts");
  std::string text;
  for (const json &part : c) {
    if (!part.is_object() || !hasType(part, "text") || !part.contains("text") ||
        !part["text"].is_string())
      throw badField(where + ".content",
                     where + ".content: only text parts ({\"type\": \"text\", \"text\": ...}) "
                             "are supported");
    text += part["text"].get<std::string>();
  }
  return text;
}

/// A string member `key` of `o` (at `where`), required or "" when absent.
std::string stringMember(const json &o, const char *key, const std::string &where,
                         bool required) {
  if (!o.contains(key) || o[key].is_null()) {
    if (required) throw badField(where + "." + key, where + "." + key + " is required");
    return "";
  }
  if (!o[key].is_string())
    throw badField(where + "." + key, where + "." + key + " must be a string");
  return o[key].get<std::string>();
}

/// An assistant message's tool_calls: [{"id", "type": "function",
/// "function": {"name", "arguments"}}].
std::vector<ToolCall> parseToolCalls(const json &calls, const std::string &where) {
  if (!calls.is_array()) throw badField(where, where + " must be an array");
  std::vector<ToolCall> out;
  for (size_t k = 0; k < calls.size(); ++k) {
    const std::string at = where + "[" + std::to_string(k) + "]";
    const json &c = calls[k];
    if (!c.is_object() || (c.contains("type") && !hasType(c, "function")) ||
        !c.contains("function") ||
        !c["function"].is_object())
      throw badField(at, at + " must be {\"id\": ..., \"type\": \"function\", \"function\": "
                          "{\"name\": ..., \"arguments\": ...}}");
    ToolCall t;
    t.id = stringMember(c, "id", at, false);
    t.name = stringMember(c["function"], "name", at + ".function", true);
    t.arguments = stringMember(c["function"], "arguments", at + ".function", false);
    if (t.arguments.empty()) t.arguments = "{}";
    out.push_back(std::move(t));
  }
  return out;
}

std::vector<ChatMessage> parseMessages(const Fields &f) {
  const json *m = f.get("messages");
  if (!m) throw badField("messages", "messages is required");
  if (!m->is_array() || m->empty())
    throw badField("messages", "messages must be a non-empty array");
  std::vector<ChatMessage> out;
  for (size_t i = 0; i < m->size(); ++i) {
    const std::string where = "messages[" + std::to_string(i) + "]";
    const json &msg = (*m)[i];
    if (!msg.is_object()) throw badField(where, where + " must be an object");
    if (!msg.contains("role") || !msg["role"].is_string())
      throw badField(where + ".role", where + ".role must be a string");
    std::string role = msg["role"].get<std::string>();
    if (role == "developer") role = "system"; // OpenAI's newer name for it
    if (role != "system" && role != "user" && role != "assistant" && role != "tool")
      throw badField(where + ".role", where + ".role must be system, user, assistant or tool, "
                                              "got '" + role + "'");
    ChatMessage out1;
    out1.role = role;
    out1.content = messageContent(msg.contains("content") ? msg["content"] : json(), where);
    if (role == "assistant" && msg.contains("tool_calls") && !msg["tool_calls"].is_null())
      out1.toolCalls = parseToolCalls(msg["tool_calls"], where + ".tool_calls");
    if (role == "tool") out1.toolCallId = stringMember(msg, "tool_call_id", where, true);
    for (const char *key : {"reasoning_content", "reasoning", "thinking"})
      if (role == "assistant" && !out1.reasoning && msg.contains(key) && !msg[key].is_null())
        out1.reasoning = stringMember(msg, key, where, false);
    out.push_back(std::move(out1));
  }
  return out;
}

/// tools: [{"type": "function", "function": {"name", "description",
/// "parameters"}}], each parameters read again from the body in the order
/// written (the model sees them so).
std::vector<ToolFunction> parseToolList(const json &tools, const std::string &body) {
  if (!tools.is_array()) throw badField("tools", "tools must be an array");
  const auto ordered = nlohmann::ordered_json::parse(body)["tools"];
  std::vector<ToolFunction> out;
  for (size_t i = 0; i < tools.size(); ++i) {
    const std::string where = "tools[" + std::to_string(i) + "]";
    const json &t = tools[i];
    if (!t.is_object() || !hasType(t, "function") || !t.contains("function") ||
        !t["function"].is_object())
      throw badField("tools", where + " must be {\"type\": \"function\", \"function\": "
                              "{\"name\": ..., \"parameters\": {...}}} (kvplan serve calls "
                              "functions only)");
    const json &fn = t["function"];
    ToolFunction f;
    f.name = stringMember(fn, "name", where + ".function", true);
    static const std::regex valid("[A-Za-z0-9_-]{1,64}");
    if (!std::regex_match(f.name, valid))
      throw badField("tools", where + ".function.name must be 1 to 64 letters, digits, _ or -, "
                              "got '" + f.name + "'");
    for (const ToolFunction &before : out)
      if (before.name == f.name)
        throw badField("tools", where + ".function.name: two tools are named '" + f.name + "'");
    f.description = stringMember(fn, "description", where + ".function", false);
    if (fn.contains("parameters") && !fn["parameters"].is_null()) {
      if (!fn["parameters"].is_object())
        throw badField("tools", where + ".function.parameters must be a JSON schema object");
      f.parameters = ordered[i]["function"]["parameters"];
      f.hasParameters = true;
    }
    out.push_back(std::move(f));
  }
  return out;
}

/// A tool_choice other than none needs tools; a named one, one of them.
void checkToolChoice(const ApiRequest &r) {
  if (r.tools.empty() && r.toolChoice != ToolChoice::none)
    throw badField("tool_choice", "tool_choice needs tools");
  if (r.toolChoice == ToolChoice::named &&
      std::none_of(r.tools.begin(), r.tools.end(),
                   [&](const ToolFunction &t) { return t.name == r.toolName; }))
    throw badField("tool_choice", "tool_choice names '" + r.toolName + "', which no tool is");
}

/// tools, tool_choice and parallel_tool_calls.
void parseTools(const Fields &f, const std::string &body, ApiRequest &r) {
  if (const json *t = f.get("tools"); t && !t->is_null()) r.tools = parseToolList(*t, body);
  r.toolChoice = r.tools.empty() ? ToolChoice::none : ToolChoice::automatic;
  if (const json *c = f.get("tool_choice"); c && !c->is_null()) {
    const char *shape = "tool_choice must be \"none\", \"auto\", \"required\" or {\"type\": "
                        "\"function\", \"function\": {\"name\": ...}}";
    if (c->is_string()) {
      const std::string s = c->get<std::string>();
      if (s == "none") r.toolChoice = ToolChoice::none;
      else if (s == "auto") r.toolChoice = ToolChoice::automatic;
      else if (s == "required") r.toolChoice = ToolChoice::required;
      else throw badField("tool_choice", shape);
    } else if (c->is_object() && hasType(*c, "function") && c->contains("function") &&
               (*c)["function"].is_object()) {
      r.toolName = stringMember((*c)["function"], "name", "tool_choice.function", true);
      r.toolChoice = ToolChoice::named;
    } else {
      throw badField("tool_choice", shape);
    }
    checkToolChoice(r);
  }
  r.parallelToolCalls = f.boolean("parallel_tool_calls").value_or(true);
  if (r.toolChoice != ToolChoice::none && r.jsonObject)
    throw badField("response_format", "response_format json_object or json_schema with tools "
                                      "is not supported (a tool call's arguments already follow "
                                      "its parameters when tool_choice is required); leave one "
                                      "out, or give tool_choice none");
}

} // namespace

namespace {

/// chat_template_kwargs: kept for a model's own template, which takes any
/// (the server refuses the others for its built-in templates:
/// checkTemplateKwargs); enable_thinking, which every template reads, is
/// true or false.
template <class Request> void parseTemplateKwargs(const Fields &f, Request &r) {
  const json *k = f.get("chat_template_kwargs");
  if (!k || k->is_null()) return;
  if (!k->is_object())
    throw badField("chat_template_kwargs", "chat_template_kwargs must be an object");
  for (const auto &[key, v] : k->items()) {
    if (key == "enable_thinking" && !v.is_boolean())
      throw badField("chat_template_kwargs",
                     "chat_template_kwargs.enable_thinking must be true or false");
    if (key == "enable_thinking") r.enableThinking = v.template get<bool>();
    r.templateKwargs[key] = v;
  }
}

/// OpenAI's reasoning effort (chat's reasoning_effort, the Responses API's
/// reasoning.effort): none, minimal, low, medium, high or xhigh. A thinking
/// model is asked not to think (enable_thinking false, as Qwen3's template
/// reads it) for none and minimal, unless chat_template_kwargs says; the
/// others leave it thinking, its template's default.
template <class Request>
void parseReasoningEffort(const json *effort, const std::string &param, Request &r) {
  if (!effort || effort->is_null()) return;
  static const std::set<std::string> kEfforts = {"none",   "minimal", "low",
                                                 "medium", "high",    "xhigh"};
  if (!effort->is_string() || !kEfforts.count(effort->get<std::string>()))
    throw badField(param, param + " must be none, minimal, low, medium, high or xhigh");
  const std::string e = effort->get<std::string>();
  r.reasoningEffort = e;
  if (r.enableThinking || (e != "none" && e != "minimal")) return;
  r.enableThinking = false;
  r.templateKwargs["enable_thinking"] = false;
}

/// add_generation_prompt and continue_final_message (vLLM's): both true is
/// refused, as transformers refuses it.
template <class Request> void parseChatEnd(const Fields &f, Request &r) {
  const std::optional<bool> generation = f.boolean("add_generation_prompt");
  const bool continues = f.boolean("continue_final_message").value_or(false);
  if (continues && generation == true)
    throw badField("continue_final_message",
                   "continue_final_message and add_generation_prompt cannot both be true: the "
                   "prompt ends inside the last message or where a new answer begins (give "
                   "add_generation_prompt false, or leave it out)");
  r.chatEnd = continues              ? ChatEnd::continueLastMessage
              : generation == false ? ChatEnd::afterLastMessage
                                    : ChatEnd::generationPrompt;
}

} // namespace

ApiRequest parseChatRequest(const std::string &body) {
  const json j = parseBody(body);
  ApiRequest r;
  r.chat = true;
  parseCommon(j, body, r);
  Fields f(j);
  r.messages = parseMessages(f);
  // max_completion_tokens replaced max_tokens; either is honoured.
  int64_t n = positiveTokens(f, "max_completion_tokens");
  if (n) r.maxTokensField = "max_completion_tokens"; // what a length error names
  if (!n) n = positiveTokens(f, "max_tokens");
  if (n) r.maxTokens = n;
  if (f.boolean("logprobs").value_or(false)) r.logprobs = 0;
  if (const json *t = f.get("top_logprobs"); t && !t->is_null()) {
    if (!t->is_number_integer() || t->get<int64_t>() < 0 || t->get<int64_t>() > kMaxTopLogprobs)
      throw badField("top_logprobs", "top_logprobs must be an integer from 0 to " +
                                         std::to_string(kMaxTopLogprobs));
    if (r.logprobs < 0)
      throw badField("top_logprobs", "top_logprobs needs \"logprobs\": true");
    r.logprobs = t->get<int64_t>();
  }
  parseTools(f, body, r);
  parseTemplateKwargs(f, r);
  parseReasoningEffort(f.get("reasoning_effort"), "reasoning_effort", r);
  parseChatEnd(f, r);
  if (r.chatEnd != ChatEnd::generationPrompt &&
      (r.toolChoice == ToolChoice::required || r.toolChoice == ToolChoice::named))
    throw badField("tool_choice", "a tool_choice that forces a call begins the answer with it, "
                                  "so the prompt must end where a new answer begins: leave out "
                                  "add_generation_prompt false and continue_final_message");
  return r;
}

namespace {

/// A Responses content list's text: a string, or parts of the given types
/// ({"type": "input_text" or "output_text", "text": ...}).
std::string responsesText(const json &c, const std::string &where) {
  if (c.is_string()) return c.get<std::string>();
  if (!c.is_array())
    throw badField("input", where + " must be a string or an array of content parts");
  std::string text;
  for (size_t k = 0; k < c.size(); ++k) {
    const json &part = c[k];
    const std::string at = where + "[" + std::to_string(k) + "]";
    if (!part.is_object() || !(hasType(part, "input_text") || hasType(part, "output_text") ||
                               hasType(part, "text")))
      throw badField("input", at + ": only text parts ({\"type\": \"input_text\", \"text\": "
                              "...}) are supported (kvplan serve reads text)");
    text += stringMember(part, "text", at, true);
  }
  return text;
}

/// The assistant message calls and reasoning are added to: the last one
/// when it is the assistant's and says nothing after them, else a new one.
ChatMessage &assistantTurn(std::vector<ChatMessage> &out) {
  if (out.empty() || out.back().role != "assistant") out.push_back({"assistant", ""});
  return out.back();
}

/// One item of `input` (at `where`), appended to the chat `out`.
void responsesItem(const json &item, const std::string &where, std::vector<ChatMessage> &out) {
  if (!item.is_object()) throw badField("input", where + " must be an object");
  const std::string type = item.contains("type") && item["type"].is_string()
                               ? item["type"].get<std::string>()
                               : item.contains("role") ? "message" : "";
  if (type == "message") {
    std::string role = stringMember(item, "role", where, true);
    if (role == "developer") role = "system";
    if (role != "system" && role != "user" && role != "assistant")
      throw badField("input", where + ".role must be user, assistant, system or developer, "
                                      "got '" + role + "'");
    const std::string text = responsesText(item.contains("content") ? item["content"] : json(""),
                                            where + ".content");
    if (role == "assistant" && !out.empty() && out.back().role == "assistant" &&
        out.back().content.empty() && out.back().toolCalls.empty())
      out.back().content = text; // after its reasoning
    else
      out.push_back({role, text});
  } else if (type == "function_call") {
    ToolCall c{stringMember(item, "call_id", where, true), stringMember(item, "name", where, true),
               stringMember(item, "arguments", where, false)};
    if (c.arguments.empty()) c.arguments = "{}";
    assistantTurn(out).toolCalls.push_back(std::move(c));
  } else if (type == "function_call_output") {
    ChatMessage m{"tool", responsesText(item.contains("output") ? item["output"] : json(""),
                                        where + ".output")};
    m.toolCallId = stringMember(item, "call_id", where, true);
    out.push_back(std::move(m));
  } else if (type == "reasoning") {
    std::string text;
    for (const char *key : {"content", "summary"})
      if (text.empty() && item.contains(key) && item[key].is_array())
        for (const json &p : item[key])
          if (p.is_object() && p.contains("text") && p["text"].is_string())
            text += p["text"].get<std::string>();
    ChatMessage &turn = assistantTurn(out);
    if (!turn.content.empty() || !turn.toolCalls.empty()) out.push_back({"assistant", ""});
    if (!text.empty()) out.back().reasoning = text; // (an encrypted one has none)
  } else if (type == "item_reference") {
    throw badField("input", where + ": an item_reference names a stored item, and kvplan serve "
                                    "stores none; send the item itself");
  } else {
    throw badField("input", where + ".type must be message, function_call, "
                                    "function_call_output or reasoning" +
                                (type.empty() ? std::string() : ", got '" + type + "'"));
  }
}

/// input and instructions as chat messages (instructions first, a system
/// message, as OpenAI puts them before the conversation).
std::vector<ChatMessage> responsesInput(const Fields &f) {
  std::vector<ChatMessage> out;
  if (auto i = f.string("instructions")) out.push_back({"system", *i});
  const json *input = f.get("input");
  if (!input) throw badField("input", "input is required");
  if (input->is_string()) {
    out.push_back({"user", input->get<std::string>()});
  } else if (input->is_array() && !input->empty()) {
    for (size_t i = 0; i < input->size(); ++i)
      responsesItem((*input)[i], "input[" + std::to_string(i) + "]", out);
  } else {
    throw badField("input", "input must be a string or a non-empty array of items");
  }
  // A turn of reasoning alone (whose answer never came, or whose thought
  // was only encrypted) says nothing to the model.
  out.erase(std::remove_if(out.begin(), out.end(),
                           [](const ChatMessage &m) {
                             return m.role == "assistant" && m.content.empty() &&
                                    m.toolCalls.empty() && !m.reasoning;
                           }),
            out.end());
  if (out.empty()) throw badField("input", "the input holds no message");
  if (out.back().role == "assistant" && out.back().content.empty() &&
      out.back().toolCalls.empty())
    throw badField("input", "the input ends with reasoning and no answer");
  return out;
}

/// tools in the Responses form: [{"type": "function", "name", "description",
/// "parameters", "strict"}], checked as chat's are.
void responsesTools(const Fields &f, const std::string &body, ApiRequest &r) {
  const json *t = f.get("tools");
  if (!t) return;
  if (!t->is_array()) throw badField("tools", "tools must be an array");
  json chatTools = json::array();
  for (size_t i = 0; i < t->size(); ++i) {
    const json &tool = (*t)[i];
    const std::string where = "tools[" + std::to_string(i) + "]";
    if (!tool.is_object() || !hasType(tool, "function"))
      throw badField("tools", where + " must be {\"type\": \"function\", \"name\": ..., "
                              "\"parameters\": {...}} (kvplan serve calls functions only, not "
                              "OpenAI's hosted tools)");
    json fn = tool;
    fn.erase("type");
    chatTools.push_back({{"type", "function"}, {"function", fn}});
  }
  // parseToolList reads parameters in their written order from a body.
  auto ordered = nlohmann::ordered_json::parse(body);
  nlohmann::ordered_json wrapped = {{"tools", nlohmann::ordered_json::array()}};
  for (auto &tool : ordered["tools"]) {
    tool.erase("type");
    wrapped["tools"].push_back({{"type", "function"}, {"function", tool}});
  }
  r.tools = parseToolList(chatTools, wrapped.dump());
}

/// tool_choice in the Responses form: "none", "auto", "required" or
/// {"type": "function", "name": ...}.
void responsesToolChoice(const Fields &f, ApiRequest &r) {
  r.toolChoice = r.tools.empty() ? ToolChoice::none : ToolChoice::automatic;
  const json *c = f.get("tool_choice");
  if (!c) return;
  const char *shape = "tool_choice must be \"none\", \"auto\", \"required\" or {\"type\": "
                      "\"function\", \"name\": ...}";
  if (c->is_string() && *c == "none") r.toolChoice = ToolChoice::none;
  else if (c->is_string() && *c == "auto") r.toolChoice = ToolChoice::automatic;
  else if (c->is_string() && *c == "required") r.toolChoice = ToolChoice::required;
  else if (c->is_object() && hasType(*c, "function")) {
    r.toolName = stringMember(*c, "name", "tool_choice", true);
    r.toolChoice = ToolChoice::named;
  } else
    throw badField("tool_choice", shape);
  checkToolChoice(r);
}

/// text: {"format": {"type": "text" | "json_object" | "json_schema",
/// "name", "schema", "strict"}}: as chat's response_format.
void responsesFormat(const Fields &f, const std::string &body, ApiRequest &r) {
  const json *t = f.get("text");
  if (!t) return;
  if (!t->is_object()) throw badField("text", "text must be an object, like {\"format\": "
                                              "{\"type\": \"json_schema\", ...}}");
  const json *format = Fields(*t).get("format");
  if (!format) return;
  const std::string type = format->is_object() && format->contains("type") &&
                                   (*format)["type"].is_string()
                               ? (*format)["type"].get<std::string>()
                               : "";
  if (type == "text") return;
  if (type != "json_object" && type != "json_schema")
    throw badField("text", "text.format.type must be text, json_object or json_schema");
  r.jsonObject = true;
  if (type == "json_object") return;
  if (format->contains("name") && !(*format)["name"].is_string())
    throw badField("text", "text.format.name must be a string");
  if (!format->contains("schema") || !(*format)["schema"].is_object())
    throw badField("text", "text.format json_schema needs a schema (an object)");
  try {
    r.jsonSchema = JsonSchema::compile(nlohmann::ordered_json::parse(body)["text"]["format"]
                                                                           ["schema"],
                                       "text.format.schema");
  } catch (const InputError &e) {
    throw badField("text", e.what());
  }
}

/// What the Responses API has that kvplan serve does not do, refused by
/// name unless neutral.
void refuseResponsesFields(const Fields &f) {
  if (f.get("previous_response_id") || f.get("conversation"))
    throw badField(f.get("conversation") ? "conversation" : "previous_response_id",
                   "kvplan serve keeps no responses or conversations: send the whole "
                   "conversation in input");
  if (f.boolean("background").value_or(false))
    throw badField("background", "background responses are not supported");
  if (auto t = f.string("truncation"); t && *t != "disabled")
    throw badField("truncation", "truncation must be \"disabled\": a conversation longer than "
                                 "the context is refused, not cut");
  // reasoning.encrypted_content (agents ask for it to send a thought back
  // with store false): kvplan's reasoning items carry their text instead.
  if (const json *i = f.get("include")) {
    if (!i->is_array()) throw badField("include", "include must be an array");
    for (const json &what : *i)
      if (what != "reasoning.encrypted_content")
        throw badField("include", "include " + what.dump() + " is not offered by kvplan serve "
                                  "(only reasoning.encrypted_content, which it answers with "
                                  "the reasoning's text)");
  }
  for (const char *name : {"prompt", "max_tool_calls", "top_logprobs", "response_format",
                           "messages", "max_tokens", "n"})
    if (f.get(name))
      throw badField(name, std::string(name) + " is not offered on /v1/responses" +
                               (std::string(name) == "response_format" ? "; use text.format"
                                : std::string(name) == "max_tokens" ? "; use max_output_tokens"
                                                                     : ""));
}

/// The response's repetition of the request: each field as given, or its
/// default.
OutJson responsesEcho(const Fields &f, const std::string &body, const ApiRequest &r) {
  const auto ordered = nlohmann::ordered_json::parse(body);
  auto given = [&](const char *key, OutJson fallback) {
    return f.get(key) ? OutJson(ordered[key]) : fallback;
  };
  OutJson e;
  e["instructions"] = given("instructions", nullptr);
  e["max_output_tokens"] = given("max_output_tokens", nullptr);
  e["metadata"] = given("metadata", OutJson::object());
  e["parallel_tool_calls"] = r.parallelToolCalls;
  e["previous_response_id"] = nullptr;
  e["reasoning"] = given("reasoning", {{"effort", nullptr}, {"summary", nullptr}});
  e["store"] = false;
  e["temperature"] = r.sampling.temperature;
  e["text"] = given("text", {{"format", {{"type", "text"}}}});
  e["tool_choice"] = given("tool_choice", r.tools.empty() ? "none" : "auto");
  e["tools"] = given("tools", OutJson::array());
  e["top_p"] = r.sampling.topP;
  e["truncation"] = "disabled";
  e["user"] = given("user", nullptr);
  return e;
}

} // namespace

ResponsesRequest parseResponsesRequest(const std::string &body) {
  const json j = parseBody(body);
  Fields f(j);
  refuseResponsesFields(f);
  ResponsesRequest out;
  ApiRequest &r = out.api;
  r.chat = true;
  r.inputField = "input";
  r.maxTokensField = "max_output_tokens";
  parseCommon(j, body, r);
  r.messages = responsesInput(f);
  if (int64_t n = positiveTokens(f, "max_output_tokens")) r.maxTokens = n;
  if (const json *m = f.get("metadata"); m && !m->is_object())
    throw badField("metadata", "metadata must be an object");
  if (const json *m = f.get("reasoning"); m && !m->is_object())
    throw badField("reasoning", "reasoning must be an object, like {\"effort\": \"low\"}");
  responsesTools(f, body, r);
  responsesToolChoice(f, r);
  r.parallelToolCalls = f.boolean("parallel_tool_calls").value_or(true);
  responsesFormat(f, body, r);
  if (r.toolChoice != ToolChoice::none && r.jsonObject)
    throw badField("text", "text.format json_object or json_schema with tools is not "
                           "supported; leave one out, or give tool_choice none");
  parseTemplateKwargs(f, r);
  if (const json *reasoning = f.get("reasoning"))
    parseReasoningEffort(Fields(*reasoning).get("effort"), "reasoning.effort", r);
  out.echo = responsesEcho(f, body, r);
  return out;
}

TokenizeRequest parseTokenizeRequest(const std::string &body) {
  const json j = parseBody(body);
  Fields f(j);
  TokenizeRequest r;
  if (auto m = f.string("model")) r.model = *m;
  r.prompt = f.string("prompt");
  const bool chat = f.get("messages");
  if (r.prompt.has_value() == chat)
    throw badField(chat ? "prompt" : "messages",
                   "give either prompt (text) or messages (a chat), not both or neither");
  if (chat) {
    r.messages = parseMessages(f);
    if (const json *t = f.get("tools")) r.tools = parseToolList(*t, body);
    parseTemplateKwargs(f, r);
    parseChatEnd(f, r);
  }
  r.addSpecialTokens = f.boolean("add_special_tokens").value_or(!chat);
  r.returnTokenStrs = f.boolean("return_token_strs").value_or(false);
  return r;
}

DetokenizeRequest parseDetokenizeRequest(const std::string &body) {
  const json j = parseBody(body);
  Fields f(j);
  DetokenizeRequest r;
  if (auto m = f.string("model")) r.model = *m;
  const json *t = f.get("tokens");
  if (!t) throw badField("tokens", "tokens is required");
  r.tokens = tokenIdArray(*t, "tokens", "tokens must be an array of token ids");
  return r;
}

namespace {

OutJson head(const ResponseHead &h, const char *object) {
  return {{"id", h.id}, {"object", object}, {"created", h.created}, {"model", h.model}};
}

OutJson usageJson(const Usage &u) {
  return {{"prompt_tokens", u.prompt},
          {"completion_tokens", u.completion},
          {"total_tokens", u.prompt + u.completion},
          {"prompt_tokens_details", {{"cached_tokens", u.cached}}}};
}

} // namespace

OutJson completionChoice(const ResponseHead &h, int64_t index, const std::string &text,
                         const std::string &finishReason) {
  OutJson choice = {{"index", index}, {"finish_reason", finishReason}, {"logprobs", nullptr}};
  if (h.chat)
    choice["message"] = {{"role", "assistant"}, {"content", text}};
  else
    choice["text"] = text;
  return choice;
}

namespace {

OutJson toolCallsJson(const std::vector<ToolCall> &calls, bool indexed) {
  OutJson out = OutJson::array();
  for (size_t k = 0; k < calls.size(); ++k) {
    OutJson c = OutJson::object();
    if (indexed) c["index"] = int64_t(k);
    c["id"] = calls[k].id;
    c["type"] = "function";
    c["function"] = {{"name", calls[k].name}, {"arguments", calls[k].arguments}};
    out.push_back(c);
  }
  return out;
}

} // namespace

OutJson toolCallChoice(const ResponseHead &h, int64_t index, const std::string &content,
                       const std::vector<ToolCall> &calls, const std::string &finishReason) {
  OutJson message = {{"role", "assistant"},
                     {"content", content.empty() ? OutJson(nullptr) : OutJson(content)},
                     {"tool_calls", toolCallsJson(calls, false)}};
  return {{"index", index}, {"finish_reason", finishReason}, {"logprobs", nullptr},
          {"message", message}};
}

OutJson toolCallChunk(const ResponseHead &h, int64_t index, const std::vector<ToolCall> &calls,
                      bool first, bool includeUsage) {
  OutJson delta = OutJson::object();
  if (first) delta["role"] = "assistant";
  delta["tool_calls"] = toolCallsJson(calls, true);
  OutJson choice = {{"index", index}, {"logprobs", nullptr}, {"finish_reason", nullptr},
                    {"delta", delta}};
  OutJson j = head(h, "chat.completion.chunk");
  j["choices"] = OutJson::array({choice});
  if (includeUsage) j["usage"] = nullptr;
  return j;
}

OutJson completionResponse(const ResponseHead &h, const OutJson &choices, const Usage &u) {
  OutJson j = head(h, h.chat ? "chat.completion" : "text_completion");
  j["choices"] = choices;
  j["usage"] = usageJson(u);
  return j;
}

const char *const kSseDone = "data: [DONE]\n\n";

std::string dumpJson(const OutJson &j) {
  return j.dump(-1, ' ', false, OutJson::error_handler_t::replace);
}

std::string sseEvent(const OutJson &j) { return "data: " + dumpJson(j) + "\n\n"; }

OutJson streamChunk(const ResponseHead &h, int64_t index, const std::string &text, bool first,
                    const std::optional<std::string> &finishReason, bool includeUsage) {
  OutJson choice = {{"index", index}, {"logprobs", nullptr},
                 {"finish_reason", finishReason ? OutJson(*finishReason) : OutJson(nullptr)}};
  if (h.chat) {
    OutJson delta = OutJson::object();
    if (first) delta["role"] = "assistant";
    if (first || !text.empty() || !finishReason) delta["content"] = text;
    choice["delta"] = delta;
  } else {
    choice["text"] = text;
  }
  OutJson j = head(h, h.chat ? "chat.completion.chunk" : "text_completion");
  j["choices"] = OutJson::array({choice});
  if (includeUsage) j["usage"] = nullptr;
  return j;
}

namespace {

OutJson bytesOf(const std::string &s) {
  OutJson b = OutJson::array();
  for (unsigned char c : s) b.push_back(int(c));
  return b;
}

OutJson chatLogprob(const TokenLogprob &t, const TokenText &text) {
  const std::string s = text(t.token);
  return {{"token", s}, {"logprob", t.logprob}, {"bytes", bytesOf(s)}};
}

} // namespace

OutJson logprobsJson(bool chat, const std::vector<TokenLogprobs> &tokens,
                     const std::vector<std::string> &texts, int64_t textOffset,
                     const TokenText &text) {
  if (chat) {
    OutJson content = OutJson::array();
    for (const TokenLogprobs &t : tokens) {
      OutJson entry = chatLogprob(t.chosen, text);
      entry["top_logprobs"] = OutJson::array();
      for (const TokenLogprob &alt : t.top) entry["top_logprobs"].push_back(chatLogprob(alt, text));
      content.push_back(entry);
    }
    return {{"content", content}};
  }
  OutJson pieces = OutJson::array(), logprobs = OutJson::array(), top = OutJson::array(),
          offsets = OutJson::array();
  for (size_t i = 0; i < tokens.size(); ++i) {
    const TokenLogprobs &t = tokens[i];
    pieces.push_back(text(t.chosen.token));
    logprobs.push_back(t.chosen.logprob);
    OutJson likely = OutJson::object();
    for (const TokenLogprob &alt : t.top) likely[text(alt.token)] = alt.logprob;
    likely[text(t.chosen.token)] = t.chosen.logprob;
    top.push_back(likely);
    offsets.push_back(textOffset);
    textOffset += int64_t(i < texts.size() ? texts[i].size() : 0);
  }
  return {{"tokens", pieces}, {"token_logprobs", logprobs}, {"top_logprobs", top},
          {"text_offset", offsets}};
}

OutJson echoLogprobsJson(const std::vector<int32_t> &prompt,
                         const std::vector<TokenLogprobs> &scores,
                         const std::vector<std::string> &texts, const TokenText &text,
                         const OutJson &generated) {
  const std::vector<std::string> later(texts.begin() + std::min<size_t>(1, texts.size()),
                                       texts.end());
  OutJson j = logprobsJson(false, scores, later, int64_t(texts.empty() ? 0 : texts[0].size()),
                           text);
  if (!prompt.empty()) {
    j["tokens"].insert(j["tokens"].begin(), text(prompt[0]));
    j["token_logprobs"].insert(j["token_logprobs"].begin(), nullptr);
    j["top_logprobs"].insert(j["top_logprobs"].begin(), nullptr);
    j["text_offset"].insert(j["text_offset"].begin(), 0);
  }
  if (generated.is_object())
    for (auto &[key, list] : j.items())
      for (const OutJson &v : generated.at(key)) list.push_back(v);
  return j;
}

OutJson promptLogprobsJson(const std::vector<TokenLogprobs> &scores, int64_t top,
                           const TokenText &text) {
  auto entry = [&](const TokenLogprob &t) {
    return OutJson{{"logprob", t.logprob}, {"rank", t.rank}, {"decoded_token", text(t.token)}};
  };
  OutJson out = OutJson::array({nullptr});
  for (const TokenLogprobs &t : scores) {
    OutJson m = OutJson::object();
    m[std::to_string(t.chosen.token)] = entry(t.chosen);
    for (size_t i = 0; i < t.top.size() && int64_t(i) < top; ++i)
      m[std::to_string(t.top[i].token)] = entry(t.top[i]);
    out.push_back(m);
  }
  return out;
}

OutJson usageChunk(const ResponseHead &h, const Usage &u) {
  OutJson j = head(h, h.chat ? "chat.completion.chunk" : "text_completion");
  j["choices"] = OutJson::array();
  j["usage"] = usageJson(u);
  return j;
}

} // namespace kvplan::server
