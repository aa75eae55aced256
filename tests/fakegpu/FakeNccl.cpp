// A fake NCCL for tests/fakegpu's tensor-parallel test: the six functions
// the CUDA executor opens, over MPI between the processes mpirun started
// (one per rank, each with its own fake device). The unique id must reach
// every rank unchanged, the ranks must name themselves as MPI does, and two
// ranks on one machine must not share a device, as real NCCL requires;
// ncclAllReduce is an MPI_Allreduce run as stream work, so it lands in the
// fake runtime's graphs like a kernel. The executor loads it through
// KVPLAN_NCCL_LIBRARY.
#include "tests/fakegpu/FakeCuda.h"

#include <cuda_runtime_api.h>
#include <mpi.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

enum Result { kSuccess = 0, kInvalidArgument = 4, kInvalidUsage = 5 };
constexpr int kFloat32 = 7, kSum = 0;

struct UniqueId {
  char internal[128];
};
struct Comm {
  int rank, size;
};

long long allReduces = 0;

} // namespace

extern "C" {

/// All-reduces run so far in this process (when their stream work ran).
long long fakenccl_all_reduces() { return allReduces; }

int ncclGetVersion(int *v) {
  *v = 22803;
  return kSuccess;
}

const char *ncclGetErrorString(int r) {
  switch (r) {
  case kSuccess: return "no error";
  case kInvalidArgument: return "invalid argument (run with NCCL_DEBUG=WARN for details)";
  case kInvalidUsage: return "invalid usage (run with NCCL_DEBUG=WARN for details)";
  default: return "unknown result code";
  }
}

int ncclGetUniqueId(UniqueId *id) {
  std::random_device rd;
  for (char &c : id->internal) c = char(rd());
  return kSuccess;
}

int ncclCommInitRank(Comm **comm, int nranks, UniqueId id, int rank) {
  int size = 0, me = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Comm_rank(MPI_COMM_WORLD, &me);
  if (nranks != size || rank != me) return kInvalidArgument;
  std::vector<UniqueId> ids(static_cast<size_t>(size));
  MPI_Allgather(&id, sizeof id, MPI_BYTE, ids.data(), sizeof id, MPI_BYTE, MPI_COMM_WORLD);
  for (const UniqueId &other : ids)
    if (std::memcmp(&other, &ids[0], sizeof id) != 0) return kInvalidUsage;
  // Every process is on this one machine: a device used twice is refused.
  int device = -1;
  cudaGetDevice(&device);
  std::vector<int> devices(static_cast<size_t>(size));
  MPI_Allgather(&device, 1, MPI_INT, devices.data(), 1, MPI_INT, MPI_COMM_WORLD);
  for (int r = 0; r < size; ++r)
    if (r != me && devices[size_t(r)] == device) return kInvalidUsage;
  *comm = new Comm{rank, nranks};
  return kSuccess;
}

int ncclCommDestroy(Comm *comm) {
  delete comm;
  return kSuccess;
}

int ncclAllReduce(const void *send, void *recv, size_t count, int type, int op, Comm *comm,
                  cudaStream_t) {
  if (!comm || type != kFloat32 || op != kSum || count > size_t(1) << 30) return kInvalidArgument;
  fakecudaEnqueue([=] {
    ++allReduces;
    MPI_Allreduce(send == recv ? MPI_IN_PLACE : send, recv, int(count), MPI_FLOAT, MPI_SUM,
                  MPI_COMM_WORLD);
  });
  return kSuccess;
}

} // extern "C"
