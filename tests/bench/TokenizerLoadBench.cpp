// Load time of tokenizer files (not a test: run it by hand), e.g.
//   build/bin/kvplan-tokenizer-bench ../shared/models/llama3-tokenizer/tokenizer.json
// Loads each file --repeat times (default 7) through loadTokenizerFile, as
// kvplan run and serve do, and prints the fastest and the median load, in
// wall-clock time and in CPU time (which a busy machine inflates less).
#include "formats/Tokenizer.h"
#include "tests/bench/BenchArgs.h"

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

int main(int argc, char **argv) {
  const kvplan::bench::BenchArgs args = kvplan::bench::parseBenchArgs(argc, argv, 7);
  const int repeat = args.repeat;
  const std::vector<std::string> &files = args.files;
  if (files.empty()) {
    std::fprintf(stderr, "usage: kvplan-tokenizer-bench [--repeat N] TOKENIZER_FILE...\n");
    return 2;
  }
  auto cpuMs = [] {
    timespec t{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return double(t.tv_sec) * 1e3 + double(t.tv_nsec) / 1e6;
  };
  for (const std::string &file : files) {
    std::vector<double> ms, cpu;
    int32_t vocab = 0;
    try {
      for (int r = 0; r < repeat; ++r) {
        auto start = std::chrono::steady_clock::now();
        double cpuStart = cpuMs();
        auto tok = kvplan::loadTokenizerFile(file);
        cpu.push_back(cpuMs() - cpuStart);
        ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
        vocab = tok->vocabSize();
      }
    } catch (const std::exception &e) {
      std::fprintf(stderr, "%s\n", e.what());
      return 1;
    }
    std::sort(ms.begin(), ms.end());
    std::sort(cpu.begin(), cpu.end());
    std::printf("%s: vocab %d, %d loads: wall min %.1f ms, median %.1f ms; CPU min %.1f ms, median %.1f ms\n",
                file.c_str(), vocab, repeat, ms.front(), ms[ms.size() / 2], cpu.front(), cpu[cpu.size() / 2]);
  }
  return 0;
}
