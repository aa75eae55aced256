// The automata of structured output (runtime/ByteDfa.h): JSON Schema's
// "pattern" against the standard library's ECMAScript regex (std::regex,
// search semantics, on ASCII texts) and against written Unicode cases; the
// refusals by name; numbers held to bounds and multipleOf against exact
// arithmetic on scaled integers; and no state that cannot be finished.
#include "runtime/ByteDfa.h"
#include "support/Error.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <regex>
#include <string>
#include <vector>

using namespace kvplan;

namespace {

/// Whether the automaton accepts `text` whole; `stuck` the bytes it took.
bool matches(const ByteDfa &d, const std::string &text, size_t *taken = nullptr) {
  int32_t s = d.start();
  size_t n = 0;
  for (char c : text) {
    s = d.next(s, uint8_t(c));
    if (s == ByteDfa::kNone) break;
    ++n;
  }
  if (taken) *taken = n;
  return s != ByteDfa::kNone && d.accepts(s);
}

/// Every state reached by some bytes can still accept (random walks).
void expectNoDeadEnd(const ByteDfa &d, const std::string &what, std::mt19937 &rng) {
  for (int walk = 0; walk < 30; ++walk) {
    int32_t s = d.start();
    for (int step = 0; step < 60; ++step) {
      std::vector<uint8_t> next;
      for (int b = 0; b < 256; ++b)
        if (d.next(s, uint8_t(b)) != ByteDfa::kNone) next.push_back(uint8_t(b));
      ASSERT_TRUE(d.accepts(s) || !next.empty()) << what << ": a dead end";
      if (next.empty()) break;
      s = d.next(s, next[rng() % next.size()]);
    }
  }
}

std::string dfaRefusal(const std::string &pattern) {
  try {
    ByteDfa::regex(pattern, "p");
  } catch (const InputError &e) {
    return e.what();
  }
  return "";
}

} // namespace

TEST(Regex, MatchesAsEcmaScriptSearchDoes) {
  // Texts over a small alphabet, every pattern against std::regex_search.
  const std::vector<std::string> patterns = {
      "abc",        "^abc$",      "^a",          "c$",          "^(ab|c)+$",    "a|^b|c$",
      "^a*b?c+$",   "^a{2}$",     "^a{1,3}b$",   "^a{2,}$",     "^(?:ab){0,2}c$", "^[a-c]+$",
      "^[^ab]*$",   "^\\d+$",     "^\\D\\d$",    "^\\w+@\\w+$", "^\\W$",        "\\s",
      "^\\S+$",     "^.$",        "^a.c$",       "^[.]$",       "^\\.$",        "^a+?$",
      "^(a|ab)(c|bcd)$", "^x*$",  "^$",          "^[-a]$",      "^[a-]$",       "^\\x61$",
      "^\\u0062$",  "^[\\d.]+$",  "^a{1}?$",      "^[\\w-]{2,4}$",
      "^\\(a\\)$",  "^[\\]a]$",   "^(|a)b$",     "^\\$\\^$",    "^\\n$",        "^[\\s]+$",
      "^\\t\\r$",   "^[\\b]$",    "b{0}c",       "^(a*)*$"};
  const std::string alphabet = "abc1 .@-(){}$^x\n\t\r";
  std::mt19937 rng(7);
  std::vector<std::string> texts = {"", "abc", "ab", "c", "aa", "aaa", "aab", "a1@b2", "1", "a1",
                                    "abcd", "acbcd", "x", "a.c", ".", "(a)", "$^", "\n", "\t\r",
                                    "a{,2}", "-", "b", "\b"};
  for (int n = 0; n < 400; ++n) {
    std::string t;
    for (size_t k = rng() % 7; k > 0; --k) t += alphabet[rng() % alphabet.size()];
    texts.push_back(t);
  }
  for (const std::string &p : patterns) {
    const ByteDfa d = ByteDfa::regex(p, "p");
    const std::regex oracle(p, std::regex::ECMAScript);
    for (const std::string &t : texts)
      EXPECT_EQ(matches(d, t), std::regex_search(t, oracle)) << "/" << p << "/ on \"" << t << "\"";
    expectNoDeadEnd(d, p, rng);
  }
}

