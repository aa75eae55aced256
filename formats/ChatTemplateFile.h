// A model's own chat template (Jinja text) and the BOS and EOS texts it is
// rendered with, read from where models keep them: a GGUF's
// tokenizer.chat_template, a tokenizer_config.json's chat_template (or the
// newer chat_template.jinja and chat_template.json beside it), or a template
// file. The artifact keeps what the compiled model came with.
#pragma once

#include <optional>
#include <string>

namespace kvplan {

struct ChatTemplateText {
  std::string source; // the Jinja
  std::string origin; // where it was read, for errors ("model.gguf (tokenizer.chat_template)")
  std::string bosToken, eosToken; // "" when the file does not say
};

/// The template in `path`: a .gguf (tokenizer.chat_template), a .json
/// (tokenizer_config.json or chat_template.json: "chat_template", a string
/// or the list of named templates, whose "default" is taken), or else the
/// Jinja itself. Throws InputError naming the file when it holds none.
ChatTemplateText readChatTemplateFile(const std::string &path);

/// The template a tokenizer's model came with: the GGUF's own, or for a
/// tokenizer file the chat_template.jinja, chat_template.json or
/// tokenizer_config.json beside it; nullopt when there is none.
std::optional<ChatTemplateText> findModelChatTemplate(const std::string &tokenizerPath);

/// The artifact's chat_template section: JSON {source, origin, bos_token,
/// eos_token}; parse throws InputError naming `artifact`.
std::string chatTemplateSection(const ChatTemplateText &t);
ChatTemplateText parseChatTemplateSection(const std::string &bytes, const std::string &artifact);

} // namespace kvplan
