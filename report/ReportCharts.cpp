// The report's charts: the arena of each entry point over its steps, the
// KV cache's pages, the CUDA launch table and the roofline.
#include "report/ReportPage.h"
#include "plan/Cost.h"

#include <algorithm>
#include <cmath>
#include <set>

namespace kvplan::report {

namespace {

constexpr double kLeft = 78, kTop = 10, kWidth = 900, kHeight = 320;

std::string tick(double x1, double y1, double x2, double y2, const char *cls = "axis") {
  // Quoted: an unquoted value before "/>" would swallow the slash in HTML.
  return "<line class=" + std::string(cls) + " x1='" + num(x1, 1) + "' y1='" + num(y1, 1) +
         "' x2='" + num(x2, 1) + "' y2='" + num(y2, 1) + "' />";
}

std::string text(double x, double y, const std::string &s, const char *anchor = "start") {
  return "<text x=" + num(x, 1) + " y=" + num(y, 1) + " text-anchor=" + anchor + ">" + s +
         "</text>";
}

std::string lifeTitle(const BufferLife &b, const EntryPoint &ep) {
  const int64_t n = int64_t(ep.steps.size());
  auto where = [&](int64_t s) {
    return s < 0    ? std::string("the caller (before step 0)")
           : s >= n ? std::string("the caller (after the last step)")
                    : "step " + std::to_string(s);
  };
  return "value " + std::to_string(b.value) + ": " + htmlEscape(b.name) + "\n" + withCommas(b.bytes) +
         " bytes (" + bytes(b.bytes) + ") at offset " + withCommas(b.offset) + "\nwritten by " +
         where(b.firstStep) + ", last read by " + where(b.lastStep);
}

/// x: plan step (a column before step 0 for the arguments and one after the
/// last for the results); y: arena offset; one rectangle per buffer.
std::string arenaChart(const EntryPoint &ep, const std::vector<BufferLife> &lives) {
  const double cols = double(ep.steps.size() + 2);
  const double arena = double(std::max<int64_t>(ep.arenaBytes, 1));
  auto x = [&](int64_t step) { return kLeft + kWidth * double(step + 1) / cols; };
  auto y = [&](int64_t off) { return kTop + kHeight * double(off) / arena; };
  std::string svg = "<svg class=arena data-entry='" + htmlEscape(ep.name) + "' viewBox='0 0 " +
                    num(kLeft + kWidth + 10, 0) + " " + num(kTop + kHeight + 40, 0) +
                    "' width='100%' role=img aria-label='arena of " + htmlEscape(ep.name) + "'>";
  for (int q = 0; q <= 4; ++q) {
    const int64_t off = int64_t(arena * q / 4);
    svg += tick(kLeft, y(off), kLeft + kWidth, y(off), "grid") +
           text(kLeft - 4, y(off) + 4, bytes(off), "end");
  }
  const int64_t every = std::max<int64_t>(1, int64_t(ep.steps.size()) / 10);
  for (int64_t s = 0; s < int64_t(ep.steps.size()); s += every)
    svg += tick(x(s), kTop + kHeight, x(s), kTop + kHeight + 4) +
           text(x(s), kTop + kHeight + 16, std::to_string(s), "middle");
  svg += text(kLeft + kWidth / 2, kTop + kHeight + 32, "plan step", "middle") +
         tick(kLeft, kTop, kLeft, kTop + kHeight) +
         tick(kLeft, kTop + kHeight, kLeft + kWidth, kTop + kHeight);
  for (const BufferLife &b : lives) {
    const double h = std::max(kHeight * double(b.bytes) / arena, 0.8);
    svg += "<rect class='buf k-" + b.writer + "' data-value=" + std::to_string(b.value) +
           " data-offset=" + std::to_string(b.offset) + " data-bytes=" + std::to_string(b.bytes) +
           " x=" + num(x(b.firstStep), 2) + " y=" + num(y(b.offset), 2) +
           " width=" + num(x(b.lastStep + 1) - x(b.firstStep), 2) + " height=" + num(h, 2) +
           "><title>" + lifeTitle(b, ep) + "</title></rect>";
  }
  return svg + "</svg>";
}

std::string legend(const std::vector<BufferLife> &lives) {
  std::set<std::string> kinds;
  for (const BufferLife &b : lives)
    kinds.insert(b.writer);
  std::string h = "<p class=legend>";
  for (const std::string &k : kinds)
    h += "<span><i class=k-" + k + "></i>" + k + "</span>";
  return h + "</p>";
}

std::string entryBlock(const EntryPoint &ep) {
  const std::vector<BufferLife> lives = bufferLifetimes(ep);
  int64_t sum = 0, peak = 0;
  for (const BufferLife &b : lives)
    sum += b.bytes;
  for (int64_t s = -1; s <= int64_t(ep.steps.size()); ++s) {
    int64_t live = 0;
    for (const BufferLife &b : lives)
      live += b.firstStep <= s && s <= b.lastStep ? b.bytes : 0;
    peak = std::max(peak, live);
  }
  std::string h = "<h3>" + htmlEscape(ep.name) + ": " + std::to_string(ep.rows) +
                  (ep.rows == 1 ? " row, " : " rows, ") + std::to_string(ep.steps.size()) +
                  " steps, arena " + bytes(ep.arenaBytes) + "</h3>";
  h += "<p>" + withCommas(int64_t(lives.size())) + " buffers totalling " + bytes(sum) +
       " share an arena of " + withCommas(ep.arenaBytes) + " bytes (" +
       num(double(sum) / double(std::max<int64_t>(ep.arenaBytes, 1)), 1) +
       "&times; reuse); at most " + bytes(peak) +
       " are live at once. Hover a buffer for its name, "
       "size and steps; click it to outline every buffer that reuses its bytes.</p>";
  h += "<div class=chart>" + arenaChart(ep, lives) + "<p class=bufinfo></p></div>" + legend(lives);
  return h;
}

/// Under a sliding window: the pages a sequence gives back as it grows.
std::string windowNote(const Plan &p) {
  if (const KVCacheLayout &w = p.windowCache; w.layers > 0)
    return " The " + std::to_string(w.layers) + " sliding-window layers (each row reads its last " +
           withCommas(windowPoolWindow(p)) + " keys) keep their keys and values in a pool of " +
           "their own, " + withCommas(w.pages) + " pages (" + bytes(w.bytes()) +
           ") through their own page table: a sequence gives back their pages behind the "
           "window as it grows and holds at most " +
           withCommas(windowPeakPages(p.model, p.settings)) + " of them at once. The " +
           std::to_string(p.kvCache.layers) + " other layers keep every page, in the pool above.";
  const int64_t perSeq = sequencePeakPages(p);
  if (perSeq >= p.kvCache.pagesPerSequence) return "";
  return " Each row reads its last " + withCommas(attentionWindow(p)) +
         " keys (a sliding window): a sequence gives back the pages behind its window as it "
         "grows, and holds at most " +
         withCommas(perSeq) + " of its " + withCommas(p.kvCache.pagesPerSequence) +
         " pages at once.";
}

std::string kvCacheBlock(const Plan &p) {
  const KVCacheLayout &kv = p.kvCache;
  const int64_t elt = dtypeBytes(kv.dtype);
  const int64_t headBytes = kv.pageSize * kv.headDim * elt, page = kv.kvHeads * headBytes;
  const int64_t part = kv.pages * page;
  std::string h =
      "<h3>KV cache: " + bytes(kv.bytes()) + " in " + withCommas(kv.pages) +
      " pages</h3>"
      "<p>Layout <code>[layers][keys, values][pages][kv_heads][page_size][head_dim]</code> in " +
      dtypeName(kv.dtype) +
      ". Token position <i>p</i> of a sequence lives in page "
      "<code>page_table[seq][p / " +
      std::to_string(kv.pageSize) + "]</code>, slot <code>p % " + std::to_string(kv.pageSize) +
      "</code>; pages are handed out at run time, so "
      "sequences share the pool and a prefix cache can share pages." +
      windowNote(p) + "</p><table>"
      "<tr><th>level</th><th>count</th><th>bytes each</th></tr>";
  auto row = [&](const std::string &what, int64_t count, int64_t each) {
    h += "<tr><td>" + what + "</td><td class=n>" + withCommas(count) + "</td><td class=n>" +
         withCommas(each) + " (" + bytes(each) + ")</td></tr>";
  };
  row("layer", kv.layers, 2 * part);
  row("keys or values of a layer", 2, part);
  row("page", kv.pages, page);
  row("one KV head's slots in a page", kv.kvHeads, headBytes);
  row("slot (one token, one head)", kv.pageSize, kv.headDim * elt);
  h += "</table>";
  // One layer's keys, page by page: what a sequence at full context owns
  // (at once, under a sliding window).
  const int64_t perSeq = sequencePeakPages(p);
  const int64_t shown = std::min<int64_t>(kv.pages, 128);
  const double w = kWidth / double(shown);
  h += "<svg class=pages viewBox='0 0 " + num(kLeft + kWidth + 10, 0) + " 50' width='100%'>" +
       text(kLeft - 4, 22, "layer 0 keys", "end");
  for (int64_t i = 0; i < shown; ++i) {
    const bool first = i < perSeq;
    h += "<rect x=" + num(kLeft + w * double(i), 2) + " y=8 width=" + num(std::max(w - 1, 0.5), 2) +
         " height=22 fill='" + (first ? "#12b886" : "#b2f2bb") + "'><title>page " +
         std::to_string(i) + ": " + withCommas(page) + " bytes, " + std::to_string(kv.pageSize) +
         " tokens</title></rect>";
  }
  h += text(kLeft, 46,
            "each rectangle a page of " + std::to_string(kv.pageSize) + " tokens; dark: the " +
                std::to_string(perSeq) + " pages one sequence at full context " +
                (perSeq < kv.pagesPerSequence ? "holds at once" : "uses") +
                (shown < kv.pages
                     ? " (first " + std::to_string(shown) + " of " + withCommas(kv.pages) + " shown)"
                     : std::string()));
  return h + "</svg>";
}

} // namespace

std::string memorySection(const ReportInput &in) {
  std::string h = "<section class=part id=memory><h2>Memory plan</h2><p class=lead>The compiler "
                  "plans every activation into one arena. Each chart is an entry point: across, "
                  "its steps in order; down, the arena's bytes. A buffer is a rectangle from the "
                  "step that writes it to the last step that reads it, coloured by the op that "
                  "writes it; rectangles in the same rows at different steps are the same memory, "
                  "reused.</p>";
  for (const auto &[name, ep] : in.plan->entryPoints)
    h += entryBlock(ep);
  return h + kvCacheBlock(*in.plan) + "</section>";
}

namespace {

/// The bytes a plan step reads and writes: its arena operands and results
/// at full rows, and its weights.
int64_t stepBytes(const Plan &p, const Step &s) {
  int64_t b = 0;
  forEachOperand(s, [&](const char *, const Operand &o, bool) {
    if (o.kind == OperandKind::arena)
      b += o.bytes();
  });
  const EmbeddingOp *gather = s.tryAs<EmbeddingOp>();
  for (const std::string &w : stepWeights(s))
    if (const WeightEntry *e = p.findWeight(w))
      b += gather ? gather->result.rows() * e->rowBytes() : int64_t(e->bytes);
  return b;
}

std::string dims(const std::array<int64_t, 3> &d) {
  return std::to_string(d[0]) + "&times;" + std::to_string(d[1]) + "&times;" + std::to_string(d[2]);
}

std::string launchRow(const Plan &p, const EntryPoint &ep, size_t i, const DeviceOp &op,
                      int64_t &lastStep) {
  const bool inPlan = op.step >= 0 && op.step < int64_t(ep.steps.size());
  std::string what = op.kind == DeviceOp::gemm
                         ? "cuBLAS GEMM " + std::to_string(op.m) + "&times;" + std::to_string(op.k)
                     : op.kind == DeviceOp::allReduce
                         ? "NCCL all-reduce, " + std::to_string(op.k) + " f32 per row"
                         : "<code>" + htmlEscape(op.name) + "</code>";
  std::string step = "sampling", moved = "&middot;";
  if (inPlan) {
    const Step &s = ep.steps[size_t(op.step)];
    step = std::to_string(op.step) + " " + s.name() +
           (s.loc.empty() ? "" : " at " + htmlEscape(s.loc));
    // A step lowered to several launches: its bytes count once, at the first.
    if (op.step != lastStep)
      moved = withCommas(stepBytes(p, s));
    lastStep = op.step;
  }
  const bool generated = op.kind == DeviceOp::kernel;
  const std::string grid = generated ? dims(op.grid) : "&middot;";
  const std::string block = generated ? dims(op.block) : "&middot;";
  return "<tr><td class=n>" + std::to_string(i) + "</td><td>" + what + "</td><td>" + grid +
         "</td><td>" + block + "</td><td class=n>" + moved + "</td><td>" + step + "</td></tr>";
}

} // namespace

std::string kernelsSection(const ReportInput &in) {
  std::string h = "<section class=part id=kernels><h2>Kernels</h2><p class=lead>The launch table "
                  "the CUDA runtime replays for each entry point: generated kernels and cuBLAS "
                  "products in order, each lowering one plan step; a call is captured once as a "
                  "CUDA graph with one node per launch. Bytes moved are the step's operands, "
                  "results and weights at full rows (an embedding reads only the rows it "
                  "gathers; reads of the KV cache, which grow with the context, are not "
                  "counted).</p>";
  for (const auto &[name, e] : in.cuda->entries) {
    auto it = in.plan->entryPoints.find(name);
    if (it == in.plan->entryPoints.end())
      continue;
    // A tensor-parallel plan samples on the host, from every rank's slice.
    const bool sharded = in.plan->ranks() > 1;
    const LaunchCounts c = countLaunches(e, !sharded);
    int64_t lastStep = -1;
    h += "<h3>" + htmlEscape(name) + ": " + std::to_string(c.nodes()) + " graph nodes (" +
         std::to_string(c.kernels) + " kernels, " + std::to_string(c.products) +
         " cuBLAS products" +
         (sharded ? ", " + std::to_string(c.allReduces) + " NCCL all-reduces" : std::string()) +
         ")</h3>"
         "<details><summary>launch table</summary><table><tr><th>#</th><th>launch</th><th>grid</th>"
         "<th>block</th><th>bytes moved</th><th>plan step</th></tr>";
    for (size_t i = 0; i < e.ops.size(); ++i)
      h += launchRow(*in.plan, it->second, i, e.ops[i], lastStep);
    if (!sharded)
      for (size_t i = 0; i < e.sampling.size(); ++i)
        h += launchRow(*in.plan, it->second, e.ops.size() + i, e.sampling[i], lastStep);
    h += "</table></details>";
  }
  return h + "</section>";
}

namespace {

struct RoofPoint {
  std::string label, cls;
  double intensity, gflops;
};

/// Log-log: x FLOP per byte, y GFLOP/s; the bandwidth slope and the peak.
std::string rooflineChart(const BenchFigures &b, const std::vector<RoofPoint> &pts) {
  double xmin = 1e9, xmax = 0, ymin = 1e300, ymax = b.peakGflops;
  for (const RoofPoint &p : pts) {
    xmin = std::min(xmin, p.intensity), xmax = std::max(xmax, p.intensity);
    ymin = std::min(ymin, p.gflops), ymax = std::max(ymax, p.gflops);
  }
  const double lx0 = std::floor(std::log10(std::max(xmin, 1e-3))) - 1;
  const double lx1 = std::ceil(std::log10(xmax)) + 1;
  if (b.peakGflops <= 0) ymax = std::max(ymax, b.bandwidthGBs * std::pow(10, lx1));
  const double ly1 = std::ceil(std::log10(ymax) + 0.1);
  const double ly0 = std::min(std::floor(std::log10(std::max(ymin, 1e-9))) - 1, ly1 - 2);
  auto x = [&](double v) { return kLeft + kWidth * (std::log10(v) - lx0) / (lx1 - lx0); };
  auto y = [&](double v) { // clamped to the plot
    const double f = (std::log10(std::max(v, 1e-12)) - ly0) / (ly1 - ly0);
    return kTop + kHeight * (1 - std::clamp(f, 0.0, 1.0));
  };
  std::string svg = "<svg class=roofline viewBox='0 0 " + num(kLeft + kWidth + 30, 0) + " " +
                    num(kTop + kHeight + 40, 0) + "' width='100%'>";
  for (double e = lx0; e <= lx1; ++e)
    svg += tick(x(std::pow(10, e)), kTop, x(std::pow(10, e)), kTop + kHeight, "grid") +
           text(x(std::pow(10, e)), kTop + kHeight + 14, num(std::pow(10, e), 3), "middle");
  for (double e = ly0; e <= ly1; ++e)
    svg += tick(kLeft, y(std::pow(10, e)), kLeft + kWidth, y(std::pow(10, e)), "grid") +
           text(kLeft - 4, y(std::pow(10, e)) + 4, num(std::pow(10, e), 3), "end");
  svg += text(kLeft + kWidth / 2, kTop + kHeight + 32, "arithmetic intensity (FLOP per byte)",
              "middle") +
         "<text x=12 y=" + num(kTop + kHeight / 2, 0) + " transform='rotate(-90 12 " +
         num(kTop + kHeight / 2, 0) + ")' text-anchor=middle>GFLOP/s</text>";
  std::string roof = "M";
  for (int i = 0; i <= 200; ++i) {
    const double v = std::pow(10, lx0 + (lx1 - lx0) * i / 200.0);
    double g = b.bandwidthGBs * v;
    if (b.peakGflops > 0)
      g = std::min(g, b.peakGflops);
    roof += (i ? " L" : "") + num(x(v), 1) + "," + num(y(g), 1);
  }
  svg += "<path class=pt-roof d='" + roof + "'><title>the machine: " + num(b.bandwidthGBs, 1) +
         " GB/s" +
         (b.peakGflops > 0 ? ", " + num(b.peakGflops, 1) + " GFLOP/s peak" : std::string()) +
         "</title></path>";
  for (const RoofPoint &p : pts)
    svg += "<circle class=" + p.cls + " cx=" + num(x(p.intensity), 1) +
           " cy=" + num(y(p.gflops), 1) + " r=6><title>" + htmlEscape(p.label) + ": " +
           num(p.intensity, 2) + " FLOP/byte, " + num(p.gflops, 2) + " GFLOP/s</title></circle>" +
           text(x(p.intensity) + 9, y(p.gflops) + 4, htmlEscape(p.label));
  return svg + "</svg>";
}

std::string costRow(const std::string &what, const CallCost &c) {
  return "<tr><td>" + what + "</td><td class=n>" + withCommas(int64_t(c.bytes)) + "</td><td class=n>" +
         num(c.flops / 1e9, 3) + "</td><td class=n>" + num(c.flops / std::max(c.bytes, 1.0), 2) +
         "</td></tr>";
}

/// Tensor parallelism: what each call sums across ranks, against what it
/// reads from memory. A ring all-reduce sends (and receives) 2 (N - 1) / N
/// of the summed bytes on each rank's link.
std::string communicationTable(const Plan &p, int64_t ctx) {
  const int64_t n = p.ranks();
  if (n <= 1) return "";
  const int64_t batch = p.settings.maxBatch, chunk = p.settings.prefillChunk;
  std::string h = "<h3>Communication between the " + std::to_string(n) +
                  " ranks</h3><p>Bytes are one rank's: what its <code>all_reduce</code> steps sum "
                  "with the other ranks, the bytes a ring all-reduce sends on its link (2 (N - 1) "
                  "/ N of them), and the memory it reads in the same call (above). Each all-reduce "
                  "also costs a fixed latency, a few microseconds between GPUs, so at one row the "
                  "count matters more than the bytes.</p><table><tr><th>call</th><th>all-reduces"
                  "</th><th>bytes summed</th><th>bytes sent per rank</th><th>memory bytes per "
                  "byte sent</th></tr>";
  auto row = [&](const std::string &what, const std::string &entry, int64_t rows, double memory) {
    const Communication c = allReduceTraffic(p, entry, rows);
    const double sent = double(c.bytes) * 2.0 * double(n - 1) / double(n);
    return "<tr><td>" + what + "</td><td class=n>" + std::to_string(c.allReduces) +
           "</td><td class=n>" + withCommas(c.bytes) + "</td><td class=n>" +
           withCommas(int64_t(sent)) + "</td><td class=n>" +
           num(memory / std::max(sent, 1.0), 0) + "</td></tr>";
  };
  h += row("decode step, 1 sequence", "decode", 1, decodeStepCost(p, 1, ctx).bytes);
  if (batch > 1)
    h += row("decode step, " + std::to_string(batch) + " sequences", "decode", batch,
             decodeStepCost(p, batch, ctx).bytes);
  h += row("prefill chunk, " + std::to_string(chunk) + " tokens", "prefill", chunk,
           prefillCost(p, chunk).bytes);
  return h + "</table>";
}

} // namespace

std::string rooflineSection(const ReportInput &in) {
  const Plan &p = *in.plan;
  const int64_t ctx = in.bench
                          ? std::min(p.settings.maxSeqLen, in.bench->promptLen + in.bench->gen / 2)
                          : p.settings.maxSeqLen / 2;
  const int64_t batch = p.settings.maxBatch, chunk = p.settings.prefillChunk;
  const CallCost d1 = decodeStepCost(p, 1, ctx), dn = decodeStepCost(p, batch, ctx);
  const CallCost pc = prefillCost(p, chunk);
  std::string h = "<section class=part id=roofline><h2>Roofline</h2><p class=lead>What one call "
                  "reads (weights and KV cache) and computes (matrix products and attention), at a "
                  "context of " +
                  withCommas(ctx) +
                  " tokens. Decode reads every weight for little "
                  "arithmetic, so memory bandwidth bounds it; prefill reuses each weight across "
                  "the chunk's rows.</p><table><tr><th>call</th><th>bytes</th><th>GFLOP</th>"
                  "<th>FLOP per byte</th></tr>";
  h += costRow("decode step, 1 sequence", d1);
  if (batch > 1)
    h += costRow("decode step, " + std::to_string(batch) + " sequences", dn);
  h += costRow("prefill chunk, " + std::to_string(chunk) + " tokens", pc) + "</table>";
  h += communicationTable(p, ctx);
  if (!in.bench)
    return h +
           "<p class=note>Give <code>--bench BENCH.json</code> (the output of <code>kvplan bench "
           "MODEL --json</code>) to draw these against the machine's bandwidth and peak and to "
           "place the measured speed.</p></section>";
  const BenchFigures &b = *in.bench;
  const CallCost pm = prefillCost(p, b.promptLen);
  auto attain = [&](const CallCost &c) {
    const double g = b.bandwidthGBs * c.flops / c.bytes;
    return b.peakGflops > 0 ? std::min(g, b.peakGflops) : g;
  };
  std::vector<RoofPoint> pts = {
      {"decode, 1 sequence (bound)", "pt-model", d1.flops / d1.bytes, attain(d1)},
      {"prefill chunk (bound)", "pt-model", pc.flops / pc.bytes, attain(pc)},
      {"decode measured", "pt-measured", d1.flops / d1.bytes, b.decodeTokS * d1.flops / 1e9},
      {"prefill measured", "pt-measured", pm.flops / pm.bytes,
       b.prefillTokS * pm.flops / double(b.promptLen) / 1e9}};
  if (batch > 1)
    pts.insert(pts.begin() + 1, {"decode, " + std::to_string(batch) + " sequences (bound)",
                                 "pt-model", dn.flops / dn.bytes, attain(dn)});
  h += "<p>Measured: " + num(b.bandwidthGBs, 1) + " GB/s read bandwidth" +
       (b.peakGflops > 0 ? ", " + num(b.peakGflops, 1) + " GFLOP/s peak"
                         : std::string(", no peak FLOP rate in the bench result")) +
       "; decode " + num(b.decodeTokS, 1) +
       " tok/s = " + num(100 * b.decodeTokS * d1.bytes / 1e9 / b.bandwidthGBs, 0) +
       "% of the bandwidth bound; prefill of " + std::to_string(b.promptLen) + " tokens " +
       num(b.prefillTokS, 1) + " tok/s.</p>";
  return h + rooflineChart(b, pts) +
         "<p class=legend><span><i class=pt-model></i>what the plan allows "
         "on this machine</span><span><i class=pt-measured></i>measured</span></p></section>";
}

} // namespace kvplan::report