TEST(Regex, ReadsCodePointsAsUtf8) {
  struct Case {
    const char *pattern;
    std::vector<std::string> yes, no;
  };
  const Case cases[] = {
      {"^.$", {"a", "é", "日", "😀"}, {"", "ab", "\n", "\r", "\u2028", "é!"}},
      {"^[é-ü]+$", {"é", "üé", "ö"}, {"e", "ÿ", "é1"}},
      {"^[^a]$", {"b", "é", "日", "😀", "\n"}, {"a", "", "bb"}},
      {"^\\S\\s\\S$", {"日 本", "a\u3000b", "😀\u00a0é"}, {"a  b", "ab"}},
      {"^\\uD83D\\uDE00$", {"😀"}, {"\xed\xa0\xbd", "?"}},
      {"^\\u{1F600}|日$", {"😀x", "x日"}, {"x😀", "日x"}},
      {"^[😀-😂]{2}$", {"😀😂", "😁😁"}, {"😃😀", "😀"}},
      {"^\\w+$", {"abc_9"}, {"é", "a-b"}},
      {"^(日本|中国)語?$", {"日本", "中国語"}, {"日", "日本語語"}},
  };
  for (const Case &c : cases) {
    const ByteDfa d = ByteDfa::regex(c.pattern, "p");
    for (const std::string &t : c.yes) EXPECT_TRUE(matches(d, t)) << c.pattern << " " << t;
    for (const std::string &t : c.no) EXPECT_FALSE(matches(d, t)) << c.pattern << " " << t;
  }
  // No byte past a character the pattern cannot take: a lead byte whose
  // characters are all outside the class is refused at once.
  size_t taken = 0;
  EXPECT_FALSE(matches(ByteDfa::regex("^[é-ü]$", "p"), "日", &taken));
  EXPECT_EQ(taken, 0u);
  // Control characters JSON holds only as \u escapes are never taken.
  const ByteDfa any = ByteDfa::regex("^[\\s\\S]*$", "p");
  EXPECT_TRUE(matches(any, "a\b\t\n\f\r\x7f"));
  EXPECT_FALSE(matches(any, std::string("\x01", 1)));
  EXPECT_FALSE(matches(any, std::string("\0", 1)));
  EXPECT_FALSE(matches(any, "\x0b"));
  // A pattern only such characters match accepts nothing.
  EXPECT_TRUE(ByteDfa::regex("^\\x01$", "p").empty());
  EXPECT_TRUE(ByteDfa::regex("^[^\\s\\S]$", "p").empty());
}

