// A Jinja interpreter for chat templates (see Jinja.h): a lexer that applies
// jinja2's whitespace rules, a parser to a tree of statements and
// expressions, and an evaluator over JSON values with Python's semantics.
#include "server/Jinja.h"
#include "support/Error.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <initializer_list>
#include <map>
#include <numeric>
#include <optional>

namespace kvplan::server {

namespace {

using Json = nlohmann::ordered_json;

// ---------------------------------------------------------------------------
// Values

/// A Jinja value: undefined, a JSON value, a namespace (an object shared by
/// reference, so that {% set ns.x = ... %} in a loop is seen after it), or a
/// function by name (a global or a macro).
struct Value {
  enum class Kind { undefined, data, space, function } kind = Kind::undefined;
  Json data;
  std::shared_ptr<Json> space;
  std::string function;

  static Value of(Json j) {
    Value v;
    v.kind = Kind::data;
    v.data = std::move(j);
    return v;
  }
  bool defined() const { return kind != Kind::undefined; }
  bool isData() const { return kind == Kind::data; }
  /// The JSON value (a namespace's object; null for undefined).
  const Json &json() const {
    static const Json null;
    return kind == Kind::data ? data : kind == Kind::space ? *space : null;
  }
};

/// Python's truth: undefined, None, False, 0, "", [] and {} are false.
bool truthy(const Value &v) {
  if (v.kind == Value::Kind::function || v.kind == Value::Kind::space) return true;
  if (!v.defined()) return false;
  const Json &j = v.data;
  switch (j.type()) {
  case Json::value_t::null: return false;
  case Json::value_t::boolean: return j.get<bool>();
  case Json::value_t::number_integer:
  case Json::value_t::number_unsigned: return j.get<int64_t>() != 0;
  case Json::value_t::number_float: return j.get<double>() != 0;
  case Json::value_t::string: return !j.get_ref<const std::string &>().empty();
  case Json::value_t::array:
  case Json::value_t::object: return !j.empty();
  default: return false;
  }
}

/// repr(float) as Python writes it: the shortest digits that read back,
/// positional from 1e-4 up to 1e16, else d.ddde±XX.
std::string pythonFloat(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string s(buf, r.ptr);
  std::string sign;
  if (s[0] == '-') sign = "-", s.erase(0, 1);
  const size_t e = s.find('e');
  const int exp = std::stoi(s.substr(e + 1));
  std::string digits = s.substr(0, e);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  if (exp >= -4 && exp < 16) {
    std::string out;
    if (exp < 0) {
      out = "0." + std::string(size_t(-exp - 1), '0') + digits;
    } else if (size_t(exp) + 1 >= digits.size()) {
      out = digits + std::string(size_t(exp) + 1 - digits.size(), '0') + ".0";
    } else {
      out = digits.substr(0, size_t(exp) + 1) + "." + digits.substr(size_t(exp) + 1);
    }
    return sign + out;
  }
  std::string mant = digits.substr(0, 1);
  if (digits.size() > 1) mant += "." + digits.substr(1);
  char ex[16];
  std::snprintf(ex, sizeof ex, "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
  return sign + mant + ex;
}

/// A string's repr as Python writes it: single quotes unless the text holds
/// one and no double quote; backslash escapes for the quote, \\ and the
/// control characters.
std::string pythonStringRepr(const std::string &s) {
  const bool dq = s.find('\'') != std::string::npos && s.find('"') == std::string::npos;
  const char q = dq ? '"' : '\'';
  std::string out(1, q);
  for (unsigned char c : s) {
    if (c == q || c == '\\')
      out += '\\', out += char(c);
    else if (c == '\n')
      out += "\\n";
    else if (c == '\r')
      out += "\\r";
    else if (c == '\t')
      out += "\\t";
    else if (c < 0x20 || c == 0x7f) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    } else
      out += char(c);
  }
  return out + q;
}

std::string pythonRepr(const Json &j);

/// str(value) as Python writes it: strings as they are, the rest as repr.
std::string pythonStr(const Json &j) {
  if (j.is_string()) return j.get<std::string>();
  return pythonRepr(j);
}

std::string pythonRepr(const Json &j) {
  switch (j.type()) {
  case Json::value_t::null: return "None";
  case Json::value_t::boolean: return j.get<bool>() ? "True" : "False";
  case Json::value_t::number_integer: return std::to_string(j.get<int64_t>());
  case Json::value_t::number_unsigned: return std::to_string(j.get<uint64_t>());
  case Json::value_t::number_float: return pythonFloat(j.get<double>());
  case Json::value_t::string: return pythonStringRepr(j.get<std::string>());
  case Json::value_t::array: {
    std::string out = "[";
    for (size_t i = 0; i < j.size(); ++i) out += (i ? ", " : "") + pythonRepr(j[i]);
    return out + "]";
  }
  case Json::value_t::object: {
    std::string out = "{";
    bool first = true;
    for (auto it = j.begin(); it != j.end(); ++it, first = false)
      out += (first ? "" : ", ") + pythonStringRepr(it.key()) + ": " + pythonRepr(it.value());
    return out + "}";
  }
  default: return "";
  }
}

std::string str(const Value &v) {
  if (!v.defined()) return "";
  if (v.kind == Value::Kind::function) return "<function " + v.function + ">";
  if (v.kind == Value::Kind::space) return "<Namespace " + pythonRepr(*v.space) + ">";
  return pythonStr(v.data);
}

/// A string as json.dumps writes it: nlohmann::json escapes as Python does
/// (the same short escapes, \u00XX lower-case for other control characters,
/// with `ascii` (ensure_ascii) DEL and every character past ASCII as \uXXXX,
/// surrogate pairs past U+FFFF); bytes that are not UTF-8 become U+FFFD.
void jsonString(std::string &out, const std::string &s, bool ascii) {
  out += Json(s).dump(-1, ' ', ascii, Json::error_handler_t::replace);
}

void dumps(std::string &out, const Json &j, const PythonJsonOptions &o, int depth) {
  const bool lines = o.indent >= 0 || o.indentText;
  const std::string unit =
      o.indentText ? *o.indentText : std::string(size_t(std::max(o.indent, 0)), ' ');
  std::string close = lines ? "\n" : "";
  for (int d = 0; lines && d < depth; ++d) close += unit;
  const std::string nl = lines ? close + unit : "";
  const std::string sep = o.itemSeparator ? *o.itemSeparator : lines ? "," : ", ";
  const std::string keySep = o.keySeparator ? *o.keySeparator : ": ";
  if (j.is_array()) {
    if (j.empty()) return void(out += "[]");
    out += "[";
    for (size_t i = 0; i < j.size(); ++i) {
      out += (i ? sep : "") + nl;
      dumps(out, j[i], o, depth + 1);
    }
    out += close + "]";
  } else if (j.is_object()) {
    if (j.empty()) return void(out += "{}");
    std::vector<std::pair<std::string, const Json *>> items;
    for (auto it = j.begin(); it != j.end(); ++it) items.emplace_back(it.key(), &it.value());
    if (o.sortKeys)
      std::sort(items.begin(), items.end(), // an object's keys differ
                [](const auto &a, const auto &b) { return a.first < b.first; });
    out += "{";
    for (size_t i = 0; i < items.size(); ++i) {
      out += (i ? sep : "") + nl;
      jsonString(out, items[i].first, o.ensureAscii);
      out += keySep;
      dumps(out, *items[i].second, o, depth + 1);
    }
    out += close + "}";
  } else if (j.is_string()) {
    jsonString(out, j.get_ref<const std::string &>(), o.ensureAscii);
  } else if (j.is_number_float()) {
    const double d = j.get<double>();
    out += std::isnan(d)   ? "NaN"
           : std::isinf(d) ? (d < 0 ? "-Infinity" : "Infinity")
                           : pythonFloat(d);
  } else if (j.is_boolean()) {
    out += j.get<bool>() ? "true" : "false";
  } else if (j.is_null()) {
    out += "null";
  } else {
    out += j.dump();
  }
}

// ---------------------------------------------------------------------------
// Lexing: the template into text and tags, with jinja2's whitespace rules

struct Chunk {
  enum Kind { text, output, statement } kind;
  std::string body;
  int line;
};

bool isSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/// Where the tag opened at `from` closes ("}}", "%}" or "#}"), skipping
/// quoted strings and, as jinja2's lexer does, what brackets hold: the
/// "}}" of `{{ f({'a': {'b': 1}}) }}` closes two dicts, not the tag.
/// Brackets that do not pair up are left to the parser: `{{ x[ }}` ends at
/// its "}}" and is told what is missing. npos when the tag does not close.
size_t tagEnd(const std::string &src, size_t from, char closer) {
  char quote = 0;
  std::string open; // the brackets' closers, innermost last
  for (size_t i = from; i + 1 < src.size(); ++i) {
    const char c = src[i];
    if (quote) {
      if (c == '\\')
        ++i;
      else if (c == quote)
        quote = 0;
    } else if (closer == '#') {
      if (c == '#' && src[i + 1] == '}') return i;
    } else if (c == '\'' || c == '"') {
      quote = c;
    } else if (c == '(' || c == '[' || c == '{') {
      open += c == '(' ? ')' : c == '[' ? ']' : '}';
    } else if (!open.empty() && c == open.back()) {
      open.pop_back();
    } else {
      if (c == ')' || c == ']' || c == '}') open.clear(); // unbalanced: the parser says how
      if (c == closer && src[i + 1] == '}') return i;
    }
  }
  return std::string::npos;
}

int lineAt(const std::string &src, size_t pos) {
  return 1 + int(std::count(src.begin(), src.begin() + std::min(pos, src.size()), '\n'));
}

/// lstrip_blocks: the spaces between the line's start and a block tag go.
void lstripLine(std::string &text, bool lineStarting) {
  const size_t lastNl = text.rfind('\n');
  const size_t from = lastNl == std::string::npos ? 0 : lastNl + 1;
  if (from == 0 && !lineStarting) return;
  if (from < text.size() &&
      std::all_of(text.begin() + from, text.end(), [](char c) { return isSpace(c); }))
    text.erase(from);
}

std::vector<Chunk> lex(const std::string &src, const std::string &origin) {
  std::vector<Chunk> out;
  size_t pos = 0;
  bool lineStarting = true;
  while (pos < src.size()) {
    size_t open = src.find('{', pos);
    while (open != std::string::npos && open + 1 < src.size() && src[open + 1] != '{' &&
           src[open + 1] != '%' && src[open + 1] != '#')
      open = src.find('{', open + 1);
    if (open == std::string::npos || open + 1 >= src.size()) {
      out.push_back({Chunk::text, src.substr(pos), lineAt(src, pos)});
      break;
    }
    const char kind = src[open + 1];
    const char closer = kind == '{' ? '}' : kind;
    const char mod = open + 2 < src.size() ? src[open + 2] : 0;
    std::string text = src.substr(pos, open - pos);
    if (mod == '-') {
      while (!text.empty() && isSpace(text.back())) text.pop_back();
    } else if (kind != '{' && mod != '+') {
      lstripLine(text, lineStarting);
    }
    if (!text.empty()) out.push_back({Chunk::text, text, lineAt(src, pos)});
    const size_t bodyStart = open + 2 + (mod == '-' || mod == '+' ? 1 : 0);
    const size_t end = tagEnd(src, bodyStart, closer);
    if (end == std::string::npos)
      throw InputError(origin + ": line " + std::to_string(lineAt(src, open)) + ": the tag '{" +
                       kind + "' is never closed with '" + closer + "}'");
    std::string body = src.substr(bodyStart, end - bodyStart);
    const char endMod = body.empty() ? 0 : body.back();
    if (endMod == '-' || endMod == '+') body.pop_back();
    if (kind != '#')
      out.push_back({kind == '{' ? Chunk::output : Chunk::statement, body, lineAt(src, open)});
    pos = end + 2;
    if (endMod == '-') {
      while (pos < src.size() && isSpace(src[pos])) ++pos;
    } else if (kind != '{' && endMod != '+' && pos < src.size() && src[pos] == '\n') {
      ++pos; // trim_blocks
    }
    lineStarting = pos > 0 && src[pos - 1] == '\n';
  }
  return out;
}

// ---------------------------------------------------------------------------
// Tokens of an expression or a statement

struct Token {
  enum Kind { name, string, integer, real, op, end } kind;
  std::string text;
  Json value;
};

bool isNameStart(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool isNameChar(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

/// A Python string literal's value (the quote at `i`); `i` ends past it.
std::string readString(const std::string &s, size_t &i) {
  const char q = s[i++];
  std::string out;
  while (i < s.size() && s[i] != q) {
    char c = s[i++];
    if (c != '\\' || i >= s.size()) {
      out += c;
      continue;
    }
    c = s[i++];
    switch (c) {
    case 'n': out += '\n'; break;
    case 't': out += '\t'; break;
    case 'r': out += '\r'; break;
    case '0': out += '\0'; break;
    case '\n': break;
    case 'u':
    case 'x': {
      const size_t n = c == 'u' ? 4 : 2;
      const unsigned long cp = std::stoul(s.substr(i, n), nullptr, 16);
      i += n;
      if (cp < 0x80)
        out += char(cp);
      else if (cp < 0x800)
        out += char(0xC0 | (cp >> 6)), out += char(0x80 | (cp & 0x3F));
      else
        out += char(0xE0 | (cp >> 12)), out += char(0x80 | ((cp >> 6) & 0x3F)),
            out += char(0x80 | (cp & 0x3F));
      break;
    }
    default:
      if (c != q && c != '\\' && c != '\'' && c != '"') out += '\\';
      out += c;
    }
  }
  if (i >= s.size()) throw std::invalid_argument("a string is not closed");
  ++i;
  return out;
}

std::vector<Token> tokenize(const std::string &s) {
  static const char *const ops[] = {"**", "//", "==", "!=", "<=", ">=", "(", ")", "[",
                                    "]",  "{",  "}",  ",",  ".",  ":",  "|", "~", "+",
                                    "-",  "*",  "/",  "%",  "<",  ">",  "="};
  std::vector<Token> out;
  size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    if (isSpace(c)) {
      ++i;
    } else if (isNameStart(c)) {
      size_t j = i;
      while (j < s.size() && isNameChar(s[j])) ++j;
      out.push_back({Token::name, s.substr(i, j - i), {}});
      i = j;
    } else if (c == '\'' || c == '"') {
      std::string v = readString(s, i);
      out.push_back({Token::string, v, Json(v)});
    } else if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t j = i;
      while (j < s.size() && (std::isdigit(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      auto digit = [&](size_t k) {
        return k < s.size() && std::isdigit(static_cast<unsigned char>(s[k]));
      };
      bool real = s[j] == '.' && digit(j + 1);
      if (real) {
        ++j;
        while (digit(j)) ++j;
      }
      const size_t sign = j + 1 < s.size() && (s[j + 1] == '-' || s[j + 1] == '+') ? 1 : 0;
      if (j < s.size() && (s[j] == 'e' || s[j] == 'E') && digit(j + 1 + sign)) {
        real = true;
        j += 1 + sign;
        while (digit(j)) ++j;
      }
      std::string num = s.substr(i, j - i);
      num.erase(std::remove(num.begin(), num.end(), '_'), num.end());
      out.push_back({real ? Token::real : Token::integer, num,
                     real ? Json(std::stod(num)) : Json(std::stoll(num))});
      i = j;
    } else {
      const char *found = nullptr;
      for (const char *op : ops)
        if (s.compare(i, std::strlen(op), op) == 0) {
          found = op;
          break;
        }
      if (!found) throw std::invalid_argument(std::string("unexpected character '") + c + "'");
      out.push_back({Token::op, found, {}});
      i += std::strlen(found);
    }
  }
  out.push_back({Token::end, "", {}});
  return out;
}

/// How deep blocks and expressions may nest (the parser and the renderer
/// recurse as deep).
constexpr int kMaxNesting = 100;

// ---------------------------------------------------------------------------
// The tree

struct Expr;
using ExprP = std::shared_ptr<const Expr>;

struct Expr {
  enum Kind {
    literal,
    variable,
    attr,
    item,
    slice,
    call,
    filter,
    test,
    negate,
    minus,
    binary,
    cond,
    list,
    dict
  } kind;
  std::string name;        // a name, attribute, operator, filter or test
  Json value;              // literal
  std::vector<ExprP> args; // the operand first (attr, item, slice, call's callee, filter, test)
  std::vector<std::pair<std::string, ExprP>> kwargs;
  int line = 0;
};

struct Node;
using Body = std::vector<std::shared_ptr<const Node>>;

struct Node {
  enum Kind {
    plainText,
    output,
    branch,
    loop,
    set,
    setBlock,
    macro,
    breakLoop,
    continueLoop,
    block
  } kind;
  std::string text;              // text; set's target; a macro's name
  std::string attr;              // set ns.attr = ...
  std::vector<std::string> vars; // for's targets; set's unpacked targets; a macro's parameters
  std::vector<ExprP> defaults;   // a macro's parameters' defaults (null: none)
  ExprP expr;                    // output; for's iterable; set's value
  ExprP filter;                  // for ... if filter
  std::vector<std::pair<ExprP, Body>> branches; // if, elif..., else (null condition)
  Body body, elseBody;
  int line = 0;
};

// ---------------------------------------------------------------------------
// Parsing

class ExprParser {
public:
  ExprParser(std::vector<Token> tokens, int line) : toks(std::move(tokens)), line(line) {}

  const Token &peek(size_t ahead = 0) const { return toks[std::min(at + ahead, toks.size() - 1)]; }
  bool isOp(const char *op, size_t ahead = 0) const {
    return peek(ahead).kind == Token::op && peek(ahead).text == op;
  }
  bool isName(const char *n, size_t ahead = 0) const {
    return peek(ahead).kind == Token::name && peek(ahead).text == n;
  }
  bool acceptOp(const char *op) { return isOp(op) ? (++at, true) : false; }
  bool acceptName(const char *n) { return isName(n) ? (++at, true) : false; }
  /// The first of `ops` that comes next (taken), or null.
  const char *acceptAny(std::initializer_list<const char *> ops) {
    for (const char *o : ops)
      if (acceptOp(o)) return o;
    return nullptr;
  }
  bool done() const { return peek().kind == Token::end; }
  void expectOp(const char *op) {
    if (!acceptOp(op)) fail(std::string("expected '") + op + "'");
  }
  std::string expectName() {
    if (peek().kind != Token::name) fail("expected a name");
    return toks[at++].text;
  }
  [[noreturn]] void fail(const std::string &what) const {
    const Token &t = peek();
    throw std::invalid_argument(
        what + (t.kind == Token::end ? " at the end of the tag" : ", found '" + t.text + "'"));
  }

  ExprP expression(bool withCond = true) {
    const Nested guard(*this);
    ExprP e = orExpr();
    while (withCond && acceptName("if")) {
      ExprP c = orExpr();
      ExprP otherwise = acceptName("else") ? expression() : nullptr;
      e = make(Expr::cond, "", {e, c, otherwise});
    }
    return e;
  }
  /// An expression, or several with commas between them (a tuple, as a list).
  ExprP tuple(bool withCond = true) {
    ExprP first = expression(withCond);
    if (!isOp(",")) return first;
    std::vector<ExprP> items = {first};
    while (acceptOp(",") && !done() && !isName("if")) items.push_back(expression(withCond));
    return make(Expr::list, "", items);
  }

private:
  std::vector<Token> toks;
  size_t at = 0;
  int line;
  int depth = 0;

  /// Counts one level of the parser's recursion; too deep a template is
  /// refused before it can exhaust the stack.
  struct Nested {
    ExprParser &p;
    explicit Nested(ExprParser &p) : p(p) {
      if (++p.depth > kMaxNesting) p.fail("the expression nests too deep");
    }
    ~Nested() { --p.depth; }
  };

  ExprP make(Expr::Kind k, std::string name, std::vector<ExprP> args = {}) const {
    auto e = std::make_shared<Expr>();
    e->kind = k;
    e->name = std::move(name);
    e->args = std::move(args);
    e->line = line;
    return e;
  }
  ExprP literal(Json v) const {
    auto e = std::make_shared<Expr>();
    e->kind = Expr::literal;
    e->value = std::move(v);
    e->line = line;
    return e;
  }

  /// Operands of `next` joined, left to right, by any of `ops` (names such
  /// as "and", or symbols).
  ExprP leftToRight(ExprP (ExprParser::*next)(), std::initializer_list<const char *> ops) {
    ExprP l = (this->*next)();
    for (;;) {
      const char *op = nullptr;
      for (const char *o : ops)
        if (std::isalpha(static_cast<unsigned char>(*o)) ? acceptName(o) : acceptOp(o)) {
          op = o;
          break;
        }
      if (!op) return l;
      l = make(Expr::binary, op, {l, (this->*next)()});
    }
  }
  ExprP orExpr() { return leftToRight(&ExprParser::andExpr, {"or"}); }
  ExprP andExpr() { return leftToRight(&ExprParser::notExpr, {"and"}); }
  ExprP notExpr() {
    const Nested guard(*this);
    if (acceptName("not")) return make(Expr::negate, "", {notExpr()});
    return compare();
  }
  ExprP compare() {
    ExprP l = math1();
    for (;;) {
      const char *symbol = acceptAny({"==", "!=", "<=", ">=", "<", ">"});
      std::string op = symbol ? symbol : "";
      if (op.empty() && acceptName("in")) op = "in";
      if (op.empty() && isName("not") && isName("in", 1)) at += 2, op = "not in";
      if (op.empty()) return l;
      l = make(Expr::binary, op, {l, math1()});
    }
  }
  ExprP math1() { return leftToRight(&ExprParser::concat, {"+", "-"}); }
  ExprP concat() { return leftToRight(&ExprParser::math2, {"~"}); }
  ExprP math2() { return leftToRight(&ExprParser::power, {"//", "/", "*", "%"}); }
  ExprP power() { return leftToRight(&ExprParser::filtered, {"**"}); }
  ExprP filtered() { return unary(true); }
  ExprP unary(bool withFilter) {
    const Nested guard(*this);
    ExprP e;
    if (acceptOp("-"))
      e = make(Expr::minus, "", {unary(false)});
    else if (acceptOp("+"))
      e = unary(false);
    else
      e = primary();
    e = postfix(e);
    return withFilter ? filters(e) : e;
  }

  ExprP primary() {
    const Token t = peek();
    if (t.kind == Token::name) {
      ++at;
      if (t.text == "true" || t.text == "True") return literal(true);
      if (t.text == "false" || t.text == "False") return literal(false);
      if (t.text == "none" || t.text == "None") return literal(nullptr);
      return make(Expr::variable, t.text);
    }
    if (t.kind == Token::string) {
      std::string s;
      while (peek().kind == Token::string) s += toks[at++].text;
      return literal(s);
    }
    if (t.kind == Token::integer || t.kind == Token::real) return ++at, literal(t.value);
    if (acceptOp("(")) {
      if (acceptOp(")")) return make(Expr::list, "");
      ExprP e = tuple();
      expectOp(")");
      return e;
    }
    if (acceptOp("[")) {
      std::vector<ExprP> items;
      while (!acceptOp("]")) {
        if (!items.empty()) expectOp(",");
        if (acceptOp("]")) break;
        items.push_back(expression());
      }
      return make(Expr::list, "", items);
    }
    if (acceptOp("{")) {
      std::vector<ExprP> items;
      while (!acceptOp("}")) {
        if (!items.empty()) expectOp(",");
        if (acceptOp("}")) break;
        items.push_back(expression());
        expectOp(":");
        items.push_back(expression());
      }
      return make(Expr::dict, "", items);
    }
    fail("expected a value");
  }

  ExprP postfix(ExprP e) {
    for (;;) {
      if (acceptOp(".")) {
        if (peek().kind == Token::integer) {
          e = make(Expr::item, "", {e, literal(toks[at++].value)});
        } else {
          e = make(Expr::attr, expectName(), {e});
        }
      } else if (acceptOp("[")) {
        e = subscript(e);
      } else if (isOp("(")) {
        e = call(make(Expr::call, "", {e}));
      } else {
        return e;
      }
    }
  }
  ExprP subscript(ExprP e) {
    std::vector<ExprP> parts = {e};
    parts.push_back(isOp(":") ? nullptr : expression());
    if (acceptOp("]")) return make(Expr::item, "", parts);
    for (int i = 0; i < 2 && acceptOp(":"); ++i)
      parts.push_back(isOp(":") || isOp("]") ? nullptr : expression());
    while (parts.size() < 4) parts.push_back(nullptr);
    expectOp("]");
    return make(Expr::slice, "", parts);
  }
  /// The arguments in parentheses, added to `e`'s.
  ExprP call(ExprP e) {
    auto c = std::make_shared<Expr>(*e);
    expectOp("(");
    while (!acceptOp(")")) {
      if (peek().kind == Token::name && isOp("=", 1)) {
        std::string k = expectName();
        ++at;
        c->kwargs.emplace_back(k, expression());
      } else {
        c->args.push_back(expression());
      }
      if (!isOp(")")) expectOp(",");
    }
    return c;
  }
  ExprP filters(ExprP e) {
    for (;;) {
      if (acceptOp("|")) {
        std::string name = expectName();
        while (acceptOp(".")) name += "." + expectName();
        e = make(Expr::filter, name, {e});
        if (isOp("(")) e = call(e);
      } else if (acceptName("is")) {
        const bool negated = acceptName("not");
        e = make(Expr::test, expectName(), {e});
        if (isOp("(")) {
          e = call(e);
        } else if ((peek().kind == Token::name || peek().kind == Token::string ||
                    peek().kind == Token::integer || peek().kind == Token::real || isOp("[") ||
                    isOp("{")) &&
                   !isName("else") && !isName("or") && !isName("and")) {
          auto t = std::make_shared<Expr>(*e);
          t->args.push_back(postfix(primary()));
          e = t;
        }
        if (negated) e = make(Expr::negate, "", {e});
      } else {
        return e;
      }
    }
  }
};

/// The statements of a template, from its chunks.
class Parser {
public:
  Parser(std::vector<Chunk> chunks, std::string origin)
      : chunks(std::move(chunks)), origin(std::move(origin)) {}

  Body parseTemplate() {
    std::string endedBy;
    Body b = body({}, endedBy);
    return b;
  }

private:
  std::vector<Chunk> chunks;
  std::string origin;
  size_t at = 0;
  int line = 0;
  int depth = 0; // blocks open

  [[noreturn]] void fail(const std::string &what) const {
    throw InputError(origin + ": line " + std::to_string(line) + ": " + what);
  }

  /// The statements up to one of `ends` (its tag's parser left in `last`),
  /// or to the template's end when `ends` is empty.
  Body body(const std::vector<std::string> &ends, std::string &endedBy,
            std::unique_ptr<ExprParser> *last = nullptr) {
    const int opened = line; // the block's tag
    Body out;
    while (at < chunks.size()) {
      const Chunk &c = chunks[at++];
      line = c.line;
      if (c.kind == Chunk::text) {
        auto n = std::make_shared<Node>();
        n->kind = Node::plainText;
        n->text = c.body;
        out.push_back(n);
        continue;
      }
      auto p = std::make_unique<ExprParser>(tokens(c.body), c.line);
      if (c.kind == Chunk::output) {
        auto n = std::make_shared<Node>();
        n->kind = Node::output;
        n->line = c.line;
        n->expr = guarded([&] { return p->tuple(); });
        if (!p->done())
          guarded([&] {
            p->fail("expected '}}'");
            return nullptr;
          });
        out.push_back(n);
        continue;
      }
      const std::string keyword = p->peek().kind == Token::name ? p->peek().text : "";
      if (std::find(ends.begin(), ends.end(), keyword) != ends.end()) {
        endedBy = keyword;
        guarded([&] { return p->expectName(), nullptr; });
        if (last)
          *last = std::move(p);
        else if (!p->done())
          guarded([&] {
            p->fail("expected '%}'");
            return nullptr;
          });
        return out;
      }
      out.push_back(statement(keyword, *p));
    }
    if (!ends.empty()) {
      line = opened;
      fail("the template ends inside a block: '{% " + ends.back() + " %}' is missing");
    }
    return out;
  }

  std::vector<Token> tokens(const std::string &body) {
    try {
      return tokenize(body);
    } catch (const std::exception &e) {
      fail(e.what());
    }
  }
  template <class F> auto guarded(F &&f) -> decltype(f()) {
    try {
      return f();
    } catch (const std::logic_error &e) {
      fail(e.what());
    }
  }

  std::shared_ptr<Node> statement(const std::string &keyword, ExprParser &p) {
    if (++depth > kMaxNesting)
      fail("blocks nest more than " + std::to_string(kMaxNesting) + " deep");
    struct Leave {
      int &d;
      ~Leave() { --d; }
    } leave{depth};
    auto n = std::make_shared<Node>();
    n->line = line;
    guarded([&] { return p.expectName(), nullptr; });
    if (keyword == "if")
      parseIf(*n, p);
    else if (keyword == "for")
      parseFor(*n, p);
    else if (keyword == "set")
      parseSet(*n, p);
    else if (keyword == "macro")
      parseMacro(*n, p);
    else if (keyword == "break")
      n->kind = Node::breakLoop;
    else if (keyword == "continue")
      n->kind = Node::continueLoop;
    else if (keyword == "generation") {
      n->kind = Node::block;
      std::string endedBy;
      n->body = body({"endgeneration"}, endedBy);
    } else if (keyword == "extends" || keyword == "include" || keyword == "import" ||
               keyword == "from" || keyword == "block" || keyword == "call" ||
               keyword == "filter" || keyword == "raw" || keyword == "with" ||
               keyword == "autoescape")
      fail("'{% " + keyword + " %}' is not something kvplan renders in a chat template");
    else
      fail("unknown statement '" + keyword + "'");
    if (!p.done())
      guarded([&] {
        p.fail("expected '%}'");
        return nullptr;
      });
    return n;
  }

  void parseIf(Node &n, ExprParser &p) {
    n.kind = Node::branch;
    ExprP cond = guarded([&] { return p.expression(); });
    for (;;) {
      if (!p.done())
        guarded([&] {
          p.fail("expected '%}'");
          return nullptr;
        });
      std::string endedBy;
      std::unique_ptr<ExprParser> next;
      Body b = body({"elif", "else", "endif"}, endedBy, &next);
      n.branches.emplace_back(cond, std::move(b));
      if (endedBy == "endif") {
        checkEnd(*next);
        return;
      }
      if (endedBy == "else") {
        checkEnd(*next);
        Body e = body({"endif"}, endedBy);
        n.branches.emplace_back(nullptr, std::move(e));
        return;
      }
      cond = guarded([&] { return next->expression(); });
      checkEnd(*next);
    }
  }
  void checkEnd(ExprParser &p) {
    if (!p.done())
      guarded([&] {
        p.fail("expected '%}'");
        return nullptr;
      });
  }

  void parseFor(Node &n, ExprParser &p) {
    n.kind = Node::loop;
    const bool paren = p.acceptOp("(");
    do n.vars.push_back(guarded([&] { return p.expectName(); }));
    while (p.acceptOp(","));
    if (paren) guarded([&] { return p.expectOp(")"), nullptr; });
    if (!p.acceptName("in"))
      guarded([&] {
        p.fail("expected 'in'");
        return nullptr;
      });
    n.expr = guarded([&] { return p.tuple(false); });
    if (p.acceptName("if")) n.filter = guarded([&] { return p.expression(false); });
    if (p.isName("recursive")) fail("recursive loops are not something kvplan renders");
    checkEnd(p);
    std::string endedBy;
    std::unique_ptr<ExprParser> next;
    n.body = body({"else", "endfor"}, endedBy, &next);
    checkEnd(*next);
    if (endedBy == "else") n.elseBody = body({"endfor"}, endedBy);
  }

  void parseSet(Node &n, ExprParser &p) {
    n.kind = Node::set;
    n.text = guarded([&] { return p.expectName(); });
    if (p.acceptOp(".")) n.attr = guarded([&] { return p.expectName(); });
    while (p.acceptOp(",")) n.vars.push_back(guarded([&] { return p.expectName(); }));
    if (!n.vars.empty()) n.vars.insert(n.vars.begin(), n.text);
    if (p.acceptOp("=")) {
      n.expr = guarded([&] { return p.tuple(); });
      return;
    }
    if (!n.vars.empty() || !n.attr.empty()) fail("a block '{% set %}' takes one name");
    checkEnd(p);
    n.kind = Node::setBlock;
    std::string endedBy;
    n.body = body({"endset"}, endedBy);
  }

  void parseMacro(Node &n, ExprParser &p) {
    n.kind = Node::macro;
    n.text = guarded([&] { return p.expectName(); });
    guarded([&] { return p.expectOp("("), nullptr; });
    while (!p.acceptOp(")")) {
      n.vars.push_back(guarded([&] { return p.expectName(); }));
      n.defaults.push_back(p.acceptOp("=") ? guarded([&] { return p.expression(); }) : nullptr);
      if (!p.isOp(")")) guarded([&] { return p.expectOp(","), nullptr; });
    }
    checkEnd(p);
    std::string endedBy;
    n.body = body({"endmacro"}, endedBy);
  }
};

// ---------------------------------------------------------------------------
// Python's strings, by code point

std::vector<size_t> codePoints(const std::string &s) {
  std::vector<size_t> at;
  for (size_t i = 0; i < s.size(); ++i)
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) at.push_back(i);
  at.push_back(s.size());
  return at;
}

/// Python's [start:stop:step] over `n` items: the indices taken.
std::vector<int64_t> sliceIndices(int64_t n, std::optional<int64_t> start,
                                  std::optional<int64_t> stop, int64_t step) {
  if (step == 0) throw std::invalid_argument("slice step cannot be zero");
  auto clamp = [&](int64_t i, int64_t lo, int64_t hi) {
    if (i < 0) i += n;
    return std::max(lo, std::min(hi, i));
  };
  std::vector<int64_t> out;
  if (step > 0) {
    const int64_t a = start ? clamp(*start, 0, n) : 0, b = stop ? clamp(*stop, 0, n) : n;
    for (int64_t i = a; i < b; i += step) out.push_back(i);
  } else {
    const int64_t a = start ? clamp(*start, -1, n - 1) : n - 1;
    const int64_t b = stop ? clamp(*stop, -1, n - 1) : -1;
    for (int64_t i = a; i > b; i += step) out.push_back(i);
  }
  return out;
}

bool isStripped(char c, const std::string *chars) {
  return chars ? chars->find(c) != std::string::npos : isSpace(c);
}

std::string strip(const std::string &s, bool left, bool right, const std::string *chars) {
  size_t a = 0, b = s.size();
  while (left && a < b && isStripped(s[a], chars)) ++a;
  while (right && b > a && isStripped(s[b - 1], chars)) --b;
  return s.substr(a, b - a);
}

std::vector<std::string> split(const std::string &s, const std::string *sep, int64_t maxSplit) {
  std::vector<std::string> out;
  if (!sep) { // on runs of whitespace, none empty
    size_t i = 0;
    while (i < s.size()) {
      while (i < s.size() && isSpace(s[i])) ++i;
      if (i >= s.size()) break;
      size_t j = i;
      if (maxSplit >= 0 && int64_t(out.size()) == maxSplit) j = s.size();
      while (j < s.size() && !isSpace(s[j])) ++j;
      out.push_back(maxSplit >= 0 && int64_t(out.size()) == maxSplit
                        ? strip(s.substr(i), false, true, nullptr)
                        : s.substr(i, j - i));
      i = j;
    }
    return out;
  }
  if (sep->empty()) throw std::invalid_argument("empty separator");
  size_t from = 0;
  for (;;) {
    const size_t at = s.find(*sep, from);
    if (at == std::string::npos || (maxSplit >= 0 && int64_t(out.size()) == maxSplit)) break;
    out.push_back(s.substr(from, at - from));
    from = at + sep->size();
  }
  out.push_back(s.substr(from));
  return out;
}

/// The most bytes a string the template builds may hold (as its output).
constexpr size_t kMaxString = size_t(64) << 20;

/// `out` += `add`, refusing a string past kMaxString.
void append(std::string &out, const std::string &add) {
  if (out.size() + add.size() > kMaxString)
    throw std::invalid_argument("the template builds a string over 64 MiB");
  out += add;
}

std::string replaceAll(const std::string &s, const std::string &from, const std::string &to,
                       int64_t count) {
  if (from.empty()) return s;
  std::string out;
  size_t at = 0, next;
  for (int64_t n = 0; (count < 0 || n < count) && (next = s.find(from, at)) != std::string::npos;
       ++n) {
    append(out, s.substr(at, next - at));
    append(out, to);
    at = next + from.size();
  }
  append(out, s.substr(at));
  return out;
}

std::string asciiCase(std::string s, bool upper) {
  for (char &c : s)
    c = char(upper ? std::toupper(static_cast<unsigned char>(c))
                   : std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string capitalize(const std::string &s) {
  const size_t first = std::min<size_t>(1, s.size());
  return asciiCase(s.substr(0, first), true) + asciiCase(s.substr(first), false);
}

std::vector<std::string> splitLines(const std::string &s) {
  std::vector<std::string> out;
  std::string cur;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\n' || s[i] == '\r') {
      out.push_back(cur);
      cur.clear();
      if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
    } else {
      cur += s[i];
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

std::string titleCase(std::string s) {
  bool start = true;
  for (char &c : s) {
    const unsigned char u = static_cast<unsigned char>(c);
    c = char(start ? std::toupper(u) : std::tolower(u));
    start = !std::isalpha(u);
  }
  return s;
}

std::string typeName(const Value &v) {
  if (!v.defined()) return "undefined";
  if (v.kind == Value::Kind::function) return "function";
  if (v.kind == Value::Kind::space) return "namespace";
  switch (v.data.type()) {
  case Json::value_t::null: return "none";
  case Json::value_t::boolean: return "bool";
  case Json::value_t::number_integer:
  case Json::value_t::number_unsigned: return "int";
  case Json::value_t::number_float: return "float";
  case Json::value_t::string: return "str";
  case Json::value_t::array: return "list";
  case Json::value_t::object: return "dict";
  default: return "value";
  }
}

bool isNumber(const Value &v) { return v.isData() && v.data.is_number(); }
bool isInt(const Value &v) { return v.isData() && v.data.is_number_integer(); }
bool isString(const Value &v) { return v.isData() && v.data.is_string(); }
const std::string &text(const Value &v) { return v.data.get_ref<const std::string &>(); }

/// The Python-visible length: code points of a string, items of a list or dict.
int64_t length(const Value &v) {
  if (isString(v)) return int64_t(codePoints(text(v)).size()) - 1;
  if (v.json().is_array() || v.json().is_object()) return int64_t(v.json().size());
  throw std::invalid_argument(typeName(v) + " has no length");
}

/// What a for loop goes through: a list's items, a dict's keys, a string's
/// characters; nothing for undefined.
std::vector<Json> iterate(const Value &v) {
  std::vector<Json> out;
  if (!v.defined()) return out;
  const Json &j = v.json();
  if (j.is_array()) {
    out.assign(j.begin(), j.end());
  } else if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) out.push_back(it.key());
  } else if (j.is_string()) {
    const std::string &s = j.get_ref<const std::string &>();
    const std::vector<size_t> cp = codePoints(s);
    for (size_t i = 0; i + 1 < cp.size(); ++i) out.push_back(s.substr(cp[i], cp[i + 1] - cp[i]));
  } else {
    throw std::invalid_argument(typeName(v) + " cannot be iterated");
  }
  return out;
}

bool equal(const Value &a, const Value &b) {
  if (!a.defined() || !b.defined()) return a.defined() == b.defined();
  if (a.kind == Value::Kind::space || b.kind == Value::Kind::space) return a.space == b.space;
  return a.json() == b.json();
}

/// An attribute or item of `v` (jinja2 tries both); undefined when absent.
Value member(const Value &v, const Json &key) {
  const Json &j = v.json();
  if (!v.defined()) return {};
  if (j.is_object() && key.is_string()) {
    auto it = j.find(key.get<std::string>());
    return it == j.end() ? Value{} : Value::of(*it);
  }
  if ((j.is_array() || j.is_string()) && key.is_number_integer()) {
    int64_t i = key.get<int64_t>();
    const std::vector<size_t> cp =
        j.is_string() ? codePoints(j.get<std::string>()) : std::vector<size_t>();
    const int64_t n = j.is_array() ? int64_t(j.size()) : int64_t(cp.size()) - 1;
    if (i < 0) i += n;
    if (i < 0 || i >= n) return {};
    if (j.is_array()) return Value::of(j[size_t(i)]);
    const std::string &s = j.get_ref<const std::string &>();
    return Value::of(s.substr(cp[size_t(i)], cp[size_t(i) + 1] - cp[size_t(i)]));
  }
  return {};
}

/// Compares two numbers or two strings (<0, 0, >0).
int order(const Value &a, const Value &b) {
  if (isNumber(a) && isNumber(b)) {
    const double x = a.data.get<double>(), y = b.data.get<double>();
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (isString(a) && isString(b)) return text(a).compare(text(b));
  throw std::invalid_argument(typeName(a) + " and " + typeName(b) + " cannot be compared");
}

/// Integer + - * ** // % as Python's, where the result fits 64 bits.
Json integerArithmetic(const std::string &op, int64_t p, int64_t q) {
  int64_t r = 0;
  bool over = false;
  if (op == "+")
    over = __builtin_add_overflow(p, q, &r);
  else if (op == "-")
    over = __builtin_sub_overflow(p, q, &r);
  else if (op == "*")
    over = __builtin_mul_overflow(p, q, &r);
  else if (op == "**") {
    r = 1;
    if (p == 0 || p == 1)
      r = q == 0 ? 1 : p;
    else if (p == -1)
      r = q % 2 ? -1 : 1;
    else
      over = q > 64; // |p| >= 2: 2**64 already passes
    for (int64_t i = 0; i < q && !over && (p < -1 || p > 1); ++i)
      over = __builtin_mul_overflow(r, p, &r);
  } else {
    if (p == INT64_MIN && q == -1)
      over = true;
    else {
      int64_t d = p / q, m = p % q;
      if (m != 0 && ((m < 0) != (q < 0))) --d, m += q; // Python floors
      r = op == "//" ? d : m;
    }
  }
  if (over) throw std::invalid_argument("the integer result of '" + op + "' passes 64 bits");
  return r;
}

Json arithmetic(const std::string &op, const Value &a, const Value &b) {
  if (!isNumber(a) || !isNumber(b))
    throw std::invalid_argument("'" + op + "' does not apply to " + typeName(a) + " and " +
                                typeName(b));
  const bool ints = isInt(a) && isInt(b);
  const double x = a.data.get<double>(), y = b.data.get<double>();
  const bool division = op == "/" || op == "//" || op == "%";
  if (division && y == 0) throw std::invalid_argument("division by zero");
  if (ints && op != "/" && !(op == "**" && y < 0))
    return integerArithmetic(op, a.data.get<int64_t>(), b.data.get<int64_t>());
  if (op == "+") return x + y;
  if (op == "-") return x - y;
  if (op == "*") return x * y;
  if (op == "**") return std::pow(x, y);
  if (op == "/") return x / y;
  const double d = std::floor(x / y);
  return op == "//" ? Json(d) : Json(x - d * y);
}

Value binary(const std::string &op, const Value &a, const Value &b) {
  if (op == "~") {
    std::string out = str(a);
    append(out, str(b));
    return Value::of(std::move(out));
  }
  if (op == "==") return Value::of(equal(a, b));
  if (op == "!=") return Value::of(!equal(a, b));
  if (op == "<") return Value::of(order(a, b) < 0);
  if (op == "<=") return Value::of(order(a, b) <= 0);
  if (op == ">") return Value::of(order(a, b) > 0);
  if (op == ">=") return Value::of(order(a, b) >= 0);
  if (op == "in" || op == "not in") {
    bool found = false;
    const Json &r = b.json();
    if (r.is_string()) {
      if (!isString(a)) throw std::invalid_argument("'in <string>' needs a string on its left");
      found = r.get_ref<const std::string &>().find(text(a)) != std::string::npos;
    } else if (r.is_array()) {
      found =
          std::any_of(r.begin(), r.end(), [&](const Json &x) { return equal(a, Value::of(x)); });
    } else if (r.is_object()) {
      found = isString(a) && r.contains(text(a));
    } else if (b.defined()) {
      throw std::invalid_argument("'in' does not apply to " + typeName(b));
    }
    return Value::of(op == "in" ? found : !found);
  }
  if (op == "+" && isString(a) && isString(b)) {
    std::string out = text(a);
    append(out, text(b));
    return Value::of(std::move(out));
  }
  if (op == "+" && a.json().is_array() && b.json().is_array()) {
    Json out = a.json();
    for (const Json &x : b.json()) out.push_back(x);
    return Value::of(out);
  }
  if (op == "*" && (isString(a) || isString(b)) && (isInt(a) || isInt(b))) {
    const std::string &s = isString(a) ? text(a) : text(b);
    std::string out;
    for (int64_t i = 0, n = (isInt(a) ? a : b).data.get<int64_t>(); i < n && !s.empty(); ++i)
      append(out, s);
    return Value::of(out);
  }
  return Value::of(arithmetic(op, a, b));
}

// ---------------------------------------------------------------------------
// Rendering

/// A call's arguments, evaluated.
struct Args {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> named;

  /// The argument at `index`, or the one named `name`; null when neither.
  const Value *get(size_t index, const char *name) const {
    for (const auto &[k, v] : named)
      if (k == name) return &v;
    return index < positional.size() ? &positional[index] : nullptr;
  }
  std::string string(size_t index, const char *name, const std::string &otherwise) const {
    const Value *v = get(index, name);
    if (!v || !v->defined()) return otherwise;
    if (!isString(*v)) throw std::invalid_argument(std::string(name) + " must be a string");
    return text(*v);
  }
  int64_t integer(size_t index, const char *name, int64_t otherwise) const {
    const Value *v = get(index, name);
    if (!v || !v->defined() || v->json().is_null()) return otherwise;
    if (!isInt(*v)) throw std::invalid_argument(std::string(name) + " must be an integer");
    return v->data.get<int64_t>();
  }
  bool flag(size_t index, const char *name, bool otherwise) const {
    const Value *v = get(index, name);
    return v && v->defined() ? truthy(*v) : otherwise;
  }
};

/// transformers' tojson: json.dumps(x, ensure_ascii=False, indent=None,
/// separators=None, sort_keys=False), in that order.
Value tojsonFilter(const Value &v, const Args &a) {
  if (!v.defined()) throw std::invalid_argument("tojson of an undefined value");
  PythonJsonOptions o;
  o.ensureAscii = a.flag(0, "ensure_ascii", false);
  const Value *indent = a.get(1, "indent");
  if (indent && indent->defined() && !indent->json().is_null()) {
    const Json &i = indent->json();
    if (i.is_string() && i.get_ref<const std::string &>().size() <= 64) {
      o.indentText = i.get<std::string>(); // used as is, a level
    } else if (isInt(*indent) && indent->data.get<int64_t>() <= 64) {
      o.indent = int(std::max<int64_t>(indent->data.get<int64_t>(), 0)); // below 0: as 0
    } else {
      throw std::invalid_argument("tojson's indent must be a whole number up to 64 or a string "
                                  "of at most 64 bytes");
    }
  }
  const Value *sep = a.get(2, "separators");
  if (sep && sep->defined() && !sep->json().is_null()) {
    const Json &s = sep->json();
    if (!s.is_array() || s.size() != 2 || !s[0].is_string() || !s[1].is_string())
      throw std::invalid_argument("tojson's separators must be two strings (item, key)");
    o.itemSeparator = s[0].get<std::string>();
    o.keySeparator = s[1].get<std::string>();
  }
  o.sortKeys = a.flag(3, "sort_keys", false);
  return Value::of(pythonJsonDumps(v.json(), o));
}

enum class Flow { normal, breakLoop, continueLoop };

class Renderer {
public:
  Renderer(const std::string &origin, const Json &context) : origin(origin) {
    scopes.emplace_back();
    for (auto it = context.begin(); it != context.end(); ++it)
      scopes.back()[it.key()] = Value::of(it.value());
  }

  /// `v`, a value the template has just built, counted against the
  /// renderer's budget: its nodes (and a string's bytes, by the 1024) add to
  /// the work done, at most 4 million; it nests at most 512 deep, and a
  /// string holds at most 64 MiB. So a template that doubles a list or a
  /// string in a loop stops with an error rather than the memory, and no
  /// value nests deeper than the stack allows.
  Value built(Value v) {
    std::vector<std::pair<const Json *, int>> stack = {{&v.json(), 1}};
    while (!stack.empty()) {
      const auto [j, d] = stack.back();
      stack.pop_back();
      if (d > 512) throw std::invalid_argument("the template builds a value more than 512 deep");
      if (j->is_string() && j->get_ref<const std::string &>().size() > kMaxString)
        throw std::invalid_argument("the template builds a string over 64 MiB");
      work += 1 + (j->is_string() ? int64_t(j->get_ref<const std::string &>().size() / 1024) : 0);
      if (work > 4'000'000)
        throw std::invalid_argument("the template builds more than 4 million values");
      if (j->is_structured())
        for (const Json &c : *j) stack.emplace_back(&c, d + 1);
    }
    return v;
  }

  Flow exec(const Body &body, std::string &out) {
    for (const auto &n : body) {
      line = n->line ? n->line : line;
      const Flow f = execOne(*n, out);
      if (f != Flow::normal) return f;
      if (out.size() > kMaxString) fail("the output passes 64 MiB");
    }
    return Flow::normal;
  }

private:
  const std::string &origin;
  std::vector<std::map<std::string, Value>> scopes;
  std::map<std::string, const Node *> macros;
  int line = 0, depth = 0;
  int64_t steps = 0, work = 0, evaluations = 0;

  [[noreturn]] void fail(const std::string &what) const {
    throw JinjaError(origin + ": line " + std::to_string(line) + ": " + what, false);
  }

  Value lookup(const std::string &name) const {
    for (auto s = scopes.rbegin(); s != scopes.rend(); ++s) {
      auto it = s->find(name);
      if (it != s->end()) return it->second;
    }
    static const char *const globals[] = {"range", "namespace", "dict", "raise_exception",
                                          "strftime_now"};
    if (macros.count(name) ||
        std::find_if(std::begin(globals), std::end(globals),
                     [&](const char *g) { return name == g; }) != std::end(globals)) {
      Value f;
      f.kind = Value::Kind::function;
      f.function = name;
      return f;
    }
    return {};
  }

  Flow execOne(const Node &n, std::string &out) {
    switch (n.kind) {
    case Node::plainText: out += n.text; return Flow::normal;
    case Node::output: out += str(eval(*n.expr)); return Flow::normal;
    case Node::branch:
      for (const auto &[cond, body] : n.branches)
        if (!cond || truthy(eval(*cond))) return exec(body, out);
      return Flow::normal;
    case Node::loop: return loop(n, out);
    case Node::set: assign(n, eval(*n.expr)); return Flow::normal;
    case Node::setBlock: {
      std::string captured;
      exec(n.body, captured);
      scopes.back()[n.text] = Value::of(captured);
      return Flow::normal;
    }
    case Node::macro: macros[n.text] = &n; return Flow::normal;
    case Node::breakLoop: return Flow::breakLoop;
    case Node::continueLoop: return Flow::continueLoop;
    case Node::block: return exec(n.body, out);
    }
    return Flow::normal;
  }

  void assign(const Node &n, const Value &v) {
    if (!n.attr.empty()) {
      const Value target = lookup(n.text);
      if (target.kind != Value::Kind::space)
        fail("'" + n.text + "." + n.attr + "' is set, but " + n.text + " is not a namespace()");
      (*target.space)[n.attr] = v.json();
      return;
    }
    if (n.vars.empty()) return void(scopes.back()[n.text] = v);
    const Json &items = v.json();
    if (!items.is_array() || items.size() != n.vars.size())
      fail("cannot unpack " + typeName(v) + " into " + std::to_string(n.vars.size()) + " names");
    for (size_t i = 0; i < n.vars.size(); ++i) scopes.back()[n.vars[i]] = Value::of(items[i]);
  }

  void bind(const std::vector<std::string> &vars, const Json &item) {
    if (vars.size() == 1) return void(scopes.back()[vars[0]] = Value::of(item));
    if (!item.is_array() || item.size() != vars.size())
      fail("cannot unpack " + pythonRepr(item) + " into " + std::to_string(vars.size()) + " names");
    for (size_t i = 0; i < vars.size(); ++i) scopes.back()[vars[i]] = Value::of(item[i]);
  }

  Flow loop(const Node &n, std::string &out) {
    std::vector<Json> items;
    try {
      items = iterate(eval(*n.expr));
    } catch (const std::logic_error &e) {
      fail(e.what());
    }
    scopes.emplace_back();
    if (n.filter) {
      std::vector<Json> kept;
      for (const Json &item : items) {
        bind(n.vars, item);
        if (truthy(eval(*n.filter))) kept.push_back(item);
      }
      items = std::move(kept);
    }
    const int64_t count = int64_t(items.size());
    for (int64_t i = 0; i < count; ++i) {
      if (++steps > 1'000'000) fail("the template loops more than a million times");
      scopes.back().clear(); // what an iteration sets is its own (jinja2's scoping)
      bind(n.vars, items[size_t(i)]);
      Json loop = {{"index", i + 1},        {"index0", i},
                   {"revindex", count - i}, {"revindex0", count - i - 1},
                   {"first", i == 0},       {"last", i == count - 1},
                   {"length", count}};
      if (i > 0) loop["previtem"] = items[size_t(i - 1)];
      if (i + 1 < count) loop["nextitem"] = items[size_t(i + 1)];
      scopes.back()["loop"] = Value::of(std::move(loop));
      if (exec(n.body, out) == Flow::breakLoop) break;
    }
    scopes.pop_back();
    if (items.empty()) return exec(n.elseBody, out);
    return Flow::normal;
  }

  Args evalArgs(const Expr &e, size_t from) {
    Args a;
    for (size_t i = from; i < e.args.size(); ++i) a.positional.push_back(eval(*e.args[i]));
    for (const auto &[k, v] : e.kwargs) a.named.emplace_back(k, eval(*v));
    return a;
  }

  Value eval(const Expr &e) {
    if (++evaluations > 20'000'000) fail("the template takes more than 20 million steps");
    try {
      return evalUnguarded(e);
    } catch (const std::logic_error &err) { // invalid_argument, out_of_range
      fail(err.what());
    } catch (const nlohmann::json::exception &err) {
      fail(err.what());
    }
  }

  Value evalUnguarded(const Expr &e) {
    switch (e.kind) {
    case Expr::literal: return Value::of(e.value);
    case Expr::variable: return lookup(e.name);
    case Expr::attr: {
      const Value v = eval(*e.args[0]);
      if (v.kind == Value::Kind::space) {
        auto it = v.space->find(e.name);
        return it == v.space->end() ? Value{} : Value::of(*it);
      }
      return member(v, Json(e.name));
    }
    case Expr::item: return member(eval(*e.args[0]), eval(*e.args[1]).json());
    case Expr::slice: return slice(e);
    case Expr::call: return built(call(e));
    case Expr::filter: return built(filter(e.name, eval(*e.args[0]), evalArgs(e, 1)));
    case Expr::test: return Value::of(test(e.name, eval(*e.args[0]), evalArgs(e, 1)));
    case Expr::negate: return Value::of(!truthy(eval(*e.args[0])));
    case Expr::minus: return Value::of(arithmetic("-", Value::of(0), eval(*e.args[0])));
    case Expr::binary: {
      const Value l = eval(*e.args[0]);
      if (e.name == "and") return truthy(l) ? eval(*e.args[1]) : l;
      if (e.name == "or") return truthy(l) ? l : eval(*e.args[1]);
      return built(binary(e.name, l, eval(*e.args[1])));
    }
    case Expr::cond:
      if (truthy(eval(*e.args[1]))) return eval(*e.args[0]);
      return e.args[2] ? eval(*e.args[2]) : Value{};
    case Expr::list: {
      Json out = Json::array();
      for (const auto &x : e.args) out.push_back(eval(*x).json());
      return built(Value::of(out));
    }
    case Expr::dict: {
      Json out = Json::object();
      for (size_t i = 0; i + 1 < e.args.size(); i += 2)
        out[str(eval(*e.args[i]))] = eval(*e.args[i + 1]).json();
      return built(Value::of(out));
    }
    }
    return {};
  }

  Value slice(const Expr &e) {
    const Value v = eval(*e.args[0]);
    auto bound = [&](size_t i) -> std::optional<int64_t> {
      if (!e.args[i]) return std::nullopt;
      const Value b = eval(*e.args[i]);
      if (b.json().is_null()) return std::nullopt;
      if (!isInt(b)) throw std::invalid_argument("a slice's bounds must be integers");
      return b.data.get<int64_t>();
    };
    const auto start = bound(1), stop = bound(2), step = bound(3);
    if (isString(v)) {
      const std::vector<size_t> cp = codePoints(text(v));
      std::string out;
      for (int64_t i : sliceIndices(int64_t(cp.size()) - 1, start, stop, step.value_or(1)))
        out += text(v).substr(cp[size_t(i)], cp[size_t(i) + 1] - cp[size_t(i)]);
      return Value::of(out);
    }
    if (!v.json().is_array()) throw std::invalid_argument(typeName(v) + " cannot be sliced");
    Json out = Json::array();
    for (int64_t i : sliceIndices(int64_t(v.json().size()), start, stop, step.value_or(1)))
      out.push_back(v.json()[size_t(i)]);
    return Value::of(out);
  }

  Value call(const Expr &e) {
    const Expr &callee = *e.args[0];
    if (callee.kind == Expr::attr) {
      // Python's methods come before a dict's items, as jinja2's getattr.
      std::optional<Value> r = method(eval(*callee.args[0]), callee.name, evalArgs(e, 1));
      if (r) return *r;
    }
    const Value f = eval(callee);
    if (f.kind != Value::Kind::function)
      throw std::invalid_argument(
          (callee.kind == Expr::attr ? "'" + callee.name + "' of " + typeName(eval(*callee.args[0]))
                                     : typeName(f)) +
          " is not something to call");
    const Args a = evalArgs(e, 1);
    if (macros.count(f.function)) return callMacro(*macros.at(f.function), a);
    return global(f.function, a);
  }

  Value callMacro(const Node &m, const Args &a) {
    if (depth >= 64) fail("macros call each other more than 64 deep");
    std::map<std::string, Value> locals;
    for (size_t i = 0; i < m.vars.size(); ++i) {
      const Value *v = a.get(i, m.vars[i].c_str());
      locals[m.vars[i]] = v ? *v : m.defaults[i] ? eval(*m.defaults[i]) : Value{};
    }
    std::vector<std::map<std::string, Value>> saved;
    saved.swap(scopes);
    scopes.push_back(saved.front());
    scopes.push_back(std::move(locals));
    ++depth;
    std::string out;
    try {
      exec(m.body, out);
    } catch (...) {
      scopes.swap(saved);
      --depth;
      throw;
    }
    scopes.swap(saved);
    --depth;
    return Value::of(out);
  }

  Value global(const std::string &name, const Args &a) {
    if (name == "raise_exception")
      throw JinjaError(
          a.positional.empty() ? "the chat template raised an error" : str(a.positional[0]), true);
    if (name == "strftime_now") {
      const std::time_t now = std::time(nullptr);
      std::tm local{};
      localtime_r(&now, &local);
      char buf[256];
      const size_t n = std::strftime(buf, sizeof buf, a.string(0, "format", "").c_str(), &local);
      return Value::of(std::string(buf, n));
    }
    if (name == "namespace" || name == "dict") {
      Json obj = Json::object();
      if (!a.positional.empty() && a.positional[0].json().is_object()) obj = a.positional[0].json();
      for (const auto &[k, v] : a.named) obj[k] = v.json();
      if (name == "dict") return Value::of(obj);
      Value ns;
      ns.kind = Value::Kind::space;
      ns.space = std::make_shared<Json>(std::move(obj));
      return ns;
    }
    // range
    int64_t start = 0, stop = 0, step = 1;
    if (a.positional.size() == 1)
      stop = a.integer(0, "stop", 0);
    else
      start = a.integer(0, "start", 0), stop = a.integer(1, "stop", 0),
      step = a.integer(2, "step", 1);
    if (step == 0) throw std::invalid_argument("range() step cannot be zero");
    Json out = Json::array();
    for (int64_t i = start; step > 0 ? i < stop : i > stop;) {
      if (out.size() >= 1'000'000) throw std::invalid_argument("range() is over a million items");
      out.push_back(i);
      if (__builtin_add_overflow(i, step, &i)) break;
    }
    return Value::of(out);
  }

  /// Python's methods of str and dict that templates call; nullopt for
  /// another name.
  std::optional<Value> method(const Value &self, const std::string &name, const Args &a) {
    const Json &j = self.json();
    if (j.is_object()) {
      if (name == "items") {
        Json out = Json::array();
        for (auto it = j.begin(); it != j.end(); ++it)
          out.push_back(Json::array({it.key(), it.value()}));
        return Value::of(out);
      }
      if (name == "keys" || name == "values") {
        Json out = Json::array();
        for (auto it = j.begin(); it != j.end(); ++it)
          out.push_back(name == "keys" ? Json(it.key()) : it.value());
        return Value::of(out);
      }
      if (name == "get") {
        const Value v = member(self, Json(a.string(0, "key", "")));
        const Value *d = a.get(1, "default");
        return v.defined() ? v : d ? *d : Value::of(nullptr);
      }
      return std::nullopt;
    }
    if (!j.is_string()) return std::nullopt;
    return stringMethod(text(self), name, a);
  }

  std::optional<Value> stringMethod(const std::string &s, const std::string &name, const Args &a) {
    const Value *arg = a.get(0, "chars");
    const std::string chars = arg && isString(*arg) ? text(*arg) : "";
    const std::string *set = arg && isString(*arg) ? &chars : nullptr;
    if (name == "strip") return Value::of(strip(s, true, true, set));
    if (name == "lstrip") return Value::of(strip(s, true, false, set));
    if (name == "rstrip") return Value::of(strip(s, false, true, set));
    if (name == "upper" || name == "lower") return Value::of(asciiCase(s, name == "upper"));
    if (name == "title") return Value::of(titleCase(s));
    if (name == "capitalize") return Value::of(capitalize(s));
    if (name == "split") {
      const Value *sep = a.get(0, "sep");
      const std::string sepText = sep && isString(*sep) ? text(*sep) : "";
      Json out = Json::array();
      for (auto &part :
           split(s, sep && isString(*sep) ? &sepText : nullptr, a.integer(1, "maxsplit", -1)))
        out.push_back(part);
      return Value::of(out);
    }
    if (name == "replace")
      return Value::of(
          replaceAll(s, a.string(0, "old", ""), a.string(1, "new", ""), a.integer(2, "count", -1)));
    if (name == "join") {
      std::string out;
      const Value *items = a.get(0, "iterable");
      bool first = true;
      for (const Json &x : items ? iterate(*items) : std::vector<Json>{}) {
        append(out, (first ? "" : s) + pythonStr(x));
        first = false;
      }
      return Value::of(out);
    }
    if (name == "splitlines") return Value::of(Json(splitLines(s)));
    return stringQuery(s, name, a);
  }

  /// The methods that ask a string something.
  std::optional<Value> stringQuery(const std::string &s, const std::string &name, const Args &a) {
    if (name == "startswith" || name == "endswith") {
      const Value *p = a.get(0, "prefix");
      std::vector<Json> options = p && p->json().is_array() ? iterate(*p) : std::vector<Json>{};
      if (options.empty() && p) options.push_back(p->json());
      for (const Json &o : options) {
        if (!o.is_string()) throw std::invalid_argument(name + "() takes strings");
        const std::string &x = o.get_ref<const std::string &>();
        if (x.size() <= s.size() &&
            s.compare(name == "startswith" ? 0 : s.size() - x.size(), x.size(), x) == 0)
          return Value::of(true);
      }
      return Value::of(false);
    }
    if (name == "find") {
      const size_t at = s.find(a.string(0, "sub", ""));
      return Value::of(at == std::string::npos ? int64_t(-1)
                                               : int64_t(codePoints(s.substr(0, at)).size()) - 1);
    }
    if (name == "count") {
      const std::string sub = a.string(0, "sub", "");
      int64_t n = 0;
      for (size_t at = 0; !sub.empty() && (at = s.find(sub, at)) != std::string::npos;
           at += sub.size())
        ++n;
      return Value::of(n);
    }
    if (name == "isdigit" || name == "isalpha" || name == "isspace")
      return Value::of(!s.empty() && std::all_of(s.begin(), s.end(), [&](char c) {
        const auto u = static_cast<unsigned char>(c);
        return name == "isdigit"   ? std::isdigit(u)
               : name == "isalpha" ? std::isalpha(u)
                                   : isSpace(c);
      }));
    return std::nullopt;
  }

  bool test(const std::string &name, const Value &v, const Args &a) {
    const Json &j = v.json();
    if (name == "defined") return v.defined();
    if (name == "undefined") return !v.defined();
    if (name == "none") return v.isData() && j.is_null();
    if (name == "string") return isString(v);
    if (name == "number") return isNumber(v) && !j.is_boolean();
    if (name == "integer") return isInt(v);
    if (name == "float") return v.isData() && j.is_number_float();
    if (name == "boolean") return v.isData() && j.is_boolean();
    if (name == "true" || name == "false")
      return v.isData() && j.is_boolean() && j.get<bool>() == (name == "true");
    if (name == "mapping") return v.kind == Value::Kind::space || (v.isData() && j.is_object());
    if (name == "iterable" || name == "sequence")
      return v.isData() && (j.is_array() || j.is_object() || j.is_string());
    if (name == "callable") return v.kind == Value::Kind::function;
    if (name == "lower" || name == "upper")
      return isString(v) && asciiCase(text(v), name == "upper") == text(v);
    if (name == "odd" || name == "even" || name == "divisibleby") {
      if (!isInt(v)) throw std::invalid_argument("'" + name + "' tests integers");
      const int64_t n = j.get<int64_t>(), d = name == "divisibleby" ? a.integer(0, "num", 1) : 2;
      if (d == 0) throw std::invalid_argument("division by zero");
      return name == "odd" ? n % 2 != 0 : n % d == 0;
    }
    static const std::map<std::string, std::string> ops = {
        {"eq", "=="}, {"equalto", "=="},    {"==", "=="},      {"ne", "!="},
        {"!=", "!="}, {"lt", "<"},          {"lessthan", "<"}, {"<", "<"},
        {"gt", ">"},  {"greaterthan", ">"}, {">", ">"},        {"le", "<="},
        {"<=", "<="}, {"ge", ">="},         {">=", ">="},      {"in", "in"}};
    auto op = ops.find(name);
    if (op != ops.end()) {
      const Value *other = a.get(0, "other");
      if (!other) throw std::invalid_argument("the test '" + name + "' needs a value");
      return truthy(binary(op->second, v, *other));
    }
    if (name == "sameas") return a.get(0, "other") && equal(v, *a.get(0, "other"));
    throw std::invalid_argument("no test named '" + name + "'");
  }

  /// The item's attribute `path` (dots for nested ones, as jinja2's).
  static Value attribute(const Json &item, const std::string &path) {
    Value v = Value::of(item);
    size_t from = 0;
    for (;;) {
      const size_t dot = path.find('.', from);
      const std::string part = path.substr(from, dot == std::string::npos ? dot : dot - from);
      const bool index = !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit);
      v = member(v, index && v.json().is_array() ? Json(std::stoll(part)) : Json(part));
      if (dot == std::string::npos) return v;
      from = dot + 1;
    }
  }

  Value filter(const std::string &name, const Value &v, const Args &a) {
    if (std::optional<Value> r = textFilter(name, v, a)) return *r;
    if (std::optional<Value> r = listFilter(name, v, a)) return *r;
    if (std::optional<Value> r = numberFilter(name, v, a)) return *r;
    throw std::invalid_argument("no filter named '" + name + "'");
  }

  std::optional<Value> textFilter(const std::string &name, const Value &v, const Args &a) {
    if (name == "trim") {
      const std::string chars = a.string(0, "chars", "");
      return Value::of(strip(str(v), true, true, a.get(0, "chars") ? &chars : nullptr));
    }
    if (name == "tojson") return tojsonFilter(v, a);
    if (name == "string") return Value::of(str(v));
    if (name == "upper" || name == "lower") return Value::of(asciiCase(str(v), name == "upper"));
    if (name == "capitalize") return Value::of(capitalize(str(v)));
    if (name == "title") return Value::of(titleCase(str(v)));
    if (name == "replace")
      return Value::of(replaceAll(str(v), a.string(0, "old", ""), a.string(1, "new", ""),
                                  a.integer(2, "count", -1)));
    if (name == "safe" || name == "e" || name == "escape" || name == "forceescape")
      return name == "safe" || !isString(v) ? v : Value::of(htmlEscape(text(v)));
    if (name == "indent") {
      const Value *w = a.get(0, "width");
      const std::string pad =
          w && isString(*w) ? text(*w) : std::string(size_t(a.integer(0, "width", 4)), ' ');
      const bool first = a.flag(1, "first", false), blank = a.flag(2, "blank", false);
      std::string out, s = str(v);
      size_t from = 0;
      for (bool head = true;; head = false) {
        const size_t nl = s.find('\n', from);
        const std::string l = s.substr(from, nl == std::string::npos ? nl : nl - from);
        if ((!head || first) && (blank || !l.empty())) append(out, pad);
        out += l;
        if (nl == std::string::npos) break;
        out += '\n';
        from = nl + 1;
      }
      return Value::of(out);
    }
    if (name == "default" || name == "d") {
      const bool boolean = a.flag(1, "boolean", false);
      if (v.defined() && (!boolean || truthy(v))) return v;
      const Value *d = a.get(0, "default_value");
      return d ? *d : Value::of("");
    }
    return std::nullopt;
  }

  static std::string htmlEscape(const std::string &s) {
    std::string out;
    for (char c : s) {
      switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
      }
    }
    return out;
  }

  /// The items `select`, `reject`, `selectattr` and `rejectattr` keep.
  Value selectItems(const std::string &name, const Value &v, const Args &a) {
    const bool byAttr = name == "selectattr" || name == "rejectattr";
    const bool keep = name == "select" || name == "selectattr";
    const std::string attr = byAttr ? a.string(0, "attr", "") : "";
    const size_t testAt = byAttr ? 1 : 0;
    const Value *t = a.get(testAt, "test_name");
    Args rest;
    for (size_t i = testAt + 1; i < a.positional.size(); ++i)
      rest.positional.push_back(a.positional[i]);
    Json out = Json::array();
    for (const Json &item : iterate(v)) {
      const Value x = byAttr ? attribute(item, attr) : Value::of(item);
      const bool pass = t ? test(str(*t), x, rest) : truthy(x);
      if (pass == keep) out.push_back(item);
    }
    return Value::of(out);
  }

  std::optional<Value> listFilter(const std::string &name, const Value &v, const Args &a) {
    if (name == "length" || name == "count") return Value::of(length(v));
    if (name == "list") return Value::of(Json(iterate(v)));
    if (name == "first" || name == "last") {
      const std::vector<Json> items = iterate(v);
      if (items.empty()) return Value{};
      return Value::of(name == "first" ? items.front() : items.back());
    }
    if (name == "join") {
      const std::string sep = a.string(0, "d", ""), attr = a.string(1, "attribute", "");
      std::string out;
      bool first = true;
      for (const Json &x : iterate(v)) {
        append(out, (first ? "" : sep) + str(attr.empty() ? Value::of(x) : attribute(x, attr)));
        first = false;
      }
      return Value::of(out);
    }
    if (name == "items") {
      if (!v.defined()) return Value::of(Json::array());
      if (!v.json().is_object()) throw std::invalid_argument("items of " + typeName(v));
      return method(v, "items", {});
    }
    if (name == "dictsort") {
      if (!v.json().is_object()) throw std::invalid_argument("dictsort of " + typeName(v));
      Value items = *method(v, "items", {});
      std::sort(items.data.begin(), items.data.end(), // an object's keys differ
                [](const Json &x, const Json &y) { return x[0] < y[0]; });
      return items;
    }
    if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr")
      return selectItems(name, v, a);
    if (name == "map") {
      Json out = Json::array();
      const std::string attr = a.string(99, "attribute", "");
      Args rest;
      for (size_t i = 1; i < a.positional.size(); ++i) rest.positional.push_back(a.positional[i]);
      for (const Json &x : iterate(v)) {
        if (!attr.empty()) {
          const Value got = attribute(x, attr);
          const Value *d = a.get(99, "default");
          out.push_back(got.defined() ? got.json() : d ? d->json() : Json());
        } else {
          out.push_back(filter(a.string(0, "filter", ""), Value::of(x), rest).json());
        }
      }
      return Value::of(out);
    }
    if (name == "reverse") {
      if (isString(v)) {
        const std::vector<Json> chars = iterate(v);
        std::string out;
        for (auto it = chars.rbegin(); it != chars.rend(); ++it) out += it->get<std::string>();
        return Value::of(out);
      }
      std::vector<Json> items = iterate(v);
      std::reverse(items.begin(), items.end());
      return Value::of(Json(items));
    }
    if (name == "sort" || name == "unique") return sortOrUnique(name, v, a);
    return std::nullopt;
  }

  /// Python's sorted() (stable, in either direction) and jinja2's unique.
  Value sortOrUnique(const std::string &name, const Value &v, const Args &a) {
    std::vector<Json> items = iterate(v);
    const std::string attr = a.string(99, "attribute", "");
    auto key = [&](const Json &x) { return attr.empty() ? Value::of(x) : attribute(x, attr); };
    if (name == "unique") {
      std::vector<Json> out;
      for (const Json &x : items)
        if (std::none_of(out.begin(), out.end(),
                         [&](const Json &y) { return equal(key(x), key(y)); }))
          out.push_back(x);
      return Value::of(Json(out));
    }
    // Python's sort: stable, in either direction.
    const bool reverse = a.flag(0, "reverse", false);
    std::vector<size_t> at(items.size());
    std::iota(at.begin(), at.end(), size_t(0));
    std::sort(at.begin(), at.end(), [&](size_t x, size_t y) {
      const int c = order(key(items[x]), key(items[y]));
      return c != 0 ? (reverse ? c > 0 : c < 0) : x < y;
    });
    Json out = Json::array();
    for (size_t i : at) out.push_back(items[i]);
    return Value::of(out);
  }

  std::optional<Value> numberFilter(const std::string &name, const Value &v, const Args &a) {
    if (name == "int" || name == "float") {
      if (name == "int" && isInt(v)) return v;
      double d = 0;
      if (isNumber(v))
        d = v.data.get<double>();
      else if (isString(v)) {
        try {
          d = std::stod(text(v));
        } catch (const std::exception &) {
          d = 0;
        }
      }
      if (name == "float") return Value::of(d);
      if (std::isnan(d)) return Value::of(0); // jinja2's default for what int() refuses
      if (!(d > -9.2e18 && d < 9.2e18))
        throw std::invalid_argument("int of " + str(v) + " passes 64 bits");
      return Value::of(int64_t(d));
    }
    if (name == "abs") {
      if (!isNumber(v)) throw std::invalid_argument("abs of " + typeName(v));
      if (isInt(v) && v.data.get<int64_t>() == INT64_MIN)
        throw std::invalid_argument("the integer result of abs passes 64 bits");
      return isInt(v) ? Value::of(std::llabs(v.data.get<int64_t>()))
                      : Value::of(std::fabs(v.data.get<double>()));
    }
    if (name == "round") {
      const double scale = std::pow(10.0, double(a.integer(0, "precision", 0)));
      // Python's round: halves to even.
      return Value::of(std::nearbyint(v.data.get<double>() * scale) / scale);
    }
    if (name == "sum" || name == "min" || name == "max") {
      const std::string attr = a.string(name == "sum" ? 0 : 99, "attribute", "");
      std::optional<Value> acc;
      if (name == "sum") acc = a.get(1, "start") ? *a.get(1, "start") : Value::of(0);
      for (const Json &x : iterate(v)) {
        const Value item = attr.empty() ? Value::of(x) : attribute(x, attr);
        if (!acc)
          acc = item;
        else if (name == "sum")
          acc = binary("+", *acc, item);
        else if ((order(item, *acc) < 0) == (name == "min") && order(item, *acc) != 0)
          acc = item;
      }
      return acc ? *acc : Value{};
    }
    return std::nullopt;
  }
};

} // namespace

std::string pythonJsonDumps(const nlohmann::ordered_json &value, const PythonJsonOptions &o) {
  std::string out;
  dumps(out, value, o, 0);
  return out;
}

std::string pythonJsonDumps(const nlohmann::ordered_json &value, int indent, bool sortKeys) {
  PythonJsonOptions o;
  o.indent = indent;
  o.sortKeys = sortKeys;
  return pythonJsonDumps(value, o);
}

struct JinjaTemplate::Impl {
  std::string origin;
  Body body;
};

JinjaTemplate::JinjaTemplate(const std::string &source, const std::string &origin)
    : impl(std::make_unique<Impl>()) {
  impl->origin = origin;
  // jinja2 drops one newline at the template's end (keep_trailing_newline).
  const size_t n = source.size();
  const size_t drop = n >= 2 && source.compare(n - 2, 2, "\r\n") == 0              ? 2
                      : n >= 1 && (source[n - 1] == '\n' || source[n - 1] == '\r') ? 1
                                                                                   : 0;
  impl->body = Parser(lex(source.substr(0, n - drop), origin), origin).parseTemplate();
}

JinjaTemplate::~JinjaTemplate() = default;
JinjaTemplate::JinjaTemplate(JinjaTemplate &&) noexcept = default;
JinjaTemplate &JinjaTemplate::operator=(JinjaTemplate &&) noexcept = default;

const std::string &JinjaTemplate::origin() const { return impl->origin; }

std::string JinjaTemplate::render(const nlohmann::ordered_json &context) const {
  Renderer r(impl->origin, context);
  std::string out;
  r.exec(impl->body, out);
  return out;
}

} // namespace kvplan::server
