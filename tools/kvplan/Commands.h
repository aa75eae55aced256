// The kvplan subcommands; each registers itself on the CLI11 app and sets
// the action main() runs after parsing.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <functional>
#include <string>

namespace kvplan::cli {

struct GlobalOptions {
  bool verbose = false;
};

/// What main() runs once the command line is parsed; returns the exit code.
using Action = std::function<int()>;

void addInspectCommand(CLI::App &app, const GlobalOptions &global, Action &action);
void addRunCommands(CLI::App &app, const GlobalOptions &global, Action &action);
#ifdef KVPLAN_HAVE_COMPILER
void addCompileCommand(CLI::App &app, const GlobalOptions &global, Action &action);
void addDumpCommand(CLI::App &app, const GlobalOptions &global, Action &action);
#endif

/// 1234567 -> "1,234,567".
std::string withCommas(int64_t v);
/// 1536 -> "1.50 KiB".
std::string humanBytes(int64_t v);

} // namespace kvplan::cli
