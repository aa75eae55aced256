// A JSON number held to bounds and a multipleOf: the automaton of its text,
// explored from the meaning of each digit. The digits are compared with the
// bounds' as decimals (the integer part's length first, then digit by digit),
// and a multipleOf p * 10^-q keeps the remainder mod p of the digits read up
// to the q-th decimal, so the value is checked exactly, whatever its length.
#include "runtime/ByteDfa.h"

#include "support/Error.h"

#include <algorithm>

namespace kvplan {

namespace {

/// A decimal's sign and digits: no leading zero in `whole` (empty below 1),
/// no trailing zero in `fraction`.
struct Decimal {
  bool negative = false, present = false;
  std::string whole, fraction;
  bool zero() const { return whole.empty() && fraction.empty(); }
};

Decimal decimal(const std::string &text, const std::string &path) {
  Decimal d;
  if (text.empty()) return d;
  d.present = true;
  size_t i = 0;
  d.negative = text[0] == '-';
  if (d.negative) ++i;
  std::string digits;
  long point = -1, exponent = 0;
  for (; i < text.size() && text[i] != 'e' && text[i] != 'E'; ++i) {
    if (text[i] == '.') point = long(digits.size());
    else digits += text[i];
  }
  if (point < 0) point = long(digits.size());
  if (i < text.size()) exponent = std::stol(text.substr(i + 1));
  if (exponent > 400 || exponent < -400)
    throw InputError(path + ": " + text + " is too far from 1 for kvplan to compare numbers "
                                          "with digit by digit");
  point += exponent;
  while (point < 0) digits.insert(digits.begin(), '0'), ++point;
  while (long(digits.size()) < point) digits += '0';
  d.whole = digits.substr(0, size_t(point));
  d.fraction = digits.substr(size_t(point));
  d.whole.erase(0, d.whole.find_first_not_of('0') == std::string::npos
                       ? d.whole.size() : d.whole.find_first_not_of('0'));
  while (!d.fraction.empty() && d.fraction.back() == '0') d.fraction.pop_back();
  if (d.zero()) d.negative = false;
  return d;
}

enum Phase : uint8_t { begin, minus, whole, zero, point, fraction };
enum Order : uint8_t { same, less, more };

/// Where a number's text is.
struct Reading {
  uint8_t phase = begin, negative = 0, nonzero = 0;
  uint8_t order[2] = {same, same}; // the digits so far against each bound's (lexicographic)
  uint16_t wholeDigits = 0, fractionDigits = 0; // capped
  uint32_t remainder = 0;
  std::string key() const {
    std::string k(12, '\0');
    k[0] = char(phase), k[1] = char(negative), k[2] = char(nonzero);
    k[3] = char(order[0]), k[4] = char(order[1]);
    k[5] = char(wholeDigits & 0xFF), k[6] = char(wholeDigits >> 8);
    k[7] = char(fractionDigits & 0xFF), k[8] = char(fractionDigits >> 8);
    k[9] = char(remainder & 0xFF), k[10] = char((remainder >> 8) & 0xFF);
    k[11] = char(remainder >> 16);
    return k;
  }
  static Reading of(const std::string &k) {
    Reading r;
    auto u = [&](size_t i) { return uint32_t(uint8_t(k[i])); };
    r.phase = uint8_t(u(0)), r.negative = uint8_t(u(1)), r.nonzero = uint8_t(u(2));
    r.order[0] = uint8_t(u(3)), r.order[1] = uint8_t(u(4));
    r.wholeDigits = uint16_t(u(5) | u(6) << 8);
    r.fractionDigits = uint16_t(u(7) | u(8) << 8);
    r.remainder = u(9) | u(10) << 8 | u(11) << 16;
    return r;
  }
};

class NumberMachine {
public:
  NumberMachine(const ByteDfa::NumberBounds &b, const std::string &path) : integer(b.integer) {
    bound[0] = decimal(b.minimum, path + ".minimum");
    bound[1] = decimal(b.maximum, path + ".maximum");
    exclusive[0] = b.exclusiveMinimum, exclusive[1] = b.exclusiveMaximum;
    if (!b.multipleOf.empty()) {
      const Decimal m = decimal(b.multipleOf, path + ".multipleOf");
      std::string digits = m.whole + m.fraction;
      digits.erase(0, digits.find_first_not_of('0'));
      if (m.negative || digits.empty())
        throw InputError(path + ".multipleOf: must be greater than 0");
      if (digits.size() > 6)
        throw InputError(path + ".multipleOf: " + b.multipleOf + " has more significant digits "
                                "than kvplan holds generation to (6)");
      modulus = uint32_t(std::stoul(digits));
      multiple = true;
      decimals = uint16_t(m.fraction.size());
    }
    for (const Decimal &d : bound) {
      wholeCap = std::max(wholeCap, uint16_t(d.whole.size() + 1));
      fractionCap = std::max(fractionCap, uint16_t(d.fraction.size() + 1));
    }
    fractionCap = std::max(fractionCap, uint16_t(decimals + 1));
  }

