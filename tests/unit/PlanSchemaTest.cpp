// The plan's op schema (plan/PlanOps.h) against the dialect's ODS records
// (ir/LLMOps.td, dumped as JSON by llvm-tblgen at build time): every op the
// dialect defines for entry points has a plan op of the same name, and every
// plan op lists the same operands, attributes and results, named alike, of
// the same kinds, in the same order.
#include "plan/PlanOps.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

using namespace kvplan;
using nlohmann::json;

namespace {

/// One field as "name:kind", kinds in ODS's terms.
using Fields = std::vector<std::string>;

const char *odsConstraint(OperandClass c) {
  switch (c) {
  case OperandClass::activations: return "LLM_Activations";
  case OperandClass::logits: return "LLM_Logits";
  case OperandClass::ids: return "LLM_Ids";
  case OperandClass::pageTable: return "LLM_PageTable";
  case OperandClass::cache: return "LLM_KVCache";
  case OperandClass::view: return "LLM_KVView";
  case OperandClass::keysOrValues: return "LLM_KeysOrValues";
  case OperandClass::rows: return "LLM_Rows";
  }
  return "?";
}

/// The plan op's fields, as ODS would spell their kinds.
struct Collector {
  Fields args, outs;
  void operand(const char *n, const Operand &, OperandClass c) {
    args.push_back(std::string(n) + ":" + odsConstraint(c));
  }
  void optionalOperand(const char *n, const std::optional<Operand> &, OperandClass c) {
    args.push_back(std::string(n) + ":Optional<" + odsConstraint(c) + ">");
  }
  void result(const char *n, const Operand &, OperandClass c) {
    outs.push_back(std::string(n) + ":" + odsConstraint(c));
  }
  void results(const char *n, const std::vector<Operand> &, OperandClass c) {
    outs.push_back(std::string(n) + ":Variadic<" + odsConstraint(c) + ">");
  }
  void weight(const char *n, const std::string &) { args.push_back(std::string(n) + ":FlatSymbolRefAttr"); }
  void optionalWeight(const char *n, const std::optional<std::string> &) {
    args.push_back(std::string(n) + ":OptionalAttr<FlatSymbolRefAttr>");
  }
  void attr(const char *n, int64_t) { args.push_back(std::string(n) + ":I64Attr"); }
  void attr(const char *n, double) { args.push_back(std::string(n) + ":F64Attr"); }
  void attr(const char *n, AttentionMask) { args.push_back(std::string(n) + ":LLM_AttentionMask"); }
  void attr(const char *n, bool) { args.push_back(std::string(n) + ":UnitAttr"); }
  void optionalAttr(const char *n, const std::optional<double> &) {
    args.push_back(std::string(n) + ":OptionalAttr<F64Attr>");
  }
  void optionalAttr(const char *n, const std::optional<int64_t> &) {
    args.push_back(std::string(n) + ":OptionalAttr<I64Attr>");
  }
  void optionalAttr(const char *n, const std::optional<RopeScaling> &) {
    args.push_back(std::string(n) + ":OptionalAttr<LLM_RopeScalingAttr>");
  }
  void optionalAttr(const char *n, const std::vector<double> &) {
    args.push_back(std::string(n) + ":OptionalAttr<DenseF64ArrayAttr>");
  }
};

void collectAll(std::map<std::string, Collector> &out) {
  for (size_t k = 0; k < kNumOpKinds; ++k) {
    Collector c;
    std::visit([&](const auto &op) { op.fields(c); }, makeOp(OpKind(k)));
    out[opName(OpKind(k))] = c;
  }
}

bool derives(const json &records, const std::string &def, const char *cls) {
  const json &supers = records.at(def).at("!superclasses");
  return std::find(supers.begin(), supers.end(), cls) != supers.end();
}

/// An ODS argument or result as "name:kind": a named constraint or attribute
/// as it is, an optional attribute or a variadic as Wrapper<Base>.
std::string odsField(const json &records, const json &arg) {
  const std::string def = arg.at(0).at("def").get<std::string>(), name = arg.at(1);
  if (derives(records, def, "OptionalAttr"))
    return name + ":OptionalAttr<" + records.at(def).at("baseAttr").at("def").get<std::string>() + ">";
  if (derives(records, def, "Optional"))
    return name + ":Optional<" + records.at(def).at("baseType").at("def").get<std::string>() + ">";
  if (derives(records, def, "Variadic"))
    return name + ":Variadic<" + records.at(def).at("baseType").at("def").get<std::string>() + ">";
  return name + ":" + def;
}

json opsJson() {
  std::ifstream in(KVPLAN_OPS_JSON);
  std::stringstream text;
  text << in.rdbuf();
  return json::parse(text.str());
}

} // namespace

TEST(PlanSchema, EveryPlanOpIsTheDialectsOpFieldForField) {
  const json records = opsJson();
  std::map<std::string, Collector> plan;
  collectAll(plan);
  std::set<std::string> dialect;
  for (const json &def : records.at("!instanceof").at("Op")) {
    const json &r = records.at(def.get<std::string>());
    const std::string name = r.at("opName");
    if (name == "weight") continue; // module-level: the plan's weight table
    dialect.insert(name);
    SCOPED_TRACE(name);
    auto it = plan.find(name);
    ASSERT_NE(it, plan.end()) << "llm." << name << " has no plan op in plan/PlanOps.h";
    Fields args, results;
    for (const json &a : r.at("arguments").at("args")) args.push_back(odsField(records, a));
    for (const json &a : r.at("results").at("args")) results.push_back(odsField(records, a));
    EXPECT_EQ(it->second.args, args);
    EXPECT_EQ(it->second.outs, results);
    EXPECT_TRUE(opKindNamed(name)) << name;
  }
  for (const auto &[name, fields] : plan)
    EXPECT_TRUE(dialect.count(name)) << "plan op '" << name << "' is no op of the llm dialect";
}

// The check is not vacuous: a renamed attribute, a reordered operand or a
// different constraint each shows.
TEST(PlanSchema, ADifferenceShows) {
  const json records = opsJson();
  std::map<std::string, Collector> plan;
  collectAll(plan);
  const json &norm = records.at("LLM_RMSNormOp");
  Fields args;
  for (const json &a : norm.at("arguments").at("args")) args.push_back(odsField(records, a));
  ASSERT_EQ(plan.at("rms_norm").args, args);
  Fields renamed = args, reordered = args;
  renamed[2] = "epsilon:F64Attr";
  std::swap(reordered[0], reordered[1]);
  EXPECT_NE(plan.at("rms_norm").args, renamed);
  EXPECT_NE(plan.at("rms_norm").args, reordered);
  EXPECT_NE(plan.at("take_last").args.front(), "input:LLM_Activations");
}
