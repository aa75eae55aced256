// The OpenAI API's wire format for kvplan serve: request bodies checked
// field by field into ApiRequest, and the responses, stream chunks and error
// bodies built from what the scheduler produced. No HTTP here: the server
// (server/HttpServer.h) moves these strings.
#pragma once

#include "runtime/Sampler.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace kvplan::server {

/// Responses keep their fields in the order written (id first), as
/// OpenAI's read.
using OutJson = nlohmann::ordered_json;

/// An error answered as OpenAI does: HTTP status and
/// {"error": {"message", "type", "param", "code"}}.
struct ApiError : std::runtime_error {
  int status;
  std::string type, param, code; // param "" and code "" are sent as null
  ApiError(int status, const std::string &message, std::string param = "",
           std::string type = "", std::string code = "");
  OutJson body() const;
};

/// 400 naming the field.
ApiError badField(const std::string &param, const std::string &message);

/// A function the model may call (chat `tools`): its name, description and
/// parameters (a JSON schema, in the order written; absent: no parameters).
struct ToolFunction {
  std::string name, description;
  nlohmann::ordered_json parameters;
  bool hasParameters = false;
};

/// A call of one (an assistant message's, or one generated): `arguments`
/// is JSON text, as the API carries it.
struct ToolCall {
  std::string id, name, arguments;
};

struct ChatMessage {
  std::string role; // system, user, assistant or tool
  std::string content;
  std::vector<ToolCall> toolCalls = {}; // assistant: the calls it made
  std::string toolCallId = {};          // tool: the call this is the result of
  // assistant: its reasoning_content (or vLLM's "reasoning", gpt-oss's "thinking") as a client
  // sends an answer back; unset when absent or null.
  std::optional<std::string> reasoning = {};
};

/// Whether and how the model calls the tools: not (none), as it chooses
/// (auto, the default with tools), at least one (required), or the one named.
enum class ToolChoice { none, automatic, required, named };

/// Where a chat's prompt ends, as transformers' apply_chat_template and vLLM
/// take add_generation_prompt and continue_final_message: where a new
/// assistant answer begins (the default); after the last message
/// (add_generation_prompt false); or inside the last message, right after
/// its content, so that the model goes on with it (continue_final_message:
/// an answer begun by the caller).
enum class ChatEnd { generationPrompt, afterLastMessage, continueLastMessage };

