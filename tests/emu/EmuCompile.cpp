// Building the emulated kernels (see EmuCompile.h).
#include "tests/emu/EmuCompile.h"
#include "support/TempDir.h"

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
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

std::string readWhole(const fs::path &path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

/// The host compiler's version line, read once: part of a cached library's key.
const std::string &compilerVersion() {
  static const std::string version = [] {
    std::string out;
    if (FILE *p = ::popen("env -u LD_PRELOAD g++ --version 2>/dev/null", "r")) {
      char buf[256];
      if (std::fgets(buf, sizeof buf, p)) out = buf;
      ::pclose(p);
    }
    return out;
  }();
  return version;
}

/// Where compiled libraries are kept between test processes: $KVPLAN_EMU_CACHE
/// ("off" for none), else the build's emu-cache/ folder.
fs::path cacheDir() {
  const char *env = std::getenv("KVPLAN_EMU_CACHE");
  std::string dir = env ? env : "";
#ifdef KVPLAN_EMU_CACHE_DIR
  if (!env) dir = KVPLAN_EMU_CACHE_DIR;
#endif
  return dir == "off" ? fs::path() : fs::path(dir);
}

std::string hexHash(const std::string &text) {
  std::uint64_t h = 1469598103934665603ull; // FNV-1a; a hit is checked byte for byte
  for (unsigned char c : text) h = (h ^ c) * 1099511628211ull;
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return hex;
}

/// Keeps the newest `keep` entries of the cache (by their last use).
void pruneCache(const fs::path &dir, std::size_t keep) {
  std::error_code ec;
  std::vector<std::pair<fs::file_time_type, fs::path>> entries;
  for (const auto &e : fs::directory_iterator(dir, ec))
    if (e.is_directory(ec) && e.path().filename().string().find('.') == std::string::npos)
      entries.emplace_back(fs::last_write_time(e.path(), ec), e.path());
  if (entries.size() <= keep) return;
  std::sort(entries.begin(), entries.end());
  for (std::size_t i = 0; i + keep < entries.size(); ++i) fs::remove_all(entries[i].second, ec);
}

/// Compiles `unit` (the kernels and the launcher) into `dir`/kernels.so, the
/// debug information naming `named`/kernels.cu. Throws with the compiler's log.
void compileInto(const fs::path &dir, const fs::path &named, const std::string &unit,
                 const std::string &flags) {
  {
    std::ofstream f(dir / "kernels.cu", std::ios::binary);
    f << unit;
  }
  const std::string cmd =
      "env -u LD_PRELOAD g++ -std=c++17 -shared -fPIC -w " + flags +
      "-fdebug-prefix-map=" + dir.string() + "=" + named.string() + " -I" + emuCudaIncludeDir() +
      " -include " + std::string(KVPLAN_SOURCE_DIR) + "/tests/emu/CudaEmu.h -x c++ " +
      (dir / "kernels.cu").string() + " -o " + (dir / "kernels.so").string() + " > " +
      (dir / "log").string() + " 2>&1";
  if (std::system(cmd.c_str()) != 0)
    throw std::runtime_error("compiling the generated source for the emulator failed:\n" +
                             readWhole(dir / "log").substr(0, 4000));
}

/// The cached library for `unit` (compiled now when none is kept), or "" when
/// there is no cache. An entry keeps the unit and what else its library
/// depends on (`context`) and is used only when both match byte for byte.
/// It is written under a private name and renamed into place, so processes
/// compiling the same source at once agree.
fs::path cachedLibrary(const std::string &unit, const std::string &flags) {
  const fs::path dir = cacheDir();
  std::error_code ec;
  if (dir.empty() || (fs::create_directories(dir, ec), !fs::is_directory(dir, ec))) return {};
  const std::string context = compilerVersion() + flags + '\n' + emuCudaIncludeDir() + '\n' +
                              readWhole(std::string(KVPLAN_SOURCE_DIR) + "/tests/emu/CudaEmu.h");
  const fs::path entry = dir / hexHash(context + unit);
  if (fs::exists(entry / "kernels.so", ec) && readWhole(entry / "kernels.cu") == unit &&
      readWhole(entry / "context") == context) {
    fs::last_write_time(entry, fs::file_time_type::clock::now(), ec);
    return entry / "kernels.so";
  }
  const fs::path tmp = entry.string() + "." + std::to_string(::getpid());
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  try {
    compileInto(tmp, entry, unit, flags);
    std::ofstream(tmp / "context", std::ios::binary) << context;
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  fs::remove_all(entry, ec); // a stale entry, or one whose hash collides
  fs::rename(tmp, entry, ec);
  if (ec) fs::remove_all(tmp, ec); // another process has just put the same library there
  pruneCache(dir, 128);
  return entry / "kernels.so";
}

} // namespace

void *emuCompile(const std::string &source) {
  if (emuCudaIncludeDir().empty()) throw std::runtime_error("the emulator needs the CUDA headers");
  const bool asan = emuSanitized();
  // Sanitized: every load and store of device memory checked (the fake
  // runtime's allocations end where their bytes do), and UBSan's checks,
  // alignment among them; the fibers' frames are not (asan-stack=0: the
  // emulator switches stacks itself). The compiler runs without the test's
  // preloaded runtime.
  const std::string flags =
      asan ? "-Og -g1 -fsanitize=address,undefined -fno-sanitize-recover=undefined "
             "--param=asan-stack=0 -fno-omit-frame-pointer "
           : "-O1 ";
  const std::string unit =
      source + "\n" + readWhole(std::string(KVPLAN_SOURCE_DIR) + "/tests/emu/CudaEmuLaunch.inc");
  auto scratch = std::make_unique<TempDir>("kvplan-emu");
  if (!scratch->made())
    throw std::runtime_error("cannot create a temporary folder for the emulator");
  const fs::path &dir = scratch->path();
  // Each load gets its own copy of the library, as each module loaded on a
  // GPU has its own globals (dlopen would hand back the one already open).
  const fs::path cached = cachedLibrary(unit, flags);
  std::error_code ec;
  if (cached.empty() || !fs::copy_file(cached, dir / "kernels.so", ec))
    compileInto(dir, dir, unit, flags);
  void *library = ::dlopen((dir / "kernels.so").c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!library) throw std::runtime_error(std::string("dlopen: ") + ::dlerror());
  // Otherwise the files can go once mapped.
  if (asan) keptScratch().push_back(std::move(scratch));
  return library;
}

} // namespace kvplan
