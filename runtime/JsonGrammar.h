// JSON mode (OpenAI's response_format json_object): generated text held to
// a prefix of one JSON object, byte by byte. JsonState is JSON's pushdown
// recogniser (RFC 8259); the sampler follows the text with the schema
// recogniser (runtime/JsonSchema.h), JSON mode being the schema {} that
// reads as JsonState does, and before each draw sets the logit of every
// token whose bytes it would refuse to -inf, so only tokens that keep the
// text a prefix of a JSON object can be drawn, and the request ends once
// the object closes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kvplan {

class Tokenizer;
class JsonSchema;
class SchemaState;

/// One hex digit `c` of a \u escape in a string, `pending` digits to go (4
/// at the first). `surrogate` says what the escape is so far: 0 a
/// character; 1 maybe a surrogate (it began with d); 2 a high surrogate
/// (D800 to DBFF), which the escape of a low one must follow; 3 that low
/// one (DC00 to DFFF), set by the caller. False when the digit is refused:
/// not hex, a low surrogate alone, or not the low one a high one needs.
/// Strict parsers (nlohmann's among them) refuse unpaired surrogates.
inline bool unicodeEscapeDigit(unsigned char c, uint8_t pending, uint8_t &surrogate) {
  const bool hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
  if (!hex) return false;
  const unsigned char lower = c | 0x20;
  if (pending == 4) {
    if (surrogate == 3) return lower == 'd';
    surrogate = lower == 'd' ? 1 : 0;
  } else if (pending == 3) {
    const bool high = lower >= '8' && lower <= 'b', low = lower >= 'c' && lower <= 'f';
    if (surrogate == 3) return low;
    if (surrogate == 1) {
      if (low) return false;
      surrogate = high ? 2 : 0;
    }
  }
  return true;
}

/// Where a JSON text is: which value it expects or is inside, and the
/// objects and arrays open around it.
class JsonState {
public:
  /// Takes one byte; returns false, leaving the state unusable, when the
  /// text with it is not the start of one JSON object (then whitespace).
  bool push(unsigned char c);
  /// Whether one whole object has been read (nothing may follow).
  bool complete() const { return mode == Mode::done; }
  /// Inside a string, between characters (not in an escape or a UTF-8
  /// sequence): what may follow does not depend on anything else.
  bool betweenCharacters() const { return mode == Mode::string; }

  /// Whitespace between tokens: at most this many bytes in a row, with at
  /// most one line feed and one carriage return among them (a model that
  /// would pad or break lines forever cannot; a line of indentation fits).
  static constexpr int kMaxSpaces = 16;

private:
  enum class Mode : uint8_t {
    start,      // before the top-level object
    value,      // a value (after ':' or ',' in an array)
    firstItem,  // after '[': a value or ']'
    firstKey,   // after '{': a key or '}'
    key,        // after ',' in an object: a key
    colon,      // after a key
    after,      // after a value: ',' or the closing bracket
    string,     // inside a string (a key when `inKey`)
    utf8,       // a UTF-8 sequence in a string: `pending` bytes to go, the next in [lo, hi]
    escape,     // after '\' in a string
    hex,        // \u and `pending` hex digits to go (`lo`: unicodeEscapeDigit's surrogate)
    lowSlash,   // after a high surrogate's escape: the '\' of its low one
    lowU,       // then its 'u'
    literal,    // true, false or null: `pending` letters of `word` to go
    minus,      // a number's '-': a digit
    zero,       // a number's leading 0: '.', 'e' or its end
    integer,    // a number's integer digits
    point,      // after '.': a digit
    fraction,   // fraction digits
    exponent,   // after 'e': a sign or a digit
    expSign,    // after the exponent's sign: a digit
    expDigits,  // exponent digits
    done,       // the object closed
  };
  bool space(unsigned char c);
  bool startValue(unsigned char c);
  bool closeValue();
  bool afterValue(unsigned char c);
  bool number(unsigned char c);
  bool stringByte(unsigned char c);
  bool tokenByte(unsigned char c);

  Mode mode = Mode::start;
  std::string open;            // '{' or '[' for each container open, innermost last
  const char *word = nullptr;  // the literal being read
  uint8_t pending = 0, lo = 0, hi = 0;
  uint8_t spaces = 0;          // whitespace bytes in a row
  uint8_t breaks = 0;          // of them: bit 0 a line feed, bit 1 a carriage return
  bool inKey = false;
};

/// The vocabulary as the bytes each token adds to generated text, and the
/// mask JSON mode puts on a row of logits.
class JsonVocabulary {
public:
  /// `tokenBytes[id]`: what token id adds to the text (empty for control
  /// tokens, never allowed). Throws InputError naming a character JSON
  /// needs that no token spells alone.
  explicit JsonVocabulary(std::vector<std::string> tokenBytes);
  /// From a tokenizer: each token decoded after a context token, less the
  /// context's text (so a SentencePiece token keeps its leading space).
  static JsonVocabulary of(const Tokenizer &tokenizer);

  int64_t size() const { return int64_t(bytes.size()); }

  /// Structured output (runtime/JsonSchema.h): throws InputError naming a
  /// byte the schema's literals need that no token spells alone (then
  /// some text the schema allows could not be finished).
  void check(const JsonSchema &schema) const;
  /// Sets to -inf the logit of every token that cannot follow `s` (ids
  /// past the vocabulary's: the model's padding rows, never allowed). The
  /// tokens are walked in the order of their bytes, so a prefix shared by
  /// many is read once, and a prefix refused refuses every token that
  /// starts with it; inside a string, a token that stays in it (within its
  /// length) is allowed without reading it.
  void mask(const SchemaState &s, float *logits, int64_t vocab) const;
  /// `s` after token `id`; false when the token was not allowed.
  bool advance(SchemaState &s, int32_t id) const;

private:
  std::vector<std::string> bytes;
  bool alone[256] = {}; // bytes a token spells alone
  // Token ids in the order of their bytes, and how many bytes each shares
  // with the one before it in that order.
  std::vector<int32_t> sorted;
  std::vector<uint32_t> shared;
  // Tokens whose bytes go on a string, never leave it and end between
  // characters (most of a vocabulary): allowed there without reading them.
  std::vector<uint8_t> inString;
  // Of those, the string characters each adds (as JSON schema's maxLength
  // counts them: an escape is one).
  std::vector<uint32_t> stringChars;
};

} // namespace kvplan
