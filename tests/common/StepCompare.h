// Step-by-step comparison of a CUDA-target plan's device ops against the
// CPU runtime, for any device with CudaExecutor's test interface (the GPU,
// or the CPU emulator of tests/emu). Each group of device ops gets the CPU's
// state just before its steps (inputs converted to the types the device
// stores), its outputs poisoned with NaN first so unwritten elements show,
// and must match the CPU's outputs within the weights' tolerance.
#pragma once

#include "runtime/cpu/CpuExecutor.h"
#include "runtime/Engine.h"
#include "plan/CudaProgram.h"
#include "formats/WeightFormats.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

namespace kvplan::testing {

inline float toFloat(const char *p, DType t) {
  uint16_t h;
  switch (t) {
  case DType::f32: {
    float f;
    std::memcpy(&f, p, 4);
    return f;
  }
  case DType::bf16:
  case DType::f16: {
    std::memcpy(&h, p, 2);
    float f;
    convertElements(&h, t, &f, DType::f32, 1);
    return f;
  }
  default: return 0;
  }
}

/// ||a - b|| / ||b||, with NaN (an element the kernel never wrote, after
/// the poison) counted as a failure.
inline double normalisedError(const std::vector<float> &a, const std::vector<float> &b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num += double(a[i] - b[i]) * (a[i] - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

inline double tolerance(DType weights) {
  // About four times the largest error the emulated kernels show (bf16:
  // 2.0e-3, f16: 2.5e-4, f32: 5.5e-7 per kernel).
  return weights == DType::f32 ? 1e-5 : weights == DType::f16 ? 1e-3 : 8e-3;
}

/// Fills an entry point's inputs on both executors: `active` rows, each at
/// its own position over a cache whose history is random.
inline void setInputs(Executor &x, const Plan &plan, const std::string &entry, int64_t active,
               std::mt19937 &rng) {
  const EntryPoint &ep = plan.entryPoints.at(entry);
  const int64_t pps = plan.kvCache.pagesPerSequence, rows = ep.rows;
  int64_t tableRows = 1;
  for (const Operand &a : ep.args)
    if (a.name == "page_table") tableRows = a.shape[0];
  for (int64_t r = 0; r < tableRows; ++r)
    for (int64_t p = 0; p < pps; ++p)
      x.pageTable(entry)[r * pps + p] = int32_t((r * pps + p) % plan.kvCache.pages);
  for (int64_t r = 0; r < rows; ++r) {
    x.tokens(entry)[r] = int32_t(rng() % uint32_t(plan.model.vocabSize));
    if (r >= active) x.positions(entry)[r] = -1;
    else if (entry == "prefill") x.positions(entry)[r] = int32_t(3 + r);
    else x.positions(entry)[r] = int32_t((7 * r + 5) % plan.settings.maxSeqLen);
  }
}


/// Fills the CPU's cache with a random history, then compares every device
/// op of every entry point.
template <class Device>
void compareStepByStep(Device &gpu, CpuExecutor &cpu, const Plan &plan, const CudaProgram &program,
                       std::mt19937 &rng) {
  const MemoryBill bill = plan.memoryBill();
  {
    std::vector<float> f(size_t(bill.kvCacheBytes / dtypeBytes(plan.kvCache.dtype)));
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (float &v : f) v = nd(rng);
    convertElements(f.data(), DType::f32, cpu.cacheData(), plan.kvCache.dtype, int64_t(f.size()));
  }
    for (const auto &[name, ep] : plan.entryPoints) {
      SCOPED_TRACE(name);
      const CudaEntry &ce = program.entries.at(name);
      const int64_t active = std::max<int64_t>(1, ep.rows - (ep.rows > 3 ? 3 : 0));
      setInputs(cpu, plan, name, active, rng);
      // Run the CPU up to each device op's steps, hand the device the same
      // state (inputs converted to the types it stores), poison what the op
      // writes, run the op, compare.
      for (const Operand &a : ep.args)
        if (a.kind == OperandKind::arena)
          gpu.upload(DeviceBuffer::arena, a.offset, cpu.arenaData() + a.offset, a.bytes());
      std::vector<char> staged;
      size_t op = 0;
      int64_t cpuDone = -1;
      while (op < ce.ops.size()) {
        size_t last = op;
        while (last + 1 < ce.ops.size() && ce.ops[last + 1].firstStep == ce.ops[op].firstStep)
          ++last;
        const int64_t first = ce.ops[op].firstStep, lastStep = ce.ops[last].lastStep;
        if (first > cpuDone + 1) cpu.runSteps(name, active, cpuDone + 1, first - 1);
        gpu.upload(DeviceBuffer::cache, 0, cpu.cacheData(), bill.kvCacheBytes);
        for (int64_t st = first; st <= lastStep; ++st) {
          const Step &s = ep.steps[size_t(st)];
          for (size_t i = 0; i < s.inputs.size(); ++i) {
            const Operand &o = s.inputs[i];
            if (o.kind != OperandKind::arena) continue;
            const DType t = ce.inputTypes[size_t(st)][i];
            const int64_t n = o.numElements();
            staged.resize(size_t(n * 4));
            if (o.dtype == DType::i32 || t == DType::f32)
              std::memcpy(staged.data(), cpu.arenaData() + o.offset, size_t(n * 4));
            else
              convertElements(cpu.arenaData() + o.offset, DType::f32, staged.data(), t, n);
            gpu.upload(DeviceBuffer::arena, o.offset, staged.data(),
                       n * (o.dtype == DType::i32 ? 4 : dtypeBytes(t)));
          }
          for (const Operand &o : s.outputs)
            if (o.kind == OperandKind::arena)
              gpu.fill(DeviceBuffer::arena, o.offset, 0xff, o.bytes()); // NaN in every type
        }
        gpu.runOps(name, active, op, last);
        cpu.runSteps(name, active, first, lastStep);
        cpuDone = lastStep;
        for (int64_t st = first; st <= lastStep; ++st) {
          const Step &s = ep.steps[size_t(st)];
          for (size_t k = 0; k < s.outputs.size(); ++k) {
            const Operand &o = s.outputs[k];
            if (o.kind != OperandKind::arena) continue;
            if (st < lastStep && s.op == "rope") continue; // fused: k goes to the cache only
            const DType t = ce.outputTypes[size_t(st)][k];
            const int64_t rows = o.shape[0] == ep.rows ? active : o.shape[0];
            const int64_t n = rows * (o.numElements() / o.shape[0]);
            std::vector<char> dev(size_t(n * dtypeBytes(t)));
            gpu.download(DeviceBuffer::arena, o.offset, dev.data(), int64_t(dev.size()));
            std::vector<float> g(static_cast<size_t>(n)), c(static_cast<size_t>(n));
            for (int64_t i = 0; i < n; ++i) {
              g[size_t(i)] = toFloat(dev.data() + i * dtypeBytes(t), t);
              c[size_t(i)] = reinterpret_cast<const float *>(cpu.arenaData() + o.offset)[i];
            }
            const double err = normalisedError(g, c);
            EXPECT_LE(err, tolerance(plan.settings.weightDtype))
                << "step " << st << " (" << s.op << ") output " << k;
          }
          if (s.op == "kv_cache_write") {
            std::vector<char> dev(size_t(bill.kvCacheBytes));
            gpu.download(DeviceBuffer::cache, 0, dev.data(), bill.kvCacheBytes);
            const int64_t n = bill.kvCacheBytes / dtypeBytes(plan.kvCache.dtype);
            std::vector<float> g(static_cast<size_t>(n)), c(static_cast<size_t>(n));
            convertElements(dev.data(), plan.kvCache.dtype, g.data(), DType::f32, n);
            convertElements(cpu.cacheData(), plan.kvCache.dtype, c.data(), DType::f32, n);
            EXPECT_LE(normalisedError(g, c), 1e-2) << "KV cache after step " << st;
          }
        }
        op = last + 1;
      }
    }
}

/// Greedy generation of `prompt` and `steps` tokens on both engines, the
/// device following the CPU's tokens so both see the same sequence; each
/// step's logits must agree within `tol` and the device's own (sampled)
/// token must be the argmax of its logits. Returns the device's logits.
inline std::vector<std::vector<float>> followCpu(Engine &cpu, Engine &dev,
                                                 const std::vector<int32_t> &prompt, int steps,
                                                 double tol) {
  const int64_t v = cpu.vocabSize(), n = int64_t(prompt.size());
  const int sc = cpu.open(), sd = dev.open();
  const float *lc = cpu.prefill(sc, prompt.data(), n);
  std::vector<float> c(lc, lc + v);
  int32_t next = dev.prefillNext(sd, prompt.data(), n);
  const float *ld = dev.executor().logits("prefill");
  std::vector<std::vector<float>> out{std::vector<float>(ld, ld + v)};
  EXPECT_LE(normalisedError(out.back(), c), tol) << "prefill";
  EXPECT_EQ(next, int32_t(std::max_element(ld, ld + v) - ld)) << "greedy sampling on the device";
  for (int s = 0; s < steps; ++s) {
    const int32_t t = int32_t(std::max_element(c.begin(), c.end()) - c.begin());
    lc = cpu.decode({sc}, {t});
    c.assign(lc, lc + v);
    next = dev.decodeNext({sd}, {t})[0];
    ld = dev.executor().logits("decode");
    out.emplace_back(ld, ld + v);
    EXPECT_LE(normalisedError(out.back(), c), tol) << "decode step " << s;
    EXPECT_EQ(next, int32_t(std::max_element(ld, ld + v) - ld)) << "decode step " << s;
  }
  cpu.close(sc);
  dev.close(sd);
  return out;
}

} // namespace kvplan::testing
