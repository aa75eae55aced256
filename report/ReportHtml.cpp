// The report's page, its summary and its pipeline section.
#include "report/ReportPage.h"

#include "plan/Cost.h"
#include "support/Format.h"
#include "support/SystemResources.h"

#include <cctype>
#include <cstdio>
#include <map>
#include <set>

namespace kvplan {
namespace report {

std::string bytes(int64_t v) { return formatBytes(uint64_t(v < 0 ? 0 : v)); }

std::string num(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  std::string s = buf;
  if (s.find('.') != std::string::npos) {
    while (s.back() == '0')
      s.pop_back();
    if (s.back() == '.')
      s.pop_back();
  }
  return s;
}

namespace {

bool wordChar(char c) { return std::isalnum((unsigned char)c) || c == '_' || c == '.' || c == '$'; }

std::string span(const char *cls, std::string_view text) {
  return std::string("<i class=") + cls + ">" + htmlEscape(text) + "</i>";
}

} // namespace

std::string highlightIR(std::string_view line) {
  std::string out;
  size_t i = 0;
  while (i < line.size()) {
    const char c = line[i];
    size_t j = i + 1;
    if (c == '/' && line.substr(i, 2) == "//") {
      out += span("c", line.substr(i));
      break;
    }
    if (c == '"') {
      while (j < line.size() && line[j] != '"')
        j += line[j] == '\\' ? 2 : 1;
      j = std::min(j + 1, line.size());
      out += span("s", line.substr(i, j - i));
    } else if ((c == '%' || c == '@' || c == '!' || c == '#') && j < line.size() &&
               wordChar(line[j])) {
      while (j < line.size() &&
             (wordChar(line[j]) || line[j] == ':' || line[j] == '#' || line[j] == '-'))
        ++j;
      out += span(c == '%' ? "v" : c == '@' ? "y" : "t", line.substr(i, j - i));
    } else if (std::isalpha((unsigned char)c)) {
      while (j < line.size() && wordChar(line[j]))
        ++j;
      std::string_view w = line.substr(i, j - i);
      const bool dotted = w.find('.') != std::string_view::npos;
      const bool key = line.substr(j, 2) == " =";
      const bool type = w == "tensor" || w == "array" || w == "f32" || w == "bf16" || w == "f16" ||
                        w == "i32" || w == "i64" || w == "f64";
      if (dotted && !key)
        out += span("o", w);
      else if (key)
        out += span("a", w);
      else if (type)
        out += span("t", w);
      else
        out += htmlEscape(w);
    } else {
      out += htmlEscape(line.substr(i, 1));
    }
    i = j;
  }
  return out;
}

namespace {

struct BillPart {
  const char *cls, *label;
  int64_t bytes;
  std::string note;
};

std::vector<BillPart> billParts(const Plan &p, const MemoryBill &b) {
  const bool cuda = p.settings.target == Target::cuda;
  std::vector<BillPart> parts = {
      {"bill-weights", "weights", b.weightsBlobBytes, "the weights section, alignment included"},
      {"bill-kv", "KV cache", b.kvCacheBytes,
       std::to_string(p.kvCache.pages) + " pages of " + std::to_string(p.kvCache.pageSize) +
           " tokens" +
           (p.windowCache.layers > 0
                ? " for " + std::to_string(p.kvCache.layers) + " layers, " +
                      std::to_string(p.windowCache.pages) + " for the " +
                      std::to_string(p.windowCache.layers) + " sliding-window layers"
                : std::string())},
      {"bill-arena", "arena", b.arenaAllocBytes, "activations; one arena serves every entry point"},
      {"bill-workspace", "workspace", b.workspaceBytes,
       workspaceContents(p)}};
  if (cuda)
    parts.push_back(
        {"bill-reserve", "reserve", b.reserveBytes,
         b.reserveBytes > kCudaRuntimeReserveBytes ? "kept free for cuBLAS, NCCL and the graphs"
                                                   : "kept free for cuBLAS and the graphs"});
  return parts;
}

std::string billBar(const std::vector<BillPart> &parts, int64_t total) {
  std::string svg = "<svg class=bill viewBox='0 0 1000 46' width='100%' role=img "
                    "aria-label='the memory bill as a stacked bar'>";
  double x = 0;
  for (const BillPart &part : parts) {
    const double w = total > 0 ? 1000.0 * double(part.bytes) / double(total) : 0;
    svg += "<rect class=" + std::string(part.cls) + " x=" + num(x, 2) +
           " y=0 width=" + num(std::max(w, part.bytes > 0 ? 1.0 : 0.0), 2) + " height=30><title>" +
           part.label + ": " + withCommas(part.bytes) + " bytes (" + bytes(part.bytes) +
           ")</title></rect>";
    if (w > 70)
      svg +=
          "<text x=" + num(x + 4, 1) + " y=44>" + part.label + " " + bytes(part.bytes) + "</text>";
    x += w;
  }
  return svg + "</svg>";
}

/// "57.4%", or "&lt;0.1%" for a part too small to show.
std::string share(int64_t part, int64_t total) {
  const double pct = 100.0 * double(part) / double(std::max<int64_t>(total, 1));
  return part > 0 && pct < 0.05 ? "&lt;0.1%" : num(pct, 1) + "%";
}

std::string billTable(const std::vector<BillPart> &parts, const MemoryBill &b, bool cuda) {
  std::string t = "<table><tr><th>part</th><th>bytes</th><th></th><th>share</th><th>what</th></tr>";
  for (const BillPart &part : parts)
    t += "<tr><td class=legend><i class=" + std::string(part.cls) + "></i>" + part.label +
         "</td><td class=n>" + withCommas(part.bytes) + "</td><td class=n>" + bytes(part.bytes) +
         "</td><td class=n>" +
         share(part.bytes, b.totalBytes) + "</td><td>" + htmlEscape(part.note) + "</td></tr>";
  t += "<tr><th>total" + std::string(cuda ? " (GPU)" : "") + "</th><th class=n>" +
       withCommas(b.totalBytes) + "</th><th class=n>" + bytes(b.totalBytes) + "</th><th></th><th>" +
       (cuda ? "plus " + bytes(b.hostPinnedBytes) + " of pinned host memory"
             : std::string("whatever the thread count")) +
       "</th></tr></table>";
  return t;
}

/// "2 × 4 layers × 1 KV heads × 256 × 2 bytes": a token's keys and values
/// in one pool, by hand.
std::string perTokenBytes(const KVCacheLayout &kv) {
  return withCommas(2 * kv.layers * kv.kvHeads * kv.headDim * dtypeBytes(kv.dtype)) +
         " bytes (2 &times; " + std::to_string(kv.layers) + " layers &times; " +
         std::to_string(kv.kvHeads) + " KV heads &times; " + std::to_string(kv.headDim) +
         " &times; " + std::to_string(dtypeBytes(kv.dtype)) + " bytes)";
}

/// Which batch and context the KV cache's pages hold (kvCapacity).
std::string capacityTable(const Plan &p) {
  const KVCacheLayout &kv = p.kvCache, &win = p.windowCache;
  const bool two = win.layers > 0;
  std::string t = "<p>Each token's keys and values take " + perTokenBytes(kv);
  if (two)
    t += " in the full-attention layers' pool of " + withCommas(kv.pages) + " pages, and " +
         perTokenBytes(win) + " in the sliding-window layers' pool of " +
         withCommas(win.pages) + " pages, where a sequence holds its window's pages at most (" +
         std::to_string(windowPoolWindow(p)) + " keys)";
  else
    t += ", in a pool of " + withCommas(kv.pages) + " pages of " + std::to_string(kv.pageSize) +
         " tokens" +
         (attentionWindow(p) > 0 ? ", where a sequence holds its window's pages at most (" +
                                       std::to_string(attentionWindow(p)) + " keys)"
                                 : std::string());
  t += ". A sequence holds pages as it grows, so the same pages serve a few long sequences or "
       "many short ones (context in whole pages, at most the " +
       withCommas(p.model.maxPositions) +
       " positions the model was trained for; a larger batch also grows the decode "
       "arena):</p><table><tr><th>sequences (max batch)</th>";
  std::set<int64_t> batches = {p.settings.maxBatch};
  for (int64_t batch = 1; batch <= 256 && kvCapacity(p, batch).context >= kv.pageSize; batch *= 2)
    batches.insert(batch);
  std::string contexts = "<tr><th>context each (tokens)</th>", limits = "<tr><th>bound</th>";
  for (int64_t batch : batches) {
    const char *cls = batch == p.settings.maxBatch ? " class='n current'" : " class=n";
    const KvCapacity c = kvCapacity(p, batch);
    t += std::string("<td") + cls + ">" + std::to_string(batch) + "</td>";
    contexts += std::string("<td") + cls + ">" + withCommas(c.context) + "</td>";
    limits += std::string("<td") + cls + ">" +
              (c.limit == KvCapacity::Limit::positions  ? "positions"
               : c.limit == KvCapacity::Limit::windowPool ? "sliding pool"
               : two                                      ? "full pool"
                                                          : "KV pages") +
              "</td>";
  }
  return t + "</tr>" + contexts + "</tr>" + limits + "</tr></table>";
}

} // namespace

std::string summarySection(const ReportInput &in) {
  const Plan &p = *in.plan;
  const ModelSpec &m = p.model;
  const CompileSettings &s = p.settings;
  const MemoryBill b = p.memoryBill();
  const std::vector<BillPart> parts = billParts(p, b);
  std::string h = "<section class=part id=summary><h2>Summary</h2>";
  h += "<p class=lead>What was compiled, with which settings, and the exact memory it needs: "
       "every buffer the " +
       std::string(s.target == Target::cuda ? "CUDA" : "CPU") +
       " runtime allocates when it loads this plan, and nothing else.</p><table>";
  h += "<tr><th>model</th><td>" + htmlEscape(m.name) + ": " + architectureName(m.architecture) +
       ", " + std::to_string(m.numLayers) + " layers, hidden " + std::to_string(m.hiddenSize) +
       ", " + std::to_string(m.numHeads) + " heads (" + std::to_string(m.numKvHeads) +
       " KV) &times; " + std::to_string(m.headDim) + ", FFN " + std::to_string(m.intermediateSize) +
       ", vocabulary " + withCommas(m.vocabSize) + (m.tieWordEmbeddings ? ", tied embeddings" : "") +
       "</td></tr><tr><th>parameters</th><td>" + withCommas(b.params) + "</td></tr>";
  h += "<tr><th>settings</th><td>target " + std::string(targetName(s.target)) + ", weights " +
       s.weightTypesText() + ", KV cache " + dtypeName(s.kvDtype) + ", max batch " +
       std::to_string(s.maxBatch) + ", context " + withCommas(s.maxSeqLen) + ", prefill chunk " +
       std::to_string(s.prefillChunk) + ", pages of " + std::to_string(s.pageSize) + " tokens, " +
       withCommas(s.kvPages) + " KV pages" +
       (s.windowKvPages > 0 ? ", " + withCommas(s.windowKvPages) + " for the sliding layers"
                            : std::string()) +
       (s.memoryBudget > 0 ? ", within a memory budget of " + bytes(s.memoryBudget) +
                                 " (memory_budget)"
                           : std::string()) +
       "</td></tr>";
  if (!s.decodeCopies.empty() || !s.prefillCopies.empty()) {
    auto rows = [](const std::vector<int64_t> &copies) {
      return copies.empty() ? std::string("none") : joinNumbers(copies);
    };
    h += "<tr><th>smaller copies</th><td>decode at " + rows(s.decodeCopies) + ", prefill at " +
         rows(s.prefillCopies) +
         " rows: a step of few rows runs on the smallest copy that holds them</td></tr>";
  }
  if (s.l2PrefetchMib > 0)
    h += "<tr><th>L2 prefetch</th><td>" + std::to_string(s.l2PrefetchMib) +
         " MiB: each kernel asks the GPU's L2 for the next products' weights as it "
         "starts</td></tr>";
  h += "<tr><th>source</th><td>" + htmlEscape(in.source) + "</td></tr></table>";
  h += "<h3>Memory bill: " + bytes(b.totalBytes) + "</h3>" + billBar(parts, b.totalBytes) +
       billTable(parts, b, s.target == Target::cuda);
  h += p.ranks() > 1
           ? "<p>Split between " + std::to_string(p.ranks()) +
                 " tensor-parallel ranks (run with <code>mpirun -np " +
                 std::to_string(p.ranks()) +
                 "</code>, one process per rank" +
                 (s.target == Target::cuda ? ", one GPU each" : std::string()) +
                 "): this is one rank's bill, and every rank's is the same.</p>"
           : "<p>One process, one device: the plan is not split between tensor-parallel ranks "
             "(<code>--tensor-parallel N</code>), so this is its whole bill.</p>";
  h += "<h3>What the same KV-cache memory allows</h3>" + capacityTable(p);
  return h + "</section>";
}

namespace {

std::string irBlock(std::string_view text) {
  std::string h = "<pre class=ir>";
  size_t start = 0;
  while (start < text.size()) {
    size_t nl = text.find('\n', start);
    if (nl == std::string_view::npos)
      nl = text.size();
    h += highlightIR(text.substr(start, nl - start)) + "\n";
    start = nl + 1;
  }
  return h + "</pre>";
}

struct DiffStats {
  int64_t added = 0, removed = 0, rewritten = 0,
          replaced = 0; // rewritten: new lines, replaced: old
};

/// The diff with three lines of context around each change; a run of
/// changes holding both removals and additions is a rewrite.
std::string diffBlock(const std::vector<DiffLine> &d, DiffStats &st) {
  std::vector<bool> rewrite(d.size(), false), show(d.size(), false);
  for (size_t i = 0; i < d.size();) {
    size_t j = i;
    bool add = false, del = false;
    while (j < d.size() && d[j].kind != DiffKind::same)
      (d[j].kind == DiffKind::added ? add : del) = true, ++j;
    for (size_t k = i; k < j; ++k)
      rewrite[k] = add && del;
    for (size_t k = i >= 3 ? i - 3 : 0; k < std::min(d.size(), j + 3) && j > i; ++k)
      show[k] = true;
    i = j == i ? i + 1 : j;
  }
  std::string h = "<pre class='ir diff'>";
  for (size_t i = 0; i < d.size();) {
    if (!show[i]) {
      size_t j = i;
      while (j < d.size() && !show[j])
        ++j;
      h += "<span class=dk>\xe2\x8b\xaf " + withCommas(int64_t(j - i)) + " unchanged lines</span>";
      i = j;
      continue;
    }
    const DiffLine &l = d[i];
    const char *cls = l.kind == DiffKind::same    ? ""
                      : l.kind == DiffKind::added ? (rewrite[i] ? " class=ra" : " class=da")
                                                  : (rewrite[i] ? " class=rd" : " class=dd");
    if (l.kind == DiffKind::added)
      (rewrite[i] ? st.rewritten : st.added) += 1;
    if (l.kind == DiffKind::removed)
      (rewrite[i] ? st.replaced : st.removed) += 1;
    h += std::string("<span") + cls + ">" +
         (l.kind == DiffKind::added     ? "+ "
          : l.kind == DiffKind::removed ? "- "
                                        : "  ") +
         highlightIR(l.text) + "</span>";
    ++i;
  }
  return h + "</pre>";
}

std::string opCountTable(const std::vector<IRStage> &stages) {
  std::vector<std::map<std::string, int64_t>> counts;
  std::set<std::string> names;
  for (const IRStage &s : stages) {
    std::map<std::string, int64_t> c;
    for (auto &[name, n] : countOps(s.text))
      c[name] = n, names.insert(name);
    counts.push_back(std::move(c));
  }
  std::string t = "<table class=opcounts><tr><th>op</th>";
  for (size_t i = 0; i < stages.size(); ++i)
    t += "<th><a href='#stage-" + std::to_string(i) + "'>" + std::to_string(i) + " " +
         htmlEscape(stages[i].name) + "</a></th>";
  t += "</tr>";
  for (const std::string &name : names) {
    t += "<tr><td>" + htmlEscape(name) + "</td>";
    for (size_t i = 0; i < stages.size(); ++i) {
      auto it = counts[i].find(name);
      const int64_t n = it == counts[i].end() ? 0 : it->second;
      const int64_t before = i == 0 ? n : (counts[i - 1].count(name) ? counts[i - 1].at(name) : 0);
      t += std::string("<td class=n") + (i > 0 && n != before ? " style='font-weight:700'" : "") +
           ">" + (n ? std::to_string(n) : "&middot;") + "</td>";
    }
    t += "</tr>";
  }
  return t + "</table>";
}

std::string stageBlock(const std::vector<IRStage> &stages, size_t i) {
  const IRStage &s = stages[i];
  std::string h = "<section class=stage id='stage-" + std::to_string(i) + "' data-stage='" +
                  htmlEscape(s.name) + "'><h3>" + std::to_string(i) + ". " + htmlEscape(s.name) +
                  "</h3>";
  if (i > 0) {
    DiffStats st;
    const std::string diff = diffBlock(diffLines(stages[i - 1].text, s.text), st);
    h += "<p><span class='badge b-add'>+" + withCommas(st.added) +
         " added</span><span class='badge b-del'>&minus;" + withCommas(st.removed) +
         " removed</span><span class='badge b-rw'>~" + withCommas(st.replaced) + " rewritten as " +
         withCommas(st.rewritten) + "</span> lines against " + htmlEscape(stages[i - 1].name) +
         " (lines that differ only in SSA numbering count as unchanged)</p>";
    h += "<details open><summary>What " + htmlEscape(s.name) + " changed</summary>" + diff +
         "</details>";
  }
  h += "<details class=ir-full><summary>The IR after " + htmlEscape(s.name) + " (" +
       withCommas(int64_t(std::count(s.text.begin(), s.text.end(), '\n'))) + " lines)</summary>" +
       irBlock(s.text) + "</details>";
  return h + "</section>";
}

} // namespace

std::string pipelineSection(const ReportInput &in) {
  std::string h = "<section class=part id=pipeline><h2>Pipeline</h2>";
  if (in.stages.empty()) {
    h += "<p class=note>This report was made from an artifact, which keeps only the IR after the "
         "last pass. Compile from the model to see every pass: <code>kvplan report MODEL.toml -o "
         "report.html</code>.</p>";
    if (in.artifactIR.empty())
      return h + "<p>The artifact holds no IR section.</p></section>";
    IRStage last{"the artifact's IR (after the last pass)", in.artifactIR};
    h += opCountTable({last}) + "<details class=ir-full open><summary>" + last.name + "</summary>" +
         irBlock(last.text) + "</details>";
    return h + "</section>";
  }
  h += "<p class=lead>The model as its authors define it (stage 0), then the IR after every pass, "
       "in order. Each pass shows what it added (green), removed (red) or rewrote (amber), then "
       "the whole IR it left. The last stage is exactly what the back end lowers.</p>"
       "<p><button class=toggle-ir hidden>Open every IR listing</button></p>";
  h += "<h3>Ops per stage</h3>" + opCountTable(in.stages);
  for (size_t i = 0; i < in.stages.size(); ++i)
    h += stageBlock(in.stages, i);
  return h + "</section>";
}

} // namespace report

std::string renderReport(const ReportInput &in) {
  using namespace report;
  const Plan &p = *in.plan;
  std::string h =
      "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
      "<meta name=viewport content='width=device-width,initial-scale=1'><title>kvplan report: " +
      htmlEscape(p.model.name) + "</title><style>" + pageStyle() + "</style><script>" +
      pageEarlyScript() + "</script></head><body>";
  h += "<div id=jserr hidden></div><header><h1>kvplan report: " + htmlEscape(p.model.name) +
       "</h1><p>" + htmlEscape(in.source) + " &middot; target " + targetName(p.settings.target) +
       " &middot; made by " + htmlEscape(in.generator) + "</p></header>";
  h +=
      "<nav><a href='#summary'>Summary</a><a href='#pipeline'>Pipeline</a><a href='#memory'>Memory "
      "plan</a>";
  if (in.cuda)
    h += "<a href='#kernels'>Kernels</a>";
  h += "<a href='#roofline'>Roofline</a></nav><main>";
  h += "<p class=lead>What kvplan made of " + htmlEscape(in.source) +
       ": the <a href='#summary'>memory it needs</a>, byte for byte; what each compiler "
       "<a href='#pipeline'>pass</a> changed in the IR; how the <a href='#memory'>arena</a> reuses "
       "memory between steps and how the KV cache is paged; " +
       std::string(in.cuda ? "the <a href='#kernels'>kernels</a> each call launches; " : "") +
       "and how far a decode step and a prefill chunk are from the machine's "
       "<a href='#roofline'>limits</a>. Hover over any chart for details.</p>";
  h += summarySection(in) + pipelineSection(in) + memorySection(in);
  if (in.cuda)
    h += kernelsSection(in);
  h += rooflineSection(in);
  h += "</main><script>" + std::string(pageScript()) + "</script></body></html>\n";
  return h;
}

} // namespace kvplan
