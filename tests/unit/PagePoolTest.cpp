// The page pool and its prefix cache on their own: states, reference counts,
// chains, partial matches and the order pages are taken back in.
#include "runtime/PagePool.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <vector>

using namespace kvplan;

namespace {

/// Four-token pages; tokens of page i of a sequence are base + i*4 ... .
std::vector<int32_t> seqTokens(int32_t base, int pages) {
  std::vector<int32_t> t;
  for (int i = 0; i < pages * 4; ++i) t.push_back(base + i);
  return t;
}

/// Takes pages for `tokens` and publishes each, as the engine does for a
/// sequence that filled them.
std::vector<int32_t> fill(PagePool &pool, const std::vector<int32_t> &tokens) {
  std::vector<int32_t> pages;
  for (size_t at = 0; at + 4 <= tokens.size(); at += 4) {
    pages.push_back(pool.take());
    pool.publish(pages.size() > 1 ? pages[pages.size() - 2] : -1, pages.back(),
                 tokens.data() + at);
  }
  return pages;
}

} // namespace

TEST(PagePool, PagesMoveBetweenFreeHeldAndIdle) {
  PagePool pool(4, 4, true);
  EXPECT_EQ(pool.available(), 4);
  const int32_t a = pool.take(), b = pool.take();
  EXPECT_EQ(a, 0);
  EXPECT_EQ(b, 1);
  EXPECT_EQ(pool.available(), 2);
  const std::vector<int32_t> t = seqTokens(10, 1);
  EXPECT_TRUE(pool.publish(-1, a, t.data()));
  pool.drop(a); // cached: idle, still available
  pool.drop(b); // not cached: free
  EXPECT_EQ(pool.idlePages(), 1);
  EXPECT_EQ(pool.freePages(), 3);
  EXPECT_EQ(pool.available(), 4);
  EXPECT_THROW(pool.drop(b), std::logic_error); // never below zero
  pool.check();
}

TEST(PagePool, MatchFollowsTheChainAndComparesTokens) {
  PagePool pool(8, 4, true);
  const std::vector<int32_t> t = seqTokens(100, 3);
  std::vector<int32_t> pages = fill(pool, t);
  pool.dropAll(pages);
  // The same tokens: all three pages, held for the caller.
  PagePool::Match m = pool.match(t.data(), 12);
  EXPECT_EQ(m.full, pages);
  for (int32_t p : pages) EXPECT_EQ(pool.refs(p), 1);
  pool.dropAll(m.full);
  // A token changed in page 1: page 0 only, then page 1 as a partial
  // match of the two tokens before the change.
  std::vector<int32_t> u = t;
  u[6] = 9999;
  m = pool.match(u.data(), 12);
  EXPECT_EQ(m.full, std::vector<int32_t>{pages[0]});
  EXPECT_EQ(m.partial, pages[1]);
  EXPECT_EQ(m.partialTokens, 2);
  EXPECT_EQ(pool.refs(pages[1]), 0); // a partial match is not held
  pool.dropAll(m.full);
  // Page 2's tokens after a different page 1 are not page 2: the chain,
  // not the tokens alone, names a page.
  std::vector<int32_t> v = seqTokens(500, 1);
  v.insert(v.end(), t.begin() + 8, t.end());
  m = pool.match(v.data(), 8);
  EXPECT_TRUE(m.full.empty());
  EXPECT_EQ(m.partialTokens, 0);
  // Fewer tokens than a page: a partial match of the first page.
  m = pool.match(t.data(), 3);
  EXPECT_TRUE(m.full.empty());
  EXPECT_EQ(m.partial, pages[0]);
  EXPECT_EQ(m.partialTokens, 3);
  pool.check();
}

TEST(PagePool, EqualPagesAreCachedOnce) {
  PagePool pool(8, 4, true);
  const std::vector<int32_t> t = seqTokens(7, 2);
  std::vector<int32_t> first = fill(pool, t), second = fill(pool, t);
  EXPECT_EQ(pool.cachedPages(), 2);
  // The second copy's page 1 follows an uncached page: not cached either.
  pool.dropAll(first);
  pool.dropAll(second);
  EXPECT_EQ(pool.idlePages(), 2);
  EXPECT_EQ(pool.freePages(), 6);
  pool.check();
}

TEST(PagePool, TakesBackTheLeastRecentlyUsedChainEndFirst) {
  PagePool pool(6, 4, true);
  std::vector<int32_t> older = fill(pool, seqTokens(0, 3));
  std::vector<int32_t> newer = fill(pool, seqTokens(1000, 3));
  pool.dropAll(older);
  pool.dropAll(newer);
  EXPECT_EQ(pool.freePages(), 0);
  EXPECT_EQ(pool.idlePages(), 6);
  // The older sequence goes first, its last page before its first.
  EXPECT_EQ(pool.take(), older[2]);
  EXPECT_EQ(pool.take(), older[1]);
  EXPECT_EQ(pool.take(), older[0]);
  EXPECT_EQ(pool.evictions(), 3);
  // The newer chain is whole.
  const std::vector<int32_t> t = seqTokens(1000, 3);
  PagePool::Match m = pool.match(t.data(), 12);
  EXPECT_EQ(m.full, newer);
  pool.check();
}

