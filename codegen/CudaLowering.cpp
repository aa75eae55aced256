// Lowers each op of a planned entry point to kernel launches and cuBLAS
// products, one op at a time: the op's operands' arena offsets and element
// types say everything a launch needs.
#include "codegen/CudaLowering.h"

#include "support/Align.h"

#include <algorithm>
#include <stdexcept>
#include <tuple>

namespace kvplan::cudagen {

void unsupported(const std::string &what) {
  throw InputError("the plan cannot be compiled for the cuda target: " + what);
}

const char *cudaType(DType t) {
  switch (t) {
  case DType::f32: return "float";
  case DType::bf16: return "__nv_bfloat16";
  case DType::f16: return "__half";
  default: break;
  }
  unsupported(std::string("no CUDA element type for ") + dtypeName(t));
}

std::string Specialisations::wrapper(const std::string &name, int64_t block,
                                      const std::string &body, bool waitsItself,
                                      int64_t minBlocks) {
  if (!wrappers.count(name))
    wrappers[name] = "extern \"C\" __global__ void __launch_bounds__(" + std::to_string(block) +
                     (minBlocks > 0 ? ", " + std::to_string(minBlocks) : std::string()) + ") " +
                     name + "(KvArgs a) { kvplan::l2Prefetch(a); " +
                     (waitsItself ? "" : "kvplan::pdlLaunchDependents(); kvplan::pdlWait(); ") +
                     body + "; }\n";
  return name;
}

int64_t argmaxSlice(int64_t vocab) {
  return std::max(kArgmaxBlock, alignUp(ceilDiv(vocab, kFillBlocks), kArgmaxBlock));
}

int64_t sampleRowBytes(int64_t vocab) {
  return ceilDiv(vocab, argmaxSlice(vocab)) * (8 + 16 + 8 * kSampleCandidates);
}

MoeScratchLayout moeScratchLayout(int64_t rows, int64_t experts, int64_t perToken, int64_t hidden,
                                  int64_t ff, bool gated) {
  MoeScratchLayout l;
  const int64_t slots = rows * perToken;
  auto take = [&](int64_t bytes) {
    const int64_t at = l.bytes;
    l.bytes = alignUp(at + std::max<int64_t>(bytes, 1), 256);
    return at;
  };
  l.probs = take(rows * experts * 4);
  l.weights = take(slots * 4);
  l.meta = take((2 * experts + 2) * 4); // the active count, the active experts, the firsts
  l.chosen = take(slots * 4);
  l.slotOf = take(slots * 4);
  l.rowOf = take(slots * 4);
  l.hidden = take(slots * ff * 4);
  l.out = take(slots * hidden * 4);
  if (gated) l.gates = take(rows * 4);
  return l;
}

int64_t moeScratchBytes(const Plan &plan) {
  int64_t bytes = 0;
  for (const auto &[name, ep] : plan.entryPoints)
    for (const Step &s : ep.steps)
      if (const auto *m = std::get_if<MoEFFNOp>(&s.op)) {
        const WeightEntry *gate = plan.findWeight(m->gate);
        if (!gate || gate->shape.size() != 3) unsupported("moe_ffn's gate is not a stack");
        bytes = std::max(bytes, moeScratchLayout(m->input.rows(), gate->shape[0],
                                                 m->expertsPerToken, m->input.cols(),
                                                 gate->shape[1], m->sharedGate.has_value())
                                    .bytes);
      }
  return bytes;
}

DeviceRef Specialisations::ropeTable(const RopeParams &params) const {
  for (const CudaRopeTable &t : ropeTables)
    if (ropeTableServes(t, params)) return {DeviceBuffer::work, t.offset};
  // layWorkspace (CudaCodegen.cpp) made one for every RoPE op's frequencies.
  throw std::logic_error("the workspace has no RoPE table for these frequencies");
}

namespace {

std::string dims(std::initializer_list<int64_t> v) {
  std::string s;
  for (int64_t x : v) s += "_" + std::to_string(x);
  return s;
}
std::string num(int64_t v) { return std::to_string(v); }
int64_t gemvWarps(int64_t features);

class EntryLowering {
public:
  EntryLowering(const Plan &plan, const EntryPoint &ep, const AttentionSplit &split,
                Specialisations &specs, CudaEntry &out)
      : plan(plan), ep(ep), split(split), specs(specs), out(out), kv(plan.kvCache),
        kvType(cudaType(kv.dtype)), positions(arena(*ep.arg("positions"))),
        mainTable(arena(*ep.arg("page_table"))),
        tableStride(ep.arg("page_table")->rows() == 1 ? 0 : ep.arg("page_table")->cols()) {}

  void lower() {
    for (size_t i = 0; i < ep.steps.size(); ++i) {
      step = int64_t(i);
      const size_t first = out.ops.size();
      std::visit([&](const auto &op) { (*this)(op); }, ep.steps[i].op);
      prefetch(ep.steps[i], first);
    }
    sample();
  }

  /// The step's prefetch (--prefetch-weights) on its first kernel, from
  /// out.ops[first] on: each weight's rows as bytes of the weights section,
  /// a multiple of 16 at a multiple of 16.
  void prefetch(const Step &s, size_t first) {
    if (s.prefetch.empty()) return;
    auto k = std::find_if(out.ops.begin() + std::ptrdiff_t(first), out.ops.end(),
                          [](const DeviceOp &op) { return op.kind == DeviceOp::kernel; });
    if (k == out.ops.end())
      unsupported("step " + num(step) + " (" + s.name() + ") asks L2 for weights, but it "
                  "runs no kernel of its own to ask");
    if (s.prefetch.size() > size_t(kPrefetchRanges))
      unsupported("step " + num(step) + " asks L2 for " + num(int64_t(s.prefetch.size())) +
                  " weights; a kernel takes " + num(kPrefetchRanges));
    for (const WeightRows &r : s.prefetch) {
      const WeightEntry &w = weight(r.weight);
      const int64_t lo = alignUp(r.begin * w.rowBytes(), 16),
                    hi = r.end * w.rowBytes() / 16 * 16;
      if (hi > lo) k->prefetch.push_back({weightRef(r.weight, lo), hi - lo});
    }
  }

