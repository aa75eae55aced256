// The CPU kernels' entry points: the linear dispatches to the best ISA level
// (runtime/cpu/Isa.cpp); the others are plain loops the compiler vectorises.
#include "runtime/cpu/Kernels.h"
#include "support/Align.h"

#include "support/Half.h"
#include "runtime/cpu/ElementwiseImpl.h"
#include "runtime/cpu/IsaKernels.h"
#include "runtime/cpu/LinearDot.h"
#include "runtime/cpu/Isa.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <type_traits>

namespace kvplan::cpu {

namespace {

inline float bf16(uint16_t v) {
  uint32_t bits = uint32_t(v) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

/// f16 -> f32 for every bit pattern, built once: a lookup is cheaper than
/// decoding where the CPU has no conversion instruction to rely on.
const float *f16Table() {
  static const std::vector<float> table = [] {
    std::vector<float> t(65536);
    for (uint32_t i = 0; i < 65536; ++i) t[i] = f16ToF32(uint16_t(i));
    return t;
  }();
  return table.data();
}

template <DType D> struct Elem;
template <> struct Elem<DType::f32> {
  using T = float;
  static float get(const T *p, int64_t i) { return p[i]; }
};
template <> struct Elem<DType::bf16> {
  using T = uint16_t;
  static float get(const T *p, int64_t i) { return bf16(p[i]); }
};
template <> struct Elem<DType::f16> {
  using T = uint16_t;
  static float get(const T *p, int64_t i) { return f16Table()[p[i]]; }
};
template <> struct Elem<DType::i8> {
  using T = int8_t;
  static float get(const T *p, int64_t i) { return float(p[i]); }
};

/// dot(x, w) with eight partial sums, so the loop vectorises.
template <DType D> float dot(const float *x, const typename Elem<D>::T *w, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) acc[k] += x[i + k] * Elem<D>::get(w, i + k);
  float s = 0;
  for (; i < n; ++i) s += x[i] * Elem<D>::get(w, i);
  return s + ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

template <DType D> using Tag = std::integral_constant<DType, D>;

/// Calls fn(Tag<D>{}) so the element type is a compile-time constant.
template <typename F> void dispatch(DType t, F &&fn) {
  switch (t) {
  case DType::f32: fn(Tag<DType::f32>{}); return;
  case DType::bf16: fn(Tag<DType::bf16>{}); return;
  case DType::f16: fn(Tag<DType::f16>{}); return;
  case DType::i8: fn(Tag<DType::i8>{}); return;
  case DType::i4: case DType::mxfp4: case DType::i32: break;
  }
  throw std::logic_error("kernel given an integer tensor where floats are needed");
}

/// dispatch() for tensors that are never int8 (norm scales, the KV cache).
template <typename F> void dispatchFloat(DType t, F &&fn) {
  if (t == DType::i8)
    throw std::logic_error("kernel given int8 data where only floats are stored");
  dispatch(t, [&](auto tag) {
    if constexpr (decltype(tag)::value != DType::i8) fn(tag);
  });
}

template <DType D> void storeRow(const float *src, void *dst, int64_t n);
template <> void storeRow<DType::f32>(const float *src, void *dst, int64_t n) {
  std::memcpy(dst, src, size_t(n) * 4);
}
template <> void storeRow<DType::bf16>(const float *src, void *dst, int64_t n) {
  convertElements(src, DType::f32, dst, DType::bf16, n);
}
template <> void storeRow<DType::f16>(const float *src, void *dst, int64_t n) {
  convertElements(src, DType::f32, dst, DType::f16, n);
}

} // namespace

const float *mxfp4Steps() {
  static const std::vector<float> steps = [] {
    std::vector<float> t(256);
    for (int e = 0; e < 256; ++e) t[size_t(e)] = e8m0Half(uint8_t(e));
    return t;
  }();
  return steps.data();
}

float loadElement(TensorRef t, int64_t i) {
  switch (t.dtype) {
  case DType::f32: return static_cast<const float *>(t.data)[i];
  case DType::bf16: return bf16(static_cast<const uint16_t *>(t.data)[i]);
  case DType::f16: return f16Table()[static_cast<const uint16_t *>(t.data)[i]];
  case DType::i8: return float(static_cast<const int8_t *>(t.data)[i]) * t.scales[i / t.groupSize];
  case DType::i4: return int4Element(static_cast<const uint8_t *>(t.data), t.scales, t.mins, i);
  case DType::mxfp4: return mxfp4Element(static_cast<const uint8_t *>(t.data), t.exponents, i);
  case DType::i32: break;
  }
  throw std::logic_error("loadElement on an integer tensor");
}

void embedding(const int32_t *tokens, TensorRef table, int64_t hidden, float scale, float *out,
               int64_t begin, int64_t end) {
  for (int64_t r = begin; r < end; ++r) {
    const int64_t row = int64_t(tokens[r]) * hidden;
    if (table.dtype == DType::f32) {
      std::memcpy(out + r * hidden, static_cast<const float *>(table.data) + row,
                  size_t(hidden) * 4);
    } else if (table.dtype == DType::i8) {
      const int8_t *q = static_cast<const int8_t *>(table.data) + row;
      const int64_t groups = ceilDiv(hidden, table.groupSize);
      const float *scale = table.scales + int64_t(tokens[r]) * groups;
      for (int64_t k = 0; k < hidden; ++k)
        out[r * hidden + k] = float(q[k]) * scale[k / table.groupSize];
    } else if (table.dtype == DType::i4) {
      const int64_t groups = ceilDiv(hidden, kInt4Group), first = int64_t(tokens[r]) * groups;
      const uint8_t *codes = static_cast<const uint8_t *>(table.data) + first * 16;
      for (int64_t k = 0; k < hidden; ++k)
        out[r * hidden + k] = int4Element(codes, table.scales + first, table.mins + first, k);
    } else if (table.dtype == DType::mxfp4) {
      const int64_t groups = ceilDiv(hidden, kMxfp4Group), first = int64_t(tokens[r]) * groups;
      const uint8_t *codes = static_cast<const uint8_t *>(table.data) + first * 16;
      for (int64_t k = 0; k < hidden; ++k)
        out[r * hidden + k] = mxfp4Element(codes, table.exponents + first, k);
    } else {
      const uint16_t *src = static_cast<const uint16_t *>(table.data) + row;
      convertElements(src, table.dtype, out + r * hidden, DType::f32, hidden);
    }
    if (scale != 1.0f)
      for (int64_t k = 0; k < hidden; ++k) out[r * hidden + k] *= scale;
  }
}

static void normRow(const float *x, TensorRef w, int64_t cols, double eps, float *out) {
  double ss = 0;
  for (int64_t i = 0; i < cols; ++i) ss += double(x[i]) * x[i];
  const float inv = float(1.0 / std::sqrt(ss / double(cols) + eps));
  dispatchFloat(w.dtype, [&](auto tag) {
    constexpr DType D = decltype(tag)::value;
    const auto *wp = static_cast<const typename Elem<D>::T *>(w.data);
    for (int64_t i = 0; i < cols; ++i) out[i] = x[i] * inv * Elem<D>::get(wp, i);
  });
}

void rmsNorm(const float *x, TensorRef w, int64_t cols, double eps, float *out, int64_t begin,
             int64_t end) {
  for (int64_t r = begin; r < end; ++r) normRow(x + r * cols, w, cols, eps, out + r * cols);
}

void addRmsNorm(const float *a, const float *b, TensorRef w, int64_t cols, double eps,
                float *normed, float *residual, int64_t begin, int64_t end) {
  for (int64_t r = begin; r < end; ++r) {
    float *res = residual + r * cols;
    for (int64_t i = 0; i < cols; ++i) res[i] = a[r * cols + i] + b[r * cols + i];
    normRow(res, w, cols, eps, normed + r * cols);
  }
}

/// The portable linear of int4 and mxfp4 weights: each weight decoded
/// (int4: code * scale + min; mxfp4: the doubled E2M1 value times its
/// group's step) and multiplied into one sum per output.
static void linearNibblesScalar(const float *x, int64_t rows, int64_t in, TensorRef w,
                                TensorRef bias, const LinearOutputs &out, int64_t jBegin,
                                int64_t jEnd) {
  static_assert(kInt4Group == kMxfp4Group, "int4 and mxfp4 lay their nibbles out alike");
  const int64_t groups = ceilDiv(in, kInt4Group);
  const bool mx = w.dtype == DType::mxfp4;
  size_t k = 0;
  for (int64_t j = jBegin; j < jEnd; ++j) {
    while (j >= out.firstColumn[k] + out.columns[k]) ++k;
    const uint8_t *codes = static_cast<const uint8_t *>(w.data) + j * groups * 16;
    const int64_t g0 = j * groups;
    auto weight = [&](int64_t c) {
      return mx ? mxfp4Element(codes, w.exponents + g0, c)
                : int4Element(codes, w.scales + g0, w.mins + g0, c);
    };
    const float b = bias.data ? loadElement(bias, j) : 0.0f;
    for (int64_t r = 0; r < rows; ++r) {
      float s = 0;
      for (int64_t c = 0; c < in; ++c) s += x[r * in + c] * weight(c);
      out.data[k][r * out.columns[k] + j - out.firstColumn[k]] = s + b;
    }
  }
}

void linearScalar(const float *x, int64_t rows, int64_t in, TensorRef w, TensorRef bias,
                  const LinearOutputs &out, int64_t jBegin, int64_t jEnd) {
  if (w.dtype == DType::i4 || w.dtype == DType::mxfp4) {
    linearNibblesScalar(x, rows, in, w, bias, out, jBegin, jEnd);
    return;
  }
  const int64_t groups = w.groupSize ? ceilDiv(in, w.groupSize) : 0;
  dispatch(w.dtype, [&](auto tag) {
    constexpr DType D = decltype(tag)::value;
    const auto *wp = static_cast<const typename Elem<D>::T *>(w.data);
    size_t k = 0;
    for (int64_t j = jBegin; j < jEnd; ++j) {
      while (j >= out.firstColumn[k] + out.columns[k]) ++k;
      float *dst = out.data[k];
      const int64_t cols = out.columns[k], col = j - out.firstColumn[k];
      const auto *row = wp + j * in;
      const float b = bias.data ? loadElement(bias, j) : 0.0f;
      for (int64_t r = 0; r < rows; ++r) {
        float s;
        if constexpr (D == DType::i8) {
          // Group by group: sum in the integers' scale, then apply it.
          s = 0;
          for (int64_t g = 0; g < groups; ++g) {
            const int64_t k0 = g * w.groupSize, n = std::min(w.groupSize, in - k0);
            s += dot<D>(x + r * in + k0, row + k0, n) * w.scales[j * groups + g];
          }
        } else {
          s = dot<D>(x + r * in, row, in);
        }
        dst[r * cols + col] = s + b;
      }
    }
  });
}

void linear(const float *x, int64_t rows, int64_t in, TensorRef w, TensorRef bias,
            const LinearOutputs &out, int64_t jBegin, int64_t jEnd) {
  if (w.dtype == DType::bf16 && bf16Dot()) {
    linearBf16DotAvx512(x, rows, in, w, bias, out, jBegin, jEnd);
    return;
  }
  if (isGroupedDType(w.dtype) && activeActivations() == Activations::reduced) {
    if (activeIsa() == Isa::scalar)
      linearDotScalar(x, rows, in, w, bias, out, jBegin, jEnd);
    else if (activeIsa() == Isa::avx512 && cpuHasAvx512Vnni())
      linearDotVnni(x, rows, in, w, bias, out, jBegin, jEnd);
    else
      linearDotAvx2(x, rows, in, w, bias, out, jBegin, jEnd);
    return;
  }
  switch (activeIsa()) {
  case Isa::avx512: linearAvx512(x, rows, in, w, bias, out, jBegin, jEnd); return;
  case Isa::avx2: linearAvx2(x, rows, in, w, bias, out, jBegin, jEnd); return;
  case Isa::scalar: break;
  }
  linearScalar(x, rows, in, w, bias, out, jBegin, jEnd);
}

float sumScalar(const float *p, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int64_t i = 0; i < n; i += 16) { // one cache line
    __builtin_prefetch(p + i + kSumPrefetch);
    for (int k = 0; k < 16; ++k) acc[k % 8] += p[i + k];
  }
  float s = 0;
  for (float a : acc) s += a;
  return s;
}

double fmaLoopScalar(int64_t iterations, float *sink) {
  float a[16];
  for (int i = 0; i < 16; ++i) a[i] = float(i) * 1e-3f;
  for (int64_t it = 0; it < iterations; ++it)
    for (int i = 0; i < 16; ++i) a[i] = a[i] * 0.999999f + 1e-7f;
  float s = 0;
  for (float v : a) s += v;
  *sink = s;
  return double(iterations) * 16 * 2;
}

namespace impl {
float f16ScalarWeight(uint16_t v) { return f16Table()[v]; }
} // namespace impl

void ropeTable(const int32_t *positions, int64_t half, const double *freqs,
               const double *amplitudes, float *table, int64_t begin, int64_t end) {
  for (int64_t r = begin; r < end; ++r)
    for (int64_t i = 0; i < half; ++i) {
      const double angle = double(std::max(positions[r], 0)) * freqs[i];
      const double a = amplitudes ? amplitudes[i] : 1.0;
      table[(r * half + i) * 2] = float(a * std::cos(angle));
      table[(r * half + i) * 2 + 1] = float(a * std::sin(angle));
    }
}

void rope(const float *x, const int32_t *positions, int64_t cols, int64_t headDim,
          const float *table, float *out, int64_t begin, int64_t end) {
  const int64_t half = headDim / 2;
  for (int64_t r = begin; r < end; ++r) {
    const float *src = x + r * cols;
    float *dst = out + r * cols;
    if (positions[r] < 0) {
      if (dst != src) std::memcpy(dst, src, size_t(cols) * 4);
      continue;
    }
    for (int64_t i = 0; i < half; ++i) {
      const float c = table[(r * half + i) * 2], s = table[(r * half + i) * 2 + 1];
      for (int64_t h = 0; h < cols; h += headDim) {
        const float a = src[h + 2 * i], b = src[h + 2 * i + 1];
        dst[h + 2 * i] = a * c - b * s;
        dst[h + 2 * i + 1] = a * s + b * c;
      }
    }
  }
}

void kvCacheWrite(const CacheGeometry &cache, int64_t layer, const float *keys,
                  const float *values, const int32_t *positions, const int32_t *pageTable,
                  int64_t tableRows, int64_t begin, int64_t end) {
  const int64_t width = cache.kvHeads * cache.headDim, hd = cache.headDim;
  const int64_t elem = dtypeBytes(cache.dtype);
  char *base = static_cast<char *>(cache.base);
  dispatchFloat(cache.dtype, [&](auto tag) {
    constexpr DType D = decltype(tag)::value;
    for (int64_t r = begin; r < end; ++r) {
      const int32_t p = positions[r];
      if (p < 0) continue;
      const int32_t page = pageRow(pageTable, tableRows, cache.pagesPerSequence, r)[p / cache.pageSize];
      const int64_t slot = p % cache.pageSize;
      for (int64_t h = 0; h < cache.kvHeads; ++h) {
        storeRow<D>(keys + r * width + h * hd, base + cache.offset(layer, 0, page, h, slot) * elem, hd);
        storeRow<D>(values + r * width + h * hd, base + cache.offset(layer, 1, page, h, slot) * elem,
                    hd);
      }
    }
  });
}

void cachedAttention(const CacheGeometry &cache, int64_t layer, const float *q,
                     const int32_t *positions, const int32_t *pageTable, int64_t tableRows,
                     const AttentionHeads &heads, float *out, int64_t begin, int64_t end) {
  switch (activeIsa()) {
  case Isa::avx512:
    return attentionAvx512(cache, layer, q, positions, pageTable, tableRows, heads, out,
                           begin, end);
  case Isa::avx2:
    return attentionAvx2(cache, layer, q, positions, pageTable, tableRows, heads, out, begin, end);
  case Isa::scalar: break;
  }
  attentionPortable(cache, layer, q, positions, pageTable, tableRows, heads, out, begin, end);
}

void fusedFFN(const float *in, int64_t ff, float *out, int64_t begin, int64_t end, bool gelu) {
  switch (activeIsa()) {
  case Isa::avx512: return fusedFFNAvx512(in, ff, out, begin, end, gelu);
  case Isa::avx2: return fusedFFNAvx2(in, ff, out, begin, end, gelu);
  case Isa::scalar: break;
  }
  for (int64_t r = begin; r < end; ++r)
    for (int64_t j = 0; j < ff; ++j)
      out[r * ff + j] = impl::gateScalar(in[r * 2 * ff + j], gelu) * in[r * 2 * ff + ff + j];
}

void swiglu(const float *gate, const float *up, float *out, int64_t begin, int64_t end,
            bool gelu) {
  switch (activeIsa()) {
  case Isa::avx512: return swigluAvx512(gate + begin, up + begin, out + begin, end - begin, gelu);
  case Isa::avx2: return swigluAvx2(gate + begin, up + begin, out + begin, end - begin, gelu);
  case Isa::scalar: break;
  }
  for (int64_t i = begin; i < end; ++i) out[i] = impl::gateScalar(gate[i], gelu) * up[i];
}

void swigluOai(const float *gate, const float *up, float *out, int64_t begin, int64_t end,
               float limit, float alpha) {
  for (int64_t i = begin; i < end; ++i) {
    const float g = std::min(gate[i], limit), u = std::clamp(up[i], -limit, limit);
    out[i] = g / (1.0f + std::exp(-alpha * g)) * (u + 1.0f);
  }
}

void softcap(float *x, float cap, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) x[i] = cap * std::tanh(x[i] / cap);
}

void add(const float *a, const float *b, float *out, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) out[i] = a[i] + b[i];
}

} // namespace kvplan::cpu
