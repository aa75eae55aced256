// The checks every checkpoint reader shares, and the dispatch from a weight source string to the reader for its format.
#include "formats/WeightFormats.h"

#include "formats/WeightReaders.h"
#include "support/Half.h"
#include "support/Progress.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace fs = std::filesystem;

namespace kvplan {

int64_t sourceElements(const SourceTensor &t) {
  int64_t n = 1;
  for (int64_t d : t.shape) n *= d;
  return n;
}

std::vector<SourceTensor> sourceSlabs(const SourceTensor &t) {
  if (t.slabs.empty()) return {t};
  std::vector<SourceTensor> out;
  for (const void *slab : t.slabs) {
    SourceTensor s;
    s.shape.assign(t.shape.begin() + 1, t.shape.end());
    s.dtype = t.dtype;
    s.quant = t.quant;
    s.data = slab;
    out.push_back(std::move(s));
  }
  return out;
}

void sourceRowsToF32(const SourceTensor &t, int64_t first, int64_t count, float *out) {
  const int64_t cols = t.shape.empty() ? 1 : t.shape.back();
  if (first < 0 || count < 0 || cols <= 0 || (first + count) * cols > sourceElements(t))
    throw std::invalid_argument("sourceRowsToF32: rows " + std::to_string(first) + " + " +
                                std::to_string(count) + " outside the tensor");
  if (!t.slabs.empty()) { // a slab's rows at a time
    const int64_t perSlab = sourceElements(t) / cols / int64_t(t.slabs.size());
    const std::vector<SourceTensor> slabs = sourceSlabs(t);
    while (count > 0) {
      const int64_t r = first % perSlab, n = std::min(count, perSlab - r);
      sourceRowsToF32(slabs[size_t(first / perSlab)], r, n, out);
      first += n;
      count -= n;
      out += n * cols;
    }
    return;
  }
  if (t.quant == QuantType::none) {
    const char *data = static_cast<const char *>(t.data) + first * cols * dtypeBytes(t.dtype);
    convertElements(data, t.dtype, out, DType::f32, count * cols);
    return;
  }
  // Readers hand out quantized tensors whose rows are whole blocks.
  const int64_t rowBytes = cols / quantBlockElements(t.quant) * quantBlockBytes(t.quant);
  dequantize(t.quant, static_cast<const char *>(t.data) + first * rowBytes, out, count * cols);
}

//===----------------------------------------------------------------------===//
// Shared checks
//===----------------------------------------------------------------------===//

namespace weights {

std::string shapeString(const std::vector<int64_t> &shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

int64_t elementCount(const std::vector<int64_t> &shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

static std::string storedAs(const std::string &name, const std::string &stored) {
  return "tensor '" + name + "'" +
         (stored.empty() || stored == name ? "" : " (stored as '" + stored + "')");
}

void checkShape(const std::string &file, const std::string &name, const std::string &stored,
                const std::vector<int64_t> &actual, const std::vector<int64_t> &expected) {
  if (actual != expected)
    throw InputError(file + ": " + storedAs(name, stored) + " has shape " +
                     shapeString(actual) + " but the model expects " + shapeString(expected) +
                     " (the checkpoint does not match the model description)");
}

void missingTensor(const std::string &file, const std::string &name, const std::string &stored,
                   const std::string &hint) {
  throw InputError(file + ": missing tensor '" + name + "'" +
                   (stored.empty() || stored == name ? "" : " (looked for '" + stored + "')") +
                   (hint.empty() ? "" : "; " + hint));
}

bool splitLayerName(const std::string &name, int64_t &layer, std::string &rest) {
  static const std::string prefix = "layers.";
  if (name.compare(0, prefix.size(), prefix) != 0)
    return false;
  size_t dot = name.find('.', prefix.size());
  if (dot == std::string::npos || dot == prefix.size())
    return false;
  int64_t n = 0;
  for (size_t i = prefix.size(); i < dot; ++i) {
    if (!std::isdigit(static_cast<unsigned char>(name[i])) || n > (int64_t(1) << 40))
      return false;
    n = n * 10 + (name[i] - '0');
  }
  layer = n;
  rest = name.substr(dot + 1);
  return true;
}

// Why permuting q/k rows leaves attention unchanged.
//
// HF rotates halves: for j < d/2 (d = head_dim) it rotates the pair
// (x[j], x[j + d/2]) by angle p * theta^(-2j/d). kvplan rotates adjacent
// pairs (x[2j], x[2j+1]) by the same angle. Let P send HF component j + e*d/2
// to canonical component 2j + e; then the canonical pair j holds exactly the
// HF pair j, so rope_canonical(P x) = P rope_hf(x) for every position p.
// Permuting the output rows of W_q (and b_q) by P gives q' = P q, likewise
// k' = P k, so each score is
//   rope(q')ᵀ rope(k') = (P rope_hf(q))ᵀ (P rope_hf(k)) = rope_hf(q)ᵀ rope_hf(k)
// because P is a permutation (PᵀP = I). V, O and everything else are not
// touched, so the attention output is the same. P acts within each head,
// so grouped-query heads keep their pairing. A row is moved whole, so the
// rows of a block-quantized matrix (each whole blocks) move as they are.
bool isRopeRows(const std::string &name) {
  int64_t layer = 0;
  std::string rest;
  return splitLayerName(name, layer, rest) &&
         (rest == "attention.wq" || rest == "attention.wk" || rest == "attention.bq" ||
          rest == "attention.bk" || rest == "attention.q_norm" || rest == "attention.k_norm");
}

std::optional<FusedRows> fusedRows(const std::string &name, const ModelSpec &model) {
  int64_t layer = 0;
  std::string rest;
  if (model.architecture != Architecture::phi3 || !splitLayerName(name, layer, rest))
    return std::nullopt;
  const std::string l = "layers." + std::to_string(layer) + ".";
  const int64_t q = model.qDim(), kv = model.kvDim(), ff = model.intermediateSize;
  FusedRows r;
  if (rest == "attention.wq" || rest == "attention.wk" || rest == "attention.wv") {
    r.fused = l + "attention.wqkv";
    r.leader = l + "attention.wq";
    r.total = q + 2 * kv;
    r.first = rest == "attention.wq" ? 0 : rest == "attention.wk" ? q : q + kv;
    r.rows = rest == "attention.wq" ? q : kv;
    return r;
  }
  if (rest == "feed_forward.w1" || rest == "feed_forward.w3") {
    r.fused = l + "feed_forward.w13";
    r.leader = l + "feed_forward.w1";
    r.total = 2 * ff;
    r.first = rest == "feed_forward.w1" ? 0 : ff;
    r.rows = ff;
    return r;
  }
  return std::nullopt;
}

StoredRows storedRows(const std::string &name, const ModelSpec &model,
                      const std::function<std::string(const std::string &)> &nameOf,
                      const std::function<bool(const std::string &)> &has) {
  StoredRows r{nameOf(name), fusedRows(name, model)};
  // The weight's own name may be the fused tensor's (a phi3 GGUF's ffn_up):
  // the leader's absence tells which it is.
  if (r.fused && !has(nameOf(r.fused->leader)) && has(nameOf(r.fused->fused)))
    r.stored = nameOf(r.fused->fused);
  else
    r.fused.reset();
  return r;
}

std::pair<const char *, uint64_t> weightBytes(const char *data, uint64_t bytes, int64_t rows,
                                              const std::optional<FusedRows> &fused) {
  if (!fused || rows != fused->total)
    return {data, bytes};
  const uint64_t rowBytes = bytes / uint64_t(fused->total);
  return {data + rowBytes * uint64_t(fused->first), rowBytes * uint64_t(fused->rows)};
}

std::vector<char> permutedRopeRows(const std::string &file, const std::string &stored,
                                   const void *data, uint64_t bytes, int64_t rows,
                                   int64_t headDim, int64_t rotaryDim) {
  if (rows <= 0 || headDim <= 0 || headDim % 2 != 0 || rows % headDim != 0)
    throw InputError(file + ": tensor '" + stored + "' has " + std::to_string(rows) +
                     " rows, which are not whole heads of head_dim " + std::to_string(headDim));
  std::vector<char> out(bytes);
  const char *src = static_cast<const char *>(data);
  const uint64_t rowBytes = bytes / uint64_t(rows);
  const int64_t rot = rotaryDim > 0 ? std::min(rotaryDim, headDim) : headDim;
  const int64_t half = rot / 2;
  Progress progress("permuting " + stored, bytes);
  for (int64_t head = 0; head < rows / headDim; ++head) {
    const int64_t base = head * headDim;
    for (int64_t j = 0; j < half; ++j)
      for (int64_t e = 0; e < 2; ++e)
        std::memcpy(out.data() + uint64_t(base + 2 * j + e) * rowBytes,
                    src + uint64_t(base + j + e * half) * rowBytes, rowBytes);
    // Partial RoPE: the rows past the rotated ones do not turn, and stay.
    std::memcpy(out.data() + uint64_t(base + rot) * rowBytes, src + uint64_t(base + rot) * rowBytes,
                uint64_t(headDim - rot) * rowBytes);
    progress.advance(uint64_t(headDim) * rowBytes);
  }
  return out;
}

} // namespace weights

//===----------------------------------------------------------------------===//
// Dispatch
//===----------------------------------------------------------------------===//

namespace {

std::string lowerExtension(const std::string &path) {
  std::string ext = fs::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return char(std::tolower(c)); });
  return ext;
}

bool endsWith(const std::string &s, const std::string &suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// GGUF files are recognised by their magic as well as their name, since
// downloads do not always keep the extension.
bool isGguf(const std::string &path) {
  if (lowerExtension(path) == ".gguf")
    return true;
  std::error_code ec;
  if (!fs::is_regular_file(path, ec))
    return false;
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  return in.read(magic, 4) && std::memcmp(magic, "GGUF", 4) == 0;
}

bool isLlamaCBin(const std::string &path) { return lowerExtension(path) == ".bin"; }

} // namespace

bool isCheckpointFile(const std::string &path) {
  std::error_code ec;
  if (fs::is_directory(path, ec))
    return false;
  return isLlamaCBin(path) || isGguf(path);
}

ModelConfig readCheckpointConfig(const std::string &path) {
  std::error_code ec;
  if (fs::is_directory(path, ec))
    throw InputError(path + ": is a directory, not a checkpoint file (expected a llama2.c "
                            ".bin or a .gguf)");
  if (isGguf(path))
    return weights::readGgufConfig(path);
  if (isLlamaCBin(path))
    return weights::readLlamaCConfig(path);
  throw InputError(path + ": not a checkpoint that describes its model (expected a llama2.c "
                          ".bin or a .gguf file)");
}

bool hasSafetensors(const std::string &path) {
  std::error_code ec;
  fs::path p(path);
  if (fs::is_directory(p, ec))
    return fs::exists(p / "model.safetensors", ec) ||
           fs::exists(p / "model.safetensors.index.json", ec);
  return endsWith(path, ".safetensors") || endsWith(path, ".safetensors.index.json");
}

std::unique_ptr<WeightSource> openWeights(const std::string &source, const ModelSpec &model) {
  if (source.compare(0, 7, "random:") == 0)
    return weights::openRandom(source, model);
  std::error_code ec;
  fs::path p(source);
  if (!fs::exists(p, ec))
    throw InputError(source + ": no such file or directory (expected a llama2.c .bin, a "
                              ".gguf, safetensors weights or random:SEED)");
  if (fs::is_directory(p, ec)) {
    if (!hasSafetensors(source))
      throw InputError(source + ": the directory holds neither model.safetensors nor "
                                "model.safetensors.index.json");
    return weights::openSafetensors(source, model);
  }
  if (isGguf(source))
    return weights::openGguf(source, model);
  if (hasSafetensors(source))
    return weights::openSafetensors(source, model);
  if (isLlamaCBin(source))
    return weights::openLlamaC(source, model);
  throw InputError(source + ": unknown weight format (expected a llama2.c .bin, a .gguf, a "
                            ".safetensors file or index, a directory holding them, or "
                            "random:SEED)");
}

} // namespace kvplan
