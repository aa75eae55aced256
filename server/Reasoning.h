// A thinking model's answer split into its reasoning and its content, as
// vLLM's and llama.cpp's servers return them ("reasoning_content" beside
// "content"): Qwen3 writes <think>...</think> before the answer;
// DeepSeek-R1's template opens the thought in the prompt, so its models
// write the reasoning, </think>, then the answer; Magistral writes
// [THINK]...[/THINK] (control tokens, given as their markers). Read as the
// text streams, holding back only what may still become a tag.
#pragma once

#include <string>
#include <utility>

namespace kvplan::server {

class ReasoningReader {
public:
  struct Split {
    std::string reasoning, content;
  };

  /// `inThought`: the prompt opened the thought (DeepSeek-R1), so the
  /// answer begins as reasoning (a <think> it writes anyway is dropped, as
  /// vLLM's reader does) until </think>.
  /// `open` and `close`: the tags (Qwen3's by default).
  explicit ReasoningReader(bool inThought = false, std::string open = kOpen,
                           std::string close = kClose)
      : inThought(inThought), open(std::move(open)), close(std::move(close)) {}

  /// The reasoning and content that `text` (the next piece of the answer)
  /// completes. An answer that does not begin with <think> (nor in a
  /// thought the prompt opened) is all content (a model that does not
  /// think, or was asked not to); the text between <think> and </think> is
  /// reasoning, without the newlines right inside the tags (as Qwen3's
  /// template writes it back), and what follows is content, without the
  /// newlines right after </think>. A second <think>
  /// is content.
  Split feed(const std::string &text);
  /// What is still held: a tag that never completed is text; reasoning
  /// whose </think> never came (the answer cut at max_tokens) stays
  /// reasoning.
  Split finish();

  static constexpr const char *kOpen = "<think>";
  static constexpr const char *kClose = "</think>";

private:
  enum class State { start, thinking, answer };
  bool inThought;
  std::string open, close;
  State state = State::start;
  std::string held;     // a possible tag's start, or newlines that may end the reasoning
  bool lineStart = true; // newlines here are dropped (right after a tag)
};

} // namespace kvplan::server
