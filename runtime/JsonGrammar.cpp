// JSON mode: the recogniser of one JSON object's text, and the mask it puts
// on a row of logits through each token's bytes.
#include "runtime/JsonGrammar.h"

#include "formats/Tokenizer.h"
#include "runtime/JsonSchema.h"
#include "support/Error.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>

namespace kvplan {

namespace {
bool isSpace(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
bool isDigit(unsigned char c) { return c >= '0' && c <= '9'; }

/// The characters `piece` (valid inside a string, from between characters
/// to between characters) adds: a UTF-8 sequence is one, an escape is one.
uint32_t charactersInString(const std::string &piece) {
  uint32_t n = 0;
  for (size_t i = 0; i < piece.size(); ++i) {
    const unsigned char c = uint8_t(piece[i]);
    if ((c & 0xC0) == 0x80) continue; // a continuation byte
    ++n;
    if (c == '\\') i += piece[i + 1] == 'u' ? 5 : 1;
  }
  return n;
}
} // namespace

bool JsonState::space(unsigned char c) {
  const uint8_t bit = c == '\n' ? 1 : c == '\r' ? 2 : 0;
  if (breaks & bit) return false;
  breaks |= bit;
  return ++spaces <= kMaxSpaces;
}

bool JsonState::startValue(unsigned char c) {
  switch (c) {
  case '{': open.push_back('{'); mode = Mode::firstKey; return true;
  case '[': open.push_back('['); mode = Mode::firstItem; return true;
  case '"': mode = Mode::string; inKey = false; return true;
  case '-': mode = Mode::minus; return true;
  case '0': mode = Mode::zero; return true;
  case 't': word = "true"; break;
  case 'f': word = "false"; break;
  case 'n': word = "null"; break;
  default:
    if (!isDigit(c)) return false;
    mode = Mode::integer;
    return true;
  }
  mode = Mode::literal;
  pending = uint8_t(std::strlen(word) - 1);
  return true;
}

/// A value ended: the object closed when nothing is open around it.
bool JsonState::closeValue() {
  mode = open.empty() ? Mode::done : Mode::after;
  return true;
}

bool JsonState::afterValue(unsigned char c) {
  if (isSpace(c)) return space(c);
  const char container = open.back();
  if (c == ',') {
    mode = container == '{' ? Mode::key : Mode::value;
    return true;
  }
  if ((container == '{' && c == '}') || (container == '[' && c == ']')) {
    open.pop_back();
    return closeValue();
  }
  return false;
}

/// A byte in a state where the number read so far is whole: a digit, the
/// start of a fraction or an exponent where they may come, or the byte
/// after the number.
bool JsonState::number(unsigned char c) {
  if (isDigit(c) && mode != Mode::zero) return true;
  if (c == '.' && (mode == Mode::zero || mode == Mode::integer)) {
    mode = Mode::point;
    return true;
  }
  if ((c == 'e' || c == 'E') && mode != Mode::expDigits) {
    mode = Mode::exponent;
    return true;
  }
  closeValue();
  return afterValue(c);
}

/// A byte inside a string: its end, an escape, a character, or the lead
/// byte of a UTF-8 sequence (RFC 3629: no overlong forms, no surrogates,
/// nothing past U+10FFFF).
bool JsonState::stringByte(unsigned char c) {
  if (c == '"') {
    if (!inKey) return closeValue();
    inKey = false;
    mode = Mode::colon;
    return true;
  }
  if (c == '\\') {
    mode = Mode::escape;
    return true;
  }
  if (c < 0x80) return c >= 0x20; // control characters are escaped in JSON
  lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    pending = 1;
  } else if (c >= 0xE0 && c <= 0xEF) {
    pending = 2;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    pending = 3;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return false;
  }
  mode = Mode::utf8;
  return true;
}

/// A byte in the middle of a token: a UTF-8 sequence, an escape, \u's
/// hex digits, a literal.
bool JsonState::tokenByte(unsigned char c) {
  switch (mode) {
  case Mode::utf8:
    if (c < lo || c > hi) return false;
    lo = 0x80, hi = 0xBF;
    if (--pending == 0) mode = Mode::string;
    return true;
  case Mode::escape:
    if (c == 'u') {
      mode = Mode::hex;
      pending = 4;
      lo = 0;
      return true;
    }
    mode = Mode::string;
    return c != 0 && std::strchr("\"\\/bfnrt", c) != nullptr;
  case Mode::hex:
    if (!unicodeEscapeDigit(c, pending, lo)) return false;
    if (--pending == 0) mode = lo == 2 ? Mode::lowSlash : Mode::string;
    return true;
  case Mode::lowSlash:
    mode = Mode::lowU;
    return c == '\\';
  case Mode::lowU:
    mode = Mode::hex;
    pending = 4;
    lo = 3;
    return c == 'u';
  default: // literal
    if (c != uint8_t(word[std::strlen(word) - pending])) return false;
    return --pending > 0 ? true : closeValue();
  }
}

bool JsonState::push(unsigned char c) {
  const bool ws = isSpace(c);
  if (!ws) spaces = breaks = 0;
  switch (mode) {
  case Mode::start:
    if (ws) return space(c);
    if (c != '{') return false;
    open.push_back('{');
    mode = Mode::firstKey;
    return true;
  case Mode::value:
    return ws ? space(c) : startValue(c);
  case Mode::firstItem:
    if (ws) return space(c);
    if (c != ']') return startValue(c);
    open.pop_back();
    return closeValue();
  case Mode::firstKey:
  case Mode::key:
    if (ws) return space(c);
    if (c == '}' && mode == Mode::firstKey) {
      open.pop_back();
      return closeValue();
    }
    if (c != '"') return false;
    mode = Mode::string;
    inKey = true;
    return true;
  case Mode::colon:
    if (ws) return space(c);
    if (c != ':') return false;
    mode = Mode::value;
    return true;
  case Mode::after:
    return afterValue(c);
  case Mode::string:
    return stringByte(c);
  case Mode::utf8:
  case Mode::escape:
  case Mode::hex:
  case Mode::lowSlash:
  case Mode::lowU:
  case Mode::literal:
    return tokenByte(c);
  case Mode::minus:
    if (!isDigit(c)) return false;
    mode = c == '0' ? Mode::zero : Mode::integer;
    return true;
  case Mode::point:
    if (!isDigit(c)) return false;
    mode = Mode::fraction;
    return true;
  case Mode::exponent:
    if (c == '+' || c == '-') {
      mode = Mode::expSign;
      return true;
    }
    [[fallthrough]];
  case Mode::expSign:
    if (!isDigit(c)) return false;
    mode = Mode::expDigits;
    return true;
  case Mode::zero:
  case Mode::integer:
  case Mode::fraction:
  case Mode::expDigits:
    return number(c);
  case Mode::done:
    return false;
  }
  return false;
}

JsonVocabulary::JsonVocabulary(std::vector<std::string> tokenBytes) : bytes(std::move(tokenBytes)) {
  // Every state can go on with one of these alone, so a row is never
  // masked whole.
  for (const std::string &b : bytes)
    if (b.size() == 1) alone[uint8_t(b[0])] = true;
  for (char c : std::string("{}[]\":,-.e0123456789truefalsn\\ ")) {
    if (!alone[uint8_t(c)])
      throw InputError(std::string("JSON mode needs a token for each character JSON is written "
                                   "with, and this vocabulary has none for '") +
                       c + "' alone");
  }
  JsonState body;
  body.push('{');
  body.push('"');
  inString.resize(bytes.size());
  stringChars.resize(bytes.size());
  for (size_t id = 0; id < bytes.size(); ++id) {
    JsonState t = body;
    bool ok = !bytes[id].empty();
    for (char c : bytes[id]) ok = ok && t.push(uint8_t(c));
    // Without a quote it never left the string (a key's, here: a value's
    // is read alike); one with a quote may close one string and open
    // another, which depends on which it closed.
    inString[id] = ok && t.betweenCharacters() && bytes[id].find('"') == std::string::npos;
    if (inString[id]) stringChars[id] = charactersInString(bytes[id]);
  }
  sorted.resize(bytes.size());
  for (size_t id = 0; id < bytes.size(); ++id) sorted[id] = int32_t(id);
  std::sort(sorted.begin(), sorted.end(),
            [&](int32_t a, int32_t b) { return bytes[size_t(a)] < bytes[size_t(b)]; });
  shared.assign(sorted.size(), 0);
  for (size_t k = 1; k < sorted.size(); ++k) {
    const std::string &a = bytes[size_t(sorted[k - 1])], &b = bytes[size_t(sorted[k])];
    size_t n = 0;
    while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
    shared[k] = uint32_t(n);
  }
}

JsonVocabulary JsonVocabulary::of(const Tokenizer &tokenizer) {
  std::vector<int32_t> context = tokenizer.encode("a", false);
  if (context.size() != 1) context.clear();
  const std::string before = context.empty() ? "" : tokenizer.decode(context);
  std::vector<std::string> out(size_t(tokenizer.vocabSize()));
  std::vector<int32_t> ids = context;
  ids.push_back(0);
  for (int32_t id = 0; id < tokenizer.vocabSize(); ++id) {
    ids.back() = id;
    std::string text = tokenizer.decode(ids);
    out[size_t(id)] = text.compare(0, before.size(), before) == 0 ? text.substr(before.size())
                                                                  : text;
  }
  return JsonVocabulary(std::move(out));
}

void JsonVocabulary::check(const JsonSchema &schema) const {
  for (int c = 0; c < 256; ++c)
    if (schema.literalBytes()[size_t(c)] && !alone[c]) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02X", c);
      throw InputError(std::string("the schema writes byte ") + hex +
                       " in a property name or an enum or const value, and this vocabulary "
                       "has no token for it alone");
    }
}

