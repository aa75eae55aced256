// JSON mode (runtime/JsonGrammar.h): its recogniser, the schema {}'s
// (runtime/JsonSchema.h), against nlohmann's parser on written and generated
// documents and their one-byte edits, the mask a vocabulary puts on a row,
// and the sampler held to JSON by it.
#include "runtime/JsonGrammar.h"
#include "runtime/JsonSchema.h"
#include "runtime/Sampler.h"
#include "support/Error.h"
#include "tests/common/ByteReads.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <random>
#include <regex>
#include <string>
#include <vector>

using namespace kvplan;

namespace {

using kvplan::testing::Read;

/// How far `text` gets, and whether it then holds a whole object.
Read readJson(const std::string &text) {
  return kvplan::testing::readBytes(SchemaState(JsonSchema::anyObject()), text);
}

/// What the recogniser should say of `text`, from nlohmann's parser: a
/// whole object when it parses as one and ends at its closing brace (JSON
/// mode ends the text there), with no run of whitespace longer than the
/// recogniser allows.
/// No run of whitespace between tokens longer than the recogniser allows
/// or with two line feeds or two carriage returns, and an object first.
bool shapeAllowed(const std::string &text) {
  const size_t first = text.find_first_not_of(" \t\n\r");
  if (first != std::string::npos && text[first] != '{') return false;
  size_t run = 0, feeds = 0, returns = 0;
  bool inString = false, escaped = false;
  for (char c : text) {
    if (inString) {
      inString = escaped || c != '"';
      escaped = !escaped && c == '\\';
      continue;
    }
    inString = c == '"';
    const bool ws = c == ' ' || c == '\n' || c == '\t' || c == '\r';
    run = ws ? run + 1 : 0;
    feeds = ws ? feeds + (c == '\n') : 0;
    returns = ws ? returns + (c == '\r') : 0;
    if (run > size_t(SchemaState::kMaxSpaces) || feeds > 1 || returns > 1) return false;
  }
  return true;
}

/// `text` with every exponent one digit long: JSON's grammar takes any
/// exponent, nlohmann's parser refuses one past a double's range.
std::string shortExponents(const std::string &text) {
  static const std::regex exponent("([0-9][eE][+-]?)[0-9]+");
  return std::regex_replace(text, exponent, "$011");
}

bool wholeObject(const std::string &raw) {
  const std::string text = shortExponents(raw);
  return !text.empty() && text.back() == '}' && shapeAllowed(text) &&
         nlohmann::json::accept(text) && nlohmann::json::parse(text).is_object() &&
         kvplan::testing::namesOnce(text);
}

/// Whether nlohmann's parser, reading `text` whole, runs out of input
/// inside an object with nothing wrong before (or reads it whole).
bool openEnded(const std::string &text) {
  if (nlohmann::json::accept(text)) return wholeObject(text);
  try {
    const nlohmann::json parsed = nlohmann::json::parse(text);
    static_cast<void>(parsed);
  } catch (const nlohmann::json::parse_error &e) {
    return e.byte == text.size() + 1 &&
           std::string(e.what()).find("unexpected end of input") != std::string::npos;
  }
  return false;
}

/// Whether some whole object starts with `text`, by nlohmann's parser:
/// `text` runs out of input in an object, or does once its last token is
/// finished (a number, a literal, a string, an escape, a UTF-8 sequence:
/// the parser's lexer reports a token cut short as an error of its own).
bool validPrefix(const std::string &raw) {
  const std::string text = shortExponents(raw);
  if (!shapeAllowed(text) || !kvplan::testing::namesOnce(text)) return false;
  if (openEnded(text)) return true;
  for (const char *finish : {"0", "\"", "n\"", "000\"", "0000\"", "00\"", "0\"", "ue", "rue",
                             "e", "lse", "alse", "se", "ll", "ull", "l", "\x80\"",
                             "\x80\x80\"", "\x80\x80\x80\"", "\xa0\x80\"", "\x90\x80\x80\""})
    if (openEnded(text + finish)) return true;
  return false;
}

/// A random JSON value, nested at most `depth` deep.
nlohmann::json randomValue(std::mt19937 &rng, int depth) {
  const int kind = int(rng() % (depth > 0 ? 8 : 6));
  switch (kind) {
  case 0: return nullptr;
  case 1: return rng() % 2 == 0;
  case 2: return int64_t(rng() % 200000) - 100000;
  case 3: return std::ldexp(double(rng() % 100000) - 50000, -int(rng() % 20));
  case 4: return 1e30 * double(rng() % 7 + 1);
  case 5: {
    std::string s;
    const char *pieces[] = {"a", "b c", "\"", "\\", "/", "\n", "\t", "\x01", "\xc3\xa9", "{}", "1"};
    for (int i = int(rng() % 5); i > 0; --i) s += pieces[rng() % 11];
    return s;
  }
  case 6: {
    nlohmann::json a = nlohmann::json::array();
    for (int i = int(rng() % 4); i > 0; --i) a.push_back(randomValue(rng, depth - 1));
    return a;
  }
  default: {
    nlohmann::json o = nlohmann::json::object();
    for (int i = int(rng() % 4); i > 0; --i)
      o["k" + std::to_string(rng() % 50)] = randomValue(rng, depth - 1);
    return o;
  }
  }
}

/// A random object, written compactly or indented by 1 to 4.
std::string randomDocument(std::mt19937 &rng) {
  nlohmann::json o = nlohmann::json::object();
  for (int i = int(rng() % 5); i > 0; --i) o["f" + std::to_string(i)] = randomValue(rng, 3);
  const int indent = int(rng() % 5) - 1;
  return o.dump(indent == 0 ? -1 : indent);
}

} // namespace