TEST(Regex, RefusesWhatIsNotRegularByName) {
  struct Case {
    const char *pattern, *says;
  };
  const Case cases[] = {
      {"a(?=b)", "a lookaround (at offset 1) is not supported"},
      {"(?<!a)b", "a lookaround"},
      {"\\bword", "a word boundary \\b"},
      {"(a)\\1", "a backreference \\1"},
      {"(?<x>a)\\k<x>", "a named backreference"},
      {"\\p{L}", "a Unicode property escape \\p"},
      {"(^a|b)", "^ and $ are supported only at the start and end"},
      {"a$b", "^ and $ are supported only"},
      {"a{1001}", "a quantifier over 1000"},
      {"a{3,2}", "a quantifier {n,m} with m less than n"},
      {"*a", "a quantifier with nothing to repeat at offset 0"},
      {"a**", "a quantifier with nothing to repeat"},
      {"(a", "a '(' without its ')'"},
      {"a)", "an unmatched ')'"},
      {"[a", "a '[' without its ']'"},
      {"[z-a]", "a range out of order"},
      {"a\\", "a '\\' at the end"},
      {"\\x4", "a malformed hexadecimal escape"},
      {"(?i)a", "an unknown group"},
      {"^^a", "^ and $ are supported only"},
      {"((((a{30}){30}){30}){30})", "the pattern is too large"},
      {"a.{15}b", "automaton states"},
      {"\\S{999}", "the pattern is too complex for kvplan to hold generation to"},
  };
  for (const Case &c : cases) {
    const std::string got = dfaRefusal(c.pattern);
    EXPECT_EQ(got.rfind("p: ", 0), 0u) << c.pattern << " -> " << got;
    EXPECT_NE(got.find(c.says), std::string::npos) << c.pattern << " -> " << got;
  }
  // Annex B's literal braces and brackets read as themselves.
  EXPECT_EQ(dfaRefusal("a{,2}]}"), "");
  EXPECT_EQ(dfaRefusal("x{a}"), "");
  // The budget is shared by the patterns that are given one counter.
  size_t spent = 0;
  EXPECT_NO_THROW(ByteDfa::regex("^[a-z]{1,40}@x$", "p", &spent));
  EXPECT_GT(spent, 0u);
  spent = 16000000 - 10;
  EXPECT_THROW(ByteDfa::regex("^[a-z]{1,40}@x$", "p", &spent), InputError);
  // A named group is a group.
  const ByteDfa named = ByteDfa::regex("^(?<n>a|b)c$", "p");
  EXPECT_TRUE(matches(named, "bc"));
  EXPECT_FALSE(matches(named, "c"));
}

TEST(Regex, LengthAndIntersectionKeepOnlyWhatBothAllow) {
  std::mt19937 rng(3);
  const ByteDfa word = ByteDfa::regex("^[a-z日]+$", "p");
  const ByteDfa sized = word.withLength(2, 3, "p");
  for (const std::string t : {"ab", "a日", "日日日", "abc"})
    EXPECT_TRUE(matches(sized, t)) << t;
  for (const std::string t : {"a", "日", "abcd", "日日日日", "a1"})
    EXPECT_FALSE(matches(sized, t)) << t;
  expectNoDeadEnd(sized, "sized", rng);
  const ByteDfa atLeast = word.withLength(3, -1, "p");
  EXPECT_TRUE(matches(atLeast, "abcdefghij"));
  EXPECT_FALSE(matches(atLeast, "ab"));
  // minLength counts code points, maxLength UTF-16 units (two past U+FFFF).
  const ByteDfa units = ByteDfa::regex("^.+$", "p").withLength(2, 3, "p");
  for (const std::string t : {"ab", "😀a", "a😀", "日本語"})
    EXPECT_TRUE(matches(units, t)) << t;
  for (const std::string t : {"😀", "😀😀", "abcd", "a"})
    EXPECT_FALSE(matches(units, t)) << t;
  // Once a fourth character would be too many, a pattern needing it is empty.
  EXPECT_TRUE(ByteDfa::regex("^a{4}$", "p").withLength(0, 3, "p").empty());
  const ByteDfa both = ByteDfa::regex("^\\d+$", "p").intersect(ByteDfa::regex("7", "p"), "p");
  EXPECT_TRUE(matches(both, "170"));
  EXPECT_FALSE(matches(both, "10"));
  EXPECT_FALSE(matches(both, "7a"));
  expectNoDeadEnd(both, "both", rng);
}

