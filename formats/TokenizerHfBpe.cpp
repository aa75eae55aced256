// Hugging Face tokenizer.json byte-level BPE (Llama 3, Qwen2, SmolLM2): added
// tokens matched literally, regex pre-tokenization through PCRE2, GPT-2's
// byte-to-unicode map, and merges applied by rank.
#include "formats/TokenizerInternal.h"

#include "spec/ModelSpec.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cctype>
#include <memory>
#include <unordered_map>

namespace kvplan {
namespace tokenizer_detail {

namespace {

using json = nlohmann::json;

// GPT-2's ByteLevel pre-tokenizer pattern (use_regex: true).
constexpr const char *kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/// Special tokens that end a sequence in the byte-level BPE families kvplan
/// targets. tokenizer.json does not say which tokens end generation (that is
/// in generation_config.json), so these names stand in for it.
const char *const kEndOfSequenceNames[] = {
    "<|end_of_text|>", "<|eot_id|>", "<|eom_id|>", "<|endoftext|>", "<|im_end|>", "</s>",
};

/// GPT-2's reversible map from bytes to printable code points: printable
/// Latin-1 bytes map to themselves, the rest to U+0100 onwards in order.
struct ByteMap {
  std::array<std::string, 256> toChar;
  std::array<int16_t, 512> toByte; // code point -> byte, -1 where none

  ByteMap() {
    toByte.fill(-1);
    uint32_t extra = 0;
    for (uint32_t b = 0; b < 256; ++b) {
      bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      uint32_t cp = printable ? b : 256 + extra++;
      appendUtf8(toChar[b], cp);
      toByte[cp] = int16_t(b);
    }
  }
};

const ByteMap &byteMap() {
  static const ByteMap m;
  return m;
}

/// The code point at `i` of valid UTF-8 `s`, advancing `i`.
uint32_t nextCodePoint(std::string_view s, size_t &i) {
  unsigned char b = static_cast<unsigned char>(s[i]);
  size_t len = std::min(utf8SequenceLength(b), s.size() - i);
  uint32_t cp = len == 1 ? b : len == 2 ? (b & 0x1F) : len == 3 ? (b & 0x0F) : (b & 0x07);
  for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  i += len;
  return cp;
}

/// A compiled PCRE2 pattern (Unicode, so \p{L} and \s mean what the
/// tokenizer's Oniguruma patterns mean).
class Regex {
public:
  Regex(const std::string &pattern, bool literal, const std::string &where) {
    int err = 0;
    PCRE2_SIZE errOffset = 0;
    uint32_t options = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
    code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), options, &err,
                         &errOffset, nullptr);
    if (!code) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof(msg));
      throw InputError(where + ": the pattern does not compile (" +
                       reinterpret_cast<const char *>(msg) + " at offset " +
                       std::to_string(errOffset) + ")");
    }
    // JIT is an optimisation only; without it pcre2_match interprets.
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  }
  Regex(const Regex &) = delete;
  Regex &operator=(const Regex &) = delete;
  ~Regex() { pcre2_code_free(code); }

  /// The [begin, end) of every non-empty match in `s` (valid UTF-8), left to
  /// right.
  std::vector<std::pair<size_t, size_t>> findAll(std::string_view s) const {
    std::vector<std::pair<size_t, size_t>> out;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(code, nullptr);
    size_t offset = 0;
    while (offset <= s.size()) {
      int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), offset,
                           PCRE2_NO_UTF_CHECK, md, nullptr);
      if (rc == PCRE2_ERROR_NOMATCH)
        break;
      if (rc < 0) {
        pcre2_match_data_free(md);
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof(msg));
        throw InputError(std::string("pre-tokenizer pattern failed on the text: ") +
                         reinterpret_cast<const char *>(msg));
      }
      PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
      size_t b = ov[0], e = ov[1];
      if (e == b) {
        // An empty match finds no token; step over one character.
        if (b >= s.size())
          break;
        offset = b + utf8SequenceLength(static_cast<unsigned char>(s[b]));
        continue;
      }
      out.emplace_back(b, e);
      offset = e;
    }
    pcre2_match_data_free(md);
    return out;
  }

private:
  pcre2_code *code = nullptr;
};

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false, lstrip = false, rstrip = false, singleWord = false;
};

/// One pre-tokenizer step, applied to every piece the previous step made.
struct PreStep {
  enum Kind { split, byteLevel, digits } kind = split;
  std::shared_ptr<Regex> regex; // split; byteLevel with use_regex
  bool removeMatches = false;   // split behaviour "Removed" (else "Isolated")
  bool addPrefixSpace = false;  // byteLevel
};

