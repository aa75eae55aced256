// Kernels compiled for one ISA each (runtime/cpu/Kernels<Isa>.cpp); the
// dispatchers in Kernels.cpp and Roofline.cpp call them only when
// activeIsa() allows.
#pragma once

#include "runtime/cpu/Kernels.h"

namespace kvplan::cpu {

void linearScalar(const float *x, int64_t rows, int64_t in, TensorRef w, TensorRef bias,
                  const LinearOutputs &out, int64_t jBegin, int64_t jEnd);
void linearAvx2(const float *x, int64_t rows, int64_t in, TensorRef w, TensorRef bias,
                const LinearOutputs &out, int64_t jBegin, int64_t jEnd);
void linearAvx512(const float *x, int64_t rows, int64_t in, TensorRef w, TensorRef bias,
                  const LinearOutputs &out, int64_t jBegin, int64_t jEnd);

void attentionPortable(const CacheGeometry &cache, int64_t layer, const float *q,
                       const int32_t *positions, const int32_t *pageTable, int64_t tableRows,
                       const AttentionHeads &heads, float *out, int64_t begin, int64_t end);
void attentionAvx2(const CacheGeometry &cache, int64_t layer, const float *q,
                   const int32_t *positions, const int32_t *pageTable, int64_t tableRows,
                   const AttentionHeads &heads, float *out, int64_t begin, int64_t end);
void attentionAvx512(const CacheGeometry &cache, int64_t layer, const float *q,
                     const int32_t *positions, const int32_t *pageTable, int64_t tableRows,
                     const AttentionHeads &heads, float *out, int64_t begin, int64_t end);

void fusedFFNAvx2(const float *in, int64_t ff, float *out, int64_t begin, int64_t end, bool gelu);
void fusedFFNAvx512(const float *in, int64_t ff, float *out, int64_t begin, int64_t end,
                    bool gelu);
void swigluAvx2(const float *gate, const float *up, float *out, int64_t n, bool gelu);
void swigluAvx512(const float *gate, const float *up, float *out, int64_t n, bool gelu);

/// Sum of p[0..n) (the read-bandwidth probe, runtime/Roofline.cpp): one
/// sequential stream read with aligned vector loads into eight independent
/// sums, so that the adds' latency never holds back the loads, and every
/// line prefetched kSumPrefetch floats ahead, as the decode kernels prefetch
/// their next rows (a hardware prefetcher stops at each 4 KiB page; software
/// prefetches do not, so without them the probe would get less help than
/// the kernels). p is aligned to 64 bytes and n is a multiple of kSumBlock.
constexpr int64_t kSumBlock = 1024;   // floats: 4 KiB
constexpr int64_t kSumPrefetch = 512; // floats: 2 KiB
float sumScalar(const float *p, int64_t n);
float sumAvx2(const float *p, int64_t n);
float sumAvx512(const float *p, int64_t n);

/// `iterations` rounds of independent FMAs; returns the FLOPs done and
/// stores a value that depends on every result in *sink, so the work cannot
/// be elided.
double fmaLoopScalar(int64_t iterations, float *sink);
double fmaLoopAvx2(int64_t iterations, float *sink);
double fmaLoopAvx512(int64_t iterations, float *sink);

} // namespace kvplan::cpu
