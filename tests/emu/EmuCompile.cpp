// Building the emulated kernels (see EmuCompile.h).
#include "tests/emu/EmuCompile.h"
#include "support/TempDir.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace fs = std::filesystem;

namespace kvplan {

std::string emuCudaIncludeDir() {
#ifdef KVPLAN_CUDA_INCLUDE
  if (fs::exists(fs::path(KVPLAN_CUDA_INCLUDE) / "cuda_bf16.h")) return KVPLAN_CUDA_INCLUDE;
#endif
  return "";
}

bool emuSanitized() {
  // An instrumented library needs the runtime in the process from its start:
  // preloaded (the test binaries themselves are not instrumented) or linked.
  return ::dlsym(RTLD_DEFAULT, "__asan_init") != nullptr;
}

namespace {

/// The sanitized libraries' folders, kept until the process exits so that
/// a report can name the kernel's source lines (it dies at the report).
std::vector<std::unique_ptr<TempDir>> &keptScratch() {
  static std::vector<std::unique_ptr<TempDir>> kept;
  return kept;
}

} // namespace

void *emuCompile(const std::string &source) {
  const std::string include = emuCudaIncludeDir();
  if (include.empty()) throw std::runtime_error("the emulator needs the CUDA headers");
  const bool asan = emuSanitized();
  auto scratch = std::make_unique<TempDir>("kvplan-emu");
  if (!scratch->made())
    throw std::runtime_error("cannot create a temporary folder for the emulator");
  const fs::path &dir = scratch->path();
  {
    std::ifstream tail(std::string(KVPLAN_SOURCE_DIR) + "/tests/emu/CudaEmuLaunch.inc");
    std::stringstream t;
    t << tail.rdbuf();
    std::ofstream f(dir / "kernels.cu");
    f << source << "\n" << t.str();
  }
  const std::string so = (dir / "kernels.so").string();
  // Sanitized: every load and store of device memory checked (the fake
  // runtime's allocations end where their bytes do), and UBSan's checks,
  // alignment among them; the fibers' frames are not (asan-stack=0: the
  // emulator switches stacks itself). The compiler runs without the test's
  // preloaded runtime.
  const std::string flags =
      asan ? "-g -fsanitize=address,undefined -fno-sanitize-recover=undefined "
             "--param=asan-stack=0 -fno-omit-frame-pointer "
           : "";
  const std::string cmd = std::string(asan ? "env -u LD_PRELOAD " : "") +
                          "g++ -std=c++17 -O1 -shared -fPIC -w " + flags + "-I" + include +
                          " -include " + std::string(KVPLAN_SOURCE_DIR) +
                          "/tests/emu/CudaEmu.h -x c++ " + (dir / "kernels.cu").string() +
                          " -o " + so + " > " + (dir / "log").string() + " 2>&1";
  if (std::system(cmd.c_str()) != 0) {
    std::ifstream log(dir / "log");
    std::stringstream l;
    l << log.rdbuf();
    throw std::runtime_error("compiling the generated source for the emulator failed:\n" +
                             l.str().substr(0, 4000));
  }
  void *library = ::dlopen(so.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!library) throw std::runtime_error(std::string("dlopen: ") + ::dlerror());
  // Otherwise the files can go once mapped.
  if (asan) keptScratch().push_back(std::move(scratch));
  return library;
}

} // namespace kvplan