bool isAsciiSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }
bool isWordByte(char c) {
  unsigned char u = static_cast<unsigned char>(c);
  return u >= 0x80 || std::isalnum(u) || c == '_';
}

class HfBpeTokenizer : public Tokenizer {
public:
  HfBpeTokenizer(std::string text, const std::string &origin) : jsonText(std::move(text)), origin(origin) {
    json root;
    try {
      root = json::parse(jsonText);
    } catch (const json::exception &e) {
      throw InputError(origin + ": malformed JSON: " + e.what());
    }
    if (!root.is_object())
      fail("the top level", "is not a JSON object");
    try {
      loadModel(root);
      loadAddedTokens(root);
      loadNormalizer(root);
      loadPreTokenizer(root);
      loadPostProcessor(root);
    } catch (const json::exception &e) {
      // A field of the wrong JSON type that no check above caught.
      throw InputError(origin + ": unexpected tokenizer.json content: " + e.what());
    }
    for (const char *name : kEndOfSequenceNames)
      for (const AddedToken &t : added)
        if (t.special && t.content == name &&
            std::find(eos.begin(), eos.end(), t.id) == eos.end())
          eos.push_back(t.id);
  }

  std::vector<int32_t> encode(std::string_view rawText, bool addBos) const override {
    // Hugging Face works on Rust strings, which are valid UTF-8; bytes that
    // are not become U+FFFD here, as a lossy conversion there would.
    std::string text = utf8Lossy(rawText);
    std::vector<int32_t> out;
    if (addBos && bos >= 0)
      out.push_back(bos);
    size_t pos = 0;
    while (pos < text.size()) {
      size_t begin = 0, end = 0;
      const AddedToken *t = findAdded(text, pos, begin, end);
      if (!t) {
        encodeSegment(std::string_view(text).substr(pos), out);
        break;
      }
      encodeSegment(std::string_view(text).substr(pos, begin - pos), out);
      out.push_back(t->id);
      pos = end;
    }
    return out;
  }

  std::string decode(const std::vector<int32_t> &ids) const override {
    const ByteMap &m = byteMap();
    std::string bytes;
    for (int32_t id : ids) {
      if (id < 0 || size_t(id) >= idToToken.size() || isSpecial[id])
        continue;
      const std::string &tok = idToToken[id];
      // Like the ByteLevel decoder: unmap every character, or keep the token
      // as it is written when one is outside the byte alphabet.
      std::string unmapped;
      bool ok = true;
      for (size_t i = 0; i < tok.size() && ok;) {
        uint32_t cp = nextCodePoint(tok, i);
        if (cp < m.toByte.size() && m.toByte[cp] >= 0)
          unmapped += char(m.toByte[cp]);
        else
          ok = false;
      }
      bytes += ok ? unmapped : tok;
    }
    return utf8Lossy(bytes);
  }

  int32_t vocabSize() const override { return int32_t(idToToken.size()); }
  int32_t bosId() const override { return bos; }
  std::vector<int32_t> eosIds() const override { return eos; }
  int32_t specialTokenId(std::string_view piece) const override {
    for (const AddedToken &t : added)
      if (t.content == piece) return t.id;
    return -1;
  }
  std::string kind() const override { return "hf-bpe"; }
  std::string serialize() const override { return jsonText; }

private:
  [[noreturn]] void fail(const std::string &where, const std::string &what) const {
    throw InputError(origin + ": " + where + " " + what);
  }

  void setToken(int32_t id, const std::string &s, bool special, const std::string &where) {
    if (id < 0 || id > (1 << 26))
      fail(where, "has id " + std::to_string(id));
    if (size_t(id) >= idToToken.size()) {
      idToToken.resize(size_t(id) + 1);
      isSpecial.resize(size_t(id) + 1, false);
    }
    idToToken[id] = s;
    isSpecial[id] = special;
  }

