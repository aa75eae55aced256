// AVX2 kernels (compiled with -mavx2, -mfma, -mf16c; called only when the
// CPU has them).
#include "runtime/cpu/IsaKernels.h"
#include "runtime/cpu/AttentionImpl.h"
#include "runtime/cpu/ElementwiseImpl.h"
#include "runtime/cpu/LinearInt4Impl.h"

#include <immintrin.h>

namespace kvplan::cpu {

namespace {

struct Avx2 {
  using V = __m256;
  static constexpr int W = 8;
  static constexpr int R = 4, J = 3, GemvJ = 4; // 12 accumulators of 16 registers
  // Weights converted as they load (bf16, f16, int8) do better as 3 rows x
  // 4 features: a converted weight vector is the 16th register and each
  // serves 3 FMAs. (One thread, 64 rows, stories110M's matrices, Zen 3:
  // bf16 48 -> 68 GFLOP/s, f16 48 -> 84, int8 42 -> 56; f32 runs 4 x 3,
  // 44 -> 56, and is slower as 3 x 4.)
  template <class Kind> struct TileFor {
    static constexpr bool f32 = std::is_same_v<Kind, impl::WF32>;
    static constexpr int R = f32 ? 4 : 3, J = f32 ? 3 : 4;
  };
  static V zero() { return _mm256_setzero_ps(); }
  static V load(const float *p) { return _mm256_loadu_ps(p); }
  static void store(float *p, V v) { _mm256_storeu_ps(p, v); }
  static V set1(float v) { return _mm256_set1_ps(v); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V div(V a, V b) { return _mm256_div_ps(a, b); }
  static V neg(V a) { return _mm256_sub_ps(_mm256_setzero_ps(), a); }
  // exp(x) as 2^n * p(r), x = n ln2 + r, |r| <= ln2 / 2 (Cephes' expf
  // coefficients), inputs clamped to where f32 neither overflows nor
  // flushes.
  static V exp(V x) {
    x = _mm256_min_ps(_mm256_max_ps(x, set1(-87.3365f)), set1(88.3762626647949f));
    V fx = _mm256_floor_ps(_mm256_fmadd_ps(x, set1(1.44269504088896341f), set1(0.5f)));
    x = _mm256_fnmadd_ps(fx, set1(0.693359375f), x);
    x = _mm256_fnmadd_ps(fx, set1(-2.12194440e-4f), x);
    V y = set1(1.9875691500E-4f);
    y = _mm256_fmadd_ps(y, x, set1(1.3981999507E-3f));
    y = _mm256_fmadd_ps(y, x, set1(8.3334519073E-3f));
    y = _mm256_fmadd_ps(y, x, set1(4.1665795894E-2f));
    y = _mm256_fmadd_ps(y, x, set1(1.6666665459E-1f));
    y = _mm256_fmadd_ps(y, x, set1(5.0000001201E-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, set1(1.0f)));
    return _mm256_mul_ps(y, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23)));
  }

  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static float reduce(V v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  template <class Kind> static V loadW(const typename Kind::T *p) {
    if constexpr (std::is_same_v<Kind, impl::WF32>) {
      return _mm256_loadu_ps(p);
    } else if constexpr (std::is_same_v<Kind, impl::WBF16>) {
      __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p)));
      return _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
    } else if constexpr (std::is_same_v<Kind, impl::WF16>) {
      return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p)));
    } else {
      __m256i i = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(p)));
      return _mm256_cvtepi32_ps(i);
    }
  }
  /// An int4 group's 32 codes (16 bytes) as floats: c[0] and c[1] hold
  /// elements 0-15 (low nibbles), c[2] and c[3] elements 16-31 (high ones).
  /// Each half widens its bytes to 32-bit lanes, where the high nibble needs
  /// only a shift.
  static void int4Codes(const uint8_t *p, V c[4]) {
    const __m256i mask = _mm256_set1_epi32(15);
    for (int h = 0; h < 2; ++h) {
      const __m256i b = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(p + 8 * h)));
      c[h] = _mm256_cvtepi32_ps(_mm256_and_si256(b, mask));
      c[2 + h] = _mm256_cvtepi32_ps(_mm256_srli_epi32(b, 4));
    }
  }
  /// An mxfp4 group's 32 doubled E2M1 values from its 16 bytes, in the same
  /// order: each nibble looked up in kMxfp4Doubled (one byte shuffle a half),
  /// then widened as signed bytes.
  static void mxfp4Codes(const uint8_t *p, V c[4]) {
    const __m128i table = _mm_loadu_si128(reinterpret_cast<const __m128i *>(kMxfp4Doubled));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i *>(p));
    const __m128i m = _mm_set1_epi8(15);
    const __m128i lo = _mm_shuffle_epi8(table, _mm_and_si128(b, m));
    const __m128i hi = _mm_shuffle_epi8(table, _mm_and_si128(_mm_srli_epi16(b, 4), m));
    c[0] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo));
    c[1] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8)));
    c[2] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi));
    c[3] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8)));
  }
};

} // namespace

void attentionAvx2(const CacheGeometry &cache, int64_t layer, const float *q,
                   const int32_t *positions, const int32_t *pageTable, int64_t tableRows,
                   const AttentionHeads &heads, float *out, int64_t begin, int64_t end) {
  impl::attention<Avx2>(cache, layer, q, positions, pageTable, tableRows, heads, out, begin, end);
}

void fusedFFNAvx2(const float *in, int64_t ff, float *out, int64_t begin, int64_t end,
                  bool gelu) {
  impl::fusedFFN<Avx2>(in, ff, out, begin, end, gelu);
}

void swigluAvx2(const float *gate, const float *up, float *out, int64_t n, bool gelu) {
  impl::swiglu<Avx2>(gate, up, out, n, gelu);
}

void linearAvx2(const float *x, int64_t rows, int64_t in, TensorRef w, TensorRef bias,
                const LinearOutputs &out, int64_t jBegin, int64_t jEnd) {
  if (w.dtype == DType::i4)
    impl::linearInt4<Avx2>(x, rows, in, w, bias, out, jBegin, jEnd);
  else if (w.dtype == DType::mxfp4)
    impl::linearInt4<Avx2, true>(x, rows, in, w, bias, out, jBegin, jEnd);
  else
    impl::linear<Avx2>(x, rows, in, w, bias, out, jBegin, jEnd);
}

float sumAvx2(const float *p, int64_t n) {
  __m256 a[8];
  for (__m256 &v : a) v = _mm256_setzero_ps();
  for (int64_t i = 0; i < n; i += 64) { // four cache lines
    for (int k = 0; k < 4; ++k) __builtin_prefetch(p + i + kSumPrefetch + 16 * k);
    for (int k = 0; k < 8; ++k) a[k] = _mm256_add_ps(a[k], _mm256_load_ps(p + i + 8 * k));
  }
  for (int k = 1; k < 8; ++k) a[0] = _mm256_add_ps(a[0], a[k]);
  return Avx2::reduce(a[0]);
}

double fmaLoopAvx2(int64_t iterations, float *sink) {
  __m256 a[12];
  for (int i = 0; i < 12; ++i) a[i] = _mm256_set1_ps(float(i) * 1e-3f);
  const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
  for (int64_t it = 0; it < iterations; ++it)
    for (int i = 0; i < 12; ++i) a[i] = _mm256_fmadd_ps(a[i], m, c);
  __m256 s = a[0];
  for (int i = 1; i < 12; ++i) s = _mm256_add_ps(s, a[i]);
  *sink = Avx2::reduce(s);
  return double(iterations) * 12 * 8 * 2;
}

} // namespace kvplan::cpu
