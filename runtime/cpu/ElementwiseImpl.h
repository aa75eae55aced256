// Elementwise kernels over a vector-ISA traits type: the gated FFN's
// activations, SwiGLU's and GeGLU's.
#pragma once

#include "runtime/cpu/LinearImpl.h"

#include <cmath>

namespace kvplan::cpu::impl {

// GELU's tanh approximation as a sigmoid: x / 2 * (1 + tanh(z)) is
// x * sigmoid(2z), z = sqrt(2 / pi) * (x + 0.044715 x^3): SiLU's form with
// its argument scaled.
inline constexpr float kGeluTwoRootTwoOverPi = 1.5957691216057308f; // 2 sqrt(2 / pi)
inline constexpr float kGeluCubic = 0.044715f;

/// The argument whose sigmoid multiplies x: x for SiLU, 2z for GELU.
inline float gateArgument(float x, bool gelu) {
  return gelu ? kGeluTwoRootTwoOverPi * (x + kGeluCubic * x * x * x) : x;
}
inline float gateScalar(float x, bool gelu) {
  return x / (1.0f + std::exp(-gateArgument(x, gelu)));
}

/// act(gate) * up over n elements, W at a time (Tr::exp is a polynomial
/// exp accurate to a few ulp); act is SiLU, or GELU (tanh) where `gelu`.
template <class Tr, bool Gelu>
void gated(const float *gate, const float *up, float *out, int64_t n) {
  const auto one = Tr::set1(1.0f);
  int64_t i = 0;
  for (; i + Tr::W <= n; i += Tr::W) {
    auto g = Tr::load(gate + i), a = g;
    if constexpr (Gelu)
      a = Tr::mul(Tr::set1(kGeluTwoRootTwoOverPi),
                  Tr::fma(Tr::mul(Tr::set1(kGeluCubic), g), Tr::mul(g, g), g));
    auto s = Tr::div(g, Tr::add(one, Tr::exp(Tr::neg(a))));
    Tr::store(out + i, Tr::mul(s, Tr::load(up + i)));
  }
  for (; i < n; ++i) out[i] = gateScalar(gate[i], Gelu) * up[i];
}

template <class Tr>
void swiglu(const float *gate, const float *up, float *out, int64_t n, bool gelu) {
  if (gelu) gated<Tr, true>(gate, up, out, n);
  else gated<Tr, false>(gate, up, out, n);
}

/// Rows [begin, end) of a fused gate|up projection: out[r] = act(in[r][:ff])
/// * in[r][ff:].
template <class Tr>
void fusedFFN(const float *in, int64_t ff, float *out, int64_t begin, int64_t end, bool gelu) {
  for (int64_t r = begin; r < end; ++r)
    swiglu<Tr>(in + r * 2 * ff, in + r * 2 * ff + ff, out + r * ff, ff, gelu);
}

} // namespace kvplan::cpu::impl
