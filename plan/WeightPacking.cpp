// Weight packing: canonical tensors -> the plan's layout and element types.
#include "plan/WeightPacking.h"

#include "support/Align.h"
#include "support/Progress.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

namespace kvplan {

namespace {

/// Elements a float conversion converts at a time.
constexpr int64_t kConvertChunk = int64_t(1) << 20;

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

/// kvplan's int8: each group of `group` weights along a row becomes
/// round(w / s) with s = max|w| / 127, so the largest weight of every group
/// is exact and the rest are within s / 2. Q8_0 and Q5_0 tensors, whose
/// blocks are such groups already, are repacked losslessly instead.
void quantizeInt8(const SourceTensor &t, int64_t cols, int64_t group, SectionSink &sink,
                  std::vector<float> &scales) {
  const int64_t rows = sourceElements(t) / cols;
  std::vector<float> row(static_cast<size_t>(cols));
  std::vector<int8_t> q(static_cast<size_t>(cols));
  const bool lossless = group == 32 && hasInt8Groups(t.quant);
  const int64_t rowBytes = t.quant == QuantType::none
                               ? 0
                               : cols / quantBlockElements(t.quant) * quantBlockBytes(t.quant);
  for (int64_t r = 0; r < rows; ++r) {
    if (lossless) {
      const size_t at = scales.size();
      scales.resize(at + size_t(cols / group));
      int8Groups(t.quant, static_cast<const char *>(t.data) + r * rowBytes, cols, q.data(),
                 scales.data() + at);
      sink.write(q.data(), size_t(cols));
      continue;
    }
    sourceRowsToF32(t, r, 1, row.data());
    for (int64_t g = 0; g < cols; g += group) {
      const int64_t end = std::min(cols, g + group);
      float amax = 0;
      for (int64_t k = g; k < end; ++k) amax = std::max(amax, std::abs(row[size_t(k)]));
      const float scale = amax / 127.0f;
      const float inv = scale > 0 ? 1.0f / scale : 0.0f;
      for (int64_t k = g; k < end; ++k) {
        float v = std::nearbyint(row[size_t(k)] * inv);
        q[size_t(k)] = int8_t(std::clamp(v, -127.0f, 127.0f));
      }
      scales.push_back(scale);
    }
    sink.write(q.data(), size_t(cols));
  }
}

/// kvplan's int4 by round-to-nearest: each group of kInt4Group weights
/// along the row gets min = its smallest weight, scale = (largest -
/// smallest) / 15 and codes round((w - min) / scale), so every weight is
/// within scale / 2 of code * scale + min and the smallest is exact.
void roundInt4(const float *row, int64_t cols, uint8_t *codes, float *scales, float *mins) {
  for (int64_t g = 0, k0 = 0; k0 < cols; ++g, k0 += kInt4Group) {
    const int64_t end = std::min(cols, k0 + kInt4Group);
    float lo = row[k0], hi = row[k0];
    for (int64_t k = k0; k < end; ++k) {
      lo = std::min(lo, row[k]);
      hi = std::max(hi, row[k]);
    }
    const float scale = (hi - lo) / 15.0f;
    for (int64_t k = k0; k < end; ++k)
      codes[k] = scale > 0 ? uint8_t(std::clamp(std::nearbyint((row[k] - lo) / scale), 0.0f, 15.0f))
                           : 0;
    scales[g] = scale;
    mins[g] = lo;
  }
}

/// One row's codes (one a byte) two a byte, 16 bytes a group: element i of
/// a group in the low nibble of byte i, element 16 + i in the high nibble;
/// the missing codes of a partial last group are 0.
void packNibbles(const uint8_t *codes, int64_t cols, uint8_t *out) {
  std::memset(out, 0, size_t(ceilDiv(cols, kInt4Group) * 16));
  for (int64_t k = 0; k < cols; ++k) {
    const int64_t i = k % kInt4Group;
    out[k / kInt4Group * 16 + i % 16] |= uint8_t(codes[k] << (i < 16 ? 0 : 4));
  }
}

/// Writes a tensor's int4 codes row by row and appends its scales and
/// minimums. GGUF's Q4_0, Q4_1 and Q4_K blocks are int4 groups already and
/// are repacked exactly; other quantized types are rounded from their exact
/// dequantization, float tensors from their values.
void quantizeInt4(const SourceTensor &t, int64_t cols, SectionSink &sink,
                  std::vector<float> &scales, std::vector<float> &mins) {
  const int64_t rows = sourceElements(t) / cols, groups = ceilDiv(cols, kInt4Group);
  std::vector<float> row(size_t(cols), 0.0f);
  std::vector<uint8_t> codes(static_cast<size_t>(cols)), packed(static_cast<size_t>(groups * 16));
  const int64_t rowBytes = t.quant == QuantType::none
                               ? 0
                               : cols / quantBlockElements(t.quant) * quantBlockBytes(t.quant);
  for (int64_t r = 0; r < rows; ++r) {
    scales.resize(scales.size() + size_t(groups));
    mins.resize(mins.size() + size_t(groups));
    float *s = scales.data() + scales.size() - groups, *m = mins.data() + mins.size() - groups;
    // int4Groups takes Q4_0, Q4_1 and Q4_K (whole blocks a row) and no other.
    if (t.quant == QuantType::none ||
        !int4Groups(t.quant, static_cast<const char *>(t.data) + r * rowBytes, cols,
                    codes.data(), s, m)) {
      sourceRowsToF32(t, r, 1, row.data());
      roundInt4(row.data(), cols, codes.data(), s, m);
    }
    packNibbles(codes.data(), cols, packed.data());
    sink.write(packed.data(), packed.size());
  }
}

/// MXFP4 by the OCP rule (as ggml rounds it): a group's shared exponent is
/// X = floor(log2(max|w|)) - 2 (E2M1's largest exponent), its scale byte
/// X + 127 (kept in [0, 254]), and each w / 2^X becomes the nearest E2M1
/// value, ties to the even code, magnitudes past 6 saturating at 6 as the
/// format does. A group of zeros gets scale byte 0 and zero codes. Throws
/// for a NaN or an infinity, which MXFP4 holds no code for.
void roundMxfp4(const float *row, int64_t cols, uint8_t *codes, uint8_t *exponents,
                const std::string &weight) {
  for (int64_t g = 0, k0 = 0; k0 < cols; ++g, k0 += kMxfp4Group) {
    const int64_t end = std::min(cols, k0 + kMxfp4Group);
    float amax = 0;
    for (int64_t k = k0; k < end; ++k) {
      if (!std::isfinite(row[k]))
        throw InputError("weight '" + weight + "' holds a NaN or an infinity, which MXFP4 has "
                         "no code for; check the checkpoint, or choose a float weight type");
      amax = std::max(amax, std::fabs(row[k]));
    }
    int e = 0;
    if (amax > 0) {
      int exp2 = 0;
      std::frexp(amax, &exp2); // amax = m * 2^exp2, m in [0.5, 1): floor(log2) = exp2 - 1
      e = std::clamp(exp2 - 1 - 2 + 127, 0, 254);
    }
    exponents[g] = uint8_t(e);
    for (int64_t k = k0; k < end; ++k) {
      const float v = std::ldexp(std::fabs(row[k]), 128 - e); // |w| / step, doubled units
      int best = 0; // among the magnitudes, codes 0 to 7 (the sign is bit 3)
      for (int c = 1; c < 8; ++c) {
        const float d = std::fabs(v - float(kMxfp4Doubled[c])),
                    b = std::fabs(v - float(kMxfp4Doubled[best]));
        if (d < b || (d == b && c % 2 == 0)) best = c;
      }
      codes[k] = uint8_t(best == 0 ? 0 : best | (row[k] < 0 ? 8 : 0));
    }
  }
}

/// Writes a tensor's mxfp4 codes row by row and appends its scale bytes.
/// MXFP4 tensors (a GGUF's, or OpenAI's blocks repacked by the reader) are
/// copied as they are; others are rounded from their exact values.
void quantizeMxfp4(const SourceTensor &t, int64_t cols, SectionSink &sink,
                   std::vector<uint8_t> &exponents, const std::string &weight) {
  const int64_t rows = sourceElements(t) / cols, groups = ceilDiv(cols, kMxfp4Group);
  std::vector<float> row(size_t(cols), 0.0f);
  std::vector<uint8_t> codes(static_cast<size_t>(cols)), packed(static_cast<size_t>(groups * 16));
  const bool blocks = t.quant == QuantType::mxfp4 && cols % kMxfp4Group == 0;
  for (int64_t r = 0; r < rows; ++r) {
    const size_t at = exponents.size();
    exponents.resize(at + size_t(groups));
    if (blocks) { // 17-byte blocks: the scale byte, then the 16 code bytes
      const uint8_t *b = static_cast<const uint8_t *>(t.data) + r * groups * 17;
      for (int64_t g = 0; g < groups; ++g) {
        exponents[at + size_t(g)] = b[g * 17];
        std::memcpy(packed.data() + g * 16, b + g * 17 + 1, 16);
      }
    } else {
      sourceRowsToF32(t, r, 1, row.data());
      roundMxfp4(row.data(), cols, codes.data(), exponents.data() + at, weight);
      packNibbles(codes.data(), cols, packed.data());
    }
    sink.write(packed.data(), packed.size());
  }
}

/// A quantized weight's scales (and minimums, or mxfp4's scale bytes),
/// gathered while its parts' data is written and written after it.
struct GroupParams {
  std::vector<float> scales, mins;
  std::vector<uint8_t> exponents;
};

/// The scales and minimums of a quantized weight after all its parts' data,
/// each at its offset.
void writeGroupParams(SectionSink &sink, const WeightEntry &w, uint64_t &at,
                      const GroupParams &p) {
  writeZeros(sink, w.offset + w.scalesOffset - at);
  at = w.offset + w.scalesOffset;
  if (w.dtype == DType::mxfp4) {
    sink.write(p.exponents.data(), p.exponents.size());
    at += p.exponents.size();
    return;
  }
  const std::vector<float> &scales = p.scales, &mins = p.mins;
  sink.write(scales.data(), scales.size() * 4);
  at += scales.size() * 4;
  if (w.dtype != DType::i4) return;
  writeZeros(sink, w.offset + w.minsOffset - at);
  at = w.offset + w.minsOffset;
  sink.write(mins.data(), mins.size() * 4);
  at += mins.size() * 4;
}

/// A float entry (f32, bf16, f16) from `t`: copied when the types match,
/// else converted, row by row from the exact f32 of a quantized tensor.
uint64_t packFloat(const SourceTensor &t, DType to, SectionSink &sink, std::vector<char> &buffer) {
  const int64_t n = sourceElements(t);
  const size_t bytes = size_t(n * dtypeBytes(to));
  if (t.quant == QuantType::none && t.dtype == to) {
    sink.write(t.data, bytes);
  } else if (t.quant == QuantType::none) {
    // In chunks, so that converting never holds a second copy of a tensor.
    const size_t from = size_t(dtypeBytes(t.dtype));
    for (int64_t i = 0; i < n; i += kConvertChunk) {
      const int64_t k = std::min(kConvertChunk, n - i);
      buffer.resize(size_t(k * dtypeBytes(to)));
      convertElements(static_cast<const char *>(t.data) + size_t(i) * from, t.dtype,
                      buffer.data(), to, k);
      sink.write(buffer.data(), buffer.size());
    }
  } else {
    const int64_t cols = t.shape.back(), rows = n / cols;
    std::vector<float> row(static_cast<size_t>(cols));
    buffer.resize(size_t(cols * dtypeBytes(to)));
    for (int64_t r = 0; r < rows; ++r) {
      sourceRowsToF32(t, r, 1, row.data());
      convertElements(row.data(), DType::f32, buffer.data(), to, cols);
      sink.write(buffer.data(), buffer.size());
    }
  }
  return bytes;
}

/// Bytes of `count` elements of a row of `t` starting at element `first`,
/// when they are whole blocks (or plain elements); -1 when they are not.
int64_t rawBytes(const SourceTensor &t, int64_t first, int64_t count) {
  if (t.quant == QuantType::none) return count * dtypeBytes(t.dtype);
  const int64_t block = quantBlockElements(t.quant);
  if (first % block != 0 || count % block != 0) return -1;
  return count / block * quantBlockBytes(t.quant);
}

/// The piece `piece` of `pieces` of `t` along `dim` (its last dimension:
/// columns; a vector's elements; an earlier one: rows, or within each
/// expert of a stack the rows of its matrix). Rows along the first
/// dimension are a view; the rest are copied into `buffer`, columns as they
/// are when they are whole quantization blocks, else as their exact f32
/// values.
SourceTensor sliceTensor(const SourceTensor &t, int64_t dim, int64_t pieces, int64_t piece,
                         std::vector<char> &buffer) {
  SourceTensor s = t;
  const int64_t cols = t.shape.back(), rows = sourceElements(t) / cols;
  const int64_t last = int64_t(t.shape.size()) - 1;
  if (dim == last) {
    const int64_t width = cols / pieces, first = piece * width;
    const int64_t part = rawBytes(t, first, width), row = rawBytes(t, 0, cols);
    s.shape.back() = width;
    if (part >= 0 && row >= 0) {
      buffer.resize(size_t(rows * part));
      for (int64_t r = 0; r < rows; ++r)
        std::memcpy(buffer.data() + r * part,
                    static_cast<const char *>(t.data) + r * row + rawBytes(t, 0, first),
                    size_t(part));
    } else {
      std::vector<float> full(static_cast<size_t>(cols));
      buffer.resize(size_t(rows * width * 4));
      for (int64_t r = 0; r < rows; ++r) {
        sourceRowsToF32(t, r, 1, full.data());
        std::memcpy(buffer.data() + r * width * 4, full.data() + first, size_t(width * 4));
      }
      s.dtype = DType::f32;
      s.quant = QuantType::none;
    }
    s.data = buffer.data();
    return s;
  }
  // Along an earlier dimension: each of the `outer` blocks before it keeps
  // its piece's n slices of `inner` elements (whole rows: whole blocks).
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < dim; ++d) outer *= t.shape[size_t(d)];
  for (int64_t d = dim + 1; d <= last; ++d) inner *= t.shape[size_t(d)];
  const int64_t n = t.shape[size_t(dim)] / pieces, slice = rawBytes(t, 0, inner);
  const char *data = static_cast<const char *>(t.data);
  s.shape[size_t(dim)] = n;
  if (outer == 1) {
    s.data = data + piece * n * slice;
    return s;
  }
  buffer.resize(size_t(outer * n * slice));
  const int64_t whole = t.shape[size_t(dim)];
  for (int64_t o = 0; o < outer; ++o)
    std::memcpy(buffer.data() + o * n * slice, data + (o * whole + piece * n) * slice,
                size_t(n * slice));
  s.data = buffer.data();
  return s;
}

/// One source tensor (or a rank's piece, or a slab) of entry `w`, in its
/// type: int8 and int4 codes (their scales and minimums appended for
/// later), or float elements. Returns the bytes written.
uint64_t packTensor(const SourceTensor &t, const WeightEntry &w, SectionSink &sink,
                    std::vector<char> &buffer, GroupParams &params) {
  const int64_t n = sourceElements(t), cols = t.shape.back();
  if (w.dtype == DType::i8) {
    quantizeInt8(t, cols, w.groupSize, sink, params.scales);
    return uint64_t(n);
  }
  if (w.dtype == DType::i4) {
    quantizeInt4(t, cols, sink, params.scales, params.mins);
    return uint64_t(n / cols * ceilDiv(cols, kInt4Group) * 16);
  }
  if (w.dtype == DType::mxfp4) {
    quantizeMxfp4(t, cols, sink, params.exponents, w.name);
    return uint64_t(n / cols * ceilDiv(cols, kMxfp4Group) * 16);
  }
  return packFloat(t, w.dtype, sink, buffer);
}

} // namespace

