// Conversion between f32 and the 16-bit float types (bf16, f16).
#include "support/Half.h"

#include <cstring>
#include <stdexcept>
#include <string>

namespace kvplan {

// Each conversion computes every case and picks one with bit masks, with no
// branches or calls, so the loops in convertElements vectorise. (With
// ternaries GCC sinks the floating-point subnormal step into a branch and
// then will not vectorise it, since that step could trap.) The f16
// subnormal cases use the hardware's default round-to-nearest-even.

namespace {

inline uint32_t floatBits(float v) {
  uint32_t b;
  std::memcpy(&b, &v, 4);
  return b;
}

inline float bitsFloat(uint32_t b) {
  float v;
  std::memcpy(&v, &b, 4);
  return v;
}

// All ones when `c` holds, else zero.
inline uint32_t maskIf(bool c) { return 0u - uint32_t(c); }

inline float bf16ToF32Impl(uint16_t v) { return bitsFloat(uint32_t(v) << 16); }

inline uint16_t f32ToBf16Impl(float v) {
  const uint32_t b = floatBits(v);
  // Adding 0x7fff plus the lowest kept bit rounds ties to even, and a carry
  // out of the mantissa correctly bumps the exponent (up to infinity).
  const uint32_t rounded = (b + 0x7fffu + ((b >> 16) & 1u)) >> 16;
  // A NaN whose payload sits in the dropped bits would truncate to infinity:
  // set the quiet bit so it stays a NaN (sign and top payload kept).
  const uint32_t nan = (b >> 16) | 0x0040u;
  const uint32_t isNan = maskIf((b & 0x7fffffffu) > 0x7f800000u);
  return uint16_t((nan & isNan) | (rounded & ~isNan));
}

inline float f16ToF32Impl(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t em = h & 0x7fffu; // exponent and mantissa
  // Normal numbers: move the fields into place and rebias 15 -> 127.
  const uint32_t normal = (em << 13) + ((127u - 15u) << 23);
  // Infinity and NaN: exponent 31 -> 255, payload kept.
  const uint32_t special = (em << 13) + ((255u - 31u) << 23);
  // Subnormals (and zero) are m * 2^-24: build 2^-14 * (1 + m/1024) and
  // subtract 2^-14, which is exact.
  const uint32_t sub =
      floatBits(bitsFloat((em << 13) + (113u << 23)) - bitsFloat(113u << 23));
  const uint32_t isSpecial = maskIf(em >= 0x7c00u), isSub = maskIf(em < 0x0400u);
  const uint32_t mag =
      (special & isSpecial) | (sub & isSub) | (normal & ~(isSpecial | isSub));
  return bitsFloat(sign | mag);
}

inline uint16_t f32ToF16Impl(float v) {
  const uint32_t b = floatBits(v);
  const uint32_t sign = (b >> 16) & 0x8000u;
  const uint32_t a = b & 0x7fffffffu;
  // Normal results: rebias 127 -> 15 (wrapping add of -112 << 23), round the
  // 13 dropped bits to nearest even; a carry moves into the exponent.
  const uint32_t normal = (a + 0xc8000fffu + ((a >> 13) & 1u)) >> 13;
  // Results below 2^-14 are multiples of 2^-24. Adding 0.5, whose ulp is
  // 2^-24, lets the FPU do the rounding; the low bits are then the f16
  // encoding (0x400 when it rounds up to the smallest normal).
  const uint32_t sub = floatBits(bitsFloat(a) + 0.5f) - 0x3f000000u;
  // 65520 and above round to infinity (65504 is the largest f16).
  const uint32_t inf = 0x7c00u;
  // NaN keeps its top payload bits; the quiet bit keeps it a NaN.
  const uint32_t nan = 0x7e00u | ((a >> 13) & 0x03ffu);
  const uint32_t isNan = maskIf(a > 0x7f800000u);
  const uint32_t isInf = maskIf(a >= 0x477ff000u) & ~isNan;
  const uint32_t isSub = maskIf(a < 0x38800000u);
  const uint32_t mag = (nan & isNan) | (inf & isInf) | (sub & isSub) |
                       (normal & ~(isNan | isInf | isSub));
  return uint16_t(sign | mag);
}

template <typename From, typename To, typename Fn>
void convertLoop(const void *src, void *dst, int64_t count, Fn fn) {
  const From *__restrict s = static_cast<const From *>(src);
  To *__restrict d = static_cast<To *>(dst);
  for (int64_t i = 0; i < count; ++i)
    d[i] = fn(s[i]);
}

} // namespace

float bf16ToF32(uint16_t v) { return bf16ToF32Impl(v); }
float f16ToF32(uint16_t v) { return f16ToF32Impl(v); }
uint16_t f32ToBf16(float v) { return f32ToBf16Impl(v); }
uint16_t f32ToF16(float v) { return f32ToF16Impl(v); }

void convertElements(const void *src, DType from, void *dst, DType to, int64_t count) {
  if (count < 0)
    throw std::invalid_argument("convertElements: negative element count " +
                                std::to_string(count));
  if (!isFloatDType(from) || !isFloatDType(to))
    throw std::invalid_argument(std::string("convertElements: cannot convert ") +
                                dtypeName(from) + " to " + dtypeName(to) +
                                "; only f32, f16 and bf16 are weight types");
  if (count == 0)
    return;
  if (from == to) {
    std::memmove(dst, src, size_t(count) * size_t(dtypeBytes(from)));
    return;
  }
  using u16 = uint16_t;
  if (from == DType::f32 && to == DType::f16)
    convertLoop<float, u16>(src, dst, count, [](float v) { return f32ToF16Impl(v); });
  else if (from == DType::f32 && to == DType::bf16)
    convertLoop<float, u16>(src, dst, count, [](float v) { return f32ToBf16Impl(v); });
  else if (from == DType::f16 && to == DType::f32)
    convertLoop<u16, float>(src, dst, count, [](u16 v) { return f16ToF32Impl(v); });
  else if (from == DType::bf16 && to == DType::f32)
    convertLoop<u16, float>(src, dst, count, [](u16 v) { return bf16ToF32Impl(v); });
  // Between the half types, f32 holds either exactly, so going through it
  // rounds only once.
  else if (from == DType::f16 && to == DType::bf16)
    convertLoop<u16, u16>(src, dst, count, [](u16 v) { return f32ToBf16Impl(f16ToF32Impl(v)); });
  else
    convertLoop<u16, u16>(src, dst, count, [](u16 v) { return f32ToF16Impl(bf16ToF32Impl(v)); });
}

} // namespace kvplan
