// Sequences over a compiled plan. A sequence holds KV-cache pages from the
// pool (runtime/PagePool.h) as it grows: prompts run as prefill chunks, then
// one decode step appends a token to each of up to max_batch sequences at
// once. Full pages enter the prefix cache as they fill, and a new sequence
// can start from cached pages instead of recomputing them (reuse()).
// Under a sliding window (the plan's attention reads each row's last
// `window` keys) a sequence gives back the pages behind its window as it
// grows (spec/ModelSpec.h's pagesBehindWindow): its length is bounded by
// max_seq_len, not by the pool. Where windowed and full layers mix (Gemma
// 2 and 3), the sliding layers keep their keys and values in a pool of
// their own (Plan::windowCache): a sequence holds a page of each pool for
// each page of its tokens, gives back the sliding layers' pages behind their
// window and keeps the others'. Sizes and counts below are the main pool's
// but freePages(), the fewer free of both; the sliding layers' pool holds at
// least one sequence (by default max_batch of them), and a call that would
// pass either pool throws before it runs.
// The prefix cache reaches the sliding layers' pages through the main
// pool's: each cached main page keeps its sliding layers' page (its
// companion) while their pool has room, oldest given back first, and a
// prompt is reused as far as the companions hold the pages within the
// window of the point it is reused to (those before it are never read).
// Any number of sequences may be open; the scheduler (runtime/Scheduler.h)
// decides which run.
#pragma once

#include "runtime/PagePool.h"
#include "runtime/Executor.h"
#include "runtime/Sampler.h"

#include <algorithm>
#include <map>
#include <memory>
#include <optional>
#include <unordered_map>

#include <cstdint>
#include <vector>

namespace kvplan {

struct EngineOptions {
  bool prefixCache = true; // false: full pages are not kept for reuse
};

class Engine {
public:
  /// On the CPU.
  Engine(const Plan &plan, const char *weights, uint64_t weightsBytes, int threads,
         const EngineOptions &options = {});
  /// On any executor (runtime/Executor.h).
  explicit Engine(std::unique_ptr<Executor> executor, const EngineOptions &options = {});

  const Plan &plan() const { return exec->plan(); }
  int threads() const { return exec->threads(); }
  Executor &executor() { return *exec; }
  int64_t vocabSize() const { return plan().model.vocabSize; }
  int64_t maxSeqLen() const { return plan().settings.maxSeqLen; }
  int64_t maxBatch() const { return batch; }
  int64_t prefillRows() const { return chunk; }
  int64_t pageSize() const { return pool.pageSize(); }
  PagePool &pages() { return pool; }
  const PagePool &pages() const { return pool; }

  /// Starts an empty sequence.
  int open();
  /// Ends a sequence: its pages go back to the pool, the full ones into the
  /// prefix cache.
  void close(int seq);
  /// Tokens the sequence holds in the cache.
  int64_t length(int seq) const;
  /// Sequences open now.
  int64_t openSequences() const;
  /// Pages a sequence can still take: no sequence holds them (free, or
  /// idle in the prefix cache); where the sliding layers have a pool of
  /// their own, the fewer of the two pools' (each page of a sequence's
  /// tokens takes one in each), so the scheduler makes room for either.
  int64_t freePages() const {
    return windowed ? std::min(pool.available(), freeWindowPages()) : pool.available();
  }
  /// The sliding layers' own pool (Plan::windowCache), where the plan has
  /// one; else null. Its pages held by the prefix cache alone count held
  /// there: freeWindowPages() counts them free.
  const PagePool *windowPages() const { return windowed ? &windowPool : nullptr; }
  /// Pages of that pool no sequence holds: free, or kept for the prefix
  /// cache (taken back on demand). 0 without the pool.
  int64_t freeWindowPages() const;
  /// Sliding layers' pages the prefix cache gave back for room since the
  /// engine was made.
  int64_t windowEvictions() const { return windowEvicted; }
  /// Checks both pools' invariants (PagePool::check) and the count of the
  /// sliding layers' pages the prefix cache alone holds; throws
  /// std::logic_error naming what is wrong. For tests.
  void checkPools() const;
  /// That pool's window (0: no such pool).
  int64_t poolWindow() const { return poolWindow_; }
  /// Pages the sequence must still take to hold `tokens` tokens.
  int64_t pagesToGrow(int seq, int64_t tokens) const;
  /// The plan's sliding window (0: attention reads every key).
  int64_t window() const { return window_; }
  /// The most pages one sequence holds at once on its way to `tokens`
  /// tokens (at most max_seq_len): tokens / page_size rounded up, or under
  /// a window its pages and one call's.
  int64_t peakPages(int64_t tokens) const;
  /// Pages the sequence holds now (those behind its window given back).
  int64_t heldPages(int seq) const;

