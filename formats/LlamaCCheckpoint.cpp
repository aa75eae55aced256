// llama2.c checkpoints in the legacy layout: a 7-int32 header, then f32
// tensors stacked over layers, read in place from a mapping.
#include "support/MappedFile.h"
#include "formats/WeightReaders.h"

#include <cstring>
#include <filesystem>
#include <map>

namespace kvplan {
namespace weights {

namespace {

constexpr uint64_t kHeaderBytes = 7 * 4;
// The first word of llama2.c's versioned export format ("ak42"), which this
// reader does not handle.
constexpr uint32_t kVersionedMagic = 0x616b3432;

struct Header {
  int64_t dim = 0, hidden = 0, layers = 0, heads = 0, kvHeads = 0, vocab = 0, seqLen = 0;
  bool sharedClassifier = true; // vocab_size > 0 in the file
  int64_t headDim() const { return dim / heads; }
  int64_t kvDim() const { return kvHeads * headDim(); }
};

// One array of the file starting at byte `offset`: one slice of `shape` per
// layer for per-layer tensors, else a single one.
struct Slab {
  std::string stored; // llama2.c's name, for messages
  uint64_t offset = 0;
  bool perLayer = false;
  std::vector<int64_t> shape;
  uint64_t sliceBytes() const { return uint64_t(elementCount(shape)) * 4; }
};

struct Layout {
  Header header;
  std::map<std::string, Slab> slabs; // by canonical name without "layers.N."
  uint64_t totalBytes = 0;
};

// The seven int32 words must be positive and describe heads of an even width
// that the KV heads divide evenly; anything else is not a legacy checkpoint.
Header readHeader(const MappedFile &f) {
  const std::string &path = f.path();
  if (f.size() < kHeaderBytes)
    throw InputError(path + ": truncated llama2.c checkpoint: expected at least " +
                     std::to_string(kHeaderBytes) + " bytes for the header, found " +
                     std::to_string(f.size()));
  int32_t raw[7];
  std::memcpy(raw, f.data(), sizeof raw);
  if (uint32_t(raw[0]) == kVersionedMagic)
    throw InputError(path + ": this is a llama2.c checkpoint in the versioned export format "
                            "(magic \"ak42\"); kvplan reads the legacy layout (llama2.c "
                            "export.py --version 0)");
  Header h;
  h.dim = raw[0];
  h.hidden = raw[1];
  h.layers = raw[2];
  h.heads = raw[3];
  h.kvHeads = raw[4];
  h.vocab = raw[5] < 0 ? -int64_t(raw[5]) : int64_t(raw[5]);
  h.sharedClassifier = raw[5] > 0;
  h.seqLen = raw[6];
  const char *names[7] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads",
                          "vocab_size", "seq_len"};
  const int64_t values[7] = {h.dim, h.hidden, h.layers, h.heads, h.kvHeads, h.vocab, h.seqLen};
  for (int i = 0; i < 7; ++i)
    if (values[i] <= 0)
      throw InputError(path + ": not a llama2.c checkpoint: header field " + names[i] + " is " +
                       std::to_string(raw[i]) + " (expected a positive number)");
  if (h.dim % h.heads != 0 || h.headDim() % 2 != 0)
    throw InputError(path + ": not a valid llama2.c checkpoint: dim " + std::to_string(h.dim) +
                     " is not n_heads " + std::to_string(h.heads) +
                     " heads of an even width");
  if (h.heads % h.kvHeads != 0)
    throw InputError(path + ": not a valid llama2.c checkpoint: n_heads " +
                     std::to_string(h.heads) + " is not a multiple of n_kv_heads " +
                     std::to_string(h.kvHeads));
  return h;
}

// Stacks the tensors after the header in llama2.c's order and returns where
// the last one ends. The sizes are summed in 128 bits so that a garbage header
// cannot wrap around and pass the size check.
unsigned __int128 layOutSlabs(const Header &h, uint64_t fileSize,
                              std::map<std::string, Slab> &slabs) {
  unsigned __int128 offset = kHeaderBytes;
  auto add = [&](const std::string &canonical, const std::string &stored, bool perLayer,
                 std::vector<int64_t> shape) {
    Slab s{stored, 0, perLayer, std::move(shape)};
    unsigned __int128 bytes = 4;
    for (int64_t d : s.shape) bytes *= uint64_t(d);
    if (perLayer)
      bytes *= uint64_t(h.layers);
    if (offset < (unsigned __int128)fileSize)
      s.offset = uint64_t(offset);
    else
      s.offset = fileSize; // unused: checkFileSize rejects the file first
    offset += bytes;
    if (!canonical.empty())
      slabs[canonical] = std::move(s);
  };
  const int64_t d = h.dim, ff = h.hidden, kv = h.kvDim();
  const bool perLayer = true, one = false;
  add("tok_embeddings", "token_embedding_table", one, {h.vocab, d});
  add("attention_norm", "rms_att_weight", perLayer, {d});
  add("attention.wq", "wq", perLayer, {d, d});
  add("attention.wk", "wk", perLayer, {kv, d});
  add("attention.wv", "wv", perLayer, {kv, d});
  add("attention.wo", "wo", perLayer, {d, d});
  add("ffn_norm", "rms_ffn_weight", perLayer, {d});
  add("feed_forward.w1", "w1", perLayer, {ff, d});
  add("feed_forward.w2", "w2", perLayer, {d, ff});
  add("feed_forward.w3", "w3", perLayer, {ff, d});
  add("norm", "rms_final_weight", one, {d});
  // The RoPE tables llama2.c stored in old exports; kvplan computes them.
  add("", "freq_cis_real", one, {h.seqLen, h.headDim() / 2});
  add("", "freq_cis_imag", one, {h.seqLen, h.headDim() / 2});
  if (!h.sharedClassifier)
    add("output", "wcls", one, {h.vocab, d});
  return offset;
}

// The file must end exactly where the header says the tensors do: shorter is
// truncated, longer is most likely another layout.
void checkFileSize(const std::string &path, const Header &h, unsigned __int128 end,
                   uint64_t fileSize) {
  if (end > (unsigned __int128)fileSize) {
    std::string expected = end > (unsigned __int128)UINT64_MAX
                               ? std::string("more than 2^64")
                               : std::to_string(uint64_t(end));
    throw InputError(path + ": truncated llama2.c checkpoint: the header (dim " +
                     std::to_string(h.dim) + ", " + std::to_string(h.layers) + " layers, vocab " +
                     std::to_string(h.vocab) + ", seq_len " + std::to_string(h.seqLen) +
                     ") announces " + expected + " bytes, but the file has " +
                     std::to_string(fileSize));
  }
  if (end < (unsigned __int128)fileSize)
    throw InputError(path + ": not a legacy llama2.c checkpoint: the header announces " +
                     std::to_string(uint64_t(end)) + " bytes, but the file has " +
                     std::to_string(fileSize));
}

// Reads and checks the header, then lays out every tensor.
Layout readLayout(const MappedFile &f) {
  Layout L;
  L.header = readHeader(f);
  const unsigned __int128 end = layOutSlabs(L.header, f.size(), L.slabs);
  checkFileSize(f.path(), L.header, end, f.size());
  L.totalBytes = uint64_t(end);
  return L;
}

class LlamaCSource final : public WeightSource {
public:
  LlamaCSource(MappedFile file, Layout layout)
      : file(std::move(file)), layout(std::move(layout)) {}

