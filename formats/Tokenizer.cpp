// Tokenizer entry points: choosing a format from a file, recreating one from
// an artifact, the sentencepiece and byte tokenizers, UTF-8 helpers, and the
// streaming decoder.
#include "formats/Tokenizer.h"

#include "spec/ModelSpec.h"
#include "formats/Gguf.h"
#include "support/MappedFile.h"
#include "formats/TokenizerInternal.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <cctype>
#include <charconv>

namespace kvplan {

/// U+FFFD in UTF-8: what a lossy decoder writes for bytes that are no
/// character (yet).
constexpr std::string_view kReplacement = "\xEF\xBF\xBD";

namespace tokenizer_detail {

size_t utf8SequenceLength(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead & 0xE0) == 0xC0) return 2;
  if ((lead & 0xF0) == 0xE0) return 3;
  if ((lead & 0xF8) == 0xF0) return 4;
  return 1;
}

std::vector<std::string_view> splitUtf8Chars(std::string_view text) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < text.size()) {
    size_t j = i + 1;
    while (j < text.size() && j - i < 4 && (static_cast<unsigned char>(text[j]) & 0xC0) == 0x80)
      ++j;
    out.push_back(text.substr(i, j - i));
    i = j;
  }
  return out;
}

int bytePieceValue(std::string_view piece) {
  if (piece.size() != 6 || piece.compare(0, 3, "<0x") != 0 || piece[5] != '>')
    return -1;
  int v = 0;
  for (char c : piece.substr(3, 2)) {
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10
            : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (d < 0)
      return -1;
    v = v * 16 + d;
  }
  return v;
}

std::string utf8Lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  auto at = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  while (i < s.size()) {
    unsigned char b = at(i);
    if (b < 0x80) {
      out += char(b);
      ++i;
      continue;
    }
    // Expected length and the range the second byte must fall in (which
    // excludes overlong forms, surrogates and code points above U+10FFFF).
    size_t len = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) len = 2;
    else if (b == 0xE0) len = 3, lo = 0xA0;
    else if (b == 0xED) len = 3, hi = 0x9F;
    else if (b >= 0xE1 && b <= 0xEF) len = 3;
    else if (b == 0xF0) len = 4, lo = 0x90;
    else if (b == 0xF4) len = 4, hi = 0x8F;
    else if (b >= 0xF1 && b <= 0xF3) len = 4;
    if (len == 0) {
      out += kReplacement;
      ++i;
      continue;
    }
    size_t k = 1;
    while (k < len && i + k < s.size()) {
      unsigned char c = at(i + k);
      bool ok = k == 1 ? (c >= lo && c <= hi) : (c & 0xC0) == 0x80;
      if (!ok) break;
      ++k;
    }
    if (k == len)
      out.append(s.substr(i, len));
    else
      out += kReplacement; // one replacement for the maximal valid prefix
    i += k;
  }
  return out;
}

} // namespace tokenizer_detail

using namespace tokenizer_detail;

namespace {

/// What `id` adds to the text of `context` (one token, "a"), as decode()
/// writes it; decode({id}) where there is no such context.
std::string bytesAfter(const Tokenizer &tok, std::vector<int32_t> context, int32_t id) {
  if (context.size() != 1) return tok.decode({id});
  const std::string before = tok.decode(context);
  context.push_back(id);
  const std::string text = tok.decode(context);
  return text.compare(0, before.size(), before) == 0 ? text.substr(before.size())
                                                     : tok.decode({id});
}

} // namespace

std::string Tokenizer::tokenBytes(int32_t id) const {
  return bytesAfter(*this, encode("a", false), id);
}

namespace {

/// A sentencepiece .model run by the sentencepiece library itself, so that
/// its normalizer and options are exactly the reference.
class SentencePieceTokenizer : public Tokenizer {
public:
  SentencePieceTokenizer(std::string bytes, const std::string &origin) : bytes(std::move(bytes)) {
    sentencepiece::util::Status status;
    try {
      status = sp.LoadFromSerializedProto(this->bytes);
    } catch (const std::exception &e) {
      // The library throws for some malformed models (its trie builder on
      // an empty or NUL-led piece) instead of returning a status.
      throw InputError(origin + ": not a valid sentencepiece model: " + e.what());
    }
    if (!status.ok())
      throw InputError(origin + ": not a valid sentencepiece model: " + status.ToString());
    anchor = encode("a", false);
  }

  std::vector<int32_t> encode(std::string_view text, bool addBos) const override {
    std::vector<int> ids;
    auto status = sp.Encode(text, &ids);
    if (!status.ok())
      throw InputError("sentencepiece cannot encode the text: " + status.ToString());
    std::vector<int32_t> out;
    if (addBos && sp.bos_id() >= 0)
      out.push_back(sp.bos_id());
    out.insert(out.end(), ids.begin(), ids.end());
    return out;
  }