TEST(Regex, DifferenceCountsAndTextsOfAMapsNames) {
  // minus: what one accepts and none of the others does.
  std::mt19937 rng(4);
  const ByteDfa word = ByteDfa::regex("^[a-z]+$", "p");
  const ByteDfa a = ByteDfa::regex("^a", "p"), z = ByteDfa::regex("z$", "p");
  const ByteDfa rest = word.minus({&a, &z}, "p");
  for (const std::string t : {"b", "ba", "bzb", "xyz1"})
    EXPECT_EQ(matches(rest, t), t != "xyz1") << t;
  for (const std::string t : {"a", "ab", "bz", "z", ""})
    EXPECT_FALSE(matches(rest, t)) << t;
  expectNoDeadEnd(rest, "rest", rng);
  EXPECT_TRUE(ByteDfa::regex("^ab$", "p").minus({&a}, "p").empty());
  // textCounts: the texts from each state, counted by hand; a cycle, or
  // more than `most`, is `most`.
  const ByteDfa few = ByteDfa::regex("^(a|ab|abc|b)$", "p");
  EXPECT_EQ(few.textCounts(1000)[size_t(few.start())], 4u);
  const int32_t afterA = few.next(few.start(), 'a');
  EXPECT_EQ(few.textCounts(1000)[size_t(afterA)], 3u); // "", "b", "bc"
  EXPECT_EQ(few.textCounts(3)[size_t(few.start())], 3u);
  const ByteDfa two = ByteDfa::regex("^[a-c]{2}$", "p");
  EXPECT_EQ(two.textCounts(1000)[size_t(two.start())], 9u);
  const ByteDfa many = ByteDfa::regex("^a+$", "p");
  EXPECT_EQ(many.textCounts(1000)[size_t(many.start())], 1000u);
  // One character: ECMAScript's "." is any but a line terminator (\n, \r,
  // U+2028, U+2029), and a JSON string holds no control character but \b,
  // \t, \n, \f and \r: the code points less the surrogates and the 32
  // control characters, less U+2028 and U+2029, and \b, \t and \f.
  const ByteDfa any = ByteDfa::regex("^.$", "p");
  EXPECT_EQ(any.textCounts(uint64_t(1) << 40)[size_t(any.start())],
            uint64_t(0x110000 - 0x800 - 0x20 - 2 + 3));
  // textsFrom: all of a finite language, in byte order.
  EXPECT_EQ(few.textsFrom(few.start(), 10), (std::vector<std::string>{"a", "ab", "abc", "b"}));
  EXPECT_EQ(few.textsFrom(afterA, 2), (std::vector<std::string>{"", "b"}));
  EXPECT_EQ(two.textsFrom(two.start(), 100).size(), 9u);
}

namespace {

constexpr int kScale = 1000000; // the oracle's numbers: value * 10^6, exactly

/// The scaled value of a JSON number without an exponent (at most six
/// decimals), or false when the text is no such number.
bool scaled(const std::string &t, long long &v) {
  static const std::regex json("-?(0|[1-9][0-9]*)(\\.[0-9]+)?");
  if (!std::regex_match(t, json)) return false;
  const size_t dot = t.find('.');
  const std::string whole = t.substr(0, dot);
  std::string frac = dot == std::string::npos ? "" : t.substr(dot + 1);
  while (frac.size() > 6 && frac.back() == '0') frac.pop_back();
  EXPECT_LE(frac.size(), 6u) << t; // the texts here have fewer decimals
  frac.resize(6, '0');
  const bool negative = whole[0] == '-';
  v = std::stoll(negative ? whole.substr(1) : whole) * kScale + std::stoll(frac);
  if (negative) v = -v;
  return true;
}

} // namespace

