// kvplan report's page on compiled models: buffer lifetimes (the rest of its
// data is in ReportDataTest.cpp), the page's structure parsed back from the
// HTML (every stage, every arena buffer, no external resource, balanced
// tags), and the page in headless Chromium (no script error, a rendered
// PNG); the browser tests skip without it.
#include "report/Report.h"

#include "codegen/Compiler.h"
#include "kvplan/Version.h"
#include "codegen/CudaCodegen.h"
#include "frontend/ConfigParser.h"
#include "passes/Passes.h"
#include "plan/Cost.h"
#include "support/Error.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include <unistd.h>

namespace fs = std::filesystem;
using namespace kvplan;

namespace {

struct Compiled {
  Plan plan;
  std::vector<IRStage> stages;
  std::optional<CudaProgram> cuda;
};

Compiled compileTiny(const std::string &model, Target target) {
  SettingOverrides o;
  o.target = target;
  ModelConfig cfg = loadModelConfig(std::string(KVPLAN_SOURCE_DIR) + "/" + model, o);
  Compiled c;
  CompileOutput out = compileModel(cfg, [&](int, const std::string &stage, mlir::ModuleOp m) {
    c.stages.push_back({stage, printModule(m)});
  });
  if (target == Target::cuda)
    c.cuda = generateCuda(out.plan, {"sm_80"}).program;
  c.plan = out.plan;
  return c;
}

std::string render(const Compiled &c, std::optional<BenchFigures> bench = {}) {
  ReportInput in;
  in.source = "models/tiny.toml";
  in.plan = &c.plan;
  in.stages = c.stages;
  in.cuda = c.cuda ? &*c.cuda : nullptr;
  in.bench = bench;
  in.generator = std::string("kvplan ") + KVPLAN_VERSION;
  return renderReport(in);
}

/// The arena values of an entry point, straight from the plan.
std::set<int64_t> arenaValues(const EntryPoint &ep) {
  std::set<int64_t> v;
  for (const Operand &a : ep.args)
    if (a.kind == OperandKind::arena)
      v.insert(a.value);
  for (const Step &s : ep.steps)
    for (const Operand *o : stepOutputs(s))
      if (o->kind == OperandKind::arena)
        v.insert(o->value);
  return v;
}

std::string between(const std::string &page, const std::string &open, const std::string &close) {
  const size_t a = page.find(open);
  if (a == std::string::npos)
    return "";
  return page.substr(a, page.find(close, a) - a);
}

/// Every element closed in order (outside <style> and <script>); void and
/// self-closed elements aside. Returns the first problem, or "".
std::string tagBalance(const std::string &page) {
  static const std::set<std::string> kVoid = {"meta", "br",   "img",     "input",
                                              "hr",   "link", "!DOCTYPE"};
  std::vector<std::string> stack;
  std::regex tag(R"(<(/?)([A-Za-z!][A-Za-z0-9]*)([^>]*)>)");
  std::string text = std::regex_replace(page, std::regex(R"(<(style|script)>[\s\S]*?</\1>)"), "");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), tag); it != std::sregex_iterator();
       ++it) {
    const std::string name = (*it)[2], attrs = (*it)[3];
    if ((*it)[1].length() == 0) {
      if (!kVoid.count(name) && (attrs.empty() || attrs.back() != '/'))
        stack.push_back(name);
      continue;
    }
    if (stack.empty() || stack.back() != name)
      return "</" + name + "> closes " +
             (stack.empty() ? std::string("nothing") : "<" + stack.back() + ">");
    stack.pop_back();
  }
  return stack.empty() ? "" : "<" + stack.back() + "> never closed";
}

} // namespace

