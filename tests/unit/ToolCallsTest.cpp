// Tool calls: the templates' tool formats (expected texts rendered from the
// published Jinja templates, Llama 3.1's and Qwen2.5's, with jinja2;
// Mistral v0.3's worked out by hand from its template), the request fields,
// the schema a forced call is held to, and the reader of calls in an answer.
#include "runtime/JsonSchema.h"
#include "server/ChatTemplate.h"
#include "server/OpenAiProtocol.h"
#include "server/ToolCalls.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <string>
#include <vector>

using namespace kvplan;
using namespace kvplan::server;
using ojson = nlohmann::ordered_json;

namespace {

std::vector<ToolFunction> weatherTool() {
  ToolFunction f;
  f.name = "get_weather";
  f.description = "Weather now";
  f.parameters = ojson::parse(
      R"({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})");
  f.hasParameters = true;
  return {f};
}

/// A call, its result, and the answer to come.
std::vector<ChatMessage> weatherDialog() {
  ChatMessage call{"assistant", ""};
  call.toolCalls = {{"call_1", "get_weather", R"({"city":"Paris"})"}};
  ChatMessage result{"tool", "18 C"};
  result.toolCallId = "call_1";
  return {{"system", "Be brief."}, {"user", "Weather in Paris?"}, call, result};
}

/// An answer fed to a reader in pieces of `step` bytes: the content it
/// passed on as it came, then what finish() gave.
struct Read {
  std::string streamed;
  ToolCallReader::Result result;
};
Read readAnswer(ChatTemplate t, const ApiRequest &a, const std::string &answer, size_t step) {
  ToolCallReader reader(t, a);
  Read r;
  for (size_t i = 0; i < answer.size(); i += step)
    r.streamed += reader.feed(answer.substr(i, step));
  r.result = reader.finish();
  return r;
}

ApiRequest withTools(ToolChoice choice = ToolChoice::automatic) {
  ApiRequest a;
  a.chat = true;
  a.tools = weatherTool();
  ToolFunction time;
  time.name = "get_time";
  a.tools.push_back(time);
  a.toolChoice = choice;
  return a;
}

} // namespace

TEST(ToolCalls, JsonAsPythonWritesIt) {
  // json.dumps(..., ensure_ascii=False) and with indent=4, from Python.
  const ojson v = ojson::parse(R"({"a": [1, {"b": "é"}], "c": {}, "d": [], "e": 1.5, "f": null,
                                   "g": "q\"\\n"})");
  EXPECT_EQ(pythonJson(v), "{\"a\": [1, {\"b\": \"\u00e9\"}], \"c\": {}, \"d\": [], \"e\": 1.5, "
                           "\"f\": null, \"g\": \"q\\\"\\\\n\"}");
  const ojson w = ojson::parse(R"({"a": [1, {"b": "é"}], "c": {}, "d": []})");
  EXPECT_EQ(pythonJson(w, 4), "{\n    \"a\": [\n        1,\n        {\n            \"b\": "
                              "\"\u00e9\"\n        }\n    ],\n    \"c\": {},\n    \"d\": []\n}");
}

/// weatherDialog() with weatherTool() in Qwen2.5's (and Qwen3's) format, up
/// to the assistant's turn that calls the tool.
const char *const kQwenWeatherQuestion =
    "<|im_start|>system\nBe brief.\n\n# Tools\n\nYou may call one or more functions to assist "
    "with the user query.\n\nYou are provided with function signatures within <tools></tools> "
    "XML tags:\n<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", "
    "\"description\": \"Weather now\", \"parameters\": {\"type\": \"object\", \"properties\": "
    "{\"city\": {\"type\": \"string\"}}, \"required\": [\"city\"]}}}\n</tools>\n\nFor each "
    "function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, "
    "\"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n<|im_start|>user\nWeather in "
    "Paris?<|im_end|>\n<|im_start|>assistant\n";
/// ... and the call, and its result.
const char *const kQwenWeatherCall =
    "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n"
    "</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n18 C\n</tool_response>"
    "<|im_end|>\n";

