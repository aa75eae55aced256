// The plan's JSON form. Writing walks each op's fields (plan/PlanOps.h);
// reading walks the same fields, checks each one's kind and type, rejects
// fields the op does not have, and then checks the entry points' dataflow:
// every operand inside the arena, every value read while it is live, no op
// writing over its own inputs, every weight in the table, and each op's
// shapes against its weights, attributes and the cache (plan/PlanShapes.cpp).
// A plan that fails is "incompatible because ..." with the step named.
#include "plan/Plan.h"
#include "plan/Cost.h"
#include "plan/PlanShapes.h"
#include "support/Format.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <set>
#include <type_traits>

namespace kvplan {

using nlohmann::json;

namespace {

//===----------------------------------------------------------------------===//
// Writing
//===----------------------------------------------------------------------===//

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
    j["value"] = o.value;
    j["offset"] = o.offset;
    j["shape"] = o.shape;
    j["dtype"] = dtypeName(o.dtype);
  } else if (o.kind == OperandKind::kvView) {
    j["layer"] = o.layer;
    j["part"] = o.values ? "values" : "keys";
  }
  if (o.window) j["window"] = true;
  return j;
}

json operandsJson(const std::vector<Operand> &v) {
  json a = json::array();
  for (const Operand &o : v) a.push_back(operandJson(o));
  return a;
}

json scalingJson(const RopeScaling &s) {
  return {{"factor", s.factor},
          {"low_freq_factor", s.lowFreqFactor},
          {"high_freq_factor", s.highFreqFactor},
          {"original_max_position_embeddings", s.originalMaxPositions}};
}

/// Writes each field of an op under its ODS name.
struct StepWriter {
  json &j;
  void operand(const char *n, const Operand &o, OperandClass) { j[n] = operandJson(o); }
  void optionalOperand(const char *n, const std::optional<Operand> &o, OperandClass) {
    if (o) j[n] = operandJson(*o);
  }
  void result(const char *n, const Operand &o, OperandClass) { j[n] = operandJson(o); }
  void results(const char *n, const std::vector<Operand> &v, OperandClass) {
    j[n] = operandsJson(v);
  }
  void weight(const char *n, const std::string &w) { j[n] = w; }
  void optionalWeight(const char *n, const std::optional<std::string> &w) {
    if (w) j[n] = *w;
  }
  void attr(const char *n, int64_t v) { j[n] = v; }
  void attr(const char *n, double v) { j[n] = v; }
  void attr(const char *n, AttentionMask m) { j[n] = attentionMaskName(m); }
  void attr(const char *n, bool v) {
    if (v) j[n] = true;
  }
  void optionalAttr(const char *n, const std::optional<double> &v) {
    if (v) j[n] = *v;
  }
  void optionalAttr(const char *n, const std::optional<int64_t> &v) {
    if (v) j[n] = *v;
  }
  void optionalAttr(const char *n, const std::optional<RopeScaling> &s) {
    if (s) j[n] = scalingJson(*s);
  }
  void optionalAttr(const char *n, const std::vector<double> &v) {
    if (!v.empty()) j[n] = v;
  }
};

json stepJson(const Step &s) {
  json j = {{"op", s.name()}};
  if (!s.loc.empty()) j["loc"] = s.loc;
  std::visit([&](const auto &op) { op.fields(StepWriter{j}); }, s.op);
  for (const WeightRows &r : s.prefetch)
    j["prefetch"].push_back(json::array({r.weight, r.begin, r.end}));
  return j;
}

json weightJson(const WeightEntry &w) {
  json e = {{"name", w.name}, {"shape", w.shape}, {"dtype", dtypeName(w.dtype)},
            {"offset", w.offset}, {"bytes", w.bytes}};
  if (!w.parts.empty()) e["parts"] = w.parts;
  if (w.shardDim >= 0) {
    e["shard"] = {{"dim", w.shardDim}, {"pieces", w.shardPieces}};
    if (!w.shardWhy.empty()) e["shard"]["why"] = w.shardWhy;
  }
  if (w.groupSize) {
    e["group_size"] = w.groupSize;
    e["scales_offset"] = w.scalesOffset;
  }
  if (w.dtype == DType::i4) e["mins_offset"] = w.minsOffset;
  return e;
}

json kvCacheJson(const KVCacheLayout &kv) {
  return {{"layers", kv.layers}, {"pages", kv.pages}, {"page_size", kv.pageSize},
          {"kv_heads", kv.kvHeads}, {"head_dim", kv.headDim},
          {"pages_per_sequence", kv.pagesPerSequence}, {"dtype", dtypeName(kv.dtype)},
          {"layout", "[layers][2 (keys, values)][pages][kv_heads][page_size][head_dim]"},
          {"bytes", kv.bytes()}};
}

//===----------------------------------------------------------------------===//
// Reading
//===----------------------------------------------------------------------===//

[[noreturn]] void incompatible(const std::string &where, const std::string &what) {
  throw InputError("the plan is incompatible because " + where + " " + what +
                   "; recompile the model with this kvplan");
}

// Integers in a plan are sizes, offsets, counts and ids: a float, a negative
// or a value past 2^50 is damage, and converting it would overflow.
constexpr int64_t kMaxPlanInteger = int64_t(1) << 50;

int64_t integer(const json &j, const std::string &where, int64_t lo = 0,
                int64_t hi = kMaxPlanInteger) {
  if (!j.is_number_integer())
    incompatible(where, "is not an integer (" + j.dump() + ")");
  const int64_t v = j.is_number_unsigned() && j.get<uint64_t>() > uint64_t(INT64_MAX)
                        ? INT64_MAX
                        : j.get<int64_t>();
  if (v < lo || v > hi)
    incompatible(where, "is " + std::to_string(v) + ", outside [" + std::to_string(lo) + ", " +
                            std::to_string(hi) + "]");
  return v;
}

