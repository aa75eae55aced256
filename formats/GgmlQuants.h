// llama.cpp's (ggml's) block-quantized tensor types as GGUF files store
// them: sizes, exact dequantization to f32 (bit for bit as llama.cpp's
// reference code), and the lossless repacking of the types that fit
// kvplan's int8 and int4 layouts.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace kvplan {

/// The quantized ggml types kvplan reads; `none` is a plain f32/f16/bf16
/// tensor.
enum class QuantType { none, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k, mxfp4 };

/// "Q4_K" and so on (llama.cpp's names).
const char *quantTypeName(QuantType t);
/// The quantized type of a ggml type number, if kvplan reads it.
std::optional<QuantType> quantTypeOfGgml(uint32_t ggmlType);
/// Elements per block (32, or 256 for the K-quants) and bytes per block.
int64_t quantBlockElements(QuantType t);
int64_t quantBlockBytes(QuantType t);

/// MXFP4's E2M1 values doubled (ggml's kvalues_mxfp4): code c, its sign in
/// bit 3, stands for kMxfp4Doubled[c] x 2^(e - 128) under the block's E8M0
/// scale byte e (the doubling undone by the halved scale), so that every
/// value is an integer (the integer-dot kernels take them as int8).
inline constexpr int8_t kMxfp4Doubled[16] = {0,  1,  2,  3,  4,  6,  8,  12,
                                             0, -1, -2, -3, -4, -6, -8, -12};

/// 2^(e - 128) as an f32 for an MXFP4 scale byte e, exactly as ggml's
/// GGML_E8M0_TO_FP32_HALF (subnormal for e of 0 and 1).
float e8m0Half(uint8_t e);

/// Dequantizes `n` elements (a multiple of quantBlockElements) starting at
/// the first block of `blocks`, exactly as llama.cpp's reference
/// dequantizers (gguf-py) do.
void dequantize(QuantType t, const void *blocks, float *out, int64_t n);

/// Whether int4Groups (Q4_0, Q4_1, Q4_K) and int8Groups (Q8_0, Q5_0, MXFP4) take
/// `t`: its blocks are kvplan's groups of 32 exactly, repacked bit for bit.
bool hasInt4Groups(QuantType t);
bool hasInt8Groups(QuantType t);

/// For Q4_0, Q4_1 and Q4_K: the 4-bit codes (one per byte, 0..15) and each
/// group of 32's scale and minimum such that `float(code) * scale + min`
/// (a product and a sum, each rounded to f32) equals dequantize() bit for
/// bit. `n` is a multiple of quantBlockElements. False for other types.
bool int4Groups(QuantType t, const void *blocks, int64_t n, uint8_t *codes, float *scales,
                float *mins);

/// For Q8_0, Q5_0 and MXFP4: int8 codes and one scale per group of 32 such that
/// `float(code) * scale` equals dequantize() bit for bit. False for other
/// types.
bool int8Groups(QuantType t, const void *blocks, int64_t n, int8_t *codes, float *scales);

} // namespace kvplan
