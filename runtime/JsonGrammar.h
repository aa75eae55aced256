// JSON mode (OpenAI's response_format json_object) and structured output:
// generated text held to a prefix of one JSON object, byte by byte. The
// sampler follows the text with the schema recogniser (runtime/JsonSchema.h;
// JSON mode is the schema {}, any object of RFC 8259 text) and before each
// draw sets the logit of every token whose bytes it would refuse to -inf,
// so only tokens that keep the text a prefix of such an object can be
// drawn, and the request ends once the object closes. This file holds the
// vocabulary's side: each token's bytes, and the mask.
#pragma once

#include "runtime/JsonSchema.h"

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace kvplan {

class Tokenizer;

/// The vocabulary as the bytes each token adds to generated text, and the
/// mask JSON mode puts on a row of logits.
class JsonVocabulary {
public:
  /// `tokenBytes[id]`: what token id adds to the text (empty for control
  /// tokens, never allowed). Throws InputError naming a character JSON
  /// needs that no token spells alone.
  explicit JsonVocabulary(std::vector<std::string> tokenBytes);
  /// From a tokenizer: each token's Tokenizer::tokenBytes (a SentencePiece
  /// token with its leading space, a byte-fallback token its byte).
  static JsonVocabulary of(const Tokenizer &tokenizer);

  int64_t size() const { return int64_t(bytes.size()); }

  /// Structured output (runtime/JsonSchema.h): throws InputError naming a
  /// byte the schema's literals need that no token spells alone (then
  /// some text the schema allows could not be finished).
  void check(const JsonSchema &schema) const;
  /// The same, remembered: a schema that passed (the same compiled object,
  /// which JsonSchema::compile shares among requests) is not checked again.
  void check(const std::shared_ptr<const JsonSchema> &schema) const;
  /// Sets to -inf the logit of every token that cannot follow `s` (ids
  /// past the vocabulary's: the model's padding rows, never allowed). The
  /// tokens are walked in the order of their bytes, so a prefix shared by
  /// many is read once, and a prefix refused refuses every token that
  /// starts with it; inside a string, a token that stays in it (within its
  /// length) is allowed without reading it.
  void mask(const SchemaState &s, float *logits, int64_t vocab) const;
  /// Whether the automaton takes token id's bytes (a token that stays in
  /// a string) from `state`; `at[d]`, the state after the first d bytes
  /// of the token walked last, is reused for a shared prefix.
  bool patternTakes(const SchemaState::InPattern &p, int32_t id, size_t common,
                    std::vector<int32_t> &at, size_t &valid) const;
  /// `s` after token `id`; false when the token was not allowed.
  bool advance(SchemaState &s, int32_t id) const;

private:
  // The last kCachedSchemas schemas that passed check().
  struct Passed {
    std::mutex mutex;
    std::vector<std::weak_ptr<const JsonSchema>> schemas;
  };
  std::shared_ptr<Passed> passed = std::make_shared<Passed>();
  std::vector<std::string> bytes;
  bool alone[256] = {}; // bytes a token spells alone
  // Token ids in the order of their bytes, and how many bytes each shares
  // with the one before it in that order.
  std::vector<int32_t> sorted;
  std::vector<uint32_t> shared;
  // Tokens whose bytes go on a string, never leave it and end between
  // characters (most of a vocabulary): allowed there without reading them.
  std::vector<uint8_t> inString;
  // Of those, the ones holding an escape (\n, \"): a pattern reads them
  // decoded.
  std::vector<uint8_t> escapes;
  // Of those, the UTF-16 units each adds (as maxLength counts them: an
  // escape is one).
  std::vector<uint32_t> stringChars;
};

} // namespace kvplan
