// kvplan bench --requests: many requests through the scheduler at a fixed
// concurrency (a closed loop), measured as a server would be.
#pragma once

#include "tools/kvplan/Runnable.h"

#include <CLI/CLI.hpp>

#include <cstdint>

namespace kvplan::cli {

struct LoadBenchOptions {
  // Shared with the single-stream bench; bench copies its flags in.
  ModelOptions model;
  int64_t promptLen = 0, gen = 0;
  int threads = 0;
  bool json = false, noGraphs = false;
  // The load's own flags.
  int64_t requests = 0, concurrency = 1, sharedPrefix = 0, tokenBudget = 0;
  uint64_t seed = 1;
  bool noPrefixCache = false;
};

/// Adds --requests, --concurrency, --shared-prefix, --no-prefix-cache,
/// --seed and --token-budget to bench; returns --requests, whose presence
/// selects the load benchmark.
CLI::Option *addLoadBenchFlags(CLI::App *cmd, LoadBenchOptions &o);
/// Throws InputError when a load flag is given without --requests (the
/// single-stream bench would silently ignore it).
void checkNoLoadFlags(CLI::App *cmd);
/// Runs the load benchmark and prints its report; returns the exit code.
/// Throws InputError for bad flags or a load the plan cannot hold.
int runLoadBench(LoadBenchOptions o, bool verbose);

} // namespace kvplan::cli
