// The CPU executor: binds each step of the plan once, then runs the bound
// instructions over the thread pool.
#include "runtime/cpu/CpuExecutor.h"
#include "plan/Rope.h"
#include "runtime/cpu/Isa.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace kvplan {

enum class OpKind {
  embedding, rmsNorm, addRmsNorm, linear, logits, rope, kvCacheWrite, attention,
  fusedFFN, swiglu, add, takeLast,
};

/// One bound step: pointers into the arena, the weights and the cache.
struct CpuExecutor::Instr {
  OpKind kind;
  std::vector<char *> in, out;       // arena addresses
  std::vector<int64_t> inShape0, outShape0;
  cpu::TensorRef weight, bias;
  int64_t cols = 0;                  // row width of the (first) input
  int64_t outCols = 0;               // row width of the (first) output
  double eps = 0, scale = 0;
  int64_t headDim = 0, numHeads = 0, layer = 0;
  int64_t ropeTable = -1;            // rope: index into Program::ropeTables
  cpu::LinearOutputs outputs;        // linear, logits
  int64_t outFeatures = 0;
  // Cache access: positions and page table of the entry point.
  const int32_t *positions = nullptr;
  const int32_t *pageTable = nullptr;
  int64_t tableRows = 0;
};

struct CpuExecutor::Program {
  const EntryPoint *entry = nullptr;
  std::vector<Instr> instrs;
  /// One cos/sin table per distinct set of RoPE frequencies (all layers
  /// share one), filled once per call for the call's positions.
  struct RopeTable {
    int64_t headDim;
    std::vector<double> freqs;
    std::vector<float> table; // [rows][head_dim / 2][cos, sin]
  };
  std::vector<RopeTable> ropeTables;
  int32_t *tokens = nullptr, *positions = nullptr, *pageTable = nullptr;
  const float *logits = nullptr;
  std::vector<int64_t> stepOf; // plan step of each instruction
};

namespace {

[[noreturn]] void planError(const std::string &what) {
  throw InputError("the plan cannot run on this CPU runtime: " + what +
                   "; recompile the model with this kvplan");
}

int64_t attrInt(const Step &s, const char *key) {
  if (!s.attrs.contains(key) || !s.attrs.at(key).is_number_integer())
    planError("step '" + s.op + "' lacks the integer attribute '" + key + "'");
  return s.attrs.at(key).get<int64_t>();
}

double attrNumber(const Step &s, const char *key) {
  if (!s.attrs.contains(key) || !s.attrs.at(key).is_number())
    planError("step '" + s.op + "' lacks the numeric attribute '" + key + "'");
  return s.attrs.at(key).get<double>();
}

} // namespace

CpuExecutor::CpuExecutor(const Plan &plan, const char *weightsData, uint64_t size, int threads)
    : plan_(plan), weights(weightsData), weightsBytes(size), pool(threads) {
  MemoryBill bill = plan_.memoryBill();
  if (uint64_t(bill.weightsBlobBytes) > weightsBytes)
    throw InputError("the weights hold " + std::to_string(weightsBytes) +
                     " bytes but the plan's weight table needs " +
                     std::to_string(bill.weightsBlobBytes));
  // 64-byte alignment suits every vector width; the planner aligns offsets
  // to 256.
  uint64_t arenaBytes = std::max<uint64_t>(64, uint64_t(bill.arenaAllocBytes));
  arena = static_cast<char *>(std::aligned_alloc(64, (arenaBytes + 63) / 64 * 64));
  uint64_t cacheBytes = std::max<uint64_t>(64, uint64_t(bill.kvCacheBytes));
  cache = std::aligned_alloc(64, (cacheBytes + 63) / 64 * 64);
  if (!arena || !cache) {
    std::free(arena);
    std::free(cache);
    throw InputError("out of memory: the plan needs " + std::to_string(arenaBytes) +
                     " bytes of arena and " + std::to_string(cacheBytes) +
                     " bytes of KV cache");
  }
  std::memset(arena, 0, arenaBytes);
  std::memset(cache, 0, cacheBytes);
  const KVCacheLayout &kv = plan_.kvCache;
  geometry.base = cache;
  geometry.dtype = kv.dtype;
  geometry.pages = kv.pages;
  geometry.pageSize = kv.pageSize;
  geometry.kvHeads = kv.kvHeads;
  geometry.headDim = kv.headDim;
  geometry.pagesPerSequence = kv.pagesPerSequence;
  scratch.assign(size_t(pool.size()),
                 std::vector<float>(size_t(std::max<int64_t>(plan_.settings.maxSeqLen, 1))));
  for (const auto &[name, ep] : plan_.entryPoints)
    programs[name] = std::make_unique<Program>(bind(ep));
}

