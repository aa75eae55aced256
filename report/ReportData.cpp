// The data behind the report: buffer lifetimes, the pass-to-pass diff, op
// counts, the roofline's costs and the bench result it is measured against.
#include "report/Report.h"

#include "plan/Cost.h"
#include "support/Error.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <map>
#include <unordered_map>

namespace kvplan {

std::string htmlEscape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
    case '&':
      out += "&amp;";
      break;
    case '<':
      out += "&lt;";
      break;
    case '>':
      out += "&gt;";
      break;
    case '"':
      out += "&quot;";
      break;
    case '\'':
      out += "&#39;";
      break;
    default:
      out += c;
    }
  }
  return out;
}

std::vector<BufferLife> bufferLifetimes(const EntryPoint &ep) {
  std::vector<BufferLife> lives;
  std::map<int64_t, size_t> index; // value -> position in lives
  auto add = [&](const Operand &o, int64_t step, std::string writer, std::string name) {
    if (o.kind != OperandKind::arena || index.count(o.value))
      return;
    index[o.value] = lives.size();
    lives.push_back({o.value, o.offset, o.bytes(), step, step, std::move(writer), std::move(name)});
  };
  for (const Operand &a : ep.args)
    add(a, -1, "argument", a.name);
  for (size_t i = 0; i < ep.steps.size(); ++i) {
    const Step &s = ep.steps[i];
    std::map<std::string, int> seen; // a variadic field's results are numbered
    forEachOperand(s, [&](const char *field, const Operand &o, bool isResult) {
      if (o.kind != OperandKind::arena)
        return;
      if (!isResult) {
        auto it = index.find(o.value);
        if (it != index.end())
          lives[it->second].lastStep = std::max(lives[it->second].lastStep, int64_t(i));
        return;
      }
      const int n = seen[field]++;
      std::string name = std::string(s.name()) + " " + field;
      if (const LinearOp *l = s.tryAs<LinearOp>(); l && l->results.size() > 1)
        name += "#" + std::to_string(n);
      if (!s.loc.empty())
        name += " at " + s.loc;
      add(o, int64_t(i), s.name(), name);
    });
  }
  for (const Operand &r : ep.results) {
    auto it = index.find(r.value);
    if (r.kind == OperandKind::arena && it != index.end())
      lives[it->second].lastStep = int64_t(ep.steps.size());
  }
  return lives;
}

namespace {

std::vector<std::string_view> splitLines(std::string_view text) {
  std::vector<std::string_view> lines;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    lines.push_back(text.substr(0, nl));
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
  }
  return lines;
}

/// The line with every SSA name's number blanked: %12 -> %#, %arg3 -> %arg#.
std::string withoutNumbering(std::string_view line) {
  std::string out;
  for (size_t i = 0; i < line.size(); ++i) {
    out += line[i];
    if (line[i] != '%')
      continue;
    while (i + 1 < line.size() && (std::isalpha((unsigned char)line[i + 1]) || line[i + 1] == '_'))
      out += line[++i];
    if (i + 1 < line.size() && std::isdigit((unsigned char)line[i + 1])) {
      out += '#';
      while (i + 1 < line.size() && std::isdigit((unsigned char)line[i + 1]))
        ++i;
    }
  }
  return out;
}

/// The diff of a and b by their longest common subsequence (dynamic
/// programming); more cells than this and the whole of a shows as replaced by b.
constexpr size_t kMaxDiffCells = size_t(24) << 20;

void diffMiddle(const std::vector<int> &a, const std::vector<int> &b,
                std::vector<std::pair<DiffKind, size_t>> &ops) {
  const size_t n = a.size(), m = b.size();
  if (n * m > kMaxDiffCells) {
    for (size_t i = 0; i < n; ++i)
      ops.push_back({DiffKind::removed, i});
    for (size_t j = 0; j < m; ++j)
      ops.push_back({DiffKind::added, j});
    return;
  }
  // len[i][j]: the LCS of a[i..) and b[j..).
  std::vector<uint32_t> len((n + 1) * (m + 1), 0);
  auto at = [&](size_t i, size_t j) -> uint32_t & { return len[i * (m + 1) + j]; };
  for (size_t i = n; i-- > 0;)
    for (size_t j = m; j-- > 0;)
      at(i, j) = a[i] == b[j] ? at(i + 1, j + 1) + 1 : std::max(at(i + 1, j), at(i, j + 1));
  size_t i = 0, j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && a[i] == b[j]) {
      ops.push_back({DiffKind::same, j});
      ++i, ++j;
    } else if (i < n && (j == m || at(i + 1, j) >= at(i, j + 1))) {
      ops.push_back({DiffKind::removed, i++}); // removals first, as diff prints them
    } else {
      ops.push_back({DiffKind::added, j++});
    }
  }
}

} // namespace

