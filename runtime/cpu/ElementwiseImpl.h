// Elementwise kernels over a vector-ISA traits type: the SwiGLU activation.
#pragma once

#include "runtime/cpu/LinearImpl.h"

#include <cmath>

namespace kvplan::cpu::impl {

inline float siluScalar(float x) { return x / (1.0f + std::exp(-x)); }

/// silu(gate) * up over n elements, W at a time (Tr::exp is a polynomial
/// exp accurate to a few ulp).
template <class Tr>
void swiglu(const float *gate, const float *up, float *out, int64_t n) {
  const auto one = Tr::set1(1.0f);
  int64_t i = 0;
  for (; i + Tr::W <= n; i += Tr::W) {
    auto g = Tr::load(gate + i);
    auto s = Tr::div(g, Tr::add(one, Tr::exp(Tr::neg(g))));
    Tr::store(out + i, Tr::mul(s, Tr::load(up + i)));
  }
  for (; i < n; ++i) out[i] = siluScalar(gate[i]) * up[i];
}

/// Rows [begin, end) of a fused gate|up projection: out[r] = silu(in[r][:ff])
/// * in[r][ff:].
template <class Tr>
void fusedFFN(const float *in, int64_t ff, float *out, int64_t begin, int64_t end) {
  for (int64_t r = begin; r < end; ++r)
    swiglu<Tr>(in + r * 2 * ff, in + r * 2 * ff + ff, out + r * ff, ff);
}

} // namespace kvplan::cpu::impl