CpuExecutor::~CpuExecutor() {
  std::free(arena);
  std::free(cache);
}

CpuExecutor::Program CpuExecutor::bind(const EntryPoint &ep) {
  Program prog;
  prog.entry = &plan_.entryPoints.at(ep.name);
  const uint64_t arenaBytes = uint64_t(ep.arenaBytes);
  auto addr = [&](const Operand &o) -> char * {
    if (o.kind != OperandKind::arena)
      planError("expected an arena tensor");
    if (o.offset < 0 || uint64_t(o.offset) + uint64_t(o.bytes()) > arenaBytes)
      planError("a tensor lies outside the arena");
    return arena + o.offset;
  };
  auto weight = [&](const Step &s, const char *role, bool required) -> cpu::TensorRef {
    auto it = s.weights.find(role);
    if (it == s.weights.end()) {
      if (required) planError("step '" + s.op + "' names no " + role);
      return {};
    }
    const WeightEntry *w = plan_.findWeight(it->second);
    if (!w) planError("weight '" + it->second + "' is not in the weight table");
    if (w->offset + w->bytes > weightsBytes)
      planError("weight '" + w->name + "' lies outside the weights");
    cpu::TensorRef ref{weights + w->offset, w->dtype};
    if (w->dtype == DType::i8) {
      ref.scales = reinterpret_cast<const float *>(weights + w->offset + w->scalesOffset);
      ref.groupSize = w->groupSize;
    }
    return ref;
  };
  for (const Operand &a : ep.args) {
    if (a.name == "tokens") prog.tokens = reinterpret_cast<int32_t *>(addr(a));
    if (a.name == "positions") prog.positions = reinterpret_cast<int32_t *>(addr(a));
    if (a.name == "page_table") prog.pageTable = reinterpret_cast<int32_t *>(addr(a));
  }
  if (!prog.tokens || !prog.positions || !prog.pageTable)
    planError("entry point '" + ep.name + "' lacks tokens, positions or a page table");
  if (ep.results.size() != 1)
    planError("entry point '" + ep.name + "' must return the logits");
  prog.logits = reinterpret_cast<const float *>(addr(ep.results[0]));
  int64_t tableRows = 0;
  for (const Operand &a : ep.args)
    if (a.name == "page_table") tableRows = a.shape.at(0);

  for (size_t stepIndex = 0; stepIndex < ep.steps.size(); ++stepIndex) {
    const Step &s = ep.steps[stepIndex];
    if (s.op == "kv_cache_read")
      continue; // its views are read in place by the attention that follows
    Instr in;
    for (const Operand &o : s.inputs)
      if (o.kind == OperandKind::arena) {
        in.in.push_back(addr(o));
        in.inShape0.push_back(o.shape.at(0));
      }
    for (const Operand &o : s.outputs)
      if (o.kind == OperandKind::arena) {
        in.out.push_back(addr(o));
        in.outShape0.push_back(o.shape.at(0));
      }
    auto firstArena = [](const std::vector<Operand> &v) -> const Operand & {
      for (const Operand &o : v)
        if (o.kind == OperandKind::arena) return o;
      planError("a step has no tensor operand");
    };
    in.cols = firstArena(s.inputs).shape.back();
    if (!in.out.empty()) in.outCols = firstArena(s.outputs).shape.back();
    in.positions = prog.positions;
    in.pageTable = prog.pageTable;
    in.tableRows = tableRows;

    if (s.op == "embedding") {
      in.kind = OpKind::embedding;
      in.weight = weight(s, "weight", true);
    } else if (s.op == "rms_norm") {
      in.kind = OpKind::rmsNorm;
      in.weight = weight(s, "weight", true);
      in.eps = attrNumber(s, "eps");
    } else if (s.op == "add_rms_norm") {
      in.kind = OpKind::addRmsNorm;
      in.weight = weight(s, "weight", true);
      in.eps = attrNumber(s, "eps");
    } else if (s.op == "linear" || s.op == "logits") {
      in.kind = s.op == "linear" ? OpKind::linear : OpKind::logits;
      in.weight = weight(s, "weight", true);
      in.bias = weight(s, "bias", false);
      int64_t col = 0;
      for (const Operand &o : s.outputs) {
        in.outputs.data.push_back(reinterpret_cast<float *>(addr(o)));
        in.outputs.firstColumn.push_back(col);
        in.outputs.columns.push_back(o.shape.back());
        col += o.shape.back();
      }
      in.outFeatures = col;
      const WeightEntry *w = plan_.findWeight(s.weights.at("weight"));
      if (w->shape.size() != 2 || w->shape[0] != col || w->shape[1] != in.cols)
        planError("weight '" + w->name + "' does not fit its linear");
    } else if (s.op == "rope") {
      in.kind = OpKind::rope;
      in.headDim = attrInt(s, "head_dim");
      bool llama3 = s.attrs.contains("scaling");
      auto sc = [&](const char *k) { return llama3 ? s.attrs.at("scaling").at(k).get<double>() : 0; };
      std::vector<double> freqs = ropeFrequencies(
          in.headDim, attrNumber(s, "theta"), llama3, sc("factor"), sc("low_freq_factor"),
          sc("high_freq_factor"), sc("original_max_position_embeddings"));
      if (reinterpret_cast<int32_t *>(in.in[1]) != prog.positions)
        planError("rope must rotate by the entry point's positions");
      for (size_t t = 0; t < prog.ropeTables.size(); ++t)
        if (prog.ropeTables[t].headDim == in.headDim && prog.ropeTables[t].freqs == freqs)
          in.ropeTable = int64_t(t);
      if (in.ropeTable < 0) {
        in.ropeTable = int64_t(prog.ropeTables.size());
        prog.ropeTables.push_back(
            {in.headDim, freqs, std::vector<float>(size_t(ep.rows * in.headDim))});
      }
    } else if (s.op == "kv_cache_write") {
      in.kind = OpKind::kvCacheWrite;
      in.layer = attrInt(s, "layer");
    } else if (s.op == "attention") {
      if (!s.attrs.contains("mask") || s.attrs.at("mask") != "cache")
        planError("attention must read the KV cache (mask 'cache')");
      in.kind = OpKind::attention;
      in.numHeads = attrInt(s, "num_heads");
      in.scale = attrNumber(s, "scale");
      if (s.inputs.size() != 3 || s.inputs[1].kind != OperandKind::kvView)
        planError("attention must read KV-cache views");
      in.layer = s.inputs[1].layer;
      if (attrInt(s, "head_dim") != geometry.headDim ||
          attrInt(s, "num_kv_heads") != geometry.kvHeads)
        planError("attention heads disagree with the KV cache");
    } else if (s.op == "fused_ffn") {
      in.kind = OpKind::fusedFFN;
    } else if (s.op == "swiglu") {
      in.kind = OpKind::swiglu;
    } else if (s.op == "add") {
      in.kind = OpKind::add;
    } else if (s.op == "take_last") {
      in.kind = OpKind::takeLast;
    } else {
      planError("op '" + s.op + "' is not implemented");
    }
    // Tensor operands each kernel indexes (a damaged plan must not crash).
    static const std::map<OpKind, std::pair<size_t, size_t>> arity = {
        {OpKind::embedding, {1, 1}}, {OpKind::rmsNorm, {1, 1}},   {OpKind::addRmsNorm, {2, 2}},
        {OpKind::linear, {1, 1}},    {OpKind::logits, {1, 1}},    {OpKind::rope, {2, 1}},
        {OpKind::kvCacheWrite, {4, 0}}, {OpKind::attention, {1, 1}}, {OpKind::fusedFFN, {1, 1}},
        {OpKind::swiglu, {2, 1}},    {OpKind::add, {2, 1}},       {OpKind::takeLast, {2, 1}}};
    auto [nIn, nOut] = arity.at(in.kind);
    if (in.in.size() < nIn || in.out.size() < nOut)
      planError("step '" + s.op + "' has too few tensor operands");
    prog.instrs.push_back(std::move(in));
    prog.stepOf.push_back(int64_t(stepIndex));
  }
  return prog;
}

