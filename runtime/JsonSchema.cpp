// Structured output: a JSON schema compiled into nodes, and the recogniser
// of text a schema accepts (a set of pushdown stacks, one per reading).
#include "runtime/JsonSchema.h"

#include "support/Error.h"
#include "support/Utf8.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <climits>
#include <cmath>
#include <cstring>
#include <functional>
#include <list>
#include <map>
#include <mutex>
#include <set>
#include <tuple>
#include <unordered_map>

namespace kvplan {

using ojson = nlohmann::ordered_json;
using Kind = JsonSchema::Kind;
using Node = JsonSchema::Node;

// ----------------------------------------------------------------------------
// The compiler
// ----------------------------------------------------------------------------

namespace {

const std::set<std::string> kAnnotations = {
    "title",    "description", "default",          "examples",        "$schema",
    "$id",      "$comment",    "deprecated",       "readOnly",        "writeOnly",
    "format",   "$defs",       "definitions",      "contentMediaType", "contentEncoding",
    "discriminator"}; // OpenAPI's hint for oneOf, which the compiler checks itself
const std::set<std::string> kKeywords = {
    "type",      "properties",       "required",         "additionalProperties",
    "items",     "prefixItems",      "minItems",         "maxItems",         "minLength",
    "maxLength", "pattern",          "minimum",          "maximum",
    "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "enum",
    "const",     "anyOf",            "oneOf",            "allOf",
    "$ref",      "patternProperties", "propertyNames",   "minProperties",
    "maxProperties", "uniqueItems"};
const char *kSupported = "type, properties, required, additionalProperties, "
                         "patternProperties, propertyNames, minProperties, maxProperties, items, "
                         "prefixItems, minItems, maxItems, uniqueItems, minLength, maxLength, "
                         "pattern, "
                         "minimum, maximum, exclusiveMinimum, exclusiveMaximum, multipleOf, "
                         "enum, const, anyOf, oneOf of alternatives no value meets two of, "
                         "allOf of one schema, $ref and nullable";
const std::string kUniqueKinds =
    "kvplan holds uniqueItems for items of one of: strings, integers or numbers without "
    "bounds, booleans, null, an anyOf of those of different kinds, enum or const values; give "
    "items such a schema or leave uniqueItems out";
const char *kNumberKeywords[] = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
                                 "multipleOf"};

/// The formats held as patterns (OpenAI's list): RFC 3339 dates and times
/// (T and Z in capitals, as strict parsers want them), ISO 8601 durations,
/// RFC 4122 UUIDs, RFC 3986 IPv6, an email address as RFC 5321's dot-atom
/// of letters, digits, _, + and - at a domain whose last name is letters
/// (which validators stricter than the RFC, zod's and email-validator's,
/// take too). Another format is an annotation, as JSON Schema says.
std::string formatPattern(const std::string &format) {
  // Years 1 to 9999 and a day the month has (February's 29th in leap
  // years only); no leap second (Python's datetime and zod refuse :60).
  const std::string year = "(000[1-9]|00[1-9]\\d|0[1-9]\\d\\d|[1-9]\\d{3})";
  const std::string leap =
      "(\\d\\d(0[48]|[2468][048]|[13579][26])|(0[48]|[2468][048]|[13579][26])00)";
  const std::string date = "(" + year + "-((0[13578]|1[02])-(0[1-9]|[12]\\d|3[01])|(0[469]|11)-"
                           "(0[1-9]|[12]\\d|30)|02-(0[1-9]|1\\d|2[0-8]))|" + leap + "-02-29)";
  const std::string time = "([01]\\d|2[0-3]):[0-5]\\d:[0-5]\\d(\\.\\d+)?"
                           "(Z|[+-]([01]\\d|2[0-3]):[0-5]\\d)";
  const std::string label = "[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?";
  const std::string octet = "(25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)";
  const std::string ipv4 = "(" + octet + "\\.){3}" + octet;
  if (format == "date") return "^" + date + "$";
  if (format == "time") return "^" + time + "$";
  if (format == "date-time") return "^" + date + "T" + time + "$";
  if (format == "duration") {
    const std::string t = "T(\\d+H(\\d+M)?(\\d+S)?|\\d+M(\\d+S)?|\\d+S)";
    return "^P(\\d+W|\\d+Y(\\d+M)?(\\d+D)?(" + t + ")?|\\d+M(\\d+D)?(" + t +
           ")?|\\d+D(" + t + ")?|" + t + ")$";
  }
  if (format == "email") // RFC 5321's dot-atom, held to what stricter validators take too
    return "^[A-Za-z0-9_+-]+(\\.[A-Za-z0-9_+-]+)*@(" + label + "\\.)+[A-Za-z]{2,63}$";
  if (format == "hostname") return "^" + label + "(\\." + label + ")*$";
  if (format == "uuid")
    return "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";
  if (format == "ipv4") return "^" + ipv4 + "$";
  if (format == "ipv6") {
    const std::string h = "[0-9a-fA-F]{1,4}", ls32 = "(" + h + ":" + h + "|" + ipv4 + ")";
    auto upTo = [&](int n) { return "((" + h + ":){0," + std::to_string(n) + "}" + h + ")?"; };
    return "^((" + h + ":){6}" + ls32 + "|::(" + h + ":){5}" + ls32 + "|(" + h + ")?::(" + h +
           ":){4}" + ls32 + "|" + upTo(1) + "::(" + h + ":){3}" + ls32 + "|" + upTo(2) + "::(" +
           h + ":){2}" + ls32 + "|" + upTo(3) + "::" + h + ":" + ls32 + "|" + upTo(4) + "::" +
           ls32 + "|" + upTo(5) + "::" + h + "|" + upTo(6) + "::)$";
  }
  return "";
}

[[noreturn]] void fail(const std::string &path, const std::string &what) {
  throw InputError(path + ": " + what);
}

bool typeMatches(const ojson &v, const std::string &type) {
  if (type == "object") return v.is_object();
  if (type == "array") return v.is_array();
  if (type == "string") return v.is_string();
  if (type == "boolean") return v.is_boolean();
  if (type == "null") return v.is_null();
  if (type == "number") return v.is_number();
  // integer: a number without a fraction (1.0 is one, as JSON Schema says)
  if (v.is_number_integer()) return true;
  return v.is_number_float() && std::floor(v.get<double>()) == v.get<double>();
}

} // namespace

class JsonSchemaCompiler {
public:
  JsonSchemaCompiler(const ojson &doc, std::string where) : doc(doc), where(std::move(where)) {}

  std::shared_ptr<const JsonSchema> run() {
    out.all.resize(7);
    out.all[JsonSchema::kAny].kind = Kind::any;
    out.all[JsonSchema::kAnyObject].kind = Kind::object;
    out.all[JsonSchema::kAnyObject].names = {
        {JsonSchema::kAnyString, JsonSchema::kAny, JsonSchema::kManyNames}};
    out.all[JsonSchema::kAnyArray].kind = Kind::array;
    out.all[JsonSchema::kAnyArray].items = JsonSchema::kAny;
    out.all[JsonSchema::kAnyString].kind = Kind::string;
    out.all[JsonSchema::kAnyNumber].kind = Kind::number;
    out.all[JsonSchema::kBoolean].kind = Kind::boolean;
    out.all[JsonSchema::kNull].kind = Kind::null;
    int32_t root = node(doc, where);
    if (root == JsonSchema::kAny) root = JsonSchema::kAnyObject;
    prune(root);
    if (!isObject(root, 0))
      fail(where, "the top level must be an object (\"type\": \"object\"), as OpenAI's "
                  "structured outputs require");
    out.top = root;
    return std::make_shared<const JsonSchema>(std::move(out));
  }

private:
  int32_t add(Node n) {
    out.all.push_back(std::move(n));
    return int32_t(out.all.size() - 1);
  }
  void literal(const std::string &text) {
    for (char c : text) out.bytes[uint8_t(c)] = true;
  }
  static int64_t count(const ojson &v, const std::string &path) {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > INT32_MAX / 2)
      fail(path, "must be a non-negative integer");
    return v.get<int64_t>();
  }
  int32_t node(const ojson &s, const std::string &path);
  int32_t plainNode(const ojson &s, const std::string &path);
  int32_t typed(const ojson &s, const std::string &type, const std::string &path);
  int32_t alternatives(const ojson &list, const std::string &kw, const std::string &path);
  uint8_t kinds(int32_t n, int depth) const;
  bool disjoint(int32_t a, int32_t b) const;
  int32_t pattern(const ojson &s, int64_t minChars, int64_t maxChars, const std::string &path);
  int32_t number(const ojson &s, bool integer, const std::string &path);
  int32_t object(const ojson &s, const std::string &path);
  /// What a schema's propertyNames allows.
  struct Names {
    bool any = true;                   // every name (no literals, no automaton)
    std::vector<std::string> literals; // enum/const: these names alone (decoded)
    std::shared_ptr<const ByteDfa> dfa; // else, when set: the names it accepts
    bool allows(const std::string &name) const;
  };
  Names propertyNames(const ojson &s, const std::string &path);
  struct Pattern {
    std::string text;
    ByteDfa dfa;
    int32_t node;
  };
  std::vector<Pattern> patternProperties(const ojson &s, const std::string &path);
  std::vector<JsonSchema::NameGroup> mapNames(const Names &names,
                                              const std::vector<Pattern> &patterns,
                                              int32_t additional, const std::string &path);
  int32_t nameNode(const ByteDfa &dfa, const std::string &path);
  void propertyCounts(const ojson &s, Node &n, bool map, const std::string &path);
  void uniqueItems(const ojson &s, Node &n, const std::string &path);
  uint64_t uniqueValues(const Node &item, const std::string &at);
  const JsonSchema::NameCounts &textCounts(int32_t automaton);
  std::pair<const ojson *, std::string> resolve(const ojson &s, const std::string &path) const;
  std::unique_ptr<ByteDfa> automaton(const ojson &s, int64_t minChars, int64_t maxChars,
                                     const std::string &path, std::string &where);
  int32_t array(const ojson &s, const std::string &path);
  int32_t literals(const ojson &s, const std::string &path);
  int32_t reference(const ojson &s, const std::string &path);
  void prune(int32_t root);
  bool isObject(int32_t n, int depth) const;

  const ojson &doc;
  std::string where;
  std::map<std::string, int32_t> refs; // $ref targets compiled (or being compiled)
  size_t regexWork = 0;                 // what the schema's patterns have cost (one budget)
  std::map<std::string, int32_t> patterns; // automata by pattern, format and length
  JsonSchema out;
};

