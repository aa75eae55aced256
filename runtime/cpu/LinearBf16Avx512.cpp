// bf16 weights against bf16 activations in AVX512_BF16's dot product
// (LinearDot.h): compiled with -mavx512bf16 (and AVX-512 F/BW/VL) and called
// only when the CPU has it.
//
// Each row of x is rounded to bf16 once a call (nearest, even on ties, as
// vcvtne2ps2bf16 does; zero past K up to a multiple of 32). One vdpbf16ps
// then multiplies 32 weights by 32 activations and adds each pair of
// products into one of 16 f32 lanes: the weights need no conversion, which
// is what makes prefill compute less and decode issue fewer instructions.
// A lane accumulates elements (32 s + 2 i, 32 s + 2 i + 1) over the steps s
// in order and the 16 lanes are reduced by one fixed tree, so every output
// is the same chain whatever the tile: a row's result does not depend on
// the rows or features run with it (chunked prefill equals token-by-token).
#include "runtime/cpu/LinearDot.h"
#include "runtime/cpu/LinearImpl.h"

#include <immintrin.h>

#include <algorithm>
#include <stdexcept>
#include <vector>

namespace kvplan::cpu {

namespace {

/// Rows of x in bf16, each `stride` (a multiple of 32) long.
struct Bf16Rows {
  std::vector<uint16_t> v;
  int64_t stride = 0;
};

void roundRows(const float *x, int64_t rows, int64_t K, Bf16Rows &out) {
  out.stride = (K + 31) / 32 * 32;
  out.v.resize(size_t(rows * out.stride));
  for (int64_t r = 0; r < rows; ++r) {
    const float *xr = x + r * K;
    uint16_t *dst = out.v.data() + r * out.stride;
    for (int64_t k = 0; k < K; k += 32) {
      const int64_t n = std::min<int64_t>(32, K - k);
      const __mmask16 lo = n >= 16 ? __mmask16(0xffff) : __mmask16((1u << n) - 1);
      const __mmask16 hi = n >= 32 ? __mmask16(0xffff) : n > 16 ? __mmask16((1u << (n - 16)) - 1) : 0;
      const __m512 a = _mm512_maskz_loadu_ps(lo, xr + k), b = _mm512_maskz_loadu_ps(hi, xr + k + 16);
      // The second operand fills the low half.
      _mm512_storeu_si512(dst + k, reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(b, a)));
    }
  }
}

inline __m512bh asBh(__m512i v) { return reinterpret_cast<__m512bh>(v); }

/// One R x J tile: rows [r0, r0 + R) against features [j0, j0 + J), all of
/// K. With `ahead`, prefetches the next J features at the same offsets (a
/// row streams the weights: decode, or a block's first pass in prefill).
template <int R, int J>
inline void tile(const Bf16Rows &xb, int64_t r0, const uint16_t *w, int64_t K, int64_t j0,
                 float out[R][J], bool ahead) {
  __m512 acc[R][J];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < J; ++j) acc[r][j] = _mm512_setzero_ps();
  const int64_t full = K / 32 * 32;
  const uint16_t *x = xb.v.data() + r0 * xb.stride;
  for (int64_t k = 0; k < full; k += 32) {
    if (ahead)
      for (int j = 0; j < J; ++j) _mm_prefetch(reinterpret_cast<const char *>(w + (j0 + J + j) * K + k), _MM_HINT_T0);
    __m512bh xv[R];
    for (int r = 0; r < R; ++r) xv[r] = asBh(_mm512_loadu_si512(x + r * xb.stride + k));
    for (int j = 0; j < J; ++j) {
      const __m512bh wv = asBh(_mm512_loadu_si512(w + (j0 + j) * K + k));
      for (int r = 0; r < R; ++r) acc[r][j] = _mm512_dpbf16_ps(acc[r][j], xv[r], wv);
    }
  }
  if (full < K) { // the last, partial step: weights past K read as zero
    const __mmask32 m = __mmask32((uint64_t(1) << (K - full)) - 1);
    for (int j = 0; j < J; ++j) {
      const __m512bh wv = asBh(_mm512_maskz_loadu_epi16(m, w + (j0 + j) * K + full));
      for (int r = 0; r < R; ++r)
        acc[r][j] = _mm512_dpbf16_ps(acc[r][j], asBh(_mm512_loadu_si512(x + r * xb.stride + full)), wv);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < J; ++j) out[r][j] = _mm512_reduce_add_ps(acc[r][j]);
}

template <int R, int J>
void rowTile(const Bf16Rows &xb, int64_t r0, const uint16_t *w, int64_t K, int64_t jBegin,
             int64_t jEnd, const LinearOutputs &out, TensorRef bias, bool ahead) {
  impl::featureTiles<R, J>(r0, jBegin, jEnd, out, bias, ahead,
                           [&](auto width, int64_t j, auto &res, bool a) {
                             tile<R, decltype(width)::value>(xb, r0, w, K, j, res, a);
                           });
}

template <int J>
void rowsTail(int64_t rest, const Bf16Rows &xb, int64_t r0, const uint16_t *w, int64_t K,
              int64_t jb, int64_t je, const LinearOutputs &out, TensorRef bias, bool ahead) {
  switch (rest) {
  case 5: rowTile<5, J>(xb, r0, w, K, jb, je, out, bias, ahead); break;
  case 4: rowTile<4, J>(xb, r0, w, K, jb, je, out, bias, ahead); break;
  case 3: rowTile<3, J>(xb, r0, w, K, jb, je, out, bias, ahead); break;
  case 2: rowTile<2, J>(xb, r0, w, K, jb, je, out, bias, ahead); break;
  case 1: rowTile<1, J>(xb, r0, w, K, jb, je, out, bias, ahead); break;
  default: break;
  }
}

} // namespace

void linearBf16DotAvx512(const float *x, int64_t rows, int64_t K, TensorRef w, TensorRef bias,
                         const LinearOutputs &out, int64_t jBegin, int64_t jEnd) {
  if (w.dtype != DType::bf16)
    throw std::logic_error("the bf16 dot-product linear takes bf16 weights");
  thread_local Bf16Rows xb;
  roundRows(x, rows, K, xb);
  const auto *wp = static_cast<const uint16_t *>(w.data);
  if (rows == 1) { // decode: stream the features four at a time
    rowTile<1, 4>(xb, 0, wp, K, jBegin, jEnd, out, bias, true);
    return;
  }
  // Prefill: blocks of features whose weights stay in about half of L2
  // while the rows pass over them six at a time (24 accumulators, six row
  // vectors and a weight vector of the 32 registers). The first pass over
  // a block brings it from memory and prefetches as it goes.
  constexpr int TR = 6, TJ = 4;
  int64_t block = std::max<int64_t>(TJ, (256 * 1024) / std::max<int64_t>(1, K * 2));
  block = block / TJ * TJ;
  for (int64_t jb = jBegin; jb < jEnd; jb += block) {
    const int64_t je = std::min(jEnd, jb + block);
    int64_t r = 0;
    for (; r + TR <= rows; r += TR) rowTile<TR, TJ>(xb, r, wp, K, jb, je, out, bias, r == 0);
    rowsTail<TJ>(rows - r, xb, r, wp, K, jb, je, out, bias, r == 0);
  }
}

} // namespace kvplan::cpu
