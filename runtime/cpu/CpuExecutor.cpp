// The CPU executor: binds each step of the plan once (one Instr per op,
// addresses resolved), then runs the bound instructions over the thread
// pool.
#include "runtime/cpu/CpuExecutor.h"
#include "plan/PlanShapes.h"
#include "runtime/cpu/LinearDot.h"
#include "runtime/cpu/Isa.h"
#include "runtime/cpu/MoE.h"
#include "support/SystemResources.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>

namespace kvplan {

/// One bound step: pointers into the arena, the weights and the cache.
struct CpuExecutor::Instr {
  OpKind kind;
  int64_t step = 0;
  std::vector<char *> in, out;     // arena tensors, in field order
  int64_t rows = 0;                // static rows the kernel covers
  int64_t cols = 0, outCols = 0;   // row width of the first input and output
  cpu::TensorRef weight, bias;
  double eps = 0, scale = 0;
  int64_t headDim = 0, numHeads = 0, layer = 0;
  int64_t window = 0;              // attention's sliding window; 0: none
  bool windowPool = false;         // cache ops: the sliding layers' pool
  bool gelu = false;               // swiglu, fused_ffn: GELU (tanh) gates
  double softcap = 0;              // attention's scores, logits: Gemma 2's cap; 0: none
  const float *sinks = nullptr;    // attention's: gpt-oss's sink logits (f32); null: none
  const float *ropeTable = nullptr;
  cpu::LinearOutputs outputs;      // linear, logits
  int64_t outFeatures = 0;
  cpu::MoEWeights moe;             // moe_ffn
};

struct CpuExecutor::Program {
  const EntryPoint *entry = nullptr;
  std::vector<Instr> instrs;
  /// One cos/sin table per distinct set of RoPE frequencies, filled once
  /// per call for the call's positions.
  struct Rope {
    const double *freqs; // half frequencies (then half amplitudes where scaled)
    float *table;
    int64_t half;
    bool scaled;
  };
  std::vector<Rope> ropes;
  int32_t *tokens = nullptr, *positions = nullptr, *pageTable = nullptr;
  int32_t *windowPageTable = nullptr; // the sliding layers' pool's, where the plan has it
  const float *logits = nullptr;
  int64_t tableRows = 0;
  RunInputLimits limits; // checked before each call
};

namespace {

/// Resolves one entry point's steps against the arena, the weights and the
/// workspace.
class Binder {
public:
  Binder(const Plan &plan, const EntryPoint &ep, char *arena, const char *weights,
         uint64_t weightsBytes, const cpu::CacheGeometry &geometry)
      : plan(plan), ep(ep), arena(arena), weights(weights), weightsBytes(weightsBytes),
        geometry(geometry) {}
  // (Both pools share heads, head_dim and the page table's width; the
  // geometry checks below hold for either.)

  CpuExecutor::Instr bind(const Step &s, int64_t index) {
    step = &s;
    stepIndex = index;
    in = CpuExecutor::Instr{};
    in.kind = s.kind();
    in.step = index;
    forEachOperand(s, [&](const char *, const Operand &o, bool result) {
      if (o.kind != OperandKind::arena) return;
      if (isFloatDType(o.dtype) && o.dtype != DType::f32)
        fail("stores a tensor as " + std::string(dtypeName(o.dtype)) +
             "; the CPU runtime keeps activations in f32 (compile with --target cpu)");
      (result ? in.out : in.in).push_back(arena + o.offset);
    });
    std::visit([&](const auto &op) { (*this)(op); }, s.op);
    return in;
  }

