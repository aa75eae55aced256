// The CUDA executor: replays the launch table codegen wrote, on one stream,
// as CUDA Graphs (one per entry point and row count) or eagerly.
#include "runtime/cuda/CudaExecutor.h"
#include "plan/PlanShapes.h"
#include "runtime/cpu/Kernels.h"

#include <cublas_api.h>
#include <cuda_runtime.h>
#include <dlfcn.h>
#if __has_include(<nccl.h>)
#include <nccl.h>
#define KVPLAN_NCCL_HEADER 1
#endif

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <numeric>
#include <set>
#include <thread>
#include <vector>

namespace kvplan {

namespace {

std::string humanMiB(int64_t bytes) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f MiB", double(bytes) / (1 << 20));
  return buf;
}

/// A CUDA failure while running: a bug or a broken device, not bad input.
[[noreturn]] void cudaFail(cudaError_t e, const std::string &what) {
  throw std::runtime_error("CUDA error in " + what + ": " + cudaGetErrorName(e) + " (" +
                           cudaGetErrorString(e) + ")");
}
void check(cudaError_t e, const std::string &what) {
  if (e != cudaSuccess) cudaFail(e, what);
}

/// One of the CUDA libraries, opened at run time so the kvplan binary
/// starts (and runs CPU artifacts) where they are not installed: the
/// loader's path first, then the toolkit's own folders (often not on the
/// loader's path); the environment variable `own` names one file instead.
void *openCudaLibrary(std::initializer_list<const char *> sonames, const char *own,
                      const std::string &what) {
  std::vector<std::string> names;
  for (const char *so : sonames) {
    names.push_back(so);
    if (const char *home = std::getenv("CUDA_HOME"); home && *home) {
      names.push_back(std::string(home) + "/lib64/" + so);
      names.push_back(std::string(home) + "/lib/" + so);
    }
    names.push_back(std::string("/usr/local/cuda/lib64/") + so);
    names.push_back(std::string("/usr/local/cuda/lib/") + so);
  }
  if (const char *path = std::getenv(own); path && *path) names = {path};
  std::string errors;
  for (const std::string &name : names) {
    if (void *lib = ::dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL)) return lib;
    const char *e = ::dlerror();
    errors += "\n  " + (e ? std::string(e) : name);
  }
  throw InputError("cannot load " + what + ":" + errors + "\ninstall it, add its folder to "
                   "LD_LIBRARY_PATH, or name the file in " + own);
}

/// cuBLAS, opened at run time.
struct Cublas {
  using CreateFn = cublasStatus_t (*)(cublasHandle_t *);
  using DestroyFn = cublasStatus_t (*)(cublasHandle_t);
  using SetStreamFn = cublasStatus_t (*)(cublasHandle_t, cudaStream_t);
  using SetWorkspaceFn = cublasStatus_t (*)(cublasHandle_t, void *, size_t);
  using SetMathModeFn = cublasStatus_t (*)(cublasHandle_t, cublasMath_t);
  using StatusStringFn = const char *(*)(cublasStatus_t);
  using GemmExFn = cublasStatus_t (*)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int,
                                      int, int, const void *, const void *, cudaDataType, int,
                                      const void *, cudaDataType, int, const void *, void *,
                                      cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t);
  void *lib = nullptr;
  CreateFn create = nullptr;
  DestroyFn destroy = nullptr;
  SetStreamFn setStream = nullptr;
  SetWorkspaceFn setWorkspace = nullptr;
  SetMathModeFn setMathMode = nullptr;
  StatusStringFn statusString = nullptr;
  GemmExFn gemmEx = nullptr;

  void load() {
    lib = openCudaLibrary({"libcublas.so.13", "libcublas.so.12"}, "KVPLAN_CUBLAS_LIBRARY",
                          "cuBLAS, which the cuda target's linears use");
    auto sym = [&](const char *n) {
      void *p = ::dlsym(lib, n);
      if (!p) throw InputError(std::string("the cuBLAS library lacks ") + n + "; it is too old");
      return p;
    };
    create = reinterpret_cast<CreateFn>(sym("cublasCreate_v2"));
    destroy = reinterpret_cast<DestroyFn>(sym("cublasDestroy_v2"));
    setStream = reinterpret_cast<SetStreamFn>(sym("cublasSetStream_v2"));
    setWorkspace = reinterpret_cast<SetWorkspaceFn>(sym("cublasSetWorkspace_v2"));
    setMathMode = reinterpret_cast<SetMathModeFn>(sym("cublasSetMathMode"));
    statusString = reinterpret_cast<StatusStringFn>(sym("cublasGetStatusString"));
    gemmEx = reinterpret_cast<GemmExFn>(sym("cublasGemmEx"));
  }
  void check(cublasStatus_t s, const std::string &what) const {
    if (s != CUBLAS_STATUS_SUCCESS)
      throw std::runtime_error("cuBLAS error in " + what + ": " + statusString(s));
  }
};

/// NCCL's ABI, the few parts used, declared here so the runtime builds
/// where NCCL's header is not installed (it is checked against the header
/// where it is).
namespace nccl {
using Comm = struct ncclComm *;
using Result = int;
constexpr Result kSuccess = 0, kInProgress = 7;
constexpr int kFloat32 = 7, kSum = 0;
struct UniqueId {
  char internal[128];
};
} // namespace nccl
#ifdef KVPLAN_NCCL_HEADER
static_assert(sizeof(nccl::UniqueId) == sizeof(ncclUniqueId) && nccl::kFloat32 == ncclFloat32 &&
              nccl::kSum == ncclSum && nccl::kSuccess == ncclSuccess &&
              nccl::kInProgress == ncclInProgress);
#endif

