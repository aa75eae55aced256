// kvplan report: one self-contained HTML page (inline CSS, JS and SVG) that
// shows what the compiler did, pass by pass, and where every byte of the
// plan goes. Built from a plan (and, when given, the IR of every stage, a
// cuda launch table and a `kvplan bench --json` result); no MLIR.
#pragma once

#include "plan/CudaProgram.h"
#include "plan/Plan.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kvplan {

/// The IR after one stage of the pipeline ("frontend", then each pass).
struct IRStage {
  std::string name;
  std::string text;
};

/// What a `kvplan bench --json` run measured: the figures the roofline needs.
struct BenchFigures {
  std::string model;
  double bandwidthGBs = 0; // bandwidth_gb_s
  double peakGflops = 0;   // peak_gflops; 0 where the run measured none (cuda)
  double decodeTokS = 0, prefillTokS = 0;
  int64_t promptLen = 0, gen = 0;
};
/// Reads the output of `kvplan bench MODEL --json`. Throws InputError naming
/// `path` and the field that is missing or not a positive number.
BenchFigures benchFromJson(std::string_view text, const std::string &path);

struct ReportInput {
  std::string source; // MODEL or ARTIFACT as the user gave it
  const Plan *plan = nullptr;
  std::vector<IRStage> stages; // every stage in order, when compiled from a model
  std::string artifactIR;      // else the artifact's `ir` section (may be empty)
  const CudaProgram *cuda = nullptr;
  std::optional<BenchFigures> bench;
  std::string generator; // "kvplan 0.1.0 (git ...)"
};

/// The whole page.
std::string renderReport(const ReportInput &in);

//===----------------------------------------------------------------------===//
// The pieces, for the page and its tests.
//===----------------------------------------------------------------------===//

/// One arena buffer of an entry point: the SSA value it holds, where it
/// lies, and the steps between which it is live. An argument is written by
/// the caller before step 0 (firstStep -1); a result is read by the caller
/// after the last step (lastStep = steps.size()); a value nothing reads
/// lives for its writer's step alone.
struct BufferLife {
  int64_t value = -1, offset = 0, bytes = 0;
  int64_t firstStep = 0, lastStep = 0;
  std::string writer; // the writing op ("linear"), or "argument"
  std::string name;   // "linear results#1 at layers.0.attention", or the argument's role
};
std::vector<BufferLife> bufferLifetimes(const EntryPoint &ep);

enum class DiffKind { same, added, removed };
struct DiffLine {
  DiffKind kind = DiffKind::same;
  std::string text;
};
/// A line diff (longest common subsequence) of two texts. Lines that differ
/// only in SSA numbering (%12 against %14, %arg3) count as the same, and
/// show as `after` has them.
std::vector<DiffLine> diffLines(std::string_view before, std::string_view after);

/// How many ops of each name (llm.linear, func.func, ...) an IR text holds.
std::vector<std::pair<std::string, int64_t>> countOps(std::string_view ir);

/// Memory traffic (weights and KV cache) and arithmetic of one call.
struct CallCost {
  double flops = 0, bytes = 0;
};
/// A decode step of `rows` sequences, each at `context` tokens.
CallCost decodeStepCost(const Plan &plan, int64_t rows, int64_t context);
/// The prefill of a prompt of `tokens` tokens (chunk after chunk).
CallCost prefillCost(const Plan &plan, int64_t tokens);

/// What the plan's KV-cache pools hold for `batch` sequences at once: the
/// longest context each may reach (whole pages, at most the positions the
/// model was trained for), each pool serving batch shares of its pages with
/// the pages a sequence holds at once under its window (sequencePeakPages),
/// and which bound decides it.
struct KvCapacity {
  int64_t context = 0;
  enum class Limit { pool, windowPool, positions } limit = Limit::positions;
};
KvCapacity kvCapacity(const Plan &plan, int64_t batch);

std::string htmlEscape(std::string_view s);

} // namespace kvplan
