// Shared by the libFuzzer targets: each calls the entry point the tools call
// on one input and lets only kvplan's own rejection of bad input through
// (InputError, and the server's ApiError). Any other exception escapes and
// aborts, which libFuzzer reports as a finding, as it does a crash, a leak,
// undefined behaviour or a timeout.
#pragma once

#include "support/Error.h"

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace kvplan::fuzz {

/// The readers that take a path see the input as this process's own file
/// with `name` (its extension picks the format), rewritten for every input.
inline std::string writeInput(const uint8_t *data, size_t size, const std::string &name) {
  const char *tmp = getenv("TMPDIR");
  std::string path = std::string(tmp && *tmp ? tmp : "/tmp") + "/kvplan-fuzz-" +
                     std::to_string(getpid()) + "-" + name;
  FILE *f = fopen(path.c_str(), "wb");
  if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0)
    throw std::runtime_error("fuzz: cannot write " + path);
  return path;
}

/// Runs `body`, accepting InputError as the reader's proper answer.
template <class F> int rejectsOrAccepts(F &&body) {
  try {
    body();
  } catch (const InputError &) {
  }
  return 0;
}

} // namespace kvplan::fuzz
