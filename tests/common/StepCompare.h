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
#include "support/Half.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
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

/// A prompt through @score on both engines (open sequences `sc` on `cpu`,
/// `sd` on `device`), whole calls then a part one: every row of the
/// device's logits within `tol` of the CPU's.
inline void compareScoreCalls(Engine &cpu, int sc, Engine &device, int sd,
                              const std::vector<int32_t> &prompt, double tol) {
  const int64_t v = cpu.vocabSize(), rows = device.scoreRows(), size = int64_t(prompt.size());
  for (int64_t at = 0; at < size; at += rows) {
    const int64_t n = std::min<int64_t>(rows, size - at);
    const float *lc = cpu.score(sc, prompt.data() + at, n);
    const std::vector<float> c(lc, lc + n * v);
    const float *ld = device.score(sd, prompt.data() + at, n);
    for (int64_t i = 0; i < n; ++i)
      EXPECT_LE(normalisedError(std::vector<float>(ld + i * v, ld + (i + 1) * v),
                                std::vector<float>(c.begin() + i * v, c.begin() + (i + 1) * v)),
                tol)
          << "tokens from " << at << ", row " << i;
  }
}

inline double tolerance(DType weights) {
  // About four times the largest error the emulated kernels show (bf16:
  // 2.0e-3, f16: 2.5e-4, f32: 5.5e-7 per kernel). With int8 and int4
  // weights every kernel computes in f32 from the same codes as the CPU
  // (int8 3.6e-7, int4 4.1e-7 at most): f32's.
  if (weights == DType::f32 || weights == DType::i8 || weights == DType::i4) return 1e-5;
  return weights == DType::f16 ? 1e-3 : 8e-3;
}

/// Whole-model logits after a prefill and decode steps: four times the
/// per-kernel tolerance, except that with quantized weights the bf16 (or
/// f16) KV cache dominates: a key rounded the other way in one layer moves
/// the next (int8 3.5e-4, int4 4.7e-4 at most in the emulator).
inline double modelTolerance(const Plan &plan) {
  const DType w = plan.settings.weightDtype;
  if ((w == DType::i8 || w == DType::i4) && plan.kvCache.dtype != DType::f32) return 2e-3;
  return 4 * tolerance(w);
}

/// Fills an entry point's inputs on both executors: `active` rows, each at
/// its own position (short and long contexts) over a cache whose history is
/// random.
inline void setInputs(Executor &x, const Plan &plan, const std::string &entry, int64_t active,
               std::mt19937 &rng) {
  const EntryPoint &ep = plan.entryPoints.at(entry);
  const int64_t pps = plan.kvCache.pagesPerSequence, rows = ep.rows;
  int64_t tableRows = 1;
  for (const Operand &a : ep.args)
    if (a.name == "page_table") tableRows = a.shape[0];
  for (int64_t r = 0; r < tableRows; ++r)
    for (int64_t p = 0; p < pps; ++p) {
      x.pageTable(entry)[r * pps + p] = int32_t((r * pps + p) % plan.kvCache.pages);
      // The sliding layers' own pool, where the plan has one: other pages.
      if (int32_t *w = x.windowPageTable(entry))
        w[r * pps + p] = int32_t((r * pps + 3 * p + 1) % plan.windowCache.pages);
    }
  for (int64_t r = 0; r < rows; ++r) {
    x.tokens(entry)[r] = int32_t(rng() % uint32_t(plan.model.vocabSize));
    if (r >= active) x.positions(entry)[r] = -1;
    else if (entry == "prefill") x.positions(entry)[r] = int32_t(3 + r);
    // Decode rows at short contexts and, every other row, at nearly the
    // whole context: attention walks many keys per split and key slot.
    else if (r % 2) x.positions(entry)[r] = int32_t(plan.settings.maxSeqLen - 1 - r);
    else x.positions(entry)[r] = int32_t((7 * r + 5) % plan.settings.maxSeqLen);
  }
}


