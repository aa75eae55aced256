// Numbers for people: thousands separators and byte counts.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kvplan {

/// 1234567 -> "1,234,567" (every int64_t, its minimum included).
std::string withCommas(int64_t v);
/// Bytes for people: "512 B", "1.50 GiB".
std::string formatBytes(uint64_t bytes);
/// {1, 8, 32} -> "1, 8, 32" (`sep` between them); {} -> "".
std::string joinNumbers(const std::vector<int64_t> &v, const std::string &sep = ", ");
/// A setting as a person wrote it: 2.5 -> "2.5", 0 -> "0", 1e-7 -> "1e-07"
/// (six significant digits), not std::to_string's "2.500000".
std::string formatNumber(double v);

} // namespace kvplan
