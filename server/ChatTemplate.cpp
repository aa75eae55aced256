// The chat templates, each as its model card and Hugging Face chat_template
// write it (whitespace included: a model sees every byte).
#include "server/ChatTemplate.h"

#include "server/Harmony.h"
#include "server/ToolCalls.h"

#include <algorithm>

namespace kvplan::server {

namespace {
// DeepSeek's markers are written with fullwidth bars (U+FF5C) and, in
// begin/end of sentence, U+2581 for the spaces.
const char *const kDeepSeekBos = "<\uFF5Cbegin\u2581of\u2581sentence\uFF5C>";
const char *const kDeepSeekEos = "<\uFF5Cend\u2581of\u2581sentence\uFF5C>";
const char *const kDeepSeekUser = "<\uFF5CUser\uFF5C>";
const char *const kDeepSeekAssistant = "<\uFF5CAssistant\uFF5C>";
} // namespace

const char *const kChatTemplateNames =
    "llama2, llama3, chatml, qwen3, deepseek-r1, mistral, phi3, gemma, harmony, none";

const char *chatTemplateName(ChatTemplate t) {
  switch (t) {
  case ChatTemplate::none: return "none";
  case ChatTemplate::llama2: return "llama2";
  case ChatTemplate::llama3: return "llama3";
  case ChatTemplate::chatml: return "chatml";
  case ChatTemplate::qwen3: return "qwen3";
  case ChatTemplate::deepseek_r1: return "deepseek-r1";
  case ChatTemplate::mistral: return "mistral";
  case ChatTemplate::phi3: return "phi3";
  case ChatTemplate::gemma: return "gemma";
  case ChatTemplate::harmony: return "harmony";
  }
  return "?";
}

std::optional<ChatTemplate> parseChatTemplate(const std::string &name) {
  for (ChatTemplate t : {ChatTemplate::none, ChatTemplate::llama2, ChatTemplate::llama3,
                         ChatTemplate::chatml, ChatTemplate::qwen3, ChatTemplate::deepseek_r1,
                         ChatTemplate::mistral, ChatTemplate::phi3, ChatTemplate::gemma,
                         ChatTemplate::harmony})
    if (name == chatTemplateName(t)) return t;
  if (name == "gpt-oss") return ChatTemplate::harmony;
  return std::nullopt;
}

ChatTemplate detectChatTemplate(const Tokenizer *tok, Architecture architecture) {
  if (tok) {
    auto has = [&](const char *piece) { return tok->specialTokenId(piece) >= 0; };
    if (has(kDeepSeekUser) && has(kDeepSeekAssistant)) return ChatTemplate::deepseek_r1;
    if (has("<|start|>") && has("<|channel|>") && has("<|message|>")) return ChatTemplate::harmony;
    if (has("<|start_header_id|>") && has("<|eot_id|>")) return ChatTemplate::llama3;
    if (has("<|user|>") && has("<|assistant|>") && has("<|end|>")) return ChatTemplate::phi3;
    if (has("<start_of_turn>") && has("<end_of_turn>")) return ChatTemplate::gemma;
    // Phi-4 writes <|im_start|>user<|im_sep|>: not ChatML, and no built-in.
    if (has("<|im_sep|>")) return ChatTemplate::none;
    if (has("<|im_start|>") && has("<|im_end|>"))
      return has("<think>") && has("</think>") ? ChatTemplate::qwen3 : ChatTemplate::chatml;
    if (has("[INST]")) return ChatTemplate::mistral; // Mistral's v3 tokenizer
  }
  if (architecture == Architecture::mistral && tok) return ChatTemplate::mistral;
  return ChatTemplate::none;
}

bool isChatMl(ChatTemplate t) { return t == ChatTemplate::chatml || t == ChatTemplate::qwen3; }

bool chatTemplateThinks(ChatTemplate t) {
  return t == ChatTemplate::qwen3 || t == ChatTemplate::deepseek_r1;
}

bool chatTemplateOpensThought(ChatTemplate t) { return t == ChatTemplate::deepseek_r1; }

std::optional<ThoughtTags> thoughtTags(ChatTemplate t, const Tokenizer *tok) {
  if (!tok) return std::nullopt;
  if (chatTemplateThinks(t)) return ThoughtTags{"<think>", "</think>"};
  if (t == ChatTemplate::mistral && tok->specialTokenId("[THINK]") >= 0 &&
      tok->specialTokenId("[/THINK]") >= 0)
    return ThoughtTags{"[THINK]", "[/THINK]"};
  return std::nullopt;
}

std::vector<std::pair<int32_t, std::string>> answerMarkers(ChatTemplate t, const Tokenizer &tok) {
  std::vector<std::pair<int32_t, std::string>> out;
  if (t != ChatTemplate::mistral) return out;
  for (const char *m : {"[THINK]", "[/THINK]", "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"})
    if (const int32_t id = tok.specialTokenId(m); id >= 0) out.emplace_back(id, m);
  return out;
}

std::string withMarker(const std::vector<std::pair<int32_t, std::string>> &markers,
                       int32_t token, const std::string &text) {
  for (const auto &[id, marker] : markers)
    if (token >= 0 && token == id) return marker + text;
  return text;
}

std::string noThinkingSuffix(ChatTemplate t) {
  if (t == ChatTemplate::qwen3) return "<think>\n\n</think>\n\n";
  if (t == ChatTemplate::deepseek_r1) return "\n</think>\n\n"; // after its "<think>\n"
  return "";
}

namespace {

std::string strip(const std::string &s) {
  const char *space = " \t\n\r\f\v";
  const size_t b = s.find_first_not_of(space);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(space) - b + 1);
}

ChatPiece text(std::string s) { return {ChatPiece::text, std::move(s)}; }
ChatPiece marker(std::string s) { return {ChatPiece::marker, std::move(s)}; }

/// Llama 2 and Mistral: after an optional system message, user and
/// assistant alternate, starting with the user (their templates raise
/// otherwise).
void checkAlternating(const std::vector<ChatMessage> &m, size_t from, const char *family) {
  for (size_t i = from; i < m.size(); ++i) {
    const bool userTurn = (i - from) % 2 == 0;
    if (m[i].role != (userTurn ? "user" : "assistant"))
      throw badField("messages", std::string("the ") + family +
                                     " chat template needs a system message only first, then "
                                     "user and assistant messages alternating from a user one; "
                                     "messages[" + std::to_string(i) + "] is " + m[i].role);
  }
}

/// <s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {answer} </s>
/// <s>[INST] {user} [/INST]
std::vector<ChatPiece> renderLlama2(const std::vector<ChatMessage> &m) {
  const bool system = !m.empty() && m[0].role == "system";
  const size_t from = system ? 1 : 0;
  checkAlternating(m, from, "llama2");
  std::vector<ChatPiece> out;
  for (size_t i = from; i < m.size(); ++i) {
    if (m[i].role == "user") {
      std::string content = m[i].content;
      if (i == from && system) content = "<<SYS>>\n" + m[0].content + "\n<</SYS>>\n\n" + content;
      out.push_back({ChatPiece::bos, "<s>"});
      out.push_back(text("[INST] " + strip(content) + " [/INST]"));
    } else {
      out.push_back(text(" " + strip(m[i].content) + " "));
      out.push_back({ChatPiece::eos, "</s>"});
    }
  }
  return out;
}

/// <s>[INST] {user}[/INST] {answer}</s>[INST] {system}\n\n{last user}[/INST]
/// (Mistral's v3 format: the system message goes with the last user turn).
std::string argumentsJson(const ToolCall &c, size_t i);

/// Mistral's call ids are 9 characters: a longer id (another server's
/// "call_..." ids) is cut to its last 9, as vLLM cuts them for Mistral; a
/// shorter one is refused, as Mistral's template refuses it.
std::string mistralCallId(const std::string &id, const std::string &field) {
  if (id.size() < 9)
    throw badField("messages", field + " is \"" + id + "\"; Mistral's chat template takes "
                               "tool call ids of 9 letters or digits");
  return id.substr(id.size() - 9);
}

/// A call and a result as Mistral v0.3's template writes them:
/// [TOOL_CALLS] [{"name": ..., "arguments": ..., "id": ...}, ...]</s> and
/// [TOOL_RESULTS] {"content": ..., "call_id": ...}[/TOOL_RESULTS].
void mistralToolTurn(const std::vector<ChatMessage> &m, size_t i, std::vector<ChatPiece> &out) {
  const std::string at = "messages[" + std::to_string(i) + "]";
  if (m[i].role == "tool") {
    out.push_back(marker("[TOOL_RESULTS]"));
    out.push_back(text(" {\"content\": " + m[i].content + ", \"call_id\": \"" +
                       mistralCallId(m[i].toolCallId, at + ".tool_call_id") + "\"}"));
    out.push_back(marker("[/TOOL_RESULTS]"));
    return;
  }
  std::string calls = " [";
  for (size_t j = 0; j < m[i].toolCalls.size(); ++j) {
    const ToolCall &c = m[i].toolCalls[j];
    calls += std::string(j ? ", " : "") + "{\"name\": " +
             pythonJson(nlohmann::ordered_json(c.name)) + ", \"arguments\": " +
             argumentsJson(c, i) + ", \"id\": \"" +
             mistralCallId(c.id, at + ".tool_calls[" + std::to_string(j) + "].id") + "\"}";
  }
  out.push_back(marker("[TOOL_CALLS]"));
  out.push_back(text(calls + "]"));
  out.push_back({ChatPiece::eos, "</s>"});
}

/// <s>[INST] {user}[/INST] {answer}</s>...[INST] {system}\n\n{last user}[/INST]:
/// Mistral's format (v0.3's template), the system message with the user
/// message that ends the conversation (none where another ends it, as that
/// template writes it). With tools, the functions in [AVAILABLE_TOOLS]
/// before the last user message, and calls and results in their own
/// markers (mistralToolTurn); the user and answer turns alternate around
/// them.
std::vector<ChatPiece> renderMistral(const std::vector<ChatMessage> &m,
                                     const std::vector<ToolFunction> &tools) {
  const bool system = !m.empty() && m[0].role == "system";
  const size_t from = system ? 1 : 0;
  std::vector<ChatMessage> turns; // without calls and results
  for (size_t i = from; i < m.size(); ++i)
    if (m[i].role != "tool" && m[i].toolCalls.empty()) turns.push_back(m[i]);
  checkAlternating(turns, 0, "mistral");
  size_t lastUser = m.size();
  for (size_t i = from; i < m.size(); ++i)
    if (m[i].role == "user") lastUser = i;
  std::vector<ChatPiece> out{{ChatPiece::bos, "<s>"}};
  for (size_t i = from; i < m.size(); ++i) {
    if (m[i].role == "tool" || !m[i].toolCalls.empty()) {
      mistralToolTurn(m, i, out);
    } else if (m[i].role == "user") {
      std::string content = m[i].content;
      if (i == lastUser && !tools.empty()) {
        std::string list = " [";
        for (size_t t = 0; t < tools.size(); ++t)
          list += std::string(t ? ", " : "") + pythonJson(toolJson(tools[t]));
        out.push_back(marker("[AVAILABLE_TOOLS]"));
        out.push_back(text(list + "]"));
        out.push_back(marker("[/AVAILABLE_TOOLS]"));
      }
      if (i + 1 == m.size() && system) content = m[0].content + "\n\n" + content;
      out.push_back(marker("[INST]"));
      out.push_back(text(" " + content));
      out.push_back(marker("[/INST]"));
    } else {
      out.push_back(text(" " + strip(m[i].content)));
      out.push_back({ChatPiece::eos, "</s>"});
    }
  }
  return out;
}

/// <|system|>\n{system}<|end|>\n<|user|>\n{user}<|end|>\n<|assistant|>\n{answer}<|end|>\n
/// ... <|assistant|>\n: Phi-3's and Phi-3.5's format (their templates' turns,
/// as llama.cpp's built-in phi3 writes them); other roles have no marker.
std::vector<ChatPiece> renderPhi3(const std::vector<ChatMessage> &m, bool generation) {
  std::vector<ChatPiece> out;
  for (size_t i = 0; i < m.size(); ++i) {
    const std::string &role = m[i].role;
    if (role != "system" && role != "user" && role != "assistant")
      throw badField("messages", "the phi3 chat template has system, user and assistant turns; "
                                 "messages[" + std::to_string(i) + "] is " + role);
    out.push_back(marker("<|" + role + "|>"));
    out.push_back(text("\n" + m[i].content));
    out.push_back(marker("<|end|>"));
    out.push_back(text("\n"));
  }
  if (generation) {
    out.push_back(marker("<|assistant|>"));
    out.push_back(text("\n"));
  }
  return out;
}

/// <bos><start_of_turn>user\n{system}\n\n{user}<end_of_turn>\n<start_of_turn>model\n
/// {answer}<end_of_turn>\n ... <start_of_turn>model\n: Gemma's (Gemma 3's
/// template: a system message opens the first user turn, each content
/// trimmed, user and model alternating from a user turn).
std::vector<ChatPiece> renderGemma(const std::vector<ChatMessage> &m, bool generation) {
  const bool system = !m.empty() && m[0].role == "system";
  const size_t from = system ? 1 : 0;
  checkAlternating(m, from, "gemma");
  std::vector<ChatPiece> out = {{ChatPiece::bos, "<bos>"}};
  for (size_t i = from; i < m.size(); ++i) {
    const bool user = m[i].role == "user";
    out.push_back(marker("<start_of_turn>"));
    out.push_back(text(std::string(user ? "user" : "model") + "\n" +
                       (i == from && system ? m[0].content + "\n\n" : "") + strip(m[i].content)));
    out.push_back(marker("<end_of_turn>"));
    out.push_back(text("\n"));
  }
  if (generation) {
    out.push_back(marker("<start_of_turn>"));
    out.push_back(text("model\n"));
  }
  return out;
}

/// A call's arguments as the templates write them: JSON text parsed (as
/// vLLM and transformers hand them to a template) and written by tojson.
std::string argumentsJson(const ToolCall &c, size_t i) {
  const auto args = nlohmann::ordered_json::parse(c.arguments, nullptr, false);
  if (args.is_discarded())
    throw badField("messages", "messages[" + std::to_string(i) + "].tool_calls: the arguments of "
                               "'" + c.name + "' are not JSON");
  return pythonJson(args);
}

/// Llama 3.1's first user message with tools: the functions, then the text.
std::string llama3ToolsPreamble(const std::vector<ToolFunction> &tools) {
  std::string s = "Given the following functions, please respond with a JSON for a function call "
                  "with its proper arguments that best answers the given prompt.\n\nRespond in "
                  "the format {\"name\": function name, \"parameters\": dictionary of argument "
                  "name and its value}.Do not use variables.\n\n";
  for (const ToolFunction &t : tools) s += pythonJson(toolJson(t), 4) + "\n\n";
  return s;
}

/// <|begin_of_text|> then per message <|start_header_id|>{role}
/// <|end_header_id|>\n\n{content, stripped}<|eot_id|>, then the assistant's
/// header. With tools, as Llama 3.1's template: a system turn with
/// "Environment: ipython" and its dates, the functions before the first
/// user message, a call as {"name": ..., "parameters": ...}, a result as an
/// ipython turn.
std::vector<ChatPiece> renderLlama3(const std::vector<ChatMessage> &m,
                                    const std::vector<ToolFunction> &tools, bool generation) {
  std::vector<ChatPiece> out{{ChatPiece::bos, "<|begin_of_text|>"}};
  auto header = [&](const std::string &role) {
    out.push_back(marker("<|start_header_id|>"));
    out.push_back(text(role));
    out.push_back(marker("<|end_header_id|>"));
    out.push_back(text("\n\n"));
  };
  auto turn = [&](const std::string &role, const std::string &content) {
    header(role);
    out.push_back(text(content));
    out.push_back(marker("<|eot_id|>"));
  };
  const bool system = !m.empty() && m[0].role == "system";
  if (!tools.empty())
    turn("system", "Environment: ipython\nCutting Knowledge Date: December 2023\nToday Date: 26 "
                   "Jul 2024\n\n" + (system ? strip(m[0].content) : ""));
  bool firstUser = true;
  for (size_t i = tools.empty() || !system ? 0 : 1; i < m.size(); ++i) {
    const ChatMessage &msg = m[i];
    if (msg.role == "user" && firstUser && !tools.empty()) {
      turn("user", llama3ToolsPreamble(tools) + strip(msg.content));
      firstUser = false;
    } else if (!msg.toolCalls.empty()) {
      if (msg.toolCalls.size() > 1)
        throw badField("messages", "messages[" + std::to_string(i) + "]: Llama 3.1's template "
                                   "holds one tool call a message");
      const ToolCall &c = msg.toolCalls[0];
      turn("assistant", "{\"name\": \"" + c.name + "\", \"parameters\": " +
                            argumentsJson(c, i) + "}");
    } else if (msg.role == "tool") { // the template's tojson quotes a string result
      turn("ipython", pythonJson(nlohmann::ordered_json(msg.content)));
    } else {
      firstUser = firstUser && msg.role != "user";
      turn(msg.role, strip(msg.content));
    }
  }
  if (!tools.empty() && firstUser)
    throw badField("messages", "Llama 3.1's template puts the tools in the first user message, "
                               "and there is none");
  if (generation) header("assistant");
  return out;
}

/// Qwen2.5's system message with tools: the given one (if any), then the
/// functions and the call format.
std::string chatMlToolsSystem(const std::string &system, const std::vector<ToolFunction> &tools) {
  std::string s = system.empty() ? "" : system + "\n\n";
  s += "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are "
       "provided with function signatures within <tools></tools> XML tags:\n<tools>";
  for (const ToolFunction &t : tools) s += "\n" + pythonJson(toolJson(t));
  return s + "\n</tools>\n\nFor each function call, return a json object with function name and "
             "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": "
             "<function-name>, \"arguments\": <args-json-object>}\n</tool_call>";
}

/// Where Qwen3's template stops leaving out thoughts: the last user message
/// that is not a tool's result written by hand (<tool_response>...), or the
/// last message when there is none.
size_t lastQuery(const std::vector<ChatMessage> &m) {
  auto wrapped = [](const std::string &c) {
    const std::string open = "<tool_response>", close = "</tool_response>";
    return c.compare(0, open.size(), open) == 0 && c.size() >= close.size() &&
           c.compare(c.size() - close.size(), close.size(), close) == 0;
  };
  for (size_t i = m.size(); i-- > 0;)
    if (m[i].role == "user" && !wrapped(m[i].content)) return i;
  return m.size() - 1;
}

std::string stripNewlines(std::string s, bool front, bool back) {
  if (back) s.erase(s.find_last_not_of('\n') + 1);
  if (front) s.erase(0, std::min(s.find_first_not_of('\n'), s.size()));
  return s;
}

/// Qwen3's assistant message m[i]: its thought as the template writes it
/// back (after the last user query, or ending the conversation; else none),
/// and its content without the thought.
struct Qwen3Answer {
  std::string thought, content;
};
Qwen3Answer qwen3Answer(const std::vector<ChatMessage> &m, size_t i, size_t query) {
  std::string content = m[i].content, reasoning;
  const size_t close = content.find("</think>");
  if (m[i].reasoning) {
    reasoning = *m[i].reasoning;
  } else if (close != std::string::npos) {
    reasoning = stripNewlines(content.substr(0, close), false, true);
    const size_t open = reasoning.rfind("<think>");
    if (open != std::string::npos) reasoning.erase(0, open + 7);
    reasoning = stripNewlines(reasoning, true, false);
    content = stripNewlines(content.substr(content.rfind("</think>") + 8), true, false);
  }
  if (i > query && (i + 1 == m.size() || !reasoning.empty()))
    return {"<think>\n" + stripNewlines(reasoning, true, true) + "\n</think>\n\n",
            stripNewlines(content, true, false)};
  return {"", content};
}

/// <|im_start|>{role}\n{content}<|im_end|>\n per message, then
/// <|im_start|>assistant\n. With tools, as Qwen2.5's template: the
/// functions in the system message, an assistant's calls after its content
/// as <tool_call>\n{"name": ..., "arguments": ...}\n</tool_call>, and tool
/// results, those in a row together, as one user turn of <tool_response>s.
/// Qwen3's (`qwen3`) is the same but for the assistant's thoughts.
std::vector<ChatPiece> renderChatMl(const std::vector<ChatMessage> &m,
                                    const std::vector<ToolFunction> &tools, bool qwen3,
                                    bool generation) {
  std::vector<ChatPiece> out;
  auto turn = [&](const std::string &body) {
    out.push_back(marker("<|im_start|>"));
    out.push_back(text(body));
    out.push_back(marker("<|im_end|>"));
    out.push_back(text("\n"));
  };
  const bool system = !m.empty() && m[0].role == "system";
  const size_t query = qwen3 ? lastQuery(m) : 0;
  if (!tools.empty()) turn("system\n" + chatMlToolsSystem(system ? m[0].content : "", tools));
  for (size_t i = !tools.empty() && system ? 1 : 0; i < m.size(); ++i) {
    const ChatMessage &msg = m[i];
    const Qwen3Answer answer = qwen3 && msg.role == "assistant" ? qwen3Answer(m, i, query)
                                                                 : Qwen3Answer{"", msg.content};
    const std::string &content = answer.content;
    if (msg.role == "tool") {
      std::string body = "user";
      for (; i < m.size() && m[i].role == "tool"; ++i)
        body += "\n<tool_response>\n" + m[i].content + "\n</tool_response>";
      --i;
      turn(body);
    } else if (!msg.toolCalls.empty()) {
      std::string body = "assistant\n" + answer.thought + content;
      for (size_t k = 0; k < msg.toolCalls.size(); ++k)
        body += std::string(k > 0 || !content.empty() ? "\n" : "") + "<tool_call>\n{\"name\": \"" +
                msg.toolCalls[k].name + "\", \"arguments\": " +
                argumentsJson(msg.toolCalls[k], i) + "}\n</tool_call>";
      turn(body);
    } else {
      turn(msg.role + "\n" + answer.thought + content);
    }
  }
  if (!generation) return out;
  out.push_back(marker("<|im_start|>"));
  out.push_back(text("assistant\n"));
  return out;
}

/// DeepSeek-R1's (its distills'): BOS, the system message, then
/// <｜User｜>{user} and <｜Assistant｜>{answer}<｜end▁of▁sentence｜>, an
/// answer without its thought (what follows its last </think>), and the
/// prompt ends <｜Assistant｜><think>\n: the model's answer starts inside
/// its thought.
std::vector<ChatPiece> renderDeepSeekR1(const std::vector<ChatMessage> &m, bool generation) {
  std::string system; // the template keeps the last system message
  for (const ChatMessage &msg : m)
    if (msg.role == "system") system = msg.content;
  std::vector<ChatPiece> out{{ChatPiece::bos, kDeepSeekBos}, text(system)};
  for (const ChatMessage &msg : m) {
    if (msg.role == "user") {
      out.push_back(marker(kDeepSeekUser));
      out.push_back(text(msg.content));
    } else if (msg.role == "assistant") {
      const size_t close = msg.content.rfind("</think>");
      out.push_back(marker(kDeepSeekAssistant));
      out.push_back(text(close == std::string::npos ? msg.content : msg.content.substr(close + 8)));
      out.push_back({ChatPiece::eos, kDeepSeekEos});
    }
  }
  if (!generation) return out;
  out.push_back(marker(kDeepSeekAssistant));
  out.push_back(marker("<think>"));
  out.push_back(text("\n"));
  return out;
}

/// Whether the conversation holds tool calls or results.
bool mentionsTools(const std::vector<ChatMessage> &m) {
  for (const ChatMessage &msg : m)
    if (msg.role == "tool" || !msg.toolCalls.empty()) return true;
  return false;
}

/// The pieces up to `end` characters of their text (a piece cut there keeps
/// its start).
void truncatePieces(std::vector<ChatPiece> &pieces, size_t end) {
  size_t at = 0, i = 0;
  for (; i < pieces.size() && at + pieces[i].value.size() <= end; ++i) at += pieces[i].value.size();
  if (i < pieces.size() && at < end) {
    pieces[i].value.resize(end - at);
    pieces[i].kind = ChatPiece::text;
    ++i;
  }
  pieces.resize(i);
}

/// The family's prompt, ending where a new answer begins or after the last
/// message (Llama 2's and Mistral's prompts end after the last user turn
/// either way: [/INST] is their answer's start).
std::vector<ChatPiece> renderFamily(ChatTemplate t, const std::vector<ChatMessage> &messages,
                                    const std::vector<ToolFunction> &tools, bool generation,
                                    const nlohmann::ordered_json &kwargs) {
  switch (t) {
  case ChatTemplate::llama2: return renderLlama2(messages);
  case ChatTemplate::llama3: return renderLlama3(messages, tools, generation);
  case ChatTemplate::chatml: return renderChatMl(messages, tools, false, generation);
  case ChatTemplate::qwen3: return renderChatMl(messages, tools, true, generation);
  case ChatTemplate::deepseek_r1: return renderDeepSeekR1(messages, generation);
  case ChatTemplate::mistral: return renderMistral(messages, tools);
  case ChatTemplate::phi3: return renderPhi3(messages, generation);
  case ChatTemplate::gemma: return renderGemma(messages, generation);
  case ChatTemplate::harmony:
    return renderHarmony(messages, tools, kwargs, generation, harmonyToday());
  case ChatTemplate::none: break;
  }
  throw ApiError(400, "this model has no chat template: use /v1/completions, or start the "
                      "server with --chat-template FILE or NAME (" +
                      std::string(kChatTemplateNames) + ")", "messages");
}

/// Whether the answer continued at the end of `content` is inside a thought:
/// its last <think> is not closed.
bool endsInThought(const std::string &content) {
  const size_t open = content.rfind("<think>"), close = content.rfind("</think>");
  return open != std::string::npos && (close == std::string::npos || close < open);
}

/// The 400 for a last message that cannot be continued: empty, or its
/// content not written by the template as given.
ApiError notContinuable(const std::string &content) {
  if (content.find_first_not_of(" \t\n\r\v\f") == std::string::npos)
    return badField("continue_final_message",
                    "the last message is empty: there is nothing to continue; give the answer's "
                    "beginning as its content, or leave out continue_final_message");
  return badField("continue_final_message",
                  "the chat template did not write the last message's content as given, so "
                  "the prompt cannot end inside it; leave out continue_final_message");
}

} // namespace

