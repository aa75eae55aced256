// The integer-dot linear on AVX2 (LinearDot.h): compiled with -mavx2 -mfma
// -mf16c and called only when the CPU has them (also on AVX-512 CPUs, where
// these 256-bit instructions are as fast for a stream bound by memory).
//
// A group's 32 products take one vpmaddubsw (unsigned x signed bytes into
// pairs of 16-bit sums) and one vpmaddwd (pairs into eight 32-bit sums):
// int4 codes are unsigned already; an int8 weight w meets q as |w| x
// (q with w's sign), as vpmaddubsw needs. No sum can overflow: a pair is at
// most 2 x 128 x 127 = 32512 (int8) or 2 x 15 x 127 (int4). The eight lanes
// are converted and scaled once per group. Every output is one chain over
// its groups in the same order whatever the tile, so a row's result does not
// depend on the rows or features run with it.
#include "runtime/cpu/LinearDot.h"
#include "runtime/cpu/LinearImpl.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>

namespace kvplan::cpu {

namespace {

float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

float hmax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

/// An int4 group's 16 bytes as its 32 codes in element order: low nibbles
/// (elements 0-15) in the low half, high nibbles (16-31) in the high half.
inline __m256i int4Codes(const uint8_t *p) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i *>(p));
  const __m128i m = _mm_set1_epi8(15);
  return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(b, 4), m), _mm_and_si128(b, m));
}

/// An int4 or int8 matrix as the tiles read it.
struct DotWeights {
  const uint8_t *data = nullptr;
  const float *scales = nullptr, *mins = nullptr;
  int64_t K = 0, groups = 0;
  int64_t rowBytes = 0;   // codes or int8 values of one row
  int64_t groupBytes = 0; // of one group: 16 (int4) or 32 (int8)
};

/// Adds rows [r0, r0 + R) of qx times int4 features [j0, j0 + J) into acc.
/// With `ahead`, prefetches the next J features (decode streams them).
template <int R, int J>
inline void int4Groups(const QuantizedRows &qx, int64_t r0, const DotWeights &w, int64_t j0,
                       __m256 acc[R][J], bool ahead) {
  const int64_t G = w.groups;
  const __m256i ones = _mm256_set1_epi16(1);
  // Two groups at a time: their 32 code bytes in one load, low nibbles
  // (elements 0-15 of both) and high ones (16-31) each meeting the q
  // bytes pairGroups() laid out to match; the eight 32-bit sums are the
  // first group's four then the second's, scaled by a vector holding each
  // group's s * d four times.
  const __m256i m15 = _mm256_set1_epi8(15);
  const __m256i twice = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
  const int64_t pairs = G / 2;
  for (int64_t p = 0; p < pairs; ++p) {
    const int64_t g = 2 * p;
    if (ahead && p % 2 == 0)
      for (int j = 0; j < J; ++j) __builtin_prefetch(w.data + (j0 + J + j) * w.rowBytes + g * 16);
    __m256i lo[R], hi[R];
    __m128 d2[R];
    for (int r = 0; r < R; ++r) {
      const int8_t *q = qx.q.data() + (r0 + r) * G * 32 + p * 64;
      lo[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(q));
      hi[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(q + 32));
      d2[r] = _mm_castsi128_ps(
          _mm_loadl_epi64(reinterpret_cast<const __m128i *>(qx.d.data() + (r0 + r) * G + g)));
    }
    for (int j = 0; j < J; ++j) {
      const __m256i b = _mm256_loadu_si256(
          reinterpret_cast<const __m256i *>(w.data + (j0 + j) * w.rowBytes + g * 16));
      const __m256i cl = _mm256_and_si256(b, m15);
      const __m256i ch = _mm256_and_si256(_mm256_srli_epi16(b, 4), m15);
      const __m128 s2 = _mm_castsi128_ps(
          _mm_loadl_epi64(reinterpret_cast<const __m128i *>(w.scales + (j0 + j) * G + g)));
      for (int r = 0; r < R; ++r) {
        const __m256i dot = _mm256_madd_epi16(
            _mm256_add_epi16(_mm256_maddubs_epi16(cl, lo[r]), _mm256_maddubs_epi16(ch, hi[r])),
            ones);
        const __m256 scale =
            _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_mul_ps(s2, d2[r])), twice);
        acc[r][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, acc[r][j]);
      }
    }
  }
  if (G % 2) { // an odd last group, its q bytes in element order
    const int64_t g = G - 1;
    for (int j = 0; j < J; ++j) {
      const __m256i c = int4Codes(w.data + (j0 + j) * w.rowBytes + g * 16);
      const float s = w.scales[(j0 + j) * G + g];
      for (int r = 0; r < R; ++r) {
        const __m256i q = _mm256_loadu_si256(
            reinterpret_cast<const __m256i *>(qx.q.data() + ((r0 + r) * G + g) * 32));
        const __m256i dot = _mm256_madd_epi16(_mm256_maddubs_epi16(c, q), ones);
        acc[r][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot),
                                    _mm256_set1_ps(s * qx.d[size_t((r0 + r) * G + g)]), acc[r][j]);
      }
    }
  }
}

