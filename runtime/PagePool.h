// The KV cache's pages as a pool shared by every sequence, and the prefix
// cache over it.
//
// A page is in exactly one of three states: free (nobody holds it, it holds
// nothing worth keeping), held (one or more sequences hold it: `refs` > 0) or
// idle (nobody holds it, but it stays in the prefix cache until the pool
// needs it back). A full page enters the prefix cache when the sequence that
// wrote it publishes it; it is then named by the tokens it holds and by the
// cached page before it (a chain from the first page of the sequence, so a
// page is found only after everything before it matched, as in vLLM's hash
// chain). Every lookup compares the tokens themselves: a hash collision can
// never hand out the wrong keys and values.
//
// Cached pages are only ever read: a sequence writes at its own length,
// past every page it shares. A sequence that continues inside a cached page
// (the prompt ends, or diverges, part way through it) gets a private copy.
//
// When the pool runs out of free pages, it takes back idle pages, least
// recently used first. A sequence gives back its last page first, so a
// chain is reclaimed from its end and its start (the part most often
// shared) lives longest; taking back a page that still has cached pages
// after it takes those too, as nothing could reach them any more. Under a
// sliding window a sequence also gives back its first pages while it holds
// later ones: a held page after one taken back leaves the cache (its
// holders keep it, and it goes free when they drop it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <set>
#include <unordered_map>
#include <vector>

namespace kvplan {

class PagePool {
public:
  /// `pages` pages of `pageSize` tokens; with `prefixCache` false, publish()
  /// keeps nothing and match() finds nothing. `windowed`: holders may give
  /// back a chain's first pages and keep later ones (for check()).
  PagePool(int64_t pages, int64_t pageSize, bool prefixCache, bool windowed = false);

  int64_t size() const { return int64_t(nodes.size()); }
  int64_t pageSize() const { return pageSize_; }
  bool caching() const { return prefixCache; }
  /// Pages nobody holds: free ones and idle cached ones (taken back on
  /// demand).
  int64_t available() const { return int64_t(freeList.size() + idle.size()); }
  int64_t freePages() const { return int64_t(freeList.size()); }
  int64_t idlePages() const { return int64_t(idle.size()); }
  int64_t cachedPages() const { return cached; }
  int32_t refs(int32_t page) const { return nodes.at(size_t(page)).refs; }
  /// Whether the page is in the prefix cache now.
  bool isCached(int32_t page) const { return nodes.at(size_t(page)).isCached; }
  /// How many times take() handed the page out: a page cached at one epoch
  /// and cached at the same epoch later holds the same tokens all along.
  uint64_t epoch(int32_t page) const { return epochs.at(size_t(page)); }

  /// A page to write, held once: a free one, else the least recently used
  /// idle one. Throws std::logic_error when every page is held (callers
  /// check available() first).
  int32_t take();
  /// Holds a page once more (a page found by match(), or one held already).
  void hold(int32_t page);
  /// Gives back one hold; at none the page turns idle if cached, else free.
  void drop(int32_t page);
  /// Gives back a sequence's pages, last first (see the header comment).
  void dropAll(const std::vector<int32_t> &pages);

  /// Puts a full page in the prefix cache: `tokens` are its pageSize tokens,
  /// `parent` the sequence's page before it (-1 for the first). Does nothing
  /// (returns false) when caching is off, the parent is not cached, the page
  /// is cached already or an equal page is.
  bool publish(int32_t parent, int32_t page, const int32_t *tokens);

  /// The cached pages that hold the start of tokens[0, count): `full` whole
  /// pages, held once each for the caller; then, where the next cached page
  /// begins with `partialTokens` (> 0) more of the tokens, that page
  /// (`partial`, not held: copy it before anything else takes a page).
  struct Match {
    std::vector<int32_t> full;
    int32_t partial = -1;
    int64_t partialTokens = 0;
  };
  Match match(const int32_t *tokens, int64_t count);

  /// Pages taken back from the cache since the pool was made.
  int64_t evictions() const { return evicted; }

  /// Checks every invariant (each page in one state, the counts, the
  /// cache's index and chains, no held page below an idle one unless
  /// windowed); throws
  /// std::logic_error naming what is wrong. For tests.
  void check() const;

private:
  struct Node {
    int32_t refs = 0;
    bool isCached = false;
    int32_t parent = -1;           // cached: the page before it
    uint64_t key = 0;              // cached: hash of parent and tokens
    uint64_t stamp = 0;            // idle: when it turned idle
    std::vector<int32_t> tokens;   // cached: what it holds
    std::vector<int32_t> children; // cached pages after it
  };

  static uint64_t keyOf(int32_t parent, const int32_t *tokens, int64_t n);
  int32_t find(int32_t parent, const int32_t *tokens) const;
  std::vector<int32_t> &childrenOf(int32_t parent);
  const std::vector<int32_t> &childrenOf(int32_t parent) const;
  void evict(int32_t page);
  /// Takes a cached page out of the cache, and the cached pages after it:
  /// idle ones go free, held ones stay held, uncached.
  void forget(int32_t page);

  int64_t pageSize_;
  bool prefixCache, windowed;
  std::vector<Node> nodes;
  std::vector<uint64_t> epochs; // per page: take()s so far
  std::vector<int32_t> freeList;                // taken from the back
  std::set<std::pair<uint64_t, int32_t>> idle;  // by stamp, oldest first
  std::unordered_multimap<uint64_t, int32_t> index;
  std::vector<int32_t> roots; // cached first pages
  uint64_t clock = 0;
  int64_t cached = 0, evicted = 0;
};

} // namespace kvplan