size_t continueCut(const std::string &text, const std::string &content) {
  const char *space = " \t\n\r\v\f";
  const size_t first = content.find_first_not_of(space);
  if (first == std::string::npos) return std::string::npos;
  size_t at = text.rfind(content);
  if (at != std::string::npos) return at + content.size();
  // As transformers: some templates (Llama 3.1's) trim the content first.
  const std::string trimmed =
      content.substr(first, content.find_last_not_of(space) - first + 1);
  at = text.rfind(trimmed);
  return at == std::string::npos ? at : at + trimmed.size();
}

std::vector<ChatPiece> renderChat(ChatTemplate t, const std::vector<ChatMessage> &messages,
                                  const std::vector<ToolFunction> &tools, ChatEnd end,
                                  bool *opensThought, const nlohmann::ordered_json &kwargs) {
  if (t != ChatTemplate::none && (!tools.empty() || mentionsTools(messages)))
    checkToolTemplate(t);
  std::vector<ChatPiece> pieces =
      renderFamily(t, messages, tools, end == ChatEnd::generationPrompt, kwargs);
  if (opensThought) *opensThought = false;
  if (end != ChatEnd::continueLastMessage || messages.empty()) return pieces;
  const size_t cut = continueCut(chatText(pieces), messages.back().content);
  if (cut == std::string::npos) throw notContinuable(messages.back().content);
  truncatePieces(pieces, cut);
  if (opensThought) *opensThought = chatTemplateThinks(t) && endsInThought(messages.back().content);
  return pieces;
}

