// kvplan's CUDA kernel templates. Codegen copies this file into every
// generated source and instantiates the templates with one model's
// constants (hidden size, heads, head_dim, page size, ...) in extern "C"
// wrappers; the launch table (runtime/CudaProgram.h) says which wrapper runs
// on which buffers. Conventions:
// - activations are f32 in the arena, except a linear's input, which its
//   producer stores in the weights' type (bf16 or f16) for cuBLAS;
// - every kernel takes one KvArgs by value: p[] buffers, i[0] the row count
//   of the launch, i[1..] integers, d[] reals;
// - rows whose position is negative are padding: they write no cache slot.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#if defined(__CUDACC__)
#include <mma.h> // the tiled quantized product's tensor-core fragments
#endif
#include <stdint.h>

struct KvArgs {
  char *p[12];
  long long i[8];
  double d[4];
  char *pf[4]; // weights to ask L2 for ahead (l2Prefetch), pfBytes[r] bytes at pf[r]
  long long pfBytes[4];
};

namespace kvplan {

// Programmatic dependent launch (Hopper and later): the executor launches
// each kernel so that it may start while the kernel before it finishes
// (docs/cuda.md). Every kernel first lets the next one start, then waits
// for the one before it to complete, with its writes visible, before it
// reads or writes anything a kernel may write: only the weights and the
// call's inputs (tokens, positions, page table in the workspace's inputs
// block, which only the copy before the first kernel writes) may be read
// before the wait. No-ops on older GPUs, in plain launches and in the
// emulator.
__device__ __forceinline__ void pdlLaunchDependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdlWait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
/// Asks for the 128-byte line at p in L2 (no-op in the emulator).
__device__ __forceinline__ void prefetchL2(const void *p) {
#if defined(__CUDA_ARCH__)
  asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
#endif
}

/// Asks L2 for `bytes` bytes from p (multiples of 16): one bulk request on
/// Hopper, a line at a time before it; recorded by the emulator.
__device__ __forceinline__ void prefetchL2Bytes(const char *p, long long bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p), "r"((unsigned)bytes)
               : "memory");
#elif defined(__CUDA_ARCH__)
  for (long long b = 0; b < bytes; b += 128) prefetchL2(p + b);
#elif !defined(__CUDACC__)
  kvemu::prefetchL2(p, bytes);
#endif
}

/// Bytes one thread of l2Prefetch asks for at a time.
inline constexpr long long kPrefetchChunk = 4096;

/// This thread's pieces of one range of l2Prefetch: the range cut into
/// kPrefetchChunk pieces dealt to the blocks in turn (piece c to block
/// c mod blocks, its thread c / blocks), so that every multiprocessor's
/// copy engine takes a share of the requests rather than the first blocks'
/// alone. Not inlined: its
/// registers are not the kernel's (inlined, a kernel at its register limit,
/// the int4 QKV in row groups, spilled 16 bytes).
#if defined(__CUDACC__)
#define KVPLAN_NOINLINE __noinline__
#else
#define KVPLAN_NOINLINE // the emulator: no registers to save
#endif
__device__ KVPLAN_NOINLINE void l2PrefetchRange(const char *p, long long bytes) {
  const long long blocks = (long long)gridDim.x * gridDim.y * gridDim.z,
                  block = blockIdx.x + (long long)gridDim.x * (blockIdx.y +
                                                               (long long)gridDim.y * blockIdx.z);
  for (long long c = (threadIdx.x * blocks + block) * kPrefetchChunk; c < bytes;
       c += blockDim.x * blocks * kPrefetchChunk) {
    const long long left = bytes - c;
    prefetchL2Bytes(p + c, left < kPrefetchChunk ? left : kPrefetchChunk);
  }
}

/// The kernel's part of what the plan has it ask L2 for as it starts: the
/// weights the products after it stream (KvArgs::pf, --prefetch-weights,
/// docs/cuda.md); a hint, which changes no result. Every generated kernel
/// calls it first.
__device__ __forceinline__ void l2Prefetch(const KvArgs &a) {
#pragma unroll
  for (int r = 0; r < 4; ++r)
    if (a.pfBytes[r] > 0) l2PrefetchRange(a.pf[r], a.pfBytes[r]);
}

__device__ __forceinline__ float ld(float v) { return v; }
__device__ __forceinline__ float ld(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float ld(__half v) { return __half2float(v); }

template <class T> __device__ __forceinline__ T st(float v);
template <> __device__ __forceinline__ float st<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 st<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <> __device__ __forceinline__ __half st<__half>(float v) { return __float2half_rn(v); }

/// Eight consecutive elements as f32 (p 16-byte aligned for 2-byte types,
/// 32-byte for f32).
__device__ __forceinline__ void load8(const float *p, float *out) {
  const float4 a = reinterpret_cast<const float4 *>(p)[0];
  const float4 b = reinterpret_cast<const float4 *>(p)[1];
  out[0] = a.x; out[1] = a.y; out[2] = a.z; out[3] = a.w;
  out[4] = b.x; out[5] = b.y; out[6] = b.z; out[7] = b.w;
}
/// The 16 bits h (the low half of the word) of a bf16 or an f16, as f32.
__device__ __forceinline__ float bitsElem(unsigned h, __nv_bfloat16) {
  return __uint_as_float(h << 16);
}
__device__ __forceinline__ float bitsElem(unsigned h, __half) {
  return __half2float(__ushort_as_half((unsigned short)h));
}
/// The element of type C in 32-bit word w as f32: for a 16-bit C, its low
/// (HI false) or high half.
template <class C, bool HI> __device__ __forceinline__ float wordElem(unsigned w) {
  if constexpr (sizeof(C) == 4)
    return __uint_as_float(w);
  else
    return bitsElem(HI ? w >> 16 : w & 0xffffu, C{});
}
/// N words of elements (2N of a 16-bit type, N f32) as f32. From words,
/// not through the elements' addresses: a 16-byte load read that way
/// became eight 2-byte loads (nvcc 13 forwards the copy's halves to the
/// global address), an eighth of the width the kernels are built on.
template <class C, int N>
__device__ __forceinline__ void unpackWords(const unsigned (&w)[N], float *out) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
    if constexpr (sizeof(C) == 4) {
      out[i] = wordElem<C, false>(w[i]);
    } else {
      out[2 * i] = wordElem<C, false>(w[i]);
      out[2 * i + 1] = wordElem<C, true>(w[i]);
    }
  }
}
/// 16 bytes of elements (8 of a 16-bit type, 4 f32) as f32.
template <class C> __device__ __forceinline__ void unpack16(const uint4 &raw, float *out) {
  const unsigned w[4] = {raw.x, raw.y, raw.z, raw.w};
  unpackWords<C>(w, out);
}
template <class H> __device__ __forceinline__ void load8(const H *p, float *out) {
  const uint4 raw = *reinterpret_cast<const uint4 *>(p);
  unpack16<H>(raw, out);
}

__device__ __forceinline__ float warpSum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warpMax(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

/// The sum over the block, returned to every thread. `sh` holds 32 floats.
template <int BLOCK> __device__ __forceinline__ float blockSum(float v, float *sh) {
  static_assert(BLOCK % 32 == 0 && BLOCK <= 1024, "whole warps");
  v = warpSum(v);
  __syncthreads(); // sh may still be read by an earlier call
  if (threadIdx.x % 32 == 0) sh[threadIdx.x / 32] = v;
  __syncthreads();
  v = threadIdx.x % 32 < BLOCK / 32 ? sh[threadIdx.x % 32] : 0.0f;
  return warpSum(v);
}

/// 1 / rms of a row of n elements whose squares sum to ss, eps added to the
/// mean square: in double, as the CPU runtime computes it.
__device__ __forceinline__ float rmsInv(float ss, int n, double eps) {
  return (float)(1.0 / sqrt((double)ss / n + eps));
}

// ---------------------------------------------------------------------------
// Row-wise ops: one block per row. Each reads its whole row into registers
// before writing, so a kernel stays correct even where a buffer is reused.

/// out[r] = table[tokens[r]] (as O); with SCALED, times d[0] as a float
/// (Gemma's sqrt(hidden)).  p: tokens, table, out.
template <class W, class O, int COLS, int BLOCK, bool SCALED = false>
__device__ void embedding(const KvArgs &a) {
  const int r = blockIdx.x;
  const int *tokens = reinterpret_cast<const int *>(a.p[0]);
  const W *src = reinterpret_cast<const W *>(a.p[1]) + (long long)tokens[r] * COLS;
  O *out = reinterpret_cast<O *>(a.p[2]) + (long long)r * COLS;
  const float scale = SCALED ? (float)a.d[0] : 1.0f;
  for (int c = threadIdx.x; c < COLS; c += BLOCK)
    out[c] = st<O>(SCALED ? ld(src[c]) * scale : ld(src[c]));
}

/// out = x / rms(x) * w for one row of N floats, by one block of BLOCK
/// threads (`sh`: the block's 32 floats of shared memory for the sum).
template <class W, class O, int N, int BLOCK>
__device__ __forceinline__ void normRow(const float *x, const W *w, O *out, double eps,
                                        float *sh) {
  constexpr int PER = (N + BLOCK - 1) / BLOCK;
  float v[PER];
  float ss = 0;
#pragma unroll
  for (int k = 0; k < PER; ++k) {
    const int c = threadIdx.x + k * BLOCK;
    v[k] = c < N ? x[c] : 0.0f;
    ss += v[k] * v[k];
  }
  ss = blockSum<BLOCK>(ss, sh);
  const float inv = rmsInv(ss, N, eps);
#pragma unroll
  for (int k = 0; k < PER; ++k) {
    const int c = threadIdx.x + k * BLOCK;
    if (c < N) out[c] = st<O>(v[k] * inv * ld(w[c]));
  }
}

/// out[r] = x[r] / rms(x[r]) * w.  p: x, w, out.  d: eps.
template <class W, class O, int COLS, int BLOCK> __device__ void rmsNorm(const KvArgs &a) {
  __shared__ float sh[32];
  const long long at = (long long)blockIdx.x * COLS;
  normRow<W, O, COLS, BLOCK>(reinterpret_cast<const float *>(a.p[0]) + at,
                             reinterpret_cast<const W *>(a.p[1]),
                             reinterpret_cast<O *>(a.p[2]) + at, a.d[0], sh);
}

/// out[r, h] = x[r, h] / rms(x[r, h]) * w for each HD-wide head h of a row
/// of COLS: one block per (row, head), blockIdx.x the row and blockIdx.y the
/// head.  p: x, w (HD), out.  d: eps.
template <class W, class O, int COLS, int HD, int BLOCK>
__device__ void headRmsNorm(const KvArgs &a) {
  __shared__ float sh[32];
  const long long at = (long long)blockIdx.x * COLS + (long long)blockIdx.y * HD;
  normRow<W, O, HD, BLOCK>(reinterpret_cast<const float *>(a.p[0]) + at,
                           reinterpret_cast<const W *>(a.p[1]),
                           reinterpret_cast<O *>(a.p[2]) + at, a.d[0], sh);
}

/// residual[r] = a[r] + b[r]; normed[r] = rmsNorm(residual[r]).
/// p: a, b, w, normed, residual.  d: eps.
template <class W, class O, int COLS, int BLOCK> __device__ void addRmsNorm(const KvArgs &a) {
  constexpr int PER = (COLS + BLOCK - 1) / BLOCK;
  __shared__ float sh[32];
  const long long row = (long long)blockIdx.x * COLS;
  const float *x = reinterpret_cast<const float *>(a.p[0]) + row;
  const float *y = reinterpret_cast<const float *>(a.p[1]) + row;
  const W *w = reinterpret_cast<const W *>(a.p[2]);
  O *normed = reinterpret_cast<O *>(a.p[3]) + row;
  float *residual = reinterpret_cast<float *>(a.p[4]) + row;
  float v[PER];
  float ss = 0;
#pragma unroll
  for (int k = 0; k < PER; ++k) {
    const int c = threadIdx.x + k * BLOCK;
    v[k] = c < COLS ? x[c] + y[c] : 0.0f;
    ss += v[k] * v[k];
  }
  ss = blockSum<BLOCK>(ss, sh); // also orders every read before the writes
  const float inv = rmsInv(ss, COLS, a.d[0]);
#pragma unroll
  for (int k = 0; k < PER; ++k) {
    const int c = threadIdx.x + k * BLOCK;
    if (c < COLS) {
      residual[c] = v[k];
      normed[c] = st<O>(v[k] * inv * ld(w[c]));
    }
  }
}

// ---------------------------------------------------------------------------
// Elementwise ops: grid (column blocks, rows).

/// out[r, c] += bias[c].  p: out (f32), bias.
template <class W, int COLS> __device__ void biasAdd(const KvArgs &a) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= COLS) return;
  float *out = reinterpret_cast<float *>(a.p[0]) + (long long)blockIdx.y * COLS;
  out[c] += ld(reinterpret_cast<const W *>(a.p[1])[c]);
}

/// The gated FFN's activation of x: SiLU, x * sigmoid(x); with GELU,
/// GELU's tanh approximation as x * sigmoid(2 sqrt(2 / pi) (x + 0.044715
/// x^3)), the same function (Gemma's gelu_pytorch_tanh), as the CPU
/// runtime computes it.
template <bool GELU> __device__ __forceinline__ float gateAct(float x) {
  const float z = GELU ? 1.5957691216057308f * (x + 0.044715f * x * x * x) : x;
  return x / (1.0f + expf(-z));
}

/// out[r, j] = act(in[r, j]) * in[r, FF + j].  p: in (f32), out.
template <class O, int FF, bool GELU = false> __device__ void fusedFfn(const KvArgs &a) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= FF) return;
  const float *in = reinterpret_cast<const float *>(a.p[0]) + (long long)blockIdx.y * 2 * FF;
  const float g = in[j], u = in[FF + j];
  reinterpret_cast<O *>(a.p[1])[(long long)blockIdx.y * FF + j] = st<O>(gateAct<GELU>(g) * u);
}

/// out = act(gate) * up (SWIGLU; act as gateAct's) or gate + up.  p: gate,
/// up, out.
template <class O, int COLS, bool SWIGLU, bool GELU = false>
__device__ void binary(const KvArgs &a) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= COLS) return;
  const long long i = (long long)blockIdx.y * COLS + c;
  const float x = reinterpret_cast<const float *>(a.p[0])[i];
  const float y = reinterpret_cast<const float *>(a.p[1])[i];
  reinterpret_cast<O *>(a.p[2])[i] = st<O>(SWIGLU ? gateAct<GELU>(x) * y : x + y);
}

/// x = cap x tanh(x / cap) in place: a head's soft-capped logits (Gemma
/// 2's final_logit_softcapping).  p: x (f32).  d: cap.
template <int COLS> __device__ void softcapRows(const KvArgs &a) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= COLS) return;
  float *x = reinterpret_cast<float *>(a.p[0]) + (long long)blockIdx.y * COLS + c;
  const float cap = (float)a.d[0];
  *x = cap * tanhf(*x / cap);
}

/// out = in as O.  p: in (f32), out.
template <class O, int COLS> __device__ void convert(const KvArgs &a) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= COLS) return;
  const long long i = (long long)blockIdx.y * COLS + c;
  reinterpret_cast<O *>(a.p[1])[i] = st<O>(reinterpret_cast<const float *>(a.p[0])[i]);
}

/// out[0] = in[last row whose position is not negative].  p: in, positions,
/// out.  i[0]: rows of the input.
template <class T, int COLS> __device__ void takeLast(const KvArgs &a) {
  const int *positions = reinterpret_cast<const int *>(a.p[1]);
  long long last = a.i[0] - 1;
  while (last > 0 && positions[last] < 0) --last;
  const T *in = reinterpret_cast<const T *>(a.p[0]) + last * COLS;
  T *out = reinterpret_cast<T *>(a.p[2]);
  for (int c = threadIdx.x; c < COLS; c += blockDim.x) out[c] = in[c];
}

// ---------------------------------------------------------------------------
// Quantized weights (docs/artifact.md): W is [N][K] in groups of 32 along K,
// each group with an f32 scale; int8 (BITS 8): w = q * scale, rows of K
// bytes; int4 (BITS 4): w = code * scale + min, rows of G groups of 16
// bytes, byte i of a group holding element i in its low nibble and element
// 16 + i in its high one. Scales (and mins) are [N][G] f32. The products
// read f32 rows and accumulate in f32. The N features may go to up to three
// outputs (a fused QKV or gate|up weight): feature j < N0 to the first, of
// N0 columns, the next N1 to the second, the rest to the third.
// p: x (f32, rows x K), data, scales, mins (int4), bias (f32, when BIAS),
// out0, out1, out2.  i[0]: rows.

template <int C> struct Bytes;
template <> struct Bytes<16> { using T = uint4; };
template <> struct Bytes<8> { using T = uint2; };
template <> struct Bytes<4> { using T = unsigned; };
template <> struct Bytes<2> { using T = unsigned short; };
template <> struct Bytes<1> { using T = unsigned char; };

/// C consecutive f32 (p aligned to 4 * C bytes), 16 bytes per load where C
/// allows.
template <int C> __device__ __forceinline__ void loadRun(const float *p, float *out) {
  if constexpr (C % 4 == 0) {
#pragma unroll
    for (int v = 0; v < C / 4; ++v) {
      const float4 f = reinterpret_cast<const float4 *>(p)[v];
      out[4 * v] = f.x; out[4 * v + 1] = f.y; out[4 * v + 2] = f.z; out[4 * v + 3] = f.w;
    }
  } else {
#pragma unroll
    for (int e = 0; e < C; ++e) out[e] = p[e];
  }
}

/// C int8 codes (p aligned to C bytes) in one load, as f32.
template <int C> __device__ __forceinline__ void loadCodes8(const int8_t *p, float *out) {
  const typename Bytes<C>::T v = *reinterpret_cast<const typename Bytes<C>::T *>(p);
  const int8_t *b = reinterpret_cast<const int8_t *>(&v);
#pragma unroll
  for (int e = 0; e < C; ++e) out[e] = (float)b[e];
}

/// The widest load (up to 16 bytes) that divides a row of K int8 codes, so
/// that every row starts aligned to it.
template <int K> struct Run8 {
  static constexpr int C = K % 16 == 0 ? 16 : K % 8 == 0 ? 8 : K % 4 == 0 ? 4 : K % 2 == 0 ? 2 : 1;
};

/// Writes feature j of row r (plus its bias) to the output holding it.
template <class O, int N0, int N1, int N2, bool BIAS>
__device__ __forceinline__ void storeFeature(const KvArgs &a, long long r, int j, float v) {
  if (BIAS) v += reinterpret_cast<const float *>(a.p[4])[j];
  if (N1 == 0 || j < N0) reinterpret_cast<O *>(a.p[5])[r * N0 + j] = st<O>(v);
  else if (N2 == 0 || j < N0 + N1) reinterpret_cast<O *>(a.p[6])[r * N1 + (j - N0)] = st<O>(v);
  else reinterpret_cast<O *>(a.p[7])[r * N2 + (j - N0 - N1)] = st<O>(v);
}

/// A matrix-vector warp's end: each row's lane sums added across the warp,
/// and feature j of the row written by lane 0.
template <class O, int N0, int N1, int N2, bool BIAS, int R>
__device__ __forceinline__ void storeWarpRows(const KvArgs &a, int rows, int j, int lane,
                                              const float (&acc)[R]) {
#pragma unroll
  for (int r = 0; r < R; ++r) {
    if (r >= rows) break;
    const float v = warpSum(acc[r]);
    if (lane == 0) storeFeature<O, N0, N1, N2, BIAS>(a, r, j, v);
  }
}

/// One lane's share of an int8 row j: runs of C codes (lane, lane + 32, ...),
/// each inside one group, its sum scaled once; R rows of x at a time.
template <int K, int R>
__device__ __forceinline__ void gemvRow8(const float *x, const int8_t *w, const float *scales,
                                         int rows, int lane, float (&acc)[R]) {
  constexpr int C = Run8<K>::C, RUNS = K / C;
  for (int c = lane; c < RUNS; c += 32) {
    float q[C];
    loadCodes8<C>(w + c * C, q);
    const float scale = scales[c * C / 32];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      if (r >= rows) break;
      float xv[C];
      loadRun<C>(x + (long long)r * K + c * C, xv);
      float s = 0.0f;
#pragma unroll
      for (int e = 0; e < C; ++e) s += q[e] * xv[e];
      acc[r] += s * scale;
    }
  }
}

/// One lane's share of an int4 row j: whole groups (lane, lane + 32, ...),
/// each one 16-byte load: scale * sum(code * x) + min * sum(x). The last
/// group of a row may be partial; its missing elements are not read.
template <int K, int R>
__device__ __forceinline__ void gemvRow4(const float *x, const uint8_t *w, const float *scales,
                                         const float *mins, int rows, int lane, float (&acc)[R]) {
  constexpr int G = (K + 31) / 32, X = K % 4 == 0 ? 4 : 1;
  for (int g = lane; g < G; g += 32) {
    const uint4 v = reinterpret_cast<const uint4 *>(w)[g];
    const uint8_t *b = reinterpret_cast<const uint8_t *>(&v);
    float q[32];
#pragma unroll
    for (int e = 0; e < 16; ++e) {
      q[e] = (float)(b[e] & 15);
      q[16 + e] = (float)(b[e] >> 4);
    }
    const float scale = scales[g], mn = mins[g];
    const int n = K % 32 == 0 || g < G - 1 ? 32 : K % 32;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      if (r >= rows) break;
      const float *xr = x + (long long)r * K + g * 32;
      float dot = 0.0f, sum = 0.0f;
      if (n == 32) {
#pragma unroll
        for (int e = 0; e < 32; e += X) {
          float xv[X];
          loadRun<X>(xr + e, xv);
#pragma unroll
          for (int u = 0; u < X; ++u) {
            dot += q[e + u] * xv[u];
            sum += xv[u];
          }
        }
      } else {
        for (int e = 0; e < n; ++e) {
          dot += q[e] * xr[e];
          sum += xr[e];
        }
      }
      acc[r] += scale * dot + mn * sum;
    }
  }
}

/// Matrix-vector products for up to R rows (decode, the last prefill row):
/// warp w of block b computes feature b * WARPS + w for every row, its lanes
/// reading the weights' row once, contiguously, then summing across the warp.
template <class O, int BITS, int K, int N0, int N1, int N2, bool BIAS, int WARPS, int R>
__device__ void quantGemv(const KvArgs &a) {
  constexpr int N = N0 + N1 + N2, G = (K + 31) / 32;
  const int j = blockIdx.x * WARPS + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (j >= N) return; // the whole warp: it holds no block barrier
  const int rows = (int)a.i[0];
  const float *x = reinterpret_cast<const float *>(a.p[0]);
  const float *scales = reinterpret_cast<const float *>(a.p[2]) + (long long)j * G;
  float acc[R];
#pragma unroll
  for (int r = 0; r < R; ++r) acc[r] = 0.0f;
  if constexpr (BITS == 8)
    gemvRow8<K, R>(x, reinterpret_cast<const int8_t *>(a.p[1]) + (long long)j * K, scales, rows,
                   lane, acc);
  else
    gemvRow4<K, R>(x, reinterpret_cast<const uint8_t *>(a.p[1]) + (long long)j * G * 16, scales,
                   reinterpret_cast<const float *>(a.p[3]) + (long long)j * G, rows, lane, acc);
  storeWarpRows<O, N0, N1, N2, BIAS, R>(a, rows, j, lane, acc);
}