  void operator()(const EmbeddingOp &op) {
    in.weight = weight(op.weight);
    in.scale = op.scale.value_or(1.0);
    rowsAndCols(op.tokens, op.result);
  }
  void operator()(const RMSNormOp &op) {
    in.weight = weight(op.weight);
    in.eps = op.eps;
    in.headDim = op.input.cols(); // the width one norm covers: the row
    rowsAndCols(op.input, op.result);
  }
  void operator()(const HeadRMSNormOp &op) {
    in.weight = weight(op.weight);
    in.eps = op.eps;
    in.headDim = op.headDim;
    rowsAndCols(op.input, op.result);
  }
  void operator()(const AddRMSNormOp &op) {
    in.weight = weight(op.weight);
    in.eps = op.eps;
    rowsAndCols(op.lhs, op.normed);
  }
  void operator()(const LinearOp &op) { bindLinear(op.weight, op.bias, op.input, op.results); }
  void operator()(const LogitsOp &op) {
    in.softcap = op.softcap.value_or(0.0);
    bindLinear(op.weight, std::nullopt, op.input, {op.result});
  }
  void operator()(const RopeOp &op) {
    entryPositions(op.positions);
    in.headDim = op.rope.headDim;
    rowsAndCols(op.input, op.result);
  }
  void operator()(const KVCacheWriteOp &op) {
    entryPositions(op.positions);
    const Operand *table = ep.arg(op.cache.window ? "window_page_table" : "page_table");
    if (!table || op.pageTable.value != table->value)
      fail("reads a page table other than its cache's");
    in.layer = op.layer;
    in.windowPool = op.cache.window;
    if (op.key.cols() != geometry.kvHeads * geometry.headDim)
      fail("writes keys of width " + std::to_string(op.key.cols()) + " to a cache of " +
           std::to_string(geometry.kvHeads) + " heads of " + std::to_string(geometry.headDim));
    in.rows = op.key.rows();
  }
  void operator()(const KVCacheReadOp &) {} // attention reads the cache in place
  void operator()(const AttentionOp &op) {
    if (op.mask != AttentionMask::cache || op.key.kind != OperandKind::kvView)
      fail("attends over fresh keys and values; the CPU runtime attends over the KV cache");
    if (op.headDim != geometry.headDim || op.numKvHeads != geometry.kvHeads ||
        op.numHeads % op.numKvHeads != 0)
      fail("has heads that disagree with the KV cache");
    in.numHeads = op.numHeads;
    in.scale = op.scale;
    in.window = op.window.value_or(0);
    in.softcap = op.softcap.value_or(0.0);
    if (op.sinks) in.sinks = static_cast<const float *>(weight(*op.sinks).data);
    in.layer = op.key.layer;
    in.windowPool = op.key.window;
    if (in.windowPool && !ep.arg("window_page_table"))
      fail("reads the sliding layers' cache, and the entry point has no page table for it");
    rowsAndCols(op.query, op.result);
  }
  void operator()(const FusedFFNOp &op) {
    in.gelu = op.gelu;
    rowsAndCols(op.input, op.result);
  }
  void operator()(const SwiGLUOp &op) {
    in.gelu = op.gelu;
    rowsAndCols(op.gate, op.result);
  }
  void operator()(const AddOp &op) { rowsAndCols(op.lhs, op.result); }
  void operator()(const MoEFFNOp &op) {
    rowsAndCols(op.input, op.result);
    const WeightEntry *router = plan.findWeight(op.router), *gate = plan.findWeight(op.gate);
    cpu::MoEWeights &m = in.moe;
    m.experts = router->shape[0];
    m.expertsPerToken = op.expertsPerToken;
    m.in = in.cols;
    m.ff = gate->shape[1];
    m.normTopK = op.normTopK;
    m.gelu = op.gelu;
    m.router = weight(op.router);
    m.gate = weight(op.gate);
    m.up = weight(op.up);
    m.down = weight(op.down);
    if (op.sharedGate) m.sharedGate = weight(*op.sharedGate);
    if (op.routerBias) m.routerBias = weight(*op.routerBias);
    if (op.gateBias) {
      m.gateBias = weight(*op.gateBias);
      m.upBias = weight(*op.upBias);
      m.downBias = weight(*op.downBias);
    }
    if (op.swigluLimit) {
      m.swigluLimit = float(*op.swigluLimit);
      m.swigluAlpha = float(*op.swigluAlpha);
    }
  }
  void operator()(const TakeLastOp &op) {
    entryPositions(op.positions);
    rowsAndCols(op.input, op.result);
    in.cols *= dtypeBytes(op.input.dtype); // it copies bytes
  }
  void operator()(const ConvertOp &) { targetOnly(); }
  void operator()(const RopeKVWriteOp &) { targetOnly(); }
  void operator()(const MatVecOp &) { targetOnly(); }
  void operator()(const MatVecRopeKVWriteOp &) { targetOnly(); }
  void operator()(const AllReduceOp &op) { rowsAndCols(op.input, op.result); }

private:
  [[noreturn]] void fail(const std::string &what) const {
    throw InputError("the plan cannot run on this CPU runtime: step " + std::to_string(stepIndex) +
                     " ('" + step->name() + "'" + (step->loc.empty() ? "" : " at " + step->loc) +
                     ") of '" + ep.name + "' " + what);
  }
  [[noreturn]] void targetOnly() const {
    fail("is an op of another target's pipeline; compile the model with --target cpu");
  }
  void rowsAndCols(const Operand &input, const Operand &result) {
    in.rows = result.rows();
    in.cols = input.cols();
    in.outCols = result.cols();
  }
  void entryPositions(const Operand &positions) const {
    if (positions.value != ep.arg("positions")->value)
      fail("reads positions other than the entry point's");
  }
  cpu::TensorRef weight(const std::string &name) const {
    const WeightEntry *w = plan.findWeight(name);
    if (w->offset + w->bytes > weightsBytes)
      fail("reads weight '" + name + "', which lies outside the weights");
    cpu::TensorRef ref{weights + w->offset, w->dtype};
    if (w->dtype == DType::mxfp4) {
      ref.exponents = reinterpret_cast<const uint8_t *>(weights + w->offset + w->scalesOffset);
      ref.groupSize = w->groupSize;
    } else if (w->groupSize) {
      ref.scales = reinterpret_cast<const float *>(weights + w->offset + w->scalesOffset);
      ref.groupSize = w->groupSize;
    }
    if (w->dtype == DType::i4)
      ref.mins = reinterpret_cast<const float *>(weights + w->offset + w->minsOffset);
    return ref;
  }
  void bindLinear(const std::string &name, const std::optional<std::string> &bias,
                  const Operand &input, const std::vector<Operand> &results) {
    in.weight = weight(name);
    if (bias) in.bias = weight(*bias);
    int64_t col = 0;
    for (const Operand &o : results) {
      in.outputs.data.push_back(reinterpret_cast<float *>(arena + o.offset));
      in.outputs.firstColumn.push_back(col);
      in.outputs.columns.push_back(o.cols());
      col += o.cols();
    }
    in.outFeatures = col;
    rowsAndCols(input, results.front());
    const WeightEntry *w = plan.findWeight(name);
    if (w->shape.size() != 2 || w->shape[0] != col || w->shape[1] != in.cols)
      fail("reads weight '" + name + "', which does not fit its rows");
    if (bias && plan.findWeight(*bias)->numElements() != col)
      fail("reads bias '" + *bias + "', which does not fit its outputs");
  }

