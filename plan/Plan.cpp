// The plan's weight layout and memory bill.
#include "plan/Plan.h"
#include "plan/CudaProgram.h"
#include "support/Align.h"

#include <algorithm>

namespace kvplan {

int64_t WeightEntry::numElements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

int64_t WeightEntry::rowBytes() const {
  const int64_t cols = shape.back();
  switch (dtype) {
  case DType::i8: return cols + ceilDiv(cols, kInt8Group) * 4;
  case DType::i4: return ceilDiv(cols, kInt4Group) * (16 + 4 + 4);
  default: return cols * dtypeBytes(dtype);
  }
}

WeightLayout weightLayout(const std::vector<int64_t> &shape, DType dtype) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  WeightLayout l;
  if (dtype != DType::i8 && dtype != DType::i4) {
    l.bytes = uint64_t(n * dtypeBytes(dtype));
    return l;
  }
  const int64_t cols = shape.back(), rows = n / cols;
  l.groupSize = dtype == DType::i8 ? kInt8Group : kInt4Group;
  const uint64_t groups = uint64_t(rows * ceilDiv(cols, l.groupSize));
  const uint64_t data = dtype == DType::i8 ? uint64_t(n) : groups * 16;
  l.scalesOffset = alignUp(data, kWeightAlignment);
  l.bytes = l.scalesOffset + groups * 4;
  if (dtype == DType::i4) {
    l.minsOffset = alignUp(l.bytes, kWeightAlignment);
    l.bytes = l.minsOffset + groups * 4;
  }
  return l;
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

CpuWorkspace cpuWorkspace(const Plan &plan) {
  CpuWorkspace w;
  for (const auto &[name, ep] : plan.entryPoints)
    for (const Step &s : ep.steps) {
      const RopeOp *rope = s.tryAs<RopeOp>();
      if (!rope) continue;
      const RopeParams &p = rope->rope;
      if (w.ropeTable(name, p)) continue;
      CpuRopeTable t{name, p, ep.rows, 0, 0};
      t.freqsOffset = w.ropeBytes;
      t.tableOffset = alignUp(t.freqsOffset + p.headDim / 2 * 8, 64);
      w.ropeBytes = alignUp(t.tableOffset + ep.rows * p.headDim * 4, 64);
      w.ropeTables.push_back(std::move(t));
    }
  w.scratchBytesPerThread = alignUp(std::max<int64_t>(plan.settings.maxSeqLen, 1) * 4, 64);
  return w;
}

MemoryBill Plan::memoryBill() const {
  MemoryBill b;
  for (const WeightEntry &w : weights) {
    b.params += w.numElements();
    b.weightsBytes += int64_t(w.bytes);
    b.weightsBlobBytes = std::max<int64_t>(b.weightsBlobBytes, int64_t(w.offset + w.bytes));
  }
  b.kvCacheBytes = kvCache.bytes();
  for (const auto &[name, ep] : entryPoints) {
    b.arenaBytes[name] = ep.arenaBytes;
    b.arenaAllocBytes = std::max(b.arenaAllocBytes, ep.arenaBytes);
  }
  if (settings.target == Target::cuda) {
    b.workspaceBytes = deviceWorkspaceBytes;
    b.hostPinnedBytes = cudaHostStagingBytes(*this);
    b.reserveBytes = kCudaRuntimeReserveBytes;
  } else {
    const CpuWorkspace w = cpuWorkspace(*this);
    b.workspaceBytes = w.ropeBytes;
    b.scratchBytesPerThread = w.scratchBytesPerThread;
  }
  b.totalBytes = b.weightsBlobBytes + b.kvCacheBytes + b.arenaAllocBytes + b.workspaceBytes +
                 b.scratchBytesPerThread + b.reserveBytes;
  return b;
}

nlohmann::json toJson(const MemoryBill &b) {
  return {{"params", b.params},
          {"weights_bytes", b.weightsBytes},
          {"weights_blob_bytes", b.weightsBlobBytes},
          {"kv_cache_bytes", b.kvCacheBytes},
          {"arena_bytes", b.arenaBytes},
          {"arena_alloc_bytes", b.arenaAllocBytes},
          {"workspace_bytes", b.workspaceBytes},
          {"scratch_bytes_per_thread", b.scratchBytesPerThread},
          {"host_pinned_bytes", b.hostPinnedBytes},
          {"reserve_bytes", b.reserveBytes},
          {"total_bytes", b.totalBytes}};
}

} // namespace kvplan
