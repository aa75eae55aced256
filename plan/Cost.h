// What running a plan costs in memory traffic and arithmetic: the figures a
// roofline puts the measured speed against.
#pragma once

#include "plan/Plan.h"

namespace kvplan {

/// Bytes of weights one decode step of `rows` sequences reads: every weight
/// a linear, norm or the LM head reads whole, plus one embedding row per
/// token.
int64_t decodeWeightBytes(const Plan &plan, int64_t rows);

/// FLOPs a prompt of `promptLen` tokens costs in prefill: every linear and
/// the LM head (2 per multiply-add) over the rows each chunk runs, and
/// attention's two products over the cache.
double prefillFlops(const Plan &plan, int64_t promptLen);

} // namespace kvplan