TEST(ToolCalls, ChatMlWritesQwenToolFormat) {
  EXPECT_EQ(chatText(renderChat(ChatTemplate::chatml, weatherDialog(), weatherTool())),
            std::string(kQwenWeatherQuestion) + kQwenWeatherCall + "<|im_start|>assistant\n");
  // Results in a row are one user turn.
  std::vector<ChatMessage> two = weatherDialog();
  two.push_back(two.back());
  const std::string text = chatText(renderChat(ChatTemplate::chatml, two, weatherTool()));
  EXPECT_NE(text.find("<|im_start|>user\n<tool_response>\n18 C\n</tool_response>\n"
                      "<tool_response>\n18 C\n</tool_response><|im_end|>\n"),
            std::string::npos)
      << text;
}

// Qwen3's template (rendered with jinja2): Qwen2.5's tools, and the call's
// thought kept while the tool loop runs (after the last user query), left
// out once a new question comes.
TEST(ToolCalls, Qwen3KeepsTheThoughtOnlyInTheToolLoop) {
  const std::string system = kQwenWeatherQuestion, call = kQwenWeatherCall;
  std::vector<ChatMessage> loop = weatherDialog();
  loop[2].reasoning = "\nI need the tool.\n";
  EXPECT_EQ(chatText(renderChat(ChatTemplate::qwen3, loop, weatherTool())),
            system + "<think>\nI need the tool.\n</think>\n\n" + call + "<|im_start|>assistant\n");
  std::vector<ChatMessage> next = loop;
  next.push_back({"assistant", "<think>\nIt is mild.\n</think>\n\nMild, 18 C."});
  next.push_back({"user", "And tomorrow?"});
  EXPECT_EQ(chatText(renderChat(ChatTemplate::qwen3, next, weatherTool())),
            system + call + "<|im_start|>assistant\nMild, 18 C.<|im_end|>\n<|im_start|>user\n"
                            "And tomorrow?<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ToolCalls, Llama3WritesLlama31ToolFormat) {
  EXPECT_EQ(
      chatText(renderChat(ChatTemplate::llama3, weatherDialog(), weatherTool())),
      "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython\n"
      "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nBe brief.<|eot_id|>"
      "<|start_header_id|>user<|end_header_id|>\n\nGiven the following functions, please respond "
      "with a JSON for a function call with its proper arguments that best answers the given "
      "prompt.\n\nRespond in the format {\"name\": function name, \"parameters\": dictionary of "
      "argument name and its value}.Do not use variables.\n\n{\n    \"type\": \"function\",\n    "
      "\"function\": {\n        \"name\": \"get_weather\",\n        \"description\": \"Weather "
      "now\",\n        \"parameters\": {\n            \"type\": \"object\",\n            "
      "\"properties\": {\n                \"city\": {\n                    \"type\": \"string\"\n"
      "                }\n            },\n            \"required\": [\n                \"city\"\n"
      "            ]\n        }\n    }\n}\n\nWeather in Paris?<|eot_id|><|start_header_id|>"
      "assistant<|end_header_id|>\n\n{\"name\": \"get_weather\", \"parameters\": {\"city\": "
      "\"Paris\"}}<|eot_id|><|start_header_id|>ipython<|end_header_id|>\n\n\"18 C\"<|eot_id|>"
      "<|start_header_id|>assistant<|end_header_id|>\n\n");
  // Llama 3.1 holds one call a message.
  std::vector<ChatMessage> m = weatherDialog();
  m[2].toolCalls.push_back(m[2].toolCalls[0]);
  EXPECT_THROW(renderChat(ChatTemplate::llama3, m, weatherTool()), ApiError);
}

TEST(ToolCalls, TemplatesWithoutAToolFormatRefuseTools) {
  for (ChatTemplate t : {ChatTemplate::llama2, ChatTemplate::phi3, ChatTemplate::deepseek_r1}) {
    try {
      renderChat(t, {{"user", "Hi"}}, weatherTool());
      ADD_FAILURE() << chatTemplateName(t) << " took tools";
    } catch (const ApiError &e) {
      EXPECT_EQ(e.param, "tools");
      EXPECT_NE(std::string(e.what()).find("llama3's, chatml's, qwen3's, mistral's and harmony's"),
                std::string::npos);
    }
  }
}

// Mistral v0.3's tool format, as its template (tokenizer_config.json) writes
// it: the functions in [AVAILABLE_TOOLS] before the last user message, a
// call's function with its 9-character id in [TOOL_CALLS], a result's raw
// content with the call's id in [TOOL_RESULTS]; the system message only
// with a user message that ends the conversation (here a result ends it).
// A longer id is cut to its last 9 (as vLLM cuts them for Mistral), a
// shorter one refused by name.
TEST(ToolCalls, MistralWritesV03ToolFormat) {
  std::vector<ChatMessage> dialog = weatherDialog();
  dialog[2].toolCalls[0].id = "call_abcDEF123";
  dialog[3].toolCallId = "abcDEF123";
  EXPECT_EQ(chatText(renderChat(ChatTemplate::mistral, dialog, weatherTool())),
            "<s>[AVAILABLE_TOOLS] [{\"type\": \"function\", \"function\": {\"name\": "
            "\"get_weather\", \"description\": \"Weather now\", \"parameters\": {\"type\": "
            "\"object\", \"properties\": {\"city\": {\"type\": \"string\"}}, \"required\": "
            "[\"city\"]}}}][/AVAILABLE_TOOLS][INST] Weather in Paris?[/INST][TOOL_CALLS] "
            "[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}, \"id\": "
            "\"abcDEF123\"}]</s>[TOOL_RESULTS] {\"content\": 18 C, \"call_id\": "
            "\"abcDEF123\"}[/TOOL_RESULTS]");
  // The answer, then the next question: the system message with it.
  dialog.push_back({"assistant", " 18 C in Paris. "});
  dialog.push_back({"user", "And Oslo?"});
  const std::string text = chatText(renderChat(ChatTemplate::mistral, dialog, weatherTool()));
  EXPECT_NE(text.find("[/TOOL_RESULTS] 18 C in Paris.</s>[AVAILABLE_TOOLS] ["), std::string::npos)
      << text;
  EXPECT_NE(text.find("[INST] Be brief.\n\nAnd Oslo?[/INST]"), std::string::npos) << text;
  EXPECT_EQ(text.find("[INST] Weather in Paris?[/INST]"), text.find("[INST]")) << text;
  dialog[3].toolCallId = "call_1";
  try {
    renderChat(ChatTemplate::mistral, dialog, weatherTool());
    ADD_FAILURE() << "a 6-character id was taken";
  } catch (const ApiError &e) {
    EXPECT_EQ(e.param, "messages");
    EXPECT_NE(std::string(e.what()).find("messages[3].tool_call_id is \"call_1\"; Mistral's "
                                         "chat template takes tool call ids of 9"),
              std::string::npos)
        << e.what();
  }
}

// Mistral's answer: [TOOL_CALLS] (a control token, so usually not in the
// text) and the list of calls, each given a new 9-character id; other
// answers are content; a forced call is the one object after the prompt's
// [TOOL_CALLS] token and " [".
TEST(ToolCalls, TheReaderFindsMistralsCalls) {
  const ApiRequest a = withTools();
  const std::string calls = "[{\"name\": \"get_weather\", \"arguments\": {\"city\": "
                            "\"Paris\"}}, {\"name\": \"get_time\", \"arguments\": {}}]";
  for (const std::string &answer : {" " + calls, "[TOOL_CALLS] " + calls}) {
    for (size_t step : {1, 4, 1000}) {
      SCOPED_TRACE(answer.substr(0, 12) + " in steps of " + std::to_string(step));
      const Read r = readAnswer(ChatTemplate::mistral, a, answer, step);
      EXPECT_EQ(r.streamed + r.result.content, "");
      ASSERT_EQ(r.result.calls.size(), 2u);
      EXPECT_EQ(r.result.calls[0].name, "get_weather");
      EXPECT_EQ(r.result.calls[0].arguments, R"({"city":"Paris"})");
      EXPECT_EQ(r.result.calls[1].arguments, "{}");
      for (const ToolCall &c : r.result.calls) {
        EXPECT_EQ(c.id.size(), 9u);
        EXPECT_TRUE(std::all_of(c.id.begin(), c.id.end(), [](char ch) { return std::isalnum(ch); }))
            << c.id;
      }
    }
  }
  Read r = readAnswer(ChatTemplate::mistral, a, "It is sunny [in Paris].", 3);
  EXPECT_EQ(r.streamed, "It is sunny [in Paris].") << "content goes at once";
  r = readAnswer(ChatTemplate::mistral, a, "[1, 2] are the numbers", 3);
  EXPECT_TRUE(r.result.calls.empty());
  EXPECT_EQ(r.streamed + r.result.content, "[1, 2] are the numbers") << "not calls: content";
  r = readAnswer(ChatTemplate::mistral, a, "[{\"name\": \"get_sun\", \"arguments\": {}}]", 5);
  EXPECT_TRUE(r.result.calls.empty()) << "an unknown tool";
  const Read forced = readAnswer(ChatTemplate::mistral, withTools(ToolChoice::required),
                                 "{\"name\": \"get_time\", \"arguments\": {}}", 2);
  ASSERT_EQ(forced.result.calls.size(), 1u);
  EXPECT_EQ(forced.result.calls[0].name, "get_time");
  const std::vector<ChatPiece> prefix = forcedCallPieces(ChatTemplate::mistral);
  ASSERT_EQ(prefix.size(), 2u);
  EXPECT_EQ(prefix[0].kind, ChatPiece::marker);
  EXPECT_EQ(prefix[0].value, "[TOOL_CALLS]");
  EXPECT_EQ(prefix[1].value, " [");
  EXPECT_EQ(chatText(forcedCallPieces(ChatTemplate::chatml)), "<tool_call>\n");
}

// Mistral's v11 tokenizers (Mistral Small 3.1 and later, Devstral,
// Magistral): content, then each call as [TOOL_CALLS]{name}[ARGS]{arguments}
// (v13: [CALL_ID]{id} before [ARGS]), the markers control tokens that
// decode to no text, so fed as their markers (answerMarkers).
TEST(ToolCalls, TheReaderFindsMistralV11Calls) {
  nlohmann::json added = nlohmann::json::array();
  const char *specials[] = {"[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"};
  for (int i = 0; i < 3; ++i)
    added.push_back({{"id", 5 + i}, {"content", specials[i]}, {"special", true},
                     {"normalized", false}});
  auto tok = loadTokenizer(
      "hf-bpe", nlohmann::json{{"added_tokens", added},
                               {"pre_tokenizer", {{"type", "ByteLevel"}}},
                               {"model",
                                {{"type", "BPE"},
                                 {"vocab", {{"a", 0}}},
                                 {"merges", nlohmann::json::array()}}}}
                    .dump());
  // The answer's tokens: a marker's id with no text, or text (id 100).
  auto read = [&](const std::vector<std::pair<int32_t, std::string>> &tokens,
                  bool parallel = true) {
    ApiRequest a = withTools();
    a.parallelToolCalls = parallel;
    ToolCallReader reader(ChatTemplate::mistral, a, tok.get());
    Read r;
    const auto markers = answerMarkers(ChatTemplate::mistral, *tok);
    for (const auto &[id, text] : tokens) r.streamed += reader.feed(withMarker(markers, id, text));
    r.result = reader.finish();
    return r;
  };
  const Read two = read({{100, "Let me "}, {100, "check."}, {5, ""}, {100, "get_weather"},
                         {6, ""}, {100, "{\"city\": "}, {100, "\"Paris\"}"}, {5, ""},
                         {100, "get_time"}, {6, ""}, {100, "{}"}});
  EXPECT_EQ(two.streamed, "Let me check.") << "content before the calls goes at once";
  EXPECT_EQ(two.result.content, "");
  ASSERT_EQ(two.result.calls.size(), 2u);
  EXPECT_EQ(two.result.calls[0].name, "get_weather");
  EXPECT_EQ(two.result.calls[0].arguments, R"({"city":"Paris"})");
  EXPECT_EQ(two.result.calls[1].name, "get_time");
  EXPECT_EQ(two.result.calls[1].arguments, "{}");
  EXPECT_EQ(two.result.calls[0].id.size(), 9u);
  EXPECT_EQ(read({{5, ""}, {100, "get_time"}, {6, ""}, {100, "{}"}, {5, ""},
                  {100, "get_time"}, {6, ""}, {100, "{}"}}, false).result.calls.size(), 1u)
      << "parallel_tool_calls false: the first";
  // v13's ids: kept where they are 9 letters or digits.
  const Read id = read({{5, ""}, {100, "get_time"}, {7, ""}, {100, "abcDEF123"}, {6, ""},
                        {100, "{}"}});
  ASSERT_EQ(id.result.calls.size(), 1u);
  EXPECT_EQ(id.result.calls[0].id, "abcDEF123");
  // Not calls: an unknown tool, arguments that are not an object; the text
  // as it came (the markers written out).
  const Read unknown = read({{5, ""}, {100, "get_sun"}, {6, ""}, {100, "{}"}});
  EXPECT_TRUE(unknown.result.calls.empty());
  EXPECT_EQ(unknown.result.content, "[TOOL_CALLS]get_sun[ARGS]{}");
  const Read broken = read({{5, ""}, {100, "get_time"}, {6, ""}, {100, "{\"a\""}});
  EXPECT_TRUE(broken.result.calls.empty());
  // Text that only reads like a marker starts no call: content in the end.
  const Read plain = read({{100, "Use [TOOL"}, {100, "_CALLS] here"}});
  EXPECT_EQ(plain.streamed + plain.result.content, "Use [TOOL_CALLS] here");
}

TEST(ToolCalls, RequestFieldsAreReadAndCheckedByName) {
  const std::string base = R"({"messages": [{"role": "user", "content": "x"}], )";
  const std::string tools = R"("tools": [{"type": "function", "function": {"name": "f",
      "parameters": {"type": "object", "properties": {"z": {"type": "integer"},
                                                      "a": {"type": "string"}}}}}])";
  ApiRequest r = parseChatRequest(base + tools + "}");
  ASSERT_EQ(r.tools.size(), 1u);
  EXPECT_EQ(r.toolChoice, ToolChoice::automatic);
  EXPECT_EQ(r.tools[0].parameters["properties"].begin().key(), "z") << "the order written";
  r = parseChatRequest(base + tools +
                       R"(, "tool_choice": {"type": "function", "function": {"name": "f"}},
                          "parallel_tool_calls": false})");
  EXPECT_EQ(r.toolChoice, ToolChoice::named);
  EXPECT_EQ(r.toolName, "f");
  EXPECT_FALSE(r.parallelToolCalls);
  EXPECT_EQ(parseChatRequest(base + tools + R"(, "tool_choice": "none"})").toolChoice,
            ToolChoice::none);
  // A conversation with a call and its result.
  r = parseChatRequest(R"({"messages": [{"role": "user", "content": "x"},
      {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
       "function": {"name": "f", "arguments": "{\"z\": 1}"}}]},
      {"role": "tool", "tool_call_id": "c1", "content": "done"}]})");
  ASSERT_EQ(r.messages[1].toolCalls.size(), 1u);
  EXPECT_EQ(r.messages[1].toolCalls[0].arguments, "{\"z\": 1}");
  EXPECT_EQ(r.messages[2].toolCallId, "c1");
  auto param = [&](const std::string &body) {
    try {
      parseChatRequest(body);
    } catch (const ApiError &e) {
      return e.param;
    }
    return std::string("(no error)");
  };
  EXPECT_EQ(param(base + R"("tools": [{"type": "code_interpreter"}]})"), "tools");
  // A member of the wrong JSON type is refused, not thrown past (the fuzzer
  // found "type": null).
  EXPECT_EQ(param(base + R"("tools": [{"type": null, "function": {"name": "f"}}]})"), "tools");
  EXPECT_EQ(param(base + tools + R"(, "tool_choice": {"type": null}})"), "tool_choice");
  EXPECT_EQ(param(R"({"messages": [{"role": "user", "content": [{"type": null}]}]})"),
            "messages[0].content");
  EXPECT_EQ(param(R"({"messages": [{"role": "assistant", "tool_calls": [{"type": 1,
                      "function": {"name": "f"}}]}]})"),
            "messages[0].tool_calls[0]");
  EXPECT_EQ(param(base + R"("tools": [{"type": "function", "function": {"name": "a b"}}]})"),
            "tools");
  EXPECT_EQ(param(base + R"("tools": [{"type": "function", "function": {"name": "f"}},
                                     {"type": "function", "function": {"name": "f"}}]})"),
            "tools");
  EXPECT_EQ(param(base + tools + R"(, "tool_choice": "sometimes"})"), "tool_choice");
  EXPECT_EQ(param(base + tools + R"(, "tool_choice": {"type": "function",
                                        "function": {"name": "g"}}})"),
            "tool_choice");
  EXPECT_EQ(param(base + R"("tool_choice": "required"})"), "tool_choice");
  EXPECT_EQ(param(base + tools + R"(, "response_format": {"type": "json_object"}})"),
            "response_format");
  EXPECT_EQ(param(R"({"messages": [{"role": "tool", "content": "x"}]})"),
            "messages[0].tool_call_id");
  EXPECT_EQ(param(R"({"messages": [{"role": "assistant", "tool_calls": [{"type": "function",
                      "function": {"arguments": "{}"}}]}]})"),
            "messages[0].tool_calls[0].function.name");
}