std::vector<DiffLine> diffLines(std::string_view before, std::string_view after) {
  const std::vector<std::string_view> a = splitLines(before), b = splitLines(after);
  std::unordered_map<std::string, int> ids;
  auto key = [&](std::string_view l) {
    return ids.emplace(withoutNumbering(l), int(ids.size())).first->second;
  };
  std::vector<int> ka, kb;
  for (std::string_view l : a)
    ka.push_back(key(l));
  for (std::string_view l : b)
    kb.push_back(key(l));
  size_t pre = 0;
  while (pre < ka.size() && pre < kb.size() && ka[pre] == kb[pre])
    ++pre;
  size_t suf = 0;
  while (suf < ka.size() - pre && suf < kb.size() - pre &&
         ka[ka.size() - 1 - suf] == kb[kb.size() - 1 - suf])
    ++suf;
  std::vector<std::pair<DiffKind, size_t>> ops;
  for (size_t i = 0; i < pre; ++i)
    ops.push_back({DiffKind::same, i});
  // Indices past the prefix are offset per side: a's from `pre` in a, b's in b.
  std::vector<std::pair<DiffKind, size_t>> mid;
  std::vector<int> am(ka.begin() + pre, ka.end() - suf), bm(kb.begin() + pre, kb.end() - suf);
  diffMiddle(am, bm, mid);
  for (auto [k, idx] : mid)
    ops.push_back({k, pre + idx});
  for (size_t s = suf; s-- > 0;)
    ops.push_back({DiffKind::same, kb.size() - 1 - s});
  std::vector<DiffLine> out;
  out.reserve(ops.size());
  for (auto [k, idx] : ops)
    out.push_back({k, std::string(k == DiffKind::removed ? a[idx] : b[idx])});
  return out;
}

std::vector<std::pair<std::string, int64_t>> countOps(std::string_view ir) {
  std::map<std::string, int64_t> counts;
  for (std::string_view line : splitLines(ir)) {
    size_t p = line.find_first_not_of(' ');
    if (p == std::string_view::npos || line.compare(p, 2, "//") == 0)
      continue;
    line.remove_prefix(p);
    if (line.front() == '%') { // results: skip to the op after " = "
      size_t eq = line.find(" = ");
      if (eq == std::string_view::npos)
        continue;
      line.remove_prefix(eq + 3);
    }
    size_t end = 0;
    while (end < line.size() &&
           (std::isalnum((unsigned char)line[end]) || line[end] == '_' || line[end] == '.'))
      ++end;
    std::string_view op = line.substr(0, end);
    if (op.find('.') != std::string_view::npos && std::isalpha((unsigned char)op.front()))
      ++counts[std::string(op)];
  }
  return {counts.begin(), counts.end()};
}

namespace {

/// Bytes of the keys and values of one token in one layer (the sliding
/// layers' own pool, where the plan has one, stores them alike).
double kvLayerBytesPerToken(const Plan &plan) {
  const KVCacheLayout &kv = plan.kvCache;
  return 2.0 * double(kv.kvHeads * kv.headDim * dtypeBytes(kv.dtype));
}

/// The longest context, in whole pages and at most `cap` tokens, whose
/// pages held at once (under `window`, in calls of `rows` rows) are at most
/// `pages`. sequencePeakPages grows with the tokens, so a binary search over
/// the pages finds it.
int64_t longestContext(int64_t window, int64_t pageSize, int64_t rows, int64_t pages,
                       int64_t cap) {
  auto fits = [&](int64_t tokens) {
    return sequencePeakPages(window, pageSize, rows, tokens) <= pages;
  };
  if (fits(cap)) return cap;
  int64_t lo = 0, hi = cap / pageSize + 1; // lo pages fit, hi do not
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    (fits(mid * pageSize) ? lo : hi) = mid;
  }
  return lo * pageSize;
}

} // namespace

