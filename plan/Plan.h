// The plan: what the compiler hands the runtime. Entry points as sequences
// of typed ops (plan/PlanOps.h) over arena offsets, the weight table, the
// KV-cache layout and the memory bill; stored as JSON in the artifact
// (docs/artifact.md).
#pragma once

#include "plan/PlanOps.h"
#include "spec/ModelSpec.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace kvplan {

struct EntryPoint {
  std::string name;    // "prefill", "decode", "verify", "score"; "decode.8": a copy at 8 rows
  int64_t rows = 0;    // static rows: prefill chunk, max batch, draft tokens + 1, score rows, N
  int64_t arenaBytes = 0;
  std::vector<Operand> args;
  std::vector<Operand> results;
  std::vector<Step> steps;

  /// The argument whose role is `role` (tokens, positions, page_table,
  /// kv_cache), or null.
  const Operand *arg(const std::string &role) const;
};

struct WeightEntry {
  std::string name;
  std::vector<int64_t> shape;
  DType dtype = DType::f32;
  uint64_t offset = 0; // in the weights section
  uint64_t bytes = 0;  // int8: the data, padding to 64 bytes, then the scales
  std::vector<std::string> parts; // checkpoint tensors concatenated along dim 0
  // Tensor parallelism: each part is cut along shardDim into shardPieces
  // pieces and rank r of R holds piece r * shardPieces / R (the shape is one
  // piece); shardDim -1: every rank holds the whole tensor. shardWhy says
  // why pieces are fewer than ranks.
  int64_t shardDim = -1, shardPieces = 1;
  std::string shardWhy = std::string();
  // int8, int4 and mxfp4: weights per scale along the last dimension, and
  // where the scales ([rows][ceil(cols / group)], f32; mxfp4's E8M0 bytes)
  // start, from `offset`; int4 only: where the f32 minimums (same shape)
  // start.
  int64_t groupSize = 0;
  uint64_t scalesOffset = 0;
  uint64_t minsOffset = 0;

  /// Throws InputError when the shape's product overflows 64 bits.
  int64_t numElements() const;
  /// Bytes one row of the matrix takes with its share of the scales and
  /// minimums (what an embedding lookup reads).
  int64_t rowBytes() const;
};

/// Where a weight's parts lie from its offset (docs/artifact.md): int8 is
/// [rows][cols] codes, padding to 64 bytes, the scales; int4 is [rows][G]
/// groups of 16 bytes (two codes a byte), padding, the scales, padding, the
/// minimums; mxfp4 is [rows][G] groups of 16 bytes, padding, one E8M0
/// scale byte a group; the float types are their elements.
struct WeightLayout {
  uint64_t bytes = 0;
  int64_t groupSize = 0; // 0 for the float types
  uint64_t scalesOffset = 0, minsOffset = 0;
};
WeightLayout weightLayout(const std::vector<int64_t> &shape, DType dtype);

/// Paged KV cache: [layers][2][pages][kv_heads][page_size][head_dim].
struct KVCacheLayout {
  int64_t layers = 0, pages = 0, pageSize = 0, kvHeads = 0, headDim = 0;
  int64_t pagesPerSequence = 0;
  DType dtype = DType::f32;

  /// Throws InputError when the product overflows 64 bits.
  int64_t bytes() const;
};

/// What running the plan costs in memory, exactly: every buffer an executor
/// allocates when it loads the plan. Plan::memoryBill() throws InputError
/// when a sum overflows 64 bits.
struct MemoryBill {
  int64_t params = 0;
  int64_t weightsBytes = 0;     // sum of the weight tensors
  int64_t weightsBlobBytes = 0; // the weights section as loaded, alignment padding included
  int64_t kvCacheBytes = 0;       // both pools
  int64_t windowKvCacheBytes = 0; // of which the sliding layers' pool
  std::map<std::string, int64_t> arenaBytes; // per entry point
  int64_t arenaAllocBytes = 0; // one arena serves all entry points: the largest
  // cpu: the RoPE tables each call fills; cuda: attention partials, sampling
  // and cuBLAS's workspace, on the device; both: a mixture of experts' scratch.
  int64_t workspaceBytes = 0;
  int64_t hostPinnedBytes = 0; // cuda: host buffers of inputs, sampled ids, logits
  int64_t reserveBytes = 0;    // cuda: kept free for cuBLAS's handle and the graphs
  /// The device's memory (the host's for cpu, at any thread count): weights,
  /// KV cache, arena, workspace, reserve. Pinned host memory is apart.
  int64_t totalBytes = 0;
};