double number(const json &j, const std::string &where) {
  if (!j.is_number()) incompatible(where, "is not a number (" + j.dump() + ")");
  return j.get<double>();
}

std::string text(const json &j, const std::string &where) {
  if (!j.is_string()) incompatible(where, "is not a string (" + j.dump() + ")");
  return j.get<std::string>();
}

const json &member(const json &j, const char *key, const std::string &where) {
  if (!j.is_object()) incompatible(where, "is not an object");
  auto it = j.find(key);
  if (it == j.end()) incompatible(where, std::string("has no '") + key + "'");
  return *it;
}

DType dtypeOf(const json &j, const std::string &where) {
  std::optional<DType> d = parseDType(text(j, where));
  if (!d) incompatible(where, "names no element type kvplan knows ('" + j.get<std::string>() + "')");
  return *d;
}

std::vector<int64_t> shapeOf(const json &j, const std::string &where) {
  if (!j.is_array() || j.empty() || j.size() > 4)
    incompatible(where, "is not a shape of 1 to 4 dimensions (" + j.dump() + ")");
  std::vector<int64_t> shape;
  int64_t elements = 1;
  for (size_t i = 0; i < j.size(); ++i) {
    shape.push_back(integer(j[i], where + "[" + std::to_string(i) + "]", 1, kMaxPlanInteger));
    if (elements > kMaxPlanInteger / shape.back())
      incompatible(where, "holds more than 2^50 elements");
    elements *= shape.back();
  }
  return shape;
}

Operand operandFrom(const json &j, const std::string &where) {
  Operand o;
  const std::string kind = text(member(j, "kind", where), where + " kind");
  if (j.contains("name")) o.name = text(j.at("name"), where + " name");
  if (kind == "arena") {
    o.kind = OperandKind::arena;
    o.value = integer(member(j, "value", where), where + " value");
    o.offset = integer(member(j, "offset", where), where + " offset");
    o.shape = shapeOf(member(j, "shape", where), where + " shape");
    o.dtype = dtypeOf(member(j, "dtype", where), where + " dtype");
  } else if (kind == "kv_cache") {
    o.kind = OperandKind::kvCache;
  } else if (kind == "kv_view") {
    o.kind = OperandKind::kvView;
    o.layer = integer(member(j, "layer", where), where + " layer");
    const std::string part = text(member(j, "part", where), where + " part");
    if (part != "keys" && part != "values")
      incompatible(where, "is a view of '" + part + "', not keys or values");
    o.values = part == "values";
  } else {
    incompatible(where, "has kind '" + kind + "', not arena, kv_cache or kv_view");
  }
  if (j.contains("window")) {
    if (o.kind == OperandKind::arena || !j.at("window").is_boolean())
      incompatible(where, "has a 'window' that is not a cache's or a view's true or false");
    o.window = j.at("window").get<bool>();
  }
  return o;
}

bool isActivations(const Operand &o) {
  return o.kind == OperandKind::arena && o.shape.size() == 2 && isFloatDType(o.dtype);
}
bool isIds(const Operand &o) {
  return o.kind == OperandKind::arena && o.shape.size() == 1 && o.dtype == DType::i32;
}

bool fits(const Operand &o, OperandClass c) {
  switch (c) {
  case OperandClass::activations: return isActivations(o);
  case OperandClass::logits: return isActivations(o) && o.dtype == DType::f32;
  case OperandClass::ids: return isIds(o);
  case OperandClass::pageTable:
    return o.kind == OperandKind::arena && o.shape.size() == 2 && o.dtype == DType::i32;
  case OperandClass::cache: return o.kind == OperandKind::kvCache;
  case OperandClass::view: return o.kind == OperandKind::kvView;
  case OperandClass::keysOrValues: return isActivations(o) || o.kind == OperandKind::kvView;
  case OperandClass::rows: return isActivations(o) || isIds(o);
  }
  return false;
}

/// Reads each field of an op under its ODS name, checking its kind.
struct StepReader {
  const json &j;
  const std::string &where;
  std::set<std::string> seen{"op", "loc"};

