// JSON mode's cost (not a test: run it by hand), e.g.
//   build/bin/kvplan-json-bench ../shared/models/llama3-tokenizer/tokenizer.json
// For each tokenizer file: the time to read every token's bytes (once per
// server, at the first JSON request), then the time of one row's mask
// (runtime/JsonGrammar.h) after texts in different states, the median of
// --repeat masks (default 21), and how many tokens it leaves.
#include "formats/Tokenizer.h"
#include "tests/bench/BenchArgs.h"
#include "runtime/JsonGrammar.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

namespace {
double msSince(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
}
} // namespace

int main(int argc, char **argv) {
  const kvplan::bench::BenchArgs args = kvplan::bench::parseBenchArgs(argc, argv, 21);
  const int repeat = args.repeat;
  const std::vector<std::string> &files = args.files;
  if (files.empty()) {
    std::fprintf(stderr, "usage: kvplan-json-bench [--repeat N] TOKENIZER_FILE...\n");
    return 2;
  }
  const char *texts[] = {"",           "{\"name\"",    "{\"name\": ",        "{\"name\": \"Ali",
                         "{\"n\": 12", "{\"a\": [1, ", "{\"a\": {\"b\": true"};
  for (const std::string &file : files) {
    try {
      auto tok = kvplan::loadTokenizerFile(file);
      auto start = std::chrono::steady_clock::now();
      const kvplan::JsonVocabulary vocab = kvplan::JsonVocabulary::of(*tok);
      std::printf("%s: vocab %lld, token bytes read in %.1f ms\n", file.c_str(),
                  (long long)vocab.size(), msSince(start));
      std::vector<float> row(size_t(vocab.size()));
      for (const char *text : texts) {
        kvplan::JsonState s;
        for (const char *c = text; *c; ++c) s.push(uint8_t(*c));
        std::vector<double> ms;
        for (int r = 0; r < repeat; ++r) {
          std::fill(row.begin(), row.end(), 0.0f);
          start = std::chrono::steady_clock::now();
          vocab.mask(s, row.data(), int64_t(row.size()));
          ms.push_back(msSince(start));
        }
        std::sort(ms.begin(), ms.end());
        const auto left = std::count(row.begin(), row.end(), 0.0f);
        std::printf("  after %-22s mask %.3f ms (median of %d), %lld tokens left\n",
                    ("'" + std::string(text) + "'").c_str(), ms[ms.size() / 2], repeat,
                    (long long)left);
      }
    } catch (const std::exception &e) {
      std::fprintf(stderr, "%s\n", e.what());
      return 1;
    }
  }
  return 0;
}
