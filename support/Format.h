// Numbers for people: thousands separators and byte counts.
#pragma once

#include <cstdint>
#include <string>

namespace kvplan {

/// 1234567 -> "1,234,567" (every int64_t, its minimum included).
std::string withCommas(int64_t v);
/// Bytes for people: "512 B", "1.50 GiB".
std::string formatBytes(uint64_t bytes);

} // namespace kvplan
