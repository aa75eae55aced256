// How far a text gets through a byte-by-byte recogniser (SchemaState, for
// JSON mode and structured output): the tests of both read texts alike.
#pragma once

#include "runtime/JsonSchema.h"

#include <cstddef>
#include <cstdint>
#include <string>

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

} // namespace kvplan::testing