void packWeights(const Plan &plan, const WeightSource &source, SectionSink &sink, int64_t rank) {
  if (rank < 0 || rank >= plan.ranks())
    throw std::logic_error("packWeights: rank " + std::to_string(rank) + " of " +
                           std::to_string(plan.ranks()));
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const WeightDecl &d : weightTable(plan.model)) shapes[d.name] = d.shape;
  const uint64_t size = uint64_t(plan.memoryBill().weightsBlobBytes);
  Progress progress(plan.ranks() > 1 ? "packing rank " + std::to_string(rank) + "'s weights"
                                     : std::string("packing weights"),
                    size);
  std::vector<char> buffer, slice;
  uint64_t at = 0;
  for (const WeightEntry &w : plan.weights) {
    writeZeros(sink, w.offset - at);
    at = w.offset;
    const std::vector<std::string> parts =
        w.parts.empty() ? std::vector<std::string>{w.name} : w.parts;
    GroupParams params; // int8, int4, mxfp4: written after all the data
    for (const std::string &part : parts) {
      auto shape = shapes.find(part);
      if (shape == shapes.end())
        throw InputError("the plan's weight '" + w.name + "' names '" + part +
                         "', which the model does not have");
      const SourceTensor whole = source.tensor(part, shape->second);
      // A stack a checkpoint stores apart (experts) packs a slab at a time:
      // the rows, and the scales after them, come in the same order.
      for (SourceTensor t : sourceSlabs(whole)) {
        // A slab is the stack's matrix for one expert: its dimensions are
        // the stack's after the first.
        const int64_t dim = w.shardDim - int64_t(whole.shape.size() - t.shape.size());
        if (w.shardDim >= 0)
          t = sliceTensor(t, dim, w.shardPieces, shardPiece(w, rank, plan.ranks()), slice);
        const uint64_t bytes = packTensor(t, w, sink, buffer, params);
        at += bytes;
        progress.advance(bytes);
      }
    }
    if (w.groupSize) writeGroupParams(sink, w, at, params);
    if (at != w.offset + w.bytes)
      throw InputError("weight '" + w.name + "' packs to " + std::to_string(at - w.offset) +
                       " bytes but the plan expects " + std::to_string(w.bytes));
  }
  writeZeros(sink, size - at);
}

