// Score-merge tokenizers over a piece list with scores: llama2.c's
// tokenizer.bin and the sentencepiece ("llama") vocabulary embedded in GGUF.
// Both run the same algorithm; they differ only in how a space is written in
// the pieces (a literal space in llama2.c, U+2581 in sentencepiece) and in
// which leading space decoding drops.
#include "formats/TokenizerInternal.h"

#include "spec/ModelSpec.h"
#include "formats/Gguf.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <unordered_map>

namespace kvplan {
namespace tokenizer_detail {

namespace {

// Token types as GGUF (and sentencepiece's ModelProto) number them.
enum class PieceType : uint8_t {
  normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6,
};

constexpr const char *kSpmSpace = "\xE2\x96\x81"; // U+2581, sentencepiece's space
constexpr const char *kSerializedMagic = "kvplan-spm-vocab 1\n";

void replaceAll(std::string &s, std::string_view from, std::string_view to) {
  if (from == to)
    return;
  std::string out;
  size_t pos = 0;
  for (size_t hit; (hit = s.find(from, pos)) != std::string::npos; pos = hit + from.size()) {
    out.append(s, pos, hit - pos);
    out.append(to);
  }
  out.append(s, pos, std::string::npos);
  s = std::move(out);
}

/// What decoding drops at the start of the text, the one difference between
/// the two reference decoders.
enum class LeadingSpace {
  // llama2.c: a piece right after BOS loses its leading space.
  afterBos,
  // sentencepiece: the first piece that produces text loses its leading
  // space (the dummy prefix), whether or not BOS precedes it.
  atStart,
};

struct Vocabulary {
  std::vector<std::string> pieces;
  std::vector<float> scores;
  std::vector<PieceType> types;
  std::string space;          // how the pieces write a space
  bool addSpacePrefix = true; // encode prefixes the text with a space
  LeadingSpace leadingSpace = LeadingSpace::atStart;
  bool unknownHasText = false; // llama2.c prints "<unk>"; llama.cpp prints nothing
  int32_t bos = -1, unk = -1;
  std::vector<int32_t> eos;
};

class SpmVocabTokenizer : public Tokenizer {
public:
  SpmVocabTokenizer(Vocabulary v, std::string kind, std::string serialized)
      : v(std::move(v)), kind_(std::move(kind)), serialized(std::move(serialized)) {
    byteIds.fill(-1);
    const Vocabulary &vv = this->v;
    surfaces.resize(vv.pieces.size());
    for (size_t id = 0; id < vv.pieces.size(); ++id) {
      const std::string &p = vv.pieces[id];
      switch (vv.types[id]) {
      case PieceType::byte: {
        int b = bytePieceValue(p);
        if (b >= 0) {
          if (byteIds[b] < 0)
            byteIds[b] = int32_t(id);
          surfaces[id] = std::string(1, char(b));
        }
        break;
      }
      case PieceType::control:
      case PieceType::unused:
        break;
      case PieceType::unknown:
        if (vv.unknownHasText)
          surfaces[id] = p;
        break;
      case PieceType::normal:
      case PieceType::userDefined:
        // The first id wins for a duplicated piece, as a lookup table that
        // kept the first would.
        lookup.emplace(p, int32_t(id));
        surfaces[id] = p;
        replaceAll(surfaces[id], vv.space, " ");
        break;
      }
    }
  }

  std::vector<int32_t> encode(std::string_view text, bool addBos) const override {
    std::vector<int32_t> out;
    if (addBos && v.bos >= 0)
      out.push_back(v.bos);
    if (text.empty())
      return out;
    std::string norm = v.addSpacePrefix ? v.space : std::string();
    for (char c : text) {
      if (c == ' ')
        norm += v.space;
      else
        norm += c;
    }
    std::vector<MergeSymbol> symbols;
    for (std::string_view ch : splitUtf8Chars(norm)) {
      MergeSymbol s;
      s.text = std::string(ch);
      auto it = lookup.find(s.text);
      s.id = it == lookup.end() ? -1 : it->second;
      symbols.push_back(std::move(s));
    }
    // A pair may merge when its concatenation is a piece, best score first;
    // a symbol need not be a piece itself (an unknown character that only
    // exists inside a longer piece still merges, as in sentencepiece).
    std::string joined;
    auto candidate = [&](const MergeSymbol &l, const MergeSymbol &r) -> std::optional<MergeCandidate> {
      joined.assign(l.text).append(r.text);
      auto it = lookup.find(joined);
      if (it == lookup.end())
        return std::nullopt;
      return MergeCandidate{double(v.scores[it->second]), it->second};
    };
    for (const MergeSymbol &s : mergeSymbols(std::move(symbols), candidate)) {
      if (s.id >= 0) {
        out.push_back(s.id);
        continue;
      }
      // Byte fallback: a character no piece covers becomes its bytes.
      for (unsigned char b : s.text) {
        if (byteIds[b] >= 0)
          out.push_back(byteIds[b]);
        else if (v.unk >= 0)
          out.push_back(v.unk);
      }
    }
    return out;
  }