  const json &field(const char *n, const char *what) {
    auto it = j.find(n);
    if (it == j.end()) incompatible(where, std::string("has no field '") + n + "' (" + what + ")");
    seen.insert(n);
    return *it;
  }
  Operand checked(const json &v, const char *n, OperandClass c) {
    const std::string at = where + " field '" + n + "'";
    Operand o = operandFrom(v, at);
    if (!fits(o, c)) incompatible(at, std::string("is not ") + operandClassName(c));
    return o;
  }
  void operand(const char *n, Operand &o, OperandClass c) { o = checked(field(n, "an operand"), n, c); }
  void optionalOperand(const char *n, std::optional<Operand> &o, OperandClass c) {
    if (j.contains(n)) o = checked(field(n, "an operand"), n, c);
  }
  void result(const char *n, Operand &o, OperandClass c) { o = checked(field(n, "a result"), n, c); }
  void results(const char *n, std::vector<Operand> &v, OperandClass c) {
    const json &a = field(n, "a list of results");
    if (!a.is_array() || a.empty()) incompatible(where, std::string("field '") + n + "' is not a list of results");
    for (const json &e : a) v.push_back(checked(e, n, c));
  }
  void weight(const char *n, std::string &w) { w = text(field(n, "a weight name"), where + " field '" + n + "'"); }
  void optionalWeight(const char *n, std::optional<std::string> &w) {
    if (j.contains(n)) w = text(field(n, "a weight name"), where + " field '" + n + "'");
  }
  void attr(const char *n, int64_t &v) {
    v = integer(field(n, "an integer"), where + " attribute '" + n + "'", -kMaxPlanInteger);
  }
  void attr(const char *n, double &v) { v = number(field(n, "a number"), where + " attribute '" + n + "'"); }
  void attr(const char *n, AttentionMask &m) {
    const std::string s = text(field(n, "causal, self or cache"), where + " attribute '" + n + "'");
    if (s == "causal") m = AttentionMask::causal;
    else if (s == "self") m = AttentionMask::self;
    else if (s == "cache") m = AttentionMask::cache;
    else incompatible(where, std::string("attribute '") + n + "' is '" + s + "', not causal, self or cache");
  }
  void attr(const char *n, bool &v) {
    if (!j.contains(n)) return;
    const json &f = field(n, "true");
    if (!f.is_boolean() || !f.get<bool>()) incompatible(where, std::string("attribute '") + n + "' is not true (absent means false)");
    v = true;
  }
  void optionalAttr(const char *n, std::optional<double> &v) {
    if (j.contains(n)) v = number(field(n, "a number"), where + " attribute '" + n + "'");
  }
  void optionalAttr(const char *n, std::optional<int64_t> &v) {
    if (j.contains(n))
      v = integer(field(n, "a positive integer"), where + " attribute '" + n + "'", 1);
  }
  void optionalAttr(const char *n, std::optional<RopeScaling> &s) {
    if (!j.contains(n)) return;
    const json &d = field(n, "Llama 3 RoPE scaling");
    const std::string at = where + " attribute '" + n + "'";
    RopeScaling r;
    r.factor = number(member(d, "factor", at), at + " factor");
    r.lowFreqFactor = number(member(d, "low_freq_factor", at), at + " low_freq_factor");
    r.highFreqFactor = number(member(d, "high_freq_factor", at), at + " high_freq_factor");
    r.originalMaxPositions = integer(member(d, "original_max_position_embeddings", at),
                                     at + " original_max_position_embeddings", 1);
    s = r;
  }
  void optionalAttr(const char *n, std::vector<double> &v) {
    if (!j.contains(n)) return;
    const json &a = field(n, "a list of numbers");
    const std::string at = where + " attribute '" + n + "'";
    if (!a.is_array() || a.empty()) incompatible(at, "is not a list of numbers");
    for (size_t i = 0; i < a.size(); ++i) {
      v.push_back(number(a[i], at + "[" + std::to_string(i) + "]"));
      if (!(v.back() > 0) || !std::isfinite(v.back()))
        incompatible(at + "[" + std::to_string(i) + "]", "is not a positive finite number");
    }
  }
  void rejectUnknown() const {
    for (const auto &[key, value] : j.items())
      if (!seen.count(key)) incompatible(where, "has a field '" + key + "' its op does not have");
  }
};

// A RoPE op's rotated width is an even part of its head, its attention
// factor positive, and its frequency factors, when it has them, one per
// rotated pair.
void checkFreqFactors(const Step &s, const std::string &at) {
  const RopeParams *p = stepRope(s);
  if (!p) return;
  const int64_t rot = p->rotated();
  if (p->rotaryDim && (rot < 2 || rot > p->headDim || rot % 2 != 0))
    incompatible(at, "has rotary_dim " + std::to_string(rot) + " for head_dim " +
                         std::to_string(p->headDim) + " (expected an even number from 2 to "
                         "head_dim)");
  if (p->attentionFactor && !(*p->attentionFactor > 0 && std::isfinite(*p->attentionFactor)))
    incompatible(at, "has attention_factor " + formatNumber(*p->attentionFactor) +
                         " (expected a positive number)");
  if (!p->freqFactors.empty() && int64_t(p->freqFactors.size()) * 2 != rot) {
    const std::string width = p->rotaryDim ? "rotary_dim" : "head_dim";
    incompatible(at, "has " + std::to_string(p->freqFactors.size()) + " freq_factors for " +
                         width + " " + std::to_string(rot) + " (expected " + width + " / 2)");
  }
}

/// A step's "prefetch": [[weight, begin, end], ...], rows in order.
std::vector<WeightRows> prefetchFrom(const json &j, const std::string &at) {
  const std::string what = at + " field 'prefetch'";
  if (!j.is_array()) incompatible(what, "is not a list of [weight, first row, end row]");
  std::vector<WeightRows> out;
  for (size_t i = 0; i < j.size(); ++i) {
    const std::string item = what + "[" + std::to_string(i) + "]";
    const json &e = j[i];
    if (!e.is_array() || e.size() != 3 || !e[0].is_string())
      incompatible(item, "is not [weight, first row, end row]");
    WeightRows r{e[0].get<std::string>(), integer(e[1], item + " first row"),
                 integer(e[2], item + " end row")};
    if (r.end <= r.begin) incompatible(item, "asks for no row (end <= first)");
    out.push_back(std::move(r));
  }
  return out;
}