/// NCCL, opened at run time like cuBLAS, for tensor-parallel ranks only.
struct Nccl {
  using VersionFn = nccl::Result (*)(int *);
  using UniqueIdFn = nccl::Result (*)(nccl::UniqueId *);
  using InitRankFn = nccl::Result (*)(nccl::Comm *, int, nccl::UniqueId, int);
  using AllReduceFn = nccl::Result (*)(const void *, void *, size_t, int, int, nccl::Comm,
                                       cudaStream_t);
  using DestroyFn = nccl::Result (*)(nccl::Comm);
  using ErrorStringFn = const char *(*)(nccl::Result);
  void *lib = nullptr;
  VersionFn version = nullptr;
  UniqueIdFn uniqueId = nullptr;
  InitRankFn initRank = nullptr;
  AllReduceFn allReduce = nullptr;
  DestroyFn destroy = nullptr;
  ErrorStringFn errorString = nullptr;

  void load() {
    lib = openCudaLibrary({"libnccl.so.2"}, "KVPLAN_NCCL_LIBRARY",
                          "NCCL, which a tensor-parallel model's ranks sum their all_reduce "
                          "steps with on GPUs");
    auto sym = [&](const char *n) {
      void *p = ::dlsym(lib, n);
      if (!p) throw InputError(std::string("the NCCL library lacks ") + n + "; it is too old");
      return p;
    };
    version = reinterpret_cast<VersionFn>(sym("ncclGetVersion"));
    uniqueId = reinterpret_cast<UniqueIdFn>(sym("ncclGetUniqueId"));
    initRank = reinterpret_cast<InitRankFn>(sym("ncclCommInitRank"));
    allReduce = reinterpret_cast<AllReduceFn>(sym("ncclAllReduce"));
    destroy = reinterpret_cast<DestroyFn>(sym("ncclCommDestroy"));
    errorString = reinterpret_cast<ErrorStringFn>(sym("ncclGetErrorString"));
  }
  void check(nccl::Result r, const std::string &what) const {
    if (r != nccl::kSuccess && r != nccl::kInProgress)
      throw std::runtime_error("NCCL error in " + what + ": " + errorString(r));
  }
  /// "NCCL 2.28.3"
  std::string describe() const {
    int v = 0;
    if (version(&v) != nccl::kSuccess) return "NCCL";
    // From 2.9 the code is major * 10000 + minor * 100 + patch.
    return "NCCL " + std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." +
           std::to_string(v % 100);
  }
};

cudaDataType cudaTypeOf(DType t) {
  switch (t) {
  case DType::f32: return CUDA_R_32F;
  case DType::bf16: return CUDA_R_16BF;
  case DType::f16: return CUDA_R_16F;
  default: break;
  }
  throw InputError(std::string("the cuda runtime has no matrix product for ") + dtypeName(t));
}

} // namespace

bool cudaDeviceAvailable(std::string *why) {
  int n = 0;
  // Without a driver this returns an error (not always cudaErrorNoDevice):
  // any error means no device.
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    if (why)
      *why = std::string("no CUDA device: ") +
             (e != cudaSuccess ? cudaGetErrorString(e) : "the driver reports none");
    cudaGetLastError(); // clear the sticky-free error so later calls start clean
    return false;
  }
  return true;
}

struct CudaExecutor::Impl {
  Plan plan;
  CudaProgram program;
  CudaOptions options;
  cudaDeviceProp props{};
  std::string arch; // the cubin loaded
  cudaStream_t stream = nullptr;
  cudaLibrary_t library = nullptr;
  std::map<std::string, cudaKernel_t> kernels;
  Cublas cublas;
  cublasHandle_t handle = nullptr;
  Nccl nccl;
  nccl::Comm comm = nullptr; // tensor parallelism: this rank's NCCL communicator
  Collective *ranks = nullptr;
  int device = 0;
  char *weights = nullptr, *arena = nullptr, *cache = nullptr, *work = nullptr;
  char *pinned = nullptr; // every entry point's host staging (plan/CudaProgram.h)
  std::vector<Allocation> allocated;
  int64_t captured = 0;
  // KVPLAN_CUDA_SYNC: eager launches, each waited for and checked.
  bool syncEach = false;
  // KVPLAN_CUDA_PROFILE: the file that gets each op's time, for one extra
  // eager run of each (entry point, rows) the first time it runs; while
  // such a run is queued, `marks` takes an event after the inputs and
  // after each op.
  std::string profilePath;
  std::vector<cudaEvent_t> marks;
  size_t marked = 0;
  bool marking = false;
  // Kernels launched as programmatic dependents (compute capability 9.0 and
  // up, unless KVPLAN_CUDA_PDL=0): each may start while the one before it
  // finishes, waiting for it inside (codegen/cuda/Kernels.cuh).
  bool pdl = false;
  // Calls of an entry point run on its smallest copy that holds their rows
  // (setVariants(false): on the entry point itself).
  bool variants = true;

  struct Entry {
    std::string name;
    const EntryPoint *ep = nullptr;
    const CudaEntry *ce = nullptr;
    int64_t inputsBytes = 0; // tokens, positions, page table, sampling parameters
    char *hInputs = nullptr; // ... laid out as in the workspace (cudaInputsLayout)
    int64_t logitsOff = 0, logitRows = 0, vocab = 0;
    bool logitsFollow = true;
    int32_t *hTok = nullptr, *hPos = nullptr, *hTable = nullptr, *hSampled = nullptr;
    int32_t *hWindowTable = nullptr; // the sliding layers' page table, where the plan has it
    DeviceSamplingParams *hParams = nullptr;
    float *hLogits = nullptr;
    int64_t lastActive = 0;
    bool logitsFresh = false;
    // The entry point whose run served the last call of this one: a smaller
    // copy of it (decode.8) whose logits and ids are the call's, or null:
    // itself.
    Entry *served = nullptr;
    Entry &ran() { return served ? *served : *this; }
    // For each count of active rows (index n - 1), the entry point a call of
    // that many runs on (servingEntry): this one or a smaller copy of it.
    std::vector<Entry *> servingFor;
    std::map<int64_t, cudaGraphExec_t> graphs;
    std::set<int64_t> profiled; // rows whose ops' times are in the profile
    RunInputLimits limits; // checked on the host before each run
    int64_t rowsOut(int64_t active) const { return logitsFollow ? active : logitRows; }
  };
  std::map<std::string, Entry> entries;