/// Which CPU steps each step of a cuda plan stands for, and where each of its
/// values lives in the cpu plan of the same model. The cuda pipeline runs the
/// cpu one plus --fuse-rope-kv-write (one op for the RoPE of q and k and the
/// cache write), --fuse-matvec (a product with the norm before it, the
/// SwiGLU or residual add after it) and --narrow-activations (types, and
/// converts); every other step has one CPU step of its kind, in the same
/// order.
struct PlanMatch {
  std::vector<std::pair<size_t, size_t>> steps; // per cuda step: CPU steps [first, end)
  std::map<int64_t, Operand> cpuValue;          // cuda value -> the CPU operand holding it
  /// cuda values whose rows are several CPU operands' rows side by side (a
  /// fused QKV product's packed result: the CPU's q, k and v); their
  /// cpuValue is the first part.
  std::map<int64_t, std::vector<Operand>> cpuParts;

  /// The CPU operands whose rows, side by side, are cuda value `v`'s.
  std::vector<Operand> partsOf(int64_t v) const {
    auto it = cpuParts.find(v);
    return it != cpuParts.end() ? it->second : std::vector<Operand>{cpuValue.at(v)};
  }
  /// Maps cuda value `v` to the CPU's `outs`: one, or the parts of a packed
  /// product.
  void define(int64_t v, const std::vector<const Operand *> &outs) {
    cpuValue[v] = *outs.front();
    if (outs.size() == 1) return;
    for (const Operand *o : outs) cpuParts[v].push_back(*o);
  }
};

/// The CPU steps of the product a matvec kernel makes, from `i`: the
/// rms_norm it folds when that is a step of its own (a norm that is
/// add_rms_norm's normed half ran in the CPU steps of the matvec that made
/// the sum), then the linear or logits. Advances `i` past them; returns
/// the product's outputs.
inline std::vector<const Operand *> matchProduct(const EntryPoint &cpu, bool norm, size_t &i) {
  const size_t first = i;
  if (norm && cpu.steps.at(i).tryAs<RMSNormOp>()) ++i; // a norm of its own: its step too
  const Step &product = cpu.steps.at(i++);
  EXPECT_TRUE(product.tryAs<LinearOp>() || product.tryAs<LogitsOp>())
      << "cuda matvec against cpu step " << first << " (" << product.name() << ")";
  return stepOutputs(product);
}

/// A matvec stands for its product's CPU steps (matchProduct) and the
/// fused_ffn or residual add (add, add_rms_norm) after it that it folds in.
/// Advances `i` past its steps.
inline void matchMatVec(const EntryPoint &cpu, const MatVecOp &mv, size_t &i, PlanMatch &m) {
  const size_t first = i;
  std::vector<const Operand *> outs = matchProduct(cpu, mv.norm.has_value(), i);
  if (mv.swiglu || mv.addend) {
    const Step &after = cpu.steps.at(i++);
    if (const AddRMSNormOp *an = after.tryAs<AddRMSNormOp>()) outs = {&an->residual};
    else if (mv.swiglu) {
      EXPECT_TRUE(after.tryAs<FusedFFNOp>()) << "cpu step " << i - 1 << " (" << after.name() << ")";
    } else {
      EXPECT_TRUE(after.tryAs<AddOp>()) << "cpu step " << i - 1 << " (" << after.name() << ")";
    }
    if (!after.tryAs<AddRMSNormOp>()) outs = stepOutputs(after);
  }
  if (mv.results.size() == 1 && !outs.empty()) {
    m.define(mv.results[0].value, outs); // one result, or the CPU's parts packed
  } else {
    EXPECT_EQ(outs.size(), mv.results.size()) << "cpu steps " << first << " to " << i;
    for (size_t k = 0; k < outs.size() && k < mv.results.size(); ++k)
      m.cpuValue[mv.results[k].value] = *outs[k];
  }
  m.steps.push_back({first, i});
}

/// The CPU steps of RoPE and the cache write of one layer, from `i`: the
/// ropes of the queries (CPU value `query`) and of the keys (and Qwen3's
/// head norms before them), up to and with the kv_cache_write. Advances `i`
/// past them; maps `rotatedQuery`.
inline void matchRopeKVWrite(const EntryPoint &cpu, int64_t query, const Operand &rotatedQuery,
                             int64_t layer, size_t &i, PlanMatch &m) {
  for (; i < cpu.steps.size() && !cpu.steps[i].tryAs<KVCacheWriteOp>(); ++i) {
    if (const HeadRMSNormOp *n = cpu.steps[i].tryAs<HeadRMSNormOp>(); n && n->input.value == query)
      query = n->result.value; // the normalized queries are what the rope rotates
    if (const RopeOp *r = cpu.steps[i].tryAs<RopeOp>(); r && r->input.value == query)
      m.cpuValue[rotatedQuery.value] = r->result;
  }
  EXPECT_EQ(cpu.steps.at(i).as<KVCacheWriteOp>().layer, layer);
  ++i;
}