  /// For an empty sequence about to take `tokens`: holds the cached pages
  /// that already hold its start, copying a cached page it would go on
  /// writing into, and returns how many tokens it now holds (at most
  /// count - 1: the last token is always run, for its logits).
  int64_t reuse(int seq, const int32_t *tokens, int64_t count);

  /// One prefill call appending tokens[0, count) (1 to prefillRows()) to
  /// the sequence. With a sampler, returns the token it draws after the
  /// last one (on the device where the executor samples there); else -1,
  /// and logits("prefill") holds the last token's logits.
  int32_t prefillStep(int seq, const int32_t *tokens, int64_t count, Sampler *sampler);
  /// One decode call: tokens[i] appended to seqs[i] (1 to maxBatch() rows).
  /// With samplers (one per row), returns each row's next token; else an
  /// empty vector, and logits("decode") holds [rows, vocab] logits.
  std::vector<int32_t> decodeStep(const std::vector<int> &seqs,
                                  const std::vector<int32_t> &tokens,
                                  const std::vector<Sampler *> &samplers);
  /// The last run's logits over the whole vocabulary (a tensor-parallel
  /// plan's leader gathers them from every rank).
  const float *logits(const std::string &entry) { return exec->logits(entry); }

  /// Appends `tokens` to the sequence, running prefill chunks; returns the
  /// logits after the last token (vocab floats, valid until the next call).
  /// Throws InputError when a token is outside the vocabulary or the
  /// sequence would exceed max_seq_len or the pool.
  const float *prefill(int seq, const int32_t *tokens, int64_t count);
  /// One decode step: token tokens[i] appended to sequence seqs[i]; returns
  /// [seqs.size(), vocab] logits, row i for seqs[i].
  const float *decode(const std::vector<int> &seqs, const std::vector<int32_t> &tokens);

  /// Speculative decoding (runtime/EngineSpeculate.cpp). Rows of one
  /// verify call: the plan's speculate + 1, or 0 when it has no @verify.
  int64_t verifyRows() const { return verify_; }
  /// One verify call: tokens[0, count) (1 to verifyRows()) appended to the
  /// sequence at its length, causal over its cache; returns [count, vocab]
  /// logits, row i the next-token logits after tokens[i] (valid until the
  /// next call). The tokens stay in the cache, but their pages enter the
  /// prefix cache only once truncate() or a later step keeps them.
  const float *verify(int seq, const int32_t *tokens, int64_t count);
  /// Rollback: the sequence keeps its first `length` tokens (at most its
  /// length) and gives back the pages past them; nothing is copied. Pages
  /// offered to the prefix cache are shared and never rolled back into,
  /// nor pages given back behind a window: throws std::logic_error below
  /// them.
  void truncate(int seq, int64_t length);
  /// Tokens at the start of the sequence in pages it offered to the prefix
  /// cache: truncate() goes no lower.
  int64_t publishedTokens(int seq) const;

  /// Prompt log-probabilities. Rows of one score call: the plan's
  /// score_rows, or 0 when it has no @score.
  int64_t scoreRows() const { return score_; }
  /// One score call: tokens[0, count) (1 to scoreRows()) appended to the
  /// sequence, as prefillStep appends them; returns [count, vocab] logits,
  /// row i the next-token logits after tokens[i] (valid until the next
  /// call).
  const float *score(int seq, const int32_t *tokens, int64_t count);