  char *base(DeviceBuffer b) const {
    switch (b) {
    case DeviceBuffer::arena: return arena;
    case DeviceBuffer::weights: return weights;
    case DeviceBuffer::cache: return cache;
    case DeviceBuffer::work: return work;
    }
    return nullptr;
  }
  Entry &entry(const std::string &name) {
    auto it = entries.find(name);
    if (it == entries.end()) throw InputError("the plan has no entry point '" + name + "'");
    return it->second;
  }
  /// The entry point a call of `e` on `active` rows runs: the smallest copy
  /// of it with that many rows (decode.8 for up to 8 sequences in a plan
  /// for 64), unless variants are off.
  Entry &serving(Entry &e, int64_t active) {
    return variants ? *e.servingFor[size_t(active - 1)] : e;
  }
  /// Hands the inputs the engine wrote into `from`'s host staging to `to`,
  /// a smaller copy of it: the first rows of each, as `from` would have run
  /// them (rows past the call's are padding there and here).
  static void handOver(const Entry &from, Entry &to) {
    const int64_t rows = to.ep->rows, tableRows = to.ep->arg("page_table")->rows();
    const int64_t pps = to.ep->arg("page_table")->cols();
    std::memcpy(to.hTok, from.hTok, size_t(rows) * 4);
    std::memcpy(to.hPos, from.hPos, size_t(rows) * 4);
    std::memcpy(to.hTable, from.hTable, size_t(tableRows * pps) * 4);
    if (to.hWindowTable)
      std::memcpy(to.hWindowTable, from.hWindowTable, size_t(tableRows * pps) * 4);
    std::memcpy(to.hParams, from.hParams,
                size_t(std::min(to.logitRows, from.logitRows)) * sizeof(DeviceSamplingParams));
  }
  void launch(const DeviceOp &op, int64_t active) {
    const int64_t rows = opRows(op, active);
    if (op.kind == DeviceOp::gemm) {
      const float alpha = 1.0f, beta = 0.0f;
      const int64_t n = rows;
      cublas.check(cublas.gemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, int(op.m), int(n), int(op.k),
                                 &alpha, base(op.weight.buffer) + op.weight.offset,
                                 cudaTypeOf(op.weightType), int(op.lda),
                                 base(op.input.buffer) + op.input.offset, cudaTypeOf(op.inputType),
                                 int(op.ldb), &beta, base(op.output.buffer) + op.output.offset,
                                 CUDA_R_32F, int(op.ldc), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                   "the matrix product of step " + std::to_string(op.step));
      return;
    }
    if (op.kind == DeviceOp::allReduce) {
      nccl.check(nccl.allReduce(base(op.input.buffer) + op.input.offset,
                                base(op.output.buffer) + op.output.offset, size_t(rows * op.k),
                                nccl::kFloat32, nccl::kSum, comm, stream),
                 "the all-reduce of step " + std::to_string(op.step));
      return;
    }
    char *const bases[4] = {arena, weights, cache, work};
    KernelLaunch l = resolveLaunch(op, active, bases);
    void *params[] = {&l.args};
    const void *fn = reinterpret_cast<const void *>(kernels.at(op.name));
    const dim3 grid(unsigned(l.grid[0]), unsigned(l.grid[1]), unsigned(l.grid[2]));
    const dim3 block(unsigned(l.block[0]), unsigned(l.block[1]), unsigned(l.block[2]));
    if (!pdl) {
      check(cudaLaunchKernel(fn, grid, block, params, 0, stream), "launching " + op.name);
      return;
    }
    cudaLaunchAttribute attr{};
    attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr.val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t config{};
    config.gridDim = grid;
    config.blockDim = block;
    config.stream = stream;
    config.attrs = &attr;
    config.numAttrs = 1;
    check(cudaLaunchKernelExC(&config, fn, params),
          "launching " + op.name + " as a programmatic dependent (KVPLAN_CUDA_PDL=0 turns it off)");
  }
  /// launch(), then, under KVPLAN_CUDA_SYNC, a wait and a check that name
  /// the launch and the plan step it lowers, so that a failing kernel is
  /// found where it failed rather than at the next synchronisation.
  void launchOp(const Entry &e, const DeviceOp &op, int64_t active) {
    launch(op, active);
    mark();
    if (!syncEach) return;
    cudaError_t err = cudaStreamSynchronize(stream);
    if (err == cudaSuccess) err = cudaGetLastError();
    if (err == cudaSuccess) return;
    std::string what = op.kind == DeviceOp::gemm        ? std::string("the cuBLAS product")
                       : op.kind == DeviceOp::allReduce ? std::string("the NCCL all-reduce")
                                                        : "kernel " + op.name;
    what += " of " + e.name + ", ";
    if (op.step >= 0 && size_t(op.step) < e.ep->steps.size()) {
      const Step &st = e.ep->steps[size_t(op.step)];
      what += "plan step " + std::to_string(op.step) + " (" + st.name() +
              (st.loc.empty() ? "" : " at " + st.loc) + ")";
    } else {
      what += "the sampling after the plan's steps";
    }
    cudaFail(err, what + ", on " + std::to_string(active) + " rows");
  }
  /// One run of `e` on `active` rows, as stream work: inputs in, every op,
  /// sampling, sampled tokens out.
  void enqueue(Entry &e, int64_t active) {
    // Tokens, positions, page table and sampling parameters in one copy.
    check(cudaMemcpyAsync(work + e.ce->inputsOffset, e.hInputs, size_t(e.inputsBytes),
                          cudaMemcpyHostToDevice, stream),
          "copying the inputs");
    // Tensor-parallel ranks sample on the host, from every rank's slice.
    const bool sampling = !ranks;
    const int64_t outRows = e.rowsOut(active);
    mark();
    for (const DeviceOp &op : e.ce->ops) launchOp(e, op, active);
    if (!sampling) return;
    for (const DeviceOp &op : e.ce->sampling) launchOp(e, op, active);
    check(cudaMemcpyAsync(e.hSampled, work + e.ce->sampledOffset, size_t(outRows) * 4,
                          cudaMemcpyDeviceToHost, stream), "copying sampled tokens");
  }