inline PlanMatch matchPlans(const EntryPoint &cpu, const EntryPoint &cuda) {
  PlanMatch m;
  for (const Operand &a : cuda.args)
    if (a.kind == OperandKind::arena) m.cpuValue[a.value] = *cpu.arg(a.name);
  size_t i = 0;
  for (const Step &s : cuda.steps) {
    if (const ConvertOp *c = s.tryAs<ConvertOp>()) {
      m.steps.push_back({i, i});
      m.cpuValue[c->result.value] = m.cpuValue.at(c->input.value);
      continue;
    }
    if (const RopeKVWriteOp *f = s.tryAs<RopeKVWriteOp>()) {
      const size_t first = i;
      matchRopeKVWrite(cpu, m.cpuValue.at(f->query.value).value, f->rotatedQuery, f->layer, i, m);
      m.steps.push_back({first, i});
      continue;
    }
    if (const MatVecRopeKVWriteOp *f = s.tryAs<MatVecRopeKVWriteOp>()) {
      const size_t first = i;
      const std::vector<const Operand *> qkv = matchProduct(cpu, f->norm.has_value(), i);
      EXPECT_EQ(qkv.size(), 3u) << "cuda matvec_rope_kv_write against cpu step " << first;
      matchRopeKVWrite(cpu, qkv.empty() ? -1 : qkv[0]->value, f->rotatedQuery, f->layer, i, m);
      m.steps.push_back({first, i});
      continue;
    }
    if (const MatVecOp *mv = s.tryAs<MatVecOp>()) {
      matchMatVec(cpu, *mv, i, m);
      continue;
    }
    const Step &c = cpu.steps.at(i);
    EXPECT_EQ(c.kind(), s.kind()) << "cuda step " << m.steps.size() << " against cpu step " << i;
    const std::vector<const Operand *> ins = stepInputs(s), cins = stepInputs(c);
    for (size_t k = 0; k < ins.size() && k < cins.size(); ++k)
      if (ins[k]->kind == OperandKind::arena) {
        EXPECT_EQ(m.cpuValue.at(ins[k]->value).value, cins[k]->value) << "step " << i;
      }
    const std::vector<const Operand *> outs = stepOutputs(s), couts = stepOutputs(c);
    if (s.kind() == OpKind::linear && outs.size() == 1 && couts.size() > 1)
      m.define(outs[0]->value, couts); // a fused QKV product packed for rope_kv_write
    else
      for (size_t k = 0; k < outs.size() && k < couts.size(); ++k)
        if (outs[k]->kind == OperandKind::arena) m.cpuValue[outs[k]->value] = *couts[k];
    m.steps.push_back({i, i + 1});
    ++i;
  }
  return m;
}

/// The first `rows` rows of the CPU's f32 operands `parts`, side by side.
inline std::vector<float> cpuRows(CpuExecutor &cpu, const std::vector<Operand> &parts,
                                  int64_t rows) {
  std::vector<float> out;
  for (int64_t r = 0; r < rows; ++r)
    for (const Operand &p : parts) {
      const float *row = reinterpret_cast<const float *>(cpu.arenaData() + p.offset) + r * p.cols();
      out.insert(out.end(), row, row + p.cols());
    }
  return out;
}

/// The CPU's f32 `parts` (one operand, or the parts of a packed one) as
/// the device's operand `dev` holds them: its rows (the first of the CPU's
/// where dev is a smaller copy's, decode.8's), in its type (ids as they are).
inline std::vector<char> cpuBytes(CpuExecutor &cpu, const std::vector<Operand> &parts,
                                  const Operand &dev) {
  const Operand &o = parts.front();
  if (o.dtype == DType::i32) {
    std::vector<char> out(size_t(std::min(o.bytes(), dev.bytes())));
    std::memcpy(out.data(), cpu.arenaData() + o.offset, out.size());
    return out;
  }
  const std::vector<float> f = cpuRows(cpu, parts, std::min(o.rows(), dev.rows()));
  std::vector<char> out(f.size() * size_t(dtypeBytes(dev.dtype)));
  convertElements(f.data(), DType::f32, out.data(), dev.dtype, int64_t(f.size()));
  return out;
}

