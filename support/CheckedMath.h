// Sizes computed from numbers a file gave (a plan's shapes, its cache layout,
// its bill): products and sums that refuse rather than wrap.
#pragma once

#include "support/Error.h"

#include <cstdint>
#include <string>

namespace kvplan {

/// a * b, or an InputError naming `what()` (e.g. "the bytes of a [4, 8] f32
/// tensor"; called only then) when it does not fit in 64 bits.
template <typename What> int64_t checkedMul(int64_t a, int64_t b, What what) {
  int64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r))
    throw InputError(std::string(what()) + ": " + std::to_string(a) + " x " +
                     std::to_string(b) + " does not fit in 64 bits; recompile the model with this "
                     "kvplan");
  return r;
}

/// a + b, or an InputError naming `what()` when it does not fit in 64 bits.
template <typename What> int64_t checkedAdd(int64_t a, int64_t b, What what) {
  int64_t r = 0;
  if (__builtin_add_overflow(a, b, &r))
    throw InputError(std::string(what()) + ": " + std::to_string(a) + " + " +
                     std::to_string(b) + " does not fit in 64 bits; recompile the model with this "
                     "kvplan");
  return r;
}

/// v (>= 0) rounded up to a multiple of a (> 0), or an InputError naming
/// `what()` when that does not fit in 64 bits.
template <typename What> int64_t checkedAlignUp(int64_t v, int64_t a, What what) {
  return checkedAdd(v, a - 1, what) / a * a;
}

} // namespace kvplan
