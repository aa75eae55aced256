// The linear kernel's blocking, written once over a vector-ISA traits type
// and instantiated in one file per ISA (each compiled for that ISA only).
//
// out[r, j] = dot(x[r], w[j]) + bias[j]: x is [rows, K] f32, w is [J, K] in
// f32, bf16, f16 or int8 (with one f32 scale per kInt8Group weights along
// K). Tiles of R rows x J features keep R*J accumulators in registers, so
// each weight vector loaded (and converted) serves R rows and each row
// vector serves J features. Features are taken in blocks small enough that
// their weights stay in L2 while every row passes over them, so prefill
// reads the weights from memory once per chunk, not once per row. Every
// output is one accumulation chain over K in the same order whatever the
// tile shape, so a row's result does not depend on how many rows run with
// it (chunked prefill equals token-by-token, bit for bit).
#pragma once

#include "runtime/cpu/Kernels.h"
#include "support/Align.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <type_traits>

namespace kvplan::cpu::impl {

/// Weight element kinds; Traits::loadW<Kind> converts W of them to f32.
struct WF32 { using T = float; };
struct WBF16 { using T = uint16_t; };
struct WF16 { using T = uint16_t; };
struct WI8 { using T = int8_t; };

inline float scalarWeight(WF32, const float *w, int64_t i) { return w[i]; }
inline float scalarWeight(WBF16, const uint16_t *w, int64_t i) {
  uint32_t bits = uint32_t(w[i]) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
float f16ScalarWeight(uint16_t v);
inline float scalarWeight(WF16, const uint16_t *w, int64_t i) { return f16ScalarWeight(w[i]); }
inline float scalarWeight(WI8, const int8_t *w, int64_t i) { return float(w[i]); }

/// Computes one R x J tile over all of K. int8 weights apply their scale
/// per group (kInt8Group weights, a multiple of the vector width, so a
/// vector never straddles two groups).
/// Memory to pull into the cache while a tile computes: [base, base + bytes),
/// spread evenly over the tile's steps.
struct PrefetchRange {
  const char *base = nullptr;
  int64_t bytes = 0;
};

template <class Tr, class Kind, int R, int J>
inline void tile(const float *x, int64_t K, const typename Kind::T *w, const float *scales,
                 float out[R][J], PrefetchRange ahead = {}) {
  using V = typename Tr::V;
  constexpr int W = Tr::W;
  static_assert(kInt8Group % W == 0, "a vector must not straddle int8 groups");
  constexpr int64_t G = kInt8Group;
  V acc[R][J];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < J; ++j) acc[r][j] = Tr::zero();
  const int64_t full = K / W * W;
  const int64_t groups = ceilDiv(K, G);
  const int64_t perStep = (ahead.bytes + (full / W) - 1) / std::max<int64_t>(1, full / W);
  int64_t fetched = 0;
  for (int64_t k = 0; k < full; k += W) {
    for (const int64_t until = std::min(fetched + perStep, ahead.bytes); fetched < until;
         fetched += 64)
      __builtin_prefetch(ahead.base + fetched);
    V xv[R];
    for (int r = 0; r < R; ++r) xv[r] = Tr::load(x + r * K + k);
    for (int j = 0; j < J; ++j) {
      V wv = Tr::template loadW<Kind>(w + j * K + k);
      if constexpr (std::is_same_v<Kind, WI8>)
        wv = Tr::mul(wv, Tr::set1(scales[j * groups + k / G]));
      for (int r = 0; r < R; ++r) acc[r][j] = Tr::fma(xv[r], wv, acc[r][j]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < J; ++j) {
      float s = Tr::reduce(acc[r][j]);
      for (int64_t k = full; k < K; ++k) {
        float wk = scalarWeight(Kind{}, w + j * K, k);
        if constexpr (std::is_same_v<Kind, WI8>) wk *= scales[j * groups + k / G];
        s += x[r * K + k] * wk;
      }
      out[r][j] = s;
    }
}

/// Writes a tile's results (plus bias) into the outputs, which may split the
/// features among several tensors.
template <int R, int J>
inline void store(const float res[R][J], int64_t r0, int64_t j0, const LinearOutputs &out,
                  TensorRef bias, size_t &k) {
  for (int j = 0; j < J; ++j) {
    const int64_t jj = j0 + j;
    while (jj >= out.firstColumn[k] + out.columns[k]) ++k;
    const int64_t cols = out.columns[k], col = jj - out.firstColumn[k];
    const float b = bias.data ? loadElement(bias, jj) : 0.0f;
    for (int r = 0; r < R; ++r) out.data[k][(r0 + r) * cols + col] = res[r][j] + b;
  }
}

/// Features [jBegin, jEnd) of rows [r0, r0 + R): tile(width, j0, res, ahead)
/// computes features [j0, j0 + width) into res (width a
/// std::integral_constant: J, then 1 for the remainder, which never
/// prefetches), and each result is stored with its bias.
template <int R, int J, class Tile>
inline void featureTiles(int64_t r0, int64_t jBegin, int64_t jEnd, const LinearOutputs &out,
                         TensorRef bias, bool ahead, Tile tile) {
  size_t k = 0;
  while (jBegin >= out.firstColumn[k] + out.columns[k]) ++k;
  int64_t j = jBegin;
  float res[R][J];
  for (; j + J <= jEnd; j += J) {
    tile(std::integral_constant<int, J>{}, j, res, ahead);
    store<R, J>(res, r0, j, out, bias, k);
  }
  float one[R][1];
  for (; j < jEnd; ++j) {
    tile(std::integral_constant<int, 1>{}, j, one, false);
    store<R, 1>(one, r0, j, out, bias, k);
  }
}

/// What a pass over a block of features prefetches.
enum class Ahead {
  none,
  nextTile,  // the next tile's weights (one row streams them: decode)
  range,     // a given range, spread over the whole pass
};

template <class Tr, class Kind, int R, int J>
inline void rowTile(const float *x, int64_t K, const typename Kind::T *w, const float *scales,
                    int64_t r0, int64_t jBegin, int64_t jEnd, const LinearOutputs &out,
                    TensorRef bias, Ahead mode = Ahead::none, PrefetchRange range = {}) {
  const int64_t wBytes = int64_t(sizeof(typename Kind::T));
  const int64_t tiles = std::max<int64_t>(1, (jEnd - jBegin) / J);
  const int64_t slice = ceilDiv(range.bytes, tiles);
  const int64_t groups = ceilDiv(K, kInt8Group);
  size_t k = 0;
  // Outputs are found by a forward scan: restart it for this feature range.
  while (jBegin >= out.firstColumn[k] + out.columns[k]) ++k;
  int64_t j = jBegin;
  float res[R][J];
  for (int64_t t = 0; j + J <= jEnd; j += J, ++t) {
    PrefetchRange ahead;
    if (mode == Ahead::nextTile) {
      // The rows of a tile are short interleaved streams the hardware
      // prefetcher follows late: fetch the next tile's (contiguous) rows.
      ahead = {reinterpret_cast<const char *>(w + (j + J) * K), J * K * wBytes};
    } else if (mode == Ahead::range) {
      const int64_t from = std::min(range.bytes, t * slice);
      ahead = {range.base + from, std::min(slice, range.bytes - from)};
    }
    tile<Tr, Kind, R, J>(x + r0 * K, K, w + j * K, scales ? scales + j * groups : nullptr, res,
                         ahead);
    store<R, J>(res, r0, j, out, bias, k);
  }
  float one[R][1];
  for (; j < jEnd; ++j) {
    tile<Tr, Kind, R, 1>(x + r0 * K, K, w + j * K, scales ? scales + j * groups : nullptr, one);
    store<R, 1>(one, r0, j, out, bias, k);
  }
}

/// The R x J tile prefill runs over weights of Kind: the traits' R x J, or
/// Tr::TileFor<Kind> where an ISA's best shape depends on the weight type
/// (the shape changes no result: see the invariant above).
template <class Tr, class Kind, class = void> struct TileShape {
  static constexpr int R = Tr::R, J = Tr::J;
};
template <class Tr, class Kind>
struct TileShape<Tr, Kind, std::void_t<typename Tr::template TileFor<Kind>>>
    : Tr::template TileFor<Kind> {};

template <class Tr, class Kind>
void linearBlocked(const float *x, int64_t rows, int64_t K, const typename Kind::T *w,
                   const float *scales, TensorRef bias, const LinearOutputs &out, int64_t jBegin,
                   int64_t jEnd) {
  if (rows == 1) {
    rowTile<Tr, Kind, 1, Tr::GemvJ>(x, K, w, scales, 0, jBegin, jEnd, out, bias, Ahead::nextTile);
    return;
  }
  constexpr int TR = TileShape<Tr, Kind>::R, TJ = TileShape<Tr, Kind>::J;
  constexpr int Narrow = std::min(4, TR);
  // Feature blocks whose weights fit in about half of L2.
  const int64_t wBytes = int64_t(sizeof(typename Kind::T));
  int64_t block = std::max<int64_t>(TJ, (256 * 1024) / std::max<int64_t>(1, K * wBytes));
  block = block / TJ * TJ;
  for (int64_t jb = jBegin; jb < jEnd; jb += block) {
    const int64_t je = std::min(jEnd, jb + block);
    int64_t r = 0;
    // Rows whose activations would not stay in L1 alongside the weights
    // come four (at most) at a time.
    const bool wide = K * int64_t(sizeof(float)) * TR <= 16 * 1024;
    const int64_t big = wide ? TR : Narrow, rest = rows % big;
    const int64_t passes = rows / big + rest / Narrow + (rest % Narrow ? 1 : 0);
    // The first pass over a block brings its weights from memory; the later
    // passes, which find them in L2, prefetch the next block (a slice each)
    // so its first pass finds it there too. (Prefetches never fault, so
    // running past the matrix's end is harmless.)
    const int64_t nextEnd = std::min(jEnd, je + block);
    const PrefetchRange next{reinterpret_cast<const char *>(w + je * K),
                             (nextEnd - je) * K * wBytes};
    int64_t pass = 0;
    auto modeOf = [&](int64_t p, PrefetchRange &slice) {
      if (p == 0) return Ahead::nextTile;
      const int64_t per = (next.bytes + std::max<int64_t>(1, passes - 1) - 1) /
                          std::max<int64_t>(1, passes - 1);
      const int64_t from = std::min(next.bytes, (p - 1) * per);
      slice = {next.base + from, std::min(per, next.bytes - from)};
      return Ahead::range;
    };
    PrefetchRange slice;
    if (wide)
      for (; r + TR <= rows; r += TR, ++pass) {
        Ahead m = modeOf(pass, slice);
        rowTile<Tr, Kind, TR, TJ>(x, K, w, scales, r, jb, je, out, bias, m, slice);
      }
    for (; rows - r >= Narrow; r += Narrow, ++pass) {
      Ahead m = modeOf(pass, slice);
      rowTile<Tr, Kind, Narrow, TJ>(x, K, w, scales, r, jb, je, out, bias, m, slice);
    }
    switch (rows - r) {
    case 3: rowTile<Tr, Kind, 3, TJ>(x, K, w, scales, r, jb, je, out, bias); break;
    case 2: rowTile<Tr, Kind, 2, TJ>(x, K, w, scales, r, jb, je, out, bias); break;
    case 1: rowTile<Tr, Kind, 1, TJ>(x, K, w, scales, r, jb, je, out, bias); break;
    default: break;
    }
  }
}

/// Entry point for one ISA: picks the weight kind.
template <class Tr>
void linear(const float *x, int64_t rows, int64_t K, TensorRef w, TensorRef bias,
            const LinearOutputs &out, int64_t jBegin, int64_t jEnd) {
  switch (w.dtype) {
  case DType::f32:
    linearBlocked<Tr, WF32>(x, rows, K, static_cast<const float *>(w.data), nullptr, bias, out,
                            jBegin, jEnd);
    return;
  case DType::bf16:
    linearBlocked<Tr, WBF16>(x, rows, K, static_cast<const uint16_t *>(w.data), nullptr, bias,
                             out, jBegin, jEnd);
    return;
  case DType::f16:
    linearBlocked<Tr, WF16>(x, rows, K, static_cast<const uint16_t *>(w.data), nullptr, bias,
                            out, jBegin, jEnd);
    return;
  case DType::i8:
    if (w.groupSize != kInt8Group)
      throw std::logic_error("int8 weights must come in groups of kInt8Group");
    linearBlocked<Tr, WI8>(x, rows, K, static_cast<const int8_t *>(w.data), w.scales, bias, out,
                           jBegin, jEnd);
    return;
  case DType::i4: break;    // linearInt4 (LinearInt4Impl.h)
  case DType::mxfp4: break; // linearInt4<Tr, true> (LinearInt4Impl.h)
  case DType::i32: break;
  }
  throw std::logic_error("linear given integer weights");
}

} // namespace kvplan::cpu::impl
