// GGUF v3 files (llama.cpp's format): metadata and tensor directory, read in
// place from a mapping. Used for GGUF weights and the vocabulary they embed.
#pragma once

#include "formats/GgmlQuants.h"
#include "support/MappedFile.h"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace kvplan {

class GgufFile {
public:
  /// Opens and checks `path` (magic, version 2 or 3, every length and offset
  /// within the file). Throws InputError naming the file and what is wrong.
  static GgufFile open(const std::string &path);

  enum class Type : uint32_t {
    u8 = 0, i8 = 1, u16 = 2, i16 = 3, u32 = 4, i32 = 5, f32 = 6, boolean = 7,
    string = 8, array = 9, u64 = 10, i64 = 11, f64 = 12,
  };
  /// One metadata value; arrays hold their items (strings in `strings`,
  /// numbers in `numbers`).
  struct Value {
    Type type = Type::u8;
    Type itemType = Type::u8; // arrays only
    double number = 0;        // every numeric and boolean scalar
    std::string string;
    std::vector<double> numbers;
    std::vector<std::string> strings;
  };

  /// ggml tensor types kvplan reads: these and the block-quantized types of
  /// formats/GgmlQuants.h.
  static constexpr uint32_t kF32 = 0, kF16 = 1, kBF16 = 30;
  struct Tensor {
    std::string name;
    std::vector<int64_t> dims; // ggml order: dims[0] is the fastest-varying
    uint32_t ggmlType = 0;
    const void *data = nullptr;
    uint64_t bytes = 0; // 0 for a type kvplan does not read
    QuantType quant = QuantType::none; // set for a block-quantized type
  };

  const std::string &path() const { return file.path(); }
  uint32_t version() const { return version_; }
  const Value *find(const std::string &key) const;
  std::optional<int64_t> integer(const std::string &key) const;
  std::optional<double> number(const std::string &key) const;
  std::optional<std::string> string(const std::string &key) const;
  const std::vector<Tensor> &tensors() const { return tensors_; }
  const Tensor *tensor(const std::string &name) const;

private:
  MappedFile file;
  uint32_t version_ = 0;
  std::map<std::string, Value> metadata;
  std::vector<Tensor> tensors_;
};

} // namespace kvplan
