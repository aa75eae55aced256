// Weight packing: canonical tensors -> the plan's layout and element types.
#include "runtime/WeightPacking.h"

#include "runtime/Progress.h"

#include <cstring>
#include <map>

namespace kvplan {

namespace {

void writeZeros(SectionSink &sink, uint64_t n) {
  static const char zeros[4096] = {};
  while (n > 0) {
    size_t k = size_t(std::min<uint64_t>(n, sizeof zeros));
    sink.write(zeros, k);
    n -= k;
  }
}

class MemorySink : public SectionSink {
public:
  explicit MemorySink(std::vector<char> &out) : out(out) {}
  void write(const void *data, size_t size) override {
    if (size > out.size() - at)
      throw std::logic_error("packed weights overflow their buffer");
    std::memcpy(out.data() + at, data, size);
    at += size;
  }
  size_t at = 0;

private:
  std::vector<char> &out;
};

} // namespace

void packWeights(const Plan &plan, const WeightSource &source, SectionSink &sink) {
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const WeightDecl &d : weightTable(plan.model)) shapes[d.name] = d.shape;
  const uint64_t size = uint64_t(plan.memoryBill().weightsBlobBytes);
  Progress progress("packing weights", size);
  std::vector<char> buffer;
  uint64_t at = 0;
  for (const WeightEntry &w : plan.weights) {
    writeZeros(sink, w.offset - at);
    at = w.offset;
    const std::vector<std::string> parts =
        w.parts.empty() ? std::vector<std::string>{w.name} : w.parts;
    for (const std::string &part : parts) {
      auto shape = shapes.find(part);
      if (shape == shapes.end())
        throw InputError("the plan's weight '" + w.name + "' names '" + part +
                         "', which the model does not have");
      SourceTensor t = source.tensor(part, shape->second);
      int64_t n = 1;
      for (int64_t d : t.shape) n *= d;
      const size_t bytes = size_t(n * dtypeBytes(w.dtype));
      if (t.dtype == w.dtype) {
        sink.write(t.data, bytes);
      } else {
        buffer.resize(bytes);
        convertElements(t.data, t.dtype, buffer.data(), w.dtype, n);
        sink.write(buffer.data(), bytes);
      }
      at += bytes;
      progress.advance(bytes);
    }
    if (at != w.offset + w.bytes)
      throw InputError("weight '" + w.name + "' packs to " + std::to_string(at - w.offset) +
                       " bytes but the plan expects " + std::to_string(w.bytes));
  }
  writeZeros(sink, size - at);
}

void addWeightsSection(ArtifactWriter &writer, const Plan &plan, const WeightSource &source) {
  writer.addSection(kWeightsSection, uint64_t(plan.memoryBill().weightsBlobBytes),
                    [&plan, &source](SectionSink &sink) { packWeights(plan, source, sink); });
}

std::vector<char> packWeightsInMemory(const Plan &plan, const WeightSource &source) {
  std::vector<char> out(size_t(plan.memoryBill().weightsBlobBytes));
  MemorySink sink(out);
  packWeights(plan, source, sink);
  return out;
}

} // namespace kvplan
