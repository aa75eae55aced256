// The byte-level BPE vocabulary a GGUF embeds (tokenizer.ggml.model "gpt2",
// as llama.cpp's converter writes Llama 3, Qwen2 and SmolLM models): the
// tokens, their types and the merges, with tokenizer.ggml.pre naming how the
// text is split. GGUF keeps no pre-tokenizer itself, only that name, so each
// name kvplan knows stands for the pre-tokenizer (and normalizer) of the
// Hugging Face tokenizer.json it came from. The vocabulary is written out as
// that tokenizer.json and read by the Hugging Face BPE reader, which the
// published Hugging Face vectors check; the artifact keeps the JSON.
#include "formats/Gguf.h"
#include "formats/TokenizerInternal.h"
#include "support/Error.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>

namespace kvplan {
namespace tokenizer_detail {

namespace {

using json = nlohmann::json;

/// What a tokenizer.ggml.pre name stands for: the tokenizer.json parts GGUF
/// does not keep (a normalizer, the pre-tokenizer, whether merges may be
/// skipped for words in the vocabulary) and whether BOS is added when
/// tokenizer.ggml.add_bos_token is absent (llama.cpp's defaults).
struct PreTokenizerFamily {
  std::vector<const char *> names;
  json normalizer;
  json preTokenizer;
  bool ignoreMerges = false;
  bool addBos = false;
};

json byteLevel(bool useRegex) {
  return {{"type", "ByteLevel"},
          {"add_prefix_space", false},
          {"trim_offsets", false},
          {"use_regex", useRegex}};
}

json splitThenBytes(const char *regex) {
  return {{"type", "Sequence"},
          {"pretokenizers",
           {{{"type", "Split"},
             {"pattern", {{"Regex", regex}}},
             {"behavior", "Isolated"},
             {"invert", false}},
            byteLevel(false)}}};
}

/// The families, with each pattern as the model's tokenizer.json writes it
/// (Oniguruma syntax, which the Hugging Face reader translates).
const std::vector<PreTokenizerFamily> &families() {
  static const std::vector<PreTokenizerFamily> all = {
      {{"llama-bpe", "llama3", "llama-v3"},
       nullptr,
       splitThenBytes("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
                      "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"),
       /*ignoreMerges=*/true, /*addBos=*/true},
      // DeepSeek-R1's Qwen distills keep Qwen2.5's vocabulary and pattern
      // (llama.cpp reads "deepseek-r1-qwen" as "qwen2").
      {{"qwen2", "deepseek-r1-qwen"},
       {{"type", "NFC"}},
       splitThenBytes("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
                      "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"),
       false, false},
      {{"smollm"},
       nullptr,
       {{"type", "Sequence"},
        {"pretokenizers", {{{"type", "Digits"}, {"individual_digits", true}}, byteLevel(true)}}},
       false, false},
      // GPT-4o's o200k pattern (Phi-4-mini's tokenizer, Llama 4's): words
      // split where the case changes, each with its contraction as a
      // suffix, digits in threes, a '/' kept with the newlines before it.
      {{"gpt-4o", "llama4"},
       nullptr,
       splitThenBytes("[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*"
                      "[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
                      "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+"
                      "[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\\p{N}{1,3}| "
                      "?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"),
       false, false},
      {{"gpt-2"}, nullptr, byteLevel(true), false, false},
  };
  return all;
}

std::string knownNames() {
  std::string out;
  for (const PreTokenizerFamily &f : families())
    for (const char *n : f.names) out += std::string(out.empty() ? "" : ", ") + "\"" + n + "\"";
  return out;
}

const PreTokenizerFamily &familyOf(const GgufFile &g) {
  const std::string &path = g.path();
  std::optional<std::string> pre = g.string("tokenizer.ggml.pre");
  if (!pre)
    throw InputError(path + ": the GGUF's BPE vocabulary has no tokenizer.ggml.pre, so kvplan "
                            "cannot tell how its text is split (it knows " + knownNames() +
                     "); give the model's tokenizer.json with --tokenizer");
  for (const PreTokenizerFamily &f : families())
    for (const char *n : f.names)
      if (*pre == n) return f;
  throw InputError(path + ": tokenizer.ggml.pre is \"" + *pre + "\"; kvplan knows the BPE "
                   "pre-tokenizers " + knownNames() + ", so give the model's tokenizer.json "
                   "with --tokenizer");
}

// GGUF token types (llama.cpp's llama_token_type).
enum TokenType {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

/// One JSON string; `s` must be valid UTF-8.
std::string quoted(const std::string &s) { return json(s).dump(); }

/// An id key of the GGUF within the vocabulary of `n` tokens, or -1 where
/// absent or "none" (an unsigned -1).
int32_t optionalId(const GgufFile &g, const char *key, size_t n) {
  std::optional<int64_t> x = g.integer(key);
  if (!x || *x < 0 || *x == int64_t(UINT32_MAX))
    return -1;
  if (*x >= int64_t(n))
    throw InputError(g.path() + ": " + key + " is " + std::to_string(*x) +
                     ", outside the vocabulary of " + std::to_string(n) + " tokens");
  return int32_t(*x);
}

const std::vector<std::string> &stringArray(const GgufFile &g, const char *key) {
  const GgufFile::Value *v = g.find(key);
  if (!v || v->type != GgufFile::Type::array || v->itemType != GgufFile::Type::string ||
      v->strings.empty())
    throw InputError(g.path() + ": " + key + " is missing or not a non-empty string array");
  return v->strings;
}

/// tokenizer.ggml.token_type, one known type per token.
std::vector<int> tokenTypes(const GgufFile &g, size_t n) {
  const GgufFile::Value *v = g.find("tokenizer.ggml.token_type");
  if (!v)
    throw InputError(g.path() + ": the GGUF's BPE vocabulary has no tokenizer.ggml.token_type, "
                                "so kvplan cannot tell its special tokens from text");
  if (v->type != GgufFile::Type::array || v->itemType == GgufFile::Type::string ||
      v->numbers.size() != n)
    throw InputError(g.path() + ": tokenizer.ggml.token_type must be a numeric array with one "
                                "entry per token (" + std::to_string(n) + ")");
  std::vector<int> types(n);
  for (size_t i = 0; i < n; ++i) {
    const double t = v->numbers[i];
    if (!(t >= kNormal && t <= kByte) || t != std::floor(t))
      throw InputError(g.path() + ": tokenizer.ggml.token_type[" + std::to_string(i) + "] is " +
                       std::to_string(t) + "; expected 1 to 6");
    types[i] = int(t);
  }
  return types;
}

/// model.vocab and added_tokens: control tokens are special added tokens,
/// user-defined ones added tokens matched as written (as Hugging Face's
/// added_tokens with "special": false), and both are in model.vocab too (as
/// many tokenizer.json files list them), so a merge that makes one reads;
/// unused ids (a converter's padding up to the embedding's rows) are in
/// neither, so they decode to nothing.
void writeTokens(const GgufFile &g, const std::vector<std::string> &tokens,
                 const std::vector<int> &types, std::string &vocab, json &added) {
  for (size_t i = 0; i < tokens.size(); ++i) {
    const std::string &t = tokens[i];
    if (utf8Lossy(t) != t)
      throw InputError(g.path() + ": tokenizer.ggml.tokens[" + std::to_string(i) +
                       "] is not valid UTF-8, which a byte-level BPE token always is");
    if (types[i] == kUnused)
      continue;
    if (types[i] == kControl || types[i] == kUserDefined) {
      if (t.empty())
        throw InputError(g.path() + ": tokenizer.ggml.tokens[" + std::to_string(i) +
                         "], a special token, is empty");
      added.push_back({{"id", i},
                       {"content", t},
                       {"special", types[i] == kControl},
                       {"normalized", false},
                       {"lstrip", false},
                       {"rstrip", false},
                       {"single_word", false}});
    }
    vocab += (vocab.size() > 1 ? "," : "") + quoted(t) + ":" + std::to_string(i);
  }
}

std::string mergesText(const GgufFile &g) {
  const std::vector<std::string> &merges = stringArray(g, "tokenizer.ggml.merges");
  std::string out = "[";
  for (size_t i = 0; i < merges.size(); ++i) {
    const std::string &m = merges[i];
    const size_t sp = m.find(' ');
    if (sp == std::string::npos || sp == 0 || sp + 1 == m.size() ||
        m.find(' ', sp + 1) != std::string::npos || utf8Lossy(m) != m)
      throw InputError(g.path() + ": tokenizer.ggml.merges[" + std::to_string(i) + "] is \"" +
                       utf8Lossy(m) + "\", not two tokens separated by one space");
    out += (i ? "," : "") + quoted(m);
  }
  return out + "]";
}

} // namespace

std::unique_ptr<Tokenizer> makeGgufBpe(const GgufFile &g) {
  const PreTokenizerFamily &family = familyOf(g);
  const std::vector<std::string> &tokens = stringArray(g, "tokenizer.ggml.tokens");
  if (tokens.size() > size_t(1) << 26)
    throw InputError(g.path() + ": tokenizer.ggml.tokens has too many entries");
  const std::vector<int> types = tokenTypes(g, tokens.size());
  std::string vocab = "{";
  json added = json::array();
  writeTokens(g, tokens, types, vocab, added);
  vocab += "}";

  json root = json::object();
  root["added_tokens"] = added;
  root["normalizer"] = family.normalizer;
  root["pre_tokenizer"] = family.preTokenizer;
  const int32_t bos = optionalId(g, "tokenizer.ggml.bos_token_id", tokens.size());
  const GgufFile::Value *addBos = g.find("tokenizer.ggml.add_bos_token");
  if (bos >= 0 && (addBos ? addBos->number != 0 : family.addBos))
    root["post_processor"] = {
        {"type", "TemplateProcessing"},
        {"single", {{{"SpecialToken", {{"id", tokens[size_t(bos)]}, {"type_id", 0}}}},
                    {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
        {"special_tokens",
         {{tokens[size_t(bos)], {{"id", tokens[size_t(bos)]}, {"ids", {bos}}}}}}};
  root["decoder"] = byteLevel(true);
  // model.vocab and model.merges are written as text: a JSON tree of
  // Llama 3's 128,000 tokens and 280,000 merges would take longer to build
  // than the reader takes to read them.
  std::string text = root.dump();
  text.pop_back();
  text += ",\"model\":{\"type\":\"BPE\",\"ignore_merges\":" +
          std::string(family.ignoreMerges ? "true" : "false") + ",\"vocab\":" + vocab +
          ",\"merges\":" + mergesText(g) + "}}";
  return makeHfBpe(std::move(text), g.path() + " (its BPE vocabulary, as a tokenizer.json)");
}

} // namespace tokenizer_detail
} // namespace kvplan