  void operator()(const EmbeddingOp &op) {
    const DType w = weightType(op.weight), o = op.result.dtype;
    const int64_t c = op.result.cols();
    // Scaled rows (Gemma's): the scale is the kernel's d[0], its name ends in _s.
    const bool scaled = op.scale.has_value();
    const std::string tail = scaled ? ", 256, true>(a)" : ", 256>(a)", suffix = scaled ? "_s" : "";
    std::vector<double> reals;
    if (scaled) reals.push_back(*op.scale);
    if (!isFloatDType(w)) {
      const WeightEntry &e = weight(op.weight);
      const std::string name = specs.wrapper(
          "embedding_" + std::string(dtypeName(w)) + "_" + dtypeName(o) + dims({c}) + suffix, 256,
          "kvplan::embeddingQuant<" + num(quantBits(e)) + ", " + cudaType(o) + ", " + num(c) +
              tail);
      kernel(name, {op.result.rows(), 1, 1}, 256, 0, op.result,
             {arena(op.tokens), weightRef(e.name), weightRef(e.name, int64_t(e.scalesOffset)),
              minsRef(e), arena(op.result)},
             {}, reals);
      return;
    }
    const std::string name = specs.wrapper(
        "embedding_" + std::string(dtypeName(w)) + "_" + dtypeName(o) + dims({c}) + suffix, 256,
        "kvplan::embedding<" + std::string(cudaType(w)) + ", " + cudaType(o) + ", " + num(c) +
            tail);
    kernel(name, {op.result.rows(), 1, 1}, 256, 0, op.result,
           {arena(op.tokens), weightRef(op.weight), arena(op.result)}, {}, reals);
  }
  void operator()(const RMSNormOp &op) {
    f32Input(op.input, "rms_norm");
    norm("rms_norm", "rmsNorm", op.weight, op.result, op.eps,
         {arena(op.input), weightRef(op.weight), arena(op.result)});
  }
  /// One block per (row, head).
  void operator()(const HeadRMSNormOp &op) {
    f32Input(op.input, "head_rms_norm");
    const DType wt = weightType(op.weight), ot = op.result.dtype;
    const int64_t c = op.result.cols(), hd = op.headDim;
    const int64_t block = std::clamp<int64_t>(alignUp(ceilDiv(hd, 8), 32), 32, 1024);
    const std::string name = specs.wrapper(
        "head_rms_norm_" + std::string(dtypeName(wt)) + "_" + dtypeName(ot) + dims({c, hd}),
        block,
        "kvplan::headRmsNorm<" + std::string(cudaType(wt)) + ", " + cudaType(ot) + ", " + num(c) +
            ", " + num(hd) + ", " + num(block) + ">(a)");
    kernel(name, {op.result.rows(), c / hd, 1}, block, 0, op.result,
           {arena(op.input), weightRef(op.weight), arena(op.result)}, {}, {op.eps});
  }
  void operator()(const AddRMSNormOp &op) {
    f32Input(op.lhs, "add_rms_norm");
    if (op.residual.dtype != DType::f32) unsupported("add_rms_norm's residual must be f32");
    norm("add_rms_norm", "addRmsNorm", op.weight, op.normed, op.eps,
         {arena(op.lhs), arena(op.rhs), weightRef(op.weight), arena(op.normed),
          arena(op.residual)});
  }
  void operator()(const LinearOp &op) { linear(op.weight, op.bias, op.input, op.results); }
  void operator()(const LogitsOp &op) {
    linear(op.weight, std::nullopt, op.input, {op.result});
    if (op.softcap) softcapRows(op.result, *op.softcap);
  }
  /// Gemma 2's soft-capped logits, in place after the head's product.
  void softcapRows(const Operand &logits, double cap) {
    const int64_t oc = logits.cols();
    const std::string name =
        specs.wrapper("softcap" + dims({oc}), kElementwiseBlock,
                      "kvplan::softcapRows<" + num(oc) + ">(a)");
    kernel(name, {ceilDiv(oc, kElementwiseBlock), logits.rows(), 1}, kElementwiseBlock, 1, logits,
           {arena(logits)}, {}, {cap});
  }
  void operator()(const MatVecOp &op);
  void operator()(const MatVecRopeKVWriteOp &op);
  void operator()(const RopeOp &op) {
    entryPositions(op.positions);
    const int64_t c = op.result.cols(), hd = op.rope.headDim;
    const std::string name = specs.wrapper("rope" + dims({c, hd}), 128,
                                           "kvplan::rope<" + num(c) + ", " + num(hd) + ">(a)");
    kernel(name, {op.result.rows(), 1, 1}, 128, 0, op.result,
           {arena(op.input), positions, arena(op.result), specs.ropeTable(op.rope)});
  }
  /// One NCCL all-reduce of the rows, in the executor's stream.
  void operator()(const AllReduceOp &op) {
    f32Input(op.input, "all_reduce");
    if (op.result.dtype != DType::f32 || op.result.cols() != op.input.cols() ||
        op.result.rows() != op.input.rows())
      unsupported("step " + num(step) + ": all_reduce's result differs from its input");
    DeviceOp r;
    r.kind = DeviceOp::allReduce;
    r.step = step;
    r.input = arena(op.input);
    r.output = arena(op.result);
    r.k = op.input.cols();
    r.staticRows = op.result.rows();
    r.rowsFollowActive = follows(op.result);
    out.ops.push_back(std::move(r));
  }
  /// Packed rows (a fused QKV product's one result) are read in place: k
  /// and v from their columns on, every row QCOLS + 2 KVH HD floats on.
  void operator()(const RopeKVWriteOp &op) {
    const PoolRefs pool = poolOf(op.cache.window);
    entryPositions(op.positions);
    const int64_t qcols = op.rotatedQuery.cols(), hd = op.rope.headDim;
    const int64_t kvCols = kv.kvHeads * kv.headDim;
    if (hd != kv.headDim || (!op.packed() && op.key->cols() != kvCols))
      unsupported("RoPE'd keys do not match the KV cache");
    f32Input(op.query, "rope_kv_write");
    if (!op.packed()) {
      f32Input(*op.key, "rope_kv_write");
      f32Input(*op.value, "rope_kv_write");
    }
    const int64_t qs = op.query.cols(), ks = op.packed() ? qs : kvCols;
    DeviceRef q = arena(op.query), k = q, v = q;
    if (op.packed()) {
      k.offset += qcols * 4;
      v.offset += (qcols + kvCols) * 4;
    } else {
      k = arena(*op.key);
      v = arena(*op.value);
    }
    if (op.qNorm) { // Qwen3's q/k norms first, each head of the row on its own
      const DType nt = weightType(*op.qNorm);
      if (weightType(*op.kNorm) != nt) unsupported("q_norm and k_norm differ in type");
      const std::string name = specs.wrapper(
          "rope_norm_qkv_write_" + std::string(dtypeName(kv.dtype)) + "_" + dtypeName(nt) +
              dims({qcols, kv.kvHeads, hd, kv.pageSize, pool.pages}) +
              (op.packed() ? "_packed" : ""),
          128,
          "kvplan::ropeNormQkvWrite<" + kvType + ", " + cudaType(nt) + ", " + num(qcols) + ", " +
              num(kv.kvHeads) + ", " + num(hd) + ", " + num(kv.pageSize) + ", " + num(pool.pages) +
              "LL, " + num(qs) + ", " + num(ks) + ", 128>(a)");
      kernel(name, {op.query.rows(), 1, 1}, 128, 0, op.query,
             {q, k, v, arena(op.rotatedQuery), pool.cache, positions, pool.table,
              specs.ropeTable(op.rope), weightRef(*op.qNorm), weightRef(*op.kNorm)},
             {op.layer, tableStride}, {*op.normEps});
      return;
    }
    const std::string name = specs.wrapper(
        "rope_qkv_write_" + std::string(dtypeName(kv.dtype)) +
            dims({qcols, kv.kvHeads, hd, kv.pageSize, pool.pages}) +
            (op.packed() ? "_packed" : ""),
        128,
        "kvplan::ropeQkvWrite<" + kvType + ", " + num(qcols) + ", " + num(kv.kvHeads) + ", " +
            num(hd) + ", " + num(kv.pageSize) + ", " + num(pool.pages) + "LL, " + num(qs) + ", " +
            num(ks) + ">(a)");
    kernel(name, {op.query.rows(), 1, 1}, 128, 0, op.query,
           {q, k, v, arena(op.rotatedQuery), pool.cache, positions, pool.table,
            specs.ropeTable(op.rope)},
           {op.layer, tableStride});
  }
  void operator()(const KVCacheWriteOp &op) {
    const PoolRefs pool = poolOf(op.cache.window);
    entryPositions(op.positions);
    const std::string name = specs.wrapper(
        "kv_write_" + std::string(dtypeName(kv.dtype)) +
            dims({kv.kvHeads, kv.headDim, kv.pageSize, pool.pages}),
        128,
        "kvplan::kvWrite<" + kvType + ", " + num(kv.kvHeads) + ", " + num(kv.headDim) + ", " +
            num(kv.pageSize) + ", " + num(pool.pages) + "LL>(a)");
    kernel(name, {op.key.rows(), 1, 1}, 128, 0, op.key,
           {arena(op.key), arena(op.value), pool.cache, positions, pool.table},
           {op.layer, tableStride});
  }
  void operator()(const KVCacheReadOp &) {} // attention reads the cache in place
  void operator()(const AttentionOp &op);
  void operator()(const FusedFFNOp &op) {
    f32Input(op.input, "fused_ffn");
    const int64_t oc = op.result.cols();
    const DType o = op.result.dtype;
    // GeGLU's kernels' names end in _gelu.
    const std::string name = specs.wrapper(
        "fused_ffn_" + std::string(dtypeName(o)) + dims({oc}) + (op.gelu ? "_gelu" : ""),
        kElementwiseBlock,
        "kvplan::fusedFfn<" + std::string(cudaType(o)) + ", " + num(oc) +
            (op.gelu ? ", true" : "") + ">(a)");
    kernel(name, {ceilDiv(oc, kElementwiseBlock), op.result.rows(), 1}, kElementwiseBlock, 1,
           op.result, {arena(op.input), arena(op.result)});
  }
  void operator()(const MoEFFNOp &op);
  void moeCombine(const MoEFFNOp &op, DeviceRef weights, DeviceRef slotOf, DeviceRef out,
                  DeviceRef gates);
  void operator()(const SwiGLUOp &op) {
    binary(op.gelu ? "geglu" : "swiglu", true, op.gate, op.up, op.result, op.gelu);
  }
  void operator()(const AddOp &op) { binary("add", false, op.lhs, op.rhs, op.result); }
  void operator()(const TakeLastOp &op) {
    const DType t = op.input.dtype;
    const int64_t cols = op.input.cols();
    const std::string name = specs.wrapper(
        "take_last_" + std::string(dtypeName(t)) + dims({cols}), 256,
        "kvplan::takeLast<" + std::string(cudaType(t)) + ", " + num(cols) + ">(a)");
    // One block; i[0] is the input's row count, which follows the active rows.
    kernel(name, {1, 1, 1}, 256, -1, op.input, {arena(op.input), positions, arena(op.result)});
  }
  void operator()(const ConvertOp &op) {
    f32Input(op.input, "convert");
    const DType t = op.result.dtype;
    const int64_t k = op.result.cols();
    const std::string name = specs.wrapper(
        "convert_" + std::string(dtypeName(t)) + dims({k}), kElementwiseBlock,
        "kvplan::convert<" + std::string(cudaType(t)) + ", " + num(k) + ">(a)");
    kernel(name, {ceilDiv(k, kElementwiseBlock), op.result.rows(), 1}, kElementwiseBlock, 1,
           op.result, {arena(op.input), arena(op.result)});
  }

private:
  /// Where a kernel finds `o`: the entry point's tokens, positions and page
  /// table in its inputs block in the workspace, anything else in the arena.
  DeviceRef arena(const Operand &o) const { return cudaOperandRef(out, ep, o); }
  /// The pool a cache op reads or writes: the main one, or the sliding
  /// layers' (Plan::windowCache, after the main one in the cache buffer,
  /// through its own page table). Its pages are the kernels' PAGES.
  struct PoolRefs {
    int64_t pages;
    DeviceRef cache, table;
  };
  PoolRefs poolOf(bool window) const {
    if (!window) return {kv.pages, {DeviceBuffer::cache, 0}, mainTable};
    const Operand *table = ep.arg("window_page_table");
    if (!table || plan.windowCache.layers == 0)
      unsupported("a step reads the sliding layers' cache, which the plan has no pool for");
    return {plan.windowCache.pages, {DeviceBuffer::cache, plan.kvCache.bytes()}, arena(*table)};
  }
  DeviceRef work(int64_t offset) const { return {DeviceBuffer::work, offset}; }
  bool follows(const Operand &o) const { return o.rows() == ep.rows; }
  const WeightEntry &weight(const std::string &name) const { return *plan.findWeight(name); }
  DType weightType(const std::string &name) const { return weight(name).dtype; }
  DeviceRef weightRef(const std::string &name, int64_t byteOffset = 0) const {
    return {DeviceBuffer::weights, int64_t(weight(name).offset) + byteOffset};
  }
  /// Bits per code of a quantized weight, in groups of 32 as the kernels read them.
  static int quantBits(const WeightEntry &w) {
    if (w.dtype == DType::mxfp4)
      unsupported("weight '" + w.name + "' is mxfp4, which the cuda kernels do not read yet; "
                  "compile it as int8 (--dtype int8 --expert-dtype int8)");
    if (w.groupSize != 32)
      unsupported("weight '" + w.name + "' is quantized in groups of " + num(w.groupSize) +
                  "; the cuda kernels read groups of 32");
    return w.dtype == DType::i8 ? 8 : 4;
  }
  /// An int4 weight's mins; for int8, which has none, its scales (unread).
  DeviceRef minsRef(const WeightEntry &w) const {
    return weightRef(w.name, int64_t(w.dtype == DType::i4 ? w.minsOffset : w.scalesOffset));
  }
  /// A weight's scales; for the float types, whose scales_offset is 0, its
  /// data (unread).
  DeviceRef scalesRef(const WeightEntry &w) const {
    return weightRef(w.name, int64_t(w.scalesOffset));
  }
  void f32Input(const Operand &o, const char *op) const {
    if (o.dtype != DType::f32)
      unsupported(std::string(op) + " reads " + dtypeName(o.dtype) + " rows; its kernel reads f32");
  }
  void entryPositions(const Operand &p) const {
    if (p.value != ep.arg("positions")->value)
      unsupported("step " + num(step) + " reads positions other than the entry point's");
  }

