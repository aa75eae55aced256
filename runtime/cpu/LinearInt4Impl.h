// The int4 linear, written once over the vector-ISA traits of LinearImpl.h
// and instantiated with the other kernels of each ISA.
//
// w is [J, K] in kvplan's int4 (docs/artifact.md): per row, groups of
// kInt4Group codes in 16 bytes, each group with an f32 scale s and minimum m,
// weight = code * s + m. A dot product is rearranged per group as
//   sum_k x_k (c_k s + m) = s * sum_k x_k c_k + m * sum_k x_k,
// so the weights are never decoded: one 16-byte load gives a group's codes
// as floats, their products with x are summed in a vector, scaled once, and
// the minimums meet the per-group sums of x, computed once per call. Every
// output is one chain of the same operations whatever the tile shape, so a
// row's result does not depend on how many rows or features run with it.
//
// MXFP4 (Mx = true) takes the same path: its codes are nibbles laid out as
// int4's, which Tr::mxfp4Codes turns into their doubled E2M1 values; the
// group's scale is its step (mxfp4Steps()), and it has no minimums.
#pragma once

#include "runtime/cpu/LinearImpl.h"

#include <vector>

namespace kvplan::cpu::impl {

/// An int4 (or mxfp4) matrix's parts, each row `groups` groups long.
struct Int4Matrix {
  const uint8_t *codes = nullptr; // [J][groups][16]
  const float *scales = nullptr, *mins = nullptr; // [J][groups]
  const uint8_t *exponents = nullptr; // mxfp4's [J][groups], in place of both
  int64_t groups = 0;
  const float *steps = nullptr; // mxfp4Steps(), fetched once a call
};

/// Group g of feature j's scale: int4's, or an mxfp4 group's step.
template <bool Mx> inline float groupScale(const Int4Matrix &w, int64_t j, int64_t g) {
  if constexpr (Mx)
    return w.steps[w.exponents[j * w.groups + g]];
  else
    return w.scales[j * w.groups + g];
}

/// sums[r * groups + g] = the sum of row r of x over group g (in order).
inline void int4GroupSums(const float *x, int64_t rows, int64_t K, float *sums) {
  const int64_t groups = ceilDiv(K, kInt4Group);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t g = 0; g < groups; ++g) {
      float s = 0;
      for (int64_t k = g * kInt4Group; k < std::min(K, (g + 1) * kInt4Group); ++k) s += x[r * K + k];
      sums[r * groups + g] = s;
    }
}