/// A schema, and OpenAPI's "nullable": true (which OpenAI's SDK helpers
/// write for a field that may be null) as an alternative of null.
int32_t JsonSchemaCompiler::node(const ojson &s, const std::string &path) {
  const int32_t plain = plainNode(s, path);
  if (!s.is_object() || !s.contains("nullable")) return plain;
  const ojson &nullable = s["nullable"];
  if (!nullable.is_boolean()) fail(path + ".nullable", "must be true or false");
  if (!nullable.get<bool>()) return plain;
  Node n;
  n.kind = Kind::anyOf;
  n.alternatives = {plain, JsonSchema::kNull};
  return add(std::move(n));
}

int32_t JsonSchemaCompiler::plainNode(const ojson &s, const std::string &path) {
  if (s.is_boolean()) {
    if (!s.get<bool>()) fail(path, "the schema false accepts no value");
    return JsonSchema::kAny;
  }
  if (!s.is_object()) fail(path, "a schema must be an object or a boolean");
  std::vector<std::string> checks; // validation keywords present, in order
  for (const auto &[key, value] : s.items()) {
    if (kAnnotations.count(key) || key == "nullable" || key.compare(0, 2, "x-") == 0) continue;
    if (!kKeywords.count(key))
      fail(path + "." + key, "kvplan cannot hold generation to \"" + key + "\"; it supports " +
                                 kSupported + " (remove \"" + key + "\" or say it with those)");
    checks.push_back(key);
  }
  auto alone = [&](const char *kw) {
    if (checks.size() != 1)
      fail(path + "." + kw, std::string(kw) + " is supported only with no other keyword "
                                              "beside it but annotations (title, description, "
                                              "...); move the others into its schemas");
  };
  if (s.contains("$ref")) {
    alone("$ref");
    return reference(s, path);
  }
  if (s.contains("allOf")) {
    alone("allOf");
    const ojson &all = s["allOf"];
    if (!all.is_array() || all.size() != 1)
      fail(path + ".allOf", "allOf is supported with one schema only (merge them into one)");
    return node(all[0], path + ".allOf[0]");
  }
  for (const char *kw : {"anyOf", "oneOf"}) {
    if (!s.contains(kw)) continue;
    alone(kw);
    return alternatives(s[kw], kw, path);
  }
  if (s.contains("enum") || s.contains("const")) return literals(s, path);
  if (s.contains("type")) {
    const ojson &t = s["type"];
    if (t.is_string()) return typed(s, t.get<std::string>(), path);
    if (!t.is_array() || t.empty())
      fail(path + ".type", "must be a type name or a non-empty array of them");
    Node n;
    n.kind = Kind::anyOf;
    for (size_t k = 0; k < t.size(); ++k) {
      if (!t[k].is_string()) fail(path + ".type", "must be a type name or an array of them");
      n.alternatives.push_back(typed(s, t[k].get<std::string>(), path));
    }
    return add(std::move(n));
  }
  // No type: what the keywords describe (any value when none).
  for (const char *kw : {"properties", "required", "additionalProperties", "patternProperties",
                         "propertyNames", "minProperties", "maxProperties"})
    if (s.contains(kw)) return typed(s, "object", path);
  for (const char *kw : {"items", "prefixItems", "minItems", "maxItems", "uniqueItems"})
    if (s.contains(kw)) return typed(s, "array", path);
  for (const char *kw : {"minLength", "maxLength", "pattern"})
    if (s.contains(kw)) return typed(s, "string", path);
  for (const char *kw : kNumberKeywords)
    if (s.contains(kw)) return typed(s, "number", path);
  return JsonSchema::kAny;
}

int32_t JsonSchemaCompiler::typed(const ojson &s, const std::string &type,
                                  const std::string &path) {
  if (type == "object") return object(s, path);
  if (type == "array") return array(s, path);
  if (type == "boolean") return JsonSchema::kBoolean;
  if (type == "null") return JsonSchema::kNull;
  if (type == "number" || type == "integer") return number(s, type == "integer", path);
  if (type != "string")
    fail(path + ".type", "\"" + type + "\" is not a type (object, array, string, integer, "
                                       "number, boolean or null)");
  Node n;
  n.kind = Kind::string;
  if (s.contains("minLength")) n.minCount = count(s["minLength"], path + ".minLength");
  if (s.contains("maxLength")) n.maxCount = count(s["maxLength"], path + ".maxLength");
  if (n.maxCount >= 0 && n.minCount > n.maxCount)
    fail(path, "minLength is more than maxLength: no string meets both");
  n.automaton = pattern(s, n.minCount, n.maxCount, path);
  return add(std::move(n));
}

/// anyOf, or oneOf (any alternative, as anyOf, once no value can meet two:
/// then the one a text meets is the only one).
int32_t JsonSchemaCompiler::alternatives(const ojson &list, const std::string &kw,
                                         const std::string &path) {
  if (!list.is_array() || list.empty()) fail(path + "." + kw, "must be a non-empty array");
  Node n;
  n.kind = Kind::anyOf;
  for (size_t k = 0; k < list.size(); ++k)
    n.alternatives.push_back(node(list[k], path + "." + kw + "[" + std::to_string(k) + "]"));
  for (size_t a = 0; kw == "oneOf" && a < list.size(); ++a)
    for (size_t b = a + 1; b < list.size(); ++b)
      if (!disjoint(n.alternatives[a], n.alternatives[b]))
        fail(path + ".oneOf", "alternatives " + std::to_string(a) + " and " +
                                  std::to_string(b) + " may both match a value, and kvplan "
                                  "holds generation to oneOf only when no value can meet two "
                                  "(different types, different enum or const values, or objects "
                                  "with a required property of different const values, as a "
                                  "discriminated union's); use anyOf if either will do");
  return add(std::move(n));
}

/// The kinds of value a node accepts: a bit each for object, array,
/// string, number, boolean and null.
uint8_t JsonSchemaCompiler::kinds(int32_t i, int depth) const {
  const Node &n = out.all[size_t(i)];
  switch (n.kind) {
  case Kind::object: return 1;
  case Kind::array: return 2;
  case Kind::string: return 4;
  case Kind::integer:
  case Kind::number: return 8;
  case Kind::boolean: return 16;
  case Kind::null: return 32;
  case Kind::literals: {
    uint8_t k = 0;
    for (const std::string &l : n.literals)
      k |= l[0] == '{' ? 1 : l[0] == '[' ? 2 : l[0] == '"' ? 4 : l[0] == 't' || l[0] == 'f' ? 16
           : l[0] == 'n' ? 32 : 8;
    return k;
  }
  case Kind::anyOf: {
    uint8_t k = 0;
    for (int32_t a : n.alternatives) k |= depth > 32 ? 63 : kinds(a, depth + 1);
    return k;
  }
  default: return 63; // any (or a reference still being compiled)
  }
}

/// Whether no value can meet both nodes: their kinds differ, or both are
/// literals with no value in common, or both objects require a property
/// whose literals share none.
bool JsonSchemaCompiler::disjoint(int32_t a, int32_t b) const {
  if ((kinds(a, 0) & kinds(b, 0)) == 0) return true;
  const Node &x = out.all[size_t(a)], &y = out.all[size_t(b)];
  auto apart = [&](const Node &p, const Node &q) {
    if (p.kind != Kind::literals || q.kind != Kind::literals) return false;
    for (const std::string &l : p.literals)
      for (const std::string &m : q.literals) // as values: 1 and 1.0 are one
        if (nlohmann::json::parse(l) == nlohmann::json::parse(m)) return false;
    return true;
  };
  if (apart(x, y)) return true;
  if (x.kind != Kind::object || y.kind != Kind::object) return false;
  for (const JsonSchema::Property &p : x.properties)
    for (const JsonSchema::Property &q : y.properties)
      if (p.required && q.required && p.key == q.key &&
          apart(out.all[size_t(p.node)], out.all[size_t(q.node)]))
        return true;
  return false;
}

/// A string's pattern and format (with its length, when bounded too) as
/// one automaton; -1 when it has neither.
int32_t JsonSchemaCompiler::pattern(const ojson &s, int64_t minChars, int64_t maxChars,
                                    const std::string &path) {
  std::string where = path + ".pattern";
  if (s.contains("pattern") && !s["pattern"].is_string())
    fail(where, "must be a string (a regular expression)");
  // One automaton for each pattern, format and length the schema repeats.
  const std::string same = (s.contains("pattern") ? "p" + s["pattern"].get<std::string>() : "") +
                           '\0' + (s.contains("format") ? s["format"].dump() : "") + '\0' +
                           std::to_string(minChars) + ',' + std::to_string(maxChars);
  if (auto it = patterns.find(same); it != patterns.end()) return it->second;
  std::unique_ptr<ByteDfa> dfa = automaton(s, minChars, maxChars, path, where);
  if (!dfa) return -1;
  out.dfas.push_back(std::move(*dfa));
  out.dfaPaths.push_back(where);
  out.counts.emplace_back();
  return patterns[same] = int32_t(out.dfas.size() - 1);
}