/// The CPU executor's workspace: for each entry point and distinct RoPE
/// parameters, the frequencies (head_dim / 2 doubles; then as many
/// amplitudes where the op has an attention factor) and a table of cos/sin
/// per row (rows x head_dim floats), filled once per call. Every part starts
/// at a multiple of 64 bytes.
struct CpuRopeTable {
  std::string entry;
  RopeParams params;
  int64_t rows = 0;
  int64_t freqsOffset = 0, tableOffset = 0;
};
/// The scratch a moe_ffn step of `rows` rows uses on the CPU: the router's
/// probabilities ([rows, experts] f32), each row's choices ([rows, k] of an
/// i32 expert and an f32 weight), the choices' slots in expert order
/// ([rows, k] i32) and each expert's first slot (experts + 1 i32), then per
/// slot the input row, the gate's and up's activations and the expert's
/// output ([rows x k] rows of in, ff, ff and in f32). Each part starts at a
/// multiple of 64 bytes.
struct MoEScratch {
  int64_t probs = 0, choices = 0, order = 0, firsts = 0;
  int64_t inputs = 0, gates = 0, ups = 0, outputs = 0;
  int64_t sharedGates = 0; // where `gated`: each row's shared expert's gate ([rows] f32)
  int64_t bytes = 0;
};
MoEScratch moeScratch(int64_t rows, int64_t experts, int64_t k, int64_t in, int64_t ff,
                      bool gated);

struct CpuWorkspace {
  std::vector<CpuRopeTable> ropeTables;
  int64_t ropeBytes = 0; // the tables, from offset 0
  /// The largest moe_ffn step's scratch (steps run one at a time), from
  /// ropeBytes; 0 without experts.
  int64_t moeBytes = 0;
  int64_t bytes() const { return ropeBytes + moeBytes; }
  /// The table of `params` in `entry`, or null.
  const CpuRopeTable *ropeTable(const std::string &entry, const RopeParams &params) const;
};
struct Plan;
CpuWorkspace cpuWorkspace(const Plan &plan);

constexpr uint64_t kWeightAlignment = 64;

struct Plan {
  int formatVersion = 0;
  std::string kvplanVersion, gitHash;
  ModelSpec model;
  CompileSettings settings;
  std::vector<WeightEntry> weights;
  KVCacheLayout kvCache;
  /// The sliding layers' own pool where windowed and full layers mix (the
  /// steps whose cache operands say `window`); layers 0: one pool.
  KVCacheLayout windowCache;
  std::map<std::string, EntryPoint> entryPoints;
  // cuda target: the architectures the artifact holds machine code for and
  // the device workspace its launch table uses (runtime/CudaProgram.h).
  std::vector<std::string> cudaArchs;
  int64_t deviceWorkspaceBytes = 0;

  /// Lays the weights out (aligned offsets) in table order.
  void assignWeightOffsets();
  const WeightEntry *findWeight(const std::string &name) const;
  MemoryBill memoryBill() const;
  /// The ranks the plan's layers are split between (settings.tensorParallel).
  int64_t ranks() const { return settings.tensorParallel; }
};

/// What entry point `name` is for: "prefill", "decode", "verify" or "score"; the
/// smaller copies of prefill and decode (a cuda plan's "prefill.8",
/// "decode.1", ..., each with the rows its name says) are for what they
/// copy.
std::string entryRole(const std::string &name);
/// The entry point that runs a call of `entry` on `rows` rows: the smallest
/// of its smaller copies that has that many rows, else `entry` itself.
const EntryPoint &servingEntry(const Plan &plan, const std::string &entry, int64_t rows);

/// The name of rank `rank`'s weights section: "weights" for rank 0 (and
/// every plan that is not tensor parallel), "weights.R" for the others.
std::string weightsSectionName(int64_t rank);
/// The piece of a sharded weight rank `rank` holds.
inline int64_t shardPiece(const WeightEntry &w, int64_t rank, int64_t ranks) {
  return w.shardDim < 0 ? 0 : rank * w.shardPieces / ranks;
}

nlohmann::json toJson(const Plan &p);
/// Reads a plan and validates it (below). Throws InputError naming the
/// entry point, step and field when the JSON is not a valid plan.
Plan planFromJson(const nlohmann::json &j);
/// Checks each entry point's dataflow: every arena operand inside the arena
/// at a multiple of its element size, every value read where it was written
/// and before anything overwrote it, no step writing over its own inputs,
/// every weight named in the table, every cache layer inside the cache; each
/// op's shapes, weights and attributes against each other and the cache
/// (plan/PlanShapes.h); the cache's geometry against the model. A plan that
/// passes cannot make an executor touch memory outside its bill. Throws
/// InputError ("incompatible because ...") naming the step and field.
void validatePlan(const Plan &p);
nlohmann::json toJson(const MemoryBill &b);
/// What the bill's workspace holds, in words ("RoPE tables, the experts'
/// scratch"), for inspect and the report.
std::string workspaceContents(const Plan &p);

} // namespace kvplan
