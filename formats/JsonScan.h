// A forward-only JSON reader for the large tables of tokenizer.json
// (model.vocab with ~150k pieces, model.merges with ~280k pairs): reading them
// straight into kvplan's tables is several times faster than building an
// nlohmann::json tree of 10 MB first. The small rest goes through nlohmann.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace kvplan::tokenizer_detail {

class JsonScanner {
public:
  /// `origin` names the file in errors.
  JsonScanner(std::string_view text, std::string origin) : text(text), origin(std::move(origin)) {}

  /// The next byte after whitespace (0 at the end), without consuming it.
  char peek();
  /// Consumes `c` after whitespace, or fails saying what was expected.
  void expect(char c);
  /// Consumes `c` after whitespace when it is next.
  bool tryConsume(char c);
  /// A string: a view of the text when it has no escape, else of `scratch`
  /// (which then holds the decoded bytes).
  std::string_view readString(std::string &scratch);
  /// An integer that fits in int64.
  int64_t readInteger();
  /// Skips one value of any type and returns its text, for nlohmann::json
  /// to parse (which checks what skipping does not, e.g. literals).
  std::string_view skipValue();
  /// Fails unless only whitespace is left.
  void expectEnd();

  /// Reads `{...}`, calling `member(key)` with the scanner on each member's
  /// value, which `member` must consume.
  template <typename MemberFn> void readObject(MemberFn member) {
    expect('{');
    if (tryConsume('}'))
      return;
    std::string scratch;
    do {
      if (peek() != '"')
        fail("expected a member name");
      std::string_view key = readString(scratch);
      expect(':');
      member(key);
    } while (tryConsume(','));
    expect('}');
  }

  /// Reads `[...]`, calling `element()` with the scanner on each element.
  template <typename ElementFn> void readArray(ElementFn element) {
    expect('[');
    if (tryConsume(']'))
      return;
    do element();
    while (tryConsume(','));
    expect(']');
  }

  size_t offset() const { return pos; }
  void seek(size_t at) { pos = at; }
  /// Throws InputError "ORIGIN: malformed JSON at line L, column C: WHAT".
  [[noreturn]] void fail(const std::string &what) const;

private:
  void skipWhitespace();
  void skipString();
  uint32_t readHex4();

  std::string_view text;
  std::string origin;
  size_t pos = 0;
};

} // namespace kvplan::tokenizer_detail
