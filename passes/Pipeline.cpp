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
  registerPassPipeline(
      "kvplan-pipeline", "Every kvplan pass in order, as `kvplan compile` runs them",
      [](OpPassManager &pm, StringRef text, function_ref<LogicalResult(const Twine &)> error) {
        PipelineOptions o;
        if (failed(o.parseFromString(text))) return failure();
        std::optional<Target> target = parseTarget(o.target);
        if (!target)
          return error("kvplan-pipeline: target '" + o.target + "' is not cpu or cuda");
        if (o.tensorParallel < 1)
          return error("kvplan-pipeline: tensor-parallel " + Twine(o.tensorParallel.getValue()) +
                       " must be at least 1");
        buildKVPlanPipeline(pm, *target, o.tensorParallel);
        return success();
      },
      [](function_ref<void(const detail::PassOptions &)> describe) {
        describe(PipelineOptions());
      });
}

} // namespace kvplan
