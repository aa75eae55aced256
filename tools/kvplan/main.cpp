// kvplan: compile model descriptions to plans, inspect artifacts, dump IR.
#include "tools/kvplan/Commands.h"
#include "tools/kvplan/Runnable.h"

#include "spec/ModelSpec.h"
#include "kvplan/Version.h"
#include "support/SystemResources.h"
#ifdef KVPLAN_HAVE_COMPILER
#include "codegen/Compiler.h"
#endif

#ifdef KVPLAN_HAVE_MPI
#include "runtime/mpi/MpiCollective.h"
#endif

#include <cstdio>
#include <iostream>

namespace {
int runAction(CLI::App &app, const kvplan::cli::Action &action);
} // namespace

// Exit codes: 0 success, 1 bad input or too little memory or disk (with a
// message), 2 internal error.
int main(int argc, char **argv) {
  CLI::App app{"kvplan: an ahead-of-time compiler and runtime for Llama-family models"};
  app.set_version_flag("--version", std::string("kvplan ") + KVPLAN_VERSION + " (" +
                                        KVPLAN_GIT_HASH + ")");
  app.require_subcommand(1);
  kvplan::cli::GlobalOptions global;
  app.add_flag("--verbose", global.verbose, "Print each stage with its time on stderr");
  kvplan::cli::Action action;
#ifdef KVPLAN_HAVE_COMPILER
  kvplan::cli::addCompileCommand(app, global, action);
  kvplan::cli::addDumpCommand(app, global, action);
#endif
  kvplan::cli::addInspectCommand(app, global, action);
  kvplan::cli::addReportCommand(app, global, action);
  kvplan::cli::addRunCommand(app, global, action);
  kvplan::cli::addBenchCommand(app, global, action);
  kvplan::cli::addServeCommand(app, global, action);
  kvplan::cli::addPerplexityCommand(app, global, action);
  kvplan::cli::addTokenizeCommand(app, action);
  kvplan::cli::addDetokenizeCommand(app, action);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp &e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp &e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion &e) {
    return app.exit(e);
  } catch (const CLI::ParseError &e) {
    app.exit(e);
    return 1;
  }

#ifdef KVPLAN_HAVE_MPI
  // Under mpirun every rank runs the same command; rank 0 speaks for them
  // on stdout (errors still come from whichever rank has one).
  if (kvplan::Collective *world = kvplan::mpiWorld(); world && world->rank() != 0)
    if (!std::freopen("/dev/null", "w", stdout)) return 2;
#endif
  const int code = runAction(app, action);
#ifdef KVPLAN_HAVE_MPI
  // A rank that fails stops the others, which would wait for it forever.
  if (code != 0) kvplan::abortMpiJob(code);
#endif
  return code;
}

namespace {
int runAction(CLI::App &app, const kvplan::cli::Action &action) {
  try {
    return action ? action() : 1;
  } catch (const kvplan::cli::RankFinished &) {
    return 0;
  } catch (const kvplan::InputError &e) {
    // One write: under mpirun the launcher's own messages may come between two.
    std::cerr << "error: " + std::string(e.what()) + "\n";
    return 1;
  } catch (const std::bad_alloc &) {
    // What the checks before large allocations did not foresee: still the
    // machine's limit, not a bug.
    std::optional<kvplan::ResourceFigure> mem = kvplan::availableMemory();
    const std::vector<CLI::App *> sub = app.get_subcommands();
    std::cerr << "error: out of memory while running kvplan" +
                     (sub.empty() ? std::string() : " " + sub.front()->get_name()) + " (" +
                     (mem ? kvplan::formatBytes(mem->bytes) + " available, " + mem->source
                          : std::string("the available memory is unknown")) +
                     "); free memory, or choose a smaller model, --dtype, --max-seq or "
                     "--max-batch\n";
    return 1;
#ifdef KVPLAN_HAVE_COMPILER
  } catch (const kvplan::InternalError &e) {
    std::cerr << "internal error: " + std::string(e.what()) + "\n";
    return 2;
#endif
  } catch (const std::exception &e) {
    std::cerr << "internal error: " + std::string(e.what()) + "\n";
    return 2;
  }
}
} // namespace
