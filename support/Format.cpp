// Numbers for people (Format.h).
#include "support/Format.h"

#include <cstdio>

namespace kvplan {

std::string withCommas(int64_t v) {
  const uint64_t magnitude = v < 0 ? 0 - uint64_t(v) : uint64_t(v);
  const std::string digits = std::to_string(magnitude);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return v < 0 ? "-" + out : out;
}

std::string joinNumbers(const std::vector<int64_t> &v, const std::string &sep) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? sep : "") + std::to_string(v[i]);
  return out;
}

std::string formatNumber(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

std::string formatBytes(uint64_t bytes) {
  static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double d = double(bytes);
  int u = 0;
  while (d >= 1024 && u < 6) {
    d /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u ? "%.2f %s" : "%.0f %s", d, units[u]);
  return buf;
}

} // namespace kvplan
