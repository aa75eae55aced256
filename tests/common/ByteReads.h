// How far a text gets through a byte-by-byte recogniser (SchemaState, for
// JSON mode and structured output): the tests of both read texts alike.
#pragma once

#include "runtime/JsonSchema.h"

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

namespace kvplan::testing {

/// Bytes taken before one is refused (the text's size when all are), and
/// whether the recogniser then holds a whole value.
struct Read {
  size_t taken = 0;
  bool complete = false;
};

inline Read readBytes(SchemaState s, const std::string &text) {
  Read r;
  for (char c : text) {
    if (!s.push(uint8_t(c))) return r;
    ++r.taken;
  }
  r.complete = s.complete();
  return r;
}

/// Whether no object in `text` (JSON, or the start of it: what precedes a
/// parse error is read) has a name twice: the recognisers never write one
/// twice, as a parser keeps one of its values. Names compare as the text
/// they stand for (escapes decoded, by nlohmann's parser).
inline bool namesOnce(const std::string &text) {
  struct Names : nlohmann::json_sax<nlohmann::json> {
    std::vector<std::set<std::string>> open;
    bool twice = false;
    bool null() override { return true; }
    bool boolean(bool) override { return true; }
    bool number_integer(number_integer_t) override { return true; }
    bool number_unsigned(number_unsigned_t) override { return true; }
    bool number_float(number_float_t, const string_t &) override { return true; }
    bool string(string_t &) override { return true; }
    bool binary(binary_t &) override { return true; }
    bool start_object(std::size_t) override {
      open.emplace_back();
      return true;
    }
    bool key(string_t &k) override {
      twice = twice || !open.back().insert(k).second;
      return true;
    }
    bool end_object() override {
      open.pop_back();
      return true;
    }
    bool start_array(std::size_t) override { return true; }
    bool end_array() override { return true; }
    bool parse_error(std::size_t, const std::string &,
                     const nlohmann::detail::exception &) override {
      return false;
    }
  } names;
  nlohmann::json::sax_parse(text, &names);
  return !names.twice;
}

} // namespace kvplan::testing