/// C consecutive elements as f32: f32 runs of 4 per 16-byte load, 16-bit
/// runs of 8 in one (p aligned to 16 bytes; to 8 for 4 16-bit elements).
template <int C> __device__ __forceinline__ void loadElems(const float *p, float *out) {
  loadRun<C>(p, out);
}
template <int C, class H> __device__ __forceinline__ void loadElems(const H *p, float *out) {
  if constexpr (C % 8 == 0) {
#pragma unroll
    for (int i = 0; i < C / 8; ++i) load8(p + 8 * i, out + 8 * i);
  } else {
    static_assert(C == 4, "16-bit elements by 8, or 4");
    const uint2 r = *reinterpret_cast<const uint2 *>(p);
    const unsigned w[2] = {r.x, r.y};
    unpackWords<H>(w, out);
  }
}

/// llm.matvec's folds, as its kernel's FLAGS; and, for matvecMma only,
/// the tiles of 8 rows of x a block takes (mvTiles: 1 to 4, all the rows of
/// a product of up to 32).
inline constexpr int kMvNorm = 1, kMvSwiglu = 2, kMvAdd = 4, kMvBias = 8;
/// With kMvSwiglu: GELU (tanh) of the gate, GeGLU (bit 6: 4 and 5 are the
/// tiles').
inline constexpr int kMvGelu = 64;
/// FLAGS' bits for matvecMma's tiles of 8 rows (mvTilesOf: 1 to 4).
__host__ __device__ constexpr int mvTiles(int tiles) { return (tiles - 1) << 4; }
__host__ __device__ constexpr int mvTilesOf(int flags) { return 1 + ((flags >> 4) & 3); }
/// Bytes of each weight row a matvec asks into L2 before it waits for the
/// kernel before it (the first four 16-byte loads of each lane).
inline constexpr int kMvPrefetch = 2048;

/// matvec's weight type for kvplan's int4 format (int8 is int8_t).
struct Int4 {};

/// Where a matvec's weights are: rows of codes or elements at `data`; for
/// int8 and int4, each row's f32 group scales at `scales` and (int4) its
/// minimums at `mins`, [rows][ceil(K / 32)] each.
struct MvWeights {
  const char *data;
  const float *scales, *mins;
};

/// Byte `k` (0-3) of `w`, a code u of 8 bits, as the float 2^23 + u: one
/// byte permutation into the bits of 2^23 (0x4B000000), for the caller to
/// subtract 2^23 from, exactly. An int-to-float conversion instead runs at
/// an eighth of the FMA rate (16 a clock per multiprocessor on sm_80 and
/// sm_90), which at one row caps int4 decode below the memory bandwidth.
__device__ __forceinline__ float magicCode(unsigned w, unsigned k) {
  return __uint_as_float(__byte_perm(w, 0x4B000000u, 0x7440u | k));
}
inline constexpr float kMagic = 8388608.0f; // 2^23
/// Four int8 codes made unsigned (+ 128: each byte's top bit flipped).
__device__ __forceinline__ unsigned int8Flip(unsigned w) { return w ^ 0x80808080u; }
/// Byte k of `flipped` (int8Flip's) as the int8 code it holds, exactly.
__device__ __forceinline__ float int8Code(unsigned flipped, unsigned k) {
  return magicCode(flipped, k) - (kMagic + 128.0f);
}

/// How matvec reads a row of K weights of type W: one 16-byte load (a Run)
/// at a time, of RUN elements, decoded SUB at a time; ROW bytes a row. The
/// float types (f32, bf16, f16) are their elements. int8_t is kvplan's int8
/// format: 16 codes of one group a run, times the group's scale. Int4 is its
/// int4 format: a run is a group of 32 codes, two a byte (elements e and
/// 16 + e in byte e's low and high half), each scale * code + minimum. A
/// SCALED run's products over its elements are scaled once (and, with MINS,
/// the minimum times the sum of x added) instead of each weight. K is a
/// multiple of SUB; a row's last group may be partial (int8 and int4: K a
/// multiple of 16), and a lane stops at its end.
template <class W, int K> struct MvFormat {
  static constexpr int RUN = 16 / (int)sizeof(W), SUB = RUN;
  static constexpr long long ROW = (long long)K * sizeof(W);
  static constexpr bool SCALED = false, MINS = false;
  struct Run {
    float v[RUN], scale, mn;
    __device__ __forceinline__ void load(const MvWeights &w, long long j, int c) {
      loadElems<RUN>(reinterpret_cast<const W *>(w.data + j * ROW) + c * RUN, v);
    }
    __device__ __forceinline__ void decode(int, float (&out)[SUB]) const {
#pragma unroll
      for (int e = 0; e < SUB; ++e) out[e] = v[e];
    }
  };
};
/// A quantized run: its 16 bytes of codes, its group's scale and (int4)
/// minimum; GROUPS scales (and minimums) a row.
template <int K> struct MvCodes {
  static constexpr long long GROUPS = (K + 31) / 32;
  uint4 raw;
  float scale, mn;
};
template <int K> struct MvFormat<int8_t, K> {
  static constexpr int RUN = 16, SUB = 16;
  static constexpr long long ROW = K;
  static constexpr bool SCALED = true, MINS = false;
  struct Run : MvCodes<K> {
    __device__ __forceinline__ void load(const MvWeights &w, long long j, int c) {
      this->raw = reinterpret_cast<const uint4 *>(w.data + j * ROW)[c];
      this->scale = w.scales[j * this->GROUPS + c / 2];
    }
    /// Signed codes made unsigned (+ 128: each byte's top bit flipped).
    __device__ __forceinline__ void decode(int, float (&out)[SUB]) const {
      const uint4 &r = this->raw;
      const unsigned w[4] = {int8Flip(r.x), int8Flip(r.y), int8Flip(r.z), int8Flip(r.w)};
#pragma unroll
      for (int e = 0; e < SUB; ++e) out[e] = int8Code(w[e / 4], e % 4);
    }
    __device__ __forceinline__ float finish(float dot, float) const { return this->scale * dot; }
  };
};
template <int K> struct MvFormat<Int4, K> {
  static constexpr int RUN = 32, SUB = 16;
  static constexpr long long ROW = MvCodes<K>::GROUPS * 16;
  static constexpr bool SCALED = true, MINS = true;
  struct Run : MvCodes<K> {
    __device__ __forceinline__ void load(const MvWeights &w, long long j, int c) {
      this->raw = reinterpret_cast<const uint4 *>(w.data + j * ROW)[c];
      this->scale = w.scales[j * this->GROUPS + c];
      this->mn = w.mins[j * this->GROUPS + c];
    }
    /// Elements 16 * s .. 16 * s + 15 (the low halves of the bytes, then the
    /// high), each code c as 1/2 + c/32: c shifted to bits 3-6 of its byte
    /// (one shift and one mask for four), then one byte permutation puts the
    /// byte in bits 16-23 under 0x3F, the float 2^-1 * (1 + c/16), exactly.
    /// The subtraction that would make it c is left to finish (1/2 of the sum
    /// of x times a scale), one a run instead of one a code.
    __device__ __forceinline__ void decode(int s, float (&out)[SUB]) const {
      const uint4 &r = this->raw;
      const unsigned w[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
      for (int e = 0; e < SUB; ++e) {
        const unsigned t = (s == 0 ? w[e / 4] << 3 : w[e / 4] >> 1) & 0x78787878u;
        out[e] = __uint_as_float(__byte_perm(t, 0x3F000000u, 0x7044u | (e % 4) << 8));
      }
    }
    /// The run's share of a product: dot is the sum of decode's values times
    /// x's, 1/2 sum + (the codes times x) / 32, and sum x's.
    __device__ __forceinline__ float finish(float dot, float sum) const {
      return 32.0f * this->scale * dot + (this->mn - 16.0f * this->scale) * sum;
    }
  };
};

/// A matvec's weights from its arguments: p[1], and for int8 and int4 the
/// scales and minimums at i[at] and i[at + 1] bytes from it.
template <class W, int K> __device__ __forceinline__ MvWeights mvWeights(const KvArgs &a, int at) {
  if constexpr (MvFormat<W, K>::SCALED)
    return {a.p[1], reinterpret_cast<const float *>(a.p[1] + a.i[at]),
            reinterpret_cast<const float *>(a.p[1] + a.i[at + 1])};
  else
    return {a.p[1], nullptr, nullptr};
}

/// Weight row g of a matvec warp's G: FPW consecutive features from j0,
/// then (SwiGLU's up rows) the same FPW again `stride` rows on, and so on.
template <int FPW>
__device__ __forceinline__ long long mvRow(long long j0, long long stride, int g) {
  return j0 + g % FPW + (g / FPW) * stride;
}

/// A matvec warp's start: lets the next kernel start, and the first
/// kMvPrefetch bytes of its G weight rows (mvRow; none where `live` is
/// false), which no kernel writes, start coming into L2 while the kernel
/// before finishes. The caller then loads its first runs (mvLoadRuns) and
/// waits for that kernel (pdlWait) before it reads anything else.
template <class W, int K, int G, int FPW>
__device__ __forceinline__ void mvPrefetch(const MvWeights &w, long long j0, long long stride,
                                           bool live, int lane) {
  constexpr long long ROW = MvFormat<W, K>::ROW;
  pdlLaunchDependents();
  if (live)
#pragma unroll
    for (int g = 0; g < G; ++g)
      for (int b = lane * 128; b < ROW && b < kMvPrefetch; b += 32 * 128)
        prefetchL2(w.data + mvRow<FPW>(j0, stride, g) * ROW + b);
}

/// One run c of a matvec lane's G weight rows (loaded, MvFormat's Run) times
/// each of the `rows` rows of x, into acc; with NORM the weights (or x)
/// scaled by nw and the squares of x summed into ss.
template <class W, class X, class NW, int K, int G, int R, bool NORM>
__device__ __forceinline__ void mvRun(const typename MvFormat<W, K>::Run (&run)[G], int c,
                                      const X *x, const NW *nw, int rows, float (&acc)[G][R],
                                      float (&ss)[R]) {
  using F = MvFormat<W, K>;
  constexpr int C = F::SUB;
  // The norm's weights scale x where its rows are fewer than the weight rows
  // (one multiplication an element a row instead of one a weight row).
  constexpr bool XN = NORM && R < G;
#pragma unroll
  for (int s = 0; s < F::RUN / C; ++s) {
    const int e0 = c * F::RUN + s * C;
    if (K % F::RUN != 0 && e0 >= K) break; // past a partial last group
    float wv[G][C], nv[C];
#pragma unroll
    for (int g = 0; g < G; ++g) run[g].decode(s, wv[g]);
    if (NORM) {
      loadElems<C>(nw + e0, nv);
      if (!XN)
#pragma unroll
        for (int e = 0; e < C; ++e)
#pragma unroll
          for (int g = 0; g < G; ++g) wv[g][e] *= nv[e];
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
      if (r > 0 && r >= rows) break; // row 0 always: no condition a run at one row
      float xv[C], dot[G], sum = 0.0f;
      loadElems<C>(x + (long long)r * K + e0, xv);
#pragma unroll
      for (int e = 0; e < C; ++e) {
        if (NORM) ss[r] += xv[e] * xv[e];
        if (XN) xv[e] *= nv[e];
      }
#pragma unroll
      for (int g = 0; g < G; ++g) dot[g] = 0.0f;
#pragma unroll
      for (int e = 0; e < C; ++e) {
#pragma unroll
        for (int g = 0; g < G; ++g) {
          if (F::SCALED) dot[g] += wv[g][e] * xv[e];
          else acc[g][r] += wv[g][e] * xv[e];
        }
        if (F::MINS) sum += (NORM && !XN ? nv[e] : 1.0f) * xv[e];
      }
      if constexpr (F::SCALED)
#pragma unroll
        for (int g = 0; g < G; ++g) acc[g][r] += run[g].finish(dot[g], sum);
    }
  }
}

/// A matvec's warps in all, at or under which its lanes keep 8 weight loads
/// in flight instead of 4 (kMvUnroll): 16 warps a multiprocessor of an
/// H100/H200 (132).
inline constexpr long long kMvFewWarps = 16 * 132;

/// Runs of weights a matvec lane loads before it uses any (mvAccumulate),
/// for G weight rows a warp and WARPS warps in all: 4 weight loads in
/// flight a lane, as G of them a run allow, 8 where the warps are few. One
/// at a time, a lane would wait a memory latency for each run, and the
/// products with few runs a lane (Llama-3.2-1B's o at one row in bf16: 8)
/// would stream well under the memory bandwidth. With few warps a
/// multiprocessor (the 1B's QKV, o and down at one row: 12 to 16), 4 loads
/// a lane keep about 24 to 32 KiB in flight on it, near what an H200's
/// bandwidth times its memory latency asks; 8 double that, for about 16 to
/// 50 more registers a thread, which the warps there leave room for. Where
/// the warps are many the multiprocessors are full, and more registers a
/// thread would only make them fewer. Tried on an H200 at stop 45: 16 where
/// a lane has 16 runs or more (the 1B's down product at one row) made that
/// product slower (22.7 us timed alone, 20.2 in the run before) and, with
/// another change, the step 0.931x as fast side by side; 8 for the 1B's
/// gate|up at one row (8,192 warps) left the step as it was (0.996x).
template <long long WARPS> inline constexpr int kMvLoads = WARPS <= kMvFewWarps ? 8 : 4;
template <int G, long long WARPS>
inline constexpr int kMvUnroll = G < kMvLoads<WARPS> ? kMvLoads<WARPS> / G : 1;

/// Run c of a matvec lane's G weight rows (mvRow), loaded into run[g].
template <class W, int K, int G, int FPW>
__device__ __forceinline__ void mvLoadRun(const MvWeights &w, long long j0, long long stride,
                                          int c, typename MvFormat<W, K>::Run (&run)[G]) {
#pragma unroll
  for (int g = 0; g < G; ++g) run[g].load(w, mvRow<FPW>(j0, stride, g), c);
}

/// Runs c0, c0 + 32, ... (U of them, those within the row) of a matvec
/// lane's G weight rows (mvRow), loaded into run[u][g].
template <class W, int K, int G, int FPW, int U>
__device__ __forceinline__ void mvLoadRuns(const MvWeights &w, long long j0, long long stride,
                                           int c0, typename MvFormat<W, K>::Run (&run)[U][G]) {
  constexpr int RUNS = (K + MvFormat<W, K>::RUN - 1) / MvFormat<W, K>::RUN;
#pragma unroll
  for (int u = 0; u < U; ++u)
    if (c0 + 32 * u < RUNS) mvLoadRun<W, K, G, FPW>(w, j0, stride, c0 + 32 * u, run[u]);
}

/// A matvec lane's share of its warp's G weight rows (mvRow) times each of
/// the `rows` rows of x: its runs k = 0, 1, ... (c = lane + 32k, one 16-byte
/// load of weights each, MvFormat) into acc (mvRun). `run` holds runs 0 to
/// U - 1 (kMvUnroll; the caller loads them before it waits for the kernel
/// before) as a ring: slot u holds run k = u mod U, and once run k is summed
/// its slot loads run k + U, so U loads stay in flight all along the row
/// instead of U, then none while they are used, then U again. The rounds in
/// which every slot is loaded again have no condition in them (where the
/// runs are whole rounds of the warp, the lane's count is a constant), so
/// ptxas schedules a round's loads of x and its products as one block; until
/// 2026-12-05 a condition on the rows and one on the round split each run
/// off. Each element of x a lane loads serves all G rows: x, read from L1
/// for every warp of the GPU, costs R times the weights' bytes (twice that
/// for f32 x and 16-bit weights) over G.
template <class W, class X, class NW, int K, int G, int FPW, int R, bool NORM, int U>
__device__ __forceinline__ void mvAccumulate(const X *x, const MvWeights &w, long long j0,
                                             long long stride, const NW *nw, int rows, int lane,
                                             typename MvFormat<W, K>::Run (&run)[U][G],
                                             float (&acc)[G][R], float (&ss)[R]) {
  constexpr int RUNS = (K + MvFormat<W, K>::RUN - 1) / MvFormat<W, K>::RUN;
#pragma unroll
  for (int r = 0; r < R; ++r) {
    ss[r] = 0.0f;
#pragma unroll
    for (int g = 0; g < G; ++g) acc[g][r] = 0.0f;
  }
  const int P = RUNS / 32 + (lane < RUNS % 32 ? 1 : 0); // the lane's runs
  // Whole rounds whose slots all load again: P / U - 1 of them (none below
  // 2U runs), leaving U to 2U - 1 runs.
  const int ring = P >= 2 * U ? P / U - 1 : 0;
  int c = lane;
#pragma unroll 1
  for (int i = 0; i < ring; ++i, c += 32 * U)
#pragma unroll
    for (int u = 0; u < U; ++u) {
      mvRun<W, X, NW, K, G, R, NORM>(run[u], c + 32 * u, x, nw, rows, acc, ss);
      mvLoadRun<W, K, G, FPW>(w, j0, stride, c + 32 * (U + u), run[u]);
    }
  // The last one or two rounds: the runs that are there, a slot loading again
  // where a run is left for it.
#pragma unroll
  for (int t = 0; t < 2; ++t)
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int k = ring * U + t * U + u;
      if (k >= P) continue;
      mvRun<W, X, NW, K, G, R, NORM>(run[u], lane + 32 * k, x, nw, rows, acc, ss);
      if (t == 0 && k + U < P)
        mvLoadRun<W, K, G, FPW>(w, j0, stride, lane + 32 * (k + U), run[u]);
    }
}

/// Row r's G features (weight rows mvRow(f0, stride, g)) summed across the
/// warp (every lane calls it), scaled by the row's 1 / rms with NORM, the
/// bias (B, at p[4]) added with BIAS; lane 0 holds the result.
template <class B, int K, int G, int FPW, int R, bool NORM, bool BIAS>
__device__ __forceinline__ void mvFinish(const KvArgs &a, const float (&acc)[G][R],
                                         const float (&ss)[R], int r, int f0, int stride,
                                         float (&y)[G]) {
  const float inv = NORM ? rmsInv(warpSum(ss[r]), K, a.d[0]) : 1.0f;
#pragma unroll
  for (int g = 0; g < G; ++g) {
    y[g] = warpSum(acc[g][r]) * inv;
    if (BIAS) y[g] += ld(reinterpret_cast<const B *>(a.p[4])[mvRow<FPW>(f0, stride, g)]);
  }
}

/// Matrix-vector products of f32, bf16, f16, int8 or int4 weights for up to
/// R rows of x (decode, the last prefill row), where cuBLAS is slowest: warp
/// w of block b computes the FPW features from j = (b * WARPS + w) * FPW
/// for every row, its lanes reading each weight row once, contiguously, in
/// 16-byte loads (8 elements of 2 bytes, 4 of f32, 16 int8 codes, 32 int4;
/// MvFormat), and x in the same runs, accumulating in f32; K is a multiple
/// of the run (int8 and int4: of 16). FPW > 1 (several rows of x) reuses
/// each load of x for FPW features. Feature j goes to the output holding
/// it, of up to three (a fused QKV or gate|up weight: N0 columns, then N1,
/// then N2). A plain linear is FLAGS 0 (or kMvBias); llm.matvec adds the
/// neighbours --fuse-matvec folds in:
/// - kMvNorm: the rows of x are RMS-normed by scale nw (NW) first. Each warp
///   reads the whole row for its product anyway, so it sums the squares as it
///   goes: no extra pass over x and no block barrier; the product is then
///   inv(row) * sum(w * nw * x).
/// - kMvBias: bias (B) added to each feature of the product.
/// - kMvSwiglu: the weight is a gate|up projection of 2F rows; the warp of
///   feature j reads rows j and F + j and writes silu(gate) * up.
/// - kMvAdd: the addend (f32) added to the result.
/// (llm.matvec_rope_kv_write is matvecRopeKv, below.) With swiglu or an
/// addend there is one output. p: x (X, rows x K), weights (W), nw, addend,
/// bias, out0, out1, out2.  i[0]: rows; int8 and int4: i[1], i[2]: the
/// scales' and minimums' bytes from p[1].  d[0]: eps.
template <class W, class X, class O, class NW, class B, int K, int N0, int N1, int N2, int WARPS,
          int FPW, int R, int FLAGS>
__device__ void matvec(const KvArgs &a) {
  constexpr bool NORM = FLAGS & kMvNorm, SWIGLU = FLAGS & kMvSwiglu, ADD = FLAGS & kMvAdd,
                 BIAS = FLAGS & kMvBias;
  constexpr int F = N0 + N1 + N2, G = SWIGLU ? 2 * FPW : FPW;
  static_assert(K % MvFormat<W, K>::SUB == 0 && (sizeof(X) == 4 || MvFormat<W, K>::SUB == 8),
                "whole runs of weights; 16-bit x runs of 8");
  static_assert(!(SWIGLU || ADD) || N1 == 0, "one output with swiglu or an addend");
  static_assert(F % FPW == 0, "a warp's features are all there");
  const int j = (blockIdx.x * WARPS + threadIdx.x / 32) * FPW, lane = threadIdx.x % 32;
  const MvWeights w = mvWeights<W, K>(a, 1);
  mvPrefetch<W, K, G, FPW>(w, j, F, j < F, lane);
  if (j >= F) return; // the whole warp: it holds no block barrier
  // The first runs of weights (no kernel writes them) in flight while the
  // kernel before finishes.
  constexpr int U = kMvUnroll<G, F / FPW>;
  typename MvFormat<W, K>::Run run[U][G];
  mvLoadRuns<W, K, G, FPW, U>(w, j, F, lane, run);
  pdlWait();
  const int rows = (int)a.i[0];
  // One row (the batch-1 step): lane 0's addends (the residual, which a
  // kernel before wrote) are loaded before the weight stream, their latency
  // hidden under it, not after the sums.
  const float *addend = reinterpret_cast<const float *>(a.p[3]);
  float early[FPW] = {};
  if (ADD && R == 1 && lane == 0)
#pragma unroll
    for (int f = 0; f < FPW; ++f) early[f] = addend[j + f];
  float acc[G][R], ss[R];
  mvAccumulate<W, X, NW, K, G, FPW, R, NORM, U>(reinterpret_cast<const X *>(a.p[0]), w, j, F,
                                                reinterpret_cast<const NW *>(a.p[2]), rows, lane,
                                                run, acc, ss);
#pragma unroll
  for (int r = 0; r < R; ++r) {
    if (r >= rows) break;
    float y[G];
    mvFinish<B, K, G, FPW, R, NORM, BIAS>(a, acc, ss, r, j, F, y);
    if (lane != 0) continue;
#pragma unroll
    for (int f = 0; f < FPW; ++f) {
      float v = y[f];
      if (SWIGLU) v = gateAct<(FLAGS & kMvGelu) != 0>(y[f]) * y[FPW + f];
      if (ADD) v += R == 1 ? early[f] : addend[(long long)r * F + j + f];
      storeFeature<O, N0, N1, N2, false>(a, r, j + f, v);
    }
  }
}

/// One m16n8k16 product on tensor cores, d += a * b, of bf16 inputs into
/// f32 accumulators, in PTX's fragment layout: lane l of the warp, group
/// g = l / 4 and t = l % 4, holds A (16 x 16) at (row g, columns 2t and
/// 2t + 1) in a[0], (g + 8, 2t..) in a[1], (g, 2t + 8..) in a[2] and
/// (g + 8, 2t + 8..) in a[3]; B (16 x 8) at (rows 2t, 2t + 1, column g) in
/// b[0] and (2t + 8.., g) in b[1], the lower index in a word's low half; D
/// (16 x 8) at (g, 2t), (g, 2t + 1), (g + 8, 2t), (g + 8, 2t + 1). Every lane
/// of the warp calls it (the emulator's is tests/emu/CudaEmu.h, mmaBf16).
__device__ __forceinline__ void mmaBf16(float (&d)[4], const unsigned (&a)[4],
                                        const unsigned (&b)[2]) {
#if defined(__CUDA_ARCH__)
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
               "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#elif !defined(__CUDACC__)
  kvemu::mmaBf16(d, a, b);
#endif
}

