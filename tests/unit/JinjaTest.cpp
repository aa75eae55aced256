// The Jinja interpreter against jinja2: tests/data/jinja-cases.json holds
// templates, their variables and the text jinja2 3.1 renders for them in
// transformers' environment (scripts/jinja-cases.py wrote it), the Llama 3
// and Qwen3 tokenizer_config.json templates among them; and what a template
// kvplan cannot render gets as an error.
#include "server/Jinja.h"
#include "support/Error.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

using namespace kvplan;
using namespace kvplan::server;
using Json = nlohmann::ordered_json;

namespace {

Json cases() {
  std::ifstream in(std::string(KVPLAN_SOURCE_DIR) + "/tests/data/jinja-cases.json");
  std::stringstream s;
  s << in.rdbuf();
  return Json::parse(s.str());
}

std::string readFile(const std::string &path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

/// The case rendered: its text, or "raised: " and the template's message.
std::string renderCase(const std::string &source, const Json &context, const std::string &name) {
  JinjaTemplate t(source, name);
  try {
    return t.render(context);
  } catch (const JinjaError &e) {
    return e.raised() ? std::string("raised: ") + e.what() : std::string("error: ") + e.what();
  }
}

std::string expectedOf(const Json &c) {
  return c.contains("raised") ? "raised: " + c["raised"].get<std::string>()
                              : c["expected"].get<std::string>();
}

std::string renderError(const std::string &source, const Json &context = Json::object()) {
  try {
    JinjaTemplate("" + source, "chat.jinja").render(context);
  } catch (const InputError &e) {
    return std::string("input: ") + e.what();
  } catch (const JinjaError &e) {
    return std::string(e.raised() ? "raised: " : "render: ") + e.what();
  }
  return "no error";
}

} // namespace

TEST(Jinja, RendersAsJinja2) {
  const Json all = cases();
  ASSERT_GE(all["cases"].size(), 30u);
  for (const Json &c : all["cases"]) {
    const std::string name = c["name"].get<std::string>();
    SCOPED_TRACE(name);
    EXPECT_EQ(renderCase(c["template"].get<std::string>(), c["context"], name), expectedOf(c));
  }
}

// The templates the Llama 3 and Qwen3 tokenizers ship, for conversations
// with a system message, earlier thoughts, thinking off and tool calls.
TEST(Jinja, RendersTheModelsOwnTemplatesAsJinja2) {
  const Json all = cases();
  ASSERT_FALSE(all["models"].empty());
  for (const Json &c : all["models"]) {
    const std::string model = c["model"].get<std::string>();
    const std::string path =
        std::string(KVPLAN_SHARED_DIR) + "/models/" + model + "/tokenizer_config.json";
    if (!std::ifstream(path).good())
      GTEST_SKIP() << "test data " << path << " is absent (set KVPLAN_SHARED_DIR)";
    const std::string source = Json::parse(readFile(path))["chat_template"].get<std::string>();
    SCOPED_TRACE(model + " " + c["name"].get<std::string>());
    EXPECT_EQ(renderCase(source, c["context"], path), expectedOf(c));
  }
}

TEST(Jinja, PythonJsonDumps) {
  const Json v = Json::parse(R"({"b": [1, 2.5, "é\n"], "a": {}, "c": null, "d": 1e300})");
  EXPECT_EQ(pythonJsonDumps(v), R"({"b": [1, 2.5, "é\n"], "a": {}, "c": null, "d": 1e+300})");
  EXPECT_EQ(pythonJsonDumps(v, -1, true),
            R"({"a": {}, "b": [1, 2.5, "é\n"], "c": null, "d": 1e+300})");
  EXPECT_EQ(pythonJsonDumps(Json::parse("[[1], []]"), 2), "[\n  [\n    1\n  ],\n  []\n]");
  // tojson takes transformers' arguments, in their order: ensure_ascii,
  // indent, separators, sort_keys. Expected: Python 3.11's json.dumps.
  const Json context = {{"v", Json::parse(R"({"b": [1, "é😀\n"], "a": {"x": "ü"}})")},
                        {"s", "a\x7f\xc3\xa9"}};
  EXPECT_EQ(renderCase("{{ v | tojson(ensure_ascii=true) }}", context, "t"),
            R"({"b": [1, "\u00e9\ud83d\ude00\n"], "a": {"x": "\u00fc"}})");
  EXPECT_EQ(renderCase("{{ v | tojson(separators=(',', ':')) }}", context, "t"),
            R"({"b":[1,"é😀\n"],"a":{"x":"ü"}})");
  EXPECT_EQ(renderCase("{{ v | tojson(true, 2, none, true) }}", context, "t"),
            "{\n  \"a\": {\n    \"x\": \"\\u00fc\"\n  },\n  \"b\": [\n    1,\n    "
            "\"\\u00e9\\ud83d\\ude00\\n\"\n  ]\n}");
  EXPECT_EQ(renderCase("{{ v | tojson(indent=1, separators=('; ', '=')) }}", context, "t"),
            "{\n \"b\"=[\n  1; \n  \"é😀\\n\"\n ]; \n \"a\"={\n  \"x\"=\"ü\"\n }\n}");
  EXPECT_EQ(renderCase("{{ s | tojson(ensure_ascii=true) }}", context, "t"), R"("a\u007f\u00e9")");
  // A string indent is used as is, a level; an indent below 0 as 0.
  EXPECT_EQ(renderCase("{{ v | tojson(indent='\t') }}", context, "t"),
            "{\n\t\"b\": [\n\t\t1,\n\t\t\"é😀\\n\"\n\t],\n\t\"a\": {\n\t\t\"x\": \"ü\"\n\t}\n}");
  EXPECT_EQ(renderCase("{{ v | tojson(indent=-2) }}", context, "t"),
            "{\n\"b\": [\n1,\n\"é😀\\n\"\n],\n\"a\": {\n\"x\": \"ü\"\n}\n}");
  EXPECT_EQ(renderCase("{{ v | tojson(indent='ab', separators=(',', ':')) }}", context, "t"),
            "{\nab\"b\":[\nabab1,\nabab\"é😀\\n\"\nab],\nab\"a\":{\nabab\"x\":\"ü\"\nab}\n}");
  EXPECT_EQ(renderError("{{ v | tojson(indent=1.5) }}", context),
            "render: chat.jinja: line 1: tojson's indent must be a whole number up to 64 or a "
            "string of at most 64 bytes");
  EXPECT_EQ(renderError("{{ v | tojson(separators=',') }}", context),
            "render: chat.jinja: line 1: tojson's separators must be two strings (item, key)");
}

// Errors name the template and the line, and say what is wrong.
TEST(Jinja, ErrorsNameTheTemplateAndLine) {
  EXPECT_EQ(renderError("a\n{{ x "),
            "input: chat.jinja: line 2: the tag '{{' is never closed with '}}'");
  EXPECT_EQ(
      renderError("{% if x %}\nopen"),
      "input: chat.jinja: line 1: the template ends inside a block: '{% endif %}' is missing");
  EXPECT_EQ(renderError("\n\n{% include 'other.jinja' %}"),
            "input: chat.jinja: line 3: '{% include %}' is not something kvplan renders in a chat "
            "template");
  EXPECT_EQ(renderError("{% frobnicate %}"),
            "input: chat.jinja: line 1: unknown statement 'frobnicate'");
  EXPECT_EQ(renderError("{{ 1 + }}"),
            "input: chat.jinja: line 1: expected a value at the end of the tag");
  // Brackets that do not pair up end the tag at its "}}" (which a dict's
  // closing would otherwise hide), and the parser says what is wrong.
  EXPECT_EQ(renderError("{{ x[ }}\n{{ y }}"),
            "input: chat.jinja: line 1: expected a value at the end of the tag");
  EXPECT_EQ(renderError("a\n{{ f({'a': {'b': 1}) }}"),
            "input: chat.jinja: line 2: expected ',', found ')'");
  EXPECT_EQ(renderError("{{ x | nosuchfilter }}"),
            "render: chat.jinja: line 1: no filter named 'nosuchfilter'");
  EXPECT_EQ(renderError("\n{{ 'a' - 1 }}"),
            "render: chat.jinja: line 2: '-' does not apply to str and int");
  EXPECT_EQ(renderError("{% for x in 5 %}{% endfor %}"),
            "render: chat.jinja: line 1: int cannot be iterated");
  EXPECT_EQ(renderError("{% set ns.x = 1 %}"),
            "render: chat.jinja: line 1: 'ns.x' is set, but ns is not a namespace()");
  EXPECT_EQ(renderError("{{ raise_exception('no system role') }}"), "raised: no system role");
  EXPECT_EQ(renderError("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}"),
            "render: chat.jinja: line 1: macros call each other more than 64 deep");
  // What would exhaust the stack, the memory or the time is refused.
  EXPECT_EQ(
      renderError("{% for i in range(2000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}"),
      "render: chat.jinja: line 1: the template loops more than a million times");
  EXPECT_EQ(renderError("{{ " + std::string(200, '(') + "1" + std::string(200, ')') + " }}"),
            "input: chat.jinja: line 1: the expression nests too deep, found '('");
  std::string nested;
  for (int i = 0; i < 150; ++i) nested += "{% if true %}";
  EXPECT_EQ(renderError(nested), "input: chat.jinja: line 1: blocks nest more than 100 deep");
  EXPECT_EQ(renderError("{% set ns = namespace(x=[]) %}{% for i in range(600) %}"
                        "{% set ns.x = [ns.x] %}{% endfor %}"),
            "render: chat.jinja: line 1: the template builds a value more than 512 deep");
  EXPECT_EQ(renderError("{% set ns = namespace(s=('ab' * 1000) * 10000) %}{% for i in range(40) %}"
                        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}"),
            "render: chat.jinja: line 1: the template builds a string over 64 MiB");
  EXPECT_EQ(renderError("{% set ns = namespace(l=[1]) %}{% for i in range(40) %}"
                        "{% set ns.l = ns.l + ns.l %}{% endfor %}"),
            "render: chat.jinja: line 1: the template builds more than 4 million values");
  EXPECT_EQ(renderError("{{ (('x' * 1000) * 1000) * 100 }}"),
            "render: chat.jinja: line 1: the template builds a string over 64 MiB");
  EXPECT_EQ(renderError("{{ (('x' * 1000) * 1000).replace('x', '" + std::string(80, 'y') + "') }}"),
            "render: chat.jinja: line 1: the template builds a string over 64 MiB");
}
