// Structured output (runtime/JsonSchema.h): the compiler's refusals by name,
// the recogniser against a validator written here (JSON Schema's meaning of
// the keywords, on nlohmann's parse of the text) on written documents,
// instances generated from the schemas and their one-byte edits, random
// walks that must never reach a dead end, the vocabulary's mask against
// reading every token, and the sampler held to a schema.
#include "runtime/JsonGrammar.h"
#include "runtime/JsonSchema.h"
#include "runtime/Sampler.h"
#include "support/Error.h"
#include "tests/common/ByteReads.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <random>
#include <regex>
#include <string>
#include <vector>

using namespace kvplan;
using ojson = nlohmann::ordered_json;

namespace {

// ---------------------------------------------------------------------------
// The oracle: JSON Schema's meaning of the supported keywords.
// ---------------------------------------------------------------------------

size_t codePoints(const std::string &s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

/// A string's length in JavaScript: UTF-16 units, two past U+FFFF.
size_t utf16Units(const std::string &s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) == 0x80 ? 0 : c >= 0xF0 ? 2 : 1;
  return n;
}

bool hasType(const ojson &v, const std::string &t) {
  if (t == "integer")
    return v.is_number_integer() ||
           (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>());
  if (t == "number") return v.is_number();
  if (t == "object") return v.is_object();
  if (t == "array") return v.is_array();
  if (t == "string") return v.is_string();
  if (t == "boolean") return v.is_boolean();
  return t == "null" && v.is_null();
}

bool sameValue(const ojson &a, const ojson &b) { return nlohmann::json(a) == nlohmann::json(b); }

bool digits(const std::string &s, size_t from, size_t n) {
  for (size_t k = from; k < from + n; ++k)
    if (k >= s.size() || !std::isdigit(uint8_t(s[k]))) return false;
  return true;
}

/// The formats the tests' schemas use, by their RFCs' rules.
bool hasFormat(const std::string &v, const std::string &format) {
  if (format == "date") { // RFC 3339 full-date
    if (v.size() != 10 || v[4] != '-' || v[7] != '-' || !digits(v, 0, 4) || !digits(v, 5, 2) ||
        !digits(v, 8, 2))
      return false;
    const int y = std::stoi(v.substr(0, 4)), m = std::stoi(v.substr(5, 2)),
              d = std::stoi(v.substr(8, 2));
    const bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    const int days[] = {31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m >= 1 && m <= 12 && d >= 1 && d <= days[m - 1];
  }
  if (format == "ipv4") { // four decimal octets, no leading zero
    std::vector<std::string> parts(1);
    for (char c : v) {
      if (c == '.') parts.emplace_back();
      else parts.back().push_back(c);
    }
    for (const std::string &p : parts)
      if (p.empty() || p.size() > 3 || !digits(p, 0, p.size()) || (p.size() > 1 && p[0] == '0') ||
          std::stoi(p) > 255)
        return false;
    return parts.size() == 4;
  }
  if (format == "uuid") { // RFC 4122's 8-4-4-4-12 hex digits
    if (v.size() != 36) return false;
    for (size_t k = 0; k < 36; ++k)
      if (k == 8 || k == 13 || k == 18 || k == 23 ? v[k] != '-' : !std::isxdigit(uint8_t(v[k])))
        return false;
    return true;
  }
  return true; // an annotation
}

/// A number's bounds and multipleOf (the tests' values are exact in binary).
bool inBounds(double x, const ojson &s) {
  if (s.contains("minimum") && x < s["minimum"].get<double>()) return false;
  if (s.contains("maximum") && x > s["maximum"].get<double>()) return false;
  if (s.contains("exclusiveMinimum") && x <= s["exclusiveMinimum"].get<double>()) return false;
  if (s.contains("exclusiveMaximum") && x >= s["exclusiveMaximum"].get<double>()) return false;
  if (s.contains("multipleOf")) {
    const double q = x / s["multipleOf"].get<double>();
    if (std::fabs(q - std::round(q)) > 1e-9) return false;
  }
  return true;
}

bool valid(const ojson &v, const ojson &s, const ojson &root);

/// What a $ref of the tests' schemas points to: "#" or "#/a/b" (names
/// without escapes), walked by hand (root.at(json_pointer) draws clang's
/// deprecation warning from nlohmann's overloads).
const ojson &target(const ojson &root, const std::string &ref) {
  const ojson *at = &root;
  for (size_t from = 2; from <= ref.size() && ref.size() > 1;) {
    const size_t end = std::min(ref.find('/', from), ref.size());
    at = &(*at)[ref.substr(from, end - from)];
    from = end + 1;
  }
  return *at;
}

bool validObject(const ojson &v, const ojson &s, const ojson &root) {
  const ojson props = s.value("properties", ojson::object());
  const ojson patterns = s.value("patternProperties", ojson::object());
  for (const auto &[k, sub] : props.items())
    if (v.contains(k) && !valid(v[k], sub, root)) return false;
  for (const ojson &k : s.value("required", ojson::array()))
    if (!v.contains(k.get<std::string>())) return false;
  if (v.size() < s.value("minProperties", size_t(0))) return false;
  if (s.contains("maxProperties") && v.size() > s["maxProperties"].get<size_t>()) return false;
  for (const auto &[k, value] : v.items()) {
    if (s.contains("propertyNames") && !valid(ojson(k), s["propertyNames"], root)) return false;
    bool matched = props.contains(k);
    for (const auto &[p, sub] : patterns.items()) {
      if (!std::regex_search(k, std::regex(p, std::regex::ECMAScript))) continue;
      matched = true;
      if (!valid(value, sub, root)) return false;
    }
    if (!matched && s.contains("additionalProperties") &&
        !valid(value, s["additionalProperties"], root))
      return false;
  }
  return true;
}

bool valid(const ojson &v, const ojson &s, const ojson &root) {
  if (s.is_boolean()) return s.get<bool>();
  if (s.value("nullable", false) && v.is_null()) return true; // OpenAPI's
  if (s.contains("$ref")) {
    const std::string r = s["$ref"];
    return valid(v, target(root, r), root);
  }
  for (const ojson &sub : s.value("allOf", ojson::array()))
    if (!valid(v, sub, root)) return false;
  if (s.contains("anyOf")) {
    bool any = false;
    for (const ojson &sub : s["anyOf"]) any = any || valid(v, sub, root);
    if (!any) return false;
  }
  if (s.contains("oneOf")) {
    int met = 0;
    for (const ojson &sub : s["oneOf"]) met += valid(v, sub, root);
    if (met != 1) return false;
  }
  if (s.contains("enum")) {
    bool any = false;
    for (const ojson &e : s["enum"]) any = any || sameValue(e, v);
    if (!any) return false;
  }
  if (s.contains("const") && !sameValue(s["const"], v)) return false;
  if (s.contains("type")) {
    const ojson types = s["type"].is_array() ? s["type"] : ojson::array({s["type"]});
    bool any = false;
    for (const ojson &t : types) any = any || hasType(v, t.get<std::string>());
    if (!any) return false;
  }
  if (v.is_object() && !validObject(v, s, root)) return false;
  if (v.is_array()) {
    if (v.size() < s.value("minItems", size_t(0))) return false;
    if (s.value("uniqueItems", false)) // equal as values: 1 and 1.0, "a" and "\u0061"
      for (size_t a = 0; a < v.size(); ++a)
        for (size_t b = a + 1; b < v.size(); ++b)
          if (sameValue(v[a], v[b])) return false;
    if (s.contains("maxItems") && v.size() > s["maxItems"].get<size_t>()) return false;
    const ojson prefix = s.value("prefixItems", ojson::array());
    for (size_t k = 0; k < v.size(); ++k) {
      const ojson &sub = k < prefix.size() ? prefix[k] : s.value("items", ojson(true));
      if (!valid(v[k], sub, root)) return false;
    }
  }
  if (v.is_string()) {
    // minLength as JSON Schema counts, maxLength as JavaScript's validators
    // do: kvplan writes strings that meet both.
    const std::string &text = v.get_ref<const std::string &>();
    if (codePoints(text) < s.value("minLength", size_t(0))) return false;
    if (s.contains("maxLength") && utf16Units(text) > s["maxLength"].get<size_t>()) return false;
    const std::regex pattern(s.value("pattern", std::string()), std::regex::ECMAScript);
    if (!std::regex_search(text, pattern)) return false;
    if (!hasFormat(text, s.value("format", std::string()))) return false;
  }
  if (v.is_number() && !inBounds(v.get<double>(), s)) return false;
  return true;
}

/// Whether `text` parses as one JSON object the schema accepts (exponents
/// cut to one digit: the grammar takes any, nlohmann not past a double).
bool validText(const std::string &raw, const ojson &schema) {
  std::string text;
  bool inString = false, escaped = false;
  for (size_t i = 0; i < raw.size(); ++i) {
    const char c = raw[i];
    text += c;
    if (inString) {
      inString = escaped || c != '"';
      escaped = !escaped && c == '\\';
    } else if (c == '"') {
      inString = true;
    } else if ((c == 'e' || c == 'E') && i > 0 && std::isdigit(uint8_t(raw[i - 1]))) {
      if (i + 1 < raw.size() && (raw[i + 1] == '+' || raw[i + 1] == '-')) text += raw[++i];
      if (i + 1 < raw.size() && std::isdigit(uint8_t(raw[i + 1]))) text += '1';
      while (i + 1 < raw.size() && std::isdigit(uint8_t(raw[i + 1]))) ++i;
    }
  }
  if (!ojson::accept(text) || !kvplan::testing::namesOnce(text)) return false;
  const ojson v = ojson::parse(text);
  return v.is_object() && valid(v, schema, schema);
}

// ---------------------------------------------------------------------------
// Instances, generated from a schema in its order (as the recogniser writes
// properties), independently of the compiler.
// ---------------------------------------------------------------------------

std::string randomString(std::mt19937 &rng, size_t n) {
  static const std::vector<std::string> chars = {"a", "b", "Z", " ", "7", "\"", "\\", "\n",
                                                 "é", "日", "😀", "{", ":", ","};
  std::string s;
  for (size_t i = 0; i < n; ++i) s += chars[rng() % chars.size()];
  return s;
}

/// How many enum or const values generate() has written that are objects or
/// arrays: kvplan writes those compactly, so an indented document holding one
/// is not what it writes.
int structuredLiterals = 0;

ojson literal(const ojson &v) {
  if (v.is_structured()) ++structuredLiterals;
  return v;
}

ojson generate(const ojson &s, const ojson &root, std::mt19937 &rng, int depth) {
  if (s.is_boolean()) return rng() % 2 ? ojson(int(rng() % 100)) : ojson("any");
  if (s.value("nullable", false) && rng() % 3 == 0) return nullptr;
  if (s.contains("$ref")) {
    const std::string r = s["$ref"];
    return generate(target(root, r), root, rng,
                    depth + 1);
  }
  if (s.contains("allOf")) return generate(s["allOf"][0], root, rng, depth);
  if (s.contains("anyOf") || s.contains("oneOf")) {
    const ojson &alts = s.contains("anyOf") ? s["anyOf"] : s["oneOf"];
    return generate(alts[depth > 3 ? 0 : rng() % alts.size()], root, rng, depth + 1);
  }
  if (s.contains("enum")) return literal(s["enum"][rng() % s["enum"].size()]);
  if (s.contains("const")) return literal(s["const"]);
  std::string type = s.contains("type") && s["type"].is_string() ? s["type"] : "object";
  if (s.contains("type") && s["type"].is_array()) type = s["type"][rng() % s["type"].size()];
  if (type == "object") {
    ojson o = ojson::object();
    const ojson req = s.value("required", ojson::array());
    auto isRequired = [&](const std::string &k) {
      return std::find(req.begin(), req.end(), ojson(k)) != req.end();
    };
    if (!s.contains("properties") && s.contains("x-names")) { // a map of the names given
      const ojson &names = s["x-names"]; // each valid, and matched by one pattern at most
      const size_t lo = s.value("minProperties", size_t(0));
      const size_t hi = std::min(s.value("maxProperties", names.size()), names.size());
      for (size_t n = lo + rng() % (hi - lo + 1); o.size() < n;) {
        const std::string k = names[rng() % names.size()];
        ojson sub = s.value("additionalProperties", ojson(true));
        const ojson patterns = s.value("patternProperties", ojson::object());
        for (const auto &[p, ps] : patterns.items())
          if (std::regex_search(k, std::regex(p, std::regex::ECMAScript))) sub = ps;
        o[k] = generate(sub, root, rng, depth + 1);
      }
      return o;
    }
    if (!s.contains("properties")) { // a map
      const ojson add = s.value("additionalProperties", ojson(true));
      const size_t n = add.is_boolean() && !add.get<bool>() ? 0 : rng() % (depth > 2 ? 1 : 4);
      for (size_t i = 0; i < n; ++i)
        o[randomString(rng, rng() % 5)] = generate(add, root, rng, depth + 1);
      return o;
    }
    for (const auto &[k, sub] : s["properties"].items())
      if (isRequired(k) || (depth < 3 && rng() % 2)) o[k] = generate(sub, root, rng, depth + 1);
    return o;
  }
  if (type == "array") {
    const ojson prefix = s.value("prefixItems", ojson::array());
    const size_t lo = s.value("minItems", size_t(0));
    size_t hi = std::min(s.value("maxItems", size_t(lo + 4)), lo + (depth > 2 ? 0 : 4));
    if (s.value("items", ojson(true)) == ojson(false)) hi = std::min(hi, prefix.size());
    ojson a = ojson::array();
    for (size_t n = lo + rng() % (hi - lo + 1), i = 0, tries = 0; i < n && tries < 100; ++tries) {
      const ojson item = generate(i < prefix.size() ? prefix[i] : s.value("items", ojson(true)),
                                  root, rng, depth + 1);
      if (s.value("uniqueItems", false) &&
          std::any_of(a.begin(), a.end(), [&](const ojson &b) { return sameValue(item, b); }))
        continue; // another, all different (as many as the items' values allow)
      a.push_back(item);
      ++i;
    }
    return a;
  }
  if (type == "string" && s.contains("examples"))
    return s["examples"][rng() % s["examples"].size()];
  if ((type == "integer" || type == "number") && s.contains("x-range")) {
    // Bounded: small values (no exponent when written), until one is in bounds.
    for (;;) {
      const ojson v = type == "integer" ? ojson(int64_t(rng() % 400) - 200)
                                        : ojson(std::ldexp(double(int(rng() % 801) - 400), -3));
      if (inBounds(v.get<double>(), s)) return v;
    }
  }
  if (type == "string") {
    const size_t lo = s.value("minLength", size_t(0));
    const size_t hi = std::min(s.value("maxLength", size_t(lo + 8)), lo + 8);
    for (;;) { // within maxLength's UTF-16 units too
      const std::string text = randomString(rng, lo + rng() % (hi - lo + 1));
      if (utf16Units(text) <= s.value("maxLength", size_t(SIZE_MAX))) return text;
    }
  }
  if (type == "integer") return int64_t(rng() % 2000) - 1000;
  if (type == "number") return std::ldexp(double(int(rng() % 20001) - 10000), -int(rng() % 20));
  if (type == "boolean") return bool(rng() % 2);
  return nullptr;
}

// ---------------------------------------------------------------------------
// The recogniser
// ---------------------------------------------------------------------------

std::shared_ptr<const JsonSchema> compiled(const ojson &schema) {
  return JsonSchema::compile(schema, "schema");
}

using kvplan::testing::Read;
Read readWith(const std::shared_ptr<const JsonSchema> &schema, const std::string &text) {
  return kvplan::testing::readBytes(SchemaState(schema), text);
}

/// The InputError compiling `schema` throws ("" when it compiles).
std::string refusal(const std::string &schema) {
  try {
    compiled(ojson::parse(schema));
  } catch (const InputError &e) {
    return e.what();
  }
  return "";
}

const char *kPerson = R"({
  "type": "object",
  "properties": {
    "name": {"type": "string", "maxLength": 6, "description": "a given name"},
    "age": {"type": "integer"},
    "email": {"type": ["string", "null"], "minLength": 3},
    "tags": {"type": "array", "items": {"enum": ["a", "b c", 7, null, {"k": [1]}]},
             "maxItems": 2},
    "score": {"type": "number"},
    "ok": {"type": "boolean"}
  },
  "required": ["name", "age", "ok"],
  "additionalProperties": false
})";

