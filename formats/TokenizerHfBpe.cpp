// Hugging Face tokenizer.json BPE: byte-level (Llama 3, Qwen2/3, SmolLM2)
// and sentencepiece-style (Llama 2, Mistral, TinyLlama, Phi-3). Added tokens
// matched literally, the Unicode normalizers (through utf8proc), Prepend and
// Replace, regex pre-tokenization through PCRE2 with Oniguruma's meaning of
// the classes, Metaspace, GPT-2's byte-to-unicode map or <0xAB> byte
// fallback, merges applied by rank, and a sentencepiece-style decoder run
// step by step. The big vocabulary and merge tables are read straight from
// the JSON text.
#include "formats/TokenizerInternal.h"

#include "formats/JsonScan.h"
#include "spec/ModelSpec.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <nlohmann/json.hpp>
#include <utf8proc.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <optional>

namespace kvplan {
namespace tokenizer_detail {

namespace {

using json = nlohmann::json;

// GPT-2's ByteLevel pre-tokenizer pattern (use_regex: true).
constexpr const char *kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/// Special tokens that end a sequence in the BPE families kvplan targets.
/// tokenizer.json does not say which tokens end generation (that is in
/// generation_config.json), so these names stand in for it.
const char *const kEndOfSequenceNames[] = {
    "<|end_of_text|>", "<|eot_id|>", "<|eom_id|>", "<|endoftext|>", "<|im_end|>", "</s>",
    "<|end|>", // Phi-3's and Phi-4-mini's end of a turn
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

// Oniguruma's Space (Unicode White_Space), as PCRE2 class items: PCRE2's \s
// also matches U+180E MONGOLIAN VOWEL SEPARATOR, which left White_Space in
// Unicode 6.3 (PCRE2 keeps it in \h).
constexpr const char *kOnigSpace =
    "\\x{9}-\\x{d}\\x{20}\\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}";
// Oniguruma's Word: Alphabetic, marks, decimal digits and connector
// punctuation, and below U+0100 its Latin-1 table, which adds the
// superscript digits and the fractions (PCRE2 10.42's \w is letters,
// numbers and '_').
constexpr const char *kOnigWord = "\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\x{b2}\\x{b3}\\x{b9}\\x{bc}-\\x{be}";

/// `pattern`, written for Oniguruma's Ruby syntax (what Hugging Face's
/// tokenizers compiles Split patterns with), rewritten so that PCRE2 gives the
/// same classes: \s \S \w \W become explicit classes, and \h \H (hex digits
/// in Oniguruma, horizontal space in PCRE2) and \v (a vertical tab there, any
/// vertical space here) their Oniguruma meaning. \p{..} classes need no
/// rewrite; both engines read them from the Unicode tables.
std::string onigToPcre2(const std::string &pattern, const std::string &where) {
  std::string out;
  int classDepth = 0;
  for (size_t i = 0; i < pattern.size(); ++i) {
    char c = pattern[i];
    if (c != '\\' || i + 1 == pattern.size()) {
      if (c == '[' && pattern.compare(i, 2, "[:") == 0 && classDepth > 0) {
        size_t close = pattern.find(":]", i + 2); // a POSIX class such as [:alpha:]
        if (close != std::string::npos) {
          out.append(pattern, i, close + 2 - i);
          i = close + 1;
          continue;
        }
      }
      if (c == '[') {
        ++classDepth;
        out += c;
        // A ']' first in a class is a literal in both engines.
        if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
        if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];
        continue;
      }
      if (c == ']' && classDepth > 0) --classDepth;
      out += c;
      continue;
    }
    char e = pattern[++i];
    const char *items = e == 's' || e == 'S' ? kOnigSpace : e == 'w' || e == 'W' ? kOnigWord
                        : e == 'h' || e == 'H' ? "0-9a-fA-F" : nullptr;
    bool negated = e == 'S' || e == 'W' || e == 'H';
    if (e == 'v') {
      out += "\\x{b}";
    } else if (!items) {
      out += '\\';
      out += e;
    } else if (classDepth == 0) {
      out += negated ? "[^" : "[";
      out += items;
      out += ']';
    } else if (!negated) {
      out += items;
    } else {
      throw InputError(where + ": \\" + std::string(1, e) +
                       " inside a character class has no PCRE2 equivalent kvplan can write; "
                       "use a negated class ([^...]) instead");
    }
  }
  return out;
}

/// The Unicode normalization forms of Hugging Face's NFC, NFD, NFKC and NFKD
/// normalizers, as utf8proc options.
utf8proc_option_t normalizationOptions(const std::string &type) {
  int base = UTF8PROC_STABLE;
  if (type == "NFC") return utf8proc_option_t(base | UTF8PROC_COMPOSE);
  if (type == "NFD") return utf8proc_option_t(base | UTF8PROC_DECOMPOSE);
  if (type == "NFKC") return utf8proc_option_t(base | UTF8PROC_COMPOSE | UTF8PROC_COMPAT);
  if (type == "NFKD") return utf8proc_option_t(base | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT);
  return utf8proc_option_t(0);
}

/// `text` (valid UTF-8) in the normalization form `options` describes.
std::string normalizeUnicode(std::string_view text, utf8proc_option_t options) {
  if (text.empty())
    return std::string();
  utf8proc_uint8_t *mapped = nullptr;
  utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t *>(text.data()),
                                    utf8proc_ssize_t(text.size()), &mapped, options);
  if (n < 0)
    throw InputError(std::string("Unicode normalization failed: ") + utf8proc_errmsg(n));
  std::string out(reinterpret_cast<const char *>(mapped), size_t(n));
  std::free(mapped);
  return out;
}

/// model.vocab: the pieces back to back in one buffer (about 2 MB, where the
/// JSON text is 10), each after its length and id, and piece text -> id by
/// open addressing in a power-of-two table at most half full whose slots
/// hold a hash tag and where a piece's record starts. Loading looks pieces
/// up about a million times (three per merge), so it is cache misses that
/// decide the load time: a lookup touches one slot and one record. A later
/// duplicate piece wins, as in the map Hugging Face reads the vocabulary into.
class PieceIndex {
public:
  void add(std::string_view piece, int32_t id) {
    records.push_back(uint32_t(bytes.size()));
    uint32_t header[2] = {uint32_t(piece.size()), uint32_t(id)};
    bytes.append(reinterpret_cast<const char *>(header), sizeof(header));
    bytes.append(piece);
  }
  size_t size() const { return records.size(); }
  std::string_view piece(size_t e) const { return pieceAt(records[e]); }
  int32_t id(size_t e) const { return idAt(records[e]); }

