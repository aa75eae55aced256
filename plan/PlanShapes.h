// What validatePlan checks beyond the dataflow: each op's operands, weights
// and attributes against each other and the KV cache (plan/PlanShapes.cpp);
// and, before each step runs, the inputs the engine wrote: tokens,
// positions and the page-table entries the step reads.
#pragma once

#include "plan/Plan.h"

#include <cstdint>
#include <string>

namespace kvplan {

/// Throws InputError ("incompatible because `at` ...") when an operand's
/// shape, a weight or an attribute of `s` disagrees with what its kernels
/// index by. `s` has passed the dataflow check: its weights are in the
/// table and its operands are the classes its fields name.
void checkStepShapes(const Plan &plan, const EntryPoint &ep, const Step &s,
                     const std::string &at);

/// The KV cache is the model's (layers, kv_heads, head_dim) and holds
/// max_seq_len tokens a sequence, no more pages of them than that takes.
void checkCacheGeometry(const Plan &p);

/// Bounds of one entry point's per-step inputs.
struct RunInputLimits {
  int64_t tokens = 0;    // token ids in [0, tokens): rows of the embedding table
  int64_t positions = 0; // positions in [0, positions), or -1 for a padding row
  int64_t pages = 0;     // page ids in [0, pages)
  int64_t pageSize = 0, pagesPerSequence = 0;
  int64_t tableRows = 0; // 1: one page-table row shared by every row
  int64_t windowPages = 0; // the sliding layers' pool's page ids (0: no such pool)
};
RunInputLimits runInputLimits(const Plan &p, const EntryPoint &ep);

/// Checks rows [0, rows) of a step's inputs, and the page-table entries
/// each row's position reads (in the sliding layers' table too, where the
/// plan has their pool); throws InputError naming the row and value.
/// O(rows x pages read).
void checkRunInputs(const RunInputLimits &limits, const EntryPoint &ep, const int32_t *tokens,
                    const int32_t *positions, const int32_t *pageTable, int64_t rows,
                    const int32_t *windowPageTable = nullptr);

} // namespace kvplan