  const Plan &plan;
  const EntryPoint &ep;
  char *arena;
  const char *weights;
  uint64_t weightsBytes;
  const cpu::CacheGeometry &geometry;
  const Step *step = nullptr;
  int64_t stepIndex = 0;
  CpuExecutor::Instr in;
};

} // namespace

/// A buffer starts 1 to 64 bytes into its allocation, the distance kept in
/// the byte before it.
void CpuExecutor::Free::operator()(void *p) const {
  char *aligned = static_cast<char *>(p);
  std::free(aligned - static_cast<unsigned char>(aligned[-1]));
}

CpuExecutor::Buffer CpuExecutor::allocate(const char *what, int64_t bytes) {
  // The billed bytes, zeroed and 64-byte aligned (every vector width; the
  // planner aligns offsets to 256). calloc zeroes where it must: memory
  // fresh from the system is zero already, so a large KV cache costs no
  // time at load and its pages are the system's until first written.
  if (bytes <= 0) return Buffer();
  char *raw = static_cast<char *>(std::calloc(1, size_t(bytes) + 64));
  if (!raw)
    throw InputError("out of memory: the plan's " + std::string(what) + " needs " +
                     std::to_string(bytes) + " bytes (kvplan inspect shows the whole bill)");
  const size_t skip = 64 - reinterpret_cast<uintptr_t>(raw) % 64;
  raw[skip - 1] = char(skip);
  Buffer b(raw + skip);
  allocated.push_back({what, bytes, Allocation::host});
  return b;
}

/// What the constructor allocates (the weights are the caller's, mapped or
/// packed already), checked against the memory available before any of it
/// is: every line and the fix named.
void CpuExecutor::checkMemory(const MemoryBill &bill) const {
  const uint64_t needed = uint64_t(bill.arenaAllocBytes) + uint64_t(bill.kvCacheBytes) +
                          uint64_t(bill.workspaceBytes);
  requireMemory(needed, "run " + plan_.model.name,
                "the plan's KV cache takes " + formatBytes(uint64_t(bill.kvCacheBytes)) +
                    ", its arena " + formatBytes(uint64_t(bill.arenaAllocBytes)) +
                    " and its workspace " + formatBytes(uint64_t(bill.workspaceBytes)) +
                    "; free memory, or compile with a smaller --max-seq, --max-batch or "
                    "--kv-pages, or within a --memory-budget (kvplan inspect shows the whole "
                    "bill)");
}

CpuExecutor::CpuExecutor(const Plan &plan, const char *weightsData, uint64_t size, int threads,
                         Collective *collective)
    : plan_(plan), weights(weightsData), weightsBytes(size), pool(threads), comm(collective) {
  validatePlan(plan_);
  if (plan_.ranks() > 1 && (!comm || comm->size() != plan_.ranks()))
    throw InputError("the plan is split between " + std::to_string(plan_.ranks()) +
                     " tensor-parallel ranks; run one process per rank (mpirun -np " +
                     std::to_string(plan_.ranks()) + ")" +
                     (comm ? ", not " + std::to_string(comm->size()) : std::string()));
  if (plan_.ranks() == 1) comm = nullptr;
  const MemoryBill bill = plan_.memoryBill();
  if (uint64_t(bill.weightsBlobBytes) > weightsBytes)
    throw InputError("the weights hold " + std::to_string(weightsBytes) +
                     " bytes but the plan's weight table needs " +
                     std::to_string(bill.weightsBlobBytes));
  layout = cpuWorkspace(plan_);
  checkMemory(bill);
  arena = allocate("arena", bill.arenaAllocBytes);
  cache = allocate("KV cache", bill.kvCacheBytes);
  workspace = allocate("workspace", layout.bytes());
  const KVCacheLayout &kv = plan_.kvCache, &w = plan_.windowCache;
  geometry = {cache.get(), kv.dtype, kv.pages, kv.pageSize, kv.kvHeads, kv.headDim,
              kv.pagesPerSequence};
  windowGeometry = {cache.get() + kv.bytes(), w.dtype, w.pages, w.pageSize, w.kvHeads,
                    w.headDim, w.pagesPerSequence};
  for (const CpuRopeTable &t : layout.ropeTables) {
    std::vector<double> f = ropeFrequencies(t.params);
    if (t.params.attentionFactor) { // the amplitudes follow the frequencies
      const std::vector<double> a = ropeAmplitudes(t.params);
      f.insert(f.end(), a.begin(), a.end());
    }
    std::memcpy(workspace.get() + t.freqsOffset, f.data(), f.size() * sizeof(double));
  }
  for (const auto &[name, ep] : plan_.entryPoints) {
    auto prog = std::make_unique<Program>();
    prog->entry = &ep;
    prog->tokens = reinterpret_cast<int32_t *>(arena.get() + ep.arg("tokens")->offset);
    prog->positions = reinterpret_cast<int32_t *>(arena.get() + ep.arg("positions")->offset);
    prog->pageTable = reinterpret_cast<int32_t *>(arena.get() + ep.arg("page_table")->offset);
    prog->tableRows = ep.arg("page_table")->rows();
    if (const Operand *t = ep.arg("window_page_table"))
      prog->windowPageTable = reinterpret_cast<int32_t *>(arena.get() + t->offset);
    prog->limits = runInputLimits(plan_, ep);
    prog->logits = reinterpret_cast<const float *>(arena.get() + ep.results[0].offset);
    for (const CpuRopeTable &t : layout.ropeTables)
      if (t.entry == name)
        prog->ropes.push_back({reinterpret_cast<const double *>(workspace.get() + t.freqsOffset),
                               reinterpret_cast<float *>(workspace.get() + t.tableOffset),
                               t.params.headDim / 2, t.params.attentionFactor.has_value()});
    Binder binder(plan_, ep, arena.get(), weights, weightsBytes, geometry);
    for (size_t i = 0; i < ep.steps.size(); ++i) {
      const Step &s = ep.steps[i];
      if (s.kind() == OpKind::kvCacheRead) continue; // attention reads the cache in place
      Instr in = binder.bind(s, int64_t(i));
      if (const RopeOp *rope = s.tryAs<RopeOp>())
        in.ropeTable = reinterpret_cast<const float *>(
            workspace.get() + layout.ropeTable(name, rope->rope)->tableOffset);
      prog->instrs.push_back(std::move(in));
    }
    programs[name] = std::move(prog);
  }
}

CpuExecutor::~CpuExecutor() = default;

std::vector<Allocation> CpuExecutor::allocations() const { return allocated; }

CpuExecutor::Program &CpuExecutor::program(const std::string &entry) {
  auto it = programs.find(entry);
  if (it == programs.end()) throw InputError("the plan has no entry point '" + entry + "'");
  return *it->second;
}

int32_t *CpuExecutor::tokens(const std::string &e) { return program(e).tokens; }
int32_t *CpuExecutor::positions(const std::string &e) { return program(e).positions; }
int32_t *CpuExecutor::pageTable(const std::string &e) { return program(e).pageTable; }
int32_t *CpuExecutor::windowPageTable(const std::string &e) {
  return program(e).windowPageTable;
}
const float *CpuExecutor::logits(const std::string &e) { return program(e).logits; }

std::string CpuExecutor::describe() const {
  std::string d = std::string("cpu (") + cpu::isaName(cpu::activeIsa()) + " kernels, " +
                  std::to_string(pool.size()) + " threads";
  if (comm)
    d += ", rank " + std::to_string(comm->rank()) + " of " + comm->describe();
  // int8, int4, mxfp4 and bf16 weights may meet rounded activations
  // (runtime/cpu/LinearDot.h); name what the matrices meet.
  for (const WeightEntry &w : plan_.weights)
    if (isGroupedDType(w.dtype) || w.dtype == DType::bf16)
      return d + ", " + cpu::activationsFor(plan_.settings) + " activations)";
  return d + ")";
}

void CpuExecutor::copyPage(int32_t from, int32_t to, bool windowPool) {
  const KVCacheLayout &kv = windowPool ? plan_.windowCache : plan_.kvCache;
  const cpu::CacheGeometry &g = windowPool ? windowGeometry : geometry;
  if (from < 0 || to < 0 || from >= kv.pages || to >= kv.pages || from == to)
    throw std::logic_error("copyPage: pages " + std::to_string(from) + " -> " + std::to_string(to));
  // A page of one layer's keys (or values) is contiguous: kv_heads x
  // page_size x head_dim elements.
  const int64_t bytes = kv.kvHeads * kv.pageSize * kv.headDim * dtypeBytes(kv.dtype);
  char *base = static_cast<char *>(g.base);
  for (int64_t layer = 0; layer < kv.layers; ++layer)
    for (int half = 0; half < 2; ++half)
      std::memcpy(base + g.offset(layer, half, to, 0, 0) * dtypeBytes(kv.dtype),
                  base + g.offset(layer, half, from, 0, 0) * dtypeBytes(kv.dtype),
                  size_t(bytes));
}

void CpuExecutor::run(const std::string &entry, int64_t activeRows) {
  runSteps(entry, activeRows, 0, int64_t(program(entry).entry->steps.size()) - 1);
  ++calls[entry];
}

void CpuExecutor::runSteps(const std::string &entry, int64_t activeRows, int64_t firstStep,
                           int64_t lastStep) {
  Program &prog = program(entry);
  activeRows = std::clamp<int64_t>(activeRows, 1, prog.entry->rows);
  if (firstStep == 0)
    checkRunInputs(prog.limits, *prog.entry, prog.tokens, prog.positions, prog.pageTable,
                   activeRows, prog.windowPageTable);
  for (const Program::Rope &t : prog.ropes)
    pool.parallelFor(activeRows, [&](int64_t b, int64_t e) {
      cpu::ropeTable(prog.positions, t.half, t.freqs, t.scaled ? t.freqs + t.half : nullptr,
                     t.table, b, e);
    });
  for (const Instr &in : prog.instrs)
    if (in.step >= firstStep && in.step <= lastStep) runInstr(prog, in, activeRows);
}

namespace {
/// A head's soft-capped logits (Gemma 2's), `n` of them at `x`; cap 0: none.
void softcapRows(ThreadPool &pool, float *x, int64_t n, double cap) {
  if (cap > 0)
    pool.parallelFor(n, [&](int64_t b, int64_t e) { cpu::softcap(x, float(cap), b, e); });
}
} // namespace

const cpu::CacheGeometry &CpuExecutor::cacheOf(const Instr &in) const {
  return in.windowPool ? windowGeometry : geometry;
}

const int32_t *CpuExecutor::tableOf(const Program &prog, const Instr &in) {
  return in.windowPool ? prog.windowPageTable : prog.pageTable;
}

void CpuExecutor::allReduce(const float *x, float *out, int64_t n) {
  // One thread talks to the other ranks; the pool waits (each rank's step
  // is the same program, so all arrive here together).
  const auto t0 = std::chrono::steady_clock::now();
  comm->allReduceSum(x, out, n);
  reduceSeconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  reduceBytes += n * int64_t(sizeof(float));
}

void CpuExecutor::runInstr(const Program &prog, const Instr &in, int64_t activeRows) {
  // Ops on pruned rows (the last token only) keep their static row count.
  const int64_t rows = in.rows == prog.entry->rows ? activeRows : in.rows;
  const float *x = reinterpret_cast<const float *>(in.in.empty() ? nullptr : in.in[0]);
  float *out = reinterpret_cast<float *>(in.out.empty() ? nullptr : in.out[0]);
  auto rowsParallel = [&](auto &&fn) { pool.parallelFor(rows, fn); };
  switch (in.kind) {
  case OpKind::embedding:
    return rowsParallel([&](int64_t b, int64_t e) {
      cpu::embedding(reinterpret_cast<const int32_t *>(in.in[0]), in.weight, in.outCols,
                     float(in.scale), out, b, e);
    });
  case OpKind::rmsNorm:
  case OpKind::headRmsNorm: // rows of head_dim (rms_norm: the whole row), each normalized alone
    return pool.parallelFor(rows * (in.cols / in.headDim), [&](int64_t b, int64_t e) {
      cpu::rmsNorm(x, in.weight, in.headDim, in.eps, out, b, e);
    });
  case OpKind::addRmsNorm:
    return rowsParallel([&](int64_t b, int64_t e) {
      cpu::addRmsNorm(x, reinterpret_cast<const float *>(in.in[1]), in.weight, in.cols, in.eps,
                      out, reinterpret_cast<float *>(in.out[1]), b, e);
    });
  case OpKind::linear:
  case OpKind::logits:
    // Threads split the output features: each weight row is read once.
    pool.parallelFor(in.outFeatures, [&](int64_t b, int64_t e) {
      cpu::linear(x, rows, in.cols, in.weight, in.bias, in.outputs, b, e);
    });
    return softcapRows(pool, out, rows * in.outFeatures, in.softcap);
  case OpKind::rope:
    return rowsParallel([&](int64_t b, int64_t e) {
      cpu::rope(x, prog.positions, in.cols, in.headDim, in.ropeTable, out, b, e);
    });
  case OpKind::kvCacheWrite:
    return rowsParallel([&](int64_t b, int64_t e) {
      cpu::kvCacheWrite(cacheOf(in), in.layer, x, reinterpret_cast<const float *>(in.in[1]),
                        prog.positions, tableOf(prog, in), prog.tableRows, b, e);
    });
  case OpKind::attention:
    return pool.parallelFor(rows * in.numHeads, [&](int64_t b, int64_t e) {
      cpu::cachedAttention(cacheOf(in), in.layer, x, prog.positions, tableOf(prog, in),
                           prog.tableRows,
                           {in.numHeads, in.scale, in.window, in.softcap, in.sinks}, out, b, e);
    });
  case OpKind::fusedFFN:
    return rowsParallel(
        [&](int64_t b, int64_t e) { cpu::fusedFFN(x, in.outCols, out, b, e, in.gelu); });
  case OpKind::swiglu:
  case OpKind::add: {
    const float *y = reinterpret_cast<const float *>(in.in[1]);
    return pool.parallelFor(rows * in.outCols, [&](int64_t b, int64_t e) {
      if (in.kind == OpKind::add) cpu::add(x, y, out, b, e);
      else cpu::swiglu(x, y, out, b, e, in.gelu);
    });
  }
  case OpKind::moeFfn:
    return cpu::moeFFN(pool, x, rows, in.moe,
                       in.in.size() > 1 ? reinterpret_cast<const float *>(in.in[1]) : nullptr,
                       workspace.get() + layout.ropeBytes, out);
  case OpKind::takeLast: {
    int64_t last = activeRows - 1;
    while (last > 0 && prog.positions[last] < 0) --last;
    std::memcpy(in.out[0], in.in[0] + last * in.cols, size_t(in.cols));
    return;
  }
  case OpKind::allReduce:
    return allReduce(x, out, rows * in.cols);
  case OpKind::kvCacheRead:
  case OpKind::convert:
  case OpKind::ropeKVWrite:
  case OpKind::matVec:
  case OpKind::matVecRopeKVWrite:
    return; // never bound
  }
}

} // namespace kvplan