  bool step(Reading &r, uint8_t c) const;
  bool accepts(const Reading &r) const;

private:
  void digit(Reading &r, int d) const;
  Order finalOrder(const Reading &r, int b) const;

  bool integer;
  Decimal bound[2];
  bool exclusive[2] = {false, false};
  bool multiple = false;
  uint32_t modulus = 1; // multipleOf = modulus * 10^-decimals
  uint16_t decimals = 0, wholeCap = 1, fractionCap = 1;
};

/// A digit of the whole part (not a leading zero) or of the fraction.
void NumberMachine::digit(Reading &r, int d) const {
  const bool inFraction = r.phase == point || r.phase == fraction;
  const uint16_t at = inFraction ? r.fractionDigits : r.wholeDigits;
  for (int b = 0; b < 2; ++b) {
    const std::string &digits = inFraction ? bound[b].fraction : bound[b].whole;
    if (r.order[b] != same || (!inFraction && at >= digits.size())) continue;
    const int theirs = at < digits.size() ? digits[at] - '0' : 0;
    r.order[b] = d < theirs ? less : d > theirs ? more : same;
  }
  if (!inFraction || r.fractionDigits < decimals)
    r.remainder = uint32_t((uint64_t(r.remainder) * 10 + uint64_t(d)) % modulus);
  if (d != 0) r.nonzero = 1;
  if (inFraction) r.fractionDigits = std::min(uint16_t(r.fractionDigits + 1), fractionCap);
  else r.wholeDigits = std::min(uint16_t(r.wholeDigits + 1), wholeCap);
}

bool NumberMachine::step(Reading &r, uint8_t c) const {
  const bool isDigit = c >= '0' && c <= '9';
  switch (r.phase) {
  case begin:
  case minus:
    if (c == '-' && r.phase == begin) {
      r.phase = minus, r.negative = 1;
      return true;
    }
    if (!isDigit) return false;
    r.phase = c == '0' ? zero : whole;
    if (c != '0') digit(r, c - '0');
    return true;
  case whole:
  case zero:
    if (c == '.' && !integer) {
      // The whole parts' order is settled: by length, then by digits.
      for (int b = 0; b < 2; ++b) {
        const size_t theirs = bound[b].whole.size();
        if (r.wholeDigits != theirs) r.order[b] = r.wholeDigits < theirs ? less : more;
      }
      r.phase = point;
      return true;
    }
    if (!isDigit || r.phase == zero) return false;
    digit(r, c - '0');
    return true;
  default: // point, fraction
    if (!isDigit) return false;
    // A nonzero digit past multipleOf's decimals is off its grid for good.
    if (multiple && r.fractionDigits >= decimals && c != '0') return false;
    digit(r, c - '0');
    r.phase = fraction;
    return true;
  }
}

/// The order of the number read (as it stands, ended here) against bound b.
Order NumberMachine::finalOrder(const Reading &r, int b) const {
  const Decimal &d = bound[b];
  Order o = Order(r.order[b]);
  const bool inWhole = r.phase == whole || r.phase == zero;
  if (inWhole && r.wholeDigits != d.whole.size()) o = r.wholeDigits < d.whole.size() ? less : more;
  if (o == same && (inWhole ? !d.fraction.empty() : r.fractionDigits < d.fraction.size()))
    o = less; // the bound has nonzero decimals still to come
  const int mine = r.nonzero ? (r.negative ? -1 : 1) : 0;
  const int theirs = d.zero() ? 0 : d.negative ? -1 : 1;
  if (mine != theirs) return mine < theirs ? less : more;
  if (mine == 0) return same;
  if (mine < 0 && o != same) o = o == less ? more : less;
  return o;
}

bool NumberMachine::accepts(const Reading &r) const {
  if (r.phase != whole && r.phase != zero && r.phase != fraction) return false;
  for (int b = 0; b < 2; ++b) {
    if (!bound[b].present) continue;
    const Order o = finalOrder(r, b);
    const Order outside = b == 0 ? less : more;
    if (o == outside || (o == same && exclusive[b])) return false;
  }
  uint64_t rem = r.remainder;
  for (uint16_t k = std::min(r.fractionDigits, decimals); k < decimals; ++k)
    rem = rem * 10 % modulus;
  return rem == 0;
}

} // namespace

ByteDfa ByteDfa::number(const NumberBounds &bounds, const std::string &path) {
  const NumberMachine m(bounds, path);
  std::vector<int> cuts = {'-', '-' + 1, '.', '.' + 1};
  for (int c = '0'; c <= '9' + 1; ++c) cuts.push_back(c);
  ByteDfa out = explore(
      byteClasses(cuts), Reading().key(),
      [&](const Key &k, uint8_t c, Key &to) {
        Reading r = Reading::of(k);
        if (!m.step(r, c)) return false;
        to = r.key();
        return true;
      },
      [&](const Key &k) { return m.accepts(Reading::of(k)); }, path,
      "the number's minimum, maximum and multipleOf");
  if (out.empty())
    throw InputError(path + ": no " + std::string(bounds.integer ? "integer" : "number") +
                     " meets its minimum, maximum and multipleOf together");
  return out;
}

} // namespace kvplan
