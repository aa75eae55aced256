// The emulated CUDA executor (see EmuExecutor.h).
#include "tests/emu/EmuExecutor.h"
#include "tests/emu/EmuCompile.h"

#include "runtime/WeightFormats.h"

#include <dlfcn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace fs = std::filesystem;

namespace kvplan {

std::string EmuExecutor::cudaIncludeDir() { return emuCudaIncludeDir(); }

EmuExecutor::EmuExecutor(const Plan &plan, const CudaProgram &program, const std::string &source,
                         const char *weights, uint64_t weightsBytes)
    : plan_(plan), program_(program) {
  library = emuCompile(source);
  launcher = reinterpret_cast<decltype(launcher)>(::dlsym(library, "kvemu_launch"));
  if (!launcher) throw std::runtime_error("the emulated library has no kvemu_launch");

  MemoryBill bill = plan.memoryBill();
  buffers[0].assign(size_t(std::max<int64_t>(bill.arenaAllocBytes, 256)), 0);
  buffers[1].assign(weights, weights + std::min<uint64_t>(weightsBytes, bill.weightsBlobBytes));
  buffers[2].assign(size_t(std::max<int64_t>(bill.kvCacheBytes, 256)), 0);
  buffers[3].assign(size_t(std::max<int64_t>(program.workspaceBytes, 256)), 0);
  for (const auto &[name, ep] : plan_.entryPoints) {
    Entry e;
    e.ep = &ep;
    e.ce = &program_.entries.at(name);
    for (const DeviceOp *op : [&] {
           std::vector<const DeviceOp *> v;
           for (const DeviceOp &o : e.ce->ops) v.push_back(&o);
           v.push_back(&e.ce->sample);
           return v;
         }()) {
      if (op->kind != DeviceOp::kernel || kernels.count(op->name)) continue;
      void *k = ::dlsym(library, op->name.c_str());
      if (!k) throw std::runtime_error("the emulated library lacks kernel " + op->name);
      kernels[op->name] = k;
    }
    for (const Operand &a : ep.args) {
      if (a.name == "tokens") e.tokOff = a.offset;
      if (a.name == "positions") e.posOff = a.offset;
      if (a.name == "page_table") {
        e.tableOff = a.offset;
        e.table.assign(size_t(a.numElements()), 0);
      }
    }
    e.tok.assign(size_t(ep.rows), 0);
    e.pos.assign(size_t(ep.rows), -1);
    const Operand &l = ep.results.at(0);
    e.logitsOff = l.offset;
    e.logitRows = l.shape[0];
    e.vocab = l.shape.back();
    e.logitsFollow = l.shape[0] == ep.rows;
    e.params.assign(size_t(e.logitRows), DeviceSamplingParams{0, 1, 0, 0});
    e.sampled.assign(size_t(e.logitRows), 0);
    entries[name] = std::move(e);
  }
}

EmuExecutor::~EmuExecutor() {
  if (library) ::dlclose(library);
}

EmuExecutor::Entry &EmuExecutor::entry(const std::string &name) { return entries.at(name); }
int32_t *EmuExecutor::tokens(const std::string &e) { return entry(e).tok.data(); }
int32_t *EmuExecutor::positions(const std::string &e) { return entry(e).pos.data(); }
int32_t *EmuExecutor::pageTable(const std::string &e) { return entry(e).table.data(); }

char *EmuExecutor::base(DeviceBuffer b) { return buffers[size_t(b)].data(); }

void EmuExecutor::launch(const DeviceOp &op, int64_t active) {
  if (op.kind == DeviceOp::gemm) {
    // cuBLAS: C(m x n) = op(A)^T B in column-major terms, f32 accumulation.
    const int64_t n = opRows(op, active);
    const char *w = base(op.weight.buffer) + op.weight.offset;
    const char *x = base(op.input.buffer) + op.input.offset;
    float *y = reinterpret_cast<float *>(base(op.output.buffer) + op.output.offset);
    std::vector<float> wr(size_t(op.k)), xr(size_t(op.k));
    for (int64_t r = 0; r < n; ++r) {
      convertElements(x + r * op.ldb * dtypeBytes(op.inputType), op.inputType, xr.data(),
                      DType::f32, op.k);
      for (int64_t j = 0; j < op.m; ++j) {
        convertElements(w + j * op.lda * dtypeBytes(op.weightType), op.weightType, wr.data(),
                        DType::f32, op.k);
        float s = 0;
        for (int64_t k = 0; k < op.k; ++k) s += wr[size_t(k)] * xr[size_t(k)];
        y[r * op.ldc + j] = s;
      }
    }
    return;
  }
  char *const bases[4] = {base(DeviceBuffer::arena), base(DeviceBuffer::weights),
                          base(DeviceBuffer::cache), base(DeviceBuffer::work)};
  KernelLaunch l = resolveLaunch(op, active, bases);
  const long long grid[3] = {l.grid[0], l.grid[1], l.grid[2]};
  const long long block[3] = {l.block[0], l.block[1], l.block[2]};
  launcher(kernels.at(op.name), &l.args, grid, block);
}

void EmuExecutor::setSampling(const std::string &name, const DeviceSamplingParams *rows,
                              int64_t count) {
  Entry &e = entry(name);
  std::copy(rows, rows + std::min(count, e.logitRows), e.params.begin());
}

void EmuExecutor::run(const std::string &name, int64_t active) {
  Entry &e = entry(name);
  active = std::clamp<int64_t>(active, 1, e.ep->rows);
  std::memcpy(base(DeviceBuffer::arena) + e.tokOff, e.tok.data(), e.tok.size() * 4);
  std::memcpy(base(DeviceBuffer::arena) + e.posOff, e.pos.data(), e.pos.size() * 4);
  std::memcpy(base(DeviceBuffer::arena) + e.tableOff, e.table.data(), e.table.size() * 4);
  const int64_t outRows = e.logitsFollow ? active : e.logitRows;
  std::memcpy(base(DeviceBuffer::work) + e.ce->samplingParamsOffset, e.params.data(),
              size_t(outRows) * sizeof(DeviceSamplingParams));
  for (const DeviceOp &op : e.ce->ops) launch(op, active);
  launch(e.ce->sample, active);
  std::memcpy(e.sampled.data(), base(DeviceBuffer::work) + e.ce->sampledOffset,
              size_t(outRows) * 4);
  e.lastActive = active;
}

const float *EmuExecutor::logits(const std::string &name) {
  Entry &e = entry(name);
  const int64_t rows = e.logitsFollow ? e.lastActive : e.logitRows;
  e.logits.resize(size_t(rows * e.vocab));
  std::memcpy(e.logits.data(), base(DeviceBuffer::arena) + e.logitsOff, e.logits.size() * 4);
  return e.logits.data();
}

const int32_t *EmuExecutor::sampled(const std::string &name) { return entry(name).sampled.data(); }

void EmuExecutor::runOps(const std::string &name, int64_t active, size_t firstOp, size_t lastOp) {
  Entry &e = entry(name);
  active = std::clamp<int64_t>(active, 1, e.ep->rows);
  for (size_t i = firstOp; i <= lastOp && i < e.ce->ops.size(); ++i) launch(e.ce->ops[i], active);
  if (lastOp >= e.ce->ops.size()) launch(e.ce->sample, active);
}

void EmuExecutor::upload(DeviceBuffer b, int64_t offset, const void *data, int64_t bytes) {
  std::memcpy(base(b) + offset, data, size_t(bytes));
}
void EmuExecutor::download(DeviceBuffer b, int64_t offset, void *data, int64_t bytes) {
  std::memcpy(data, base(b) + offset, size_t(bytes));
}
void EmuExecutor::fill(DeviceBuffer b, int64_t offset, int byte, int64_t bytes) {
  std::memset(base(b) + offset, byte, size_t(bytes));
}

} // namespace kvplan
