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
/// The UTF-16 units `piece` (valid inside a string, from between characters
/// to between characters) adds, as maxLength counts them: a UTF-8 sequence
/// is one, or two past U+FFFF; an escape is one (a surrogate pair's two).
uint32_t charactersInString(const std::string &piece) {
  uint32_t n = 0;
  for (size_t i = 0; i < piece.size(); ++i) {
    const unsigned char c = uint8_t(piece[i]);
    if ((c & 0xC0) == 0x80) continue; // a continuation byte
    n += c >= 0xF0 ? 2 : 1;
    if (c == '\\') i += piece[i + 1] == 'u' ? 5 : 1;
  }
  return n;
}
} // namespace

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
  SchemaState body(JsonSchema::anyObject()), t;
  body.push('{');
  body.push('"');
  inString.resize(bytes.size());
  escapes.resize(bytes.size());
  stringChars.resize(bytes.size());
  for (size_t id = 0; id < bytes.size(); ++id) {
    const std::string &b = bytes[id];
    // Without a quote it never left the string (a key's, here: a value's
    // is read alike); one with a quote may close one string and open
    // another, which depends on which it closed.
    bool ok = !b.empty() && b.find('"') == std::string::npos && t.assignPush(body, uint8_t(b[0]));
    for (size_t i = 1; ok && i < b.size(); ++i) ok = t.push(uint8_t(b[i]));
    inString[id] = ok && t.stringRoom() >= 0;
    if (inString[id]) stringChars[id] = charactersInString(b);
    escapes[id] = inString[id] && b.find('\\') != std::string::npos;
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
  std::vector<std::string> out(size_t(tokenizer.vocabSize()));
  for (int32_t id = 0; id < tokenizer.vocabSize(); ++id) out[size_t(id)] = tokenizer.tokenBytes(id);
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
  // A pattern's text, byte by byte: each byte alone, or an escape of one.
  std::array<bool, 256> spelled{};
  for (int c = 0; c < 256; ++c) spelled[size_t(c)] = alone[c];
  for (const char *e = kJsonEscapedBytes; *e; ++e) spelled[uint8_t(*e)] = true;
  for (size_t k = 0; k < schema.automata().size(); ++k)
    if (!schema.automata()[k].finishableWith(spelled))
      throw InputError(schema.automatonPaths()[k] + ": this vocabulary cannot spell every text "
                       "it allows byte by byte (it lacks tokens for single bytes the text may "
                       "need), so generation could not be finished");
}

void JsonVocabulary::check(const std::shared_ptr<const JsonSchema> &schema) const {
  {
    std::lock_guard<std::mutex> lock(passed->mutex);
    for (const std::weak_ptr<const JsonSchema> &w : passed->schemas)
      if (w.lock() == schema) return;
  }
  check(*schema);
  std::lock_guard<std::mutex> lock(passed->mutex);
  std::vector<std::weak_ptr<const JsonSchema>> &v = passed->schemas;
  v.erase(std::remove_if(v.begin(), v.end(), [](const auto &w) { return w.expired(); }), v.end());
  if (v.size() >= JsonSchema::kCachedSchemas) v.erase(v.begin());
  v.push_back(schema);
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
  // Inside a patterned string, the tokens that stay in it go through its
  // automaton alone (their own cache of states along the walk).
  const SchemaState::InPattern pattern = s.inPattern();
  thread_local std::vector<int32_t> patternAt;
  size_t patternValid = 0;
  uint32_t patternCommon = 0;
  for (size_t k = 0; k < sorted.size(); ++k) {
    common = k == 0 ? 0 : std::min(common, shared[k]);
    patternCommon = k == 0 ? 0 : std::min(patternCommon, shared[k]);
    const int32_t id = sorted[k];
    if (id >= vocab) continue;
    if (inString[size_t(id)] && int64_t(stringChars[size_t(id)]) <= room) continue;
    if (pattern.dfa && inString[size_t(id)]) {
      if (!patternTakes(pattern, id, patternCommon, patternAt, patternValid))
        logits[id] = refused;
      patternCommon = uint32_t(bytes[size_t(id)].size());
      continue;
    }
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

bool JsonVocabulary::patternTakes(const SchemaState::InPattern &p, int32_t id, size_t common,
                                  std::vector<int32_t> &at, size_t &valid) const {
  const std::string &b = bytes[size_t(id)];
  if (escapes[size_t(id)]) { // decoded, alone (no \u escape in a patterned string)
    valid = 0;
    int32_t state = p.state;
    for (size_t i = 0; i < b.size() && state != ByteDfa::kNone; ++i) {
      uint8_t c = uint8_t(b[i]);
      if (c == '\\') {
        const int byte = ++i < b.size() ? jsonEscapedByte(uint8_t(b[i])) : -1;
        if (byte < 0) return false;
        c = uint8_t(byte);
      }
      state = p.dfa->next(state, c);
    }
    return state != ByteDfa::kNone;
  }
  if (at.size() < b.size() + 1) at.resize(b.size() + 1);
  at[0] = p.state;
  // at[d] holds for d <= valid; a prefix refused is marked by kNone there.
  size_t d = std::min(common, valid);
  for (; d < b.size(); ++d) {
    if (at[d] == ByteDfa::kNone) break;
    at[d + 1] = p.dfa->next(at[d], uint8_t(b[d]));
  }
  valid = d;
  return at[b.size()] != ByteDfa::kNone && d == b.size();
}

bool JsonVocabulary::advance(SchemaState &s, int32_t id) const {
  if (id < 0 || id >= size() || bytes[size_t(id)].empty()) return false;
  for (char c : bytes[size_t(id)])
    if (!s.push(uint8_t(c))) return false;
  return true;
}

} // namespace kvplan
