// Tool calls (chat `tools`): the JSON the chat templates show functions
// with, the schema a forced call is held to, and the reader that finds the
// calls in an answer as it comes. The formats are the models' own: ChatML
// (Qwen2.5, Hermes) writes <tool_call>\n{"name": ..., "arguments": ...}\n
// </tool_call>; Llama 3.1 writes {"name": ..., "parameters": ...}; Mistral
// v0.3 [TOOL_CALLS] [{"name": ..., "arguments": ...}, ...], and Mistral's
// v11 tokenizers (Mistral Small 3.1 and later, Devstral, Magistral)
// {content}[TOOL_CALLS]{name}[ARGS]{arguments} a call, [CALL_ID]{id} before
// [ARGS] in v13. (gpt-oss's harmony calls are read by Harmony.h.)
#pragma once

#include "runtime/JsonSchema.h"
#include "server/ChatTemplate.h"
#include "server/OpenAiProtocol.h"

#include <memory>
#include <string>
#include <vector>

namespace kvplan::server {

/// JSON as Python's json.dumps writes it, which the templates' tojson
/// filter is: ", " and ": " between items, or with `indent` > 0 one item a
/// line, nested `indent` spaces deeper.
std::string pythonJson(const nlohmann::ordered_json &v, int indent = 0);

/// A new call's id: "call_" and 24 letters or digits, as OpenAI's; for
/// Mistral, whose template takes ids of 9, 9 letters or digits.
std::string newCallId(ChatTemplate t);

/// A tool as the templates show it: {"type": "function", "function":
/// {"name", "description", "parameters"}} (description and parameters when
/// given).
nlohmann::ordered_json toolJson(const ToolFunction &t);

/// Throws ApiError (400, param tools) unless template `t` has a tool-call
/// format kvplan writes (llama3, chatml, qwen3, mistral, harmony).
void checkToolTemplate(ChatTemplate t);

/// The text after the assistant's header where a call is forced (tool_choice
/// required or named): ChatML's "<tool_call>\n"; Llama 3's nothing.
std::string forcedCallPrefix(ChatTemplate t);
/// The same as prompt pieces: Mistral's is its [TOOL_CALLS] token and " [".
std::vector<ChatPiece> forcedCallPieces(ChatTemplate t);

/// The schema a forced call's JSON object is held to: one of the candidate
/// tools (all, or the named one) as {"name": its name, "arguments" (Llama
/// 3: "parameters"): its parameters}. Throws ApiError (param tools) naming
/// a parameters keyword kvplan cannot hold generation to.
std::shared_ptr<const JsonSchema> forcedCallSchema(ChatTemplate t, const ApiRequest &a);

/// One choice's answer read as it comes: text that cannot be part of a call
/// is passed on as content at once; from where a call may begin the text is
/// held, and read at the end as calls, or given back as content when it is
/// not one.
class ToolCallReader {
public:
  /// `tok`: the vocabulary; Mistral's with an [ARGS] token writes v11's
  /// calls, whose control tokens are fed as their markers (answerMarkers).
  ToolCallReader(ChatTemplate t, const ApiRequest &a, const Tokenizer *tok = nullptr);
  /// Takes the answer's next text; returns what may be sent as content now.
  std::string feed(const std::string &text);
  struct Result {
    std::string content;         // content not returned by feed
    std::vector<ToolCall> calls; // none when the held text was not a call
  };
  Result finish();

private:
  std::vector<ToolCall> parseCalls(const std::string &held) const;
  bool parseOne(const std::string &text, std::vector<ToolCall> &out) const;
  bool parseObject(const nlohmann::ordered_json &call, std::vector<ToolCall> &out) const;
  bool parseMistral(const std::string &text, std::vector<ToolCall> &out) const;
  bool parseMistralV11(const std::string &text, std::vector<ToolCall> &out) const;

  ChatTemplate chat;
  std::vector<std::string> names; // the tools'
  bool v11 = false; // Mistral's [TOOL_CALLS]{name}[ARGS]{arguments}

  bool forced, parallel;
  bool calling = false; // held from a call's start on
  bool decided = false; // Llama 3: the answer is content, not a call
  std::string held;     // text not yet returned
};

} // namespace kvplan::server