/// A string's pattern and format with its length (null when it has neither
/// pattern nor format); `where` becomes the path to name it by.
std::unique_ptr<ByteDfa> JsonSchemaCompiler::automaton(const ojson &s, int64_t minChars,
                                                       int64_t maxChars, const std::string &path,
                                                       std::string &where) {
  where = path + ".pattern";
  if (s.contains("pattern") && !s["pattern"].is_string())
    fail(where, "must be a string (a regular expression)");
  std::unique_ptr<ByteDfa> dfa;
  if (s.contains("pattern")) {
    dfa = std::make_unique<ByteDfa>(
        ByteDfa::regex(s["pattern"].get<std::string>(), where, &regexWork));
  }
  if (s.contains("format") && s["format"].is_string()) {
    const std::string format = formatPattern(s["format"].get<std::string>());
    if (!format.empty()) {
      ByteDfa f = ByteDfa::regex(format, path + ".format", &regexWork);
      dfa = std::make_unique<ByteDfa>(dfa ? dfa->intersect(f, where) : std::move(f));
      if (!s.contains("pattern")) where = path + ".format";
    }
  }
  if (!dfa) return dfa;
  *dfa = dfa->withLength(minChars, maxChars, where);
  if (dfa->empty())
    fail(where, "no string matches it" + std::string(minChars > 0 || maxChars >= 0
                                                         ? " within minLength and maxLength"
                                                         : "") +
                    (s.contains("pattern") && s.contains("format") ? " and the format" : ""));
  return dfa;
}

/// A number or an integer, held to its bounds and multipleOf when it has any.
int32_t JsonSchemaCompiler::number(const ojson &s, bool integer, const std::string &path) {
  ByteDfa::NumberBounds b;
  b.integer = integer;
  bool any = false;
  auto value = [&](const char *kw) -> const ojson * {
    if (!s.contains(kw)) return nullptr;
    const ojson &v = s[kw];
    if (!v.is_number() || (v.is_number_float() && !std::isfinite(v.get<double>())))
      fail(path + "." + kw, "must be a number");
    any = true;
    return &v;
  };
  // The lower bound and the upper: minimum or exclusiveMinimum (a number,
  // or draft 4's true beside minimum), the tighter when both are numbers.
  for (int upper = 0; upper < 2; ++upper) {
    const char *inclusive = upper ? "maximum" : "minimum";
    const char *exclusive = upper ? "exclusiveMaximum" : "exclusiveMinimum";
    const ojson *in = value(inclusive);
    const ojson *ex = s.contains(exclusive) && s[exclusive].is_boolean() ? nullptr
                                                                         : value(exclusive);
    bool strict = s.contains(exclusive) && s[exclusive].is_boolean() && s[exclusive].get<bool>();
    const ojson *bound = in;
    if (ex && (!in || (upper ? ex->get<double>() <= in->get<double>()
                             : ex->get<double>() >= in->get<double>())))
      bound = ex, strict = true;
    (upper ? b.maximum : b.minimum) = bound ? bound->dump() : "";
    (upper ? b.exclusiveMaximum : b.exclusiveMinimum) = bound && strict;
  }
  if (const ojson *m = value("multipleOf")) b.multipleOf = m->dump();
  Node n;
  n.kind = integer ? Kind::integer : Kind::number;
  if (!any) return integer ? add(std::move(n)) : JsonSchema::kAnyNumber;
  out.dfas.push_back(ByteDfa::number(b, path));
  out.dfaPaths.push_back(path);
  out.counts.emplace_back();
  n.automaton = int32_t(out.dfas.size() - 1);
  return add(std::move(n));
}

namespace {
/// Whether the automaton accepts the whole text.
bool matches(const ByteDfa &dfa, const std::string &text) {
  int32_t state = dfa.start();
  for (char c : text)
    if (state != ByteDfa::kNone) state = dfa.next(state, uint8_t(c));
  return state != ByteDfa::kNone && dfa.accepts(state);
}
} // namespace

bool JsonSchemaCompiler::Names::allows(const std::string &name) const {
  if (any) return true;
  if (dfa) return matches(*dfa, name);
  return std::find(literals.begin(), literals.end(), name) != literals.end();
}

/// propertyNames: a schema for strings (a $ref to one too): enum or const,
/// pattern, format, minLength and maxLength.
JsonSchemaCompiler::Names JsonSchemaCompiler::propertyNames(const ojson &schema,
                                                            const std::string &at) {
  Names names;
  if (!schema.contains("propertyNames")) return names;
  auto [s, path] = resolve(schema["propertyNames"], at + ".propertyNames");
  for (int hops = 0; s->is_object() && s->contains("$ref") && hops < 32; ++hops)
    std::tie(s, path) = resolve(*s, path); // a $ref to a $ref
  if (s->is_boolean()) {
    names.any = s->get<bool>(); // false: no name at all
    return names;
  }
  if (!s->is_object()) fail(path, "a schema must be an object or a boolean");
  for (const auto &[key, value] : s->items()) {
    if (kAnnotations.count(key) || key.compare(0, 2, "x-") == 0) continue;
    if (key == "type") {
      if (value != "string" && value != ojson::array({"string"}))
        fail(path + ".type", "property names are strings: say \"string\" or leave type out");
    } else if (key != "enum" && key != "const" && key != "pattern" && key != "minLength" &&
               key != "maxLength") {
      fail(path + "." + key, "kvplan holds property names to enum, const, pattern, format, "
                             "minLength and maxLength (and type string); remove \"" + key +
                             "\" or say it with those");
    }
  }
  const int64_t lo = s->contains("minLength") ? count((*s)["minLength"], path + ".minLength") : 0;
  const int64_t hi = s->contains("maxLength") ? count((*s)["maxLength"], path + ".maxLength")
                                              : -1;
  if (hi >= 0 && lo > hi) fail(path, "minLength is more than maxLength: no name meets both");
  std::string where;
  std::unique_ptr<ByteDfa> dfa = automaton(*s, lo, hi, path, where);
  if (!dfa && (lo > 0 || hi >= 0)) { // lengths alone: any text of them
    where = path;
    dfa = std::make_unique<ByteDfa>(
        ByteDfa::regex("", where, &regexWork).withLength(lo, hi, where));
  }
  if (s->contains("enum") || s->contains("const")) {
    if (s->contains("enum") && s->contains("const"))
      fail(path + ".const", "enum and const together are not supported; keep one");
    const ojson values = s->contains("enum") ? (*s)["enum"] : ojson::array({(*s)["const"]});
    if (!values.is_array() || values.empty()) fail(path + ".enum", "must be a non-empty array");
    names.any = false;
    for (const ojson &v : values) { // a value not a string, or not of the pattern: no name
      if (!v.is_string()) continue;
      const std::string name = v.get<std::string>();
      if ((!dfa || matches(*dfa, name)) &&
          std::find(names.literals.begin(), names.literals.end(), name) == names.literals.end())
        names.literals.push_back(name);
    }
    return names;
  }
  if (dfa) names.any = false, names.dfa = std::move(dfa);
  return names;
}

/// patternProperties: each pattern's automaton and its values' node.
std::vector<JsonSchemaCompiler::Pattern>
JsonSchemaCompiler::patternProperties(const ojson &s, const std::string &at) {
  std::vector<Pattern> out;
  if (!s.contains("patternProperties")) return out;
  const std::string path = at + ".patternProperties";
  const ojson &p = s["patternProperties"];
  if (!p.is_object()) fail(path, "must be an object of schemas by regular expression");
  for (const auto &[text, schema] : p.items())
    out.push_back({text, ByteDfa::regex(text, path + "." + text, &regexWork),
                   node(schema, path + "." + text)});
  return out;
}

/// A map's names as automata: one patterned string node.
int32_t JsonSchemaCompiler::nameNode(const ByteDfa &dfa, const std::string &path) {
  JsonSchema::NameCounts c;
  c.from = dfa.textCounts(JsonSchema::kManyNames);
  c.fewest = *std::min_element(c.from.begin(), c.from.end());
  out.dfas.push_back(dfa);
  out.dfaPaths.push_back(path);
  out.counts.push_back(std::move(c));
  Node n;
  n.kind = Kind::string;
  n.automaton = int32_t(out.dfas.size() - 1);
  return add(std::move(n));
}

/// A map's names in groups by their values' schema: without
/// patternProperties one, additionalProperties's; with them, a group per
/// pattern of the names it alone matches, and those none matches when
/// additionalProperties is a schema (`additional`: -2 absent, -1 false).
std::vector<JsonSchema::NameGroup> JsonSchemaCompiler::mapNames(
    const Names &names, const std::vector<Pattern> &patterns, int32_t additional,
    const std::string &path) {
  std::vector<JsonSchema::NameGroup> groups;
  // The names of `dfa` (null: any) that none of `others` matches.
  auto group = [&](const ByteDfa *dfa, std::vector<const ByteDfa *> others, int32_t value,
                   const std::string &where) {
    if (names.any && !dfa && others.empty()) {
      groups.push_back({JsonSchema::kAnyString, value, JsonSchema::kManyNames});
      return;
    }
    if (!names.any && !names.dfa) { // literals
      Node n;
      n.kind = Kind::literals;
      for (const std::string &name : names.literals) {
        bool in = !dfa || matches(*dfa, name);
        for (const ByteDfa *o : others) in = in && !matches(*o, name);
        if (!in) continue;
        n.literals.push_back(ojson(name).dump());
        literal(n.literals.back());
      }
      if (n.literals.empty()) return;
      const uint64_t count = n.literals.size();
      groups.push_back({add(std::move(n)), value, count});
      return;
    }
    ByteDfa base = dfa ? *dfa : ByteDfa::regex("", where, &regexWork);
    if (names.dfa) base = base.intersect(*names.dfa, where);
    ByteDfa only = base.minus(others, where);
    if (only.empty()) return;
    const int32_t key = nameNode(only, where);
    const JsonSchema::NameCounts &counts = out.counts[size_t(out.all[size_t(key)].automaton)];
    groups.push_back({key, value, counts.from[size_t(only.start())]});
  };
  if (patterns.empty()) {
    if (additional != -1) group(nullptr, {}, additional == -2 ? JsonSchema::kAny : additional,
                                path + ".propertyNames");
    return groups;
  }
  std::vector<const ByteDfa *> all;
  for (const Pattern &p : patterns) all.push_back(&p.dfa);
  for (size_t k = 0; k < patterns.size(); ++k) {
    std::vector<const ByteDfa *> others = all;
    others.erase(others.begin() + std::ptrdiff_t(k));
    group(&patterns[k].dfa, others, patterns[k].node,
          path + ".patternProperties." + patterns[k].text);
  }
  if (additional >= 0) group(nullptr, all, additional, path + ".additionalProperties");
  return groups;
}

