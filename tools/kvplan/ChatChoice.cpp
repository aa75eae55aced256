// --chat-template (see ChatChoice.h).
#include "tools/kvplan/ChatChoice.h"

#include "support/Error.h"

#include <cstdio>
#include <filesystem>

namespace kvplan::cli {

std::string ChatChoice::describe() const {
  const std::string family_s = server::chatTemplateName(family);
  if (!own) return family_s;
  return "the model's own (" + own->origin() + "), answers read as " + family_s;
}

void checkChatTemplateFlag(const std::string &flag) {
  if (flag.empty() || server::parseChatTemplate(flag)) return;
  if (flag.find_first_of("/.") == std::string::npos)
    throw InputError("--chat-template must be one of " +
                     std::string(server::kChatTemplateNames) +
                     ", or a template file (.jinja, tokenizer_config.json, .gguf); got '" + flag +
                     "'");
  if (!std::filesystem::exists(flag))
    throw InputError(flag + ": no such file (--chat-template takes a built-in template's name, "
                            "or a .jinja, tokenizer_config.json or .gguf file)");
}

ChatChoice chooseChatTemplate(const std::string &flag, const Runnable &r, const char *who) {
  checkChatTemplateFlag(flag);
  ChatChoice c;
  if (std::optional<server::ChatTemplate> named = server::parseChatTemplate(flag)) {
    c.family = *named;
    return c;
  }
  c.family = server::detectChatTemplate(r.tokenizer.get(), r.plan.model.architecture);
  if (!r.tokenizer) {
    if (!flag.empty())
      throw InputError("--chat-template " + flag +
                       ": the model has no tokenizer to render a chat with; give one with "
                       "--tokenizer");
    return c;
  }
  if (!flag.empty()) {
    ChatTemplateText t = readChatTemplateFile(flag);
    // A bare .jinja file says no BOS and EOS: the model's own template's.
    if (t.bosToken.empty() && r.chatTemplate) t.bosToken = r.chatTemplate->bosToken;
    if (t.eosToken.empty() && r.chatTemplate) t.eosToken = r.chatTemplate->eosToken;
    c.own = std::make_shared<server::ModelChatTemplate>(t.source, t.origin, t.bosToken, t.eosToken,
                                                        *r.tokenizer);
    return c;
  }
  if (!r.chatTemplate) return c;
  const ChatTemplateText &t = *r.chatTemplate;
  try {
    c.own = std::make_shared<server::ModelChatTemplate>(t.source, t.origin, t.bosToken, t.eosToken,
                                                        *r.tokenizer);
  } catch (const InputError &e) {
    std::fprintf(stderr,
                 "%s: warning: the model's chat template cannot be rendered by kvplan: "
                 "%s; the built-in %s template renders chats instead (name one with "
                 "--chat-template)\n",
                 who, e.what(), server::chatTemplateName(c.family));
  }
  return c;
}

} // namespace kvplan::cli
