// Tokenizer tests: each format against its reference (sentencepiece for the
// score-merge vocabularies, hand-worked BPE for tokenizer.json), streaming
// decode, serialization round trips, and the errors a bad file gives.
#include "spec/ModelSpec.h"
#include "formats/Tokenizer.h"
#include "tests/common/CheckpointWriters.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sentencepiece_processor.h>
#include <utf8proc.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <tuple>
#include <unistd.h>
#include <vector>

using namespace kvplan;
using Ids = std::vector<int32_t>;
namespace fs = std::filesystem;

namespace {

std::string modelPath(const std::string &rel) { return std::string(KVPLAN_SHARED_DIR) + "/models/" + rel; }

#define REQUIRE_MODEL_FILE(path)                                                                  \
  do {                                                                                            \
    if (!fs::exists(path))                                                                        \
      GTEST_SKIP() << "test data " << (path)                                                      \
                   << " is absent (set KVPLAN_SHARED_DIR to the folder holding models/)";         \
  } while (0)

// Text without runs of spaces or leading/trailing whitespace: tok512.model's
// normalizer (remove_extra_whitespaces, the sentencepiece default it was
// trained with) would change those, while llama2.c and llama.cpp keep them.
const std::vector<std::string> kPlainSentences = {
    "Once upon a time, there was a little girl named Lily.",
    "She loved to play outside in the park.",
    "One day, she saw a big, red ball!",
    "\"Can I play too?\" asked Tom; Lily said: yes.",
    "They counted 1, 2, 3... up to 100 and 2024.",
    "The café served crème brûlée.",
    "Happy face 🙂 and a rocket 🚀 here.",
    "Naïve façade, jalapeño, Zoë.",
    "日本語のテキスト",
    "It's the cat's toy, isn't it?",
    "x",
    "A",
};

// Whitespace a sentencepiece model without remove_extra_whitespaces keeps.
const std::vector<std::string> kSpacedSentences = {
    "two  spaces and   three",
    " leading space",
    "trailing space ",
    "line one\nline two\n\nend",
    "tab\tseparated\tvalues",
};

std::vector<std::string> allSentences() {
  std::vector<std::string> all = kPlainSentences;
  all.insert(all.end(), kSpacedSentences.begin(), kSpacedSentences.end());
  return all;
}

/// A fresh folder for the files one test writes, removed when it ends.
class ScratchDir {
public:
  ScratchDir()
      : dir(fs::path(::testing::TempDir()) /
            ("kvplan-tokenizer-" + std::to_string(::getpid()) + "-" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name())) {
    fs::create_directories(dir);
  }
  ~ScratchDir() {
    std::error_code ignored;
    fs::remove_all(dir, ignored);
  }
  fs::path operator/(const std::string &name) const { return dir / name; }

private:
  fs::path dir;
};

void writeFile(const fs::path &p, const std::string &bytes) {
  std::ofstream f(p, std::ios::binary);
  f << bytes;
}

std::string readFile(const std::string &p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

/// True when `s` holds only complete, well-formed UTF-8 sequences.
bool isCompleteUtf8(const std::string &s) {
  for (size_t i = 0; i < s.size();) {
    unsigned char b = s[i];
    size_t n = b < 0x80 ? 1 : (b & 0xE0) == 0xC0 ? 2 : (b & 0xF0) == 0xE0 ? 3 : (b & 0xF8) == 0xF0 ? 4 : 0;
    if (n == 0 || i + n > s.size())
      return false;
    for (size_t k = 1; k < n; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80)
        return false;
    i += n;
  }
  return true;
}

/// Pushes `ids` one at a time and checks the stream against decode().
void expectStreamMatchesDecode(const Tokenizer &tok, const Ids &ids) {
  StreamDecoder stream(tok);
  std::string text;
  for (int32_t id : ids) {
    std::string piece = stream.push(id);
    EXPECT_TRUE(isCompleteUtf8(piece)) << "push(" << id << ") returned a partial character";
    text += piece;
  }
  text += stream.flush();
  EXPECT_EQ(text, tok.decode(ids)) << tok.kind();
}

/// The message of the InputError `f` throws ("" when it throws none).
std::string inputError(const std::function<void()> &f) {
  try {
    f();
  } catch (const InputError &e) {
    return e.what();
  }
  return "";
}

std::string joined(const std::vector<std::string> &v) {
  std::string s;
  for (const std::string &x : v) s += x + " ";
  return s;
}

// ----------------------------------------------------------------------------
// sentencepiece .model, llama2.c tokenizer.bin and GGUF vocabularies

TEST(SentencePiece, Tok512ModelAndBinGiveTheSameIds) {
  std::string model = modelPath("stories260K/tok512.model"), bin = modelPath("stories260K/tok512.bin");
  REQUIRE_MODEL_FILE(model);
  REQUIRE_MODEL_FILE(bin);
  auto sp = loadTokenizerFile(model);
  auto l2 = loadTokenizerFile(bin);
  EXPECT_EQ(sp->kind(), "sentencepiece");
  EXPECT_EQ(l2->kind(), "llama2c");
  EXPECT_EQ(sp->vocabSize(), 512);
  EXPECT_EQ(l2->vocabSize(), 512);
  EXPECT_EQ(l2->bosId(), 1);
  EXPECT_EQ(l2->eosIds(), Ids{2});
  EXPECT_EQ(sp->bosId(), 1);
  EXPECT_EQ(sp->eosIds(), Ids{2});
  for (const std::string &s : kPlainSentences) {
    Ids ids = sp->encode(s, true);
    EXPECT_EQ(l2->encode(s, true), ids) << s;
    EXPECT_EQ(sp->decode(ids), s);
    EXPECT_EQ(l2->decode(ids), s);
  }
}

TEST(SentencePiece, Tok512ExtraWhitespace) {
  // tok512.model was trained with sentencepiece's default normalizer, which
  // collapses runs of spaces; llama2.c (and llama.cpp on the same vocabulary)
  // keep every space and so round-trip exactly.
  std::string model = modelPath("stories260K/tok512.model"), bin = modelPath("stories260K/tok512.bin");
  REQUIRE_MODEL_FILE(model);
  REQUIRE_MODEL_FILE(bin);
  auto sp = loadTokenizerFile(model);
  auto l2 = loadTokenizerFile(bin);
  EXPECT_EQ(sp->decode(sp->encode("two  spaces", true)), "two spaces");
  for (const std::string &s : kSpacedSentences)
    EXPECT_EQ(l2->decode(l2->encode(s, true)), s);
}

TEST(SentencePiece, Llama2ModelAndBinGiveTheSameIds) {
  std::string model = modelPath("llama2-tokenizer/tokenizer.model");
  std::string bin = modelPath("llama2-tokenizer/tokenizer.bin");
  REQUIRE_MODEL_FILE(model);
  REQUIRE_MODEL_FILE(bin);
  auto sp = loadTokenizerFile(model);
  auto l2 = loadTokenizerFile(bin);
  EXPECT_EQ(sp->vocabSize(), 32000);
  EXPECT_EQ(l2->vocabSize(), 32000);
  for (const std::string &s : allSentences()) {
    Ids ids = sp->encode(s, true);
    EXPECT_EQ(l2->encode(s, true), ids) << s;
    EXPECT_EQ(l2->encode(s, false), Ids(ids.begin() + 1, ids.end())) << s;
    EXPECT_EQ(sp->decode(ids), s);
    EXPECT_EQ(l2->decode(ids), s);
  }
  // A long text exercises many merges in one word list.
  std::string longText = joined(allSentences()) + joined(allSentences());
  EXPECT_EQ(l2->encode(longText, true), sp->encode(longText, true));
}

TEST(SentencePiece, KnownGreedyPrompt) {
  std::string model = modelPath("stories260K/tok512.model");
  REQUIRE_MODEL_FILE(model);
  auto sp = loadTokenizerFile(model);
  Ids ids = sp->encode("Once upon a time", true);
  ASSERT_GE(ids.size(), 2u);
  EXPECT_EQ(ids[0], 1);
  // As the sentencepiece library encodes it: ▁Once ▁upon ▁a ▁time.
  EXPECT_EQ(ids, (Ids{1, 403, 407, 261, 378}));
  EXPECT_EQ(sp->decode(ids), "Once upon a time");
  EXPECT_EQ(sp->encode("", true), Ids{1});
  EXPECT_TRUE(sp->encode("", false).empty());
}

TEST(SentencePiece, Llama2cDecodeDropsTheSpaceAfterBosOnly) {
  std::string bin = modelPath("stories260K/tok512.bin");
  REQUIRE_MODEL_FILE(bin);
  auto l2 = loadTokenizerFile(bin);
  Ids noBos = l2->encode("Once upon", false);
  EXPECT_EQ(l2->decode(noBos), " Once upon"); // llama2.c strips only after BOS
  Ids withBos = noBos;
  withBos.insert(withBos.begin(), 1);
  EXPECT_EQ(l2->decode(withBos), "Once upon");
  EXPECT_EQ(l2->encode("", true), Ids{1});
  // Byte fallback: 🙂 (F0 9F 99 82) is no piece of the 512 vocabulary.
  Ids emoji = l2->encode("🙂", false);
  ASSERT_EQ(emoji.size(), 5u);
  EXPECT_EQ(l2->decode({emoji[0]}), " "); // the dummy prefix
  EXPECT_EQ(Ids(emoji.begin() + 1, emoji.end()), (Ids{0xF0 + 3, 0x9F + 3, 0x99 + 3, 0x82 + 3}));
}

TEST(SentencePiece, GgufVocabulariesMatchTheirModels) {
  struct Pair {
    const char *gguf, *model, *bin;
  } pairs[] = {
      {"stories260K/stories260K.gguf", "stories260K/tok512.model", "stories260K/tok512.bin"},
      {"tiny-random-gguf/llama-2-tiny-random.gguf", "llama2-tokenizer/tokenizer.model",
       "llama2-tokenizer/tokenizer.bin"},
  };
  for (const Pair &p : pairs) {
    SCOPED_TRACE(p.gguf);
    std::string gguf = modelPath(p.gguf), model = modelPath(p.model), bin = modelPath(p.bin);
    REQUIRE_MODEL_FILE(gguf);
    REQUIRE_MODEL_FILE(model);
    REQUIRE_MODEL_FILE(bin);
    auto g = loadTokenizerFile(gguf);
    auto sp = loadTokenizerFile(model);
    auto l2 = loadTokenizerFile(bin);
    EXPECT_EQ(g->kind(), "gguf-spm");
    EXPECT_EQ(g->vocabSize(), sp->vocabSize());
    EXPECT_EQ(g->bosId(), 1);
    EXPECT_EQ(g->eosIds(), Ids{2});
    for (const std::string &s : kPlainSentences) {
      Ids ids = sp->encode(s, true);
      EXPECT_EQ(g->encode(s, true), ids) << s;
      EXPECT_EQ(g->decode(ids), s);
      // sentencepiece drops the dummy-prefix space with or without BOS.
      EXPECT_EQ(g->decode(g->encode(s, false)), s);
    }
    // llama.cpp's SPM keeps every space, like llama2.c.
    for (const std::string &s : allSentences()) {
      EXPECT_EQ(g->encode(s, true), l2->encode(s, true)) << s;
      EXPECT_EQ(g->decode(g->encode(s, true)), s);
    }
  }
}

// ----------------------------------------------------------------------------
// Hugging Face tokenizer.json byte-level BPE, on hand-made vocabularies

/// GPT-2's bytes_to_unicode, written out here independently of the runtime.
std::string byteChar(int b) {
  int cp = b;
  if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))) {
    int n = 0;
    for (int x = 0; x < b; ++x)
      if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255)))
        ++n;
    cp = 256 + n;
  }
  std::string s;
  if (cp < 0x80) {
    s += char(cp);
  } else {
    s += char(0xC0 | (cp >> 6));
    s += char(0x80 | (cp & 0x3F));
  }
  return s;
}

// The fixture vocabulary: ids 0..255 are the bytes (id = byte value, keyed by
// the GPT-2 character), then these merges in rank order with the ids of the
// tokens they make. Ġ is the space byte, Ã© the UTF-8 of é.
struct MergeRule {
  const char *a, *b;
  int id;
};
const MergeRule kMerges[] = {
    {"h", "e", 256},    {"l", "l", 257},  {"he", "ll", 258}, {"hell", "o", 259},
    {"Ġ", "w", 260},    {"o", "r", 261},  {"Ġw", "or", 262}, {"Ã", "©", 263},
    {"c", "a", 264},    {"ca", "f", 265}, {"caf", "Ã©", 266},
};
constexpr int kBos = 267, kEot = 268, kExtra = 269, kWorld = 270;

