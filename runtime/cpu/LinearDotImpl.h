// The integer-dot linear's x86 kernels (LinearDot.h), written once and
// compiled twice: LinearDotAvx2.cpp (AVX2: vpmaddubsw + vpmaddwd) and
// LinearDotVnni.cpp (AVX-512 VNNI at 256 bits: vpdpbusd), each with its own
// flags; KVPLAN_DOT_VNNI picks the product instruction. Everything here has
// internal linkage, so the two copies never meet.
//
// A group's 32 products take one vpmaddubsw (unsigned x signed bytes into
// pairs of 16-bit sums) and one vpmaddwd (pairs into eight 32-bit sums):
// int4 codes are unsigned already; an mxfp4 code becomes its doubled E2M1
// value plus 12 (unsigned, the row's 12 sum(q) taken off once); an int8
// weight w meets q as |w| x (q with w's sign), as vpmaddubsw needs. No sum
// can overflow: a pair is at most 2 x 128 x 127 = 32512 (int8), 2 x 15 x
// 127 (int4) or 2 x 24 x 127 (mxfp4). With VNNI
// (vpdpbusd, no 16-bit pairs to saturate) an int8 weight meets q + 128 from
// a start of -128 times its lane's weights: the same integers, fewer
// instructions, and room for tiles of 4 features. The eight lanes
// are converted and scaled once per group. Every output is one chain over
// its groups in the same order whatever the tile, so a row's result does not
// depend on the rows or features run with it.
#pragma once

#include "runtime/cpu/LinearDot.h"
#include "runtime/cpu/LinearImpl.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>

#ifndef KVPLAN_DOT_VNNI
#error "define KVPLAN_DOT_VNNI (0 or 1) before including LinearDotImpl.h"
#endif

namespace kvplan::cpu {
namespace {

/// Sums of four products of unsigned bytes u and signed bytes s, one per
/// 32-bit lane (lane i: bytes 4i to 4i + 3), added to acc. AVX-512 VNNI
/// does it in one vpdpbusd; AVX2 in vpmaddubsw (pairs into 16-bit sums,
/// which cannot saturate here: see above) and vpmaddwd by ones. The
/// integers are the same either way.
inline __m256i dot4(__m256i acc, __m256i u, __m256i s) {
#if KVPLAN_DOT_VNNI
  return _mm256_dpbusd_epi32(acc, u, s);
#else
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
#endif
}
/// The same for two pairs of operands, into one sum.
inline __m256i dot4x2(__m256i u0, __m256i s0, __m256i u1, __m256i s1) {
#if KVPLAN_DOT_VNNI
  return _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), u0, s0), u1, s1);
#else
  return _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(u0, s0), _mm256_maddubs_epi16(u1, s1)),
                           _mm256_set1_epi16(1));