TEST(JsonGrammar, WrittenDocumentsAreReadAsTheParserReadsThem) {
  const std::vector<std::string> whole = {
      "{}", " {\"a\":1}", "{\"a\": [1, -2.5e+3, 0, 0.25, 1E-2, true, false, null]}",
      "{\"k\":{\"n\":{\"m\":[[],[{}]]}}}", "{\"s\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\"}",
      "{\n  \"a\" : \"x\" ,\n  \"b\":{}\n}", "{\"\xc3\xa9\":\"\xe2\x82\xac\"}",
      "{\"a\":\"\\ud83d\\ude00 \\uD800\\uDFFF \\uD7FF \\uE000\"}"}; // surrogate pairs
  for (const std::string &t : whole) {
    SCOPED_TRACE(t);
    ASSERT_TRUE(wholeObject(t)) << "the test's own example";
    const Read r = readJson(t);
    EXPECT_EQ(r.taken, t.size());
    EXPECT_TRUE(r.complete);
    // No proper prefix is whole.
    for (size_t n = 1; n < t.size(); ++n) EXPECT_FALSE(readJson(t.substr(0, n)).complete) << n;
  }
  // Refused at the byte given: not objects, numbers JSON does not write,
  // bad escapes, control characters in strings, trailing commas, bare
  // words, anything after the object, too much whitespace.
  const std::vector<std::pair<std::string, size_t>> refused = {
      {"[1]", 0}, {"\"a\"", 0}, {"{\"a\":01}", 6}, {"{\"a\":-}", 6}, {"{\"a\":1.}", 7},
      {"{\"a\":1e}", 7}, {"{\"a\":.5}", 5}, {"{\"a\":+1}", 5}, {"{\"a\":\"\\x\"}", 7},
      {"{\"a\":\"\\u12g4\"}", 10}, {"{\"a\":\"\x01\"}", 6}, {"{\"a\":1,}", 7}, {"{a:1}", 1},
      {"{\"a\":tru}", 8}, {"{\"a\":nul1}", 8}, {"{\"a\" 1}", 5}, {"{} ", 2}, {"{}{}", 2},
      {"{\"a\":[1,]}", 8}, {"{\"a\":[1 2]}", 8}, {"{\"a\":1]", 6},
      {std::string(SchemaState::kMaxSpaces + 1, ' ') + "{}", size_t(SchemaState::kMaxSpaces)},
      {"{\n\n}", 2}, {"{\"a\":1,\r\n \r\n}", 10},
      // Surrogates only in pairs: a high one, then the escape of a low one.
      {"{\"a\":\"\\ud83d\"}", 12}, {"{\"a\":\"\\ude00\"}", 9}, {"{\"a\":\"\\ud83dx\"}", 12},
      {"{\"a\":\"\\ud83d\\u0041\"}", 14}, {"{\"a\":\"\\ud83d\\ud83d\"}", 15},
      {"{\"a\":\"\\ud83d\\n\"}", 13}};
  for (const auto &[t, at] : refused) {
    SCOPED_TRACE(t);
    EXPECT_FALSE(wholeObject(t)) << "the test's own example";
    EXPECT_EQ(readJson(t).taken, at);
  }
}

TEST(JsonGrammar, GeneratedDocumentsAndTheirEditsAgreeWithTheParser) {
  // Every generated object is read whole; each one-byte deletion, insertion
  // or replacement is read whole exactly when nlohmann's parser takes it
  // as an object ending at its brace.
  std::mt19937 rng(2026);
  const std::string alphabet = "{}[]\":,-+.eE0129tfnulrs \n\\a";
  int edits = 0, stillWhole = 0;
  for (int doc = 0; doc < 300; ++doc) {
    const std::string t = randomDocument(rng);
    SCOPED_TRACE(t);
    ASSERT_TRUE(wholeObject(t));
    const Read r = readJson(t);
    ASSERT_EQ(r.taken, t.size());
    ASSERT_TRUE(r.complete);
    for (int e = 0; e < 20; ++e) {
      std::string m = t;
      const size_t at = rng() % m.size();
      const char c = alphabet[rng() % alphabet.size()];
      switch (rng() % 3) {
      case 0: m.erase(at, 1); break;
      case 1: m.insert(m.begin() + long(at), c); break;
      default: m[at] = c; break;
      }
      const Read got = readJson(m);
      const bool whole = got.taken == m.size() && got.complete;
      EXPECT_EQ(whole, wholeObject(m)) << m;
      ++edits;
      stillWhole += whole;
    }
  }
  // Both outcomes were tried many times.
  EXPECT_GT(stillWhole, 200);
  EXPECT_GT(edits - stillWhole, 1000);
}

