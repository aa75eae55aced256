// Kernels of codegen/cuda/Kernels.cuh run one at a time in the emulator
// (tests/emu): a test compiles the kernel library with the wrappers it
// names, then launches them on host memory.
#pragma once

#include "plan/CudaProgram.h"
#include "tests/emu/EmuCompile.h"

#include <gtest/gtest.h>

#include <dlfcn.h>

#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace kvplan::testing {

class EmuKernels : public ::testing::Test {
protected:
  using Launcher = void (*)(void *, const void *, const long long[3], const long long[3]);

  void SetUp() override {
    if (emuCudaIncludeDir().empty())
      GTEST_SKIP() << "no CUDA headers in this build: the kernel emulator needs cuda_bf16.h";
  }

  /// Compiles the kernel library with one wrapper per (name, body).
  void compile(const std::vector<std::pair<std::string, std::string>> &kernels) {
    std::ifstream f(std::string(KVPLAN_SOURCE_DIR) + "/codegen/cuda/Kernels.cuh");
    std::stringstream src;
    src << f.rdbuf() << "\n";
    for (const auto &[name, body] : kernels)
      src << "extern \"C\" __global__ void " << name << "(KvArgs a) { " << body << "; }\n";
    library = emuCompile(src.str());
    launcher = reinterpret_cast<Launcher>(::dlsym(library, "kvemu_launch"));
    ASSERT_NE(launcher, nullptr);
  }

  void launch(const std::string &name, const KernelLaunch::Args &args, long long gx, long long gy,
              long long threads, long long gz = 1) {
    void *k = ::dlsym(library, name.c_str());
    ASSERT_NE(k, nullptr) << name;
    const long long grid[3] = {gx, gy, gz}, block[3] = {threads, 1, 1};
    launcher(k, &args, grid, block);
  }

  void *library = nullptr;
  Launcher launcher = nullptr;
};

} // namespace kvplan::testing
