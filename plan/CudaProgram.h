// The CUDA launch table: what codegen decided for each entry point of a
// plan compiled for the cuda target, as a list of kernel launches and cuBLAS
// matrix products over device buffers. The runtime only replays it; it makes
// no decision of its own. Stored as JSON in the artifact's "cuda.program"
// section (docs/artifact.md). Depends on no CUDA header.
#pragma once

#include "spec/ModelSpec.h"

#include <nlohmann/json_fwd.hpp>

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace kvplan {

/// The device buffers a launch addresses.
enum class DeviceBuffer {
  arena,   // the entry point's activations (the plan's arena offsets)
  weights, // the weights section, uploaded as it is
  cache,   // the KV cache
  work,    // the CUDA workspace: attention partials, RoPE tables, sampling, cuBLAS
};
const char *deviceBufferName(DeviceBuffer b);

struct DeviceRef {
  DeviceBuffer buffer = DeviceBuffer::arena;
  int64_t offset = 0;
};

/// Arguments of every generated kernel, passed by value. The generated
/// source declares the same struct (codegen/cuda/Kernels.cuh).
constexpr int kKernelPointers = 12, kKernelInts = 8, kKernelReals = 4;
/// Byte ranges of the weights a kernel may ask the GPU's L2 for ahead.
constexpr int kPrefetchRanges = int(CompileSettings::kMaxPrefetchWeights);

/// `bytes` bytes from `start`.
struct DeviceRange {
  DeviceRef start;
  int64_t bytes = 0;
};

/// One device operation: a generated kernel, a cuBLAS product, or a sum
/// over tensor-parallel ranks (NCCL).
struct DeviceOp {
  enum Kind { kernel, gemm, allReduce } kind = kernel;
  int64_t step = 0; // the plan step it lowers (the sampling kernel: the step count)

  // kernel
  std::string name;                        // extern "C" symbol in the cubin
  std::array<int64_t, 3> grid{1, 1, 1}, block{1, 1, 1};
  int rowsDim = -1;                        // grid dimension that is the row count (-1: none)
  int64_t rowsPerBlock = 1;                // rows each block along rowsDim covers
  std::vector<DeviceRef> pointers;         // p[0..]
  std::vector<int64_t> ints;               // i[1..]; i[0] is the op's row count
  std::vector<double> reals;               // d[0..]
  // Weights the kernel asks L2 for as it starts, for the products after it
  // (the plan step's prefetch; at most kPrefetchRanges, multiples of 16
  // bytes at multiples of 16): a hint that changes no result.
  std::vector<DeviceRange> prefetch;

  // gemm: out[r, j] = sum_k in[r, k] * weight[j, k] for r < rows, j < m,
  // in column-major terms C(m x rows) = W^T(m x k) * X(k x rows).
  DeviceRef weight, input, output;
  int64_t m = 0, k = 0, lda = 0, ldb = 0, ldc = 0;
  // allReduce: output[r, j] = the sum over ranks of input[r, j], f32, for
  // r < rows, j < k (rows laid end to end, k floats each); input and output
  // may be the same.
  DType weightType = DType::f32, inputType = DType::f32;
  // Both kinds: the op's rows when the entry point runs all of them; ops on
  // pruned rows (the last token only) run staticRows always.
  int64_t staticRows = 0;
  bool rowsFollowActive = true;
};

struct CudaEntry {
  std::vector<DeviceOp> ops;
  // Per-call inputs (tokens, positions, page table, sampling parameters):
  // one block in the workspace laid out as cudaInputsLayout says, copied
  // from the host in one transfer before each run; the kernels read the
  // entry point's tokens, positions and page table there, not at their
  // arena offsets. Then what sampling writes.
  int64_t inputsOffset = 0;
  int64_t samplingParamsOffset = 0; // rows x SamplingParams (20 bytes), in the inputs
  int64_t sampledOffset = 0;        // rows x int32
  int64_t argmaxOffset = 0;         // rows x sampleRowBytes: slices' argmaxes, candidates
  // Sampling, after the logits: the argmax of each slice of every row
  // over many blocks, then the sampling kernel, one block a row.
  std::vector<DeviceOp> sampling;
};

/// What one call of an entry point launches, its graph's nodes: generated
/// kernels (with the sampling kernel where the device samples: not on
/// tensor-parallel ranks, which sample on the host), cuBLAS products and
/// NCCL all-reduces.
struct LaunchCounts {
  int64_t kernels = 0, products = 0, allReduces = 0;
  int64_t nodes() const { return kernels + products + allReduces; }
};
LaunchCounts countLaunches(const CudaEntry &e, bool deviceSampling);

/// Per-row sampling parameters as the sampling kernel reads them.
struct DeviceSamplingParams {
  float temperature; // 0: greedy
  float topP;        // 1: no limit
  int32_t topK;      // 0: no limit
  float uniform;     // in [0, 1): the draw for this row and step
  float minP;        // 0: off; else only logits >= best + temperature ln minP
};
static_assert(sizeof(DeviceSamplingParams) == 20, "the kernel reads 20 bytes per row");

/// A RoPE cos/sin table in the workspace, one per distinct set of
/// frequencies and amplitudes: `positions` rows (max_seq_len) of
/// freqs.size() pairs of f32 (cos, sin) of position * freqs[i], each times
/// amplitudes[i] (1 when the list is empty), which the executor computes at
/// load as the CPU runtime does (runtime/cpu/Kernels.h, ropeTable) and the
/// RoPE kernels read (codegen/cuda/Kernels.cuh, ropeCosSin).
struct CudaRopeTable {
  std::vector<double> freqs;
  std::vector<double> amplitudes; // empty: all 1 (every RoPE without partial LongRoPE)
  int64_t positions = 0;
  int64_t offset = 0; // in the workspace
  int64_t bytes() const { return positions * int64_t(freqs.size()) * 8; }
};
struct RopeParams;
/// Whether table `t` holds what RoPE op `p` rotates by (its frequencies and
/// amplitudes).
bool ropeTableServes(const CudaRopeTable &t, const RopeParams &p);
/// The table for RoPE op `p` (its offset and positions left 0).
CudaRopeTable ropeTableFor(const RopeParams &p);

struct CudaProgram {
  std::vector<std::string> archs;       // sm_90a, ...
  int64_t workspaceBytes = 0;
  int64_t cublasWorkspaceOffset = 0, cublasWorkspaceBytes = 0;
  std::vector<CudaRopeTable> ropeTables;
  std::map<std::string, CudaEntry> entries;
};

/// A kernel launch resolved against the device buffers' base addresses (in
/// DeviceBuffer order): the argument block the generated kernels take and
/// the grid. Shared by the CUDA runtime and the tests' emulator.
struct KernelLaunch {
  struct Args {
    char *p[kKernelPointers];
    long long i[kKernelInts];
    double d[kKernelReals];
    char *pf[kPrefetchRanges];        // DeviceOp::prefetch, null where none
    long long pfBytes[kPrefetchRanges];
  } args;
  std::array<int64_t, 3> grid, block;
};
/// The rows an op runs on when the entry point runs `active` rows.
inline int64_t opRows(const DeviceOp &op, int64_t active) {
  return op.rowsFollowActive ? active : op.staticRows;
}
KernelLaunch resolveLaunch(const DeviceOp &op, int64_t active, char *const bases[4]);

/// Device memory the executor keeps free beside what it allocates, for
/// cuBLAS's handle and the instantiated CUDA graphs, whose sizes the plan
/// cannot know; billed as the "reserve".
constexpr int64_t kCudaRuntimeReserveBytes = int64_t(256) << 20;
/// More reserve for a tensor-parallel rank: NCCL's communicator keeps its
/// buffers on the device (by default 4 MiB per channel and peer for each
/// protocol, more with NVLink SHARP); an upper estimate, to be compared with
/// what a multi-GPU machine shows (docs/tensor-parallel.md).
constexpr int64_t kNcclReserveBytes = int64_t(1) << 30;

/// An entry point's per-call inputs in one block, relative to its start:
/// tokens and positions ([rows] i32), the page table, the sliding layers'
/// page table (where the plan has their pool; else no bytes), the sampling
/// parameters (one per logits row), each at a multiple of 16 bytes.
struct CudaInputsLayout {
  int64_t tokens = 0, positions = 0, pageTable = 0, windowPageTable = 0, params = 0, bytes = 0;
};
struct EntryPoint;
struct Operand;
CudaInputsLayout cudaInputsLayout(const EntryPoint &ep);
/// Where the kernels of entry point `ep` find operand `o` of its steps: the
/// entry point's tokens, positions and page table in its inputs block in
/// the workspace, any other tensor at its arena offset.
DeviceRef cudaOperandRef(const CudaEntry &e, const EntryPoint &ep, const Operand &o);

/// The executor's pinned host memory: per entry point the inputs written
/// before each run (tokens, positions, page table, sampling parameters:
/// one block laid out as cudaInputsLayout says) and what comes back
/// (sampled ids, logits); each entry point's part starts at a multiple of 64
/// bytes. A smaller copy of an entry point (decode.8) shares that one's
/// logits: the executor copies a call's logits into the entry point named.
struct CudaStagingEntry {
  int64_t tokens = 0, positions = 0, pageTable = 0, windowPageTable = 0, params = 0;
  int64_t sampled = 0, logits = 0;
};
struct CudaStaging {
  std::map<std::string, CudaStagingEntry> entries; // offsets in the block
  int64_t bytes = 0;
};
struct Plan;
struct MemoryBill;
CudaStaging cudaHostStaging(const Plan &plan);
int64_t cudaHostStagingBytes(const Plan &plan);

/// What a cuda-target artifact carries beside the plan.
struct CudaCode {
  std::string source;
  CudaProgram program;
  std::map<std::string, std::string> cubins; // arch -> ELF bytes
};

nlohmann::json toJson(const CudaProgram &p);
/// Throws InputError naming the field when the JSON is not a valid program.
CudaProgram cudaProgramFromJson(const nlohmann::json &j);

/// Throws InputError naming the entry point, op and field when an address of
/// `p` lies outside the device buffer it names, as `bill` sizes them: the
/// program and the plan beside it do not belong together.
void checkCudaProgramFits(const CudaProgram &p, const MemoryBill &bill);

/// Artifact sections of a cuda-target artifact.
inline constexpr const char *kCudaProgramSection = "cuda.program";
inline constexpr const char *kCudaSourceSection = "cuda.source";
/// One cubin per architecture: "cuda.cubin.sm_90a".
std::string cudaCubinSection(const std::string &arch);

} // namespace kvplan