/// The KV cache's bytes: the main pool's and the sliding layers' after it.
inline int64_t cacheBytes(const Plan &plan) {
  return plan.kvCache.bytes() + plan.windowCache.bytes();
}

/// The CPU's KV cache as f32.
inline std::vector<float> cpuCache(CpuExecutor &cpu, const Plan &plan) {
  const int64_t n = cacheBytes(plan) / dtypeBytes(plan.kvCache.dtype);
  std::vector<float> c(static_cast<size_t>(n));
  convertElements(cpu.cacheData(), plan.kvCache.dtype, c.data(), DType::f32, n);
  return c;
}

/// The CPU's and the device's KV caches agree: what each wrote over
/// `before` (the cache both started the step from), measured against what
/// the CPU wrote, so that a few rows written wrongly are not lost in a
/// whole cache of history.
template <class Device>
void compareCaches(Device &gpu, CpuExecutor &cpu, const Plan &plan, size_t step,
                   const std::vector<float> &before) {
  const int64_t bytes = cacheBytes(plan), n = bytes / dtypeBytes(plan.kvCache.dtype);
  std::vector<char> dev(static_cast<size_t>(bytes));
  gpu.download(DeviceBuffer::cache, 0, dev.data(), bytes);
  std::vector<float> g(static_cast<size_t>(n));
  convertElements(dev.data(), plan.kvCache.dtype, g.data(), DType::f32, n);
  std::vector<float> c = cpuCache(cpu, plan);
  for (size_t i = 0; i < c.size(); ++i) {
    g[i] -= before[i];
    c[i] -= before[i];
  }
  EXPECT_LE(normalisedError(g, c), 1e-2) << "KV cache written by step " << step;
}

/// The device's output `o` (its first `rows` rows) against the CPU's
/// `parts` side by side.
template <class Device>
void compareOutput(Device &gpu, CpuExecutor &cpu, const Operand &o,
                   const std::vector<Operand> &parts, int64_t rows, double tol,
                   const std::string &what) {
  const int64_t n = rows * o.cols(), size = dtypeBytes(o.dtype);
  std::vector<char> dev(static_cast<size_t>(n * size));
  gpu.download(DeviceBuffer::arena, o.offset, dev.data(), int64_t(dev.size()));
  std::vector<float> g(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) g[size_t(i)] = toFloat(dev.data() + i * size, o.dtype);
  const std::vector<float> want = cpuRows(cpu, parts, rows);
  ASSERT_EQ(want.size(), g.size()) << what << ": the CPU's parts are not the device's columns";
  EXPECT_LE(normalisedError(g, want), tol) << what;
}

