// Tokenizers: sentencepiece .model files, llama2.c tokenizer.bin, the llama
// vocabulary embedded in GGUF (SPM), Hugging Face tokenizer.json BPE
// (byte-level and sentencepiece-style), and a built-in byte tokenizer for
// models that come with none.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kvplan {

class Tokenizer {
public:
  virtual ~Tokenizer() = default;

  /// Token ids for `text`, with the BOS id first when `addBos` (and the
  /// tokenizer has one).
  virtual std::vector<int32_t> encode(std::string_view text, bool addBos) const = 0;
  /// The text of `ids` as the reference implementation decodes it (BOS, EOS
  /// and other control tokens produce no text).
  virtual std::string decode(const std::vector<int32_t> &ids) const = 0;
  /// The bytes `id` adds to a text where it follows other text, exactly: a
  /// SentencePiece piece with its leading space (which decode() drops at
  /// the start of its ids and after BOS), a byte-fallback token its one
  /// byte (where a lossy decode() writes U+FFFD for it alone), nothing for
  /// control tokens and ids outside the vocabulary. For ids whose text is
  /// UTF-8, decode(context + ids) is decode(context) followed by their
  /// tokenBytes, whenever the context has text: what a token's
  /// log-probability is shown beside, and what structured output checks.
  /// This default decodes `id` after a one-token text and takes that text
  /// off; the tokenizers here say it exactly.
  virtual std::string tokenBytes(int32_t id) const;

  virtual int32_t vocabSize() const = 0;
  /// -1 when the tokenizer defines none.
  virtual int32_t bosId() const = 0;
  virtual std::vector<int32_t> eosIds() const = 0;
  /// The id of the control or added token written `piece` (e.g.
  /// "<|eot_id|>", "[INST]"), which encode() may never produce from text;
  /// -1 when the vocabulary has no such token. Chat templates ask it which
  /// markers a model was trained with.
  virtual int32_t specialTokenId(std::string_view piece) const { return -1; }
  /// Every token specialTokenId() knows, as written, with its id: where a
  /// text rendered by a model's own chat template is split.
  virtual std::vector<std::pair<std::string, int32_t>> specialTokens() const { return {}; }

  /// Format name and bytes from which loadTokenizer() recreates this
  /// tokenizer exactly; the artifact stores them.
  virtual std::string kind() const = 0;
  virtual std::string serialize() const = 0;
};

/// Turns ids pushed one at a time into text as soon as it is final: never
/// emits half of a UTF-8 sequence (byte-fallback tokens) and reproduces
/// decode() of all ids pushed so far when concatenated.
class StreamDecoder {
public:
  explicit StreamDecoder(const Tokenizer &tok) : tok(tok) {}
  /// Continues after `context` (a prompt), whose text it does not emit:
  /// the ids pushed then come out as decode(context + ids) has them after
  /// the context's text, so a SentencePiece piece keeps its leading space
  /// (which decode() drops at the start of its ids, and after BOS). The
  /// context's text is the context's, also a character it leaves
  /// incomplete: pushed ids that complete it add their bytes alone, where
  /// decode() gives the bytes; where it writes U+FFFD for them (a lossy
  /// decoder, SentencePiece's), the character comes out whole.
  StreamDecoder(const Tokenizer &tok, const std::vector<int32_t> &context);
  /// The text that `id` completes (possibly empty).
  std::string push(int32_t id);
  /// Whatever is still held back (an incomplete UTF-8 tail).
  std::string flush();

private:
  static constexpr size_t kMaxContext = 4; // a 4-byte character in byte pieces
  const Tokenizer &tok;
  std::vector<int32_t> ids;
  std::string emitted; // decode(ids) already returned
};

/// Loads a tokenizer file, choosing the format from its name and content:
/// `*.model` (sentencepiece), `tokenizer.json` / `*.json` (Hugging Face
/// BPE), `*.gguf` (the embedded vocabulary), otherwise a llama2.c
/// `tokenizer.bin`. Throws InputError naming the file and what is wrong.
std::unique_ptr<Tokenizer> loadTokenizerFile(const std::string &path);

/// Recreates a tokenizer from Tokenizer::kind() and serialize().
std::unique_ptr<Tokenizer> loadTokenizer(const std::string &kind, std::string_view bytes);

/// For models with no tokenizer: 0 <unk>, 1 <s> (BOS), 2 </s> (EOS), then
/// the 256 byte values as ids 3..258 (the llama byte-fallback layout), ids
/// above that decode to nothing. Needs vocabSize >= 259.
std::unique_ptr<Tokenizer> makeByteTokenizer(int32_t vocabSize);

} // namespace kvplan
