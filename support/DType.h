// Element types of weights, activations and the KV cache, with their names
// and sizes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace kvplan {

/// Element types. `i8` is kvplan's int8 weight format: matrices quantized in
/// groups of kInt8Group weights along the input dimension, each group with
/// one f32 scale. `i4` is kvplan's int4 weight format: 4-bit codes in
/// groups of kInt4Group along the input dimension, each group with an f32
/// scale and an f32 minimum (value = code * scale + min); its bytes are not
/// a whole number per element, so dtypeBytes() refuses it (docs/artifact.md).
/// `mxfp4` is the OCP microscaling format gpt-oss's experts are published
/// in, as ggml stores it: 4-bit E2M1 codes in groups of kMxfp4Group along
/// the input dimension, each group with one E8M0 scale byte (a power of
/// two); no whole bytes per element either.
enum class DType { f32, bf16, f16, i32, i8, i4, mxfp4 };
constexpr int64_t kInt8Group = 32;
constexpr int64_t kInt4Group = 32;
constexpr int64_t kMxfp4Group = 32;
const char *dtypeName(DType t);
std::optional<DType> parseDType(const std::string &s);
int64_t dtypeBytes(DType t);
/// Floating-point element types (f32, bf16, f16): the KV cache's choices.
bool isFloatDType(DType t);
/// Weight element types a user may choose: the float ones, int8, int4 and
/// mxfp4.
bool isWeightDType(DType t);
/// The weight types stored in groups along the input dimension, each with
/// its scale (int8, int4, mxfp4): matrices only.
bool isGroupedDType(DType t);
/// Their group's elements (0 for the other types).
int64_t dtypeGroup(DType t);

} // namespace kvplan