/// Patterns, formats and bounded numbers ("examples" and "x-range" tell the
/// tests' generator what to write).
const char *kFormats = R"({
  "type": "object",
  "properties": {
    "code": {"type": "string", "pattern": "^[A-Z]{2}-\\d{3}$", "examples": ["AB-123", "ZZ-000"]},
    "tag": {"type": "string", "pattern": "x|yz", "maxLength": 5, "examples": ["x", "ayz", "xxx"]},
    "age": {"type": "integer", "minimum": 0, "maximum": 120, "x-range": 1},
    "ratio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "x-range": 1},
    "step": {"type": "number", "multipleOf": 0.25, "minimum": -2, "exclusiveMaximum": 3,
             "x-range": 1},
    "day": {"type": "string", "format": "date", "examples": ["2026-12-05", "2024-02-29"]},
    "ip": {"type": ["string", "null"], "format": "ipv4", "examples": ["10.0.0.1", "255.1.0.9"]},
    "id": {"type": "string", "format": "uuid",
           "examples": ["123f4567-e89b-12d3-a456-426614174000"]},
    "note": {"type": "string", "pattern": "^[^n]*$", "examples": ["a\nb", "\"x\\"]}
  },
  "required": ["code", "age", "ratio"]
})";

/// Tuples (prefixItems): as pydantic writes tuple[float, float], a prefix
/// then items, and one with items false.
const char *kTuples = R"({
  "type": "object",
  "properties": {
    "at": {"type": "array", "prefixItems": [{"type": "number"}, {"type": "number"}],
           "minItems": 2, "maxItems": 2},
    "row": {"type": "array", "prefixItems": [{"type": "string", "maxLength": 3},
                                             {"enum": [1, 2]}], "items": {"type": "boolean"}},
    "pair": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "null"}],
             "items": false}
  },
  "required": ["at", "row"]
})";

