#include "runtime/Collective.h"

#include "support/Error.h"

#include <vector>

namespace kvplan {

void checkRanks(int64_t ranks, Collective *comm, uint64_t planHash) {
  const std::string n = std::to_string(ranks);
  if (ranks > 1 && !comm)
    throw InputError("the model is split between " + n + " tensor-parallel ranks; run one "
                     "process per rank: mpirun -np " + n + " kvplan ...");
  if (!comm) return;
  if (comm->size() != ranks)
    throw InputError("launched as " + std::to_string(comm->size()) + " ranks, but the model is " +
                     (ranks > 1 ? "split between " + n + " tensor-parallel ranks: run it with "
                                  "mpirun -np " + n
                                : std::string("not tensor parallel: compile it with "
                                              "--tensor-parallel ") +
                                      std::to_string(comm->size()) + ", or run it without mpirun"));
  std::vector<uint64_t> hashes(size_t(comm->size()));
  comm->allGather(&planHash, hashes.data(), sizeof planHash);
  for (int r = 0; r < comm->size(); ++r)
    if (hashes[size_t(r)] != planHash)
      throw InputError("rank " + std::to_string(r) + " loaded another plan than rank " +
                       std::to_string(comm->rank()) +
                       " (their checksums differ): give every rank the same artifact");
}

} // namespace kvplan