std::string chatText(const std::vector<ChatPiece> &pieces) {
  std::string s;
  for (const ChatPiece &p : pieces) s += p.value;
  return s;
}

std::vector<int32_t> tokenizeChat(const Tokenizer &tok, const std::vector<ChatPiece> &pieces) {
  std::vector<int32_t> out;
  std::string pending; // text since the last special token
  auto flush = [&] {
    if (pending.empty()) return;
    const std::vector<int32_t> ids = tok.encode(pending, false);
    out.insert(out.end(), ids.begin(), ids.end());
    pending.clear();
  };
  for (const ChatPiece &p : pieces) {
    int32_t id = -1;
    if (p.kind == ChatPiece::bos)
      id = tok.bosId() >= 0 ? tok.bosId() : tok.specialTokenId(p.value);
    else if (p.kind == ChatPiece::eos)
      id = tok.specialTokenId(p.value) >= 0 ? tok.specialTokenId(p.value)
           : tok.eosIds().empty()           ? -1
                                            : tok.eosIds()[0];
    else if (p.kind == ChatPiece::marker)
      id = tok.specialTokenId(p.value);
    if (id < 0) {
      // Text, or a marker the vocabulary lacks; BOS and EOS the tokenizer
      // lacks are left out, as its templates' bos_token would be empty.
      if (p.kind == ChatPiece::text || p.kind == ChatPiece::marker) pending += p.value;
      continue;
    }
    flush();
    out.push_back(id);
  }
  flush();
  return out;
}

