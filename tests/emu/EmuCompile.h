// Compiles generated CUDA source for the kernel emulator (CudaEmu.h) into a
// shared library and opens it. For tests.
#pragma once

#include <string>

namespace kvplan {

/// The folder holding cuda_bf16.h, or "" when this build found none.
std::string emuCudaIncludeDir();

/// Compiles `source` with the host compiler (CudaEmu.h forced in front,
/// CudaEmuLaunch.inc appended) and dlopens the result; the library exports
/// each kernel by name and kvemu_launch(kernel, args, grid[3], block[3]).
/// Throws std::runtime_error with the compiler's messages.
void *emuCompile(const std::string &source);

} // namespace kvplan