  /// Under KVPLAN_CUDA_PROFILE, an event into the stream (marks grows as
  /// needed; events are made outside any capture, the profile's run being
  /// eager).
  void mark() {
    if (!marking) return;
    if (marked == marks.size()) {
      marks.emplace_back();
      check(cudaEventCreate(&marks.back()), "creating a profiling event");
    }
    check(cudaEventRecord(marks[marked++], stream), "recording a profiling event");
  }
  void profile(Entry &e, int64_t active);

  void checkBill(const MemoryBill &bill, uint64_t weightsBytes) const;
  char *deviceBuffer(const char *what, int64_t bytes);
  void allocate(const MemoryBill &bill, const char *weightsData);
  void loadCode(const CudaCode &code);
  void fillRopeTables();
  void findKernel(const DeviceOp &op);
  void bindEntries();
  void chooseDevice(const CudaOptions &options);
  void joinRanks();

  ~Impl() {
    for (auto &[name, e] : entries)
      for (auto &[rows, g] : e.graphs) cudaGraphExecDestroy(g);
    cudaFreeHost(pinned);
    for (cudaEvent_t ev : marks) cudaEventDestroy(ev);
    if (comm) nccl.destroy(comm);
    if (handle) cublas.destroy(handle);
    if (library) cudaLibraryUnload(library);
    cudaFree(weights);
    cudaFree(arena);
    cudaFree(cache);
    cudaFree(work);
    if (stream) cudaStreamDestroy(stream);
  }
};

namespace {

/// The machine code for `props`: the exact architecture (sm_90a on an sm_90
/// device), else an older minor of the same major (sm_80 runs on sm_86).
std::string chooseArch(const CudaCode &code, const cudaDeviceProp &props) {
  const int major = props.major, minor = props.minor;
  const std::string exact = "sm_" + std::to_string(major * 10 + minor);
  std::string best;
  int bestMinor = -1;
  for (const auto &[arch, bytes] : code.cubins) {
    if (arch == exact + "a" || arch == exact) return arch;
    if (arch.back() == 'a') continue; // arch-specific code runs on that chip alone
    const int sm = std::stoi(arch.substr(3));
    if (sm / 10 == major && sm % 10 <= minor && sm % 10 > bestMinor) {
      bestMinor = sm % 10;
      best = arch;
    }
  }
  if (!best.empty()) return best;
  std::string have;
  for (const auto &[arch, bytes] : code.cubins) have += (have.empty() ? "" : ", ") + arch;
  throw InputError("incompatible because the artifact holds machine code for " +
                   (have.empty() ? std::string("no architecture") : have) + " and this GPU (" +
                   props.name + ") is " + exact + "; recompile with --arch " + exact +
                   (major >= 9 ? "a" : ""));
}

/// Table t as the kernels read it, computed with the CPU runtime's function
/// (so the device rotates by the CPU's floats); long contexts take every
/// core.
std::vector<float> ropeCosSinTable(const CudaRopeTable &t) {
  const int64_t half = int64_t(t.freqs.size());
  std::vector<int32_t> positions(size_t(t.positions));
  std::iota(positions.begin(), positions.end(), 0);
  std::vector<float> host(size_t(t.bytes() / 4));
  const int64_t cores = std::max(1u, std::thread::hardware_concurrency());
  const int64_t threads = std::clamp<int64_t>(t.positions * half >> 18, 1, cores);
  std::vector<std::thread> pool;
  for (int64_t k = 0; k < threads; ++k)
    pool.emplace_back([&, k] {
      cpu::ropeTable(positions.data(), half, t.freqs.data(),
                     t.amplitudes.empty() ? nullptr : t.amplitudes.data(), host.data(),
                     t.positions * k / threads, t.positions * (k + 1) / threads);
    });
  for (std::thread &th : pool) th.join();
  return host;
}

} // namespace

/// The bill, checked against the device's free memory before anything is
/// allocated: every line and the shortfall named.
void CudaExecutor::Impl::checkBill(const MemoryBill &bill, uint64_t weightsBytes) const {
  if (uint64_t(bill.weightsBlobBytes) > weightsBytes)
    throw InputError("the weights hold " + std::to_string(weightsBytes) +
                     " bytes but the plan's weight table needs " +
                     std::to_string(bill.weightsBlobBytes));
  if (program.workspaceBytes != bill.workspaceBytes)
    throw InputError("incompatible because the launch table's workspace (" +
                     std::to_string(program.workspaceBytes) + " bytes) differs from the plan's (" +
                     std::to_string(bill.workspaceBytes) + "); recompile the model");
  size_t freeBytes = 0, totalBytes = 0;
  check(cudaMemGetInfo(&freeBytes, &totalBytes), "reading the device's free memory");
  if (bill.totalBytes <= int64_t(freeBytes)) return;
  throw InputError("out of GPU memory: the plan needs " + humanMiB(bill.totalBytes) + " (weights " +
                   humanMiB(bill.weightsBlobBytes) + ", KV cache " + humanMiB(bill.kvCacheBytes) +
                   ", arena " + humanMiB(bill.arenaAllocBytes) + ", workspace " +
                   humanMiB(bill.workspaceBytes) + ", " + humanMiB(bill.reserveBytes) +
                   " kept for cuBLAS, NCCL and graphs) but " + props.name + " has " +
                   humanMiB(int64_t(freeBytes)) + " free of " + humanMiB(int64_t(totalBytes)) +
                   "; short by " + humanMiB(bill.totalBytes - int64_t(freeBytes)) +
                   ". Compile with --memory-budget " + std::to_string(freeBytes) +
                   " (what is free) for a KV cache that fits, or with a smaller --max-seq, "
                   "--max-batch or --kv-pages, or 16-bit weights");
}

