// CPU kernels for the llm ops: f32 activations, weights and KV cache in f32,
// bf16 or f16, f32 accumulation. Each kernel works on a range of rows or
// output features so the executor can split it across threads.
#pragma once

#include "formats/GgmlQuants.h"
#include "support/DType.h"

#include <cstdint>
#include <vector>

namespace kvplan::cpu {

/// A weight (or cache) tensor in memory with its element type; int8 and
/// int4 matrices also point at their scales (one per `groupSize` along a
/// row), int4 ones at their minimums too, mxfp4 ones at their scale bytes.
struct TensorRef {
  const void *data = nullptr;
  DType dtype = DType::f32;
  const float *scales = nullptr;
  int64_t groupSize = 0;
  const float *mins = nullptr;
  const uint8_t *exponents = nullptr; // mxfp4: each group's E8M0 scale byte
};

/// The steps of MXFP4 groups (formats/GgmlQuants.h: a code stands for
/// kMxfp4Doubled[code] x e8m0Half(e)), a table of e8m0Half for every scale
/// byte, built once.
const float *mxfp4Steps();

/// Element `k` of one row of an mxfp4 matrix (docs/artifact.md): `codes` is
/// the row's groups of 16 bytes, nibbles laid out as int4's, `exponents`
/// its groups' scale bytes.
inline float mxfp4Element(const uint8_t *codes, const uint8_t *exponents, int64_t k) {
  const int64_t g = k / kMxfp4Group, i = k % kMxfp4Group;
  const uint8_t byte = codes[g * 16 + i % 16];
  return float(kMxfp4Doubled[i < 16 ? byte & 15 : byte >> 4]) * mxfp4Steps()[exponents[g]];
}

/// Element `k` of one row of an int4 matrix (docs/artifact.md): `codes` is
/// the row's groups of 16 bytes (element i of a group in the low nibble of
/// byte i, element 16 + i in the high one), `scales` and `mins` its groups'.
/// The product and the sum are rounded apart, as ggml's dequantizers do.
inline float int4Element(const uint8_t *codes, const float *scales, const float *mins,
                         int64_t k) {
  const int64_t g = k / kInt4Group, i = k % kInt4Group;
  const uint8_t byte = codes[g * 16 + i % 16];
  const float product = float(i < 16 ? byte & 15 : byte >> 4) * scales[g];
  return product + mins[g];
}

/// Element `i` of a weight vector (or of one row of a matrix) as f32.
float loadElement(TensorRef t, int64_t i);

/// out[r] = table[tokens[r]] * scale for r in [begin, end).
void embedding(const int32_t *tokens, TensorRef table, int64_t hidden, float scale, float *out,
               int64_t begin, int64_t end);

/// out[r] = x[r] / rms(x[r]) * w for r in [begin, end).
void rmsNorm(const float *x, TensorRef w, int64_t cols, double eps, float *out, int64_t begin,
             int64_t end);

/// residual[r] = a[r] + b[r]; normed[r] = rmsNorm(residual[r]).
void addRmsNorm(const float *a, const float *b, TensorRef w, int64_t cols, double eps,
                float *normed, float *residual, int64_t begin, int64_t end);

/// Where a linear's output columns go: output k holds columns
/// [firstColumn[k], firstColumn[k] + columns[k]) as a [rows, columns[k]]
/// matrix.
struct LinearOutputs {
  std::vector<float *> data;
  std::vector<int64_t> firstColumn, columns;
};

/// out[r, j] = dot(x[r], w[j]) + bias[j] for rows [0, rows) and output
/// features j in [jBegin, jEnd); w is [out, in]. Uses the best kernels
/// activeIsa() allows (runtime/cpu/).
void linear(const float *x, int64_t rows, int64_t in, TensorRef w, TensorRef bias,
            const LinearOutputs &out, int64_t jBegin, int64_t jEnd);

/// cos and sin of positions[r] * freqs[i] (in double: positions reach the
/// thousands), each times amplitudes[i] (1 where null), for rows [begin,
/// end): table[(r * half + i) * 2] is the cosine, the next float the sine.
/// Every RoPE op of a call with the same parameters shares one table.
void ropeTable(const int32_t *positions, int64_t half, const double *freqs,
               const double *amplitudes, float *table, int64_t begin, int64_t end);

/// Rotates adjacent pairs of every head of rows [begin, end) by the table's
/// angles; rows with a negative position are copied as they are.
void rope(const float *x, const int32_t *positions, int64_t cols, int64_t headDim,
          const float *table, float *out, int64_t begin, int64_t end);

/// Paged KV cache geometry: [layers][2][pages][kv_heads][page_size][head_dim].
struct CacheGeometry {
  void *base = nullptr;
  DType dtype = DType::f32;
  int64_t pages = 0, pageSize = 0, kvHeads = 0, headDim = 0;
  int64_t pagesPerSequence = 0;