TEST(PagePool, TakingBackAPageTakesTheCachedPagesAfterIt) {
  PagePool pool(4, 4, true);
  std::vector<int32_t> pages = fill(pool, seqTokens(0, 2));
  pool.dropAll(pages);
  // A page copied from (held for the copy, then dropped) turns idle after
  // the page before it, which is then the older one.
  pool.hold(pages[1]);
  pool.drop(pages[1]);
  pool.check();
  const int32_t x = pool.take(), y = pool.take(); // the free pages
  // Taking back page 0 takes page 1 too: nothing could find it any more.
  EXPECT_EQ(pool.take(), pages[0]);
  EXPECT_EQ(pool.cachedPages(), 0);
  EXPECT_EQ(pool.freePages(), 1);
  EXPECT_EQ(pool.evictions(), 2);
  pool.drop(x);
  pool.drop(y);
  pool.check();
}

TEST(PagePool, TheCheckFindsAPageHeldWithoutThePageBeforeIt) {
  PagePool pool(4, 4, true);
  std::vector<int32_t> pages = fill(pool, seqTokens(0, 2));
  pool.dropAll(pages);
  pool.hold(pages[1]); // no sequence can hold page 1 without page 0
  EXPECT_THROW(pool.check(), std::logic_error);
  pool.drop(pages[1]);
  pool.check();
}

TEST(PagePool, UnderAWindowHeldPagesAfterOneTakenBackLeaveTheCache) {
  // A sequence under a sliding window gives back its first page and holds
  // the second; another went on past it into a third and ended.
  PagePool pool(4, 4, true, true);
  const std::vector<int32_t> t = seqTokens(0, 3);
  std::vector<int32_t> pages = fill(pool, std::vector<int32_t>(t.begin(), t.begin() + 8));
  pool.hold(pages[0]);
  pool.hold(pages[1]);
  const int32_t third = pool.take();
  ASSERT_TRUE(pool.publish(pages[1], third, t.data() + 8));
  pool.dropAll({pages[0], pages[1], third}); // the other sequence ends
  pool.drop(pages[0]);                       // the first page, behind the window
  pool.hold(third);                          // read for a copy: the newest idle page
  pool.drop(third);
  pool.check(); // a held page after an idle one is no fault under a window
  EXPECT_EQ(pool.idlePages(), 2);
  EXPECT_EQ(pool.match(t.data(), 12).full.size(), 3u);
  for (int32_t p : {pages[0], pages[1], third}) pool.drop(p);
  const int32_t free = pool.take();
  // Taking back page 0, the oldest idle one: page 1 is held, so it stays
  // with its holder but leaves the cache; the third, idle, goes free.
  EXPECT_EQ(pool.take(), pages[0]);
  EXPECT_EQ(pool.cachedPages(), 0);
  EXPECT_EQ(pool.freePages(), 1);
  EXPECT_EQ(pool.evictions(), 2);
  EXPECT_EQ(pool.refs(pages[1]), 1);
  pool.check();
  EXPECT_TRUE(pool.match(t.data(), 12).full.empty());
  // Nothing chains to a page out of the cache; dropped, it goes free.
  const int32_t next = pool.take();
  EXPECT_FALSE(pool.publish(pages[1], next, t.data() + 8));
  pool.drop(pages[1]);
  EXPECT_EQ(pool.freePages(), 1);
  EXPECT_EQ(pool.idlePages(), 0);
  for (int32_t p : {free, pages[0], next}) pool.drop(p);
  pool.check();
  EXPECT_EQ(pool.freePages(), 4);
}

TEST(PagePool, WithoutThePrefixCacheNothingIsKept) {
  PagePool pool(4, 4, false);
  const std::vector<int32_t> t = seqTokens(0, 2);
  std::vector<int32_t> pages = fill(pool, t);
  EXPECT_EQ(pool.cachedPages(), 0);
  pool.dropAll(pages);
  EXPECT_EQ(pool.freePages(), 4);
  PagePool::Match m = pool.match(t.data(), 8);
  EXPECT_TRUE(m.full.empty());
  EXPECT_EQ(m.partialTokens, 0);
}

TEST(PagePool, EveryPageHeldMeansNoPage) {
  PagePool pool(2, 4, true);
  pool.take();
  pool.take();
  EXPECT_EQ(pool.available(), 0);
  EXPECT_THROW(pool.take(), std::logic_error);
}