int32_t JsonSchemaCompiler::object(const ojson &s, const std::string &path) {
  const int32_t self = add(Node{});
  Node n;
  n.kind = Kind::object;
  int32_t additional = -2; // absent
  if (s.contains("additionalProperties")) {
    const ojson &a = s["additionalProperties"];
    additional = a.is_boolean() && !a.get<bool>() ? -1
                                                    : node(a, path + ".additionalProperties");
  }
  const Names names = propertyNames(s, path);
  const std::vector<Pattern> patterns = patternProperties(s, path);
  // The node a name's value follows when the schema does not list it:
  // the one pattern it matches, else additionalProperties.
  auto unlisted = [&](const std::string &name, const std::string &where) {
    const Pattern *met = nullptr;
    for (const Pattern &p : patterns) {
      if (!matches(p.dfa, name)) continue;
      if (met)
        fail(where, "\"" + name + "\" matches patternProperties \"" + met->text + "\" and \"" +
                        p.text + "\", and kvplan cannot hold a value to two schemas; make "
                        "the patterns exclusive");
      met = &p;
    }
    return met ? met->node : additional == -2 ? JsonSchema::kAny : additional;
  };
  if (s.contains("properties")) {
    const ojson &p = s["properties"];
    if (!p.is_object()) fail(path + ".properties", "must be an object of schemas");
    for (const auto &[name, schema] : p.items()) {
      JsonSchema::Property prop;
      prop.key = ojson(name).dump().substr(1);
      prop.node = node(schema, path + ".properties." + name);
      for (const Pattern &pat : patterns)
        if (matches(pat.dfa, name))
          fail(path + ".properties." + name, "\"" + name + "\" also matches patternProperties "
               "\"" + pat.text + "\", and kvplan cannot hold a value to two schemas; list its "
               "schema in one place");
      if (!names.allows(name)) continue; // never written: it would break propertyNames
      literal(prop.key);
      n.properties.push_back(std::move(prop));
    }
  }
  if (s.contains("required")) {
    const ojson &r = s["required"];
    if (!r.is_array()) fail(path + ".required", "must be an array of property names");
    for (const ojson &name : r) {
      if (!name.is_string()) fail(path + ".required", "must be an array of property names");
      const std::string text = name.get<std::string>(), key = ojson(name).dump().substr(1);
      if (!names.allows(text))
        fail(path + ".required", "names \"" + text + "\", which propertyNames refuses: no "
                                 "object meets both");
      auto it = std::find_if(n.properties.begin(), n.properties.end(),
                             [&](const JsonSchema::Property &p) { return p.key == key; });
      if (it != n.properties.end()) {
        it->required = true;
        continue;
      }
      const int32_t value = unlisted(text, path + ".required");
      if (value == -1)
        fail(path + ".required", "names \"" + text + "\", which properties lack, and "
                                 "additionalProperties is false: no object meets both");
      literal(key);
      n.properties.push_back({key, value, true});
    }
  }
  // With properties, only those are written; without, a map.
  const bool map = n.properties.empty() && !s.contains("required") &&
                   !(s.contains("properties") && !s["properties"].empty());
  if (map) n.names = mapNames(names, patterns, additional, path);
  propertyCounts(s, n, map, path);
  out.all[size_t(self)] = std::move(n);
  return self;
}

/// minProperties and maxProperties: a map's counts; an object with
/// properties meets them as it is written (its required ones at least,
/// all it lists at most), or is refused.
void JsonSchemaCompiler::propertyCounts(const ojson &s, Node &n, bool map,
                                        const std::string &path) {
  if (s.contains("minProperties")) n.minCount = count(s["minProperties"], path + ".minProperties");
  if (s.contains("maxProperties")) n.maxCount = count(s["maxProperties"], path + ".maxProperties");
  if (n.maxCount >= 0 && n.minCount > n.maxCount)
    fail(path, "minProperties is more than maxProperties: no object meets both");
  if (map) {
    uint64_t names = 0;
    for (const JsonSchema::NameGroup &g : n.names)
      names = std::min(JsonSchema::kManyNames, names + g.names);
    if (uint64_t(n.minCount) > names)
      fail(path + ".minProperties", std::to_string(n.minCount) + " properties, and the names " +
                                        "that propertyNames, patternProperties and " +
                                        "additionalProperties allow are " +
                                        std::to_string(names) + ": no object meets them");
    return;
  }
  const int64_t required = std::count_if(n.properties.begin(), n.properties.end(),
                                         [](const JsonSchema::Property &p) { return p.required; });
  const int64_t listed = int64_t(n.properties.size());
  if (n.minCount > required)
    fail(path + ".minProperties", std::to_string(n.minCount) + ", and " +
                                      std::to_string(required) + " of its properties are " +
                                      "required: kvplan writes an object with properties as "
                                      "listed, the optional ones when the model chooses; list " +
                                      "enough of them in required");
  if (n.maxCount >= 0 && n.maxCount < listed)
    fail(path + ".maxProperties", std::to_string(n.maxCount) + ", and it lists " +
                                      std::to_string(listed) + " properties: kvplan writes an "
                                      "object with properties as listed, any optional one "
                                      "when the model chooses; list at most " +
                                      std::to_string(n.maxCount));
  n.minCount = 0, n.maxCount = -1; // met as written
}

/// An array: prefixItems (a tuple's items, one schema each, in order), then
/// items for every item after them (false: none), and the counts.
int32_t JsonSchemaCompiler::array(const ojson &s, const std::string &path) {
  Node n;
  n.kind = Kind::array;
  n.items = JsonSchema::kAny;
  if (s.contains("prefixItems")) {
    const ojson &p = s["prefixItems"];
    if (!p.is_array() || p.empty()) fail(path + ".prefixItems", "must be a non-empty array");
    for (size_t k = 0; k < p.size(); ++k)
      n.prefix.push_back(node(p[k], path + ".prefixItems[" + std::to_string(k) + "]"));
  }
  if (s.contains("items")) {
    const ojson &i = s["items"];
    if (i.is_boolean() && !i.get<bool>())
      n.maxCount = int64_t(n.prefix.size());
    else if (i.is_array())
      fail(path + ".items", "items as an array (draft 2019's tuples) is not supported; write "
                            "the tuple's schemas as prefixItems (and items false after them)");
    else
      n.items = node(i, path + ".items");
  }
  if (s.contains("minItems")) n.minCount = count(s["minItems"], path + ".minItems");
  if (s.contains("maxItems")) {
    const int64_t m = count(s["maxItems"], path + ".maxItems");
    n.maxCount = n.maxCount >= 0 ? std::min(n.maxCount, m) : m;
  }
  if (n.maxCount >= 0 && n.minCount > n.maxCount)
    fail(path, "minItems is more than the items allowed (maxItems, or prefixItems and items "
               "false)");
  uniqueItems(s, n, path);
  return add(std::move(n));
}

/// An automaton's NameCounts, counted once.
const JsonSchema::NameCounts &JsonSchemaCompiler::textCounts(int32_t automaton) {
  JsonSchema::NameCounts &c = out.counts[size_t(automaton)];
  if (c.from.empty()) {
    c.from = out.dfas[size_t(automaton)].textCounts(JsonSchema::kManyNames);
    c.fewest = *std::min_element(c.from.begin(), c.from.end());
  }
  return c;
}

/// uniqueItems: items the recogniser can tell apart as values (strings,
/// integers and numbers without bounds, booleans, null, an anyOf of those of
/// different kinds, as pydantic writes set[Optional[str]], enum or const
/// values); their enum values once each by value (1 and 1.0 are one).
void JsonSchemaCompiler::uniqueItems(const ojson &s, Node &n, const std::string &path) {
  if (!s.contains("uniqueItems")) return;
  const std::string at = path + ".uniqueItems";
  if (!s["uniqueItems"].is_boolean()) fail(at, "must be true or false");
  if (!s["uniqueItems"].get<bool>()) return;
  if (!n.prefix.empty())
    fail(at, "uniqueItems beside prefixItems is not supported (kvplan compares items of one "
             "schema); leave one out");
  Node item = out.all[size_t(n.items)];
  uint64_t distinct = 0;
  if (item.kind == Kind::literals) { // each value compared as the first equal to it (1.0 as 1)
    std::vector<nlohmann::json> values;
    for (const std::string &l : item.literals) {
      if (l[0] == '{' || l[0] == '[') fail(at, "items are enum values that are objects or "
                                               "arrays: " + kUniqueKinds);
      values.push_back(nlohmann::json::parse(l));
      const size_t first = size_t(std::find(values.begin(), values.end(), values.back()) -
                                  values.begin());
      item.sameAs.push_back(int32_t(first));
      distinct += first + 1 == values.size();
    }
    n.items = add(std::move(item));
  } else if (item.kind == Kind::anyOf) { // alternatives of different kinds: no value in two
    std::set<Kind> kinds;
    for (int32_t a : item.alternatives) {
      const Node &alt = out.all[size_t(a)];
      if (alt.kind == Kind::literals || alt.kind == Kind::anyOf ||
          !kinds.insert(alt.kind == Kind::integer ? Kind::number : alt.kind).second)
        fail(at, "items are an anyOf whose alternatives may share a value (of one kind, an "
                 "integer and a number, or enum values): " + std::string(kUniqueKinds));
      distinct = std::min(JsonSchema::kManyNames, distinct + uniqueValues(alt, at));
    }
  } else {
    distinct = uniqueValues(item, at);
  }
  if (uint64_t(n.minCount) > distinct)
    fail(path + ".minItems", std::to_string(n.minCount) + " items, all different "
                             "(uniqueItems), and the items' schema has " +
                             std::to_string(distinct) + " values: no array meets them");
  n.unique = true;
}

