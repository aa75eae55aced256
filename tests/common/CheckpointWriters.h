// Test-only writers of the checkpoint files people bring: a GGUF v3 file
// with typed metadata (scalars, string and i32 arrays) and F32 tensors (as
// llama.cpp's gguf-py writes one), a safetensors file of F32 tensors, and a
// text file. Each writes what the format's specification says, independently
// of kvplan's readers.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace kvplan::testing {

inline void writeBytes(const std::filesystem::path &p, const std::string &bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + p.string());
}

/// One F32 tensor in PyTorch's shape order (row-major, last index fastest).
struct F32Tensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> data;
};

/// A safetensors file: an 8-byte little-endian header length, the JSON
/// header (padded with spaces to 8 bytes), then the tensors' bytes.
inline void writeSafetensorsF32(const std::filesystem::path &p,
                                const std::vector<F32Tensor> &tensors) {
  nlohmann::json header = nlohmann::json::object();
  header["__metadata__"] = {{"format", "pt"}};
  std::string data;
  for (const F32Tensor &t : tensors) {
    const size_t bytes = t.data.size() * 4;
    header[t.name] = {{"dtype", "F32"},
                      {"shape", t.shape},
                      {"data_offsets", {data.size(), data.size() + bytes}}};
    data.append(reinterpret_cast<const char *>(t.data.data()), bytes);
  }
  std::string text = header.dump();
  while (text.size() % 8 != 0) text += ' ';
  std::string out(8, '\0');
  const uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out[size_t(i)] = char((n >> (8 * i)) & 0xff);
  writeBytes(p, out + text + data);
}

/// A GGUF v3 file: metadata key/value pairs in the order added, then the
/// tensor directory, then the tensors' data, each aligned to 32 bytes.
class GgufWriter {
public:
  void string(const std::string &key, const std::string &v) {
    header(key, 8);
    str(meta, v);
  }
  void u32(const std::string &key, uint32_t v) {
    header(key, 4);
    raw(meta, v);
  }
  void f32(const std::string &key, float v) {
    header(key, 6);
    raw(meta, v);
  }
  void boolean(const std::string &key, bool v) {
    header(key, 7);
    raw(meta, uint8_t(v));
  }
  void strings(const std::string &key, const std::vector<std::string> &v) {
    header(key, 9);
    raw(meta, uint32_t(8));
    raw(meta, uint64_t(v.size()));
    for (const std::string &s : v) str(meta, s);
  }
  void i32s(const std::string &key, const std::vector<int32_t> &v) {
    header(key, 9);
    raw(meta, uint32_t(5));
    raw(meta, uint64_t(v.size()));
    for (int32_t x : v) raw(meta, x);
  }
  /// An F32 tensor; `shape` in PyTorch order, written reversed as ggml
  /// lists dimensions (fastest-varying first).
  void tensor(const F32Tensor &t) {
    tensor(t.name, t.shape, 0, // GGML_TYPE_F32
           std::string(reinterpret_cast<const char *>(t.data.data()), t.data.size() * 4));
  }
  /// A tensor of ggml type `ggmlType` whose data are `bytes` as stored.
  void tensor(const std::string &name, const std::vector<int64_t> &shape, uint32_t ggmlType,
              const std::string &bytes) {
    str(directory, name);
    raw(directory, uint32_t(shape.size()));
    for (auto d = shape.rbegin(); d != shape.rend(); ++d) raw(directory, uint64_t(*d));
    raw(directory, ggmlType);
    raw(directory, uint64_t(data.size()));
    data += bytes;
    while (data.size() % 32 != 0) data += '\0';
    ++tensors;
  }

  void write(const std::filesystem::path &p) const {
    std::string out = "GGUF";
    raw(out, uint32_t(3));
    raw(out, uint64_t(tensors));
    raw(out, uint64_t(keys));
    out += meta + directory;
    while (out.size() % 32 != 0) out += '\0';
    writeBytes(p, out + data);
  }

private:
  template <typename T> static void raw(std::string &s, T v) {
    s.append(reinterpret_cast<const char *>(&v), sizeof v);
  }
  static void str(std::string &s, const std::string &v) {
    raw(s, uint64_t(v.size()));
    s += v;
  }
  void header(const std::string &key, uint32_t type) {
    str(meta, key);
    raw(meta, type);
    ++keys;
  }

  std::string meta, directory, data;
  uint64_t keys = 0, tensors = 0;
};

} // namespace kvplan::testing
