// GGUF reader: every read is bounds-checked, so a truncated or corrupt file
// is an error naming what broke, never a crash.
#include "formats/Gguf.h"
#include "support/Align.h"

#include "spec/ModelSpec.h"

#include <cstdio>
#include <cstring>

namespace kvplan {

namespace {

class Reader {
public:
  Reader(const MappedFile &f) : f(f) {}

  [[noreturn]] void fail(const std::string &what) const {
    throw InputError(f.path() + ": corrupt or truncated GGUF file: " + what + " (at byte " +
                     std::to_string(pos) + " of " + std::to_string(f.size()) + ")");
  }

  const char *take(uint64_t n, const char *what) {
    if (n > f.size() - pos)
      fail(std::string("the file ends inside ") + what);
    const char *p = f.data() + pos;
    pos += n;
    return p;
  }

  template <typename T> T get(const char *what) {
    T v;
    std::memcpy(&v, take(sizeof(T), what), sizeof(T));
    return v;
  }

  std::string str(const char *what) {
    uint64_t n = get<uint64_t>(what);
    if (n > (uint64_t(1) << 30))
      fail(std::string("implausible string length in ") + what);
    const char *p = take(n, what);
    return std::string(p, n);
  }

  double scalar(GgufFile::Type t, const char *what) {
    using T = GgufFile::Type;
    switch (t) {
    case T::u8: return get<uint8_t>(what);
    case T::i8: return get<int8_t>(what);
    case T::u16: return get<uint16_t>(what);
    case T::i16: return get<int16_t>(what);
    case T::u32: return get<uint32_t>(what);
    case T::i32: return get<int32_t>(what);
    case T::f32: return get<float>(what);
    case T::boolean: return get<uint8_t>(what) != 0;
    case T::u64: return double(get<uint64_t>(what));
    case T::i64: return double(get<int64_t>(what));
    case T::f64: return get<double>(what);
    default: fail(std::string("unknown value type in ") + what);
    }
  }

