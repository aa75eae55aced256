// The portable level of the templated kernels: "vectors" of 8 floats in plain
// arrays, which the compiler maps onto whatever the baseline target has.
#include "runtime/cpu/AttentionImpl.h"
#include "runtime/cpu/IsaKernels.h"

namespace kvplan::cpu {

namespace {

struct Portable {
  static constexpr int W = 8;
  struct V {
    float v[W];
  };
  static constexpr int R = 4, J = 2, GemvJ = 4;
  static V zero() { return V{}; }
  static V load(const float *p) {
    V r;
    for (int i = 0; i < W; ++i) r.v[i] = p[i];
    return r;
  }
  static void store(float *p, V a) {
    for (int i = 0; i < W; ++i) p[i] = a.v[i];
  }
  static V set1(float x) {
    V r;
    for (float &e : r.v) e = x;
    return r;
  }
  static V add(V a, V b) {
    for (int i = 0; i < W; ++i) a.v[i] += b.v[i];
    return a;
  }
  static V mul(V a, V b) {
    for (int i = 0; i < W; ++i) a.v[i] *= b.v[i];
    return a;
  }
  static V fma(V a, V b, V c) {
    for (int i = 0; i < W; ++i) c.v[i] += a.v[i] * b.v[i];
    return c;
  }
  static float reduce(V a) {
    return ((a.v[0] + a.v[1]) + (a.v[2] + a.v[3])) + ((a.v[4] + a.v[5]) + (a.v[6] + a.v[7]));
  }
  template <class Kind> static V loadW(const typename Kind::T *p) {
    V r;
    for (int i = 0; i < W; ++i) r.v[i] = impl::scalarWeight(Kind{}, p, i);
    return r;
  }
};

} // namespace

void attentionPortable(const CacheGeometry &cache, int64_t layer, const float *q,
                       const int32_t *positions, const int32_t *pageTable, int64_t tableRows,
                       const AttentionHeads &heads, float *out, int64_t begin, int64_t end) {
  impl::attention<Portable>(cache, layer, q, positions, pageTable, tableRows, heads, out,
                            begin, end);
}

} // namespace kvplan::cpu
