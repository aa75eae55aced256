// Names and sizes of the element types.
#include "support/DType.h"

#include <stdexcept>

namespace kvplan {

const char *dtypeName(DType t) {
  switch (t) {
  case DType::f32: return "f32";
  case DType::bf16: return "bf16";
  case DType::f16: return "f16";
  case DType::i32: return "i32";
  case DType::i8: return "int8";
  case DType::i4: return "int4";
  case DType::mxfp4: return "mxfp4";
  }
  return "?";
}

std::optional<DType> parseDType(const std::string &s) {
  if (s == "f32" || s == "float32") return DType::f32;
  if (s == "bf16" || s == "bfloat16") return DType::bf16;
  if (s == "f16" || s == "float16") return DType::f16;
  if (s == "i32") return DType::i32;
  if (s == "int8" || s == "i8") return DType::i8;
  if (s == "int4" || s == "i4") return DType::i4;
  if (s == "mxfp4") return DType::mxfp4;
  return std::nullopt;
}

int64_t dtypeBytes(DType t) {
  switch (t) {
  case DType::f32: case DType::i32: return 4;
  case DType::bf16: case DType::f16: return 2;
  case DType::i8: return 1;
  case DType::i4: case DType::mxfp4: break;
  }
  throw std::logic_error(std::string("dtypeBytes: ") + dtypeName(t) +
                         " has no whole number of bytes per element");
}

bool isFloatDType(DType t) { return t == DType::f32 || t == DType::bf16 || t == DType::f16; }

bool isWeightDType(DType t) { return isFloatDType(t) || isGroupedDType(t); }

bool isGroupedDType(DType t) { return t == DType::i8 || t == DType::i4 || t == DType::mxfp4; }

int64_t dtypeGroup(DType t) {
  switch (t) {
  case DType::i8: return kInt8Group;
  case DType::i4: return kInt4Group;
  case DType::mxfp4: return kMxfp4Group;
  default: return 0;
  }
}

} // namespace kvplan