Step stepFrom(const json &j, const std::string &where) {
  if (!j.is_object()) incompatible(where, "is not an object");
  const std::string name = text(member(j, "op", where), where + " op");
  std::optional<OpKind> kind = opKindNamed(name);
  if (!kind) incompatible(where, "is op '" + name + "', which this kvplan does not know");
  Step s;
  if (j.contains("loc")) s.loc = text(j.at("loc"), where + " loc");
  const std::string at = where + " ('" + name + "'" + (s.loc.empty() ? "" : " at " + s.loc) + ")";
  StepReader r{j, at};
  s.op = makeOp(*kind);
  std::visit([&](auto &op) { op.fields(r); }, s.op);
  if (j.contains("prefetch")) {
    r.seen.insert("prefetch");
    s.prefetch = prefetchFrom(j.at("prefetch"), at);
  }
  r.rejectUnknown();
  checkFreqFactors(s, at);
  return s;
}

std::vector<Operand> operandsFrom(const json &j, const std::string &where) {
  if (!j.is_array()) incompatible(where, "is not a list");
  std::vector<Operand> v;
  for (size_t i = 0; i < j.size(); ++i)
    v.push_back(operandFrom(j[i], where + "[" + std::to_string(i) + "]"));
  return v;
}

EntryPoint entryFrom(const std::string &name, const json &e) {
  const std::string where = "entry point '" + name + "'";
  EntryPoint ep;
  ep.name = name;
  ep.rows = integer(member(e, "rows", where), where + " rows", 1);
  ep.arenaBytes = integer(member(e, "arena_bytes", where), where + " arena_bytes");
  ep.args = operandsFrom(member(e, "args", where), where + " args");
  ep.results = operandsFrom(member(e, "results", where), where + " results");
  const json &steps = member(e, "steps", where);
  if (!steps.is_array()) incompatible(where, "steps is not a list");
  for (size_t i = 0; i < steps.size(); ++i)
    ep.steps.push_back(stepFrom(steps[i], "step " + std::to_string(i) + " of " + where));
  return ep;
}

/// The quantized types' fields: group_size and scales_offset for int8, int4
/// and mxfp4, mins_offset for int4, and none of them for the float types.
void quantFieldsFrom(const json &e, WeightEntry &w, const std::string &at) {
  const bool quantized = isGroupedDType(w.dtype);
  const std::string type = dtypeName(w.dtype);
  for (const char *f : {"group_size", "scales_offset", "mins_offset"}) {
    const bool wanted = quantized && (std::string(f) != "mins_offset" || w.dtype == DType::i4);
    if (wanted)
      member(e, f, at);
    else if (e.contains(f))
      incompatible(at, "is " + type + " and has '" + f + "', which " + type + " weights do not");
  }
  if (!quantized) return;
  if (w.shape.size() < 2)
    incompatible(at, "is " + type + " but not a matrix or a stack of them (" +
                         json(w.shape).dump() + ")");
  w.groupSize = integer(e.at("group_size"), at + " group_size", 1);
  const int64_t group = dtypeGroup(w.dtype);
  if (w.groupSize != group)
    incompatible(at, "is " + type + " in groups of " + std::to_string(w.groupSize) +
                         " and this kvplan reads groups of " + std::to_string(group));
  w.scalesOffset = uint64_t(integer(e.at("scales_offset"), at + " scales_offset"));
  if (w.dtype == DType::i4)
    w.minsOffset = uint64_t(integer(e.at("mins_offset"), at + " mins_offset"));
}

/// A weight's bytes, and where a quantized one's scales and minimums start,
/// are what its shape and type make them (weightLayout()): an executor that
/// took other offsets would read beside them.
void checkWeightLayout(const WeightEntry &w, const std::string &at) {
  const WeightLayout l = weightLayout(w.shape, w.dtype);
  const std::string type = dtypeName(w.dtype), shape = json(w.shape).dump();
  if (w.groupSize && w.scalesOffset != l.scalesOffset)
    incompatible(at, "has scales_offset " + std::to_string(w.scalesOffset) +
                         ", but the codes of a " + shape + " " + type + " matrix end at " +
                         std::to_string(l.scalesOffset) + " (64-byte aligned), where its scales "
                         "start");
  if (w.dtype == DType::i4 && w.minsOffset != l.minsOffset)
    incompatible(at, "has mins_offset " + std::to_string(w.minsOffset) +
                         ", but the scales of a " + shape + " int4 matrix end at " +
                         std::to_string(l.minsOffset) + " (64-byte aligned), where its minimums "
                         "start");
  if (w.groupSize ? w.bytes != l.bytes : w.bytes < l.bytes)
    incompatible(at, "holds " + std::to_string(w.bytes) + " bytes and a " + shape + " " + type +
                         " weight takes " + std::to_string(l.bytes));
}

WeightEntry weightFrom(const json &e, size_t index) {
  const std::string where = "weight #" + std::to_string(index);
  WeightEntry w;
  w.name = text(member(e, "name", where), where + " name");
  const std::string at = "weight '" + w.name + "'";
  w.shape = shapeOf(member(e, "shape", at), at + " shape");
  w.dtype = dtypeOf(member(e, "dtype", at), at + " dtype");
  w.offset = uint64_t(integer(member(e, "offset", at), at + " offset"));
  w.bytes = uint64_t(integer(member(e, "bytes", at), at + " bytes"));
  if (e.contains("parts")) {
    const json &parts = e.at("parts");
    if (!parts.is_array()) incompatible(at, "parts is not a list");
    for (const json &part : parts) w.parts.push_back(text(part, at + " part"));
  }
  if (e.contains("shard")) {
    const json &s = e.at("shard");
    if (!s.is_object()) incompatible(at, "shard is not an object");
    w.shardDim = integer(member(s, "dim", at + " shard"), at + " shard dim");
    w.shardPieces = integer(member(s, "pieces", at + " shard"), at + " shard pieces");
    if (w.shardDim < 0 || int64_t(w.shape.size()) <= w.shardDim || w.shardPieces < 1)
      incompatible(at, "has shard dim " + std::to_string(w.shardDim) + " and pieces " +
                           std::to_string(w.shardPieces) + " for a weight of rank " +
                           std::to_string(w.shape.size()));
    if (s.contains("why")) w.shardWhy = text(s.at("why"), at + " shard why");
  }
  if (!isWeightDType(w.dtype))
    incompatible(at, std::string("has element type ") + dtypeName(w.dtype) +
                         ", which no weight has");
  quantFieldsFrom(e, w, at);
  checkWeightLayout(w, at);
  return w;
}

