// Number formatting for kvplan's human-readable output.
#include "tools/kvplan/Commands.h"

#include <cstdio>

namespace kvplan::cli {

std::string withCommas(int64_t v) {
  std::string digits = std::to_string(v < 0 ? -v : v), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return v < 0 ? "-" + out : out;
}

std::string humanBytes(int64_t v) {
  static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double d = double(v);
  int u = 0;
  while (d >= 1024 && u < 4) {
    d /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u ? "%.2f %s" : "%.0f %s", d, units[u]);
  return buf;
}

} // namespace kvplan::cli