/// Fills the CPU's cache with a random history, then runs every step of the
/// cuda plan on the device from the CPU's state just before the CPU steps it
/// stands for (inputs converted to the types the device stores), its outputs
/// poisoned with NaN first, and compares what it writes with the CPU's.
template <class Device>
void compareStepByStep(Device &gpu, CpuExecutor &cpu, const Plan &cudaPlan,
                       const CudaProgram &program, std::mt19937 &rng) {
  const Plan &cpuPlan = cpu.plan();
  {
    std::vector<float> f(size_t(cacheBytes(cpuPlan) / dtypeBytes(cpuPlan.kvCache.dtype)));
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (float &v : f) v = nd(rng);
    convertElements(f.data(), DType::f32, cpu.cacheData(), cpuPlan.kvCache.dtype, int64_t(f.size()));
  }
  const double tol = tolerance(cudaPlan.settings.weightDtype);
  for (const auto &[name, ep] : cudaPlan.entryPoints) {
    SCOPED_TRACE(name);
    // A smaller copy of decode (decode.8) against the CPU's decode, on its
    // first rows.
    const std::string role = entryRole(name);
    const EntryPoint &cpuEntry = cpuPlan.entryPoints.at(role);
    const PlanMatch match = matchPlans(cpuEntry, ep);
    const CudaEntry &ce = program.entries.at(name);
    const int64_t active = std::max<int64_t>(1, ep.rows - (ep.rows > 3 ? 3 : 0));
    setInputs(cpu, cpuPlan, role, active, rng);
    size_t op = 0, cpuDone = 0;
    for (size_t st = 0; st < ep.steps.size(); ++st) {
      const Step &s = ep.steps[st];
      const auto [first, end] = match.steps[st];
      size_t last = op;
      while (last < ce.ops.size() && ce.ops[last].step == int64_t(st)) ++last;
      if (last == op) continue; // a cache read: attention reads the cache in place
      cpu.runSteps(role, active, int64_t(cpuDone), int64_t(first) - 1);
      gpu.upload(DeviceBuffer::cache, 0, cpu.cacheData(), cacheBytes(cpuPlan));
      const bool writesCache = s.kind() == OpKind::kvCacheWrite ||
                               s.kind() == OpKind::ropeKVWrite ||
                               s.kind() == OpKind::matVecRopeKVWrite;
      const std::vector<float> before = writesCache ? cpuCache(cpu, cpuPlan) : std::vector<float>();
      for (const Operand *in : stepInputs(s))
        if (in->kind == OperandKind::arena) {
          std::vector<char> b = cpuBytes(cpu, match.partsOf(in->value), *in);
          const DeviceRef at = cudaOperandRef(ce, ep, *in); // the inputs: in the workspace
          gpu.upload(at.buffer, at.offset, b.data(), int64_t(b.size()));
        }
      for (const Operand *o : stepOutputs(s))
        if (o->kind == OperandKind::arena)
          gpu.fill(DeviceBuffer::arena, o->offset, 0xff, o->bytes()); // NaN in every type
      gpu.runOps(name, active, op, last - 1);
      cpu.runSteps(role, active, int64_t(first), int64_t(end) - 1);
      cpuDone = end;
      op = last;
      for (const Operand *o : stepOutputs(s))
        if (o->kind == OperandKind::arena)
          compareOutput(gpu, cpu, *o, match.partsOf(o->value),
                        o->rows() == ep.rows ? active : o->rows(), tol,
                        "step " + std::to_string(st) + " (" + s.name() + ")");
      if (writesCache) compareCaches(gpu, cpu, cpuPlan, st, before);
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

/// Sequences with prompts of `lens` tokens (token i of a prompt of n:
/// (31 i + n) mod the vocabulary) prefilled one by one, then `steps` decode
/// steps of them all together, the device following the CPU's greedy
/// tokens: each row's logits must agree within `tol`.
inline void followCpuBatch(Engine &cpu, Engine &dev, const std::vector<int64_t> &lens, int steps,
                           double tol) {
  const int64_t v = cpu.vocabSize(), n = int64_t(lens.size());
  std::vector<int> sc, sd;
  std::vector<int32_t> next;
  for (int64_t len : lens) {
    std::vector<int32_t> p(static_cast<size_t>(len));
    for (int64_t i = 0; i < len; ++i) p[size_t(i)] = int32_t((i * 31 + len) % v);
    sc.push_back(cpu.open());
    sd.push_back(dev.open());
    const float *l = cpu.prefill(sc.back(), p.data(), len);
    next.push_back(int32_t(std::max_element(l, l + v) - l));
    dev.prefill(sd.back(), p.data(), len);
  }
  for (int step = 0; step < steps; ++step) {
    const float *lc = cpu.decode(sc, next);
    const std::vector<float> c(lc, lc + n * v);
    const float *ld = dev.decode(sd, next);
    for (int64_t r = 0; r < n; ++r) {
      const std::vector<float> dr(ld + r * v, ld + (r + 1) * v);
      const std::vector<float> cr(c.begin() + r * v, c.begin() + (r + 1) * v);
      EXPECT_LE(normalisedError(dr, cr), tol) << "decode step " << step << ", row " << r;
      next[size_t(r)] = int32_t(std::max_element(cr.begin(), cr.end()) - cr.begin());
    }
  }
  for (int64_t r = 0; r < n; ++r) {
    cpu.close(sc[size_t(r)]);
    dev.close(sd[size_t(r)]);
  }
}

} // namespace kvplan::testing
