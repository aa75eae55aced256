// The moe_ffn op on the CPU. The rows routed to one expert are gathered and
// go through its three products together, so each chosen expert's matrices
// are read once a call, whatever the rows; the threads split the products'
// output features across all the chosen experts at once (one parallel pass
// for the gates and ups, one for the downs), as the linear op splits one
// matrix's.
#include "runtime/cpu/MoE.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace kvplan::cpu {

TensorRef expertMatrix(TensorRef stack, int64_t e, int64_t out, int64_t in) {
  const int64_t rows = e * out;
  TensorRef t = stack;
  const char *base = static_cast<const char *>(stack.data);
  switch (stack.dtype) {
  case DType::i8:
  case DType::i4:
  case DType::mxfp4: {
    const int64_t groups = (in + stack.groupSize - 1) / stack.groupSize;
    t.data = base + (stack.dtype == DType::i8 ? rows * in : rows * groups * 16);
    if (stack.scales) t.scales = stack.scales + rows * groups;
    if (stack.mins) t.mins = stack.mins + rows * groups;
    if (stack.exponents) t.exponents = stack.exponents + rows * groups;
    return t;
  }
  default:
    t.data = base + rows * in * dtypeBytes(stack.dtype);
    return t;
  }
}

TensorRef expertRow(TensorRef stack, int64_t e, int64_t n) {
  if (!stack.data) return stack;
  stack.data = static_cast<const char *>(stack.data) + e * n * dtypeBytes(stack.dtype);
  return stack;
}

void chooseExperts(const float *probs, int64_t experts, int64_t k, bool normTopK,
                   int32_t *chosen, float *weights) {
  double sum = 0;
  for (int64_t j = 0; j < k; ++j) {
    int64_t best = -1;
    for (int64_t e = 0; e < experts; ++e) {
      if (std::find(chosen, chosen + j, int32_t(e)) != chosen + j) continue;
      if (best < 0 || probs[e] > probs[best]) best = e;
    }
    chosen[j] = int32_t(best);
    weights[j] = probs[best];
    sum += probs[best];
  }
  if (normTopK && sum > 0)
    for (int64_t j = 0; j < k; ++j) weights[j] = float(weights[j] / sum);
}

namespace {

/// One row's softmax, in place.
void softmax(float *p, int64_t n) {
  const float top = *std::max_element(p, p + n);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += (p[i] = std::exp(p[i] - top));
  for (int64_t i = 0; i < n; ++i) p[i] = float(p[i] / sum);
}

/// The scratch's parts, and the experts that have rows this call.
struct Routing {
  float *probs, *inputs, *gates, *ups, *outputs;
  float *sharedGates; // [rows]: the shared expert's gate logits, where gated
  int32_t *chosen;   // [rows, k]
  float *weights;    // [rows, k]
  int32_t *slotOf;   // [rows, k]: where choice (r, j)'s rows go
  int32_t *firsts;   // [experts + 1]: expert e's slots are [firsts[e], firsts[e + 1])
  std::vector<int64_t> active;
};

Routing layOut(char *scratch, const MoEScratch &m, int64_t rows, int64_t k) {
  Routing r;
  r.probs = reinterpret_cast<float *>(scratch + m.probs);
  r.chosen = reinterpret_cast<int32_t *>(scratch + m.choices);
  r.weights = reinterpret_cast<float *>(scratch + m.choices) + rows * k;
  r.slotOf = reinterpret_cast<int32_t *>(scratch + m.order);
  r.firsts = reinterpret_cast<int32_t *>(scratch + m.firsts);
  r.inputs = reinterpret_cast<float *>(scratch + m.inputs);
  r.gates = reinterpret_cast<float *>(scratch + m.gates);
  r.ups = reinterpret_cast<float *>(scratch + m.ups);
  r.outputs = reinterpret_cast<float *>(scratch + m.outputs);
  r.sharedGates = reinterpret_cast<float *>(scratch + m.sharedGates);
  return r;
}

/// Each row's experts, then their slots in expert order (a counting sort,
/// stable in rows), so each expert's rows lie together.
void route(Routing &r, int64_t rows, const MoEWeights &w) {
  const int64_t k = w.expertsPerToken;
  std::fill(r.firsts, r.firsts + w.experts + 1, 0);
  for (int64_t row = 0; row < rows; ++row) {
    softmax(r.probs + row * w.experts, w.experts);
    chooseExperts(r.probs + row * w.experts, w.experts, k, w.normTopK, r.chosen + row * k,
                  r.weights + row * k);
    for (int64_t j = 0; j < k; ++j) ++r.firsts[r.chosen[row * k + j] + 1];
  }
  for (int64_t e = 0; e < w.experts; ++e) {
    if (r.firsts[e + 1] > 0) r.active.push_back(e);
    r.firsts[e + 1] += r.firsts[e];
  }
  // Each expert's first slot serves as its cursor, which ends at the next
  // expert's first; moved back one place, they are the first slots again.
  for (int64_t i = 0; i < rows * k; ++i) r.slotOf[i] = r.firsts[r.chosen[i]]++;
  for (int64_t e = w.experts; e > 0; --e) r.firsts[e] = r.firsts[e - 1];
  r.firsts[0] = 0;
}

/// Runs fn(expert, first, end) for the output features [first, end) of each
/// active expert that [b, e) covers, `width` features an expert.
template <typename F>
void forExpertFeatures(const std::vector<int64_t> &active, int64_t width, int64_t b, int64_t e,
                       F &&fn) {
  for (int64_t i = b / width; i < int64_t(active.size()) && i * width < e; ++i) {
    const int64_t first = std::max(b - i * width, int64_t(0));
    const int64_t end = std::min(e - i * width, width);
    if (first < end) fn(active[size_t(i)], first, end);
  }
}

} // namespace