/// How many values a unique array's item of this kind has (kManyNames:
/// very many), or a refusal naming `at`.
uint64_t JsonSchemaCompiler::uniqueValues(const Node &item, const std::string &at) {
  switch (item.kind) {
  case Kind::string: // a free string of maxLength 0 has one value
    if (item.automaton >= 0)
      return textCounts(item.automaton).from[size_t(out.dfas[size_t(item.automaton)].start())];
    return item.maxCount == 0 ? 1 : JsonSchema::kManyNames;
  case Kind::integer:
  case Kind::number: // bounds would let -0 and 0, or 1.0 and 1, count twice
    if (item.automaton >= 0) fail(at, "items are numbers with bounds: " + kUniqueKinds);
    return JsonSchema::kManyNames;
  case Kind::boolean: return 2;
  case Kind::null: return 1;
  default: fail(at, kUniqueKinds);
  }
}

int32_t JsonSchemaCompiler::literals(const ojson &s, const std::string &path) {
  if (s.contains("enum") && s.contains("const"))
    fail(path + ".const", "enum and const together are not supported; keep one");
  for (const auto &[key, value] : s.items())
    if (key != "enum" && key != "const" && key != "type" && key != "nullable" &&
        !kAnnotations.count(key) && key.compare(0, 2, "x-") != 0)
      fail(path + "." + key, "beside enum or const only type is supported (the values say "
                             "the rest)");
  const bool isEnum = s.contains("enum");
  const std::string kw = isEnum ? "enum" : "const";
  const ojson values = isEnum ? s["enum"] : ojson::array({s["const"]});
  if (!values.is_array() || values.empty()) fail(path + ".enum", "must be a non-empty array");
  std::vector<std::string> types;
  if (s.contains("type")) {
    const ojson &t = s["type"];
    for (const ojson &name : t.is_array() ? t : ojson::array({t})) {
      if (!name.is_string()) fail(path + ".type", "must be a type name or an array of them");
      types.push_back(name.get<std::string>());
    }
  }
  Node n;
  n.kind = Kind::literals;
  for (const ojson &v : values) {
    bool ok = types.empty();
    for (const std::string &t : types) ok = ok || typeMatches(v, t);
    if (!ok) continue; // a value of another type than the schema's: never valid
    n.literals.push_back(v.dump());
    literal(n.literals.back());
  }
  if (n.literals.empty())
    fail(path + "." + kw, "no value of " + kw + " has the schema's type: none is valid");
  return add(std::move(n));
}

/// "#", "#/$defs/Name", "#/definitions/Name" or any other JSON pointer into
/// the document; compiled once (a recursive schema points back to itself).
int32_t JsonSchemaCompiler::reference(const ojson &s, const std::string &path) {
  const ojson &r = s["$ref"];
  if (r.is_string())
    if (auto it = refs.find(r.get<std::string>()); it != refs.end()) return it->second;
  const auto [at, targetPath] = resolve(s, path);
  const int32_t self = add(Node{});
  refs[r.get<std::string>()] = self;
  const int32_t body = node(*at, targetPath);
  out.all[size_t(self)] = out.all[size_t(body)];
  return self;
}

/// What a schema's $ref points to and its path (the schema itself when it
/// has no $ref).
std::pair<const ojson *, std::string> JsonSchemaCompiler::resolve(const ojson &s,
                                                                  const std::string &path) const {
  if (!s.is_object() || !s.contains("$ref")) return {&s, path};
  const ojson &r = s["$ref"];
  if (!r.is_string() || r.get<std::string>().compare(0, 1, "#") != 0)
    fail(path + ".$ref", "only references into this schema (\"#...\") are supported");
  const std::string target = r.get<std::string>();
  const ojson *at = &doc;
  std::string targetPath = where;
  size_t pos = 1;
  while (pos < target.size()) {
    if (target[pos] != '/') fail(path + ".$ref", "\"" + target + "\" is not a JSON pointer");
    size_t end = target.find('/', pos + 1);
    if (end == std::string::npos) end = target.size();
    std::string token = target.substr(pos + 1, end - pos - 1);
    for (size_t k; (k = token.find("~1")) != std::string::npos;) token.replace(k, 2, "/");
    for (size_t k; (k = token.find("~0")) != std::string::npos;) token.replace(k, 2, "~");
    const bool index = !token.empty() && token.find_first_not_of("0123456789") == std::string::npos;
    if (at->is_array() && index && std::stoull(token) < at->size()) {
      at = &(*at)[std::stoull(token)];
      targetPath += "[" + token + "]";
    } else if (at->is_object() && at->contains(token)) {
      at = &(*at)[token];
      targetPath += "." + token;
    } else {
      fail(path + ".$ref", "\"" + target + "\" names nothing in the schema");
    }
    pos = end;
  }
  return {at, targetPath};
}

/// Drops what accepts no value (anyOf alternatives, optional properties, a
/// map's values, array items), so the recogniser never reaches a state no
/// text can finish; a required part that accepts none makes its parent so.
void JsonSchemaCompiler::prune(int32_t root) {
  std::vector<Node> &all = out.all;
  std::vector<bool> ok(all.size(), false);
  for (bool changed = true; changed;) {
    changed = false;
    for (size_t i = 0; i < all.size(); ++i) {
      if (ok[i]) continue;
      const Node &n = all[i];
      bool now = true;
      if (n.kind == Kind::anyOf) {
        now = std::any_of(n.alternatives.begin(), n.alternatives.end(),
                          [&](int32_t a) { return ok[size_t(a)]; });
      } else if (n.kind == Kind::object) {
        for (const auto &p : n.properties) now = now && (!p.required || ok[size_t(p.node)]);
        uint64_t names = 0; // a map's names whose values can be written: minProperties
        for (const auto &g : n.names)
          if (ok[size_t(g.value)]) names = std::min(JsonSchema::kManyNames, names + g.names);
        now = now && names >= uint64_t(n.minCount);
      } else if (n.kind == Kind::array) { // its first minCount items can be written
        for (int64_t k = 0; k < n.minCount && now; ++k)
          now = ok[size_t(JsonSchema::itemNode(n, k))];
      }
      if (now) ok[i] = changed = true;
    }
  }
  if (!ok[size_t(root)])
    fail(where, "no JSON value meets this schema (a required property or item, the "
                "values minProperties needs, or every alternative of an anyOf, accepts none: "
                "a recursive schema must let the recursion end)");
  for (Node &n : all) {
    auto bad = [&](int32_t a) { return !ok[size_t(a)]; };
    n.alternatives.erase(std::remove_if(n.alternatives.begin(), n.alternatives.end(), bad),
                         n.alternatives.end());
    n.properties.erase(std::remove_if(n.properties.begin(), n.properties.end(),
                                      [&](const auto &p) { return bad(p.node); }),
                       n.properties.end());
    n.names.erase(std::remove_if(n.names.begin(), n.names.end(),
                                 [&](const auto &g) { return bad(g.value); }),
                  n.names.end());
    if (n.kind != Kind::array) continue;
    // Items that can be written no further than the first that cannot be.
    int64_t most = n.items >= 0 && bad(n.items) ? int64_t(n.prefix.size()) : -1;
    for (size_t k = 0; k < n.prefix.size(); ++k)
      if (bad(n.prefix[k])) {
        most = int64_t(k);
        break;
      }
    if (most >= 0) n.maxCount = n.maxCount >= 0 ? std::min(n.maxCount, most) : most;
  }
}

bool JsonSchemaCompiler::isObject(int32_t i, int depth) const {
  const Node &n = out.all[size_t(i)];
  if (n.kind == Kind::object) return true;
  if (n.kind == Kind::literals)
    return std::all_of(n.literals.begin(), n.literals.end(),
                       [](const std::string &l) { return l[0] == '{'; });
  if (n.kind != Kind::anyOf || depth > 64) return false;
  return std::all_of(n.alternatives.begin(), n.alternatives.end(),
                     [&](int32_t a) { return isObject(a, depth + 1); });
}

namespace {

/// Schemas compiled lately, by `where` and the schema's text, the one used
/// last first; at most kCachedSchemas of them holding kCachedBytes.
class CompiledSchemas {
public:
  std::shared_ptr<const JsonSchema> find(const std::string &key) {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = byKey.find(key);
    if (it == byKey.end()) return nullptr;
    order.splice(order.begin(), order, it->second);
    ++hits;
    return it->second->schema;
  }
  void add(std::string key, std::shared_ptr<const JsonSchema> schema) {
    const size_t size = schema->memoryBytes() + key.size();
    if (size > JsonSchema::kCachedBytes) return;
    std::lock_guard<std::mutex> lock(mutex);
    if (byKey.count(key)) return; // compiled meanwhile by another request
    order.push_front({key, std::move(schema), size});
    byKey[std::move(key)] = order.begin();
    held += size;
    while (order.size() > JsonSchema::kCachedSchemas || held > JsonSchema::kCachedBytes) {
      held -= order.back().size;
      byKey.erase(order.back().key);
      order.pop_back();
    }
  }
  uint64_t hitCount() {
    std::lock_guard<std::mutex> lock(mutex);
    return hits;
  }

private:
  struct Entry {
    std::string key;
    std::shared_ptr<const JsonSchema> schema;
    size_t size;
  };
  std::mutex mutex;
  std::list<Entry> order;
  std::unordered_map<std::string, std::list<Entry>::iterator> byKey;
  size_t held = 0;
  uint64_t hits = 0;
};

CompiledSchemas &compiledSchemas() {
  static CompiledSchemas cache;
  return cache;
}

} // namespace

std::shared_ptr<const JsonSchema> JsonSchema::compile(const ojson &schema,
                                                      const std::string &where) {
  std::string key = where + '\n' + schema.dump();
  if (std::shared_ptr<const JsonSchema> hit = compiledSchemas().find(key)) return hit;
  std::shared_ptr<const JsonSchema> compiled = JsonSchemaCompiler(schema, where).run();
  compiledSchemas().add(std::move(key), compiled);
  return compiled;
}

uint64_t JsonSchema::cacheHits() { return compiledSchemas().hitCount(); }