TurnEnd turnEnd(ChatTemplate t, const Tokenizer &tok) {
  TurnEnd e;
  auto endsAt = [&](const char *marker) {
    const int32_t id = tok.specialTokenId(marker);
    if (id >= 0)
      e.ids.push_back(id);
    else
      e.strings.push_back(marker);
  };
  if (t == ChatTemplate::harmony) {
    endsAt("<|return|>");
    endsAt("<|call|>");
    return e;
  }
  const char *marker = t == ChatTemplate::llama3 ? "<|eot_id|>"
                       : isChatMl(t)                ? "<|im_end|>"
                       : t == ChatTemplate::phi3    ? "<|end|>"
                       : t == ChatTemplate::gemma   ? "<end_of_turn>"
                                                    : nullptr;
  if (marker) endsAt(marker); // Llama 2, Mistral and DeepSeek-R1 end a turn with EOS
  return e;
}


void checkBuiltInKwargs(ChatTemplate t, const nlohmann::ordered_json &kwargs) {
  if (t == ChatTemplate::harmony) return checkHarmonyKwargs(kwargs);
  for (auto it = kwargs.begin(); it != kwargs.end(); ++it)
    if (it.key() != "enable_thinking")
      throw badField("chat_template_kwargs",
                     "chat_template_kwargs." + it.key() + " is not offered: this server's chat "
                     "template is kvplan's built-in " + chatTemplateName(t) + ", which takes "
                     "only enable_thinking (a model's own Jinja template takes any: start the "
                     "server with --chat-template FILE)");
}