/// Exactly the billed bytes; an empty buffer is no allocation.
char *CudaExecutor::Impl::deviceBuffer(const char *what, int64_t bytes) {
  if (bytes <= 0) return nullptr;
  void *p = nullptr;
  cudaError_t e = cudaMalloc(&p, size_t(bytes));
  if (e != cudaSuccess)
    throw InputError(std::string("out of GPU memory allocating the ") + what + " (" +
                     humanMiB(bytes) + "): " + cudaGetErrorString(e));
  // Owned here until the caller holds it: a failed clear frees it.
  std::unique_ptr<void, cudaError_t (*)(void *)> owned(p, cudaFree);
  check(cudaMemset(p, 0, size_t(bytes)), std::string("clearing the ") + what);
  allocated.push_back({what, bytes, Allocation::device});
  return static_cast<char *>(owned.release());
}

void CudaExecutor::Impl::allocate(const MemoryBill &bill, const char *weightsData) {
  weights = deviceBuffer("weights", bill.weightsBlobBytes);
  cache = deviceBuffer("KV cache", bill.kvCacheBytes);
  arena = deviceBuffer("arena", bill.arenaAllocBytes);
  work = deviceBuffer("workspace", bill.workspaceBytes);
  check(cudaMemcpy(weights, weightsData, size_t(bill.weightsBlobBytes), cudaMemcpyHostToDevice),
        "uploading the weights");
  check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "creating a stream");
  check(cudaDeviceSynchronize(), "uploading the weights"); // before the stream reads them
  if (bill.hostPinnedBytes > 0) {
    check(cudaMallocHost(reinterpret_cast<void **>(&pinned), size_t(bill.hostPinnedBytes)),
          "allocating pinned host memory");
    std::memset(pinned, 0, size_t(bill.hostPinnedBytes));
    allocated.push_back({"host staging", bill.hostPinnedBytes, Allocation::pinnedHost});
  }
}

void CudaExecutor::Impl::loadCode(const CudaCode &code) {
  const std::string &cubin = code.cubins.at(arch);
  check(cudaLibraryLoadData(&library, cubin.data(), nullptr, nullptr, 0, nullptr, nullptr, 0),
        "loading the " + arch + " machine code");
  // A program without products (int8 and int4 weights: generated kernels
  // only) needs no cuBLAS.
  bool products = false;
  for (const auto &[name, e] : program.entries)
    for (const DeviceOp &op : e.ops) products = products || op.kind == DeviceOp::gemm;
  if (!products) return;
  cublas.load();
  cublas.check(cublas.create(&handle), "creating a handle");
  cublas.check(cublas.setStream(handle, stream), "setting the stream");
  cublas.check(cublas.setWorkspace(handle, work + program.cublasWorkspaceOffset,
                                   size_t(program.cublasWorkspaceBytes)),
               "setting the workspace");
  cublas.check(cublas.setMathMode(handle, CUBLAS_DEFAULT_MATH), "setting the math mode");
}

/// Refuses a launch table whose RoPE cos/sin tables do not serve the plan (a
/// rotating step's frequencies without a table, a table shorter than
/// max_seq_len), then uploads each table into the workspace.
void CudaExecutor::Impl::fillRopeTables() {
  for (const auto &[name, ep] : plan.entryPoints)
    for (size_t i = 0; i < ep.steps.size(); ++i) {
      const RopeParams *r = stepRope(ep.steps[i]);
      if (!r) continue;
      if (std::none_of(program.ropeTables.begin(), program.ropeTables.end(),
                       [&](const CudaRopeTable &t) { return ropeTableServes(t, *r); }))
        throw InputError("incompatible because the launch table has no RoPE table for step " +
                         std::to_string(i) + " of '" + name + "'; recompile the model");
    }
  for (const CudaRopeTable &t : program.ropeTables) {
    if (t.positions < plan.settings.maxSeqLen)
      throw InputError("incompatible because the launch table's RoPE table has " +
                       std::to_string(t.positions) + " positions and the plan's max_seq_len is " +
                       std::to_string(plan.settings.maxSeqLen) + "; recompile the model");
    const std::vector<float> host = ropeCosSinTable(t);
    check(cudaMemcpy(work + t.offset, host.data(), host.size() * 4, cudaMemcpyHostToDevice),
          "uploading the RoPE tables");
  }
  check(cudaDeviceSynchronize(), "uploading the RoPE tables"); // before the stream reads them
}

void CudaExecutor::Impl::findKernel(const DeviceOp &op) {
  if (op.kind != DeviceOp::kernel || kernels.count(op.name)) return;
  cudaKernel_t k = nullptr;
  if (cudaLibraryGetKernel(&k, library, op.name.c_str()) != cudaSuccess) {
    cudaGetLastError();
    throw InputError("incompatible because the " + arch + " machine code lacks kernel '" +
                     op.name + "' that the launch table names; recompile the model");
  }
  kernels[op.name] = k;
}

/// The device `options` name, else device 0 alone, else the one a rank
/// takes among the ranks on its machine: NCCL gives each rank a GPU of its
/// own. Ranks compare their findings, so all of them refuse together,
/// naming the rank without a device, rather than some waiting for it.
void CudaExecutor::Impl::chooseDevice(const CudaOptions &options) {
  const int64_t planRanks = plan.ranks();
  ranks = planRanks > 1 ? options.ranks : nullptr;
  if (planRanks > 1 && (!ranks || ranks->size() != planRanks))
    throw InputError("the model is split between " + std::to_string(planRanks) +
                     " tensor-parallel ranks; run it with mpirun -np " +
                     std::to_string(planRanks) + ", one rank per GPU");
  device = options.device >= 0 ? options.device : ranks ? ranks->nodeRank() : 0;
  int count = 0;
  check(cudaGetDeviceCount(&count), "counting the devices");
  struct Seen {
    int32_t device, count, nodeSize;
  } mine{device, count, ranks ? ranks->nodeSize() : 1};
  std::vector<Seen> all{mine};
  if (ranks) {
    all.resize(size_t(ranks->size()));
    ranks->allGather(&mine, all.data(), sizeof mine);
  }
  for (size_t r = 0; r < all.size(); ++r) {
    const Seen &s = all[r];
    if (s.device < s.count) continue;
    const std::string who = ranks ? "rank " + std::to_string(r) + ": " : "";
    const std::string gpus = std::to_string(s.count) + " CUDA device" + (s.count == 1 ? "" : "s");
    if (ranks && options.device < 0)
      throw InputError(who + "its machine runs " + std::to_string(s.nodeSize) +
                       " ranks and has " + gpus + "; NCCL runs one rank per GPU: start at most " +
                       std::to_string(s.count) + " rank" + (s.count == 1 ? "" : "s") +
                       " per machine (mpirun --map-by ppr:" + std::to_string(s.count) + ":node)");
    throw InputError(who + "there is no CUDA device " + std::to_string(s.device) +
                     "; the machine has " + gpus);
  }
}

