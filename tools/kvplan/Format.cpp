// Number formatting for kvplan's human-readable output.
#include "tools/kvplan/Commands.h"
#include "support/Format.h"

namespace kvplan::cli {

std::string humanBytes(int64_t v) {
  return v < 0 ? "-" + formatBytes(uint64_t(-v)) : formatBytes(uint64_t(v));
}

} // namespace kvplan::cli