TEST(ReportData, LifetimesFollowTheSteps) {
  const Compiled c = compileTiny("models/tiny.toml", Target::cpu);
  for (const auto &[name, ep] : c.plan.entryPoints) {
    const std::vector<BufferLife> lives = bufferLifetimes(ep);
    EXPECT_EQ(lives.size(), arenaValues(ep).size()) << name;
    for (const BufferLife &b : lives) {
      int64_t first = -1, last = -1;
      for (size_t i = 0; i < ep.steps.size(); ++i) {
        for (const Operand *o : stepOutputs(ep.steps[i]))
          if (o->kind == OperandKind::arena && o->value == b.value)
            first = int64_t(i);
        for (const Operand *o : stepInputs(ep.steps[i]))
          if (o->kind == OperandKind::arena && o->value == b.value)
            last = int64_t(i);
      }
      for (const Operand &r : ep.results)
        if (r.value == b.value)
          last = int64_t(ep.steps.size());
      EXPECT_EQ(b.firstStep, first) << name << " value " << b.value;
      EXPECT_EQ(b.lastStep, std::max(last, first)) << name << " value " << b.value;
    }
    // Buffers that share bytes are never live at the same step: what the
    // chart shows as reuse is reuse.
    for (const BufferLife &a : lives)
      for (const BufferLife &b : lives) {
        if (a.value >= b.value)
          continue;
        const bool bytes = a.offset < b.offset + b.bytes && b.offset < a.offset + a.bytes;
        const bool time = a.firstStep <= b.lastStep && b.firstStep <= a.lastStep;
        EXPECT_FALSE(bytes && time) << name << ": values " << a.value << " and " << b.value;
      }
  }
}

// The roofline's costs stop growing at a sliding window: past it a decode
// step reads and multiplies what a full-attention step at the window does.
TEST(ReportData, ASlidingWindowCapsWhatAttentionReads) {
  auto plan = [](const std::string &window) {
    const std::string text =
        "[model]\nname = \"w\"\narchitecture = \"mistral\"\nhidden_size = 64\n"
        "intermediate_size = 96\nnum_layers = 2\nnum_heads = 4\nnum_kv_heads = 2\n"
        "vocab_size = 97\nmax_position_embeddings = 128\nrms_norm_eps = 1e-5\nbos_token_id = 1\n"
        "eos_token_id = 2\n" +
        window + "[compile]\nmax_seq_len = 128\n";
    ModelConfig cfg =
        parseTomlSpec(text, "w.toml", [](const std::string &w) { ADD_FAILURE() << w; });
    validate(cfg);
    return compileModel(cfg).plan;
  };
  const Plan full = plan(""), slid = plan("sliding_window = 16\n");
  EXPECT_EQ(attentionWindow(full), 0);
  EXPECT_EQ(attentionWindow(slid), 16);
  EXPECT_EQ(decodeStepCost(slid, 1, 10).bytes, decodeStepCost(full, 1, 10).bytes);
  EXPECT_EQ(decodeStepCost(slid, 1, 10).flops, decodeStepCost(full, 1, 10).flops);
  // At context 100 the row reads its last 16 keys (its own among them).
  EXPECT_EQ(decodeStepCost(slid, 1, 100).bytes, decodeStepCost(full, 1, 15).bytes);
  EXPECT_EQ(decodeStepCost(slid, 1, 100).flops, decodeStepCost(full, 1, 16).flops);
  // A prompt of 100: row r (from 1) scores min(r, 16) keys where it scored
  // r, in each of 2 layers, 4 flops a key and a query column (4 heads of 16).
  const double saved = 2.0 * 4.0 * 64.0 * (84.0 * 85.0 / 2.0);
  EXPECT_DOUBLE_EQ(prefillCost(full, 100).flops - prefillCost(slid, 100).flops, saved);
}

