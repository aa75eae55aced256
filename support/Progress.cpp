// Progress bar drawing: throttled, terminal-only, one line redrawn in place.
#include "support/Progress.h"

#include <cstdio>
#include <unistd.h>

namespace kvplan {

namespace {
// Redraw interval; also how long work must run before a bar appears, so
// that quick steps do not flash one.
constexpr std::chrono::milliseconds kInterval(100);
constexpr int kBarWidth = 30;
} // namespace

Progress::Progress(std::string label, uint64_t total)
    : label(std::move(label)), total(total), terminal(isatty(2) == 1),
      start(std::chrono::steady_clock::now()), lastDraw(start) {}

Progress::~Progress() {
  if (!drawn)
    return;
  draw();
  std::fputc('\n', stderr);
  std::fflush(stderr);
}

void Progress::advance(uint64_t n) {
  done = n > total - done ? total : done + n;
  if (!terminal)
    return;
  const auto now = std::chrono::steady_clock::now();
  if (now - lastDraw < kInterval)
    return;
  lastDraw = now;
  draw();
}

void Progress::draw() {
  drawn = true;
  const double fraction = total == 0 ? 1.0 : double(done) / double(total);
  const int filled = int(fraction * kBarWidth);
  std::string bar(size_t(kBarWidth), ' ');
  for (int i = 0; i < filled; ++i) bar[size_t(i)] = '=';
  if (filled < kBarWidth) bar[size_t(filled)] = '>';
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  // "\r" returns to the line start; "\x1b[K" clears what a longer earlier
  // line left behind.
  std::fprintf(stderr, "\r%s [%s] %3d%%  %.1fs\x1b[K", label.c_str(), bar.c_str(),
               int(fraction * 100.0), seconds);
  std::fflush(stderr);
}

} // namespace kvplan
