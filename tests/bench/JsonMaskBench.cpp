// JSON mode's cost (not a test: run it by hand), e.g.
//   build/bin/kvplan-json-bench ../shared/models/llama3-tokenizer/tokenizer.json
// For each tokenizer file: the time to read every token's bytes (once per
// server, at the first JSON request), then the time of one row's mask
// (runtime/JsonGrammar.h) after texts in different states, the median of
// --repeat masks (default 21), and how many tokens it leaves; then the same
// with a JSON schema (runtime/JsonSchema.h, response_format json_schema),
// with one of patterns, formats and bounded numbers (runtime/ByteDfa.h), and
// with one of maps (names held to patterns, an enum, a finite set) and a
// set (uniqueItems); for
// each schema, the time to compile it and to check it against the
// vocabulary, and to find both done (the server's next request with it).
#include "formats/Tokenizer.h"
#include "tests/bench/BenchArgs.h"
#include "runtime/JsonGrammar.h"
#include "runtime/JsonSchema.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

namespace {
double msSince(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
}

// A schema of the kind structured-output requests send: a record with a
// bounded string, numbers, an enum, a list of objects.
const char *kSchema = R"({"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 40},
    "age": {"type": "integer"},
    "email": {"type": ["string", "null"]},
    "role": {"enum": ["admin", "editor", "viewer"]},
    "address": {"type": "object", "properties": {"city": {"type": "string"},
                                                 "zip": {"type": "string"}},
                "required": ["city", "zip"]},
    "scores": {"type": "array", "items": {"type": "number"}, "maxItems": 10}},
  "required": ["name", "age", "email", "role", "address", "scores"],
  "additionalProperties": false})";

// Strings held to patterns and formats, numbers to bounds: every token read.
const char *kPatterned = R"({"type": "object", "properties": {
    "sku": {"type": "string", "pattern": "^[A-Z]{3}-\\d{4}$"},
    "email": {"type": "string", "format": "email"},
    "when": {"type": "string", "format": "date-time"},
    "note": {"type": "string", "pattern": "^[^<>]*$", "maxLength": 200},
    "price": {"type": "number", "minimum": 0, "maximum": 10000, "multipleOf": 0.01}},
  "required": ["sku", "email", "when", "note", "price"], "additionalProperties": false})";

// Maps: names held to a pattern and counts, to an enum, to a finite set
// (where each token of a name is read, to keep from names written); a set.
const char *kMaps = R"({"type": "object", "properties": {
    "scores": {"type": "object", "patternProperties": {"^[a-z_]{1,20}$": {"type": "integer"}},
               "minProperties": 1, "maxProperties": 8},
    "stock": {"type": "object", "propertyNames": {"enum": ["red", "green", "blue", "black"]},
              "additionalProperties": {"type": "integer", "minimum": 0}},
    "flags": {"type": "object", "propertyNames": {"pattern": "^(dark|light)_(mode|theme)$"},
              "additionalProperties": {"type": "boolean"}},
    "tags": {"type": "array", "items": {"type": "string", "maxLength": 20}, "uniqueItems": true}},
  "required": ["scores", "stock", "flags", "tags"], "additionalProperties": false})";

/// Times `mask` (filling a fresh row) --repeat times; prints the median and
/// how many tokens it leaves.
template <class Mask>
void timeMask(const std::string &text, int repeat, std::vector<float> &row, Mask mask) {
  std::vector<double> ms;
  for (int r = 0; r < repeat; ++r) {
    std::fill(row.begin(), row.end(), 0.0f);
    const auto start = std::chrono::steady_clock::now();
    mask(row.data());
    ms.push_back(msSince(start));
  }
  std::sort(ms.begin(), ms.end());
  const auto left = std::count(row.begin(), row.end(), 0.0f);
  std::printf("  after %-36s mask %.3f ms (median of %d), %lld tokens left\n",
              ("'" + text + "'").c_str(), ms[ms.size() / 2], repeat, (long long)left);
}

void benchSchema(const kvplan::JsonVocabulary &vocab, const char *schemaText,
                 const std::vector<std::string> &texts, int repeat, std::vector<float> &row);