std::string cutGroupsWarning(const Plan &plan, const WeightEntry &w) {
  const int64_t last = int64_t(w.shape.size()) - 1;
  if (w.groupSize <= 0 || w.shardDim != last || w.shardPieces < 2 ||
      w.shape[size_t(last)] % w.groupSize == 0)
    return {};
  const int64_t whole = w.groupSize * w.shardPieces;
  return std::string(dtypeName(w.dtype)) + " weight '" + w.name + "' is cut between the " +
         std::to_string(plan.ranks()) + " ranks into pieces of " +
         std::to_string(w.shape[size_t(last)]) + " columns, inside its groups of " +
         std::to_string(w.groupSize) +
         ": each rank quantizes its piece afresh (a second rounding of weights quantized "
         "already, as a GGUF's), so its codes differ from the unsplit model's; widths that are "
         "multiples of " + std::to_string(whole) + " (" + std::to_string(w.groupSize) + " x " +
         std::to_string(w.shardPieces) + " pieces) keep the groups whole";
}

std::string cutSourceBlocksWarning(const Plan &plan, const WeightEntry &w,
                                   const WeightSource &source) {
  const int64_t last = int64_t(w.shape.size()) - 1;
  if (w.groupSize <= 0 || w.shardDim != last || w.shardPieces < 2) return {};
  const int64_t width = w.shape[size_t(last)];
  if (width % w.groupSize != 0) return {}; // cutGroupsWarning's case
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const WeightDecl &d : weightTable(plan.model)) shapes[d.name] = d.shape;
  for (const std::string &part : w.parts.empty() ? std::vector<std::string>{w.name} : w.parts) {
    auto shape = shapes.find(part);
    if (shape == shapes.end()) continue; // packing names it
    const QuantType q = source.tensor(part, shape->second).quant;
    // What quantizeInt8, quantizeInt4 and quantizeMxfp4 repack exactly, whole blocks a piece.
    const bool exact = w.dtype == DType::i4      ? hasInt4Groups(q)
                       : w.dtype == DType::mxfp4 ? q == QuantType::mxfp4
                                                 : w.groupSize == 32 && hasInt8Groups(q);
    const int64_t block = exact ? quantBlockElements(q) : 0;
    if (!exact || width % block == 0) continue;
    return std::string(dtypeName(w.dtype)) + " weight '" + w.name + "' is cut between the " +
           std::to_string(plan.ranks()) + " ranks into pieces of " + std::to_string(width) +
           " columns, inside the " + quantTypeName(q) + " blocks of " + std::to_string(block) +
           " of its source tensor '" + part + "': packing repacks such blocks exactly only "
           "whole, so each rank quantizes its piece afresh from their values and its codes "
           "differ from the unsplit model's; widths that are multiples of " +
           std::to_string(block * w.shardPieces) + " (" + std::to_string(block) + " x " +
           std::to_string(w.shardPieces) + " pieces) keep the blocks whole";
  }
  return {};
}