/// Tensor parallelism: one NCCL communicator of every rank, from a unique
/// id rank 0 makes and sends to the others over `ranks` (MPI).
void CudaExecutor::Impl::joinRanks() {
  if (!ranks) return;
  nccl.load();
  nccl::UniqueId id{};
  if (ranks->rank() == 0) nccl.check(nccl.uniqueId(&id), "making the unique id");
  ranks->broadcast(&id, sizeof id, 0);
  nccl.check(nccl.initRank(&comm, ranks->size(), id, ranks->rank()),
             "joining the " + std::to_string(ranks->size()) + " ranks");
}

/// Each entry point's launch table, kernels and host staging.
void CudaExecutor::Impl::bindEntries() {
  const CudaStaging staging = cudaHostStaging(plan);
  for (const auto &[name, ep] : plan.entryPoints) {
    auto ce = program.entries.find(name);
    if (ce == program.entries.end())
      throw InputError("incompatible because the launch table has no entry point '" + name +
                       "'; recompile the model");
    Entry e;
    e.name = name;
    e.ep = &ep;
    e.ce = &ce->second;
    for (const DeviceOp &op : e.ce->ops) findKernel(op);
    for (const DeviceOp &op : e.ce->sampling) findKernel(op);
    e.inputsBytes = cudaInputsLayout(ep).bytes;
    if (e.ce->inputsOffset < 0 || e.ce->inputsOffset + e.inputsBytes > program.workspaceBytes)
      throw InputError("incompatible because the launch table puts the inputs of '" + name +
                       "' outside the workspace; recompile the model");
    const Operand &logits = ep.results.at(0);
    e.logitsOff = logits.offset;
    e.logitRows = logits.rows();
    e.vocab = logits.cols();
    e.logitsFollow = logits.rows() == ep.rows;
    const CudaStagingEntry &st = staging.entries.at(name);
    e.hInputs = pinned + st.tokens;
    e.hTok = reinterpret_cast<int32_t *>(pinned + st.tokens);
    e.hPos = reinterpret_cast<int32_t *>(pinned + st.positions);
    e.hTable = reinterpret_cast<int32_t *>(pinned + st.pageTable);
    if (ep.arg("window_page_table"))
      e.hWindowTable = reinterpret_cast<int32_t *>(pinned + st.windowPageTable);
    e.hParams = reinterpret_cast<DeviceSamplingParams *>(pinned + st.params);
    e.hSampled = reinterpret_cast<int32_t *>(pinned + st.sampled);
    e.hLogits = reinterpret_cast<float *>(pinned + st.logits);
    for (int64_t r = 0; r < ep.rows; ++r) {
      e.hPos[r] = -1;
      e.hTok[r] = 0;
    }
    e.limits = runInputLimits(plan, ep);
    entries[name] = e;
  }
  // Which entry point serves a call of each row count, once, not per call.
  for (auto &[name, e] : entries)
    for (int64_t n = 1; n <= e.ep->rows; ++n)
      e.servingFor.push_back(&entries.at(servingEntry(plan, name, n).name));
}

/// One more eager run of `e` on `active` rows (the same inputs: it writes
/// the same cache slots, logits and tokens again), each op timed between
/// the events around it, appended to the profile as a tab-separated line:
/// entry point, rows, op, plan step, kind, kernel, milliseconds. The
/// events keep the ops from overlapping (no programmatic launch starts
/// early), so each time is the op's alone.
void CudaExecutor::Impl::profile(Entry &e, int64_t active) {
  marked = 0;
  marking = true;
  try {
    enqueue(e, active);
  } catch (...) {
    marking = false;
    throw;
  }
  marking = false;
  check(cudaStreamSynchronize(stream), "profiling " + e.name);
  std::vector<const DeviceOp *> ops;
  for (const DeviceOp &op : e.ce->ops) ops.push_back(&op);
  if (!ranks)
    for (const DeviceOp &op : e.ce->sampling) ops.push_back(&op);
  std::ofstream out(profilePath, std::ios::app);
  for (size_t i = 0; i < ops.size() && i + 1 < marked; ++i) {
    float ms = 0;
    check(cudaEventElapsedTime(&ms, marks[i], marks[i + 1]), "reading a profiling event");
    const DeviceOp &op = *ops[i];
    const char *kind = op.kind == DeviceOp::gemm        ? "cublas"
                       : op.kind == DeviceOp::allReduce ? "all_reduce"
                                                        : "kernel";
    out << e.name << '\t' << active << '\t' << i << '\t' << op.step << '\t' << kind << '\t'
        << (op.kind == DeviceOp::kernel ? op.name : std::string(kind)) << '\t' << ms << '\n';
  }
  out.flush();
  if (!out)
    throw InputError("cannot append the op times to '" + profilePath +
                     "' (KVPLAN_CUDA_PROFILE): name a file that can be written");
  e.profiled.insert(active);
}