#endif
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float hmax(__m256 v) {
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

/// The weight types the tiles take.
enum class Dot { i8, i4, mx };

/// An int4, mxfp4 or int8 matrix as the tiles read it.
struct DotWeights {
  const uint8_t *data = nullptr;
  const float *scales = nullptr, *mins = nullptr;
  const uint8_t *exponents = nullptr; // mxfp4's scale bytes
  const float *steps = nullptr;       // mxfp4Steps(), fetched once a call
  int64_t K = 0, groups = 0;
  int64_t rowBytes = 0;   // codes or int8 values of one row
  int64_t groupBytes = 0; // of one group: 16 (int4, mxfp4) or 32 (int8)
};

/// MXFP4's doubled E2M1 values plus 12, 0 to 24: unsigned bytes, as
/// vpmaddubsw and vpdpbusd take their first operand.
struct Mxfp4Raised {
  alignas(16) uint8_t v[16];
};
constexpr Mxfp4Raised raiseMxfp4() {
  Mxfp4Raised r{};
  for (int c = 0; c < 16; ++c) r.v[c] = uint8_t(kMxfp4Doubled[c] + 12);
  return r;
}
inline constexpr Mxfp4Raised kMxfp4Raised = raiseMxfp4();

/// The 32 raised values (v + 12) of mxfp4 codes `c` (one nibble a byte),
/// each 128-bit lane looked up in kMxfp4Raised. A group's sum of v q is
/// then sum((v + 12) q) - 12 sum(q), the second term once a row for every
/// feature (raisedStart); a pair of products is at most 2 x 24 x 127, two
/// pairs' 12192, clear of 16-bit saturation.
inline __m256i mxfp4Raised(__m256i c) {
  const __m128i t = _mm_load_si128(reinterpret_cast<const __m128i *>(kMxfp4Raised.v));
  return _mm256_shuffle_epi8(_mm256_set_m128i(t, t), c);
}

/// -12 times each 32-bit lane's four q bytes summed, of two byte vectors:
/// the start from which a lane's products with raised values are sum(v q).
inline __m256i raisedStart(__m256i lo, __m256i hi) {
  const __m256i twelve = _mm256_set1_epi8(12);
  return _mm256_sub_epi32(_mm256_setzero_si256(), dot4x2(twelve, lo, twelve, hi));
}

/// Two groups' scales of feature j as two floats: int4's f32 scales, or
/// mxfp4's steps from their scale bytes.
template <bool Mx> inline __m128 scalePair(const DotWeights &w, int64_t j, int64_t g) {
  if constexpr (Mx) {
    const uint8_t *e = w.exponents + j * w.groups + g;
    return _mm_setr_ps(w.steps[e[0]], w.steps[e[1]], 0.0f, 0.0f);
  } else {
    return _mm_castsi128_ps(
        _mm_loadl_epi64(reinterpret_cast<const __m128i *>(w.scales + j * w.groups + g)));
  }
}

/// Adds rows [r0, r0 + R) of qx times int4 (Mx: mxfp4) features [j0, j0 +
/// J) into acc. With `ahead`, prefetches the next J features (decode
/// streams them). An mxfp4 code becomes its raised value (mxfp4Raised),
/// which meets q as an int4 code does, from each row's start.
template <bool Mx, int R, int J>
inline void int4Groups(const QuantizedRows &qx, int64_t r0, const DotWeights &w, int64_t j0,
                       __m256 acc[R][J], bool ahead) {
  const int64_t G = w.groups;
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
    [[maybe_unused]] __m256i start[R];
    __m128 d2[R];
    for (int r = 0; r < R; ++r) {
      const int8_t *q = qx.q.data() + (r0 + r) * G * 32 + p * 64;
      lo[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(q));
      hi[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(q + 32));
      if constexpr (Mx) start[r] = raisedStart(lo[r], hi[r]);
      d2[r] = _mm_castsi128_ps(
          _mm_loadl_epi64(reinterpret_cast<const __m128i *>(qx.d.data() + (r0 + r) * G + g)));
    }
    for (int j = 0; j < J; ++j) {
      const __m256i b = _mm256_loadu_si256(
          reinterpret_cast<const __m256i *>(w.data + (j0 + j) * w.rowBytes + g * 16));
      const __m256i cl = _mm256_and_si256(b, m15);
      const __m256i ch = _mm256_and_si256(_mm256_srli_epi16(b, 4), m15);
      const __m128 s2 = scalePair<Mx>(w, j0 + j, g);
      const __m256i ul = Mx ? mxfp4Raised(cl) : cl, uh = Mx ? mxfp4Raised(ch) : ch;
      for (int r = 0; r < R; ++r) {
        __m256i dot = dot4x2(ul, lo[r], uh, hi[r]);
        if constexpr (Mx) dot = _mm256_add_epi32(dot, start[r]);
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
      const float s = Mx ? w.steps[w.exponents[(j0 + j) * G + g]] : w.scales[(j0 + j) * G + g];
      const __m256i u = Mx ? mxfp4Raised(c) : c;
      for (int r = 0; r < R; ++r) {
        const __m256i q = _mm256_loadu_si256(
            reinterpret_cast<const __m256i *>(qx.q.data() + ((r0 + r) * G + g) * 32));
        const __m256i from = Mx ? raisedStart(q, _mm256_setzero_si256()) : _mm256_setzero_si256();
        const __m256i dot = dot4(from, u, q);
        acc[r][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot),
                                    _mm256_set1_ps(s * qx.d[size_t((r0 + r) * G + g)]), acc[r][j]);
      }
    }
  }
}

