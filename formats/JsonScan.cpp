// The forward-only JSON reader behind tokenizer.json's large tables.
#include "formats/JsonScan.h"

#include "formats/TokenizerInternal.h"
#include "support/Error.h"

#include <algorithm>
#include <cstring>

namespace kvplan::tokenizer_detail {

void JsonScanner::fail(const std::string &what) const {
  size_t at = std::min(pos, text.size());
  size_t line = 1 + size_t(std::count(text.begin(), text.begin() + at, '\n'));
  size_t lineStart = text.rfind('\n', at == 0 ? 0 : at - 1);
  size_t column = at - (lineStart == std::string_view::npos || at == 0 ? 0 : lineStart + 1) + 1;
  throw InputError(origin + ": malformed JSON at line " + std::to_string(line) + ", column " +
                   std::to_string(column) + ": " + what);
}

void JsonScanner::skipWhitespace() {
  while (pos < text.size() &&
         (text[pos] == ' ' || text[pos] == '\n' || text[pos] == '\r' || text[pos] == '\t'))
    ++pos;
}

char JsonScanner::peek() {
  skipWhitespace();
  return pos < text.size() ? text[pos] : '\0';
}

void JsonScanner::expect(char c) {
  if (peek() != c)
    fail(pos < text.size() ? std::string("expected '") + c + "', found '" + text[pos] + "'"
                           : std::string("expected '") + c + "', found the end of the file");
  ++pos;
}

bool JsonScanner::tryConsume(char c) {
  if (peek() != c)
    return false;
  ++pos;
  return true;
}

void JsonScanner::expectEnd() {
  if (peek() != '\0')
    fail("unexpected content after the top-level value");
}

uint32_t JsonScanner::readHex4() {
  if (text.size() - pos < 4)
    fail("incomplete \\u escape");
  uint32_t v = 0;
  for (int k = 0; k < 4; ++k) {
    char c = text[pos++];
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
    if (d < 0)
      fail("bad hex digit in a \\u escape");
    v = v * 16 + uint32_t(d);
  }
  return v;
}

std::string_view JsonScanner::readString(std::string &scratch) {
  expect('"');
  size_t start = pos;
  // Fast path: no escape, so the string is the text itself.
  while (pos < text.size()) {
    unsigned char c = static_cast<unsigned char>(text[pos]);
    if (c == '"')
      return text.substr(start, pos++ - start);
    if (c == '\\')
      break;
    if (c < 0x20)
      fail("control character in a string");
    ++pos;
  }
  scratch.assign(text.data() + start, pos - start);
  while (pos < text.size()) {
    char c = text[pos++];
    if (c == '"')
      return scratch;
    if (static_cast<unsigned char>(c) < 0x20)
      fail("control character in a string");
    if (c != '\\') {
      scratch += c;
      continue;
    }
    if (pos >= text.size())
      break;
    switch (char e = text[pos++]) {
    case '"': case '\\': case '/': scratch += e; break;
    case 'b': scratch += '\b'; break;
    case 'f': scratch += '\f'; break;
    case 'n': scratch += '\n'; break;
    case 'r': scratch += '\r'; break;
    case 't': scratch += '\t'; break;
    case 'u': {
      uint32_t cp = readHex4();
      if (cp >= 0xDC00 && cp <= 0xDFFF)
        fail("lone low surrogate in a \\u escape");
      if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (text.substr(pos, 2) != "\\u")
          fail("high surrogate without its low half in a \\u escape");
        pos += 2;
        uint32_t lo = readHex4();
        if (lo < 0xDC00 || lo > 0xDFFF)
          fail("high surrogate without its low half in a \\u escape");
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
      }
      appendUtf8(scratch, cp);
      break;
    }
    default: fail(std::string("unknown escape \\") + e);
    }
  }
  fail("unterminated string");
}

int64_t JsonScanner::readInteger() {
  skipWhitespace();
  size_t start = pos;
  bool negative = pos < text.size() && text[pos] == '-';
  if (negative)
    ++pos;
  uint64_t v = 0;
  size_t digits = 0;
  while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') {
    v = v * 10 + uint64_t(text[pos++] - '0');
    if (++digits > 18)
      fail("integer too large");
  }
  if (digits == 0 || (pos < text.size() && (text[pos] == '.' || text[pos] == 'e' || text[pos] == 'E'))) {
    pos = start;
    fail("expected an integer");
  }
  return negative ? -int64_t(v) : int64_t(v);
}

void JsonScanner::skipString() {
  ++pos; // the opening quote
  while (pos < text.size()) {
    const char *q = static_cast<const char *>(std::memchr(text.data() + pos, '"', text.size() - pos));
    if (!q)
      break;
    size_t end = size_t(q - text.data());
    // The quote ends the string unless an odd number of backslashes escapes it.
    size_t backslashes = 0;
    while (end - backslashes > pos && text[end - backslashes - 1] == '\\') ++backslashes;
    pos = end + 1;
    if (backslashes % 2 == 0)
      return;
  }
  fail("unterminated string");
}

std::string_view JsonScanner::skipValue() {
  skipWhitespace();
  size_t start = pos;
  size_t depth = 0;
  do {
    if (pos >= text.size())
      fail("unexpected end of the file inside a value");
    char c = text[pos];
    if (c == '"') {
      skipString();
    } else if (c == '{' || c == '[') {
      ++depth;
      ++pos;
    } else if (c == '}' || c == ']') {
      if (depth == 0)
        fail(std::string("unexpected '") + c + "'");
      --depth;
      ++pos;
    } else if (depth == 0) {
      // A number or a literal: up to the next delimiter.
      while (pos < text.size() && !std::strchr(",}] \n\r\t", text[pos])) ++pos;
      if (pos == start)
        fail(std::string("unexpected '") + c + "'");
    } else {
      ++pos;
    }
  } while (depth > 0);
  return text.substr(start, pos - start);
}

} // namespace kvplan::tokenizer_detail
