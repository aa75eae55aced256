// The integer-dot linear on AVX2 (LinearDotImpl.h): compiled with -mavx2
// -mfma -mf16c and called only when the CPU has them. The activation
// quantizer here serves the VNNI kernels too.
#define KVPLAN_DOT_VNNI 0
#include "runtime/cpu/LinearDotImpl.h"

namespace kvplan::cpu {

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
  linearDotX86(x, rows, K, w, bias, out, jBegin, jEnd);
}

} // namespace kvplan::cpu
