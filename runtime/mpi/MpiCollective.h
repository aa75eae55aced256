// The MPI world as kvplan's Collective: one process per tensor-parallel rank,
// launched by mpirun (Open MPI from Debian). Only the kvplan tool and the
// tests link it; the runtime library sees the Collective interface alone.
#pragma once

#include "runtime/Collective.h"

namespace kvplan {

/// Whether this process was started by mpirun (its environment says so).
bool launchedByMpi();
/// MPI_COMM_WORLD, initialised on the first call (and finalised at exit)
/// when launchedByMpi(); null for a process started on its own.
Collective *mpiWorld();
/// After an error on this rank: stops every rank of the job (MPI_Abort)
/// with `code`, so none waits forever in a collective. Returns when MPI is
/// not running or the job has one rank.
void abortMpiJob(int code);

} // namespace kvplan
