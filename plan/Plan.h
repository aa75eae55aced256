// The plan: what the compiler hands the runtime. Entry points as op
// sequences over arena offsets, the weight table, the KV-cache layout and
// the memory bill. Target-independent; stored as JSON in the artifact
// (docs/artifact.md).
#pragma once

#include "spec/ModelSpec.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace kvplan {

/// Where an operand of a step lives.
enum class OperandKind {
  arena,   // a tensor at `offset` in the entry point's arena
  kvCache, // the whole KV cache (written in place)
  kvView,  // one layer's cached keys or values, read in place
};

struct Operand {
  OperandKind kind = OperandKind::arena;
  std::string name;            // entry-point arguments only: tokens, positions, ...
  int64_t offset = 0;          // arena
  std::vector<int64_t> shape;  // arena
  DType dtype = DType::f32;    // arena
  int64_t layer = -1;          // kvView
  bool values = false;         // kvView: false = keys, true = values

  int64_t numElements() const;
  int64_t bytes() const { return numElements() * dtypeBytes(dtype); }
};

/// One op of an entry point, run in order.
struct Step {
  std::string op;                            // llm op name without "llm."
  std::map<std::string, std::string> weights; // role (weight, bias) -> weight name
  std::vector<Operand> inputs;
  std::vector<Operand> outputs;
  nlohmann::json attrs = nlohmann::json::object(); // op attributes (eps, num_heads, ...)
};

struct EntryPoint {
  std::string name;    // "prefill" or "decode"
  int64_t rows = 0;    // static rows: prefill chunk or max batch
  int64_t arenaBytes = 0;
  std::vector<Operand> args;
  std::vector<Operand> results;
  std::vector<Step> steps;
};

struct WeightEntry {
  std::string name;
  std::vector<int64_t> shape;
  DType dtype = DType::f32;
  uint64_t offset = 0; // in the weights section
  uint64_t bytes = 0;  // int8: the data, padding to 64 bytes, then the scales
  std::vector<std::string> parts; // checkpoint tensors concatenated along dim 0
  // int8 only: weights per scale along the last dimension, and where the
  // f32 scales ([rows][ceil(cols / group)]) start, from `offset`.
  int64_t groupSize = 0;
  uint64_t scalesOffset = 0;

  int64_t numElements() const;
};

/// Paged KV cache: [layers][2][pages][kv_heads][page_size][head_dim].
struct KVCacheLayout {
  int64_t layers = 0, pages = 0, pageSize = 0, kvHeads = 0, headDim = 0;
  int64_t pagesPerSequence = 0;
  DType dtype = DType::f32;

  int64_t bytes() const {
    return 2 * layers * pages * pageSize * kvHeads * headDim * dtypeBytes(dtype);
  }
};

/// What running the plan costs in memory, exactly.
struct MemoryBill {
  int64_t params = 0;
  int64_t weightsBytes = 0;     // sum of weight tensors
  int64_t weightsBlobBytes = 0; // the weights section, with alignment padding
  int64_t kvCacheBytes = 0;
  std::map<std::string, int64_t> arenaBytes; // per entry point
  int64_t arenaAllocBytes = 0; // one arena serves all entry points: the largest
  int64_t workspaceBytes = 0;  // cuda: attention partials, sampling, cuBLAS workspace
  int64_t totalBytes = 0;      // weights + KV cache + arena + workspace
};

constexpr uint64_t kWeightAlignment = 64;

struct Plan {
  int formatVersion = 0;
  std::string kvplanVersion, gitHash;
  ModelSpec model;
  CompileSettings settings;
  std::vector<WeightEntry> weights;
  KVCacheLayout kvCache;
  std::map<std::string, EntryPoint> entryPoints;
  // cuda target: the architectures the artifact holds machine code for and
  // the device workspace its launch table uses (runtime/CudaProgram.h).
  std::vector<std::string> cudaArchs;
  int64_t deviceWorkspaceBytes = 0;

  /// Lays the weights out (aligned offsets) in table order.
  void assignWeightOffsets();
  const WeightEntry *findWeight(const std::string &name) const;
  MemoryBill memoryBill() const;
};

nlohmann::json toJson(const Plan &p);
/// Throws InputError naming the field when the JSON is not a valid plan.
Plan planFromJson(const nlohmann::json &j);
nlohmann::json toJson(const MemoryBill &b);

} // namespace kvplan
