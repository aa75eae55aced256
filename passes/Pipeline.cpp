// The kvplan pipelines: each target's passes in order, built from the pass
// registry by their flags, and registered as `kvplan-pipeline`.
#include "passes/Passes.h"

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
      "prefetch-weights",     "plan-buffers"};
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
  // split-prefill-decode takes the smaller copies of @decode and @prefill
  // from the module (llm.decode_copies, llm.prefill_copies, the settings'
  // lists), so that kvplan-opt's pipeline on the frontend's IR makes them too.
  return "";
}

void buildKVPlanPipeline(OpPassManager &pm, Target target, int64_t tensorParallel) {
  CompileSettings s;
  s.target = target;
  s.tensorParallel = tensorParallel;
  for (const std::string &name : pipelinePassNames(target, tensorParallel))
    if (failed(addRegisteredPass(pm, name, pipelinePassOptions(name, s))))
      llvm::report_fatal_error(llvm::Twine("kvplan pass '") + name + "' is not registered");
}

LogicalResult rewriteGreedily(Operation *op, RewritePatternSet &&patterns) {
  GreedyRewriteConfig config;
  config.enableRegionSimplification = GreedySimplifyRegionLevel::Disabled;
  return applyPatternsAndFoldGreedily(op, std::move(patterns), config);
}

#define GEN_PASS_DEF_KVPLANPIPELINE
#include "passes/Passes.h.inc"

namespace {

struct KVPlanPipelinePass : public impl::KVPlanPipelineBase<KVPlanPipelinePass> {
  using KVPlanPipelineBase::KVPlanPipelineBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    llm::SettingsAttr settings = moduleSettings(module);
    Target t = Target::cpu;
    if (settings) t = parseTarget(settings.getTarget().str()).value_or(Target::cpu);
    if (!target.empty()) {
      std::optional<Target> given = parseTarget(target);
      if (!given) {
        module.emitError() << "kvplan-pipeline: target '" << target << "' is not cpu or cuda";
        return signalPassFailure();
      }
      if (settings && *given != t) {
        module.emitError() << "kvplan-pipeline: target " << target << ", but the module's "
                           << "llm.settings say " << settings.getTarget()
                           << "; leave the option out";
        return signalPassFailure();
      }
      t = *given;
    }
    const int64_t ranks = tensorParallel ? int64_t(tensorParallel) : tensorParallelRanks(module);
    if (ranks < 1) {
      module.emitError() << "kvplan-pipeline: tensor-parallel " << ranks
                         << " must be at least 1";
      return signalPassFailure();
    }
    OpPassManager pm(ModuleOp::getOperationName());
    buildKVPlanPipeline(pm, t, ranks);
    if (failed(runPipeline(pm, module))) signalPassFailure();
  }
};

} // namespace

void registerKVPlanPassesAndPipeline() { registerKVPlanPassesOnce(); }

} // namespace kvplan
