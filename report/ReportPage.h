// The report page's fixed parts and the helpers its sections share.
#pragma once

#include "report/Report.h"
#include "support/Format.h" // withCommas, formatBytes

#include <cstdint>
#include <string>
#include <string_view>

namespace kvplan::report {

const char *pageStyle();
/// Runs first: records any script error in the page (data-js-error on <html>).
const char *pageEarlyScript();
/// Runs last: the interactivity, then data-ok="1" on <html>.
const char *pageScript();

/// "1.50 KiB".
std::string bytes(int64_t v);
/// A number with `digits` significant decimals, no exponent below 1e15.
std::string num(double v, int digits = 3);
/// One line of MLIR as HTML with its tokens classed for colour.
std::string highlightIR(std::string_view line);

// The sections.
std::string summarySection(const ReportInput &in);
std::string pipelineSection(const ReportInput &in);
std::string memorySection(const ReportInput &in);
std::string kernelsSection(const ReportInput &in);
std::string rooflineSection(const ReportInput &in);

} // namespace kvplan::report
