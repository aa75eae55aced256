// The plan's weight layout and memory bill.
#include "plan/Plan.h"
#include "plan/CudaProgram.h"
#include "support/Align.h"
#include "support/CheckedMath.h"

#include <algorithm>

namespace kvplan {

namespace {

/// The elements of a shape, refusing a product past 64 bits.
int64_t elementsOf(const std::vector<int64_t> &shape) {
  int64_t n = 1;
  for (int64_t d : shape)
    n = checkedMul(n, d,
                   [&] { return "the elements of a " + nlohmann::json(shape).dump() + " weight"; });
  return n;
}

} // namespace

int64_t WeightEntry::numElements() const { return elementsOf(shape); }

int64_t KVCacheLayout::bytes() const {
  int64_t b = 2 * dtypeBytes(dtype);
  for (int64_t d : {layers, pages, pageSize, kvHeads, headDim})
    b = checkedMul(b, d, [] { return "the bytes of the KV cache"; });
  return b;
}

int64_t WeightEntry::rowBytes() const {
  const int64_t cols = shape.back();
  switch (dtype) {
  case DType::i8: return cols + ceilDiv(cols, kInt8Group) * 4;
  case DType::i4: return ceilDiv(cols, kInt4Group) * (16 + 4 + 4);
  case DType::mxfp4: return ceilDiv(cols, kMxfp4Group) * (16 + 1);
  default: return cols * dtypeBytes(dtype);
  }
}

WeightLayout weightLayout(const std::vector<int64_t> &shape, DType dtype) {
  const int64_t n = elementsOf(shape);
  WeightLayout l;
  if (!isGroupedDType(dtype)) {
    l.bytes = uint64_t(checkedMul(n, dtypeBytes(dtype), [] { return "the bytes of a weight"; }));
    return l;
  }
  const int64_t cols = shape.back(), rows = n / cols;
  l.groupSize = dtypeGroup(dtype);
  const uint64_t groups = uint64_t(rows * ceilDiv(cols, l.groupSize));
  // int8: a byte an element; int4 and mxfp4: 16 bytes of codes a group.
  const uint64_t data = dtype == DType::i8 ? uint64_t(n)
                                           : uint64_t(checkedMul(int64_t(groups), 16, [] {
                                               return "the bytes of a 4-bit weight";
                                             }));
  l.scalesOffset = alignUp(data, kWeightAlignment);
  // mxfp4's scales are E8M0 bytes; int8's and int4's f32.
  l.bytes = l.scalesOffset + groups * (dtype == DType::mxfp4 ? 1 : 4);
  if (dtype == DType::i4) {
    l.minsOffset = alignUp(l.bytes, kWeightAlignment);
    l.bytes = l.minsOffset + groups * 4;
  }
  return l;
}

std::string weightsSectionName(int64_t rank) {
  return rank == 0 ? "weights" : "weights." + std::to_string(rank);
}

void Plan::assignWeightOffsets() {
  uint64_t off = 0;
  for (WeightEntry &w : weights) {
    off = alignUp(off, kWeightAlignment);
    w.offset = off;
    const WeightLayout l = weightLayout(w.shape, w.dtype);
    w.bytes = l.bytes;
    w.groupSize = l.groupSize;
    w.scalesOffset = l.scalesOffset;
    w.minsOffset = l.minsOffset;
    off += w.bytes;
  }
}

const WeightEntry *Plan::findWeight(const std::string &name) const {
  for (const WeightEntry &w : weights)
    if (w.name == name) return &w;
  return nullptr;
}

const CpuRopeTable *CpuWorkspace::ropeTable(const std::string &entry,
                                            const RopeParams &params) const {
  for (const CpuRopeTable &t : ropeTables)
    if (t.entry == entry && t.params == params) return &t;
  return nullptr;
}

MoEScratch moeScratch(int64_t rows, int64_t experts, int64_t k, int64_t in, int64_t ff,
                      bool gated) {
  auto what = [] { return "a mixture of experts' CPU scratch"; };
  MoEScratch m;
  int64_t at = 0;
  const int64_t slots = checkedMul(rows, k, what);
  auto part = [&](int64_t &offset, int64_t count, int64_t elementBytes) {
    offset = at;
    at = checkedAlignUp(checkedAdd(at, checkedMul(count, elementBytes, what), what), 64, what);
  };
  part(m.probs, checkedMul(rows, experts, what), 4);
  part(m.choices, slots, 8);
  part(m.order, slots, 4);
  part(m.firsts, experts + 1, 4);
  part(m.inputs, checkedMul(slots, in, what), 4);
  part(m.gates, checkedMul(slots, ff, what), 4);
  part(m.ups, checkedMul(slots, ff, what), 4);
  part(m.outputs, checkedMul(slots, in, what), 4);
  if (gated) part(m.sharedGates, rows, 4);
  m.bytes = at;
  return m;
}

/// The scratch of a moe_ffn step (its weights as the plan's table has them;
/// validatePlan checks them against each other).
static int64_t moeStepBytes(const Plan &plan, const MoEFFNOp &op) {
  const WeightEntry *router = plan.findWeight(op.router), *gate = plan.findWeight(op.gate);
  if (!router || !gate || router->shape.size() != 2 || gate->shape.size() != 3) return 0;
  return moeScratch(op.input.rows(), router->shape[0], op.expertsPerToken, op.input.cols(),
                    gate->shape[1], op.sharedGate.has_value())
      .bytes;
}

CpuWorkspace cpuWorkspace(const Plan &plan) {
  CpuWorkspace w;
  for (const auto &[name, ep] : plan.entryPoints)
    for (const Step &s : ep.steps) {
      if (const MoEFFNOp *moe = s.tryAs<MoEFFNOp>())
        w.moeBytes = std::max(w.moeBytes, moeStepBytes(plan, *moe));
      const RopeOp *rope = s.tryAs<RopeOp>();
      if (!rope) continue;
      const RopeParams &p = rope->rope;
      if (w.ropeTable(name, p)) continue;
      CpuRopeTable t{name, p, ep.rows, 0, 0};
      t.freqsOffset = w.ropeBytes;
      auto what = [] { return "the CPU workspace's RoPE tables"; };
      t.tableOffset = checkedAlignUp(
          checkedAdd(t.freqsOffset, checkedMul(p.headDim / 2, p.attentionFactor ? 16 : 8, what),
                     what),
          64, what);
      const int64_t table = checkedMul(checkedMul(ep.rows, p.headDim, what), 4, what);
      w.ropeBytes = checkedAlignUp(checkedAdd(t.tableOffset, table, what), 64, what);
      w.ropeTables.push_back(std::move(t));
    }
  return w;
}

std::string entryRole(const std::string &name) { return name.substr(0, name.find('.')); }

const EntryPoint &servingEntry(const Plan &plan, const std::string &entry, int64_t rows) {
  const EntryPoint &whole = plan.entryPoints.at(entry);
  const EntryPoint *best = &whole;
  for (const auto &[name, ep] : plan.entryPoints)
    if (name != entry && entryRole(name) == entry && ep.rows >= rows && ep.rows < best->rows)
      best = &ep;
  return *best;
}

MemoryBill Plan::memoryBill() const {
  MemoryBill b;
  auto sum = [](int64_t a, uint64_t x, const char *what) {
    if (x > uint64_t(INT64_MAX))
      throw InputError(std::string(what) + ": " + std::to_string(x) +
                       " does not fit in 64 bits; recompile the model with this kvplan");
    return checkedAdd(a, int64_t(x), [&] { return what; });
  };
  for (const WeightEntry &w : weights) {
    b.params = sum(b.params, uint64_t(w.numElements()), "the plan's parameters");
    b.weightsBytes = sum(b.weightsBytes, w.bytes, "the plan's weight bytes");
    const int64_t end = sum(sum(0, w.bytes, "the weights section"), w.offset, "the weights section");
    b.weightsBlobBytes = std::max(b.weightsBlobBytes, end);
  }
  b.windowKvCacheBytes = windowCache.bytes();
  b.kvCacheBytes = sum(kvCache.bytes(), uint64_t(b.windowKvCacheBytes), "the KV caches' bytes");
  for (const auto &[name, ep] : entryPoints) {
    b.arenaBytes[name] = ep.arenaBytes;
    b.arenaAllocBytes = std::max(b.arenaAllocBytes, ep.arenaBytes);
  }
  if (settings.target == Target::cuda) {
    b.workspaceBytes = deviceWorkspaceBytes;
    b.hostPinnedBytes = cudaHostStagingBytes(*this);
    b.reserveBytes = kCudaRuntimeReserveBytes + (ranks() > 1 ? kNcclReserveBytes : 0);
  } else {
    const CpuWorkspace w = cpuWorkspace(*this);
    b.workspaceBytes = w.bytes();
  }
  for (int64_t part :
       {b.weightsBlobBytes, b.kvCacheBytes, b.arenaAllocBytes, b.workspaceBytes, b.reserveBytes})
    b.totalBytes = sum(b.totalBytes, uint64_t(part), "the plan's memory bill");
  return b;
}

std::string workspaceContents(const Plan &p) {
  const char *experts = p.model.moe() ? ", the experts' scratch" : "";
  if (p.settings.target == Target::cuda)
    return std::string("attention partials, RoPE tables, sampling") + experts + ", cuBLAS";
  return std::string("RoPE tables") + experts;
}

nlohmann::json toJson(const MemoryBill &b) {
  nlohmann::json j = {{"params", b.params},
          {"weights_bytes", b.weightsBytes},
          {"weights_blob_bytes", b.weightsBlobBytes},
          {"kv_cache_bytes", b.kvCacheBytes},
          {"arena_bytes", b.arenaBytes},
          {"arena_alloc_bytes", b.arenaAllocBytes},
          {"workspace_bytes", b.workspaceBytes},
          {"host_pinned_bytes", b.hostPinnedBytes},
          {"reserve_bytes", b.reserveBytes},
          {"total_bytes", b.totalBytes}};
  if (b.windowKvCacheBytes > 0) j["window_kv_cache_bytes"] = b.windowKvCacheBytes;
  return j;
}

} // namespace kvplan