/// Adds group g of rows [r0, r0 + R) of qx times int8 features [j0, j0 + J)
/// into acc.
template <int R, int J>
inline void int8Group(const QuantizedRows &qx, int64_t r0, const DotWeights &w, int64_t j0,
                      int64_t g, __m256 acc[R][J]) {
  const int64_t G = w.groups;
#if KVPLAN_DOT_VNNI
  // vpdpbusd takes unsigned bytes times signed ones: x's bytes as q + 128
  // (q xor 0x80) times the weights as they are, starting from -128 times
  // the sum of each lane's four weights, is exactly sum(w q) per lane with
  // no sign instructions; each row's step d and each feature's scale s are
  // broadcast once, their product one multiply (the same floats as AVX2's).
  const __m256i flip = _mm256_set1_epi8(char(0x80));
  __m256i u[R];
  __m256 d[R];
  for (int r = 0; r < R; ++r) {
    u[r] = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(
                                qx.q.data() + ((r0 + r) * G + g) * 32)),
                            flip);
    d[r] = _mm256_set1_ps(qx.d[size_t((r0 + r) * G + g)]);
  }
  for (int j = 0; j < J; ++j) {
    const uint8_t *p = w.data + (j0 + j) * w.rowBytes + g * 32;
    const __m256 s = _mm256_set1_ps(w.scales[(j0 + j) * G + g]);
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(p));
    const __m256i start = _mm256_sub_epi32(_mm256_setzero_si256(),
                                           _mm256_dpbusd_epi32(_mm256_setzero_si256(), flip, v));
    for (int r = 0; r < R; ++r) {
      const __m256i dot = _mm256_dpbusd_epi32(start, u[r], v);
      acc[r][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(s, d[r]), acc[r][j]);
    }
  }
#else
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
      const __m256i dot = dot4(_mm256_setzero_si256(), a, _mm256_sign_epi8(q[r], v));
      acc[r][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(s * d[r]), acc[r][j]);
    }
  }
#endif
}

/// The same for int8 features, a group at a time (the last one, if K ends
/// inside it, is added by dotTile).
template <int R, int J>
inline void int8Groups(const QuantizedRows &qx, int64_t r0, const DotWeights &w, int64_t j0,
                       __m256 acc[R][J], bool ahead) {
  const int64_t full = w.K / 32;
  for (int64_t g = 0; g < full; ++g) {
    if (ahead && g % 2 == 0)
      for (int j = 0; j < J; ++j)
        __builtin_prefetch(w.data + (j0 + J + j) * w.rowBytes + g * 32);
    int8Group<R, J>(qx, r0, w, j0, g, acc);
  }
}