void moeFFN(ThreadPool &pool, const float *x, int64_t rows, const MoEWeights &w,
            const float *shared, char *scratch, float *out) {
  const int64_t k = w.expertsPerToken, in = w.in, ff = w.ff;
  const bool gated = shared && w.sharedGate.data;
  Routing r = layOut(scratch, moeScratch(rows, w.experts, k, in, ff, gated), rows, k);
  const LinearOutputs routerOut{{r.probs}, {0}, {w.experts}};
  const LinearOutputs gateOut{{r.sharedGates}, {0}, {1}};
  // The shared expert's gate as one more of the router's features.
  pool.parallelFor(w.experts + (gated ? 1 : 0), [&](int64_t b, int64_t e) {
    if (b < w.experts)
      linear(x, rows, in, w.router, w.routerBias, routerOut, b, std::min(e, w.experts));
    if (e > w.experts) linear(x, rows, in, w.sharedGate, TensorRef{}, gateOut, 0, 1);
  });
  route(r, rows, w);
  pool.parallelFor(rows * k, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      std::memcpy(r.inputs + r.slotOf[i] * in, x + i / k * in, size_t(in) * sizeof(float));
  });
  // The gates' and ups' features of every chosen expert, 2 x ff an expert.
  pool.parallelFor(int64_t(r.active.size()) * 2 * ff, [&](int64_t b, int64_t e) {
    forExpertFeatures(r.active, 2 * ff, b, e, [&](int64_t expert, int64_t first, int64_t end) {
      const int64_t slot = r.firsts[expert], n = r.firsts[expert + 1] - slot;
      const float *xs = r.inputs + slot * in;
      if (first < ff) {
        const LinearOutputs o{{r.gates + slot * ff}, {0}, {ff}};
        linear(xs, n, in, expertMatrix(w.gate, expert, ff, in), expertRow(w.gateBias, expert, ff),
               o, first, std::min(end, ff));
      }
      if (end > ff) {
        const LinearOutputs o{{r.ups + slot * ff}, {0}, {ff}};
        linear(xs, n, in, expertMatrix(w.up, expert, ff, in), expertRow(w.upBias, expert, ff), o,
               std::max(first, ff) - ff, end - ff);
      }
    });
  });
  pool.parallelFor(rows * k * ff, [&](int64_t b, int64_t e) {
    if (w.swigluLimit > 0) swigluOai(r.gates, r.ups, r.gates, b, e, w.swigluLimit, w.swigluAlpha);
    else swiglu(r.gates, r.ups, r.gates, b, e, w.gelu);
  });
  pool.parallelFor(int64_t(r.active.size()) * in, [&](int64_t b, int64_t e) {
    forExpertFeatures(r.active, in, b, e, [&](int64_t expert, int64_t first, int64_t end) {
      const int64_t slot = r.firsts[expert], n = r.firsts[expert + 1] - slot;
      const LinearOutputs o{{r.outputs + slot * in}, {0}, {in}};
      linear(r.gates + slot * ff, n, ff, expertMatrix(w.down, expert, in, ff),
             expertRow(w.downBias, expert, in), o, first, end);
    });
  });
  // Each row's experts summed in the order they were chosen, then the
  // shared expert's output (times its gate).
  pool.parallelFor(rows, [&](int64_t b, int64_t e) {
    for (int64_t row = b; row < e; ++row) {
      float *o = out + row * in;
      std::fill(o, o + in, 0.0f);
      for (int64_t j = 0; j < k; ++j) {
        const float g = r.weights[row * k + j];
        const float *y = r.outputs + int64_t(r.slotOf[row * k + j]) * in;
        for (int64_t c = 0; c < in; ++c) o[c] += g * y[c];
      }
      if (!shared) continue;
      const float g = gated ? 1.0f / (1.0f + std::exp(-r.sharedGates[row])) : 1.0f;
      const float *y = shared + row * in;
      for (int64_t c = 0; c < in; ++c) o[c] += g * y[c];
    }
  });
}

} // namespace kvplan::cpu
