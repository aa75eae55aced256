// Structured output (OpenAI's response_format json_schema): generated text
// held to a prefix of one JSON object that a given JSON schema accepts. The
// schema is compiled into nodes; a recogniser follows the text byte by byte
// as a set of pushdown stacks (one per reading the schema still allows:
// anyOf alternatives, enum values, property names that share a start), and
// the vocabulary's mask (runtime/JsonGrammar.h) sets the logit of every
// token it would refuse to -inf.
//
// What a schema may say (draft 2020-12 keywords; anything else is refused
// by name, so no constraint is silently dropped): type (one or a list),
// properties, required, additionalProperties, patternProperties,
// propertyNames, minProperties, maxProperties, items, minItems, maxItems,
// uniqueItems (items of strings, integers or numbers without bounds,
// booleans, null, an anyOf of those of different kinds, or enum values),
// minLength, maxLength, pattern (runtime/Regex.cpp), minimum, maximum,
// exclusiveMinimum, exclusiveMaximum, multipleOf (runtime/NumberDfa.cpp),
// enum, const, anyOf, oneOf (when no value can meet two of its
// alternatives: then it is anyOf), allOf of one schema, $ref to any JSON
// pointer into the schema ("#", "#/$defs/..."), OpenAPI's nullable (as
// OpenAI's SDK helpers write it), format (date-time, date, time, duration, email, uuid,
// ipv4, ipv6, hostname held as patterns; another format is an annotation,
// as JSON Schema says), and annotations (title, description, default,
// examples, $schema, $id, $comment, ...). A patterned string is written
// without \u escapes; a bounded number without an exponent. A string's
// minLength counts code points, as JSON Schema does, and its maxLength
// UTF-16 units (a character past U+FFFF two), as JavaScript's validators
// (zod's) do: what is written meets both.
// Properties are written in the order the schema lists them, each
// required one present; an object with properties takes no others (as
// OpenAI's strict mode: the text always validates, whatever
// additionalProperties says); an object without properties is a map whose
// values follow additionalProperties (any value when absent), or, with
// patternProperties, a map of names that match one pattern each (a name two
// match is not written), each value held to its pattern's schema, and of
// other names only when additionalProperties is a schema. A map's names
// meet propertyNames, number minProperties to maxProperties, and are never
// written twice (their values would be lost: a parser keeps one). The top
// level must be an object.
#pragma once

#include "runtime/ByteDfa.h"

