// Deterministic automata over bytes, for the parts of structured output
// that are regular languages: a string's "pattern" (an ECMAScript regular
// expression, as JSON Schema says) and a number's bounds and multipleOf.
// Every state an automaton keeps can still reach an accepting one, so a
// recogniser that follows it never enters a state no text can finish; a
// byte with no transition is refused.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace kvplan {

class ByteDfa {
public:
  static constexpr int32_t kNone = -1;
  /// States kept at most (a larger automaton is refused by name).
  static constexpr size_t kMaxStates = 20000;

  int32_t start() const { return first; }
  /// The state after byte b, or kNone when no accepted text goes on so.
  int32_t next(int32_t state, uint8_t b) const {
    return table[size_t(state) * width + classOf[b]];
  }
  bool accepts(int32_t state) const { return final[size_t(state)] != 0; }
  size_t states() const { return final.size(); }
  /// The memory it holds, in bytes.
  size_t bytes() const { return sizeof(*this) + table.size() * sizeof(int32_t) + final.size(); }
  /// Whether no text at all is accepted.
  bool empty() const { return first == kNone; }

  /// ECMAScript regular expression `pattern` (JSON Schema's "pattern":
  /// unanchored unless it starts with ^ or ends with $) over the UTF-8
  /// bytes of the string it matches, taking only bytes a JSON string can
  /// hold (a control character only as \b, \t, \n, \f or \r). Throws
  /// InputError naming `path` and the construct it cannot hold (a
  /// lookaround, a backreference, a word boundary, ...) or a pattern too
  /// large or too slow to build. `work`, when given, is a budget shared by
  /// several patterns (of one schema): what building them has spent so far.
  /// Defined in runtime/Regex.cpp.
  static ByteDfa regex(const std::string &pattern, const std::string &path,
                       size_t *work = nullptr);
  /// A JSON number's text (no exponent) whose value meets `bounds`: its
  /// digits are compared with the bounds' as decimals, exactly. Throws
  /// InputError naming `path` when no number meets them or the automaton
  /// would be too large. Defined in runtime/NumberDfa.cpp.
  struct NumberBounds {
    // Decimals as JSON writes them ("-12.5", "3e-2"); empty when absent.
    std::string minimum, maximum, multipleOf;
    bool exclusiveMinimum = false, exclusiveMaximum = false;
    bool integer = false; // no fraction either
  };
  static ByteDfa number(const NumberBounds &bounds, const std::string &path);
  /// This automaton's texts of at least minChars characters (UTF-8
  /// sequences: a byte that is no continuation byte starts one) and at most
  /// maxChars UTF-16 units (-1: no limit; a 4-byte sequence is two), as
  /// JSON Schema and JavaScript count them. Throws InputError naming `path`
  /// when it would be too large.
  ByteDfa withLength(int64_t minChars, int64_t maxChars, const std::string &path) const;

  /// The texts both this automaton and `other` accept. Throws InputError
  /// naming `path` when that would be too large.
  ByteDfa intersect(const ByteDfa &other, const std::string &path) const;

  /// The texts this automaton accepts that none of `others` accepts. Throws
  /// InputError naming `path` when that would be too large.
  ByteDfa minus(const std::vector<const ByteDfa *> &others, const std::string &path) const;
  /// For each state, how many texts it accepts from there (texts after it:
  /// the empty one when it accepts), `most` at most (infinitely many when
  /// it can reach a cycle).
  std::vector<uint64_t> textCounts(uint64_t most) const;
  /// Up to `most` of the texts accepted from `state`, shortest bytes first
  /// within each branch (in byte order). Only for a state whose count
  /// (textCounts) is below its cap: from such a state no cycle is reachable.
  std::vector<std::string> textsFrom(int32_t state, size_t most) const;

  /// Whether from every state some text of these bytes alone reaches an
  /// accepting state.
  bool finishableWith(const std::array<bool, 256> &bytes) const;

  /// A state of a machine being explored, as bytes (any encoding that is
  /// equal for equal states).
  using Key = std::string;
  /// The machine from `start`: `step` gives the state after a byte (false:
  /// refused), `accept` whether a state accepts. Bytes that `classes` puts
  /// together must act alike (step is asked once per class, with its
  /// smallest byte). Keeps the states that can reach an accepting one.
  /// Throws InputError "`path`: `what` ..." past kMaxStates states.
  static ByteDfa explore(const std::array<uint8_t, 256> &classes, const Key &start,
                        const std::function<bool(const Key &, uint8_t, Key &)> &step,
                        const std::function<bool(const Key &)> &accept, const std::string &path,
                        const std::string &what);

private:
  std::vector<int> cuts() const; // where this automaton's byte classes begin
  std::array<uint8_t, 256> classOf{};
  size_t width = 1;
  std::vector<int32_t> table; // states x classes
  std::vector<uint8_t> final;
  int32_t first = kNone;
};

/// Byte classes that keep apart every boundary given: a boundary b splits
/// the bytes below b from those at or above it.
std::array<uint8_t, 256> byteClasses(const std::vector<int> &boundaries);

} // namespace kvplan
