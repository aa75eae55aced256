// The CUDA launch table's JSON form.
#include "plan/CudaProgram.h"
#include "plan/Plan.h"
#include "support/Align.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <utility>

namespace kvplan {

using nlohmann::json;

const char *deviceBufferName(DeviceBuffer b) {
  switch (b) {
  case DeviceBuffer::arena: return "arena";
  case DeviceBuffer::weights: return "weights";
  case DeviceBuffer::cache: return "cache";
  case DeviceBuffer::work: return "work";
  }
  return "?";
}

std::string cudaCubinSection(const std::string &arch) { return "cuda.cubin." + arch; }

namespace {
/// `bytes` at the end of a block of `top` bytes, which grows to the next
/// multiple of `align`; returns where they start.
int64_t takeAligned(int64_t &top, int64_t bytes, int64_t align) {
  const int64_t at = top;
  top = alignUp(at + bytes, align);
  return at;
}
} // namespace

CudaInputsLayout cudaInputsLayout(const EntryPoint &ep) {
  CudaInputsLayout l;
  auto take = [&](int64_t bytes) { return takeAligned(l.bytes, bytes, 16); };
  const Operand *table = ep.arg("page_table"), *windowTable = ep.arg("window_page_table");
  l.tokens = take(ep.rows * 4);
  l.positions = take(ep.rows * 4);
  l.pageTable = take((table ? table->numElements() : 0) * 4);
  l.windowPageTable = take((windowTable ? windowTable->numElements() : 0) * 4);
  l.params = take(ep.results.at(0).rows() * int64_t(sizeof(DeviceSamplingParams)));
  return l;
}

DeviceRef cudaOperandRef(const CudaEntry &e, const EntryPoint &ep, const Operand &o) {
  const CudaInputsLayout l = cudaInputsLayout(ep);
  for (auto [name, at] : {std::pair{"tokens", l.tokens}, {"positions", l.positions},
                          {"page_table", l.pageTable},
                          {"window_page_table", l.windowPageTable}})
    if (const Operand *a = ep.arg(name); a && a->value == o.value)
      return {DeviceBuffer::work, e.inputsOffset + at};
  return {DeviceBuffer::arena, o.offset};
}

CudaStaging cudaHostStaging(const Plan &plan) {
  CudaStaging st;
  auto take = [&](int64_t bytes) { return takeAligned(st.bytes, bytes, 64); };
  // The entry points first, then their smaller copies (decode.8), whose
  // logits arrive in the logits of what they copy: a call names that one.
  for (bool copies : {false, true})
    for (const auto &[name, ep] : plan.entryPoints) {
      const std::string role = entryRole(name);
      if (copies != (role != name)) continue;
      const Operand &logits = ep.results.at(0);
      const CudaInputsLayout in = cudaInputsLayout(ep);
      CudaStagingEntry e;
      e.tokens = take(in.bytes);
      e.positions = e.tokens + in.positions;
      e.pageTable = e.tokens + in.pageTable;
      e.windowPageTable = e.tokens + in.windowPageTable;
      e.params = e.tokens + in.params;
      e.sampled = take(logits.rows() * 4);
      auto whole = st.entries.find(role);
      const bool shared = copies && whole != st.entries.end() &&
                          logits.rows() <= plan.entryPoints.at(role).results.at(0).rows();
      e.logits = shared ? whole->second.logits : take(logits.rows() * logits.cols() * 4);
      st.entries[name] = e;
    }
  return st;
}

int64_t cudaHostStagingBytes(const Plan &plan) { return cudaHostStaging(plan).bytes; }

KernelLaunch resolveLaunch(const DeviceOp &op, int64_t active, char *const bases[4]) {
  KernelLaunch l{};
  for (size_t i = 0; i < op.pointers.size(); ++i)
    l.args.p[i] = bases[size_t(op.pointers[i].buffer)] + op.pointers[i].offset;
  l.args.i[0] = opRows(op, active);
  for (size_t i = 0; i < op.ints.size(); ++i) l.args.i[i + 1] = op.ints[i];
  for (size_t i = 0; i < op.reals.size(); ++i) l.args.d[i] = op.reals[i];
  for (size_t i = 0; i < op.prefetch.size(); ++i) {
    const DeviceRange &r = op.prefetch[i];
    l.args.pf[i] = bases[size_t(r.start.buffer)] + r.start.offset;
    l.args.pfBytes[i] = r.bytes;
  }
  l.grid = op.grid;
  if (op.rowsDim >= 0) l.grid[size_t(op.rowsDim)] = ceilDiv(active, op.rowsPerBlock);
  l.block = op.block;
  return l;
}

namespace {

// Integers in a launch table are offsets, sizes, dimensions and kernel
// arguments: a float or a huge value converted to int64_t would wrap.
constexpr int64_t kMaxInteger = int64_t(1) << 50;

int64_t integer(const json &j, const std::string &what, int64_t lo = 0, int64_t hi = kMaxInteger) {
  if (!j.is_number_integer())
    throw InputError("cuda program: " + what + " is not an integer (" + j.dump() + ")");
  // nlohmann::json reads every non-negative integer as unsigned: 0 must
  // still meet `lo`.
  const bool huge = j.is_number_unsigned() && j.get<uint64_t>() > uint64_t(INT64_MAX);
  if (huge || j.get<int64_t>() < lo || j.get<int64_t>() > hi)
    throw InputError("cuda program: " + what + " is " + j.dump() + ", outside [" +
                     std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return j.get<int64_t>();
}

json refJson(const DeviceRef &r) { return json::array({deviceBufferName(r.buffer), r.offset}); }

DeviceRef refFrom(const json &j, const std::string &what) {
  DeviceRef r;
  const std::string b = j.at(0).get<std::string>();
  if (b == "arena") r.buffer = DeviceBuffer::arena;
  else if (b == "weights") r.buffer = DeviceBuffer::weights;
  else if (b == "cache") r.buffer = DeviceBuffer::cache;
  else if (b == "work") r.buffer = DeviceBuffer::work;
  else throw InputError("cuda program: unknown device buffer '" + b + "'");
  r.offset = integer(j.at(1), what + " offset");
  return r;
}

DType typeFrom(const json &j) {
  auto t = parseDType(j.get<std::string>());
  if (!t) throw InputError("cuda program: unknown element type " + j.dump());
  return *t;
}

json opJson(const DeviceOp &op) {
  json j = {{"step", op.step},
            {"rows_follow_active", op.rowsFollowActive},
            {"static_rows", op.staticRows}};
  if (op.kind == DeviceOp::kernel) {
    json ptrs = json::array();
    for (const DeviceRef &r : op.pointers) ptrs.push_back(refJson(r));
    j.update({{"kernel", op.name}, {"grid", op.grid}, {"block", op.block},
              {"rows_dim", op.rowsDim}, {"rows_per_block", op.rowsPerBlock},
              {"pointers", std::move(ptrs)}, {"ints", op.ints}, {"reals", op.reals}});
    for (const DeviceRange &r : op.prefetch)
      j["prefetch"].push_back({refJson(r.start), r.bytes});
  } else if (op.kind == DeviceOp::allReduce) {
    j.update({{"all_reduce", true}, {"input", refJson(op.input)}, {"output", refJson(op.output)},
              {"k", op.k}});
  } else {
    j.update({{"gemm", true}, {"weight", refJson(op.weight)}, {"input", refJson(op.input)},
              {"output", refJson(op.output)}, {"m", op.m}, {"k", op.k}, {"lda", op.lda},
              {"ldb", op.ldb}, {"ldc", op.ldc}, {"weight_type", dtypeName(op.weightType)},
              {"input_type", dtypeName(op.inputType)}});
  }
  return j;
}

DeviceOp opFrom(const json &j) {
  DeviceOp op;
  op.step = integer(j.at("step"), "an op's step");
  const std::string at = "the op of step " + std::to_string(op.step) + " field ";
  auto field = [&](const char *n, int64_t lo = 1, int64_t hi = kMaxInteger) {
    return integer(j.at(n), at + "'" + n + "'", lo, hi);
  };
  op.rowsFollowActive = j.at("rows_follow_active").get<bool>();
  op.staticRows = field("static_rows");
  if (j.contains("all_reduce")) {
    op.kind = DeviceOp::allReduce;
    op.input = refFrom(j.at("input"), at + "'input'");
    op.output = refFrom(j.at("output"), at + "'output'");
    op.k = field("k");
    return op;
  }
  if (j.contains("gemm")) {
    op.kind = DeviceOp::gemm;
    op.weight = refFrom(j.at("weight"), at + "'weight'");
    op.input = refFrom(j.at("input"), at + "'input'");
    op.output = refFrom(j.at("output"), at + "'output'");
    op.m = field("m");
    op.k = field("k");
    op.lda = field("lda");
    op.ldb = field("ldb");
    op.ldc = field("ldc");
    op.weightType = typeFrom(j.at("weight_type"));
    op.inputType = typeFrom(j.at("input_type"));
    if (op.m <= 0 || op.k <= 0 || op.staticRows <= 0 || op.lda < op.k || op.ldb < op.k ||
        op.ldc < op.m)
      throw InputError("cuda program: a matrix product has inconsistent dimensions");
    return op;
  }
  op.name = j.at("kernel").get<std::string>();
  for (const char *n : {"grid", "block"}) {
    const json &dims = j.at(n);
    if (!dims.is_array() || dims.size() != 3)
      throw InputError("cuda program: " + at + "'" + n + "' is not 3 dimensions");
    for (size_t d = 0; d < 3; ++d)
      (std::string(n) == "grid" ? op.grid : op.block)[d] =
          integer(dims[d], at + "'" + n + "'[" + std::to_string(d) + "]", 1, INT32_MAX);
  }
  op.rowsDim = int(field("rows_dim", -1, 2));
  op.rowsPerBlock = field("rows_per_block");
  for (const json &r : j.at("pointers")) op.pointers.push_back(refFrom(r, at + "'pointers'"));
  if (!j.at("ints").is_array()) throw InputError("cuda program: " + at + "'ints' is not a list");
  for (const json &v : j.at("ints")) op.ints.push_back(integer(v, at + "'ints'", -kMaxInteger));
  op.reals = j.at("reals").get<std::vector<double>>();
  if (j.contains("prefetch")) {
    const json &list = j.at("prefetch");
    if (!list.is_array() || list.size() > size_t(kPrefetchRanges))
      throw InputError("cuda program: " + at + "'prefetch' is not a list of at most " +
                       std::to_string(kPrefetchRanges) + " ranges");
    for (const json &r : list) {
      if (!r.is_array() || r.size() != 2)
        throw InputError("cuda program: " + at + "'prefetch' holds " + r.dump() +
                         ", not [[buffer, offset], bytes]");
      DeviceRange d{refFrom(r.at(0), at + "'prefetch'"), integer(r.at(1), at + "'prefetch'", 16)};
      if (d.start.buffer != DeviceBuffer::weights || d.start.offset % 16 || d.bytes % 16)
        throw InputError("cuda program: " + at + "'prefetch' holds " + r.dump() +
                         ", not a multiple of 16 bytes of the weights at a multiple of 16");
      op.prefetch.push_back(d);
    }
  }
  if (op.pointers.size() > size_t(kKernelPointers) || op.ints.size() + 1 > size_t(kKernelInts) ||
      op.reals.size() > size_t(kKernelReals) || op.rowsDim < -1 || op.rowsDim > 2 ||
      op.rowsPerBlock < 1)
    throw InputError("cuda program: kernel '" + op.name + "' has malformed arguments");
  for (int d = 0; d < 3; ++d)
    if (op.grid[size_t(d)] < 1 || op.block[size_t(d)] < 1)
      throw InputError("cuda program: kernel '" + op.name + "' has an empty grid or block");
  return op;
}

/// Table `p.ropeTables.size()` of the "rope_tables" list, which must lie
/// in the workspace (read before its entries).
CudaRopeTable ropeTableFrom(const json &j, const CudaProgram &p) {
  const std::string at = "rope_tables[" + std::to_string(p.ropeTables.size()) + "] ";
  CudaRopeTable t;
  t.offset = integer(j.at("offset"), at + "'offset'");
  t.positions = integer(j.at("positions"), at + "'positions'", 1, INT32_MAX);
  const json &freqs = j.at("freqs");
  if (!freqs.is_array() || freqs.empty() || freqs.size() > 4096)
    throw InputError("cuda program: " + at + "'freqs' is not a list of 1 to 4096 numbers");
  for (const json &f : freqs) {
    if (!f.is_number() || !std::isfinite(f.get<double>()))
      throw InputError("cuda program: " + at + "'freqs' holds " + f.dump() +
                       ", not a finite number");
    t.freqs.push_back(f.get<double>());
  }
  if (const auto a = j.find("amplitudes"); a != j.end()) {
    if (!a->is_array() || a->size() != t.freqs.size())
      throw InputError("cuda program: " + at + "'amplitudes' is not a list as long as 'freqs'");
    for (const json &v : *a) {
      if (!v.is_number() || !(v.get<double>() > 0) || !std::isfinite(v.get<double>()))
        throw InputError("cuda program: " + at + "'amplitudes' holds " + v.dump() +
                         ", not a positive number");
      t.amplitudes.push_back(v.get<double>());
    }
  }
  if (t.offset % 8 || t.offset + t.bytes() > p.workspaceBytes)
    throw InputError("cuda program: " + at + "(" + std::to_string(t.bytes()) + " bytes at " +
                     std::to_string(t.offset) + ") lies outside the workspace of " +
                     std::to_string(p.workspaceBytes) + " bytes or is misaligned");
  return t;
}

} // namespace

CudaRopeTable ropeTableFor(const RopeParams &p) {
  CudaRopeTable t;
  t.freqs = ropeFrequencies(p);
  // Only partial LongRoPE scales pairs: other tables keep the list empty,
  // as launch tables written before it have them.
  if (p.attentionFactor) t.amplitudes = ropeAmplitudes(p);
  return t;
}

bool ropeTableServes(const CudaRopeTable &t, const RopeParams &p) {
  const CudaRopeTable want = ropeTableFor(p);
  auto ones = [](const CudaRopeTable &x) {
    return x.amplitudes.empty() ? std::vector<double>(x.freqs.size(), 1.0) : x.amplitudes;
  };
  return t.freqs == want.freqs && ones(t) == ones(want);
}

LaunchCounts countLaunches(const CudaEntry &e, bool deviceSampling) {
  LaunchCounts c;
  c.kernels = deviceSampling ? int64_t(e.sampling.size()) : 0;
  for (const DeviceOp &op : e.ops) {
    switch (op.kind) {
    case DeviceOp::kernel: ++c.kernels; break;
    case DeviceOp::gemm: ++c.products; break;
    case DeviceOp::allReduce: ++c.allReduces; break;
    }
  }
  return c;
}

json toJson(const CudaProgram &p) {
  json entries = json::object();
  for (const auto &[name, e] : p.entries) {
    json ops = json::array();
    for (const DeviceOp &op : e.ops) ops.push_back(opJson(op));
    json sampling = json::array();
    for (const DeviceOp &op : e.sampling) sampling.push_back(opJson(op));
    entries[name] = {{"ops", std::move(ops)},
                     {"sampling", std::move(sampling)},
                     {"inputs_offset", e.inputsOffset},
                     {"sampling_params_offset", e.samplingParamsOffset},
                     {"sampled_offset", e.sampledOffset},
                     {"argmax_offset", e.argmaxOffset}};
  }
  json tables = json::array();
  for (const CudaRopeTable &t : p.ropeTables) {
    tables.push_back({{"offset", t.offset}, {"positions", t.positions}, {"freqs", t.freqs}});
    if (!t.amplitudes.empty()) tables.back()["amplitudes"] = t.amplitudes;
  }
  return {{"archs", p.archs},
          {"workspace_bytes", p.workspaceBytes},
          {"cublas_workspace", {p.cublasWorkspaceOffset, p.cublasWorkspaceBytes}},
          {"rope_tables", std::move(tables)},
          {"entries", std::move(entries)}};
}

void checkCudaProgramFits(const CudaProgram &p, const MemoryBill &bill) {
  const int64_t sizes[4] = {bill.arenaAllocBytes, bill.weightsBlobBytes, bill.kvCacheBytes,
                            bill.workspaceBytes};
  const char *what[4] = {"the arena", "the weights section", "the KV cache", "the workspace"};
  const std::string fix = "; the artifact's launch table does not fit its plan (recompile it "
                          "with this kvplan)";
  if (p.workspaceBytes > bill.workspaceBytes)
    throw InputError("cuda program: its workspace of " + std::to_string(p.workspaceBytes) +
                     " bytes is more than the plan's " + std::to_string(bill.workspaceBytes) + fix);
  auto within = [&](const DeviceRef &r, const std::string &at) {
    const int64_t size = sizes[int(r.buffer)];
    if (r.offset < 0 || r.offset >= size)
      throw InputError("cuda program: " + at + " is at byte " + std::to_string(r.offset) + " of " +
                       what[int(r.buffer)] + ", which holds " + std::to_string(size) + " bytes" +
                       fix);
  };
  for (const auto &[name, e] : p.entries) {
    const std::string entry = "entry '" + name + "' ";
    int64_t index = 0;
    for (const std::vector<DeviceOp> *list : {&e.ops, &e.sampling})
      for (const DeviceOp &op : *list) {
        const std::string at = entry + "op " + std::to_string(index++) + " (" +
                               (op.kind == DeviceOp::kernel ? "kernel '" + op.name + "'"
                                : op.kind == DeviceOp::gemm ? std::string("matrix product")
                                                            : std::string("all-reduce")) +
                               ", step " + std::to_string(op.step) + ") ";
        for (size_t i = 0; i < op.pointers.size(); ++i)
          within(op.pointers[i], at + "pointer " + std::to_string(i));
        for (size_t i = 0; i < op.prefetch.size(); ++i) {
          const DeviceRange &r = op.prefetch[i];
          within(r.start, at + "prefetch " + std::to_string(i));
          within({r.start.buffer, r.start.offset + r.bytes - 1},
                 at + "prefetch " + std::to_string(i) + "'s last byte");
        }
        if (op.kind == DeviceOp::gemm) within(op.weight, at + "'weight'");
        if (op.kind != DeviceOp::kernel) {
          within(op.input, at + "'input'");
          within(op.output, at + "'output'");
        }
      }
    for (auto [field, offset] : {std::pair{"inputs_offset", e.inputsOffset},
                                 {"sampling_params_offset", e.samplingParamsOffset},
                                 {"sampled_offset", e.sampledOffset},
                                 {"argmax_offset", e.argmaxOffset}})
      within({DeviceBuffer::work, offset}, entry + "'" + field + "'");
  }
}

CudaProgram cudaProgramFromJson(const json &j) {
  try {
    CudaProgram p;
    p.archs = j.at("archs").get<std::vector<std::string>>();
    p.workspaceBytes = integer(j.at("workspace_bytes"), "workspace_bytes");
    p.cublasWorkspaceOffset = integer(j.at("cublas_workspace").at(0), "cublas_workspace[0]");
    p.cublasWorkspaceBytes = integer(j.at("cublas_workspace").at(1), "cublas_workspace[1]");
    for (const json &t : j.at("rope_tables")) p.ropeTables.push_back(ropeTableFrom(t, p));
    for (const auto &[name, e] : j.at("entries").items()) {
      CudaEntry ce;
      for (const json &op : e.at("ops")) ce.ops.push_back(opFrom(op));
      for (const json &op : e.at("sampling")) {
        ce.sampling.push_back(opFrom(op));
        if (ce.sampling.back().kind != DeviceOp::kernel)
          throw InputError("cuda program: entry '" + name +
                           "' samples with a device op that is not a kernel");
      }
      if (ce.sampling.empty())
        throw InputError("cuda program: entry '" + name + "' has no sampling kernel");
      ce.argmaxOffset = integer(e.at("argmax_offset"), "entry '" + name + "' argmax_offset");
      ce.inputsOffset = integer(e.at("inputs_offset"), "entry '" + name + "' inputs_offset");
      ce.samplingParamsOffset =
          integer(e.at("sampling_params_offset"), "entry '" + name + "' sampling_params_offset");
      ce.sampledOffset = integer(e.at("sampled_offset"), "entry '" + name + "' sampled_offset");
      p.entries[name] = std::move(ce);
    }
    if (p.cublasWorkspaceOffset < 0 || p.cublasWorkspaceBytes < 0 ||
        p.cublasWorkspaceOffset + p.cublasWorkspaceBytes > p.workspaceBytes)
      throw InputError("cuda program: the cuBLAS workspace lies outside the workspace");
    return p;
  } catch (const nlohmann::json::exception &e) {
    throw InputError(std::string("cuda program: not valid: ") + e.what());
  }
}

} // namespace kvplan