ModelChatTemplate::ModelChatTemplate(const std::string &source, const std::string &origin,
                                     std::string bosToken, std::string eosToken,
                                     const Tokenizer &tok)
    : jinja(source, origin), bos(std::move(bosToken)), eos(std::move(eosToken)) {
  // Where the template's source does not say, the tokenizer's own BOS and
  // EOS (as llama.cpp gives a GGUF's).
  const std::vector<int32_t> eosIds = tok.eosIds();
  for (auto &[text, id] : tok.specialTokens()) {
    if (text.empty()) continue;
    specials[static_cast<unsigned char>(text[0])].push_back(text);
    if (id == tok.bosId() && bos.empty()) bos = text;
    if (!eosIds.empty() && id == eosIds[0] && eos.empty()) eos = text;
  }
  for (std::vector<std::string> &bucket : specials)
    std::sort(bucket.begin(), bucket.end(), [](const std::string &a, const std::string &b) {
      return a.size() != b.size() ? a.size() > b.size() : a < b;
    });
}

std::vector<ChatPiece> ModelChatTemplate::split(const std::string &text) const {
  std::vector<ChatPiece> out;
  std::string pending;
  for (size_t i = 0; i < text.size();) {
    const std::string *found = nullptr;
    for (const std::string &s : specials[static_cast<unsigned char>(text[i])])
      if (text.compare(i, s.size(), s) == 0) {
        found = &s;
        break;
      }
    if (!found) {
      pending += text[i++];
      continue;
    }
    if (!pending.empty()) out.push_back({ChatPiece::text, std::move(pending)});
    pending.clear();
    out.push_back({ChatPiece::marker, *found});
    i += found->size();
  }
  if (!pending.empty()) out.push_back({ChatPiece::text, std::move(pending)});
  return out;
}

