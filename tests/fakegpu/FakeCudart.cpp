// A fake CUDA runtime for testing runtime/cuda/CudaExecutor.cpp on machines
// without a GPU: the 35 runtime functions the executor calls, over host
// memory. "Cubins" are generated CUDA source, compiled for the kernel
// emulator (tests/emu) when loaded; launches run there. Stream work runs at
// once, except while a stream is being captured: then it is recorded into a
// graph, which cudaGraphLaunch replays. The device (count, compute
// capability, free memory) is set by fakecuda_configure(); in dry mode
// (fakecuda_set_dry) memory is address space only and no code loads.
#include "tests/fakegpu/FakeCuda.h"
#include "plan/CudaProgram.h"
#include "tests/emu/EmuCompile.h"

#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <sys/mman.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace {

struct Device {
  int count = 1, major = 9, minor = 0;
  long long freeBytes = 80LL << 30, totalBytes = 80LL << 30;
} device;

FakeCudaCounters counters;
std::map<void *, size_t> allocations, pinned;
long long allocated = 0;
bool dry = false;
char dryLibrary, dryKernel; // what dry libraries and kernels point at

struct Graph {
  std::vector<std::function<void()>> work;
};
Graph *capturing = nullptr;

using Launcher = void (*)(void *, const void *, const long long *, const long long *);
std::map<const void *, Launcher> launcherOf; // kernel -> its library's kvemu_launch
std::map<const void *, std::string> kernelNames;
// kernel -> its library's kvemu_prefetched: what its runs asked L2 for
using Prefetched = const FakeCudaPrefetch *(*)(size_t *);
std::map<const void *, Prefetched> prefetchedOf;
std::vector<FakeCudaPrefetch> prefetches; // since the last fakecuda_take_prefetched

cudaError_t lastError = cudaSuccess;
// A kernel whose runs fail (fakecuda_fail_kernel): the error is sticky and
// comes back from the next synchronisation, as a device fault does.
std::string failingKernel;
cudaError_t pendingFault = cudaSuccess;
cudaError_t fail(cudaError_t e) {
  lastError = e;
  return e;
}

} // namespace

void fakecudaEnqueue(std::function<void()> work) {
  if (capturing) capturing->work.push_back(std::move(work));
  else work();
}

