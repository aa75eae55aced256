// kvplan report's data, apart from any compiled model: the pass-to-pass
// diff, op counts and the bench result the roofline reads (MLIR-free, so
// the sanitized build runs it too; tests/unit/ReportTest.cpp has the page).
#include "report/Report.h"

#include "support/Error.h"

#include <gtest/gtest.h>

using namespace kvplan;

TEST(ReportDiff, KeepsCommonLinesAndMarksChanges) {
  const std::vector<DiffLine> d = diffLines("a\nb\nc\nd\n", "a\nc\nx\nd\n");
  const std::vector<std::pair<DiffKind, std::string>> want = {{DiffKind::same, "a"},
                                                              {DiffKind::removed, "b"},
                                                              {DiffKind::same, "c"},
                                                              {DiffKind::added, "x"},
                                                              {DiffKind::same, "d"}};
  ASSERT_EQ(d.size(), want.size());
  for (size_t i = 0; i < d.size(); ++i) {
    EXPECT_EQ(d[i].kind, want[i].first) << i;
    EXPECT_EQ(d[i].text, want[i].second) << i;
  }
}

TEST(ReportDiff, SsaRenumberingIsNotAChange) {
  const std::vector<DiffLine> d = diffLines("%3 = llm.add %1, %2\n%keys_4 = x %arg2\n",
                                            "%5 = llm.add %3, %4\n%keys_7 = x %arg3\n");
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[0].kind, DiffKind::same);
  EXPECT_EQ(d[0].text, "%5 = llm.add %3, %4"); // shown as the later stage has it
  EXPECT_EQ(d[1].kind, DiffKind::same);
  const std::vector<DiffLine> e = diffLines("%3 = llm.add %1, %2\n", "%3 = llm.mul %1, %2\n");
  ASSERT_EQ(e.size(), 2u);
  EXPECT_EQ(e[0].kind, DiffKind::removed);
  EXPECT_EQ(e[1].kind, DiffKind::added);
}

TEST(ReportDiff, EmptySides) {
  EXPECT_TRUE(diffLines("", "").empty());
  const std::vector<DiffLine> d = diffLines("", "x\ny\n");
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[0].kind, DiffKind::added);
  EXPECT_EQ(diffLines("x\n", "")[0].kind, DiffKind::removed);
}

TEST(ReportOps, CountsOpsNotAttributesOrTypes) {
  const std::string ir =
      "module attributes {llm.model = \"m\"} {\n"
      "  llm.weight @w : tensor<2x2xf32>\n"
      "  func.func @f(%arg0: !llm.kv_cache<layers = 1>) attributes {llm.entry = \"decode\"} {\n"
      "    %0 = llm.linear @w(%1) : tensor<1x2xf32> -> tensor<1x2xf32>\n"
      "    %2:3 = llm.linear @w(%0) {llm.offsets = array<i64: 0>} : t\n"
      "    // llm.add in a comment\n"
      "    return %2#0 : tensor<1x2xf32>\n  }\n}\n";
  const auto counts = countOps(ir);
  const std::vector<std::pair<std::string, int64_t>> want = {
      {"func.func", 1}, {"llm.linear", 2}, {"llm.weight", 1}};
  EXPECT_EQ(counts, want);
}

TEST(ReportData, BenchErrorsNameTheField) {
  const std::string ok = R"({"bandwidth_gb_s": 30, "decode_tok_s": 100, "prefill_tok_s": 900,
                              "prompt_len": 64, "gen": 128, "peak_gflops": 230})";
  const BenchFigures b = benchFromJson(ok, "b.json");
  EXPECT_EQ(b.promptLen, 64);
  EXPECT_EQ(b.peakGflops, 230);
  try {
    benchFromJson(R"({"output_tok_s": 3})", "load.json");
    FAIL() << "a serving-load result has no roofline figures";
  } catch (const InputError &e) {
    EXPECT_NE(std::string(e.what()).find("load.json: --bench has no field 'bandwidth_gb_s'"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(benchFromJson("not json", "x.json"), InputError);
  EXPECT_THROW(benchFromJson(R"({"bandwidth_gb_s": -1})", "x.json"), InputError);
}
