// Deterministic automata over bytes: exploring a machine given by its step
// function, keeping the states that can still accept, and the product with
// a count of characters.
#include "runtime/ByteDfa.h"

#include "support/Error.h"

#include <algorithm>
#include <cstring>
#include <unordered_map>

namespace kvplan {

namespace {
/// A plain struct of int32_t fields as a state's key, and back.
template <class T> ByteDfa::Key keyOf(const T &state) {
  return ByteDfa::Key(reinterpret_cast<const char *>(&state), sizeof state);
}
template <class T> T stateOf(const ByteDfa::Key &k) {
  T state;
  std::memcpy(&state, k.data(), sizeof state);
  return state;
}
} // namespace

std::array<uint8_t, 256> byteClasses(const std::vector<int> &boundaries) {
  std::array<bool, 257> cut{};
  for (int b : boundaries)
    if (b > 0 && b < 256) cut[size_t(b)] = true;
  std::array<uint8_t, 256> classes{};
  uint8_t c = 0;
  for (int b = 0; b < 256; ++b) {
    if (cut[size_t(b)]) ++c;
    classes[size_t(b)] = c;
  }
  return classes;
}

ByteDfa ByteDfa::explore(const std::array<uint8_t, 256> &classes, const Key &start,
                         const std::function<bool(const Key &, uint8_t, Key &)> &step,
                         const std::function<bool(const Key &)> &accept, const std::string &path,
                         const std::string &what) {
  // Each class's smallest byte stands for it.
  std::vector<uint8_t> first;
  for (int b = 0; b < 256; ++b)
    if (b == 0 || classes[size_t(b)] != classes[size_t(b - 1)]) first.push_back(uint8_t(b));
  const size_t width = first.size();
  std::vector<Key> keys = {start};
  std::unordered_map<Key, int32_t> index = {{start, 0}};
  std::vector<int32_t> table;
  Key to;
  for (size_t s = 0; s < keys.size(); ++s) {
    for (size_t c = 0; c < width; ++c) {
      int32_t target = kNone;
      if (step(keys[s], first[c], to)) {
        auto [it, added] = index.emplace(to, int32_t(keys.size()));
        if (added) {
          if (keys.size() == kMaxStates)
            throw InputError(path + ": " + what + " needs more than " +
                             std::to_string(kMaxStates) + " automaton states, more than kvplan "
                             "holds generation to; make it simpler");
          keys.push_back(to);
        }
        target = it->second;
      }
      table.push_back(target);
    }
  }
  // The states that can reach an accepting one, backwards from those.
  const size_t n = keys.size();
  std::vector<std::vector<int32_t>> from(n);
  for (size_t s = 0; s < n; ++s)
    for (size_t c = 0; c < width; ++c)
      if (table[s * width + c] != kNone) from[size_t(table[s * width + c])].push_back(int32_t(s));
  std::vector<uint8_t> live(n, 0), isFinal(n, 0);
  std::vector<int32_t> work;
  for (size_t s = 0; s < n; ++s)
    if ((isFinal[s] = accept(keys[s]))) live[s] = 1, work.push_back(int32_t(s));
  while (!work.empty()) {
    const int32_t s = work.back();
    work.pop_back();
    for (int32_t p : from[size_t(s)])
      if (!live[size_t(p)]) live[size_t(p)] = 1, work.push_back(p);
  }
  // Renumbered without the others.
  std::vector<int32_t> number(n, kNone);
  ByteDfa out;
  out.classOf = classes;
  out.width = width;
  for (size_t s = 0; s < n; ++s)
    if (live[s]) number[s] = int32_t(out.final.size()), out.final.push_back(isFinal[s]);
  out.table.reserve(out.final.size() * width);
  for (size_t s = 0; s < n; ++s) {
    if (!live[s]) continue;
    for (size_t c = 0; c < width; ++c) {
      const int32_t t = table[s * width + c];
      out.table.push_back(t == kNone ? kNone : number[size_t(t)]);
    }
  }
  out.first = number[0];
  return out;
}

bool ByteDfa::finishableWith(const std::array<bool, 256> &bytes) const {
  const size_t n = states();
  std::vector<uint8_t> done(n, 0);
  for (size_t s = 0; s < n; ++s) done[s] = final[s];
  for (bool changed = true; changed;) {
    changed = false;
    for (size_t s = 0; s < n; ++s) {
      if (done[s]) continue;
      for (int b = 0; b < 256 && !done[s]; ++b) {
        const int32_t t = bytes[size_t(b)] ? next(int32_t(s), uint8_t(b)) : kNone;
        if (t != kNone && done[size_t(t)]) done[s] = 1, changed = true;
      }
    }
  }
  return std::all_of(done.begin(), done.end(), [](uint8_t d) { return d != 0; });
}

std::vector<int> ByteDfa::cuts() const {
  std::vector<int> at;
  for (int b = 1; b < 256; ++b)
    if (classOf[size_t(b)] != classOf[size_t(b - 1)]) at.push_back(b);
  return at;
}

ByteDfa ByteDfa::intersect(const ByteDfa &other, const std::string &path) const {
  if (empty()) return *this;
  if (other.empty()) return other;
  std::vector<int> at = cuts(), theirs = other.cuts();
  at.insert(at.end(), theirs.begin(), theirs.end());
  struct Pair {
    int32_t mine, theirs;
  };
  return explore(
      byteClasses(at), keyOf(Pair{first, other.first}),
      [&](const Key &k, uint8_t c, Key &to) {
        Pair p = stateOf<Pair>(k);
        p.mine = next(p.mine, c), p.theirs = other.next(p.theirs, c);
        if (p.mine == kNone || p.theirs == kNone) return false;
        to = keyOf(p);
        return true;
      },
      [&](const Key &k) {
        const Pair p = stateOf<Pair>(k);
        return accepts(p.mine) && other.accepts(p.theirs);
      },
      path, "the pattern with the format");
}

ByteDfa ByteDfa::minus(const std::vector<const ByteDfa *> &others,
                       const std::string &path) const {
  if (empty()) return *this;
  std::vector<int> at = cuts();
  std::vector<const ByteDfa *> live; // the others that accept something
  for (const ByteDfa *o : others) {
    if (o->empty()) continue;
    live.push_back(o);
    const std::vector<int> theirs = o->cuts();
    at.insert(at.end(), theirs.begin(), theirs.end());
  }
  // A state: this automaton's, then each other's (kNone once it refused).
  std::vector<int32_t> start = {first};
  for (const ByteDfa *o : live) start.push_back(o->first);
  auto key = [](const std::vector<int32_t> &v) {
    return Key(reinterpret_cast<const char *>(v.data()), v.size() * sizeof(int32_t));
  };
  auto states = [&](const Key &k) {
    std::vector<int32_t> v(k.size() / sizeof(int32_t));
    std::memcpy(v.data(), k.data(), k.size());
    return v;
  };
  return explore(
      byteClasses(at), key(start),
      [&](const Key &k, uint8_t c, Key &to) {
        std::vector<int32_t> v = states(k);
        if ((v[0] = next(v[0], c)) == kNone) return false;
        for (size_t j = 1; j < v.size(); ++j)
          if (v[j] != kNone) v[j] = live[j - 1]->next(v[j], c);
        to = key(v);
        return true;
      },
      [&](const Key &k) {
        const std::vector<int32_t> v = states(k);
        if (!accepts(v[0])) return false;
        for (size_t j = 1; j < v.size(); ++j)
          if (v[j] != kNone && live[j - 1]->accepts(v[j])) return false;
        return true;
      },
      path, "the pattern without the others");
}

std::vector<uint64_t> ByteDfa::textCounts(uint64_t most) const {
  // From the states with no way on, backwards: a state is counted once
  // every state it goes to is; those never counted reach a cycle.
  const size_t n = states();
  std::vector<uint64_t> count(n, 0), weight(width, 0);
  for (int b = 0; b < 256; ++b) ++weight[classOf[size_t(b)]];
  std::vector<std::vector<int32_t>> from(n);
  std::vector<size_t> pending(n, 0);
  for (size_t s = 0; s < n; ++s)
    for (size_t c = 0; c < width; ++c)
      if (const int32_t t = table[s * width + c]; t != kNone)
        ++pending[s], from[size_t(t)].push_back(int32_t(s));
  std::vector<int32_t> ready;
  for (size_t s = 0; s < n; ++s)
    if (pending[s] == 0) ready.push_back(int32_t(s));
  std::vector<uint8_t> done(n, 0);
  while (!ready.empty()) {
    const size_t s = size_t(ready.back());
    ready.pop_back();
    uint64_t sum = final[s];
    for (size_t c = 0; c < width; ++c)
      if (const int32_t t = table[s * width + c]; t != kNone)
        sum += std::min(most, weight[c] * std::min(most, count[size_t(t)]));
    count[s] = std::min(sum, most);
    done[s] = 1;
    for (int32_t p : from[s])
      if (--pending[size_t(p)] == 0) ready.push_back(p);
  }
  for (size_t s = 0; s < n; ++s)
    if (!done[s]) count[s] = most;
  return count;
}

std::vector<std::string> ByteDfa::textsFrom(int32_t state, size_t most) const {
  std::vector<std::string> out;
  if (state == kNone || most == 0) return out;
  // Depth first: the states along the text so far, and the next byte of each.
  std::vector<std::pair<int32_t, int>> path = {{state, 0}};
  std::string text;
  if (accepts(state)) out.push_back(text);
  while (!path.empty() && out.size() < most) {
    auto &[s, b] = path.back();
    if (b == 256) {
      path.pop_back();
      if (!text.empty()) text.pop_back();
      continue;
    }
    const int32_t t = next(s, uint8_t(b));
    const char c = char(b++);
    if (t == kNone) continue;
    text.push_back(c);
    path.push_back({t, 0});
    if (accepts(t)) out.push_back(text);
  }
  return out;
}

ByteDfa ByteDfa::withLength(int64_t minChars, int64_t maxChars, const std::string &path) const {
  if (empty() || (minChars <= 0 && maxChars < 0)) return *this;
  // Code points for minChars (saturating there), UTF-16 units for maxChars
  // (a character past U+FFFF, a 4-byte sequence, two).
  struct State {
    int32_t s;
    int32_t points, units;
  };
  std::vector<int> at = cuts();
  for (int b : {0x80, 0xC0, 0xF0}) at.push_back(b);
  return explore(
      byteClasses(at), keyOf(State{first, 0, 0}),
      [&](const Key &k, uint8_t b, Key &to) {
        State st = stateOf<State>(k);
        st.s = next(st.s, b);
        if (st.s == kNone) return false;
        if ((b & 0xC0) != 0x80) { // a character's first byte
          st.points = int32_t(std::min<int64_t>(st.points + 1, std::max<int64_t>(minChars, 0)));
          if (maxChars >= 0 && (st.units += b >= 0xF0 ? 2 : 1) > maxChars) return false;
        }
        to = keyOf(st);
        return true;
      },
      [&](const Key &k) {
        const State st = stateOf<State>(k);
        return accepts(st.s) && st.points >= minChars;
      },
      path, "the pattern with minLength/maxLength");
}

} // namespace kvplan
