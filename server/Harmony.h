// OpenAI's harmony format, gpt-oss's chat: every message is
// <|start|>{role}<|channel|>{channel}<|message|>{text}<|end|>, the system
// message saying the date and the reasoning effort, the developer message
// the instructions and the tools (as a TypeScript namespace). An answer is
// messages too: its thoughts in the analysis channel, its answer in the
// final one ended by <|return|>, a tool call a commentary message to
// functions.{name} ended by <|call|>. kvplan renders the prompt as gpt-oss's
// own chat template (its chat_template.jinja) does, byte for byte, and reads
// an answer from its tokens: the analysis as reasoning_content, the final
// as content, the calls as tool_calls.
#pragma once

#include "formats/Tokenizer.h"
#include "runtime/JsonSchema.h"
#include "server/ChatTemplate.h"
#include "server/OpenAiProtocol.h"
#include "server/Reasoning.h"

#include <memory>
#include <string>
#include <vector>

namespace kvplan::server {

/// The prompt for `messages` as gpt-oss's template renders it on `date`
/// (YYYY-MM-DD): the template's kwargs model_identity and reasoning_effort
/// (default "medium") read from `kwargs`; ending with <|start|>assistant
/// when `generation`, else after the last message (an answer then ending in
/// <|return|>, its thought before it). Throws ApiError 400 (param
/// "messages") where the template raises: channel tags in a message, a
/// call's message with both content and reasoning, a tool result without a
/// call before it. A tool without a description is shown without the
/// comment line (the template fails on it).
std::vector<ChatPiece> renderHarmony(const std::vector<ChatMessage> &messages,
                                     const std::vector<ToolFunction> &tools,
                                     const nlohmann::ordered_json &kwargs, bool generation,
                                     const std::string &date);
/// Today's date as the template's strftime_now("%Y-%m-%d") writes it.
std::string harmonyToday();
/// The harmony effort for OpenAI's reasoning_effort: none and minimal are
/// low (gpt-oss always thinks), xhigh high.
std::string harmonyEffort(const std::string &openAiEffort);
/// Throws ApiError 400 (param chat_template_kwargs) for kwargs the built-in
/// harmony template does not take, or a value not a string.
void checkHarmonyKwargs(const nlohmann::ordered_json &kwargs);

/// Where the prompt goes on for an answer that must begin as a call of
/// `tool` (a forced call: " to=functions.{tool}<|channel|>commentary
/// json<|message|>", as the template writes calls) or, with `tool` "", as
/// the final answer (JSON mode: "<|channel|>final<|message|>").
std::vector<ChatPiece> harmonyOpening(const std::string &tool);
/// The schema a forced call's arguments are held to: `tool`'s parameters.
/// Throws ApiError 400 (param tools) naming a keyword kvplan cannot hold
/// generation to.
std::shared_ptr<const JsonSchema> harmonyCallSchema(const ApiRequest &a, const std::string &tool);

/// The harmony tokens of a vocabulary (-1 where it lacks one).
struct HarmonyTokens {
  int32_t start = -1, end = -1, message = -1, channel = -1, constrain = -1, ret = -1, call = -1;
  static HarmonyTokens of(const Tokenizer &tok);
};

/// One answer read from its tokens as they come. The text of a message's
/// header (its role, channel, recipient) is held until <|message|>; then
/// the analysis channel's text is reasoning (the texts of several analysis
/// messages joined by a newline), the final channel's and a commentary
/// without a recipient (a preamble) content, and a message to
/// functions.{name}, where tools were offered, a call: held until it ends
/// and read as one when {name} is an offered tool and the text a JSON
/// object, else given as content. An answer without any header (a model
/// not writing harmony) is content.
class HarmonyReader {
public:
  /// `tools`: the names of the tools offered (none: a call is content);
  /// without `parallel` only the first call is kept.
  HarmonyReader(HarmonyTokens tokens, std::vector<std::string> tools, bool parallel = true);
  /// The prompt ended in the header of a call to `name` (a forced call),
  /// or of the final channel (JSON mode): the answer begins in its text.
  void beginInCall(const std::string &name);
  void beginInFinal();

  /// The reasoning and content that token `token` (whose text is `text`)
  /// adds.
  ReasoningReader::Split feed(int32_t token, const std::string &text);
  struct Result {
    std::string content; // held text given back (reasoning is never held)
    std::vector<ToolCall> calls;
  };
  /// The end of the answer: a call cut at its end (<|call|> is a stop
  /// token, so the answer ends in it) read, held text given back.
  Result finish();

private:
  enum class Route { reasoning, content, call };
  void open();         // <|message|>: the header read
  void close();        // the message's end
  ReasoningReader::Split route(const std::string &text);

  HarmonyTokens t;
  std::vector<std::string> names;
  bool parallel;
  bool inBody = false, spoke = false, done = false;
  bool reasoned = false; // an analysis message went: the next is joined by "\n"
  bool thinking = false; // this analysis message has given text
  std::string header;   // the header's text, <|channel|> and <|constrain|> written in
  std::string unspoken; // the text before any message opened
  Route where = Route::content;
  std::string callName, held; // a call's recipient and text so far
  std::string given;          // calls' text given back as content at the end
  std::vector<ToolCall> calls;
};

} // namespace kvplan::server
