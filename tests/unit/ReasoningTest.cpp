// ReasoningReader: a thinking model's answer split into reasoning and
// content, whole or in any pieces, against the rule written out here.
#include "server/Reasoning.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

using kvplan::server::ReasoningReader;

namespace {

std::string trimNewlines(std::string s, bool front, bool back) {
  while (front && !s.empty() && s.front() == '\n') s.erase(s.begin());
  while (back && !s.empty() && s.back() == '\n') s.pop_back();
  return s;
}

/// The rule: an answer that starts with <think> has reasoning up to
/// </think> (newlines right inside the tags dropped; without </think>, all
/// the rest, its trailing newlines kept) and content after it (its leading
/// newlines dropped); any other answer is content. `opened` (the prompt
/// opened the thought): every answer is reasoning up to </think>, a leading
/// <think> dropped.
std::pair<std::string, std::string> expected(const std::string &text, bool opened = false) {
  const std::string open = "<think>", close = "</think>";
  const bool leading = text.compare(0, open.size(), open) == 0;
  if (!leading && !opened) return {"", text};
  const std::string rest = leading ? text.substr(open.size()) : text;
  const size_t end = rest.find(close);
  if (end == std::string::npos) return {trimNewlines(rest, true, false), ""};
  return {trimNewlines(rest.substr(0, end), true, true),
          trimNewlines(rest.substr(end + close.size()), true, false)};
}

/// `text` fed in pieces at `cuts`, then finished.
std::pair<std::string, std::string> read(const std::string &text, std::vector<size_t> cuts,
                                         bool opened = false) {
  ReasoningReader r(opened);
  std::string reasoning, content;
  size_t at = 0;
  cuts.push_back(text.size());
  for (size_t c : cuts) {
    ReasoningReader::Split s = r.feed(text.substr(at, c - at));
    reasoning += s.reasoning;
    content += s.content;
    at = c;
  }
  ReasoningReader::Split s = r.finish();
  return {reasoning + s.reasoning, content + s.content};
}

const std::vector<std::string> kAnswers = {
    "<think>\nLet me see.\n\nIt is 4.\n</think>\n\nThe answer is 4.",
    "<think>\n\n</think>\n\nNo thinking asked for.",
    "<think>cut before the end\n\n",
    "<think></think>x",
    "<think>\n</thin>k\n</think>",
    "The answer, no thought.",
    "<thin and not a tag",
    "<think",
    "",
    "\n<think>a leading newline: not a thought</think>",
    "<think>two</think>\n<think>the second is content</think>",
    "<think>\n</think</think>\n\n\nafter",
    "<think>é 🚀\n</think>\n中文",
    // As DeepSeek-R1's distills answer a prompt that opened the thought.
    "Okay, the user says hi.\n</think>\n\nHello! How can I help?",
    "\n\nStill thinking when cut",
    "</think>\n\nAn empty thought.",
};

void expectTheRuleInAnyPieces(bool opened) {
  std::mt19937 rng(7);
  for (const std::string &a : kAnswers) {
    SCOPED_TRACE(a);
    const auto want = expected(a, opened);
    EXPECT_EQ(read(a, {}, opened), want);
    for (size_t c = 0; c <= a.size(); ++c)
      EXPECT_EQ(read(a, {c}, opened), want) << "cut at " << c;
    for (int trial = 0; trial < 50; ++trial) {
      std::vector<size_t> cuts;
      for (size_t c = 0; c < a.size(); ++c)
        if (rng() % 3 == 0) cuts.push_back(c);
      EXPECT_EQ(read(a, cuts, opened), want);
    }
    std::vector<size_t> everyByte;
    for (size_t c = 0; c < a.size(); ++c) everyByte.push_back(c);
    EXPECT_EQ(read(a, everyByte, opened), want);
  }
}

} // namespace

TEST(Reasoning, ThoughtsAndAnswerSplitAsTheRuleSaysInAnyPieces) {
  expectTheRuleInAnyPieces(false);
}

TEST(Reasoning, AThoughtThePromptOpenedSplitsAsTheRuleSays) {
  expectTheRuleInAnyPieces(true);
  EXPECT_EQ(expected("Hmm.\n</think>\n\nHi", true), std::make_pair(std::string("Hmm."),
                                                                    std::string("Hi")));
}

TEST(Reasoning, NothingIsHeldThatCannotBecomeATag) {
  ReasoningReader r;
  EXPECT_EQ(r.feed("<thi").content, "");
  ReasoningReader::Split s = r.feed("nk>Hmm.\n");
  EXPECT_EQ(s.reasoning, "Hmm."); // the newline may end the reasoning: held
  s = r.feed("\nMore</th");
  EXPECT_EQ(s.reasoning, "\n\nMore");
  s = r.feed("ink>\n\nDone");
  EXPECT_EQ(s.reasoning, "");
  EXPECT_EQ(s.content, "Done");
  ReasoningReader plain;
  EXPECT_EQ(plain.feed("Hello <think>").content, "Hello <think>");
}

// Magistral's tags ([THINK] and [/THINK], control tokens given as their
// markers): the same rule, held only while they may still complete.
TEST(Reasoning, OtherTagsSplitTheSameWay) {
  ReasoningReader r(false, "[THINK]", "[/THINK]");
  EXPECT_EQ(r.feed("[THI").content, "");
  ReasoningReader::Split s = r.feed("NK]Hmm.[/TH");
  EXPECT_EQ(s.reasoning, "Hmm.");
  s = r.feed("INK]Done <think>");
  EXPECT_EQ(s.reasoning, "");
  EXPECT_EQ(s.content, "Done <think>");
  ReasoningReader plain(false, "[THINK]", "[/THINK]");
  EXPECT_EQ(plain.feed("<think>a</think>b").content, "<think>a</think>b");
}