  std::string describe() const override {
    return "llama2.c checkpoint " + file.path();
  }

  SourceTensor tensor(const std::string &name,
                      const std::vector<int64_t> &expected) const override {
    int64_t layer = 0;
    std::string key;
    const bool perLayer = splitLayerName(name, layer, key);
    if (!perLayer)
      key = name;
    auto it = layout.slabs.find(key);
    const bool found = it != layout.slabs.end() && it->second.perLayer == perLayer &&
                       (!perLayer || layer < layout.header.layers);
    if (!found) {
      std::string hint;
      if (name == "output" && layout.header.sharedClassifier)
        hint = "the checkpoint shares its classifier with the token embedding (vocab_size > 0 "
               "in its header), so the model should set tie_word_embeddings";
      else if (key == "attention.bq" || key == "attention.bk" || key == "attention.bv")
        hint = "llama2.c checkpoints carry no attention biases";
      else if (perLayer && it != layout.slabs.end())
        hint = "the checkpoint has " + std::to_string(layout.header.layers) + " layers";
      missingTensor(file.path(), name, "", hint);
    }
    const Slab &s = it->second;
    const std::string stored = perLayer ? s.stored + "[layer " + std::to_string(layer) + "]"
                                        : s.stored;
    checkShape(file.path(), name, stored, s.shape, expected);
    SourceTensor t;
    t.shape = s.shape;
    t.dtype = DType::f32;
    t.data = file.data() + s.offset + (perLayer ? uint64_t(layer) * s.sliceBytes() : 0);
    return t;
  }

private:
  MappedFile file;
  Layout layout;
};

} // namespace

ModelConfig readLlamaCConfig(const std::string &path) {
  MappedFile f = MappedFile::open(path, "llama2.c checkpoint");
  const Header h = readLayout(f).header;
  ModelConfig cfg;
  cfg.sourcePath = path;
  ModelSpec &m = cfg.model;
  m.name = std::filesystem::path(path).stem().string();
  m.architecture = Architecture::llama;
  m.hiddenSize = h.dim;
  m.intermediateSize = h.hidden;
  m.numLayers = h.layers;
  m.numHeads = h.heads;
  m.numKvHeads = h.kvHeads;
  m.headDim = h.headDim();
  m.vocabSize = h.vocab;
  m.maxPositions = h.seqLen;
  // llama2.c's format records none of these; its training code fixed them.
  m.rmsNormEps = 1e-5;
  m.rope.theta = 10000.0;
  m.tieWordEmbeddings = h.sharedClassifier;
  m.bosTokenId = 1;
  m.eosTokenIds = {2};
  for (const char *field :
       {"model.name", "model.architecture", "model.hidden_size", "model.intermediate_size",
        "model.num_layers", "model.num_heads", "model.num_kv_heads", "model.head_dim",
        "model.vocab_size", "model.max_position_embeddings", "model.tie_word_embeddings"})
    cfg.given.insert(field);
  return cfg;
}

std::unique_ptr<WeightSource> openLlamaC(const std::string &path, const ModelSpec &model) {
  MappedFile f = MappedFile::open(path, "llama2.c checkpoint");
  Layout layout = readLayout(f);
  // A tied model never asks for the classifier, so a separate one would be
  // silently ignored; say so instead.
  if (model.tieWordEmbeddings && !layout.header.sharedClassifier)
    throw InputError(path + ": the checkpoint has a separate classifier (wcls; vocab_size < 0 "
                            "in its header) but the model ties word embeddings; set "
                            "tie_word_embeddings = false");
  return std::make_unique<LlamaCSource>(std::move(f), std::move(layout));
}

} // namespace weights
} // namespace kvplan
