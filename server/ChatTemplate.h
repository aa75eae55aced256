// Chat templates: `messages` rendered into the prompt a model was trained
// with. A model's own template (its Jinja, from the GGUF or
// tokenizer_config.json the artifact was compiled from, or a file given with
// --chat-template) is rendered by kvplan's interpreter (Jinja.h) as
// transformers renders it. Built in, written natively, are the templates of
// the families kvplan runs: Llama 2's [INST] <<SYS>>, Llama 3's header ids,
// ChatML (Qwen2.5, SmolLM2), Qwen3's ChatML with its thoughts, DeepSeek-R1's
// <｜User｜>/<｜Assistant｜> (its Qwen and Llama distills), Mistral's [INST],
// Phi-3's, Gemma's and gpt-oss's harmony (Harmony.h); the family is told by
// the special tokens its vocabulary holds, or named with --chat-template, and
// says how answers are read (tool calls, thoughts, the end of a turn)
// whichever template renders the prompt.
#pragma once

#include "formats/Tokenizer.h"
#include "server/Jinja.h"
#include "server/OpenAiProtocol.h"
#include "spec/ModelSpec.h"

#include <array>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace kvplan::server {

enum class ChatTemplate {
  none, llama2, llama3, chatml, qwen3, deepseek_r1, mistral, phi3, gemma, harmony
};
const char *chatTemplateName(ChatTemplate t);
/// "llama2", "llama3", "chatml", "qwen3", "deepseek-r1", "mistral", "phi3", "gemma",
/// "harmony" (also "gpt-oss") or "none".
std::optional<ChatTemplate> parseChatTemplate(const std::string &name);
extern const char *const kChatTemplateNames; // for help and errors

/// The family the tokenizer's special tokens (or the architecture) say:
/// <｜User｜> and <｜Assistant｜> for DeepSeek-R1 (its distills keep the
/// base model's other tokens), <|start_header_id|> and <|eot_id|> for
/// Llama 3, <|im_start|> and <|im_end|> for ChatML, and Qwen3's when
/// <think> and </think> are tokens too, [INST] as a token or the mistral
/// architecture for Mistral, <|start|>, <|channel|> and <|message|> for
/// harmony; none otherwise. Llama 2's markers are plain
/// text in a vocabulary that base models share, so it is only ever named.
ChatTemplate detectChatTemplate(const Tokenizer *tokenizer, Architecture architecture);

/// ChatML's markers and Qwen2.5's tool format: chatml, and qwen3 on top.
bool isChatMl(ChatTemplate t);
/// The template's models think before they answer, in <think>...</think>
/// (qwen3, deepseek-r1).
bool chatTemplateThinks(ChatTemplate t);
/// The tags a thinking model writes its thought between: Qwen3's and
/// DeepSeek-R1's <think> and </think>; under `mistral`, Magistral's [THINK]
/// and [/THINK] where the vocabulary has them as tokens; none for a model
/// that does not think.
struct ThoughtTags {
  std::string open, close;
};
std::optional<ThoughtTags> thoughtTags(ChatTemplate t, const Tokenizer *tok);
/// The control tokens an answer is read by, with the markers they are read
/// as (they decode to no text): under `mistral`, [THINK], [/THINK],
/// [TOOL_CALLS], [ARGS] and [CALL_ID], those the vocabulary has.
std::vector<std::pair<int32_t, std::string>> answerMarkers(ChatTemplate t, const Tokenizer &tok);
/// `text` (token `token`'s) with the marker of a control token before it.
std::string withMarker(const std::vector<std::pair<int32_t, std::string>> &markers,
                       int32_t token, const std::string &text);

/// The prompt ends inside the thought: DeepSeek-R1's template writes
/// <think>\n after <｜Assistant｜>, so the answer begins with the reasoning.
bool chatTemplateOpensThought(ChatTemplate t);
/// What closes the thought at the end of the prompt, for an answer without
/// thinking (chat_template_kwargs.enable_thinking false): Qwen3's empty
/// thought, or the end of the one DeepSeek-R1's prompt opens; "" for a
/// template whose models do not think.
std::string noThinkingSuffix(ChatTemplate t);

/// A piece of a rendered prompt: text, or a token written as its marker.
struct ChatPiece {
  enum Kind { text, bos, eos, marker } kind = text;
  std::string value; // the text, or how the token is written ("<s>", "<|eot_id|>")
};

