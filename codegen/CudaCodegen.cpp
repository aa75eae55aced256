// CUDA codegen: the workspace the launch table uses, each entry point's ops
// lowered one to one (codegen/CudaLowering.cpp), and the source that
// instantiates kvplan's kernel templates for the model.
#include "codegen/CudaCodegen.h"

#include "codegen/CudaLowering.h"
#include "support/Align.h"

#include <kvplan/Version.h>

#include <algorithm>
#include <sstream>

namespace kvplan {

using namespace cudagen;

namespace {

const char kKernelLibrary[] =
#include <kvplan/CudaKernelsSource.inc>
    ;

constexpr int64_t kAlign = 256;
constexpr int64_t kCublasWorkspace = 32 << 20; // what cuBLAS asks for on Hopper

/// What the plan asks of the kernels, checked before anything is lowered.
void checkSupported(const Plan &plan) {
  if (plan.settings.target != Target::cuda)
    unsupported("it was compiled for target '" + std::string(targetName(plan.settings.target)) + "'");
  const KVCacheLayout &kv = plan.kvCache;
  const int64_t heads = plan.model.numHeads, group = heads / std::max<int64_t>(kv.kvHeads, 1);
  // The query heads, their per-warp outputs and up to 128 key slots' maxima and sums.
  const int64_t smem = (group * kv.headDim * (1 + kAttnWarps) + 2 * 128 * group) * 4;
  if (smem > 48 * 1024 || kv.headDim > 1024 || kv.headDim % 2)
    unsupported(std::to_string(group) + " query heads per KV head of head_dim " +
                std::to_string(kv.headDim) + " exceed the attention kernel's shared memory");
}

/// The attention splits of an entry point: enough blocks (rows x KV heads x
/// splits) to fill a large GPU, no split shorter than kAttnMinKeys keys at
/// full context. Each call cuts its rows' keys into that many equal runs,
/// so the splits have work at any context.
AttentionSplit attentionSplit(const Plan &plan, const EntryPoint &ep) {
  const int64_t blocks = std::max<int64_t>(1, ep.rows * plan.kvCache.kvHeads);
  const int64_t most = std::max<int64_t>(1, plan.settings.maxSeqLen / kAttnMinKeys);
  AttentionSplit split;
  split.splits = std::clamp<int64_t>(ceilDiv(kFillBlocks, blocks), 1, most);
  split.tiling = attnTiling(ep);
  return split;
}

/// The distinct RoPE tables the plan's steps read, in order of first use.
std::vector<CudaRopeTable> ropeTableSet(const Plan &plan) {
  std::vector<CudaRopeTable> sets;
  for (const auto &[name, ep] : plan.entryPoints)
    for (const Step &s : ep.steps)
      if (const RopeParams *r = stepRope(s))
        if (std::none_of(sets.begin(), sets.end(),
                         [&](const CudaRopeTable &t) { return ropeTableServes(t, *r); }))
          sets.push_back(ropeTableFor(*r));
  return sets;
}

/// Lays out the workspace: attention partials, maxima and arrival counts
/// (shared by the entry points whose attention is not tiled), the RoPE
/// cos/sin tables (max_seq_len rows each, filled at load), each entry
/// point's inputs (with the sampling parameters), sampled ids and argmax
/// partials, the experts' scratch (at `moeScratch`; where the plan has
/// experts), and cuBLAS's workspace, last.
std::map<std::string, AttentionSplit> layWorkspace(const Plan &plan, CudaProgram &prog,
                                                   int64_t &moeScratch) {
  std::map<std::string, AttentionSplit> splits;
  int64_t partBytes = 0, mlBytes = 0, arrivalBytes = 0;
  const int64_t heads = plan.model.numHeads, hd = plan.kvCache.headDim;
  for (const auto &[name, ep] : plan.entryPoints) {
    AttentionSplit s = attentionSplit(plan, ep);
    splits[name] = s;
    if (s.tiling.heads) continue; // attnTiled keeps no partials
    partBytes = std::max(partBytes, ep.rows * heads * s.splits * hd * 4);
    mlBytes = std::max(mlBytes, ep.rows * heads * s.splits * 2 * 4);
    arrivalBytes = std::max(arrivalBytes, ep.rows * plan.kvCache.kvHeads * 4);
  }
  int64_t top = 0;
  auto take = [&](int64_t bytes) {
    const int64_t off = alignUp(top, kAlign);
    top = off + std::max<int64_t>(bytes, 1);
    return off;
  };
  const int64_t partOffset = take(partBytes), mlOffset = take(mlBytes);
  const int64_t arrivalsOffset = take(arrivalBytes); // zeroed at load; the kernel keeps it so
  for (CudaRopeTable &t : ropeTableSet(plan)) {
    t.positions = plan.settings.maxSeqLen;
    t.offset = take(t.bytes());
    prog.ropeTables.push_back(std::move(t));
  }
  for (auto &[name, s] : splits) {
    s.partOffset = partOffset;
    s.mlOffset = mlOffset;
    s.arrivalsOffset = arrivalsOffset;
    CudaEntry &e = prog.entries[name];
    const EntryPoint &ep = plan.entryPoints.at(name);
    const CudaInputsLayout in = cudaInputsLayout(ep);
    e.inputsOffset = take(in.bytes);
    e.samplingParamsOffset = e.inputsOffset + in.params;
    const Operand &logits = ep.results.at(0);
    e.sampledOffset = take(logits.rows() * 4);
    e.argmaxOffset = take(logits.rows() * sampleRowBytes(logits.cols()));
  }
  if (const int64_t bytes = moeScratchBytes(plan)) moeScratch = take(bytes);
  prog.cublasWorkspaceOffset = take(kCublasWorkspace);
  prog.cublasWorkspaceBytes = kCublasWorkspace;
  prog.workspaceBytes = alignUp(top, kAlign);
  return splits;
}

/// The source: a header naming what it was generated for, the kernel
/// templates and one wrapper per specialisation.
std::string moduleSource(const Plan &plan, const Specialisations &specs,
                         const std::vector<std::string> &archs) {
  std::ostringstream src;
  const ModelSpec &m = plan.model;
  const KVCacheLayout &kv = plan.kvCache;
  src << "// Generated by kvplan " << KVPLAN_VERSION << " (" << KVPLAN_GIT_HASH << ") for "
      << m.name << ".\n// hidden " << m.hiddenSize << ", intermediate " << m.intermediateSize
      << ", layers " << m.numLayers << ", heads " << m.numHeads << " (kv " << m.numKvHeads
      << "), head_dim " << m.headDim << ", vocab " << m.vocabSize << "; weights "
      << dtypeName(plan.settings.weightDtype) << ", KV cache " << dtypeName(kv.dtype) << " ("
      << kv.pages << " pages of " << kv.pageSize << "), max batch " << plan.settings.maxBatch
      << ", prefill chunk " << plan.settings.prefillChunk << ", context "
      << plan.settings.maxSeqLen << ".\n";
  if (archs.empty()) {
    src << "// Not compiled to machine code (kvplan compile --arch none).";
  } else {
    src << "// Compiled with: nvcc -cubin -O3 -std=c++17 -arch=ARCH, for each ARCH of";
    for (const std::string &a : archs) src << " " << a;
  }
  src << "\n\n" << kKernelLibrary << "\n";
  src << "\n";
  for (const auto &[name, def] : specs.wrappers) src << def;
  return src.str();
}

} // namespace

CudaModule generateCuda(const Plan &plan, const std::vector<std::string> &archs) {
  checkSupported(plan);
  CudaModule mod;
  mod.program.archs = archs;
  Specialisations specs;
  const std::map<std::string, AttentionSplit> splits =
      layWorkspace(plan, mod.program, specs.moeScratch);
  specs.ropeTables = mod.program.ropeTables;
  for (const auto &[name, ep] : plan.entryPoints)
    lowerEntry(plan, ep, splits.at(name), specs, mod.program.entries[name]);
  // Quantized weights are generated kernels: without a cuBLAS product the
  // workspace ends before cuBLAS's (the executor then opens no cuBLAS).
  bool gemm = false;
  for (const auto &[name, e] : mod.program.entries)
    for (const DeviceOp &op : e.ops) gemm = gemm || op.kind == DeviceOp::gemm;
  if (!gemm) {
    mod.program.workspaceBytes = mod.program.cublasWorkspaceOffset;
    mod.program.cublasWorkspaceBytes = 0;
  }
  mod.source = moduleSource(plan, specs, archs);
  return mod;
}

} // namespace kvplan