  std::string decode(const std::vector<int32_t> &ids) const override {
    std::string out;
    bool expectPrefix = v.addSpacePrefix; // atStart: the dummy prefix is still to come
    for (size_t i = 0; i < ids.size(); ++i) {
      int32_t id = ids[i];
      if (id < 0 || size_t(id) >= surfaces.size())
        continue;
      const std::string &s = surfaces[id];
      PieceType t = v.types[id];
      bool textPiece = t == PieceType::normal || t == PieceType::userDefined;
      bool strip = false;
      if (v.leadingSpace == LeadingSpace::afterBos) {
        strip = i > 0 && ids[i - 1] == v.bos && t != PieceType::byte;
      } else if (textPiece || t == PieceType::byte) {
        strip = expectPrefix && textPiece;
        expectPrefix = false;
      }
      if (strip && !s.empty() && s[0] == ' ')
        out.append(s, 1, std::string::npos);
      else
        out += s;
    }
    return out;
  }

  std::string tokenBytes(int32_t id) const override {
    return id >= 0 && size_t(id) < surfaces.size() ? surfaces[size_t(id)] : "";
  }

  int32_t vocabSize() const override { return int32_t(v.pieces.size()); }
  int32_t bosId() const override { return v.bos; }
  std::vector<int32_t> eosIds() const override { return v.eos; }
  int32_t specialTokenId(std::string_view piece) const override {
    for (size_t id = 0; id < v.pieces.size(); ++id)
      if ((v.types[id] == PieceType::control || v.types[id] == PieceType::userDefined) &&
          v.pieces[id] == piece)
        return int32_t(id);
    return -1;
  }
  std::vector<std::pair<std::string, int32_t>> specialTokens() const override {
    std::vector<std::pair<std::string, int32_t>> out;
    for (size_t id = 0; id < v.pieces.size(); ++id)
      if (v.types[id] == PieceType::control || v.types[id] == PieceType::userDefined)
        out.emplace_back(v.pieces[id], int32_t(id));
    return out;
  }
  std::string kind() const override { return kind_; }
  std::string serialize() const override { return serialized; }

private:
  Vocabulary v;
  std::string kind_;
  std::string serialized;
  std::unordered_map<std::string, int32_t> lookup; // pieces text may produce
  std::array<int32_t, 256> byteIds;
  std::vector<std::string> surfaces; // what each id decodes to
};

/// Bounds-checked little-endian reads for the binary formats here.
class ByteReader {
public:
  ByteReader(std::string_view bytes, const std::string &origin, const char *format)
      : bytes(bytes), origin(origin), format(format) {}

  [[noreturn]] void fail(const std::string &what) const {
    throw InputError(origin + ": " + format + ": " + what);
  }
  bool atEnd() const { return pos == bytes.size(); }
  size_t position() const { return pos; }
  size_t size() const { return bytes.size(); }