namespace {

/// Every single byte as a token (ids 0 to 255), then some longer pieces and
/// a control token with no text.
std::vector<std::string> testVocabulary() {
  std::vector<std::string> v;
  for (int c = 0; c < 256; ++c) v.push_back(std::string(1, char(c)));
  for (const char *piece : {"{\"", "\":", "\",", "\":\"", "true", "false", "null", "  ", "\n  ",
                            "}}", "]}", "12", ".5", "e-", "ab", "\\u", "00e9", " \"", "}\n", "{}"})
    v.push_back(piece);
  v.push_back(""); // a control token
  return v;
}

} // namespace

TEST(JsonGrammar, TheMaskLeavesExactlyTheTokensThatCanContinue) {
  const std::vector<std::string> pieces = testVocabulary();
  const JsonVocabulary vocab(pieces);
  const int64_t n = vocab.size();
  // Texts in every kind of state; a token is allowed exactly when
  // nlohmann's parser takes the text with it as the start of an object.
  const std::vector<std::string> cases = {
      "", "{", "{\"a\"", "{\"a\":", "{\"a\":1", "{\"a\":0", "{\"a\":-", "{\"a\":1.5e",
      "{\"a\":\"x", "{\"a\":[", "{\"a\":[1", "{\"a\":tr", "{\"a\":\"\\", "{\"a\":\"\\u0",
      "{\"a\":\"\xe2\x82", "{\"a\":\"\xf0", "{\"a\":{\"b\":[1,{}]", "{\"a\":{}, ", "{} "};
  for (const std::string &text : cases) {
    SCOPED_TRACE(text);
    SchemaState s(JsonSchema::anyObject()); // JSON mode's
    bool ok = true;
    for (char c : text) ok = ok && s.push(uint8_t(c));
    ASSERT_EQ(ok, validPrefix(text)) << "the case itself";
    if (!ok) continue;
    std::vector<float> row(size_t(n + 3), 1.0f); // 3 padding rows past the vocabulary
    vocab.mask(s, row.data(), int64_t(row.size()));
    int allowed = 0;
    for (int64_t id = 0; id < n; ++id) {
      const std::string &piece = pieces[size_t(id)];
      const bool want = !piece.empty() && validPrefix(text + piece);
      EXPECT_EQ(std::isfinite(row[size_t(id)]), want) << "token '" << piece << "'";
      allowed += want;
    }
    EXPECT_GT(allowed, 0) << "a state with no way on";
    for (int64_t id = n; id < n + 3; ++id) EXPECT_TRUE(std::isinf(row[size_t(id)]));
  }
}

TEST(JsonGrammar, AVocabularyThatCannotSpellJsonIsRefused) {
  std::vector<std::string> v = testVocabulary();
  v[size_t('}')] = "x";
  try {
    JsonVocabulary bad(v);
    FAIL() << "accepted";
  } catch (const InputError &e) {
    EXPECT_NE(std::string(e.what()).find("none for '}' alone"), std::string::npos) << e.what();
  }
}

TEST(JsonGrammar, TheSamplerDrawsOnlyJson) {
  // Random rows of logits, sampled at temperature 1 and greedily: once the
  // sampler says the object is whole, nlohmann parses it as an object (and
  // a token the mask refused would have thrown). The closing
  // characters are favoured (a bias, as a request may give) so that the
  // objects close within the draws.
  auto vocab = std::make_shared<const JsonVocabulary>(testVocabulary());
  const std::vector<std::string> pieces = testVocabulary();
  std::mt19937 rng(7);
  std::normal_distribution<float> logit(0.0f, 2.0f);
  int closed = 0;
  for (int run = 0; run < 40; ++run) {
    SamplingOptions o;
    o.temperature = run % 4 == 0 ? 0.0 : 1.0;
    o.seed = uint64_t(run);
    o.json = vocab;
    o.logitBias = {{'}', 6.0}, {']', 6.0}, {'"', 4.0}};
    Sampler s(o);
    std::string text;
    std::vector<float> row(pieces.size());
    for (int step = 0; step < 400 && !s.jsonComplete(); ++step) {
      for (float &l : row) l = logit(rng);
      text += pieces[size_t(s.sample(row.data(), int64_t(row.size())))];
    }
    if (!s.jsonComplete()) continue;
    ++closed;
    EXPECT_TRUE(wholeObject(text)) << text;
  }
  EXPECT_GE(closed, 30);
}