/// Maps (objects without properties): names held to propertyNames (an
/// enum behind a $ref, as pydantic writes dict[Color, int]; lengths),
/// patternProperties (as pydantic writes dict[constr(pattern=...), int]),
/// additionalProperties for the names no pattern matches, and their counts.
/// "x-names" gives the tests' generator names to write.
const char *kMaps = R"({
  "type": "object",
  "properties": {
    "scores": {"type": "object", "patternProperties": {"^[a-z]+$": {"type": "integer"}},
               "minProperties": 1, "maxProperties": 3, "x-names": ["ab", "x", "zz", "q"]},
    "counts": {"type": "object", "additionalProperties": {"type": "integer"},
               "propertyNames": {"$ref": "#/$defs/Color"}, "minProperties": 2,
               "x-names": ["red", "green", "blue"]},
    "mixed": {"patternProperties": {"^n_": {"type": "number"},
                                    "^s_": {"type": "string", "maxLength": 3}},
              "additionalProperties": {"type": "boolean"},
              "x-names": ["n_a", "s_b", "flag", "n_", "s_\"x"]},
    "short": {"additionalProperties": {"type": "null"},
              "propertyNames": {"minLength": 1, "maxLength": 2}, "maxProperties": 4,
              "x-names": ["a", "bc", "日", "😀", "\\"]}
  },
  "required": ["scores", "counts"],
  "$defs": {"Color": {"type": "string", "enum": ["red", "green", "blue"], "title": "Color"}}
})";

/// Arrays with uniqueItems (pydantic's set[...]): of strings (with a
/// pattern of few values), integers, numbers, an enum behind a $ref,
/// booleans, optional strings (set[Optional[str]]: an anyOf), and enum
/// values equal by value (1 and 1.0: the same item).
const char *kSets = R"({
  "type": "object",
  "properties": {
    "colors": {"type": "array", "items": {"$ref": "#/$defs/Color"}, "uniqueItems": true,
               "minItems": 1},
    "tags": {"type": "array", "items": {"type": "string", "maxLength": 4}, "uniqueItems": true,
             "maxItems": 4},
    "ids": {"type": "array", "items": {"type": "integer"}, "uniqueItems": true},
    "flags": {"type": "array", "items": {"type": "boolean"}, "uniqueItems": true},
    "codes": {"type": "array", "uniqueItems": true,
              "items": {"type": "string", "pattern": "^[ab]{1,2}$",
                        "examples": ["a", "b", "ab", "ba", "aa", "bb"]}},
    "nums": {"type": "array", "items": {"enum": [1, 2, 1.0, "1"]}, "uniqueItems": true},
    "reals": {"type": "array", "items": {"type": "number"}, "uniqueItems": true},
    "opt": {"type": "array", "items": {"anyOf": [{"type": "string", "maxLength": 2},
                                                 {"type": "null"}]}, "uniqueItems": true},
    "free": {"type": "array", "items": {"type": "string"}, "uniqueItems": false}
  },
  "required": ["colors"],
  "$defs": {"Color": {"enum": ["red", "green", "blue"]}}
})";

/// Schemas the generated tests run over: every keyword, recursion, maps,
/// unions of objects, optional properties that share a prefix.
std::vector<std::string> schemas() {
  return {
      kPerson,
      R"({"type": "object"})",
      R"({"type": "object", "additionalProperties": {"type": "integer"}})",
      R"({"$defs": {"node": {"type": "object", "properties": {
            "v": {"type": "integer"},
            "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
            "required": ["v"]}},
          "$ref": "#/$defs/node"})",
      R"({"type": "object", "properties": {
            "a": {"type": "string"}, "ab": {"type": "boolean"}, "abc": {"const": "x"},
            "b": {"anyOf": [{"type": "string", "maxLength": 2}, {"type": "string"},
                            {"type": "array", "items": {"type": "number"}, "minItems": 1}]},
            "c": {"allOf": [{"type": "object", "properties": {"d": {"type": "null"}}}]},
            "e": {"type": "array", "minItems": 2, "maxItems": 3}},
          "required": ["b"]})",
      R"({"anyOf": [
            {"type": "object", "properties": {"kind": {"const": "circle"},
                                              "r": {"type": "number"}},
             "required": ["kind", "r"]},
            {"type": "object", "properties": {"kind": {"const": "square"},
                                              "side": {"type": "integer"}},
             "required": ["kind", "side"]}]})",
      // As OpenAI's SDK helpers write a model with nullable fields.
      R"({"type": "object", "properties": {
            "date": {"type": "string", "nullable": true},
            "step": {"$ref": "#/definitions/step", "nullable": true},
            "kind": {"type": "string", "enum": ["meeting", "call"], "nullable": false}},
          "required": ["date", "step", "kind"], "additionalProperties": false,
          "definitions": {"step": {"type": "object", "properties": {"n": {"type": "integer"}},
                                   "required": ["n"], "additionalProperties": false}},
          "$schema": "http://json-schema.org/draft-07/schema#"})",
      kFormats,
      // A discriminated union as pydantic writes one (oneOf, a discriminator
      // and a const tag in each), and alternatives of different types.
      R"({"type": "object", "properties": {
            "pet": {"oneOf": [{"$ref": "#/$defs/Cat"}, {"$ref": "#/$defs/Dog"}],
                    "discriminator": {"propertyName": "kind",
                                      "mapping": {"cat": "#/$defs/Cat", "dog": "#/$defs/Dog"}}},
            "id": {"oneOf": [{"type": "integer"}, {"type": "string", "maxLength": 4},
                             {"type": "null"}]}},
          "required": ["pet", "id"],
          "$defs": {
            "Cat": {"type": "object", "properties": {"kind": {"const": "cat", "type": "string"},
                                                     "lives": {"type": "integer"}},
                    "required": ["kind", "lives"]},
            "Dog": {"type": "object", "properties": {"kind": {"const": "dog", "type": "string"},
                                                     "good": {"type": "boolean"}},
                    "required": ["kind"]}}})",
      kTuples,
      kMaps,
      kSets,
      // Names of a finite set, one a prefix of another: once some are
      // written, a name begun may have only written ones left to end as.
      R"({"type": "object", "propertyNames": {"pattern": "^(a|ab|abc|b)$"},
          "additionalProperties": {"type": "null"}, "x-names": ["a", "ab", "abc", "b"]})",
  };
}

} // namespace

// A schema compiled lately is shared, not compiled again: by its text and
// where it was given; the last kCachedSchemas are kept; a refusal is not.
TEST(JsonSchema, CompiledSchemasAreKeptAndShared) {
  const ojson person = ojson::parse(kPerson), formats = ojson::parse(kFormats);
  const uint64_t hits = JsonSchema::cacheHits();
  const auto a = JsonSchema::compile(person, "cache-test");
  const auto b = JsonSchema::compile(ojson::parse(kPerson), "cache-test");
  EXPECT_EQ(a.get(), b.get());
  EXPECT_EQ(JsonSchema::cacheHits(), hits + 1);
  EXPECT_NE(JsonSchema::compile(person, "cache-test-2").get(), a.get()); // other paths
  const auto f = JsonSchema::compile(formats, "cache-test");
  EXPECT_NE(f.get(), a.get());
  EXPECT_GT(f->memoryBytes(), a->memoryBytes()); // its automata
  EXPECT_EQ(JsonSchema::compile(formats, "cache-test").get(), f.get());
  // A refused schema is refused again, each time.
  const ojson bad = ojson::parse(R"({"type": "object", "not": {}})");
  for (int k = 0; k < 2; ++k) EXPECT_THROW(JsonSchema::compile(bad, "cache-test"), InputError);
  // kCachedSchemas others later, the first is compiled anew (and reads alike).
  for (size_t k = 0; k < JsonSchema::kCachedSchemas; ++k)
    JsonSchema::compile(ojson{{"type", "object"}, {"x-k", int(k)}}, "cache-fill");
  const auto again = JsonSchema::compile(person, "cache-test");
  EXPECT_NE(again.get(), a.get());
  const std::string doc = R"({"name":"Ann","age":3,"ok":true})";
  EXPECT_TRUE(readWith(again, doc).complete);
  EXPECT_TRUE(readWith(a, doc).complete); // the evicted copy still serves who holds it
}

