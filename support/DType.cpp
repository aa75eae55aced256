// Names and sizes of the element types.
#include "support/DType.h"

namespace kvplan {

const char *dtypeName(DType t) {
  switch (t) {
  case DType::f32: return "f32";
  case DType::bf16: return "bf16";
  case DType::f16: return "f16";
  case DType::i32: return "i32";
  case DType::i8: return "int8";
  }
  return "?";
}

std::optional<DType> parseDType(const std::string &s) {
  if (s == "f32" || s == "float32") return DType::f32;
  if (s == "bf16" || s == "bfloat16") return DType::bf16;
  if (s == "f16" || s == "float16") return DType::f16;
  if (s == "i32") return DType::i32;
  if (s == "int8" || s == "i8") return DType::i8;
  return std::nullopt;
}

int64_t dtypeBytes(DType t) {
  switch (t) {
  case DType::f32: case DType::i32: return 4;
  case DType::bf16: case DType::f16: return 2;
  case DType::i8: return 1;
  }
  return 0;
}

bool isFloatDType(DType t) { return t == DType::f32 || t == DType::bf16 || t == DType::f16; }

bool isWeightDType(DType t) { return isFloatDType(t) || t == DType::i8; }

} // namespace kvplan