/// Two floats as bf16, rounded to nearest, in one word (the first in its
/// low half): `big`; and what they leave, rounded the same way: `small`.
/// big + small keeps about 16 of an f32's 24 bits.
__device__ __forceinline__ void splitBf16(float x0, float x1, unsigned &big, unsigned &small) {
  const __nv_bfloat162 b = __floats2bfloat162_rn(x0, x1);
  const __nv_bfloat162 s = __floats2bfloat162_rn(x0 - __low2float(b), x1 - __high2float(b));
  big = reinterpret_cast<const unsigned &>(b);
  small = reinterpret_cast<const unsigned &>(s);
}

/// Features a block of matvecMma computes: one tensor-core product's rows.
inline constexpr int kMmaFeatures = 16;

/// A block's sums of mmaProducts, for its epilogue: part[w][p][row][r] is
/// warp w's share of the product of the block's weight row `row` (p: the
/// gate's, or with SwiGLU the up's) with x's row r; squares[w][r] its share
/// of the squares of x's row r.
template <int WARPS, int P> struct MmaSums {
  float part[WARPS][P][kMmaFeatures][8], squares[WARPS][8];
  /// Weight row `row`'s product with x's row r: the warps' parts in order.
  __device__ __forceinline__ float sum(int p, int row, int r) const {
    float y = 0.0f;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) y += part[w][p][row][r];
    return y;
  }
  /// With NORM, 1 / rms of x's row r (as matvec's mvFinish); else 1.
  template <int K, bool NORM> __device__ __forceinline__ float inv(int r, double eps) const {
    if (!NORM) return 1.0f;
    float sq = 0.0f;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) sq += squares[w][r];
    return rmsInv(sq, K, eps);
  }
};

/// How mmaProducts reads a lane's 8 elements of a weight row in a step s of
/// 32 elements (Raw, one load at byte STEP s + sizeof(Raw) t of the row:
/// STEP bytes hold 32 elements) and makes them bf16 words for mmaBf16 (word
/// i: the lane's elements pair(i, 0), in the low half, and pair(i, 1)); the
/// x elements they meet are the 4 from 32s + LANE t on and the 4 from HALF
/// further (X8: side by side). row(k): a row's bytes. bf16: 8 elements from
/// 8t on, as they are.
template <class W> struct MmaFormat;
template <> struct MmaFormat<__nv_bfloat16> {
  using Raw = uint4;
  static constexpr int STEP = 64, LANE = 8, HALF = 4;
  static constexpr bool SCALED = false, MINS = false, X8 = true;
  __device__ static constexpr long long row(int k) { return 2LL * k; }
  __device__ static constexpr int pair(int i, int e) { return 2 * i + e; }
  __device__ static __forceinline__ void words(const Raw &r, unsigned (&w)[4]) {
    w[0] = r.x, w[1] = r.y, w[2] = r.z, w[3] = r.w;
  }
};
/// (a & m) | c, in one LOP3.
__device__ __forceinline__ unsigned andOr(unsigned a, unsigned m, unsigned c) {
#if defined(__CUDA_ARCH__)
  unsigned d;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(d) : "r"(a), "r"(m), "r"(c));
  return d;
#else
  return (a & m) | c;
#endif
}

/// kvplan's int8 format: 8 codes from 8t on (8 bytes), made bf16 exactly
/// (|code| <= 128 has 8 significant bits) two to a word, codes e and e + 2
/// of a 4-byte word as they lie in its bytes 0 and 2 (after a shift by 8
/// for e = 1): a code r = v - 128 b (v its low 7 bits, b its top bit) is
/// (0x4300 | v) - (0x4300 | 128 b) in bf16, 128 + v less 128 or 256, one
/// LOP3 each and one bf16x2 subtraction for two codes. The products of each
/// step of 32 elements, one group, are scaled by the group's scale (SCALED).
template <> struct MmaFormat<int8_t> {
  using Raw = uint2;
  static constexpr int STEP = 32, LANE = 8, HALF = 4;
  static constexpr bool SCALED = true, MINS = false, X8 = true;
  __device__ static constexpr long long row(int k) { return k; }
  /// Word i's element e (0: its low half): elements 0 and 2, 1 and 3, 4 and 6, 5 and 7.
  __device__ static constexpr int pair(int i, int e) { return 4 * (i / 2) + i % 2 + 2 * e; }
  __device__ static __forceinline__ void words(const Raw &r, unsigned (&w)[4]) {
    const unsigned b[4] = {r.x, r.x >> 8, r.y, r.y >> 8};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const unsigned v = andOr(b[i], 0x007F007Fu, 0x43004300u),
                     top = andOr(b[i], 0x00800080u, 0x43004300u);
      const __nv_bfloat162 c = __hsub2(reinterpret_cast<const __nv_bfloat162 &>(v),
                                       reinterpret_cast<const __nv_bfloat162 &>(top));
      w[i] = reinterpret_cast<const unsigned &>(c);
    }
  }
};
/// kvplan's int4 format: a step of 32 elements is one group of 16 bytes,
/// byte e holding elements e (low half) and 16 + e (high half). Lane t
/// reads bytes 4t..4t + 3 (4 bytes): elements 4t..4t + 3, then 16 + 4t..
/// 16 + 4t + 3. A code c (0-15) becomes bf16 exactly: one byte permutation
/// puts it under 0x43 (the bf16 128 + c), and one bf16x2 subtraction of 128
/// a word leaves c. Each row's products are scaled by the group's scale
/// (SCALED), and its minimum times the sum of x added (MINS).
template <> struct MmaFormat<Int4> {
  using Raw = unsigned;
  static constexpr int STEP = 16, LANE = 4, HALF = 16;
  static constexpr bool SCALED = true, MINS = true, X8 = false;
  __device__ static constexpr long long row(int k) { return 16LL * ((k + 31) / 32); }
  __device__ static constexpr int pair(int i, int e) { return 2 * i + e; }
  __device__ static __forceinline__ void words(const Raw &r, unsigned (&w)[4]) {
    const unsigned half[2] = {r & 0x0F0F0F0Fu, (r >> 4) & 0x0F0F0F0Fu};
    const unsigned bits = 0x43004300u; // 128 in both halves
    const __nv_bfloat162 offset = reinterpret_cast<const __nv_bfloat162 &>(bits);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      // Bytes 2 (i % 2) and 2 (i % 2) + 1 of the half, each under 0x43.
      const unsigned u = __byte_perm(half[i / 2], 0x43434343u, i % 2 ? 0x4342u : 0x4140u);
      const __nv_bfloat162 v = __hsub2(reinterpret_cast<const __nv_bfloat162 &>(u), offset);
      w[i] = reinterpret_cast<const unsigned &>(v);
    }
  }
};

/// What a lane of mmaProducts reads: its weight rows (row[p][h]), from the
/// lane's first run (w), for a SCALED format their groups' scales (i[AT]
/// bytes from p[1]) and minimums (i[AT + 1]); for each tile n of 8 rows, x's
/// row 8n + g (x[n]; row 0 past the active rows, whose sums are left too)
/// and the norm weights (nw), from the lane's first element.
template <class W, class X, class NW, int K, int P, int NT> struct MmaLane {
  using F = MmaFormat<W>;
  static constexpr int STEPS = (K + 31) / 32;
  const typename F::Raw *w[P][2];
  const float *scale[P][2], *mn[P][2];
  const X *x[NT];
  const NW *nw;
  template <int AT>
  __device__ __forceinline__ void init(const KvArgs &a, const long long (&row)[P][2], int g,
                                       int t) {
#pragma unroll
    for (int p = 0; p < P; ++p)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const long long j = row[p][h];
        w[p][h] = reinterpret_cast<const typename F::Raw *>(a.p[1] + j * F::row(K)) + t;
        if constexpr (F::SCALED) {
          scale[p][h] = reinterpret_cast<const float *>(a.p[1] + a.i[AT]) + j * STEPS;
          mn[p][h] = reinterpret_cast<const float *>(a.p[1] + a.i[AT + 1]) + j * STEPS;
        }
      }
#pragma unroll
    for (int n = 0; n < NT; ++n) {
      const int r = 8 * n + g < (int)a.i[0] ? 8 * n + g : 0;
      x[n] = reinterpret_cast<const X *>(a.p[0]) + (long long)r * K + F::LANE * t;
    }
    nw = reinterpret_cast<const NW *>(a.p[2]) + F::LANE * t;
  }
};

/// A lane's loads of weights for step s of mmaProducts: its 8 elements of
/// each weight row (wv), the rows' scales and minimums; on[v]: whether half
/// v of the elements is within K (where K is no whole number of steps; else
/// always). No kernel writes them: they may be read before pdlWait.
template <class W, class X, class NW, int K, int P, int NT>
__device__ __forceinline__ void mmaLoadWeights(const MmaLane<W, X, NW, K, P, NT> &l, int s, int t,
                                               typename MmaFormat<W>::Raw (&wv)[P][2],
                                               float (&scale)[P][2], float (&mn)[P][2],
                                               bool (&on)[2]) {
  using F = MmaFormat<W>;
  constexpr int RAWS = F::STEP / (int)sizeof(typename F::Raw); // a step's loads of a row
  if constexpr (K % 32 == 0) {
    on[0] = on[1] = true;
  } else if constexpr (F::X8) {
    on[0] = on[1] = s * 32 + 8 * t < K; // K % 8 == 0
  } else {
    on[0] = true, on[1] = s * 32 + 16 < K; // int4: K % 16 == 0
  }
#pragma unroll
  for (int p = 0; p < P; ++p)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      wv[p][h] = on[0] ? l.w[p][h][s * RAWS] : typename F::Raw{};
      scale[p][h] = F::SCALED ? l.scale[p][h][s] : 0.0f;
      mn[p][h] = F::MINS ? l.mn[p][h][s] : 0.0f;
    }
}

/// 16-byte loads of x a lane makes for a step of one row: f32 x two.
template <class X> inline constexpr int kMmaXLoads = sizeof(X) == 4 ? 2 : 1;

/// A lane's 8 elements of x's row in each of the first A tiles for step s
/// of mmaProducts (xv), the halves that are `on` (mmaLoadWeights).
template <int A, class W, class X, class NW, int K, int P, int NT>
__device__ __forceinline__ void mmaLoadX(const MmaLane<W, X, NW, K, P, NT> &l, int s,
                                         const bool (&on)[2], uint4 (&xv)[NT][kMmaXLoads<X>]) {
#pragma unroll
  for (int n = 0; n < A; ++n)
#pragma unroll
    for (int v = 0; v < kMmaXLoads<X>; ++v)
      xv[n][v] = on[v] ? *reinterpret_cast<const uint4 *>(l.x[n] + s * 32 + MmaFormat<W>::HALF * v)
                       : uint4{};
}

/// One step of 32 elements of mmaProducts: the lane's weight elements (wv),
/// made bf16 words once, times its 8 x elements of each of the first A
/// tiles (xv[n]: bf16, or f32 in two halves of 4, MmaFormat's), into
/// acc[n]. A SCALED format's products are a row's times its scale, and with
/// MINS its minimum (mn) times the sum of x's row (from one more product: A
/// all ones) is added. With NORM x is first scaled by the norm weights at
/// the same elements (nw: the first; zero in a half that is not `on`), and
/// its squares added to ss[n].
template <class W, class X, class NW, int P, bool NORM, int NT, int A>
__device__ __forceinline__ void mmaRun(const uint4 (&xv)[NT][kMmaXLoads<X>],
                                       const typename MmaFormat<W>::Raw (&wv)[P][2],
                                       const float (&scale)[P][2], const float (&mn)[P][2],
                                       const bool (&on)[2], const NW *nw, float (&ss)[NT],
                                       float (&acc)[NT][P][4]) {
  using F = MmaFormat<W>;
  constexpr bool SPLIT = sizeof(X) == 4;
  // A's words: the lane's elements 0-3 for the first product, 4-7 for the second.
  unsigned first[P][4], second[P][4];
#pragma unroll
  for (int p = 0; p < P; ++p) {
    unsigned w0[4], w8[4];
    F::words(wv[p][0], w0);
    F::words(wv[p][1], w8);
    first[p][0] = w0[0], first[p][1] = w8[0], first[p][2] = w0[1], first[p][3] = w8[1];
    second[p][0] = w0[2], second[p][1] = w8[2], second[p][2] = w0[3], second[p][3] = w8[3];
  }
  float nv[8] = {};
  if (SPLIT && NORM) {
    if constexpr (F::X8) {
      if (on[0]) load8(nw, nv);
    } else {
#pragma unroll
      for (int v = 0; v < 2; ++v)
        if (on[v]) loadElems<4>(nw + F::HALF * v, nv + 4 * v);
    }
  }
#pragma unroll
  for (int n = 0; n < A; ++n) {
    unsigned big[4], small[4] = {}; // B's words: x's elements pair(i, 0) and pair(i, 1)
    if constexpr (SPLIT) {
      float xf[8];
      unpack16<float>(xv[n][0], xf);
      unpack16<float>(xv[n][1], xf + 4);
      if (NORM)
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          ss[n] += xf[e] * xf[e];
          xf[e] *= nv[e];
        }
#pragma unroll
      for (int i = 0; i < 4; ++i)
        splitBf16(xf[F::pair(i, 0)], xf[F::pair(i, 1)], big[i], small[i]);
    } else {
      const uint4 &x = xv[n][0];
      big[0] = x.x, big[1] = x.y, big[2] = x.z, big[3] = x.w;
    }
    const unsigned b0[2] = {big[0], big[1]}, b1[2] = {big[2], big[3]},
                   s0[2] = {small[0], small[1]}, s1[2] = {small[2], small[3]};
    float sum[4] = {0.0f, 0.0f, 0.0f, 0.0f}; // MINS: x's rows 2t, 2t + 1, twice
    if constexpr (F::MINS) {
      const unsigned u = 0x3F803F80u, ones[4] = {u, u, u, u}; // bf16 1 in both halves
      mmaBf16(sum, ones, b0);
      mmaBf16(sum, ones, b1);
      mmaBf16(sum, ones, s0);
      mmaBf16(sum, ones, s1);
    }
#pragma unroll
    for (int p = 0; p < P; ++p) {
      float run[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      float (&d)[4] = *(F::SCALED ? &run : &acc[n][p]);
      mmaBf16(d, first[p], b0);
      mmaBf16(d, second[p], b1);
      if constexpr (SPLIT) {
        mmaBf16(d, first[p], s0);
        mmaBf16(d, second[p], s1);
      }
      if constexpr (F::SCALED)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          acc[n][p][i] += scale[p][i / 2] * run[i];
          if (F::MINS) acc[n][p][i] += mn[p][i / 2] * sum[i];
        }
    }
  }
}

/// Steps s to s + U - 1 of mmaProducts over its first A tiles, their
/// weights loaded (wv, scale, mn, on: mmaLoadWeights): x's loads (with one
/// tile, all U steps' in flight together; with more, a step's tiles
/// together, as registers allow), then the products (mmaRun); with RING
/// each slot then loads step s + U + u.
template <int A, bool NORM, bool RING, class W, class X, class NW, int K, int P, int NT, int U>
__device__ __forceinline__ void mmaSteps(const MmaLane<W, X, NW, K, P, NT> &l, int s, int t,
                                         typename MmaFormat<W>::Raw (&wv)[U][P][2],
                                         float (&scale)[U][P][2], float (&mn)[U][P][2],
                                         bool (&on)[U][2], float (&ss)[NT],
                                         float (&acc)[NT][P][4]) {
  constexpr int XU = NT == 1 ? U : 1; // steps whose x loads are in flight together
#pragma unroll
  for (int u0 = 0; u0 < U; u0 += XU) {
    uint4 xv[XU][NT][kMmaXLoads<X>];
#pragma unroll
    for (int u = 0; u < XU; ++u) mmaLoadX<A>(l, s + u0 + u, on[u0 + u], xv[u]);
#pragma unroll
    for (int u = 0; u < XU; ++u) {
      const int v = u0 + u;
      mmaRun<W, X, NW, P, NORM, NT, A>(xv[u], wv[v], scale[v], mn[v], on[v],
                                       l.nw + (s + v) * 32, ss, acc);
      if (RING) mmaLoadWeights(l, s + U + v, t, wv[v], scale[v], mn[v], on[v]);
    }
  }
}

/// The steps s0 to s1 - 1 of a warp in mmaProducts over the first A tiles
/// (its first U steps' weights loaded if it has as many): U at a time, the
/// slots a ring (matvec's mvAccumulate: once step s + u is summed, its slot
/// loads step s + U + u, so U steps' weights stay in flight until the last
/// round, which its slots hold already), then one at a time.
template <int A, bool NORM, class W, class X, class NW, int K, int P, int NT, int U>
__device__ __forceinline__ void mmaMainLoop(const MmaLane<W, X, NW, K, P, NT> &l, int s0, int s1,
                                            int t, typename MmaFormat<W>::Raw (&wv)[U][P][2],
                                            float (&scale)[U][P][2], float (&mn)[U][P][2],
                                            bool (&on)[U][2], float (&ss)[NT],
                                            float (&acc)[NT][P][4]) {
  int s = s0;
  for (; s + 2 * U <= s1; s += U) mmaSteps<A, NORM, true>(l, s, t, wv, scale, mn, on, ss, acc);
  if (s + U <= s1) {
    mmaSteps<A, NORM, false>(l, s, t, wv, scale, mn, on, ss, acc);
    s += U;
  }
  for (; s < s1; ++s) {
    uint4 xv[NT][kMmaXLoads<X>];
    mmaLoadWeights(l, s, t, wv[0], scale[0], mn[0], on[0]);
    mmaLoadX<A>(l, s, on[0], xv);
    mmaRun<W, X, NW, P, NORM, NT, A>(xv, wv[0], scale[0], mn[0], on[0], l.nw + s * 32, ss, acc);
  }
}

/// The products of matvec on tensor cores (matvecMma, matvecRopeKvMma), for
/// bf16, int8 or int4 weights (W, at p[1]) and up to 8 NT rows of x, in NT
/// tiles of 8: the block's 16 weight rows (A) times each tile's rows as B's
/// 8 columns, f32 accumulators; its WARPS warps split K, each tile's parts
/// go through `sums` in turn, and `epilogue(n)` runs for tile n between
/// block barriers. The weights come from memory once for every tile, each
/// lane's made bf16 words once (mmaRun), where a block for each 8 rows (the
/// row groups until 2026-12-05) read them from L2 again and decoded them
/// again for every group. The lane's weight rows are row[p][h]: h 0 A's row
/// g, h 1 row g + 8 (p: the gate's, the up's); past the weight, row 0. The
/// sums of those rows, and of B's columns past the active rows (i[0]; row 0
/// of x, read by MmaLane), are for the epilogue to leave; tiles past the
/// active rows are neither read nor multiplied: the main loop is built for
/// each number of active tiles (mmaMainLoop) and one is chosen once, as
/// the number is the same for the whole block (a condition for each tile
/// in the loop made ptxas compute x's addresses again at every step: 1,467
/// PTX instructions in Llama-3.2-1B's bf16 QKV loop at 4 tiles, 808
/// without), so no load depends on a condition but at a K that is no whole
/// number of steps of 32. The warp's steps go 4 at a time (2 with SwiGLU),
/// their loads in flight together, each slot loading again as it is used
/// (a ring), then one at a time. For each step of 32
/// elements of K, lane (g, t) reads 8 of its weight rows (MmaFormat: bf16
/// and int8 the 8 from 8t on) and the same 8 of x's row g of each tile (one
/// load each, f32 x two): a product sums over its
/// 16 k, so which k an element takes does not matter as long as A and B
/// agree, and mmaBf16's layout gives lane (g, t) the k 2t, 2t + 1, 2t + 8
/// and 2t + 9 of A's rows g, g + 8 and of B's column g alike (the lane's
/// elements 0-3 go to the first product, 4-7 to the second). A step of
/// int8 or int4 is one group, whose scales (f32, [rows][ceil(K / 32)],
/// i[AT] bytes from p[1]) and int4's minimums (i[AT + 1] bytes on) each
/// row's products take. An f32 x is split into a big and a small bf16 part
/// (splitBf16: two products); a bf16 x is exact. With NORM x is scaled by nw
/// (p[2]) before the split, and its squares summed from the same loads.
/// The first kMvPrefetch bytes of each weight row's share come into L2,
/// and the first U steps' weights into registers, before the wait for the
/// kernel before; afterWait() runs right after that wait (the caller's
/// loads of what a kernel before wrote, ahead of the weight stream).
/// p[0]: x; i[0]: rows.
template <class W, class X, class NW, int K, int WARPS, int P, bool NORM, int NT, int AT,
          class AfterWait, class Epilogue>
__device__ __forceinline__ void mmaProducts(const KvArgs &a, const long long (&row)[P][2],
                                            MmaSums<WARPS, P> &sums, const AfterWait &afterWait,
                                            const Epilogue &epilogue) {
  using F = MmaFormat<W>;
  constexpr bool SPLIT = sizeof(X) == 4;
  constexpr int STEPS = (K + 31) / 32, U = P == 2 || NT > 2 ? 2 : 4;
  static_assert(K % 8 == 0 && (SPLIT || !NORM), "whole runs of 8 elements; the norm reads f32 x");
  static_assert(SPLIT || !F::SCALED, "quantized weights read f32 x");
  static_assert(F::X8 || K % 16 == 0, "int4: whole halves of a group");
  static_assert(WARPS >= 1 && WARPS <= STEPS, "each warp some of K");
  static_assert(NT >= 1 && NT <= 4, "1 to 4 tiles of 8 rows");
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int s0 = warp * STEPS / WARPS, s1 = (warp + 1) * STEPS / WARPS;
  // The active tiles: the same for every thread of the block.
  const int tiles = NT == 1 ? 1 : min(NT, ((int)a.i[0] + 7) / 8);
  MmaLane<W, X, NW, K, P, NT> l;
  l.template init<AT>(a, row, g, t);
  pdlLaunchDependents();
#pragma unroll
  for (int p = 0; p < P; ++p)
#pragma unroll
    for (int h = 0; h < 2; ++h)
      for (int b = s0 * F::STEP + t * 128;
           b < s1 * F::STEP && b < s0 * F::STEP + kMvPrefetch; b += 512)
        prefetchL2(reinterpret_cast<const char *>(l.w[p][h] - t) + b);
  // U steps at a time, their loads first, all in flight together; then one.
  typename F::Raw wv[U][P][2];
  float scale[U][P][2], mn[U][P][2];
  bool on[U][2];
  if (s0 + U <= s1)
#pragma unroll
    for (int u = 0; u < U; ++u) mmaLoadWeights(l, s0 + u, t, wv[u], scale[u], mn[u], on[u]);
  pdlWait();
  afterWait();
  float acc[NT][P][4] = {}, ss[NT] = {};
  constexpr int A3 = NT < 3 ? NT : 3, A2 = NT < 2 ? NT : 2; // the loops built
  if (tiles >= NT) mmaMainLoop<NT, NORM>(l, s0, s1, t, wv, scale, mn, on, ss, acc);
  else if (tiles == 3) mmaMainLoop<A3, NORM>(l, s0, s1, t, wv, scale, mn, on, ss, acc);
  else if (tiles == 2) mmaMainLoop<A2, NORM>(l, s0, s1, t, wv, scale, mn, on, ss, acc);
  else mmaMainLoop<1, NORM>(l, s0, s1, t, wv, scale, mn, on, ss, acc);
#pragma unroll
  for (int n = 0; n < NT; ++n) {
    if (NT > 1 && n >= tiles) break;
    if (n > 0) __syncthreads(); // the tile before's epilogue has read `sums`
#pragma unroll
    for (int p = 0; p < P; ++p)
#pragma unroll
      for (int i = 0; i < 4; ++i)
        sums.part[warp][p][g + 8 * (i / 2)][2 * t + i % 2] = acc[n][p][i];
    if (NORM) {
      float q = ss[n];
      q += __shfl_xor_sync(0xffffffffu, q, 1);
      q += __shfl_xor_sync(0xffffffffu, q, 2);
      if (t == 0) sums.squares[warp][g] = q;
    }
    __syncthreads();
    epilogue(n);
  }
}