CudaExecutor::CudaExecutor(const Plan &plan, const CudaCode &code, const char *weightsData,
                           uint64_t weightsBytes, const CudaOptions &options)
    : impl(std::make_unique<Impl>()) {
  Impl &m = *impl;
  m.plan = plan;
  m.program = code.program;
  m.options = options;
  if (const char *sync = std::getenv("KVPLAN_CUDA_SYNC"); sync && *sync && std::strcmp(sync, "0")) {
    m.syncEach = true;
    m.options.graphs = false;
  }
  const char *prof = std::getenv("KVPLAN_CUDA_PROFILE");
  if (prof && *prof && std::strcmp(prof, "0")) m.profilePath = prof;
  if (plan.settings.target != Target::cuda)
    throw InputError(std::string("incompatible because the artifact was compiled for target '") +
                     targetName(plan.settings.target) + "'; the CUDA runtime runs 'cuda' artifacts");
  std::string why;
  if (!cudaDeviceAvailable(&why))
    throw InputError(why + "; this artifact targets cuda (compile with --target cpu to run on "
                           "the CPU)");
  validatePlan(m.plan);
  m.chooseDevice(options);
  check(cudaSetDevice(m.device), "selecting the device");
  check(cudaGetDeviceProperties(&m.props, m.device), "reading the device's properties");
  m.arch = chooseArch(code, m.props);
  const char *pdl = std::getenv("KVPLAN_CUDA_PDL");
  m.pdl = m.props.major >= 9 && !m.syncEach && !(pdl && std::strcmp(pdl, "0") == 0);
  const MemoryBill bill = m.plan.memoryBill();
  checkCudaProgramFits(m.program, bill);
  m.checkBill(bill, weightsBytes);
  m.allocate(bill, weightsData);
  m.loadCode(code);
  m.fillRopeTables();
  m.joinRanks();
  m.bindEntries();
}

std::vector<Allocation> CudaExecutor::allocations() const { return impl->allocated; }

CudaExecutor::~CudaExecutor() = default;

const Plan &CudaExecutor::plan() const { return impl->plan; }

std::string CudaExecutor::describe() const {
  const Impl &m = *impl;
  return std::string("cuda: ") + m.props.name + " (" + m.arch + " machine code, " +
         (m.syncEach           ? "eager launches, each checked (KVPLAN_CUDA_SYNC)"
          : m.options.graphs ? "CUDA graphs"
                             : "eager launches") +
         (m.pdl ? ", programmatic dependent launches" : "") +
         (m.profilePath.empty() || m.ranks
              ? ""
              : ", op times to " + m.profilePath + " (KVPLAN_CUDA_PROFILE)") +
         (m.ranks ? ", rank " + std::to_string(m.ranks->rank()) + " of " +
                        std::to_string(m.ranks->size()) + " on device " + std::to_string(m.device) +
                        " over " + m.nccl.describe()
                  : std::string()) +
         ")";
}

bool CudaExecutor::samplesOnDevice() const { return impl->ranks == nullptr; }
Collective *CudaExecutor::collective() const { return impl->ranks; }

int32_t *CudaExecutor::tokens(const std::string &e) { return impl->entry(e).hTok; }
int32_t *CudaExecutor::positions(const std::string &e) { return impl->entry(e).hPos; }
int32_t *CudaExecutor::pageTable(const std::string &e) { return impl->entry(e).hTable; }
int32_t *CudaExecutor::windowPageTable(const std::string &e) {
  return impl->entry(e).hWindowTable;
}

void CudaExecutor::setSampling(const std::string &entry, const DeviceSamplingParams *rows,
                               int64_t count) {
  Impl::Entry &e = impl->entry(entry);
  count = std::min(count, e.logitRows);
  std::memcpy(e.hParams, rows, size_t(count) * sizeof(DeviceSamplingParams));
}

/// The rows a call on `active` rows runs: exactly those up to 8, else the
/// next power of two (at most the entry point's rows), so a 512-token chunk
/// needs at most 14 graphs, not one per prompt length. The extra rows are
/// padding (position -1): they write no cache slot and their results are not
/// read. Eager runs use the same rows, so both modes compute the same.
static int64_t runRows(int64_t active, int64_t rows) {
  if (active <= 8) return active;
  int64_t r = 16;
  while (r < active) r *= 2;
  return std::min(r, rows);
}

void CudaExecutor::run(const std::string &name, int64_t activeRows) {
  Impl &m = *impl;
  Impl::Entry &asked = m.entry(name);
  activeRows = std::clamp<int64_t>(activeRows, 1, asked.ep->rows);
  Impl::Entry &e = m.serving(asked, activeRows);
  if (&e != &asked) Impl::handOver(asked, e);
  asked.served = &e;
  activeRows = runRows(activeRows, e.ep->rows);
  // The generated kernels index the cache and the embedding table by these
  // without a check of their own.
  checkRunInputs(e.limits, *e.ep, e.hTok, e.hPos, e.hTable, activeRows, e.hWindowTable);
  if (!m.profilePath.empty() && !m.ranks && !e.profiled.count(activeRows)) {
    m.enqueue(e, activeRows); // a warm-up: lazy set-up stays out of the times
    check(cudaStreamSynchronize(m.stream), "running " + name);
    m.profile(e, activeRows);
  }
  if (m.options.graphs) {
    auto it = e.graphs.find(activeRows);
    if (it == e.graphs.end()) {
      // The first call runs eagerly and waits, so that lazy set-up (module
      // loading, cuBLAS's and NCCL's first calls) never happens inside a
      // capture; the graph captured after it serves every later call.
      m.enqueue(e, activeRows);
      check(cudaStreamSynchronize(m.stream), "running " + name);
      cudaGraph_t graph = nullptr;
      check(cudaStreamBeginCapture(m.stream, cudaStreamCaptureModeThreadLocal),
            "starting a graph capture");
      try {
        m.enqueue(e, activeRows);
      } catch (...) {
        cudaStreamEndCapture(m.stream, &graph);
        if (graph) cudaGraphDestroy(graph);
        throw;
      }
      check(cudaStreamEndCapture(m.stream, &graph), "capturing " + name);
      cudaGraphExec_t exec = nullptr;
      cudaError_t err = cudaGraphInstantiate(&exec, graph, 0);
      cudaGraphDestroy(graph);
      check(err, "instantiating the graph of " + name);
      e.graphs.emplace(activeRows, exec);
      ++m.captured;
    } else {
      check(cudaGraphLaunch(it->second, m.stream), "replaying " + name);
    }
  } else {
    m.enqueue(e, activeRows);
  }
  check(cudaStreamSynchronize(m.stream), "running " + name);
  e.lastActive = activeRows;
  e.logitsFresh = false;
  asked.logitsFresh = false;
  ++calls[e.ep->name];
}