/// One R x J tile: rows [r0, r0 + R) of qx against features [j0, j0 + J).
/// With `ahead`, prefetches the next J features (decode streams them).
template <Dot Kind, int R, int J>
inline void dotTile(const QuantizedRows &qx, int64_t r0, const DotWeights &w, int64_t j0,
                    float out[R][J], bool ahead) {
  constexpr bool Int4 = Kind == Dot::i4;
  const int64_t G = w.groups, full = Kind == Dot::i8 ? w.K / 32 : G;
  if (ahead)
    for (int j = 0; j < J; ++j) {
      if (Kind == Dot::mx) {
        for (int64_t b = 0; b < G; b += 64) __builtin_prefetch(w.exponents + (j0 + J + j) * G + b);
        continue;
      }
      for (int64_t b = 0; b < G * 4; b += 64) {
        __builtin_prefetch(reinterpret_cast<const char *>(w.scales + (j0 + J + j) * G) + b);
        if (Int4) __builtin_prefetch(reinterpret_cast<const char *>(w.mins + (j0 + J + j) * G) + b);
      }
    }
  __m256 acc[R][J];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < J; ++j) acc[r][j] = _mm256_setzero_ps();
  if constexpr (Kind == Dot::i8)
    int8Groups<R, J>(qx, r0, w, j0, acc, ahead);
  else
    int4Groups<Kind == Dot::mx, R, J>(qx, r0, w, j0, acc, ahead);
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < J; ++j) {
      const int64_t row = (r0 + r) * G, feature = j0 + j;
      float s = hsum(acc[r][j]);
      if (Kind == Dot::i8 && full < G) { // int8's partial last group
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
inline void pairGroups(QuantizedRows &qx, int64_t rows) {
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

template <Dot Kind, int R, int J>
void dotRowTile(const QuantizedRows &qx, int64_t r0, const DotWeights &w, int64_t jBegin,
                int64_t jEnd, const LinearOutputs &out, TensorRef bias, bool ahead) {
  impl::featureTiles<R, J>(r0, jBegin, jEnd, out, bias, ahead,
                           [&](auto width, int64_t j, auto &res, bool a) {
                             dotTile<Kind, R, decltype(width)::value>(qx, r0, w, j, res, a);
                           });
}

/// Decode streams the features four at a time; prefill takes them in blocks
/// that stay in L2 while the rows pass over them four at a time.
template <Dot Kind>
void linearDot(const float *x, int64_t rows, int64_t K, const DotWeights &w, TensorRef bias,
               const LinearOutputs &out, int64_t jBegin, int64_t jEnd) {
  thread_local QuantizedRows qx;
  quantizeRowsAvx2(x, rows, K, Kind == Dot::i4, qx);
  if (Kind != Dot::i8) pairGroups(qx, rows);
  if (rows == 1) {
    dotRowTile<Kind, 1, 4>(qx, 0, w, jBegin, jEnd, out, bias, true);
    return;
  }
  // Tiles of 4 rows by 2 features; by 4 with VNNI, whose 32 registers hold
  // 16 accumulators beside the rows' bytes and steps (int4 and mxfp4 5-6%
  // faster so than by 2, 64 rows of 768 x 2048, kvplan-kernel-bench).
  constexpr int TR = 4, TJ = KVPLAN_DOT_VNNI ? 4 : 2;
  const int64_t perFeature =
      w.rowBytes + w.groups * (Kind == Dot::i4 ? 8 : Kind == Dot::mx ? 1 : 4);
  int64_t block = std::max<int64_t>(TJ, (256 * 1024) / std::max<int64_t>(1, perFeature));
  block = block / TJ * TJ;
  for (int64_t jb = jBegin; jb < jEnd; jb += block) {
    const int64_t je = std::min(jEnd, jb + block);
    int64_t r = 0;
    for (; r + TR <= rows; r += TR) dotRowTile<Kind, TR, TJ>(qx, r, w, jb, je, out, bias, r == 0);
    switch (rows - r) {
    case 3: dotRowTile<Kind, 3, TJ>(qx, r, w, jb, je, out, bias, r == 0); break;
    case 2: dotRowTile<Kind, 2, TJ>(qx, r, w, jb, je, out, bias, r == 0); break;
    case 1: dotRowTile<Kind, 1, TJ>(qx, r, w, jb, je, out, bias, r == 0); break;
    default: break;
    }
  }
}

/// The entry point's body (same contract as linear()).
inline void linearDotX86(const float *x, int64_t rows, int64_t K, TensorRef w, TensorRef bias,
                         const LinearOutputs &out, int64_t jBegin, int64_t jEnd) {
  const bool int4 = w.dtype == DType::i4, mx = w.dtype == DType::mxfp4;
  if (!isGroupedDType(w.dtype) || w.groupSize != 32 || (mx ? !w.exponents : !w.scales) ||
      (int4 && !w.mins))
    throw std::logic_error(
        "the integer-dot linear takes int8, int4 or mxfp4 weights in groups of 32");
  DotWeights dw;
  dw.data = static_cast<const uint8_t *>(w.data);
  dw.scales = w.scales;
  dw.mins = w.mins;
  dw.exponents = w.exponents;
  dw.steps = mx ? mxfp4Steps() : nullptr;
  dw.K = K;
  dw.groups = ceilDiv(K, int64_t(32));
  dw.rowBytes = int4 || mx ? dw.groups * 16 : K;
  dw.groupBytes = int4 || mx ? 16 : 32;
  if (int4)
    linearDot<Dot::i4>(x, rows, K, dw, bias, out, jBegin, jEnd);
  else if (mx)
    linearDot<Dot::mx>(x, rows, K, dw, bias, out, jBegin, jEnd);
  else
    linearDot<Dot::i8>(x, rows, K, dw, bias, out, jBegin, jEnd);
}

} // namespace
} // namespace kvplan::cpu