void bench(const std::string &file, int repeat) {
  auto tok = kvplan::loadTokenizerFile(file);
  auto start = std::chrono::steady_clock::now();
  const kvplan::JsonVocabulary vocab = kvplan::JsonVocabulary::of(*tok);
  std::printf("%s: vocab %lld, token bytes read in %.1f ms\n", file.c_str(),
              (long long)vocab.size(), msSince(start));
  std::vector<float> row(size_t(vocab.size()));
  for (const char *text : {"", "{\"name\"", "{\"name\": ", "{\"name\": \"Ali", "{\"n\": 12",
                           "{\"a\": [1, ", "{\"a\": {\"b\": true",
                           "{\"id\": 7, \"tags\": {\"red\": 1, \"blue\": 2, \"green\": 3}, \"n",
                           "{\"id\": 7, \"tags\": {\"red\": 1, \"blue\": 2, \"green\": 3, "}) {
    kvplan::SchemaState s(kvplan::JsonSchema::anyObject()); // JSON mode's
    for (const char *c = text; *c; ++c) s.push(uint8_t(*c));
    timeMask(text, repeat, row, [&](float *r) { vocab.mask(s, r, int64_t(row.size())); });
  }
  benchSchema(vocab, kSchema,
              {"", "{\"name\": \"Ali", "{\"name\": \"Ali\", \"age\": 3",
               "{\"name\": \"Ali\", \"age\": 3, \"email\": ",
               "{\"name\": \"Ali\", \"age\": 3, \"email\": null, \"role\": \"e",
               "{\"name\": \"A\", \"age\": 3, \"email\": null, \"role\": \"viewer\", "
               "\"address\": {\"city\": \"Oslo\", \"zip\": \"0150\"}, \"scores\": [1.5, "},
              repeat, row);
  const std::string sku = "{\"sku\": \"ABC-1234\", ", email = "\"email\": \"a@b.io\", ",
                    when = "\"when\": \"2026-12-05T10:30:00Z\", ";
  benchSchema(vocab, kPatterned,
              {"{\"sku\": \"AB", sku + "\"email\": \"ann.lee@exa",
               sku + email + "\"when\": \"2026-12-05T10:3",
               sku + email + when + "\"note\": \"Fragile, ",
               sku + email + when + "\"note\": \"\", \"price\": 12.5"},
              repeat, row);
  const std::string scores = "{\"scores\": {\"math\": 3, \"art_history\": 4}, ";
  benchSchema(vocab, kMaps,
              {"{\"scores\": {\"ma", scores + "\"stock\": {\"red\": 1, ",
               scores + "\"stock\": {}, \"flags\": {\"dark_mode\": true, \"dark_",
               scores + "\"stock\": {}, \"flags\": {\"dark_mode\": true, \"light_mode\": "
                        "false, \"dark_theme\": true, \"light_",
               scores + "\"stock\": {}, \"flags\": {}, \"tags\": [\"new\", \"sale\", \"n"},
              repeat, row);
}

/// The mask after each text.
void benchSchema(const kvplan::JsonVocabulary &vocab, const char *schemaText,
                 const std::vector<std::string> &texts, int repeat, std::vector<float> &row) {
  // A name of its own, so that the first compile is not one kept from before.
  const std::string where = "bench " + std::to_string(std::rand());
  const auto doc = nlohmann::ordered_json::parse(schemaText);
  auto start = std::chrono::steady_clock::now();
  const auto schema = kvplan::JsonSchema::compile(doc, where);
  const double compiled = msSince(start);
  start = std::chrono::steady_clock::now();
  kvplan::JsonSchema::compile(doc, where); // as a server's next request with it
  const double kept = msSince(start);
  start = std::chrono::steady_clock::now();
  vocab.check(schema);
  const double checked = msSince(start);
  start = std::chrono::steady_clock::now();
  vocab.check(schema);
  std::printf(" with a schema (%zu nodes, %zu automata, %zu bytes; compiled in %.2f ms, "
              "found kept in %.3f ms; checked against the vocabulary in %.2f ms, found "
              "checked in %.3f ms):\n",
              schema->nodes().size(), schema->automata().size(), schema->memoryBytes(), compiled,
              kept, checked, msSince(start));
  for (const std::string &t : texts) {
    const char *text = t.c_str();
    kvplan::SchemaState s(schema);
    for (const char *c = text; *c; ++c)
      if (!s.push(uint8_t(*c))) throw std::logic_error(std::string("refused: ") + text);
    const std::string shown(text);
    timeMask(shown.size() <= 36 ? shown : "..." + shown.substr(shown.size() - 33), repeat, row,
             [&](float *r) { vocab.mask(s, r, int64_t(row.size())); });
  }
}
} // namespace

int main(int argc, char **argv) {
  const kvplan::bench::BenchArgs args = kvplan::bench::parseBenchArgs(argc, argv, 21);
  if (args.files.empty()) {
    std::fprintf(stderr, "usage: kvplan-json-bench [--repeat N] TOKENIZER_FILE...\n");
    return 2;
  }
  for (const std::string &file : args.files) {
    try {
      bench(file, args.repeat);
    } catch (const std::exception &e) {
      std::fprintf(stderr, "%s\n", e.what());
      return 1;
    }
  }
  return 0;
}