  void loadModel(const json &root) {
    auto it = root.find("model");
    if (it == root.end() || !it->is_object())
      fail("\"model\"", "is missing");
    const json &model = *it;
    std::string type = model.value("type", std::string("BPE"));
    if (type != "BPE")
      fail("model.type", "is \"" + type + "\"; kvplan reads only byte-level \"BPE\" tokenizer.json");
    for (const char *key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      auto k = model.find(key);
      if (k != model.end() && k->is_string() && !k->get<std::string>().empty())
        fail(std::string("model.") + key, "is set; kvplan's byte-level BPE does not support it");
    }
    ignoreMerges = model.value("ignore_merges", false);

    auto vit = model.find("vocab");
    if (vit == model.end() || !vit->is_object() || vit->empty())
      fail("model.vocab", "is missing or not a non-empty object");
    for (auto &[piece, idv] : vit->items()) {
      if (!idv.is_number_integer())
        fail("model.vocab[\"" + piece + "\"]", "is not an integer id");
      int32_t id = idv.get<int32_t>();
      vocab.emplace(piece, id);
      setToken(id, piece, false, "model.vocab[\"" + piece + "\"]");
    }
    auto unkIt = model.find("unk_token");
    if (unkIt != model.end() && unkIt->is_string()) {
      auto u = vocab.find(unkIt->get<std::string>());
      if (u != vocab.end())
        unk = u->second;
    }

    auto mit = model.find("merges");
    if (mit == model.end() || !mit->is_array())
      fail("model.merges", "is missing or not an array");
    int32_t rank = 0;
    for (const json &m : *mit) {
      std::string where = "model.merges[" + std::to_string(rank) + "]";
      std::string a, b;
      if (m.is_string()) {
        // The older form "a b": byte-level tokens never contain a space.
        std::string s = m.get<std::string>();
        size_t sp = s.find(' ');
        if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
          fail(where, "\"" + s + "\" is not two tokens separated by one space");
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        a = m[0].get<std::string>();
        b = m[1].get<std::string>();
      } else {
        fail(where, "is neither \"a b\" nor [\"a\", \"b\"]");
      }
      auto ia = vocab.find(a), ib = vocab.find(b), iab = vocab.find(a + b);
      if (ia == vocab.end() || ib == vocab.end() || iab == vocab.end())
        fail(where, "(\"" + a + "\", \"" + b + "\") uses or makes a token missing from model.vocab");
      uint64_t key = pairKey(ia->second, ib->second);
      // The first (best-ranked) listing of a pair wins.
      merges.emplace(key, std::make_pair(rank, iab->second));
      ++rank;
    }
  }