TEST(JsonSchema, RefusesWhatItCannotHoldGenerationToByName) {
  // Each refusal names the keyword by its path and says what to do.
  struct Case {
    const char *schema, *says;
  };
  const Case cases[] = {
      {R"({"type": "object", "properties": {"n": {"not": {"type": "string"}}}})",
       "schema.properties.n.not: kvplan cannot hold generation to \"not\""},
      {R"j({"type": "object", "properties": {"n": {"type": "string", "pattern": "a(?=b)"}}})j",
       "schema.properties.n.pattern: a lookaround (at offset 1) is not supported"},
      {R"({"type": "object", "properties": {"n": {"type": "string", "pattern": 1}}})",
       "schema.properties.n.pattern: must be a string"},
      {R"({"type": "object", "properties": {"n": {"type": "string", "pattern": "^a{4}$",
           "maxLength": 3}}})",
       "schema.properties.n.pattern: no string matches it within minLength and maxLength"},
      {R"({"type": "object", "properties": {"n": {"type": "string", "pattern": "^a$",
           "format": "date"}}})",
       "schema.properties.n.pattern: no string matches it and the format"},
      {R"({"type": "object", "properties": {"n": {"type": "integer", "minimum": "0"}}})",
       "schema.properties.n.minimum: must be a number"},
      {R"({"type": "object", "properties": {"n": {"type": "integer", "minimum": 3,
           "exclusiveMaximum": 4, "multipleOf": 2}}})",
       "schema.properties.n: no integer meets its minimum, maximum and multipleOf together"},
      {R"({"type": "object", "properties": {"n": {"multipleOf": -1}}})",
       "schema.properties.n.multipleOf: must be greater than 0"},
      {R"({"type": "object", "properties": {"n": {"oneOf": [{"type": "string"},
           {"type": ["null", "string"], "maxLength": 3}]}}})",
       "schema.properties.n.oneOf: alternatives 0 and 1 may both match a value"},
      {R"({"type": "object", "properties": {"n": {"oneOf": [{"enum": [1, 2]}, {"const": 1.0}]}}})",
       "schema.properties.n.oneOf: alternatives 0 and 1 may both match"},
      {R"({"type": "object", "properties": {"n": {"oneOf": [
           {"properties": {"k": {"const": "a"}}}, {"properties": {"k": {"const": "b"}}}]}}})",
       "schema.properties.n.oneOf: alternatives 0 and 1 may both match"}, // k not required
      {R"({"type": "object", "properties": {"n": {"$ref": "#/$defs/missing"}}})",
       "schema.properties.n.$ref: \"#/$defs/missing\" names nothing in the schema"},
      {R"({"type": "object", "properties": {"n": {"$ref": "other.json#/x"}}})",
       "schema.properties.n.$ref: only references into this schema"},
      {R"({"type": "string"})", "schema: the top level must be an object"},
      {R"({"type": "object", "properties": {"n": false}, "required": ["n"]})",
       "schema.properties.n: the schema false accepts no value"},
      {R"({"type": "object", "properties": {"n": {"enum": []}}})",
       "schema.properties.n.enum: must be a non-empty array"},
      {R"({"type": "object", "properties": {"n": {"type": "string", "enum": [1, 2]}}})",
       "schema.properties.n.enum: no value of enum has the schema's type"},
      {R"({"type": "object", "properties": {"n": {"type": "string", "minLength": 3,
           "maxLength": 2}}})",
       "schema.properties.n: minLength is more than maxLength"},
      {R"({"type": "object", "properties": {"n": {"type": "array", "minItems": -1}}})",
       "schema.properties.n.minItems: must be a non-negative integer"},
      {R"({"type": "object", "properties": {"n": {"type": "array", "items": [{}]}}})",
       "schema.properties.n.items: items as an array (draft 2019's tuples) is not supported; "
       "write the tuple's schemas as prefixItems"},
      {R"({"type": "object", "properties": {"n": {"prefixItems": {}}}})",
       "schema.properties.n.prefixItems: must be a non-empty array"},
      {R"({"type": "object", "properties": {"n": {"prefixItems": [{}], "items": false,
                                                 "minItems": 2}}})",
       "schema.properties.n: minItems is more than the items allowed"},
      {R"({"type": "object", "required": ["x"], "additionalProperties": false})",
       "schema.required: names \"x\", which properties lack"},
      {R"({"type": "object", "properties": {"me": {"$ref": "#"}}, "required": ["me"]})",
       "schema: no JSON value meets this schema"},
      {R"({"type": "object", "properties": {"n": {"type": "text"}}})",
       "schema.properties.n.type: \"text\" is not a type"},
      {R"({"type": "object", "properties": {"n": {"$ref": "#", "type": "object"}}})",
       "schema.properties.n.$ref: $ref is supported only with no other keyword"},
      {R"({"type": "object", "properties": {"n": {"allOf": [{}, {}]}}})",
       "schema.properties.n.allOf: allOf is supported with one schema only"},
      {R"({"type": "object", "properties": {"n": {"maxLenght": 3}}})",
       "schema.properties.n.maxLenght: kvplan cannot hold generation to \"maxLenght\""},
      {R"([1])", "schema: a schema must be an object or a boolean"},
      {R"({"type": "object", "properties": {"n": {"type": "string", "nullable": 1}}})",
       "schema.properties.n.nullable: must be true or false"},
      {R"({"type": "object", "nullable": true})",
       "schema: the top level must be an object"},
      {R"({"type": "object", "properties": {"m": {"additionalProperties": {"type": "integer"},
           "propertyNames": {"enum": ["a", "b"]}, "minProperties": 3}}})",
       "schema.properties.m.minProperties: 3 properties, and the names that propertyNames, "
       "patternProperties and additionalProperties allow are 2: no object meets them"},
      {R"({"type": "object", "patternProperties": {"^[ab]$": {}}, "minProperties": 3})",
       "schema.minProperties: 3 properties, and the names that propertyNames, "
       "patternProperties and additionalProperties allow are 2"},
      {R"({"type": "object", "properties": {"a": {"type": "string"}}, "minProperties": 1})",
       "schema.minProperties: 1, and 0 of its properties are required"},
      {R"({"type": "object", "properties": {"a": {}, "b": {}}, "maxProperties": 1})",
       "schema.maxProperties: 1, and it lists 2 properties"},
      {R"({"type": "object", "minProperties": 3, "maxProperties": 2})",
       "schema: minProperties is more than maxProperties"},
      {R"({"type": "object", "properties": {"x-a": {}}, "patternProperties": {"^x-": {}}})",
       "schema.properties.x-a: \"x-a\" also matches patternProperties \"^x-\""},
      {R"({"type": "object", "required": ["ab"], "patternProperties": {"^a": {}, "b$": {}}})",
       "schema.required: \"ab\" matches patternProperties \"^a\" and \"b$\""},
      {R"({"type": "object", "properties": {"a": {}}, "required": ["a"],
           "propertyNames": {"pattern": "^b"}})",
       "schema.required: names \"a\", which propertyNames refuses"},
      {R"({"type": "object", "propertyNames": {"type": "string", "not": {}}})",
       "schema.propertyNames.not: kvplan holds property names to enum, const, pattern"},
      {R"({"type": "object", "propertyNames": {"type": "integer"}})",
       "schema.propertyNames.type: property names are strings"},
      {R"({"type": "object", "propertyNames": {"$ref": "#/$defs/none"}})",
       "schema.propertyNames.$ref: \"#/$defs/none\" names nothing in the schema"},
      {R"({"type": "object", "patternProperties": [1]})",
       "schema.patternProperties: must be an object of schemas"},
      {R"j({"type": "object", "patternProperties": {"a(?=b)": {}}})j",
       "schema.patternProperties.a(?=b): a lookaround (at offset 1) is not supported"},
      {R"({"type": "object", "additionalProperties": {"$ref": "#/$defs/never"},
           "minProperties": 1, "$defs": {"never": {"type": "object",
           "properties": {"x": {"$ref": "#/$defs/never"}}, "required": ["x"]}}})",
       "schema: no JSON value meets this schema"},
      {R"({"type": "object", "properties": {"s": {"type": "array", "uniqueItems": true,
           "items": {"type": "object"}}}})",
       "schema.properties.s.uniqueItems: kvplan holds uniqueItems for items of one of: strings, "
       "integers or numbers without bounds, booleans, null, an anyOf of those of different "
       "kinds, enum or const values"},
      {R"({"type": "object", "properties": {"s": {"uniqueItems": true}}})",
       "schema.properties.s.uniqueItems: kvplan holds uniqueItems for items of one of"},
      {R"({"type": "object", "properties": {"s": {"uniqueItems": "yes"}}})",
       "schema.properties.s.uniqueItems: must be true or false"},
      {R"({"type": "object", "properties": {"s": {"uniqueItems": true, "prefixItems": [{}],
           "items": {"type": "string"}}}})",
       "schema.properties.s.uniqueItems: uniqueItems beside prefixItems is not supported"},
      {R"({"type": "object", "properties": {"s": {"uniqueItems": true,
           "items": {"type": "integer", "minimum": 0}}}})",
       "schema.properties.s.uniqueItems: items are numbers with bounds"},
      {R"({"type": "object", "properties": {"s": {"uniqueItems": true,
           "items": {"anyOf": [{"type": "string"}, {"type": "string", "maxLength": 2}]}}}})",
       "schema.properties.s.uniqueItems: items are an anyOf whose alternatives may share a "
       "value"},
      {R"({"type": "object", "properties": {"s": {"uniqueItems": true,
           "items": {"type": ["integer", "number"]}}}})",
       "schema.properties.s.uniqueItems: items are an anyOf whose alternatives may share a "
       "value"},
      {R"({"type": "object", "properties": {"s": {"uniqueItems": true,
           "items": {"anyOf": [{"enum": ["a"]}, {"type": "string"}]}}}})",
       "schema.properties.s.uniqueItems: items are an anyOf whose alternatives may share a "
       "value"},
      {R"({"type": "object", "properties": {"s": {"uniqueItems": true, "minItems": 3,
           "items": {"type": "boolean"}}}})",
       "schema.properties.s.minItems: 3 items, all different (uniqueItems), and the items' "
       "schema has 2 values"},
      {R"({"type": "object", "properties": {"s": {"uniqueItems": true, "minItems": 3,
           "items": {"enum": [1, 1.0, "a"]}}}})",
       "schema.properties.s.minItems: 3 items, all different (uniqueItems), and the items' "
       "schema has 2 values"},
  };
  for (const Case &c : cases) {
    const std::string got = refusal(c.schema);
    EXPECT_NE(got.find(c.says), std::string::npos) << c.schema << "\n -> " << got;
  }
  // Annotations, vendor keywords, and additionalProperties beside
  // properties compile (the listed properties are written).
  EXPECT_EQ(refusal(R"({"title": "t", "x-tag": 1, "type": "object", "format": "f",
                        "properties": {"a": {"type": "string", "format": "date-time"}},
                        "additionalProperties": true})"), "");
  // Recursion that can end compiles.
  EXPECT_EQ(refusal(R"({"type": "object", "properties": {"me": {"$ref": "#"}}})"), "");
}

namespace {

/// A text the recogniser reads whole (and the validator accepts), or
/// refuses at the first byte of `at` (and the validator refuses too, but
/// where `writtenOtherwise`: valid, refused only because kvplan writes it
/// otherwise: properties in the schema's order, a bounded number without
/// an exponent, a patterned string without \u escapes).
struct ReadCase {
  std::string text, at;
  bool writtenOtherwise = false;
};

void expectReads(const char *schemaText, const std::vector<ReadCase> &cases) {
  const ojson schema = ojson::parse(schemaText);
  const auto c = compiled(schema);
  for (const ReadCase &rc : cases) {
    const Read r = readWith(c, rc.text);
    if (rc.at.empty()) {
      EXPECT_TRUE(r.complete && r.taken == rc.text.size()) << rc.text << ": " << r.taken;
      EXPECT_TRUE(validText(rc.text, schema)) << rc.text;
      continue;
    }
    const size_t at = rc.text.find(rc.at);
    ASSERT_NE(at, std::string::npos) << rc.at;
    EXPECT_EQ(r.taken, at) << rc.text << " refused at: " << rc.text.substr(r.taken);
    EXPECT_EQ(validText(rc.text, schema), rc.writtenOtherwise) << rc.text;
  }
}

} // namespace

TEST(JsonSchema, ReadsWhatTheSchemaAcceptsAndStopsAtTheFirstByteItCannot) {
  expectReads(kPerson, {
      {R"({"name":"Ann","age":3,"ok":true})", ""},
      {R"( { "name" : "Ann" , "age" : -30 , "email" : null , "tags" : [ "b c" , {"k":[1]} ] ,
           "score" : 1.5e-3 , "ok" : false })", ""},
      {R"({"name":"Ann","age":3,"email":"a@b","ok":true})", ""},
      {R"({"name":"日本語ですよ","age":0,"ok":true})", ""},        // six characters
      {R"({"name":"日本語ですよね","age":0,"ok":true})", "ね"},      // a seventh
      {R"({"name":"\ud83d\ude00abcd","age":0,"ok":true})", ""},   // a pair is two units
      {R"({"name":"\ud83d\ude00abcde","age":0,"ok":true})", "e\",\"age"},
      {R"({"name":"😀😀😀","age":0,"ok":true})", ""},            // so is a 4-byte character
      {R"({"name":"😀😀😀a","age":0,"ok":true})", "a\""},
      {R"({"name":"Ann","age":3,"email":"😀","ok":true})", "\",\"ok"}, // minLength 3: 1 point
      {R"({"name":"\ud83d","age":0,"ok":true})", "\",\"age"},    // unpaired
      {R"({"age":3,"name":"Ann","ok":true})", "age", true},         // name comes first
      {R"({"name":"Ann","ok":true})", "ok"},                        // age is required
      {R"({"name":"Ann","age":3.5,"ok":true})", ".5"},              // an integer
      {R"({"name":"Ann","age":3,"ok":true,"x":1})", ",\"x"},        // nothing else
      {R"({"name":"Ann","age":3,"email":"ab","ok":true})", "\",\"ok"}, // minLength 3
      {R"({"name":"Ann","age":3,"tags":["c"],"ok":true})", "c\"]"},  // not in the enum
      {R"({"name":"Ann","age":3,"tags":[7,7,7],"ok":true})", ",7]"}, // maxItems 2
      {R"({"name":"Ann","age":3,"tags":[70],"ok":true})", "0]"},     // 7 is, 70 is not
      {R"({"name":"Ann","age":3,"ok":true} x)", " x"},              // nothing after
      {R"({"name":"Ann","age":03,"ok":true})", "3,\"ok"},
  });
  // A map's values, and whitespace held as JSON mode holds it.
  const auto map = compiled(ojson::parse(R"({"additionalProperties": {"type": "integer"}})"));
  EXPECT_TRUE(readWith(map, R"({"a":1,"":-2,"é\"":30})").complete);
  EXPECT_EQ(readWith(map, R"({"a":1,"b":"2"})").taken, 11u);
  EXPECT_EQ(readWith(map, "{\n\n\"a\":1}").taken, 2u);
  EXPECT_EQ(readWith(map, "{" + std::string(17, ' ')).taken, 17u);
}