size_t JsonSchema::memoryBytes() const {
  size_t n = sizeof(*this) + all.size() * sizeof(Node);
  for (const Node &node : all) {
    n += node.properties.size() * sizeof(Property) + node.prefix.size() * sizeof(int32_t) +
         node.sameAs.size() * sizeof(int32_t) +
         node.alternatives.size() * sizeof(int32_t) + node.names.size() * sizeof(NameGroup);
    for (const Property &p : node.properties) n += p.key.size();
    for (const std::string &l : node.literals) n += sizeof(l) + l.size();
  }
  for (const ByteDfa &d : dfas) n += d.bytes();
  for (const std::string &p : dfaPaths) n += sizeof(p) + p.size();
  for (const NameCounts &c : counts) n += sizeof(c) + c.from.size() * sizeof(uint64_t);
  return n;
}

std::shared_ptr<const JsonSchema> JsonSchema::anyObject() {
  static const std::shared_ptr<const JsonSchema> any = compile(ojson::object(), "schema");
  return any;
}

// ----------------------------------------------------------------------------
// The recogniser
// ----------------------------------------------------------------------------

namespace {

enum Mode : uint8_t {
  objFirst,   // after '{': a key or '}'
  objKey,     // after ',': a key
  objKeyRead, // a key being read (the frame above)
  objColon,   // after a key
  objValue,   // after ':'
  objInValue, // a value being read (the frame above)
  objAfter,   // after a value: ',' or '}'
  arrFirst,   // after '[': an item or ']'
  arrValue,   // after ',': an item
  arrInValue, // an item being read
  arrAfter,   // after an item: ',' or ']'
  str,        // in a string, between characters
  strUtf8,    // a UTF-8 sequence: `pending` bytes to go, the next in [lo, hi]
  strEscape,  // after '\'
  strHex,     // \u and `pending` hex digits to go (`lo`: unicodeEscapeDigit's surrogate)
  strLowSlash, // after a high surrogate's escape: the '\' of its low one
  strLowU,     // then its 'u'
  keyName,    // a property's name (after its opening quote): `choice`, `count` bytes read
  literal,    // an enum/const value, true, false or null: `count` bytes read
  numMinus, numZero, numInt, numPoint, numFrac, numExp, numExpSign, numExpDigits,
  numBounded, // a number held to bounds: `choice` is its automaton's state
};

/// One hex digit `c` of a \u escape in a string, `pending` digits to go (4
/// at the first). `surrogate` says what the escape is so far: 0 a
/// character; 1 maybe a surrogate (it began with d); 2 a high surrogate
/// (D800 to DBFF), which the escape of a low one must follow; 3 that low
/// one (DC00 to DFFF), set by the caller. False when the digit is refused:
/// not hex, a low surrogate alone, or not the low one a high one needs.
/// Strict parsers (nlohmann's among them) refuse unpaired surrogates.
bool unicodeEscapeDigit(unsigned char c, uint8_t pending, uint8_t &surrogate) {
  const bool hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
  if (!hex) return false;
  const unsigned char lower = c | 0x20;
  if (pending == 4) {
    if (surrogate == 3) return lower == 'd';
    surrogate = lower == 'd' ? 1 : 0;
  } else if (pending == 3) {
    const bool high = lower >= '8' && lower <= 'b', low = lower >= 'c' && lower <= 'f';
    if (surrogate == 3) return low;
    if (surrogate == 1) {
      if (low) return false;
      surrogate = high ? 2 : 0;
    }
  }
  return true;
}

bool isSpace(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
bool isDigit(unsigned char c) { return c >= '0' && c <= '9'; }

/// The first property an object may write next and the last (the first
/// required one from `from`, else the last); `required` whether one is.
struct Candidates {
  int32_t first, last;
  bool required;
};
Candidates candidates(const Node &n, int32_t from) {
  const int32_t size = int32_t(n.properties.size());
  for (int32_t k = from; k < size; ++k)
    if (n.properties[size_t(k)].required) return {from, k, true};
  return {from, size - 1, false};
}

/// A map's names (Stack::names): each followed by its length in 4 bytes.
void appendName(std::string &names, const std::string &name) {
  const uint32_t size = uint32_t(name.size());
  names += name;
  names.append(reinterpret_cast<const char *>(&size), sizeof size);
}
/// `stop` on each of the last `count` names, the last first, until it says
/// to stop (then true).
bool lastNames(const std::string &names, int32_t count,
               const std::function<bool(const char *, size_t)> &stop) {
  size_t end = names.size();
  for (int32_t k = 0; k < count; ++k) {
    uint32_t size;
    std::memcpy(&size, names.data() + end - sizeof size, sizeof size);
    end -= sizeof size + size;
    if (stop(names.data() + end, size)) return true;
  }
  return false;
}
/// A unique array's item as it is compared (a tag, then its value): a
/// string's text, an integer as written (-0 as 0) without the byte that
/// ended it, an enum value's index, a boolean, null.
std::string itemKey(const SchemaState::Frame &f, const Node &n, const std::string &text) {
  switch (n.kind) {
  case Kind::string: return "s" + jsonStringText(text.substr(1, text.size() - 2));
  case Kind::integer: {
    const std::string digits = text.substr(0, text.size() - 1);
    return "n" + (digits == "-0" ? std::string("0") : digits);
  }
  case Kind::number: { // as the double it reads as (Python's float), -0 as 0
    double v = 0;
    const char *first = text.data(), *last = text.data() + text.size() - 1;
    if (std::from_chars(first, last, v).ec == std::errc::result_out_of_range) {
      const size_t e = text.find_first_of("eE"); // past a double: infinite, or 0
      const bool tiny = e != std::string::npos && text[e + 1] == '-';
      v = tiny ? 0 : text[0] == '-' ? -HUGE_VAL : HUGE_VAL;
    }
    if (v == 0) v = 0; // -0 as 0
    return "d" + std::string(reinterpret_cast<const char *>(&v), sizeof v);
  }
  case Kind::boolean: return f.choice ? "f" : "t";
  case Kind::null: return "z";
  default: return "l" + std::to_string(n.sameAs[size_t(f.choice)]);
  }
}

/// Whether the innermost map (which has written `count` names) wrote `name`.
bool written(const std::string &names, int32_t count, const std::string &name) {
  return lastNames(names, count, [&](const char *text, size_t size) {
    return size == name.size() && std::memcmp(text, name.data(), size) == 0;
  });
}
void dropNames(std::string &names, int32_t count) {
  size_t end = names.size();
  lastNames(names, count, [&](const char *text, size_t) {
    end = size_t(text - names.data());
    return false;
  });
  names.resize(end);
}

/// The 4 hex digits at text[at] (-1 when they are not all there).
int64_t hex4(const std::string &text, size_t at) {
  if (at + 4 > text.size()) return -1;
  uint32_t v = 0;
  for (size_t k = at; k < at + 4; ++k) {
    const char c = text[k];
    const int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
    if (d < 0) return -1;
    v = v * 16 + uint32_t(d);
  }
  return v;
}

} // namespace

std::string jsonStringText(const std::string &content) {
  if (content.find('\\') == std::string::npos) return content;
  std::string out;
  for (size_t i = 0; i < content.size(); ++i) {
    if (content[i] != '\\') {
      out += content[i];
      continue;
    }
    if (i + 1 >= content.size()) break;
    if (content[i + 1] != 'u') {
      const int byte = jsonEscapedByte(uint8_t(content[i + 1]));
      if (byte >= 0) out += char(byte);
      ++i;
      continue;
    }
    int64_t cp = hex4(content, i + 2);
    if (cp < 0) break;
    i += 5;
    if (cp >= 0xD800 && cp < 0xDC00) { // a high surrogate: its low one follows
      const int64_t low = i + 2 < content.size() && content[i + 1] == '\\' &&
                                  content[i + 2] == 'u' ? hex4(content, i + 3) : -1;
      if (low < 0xDC00 || low > 0xDFFF) break;
      cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
      i += 6;
    }
    appendUtf8(out, uint32_t(cp));
  }
  return out;
}

const char kJsonEscapedBytes[] = "\"\\/\b\f\n\r\t";

int jsonEscapedByte(unsigned char c) {
  static const char escapes[] = "\"\\/bfnrt";
  const char *at = c == 0 ? nullptr : std::strchr(escapes, c);
  return at == nullptr ? -1 : uint8_t(kJsonEscapedBytes[at - escapes]);
}

SchemaState::SchemaState(std::shared_ptr<const JsonSchema> s) : schema(std::move(s)) {
  stacks.resize(1);
  live = 1;
}

size_t SchemaState::add(const Stack &s) {
  if (live < stacks.size())
    stacks[live] = s;
  else
    stacks.push_back(s);
  stacks[live].dead = false;
  return live++;
}

bool SchemaState::twoUnits(Frame &f, const Node &n) const {
  if (n.maxCount >= 0 && f.count + f.choice + 1 > n.maxCount) return false;
  ++f.choice;
  return true;
}

bool SchemaState::escapeMatches(const Frame &f, const Node &n) const {
  for (const char *e = kJsonEscapedBytes; *e; ++e)
    if (dfa(n).next(f.choice, uint8_t(*e)) != ByteDfa::kNone) return true;
  return false;
}

bool SchemaState::space(Stack &s, unsigned char c) {
  const uint8_t bit = c == '\n' ? 1 : c == '\r' ? 2 : 0;
  if (s.breaks & bit) return false;
  s.breaks |= bit;
  return ++s.spaces <= kMaxSpaces;
}

void SchemaState::endValue(Stack &s) {
  const Frame done = s.frames.back();
  const Node &n = schema->nodes()[size_t(done.node)];
  // A map forgets its names, a unique array its items.
  if (((done.mode == objFirst || done.mode == objAfter) && !n.names.empty()) ||
      ((done.mode == arrFirst || done.mode == arrAfter) && n.unique))
    dropNames(s.names, done.count);
  s.frames.pop_back();
  if (s.frames.empty()) {
    s.done = true;
    return;
  }
  Frame &p = s.frames.back();
  // A map's name, a unique array's item: kept, or the reading refused when
  // its container has written it.
  auto once = [&](const std::string &key) {
    s.dead = written(s.names, p.count, key);
    if (!s.dead) appendName(s.names, key);
    return !s.dead;
  };
  if (p.mode == objKeyRead) {
    s.name.pop_back(); // its closing quote
    if (!once(jsonStringText(s.name))) return;
    ++p.count;
    p.mode = objColon;
  } else if (p.mode == objInValue) {
    p.mode = objAfter;
  } else { // arrInValue
    if (schema->nodes()[size_t(p.node)].unique && !once(itemKey(done, n, s.name))) return;
    ++p.count;
    p.mode = arrAfter;
  }
}

/// The first byte of a value of `node` on stack i (whose top frame, if any,
/// already says a value is being read); anyOf and enum values fork.
void SchemaState::startValue(size_t i, int32_t node, unsigned char c) {
  const Node &n = schema->nodes()[size_t(node)];
  auto push = [&](size_t at, Frame f) { stacks[at].frames.push_back(f); };
  switch (n.kind) {
  case Kind::any: {
    const int32_t to = c == '{' ? JsonSchema::kAnyObject : c == '[' ? JsonSchema::kAnyArray
                     : c == '"' ? JsonSchema::kAnyString
                     : c == 't' || c == 'f' ? JsonSchema::kBoolean
                     : c == 'n' ? JsonSchema::kNull : JsonSchema::kAnyNumber;
    return startValue(i, to, c);
  }
  case Kind::object:
    if (c != '{') break;
    return push(i, {node, objFirst});
  case Kind::array:
    if (c != '[') break;
    return push(i, {node, arrFirst});
  case Kind::string:
    if (c != '"') break;
    return push(i, {node, str, 0, 0, 0, 0, n.automaton >= 0 ? dfa(n).start() : 0});
  case Kind::integer:
  case Kind::number:
    if (n.automaton >= 0) {
      const int32_t to = dfa(n).next(dfa(n).start(), c);
      if (to == ByteDfa::kNone) break;
      return push(i, {node, numBounded, 0, 0, 0, 0, to});
    }
    if (c == '-') return push(i, {node, numMinus});
    if (c == '0') return push(i, {node, numZero});
    if (!isDigit(c)) break;
    return push(i, {node, numInt});
  case Kind::boolean:
  case Kind::null:
    if (c != (n.kind == Kind::null ? 'n' : 't') && !(n.kind == Kind::boolean && c == 'f')) break;
    return push(i, {node, literal, 0, 0, 0, 1, c == 'f' ? 1 : 0});
  case Kind::literals:
  case Kind::anyOf: {
    const Stack base = stacks[i];
    bool first = true;
    const size_t ways = n.kind == Kind::anyOf ? n.alternatives.size() : n.literals.size();
    for (size_t k = 0; k < ways; ++k) {
      if (n.kind == Kind::literals && uint8_t(n.literals[k][0]) != c) continue;
      const size_t at = first ? i : add(base);
      first = false;
      if (n.kind == Kind::anyOf) {
        startValue(at, n.alternatives[k], c);
      } else {
        push(at, {node, literal, 0, 0, 0, 1, int32_t(k)});
        if (n.literals[k].size() == 1) endValue(stacks[at]); // a one-digit number
      }
    }
    if (!first) return;
    break;
  }
  }
  stacks[i].dead = true;
}

/// '"' where an object's key may start: one reading per property the
/// object may write next, or per group of a map's names.
void SchemaState::startKey(size_t i) {
  Frame &f = stacks[i].frames.back();
  const Node &n = schema->nodes()[size_t(f.node)];
  f.mode = objKeyRead;
  if (!n.names.empty()) return startName(i);
  const Candidates c = candidates(n, f.count);
  if (c.first > c.last) {
    stacks[i].dead = true;
    return;
  }
  const int32_t node = f.node;
  const Stack base = stacks[i];
  for (int32_t k = c.first; k <= c.last; ++k) {
    const size_t at = k == c.first ? i : add(base);
    stacks[at].frames.push_back({node, keyName, 0, 0, 0, 0, k});
  }
}

/// A map's name: a reading per group (its index in the map's frame's
/// `choice`), of names the map has not written (a literal one of those
/// alone), when it may write another.
void SchemaState::startName(size_t i) {
  const Stack base = stacks[i];
  const Frame &map = base.frames.back();
  const Node &n = schema->nodes()[size_t(map.node)];
  bool first = true;
  auto fork = [&](size_t g, Frame name) {
    const size_t at = first ? i : add(base);
    first = false;
    stacks[at].frames.back().choice = int32_t(g);
    stacks[at].name.clear();
    stacks[at].frames.push_back(name);
  };
  for (size_t g = 0; g < n.names.size() && (n.maxCount < 0 || map.count < n.maxCount); ++g) {
    const int32_t k = n.names[g].key;
    const Node &key = schema->nodes()[size_t(k)];
    if (key.kind == Kind::literals) {
      for (size_t l = 0; l < key.literals.size(); ++l) {
        const std::string &text = key.literals[l]; // "..." as JSON writes it
        if (!written(base.names, map.count, jsonStringText(text.substr(1, text.size() - 2))))
          fork(g, {k, literal, 0, 0, 0, 1, int32_t(l)});
      }
    } else if (key.automaton < 0) {
      fork(g, {k, str});
    } else if (nameLeft(base, map, key, dfa(key).start(), "")) {
      fork(g, {k, str, 0, 0, 0, 0, dfa(key).start()});
    }
  }
  if (first) stacks[i].dead = true;
}

bool SchemaState::nameLeft(const Stack &s, const Frame &map, const Node &key, int32_t state,
                           const std::string &prefix) const {
  const JsonSchema::NameCounts *counts =
      key.automaton >= 0 ? schema->nameCounts(key.automaton) : nullptr;
  if (counts == nullptr || counts->from[size_t(state)] > uint64_t(map.count)) return true;
  // As few names from here as the map has written: is one of them new?
  for (const std::string &rest : dfa(key).textsFrom(state, size_t(map.count) + 1))
    if (!written(s.names, map.count, prefix + rest)) return true;
  return false;
}

bool SchemaState::anotherName(const Stack &s, const Frame &map) const {
  const Node &n = schema->nodes()[size_t(map.node)];
  if (n.maxCount >= 0 && map.count >= n.maxCount) return false;
  for (const JsonSchema::NameGroup &g : n.names) {
    if (g.names > uint64_t(map.count)) return true;
    const Node &key = schema->nodes()[size_t(g.key)];
    if (key.kind != Kind::literals) {
      if (nameLeft(s, map, key, dfa(key).start(), "")) return true;
      continue;
    }
    for (const std::string &text : key.literals)
      if (!written(s.names, map.count, jsonStringText(text.substr(1, text.size() - 2))))
        return true;
  }
  return false;
}

bool SchemaState::anotherItem(const Stack &s, const Frame &array) const {
  return valueLeft(s, array, schema->nodes()[size_t(schema->nodes()[size_t(array.node)].items)]);
}

bool SchemaState::valueLeft(const Stack &s, const Frame &array, const Node &item) const {
  switch (item.kind) {
  case Kind::string:
    if (item.automaton < 0) return item.maxCount != 0 || array.count == 0;
    return nameLeft(s, array, item, dfa(item).start(), "s");
  case Kind::boolean: return array.count < 2;
  case Kind::null: return array.count < 1;
  case Kind::literals:
    for (size_t k = 0; k < item.literals.size(); ++k)
      if (item.sameAs[k] == int32_t(k) && !written(s.names, array.count, "l" + std::to_string(k)))
        return true;
    return false;
  case Kind::anyOf:
    for (int32_t a : item.alternatives)
      if (valueLeft(s, array, schema->nodes()[size_t(a)])) return true;
    return false;
  default: return true; // integers and numbers without bounds
  }
}

bool SchemaState::recorded(const Stack &s) const {
  if (s.frames.size() < 2 || s.frames.back().mode == keyName) return false;
  const Frame &p = s.frames[s.frames.size() - 2];
  return p.mode == objKeyRead ||
         (p.mode == arrInValue && schema->nodes()[size_t(p.node)].unique);
}

void SchemaState::checkRecorded(size_t i) {
  Stack &s = stacks[i];
  if (s.dead || !recorded(s)) return;
  const Frame &f = s.frames.back(), &parent = s.frames[s.frames.size() - 2];
  const Node &n = schema->nodes()[size_t(f.node)];
  const bool item = parent.mode == arrInValue;
  if (f.mode == literal) { // an item's enum value, boolean or null (names start unwritten)
    if (item) s.dead = written(s.names, parent.count, itemKey(f, n, ""));
    return;
  }
  if (f.mode < str || f.mode > strLowU || n.automaton < 0) return;
  const JsonSchema::NameCounts *counts = schema->nameCounts(n.automaton);
  if (counts == nullptr || counts->from[size_t(f.choice)] > uint64_t(parent.count)) return;
  const std::string prefix = item ? "s" + jsonStringText(s.name.substr(1))
                                  : jsonStringText(s.name);
  s.dead = !nameLeft(s, parent, n, f.choice, prefix);
}

/// A byte where an object or an array expects a key, a value, a separator
/// or its end.
void SchemaState::feedContainer(size_t i, unsigned char c) {
  Stack &s = stacks[i];
  Frame &f = s.frames.back();
  const Node &n = schema->nodes()[size_t(f.node)];
  if (isSpace(c)) {
    s.dead = !space(s, c);
    return;
  }
  const bool map = !n.names.empty();
  const bool mustGoOn = map ? f.count < n.minCount : candidates(n, f.count).required;
  switch (f.mode) {
  case objFirst:
  case objKey:
    if (c == '"') return startKey(i);
    if (c == '}' && f.mode == objFirst && !mustGoOn) return endValue(s);
    break;
  case objColon:
    if (c != ':') break;
    f.mode = objValue;
    return;
  case objValue: {
    const int32_t value = map ? n.names[size_t(f.choice)].value
                              : n.properties[size_t(f.choice)].node;
    f.mode = objInValue;
    return startValue(i, value, c);
  }
  case objAfter:
    if (c == ',' && (map ? anotherName(s, f) : f.count < int32_t(n.properties.size()))) {
      f.mode = objKey;
      f.choice = -1;
      return;
    }
    if (c == '}' && !mustGoOn) return endValue(s);
    break;
  case arrFirst:
    if (c == ']' && n.minCount == 0) return endValue(s);
    if (n.maxCount == 0) break;
    f.mode = arrInValue;
    if (n.unique) s.name.assign(1, char(c)); // an item whole, to compare
    return startValue(i, JsonSchema::itemNode(n, 0), c);
  case arrValue:
    f.mode = arrInValue;
    if (n.unique) s.name.assign(1, char(c));
    return startValue(i, JsonSchema::itemNode(n, f.count), c);
  case arrAfter:
    if (c == ',' && (n.maxCount < 0 || f.count < n.maxCount) &&
        (!n.unique || anotherItem(s, f))) {
      f.mode = arrValue;
      return;
    }
    if (c == ']' && f.count >= n.minCount) return endValue(s);
    break;
  }
  s.dead = true;
}

/// A byte inside a string: its end (once it has minLength characters), an
/// escape, a character (while it has fewer than maxLength), or the rest of
/// a UTF-8 sequence or an escape (RFC 8259; UTF-8 without overlong forms,
/// surrogates or code points past U+10FFFF).
void SchemaState::feedString(size_t i, unsigned char c) {
  Stack &s = stacks[i];
  Frame &f = s.frames.back();
  const Node &n = schema->nodes()[size_t(f.node)];
  const bool patterned = n.automaton >= 0;
  const int32_t astral = patterned ? 0 : f.choice; // a patterned string's automaton counts
  switch (f.mode) {
  case str:
    if (c == '"') {
      if (f.count < n.minCount || (patterned && !dfa(n).accepts(f.choice))) break;
      return endValue(s);
    }
    if (c < 0x20 || (n.maxCount >= 0 && f.count + astral >= n.maxCount)) break;
    ++f.count;
    if (c == '\\') {
      if (patterned && !escapeMatches(f, n)) break;
      f.mode = strEscape;
      return;
    }
    if (patterned && !matchByte(f, n, c)) break;
    if (c < 0x80) return;
    f.lo = 0x80, f.hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      f.pending = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
      f.pending = 2;
      if (c == 0xE0) f.lo = 0xA0;
      if (c == 0xED) f.hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      if (!patterned && !twoUnits(f, n)) break;
      f.pending = 3;
      if (c == 0xF0) f.lo = 0x90;
      if (c == 0xF4) f.hi = 0x8F;
    } else {
      break;
    }
    f.mode = strUtf8;
    return;
  case strUtf8:
    if (c < f.lo || c > f.hi || (patterned && !matchByte(f, n, c))) break;
    f.lo = 0x80, f.hi = 0xBF;
    if (--f.pending == 0) f.mode = str, f.lo = f.hi = 0; // readings alike compare equal
    return;
  case strEscape:
    if (patterned) { // the escaped character's byte goes to the pattern; no \u escapes
      const int byte = jsonEscapedByte(c);
      if (byte < 0 || !matchByte(f, n, uint8_t(byte))) break;
      f.mode = str;
      return;
    }
    if (c == 'u') {
      f.mode = strHex;
      f.pending = 4;
      f.lo = 0;
      return;
    }
    if (jsonEscapedByte(c) < 0) break;
    f.mode = str;
    return;
  case strLowSlash: // a surrogate pair is one character: counted at its first '\'
    if (c != '\\') break;
    f.mode = strLowU;
    return;
  case strLowU:
    if (c != 'u') break;
    f.mode = strHex;
    f.pending = 4;
    f.lo = 3;
    return;
  default: // strHex
    if (!unicodeEscapeDigit(c, f.pending, f.lo)) break;
    if (--f.pending == 0) {
      if (f.lo == 2 && !twoUnits(f, n)) break; // a high surrogate: a pair's first half
      f.mode = f.lo == 2 ? strLowSlash : str;
      if (f.mode == str) f.lo = 0;
    }
    return;
  }
  s.dead = true;
}

