// Element types of weights, activations and the KV cache, with their names
// and sizes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace kvplan {

/// Element types. `i8` is kvplan's int8 weight format: matrices quantized in
/// groups of kInt8Group weights along the input dimension, each group with
/// one f32 scale (docs/artifact.md).
enum class DType { f32, bf16, f16, i32, i8 };
constexpr int64_t kInt8Group = 32;
const char *dtypeName(DType t);
std::optional<DType> parseDType(const std::string &s);
int64_t dtypeBytes(DType t);
/// Floating-point element types (f32, bf16, f16): the KV cache's choices.
bool isFloatDType(DType t);
/// Weight element types a user may choose: the float ones and int8.
bool isWeightDType(DType t);

} // namespace kvplan