/// The prompt for `messages`, ending where the assistant's answer begins.
/// Throws ApiError (400, param "messages") for a conversation the template
/// cannot hold (Llama 2 and Mistral need user and assistant turns to
/// alternate, starting with the user). With `tools`, or tool calls and
/// results among the messages, the template's tool format (llama3, chatml
/// and mistral; the others throw, param "tools"): Llama 3.1's (the functions
/// in the first user message, results as ipython turns), Qwen2.5's (the
/// functions in the system message, calls in <tool_call>, results in
/// <tool_response>) and Mistral v0.3's ([AVAILABLE_TOOLS], [TOOL_CALLS],
/// [TOOL_RESULTS]), and harmony's (Harmony.h: `kwargs` gives it
/// reasoning_effort and model_identity). `end` says where the prompt ends (ChatEnd); continuing
/// the last message cuts the prompt after the last place its content is
/// written, as transformers does (throws ApiError 400, param
/// "continue_final_message", where it is empty or not there), and sets
/// `opensThought` when the template's models think and the content opens a
/// thought it does not close.
std::vector<ChatPiece> renderChat(ChatTemplate t, const std::vector<ChatMessage> &messages,
                                  const std::vector<ToolFunction> &tools = {},
                                  ChatEnd end = ChatEnd::generationPrompt,
                                  bool *opensThought = nullptr,
                                  const nlohmann::ordered_json &kwargs = {});
/// transformers' continue_final_message: where `text` (a rendered prompt)
/// ends if it is to end inside the message whose content is `content`: just
/// after the last place the content is, else the content trimmed of
/// whitespace (as Llama 3.1's template writes it); npos where neither is, or
/// the content is only whitespace.
size_t continueCut(const std::string &text, const std::string &content);
/// The pieces written out, special tokens as their markers: the string the
/// model cards show.
std::string chatText(const std::vector<ChatPiece> &pieces);

/// The built-in templates take one of chat_template_kwargs, enable_thinking
/// (harmony also reasoning_effort and model_identity): throws ApiError 400
/// (param "chat_template_kwargs") for another.
void checkBuiltInKwargs(ChatTemplate t, const nlohmann::ordered_json &kwargs);

/// A model's own chat template: its Jinja and the texts it is given as
/// bos_token and eos_token; and the tokenizer's special tokens, where the
/// text it renders is split (longest first, as Hugging Face's tokenizers
/// split at added tokens).
class ModelChatTemplate {
public:
  /// Throws InputError (naming `origin`) when kvplan cannot read the template.
  ModelChatTemplate(const std::string &source, const std::string &origin, std::string bosToken,
                    std::string eosToken, const Tokenizer &tok);
  const std::string &origin() const { return jinja.origin(); }

  /// The prompt for `messages`: the template given messages, tools (null
  /// without), add_generation_prompt true, bos_token, eos_token and the
  /// request's chat_template_kwargs (enable_thinking among them), as
  /// transformers and vLLM give them; a tool call's arguments parsed from
  /// their JSON text. `opensThought` is set when the prompt ends inside a
  /// thought (its last text is <think>); with enable_thinking false the
  /// thought is closed. Throws ApiError 400 (param "messages") with the
  /// template's raise_exception message, or its error. `end` as renderChat
  /// takes it: add_generation_prompt false but for the default, and the
  /// thought closed only then.
  std::vector<ChatPiece> render(const std::vector<ChatMessage> &messages,
                                const std::vector<ToolFunction> &tools,
                                const nlohmann::ordered_json &kwargs, bool *opensThought,
                                ChatEnd end = ChatEnd::generationPrompt) const;
  /// `text` as pieces: the special tokens in it as markers, the rest text.
  std::vector<ChatPiece> split(const std::string &text) const;

private:
  JinjaTemplate jinja;
  std::string bos, eos;
  std::array<std::vector<std::string>, 256> specials; // by first byte, longest first
};

/// Token ids for the pieces: text is encoded without BOS, a marker is its
/// special token when the vocabulary has one, else text (so a template can
/// run, as text, on a model without its tokens, e.g. the byte tokenizer).
/// Text is split only at special tokens, as Hugging Face's tokenizers do.
std::vector<int32_t> tokenizeChat(const Tokenizer &tok, const std::vector<ChatPiece> &pieces);

/// Where the assistant's turn ends besides the model's end-of-sequence ids:
/// the end-of-turn token (<|eot_id|>, <|im_end|>; harmony's <|return|> and
/// <|call|>, not its <|end|>, which ends a thought) as an id when the
/// vocabulary has it, else as a stop string.
struct TurnEnd {
  std::vector<int32_t> ids;
  std::vector<std::string> strings;
};
TurnEnd turnEnd(ChatTemplate t, const Tokenizer &tok);

} // namespace kvplan::server
