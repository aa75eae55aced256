// Attention over the paged KV cache, written once over a vector-ISA traits
// type (as LinearImpl.h) and instantiated per ISA.
#pragma once

#include "runtime/cpu/LinearImpl.h"

#include <cmath>

namespace kvplan::cpu::impl {

/// dot(q, k) over one head.
template <class Tr, class Kind>
inline float headDot(const float *q, const typename Kind::T *k, int64_t hd) {
  using V = typename Tr::V;
  constexpr int W = Tr::W;
  V a0 = Tr::zero(), a1 = a0;
  int64_t i = 0;
  for (; i + 2 * W <= hd; i += 2 * W) {
    a0 = Tr::fma(Tr::load(q + i), Tr::template loadW<Kind>(k + i), a0);
    a1 = Tr::fma(Tr::load(q + i + W), Tr::template loadW<Kind>(k + i + W), a1);
  }
  for (; i + W <= hd; i += W) a0 = Tr::fma(Tr::load(q + i), Tr::template loadW<Kind>(k + i), a0);
  float s = Tr::reduce(Tr::add(a0, a1));
  for (; i < hd; ++i) s += q[i] * scalarWeight(Kind{}, k, i);
  return s;
}

/// o += w * v over one head.
template <class Tr, class Kind>
inline void headAxpy(float *o, float w, const typename Kind::T *v, int64_t hd) {
  const auto wv = Tr::set1(w);
  int64_t i = 0;
  for (; i + Tr::W <= hd; i += Tr::W)
    Tr::store(o + i, Tr::fma(wv, Tr::template loadW<Kind>(v + i), Tr::load(o + i)));
  for (; i < hd; ++i) o[i] += w * scalarWeight(Kind{}, v, i);
}

template <class Tr, class Kind>
void attention(const CacheGeometry &cache, int64_t layer, const float *q, const int32_t *positions,
               const int32_t *pageTable, int64_t tableRows, const AttentionHeads &heads,
               float *out, float *scratch, int64_t begin, int64_t end) {
  using T = typename Kind::T;
  const int64_t numHeads = heads.numHeads, hd = cache.headDim, group = numHeads / cache.kvHeads;
  const int64_t qcols = numHeads * hd;
  const double scale = heads.scale;
  const T *base = static_cast<const T *>(cache.base);
  for (int64_t item = begin; item < end; ++item) {
    const int64_t r = item / numHeads, h = item % numHeads, kvh = h / group;
    const int32_t p = positions[r];
    float *o = out + r * qcols + h * hd;
    std::fill(o, o + hd, 0.0f);
    if (p < 0) continue;
    const int32_t *pages = pageRow(pageTable, tableRows, cache.pagesPerSequence, r);
    const float *qh = q + r * qcols + h * hd;
    // The keys the row reads: all up to its own, or the window's last ones.
    const int64_t t0 = heads.window > 0 ? std::max<int64_t>(0, p - heads.window + 1) : 0;
    float maxScore = -INFINITY;
    for (int64_t t = t0; t <= p; ++t) {
      const T *k = base + cache.offset(layer, 0, pages[t / cache.pageSize], kvh, t % cache.pageSize);
      const float s = float(headDot<Tr, Kind>(qh, k, hd) * scale);
      scratch[t] = s;
      maxScore = std::max(maxScore, s);
    }
    double sum = 0;
    for (int64_t t = t0; t <= p; ++t) {
      scratch[t] = std::exp(scratch[t] - maxScore);
      sum += scratch[t];
    }
    const float inv = float(1.0 / sum);
    for (int64_t t = t0; t <= p; ++t) {
      const T *v = base + cache.offset(layer, 1, pages[t / cache.pageSize], kvh, t % cache.pageSize);
      headAxpy<Tr, Kind>(o, scratch[t] * inv, v, hd);
    }
  }
}

template <class Tr>
void attention(const CacheGeometry &cache, int64_t layer, const float *q, const int32_t *positions,
               const int32_t *pageTable, int64_t tableRows, const AttentionHeads &heads,
               float *out, float *scratch, int64_t begin, int64_t end) {
  switch (cache.dtype) {
  case DType::f32:
    return attention<Tr, WF32>(cache, layer, q, positions, pageTable, tableRows, heads, out,
                               scratch, begin, end);
  case DType::bf16:
    return attention<Tr, WBF16>(cache, layer, q, positions, pageTable, tableRows, heads, out,
                                scratch, begin, end);
  case DType::f16:
    return attention<Tr, WF16>(cache, layer, q, positions, pageTable, tableRows, heads, out,
                               scratch, begin, end);
  default: break;
  }
  throw std::logic_error("the KV cache holds f32, bf16 or f16");
}

} // namespace kvplan::cpu::impl