TEST(NumberDfa, AcceptsExactlyTheNumbersWithinItsBounds) {
  struct Bounds {
    const char *min, *max, *multiple;
    bool exMin, exMax, integer;
  };
  const Bounds all[] = {
      {"0", "100", "", false, false, true},     {"-5", "5", "", true, true, true},
      {"1", "", "", false, false, false},       {"", "-2.5", "", false, true, false},
      {"0.5", "0.75", "", false, false, false}, {"-1", "1", "0.25", false, false, false},
      {"", "", "3", false, false, true},        {"10", "", "7", true, false, true},
      {"-0.001", "0.001", "", false, false, false}, {"0", "1", "", true, true, false},
      {"1e2", "1.5e2", "", false, false, false}, {"-3", "-3", "", false, false, false},
      {"", "", "0.1", false, false, false},     {"2", "5", "0.5", false, false, true},
      {"1.25", "", "", false, false, false}};
  std::vector<std::string> texts = {"0", "-0", "-0.0", "1", "5", "-5", "100", "101", "99.5",
                                    "0.5", "0.75", "0.7500", "0.751", "-2.5", "-2.50001",
                                    "0.25", "-0.75", "21", "14", "7", "0.001", "-0.001",
                                    "0.0011", "1.0", "150", "150.0", "150.01", "-3", "-3.000",
                                    "0.1", "0.30", "0.35", "2.5", "3", "00", "01", "1.", "-",
                                    "1.2", "1.3",
                                    ".5", "+1", "1e2", "3.5", "-1.25", "1000000"};
  std::mt19937 rng(9);
  for (int n = 0; n < 300; ++n) {
    std::string t = rng() % 3 ? "" : "-";
    t += std::to_string(rng() % (n < 150 ? 20 : 2000));
    if (rng() % 2) t += "." + std::to_string(rng() % 1000);
    texts.push_back(t);
  }
  for (const Bounds &b : all) {
    ByteDfa::NumberBounds nb;
    nb.minimum = b.min, nb.maximum = b.max, nb.multipleOf = b.multiple;
    nb.exclusiveMinimum = b.exMin, nb.exclusiveMaximum = b.exMax, nb.integer = b.integer;
    const ByteDfa d = ByteDfa::number(nb, "n");
    long long lo = 0, hi = 0, m = 0;
    auto bound = [](const char *text, long long &v) {
      const std::string s = text;
      if (s.empty()) return false;
      const double x = std::stod(s); // the written bounds have few digits: exact when scaled
      v = std::llround(x * kScale);
      return true;
    };
    const bool hasLo = bound(b.min, lo), hasHi = bound(b.max, hi), hasM = bound(b.multiple, m);
    for (const std::string &t : texts) {
      long long v = 0;
      bool ok = scaled(t, v) && !(b.integer && t.find('.') != std::string::npos);
      if (ok && hasLo) ok = b.exMin ? v > lo : v >= lo;
      if (ok && hasHi) ok = b.exMax ? v < hi : v <= hi;
      if (ok && hasM) ok = v % m == 0;
      EXPECT_EQ(matches(d, t), ok) << t << " in [" << b.min << ", " << b.max << "] step "
                                   << b.multiple << (b.integer ? " (integer)" : "");
    }
    expectNoDeadEnd(d, std::string(b.min) + ".." + b.max, rng);
  }
}

TEST(NumberDfa, RefusesBoundsNoNumberMeets) {
  auto refuse = [](ByteDfa::NumberBounds b) {
    try {
      ByteDfa::number(b, "n");
    } catch (const InputError &e) {
      return std::string(e.what());
    }
    return std::string();
  };
  ByteDfa::NumberBounds b;
  b.minimum = "5", b.maximum = "3";
  EXPECT_NE(refuse(b).find("n: no number meets"), std::string::npos) << refuse(b);
  b.minimum = "0.5", b.maximum = "0.9", b.integer = true;
  EXPECT_NE(refuse(b).find("no integer meets"), std::string::npos) << refuse(b);
  b = {};
  b.minimum = "1", b.maximum = "1", b.exclusiveMaximum = true;
  EXPECT_NE(refuse(b).find("no number meets"), std::string::npos);
  b = {};
  b.multipleOf = "0";
  EXPECT_NE(refuse(b).find("n.multipleOf: must be greater than 0"), std::string::npos);
  b.multipleOf = "1234567";
  EXPECT_NE(refuse(b).find("more significant digits"), std::string::npos);
  b = {};
  b.minimum = "2", b.maximum = "3", b.multipleOf = "5";
  EXPECT_NE(refuse(b).find("no number meets"), std::string::npos);
}
