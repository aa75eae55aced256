// RoPE inverse frequencies: part of the rope op's meaning, so every back end
// computes them the same way.
#include "plan/Rope.h"

#include <cmath>

namespace kvplan {

std::vector<double> ropeFrequencies(int64_t headDim, double theta, bool llama3, double factor,
                                    double lowFreqFactor, double highFreqFactor,
                                    double originalMaxPositions) {
  std::vector<double> f(size_t(headDim / 2));
  const double pi = 3.14159265358979323846;
  for (int64_t i = 0; i < headDim / 2; ++i) {
    double freq = std::pow(theta, -2.0 * double(i) / double(headDim));
    if (llama3) {
      // Llama 3: long wavelengths are slowed by `factor`, short ones kept,
      // and the band between blends the two.
      const double wavelen = 2 * pi / freq;
      const double lowWavelen = originalMaxPositions / lowFreqFactor;
      const double highWavelen = originalMaxPositions / highFreqFactor;
      if (wavelen > lowWavelen) {
        freq /= factor;
      } else if (wavelen >= highWavelen) {
        const double smooth = (originalMaxPositions / wavelen - lowFreqFactor) /
                              (highFreqFactor - lowFreqFactor);
        freq = (1 - smooth) * freq / factor + smooth * freq;
      }
    }
    f[size_t(i)] = freq;
  }
  return f;
}

} // namespace kvplan
