// The kvplan pipelines: each target's passes in order, built from the pass
// registry by their flags, and registered as `kvplan-pipeline`.
#include "passes/Passes.h"

#include "support/Format.h"

#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"
#include "llvm/Support/raw_ostream.h"

#include <mutex>

using namespace mlir;

namespace kvplan {

std::vector<std::string> pipelinePassNames(Target target, int64_t tensorParallel) {
  // The cuda target's own transforms run before buffer planning, which
  // sizes tensors by their (narrowed) types.
  static const std::vector<std::string> cpu = {
      "split-prefill-decode", "insert-kv-cache", "prune-last-token",
      "fuse-rmsnorm",         "fuse-ffn",        "plan-buffers"};
  static const std::vector<std::string> cuda = {
      "split-prefill-decode", "insert-kv-cache",    "prune-last-token",   "fuse-rmsnorm",
      "fuse-ffn",             "fuse-rope-kv-write", "fuse-matvec",        "narrow-activations",
      "plan-buffers"};
  std::vector<std::string> names = target == Target::cuda ? cuda : cpu;
  // Tensor parallelism cuts @forward first: every later pass is one rank's.
  if (tensorParallel > 1) names.insert(names.begin(), "partition-tensor-parallel");
  return names;
}

void registerKVPlanPassesOnce() {
  static std::once_flag once;
  std::call_once(once, [] { registerKVPlanPasses(); });
}

LogicalResult addRegisteredPass(OpPassManager &pm, llvm::StringRef flag, llvm::StringRef options) {
  registerKVPlanPassesOnce();
  const PassInfo *info = PassInfo::lookup(flag);
  if (!info) return failure();
  // Function passes nest under the module on their own.
  pm.setNesting(OpPassManager::Nesting::Implicit);
  std::string errors;
  llvm::raw_string_ostream os(errors);
  return info->addToPipeline(pm, options, [&](const Twine &msg) {
    os << msg;
    return failure();
  });
}

std::string pipelinePassOptions(llvm::StringRef name, const CompileSettings &s) {
  if (name == "partition-tensor-parallel") return "ranks=" + std::to_string(s.tensorParallel);
  if (name != "split-prefill-decode") return "";
  // The cuda target's kernels are chosen by a product's static rows: one
  // row on CUDA cores, matvecMma's tensor cores up to fuse-matvec's
  // max-rows (8), its row groups up to max-tensor-core-rows (32), cuBLAS or
  // the tiled product past that (the norms, RoPE and SwiGLU unfused). A
  // decode step of few sequences, a prefill chunk of few tokens, runs on the
  // smallest copy of its entry point that holds them.
  std::string options;
  if (!s.decodeCopies.empty()) options = "decode-rows=" + joinNumbers(s.decodeCopies, ",");
  if (!s.prefillCopies.empty())
    options += (options.empty() ? "" : " ") + ("prefill-rows=" + joinNumbers(s.prefillCopies, ","));
  return options;
}

void buildKVPlanPipeline(OpPassManager &pm, Target target, int64_t tensorParallel) {
  CompileSettings s;
  s.target = target;
  s.tensorParallel = tensorParallel;
  s.decodeCopies = CompileSettings::defaultDecodeCopies(target);
  s.prefillCopies = CompileSettings::defaultPrefillCopies(target);
  for (const std::string &name : pipelinePassNames(target, tensorParallel))
    if (failed(addRegisteredPass(pm, name, pipelinePassOptions(name, s))))
      llvm::report_fatal_error(llvm::Twine("kvplan pass '") + name + "' is not registered");
}

LogicalResult rewriteGreedily(Operation *op, RewritePatternSet &&patterns) {
  GreedyRewriteConfig config;
  config.enableRegionSimplification = GreedySimplifyRegionLevel::Disabled;
  return applyPatternsAndFoldGreedily(op, std::move(patterns), config);
}

namespace {
struct PipelineOptions : public PassPipelineOptions<PipelineOptions> {
  Option<std::string> target{*this, "target", llvm::cl::desc("cpu or cuda: whose passes to run"),
                             llvm::cl::init("cpu")};
  Option<int64_t> tensorParallel{*this, "tensor-parallel",
                                 llvm::cl::desc("ranks: > 1 adds partition-tensor-parallel first"),
                                 llvm::cl::init(1)};
};
} // namespace

void registerKVPlanPassesAndPipeline() {
  registerKVPlanPassesOnce();
  PassPipelineRegistration<PipelineOptions>(
      "kvplan-pipeline", "Every kvplan pass in order, as `kvplan compile` runs them",
      [](OpPassManager &pm, const PipelineOptions &o) {
        buildKVPlanPipeline(pm, parseTarget(o.target).value_or(Target::cpu), o.tensorParallel);
      });
}

} // namespace kvplan
