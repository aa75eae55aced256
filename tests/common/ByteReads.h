// How far a text gets through a byte-by-byte recogniser (JSON mode's
// JsonState, structured output's SchemaState): the tests of both read
// texts alike.
#pragma once

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

template <class State> Read readBytes(State s, const std::string &text) {
  Read r;
  for (char c : text) {
    if (!s.push(uint8_t(c))) return r;
    ++r.taken;
  }
  r.complete = s.complete();
  return r;
}

} // namespace kvplan::testing
