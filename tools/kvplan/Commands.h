// The kvplan subcommands; each registers itself on the CLI11 app and sets
// the action main() runs after parsing.
#pragma once

#include "support/Format.h" // withCommas, formatBytes

#include <CLI/CLI.hpp>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace kvplan::cli {

struct GlobalOptions {
  bool verbose = false;
};

/// What main() runs once the command line is parsed; returns the exit code.
using Action = std::function<int()>;

#ifdef KVPLAN_HAVE_COMPILER
void addCompileCommand(CLI::App &app, const GlobalOptions &global, Action &action);
void addDumpCommand(CLI::App &app, const GlobalOptions &global, Action &action);
#endif
void addInspectCommand(CLI::App &app, const GlobalOptions &global, Action &action);
void addReportCommand(CLI::App &app, const GlobalOptions &global, Action &action);
void addRunCommand(CLI::App &app, const GlobalOptions &global, Action &action);
void addBenchCommand(CLI::App &app, const GlobalOptions &global, Action &action);
void addServeCommand(CLI::App &app, const GlobalOptions &global, Action &action);
void addPerplexityCommand(CLI::App &app, const GlobalOptions &global, Action &action);
void addTokenizeCommand(CLI::App &app, Action &action);
void addDetokenizeCommand(CLI::App &app, Action &action);

/// 1536 -> "1.50 KiB".
std::string humanBytes(int64_t v);

/// "1,2,3" or "1 2 3" -> ids; throws InputError naming `flag` and the bad
/// item.
std::vector<int32_t> parseIds(const std::string &text, const char *flag);
/// Prints ids on stdout separated by spaces; `first` carries across calls
/// so that a line can be printed in pieces.
void printIds(const std::vector<int32_t> &ids, bool &first);

} // namespace kvplan::cli