  /// Indexes what add() gave; call once, after the last add().
  void build() {
    size_t size = 16;
    while (size < 2 * records.size()) size *= 2;
    slots.assign(size, 0);
    mask = size - 1;
    std::vector<uint64_t> hashes(records.size());
    for (size_t e = 0; e < records.size(); ++e) hashes[e] = hash(pieceAt(records[e]));
    constexpr size_t ahead = 16; // prefetch distance, as in readMerges
    for (size_t e = 0; e < records.size(); ++e) {
      if (e + ahead < records.size())
        prefetchSlot(hashes[e + ahead]);
      uint32_t at = records[e];
      std::string_view p = pieceAt(at);
      uint64_t h = hashes[e];
      size_t i = h & mask;
      while (slots[i] && !(tag(slots[i]) == uint32_t(h >> 32) && pieceAt(record(slots[i])) == p))
        i = (i + 1) & mask;
      slots[i] = (h >> 32 << 32) | uint64_t(at + 1);
    }
  }
  /// A hash for short strings (pieces average a few bytes), mixed so that
  /// both the low bits (the slot) and the high ones (the tag) vary.
  static uint64_t hash(std::string_view p) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ p.size();
    size_t i = 0;
    for (; i + 8 <= p.size(); i += 8) {
      uint64_t w;
      std::memcpy(&w, p.data() + i, 8);
      h = (h ^ w) * 0xBF58476D1CE4E5B9ull;
      h ^= h >> 29;
    }
    uint64_t w = 0;
    if (i < p.size())
      std::memcpy(&w, p.data() + i, p.size() - i);
    h = (h ^ w) * 0x94D049BB133111EBull;
    h ^= h >> 32;
    h *= 0xBF58476D1CE4E5B9ull;
    return h ^ (h >> 29);
  }
  /// Starts loading the slot where a lookup of hash `h` begins.
  void prefetchSlot(uint64_t h) const { __builtin_prefetch(slots.data() + (h & mask)); }
  /// Starts loading the record that slot names (call once the slot is in
  /// cache, some time after prefetchSlot).
  void prefetchRecord(uint64_t h) const {
    if (uint64_t slot = slots[h & mask])
      __builtin_prefetch(bytes.data() + record(slot));
  }
  /// The id of `piece`, -1 when the vocabulary lacks it.
  int32_t find(std::string_view p) const { return find(p, hash(p)); }
  int32_t find(std::string_view p, uint64_t h) const {
    if (slots.empty())
      return -1;
    for (size_t i = h & mask; slots[i]; i = (i + 1) & mask)
      if (tag(slots[i]) == uint32_t(h >> 32) && pieceAt(record(slots[i])) == p)
        return idAt(record(slots[i]));
    return -1;
  }

private:
  static uint32_t tag(uint64_t slot) { return uint32_t(slot >> 32); }
  static uint32_t record(uint64_t slot) { return uint32_t(slot) - 1; }
  uint32_t field(uint32_t at, int k) const {
    uint32_t v;
    std::memcpy(&v, bytes.data() + at + 4 * k, 4);
    return v;
  }
  std::string_view pieceAt(uint32_t at) const { return std::string_view(bytes).substr(at + 8, field(at, 0)); }
  int32_t idAt(uint32_t at) const { return int32_t(field(at, 1)); }

  std::string bytes;             // per piece: uint32 length, int32 id, the piece
  std::vector<uint32_t> records; // where each added piece's record starts
  std::vector<uint64_t> slots;   // hash tag << 32 | record + 1; 0 when empty
  size_t mask = 0;
};

/// (left id, right id) -> (rank, merged id), open addressing like PieceIndex.
/// A pair listed twice keeps its last listing, as in Hugging Face's merge map.
class MergeIndex {
public:
  struct Entry {
    uint64_t key = kEmpty;
    int32_t rank = 0, merged = -1;
  };
  static uint64_t key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }

  void build(const std::vector<Entry> &entries) {
    // At most 3/4 full: the table (16 bytes a slot) is the largest
    // allocation of a load, and fresh pages cost more than short probes.
    size_t size = 16;
    while (size * 3 < 4 * entries.size()) size *= 2;
    slots.assign(size, Entry{});
    mask = size - 1;
    constexpr size_t ahead = 16; // prefetch distance, as in readMerges
    for (size_t i = 0; i < entries.size(); ++i) {
      if (i + ahead < entries.size())
        __builtin_prefetch(slots.data() + (mix(entries[i + ahead].key) & mask));
      slots[slot(entries[i].key)] = entries[i];
    }
  }
  const Entry *find(uint64_t k) const {
    if (slots.empty())
      return nullptr;
    const Entry &e = slots[slot(k)];
    return e.key == kEmpty ? nullptr : &e;
  }

private:
  static constexpr uint64_t kEmpty = ~uint64_t(0); // ids are below 2^26
  // splitmix64's finalizer: the ids' low bits alone would cluster.
  static uint64_t mix(uint64_t k) {
    uint64_t h = (k ^ (k >> 30)) * 0xBF58476D1CE4E5B9ull;
    h = (h ^ (h >> 27)) * 0x94D049BB133111EBull;
    return h ^ (h >> 31);
  }
  size_t slot(uint64_t k) const {
    size_t i = size_t(mix(k)) & mask;
    while (slots[i].key != kEmpty && slots[i].key != k) i = (i + 1) & mask;
    return i;
  }
  std::vector<Entry> slots;
  size_t mask = 0;
};

/// A compiled PCRE2 pattern (Unicode; a pattern goes through onigToPcre2
/// first, so that its classes mean what Oniguruma's do).
class Regex {
public:
  Regex(const std::string &onigPattern, bool literal, const std::string &where) {
    int err = 0;
    PCRE2_SIZE errOffset = 0;
    uint32_t options = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
    std::string pattern = literal ? onigPattern : onigToPcre2(onigPattern, where);
    code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), options, &err,
                         &errOffset, nullptr);
    if (!code) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof(msg));
      throw InputError(where + ": the pattern does not compile (" +
                       reinterpret_cast<const char *>(msg) + " at offset " + std::to_string(errOffset) +
                       (pattern == onigPattern ? "" : " of its PCRE2 form " + pattern) + ")");
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

/// `s` with every match of `pattern` replaced by `content`.
std::string replaceAll(const Regex &pattern, std::string_view s, const std::string &content) {
  std::string out;
  size_t at = 0;
  for (auto [b, e] : pattern.findAll(s)) {
    out.append(s, at, b - at);
    out += content;
    at = e;
  }
  return out.append(s, at, std::string_view::npos);
}