/// matvec on tensor cores, for bf16, int8 or int4 weights (W) and 2 to 32
/// rows of x (decode at a batch, a short prefill chunk: matvec's f32
/// products would issue R multiply-adds for every weight, and its loads of
/// x R times the weights' bytes over FPW).
/// Block b computes features 16b..16b+15 (with SwiGLU, their gate and up
/// rows) for every row (mmaProducts: A's row g feature 16b + g, row g + 8
/// feature 16b + g + 8; the rows in mvTilesOf(FLAGS) tiles of 8), then for
/// each tile one thread a feature and row adds the folds, which are
/// matvec's (FLAGS). p, i, d: matvec's.
template <class W, class X, class O, class NW, class B, int K, int N0, int N1, int N2, int WARPS,
          int FLAGS>
__device__ void matvecMma(const KvArgs &a) {
  constexpr bool NORM = FLAGS & kMvNorm, SWIGLU = FLAGS & kMvSwiglu, ADD = FLAGS & kMvAdd,
                 BIAS = FLAGS & kMvBias;
  constexpr int F = N0 + N1 + N2, P = SWIGLU ? 2 : 1, NT = mvTilesOf(FLAGS);
  static_assert(!(SWIGLU || ADD) || N1 == 0, "one output with swiglu or an addend");
  __shared__ MmaSums<WARPS, P> sums;
  const int g = threadIdx.x % 32 / 4, j0 = blockIdx.x * kMmaFeatures;
  long long row[P][2];
#pragma unroll
  for (int p = 0; p < P; ++p)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int j = j0 + g + 8 * h;
      row[p][h] = j < F ? j + p * F : 0; // past the weight: left
    }
  const int rows = (int)a.i[0];
  const float *addend = reinterpret_cast<const float *>(a.p[3]);
  // Where a thread has one output of a tile (blocks of 4 warps or more),
  // its addends (the residual, which a kernel before wrote) are loaded
  // right after the wait, ahead of the weight stream, not after the sums.
  constexpr bool EARLY = ADD && WARPS * 32 >= kMmaFeatures * 8;
  const int o0 = threadIdx.x;
  float early[NT] = {};
  const auto loadEarly = [&] {
#pragma unroll
    for (int n = 0; n < NT; ++n)
      if (EARLY && o0 < kMmaFeatures * 8 && 8 * n + o0 % 8 < rows && j0 + o0 / 8 < F)
        early[n] = addend[(long long)(8 * n + o0 % 8) * F + j0 + o0 / 8];
  };
  // Tile n's outputs, thread o: feature o / 8 of the block, row 8n + o % 8.
  const auto epilogue = [&](int n) {
    for (int o = o0; o < kMmaFeatures * 8; o += WARPS * 32) {
      const int f = o / 8, r = o % 8, j = j0 + f;
      if (8 * n + r >= rows || j >= F) continue;
      const float inv = sums.template inv<K, NORM>(r, a.d[0]);
      float y[P];
#pragma unroll
      for (int p = 0; p < P; ++p) {
        y[p] = sums.sum(p, f, r) * inv;
        if (BIAS) y[p] += ld(reinterpret_cast<const B *>(a.p[4])[j + p * F]);
      }
      float v = y[0];
      if (SWIGLU) v = gateAct<(FLAGS & kMvGelu) != 0>(y[0]) * y[P - 1];
      if (ADD) v += EARLY ? early[n] : addend[(long long)(8 * n + r) * F + j];
      storeFeature<O, N0, N1, N2, false>(a, 8 * n + r, j, v);
    }
  };
  mmaProducts<W, X, NW, K, WARPS, P, NORM, NT, 1>(a, row, sums, loadEarly, epilogue);
}

/// The tiled product's tiles: 64 rows of x and 64 weight rows over one group
/// of K (32 elements), as bf16 pairs (word c: two elements, x's and the
/// codes' alike, gemmStore), a row padded to 20 words so that a warp's
/// fragment loads (row g, word t: 20 g + t) fall in 32 different banks.
inline constexpr int kQTileRows = 64, kQTileFeatures = 64, kQTileK = 32, kQTileThreads = 256;
inline constexpr int kQTileWords = 20;

/// One stage of the tiled product: x's rows split into a big and a small
/// bf16 part (splitBf16), the weight rows' codes as bf16 (exact: an int8
/// code has at most 8 significant bits, an int4 code 4), the group's scales
/// and minimums of the tile's features, and x's rows summed over the group
/// (for int4's minimums).
struct QStage {
  unsigned xb[kQTileRows][kQTileWords], xs[kQTileRows][kQTileWords];
  unsigned w[kQTileFeatures][kQTileWords];
  float scale[kQTileFeatures], mn[kQTileFeatures], xsum[kQTileRows];
};

/// The tiled product's shared memory: two stages, one read while the next
/// group is written to the other, then the block's outputs (row-major) in
/// the same bytes.
union QTiles {
  QStage stage[2];
  float out[kQTileRows][kQTileFeatures + 4];
};

/// Thread t's share of one group of the tiled product, held in registers
/// from its loads (issued before the warps multiply the group before it) to
/// its stores: x's row t / 4 of the tile, elements 8 (t % 4) on of the group
/// (zero past the rows or K); the tile's weight row t / 4: int8, its codes
/// 8 (t % 4) on (zero past N or K); int4, bytes 4 (t % 4) on of the group's
/// 16, which hold elements 4 (t % 4) + e (low halves) and 16 + 4 (t % 4) + e
/// (high halves; zero past N); the row's scale and minimum (zero past N).
struct QLoads {
  float x[8];
  unsigned code[2];
  float scale, mn;
};

template <int BITS, int K, int N>
__device__ __forceinline__ void gemmLoad(QLoads &l, const KvArgs &a, int rows, int r0, int j0,
                                         int g, int tid) {
  constexpr int G = (K + 31) / 32;
  const int row = tid / 4, kp = (tid % 4) * 8, k0 = 32 * g;
  const float *x = reinterpret_cast<const float *>(a.p[0]) + (long long)(r0 + row) * K + k0 + kp;
  const bool xLive = r0 + row < rows;
  if (xLive && K % 4 == 0 && (K % 32 == 0 || k0 + kp + 8 <= K)) {
    loadRun<4>(x, l.x);
    loadRun<4>(x + 4, l.x + 4);
  } else {
#pragma unroll
    for (int e = 0; e < 8; ++e) l.x[e] = xLive && k0 + kp + e < K ? x[e] : 0.0f;
  }
  const int j = j0 + row;
  const bool live = j < N;
  const long long at = (long long)(live ? j : 0) * G + g;
  l.scale = live ? reinterpret_cast<const float *>(a.p[2])[at] : 0.0f;
  l.mn = BITS == 4 && live ? reinterpret_cast<const float *>(a.p[3])[at] : 0.0f;
  if constexpr (BITS == 8) {
    const uint8_t *src = reinterpret_cast<const uint8_t *>(a.p[1]) + (long long)j * K + k0 + kp;
    if (live && K % 8 == 0 && (K % 32 == 0 || k0 + kp + 8 <= K)) {
      const uint2 v = *reinterpret_cast<const uint2 *>(src);
      l.code[0] = v.x, l.code[1] = v.y;
    } else {
      l.code[0] = l.code[1] = 0u;
#pragma unroll
      for (int e = 0; e < 8; ++e)
        if (live && k0 + kp + e < K) l.code[e / 4] |= unsigned(src[e]) << (8 * (e % 4));
    }
  } else {
    l.code[0] = live ? *reinterpret_cast<const unsigned *>(reinterpret_cast<const uint8_t *>(
                           a.p[1]) + at * 16 + (tid % 4) * 4)
                     : 0u;
  }
}

/// The tiled product's codes as matvecMma reads them (MmaFormat), by BITS.
template <int BITS> struct QFormat {
  using F = MmaFormat<int8_t>;
};
template <> struct QFormat<4> {
  using F = MmaFormat<Int4>;
};

/// Thread t's share of a group into a stage (QLoads): the codes made bf16
/// words as matvecMma makes them (MmaFormat::words; int8: 8 codes, paired
/// as MmaFormat::pair says, int4: 4 bytes, the low halves to words 2 (t % 4)
/// on, the high halves 8 further), x's elements split and paired the same
/// way, the scale and minimum; for int4, x's row summed over the group by
/// the row's 4 threads (lanes side by side: every thread calls this).
template <int BITS>
__device__ __forceinline__ void gemmStore(const QLoads &l, QStage &s, int tid) {
  using F = typename QFormat<BITS>::F;
  const int row = tid / 4, q = tid % 4;
  unsigned big[4], small[4], w[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) splitBf16(l.x[F::pair(i, 0)], l.x[F::pair(i, 1)], big[i], small[i]);
  *reinterpret_cast<uint4 *>(&s.xb[row][4 * q]) = make_uint4(big[0], big[1], big[2], big[3]);
  *reinterpret_cast<uint4 *>(&s.xs[row][4 * q]) =
      make_uint4(small[0], small[1], small[2], small[3]);
  if constexpr (BITS == 8) {
    F::words(make_uint2(l.code[0], l.code[1]), w);
    *reinterpret_cast<uint4 *>(&s.w[row][4 * q]) = make_uint4(w[0], w[1], w[2], w[3]);
  } else {
    F::words(l.code[0], w);
    *reinterpret_cast<uint2 *>(&s.w[row][2 * q]) = make_uint2(w[0], w[1]);
    *reinterpret_cast<uint2 *>(&s.w[row][8 + 2 * q]) = make_uint2(w[2], w[3]);
    float sum = 0.0f;
#pragma unroll
    for (int e = 0; e < 8; ++e) sum += l.x[e];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    if (q == 0) s.xsum[row] = sum;
  }
  if (q == 0) s.scale[row] = l.scale, s.mn[row] = l.mn;
}

/// A warp's products for one stage: rows wr..wr + 15 of x by features
/// wf..wf + 31, four m16n8k16 tiles (n), each group's two halves of 16
/// elements by both of x's parts into fresh sums p, which the features'
/// scales multiply into acc (plus int4's minimum times x's row sum). Lane
/// (g, t) as mmaBf16 says: A's (row g, word t) and (row g, word t + 4) of a
/// half, B's feature g, the sums at rows g and g + 8, features 2t, 2t + 1.
template <int BITS>
__device__ __forceinline__ void gemmStage(const QStage &s, float (&acc)[4][4], int wr, int wf,
                                          int g, int t) {
  float p[4][4] = {};
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int c = 8 * h + t;
    const unsigned ab[4] = {s.xb[wr + g][c], s.xb[wr + g + 8][c], s.xb[wr + g][c + 4],
                            s.xb[wr + g + 8][c + 4]};
    const unsigned as[4] = {s.xs[wr + g][c], s.xs[wr + g + 8][c], s.xs[wr + g][c + 4],
                            s.xs[wr + g + 8][c + 4]};
#pragma unroll
    for (int n = 0; n < 4; ++n) {
      const unsigned b[2] = {s.w[wf + 8 * n + g][c], s.w[wf + 8 * n + g][c + 4]};
      mmaBf16(p[n], as, b);
      mmaBf16(p[n], ab, b);
    }
  }
#pragma unroll
  for (int n = 0; n < 4; ++n)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int f = wf + 8 * n + 2 * t + i % 2, r = wr + g + 8 * (i / 2);
      float y = s.scale[f] * p[n][i];
      if constexpr (BITS == 4) y += s.mn[f] * s.xsum[r];
      acc[n][i] += y;
    }
}

/// Products for many rows (prefill), on tensor cores: block (feature tile,
/// row tile) computes 64 rows x 64 features, one group of K at a time, in
/// two stages of shared memory: a thread loads its share of the next group
/// (gemmLoad) before the warps multiply the present one, and stores it into
/// the other stage after, one barrier a group. Warp w multiplies rows
/// 16 (w % 4) on by features 32 (w / 4) on (gemmStage): the codes are bf16
/// exactly and x's f32 rows are split into two bf16 parts (about 16 of their
/// 24 bits), accumulated in f32; each group's sums are scaled as they are
/// added, as the matrix-vector kernels do.
template <class O, int BITS, int K, int N0, int N1, int N2, bool BIAS>
__device__ void quantGemm(const KvArgs &a) {
  static_assert(kQTileThreads == 256 && kQTileRows == 64 && kQTileFeatures == 64 && kQTileK == 32,
                "8 warps, each 16 rows x 32 features; a group of K a stage");
  constexpr int N = N0 + N1 + N2, G = (K + 31) / 32;
  __shared__ __align__(16) QTiles sh;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, tr = tid / 16, tf = tid % 16;
  const int j0 = blockIdx.x * kQTileFeatures, r0 = blockIdx.y * kQTileRows;
  const int wr = (warp % 4) * 16, wf = (warp / 4) * 32, lg = lane / 4, lt = lane % 4;
  const int rows = (int)a.i[0];
  float acc[4][4] = {};
  QLoads next;
  gemmLoad<BITS, K, N>(next, a, rows, r0, j0, 0, tid);
  gemmStore<BITS>(next, sh.stage[0], tid);
  __syncthreads();
  for (int g = 0; g < G; ++g) {
    if (g + 1 < G) gemmLoad<BITS, K, N>(next, a, rows, r0, j0, g + 1, tid);
    gemmStage<BITS>(sh.stage[g % 2], acc, wr, wf, lg, lt);
    if (g + 1 < G) gemmStore<BITS>(next, sh.stage[(g + 1) % 2], tid);
    __syncthreads();
  }
#pragma unroll
  for (int n = 0; n < 4; ++n)
#pragma unroll
    for (int i = 0; i < 4; ++i)
      sh.out[wr + lg + 8 * (i / 2)][wf + 8 * n + 2 * lt + i % 2] = acc[n][i];
  __syncthreads();
#pragma unroll
  for (int u = 0; u < 4; ++u) {
    const int r = r0 + tr * 4 + u;
    if (r >= rows) break;
#pragma unroll
    for (int v = 0; v < 4; ++v)
      if (j0 + tf * 4 + v < N)
        storeFeature<O, N0, N1, N2, BIAS>(a, r, j0 + tf * 4 + v, sh.out[tr * 4 + u][tf * 4 + v]);
  }
}

/// out[r] = table[tokens[r]] dequantized (as O), times d[0] with SCALED.
/// p: tokens, data, scales, mins (int4), out.
template <int BITS, class O, int COLS, int BLOCK, bool SCALED = false>
__device__ void embeddingQuant(const KvArgs &a) {
  constexpr int G = (COLS + 31) / 32;
  const int r = blockIdx.x;
  const long long t = reinterpret_cast<const int *>(a.p[0])[r];
  const float *scale = reinterpret_cast<const float *>(a.p[2]) + t * G;
  O *out = reinterpret_cast<O *>(a.p[4]) + (long long)r * COLS;
  for (int c = threadIdx.x; c < COLS; c += BLOCK) {
    float v;
    if constexpr (BITS == 8) {
      v = (float)reinterpret_cast<const int8_t *>(a.p[1])[t * COLS + c] * scale[c / 32];
    } else {
      const int g = c / 32, i = c % 32;
      const unsigned b = reinterpret_cast<const uint8_t *>(a.p[1])[(t * G + g) * 16 + i % 16];
      const float mn = reinterpret_cast<const float *>(a.p[3])[t * G + g];
      v = (float)(i < 16 ? b & 15u : b >> 4) * scale[g] + mn;
    }
    out[c] = st<O>(SCALED ? v * (float)a.d[0] : v);
  }
}

// ---------------------------------------------------------------------------
// Mixtures of experts (the moe_ffn op; runtime/cpu/MoE.cpp is the CPU's).
// Four kernels: the router's product (moeRouter), the routing (moeRoute: each
// row's softmax and top k, then the chosen (row, expert) pairs' slots in
// expert order, a counting sort), each active expert's gate|up and down
// products over all the rows routed to it (moeGateUp, moeDown: a block an
// active expert and 8 of its features, the expert's rows in tiles of
// kMoeRowTile, so its weights are read once a tile), and the rows' sums of
// their experts' outputs, weighted, in the order chosen (moeCombine). The
// scratch (CudaLowering.h's moeScratchLayout) is in the workspace: probs
// [R][E] f32, weights [R][K] f32, meta i32 (the active experts' count, the
// active experts, each expert's first slot [E + 1]), chosen, slotOf, rowOf
// [R*K] i32, hidden [R*K][F] f32, out [R*K][H] f32. Weights of any type
// matvec reads (MvFormat: f32, bf16, f16, int8, int4), each stack its own;
// a stack's scales and minimums are its rows' (row e * features + j).

inline constexpr int kMoeRowTile = 8, kMoeWarps = 8;

/// Whether the products read W in MvFormat's 16-byte runs: rows of whole
/// SUBs (else, float types only, one element a lane at a time).
template <class W, int K> inline constexpr bool kMoeRuns = K % MvFormat<W, K>::SUB == 0;

/// A run's share of a product from the dot product of its decoded elements
/// with x's (and, for int4's minimums, the sum of those x): the SCALED
/// runs' finish (their scale; int4's minimums), else the dot product.
template <class W, int K>
__device__ __forceinline__ float moeFinish(const typename MvFormat<W, K>::Run &run, float dot,
                                           float sum) {
  if constexpr (MvFormat<W, K>::SCALED)
    return run.finish(dot, sum);
  else
    return dot;
}

/// Rows (slots) [first, first + n) of x (through `rowOf`, or the slots'
/// own rows where rowOf is null) times row j0 of w0 (and row j1 of w1 where
/// TWO), in tiles of kMoeRowTile rows, each run of weights loaded and
/// decoded once for the tile: fn(slot, sum0, sum1) on each warp's lane 0
/// with its warp's sums. LANES threads share a row's runs, thread `lane`
/// taking every LANES-th from its own (a warp: 32; a block: its threads,
/// whose warps' sums the caller adds).
template <class W, int K, bool TWO, int LANES = 32, class F>
__device__ __forceinline__ void moeRows(const float *x, const int *rowOf, int first, int n,
                                        const MvWeights &w0, long long j0, const MvWeights &w1,
                                        long long j1, int lane, F &&fn) {
  using Fmt = MvFormat<W, K>;
  constexpr int T = kMoeRowTile, SUB = Fmt::SUB, RUN = Fmt::RUN;
  constexpr int RUNS = (K + RUN - 1) / RUN; // int4: the last may be half a group
  for (int t = 0; t < n; t += T) {
    const int m = n - t < T ? n - t : T;
    const float *xr[T];
    float s0[T], s1[T];
#pragma unroll
    for (int r = 0; r < T; ++r) {
      const int slot = first + t + (r < m ? r : 0);
      xr[r] = x + (long long)(rowOf ? rowOf[slot] : slot) * K;
      s0[r] = s1[r] = 0.0f;
    }
    if constexpr (kMoeRuns<W, K>) {
      for (int c = lane; c < RUNS; c += LANES) {
        typename Fmt::Run r0, r1;
        r0.load(w0, j0, c);
        if constexpr (TWO) r1.load(w1, j1, c);
#pragma unroll
        for (int sub = 0; sub < RUN / SUB; ++sub) {
          const int e0 = c * RUN + sub * SUB;
          if (e0 >= K) break; // past a row that ends in half a group
          float v0[SUB], v1[SUB];
          r0.decode(sub, v0);
          if constexpr (TWO) r1.decode(sub, v1);
#pragma unroll
          for (int r = 0; r < T; ++r) {
            if (r >= m) break;
            float xv[SUB], d0 = 0.0f, d1 = 0.0f, sx = 0.0f; // x loaded once for both rows
            loadRun<SUB>(xr[r] + e0, xv);
#pragma unroll
            for (int i = 0; i < SUB; ++i) {
              d0 += v0[i] * xv[i];
              if constexpr (TWO) d1 += v1[i] * xv[i];
              if constexpr (Fmt::MINS) sx += xv[i];
            }
            s0[r] += moeFinish<W, K>(r0, d0, sx);
            if constexpr (TWO) s1[r] += moeFinish<W, K>(r1, d1, sx);
          }
        }
      }
    } else {
      static_assert(!Fmt::SCALED, "int8 and int4 rows are whole runs of 16 codes");
      const W *p0 = reinterpret_cast<const W *>(w0.data) + j0 * K;
      const W *p1 = reinterpret_cast<const W *>(w1.data) + j1 * K;
      for (int c = lane; c < K; c += LANES) {
        const float v0 = ld(p0[c]), v1 = TWO ? ld(p1[c]) : 0.0f;
#pragma unroll
        for (int r = 0; r < T; ++r) {
          if (r >= m) break;
          s0[r] += v0 * xr[r][c];
          if constexpr (TWO) s1[r] += v1 * xr[r][c];
        }
      }
    }
#pragma unroll
    for (int r = 0; r < T; ++r) {
      if (r >= m) break; // m is the warp's: every lane takes the same branch
      const float a0 = warpSum(s0[r]), a1 = TWO ? warpSum(s1[r]) : 0.0f;
      if (lane % 32 == 0) fn(first + t + r, a0, a1);
    }
  }
}

/// A stack's weights from p[d] and its scales and minimums at p[s], p[s + 1]
/// (for the float types, unread).
__device__ __forceinline__ MvWeights moeWeights(const KvArgs &a, int d, int s) {
  return {a.p[d], reinterpret_cast<const float *>(a.p[s]),
          reinterpret_cast<const float *>(a.p[s + 1])};
}

/// logits[r][e] = x[r] . router[e]: a block (kMoeWarps warps) an expert e
/// and row r, grid (E, rows), its warps splitting the row's runs and their
/// sums added in warp order, so that a decode step's small product (E rows)
/// has as many loads in flight as its weights have runs. Where GATED, the
/// grid is (E + 1, rows) and blocks E write the shared expert's gate
/// logit, gates[r] = x[r] . gate (its one row, of type G).
/// p: x (f32, rows x K), router (W, E x K), logits (f32, rows x E), the
/// router's scales, minimums; the gate (G, 1 x K), its scales, minimums,
/// gates (f32, rows).
template <class W, int K, int E, bool GATED = false, class G = W>
__device__ void moeRouter(const KvArgs &a) {
  constexpr int THREADS = kMoeWarps * 32;
  __shared__ float sums[kMoeWarps];
  const int e = blockIdx.x, r = blockIdx.y, tid = threadIdx.x;
  const float *x = reinterpret_cast<const float *>(a.p[0]);
  auto keep = [&](int, float s, float) { sums[tid / 32] = s; };
  if (e < E) {
    const MvWeights w = moeWeights(a, 1, 3);
    moeRows<W, K, false, THREADS>(x, nullptr, r, 1, w, e, w, e, tid, keep);
  } else if constexpr (GATED) {
    const MvWeights g = moeWeights(a, 5, 6);
    moeRows<G, K, false, THREADS>(x, nullptr, r, 1, g, 0, g, 0, tid, keep);
  }
  __syncthreads();
  if (tid != 0) return;
  float s = 0.0f;
#pragma unroll
  for (int i = 0; i < kMoeWarps; ++i) s += sums[i];
  if (e < E) reinterpret_cast<float *>(a.p[2])[(long long)r * E + e] = s;
  else reinterpret_cast<float *>(a.p[8])[r] = s;
}