TEST(JsonSchema, PatternsFormatsAndBoundsAreHeldByteByByte) {
  // The members of one object each (its braces added).
  std::vector<ReadCase> cases = {
      {R"("code":"AB-123","age":0,"ratio":1)", ""},
      {R"("code":"AB-123","tag":"\"x\\","age":120,"ratio":0.0001,"step":-2)", ""},
      {R"("code":"AB-123","age":7,"ratio":0.5,"step":2.75,"day":"2024-02-29","ip":null)", ""},
      {R"("code":"AB-123","age":7,"ratio":0.5,"ip":"192.168.0.1","id":)"
       R"("0123ABCD-abcd-0000-ffff-0123456789ab")", ""},
      {R"("code":"ab-123","age":0,"ratio":1)", "ab-"},
      {R"("code":"AB-1234","age":0,"ratio":1)", "4\""},
      {R"("code":"AB-123","tag":"abcd","age":0,"ratio":1)", "\",\"age"}, // no x or yz in 5
      {R"("code":"AB-123","tag":"\u0078","age":0,"ratio":1)", "u0078", true},
      {R"("code":"AB-123","age":121,"ratio":1)", "1,\"ratio"},
      {R"("code":"AB-123","age":-1,"ratio":1)", "1,\"ratio"}, // -0 is 0
      {R"("code":"AB-123","age":1.0,"ratio":1)", ".0", true},
      {R"("code":"AB-123","age":1,"ratio":0,"step":1)", ",\"step"},
      {R"("code":"AB-123","age":1,"ratio":1.0001)", "1}"},
      {R"("code":"AB-123","age":1,"ratio":1e-1)", "e-1", true},
      {R"("code":"AB-123","age":1,"ratio":1,"step":0.3)", "3}"},
      {R"("code":"AB-123","age":1,"ratio":1,"step":3)", "3}"},
      {R"("code":"AB-123","age":1,"ratio":1,"day":"2023-02-29")", "9\"}"},
      {R"("code":"AB-123","age":1,"ratio":1,"day":"2026-04-31")", "1\"}"},
      {R"("code":"AB-123","age":1,"ratio":1,"ip":"256.0.0.1")", "6."},
      {R"("code":"AB-123","age":1,"ratio":1,"ip":"01.0.0.1")", "1.0"},
  };
  for (ReadCase &c : cases) c.text = "{" + c.text + "}";
  expectReads(kFormats, cases);
}

