// main() for a GoogleTest binary run as MPI ranks (mpirun -np N BINARY):
// every rank runs the same tests, and only rank 0 prints their report.
#pragma once

#include "runtime/mpi/MpiCollective.h"

#include <gtest/gtest.h>

inline int runMpiTests(int argc, char **argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (kvplan::mpiWorld() && kvplan::mpiWorld()->rank() != 0) {
    auto &listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  return RUN_ALL_TESTS();
}
