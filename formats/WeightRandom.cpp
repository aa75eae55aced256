// "random:SEED": deterministic synthetic weights for any model spec, for
// tests and benchmarks that need no checkpoint.
#include "formats/WeightReaders.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

namespace kvplan {
namespace weights {

namespace {

// SplitMix64's output function: a bijective mix whose outputs over a counter
// pass statistical tests, which is all synthetic weights need.
uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// FNV-1a over the tensor name, so each tensor's stream depends only on the
// seed and its own name, never on the order tensors are asked for.
uint64_t hashName(const std::string &s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

enum class Kind { norm, bias, matrix, sink, expertBias };

Kind kindOf(const std::string &name, const std::vector<int64_t> &shape) {
  auto endsWith = [&](const char *suffix) {
    const size_t n = std::char_traits<char>::length(suffix);
    return name.size() >= n && name.compare(name.size() - n, n, suffix) == 0;
  };
  if (shape.size() == 1 && (name == "norm" || endsWith("_norm")))
    return Kind::norm;
  if (endsWith(".sinks")) return Kind::sink;
  if (endsWith(".router_bias") || endsWith("experts.b1") || endsWith("experts.b3") ||
      endsWith("experts.b2"))
    return Kind::expertBias;
  if (shape.size() == 1)
    return Kind::bias;
  return Kind::matrix;
}

// Fills `out` with the tensor's values: element i is a function of
// (seed, name, i) alone.
void generate(uint64_t seed, const std::string &name, const std::vector<int64_t> &shape,
              std::vector<float> &out) {
  const uint64_t stream = mix64(seed ^ mix64(hashName(name)));
  // u in [-1, 1), 24 random bits so every value is exact in f32.
  auto uniform = [stream](uint64_t i) {
    return float(int64_t(mix64(stream + i * 0x9e3779b97f4a7c15ull) >> 40) - (int64_t(1) << 23)) *
           (1.0f / float(int64_t(1) << 23));
  };
  float scale = 0, offset = 0;
  switch (kindOf(name, shape)) {
  case Kind::norm: // RMSNorm gains near 1, as trained models have
    offset = 1.0f;
    scale = 0.05f;
    break;
  case Kind::bias:
    scale = 0.02f;
    break;
  case Kind::sink: // gpt-oss's sink logits, of the scores' order, so they bite
    scale = 2.0f;
    break;
  case Kind::expertBias: // gpt-oss's router and expert biases, large enough to move the choice
    scale = 0.5f;
    break;
  case Kind::matrix:
    // Uniform on [-a, a] has variance a^2 / 3; a = sqrt(3 / in) gives
    // standard deviation 1/sqrt(in), so a product with a unit-variance
    // input has unit variance and activations neither blow up nor vanish.
    scale = std::sqrt(3.0f / float(shape.back()));
    break;
  }
  out.resize(size_t(elementCount(shape)));
  auto fill = [&](size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) out[i] = offset + scale * uniform(i);
  };
  // Large tensors on every core (a 1B model's weights take a minute on
  // one): element i depends on i alone, so the split changes no value.
  const size_t n = out.size(), grain = size_t(1) << 20;
  const size_t threads =
      std::min<size_t>(std::max(1u, std::thread::hardware_concurrency()), (n + grain - 1) / grain);
  if (threads <= 1) return fill(0, n);
  std::vector<std::thread> workers;
  const size_t per = (n + threads - 1) / threads;
  for (size_t t = 1; t < threads; ++t)
    workers.emplace_back(fill, std::min(n, t * per), std::min(n, (t + 1) * per));
  fill(0, std::min(n, per));
  for (std::thread &w : workers) w.join();
}

class RandomSource final : public WeightSource {
public:
  RandomSource(std::string source, uint64_t seed, const ModelSpec &model)
      : source(std::move(source)), seed(seed) {
    for (WeightDecl &w : weightTable(model))
      shapes.emplace(std::move(w.name), std::move(w.shape));
  }

  std::string describe() const override {
    return "random weights (seed " + std::to_string(seed) + ")";
  }

  /// Every tensor's values as f32, kept once made.
  uint64_t heldBytes() const override {
    uint64_t bytes = 0;
    for (const auto &[name, shape] : shapes) bytes += uint64_t(elementCount(shape)) * 4;
    return bytes;
  }

  SourceTensor tensor(const std::string &name,
                      const std::vector<int64_t> &expected) const override {
    auto it = shapes.find(name);
    if (it == shapes.end())
      missingTensor(source, name, "",
                    "random weights exist only for the model's own tensors");
    checkShape(source, name, "", it->second, expected);
    SourceTensor out;
    out.shape = it->second;
    out.dtype = DType::f32;
    std::lock_guard<std::mutex> lock(mutex);
    auto cached = values.find(name);
    if (cached == values.end()) {
      std::vector<float> v;
      generate(seed, name, it->second, v);
      cached = values.emplace(name, std::move(v)).first;
    }
    out.data = cached->second.data();
    return out;
  }

private:
  std::string source;
  uint64_t seed;
  std::map<std::string, std::vector<int64_t>> shapes;
  // Generated on first request and kept for the source's lifetime, so the
  // pointers handed out stay valid; std::map nodes never move.
  mutable std::mutex mutex;
  mutable std::map<std::string, std::vector<float>> values;
};

} // namespace

std::unique_ptr<WeightSource> openRandom(const std::string &source, const ModelSpec &model) {
  const std::string digits = source.substr(std::string("random:").size());
  uint64_t seed = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), seed);
  if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size())
    throw InputError(source + ": expected random:SEED with SEED a non-negative integer below "
                              "2^64 (e.g. random:42)");
  return std::make_unique<RandomSource>(source, seed, model);
}

} // namespace weights
} // namespace kvplan