  /// A launch of a matvecMma-style kernel `name` (matvecMma,
  /// matvecRopeKvMma) of `warps` warps over `slices` slices of
  /// kMmaFeatures weight rows: block a slice, for all the rows of `rowsOf`
  /// (in tiles of kGemvRows past that: mmaTiled).
  void mmaKernel(const std::string &name, int64_t slices, int64_t warps, const Operand &rowsOf,
                 std::vector<DeviceRef> ptrs, std::vector<int64_t> ints, double eps) {
    kernel(name, {slices, 1, 1}, warps * 32, -1, rowsOf, std::move(ptrs), std::move(ints), {eps});
  }
  /// A launch of `name` over `grid`; along `rowsDim` the grid follows the
  /// active rows when `rowsOf` has the entry point's rows.
  void kernel(const std::string &name, std::array<int64_t, 3> grid, int64_t block, int rowsDim,
              const Operand &rowsOf, std::vector<DeviceRef> ptrs, std::vector<int64_t> ints = {},
              std::vector<double> reals = {}) {
    DeviceOp op;
    op.kind = DeviceOp::kernel;
    op.step = step;
    op.name = name;
    op.grid = grid;
    op.block = {block, 1, 1};
    op.rowsFollowActive = follows(rowsOf);
    op.rowsDim = op.rowsFollowActive ? rowsDim : -1;
    op.staticRows = rowsOf.rows();
    op.pointers = std::move(ptrs);
    op.ints = std::move(ints);
    op.reals = std::move(reals);
    out.ops.push_back(std::move(op));
  }
  void norm(const char *op, const char *tmpl, const std::string &w, const Operand &result,
            double eps, std::vector<DeviceRef> ptrs) {
    const DType wt = weightType(w), ot = result.dtype;
    const int64_t c = result.cols();
    const int64_t block = std::clamp<int64_t>(alignUp(ceilDiv(c, 8), 32), 32, 1024);
    const std::string name = specs.wrapper(
        std::string(op) + "_" + dtypeName(wt) + "_" + dtypeName(ot) + dims({c}), block,
        std::string("kvplan::") + tmpl + "<" + cudaType(wt) + ", " + cudaType(ot) + ", " + num(c) +
            ", " + num(block) + ">(a)");
    kernel(name, {result.rows(), 1, 1}, block, 0, result, std::move(ptrs), {}, {eps});
  }
  void binary(const char *op, bool swiglu, const Operand &a, const Operand &b, const Operand &r,
              bool gelu = false) {
    f32Input(a, op);
    f32Input(b, op);
    const int64_t oc = r.cols();
    const std::string name = specs.wrapper(
        std::string(op) + "_" + dtypeName(r.dtype) + dims({oc}), kElementwiseBlock,
        "kvplan::binary<" + std::string(cudaType(r.dtype)) + ", " + num(oc) + ", " +
            (swiglu ? "true" : "false") + (gelu ? ", true" : "") + ">(a)");
    kernel(name, {ceilDiv(oc, kElementwiseBlock), r.rows(), 1}, kElementwiseBlock, 1, r,
           {arena(a), arena(b), arena(r)});
  }
  DeviceOp gemm(const WeightEntry &w, int64_t byteOffset, const Operand &input,
                const Operand &output, int64_t m) const {
    DeviceOp g;
    g.kind = DeviceOp::gemm;
    g.step = step;
    g.weight = weightRef(w.name, byteOffset);
    g.input = arena(input);
    g.output = arena(output);
    g.m = g.ldc = m;
    g.k = g.lda = g.ldb = w.shape[1];
    g.weightType = w.dtype;
    g.inputType = input.dtype;
    g.staticRows = output.rows();
    g.rowsFollowActive = follows(output);
    return g;
  }
  void linear(const std::string &weightName, const std::optional<std::string> &bias,
              const Operand &input, const std::vector<Operand> &results);
  void quantLinear(const WeightEntry &w, const std::optional<std::string> &bias,
                   const Operand &input, const std::vector<Operand> &results);
  void sample();
  bool plainMatvec(const WeightEntry &w, const std::optional<std::string> &bias,
                 const Operand &input, const std::vector<Operand> &results);
  bool matvecKernel(const char *prefix, const WeightEntry &w, const MatVecOp &op);
  void matvecChecks(const std::string &at, const WeightEntry &w, int64_t rows, const Operand &input,
                    bool norm);
  /// The kernel flags of a matvec's folds and matvecMma's `tiles` of
  /// kGemvRows rows (from 2: mvTiles), and the letters that tag its
  /// wrapper's name (tiles: "r" and their number).
  static std::pair<std::string, std::string> matvecFlags(
      std::initializer_list<std::tuple<bool, const char *, char>> folds, int64_t tiles);
  /// Whether the matvec kernel takes `rows` rows of weights `w`: at most
  /// kGemvRows, each whole 16-byte runs of weights (int8 and int4: runs of
  /// 16 codes, the last group maybe half).
  static bool matvecTakes(const WeightEntry &w, int64_t rows) {
    if (!isFloatDType(w.dtype)) return rows <= kGemvRows && w.shape[1] % 16 == 0;
    return rows <= kGemvRows && w.shape[1] % (16 / dtypeBytes(w.dtype)) == 0;
  }
  /// Features each matvec warp computes (Kernels.cuh, matvec's FPW): one at
  /// one row, the most warps to fill the GPU. At more rows each warp's loads
  /// of x, from L1, are R times the weights' elements and would hold the
  /// kernel below the memory bandwidth (at 8 rows of f32 x over bf16
  /// weights, 16 bytes of x a byte of weights: about 2 TB/s of weights from
  /// an H200's L1); a warp of FPW features uses each load FPW times. 2 at 2
  /// or 3 rows, 4 from 4, as far as the weights decoded at once stay within
  /// 32 registers a lane (G x MvFormat::SUB), and a divisor of the features.
  /// At one row 2 too, where they fit, for int4, whose decoding leaves the
  /// kernel short of issue slots (Llama-3.2-1B's down product: 8.6 PTX
  /// instructions a byte of weights at one feature a warp, 7.7 at 2, each
  /// load of x and its sum, for the groups' minimums, serving both), and for
  /// any type where the features are many (at least 32 x kFillBlocks, 32
  /// warps a multiprocessor at 2: a vocabulary's head), so that the norm
  /// folded into it is worked out once for two (Llama-3.2-1B's head, int8:
  /// 6.4 → 5.2; bf16: 2.9 → 2.3). Where they are few, a warp a feature keeps
  /// more loads in flight.
  static int64_t matvecFeaturesPerWarp(const WeightEntry &w, int64_t rows, int64_t features,
                                       bool swiglu) {
    const bool float_ = isFloatDType(w.dtype);
    const int64_t sub = float_ ? 16 / dtypeBytes(w.dtype) : 16;
    const bool two = (!float_ && quantBits(w) == 4) || features >= 32 * kFillBlocks;
    int64_t fpw = rows <= 1 ? (two ? 2 : 1) : rows < 4 ? 2 : 4;
    while (fpw > 1 && (fpw * (swiglu ? 2 : 1) * sub > 32 || features % fpw)) fpw /= 2;
    return fpw;
  }
  /// Whether matvec's products run on tensor cores (Kernels.cuh,
  /// matvecMma): bf16, int8 or int4 weights at 2 rows or more, where
  /// matvec's f32 products would issue a multiply-add for every weight and
  /// row; where matvec takes the rows (matvecTakes).
  static bool matvecOnTensorCores(const WeightEntry &w, int64_t rows) {
    const bool type = w.dtype == DType::bf16 || !isFloatDType(w.dtype);
    return type && rows >= 2 && matvecTakes(w, rows);
  }
  /// Whether a product of more than kGemvRows rows runs on matvecMma, its
  /// rows in tiles of kGemvRows (mvTiles, mmaTiles): int8 and int4 weights
  /// up to kMmaGroupRows, bf16 ones up to kMmaBf16Rows, where matvecMma
  /// takes their rows (matvecTakes). A block reads its slice of the weights
  /// once for all the tiles (and decodes int8 and int4 codes once), and the
  /// products keep --fuse-matvec's folds (a layer five kernels, not nine or
  /// ten). Until 2026-12-05 a block took one group of 8 rows (the groups of
  /// a slice side by side in the grid), so each group read the weights
  /// again from L2 and decoded them again: on an H200 Llama-3.2-1B's bf16
  /// decode step at 32 rows took 2.88 ms in 4 groups, 1.99 on cuBLAS (at 16
  /// rows 1.90 against 1.90), and bf16 went back to cuBLAS past 16 rows.
  /// Each tile still loads its own rows of x, splits them into two bf16
  /// parts and multiplies: a tile past the first costs about 0.8 (gate|up)
  /// to 1.5 (QKV, the head) PTX instructions a byte of bf16 weights, int8
  /// 2.2 to 3.2 and int4 5.3 to 7.4 a byte of theirs; the weights' loads and
  /// the codes' decoding come once (Llama-3.2-1B at 32 rows, docs/cuda.md).
  /// int8 and int4: the tiled product (quantGemm) has
  /// one tile of 64 rows for every 64 features there (Llama-3.2-1B's o
  /// product: 32 blocks for 132 multiprocessors), each waiting on a group
  /// of K at a time, while matvecMma keeps every multiprocessor streaming
  /// weights.
  static bool mmaTiled(const WeightEntry &w, int64_t rows) {
    const int64_t most = w.dtype == DType::bf16 ? kMmaBf16Rows : kMmaGroupRows;
    return (w.dtype == DType::bf16 || !isFloatDType(w.dtype)) && rows > kGemvRows &&
           rows <= most && matvecTakes(w, kGemvRows);
  }
  /// matvecMma's tiles of kGemvRows rows for a product of `rows`.
  static int64_t mmaTiles(int64_t rows) { return ceilDiv(rows, kGemvRows); }
  /// The blocks a multiprocessor must hold at once for matvecMma's grid of
  /// `blocks` (Specialisations::wrapper's minBlocks): one where the grid is
  /// no more than an H100's or H200's multiprocessors (its blocks of up to
  /// 16 warps: at 16 and the first U steps' weights loaded before the wait,
  /// ptxas otherwise keeps 64 registers for two blocks a multiprocessor and
  /// spills; Llama-3.2-1B's int4 o and down at 8 rows, 128 blocks); else
  /// ptxas's choice.
  /// With tiles (mmaTiled), blocks enough for 8 warps a multiprocessor (at
  /// most 255 registers a thread; their blocks have at most 8 warps,
  /// mmaWarps): at 16 (128 registers), as the row groups before them had,
  /// Llama-3.2-1B's kernels at 4 tiles spilled 4 to 80 bytes in bf16 and
  /// 112 to 204 in int4; left to itself, ptxas kept 64 to 80 registers and
  /// spilled 16 to 32 bytes in the row groups.
  static int64_t mmaMinBlocks(int64_t blocks, int64_t warps, bool tiled) {
    if (tiled) return std::max<int64_t>(1, 8 / warps);
    return blocks <= kFillBlocks / 2 ? 1 : 0;
  }
  /// Warps a block of matvecMma splits K over: from 4 (fewer where K has
  /// fewer runs of 32), doubled up to 16 (with tiles 8: mmaMinBlocks) while
  /// the blocks' warps are fewer than 4 x kFillBlocks (8 a multiprocessor
  /// of an H100/H200), so that enough loads are in flight.
  static int64_t mmaWarps(int64_t blocks, int64_t k, bool tiled) {
    const int64_t steps = ceilDiv(k, 32), most = tiled ? 8 : 16;
    int64_t warps = std::min<int64_t>(4, steps);
    while (warps < most && blocks * warps < 4 * kFillBlocks && 2 * warps <= steps) warps *= 2;
    return warps;
  }
  /// The matvec kernel's weight type (Kernels.cuh, MvFormat) for `w`.
  static std::string matvecWeightType(const WeightEntry &w) {
    if (isFloatDType(w.dtype)) return cudaType(w.dtype);
    return quantBits(w) == 8 ? "int8_t" : "kvplan::Int4";
  }
  /// What the matvec kernels read of int8 and int4 weights beside p[1]: the
  /// scales' and minimums' bytes from it; nothing for the float types.
  static std::vector<int64_t> matvecScales(const WeightEntry &w) {
    if (isFloatDType(w.dtype)) return {};
    return {int64_t(w.scalesOffset),
            int64_t(w.dtype == DType::i4 ? w.minsOffset : w.scalesOffset)};
  }
  /// The outputs of one weight (a fused QKV or gate|up: up to three, of
  /// one row count and type) as features n[0..2] and the kernel's output
  /// pointers p[5..7] appended to `ptrs`; false where they are not.
  bool splitOutputs(const std::vector<Operand> &results, int64_t (&n)[3],
                    std::vector<DeviceRef> &ptrs) const;
  void biasAdd(const std::string &bias, const Operand &o, int64_t col);