/// Row p's softmax in place and its K experts, largest first (the lower
/// index among equals), with their weights (renormalized where NORM), by
/// one warp: in the CPU runtime's arithmetic (chooseExperts: the sums in
/// double), each lane holding every 32nd expert, each choice a warp's
/// argmax over the experts not chosen yet.
template <int E, int K, bool NORM>
__device__ void moeChoose(float *p, int *chosen, float *weights, int lane) {
  float top = -INFINITY;
  for (int e = lane; e < E; e += 32) top = fmaxf(top, p[e]);
  top = warpMax(top);
  double sum = 0.0;
  for (int e = lane; e < E; e += 32) sum += (p[e] = expf(p[e] - top));
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  for (int e = lane; e < E; e += 32) p[e] = (float)(p[e] / sum);
  double chosenSum = 0.0;
  for (int j = 0; j < K; ++j) {
    float best = 0.0f;
    int at = E; // none yet
    for (int e = lane; e < E; e += 32) {
      bool taken = false;
      for (int i = 0; i < j; ++i) taken = taken || chosen[i] == e;
      if (!taken && (at == E || p[e] > best)) {
        best = p[e];
        at = e;
      }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float ob = __shfl_xor_sync(0xffffffffu, best, o);
      const int oa = __shfl_xor_sync(0xffffffffu, at, o);
      if (oa != E && (at == E || ob > best || (ob == best && oa < at))) {
        best = ob;
        at = oa;
      }
    }
    if (lane == 0) {
      chosen[j] = at;
      weights[j] = best;
    }
    chosenSum += best;
    __syncwarp(); // chosen[j] seen by every lane
  }
  if (NORM && chosenSum > 0)
    for (int j = lane; j < K; j += 32) weights[j] = (float)(weights[j] / chosenSum);
}

/// One block: each row's experts (a warp a row; p[0]'s logits become
/// probabilities), then each expert's slots, in row order, and the active
/// experts.  p: probs, weights, meta, chosen, slotOf, rowOf.  i[0]: rows.
template <int E, int K, bool NORM, int BLOCK> __device__ void moeRoute(const KvArgs &a) {
  static_assert(E <= 4096, "the experts' counts in shared memory");
  __shared__ int count[E];
  const int rows = (int)a.i[0], tid = threadIdx.x;
  float *probs = reinterpret_cast<float *>(a.p[0]);
  int *meta = reinterpret_cast<int *>(a.p[2]), *chosen = reinterpret_cast<int *>(a.p[3]);
  int *active = meta + 1, *firsts = meta + 1 + E;
  for (int r = tid / 32; r < rows; r += BLOCK / 32)
    moeChoose<E, K, NORM>(probs + (long long)r * E, chosen + r * K,
                          reinterpret_cast<float *>(a.p[1]) + r * K, tid % 32);
  __syncthreads();
  for (int e = tid; e < E; e += BLOCK) {
    int n = 0;
    for (int i = 0; i < rows * K; ++i) n += chosen[i] == e;
    count[e] = n;
  }
  __syncthreads();
  if (tid == 0) {
    int slot = 0, n = 0;
    for (int e = 0; e < E; ++e) {
      firsts[e] = slot;
      slot += count[e];
      if (count[e] > 0) active[n++] = e;
    }
    firsts[E] = slot;
    meta[0] = n;
  }
  __syncthreads();
  int *slotOf = reinterpret_cast<int *>(a.p[4]), *rowOf = reinterpret_cast<int *>(a.p[5]);
  for (int e = tid; e < E; e += BLOCK) {
    int slot = firsts[e];
    for (int i = 0; i < rows * K && slot < firsts[e + 1]; ++i)
      if (chosen[i] == e) {
        slotOf[i] = slot;
        rowOf[slot++] = i / K;
      }
  }
}

/// The active expert of block y (its first slot and its rows), or false
/// where the call has fewer active experts. meta as moeRoute writes it.
template <int E>
__device__ __forceinline__ bool moeExpert(const int *meta, int &e, int &first, int &n) {
  const int at = blockIdx.y;
  if (at >= meta[0]) return false;
  e = meta[1 + at];
  first = meta[1 + E + e];
  n = meta[1 + E + e + 1] - first;
  return true;
}

/// hidden[slot][j] = act(x[row] . gate[e][j]) * (x[row] . up[e][j]) for
/// each slot of active expert blockIdx.y: a warp a feature j.
/// p: x (f32, rows x H), gate, up (W, E x F x H), meta, rowOf, hidden,
/// gate's scales and minimums, up's.
template <class W, int H, int F, int E, bool GELU> __device__ void moeGateUp(const KvArgs &a) {
  const int lane = threadIdx.x % 32, j = blockIdx.x * kMoeWarps + threadIdx.x / 32;
  int e, first, n;
  if (j >= F || !moeExpert<E>(reinterpret_cast<const int *>(a.p[3]), e, first, n)) return;
  const long long row = (long long)e * F + j;
  float *hidden = reinterpret_cast<float *>(a.p[5]);
  moeRows<W, H, true>(reinterpret_cast<const float *>(a.p[0]),
                      reinterpret_cast<const int *>(a.p[4]), first, n, moeWeights(a, 1, 6), row,
                      moeWeights(a, 2, 8), row, lane, [&](int slot, float g, float u) {
                        hidden[(long long)slot * F + j] = gateAct<GELU>(g) * u;
                      });
}

/// out[slot][c] = hidden[slot] . down[e][c] for each slot of active expert
/// blockIdx.y: a warp a feature c.
/// p: hidden (f32, slots x F), down (W, E x H x F), meta, out (f32, slots x
/// H), down's scales and minimums.
template <class W, int H, int F, int E> __device__ void moeDown(const KvArgs &a) {
  const int lane = threadIdx.x % 32, c = blockIdx.x * kMoeWarps + threadIdx.x / 32;
  int e, first, n;
  if (c >= H || !moeExpert<E>(reinterpret_cast<const int *>(a.p[2]), e, first, n)) return;
  float *out = reinterpret_cast<float *>(a.p[3]);
  const MvWeights down = moeWeights(a, 1, 4);
  const long long row = (long long)e * H + c;
  moeRows<W, F, false>(reinterpret_cast<const float *>(a.p[0]), nullptr, first, n, down, row,
                       down, row, lane,
                       [&](int slot, float y, float) { out[(long long)slot * H + c] = y; });
}

/// result[r][c] = sum over j < K of weights[r][j] * out[slotOf[r K + j]][c],
/// in the order chosen; then, with SHARED, + shared[r][c], times
/// sigmoid(gates[r]) where SHARED is 2 (a gated shared expert).
/// p: weights, slotOf, out (f32, slots x H), result, shared (f32, rows x
/// H), gates (f32, rows).
template <class O, int H, int K, int SHARED> __device__ void moeCombine(const KvArgs &a) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= H) return;
  const long long r = blockIdx.y;
  const float *weights = reinterpret_cast<const float *>(a.p[0]) + r * K;
  const int *slotOf = reinterpret_cast<const int *>(a.p[1]) + r * K;
  const float *out = reinterpret_cast<const float *>(a.p[2]);
  float s = 0.0f;
#pragma unroll
  for (int j = 0; j < K; ++j) s += weights[j] * out[(long long)slotOf[j] * H + c];
  if (SHARED > 0) {
    const float g =
        SHARED == 2 ? 1.0f / (1.0f + expf(-reinterpret_cast<const float *>(a.p[5])[r])) : 1.0f;
    s += g * reinterpret_cast<const float *>(a.p[4])[r * H + c];
  }
  reinterpret_cast<O *>(a.p[3])[r * H + c] = st<O>(s);
}

// ---------------------------------------------------------------------------
// RoPE and the KV cache. The cache is [layers][2][pages][kv_heads][page_size]
// [head_dim]; a row's page comes from its page-table row (tableStride 0: all
// rows share row 0, as a prefill chunk does).

template <class C, int KVH, int HD, int PS, long long PAGES>
__device__ __forceinline__ long long cacheOffset(long long layer, int kv, int page, int head,
                                                 int slot) {
  return ((((layer * 2 + kv) * PAGES + page) * KVH + head) * PS + slot) * (long long)HD;
}

/// The RoPE cos/sin table (a rotating kernel's last pointer): [max_seq_len]
/// [HD / 2] pairs (cos, sin) of pos * freq_i, computed once on the host at
/// load as the CPU runtime computes them (in double, rounded to f32), so the
/// device rotates by the same floats. Its row for position pos (>= 0).
template <int HD> __device__ __forceinline__ const float2 *ropeCosSin(const char *table, int pos) {
  return reinterpret_cast<const float2 *>(table) + (long long)pos * (HD / 2);
}
/// (a, b) rotated by the angle whose (cos, sin) is cs.
__device__ __forceinline__ void ropeRotate(float &a, float &b, float2 cs) {
  const float ra = a * cs.x - b * cs.y, rb = a * cs.y + b * cs.x;
  a = ra;
  b = rb;
}

/// Rotates adjacent pairs of every head of one row by the table's angles
/// for pos, or copies the row when pos is negative.
template <int COLS, int HD>
__device__ __forceinline__ void ropeRow(const float *x, float *out, int pos, const char *table) {
  const float2 *cs = pos < 0 ? nullptr : ropeCosSin<HD>(table, pos);
  for (int idx = threadIdx.x; idx < COLS / 2; idx += blockDim.x) {
    const int h = idx / (HD / 2), i = idx % (HD / 2);
    float a0 = x[h * HD + 2 * i], b0 = x[h * HD + 2 * i + 1];
    if (pos >= 0) ropeRotate(a0, b0, cs[i]);
    out[h * HD + 2 * i] = a0;
    out[h * HD + 2 * i + 1] = b0;
  }
}

/// p: x, positions, out, cos/sin table.
template <int COLS, int HD> __device__ void rope(const KvArgs &a) {
  const int r = blockIdx.x;
  const int pos = reinterpret_cast<const int *>(a.p[1])[r];
  ropeRow<COLS, HD>(reinterpret_cast<const float *>(a.p[0]) + (long long)r * COLS,
                    reinterpret_cast<float *>(a.p[2]) + (long long)r * COLS, pos, a.p[3]);
}

/// Writes one row's keys (rotated when ROPE, by the cos/sin table's row for
/// pos) and values into the cache.
template <class C, int KVH, int HD, int PS, long long PAGES, bool ROPE>
__device__ __forceinline__ void cacheWriteRow(const float *k, const float *v, C *cache,
                                              long long layer, int pos, int page,
                                              const char *table) {
  const int slot = pos % PS;
  for (int idx = threadIdx.x; idx < KVH * HD / 2; idx += blockDim.x) {
    const int h = idx / (HD / 2), i = idx % (HD / 2);
    float a0 = k[h * HD + 2 * i], b0 = k[h * HD + 2 * i + 1];
    if (ROPE) ropeRotate(a0, b0, ropeCosSin<HD>(table, pos)[i]);
    C *dst = cache + cacheOffset<C, KVH, HD, PS, PAGES>(layer, 0, page, h, slot);
    dst[2 * i] = st<C>(a0);
    dst[2 * i + 1] = st<C>(b0);
  }
  for (int idx = threadIdx.x; idx < KVH * HD; idx += blockDim.x) {
    const int h = idx / HD, d = idx % HD;
    cache[cacheOffset<C, KVH, HD, PS, PAGES>(layer, 1, page, h, slot) + d] = st<C>(v[idx]);
  }
}

/// p: keys, values, cache, positions, page table.  i: -, layer, table stride.
template <class C, int KVH, int HD, int PS, long long PAGES>
__device__ void kvWrite(const KvArgs &a) {
  const int r = blockIdx.x;
  const int pos = reinterpret_cast<const int *>(a.p[3])[r];
  if (pos < 0) return;
  const int page = reinterpret_cast<const int *>(a.p[4])[r * a.i[2] + pos / PS];
  cacheWriteRow<C, KVH, HD, PS, PAGES, false>(
      reinterpret_cast<const float *>(a.p[0]) + (long long)r * KVH * HD,
      reinterpret_cast<const float *>(a.p[1]) + (long long)r * KVH * HD,
      reinterpret_cast<C *>(a.p[2]), a.i[1], pos, page, nullptr);
}

/// RoPE on q and k fused with the cache write of k and v, one row per block.
/// p: q, k, v, q out, cache, positions, page table, cos/sin table.
/// i: -, layer, page-table stride. QS and KS: the row strides of q, and of
/// k and v, in floats (packed rows of a fused QKV product: both QCOLS + 2
/// KVH HD, with k and v pointing into them).
template <class C, int QCOLS, int KVH, int HD, int PS, long long PAGES, int QS, int KS>
__device__ void ropeQkvWrite(const KvArgs &a) {
  const int r = blockIdx.x;
  const int pos = reinterpret_cast<const int *>(a.p[5])[r];
  ropeRow<QCOLS, HD>(reinterpret_cast<const float *>(a.p[0]) + (long long)r * QS,
                     reinterpret_cast<float *>(a.p[3]) + (long long)r * QCOLS, pos, a.p[7]);
  if (pos < 0) return;
  const int page = reinterpret_cast<const int *>(a.p[6])[r * a.i[2] + pos / PS];
  cacheWriteRow<C, KVH, HD, PS, PAGES, true>(
      reinterpret_cast<const float *>(a.p[1]) + (long long)r * KS,
      reinterpret_cast<const float *>(a.p[2]) + (long long)r * KS,
      reinterpret_cast<C *>(a.p[4]), a.i[1], pos, page, a.p[7]);
}

/// ropeQkvWrite with Qwen3's q/k norms first: each query and key head of
/// the row scaled by 1 / rms(head) and its norm's weight (as headRmsNorm),
/// then rotated; one row per block of BLOCK threads, a warp per head for the
/// sums.  p: q, k, v, q out, cache, positions, page table, cos/sin table,
/// q norm, k norm.  i: -, layer, page-table stride.  d: eps.
template <class C, class W, int QCOLS, int KVH, int HD, int PS, long long PAGES, int QS, int KS,
          int BLOCK>
__device__ void ropeNormQkvWrite(const KvArgs &a) {
  constexpr int QH = QCOLS / HD, HEADS = QH + KVH;
  static_assert(QCOLS % HD == 0 && HD % 2 == 0 && BLOCK % 32 == 0, "whole heads of pairs");
  __shared__ float inv[HEADS];
  const int r = blockIdx.x, lane = threadIdx.x % 32;
  const float *q = reinterpret_cast<const float *>(a.p[0]) + (long long)r * QS;
  const float *k = reinterpret_cast<const float *>(a.p[1]) + (long long)r * KS;
  for (int h = threadIdx.x / 32; h < HEADS; h += BLOCK / 32) {
    const float *x = h < QH ? q + h * HD : k + (h - QH) * HD;
    float ss = 0;
    for (int d = lane; d < HD; d += 32) ss += x[d] * x[d];
    ss = warpSum(ss);
    if (lane == 0) inv[h] = rmsInv(ss, HD, a.d[0]);
  }
  __syncthreads();
  const int pos = reinterpret_cast<const int *>(a.p[5])[r];
  const W *qw = reinterpret_cast<const W *>(a.p[8]), *kw = reinterpret_cast<const W *>(a.p[9]);
  float *qout = reinterpret_cast<float *>(a.p[3]) + (long long)r * QCOLS;
  for (int idx = threadIdx.x; idx < QCOLS / 2; idx += BLOCK) {
    const int h = idx / (HD / 2), i = idx % (HD / 2);
    float a0 = q[h * HD + 2 * i] * inv[h] * ld(qw[2 * i]);
    float b0 = q[h * HD + 2 * i + 1] * inv[h] * ld(qw[2 * i + 1]);
    if (pos >= 0) ropeRotate(a0, b0, ropeCosSin<HD>(a.p[7], pos)[i]);
    qout[h * HD + 2 * i] = a0;
    qout[h * HD + 2 * i + 1] = b0;
  }
  if (pos < 0) return;
  const int page = reinterpret_cast<const int *>(a.p[6])[r * a.i[2] + pos / PS];
  const float *v = reinterpret_cast<const float *>(a.p[2]) + (long long)r * KS;
  C *cache = reinterpret_cast<C *>(a.p[4]);
  const int slot = pos % PS;
  for (int idx = threadIdx.x; idx < KVH * HD / 2; idx += BLOCK) {
    const int h = idx / (HD / 2), i = idx % (HD / 2);
    float a0 = k[h * HD + 2 * i] * inv[QH + h] * ld(kw[2 * i]);
    float b0 = k[h * HD + 2 * i + 1] * inv[QH + h] * ld(kw[2 * i + 1]);
    ropeRotate(a0, b0, ropeCosSin<HD>(a.p[7], pos)[i]);
    C *dst = cache + cacheOffset<C, KVH, HD, PS, PAGES>(a.i[1], 0, page, h, slot);
    dst[2 * i] = st<C>(a0);
    dst[2 * i + 1] = st<C>(b0);
  }
  for (int idx = threadIdx.x; idx < KVH * HD; idx += BLOCK) {
    const int h = idx / HD, d = idx % HD;
    cache[cacheOffset<C, KVH, HD, PS, PAGES>(a.i[1], 1, page, h, slot) + d] = st<C>(v[idx]);
  }
}

/// Row r's position and the (cos, sin) that rotate feature pair (j, j + 1)
/// of a QKV product there: the table's for a query or key pair at a position
/// >= 0 (values and padding rows are not rotated).
struct RopeAngle {
  int pos;
  float2 cs;
};
template <int QCOLS, int KVH, int HD>
__device__ __forceinline__ RopeAngle ropeAngle(const KvArgs &a, int r, int j) {
  const int pos = reinterpret_cast<const int *>(a.p[7])[r];
  float2 cs = float2{1.0f, 0.0f};
  if (j < QCOLS + KVH * HD && pos >= 0) cs = ropeCosSin<HD>(a.p[8], pos)[(j % HD) / 2];
  return {pos, cs};
}

/// One lane's end of llm.matvec_rope_kv_write for row r: the pair of
/// features (j, j + 1) of the QKV product, y, rotated by its angle (a query
/// or key pair; ropeAngle); queries go to q out (f32), keys and values into
/// the cache at the row's position. A row at a negative position (padding)
/// keeps its queries unrotated and writes no cache.
template <class C, int QCOLS, int KVH, int HD, int PS, long long PAGES>
__device__ __forceinline__ void ropeKvStorePair(const KvArgs &a, int r, int j,
                                                const float (&y)[2], RopeAngle angle) {
  constexpr int KVC = KVH * HD;
  const int pos = angle.pos;
  float y0 = y[0], y1 = y[1];
  if (j < QCOLS + KVC && pos >= 0) ropeRotate(y0, y1, angle.cs);
  if (j < QCOLS) {
    float *q = reinterpret_cast<float *>(a.p[5]) + (long long)r * QCOLS + j;
    q[0] = y0;
    q[1] = y1;
    return;
  }
  if (pos < 0) return;
  const int kv = j < QCOLS + KVC ? 0 : 1, f = j - QCOLS - kv * KVC;
  const int page = reinterpret_cast<const int *>(a.p[3])[r * a.i[2] + pos / PS];
  C *dst = reinterpret_cast<C *>(a.p[6]) +
           cacheOffset<C, KVH, HD, PS, PAGES>(a.i[1], kv, page, f / HD, pos % PS) + f % HD;
  dst[0] = st<C>(y0);
  dst[1] = st<C>(y1);
}

/// llm.matvec_rope_kv_write: matvec of a fused QKV weight (QCOLS query
/// columns, then KVH * HD of keys and of values), with the norm and bias of
/// matvec, whose warp computes PPW RoPE pairs (j, j + 1), ... from j = 2 *
/// PPW * (b * WARPS + w), for every row (2 PPW weight rows, read as matvec
/// reads them; PPW > 1 uses each load of x for more rows, as matvec's FPW),
/// and stores each as ropeKvStorePair says: the rotated queries, and the
/// rotated keys and the values straight into the cache; lane q stores pair
/// q (every lane holds the sums), so the epilogue's loads and stores run side
/// by side. p: x (X, rows x K), weights (W), nw, page table, bias, q out,
/// cache, positions, cos/sin table.  i[0]:
/// rows, i[1]: layer, i[2]: table stride; int8 and int4: i[3], i[4]: the
/// scales' and minimums' bytes from p[1].  d[0]: eps.
template <class W, class X, class NW, class B, class C, int K, int QCOLS, int KVH, int HD, int PS,
          long long PAGES, int WARPS, int PPW, int R, int FLAGS>
__device__ void matvecRopeKv(const KvArgs &a) {
  constexpr bool NORM = FLAGS & kMvNorm, BIAS = FLAGS & kMvBias;
  constexpr int PAIRS = (QCOLS + 2 * KVH * HD) / 2, G = 2 * PPW;
  static_assert(PAIRS % PPW == 0, "a warp's pairs are all there");
  static_assert(K % MvFormat<W, K>::SUB == 0 && (sizeof(X) == 4 || MvFormat<W, K>::SUB == 8),
                "whole runs of weights; 16-bit x runs of 8");
  static_assert(HD % 2 == 0 && QCOLS % HD == 0, "whole heads of pairs");
  static_assert(!(FLAGS & (kMvSwiglu | kMvAdd)), "RoPE and the cache write are the epilogue");
  const int jp = (blockIdx.x * WARPS + threadIdx.x / 32) * PPW, lane = threadIdx.x % 32;
  const int j = 2 * jp;
  const MvWeights w = mvWeights<W, K>(a, 3);
  mvPrefetch<W, K, G, G>(w, j, 0, jp < PAIRS, lane);
  if (jp >= PAIRS) return; // the whole warp: it holds no block barrier
  constexpr int U = kMvUnroll<G, PAIRS / PPW>; // as matvec's
  typename MvFormat<W, K>::Run run[U][G];
  mvLoadRuns<W, K, G, G, U>(w, j, 0, lane, run);
  pdlWait();
  const int rows = (int)a.i[0];
  // One row (the batch-1 step): lane q's angle is loaded before the weight
  // stream, its latency hidden under it, not after the sums.
  RopeAngle early{0, float2{1.0f, 0.0f}};
  if (R == 1 && lane < PPW) early = ropeAngle<QCOLS, KVH, HD>(a, 0, j + 2 * lane);
  float acc[G][R], ss[R];
  mvAccumulate<W, X, NW, K, G, G, R, NORM, U>(reinterpret_cast<const X *>(a.p[0]), w, j, 0,
                                              reinterpret_cast<const NW *>(a.p[2]), rows, lane,
                                              run, acc, ss);
#pragma unroll
  for (int r = 0; r < R; ++r) {
    if (r >= rows) break;
    float y[G];
    mvFinish<B, K, G, G, R, NORM, BIAS>(a, acc, ss, r, j, 0, y);
#pragma unroll
    for (int q = 0; q < PPW; ++q) {
      if (lane != q % 32) continue;
      const float pair[2] = {y[2 * q], y[2 * q + 1]};
      const RopeAngle angle =
          R == 1 && q < 32 ? early : ropeAngle<QCOLS, KVH, HD>(a, r, j + 2 * q);
      ropeKvStorePair<C, QCOLS, KVH, HD, PS, PAGES>(a, r, j + 2 * q, pair, angle);
    }
  }
}

/// llm.matvec_rope_kv_write on tensor cores, for bf16, int8 or int4 weights
/// (W) and 2 to 32 rows (decode at a batch, a short prefill chunk), its
/// products as matvecMma's: block b makes the RoPE pairs 8b..8b+7 for every
/// row (in mvTilesOf(FLAGS) tiles of 8), A's row g feature 16b + 2g and row
/// g + 8 feature 16b + 2g + 1, so that a pair's sums lie side by side for
/// its epilogue (ropeKvStorePair), one thread a pair and row of the tile.
/// p, i, d: matvecRopeKv's.
template <class W, class X, class NW, class B, class C, int K, int QCOLS, int KVH, int HD, int PS,
          long long PAGES, int WARPS, int FLAGS>
