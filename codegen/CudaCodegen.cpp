// CUDA codegen: walks each entry point's steps, decides where every value
// lives and in what type, fuses RoPE with the KV-cache write, and emits one
// kernel wrapper per distinct specialisation plus the launch table.
#include "codegen/CudaCodegen.h"
#include "support/Align.h"
#include "plan/Rope.h"

#include <kvplan/Version.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <tuple>
#include <cerrno>
#include <set>
#include <sstream>
#include <sys/wait.h>
#include <unistd.h>

namespace fs = std::filesystem;

namespace kvplan {

namespace {

const char kKernelLibrary[] =
#include <kvplan/CudaKernelsSource.inc>
    ;

constexpr int64_t kAlign = 256;
constexpr int64_t kTile = 128;              // attention keys per tile = threads per block
constexpr int64_t kCublasWorkspace = 32 << 20; // what cuBLAS asks for on Hopper
constexpr int64_t kElementwiseBlock = 256;


const char *cudaType(DType t) {
  switch (t) {
  case DType::f32: return "float";
  case DType::bf16: return "__nv_bfloat16";
  case DType::f16: return "__half";
  default: break;
  }
  throw std::logic_error("no CUDA element type for " + std::string(dtypeName(t)));
}

[[noreturn]] void unsupported(const std::string &what) {
  throw InputError("the plan cannot be compiled for the cuda target: " + what);
}

/// A value of an entry point: output `out` of step `step`, or (step -1)
/// argument `out`.
struct ValueId {
  int64_t step = -1, out = 0;
  bool operator<(const ValueId &o) const { return std::tie(step, out) < std::tie(o.step, o.out); }
  bool operator==(const ValueId &o) const { return step == o.step && out == o.out; }
};
struct Use {
  int64_t step, input;
};

/// Which value each step input reads, who reads each value, and the type
/// each value is stored in.
struct Dataflow {
  std::vector<std::vector<ValueId>> inputValue; // [step][input], arena inputs only
  std::map<ValueId, std::vector<Use>> uses;
  std::map<ValueId, DType> storage;
};

bool overlaps(int64_t a, int64_t an, int64_t b, int64_t bn) { return a < b + bn && b < a + an; }

Dataflow analyse(const Plan &plan, const EntryPoint &ep) {
  Dataflow df;
  struct Live {
    int64_t offset, bytes;
    ValueId id;
  };
  std::vector<Live> live;
  for (size_t i = 0; i < ep.args.size(); ++i)
    if (ep.args[i].kind == OperandKind::arena)
      live.push_back({ep.args[i].offset, ep.args[i].bytes(), {-1, int64_t(i)}});
  df.inputValue.resize(ep.steps.size());
  for (size_t s = 0; s < ep.steps.size(); ++s) {
    const Step &st = ep.steps[s];
    df.inputValue[s].assign(st.inputs.size(), ValueId{-2, -2});
    for (size_t i = 0; i < st.inputs.size(); ++i) {
      const Operand &o = st.inputs[i];
      if (o.kind != OperandKind::arena) continue;
      auto it = std::find_if(live.rbegin(), live.rend(), [&](const Live &l) {
        return l.offset == o.offset && l.bytes == o.bytes();
      });
      if (it == live.rend())
        unsupported("step " + std::to_string(s) + " ('" + st.op + "') of '" + ep.name +
                    "' reads a tensor no earlier step wrote");
      df.inputValue[s][i] = it->id;
      df.uses[it->id].push_back({int64_t(s), int64_t(i)});
    }
    for (size_t k = 0; k < st.outputs.size(); ++k) {
      const Operand &o = st.outputs[k];
      if (o.kind != OperandKind::arena) continue;
      for (const Operand &in : st.inputs)
        if (in.kind == OperandKind::arena && overlaps(o.offset, o.bytes(), in.offset, in.bytes()))
          unsupported("step " + std::to_string(s) + " ('" + st.op +
                      "') writes over its own input; the cuda kernels need separate buffers");
      live.erase(std::remove_if(live.begin(), live.end(),
                                [&](const Live &l) {
                                  return overlaps(l.offset, l.bytes, o.offset, o.bytes());
                                }),
                 live.end());
      live.push_back({o.offset, o.bytes(), {int64_t(s), int64_t(k)}});
    }
  }

  // A linear's input is stored in its weights' type when every reader of
  // the value is such a linear (or take_last, whose output then is too) and
  // the producer can write that type; otherwise f32, and the linear converts.
  auto weightType = [&](const Step &st) { return plan.findWeight(st.weights.at("weight"))->dtype; };
  std::map<ValueId, DType> want; // wanted compact type
  for (int64_t s = int64_t(ep.steps.size()) - 1; s >= 0; --s) {
    const Step &st = ep.steps[size_t(s)];
    for (size_t k = 0; k < st.outputs.size(); ++k) {
      ValueId v{s, int64_t(k)};
      auto it = df.uses.find(v);
      if (it == df.uses.end() || it->second.empty()) continue;
      std::optional<DType> type;
      bool ok = true;
      for (const Use &u : it->second) {
        const Step &reader = ep.steps[size_t(u.step)];
        std::optional<DType> t;
        if ((reader.op == "linear" || reader.op == "logits") && u.input == 0) {
          t = weightType(reader);
        } else if (reader.op == "take_last" && u.input == 0) {
          auto w = want.find({u.step, 0});
          if (w != want.end()) t = w->second;
        }
        if (!t || *t == DType::f32 || (type && *type != *t)) {
          ok = false;
          break;
        }
        type = t;
      }
      if (ok && type) want[v] = *type;
    }
  }
  static const std::set<std::pair<std::string, int64_t>> canWriteCompact = {
      {"embedding", 0}, {"rms_norm", 0}, {"add_rms_norm", 0}, {"attention", 0},
      {"fused_ffn", 0}, {"swiglu", 0}};
  for (size_t i = 0; i < ep.args.size(); ++i) df.storage[{-1, int64_t(i)}] = ep.args[i].dtype;
  for (size_t s = 0; s < ep.steps.size(); ++s) {
    const Step &st = ep.steps[s];
    for (size_t k = 0; k < st.outputs.size(); ++k) {
      const ValueId v{int64_t(s), int64_t(k)};
      auto w = want.find(v);
      DType t = DType::f32;
      if (st.op == "take_last")
        t = df.storage.at(df.inputValue[s][0]); // it copies bytes: the input's type
      else if (w != want.end() && canWriteCompact.count({st.op, int64_t(k)}))
        t = w->second;
      df.storage[v] = t;
    }
  }
  return df;
}

struct RopeSpecKey {
  int64_t headDim;
  std::vector<double> freqs;
};

class Generator {
public:
  Generator(const Plan &plan) : plan(plan) {}
  CudaModule run(const std::vector<std::string> &archs);

private:
  struct EntryInfo {
    const EntryPoint *ep = nullptr;
    Dataflow df;
    int64_t splits = 1, span = kTile;
    int64_t tokens = -1, positions = -1, pageTable = -1; // arena offsets
    int64_t tableStride = 0;
  };

