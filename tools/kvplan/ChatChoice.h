// --chat-template for serve and run --chat: which template renders a
// conversation (the model's own Jinja, a file's, or a built-in one) and
// which family reads the answers.
#pragma once

#include "server/ChatTemplate.h"
#include "tools/kvplan/Runnable.h"

#include <memory>
#include <string>

namespace kvplan::cli {

struct ChatChoice {
  /// Reads answers (tool calls, thoughts, the end of a turn), and renders
  /// prompts when there is no `own`.
  server::ChatTemplate family = server::ChatTemplate::none;
  std::shared_ptr<const server::ModelChatTemplate> own; // renders prompts when set
  /// "qwen3", or "the model's own (FILE (chat_template)), answers read as qwen3".
  std::string describe() const;
};

/// Throws InputError unless `flag` (--chat-template) is empty, a built-in
/// template's name or a file that is there: checked before a model loads.
void checkChatTemplateFlag(const std::string &flag);

/// `flag` (--chat-template) a built-in template's name: that one. A file
/// (.jinja, tokenizer_config.json, chat_template.json, .gguf): its
/// template, the family told by the tokenizer. Empty: the template the
/// model came with, else the built-in one its tokenizer shows; a model's
/// template kvplan cannot read is a warning on stderr (prefixed `who`)
/// and the built-in one is used. Throws InputError for a file that holds
/// none or one kvplan cannot read.
ChatChoice chooseChatTemplate(const std::string &flag, const Runnable &r, const char *who);

} // namespace kvplan::cli
