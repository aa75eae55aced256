// Compiles generated CUDA source for the kernel emulator (CudaEmu.h) into a
// shared library and opens it. For tests.
#pragma once

#include <string>

namespace kvplan {

/// The folder holding cuda_bf16.h, or "" when this build found none.
std::string emuCudaIncludeDir();

/// Whether emulated kernels are built with AddressSanitizer and UBSan:
/// wherever ASan's runtime is in the process (LD_PRELOAD=$(g++
/// -print-file-name=libasan.so), as the emu-asan tests run), so that a load
/// or store outside an allocation of the fake runtime (or a test's buffer),
/// a misaligned one or undefined behaviour is reported where it happens.
bool emuSanitized();

/// Compiles `source` with the host compiler (CudaEmu.h forced in front,
/// CudaEmuLaunch.inc appended) and dlopens the result; the library exports
/// each kernel by name and kvemu_launch(kernel, args, grid[3], block[3]).
/// Throws std::runtime_error with the compiler's messages.
void *emuCompile(const std::string &source);

} // namespace kvplan
