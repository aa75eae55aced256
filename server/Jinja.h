// Jinja templates, rendered as Hugging Face's transformers renders a
// model's chat_template: jinja2 with trim_blocks and lstrip_blocks, the loop
// controls ({% break %}, {% continue %}), {% generation %}, the globals
// raise_exception() and strftime_now(), and a tojson filter that writes what
// Python's json.dumps writes (keys in their order, non-ASCII as is). What
// chat templates use of the language is here: output, if/elif/else, for
// (with loop.*, a filter, else, unpacking), set (names, namespace
// attributes, blocks), macros, the operators, filters and tests jinja2
// defines for them, Python's string, list and dict methods that templates
// call, and values printed as Python prints them. Templates that inherit or
// include others are refused when they are read.
#pragma once

#include <nlohmann/json.hpp>

#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

namespace kvplan::server {

/// A template could not be rendered with the values given: the template's
/// own raise_exception(message) (raised() true; the message is the
/// template's, for the client), or an operation its values do not allow
/// (which names the template's line).
class JinjaError : public std::runtime_error {
public:
  JinjaError(const std::string &what, bool raised) : std::runtime_error(what), byTemplate(raised) {}
  bool raised() const { return byTemplate; }

private:
  bool byTemplate;
};

class JinjaTemplate {
public:
  /// Reads `source`. Throws InputError naming `origin` and the line for a
  /// syntax error, or a statement kvplan does not render (extends, include,
  /// import, call and filter blocks).
  JinjaTemplate(const std::string &source, const std::string &origin);
  ~JinjaTemplate();
  JinjaTemplate(JinjaTemplate &&) noexcept;
  JinjaTemplate &operator=(JinjaTemplate &&) noexcept;

  /// The text for the variables in `context` (a JSON object). Throws
  /// JinjaError.
  std::string render(const nlohmann::ordered_json &context) const;
  const std::string &origin() const;

private:
  struct Impl;
  std::unique_ptr<Impl> impl;
};

/// json.dumps's arguments, as transformers' tojson filter passes them:
/// tojson(ensure_ascii=False, indent=None, separators=None, sort_keys=False).
struct PythonJsonOptions {
  int indent = -1; // None: one line
  std::optional<std::string> indentText; // json.dumps(indent="\t"): this string a level
  bool sortKeys = false;
  bool ensureAscii = false; // every character past ASCII as \uXXXX
  std::optional<std::string> itemSeparator, keySeparator; // separators=(item, key)
};

/// `value` as Python's json.dumps writes it: ", " and ": " between items,
/// or with `indent` >= 0 (or `indentText`) one item a line under that many
/// spaces (that string) a level and "," after each (unless separators say
/// otherwise); floats as Python's repr.
std::string pythonJsonDumps(const nlohmann::ordered_json &value, const PythonJsonOptions &o);
std::string pythonJsonDumps(const nlohmann::ordered_json &value, int indent = -1,
                            bool sortKeys = false);

} // namespace kvplan::server
