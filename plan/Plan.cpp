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

void Plan::assignWeightOffsets() {
  uint64_t off = 0;
  for (WeightEntry &w : weights) {
    off = alignUp(off, kWeightAlignment);
    w.offset = off;
    if (w.dtype == DType::i8) {
      const int64_t cols = w.shape.back(), rows = w.numElements() / cols;
      w.groupSize = kInt8Group;
      w.scalesOffset = alignUp(uint64_t(w.numElements()), kWeightAlignment);
      w.bytes = w.scalesOffset + uint64_t(rows * ceilDiv(cols, kInt8Group)) * 4;
    } else {
      w.bytes = uint64_t(w.numElements() * dtypeBytes(w.dtype));
    }
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
