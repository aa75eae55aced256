// The command line of the hand-run benchmarks that read files:
// [--repeat N] FILE...
#pragma once

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

namespace kvplan::bench {

struct BenchArgs {
  int repeat = 0;
  std::vector<std::string> files;
};

/// `repeat`: the default of --repeat (at least 1 when given).
inline BenchArgs parseBenchArgs(int argc, char **argv, int repeat) {
  BenchArgs a;
  a.repeat = repeat;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--repeat" && i + 1 < argc)
      a.repeat = std::max(1, std::atoi(argv[++i]));
    else
      a.files.push_back(arg);
  }
  return a;
}

} // namespace kvplan::bench
