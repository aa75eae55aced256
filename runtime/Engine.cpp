// Sequence bookkeeping, pages and the prefix cache around an executor.
#include "runtime/Engine.h"
#include "plan/Cost.h"
#include "runtime/cpu/CpuExecutor.h"
#include "support/Align.h"
#include "support/Error.h"

#include <algorithm>

namespace kvplan {

Engine::Engine(const Plan &plan, const char *weights, uint64_t weightsBytes, int threads,
               const EngineOptions &options)
    : exec(std::make_unique<CpuExecutor>(plan, weights, weightsBytes, threads)) {
  init(options);
}

Engine::Engine(std::unique_ptr<Executor> executor, const EngineOptions &options)
    : exec(std::move(executor)) {
  init(options);
}

void Engine::init(const EngineOptions &options) {
  const Plan &p = exec->plan();
  chunk = p.entryPoints.at("prefill").rows;
  batch = p.entryPoints.at("decode").rows;
  auto v = p.entryPoints.find("verify");
  verify_ = v == p.entryPoints.end() ? 0 : v->second.rows;
  auto sc = p.entryPoints.find("score");
  score_ = sc == p.entryPoints.end() ? 0 : sc->second.rows;
  pagesPerSeq = p.kvCache.pagesPerSequence;
  window_ = attentionWindow(p);
  pool = PagePool(p.kvCache.pages, p.kvCache.pageSize, options.prefixCache, window_ > 0);
  windowed = p.windowCache.layers > 0;
  if (windowed) {
    poolWindow_ = windowPoolWindow(p);
    // The prefix cache reaches its pages through the main pool's
    // (companions), not by chains of its own.
    windowPool = PagePool(p.windowCache.pages, p.windowCache.pageSize, false, true);
    isCompanion.assign(size_t(p.windowCache.pages), false);
  }
  if (p.ranks() > 1 && !exec->collective())
    throw InputError("the model is split between " + std::to_string(p.ranks()) +
                     " tensor-parallel ranks, and its executor runs alone");
}

namespace {
/// Whether some row's logits are changed on the host before its draw
/// (penalties, biases, allowed or bad tokens, JSON or min_tokens): the
/// step's rows are then drawn on the host from whole rows, not on the device
/// nor from a tensor-parallel rank's candidates.
bool anyChanged(Sampler *const *samplers, int64_t count) {
  return std::any_of(samplers, samplers + count,
                     [](const Sampler *s) { return s->options().changesRow(); });
}

} // namespace

void Engine::sampleHost(const std::string &entry, Sampler *const *samplers, int64_t count,
                        int32_t *out) {
  // A tensor-parallel leader gathers whole rows for the rows changed on the
  // host; the others are drawn from the ranks' candidates.
  if (!exec->collective() || anyChanged(samplers, count)) {
    const float *logits = exec->logits(entry);
    for (int64_t r = 0; r < count; ++r)
      out[r] = samplers[r]->sample(logits + r * vocabSize(), vocabSize());
    return;
  }
  rowDraws.resize(size_t(count));
  for (int64_t r = 0; r < count; ++r) rowDraws[size_t(r)] = samplers[r]->row();
  exec->sampleRows(entry, rowDraws.data(), count, out);
}

int Engine::open() {
  int seq;
  if (!freeSlots.empty()) {
    seq = freeSlots.back();
    freeSlots.pop_back();
  } else {
    seq = int(seqs.size());
    seqs.emplace_back();
  }
  seqs[size_t(seq)] = Sequence();
  seqs[size_t(seq)].open = true;
  return seq;
}

void Engine::checkOpen(int seq) const {
  if (seq < 0 || size_t(seq) >= seqs.size() || !seqs[size_t(seq)].open)
    throw std::logic_error("sequence " + std::to_string(seq) + " is not open");
}

void Engine::close(int seq) {
  checkOpen(seq);
  Sequence &s = seqs[size_t(seq)];
  pool.dropAll(std::vector<int32_t>(s.pages.begin() + s.released, s.pages.end()));
  if (windowed)
    for (size_t i = s.windowPages.size(); i-- > size_t(s.windowReleased);) // last first
      dropWindow(s.windowPages[i]);
  s = Sequence();
  freeSlots.push_back(seq);
}

int64_t Engine::length(int seq) const {
  checkOpen(seq);
  return int64_t(seqs[size_t(seq)].tokens.size());
}

int64_t Engine::openSequences() const {
  return int64_t(seqs.size() - freeSlots.size());
}

int64_t Engine::pagesToGrow(int seq, int64_t tokens) const {
  checkOpen(seq);
  return std::max<int64_t>(0, ceilDiv(tokens, pageSize()) -
                                  int64_t(seqs[size_t(seq)].pages.size()));
}

int64_t Engine::peakPages(int64_t tokens) const { return sequencePeakPages(plan(), tokens); }

int64_t Engine::heldPages(int seq) const {
  checkOpen(seq);
  const Sequence &s = seqs[size_t(seq)];
  return int64_t(s.pages.size()) - s.released;
}

void Engine::checkToken(int32_t t) const {
  if (t < 0 || t >= vocabSize())
    throw InputError("token id " + std::to_string(t) + " is outside the vocabulary [0, " +
                     std::to_string(vocabSize()) + ")");
}

void Engine::checkContext(int64_t tokens) const {
  if (tokens > maxSeqLen())
    throw InputError("the sequence would hold " + std::to_string(tokens) +
                     " tokens but the plan's context is " + std::to_string(maxSeqLen()) +
                     " (compile with a larger --max-seq)");
}

int64_t Engine::freeWindowPages() const {
  return windowed ? windowPool.freePages() + cacheOnlyWindowPages : 0;
}

void Engine::checkPools() const {
  pool.check();
  if (!windowed) return;
  windowPool.check();
  int64_t cacheOnly = 0;
  for (const auto &[main, c] : companions) {
    if (!isCompanion[size_t(c.windowPage)])
      throw std::logic_error("window page " + std::to_string(c.windowPage) +
                             " is a companion not marked as one");
    cacheOnly += windowPool.refs(c.windowPage) == 1;
  }
  if (cacheOnly != cacheOnlyWindowPages || companions.size() != companionsByAge.size())
    throw std::logic_error("the sliding layers' pages the prefix cache alone holds are " +
                           std::to_string(cacheOnly) + ", counted " +
                           std::to_string(cacheOnlyWindowPages));
}

void Engine::holdWindow(int32_t page) {
  if (isCompanion[size_t(page)] && windowPool.refs(page) == 1) --cacheOnlyWindowPages;
  windowPool.hold(page);
}

void Engine::dropWindow(int32_t page) {
  windowPool.drop(page);
  if (isCompanion[size_t(page)] && windowPool.refs(page) == 1) ++cacheOnlyWindowPages;
}

void Engine::addCompanion(int32_t mainPage, int32_t windowPage) {
  if (companions.count(mainPage)) dropCompanion(mainPage); // of an earlier epoch
  holdWindow(windowPage); // the sequence that wrote it holds it too
  isCompanion[size_t(windowPage)] = true;
  const uint64_t stamp = ++companionClock;
  companions[mainPage] = {windowPage, pool.epoch(mainPage), stamp};
  companionsByAge[stamp] = mainPage;
}

void Engine::dropCompanion(int32_t mainPage) {
  auto it = companions.find(mainPage);
  const int32_t page = it->second.windowPage;
  if (windowPool.refs(page) == 1) --cacheOnlyWindowPages;
  isCompanion[size_t(page)] = false;
  windowPool.drop(page);
  companionsByAge.erase(it->second.stamp);
  companions.erase(it);
}

int32_t Engine::companionOf(int32_t mainPage) {
  auto it = companions.find(mainPage);
  if (it == companions.end()) return -1;
  Companion &c = it->second;
  if (!pool.isCached(mainPage) || pool.epoch(mainPage) != c.epoch) return -1;
  companionsByAge.erase(c.stamp);
  c.stamp = ++companionClock;
  companionsByAge[c.stamp] = mainPage;
  return c.windowPage;
}

int32_t Engine::takeWindowPage() {
  // Oldest first, those only the cache holds (or whose main page left it).
  for (auto it = companionsByAge.begin();
       windowPool.freePages() == 0 && it != companionsByAge.end();) {
    const int32_t main = it->second;
    ++it;
    const Companion &c = companions.at(main);
    const bool stale = !pool.isCached(main) || pool.epoch(main) != c.epoch;
    if (windowPool.refs(c.windowPage) == 1 || stale) {
      windowEvicted += windowPool.refs(c.windowPage) == 1;
      dropCompanion(main);
    }
  }
  return windowPool.take();
}

void Engine::requirePages(int64_t need, const std::string &needs) const {
  if (need > pool.available())
    throw InputError("the KV cache has " + std::to_string(pool.available()) +
                     " pages free but " + needs + " (compile with more --kv-pages)");
  if (windowed && need > freeWindowPages())
    throw InputError("the sliding-window layers' KV cache has " +
                     std::to_string(freeWindowPages()) + " pages free but " + needs +
                     " (compile with more --window-kv-pages)");
}

void Engine::grow(Sequence &s, int64_t tokens) {
  checkContext(tokens);
  const int64_t need = ceilDiv(tokens, pageSize()) - int64_t(s.pages.size());
  requirePages(need, "the sequence needs " + std::to_string(need) + " more");
  for (int64_t i = 0; i < need; ++i) {
    s.pages.push_back(pool.take());
    if (windowed) s.windowPages.push_back(takeWindowPage());
  }
}

namespace {
/// The most more pages a sequence of `length` tokens holding `held` pages
/// (`released` given back) takes from a pool under `window` on its way to
/// `tokens` in calls of `chunk` rows: each call holds the pages up to its
/// end and those from the ones given back at its start.
int64_t pagesToReach(int64_t length, int64_t held, int64_t released, int64_t window,
                     int64_t pageSize, int64_t chunk, int64_t tokens) {
  int64_t most = 0;
  for (int64_t at = length; at < tokens; at += chunk) {
    const int64_t end = std::min(at + chunk, tokens);
    const int64_t behind = std::max(released, pagesBehindWindow(window, pageSize, at));
    most = std::max(most, ceilDiv(end, pageSize) - behind);
  }
  return most - (held - released);
}
} // namespace

void Engine::checkRoom(const Sequence &s, int64_t tokens) const {
  checkContext(tokens);
  // What others hold stays as it is meanwhile.
  const int64_t length = int64_t(s.tokens.size()), held = int64_t(s.pages.size());
  const int64_t more =
      pagesToReach(length, held, s.released, window_, pageSize(), chunk, tokens);
  if (more > pool.available())
    throw InputError("the KV cache has " + std::to_string(pool.available()) +
                     " pages free but the sequence needs " + std::to_string(more) +
                     " more (compile with more --kv-pages)");
  if (!windowed) return;
  const int64_t moreWindow =
      pagesToReach(length, held, s.windowReleased, poolWindow_, pageSize(), chunk, tokens);
  if (moreWindow > freeWindowPages())
    throw InputError("the sliding-window layers' KV cache has " +
                     std::to_string(freeWindowPages()) +
                     " pages free but the sequence needs " + std::to_string(moreWindow) +
                     " more (compile with more --window-kv-pages)");
}

void Engine::releaseBehindWindow(Sequence &s) {
  const int64_t length = int64_t(s.tokens.size());
  const int64_t behind = pagesBehindWindow(window_, pageSize(), length);
  for (; s.released < behind; ++s.released) pool.drop(s.pages[size_t(s.released)]);
  if (!windowed) return;
  const int64_t windowBehind = pagesBehindWindow(poolWindow_, pageSize(), length);
  for (; s.windowReleased < windowBehind; ++s.windowReleased)
    dropWindow(s.windowPages[size_t(s.windowReleased)]);
}

namespace {
/// A page-table row: the pages, those given back replaced by the first
/// held, the rest 0.
void writeRow(const std::vector<int32_t> &pages, int64_t released, int64_t width,
              int32_t *row) {
  std::fill(row, row + width, 0);
  std::copy(pages.begin(), pages.end(), row);
  if (released > 0) std::fill(row, row + released, pages[size_t(released)]);
}
} // namespace

void Engine::writePageRows(const Sequence &s, int32_t *row, int32_t *windowRow) const {
  writeRow(s.pages, s.released, pagesPerSeq, row);
  if (windowed) writeRow(s.windowPages, s.windowReleased, pagesPerSeq, windowRow);
}

void Engine::writeEmptyRows(int32_t *row, int32_t *windowRow) const {
  std::fill(row, row + pagesPerSeq, 0);
  if (windowed) std::fill(windowRow, windowRow + pagesPerSeq, 0);
}

/// Offers the pages the sequence has filled since the last call to the
/// prefix cache, each chained to the one before it.
void Engine::publishFull(Sequence &s) {
  if (!pool.caching()) return; // nothing is shared: truncate() may go anywhere
  const int64_t full = int64_t(s.tokens.size()) / pageSize();
  for (; s.published < full; ++s.published) {
    const size_t i = size_t(s.published);
    const int32_t *tokens = s.tokens.data() + s.published * pageSize();
    // The sliding layers' page is held still: a sequence keeps its last
    // full page.
    if (pool.publish(i > 0 ? s.pages[i - 1] : -1, s.pages[i], tokens) && windowed)
      addCompanion(s.pages[i], s.windowPages[i]);
  }
}

std::vector<int32_t> Engine::windowPagesFor(PagePool::Match &m, int64_t &released) {
  for (;;) {
    const int64_t n = int64_t(m.full.size());
    released = pagesBehindWindow(poolWindow_, pageSize(), n * pageSize() + m.partialTokens);
    const int32_t partial = m.partialTokens > 0 ? companionOf(m.partial) : -1;
    std::vector<int32_t> pages(size_t(released), -1);
    for (int64_t j = released; j < n && int64_t(pages.size()) == j; ++j)
      if (const int32_t c = companionOf(m.full[size_t(j)]); c >= 0) pages.push_back(c);
    if (int64_t(pages.size()) == n && (m.partialTokens == 0 || partial >= 0)) {
      for (int64_t j = released; j < n; ++j) holdWindow(pages[size_t(j)]);
      // The partial page is copied in both pools: with room for both
      // copies (its companion, held while copied, is no room).
      if (m.partialTokens == 0 || partialRoom(partial)) return pages;
      for (int64_t j = n; j-- > released;) dropWindow(pages[size_t(j)]);
    }
    // Reuse less: without the partial page, then a full page fewer.
    if (m.partialTokens > 0) {
      m.partial = -1;
      m.partialTokens = 0;
      continue;
    }
    pool.drop(m.full.back());
    m.full.pop_back();
  }
}

bool Engine::partialRoom(int32_t windowFrom) const {
  return pool.available() > 0 && freeWindowPages() - (windowPool.refs(windowFrom) == 1) > 0;
}

int64_t Engine::reuse(int seq, const int32_t *tokens, int64_t count) {
  checkOpen(seq);
  Sequence &s = seqs[size_t(seq)];
  if (!s.tokens.empty()) throw std::logic_error("reuse() on a sequence that holds tokens");
  if (count <= 1) return 0;
  PagePool::Match m = pool.match(tokens, count - 1);
  if (windowed) s.windowPages = windowPagesFor(m, s.windowReleased);
  s.pages = m.full;
  int64_t held = int64_t(m.full.size()) * pageSize();
  // The sequence will write into the partial page: it gets a copy (in
  // both pools: windowPagesFor kept the partial page only with room). The
  // source is held while the copy's page is taken, so it cannot be the one
  // taken back.
  const int32_t windowFrom = windowed && m.partialTokens > 0 ? companionOf(m.partial) : -1;
  if (m.partialTokens > 0 && pool.available() > 0) {
    pool.hold(m.partial);
    const int32_t copy = pool.take();
    exec->copyPage(m.partial, copy, false);
    pool.drop(m.partial);
    s.pages.push_back(copy);
    if (windowed) {
      holdWindow(windowFrom);
      const int32_t windowCopy = takeWindowPage();
      exec->copyPage(windowFrom, windowCopy, true);
      dropWindow(windowFrom);
      s.windowPages.push_back(windowCopy);
    }
    held += m.partialTokens;
  }
  s.tokens.assign(tokens, tokens + held);
  s.published = int64_t(m.full.size());
  releaseBehindWindow(s);
  return held;
}

void Engine::writeSequenceInputs(const std::string &entry, const Sequence &s,
                                 const int32_t *tokens, int64_t count, int64_t rows) {
  const int64_t start = int64_t(s.tokens.size());
  int32_t *tok = exec->tokens(entry), *pos = exec->positions(entry);
  writePageRows(s, exec->pageTable(entry), exec->windowPageTable(entry));
  for (int64_t i = 0; i < rows; ++i) {
    tok[i] = i < count ? tokens[i] : 0;
    pos[i] = i < count ? int32_t(start + i) : -1;
  }
}

int32_t Engine::prefillStep(int seq, const int32_t *tokens, int64_t count, Sampler *rowSampler) {
  checkOpen(seq);
  if (count <= 0) throw InputError("a prompt needs at least one token");
  if (count > chunk) throw std::logic_error("a prefill step takes at most prefill_chunk tokens");
  for (int64_t i = 0; i < count; ++i) checkToken(tokens[i]);
  Sequence &s = seqs[size_t(seq)];
  grow(s, int64_t(s.tokens.size()) + count);
  writeSequenceInputs("prefill", s, tokens, count, chunk);
  const bool device = rowSampler && exec->samplesOnDevice() && !anyChanged(&rowSampler, 1);
  if (device) {
    params.assign(1, rowSampler->deviceRow());
    exec->setSampling("prefill", params.data(), 1);
  }
  exec->run("prefill", count);
  s.tokens.insert(s.tokens.end(), tokens, tokens + count);
  publishFull(s);
  releaseBehindWindow(s);
  if (!rowSampler) return -1;
  if (device) return exec->sampled("prefill")[0];
  int32_t next = -1;
  sampleHost("prefill", &rowSampler, 1, &next);
  return next;
}

const float *Engine::score(int seq, const int32_t *tokens, int64_t count) {
  checkOpen(seq);
  if (score_ == 0)
    throw InputError("the plan has no score entry point, which the prompt's log-probabilities "
                     "need (compile with --score-rows N)");
  if (count <= 0 || count > score_)
    throw std::logic_error("a score call takes 1 to score_rows tokens");
  Sequence &s = seqs[size_t(seq)];
  runOneSequence("score", s, tokens, count, score_);
  publishFull(s);
  releaseBehindWindow(s);
  return exec->logits("score");
}

void Engine::runOneSequence(const std::string &entry, Sequence &s, const int32_t *tokens,
                            int64_t count, int64_t rows) {
  for (int64_t i = 0; i < count; ++i) checkToken(tokens[i]);
  grow(s, int64_t(s.tokens.size()) + count);
  writeSequenceInputs(entry, s, tokens, count, rows);
  exec->run(entry, count);
  s.tokens.insert(s.tokens.end(), tokens, tokens + count);
}

std::vector<int32_t> Engine::decodeStep(const std::vector<int> &which,
                                        const std::vector<int32_t> &tokens,
                                        const std::vector<Sampler *> &samplers) {
  if (which.empty() || which.size() != tokens.size() || int64_t(which.size()) > batch)
    throw std::logic_error("decode needs one token for each of 1 to max_batch sequences");
  if (!samplers.empty() && samplers.size() != which.size())
    throw std::logic_error("decode needs a sampler for every row, or none");
  int64_t pagesNeeded = 0;
  for (size_t i = 0; i < which.size(); ++i) {
    checkOpen(which[i]);
    checkToken(tokens[i]);
    for (size_t j = 0; j < i; ++j)
      if (which[j] == which[i]) throw std::logic_error("a sequence appears twice in one step");
    pagesNeeded += pagesToGrow(which[i], length(which[i]) + 1);
  }
  requirePages(pagesNeeded, "this decode step needs " + std::to_string(pagesNeeded));
  for (int s : which) grow(seqs[size_t(s)], length(s) + 1);
  int32_t *tok = exec->tokens("decode"), *pos = exec->positions("decode");
  int32_t *table = exec->pageTable("decode"), *windowTable = exec->windowPageTable("decode");
  for (int64_t r = 0; r < batch; ++r) {
    int32_t *row = table + r * pagesPerSeq;
    int32_t *windowRow = windowed ? windowTable + r * pagesPerSeq : nullptr;
    const bool active = r < int64_t(which.size());
    if (active)
      writePageRows(seqs[size_t(which[size_t(r)])], row, windowRow);
    else
      writeEmptyRows(row, windowRow);
    tok[r] = active ? tokens[size_t(r)] : 0;
    pos[r] = active ? int32_t(length(which[size_t(r)])) : -1;
  }
  const int64_t rows = int64_t(which.size());
  const bool device = !samplers.empty() && exec->samplesOnDevice() &&
                      !anyChanged(samplers.data(), rows);
  if (device) {
    params.resize(size_t(rows));
    for (int64_t r = 0; r < rows; ++r) params[size_t(r)] = samplers[size_t(r)]->deviceRow();
    exec->setSampling("decode", params.data(), rows);
  }
  exec->run("decode", rows);
  for (size_t i = 0; i < which.size(); ++i) {
    Sequence &s = seqs[size_t(which[i])];
    s.tokens.push_back(tokens[i]);
    publishFull(s);
    releaseBehindWindow(s);
  }
  std::vector<int32_t> next;
  if (samplers.empty()) return next;
  next.resize(which.size());
  if (device) {
    const int32_t *t = exec->sampled("decode");
    std::copy(t, t + rows, next.begin());
    return next;
  }
  sampleHost("decode", samplers.data(), rows, next.data());
  return next;
}

/// Every chunk of `tokens`, the last drawn from by `lastSampler` (if any).
int32_t Engine::prefillAll(int seq, const int32_t *tokens, int64_t count, Sampler *lastSampler) {
  if (count <= 0) throw InputError("a prompt needs at least one token");
  checkOpen(seq);
  for (int64_t i = 0; i < count; ++i) checkToken(tokens[i]);
  checkRoom(seqs[size_t(seq)], length(seq) + count); // fail before running anything
  int64_t done = 0;
  for (; count - done > chunk; done += chunk) prefillStep(seq, tokens + done, chunk, nullptr);
  return prefillStep(seq, tokens + done, count - done, lastSampler);
}

const float *Engine::prefill(int seq, const int32_t *tokens, int64_t count) {
  prefillAll(seq, tokens, count, nullptr);
  return logits("prefill");
}

const float *Engine::decode(const std::vector<int> &which, const std::vector<int32_t> &tokens) {
  decodeStep(which, tokens, {});
  return logits("decode");
}

void Engine::setSampling(const SamplingOptions &options) { sampler = Sampler(options); }

int32_t Engine::prefillNext(int seq, const int32_t *tokens, int64_t count) {
  sampler.setPrompt(std::vector<int32_t>(tokens, tokens + std::max<int64_t>(count, 0)));
  return prefillAll(seq, tokens, count, &sampler);
}

std::vector<int32_t> Engine::decodeNext(const std::vector<int> &which,
                                        const std::vector<int32_t> &tokens) {
  return decodeStep(which, tokens, std::vector<Sampler *>(which.size(), &sampler));
}

} // namespace kvplan