  std::string wrapper(const std::string &name, int64_t block, const std::string &body);
  int ropeTable(const Step &s);
  DeviceRef weightRef(const Step &s, const char *role, int64_t byteOffset = 0) const;
  DeviceRef arena(const Operand &o) const { return {DeviceBuffer::arena, o.offset}; }
  void emitEntry(EntryInfo &info, CudaEntry &out);

  const Plan &plan;
  std::map<std::string, std::string> wrappers; // name -> definition, sorted for a stable source
  std::vector<RopeSpecKey> ropeTables;
  int64_t partOffset = 0, mlOffset = 0, stagingOffset = 0;
  std::map<std::string, EntryInfo> infos;
};

std::string Generator::wrapper(const std::string &name, int64_t block, const std::string &body) {
  if (!wrappers.count(name))
    wrappers[name] = "extern \"C\" __global__ void __launch_bounds__(" + std::to_string(block) +
                     ") " + name + "(KvArgs a) { " + body + "; }\n";
  return name;
}

/// The RoPE step's inverse frequencies, exactly as the CPU runtime computes
/// them (runtime/Kernels.h).
std::vector<double> ropeFreqsOf(const Step &s) {
  const bool llama3 = s.attrs.contains("scaling");
  auto sc = [&](const char *k) { return llama3 ? s.attrs.at("scaling").at(k).get<double>() : 0.0; };
  return ropeFrequencies(s.attrs.at("head_dim").get<int64_t>(),
                              s.attrs.at("theta").get<double>(), llama3, sc("factor"),
                              sc("low_freq_factor"), sc("high_freq_factor"),
                              sc("original_max_position_embeddings"));
}

int Generator::ropeTable(const Step &s) {
  RopeSpecKey key{s.attrs.at("head_dim").get<int64_t>(), ropeFreqsOf(s)};
  for (size_t i = 0; i < ropeTables.size(); ++i)
    if (ropeTables[i].headDim == key.headDim && ropeTables[i].freqs == key.freqs) return int(i);
  ropeTables.push_back(std::move(key));
  return int(ropeTables.size() - 1);
}

DeviceRef Generator::weightRef(const Step &s, const char *role, int64_t byteOffset) const {
  const WeightEntry *w = plan.findWeight(s.weights.at(role));
  if (!w) unsupported("weight '" + s.weights.at(role) + "' is not in the weight table");
  return {DeviceBuffer::weights, int64_t(w->offset) + byteOffset};
}

std::string dims(std::initializer_list<int64_t> v) {
  std::string s;
  for (int64_t x : v) s += "_" + std::to_string(x);
  return s;
}

void Generator::emitEntry(EntryInfo &info, CudaEntry &out) {
  const EntryPoint &ep = *info.ep;
  const Dataflow &df = info.df;
  const KVCacheLayout &kv = plan.kvCache;
  const std::string kvType = cudaType(kv.dtype);
  auto storage = [&](const ValueId &v) { return df.storage.at(v); };
  auto outType = [&](size_t s, size_t k) { return storage({int64_t(s), int64_t(k)}); };
  auto follows = [&](const Operand &o) { return o.shape.at(0) == ep.rows; };
  auto kernel = [&](size_t first, size_t last, const std::string &name,
                    std::array<int64_t, 3> grid, int64_t block, int rowsDim, bool followsRows,
                    int64_t staticRows, std::vector<DeviceRef> ptrs, std::vector<int64_t> ints = {},
                    std::vector<double> reals = {}) {
    DeviceOp op;
    op.kind = DeviceOp::kernel;
    op.firstStep = int64_t(first);
    op.lastStep = int64_t(last);
    op.name = name;
    op.grid = grid;
    op.block = {block, 1, 1};
    op.rowsDim = followsRows ? rowsDim : -1;
    op.rowsFollowActive = followsRows;
    op.staticRows = staticRows;
    op.pointers = std::move(ptrs);
    op.ints = std::move(ints);
    op.reals = std::move(reals);
    out.ops.push_back(std::move(op));
  };
  for (size_t s = 0; s < ep.steps.size(); ++s) {
    const Step &st = ep.steps[s];
    std::vector<DType> in, outs;
    for (size_t i = 0; i < st.inputs.size(); ++i)
      in.push_back(st.inputs[i].kind == OperandKind::arena ? storage(df.inputValue[s][i])
                                                           : DType::f32);
    for (size_t k = 0; k < st.outputs.size(); ++k)
      outs.push_back(st.outputs[k].kind == OperandKind::arena ? outType(s, k) : DType::f32);
    out.inputTypes.push_back(std::move(in));
    out.outputTypes.push_back(std::move(outs));
  }
  const DeviceRef cache{DeviceBuffer::cache, 0};
  const DeviceRef positions{DeviceBuffer::arena, info.positions};
  const DeviceRef table{DeviceBuffer::arena, info.pageTable};

  for (size_t s = 0; s < ep.steps.size(); ++s) {
    const Step &st = ep.steps[s];
    const std::string &op = st.op;
    if (op == "kv_cache_read") continue; // attention reads the cache in place
    const Operand *in0 = nullptr;
    for (const Operand &o : st.inputs)
      if (o.kind == OperandKind::arena) {
        in0 = &o;
        break;
      }
    if (!in0) unsupported("step '" + op + "' has no tensor input");
    const Operand *out0 = in0;
    for (const Operand &o : st.outputs)
      if (o.kind == OperandKind::arena) {
        out0 = &o;
        break;
      }
    const int64_t rows = out0->shape.at(0);
    const bool fr = follows(*out0);
    const int64_t cols = in0->shape.back();

    if (op == "embedding" || op == "rms_norm" || op == "add_rms_norm") {
      const WeightEntry *w = plan.findWeight(st.weights.at("weight"));
      const std::string wt = cudaType(w->dtype), ot = cudaType(outType(s, 0));
      const int64_t c = st.outputs[0].shape.back();
      const int64_t block = std::clamp<int64_t>(alignUp(ceilDiv(c, 8), 32), 32, 1024);
      if (op == "embedding") {
        std::string name = wrapper("embedding_" + std::string(dtypeName(w->dtype)) + "_" +
                                       dtypeName(outType(s, 0)) + dims({c}),
                                   256,
                                   "kvplan::embedding<" + wt + ", " + ot + ", " +
                                       std::to_string(c) + ", 256>(a)");
        kernel(s, s, name, {rows, 1, 1}, 256, 0, fr, rows, {arena(*in0), weightRef(st, "weight"), arena(st.outputs[0])});
      } else if (op == "rms_norm") {
        std::string name = wrapper("rms_norm_" + std::string(dtypeName(w->dtype)) + "_" +
                                       dtypeName(outType(s, 0)) + dims({c}),
                                   block,
                                   "kvplan::rmsNorm<" + wt + ", " + ot + ", " + std::to_string(c) +
                                       ", " + std::to_string(block) + ">(a)");
        kernel(s, s, name, {rows, 1, 1}, block, 0, fr, rows,
               {arena(*in0), weightRef(st, "weight"), arena(st.outputs[0])}, {},
               {st.attrs.at("eps").get<double>()});
      } else {
        if (outType(s, 1) != DType::f32) unsupported("add_rms_norm's residual must be f32");
        std::string name = wrapper("add_rms_norm_" + std::string(dtypeName(w->dtype)) + "_" +
                                       dtypeName(outType(s, 0)) + dims({c}),
                                   block,
                                   "kvplan::addRmsNorm<" + wt + ", " + ot + ", " +
                                       std::to_string(c) + ", " + std::to_string(block) + ">(a)");
        kernel(s, s, name, {rows, 1, 1}, block, 0, fr, rows,
               {arena(st.inputs[0]), arena(st.inputs[1]), weightRef(st, "weight"),
                arena(st.outputs[0]), arena(st.outputs[1])},
               {}, {st.attrs.at("eps").get<double>()});
      }
      continue;
    }

    if (op == "linear" || op == "logits") {
      const WeightEntry *w = plan.findWeight(st.weights.at("weight"));
      if (!w || w->shape.size() != 2) unsupported("a linear's weight is not a matrix");
      const int64_t k = w->shape[1];
      if (k != cols) unsupported("weight '" + w->name + "' does not fit its linear");
      DType inType = storage(df.inputValue[s][0]);
      DeviceRef input = arena(*in0);
      if (inType != w->dtype) {
        if (inType != DType::f32) unsupported("a linear reads a tensor of another weight type");
        // The producer could not write the weights' type: convert first.
        std::string name = wrapper("convert_" + std::string(dtypeName(w->dtype)) + dims({k}),
                                   kElementwiseBlock,
                                   "kvplan::convert<" + std::string(cudaType(w->dtype)) + ", " +
                                       std::to_string(k) + ">(a)");
        input = {DeviceBuffer::work, stagingOffset};
        kernel(s, s, name, {ceilDiv(k, kElementwiseBlock), rows, 1}, kElementwiseBlock, 1, fr, rows,
               {arena(*in0), input});
        inType = w->dtype;
      }
      int64_t col = 0;
      const int64_t elem = dtypeBytes(w->dtype);
      // Outputs of one row that follow each other in the arena (the fused
      // QKV of a decode step at batch 1) are one [1, q + k + v] matrix: one
      // product instead of one per output.
      bool oneRow = st.outputs.size() > 1 && !st.weights.count("bias");
      for (size_t i = 0; oneRow && i < st.outputs.size(); ++i)
        oneRow = st.outputs[i].shape[0] == 1 &&
                 (i == 0 || st.outputs[i].offset ==
                                st.outputs[i - 1].offset + st.outputs[i - 1].bytes());
      if (oneRow) {
        DeviceOp g;
        g.kind = DeviceOp::gemm;
        g.firstStep = g.lastStep = int64_t(s);
        g.weight = weightRef(st, "weight");
        g.input = input;
        g.output = arena(st.outputs[0]);
        g.m = g.ldc = w->shape[0];
        g.k = g.lda = g.ldb = k;
        g.weightType = w->dtype;
        g.inputType = inType;
        g.staticRows = 1;
        g.rowsFollowActive = follows(st.outputs[0]);
        out.ops.push_back(g);
        continue;
      }
      for (const Operand &o : st.outputs) {
        const int64_t m = o.shape.back();
        DeviceOp g;
        g.kind = DeviceOp::gemm;
        g.firstStep = g.lastStep = int64_t(s);
        g.weight = weightRef(st, "weight", col * k * elem);
        g.input = input;
        g.output = arena(o);
        g.m = m;
        g.k = k;
        g.lda = k;
        g.ldb = k;
        g.ldc = m;
        g.weightType = w->dtype;
        g.inputType = inType;
        g.staticRows = o.shape[0];
        g.rowsFollowActive = follows(o);
        out.ops.push_back(g);
        if (st.weights.count("bias")) {
          const WeightEntry *b = plan.findWeight(st.weights.at("bias"));
          std::string name = wrapper("bias_add_" + std::string(dtypeName(b->dtype)) + dims({m}),
                                     kElementwiseBlock,
                                     "kvplan::biasAdd<" + std::string(cudaType(b->dtype)) + ", " +
                                         std::to_string(m) + ">(a)");
          kernel(s, s, name, {ceilDiv(m, kElementwiseBlock), o.shape[0], 1}, kElementwiseBlock, 1,
                 follows(o), o.shape[0], {arena(o), weightRef(st, "bias", col * dtypeBytes(b->dtype))});
        }
        col += m;
      }
      continue;
    }

    if (op == "rope") {
      const int64_t hd = st.attrs.at("head_dim").get<int64_t>();
      const int ropeIdx = ropeTable(st);
      // RoPE on q, RoPE on k and the cache write of k and v: one kernel.
      if (s + 2 < ep.steps.size() && ep.steps[s + 1].op == "rope" &&
          ep.steps[s + 2].op == "kv_cache_write" && ropeTable(ep.steps[s + 1]) == ropeIdx &&
          ep.steps[s + 1].attrs.at("head_dim").get<int64_t>() == hd) {
        const ValueId kRoped{int64_t(s + 1), 0};
        const Step &write = ep.steps[s + 2];
        auto uses = df.uses.find(kRoped);
        if (df.inputValue[s + 2][0] == kRoped && uses != df.uses.end() &&
            uses->second.size() == 1 && st.inputs[1].offset == info.positions &&
            ep.steps[s + 1].inputs[1].offset == info.positions &&
            write.inputs.size() >= 2 && write.inputs[1].kind == OperandKind::arena) {
          const int64_t qcols = st.outputs[0].shape.back();
          if (ep.steps[s + 1].outputs[0].shape.back() != kv.kvHeads * kv.headDim || hd != kv.headDim)
            unsupported("RoPE'd keys do not match the KV cache");
          std::string name = wrapper(
              "rope_qkv_write_" + std::string(dtypeName(kv.dtype)) + "_r" + std::to_string(ropeIdx) +
                  dims({qcols, kv.kvHeads, hd, kv.pageSize, kv.pages}),
              128,
              "kvplan::ropeQkvWrite<" + kvType + ", " + std::to_string(qcols) + ", " +
                  std::to_string(kv.kvHeads) + ", " + std::to_string(hd) + ", " +
                  std::to_string(kv.pageSize) + ", " + std::to_string(kv.pages) + "LL>(a, kvplan_rope_" +
                  std::to_string(ropeIdx) + ")");
          kernel(s, s + 2, name, {rows, 1, 1}, 128, 0, fr, rows,
                 {arena(st.inputs[0]), arena(ep.steps[s + 1].inputs[0]), arena(write.inputs[1]),
                  arena(st.outputs[0]), cache, positions, table},
                 {write.attrs.at("layer").get<int64_t>(), info.tableStride});
          s += 2;
          continue;
        }
      }
      if (st.inputs[1].offset != info.positions) unsupported("rope must rotate by the entry's positions");
      const int64_t c = st.outputs[0].shape.back();
      std::string name = wrapper("rope_r" + std::to_string(ropeIdx) + dims({c, hd}), 128,
                                 "kvplan::rope<" + std::to_string(c) + ", " + std::to_string(hd) +
                                     ">(a, kvplan_rope_" + std::to_string(ropeIdx) + ")");
      kernel(s, s, name, {rows, 1, 1}, 128, 0, fr, rows, {arena(*in0), positions, arena(st.outputs[0])});
      continue;
    }

    if (op == "kv_cache_write") {
      std::string name =
          wrapper("kv_write_" + std::string(dtypeName(kv.dtype)) +
                      dims({kv.kvHeads, kv.headDim, kv.pageSize, kv.pages}),
                  128,
                  "kvplan::kvWrite<" + kvType + ", " + std::to_string(kv.kvHeads) + ", " +
                      std::to_string(kv.headDim) + ", " + std::to_string(kv.pageSize) + ", " +
                      std::to_string(kv.pages) + "LL>(a)");
      kernel(s, s, name, {rows, 1, 1}, 128, 0, fr, rows,
             {arena(st.inputs[0]), arena(st.inputs[1]), cache, positions, table},
             {st.attrs.at("layer").get<int64_t>(), info.tableStride});
      continue;
    }

    if (op == "attention") {
      const int64_t h = st.attrs.at("num_heads").get<int64_t>();
      const int64_t kvh = st.attrs.at("num_kv_heads").get<int64_t>();
      const int64_t hd = st.attrs.at("head_dim").get<int64_t>();
      if (kvh != kv.kvHeads || hd != kv.headDim || h % kvh)
        unsupported("attention heads disagree with the KV cache");
      if (st.inputs.size() != 3 || st.inputs[1].kind != OperandKind::kvView)
        unsupported("attention must read KV-cache views");
      const int64_t layer = st.inputs[1].layer;
      const std::string ot = cudaType(outType(s, 0));
      std::string partial = wrapper(
          "attn_partial_" + std::string(dtypeName(kv.dtype)) +
              dims({h, kvh, hd, kv.pageSize, kv.pages, info.span}),
          kTile,
          "kvplan::attnPartial<" + kvType + ", " + std::to_string(h) + ", " + std::to_string(kvh) +
              ", " + std::to_string(hd) + ", " + std::to_string(kv.pageSize) + ", " +
              std::to_string(kv.pages) + "LL, " + std::to_string(kTile) + ", " +
              std::to_string(info.span) + ">(a)");
      kernel(s, s, partial, {kvh, rows, info.splits}, kTile, 1, fr, rows,
             {arena(*in0), cache, positions, table, {DeviceBuffer::work, partOffset},
              {DeviceBuffer::work, mlOffset}},
             {layer, info.tableStride, info.splits}, {st.attrs.at("scale").get<double>()});
      std::string combine = wrapper(
          "attn_combine_" + std::string(dtypeName(outType(s, 0))) + dims({h, hd, info.span}), hd,
          "kvplan::attnCombine<" + ot + ", " + std::to_string(h) + ", " + std::to_string(hd) + ", " +
              std::to_string(info.span) + ">(a)");
      kernel(s, s, combine, {h, rows, 1}, hd, 1, fr, rows,
             {{DeviceBuffer::work, partOffset}, {DeviceBuffer::work, mlOffset}, positions,
              arena(st.outputs[0])},
             {info.splits});
      continue;
    }

    const int64_t oc = st.outputs.empty() ? 0 : st.outputs[0].shape.back();
    const std::string ot = st.outputs.empty() ? "" : cudaType(outType(s, 0));
    if (op == "fused_ffn") {
      std::string name = wrapper("fused_ffn_" + std::string(dtypeName(outType(s, 0))) + dims({oc}),
                                 kElementwiseBlock,
                                 "kvplan::fusedFfn<" + ot + ", " + std::to_string(oc) + ">(a)");
      kernel(s, s, name, {ceilDiv(oc, kElementwiseBlock), rows, 1}, kElementwiseBlock, 1, fr, rows,
             {arena(*in0), arena(st.outputs[0])});
    } else if (op == "swiglu" || op == "add") {
      const bool sw = op == "swiglu";
      std::string name = wrapper(op + "_" + dtypeName(outType(s, 0)) + dims({oc}), kElementwiseBlock,
                                 "kvplan::binary<" + ot + ", " + std::to_string(oc) + ", " +
                                     (sw ? "true" : "false") + ">(a)");
      kernel(s, s, name, {ceilDiv(oc, kElementwiseBlock), rows, 1}, kElementwiseBlock, 1, fr, rows,
             {arena(st.inputs[0]), arena(st.inputs[1]), arena(st.outputs[0])});
    } else if (op == "take_last") {
      const DType t = storage(df.inputValue[s][0]);
      std::string name = wrapper("take_last_" + std::string(dtypeName(t)) + dims({cols}), 256,
                                 "kvplan::takeLast<" + std::string(cudaType(t)) + ", " +
                                     std::to_string(cols) + ">(a)");
      // One block; i[0] is the input's row count, which follows the active rows.
      kernel(s, s, name, {1, 1, 1}, 256, -1, follows(*in0), in0->shape[0],
             {arena(*in0), positions, arena(st.outputs[0])});
    } else {
      unsupported("op '" + op + "' has no CUDA kernel");
    }
  }

  // Sampling from the logits the entry point returns.
  const Operand &logits = ep.results.at(0);
  const int64_t vocab = logits.shape.back();
  std::string name = wrapper("sample" + dims({vocab}), 1024,
                             "kvplan::sample<" + std::to_string(vocab) + ", 1024>(a)");
  DeviceOp sop;
  sop.kind = DeviceOp::kernel;
  sop.firstStep = sop.lastStep = int64_t(ep.steps.size());
  sop.name = name;
  sop.grid = {logits.shape[0], 1, 1};
  sop.block = {1024, 1, 1};
  sop.rowsFollowActive = follows(logits);
  sop.staticRows = logits.shape[0];
  sop.rowsDim = sop.rowsFollowActive ? 0 : -1;
  sop.pointers = {arena(logits), {DeviceBuffer::work, out.samplingParamsOffset},
                  {DeviceBuffer::work, out.sampledOffset}};
  out.sample = sop;
}

CudaModule Generator::run(const std::vector<std::string> &archs) {
  if (plan.settings.target != Target::cuda)
    unsupported("it was compiled for target '" + std::string(targetName(plan.settings.target)) + "'");
  for (const WeightEntry &w : plan.weights)
    if (!isFloatDType(w.dtype))
      unsupported("weight '" + w.name + "' is " + dtypeName(w.dtype) +
                  "; the cuda target takes f32, bf16 or f16 weights (compile with --dtype bf16)");
  const KVCacheLayout &kv = plan.kvCache;
  const int64_t heads = plan.model.numHeads, group = heads / std::max<int64_t>(kv.kvHeads, 1);
  const int64_t smem = (group * kv.headDim + group * kTile) * 4 + kTile * 8;
  if (smem > 48 * 1024 || kv.headDim > 1024 || kv.headDim % 2)
    unsupported(std::to_string(group) + " query heads per KV head of head_dim " +
                std::to_string(kv.headDim) + " exceed the attention kernel's shared memory");

  CudaModule mod;
  CudaProgram &prog = mod.program;
  prog.archs = archs;
  // Per entry point: dataflow, the attention split and the buffers it needs.
  int64_t partBytes = 0, mlBytes = 0, stagingBytes = 0;
  for (const auto &[name, ep] : plan.entryPoints) {
    EntryInfo info;
    info.ep = &ep;
    info.df = analyse(plan, ep);
    for (const Operand &a : ep.args) {
      if (a.name == "tokens") info.tokens = a.offset;
      if (a.name == "positions") info.positions = a.offset;
      if (a.name == "page_table") {
        info.pageTable = a.offset;
        info.tableStride = a.shape.at(0) == 1 ? 0 : a.shape.at(1);
      }
    }
    if (info.tokens < 0 || info.positions < 0 || info.pageTable < 0)
      unsupported("entry point '" + name + "' lacks tokens, positions or a page table");
    // Enough blocks to fill the GPU: rows x kv heads x splits near 2048.
    const int64_t maxSeq = plan.settings.maxSeqLen;
    const int64_t tiles = ceilDiv(maxSeq, kTile);
    const int64_t want = std::max<int64_t>(1, 2048 / std::max<int64_t>(1, ep.rows * kv.kvHeads));
    const int64_t splits0 = std::clamp<int64_t>(want, 1, tiles);
    info.span = alignUp(ceilDiv(maxSeq, splits0), kTile);
    info.splits = ceilDiv(maxSeq, info.span);
    partBytes = std::max(partBytes, ep.rows * heads * info.splits * kv.headDim * 4);
    mlBytes = std::max(mlBytes, ep.rows * heads * info.splits * 2 * 4);
    for (size_t s = 0; s < ep.steps.size(); ++s) {
      const Step &st = ep.steps[s];
      if ((st.op == "linear" || st.op == "logits") &&
          info.df.storage.at(info.df.inputValue[s][0]) !=
              plan.findWeight(st.weights.at("weight"))->dtype)
        stagingBytes = std::max(stagingBytes, st.inputs[0].numElements() * 2);
    }
    infos[name] = std::move(info);
  }
  int64_t top = 0;
  auto take = [&](int64_t bytes) {
    const int64_t off = alignUp(top, kAlign);
    top = off + std::max<int64_t>(bytes, 1);
    return off;
  };
  partOffset = take(partBytes);
  mlOffset = take(mlBytes);
  stagingOffset = take(stagingBytes);
  for (auto &[name, info] : infos) {
    CudaEntry &e = prog.entries[name];
    const int64_t rows = info.ep->results.at(0).shape.at(0);
    e.samplingParamsOffset = take(rows * int64_t(sizeof(DeviceSamplingParams)));
    e.sampledOffset = take(rows * 4);
  }
  prog.cublasWorkspaceOffset = take(kCublasWorkspace);
  prog.cublasWorkspaceBytes = kCublasWorkspace;
  prog.workspaceBytes = alignUp(top, kAlign);
  for (auto &[name, info] : infos) emitEntry(info, prog.entries[name]);

  // The source: a header naming what it was generated for, the kernel
  // templates, the RoPE frequencies and one wrapper per specialisation.
  std::ostringstream src;
  const ModelSpec &m = plan.model;
  src << "// Generated by kvplan " << KVPLAN_VERSION << " (" << KVPLAN_GIT_HASH << ") for "
      << m.name << ".\n// hidden " << m.hiddenSize << ", intermediate " << m.intermediateSize
      << ", layers " << m.numLayers << ", heads " << m.numHeads << " (kv " << m.numKvHeads
      << "), head_dim " << m.headDim << ", vocab " << m.vocabSize << "; weights "
      << dtypeName(plan.settings.weightDtype) << ", KV cache " << dtypeName(kv.dtype) << " ("
      << kv.pages << " pages of " << kv.pageSize << "), max batch " << plan.settings.maxBatch
      << ", prefill chunk " << plan.settings.prefillChunk << ", context "
      << plan.settings.maxSeqLen << ".\n// Compiled with: nvcc -cubin -O3 -std=c++17 -arch=ARCH, for each ARCH of";
  for (const std::string &a : archs) src << " " << a;
  src << "\n\n"
      << kKernelLibrary << "\n";
  for (size_t t = 0; t < ropeTables.size(); ++t) {
    src << "__constant__ double kvplan_rope_" << t << "[" << ropeTables[t].freqs.size() << "] = {";
    for (size_t i = 0; i < ropeTables[t].freqs.size(); ++i) {
      char buf[40];
      std::snprintf(buf, sizeof buf, "%.17g", ropeTables[t].freqs[i]);
      src << (i ? ", " : "") << buf;
    }
    src << "};\n";
  }
  src << "\n";
  for (const auto &[name, def] : wrappers) src << def;
  mod.source = src.str();
  return mod;
}

std::string readFile(const fs::path &p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

} // namespace

CudaModule generateCuda(const Plan &plan, const std::vector<std::string> &archs) {
  try {
    return Generator(plan).run(archs);
  } catch (const nlohmann::json::exception &e) {
    unsupported(std::string("a step lacks an attribute: ") + e.what());
  }
}

std::vector<std::string> parseCudaArchs(const std::string &list) {
  std::vector<std::string> out;
  std::stringstream ss(list);
  std::string a;
  while (std::getline(ss, a, ',')) {
    bool ok = a.size() >= 5 && a.compare(0, 3, "sm_") == 0;
    size_t i = 3;
    while (ok && i < a.size() && std::isdigit(static_cast<unsigned char>(a[i]))) ++i;
    ok = ok && i > 3 && (i == a.size() || (i + 1 == a.size() && a[i] == 'a'));
    if (!ok || std::stoi(a.substr(3, i - 3)) < 80)
      throw InputError("--arch: '" + a +
                       "' is not a CUDA architecture kvplan builds for; give sm_NN or sm_NNa with "
                       "NN >= 80 (bf16 needs Ampere), e.g. --arch sm_80,sm_90a");
    if (std::find(out.begin(), out.end(), a) == out.end()) out.push_back(a);
  }
  if (out.empty()) throw InputError("--arch: no architecture given (e.g. --arch sm_90a)");
  return out;
}

std::string findNvcc() {
  auto executable = [](const fs::path &p) { return ::access(p.c_str(), X_OK) == 0; };
  if (const char *home = std::getenv("CUDA_HOME"); home && *home) {
    fs::path p = fs::path(home) / "bin" / "nvcc";
    if (executable(p)) return p.string();
    throw InputError("CUDA_HOME is " + std::string(home) +
                     " but it holds no bin/nvcc; point CUDA_HOME at the CUDA toolkit");
  }
  if (const char *path = std::getenv("PATH")) {
    std::stringstream ss(path);
    std::string dir;
    while (std::getline(ss, dir, ':'))
      if (!dir.empty() && executable(fs::path(dir) / "nvcc")) return (fs::path(dir) / "nvcc").string();
  }
  if (executable("/usr/local/cuda/bin/nvcc")) return "/usr/local/cuda/bin/nvcc";
  throw InputError("nvcc not found: the cuda target compiles its kernels when the model is "
                   "compiled; install the CUDA toolkit and set CUDA_HOME (or put nvcc on PATH)");
}

std::string compileCubin(const std::string &nvcc, const std::string &source,
                         const std::string &arch) {
  char tmpl[] = "/tmp/kvplan-nvcc-XXXXXX";
  if (!::mkdtemp(tmpl)) throw NvccError("cannot create a temporary folder for nvcc");
  const fs::path dir(tmpl);
  struct Cleanup {
    fs::path d;
    ~Cleanup() {
      std::error_code ec;
      fs::remove_all(d, ec);
    }
  } cleanup{dir};
  {
    std::ofstream f(dir / "kernels.cu", std::ios::binary);
    f << source;
    if (!f) throw NvccError("cannot write the generated source to " + dir.string());
  }
  const fs::path cubin = dir / ("kernels." + arch + ".cubin"), log = dir / "nvcc.log";
  pid_t pid = ::fork();
  if (pid < 0) throw NvccError("cannot start nvcc");
  if (pid == 0) {
    FILE *l = std::freopen(log.c_str(), "w", stderr);
    if (l) ::dup2(::fileno(stderr), 1);
    const std::string archFlag = "-arch=" + arch, out = cubin.string(), in = (dir / "kernels.cu").string();
    ::execl(nvcc.c_str(), nvcc.c_str(), "-cubin", "-O3", "-std=c++17", archFlag.c_str(), "-o",
            out.c_str(), in.c_str(), static_cast<char *>(nullptr));
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw NvccError(nvcc + " failed on the generated source for " + arch + ":\n" + readFile(log));
  std::string bytes = readFile(cubin);
  if (cubinSmVersion(bytes) < 0)
    throw NvccError(nvcc + " wrote no CUDA ELF cubin for " + arch);
  return bytes;
}

int cubinSmVersion(const std::string &b) {
  // ELF64, e_machine EM_CUDA (190); the SM version sits in bits 8..15 of
  // e_flags in the ABI nvcc 12 and later write.
  if (b.size() < 64 || std::memcmp(b.data(), "\x7f" "ELF", 4) != 0 || b[4] != 2) return -1;
  uint16_t machine;
  uint32_t flags;
  std::memcpy(&machine, b.data() + 18, 2);
  std::memcpy(&flags, b.data() + 48, 4);
  if (machine != 190) return -1;
  return int((flags >> 8) & 0xff);
}

} // namespace kvplan
