// Packs a checkpoint into an artifact's weights section: every entry of the
// plan's weight table at its offset, in its dtype, fused weights
// concatenated from their parts.
#pragma once

#include "plan/Artifact.h"
#include "formats/WeightFormats.h"

namespace kvplan {

/// The name of the weights section.
inline constexpr const char *kWeightsSection = "weights";

/// Writes the packed weights (exactly memoryBill().weightsBlobBytes bytes)
/// to `sink`. Tensors are checked against the shapes the model spec gives
/// them; a progress bar shows on a terminal. A tensor-parallel plan packs
/// rank `rank`'s pieces of its sharded weights.
void packWeights(const Plan &plan, const WeightSource &source, SectionSink &sink,
                 int64_t rank = 0);

/// The memory packing `plan`'s weights from `source` holds at its peak:
/// what the source holds (WeightSource::heldBytes()) and the largest
/// entry's buffers. The packed bytes themselves go to the sink.
uint64_t packingMemoryBytes(const Plan &plan, const WeightSource &source);

/// Where a tensor-parallel plan cuts an int8 or int4 weight between the
/// ranks inside its groups (pieces of columns not a multiple of the group):
/// one sentence naming it, what it costs and the fix; empty where the
/// groups stay whole. Each rank quantizes its piece's groups afresh, so its
/// codes differ from the unsplit model's.
std::string cutGroupsWarning(const Plan &plan, const WeightEntry &w);

/// Where a tensor-parallel plan cuts an int8 or int4 weight between the
/// ranks inside the quantization blocks of a source tensor that packing
/// would repack exactly whole (a GGUF's Q4_K blocks of 256 cut into pieces
/// of 384 columns; Q4_0, Q4_1, Q8_0 and Q5_0 blocks are groups of 32, which
/// cutGroupsWarning covers): one sentence naming the weight, the tensor's
/// type, what it costs and the fix; empty where the blocks stay whole or
/// packing rounds anyway. Reads the source's tensors of `w`.
std::string cutSourceBlocksWarning(const Plan &plan, const WeightEntry &w,
                                   const WeightSource &source);

/// Adds the weights section to `writer` (one per rank of a tensor-parallel
/// plan: weightsSectionName()), packed from `source` when the file is
/// written (`source` must outlive writer.write()).
void addWeightsSection(ArtifactWriter &writer, const Plan &plan, const WeightSource &source);

/// Packs the weights into memory (for running a model compiled in memory).
std::vector<char> packWeightsInMemory(const Plan &plan, const WeightSource &source,
                                      int64_t rank = 0);

} // namespace kvplan
