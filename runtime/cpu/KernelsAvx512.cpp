// AVX-512 kernels (compiled with -mavx512f/bw/vl/dq, -mfma, -mf16c; called
// only when the CPU has them).
#include "runtime/cpu/IsaKernels.h"
#include "runtime/cpu/AttentionImpl.h"
#include "runtime/cpu/ElementwiseImpl.h"
#include "runtime/cpu/LinearInt4Impl.h"

#include <immintrin.h>

namespace kvplan::cpu {

namespace {

struct Avx512 {
  using V = __m512;
  static constexpr int W = 16;
  static constexpr int R = 6, J = 4, GemvJ = 4; // 24 (or 4) accumulators of 32 registers
  static V zero() { return _mm512_setzero_ps(); }
  static V load(const float *p) { return _mm512_loadu_ps(p); }
  static void store(float *p, V v) { _mm512_storeu_ps(p, v); }
  static V set1(float v) { return _mm512_set1_ps(v); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V div(V a, V b) { return _mm512_div_ps(a, b); }
  static V neg(V a) { return _mm512_sub_ps(_mm512_setzero_ps(), a); }
  // exp(x) as 2^n * p(r), x = n ln2 + r, |r| <= ln2 / 2 (Cephes' expf
  // coefficients), inputs clamped to where f32 neither overflows nor
  // flushes.
  static V exp(V x) {
    x = _mm512_min_ps(_mm512_max_ps(x, set1(-87.3365f)), set1(88.3762626647949f));
    V fx = _mm512_roundscale_ps(_mm512_fmadd_ps(x, set1(1.44269504088896341f), set1(0.5f)), _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    x = _mm512_fnmadd_ps(fx, set1(0.693359375f), x);
    x = _mm512_fnmadd_ps(fx, set1(-2.12194440e-4f), x);
    V y = set1(1.9875691500E-4f);
    y = _mm512_fmadd_ps(y, x, set1(1.3981999507E-3f));
    y = _mm512_fmadd_ps(y, x, set1(8.3334519073E-3f));
    y = _mm512_fmadd_ps(y, x, set1(4.1665795894E-2f));
    y = _mm512_fmadd_ps(y, x, set1(1.6666665459E-1f));
    y = _mm512_fmadd_ps(y, x, set1(5.0000001201E-1f));
    y = _mm512_fmadd_ps(y, _mm512_mul_ps(x, x), _mm512_add_ps(x, set1(1.0f)));
    return _mm512_mul_ps(y, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(fx), _mm512_set1_epi32(127)), 23)));
  }

  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static float reduce(V v) { return _mm512_reduce_add_ps(v); }
  template <class Kind> static V loadW(const typename Kind::T *p) {
    if constexpr (std::is_same_v<Kind, impl::WF32>) {
      return _mm512_loadu_ps(p);
    } else if constexpr (std::is_same_v<Kind, impl::WBF16>) {
      __m512i h = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(p)));
      return _mm512_castsi512_ps(_mm512_slli_epi32(h, 16));
    } else if constexpr (std::is_same_v<Kind, impl::WF16>) {
      return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(p)));
    } else {
      __m512i i = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p)));
      return _mm512_cvtepi32_ps(i);
    }
  }
  /// An int4 group's 32 codes (16 bytes) as floats: c[0] holds elements
  /// 0-15 (low nibbles), c[1] elements 16-31 (high ones). The bytes widen to
  /// 32-bit lanes, where the high nibble needs only a shift.
  static void int4Codes(const uint8_t *p, V c[2]) {
    const __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p)));
    c[0] = _mm512_cvtepi32_ps(_mm512_and_si512(b, _mm512_set1_epi32(15)));
    c[1] = _mm512_cvtepi32_ps(_mm512_srli_epi32(b, 4));
  }
  /// An mxfp4 group's 32 doubled E2M1 values, in the same order: each nibble
  /// looked up in kMxfp4Doubled (one byte shuffle a half), widened as signed.
  static void mxfp4Codes(const uint8_t *p, V c[2]) {
    const __m128i table = _mm_loadu_si128(reinterpret_cast<const __m128i *>(kMxfp4Doubled));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i *>(p));
    const __m128i m = _mm_set1_epi8(15);
    c[0] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_shuffle_epi8(table, _mm_and_si128(b, m))));
    c[1] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(
        _mm_shuffle_epi8(table, _mm_and_si128(_mm_srli_epi16(b, 4), m))));
  }
};

} // namespace

void attentionAvx512(const CacheGeometry &cache, int64_t layer, const float *q,
                   const int32_t *positions, const int32_t *pageTable, int64_t tableRows,
                   const AttentionHeads &heads, float *out, int64_t begin, int64_t end) {
  impl::attention<Avx512>(cache, layer, q, positions, pageTable, tableRows, heads, out, begin, end);
}

void fusedFFNAvx512(const float *in, int64_t ff, float *out, int64_t begin, int64_t end,
                    bool gelu) {
  impl::fusedFFN<Avx512>(in, ff, out, begin, end, gelu);
}

void swigluAvx512(const float *gate, const float *up, float *out, int64_t n, bool gelu) {
  impl::swiglu<Avx512>(gate, up, out, n, gelu);
}

void linearAvx512(const float *x, int64_t rows, int64_t in, TensorRef w, TensorRef bias,
                  const LinearOutputs &out, int64_t jBegin, int64_t jEnd) {
  if (w.dtype == DType::i4)
    impl::linearInt4<Avx512>(x, rows, in, w, bias, out, jBegin, jEnd);
  else if (w.dtype == DType::mxfp4)
    impl::linearInt4<Avx512, true>(x, rows, in, w, bias, out, jBegin, jEnd);
  else
    impl::linear<Avx512>(x, rows, in, w, bias, out, jBegin, jEnd);
}

float sumAvx512(const float *p, int64_t n) {
  __m512 a[8];
  for (__m512 &v : a) v = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 128) { // eight cache lines
    for (int k = 0; k < 8; ++k) __builtin_prefetch(p + i + kSumPrefetch + 16 * k);
    for (int k = 0; k < 8; ++k) a[k] = _mm512_add_ps(a[k], _mm512_load_ps(p + i + 16 * k));
  }
  for (int k = 1; k < 8; ++k) a[0] = _mm512_add_ps(a[0], a[k]);
  return _mm512_reduce_add_ps(a[0]);
}

double fmaLoopAvx512(int64_t iterations, float *sink) {
  // Twelve independent chains hide the FMA latency.
  __m512 a[12];
  for (int i = 0; i < 12; ++i) a[i] = _mm512_set1_ps(float(i) * 1e-3f);
  const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
  for (int64_t it = 0; it < iterations; ++it)
    for (int i = 0; i < 12; ++i) a[i] = _mm512_fmadd_ps(a[i], m, c);
  __m512 s = a[0];
  for (int i = 1; i < 12; ++i) s = _mm512_add_ps(s, a[i]);
  *sink = _mm512_reduce_add_ps(s);
  return double(iterations) * 12 * 16 * 2;
}

} // namespace kvplan::cpu