#include <nlohmann/json_fwd.hpp>

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace kvplan {

class JsonSchema {
public:
  /// Compiles `schema`; throws InputError naming the keyword by its path
  /// under `where` (e.g. "response_format.json_schema.schema") and what to
  /// write instead, for a keyword kvplan cannot hold generation to, a
  /// malformed value, a $ref it cannot resolve, a schema no value meets,
  /// or a top level that is not an object. A schema compiled lately (the
  /// same text under the same `where`) is not compiled again: the process
  /// keeps the last ones (kCachedSchemas, kCachedBytes at most), as a
  /// server sees one schema request after request (an application's
  /// response_format, an agent's tools). A compiled schema never changes.
  static std::shared_ptr<const JsonSchema> compile(const nlohmann::ordered_json &schema,
                                                   const std::string &where);
  static constexpr size_t kCachedSchemas = 64, kCachedBytes = size_t(64) << 20;
  /// How many compile() calls found their schema compiled (for tests and
  /// the bench).
  static uint64_t cacheHits();
  /// The memory this schema holds, in bytes (its nodes and automata).
  size_t memoryBytes() const;
  /// The schema {}: any JSON object (JSON mode, response_format json_object).
  static std::shared_ptr<const JsonSchema> anyObject();

  enum class Kind : uint8_t { any, object, array, string, integer, number, boolean, null,
                              literals, anyOf };
  struct Property {
    std::string key; // the name as JSON writes it after its opening quote (closing quote included)
    int32_t node = -1;
    bool required = false;
  };
  /// A map's names of one kind: what they are, what their values are.
  struct NameGroup {
    int32_t key = -1;   // the names' node: any string, a patterned string or string literals
    int32_t value = -1; // their values' node
    uint64_t names = 0; // how many distinct names it holds (kManyNames: at least that many)
  };
  static constexpr uint64_t kManyNames = uint64_t(1) << 40;
  struct Node {
    Kind kind = Kind::any;
    std::vector<Property> properties; // object, in the schema's order
    std::vector<NameGroup> names;     // object without properties: a map (their languages
                                      // do not overlap)
    int32_t items = -1;               // array: its items' node (after the prefix)
    std::vector<int32_t> prefix;      // array: prefixItems, the first items' nodes
    int64_t minCount = 0, maxCount = -1; // array items, string characters, a map's
                                         // properties (-1: no limit)
    std::vector<std::string> literals;   // enum/const values, as compact JSON
    std::vector<int32_t> sameAs;         // unique items' literals: the first equal by value
    std::vector<int32_t> alternatives;   // anyOf
    int32_t automaton = -1; // string: its pattern; integer, number: bounds (automata())
    bool unique = false;    // array: uniqueItems (no item equal to another)
  };
  // Nodes every schema has: any value; any object, array, string, number;
  // true or false; null.
  static constexpr int32_t kAny = 0, kAnyObject = 1, kAnyArray = 2, kAnyString = 3,
                           kAnyNumber = 4, kBoolean = 5, kNull = 6;

  /// An array's k-th item's node: its prefixItems schema, or items after.
  static int32_t itemNode(const Node &array, int64_t k) {
    return k < int64_t(array.prefix.size()) ? array.prefix[size_t(k)] : array.items;
  }

  const std::vector<Node> &nodes() const { return all; }
  int32_t root() const { return top; }
  /// Every byte the schema's literals are written with: property names,
  /// enum and const values (the vocabulary must spell each alone).
  const std::array<bool, 256> &literalBytes() const { return bytes; }
  /// Patterns and bounded numbers (Node::automaton), and each one's path in
  /// the schema (for the vocabulary's check).
  const std::vector<ByteDfa> &automata() const { return dfas; }
  const std::vector<std::string> &automatonPaths() const { return dfaPaths; }
  /// For an automaton of a map's names or of unique items' strings: how
  /// many texts each state can still end in (ByteDfa::textCounts,
  /// kManyNames at most), and the fewest of any state; null for another.
  struct NameCounts {
    std::vector<uint64_t> from;
    uint64_t fewest = 0;
  };
  const NameCounts *nameCounts(int32_t automaton) const {
    const NameCounts &c = counts[size_t(automaton)];
    return c.from.empty() ? nullptr : &c;
  }

private:
  friend class JsonSchemaCompiler;
  std::vector<Node> all;
  int32_t top = kAnyObject;
  std::array<bool, 256> bytes{};
  std::vector<ByteDfa> dfas;
  std::vector<std::string> dfaPaths;
  std::vector<NameCounts> counts; // by automaton
};

/// The byte a JSON string's one-character escape `\c` stands for (`\n`: a
/// line feed), or -1 when `c` starts none (`\u` included).
int jsonEscapedByte(unsigned char c);
/// Every byte such an escape stands for.
extern const char kJsonEscapedBytes[];
/// The text a JSON string's content stands for (between its quotes,
/// escapes decoded, \u ones as UTF-8); an escape cut short at its end is
/// left out.
std::string jsonStringText(const std::string &content);

/// Where a text is against a schema: every reading of it the schema still
/// allows, each a stack of frames (the values open around the byte next).
class SchemaState {
public:
  SchemaState() = default;
  explicit SchemaState(std::shared_ptr<const JsonSchema> schema);
  /// Takes one byte; false (the state then unusable) when no reading of
  /// the text with it is the start of a value the schema accepts.
  bool push(unsigned char c);
  /// This state, then `c`: as push, reusing this state's storage.
  bool assignPush(const SchemaState &from, unsigned char c);
  /// Whether the top-level object has closed (nothing may follow).
  bool complete() const;
  /// When every reading is inside a string, between characters: the fewest
  /// UTF-16 units any of them may still add (INT64_MAX: no limit), so a
  /// token that stays in a string and adds no more is allowed without
  /// reading it. -1 otherwise.
  int64_t stringRoom() const;
  /// When the only reading is inside a patterned string, between
  /// characters: its automaton and state (a token that stays in the string
  /// is allowed when the automaton takes its bytes, escapes decoded). Else
  /// a null automaton.
  struct InPattern {
    const ByteDfa *dfa = nullptr;
    int32_t state = ByteDfa::kNone;
  };
  InPattern inPattern() const;
  /// Readings kept at most (further ones, possible only with anyOf
  /// alternatives that stay alike for long, are dropped: what is left
  /// still only writes what the schema accepts).
  static constexpr size_t kMaxStacks = 256;
  /// Whitespace between tokens: at most this many bytes in a row, with at
  /// most one line feed and one carriage return among them (a model that
  /// would pad or break lines forever cannot; a line of indentation fits).
  static constexpr int kMaxSpaces = 16;

  struct Frame {
    int32_t node = -1;
    uint8_t mode = 0;
    uint8_t pending = 0, lo = 0, hi = 0; // strings: UTF-8 and \u digits still to come
    int32_t count = 0;   // object: next property; array: items; string: characters; literal: bytes
    int32_t choice = -1; // object: property read; literal: which value or property name;
                         // string: its pattern's state, or the characters past U+FFFF
    bool operator==(const Frame &o) const {
      return node == o.node && mode == o.mode && pending == o.pending && lo == o.lo &&
             hi == o.hi && count == o.count && choice == o.choice;
    }
  };
  struct Stack {
    std::vector<Frame> frames;
    // The names the open maps have written and the items the open arrays
    // with uniqueItems have (decoded, each followed by its length in 4
    // bytes; the innermost one's last, as many as its frame's count), and
    // the name or item being read (as written: a name after its opening
    // quote, an item whole, a number with the byte that ended it).
    std::string names, name;
    uint8_t spaces = 0, breaks = 0; // whitespace in a row, of them line feeds and returns
    bool started = false, done = false, dead = false;
    bool operator==(const Stack &o) const {
      return frames == o.frames && spaces == o.spaces && breaks == o.breaks &&
             started == o.started && done == o.done && names == o.names && name == o.name;
    }
  };

private:
  size_t add(const Stack &s);
  void feed(size_t i, unsigned char c);
  void startValue(size_t i, int32_t node, unsigned char c);
  void startKey(size_t i);
  void startName(size_t i);
  /// Whether a map or a unique array (its frame `map`) has a name or an
  /// item left that it has not written, among the texts of `key` from its
  /// automaton's `state`, after `prefix` (as Stack::names keeps them: an
  /// item's with its tag); any when `key` is not patterned.
  bool nameLeft(const Stack &s, const Frame &map, const JsonSchema::Node &key, int32_t state,
                const std::string &prefix) const;
  /// Whether another name can follow in a map: fewer than maxProperties,
  /// and some name left.
  bool anotherName(const Stack &s, const Frame &map) const;
  /// Whether another item can follow in an array with uniqueItems: one
  /// not written yet is left.
  bool anotherItem(const Stack &s, const Frame &array) const;
  /// Whether an item of `item` (an alternative of the items' anyOf, or the
  /// items' schema) has a value left that `array` has not written.
  bool valueLeft(const Stack &s, const Frame &array, const JsonSchema::Node &item) const;
  /// Whether a stack's top frame is a map's name or a unique array's item.
  bool recorded(const Stack &s) const;
  /// After a byte of a map's name or a unique array's item: one that can
  /// only end as one written is refused.
  void checkRecorded(size_t i);
  void feedContainer(size_t i, unsigned char c);
  void feedString(size_t i, unsigned char c);
  void feedScalar(size_t i, unsigned char c);
  void endValue(Stack &s);
  bool space(Stack &s, unsigned char c);
  const ByteDfa &dfa(const JsonSchema::Node &n) const {
    return schema->automata()[size_t(n.automaton)];
  }
  /// A plain string's character of two UTF-16 units (past U+FFFF): counted
  /// in `choice`, false when maxLength leaves no room for it.
  bool twoUnits(Frame &f, const JsonSchema::Node &n) const;
  /// Whether some escape (\", \n, ...) can go on a patterned string here.
  bool escapeMatches(const Frame &f, const JsonSchema::Node &n) const;
  /// A byte of a patterned string's text (escapes decoded) to its pattern.
  bool matchByte(Frame &f, const JsonSchema::Node &n, uint8_t c) const {
    f.choice = dfa(n).next(f.choice, c);
    return f.choice != ByteDfa::kNone;
  }
  void compact();

  std::shared_ptr<const JsonSchema> schema;
  std::vector<Stack> stacks; // the first `live` are the readings; the rest spare storage
  size_t live = 0;
};

} // namespace kvplan