KVCacheLayout kvCacheFrom(const json &kv, const std::string &at = "the KV cache") {
  KVCacheLayout c;
  c.layers = integer(member(kv, "layers", at), at + " layers", 1, 1 << 16);
  // Page tables hold int32 page indices.
  c.pages = integer(member(kv, "pages", at), at + " pages", 1, INT32_MAX);
  c.pageSize = integer(member(kv, "page_size", at), at + " page_size", 1, 1 << 20);
  c.kvHeads = integer(member(kv, "kv_heads", at), at + " kv_heads", 1, 1 << 16);
  c.headDim = integer(member(kv, "head_dim", at), at + " head_dim", 1, 1 << 16);
  c.pagesPerSequence = integer(member(kv, "pages_per_sequence", at), at + " pages_per_sequence", 1,
                               INT32_MAX);
  c.dtype = dtypeOf(member(kv, "dtype", at), at + " dtype");
  if (!isFloatDType(c.dtype)) incompatible(at, "has element type " + std::string(dtypeName(c.dtype)));
  const double bytes = 2.0 * double(c.layers) * double(c.pages) * double(c.pageSize) *
                       double(c.kvHeads) * double(c.headDim) * double(dtypeBytes(c.dtype));
  if (bytes > double(kMaxPlanInteger)) incompatible(at, "would hold more than 2^50 bytes");
  return c;
}

/// The cache is the pool the settings asked for (kv_pages pages of
/// page_size tokens; the sliding layers' pool window_kv_pages).
void checkCacheAgainstSettings(const KVCacheLayout &kv, const CompileSettings &s,
                               bool window = false) {
  const std::string at = window ? "the sliding layers' KV cache" : "the KV cache";
  const char *key = window ? "window_kv_pages" : "kv_pages";
  const int64_t pages = window ? s.windowKvPages : s.kvPages;
  if (kv.pageSize != s.pageSize)
    incompatible(at, "has pages of " + std::to_string(kv.pageSize) +
                         " tokens and the settings' page_size is " + std::to_string(s.pageSize));
  if (kv.pages != pages)
    incompatible(at, "has " + std::to_string(kv.pages) + " pages and the settings' " + key +
                         " is " + std::to_string(pages));
}

/// The cache holds one sequence at full context: with fewer pages a
/// sequence would run out of them before max_seq_len. Under the plan's
/// sliding window a sequence holds at most sequencePeakPages at once. The
/// sliding layers' own pool, where the plan has one, holds a sequence under
/// their window (spec/ModelSpec.h's windowPeakPages).
void checkCacheHoldsASequence(const Plan &p) {
  if (p.windowCache.layers > 0) {
    const KVCacheLayout &w = p.windowCache;
    if (w.pagesPerSequence != p.kvCache.pagesPerSequence || w.kvHeads != p.kvCache.kvHeads ||
        w.headDim != p.kvCache.headDim || w.dtype != p.kvCache.dtype ||
        w.layers + p.kvCache.layers != p.model.numLayers)
      incompatible("the sliding layers' KV cache", "is unlike the main one (pages per sequence, "
                                                   "heads, head_dim, type) or the two caches' "
                                                   "layers are not the model's");
    const int64_t need = windowPeakPages(p.model, p.settings);
    if (need == 0 || w.pages < need)
      incompatible("the sliding layers' KV cache",
                   "has " + std::to_string(w.pages) + " pages, and the model's layers " +
                       (need == 0 ? std::string("do not mix windows")
                                  : "need " + std::to_string(need) + " (one sequence under the "
                                    "window)"));
  }
  const KVCacheLayout &kv = p.kvCache;
  const int64_t peak = sequencePeakPages(p);
  if (kv.pages < peak)
    incompatible("the KV cache",
                 "has " + std::to_string(kv.pages) + " pages, fewer than the " +
                     std::to_string(peak) + " one sequence at full context holds at once (" +
                     (peak < kv.pagesPerSequence
                          ? "under a sliding window of " + std::to_string(attentionWindow(p)) +
                                " keys"
                          : std::string("pages_per_sequence")) +
                     ")");
}

//===----------------------------------------------------------------------===//
// Dataflow checks
//===----------------------------------------------------------------------===//

/// Ops that address one layer of the KV cache.
template <typename T, typename = void> struct HasLayer : std::false_type {};
template <typename T> struct HasLayer<T, std::void_t<decltype(T::layer)>> : std::true_type {};

/// Follows an entry point's arena values in step order: where each lives,
/// and whether a later write has overwritten it.
class Dataflow {
public:
  Dataflow(const Plan &plan, const EntryPoint &ep) : plan(plan), ep(ep) {}