/// One R x J tile over all of K: x holds the tile's R rows, `sums` their
/// group sums; `w` starts at the tile's first feature. With `ahead`, it
/// prefetches the next J features' codes one group line ahead of use.
template <class Tr, bool Mx, int R, int J>
inline void int4Tile(const float *x, int64_t K, const Int4Matrix &w, const float *sums,
                     float out[R][J], bool ahead) {
  using V = typename Tr::V;
  constexpr int W = Tr::W, NV = int(kInt4Group) / W;
  static_assert(kInt4Group % W == 0, "a vector must not straddle int4 groups");
  const int64_t groups = w.groups, full = K / kInt4Group, rowBytes = groups * 16;
  V acc[R][J];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < J; ++j) acc[r][j] = Tr::zero();
  for (int64_t g = 0; g < full; ++g) {
    if (ahead && g % 4 == 0)
      for (int j = 0; j < J; ++j) __builtin_prefetch(w.codes + (J + j) * rowBytes + g * 16);
    const float *xg = x + g * kInt4Group;
    for (int j = 0; j < J; ++j) {
      V c[NV];
      if constexpr (Mx)
        Tr::mxfp4Codes(w.codes + j * rowBytes + g * 16, c);
      else
        Tr::int4Codes(w.codes + j * rowBytes + g * 16, c);
      const V s = Tr::set1(groupScale<Mx>(w, j, g));
      for (int r = 0; r < R; ++r) {
        V d = Tr::mul(Tr::load(xg + r * K), c[0]);
        for (int v = 1; v < NV; ++v) d = Tr::fma(Tr::load(xg + r * K + v * W), c[v], d);
        acc[r][j] = Tr::fma(d, s, acc[r][j]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < J; ++j) {
      const uint8_t *codes = w.codes + j * rowBytes;
      float s = Tr::reduce(acc[r][j]);
      if (full < groups) { // a partial last group, codes only
        float d = 0;
        for (int64_t k = full * kInt4Group; k < K; ++k) {
          const uint8_t byte = codes[full * 16 + (k % kInt4Group) % 16];
          const int code = k % kInt4Group < 16 ? byte & 15 : byte >> 4;
          d += x[r * K + k] * float(Mx ? kMxfp4Doubled[code] : code);
        }
        s += d * groupScale<Mx>(w, j, full);
      }
      float m = 0;
      if constexpr (!Mx)
        for (int64_t g = 0; g < groups; ++g) m += w.mins[j * groups + g] * sums[r * groups + g];
      out[r][j] = s + m;
    }
}

/// Rows [r0, r0 + R) over features [jBegin, jEnd), J at a time, then one
/// at a time.
template <class Tr, bool Mx, int R, int J>
inline void int4RowTile(const float *x, int64_t K, const Int4Matrix &w, const float *sums,
                        int64_t r0, int64_t jBegin, int64_t jEnd, const LinearOutputs &out,
                        TensorRef bias, bool ahead) {
  const int64_t groups = w.groups;
  auto at = [&](int64_t j) {
    if constexpr (Mx)
      return Int4Matrix{w.codes + j * groups * 16, nullptr, nullptr, w.exponents + j * groups,
                        groups, w.steps};
    else
      return Int4Matrix{w.codes + j * groups * 16, w.scales + j * groups, w.mins + j * groups,
                        nullptr, groups};
  };
  size_t k = 0;
  while (jBegin >= out.firstColumn[k] + out.columns[k]) ++k;
  int64_t j = jBegin;
  float res[R][J];
  for (; j + J <= jEnd; j += J) {
    int4Tile<Tr, Mx, R, J>(x + r0 * K, K, at(j), sums + r0 * groups, res, ahead);
    store<R, J>(res, r0, j, out, bias, k);
  }
  float one[R][1];
  for (; j < jEnd; ++j) {
    int4Tile<Tr, Mx, R, 1>(x + r0 * K, K, at(j), sums + r0 * groups, one, false);
    store<R, 1>(one, r0, j, out, bias, k);
  }
}

/// The int4 (Mx: mxfp4) linear for one ISA. Decode (one row) streams the
/// features GemvJ at a time, prefetching the next tile; prefill takes the
/// features in blocks whose codes, scales and minimums stay in L2 while all
/// the rows pass over them.
template <class Tr, bool Mx = false>
void linearInt4(const float *x, int64_t rows, int64_t K, TensorRef wr, TensorRef bias,
                const LinearOutputs &out, int64_t jBegin, int64_t jEnd) {
  if (Mx ? wr.groupSize != kMxfp4Group || !wr.exponents
         : wr.groupSize != kInt4Group || !wr.scales || !wr.mins)
    throw std::logic_error(Mx ? "mxfp4 weights need groups of kMxfp4Group with scale bytes"
                              : "int4 weights need groups of kInt4Group with scales and minimums");
  static_assert(kMxfp4Group == kInt4Group, "mxfp4 takes int4's tiles");
  const Int4Matrix w{static_cast<const uint8_t *>(wr.data), wr.scales, wr.mins, wr.exponents,
                     ceilDiv(K, kInt4Group), Mx ? mxfp4Steps() : nullptr};
  thread_local std::vector<float> sums;
  sums.resize(size_t(rows * w.groups));
  if (!Mx) int4GroupSums(x, rows, K, sums.data());
  if (rows == 1) {
    int4RowTile<Tr, Mx, 1, Tr::GemvJ>(x, K, w, sums.data(), 0, jBegin, jEnd, out, bias, true);
    return;
  }
  const int64_t rowBytes = w.groups * (Mx ? 16 + 1 : 16 + 4 + 4);
  int64_t block = std::max<int64_t>(Tr::J, (256 * 1024) / std::max<int64_t>(1, rowBytes));
  block = block / Tr::J * Tr::J;
  for (int64_t jb = jBegin; jb < jEnd; jb += block) {
    const int64_t je = std::min(jEnd, jb + block);
    auto tiles = [&](auto rowCount, int64_t r) {
      constexpr int R = decltype(rowCount)::value;
      int4RowTile<Tr, Mx, R, Tr::J>(x, K, w, sums.data(), r, jb, je, out, bias, r == 0);
    };
    int64_t r = 0;
    for (; r + Tr::R <= rows; r += Tr::R) tiles(std::integral_constant<int, Tr::R>{}, r);
    for (; rows - r >= 4; r += 4) tiles(std::integral_constant<int, 4>{}, r);
    switch (rows - r) {
    case 3: tiles(std::integral_constant<int, 3>{}, r); break;
    case 2: tiles(std::integral_constant<int, 2>{}, r); break;
    case 1: tiles(std::integral_constant<int, 1>{}, r); break;
    default: break;
    }
  }
}

} // namespace kvplan::cpu::impl
