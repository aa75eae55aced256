// The kvplan pipeline: pass order, registration and shared helpers.
#include "passes/Passes.h"

#include "mlir/Pass/PassRegistry.h"

using namespace mlir;

namespace kvplan {

const std::vector<std::string> &pipelinePassNames() {
  static const std::vector<std::string> names = {
      "split-prefill-decode", "insert-kv-cache", "prune-last-token",
      "fuse-rmsnorm",         "fuse-ffn",        "plan-buffers"};
  return names;
}

LogicalResult addPassByName(OpPassManager &pm, const std::string &flag) {
  if (flag == "split-prefill-decode")
    pm.addPass(createSplitPrefillDecode());
  else if (flag == "insert-kv-cache")
    pm.addPass(createInsertKVCache());
  else if (flag == "prune-last-token")
    pm.addNestedPass<func::FuncOp>(createPruneLastToken());
  else if (flag == "fuse-rmsnorm")
    pm.addNestedPass<func::FuncOp>(createFuseRMSNorm());
  else if (flag == "fuse-ffn")
    pm.addPass(createFuseFFN());
  else if (flag == "plan-buffers")
    pm.addNestedPass<func::FuncOp>(createPlanBuffers());
  else
    return failure();
  return success();
}

void buildKVPlanPipeline(OpPassManager &pm) {
  for (const std::string &name : pipelinePassNames())
    (void)addPassByName(pm, name);
}

void registerKVPlanPassesAndPipeline() {
  registerKVPlanPasses();
  PassPipelineRegistration<>("kvplan-pipeline",
                             "Every kvplan pass in order, as `kvplan compile` runs them",
                             buildKVPlanPipeline);
}

} // namespace kvplan
