// What running a plan costs in memory traffic and arithmetic: the figures a
// roofline puts the measured speed against.
#pragma once

#include "plan/Plan.h"

namespace kvplan {

/// Bytes of weights one decode step of `rows` sequences reads: every weight
/// a linear, norm or the LM head reads whole, plus one embedding row per
/// token, and of each mixture of experts the router and min(experts, rows x
/// experts_per_token) experts' shares of each stack (for one row, what it
/// reads; for more, as if no two rows chose the same expert).
int64_t decodeWeightBytes(const Plan &plan, int64_t rows);

/// FLOPs a prompt of `promptLen` tokens costs in prefill: every linear and
/// the LM head (2 per multiply-add) over the rows each chunk runs, and
/// attention's two products over the cache.
double prefillFlops(const Plan &plan, int64_t promptLen);
/// The flops of a step's product (stepProduct) for `rows` of its rows.
double productFlops(const Plan &plan, const StepProduct &p, double rows);
/// The flops of a moe_ffn step for `rows` rows: the router's product and
/// each row's experts_per_token experts' three.
double moeFlops(const Plan &plan, const MoEFFNOp &m, double rows);

/// The plan's sliding window: the widest of its attention steps' windows,
/// 0 where one reads every key (the frontend gives every layer one; a plan
/// written otherwise still never has a page given back that a step reads);
/// of the main pool's steps, where the sliding layers have their own.
int64_t attentionWindow(const Plan &plan);
/// The same for the attention steps of the sliding layers' own pool
/// (Plan::windowCache): the widest of their windows, 0 where the plan has
/// no such pool (or one of its steps reads every key).
int64_t windowPoolWindow(const Plan &plan);
/// The most KV-cache pages one sequence holds at once on its way to
/// max_seq_len: pages_per_sequence, or fewer under the plan's window
/// (spec/ModelSpec.h's sequencePeakPages).
int64_t sequencePeakPages(const Plan &plan);
/// The same on a sequence's way to `tokens` tokens (at most max_seq_len).
int64_t sequencePeakPages(const Plan &plan, int64_t tokens);
/// The keys attention reads for a row whose context holds `keys` of them
/// (its own included): all, or the last `window` (attentionWindow).
inline int64_t keysAttended(int64_t window, int64_t keys) {
  return window > 0 && window < keys ? window : keys;
}

/// What one call of `entry` on `rows` active rows sums across the
/// tensor-parallel ranks: the f32 bytes of every all_reduce (rows an op was
/// pruned to count as they are). A ring all-reduce sends and receives
/// 2 x (ranks - 1) / ranks of it on each rank.
struct Communication {
  int64_t allReduces = 0;
  int64_t bytes = 0;
};
Communication allReduceTraffic(const Plan &plan, const std::string &entry, int64_t rows);

} // namespace kvplan
