// A CUDA-target plan run on the CPU through the kernel emulator
// (tests/emu/CudaEmu.h): the generated source is compiled with the host
// compiler into a shared library, the launch table is replayed exactly as
// runtime/cuda/CudaExecutor replays it (resolveLaunch), and cuBLAS's
// products are computed by a plain loop with the same arguments. For tests
// on machines without a GPU.
#pragma once

#include "runtime/CudaProgram.h"
#include "runtime/Executor.h"

#include <map>
#include <string>
#include <vector>

namespace kvplan {

class EmuExecutor : public Executor {
public:
  /// Compiles `source` (the generated CUDA source) for the emulator; throws
  /// std::runtime_error with the compiler's messages when that fails.
  EmuExecutor(const Plan &plan, const CudaProgram &program, const std::string &source,
              const char *weights, uint64_t weightsBytes);
  ~EmuExecutor() override;

  /// Where the emulator needs the CUDA headers (cuda_bf16.h): empty when
  /// this build found none.
  static std::string cudaIncludeDir();

  const Plan &plan() const override { return plan_; }
  std::string describe() const override { return "cuda kernels emulated on the CPU"; }
  int32_t *tokens(const std::string &e) override;
  int32_t *positions(const std::string &e) override;
  int32_t *pageTable(const std::string &e) override;
  void run(const std::string &entry, int64_t activeRows) override;
  const float *logits(const std::string &entry) override;
  bool samplesOnDevice() const override { return true; }
  void setSampling(const std::string &entry, const DeviceSamplingParams *rows,
                   int64_t count) override;
  const int32_t *sampled(const std::string &entry) override;

  // The CudaExecutor's test interface.
  const CudaProgram &program() const { return program_; }
  void runOps(const std::string &entry, int64_t activeRows, size_t firstOp, size_t lastOp);
  void upload(DeviceBuffer b, int64_t offset, const void *data, int64_t bytes);
  void download(DeviceBuffer b, int64_t offset, void *data, int64_t bytes);
  void fill(DeviceBuffer b, int64_t offset, int byte, int64_t bytes);

private:
  struct Entry {
    const EntryPoint *ep = nullptr;
    const CudaEntry *ce = nullptr;
    std::vector<int32_t> tok, pos, table, sampled;
    std::vector<DeviceSamplingParams> params;
    std::vector<float> logits;
    int64_t tokOff = 0, posOff = 0, tableOff = 0, logitsOff = 0, logitRows = 0, vocab = 0;
    bool logitsFollow = true;
    int64_t lastActive = 1;
  };
  Entry &entry(const std::string &name);
  void launch(const DeviceOp &op, int64_t active);
  char *base(DeviceBuffer b);

  Plan plan_;
  CudaProgram program_;
  std::vector<char> buffers[4]; // arena, weights, cache, work
  void *library = nullptr;
  void (*launcher)(void *, const void *, const long long *, const long long *) = nullptr;
  std::map<std::string, void *> kernels;
  std::map<std::string, Entry> entries;
};

} // namespace kvplan