extern "C" {

void fakecuda_configure(int count, int major, int minor, long long freeBytes) {
  device.count = count;
  device.major = major;
  device.minor = minor;
  device.freeBytes = freeBytes;
  device.totalBytes = std::max(freeBytes, 1LL << 30);
  counters = FakeCudaCounters{};
}

FakeCudaCounters fakecuda_counters() {
  FakeCudaCounters c = counters;
  c.deviceBytes = allocated;
  for (const auto &[p, bytes] : pinned) c.pinnedBytes += (long long)bytes;
  return c;
}

void fakecuda_set_dry(int on) { dry = on != 0; }

size_t fakecuda_take_prefetched(FakeCudaPrefetch *out, size_t max) {
  const size_t n = prefetches.size();
  std::copy(prefetches.begin(), prefetches.begin() + std::ptrdiff_t(std::min(n, max)), out);
  prefetches.clear();
  return n;
}

void fakecuda_fail_kernel(const char *name) {
  failingKernel = name ? name : "";
  pendingFault = cudaSuccess;
  lastError = cudaSuccess;
}

cudaError_t cudaGetDeviceCount(int *count) {
  *count = 0;
  if (device.count == 0) return fail(cudaErrorNoDevice);
  *count = device.count;
  return cudaSuccess;
}
const char *cudaGetErrorString(cudaError_t e) {
  if (e == cudaErrorIllegalAddress) return "an illegal memory access was encountered";
  return e == cudaSuccess ? "no error" : e == cudaErrorNoDevice ? "no CUDA-capable device is detected"
         : e == cudaErrorMemoryAllocation ? "out of memory" : "fake CUDA error";
}
const char *cudaGetErrorName(cudaError_t e) {
  if (e == cudaErrorIllegalAddress) return "cudaErrorIllegalAddress";
  return e == cudaSuccess ? "cudaSuccess" : e == cudaErrorNoDevice ? "cudaErrorNoDevice"
         : e == cudaErrorMemoryAllocation ? "cudaErrorMemoryAllocation" : "cudaErrorUnknown";
}
cudaError_t cudaGetLastError() {
  cudaError_t e = lastError;
  lastError = cudaSuccess;
  return e;
}
int currentDevice = 0;
cudaError_t cudaSetDevice(int d) {
  if (d < 0 || d >= device.count) return fail(cudaErrorInvalidDevice);
  currentDevice = d;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int *d) {
  *d = currentDevice;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int) {
  std::memset(p, 0, sizeof *p);
  std::strcpy(p->name, "kvplan fake GPU");
  p->major = device.major;
  p->minor = device.minor;
  p->totalGlobalMem = size_t(device.totalBytes);
  p->multiProcessorCount = 4;
  return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t *freeBytes, size_t *total) {
  *freeBytes = size_t(device.freeBytes - allocated);
  *total = size_t(device.totalBytes);
  return cudaSuccess;
}
/// AddressSanitizer's (un)poisoning, where its runtime is in the process
/// (preloaded for the sanitized emulator: tests/emu/EmuCompile.h); else null.
using AsanRegion = void (*)(const volatile void *, size_t);
AsanRegion asanRegion(const char *name) {
  return reinterpret_cast<AsanRegion>(::dlsym(RTLD_DEFAULT, name));
}

/// What cudaMalloc allocates for `bytes`: whole 256-byte blocks, as a GPU's.
size_t allocated256(size_t bytes) { return (bytes + 255) / 256 * 256; }

cudaError_t cudaMalloc(void **p, size_t bytes) {
  if ((long long)bytes > device.freeBytes - allocated) return fail(cudaErrorMemoryAllocation);
  if (dry) {
    *p = ::mmap(nullptr, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (*p == MAP_FAILED) return fail(cudaErrorMemoryAllocation);
  } else {
    const size_t rounded = allocated256(bytes);
    *p = std::aligned_alloc(256, rounded);
    // Device memory starts as garbage: all bits set, a NaN in every float
    // type and -1 in every signed integer, so that a kernel reading what
    // nothing wrote spoils what it computes rather than adding a tiny number.
    std::memset(*p, 0xff, bytes);
    // Sanitized kernels may not read the rounding either: the bytes past
    // what was asked for belong to no buffer.
    static const AsanRegion poison = asanRegion("__asan_poison_memory_region");
    if (poison && rounded > bytes) poison(static_cast<char *>(*p) + bytes, rounded - bytes);
  }
  allocations[*p] = bytes;
  allocated += (long long)bytes;
  ++counters.deviceAllocations;
  return cudaSuccess;
}
cudaError_t cudaFree(void *p) {
  if (!p) return cudaSuccess;
  const size_t bytes = allocations[p];
  allocated -= (long long)bytes;
  allocations.erase(p);
  if (dry) {
    ::munmap(p, bytes);
    return cudaSuccess;
  }
  static const AsanRegion unpoison = asanRegion("__asan_unpoison_memory_region");
  if (unpoison) unpoison(p, allocated256(bytes));
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaMallocHost(void **p, size_t bytes) {
  *p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
  pinned[*p] = bytes;
  return cudaSuccess;
}
cudaError_t cudaFreeHost(void *p) {
  pinned.erase(p);
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind) {
  if (capturing) return fail(cudaErrorStreamCaptureUnsupported); // the legacy stream
  if (!dry) std::memcpy(dst, src, n);
  return cudaSuccess;
}
cudaError_t cudaMemset(void *dst, int v, size_t n) {
  if (capturing) return fail(cudaErrorStreamCaptureUnsupported);
  if (!dry) std::memset(dst, v, n);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind, cudaStream_t) {
  ++counters.copies;
  fakecudaEnqueue([=] { std::memcpy(dst, src, n); });
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void *dst, int v, size_t n, cudaStream_t) {
  fakecudaEnqueue([=] { std::memset(dst, v, n); });
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int) {
  *s = reinterpret_cast<cudaStream_t>(new int(1));
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  delete reinterpret_cast<int *>(s);
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) {
  if (capturing) return fail(cudaErrorStreamCaptureUnsupported);
  return pendingFault == cudaSuccess ? cudaSuccess : fail(pendingFault);
}
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }

cudaError_t cudaLibraryLoadData(cudaLibrary_t *lib, const void *code, cudaJitOption *, void **,
                                unsigned int, cudaLibraryOption *, void **, unsigned int) {
  if (dry) {
    *lib = reinterpret_cast<cudaLibrary_t>(&dryLibrary);
    return cudaSuccess;
  }
  try {
    *lib = reinterpret_cast<cudaLibrary_t>(kvplan::emuCompile(static_cast<const char *>(code)));
  } catch (const std::exception &) {
    return fail(cudaErrorInvalidKernelImage);
  }
  return cudaSuccess;
}
cudaError_t cudaLibraryGetKernel(cudaKernel_t *k, cudaLibrary_t lib, const char *name) {
  if (lib == reinterpret_cast<cudaLibrary_t>(&dryLibrary)) {
    *k = reinterpret_cast<cudaKernel_t>(&dryKernel);
    return cudaSuccess;
  }
  void *f = ::dlsym(lib, name);
  if (!f) return fail(cudaErrorSymbolNotFound);
  launcherOf[f] = reinterpret_cast<Launcher>(::dlsym(lib, "kvemu_launch"));
  prefetchedOf[f] = reinterpret_cast<Prefetched>(::dlsym(lib, "kvemu_prefetched"));
  kernelNames[f] = name;
  *k = reinterpret_cast<cudaKernel_t>(f);
  return cudaSuccess;
}
cudaError_t cudaLibraryUnload(cudaLibrary_t lib) {
  if (lib != reinterpret_cast<cudaLibrary_t>(&dryLibrary)) ::dlclose(lib);
  return cudaSuccess;
}
cudaError_t cudaLaunchKernel(const void *func, dim3 grid, dim3 block, void **args, size_t,
                             cudaStream_t) {
  auto it = launcherOf.find(func);
  if (it == launcherOf.end()) return fail(cudaErrorInvalidDeviceFunction);
  if (block.x * block.y * block.z > 1024 || grid.x == 0 || grid.y == 0 || grid.z == 0)
    return fail(cudaErrorInvalidConfiguration);
  // Parameters are copied when the launch is made (or captured), as CUDA does.
  std::vector<char> params(static_cast<const char *>(args[0]),
                           static_cast<const char *>(args[0]) +
                               sizeof(kvplan::KernelLaunch::Args));
  const long long g[3] = {grid.x, grid.y, grid.z}, b[3] = {block.x, block.y, block.z};
  Launcher launch = it->second;
  void *kernel = const_cast<void *>(func);
  ++counters.launches;
  const bool faults = !failingKernel.empty() && kernelNames[func] == failingKernel;
  fakecudaEnqueue([=] {
    if (faults) {
      pendingFault = cudaErrorIllegalAddress;
      return;
    }
    const long long gg[3] = {g[0], g[1], g[2]}, bb[3] = {b[0], b[1], b[2]};
    launch(kernel, params.data(), gg, bb);
    if (Prefetched take = prefetchedOf[kernel]) {
      size_t n = 0;
      const FakeCudaPrefetch *asked = take(&n);
      prefetches.insert(prefetches.end(), asked, asked + n);
    }
  });
  return cudaSuccess;
}

// Launches with attributes: a programmatic dependent is counted, then runs
// as any launch (the emulator runs kernels one after another); any other
// attribute is refused, as a device without it would.
cudaError_t cudaLaunchKernelExC(const cudaLaunchConfig_t *config, const void *func, void **args) {
  for (unsigned i = 0; i < config->numAttrs; ++i) {
    const cudaLaunchAttribute &a = config->attrs[i];
    if (a.id != cudaLaunchAttributeProgrammaticStreamSerialization)
      return fail(cudaErrorNotSupported);
    if (a.val.programmaticStreamSerializationAllowed) ++counters.dependentLaunches;
  }
  return cudaLaunchKernel(func, config->gridDim, config->blockDim, args, config->dynamicSmemBytes,
                          config->stream);
}

cudaError_t cudaStreamBeginCapture(cudaStream_t, cudaStreamCaptureMode) {
  if (capturing) return fail(cudaErrorIllegalState);
  capturing = new Graph;
  return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t, cudaGraph_t *g) {
  *g = reinterpret_cast<cudaGraph_t>(capturing);
  capturing = nullptr;
  ++counters.captures;
  return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t g, unsigned long long) {
  *exec = reinterpret_cast<cudaGraphExec_t>(new Graph(*reinterpret_cast<Graph *>(g)));
  return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t g) {
  delete reinterpret_cast<Graph *>(g);
  return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t g) {
  delete reinterpret_cast<Graph *>(g);
  return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t g, cudaStream_t) {
  ++counters.graphLaunches;
  for (auto &w : reinterpret_cast<Graph *>(g)->work) w();
  return cudaSuccess;
}

using Clock = std::chrono::steady_clock;
cudaError_t cudaEventCreate(cudaEvent_t *e) {
  *e = reinterpret_cast<cudaEvent_t>(new Clock::time_point());
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete reinterpret_cast<Clock::time_point *>(e);
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) {
  *reinterpret_cast<Clock::time_point *>(e) = Clock::now();
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) {
  *ms = std::chrono::duration<float, std::milli>(*reinterpret_cast<Clock::time_point *>(b) -
                                                 *reinterpret_cast<Clock::time_point *>(a))
            .count();
  return cudaSuccess;
}

} // extern "C"