namespace {

/// The messages as transformers gives them to a template: role and
/// content, an assistant's tool_calls (arguments parsed) and
/// reasoning_content, a tool result's tool_call_id.
nlohmann::ordered_json templateMessages(const std::vector<ChatMessage> &messages) {
  using ojson = nlohmann::ordered_json;
  ojson out = ojson::array();
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage &m = messages[i];
    ojson j = {{"role", m.role}, {"content", m.content}};
    if (!m.toolCalls.empty()) {
      ojson calls = ojson::array();
      for (const ToolCall &c : m.toolCalls) {
        ojson args = ojson::parse(c.arguments, nullptr, false);
        if (args.is_discarded())
          throw badField("messages", "messages[" + std::to_string(i) + "].tool_calls: the "
                                     "arguments of '" + c.name + "' are not JSON");
        calls.push_back({{"id", c.id}, {"type", "function"},
                         {"function", {{"name", c.name}, {"arguments", args}}}});
      }
      j["tool_calls"] = calls;
    }
    if (!m.toolCallId.empty()) j["tool_call_id"] = m.toolCallId;
    if (m.reasoning) { // Qwen3's templates read reasoning_content; gpt-oss's thinking
      j["reasoning_content"] = *m.reasoning;
      j["thinking"] = *m.reasoning;
    }
    out.push_back(std::move(j));
  }
  return out;
}

} // namespace