/// A byte of a property's name, a literal or a number (whose end is the
/// byte after it, handed to the value around it).
void SchemaState::feedScalar(size_t i, unsigned char c) {
  Stack &s = stacks[i];
  Frame &f = s.frames.back();
  const Node &n = schema->nodes()[size_t(f.node)];
  if (f.mode == keyName || f.mode == literal) {
    const std::string &text =
        f.mode == keyName ? n.properties[size_t(f.choice)].key
        : n.kind == Kind::literals ? n.literals[size_t(f.choice)]
        : n.kind == Kind::null ? std::string("null") : f.choice ? "false" : "true";
    if (size_t(f.count) >= text.size() || uint8_t(text[size_t(f.count)]) != c) {
      s.dead = true;
      return;
    }
    if (size_t(++f.count) < text.size()) return;
    if (f.mode == literal) return endValue(s);
    const int32_t property = f.choice;
    s.frames.pop_back();
    Frame &object = s.frames.back();
    object.choice = property;
    object.count = property + 1;
    object.mode = objColon;
    return;
  }
  if (f.mode == numBounded) {
    const int32_t to = dfa(n).next(f.choice, c);
    if (to != ByteDfa::kNone) {
      f.choice = to;
      return;
    }
    if (!dfa(n).accepts(f.choice)) {
      s.dead = true;
      return;
    }
    endValue(s); // refused when it repeats a unique array's item
    if (!s.dead) feed(i, c);
    return;
  }
  const bool fraction = n.kind == Kind::number; // integers take no '.' or exponent
  switch (f.mode) {
  case numMinus:
    if (!isDigit(c)) break;
    f.mode = c == '0' ? numZero : numInt;
    return;
  case numPoint:
    if (!isDigit(c)) break;
    f.mode = numFrac;
    return;
  case numExp:
    if (c == '+' || c == '-') {
      f.mode = numExpSign;
      return;
    }
    [[fallthrough]];
  case numExpSign:
    if (!isDigit(c)) break;
    f.mode = numExpDigits;
    return;
  default: // numZero, numInt, numFrac, numExpDigits: a whole number so far
    if (isDigit(c) && f.mode != numZero) return;
    if (c == '.' && fraction && (f.mode == numZero || f.mode == numInt)) {
      f.mode = numPoint;
      return;
    }
    if ((c == 'e' || c == 'E') && fraction && f.mode != numExpDigits) {
      f.mode = numExp;
      return;
    }
    endValue(s); // refused when it repeats a unique array's item
    if (!s.dead) feed(i, c);
    return;
  }
  s.dead = true;
}