TEST(JsonSchema, FormatsAreHeldToTheirDefinitions) {
  // Each format OpenAI's structured outputs name, on values written here
  // from the RFCs (3339 dates and times, years from 1 and no leap second,
  // as Python's datetime and zod take them; ISO 8601 durations, 5321 email
  // addresses' dot-atoms at a domain with a top-level name of letters,
  // 1123 host names, 791 and 4291 addresses, 4122).
  struct Case {
    const char *format;
    std::vector<std::string> yes, no;
  };
  const Case cases[] = {
      {"date", {"2026-12-05", "2000-02-29", "1900-02-28", "0001-01-31", "0400-02-29"},
       {"1900-02-29", "2026-13-01", "2026-00-10", "2026-11-31", "26-12-05", "2026-12-5",
        "0000-01-01", "0000-02-29"}},
      {"time", {"23:59:59Z", "00:00:00.123+05:30", "12:30:00-00:00"},
       {"23:59:60Z", "24:00:00Z", "12:30:00", "12:60:00Z", "12:30:00+5:30", "12:30Z", "12:30:00z"}},
      {"date-time", {"2026-12-05T10:30:00Z", "2024-02-29T00:00:00.5-08:00"},
       {"2026-12-05 10:30:00Z", "2026-12-05T10:30:00", "2023-02-29T00:00:00Z",
        "2026-12-05t10:30:00Z"}},
      {"duration", {"P1D", "PT1H30M", "P1Y2M3DT4H5M6S", "P2W", "PT0S"},
       {"P", "PT", "P1H", "1D", "P1DT", "P1W2D"}},
      {"email", {"ann.lee@example.com", "a+b@x.io", "x_y@a-b.c.io"},
       {"ann@", "@x.io", "a..b@x.io", "a@-x.io", "a b@x.io", "a@x_y.io", "a@x", "a@x.i",
        ".a@x.io", "a@x.io1"}},
      {"hostname", {"example.com", "a", "x-1.y2"}, {"-a.com", "a-.com", "a..b", "", "a_b"}},
      {"ipv4", {"0.0.0.0", "255.255.255.255", "10.1.2.3"},
       {"256.1.1.1", "1.2.3", "01.2.3.4", "1.2.3.4.5", "a.b.c.d"}},
      {"ipv6", {"::", "::1", "2001:db8::ff00:42:8329", "fe80::1:2:3:4", "1:2:3:4:5:6:7:8",
                "::ffff:192.0.2.128", "1::"},
       {"1:2:3:4:5:6:7:8:9", "1::2::3", "12345::", ":1", "1:2:3:4:5:6:7", "g::1"}},
      {"uuid", {"123f4567-e89b-12d3-a456-426614174000", "ABCDEF01-2345-6789-abcd-ef0123456789"},
       {"123f4567e89b12d3a456426614174000", "123f4567-e89b-12d3-a456-42661417400g"}},
  };
  for (const Case &c : cases) {
    ojson schema = {{"properties", {{"v", {{"type", "string"}, {"format", c.format}}}}}};
    const auto compiledSchema = compiled(schema);
    for (const std::string &v : c.yes) {
      const std::string text = "{\"v\":\"" + v + "\"}";
      const Read r = readWith(compiledSchema, text);
      EXPECT_TRUE(r.complete && r.taken == text.size()) << c.format << " " << v;
    }
    for (const std::string &v : c.no)
      EXPECT_FALSE(readWith(compiledSchema, "{\"v\":\"" + v + "\"}").complete)
          << c.format << " " << v;
  }
  // Another format is an annotation.
  EXPECT_TRUE(readWith(compiled(ojson::parse(R"({"properties": {"v": {"type": "string",
                           "format": "iri"}}})")), R"({"v":"any text"})").complete);
}

TEST(JsonSchema, TuplesHoldEachItemToItsSchema) {
  expectReads(kTuples, {
      {R"({"at":[1,2.5],"row":["abc",2,true,false]})", ""},
      {R"({"at":[1,2],"row":[],"pair":[3,null]})", ""},
      {R"({"at":[1,2],"row":["a"],"pair":[3]})", ""},
      {R"({"at":[1],"row":[]})", "],\"row"},            // two numbers
      {R"({"at":[1,2,3],"row":[]})", ",3]"},             // no more than two
      {R"({"at":["1",2],"row":[]})", "\"1\""},             // a number first
      {R"({"at":[1,2],"row":[1]})", "1]"},               // a string first
      {R"({"at":[1,2],"row":["abcd"]})", "d\"]"},        // of three characters at most
      {R"({"at":[1,2],"row":["a",3]})", "3]"},           // then 1 or 2
      {R"({"at":[1,2],"row":["a",1,7]})", "7]"},         // then booleans
      {R"({"at":[1,2],"row":[],"pair":[3,4]})", "4]"},   // null second
      {R"({"at":[1,2],"row":[],"pair":[3,null,5]})", ",5]"}, // items false: nothing after
  });
  // A prefix item no value meets (a recursion that never ends) caps its
  // array before it; where minItems needs it, the array is left out.
  const char *never = R"({
    "type": "object",
    "properties": {
      "one": {"type": "array", "prefixItems": [{"type": "integer"}, {"$ref": "#/$defs/never"}],
              "items": {"type": "integer"}},
      "none": {"type": "array", "prefixItems": [{"type": "integer"}, {"$ref": "#/$defs/never"}],
               "minItems": 2}
    },
    "$defs": {"never": {"type": "object", "properties": {"x": {"$ref": "#/$defs/never"}},
                        "required": ["x"]}}
  })";
  expectReads(never, {
      {R"({"one":[4]})", ""},
      {R"({"one":[4,{}]})", ",{}]"},
      {R"({"one":[4,5]})", ",5]"},
      {R"({"none":[4]})", "none"},
  });
}