  std::string decode(const std::vector<int32_t> &ids) const override {
    // Ids outside the vocabulary (a model's padded embedding rows) decode to
    // nothing rather than failing the whole text.
    std::vector<int> known;
    int n = sp.GetPieceSize();
    for (int32_t id : ids)
      if (id >= 0 && id < n)
        known.push_back(id);
    std::string out;
    auto status = sp.Decode(known, &out);
    if (!status.ok())
      throw InputError("sentencepiece cannot decode the ids: " + status.ToString());
    return out;
  }

  std::string tokenBytes(int32_t id) const override {
    if (id < 0 || id >= sp.GetPieceSize() || sp.IsControl(id) || sp.IsUnused(id)) return "";
    // A byte piece, <0xAB>: the library's Decode() writes U+FFFD for it
    // alone, so its byte is read from the piece.
    if (int byte = sp.IsByte(id) ? bytePieceValue(sp.IdToPiece(id)) : -1; byte >= 0)
      return std::string(1, char(byte));
    return bytesAfter(*this, anchor, id); // the library's own decoding, in context
  }

  int32_t vocabSize() const override { return sp.GetPieceSize(); }
  int32_t bosId() const override { return sp.bos_id(); }
  std::vector<int32_t> eosIds() const override {
    if (sp.eos_id() < 0)
      return {};
    return {sp.eos_id()};
  }
  int32_t specialTokenId(std::string_view piece) const override {
    // PieceToId answers the unknown id for a piece it lacks. (A user-defined
    // piece needs no lookup: encode() produces it from its text.)
    const int id = sp.PieceToId(piece);
    return id >= 0 && sp.IsControl(id) && sp.IdToPiece(id) == piece ? id : -1;
  }
  std::vector<std::pair<std::string, int32_t>> specialTokens() const override {
    std::vector<std::pair<std::string, int32_t>> out;
    for (int id = 0; id < sp.GetPieceSize(); ++id)
      if (sp.IsControl(id)) out.emplace_back(sp.IdToPiece(id), id);
    return out;
  }
  std::string kind() const override { return "sentencepiece"; }
  std::string serialize() const override { return bytes; }

private:
  std::string bytes;
  sentencepiece::SentencePieceProcessor sp;
  std::vector<int32_t> anchor; // "a", a context for tokenBytes
};

/// The llama byte-fallback layout without any merges: for models that ship
/// no tokenizer, so that text still goes in and out.
class ByteTokenizer : public Tokenizer {
public:
  explicit ByteTokenizer(int32_t n) : n(n) {}

  std::vector<int32_t> encode(std::string_view text, bool addBos) const override {
    std::vector<int32_t> out;
    if (addBos)
      out.push_back(kBos);
    for (unsigned char b : text) out.push_back(int32_t(b) + kFirstByte);
    return out;
  }

  std::string decode(const std::vector<int32_t> &ids) const override {
    std::string out;
    for (int32_t id : ids)
      if (id >= kFirstByte && id < kFirstByte + 256)
        out += char(id - kFirstByte);
    return out;
  }
  std::string tokenBytes(int32_t id) const override { return decode({id}); }

  int32_t vocabSize() const override { return n; }
  int32_t bosId() const override { return kBos; }
  std::vector<int32_t> eosIds() const override { return {kEos}; }
  std::string kind() const override { return "bytes"; }
  std::string serialize() const override { return std::to_string(n); }

  static constexpr int32_t kBos = 1, kEos = 2, kFirstByte = 3;

private:
  int32_t n;
};

bool endsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

/// Where the text that is final ends: before trailing U+FFFD (a lossy
/// decoder's stand-in for bytes that a later token may complete) and before
/// an incomplete UTF-8 sequence (a raw decoder's partial character).
size_t finalEnd(std::string_view text) {
  size_t end = text.size();
  // Sentencepiece writes one U+FFFD per pending byte, so hold them all.
  while (endsWith(text.substr(0, end), kReplacement))
    end -= kReplacement.size();
  if (end < text.size())
    return end;
  // Look back over at most three continuation bytes for a lead byte.
  size_t i = end;
  for (int k = 0; k < 3 && i > 0 && (static_cast<unsigned char>(text[i - 1]) & 0xC0) == 0x80; ++k)
    --i;
  if (i == 0)
    return end;
  unsigned char lead = static_cast<unsigned char>(text[i - 1]);
  if (lead >= 0xC0 && utf8SequenceLength(lead) > end - (i - 1))
    return i - 1;
  return end;
}

std::string fileExtension(const std::string &path) {
  size_t slash = path.find_last_of('/');
  size_t dot = path.find_last_of('.');
  if (dot == std::string::npos || (slash != std::string::npos && dot < slash))
    return "";
  std::string ext = path.substr(dot);
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext;
}

} // namespace