  const Plan &plan;
  const EntryPoint &ep;
  const AttentionSplit &split;
  Specialisations &specs;
  CudaEntry &out;
  const KVCacheLayout &kv;
  const std::string kvType;
  const DeviceRef positions, mainTable;
  const int64_t tableStride;
  int64_t step = 0;
};

void EntryLowering::linear(const std::string &weightName, const std::optional<std::string> &bias,
                           const Operand &input, const std::vector<Operand> &results) {
  const WeightEntry &w = weight(weightName);
  if (w.shape.size() != 2 || w.shape[1] != input.cols())
    unsupported("weight '" + w.name + "' does not fit its linear");
  if (!isFloatDType(w.dtype)) return quantLinear(w, bias, input, results);
  if (input.dtype != w.dtype)
    unsupported("step " + num(step) + " multiplies " + dtypeName(input.dtype) + " rows by " +
                dtypeName(w.dtype) + " weights; cuBLAS needs one type (run --narrow-activations)");
  if (plainMatvec(w, bias, input, results)) return;
  // One product per result: a fused Q/K/V that RoPE reads is one result
  // already (--fuse-rope-kv-write packs it).
  int64_t col = 0;
  for (const Operand &o : results) {
    const int64_t m = o.cols();
    out.ops.push_back(gemm(w, col * w.shape[1] * dtypeBytes(w.dtype), input, o, m));
    if (bias) biasAdd(*bias, o, col);
    col += m;
  }
}

/// The router's product, the routing, each active expert's gate|up and down
/// products over its rows, and the rows' weighted sums (Kernels.cuh, the
/// moe kernels), through the experts' scratch in the workspace. Each stack
/// of any type matvec reads (gate and up of one), int8 and int4 in rows of
/// whole runs of 16 codes.
void EntryLowering::operator()(const MoEFFNOp &op) {
  f32Input(op.input, "moe_ffn");
  if (op.routerBias || op.gateBias || op.swigluLimit)
    unsupported("step " + num(step) + ": moe_ffn's biases and clamped SwiGLU (gpt-oss's) have "
                "no cuda kernels yet");
  const WeightEntry &router = weight(op.router), &gate = weight(op.gate), &up = weight(op.up),
                    &down = weight(op.down);
  const int64_t experts = router.shape[0], h = op.input.cols(), ff = gate.shape[1];
  const int64_t k = op.expertsPerToken, rows = op.input.rows();
  const std::vector<int64_t> stack = {experts, ff, h}, downStack = {experts, h, ff};
  if (router.shape != std::vector<int64_t>{experts, h} || gate.shape != stack ||
      up.shape != stack || down.shape != downStack || op.result.cols() != h || k < 1 ||
      k > experts)
    unsupported("step " + num(step) + ": moe_ffn's weights do not fit its rows");
  if (gate.dtype != up.dtype)
    unsupported("weights '" + gate.name + "' and '" + up.name + "' differ in type (" +
                dtypeName(gate.dtype) + ", " + dtypeName(up.dtype) + "); one kernel reads both");
  const bool gated = op.sharedGate.has_value();
  const WeightEntry &sg = gated ? weight(*op.sharedGate) : router; // unread where not gated
  if (gated && sg.shape != std::vector<int64_t>{1, h})
    unsupported("step " + num(step) + ": moe_ffn's shared_gate is not one row of its input's");
  for (const WeightEntry *w : {&router, &gate, &down, &sg})
    if (!isFloatDType(w->dtype) && (quantBits(*w), w->shape.back() % 16 != 0)) // groups of 32
      unsupported("weight '" + w->name + "' is " + dtypeName(w->dtype) + " in rows of " +
                  num(w->shape.back()) + ": the experts' kernels read int8 and int4 rows of "
                  "whole runs of 16 codes");
  const MoeScratchLayout l = moeScratchLayout(rows, experts, k, h, ff, gated);
  auto at = [&](int64_t offset) { return work(specs.moeScratch + offset); };
  const int64_t block = kMoeWarps * 32, slots = std::min(experts, rows * k);
  const std::string shape = num(h) + ", " + num(ff) + ", " + num(experts);
  auto type = [](const WeightEntry &w) { return std::string(dtypeName(w.dtype)); };
  std::string name = specs.wrapper(
      "moe_router_" + type(router) + dims({h, experts}) + (gated ? "_gate_" + type(sg) : ""),
      block,
      "kvplan::moeRouter<" + matvecWeightType(router) + ", " + num(h) + ", " + num(experts) +
          (gated ? ", true, " + matvecWeightType(sg) : "") + ">(a)");
  kernel(name, {experts + (gated ? 1 : 0), rows, 1}, block, 1, op.input,
         {arena(op.input), weightRef(op.router), at(l.probs), scalesRef(router), minsRef(router),
          weightRef(sg.name), scalesRef(sg), minsRef(sg), at(l.gates)});
  name = specs.wrapper("moe_route" + dims({experts, k}) + (op.normTopK ? "_norm" : ""), 256,
                       "kvplan::moeRoute<" + num(experts) + ", " + num(k) + ", " +
                           (op.normTopK ? "true" : "false") + ", 256>(a)");
  kernel(name, {1, 1, 1}, 256, -1, op.input,
         {at(l.probs), at(l.weights), at(l.meta), at(l.chosen), at(l.slotOf), at(l.rowOf)});
  name = specs.wrapper("moe_gate_up_" + type(gate) + dims({h, ff, experts}) +
                           (op.gelu ? "_gelu" : ""),
                       block,
                       "kvplan::moeGateUp<" + matvecWeightType(gate) + ", " + shape + ", " +
                           (op.gelu ? "true" : "false") + ">(a)");
  kernel(name, {ceilDiv(ff, kMoeWarps), slots, 1}, block, -1, op.input,
         {arena(op.input), weightRef(op.gate), weightRef(op.up), at(l.meta), at(l.rowOf),
          at(l.hidden), scalesRef(gate), minsRef(gate), scalesRef(up), minsRef(up)});
  name = specs.wrapper("moe_down_" + type(down) + dims({h, ff, experts}), block,
                       "kvplan::moeDown<" + matvecWeightType(down) + ", " + shape + ">(a)");
  kernel(name, {ceilDiv(h, kMoeWarps), slots, 1}, block, -1, op.input,
         {at(l.hidden), weightRef(op.down), at(l.meta), at(l.out), scalesRef(down),
          minsRef(down)});
  moeCombine(op, at(l.weights), at(l.slotOf), at(l.out), at(l.gates));
}

/// The mixture's rows: each row's experts' outputs weighted, and its shared
/// expert's (gated where the op says).
void EntryLowering::moeCombine(const MoEFFNOp &op, DeviceRef weights, DeviceRef slotOf,
                               DeviceRef out, DeviceRef gates) {
  const int64_t h = op.input.cols();
  const DType o = op.result.dtype;
  const int shared = !op.shared ? 0 : op.sharedGate ? 2 : 1;
  if (op.shared) f32Input(*op.shared, "moe_ffn's shared expert");
  const std::string name = specs.wrapper(
      "moe_combine_" + std::string(dtypeName(o)) + dims({h, op.expertsPerToken}) +
          (shared == 2 ? "_shared_gated" : shared == 1 ? "_shared" : ""),
      kElementwiseBlock,
      "kvplan::moeCombine<" + std::string(cudaType(o)) + ", " + num(h) + ", " +
          num(op.expertsPerToken) + ", " + num(shared) + ">(a)");
  kernel(name, {ceilDiv(h, kElementwiseBlock), op.input.rows(), 1}, kElementwiseBlock, 1,
         op.result,
         {weights, slotOf, out, arena(op.result), op.shared ? arena(*op.shared) : out, gates});
}

bool EntryLowering::splitOutputs(const std::vector<Operand> &results, int64_t (&n)[3],
                                 std::vector<DeviceRef> &ptrs) const {
  if (results.empty() || results.size() > 3) return false;
  for (size_t i = 0; i < results.size(); ++i) {
    n[i] = results[i].cols();
    if (results[i].rows() != results[0].rows() || results[i].dtype != results[0].dtype)
      return false;
  }
  for (size_t i = 0; i < 3; ++i) ptrs.push_back(arena(results[std::min(i, results.size() - 1)]));
  return true;
}

/// o += bias[col, col + o.cols()) on every row.
void EntryLowering::biasAdd(const std::string &bias, const Operand &o, int64_t col) {
  const DType bt = weightType(bias);
  const int64_t m = o.cols();
  const std::string name = specs.wrapper(
      "bias_add_" + std::string(dtypeName(bt)) + dims({m}), kElementwiseBlock,
      "kvplan::biasAdd<" + std::string(cudaType(bt)) + ", " + num(m) + ">(a)");
  kernel(name, {ceilDiv(m, kElementwiseBlock), o.rows(), 1}, kElementwiseBlock, 1, o,
         {arena(o), weightRef(bias, col * dtypeBytes(bt))});
}

/// Up to kGemvRows rows (decode, the last prefill row) of a product that
/// --fuse-matvec left as it is: one generated matrix-vector kernel (matvec
/// with no prologue or epilogue but the bias) for every output of the
/// weight, reading it once in 16-byte loads, instead of cuBLAS (which at
/// one row reaches a fraction of the memory bandwidth) or quantGemv; int8
/// and int4 weights also up to kMmaGroupRows rows, bf16 up to kMmaBf16Rows
/// (mmaTiled). False
/// where the rows are more, or a row is not whole runs (matvecTakes).
bool EntryLowering::plainMatvec(const WeightEntry &w, const std::optional<std::string> &bias,
                              const Operand &input, const std::vector<Operand> &results) {
  const int64_t rows = results[0].rows();
  if (!matvecTakes(w, rows) && !mmaTiled(w, rows)) return false;
  MatVecOp plain;
  plain.weight = w.name;
  plain.input = input;
  plain.bias = bias;
  plain.results = results;
  return matvecKernel("linear_gemv_", w, plain);
}

/// Matrix-vector warps per block: as many as keep the blocks (one feature
/// per warp) numerous enough to fill a large GPU.
int64_t gemvWarps(int64_t features) {
  int64_t warps = 8;
  while (warps > 2 && ceilDiv(features, warps) < kFillBlocks) warps /= 2;
  return warps;
}

/// A product with int8 or int4 weights is one generated kernel for every
/// output of a fused weight and its bias: for up to kGemvRows rows (decode,
/// the last prefill row) matvec where it takes the rows, else quantGemv
/// (rows of any length); up to kMmaGroupRows matvecMma, its rows in tiles
/// (mmaTiled), where it takes them; the tiled product for more.
void EntryLowering::quantLinear(const WeightEntry &w, const std::optional<std::string> &bias,
                                const Operand &input, const std::vector<Operand> &results) {
  f32Input(input, "linear");
  if (results.size() > 3) unsupported("weight '" + w.name + "' feeds more than three outputs");
  const Operand &o = results[0];
  int64_t n[3] = {0, 0, 0};
  std::vector<DeviceRef> ptrs = {arena(input), weightRef(w.name),
                                 weightRef(w.name, int64_t(w.scalesOffset)), minsRef(w),
                                 bias ? weightRef(*bias) : weightRef(w.name)};
  if (!splitOutputs(results, n, ptrs))
    unsupported("the outputs of weight '" + w.name + "' differ in rows or type");
  const int64_t k = w.shape[1], features = w.shape[0], rows = o.rows();
  if (n[0] + n[1] + n[2] != features) unsupported("weight '" + w.name + "' does not fit its linear");
  if (bias && weightType(*bias) != DType::f32)
    unsupported("bias '" + *bias + "' of quantized weights must be f32");
  const std::string args = std::string(cudaType(o.dtype)) + ", " + num(quantBits(w)) + ", " +
                           num(k) + ", " + num(n[0]) + ", " + num(n[1]) + ", " + num(n[2]) +
                           ", " + (bias ? "true" : "false");
  const std::string tag = std::string(dtypeName(w.dtype)) + "_" + dtypeName(o.dtype) +
                          dims({k, n[0], n[1], n[2], bias ? 1 : 0});
  if (plainMatvec(w, bias, input, results)) return;
  if (rows <= kGemvRows) {
    const int64_t warps = gemvWarps(features);
    const std::string name =
        specs.wrapper("linear_gemv_" + tag + dims({warps, rows}), warps * 32,
                      "kvplan::quantGemv<" + args + ", " + num(warps) + ", " + num(rows) + ">(a)");
    kernel(name, {ceilDiv(features, warps), 1, 1}, warps * 32, -1, o, std::move(ptrs));
    return;
  }
  const std::string name = specs.wrapper("linear_gemm_" + tag, kGemmThreads,
                                         "kvplan::quantGemm<" + args + ">(a)");
  kernel(name, {ceilDiv(features, kGemmTile), ceilDiv(rows, kGemmTile), 1}, kGemmThreads, 1, o,
         std::move(ptrs));
  out.ops.back().rowsPerBlock = kGemmTile;
}

/// One generated matrix-vector kernel for the product and everything
/// --fuse-matvec folded into it (Kernels.cuh, matvec).
void EntryLowering::operator()(const MatVecOp &op) {
  const WeightEntry &w = weight(op.weight);
  const std::string at = "step " + num(step) + " (matvec of weight '" + w.name + "')";
  matvecChecks(at, w, op.results.front().rows(), op.input, op.norm.has_value());
  if (op.addend) f32Input(*op.addend, "matvec's addend");
  if (!matvecKernel("matvec_", w, op)) unsupported(at + ": its outputs do not split the weight's rows");
  if (op.softcap) softcapRows(op.results.front(), *op.softcap);
}

/// What every matvec kernel needs of its weight `w` and its `rows` rows of
/// `input`; `at` names the step. int8 and int4 weights may have up to
/// kMmaGroupRows rows, bf16 up to kMmaBf16Rows (mmaTiled).
void EntryLowering::matvecChecks(const std::string &at, const WeightEntry &w, int64_t rows,
                                 const Operand &input, bool norm) {
  if (!matvecTakes(w, rows) && !mmaTiled(w, rows))
    unsupported(at + ": " + num(rows) + " rows of " + num(w.shape[1]) +
                "; the matvec kernel takes up to " + num(kGemvRows) +
                " rows of whole 16-byte runs (int8 and int4: runs of 16 codes, up to " +
                num(kMmaGroupRows) + " rows; bf16 up to " + num(kMmaBf16Rows) + ")");
  if (norm || !isFloatDType(w.dtype)) f32Input(input, "matvec");
  if (input.dtype != DType::f32 && input.dtype != w.dtype)
    unsupported(at + " reads " + dtypeName(input.dtype) + " rows; it reads f32 or " +
                dtypeName(w.dtype));
}

std::pair<std::string, std::string> EntryLowering::matvecFlags(
    std::initializer_list<std::tuple<bool, const char *, char>> folds, int64_t tiles) {
  std::string flags = "0", tag = "_";
  for (auto [on, flag, letter] : folds)
    if (on) {
      flags += std::string(" | kvplan::") + flag;
      tag += letter;
    }
  if (tiles > 1) {
    flags += " | kvplan::mvTiles(" + num(tiles) + ")";
    tag += "r" + num(tiles);
  }
  return {flags, tag};
}

/// One launch of Kernels.cuh's matvecRopeKv: the QKV product, its norm and
/// bias, with RoPE and the cache write of the keys and values.
void EntryLowering::operator()(const MatVecRopeKVWriteOp &op) {
  const WeightEntry &w = weight(op.weight);
  const std::string at = "step " + num(step) + " (matvec_rope_kv_write of weight '" + w.name + "')";
  const int64_t rows = op.rotatedQuery.rows(), qcols = op.rotatedQuery.cols(),
                hd = op.rope.headDim, k = w.shape[1];
  const PoolRefs pool = poolOf(op.cache.window);
  matvecChecks(at, w, rows, op.input, op.norm.has_value());
  entryPositions(op.positions);
  if (hd != kv.headDim || qcols + 2 * kv.kvHeads * hd != w.shape[0])
    unsupported(at + ": its queries, keys and values do not match the KV cache");
  if (op.rotatedQuery.dtype != DType::f32) unsupported(at + ": its queries are stored in f32");
  const bool tiled = mmaTiled(w, rows);
  const auto [flags, tag] = matvecFlags({{op.norm.has_value(), "kMvNorm", 'n'},
                                         {op.bias.has_value(), "kMvBias", 'b'}},
                                        tiled ? mmaTiles(rows) : 1);
  const DType nw = op.norm ? weightType(*op.norm) : DType::f32,
              b = op.bias ? weightType(*op.bias) : DType::f32;
  const std::string types = std::string(dtypeName(w.dtype)) + "_" + dtypeName(op.input.dtype) +
                            "_" + dtypeName(nw) + "_" + dtypeName(b) + "_" + dtypeName(kv.dtype);
  const std::vector<DeviceRef> ptrs = {
      arena(op.input), weightRef(w.name), op.norm ? weightRef(*op.norm) : weightRef(w.name),
      pool.table, op.bias ? weightRef(*op.bias) : weightRef(w.name), arena(op.rotatedQuery),
      pool.cache, positions, specs.ropeTable(op.rope)};
  if (matvecOnTensorCores(w, rows) || tiled) {
    // Pairs of features a block: matvecMma's 16 weight rows (mmaKernel).
    const int64_t slices = ceilDiv(w.shape[0], kMmaFeatures), warps = mmaWarps(slices, k, tiled);
    const std::string name = specs.wrapper(
        "matvec_rope_kv_mma_" + types +
            dims({k, qcols, kv.kvHeads, hd, kv.pageSize, pool.pages, warps}) + tag,
        warps * 32,
        "kvplan::matvecRopeKvMma<" + matvecWeightType(w) + ", " + cudaType(op.input.dtype) +
            ", " + cudaType(nw) + ", " + cudaType(b) + ", " + kvType + ", " + num(k) + ", " +
            num(qcols) + ", " + num(kv.kvHeads) + ", " + num(hd) + ", " + num(kv.pageSize) +
            ", " + num(pool.pages) + "LL, " + num(warps) + ", " + flags + ">(a)",
        true, mmaMinBlocks(slices, warps, tiled));
    std::vector<int64_t> ints = {op.layer, tableStride};
    for (int64_t offset : matvecScales(w)) ints.push_back(offset);
    mmaKernel(name, slices, warps, op.rotatedQuery, ptrs, std::move(ints), op.eps.value_or(0.0));
    return;
  }
  // Pairs a warp: as matvec's features a warp, two weight rows each.
  const int64_t pairs = w.shape[0] / 2,
                ppw = matvecFeaturesPerWarp(w, rows, pairs, true),
                warps = gemvWarps(pairs / ppw);
  const std::string name = specs.wrapper(
      "matvec_rope_kv_" + types +
          dims({k, qcols, kv.kvHeads, hd, kv.pageSize, pool.pages, warps, ppw, rows}) + tag,
      warps * 32,
      "kvplan::matvecRopeKv<" + matvecWeightType(w) + ", " + cudaType(op.input.dtype) +
          ", " + cudaType(nw) + ", " + cudaType(b) + ", " + kvType + ", " + num(k) + ", " +
          num(qcols) + ", " + num(kv.kvHeads) + ", " + num(hd) + ", " + num(kv.pageSize) + ", " +
          num(pool.pages) + "LL, " + num(warps) + ", " + num(ppw) + ", " + num(rows) + ", " +
          flags + ">(a)",
      true);
  std::vector<int64_t> ints = {op.layer, tableStride};
  for (int64_t offset : matvecScales(w)) ints.push_back(offset);
  kernel(name, {ceilDiv(pairs / ppw, warps), 1, 1}, warps * 32, -1, op.rotatedQuery, ptrs,
         std::move(ints), {op.eps.value_or(0.0)});
}

/// One launch of Kernels.cuh's matvec for `op`, its folds as the template's
/// flags; false where its outputs do not split the weight's rows.
bool EntryLowering::matvecKernel(const char *prefix, const WeightEntry &w, const MatVecOp &op) {
  int64_t n[3] = {0, 0, 0};
  std::vector<DeviceRef> ptrs = {arena(op.input), weightRef(w.name),
                                 op.norm ? weightRef(*op.norm) : weightRef(w.name),
                                 op.addend ? arena(*op.addend) : arena(op.input),
                                 op.bias ? weightRef(*op.bias) : weightRef(w.name)};
  if (!splitOutputs(op.results, n, ptrs) || op.weightRows() != w.shape[0]) return false;
  // The folds, as the kernel's flags and the wrapper's name tell them.
  const int64_t rows = op.results.front().rows();
  const bool tiled = mmaTiled(w, rows);
  const auto [flags, tag] = matvecFlags({{op.norm.has_value(), "kMvNorm", 'n'},
                                         {op.swiglu, "kMvSwiglu", 's'},
                                         {op.gelu, "kMvGelu", 'g'},
                                         {op.addend.has_value(), "kMvAdd", 'a'},
                                         {op.bias.has_value(), "kMvBias", 'b'}},
                                        tiled ? mmaTiles(rows) : 1);
  const DType nw = op.norm ? weightType(*op.norm) : DType::f32,
              b = op.bias ? weightType(*op.bias) : DType::f32;
  const Operand &o = op.results.front();
  const int64_t k = w.shape[1], features = n[0] + n[1] + n[2];
  const std::string types = std::string(dtypeName(w.dtype)) + "_" + dtypeName(op.input.dtype) +
                            "_" + dtypeName(o.dtype) + "_" + dtypeName(nw) + "_" + dtypeName(b);
  if (matvecOnTensorCores(w, rows) || tiled) {
    // A block a slice of features, for every row (mmaKernel).
    const int64_t slices = ceilDiv(features, kMmaFeatures), warps = mmaWarps(slices, k, tiled);
    const std::string name = specs.wrapper(
        prefix + std::string("mma_") + types + dims({k, n[0], n[1], n[2], warps}) + tag,
        warps * 32,
        "kvplan::matvecMma<" + matvecWeightType(w) + ", " + cudaType(op.input.dtype) + ", " +
            cudaType(o.dtype) + ", " + cudaType(nw) + ", " + cudaType(b) + ", " + num(k) + ", " +
            num(n[0]) + ", " + num(n[1]) + ", " + num(n[2]) + ", " + num(warps) + ", " + flags +
            ">(a)",
        true, mmaMinBlocks(slices, warps, tiled));
    mmaKernel(name, slices, warps, o, std::move(ptrs), matvecScales(w), op.eps.value_or(0.0));
    return true;
  }
  const int64_t fpw = matvecFeaturesPerWarp(w, rows, features, op.swiglu),
                warps = gemvWarps(features / fpw);
  // Two features a warp of 16-bit weights (the head): ptxas, left to
  // itself, kept Llama-3.2-1B's bf16 head at one row to 64 registers and
  // spilled 12 bytes; two blocks a multiprocessor let it take 95. (The
  // other matvec kernels are left to ptxas: bounded so, they took up to 30
  // registers more, spilling nothing before.)
  const int64_t minBlocks = fpw > 1 && isFloatDType(w.dtype) ? 2 : 0;
  const std::string name = specs.wrapper(
      prefix + types + dims({k, n[0], n[1], n[2], warps, fpw, rows}) + tag,
      warps * 32,
      "kvplan::matvec<" + matvecWeightType(w) + ", " + cudaType(op.input.dtype) + ", " +
          cudaType(o.dtype) + ", " + cudaType(nw) + ", " + cudaType(b) + ", " + num(k) + ", " +
          num(n[0]) + ", " + num(n[1]) + ", " + num(n[2]) + ", " + num(warps) + ", " + num(fpw) +
          ", " + num(rows) + ", " + flags + ">(a)",
      true, minBlocks);
  kernel(name, {ceilDiv(features / fpw, warps), 1, 1}, warps * 32, -1, o, std::move(ptrs),
         matvecScales(w), {op.eps.value_or(0.0)});
  return true;
}

void EntryLowering::operator()(const AttentionOp &op) {
  const int64_t h = op.numHeads, kvh = op.numKvHeads, hd = op.headDim;
  const PoolRefs pool = poolOf(op.key.window);
  if (kvh != kv.kvHeads || hd != kv.headDim || h % kvh)
    unsupported("attention heads disagree with the KV cache");
  if (op.mask != AttentionMask::cache || op.key.kind != OperandKind::kvView)
    unsupported("attention must read KV-cache views");
  if (op.sinks) unsupported("attention sinks (gpt-oss's) have no cuda kernels yet");
  f32Input(op.query, "attention");
  const DType o = op.result.dtype;
  // A sliding window is the kernels' last template argument; its name ends
  // in _wN.
  const int64_t window = op.window.value_or(0);
  // Gemma 2's soft-capped scores: CAP after the window, the cap in d[1];
  // the name ends in _cap.
  const bool cap = op.softcap.has_value();
  const std::string w = window || cap ? ", " + num(window) + (cap ? ", true" : "") : "",
                    wName = (window ? "_w" + std::to_string(window) : "") + (cap ? "_cap" : "");
  std::vector<double> reals = {op.scale};
  if (cap) reals.push_back(*op.softcap);
  if (const AttnTiling t = split.tiling; t.heads) {
    // A bf16 cache on bf16 tensor cores (attnTiledMma); f16 and f32 ones on
    // tf32 (attnTiled).
    const bool mma = kv.dtype == DType::bf16;
    const std::string name = specs.wrapper(
        std::string(mma ? "attn_tiled_mma_" : "attn_tiled_") + dtypeName(kv.dtype) + "_" +
            dtypeName(o) + dims({h, kvh, hd, kv.pageSize, pool.pages, t.heads, t.rowTiles}) + wName,
        t.warps() * 32,
        std::string(mma ? "kvplan::attnTiledMma<" : "kvplan::attnTiled<" + kvType + ", ") +
            cudaType(o) + ", " + num(h) + ", " + num(kvh) + ", " + num(hd) + ", " +
            num(kv.pageSize) + ", " + num(pool.pages) + "LL, " + num(t.heads) + ", " +
            num(t.rowTiles) + w + ">(a)");
    const int64_t rowsPerBlock = kAttnTileRows * t.rowTiles;
    kernel(name, {kvh, ceilDiv(op.result.rows(), rowsPerBlock), h / kvh / t.heads},
           t.warps() * 32, 1, op.result,
           {arena(op.query), pool.cache, positions, pool.table, arena(op.result)}, {op.key.layer},
           reals);
    out.ops.back().rowsPerBlock = rowsPerBlock;
    return;
  }
  const std::string name = specs.wrapper(
      "attn_" + std::string(dtypeName(kv.dtype)) + "_" + dtypeName(o) +
          dims({h, kvh, hd, kv.pageSize, pool.pages}) + wName,
      kAttnWarps * 32,
      "kvplan::attnPartial<" + kvType + ", " + cudaType(o) + ", " + num(h) + ", " + num(kvh) +
          ", " + num(hd) + ", " + num(kv.pageSize) + ", " + num(pool.pages) + "LL, " +
          num(kAttnWarps) + w + ">(a)",
      true, kAttnMinBlocks);
  kernel(name, {kvh, op.result.rows(), split.splits}, kAttnWarps * 32, 1, op.result,
         {arena(op.query), pool.cache, positions, pool.table, work(split.partOffset),
          work(split.mlOffset), arena(op.result), work(split.arrivalsOffset)},
         {op.key.layer, tableStride, split.splits}, reals);
}

/// Sampling from the logits the entry point returns: each row's argmax
/// over many blocks (a slice of the vocabulary each, with its mass and
/// candidates where the row samples), then one block a row that merges
/// them and, at a temperature, draws.
void EntryLowering::sample() {
  const Operand &logits = ep.results.at(0);
  const int64_t vocab = logits.cols(), slice = argmaxSlice(vocab);
  step = int64_t(ep.steps.size());
  const size_t first = out.ops.size();
  const std::string argmax = specs.wrapper(
      "argmax_slices" + dims({vocab, slice, kSampleCandidates}), kArgmaxBlock,
      "kvplan::argmaxSlices<" + num(vocab) + ", " + num(slice) + ", " + num(kArgmaxBlock) + ", " +
          num(kSampleCandidates) + ">(a)");
  kernel(argmax, {ceilDiv(vocab, slice), logits.rows(), 1}, kArgmaxBlock, 1, logits,
         {arena(logits), work(out.argmaxOffset), work(out.samplingParamsOffset)});
  const std::string name = specs.wrapper(
      "sample" + dims({vocab, slice, kSampleCandidates}), kSampleBlock,
      "kvplan::sample<" + num(vocab) + ", " + num(kSampleBlock) + ", " + num(slice) + ", " +
          num(kSampleCandidates) + ">(a)");
  kernel(name, {logits.rows(), 1, 1}, kSampleBlock, 0, logits,
         {arena(logits), work(out.samplingParamsOffset), work(out.sampledOffset),
          work(out.argmaxOffset)});
  out.sampling.assign(std::make_move_iterator(out.ops.begin() + long(first)),
                      std::make_move_iterator(out.ops.end()));
  out.ops.resize(first);
}

} // namespace

/// attnTiled's shared memory (Kernels.cuh, AttnTileShared and AttnTile's
/// keys a tile) in bytes, with 32 for the struct's alignment. Should the
/// two disagree, nvcc refuses a source whose static shared memory passes
/// 48 KiB (CudaCodegen.GeneratedSourceCompilesForEveryShape).
static int64_t attnTileSharedBytes(int64_t hd, const AttnTiling &t) {
  const int64_t bk = hd <= 64 ? 32 : 16, lk = hd + 4, ls = bk + 4;
  return (2 * bk * lk + t.warps() * (16 * ls + 16 * lk + 3 * 16)) * 4 + t.rowTiles * 16 * 4 + 32;
}

/// The block for one attention step: the most of its group's query heads
/// (dividing the group), then the most row tiles (dividing the `tiles`, so
/// that no warp idles when every row runs), up to kAttnTileWarps warps in
/// 48 KiB of shared memory.
static AttnTiling attnTilingFor(int64_t group, int64_t hd, int64_t tiles) {
  AttnTiling t{std::min(kAttnTileWarps, group), 1};
  while (t.heads > 1 && (group % t.heads || attnTileSharedBytes(hd, t) > 48 * 1024)) --t.heads;
  t.rowTiles = kAttnTileWarps / t.heads;
  while (t.rowTiles > 1 && (tiles % t.rowTiles || attnTileSharedBytes(hd, t) > 48 * 1024))
    --t.rowTiles;
  return t;
}

AttnTiling attnTiling(const EntryPoint &ep) {
  const Operand *table = ep.arg("page_table");
  if (!table || table->rows() != 1) return {}; // rows of several sequences
  AttnTiling tiling;
  for (const Step &s : ep.steps) {
    const AttentionOp *op = s.tryAs<AttentionOp>();
    if (!op) continue;
    const int64_t hd = op->headDim, group = op->numHeads / std::max<int64_t>(op->numKvHeads, 1);
    if (op->result.rows() % kAttnTileRows || hd % 16 || hd > 128 ||
        op->query.kind != OperandKind::arena || op->query.offset % 32)
      return {};
    const AttnTiling t = attnTilingFor(group, hd, op->result.rows() / kAttnTileRows);
    if (tiling.heads && !(t == tiling)) return {}; // one shape for every layer
    tiling = t;
  }
  return tiling;
}

void lowerEntry(const Plan &plan, const EntryPoint &ep, const AttentionSplit &split,
                Specialisations &specs, CudaEntry &out) {
  EntryLowering(plan, ep, split, specs, out).lower();
}

} // namespace kvplan::cudagen
