// kvplan-opt: mlir-opt with the llm dialect and every kvplan pass, for
// running and testing one pass at a time.
#include "ir/LLMDialect.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"
#include "mlir/Transforms/Passes.h"

int main(int argc, char **argv) {
  mlir::DialectRegistry registry;
  registry.insert<kvplan::llm::LLMDialect, mlir::func::FuncDialect>();
  kvplan::registerKVPlanPassesAndPipeline();
  mlir::registerCanonicalizerPass();
  mlir::registerCSEPass();
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "kvplan optimizer driver\n", registry));
}
