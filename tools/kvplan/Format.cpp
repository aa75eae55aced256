// Number formatting for kvplan's human-readable output.
#include "tools/kvplan/Commands.h"
#include "support/SystemResources.h"


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
  return v < 0 ? "-" + formatBytes(uint64_t(-v)) : formatBytes(uint64_t(v));
}

} // namespace kvplan::cli
