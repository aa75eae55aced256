// Reading a model's chat template (see ChatTemplateFile.h).
#include "formats/ChatTemplateFile.h"

#include "formats/Gguf.h"
#include "support/Error.h"
#include "support/MappedFile.h"

#include <nlohmann/json.hpp>

#include <filesystem>

namespace fs = std::filesystem;

namespace kvplan {

namespace {

const char *const kGgufKey = "tokenizer.chat_template";

/// The text of the GGUF vocabulary's token named by `idKey`, or "".
std::string ggufTokenText(const GgufFile &g, const char *idKey) {
  const std::optional<int64_t> id = g.integer(idKey);
  const GgufFile::Value *tokens = g.find("tokenizer.ggml.tokens");
  if (!id || !tokens || *id < 0 || size_t(*id) >= tokens->strings.size()) return "";
  return tokens->strings[size_t(*id)];
}

std::optional<ChatTemplateText> fromGguf(const std::string &path) {
  GgufFile g = GgufFile::open(path);
  std::optional<std::string> source = g.string(kGgufKey);
  if (!source) return std::nullopt;
  return ChatTemplateText{*source, path + " (" + kGgufKey + ")",
                          ggufTokenText(g, "tokenizer.ggml.bos_token_id"),
                          ggufTokenText(g, "tokenizer.ggml.eos_token_id")};
}

/// A special token's text in tokenizer_config.json: a string, or an object
/// with "content" (AddedToken); "" for null or absent.
std::string tokenField(const nlohmann::json &j, const char *key) {
  auto it = j.find(key);
  if (it == j.end()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
    return (*it)["content"].get<std::string>();
  return "";
}

std::optional<ChatTemplateText> fromJson(const std::string &path) {
  MappedFile file = MappedFile::open(path, "chat template file");
  nlohmann::json j =
      nlohmann::json::parse(file.bytes().begin(), file.bytes().end(), nullptr, false);
  if (j.is_discarded() || !j.is_object())
    throw InputError(path + ": not a JSON object (a tokenizer_config.json or chat_template.json "
                            "is one)");
  auto t = j.find("chat_template");
  if (t == j.end() || t->is_null()) return std::nullopt;
  std::string source, which = "chat_template";
  if (t->is_string()) {
    source = t->get<std::string>();
  } else if (t->is_array()) { // [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
    for (const auto &named : *t)
      if (named.is_object() && named.value("name", "") == "default" && named.contains("template") &&
          named["template"].is_string())
        source = named["template"].get<std::string>(), which = "chat_template \"default\"";
    if (source.empty())
      throw InputError(path + ": chat_template lists named templates but none is \"default\"");
  } else {
    throw InputError(path + ": chat_template must be a string or a list of named templates");
  }
  return ChatTemplateText{source, path + " (" + which + ")", tokenField(j, "bos_token"),
                          tokenField(j, "eos_token")};
}

bool hasExtension(const std::string &path, const char *ext) {
  return fs::path(path).extension() == ext;
}

} // namespace

ChatTemplateText readChatTemplateFile(const std::string &path) {
  if (!fs::exists(path))
    throw InputError(path + ": no such file (--chat-template takes a built-in template's name, "
                            "or a .jinja, tokenizer_config.json or .gguf file)");
  std::optional<ChatTemplateText> t;
  if (hasExtension(path, ".gguf"))
    t = fromGguf(path);
  else if (hasExtension(path, ".json"))
    t = fromJson(path);
  else {
    MappedFile file = MappedFile::open(path, "chat template file");
    t = ChatTemplateText{std::string(file.bytes()), path, "", ""};
  }
  if (!t)
    throw InputError(path + ": holds no chat template (" +
                     (hasExtension(path, ".gguf") ? std::string("no ") + kGgufKey
                                                  : std::string("no chat_template")) +
                     ")");
  return *t;
}

std::optional<ChatTemplateText> findModelChatTemplate(const std::string &tokenizerPath) {
  if (tokenizerPath.empty() || tokenizerPath == "bytes") return std::nullopt;
  if (hasExtension(tokenizerPath, ".gguf")) return fromGguf(tokenizerPath);
  const fs::path dir = fs::path(tokenizerPath).parent_path();
  std::optional<ChatTemplateText> config;
  if (fs::exists(dir / "tokenizer_config.json"))
    config = fromJson((dir / "tokenizer_config.json").string());
  std::optional<ChatTemplateText> t;
  // transformers reads chat_template.jinja first, then chat_template.json,
  // then the config's; BOS and EOS come from the config.
  if (fs::exists(dir / "chat_template.jinja"))
    t = readChatTemplateFile((dir / "chat_template.jinja").string());
  else if (fs::exists(dir / "chat_template.json"))
    t = fromJson((dir / "chat_template.json").string());
  else
    t = config;
  if (t && config) t->bosToken = config->bosToken, t->eosToken = config->eosToken;
  return t;
}

std::string chatTemplateSection(const ChatTemplateText &t) {
  return nlohmann::ordered_json{{"source", t.source},
                                {"origin", t.origin},
                                {"bos_token", t.bosToken},
                                {"eos_token", t.eosToken}}
      .dump(1);
}

ChatTemplateText parseChatTemplateSection(const std::string &bytes, const std::string &artifact) {
  const nlohmann::json j = nlohmann::json::parse(bytes, nullptr, false);
  auto text = [&](const char *key) {
    if (j.is_discarded() || !j.is_object() || !j.contains(key) || !j[key].is_string())
      throw InputError(artifact + ": the chat_template section has no string \"" + key +
                       "\"; recompile the model");
    return j[key].get<std::string>();
  };
  return {text("source"), text("origin"), text("bos_token"), text("eos_token")};
}

} // namespace kvplan
