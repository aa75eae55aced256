// The CUDA target on a machine without a GPU: the generated source compiles
// with nvcc for several model shapes, the artifact holds machine code for
// each requested architecture, and the launch table covers every step.
// (What needs a GPU is in tests/gpu/.)
#include "codegen/Compiler.h"
#include "codegen/CudaCodegen.h"
#include "frontend/ConfigParser.h"
#include "plan/Artifact.h"
#include "tests/common/CudaShapes.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <sstream>

using namespace kvplan;
using kvplan::testing::cudaConfig;
using kvplan::testing::kShapes;
using kvplan::testing::Shape;

namespace {

bool haveNvcc() {
  try {
    findNvcc();
    return true;
  } catch (const InputError &) {
    return false;
  }
}

/// The float shapes, then the quantized ones.
std::vector<Shape> allShapes() {
  std::vector<Shape> v(std::begin(kShapes), std::end(kShapes));
  v.insert(v.end(), std::begin(kvplan::testing::kQuantShapes),
           std::end(kvplan::testing::kQuantShapes));
  return v;
}

TEST(CudaCodegen, LaunchTableCoversEveryStep) {
  for (const Shape &s : allShapes()) {
    SCOPED_TRACE(s.what);
    ModelConfig cfg = cudaConfig(s.model, s.compile, s.rope);
    CompileOutput out = compileModel(cfg);
    CudaModule mod = generateCuda(out.plan, {"sm_90a"});
    // The JSON form reads back to the same table.
    CudaProgram back = cudaProgramFromJson(toJson(mod.program));
    EXPECT_EQ(toJson(back).dump(), toJson(mod.program).dump());
    Plan withWorkspace = out.plan; // as compileModel leaves an artifact's
    withWorkspace.deviceWorkspaceBytes = mod.program.workspaceBytes;
    EXPECT_NO_THROW(checkCudaProgramFits(mod.program, withWorkspace.memoryBill()));
    // Weights the tensor-core matrix-vector kernels take up to 32 rows.
    const DType wt = cfg.compile.weightDtype;
    const bool tensorCores = wt == DType::bf16 || wt == DType::i8 || wt == DType::i4;
    const int64_t groupRows = 32; // matvecMma's rows, in tiles of 8
    for (const auto &[name, ep] : out.plan.entryPoints) {
      SCOPED_TRACE(name);
      const std::string role = entryRole(name); // prefill.8: prefill's copy at 8 rows
      const CudaEntry &e = mod.program.entries.at(name);
      std::set<int64_t> covered;
      int64_t fused = 0, gemms = 0, compactInputs = 0, lastStep = 0, products = 0,
              ropeEpilogues = 0, tiled = 0, partial = 0, mmaProducts = 0, groupedProducts = 0,
              groupedFolds = 0, groupedRope = 0, moeKernels = 0;
      // A mixture of experts' layer has two products of its own (QKV, o);
      // its FFN is five kernels of their own (below).
      // A mixture of experts: QKV and o (its experts' kernels apart), and a
      // shared expert's gate|up and down.
      const int64_t layerProducts = cfg.model.moe() && !cfg.model.sharedExpert() ? 2 : 4;
      for (const DeviceOp &op : e.ops) {
        // One to one: each device op lowers one step, in the steps' order.
        ASSERT_LT(op.step, int64_t(ep.steps.size()));
        EXPECT_GE(op.step, lastStep);
        lastStep = op.step;
        covered.insert(op.step);
        const bool ropeEpilogue = op.name.rfind("matvec_rope_kv_", 0) == 0;
        // (Qwen3's: rope_norm_qkv_write, its q/k norms folded in.)
        if (op.name.rfind("rope_qkv_write", 0) == 0 ||
            op.name.rfind("rope_norm_qkv_write", 0) == 0 || ropeEpilogue) {
          ++fused;
          ropeEpilogues += ropeEpilogue;
          EXPECT_EQ(ep.steps[size_t(op.step)].kind(),
                    ropeEpilogue ? OpKind::matVecRopeKVWrite : OpKind::ropeKVWrite);
        }
        if (op.kind == DeviceOp::gemm) {
          ++gemms;
          // cuBLAS only where the rows are many: up to 8 rows (bf16: 32), a
          // generated matrix-vector kernel (unless a row is not whole 16-byte
          // runs).
          EXPECT_TRUE(op.staticRows > (op.weightType == DType::bf16 ? 32 : 8) ||
                      op.k % (16 / dtypeBytes(op.weightType)) != 0)
              << "step " << op.step << ": cuBLAS for " << op.staticRows << " rows";
          const OpKind k = ep.steps[size_t(op.step)].kind();
          EXPECT_TRUE(k == OpKind::linear || k == OpKind::logits) << op.step;
          if (op.inputType != DType::f32) ++compactInputs;
          EXPECT_EQ(op.inputType, op.weightType) << "cuBLAS takes one input type";
          EXPECT_EQ(op.ldc, op.m);
        }
        if (op.kind == DeviceOp::kernel && op.name.rfind("matvec_", 0) == 0) {
          // A matvec step (a product with its norm, SwiGLU, residual add or
          // RoPE and cache write folded in) is one matrix-vector kernel, up
          // to 8 rows; int8, int4 and bf16 up to 32.
          ++products;
          EXPECT_EQ(ep.steps[size_t(op.step)].kind(),
                    ropeEpilogue ? OpKind::matVecRopeKVWrite : OpKind::matVec)
              << op.step;
          EXPECT_LE(op.staticRows, tensorCores ? groupRows : 8) << op.name;
        }
        if (op.kind == DeviceOp::kernel && (op.name.rfind("matvec_", 0) == 0 ||
                                            op.name.rfind("linear_gemv_", 0) == 0)) {
          // bf16, int8 and int4 weights at 2 to 8 rows: on tensor cores
          // (matvecMma, matvecRopeKvMma), a block for every 16 features (8
          // RoPE pairs), up to 16 warps splitting K; else f32 products.
          // (Quantized rows that are not whole runs of 16 codes take
          // quantGemv.) int8, int4 and bf16 at 9 to 32 rows: matvecMma (and
          // matvecRopeKvMma), a block all the rows in tiles of 8 (mvTiles),
          // its grid the same at any active rows.
          const size_t at = mod.source.find(" " + op.name + "(KvArgs a)");
          const bool gemv =
              at != std::string::npos &&
              mod.source.substr(at, mod.source.find('\n', at) - at).find("quantGemv<") !=
                  std::string::npos;
          const bool mma = (wt == DType::bf16 || wt == DType::i8 || wt == DType::i4) &&
                           op.staticRows >= 2 && !gemv;
          const std::string prefix = ropeEpilogue       ? "matvec_rope_kv_mma_"
                                     : op.name[0] == 'l' ? "linear_gemv_mma_"
                                                         : "matvec_mma_";
          EXPECT_EQ(op.name.rfind(prefix, 0) == 0, mma) << op.name;
          if (mma) {
            const Step &st = ep.steps[size_t(op.step)];
            int64_t features = 0;
            if (const auto *mv = std::get_if<MatVecOp>(&st.op))
              features = out.plan.findWeight(mv->weight)->shape[0] / (mv->swiglu ? 2 : 1);
            else if (const auto *l = std::get_if<LinearOp>(&st.op))
              features = out.plan.findWeight(l->weight)->shape[0];
            else if (const auto *l = std::get_if<LogitsOp>(&st.op))
              features = out.plan.findWeight(l->weight)->shape[0];
            else if (const auto *q = std::get_if<MatVecRopeKVWriteOp>(&st.op))
              features = out.plan.findWeight(q->weight)->shape[0];
            const bool grouped = op.staticRows > 8;
            EXPECT_EQ(op.grid[0], (features + 15) / 16) << op.name;
            EXPECT_EQ(op.grid[1], 1) << op.name;
            EXPECT_EQ(op.rowsDim, -1) << op.name;
            if (grouped) {
              EXPECT_TRUE(tensorCores) << op.name;
              EXPECT_LE(op.staticRows, groupRows) << op.name;
              const std::string tiles = std::to_string((op.staticRows + 7) / 8);
              EXPECT_NE(mod.source.find("kvplan::mvTiles(" + tiles + ")>(a)", at),
                        std::string::npos);
              EXPECT_EQ(op.name.substr(op.name.size() - 1 - tiles.size()), "r" + tiles);
              ++groupedProducts;
              groupedFolds += op.name.rfind("matvec_mma_", 0) == 0;
              groupedRope += ropeEpilogue;
            }
            EXPECT_EQ(op.block[0] % 32, 0) << op.name;
            EXPECT_LE(op.block[0], 16 * 32) << op.name;
            ++mmaProducts;
          }
        }
        if (op.kind == DeviceOp::kernel && op.name.rfind("linear_", 0) == 0) {
          // One kernel per linear or logits step (every output of a fused
          // weight), the matrix-vector one up to 8 rows (quantized weights
          // in whole runs of 16 codes: up to 32; bf16: 16); quantized weights
          // always, 16-bit and f32 ones up to 8 rows (bf16: 16).
          ++products;
          const Step &st = ep.steps[size_t(op.step)];
          const OpKind k = st.kind();
          EXPECT_TRUE(k == OpKind::linear || k == OpKind::logits) << op.step;
          const auto *l = std::get_if<LinearOp>(&st.op);
          const auto *lg = std::get_if<LogitsOp>(&st.op);
          const WeightEntry *w = out.plan.findWeight(l ? l->weight : lg ? lg->weight : "");
          ASSERT_NE(w, nullptr) << op.name;
          const bool quantized = w->dtype == DType::i8 || w->dtype == DType::i4;
          const bool gemv =
              op.staticRows <= 8 ||
              (op.staticRows <= 32 && quantized && w->shape[1] % 16 == 0) ||
              (op.staticRows <= 16 && w->dtype == DType::bf16 && w->shape[1] % 8 == 0);
          EXPECT_EQ(op.name.rfind(gemv ? "linear_gemv_" : "linear_gemm_", 0), 0u)
              << op.name << " for " << op.staticRows << " rows";
        }
        if (op.name.rfind("attn_tiled_", 0) == 0) {
          // A prefill chunk (one page table, whole tiles of 16 rows) on
          // tensor cores: block (KV head, tiles, query heads), a warp for
          // each query head and tile, no partials in the workspace.
          ++tiled;
          const int64_t group = cfg.model.numHeads / cfg.model.numKvHeads;
          const int64_t warps = op.block[0] / 32, heads = group / op.grid[2];
          EXPECT_EQ(role, "prefill");
          EXPECT_EQ(op.grid[0], cfg.model.numKvHeads);
          EXPECT_EQ(group % op.grid[2], 0) << op.name;
          EXPECT_EQ(op.rowsPerBlock, 16 * (warps / heads)) << op.name;
          EXPECT_EQ(op.grid[1] * op.rowsPerBlock, ep.rows) << op.name;
          EXPECT_LE(warps, 4);
          // q, the cache, the positions and the page table (in the call's
          // inputs), out: nothing else of the workspace.
          ASSERT_EQ(op.pointers.size(), 5u) << op.name;
          EXPECT_EQ(op.pointers[0].buffer, DeviceBuffer::arena);
          EXPECT_EQ(op.pointers[1].buffer, DeviceBuffer::cache);
          EXPECT_EQ(op.pointers[4].buffer, DeviceBuffer::arena);
          for (int i : {2, 3}) {
            EXPECT_EQ(op.pointers[size_t(i)].buffer, DeviceBuffer::work);
            EXPECT_GE(op.pointers[size_t(i)].offset, e.inputsOffset);
            EXPECT_LT(op.pointers[size_t(i)].offset, e.samplingParamsOffset);
          }
          EXPECT_EQ(ep.steps[size_t(op.step)].kind(), OpKind::attention) << op.name;
        } else if (op.name.rfind("attn_", 0) == 0) {
          ++partial;
          // Enough attention blocks for every multiprocessor of a large GPU
          // (two each of 132), unless a split would fall under 32 keys at
          // full context; the kernel is told the splits it is launched with.
          const int64_t splits = op.grid[2], most = cfg.compile.maxSeqLen / 32;
          EXPECT_EQ(op.ints.at(2), splits);
          EXPECT_TRUE(op.grid[0] * op.grid[1] * splits >= 264 || splits == most)
              << op.grid[0] << " x " << op.grid[1] << " x " << splits;
          EXPECT_LE(splits, std::max<int64_t>(1, most));
          // One kernel: its last split to finish merges the splits, counting
          // arrivals in the workspace.
          ASSERT_EQ(op.pointers.size(), 8u) << op.name;
          EXPECT_EQ(op.pointers[7].buffer, DeviceBuffer::work) << op.name;
          EXPECT_EQ(ep.steps[size_t(op.step)].kind(), OpKind::attention) << op.name;
        }
        if (op.name.rfind("moe_", 0) == 0) {
          // The router's product, the routing, gate|up, down, the sums: each
          // moe_ffn step is these five kernels, in that order. The experts'
          // products: a block an active expert (at most experts, or rows x
          // experts_per_token) and 8 features, its scratch in the workspace.
          static const char *kinds[] = {"moe_router_", "moe_route_", "moe_gate_up_", "moe_down_",
                                        "moe_combine_"};
          EXPECT_EQ(op.name.rfind(kinds[moeKernels % 5], 0), 0u) << op.name;
          ++moeKernels;
          const auto &moe = std::get<MoEFFNOp>(ep.steps[size_t(op.step)].op);
          const int64_t experts = cfg.model.numExperts, k = cfg.model.expertsPerToken;
          if (op.name.rfind("moe_gate_up_", 0) == 0 || op.name.rfind("moe_down_", 0) == 0) {
            EXPECT_EQ(op.grid[1], std::min(experts, moe.input.rows() * k)) << op.name;
            EXPECT_EQ(op.rowsDim, -1);
          }
          for (const DeviceRef &p : op.pointers)
            if (p.buffer == DeviceBuffer::work) {
              EXPECT_LT(p.offset, mod.program.cublasWorkspaceOffset) << op.name;
              EXPECT_GT(p.offset, e.argmaxOffset) << op.name;
            }
        }
        if (op.kind == DeviceOp::kernel) {
          EXPECT_LE(op.pointers.size(), size_t(kKernelPointers));
          EXPECT_NE(mod.source.find(" " + op.name + "(KvArgs a)"), std::string::npos)
              << op.name << " is launched but not generated";
        }
      }
      for (size_t st = 0; st < ep.steps.size(); ++st) {
        if (ep.steps[st].kind() != OpKind::kvCacheRead) {
          EXPECT_TRUE(covered.count(int64_t(st))) << "step " << st << " (" << ep.steps[st].name()
                                                  << ") has no device op";
        }
      }
      // The layers that rotate (the others, NoPE, write the cache unrotated).
      const int64_t rotating = cfg.model.numLayers - int64_t(cfg.model.nopeLayers.size());
      // Decode at a batch of bf16 weights: every product (QKV, o, gate|up,
      // down a layer, and the head) on tensor cores.
      // (int8 and int4: those whose rows are whole runs of 16 codes.)
      // A prefill chunk of 2 to 8 rows (prefill.8): every layer's QKV at
      // least (the last layer past its attention has one row).
      EXPECT_EQ(moeKernels, cfg.model.moe() ? 5 * cfg.model.numLayers : 0);
      if (role == "decode" && ep.rows >= 2 && wt == DType::bf16) {
        EXPECT_EQ(mmaProducts, layerProducts * cfg.model.numLayers + 1);
      } else if (role == "decode" && ep.rows >= 2 && (wt == DType::i8 || wt == DType::i4)) {
        EXPECT_GE(mmaProducts, 2 * cfg.model.numLayers + 1);
      } else if (role == "prefill" && ep.rows >= 2 && ep.rows <= 8 && tensorCores) {
        EXPECT_GE(mmaProducts, wt == DType::bf16 ? cfg.model.numLayers : 0);
      } else if (ep.rows > 8 && ep.rows <= groupRows && tensorCores) {
        // A prefill chunk of 16 or 32 rows: at least QKV and o (rows of the
        // hidden size) in tiles of 8 rows, and with them their folds: every
        // layer's QKV with its norm, RoPE and the cache write
        // (llm.matvec_rope_kv_write), the first layer's o (the residual add)
        // and gate|up (its norm and SwiGLU) as llm.matvec steps (the last
        // layer past its attention has one row: take_last). Qwen3's QKV
        // keeps its RoPE apart (its q/k norms come between). A mixture of
        // experts' last o product has one row, and its gate|up is the
        // experts' own: of the llm.matvec steps only the first o is left
        // where the QKV took RoPE.
        EXPECT_GE(groupedProducts, 2 * cfg.model.numLayers - (cfg.model.moe() ? 1 : 0));
        EXPECT_EQ(groupedRope, cfg.model.qkNorm ? 0 : rotating);
        EXPECT_GE(groupedFolds, cfg.model.moe() && !cfg.model.qkNorm ? 1 : 2);
      } else {
        EXPECT_EQ(mmaProducts, 0);
      }
      EXPECT_EQ(groupedProducts > 0, ep.rows > 8 && ep.rows <= groupRows && tensorCores);
      // Every shape's prefill chunk is whole tiles of 16 rows (as is its
      // copy for 32, not the one for 8): its attention is tiled; decode's
      // (rows of several sequences) and a chunk of 8 are split.
      const bool tiles = role == "prefill" && ep.rows % 16 == 0;
      EXPECT_EQ(tiled, tiles ? cfg.model.numLayers : 0);
      EXPECT_EQ(partial, tiles ? 0 : cfg.model.numLayers);
      // Sampling: each row's argmax over slices of the vocabulary, a block
      // for every multiprocessor of an H100/H200 at one row (or slices of
      // 256 tokens, the least), then one block a row that merges them.
      ASSERT_EQ(e.sampling.size(), 2u);
      const int64_t vocab = cfg.model.vocabSize, slices = e.sampling[0].grid[0];
      EXPECT_EQ(e.sampling[0].name.rfind("argmax_slices_" + std::to_string(vocab) + "_", 0), 0u);
      EXPECT_EQ(e.sampling[1].name.rfind("sample_" + std::to_string(vocab) + "_", 0), 0u);
      EXPECT_TRUE(slices >= 132 || slices == (vocab + 255) / 256)
          << slices << " slices of " << vocab;
      EXPECT_LE(slices, 1024);
      EXPECT_EQ(e.sampling[0].pointers.at(1).offset, e.argmaxOffset);
      EXPECT_EQ(e.sampling[1].pointers.at(3).offset, e.argmaxOffset);
      // RoPE is fused with the cache write once per layer that rotates.
      EXPECT_EQ(fused, rotating);
      if (!isFloatDType(cfg.compile.weightDtype)) {
        // Per layer: QKV, o, gate|up, down; then the head. No cuBLAS.
        EXPECT_EQ(gemms, 0);
        EXPECT_EQ(products, layerProducts * cfg.model.numLayers + 1);
        continue;
      }
      // With 16-bit weights every linear reads its input in the weights'
      // type, written so by the op before it (no conversion kernel); but a
      // shared expert's gate|up in cuBLAS reads the norm that the experts'
      // kernels read in f32, converted.
      if (cfg.compile.weightDtype != DType::f32 && !cfg.model.sharedExpert()) {
        EXPECT_EQ(compactInputs, gemms);
        for (const DeviceOp &op : e.ops) {
          EXPECT_NE(op.name.rfind("convert_", 0), 0u) << op.name;
        }
      }
      // Decode (at most 8 rows) needs no cuBLAS: one matrix-vector kernel
      // for the fused QKV, o, gate|up and down of each layer, and the head,
      // each with the norm before it, the SwiGLU, residual add or RoPE and
      // cache write after it folded in: no norm, add, SwiGLU or RoPE step
      // is left. bf16: nor a prefill chunk of up to 32 rows.
      const int64_t run = 16 / dtypeBytes(cfg.compile.weightDtype);
      const bool folded =
          (name == "decode" && ep.rows <= 8) || (wt == DType::bf16 && ep.rows <= groupRows);
      if (folded && cfg.model.hiddenSize % run == 0 &&
          cfg.model.intermediateSize % run == 0 && cfg.model.qDim() % run == 0) {
        EXPECT_EQ(gemms, 0);
        EXPECT_EQ(products, layerProducts * cfg.model.numLayers + 1);
        // Qwen3's q/k norms come between the QKV product and RoPE: the
        // product, then one rope_kv_write a layer with the norms folded in.
        const bool qkNorm = cfg.model.qkNorm;
        EXPECT_EQ(ropeEpilogues, qkNorm ? 0 : rotating);
        // Gemma's post-norms come between a product and the residual add:
        // each layer keeps its two norms and the two adds, each fused with
        // the norm after it. A mixture of experts keeps its two adds, each
        // with the norm after it: the experts' kernels take no prologue or
        // epilogue, so neither add folds into a product.
        const bool postNorms = cfg.model.postNorms;
        int64_t headNorms = 0, ropeWrites = 0, norms = 0, addNorms = 0;
        for (const Step &st : ep.steps) {
          headNorms += st.kind() == OpKind::headRmsNorm;
          ropeWrites += st.kind() == OpKind::ropeKVWrite;
          norms += st.kind() == OpKind::rmsNorm;
          addNorms += st.kind() == OpKind::addRmsNorm;
          for (OpKind k : {OpKind::add, OpKind::fusedFFN, OpKind::linear, OpKind::logits})
            EXPECT_NE(st.kind(), k) << "step " << st.name() << " was not folded into a matvec";
        }
        EXPECT_EQ(norms, postNorms ? 2 * cfg.model.numLayers : 0);
        EXPECT_EQ(addNorms, postNorms || cfg.model.moe() ? 2 * cfg.model.numLayers : 0);
        EXPECT_EQ(headNorms, 0);
        EXPECT_EQ(ropeWrites, qkNorm ? cfg.model.numLayers : 0);
      }
    }
    EXPECT_EQ(out.plan.memoryBill().workspaceBytes, 0) << "before addCudaCode";
    EXPECT_GE(mod.program.workspaceBytes, mod.program.cublasWorkspaceBytes);
  }
}

// Every integer of the launch table (kvplan inspect and the CUDA runtime read
// it) is a JSON integer in range: a float or a huge value is refused with the
// field named, never converted to INT64_MIN.
TEST(CudaCodegen, LaunchTableIntegersThatAreFloatsOrHugeAreRefused) {
  const Shape &s = kShapes[0];
  const nlohmann::json good =
      toJson(generateCuda(compileModel(cudaConfig(s.model, s.compile, s.rope)).plan, {"sm_90a"})
                 .program);
  auto error = [&](const std::function<void(nlohmann::json &)> &damage) -> std::string {
    nlohmann::json j = good;
    damage(j);
    try {
      cudaProgramFromJson(j);
    } catch (const InputError &e) {
      return e.what();
    }
    return "(no error)";
  };
  auto firstKernel = [](nlohmann::json &j) -> nlohmann::json & {
    for (nlohmann::json &op : j["entries"]["decode"]["ops"])
      if (op.contains("kernel")) return op;
    return j["entries"]["decode"]["sampling"][0];
  };
  const std::pair<std::function<void(nlohmann::json &)>, std::string> cases[] = {
      {[](nlohmann::json &j) { j["workspace_bytes"] = 1e30; },
       "cuda program: workspace_bytes is not an integer (1e+30)"},
      {[](nlohmann::json &j) { j["cublas_workspace"][0] = -1e308; },
       "cuda program: cublas_workspace[0] is not an integer (-1e+308)"},
      {[](nlohmann::json &j) { j["entries"]["decode"]["sampled_offset"] = int64_t(1) << 62; },
       "entry 'decode' sampled_offset is 4611686018427387904, outside [0, 1125899906842624]"},
      {[](nlohmann::json &j) { j["entries"]["decode"]["sampling"][1]["step"] = 1.5; },
       "cuda program: an op's step is not an integer (1.5)"},
      {[](nlohmann::json &j) { j["entries"]["decode"]["sampling"] = nlohmann::json::array(); },
       "cuda program: entry 'decode' has no sampling kernel"},
      {[](nlohmann::json &j) { j["entries"]["decode"].erase("argmax_offset"); },
       "cuda program: not valid"},
      {[&](nlohmann::json &j) { firstKernel(j)["static_rows"] = -4; },
       "field 'static_rows' is -4, outside [1, "},
      {[&](nlohmann::json &j) { firstKernel(j)["grid"][0] = 1e30; },
       "field 'grid'[0] is not an integer (1e+30)"},
      {[&](nlohmann::json &j) { firstKernel(j)["block"][2] = int64_t(1) << 40; },
       "field 'block'[2] is 1099511627776, outside [1, 2147483647]"},
      {[&](nlohmann::json &j) { firstKernel(j)["rows_dim"] = 1e19; },
       "field 'rows_dim' is not an integer"},
      {[&](nlohmann::json &j) { firstKernel(j)["ints"][0] = 2.5; },
       "field 'ints' is not an integer (2.5)"},
      {[&](nlohmann::json &j) { firstKernel(j)["pointers"][0][1] = -1e308; },
       "field 'pointers' offset is not an integer (-1e+308)"},
  };
  for (const auto &[damage, want] : cases) {
    const std::string msg = error(damage);
    EXPECT_NE(msg.find(want), std::string::npos) << "want: " << want << "\ngot: " << msg;
  }
  EXPECT_EQ(error([](nlohmann::json &) {}), "(no error)");
}

/// The first prefetch list of decode's launch table in its JSON form.
nlohmann::json &asking(nlohmann::json &j) {
  for (nlohmann::json &op : j["entries"]["decode"]["ops"])
    if (op.contains("prefetch")) return op["prefetch"];
  throw std::logic_error("no op of decode asks L2 for weights");
}

// --l2-prefetch: each step's rows become byte ranges of the weights section
// on the step's first kernel (the rows' bytes, a multiple of 16 at a
// multiple of 16), which the JSON form keeps; ranges outside the weights
// section, misaligned, in another buffer or too many are refused, named.
TEST(CudaCodegen, PrefetchRowsBecomeWeightRangesOnTheStepsFirstKernel) {
  const Shape &s = kShapes[4]; // gqa-bf16-batch1
  Plan plan = compileModel(cudaConfig(s.model, std::string(s.compile) + "\nl2_prefetch_mib = 1",
                                      s.rope)).plan;
  const CudaProgram prog = generateCuda(plan, {"sm_90a"}).program;
  int64_t ranges = 0;
  for (const auto &[name, ep] : plan.entryPoints) {
    SCOPED_TRACE(name);
    const std::vector<DeviceOp> &ops = prog.entries.at(name).ops;
    for (size_t i = 0; i < ops.size(); ++i) {
      const Step &st = ep.steps[size_t(ops[i].step)];
      const bool first = (i == 0 || ops[i - 1].step != ops[i].step);
      if (!first || st.prefetch.empty()) {
        EXPECT_TRUE(ops[i].prefetch.empty()) << ops[i].name;
        continue;
      }
      ASSERT_EQ(ops[i].kind, DeviceOp::kernel);
      ASSERT_EQ(ops[i].prefetch.size(), st.prefetch.size());
      for (size_t r = 0; r < st.prefetch.size(); ++r) {
        const WeightEntry &w = *plan.findWeight(st.prefetch[r].weight);
        const DeviceRange &d = ops[i].prefetch[r];
        EXPECT_EQ(d.start.buffer, DeviceBuffer::weights);
        EXPECT_EQ(d.start.offset, int64_t(w.offset) + st.prefetch[r].begin * w.rowBytes());
        EXPECT_EQ(d.bytes, (st.prefetch[r].end - st.prefetch[r].begin) * w.rowBytes());
        EXPECT_EQ(d.start.offset % 16 + d.bytes % 16, 0);
        ++ranges;
      }
    }
  }
  EXPECT_GT(ranges, 0);
  const nlohmann::json good = toJson(prog);
  EXPECT_EQ(toJson(cudaProgramFromJson(good)).dump(), good.dump());
  plan.deviceWorkspaceBytes = prog.workspaceBytes;
  const MemoryBill bill = plan.memoryBill();
  EXPECT_NO_THROW(checkCudaProgramFits(prog, bill));
  auto error = [&](const std::function<void(nlohmann::json &)> &damage) -> std::string {
    nlohmann::json j = good;
    damage(j);
    try {
      checkCudaProgramFits(cudaProgramFromJson(j), bill);
    } catch (const InputError &e) {
      return e.what();
    }
    return "(no error)";
  };
  const int64_t weights = bill.weightsBlobBytes;
  static const std::string kMisplaced =
      ", not a multiple of 16 bytes of the weights at a multiple of 16";
  const std::pair<std::function<void(nlohmann::json &)>, std::string> cases[] = {
      {[&](nlohmann::json &j) { asking(j)[0][0][1] = weights - 16; },
       "prefetch 0's last byte is at byte "},
      {[&](nlohmann::json &j) { asking(j)[0][0][1] = weights - 16; },
       " of the weights section, which holds " + std::to_string(weights) + " bytes"},
      {[](nlohmann::json &j) { asking(j)[0][0][1] = 8; }, kMisplaced},
      {[](nlohmann::json &j) { asking(j)[0][1] = 24; }, kMisplaced},
      {[](nlohmann::json &j) { asking(j)[0][0][0] = "arena"; }, kMisplaced},
      {[](nlohmann::json &j) { asking(j)[0][1] = 0; }, "'prefetch' is 0, outside [16, "},
      {[](nlohmann::json &j) { asking(j)[0] = 5; }, "'prefetch' holds 5, not [[buffer, offset], bytes]"},
      {[](nlohmann::json &j) {
         nlohmann::json &p = asking(j);
         while (p.size() < 5) p.push_back(p[0]);
       },
       "'prefetch' is not a list of at most 4 ranges"},
  };
  for (const auto &[damage, want] : cases) {
    const std::string msg = error(damage);
    EXPECT_NE(msg.find(want), std::string::npos) << "want: " << want << "\ngot: " << msg;
  }
}

// A launch table whose addresses fall outside the buffers its plan sizes
// (an artifact whose sections do not belong together) is refused before
// anything is allocated, naming the op and the field.
TEST(CudaCodegen, ALaunchTableOutsideItsPlanIsRefused) {
  const Shape &s = kShapes[0];
  Plan plan = compileModel(cudaConfig(s.model, s.compile, s.rope)).plan;
  const CudaProgram good = generateCuda(plan, {"sm_90a"}).program;
  plan.deviceWorkspaceBytes = good.workspaceBytes;
  const MemoryBill bill = plan.memoryBill();
  auto error = [&](const std::function<void(CudaProgram &)> &damage) -> std::string {
    CudaProgram p = good;
    damage(p);
    try {
      checkCudaProgramFits(p, bill);
    } catch (const InputError &e) {
      return e.what();
    }
    return "(no error)";
  };
  EXPECT_EQ(error([](CudaProgram &) {}), "(no error)");
  // The first kernel of decode that reads the weights.
  auto weightsKernel = [](CudaProgram &p) -> std::pair<int64_t, DeviceOp *> {
    std::vector<DeviceOp> &ops = p.entries.at("decode").ops;
    for (size_t i = 0; i < ops.size(); ++i)
      if (ops[i].kind == DeviceOp::kernel && ops[i].pointers.size() > 1 &&
          ops[i].pointers[1].buffer == DeviceBuffer::weights)
        return {int64_t(i), &ops[i]};
    throw std::logic_error("no kernel reads the weights");
  };
  CudaProgram probe = good;
  const auto [index, op] = weightsKernel(probe);
  const std::string at = "entry 'decode' op " + std::to_string(index) + " (kernel '" + op->name +
                         "', step " + std::to_string(op->step) + ") pointer 1 is at byte ";
  const std::pair<std::function<void(CudaProgram &)>, std::string> cases[] = {
      {[&](CudaProgram &p) { weightsKernel(p).second->pointers[1].offset = bill.weightsBlobBytes; },
       at + std::to_string(bill.weightsBlobBytes) + " of the weights section, which holds " +
           std::to_string(bill.weightsBlobBytes) + " bytes; the artifact's launch table does "
           "not fit its plan (recompile it with this kvplan)"},
      {[&](CudaProgram &p) { weightsKernel(p).second->pointers[1].offset = -16; },
       at + "-16 of the weights section"},
      {[&](CudaProgram &p) {
         DeviceOp *k = weightsKernel(p).second;
         k->pointers[1] = {DeviceBuffer::cache, bill.kvCacheBytes + 4};
       },
       at + std::to_string(bill.kvCacheBytes + 4) + " of the KV cache"},
      {[&](CudaProgram &p) {
         p.entries.at("decode").sampling[1].pointers[0].offset += bill.arenaAllocBytes;
       },
       "entry 'decode' op " + std::to_string(good.entries.at("decode").ops.size() + 1) +
           " (kernel '" + good.entries.at("decode").sampling[1].name + "'"},
      {[&](CudaProgram &p) { p.entries.at("prefill").argmaxOffset = bill.workspaceBytes; },
       "entry 'prefill' 'argmax_offset' is at byte " + std::to_string(bill.workspaceBytes) +
           " of the workspace"},
      {[&](CudaProgram &p) { p.workspaceBytes = bill.workspaceBytes + 1; },
       "its workspace of " + std::to_string(bill.workspaceBytes + 1) +
           " bytes is more than the plan's"},
  };
  for (const auto &[damage, want] : cases) {
    const std::string msg = error(damage);
    EXPECT_NE(msg.find(want), std::string::npos) << "want: " << want << "\ngot: " << msg;
  }
}

// Every shape's kernels compile for sm_90a. A module is the kernel library
// and one extern "C" wrapper a line per specialisation, named by it: the
// shapes' wrappers are compiled together in one nvcc run, each once (12
// shapes, 276 wrappers, 237 distinct; 110 s -> 79 s alone on the 2-core
// machine, where a run a shape read the library and started nvcc 12 times),
// and a name must always mean the same wrapper and the library be the same in
// every module.
TEST(CudaCodegen, GeneratedSourceCompilesForEveryShape) {
  if (!haveNvcc()) GTEST_SKIP() << "no nvcc here (set CUDA_HOME): the CUDA source is not compiled";
  const std::string wrapper = "extern \"C\" __global__ ";
  std::string library;
  std::map<std::string, std::string> wrappers; // name -> line
  size_t lines = 0;
  for (const Shape &s : allShapes()) {
    SCOPED_TRACE(s.what);
    CompileOutput out = compileModel(cudaConfig(s.model, s.compile, s.rope));
    const std::string source = generateCuda(out.plan, {"sm_90a"}).source;
    const size_t body = source.find("\n\n"), first = source.find("\n" + wrapper);
    ASSERT_NE(first, std::string::npos);
    const std::string lib = source.substr(body, first + 1 - body);
    if (library.empty()) library = lib;
    EXPECT_EQ(lib, library) << "the kernel library differs between modules";
    std::istringstream rest(source.substr(first + 1));
    for (std::string line; std::getline(rest, line);) {
      if (line.empty()) continue;
      ASSERT_EQ(line.compare(0, wrapper.size(), wrapper), 0) << line;
      const size_t open = line.find("(KvArgs a)"), name = line.rfind(' ', open) + 1;
      ASSERT_NE(open, std::string::npos) << line;
      auto [it, added] = wrappers.emplace(line.substr(name, open - name), line);
      EXPECT_EQ(it->second, line) << "two wrappers named " << it->first;
      ++lines;
    }
  }
  std::string source = library;
  for (const auto &[name, line] : wrappers) source += line + "\n";
  EXPECT_GT(lines, wrappers.size()); // the shapes share wrappers: the names are checked
  std::string cubin;
  ASSERT_NO_THROW(cubin = compileCubin(findNvcc(), source, "sm_90a"));
  EXPECT_EQ(cubinSmVersion(cubin), 90);
}

TEST(CudaCodegen, ArtifactHoldsMachineCodeForEachArchitecture) {
  if (!haveNvcc()) GTEST_SKIP() << "no nvcc here (set CUDA_HOME)";
  CompileOutput out = compileModel(cudaConfig(kShapes[0].model, kShapes[0].compile));
  addCudaCode(out, parseCudaArchs("sm_80,sm_90a"));
  const std::string path =
      (std::filesystem::temp_directory_path() / "kvplan-cuda-test.kvp").string();
  writeArtifact(path, out);
  Artifact a = Artifact::open(path);
  EXPECT_EQ(a.plan().settings.target, Target::cuda);
  EXPECT_EQ(a.plan().cudaArchs, (std::vector<std::string>{"sm_80", "sm_90a"}));
  EXPECT_GT(a.plan().memoryBill().workspaceBytes, 0);
  EXPECT_EQ(a.plan().memoryBill().workspaceBytes, out.cuda->program.workspaceBytes);
  EXPECT_EQ(cubinSmVersion(std::string(a.section("cuda.cubin.sm_80"))), 80);
  EXPECT_EQ(cubinSmVersion(std::string(a.section("cuda.cubin.sm_90a"))), 90);
  std::string_view src = a.section(kCudaSourceSection);
  EXPECT_NE(src.find("Generated by kvplan"), std::string_view::npos);
  EXPECT_NE(src.find("kvplan::attnPartial<"), std::string_view::npos);
  std::string_view prog = a.section(kCudaProgramSection);
  CudaProgram p = cudaProgramFromJson(nlohmann::json::parse(prog.begin(), prog.end()));
  // prefill (64 rows), decode (4) and their copies for fewer rows: decode.1,
  // prefill.8, prefill.32.
  EXPECT_EQ(p.entries.size(), 5u);
  for (const char *copy : {"decode.1", "prefill.8", "prefill.32"})
    EXPECT_EQ(p.entries.count(copy), 1u) << copy;
  std::remove(path.c_str());
}

/// What reading `p`'s launch table says once `damage` changes its first
/// RoPE table: the InputError's message, or "accepted".
std::string ropeTableRefusal(const CudaProgram &p,
                             const std::function<void(nlohmann::json &)> &damage) {
  nlohmann::json j = toJson(p);
  damage(j["rope_tables"][0]);
  try {
    cudaProgramFromJson(j);
  } catch (const InputError &e) {
    return e.what();
  }
  return "accepted";
}

// A GGUF's per-pair frequency factors reach the device's RoPE table: the
// launch table's one table (every RoPE op shares it) holds
// theta^(-2i/head_dim) / freq_factors[i], as the CPU's does, for every
// position up to max_seq_len, in the workspace, and the kernels that rotate
// read it; it survives the JSON exactly.
TEST(CudaCodegen, RopeTableDividesByTheFrequencyFactors) {
  const std::vector<double> factors = {1, 1, 1, 1.25, 2, 8, 8, 8};
  ModelConfig cfg = cudaConfig(
      "architecture = \"llama\"\nhidden_size = 64\nintermediate_size = 128\nnum_layers = 1\n"
      "num_heads = 4\nnum_kv_heads = 2\nvocab_size = 100",
      "weight_dtype = \"bf16\"\nmax_batch = 1\nmax_seq_len = 64\nprefill_chunk = 16",
      "[model.rope]\ntheta = 500000.0\nfreq_factors = [1, 1, 1, 1.25, 2, 8, 8, 8]\n");
  const CudaModule mod = generateCuda(compileModel(cfg).plan, {"sm_90a"});
  ASSERT_EQ(mod.program.ropeTables.size(), 1u);
  const CudaRopeTable &t = mod.program.ropeTables[0];
  ASSERT_EQ(t.freqs.size(), factors.size());
  for (size_t i = 0; i < factors.size(); ++i)
    EXPECT_EQ(t.freqs[i], std::pow(500000.0, -2.0 * double(i) / 16) / factors[i]) << i;
  EXPECT_EQ(t.positions, 64);
  EXPECT_EQ(t.bytes(), 64 * 8 * 8);
  EXPECT_LE(t.offset + t.bytes(), mod.program.workspaceBytes);
  int readers = 0;
  for (const auto &[name, e] : mod.program.entries)
    for (const DeviceOp &op : e.ops)
      for (const DeviceRef &r : op.pointers)
        readers += r.buffer == DeviceBuffer::work && r.offset == t.offset;
  // The one layer's RoPE in each entry point: decode's, prefill's and its
  // copy for 8 tokens' (prefill.8).
  ASSERT_EQ(mod.program.entries.size(), 3u);
  EXPECT_EQ(readers, 3);
  const CudaProgram back = cudaProgramFromJson(nlohmann::json::parse(toJson(mod.program).dump()));
  ASSERT_EQ(back.ropeTables.size(), 1u);
  EXPECT_EQ(back.ropeTables[0].freqs, t.freqs);
  EXPECT_EQ(back.ropeTables[0].offset, t.offset);
  EXPECT_EQ(back.ropeTables[0].positions, t.positions);
  EXPECT_EQ(mod.source.find("__constant__ double"), std::string::npos);
  // A damaged table is refused, named.
  auto refusal = [&](const std::function<void(nlohmann::json &)> &damage) {
    return ropeTableRefusal(mod.program, damage);
  };
  const int64_t ws = mod.program.workspaceBytes;
  EXPECT_EQ(refusal([&](nlohmann::json &t) { t["offset"] = ws - 8; }),
            "cuda program: rope_tables[0] (4096 bytes at " + std::to_string(ws - 8) +
                ") lies outside the workspace of " + std::to_string(ws) +
                " bytes or is misaligned");
  EXPECT_EQ(refusal([](nlohmann::json &t) { t["freqs"][3] = "x"; }),
            "cuda program: rope_tables[0] 'freqs' holds \"x\", not a finite number");
  EXPECT_EQ(refusal([](nlohmann::json &t) { t["freqs"] = nlohmann::json::array(); }),
            "cuda program: rope_tables[0] 'freqs' is not a list of 1 to 4096 numbers");
  EXPECT_EQ(refusal([](nlohmann::json &t) { t["positions"] = 0; }),
            "cuda program: rope_tables[0] 'positions' is 0, outside [1, 2147483647]");
  // 0 as read from a file (unsigned to nlohmann::json) too.
  EXPECT_EQ(refusal([](nlohmann::json &t) { t["positions"] = nlohmann::json::parse("0"); }),
            "cuda program: rope_tables[0] 'positions' is 0, outside [1, 2147483647]");
}

// Partial RoPE with LongRoPE (the Phi-4-mini-shaped kShapes[4]: 24 of 32
// dimensions turn, a context of 256 past the pretraining 128, an attention
// factor of 1.2): the table's pairs past 12 do not turn (frequency 0), the
// rotated ones carry the attention factor (amplitudes), which the launch
// table's JSON keeps; a table whose amplitudes are not a step's does not
// serve it, and damaged amplitudes are refused, named.
TEST(CudaCodegen, PartialRopeTableScalesOnlyTheRotatedPairs) {
  const Shape &s = kShapes[4];
  const Plan plan = compileModel(cudaConfig(s.model, s.compile, s.rope)).plan;
  const CudaModule mod = generateCuda(plan, {"sm_90a"});
  ASSERT_EQ(mod.program.ropeTables.size(), 1u);
  const CudaRopeTable &t = mod.program.ropeTables[0];
  ASSERT_EQ(t.freqs.size(), 16u);
  ASSERT_EQ(t.amplitudes.size(), 16u);
  const double longFactors[] = {1.0, 1.0, 1.2, 1.5, 2.0, 3.0, 4.0, 8.0, 12.0, 20.0, 28.0, 32.0};
  for (size_t i = 0; i < 16; ++i) {
    EXPECT_EQ(t.freqs[i], i < 12 ? std::pow(10000.0, -2.0 * double(i) / 24) / longFactors[i] : 0)
        << i;
    EXPECT_EQ(t.amplitudes[i], i < 12 ? 1.2 : 1.0) << i;
  }
  const CudaProgram back = cudaProgramFromJson(nlohmann::json::parse(toJson(mod.program).dump()));
  ASSERT_EQ(back.ropeTables.size(), 1u);
  EXPECT_EQ(back.ropeTables[0].amplitudes, t.amplitudes);
  // Every rotating step's parameters, and no others, find the table.
  int rotating = 0;
  for (const auto &[name, ep] : plan.entryPoints)
    for (const Step &st : ep.steps)
      if (const RopeParams *r = stepRope(st)) {
        ++rotating;
        EXPECT_EQ(r->rotaryDim, std::optional<int64_t>(24));
        EXPECT_EQ(r->attentionFactor, std::optional<double>(1.2));
        EXPECT_TRUE(ropeTableServes(t, *r));
        RopeParams whole = *r;
        whole.attentionFactor.reset();
        EXPECT_FALSE(ropeTableServes(t, whole));
      }
  EXPECT_GT(rotating, 0);
  auto refusal = [&](const std::function<void(nlohmann::json &)> &damage) {
    return ropeTableRefusal(mod.program, damage);
  };
  EXPECT_EQ(refusal([](nlohmann::json &a) { a["amplitudes"].erase(0); }),
            "cuda program: rope_tables[0] 'amplitudes' is not a list as long as 'freqs'");
  EXPECT_EQ(refusal([](nlohmann::json &a) { a["amplitudes"][2] = -1.0; }),
            "cuda program: rope_tables[0] 'amplitudes' holds -1.0, not a positive number");
}

TEST(CudaCodegen, RejectsWhatItCannotRun) {
  EXPECT_THROW(parseCudaArchs("sm_75"), InputError);
  EXPECT_THROW(parseCudaArchs("compute_90"), InputError);
  EXPECT_THROW(parseCudaArchs(""), InputError);
  EXPECT_EQ(parseCudaArchs("sm_90a,sm_80,sm_90a"), (std::vector<std::string>{"sm_90a", "sm_80"}));
  // A cpu plan is not the codegen's.
  ModelConfig cfg = cudaConfig(kShapes[0].model, kShapes[0].compile);
  cfg.compile.target = Target::cpu;
  validate(cfg);
  EXPECT_THROW(generateCuda(compileModel(cfg).plan, {"sm_90a"}), InputError);
  // int8 experts whose rows (the down stack's, 40 codes) are not whole runs
  // of 16, named.
  const std::string moe = std::string(kvplan::testing::kQuantShapes[0].model) +
                          "\nnum_experts = 4\nnum_experts_per_tok = 2\nmoe_intermediate_size = 40";
  const Plan experts = compileModel(cudaConfig(moe, kvplan::testing::kQuantShapes[0].compile)).plan;
  try {
    generateCuda(experts, {"sm_90a"});
    FAIL() << "int8 experts of 40 were lowered";
  } catch (const InputError &e) {
    EXPECT_NE(std::string(e.what()).find("weight 'layers.0.feed_forward.experts.w2' is int8 in "
                                         "rows of 40: the experts' kernels read int8 and int4 "
                                         "rows of whole runs of 16 codes"),
              std::string::npos)
        << e.what();
  }
  // Without a toolkit, a clear message.
  const char *old = std::getenv("CUDA_HOME");
  std::string saved = old ? old : "";
  setenv("CUDA_HOME", "/nonexistent-cuda", 1);
  try {
    findNvcc();
    FAIL() << "found nvcc in a folder that does not exist";
  } catch (const InputError &e) {
    EXPECT_NE(std::string(e.what()).find("CUDA_HOME"), std::string::npos);
  }
  if (old) setenv("CUDA_HOME", saved.c_str(), 1);
  else unsetenv("CUDA_HOME");
}

} // namespace
