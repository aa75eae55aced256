// Pieces shared by the tokenizer implementations: UTF-8 helpers, the one
// pair-merge engine behind every BPE kvplan runs, and each format's factory.
#pragma once

#include "formats/Tokenizer.h"
#include "support/Utf8.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <queue>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kvplan {

class GgufFile;

namespace tokenizer_detail {

/// Length of the UTF-8 sequence that `lead` starts, from the lead byte alone
/// (1 for continuation or invalid bytes, so that scanning always advances).
size_t utf8SequenceLength(unsigned char lead);

/// Splits `text` into characters the way llama2.c does: a lead byte and at
/// most three following continuation bytes (so invalid input still splits).
std::vector<std::string_view> splitUtf8Chars(std::string_view text);

/// The byte a byte-fallback piece written "<0xAB>" stands for (either
/// case of hex digits), or -1 for any other piece.
int bytePieceValue(std::string_view piece);

/// `bytes` as valid UTF-8: each maximal ill-formed subsequence becomes U+FFFD
/// (the Unicode "substitution of maximal subparts" practice, which Rust's
/// String::from_utf8_lossy and thus Hugging Face tokenizers follow).
std::string utf8Lossy(std::string_view bytes);

/// One symbol of a word being merged: its text and the id it has when the
/// vocabulary knows it (-1 when not).
struct MergeSymbol {
  std::string text;
  int32_t id = -1;
};

/// A merge the vocabulary allows for two adjacent symbols: the merged id, and
/// its priority (higher merges first).
struct MergeCandidate {
  double priority = 0;
  int32_t id = -1;
};

/// Merges adjacent symbols until no pair may merge, always taking the pair
/// with the highest priority and, among equal priorities, the leftmost one.
/// That is both sentencepiece's BPE (priority = score of the merged piece)
/// and Hugging Face BPE (priority = -rank of the merge). A priority queue
/// keeps it O(n log n) rather than llama2.c's rescan after every merge.
/// `candidate(left, right)` returns the merge of two symbols, if any.
template <typename CandidateFn>
std::vector<MergeSymbol> mergeSymbols(std::vector<MergeSymbol> symbols, CandidateFn candidate) {
  const size_t n = symbols.size();
  if (n < 2)
    return symbols;
  std::vector<int64_t> prev(n), next(n);
  std::vector<uint32_t> version(n, 0); // bumped when a symbol changes
  std::vector<bool> alive(n, true);
  for (size_t i = 0; i < n; ++i) {
    prev[i] = int64_t(i) - 1;
    next[i] = i + 1 < n ? int64_t(i) + 1 : -1;
  }
  struct Entry {
    double priority;
    int64_t left, right;
    uint32_t leftVersion, rightVersion;
    int32_t id;
  };
  // The queue's top is the highest priority, then the leftmost position: a
  // merged symbol keeps its left index, so index order is text order.
  auto lower = [](const Entry &a, const Entry &b) {
    if (a.priority != b.priority)
      return a.priority < b.priority;
    return a.left > b.left;
  };
  std::priority_queue<Entry, std::vector<Entry>, decltype(lower)> queue(lower);
  auto consider = [&](int64_t l, int64_t r) {
    if (l < 0 || r < 0)
      return;
    if (std::optional<MergeCandidate> c = candidate(symbols[l], symbols[r]))
      queue.push({c->priority, l, r, version[l], version[r], c->id});
  };
  for (size_t i = 0; i + 1 < n; ++i)
    consider(int64_t(i), int64_t(i) + 1);
  while (!queue.empty()) {
    Entry e = queue.top();
    queue.pop();
    // Entries are never removed from the queue; skip the ones a previous
    // merge made stale.
    if (!alive[e.left] || !alive[e.right] || next[e.left] != e.right ||
        version[e.left] != e.leftVersion || version[e.right] != e.rightVersion)
      continue;
    MergeSymbol &l = symbols[e.left];
    l.text += symbols[e.right].text;
    l.id = e.id;
    ++version[e.left];
    alive[e.right] = false;
    next[e.left] = next[e.right];
    if (next[e.right] >= 0)
      prev[next[e.right]] = e.left;
    consider(prev[e.left], e.left);
    consider(e.left, next[e.left]);
  }
  std::vector<MergeSymbol> out;
  for (int64_t i = 0; i >= 0; i = next[i])
    out.push_back(std::move(symbols[i]));
  return out;
}

// Factories. `origin` names the file (or the serialized form) in errors.
std::unique_ptr<Tokenizer> makeSentencePiece(std::string modelBytes, const std::string &origin);
std::unique_ptr<Tokenizer> makeLlama2c(std::string fileBytes, const std::string &origin);
std::unique_ptr<Tokenizer> makeGgufVocab(const GgufFile &gguf);
/// The byte-level BPE vocabulary of a GGUF (tokenizer.ggml.model "gpt2").
std::unique_ptr<Tokenizer> makeGgufBpe(const GgufFile &gguf);
std::unique_ptr<Tokenizer> makeSerializedSpmVocab(std::string_view bytes, const std::string &origin);
std::unique_ptr<Tokenizer> makeHfBpe(std::string json, const std::string &origin);

} // namespace tokenizer_detail
} // namespace kvplan