  void check() {
    const std::string where = "entry point '" + ep.name + "'";
    for (const Operand &a : ep.args) {
      if (a.name.empty()) incompatible(where, "has an argument without a name");
      if (a.kind == OperandKind::arena) define(a, where + " argument '" + a.name + "'");
    }
    for (auto [role, c] : {std::pair<const char *, OperandClass>{"tokens", OperandClass::ids},
                           {"positions", OperandClass::ids},
                           {"page_table", OperandClass::pageTable},
                           {"kv_cache", OperandClass::cache}}) {
      const Operand *a = ep.arg(role);
      if (!a || !fits(*a, c) || (a->kind == OperandKind::arena && a->rows() != rowsOf(role, *a)))
        incompatible(where, std::string("has no argument '") + role + "' that is " +
                                operandClassName(c) + " of its rows");
    }
    if (ep.arg("page_table")->cols() != plan.kvCache.pagesPerSequence)
      incompatible(where, "has a page table of " + std::to_string(ep.arg("page_table")->cols()) +
                              " pages per sequence and a cache of " +
                              std::to_string(plan.kvCache.pagesPerSequence));
    checkWindowArgs(where);
    if (ep.results.size() != 1 || !isActivations(ep.results[0]) ||
        ep.results[0].dtype != DType::f32 || ep.results[0].cols() != plan.model.vocabSize / plan.ranks())
      incompatible(where, "does not return one f32 tensor of logits over the vocabulary");
    // The engine reads a row of logits per decode, verify and score row,
    // and prefill's first.
    const int64_t logitRows = ep.results[0].rows();
    const std::string role = entryRole(ep.name);
    const bool everyRow = role == "decode" || role == "verify" || role == "score";
    if (logitRows != ep.rows && (everyRow || logitRows != 1))
      incompatible(where, "returns " + std::to_string(logitRows) + " rows of logits, expected " +
                              (everyRow ? "" : "1 or ") + std::to_string(ep.rows) +
                              " (its rows)");
    if (ep.name == "verify" && ep.rows != plan.settings.speculate + 1)
      incompatible(where, "has " + std::to_string(ep.rows) + " rows, but the settings' speculate " +
                              std::to_string(plan.settings.speculate) + " needs " +
                              std::to_string(plan.settings.speculate + 1));
    if (ep.name == "score" && ep.rows != plan.settings.scoreRows)
      incompatible(where, "has " + std::to_string(ep.rows) + " rows, but the settings' "
                              "score_rows is " + std::to_string(plan.settings.scoreRows));
    for (size_t i = 0; i < ep.steps.size(); ++i) step(ep.steps[i], i);
    for (const Operand &r : ep.results) read(r, where + " result");
  }

private:
  /// The rows an argument must have: the entry point's, or for a page
  /// table one (prefill) or one per row (decode).
  int64_t rowsOf(const char *role, const Operand &a) const {
    const std::string r = role;
    if ((r == "page_table" || r == "window_page_table") && a.rows() == 1) return 1;
    return ep.rows;
  }
  /// The sliding layers' table and cache: there exactly where the plan has
  /// their pool, the table as wide as the main one.
  void checkWindowArgs(const std::string &where) const {
    const Operand *table = ep.arg("window_page_table"), *cache = ep.arg("window_kv_cache");
    if (plan.windowCache.layers == 0) {
      if (table || cache)
        incompatible(where, "has the sliding layers' page table or cache, and the plan no "
                            "window_kv_cache");
      return;
    }
    if (!table || !fits(*table, OperandClass::pageTable) ||
        table->rows() != rowsOf("window_page_table", *table) || !cache ||
        !fits(*cache, OperandClass::cache) || !cache->window)
      incompatible(where, "has no window_page_table and window_kv_cache for the sliding "
                          "layers' pool");
    if (table->cols() != plan.windowCache.pagesPerSequence ||
        table->rows() != ep.arg("page_table")->rows())
      incompatible(where, "has a window_page_table of " + std::to_string(table->rows()) + " x " +
                              std::to_string(table->cols()) + ", not the page table's shape");
  }
  struct Value {
    Operand where;
    bool live = true;
  };