__device__ void matvecRopeKvMma(const KvArgs &a) {
  constexpr bool NORM = FLAGS & kMvNorm, BIAS = FLAGS & kMvBias;
  constexpr int F = QCOLS + 2 * KVH * HD, NT = mvTilesOf(FLAGS);
  static_assert(HD % 2 == 0 && QCOLS % HD == 0, "whole heads of pairs");
  static_assert(!(FLAGS & (kMvSwiglu | kMvAdd)), "RoPE and the cache write are the epilogue");
  __shared__ MmaSums<WARPS, 1> sums;
  const int g = threadIdx.x % 32 / 4, j0 = blockIdx.x * kMmaFeatures;
  long long row[1][2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int j = j0 + 2 * g + h;
    row[0][h] = j < F ? j : 0; // past the weight: left
  }
  const int rows = (int)a.i[0];
  // Tile n's outputs, thread o: pair o / 8 of the block, row 8n + o % 8.
  const auto epilogue = [&](int n) {
    for (int o = threadIdx.x; o < kMmaFeatures / 2 * 8; o += WARPS * 32) {
      const int q = o / 8, r = o % 8, j = j0 + 2 * q;
      if (8 * n + r >= rows || j >= F) continue;
      const float inv = sums.template inv<K, NORM>(r, a.d[0]);
      float y[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        y[h] = sums.sum(0, q + 8 * h, r) * inv;
        if (BIAS) y[h] += ld(reinterpret_cast<const B *>(a.p[4])[j + h]);
      }
      ropeKvStorePair<C, QCOLS, KVH, HD, PS, PAGES>(a, 8 * n + r, j, y,
                                                    ropeAngle<QCOLS, KVH, HD>(a, 8 * n + r, j));
    }
  };
  mmaProducts<W, X, NW, K, WARPS, 1, NORM, NT, 3>(a, row, sums, [] {}, epilogue);
}

// ---------------------------------------------------------------------------
// Attention over the cache, flash-decoding style. Block (kv head, row,
// split) covers one run of the row's keys for the G = H / KVH query heads
// that share the kv head (each key and value is loaded once for all of
// them); the row's pos + 1 keys are cut into `splits` runs of equal length
// at every call, so that every split has work at any context. In the block,
// L lanes share a key: each loads E elements of it in one load (16 bytes:
// 8 of a 2-byte type, 4 of f32), so a warp reads 32 / L keys at once,
// contiguously within a page; each group of L lanes (a key slot) walks its
// keys with its own running softmax and output, and the slots are merged at
// the end, in a fixed order. It leaves an unnormalised partial output, its
// maximum and its sum; the last of a row's splits to finish merges the
// splits with their log-sum-exp weights (attnMerged), in the same kernel.

/// How the lanes of a warp share the keys of head_dim HD in type C.
template <class C, int HD> struct AttnLanes {
  static constexpr int E = HD % (16 / (int)sizeof(C)) == 0 ? 16 / (int)sizeof(C) : 1;
  static constexpr int CH = HD / E; // loads per key
  static constexpr int L = CH >= 32 ? 32 : CH > 8 ? (CH > 16 ? 32 : 16) : CH > 4 ? 8 : CH > 2 ? 4 : CH;
  static constexpr int PER = (CH + L - 1) / L; // loads per lane
  static constexpr int D = PER * E;            // elements per lane
  static constexpr int KPW = 32 / L;           // keys a warp reads at once
};

/// Whether a row at position pos reads the key at t: t <= pos, and with a
/// sliding window W (0: none) t > pos - W, the window's last W keys.
template <int W> __device__ __forceinline__ bool attnSees(int t, int pos) {
  if constexpr (W == 0) return t <= pos;
  else return unsigned(pos - t) < unsigned(W);
}

/// The first key a row at position pos reads (attnSees).
template <int W> __device__ __forceinline__ int attnFirstKey(int pos) {
  if constexpr (W == 0) return 0;
  else return pos >= W ? pos - W + 1 : 0;
}

/// Keys a split of a row at position pos covers: ceil((pos + 1) / splits),
/// and MIN at least (attnPartial: one round of its block's loads). A shorter
/// split reads no faster, since each slot waits one memory latency for its
/// first keys however few, but leaves more splits to merge: the first H200
/// run (stop 45) timed batch 1's attention at 17 us a layer alone at 576
/// keys, 32 splits of 18; at least one round (64 keys there, 10 splits)
/// took it to 14.8 and the decode step from 1.13 to 1.11 ms, two rounds
/// (128 keys, 5 splits) made the step 1.18 ms.
template <int MIN> __device__ __forceinline__ int attnSpan(int pos, int splits) {
  const int span = (pos + splits) / splits;
  return span > MIN ? span : MIN;
}

template <int E, class C> __device__ __forceinline__ void attnLoad(const C *p, float *out) {
  if constexpr (E == 1) out[0] = ld(p[0]);
  else loadElems<E>(p, out);
}

/// Keys a slot of attnWalk loads before it uses any: 4, 2 where 5 or more
/// query heads share the KV head (their outputs take the registers).
template <int G> inline constexpr int kAttnUnroll = G <= 4 ? 4 : 2;

/// Gemma 2's soft-capping of a scaled attention score: cap x tanh(s / cap);
/// cap 0 (every kernel without CAP): the score as it is.
__device__ __forceinline__ float attnSoftcap(float s, float cap) {
  return cap > 0.0f ? cap * tanhf(s / cap) : s;
}

/// A key slot's step of attnWalk for one key (`valid`: within the split):
/// its lanes' runs of the key (kv) and value (vv), the G scores summed over
/// the slot's L lanes, then the running softmax (m, l) and output acc. Every
/// lane of the warp calls it (the sums are warp shuffles).
template <class C, int G, int HD>
__device__ __forceinline__ void attnKey(const float (&kv)[AttnLanes<C, HD>::D],
                                        const float (&vv)[AttnLanes<C, HD>::D], bool valid,
                                        const float (*qs)[HD], int sub, float cap,
                                        float (&m)[G], float (&l)[G],
                                        float (&acc)[G][AttnLanes<C, HD>::D]) {
  using Ln = AttnLanes<C, HD>;
  constexpr int E = Ln::E, L = Ln::L, D = Ln::D;
  float dot[G];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    dot[g] = 0.0f;
#pragma unroll
    for (int i = 0; i < Ln::PER; ++i) {
      const int c = sub + i * L;
      if (valid && c < Ln::CH)
#pragma unroll
        for (int e = 0; e < E; ++e) dot[g] += qs[g][c * E + e] * kv[i * E + e];
    }
#pragma unroll
    for (int o = L / 2; o > 0; o /= 2) dot[g] += __shfl_xor_sync(0xffffffffu, dot[g], o);
    dot[g] = attnSoftcap(dot[g], cap);
  }
  if (!valid) return;
#pragma unroll
  for (int g = 0; g < G; ++g) {
    const float mNew = fmaxf(m[g], dot[g]);
    const float alpha = expf(m[g] - mNew), p = expf(dot[g] - mNew);
    l[g] = l[g] * alpha + p;
    m[g] = mNew;
#pragma unroll
    for (int d = 0; d < D; ++d) acc[g][d] = acc[g][d] * alpha + p * vv[d];
  }
}

/// Where a key slot's keys t0, t0 + stride, ... (kAttnUnroll of them, those
/// before end) lie in the layer's keys and values (their pages' entries).
template <int G, int KVH, int HD, int PS>
__device__ __forceinline__ void attnPages(const int *table, int t0, int stride, int end,
                                          long long (&off)[kAttnUnroll<G>]) {
#pragma unroll
  for (int u = 0; u < kAttnUnroll<G>; ++u) {
    const int t = t0 + u * stride;
    off[u] = t < end ? ((long long)table[t / PS] * KVH * PS + t % PS) * HD : 0;
  }
}

/// A key slot's loads of those keys (attnPages' off) from `from` on: the
/// lane's E-element runs sub, sub + L, ... of each key (kv) and value (vv).
template <class C, int G, int HD>
__device__ __forceinline__ void attnData(const C *keys, const C *values,
                                         const long long (&off)[kAttnUnroll<G>], int t0,
                                         int stride, int end, int sub,
                                         float (&kv)[kAttnUnroll<G>][AttnLanes<C, HD>::D],
                                         float (&vv)[kAttnUnroll<G>][AttnLanes<C, HD>::D],
                                         int from = 0) {
  using Ln = AttnLanes<C, HD>;
#pragma unroll
  for (int u = 0; u < kAttnUnroll<G>; ++u)
    if (t0 + u * stride >= from && t0 + u * stride < end)
#pragma unroll
      for (int i = 0; i < Ln::PER; ++i) {
        const int c = sub + i * Ln::L;
        if (c < Ln::CH) {
          attnLoad<Ln::E>(keys + off[u] + c * Ln::E, kv[u] + i * Ln::E);
          attnLoad<Ln::E>(values + off[u] + c * Ln::E, vv[u] + i * Ln::E);
        }
      }
}

/// A key slot's first keys t0, t0 + stride, ... (kAttnUnroll of them, those
/// before end; attnPages, attnData) for attnPartial: those before `early`
/// loaded before the wait for the kernel before, the rest after it. The
/// kernel before (the QKV product) writes the call's rows' keys, and a
/// sequence's rows in a call are consecutive positions ending at its last,
/// so row r's own keys start no earlier than pos - (rows - 1): earlier
/// calls wrote those before (at batch 1 all but the step's new key).
template <class C, int G, int KVH, int HD, int PS>
__device__ __forceinline__ void attnFirstKeys(const C *keys, const C *values, const int *table,
                                              int t0, int stride, int early, int end, int sub,
                                              float (&kv)[kAttnUnroll<G>][AttnLanes<C, HD>::D],
                                              float (&vv)[kAttnUnroll<G>][AttnLanes<C, HD>::D]) {
  long long off[kAttnUnroll<G>];
  attnPages<G, KVH, HD, PS>(table, t0, stride, end, off);
  attnData<C, G, HD>(keys, values, off, t0, stride, early, sub, kv, vv);
  pdlWait();
  attnData<C, G, HD>(keys, values, off, t0, stride, end, sub, kv, vv, early);
}

/// One key slot's walk over keys t = first, first + stride, ... < end (the
/// warp runs while its first slot's t is within warpSpan of it) into
/// attnKey, kAttnUnroll keys at a time (their pages' entries, then all their
/// keys' and values' loads: attnPages, attnData; then the products), so
/// that a slot waits two memory latencies for them instead of two a key. kv
/// and vv hold the first keys' loads already (the caller's).
template <class C, int G, int KVH, int HD, int PS>
__device__ __forceinline__ void attnWalk(const C *keys, const C *values, const int *table,
                                         const float (*qs)[HD], int first, int stride, int end,
                                         int warpSpan, int sub, float cap,
                                         float (&kv)[kAttnUnroll<G>][AttnLanes<C, HD>::D],
                                         float (&vv)[kAttnUnroll<G>][AttnLanes<C, HD>::D],
                                         float (&m)[G], float (&l)[G],
                                         float (&acc)[G][AttnLanes<C, HD>::D]) {
  constexpr int U = kAttnUnroll<G>;
  for (int t0 = first; t0 - first < warpSpan; t0 += U * stride) {
    if (t0 != first) {
      long long off[U];
      attnPages<G, KVH, HD, PS>(table, t0, stride, end, off);
      attnData<C, G, HD>(keys, values, off, t0, stride, end, sub, kv, vv);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (t0 + u * stride - first >= warpSpan) break; // the warp's: every lane or none
      attnKey<C, G, HD>(kv[u], vv[u], t0 + u * stride < end, qs, sub, cap, m, l, acc);
    }
  }
}

/// The end of attnPartial: the block's key slots merged, each scaled by
/// exp(its max - the block's), summed over the warp's slots by shuffles,
/// then over the warps in order, into the split's unnormalised output and
/// its (max, sum) per query head, for attnMerged. Holds the block's
/// barriers: every thread calls it.
template <class C, int H, int KVH, int HD, int WARPS>
__device__ __forceinline__ void attnMergeSlots(
    const float (&m)[H / KVH], const float (&l)[H / KVH],
    float (&acc)[H / KVH][AttnLanes<C, HD>::D], float (*mS)[H / KVH], float (*lS)[H / KVH],
    float (*red)[H / KVH][HD], float *part, float *ml, int r, int kvh, int splits, int split,
    int slot, int sub) {
  using Ln = AttnLanes<C, HD>;
  constexpr int G = H / KVH, E = Ln::E, L = Ln::L, D = Ln::D, SLOTS = WARPS * Ln::KPW;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  if (sub == 0)
#pragma unroll
    for (int g = 0; g < G; ++g) {
      mS[slot][g] = m[g];
      lS[slot][g] = l[g];
    }
  __syncthreads();
#pragma unroll
  for (int g = 0; g < G; ++g) {
    float mAll = -INFINITY;
    for (int s = 0; s < SLOTS; ++s) mAll = fmaxf(mAll, mS[s][g]);
    const float w = m[g] == -INFINITY ? 0.0f : expf(m[g] - mAll);
#pragma unroll
    for (int d = 0; d < D; ++d) {
      float v = acc[g][d] * w;
#pragma unroll
      for (int o = L; o < 32; o *= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
      acc[g][d] = v;
    }
  }
  if (lane < L)
#pragma unroll
    for (int g = 0; g < G; ++g)
#pragma unroll
      for (int i = 0; i < Ln::PER; ++i) {
        const int c = sub + i * L;
        if (c < Ln::CH)
#pragma unroll
          for (int e = 0; e < E; ++e) red[warp][g][c * E + e] = acc[g][i * E + e];
      }
  __syncthreads();
  for (int idx = tid; idx < G * HD; idx += WARPS * 32) {
    const int g = idx / HD, d = idx % HD;
    float v = 0.0f;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) v += red[w][g][d];
    part[(((long long)r * H + kvh * G + g) * splits + split) * HD + d] = v;
  }
  if (tid < G) {
    float mAll = -INFINITY, lAll = 0.0f;
    for (int s = 0; s < SLOTS; ++s) mAll = fmaxf(mAll, mS[s][tid]);
    for (int s = 0; s < SLOTS; ++s)
      if (mS[s][tid] != -INFINITY) lAll += lS[s][tid] * expf(mS[s][tid] - mAll);
    const long long i = ((long long)r * H + kvh * G + tid) * splits + split;
    ml[2 * i] = mAll;
    ml[2 * i + 1] = lAll;
  }
}

/// Element d of one head's attention output (of one row) from its `used`
/// splits' partials (base: the first split's index): each split's sum and
/// output scaled by exp(its max - the largest), in split order, in one pass
/// (the running max rescales what is summed so far). Read past L1: other
/// blocks of the grid wrote them. 16 splits' loads at a time, all in flight
/// before their use, so that up to 16 splits cost one wait on L2 (a max pass
/// and then a sum pass, 8 at a time, waited four times for 32 splits).
__device__ __forceinline__ float attnMerged(const float *part, const float *ml, long long base,
                                            int used, int hd, int d) {
  constexpr int U = 16;
  float m = -INFINITY, l = 0.0f, acc = 0.0f;
  for (int s0 = 0; s0 < used; s0 += U) {
    float2 v[U];
    float p[U];
#pragma unroll
    for (int u = 0; u < U; ++u)
      if (s0 + u < used) {
        v[u] = __ldcg(reinterpret_cast<const float2 *>(ml) + base + s0 + u);
        p[u] = __ldcg(part + (base + s0 + u) * hd + d);
      }
    float mNew = m;
#pragma unroll
    for (int u = 0; u < U; ++u)
      if (s0 + u < used) mNew = fmaxf(mNew, v[u].x);
    // Every split the row uses has a key, so mNew is finite; m is -inf
    // only before the first group, where l and acc are 0.
    const float r = expf(m - mNew);
    l *= r;
    acc *= r;
#pragma unroll
    for (int u = 0; u < U; ++u)
      if (s0 + u < used) {
        const float w = expf(v[u].x - mNew);
        l += v[u].y * w;
        acc += p[u] * w;
      }
    m = mNew;
  }
  return acc / l;
}

/// Block (KV head, row, split): the split's run of the row's cached keys for
/// the query heads that share the KV head, as partials (attnMergeSlots);
/// the last of the row's splits to finish (an arrival count per row and KV
/// head, which it sets back to 0 for the next call) merges them into the
/// output, in split order whichever it is, so no second kernel runs.
/// p: q (f32, scaled here), cache, positions, page table, partial out,
/// partial (max, sum), out, arrival counts (rows x KVH, 0 between calls).
/// i: rows, layer, table stride, splits.  d: scale (and with CAP the
/// scores' soft cap, Gemma 2's).  W: the sliding window (0: none); the
/// splits then cover the window's keys alone.
template <class C, class O, int H, int KVH, int HD, int PS, long long PAGES, int WARPS, int W = 0,
          bool CAP = false>
__device__ void attnPartial(const KvArgs &a) {
  using Ln = AttnLanes<C, HD>;
  constexpr int G = H / KVH, L = Ln::L, D = Ln::D, SLOTS = WARPS * Ln::KPW;
  __shared__ float qs[G][HD];
  __shared__ float mS[SLOTS][G], lS[SLOTS][G];
  __shared__ float red[WARPS][G][HD];
  __shared__ int last;

  const int kvh = blockIdx.x, r = blockIdx.y, split = blockIdx.z;
  const int splits = (int)a.i[3];
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, sub = lane % L;
  const int slot = warp * Ln::KPW + lane / L;
  // The row's position and page entries are the call's inputs, which only
  // the copy before the first kernel writes, and the keys before the call's
  // own (earlier calls wrote them): read while the kernel before finishes
  // (pdlWait after them), so that the three memory latencies before the
  // first score overlap it.
  pdlLaunchDependents();
  const int pos = reinterpret_cast<const int *>(a.p[2])[r];
  O *out = reinterpret_cast<O *>(a.p[6]) + ((long long)r * H + kvh * G) * HD;
  if (pos < 0) { // padding: zeros, from the first split
    pdlWait();
    if (split == 0)
      for (int idx = tid; idx < G * HD; idx += WARPS * 32) out[idx] = st<O>(0.0f);
    return;
  }
  const int from = attnFirstKey<W>(pos), keys1 = pos - from; // the row's keys - 1
  const int span = attnSpan<SLOTS * kAttnUnroll<G>>(keys1, splits), start = from + split * span,
            used = (keys1 + span) / span;
  if (start > pos) return; // the merge reads only the splits a row has
  const int end = min(pos + 1, start + span);
  const int *table = reinterpret_cast<const int *>(a.p[3]) + r * a.i[2];
  const C *cache = reinterpret_cast<const C *>(a.p[1]);
  const long long layer = a.i[1];
  const C *keys = cache + cacheOffset<C, KVH, HD, PS, PAGES>(layer, 0, 0, kvh, 0);
  const C *values = cache + cacheOffset<C, KVH, HD, PS, PAGES>(layer, 1, 0, kvh, 0);
  // The slot's first keys and values in flight while the queries come in,
  // those earlier calls wrote (before `early`) from before the wait.
  const int early = min(end, pos - ((int)a.i[0] - 1));
  float kv[kAttnUnroll<G>][D], vv[kAttnUnroll<G>][D];
  attnFirstKeys<C, G, KVH, HD, PS>(keys, values, table, start + slot, SLOTS, early, end, sub, kv,
                                   vv);
  const float scale = (float)a.d[0];
  const float *q = reinterpret_cast<const float *>(a.p[0]) + ((long long)r * H + kvh * G) * HD;
  for (int idx = tid; idx < G * HD; idx += WARPS * 32) qs[idx / HD][idx % HD] = q[idx] * scale;
  float m[G], l[G], acc[G][D];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    m[g] = -INFINITY;
    l[g] = 0.0f;
#pragma unroll
    for (int d = 0; d < D; ++d) acc[g][d] = 0.0f;
  }
  __syncthreads();
  // The warp's keys start at start + warp * KPW; it runs as long as its first slot has keys.
  const int warpFirst = start + warp * Ln::KPW;
  attnWalk<C, G, KVH, HD, PS>(keys, values, table, qs, start + slot, SLOTS, end,
                              end > warpFirst ? end - warpFirst : 0, sub,
                              CAP ? (float)a.d[1] : 0.0f, kv, vv, m, l, acc);

  float *part = reinterpret_cast<float *>(a.p[4]), *ml = reinterpret_cast<float *>(a.p[5]);
  attnMergeSlots<C, H, KVH, HD, WARPS>(m, l, acc, mS, lS, red, part, ml, r, kvh, splits, split,
                                        slot, sub);
  // Every thread's partials visible to the whole grid before the block arrives.
  __threadfence();
  __syncthreads();
  if (tid == 0) {
    unsigned *count = reinterpret_cast<unsigned *>(a.p[7]) + (long long)r * KVH + kvh;
    last = atomicAdd(count, 1u) == unsigned(used - 1);
    if (last) *count = 0; // every split of the row has arrived
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  for (int idx = tid; idx < G * HD; idx += WARPS * 32) {
    const long long base = ((long long)r * H + kvh * G + idx / HD) * splits;
    out[idx] = st<O>(attnMerged(part, ml, base, used, HD, idx % HD));
  }
}

// ---------------------------------------------------------------------------
// Attention for a prefill chunk, on tensor cores. The rows of a chunk share
// one page table (one sequence), so a block takes tiles of 16 rows: block
// (KV head, RT tiles of 16 rows, HW query heads of the KV head's group)
// walks the keys up to its last row's position BK at a time, loads each
// tile of keys and values once into shared memory (as f32) for its RT x HW
// warps (the next tile's loads in flight while the warps compute), and each
// warp computes for its query head and its 16 rows: the scores (tf32
// fragments, m16n16k8), the causal mask and a running softmax by row, then
// probabilities x values added to its output rows. The operands that tf32
// does not hold exactly (the queries and the probabilities; keys and values
// in an f32 cache) are split into a big and a small tf32 part, so the
// products keep f32's accuracy; a 2-byte cache's keys and values are exact
// in tf32 (bf16's and f16's significands fit).

/// Keys per tile and the padded row strides (16 bytes apart, so the rows of
/// a fragment fall in different banks) of attnTiled.
template <int HD> struct AttnTile {
  static constexpr int BK = HD <= 64 ? 32 : 16;
  static constexpr int LK = HD + 4, LS = BK + 4;
};

/// A warp's tf32 fragments (tensor cores, m16n16k8) and their split: v is
/// big + small, each tf32 (10 bits of mantissa), to about 2^-22 of v.
using QFragA = nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 8,
                                      nvcuda::wmma::precision::tf32, nvcuda::wmma::col_major>;
using QFragB = nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 8,
                                      nvcuda::wmma::precision::tf32, nvcuda::wmma::row_major>;
using QFragC = nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 8, float>;
template <class Frag> __device__ __forceinline__ void splitTf32(Frag &big, Frag &small) {
#pragma unroll
  for (int t = 0; t < big.num_elements; ++t) {
    const float v = big.x[t];
    big.x[t] = nvcuda::wmma::__float_to_tf32(v);
    small.x[t] = nvcuda::wmma::__float_to_tf32(v - big.x[t]);
  }
}

/// acc += a x b, a given as its big and small tf32 parts (splitTf32); b
/// exact in tf32, or split here too when SPLIT_B: small x big, big x small,
/// big x big (3xTF32: the dropped small x small is about 2^-22 of a term).
template <bool SPLIT_B, class FA, class FB>
__device__ __forceinline__ void mmaSplit(QFragC &acc, const FA &ab, const FA &as, FB &b) {
  if constexpr (SPLIT_B) {
    FB bs;
    splitTf32(b, bs); // b becomes its big part
    nvcuda::wmma::mma_sync(acc, as, b, acc);
    nvcuda::wmma::mma_sync(acc, ab, bs, acc);
  } else {
    nvcuda::wmma::mma_sync(acc, as, b, acc);
  }
  nvcuda::wmma::mma_sync(acc, ab, b, acc);
}

/// attnTiled's shared memory: the key and value tile; per warp its scores
/// (then probabilities), unnormalised output rows and per row the running
/// maximum, sum and the last tile's rescaling; the row tiles' positions.
/// Static, under 48 KiB: codegen (CudaLowering.cpp, attnTileSharedBytes)
/// picks WARPS and RT by its size.
template <int HD, int WARPS, int RT> struct AttnTileShared {
  using T = AttnTile<HD>;
  float ks[T::BK][T::LK], vs[T::BK][T::LK];
  float s[WARPS][16][T::LS];
  float o[WARPS][16][T::LK];
  float m[WARPS][16], l[WARPS][16], alpha[WARPS][16];
  int pos[RT][16];
};