KvCapacity kvCapacity(const Plan &plan, int64_t batch) {
  const int64_t ps = plan.kvCache.pageSize, rows = rowsPerCall(plan.settings);
  KvCapacity c{plan.model.maxPositions, KvCapacity::Limit::positions};
  auto bound = [&](int64_t window, int64_t pages, KvCapacity::Limit limit) {
    const int64_t tokens = longestContext(window, ps, rows, pages / batch, c.context);
    if (tokens < c.context) c = {tokens, limit};
  };
  bound(attentionWindow(plan), plan.kvCache.pages, KvCapacity::Limit::pool);
  if (plan.windowCache.layers > 0)
    bound(windowPoolWindow(plan), plan.windowCache.pages, KvCapacity::Limit::windowPool);
  return c;
}

CallCost decodeStepCost(const Plan &plan, int64_t rows, int64_t context) {
  CallCost c;
  const EntryPoint &ep = plan.entryPoints.at("decode");
  auto scaled = [&](const Operand &o) { return double(std::min(o.rows(), rows)); };
  // Each layer's attention reads its own keys: all, or its window's.
  double keys = 0;
  for (const Step &s : ep.steps) {
    if (std::optional<StepProduct> p = stepProduct(s)) {
      c.flops += productFlops(plan, *p, scaled(*p->input));
    } else if (const MoEFFNOp *m = s.tryAs<MoEFFNOp>()) {
      c.flops += moeFlops(plan, *m, scaled(m->input));
    } else if (const AttentionOp *a = s.tryAs<AttentionOp>()) {
      const int64_t window = a->window.value_or(0);
      c.flops += 4.0 * scaled(a->result) * double(keysAttended(window, context)) *
                 double(a->result.cols());
      keys += double(keysAttended(window, context + 1));
    }
  }
  c.bytes = double(decodeWeightBytes(plan, rows)) +
            double(rows) * keys * kvLayerBytesPerToken(plan);
  return c;
}

CallCost prefillCost(const Plan &plan, int64_t tokens) {
  const EntryPoint &ep = plan.entryPoints.at("prefill");
  const int64_t chunk = ep.rows;
  std::vector<int64_t> windows; // each layer's (0: every key)
  for (const Step &s : ep.steps)
    if (const AttentionOp *a = s.tryAs<AttentionOp>()) windows.push_back(a->window.value_or(0));
  CallCost c;
  c.flops = prefillFlops(plan, tokens);
  // Each chunk reads every weight once (its embedding rows only), writes its
  // tokens' keys and values, and reads those of every token up to its last
  // (from its first row's window on, where attention slides).
  for (int64_t done = 0; done < tokens; done += chunk) {
    const int64_t n = std::min(chunk, tokens - done);
    double keys = 0;
    for (int64_t window : windows) keys += double(n + keysAttended(window, done + 1) + n - 1);
    c.bytes += double(decodeWeightBytes(plan, n)) + keys * kvLayerBytesPerToken(plan);
  }
  return c;
}

BenchFigures benchFromJson(std::string_view text, const std::string &path) {
  nlohmann::json j = nlohmann::json::parse(text.begin(), text.end(), nullptr, false);
  const std::string fix = "; give the output of `kvplan bench MODEL --json` (a single run, "
                          "without --requests)";
  if (j.is_discarded() || !j.is_object())
    throw InputError(path + ": --bench is not a JSON object" + fix);
  auto number = [&](const char *field, bool required) -> double {
    if (!j.contains(field)) {
      if (required)
        throw InputError(path + ": --bench has no field '" + field + "'" + fix);
      return 0;
    }
    if (!j.at(field).is_number() || j.at(field).get<double>() <= 0)
      throw InputError(path + ": --bench field '" + field + "' is not a positive number" + fix);
    return j.at(field).get<double>();
  };
  const bool oneSequence =
      !j.contains("batch") ||
      (j.at("batch").is_number_integer() && j.at("batch").get<int64_t>() == 1);
  if (!oneSequence)
    throw InputError(path + ": --bench is a run of --batch " + j.at("batch").dump() +
                     " sequences; the report places one sequence's decode on the roofline" + fix);
  BenchFigures b;
  b.bandwidthGBs = number("bandwidth_gb_s", true);
  b.decodeTokS = number("decode_tok_s", true);
  b.prefillTokS = number("prefill_tok_s", true);
  b.promptLen = int64_t(number("prompt_len", true));
  b.gen = int64_t(number("gen", true));
  b.peakGflops = number("peak_gflops", false);
  if (j.contains("model") && j.at("model").is_string())
    b.model = j.at("model").get<std::string>();
  return b;
}

} // namespace kvplan
