// Page states, the prefix cache's chains and least-recently-used reclaim.
#include "runtime/PagePool.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace kvplan {

PagePool::PagePool(int64_t pages, int64_t pageSize, bool prefixCache, bool windowed)
    : pageSize_(pageSize), prefixCache(prefixCache), windowed(windowed), nodes(size_t(pages)),
      epochs(size_t(pages), 0) {
  if (pages <= 0 || pageSize <= 0) throw std::logic_error("a page pool needs pages");
  // Taken from the back: hand out page 0 first.
  for (int64_t i = pages - 1; i >= 0; --i) freeList.push_back(int32_t(i));
}

uint64_t PagePool::keyOf(int32_t parent, const int32_t *tokens, int64_t n) {
  // FNV-1a over the parent and the tokens, then a final mix; lookups
  // compare the tokens, so the hash only has to spread well.
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](uint32_t v) {
    for (int b = 0; b < 4; ++b) h = (h ^ ((v >> (8 * b)) & 0xff)) * 1099511628211ull;
  };
  mix(uint32_t(parent));
  for (int64_t i = 0; i < n; ++i) mix(uint32_t(tokens[i]));
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  return h ^ (h >> 33);
}

std::vector<int32_t> &PagePool::childrenOf(int32_t parent) {
  return parent < 0 ? roots : nodes[size_t(parent)].children;
}
const std::vector<int32_t> &PagePool::childrenOf(int32_t parent) const {
  return parent < 0 ? roots : nodes[size_t(parent)].children;
}

int32_t PagePool::find(int32_t parent, const int32_t *tokens) const {
  auto [b, e] = index.equal_range(keyOf(parent, tokens, pageSize_));
  for (auto it = b; it != e; ++it) {
    const Node &n = nodes[size_t(it->second)];
    if (n.parent == parent && std::equal(n.tokens.begin(), n.tokens.end(), tokens))
      return it->second;
  }
  return -1;
}

void PagePool::evict(int32_t page) {
  Node &n = nodes[size_t(page)];
  if (n.refs != 0 || !n.isCached) throw std::logic_error("evicting a page in use");
  idle.erase({n.stamp, page});
  forget(page);
  ++evicted;
}

void PagePool::forget(int32_t page) {
  Node &n = nodes[size_t(page)];
  // Cached pages after it could no longer be found: they go too. They are
  // idle, as whoever holds a page holds the page before it, except where a
  // sequence gave back the pages behind its window: those it holds stay.
  while (!n.children.empty()) {
    const int32_t child = n.children.back();
    if (nodes[size_t(child)].refs > 0) {
      forget(child);
    } else {
      evict(child);
      freeList.push_back(child);
    }
  }
  auto [b, e] = index.equal_range(n.key);
  for (auto it = b; it != e; ++it)
    if (it->second == page) {
      index.erase(it);
      break;
    }
  std::vector<int32_t> &siblings = childrenOf(n.parent);
  siblings.erase(std::find(siblings.begin(), siblings.end(), page));
  const int32_t refs = n.refs;
  n = Node();
  n.refs = refs;
  --cached;
}

int32_t PagePool::take() {
  if (freeList.empty()) {
    if (idle.empty()) throw std::logic_error("every page of the KV cache is held");
    const int32_t oldest = idle.begin()->second;
    evict(oldest);
    freeList.push_back(oldest);
  }
  const int32_t page = freeList.back();
  freeList.pop_back();
  nodes[size_t(page)].refs = 1;
  ++epochs[size_t(page)];
  return page;
}

void PagePool::hold(int32_t page) {
  Node &n = nodes.at(size_t(page));
  if (n.refs == 0) {
    if (!n.isCached) throw std::logic_error("holding a free page");
    idle.erase({n.stamp, page});
  }
  ++n.refs;
}

void PagePool::drop(int32_t page) {
  Node &n = nodes.at(size_t(page));
  if (n.refs <= 0) throw std::logic_error("dropping page " + std::to_string(page) + " held by none");
  if (--n.refs > 0) return;
  if (n.isCached) {
    n.stamp = ++clock;
    idle.insert({n.stamp, page});
  } else {
    n.tokens.clear();
    freeList.push_back(page);
  }
}

void PagePool::dropAll(const std::vector<int32_t> &pages) {
  for (auto it = pages.rbegin(); it != pages.rend(); ++it) drop(*it);
}

bool PagePool::publish(int32_t parent, int32_t page, const int32_t *tokens) {
  Node &n = nodes.at(size_t(page));
  if (!prefixCache || n.isCached || n.refs <= 0) return false;
  if (parent >= 0 && !nodes.at(size_t(parent)).isCached) return false;
  if (find(parent, tokens) >= 0) return false;
  n.isCached = true;
  n.parent = parent;
  n.tokens.assign(tokens, tokens + pageSize_);
  n.key = keyOf(parent, tokens, pageSize_);
  index.emplace(n.key, page);
  childrenOf(parent).push_back(page);
  ++cached;
  return true;
}

PagePool::Match PagePool::match(const int32_t *tokens, int64_t count) {
  Match m;
  if (!prefixCache) return m;
  int32_t parent = -1;
  int64_t at = 0;
  for (; at + pageSize_ <= count; at += pageSize_) {
    const int32_t page = find(parent, tokens + at);
    if (page < 0) break;
    hold(page);
    m.full.push_back(page);
    parent = page;
  }
  // The next page may still begin with the rest of the tokens.
  const int64_t rest = std::min(pageSize_, count - at);
  for (int32_t child : childrenOf(parent)) {
    const std::vector<int32_t> &t = nodes[size_t(child)].tokens;
    const int64_t same = std::mismatch(t.begin(), t.begin() + rest, tokens + at).first - t.begin();
    if (same > m.partialTokens) {
      m.partial = child;
      m.partialTokens = same;
    }
  }
  return m;
}

void PagePool::check() const {
  auto fail = [](int64_t page, const std::string &what) {
    throw std::logic_error("page pool: page " + std::to_string(page) + " " + what);
  };
  std::vector<int> seen(nodes.size(), 0);
  for (int32_t p : freeList) ++seen[size_t(p)];
  for (auto &[stamp, p] : idle) ++seen[size_t(p)];
  int64_t cachedCount = 0;
  for (size_t i = 0; i < nodes.size(); ++i) {
    const Node &n = nodes[i];
    const int states = seen[i] + (n.refs > 0 ? 1 : 0);
    if (n.refs < 0) fail(int64_t(i), "has negative references");
    if (states != 1) fail(int64_t(i), "is in " + std::to_string(states) + " states");
    if (n.refs == 0 && seen[i] == 1 && n.isCached != idle.count({n.stamp, int32_t(i)}))
      fail(int64_t(i), "is idle but not cached, or cached, free and not idle");
    if (!n.isCached) continue;
    ++cachedCount;
    if (find(n.parent, n.tokens.data()) != int32_t(i)) fail(int64_t(i), "is not in the index");
    const std::vector<int32_t> &sib = childrenOf(n.parent);
    if (std::count(sib.begin(), sib.end(), int32_t(i)) != 1)
      fail(int64_t(i), "is not among its parent's children");
    if (!windowed && n.parent >= 0 && nodes[size_t(n.parent)].refs < n.refs)
      fail(int64_t(i), "is held more than the page before it");
  }
  if (cachedCount != cached || int64_t(index.size()) != cached)
    throw std::logic_error("page pool: the cached-page count is wrong");
}

} // namespace kvplan
