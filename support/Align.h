// Rounding sizes and offsets up to a multiple: used by the buffer planner,
// the artifact layout, the weight table and the CUDA workspace.
#pragma once

#include <cstdint>
#include <type_traits>

namespace kvplan {

/// The smallest multiple of `a` (> 0) that is at least `v` (>= 0).
template <typename T, typename U> constexpr std::common_type_t<T, U> alignUp(T v, U a) {
  static_assert(std::is_integral_v<T> && std::is_integral_v<U>);
  using C = std::common_type_t<T, U>;
  return (C(v) + C(a) - 1) / C(a) * C(a);
}

/// a / b rounded up, for a >= 0 and b > 0.
template <typename T, typename U> constexpr std::common_type_t<T, U> ceilDiv(T a, U b) {
  static_assert(std::is_integral_v<T> && std::is_integral_v<U>);
  using C = std::common_type_t<T, U>;
  return (C(a) + C(b) - 1) / C(b);
}

} // namespace kvplan