void JsonVocabulary::mask(const SchemaState &s, float *logits, int64_t vocab) const {
  // levels[d]: the state after the first d bytes of the token walked last
  // (valid for d <= `valid`); it failed at byte `failed` (-1: it did not).
  thread_local std::vector<SchemaState> levels;
  if (levels.empty()) levels.resize(1);
  levels[0] = s;
  size_t valid = 0;
  int64_t failed = -1;
  uint32_t common = 0; // bytes the token shares with the one walked last
  const float refused = -std::numeric_limits<float>::infinity();
  for (int64_t id = size(); id < vocab; ++id) logits[id] = refused;
  const int64_t room = s.stringRoom();
  for (size_t k = 0; k < sorted.size(); ++k) {
    common = k == 0 ? 0 : std::min(common, shared[k]);
    const int32_t id = sorted[k];
    if (id >= vocab) continue;
    if (inString[size_t(id)] && int64_t(stringChars[size_t(id)]) <= room) continue;
    const std::string &b = bytes[size_t(id)];
    if (b.empty()) {
      logits[id] = refused;
      continue;
    }
    if (failed >= 0 && int64_t(common) > failed) { // starts with a refused prefix
      logits[id] = refused;
      continue;
    }
    size_t d = std::min<size_t>(common, valid);
    failed = -1;
    if (levels.size() < b.size() + 1) levels.resize(b.size() + 1);
    for (; d < b.size(); ++d)
      if (!levels[d + 1].assignPush(levels[d], uint8_t(b[d]))) {
        failed = int64_t(d);
        break;
      }
    valid = d;
    if (failed >= 0) logits[id] = refused;
    common = uint32_t(b.size());
  }
}

bool JsonVocabulary::advance(SchemaState &s, int32_t id) const {
  if (id < 0 || id >= size() || bytes[size_t(id)].empty()) return false;
  for (char c : bytes[size_t(id)])
    if (!s.push(uint8_t(c))) return false;
  return true;
}

} // namespace kvplan