/// The same for int8 features, a group at a time (the last one, if K ends
/// inside it, is added by dotTile).
template <int R, int J>
inline void int8Groups(const QuantizedRows &qx, int64_t r0, const DotWeights &w, int64_t j0,
                       __m256 acc[R][J], bool ahead) {
  const int64_t G = w.groups, full = w.K / 32;
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t g = 0; g < full; ++g) {
    if (ahead && g % 2 == 0)
      for (int j = 0; j < J; ++j)
        __builtin_prefetch(w.data + (j0 + J + j) * w.rowBytes + g * 32);
    __m256i q[R];
    float d[R];
    for (int r = 0; r < R; ++r) {
      q[r] = _mm256_loadu_si256(
          reinterpret_cast<const __m256i *>(qx.q.data() + ((r0 + r) * G + g) * 32));
      d[r] = qx.d[size_t((r0 + r) * G + g)];
    }
    for (int j = 0; j < J; ++j) {
      const uint8_t *p = w.data + (j0 + j) * w.rowBytes + g * 32;
      const float s = w.scales[(j0 + j) * G + g];
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(p));
      const __m256i a = _mm256_sign_epi8(v, v);
      for (int r = 0; r < R; ++r) {
        const __m256i dot =
            _mm256_madd_epi16(_mm256_maddubs_epi16(a, _mm256_sign_epi8(q[r], v)), ones);
        acc[r][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(s * d[r]), acc[r][j]);
      }
    }
  }
}

/// One R x J tile: rows [r0, r0 + R) of qx against features [j0, j0 + J).
/// With `ahead`, prefetches the next J features (decode streams them).
template <bool Int4, int R, int J>
inline void dotTile(const QuantizedRows &qx, int64_t r0, const DotWeights &w, int64_t j0,
                    float out[R][J], bool ahead) {
  const int64_t G = w.groups, full = Int4 ? G : w.K / 32;
  if (ahead)
    for (int j = 0; j < J; ++j)
      for (int64_t b = 0; b < G * 4; b += 64) {
        __builtin_prefetch(reinterpret_cast<const char *>(w.scales + (j0 + J + j) * G) + b);
        if (Int4) __builtin_prefetch(reinterpret_cast<const char *>(w.mins + (j0 + J + j) * G) + b);
      }
  __m256 acc[R][J];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < J; ++j) acc[r][j] = _mm256_setzero_ps();
  if constexpr (Int4)
    int4Groups<R, J>(qx, r0, w, j0, acc, ahead);
  else
    int8Groups<R, J>(qx, r0, w, j0, acc, ahead);
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < J; ++j) {
      const int64_t row = (r0 + r) * G, feature = j0 + j;
      float s = hsum(acc[r][j]);
      if (!Int4 && full < G) { // int8's partial last group
        const int8_t *wv = reinterpret_cast<const int8_t *>(w.data + feature * w.rowBytes);
        const int8_t *q = qx.q.data() + (row + full) * 32;
        int32_t dot = 0;
        for (int64_t k = full * 32; k < w.K; ++k) dot += int32_t(wv[k]) * q[k - full * 32];
        s += float(dot) * (w.scales[feature * G + full] * qx.d[size_t(row + full)]);
      }
      if (Int4) { // sum over groups of m * sum(x), eight groups a vector
        const float *mins = w.mins + feature * G, *sums = qx.sums.data() + row;
        __m256 mv = _mm256_setzero_ps();
        int64_t g = 0;
        for (; g + 8 <= G; g += 8)
          mv = _mm256_fmadd_ps(_mm256_loadu_ps(mins + g), _mm256_loadu_ps(sums + g), mv);
        float m = hsum(mv);
        for (; g < G; ++g) m += mins[g] * sums[g];
        s += m;
      }
      out[r][j] = s;
    }
}

