// nvcc, found and run on generated source; the architectures --arch names;
// the SM version a cubin was built for.
#include "codegen/CudaCodegen.h"
#include "support/TempDir.h"

#include <algorithm>
#include <cerrno>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <sys/wait.h>
#include <unistd.h>

namespace fs = std::filesystem;

namespace kvplan {

namespace {

std::string readFile(const fs::path &p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

} // namespace

std::vector<std::string> parseCudaArchs(const std::string &list) {
  std::vector<std::string> out;
  if (list == "none") return out;
  std::stringstream ss(list);
  std::string a;
  while (std::getline(ss, a, ',')) {
    bool ok = a.size() >= 5 && a.compare(0, 3, "sm_") == 0;
    size_t i = 3;
    while (ok && i < a.size() && std::isdigit(static_cast<unsigned char>(a[i]))) ++i;
    ok = ok && i > 3 && (i == a.size() || (i + 1 == a.size() && a[i] == 'a'));
    if (a == "none")
      throw InputError("--arch: none stands alone (the source without machine code); give "
                       "either none or architectures like sm_80,sm_90a");
    if (!ok || std::stoi(a.substr(3, i - 3)) < 80)
      throw InputError("--arch: '" + a +
                       "' is not a CUDA architecture kvplan builds for; give sm_NN or sm_NNa with "
                       "NN >= 80 (bf16 needs Ampere), e.g. --arch sm_80,sm_90a, or none for the "
                       "source alone");
    if (std::find(out.begin(), out.end(), a) == out.end()) out.push_back(a);
  }
  if (out.empty()) throw InputError("--arch: no architecture given (e.g. --arch sm_90a)");
  return out;
}

std::string findNvcc() {
  auto executable = [](const fs::path &p) { return ::access(p.c_str(), X_OK) == 0; };
  if (const char *home = std::getenv("CUDA_HOME"); home && *home) {
    fs::path p = fs::path(home) / "bin" / "nvcc";
    if (executable(p)) return p.string();
    throw InputError("CUDA_HOME is " + std::string(home) +
                     " but it holds no bin/nvcc; point CUDA_HOME at the CUDA toolkit");
  }
  if (const char *path = std::getenv("PATH")) {
    std::stringstream ss(path);
    std::string dir;
    while (std::getline(ss, dir, ':'))
      if (!dir.empty() && executable(fs::path(dir) / "nvcc")) return (fs::path(dir) / "nvcc").string();
  }
  if (executable("/usr/local/cuda/bin/nvcc")) return "/usr/local/cuda/bin/nvcc";
  throw InputError("nvcc not found: the cuda target compiles its kernels when the model is "
                   "compiled; install the CUDA toolkit and set CUDA_HOME (or put nvcc on PATH)");
}

std::string compileCubin(const std::string &nvcc, const std::string &source,
                         const std::string &arch) {
  const TempDir scratch("kvplan-nvcc");
  if (!scratch.made()) throw NvccError("cannot create a temporary folder for nvcc");
  const fs::path &dir = scratch.path();
  {
    std::ofstream f(dir / "kernels.cu", std::ios::binary);
    f << source;
    if (!f) throw NvccError("cannot write the generated source to " + dir.string());
  }
  const fs::path cubin = dir / ("kernels." + arch + ".cubin"), log = dir / "nvcc.log";
  pid_t pid = ::fork();
  if (pid < 0) throw NvccError("cannot start nvcc");
  if (pid == 0) {
    FILE *l = std::freopen(log.c_str(), "w", stderr);
    if (l) ::dup2(::fileno(stderr), 1);
    const std::string archFlag = "-arch=" + arch, out = cubin.string(), in = (dir / "kernels.cu").string();
    ::execl(nvcc.c_str(), nvcc.c_str(), "-cubin", "-O3", "-std=c++17", archFlag.c_str(), "-o",
            out.c_str(), in.c_str(), static_cast<char *>(nullptr));
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw NvccError(nvcc + " failed on the generated source for " + arch + ":\n" + readFile(log));
  std::string bytes = readFile(cubin);
  if (cubinSmVersion(bytes) < 0)
    throw NvccError(nvcc + " wrote no CUDA ELF cubin for " + arch);
  return bytes;
}

int cubinSmVersion(const std::string &b) {
  // ELF64, e_machine EM_CUDA (190); the SM version sits in bits 8..15 of
  // e_flags in the ABI nvcc 12 and later write.
  if (b.size() < 64 || std::memcmp(b.data(), "\x7f" "ELF", 4) != 0 || b[4] != 2) return -1;
  uint16_t machine;
  uint32_t flags;
  std::memcpy(&machine, b.data() + 18, 2);
  std::memcpy(&flags, b.data() + 48, 4);
  if (machine != 190) return -1;
  return int((flags >> 8) & 0xff);
}

} // namespace kvplan
