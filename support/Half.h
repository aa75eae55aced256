// Conversion between f32 and the 16-bit float types (bf16, f16), exact
// round-to-nearest-even, vectorisable loops.
#pragma once

#include "support/DType.h"

#include <cstdint>

namespace kvplan {

/// Converts `count` elements between f32, f16 and bf16 (round to nearest
/// even; f16 overflow becomes infinity).
void convertElements(const void *src, DType from, void *dst, DType to, int64_t count);
float bf16ToF32(uint16_t v);
float f16ToF32(uint16_t v);
uint16_t f32ToBf16(float v);
uint16_t f32ToF16(float v);

} // namespace kvplan