const char *kLlama3Pattern = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
                             "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/// A GPT-2 style tokenizer.json (ByteLevel pre-tokenizer with its own regex,
/// merges as "a b" strings) or a Llama 3 style one (Split regex, ByteLevel
/// without regex, merges as pairs, ignore_merges, post-processor sequence).
std::string fixtureJson(bool llama3Style, bool withTemplate = true) {
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) vocab[byteChar(b)] = b;
  nlohmann::json merges = nlohmann::json::array();
  for (const MergeRule &m : kMerges) {
    vocab[std::string(m.a) + m.b] = m.id;
    if (llama3Style)
      merges.push_back({m.a, m.b});
    else
      merges.push_back(std::string(m.a) + " " + m.b);
  }
  // Reachable only as a whole word: ignore_merges makes the difference.
  vocab["Ġworld"] = kWorld;
  nlohmann::json added = nlohmann::json::array({
      {{"id", kBos}, {"content", "<|begin_of_text|>"}, {"special", true}},
      {{"id", kEot}, {"content", "<|eot_id|>"}, {"special", true}},
      {{"id", kExtra}, {"content", "<extra>"}, {"special", false}},
  });
  nlohmann::json tmpl = {
      {"type", "TemplateProcessing"},
      {"single", {{{"SpecialToken", {{"id", "<|begin_of_text|>"}, {"type_id", 0}}}},
                  {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
      {"special_tokens",
       {{"<|begin_of_text|>", {{"id", "<|begin_of_text|>"}, {"ids", {kBos}}, {"tokens", {"<|begin_of_text|>"}}}}}},
  };
  nlohmann::json root = {
      {"version", "1.0"},
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model",
       {{"type", "BPE"}, {"ignore_merges", llama3Style}, {"vocab", vocab}, {"merges", merges}}},
  };
  if (llama3Style) {
    root["pre_tokenizer"] = {
        {"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"}, {"pattern", {{"Regex", kLlama3Pattern}}}, {"behavior", "Isolated"}, {"invert", false}},
          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
    root["post_processor"] = {{"type", "Sequence"},
                              {"processors", {{{"type", "ByteLevel"}, {"trim_offsets", false}}, tmpl}}};
  } else {
    root["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
    root["post_processor"] = withTemplate ? tmpl : nlohmann::json(nullptr);
  }
  return root.dump(1);
}

TEST(HfBpe, Gpt2StyleMergesAsStrings) {
  auto tok = loadTokenizer("hf-bpe", fixtureJson(false));
  EXPECT_EQ(tok->vocabSize(), 271);
  EXPECT_EQ(tok->bosId(), kBos);
  EXPECT_EQ(tok->eosIds(), Ids{kEot});
  // "hello": h+e (rank 0), l+l (1), he+ll (2), hell+o (3).
  EXPECT_EQ(tok->encode("hello", false), Ids{259});
  // " world" is one pre-token: Ġ+w (4), o+r (5), Ġw+or (6), then l and d
  // stay bytes; "Ġworld" is in the vocabulary but no merge reaches it.
  EXPECT_EQ(tok->encode("hello world", true), (Ids{kBos, 259, 262, 'l', 'd'}));
  // Equal ranks: the leftmost pair merges first.
  EXPECT_EQ(tok->encode("lll", false), (Ids{257, 'l'}));
  // Rank, not position: "worl" merges o+r although w comes first.
  EXPECT_EQ(tok->encode("worl", false), (Ids{'w', 261, 'l'}));
  // Merges are case sensitive: "H e" is no merge, "l l" is.
  EXPECT_EQ(tok->encode("Hello", false), (Ids{'H', 'e', 257, 'o'}));
  // Multi-byte UTF-8: é is C3 A9 -> "Ã©"; Ã+© (7) comes before c+a (8).
  EXPECT_EQ(tok->encode("café", false), Ids{266});
  EXPECT_EQ(tok->encode("é!", false), (Ids{263, '!'}));
  // No merges: ü (C3 BC) and 🙂 (F0 9F 99 82) stay as their bytes.
  EXPECT_EQ(tok->encode("ü🙂", false), (Ids{0xC3, 0xBC, 0xF0, 0x9F, 0x99, 0x82}));
  // GPT-2 pre-tokens: "it", "'s", " 2024" (a space joins the digits), "!!".
  EXPECT_EQ(tok->encode("it's 2024!!", false), (Ids{'i', 't', '\'', 's', ' ', '2', '0', '2', '4', '!', '!'}));
  // Special and added tokens inside text are matched before pre-tokenizing.
  EXPECT_EQ(tok->encode("hi<|eot_id|>hello", true), (Ids{kBos, 'h', 'i', kEot, 259}));
  EXPECT_EQ(tok->encode("a<extra>b", false), (Ids{'a', kExtra, 'b'}));
  EXPECT_EQ(tok->encode("<|begin_of_text|>hello", false), (Ids{kBos, 259}));
  EXPECT_EQ(tok->encode("", true), Ids{kBos});
  // Decoding: special tokens give no text, other added tokens their content.
  EXPECT_EQ(tok->decode({kBos, 'h', 'i', kEot, 259}), "hihello");
  EXPECT_EQ(tok->decode({'a', kExtra, 'b'}), "a<extra>b");
  EXPECT_EQ(tok->decode({266, ' ', 0xF0, 0x9F, 0x99, 0x82}), "café 🙂");
  // An incomplete character decodes to U+FFFD, as Hugging Face's lossy decode does.
  EXPECT_EQ(tok->decode({'a', 0xC3}), "a\xEF\xBF\xBD");
  for (const std::string &s : allSentences()) {
    EXPECT_EQ(tok->decode(tok->encode(s, true)), s);
    EXPECT_EQ(tok->decode(tok->encode(s, false)), s);
  }
}

// <|end|> ends Phi-3's turns, but only a message in gpt-oss's harmony,
// whose answers end at <|return|> or <|call|> (llama.cpp reads it so).
TEST(HfBpe, HarmonyEndsAtReturnAndCallNotAtEnd) {
  auto withTokens = [](std::vector<const char *> names) {
    nlohmann::json root = nlohmann::json::parse(fixtureJson(false));
    int id = 400;
    for (const char *name : names)
      root["added_tokens"].push_back(
          {{"id", id++}, {"content", name}, {"special", true}, {"normalized", false}});
    return loadTokenizer("hf-bpe", root.dump());
  };
  EXPECT_EQ(withTokens({"<|end|>"})->eosIds(), (Ids{kEot, 400}));
  EXPECT_EQ(withTokens({"<|end|>", "<|return|>", "<|call|>"})->eosIds(), (Ids{kEot, 401, 402}));
  EXPECT_EQ(withTokens({"<|end|>", "<|return|>"})->eosIds(), (Ids{kEot, 400})) << "not harmony";
}

TEST(HfBpe, Llama3StyleSplitRegexAndMergePairs) {
  auto tok = loadTokenizer("hf-bpe", fixtureJson(true));
  EXPECT_EQ(tok->bosId(), kBos);
  // Llama 3 pre-tokens: "Hello", " ", "202", "4", " world", "!!"; with
  // ignore_merges " world" is a vocabulary word and becomes one token.
  EXPECT_EQ(tok->encode("Hello 2024 world!!", true),
            (Ids{kBos, 'H', 'e', 257, 'o', ' ', '2', '0', '2', '4', kWorld, '!', '!'}));
  EXPECT_EQ(tok->encode("hello world", false), (Ids{259, kWorld}));
  // "(hello" is one pre-token here ("[^\r\n\p{L}\p{N}]?\p{L}+"); no merge joins "(".
  EXPECT_EQ(tok->encode("(hello)", false), (Ids{'(', 259, ')'}));
  EXPECT_EQ(tok->encode("café", false), Ids{266});
  EXPECT_EQ(tok->encode("x<|eot_id|>", false), (Ids{'x', kEot}));
  EXPECT_EQ(tok->decode({kBos, 259, kWorld, kEot}), "hello world");
  for (const std::string &s : allSentences())
    EXPECT_EQ(tok->decode(tok->encode(s, true)), s);
}

TEST(HfBpe, BosOnlyFromTheTemplate) {
  auto tok = loadTokenizer("hf-bpe", fixtureJson(false, /*withTemplate=*/false));
  EXPECT_EQ(tok->bosId(), -1);
  EXPECT_EQ(tok->encode("hello", true), Ids{259});
}

TEST(HfBpe, StringAndPairMergesAgree) {
  auto a = loadTokenizer("hf-bpe", fixtureJson(false));
  auto b = loadTokenizer("hf-bpe", fixtureJson(true));
  // No whole-word shortcut and no differing pre-token split in these.
  for (const char *s : {"hello", "café", "lll", "worl", "hehe", "éé"})
    EXPECT_EQ(a->encode(s, false), b->encode(s, false)) << s;
}

TEST(HfBpe, LoadsFromAFile) {
  ScratchDir dir;
  writeFile(dir / "tokenizer.json", fixtureJson(true));
  auto tok = loadTokenizerFile((dir / "tokenizer.json").string());
  EXPECT_EQ(tok->kind(), "hf-bpe");
  EXPECT_EQ(tok->serialize(), fixtureJson(true));
  EXPECT_EQ(tok->encode("hello world", true), (Ids{kBos, 259, kWorld}));
}

/// The fixture of fixtureJson(true) with its Split pattern, Split behaviour
/// and normalizer replaced.
std::string fixtureWith(const std::string &pattern, const std::string &behavior, nlohmann::json normalizer) {
  nlohmann::json root = nlohmann::json::parse(fixtureJson(true));
  nlohmann::json &split = root["pre_tokenizer"]["pretokenizers"][0];
  split["pattern"]["Regex"] = pattern;
  split["behavior"] = behavior;
  root["normalizer"] = std::move(normalizer);
  return root.dump();
}

Ids bytesOf(const std::string &s) {
  Ids ids;
  for (unsigned char c : s) ids.push_back(c); // fixture ids 0..255 are the bytes
  return ids;
}

TEST(HfBpe, SplitClassesMeanWhatOnigurumaMeans) {
  // Each pattern removes what it matches; the bytes left show the class.
  // \s: U+180E (E1 A0 8E) is not White_Space, so Oniguruma keeps it.
  auto s = loadTokenizer("hf-bpe", fixtureWith("\\s", "Removed", nullptr));
  EXPECT_EQ(s->encode("a \xE1\xA0\x8E" "b\xC2\x85" "c\xE3\x80\x80", false), bytesOf("a\xE1\xA0\x8E" "bc"));
  // [^\s] keeps the whitespace and U+180E goes with the rest.
  auto notS = loadTokenizer("hf-bpe", fixtureWith("[^\\s]", "Removed", nullptr));
  EXPECT_EQ(notS->encode("a \xE1\xA0\x8E\t", false), bytesOf(" \t"));
  auto bigS = loadTokenizer("hf-bpe", fixtureWith("\\S", "Removed", nullptr));
  EXPECT_EQ(bigS->encode("a \xE1\xA0\x8E\t", false), bytesOf(" \t"));
  // \h is a hex digit in Oniguruma (PCRE2: horizontal space); \v a vertical tab.
  auto h = loadTokenizer("hf-bpe", fixtureWith("\\h", "Removed", nullptr));
  EXPECT_EQ(h->encode("a x F9 g", false), bytesOf(" x  g"));
  auto v = loadTokenizer("hf-bpe", fixtureWith("\\v", "Removed", nullptr));
  EXPECT_EQ(v->encode("a\vb\nc\fd", false), bytesOf("ab\nc\fd"));
  // \w takes marks (U+0301) and connector punctuation; PCRE2's takes no marks.
  auto w = loadTokenizer("hf-bpe", fixtureWith("\\w", "Removed", nullptr));
  EXPECT_EQ(w->encode("e\xCC\x81_1!", false), bytesOf("!"));
  // Escaped and bracketed text is left alone.
  auto lit = loadTokenizer("hf-bpe", fixtureWith("[\\\\s]", "Removed", nullptr));
  EXPECT_EQ(lit->encode("a\\s b", false), bytesOf("a b"));
}

namespace {

/// A tokenizer.json over a, b and -, merging a-, -b, ab and -- (in that
/// order), split on `pattern` as `behavior` says: which merges happen shows
/// where the pieces end.
std::string splitFixture(const nlohmann::json &pattern, const std::string &behavior,
                         bool invert) {
  return nlohmann::json{
      {"added_tokens", nlohmann::json::array()},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Split"}, {"pattern", pattern}, {"behavior", behavior}, {"invert", invert}}},
      {"decoder", {{"type", "Fuse"}}},
      {"model",
       {{"type", "BPE"},
        {"unk_token", "<unk>"},
        {"vocab",
         {{"a", 0}, {"b", 1}, {"-", 2}, {"a-", 3}, {"-b", 4}, {"ab", 5}, {"--", 6}, {"<unk>", 7}}},
        {"merges", {"a -", "- b", "a b", "- -"}}}}}
      .dump();
}

} // namespace

// Every delimiter behaviour of Hugging Face's Split (its
// SplitDelimiterBehavior), on "a--b" split at each "-": the pieces, by the
// merges they allow, as tokenizers' own tests have them ("How are  you?"
// split at spaces MergedWithPrevious is "How ", "are ", " ", "you?").
TEST(HfBpe, SplitBehaviorsPlaceTheDelimiters) {
  const nlohmann::json dash = {{"String", "-"}};
  auto ids = [&](const std::string &behavior, bool invert = false,
                 const nlohmann::json &pattern = {{"String", "-"}}) {
    return loadTokenizer("hf-bpe", splitFixture(pattern, behavior, invert))->encode("a--b", false);
  };
  EXPECT_EQ(ids("Isolated"), (Ids{0, 2, 2, 1}));           // a | - | - | b
  EXPECT_EQ(ids("Removed"), (Ids{0, 1}));                  // a | b
  EXPECT_EQ(ids("MergedWithPrevious"), (Ids{3, 2, 1}));    // a- | - | b
  EXPECT_EQ(ids("MergedWithNext"), (Ids{0, 2, 4}));        // a | - | -b
  EXPECT_EQ(ids("Contiguous"), (Ids{0, 6, 1}));            // a | -- | b
  // invert: the pattern matches the pieces; the text between delimits.
  const nlohmann::json letters = {{"Regex", "[ab]"}};
  EXPECT_EQ(ids("Removed", true, letters), (Ids{0, 1}));               // a | b
  EXPECT_EQ(ids("Contiguous", true, letters), (Ids{0, 6, 1}));         // a | -- | b
  EXPECT_EQ(ids("MergedWithPrevious", true, letters), (Ids{3, 2, 1})); // a- | - | b
  try {
    loadTokenizer("hf-bpe", splitFixture(dash, "Sideways", false));
    FAIL() << "no error";
  } catch (const InputError &e) {
    EXPECT_NE(std::string(e.what()).find("has behavior \"Sideways\"; expected Isolated"),
              std::string::npos)
        << e.what();
  }
}

// Gemma's tokenizer.json (Gemma 3's layout, its vocabulary cut down): a
// Replace normalizer (spaces to U+2581), a Split at " " merged with the
// piece before (which the normalizer leaves nothing to do), BPE with byte
// fallback, and the decoder back. Ids worked out by hand from the merges.
TEST(HfBpe, GemmaStyleTokenizerJson) {
  const std::string R = "\u2581";
  nlohmann::json vocab = {{"<pad>", 0}, {"<eos>", 1}, {"<bos>", 2}, {"<unk>", 3}};
  char hex[8];
  for (int i = 0; i < 256; ++i) {
    std::snprintf(hex, sizeof hex, "<0x%02X>", i);
    vocab[hex] = 4 + i;
  }
  int next = 260;
  for (const std::string &t : {R, std::string("H"), std::string("e"), std::string("l"),
                               std::string("o"), std::string("w"), std::string("r"),
                               std::string("d"), std::string("ll"), std::string("He"),
                               std::string("Hell"), std::string("Hello"), std::string("or"),
                               std::string("wor"), std::string("worl"), std::string("world"),
                               R + "world"})
    vocab[t] = next++;
  nlohmann::json added = nlohmann::json::array();
  for (auto [id, piece] : {std::pair{0, "<pad>"}, {1, "<eos>"}, {2, "<bos>"}, {3, "<unk>"}})
    added.push_back({{"id", id}, {"content", piece}, {"special", true}, {"normalized", false}});
  const nlohmann::json j = {
      {"added_tokens", added},
      {"normalizer", {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", R}}},
      {"pre_tokenizer",
       {{"type", "Split"},
        {"pattern", {{"String", " "}}},
        {"behavior", "MergedWithPrevious"},
        {"invert", false}}},
      {"post_processor", nullptr},
      {"decoder",
       {{"type", "Sequence"},
        {"decoders",
         {{{"type", "Replace"}, {"pattern", {{"String", R}}}, {"content", " "}},
          {{"type", "ByteFallback"}},
          {{"type", "Fuse"}}}}}},
      {"model",
       {{"type", "BPE"},
        {"unk_token", "<unk>"},
        {"byte_fallback", true},
        {"fuse_unk", true},
        {"vocab", vocab},
        {"merges",
         {"l l", "H e", "He ll", "Hell o", "o r", "w or", "wor l", "worl d", R + " world"}}}}};
  auto tok = loadTokenizer("hf-bpe", j.dump());
  // Hello | ▁world | ▁ | é as its UTF-8 bytes (C3 A9, byte fallback).
  const Ids want = {vocab["Hello"], vocab[R + "world"], vocab[R], 4 + 0xC3, 4 + 0xA9};
  EXPECT_EQ(tok->encode("Hello world \xC3\xA9", false), want);
  EXPECT_EQ(tok->decode(want), "Hello world \xC3\xA9");
}

TEST(HfBpe, NormalizersBeforePreTokenizing) {
  // NFC composes e + U+0301 into é (C3 A9), which the fixture merges.
  auto nfc = loadTokenizer("hf-bpe", fixtureWith(kLlama3Pattern, "Isolated", {{"type", "NFC"}}));
  EXPECT_EQ(nfc->encode("cafe\xCC\x81", false), Ids{266});
  EXPECT_EQ(nfc->decode(nfc->encode("cafe\xCC\x81", false)), "caf\xC3\xA9");
  // NFD in a Sequence decomposes it; NFKC also folds the "fi" ligature.
  nlohmann::json nfd = {{"type", "Sequence"}, {"normalizers", {{{"type", "NFD"}}}}};
  auto d = loadTokenizer("hf-bpe", fixtureWith(kLlama3Pattern, "Isolated", nfd));
  EXPECT_EQ(d->encode("caf\xC3\xA9", false), (Ids{265, 'e', 0xCC, 0x81}));
  auto k = loadTokenizer("hf-bpe", fixtureWith(kLlama3Pattern, "Isolated", {{"type", "NFKC"}}));
  EXPECT_EQ(k->encode("\xEF\xAC\x81", false), (Ids{'f', 'i'}));
  // Without a normalizer the text is encoded as it is.
  auto none = loadTokenizer("hf-bpe", fixtureWith(kLlama3Pattern, "Isolated", nullptr));
  EXPECT_EQ(none->encode("e\xCC\x81", false), (Ids{'e', 0xCC, 0x81}));
}

TEST(HfBpe, AddedTokensMatchRawOrNormalizedText) {
  nlohmann::json root = nlohmann::json::parse(fixtureWith(kLlama3Pattern, "Isolated", {{"type", "NFC"}}));
  // "normalized": true matches after NFC; false matches the raw bytes only.
  root["added_tokens"].push_back({{"id", 271}, {"content", "\xC3\xA9!"}, {"special", false}, {"normalized", true}});
  root["added_tokens"].push_back({{"id", 272}, {"content", "o\xCC\x88"}, {"special", false}, {"normalized", false}});
  auto tok = loadTokenizer("hf-bpe", root.dump());
  EXPECT_EQ(tok->encode("xe\xCC\x81!", false), (Ids{'x', 271}));
  EXPECT_EQ(tok->encode("o\xCC\x88", false), Ids{272});
  // The precomposed ö is another text: its bytes.
  EXPECT_EQ(tok->encode("\xC3\xB6", false), (Ids{0xC3, 0xB6}));
}

TEST(HfBpe, ReadsEscapedJson) {
  // Every non-ASCII character as \uXXXX (surrogate pairs above U+FFFF): the
  // vocabulary and merges go through the escape path of kvplan's JSON reader.
  nlohmann::json root = nlohmann::json::parse(fixtureJson(true));
  root["added_tokens"].push_back({{"id", 271}, {"content", "\xF0\x9F\x99\x82\xC3\xA9"}, {"special", false}});
  const std::string escaped = root.dump(-1, ' ', /*ensure_ascii=*/true);
  ASSERT_NE(escaped.find("\\ud83d\\ude42"), std::string::npos);
  auto plain = loadTokenizer("hf-bpe", fixtureJson(true));
  auto tok = loadTokenizer("hf-bpe", escaped);
  for (const std::string &s : allSentences()) EXPECT_EQ(tok->encode(s, false), plain->encode(s, false)) << s;
  EXPECT_EQ(tok->encode("x\xF0\x9F\x99\x82\xC3\xA9", false), (Ids{'x', 271}));
}

TEST(HfBpe, JsonErrorsSayWhere) {
  std::string bad = fixtureJson(true);
  bad.insert(bad.find("\"merges\"") + 20, "}");
  std::string msg = inputError([&] { loadTokenizer("hf-bpe", bad); });
  EXPECT_NE(msg.find("malformed JSON at line "), std::string::npos) << msg;
  nlohmann::json root = nlohmann::json::parse(fixtureJson(true));
  root["model"]["vocab"]["x"] = "not an id";
  msg = inputError([&] { loadTokenizer("hf-bpe", root.dump()); });
  EXPECT_NE(msg.find("model.vocab[\"x\"] is not an integer id"), std::string::npos) << msg;
}

TEST(HfBpe, RefusesWhatItCannotMatch) {
  nlohmann::json lower = {{"type", "Sequence"}, {"normalizers", {{{"type", "NFC"}}, {{"type", "Lowercase"}}}}};
  std::string msg = inputError([&] { loadTokenizer("hf-bpe", fixtureWith(kLlama3Pattern, "Isolated", lower)); });
  EXPECT_NE(msg.find("normalizer.normalizers[1]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("\"Lowercase\""), std::string::npos) << msg;
  msg = inputError([&] { loadTokenizer("hf-bpe", fixtureWith("[\\S\\d]", "Isolated", nullptr)); });
  EXPECT_NE(msg.find("\\S inside a character class"), std::string::npos) << msg;
}

/// llama.cpp's Hugging Face vectors: inputs each followed by a line
/// `__ggml_vocab_test__`, and one line of ids (each after a space) per input.
struct HfVectors {
  std::vector<std::string> inputs;
  std::vector<Ids> ids;
};

HfVectors readHfVectors(const std::string &stem) {
  HfVectors v;
  const std::string inp = readFile(stem + ".inp"), sep = "\n__ggml_vocab_test__\n";
  for (size_t pos = 0; pos < inp.size();) {
    size_t next = inp.find(sep, pos);
    if (next == std::string::npos)
      ADD_FAILURE() << stem << ".inp does not end with " << sep;
    v.inputs.push_back(inp.substr(pos, next - pos));
    pos = next == std::string::npos ? inp.size() : next + sep.size();
  }
  std::istringstream out(readFile(stem + ".out"));
  for (std::string line; std::getline(out, line);) {
    std::istringstream items(line);
    Ids ids;
    for (int32_t id; items >> id;) ids.push_back(id);
    v.ids.push_back(ids);
  }
  EXPECT_EQ(v.inputs.size(), v.ids.size()) << stem;
  return v;
}

std::string nfc(const std::string &s) {
  utf8proc_uint8_t *mapped = nullptr;
  utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t *>(s.data()), utf8proc_ssize_t(s.size()),
                                    &mapped, utf8proc_option_t(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  EXPECT_GE(n, 0) << s;
  std::string out = n > 0 ? std::string(reinterpret_cast<const char *>(mapped), size_t(n)) : std::string();
  std::free(mapped);
  return out;
}

/// Every vector encodes (without BOS) to Hugging Face's ids and decodes back
/// to its input (`normalize`d as the tokenizer's normalizer does).
void expectTokenizerMeetsVectors(const Tokenizer &tok, const std::string &vectors,
                                 std::string (*normalize)(const std::string &)) {
  HfVectors v = readHfVectors(modelPath(vectors));
  ASSERT_GT(v.inputs.size(), 40u);
  size_t matched = 0;
  for (size_t i = 0; i < std::min(v.inputs.size(), v.ids.size()); ++i) {
    Ids ids = tok.encode(v.inputs[i], false);
    matched += ids == v.ids[i];
    EXPECT_EQ(ids, v.ids[i]) << "vector " << i << ": \"" << v.inputs[i] << "\"";
    EXPECT_EQ(tok.decode(v.ids[i]), normalize(v.inputs[i])) << "vector " << i;
  }
  std::printf("%s: %zu of %zu vectors match Hugging Face\n", vectors.c_str(), matched, v.inputs.size());
}

void expectHfVectors(const std::string &tokenizer, const std::string &vectors,
                     std::string (*normalize)(const std::string &)) {
  REQUIRE_MODEL_FILE(modelPath(tokenizer));
  REQUIRE_MODEL_FILE(modelPath(vectors + ".inp"));
  expectTokenizerMeetsVectors(*loadTokenizerFile(modelPath(tokenizer)), vectors, normalize);
}

std::string unchanged(const std::string &s) { return s; }

TEST(HfBpe, Llama3MatchesHuggingFaceVectors) {
  expectHfVectors("llama3-tokenizer/tokenizer.json", "tokenizer-vectors/ggml-vocab-llama-bpe.gguf", unchanged);
}

TEST(HfBpe, QwenMatchesHuggingFaceVectors) {
  expectHfVectors("qwen3-tokenizer/tokenizer.json", "tokenizer-vectors/ggml-vocab-qwen2.gguf", nfc);
}

TEST(HfBpe, QwenNormalizesToNfc) {
  const std::string path = modelPath("qwen3-tokenizer/tokenizer.json");
  REQUIRE_MODEL_FILE(path);
  auto tok = loadTokenizerFile(path);
  // e + COMBINING ACUTE and Hangul jamo compose before BPE.
  for (auto [decomposed, composed] : {std::pair<const char *, const char *>{"Caf" "e\xCC\x81 au lait", "Caf\xC3\xA9 au lait"},
                                      {"\xE1\x84\x92\xE1\x85\xA1\xE1\x86\xAB", "\xED\x95\x9C"}}) {
    EXPECT_EQ(tok->encode(decomposed, false), tok->encode(composed, false)) << composed;
    EXPECT_EQ(tok->decode(tok->encode(decomposed, false)), composed);
  }
}

TEST(HfBpe, Llama3SplitsAroundMongolianVowelSeparatorAsOniguruma) {
  const std::string path = modelPath("llama3-tokenizer/tokenizer.json");
  REQUIRE_MODEL_FILE(path);
  auto tok = loadTokenizerFile(path);
  // U+180E is no \s in Oniguruma: " \u180E" is one pre-token
  // (" ?[^\s\p{L}\p{N}]+") and "x" another; a \s with U+180E in it would make
  // " " and "\u180Ex" instead.
  auto cat = [](Ids a, const Ids &b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  };
  const std::string sep = "\xE1\xA0\x8E";
  Ids ids = tok->encode(" " + sep + "x", false);
  EXPECT_EQ(ids, cat(tok->encode(" " + sep, false), tok->encode("x", false)));
  EXPECT_NE(ids, cat(tok->encode(" ", false), tok->encode(sep + "x", false)));
}

// ----------------------------------------------------------------------------
// Sentencepiece-style tokenizer.json (Llama 2, Mistral, TinyLlama, Phi-3):
// pieces as text with "▁" for a space, <0xAB> byte tokens, no ByteLevel
// ----------------------------------------------------------------------------

const std::string kMeta = "\xE2\x96\x81"; // ▁ U+2581, sentencepiece's space

/// The post-processor that puts <s> (id 1) first.
nlohmann::json bosTemplate() {
  return {{"type", "TemplateProcessing"},
          {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                      {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
          {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}};
}

/// tokenizer.json for a sentencepiece BPE model as transformers'
/// LlamaConverter writes it, restated here apart from kvplan: every piece in
/// the vocabulary; as merges, each split of a piece into two pieces, in the
/// order of the piece's score (highest first), then of the left and right
/// parts' lengths (longest first), then of their ids; control and unknown
/// pieces as special added tokens; `legacy`: Prepend and Replace normalizers
/// and no pre-tokenizer, else no normalizer and Metaspace (prepend_scheme
/// "first", no split); the decoder Replace, ByteFallback, Fuse, Strip.
std::string convertSentencePiece(const sentencepiece::SentencePieceProcessor &sp, bool legacy) {
  nlohmann::json vocab = nlohmann::json::object(), added = nlohmann::json::array();
  std::map<std::string, int> ids;
  bool bytes = false;
  for (int id = 0; id < sp.GetPieceSize(); ++id) {
    ids[sp.IdToPiece(id)] = id;
    vocab[sp.IdToPiece(id)] = id;
    bytes = bytes || sp.IsByte(id);
    if (sp.IsControl(id) || sp.IsUnknown(id))
      added.push_back(
          {{"id", id}, {"content", sp.IdToPiece(id)}, {"special", true}, {"normalized", false}});
  }
  struct Merge {
    std::string l, r;
    float score;
    size_t lenL, lenR; // in characters
  };
  std::vector<Merge> merges;
  for (int id = 0; id < sp.GetPieceSize(); ++id) {
    const std::string piece = sp.IdToPiece(id);
    std::vector<Merge> local;
    size_t chars = 0, total = 0;
    for (unsigned char c : piece) total += (c & 0xC0) != 0x80;
    for (size_t cut = 1; cut < piece.size(); ++cut) {
      chars += (static_cast<unsigned char>(piece[cut - 1]) & 0xC0) != 0x80;
      if ((static_cast<unsigned char>(piece[cut]) & 0xC0) == 0x80) continue;
      std::string l = piece.substr(0, cut), r = piece.substr(cut);
      if (ids.count(l) && ids.count(r))
        local.push_back({l, r, sp.GetScore(id), chars, total - chars});
    }
    std::sort(local.begin(), local.end(), [&](const Merge &a, const Merge &b) {
      return std::make_pair(ids[a.l], ids[a.r]) < std::make_pair(ids[b.l], ids[b.r]);
    });
    merges.insert(merges.end(), local.begin(), local.end());
  }
  std::stable_sort(merges.begin(), merges.end(), [](const Merge &a, const Merge &b) {
    return std::make_tuple(a.score, a.lenL, a.lenR) > std::make_tuple(b.score, b.lenL, b.lenR);
  });
  nlohmann::json mergeList = nlohmann::json::array();
  for (const Merge &m : merges) mergeList.push_back({m.l, m.r});
  nlohmann::json root = {
      {"version", "1.0"},
      {"added_tokens", added},
      {"decoder", {{"type", "Sequence"}, {"decoders", {
           {{"type", "Replace"}, {"pattern", {{"String", kMeta}}}, {"content", " "}},
           {{"type", "ByteFallback"}}, {{"type", "Fuse"}},
           {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
      {"post_processor", bosTemplate()},
      {"model", {{"type", "BPE"}, {"unk_token", "<unk>"}, {"fuse_unk", true},
                 {"byte_fallback", bytes}, {"vocab", vocab}, {"merges", mergeList}}},
  };
  if (legacy) {
    root["normalizer"] = {{"type", "Sequence"}, {"normalizers", {
        {{"type", "Prepend"}, {"prepend", kMeta}},
        {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kMeta}}}}};
    root["pre_tokenizer"] = nullptr;
  } else {
    root["normalizer"] = nullptr;
    root["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", kMeta},
                             {"prepend_scheme", "first"}, {"split", false}};
  }
  return root.dump();
}

/// Every text encodes to the sentencepiece library's ids and those decode to
/// the library's text, through `model` converted to tokenizer.json (both
/// forms; Metaspace's only for texts that do not start with a space).
void expectConvertedMatchesLibrary(const std::string &model,
                                   const std::vector<std::string> &texts) {
  REQUIRE_MODEL_FILE(model);
  sentencepiece::SentencePieceProcessor sp;
  ASSERT_TRUE(sp.Load(model).ok()) << model;
  for (bool legacy : {true, false}) {
    auto tok = loadTokenizer("hf-bpe", convertSentencePiece(sp, legacy));
    size_t matched = 0;
    for (const std::string &text : texts) {
      // Metaspace puts no ▁ before a text that starts with a space (it has
      // one), where sentencepiece's dummy prefix always adds one.
      if (!legacy && !text.empty() && text[0] == ' ')
        continue;
      std::vector<int> want;
      ASSERT_TRUE(sp.Encode(text, &want).ok());
      Ids ids = tok->encode(text, false);
      matched += ids == Ids(want.begin(), want.end());
      EXPECT_EQ(ids, Ids(want.begin(), want.end()))
          << (legacy ? "legacy: \"" : "Metaspace: \"") << text << "\"";
      std::string decoded;
      ASSERT_TRUE(sp.Decode(want, &decoded).ok());
      EXPECT_EQ(tok->decode(ids), decoded) << "\"" << text << "\"";
      Ids withBos{1};
      withBos.insert(withBos.end(), ids.begin(), ids.end());
      EXPECT_EQ(tok->encode(text, true), withBos);
    }
    std::printf("%s (%s): %zu of %zu texts as the sentencepiece library\n", model.c_str(),
                legacy ? "legacy" : "Metaspace", matched, texts.size());
  }
}

TEST(HfSentencePiece, Llama2TokenizerJsonMatchesTheSentencePieceLibrary) {
  std::vector<std::string> texts = allSentences();
  const std::string vectors = modelPath("tokenizer-vectors/ggml-vocab-llama-bpe.gguf");
  if (fs::exists(vectors + ".inp"))
    for (const std::string &t : readHfVectors(vectors).inputs) texts.push_back(t);
  expectConvertedMatchesLibrary(modelPath("llama2-tokenizer/tokenizer.model"), texts);
}

TEST(HfSentencePiece, Tok512TokenizerJsonMatchesTheSentencePieceLibrary) {
  // tok512.model normalizes (NFKC, extra whitespace), which a converted
  // tokenizer.json would do with a "Precompiled" normalizer kvplan refuses:
  // the plain sentences are what that normalizer leaves as they are.
  expectConvertedMatchesLibrary(modelPath("stories260K/tok512.model"), kPlainSentences);
}

/// A hand-made sentencepiece-style tokenizer.json: 0 <unk>, 1 <s>, 2 </s>,
/// 3..258 the bytes <0x00>..<0xFF>, then the pieces below, merged in the
/// order listed. `pre` is the pre-tokenizer ("legacy": none, with Prepend
/// and Replace normalizers instead), `decoder` the decoder.
std::string spmFixture(const nlohmann::json &pre, const nlohmann::json &decoder,
                       bool byteFallback = true, bool fuseUnk = true) {
  nlohmann::json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    vocab[name] = 3 + b;
  }
  const std::vector<std::string> pieces = {kMeta, "H", "i", kMeta + "H", kMeta + "Hi", "a", "b",
                                           kMeta + kMeta, kMeta + "a", "x", "y"};
  for (size_t k = 0; k < pieces.size(); ++k) vocab[pieces[k]] = 259 + int(k);
  nlohmann::json root = {
      {"added_tokens", {{{"id", 0}, {"content", "<unk>"}, {"special", true}},
                        {{"id", 1}, {"content", "<s>"}, {"special", true}},
                        {{"id", 2}, {"content", "</s>"}, {"special", true}}}},
      {"normalizer", nullptr},
      {"pre_tokenizer", pre},
      {"decoder", decoder},
      {"post_processor", bosTemplate()},
      {"model", {{"type", "BPE"}, {"unk_token", "<unk>"}, {"byte_fallback", byteFallback},
                 {"fuse_unk", fuseUnk}, {"vocab", vocab},
                 {"merges", nlohmann::json::array({nlohmann::json::array({kMeta, "H"}),
                                                   nlohmann::json::array({kMeta + "H", "i"}),
                                                   nlohmann::json::array({kMeta, kMeta}),
                                                   nlohmann::json::array({kMeta, "a"})})}}},
  };
  if (pre == "legacy") {
    root["pre_tokenizer"] = nullptr;
    root["normalizer"] = {{"type", "Sequence"}, {"normalizers", {
        {{"type", "Prepend"}, {"prepend", kMeta}},
        {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kMeta}}}}};
  }
  return root.dump();
}

const nlohmann::json kLegacyDecoder = {
    {"type", "Sequence"},
    {"decoders", {{{"type", "Replace"}, {"pattern", {{"String", kMeta}}}, {"content", " "}},
                  {{"type", "ByteFallback"}}, {{"type", "Fuse"}},
                  {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}};

nlohmann::json metaspace(const char *scheme, bool split) {
  return {{"type", "Metaspace"}, {"replacement", kMeta}, {"prepend_scheme", scheme}, {"split", split}};
}

// Piece ids of spmFixture.
constexpr int32_t kSp = 259, kH = 260, kI = 261, kSpHi = 263, kA = 264, kB = 265, kSpSp = 266,
                  kSpA = 267, kX = 268, kY = 269;
int32_t byteId(int b) { return 3 + b; }

TEST(HfSentencePiece, LegacyPrependsToEveryTextBetweenAddedTokens) {
  auto tok = loadTokenizer("hf-bpe", spmFixture("legacy", kLegacyDecoder));
  EXPECT_EQ(tok->encode("Hi", false), (Ids{kSpHi})); // ▁ H i: (▁,H) then (▁H,i)
  EXPECT_EQ(tok->encode("Hi", true), (Ids{1, kSpHi}));
  // Prepend acts on each segment an added token leaves, so "Hi" after <s>
  // is "▁Hi" again, and " Hi" after </s> is "▁▁Hi".
  EXPECT_EQ(tok->encode("<s>Hi</s> Hi", false), (Ids{1, kSpHi, 2, kSp, kSpHi}));
  // "▁a▁▁b": (▁,▁) ranks above (▁,a).
  EXPECT_EQ(tok->encode("a  b", false), (Ids{kSpA, kSpSp, kB}));
  // ☃ is no piece: its three UTF-8 bytes.
  EXPECT_EQ(tok->encode("\xE2\x98\x83", false), (Ids{kSp, byteId(0xE2), byteId(0x98), byteId(0x83)}));
  EXPECT_EQ(tok->encode("", true), (Ids{1}));
}

TEST(HfSentencePiece, MetaspaceSchemesAndSplit) {
  auto first = loadTokenizer("hf-bpe", spmFixture(metaspace("first", false), kLegacyDecoder));
  EXPECT_EQ(first->encode("Hi", false), (Ids{kSpHi}));
  // "first": only where the text starts, not after an added token.
  EXPECT_EQ(first->encode("<s>Hi", false), (Ids{1, kH, kI}));
  EXPECT_EQ(first->encode("<s> Hi", false), (Ids{1, kSpHi}));
  EXPECT_EQ(first->encode("a  b", false), (Ids{kSpA, kSpSp, kB}));
  auto never = loadTokenizer("hf-bpe", spmFixture(metaspace("never", false), kLegacyDecoder));
  EXPECT_EQ(never->encode("Hi", false), (Ids{kH, kI}));
  // "always", split: "▁a", "▁", "▁b" are BPE'd apart, so ▁▁ never forms.
  auto split = loadTokenizer("hf-bpe", spmFixture(metaspace("always", true), kLegacyDecoder));
  EXPECT_EQ(split->encode("<s>Hi", false), (Ids{1, kSpHi}));
  EXPECT_EQ(split->encode("a  b", false), (Ids{kSpA, kSp, kSp, kB}));
  // The older form: add_prefix_space true is "always", split by default.
  nlohmann::json old = {{"type", "Metaspace"}, {"replacement", kMeta}, {"add_prefix_space", true}};
  EXPECT_EQ(loadTokenizer("hf-bpe", spmFixture(old, kLegacyDecoder))->encode("a  b", false),
            (Ids{kSpA, kSp, kSp, kB}));
}

TEST(HfSentencePiece, UnknownCharactersWithoutByteFallback) {
  const std::string snowmen = "x\xE2\x98\x83\xE2\x98\x83y";
  auto fused = loadTokenizer("hf-bpe", spmFixture("legacy", kLegacyDecoder, false, true));
  EXPECT_EQ(fused->encode(snowmen, false), (Ids{kSp, kX, 0, kY}));
  auto apart = loadTokenizer("hf-bpe", spmFixture("legacy", kLegacyDecoder, false, false));
  EXPECT_EQ(apart->encode(snowmen, false), (Ids{kSp, kX, 0, 0, kY}));
  // With byte fallback the bytes, whatever fuse_unk says.
  auto bytes = loadTokenizer("hf-bpe", spmFixture("legacy", kLegacyDecoder, true, true));
  EXPECT_EQ(bytes->encode("x\xE2\x98\x83", false), (Ids{kSp, kX, byteId(0xE2), byteId(0x98), byteId(0x83)}));
}

TEST(HfSentencePiece, DecodersAsHuggingFaceRunsThem) {
  auto tok = loadTokenizer("hf-bpe", spmFixture("legacy", kLegacyDecoder));
  // Replace, then Strip takes one space off the start of the fused text.
  EXPECT_EQ(tok->decode({1, kSpHi, kSpHi, 2}), "Hi Hi");
  EXPECT_EQ(tok->decode({kSpSp, kB}), " b");
  EXPECT_EQ(tok->decode({byteId(0xE2), byteId(0x98), byteId(0x83), kSpHi}), "\xE2\x98\x83 Hi");
  // A run of byte tokens that is not UTF-8: one U+FFFD per token (where a
  // lossy conversion of the bytes would give one for the pair).
  EXPECT_EQ(tok->decode({byteId(0xE2), byteId(0x98), kSpHi}), "\xEF\xBF\xBD\xEF\xBF\xBD Hi");
  EXPECT_EQ(tok->tokenBytes(kSpHi), " Hi");
  EXPECT_EQ(tok->tokenBytes(byteId(0xE2)), "\xE2");
  EXPECT_EQ(tok->tokenBytes(1), "");
  EXPECT_EQ(tok->bosId(), 1);
  EXPECT_EQ(tok->eosIds(), (Ids{2}));
  // Metaspace's decoder drops every ▁ of the text's first token (Hugging
  // Face's rule), and none where its scheme is "never".
  auto meta = loadTokenizer("hf-bpe", spmFixture(metaspace("first", false), metaspace("first", false)));
  EXPECT_EQ(meta->decode({kSpSp, kB}), "b");
  EXPECT_EQ(meta->decode({kB, kSpSp, kSpHi}), "b   Hi");
  EXPECT_EQ(meta->tokenBytes(kSpSp), "  ");
  auto never = loadTokenizer("hf-bpe", spmFixture(metaspace("first", false), metaspace("never", false)));
  EXPECT_EQ(never->decode({kSpSp, kB}), "  b");
  for (const Ids &ids : {Ids{kSpHi, kSpSp, kB, byteId(0xE2), byteId(0x98), byteId(0x83), kSpA},
                         Ids{byteId(0xE2), kH, kSpHi}})
    for (const Tokenizer *t : {tok.get(), meta.get()}) expectStreamMatchesDecode(*t, ids);
}

TEST(HfSentencePiece, ErrorsNameTheField) {
  struct Case {
    nlohmann::json pre, decoder;
    const char *where, *what;
  } cases[] = {
      {"legacy", nullptr, "decoder", "is missing"},
      {"legacy", {{"type", "Sequence"}, {"decoders", {{{"type", "Fuse"}}, {{"type", "WordPiece"}}}}},
       "decoder.decoders[1]", "\"WordPiece\""},
      {"legacy", {{"type", "Strip"}, {"content", "ab"}, {"start", 1}, {"stop", 0}}, "decoder.content",
       "not one character"},
      {"legacy", {{"type", "Strip"}, {"content", " "}, {"start", -1}, {"stop", 0}}, "decoder", "\"start\""},
      {"legacy", {{"type", "ByteLevel"}}, "decoder", "\"ByteLevel\""},
      {{{"type", "Metaspace"}, {"replacement", kMeta}, {"add_prefix_space", false}}, kLegacyDecoder,
       "pre_tokenizer", "disagree"},
      {metaspace("sometimes", true), kLegacyDecoder, "pre_tokenizer.prepend_scheme", "\"sometimes\""},
      {{{"type", "Metaspace"}, {"replacement", "__"}}, kLegacyDecoder, "pre_tokenizer.replacement",
       "not one character"},
  };
  for (const Case &c : cases) {
    std::string msg = inputError([&] { loadTokenizer("hf-bpe", spmFixture(c.pre, c.decoder)); });
    EXPECT_NE(msg.find(std::string(c.where) + " "), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.what), std::string::npos) << msg;
  }
  nlohmann::json j = nlohmann::json::parse(spmFixture("legacy", kLegacyDecoder));
  j["normalizer"]["normalizers"][1]["pattern"] = {{"String", ""}};
  std::string msg = inputError([&] { loadTokenizer("hf-bpe", j.dump()); });
  EXPECT_NE(msg.find("normalizer.normalizers[1].pattern.String is empty"), std::string::npos) << msg;
}

// ----------------------------------------------------------------------------
// The byte-level BPE vocabulary of a GGUF (tokenizer.ggml.model "gpt2")
// ----------------------------------------------------------------------------

/// What a GGUF's vocabulary holds besides the tokens and merges.
struct GgufBpeOptions {
  std::string pre;
  int32_t padTo = 0; // ids below this the tokenizer lacks: "[PADn]", unused
  int32_t bos = -1, eos = -1;
  std::optional<bool> addBos;
};

/// A GGUF holding the vocabulary of a tokenizer.json as llama.cpp's
/// convert_hf_to_gguf.py writes it: one token per id, ids the tokenizer lacks
/// as "[PADn]" of type unused (5), added tokens as control (3) when special
/// and user-defined (4) when not, the rest normal (1); the merges as "a b".
void writeGgufBpe(const fs::path &out, const std::string &tokenizerJson, const GgufBpeOptions &o) {
  const nlohmann::json j = nlohmann::json::parse(readFile(tokenizerJson));
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  auto put = [&](int64_t id, const std::string &text, int32_t type) {
    if (size_t(id) >= tokens.size()) {
      tokens.resize(size_t(id) + 1);
      types.resize(size_t(id) + 1, 0);
    }
    tokens[size_t(id)] = text;
    types[size_t(id)] = type;
  };
  for (const auto &[text, id] : j["model"]["vocab"].items()) put(id.get<int64_t>(), text, 1);
  for (const auto &a : j["added_tokens"])
    put(a["id"].get<int64_t>(), a["content"].get<std::string>(), a["special"].get<bool>() ? 3 : 4);
  if (o.padTo > 0 && size_t(o.padTo) > tokens.size()) {
    tokens.resize(size_t(o.padTo));
    types.resize(size_t(o.padTo), 0);
  }
  for (size_t i = 0; i < tokens.size(); ++i)
    if (types[i] == 0) {
      tokens[i] = "[PAD" + std::to_string(i) + "]";
      types[i] = 5;
    }
  std::vector<std::string> merges;
  for (const auto &m : j["model"]["merges"])
    merges.push_back(m.is_string() ? m.get<std::string>()
                                   : m[0].get<std::string>() + " " + m[1].get<std::string>());
  kvplan::testing::GgufWriter w;
  w.string("general.architecture", "llama");
  w.string("tokenizer.ggml.model", "gpt2");
  if (!o.pre.empty()) w.string("tokenizer.ggml.pre", o.pre);
  w.strings("tokenizer.ggml.tokens", tokens);
  w.i32s("tokenizer.ggml.token_type", types);
  w.strings("tokenizer.ggml.merges", merges);
  if (o.bos >= 0) w.u32("tokenizer.ggml.bos_token_id", uint32_t(o.bos));
  if (o.eos >= 0) w.u32("tokenizer.ggml.eos_token_id", uint32_t(o.eos));
  if (o.addBos) w.boolean("tokenizer.ggml.add_bos_token", *o.addBos);
  w.write(out);
}

TEST(GgufBpe, Llama3VocabularyMatchesHuggingFaceVectors) {
  const std::string json = modelPath("llama3-tokenizer/tokenizer.json");
  REQUIRE_MODEL_FILE(json);
  ScratchDir dir;
  const fs::path gguf = dir / "llama3.gguf";
  // As Llama 3's GGUFs say it: pre "llama-bpe", BOS 128000 added (the
  // family's default, so the key is left out here).
  writeGgufBpe(gguf, json, {"llama-bpe", 0, 128000, 128009, std::nullopt});
  auto tok = loadTokenizerFile(gguf.string());
  EXPECT_EQ(tok->kind(), "hf-bpe");
  EXPECT_EQ(tok->vocabSize(), 128256);
  expectTokenizerMeetsVectors(*tok, "tokenizer-vectors/ggml-vocab-llama-bpe.gguf", unchanged);
  const std::string text = "<|start_header_id|>user<|end_header_id|>\n\nHello, 12345 world!";
  const Ids ids = tok->encode(text, true);
  ASSERT_GE(ids.size(), 4u);
  EXPECT_EQ(ids[0], 128000);
  EXPECT_EQ(ids[1], 128006); // <|start_header_id|>, matched whole
  EXPECT_EQ(ids[3], 128007);
  EXPECT_EQ(tok->decode(ids), "user\n\nHello, 12345 world!"); // special tokens decode to nothing
  const std::vector<int32_t> eos = tok->eosIds();
  EXPECT_NE(std::find(eos.begin(), eos.end(), 128009), eos.end());
  // The artifact keeps it as a tokenizer.json, which reads back the same.
  auto stored = loadTokenizer(tok->kind(), tok->serialize());
  EXPECT_EQ(stored->encode(text, true), ids);
  EXPECT_EQ(stored->bosId(), 128000);

  // add_bos_token false is obeyed.
  writeGgufBpe(gguf, json, {"llama-bpe", 0, 128000, 128009, false});
  tok = loadTokenizerFile(gguf.string());
  EXPECT_EQ(tok->bosId(), -1);
  EXPECT_EQ(tok->encode("Hello", true), tok->encode("Hello", false));
}

// gpt-oss's GGUFs: harmony's tokens are control tokens there, and its
// answers end at <|return|> or <|call|>, not at <|end|> (a message's end).
TEST(GgufBpe, HarmonyEndsAtReturnAndCall) {
  nlohmann::json root = nlohmann::json::parse(fixtureJson(false));
  int id = 400;
  for (const char *name : {"<|start|>", "<|end|>", "<|message|>", "<|return|>", "<|call|>"})
    root["added_tokens"].push_back(
        {{"id", id++}, {"content", name}, {"special", true}, {"normalized", false}});
  ScratchDir dir;
  writeFile(dir / "tokenizer.json", root.dump());
  writeGgufBpe(dir / "o.gguf", (dir / "tokenizer.json").string(), {"gpt-4o", 0, -1, 403, false});
  auto tok = loadTokenizerFile((dir / "o.gguf").string());
  const Ids eos = tok->eosIds();
  EXPECT_EQ(std::count(eos.begin(), eos.end(), 401), 0) << "<|end|>";
  EXPECT_EQ(std::count(eos.begin(), eos.end(), 403), 1) << "<|return|>";
  EXPECT_EQ(std::count(eos.begin(), eos.end(), 404), 1) << "<|call|>";
  EXPECT_EQ(tok->specialTokenId("<|message|>"), 402);
}

TEST(GgufBpe, QwenVocabularyMatchesHuggingFaceVectors) {
  const std::string json = modelPath("qwen3-tokenizer/tokenizer.json");
  REQUIRE_MODEL_FILE(json);
  ScratchDir dir;
  const fs::path gguf = dir / "qwen.gguf";
  // Qwen's GGUFs: pre "qwen2", the vocabulary padded to the embedding's
  // 151,936 rows, BOS not added.
  writeGgufBpe(gguf, json, {"qwen2", 151936, 151643, 151645, false});
  auto tok = loadTokenizerFile(gguf.string());
  // The ids it defines, as the tokenizer.json has; the padding is the
  // model's (a Hugging Face Qwen checkpoint's embedding has those rows too).
  EXPECT_EQ(tok->vocabSize(), 151669);
  EXPECT_EQ(tok->bosId(), -1);
  expectTokenizerMeetsVectors(*tok, "tokenizer-vectors/ggml-vocab-qwen2.gguf", nfc);
  // NFC, as Qwen's tokenizer.json normalizes.
  EXPECT_EQ(tok->encode("Caf" "e\xCC\x81", false), tok->encode("Caf\xC3\xA9", false));
  // A control token is matched and decodes to nothing; a user-defined one
  // (<think>, "special": false in tokenizer.json) is matched and decodes to
  // its text; padding decodes to nothing.
  const Ids ids = tok->encode("<|im_start|>assistant\n<think>\nok</think>", false);
  ASSERT_GE(ids.size(), 2u);
  EXPECT_EQ(ids[0], 151644);
  EXPECT_NE(std::find(ids.begin(), ids.end(), 151667), ids.end());
  EXPECT_EQ(tok->decode(ids), "assistant\n<think>\nok</think>");
  EXPECT_EQ(tok->decode({151900}), "");
  EXPECT_EQ(tok->encode("[PAD151900]", false),
            loadTokenizerFile(json)->encode("[PAD151900]", false));
  const std::vector<int32_t> eos = tok->eosIds();
  EXPECT_NE(std::find(eos.begin(), eos.end(), 151645), eos.end());
  // DeepSeek-R1's Qwen distills: Qwen's vocabulary under pre
  // "deepseek-r1-qwen" (which llama.cpp reads as "qwen2"), BOS added.
  const fs::path r1 = dir / "r1.gguf";
  writeGgufBpe(r1, json, {"deepseek-r1-qwen", 151936, 151643, 151643, true});
  auto distill = loadTokenizerFile(r1.string());
  EXPECT_EQ(distill->bosId(), 151643);
  expectTokenizerMeetsVectors(*distill, "tokenizer-vectors/ggml-vocab-qwen2.gguf", nfc);
}

/// A GGUF of a four-token BPE vocabulary ("a", "b", "ab", and control
/// "<s>"), with `edit` changing the writer's inputs before it writes.
std::string tinyGgufBpe(const ScratchDir &dir,
                        const std::function<void(std::map<std::string, std::string> &,
                                                 std::vector<std::string> &,
                                                 std::vector<int32_t> &,
                                                 std::vector<std::string> &)> &edit) {
  std::map<std::string, std::string> strings = {{"tokenizer.ggml.model", "gpt2"},
                                                {"tokenizer.ggml.pre", "qwen2"}};
  std::vector<std::string> tokens = {"a", "b", "ab", "<s>"}, merges = {"a b"};
  std::vector<int32_t> types = {1, 1, 1, 3};
  edit(strings, tokens, types, merges);
  kvplan::testing::GgufWriter w;
  for (const auto &[k, v] : strings) w.string(k, v);
  w.strings("tokenizer.ggml.tokens", tokens);
  if (!types.empty()) w.i32s("tokenizer.ggml.token_type", types);
  w.strings("tokenizer.ggml.merges", merges);
  const fs::path p = dir / "tiny-bpe.gguf";
  w.write(p);
  return p.string();
}

// pre "gpt-4o" (Phi-4-mini's GGUFs; "llama4" too) splits words where the
// case turns and keeps a contraction with its word, as the o200k pattern
// does; pre "llama-bpe" keeps "AbAb" whole and splits off "'s". Merges that
// cross those boundaries tell the two apart.
TEST(GgufBpe, Gpt4oPatternSplitsWordsAtCaseChanges) {
  ScratchDir dir;
  auto tokenizer = [&](const std::string &pre) {
    return loadTokenizerFile(tinyGgufBpe(dir, [&](auto &strings, auto &tokens, auto &types,
                                                  auto &merges) {
      strings["tokenizer.ggml.pre"] = pre;
      tokens = {"A", "b", "Ab", "AbAb", "'", "s", "'s", "Ab's"};
      types.assign(tokens.size(), 1);
      merges = {"A b", "Ab Ab", "' s", "Ab 's"};
    }));
  };
  for (const char *pre : {"gpt-4o", "llama4"}) {
    SCOPED_TRACE(pre);
    auto tok = tokenizer(pre);
    EXPECT_EQ(tok->encode("AbAb", false), (Ids{2, 2}));
    EXPECT_EQ(tok->encode("Ab's", false), (Ids{7}));
    EXPECT_EQ(tok->bosId(), -1);
  }
  auto llama3 = tokenizer("llama-bpe");
  EXPECT_EQ(llama3->encode("AbAb", false), (Ids{3}));
  EXPECT_EQ(llama3->encode("Ab's", false), (Ids{2, 6}));
}

TEST(GgufBpe, ErrorsNameTheKey) {
  ScratchDir dir;
  auto none = [](auto &, auto &, auto &, auto &) {};
  auto tok = loadTokenizerFile(tinyGgufBpe(dir, none));
  EXPECT_EQ(tok->encode("ab<s>b", false), (Ids{2, 3, 1}));
  EXPECT_EQ(tok->decode({2, 3, 1}), "abb");
  // A merge may make a user-defined token (it is in the vocabulary too).
  tok = loadTokenizerFile(tinyGgufBpe(dir, [](auto &, auto &, auto &t, auto &) { t[2] = 4; }));
  EXPECT_EQ(tok->encode("ab", false), (Ids{2}));
  EXPECT_EQ(tok->decode({2}), "ab");
  struct Case {
    std::function<void(std::map<std::string, std::string> &, std::vector<std::string> &,
                       std::vector<int32_t> &, std::vector<std::string> &)>
        edit;
    std::vector<std::string> expect;
  };
  const std::vector<Case> cases = {
      {[](auto &s, auto &, auto &, auto &) { s.erase("tokenizer.ggml.pre"); },
       {"no tokenizer.ggml.pre", "\"llama-bpe\"", "--tokenizer"}},
      {[](auto &s, auto &, auto &, auto &) { s["tokenizer.ggml.pre"] = "falcon"; },
       {"tokenizer.ggml.pre is \"falcon\"", "\"qwen2\"", "--tokenizer"}},
      {[](auto &, auto &, auto &t, auto &) { t.clear(); }, {"no tokenizer.ggml.token_type"}},
      {[](auto &, auto &, auto &t, auto &) { t.pop_back(); },
       {"tokenizer.ggml.token_type", "one entry per token (4)"}},
      {[](auto &, auto &, auto &t, auto &) { t[1] = 9; }, {"tokenizer.ggml.token_type[1] is 9"}},
      {[](auto &, auto &, auto &, auto &m) { m.push_back("ab"); },
       {"tokenizer.ggml.merges[1] is \"ab\"", "one space"}},
      {[](auto &, auto &k, auto &, auto &) { k[1] = "\xff"; },
       {"tokenizer.ggml.tokens[1] is not valid UTF-8"}},
      {[](auto &, auto &k, auto &, auto &) { k[3] = ""; }, {"tokenizer.ggml.tokens[3]", "empty"}},
      {[](auto &, auto &, auto &, auto &m) { m.push_back("b a"); },
       {"as a tokenizer.json", "model.merges[1]", "missing from model.vocab"}},
      {[](auto &s, auto &, auto &, auto &) { s["tokenizer.ggml.model"] = "bert"; },
       {"tokenizer.ggml.model is \"bert\"", "\"gpt2\"", "--tokenizer"}},
  };
  for (const Case &c : cases) {
    const std::string path = tinyGgufBpe(dir, c.edit);
    std::string msg = inputError([&] { loadTokenizerFile(path); });
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    for (const std::string &e : c.expect) EXPECT_NE(msg.find(e), std::string::npos) << msg;
  }
}

// ----------------------------------------------------------------------------
// The byte tokenizer

TEST(ByteTokenizer, LlamaByteLayout) {
  auto tok = makeByteTokenizer(300);
  EXPECT_EQ(tok->kind(), "bytes");
  EXPECT_EQ(tok->serialize(), "300");
  EXPECT_EQ(tok->vocabSize(), 300);
  EXPECT_EQ(tok->bosId(), 1);
  EXPECT_EQ(tok->eosIds(), Ids{2});
  EXPECT_EQ(tok->encode("Hi", true), (Ids{1, 'H' + 3, 'i' + 3}));
  EXPECT_EQ(tok->decode({1, 'H' + 3, 'i' + 3, 2, 0, 299}), "Hi");
  EXPECT_EQ(tok->decode(tok->encode("café 🙂", false)), "café 🙂");
}

// ----------------------------------------------------------------------------
// Streaming decode and serialization, over every kind

/// One tokenizer of each kind that the test data allows.
std::vector<std::unique_ptr<Tokenizer>> everyKind() {
  std::vector<std::unique_ptr<Tokenizer>> all;
  for (const char *rel : {"stories260K/tok512.model", "stories260K/tok512.bin", "stories260K/stories260K.gguf",
                          "llama2-tokenizer/tokenizer.model", "llama2-tokenizer/tokenizer.bin",
                          "tiny-random-gguf/llama-2-tiny-random.gguf"})
    if (fs::exists(modelPath(rel)))
      all.push_back(loadTokenizerFile(modelPath(rel)));
  all.push_back(loadTokenizer("hf-bpe", fixtureJson(false)));
  all.push_back(loadTokenizer("hf-bpe", fixtureJson(true)));
  all.push_back(makeByteTokenizer(259));
  return all;
}

TEST(StreamDecoder, ReproducesDecodeForEveryKind) {
  for (const auto &tok : everyKind()) {
    SCOPED_TRACE(tok->kind());
    for (const std::string &s : allSentences())
      expectStreamMatchesDecode(*tok, tok->encode(s, true));
    // A long generation-like stream, and control tokens mid-stream.
    Ids ids = tok->encode(joined(allSentences()), true);
    Ids more = tok->encode(" and then 🙂 again", false);
    if (!tok->eosIds().empty())
      ids.push_back(tok->eosIds()[0]);
    ids.insert(ids.end(), more.begin(), more.end());
    if (tok->bosId() >= 0)
      ids.push_back(tok->bosId());
    ids.insert(ids.end(), more.begin(), more.end());
    expectStreamMatchesDecode(*tok, ids);
  }
}

TEST(StreamDecoder, HoldsBackSplitCharacters) {
  std::string bin = modelPath("stories260K/tok512.bin");
  std::vector<std::unique_ptr<Tokenizer>> toks;
  toks.push_back(makeByteTokenizer(259));
  if (fs::exists(bin))
    toks.push_back(loadTokenizerFile(bin));
  for (const char *rel : {"stories260K/tok512.model", "stories260K/stories260K.gguf"})
    if (fs::exists(modelPath(rel)))
      toks.push_back(loadTokenizerFile(modelPath(rel)));
  for (const auto &tok : toks) {
    SCOPED_TRACE(tok->kind());
    // 🙂 is no piece in these vocabularies: four byte tokens (ids byte + 3).
    StreamDecoder stream(*tok);
    std::string out;
    for (int32_t id : Ids{1, 'a' + 3, 0xF0 + 3, 0x9F + 3, 0x99 + 3}) out += stream.push(id);
    EXPECT_EQ(out, "a");
    EXPECT_EQ(stream.push(0x82 + 3), "🙂");
    EXPECT_EQ(stream.push('b' + 3), "b");
    EXPECT_EQ(stream.flush(), "");
  }
  // Hugging Face: é as its two byte tokens.
  auto hf = loadTokenizer("hf-bpe", fixtureJson(false));
  StreamDecoder stream(*hf);
  EXPECT_EQ(stream.push('c'), "c");
  EXPECT_EQ(stream.push(0xC3), "");
  EXPECT_EQ(stream.push(0xA9), "é");
  // An incomplete tail comes out of flush as decode() renders it.
  EXPECT_EQ(stream.push(0xC3), "");
  EXPECT_EQ(stream.flush(), "\xEF\xBF\xBD");
}

TEST(StreamDecoder, KeepsTheSentencePieceLeadingSpaceRule) {
  for (const char *rel : {"llama2-tokenizer/tokenizer.model", "tiny-random-gguf/llama-2-tiny-random.gguf",
                          "llama2-tokenizer/tokenizer.bin"}) {
    std::string path = modelPath(rel);
    if (!fs::exists(path))
      continue;
    auto tok = loadTokenizerFile(path);
    SCOPED_TRACE(tok->kind());
    StreamDecoder stream(*tok);
    std::string out;
    std::vector<std::string> chunks;
    for (int32_t id : tok->encode("Hello world again and again", true)) {
      chunks.push_back(stream.push(id));
      out += chunks.back();
    }
    out += stream.flush();
    EXPECT_EQ(out, "Hello world again and again");
    // Mid-stream pieces keep their leading space although the stream
    // decodes only a short window.
    EXPECT_EQ(chunks.back(), " again");
  }
}

TEST(StreamDecoder, ContinuesAfterAPrompt) {
  for (const auto &tok : everyKind()) {
    SCOPED_TRACE(tok->kind());
    for (const std::string &s : allSentences()) {
      const Ids ids = tok->encode(s, true);
      const std::string whole = tok->decode(ids);
      // Each cut between a prompt and what follows it where the prompt's
      // text is whole and begins the whole text: what follows comes out
      // as the rest of decode(all of it).
      for (size_t cut = 1; cut < ids.size(); ++cut) {
        const Ids prompt(ids.begin(), ids.begin() + std::ptrdiff_t(cut));
        const std::string before = tok->decode(prompt);
        if (whole.compare(0, before.size(), before) != 0 || !isCompleteUtf8(before) ||
            before.find("\xEF\xBF\xBD") != std::string::npos)
          continue;
        StreamDecoder stream(*tok, prompt);
        std::string after;
        for (size_t i = cut; i < ids.size(); ++i) after += stream.push(ids[i]);
        after += stream.flush();
        EXPECT_EQ(after, whole.substr(before.size())) << s << " cut at " << cut;
      }
    }
  }
  // SentencePiece's leading space, which decode() drops from its first
  // piece: a completion of "... a little" is " girl", as the prompt's
  // text followed by it reads (and as vLLM and llama.cpp answer).
  for (const char *rel : {"stories260K/tok512.model", "llama2-tokenizer/tokenizer.model",
                          "llama2-tokenizer/tokenizer.bin"}) {
    const std::string path = modelPath(rel);
    if (!fs::exists(path)) continue;
    auto tok = loadTokenizerFile(path);
    SCOPED_TRACE(rel);
    const Ids prompt = tok->encode("Once upon a time, there was a little", true);
    const Ids whole = tok->encode("Once upon a time, there was a little girl", true);
    ASSERT_TRUE(std::equal(prompt.begin(), prompt.end(), whole.begin()));
    const Ids girl(whole.begin() + std::ptrdiff_t(prompt.size()), whole.end()); // "▁girl"...
    StreamDecoder fresh(*tok), after(*tok, prompt), afterBos(*tok, {tok->bosId()});
    std::string alone, continued, first;
    for (int32_t id : girl) {
      alone += fresh.push(id);
      continued += after.push(id);
      first += afterBos.push(id);
    }
    // SentencePiece's decode() drops the space at the start of its ids
    // (llama2.c's only after BOS): why a stream must go on from the prompt.
    if (tok->kind() == "sentencepiece") {
      EXPECT_EQ(alone + fresh.flush(), "girl");
    }
    EXPECT_EQ(continued + after.flush(), " girl");
    EXPECT_EQ(first + afterBos.flush(), "girl"); // at the start of a text, as decode()
  }
  // A character the prompt leaves incomplete is the prompt's: the ids
  // that complete it add their own bytes, once the character is whole.
  auto bytes = makeByteTokenizer(259);
  StreamDecoder split(*bytes, {1, 'a' + 3, 0xF0 + 3, 0x9F + 3});
  EXPECT_EQ(split.push(0x99 + 3), "");
  EXPECT_EQ(split.push(0x82 + 3), "\x99\x82");
  EXPECT_EQ(split.push('b' + 3), "b");
  EXPECT_EQ(split.flush(), "");
  // A decoder that writes U+FFFD for the incomplete character: it comes out
  // whole (else the completing ids' text would not begin with the prompt's).
  const std::string lossyPath = modelPath("stories260K/tok512.model");
  if (fs::exists(lossyPath)) {
    auto lossy = loadTokenizerFile(lossyPath);
    const Ids prompt{1, 'a' + 3, 0xF0 + 3, 0x9F + 3};
    ASSERT_EQ(lossy->decode(prompt), "a\xEF\xBF\xBD\xEF\xBF\xBD");
    StreamDecoder whole(*lossy, prompt);
    EXPECT_EQ(whole.push(0x99 + 3), "");
    EXPECT_EQ(whole.push(0x82 + 3), "\xF0\x9F\x99\x82");
    EXPECT_EQ(whole.push('b' + 3), "b");
    EXPECT_EQ(whole.flush(), "");
  }
}

/// Passes everything to another tokenizer and records how many ids each
/// decode() call was given.
class CountingTokenizer : public Tokenizer {
public:
  explicit CountingTokenizer(const Tokenizer &inner) : inner(inner) {}
  Ids encode(std::string_view text, bool addBos) const override { return inner.encode(text, addBos); }
  std::string decode(const Ids &ids) const override {
    ++calls;
    longest = std::max(longest, ids.size());
    return inner.decode(ids);
  }
  int32_t vocabSize() const override { return inner.vocabSize(); }
  int32_t bosId() const override { return inner.bosId(); }
  Ids eosIds() const override { return inner.eosIds(); }
  std::string kind() const override { return inner.kind(); }
  std::string serialize() const override { return inner.serialize(); }

  mutable size_t calls = 0, longest = 0;

private:
  const Tokenizer &inner;
};

TEST(StreamDecoder, DecodesABoundedWindow) {
  std::string text;
  for (int i = 0; i < 20; ++i) text += joined(allSentences());
  for (const auto &tok : everyKind()) {
    SCOPED_TRACE(tok->kind());
    CountingTokenizer counting(*tok);
    Ids ids = tok->encode(text, true);
    ASSERT_GT(ids.size(), 500u);
    StreamDecoder stream(counting);
    std::string out;
    for (int32_t id : ids) out += stream.push(id);
    out += stream.flush();
    EXPECT_EQ(out, tok->decode(ids));
    // A window of a few ids (a split 4-byte character plus context), and a
    // handful of decode calls per token, however long the stream.
    EXPECT_LE(counting.longest, 10u);
    EXPECT_LE(counting.calls, 6 * ids.size());
  }
}

// What a token adds to a text (beside its log-probability, and to what JSON
// mode checks): decode() of the whole ids is the reference.
TEST(TokenBytes, FollowDecodeAfterEveryCut) {
  for (const auto &tok : everyKind()) {
    SCOPED_TRACE(tok->kind());
    for (const std::string &s : allSentences()) {
      Ids ids = tok->encode(s, true);
      if (!tok->eosIds().empty()) ids.push_back(tok->eosIds()[0]);
      const std::string whole = tok->decode(ids);
      ASSERT_EQ(whole.find("\xEF\xBF\xBD"), std::string::npos) << s;
      // Each cut after which the text so far is whole and not empty: the
      // later ids' bytes, one after another, are the rest of the text.
      for (size_t cut = 1; cut < ids.size(); ++cut) {
        const std::string before = tok->decode(Ids(ids.begin(), ids.begin() + std::ptrdiff_t(cut)));
        if (before.empty() || whole.compare(0, before.size(), before) != 0) continue;
        std::string after;
        for (size_t i = cut; i < ids.size(); ++i) after += tok->tokenBytes(ids[i]);
        EXPECT_EQ(after, whole.substr(before.size())) << s << " cut at " << cut;
      }
    }
    // Control tokens add nothing; ids outside the vocabulary neither.
    if (tok->bosId() >= 0) {
      EXPECT_EQ(tok->tokenBytes(tok->bosId()), "");
    }
    for (int32_t eos : tok->eosIds()) EXPECT_EQ(tok->tokenBytes(eos), "");
    EXPECT_EQ(tok->tokenBytes(-1), "");
    EXPECT_EQ(tok->tokenBytes(tok->vocabSize()), "");
  }
}

TEST(TokenBytes, KeepTheLeadingSpaceAndTheBytesDecodeReplaces) {
  for (const char *rel : {"stories260K/tok512.model", "stories260K/tok512.bin",
                          "stories260K/stories260K.gguf", "llama2-tokenizer/tokenizer.model"}) {
    const std::string path = modelPath(rel);
    if (!fs::exists(path)) continue;
    auto tok = loadTokenizerFile(path);
    SCOPED_TRACE(rel);
    // "there" after "Once upon a time," is " there" (which decode() of the
    // token alone writes "there" but in llama2.c's rule).
    const Ids ids = tok->encode("Once upon a time, there", false);
    EXPECT_EQ(tok->tokenBytes(ids.back()), " there");
    // The llama byte-fallback layout: <0x00>..<0xFF> are ids 3..258, each
    // its byte exactly, where the library's decode() writes U+FFFD for the
    // bytes that are no character alone.
    for (int b = 0; b < 256; ++b) EXPECT_EQ(tok->tokenBytes(b + 3), std::string(1, char(b))) << b;
  }
  // Hugging Face byte-level BPE: a byte that begins a character is the byte
  // itself (decode() alone: U+FFFD).
  auto hf = loadTokenizer("hf-bpe", fixtureJson(false));
  EXPECT_EQ(hf->decode({0xC3}), "\xEF\xBF\xBD");
  EXPECT_EQ(hf->tokenBytes(0xC3), "\xC3");
  EXPECT_EQ(hf->tokenBytes('c'), "c");
}

TEST(Serialization, RoundTripsEveryKind) {
  for (const auto &tok : everyKind()) {
    SCOPED_TRACE(tok->kind());
    auto again = loadTokenizer(tok->kind(), tok->serialize());
    EXPECT_EQ(again->kind(), tok->kind());
    EXPECT_EQ(again->vocabSize(), tok->vocabSize());
    EXPECT_EQ(again->bosId(), tok->bosId());
    EXPECT_EQ(again->eosIds(), tok->eosIds());
    EXPECT_EQ(again->serialize(), tok->serialize());
    for (const std::string &s : allSentences()) {
      Ids ids = tok->encode(s, true);
      EXPECT_EQ(again->encode(s, true), ids) << s;
      EXPECT_EQ(again->decode(ids), tok->decode(ids));
    }
  }
}

// ----------------------------------------------------------------------------
// Errors: InputError naming the file and the problem

TEST(TokenizerErrors, MissingFile) {
  ScratchDir dir;
  std::string path = (dir / "no-such-tokenizer.bin").string();
  std::string msg = inputError([&] { loadTokenizerFile(path); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  for (const char *name : {"absent.model", "absent.json", "absent.gguf"}) {
    std::string p = (dir / name).string();
    std::string m = inputError([&] { loadTokenizerFile(p); });
    EXPECT_NE(m.find(p), std::string::npos) << m;
  }
  // Present but not what its name says.
  std::string garbage = (dir / "garbage.model").string();
  writeFile(garbage, "not a protobuf");
  msg = inputError([&] { loadTokenizerFile(garbage); });
  EXPECT_NE(msg.find(garbage), std::string::npos) << msg;
  EXPECT_NE(msg.find("sentencepiece"), std::string::npos) << msg;
}

TEST(TokenizerErrors, TruncatedTokenizerBin) {
  std::string bin = modelPath("stories260K/tok512.bin");
  REQUIRE_MODEL_FILE(bin);
  std::string bytes = readFile(bin);
  ScratchDir dir;
  // Cut inside the last entry, and inside the header.
  for (size_t keep : {bytes.size() - 3, size_t(2), bytes.size() - 1}) {
    std::string path = (dir / ("cut-" + std::to_string(keep) + ".bin")).string();
    writeFile(path, bytes.substr(0, keep));
    std::string msg = inputError([&] { loadTokenizerFile(path); });
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find("ends inside"), std::string::npos) << msg;
  }
  // Not a tokenizer.bin at all: a piece longer than max_token_length.
  std::string path = (dir / "notes.txt").string();
  writeFile(path, "These are some notes, not a tokenizer.\n");
  std::string msg = inputError([&] { loadTokenizerFile(path); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("llama2.c tokenizer.bin"), std::string::npos) << msg;
}

TEST(TokenizerErrors, MalformedTokenizerJson) {
  ScratchDir dir;
  struct Case {
    const char *name, *text, *expect;
  } cases[] = {
      {"broken.json", "{\"model\": {\"type\": \"BPE\", ", "malformed JSON"},
      {"wordpiece.json", "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}", "WordPiece"},
      {"nomerges.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}}", "model.merges"},
      {"badmerge.json",
       "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a b\"]},"
       " \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}",
       "model.merges[0]"},
      {"nodecoder.json",
       "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []},"
       " \"pre_tokenizer\": {\"type\": \"Metaspace\", \"replacement\": \"_\"}}",
       "decoder is missing"},
      {"badregex.json",
       "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []},"
       " \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\","
       " \"pattern\": {\"Regex\": \"(unclosed\"}, \"behavior\": \"Isolated\"}, {\"type\": \"ByteLevel\"}]}}",
       "does not compile"},
  };
  for (const Case &c : cases) {
    std::string path = (dir / c.name).string();
    writeFile(path, c.text);
    std::string msg = inputError([&] { loadTokenizerFile(path); });
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.expect), std::string::npos) << msg;
  }
}

/// A GGUF v3 file with only string metadata and no tensors.
std::string tinyGguf(const std::vector<std::pair<std::string, std::string>> &kv) {
  std::string out = "GGUF";
  auto put = [&](auto x) { out.append(reinterpret_cast<const char *>(&x), sizeof(x)); };
  auto str = [&](const std::string &s) {
    put(uint64_t(s.size()));
    out += s;
  };
  put(uint32_t(3));
  put(uint64_t(0));
  put(uint64_t(kv.size()));
  for (auto &[k, v] : kv) {
    str(k);
    put(uint32_t(8)); // string
    str(v);
  }
  return out;
}

TEST(TokenizerErrors, UnsupportedGgufTokenizer) {
  ScratchDir dir;
  std::string bert = (dir / "bert.gguf").string();
  writeFile(bert, tinyGguf({{"tokenizer.ggml.model", "bert"}}));
  std::string msg = inputError([&] { loadTokenizerFile(bert); });
  EXPECT_NE(msg.find(bert), std::string::npos) << msg;
  EXPECT_NE(msg.find("\"bert\""), std::string::npos) << msg;
  EXPECT_NE(msg.find("\"llama\""), std::string::npos) << msg;
  EXPECT_NE(msg.find("\"gpt2\""), std::string::npos) << msg;
  // A BPE vocabulary without its tokens.
  std::string gpt2 = (dir / "gpt2.gguf").string();
  writeFile(gpt2, tinyGguf({{"tokenizer.ggml.model", "gpt2"}, {"tokenizer.ggml.pre", "qwen2"}}));
  msg = inputError([&] { loadTokenizerFile(gpt2); });
  EXPECT_NE(msg.find("tokenizer.ggml.tokens"), std::string::npos) << msg;

  std::string none = (dir / "none.gguf").string();
  writeFile(none, tinyGguf({{"general.name", "x"}}));
  msg = inputError([&] { loadTokenizerFile(none); });
  EXPECT_NE(msg.find(none), std::string::npos) << msg;
  EXPECT_NE(msg.find("tokenizer.ggml.model"), std::string::npos) << msg;
}

/// A GGUF v3 file with a three-piece llama vocabulary (`pieces`), `types` as
/// its tokenizer.ggml.token_type (an f32 array) and `bos` as a u64
/// tokenizer.ggml.bos_token_id.
std::string ggufVocab(const std::vector<float> &types, uint64_t bos,
                      const std::vector<std::string> &pieces = {"a", "b", "c"}) {
  std::string out = "GGUF";
  auto put = [&](auto x) { out.append(reinterpret_cast<const char *>(&x), sizeof(x)); };
  auto str = [&](const std::string &s) {
    put(uint64_t(s.size()));
    out += s;
  };
  put(uint32_t(3));
  put(uint64_t(0));
  put(uint64_t(4));
  str("tokenizer.ggml.model");
  put(uint32_t(8));
  str("llama");
  str("tokenizer.ggml.tokens");
  put(uint32_t(9)); // array
  put(uint32_t(8)); // of strings
  put(uint64_t(pieces.size()));
  for (const std::string &p : pieces) str(p);
  str("tokenizer.ggml.token_type");
  put(uint32_t(9));
  put(uint32_t(6)); // of f32
  put(uint64_t(types.size()));
  for (float t : types) put(t);
  str("tokenizer.ggml.bos_token_id");
  put(uint32_t(10)); // u64
  put(bos);
  return out;
}

// Phi-3's GGUFs name no end-of-turn id; its turns end at <|end|> (as
// llama.cpp reads it), a user-defined token in converted files (control
// where the checkpoint marks it special); a normal piece of that text is not.
TEST(SentencePiece, GgufPhi3EndOfTurnEndsGeneration) {
  ScratchDir dir;
  std::string path = (dir / "v.gguf").string();
  // No eos_token_id: llama.cpp's default, 2.
  for (float type : {3.0f, 4.0f}) {
    writeFile(path, ggufVocab({1, 1, 3, type}, 0, {"a", "b", "</s>", "<|end|>"}));
    EXPECT_EQ(loadTokenizerFile(path)->eosIds(), (Ids{2, 3})) << type;
  }
  writeFile(path, ggufVocab({1, 1, 3, 1}, 0, {"a", "b", "</s>", "<|end|>"}));
  EXPECT_EQ(loadTokenizerFile(path)->eosIds(), (Ids{2}));
}

// Found by fuzz_gguf: a token type or id outside what the integer it becomes
// can hold (converting it was undefined behaviour) is an error naming it.
TEST(TokenizerErrors, GgufNumbersOutOfRange) {
  ScratchDir dir;
  std::string path = (dir / "v.gguf").string();
  writeFile(path, ggufVocab({1, 1, 1}, 0));
  EXPECT_EQ(loadTokenizerFile(path)->bosId(), 0);
  for (float bad : {-8.4e7f, 1e30f, std::nanf(""), 7.0f, 1.5f}) {
    writeFile(path, ggufVocab({1, bad, 1}, 0));
    std::string msg = inputError([&] { loadTokenizerFile(path); });
    EXPECT_NE(msg.find(path + ": tokenizer.ggml.token_type[1] is "), std::string::npos) << msg;
    EXPECT_NE(msg.find("expected 1 to 6"), std::string::npos) << msg;
  }
  writeFile(path, ggufVocab({1, 1, 1}, UINT64_MAX));
  std::string msg = inputError([&] { loadTokenizerFile(path); });
  EXPECT_NE(msg.find(path + ": metadata tokenizer.ggml.bos_token_id is 1.84467e+19, outside the "
                            "range of a 64-bit integer"),
            std::string::npos)
      << msg;
}

// Found by fuzz_tokenizer_sentencepiece: a model whose third piece starts
// with a NUL makes the sentencepiece library throw from its trie builder; it
// is an input error naming the tokenizer, not an abort.
TEST(TokenizerErrors, SentencePieceLibraryExceptions) {
  const std::string model("\x0a\x0e\x0a\x05<rnk>\x15\0\0\0\0\x18\x02*\x0c\x0a\x03>s>\x15\0\0\0\0"
                          "\x18\x03\x0a\x0d\x0a\x0b\0\0\0\0\0\0\0\x0f" "fk>",
                          45);
  std::string msg = inputError([&] { loadTokenizer("sentencepiece", model); });
  EXPECT_NE(msg.find("the stored sentencepiece tokenizer: not a valid sentencepiece model: "),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("zero-length key"), std::string::npos) << msg;
}

// Found by fuzz_tokenizer_hf: a TemplateProcessing post-processor whose
// special_tokens entry has no "ids" (or is no object) read a missing key of
// a const JSON object, which nlohmann leaves undefined (an assertion in the
// fuzzers' build); the token is then found by its name, or the name refused.
TEST(TokenizerErrors, TemplateSpecialTokensWithoutIds) {
  for (const nlohmann::json &entry : {nlohmann::json::object({{"id", "<s>"}}), nlohmann::json("<s>"),
                                      nlohmann::json::object({{"ids", "1"}})}) {
    nlohmann::json j = nlohmann::json::parse(spmFixture("legacy", kLegacyDecoder));
    j["post_processor"]["special_tokens"]["<s>"] = entry;
    EXPECT_EQ(loadTokenizer("hf-bpe", j.dump())->bosId(), 1) << entry;
    j["post_processor"]["single"][0]["SpecialToken"]["id"] = "<bos>";
    j["post_processor"]["special_tokens"] = {{"<bos>", entry}};
    std::string msg = inputError([&] { loadTokenizer("hf-bpe", j.dump()); });
    EXPECT_NE(msg.find("names special token \"<bos>\", which the tokenizer does not define"),
              std::string::npos)
        << msg;
  }
}

TEST(TokenizerErrors, BadSerializedForms) {
  EXPECT_NE(inputError([] { loadTokenizer("wordpiece", "x"); }).find("wordpiece"), std::string::npos);
  EXPECT_NE(inputError([] { loadTokenizer("bytes", "12x"); }).find("12x"), std::string::npos);
  EXPECT_NE(inputError([] { loadTokenizer("bytes", "100"); }).find("259"), std::string::npos);
  EXPECT_NE(inputError([] { loadTokenizer("gguf-spm", "kvplan-spm-vocab 1\n\x05"); }).find("gguf-spm"),
            std::string::npos);
  EXPECT_NE(inputError([] { loadTokenizer("sentencepiece", "not a model"); }).find("sentencepiece"),
            std::string::npos);
  EXPECT_NE(inputError([] { loadTokenizer("llama2c", std::string("\x07\0\0\0\0\0", 6)); }).find("llama2c"),
            std::string::npos);
}

} // namespace
