#include "server/Reasoning.h"

#include <cstring>

namespace kvplan::server {

namespace {

/// The length of the longest suffix of `s` that is a proper prefix of `tag`.
size_t partialTag(const std::string &s, const std::string &tag) {
  for (size_t k = std::min(s.size(), tag.size() - 1); k > 0; --k)
    if (s.compare(s.size() - k, k, tag, 0, k) == 0) return k;
  return 0;
}

} // namespace

ReasoningReader::Split ReasoningReader::feed(const std::string &text) {
  Split out;
  held += text;
  if (state == State::start) {
    const size_t n = open.size();
    if (held.size() < n && open.compare(0, held.size(), held) == 0)
      return out; // still maybe <think>
    if (held.compare(0, n, open) == 0) {
      state = State::thinking;
      held.erase(0, n);
    } else if (inThought) {
      state = State::thinking;
    } else {
      state = State::answer;
      lineStart = false;
    }
  }
  if (state == State::thinking) {
    const size_t close = held.find(this->close);
    std::string thought = close == std::string::npos ? held : held.substr(0, close);
    if (close == std::string::npos) {
      // Keep what may start </think>, and newlines that may end the reasoning.
      size_t keep = partialTag(thought, this->close);
      while (keep < thought.size() && thought[thought.size() - keep - 1] == '\n') ++keep;
      held = thought.substr(thought.size() - keep);
      thought.resize(thought.size() - keep);
    } else {
      held.erase(0, close + this->close.size());
      while (!thought.empty() && thought.back() == '\n') thought.pop_back();
    }
    size_t from = 0;
    if (lineStart) {
      while (from < thought.size() && thought[from] == '\n') ++from;
      lineStart = from == thought.size() && close == std::string::npos;
    }
    out.reasoning = thought.substr(from);
    if (close == std::string::npos) return out;
    state = State::answer;
    lineStart = true;
  }
  size_t from = 0;
  if (lineStart) {
    while (from < held.size() && held[from] == '\n') ++from;
    lineStart = from == held.size();
  }
  out.content = held.substr(from);
  held.clear();
  return out;
}

ReasoningReader::Split ReasoningReader::finish() {
  Split out;
  const bool thinking = state == State::thinking || (state == State::start && inThought);
  (thinking ? out.reasoning : out.content) = held;
  held.clear();
  return out;
}

} // namespace kvplan::server