/// A completion or chat request whose fields have the types and ranges the
/// API allows (what the model can hold is checked later, against it).
struct ApiRequest {
  bool chat = false;
  std::string model; // "" when not given
  // /v1/completions: the prompt as text, or as token ids.
  std::optional<std::string> promptText;
  std::vector<int32_t> promptIds;
  bool echo = false;
  // /v1/chat/completions.
  std::vector<ChatMessage> messages;
  std::optional<int64_t> maxTokens; // unset: the endpoint's default
  SamplingOptions sampling{1.0, 0, 1.0, 0}; // OpenAI's defaults: temperature 1, top_p 1
  bool seedGiven = false;
  std::vector<std::string> stop;
  std::vector<int32_t> stopTokenIds; // extension (as vLLM): ids that end the answer
  /// Extension (vLLM's include_stop_str_in_output): the text of the `stop`
  /// string or `stop_token_ids` id that ended the answer is sent with it.
  bool includeStop = false;
  /// Extension (vLLM's bad_words): words never generated, each as the
  /// tokenizer writes it alone and after a space (tokenized later).
  std::vector<std::string> badWords;
  bool stream = false, includeUsage = false;
  bool ignoreEos = false;      // extension (as vLLM): run to max_tokens
  bool returnTokenIds = false; // extension (as vLLM): choices carry "token_ids"
  /// -1: none; else each token's log-probability and this many most likely
  /// tokens (completions: logprobs N; chat: logprobs true, top_logprobs N).
  int64_t logprobs = -1;
  /// -1: none; completions with echo and logprobs N: the prompt's tokens'
  /// log-probabilities too (max_tokens may then be 0).
  int64_t promptLogprobs = -1;
  /// -1: none; vLLM's prompt_logprobs N: each choice (chat: the response)
  /// carries "prompt_logprobs", each prompt token's with N most likely.
  int64_t vllmPromptLogprobs = -1;
  int64_t n = 1; // choices, each generated on its own (1 to kMaxChoices)
  /// response_format json_object or json_schema: the answer is held to one
  /// JSON object, with json_schema one that `jsonSchema` accepts.
  bool jsonObject = false;
  std::shared_ptr<const JsonSchema> jsonSchema;
  // Chat: the tools, tool_choice (`toolName` when named) and whether an
  // answer may hold several calls (parallel_tool_calls).
  std::vector<ToolFunction> tools;
  ToolChoice toolChoice = ToolChoice::none;
  std::string toolName;
  bool parallelToolCalls = true;
  // Chat: chat_template_kwargs {"enable_thinking": false} (vLLM's and
  // SGLang's way to ask Qwen3 for an answer without thinking); unset: the
  // template's default (thinking). `templateKwargs`: all of them, for a
  // model's own template (the built-in ones take only enable_thinking).
  std::optional<bool> enableThinking;
  nlohmann::ordered_json templateKwargs = nlohmann::ordered_json::object();
  // reasoning_effort (the Responses API's reasoning.effort) as given: what
  // harmony's system message says (Harmony.h's harmonyEffort).
  std::optional<std::string> reasoningEffort;
  ChatEnd chatEnd = ChatEnd::generationPrompt;
  // The fields errors about the prompt and its length name: "" for the
  // endpoint's own (messages or prompt; max_tokens); /v1/responses's
  // input and max_output_tokens.
  std::string inputField = "", maxTokensField = "max_tokens";
};

/// The most choices one request may ask for (OpenAI's limit).
constexpr int64_t kMaxChoices = 128;
/// The most bad_words one request may list.
constexpr size_t kMaxBadWords = 256;

/// Parse and check a request body; throws ApiError (400) naming the field.
ApiRequest parseCompletionRequest(const std::string &body);
ApiRequest parseChatRequest(const std::string &body);

/// POST /v1/responses (OpenAI's Responses API): `input` (a string, or
/// items: messages, function_call, function_call_output, reasoning) and
/// `instructions` as chat messages, with the fields it shares with chat
/// (sampling, stream, tools in its flat form, tool_choice, text.format for
/// structured output, max_output_tokens). `echo`: what a response object
/// repeats of the request (instructions, tools, text, reasoning, metadata,
/// ...), each as given or at its default. Nothing is stored: a request
/// naming previous_response_id, store's items or background is refused.
struct ResponsesRequest {
  ApiRequest api; // chat
  OutJson echo;
};
ResponsesRequest parseResponsesRequest(const std::string &body);

/// POST /tokenize (vLLM's): a `prompt` text, or chat `messages` (with
/// `tools`) rendered as /v1/chat/completions renders them.
struct TokenizeRequest {
  std::string model; // "" when not given
  std::optional<std::string> prompt;
  std::vector<ChatMessage> messages;
  std::vector<ToolFunction> tools;
  std::optional<bool> enableThinking; // chat_template_kwargs, as for chat
  nlohmann::ordered_json templateKwargs = nlohmann::ordered_json::object();
  ChatEnd chatEnd = ChatEnd::generationPrompt;
  bool addSpecialTokens = true; // BOS first; default true for a prompt, false for messages
  bool returnTokenStrs = false; // each token's text beside the ids
};
TokenizeRequest parseTokenizeRequest(const std::string &body);

/// POST /detokenize (vLLM's): `tokens`, and `model` ("" when not given).
struct DetokenizeRequest {
  std::string model;
  std::vector<int32_t> tokens;
};
DetokenizeRequest parseDetokenizeRequest(const std::string &body);

