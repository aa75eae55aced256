// kvplan tokenize and detokenize, and the token-id lists that run shares.
#include "tools/kvplan/Commands.h"

#include "formats/Tokenizer.h"
#include "support/Error.h"

#include <climits>
#include <cstdio>
#include <memory>
#include <sstream>

namespace kvplan::cli {

std::vector<int32_t> parseIds(const std::string &text, const char *flag) {
  std::vector<int32_t> ids;
  std::string item;
  std::istringstream in(text);
  while (in >> item) {
    std::istringstream parts(item);
    std::string part;
    while (std::getline(parts, part, ',')) {
      if (part.empty()) continue;
      size_t used = 0;
      long long v = 0;
      try {
        v = std::stoll(part, &used);
      } catch (const std::exception &) {
        used = 0;
      }
      if (used != part.size() || v < INT32_MIN || v > INT32_MAX)
        throw InputError(std::string(flag) + ": '" + part + "' is not a token id");
      ids.push_back(int32_t(v));
    }
  }
  return ids;
}

void printIds(const std::vector<int32_t> &ids, bool &first) {
  for (int32_t id : ids) {
    std::printf(first ? "%d" : " %d", id);
    first = false;
  }
}

void addTokenizeCommand(CLI::App &app, Action &action) {
  auto *cmd = app.add_subcommand("tokenize", "Print the token ids of a text");
  auto path = std::make_shared<std::string>();
  auto text = std::make_shared<std::string>();
  auto noBos = std::make_shared<bool>(false);
  cmd->add_option("--tokenizer", *path, "A tokenizer file")->required();
  cmd->add_flag("--no-bos", *noBos, "Do not put BOS first");
  // One argument, as written: words as a list of arguments would be read
  // with CLI11's "[a,b]" list syntax, which takes the brackets off an
  // argument like "[INST] hi [/INST]" and splits it at its commas.
  cmd->add_option("text", *text, "The text, as one argument (quote it; after --)")->required();
  cmd->callback([&action, path, text, noBos] {
    action = [path, text, noBos] {
      std::unique_ptr<Tokenizer> t = loadTokenizerFile(*path);
      bool first = true;
      printIds(t->encode(*text, !*noBos), first);
      std::printf("\n");
      return 0;
    };
  });
}

void addDetokenizeCommand(CLI::App &app, Action &action) {
  auto *cmd = app.add_subcommand("detokenize", "Print the text of token ids");
  auto path = std::make_shared<std::string>();
  auto ids = std::make_shared<std::vector<std::string>>();
  cmd->add_option("--tokenizer", *path, "A tokenizer file")->required();
  cmd->add_option("ids", *ids, "Token ids: 1 2 3 or 1,2,3")->required();
  cmd->callback([&action, path, ids] {
    action = [path, ids] {
      std::string joined;
      for (const std::string &s : *ids) joined += s + " ";
      std::unique_ptr<Tokenizer> t = loadTokenizerFile(*path);
      std::vector<int32_t> v = parseIds(joined, "ids");
      for (int32_t id : v)
        if (id < 0 || id >= t->vocabSize())
          throw InputError("token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                           std::to_string(t->vocabSize()) + ")");
      std::printf("%s\n", t->decode(v).c_str());
      return 0;
    };
  });
}

} // namespace kvplan::cli