  std::string stepName(size_t i, const Step &s) const {
    return "step " + std::to_string(i) + " ('" + s.name() + "'" +
           (s.loc.empty() ? "" : " at " + s.loc) + ") of entry point '" + ep.name + "'";
  }
  static bool overlap(const Operand &a, const Operand &b) {
    return a.offset < b.offset + b.bytes() && b.offset < a.offset + a.bytes();
  }
  void inArena(const Operand &o, const std::string &at) const {
    if (o.offset % dtypeBytes(o.dtype) != 0)
      incompatible(at, "has a " + o.describe() + " at offset " + std::to_string(o.offset) +
                           ", not a multiple of its element size");
    if (o.offset + o.bytes() > ep.arenaBytes)
      incompatible(at, "lies at bytes [" + std::to_string(o.offset) + ", " +
                           std::to_string(o.offset + o.bytes()) + "), outside the arena of " +
                           std::to_string(ep.arenaBytes));
  }
  void define(const Operand &o, const std::string &at) {
    inArena(o, at);
    if (values.count(o.value)) incompatible(at, "defines value " + std::to_string(o.value) + " again");
    for (auto &[id, v] : values)
      if (v.live && overlap(o, v.where)) v.live = false;
    values[o.value] = {o, true};
  }
  void read(const Operand &o, const std::string &at) const {
    if (o.kind != OperandKind::arena) return;
    auto it = values.find(o.value);
    if (it == values.end()) incompatible(at, "reads value " + std::to_string(o.value) + ", which no earlier step defines");
    const Operand &d = it->second.where;
    if (d.offset != o.offset || d.shape != o.shape || d.dtype != o.dtype)
      incompatible(at, "reads value " + std::to_string(o.value) + " where it does not live");
    if (!it->second.live)
      incompatible(at, "reads value " + std::to_string(o.value) + " after a later write overwrote it");
  }
  /// What a step reads in the arena: its operands, and for each KV-cache
  /// view the page table and positions the cache read that made it was
  /// given (the view is read through them when its reader runs).
  std::vector<Operand> arenaInputs(const Step &s, const std::string &at) const {
    std::vector<Operand> in;
    for (const Operand *o : stepInputs(s)) {
      if (o->kind == OperandKind::arena) in.push_back(*o);
      if (o->kind != OperandKind::kvView) continue;
      auto made = views.find({o->window, o->layer});
      if (made == views.end())
        incompatible(at, "reads a view of layer " + std::to_string(o->layer) +
                             " that no kv_cache_read made");
      in.push_back(made->second.first);
      in.push_back(made->second.second);
    }
    return in;
  }
  void weight(const std::string &name, const std::string &at) const {
    if (!plan.findWeight(name)) incompatible(at, "names weight '" + name + "', which is not in the weight table");
  }
  /// Rows a step asks L2 for: of a float weight in the table, within it.
  void prefetch(const WeightRows &r, const std::string &at) const {
    weight(r.weight, at);
    const WeightEntry &w = *plan.findWeight(r.weight);
    if (!isFloatDType(w.dtype))
      incompatible(at, "asks L2 for rows of weight '" + r.weight + "', which is " +
                           dtypeName(w.dtype) + " (rows of f32, bf16 and f16 weights only)");
    const int64_t rows = w.numElements() / w.shape.back();
    if (r.end > rows)
      incompatible(at, "asks L2 for rows " + std::to_string(r.begin) + " to " +
                           std::to_string(r.end) + " of weight '" + r.weight + "', which has " +
                           std::to_string(rows));
  }
  /// A cache op's layer lies in the cache it names (StepShapes checks it
  /// reads that cache through the cache's own page table).
  template <typename Op> void layer(const Op &op, const std::string &at) const {
    const bool window = op.cache.window;
    const int64_t layers = window ? plan.windowCache.layers : plan.kvCache.layers;
    if (op.layer < 0 || op.layer >= layers)
      incompatible(at, "names layer " + std::to_string(op.layer) + " of a cache of " +
                           std::to_string(layers));
  }
  void step(const Step &s, size_t i) {
    const std::string at = stepName(i, s);
    const std::vector<Operand> ins = arenaInputs(s, at);
    for (const Operand &o : ins) read(o, at);
    for (const Operand *o : stepOutputs(s)) {
      if (o->kind != OperandKind::arena) continue;
      for (const Operand &in : ins)
        if (overlap(*o, in))
          incompatible(at, "writes over its own input (value " + std::to_string(in.value) + ")");
    }
    for (const Operand *o : stepOutputs(s))
      if (o->kind == OperandKind::arena) define(*o, at);
    if (const KVCacheReadOp *r = s.tryAs<KVCacheReadOp>())
      views[{r->cache.window, r->layer}] = {r->pageTable, r->positions};
    for (const std::string &w : stepWeights(s)) weight(w, at);
    for (const WeightRows &r : s.prefetch) prefetch(r, at);
    std::visit([&](const auto &op) {
      if constexpr (HasLayer<std::decay_t<decltype(op)>>::value) layer(op, at);
    }, s.op);
    checkStepShapes(plan, ep, s, at);
  }
  const Plan &plan;
  const EntryPoint &ep;
  std::map<int64_t, Value> values;
  // (window pool, layer) -> page table, positions
  std::map<std::pair<bool, int64_t>, std::pair<Operand, Operand>> views;
};

} // namespace

const Operand *EntryPoint::arg(const std::string &role) const {
  for (const Operand &a : args)
    if (a.name == role) return &a;
  return nullptr;
}

json toJson(const Plan &p) {
  json weights = json::array();
  for (const WeightEntry &w : p.weights) weights.push_back(weightJson(w));
  json entries = json::object();
  for (const auto &[name, ep] : p.entryPoints) {
    json steps = json::array();
    for (const Step &s : ep.steps) steps.push_back(stepJson(s));
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
      {"kv_cache", kvCacheJson(p.kvCache)},
      {"weights", std::move(weights)},
      {"entry_points", std::move(entries)},
  };
  if (p.windowCache.layers > 0) j["window_kv_cache"] = kvCacheJson(p.windowCache);
  if (p.settings.target == Target::cuda)
    j["cuda"] = {{"archs", p.cudaArchs}, {"workspace_bytes", p.deviceWorkspaceBytes}};
  return j;
}

/// Each sharded weight's pieces spread evenly over the ranks.
void checkShards(const Plan &p) {
  const int64_t ranks = p.ranks();
  for (const WeightEntry &w : p.weights) {
    if (w.shardDim < 0) continue;
    if (ranks < 2)
      incompatible("weight '" + w.name + "'", "is cut between ranks, and the plan is not tensor "
                                              "parallel (tensor_parallel 1)");
    if (w.shardPieces > ranks || ranks % w.shardPieces != 0)
      incompatible("weight '" + w.name + "'", "is cut into " + std::to_string(w.shardPieces) +
                                                  " pieces, which " + std::to_string(ranks) +
                                                  " ranks cannot hold evenly");
  }
}