struct Usage {
  int64_t prompt = 0, completion = 0;
  int64_t cached = 0; // prompt tokens the prefix cache held (OpenAI's cached_tokens)
};

/// What every response and chunk of one request carries.
struct ResponseHead {
  std::string id;      // cmpl-N or chatcmpl-N
  int64_t created = 0; // Unix seconds
  std::string model;
  bool chat = false;
};

/// One choice of a whole response: `index`, the text (chat: the message)
/// and the finish reason, "logprobs" null.
OutJson completionChoice(const ResponseHead &h, int64_t index, const std::string &text,
                         const std::string &finishReason);
/// A chat choice whose message calls tools: its content (null when none)
/// and "tool_calls"; the finish reason "tool_calls" unless cut ("length").
OutJson toolCallChoice(const ResponseHead &h, int64_t index, const std::string &content,
                       const std::vector<ToolCall> &calls, const std::string &finishReason);
/// A stream chunk's delta of tool calls, the whole of each at once.
OutJson toolCallChunk(const ResponseHead &h, int64_t index, const std::vector<ToolCall> &calls,
                      bool first, bool includeUsage);
/// The whole response of a request that did not stream: its choices and
/// the usage (completion tokens: all choices').
OutJson completionResponse(const ResponseHead &h, const OutJson &choices, const Usage &u);

/// JSON text; bytes of generated text that are not UTF-8 become U+FFFD
/// rather than fail the response (a random model emits any byte).
std::string dumpJson(const OutJson &j);

/// One server-sent event: "data: JSON\n\n".
std::string sseEvent(const OutJson &j);
extern const char *const kSseDone; // "data: [DONE]\n\n"

/// A stream chunk of choice `index` with `text` (chat: a delta whose first
/// chunk also carries the role) and, in its last chunk, the finish reason.
/// With include_usage every chunk carries "usage": null, as OpenAI's do.
OutJson streamChunk(const ResponseHead &h, int64_t index, const std::string &text, bool first,
                    const std::optional<std::string> &finishReason, bool includeUsage);
/// A token's text as the API shows it beside its log-probability.
using TokenText = std::function<std::string(int32_t)>;

/// A choice's "logprobs" for `tokens`, the first starting at byte
/// `textOffset` of the choice's text and each next one after the text its
/// token completed (`texts`, one each). Chat: {"content": [{"token",
/// "logprob", "bytes", "top_logprobs": [...]}]}; completions (as vLLM's):
/// {"tokens", "token_logprobs", "top_logprobs": [{text: logprob}] (the most
/// likely and the token drawn), "text_offset"}.
OutJson logprobsJson(bool chat, const std::vector<TokenLogprobs> &tokens,
                     const std::vector<std::string> &texts, int64_t textOffset,
                     const TokenText &text);
/// Completions' "logprobs" of an echoed prompt (echo with logprobs), as
/// vLLM's: its first token has null for its log-probability and its most
/// likely tokens, each later one scores[i - 1]; `texts` are the tokens'
/// pieces of the echoed text, from byte 0. `generated` (the choice's
/// logprobsJson, its offsets after the echo) follows in the same lists.
OutJson echoLogprobsJson(const std::vector<int32_t> &prompt,
                         const std::vector<TokenLogprobs> &scores,
                         const std::vector<std::string> &texts, const TokenText &text,
                         const OutJson &generated = {});

/// vLLM's "prompt_logprobs": null for the first prompt token, then for each
/// later one (scores[i - 1]) an object of token id (a string) to
/// {"logprob", "rank", "decoded_token"}: the prompt token's and the `top`
/// most likely.
OutJson promptLogprobsJson(const std::vector<TokenLogprobs> &scores, int64_t top,
                           const TokenText &text);

/// The chunk after the last one when include_usage: no choices, the usage.
OutJson usageChunk(const ResponseHead &h, const Usage &u);

} // namespace kvplan::server