TEST(ToolCalls, AForcedCallIsHeldToTheToolsSchemas) {
  ApiRequest a = withTools(ToolChoice::required);
  a.tools[0].parameters = ojson::parse(R"({"type": "object", "$defs": {"c": {"type": "string",
      "maxLength": 5}}, "properties": {"city": {"$ref": "#/$defs/c"}}, "required": ["city"],
      "additionalProperties": false})");
  for (ChatTemplate t : {ChatTemplate::chatml, ChatTemplate::llama3}) {
    const auto schema = forcedCallSchema(t, a);
    const std::string key = t == ChatTemplate::llama3 ? "parameters" : "arguments";
    auto reads = [&](const std::string &text) {
      SchemaState s(schema);
      for (char c : text)
        if (!s.push(uint8_t(c))) return false;
      return s.complete();
    };
    EXPECT_TRUE(reads(R"({"name": "get_weather", ")" + key + R"(": {"city": "Oslo"}})"));
    EXPECT_TRUE(reads(R"({"name": "get_time", ")" + key + R"(": {}})"));
    EXPECT_FALSE(reads(R"({"name": "get_weather", ")" + key + R"(": {"city": "Helsinki"}})"))
        << "the $ref inside the parameters, rebased: maxLength 5";
    EXPECT_FALSE(reads(R"({"name": "get_sun", ")" + key + R"(": {}})"));
  }
  a.toolChoice = ToolChoice::named;
  a.toolName = "get_time";
  SchemaState s(forcedCallSchema(ChatTemplate::chatml, a));
  for (char c : std::string(R"({"name": "get_w)")) s.push(uint8_t(c));
  EXPECT_FALSE(s.push('e')) << "only the named tool";
  // A parameter's pattern holds the call; one that is not regular is refused
  // by the tool's path.
  a.tools[0].parameters["properties"]["city"] = ojson::parse(R"({"pattern": "^[A-Z][a-z]+$"})");
  a.toolChoice = ToolChoice::required;
  const auto patterned = forcedCallSchema(ChatTemplate::chatml, a);
  auto readsPatterned = [&](const std::string &text) {
    SchemaState t(patterned);
    for (char c : text)
      if (!t.push(uint8_t(c))) return false;
    return t.complete();
  };
  EXPECT_TRUE(readsPatterned(R"({"name": "get_weather", "arguments": {"city": "Oslo"}})"));
  EXPECT_FALSE(readsPatterned(R"({"name": "get_weather", "arguments": {"city": "oslo"}})"));
  a.tools[0].parameters["properties"]["city"] = ojson::parse(R"j({"pattern": "(?=[A-Z])"})j");
  try {
    forcedCallSchema(ChatTemplate::chatml, a);
    ADD_FAILURE() << "a lookahead was taken";
  } catch (const ApiError &e) {
    EXPECT_EQ(e.param, "tools");
    EXPECT_NE(std::string(e.what()).find("tools[0].function.parameters.properties.city.pattern"),
              std::string::npos)
        << e.what();
  }
}

