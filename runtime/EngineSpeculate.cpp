// The engine's half of speculative decoding: one verify call over draft
// tokens, and the rollback that takes back the rejected ones.
#include "runtime/Engine.h"
#include "support/Align.h"
#include "support/Error.h"

#include <algorithm>

namespace kvplan {

const float *Engine::verify(int seq, const int32_t *tokens, int64_t count) {
  checkOpen(seq);
  if (verify_ == 0)
    throw InputError("the plan has no verify entry point (compile with --speculate K)");
  if (count <= 0 || count > verify_)
    throw std::logic_error("a verify step takes 1 to speculate + 1 tokens");
  // Not published: the caller keeps some of these tokens (truncate()).
  runOneSequence("verify", seqs[size_t(seq)], tokens, count, verify_);
  return exec->logits("verify");
}

int64_t Engine::publishedTokens(int seq) const {
  checkOpen(seq);
  return seqs[size_t(seq)].published * pageSize();
}

void Engine::truncate(int seq, int64_t length) {
  checkOpen(seq);
  Sequence &s = seqs[size_t(seq)];
  if (length < 0 || length > int64_t(s.tokens.size()))
    throw std::logic_error("truncate to " + std::to_string(length) + " tokens of a sequence of " +
                           std::to_string(s.tokens.size()));
  if (length < s.published * pageSize())
    throw std::logic_error("truncate to " + std::to_string(length) +
                           " tokens would roll back into pages shared through the prefix cache (" +
                           std::to_string(s.published * pageSize()) + " tokens)");
  if (pagesBehindWindow(window_, pageSize(), length) < s.released ||
      (windowed && pagesBehindWindow(poolWindow_, pageSize(), length) < s.windowReleased))
    throw std::logic_error("truncate to " + std::to_string(length) +
                           " tokens would roll back behind the window, into pages given back");
  s.tokens.resize(size_t(length));
  const size_t keep = size_t(ceilDiv(length, pageSize()));
  // Last first, as dropAll gives pages back.
  while (s.pages.size() > keep) {
    pool.drop(s.pages.back());
    s.pages.pop_back();
    if (!windowed) continue;
    dropWindow(s.windowPages.back());
    s.windowPages.pop_back();
  }
  publishFull(s);
  releaseBehindWindow(s);
}

} // namespace kvplan
