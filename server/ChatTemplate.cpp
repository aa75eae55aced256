// The chat templates, each as its model card and Hugging Face chat_template
// write it (whitespace included: a model sees every byte).
#include "server/ChatTemplate.h"

#include "server/ToolCalls.h"

namespace kvplan::server {

const char *const kChatTemplateNames = "llama2, llama3, chatml, mistral, none";

const char *chatTemplateName(ChatTemplate t) {
  switch (t) {
  case ChatTemplate::none: return "none";
  case ChatTemplate::llama2: return "llama2";
  case ChatTemplate::llama3: return "llama3";
  case ChatTemplate::chatml: return "chatml";
  case ChatTemplate::mistral: return "mistral";
  }
  return "?";
}

std::optional<ChatTemplate> parseChatTemplate(const std::string &name) {
  for (ChatTemplate t : {ChatTemplate::none, ChatTemplate::llama2, ChatTemplate::llama3,
                         ChatTemplate::chatml, ChatTemplate::mistral})
    if (name == chatTemplateName(t)) return t;
  return std::nullopt;
}

ChatTemplate detectChatTemplate(const Tokenizer *tok, Architecture architecture) {
  if (tok) {
    auto has = [&](const char *piece) { return tok->specialTokenId(piece) >= 0; };
    if (has("<|start_header_id|>") && has("<|eot_id|>")) return ChatTemplate::llama3;
    if (has("<|im_start|>") && has("<|im_end|>")) return ChatTemplate::chatml;
    if (has("[INST]")) return ChatTemplate::mistral; // Mistral's v3 tokenizer
  }
  if (architecture == Architecture::mistral && tok) return ChatTemplate::mistral;
  return ChatTemplate::none;
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
std::vector<ChatPiece> renderMistral(const std::vector<ChatMessage> &m) {
  const bool system = !m.empty() && m[0].role == "system";
  const size_t from = system ? 1 : 0;
  checkAlternating(m, from, "mistral");
  size_t lastUser = m.size();
  for (size_t i = from; i < m.size(); ++i)
    if (m[i].role == "user") lastUser = i;
  std::vector<ChatPiece> out{{ChatPiece::bos, "<s>"}};
  for (size_t i = from; i < m.size(); ++i) {
    if (m[i].role == "user") {
      std::string content = m[i].content;
      if (i == lastUser && system) content = m[0].content + "\n\n" + content;
      out.push_back(marker("[INST]"));
      out.push_back(text(" " + content));
      out.push_back(marker("[/INST]"));
    } else {
      out.push_back(text(" " + m[i].content));
      out.push_back({ChatPiece::eos, "</s>"});
    }
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
                                    const std::vector<ToolFunction> &tools) {
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
  header("assistant");
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

/// <|im_start|>{role}\n{content}<|im_end|>\n per message, then
/// <|im_start|>assistant\n. With tools, as Qwen2.5's template: the
/// functions in the system message, an assistant's calls after its content
/// as <tool_call>\n{"name": ..., "arguments": ...}\n</tool_call>, and tool
/// results, those in a row together, as one user turn of <tool_response>s.
std::vector<ChatPiece> renderChatMl(const std::vector<ChatMessage> &m,
                                    const std::vector<ToolFunction> &tools) {
  std::vector<ChatPiece> out;
  auto turn = [&](const std::string &body) {
    out.push_back(marker("<|im_start|>"));
    out.push_back(text(body));
    out.push_back(marker("<|im_end|>"));
    out.push_back(text("\n"));
  };
  const bool system = !m.empty() && m[0].role == "system";
  if (!tools.empty()) turn("system\n" + chatMlToolsSystem(system ? m[0].content : "", tools));
  for (size_t i = !tools.empty() && system ? 1 : 0; i < m.size(); ++i) {
    const ChatMessage &msg = m[i];
    if (msg.role == "tool") {
      std::string body = "user";
      for (; i < m.size() && m[i].role == "tool"; ++i)
        body += "\n<tool_response>\n" + m[i].content + "\n</tool_response>";
      --i;
      turn(body);
    } else if (!msg.toolCalls.empty()) {
      std::string body = "assistant" + (msg.content.empty() ? "" : "\n" + msg.content);
      for (const ToolCall &c : msg.toolCalls)
        body += "\n<tool_call>\n{\"name\": \"" + c.name + "\", \"arguments\": " +
                argumentsJson(c, i) + "}\n</tool_call>";
      turn(body);
    } else {
      turn(msg.role + "\n" + msg.content);
    }
  }
  out.push_back(marker("<|im_start|>"));
  out.push_back(text("assistant\n"));
  return out;
}

/// Whether the conversation holds tool calls or results.
bool mentionsTools(const std::vector<ChatMessage> &m) {
  for (const ChatMessage &msg : m)
    if (msg.role == "tool" || !msg.toolCalls.empty()) return true;
  return false;
}

} // namespace

std::vector<ChatPiece> renderChat(ChatTemplate t, const std::vector<ChatMessage> &messages,
                                  const std::vector<ToolFunction> &tools) {
  if (t != ChatTemplate::none && (!tools.empty() || mentionsTools(messages)))
    checkToolTemplate(t);
  switch (t) {
  case ChatTemplate::llama2: return renderLlama2(messages);
  case ChatTemplate::llama3: return renderLlama3(messages, tools);
  case ChatTemplate::chatml: return renderChatMl(messages, tools);
  case ChatTemplate::mistral: return renderMistral(messages);
  case ChatTemplate::none: break;
  }
  throw ApiError(400, "this model has no chat template: use /v1/completions, or start the "
                      "server with --chat-template NAME (" + std::string(kChatTemplateNames) +
                      ")", "messages");
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
  const char *marker = t == ChatTemplate::llama3   ? "<|eot_id|>"
                       : t == ChatTemplate::chatml ? "<|im_end|>"
                                                   : nullptr;
  if (!marker) return e; // Llama 2 and Mistral end a turn with EOS
  const int32_t id = tok.specialTokenId(marker);
  if (id >= 0)
    e.ids.push_back(id);
  else
    e.strings.push_back(marker);
  return e;
}

} // namespace kvplan::server