// The rows of the call, from the entry point that ran it (a smaller copy's
// arena) into the host staging of the one named, which has room for all of
// its rows as callers expect.
const float *CudaExecutor::logits(const std::string &name) {
  Impl::Entry &e = impl->entry(name);
  if (!e.logitsFresh) {
    const Impl::Entry &ran = e.ran();
    const int64_t rows = ran.rowsOut(std::max<int64_t>(ran.lastActive, 1));
    check(cudaMemcpyAsync(e.hLogits, impl->arena + ran.logitsOff, size_t(rows * e.vocab) * 4,
                          cudaMemcpyDeviceToHost, impl->stream),
          "copying logits");
    check(cudaStreamSynchronize(impl->stream), "copying logits");
    e.logitsFresh = true;
  }
  return e.hLogits;
}

void CudaExecutor::copyPage(int32_t from, int32_t to, bool windowPool) {
  const KVCacheLayout &kv = windowPool ? impl->plan.windowCache : impl->plan.kvCache;
  if (from < 0 || to < 0 || from >= kv.pages || to >= kv.pages || from == to)
    throw std::logic_error("copyPage: pages " + std::to_string(from) + " -> " + std::to_string(to));
  // [layers][2][pages][kv_heads][page_size][head_dim]: one contiguous block
  // per layer and half, `pages` blocks apart; the sliding layers' pool
  // after the main one.
  const int64_t block = kv.kvHeads * kv.pageSize * kv.headDim * dtypeBytes(kv.dtype);
  char *cache = impl->cache + (windowPool ? impl->plan.kvCache.bytes() : 0);
  for (int64_t half = 0; half < 2 * kv.layers; ++half)
    check(cudaMemcpyAsync(cache + (half * kv.pages + to) * block,
                          cache + (half * kv.pages + from) * block, size_t(block),
                          cudaMemcpyDeviceToDevice, impl->stream),
          "copying a KV-cache page");
  check(cudaStreamSynchronize(impl->stream), "copying a KV-cache page");
}

const int32_t *CudaExecutor::sampled(const std::string &name) {
  return impl->entry(name).ran().hSampled;
}

const std::string &CudaExecutor::servedBy(const std::string &name) {
  return impl->entry(name).ran().name;
}
void CudaExecutor::setVariants(bool on) { impl->variants = on; }
bool CudaExecutor::variants() const { return impl->variants; }

void CudaExecutor::setGraphs(bool on) { impl->options.graphs = on && !impl->syncEach; }
bool CudaExecutor::graphs() const { return impl->options.graphs; }
int64_t CudaExecutor::graphsCaptured() const { return impl->captured; }

void CudaExecutor::setDependentLaunches(bool on) {
  Impl &m = *impl;
  on = on && m.props.major >= 9 && !m.syncEach;
  if (on == m.pdl) return;
  m.pdl = on;
  for (auto &[name, e] : m.entries) {
    for (auto &[rows, g] : e.graphs) cudaGraphExecDestroy(g);
    e.graphs.clear();
  }
}

bool CudaExecutor::dependentLaunches() const { return impl->pdl; }
const CudaProgram &CudaExecutor::program() const { return impl->program; }

void CudaExecutor::runOps(const std::string &name, int64_t activeRows, size_t firstOp,
                          size_t lastOp) {
  Impl::Entry &e = impl->entry(name);
  activeRows = std::clamp<int64_t>(activeRows, 1, e.ep->rows);
  for (size_t i = firstOp; i <= lastOp && i < e.ce->ops.size(); ++i)
    impl->launch(e.ce->ops[i], activeRows);
  if (lastOp >= e.ce->ops.size())
    for (const DeviceOp &op : e.ce->sampling) impl->launch(op, activeRows);
  check(cudaStreamSynchronize(impl->stream), "running ops of " + name);
}

// On the executor's stream, then waited for: a plain cudaMemcpy runs on the
// legacy stream, which a non-blocking stream does not wait for.
void CudaExecutor::upload(DeviceBuffer b, int64_t offset, const void *data, int64_t bytes) {
  check(cudaMemcpyAsync(impl->base(b) + offset, data, size_t(bytes), cudaMemcpyHostToDevice,
                        impl->stream), "upload");
  check(cudaStreamSynchronize(impl->stream), "upload");
}
void CudaExecutor::download(DeviceBuffer b, int64_t offset, void *data, int64_t bytes) {
  check(cudaMemcpyAsync(data, impl->base(b) + offset, size_t(bytes), cudaMemcpyDeviceToHost,
                        impl->stream), "download");
  check(cudaStreamSynchronize(impl->stream), "download");
}
void CudaExecutor::fill(DeviceBuffer b, int64_t offset, int byte, int64_t bytes) {
  check(cudaMemsetAsync(impl->base(b) + offset, byte, size_t(bytes), impl->stream), "fill");
  check(cudaStreamSynchronize(impl->stream), "fill");
}

double measureCudaCopyBandwidth(int64_t bytes) {
  if (!cudaDeviceAvailable()) return 0;
  void *a = nullptr, *b = nullptr;
  if (cudaMalloc(&a, size_t(bytes)) != cudaSuccess || cudaMalloc(&b, size_t(bytes)) != cudaSuccess) {
    cudaFree(a);
    cudaGetLastError();
    return 0;
  }
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  cudaMemcpy(b, a, size_t(bytes), cudaMemcpyDeviceToDevice); // warm-up
  float best = 1e30f;
  for (int i = 0; i < 10; ++i) {
    cudaEventRecord(start);
    cudaMemcpyAsync(b, a, size_t(bytes), cudaMemcpyDeviceToDevice);
    cudaEventRecord(stop);
    cudaEventSynchronize(stop);
    float ms = 0;
    cudaEventElapsedTime(&ms, start, stop);
    best = std::min(best, ms);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaFree(a);
  cudaFree(b);
  return 2.0 * double(bytes) / (double(best) * 1e-3);
}

} // namespace kvplan