uint64_t packingMemoryBytes(const Plan &plan, const WeightSource &source) {
  // Beside what the source holds, one entry's buffers at a time: a row as
  // f32, its codes, and a quantized entry's scales and minimums (kept
  // until the entry's data is written), or a float conversion's chunk.
  uint64_t buffers = 0;
  for (const WeightEntry &w : plan.weights) {
    const int64_t n = w.numElements();
    const int64_t cols = w.shape.empty() ? 1 : w.shape.back();
    uint64_t b = uint64_t(cols) * 4 * 2;
    if (w.groupSize > 0) // f32 scales (and int4's minimums), or mxfp4's scale bytes
      b += uint64_t(n / cols * ceilDiv(cols, w.groupSize)) *
           (w.dtype == DType::i4 ? 8 : w.dtype == DType::mxfp4 ? 1 : 4);
    else
      b += uint64_t(std::min(n, kConvertChunk) * dtypeBytes(w.dtype));
    if (w.shardDim >= 0) b += uint64_t(n) * 4; // a rank's piece, copied out as f32 at most
    buffers = std::max(buffers, b);
  }
  return source.heldBytes() + buffers;
}

void addWeightsSection(ArtifactWriter &writer, const Plan &plan, const WeightSource &source) {
  for (int64_t rank = 0; rank < plan.ranks(); ++rank)
    writer.addSection(weightsSectionName(rank), uint64_t(plan.memoryBill().weightsBlobBytes),
                      [&plan, &source, rank](SectionSink &sink) {
                        packWeights(plan, source, sink, rank);
                      });
}

std::vector<char> packWeightsInMemory(const Plan &plan, const WeightSource &source,
                                      int64_t rank) {
  std::vector<char> out(size_t(plan.memoryBill().weightsBlobBytes));
  MemorySink sink(out);
  packWeights(plan, source, sink, rank);
  return out;
}

} // namespace kvplan