  void loadAddedTokens(const json &root) {
    auto it = root.find("added_tokens");
    if (it == root.end() || it->is_null())
      return;
    if (!it->is_array())
      fail("added_tokens", "is not an array");
    size_t i = 0;
    for (const json &t : *it) {
      std::string where = "added_tokens[" + std::to_string(i++) + "]";
      if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer() ||
          !t.contains("content") || !t["content"].is_string())
        fail(where, "needs an integer \"id\" and a string \"content\"");
      AddedToken a;
      a.id = t["id"].get<int32_t>();
      a.content = t["content"].get<std::string>();
      if (a.content.empty())
        fail(where, "has empty content");
      a.special = t.value("special", false);
      a.lstrip = t.value("lstrip", false);
      a.rstrip = t.value("rstrip", false);
      a.singleWord = t.value("single_word", false);
      setToken(a.id, a.content, a.special, where);
      added.push_back(a);
    }
    for (size_t k = 0; k < added.size(); ++k)
      addedByFirstByte[static_cast<unsigned char>(added[k].content[0])].push_back(k);
  }

  void loadNormalizer(const json &root) {
    auto it = root.find("normalizer");
    if (it == root.end() || it->is_null())
      return;
    // NFC leaves text that is already composed unchanged, and kvplan has no
    // Unicode normalization tables: accept it and encode the text as given.
    auto isNfc = [](const json &n) { return n.is_object() && n.value("type", "") == "NFC"; };
    if (isNfc(*it))
      return;
    if (it->is_object() && it->value("type", "") == "Sequence" && it->contains("normalizers")) {
      bool allNfc = true;
      for (const json &n : (*it)["normalizers"]) allNfc = allNfc && isNfc(n);
      if (allNfc)
        return;
    }
    fail("normalizer", it->dump().substr(0, 120) +
                           " is not supported (kvplan reads byte-level BPE with no normalizer or NFC)");
  }

  void addStep(const json &p, const std::string &where) {
    if (!p.is_object() || !p.contains("type") || !p["type"].is_string())
      fail(where, "has no \"type\"");
    std::string type = p["type"].get<std::string>();
    if (!steps.empty() && steps.back().kind == PreStep::byteLevel)
      fail(where, "follows the ByteLevel step; kvplan needs ByteLevel last");
    PreStep s;
    if (type == "Split") {
      s.kind = PreStep::split;
      if (p.value("invert", false))
        fail(where, "sets invert, which kvplan does not support");
      std::string behavior = p.value("behavior", std::string("Isolated"));
      if (behavior != "Isolated" && behavior != "Removed")
        fail(where, "has behavior \"" + behavior + "\"; kvplan supports Isolated and Removed");
      s.removeMatches = behavior == "Removed";
      const json &pat = p.contains("pattern") ? p["pattern"] : json();
      if (pat.is_object() && pat.contains("Regex") && pat["Regex"].is_string())
        s.regex = std::make_shared<Regex>(pat["Regex"].get<std::string>(), false,
                                          origin + ": " + where + ".pattern.Regex");
      else if (pat.is_object() && pat.contains("String") && pat["String"].is_string())
        s.regex = std::make_shared<Regex>(pat["String"].get<std::string>(), true,
                                          origin + ": " + where + ".pattern.String");
      else
        fail(where, "needs pattern {\"Regex\": ...} or {\"String\": ...}");
    } else if (type == "ByteLevel") {
      s.kind = PreStep::byteLevel;
      s.addPrefixSpace = p.value("add_prefix_space", false);
      if (p.value("use_regex", true))
        s.regex = std::make_shared<Regex>(kGpt2Pattern, false, "the GPT-2 pattern");
    } else if (type == "Digits") {
      s.kind = PreStep::split;
      s.regex = std::make_shared<Regex>(p.value("individual_digits", false) ? "\\p{N}" : "\\p{N}+",
                                        false, origin + ": " + where);
    } else {
      fail(where, "has type \"" + type +
                      "\"; kvplan supports Sequence, Split, Digits and ByteLevel pre-tokenizers");
    }
    steps.push_back(std::move(s));
  }

  void loadPreTokenizer(const json &root) {
    auto it = root.find("pre_tokenizer");
    if (it != root.end() && it->is_object() && it->value("type", "") == "Sequence") {
      const json &list = it->contains("pretokenizers") ? (*it)["pretokenizers"] : json();
      if (!list.is_array())
        fail("pre_tokenizer.pretokenizers", "is not an array");
      for (size_t i = 0; i < list.size(); ++i)
        addStep(list[i], "pre_tokenizer.pretokenizers[" + std::to_string(i) + "]");
    } else if (it != root.end() && !it->is_null()) {
      addStep(*it, "pre_tokenizer");
    }
    if (steps.empty() || steps.back().kind != PreStep::byteLevel)
      fail("pre_tokenizer", "has no ByteLevel step: this is not a byte-level BPE tokenizer "
                            "(for a sentencepiece-style model, load its tokenizer.model)");
  }

  int32_t specialId(const json &tp, const std::string &name, const std::string &where) const {
    if (tp.contains("special_tokens") && tp["special_tokens"].contains(name)) {
      const json &ids = tp["special_tokens"][name]["ids"];
      if (ids.is_array() && !ids.empty() && ids[0].is_number_integer())
        return ids[0].get<int32_t>();
    }
    for (const AddedToken &t : added)
      if (t.content == name)
        return t.id;
    auto v = vocab.find(name);
    if (v != vocab.end())
      return v->second;
    fail(where, "names special token \"" + name + "\", which the tokenizer does not define");
  }

  void loadPostProcessor(const json &root) {
    auto it = root.find("post_processor");
    if (it == root.end() || !it->is_object())
      return;
    std::vector<const json *> templates;
    if (it->value("type", "") == "TemplateProcessing")
      templates.push_back(&*it);
    else if (it->value("type", "") == "Sequence" && it->contains("processors"))
      for (const json &p : (*it)["processors"])
        if (p.is_object() && p.value("type", "") == "TemplateProcessing")
          templates.push_back(&p);
    for (const json *tp : templates) {
      if (!tp->contains("single") || !(*tp)["single"].is_array())
        continue;
      bool seenSequence = false;
      for (const json &item : (*tp)["single"]) {
        if (item.contains("Sequence")) {
          seenSequence = true;
        } else if (item.contains("SpecialToken")) {
          std::string name = item["SpecialToken"].value("id", std::string());
          int32_t id = specialId(*tp, name, "post_processor (TemplateProcessing)");
          // Only the first special token before $A is modelled, as BOS; a
          // token after $A is an end-of-sequence token.
          if (!seenSequence && bos < 0)
            bos = id;
          else if (seenSequence && std::find(eos.begin(), eos.end(), id) == eos.end())
            eos.push_back(id);
        }
      }
    }
  }

  static uint64_t pairKey(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }

  /// The leftmost added token at or after `pos` (the longest one where
  /// several start there), with [begin, end) widened over the whitespace
  /// that lstrip/rstrip absorb.
  const AddedToken *findAdded(const std::string &text, size_t pos, size_t &begin, size_t &end) const {
    for (size_t i = pos; i < text.size(); ++i) {
      const AddedToken *best = nullptr;
      for (size_t k : addedByFirstByte[static_cast<unsigned char>(text[i])]) {
        const AddedToken &t = added[k];
        if (text.compare(i, t.content.size(), t.content) != 0)
          continue;
        if (t.singleWord && ((i > 0 && isWordByte(text[i - 1])) ||
                             (i + t.content.size() < text.size() && isWordByte(text[i + t.content.size()]))))
          continue;
        if (!best || t.content.size() > best->content.size())
          best = &t;
      }
      if (!best)
        continue;
      begin = i;
      end = i + best->content.size();
      if (best->lstrip)
        while (begin > pos && isAsciiSpace(text[begin - 1])) --begin;
      if (best->rstrip)
        while (end < text.size() && isAsciiSpace(text[end])) ++end;
      return best;
    }
    return nullptr;
  }

  /// Pre-tokenizes text between added tokens and runs BPE on each piece.
  void encodeSegment(std::string_view segment, std::vector<int32_t> &out) const {
    if (segment.empty())
      return;
    std::vector<std::string> pieces{std::string(segment)};
    for (const PreStep &s : steps) {
      std::vector<std::string> next;
      for (std::string &p : pieces) {
        if (s.kind == PreStep::byteLevel && s.addPrefixSpace && p[0] != ' ')
          p.insert(p.begin(), ' ');
        if (!s.regex) {
          next.push_back(std::move(p));
          continue;
        }
        // Matches and the text between them become separate pieces.
        size_t at = 0;
        for (auto [b, e] : s.regex->findAll(p)) {
          if (b > at)
            next.push_back(p.substr(at, b - at));
          if (!s.removeMatches)
            next.push_back(p.substr(b, e - b));
          at = e;
        }
        if (at < p.size())
          next.push_back(p.substr(at));
      }
      pieces = std::move(next);
    }
    const ByteMap &m = byteMap();
    for (const std::string &p : pieces) {
      std::string mapped;
      for (unsigned char c : p) mapped += m.toChar[c];
      encodeWord(mapped, out);
    }
  }

  void encodeWord(const std::string &word, std::vector<int32_t> &out) const {
    if (ignoreMerges) {
      auto it = vocab.find(word);
      if (it != vocab.end()) {
        out.push_back(it->second);
        return;
      }
    }
    std::vector<MergeSymbol> symbols;
    for (size_t i = 0; i < word.size();) {
      size_t start = i;
      nextCodePoint(word, i);
      MergeSymbol s;
      s.text = word.substr(start, i - start);
      auto it = vocab.find(s.text);
      s.id = it == vocab.end() ? -1 : it->second;
      symbols.push_back(std::move(s));
    }
    auto candidate = [&](const MergeSymbol &l, const MergeSymbol &r) -> std::optional<MergeCandidate> {
      if (l.id < 0 || r.id < 0)
        return std::nullopt;
      auto it = merges.find(pairKey(l.id, r.id));
      if (it == merges.end())
        return std::nullopt;
      return MergeCandidate{-double(it->second.first), it->second.second};
    };
    for (const MergeSymbol &s : mergeSymbols(std::move(symbols), candidate)) {
      if (s.id >= 0)
        out.push_back(s.id);
      else if (unk >= 0)
        out.push_back(unk);
      // Without an unk token Hugging Face drops a character the vocabulary
      // lacks; a byte-level vocabulary has all 256, so this is a broken one.
    }
  }

  std::string jsonText;
  std::string origin;
  std::unordered_map<std::string, int32_t> vocab;
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges; // (a, b) -> (rank, a+b)
  std::vector<std::string> idToToken;
  std::vector<bool> isSpecial;
  std::vector<AddedToken> added;
  std::array<std::vector<size_t>, 256> addedByFirstByte;
  std::vector<PreStep> steps;
  bool ignoreMerges = false;
  int32_t unk = -1;
  int32_t bos = -1;
  std::vector<int32_t> eos;
};

} // namespace

std::unique_ptr<Tokenizer> makeHfBpe(std::string json, const std::string &origin) {
  return std::make_unique<HfBpeTokenizer>(std::move(json), origin);
}

} // namespace tokenizer_detail
} // namespace kvplan