TEST(JsonSchema, MapsHoldTheirNamesAndCounts) {
  // Each member of kMaps's object in turn, the required ones beside it.
  const std::string req = R"("scores":{"ab":1},"counts":{"red":1,"blue":2})";
  expectReads(kMaps, {
      {"{" + req + "}", ""},
      {R"({"scores":{"a":1,"zz":-2,"q":3},"counts":{"blue":0,"green":1,"red":2}})", ""},
      {R"({"scores":{},"counts":{"red":1,"blue":2}})", R"(},"counts")"},     // minProperties 1
      {R"({"scores":{"a":1,"b":2,"c":3,"d":4},"counts":{}})", R"(,"d")"},    // maxProperties 3
      {R"({"scores":{"A":1},"counts":{"red":1,"blue":2}})", R"(A")", true}, // no pattern's
      {R"({"scores":{"ab":1,"ab":2},"counts":{"red":1,"blue":2}})", R"(":2)"}, // twice
      {R"({"scores":{"ab":1},"counts":{"pink":1,"red":2}})", "pink"},      // not a Color
      {R"({"scores":{"ab":1},"counts":{"red":1}})", "}}"},                  // minProperties 2
      {R"({"scores":{"ab":1},"counts":{"red":1,"red":2}})", R"(red":2)"},  // a literal twice
      {R"({"scores":{"ab":1},"counts":{"r\u0065d":1,"blue":2}})", R"(\u0065)", true},
      {"{" + req + R"(,"mixed":{"n_a":1.5,"s_b":"xyz","flag":true,"n_":0,"s_\"":""})" + "}", ""},
      {"{" + req + R"(,"mixed":{"n_a":"x"}})", R"("x")"},   // ^n_: a number
      {"{" + req + R"(,"mixed":{"s_b":"abcd"}})", R"(d"})"}, // ^s_: 3 characters at most
      {"{" + req + R"(,"mixed":{"flag":1}})", "1}}"},       // no pattern's: a boolean
      {"{" + req + R"(,"mixed":{"n_a":1,"n_a":3}})", R"(":3})"},
      {"{" + req + R"(,"short":{"a":null,"😀":null,"\\":null,"\"x":null})" + "}", ""},
      {"{" + req + R"(,"short":{"":null}})", R"(":null}})"},      // minLength 1
      {"{" + req + R"(,"short":{"abc":null}})", R"(c":)"},        // maxLength 2
      {"{" + req + R"(,"short":{"a":null,"b":null,"c":null,"d":null,"e":null}})",
       R"(,"e")"},                                               // maxProperties 4
  });
  // Names of a finite set: once "a", "ab" and "abc" are written, a name
  // that starts with "a" is refused at the "a"; once "ab", "abc" and "b"
  // are, "a" can be written but not "ab" (refused at its "b"); once all
  // four are, another name is refused at its comma.
  expectReads(schemas().back().c_str(), {
      {R"({"a":null,"ab":null,"abc":null,"b":null})", ""},
      {R"({"a":null,"ab":null,"abc":null,"ab":null})", R"(ab":null})"},
      {R"({"ab":null,"abc":null,"b":null,"ab":null})", R"(b":null})"},
      {R"({"a":null,"ab":null,"abc":null,"b":null,"a":null})", R"(,"a":null})"},
  });
  // A free name is compared as the text it stands for (escapes decoded).
  const auto any = JsonSchema::anyObject();
  EXPECT_EQ(readWith(any, R"({"a":1,"\u0061":2})").taken, std::string(R"({"a":1,"\u0061)").size());
  EXPECT_EQ(readWith(any, R"({"\/":1,"/":2})").taken, std::string(R"({"\/":1,"/)").size());
  EXPECT_EQ(readWith(any, R"({"😀":1,"\ud83d\ude00":2})").taken,
            std::string(R"({"😀":1,"\ud83d\ude00)").size());
  EXPECT_TRUE(readWith(any, R"({"a":{"a":{"a":1}},"b":{"a":2},"c":[{"a":1},{"a":2}]})").complete);
  // Beside properties: propertyNames leaves out the optional properties it
  // refuses; patternProperties gives an unlisted required name its schema.
  expectReads(R"({"properties": {"a": {"type": "null"}, "bb": {"type": "null"}},
                  "propertyNames": {"maxLength": 1}})",
              {{R"({"a":null})", ""}, {R"({"bb":null})", "bb"}});
  expectReads(R"({"required": ["n_x", "y"], "patternProperties": {"^n_": {"type": "integer"}},
                  "additionalProperties": {"type": "string"}})",
              {{R"({"n_x":1,"y":"z"})", ""}, {R"({"n_x":"1","y":"z"})", R"("1")"}});
}

TEST(JsonSchema, UniqueItemsAreNeverWrittenTwice) {
  const std::string c = R"("colors":["red"])";
  expectReads(kSets, {
      {R"({"colors":["blue","red","green"]})", ""},
      {R"({"colors":["red","red"]})", R"(red"])"},  // refused where it begins
      {R"({"colors":[]})", "]}"},                    // minItems 1
      {"{" + c + R"(,"tags":["a","b","ab","ab"]})", R"("]})"}, // "ab" twice
      {"{" + c + R"(,"tags":["a","a"]})", R"("]})"},
      {"{" + c + R"(,"ids":[1,10,100,-1,0]})", ""},
      {"{" + c + R"(,"ids":[1,1]})", "]}"},          // refused at the byte that ends it
      {"{" + c + R"(,"ids":[0,-0]})", "]}"},
      {"{" + c + R"(,"ids":[7 , 7 ]})", " ]}"},
      {"{" + c + R"(,"flags":[true,false]})", ""},
      {"{" + c + R"(,"flags":[true,true]})", "true]"},
      {"{" + c + R"(,"flags":[true,false,true]})", ",true]"}, // none left
      {"{" + c + R"(,"codes":["a","b","ab","ba","aa","bb"]})", ""},
      {"{" + c + R"(,"codes":["a","b","ab","ba","aa","bb","a"]})", R"(,"a"])"},
      {"{" + c + R"(,"codes":["aa","ab","a","a"]})", R"(a"]})"}, // only written ones left
      {"{" + c + R"(,"codes":["aa","ab","b","a"]})", ""},
      {"{" + c + R"(,"nums":[1,"1",2]})", ""},
      {"{" + c + R"(,"nums":[1,1.0]})", "1.0]"},    // 1.0 is 1, written
      {"{" + c + R"(,"free":["x","x"]})", ""},     // uniqueItems false
      {"{" + c + R"(,"reals":[1.5,2.5e-1,-0.0,1,3E2]})", ""},
      {"{" + c + R"(,"reals":[1.5,1.50]})", "]}"},  // as Python's floats: one value
      {"{" + c + R"(,"reals":[1,1.0]})", "]}"},
      {"{" + c + R"(,"reals":[0,-0.0e5]})", "]}"},
      {"{" + c + R"(,"reals":[0.5,5e-1]})", "]}"},
      // 1e400 and 2e400 both read as infinity (the validator here cuts
      // exponents to one digit, so it takes them).
      {"{" + c + R"(,"reals":[1e400,2e400]})", "]}", true},
      {"{" + c + R"(,"opt":[null,"a","",null]})", R"(null]})"},
      {"{" + c + R"(,"opt":[null,"a","a"]})", R"("]})"},
      {"{" + c + R"(,"opt":["a",null,"b"]})", ""},
  });
}

TEST(JsonSchema, GeneratedInstancesAreReadWholeAndEditsOnlyWhenValid) {
  // Instances the test writes from each schema (compact and indented) are
  // read whole; of their one-byte edits, the recogniser reads whole only
  // ones that parse as an object the schema accepts.
  std::mt19937 rng(11);
  const std::string alphabet = "{}[]\":, 0123456789.-eEtrufalsn\"abkx\n";
  size_t edits = 0, editsRead = 0;
  for (const std::string &text : schemas()) {
    const ojson schema = ojson::parse(text);
    const auto c = compiled(schema);
    for (int n = 0; n < 60; ++n) {
      const int literalsBefore = structuredLiterals;
      const ojson v = generate(schema, schema, rng, 0);
      ASSERT_TRUE(valid(v, schema, schema)) << v.dump();
      std::vector<std::string> docs = {v.dump()};
      if (structuredLiterals == literalsBefore) docs.push_back(v.dump(1));
      for (const std::string &doc : docs) {
        const Read r = readWith(c, doc);
        ASSERT_TRUE(r.complete && r.taken == doc.size())
            << text << "\n" << doc << "\nrefused at byte " << r.taken;
        for (int e = 0; e < 20; ++e) {
          std::string edit = doc;
          const size_t at = rng() % edit.size();
          const char b = alphabet[rng() % alphabet.size()];
          if (e % 3 == 0) edit.erase(at, 1);
          else if (e % 3 == 1) edit.insert(at, 1, b);
          else edit[at] = b;
          const Read er = readWith(c, edit);
          ++edits;
          if (er.complete && er.taken == edit.size()) {
            ++editsRead;
            EXPECT_TRUE(validText(edit, schema)) << text << "\nread whole: " << edit;
          }
        }
      }
    }
  }
  EXPECT_GT(editsRead, edits / 50) << "some edits stay valid (whitespace, digits, strings)";
}

TEST(JsonSchema, EveryReadingCanBeFinished) {
  // Random walks over the bytes the recogniser allows: at every step some
  // byte is allowed (no dead end), and every text it finishes is valid.
  std::mt19937 rng(5);
  for (const std::string &text : schemas()) {
    const ojson schema = ojson::parse(text);
    const auto c = compiled(schema);
    int finished = 0;
    for (int walk = 0; walk < 20; ++walk) {
      SchemaState s(c);
      std::string out;
      while (!s.complete() && out.size() < 2000) {
        std::vector<uint8_t> allowed;
        for (int b = 0; b < 256; ++b) {
          SchemaState t = s;
          if (t.push(uint8_t(b))) allowed.push_back(uint8_t(b));
        }
        ASSERT_FALSE(allowed.empty()) << text << "\na dead end after: " << out;
        // Past a hundred bytes, quotes first (to end a string, or to take the
        // shortest value), then closing brackets.
        uint8_t pick = allowed[rng() % allowed.size()];
        if (out.size() > 100) {
          int best = 0;
          for (uint8_t b : allowed) {
            const int rank = b == '"' ? 3 : b == '}' || b == ']' ? 2 : b == ',' ? 1 : 0;
            if (rank > best && (rank > 1 || rng() % 4 == 0)) best = rank, pick = b;
          }
        }
        ASSERT_TRUE(s.push(pick));
        out.push_back(char(pick));
      }
      if (!s.complete()) continue;
      ++finished;
      EXPECT_TRUE(validText(out, schema)) << text << "\n" << out;
    }
    EXPECT_GT(finished, 15) << text;
  }
}