  /// Element offset of (layer, k/v, page, head, slot).
  int64_t offset(int64_t layer, int kv, int64_t page, int64_t head, int64_t slot) const {
    return ((((layer * 2 + kv) * pages + page) * kvHeads + head) * pageSize + slot) * headDim;
  }
};

/// The page-table row of query row r: one shared row (prefill) or row r.
inline const int32_t *pageRow(const int32_t *pageTable, int64_t tableRows, int64_t pagesPerSeq,
                              int64_t r) {
  return pageTable + (tableRows == 1 ? 0 : r) * pagesPerSeq;
}

/// Writes rows [begin, end) of keys and values (f32) at their positions.
void kvCacheWrite(const CacheGeometry &cache, int64_t layer, const float *keys,
                  const float *values, const int32_t *positions, const int32_t *pageTable,
                  int64_t tableRows, int64_t begin, int64_t end);

/// An attention op's query heads, softmax scale and sliding window (0:
/// none).
struct AttentionHeads {
  int64_t numHeads = 0;
  double scale = 0;
  int64_t window = 0;
  double softcap = 0; // each scaled score s is softcap x tanh(s / softcap); 0: none
  const float *sinks = nullptr; // gpt-oss's: one logit a head joins its softmax; null: none
};

/// Attention of query rows over the cache: for each (row, head) item in
/// [begin, end) (item = row * numHeads + head), softmax(q k^T * scale) v
/// over the row's sequence at positions [0, positions[row]], or with a
/// window its last `window` of them. The consecutive heads of a row that
/// share a KV head run together (up to 4), each key and value loaded once
/// for them, a page's keys at a time with a running maximum (the scores of
/// a block live on the stack: no workspace).
void cachedAttention(const CacheGeometry &cache, int64_t layer, const float *q,
                     const int32_t *positions, const int32_t *pageTable, int64_t tableRows,
                     const AttentionHeads &heads, float *out, int64_t begin, int64_t end);

/// out[r, j] = act(in[r, j]) * in[r, ff + j] (a fused gate|up projection),
/// act SiLU, or GELU's tanh approximation where `gelu` (GeGLU).
void fusedFFN(const float *in, int64_t ff, float *out, int64_t begin, int64_t end, bool gelu);
/// out = act(gate) * up, elementwise over [begin, end), act as fusedFFN's.
void swiglu(const float *gate, const float *up, float *out, int64_t begin, int64_t end,
            bool gelu);
/// gpt-oss's clamped SwiGLU (ggml's swiglu_oai), elementwise over [begin,
/// end): with g = min(gate, limit) and u = clamp(up, -limit, limit),
/// out = g sigmoid(alpha g) (u + 1).
void swigluOai(const float *gate, const float *up, float *out, int64_t begin, int64_t end,
               float limit, float alpha);
/// x = cap x tanh(x / cap), elementwise over [begin, end) (Gemma 2's
/// soft-capping of a head's logits).
void softcap(float *x, float cap, int64_t begin, int64_t end);
/// out = a + b, elementwise over [begin, end).
void add(const float *a, const float *b, float *out, int64_t begin, int64_t end);

} // namespace kvplan::cpu
