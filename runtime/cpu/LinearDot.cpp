// The integer-dot linear's mode, the portable activation quantizer and the
// portable kernel (LinearDot.h).
#include "runtime/cpu/LinearDot.h"
#include "runtime/cpu/Isa.h"

#include "support/Align.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <stdexcept>

namespace kvplan::cpu {

static_assert(kInt8Group == 32 && kInt4Group == 32 && kMxfp4Group == 32,
              "the integer-dot kernels take groups of 32");

const char *activationsName(Activations a) {
  return a == Activations::f32 ? "f32 activations" : "reduced activations";
}

namespace {
std::atomic<int> chosenActivations{-1};
} // namespace

Activations activeActivations() {
  int v = chosenActivations.load(std::memory_order_relaxed);
  if (v < 0) {
    const char *env = std::getenv("KVPLAN_ACTIVATIONS");
    v = int(env && !std::strcmp(env, "f32") ? Activations::f32 : Activations::reduced);
    if (env && std::strcmp(env, "f32") && std::strcmp(env, "reduced"))
      std::fprintf(stderr,
                   "kvplan: KVPLAN_ACTIVATIONS is '%s', not f32 or reduced; using reduced\n", env);
    chosenActivations.store(v, std::memory_order_relaxed);
  }
  return Activations(v);
}

void setActiveActivations(Activations a) {
  chosenActivations.store(int(a), std::memory_order_relaxed);
}

bool bf16Dot() {
  return activeActivations() == Activations::reduced && activeIsa() == Isa::avx512 &&
         cpuHasAvx512Bf16();
}

const char *activationsFor(DType weights) {
  const bool reduced = activeActivations() == Activations::reduced;
  if (isGroupedDType(weights) && reduced) return "int8";
  if (weights == DType::bf16 && bf16Dot()) return "bf16";
  return "f32";
}

std::string activationsFor(const CompileSettings &settings) {
  std::string a = activationsFor(settings.weightDtype);
  const char *experts = activationsFor(settings.expertWeightDtype());
  if (a != experts) a += std::string(", the experts' ") + experts;
  return a;
}

// The sizes every quantizer gives `out`: 32 spare bytes and 8 spare floats
// past the last group, zero.
static void shape(int64_t rows, int64_t K, QuantizedRows &out) {
  out.groups = ceilDiv(K, int64_t(32));
  out.K = K;
  const size_t n = size_t(rows * out.groups);
  out.q.assign(n * 32 + 32, 0);
  out.d.assign(n + 8, 0.0f);
  out.sums.assign(n + 8, 0.0f);
}

void quantizeRowsScalar(const float *x, int64_t rows, int64_t K, bool withSums,
                        QuantizedRows &out) {
  shape(rows, K, out);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t g = 0; g < out.groups; ++g) {
      const float *xg = x + r * K + g * 32;
      const int64_t n = std::min<int64_t>(32, K - g * 32);
      float amax = 0;
      bool finite = true;
      for (int64_t i = 0; i < n; ++i) {
        amax = std::max(amax, std::fabs(xg[i]));
        finite = finite && std::isfinite(xg[i]);
      }
      const size_t at = size_t(r * out.groups + g);
      if (!finite) { // q stays 0; d = NaN makes every product with the group NaN
        out.d[at] = std::numeric_limits<float>::quiet_NaN();
      } else {
        const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        out.d[at] = d;
        for (int64_t i = 0; i < n; ++i)
          out.q[at * 32 + size_t(i)] = int8_t(std::nearbyint(xg[i] * id));
      }
      if (withSums) {
        float s = 0;
        for (int64_t i = 0; i < n; ++i) s += xg[i];
        out.sums[at] = s;
      }
    }
}

void linearDotScalar(const float *x, int64_t rows, int64_t K, TensorRef w, TensorRef bias,
                     const LinearOutputs &out, int64_t jBegin, int64_t jEnd) {
  const bool int4 = w.dtype == DType::i4, mx = w.dtype == DType::mxfp4;
  if (!isGroupedDType(w.dtype) || w.groupSize != 32 || (mx ? !w.exponents : !w.scales) ||
      (int4 && !w.mins))
    throw std::logic_error(
        "the integer-dot linear takes int8, int4 or mxfp4 weights in groups of 32");
  thread_local QuantizedRows qx;
  quantizeRowsScalar(x, rows, K, int4, qx);
  const int64_t groups = qx.groups;
  const float *steps = mxfp4Steps();
  size_t k = 0;
  for (int64_t j = jBegin; j < jEnd; ++j) {
    while (j >= out.firstColumn[k] + out.columns[k]) ++k;
    const float b = bias.data ? loadElement(bias, j) : 0.0f;
    const float *scales = mx ? nullptr : w.scales + j * groups;
    const float *mins = int4 ? w.mins + j * groups : nullptr;
    for (int64_t r = 0; r < rows; ++r) {
      float s = 0;
      for (int64_t g = 0; g < groups; ++g) {
        const int8_t *q = qx.q.data() + (r * groups + g) * 32;
        int32_t dot = 0;
        if (int4 || mx) { // nibbles: int4's codes, or mxfp4's doubled E2M1 values
          const uint8_t *c = static_cast<const uint8_t *>(w.data) + (j * groups + g) * 16;
          for (int i = 0; i < 16; ++i)
            dot += mx ? int32_t(kMxfp4Doubled[c[i] & 15]) * q[i] +
                            int32_t(kMxfp4Doubled[c[i] >> 4]) * q[16 + i]
                      : int32_t(c[i] & 15) * q[i] + int32_t(c[i] >> 4) * q[16 + i];
        } else {
          const int8_t *wr = static_cast<const int8_t *>(w.data) + j * K + g * 32;
          for (int64_t i = 0, n = std::min<int64_t>(32, K - g * 32); i < n; ++i)
            dot += int32_t(wr[i]) * q[i];
        }
        const float scale = mx ? steps[w.exponents[j * groups + g]] : scales[g];
        s += float(dot) * (scale * qx.d[size_t(r * groups + g)]);
      }
      if (int4) {
        float m = 0;
        for (int64_t g = 0; g < groups; ++g) m += mins[g] * qx.sums[size_t(r * groups + g)];
        s += m;
      }
      out.data[k][r * out.columns[k] + j - out.firstColumn[k]] = s + b;
    }
  }
}

} // namespace kvplan::cpu
