// Checkpoints: llama2.c .bin (legacy layout), GGUF v3, Hugging Face
// safetensors (single file or sharded), and deterministic random weights.
// Every source hands out tensors under kvplan's canonical names in the
// canonical layout (below), whatever the file calls and arranges them.
#pragma once

#include "formats/GgmlQuants.h"
#include "spec/ModelSpec.h"
#include "support/Half.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace kvplan {

/// A tensor as a checkpoint holds it.
///
/// Canonical layout: matrices are [out, in] row-major (PyTorch order);
/// RoPE pairs are adjacent, (x[2j], x[2j+1]), as in llama2.c, GGUF and
/// Meta's checkpoints. Hugging Face checkpoints rotate halves,
/// (x[j], x[j + head_dim/2]); their q/k projection rows (and q/k biases) are
/// permuted into the adjacent order when read, which leaves every attention
/// score unchanged.
///
/// A quantized GGUF tensor has `quant` set: `data` then holds its ggml
/// blocks, each row of the canonical [out, in] matrix a whole number of
/// blocks (formats/GgmlQuants.h), and `dtype` is meaningless.
///
/// A stack of matrices (a mixture of experts' [experts, out, in]) that a
/// checkpoint stores one tensor a matrix (Hugging Face's) has `slabs`: the
/// address of each matrix, in order, and `data` null. sourceSlabs() hands
/// out every tensor as its contiguous parts.
struct SourceTensor {
  std::vector<int64_t> shape;
  DType dtype = DType::f32; // f32, f16 or bf16
  const void *data = nullptr; // valid while the WeightSource lives
  QuantType quant = QuantType::none;
  std::vector<const void *> slabs{};
};

/// Elements of `t` (the product of its shape).
int64_t sourceElements(const SourceTensor &t);

/// `t` as contiguous tensors, in order: itself, or where it has slabs, one
/// tensor of shape[1:] a slab.
std::vector<SourceTensor> sourceSlabs(const SourceTensor &t);

/// Rows [first, first + count) of `t`, viewed as [rows, cols] with cols its
/// last dimension, as f32 in `out` (count * cols floats), whatever its type:
/// f32 copied, f16/bf16 converted and quantized blocks dequantized exactly
/// (formats/GgmlQuants.h).
void sourceRowsToF32(const SourceTensor &t, int64_t first, int64_t count, float *out);

class WeightSource {
public:
  virtual ~WeightSource() = default;
  /// e.g. "llama2.c checkpoint stories260K.bin".
  virtual std::string describe() const = 0;
  /// The tensor under its canonical name (weightTable() names), which must
  /// have shape `expected`. Throws InputError naming the file and tensor
  /// when it is missing, has another shape or an unsupported type.
  virtual SourceTensor tensor(const std::string &name,
                              const std::vector<int64_t> &expected) const = 0;
  /// The bytes the source holds in memory once every tensor of its model
  /// has been asked for: values it makes (random weights) or copies
  /// (permuted or realigned rows). Pages of mapped files are not counted:
  /// the kernel can drop and reread them.
  virtual uint64_t heldBytes() const { return 0; }
};

/// True when `path` is a checkpoint that carries its own model description
/// (a llama2.c .bin or a .gguf).
bool isCheckpointFile(const std::string &path);

/// The model description a checkpoint carries (llama2.c header, GGUF
/// metadata), not yet validated. Throws InputError.
ModelConfig readCheckpointConfig(const std::string &path);

/// Opens weights for `model`: a .bin or .gguf file, a safetensors file, a
/// directory holding model.safetensors or model.safetensors.index.json, or
/// "random:SEED". Throws InputError naming the file and what is wrong
/// (truncated, corrupt, missing tensor, unsupported dtype).
std::unique_ptr<WeightSource> openWeights(const std::string &source, const ModelSpec &model);

/// Whether a directory or file holds Hugging Face safetensors weights.
bool hasSafetensors(const std::string &path);

} // namespace kvplan