TEST(ReportData, KvCapacityCountsEachPoolsPages) {
  using L = KvCapacity::Limit;
  auto expect = [](const Plan &p, int64_t batch, int64_t context, L limit) {
    const KvCapacity c = kvCapacity(p, batch);
    EXPECT_EQ(c.context, context) << "batch " << batch;
    EXPECT_EQ(int(c.limit), int(limit)) << "batch " << batch;
  };
  // tiny: 4 sequences of 512 tokens, 128 pages of 16; trained for 2,048
  // positions, which one sequence may fill.
  const Plan tiny = compileTiny("models/tiny.toml", Target::cpu).plan;
  ASSERT_EQ(tiny.kvCache.pages, 128);
  expect(tiny, 1, 2048, L::positions);
  expect(tiny, 2, 1024, L::pool);
  expect(tiny, 4, 512, L::pool);
  expect(tiny, 128, 16, L::pool);
  expect(tiny, 256, 0, L::pool);
  expect(tiny, 3, 672, L::pool); // 42 pages each

  // Gemma 3 1B: its 4 global layers' pool of 512 pages (8,192 tokens) and
  // its 22 sliding layers' pool of 65 pages, a window of 512. One sequence
  // holds 65 sliding pages at most whatever its length, so 8,192 tokens;
  // two take 32 pages each, which hold 512 tokens, and the 513th holds a
  // 33rd page while the first is still in its window.
  ModelConfig cfg = loadModelConfig(std::string(KVPLAN_SOURCE_DIR) + "/models/gemma-3-1b.toml");
  const Plan gemma = compileModel(cfg).plan;
  ASSERT_EQ(gemma.kvCache.pages, 512);
  ASSERT_EQ(gemma.windowCache.pages, 65);
  expect(gemma, 1, 8192, L::pool);
  expect(gemma, 2, 512, L::windowPool);
  expect(gemma, 4, 256, L::windowPool); // 16 pages each
  expect(gemma, 64, 16, L::windowPool);

  // Every layer under a window of 16: the pool holds one sequence's pages
  // under it, fewer than its context's, so any length fits.
  cfg = parseTomlSpec("[model]\nname = \"w\"\narchitecture = \"mistral\"\nhidden_size = 64\n"
                      "intermediate_size = 96\nnum_layers = 2\nnum_heads = 4\nnum_kv_heads = 2\n"
                      "vocab_size = 97\nmax_position_embeddings = 4096\nrms_norm_eps = 1e-5\n"
                      "bos_token_id = 1\neos_token_id = 2\nsliding_window = 16\n"
                      "[compile]\nmax_seq_len = 1024\n",
                      "w.toml", [](const std::string &w) { ADD_FAILURE() << w; });
  validate(cfg);
  const Plan slid = compileModel(cfg).plan;
  ASSERT_LT(slid.kvCache.pages * 16, 4096);
  expect(slid, 1, 4096, L::positions);
}

TEST(ReportPage, EveryStageInOrder) {
  const Compiled c = compileTiny("models/tiny.toml", Target::cpu);
  const std::string page = render(c);
  std::vector<std::string> want = {"frontend"};
  for (const std::string &p : pipelinePassNames(Target::cpu))
    want.push_back(p);
  std::vector<std::string> got;
  std::regex stage("data-stage='([^']*)'");
  for (auto it = std::sregex_iterator(page.begin(), page.end(), stage);
       it != std::sregex_iterator(); ++it)
    got.push_back((*it)[1]);
  EXPECT_EQ(got, want);
}

TEST(ReportPage, EveryArenaBufferInItsChart) {
  for (Target t : {Target::cpu, Target::cuda}) {
    const Compiled c = compileTiny("models/tiny.toml", t);
    const std::string page = render(c);
    for (const auto &[name, ep] : c.plan.entryPoints) {
      const std::string svg = between(page, "<svg class=arena data-entry='" + name + "'", "</svg>");
      ASSERT_FALSE(svg.empty()) << "no chart for " << name;
      std::set<int64_t> got;
      std::regex value("<rect class='buf [^']*' data-value=([0-9]+)");
      for (auto it = std::sregex_iterator(svg.begin(), svg.end(), value);
           it != std::sregex_iterator(); ++it)
        got.insert(std::stoll((*it)[1]));
      EXPECT_EQ(got, arenaValues(ep)) << targetName(t) << " " << name;
    }
  }
}