void SchemaState::feed(size_t i, unsigned char c) {
  Stack &s = stacks[i];
  if (s.done) {
    s.dead = true;
    return;
  }
  if (!isSpace(c)) s.spaces = s.breaks = 0;
  if (s.frames.empty()) { // before the top-level value
    if (isSpace(c)) {
      s.dead = !space(s, c);
      return;
    }
    s.started = true;
    return startValue(i, schema->root(), c);
  }
  const uint8_t mode = s.frames.back().mode;
  // A map's name or a unique array's item: its bytes kept (to compare with
  // those written).
  const bool record = recorded(s);
  if (record) s.name.push_back(char(c));
  if (mode <= arrAfter) {
    const bool item = (mode == arrFirst || mode == arrValue) &&
                      schema->nodes()[size_t(s.frames.back().node)].unique;
    const size_t before = live;
    feedContainer(i, c); // may fork (enum values): the forks are those from `before`
    if (!item) return;
    checkRecorded(i);
    for (size_t j = before; j < live; ++j) checkRecorded(j);
    return;
  }
  if (mode <= strLowU) feedString(i, c);
  else feedScalar(i, c);
  if (record) checkRecorded(i);
}

/// Drops dead readings and repeats of one, and keeps at most kMaxStacks.
void SchemaState::compact() {
  size_t kept = 0;
  for (size_t j = 0; j < live; ++j) {
    if (stacks[j].dead || kept == kMaxStacks) continue;
    bool repeat = false;
    for (size_t k = 0; k < kept && !repeat; ++k) repeat = stacks[k] == stacks[j];
    if (repeat) continue;
    if (kept != j) std::swap(stacks[kept], stacks[j]);
    ++kept;
  }
  live = kept;
}

bool SchemaState::assignPush(const SchemaState &from, unsigned char c) {
  schema = from.schema;
  live = 0;
  for (size_t j = 0; j < from.live; ++j) feed(add(from.stacks[j]), c);
  compact();
  return live > 0;
}

bool SchemaState::push(unsigned char c) {
  const SchemaState from = *this;
  return assignPush(from, c);
}

bool SchemaState::complete() const {
  for (size_t j = 0; j < live; ++j)
    if (stacks[j].done) return true;
  return false;
}

SchemaState::InPattern SchemaState::inPattern() const {
  if (live != 1 || stacks[0].frames.empty()) return {};
  const Frame &f = stacks[0].frames.back();
  const Node &n = schema->nodes()[size_t(f.node)];
  if (f.mode != str || n.automaton < 0) return {};
  // A map's name that might end only as one written: each token read.
  const JsonSchema::NameCounts *counts = schema->nameCounts(n.automaton);
  if (counts && counts->fewest <= uint64_t(stacks[0].frames[stacks[0].frames.size() - 2].count))
    return {};
  return {&dfa(n), f.choice};
}

int64_t SchemaState::stringRoom() const {
  if (live == 0) return -1;
  int64_t room = INT64_MAX;
  for (size_t j = 0; j < live; ++j) {
    const Stack &s = stacks[j];
    if (s.frames.empty() || s.frames.back().mode != str) return -1;
    const Frame &f = s.frames.back();
    if (schema->nodes()[size_t(f.node)].automaton >= 0) return -1; // each byte to its pattern
    const int64_t most = schema->nodes()[size_t(f.node)].maxCount;
    if (most >= 0) room = std::min(room, most - f.count - f.choice);
  }
  return room;
}

} // namespace kvplan
