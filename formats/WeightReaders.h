// Internal to the checkpoint readers: one opener per format and the checks
// they share, so each format lives in its own file behind WeightFormats.h.
#pragma once

#include "formats/WeightFormats.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace kvplan {
namespace weights {

/// "[64, 172]".
std::string shapeString(const std::vector<int64_t> &shape);
int64_t elementCount(const std::vector<int64_t> &shape);

/// Throws InputError naming `file`, the canonical tensor, the name the file
/// stores it under and both shapes when `actual` is not `expected`.
void checkShape(const std::string &file, const std::string &name, const std::string &stored,
                const std::vector<int64_t> &actual, const std::vector<int64_t> &expected);

/// Throws InputError: `file` holds no tensor `name` (stored as `stored`);
/// `hint` (may be empty) says what the caller may have got wrong.
[[noreturn]] void missingTensor(const std::string &file, const std::string &name,
                                const std::string &stored, const std::string &hint);

/// The layer index and the rest of a canonical per-layer name
/// ("layers.3.attention.wq" -> 3, "attention.wq"); false for a global one.
bool splitLayerName(const std::string &name, int64_t &layer, std::string &rest);

/// Whether a canonical tensor's rows are q or k head dimensions (wq, wk,
/// bq, bk), which checkpoints written for rotate-half RoPE order by halves.
bool isRopeRows(const std::string &name);

/// Where a checkpoint that fuses projections keeps weight `name` (Phi-3's:
/// the q, k and v rows in one qkv_proj, the gate's then the up projection's
/// in one gate_up_proj): the fused tensor under a canonical-style name
/// (layers.N.attention.wqkv, layers.N.feed_forward.w13), the first of its
/// `total` rows and how many. `leader` is the weight (wq, w1) whose own
/// tensor a checkpoint that does not fuse them has. Nothing for the other
/// weights, or for a model of another architecture.
struct FusedRows {
  std::string fused, leader;
  int64_t first = 0, rows = 0, total = 0;
};
std::optional<FusedRows> fusedRows(const std::string &name, const ModelSpec &model);

/// Where a checkpoint keeps weight `name`: the tensor `nameOf` names, or,
/// where the checkpoint `has` no tensor of the weight a fused one leads with
/// but has the fused one, that one and the weight's rows of it (`fused`).
struct StoredRows {
  std::string stored;
  std::optional<FusedRows> fused;
};
StoredRows storedRows(const std::string &name, const ModelSpec &model,
                      const std::function<std::string(const std::string &)> &nameOf,
                      const std::function<bool(const std::string &)> &has);

/// The bytes of a weight in a tensor of `rows` rows at `data`: all `bytes`,
/// or its rows where `fused` holds several weights' and the tensor has all
/// of them (whole rows of a quantized type are whole blocks, so a row's bytes
/// are the tensor's over its rows). A tensor of another height is left
/// whole, for the shape check to name.
std::pair<const char *, uint64_t> weightBytes(const char *data, uint64_t bytes, int64_t rows,
                                              const std::optional<FusedRows> &fused);

/// A copy of `bytes` at `data`, `rows` rows of `headDim`-row heads in
/// rotate-half order (Hugging Face's), with each head's rows put in kvplan's
/// adjacent-pair order (WeightFormats.cpp says why attention is unchanged):
/// its first `rotaryDim` rows (partial RoPE; 0: the whole head), the halves
/// of that part interleaved, the rest kept in place. Throws InputError
/// naming `file` and `stored` when the rows are not whole heads.
std::vector<char> permutedRopeRows(const std::string &file, const std::string &stored,
                                   const void *data, uint64_t bytes, int64_t rows,
                                   int64_t headDim, int64_t rotaryDim);

// llama2.c legacy .bin (LlamaCCheckpoint.cpp).
ModelConfig readLlamaCConfig(const std::string &path);
std::unique_ptr<WeightSource> openLlamaC(const std::string &path, const ModelSpec &model);

// GGUF v3 (WeightGguf.cpp).
ModelConfig readGgufConfig(const std::string &path);
std::unique_ptr<WeightSource> openGguf(const std::string &path, const ModelSpec &model);

// Hugging Face safetensors, a file or a directory (Safetensors.cpp).
std::unique_ptr<WeightSource> openSafetensors(const std::string &path, const ModelSpec &model);

// "random:SEED" (WeightRandom.cpp).
std::unique_ptr<WeightSource> openRandom(const std::string &source, const ModelSpec &model);

} // namespace weights
} // namespace kvplan