using AFragRow = nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 8,
                                        nvcuda::wmma::precision::tf32, nvcuda::wmma::row_major>;
using BFragCol = nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 8,
                                        nvcuda::wmma::precision::tf32, nvcuda::wmma::col_major>;

/// A thread's share of a tile of keys and values (runs of 16 bytes, the
/// thread's every THREADS-th), held as loaded: fetched for the next tile
/// while the warps compute on this one, then stored into shared memory as
/// f32. Keys past `last` are zeros, so no stale value meets a zero
/// probability.
/// Run n of a thread is the keys' key idx / CH, run idx % CH (a key's row
/// in one go; idx = threadIdx.x + n THREADS); the values' the same, or with
/// BY_KEY key idx % BK, run idx / BK (a warp's lanes on the same run of
/// consecutive keys, so that attnTiledMma's transposed stores of it fall in
/// different banks).
template <class C, int KVH, int HD, int PS, int THREADS, bool BY_KEY = false> struct AttnStage {
  static constexpr int E = 16 / (int)sizeof(C), CH = HD / E, BK = AttnTile<HD>::BK;
  static constexpr int N = (BK * CH + THREADS - 1) / THREADS;
  uint4 k[N], v[N];

  /// Run `run` of key t.
  static __device__ __forceinline__ uint4 load(const C *base, const int *table, int t, int run) {
    const long long off = ((long long)table[t / PS] * KVH * PS + t % PS) * HD + run * E;
    return *reinterpret_cast<const uint4 *>(base + off);
  }
  __device__ __forceinline__ void fetch(const C *keys, const C *values, const int *table, int t0,
                                        int last) {
#pragma unroll
    for (int n = 0; n < N; ++n) {
      const int idx = threadIdx.x + n * THREADS, t = t0 + idx / CH;
      const int tv = BY_KEY ? t0 + idx % BK : t, run = BY_KEY ? idx / BK : idx % CH;
      k[n] = v[n] = uint4{};
      if (idx < BK * CH && t <= last) k[n] = load(keys, table, t, idx % CH);
      if (idx < BK * CH && tv <= last) v[n] = load(values, table, tv, run);
    }
  }
  __device__ __forceinline__ void store(float (*ks)[AttnTile<HD>::LK],
                                        float (*vs)[AttnTile<HD>::LK]) const {
#pragma unroll
    for (int n = 0; n < N; ++n) {
      const int idx = threadIdx.x + n * THREADS, key = idx / CH, c = (idx % CH) * E;
      if (idx >= BK * CH) break;
      float kf[E], vf[E];
      unpack16<C>(k[n], kf);
      unpack16<C>(v[n], vf);
#pragma unroll
      for (int e = 0; e < E; ++e) {
        ks[key][c + e] = kf[e];
        vs[key][c + e] = vf[e];
      }
    }
  }
  /// With BY_KEY, the tile as attnTiledMma keeps it: keys row by row,
  /// values transposed ([dim][key]; a warp's lanes on consecutive keys of a
  /// run: 16 banks, two lanes a word).
  template <int LK, int LV>
  __device__ __forceinline__ void storeTransposed(C (*ks)[LK], C (*vt)[LV]) const {
    static_assert(BY_KEY && sizeof(C) == 2, "values fetched by key, 2-byte elements");
#pragma unroll
    for (int n = 0; n < N; ++n) {
      const int idx = threadIdx.x + n * THREADS;
      if (idx >= BK * CH) break;
      *reinterpret_cast<uint4 *>(&ks[idx / CH][(idx % CH) * E]) = k[n];
      const C *run = reinterpret_cast<const C *>(&v[n]);
#pragma unroll
      for (int e = 0; e < E; ++e) vt[(idx / BK) * E + e][idx % BK] = run[e];
    }
  }
};

/// The positions of a block's RT row tiles from row `first` on (-1 past the
/// call's rows) into pos, for every warp; then the block's last position
/// and the last of the warp's tile.
template <int RT>
__device__ __forceinline__ void attnTilePositions(const KvArgs &a, int first, int tile,
                                                  int (&pos)[RT][16], int &last, int &mine) {
  const int tid = threadIdx.x, rows = (int)a.i[0];
  if (tid < RT * 16)
    pos[tid / 16][tid % 16] =
        first + tid < rows ? reinterpret_cast<const int *>(a.p[2])[first + tid] : -1;
  __syncthreads();
  last = mine = -1;
  for (int i = 0; i < RT * 16; ++i) {
    const int p = pos[i / 16][i % 16];
    last = p > last ? p : last;
    if (i / 16 == tile) mine = p > mine ? p : mine;
  }
}

/// The first key tile (a multiple of BK) the block's rows (pos, from
/// attnTilePositions) read: 0 without a window W, else that of the first key
/// its earliest row's window holds.
template <int RT, int W, int BK>
__device__ __forceinline__ int attnTileFrom(const int (&pos)[RT][16]) {
  if constexpr (W == 0) return 0;
  int from = -1;
  for (int i = 0; i < RT * 16; ++i) {
    const int p = pos[i / 16][i % 16], f = attnFirstKey<W>(p);
    if (p >= 0 && (from < 0 || f < from)) from = f;
  }
  return from < 0 ? 0 : from / BK * BK;
}

/// A warp's scores for the tile: its 16 query rows (q: the first, rows
/// LDQ floats apart, scaled and split here) x the tile's BK keys, into s.
template <int HD, int LDQ, bool SPLIT>
__device__ __forceinline__ void attnTileScores(const float *q, float scale,
                                               const float (*ks)[AttnTile<HD>::LK],
                                               float (*s)[AttnTile<HD>::LS]) {
  namespace wmma = nvcuda::wmma;
  constexpr int BK = AttnTile<HD>::BK, LK = AttnTile<HD>::LK;
  QFragC acc[BK / 16];
#pragma unroll
  for (int j = 0; j < BK / 16; ++j) wmma::fill_fragment(acc[j], 0.0f);
#pragma unroll 2
  for (int k = 0; k < HD; k += 8) {
    AFragRow qb, qs;
    wmma::load_matrix_sync(qb, q + k, LDQ);
#pragma unroll
    for (int t = 0; t < qb.num_elements; ++t) qb.x[t] *= scale;
    splitTf32(qb, qs);
#pragma unroll
    for (int j = 0; j < BK / 16; ++j) {
      BFragCol kb; // keys[key][k]: the scores' B, column-major
      wmma::load_matrix_sync(kb, &ks[16 * j][k], LK);
      mmaSplit<SPLIT>(acc[j], qb, qs, kb);
    }
  }
#pragma unroll
  for (int j = 0; j < BK / 16; ++j)
    wmma::store_matrix_sync(&s[0][16 * j], acc[j], AttnTile<HD>::LS, wmma::mem_row_major);
  __syncwarp();
}

/// The causal mask (and window W's) and the running softmax of a warp's 16
/// rows over the tile's scores, two lanes a row: s becomes the probabilities
/// exp(score - the new maximum), zero where the row does not see the key
/// (attnSees); m, l move on and
/// alpha holds how much the rows' earlier output shrinks.
template <int HD, int W>
__device__ __forceinline__ void attnTileSoftmax(float (*s)[AttnTile<HD>::LS], const int *pos,
                                                int t0, float cap, float *m, float *l,
                                                float *alpha) {
  constexpr int HALF = AttnTile<HD>::BK / 2;
  const int lane = threadIdx.x % 32, i = lane / 2, first = t0 + (lane % 2) * HALF;
  float *row = s[i] + (lane % 2) * HALF;
  float mx = -INFINITY;
#pragma unroll
  for (int c = 0; c < HALF; ++c) {
    row[c] = attnSoftcap(row[c], cap);
    if (attnSees<W>(first + c, pos[i])) mx = fmaxf(mx, row[c]);
  }
  mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
  const float mOld = m[i], mNew = fmaxf(mOld, mx);
  float sum = 0.0f;
#pragma unroll
  for (int c = 0; c < HALF; ++c) {
    const float p = attnSees<W>(first + c, pos[i]) ? expf(row[c] - mNew) : 0.0f;
    row[c] = p;
    sum += p;
  }
  sum += __shfl_xor_sync(0xffffffffu, sum, 1);
  __syncwarp(); // both lanes of a row have read m[i]
  if (lane % 2 == 0) {
    const float a = mNew == -INFINITY ? 1.0f : expf(mOld - mNew);
    alpha[i] = a;
    l[i] = l[i] * a + sum;
    m[i] = mNew;
  }
  __syncwarp();
}

/// A warp's output rows o = o x alpha + probabilities x the tile's values.
template <int HD, bool SPLIT>
__device__ __forceinline__ void attnTileValues(const float (*s)[AttnTile<HD>::LS],
                                               const float (*vs)[AttnTile<HD>::LK],
                                               const float *alpha, float (*o)[AttnTile<HD>::LK]) {
  namespace wmma = nvcuda::wmma;
  constexpr int BK = AttnTile<HD>::BK, LK = AttnTile<HD>::LK;
  for (int idx = threadIdx.x % 32; idx < 16 * HD; idx += 32)
    o[idx / HD][idx % HD] *= alpha[idx / HD];
  __syncwarp();
  AFragRow pb[BK / 8], ps[BK / 8];
#pragma unroll
  for (int k = 0; k < BK / 8; ++k) {
    wmma::load_matrix_sync(pb[k], &s[0][8 * k], AttnTile<HD>::LS);
    splitTf32(pb[k], ps[k]);
  }
#pragma unroll 2
  for (int n = 0; n < HD / 16; ++n) {
    QFragC acc;
    wmma::load_matrix_sync(acc, &o[0][16 * n], LK, wmma::mem_row_major);
#pragma unroll
    for (int k = 0; k < BK / 8; ++k) {
      QFragB vb; // values[key][d]: row-major
      wmma::load_matrix_sync(vb, &vs[8 * k][16 * n], LK);
      mmaSplit<SPLIT>(acc, pb[k], ps[k], vb);
    }
    wmma::store_matrix_sync(&o[0][16 * n], acc, LK, wmma::mem_row_major);
  }
  __syncwarp();
}

/// Block (KV head, RT tiles of 16 rows, HW query heads), as above: warp w
/// takes head w % HW and tile w / HW. Rows past the call's (i[0]) or at a
/// negative position get zeros; a warp skips the key tiles past its rows'
/// last position, and so computes nothing where its tile starts past the
/// call's rows (the entry's rows are whole tiles: every other tile's
/// queries are in the buffer).
/// p: q (f32, scaled here), cache, positions, page table (one row, all
/// rows'), out.  i: rows, layer.  d: scale (and with CAP the scores' soft
/// cap, Gemma 2's).  W: the sliding window (0: none); the block starts at
/// the tile of its earliest row's first key.
template <class C, class O, int H, int KVH, int HD, int PS, long long PAGES, int HW, int RT,
          int W = 0, bool CAP = false>
__device__ void attnTiled(const KvArgs &a) {
  constexpr int G = H / KVH, BK = AttnTile<HD>::BK, WARPS = HW * RT, THREADS = WARPS * 32;
  static_assert(HD % 16 == 0 && G % HW == 0, "whole fragments, whole head groups");
  __shared__ __align__(32) AttnTileShared<HD, WARPS, RT> sh;
  const int kvh = blockIdx.x, tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = blockIdx.z * HW + warp % HW, tile = warp / HW;
  const int first = blockIdx.y * RT * 16, r0 = first + tile * 16, rows = (int)a.i[0];
  if (lane < 16) {
    sh.m[warp][lane] = -INFINITY;
    sh.l[warp][lane] = 0.0f;
  }
  for (int idx = lane; idx < 16 * HD; idx += 32) sh.o[warp][idx / HD][idx % HD] = 0.0f;
  int last, mine; // the block's last position, and the warp's tile's
  attnTilePositions<RT>(a, first, tile, sh.pos, last, mine);

  const float *q = reinterpret_cast<const float *>(a.p[0]) + ((long long)r0 * H + kvh * G + g) * HD;
  const float scale = (float)a.d[0], cap = CAP ? (float)a.d[1] : 0.0f;
  const C *cache = reinterpret_cast<const C *>(a.p[1]);
  const C *keys = cache + cacheOffset<C, KVH, HD, PS, PAGES>(a.i[1], 0, 0, kvh, 0);
  const C *values = cache + cacheOffset<C, KVH, HD, PS, PAGES>(a.i[1], 1, 0, kvh, 0);
  const int *table = reinterpret_cast<const int *>(a.p[3]);
  constexpr bool SPLIT = sizeof(C) != 2; // f32 keys and values are split too
  AttnStage<C, KVH, HD, PS, THREADS> stage;
  const int from = attnTileFrom<RT, W, BK>(sh.pos);
  if (last >= 0) stage.fetch(keys, values, table, from, last);
  for (int t0 = from; t0 <= last; t0 += BK) {
    stage.store(sh.ks, sh.vs);
    __syncthreads();
    // The next tile's loads in flight under this one's products.
    if (t0 + BK <= last) stage.fetch(keys, values, table, t0 + BK, last);
    if (t0 <= mine) { // the warp's: a tile wholly past its rows changes nothing
      attnTileScores<HD, H * HD, SPLIT>(q, scale, sh.ks, sh.s[warp]);
      attnTileSoftmax<HD, W>(sh.s[warp], sh.pos[tile], t0, cap, sh.m[warp], sh.l[warp],
                             sh.alpha[warp]);
      attnTileValues<HD, SPLIT>(sh.s[warp], sh.vs, sh.alpha[warp], sh.o[warp]);
    }
    __syncthreads(); // every warp is done with the tile before the next one is stored
  }
  O *out = reinterpret_cast<O *>(a.p[4]);
  for (int idx = lane; idx < 16 * HD; idx += 32) {
    const int i = idx / HD, d = idx % HD;
    if (r0 + i >= rows) break;
    const float l = sh.l[warp][i];
    out[((long long)(r0 + i) * H + kvh * G + g) * HD + d] =
        st<O>(l > 0.0f ? sh.o[warp][i][d] / l : 0.0f);
  }
}

// ---------------------------------------------------------------------------
// attnTiled for a bf16 cache, on bf16 tensor cores (mma.sync m16n8k16), the
// flash-attention way: a warp keeps its 16 query rows (scaled, split into a
// big and a small bf16 part), its scores, probabilities, running maximum and
// sum, and its output rows in registers; only the tile of keys and values
// (bf16 as cached: exact) goes through shared memory, the values transposed
// so that a fragment's two keys are one word. A score accumulator's layout
// (lane (g, t): rows g and g + 8, keys 2t and 2t + 1 of each 8) is the
// probabilities' A fragment for the product with the values, so the
// probabilities go from one product to the next without shared memory; they
// are split into two bf16 parts too (big x values, small x values). Per
// tile of BK keys and warp: BK HD / 32 bf16 m16n8k16 products where
// attnTiled issues BK HD / 16 tf32 m16n8k8 (half the multiply-adds each, at
// half bf16's rate) and stores and reloads its scores and output rows
// through shared memory.

/// attnTiledMma's shared memory: the tile's keys [key][dim] and values
/// [dim][key] (rows padded by 8 elements, 4 words, so that the 32 words a
/// fragment load reads, (row g, word t), fall in 32 banks), and the row
/// tiles' positions.
template <int HD, int RT> struct AttnMmaShared {
  static constexpr int BK = AttnTile<HD>::BK, LK = HD + 8, LV = BK + 8;
  __align__(16) __nv_bfloat16 ks[BK][LK];
  __nv_bfloat16 vt[HD][LV];
  int pos[RT][16];
};

/// A word of two bf16 at p (4-byte aligned).
__device__ __forceinline__ unsigned bf16Pair(const __nv_bfloat16 *p) {
  return *reinterpret_cast<const unsigned *>(p);
}

/// A warp's state in attnTiledMma: its query rows as A fragments (per 16
/// dimensions, a big and a small part), its output rows (D fragments, per 8
/// dimensions) and, for its lane's two rows g and g + 8, the running maximum
/// and the lane's share of the sum.
template <int HD> struct AttnMmaWarp {
  unsigned qb[HD / 16][4], qs[HD / 16][4];
  float o[HD / 8][4];
  float m[2], l[2];

  /// q: the warp's first row, rows ldq floats apart.
  __device__ __forceinline__ void init(const float *q, long long ldq, float scale, int g, int t) {
#pragma unroll
    for (int k = 0; k < HD / 16; ++k)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float *x = q + (g + 8 * (i % 2)) * ldq + 16 * k + 2 * t + 8 * (i / 2);
        splitBf16(x[0] * scale, x[1] * scale, qb[k][i], qs[k][i]);
      }
#pragma unroll
    for (int n = 0; n < HD / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[n][e] = 0.0f;
    m[0] = m[1] = -INFINITY;
    l[0] = l[1] = 0.0f;
  }

  /// The tile's keys t0.. (in ks) against the warp's rows at positions pos:
  /// scores, causal mask (and window W's: attnSees), running softmax, then
  /// probabilities x values.
  template <int BK, int LK, int LV, int W>
  __device__ __forceinline__ void tile(const __nv_bfloat16 (*ks)[LK],
                                       const __nv_bfloat16 (*vt)[LV], const int *pos, int t0,
                                       int g, int t, float cap) {
    float s[BK / 8][4];
#pragma unroll
    for (int j = 0; j < BK / 8; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) s[j][e] = 0.0f;
#pragma unroll
      for (int k = 0; k < HD / 16; ++k) {
        const unsigned b[2] = {bf16Pair(&ks[8 * j + g][16 * k + 2 * t]),
                               bf16Pair(&ks[8 * j + g][16 * k + 8 + 2 * t])};
        mmaBf16(s[j], qs[k], b);
        mmaBf16(s[j], qb[k], b);
      }
    }
    const int p[2] = {pos[g], pos[g + 8]};
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int j = 0; j < BK / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[j][e] = attnSoftcap(s[j][e], cap);
        if (attnSees<W>(t0 + 8 * j + 2 * t + e % 2, p[e / 2]))
          mx[e / 2] = fmaxf(mx[e / 2], s[j][e]);
      }
    float alpha[2], mNew[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
      mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
      mNew[h] = fmaxf(m[h], mx[h]);
      alpha[h] = mNew[h] == -INFINITY ? 1.0f : expf(m[h] - mNew[h]);
      m[h] = mNew[h];
      l[h] *= alpha[h];
    }
#pragma unroll
    for (int j = 0; j < BK / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const bool on = attnSees<W>(t0 + 8 * j + 2 * t + e % 2, p[e / 2]);
        s[j][e] = on ? expf(s[j][e] - mNew[e / 2]) : 0.0f;
        l[e / 2] += s[j][e];
      }
#pragma unroll
    for (int n = 0; n < HD / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[n][e] *= alpha[e / 2];
#pragma unroll
    for (int kk = 0; kk < BK / 16; ++kk) {
      unsigned pb[4], ps[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float *x = s[2 * kk + i / 2] + 2 * (i % 2);
        splitBf16(x[0], x[1], pb[i], ps[i]);
      }
#pragma unroll
      for (int n = 0; n < HD / 8; ++n) {
        const unsigned b[2] = {bf16Pair(&vt[8 * n + g][16 * kk + 2 * t]),
                               bf16Pair(&vt[8 * n + g][16 * kk + 8 + 2 * t])};
        mmaBf16(o[n], ps, b);
        mmaBf16(o[n], pb, b);
      }
    }
  }
};

/// attnTiled (the same block, warps, arguments, rows, window and cap) for a
/// bf16 cache, as above.
template <class O, int H, int KVH, int HD, int PS, long long PAGES, int HW, int RT, int W = 0,
          bool CAP = false>
__device__ void attnTiledMma(const KvArgs &a) {
  using C = __nv_bfloat16;
  using S = AttnMmaShared<HD, RT>;
  constexpr int G = H / KVH, BK = S::BK, WARPS = HW * RT, THREADS = WARPS * 32;
  static_assert(HD % 16 == 0 && BK % 16 == 0 && G % HW == 0, "whole fragments and head groups");
  __shared__ S sh;
  const int kvh = blockIdx.x, tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  const int gh = blockIdx.z * HW + warp % HW, tile = warp / HW;
  const int first = blockIdx.y * RT * 16, r0 = first + tile * 16, rows = (int)a.i[0];
  int last, mine; // the block's last position, and the warp's tile's
  attnTilePositions<RT>(a, first, tile, sh.pos, last, mine);
  const float *q =
      reinterpret_cast<const float *>(a.p[0]) + ((long long)r0 * H + kvh * G + gh) * HD;
  AttnMmaWarp<HD> w;
  w.init(q, (long long)H * HD, (float)a.d[0], g, t);
  const C *cache = reinterpret_cast<const C *>(a.p[1]);
  const C *keys = cache + cacheOffset<C, KVH, HD, PS, PAGES>(a.i[1], 0, 0, kvh, 0);
  const C *values = cache + cacheOffset<C, KVH, HD, PS, PAGES>(a.i[1], 1, 0, kvh, 0);
  const int *table = reinterpret_cast<const int *>(a.p[3]);
  AttnStage<C, KVH, HD, PS, THREADS, true> stage;
  const int from = attnTileFrom<RT, W, BK>(sh.pos);
  if (last >= 0) stage.fetch(keys, values, table, from, last);
  for (int t0 = from; t0 <= last; t0 += BK) {
    stage.storeTransposed(sh.ks, sh.vt);
    __syncthreads();
    // The next tile's loads in flight under this one's products.
    if (t0 + BK <= last) stage.fetch(keys, values, table, t0 + BK, last);
    if (t0 <= mine) // the warp's: a tile wholly past its rows changes nothing
      w.template tile<BK, S::LK, S::LV, W>(sh.ks, sh.vt, sh.pos[tile], t0, g, t,
                                           CAP ? (float)a.d[1] : 0.0f);
    __syncthreads(); // every warp is done with the tile before the next one is stored
  }
  O *out = reinterpret_cast<O *>(a.p[4]);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float l = w.l[h];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const int r = r0 + g + 8 * h;
    if (r >= rows) continue;
    O *row = out + ((long long)r * H + kvh * G + gh) * HD;
#pragma unroll
    for (int n = 0; n < HD / 8; ++n)
#pragma unroll
      for (int e = 0; e < 2; ++e)
        row[8 * n + 2 * t + e] = st<O>(l > 0.0f ? w.o[n][2 * h + e] / l : 0.0f);
  }
}

// ---------------------------------------------------------------------------
// Sampling on the device, in two kernels.
// - argmaxSlices: block (s, r) covers slice s (SLICE tokens) of row r: its
//   argmax and, where row r samples at a temperature, its mass (relative to
//   its own maximum) and its C candidates: its C largest keys (ties in index
//   order), in index order.
// - sample, one block a row: greedy merges the slices' argmaxes (the lowest
//   index among equals); at a temperature it keeps the tokens at least
//   min-p times as likely as the best and of those the top-k logits (ties
//   with the k-th are kept), then the smallest most-probable set whose
//   probability reaches top-p of theirs, and draws among them in index
//   order (vLLM's order: temperature, min-p, top-k and top-p).
// Every token whose key is above B, the largest key a slice left out, is a
// candidate. So where the thresholds come out above B, the candidates alone
// (C a slice, a few thousand) decide them and the draw; where nothing is cut,
// the draw picks a slice by the slices' masses and walks that slice; only
// otherwise (top-k beyond the candidates, or a flat distribution whose min-p
// or top-p set reaches below B) does the row's block go over the whole vocabulary.
// Thresholds come from radix selects over the logits' bits. The helpers take
// the thread's coordinates from it; those that hold barriers are called by
// every thread, under conditions that are the row's, the same for the whole
// block.