namespace {

/// A vocabulary: every byte alone, and pieces that cross JSON's tokens.
std::vector<std::string> testTokens() {
  std::vector<std::string> t;
  for (int b = 0; b < 256; ++b) t.push_back(std::string(1, char(b)));
  for (const char *p : {"\":\"", "{\"", "\":", "\",\"", "name", "\"name\"", "\"na", "age", "ag",
                        "12", "1.5", "e-3", "true", "tr", "false", "null", "nu", "\"a\"", "b c",
                        "\"b c\"", "[\"", "\"]", "],", "},", " \"", "ok", "ok\":", "\u00e9",
                        "\xc3", "Ann", "tags", "\"tags\":[", "kind", "circle", "\"circle\"",
                        "\"square", "side", "  ", "\n  ", "{\"k\":[1]}", "7,", "\\n", "\\u00e9",
                        "日b", "bc", "日本語", "\\\"y", "abcdefg", "😀", "a😀"})
    t.push_back(p);
  t.push_back(""); // a control token: never allowed
  return t;
}

} // namespace

TEST(JsonSchema, TheMaskLeavesExactlyTheTokensThatCanContinue) {
  // The walk in byte order (shared prefixes read once, refused prefixes
  // refusing the rest, the string shortcut) against reading each token
  // on its own, in every kind of state along written documents.
  const std::vector<std::string> tokens = testTokens();
  const JsonVocabulary vocab(tokens);
  const int64_t rows = int64_t(tokens.size()) + 3; // padding rows past the vocabulary
  const std::vector<std::string> all = schemas();
  const std::vector<std::pair<std::string, std::string>> docs = {
      {kPerson, R"({"name":"Ann","age":-30,"tags":["b c",{"k":[1]}],"score":1.5e-3,"ok":true})"},
      {all[5], R"({"kind":"square","side":12})"},
      {all[2], R"({"a b":1,"\u00e9":2})"},
      {all[4], R"({"ab":true,"b":[1.5,2]})"},
      {kTuples, R"({"at":[12,1.5],"row":["b c",2,true,false],"pair":[7,null]})"},
      // A bounded string up to its limit (six characters, escapes one each).
      {kPerson, R"({"name":"a\u00e9\n日bc","age":1,"email":"x\"yz","ok":false})"},
      // Up to maxLength in UTF-16 units: a character past U+FFFF takes two.
      {kPerson, R"({"name":"abcd😀","age":1,"ok":true})"},
      {kPerson, R"({"name":"abcde","age":1,"ok":true})"},
      // Patterns, formats and bounded numbers: every token read.
      {kFormats, R"({"code":"AB-123","tag":"b\"yz","age":12,"ratio":0.0015,"step":-1.75,)"
                 R"("day":"2024-02-29","ip":"10.0.0.1","note":"a\n\"\\b"})"},
      // Maps: names held to patterns, literals and lengths, never twice; a
      // finite set of names, where the pattern's shortcut cannot be used.
      {kMaps, R"({"scores":{"ab":1,"x":2},"counts":{"red":1,"blue":-2},)"
              R"("mixed":{"n_a":1.5,"s_b":"xy","flag":true},"short":{"a":null,"😀":null}})"},
      {all.back(), R"({"a":null,"ab":null,"abc":null,"b":null})"},
      {kSets, R"({"colors":["green","red"],"tags":["ab","a"],"ids":[12,-3],)"
              R"("flags":[false,true],"codes":["a","aa","ab","b"],"nums":[2,1]})"},
      {all[1], R"({"a":{"a":1},"b":2,"a b":3})"},
  };
  size_t states = 0;
  for (const auto &[schemaText, doc] : docs) {
    const auto c = compiled(ojson::parse(schemaText));
    ASSERT_NO_THROW(vocab.check(*c));
    SchemaState s(c);
    for (size_t i = 0; i <= doc.size(); ++i) {
      std::vector<float> row(size_t(rows), 1.0f);
      vocab.mask(s, row.data(), rows);
      for (int64_t id = 0; id < rows; ++id) {
        bool ok = id < int64_t(tokens.size()) && !tokens[size_t(id)].empty();
        SchemaState t = s;
        if (ok)
          for (char b : tokens[size_t(id)]) ok = ok && t.push(uint8_t(b));
        EXPECT_EQ(std::isfinite(row[size_t(id)]), ok)
            << doc.substr(0, i) << " then token " << id << " '" << tokens[size_t(id)] << "'";
        SchemaState a = s;
        if (id < int64_t(tokens.size())) {
          EXPECT_EQ(vocab.advance(a, int32_t(id)), ok);
        }
      }
      ++states;
      if (i < doc.size()) {
        ASSERT_TRUE(s.push(uint8_t(doc[i]))) << doc.substr(0, i + 1);
      }
    }
    EXPECT_TRUE(s.complete());
  }
  EXPECT_GT(states, 100u);
  // A literal the vocabulary cannot spell alone is refused by byte.
  std::vector<std::string> noE = tokens;
  noE[uint8_t('Z')] = "";
  const auto needsZ = compiled(ojson::parse(R"({"properties": {"Zed": {"type": "null"}}})"));
  try {
    JsonVocabulary(noE).check(*needsZ);
    ADD_FAILURE() << "a vocabulary without 'Z' took a property named Zed";
  } catch (const InputError &e) {
    EXPECT_NE(std::string(e.what()).find("byte 0x5A"), std::string::npos) << e.what();
  }
  // So is a pattern it cannot finish; one it can finish with other bytes
  // is taken.
  const auto needsZs = compiled(ojson::parse(
      R"({"properties": {"a": {"type": "string", "pattern": "^(Z|[a-z])\\d+$"},
                         "b": {"type": "string", "pattern": "^\\d+Z$"}}})"));
  try {
    JsonVocabulary(noE).check(*needsZs);
    ADD_FAILURE() << "a vocabulary without 'Z' took a pattern that must end with Z";
  } catch (const InputError &e) {
    EXPECT_NE(std::string(e.what()).find("schema.properties.b.pattern: this vocabulary cannot "
                                         "spell"),
              std::string::npos)
        << e.what();
  }
  const auto finishable = compiled(ojson::parse(
      R"({"properties": {"a": {"type": "string", "pattern": "^(Z|[a-z])\\d+$"}}})"));
  EXPECT_NO_THROW(JsonVocabulary(noE).check(*finishable));
  // Remembered per vocabulary and schema: what passed passes again, what
  // failed fails again, and another vocabulary checks for itself.
  const JsonVocabulary withZ(tokens), withoutZ(noE);
  for (int k = 0; k < 2; ++k) {
    EXPECT_NO_THROW(withZ.check(needsZs));
    EXPECT_NO_THROW(withoutZ.check(finishable));
    EXPECT_THROW(withoutZ.check(needsZs), InputError);
  }
}

TEST(JsonSchema, TheSamplerWritesOnlyWhatTheSchemaAccepts) {
  // Random rows of logits, greedy and sampled: every text the sampler ends
  // (jsonComplete) is an object the schema accepts, and the text so far is
  // always read by the recogniser.
  const std::vector<std::string> tokens = testTokens();
  auto vocab = std::make_shared<const JsonVocabulary>(tokens);
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  const int64_t rows = int64_t(tokens.size());
  for (const std::string &text : schemas()) {
    const ojson schema = ojson::parse(text);
    int closed = 0;
    for (int run = 0; run < 12; ++run) {
      SamplingOptions o;
      o.temperature = run % 3 == 0 ? 0.0 : 1.0;
      o.seed = uint64_t(run);
      o.json = vocab;
      o.schema = compiled(schema);
      Sampler sampler(o);
      std::string out;
      std::vector<float> row(static_cast<size_t>(rows));
      for (int step = 0; step < 400 && !sampler.jsonComplete(); ++step) {
        for (float &l : row) l = normal(rng);
        // Closing brackets up, so most runs end.
        for (char b : std::string("}]\"")) row[size_t(uint8_t(b))] += 3.0f;
        out += tokens[size_t(sampler.sample(row.data(), rows))];
      }
      if (!sampler.jsonComplete()) continue;
      ++closed;
      EXPECT_TRUE(validText(out, schema)) << text << "\n" << out;
    }
    EXPECT_GT(closed, 6) << text;
  }
}
