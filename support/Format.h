// Numbers for people: thousands separators and byte counts.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
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
/// A size as people write it: "2147483648", "2GiB", "1.5 GiB", "800 MB"
/// (KiB, MiB, GiB, TiB: powers of 1024; kB or KB, MB, GB, TB: of 1000; B or
/// no unit: bytes), rounded down to whole bytes. nullopt for anything
/// else, a size below one byte, or one past 2^62.
std::optional<int64_t> parseByteSize(std::string_view text);
/// What parseByteSize takes, for messages.
inline constexpr const char *kByteSizeForms =
    "bytes, or a number and a unit: 24GiB, 1.5 GiB, 800MB (KiB, MiB, GiB, TiB: powers of "
    "1024; KB, MB, GB, TB: of 1000)";

} // namespace kvplan
