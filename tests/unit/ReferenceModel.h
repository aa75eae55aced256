// A plain reference forward pass for tests: no KV cache, no fusion, no
// planning, double precision; it recomputes the whole sequence for every
// query, straight from the model's definition.
#pragma once

#include "spec/ModelSpec.h"
#include "formats/WeightFormats.h"

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace kvplan::test {

class ReferenceModel {
public:
  /// Reads every weight of `spec` from `source`, rounded to `dtype` first
  /// (so a bf16 plan is compared against the same rounded weights). For
  /// int8, matrices are quantized as docs/artifact.md defines (groups of 32
  /// along a row, scale max|w| / 127) and vectors stay f32.
  /// For mxfp4, each group of 32 along a row takes the OCP rule's shared
  /// exponent and its values the nearest E2M1 ones. `context`: the
  /// positions the model is compiled for (0: all of
  /// max_position_embeddings), which choose LongRoPE's short or long
  /// factors. `expertDtype`, where given, rounds a mixture's experts'
  /// stacks instead of `dtype` (expert_dtype).
  ReferenceModel(const ModelSpec &spec, const WeightSource &source, DType dtype = DType::f32,
                 int64_t context = 0, std::optional<DType> expertDtype = std::nullopt);

  /// The logits after the last of `tokens` (positions 0..n-1).
  std::vector<double> logits(const std::vector<int32_t> &tokens) const;

private:
  const std::vector<double> &w(const std::string &name) const { return weights.at(name); }
  /// Layer `p`'s FFN of a row: the gated FFN, or a mixture of experts.
  std::vector<double> ffn(const std::string &p, const std::vector<double> &x) const;
  std::vector<double> experts(const std::string &p, const std::vector<double> &x) const;
  /// gpt-oss's mixture (biases, top-k logits then softmax, clamped SwiGLU).
  std::vector<double> gptOssExperts(const std::string &p, const std::vector<double> &x) const;
  /// The gated FFN of weights `f` w1, w3, w2, `width` features wide.
  std::vector<double> gatedFfn(const std::string &f, int64_t width,
                               const std::vector<double> &x) const;
  ModelSpec spec;
  int64_t context;
  std::map<std::string, std::vector<double>> weights;
};

/// cos(a, b): how well a reduced-precision run keeps the logits' direction.
double cosineSimilarity(const float *actual, const std::vector<double> &reference);

/// max |a - b| / max |b|: the error relative to the reference's scale.
double relativeError(const float *actual, const std::vector<double> &reference);

} // namespace kvplan::test