__device__ __forceinline__ unsigned orderedKey(float f) {
  const unsigned b = __float_as_uint(f);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

struct SamplingParams {
  float temperature, topP;
  int topK;
  float uniform, minP;
};

/// min-p's floor: the key of the least logit at least minP times as likely
/// as the row's best at its temperature (logit >= best + temperature ln
/// minP), or 0 where min-p is off.
__device__ __forceinline__ unsigned minPKey(const SamplingParams &p, float maxLogit) {
  return p.minP > 0.0f ? orderedKey(maxLogit + p.temperature * logf(p.minP)) : 0u;
}

/// Whether a row's parameters ask for the argmax.
__device__ __forceinline__ bool greedyRow(const SamplingParams &p) {
  return !(p.temperature > 0.0f) || p.topK == 1;
}

/// A token's unnormalised probability at temperature 1 / invT.
__device__ __forceinline__ float keptWeight(float logit, float maxLogit, float invT) {
  return expf((logit - maxLogit) * invT);
}

/// A row's greedy choice: the token and its logit.
struct Argmax {
  int token;
  float logit;
};

/// A slice's figures for sample: its largest logit, its mass relative to
/// it at the row's temperature, the key of its C-th candidate where it left
/// tokens out (else 0: it left none), and its candidates.
struct SliceMeta {
  float maxLogit, mass;
  unsigned bound;
  int count;
};

/// A candidate token and its logit; a slice of fewer than C tokens pads its
/// candidates with (-inf, -1), which weigh nothing.
struct Candidate {
  float logit;
  int token;
};

/// One row's part of the sampling workspace: S argmaxes, S SliceMetas, then
/// S x C candidates (the host reserves S x (8 + 16 + 8 C) bytes a row:
/// codegen's sampleRowBytes).
template <int S, int C> struct SampleRow {
  Argmax *argmax;
  SliceMeta *meta;
  Candidate *cands;
  __device__ SampleRow(char *work, int r) {
    char *row = work + (long long)r * S * (8 + 16 + 8 * C);
    argmax = reinterpret_cast<Argmax *>(row);
    meta = reinterpret_cast<SliceMeta *>(row + 8 * S);
    cands = reinterpret_cast<Candidate *>(row + 24 * S);
  }
};

/// What the selects and the draw read: n logits, token i being first + i of
/// a row of logits, or a candidate's own.
struct TokenSpan {
  const float *logits; // or null: cands
  const Candidate *cands;
  int n, first;
  __device__ float logit(int i) const { return logits ? logits[i] : cands[i].logit; }
  __device__ int token(int i) const { return logits ? first + i : cands[i].token; }
};

/// The largest of every thread's (best, bi) and its lowest index, to every
/// thread (it holds barriers). shf and shi hold 32 entries each.
template <int BLOCK>
__device__ __forceinline__ Argmax blockArgmaxOf(float best, int bi, float *shf, int *shi,
                                                int &shToken, int lane, int warp) {
  static_assert(BLOCK % 32 == 0 && BLOCK <= 1024, "whole warps, at most 32");
  for (int o = 16; o > 0; o >>= 1) {
    const float ob = __shfl_xor_sync(0xffffffffu, best, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (ob > best || (ob == best && oi < bi)) { best = ob; bi = oi; }
  }
  __syncthreads(); // shf and shi may still be read by an earlier call
  if (lane == 0) { shf[warp] = best; shi[warp] = bi; }
  __syncthreads();
  if (warp == 0) {
    best = lane < BLOCK / 32 ? shf[lane] : -INFINITY;
    bi = lane < BLOCK / 32 ? shi[lane] : 0x7fffffff;
    for (int o = 16; o > 0; o >>= 1) {
      const float ob = __shfl_xor_sync(0xffffffffu, best, o);
      const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (ob > best || (ob == best && oi < bi)) { best = ob; bi = oi; }
    }
    if (lane == 0) { shToken = bi; shf[0] = best; }
  }
  __syncthreads();
  return {shToken, shf[0]};
}

/// The largest logit of l[begin, end) and its lowest index, to every
/// thread (it holds barriers).
template <int BLOCK>
__device__ __forceinline__ Argmax blockArgmax(const float *l, int begin, int end, float *shf,
                                              int *shi, int &shToken, int tid, int lane,
                                              int warp) {
  int bi = 0x7fffffff;
  float best = -INFINITY;
  for (int i = begin + tid; i < end; i += BLOCK) // i grows: ties keep the first
    if (l[i] > best || bi == 0x7fffffff) { best = l[i]; bi = i; }
  return blockArgmaxOf<BLOCK>(best, bi, shf, shi, shToken, lane, warp);
}

/// The largest of every thread's v, to every thread (it holds barriers; sh
/// holds 32 entries).
template <int BLOCK> __device__ __forceinline__ unsigned blockMax(unsigned v, unsigned *sh) {
  for (int o = 16; o > 0; o >>= 1) {
    const unsigned u = __shfl_xor_sync(0xffffffffu, v, o);
    v = u > v ? u : v;
  }
  __syncthreads();
  if (threadIdx.x % 32 == 0) sh[threadIdx.x / 32] = v;
  __syncthreads();
  v = threadIdx.x % 32 < BLOCK / 32 ? sh[threadIdx.x % 32] : 0u;
  for (int o = 16; o > 0; o >>= 1) {
    const unsigned u = __shfl_xor_sync(0xffffffffu, v, o);
    v = u > v ? u : v;
  }
  return v;
}

/// The exclusive prefix sum of every thread's v in thread order, and the
/// total (it holds barriers; sh holds 32 entries).
template <class T, int BLOCK>
__device__ __forceinline__ T blockExclusiveScan(T v, T *sh, T &total) {
  static_assert(BLOCK % 32 == 0 && BLOCK <= 1024, "whole warps, at most 32");
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  T incl = v;
  for (int o = 1; o < 32; o <<= 1) {
    const T u = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += u;
  }
  __syncthreads();
  if (lane == 31) sh[warp] = incl;
  __syncthreads();
  T warpBase = T(0);
  total = T(0);
  for (int w = 0; w < BLOCK / 32; ++w) {
    if (w < warp) warpBase += sh[w];
    total += sh[w];
  }
  return warpBase + incl - v;
}

/// Thread 0's step of the top-k select: the highest byte b whose keys, with
/// those above it, reach the `remaining` count; publishes the prefix and
/// what is left to count below it.
__device__ __forceinline__ void topKByte(const unsigned *hist, unsigned prefix, int shift,
                                         int remaining, unsigned &shPrefix, int &shRemaining) {
  int cum = 0, b = 255;
  for (; b > 0; --b) {
    if (cum + (int)hist[b] >= remaining) break;
    cum += (int)hist[b];
  }
  shPrefix = prefix | ((unsigned)b << shift);
  shRemaining = remaining - cum;
}

/// hist[bin] += 1 for each lane of the warp where `live`, with one atomic a
/// distinct bin: the lowest lane of those that share it adds their count.
/// The first byte of a logit's key (its sign and exponent) puts most of a
/// vocabulary in a few bins, where an atomic a lane would wait on the same
/// shared-memory word. Every lane of the warp calls it.
__device__ __forceinline__ void countInWarp(unsigned *hist, unsigned bin, bool live, int lane) {
  const unsigned peers = __match_any_sync(0xffffffffu, live ? bin : 0xffffffffu);
  if (live && lane == __ffs(peers) - 1) atomicAdd(&hist[bin], (unsigned)__popc(peers));
}

/// Top-k: the k-th largest key of t, one byte at a time from the top, by
/// histograms in hist (256 entries). It holds barriers.
template <int BLOCK>
__device__ __forceinline__ unsigned topKKey(const TokenSpan &t, int topK, unsigned *hist,
                                            unsigned &shPrefix, int &shRemaining, int tid) {
  static_assert(BLOCK >= 256, "a histogram bin a thread");
  unsigned prefix = 0, mask = 0;
  int remaining = topK;
  for (int shift = 24; shift >= 0; shift -= 8) {
    if (tid < 256) hist[tid] = 0;
    __syncthreads();
    for (int base = 0; base < t.n; base += BLOCK) { // whole warps take every turn
      const int i = base + tid;
      const unsigned key = i < t.n ? orderedKey(t.logit(i)) : 0u;
      countInWarp(hist, (key >> shift) & 255u, i < t.n && (key & mask) == prefix, tid % 32);
    }
    __syncthreads();
    if (tid == 0) topKByte(hist, prefix, shift, remaining, shPrefix, shRemaining);
    __syncthreads();
    prefix = shPrefix;
    remaining = shRemaining;
    mask |= 255u << shift;
    __syncthreads();
  }
  return prefix;
}

/// The first pass of sampling over many blocks: block (s, r) finds the
/// largest logit of slice s (SLICE tokens) of row r and its lowest index,
/// and, where row r samples at a temperature, the slice's mass and
/// candidates (SliceMeta, Candidate). p: logits (f32, rows x V), the
/// sampling workspace (SampleRow), the rows' SamplingParams.
template <int V, int SLICE, int BLOCK, int C> __device__ void argmaxSlices(const KvArgs &a) {
  static_assert(BLOCK >= 256 && BLOCK % 32 == 0, "a histogram bin a thread");
  static_assert(SLICE < 65536 && SLICE % BLOCK == 0, "counts in 16 bits; whole runs");
  __shared__ float shf[32];
  __shared__ int shi[32];
  __shared__ unsigned shu[32];
  __shared__ int shToken;
  __shared__ unsigned hist[256];
  __shared__ unsigned shPrefix;
  __shared__ int shRemaining;
  constexpr int S = (V + SLICE - 1) / SLICE;
  const int s = blockIdx.x, r = blockIdx.y, tid = threadIdx.x;
  const float *l = reinterpret_cast<const float *>(a.p[0]) + (long long)r * V;
  const int begin = s * SLICE, end = begin + SLICE < V ? begin + SLICE : V;
  const Argmax best = blockArgmax<BLOCK>(l, begin, end, shf, shi, shToken, tid, tid % 32, tid / 32);
  const SampleRow<S, C> row(a.p[1], r);
  if (tid == 0) row.argmax[s] = best;
  const SamplingParams prm = reinterpret_cast<const SamplingParams *>(a.p[2])[r];
  if (greedyRow(prm)) return; // the row's: the whole block
  const float invT = 1.0f / prm.temperature;
  float mass = 0.0f;
  for (int i = begin + tid; i < end; i += BLOCK) mass += keptWeight(l[i], best.logit, invT);
  mass = blockSum<BLOCK>(mass, shf);
  if (!(best.logit > -INFINITY)) mass = 0.0f; // every logit -inf: no mass (not NaN)
  const int n = end - begin;
  const TokenSpan span{l + begin, nullptr, n, begin};
  const unsigned kth = n > C ? topKKey<BLOCK>(span, C, hist, shPrefix, shRemaining, tid) : 0u;
  // The keys above kth, then those equal to it in index order, C in all:
  // each thread counts its run of SLICE / BLOCK tokens (above in the high
  // 16 bits, equal in the low), and one scan places them.
  constexpr int RUN = SLICE / BLOCK;
  const int r0 = tid * RUN;
  unsigned counts = 0;
  for (int i = r0; i < r0 + RUN && i < n; ++i) {
    const unsigned key = orderedKey(span.logit(i));
    counts += key > kth ? 0x10000u : key == kth ? 1u : 0u;
  }
  unsigned all;
  const unsigned before = blockExclusiveScan<unsigned, BLOCK>(counts, shu, all);
  const int above = int(all >> 16), tiesWanted = (n > C ? C : n) - above;
  int at = int(before >> 16), ties = int(before & 0xffffu);
  Candidate *out = row.cands + s * C;
  for (int i = r0; i < r0 + RUN && i < n; ++i) {
    const unsigned key = orderedKey(span.logit(i));
    if (key > kth) {
      out[at + (ties < tiesWanted ? ties : tiesWanted)] = {span.logit(i), span.token(i)};
      ++at;
    } else if (key == kth) {
      if (ties < tiesWanted) out[at + ties] = {span.logit(i), span.token(i)};
      ++ties;
    }
  }
  for (int c = n + tid; c < C; c += BLOCK) out[c] = {-INFINITY, -1};
  if (tid == 0) row.meta[s] = {best.logit, mass, n > C ? kth : 0u, n > C ? C : n};
}

/// Thread 0's step of the top-p select: the highest byte b (no lower than
/// the lowest non-empty one) whose mass, with that above it, reaches
/// `remaining`; publishes the prefix and the mass left below it.
__device__ __forceinline__ void topPByte(const float *histf, unsigned prefix, int shift,
                                         float remaining, unsigned &shPrefix,
                                         float &shRemainingMass) {
  float cum = 0.0f;
  int b = 255, lowest = 255;
  for (int c = 255; c >= 0; --c)
    if (histf[c] > 0.0f) lowest = c;
  for (; b > lowest; --b) {
    if (cum + histf[b] >= remaining) break;
    cum += histf[b];
  }
  shPrefix = prefix | ((unsigned)b << shift);
  shRemainingMass = remaining - cum;
}

/// Top-p: the largest key whose kept tokens of t (key >= kth) at or above
/// it reach `mass` (top-p times the kept total), by histograms of their
/// weights (256 bins a pass, one pass a byte of the key); never below kth.
/// Each warp sums into its own histogram (histw), which the block then adds
/// up bin by bin in warp order into histf. The first byte of a key (sign and
/// exponent) puts most tokens in a few bins: with one histogram for the
/// block, a flat row's 128,256 tokens were that many atomics on two to four
/// shared addresses from 32 warps (the H200's sampled step, top-p 0.95 over
/// random weights' logits, took 0.9 ms more than greedy); now a bin's
/// atomics come from one warp. Each thread also sums its tokens while they
/// stay in one bin and adds the sum with one atomic when the bin changes. It
/// holds barriers.
template <int BLOCK>
__device__ __forceinline__ unsigned topPKey(const TokenSpan &t, unsigned kth, float maxLogit,
                                            float invT, float mass, float *histf,
                                            float (*histw)[256], unsigned &shPrefix,
                                            float &shRemainingMass, int tid) {
  constexpr int WARPS = BLOCK / 32;
  float *mine = histw[tid / 32];
  unsigned prefix = 0, mask = 0;
  float remaining = mass;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = tid % 32; b < 256; b += 32) mine[b] = 0.0f;
    __syncwarp();
    unsigned held = 256; // the bin this thread is summing (none yet) and its sum
    float sum = 0.0f;
    for (int i = tid; i < t.n; i += BLOCK) {
      const float l = t.logit(i);
      const unsigned key = orderedKey(l);
      if (key < kth || (key & mask) != prefix) continue;
      const unsigned bin = (key >> shift) & 255u;
      if (bin != held) {
        if (held < 256) atomicAdd(&mine[held], sum);
        held = bin;
        sum = 0.0f;
      }
      sum += keptWeight(l, maxLogit, invT);
    }
    if (held < 256) atomicAdd(&mine[held], sum);
    __syncthreads();
    if (tid < 256) {
      float all = 0.0f;
#pragma unroll 8
      for (int w = 0; w < WARPS; ++w) all += histw[w][tid];
      histf[tid] = all;
    }
    __syncthreads();
    if (tid == 0) topPByte(histf, prefix, shift, remaining, shPrefix, shRemainingMass);
    __syncthreads();
    prefix = shPrefix;
    remaining = shRemainingMass;
    mask |= 255u << shift;
    __syncthreads();
  }
  return prefix > kth ? prefix : kth;
}

/// The lowest thread whose [excl, excl + mine) holds target, to every
/// thread (BLOCK where none does: rounding); the lowest, so that a float
/// scan's rounding can never let two threads decide. It holds barriers.
template <int BLOCK>
__device__ __forceinline__ int holderOf(float target, float excl, float mine, int &shWinner,
                                        int tid) {
  __syncthreads(); // shWinner may still be read by an earlier call
  if (tid == 0) shWinner = BLOCK;
  __syncthreads();
  if (mine > 0.0f && target >= excl && target < excl + mine) atomicMin(&shWinner, tid);
  __syncthreads();
  return shWinner;
}

/// The draw among t's tokens whose key is at least `threshold`: each thread
/// owns a contiguous run of them; an exclusive scan of the runs' masses
/// finds the run holding uniform * mass, then its thread walks it. The
/// fallback token stands if rounding leaves the target in no run. It holds
/// barriers; shf holds 32 floats.
template <int BLOCK>
__device__ __forceinline__ int drawToken(const TokenSpan &t, unsigned threshold, float maxLogit,
                                         float invT, float uniform, int fallback, float *shf,
                                         int &shToken, int &shWinner, int tid) {
  const int run = (t.n + BLOCK - 1) / BLOCK;
  const int begin = tid * run, stop = min(t.n, begin + run);
  float mine = 0.0f;
  for (int i = begin; i < stop; ++i) {
    const float l = t.logit(i);
    if (orderedKey(l) >= threshold) mine += keptWeight(l, maxLogit, invT);
  }
  float mass;
  const float excl = blockExclusiveScan<float, BLOCK>(mine, shf, mass);
  if (tid == 0) shToken = fallback; // kept whatever the thresholds
  const float target = uniform * mass;
  if (holderOf<BLOCK>(target, excl, mine, shWinner, tid) == tid) {
    float c = excl;
    for (int i = begin; i < stop; ++i) {
      const float l = t.logit(i);
      if (orderedKey(l) >= threshold) {
        c += keptWeight(l, maxLogit, invT);
        if (c > target) {
          shToken = t.token(i);
          break;
        }
      }
    }
  }
  __syncthreads();
  return shToken;
}

/// Shared memory of the sample kernel's helpers.
struct SampleShared {
  float shf[32];
  int shi[32];
  unsigned shu[32];
  unsigned hist[256];
  float histf[256];
  float histw[32][256]; // topPKey's histogram a warp (at most 32 warps a block)
  unsigned prefix;
  int remaining;
  float remainingMass;
  int token, winner;
  float fraction;
};

/// Nothing cut (top-k and top-p both off): the slice holding uniform times
/// the row's mass, by the slices' masses (`scaled`, thread s holding slice
/// s's, at the row's maximum), then the draw within that slice. It holds
/// barriers.
template <int V, int BLOCK, int SLICE>
__device__ __forceinline__ int drawBySlice(const float *l, float scaled, float maxLogit,
                                           float invT, float uniform, int fallback,
                                           SampleShared &sh, int tid) {
  float mass;
  const float excl = blockExclusiveScan<float, BLOCK>(scaled, sh.shf, mass);
  const float target = uniform * mass;
  const int s = holderOf<BLOCK>(target, excl, scaled, sh.winner, tid);
  if (s == BLOCK) return fallback; // rounding left the target in no slice
  if (s == tid) sh.fraction = (target - excl) / scaled;
  __syncthreads();
  const float fraction = sh.fraction;
  const int begin = s * SLICE, end = begin + SLICE < V ? begin + SLICE : V;
  return drawToken<BLOCK>(TokenSpan{l + begin, nullptr, end - begin, begin}, 0u, maxLogit, invT,
                          fraction, fallback, sh.shf, sh.token, sh.winner, tid);
}

/// The row's draw among the tokens of u, or -1 where they cannot decide it:
/// top-k beyond them, or a threshold at or below `bound`, the largest key
/// of the row that u lacks (the candidates: B, the largest key a slice left
/// out; the whole row: 0). `scaled` is thread s's slice mass at the row's
/// maximum, whose sum is the row's mass when neither top-k nor min-p cuts.
/// min-p's floor and top-k's k-th key both bound the kept tokens from
/// below, so the higher one is the lowest key top-p works above (where top-k's
/// k-th among u is at or below `bound`, so is the row's: fewer than k
/// tokens are above it). It holds barriers.
template <int V, int BLOCK>
__device__ __forceinline__ int drawAmong(const TokenSpan &u, const SamplingParams &prm,
                                         float scaled, unsigned bound, Argmax best, float invT,
                                         SampleShared &sh, int tid) {
  const bool cutK = prm.topK > 0 && prm.topK < V;
  if (cutK && prm.topK > u.n) return -1;
  const unsigned kth =
      cutK ? topKKey<BLOCK>(u, prm.topK, sh.hist, sh.prefix, sh.remaining, tid) : 0u;
  const unsigned minKey = minPKey(prm, best.logit);
  const unsigned lowest = kth > minKey ? kth : minKey;
  const bool cut = cutK || prm.minP > 0.0f;
  if (cut && lowest <= bound) return -1;
  float total = scaled; // nothing cut: every token's mass, by slices
  if (cut) {
    total = 0.0f;
    for (int i = tid; i < u.n; i += BLOCK) {
      const float l = u.logit(i);
      if (orderedKey(l) >= lowest) total += keptWeight(l, best.logit, invT);
    }
  }
  total = blockSum<BLOCK>(total, sh.shf);
  const unsigned threshold =
      prm.topP < 1.0f ? topPKey<BLOCK>(u, lowest, best.logit, invT, prm.topP * total, sh.histf,
                                       sh.histw, sh.prefix, sh.remainingMass, tid)
                      : lowest;
  if (!cut && threshold <= bound) return -1;
  return drawToken<BLOCK>(u, threshold, best.logit, invT, prm.uniform, best.token, sh.shf,
                          sh.token, sh.winner, tid);
}

/// p: logits (f32, rows x V), params, tokens out (int32), the sampling
/// workspace argmaxSlices filled (SampleRow).
template <int V, int BLOCK, int SLICE, int C> __device__ void sample(const KvArgs &a) {
  static_assert(BLOCK % 32 == 0 && BLOCK <= 1024 && BLOCK >= 256, "whole warps, a bin a thread");
  constexpr int S = (V + SLICE - 1) / SLICE;
  static_assert(S <= BLOCK, "a slice a thread");
  __shared__ SampleShared sh;
  const int r = blockIdx.x, tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const float *l = reinterpret_cast<const float *>(a.p[0]) + (long long)r * V;
  const SamplingParams prm = reinterpret_cast<const SamplingParams *>(a.p[1])[r];
  int *out = reinterpret_cast<int *>(a.p[2]);
  const SampleRow<S, C> row(a.p[3], r);

  // The conditions below are the row's: every thread takes the same branches
  // and reaches every barrier.
  // The slices' argmaxes in index order: the lowest index among equals
  // still wins.
  const Argmax best = blockArgmaxOf<BLOCK>(tid < S ? row.argmax[tid].logit : -INFINITY,
                                           tid < S ? row.argmax[tid].token : 0x7fffffff, sh.shf,
                                           sh.shi, sh.token, lane, warp);
  if (greedyRow(prm)) {
    if (tid == 0) out[r] = best.token;
    return;
  }
  const float invT = 1.0f / prm.temperature;
  // Thread s: slice s's mass at the row's maximum; B over every slice.
  const SliceMeta me = tid < S ? row.meta[tid] : SliceMeta{0.0f, 0.0f, 0u, 0};
  const float scaled = tid < S ? me.mass * keptWeight(me.maxLogit, best.logit, invT) : 0.0f;
  const unsigned bound = blockMax<BLOCK>(me.bound, sh.shu);
  int token;
  if (!(prm.topK > 0 && prm.topK < V) && !(prm.topP < 1.0f) && !(prm.minP > 0.0f)) {
    token = drawBySlice<V, BLOCK, SLICE>(l, scaled, best.logit, invT, prm.uniform, best.token, sh,
                                         tid);
  } else {
    // The candidates first; where they cannot decide, the whole row (which
    // lacks no key: every threshold is above 0).
    token = drawAmong<V, BLOCK>(TokenSpan{nullptr, row.cands, S * C, 0}, prm, scaled, bound, best,
                                invT, sh, tid);
    if (token == -1)
      token = drawAmong<V, BLOCK>(TokenSpan{l, nullptr, V, 0}, prm, scaled, 0u, best, invT, sh,
                                  tid);
    if (token == -1) token = best.token; // only NaN logits' keys reach 0
  }
  if (tid == 0) out[r] = token;
}

} // namespace kvplan
