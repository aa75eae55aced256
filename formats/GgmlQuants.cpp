// ggml's block-quantized types: block layouts (ggml-common.h), exact
// dequantization and the lossless int4/int8 repacking.
//
// Bit-exactness: every value is computed with the operations llama.cpp's
// reference dequantizers (gguf-py/gguf/quants.py) use, in their order: f16
// fields converted exactly to f32, then a product and a sum (or difference),
// each rounded to f32. This file is compiled with -ffp-contract=off so that
// no product and sum fuse into an FMA (which rounds once).
#include "formats/GgmlQuants.h"

#include "support/Half.h"

#include <cstring>
#include <stdexcept>

namespace kvplan {

namespace {

constexpr int64_t kQK = 32;  // elements per block of the simple types
constexpr int64_t kQKK = 256; // elements per K-quant super-block

float halfAt(const uint8_t *p) { return f16ToF32(uint16_t(p[0] | (p[1] << 8))); }

uint32_t u32At(const uint8_t *p) {
  return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
}

/// The 4-bit code of element i (0..31) of a 32-element group whose 16 bytes
/// hold element j in the low nibble and element 16 + j in the high nibble.
uint8_t nibble(const uint8_t *qs, int i) {
  return i < 16 ? uint8_t(qs[i] & 0x0F) : uint8_t(qs[i - 16] >> 4);
}

/// Q5_0/Q5_1's 5-bit code: the nibble plus bit i of the 32-bit qh as bit 4.
uint8_t code5(const uint8_t *qs, uint32_t qh, int i) {
  return uint8_t(nibble(qs, i) | (((qh >> i) & 1u) << 4));
}

/// Q4_K/Q5_K: sub-block j's (0..7) 6-bit scale and minimum, packed in 12
/// bytes: bytes 0..3 hold scales 0..3 and the top bits of scales 4..7,
/// bytes 4..7 the minimums likewise, bytes 8..11 the low nibbles of scale
/// and minimum 4..7.
void scaleMinK(const uint8_t *q, int j, uint8_t &sc, uint8_t &m) {
  if (j < 4) {
    sc = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    sc = uint8_t((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4));
    m = uint8_t((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

// Block layouts, in bytes (ggml-common.h):
//   Q4_0  d f16, qs[16]                                   18
//   Q4_1  d f16, m f16, qs[16]                            20
//   Q5_0  d f16, qh u32, qs[16]                           22
//   Q5_1  d f16, m f16, qh u32, qs[16]                    24
//   Q8_0  d f16, qs[32] int8                              34
//   Q4_K  d f16, dmin f16, scales[12], qs[128]           144
//   Q5_K  d f16, dmin f16, scales[12], qh[32], qs[128]   176
//   Q6_K  ql[128], qh[64], scales[16] int8, d f16        210
//   MXFP4 e u8 (E8M0), qs[16]                             17

void blockQ4_0(const uint8_t *b, float *y) {
  const float d = halfAt(b);
  for (int i = 0; i < 32; ++i)
    y[i] = d * float(int(nibble(b + 2, i)) - 8);
}

void blockQ4_1(const uint8_t *b, float *y) {
  const float d = halfAt(b), m = halfAt(b + 2);
  for (int i = 0; i < 32; ++i) {
    const float p = d * float(nibble(b + 4, i));
    y[i] = p + m;
  }
}

void blockQ5_0(const uint8_t *b, float *y) {
  const float d = halfAt(b);
  const uint32_t qh = u32At(b + 2);
  for (int i = 0; i < 32; ++i)
    y[i] = d * float(int(code5(b + 6, qh, i)) - 16);
}

void blockQ5_1(const uint8_t *b, float *y) {
  const float d = halfAt(b), m = halfAt(b + 2);
  const uint32_t qh = u32At(b + 4);
  for (int i = 0; i < 32; ++i) {
    const float p = d * float(code5(b + 8, qh, i));
    y[i] = p + m;
  }
}

void blockQ8_0(const uint8_t *b, float *y) {
  const float d = halfAt(b);
  for (int i = 0; i < 32; ++i)
    y[i] = float(int8_t(b[2 + i])) * d;
}

/// Q4_K and Q5_K: sub-block j's scale d*sc and minimum dmin*m.
void subScalesK(const uint8_t *b, int j, float &scale, float &min) {
  uint8_t sc, m;
  scaleMinK(b + 4, j, sc, m);
  scale = halfAt(b) * float(sc);
  min = halfAt(b + 2) * float(m);
}

/// Q4_K's code of element i of sub-block j: 32-byte chunk j/2, low nibbles
/// for even j, high for odd.
uint8_t codeQ4_K(const uint8_t *b, int j, int i) {
  return uint8_t((b[16 + 32 * (j / 2) + i] >> (4 * (j % 2))) & 0x0F);
}

void blockQ4_K(const uint8_t *b, float *y) {
  for (int j = 0; j < 8; ++j) {
    float scale, min;
    subScalesK(b, j, scale, min);
    for (int i = 0; i < 32; ++i) {
      const float p = scale * float(codeQ4_K(b, j, i));
      y[32 * j + i] = p - min;
    }
  }
}

void blockQ5_K(const uint8_t *b, float *y) {
  const uint8_t *qh = b + 16, *qs = b + 48;
  for (int j = 0; j < 8; ++j) {
    float scale, min;
    subScalesK(b, j, scale, min);
    for (int i = 0; i < 32; ++i) {
      const int low = (qs[32 * (j / 2) + i] >> (4 * (j % 2))) & 0x0F;
      const int high = (qh[i] >> j) & 1;
      const float p = scale * float(low | (high << 4));
      y[32 * j + i] = p - min;
    }
  }
}

/// Q6_K: element e's low 4 bits come from ql[64 * (e / 128) + e % 64]
/// (high nibble in the second 64 of each 128), its top 2 bits from
/// qh[32 * (e / 128) + e % 32] at bit 2 * ((e % 128) / 32); 16 sub-blocks of
/// 16 each scale by d * scales[e / 16].
void blockQ6_K(const uint8_t *b, float *y) {
  const uint8_t *ql = b, *qh = b + 128;
  const int8_t *scales = reinterpret_cast<const int8_t *>(b + 192);
  const float d = halfAt(b + 208);
  for (int s = 0; s < 16; ++s) {
    const float scale = d * float(scales[s]);
    for (int k = 0; k < 16; ++k) {
      const int e = 16 * s + k, half = e / 128, r = e % 128;
      const int low = (ql[64 * half + r % 64] >> (4 * (r / 64))) & 0x0F;
      const int high = (qh[32 * half + r % 32] >> (2 * (r / 32))) & 3;
      y[e] = scale * float((low | (high << 4)) - 32);
    }
  }
}

/// MXFP4 (gpt-oss's experts): one E8M0 scale byte, then element j in the
/// low nibble of byte j and element 16 + j in the high one, as Q4_0's.
void blockMXFP4(const uint8_t *b, float *y) {
  const float d = e8m0Half(b[0]);
  for (int i = 0; i < 32; ++i)
    y[i] = float(kMxfp4Doubled[nibble(b + 1, i)]) * d;
}

using BlockFn = void (*)(const uint8_t *, float *);

BlockFn blockFn(QuantType t) {
  switch (t) {
  case QuantType::q8_0: return blockQ8_0;
  case QuantType::q4_0: return blockQ4_0;
  case QuantType::q4_1: return blockQ4_1;
  case QuantType::q5_0: return blockQ5_0;
  case QuantType::q5_1: return blockQ5_1;
  case QuantType::q4_k: return blockQ4_K;
  case QuantType::q5_k: return blockQ5_K;
  case QuantType::q6_k: return blockQ6_K;
  case QuantType::mxfp4: return blockMXFP4;
  case QuantType::none: break;
  }
  throw std::invalid_argument("ggml quants: QuantType::none has no blocks");
}

/// The number of blocks in `n` elements of `t`; throws when `n` is not a
/// whole number of them (a caller's bug: readers check row lengths).
int64_t blockCount(QuantType t, int64_t n, const char *what) {
  const int64_t per = quantBlockElements(t);
  if (n < 0 || n % per != 0)
    throw std::invalid_argument(std::string(what) + ": " + std::to_string(n) +
                                " elements is not a whole number of " + quantTypeName(t) +
                                " blocks of " + std::to_string(per));
  return n / per;
}

} // namespace

const char *quantTypeName(QuantType t) {
  switch (t) {
  case QuantType::none: return "none";
  case QuantType::q8_0: return "Q8_0";
  case QuantType::q4_0: return "Q4_0";
  case QuantType::q4_1: return "Q4_1";
  case QuantType::q5_0: return "Q5_0";
  case QuantType::q5_1: return "Q5_1";
  case QuantType::q4_k: return "Q4_K";
  case QuantType::q5_k: return "Q5_K";
  case QuantType::q6_k: return "Q6_K";
  case QuantType::mxfp4: return "MXFP4";
  }
  return "?";
}

std::optional<QuantType> quantTypeOfGgml(uint32_t ggmlType) {
  switch (ggmlType) {
  case 2: return QuantType::q4_0;
  case 3: return QuantType::q4_1;
  case 6: return QuantType::q5_0;
  case 7: return QuantType::q5_1;
  case 8: return QuantType::q8_0;
  case 12: return QuantType::q4_k;
  case 13: return QuantType::q5_k;
  case 14: return QuantType::q6_k;
  case 39: return QuantType::mxfp4;
  default: return std::nullopt;
  }
}

int64_t quantBlockElements(QuantType t) {
  switch (t) {
  case QuantType::q4_k:
  case QuantType::q5_k:
  case QuantType::q6_k: return kQKK;
  case QuantType::none: return 1;
  default: return kQK;
  }
}

int64_t quantBlockBytes(QuantType t) {
  switch (t) {
  case QuantType::none: return 0;
  case QuantType::q8_0: return 34;
  case QuantType::q4_0: return 18;
  case QuantType::q4_1: return 20;
  case QuantType::q5_0: return 22;
  case QuantType::q5_1: return 24;
  case QuantType::q4_k: return 144;
  case QuantType::q5_k: return 176;
  case QuantType::q6_k: return 210;
  case QuantType::mxfp4: return 17;
  }
  return 0;
}

void dequantize(QuantType t, const void *blocks, float *out, int64_t n) {
  const BlockFn fn = blockFn(t);
  const int64_t count = blockCount(t, n, "dequantize");
  const int64_t per = quantBlockElements(t), bytes = quantBlockBytes(t);
  const uint8_t *b = static_cast<const uint8_t *>(blocks);
  for (int64_t i = 0; i < count; ++i)
    fn(b + i * bytes, out + i * per);
}

bool hasInt4Groups(QuantType t) {
  return t == QuantType::q4_0 || t == QuantType::q4_1 || t == QuantType::q4_k;
}
bool hasInt8Groups(QuantType t) {
  return t == QuantType::q8_0 || t == QuantType::q5_0 || t == QuantType::mxfp4;
}

bool int4Groups(QuantType t, const void *blocks, int64_t n, uint8_t *codes, float *scales,
                float *mins) {
  if (!hasInt4Groups(t))
    return false;
  const int64_t count = blockCount(t, n, "int4Groups");
  const int64_t bytes = quantBlockBytes(t);
  const uint8_t *b = static_cast<const uint8_t *>(blocks);
  for (int64_t k = 0; k < count; ++k, b += bytes) {
    if (t == QuantType::q4_k) {
      // d*sc*q - dmin*m: the scale d*sc and the minimum -(dmin*m), whose
      // addition is the reference's subtraction.
      for (int j = 0; j < 8; ++j, codes += 32) {
        float scale, min;
        subScalesK(b, j, scale, min);
        *scales++ = scale;
        *mins++ = -min;
        for (int i = 0; i < 32; ++i)
          codes[i] = codeQ4_K(b, j, i);
      }
      continue;
    }
    // Q4_0: d*(q-8) = d*q + (-8d) exactly (an f16 scale times a code below
    // 16 needs at most 15 significant bits). Q4_1: d*q + m as stored.
    const float d = halfAt(b);
    const bool q40 = t == QuantType::q4_0;
    *scales++ = d;
    *mins++ = q40 ? -8.0f * d : halfAt(b + 2);
    const uint8_t *qs = b + (q40 ? 2 : 4);
    for (int i = 0; i < 32; ++i)
      codes[i] = nibble(qs, i);
    codes += 32;
  }
  return true;
}

bool int8Groups(QuantType t, const void *blocks, int64_t n, int8_t *codes, float *scales) {
  if (!hasInt8Groups(t))
    return false;
  const int64_t count = blockCount(t, n, "int8Groups");
  const int64_t bytes = quantBlockBytes(t);
  const uint8_t *b = static_cast<const uint8_t *>(blocks);
  for (int64_t k = 0; k < count; ++k, b += bytes, codes += 32) {
    if (t == QuantType::mxfp4) { // the doubled E2M1 value and 2^(e - 128): exact
      *scales++ = e8m0Half(b[0]);
      for (int i = 0; i < 32; ++i)
        codes[i] = kMxfp4Doubled[nibble(b + 1, i)];
      continue;
    }
    *scales++ = halfAt(b);
    if (t == QuantType::q8_0) {
      std::memcpy(codes, b + 2, 32);
      continue;
    }
    const uint32_t qh = u32At(b + 2);
    for (int i = 0; i < 32; ++i)
      codes[i] = int8_t(int(code5(b + 6, qh, i)) - 16);
  }
  return true;
}

float e8m0Half(uint8_t e) {
  const uint32_t bits = e < 2 ? uint32_t(0x00200000) << e : uint32_t(e - 1) << 23;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

} // namespace kvplan