struct AddedToken {
  std::string content;
  std::string matchText; // content, normalized when `normalized`
  int32_t id = -1;
  bool special = false, lstrip = false, rstrip = false, singleWord = false;
  bool normalized = false; // matched in the normalized text, not the raw one
};

/// One normalizer step: a Unicode normalization form, Prepend (text put in
/// front of a non-empty segment) or Replace (every match of a pattern).
struct NormStep {
  enum Kind { unicode, prepend, replace } kind = unicode;
  utf8proc_option_t form{};     // unicode
  std::string text;             // prepend: the prefix; replace: the content
  std::shared_ptr<Regex> regex; // replace: the pattern (a String one compiled literally)
};

/// Where Metaspace puts its replacement character in front of a piece.
enum class PrependScheme { always, first, never };

/// One pre-tokenizer step, applied to every piece the previous step made.
struct PreStep {
  enum Kind { split, byteLevel, digits, metaspace } kind = split;
  std::shared_ptr<Regex> regex; // split; byteLevel with use_regex
  // split: where a delimiter (a match; with invert, the text between
  // matches) goes, as Hugging Face's SplitDelimiterBehavior says.
  enum Behavior { isolated, removed, mergedWithPrevious, mergedWithNext, contiguous };
  Behavior behavior = isolated;
  bool invert = false;
  bool addPrefixSpace = false;  // byteLevel
  std::string replacement;      // metaspace: what a space becomes ("\u2581")
  PrependScheme prepend = PrependScheme::always; // metaspace
  bool splitWords = true;       // metaspace: a piece starts at each replacement
};

/// One step of a decoder that is not ByteLevel (sentencepiece-style
/// tokenizers): Hugging Face's decoders each turn the list of token strings
/// into another list, which is joined at the end.
struct DecodeStep {
  enum Kind { replace, byteFallback, fuse, strip, metaspace } kind = replace;
  std::shared_ptr<Regex> regex; // replace: the pattern
  std::string content;          // replace: what a match becomes
  uint32_t stripChar = ' ';     // strip: the character taken off
  size_t start = 0, stop = 0;   // strip: at most this many, at the start and the end
  uint32_t replacement = 0x2581; // metaspace: the character that is a space
  bool dropFirst = true;        // metaspace: the first token's replacements are dropped
};

bool isAsciiSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }
bool isWordByte(char c) {
  unsigned char u = static_cast<unsigned char>(c);
  return u >= 0x80 || std::isalnum(u) || c == '_';
}

class HfBpeTokenizer : public Tokenizer {
public:
  HfBpeTokenizer(std::string text, const std::string &origin) : jsonText(std::move(text)), origin(origin) {
    // idToToken views bytes the object owns, so it is never copied or moved.
    Sections sections = scanSections();
    const json &root = sections.root;
    try {
      loadModel(root, sections);
      loadAddedTokens(root);
      loadNormalizer(root);
      loadPreTokenizer(root);
      loadDecoder(root);
      loadPostProcessor(root);
    } catch (const json::exception &e) {
      // A field of the wrong JSON type that no check above caught.
      throw InputError(origin + ": unexpected tokenizer.json content: " + e.what());
    }
    // Added tokens matched after normalization are matched as normalized.
    for (AddedToken &t : added) t.matchText = t.normalized ? normalize(t.content) : t.content;
    for (size_t k = 0; k < added.size(); ++k)
      if (!added[k].matchText.empty())
        addedByFirstByte[static_cast<unsigned char>(added[k].matchText[0])].push_back(k);
    // gpt-oss's harmony (o200k_harmony): <|end|> ends a message and the
    // answer goes on; <|return|> and <|call|> end it (as llama.cpp reads it).
    auto special = [&](const char *name) {
      return std::any_of(added.begin(), added.end(),
                         [&](const AddedToken &t) { return t.special && t.content == name; });
    };
    const bool harmony = special("<|return|>") && special("<|call|>");
    for (const char *name : kEndOfSequenceNames)
      for (const AddedToken &t : added)
        if (t.special && t.content == name && !(harmony && t.content == "<|end|>") &&
            std::find(eos.begin(), eos.end(), t.id) == eos.end())
          eos.push_back(t.id);
    for (const char *name : {"<|return|>", "<|call|>"})
      for (const AddedToken &t : added)
        if (harmony && t.special && t.content == name &&
            std::find(eos.begin(), eos.end(), t.id) == eos.end())
          eos.push_back(t.id);
  }

  HfBpeTokenizer(const HfBpeTokenizer &) = delete;
  HfBpeTokenizer &operator=(const HfBpeTokenizer &) = delete;

  std::vector<int32_t> encode(std::string_view rawText, bool addBos) const override {
    // Hugging Face works on Rust strings, which are valid UTF-8; bytes that
    // are not become U+FFFD here, as a lossy conversion there would.
    std::string text = utf8Lossy(rawText);
    std::vector<int32_t> out;
    if (addBos && bos >= 0)
      out.push_back(bos);
    // As Hugging Face's AddedVocabulary does: tokens marked "normalized":
    // false are found in the raw text, the text between them is normalized,
    // and the other added tokens are found in that.
    // A segment's place in the text matters to Metaspace's "first" scheme.
    splitAdded(text, /*normalizedPass=*/false, out, [&](std::string_view raw, size_t rawAt) {
      std::string normalized = normalize(raw);
      splitAdded(normalized, /*normalizedPass=*/true, out, [&](std::string_view piece, size_t at) {
        encodeSegment(piece, rawAt == 0 && at == 0, out);
      });
    });
    return out;
  }

  std::string decode(const std::vector<int32_t> &ids) const override {
    return utf8Lossy(rawBytes(ids));
  }
  std::string tokenBytes(int32_t id) const override {
    if (byteLevel)
      return rawBytes({id});
    if (id < 0 || size_t(id) >= idToToken.size() || isSpecial[id])
      return "";
    // A byte token is its byte, where a lone one decodes to U+FFFD.
    if (int byte = bytePieceValue(idToToken[id]); byte >= 0 && decodesBytes)
      return std::string(1, char(byte));
    return runDecoders({std::string(idToToken[id])}, /*fromStart=*/false);
  }

