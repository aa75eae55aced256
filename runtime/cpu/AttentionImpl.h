// Attention over the paged KV cache, written once over a vector-ISA traits
// type (as LinearImpl.h) and instantiated per ISA.
#pragma once

#include "runtime/cpu/LinearImpl.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

namespace kvplan::cpu::impl {

/// Whether the ISA's traits have a vector exp (Tr::exp).
template <class Tr, class = void> struct HasVectorExp : std::false_type {};
template <class Tr>
struct HasVectorExp<Tr, std::void_t<decltype(Tr::exp(Tr::zero()))>> : std::true_type {};

/// s[j] = exp(s[j] - m) for j < n (vector exp where the ISA has one); their sum.
template <class Tr> float expShifted(float *s, int64_t n, float m) {
  int64_t j = 0;
  float sum = 0;
  if constexpr (HasVectorExp<Tr>::value) {
    const auto minus = Tr::set1(-m);
    auto acc = Tr::zero();
    for (; j + Tr::W <= n; j += Tr::W) {
      const auto e = Tr::exp(Tr::add(Tr::load(s + j), minus));
      Tr::store(s + j, e);
      acc = Tr::add(acc, e);
    }
    sum = Tr::reduce(acc);
  }
  for (; j < n; ++j) sum += (s[j] = std::exp(s[j] - m));
  return sum;
}

/// Query heads of one KV head attended together: each key and value is
/// loaded once for all of them.
constexpr int64_t kHeadsTogether = 4;
/// Keys scored at a time (within one page): the online softmax moves its
/// maximum once a block.
constexpr int64_t kKeyBlock = 32;

/// s[h][j] = dot(q_h, k_j) * scale for N heads (q: heads hd apart) and nb
/// keys (k: keys hd apart): each key's elements loaded and widened once for
/// the N heads.
template <class Tr, class Kind, int N>
void blockScores(const float *q, const typename Kind::T *k, int64_t nb, int64_t hd, double scale,
                 float (*s)[kKeyBlock]) {
  using V = typename Tr::V;
  constexpr int W = Tr::W;
  for (int64_t j = 0; j < nb; ++j) {
    const typename Kind::T *kj = k + j * hd;
    V acc[N];
    for (int h = 0; h < N; ++h) acc[h] = Tr::zero();
    int64_t i = 0;
    for (; i + W <= hd; i += W) {
      const V kv = Tr::template loadW<Kind>(kj + i);
      for (int h = 0; h < N; ++h) acc[h] = Tr::fma(Tr::load(q + h * hd + i), kv, acc[h]);
    }
    for (int h = 0; h < N; ++h) {
      float d = Tr::reduce(acc[h]);
      for (int64_t t = i; t < hd; ++t) d += q[h * hd + t] * scalarWeight(Kind{}, kj, t);
      s[h][j] = float(d * scale);
    }
  }
}

/// o_h += sum_j p[h][j] v_j for N heads (o: heads hd apart) and nb values
/// (v: hd apart): each value's elements widened once for the N heads, the
/// outputs held in registers over the block.
template <class Tr, class Kind, int N>
void blockValues(const float (*p)[kKeyBlock], const typename Kind::T *v, int64_t nb, int64_t hd,
                 float *o) {
  using V = typename Tr::V;
  constexpr int W = Tr::W;
  int64_t i = 0;
  for (; i + W <= hd; i += W) {
    V acc[N];
    for (int h = 0; h < N; ++h) acc[h] = Tr::load(o + h * hd + i);
    for (int64_t j = 0; j < nb; ++j) {
      const V vv = Tr::template loadW<Kind>(v + j * hd + i);
      for (int h = 0; h < N; ++h) acc[h] = Tr::fma(Tr::set1(p[h][j]), vv, acc[h]);
    }
    for (int h = 0; h < N; ++h) Tr::store(o + h * hd + i, acc[h]);
  }
  for (; i < hd; ++i)
    for (int h = 0; h < N; ++h)
      for (int64_t j = 0; j < nb; ++j)
        o[h * hd + i] += p[h][j] * scalarWeight(Kind{}, v + j * hd, i);
}

/// N query heads that share KV head kvh, at q (heads contiguous), attend
/// over the keys t0..p of the row's pages into o (heads contiguous):
/// softmax(q k^T * scale) v, a block of keys (within a page) at a time with
/// a running maximum and sum per head (the output rescaled where the
/// maximum grows), divided by the sum at the end; with `sinks` (the N
/// heads' logits, gpt-oss's), each sink joins its head's sum.
template <class Tr, class Kind, int N>
void attendHeads(const CacheGeometry &cache, int64_t layer, const float *q, int64_t kvh,
                 const int32_t *pages, int64_t t0, int64_t p, double scale, float softcap,
                 const float *sinks, float *o) {
  using T = typename Kind::T;
  const int64_t hd = cache.headDim, ps = cache.pageSize;
  const T *base = static_cast<const T *>(cache.base);
  float m[N], s[N][kKeyBlock];
  double l[N];
  for (int h = 0; h < N; ++h) {
    m[h] = -INFINITY;
    l[h] = 0;
  }
  std::fill(o, o + N * hd, 0.0f);
  for (int64_t b0 = t0; b0 <= p;) {
    const int64_t page = pages[b0 / ps], slot = b0 % ps;
    const int64_t nb = std::min({p + 1 - b0, ps - slot, kKeyBlock});
    blockScores<Tr, Kind, N>(q, base + cache.offset(layer, 0, page, kvh, slot), nb, hd, scale, s);
    if (softcap > 0) // Gemma 2's soft-capping of the scaled scores
      for (int h = 0; h < N; ++h)
        for (int64_t j = 0; j < nb; ++j) s[h][j] = softcap * std::tanh(s[h][j] / softcap);
    for (int h = 0; h < N; ++h) {
      const float mNew = std::max(m[h], *std::max_element(s[h], s[h] + nb));
      if (mNew > m[h]) { // the output so far in units of the new maximum
        const float a = std::exp(m[h] - mNew);
        for (int64_t i = 0; i < hd; ++i) o[h * hd + i] *= a;
        l[h] *= a;
        m[h] = mNew;
      }
      l[h] += expShifted<Tr>(s[h], nb, mNew);
    }
    blockValues<Tr, Kind, N>(s, base + cache.offset(layer, 1, page, kvh, slot), nb, hd, o);
    b0 += nb;
  }
  for (int h = 0; h < N; ++h) {
    double a = 1;
    if (sinks) { // a score with no value: only the sum grows
      const float mNew = std::max(m[h], sinks[h]);
      a = std::exp(double(m[h]) - mNew);
      l[h] = l[h] * a + std::exp(double(sinks[h]) - mNew);
    }
    const float inv = float(a / l[h]);
    for (int64_t i = 0; i < hd; ++i) o[h * hd + i] *= inv;
  }
}

/// Items [begin, end) (item = row * numHeads + head), the consecutive heads
/// of a row that share a KV head taken together (attendHeads).
template <class Tr, class Kind>
void attention(const CacheGeometry &cache, int64_t layer, const float *q, const int32_t *positions,
               const int32_t *pageTable, int64_t tableRows, const AttentionHeads &headsOf,
               float *out, int64_t begin, int64_t end) {
  const int64_t numHeads = headsOf.numHeads, hd = cache.headDim, group = numHeads / cache.kvHeads;
  const int64_t qcols = numHeads * hd;
  for (int64_t item = begin; item < end;) {
    const int64_t r = item / numHeads, h = item % numHeads, kvh = h / group;
    const int64_t n = std::min({end - item, group - h % group, kHeadsTogether});
    const int32_t p = positions[r];
    float *o = out + r * qcols + h * hd;
    item += n;
    if (p < 0) { // padding
      std::fill(o, o + n * hd, 0.0f);
      continue;
    }
    // The keys the row reads: all up to its own, or the window's last ones.
    const int64_t t0 = headsOf.window > 0 ? std::max<int64_t>(0, p - headsOf.window + 1) : 0;
    const float *qh = q + r * qcols + h * hd;
    const int32_t *pages = pageRow(pageTable, tableRows, cache.pagesPerSequence, r);
    auto attend = [&](auto heads) {
      attendHeads<Tr, Kind, decltype(heads)::value>(
          cache, layer, qh, kvh, pages, t0, p, headsOf.scale, float(headsOf.softcap),
          headsOf.sinks ? headsOf.sinks + h : nullptr, o);
    };
    switch (n) {
    case 1: attend(std::integral_constant<int, 1>()); break;
    case 2: attend(std::integral_constant<int, 2>()); break;
    case 3: attend(std::integral_constant<int, 3>()); break;
    default: attend(std::integral_constant<int, 4>()); break;
    }
  }
}

template <class Tr>
void attention(const CacheGeometry &cache, int64_t layer, const float *q, const int32_t *positions,
               const int32_t *pageTable, int64_t tableRows, const AttentionHeads &heads,
               float *out, int64_t begin, int64_t end) {
  switch (cache.dtype) {
  case DType::f32:
    return attention<Tr, WF32>(cache, layer, q, positions, pageTable, tableRows, heads, out,
                               begin, end);
  case DType::bf16:
    return attention<Tr, WBF16>(cache, layer, q, positions, pageTable, tableRows, heads, out,
                                begin, end);
  case DType::f16:
    return attention<Tr, WF16>(cache, layer, q, positions, pageTable, tableRows, heads, out,
                               begin, end);
  default: break;
  }
  throw std::logic_error("the KV cache holds f32, bf16 or f16");
}

} // namespace kvplan::cpu::impl