  /// Sampling for prefillNext/decodeNext (default: greedy). Throws
  /// InputError for bad options, as Sampler does.
  void setSampling(const SamplingOptions &options);
  /// prefill() and decode() that return the next token of each sequence
  /// instead of logits, drawn by the setSampling() sampler.
  int32_t prefillNext(int seq, const int32_t *tokens, int64_t count);
  std::vector<int32_t> decodeNext(const std::vector<int> &seqs,
                                  const std::vector<int32_t> &tokens);

private:
  struct Sequence {
    bool open = false;
    std::vector<int32_t> pages;
    std::vector<int32_t> tokens; // what the cache holds for it
    int64_t published = 0;       // leading pages offered to the prefix cache
    int64_t released = 0;        // leading pages given back behind the window
    // The sliding layers' pages where the plan has their pool: one for each
    // of `pages`, the leading `windowReleased` given back.
    std::vector<int32_t> windowPages;
    int64_t windowReleased = 0;
  };
  void checkToken(int32_t t) const;
  void checkOpen(int seq) const;
  void checkContext(int64_t tokens) const;
  void grow(Sequence &s, int64_t tokens);
  /// Throws InputError, before anything runs, unless the pools can hold
  /// the sequence's pages all the way to `tokens` in prefill calls.
  void checkRoom(const Sequence &s, int64_t tokens) const;
  /// Throws InputError unless `pages` more pages are free in both pools.
  void requirePages(int64_t pages, const std::string &forWhat) const;
  /// Gives back the pages behind the window of the sequence's next row.
  void releaseBehindWindow(Sequence &s);
  /// The sequence's page-table row: its pages, those given back replaced by
  /// the first it holds (attention never reads them; a kernel's masked
  /// loads read a page the sequence holds), the rest 0; and its row of the
  /// sliding layers' table alike where the plan has their pool.
  void writePageRows(const Sequence &s, int32_t *row, int32_t *windowRow) const;
  /// A padding row's: zeros.
  void writeEmptyRows(int32_t *row, int32_t *windowRow) const;
  /// Writes the inputs of a one-sequence entry point (prefill, verify, score) of
  /// `rows` rows: tokens[0, count) at the sequence's next positions, the
  /// rest padding (position -1), and its page table row.
  void writeSequenceInputs(const std::string &entry, const Sequence &s, const int32_t *tokens,
                           int64_t count, int64_t rows);
  /// Appends tokens[0, count) to `s` through one call of the one-sequence
  /// entry point `entry` (verify, score) of `rows` rows.
  void runOneSequence(const std::string &entry, Sequence &s, const int32_t *tokens,
                      int64_t count, int64_t rows);
  int32_t prefillAll(int seq, const int32_t *tokens, int64_t count, Sampler *lastSampler);
  void publishFull(Sequence &s);
  /// The prefix cache's sliding layers' pages (windowed plans): the
  /// companion of each cached main page, held once by the cache.
  struct Companion {
    int32_t windowPage = -1;
    uint64_t epoch = 0, stamp = 0; // the main page's epoch; when last used
  };
  /// A hold of a sliding layers' page, or one given back, keeping count
  /// of the pages the prefix cache alone holds.
  void holdWindow(int32_t page);
  void dropWindow(int32_t page);
  void addCompanion(int32_t mainPage, int32_t windowPage);
  void dropCompanion(int32_t mainPage);
  /// The companion of `mainPage` (used now), or -1 where it has none or
  /// the main page left the cache since.
  int32_t companionOf(int32_t mainPage);
  /// A page of the sliding layers' pool, giving back the oldest companions
  /// that nothing else holds until one is free.
  int32_t takeWindowPage();
  /// Trims a match of the main pool to what the companions continue: the
  /// pages within the window of the point reused, held for the sequence
  /// (-1 before them, never read); `released` is where they start.
  std::vector<int32_t> windowPagesFor(PagePool::Match &m, int64_t &released);
  /// Whether both pools have room to copy a partial page whose sliding
  /// layers' page is `windowFrom`.
  bool partialRoom(int32_t windowFrom) const;
  void init(const EngineOptions &options);
  /// The next tokens of rows [0, count) of the last run of `entry`, one
  /// sampler each, on the host: from whole rows of logits, or by every
  /// rank of a tensor-parallel plan together.
  void sampleHost(const std::string &entry, Sampler *const *samplers, int64_t count,
                  int32_t *out);

  std::unique_ptr<Executor> exec;
  Sampler sampler{SamplingOptions{}};
  int64_t chunk = 0, batch = 0, pagesPerSeq = 0, verify_ = 0, score_ = 0, window_ = 0;
  int64_t poolWindow_ = 0;
  PagePool pool{1, 1, false};
  bool windowed = false; // the plan has the sliding layers' pool
  PagePool windowPool{1, 1, false};
  std::unordered_map<int32_t, Companion> companions; // by main page
  std::map<uint64_t, int32_t> companionsByAge;       // stamp -> main page
  uint64_t companionClock = 0;
  int64_t windowEvicted = 0;
  std::vector<bool> isCompanion;     // by sliding layers' page
  int64_t cacheOnlyWindowPages = 0; // companions nothing else holds
  std::vector<Sequence> seqs;
  std::vector<int> freeSlots;
  std::vector<DeviceSamplingParams> params;
  std::vector<RowSampling> rowDraws;
};

} // namespace kvplan