/// Lays each pair of groups (2p, 2p + 1) of every row out as the int4
/// tiles read it: q0-15 of both groups, then q16-31 of both. An odd last
/// group stays in element order.
void pairGroups(QuantizedRows &qx, int64_t rows) {
  const int64_t G = qx.groups;
  int8_t t[64];
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t p = 0; p < G / 2; ++p) {
      int8_t *b = qx.q.data() + (r * G + 2 * p) * 32;
      std::memcpy(t, b, 64);
      std::memcpy(b + 16, t + 32, 16);
      std::memcpy(b + 32, t + 16, 16);
    }
}

template <bool Int4, int R, int J>
void dotRowTile(const QuantizedRows &qx, int64_t r0, const DotWeights &w, int64_t jBegin,
                int64_t jEnd, const LinearOutputs &out, TensorRef bias, bool ahead) {
  size_t k = 0;
  while (jBegin >= out.firstColumn[k] + out.columns[k]) ++k;
  int64_t j = jBegin;
  float res[R][J];
  for (; j + J <= jEnd; j += J) {
    dotTile<Int4, R, J>(qx, r0, w, j, res, ahead);
    impl::store<R, J>(res, r0, j, out, bias, k);
  }
  float one[R][1];
  for (; j < jEnd; ++j) {
    dotTile<Int4, R, 1>(qx, r0, w, j, one, false);
    impl::store<R, 1>(one, r0, j, out, bias, k);
  }
}

/// Decode streams the features four at a time; prefill takes them in blocks
/// that stay in L2 while the rows pass over them four at a time.
template <bool Int4>
void linearDot(const float *x, int64_t rows, int64_t K, const DotWeights &w, TensorRef bias,
               const LinearOutputs &out, int64_t jBegin, int64_t jEnd) {
  thread_local QuantizedRows qx;
  quantizeRowsAvx2(x, rows, K, Int4, qx);
  if (Int4) pairGroups(qx, rows);
  if (rows == 1) {
    dotRowTile<Int4, 1, 4>(qx, 0, w, jBegin, jEnd, out, bias, true);
    return;
  }
  constexpr int TR = 4, TJ = 2;
  const int64_t perFeature = w.rowBytes + w.groups * (Int4 ? 8 : 4);
  int64_t block = std::max<int64_t>(TJ, (256 * 1024) / std::max<int64_t>(1, perFeature));
  block = block / TJ * TJ;
  for (int64_t jb = jBegin; jb < jEnd; jb += block) {
    const int64_t je = std::min(jEnd, jb + block);
    int64_t r = 0;
    for (; r + TR <= rows; r += TR) dotRowTile<Int4, TR, TJ>(qx, r, w, jb, je, out, bias, r == 0);
    switch (rows - r) {
    case 3: dotRowTile<Int4, 3, TJ>(qx, r, w, jb, je, out, bias, r == 0); break;
    case 2: dotRowTile<Int4, 2, TJ>(qx, r, w, jb, je, out, bias, r == 0); break;
    case 1: dotRowTile<Int4, 1, TJ>(qx, r, w, jb, je, out, bias, r == 0); break;
    default: break;
    }
  }
}

} // namespace

