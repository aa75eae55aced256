// CUDA codegen: from a plan compiled for the cuda target, the CUDA C++
// source of its kernels (kvplan's templates instantiated with the model's
// constants) and the launch table the runtime replays; then nvcc, which
// turns the source into a cubin per architecture. Depends on no MLIR or CUDA
// header: it reads the plan.
#pragma once

#include "plan/CudaProgram.h"
#include "plan/Plan.h"

#include <stdexcept>
#include <string>
#include <vector>

namespace kvplan {

struct CudaModule {
  std::string source;  // CUDA C++, self-contained
  CudaProgram program; // launch table, workspace layout
};

/// Throws InputError when the plan cannot run on the cuda target (too many
/// query heads per KV head for the attention kernel).
CudaModule generateCuda(const Plan &plan, const std::vector<std::string> &archs);

/// The architectures `--arch` names ("sm_80,sm_90a"): each sm_NN or sm_NNa
/// with NN >= 80 (bf16 needs Ampere); "none" alone is the empty list (the
/// source without machine code). Throws InputError.
std::vector<std::string> parseCudaArchs(const std::string &list);
inline constexpr const char *kDefaultCudaArchs = "sm_80,sm_90a";

/// nvcc from $CUDA_HOME/bin, else PATH, else /usr/local/cuda/bin; throws
/// InputError saying how to point kvplan at it when there is none.
std::string findNvcc();

/// A failure of nvcc on generated source: a compiler bug, not the user's.
class NvccError : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// Compiles `source` to a cubin for `arch` with `nvcc`; returns its bytes.
/// Throws NvccError with nvcc's messages when it fails.
std::string compileCubin(const std::string &nvcc, const std::string &source,
                         const std::string &arch);

/// The SM version an ELF cubin was built for (90 for sm_90a), or -1 when the
/// bytes are not a CUDA ELF file.
int cubinSmVersion(const std::string &cubin);

} // namespace kvplan
