// The chat templates, each as its model card and Hugging Face chat_template
// write it (whitespace included: a model sees every byte).
#include "server/ChatTemplate.h"

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

/// <|begin_of_text|> then per message <|start_header_id|>{role}
/// <|end_header_id|>\n\n{content, stripped}<|eot_id|>, then the assistant's
/// header.
std::vector<ChatPiece> renderLlama3(const std::vector<ChatMessage> &m) {
  std::vector<ChatPiece> out{{ChatPiece::bos, "<|begin_of_text|>"}};
  auto header = [&](const std::string &role) {
    out.push_back(marker("<|start_header_id|>"));
    out.push_back(text(role));
    out.push_back(marker("<|end_header_id|>"));
    out.push_back(text("\n\n"));
  };
  for (const ChatMessage &msg : m) {
    header(msg.role);
    out.push_back(text(strip(msg.content)));
    out.push_back(marker("<|eot_id|>"));
  }
  header("assistant");
  return out;
}

/// <|im_start|>{role}\n{content}<|im_end|>\n per message, then
/// <|im_start|>assistant\n.
std::vector<ChatPiece> renderChatMl(const std::vector<ChatMessage> &m) {
  std::vector<ChatPiece> out;
  for (const ChatMessage &msg : m) {
    out.push_back(marker("<|im_start|>"));
    out.push_back(text(msg.role + "\n" + msg.content));
    out.push_back(marker("<|im_end|>"));
    out.push_back(text("\n"));
  }
  out.push_back(marker("<|im_start|>"));
  out.push_back(text("assistant\n"));
  return out;
}

} // namespace

std::vector<ChatPiece> renderChat(ChatTemplate t, const std::vector<ChatMessage> &messages) {
  switch (t) {
  case ChatTemplate::llama2: return renderLlama2(messages);
  case ChatTemplate::llama3: return renderLlama3(messages);
  case ChatTemplate::chatml: return renderChatMl(messages);
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