void quantizeRowsAvx2(const float *x, int64_t rows, int64_t K, bool withSums,
                      QuantizedRows &out) {
  const int64_t full = K / 32;
  if (full * 32 != K) {
    // Rare shapes (K not a multiple of 32): the portable quantizer gives the
    // same bytes.
    quantizeRowsScalar(x, rows, K, withSums, out);
    return;
  }
  out.groups = full;
  out.K = K;
  const size_t n = size_t(rows * full);
  out.q.resize(n * 32 + 32);
  out.d.resize(n + 8);
  out.sums.resize(n + 8);
  const __m256 signBit = _mm256_set1_ps(-0.0f);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t g = 0; g < full; ++g) {
      const float *xg = x + r * K + g * 32;
      const __m256 x0 = _mm256_loadu_ps(xg), x1 = _mm256_loadu_ps(xg + 8),
                   x2 = _mm256_loadu_ps(xg + 16), x3 = _mm256_loadu_ps(xg + 24);
      const __m256 a = _mm256_max_ps(
          _mm256_max_ps(_mm256_andnot_ps(signBit, x0), _mm256_andnot_ps(signBit, x1)),
          _mm256_max_ps(_mm256_andnot_ps(signBit, x2), _mm256_andnot_ps(signBit, x3)));
      const size_t at = size_t(r * full + g);
      // A NaN or infinity in the group: q 0 and d NaN, so that every output
      // it reaches is NaN, as with f32 activations (never a wrong number).
      const __m256 unordered = _mm256_or_ps(
          _mm256_or_ps(_mm256_cmp_ps(x0, x0, _CMP_UNORD_Q), _mm256_cmp_ps(x1, x1, _CMP_UNORD_Q)),
          _mm256_or_ps(_mm256_cmp_ps(x2, x2, _CMP_UNORD_Q), _mm256_cmp_ps(x3, x3, _CMP_UNORD_Q)));
      const float amax = hmax(a);
      if (_mm256_movemask_ps(unordered) || amax == std::numeric_limits<float>::infinity()) {
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(out.q.data() + at * 32),
                            _mm256_setzero_si256());
        out.d[at] = std::numeric_limits<float>::quiet_NaN();
        if (withSums)
          out.sums[at] = hsum(_mm256_add_ps(_mm256_add_ps(x0, x1), _mm256_add_ps(x2, x3)));
        continue;
      }
      const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
      const __m256 s = _mm256_set1_ps(id);
      // Rounds to nearest, even on ties (MXCSR's default), as nearbyint.
      const __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(x0, s)),
                    i1 = _mm256_cvtps_epi32(_mm256_mul_ps(x1, s)),
                    i2 = _mm256_cvtps_epi32(_mm256_mul_ps(x2, s)),
                    i3 = _mm256_cvtps_epi32(_mm256_mul_ps(x3, s));
      // Packing works within 128-bit halves; the permutation restores order.
      const __m256i packed = _mm256_permutevar8x32_epi32(
          _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3)), order);
      _mm256_storeu_si256(reinterpret_cast<__m256i *>(out.q.data() + at * 32), packed);
      out.d[at] = d;
      if (withSums)
        out.sums[at] = hsum(_mm256_add_ps(_mm256_add_ps(x0, x1), _mm256_add_ps(x2, x3)));
    }
}

void linearDotAvx2(const float *x, int64_t rows, int64_t K, TensorRef w, TensorRef bias,
                   const LinearOutputs &out, int64_t jBegin, int64_t jEnd) {
  const bool int4 = w.dtype == DType::i4;
  if ((!int4 && w.dtype != DType::i8) || w.groupSize != 32 || !w.scales || (int4 && !w.mins))
    throw std::logic_error("the integer-dot linear takes int8 or int4 weights in groups of 32");
  DotWeights dw;
  dw.data = static_cast<const uint8_t *>(w.data);
  dw.scales = w.scales;
  dw.mins = w.mins;
  dw.K = K;
  dw.groups = ceilDiv(K, int64_t(32));
  dw.rowBytes = int4 ? dw.groups * 16 : K;
  dw.groupBytes = int4 ? 16 : 32;
  if (int4)
    linearDot<true>(x, rows, K, dw, bias, out, jBegin, jEnd);
  else
    linearDot<false>(x, rows, K, dw, bias, out, jBegin, jEnd);
}

} // namespace kvplan::cpu
