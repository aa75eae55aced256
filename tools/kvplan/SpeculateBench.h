// kvplan bench --speculate: speculative decoding against plain decoding,
// side by side in one run.
#pragma once

#include "tools/kvplan/Runnable.h"
#include "tools/kvplan/Speculation.h"

namespace kvplan::cli {

struct SpeculateBenchOptions {
  int64_t promptLen = 128, gen = 128;
  int threads = 0;
  bool json = false;
  SpeculateFlags speculate;
};

/// Greedy: plain decoding and speculative decoding of the same tokens (the
/// outputs must agree), and a verify step against a decode step at the
/// prompt's length. CPU executor only.
int runSpeculateBench(const SpeculateBenchOptions &o, const Runnable &r, bool verbose);

} // namespace kvplan::cli
