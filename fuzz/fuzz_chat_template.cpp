// A chat template as a model file carries it (tokenizer.chat_template),
// read and rendered for a conversation with a system message, an earlier
// thought, a tool call and its result, and tools, as kvplan serve gives them.
// InputError (a template kvplan cannot read) and JinjaError (one that fails
// on these values, its raise_exception among them) are its proper answers;
// the interpreter's limits keep time, memory and the stack bounded.
#include "FuzzCommon.h"
#include "server/Jinja.h"

using namespace kvplan;

namespace {

const nlohmann::ordered_json &context() {
  static const nlohmann::ordered_json c = nlohmann::ordered_json::parse(R"({
    "messages": [
      {"role": "system", "content": "Be brief."},
      {"role": "user", "content": "Weather in Paris?"},
      {"role": "assistant", "content": "", "reasoning_content": "look it up",
       "tool_calls": [{"id": "c1", "type": "function",
                       "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
      {"role": "tool", "tool_call_id": "c1", "content": "{\"temp\": 21.5}"},
      {"role": "user", "content": "<think>ok</think> Thanks é 東京"}],
    "tools": [{"type": "function", "function": {"name": "get_weather",
               "description": "The weather", "parameters": {"type": "object",
               "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
    "add_generation_prompt": true, "bos_token": "<s>", "eos_token": "</s>",
    "enable_thinking": false})");
  return c;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const std::string source(reinterpret_cast<const char *>(data), size);
  return fuzz::rejectsOrAccepts([&] {
    try {
      server::JinjaTemplate(source, "fuzz.jinja").render(context());
    } catch (const server::JinjaError &) {
    }
  });
}