// The window `ids` starts with a little context that has already been
// returned (or, given to the constructor, is the prompt's); `emitted` is the part of decode(ids) returned so far. Decoding
// the window with that context in front keeps the sentencepiece rule that
// only the text's first piece loses its leading space from firing mid-stream.
// After each step, when nothing is held back, the window is cut down to the
// shortest tail (at most kMaxContext ids) whose own decoding is non-empty and
// ends `emitted`: from there on it decodes exactly as in place.
StreamDecoder::StreamDecoder(const Tokenizer &tok, const std::vector<int32_t> &context)
    : tok(tok) {
  // The last few ids are context enough, as push() keeps no more.
  ids.assign(context.end() - std::ptrdiff_t(std::min(context.size(), kMaxContext)),
             context.end());
  emitted = tok.decode(ids);
  // A lossy decoder's U+FFFD for an incomplete last character is no text
  // yet: the character comes out whole once pushed ids complete it (a raw
  // decoder's partial bytes are the context's own, as they are).
  while (endsWith(emitted, kReplacement)) emitted.resize(emitted.size() - kReplacement.size());
}

std::string StreamDecoder::push(int32_t id) {
  ids.push_back(id);
  std::string text = tok.decode(ids);
  size_t end = std::max(finalEnd(text), std::min(emitted.size(), text.size()));
  std::string out;
  if (text.compare(0, emitted.size(), emitted) == 0 && end > emitted.size())
    out = text.substr(emitted.size(), end - emitted.size());
  emitted = text.substr(0, end);
  if (emitted.size() == text.size()) {
    for (size_t n = 1; n <= kMaxContext && n < ids.size(); ++n) {
      std::vector<int32_t> tail(ids.end() - n, ids.end());
      std::string alone = tok.decode(tail);
      if (!alone.empty() && endsWith(emitted, alone)) {
        ids = std::move(tail);
        emitted = std::move(alone);
        break;
      }
    }
  }
  return out;
}

std::string StreamDecoder::flush() {
  std::string text = tok.decode(ids);
  std::string out;
  if (text.size() > emitted.size() && text.compare(0, emitted.size(), emitted) == 0)
    out = text.substr(emitted.size());
  emitted = text;
  return out;
}

std::unique_ptr<Tokenizer> loadTokenizerFile(const std::string &path) {
  std::string ext = fileExtension(path);
  if (ext == ".gguf")
    return makeGgufVocab(GgufFile::open(path));
  MappedFile file = MappedFile::open(path, "tokenizer file");
  std::string bytes(file.bytes());
  if (ext == ".model")
    return makeSentencePiece(std::move(bytes), path);
  if (ext == ".json")
    return makeHfBpe(std::move(bytes), path);
  // No telling extension: go by content.
  if (bytes.compare(0, 4, "GGUF") == 0)
    return makeGgufVocab(GgufFile::open(path));
  size_t first = bytes.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && bytes[first] == '{')
    return makeHfBpe(std::move(bytes), path);
  return makeLlama2c(std::move(bytes), path);
}

std::unique_ptr<Tokenizer> loadTokenizer(const std::string &kind, std::string_view bytes) {
  std::string origin = "the stored " + kind + " tokenizer";
  if (kind == "sentencepiece")
    return makeSentencePiece(std::string(bytes), origin);
  if (kind == "llama2c")
    return makeLlama2c(std::string(bytes), origin);
  if (kind == "gguf-spm")
    return makeSerializedSpmVocab(bytes, origin);
  if (kind == "hf-bpe")
    return makeHfBpe(std::string(bytes), origin);
  if (kind == "bytes") {
    int32_t n = 0;
    auto [p, ec] = std::from_chars(bytes.data(), bytes.data() + bytes.size(), n);
    if (ec != std::errc() || p != bytes.data() + bytes.size())
      throw InputError(origin + ": \"" + std::string(bytes.substr(0, 32)) +
                       "\" is not a vocabulary size");
    return makeByteTokenizer(n);
  }
  throw InputError("unknown tokenizer kind \"" + kind +
                   "\"; expected sentencepiece, llama2c, gguf-spm, hf-bpe or bytes");
}

std::unique_ptr<Tokenizer> makeByteTokenizer(int32_t vocabSize) {
  if (vocabSize < 259)
    throw InputError("the byte tokenizer needs a vocabulary of at least 259 ids (<unk>, BOS, EOS "
                     "and 256 bytes); the model has " + std::to_string(vocabSize));
  return std::make_unique<ByteTokenizer>(vocabSize);
}

namespace tokenizer_detail {

std::unique_ptr<Tokenizer> makeSentencePiece(std::string modelBytes, const std::string &origin) {
  return std::make_unique<SentencePieceTokenizer>(std::move(modelBytes), origin);
}

} // namespace tokenizer_detail

} // namespace kvplan