  uint64_t pos = 0;

private:
  const MappedFile &f;
};

uint64_t ggmlTypeBytes(uint32_t t) {
  switch (t) {
  case GgufFile::kF32: return 4;
  case GgufFile::kF16: case GgufFile::kBF16: return 2;
  default: return 0;
  }
}

// The bytes a tensor of a type kvplan reads occupies (0 for other types):
// elements * element size, or for a block-quantized type whole blocks of
// each row (dims[0], the fastest-varying). Overflow fails rather than wraps.
uint64_t tensorBytes(GgufFile::Tensor &t, const std::string &path) {
  auto tooBig = [&]() -> uint64_t {
    throw InputError(path + ": corrupt GGUF file: tensor " + t.name +
                     " has more elements than fit in 64 bits");
  };
  uint64_t elems = 1;
  for (int64_t d : t.dims) {
    if (elems > UINT64_MAX / uint64_t(d))
      return tooBig();
    elems *= uint64_t(d);
  }
  if (std::optional<QuantType> q = quantTypeOfGgml(t.ggmlType)) {
    t.quant = *q;
    const uint64_t per = uint64_t(quantBlockElements(*q)), bytes = uint64_t(quantBlockBytes(*q));
    if (uint64_t(t.dims[0]) % per != 0)
      throw InputError(path + ": tensor " + t.name + " of type " + quantTypeName(*q) +
                       " has rows of " + std::to_string(t.dims[0]) +
                       " elements, not a whole number of " + quantTypeName(*q) + " blocks of " +
                       std::to_string(per) + " (a corrupt file)");
    if (elems / per > UINT64_MAX / bytes)
      return tooBig();
    return elems / per * bytes;
  }
  const uint64_t size = ggmlTypeBytes(t.ggmlType);
  if (size && elems > UINT64_MAX / size)
    return tooBig();
  return elems * size;
}

struct GgufHeader {
  uint32_t version = 0;
  uint64_t tensorCount = 0, kvCount = 0;
};

// Magic and version are checked before anything else is trusted; the counts
// are bounded so that a corrupt header cannot ask for a huge allocation.
GgufHeader readHeader(Reader &r, const MappedFile &file, const std::string &path) {
  if (file.size() < 4 || std::memcmp(file.data(), "GGUF", 4) != 0)
    throw InputError(path + ": not a GGUF file (the first bytes are not \"GGUF\")");
  r.take(4, "the magic");
  GgufHeader h;
  h.version = r.get<uint32_t>("the header");
  if (h.version != 2 && h.version != 3)
    throw InputError(path + ": GGUF version " + std::to_string(h.version) +
                     " is not supported; kvplan reads versions 2 and 3");
  h.tensorCount = r.get<uint64_t>("the header");
  h.kvCount = r.get<uint64_t>("the header");
  if (h.tensorCount > (1u << 24) || h.kvCount > (1u << 24))
    r.fail("implausible tensor or metadata count");
  return h;
}

// One metadata value after its key; arrays are bounded by the file size
// before anything is reserved for them.
GgufFile::Value readValue(Reader &r, const std::string &key, uint64_t fileSize) {
  using Type = GgufFile::Type;
  GgufFile::Value v;
  v.type = Type(r.get<uint32_t>("a metadata type"));
  if (v.type == Type::string) {
    v.string = r.str("a metadata string");
  } else if (v.type == Type::array) {
    v.itemType = Type(r.get<uint32_t>("an array type"));
    uint64_t n = r.get<uint64_t>("an array length");
    if (n > fileSize)
      r.fail("implausible array length for " + key);
    if (v.itemType == Type::string) {
      v.strings.reserve(n);
      for (uint64_t j = 0; j < n; ++j) v.strings.push_back(r.str("an array string"));
    } else if (v.itemType == Type::array) {
      r.fail("nested arrays are not supported (" + key + ")");
    } else {
      v.numbers.reserve(n);
      for (uint64_t j = 0; j < n; ++j) v.numbers.push_back(r.scalar(v.itemType, "an array"));
    }
  } else {
    v.number = r.scalar(v.type, "a metadata value");
  }
  return v;
}

// A tensor as the directory lists it; its offset counts from the data
// section, which starts only after the whole directory has been read.
struct PendingTensor {
  GgufFile::Tensor t;
  uint64_t offset;
};

// The tensor directory; an entry with an impossible rank or dimension is
// rejected naming the tensor.
std::vector<PendingTensor> readTensorInfos(Reader &r, uint64_t tensorCount) {
  std::vector<PendingTensor> pending;
  for (uint64_t i = 0; i < tensorCount; ++i) {
    PendingTensor p;
    p.t.name = r.str("a tensor name");
    uint32_t nDims = r.get<uint32_t>("a tensor's rank");
    if (nDims == 0 || nDims > 4)
      r.fail("tensor " + p.t.name + " has rank " + std::to_string(nDims));
    for (uint32_t d = 0; d < nDims; ++d) {
      uint64_t n = r.get<uint64_t>("a tensor's dimensions");
      if (n == 0 || n > (uint64_t(1) << 40))
        r.fail("tensor " + p.t.name + " has an implausible dimension");
      p.t.dims.push_back(int64_t(n));
    }
    p.t.ggmlType = r.get<uint32_t>("a tensor's type");
    p.offset = r.get<uint64_t>("a tensor's offset");
    pending.push_back(std::move(p));
  }
  return pending;
}

// Points a tensor of a type kvplan reads into the mapping, after checking
// that all of its bytes lie within the file. Every tensor's offset is checked,
// whatever its type, and no sum is formed before it is known not to wrap: a
// corrupt offset near 2^64 must not land back in the header.
GgufFile::Tensor placeTensor(PendingTensor p, const MappedFile &file, const std::string &path,
                             uint64_t dataStart) {
  p.t.bytes = tensorBytes(p.t, path);
  const uint64_t room = dataStart > file.size() ? 0 : file.size() - dataStart;
  if (p.offset > room || p.t.bytes > room - p.offset)
    throw InputError(path + ": corrupt or truncated GGUF file: tensor " + p.t.name +
                     " has offset " + std::to_string(p.offset) +
                     (p.t.bytes ? " and " + std::to_string(p.t.bytes) + " bytes" : "") +
                     " but the data section starts at byte " + std::to_string(dataStart) +
                     " of a file of " + std::to_string(file.size()) +
                     " bytes (re-download or re-convert the file)");
  if (p.t.bytes)
    p.t.data = file.data() + dataStart + p.offset;
  return std::move(p.t);
}

} // namespace

GgufFile GgufFile::open(const std::string &path) {
  GgufFile g;
  g.file = MappedFile::open(path, "GGUF file");
  Reader r(g.file);
  const GgufHeader h = readHeader(r, g.file, path);
  g.version_ = h.version;
  for (uint64_t i = 0; i < h.kvCount; ++i) {
    std::string key = r.str("a metadata key");
    Value v = readValue(r, key, g.file.size());
    g.metadata[key] = std::move(v);
  }
  std::vector<PendingTensor> pending = readTensorInfos(r, h.tensorCount);

  // The data section starts at the first aligned byte after the directory.
  // Bounded before it is converted, so that rounding up cannot wrap.
  const double align = g.number("general.alignment").value_or(32);
  const uint64_t alignment = align >= 1 && align <= double(1 << 30) ? uint64_t(align) : 0;
  if (alignment == 0 || (alignment & (alignment - 1)) != 0 || double(alignment) != align) {
    char value[32];
    std::snprintf(value, sizeof value, "%g", align);
    throw InputError(path + ": general.alignment " + value +
                     " is not a power of two of at most 2^30");
  }
  uint64_t dataStart = alignUp(r.pos, alignment);
  for (PendingTensor &p : pending)
    g.tensors_.push_back(placeTensor(std::move(p), g.file, path, dataStart));
  return g;
}

const GgufFile::Value *GgufFile::find(const std::string &key) const {
  auto it = metadata.find(key);
  return it == metadata.end() ? nullptr : &it->second;
}

std::optional<int64_t> GgufFile::integer(const std::string &key) const {
  const Value *v = find(key);
  if (!v || v->type == Type::string || v->type == Type::array) return std::nullopt;
  // A u64 past 2^63, or a float out of range or NaN, has no int64 value
  // (converting it would be undefined).
  if (!(v->number >= -0x1p63 && v->number < 0x1p63)) {
    char text[32];
    std::snprintf(text, sizeof text, "%g", v->number);
    throw InputError(path() + ": metadata " + key + " is " + text +
                     ", outside the range of a 64-bit integer");
  }
  return int64_t(v->number);
}

std::optional<double> GgufFile::number(const std::string &key) const {
  const Value *v = find(key);
  if (!v || v->type == Type::string || v->type == Type::array) return std::nullopt;
  return v->number;
}

std::optional<std::string> GgufFile::string(const std::string &key) const {
  const Value *v = find(key);
  if (!v || v->type != Type::string) return std::nullopt;
  return v->string;
}

const GgufFile::Tensor *GgufFile::tensor(const std::string &name) const {
  for (const Tensor &t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

} // namespace kvplan
