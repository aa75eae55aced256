// Building the emulated kernels (see EmuCompile.h).
#include "tests/emu/EmuCompile.h"
#include "support/TempDir.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace fs = std::filesystem;

namespace kvplan {

std::string emuCudaIncludeDir() {
#ifdef KVPLAN_CUDA_INCLUDE
  if (fs::exists(fs::path(KVPLAN_CUDA_INCLUDE) / "cuda_bf16.h")) return KVPLAN_CUDA_INCLUDE;
#endif
  return "";
}

void *emuCompile(const std::string &source) {
  const std::string include = emuCudaIncludeDir();
  if (include.empty()) throw std::runtime_error("the emulator needs the CUDA headers");
  const TempDir scratch("kvplan-emu");
  if (!scratch.made()) throw std::runtime_error("cannot create a temporary folder for the emulator");
  const fs::path &dir = scratch.path();
  {
    std::ifstream tail(std::string(KVPLAN_SOURCE_DIR) + "/tests/emu/CudaEmuLaunch.inc");
    std::stringstream t;
    t << tail.rdbuf();
    std::ofstream f(dir / "kernels.cu");
    f << source << "\n" << t.str();
  }
  const std::string so = (dir / "kernels.so").string();
  const std::string cmd = "g++ -std=c++17 -O1 -shared -fPIC -w -I" + include + " -include " +
                          std::string(KVPLAN_SOURCE_DIR) + "/tests/emu/CudaEmu.h -x c++ " +
                          (dir / "kernels.cu").string() + " -o " + so + " > " +
                          (dir / "log").string() + " 2>&1";
  if (std::system(cmd.c_str()) != 0) {
    std::ifstream log(dir / "log");
    std::stringstream l;
    l << log.rdbuf();
    throw std::runtime_error("compiling the generated source for the emulator failed:\n" +
                             l.str().substr(0, 4000));
  }
  // The file can go once mapped.
  void *library = ::dlopen(so.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!library) throw std::runtime_error(std::string("dlopen: ") + ::dlerror());
  return library;
}

} // namespace kvplan
