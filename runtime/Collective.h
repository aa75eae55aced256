// How tensor-parallel ranks talk: the few collectives a plan split by
// --partition-tensor-parallel needs. The runtime calls this interface only;
// MPI implements it for CPU ranks (runtime/mpi/MpiCollective.h), and tests
// run ranks as threads of one process (tests/common/ThreadCollective.h).
// Every rank calls the same collectives in the same order.
#pragma once

#include <cstdint>
#include <string>

namespace kvplan {

class Collective {
public:
  virtual ~Collective() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  /// This rank's index among the ranks on its machine, and how many run
  /// there: a GPU rank takes the device of that index.
  virtual int nodeRank() const { return rank(); }
  virtual int nodeSize() const { return size(); }
  /// "MPI (Open MPI 4.1.4), 2 ranks", for messages and reports.
  virtual std::string describe() const = 0;
  /// out[i] = the sum over ranks of in[i] (in and out may not overlap).
  virtual void allReduceSum(const float *in, float *out, int64_t count) = 0;
  /// Rank r's `bytes` bytes land at out + r * bytes on every rank.
  virtual void allGather(const void *in, void *out, int64_t bytes) = 0;
  /// Rank `root`'s bytes, on every rank.
  virtual void broadcast(void *data, int64_t bytes, int root) = 0;
};

/// Refuses a plan split between `ranks` ranks on `comm` (null: a process
/// run alone) with the fix: launch with mpirun -np ranks. Checks too that
/// every rank loaded the same plan (`planHash`: a checksum of it).
void checkRanks(int64_t ranks, Collective *comm, uint64_t planHash);

} // namespace kvplan
