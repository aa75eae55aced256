// JSON Schema's "pattern": an ECMAScript regular expression, parsed into a
// tree, built into a nondeterministic automaton over UTF-8 bytes (each set
// of code points as byte-range sequences) and made deterministic
// (ByteDfa::explore over sets of its states).
//
// What it reads: literals, ., [...] and [^...] with ranges, the escapes
// \d \D \w \W \s \S \n \r \t \f \v \0 \cX \xHH \uHHHH \u{H...} and escaped
// syntax characters, groups ( ), (?: ) and (?<name> ), alternation |, the
// quantifiers * + ? {n} {n,} {n,m} (lazy or not: the same texts match),
// and ^ and $ at the start and end of the pattern or of a top-level
// alternative. A pattern matches anywhere in the string unless anchored, as
// JSON Schema says. What it refuses by name: lookarounds, backreferences,
// word boundaries, Unicode property escapes, anchors elsewhere.
#include "runtime/ByteDfa.h"

#include "support/Error.h"

#include <algorithm>
#include <cctype>
#include <cstring>

namespace kvplan {

namespace {

using Range = std::pair<uint32_t, uint32_t>; // code points, inclusive
using CharSet = std::vector<Range>;

constexpr uint32_t kMaxCodePoint = 0x10FFFF;
constexpr int kMaxRepeat = 1000;
constexpr size_t kMaxNfaStates = 200000;
// Automaton states' members read while building a pattern's automaton (or
// all of a schema's), at most: a request's schema is compiled on its
// connection's thread, and this bounds it to a fraction of a second.
constexpr size_t kMaxWork = 16000000;

CharSet normalized(CharSet s) {
  std::sort(s.begin(), s.end());
  CharSet out;
  for (const Range &r : s) {
    if (!out.empty() && r.first <= out.back().second + 1)
      out.back().second = std::max(out.back().second, r.second);
    else
      out.push_back(r);
  }
  return out;
}

CharSet complement(const CharSet &s) {
  CharSet out;
  uint32_t from = 0;
  for (const Range &r : normalized(s)) {
    if (r.first > from) out.push_back({from, r.first - 1});
    from = r.second + 1;
  }
  if (from <= kMaxCodePoint) out.push_back({from, kMaxCodePoint});
  return out;
}

const CharSet kDigit = {{'0', '9'}};
const CharSet kWord = {{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}};
// ECMAScript's WhiteSpace and LineTerminator.
const CharSet kSpace = {{0x09, 0x0D}, {0x20, 0x20},     {0xA0, 0xA0},     {0x1680, 0x1680},
                        {0x2000, 0x200A}, {0x2028, 0x2029}, {0x202F, 0x202F}, {0x205F, 0x205F},
                        {0x3000, 0x3000}, {0xFEFF, 0xFEFF}};
const CharSet kLineTerminators = {{0x0A, 0x0A}, {0x0D, 0x0D}, {0x2028, 0x2029}};

struct Re {
  enum Kind { chars, seq, alt, repeat, begin, end } kind = seq;
  CharSet set;
  std::vector<Re> kids;
  int min = 0, max = -1; // repeat; -1: no limit
};

class Parser {
public:
  Parser(const std::string &p, std::string path) : p(p), path(std::move(path)) {}

  Re parse() {
    Re r = alternation(0);
    if (i < p.size()) fail("an unmatched ')'");
    return r;
  }

private:
  [[noreturn]] void fail(const std::string &what) const {
    throw InputError(path + ": " + what + " at offset " + std::to_string(i) + " of the pattern");
  }
  [[noreturn]] void unsupported(const std::string &what) const {
    throw InputError(path + ": " + what + " (at offset " + std::to_string(i) +
                     ") is not supported: kvplan holds generation to regular patterns "
                     "(literals, classes, groups, alternation, quantifiers, ^ and $ at the "
                     "ends); rewrite the pattern without it");
  }
  bool more() const { return i < p.size(); }
  bool at(char c) const { return i < p.size() && p[i] == c; }
  bool at(const char *s) const { return p.compare(i, std::strlen(s), s) == 0; }

