// A progress bar on stderr for long reads and conversions (checkpoint
// loading, weight packing); silent unless stderr is a terminal.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace kvplan {

/// Draws "label [=====>    ]  42%  3.1s" on stderr while work of `total`
/// units (bytes, tensors, ...) advances. Draws nothing when stderr is not a
/// terminal, nothing for work that finishes within the first tenth of a
/// second, and at most about ten times a second; the destructor draws the
/// final state and ends the line if anything was drawn. Not thread-safe:
/// call advance() from one thread.
class Progress {
public:
  Progress(std::string label, uint64_t total);
  Progress(const Progress &) = delete;
  Progress &operator=(const Progress &) = delete;
  ~Progress();

  /// Records `n` more units done (the count stops at `total`).
  void advance(uint64_t n);

private:
  void draw();

  std::string label;
  uint64_t total;
  uint64_t done = 0;
  bool terminal;
  bool drawn = false;
  std::chrono::steady_clock::time_point start;
  std::chrono::steady_clock::time_point lastDraw;
};

} // namespace kvplan