TEST(ReportPage, SelfContainedEscapedAndBalanced) {
  const Compiled c = compileTiny("models/tiny.toml", Target::cuda);
  const std::string page = render(c);
  EXPECT_EQ(page.find("<script src"), std::string::npos);
  EXPECT_EQ(page.find("<link"), std::string::npos);
  EXPECT_EQ(page.find("@import"), std::string::npos);
  EXPECT_EQ(page.find("url("), std::string::npos);
  std::regex external(R"((src|href|xlink:href)\s*=\s*['"]?(https?:|//))", std::regex::icase);
  EXPECT_FALSE(std::regex_search(page, external));
  // The IR's angle brackets are text, not tags.
  EXPECT_FALSE(std::regex_search(page, std::regex("tensor<[0-9]")));
  EXPECT_NE(page.find("&lt;4x256xf32&gt;"), std::string::npos);
  EXPECT_EQ(tagBalance(page), "");
  // HTML reads an unquoted value's slash as part of it: "<line y2=10/>" is not closed.
  EXPECT_FALSE(std::regex_search(page, std::regex(R"(=[^'"\s>]+/>)")));
  EXPECT_EQ(tagBalance("<div><p></div>"), "</div> closes <p>"); // the checker can fail
}

TEST(ReportPage, KernelsRoofAndArtifactNote) {
  const Compiled cuda = compileTiny("models/tiny.toml", Target::cuda);
  const std::string page = render(cuda);
  for (const auto &[name, e] : cuda.cuda->entries) {
    const size_t nodes = e.ops.size() + e.sampling.size();
    EXPECT_NE(page.find("<h3>" + name + ": " + std::to_string(nodes) + " graph nodes"),
              std::string::npos)
        << name;
  }
  // The embedding moves the ids, its f32 rows and the table rows it
  // gathers, not the whole table (tiny at batch 4: 4 ids of 4 bytes, then
  // twice 4 rows of 256 f32: 8,208 bytes, not 512 KiB).
  const EntryPoint &decode = cuda.plan.entryPoints.at("decode");
  ASSERT_EQ(decode.steps.at(0).kind(), OpKind::embedding);
  ASSERT_EQ(decode.steps[0].as<EmbeddingOp>().result.rows(), 4);
  EXPECT_NE(page.find("</td><td class=n>8,208</td><td>0 embedding"), std::string::npos);
  // tiny (max batch 4, chunk 64) on cuda: decode.1, prefill.8, prefill.32.
  EXPECT_NE(page.find("<tr><th>smaller copies</th><td>decode at 1, prefill at 8, 32 rows"),
            std::string::npos);
  Compiled cpu = compileTiny("models/tiny.toml", Target::cpu);
  EXPECT_EQ(render(cpu).find("id=kernels"), std::string::npos);
  EXPECT_EQ(render(cpu).find("smaller copies"), std::string::npos);
  // A plan whose kernels ask L2 ahead says so among its settings.
  EXPECT_EQ(page.find("L2 prefetch"), std::string::npos);
  Compiled l2 = cuda;
  l2.plan.settings.l2PrefetchMib = 24;
  EXPECT_NE(render(l2).find("<tr><th>L2 prefetch</th><td>24 MiB: each kernel asks the GPU's "
                            "L2 for the next products' weights"),
            std::string::npos);
  BenchFigures b;
  b.bandwidthGBs = 30, b.peakGflops = 200, b.decodeTokS = 1000, b.prefillTokS = 5000;
  b.promptLen = 64, b.gen = 64;
  const std::string measured = render(cpu, b);
  const std::string roof = between(measured, "<svg class=roofline", "</svg>");
  EXPECT_EQ(std::regex_search(roof, std::regex("<circle class=pt-measured")), true);
  EXPECT_NE(roof.find("decode measured"), std::string::npos);
  EXPECT_NE(roof.find("prefill measured"), std::string::npos);
  EXPECT_EQ(render(cpu).find("<svg class=roofline"), std::string::npos);
  cpu.stages.clear();
  EXPECT_NE(render(cpu).find("Compile from the model to see every pass"), std::string::npos);
}

namespace {

bool haveChromium() { return std::system("command -v chromium >/dev/null 2>&1") == 0; }

/// Headless Chromium's output for `args`: a try takes about 3 s, but now
/// and then Chromium hangs (once a whole ctest run's 120 s, on a loaded
/// machine), so each try is cut at 45 s and a try that left nothing (no
/// output, or no `made` file) is made once more.
std::string runChromium(const std::string &args, const fs::path &made = {}) {
  const std::string cmd = "timeout -k 5 45 chromium --headless --no-sandbox --disable-gpu "
                          "--hide-scrollbars " +
                          args + " 2>/dev/null";
  std::string out;
  for (int attempt = 0; attempt < 2; ++attempt) {
    out.clear();
    if (FILE *p = popen(cmd.c_str(), "r")) {
      char buf[65536];
      for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;)
        out.append(buf, n);
      pclose(p);
    }
    if (made.empty() ? !out.empty() : fs::exists(made)) break;
  }
  return out;
}

fs::path writePage(const std::string &name, const std::string &page) {
  fs::path dir = fs::temp_directory_path() / ("kvplan-report-test-" + std::to_string(getpid()));
  fs::create_directories(dir);
  fs::path file = dir / name;
  std::ofstream(file, std::ios::binary) << page;
  return file;
}

/// The <html ...> start tag Chromium's DOM has after the scripts ran.
std::string htmlTag(const std::string &dom) {
  const size_t a = dom.find("<html");
  return a == std::string::npos ? "" : dom.substr(a, dom.find('>', a) - a + 1);
}

} // namespace

TEST(ReportBrowser, RunsWithoutScriptErrors) {
  if (!haveChromium())
    GTEST_SKIP() << "chromium is not installed (scripts/setup.sh installs it)";
  const Compiled c = compileTiny("models/tiny.toml", Target::cuda);
  const fs::path file = writePage("report.html", render(c));
  const std::string tag = htmlTag(runChromium("--dump-dom file://" + file.string()));
  EXPECT_NE(tag.find("data-ok=\"1\""), std::string::npos) << tag;
  EXPECT_EQ(tag.find("data-js-error"), std::string::npos) << tag;
  // The same check sees an error when there is one.
  std::string broken = render(c);
  broken.insert(broken.rfind("</body>"), "<script>notAFunction();</script>");
  const fs::path bad = writePage("broken.html", broken);
  EXPECT_NE(htmlTag(runChromium("--dump-dom file://" + bad.string())).find("data-js-error"),
            std::string::npos);
}

TEST(ReportBrowser, RendersToPng) {
  if (!haveChromium())
    GTEST_SKIP() << "chromium is not installed (scripts/setup.sh installs it)";
  const Compiled c = compileTiny("models/tiny.toml", Target::cpu);
  const fs::path file = writePage("shot.html", render(c));
  const fs::path png = file.parent_path() / "report.png";
  runChromium("--screenshot=" + png.string() + " --window-size=1280,1600 file://" + file.string(),
              png);
  std::ifstream in(png, std::ios::binary);
  ASSERT_TRUE(in) << "chromium wrote no screenshot";
  std::string head(8, '\0');
  in.read(head.data(), 8);
  EXPECT_EQ(head, "\x89PNG\r\n\x1a\n");
  EXPECT_GT(fs::file_size(png), 20000u) << "a blank page compresses to a few KB";
  // KVPLAN_REPORT_SCREENSHOT=docs/report.png keeps it (the README's picture).
  if (const char *keep = std::getenv("KVPLAN_REPORT_SCREENSHOT"))
    fs::copy_file(png, keep, fs::copy_options::overwrite_existing);
}