std::vector<ChatPiece> ModelChatTemplate::render(const std::vector<ChatMessage> &messages,
                                                 const std::vector<ToolFunction> &tools,
                                                 const nlohmann::ordered_json &kwargs,
                                                 bool *opensThought, ChatEnd end) const {
  nlohmann::ordered_json context = kwargs.is_object() ? kwargs : nlohmann::ordered_json::object();
  context["messages"] = templateMessages(messages);
  context["tools"] = nullptr;
  for (const ToolFunction &t : tools) context["tools"].push_back(toolJson(t));
  context["add_generation_prompt"] = end == ChatEnd::generationPrompt;
  context["bos_token"] = bos;
  context["eos_token"] = eos;
  std::string text;
  try {
    text = jinja.render(context);
  } catch (const JinjaError &e) {
    throw badField("messages", e.raised() ? std::string(e.what())
                                          : std::string("the model's chat template failed on "
                                                        "these messages: ") + e.what());
  }
  if (end != ChatEnd::generationPrompt) {
    if (opensThought) *opensThought = false;
    if (end == ChatEnd::afterLastMessage || messages.empty()) return split(text);
    const size_t cut = continueCut(text, messages.back().content);
    if (cut == std::string::npos) throw notContinuable(messages.back().content);
    text.resize(cut);
    if (opensThought) *opensThought = endsInThought(messages.back().content);
    return split(text);
  }
  // The thought the prompt opens (DeepSeek-R1's <think>\n), closed when
  // thinking is off and the template did not read enable_thinking.
  const size_t last = text.find_last_not_of(" \t\r\n");
  const bool open = last != std::string::npos && last + 1 >= 7 &&
                    text.compare(last + 1 - 7, 7, "<think>") == 0;
  const auto thinking = kwargs.find("enable_thinking");
  const bool off = thinking != kwargs.end() && thinking->is_boolean() && !thinking->get<bool>();
  if (open && off) text += text.back() == '\n' ? "\n</think>\n\n" : "\n\n</think>\n\n";
  if (opensThought) *opensThought = open && !off;
  return split(text);
}

} // namespace kvplan::server
