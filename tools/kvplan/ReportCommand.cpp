// kvplan report: one self-contained HTML page showing what the compiler did,
// pass by pass, and where every byte goes (report/Report.h draws it).
#include "tools/kvplan/Commands.h"

#include "kvplan/Version.h"
#include "plan/Artifact.h"
#include "report/Report.h"
#include "support/AtomicFile.h"
#include "support/Error.h"
#include "tools/kvplan/Runnable.h"
#ifdef KVPLAN_HAVE_COMPILER
#include "codegen/Compiler.h"
#include "codegen/CudaCodegen.h"
#endif

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

namespace kvplan::cli {

namespace {

struct ReportOptions {
  ModelOptions model;
  std::string output, bench;
};

BenchFigures readBench(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw InputError(path + ": cannot read the --bench file (" + std::strerror(errno) +
                     "); write one with `kvplan bench MODEL --json > " + path + "`");
  std::ostringstream text;
  text << in.rdbuf();
  return benchFromJson(text.str(), path);
}

/// What the page is made from: the plan, and every stage's IR when the
/// model is compiled here, or the IR and launch table an artifact holds.
struct Sources {
  Plan plan;
  std::vector<IRStage> stages;
  std::string artifactIR;
  std::optional<CudaProgram> cuda;
};

Sources fromArtifact(const ModelOptions &o) {
  const std::string &path = o.model;
  refuseSettingsForArtifact(o);
  Artifact a = Artifact::open(path);
  Sources s;
  s.plan = a.plan();
  if (a.hasSection("ir"))
    s.artifactIR = std::string(a.section("ir"));
  if (a.hasSection(kCudaProgramSection)) {
    std::string_view text = a.section(kCudaProgramSection);
    s.cuda = cudaProgramFromJson(nlohmann::json::parse(text.begin(), text.end()));
  }
  return s;
}

#ifdef KVPLAN_HAVE_COMPILER
Sources fromModel(const ModelOptions &o, bool verbose) {
  const ModelConfig cfg = resolveModelSources(o).config;
  Sources s;
  CompileOutput out = compileModel(
      cfg,
      [&](int, const std::string &stage, mlir::ModuleOp m) {
        s.stages.push_back({stage, printModule(m)});
      },
      verbose);
  if (cfg.compile.target == Target::cuda) {
    // The launch table needs no nvcc: only the cubins do, and the page shows none.
    const std::vector<std::string> archs = parseCudaArchs(kDefaultCudaArchs);
    CudaModule mod = generateCuda(out.plan, archs);
    out.plan.cudaArchs = archs;
    out.plan.deviceWorkspaceBytes = mod.program.workspaceBytes;
    s.cuda = std::move(mod.program);
  }
  s.plan = std::move(out.plan);
  return s;
}
#else
Sources fromModel(const ModelOptions &o, bool) {
  throw InputError(o.model + ": not a kvplan artifact, and this kvplan was built without the "
                             "compiler (-DKVPLAN_COMPILER=OFF); give an artifact, or report "
                             "where the compiler is installed to see every pass");
}
#endif

int runReport(const ReportOptions &o, bool verbose) {
  ReportInput in;
  if (!o.bench.empty())
    in.bench = readBench(o.bench);
  if (!std::filesystem::exists(o.model.model))
    throw InputError(o.model.model + ": no such file; give a model description (.toml, "
                                     "config.json, .bin, .gguf) or an artifact (.kvp)");
  // Open the output first: an unwritable -o should not wait for the compiler.
  AtomicFile out(o.output, "the report");
  Sources s = isArtifactFile(o.model.model) ? fromArtifact(o.model) : fromModel(o.model, verbose);
  in.source = o.model.model;
  in.plan = &s.plan;
  in.stages = std::move(s.stages);
  in.artifactIR = std::move(s.artifactIR);
  in.cuda = s.cuda ? &*s.cuda : nullptr;
  in.generator = std::string("kvplan ") + KVPLAN_VERSION + " (" + KVPLAN_GIT_HASH + ")";
  const std::string html = renderReport(in);
  out.write(html.data(), html.size());
  out.commit();
  std::cerr << "wrote " << o.output << ": " << s.plan.model.name << ", "
            << (in.stages.empty() ? std::string("the artifact's final IR")
                                  : std::to_string(in.stages.size()) + " IR stages")
            << ", " << s.plan.entryPoints.size() << " entry points"
            << (in.bench ? ", measured against " + o.bench : std::string()) << " ("
            << humanBytes(int64_t(html.size())) << ")\n";
  return 0;
}

} // namespace

void addReportCommand(CLI::App &app, const GlobalOptions &global, Action &action) {
  auto *cmd = app.add_subcommand(
      "report", "Write one self-contained HTML page: the passes, the memory plan, the roofline");
  auto o = std::make_shared<ReportOptions>();
#ifdef KVPLAN_HAVE_COMPILER
  o->model.add(cmd,
               "An artifact (.kvp), or a model (TOML, config.json, .bin, .gguf) compiled here "
               "to show every pass",
               true, false);
#else
  o->model.add(cmd, "An artifact (.kvp)", false, false);
#endif
  cmd->add_option("-o,--output", o->output, "The page to write (.html)")->required();
  cmd->add_option("--bench", o->bench,
                  "A `kvplan bench MODEL --json` result: draws the roofline against its "
                  "machine and places the measured speed");
  cmd->callback(
      [&action, &global, o] { action = [&global, o] { return runReport(*o, global.verbose); }; });
}

} // namespace kvplan::cli
