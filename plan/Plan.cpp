// The plan's JSON form and its memory bill.
#include "plan/Plan.h"
#include "support/Align.h"

#include <algorithm>

namespace kvplan {

static int64_t product(const std::vector<int64_t> &shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

int64_t Operand::numElements() const { return product(shape); }
int64_t WeightEntry::numElements() const { return product(shape); }

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
  b.workspaceBytes = deviceWorkspaceBytes;
  b.totalBytes = b.weightsBytes + b.kvCacheBytes + b.arenaAllocBytes + b.workspaceBytes;
  return b;
}

//===----------------------------------------------------------------------===//
// JSON
//===----------------------------------------------------------------------===//

namespace {

using nlohmann::json;

const char *kindName(OperandKind k) {
  switch (k) {
  case OperandKind::arena: return "arena";
  case OperandKind::kvCache: return "kv_cache";
  case OperandKind::kvView: return "kv_view";
  }
  return "?";
}

json operandJson(const Operand &o) {
  json j = {{"kind", kindName(o.kind)}};
  if (!o.name.empty()) j["name"] = o.name;
  if (o.kind == OperandKind::arena) {
    j["offset"] = o.offset;
    j["shape"] = o.shape;
    j["dtype"] = dtypeName(o.dtype);
  } else if (o.kind == OperandKind::kvView) {
    j["layer"] = o.layer;
    j["part"] = o.values ? "values" : "keys";
  }
  return j;
}

DType dtypeFrom(const json &j, const char *what) {
  auto d = parseDType(j.get<std::string>());
  if (!d) throw InputError(std::string("plan: unknown dtype in ") + what);
  return *d;
}

Operand operandFrom(const json &j) {
  Operand o;
  std::string kind = j.at("kind").get<std::string>();
  if (j.contains("name")) o.name = j.at("name").get<std::string>();
  if (kind == "arena") {
    o.kind = OperandKind::arena;
    o.offset = j.at("offset").get<int64_t>();
    o.shape = j.at("shape").get<std::vector<int64_t>>();
    o.dtype = dtypeFrom(j.at("dtype"), "operand");
  } else if (kind == "kv_cache") {
    o.kind = OperandKind::kvCache;
  } else if (kind == "kv_view") {
    o.kind = OperandKind::kvView;
    o.layer = j.at("layer").get<int64_t>();
    o.values = j.at("part").get<std::string>() == "values";
  } else {
    throw InputError("plan: unknown operand kind '" + kind + "'");
  }
  return o;
}

json operandsJson(const std::vector<Operand> &v) {
  json a = json::array();
  for (const Operand &o : v) a.push_back(operandJson(o));
  return a;
}

std::vector<Operand> operandsFrom(const json &j) {
  std::vector<Operand> v;
  for (const json &e : j) v.push_back(operandFrom(e));
  return v;
}

} // namespace

json toJson(const MemoryBill &b) {
  return {{"params", b.params},
          {"weights_bytes", b.weightsBytes},
          {"weights_blob_bytes", b.weightsBlobBytes},
          {"kv_cache_bytes", b.kvCacheBytes},
          {"arena_bytes", b.arenaBytes},
          {"arena_alloc_bytes", b.arenaAllocBytes},
          {"workspace_bytes", b.workspaceBytes},
          {"total_bytes", b.totalBytes}};
}

json toJson(const Plan &p) {
  json weights = json::array();
  for (const WeightEntry &w : p.weights) {
    json e = {{"name", w.name}, {"shape", w.shape}, {"dtype", dtypeName(w.dtype)},
              {"offset", w.offset}, {"bytes", w.bytes}};
    if (!w.parts.empty()) e["parts"] = w.parts;
    if (w.groupSize) {
      e["group_size"] = w.groupSize;
      e["scales_offset"] = w.scalesOffset;
    }
    weights.push_back(std::move(e));
  }
  const KVCacheLayout &kv = p.kvCache;
  json entries = json::object();
  for (const auto &[name, ep] : p.entryPoints) {
    json steps = json::array();
    for (const Step &s : ep.steps) {
      json js = {{"op", s.op}, {"inputs", operandsJson(s.inputs)},
                 {"outputs", operandsJson(s.outputs)}};
      if (!s.weights.empty()) js["weights"] = s.weights;
      if (!s.attrs.empty()) js["attrs"] = s.attrs;
      steps.push_back(std::move(js));
    }
    entries[name] = {{"rows", ep.rows}, {"arena_bytes", ep.arenaBytes},
                     {"args", operandsJson(ep.args)}, {"results", operandsJson(ep.results)},
                     {"steps", std::move(steps)}};
  }
  json j = {
      {"format_version", p.formatVersion},
      {"kvplan_version", p.kvplanVersion},
      {"git_hash", p.gitHash},
      {"target", targetName(p.settings.target)},
      {"model", toJson(p.model)},
      {"settings", toJson(p.settings)},
      {"memory", toJson(p.memoryBill())},
      {"kv_cache",
       {{"layers", kv.layers}, {"pages", kv.pages}, {"page_size", kv.pageSize},
        {"kv_heads", kv.kvHeads}, {"head_dim", kv.headDim},
        {"pages_per_sequence", kv.pagesPerSequence}, {"dtype", dtypeName(kv.dtype)},
        {"layout", "[layers][2 (keys, values)][pages][kv_heads][page_size][head_dim]"},
        {"bytes", kv.bytes()}}},
      {"weights", std::move(weights)},
      {"entry_points", std::move(entries)},
  };
  if (p.settings.target == Target::cuda)
    j["cuda"] = {{"archs", p.cudaArchs}, {"workspace_bytes", p.deviceWorkspaceBytes}};
  return j;
}

Plan planFromJson(const json &j) {
  try {
    Plan p;
    p.formatVersion = j.at("format_version").get<int>();
    p.kvplanVersion = j.at("kvplan_version").get<std::string>();
    p.gitHash = j.at("git_hash").get<std::string>();
    p.model = modelSpecFromJson(j.at("model"));
    p.settings = compileSettingsFromJson(j.at("settings"));
    for (const json &e : j.at("weights")) {
      WeightEntry w;
      w.name = e.at("name").get<std::string>();
      w.shape = e.at("shape").get<std::vector<int64_t>>();
      w.dtype = dtypeFrom(e.at("dtype"), "weights");
      w.offset = e.at("offset").get<uint64_t>();
      w.bytes = e.at("bytes").get<uint64_t>();
      if (e.contains("parts")) w.parts = e.at("parts").get<std::vector<std::string>>();
      if (e.contains("group_size")) {
        w.groupSize = e.at("group_size").get<int64_t>();
        w.scalesOffset = e.at("scales_offset").get<uint64_t>();
      }
      if (w.dtype == DType::i8 && w.groupSize != kInt8Group)
        throw InputError("plan: int8 weight '" + w.name + "' has group size " +
                         std::to_string(w.groupSize) + "; this kvplan reads groups of " +
                         std::to_string(kInt8Group));
      p.weights.push_back(std::move(w));
    }
    const json &kv = j.at("kv_cache");
    p.kvCache.layers = kv.at("layers").get<int64_t>();
    p.kvCache.pages = kv.at("pages").get<int64_t>();
    p.kvCache.pageSize = kv.at("page_size").get<int64_t>();
    p.kvCache.kvHeads = kv.at("kv_heads").get<int64_t>();
    p.kvCache.headDim = kv.at("head_dim").get<int64_t>();
    p.kvCache.pagesPerSequence = kv.at("pages_per_sequence").get<int64_t>();
    p.kvCache.dtype = dtypeFrom(kv.at("dtype"), "kv_cache");
    for (const auto &[name, e] : j.at("entry_points").items()) {
      EntryPoint ep;
      ep.name = name;
      ep.rows = e.at("rows").get<int64_t>();
      ep.arenaBytes = e.at("arena_bytes").get<int64_t>();
      ep.args = operandsFrom(e.at("args"));
      ep.results = operandsFrom(e.at("results"));
      for (const json &js : e.at("steps")) {
        Step s;
        s.op = js.at("op").get<std::string>();
        s.inputs = operandsFrom(js.at("inputs"));
        s.outputs = operandsFrom(js.at("outputs"));
        if (js.contains("weights"))
          s.weights = js.at("weights").get<std::map<std::string, std::string>>();
        if (js.contains("attrs")) s.attrs = js.at("attrs");
        ep.steps.push_back(std::move(s));
      }
      p.entryPoints[name] = std::move(ep);
    }
    if (j.contains("cuda")) {
      p.cudaArchs = j.at("cuda").at("archs").get<std::vector<std::string>>();
      p.deviceWorkspaceBytes = j.at("cuda").at("workspace_bytes").get<int64_t>();
      if (p.deviceWorkspaceBytes < 0) throw InputError("plan: negative cuda workspace");
    }
    return p;
  } catch (const json::exception &e) {
    throw InputError(std::string("the plan is not valid: ") + e.what());
  }
}

} // namespace kvplan
