// Numbers for people (Format.h).
#include "support/Format.h"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>

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

std::optional<int64_t> parseByteSize(std::string_view text) {
  auto trim = [](std::string_view t) {
    while (!t.empty() && std::isspace((unsigned char)t.front())) t.remove_prefix(1);
    while (!t.empty() && std::isspace((unsigned char)t.back())) t.remove_suffix(1);
    return t;
  };
  text = trim(text);
  size_t end = 0, digits = 0;
  bool point = false;
  for (; end < text.size(); ++end) {
    const char c = text[end];
    if (std::isdigit((unsigned char)c))
      ++digits;
    else if (c == '.' && !point)
      point = true;
    else
      break;
  }
  if (digits == 0) return std::nullopt;
  const std::string number(text.substr(0, end));
  const std::string_view unit = trim(text.substr(end));
  static const struct {
    const char *name;
    double scale;
  } kUnits[] = {{"", 1},           {"B", 1},         {"kB", 1e3},      {"KB", 1e3},
                {"MB", 1e6},       {"GB", 1e9},      {"TB", 1e12},     {"KiB", 1024.0},
                {"MiB", 1048576.0}, {"GiB", 1073741824.0}, {"TiB", 1099511627776.0}};
  for (const auto &u : kUnits) {
    if (unit != u.name) continue;
    constexpr int64_t kMost = int64_t(1) << 62;
    if (!point && u.scale == 1) { // a count of bytes, exact past 2^53
      if (digits > 19) return std::nullopt;
      const unsigned long long v = std::strtoull(number.c_str(), nullptr, 10);
      if (v < 1 || v > uint64_t(kMost)) return std::nullopt;
      return int64_t(v);
    }
    const double bytes = std::floor(std::strtod(number.c_str(), nullptr) * u.scale);
    if (!(bytes >= 1) || bytes > double(kMost)) return std::nullopt;
    return int64_t(bytes);
  }
  return std::nullopt;
}

} // namespace kvplan