TEST(ToolCalls, TheReaderFindsCallsAndPassesContentOnAsItComes) {
  const ApiRequest a = withTools();
  const std::string chatml = "Let me look.\n<tool_call>\n{\"name\": \"get_weather\", "
                             "\"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n"
                             "{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>";
  for (size_t step : {1, 3, 7, 1000}) {
    SCOPED_TRACE(step);
    Read r = readAnswer(ChatTemplate::chatml, a, chatml, step);
    EXPECT_EQ(r.streamed + r.result.content, "Let me look.\n");
    ASSERT_EQ(r.result.calls.size(), 2u);
    EXPECT_EQ(r.result.calls[0].name, "get_weather");
    EXPECT_EQ(r.result.calls[0].arguments, R"({"city":"Paris"})");
    EXPECT_EQ(r.result.calls[1].arguments, "{}");
    EXPECT_EQ(r.result.calls[0].id.rfind("call_", 0), 0u);
    EXPECT_NE(r.result.calls[0].id, r.result.calls[1].id);
    // Plain text streams at once, but for what may begin the marker.
    r = readAnswer(ChatTemplate::chatml, a, "No need, it is sunny <tool", step);
    EXPECT_EQ(r.streamed + r.result.content, "No need, it is sunny <tool");
    EXPECT_TRUE(r.result.calls.empty());
    EXPECT_EQ(r.streamed.find("<tool"), std::string::npos) << "held until the end";
    // Llama 3: the whole answer is the call, or content.
    r = readAnswer(ChatTemplate::llama3, a,
                   " {\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}", step);
    EXPECT_EQ(r.streamed + r.result.content, "");
    ASSERT_EQ(r.result.calls.size(), 1u);
    EXPECT_EQ(r.result.calls[0].arguments, R"({"city":"Oslo"})");
    r = readAnswer(ChatTemplate::llama3, a,
                   "<|python_tag|>{\"name\": \"get_time\", \"parameters\": {}}; {\"name\": "
                   "\"get_weather\", \"parameters\": {\"city\": \"Rome\"}}",
                   step);
    ASSERT_EQ(r.result.calls.size(), 2u);
    EXPECT_EQ(r.result.calls[1].name, "get_weather");
    r = readAnswer(ChatTemplate::llama3, a, "It is sunny {\"name\": \"get_time\"}", step);
    EXPECT_EQ(r.streamed, "It is sunny {\"name\": \"get_time\"}") << "content goes at once";
    EXPECT_TRUE(r.result.calls.empty());
  }
  // What is not a call of a known tool is content, whole.
  for (const std::string &bad :
       {std::string("<tool_call>\n{\"name\": \"get_sun\", \"arguments\": {}}\n</tool_call>"),
        std::string("<tool_call>\n{\"name\": \"get_time\", \"arguments\": [1]}\n</tool_call>"),
        std::string("<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\n</tool_call>")}) {
    const Read r = readAnswer(ChatTemplate::chatml, a, bad, 4);
    EXPECT_TRUE(r.result.calls.empty()) << bad;
    EXPECT_EQ(r.streamed + r.result.content, bad);
  }
  // parallel_tool_calls false: the first call only.
  ApiRequest one = withTools();
  one.parallelToolCalls = false;
  EXPECT_EQ(readAnswer(ChatTemplate::chatml, one, chatml, 5).result.calls.size(), 1u);
  // A forced ChatML call starts inside <tool_call> (the prompt opened it).
  const Read forced = readAnswer(ChatTemplate::chatml, withTools(ToolChoice::required),
                                 "{\"name\": \"get_time\", \"arguments\": {}}", 2);
  ASSERT_EQ(forced.result.calls.size(), 1u);
  EXPECT_EQ(forced.streamed, "");
  const Read cut = readAnswer(ChatTemplate::chatml, withTools(ToolChoice::required),
                              "{\"name\": \"get_ti", 2);
  EXPECT_TRUE(cut.result.calls.empty());
  EXPECT_EQ(cut.result.content, "{\"name\": \"get_ti") << "a cut call is content";
}
