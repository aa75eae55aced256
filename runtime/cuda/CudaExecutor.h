// Runs a cuda-target plan on an NVIDIA GPU: the artifact's cubin is loaded
// through the CUDA runtime (cudaLibraryLoadData; the driver is needed only
// when a device is used), the weights are uploaded once, the arena, KV cache
// and workspace are allocated exactly as the plan bills them after checking
// the bill against the device's free memory, linears go to cuBLAS (loaded at
// run time), and every (entry point, row count) runs eagerly once, then is
// captured as a CUDA Graph and replayed; a call of few rows runs on the
// smallest copy of its entry point that holds them (decode.8). A
// tensor-parallel rank takes one GPU and sums its all_reduce steps with the
// other ranks' through NCCL (loaded at run time too), inside the same graph.
// This header includes no CUDA header.
#pragma once

#include "plan/CudaProgram.h"
#include "runtime/Executor.h"

#include <memory>
#include <string>

namespace kvplan {

/// Whether this process can use a CUDA device; when not, `why` says why
/// ("no CUDA device: ..."). Never throws.
bool cudaDeviceAvailable(std::string *why = nullptr);

struct CudaOptions {
  bool graphs = true; // false: launch every kernel eagerly (--no-graphs)
  /// The device; -1: device 0, or under tensor parallelism the one whose
  /// index is the rank's among the ranks on its machine.
  int device = -1;
  /// A tensor-parallel plan's ranks (null for a plan run alone): their
  /// all_reduce steps go through NCCL, opened at run time, whose unique id
  /// rank 0 sends to the others through `ranks`.
  Collective *ranks = nullptr;
};

class CudaExecutor : public Executor {
public:
  /// Throws InputError when there is no usable device, the artifact holds no
  /// machine code for it, the bill does not fit its free memory, or the
  /// plan and weights disagree.
  CudaExecutor(const Plan &plan, const CudaCode &code, const char *weights, uint64_t weightsBytes,
               const CudaOptions &options = {});
  ~CudaExecutor() override;
  CudaExecutor(const CudaExecutor &) = delete;
  CudaExecutor &operator=(const CudaExecutor &) = delete;

  const Plan &plan() const override;
  std::string describe() const override;
  std::vector<Allocation> allocations() const override;
  int32_t *tokens(const std::string &entry) override;
  int32_t *positions(const std::string &entry) override;
  int32_t *pageTable(const std::string &entry) override;
  int32_t *windowPageTable(const std::string &entry) override;
  void run(const std::string &entry, int64_t activeRows) override;
  const float *logits(const std::string &entry) override;
  void copyPage(int32_t from, int32_t to, bool windowPool) override;
  /// Alone it samples on the device; tensor-parallel ranks sample together
  /// on the host from their slices of the vocabulary (runtime/RankExecutor.h).
  bool samplesOnDevice() const override;
  Collective *collective() const override;
  void setSampling(const std::string &entry, const DeviceSamplingParams *rows,
                   int64_t count) override;
  const int32_t *sampled(const std::string &entry) override;

  /// Graph replay on or off from now on (graphs already captured are kept).
  void setGraphs(bool on);
  bool graphs() const;
  /// Whether a call of an entry point runs on its smallest smaller copy
  /// that holds the call's rows (a decode step of 3 sequences on
  /// decode.8 of a plan for 64: matrix-vector kernels, not cuBLAS); on by
  /// default. Off: every call runs on the entry point it names.
  void setVariants(bool on);
  bool variants() const;
  /// The entry point that ran the last call of `entry`: itself, or the
  /// smaller copy of it that served the call ("decode.8").
  const std::string &servedBy(const std::string &entry);
  /// Graphs captured so far (each (entry point, rows) once; rows above 8
  /// are rounded up to a power of two).
  int64_t graphsCaptured() const;
  /// Kernels launched as programmatic dependents from now on, where the
  /// device has them (compute capability 9.0 and up; not under
  /// KVPLAN_CUDA_SYNC); graphs captured the other way are dropped, to be
  /// captured again. For benchmarks comparing the two; KVPLAN_CUDA_PDL=0
  /// starts with them off.
  void setDependentLaunches(bool on);
  bool dependentLaunches() const;

  // For tests that check kernels one by one against the CPU runtime.
  const CudaProgram &program() const;
  /// Runs ops [firstOp, lastOp] of `entry` eagerly (inputs already on the
  /// device: no host copies) and waits.
  void runOps(const std::string &entry, int64_t activeRows, size_t firstOp, size_t lastOp);
  void upload(DeviceBuffer buffer, int64_t offset, const void *data, int64_t bytes);
  void download(DeviceBuffer buffer, int64_t offset, void *data, int64_t bytes);
  void fill(DeviceBuffer buffer, int64_t offset, int byte, int64_t bytes);

private:
  struct Impl;
  std::unique_ptr<Impl> impl;
};

/// Device-to-device copy bandwidth in bytes per second (bytes read plus
/// bytes written), best of several copies of `bytes`; 0 when there is no
/// device.
double measureCudaCopyBandwidth(int64_t bytes = int64_t(1) << 30);

} // namespace kvplan
