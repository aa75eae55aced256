#include "runtime/mpi/MpiCollective.h"

#include "support/Error.h"

#include <mpi.h>

#include <cstdlib>
#include <limits>
#include <memory>
#include <mutex>

namespace kvplan {
namespace {

void check(int rc, const char *what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING] = {};
  int n = 0;
  MPI_Error_string(rc, text, &n);
  throw InputError(std::string("MPI ") + what + " failed: " + text);
}

int count(int64_t n) {
  if (n < 0 || n > std::numeric_limits<int>::max())
    throw std::logic_error("an MPI message of " + std::to_string(n) + " elements");
  return int(n);
}

class MpiCollective : public Collective {
public:
  MpiCollective() {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    char version[MPI_MAX_LIBRARY_VERSION_STRING] = {};
    int n = 0;
    MPI_Get_library_version(version, &n);
    library = version;
    if (size_t cut = library.find_first_of(",\n"); cut != std::string::npos) library.resize(cut);
    // The ranks sharing this machine's memory are the ones on this node.
    MPI_Comm node = MPI_COMM_NULL;
    check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node),
          "splitting the ranks by machine");
    MPI_Comm_rank(node, &nodeRank_);
    MPI_Comm_size(node, &nodeSize_);
    MPI_Comm_free(&node);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int nodeRank() const override { return nodeRank_; }
  int nodeSize() const override { return nodeSize_; }
  std::string describe() const override {
    return "MPI (" + library + "), " + std::to_string(size_) + " ranks";
  }
  void allReduceSum(const float *in, float *out, int64_t n) override {
    check(MPI_Allreduce(in, out, count(n), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD), "all-reduce");
  }
  void allGather(const void *in, void *out, int64_t bytes) override {
    check(MPI_Allgather(in, count(bytes), MPI_BYTE, out, count(bytes), MPI_BYTE, MPI_COMM_WORLD),
          "all-gather");
  }
  void broadcast(void *data, int64_t bytes, int root) override {
    check(MPI_Bcast(data, count(bytes), MPI_BYTE, root, MPI_COMM_WORLD), "broadcast");
  }

private:
  int rank_ = 0, size_ = 1, nodeRank_ = 0, nodeSize_ = 1;
  std::string library;
};

void finalize() {
  int done = 0;
  MPI_Finalized(&done);
  if (!done) MPI_Finalize();
}

} // namespace

bool launchedByMpi() {
  for (const char *v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "MPI_LOCALNRANKS"})
    if (std::getenv(v)) return true;
  return false;
}

Collective *mpiWorld() {
  static std::unique_ptr<MpiCollective> world;
  static std::once_flag once;
  std::call_once(once, [] {
    if (!launchedByMpi()) return;
    int provided = 0;
    // One thread at a time calls MPI: the one running the plan, which in
    // `serve` is the scheduler's, not the main thread; the pool's workers
    // never do.
    check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided), "initialisation");
    if (provided < MPI_THREAD_SERIALIZED)
      throw InputError("this MPI library cannot be called from more than one thread "
                       "(MPI_THREAD_SERIALIZED), which kvplan serve needs");
    std::atexit(finalize);
    world = std::make_unique<MpiCollective>();
  });
  return world.get();
}

void abortMpiJob(int code) {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized) return;
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size > 1) MPI_Abort(MPI_COMM_WORLD, code);
}

} // namespace kvplan
