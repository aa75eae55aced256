// Internal to the CUDA codegen: lowers each op of an entry point one to one
// into kernel launches and cuBLAS products (plan/CudaProgram.h), naming the
// kernel specialisations it needs. Every decision it follows was made by a
// pass and shows in the IR: storage types (--narrow-activations), the fused
// RoPE and cache write reading the fused Q/K/V packed (--fuse-rope-kv-write),
// the folded matrix-vector products (--fuse-matvec), the arena offsets
// (--plan-buffers).
#pragma once

#include "plan/CudaProgram.h"
#include "plan/Plan.h"

#include <map>
#include <string>
#include <vector>

namespace kvplan::cudagen {

// Blocks that give every multiprocessor of an H100/H200 two: what the
// matrix-vector products and attention aim at.
constexpr int64_t kFillBlocks = 264;
// Attention (codegen/cuda/Kernels.cuh, attnPartial): kAttnWarps warps a
// block; the keys split so that rows x KV heads x splits reaches
// kFillBlocks where a split keeps kAttnMinKeys keys or more at full context.
constexpr int64_t kAttnWarps = 4, kAttnMinKeys = 32;
constexpr int64_t kElementwiseBlock = 256;
// Products (codegen/cuda/Kernels.cuh): matrix-vector up to kGemvRows rows,
// aiming at kFillBlocks blocks or more; with quantized weights, tiles of
// kGemmTile rows x kGemmTile features above.
constexpr int64_t kGemvRows = 8;
constexpr int64_t kGemmTile = 64, kGemmThreads = 256;
// Sampling: a first kernel finds each slice's argmax (and, for rows that
// sample, its mass and kSampleCandidates candidates) in a block of
// kArgmaxBlock threads, a slice the vocabulary over kFillBlocks rounded up
// to a multiple of kArgmaxBlock tokens (about kFillBlocks blocks at one
// row); the sampling kernel (one block of kSampleBlock per row) merges
// them and draws (Kernels.cuh, sample).
constexpr int64_t kArgmaxBlock = 256, kSampleBlock = 1024, kSampleCandidates = 32;
/// Tokens in a slice of a vocabulary of `vocab` for the argmax pass.
int64_t argmaxSlice(int64_t vocab);
/// The sampling workspace of one row (Kernels.cuh, SampleRow): each slice's
/// argmax (8 bytes), figures (16) and candidates (8 each).
int64_t sampleRowBytes(int64_t vocab);

[[noreturn]] void unsupported(const std::string &what);
const char *cudaType(DType t);

/// The kernel specialisations a module needs, one wrapper per name, and the
/// RoPE cos/sin tables in the workspace they read.
struct Specialisations {
  std::map<std::string, std::string> wrappers; // name -> definition, sorted for a stable source
  std::vector<CudaRopeTable> ropeTables;

  /// Declares `extern "C" name` (once) running `body` with `block` threads.
  /// Launched as a programmatic dependent (Kernels.cuh), the kernel first
  /// lets the next one start and waits for the one before it, unless the
  /// body `waitsItself` (after reading only weights).
  std::string wrapper(const std::string &name, int64_t block, const std::string &body,
                      bool waitsItself = false);
  /// The cos/sin table of `params`' frequencies.
  DeviceRef ropeTable(const RopeParams &params) const;
};

/// Where an entry point's attention partials go and how keys are split.
struct AttentionSplit {
  int64_t splits = 1;
  // In the workspace: the partials, their (max, sum), and the splits of
  // each (row, KV head) arrived so far (u32, 0 between calls).
  int64_t partOffset = 0, mlOffset = 0, arrivalsOffset = 0;
};

/// Lowers `ep`'s steps, then the sampling kernel, into `out`.
void lowerEntry(const Plan &plan, const EntryPoint &ep, const AttentionSplit &split,
                Specialisations &specs, CudaEntry &out);

} // namespace kvplan::cudagen