  template <typename T> T get(const std::string &what) {
    if (bytes.size() - pos < sizeof(T))
      fail("the data ends inside " + what + " (at byte " + std::to_string(pos) + " of " +
           std::to_string(bytes.size()) + ")");
    T x;
    std::memcpy(&x, bytes.data() + pos, sizeof(T));
    pos += sizeof(T);
    return x;
  }
  std::string take(size_t n, const std::string &what) {
    if (bytes.size() - pos < n)
      fail("the data ends inside " + what + " (" + std::to_string(n) + " bytes needed at byte " +
           std::to_string(pos) + ", the data has " + std::to_string(bytes.size()) + ")");
    std::string s(bytes.substr(pos, n));
    pos += n;
    return s;
  }

private:
  std::string_view bytes;
  const std::string &origin;
  const char *format;
  size_t pos = 0;
};

void checkIds(const Vocabulary &v, const std::string &origin) {
  auto inRange = [&](int32_t id) { return id >= -1 && id < int32_t(v.pieces.size()); };
  if (!inRange(v.bos) || !inRange(v.unk))
    throw InputError(origin + ": BOS or unknown-token id is outside the vocabulary of " +
                     std::to_string(v.pieces.size()));
  for (int32_t e : v.eos)
    if (e < 0 || !inRange(e))
      throw InputError(origin + ": EOS id " + std::to_string(e) + " is outside the vocabulary of " +
                       std::to_string(v.pieces.size()));
}

} // namespace

std::unique_ptr<Tokenizer> makeLlama2c(std::string fileBytes, const std::string &origin) {
  ByteReader r(fileBytes, origin, "not a valid llama2.c tokenizer.bin");
  int32_t maxLen = r.get<int32_t>("the header (max_token_length)");
  // llama2.c sizes its merge buffer from max_token_length, so a piece longer
  // than it is a corrupt file (and a good sign that this is not one at all).
  if (maxLen <= 0 || maxLen > (1 << 16))
    r.fail("max_token_length is " + std::to_string(maxLen));
  Vocabulary v;
  v.space = " ";
  v.leadingSpace = LeadingSpace::afterBos;
  v.unknownHasText = true;
  v.addSpacePrefix = true;
  while (!r.atEnd()) {
    std::string entry = "entry " + std::to_string(v.pieces.size());
    float score = r.get<float>(entry + " (its score)");
    int32_t len = r.get<int32_t>(entry + " (its length)");
    if (len < 0 || len > maxLen)
      r.fail(entry + " has length " + std::to_string(len) + " (max_token_length is " +
             std::to_string(maxLen) + ")");
    if (!std::isfinite(score))
      r.fail(entry + " has a score that is not a finite number");
    v.pieces.push_back(r.take(size_t(len), entry + " (its bytes)"));
    v.scores.push_back(score);
  }
  if (v.pieces.size() < 3)
    r.fail("it holds " + std::to_string(v.pieces.size()) +
           " pieces; llama2.c needs at least <unk>, BOS and EOS (ids 0, 1, 2)");
  // llama2.c's fixed layout: 0 <unk>, 1 BOS, 2 EOS, then the byte pieces.
  for (size_t id = 0; id < v.pieces.size(); ++id) {
    PieceType t = PieceType::normal;
    if (id == 0)
      t = PieceType::unknown;
    else if (id == 1 || id == 2)
      t = PieceType::control;
    else if (bytePieceValue(v.pieces[id]) >= 0)
      t = PieceType::byte;
    v.types.push_back(t);
  }
  v.unk = 0;
  v.bos = 1;
  v.eos = {2};
  return std::make_unique<SpmVocabTokenizer>(std::move(v), "llama2c", std::move(fileBytes));
}

namespace {

/// The serialized form of a GGUF vocabulary: everything the tokenizer uses,
/// so the artifact need not keep the GGUF file.
std::string serializeVocabulary(const Vocabulary &v) {
  std::string out = kSerializedMagic;
  auto put = [&](auto x) { out.append(reinterpret_cast<const char *>(&x), sizeof(x)); };
  put(uint32_t(v.pieces.size()));
  put(v.bos);
  put(v.unk);
  put(uint8_t(v.addSpacePrefix));
  put(uint32_t(v.eos.size()));
  for (int32_t e : v.eos) put(e);
  for (size_t i = 0; i < v.pieces.size(); ++i) {
    put(uint8_t(v.types[i]));
    put(v.scores[i]);
    put(uint32_t(v.pieces[i].size()));
    out += v.pieces[i];
  }
  return out;
}

Vocabulary ggufStyle() {
  Vocabulary v;
  v.space = kSpmSpace;
  v.leadingSpace = LeadingSpace::atStart;
  v.unknownHasText = false;
  return v;
}

bool knownType(double t) { return t >= 1 && t <= 6; } // false for NaN

} // namespace

std::unique_ptr<Tokenizer> makeGgufVocab(const GgufFile &g) {
  const std::string &path = g.path();
  std::optional<std::string> model = g.string("tokenizer.ggml.model");
  if (!model)
    throw InputError(path + ": the GGUF file embeds no tokenizer (tokenizer.ggml.model is missing)");
  if (*model == "gpt2")
    return makeGgufBpe(g);
  if (*model != "llama")
    throw InputError(path + ": tokenizer.ggml.model is \"" + *model +
                     "\"; kvplan reads \"llama\" (sentencepiece) and \"gpt2\" (byte-level BPE) "
                     "vocabularies from GGUF; give the model's tokenizer file with --tokenizer");
  const GgufFile::Value *tokens = g.find("tokenizer.ggml.tokens");
  if (!tokens || tokens->type != GgufFile::Type::array ||
      tokens->itemType != GgufFile::Type::string || tokens->strings.empty())
    throw InputError(path + ": tokenizer.ggml.tokens is missing or not a non-empty string array");
  const size_t n = tokens->strings.size();
  if (n > size_t(INT32_MAX))
    throw InputError(path + ": tokenizer.ggml.tokens has too many entries");
  auto numbers = [&](const char *key) -> const std::vector<double> * {
    const GgufFile::Value *x = g.find(key);
    if (!x)
      return nullptr;
    if (x->type != GgufFile::Type::array || x->itemType == GgufFile::Type::string ||
        x->numbers.size() != n)
      throw InputError(path + ": " + key + " must be a numeric array with one entry per token (" +
                       std::to_string(n) + ")");
    return &x->numbers;
  };
  const std::vector<double> *scores = numbers("tokenizer.ggml.scores");
  const std::vector<double> *types = numbers("tokenizer.ggml.token_type");

  Vocabulary v = ggufStyle();
  v.pieces = tokens->strings;
  for (size_t i = 0; i < n; ++i) {
    v.scores.push_back(scores ? float((*scores)[i]) : 0.0f);
    if (types) {
      double t = (*types)[i];
      if (!knownType(t) || t != std::floor(t))
        throw InputError(path + ": tokenizer.ggml.token_type[" + std::to_string(i) + "] is " +
                         std::to_string(t) + "; expected 1 to 6");
      v.types.push_back(PieceType(uint32_t(t)));
    } else {
      v.types.push_back(bytePieceValue(v.pieces[i]) >= 0 ? PieceType::byte : PieceType::normal);
    }
  }
  // llama.cpp's defaults for a sentencepiece vocabulary.
  auto id = [&](const char *key, int64_t def) -> int32_t {
    int64_t x = g.integer(key).value_or(def);
    // An unsigned -1 (0xFFFFFFFF) is how GGUF writers spell "none".
    if (x < 0 || x == int64_t(UINT32_MAX))
      return -1;
    if (x >= int64_t(n))
      throw InputError(path + ": " + key + " is " + std::to_string(x) +
                       ", outside the vocabulary of " + std::to_string(n));
    return int32_t(x);
  };
  v.bos = id("tokenizer.ggml.bos_token_id", 1);
  v.unk = id("tokenizer.ggml.unknown_token_id", 0);
  int32_t eos = id("tokenizer.ggml.eos_token_id", 2);
  if (eos >= 0)
    v.eos.push_back(eos);
  int32_t eot = id("tokenizer.ggml.eot_token_id", -1);
  if (eot >= 0 && eot != eos)
    v.eos.push_back(eot);
  // Phi-3's files name no end-of-turn id: its turns end at <|end|>, which
  // llama.cpp ends generation at by its text (converted files have it as a
  // user-defined token, or control where the checkpoint marks it special).
  for (size_t i = 0; i < n; ++i)
    if ((v.types[i] == PieceType::control || v.types[i] == PieceType::userDefined) &&
        v.pieces[i] == "<|end|>" &&
        std::find(v.eos.begin(), v.eos.end(), int32_t(i)) == v.eos.end())
      v.eos.push_back(int32_t(i));
  if (const GgufFile::Value *p = g.find("tokenizer.ggml.add_space_prefix"))
    v.addSpacePrefix = p->number != 0;
  std::string bytes = serializeVocabulary(v);
  return std::make_unique<SpmVocabTokenizer>(std::move(v), "gguf-spm", std::move(bytes));
}

std::unique_ptr<Tokenizer> makeSerializedSpmVocab(std::string_view bytes, const std::string &origin) {
  ByteReader r(bytes, origin, "corrupt serialized GGUF vocabulary");
  if (r.take(std::strlen(kSerializedMagic), "the magic") != kSerializedMagic)
    r.fail("it does not start with \"" + std::string(kSerializedMagic, 16) + "\"");
  Vocabulary v = ggufStyle();
  uint32_t n = r.get<uint32_t>("the piece count");
  v.bos = r.get<int32_t>("the BOS id");
  v.unk = r.get<int32_t>("the unknown-token id");
  v.addSpacePrefix = r.get<uint8_t>("the space-prefix flag") != 0;
  uint32_t nEos = r.get<uint32_t>("the EOS count");
  if (nEos > n)
    r.fail("it lists " + std::to_string(nEos) + " EOS ids for " + std::to_string(n) + " pieces");
  for (uint32_t i = 0; i < nEos; ++i) v.eos.push_back(r.get<int32_t>("an EOS id"));
  if (n == 0 || n > r.size())
    r.fail("implausible piece count " + std::to_string(n));
  for (uint32_t i = 0; i < n; ++i) {
    std::string what = "piece " + std::to_string(i);
    uint8_t t = r.get<uint8_t>(what);
    if (!knownType(t))
      r.fail(what + " has type " + std::to_string(t));
    v.types.push_back(PieceType(t));
    v.scores.push_back(r.get<float>(what));
    uint32_t len = r.get<uint32_t>(what);
    v.pieces.push_back(r.take(len, what));
  }
  if (!r.atEnd())
    r.fail("there are " + std::to_string(r.size() - r.position()) + " bytes after the last piece");
  checkIds(v, origin);
  return std::make_unique<SpmVocabTokenizer>(std::move(v), "gguf-spm", std::string(bytes));
}

} // namespace tokenizer_detail
} // namespace kvplan