/// An entry point is prefill, decode, verify or score, or a smaller copy of
/// prefill or decode named by its rows ("decode.8"), fewer than those of the
/// entry point it copies.
void checkEntryName(const Plan &p, const EntryPoint &ep) {
  const std::string where = "entry point '" + ep.name + "'";
  const std::string role = entryRole(ep.name);
  if (role == ep.name) {
    if (role != "prefill" && role != "decode" && role != "verify" && role != "score")
      incompatible(where, "is none of prefill, decode, verify, score, prefill.N or decode.N (a "
                          "smaller copy); the artifact is from another kvplan: recompile the "
                          "model");
    return;
  }
  const std::string copied = role == "prefill" || role == "decode" ? role : "decode";
  auto whole = p.entryPoints.find(copied);
  if (role != copied || ep.name != copied + "." + std::to_string(ep.rows) ||
      whole == p.entryPoints.end() || ep.rows >= whole->second.rows)
    incompatible(where, "has " + std::to_string(ep.rows) + (ep.rows == 1 ? " row" : " rows") +
                            "; a smaller copy of " + copied + " is named " + copied +
                            ".N after its N rows, fewer than " + copied + "'s");
}

/// The smaller copies of `role` among the entry points, ascending rows.
std::vector<int64_t> copiesOf(const Plan &p, const std::string &role) {
  std::vector<int64_t> rows;
  for (const auto &[name, ep] : p.entryPoints)
    if (name != role && entryRole(name) == role) rows.push_back(ep.rows);
  std::sort(rows.begin(), rows.end());
  return rows;
}

/// The settings' copies of `role` are the plan's entry points.
void checkCopies(const Plan &p, const std::string &role, const std::vector<int64_t> &settings) {
  const std::vector<int64_t> present = copiesOf(p, role);
  if (present == settings) return;
  auto names = [&](const std::vector<int64_t> &rows) {
    std::string text;
    for (int64_t r : rows) text += (text.empty() ? "" : ", ") + role + "." + std::to_string(r);
    return text.empty() ? std::string("none") : text;
  };
  incompatible("the plan's", "settings list the smaller copies " + names(settings) +
                                 " but the entry points are " + names(present) +
                                 "; the artifact is damaged or from another kvplan: recompile "
                                 "the model");
}

void validatePlan(const Plan &p) {
  checkCacheGeometry(p);
  checkShards(p);
  if (p.settings.speculate > 0 && !p.entryPoints.count("verify"))
    incompatible("the plan's", "settings have speculate " + std::to_string(p.settings.speculate) +
                                   " but there is no 'verify' entry point");
  if (p.settings.scoreRows > 0 && !p.entryPoints.count("score"))
    incompatible("the plan's", "settings have score_rows " + std::to_string(p.settings.scoreRows) +
                                   " but there is no 'score' entry point");
  for (const auto &[name, ep] : p.entryPoints) {
    checkEntryName(p, ep);
    Dataflow(p, ep).check();
  }
  checkCopies(p, "decode", p.settings.decodeCopies);
  checkCopies(p, "prefill", p.settings.prefillCopies);
  if (const int64_t budget = p.settings.memoryBudget; budget > 0) {
    const int64_t bill = p.memoryBill().totalBytes;
    if (bill > budget)
      incompatible("the plan's", "memory bill of " + std::to_string(bill) +
                                     " bytes is more than its settings' memory_budget of " +
                                     std::to_string(budget));
  }
}

Plan planFromJson(const json &j) {
  try {
    Plan p;
    p.formatVersion = int(integer(member(j, "format_version", "the plan"), "format_version"));
    p.kvplanVersion = text(member(j, "kvplan_version", "the plan"), "kvplan_version");
    p.gitHash = text(member(j, "git_hash", "the plan"), "git_hash");
    try {
      p.model = modelSpecFromJson(member(j, "model", "the plan"));
      p.settings = compileSettingsFromJson(member(j, "settings", "the plan"));
    } catch (const InputError &e) {
      incompatible("the plan's", e.what());
    }
    const json &weights = member(j, "weights", "the plan");
    if (!weights.is_array()) incompatible("the plan's", "weights are not a list");
    for (size_t i = 0; i < weights.size(); ++i) p.weights.push_back(weightFrom(weights[i], i));
    p.kvCache = kvCacheFrom(member(j, "kv_cache", "the plan"));
    checkCacheAgainstSettings(p.kvCache, p.settings);
    if (j.contains("window_kv_cache") || p.settings.windowKvPages > 0) {
      p.windowCache = kvCacheFrom(member(j, "window_kv_cache", "the plan"),
                                  "the sliding layers' KV cache");
      checkCacheAgainstSettings(p.windowCache, p.settings, /*window=*/true);
    }
    const json &entries = member(j, "entry_points", "the plan");
    if (!entries.is_object()) incompatible("the plan's", "entry points are not an object");
    for (const auto &[name, e] : entries.items()) p.entryPoints[name] = entryFrom(name, e);
    // Plans written before the settings listed the smaller copies carry them
    // as entry points only.
    const json &settings = j.at("settings");
    if (!settings.contains("decode_copies")) p.settings.decodeCopies = copiesOf(p, "decode");
    if (!settings.contains("prefill_copies")) p.settings.prefillCopies = copiesOf(p, "prefill");
    if (j.contains("cuda")) {
      const json &c = j.at("cuda");
      const json &archs = member(c, "archs", "the plan's cuda section");
      if (!archs.is_array()) incompatible("the plan's cuda section", "archs is not a list");
      for (const json &a : archs) p.cudaArchs.push_back(text(a, "a cuda arch"));
      p.deviceWorkspaceBytes = integer(member(c, "workspace_bytes", "the plan's cuda section"),
                                       "the cuda workspace_bytes");
    }
    validatePlan(p);
    checkCacheHoldsASequence(p);
    return p;
  } catch (const json::exception &e) {
    throw InputError(std::string("the plan is not valid: ") + e.what());
  }
}

} // namespace kvplan