  /// One code point of the pattern (UTF-8, as JSON strings are).
  uint32_t codePoint() {
    const unsigned char c = uint8_t(p[i++]);
    if (c < 0x80) return c;
    const int n = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : 1;
    uint32_t v = c & (0x3F >> n);
    for (int k = 0; k < n && i < p.size(); ++k) v = (v << 6) | (uint8_t(p[i++]) & 0x3F);
    return v;
  }
  uint32_t hex(int digits) {
    uint32_t v = 0;
    for (int k = 0; k < digits; ++k) {
      if (!more() || !std::isxdigit(uint8_t(p[i]))) fail("a malformed hexadecimal escape");
      const char c = char(std::tolower(uint8_t(p[i++])));
      v = v * 16 + uint32_t(c <= '9' ? c - '0' : c - 'a' + 10);
    }
    return v;
  }
  uint32_t unicodeEscape();
  CharSet escape(bool inClass);
  CharSet classAtom();
  CharSet bracket();
  Re alternation(int depth);
  Re sequence(int depth);
  Re atom(int depth);
  bool quantifier(int &min, int &max);
  bool number(int &n);

  const std::string &p;
  std::string path;
  size_t i = 0;
};

/// After "\u": four hex digits (a high surrogate's escape joined with the
/// low one's after it) or {hex digits}.
uint32_t Parser::unicodeEscape() {
  if (at('{')) {
    ++i;
    uint32_t v = 0;
    int digits = 0;
    while (more() && std::isxdigit(uint8_t(p[i])) && digits < 7) v = v * 16 + hex(1), ++digits;
    if (!at('}') || digits == 0 || v > kMaxCodePoint) fail("a malformed \\u{...} escape");
    ++i;
    return v;
  }
  uint32_t v = hex(4);
  if (v >= 0xD800 && v <= 0xDBFF && at("\\u")) {
    const size_t back = i;
    i += 2;
    const uint32_t low = hex(4);
    if (low >= 0xDC00 && low <= 0xDFFF) return 0x10000 + ((v - 0xD800) << 10) + (low - 0xDC00);
    i = back;
  }
  return v;
}

/// After '\': the set it stands for.
CharSet Parser::escape(bool inClass) {
  if (!more()) fail("a '\\' at the end");
  const char c = p[i++];
  auto one = [](uint32_t v) { return CharSet{{v, v}}; };
  switch (c) {
  case 'd': return kDigit;
  case 'D': return complement(kDigit);
  case 'w': return kWord;
  case 'W': return complement(kWord);
  case 's': return kSpace;
  case 'S': return complement(kSpace);
  case 'n': return one('\n');
  case 'r': return one('\r');
  case 't': return one('\t');
  case 'f': return one('\f');
  case 'v': return one('\v');
  case 'x': return one(hex(2));
  case 'u': return one(unicodeEscape());
  case 'b':
    if (inClass) return one('\b');
    break;
  case 'c':
    if (more() && std::isalpha(uint8_t(p[i]))) return one(uint32_t(p[i++]) % 32);
    --i; // "\c" not before a letter: a '\', then the 'c' (Annex B)
    return one('\\');
  case '0':
    if (more() && std::isdigit(uint8_t(p[i]))) break;
    return one(0);
  case 'B':
  case 'k':
  case 'p':
  case 'P':
    break;
  default:
    if (c >= '1' && c <= '9') break;
    --i;
    return one(codePoint()); // an escaped character is itself
  }
  i -= 2;
  const std::string name = c == 'b' || c == 'B' ? "a word boundary"
                           : c == 'k'           ? "a named backreference"
                           : c == 'p' || c == 'P' ? "a Unicode property escape"
                           : c == '0'             ? "an octal escape"
                                                  : "a backreference";
  unsupported(name + " \\" + std::string(1, c));
}

/// A character or an escape in a class.
CharSet Parser::classAtom() {
  if (!at('\\')) {
    const uint32_t v = codePoint();
    return {{v, v}};
  }
  ++i;
  return escape(true);
}

/// After '[': a class, to its ']'.
CharSet Parser::bracket() {
  const bool negated = at('^');
  if (negated) ++i;
  CharSet set;
  while (!at(']')) {
    if (!more()) fail("a '[' without its ']'");
    const CharSet lo = classAtom();
    if (at('-') && i + 1 < p.size() && p[i + 1] != ']') {
      ++i;
      const CharSet hi = classAtom();
      const bool single = lo.size() == 1 && lo[0].first == lo[0].second && hi.size() == 1 &&
                          hi[0].first == hi[0].second;
      if (single) {
        if (lo[0].first > hi[0].first) fail("a range out of order in a class");
        set.push_back({lo[0].first, hi[0].first});
        continue;
      }
      set.insert(set.end(), hi.begin(), hi.end()); // [\d-z]: the '-' is itself (Annex B)
      set.push_back({'-', '-'});
    }
    set.insert(set.end(), lo.begin(), lo.end());
  }
  ++i;
  return negated ? complement(set) : normalized(set);
}

bool Parser::number(int &n) {
  if (!more() || !std::isdigit(uint8_t(p[i]))) return false;
  long v = 0;
  while (more() && std::isdigit(uint8_t(p[i]))) v = std::min(v * 10 + (p[i++] - '0'), 1L << 30);
  n = int(v);
  return true;
}

/// A quantifier at i, if one is there (a '{' that starts none is itself).
bool Parser::quantifier(int &min, int &max) {
  const size_t back = i;
  if (at('*') || at('+') || at('?')) {
    min = p[i] == '+' ? 1 : 0;
    max = p[i] == '?' ? 1 : -1;
    ++i;
  } else if (at('{')) {
    ++i;
    if (!number(min)) return i = back, false;
    max = min;
    if (at(',')) {
      ++i;
      if (!number(max)) max = -1;
    }
    if (!at('}')) return i = back, false;
    ++i;
    if (max >= 0 && max < min) fail("a quantifier {n,m} with m less than n");
    if (min > kMaxRepeat || max > kMaxRepeat)
      fail("a quantifier over " + std::to_string(kMaxRepeat) + " (more than kvplan unrolls)");
  } else {
    return false;
  }
  if (at('?')) ++i; // lazy: the same texts match
  return true;
}

Re Parser::alternation(int depth) {
  if (depth > 100) fail("groups nested over 100 deep");
  Re first = sequence(depth);
  if (!at('|')) return first;
  Re r;
  r.kind = Re::alt;
  r.kids.push_back(std::move(first));
  while (at('|')) {
    ++i;
    r.kids.push_back(sequence(depth));
  }
  return r;
}

Re Parser::sequence(int depth) {
  Re r;
  r.kind = Re::seq;
  while (more() && !at('|') && !at(')')) {
    Re a = atom(depth);
    int min = 0, max = 0;
    if (quantifier(min, max)) {
      if (a.kind == Re::begin || a.kind == Re::end) fail("a quantifier on an anchor");
      Re q;
      q.kind = Re::repeat;
      q.min = min, q.max = max;
      q.kids.push_back(std::move(a));
      a = std::move(q);
    }
    r.kids.push_back(std::move(a));
  }
  return r;
}

Re Parser::atom(int depth) {
  Re r;
  r.kind = Re::chars;
  const size_t here = i;
  int min = 0, max = 0;
  if (quantifier(min, max)) {
    i = here;
    fail("a quantifier with nothing to repeat");
  }
  const char c = p[i];
  if (c == '(') {
    if (at("(?=") || at("(?!") || at("(?<=") || at("(?<!")) unsupported("a lookaround");
    ++i;
    if (at("?:")) {
      i += 2;
    } else if (at("?<")) {
      const size_t close = p.find('>', i);
      if (close == std::string::npos) fail("a named group without its '>'");
      i = close + 1;
    } else if (at('?')) {
      fail("an unknown group (?");
    }
    r = alternation(depth + 1);
    if (!at(')')) fail("a '(' without its ')'");
    ++i;
    return r;
  }
  if (c == '^' || c == '$') {
    ++i;
    r.kind = c == '^' ? Re::begin : Re::end;
    return r;
  }
  if (c == '[') return ++i, r.set = bracket(), r;
  if (c == '.') return ++i, r.set = complement(kLineTerminators), r;
  if (c == '\\') return ++i, r.set = escape(false), r;
  const uint32_t v = codePoint();
  r.set = {{v, v}};
  return r;
}

// ---------------------------------------------------------------------------
// The automaton
// ---------------------------------------------------------------------------

/// The UTF-8 byte-range sequences of code points lo to hi (surrogates left
/// out): each sequence's bytes in order, each a range.
void utf8Sequences(uint32_t lo, uint32_t hi, std::vector<std::vector<Range>> &out) {
  if (lo <= 0xDFFF && hi >= 0xD800) {
    if (lo < 0xD800) utf8Sequences(lo, 0xD7FF, out);
    if (hi > 0xDFFF) utf8Sequences(0xE000, hi, out);
    return;
  }
  for (uint32_t m : {0x7Fu, 0x7FFu, 0xFFFFu}) {
    if (lo <= m && hi > m) {
      utf8Sequences(lo, m, out);
      utf8Sequences(m + 1, hi, out);
      return;
    }
  }
  const int n = hi <= 0x7F ? 1 : hi <= 0x7FF ? 2 : hi <= 0xFFFF ? 3 : 4;
  for (int k = 1; k < n; ++k) {
    const uint32_t m = (1u << (6 * k)) - 1;
    if ((lo & ~m) == (hi & ~m)) continue;
    if ((lo & m) != 0) {
      utf8Sequences(lo, lo | m, out);
      utf8Sequences((lo | m) + 1, hi, out);
      return;
    }
    if ((hi & m) != m) {
      utf8Sequences(lo, (hi & ~m) - 1, out);
      utf8Sequences(hi & ~m, hi, out);
      return;
    }
  }
  auto encode = [n](uint32_t v) {
    std::vector<uint32_t> bytes(size_t(n), v);
    if (n == 1) return bytes;
    for (int k = n - 1; k > 0; --k) bytes[size_t(k)] = 0x80 | (v & 0x3F), v >>= 6;
    bytes[0] = (n == 2 ? 0xC0u : n == 3 ? 0xE0u : 0xF0u) | v;
    return bytes;
  };
  const std::vector<uint32_t> a = encode(lo), b = encode(hi);
  std::vector<Range> seq;
  for (int k = 0; k < n; ++k) seq.push_back({a[size_t(k)], b[size_t(k)]});
  out.push_back(std::move(seq));
}

/// Thompson's construction, built from the end: emit(r, next) is the state
/// where r starts, going on to `next` after it.
class Nfa {
public:
  struct State {
    bool edge = false; // a byte range to `out`; else epsilon moves to `eps`
    uint8_t lo = 0, hi = 0;
    int32_t out = -1;
    std::vector<int32_t> eps;
  };
  explicit Nfa(std::string path) : path(std::move(path)) { states.push_back({}); } // 0: match

