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
// Its blocks declared one a multiprocessor at least (__launch_bounds__'s
// second figure), so that ptxas takes the registers it needs: left to itself
// it kept Llama-3.2-1B's bf16 attention at batch 8's copy for one row to 128
// and spilled 8 bytes; so bounded it takes 147 (3 blocks a multiprocessor,
// as at 130 before).
constexpr int64_t kAttnMinBlocks = 1;
// A prefill chunk's attention on tensor cores (Kernels.cuh, attnTiled):
// tiles of kAttnTileRows rows, a warp for each query head and tile, up to
// kAttnTileWarps a block: as many of the KV head's query heads as divide
// its group, then as many row tiles as fill the rest, as shared memory
// allows.
constexpr int64_t kAttnTileRows = 16, kAttnTileWarps = 4;
/// A block of attnTiled: heads x row tiles (heads == 0: not tiled).
struct AttnTiling {
  int64_t heads = 0, rowTiles = 0;
  int64_t warps() const { return heads * rowTiles; }
  bool operator==(const AttnTiling &o) const { return heads == o.heads && rowTiles == o.rowTiles; }
};
constexpr int64_t kElementwiseBlock = 256;
// The experts' products (Kernels.cuh, moeGateUp, moeDown): kMoeWarps warps
// a block, a feature each.
constexpr int64_t kMoeWarps = 8;
// Products (codegen/cuda/Kernels.cuh): matrix-vector up to kGemvRows rows,
// aiming at kFillBlocks blocks or more; with quantized weights, tiles of
// kGemmTile rows x kGemmTile features above.
constexpr int64_t kGemvRows = 8;
// matvecMma (bf16, int8 and int4 weights, 2 to kGemvRows rows): kMmaFeatures features a
// block, one tensor-core product's rows. Products of int8 and int4 weights
// at more rows, up to kMmaGroupRows, run on it too, a block taking all the
// rows in tiles of kGemvRows (mvTiles): a decode step at a batch of 9 to
// 32; of bf16 weights up to kMmaBf16Rows (in groups of 8 rows, a block each,
// on an H200 Llama-3.2-1B's decode step at 32 rows took 2.88 ms in 4
// groups, 1.99 on cuBLAS; at 16 rows 1.90 against 1.90; the tiles, which
// read the weights once, are unmeasured on a GPU).
constexpr int64_t kMmaFeatures = 16, kMmaGroupRows = 32, kMmaBf16Rows = 32;
// CUDA's largest grid along y and z.
constexpr int64_t kMaxGridY = 65535;
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

/// A mixture of experts' scratch for a moe_ffn of `rows` rows (Kernels.cuh,
/// the moe kernels): each part's offset from its start, 256-byte aligned.
struct MoeScratchLayout {
  int64_t probs = 0, weights = 0, meta = 0, chosen = 0, slotOf = 0, rowOf = 0, hidden = 0,
          out = 0, bytes = 0;
  int64_t gates = 0; // where `gated`: the shared expert's gate logits, [rows] f32
};
MoeScratchLayout moeScratchLayout(int64_t rows, int64_t experts, int64_t perToken, int64_t hidden,
                                  int64_t ff, bool gated);
/// The largest scratch any moe_ffn of `plan` needs (0 where it has none).
int64_t moeScratchBytes(const Plan &plan);

/// The kernel specialisations a module needs, one wrapper per name, and the
/// RoPE cos/sin tables and the experts' scratch in the workspace they read.
struct Specialisations {
  std::map<std::string, std::string> wrappers; // name -> definition, sorted for a stable source
  std::vector<CudaRopeTable> ropeTables;
  int64_t moeScratch = 0; // the experts' scratch's offset in the workspace

  /// Declares `extern "C" name` (once) running `body` with `block` threads.
  /// Launched as a programmatic dependent (Kernels.cuh), the kernel first
  /// lets the next one start and waits for the one before it, unless the
  /// body `waitsItself` (after reading only weights and the call's inputs).
  /// minBlocks > 0: the blocks a multiprocessor must hold at once
  /// (`__launch_bounds__`'s second argument), which lets ptxas spend
  /// registers where it need not fit more.
  std::string wrapper(const std::string &name, int64_t block, const std::string &body,
                      bool waitsItself = false, int64_t minBlocks = 0);
  /// The cos/sin table of `params`' frequencies.
  DeviceRef ropeTable(const RopeParams &params) const;
};

/// Where an entry point's attention partials go and how keys are split.
struct AttentionSplit {
  int64_t splits = 1;
  // attnTiled's block, when the entry's attention is tiled (attnTiling);
  // else attnPartial with its splits.
  AttnTiling tiling;
  // In the workspace: the partials, their (max, sum), and the splits of
  // each (row, KV head) arrived so far (u32, 0 between calls).
  int64_t partOffset = 0, mlOffset = 0, arrivalsOffset = 0;
};

/// attnTiled's block for `ep`'s attention steps, or none (heads 0) where
/// they are not tiled: the rows must share one page table (a prefill chunk
/// of one sequence) and be whole tiles of kAttnTileRows, head_dim a
/// multiple of 16 up to 128, the queries 32-byte aligned.
AttnTiling attnTiling(const EntryPoint &ep);

/// Lowers `ep`'s steps, then the sampling kernel, into `out`.
void lowerEntry(const Plan &plan, const EntryPoint &ep, const AttentionSplit &split,
                Specialisations &specs, CudaEntry &out);

} // namespace kvplan::cudagen