CpuExecutor::Program &CpuExecutor::program(const std::string &entry) {
  auto it = programs.find(entry);
  if (it == programs.end())
    throw InputError("the plan has no entry point '" + entry + "'");
  return *it->second;
}

const CpuExecutor::Program &CpuExecutor::program(const std::string &entry) const {
  return const_cast<CpuExecutor *>(this)->program(entry);
}

int32_t *CpuExecutor::tokens(const std::string &e) { return program(e).tokens; }
int32_t *CpuExecutor::positions(const std::string &e) { return program(e).positions; }
int32_t *CpuExecutor::pageTable(const std::string &e) { return program(e).pageTable; }
const float *CpuExecutor::logits(const std::string &e) { return program(e).logits; }

std::string CpuExecutor::describe() const {
  return std::string("cpu (") + cpu::isaName(cpu::activeIsa()) + " kernels, " +
         std::to_string(pool.size()) + " threads)";
}

void CpuExecutor::run(const std::string &entry, int64_t activeRows) {
  runSteps(entry, activeRows, 0, int64_t(program(entry).entry->steps.size()) - 1);
}

void CpuExecutor::runSteps(const std::string &entry, int64_t activeRows, int64_t firstStep,
                           int64_t lastStep) {
  Program &prog = program(entry);
  const int64_t staticRows = prog.entry->rows;
  activeRows = std::clamp<int64_t>(activeRows, 1, staticRows);
  // Ops on pruned rows (the last token only) keep their static row count.
  auto rowsOf = [&](int64_t shape0) { return shape0 == staticRows ? activeRows : shape0; };
  for (Program::RopeTable &t : prog.ropeTables)
    pool.parallelFor(activeRows, [&](int64_t b, int64_t e) {
      cpu::ropeTable(prog.positions, t.headDim / 2, t.freqs.data(), t.table.data(), b, e);
    });

  for (size_t instrIndex = 0; instrIndex < prog.instrs.size(); ++instrIndex) {
    if (prog.stepOf[instrIndex] < firstStep || prog.stepOf[instrIndex] > lastStep) continue;
    const Instr &in = prog.instrs[instrIndex];
    const float *x = reinterpret_cast<const float *>(in.in.empty() ? nullptr : in.in[0]);
    switch (in.kind) {
    case OpKind::embedding: {
      const int32_t *tok = reinterpret_cast<const int32_t *>(in.in[0]);
      float *out = reinterpret_cast<float *>(in.out[0]);
      int64_t rows = rowsOf(in.outShape0[0]);
      pool.parallelFor(rows, [&](int64_t b, int64_t e) {
        cpu::embedding(tok, in.weight, in.outCols, out, b, e);
      });
      break;
    }
    case OpKind::rmsNorm: {
      float *out = reinterpret_cast<float *>(in.out[0]);
      pool.parallelFor(rowsOf(in.outShape0[0]), [&](int64_t b, int64_t e) {
        cpu::rmsNorm(x, in.weight, in.cols, in.eps, out, b, e);
      });
      break;
    }
    case OpKind::addRmsNorm: {
      const float *y = reinterpret_cast<const float *>(in.in[1]);
      float *normed = reinterpret_cast<float *>(in.out[0]);
      float *residual = reinterpret_cast<float *>(in.out[1]);
      pool.parallelFor(rowsOf(in.outShape0[0]), [&](int64_t b, int64_t e) {
        cpu::addRmsNorm(x, y, in.weight, in.cols, in.eps, normed, residual, b, e);
      });
      break;
    }
    case OpKind::linear:
    case OpKind::logits: {
      int64_t rows = rowsOf(in.outShape0[0]);
      // Threads split the output features: each weight row is read once.
      pool.parallelFor(in.outFeatures, [&](int64_t b, int64_t e) {
        cpu::linear(x, rows, in.cols, in.weight, in.bias, in.outputs, b, e);
      });
      break;
    }
    case OpKind::rope: {
      const int32_t *pos = reinterpret_cast<const int32_t *>(in.in[1]);
      float *out = reinterpret_cast<float *>(in.out[0]);
      pool.parallelFor(rowsOf(in.outShape0[0]), [&](int64_t b, int64_t e) {
        cpu::rope(x, pos, in.cols, in.headDim, prog.ropeTables[size_t(in.ropeTable)].table.data(),
                  out, b, e);
      });
      break;
    }
    case OpKind::kvCacheWrite: {
      // inputs: keys, values, page table, positions (the cache is not arena)
      const float *k = reinterpret_cast<const float *>(in.in[0]);
      const float *v = reinterpret_cast<const float *>(in.in[1]);
      const int32_t *table = reinterpret_cast<const int32_t *>(in.in[2]);
      const int32_t *pos = reinterpret_cast<const int32_t *>(in.in[3]);
      pool.parallelFor(rowsOf(in.inShape0[0]), [&](int64_t b, int64_t e) {
        cpu::kvCacheWrite(geometry, in.layer, k, v, pos, table, in.tableRows, b, e);
      });
      break;
    }
    case OpKind::attention: {
      float *out = reinterpret_cast<float *>(in.out[0]);
      int64_t rows = rowsOf(in.outShape0[0]);
      pool.parallelForThreads(rows * in.numHeads, [&](int t, int64_t b, int64_t e) {
        cpu::cachedAttention(geometry, in.layer, x, in.positions, in.pageTable, in.tableRows,
                             in.numHeads, in.scale, out, scratch[size_t(t)].data(), b, e);
      });
      break;
    }
    case OpKind::fusedFFN: {
      float *out = reinterpret_cast<float *>(in.out[0]);
      pool.parallelFor(rowsOf(in.outShape0[0]), [&](int64_t b, int64_t e) {
        cpu::fusedFFN(x, in.outCols, out, b, e);
      });
      break;
    }
    case OpKind::swiglu:
    case OpKind::add: {
      const float *y = reinterpret_cast<const float *>(in.in[1]);
      float *out = reinterpret_cast<float *>(in.out[0]);
      int64_t n = rowsOf(in.outShape0[0]) * in.outCols;
      pool.parallelFor(n, [&](int64_t b, int64_t e) {
        if (in.kind == OpKind::add) cpu::add(x, y, out, b, e);
        else cpu::swiglu(x, y, out, b, e);
      });
      break;
    }
    case OpKind::takeLast: {
      const int32_t *pos = reinterpret_cast<const int32_t *>(in.in[1]);
      int64_t last = activeRows - 1;
      while (last > 0 && pos[last] < 0) --last;
      std::memcpy(in.out[0], x + last * in.cols, size_t(in.cols) * 4);
      break;
    }
    }
  }
}

} // namespace kvplan