  int32_t emit(const Re &r, int32_t next);
  /// The states a state reaches by epsilon moves that read a byte or match
  /// ({-1}: none), computed once.
  const std::vector<int32_t> &closure(int32_t from) {
    if (closures.size() < states.size()) {
      closures.resize(states.size());
      seen.resize(states.size(), -1);
    }
    std::vector<int32_t> &c = closures[size_t(from)];
    if (!c.empty()) return c;
    std::vector<int32_t> work = {from};
    seen[size_t(from)] = from;
    while (!work.empty()) {
      const int32_t s = work.back();
      work.pop_back();
      if (states[size_t(s)].edge || s == 0) c.push_back(s);
      for (int32_t e : states[size_t(s)].eps)
        if (seen[size_t(e)] != from) seen[size_t(e)] = from, work.push_back(e);
    }
    if (c.empty()) c.push_back(-1); // a dead end: nothing read, no match
    return c;
  }
  std::vector<State> states;

private:
  int32_t add(State s) {
    if (states.size() == kMaxNfaStates)
      throw InputError(path + ": the pattern is too large for kvplan to hold generation to "
                              "(its repeats unrolled); make it smaller");
    states.push_back(std::move(s));
    return int32_t(states.size() - 1);
  }
  int32_t split(std::vector<int32_t> to) {
    State s;
    s.eps = std::move(to);
    return add(std::move(s));
  }
  std::string path;
  std::vector<std::vector<int32_t>> closures;
  std::vector<int32_t> seen; // the closure each state was last reached in
};

/// A set of automaton states as a key (sorted, once each, no -1), and back.
ByteDfa::Key setKey(std::vector<int32_t> &set) {
  std::sort(set.begin(), set.end());
  set.erase(std::unique(set.begin(), set.end()), set.end());
  set.erase(std::remove(set.begin(), set.end(), -1), set.end());
  return ByteDfa::Key(reinterpret_cast<const char *>(set.data()), set.size() * sizeof(int32_t));
}
std::vector<int32_t> members(const ByteDfa::Key &k) {
  std::vector<int32_t> v(k.size() / sizeof(int32_t));
  if (!v.empty()) std::memcpy(v.data(), k.data(), k.size());
  return v;
}

int32_t Nfa::emit(const Re &r, int32_t next) {
  switch (r.kind) {
  case Re::chars: {
    std::vector<std::vector<Range>> seqs;
    for (const Range &range : r.set) utf8Sequences(range.first, range.second, seqs);
    std::vector<int32_t> starts;
    for (const auto &seq : seqs) {
      int32_t at = next;
      for (size_t k = seq.size(); k-- > 0;)
        at = add({true, uint8_t(seq[k].first), uint8_t(seq[k].second), at, {}});
      starts.push_back(at);
    }
    return split(std::move(starts)); // none: nothing matches
  }
  case Re::seq: {
    int32_t at = next;
    for (size_t k = r.kids.size(); k-- > 0;) at = emit(r.kids[k], at);
    return at;
  }
  case Re::alt: {
    std::vector<int32_t> starts;
    for (const Re &k : r.kids) starts.push_back(emit(k, next));
    return split(std::move(starts));
  }
  case Re::repeat: {
    int32_t at = next;
    if (r.max < 0) { // a loop: once more, or on
      const int32_t loop = split({});
      const int32_t body = emit(r.kids[0], loop);
      states[size_t(loop)].eps = {body, next};
      at = loop;
    } else {
      for (int k = r.min; k < r.max; ++k) at = split({emit(r.kids[0], at), next});
    }
    for (int k = 0; k < r.min; ++k) at = emit(r.kids[0], at);
    return at;
  }
  default:
    throw InputError(path + ": ^ and $ are supported only at the start and end of the pattern "
                            "(or of its top-level alternatives)");
  }
}

/// JSON can hold every byte in a string but the control characters other
/// than \b, \t, \n, \f and \r (those only as \u escapes, which kvplan does
/// not write in a patterned string).
bool writable(uint8_t b) {
  return b >= 0x20 || b == '\b' || b == '\t' || b == '\n' || b == '\f' || b == '\r';
}

/// Each top-level alternative, with what its anchors leave open: any text
/// before it unless it starts with ^, any after it unless it ends with $.
Re anchored(Re top) {
  std::vector<Re> alternatives;
  if (top.kind == Re::alt) alternatives = std::move(top.kids);
  else alternatives.push_back(std::move(top));
  Re any;
  any.kind = Re::repeat;
  any.kids.push_back(Re{Re::chars, {{0, kMaxCodePoint}}, {}, 0, -1});
  Re out;
  out.kind = Re::alt;
  for (Re &a : alternatives) {
    if (a.kind != Re::seq) a = Re{Re::seq, {}, {std::move(a)}, 0, -1};
    std::vector<Re> &k = a.kids;
    const bool begins = !k.empty() && k.front().kind == Re::begin;
    if (begins) k.erase(k.begin());
    const bool ends = !k.empty() && k.back().kind == Re::end;
    if (ends) k.pop_back();
    if (!begins) k.insert(k.begin(), any);
    if (!ends) k.push_back(any);
    out.kids.push_back(std::move(a));
  }
  return out;
}

} // namespace

ByteDfa ByteDfa::regex(const std::string &pattern, const std::string &path, size_t *spent) {
  Nfa nfa(path);
  const int32_t start = nfa.emit(anchored(Parser(pattern, path).parse()), 0);
  // A deterministic state is the sorted set of the states that read a byte
  // or match, as its key.
  const std::vector<Nfa::State> &st = nfa.states;
  auto close = [&](int32_t from) -> const std::vector<int32_t> & { return nfa.closure(from); };
  std::vector<int> cuts = {0x08, 0x0B, 0x0C, 0x0E, 0x20};
  for (const Nfa::State &s : st)
    if (s.edge) cuts.push_back(s.lo), cuts.push_back(s.hi + 1);
  std::vector<int32_t> first = close(start);
  // The state explored now: the states its members move to, by byte class
  // (explore asks for every class of one state in a row).
  const std::array<uint8_t, 256> classes = byteClasses(cuts);
  std::vector<std::vector<int32_t>> byClass(size_t(classes[255]) + 1);
  Key bucketed;
  bool any = false;
  size_t own = 0;
  size_t &work = spent ? *spent : own;
  auto spend = [&](size_t n) {
    if ((work += n) > kMaxWork)
      throw InputError(path + ": the pattern is too complex for kvplan to hold generation to "
                              "(its automaton, with the schema's others, takes too long to "
                              "build); anchor it with ^ and $, or make it simpler");
  };
  return explore(
      classes, setKey(first),
      [&](const Key &k, uint8_t b, Key &to) {
        if (!writable(b)) return false;
        if (!any || k != bucketed) {
          for (auto &v : byClass) v.clear();
          for (int32_t s : members(k)) {
            const Nfa::State &n = st[size_t(s)];
            if (!n.edge) continue;
            spend(size_t(classes[n.hi] - classes[n.lo]) + 1);
            for (size_t c = classes[n.lo]; c <= classes[n.hi]; ++c) byClass[c].push_back(n.out);
          }
          bucketed = k, any = true;
        }
        std::vector<int32_t> next;
        for (int32_t out : byClass[classes[b]]) {
          const std::vector<int32_t> &c = close(out);
          spend(c.size());
          next.insert(next.end(), c.begin(), c.end());
        }
        to = setKey(next);
        return !to.empty();
      },
      [&](const Key &k) {
        const std::vector<int32_t> m = members(k);
        return std::find(m.begin(), m.end(), 0) != m.end();
      },
      path, "the pattern");
}

} // namespace kvplan