  int32_t vocabSize() const override { return int32_t(idToToken.size()); }
  int32_t bosId() const override { return bos; }
  std::vector<int32_t> eosIds() const override { return eos; }
  int32_t specialTokenId(std::string_view piece) const override {
    for (const AddedToken &t : added)
      if (t.content == piece) return t.id;
    return -1;
  }
  std::vector<std::pair<std::string, int32_t>> specialTokens() const override {
    std::vector<std::pair<std::string, int32_t>> out;
    for (const AddedToken &t : added) out.emplace_back(t.content, t.id);
    return out;
  }
  std::string kind() const override { return "hf-bpe"; }
  std::string serialize() const override { return jsonText; }

private:
  /// The bytes `ids` decode to, before the lossy conversion to UTF-8.
  std::string rawBytes(const std::vector<int32_t> &ids) const {
    if (!byteLevel) {
      std::vector<std::string> tokens;
      for (int32_t id : ids)
        if (id >= 0 && size_t(id) < idToToken.size() && !isSpecial[id])
          tokens.emplace_back(idToToken[id]);
      return runDecoders(std::move(tokens), /*fromStart=*/true);
    }
    const ByteMap &m = byteMap();
    std::string bytes;
    for (int32_t id : ids) {
      if (id < 0 || size_t(id) >= idToToken.size() || isSpecial[id])
        continue;
      std::string_view tok = idToToken[id];
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
    return bytes;
  }
  /// The decoder steps on `tokens`, joined. `fromStart`: the tokens begin
  /// the text, so Metaspace drops the first one's replacements and a Strip
  /// after Fuse applies (for the bytes a token adds after other text, they
  /// do not).
  std::string runDecoders(std::vector<std::string> tokens, bool fromStart) const {
    bool fused = false;
    for (const DecodeStep &d : decoders) {
      if (d.kind == DecodeStep::byteFallback) {
        tokens = joinByteTokens(std::move(tokens));
      } else if (d.kind == DecodeStep::fuse) {
        std::string all;
        for (const std::string &t : tokens) all += t;
        tokens.assign(1, std::move(all));
        fused = true;
      } else {
        for (size_t i = 0; i < tokens.size(); ++i) {
          if (d.kind == DecodeStep::replace)
            tokens[i] = replaceAll(*d.regex, tokens[i], d.content);
          else if (d.kind == DecodeStep::strip && (fromStart || !fused))
            tokens[i] = strip(d, tokens[i]);
          else if (d.kind == DecodeStep::metaspace)
            tokens[i] = unMetaspace(d, tokens[i], fromStart && i == 0);
        }
      }
    }
    std::string text;
    for (const std::string &t : tokens) text += t;
    return text;
  }

  /// ByteFallback: each run of <0xAB> tokens becomes its bytes as one token
  /// where they are valid UTF-8, else one U+FFFD per byte token.
  static std::vector<std::string> joinByteTokens(std::vector<std::string> tokens) {
    std::vector<std::string> out;
    std::string run;
    size_t runTokens = 0;
    auto flush = [&] {
      if (runTokens == 0)
        return;
      if (utf8Lossy(run) == run)
        out.push_back(run);
      else
        for (size_t k = 0; k < runTokens; ++k) out.push_back("\xEF\xBF\xBD");
      run.clear();
      runTokens = 0;
    };
    for (std::string &t : tokens) {
      if (int b = bytePieceValue(t); b >= 0) {
        run += char(b);
        ++runTokens;
        continue;
      }
      flush();
      out.push_back(std::move(t));
    }
    flush();
    return out;
  }

  /// Strip: at most `start` leading and `stop` trailing copies of its character.
  static std::string strip(const DecodeStep &d, const std::string &token) {
    std::vector<size_t> starts; // where each character starts
    std::vector<uint32_t> cps;
    for (size_t i = 0; i < token.size();) {
      starts.push_back(i);
      cps.push_back(nextCodePoint(token, i));
    }
    size_t b = 0, e = cps.size();
    while (b < d.start && b < e && cps[b] == d.stripChar) ++b;
    for (size_t k = 0; k < d.stop && e > b && cps[e - 1] == d.stripChar; ++k) --e;
    size_t from = b < starts.size() ? starts[b] : token.size();
    size_t to = e < starts.size() ? starts[e] : token.size();
    return token.substr(from, to - from);
  }

  /// Metaspace's decoder: its character becomes a space, or nothing in the
  /// text's first token (unless its scheme is "never").
  static std::string unMetaspace(const DecodeStep &d, const std::string &token, bool first) {
    std::string out;
    for (size_t i = 0; i < token.size();) {
      size_t start = i;
      if (nextCodePoint(token, i) != d.replacement)
        out.append(token, start, i - start);
      else if (!(first && d.dropFirst))
        out += ' ';
    }
    return out;
  }

  [[noreturn]] void fail(const std::string &where, const std::string &what) const {
    throw InputError(origin + ": " + where + " " + what);
  }

  void setToken(int32_t id, std::string_view s, bool special, const std::string &where) {
    if (id < 0 || id > (1 << 26))
      fail(where, "has id " + std::to_string(id));
    if (size_t(id) >= idToToken.size()) {
      idToToken.resize(size_t(id) + 1);
      isSpecial.resize(size_t(id) + 1, false);
    }
    idToToken[id] = s;
    isSpecial[id] = special;
  }

  /// tokenizer.json's members as nlohmann values, except model.vocab and
  /// model.merges (each ~5 MB: a JSON tree of them was most of the load
  /// time), which readVocab and readMerges read from the text: during the
  /// scan when "type": "BPE" comes first in "model" (as Hugging Face writes
  /// it), else from where the scan found them.
  struct Sections {
    json root = json::object();
    size_t vocabAt = 0, mergesAt = 0; // offsets in the text; 0 when absent
    bool vocabRead = false, mergesRead = false;
  };

  json parseMember(JsonScanner &scan) const {
    size_t at = scan.offset();
    std::string_view raw = scan.skipValue();
    try {
      return json::parse(raw);
    } catch (const json::exception &e) {
      throw InputError(origin + ": malformed JSON in the value at byte " + std::to_string(at) + ": " + e.what());
    }
  }

  Sections scanSections() {
    JsonScanner scan(jsonText, origin);
    Sections s;
    if (scan.peek() != '{')
      fail("the top level", "is not a JSON object");
    scan.readObject([&](std::string_view key) {
      if (key != "model" || scan.peek() != '{') {
        s.root[std::string(key)] = parseMember(scan);
        return;
      }
      json model = json::object();
      scan.readObject([&](std::string_view member) {
        size_t at = scan.offset();
        auto type = model.find("type");
        bool bpe = type != model.end() && type->is_string() && *type == "BPE";
        if (member == "vocab" && bpe) {
          scan.seek(readVocab(at));
          s.vocabRead = true;
        } else if (member == "merges" && s.vocabRead) {
          scan.seek(readMerges(at));
          s.mergesRead = true;
        } else if (member == "vocab" || member == "merges") {
          scan.skipValue();
          (member == "vocab" ? s.vocabAt : s.mergesAt) = at;
        } else {
          model[std::string(member)] = parseMember(scan);
        }
      });
      s.root["model"] = std::move(model);
    });
    scan.expectEnd();
    return s;
  }

  void loadModel(const json &root, const Sections &sections) {
    auto it = root.find("model");
    if (it == root.end() || !it->is_object())
      fail("\"model\"", "is missing");
    const json &model = *it;
    std::string type = model.value("type", std::string("BPE"));
    if (type != "BPE")
      fail("model.type", "is \"" + type + "\"; kvplan reads only \"BPE\" tokenizer.json");
    for (const char *key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      auto k = model.find(key);
      if (k != model.end() && k->is_string() && !k->get<std::string>().empty())
        fail(std::string("model.") + key, "is set; kvplan's BPE does not support it");
    }
    ignoreMerges = model.value("ignore_merges", false);
    byteFallback = model.value("byte_fallback", false);
    fuseUnk = model.value("fuse_unk", false);
    if (!sections.vocabRead)
      readVocab(sections.vocabAt);
    auto unkIt = model.find("unk_token");
    if (unkIt != model.end() && unkIt->is_string())
      unk = vocab.find(unkIt->get<std::string>());
    if (!sections.mergesRead)
      readMerges(sections.mergesAt);
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof name, "<0x%02X>", b);
      byteTokens[size_t(b)] = vocab.find(name);
    }
  }

  /// Reads model.vocab from offset `at`; returns the offset after it.
  size_t readVocab(size_t at) {
    JsonScanner scan(jsonText, origin);
    scan.seek(at);
    if (at == 0 || scan.peek() != '{')
      fail("model.vocab", "is missing or not a non-empty object");
    int32_t maxId = -1;
    scan.readObject([&](std::string_view key) {
      char c = scan.peek();
      int64_t id = c == '-' || (c >= '0' && c <= '9') ? scan.readInteger() : -1;
      if (c != '-' && (c < '0' || c > '9'))
        fail("model.vocab[\"" + std::string(key) + "\"]", "is not an integer id");
      if (id < 0 || id > (1 << 26))
        fail("model.vocab[\"" + std::string(key) + "\"]", "has id " + std::to_string(id));
      vocab.add(key, int32_t(id));
      maxId = std::max(maxId, int32_t(id));
    });
    if (vocab.size() == 0)
      fail("model.vocab", "is missing or not a non-empty object");
    vocab.build();
    idToToken.resize(size_t(maxId) + 1);
    isSpecial.resize(size_t(maxId) + 1, false);
    for (size_t e = 0; e < vocab.size(); ++e) idToToken[vocab.id(e)] = vocab.piece(e);
    return scan.offset();
  }

  /// model.merges, from offset `at` (which it moves past them), as (left,
  /// right) pairs of views: into the JSON text, or into `kept` for the few
  /// written with escapes.
  std::vector<std::pair<std::string_view, std::string_view>> parseMerges(size_t &at,
                                                                          std::deque<std::string> &kept) const {
    JsonScanner scan(jsonText, origin);
    scan.seek(at);
    if (at == 0 || scan.peek() != '[')
      fail("model.merges", "is missing or not an array");
    std::vector<std::pair<std::string_view, std::string_view>> pairs;
    // Room for the most merges the text can hold (a merge takes at least 6
    // bytes): pages that stay unused are never touched.
    pairs.reserve((jsonText.size() - at) / 6);
    std::string scratchA, scratchB;
    auto keep = [&](std::string_view s, const std::string &scratch) {
      return s.data() == scratch.data() ? std::string_view(kept.emplace_back(s)) : s;
    };
    scan.readArray([&] {
      std::string_view a, b;
      if (scan.peek() == '"') {
        // The older form "a b": byte-level tokens never contain a space.
        std::string_view s = keep(scan.readString(scratchA), scratchA);
        size_t sp = s.find(' ');
        if (sp == std::string_view::npos || s.find(' ', sp + 1) != std::string_view::npos)
          fail(mergeWhere(pairs.size()), "\"" + std::string(s) + "\" is not two tokens separated by one space");
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else if (scan.tryConsume('[') && scan.peek() == '"') {
        a = keep(scan.readString(scratchA), scratchA);
        scan.expect(',');
        if (scan.peek() != '"')
          fail(mergeWhere(pairs.size()), "is neither \"a b\" nor [\"a\", \"b\"]");
        b = keep(scan.readString(scratchB), scratchB);
        if (!scan.tryConsume(']'))
          fail(mergeWhere(pairs.size()), "is neither \"a b\" nor [\"a\", \"b\"]");
      } else {
        fail(mergeWhere(pairs.size()), "is neither \"a b\" nor [\"a\", \"b\"]");
      }
      pairs.emplace_back(a, b);
    });
    at = scan.offset();
    return pairs;
  }

  /// Reads model.merges from offset `at`; returns the offset after it.
  size_t readMerges(size_t at) {
    std::deque<std::string> kept;
    const auto pairs = parseMerges(at, kept);
    // Three lookups a merge in tables larger than the L2 cache: the merge
    // `ahead` places on is hashed and its slots prefetched, and half-way
    // there its records, so that many cache misses are in flight at once.
    constexpr size_t ahead = 16;
    struct Pending {
      std::string joined;
      std::array<uint64_t, 3> hash{};
    };
    std::array<Pending, ahead> ring;
    auto start = [&](size_t i) {
      Pending &p = ring[i % ahead];
      p.joined.assign(pairs[i].first);
      p.joined += pairs[i].second;
      p.hash = {PieceIndex::hash(pairs[i].first), PieceIndex::hash(pairs[i].second), PieceIndex::hash(p.joined)};
      for (uint64_t h : p.hash) vocab.prefetchSlot(h);
    };
    for (size_t i = 0; i < std::min(ahead, pairs.size()); ++i) start(i);
    std::vector<MergeIndex::Entry> entries(pairs.size());
    for (size_t i = 0; i < pairs.size(); ++i) {
      if (i + ahead / 2 < pairs.size())
        for (uint64_t h : ring[(i + ahead / 2) % ahead].hash) vocab.prefetchRecord(h);
      const Pending &p = ring[i % ahead];
      const auto &[a, b] = pairs[i];
      int32_t ia = vocab.find(a, p.hash[0]), ib = vocab.find(b, p.hash[1]), iab = vocab.find(p.joined, p.hash[2]);
      if (ia < 0 || ib < 0 || iab < 0)
        fail(mergeWhere(i), "(\"" + std::string(a) + "\", \"" + std::string(b) +
                                "\") uses or makes a token missing from model.vocab");
      entries[i] = {MergeIndex::key(ia, ib), int32_t(i), iab};
      if (i + ahead < pairs.size())
        start(i + ahead);
    }
    merges.build(entries);
    return at;
  }

  static std::string mergeWhere(size_t rank) { return "model.merges[" + std::to_string(rank) + "]"; }

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
      // Hugging Face's default: special tokens match the raw text.
      a.normalized = t.value("normalized", !a.special);
      setToken(a.id, owned.emplace_back(a.content), a.special, where);
      added.push_back(a);
    }
  }

  void addNormalizer(const json &n, const std::string &where) {
    if (!n.is_object() || !n.contains("type") || !n["type"].is_string())
      fail(where, "has no \"type\"");
    std::string type = n["type"].get<std::string>();
    if (type == "Sequence") {
      const json &list = n.contains("normalizers") ? n["normalizers"] : json();
      if (!list.is_array())
        fail(where + ".normalizers", "is not an array");
      for (size_t i = 0; i < list.size(); ++i)
        addNormalizer(list[i], where + ".normalizers[" + std::to_string(i) + "]");
      return;
    }
    NormStep step;
    if (type == "Prepend") {
      step.kind = NormStep::prepend;
      if (!n.contains("prepend") || !n["prepend"].is_string())
        fail(where, "(Prepend) needs a string \"prepend\"");
      step.text = n["prepend"].get<std::string>();
    } else if (type == "Replace") {
      step.kind = NormStep::replace;
      step.regex = replacePattern(n, where);
      if (!n.contains("content") || !n["content"].is_string())
        fail(where, "(Replace) needs a string \"content\"");
      step.text = n["content"].get<std::string>();
    } else if ((step.form = normalizationOptions(type)) == 0) {
      fail(where, "has type \"" + type + "\"; kvplan supports the normalizers NFC, NFD, NFKC, "
                  "NFKD, Prepend and Replace (alone or in a Sequence)");
    }
    normalizers.push_back(std::move(step));
  }

  /// The pattern of a Replace normalizer or decoder: {"String": s} matched
  /// literally, or {"Regex": r} in Oniguruma's syntax. An empty pattern is
  /// refused (Hugging Face would insert the content between characters).
  std::shared_ptr<Regex> replacePattern(const json &n, const std::string &where) const {
    const json &pat = n.contains("pattern") ? n["pattern"] : json();
    for (const char *form : {"String", "Regex"})
      if (pat.is_object() && pat.contains(form) && pat[form].is_string()) {
        std::string text = pat[form].get<std::string>();
        if (text.empty())
          fail(where + ".pattern." + form, "is empty");
        return std::make_shared<Regex>(text, form[0] == 'S',
                                       origin + ": " + where + ".pattern." + form);
      }
    fail(where, "(Replace) needs pattern {\"String\": ...} or {\"Regex\": ...}");
  }

  void loadNormalizer(const json &root) {
    auto it = root.find("normalizer");
    if (it != root.end() && !it->is_null())
      addNormalizer(*it, "normalizer");
  }

  /// `text` through the normalizer steps, in order.
  std::string normalize(std::string_view text) const {
    std::string out(text);
    for (const NormStep &n : normalizers) {
      if (n.kind == NormStep::unicode)
        out = normalizeUnicode(out, n.form);
      else if (n.kind == NormStep::prepend && !out.empty())
        out.insert(0, n.text);
      else if (n.kind == NormStep::replace)
        out = replaceAll(*n.regex, out, n.text);
    }
    return out;
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
      s.invert = p.value("invert", false);
      const std::string behavior = p.value("behavior", std::string("Isolated"));
      static const std::pair<const char *, PreStep::Behavior> kBehaviors[] = {
          {"Isolated", PreStep::isolated},
          {"Removed", PreStep::removed},
          {"MergedWithPrevious", PreStep::mergedWithPrevious},
          {"MergedWithNext", PreStep::mergedWithNext},
          {"Contiguous", PreStep::contiguous}};
      const auto *known = std::find_if(std::begin(kBehaviors), std::end(kBehaviors),
                                       [&](const auto &b) { return behavior == b.first; });
      if (known == std::end(kBehaviors))
        fail(where, "has behavior \"" + behavior + "\"; expected Isolated, Removed, "
                    "MergedWithPrevious, MergedWithNext or Contiguous");
      s.behavior = known->second;
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
    } else if (type == "Metaspace") {
      s = metaspaceStep(p, where);
    } else {
      fail(where, "has type \"" + type + "\"; kvplan supports Sequence, Split, Digits, Metaspace "
                  "and ByteLevel pre-tokenizers");
    }
    steps.push_back(std::move(s));
  }

  /// A Metaspace pre-tokenizer, read as Hugging Face reads it: the older
  /// add_prefix_space (true: prepend always) beside prepend_scheme (default
  /// "always"), and split (default true).
  PreStep metaspaceStep(const json &p, const std::string &where) const {
    PreStep s;
    s.kind = PreStep::metaspace;
    s.replacement = metaspaceReplacement(p, where);
    std::string scheme = p.value("prepend_scheme", std::string("always"));
    if (scheme == "first" || scheme == "never" || scheme == "always")
      s.prepend = scheme == "first"   ? PrependScheme::first
                  : scheme == "never" ? PrependScheme::never
                                      : PrependScheme::always;
    else
      fail(where + ".prepend_scheme", "is \"" + scheme + "\"; expected first, never or always");
    if (p.contains("add_prefix_space") && p["add_prefix_space"] == false) {
      if (s.prepend != PrependScheme::never)
        fail(where, "sets add_prefix_space false with prepend_scheme \"" + scheme +
                        "\"; they disagree (write prepend_scheme \"never\")");
    }
    s.splitWords = p.value("split", true);
    return s;
  }

  /// Metaspace's replacement, one character ("\u2581" as sentencepiece writes a space).
  std::string metaspaceReplacement(const json &p, const std::string &where) const {
    std::string r = p.contains("replacement") && p["replacement"].is_string()
                        ? p["replacement"].get<std::string>()
                        : std::string();
    size_t i = 0;
    if (!r.empty()) nextCodePoint(r, i);
    if (r.empty() || i != r.size())
      fail(where + ".replacement", "is not one character");
    return r;
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
    // Without a ByteLevel step the vocabulary's pieces are text as it is
    // (sentencepiece-style: "\u2581" for a space, <0xAB> byte tokens).
    byteLevel = !steps.empty() && steps.back().kind == PreStep::byteLevel;
  }

  int32_t specialId(const json &tp, const std::string &name, const std::string &where) const {
    // Looked up with find(): a const json's operator[] on a missing key is
    // undefined (an assertion in nlohmann's debug builds).
    const json *entry = nullptr;
    if (auto tokens = tp.find("special_tokens"); tokens != tp.end() && tokens->is_object())
      if (auto e = tokens->find(name); e != tokens->end() && e->is_object()) entry = &*e;
    if (entry) {
      auto ids = entry->find("ids");
      if (ids != entry->end() && ids->is_array() && !ids->empty() && (*ids)[0].is_number_integer())
        return (*ids)[0].get<int32_t>();
    }
    for (const AddedToken &t : added)
      if (t.content == name)
        return t.id;
    if (int32_t v = vocab.find(name); v >= 0)
      return v;
    fail(where, "names special token \"" + name + "\", which the tokenizer does not define");
  }

  /// The decoder of a tokenizer without a ByteLevel pre-tokenizer (a
  /// byte-level one's ids unmap through GPT-2's byte map, whatever it names).
  void loadDecoder(const json &root) {
    if (byteLevel)
      return;
    auto it = root.find("decoder");
    if (it == root.end() || it->is_null())
      fail("decoder", "is missing: a tokenizer without a ByteLevel pre-tokenizer needs one "
                      "(sentencepiece-style: Metaspace, or Replace, ByteFallback, Fuse and Strip)");
    addDecodeStep(*it, "decoder");
  }

  void addDecodeStep(const json &d, const std::string &where) {
    if (!d.is_object() || !d.contains("type") || !d["type"].is_string())
      fail(where, "has no \"type\"");
    std::string type = d["type"].get<std::string>();
    DecodeStep step;
    if (type == "Sequence") {
      const json &list = d.contains("decoders") ? d["decoders"] : json();
      if (!list.is_array())
        fail(where + ".decoders", "is not an array");
      for (size_t i = 0; i < list.size(); ++i)
        addDecodeStep(list[i], where + ".decoders[" + std::to_string(i) + "]");
      return;
    } else if (type == "Replace") {
      step.regex = replacePattern(d, where);
      if (!d.contains("content") || !d["content"].is_string())
        fail(where, "(Replace) needs a string \"content\"");
      step.content = d["content"].get<std::string>();
    } else if (type == "ByteFallback" || type == "Fuse") {
      step.kind = type == "Fuse" ? DecodeStep::fuse : DecodeStep::byteFallback;
      decodesBytes = decodesBytes || step.kind == DecodeStep::byteFallback;
    } else if (type == "Strip") {
      step.kind = DecodeStep::strip;
      std::string c =
          d.contains("content") && d["content"].is_string() ? d["content"].get<std::string>() : "";
      size_t i = 0;
      if (!c.empty()) step.stripChar = nextCodePoint(c, i);
      if (c.empty() || i != c.size())
        fail(where + ".content", "is not one character");
      for (const char *key : {"start", "stop"})
        if (!d.contains(key) || !d[key].is_number_unsigned())
          fail(where, std::string("(Strip) needs a count \"") + key + "\"");
      step.start = d["start"].get<size_t>();
      step.stop = d["stop"].get<size_t>();
    } else if (type == "Metaspace") {
      PreStep m = metaspaceStep(d, where);
      size_t i = 0;
      step.kind = DecodeStep::metaspace;
      step.replacement = nextCodePoint(m.replacement, i);
      step.dropFirst = m.prepend != PrependScheme::never;
    } else {
      fail(where, "has type \"" + type + "\"; without a ByteLevel pre-tokenizer kvplan supports "
                  "the decoders Sequence, Replace, ByteFallback, Fuse, Strip and Metaspace");
    }
    decoders.push_back(std::move(step));
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

  /// The leftmost added token of this pass (those matched in the normalized
  /// text, or in the raw text) at or after `pos`, the longest one where
  /// several start there, with [begin, end) widened over the whitespace that
  /// lstrip/rstrip absorb.
  const AddedToken *findAdded(std::string_view text, bool normalizedPass, size_t pos, size_t &begin,
                              size_t &end) const {
    for (size_t i = pos; i < text.size(); ++i) {
      const AddedToken *best = nullptr;
      for (size_t k : addedByFirstByte[static_cast<unsigned char>(text[i])]) {
        const AddedToken &t = added[k];
        const std::string &m = t.matchText;
        if (t.normalized != normalizedPass || text.compare(i, m.size(), m) != 0)
          continue;
        if (t.singleWord && ((i > 0 && isWordByte(text[i - 1])) ||
                             (i + m.size() < text.size() && isWordByte(text[i + m.size()]))))
          continue;
        if (!best || m.size() > best->matchText.size())
          best = &t;
      }
      if (!best)
        continue;
      begin = i;
      end = i + best->matchText.size();
      if (best->lstrip)
        while (begin > pos && isAsciiSpace(text[begin - 1])) --begin;
      if (best->rstrip)
        while (end < text.size() && isAsciiSpace(text[end])) ++end;
      return best;
    }
    return nullptr;
  }

  /// Appends the ids of the added tokens of this pass found in `text` and
  /// hands the text between them, and where it starts, to `between`.
  template <typename BetweenFn>
  void splitAdded(std::string_view text, bool normalizedPass, std::vector<int32_t> &out,
                  BetweenFn between) const {
    size_t pos = 0;
    while (pos < text.size()) {
      size_t begin = 0, end = 0;
      const AddedToken *t = findAdded(text, normalizedPass, pos, begin, end);
      if (!t) {
        between(text.substr(pos), pos);
        return;
      }
      if (begin > pos)
        between(text.substr(pos, begin - pos), pos);
      out.push_back(t->id);
      pos = end;
    }
  }

  /// A piece of a segment being pre-tokenized, and whether it starts where
  /// the text does (Metaspace's "first" scheme prepends there only).
  struct Piece {
    std::string text;
    bool atStart = false;
  };

  /// Pre-tokenizes text between added tokens and runs BPE on each piece.
  void encodeSegment(std::string_view segment, bool atStart, std::vector<int32_t> &out) const {
    if (segment.empty())
      return;
    std::vector<Piece> pieces{{std::string(segment), atStart}};
    for (const PreStep &s : steps) {
      std::vector<Piece> next;
      for (Piece &p : pieces) {
        if (s.kind == PreStep::metaspace) {
          metaspace(s, std::move(p), next);
          continue;
        }
        if (s.kind == PreStep::byteLevel && s.addPrefixSpace && p.text[0] != ' ')
          p.text.insert(p.text.begin(), ' ');
        if (!s.regex) {
          next.push_back(std::move(p));
          continue;
        }
        splitPiece(s, p, next);
      }
      pieces = std::move(next);
    }
    const ByteMap &m = byteMap();
    for (const Piece &p : pieces) {
      if (!byteLevel) {
        encodeWord(p.text, out);
        continue;
      }
      std::string mapped;
      for (unsigned char c : p.text) mapped += m.toChar[c];
      encodeWord(mapped, out);
    }
  }

  /// A Split step on one piece: the matches (with invert, the text between
  /// them) are the delimiters, placed as the step's behaviour says:
  /// pieces of their own (Isolated), dropped (Removed), joined to the piece
  /// before (MergedWithPrevious) or after (MergedWithNext) where that is not
  /// a delimiter too, or runs of them joined (Contiguous).
  static void splitPiece(const PreStep &s, const Piece &p, std::vector<Piece> &next) {
    struct Span {
      size_t b, e;
      bool delim;
    };
    std::vector<Span> spans;
    size_t at = 0;
    for (auto [b, e] : s.regex->findAll(p.text)) {
      if (b > at) spans.push_back({at, b, s.invert});
      if (e > b) spans.push_back({b, e, !s.invert});
      at = e;
    }
    if (at < p.text.size()) spans.push_back({at, p.text.size(), s.invert});
    auto emit = [&](size_t b, size_t e) {
      next.push_back({p.text.substr(b, e - b), p.atStart && b == 0});
    };
    std::optional<Span> held; // a span waiting for the one after it
    auto flush = [&] {
      if (held) emit(held->b, held->e);
      held.reset();
    };
    for (const Span &sp : spans) {
      switch (s.behavior) {
      case PreStep::isolated: emit(sp.b, sp.e); break;
      case PreStep::removed:
        if (!sp.delim) emit(sp.b, sp.e);
        break;
      case PreStep::mergedWithPrevious: // a delimiter ends the text piece before it
        if (held && sp.delim) {
          emit(held->b, sp.e);
          held.reset();
          break;
        }
        flush();
        if (sp.delim) emit(sp.b, sp.e);
        else held = sp;
        break;
      case PreStep::mergedWithNext: // a delimiter starts the text piece after it
        if (held && !sp.delim) {
          emit(held->b, sp.e);
          held.reset();
        } else {
          flush();
          if (sp.delim) held = sp;
          else emit(sp.b, sp.e);
        }
        break;
      case PreStep::contiguous: // adjacent delimiters are one piece
        if (held && sp.delim) {
          held->e = sp.e;
          break;
        }
        flush();
        if (sp.delim) held = sp;
        else emit(sp.b, sp.e);
        break;
      }
    }
    flush();
  }

  /// Hugging Face's Metaspace pre-tokenizer on one piece: spaces become the
  /// replacement, which is put in front where the scheme says and the piece
  /// has none, and (split) each replacement starts a new piece.
  static void metaspace(const PreStep &s, Piece p, std::vector<Piece> &next) {
    std::string text;
    for (char c : p.text) c == ' ' ? text += s.replacement : text += c;
    bool prepend = s.prepend == PrependScheme::always ||
                   (s.prepend == PrependScheme::first && p.atStart);
    if (prepend && text.compare(0, s.replacement.size(), s.replacement) != 0)
      text.insert(0, s.replacement);
    size_t begin = 0;
    for (size_t at = s.splitWords ? text.find(s.replacement, 1) : std::string::npos;
         at != std::string::npos; at = text.find(s.replacement, at + 1)) {
      next.push_back({text.substr(begin, at - begin), p.atStart && begin == 0});
      begin = at;
    }
    if (begin < text.size())
      next.push_back({text.substr(begin), p.atStart && begin == 0});
  }

  /// The symbols BPE starts `word` from, as Hugging Face's BPE makes them:
  /// each character the vocabulary has; else (byte_fallback) its UTF-8
  /// bytes as <0xAB> tokens when the vocabulary has them all; else the unk
  /// token, one for a run of such characters where fuse_unk says so (a
  /// pending unk is written when the next known character is, or at the
  /// end), or nothing where there is no unk token.
  std::vector<MergeSymbol> initialSymbols(const std::string &word) const {
    std::vector<MergeSymbol> symbols;
    std::optional<MergeSymbol> pendingUnk;
    for (size_t i = 0; i < word.size();) {
      size_t start = i;
      nextCodePoint(word, i);
      std::string c = word.substr(start, i - start);
      if (int32_t id = vocab.find(c); id >= 0) {
        if (pendingUnk) symbols.push_back(std::move(*pendingUnk)), pendingUnk.reset();
        symbols.push_back({std::move(c), id});
        continue;
      }
      if (byteFallback && std::all_of(c.begin(), c.end(), [&](char b) {
            return byteTokens[static_cast<unsigned char>(b)] >= 0;
          })) {
        for (char b : c)
          symbols.push_back({std::string(1, b), byteTokens[static_cast<unsigned char>(b)]});
        continue;
      }
      if (unk < 0)
        continue;
      if (pendingUnk && fuseUnk) {
        pendingUnk->text += c;
        continue;
      }
      if (pendingUnk) symbols.push_back(std::move(*pendingUnk));
      pendingUnk = MergeSymbol{std::move(c), unk};
    }
    if (pendingUnk) symbols.push_back(std::move(*pendingUnk));
    return symbols;
  }

  void encodeWord(const std::string &word, std::vector<int32_t> &out) const {
    if (ignoreMerges) {
      int32_t id = vocab.find(word);
      if (id >= 0) {
        out.push_back(id);
        return;
      }
    }
    auto candidate = [&](const MergeSymbol &l, const MergeSymbol &r) -> std::optional<MergeCandidate> {
      const MergeIndex::Entry *m = merges.find(MergeIndex::key(l.id, r.id));
      if (!m)
        return std::nullopt;
      return MergeCandidate{-double(m->rank), m->merged};
    };
    for (const MergeSymbol &s : mergeSymbols(initialSymbols(word), candidate)) out.push_back(s.id);
  }

  std::string jsonText;
  std::string origin;
  std::deque<std::string> owned; // added tokens' text, which idToToken views
  PieceIndex vocab;               // model.vocab only, not the added tokens
  MergeIndex merges;
  std::vector<std::string_view> idToToken;
  std::vector<bool> isSpecial;
  std::vector<AddedToken> added;
  std::array<std::vector<size_t>, 256> addedByFirstByte;
  std::vector<PreStep> steps;
  std::vector<DecodeStep> decoders; // without a ByteLevel pre-tokenizer
  bool decodesBytes = false;        // decoders has a ByteFallback step
  bool byteLevel = true;
  bool byteFallback = false, fuseUnk = false;
  std::array<int32_t, 256> byteTokens{}; // <0xAB> -> id, -1 where absent
  std::vector<NormStep> normalizers;
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
