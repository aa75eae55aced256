// Hugging Face safetensors weights (one file or shards with an index): HF
// names mapped to canonical ones, q/k rows permuted into adjacent-pair RoPE.
#include "support/Half.h"
#include "support/MappedFile.h"
#include "support/Progress.h"
#include "formats/WeightReaders.h"

#include <nlohmann/json.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <tuple>
#include <unordered_map>

namespace fs = std::filesystem;

namespace kvplan {
namespace weights {

namespace {

struct Entry {
  std::string dtypeName;      // as the header spells it
  std::optional<DType> dtype; // unset for a type kvplan does not read
  std::vector<int64_t> shape;
  const char *data = nullptr;
  uint64_t bytes = 0;
  size_t shard = 0;
};

std::optional<DType> safetensorsDType(const std::string &s) {
  if (s == "F32") return DType::f32;
  if (s == "F16") return DType::f16;
  if (s == "BF16") return DType::bf16;
  return std::nullopt;
}

// Element sizes of the types kvplan does not read, so their byte ranges can
// still be checked; 0 for an unknown name.
uint64_t otherDTypeBytes(const std::string &s) {
  if (s == "F64" || s == "I64" || s == "U64") return 8;
  if (s == "I32" || s == "U32") return 4;
  if (s == "I16" || s == "U16") return 2;
  if (s == "I8" || s == "U8" || s == "BOOL" || s == "F8_E4M3" || s == "F8_E5M2") return 1;
  return 0;
}

// Parses one file's header and checks every tensor's byte range against
// the file, so that no later read can run past the mapping.
void readShard(const MappedFile &f, size_t shard,
               std::unordered_map<std::string, Entry> &entries) {
  const std::string &path = f.path();
  if (f.size() < 8)
    throw InputError(path + ": truncated safetensors file: " + std::to_string(f.size()) +
                     " bytes, fewer than the 8-byte header length");
  uint64_t headerLen = 0;
  for (int i = 7; i >= 0; --i)
    headerLen = (headerLen << 8) | uint8_t(f.data()[i]);
  if (headerLen > f.size() - 8)
    throw InputError(path + ": corrupt or truncated safetensors file: the header length is " +
                     std::to_string(headerLen) + " bytes but only " +
                     std::to_string(f.size() - 8) + " follow");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(f.data() + 8, f.data() + 8 + headerLen);
  } catch (const nlohmann::json::exception &e) {
    throw InputError(path + ": corrupt safetensors header (not valid JSON): " + e.what());
  }
  if (!header.is_object())
    throw InputError(path + ": corrupt safetensors header: expected a JSON object");
  const char *dataStart = f.data() + 8 + headerLen;
  const uint64_t dataSize = f.size() - 8 - headerLen;

  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string &name = it.key();
    if (name == "__metadata__")
      continue;
    auto bad = [&](const std::string &what) {
      return InputError(path + ": corrupt safetensors header: tensor '" + name + "': " + what);
    };
    const nlohmann::json &v = it.value();
    if (!v.is_object() || !v.contains("dtype") || !v["dtype"].is_string() ||
        !v.contains("shape") || !v["shape"].is_array() || !v.contains("data_offsets") ||
        !v["data_offsets"].is_array() || v["data_offsets"].size() != 2)
      throw bad("expected {\"dtype\": string, \"shape\": [...], \"data_offsets\": [begin, end]}");
    Entry e;
    e.shard = shard;
    e.dtypeName = v["dtype"].get<std::string>();
    e.dtype = safetensorsDType(e.dtypeName);
    unsigned __int128 elements = 1;
    for (const nlohmann::json &d : v["shape"]) {
      if (!d.is_number_unsigned() || d.get<uint64_t>() > (uint64_t(1) << 40))
        throw bad("shape " + v["shape"].dump() + " is not a list of plausible sizes");
      e.shape.push_back(int64_t(d.get<uint64_t>()));
      // Saturates just above the data size (too big either way), so the
      // product cannot overflow.
      elements *= d.get<uint64_t>();
      if (elements > (unsigned __int128)dataSize)
        elements = (unsigned __int128)dataSize + 1;
    }
    const nlohmann::json &off = v["data_offsets"];
    if (!off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      throw bad("data_offsets " + off.dump() + " are not non-negative integers");
    const uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
    if (begin > end || end > dataSize)
      throw InputError(path + ": corrupt or truncated safetensors file: tensor '" + name +
                       "' occupies data bytes [" + std::to_string(begin) + ", " +
                       std::to_string(end) + ") but the file holds " +
                       std::to_string(dataSize) + " data bytes");
    const uint64_t elemBytes =
        e.dtype ? uint64_t(dtypeBytes(*e.dtype)) : otherDTypeBytes(e.dtypeName);
    if (elemBytes && (unsigned __int128)(end - begin) != elements * elemBytes)
      throw bad("shape " + shapeString(e.shape) + " of " + e.dtypeName + " needs " +
                (elements > dataSize ? std::string("more bytes than the file has")
                                     : std::to_string(uint64_t(elements * elemBytes)) +
                                           " bytes") +
                " but data_offsets span " + std::to_string(end - begin));
    e.data = dataStart + begin;
    e.bytes = end - begin;
    if (!entries.emplace(name, std::move(e)).second)
      throw InputError(path + ": tensor '" + name + "' appears in more than one shard");
  }
}

/// Gemma's names where they differ from Llama's: its post_attention_layernorm
/// norms the attention's output, and the FFN has a norm on either side.
const std::unordered_map<std::string, std::string> &gemmaNames() {
  static const std::unordered_map<std::string, std::string> names = {
      {"post_attention_norm", "post_attention_layernorm.weight"},
      {"ffn_norm", "pre_feedforward_layernorm.weight"},
      {"post_ffn_norm", "post_feedforward_layernorm.weight"},
  };
  return names;
}

/// gpt-oss's router, where its names differ from Qwen-MoE's.
const std::unordered_map<std::string, std::string> &gptOssNames() {
  static const std::unordered_map<std::string, std::string> names = {
      {"feed_forward.router", "mlp.router.weight"},
      {"feed_forward.router_bias", "mlp.router.bias"},
  };
  return names;
}

// Canonical names to Hugging Face's (a Gemma model's where it has its own);
// `body` is the decoder's prefix, "model." but for a multimodal checkpoint's
// text model.
std::string hfName(const std::string &name, bool gemma = false,
                   const std::string &body = "model.", bool mixtral = false,
                   bool gptOss = false) {
  if (name == "tok_embeddings") return body + "embed_tokens.weight";
  if (name == "norm") return body + "norm.weight";
  if (name == "output") return "lm_head.weight";
  int64_t layer = 0;
  std::string rest;
  if (!splitLayerName(name, layer, rest))
    return "";
  if (gemma)
    if (auto g = gemmaNames().find(rest); g != gemmaNames().end())
      return body + "layers." + std::to_string(layer) + "." + g->second;
  if (gptOss)
    if (auto g = gptOssNames().find(rest); g != gptOssNames().end())
      return body + "layers." + std::to_string(layer) + "." + g->second;
  if (mixtral && rest == "feed_forward.router")
    return body + "layers." + std::to_string(layer) + ".block_sparse_moe.gate.weight";
  static const std::unordered_map<std::string, std::string> perLayer = {
      {"attention_norm", "input_layernorm.weight"},
      {"attention.wq", "self_attn.q_proj.weight"},
      {"attention.wk", "self_attn.k_proj.weight"},
      {"attention.wv", "self_attn.v_proj.weight"},
      {"attention.wo", "self_attn.o_proj.weight"},
      {"attention.bq", "self_attn.q_proj.bias"},
      {"attention.bk", "self_attn.k_proj.bias"},
      {"attention.bv", "self_attn.v_proj.bias"},
      {"attention.q_norm", "self_attn.q_norm.weight"},
      {"attention.k_norm", "self_attn.k_norm.weight"},
      {"ffn_norm", "post_attention_layernorm.weight"},
      {"feed_forward.w1", "mlp.gate_proj.weight"},
      {"feed_forward.w3", "mlp.up_proj.weight"},
      {"feed_forward.w2", "mlp.down_proj.weight"},
      {"attention.wqkv", "self_attn.qkv_proj.weight"}, // fused (Phi-3)
      {"feed_forward.w13", "mlp.gate_up_proj.weight"},
      // A mixture of experts' router (Qwen3-MoE's; Mixtral's above), and
      // Qwen2-MoE's shared expert and its gate.
      {"feed_forward.router", "mlp.gate.weight"},
      {"feed_forward.shared_expert.w1", "mlp.shared_expert.gate_proj.weight"},
      {"feed_forward.shared_expert.w3", "mlp.shared_expert.up_proj.weight"},
      {"feed_forward.shared_expert.w2", "mlp.shared_expert.down_proj.weight"},
      {"feed_forward.shared_expert_gate", "mlp.shared_expert_gate.weight"},
      // gpt-oss's sinks and output bias.
      {"attention.sinks", "self_attn.sinks"},
      {"attention.bo", "self_attn.o_proj.bias"},
  };
  auto it = perLayer.find(rest);
  return it == perLayer.end() ? "" : body + "layers." + std::to_string(layer) + "." + it->second;
}

/// Whether a canonical name is a layer's experts' stack
/// (layers.N.feed_forward.experts.X), with its layer and X.
bool expertsPart(const std::string &name, int64_t &layer, std::string &which) {
  std::string rest;
  const std::string prefix = "feed_forward.experts.";
  if (!splitLayerName(name, layer, rest) || rest.compare(0, prefix.size(), prefix) != 0)
    return false;
  which = rest.substr(prefix.size());
  return true;
}

/// Whether a canonical name is a stack of experts' matrices (w1, w3 or
/// w2), which a checkpoint stores one tensor an expert.
bool isExpertStack(const std::string &name, int64_t &layer, std::string &which) {
  return expertsPart(name, layer, which) && (which == "w1" || which == "w3" || which == "w2");
}

/// Whether a canonical name is one of gpt-oss's stacks of experts' matrices
/// or biases (w1 ... b3), which its checkpoint holds in gate_up_proj and
/// down_proj (and their biases).
bool isGptOssExperts(const std::string &name, int64_t &layer, std::string &which) {
  return expertsPart(name, layer, which) && which.size() == 2 &&
         (which[0] == 'w' || which[0] == 'b') &&
         (which[1] == '1' || which[1] == '2' || which[1] == '3');
}

/// Where element [e][r][c] of a canonical stack lies in the stored tensor
/// (in elements): e x expert + r x row + c x col + first.
struct Strides {
  int64_t expert, row, col, first;
};

/// Copies a [experts, rows, cols] stack of elements (2 or 4 bytes) out of `in`
/// into `out` (row-major), each element from where `at` puts it.
template <typename T>
void gatherStack(const T *in, T *out, int64_t experts, int64_t rows, int64_t cols, Strides at) {
  for (int64_t e = 0; e < experts; ++e)
    for (int64_t r = 0; r < rows; ++r) {
      const T *src = in + e * at.expert + r * at.row + at.first;
      for (int64_t c = 0; c < cols; ++c) *out++ = src[c * at.col];
    }
}

/// Expert `e`'s matrix of stack `which` (w1, w3, w2) in layer `layer`, as
/// Qwen3-MoE's checkpoints name it (mlp.experts.E.gate_proj.weight), or
/// Mixtral's (block_sparse_moe.experts.E.w1.weight).
std::string hfExpertName(const std::string &body, int64_t layer, const std::string &which,
                         int64_t e, bool mixtral) {
  const std::string l = body + "layers." + std::to_string(layer) + ".";
  if (mixtral)
    return l + "block_sparse_moe.experts." + std::to_string(e) + "." + which + ".weight";
  const char *proj = which == "w1" ? "gate_proj" : which == "w3" ? "up_proj" : "down_proj";
  return l + "mlp.experts." + std::to_string(e) + "." + proj + ".weight";
}

/// The decoder's prefix in a checkpoint: "model.", or a Gemma 3
/// multimodal checkpoint's text model ("language_model.model." as Google's
/// files have it, "model.language_model." as newer transformers saves it).
template <typename Entries> std::string decoderPrefix(const Entries &entries) {
  for (const char *body : {"model.", "language_model.model.", "model.language_model."})
    if (entries.count(std::string(body) + "embed_tokens.weight")) return body;
  return "model.";
}

/// Gemma's RMSNorm scales by 1 + weight, in f32: the canonical weight, the
/// scale itself, is that sum (llama.cpp's converter stores it so too).
bool isGemmaNorm(const std::string &name) {
  int64_t layer = 0;
  std::string rest;
  if (name == "norm") return true;
  return splitLayerName(name, layer, rest) &&
         (rest == "attention_norm" || rest == "post_attention_norm" || rest == "ffn_norm" ||
          rest == "post_ffn_norm" || rest == "attention.q_norm" || rest == "attention.k_norm");
}

std::vector<char> onePlusF32(const std::string &stored, const void *data, DType dtype,
                             int64_t count) {
  Progress progress("adding 1 to " + stored, uint64_t(count) * 4);
  std::vector<char> out(size_t(count) * 4);
  float *f = reinterpret_cast<float *>(out.data());
  convertElements(data, dtype, f, DType::f32, count);
  for (int64_t i = 0; i < count; ++i) f[i] += 1.0f;
  progress.advance(uint64_t(count) * 4);
  return out;
}

class SafetensorsSource final : public WeightSource {
public:
  /// `where` names the file given (the single file or the index) in
  /// messages about the checkpoint as a whole.
  SafetensorsSource(std::string label, std::string where, std::vector<MappedFile> shards,
                    std::unordered_map<std::string, Entry> entries, const ModelSpec &model)
      : label(std::move(label)), where(std::move(where)), shards(std::move(shards)),
        entries(std::move(entries)), model(model),
        headDim(model.headDim ? model.headDim
                              : (model.numHeads ? model.hiddenSize / model.numHeads : 0)),
        gemma(model.gemma()), body(decoderPrefix(this->entries)),
        mixtral(this->entries.count(body + "layers.0.block_sparse_moe.gate.weight") != 0),
        gptOss(model.architecture == Architecture::gpt_oss) {
    for (const WeightDecl &d : weightTable(model)) {
      int64_t layer = 0;
      std::string which;
      if (gptOss && isGptOssExperts(d.name, layer, which)) {
        // Every stack but the downs' biases is a transposed copy, or
        // repacked from MXFP4 blocks (17 bytes a block of 32).
        if (const Entry *x = gptOssEntry(layer, which); x && x->dtype && which != "b2")
          held += x->bytes / (which == "w2" ? 1 : 2);
        else if (const Entry *b = mxfp4Entry(layer, which, "_blocks"); b && which[0] == 'w')
          held += b->bytes / 16 * 17 / (which == "w2" ? 1 : 2);
        continue;
      }
      if (isExpertStack(d.name, layer, which)) {
        for (int64_t e = 0; e < model.numExperts; ++e)
          if (const Entry *x = expertEntry(layer, which, e); x && x->dtype && misaligned(*x))
            held += x->bytes;
        continue;
      }
      const Place p = place(d.name);
      if (p.entry && p.entry->dtype && copied(d.name, p))
        held += p.bytes;
    }
  }

  uint64_t heldBytes() const override { return held; }

  std::string describe() const override { return label; }

  SourceTensor tensor(const std::string &name,
                      const std::vector<int64_t> &expected) const override {
    int64_t layer = 0;
    std::string which;
    if (gptOss && isGptOssExperts(name, layer, which))
      return gptOssExperts(name, expected, layer, which);
    if (isExpertStack(name, layer, which)) return expertStack(name, expected, layer, which);
    const Place p = place(name);
    const std::string &stored = p.stored;
    if (!p.entry) {
      std::string hint;
      if (name == "output")
        hint = "the checkpoint has no lm_head.weight; a model whose classifier is the token "
               "embedding sets tie_word_embeddings";
      else if (stored.size() > 11 && stored.compare(stored.size() - 11, 11, "o_proj.bias") == 0)
        hint = "the model has attention_output_bias but the checkpoint has no output bias";
      else if (stored.size() > 5 && stored.compare(stored.size() - 5, 5, ".bias") == 0)
        hint = "the model has attention_bias but the checkpoint has no q/k/v biases";
      else if (std::optional<FusedRows> f = fusedRows(name, model))
        hint = "and no fused '" + nameOf(f->fused) + "' (where phi3 checkpoints hold it)";
      missingTensor(where, name, stored, hint);
    }
    const Entry &e = *p.entry;
    const std::string &file = shards[e.shard].path();
    if (!e.dtype)
      throw InputError(file + ": tensor '" + stored + "' has dtype " + e.dtypeName +
                       "; kvplan reads F32, F16 and BF16 safetensors");
    if (p.fused) {
      std::vector<int64_t> whole = expected;
      if (!whole.empty()) whole[0] = p.fused->total;
      checkShape(file, p.fused->fused, stored, e.shape, whole);
    } else {
      checkShape(file, name, stored, e.shape, expected);
    }

    SourceTensor out;
    out.shape = e.shape;
    if (p.fused) out.shape[0] = p.fused->rows;
    out.dtype = *e.dtype;
    const bool permute = isRopeRows(name), plusOne = gemma && isGemmaNorm(name);
    if (!copied(name, p)) {
      out.data = p.data;
      return out;
    }

    std::lock_guard<std::mutex> lock(mutex);
    auto cached = owned.find(name);
    if (cached != owned.end()) {
      out.data = cached->second.data();
      return out;
    }
    // A copy: new storage is aligned, which also fixes a tensor that a
    // header of odd length left at a misaligned address.
    std::vector<char> buffer;
    if (permute) {
      buffer = permutedRopeRows(file, stored, p.data, p.bytes,
                                out.shape.empty() ? 1 : out.shape[0], headDim,
                                model.rope.rotaryDim);
    } else {
      Progress progress("copying " + stored, p.bytes);
      buffer.assign(p.data, p.data + p.bytes);
      progress.advance(p.bytes);
    }
    if (plusOne) {
      buffer = onePlusF32(stored, buffer.data(), out.dtype,
                          int64_t(p.bytes / uint64_t(dtypeBytes(out.dtype))));
      out.dtype = DType::f32;
    }
    out.data = buffer.data();
    owned.emplace(name, std::move(buffer));
    return out;
  }

private:
  /// Where a weight's bytes are: its own tensor, or its rows of a fused one
  /// (Phi-3's qkv_proj, gate_up_proj) where the checkpoint has no tensor of
  /// the weight the fused one leads with. `stored` is the name looked for.
  struct Place {
    const Entry *entry = nullptr;
    std::string stored;
    std::optional<FusedRows> fused;
    const char *data = nullptr;
    uint64_t bytes = 0;
  };

  Place place(const std::string &name) const {
    auto find = [&](const std::string &stored) -> const Entry * {
      auto it = stored.empty() ? entries.end() : entries.find(stored);
      return it == entries.end() ? nullptr : &it->second;
    };
    StoredRows where = storedRows(name, model, [&](const std::string &n) { return nameOf(n); },
                                  [&](const std::string &n) { return find(n) != nullptr; });
    Place p{find(where.stored), where.stored, where.fused};
    if (p.entry)
      std::tie(p.data, p.bytes) =
          weightBytes(p.entry->data, p.entry->bytes,
                      p.entry->shape.empty() ? 1 : p.entry->shape[0], p.fused);
    return p;
  }

  std::string nameOf(const std::string &name) const {
    return hfName(name, gemma, body, mixtral, gptOss);
  }

  /// gpt-oss's tensor that holds canonical stack `which` of layer `layer`:
  /// mlp.experts.gate_up_proj for the gates and ups (w1, w3), down_proj for
  /// the downs (w2), each with "_bias" for the biases (b1, b3, b2).
  std::string gptOssStored(int64_t layer, const std::string &which) const {
    return body + "layers." + std::to_string(layer) + ".mlp.experts." +
           (which[1] == '2' ? "down_proj" : "gate_up_proj") + (which[0] == 'b' ? "_bias" : "");
  }
  const Entry *gptOssEntry(int64_t layer, const std::string &which) const {
    auto it = entries.find(gptOssStored(layer, which));
    return it == entries.end() ? nullptr : &it->second;
  }
  /// The MXFP4 form of stack `which`: gate_up_proj or down_proj + `part`
  /// (_blocks or _scales).
  const Entry *mxfp4Entry(int64_t layer, const std::string &which, const char *part) const {
    auto it = entries.find(gptOssStored(layer, which) + part);
    return it == entries.end() ? nullptr : &it->second;
  }

  /// gpt-oss's MXFP4 experts as OpenAI publishes them: `*_blocks` [experts,
  /// out, in / 32, 16] U8 (element 2k of a block of 32 in the low nibble of
  /// byte k, 2k + 1 in the high one: transformers' convert_moe_packed_tensors)
  /// and `*_scales` [experts, out, in / 32] U8 (E8M0), [out, in] as
  /// nn.Linear's; repacked once into ggml's MXFP4 blocks (the scale byte,
  /// then element j in the low nibble of byte j and 16 + j in the high one),
  /// gate_up's even rows the gates and its odd ones the ups, which the
  /// packer reads as a GGUF's (exactly into int8).
  SourceTensor gptOssMxfp4(const std::string &name, const std::vector<int64_t> &expected,
                           int64_t layer, const std::string &which) const {
    const Entry *blocks = mxfp4Entry(layer, which, "_blocks");
    const Entry *scales = mxfp4Entry(layer, which, "_scales");
    const std::string stored = gptOssStored(layer, which);
    if (!scales) missingTensor(where, name, stored + "_scales", "beside " + stored + "_blocks");
    const std::string &file = shards[blocks->shard].path();
    const bool down = which == "w2";
    const int64_t experts = expected[0], rows = expected[1], in = expected[2];
    const int64_t storedRows = down ? rows : 2 * rows, groups = in / 32;
    for (auto [e, part, want] :
         {std::tuple<const Entry *, const char *, std::vector<int64_t>>{
              blocks, "_blocks", {experts, storedRows, groups, 16}},
          {scales, "_scales", {experts, storedRows, groups}}}) {
      if (e->dtypeName != "U8")
        throw InputError(file + ": tensor '" + stored + part + "' has dtype " + e->dtypeName +
                         "; MXFP4 blocks and scales are U8");
      if (in % 32 != 0)
        throw InputError(file + ": tensor '" + stored + part + "' holds rows of " +
                         std::to_string(in) + ", not whole MXFP4 blocks of 32");
      checkShape(file, name, stored + part, e->shape, want);
    }
    SourceTensor out;
    out.shape = expected;
    out.quant = QuantType::mxfp4;
    std::lock_guard<std::mutex> lock(mutex);
    auto cached = owned.find(name);
    if (cached == owned.end()) {
      std::vector<char> buffer(size_t(experts * rows * groups * 17));
      Progress progress("repacking " + stored + "_blocks", uint64_t(buffer.size()));
      const auto *q = reinterpret_cast<const uint8_t *>(blocks->data);
      const auto *sc = reinterpret_cast<const uint8_t *>(scales->data);
      auto *o = reinterpret_cast<uint8_t *>(buffer.data());
      auto code = [](const uint8_t *b, int k) { return k % 2 ? b[k / 2] >> 4 : b[k / 2] & 15; };
      for (int64_t e = 0; e < experts; ++e)
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t from = e * storedRows + (down ? r : 2 * r + (which == "w3" ? 1 : 0));
          for (int64_t g = 0; g < groups; ++g, o += 17) {
            const uint8_t *b = q + (from * groups + g) * 16;
            o[0] = sc[from * groups + g];
            for (int j = 0; j < 16; ++j) o[1 + j] = uint8_t(code(b, j) | (code(b, j + 16) << 4));
          }
        }
      progress.advance(uint64_t(buffer.size()));
      cached = owned.emplace(name, std::move(buffer)).first;
    }
    out.data = cached->second.data();
    return out;
  }

  /// A stack of gpt-oss's experts out of its checkpoint's tensors, applied
  /// as x @ W (transformers' GptOssExperts): gate_up_proj [experts, hidden,
  /// 2 x ff] holds gate column j at 2j and up column j at 2j + 1 (and
  /// gate_up_proj_bias [experts, 2 x ff] likewise), down_proj [experts, ff,
  /// hidden]. The canonical stacks ([experts, ff, hidden] gates and ups,
  /// [experts, hidden, ff] downs, [experts, ff] biases) are transposed out
  /// of them, copied once; down_proj_bias is as stored.
  SourceTensor gptOssExperts(const std::string &name, const std::vector<int64_t> &expected,
                             int64_t layer, const std::string &which) const {
    const std::string stored = gptOssStored(layer, which);
    const Entry *x = gptOssEntry(layer, which);
    if (!x && which[0] == 'w' && mxfp4Entry(layer, which, "_blocks"))
      return gptOssMxfp4(name, expected, layer, which);
    if (!x)
      missingTensor(where, name, stored,
                    "gpt-oss's checkpoints hold a layer's experts in gate_up_proj and down_proj "
                    "(or their MXFP4 _blocks and _scales)");
    const std::string &file = shards[x->shard].path();
    if (!x->dtype)
      throw InputError(file + ": tensor '" + stored + "' has dtype " + x->dtypeName +
                       "; kvplan reads F32, F16 and BF16 safetensors");
    const int64_t experts = expected.front();
    const bool matrix = which[0] == 'w', odd = which[1] == '3';
    std::vector<int64_t> want = expected;
    if (which == "w1" || which == "w3") want = {experts, expected[2], 2 * expected[1]};
    if (which == "w2") want = {experts, expected[2], expected[1]};
    if (which == "b1" || which == "b3") want = {experts, 2 * expected[1]};
    checkShape(file, name, stored, x->shape, want);
    SourceTensor out;
    out.shape = expected;
    out.dtype = *x->dtype;
    if (which == "b2" && !misaligned(*x)) {
      out.data = x->data;
      return out;
    }
    std::lock_guard<std::mutex> lock(mutex);
    auto cached = owned.find(name);
    if (cached == owned.end()) {
      const int size = dtypeBytes(*x->dtype);
      const int64_t count = int64_t(x->bytes) / size / (which[1] == '2' ? 1 : 2);
      std::vector<char> buffer(size_t(count) * size_t(size));
      Progress progress("transposing " + stored, uint64_t(buffer.size()));
      std::vector<char> aligned;
      const char *in = x->data;
      if (misaligned(*x)) in = (aligned = std::vector<char>(x->data, x->data + x->bytes)).data();
      const int64_t rows = expected[1], cols = matrix ? expected[2] : 1;
      const int64_t half = odd ? 1 : 0;
      // Stored as [e][c][r] (downs), [e][c][2r + odd] (gates, ups), [e][r]
      // (downs' biases) and [e][2r + odd] (gates' and ups' biases).
      const Strides at = which == "w2"   ? Strides{cols * rows, 1, rows, 0}
                         : matrix        ? Strides{cols * 2 * rows, 2, 2 * rows, half}
                         : which == "b2" ? Strides{rows, 1, 0, 0}
                                         : Strides{2 * rows, 2, 0, half};
      if (size == 2)
        gatherStack(reinterpret_cast<const uint16_t *>(in),
                    reinterpret_cast<uint16_t *>(buffer.data()), experts, rows, cols, at);
      else
        gatherStack(reinterpret_cast<const uint32_t *>(in),
                    reinterpret_cast<uint32_t *>(buffer.data()), experts, rows, cols, at);
      progress.advance(uint64_t(buffer.size()));
      cached = owned.emplace(name, std::move(buffer)).first;
    }
    out.data = cached->second.data();
    return out;
  }

  const Entry *expertEntry(int64_t layer, const std::string &which, int64_t e) const {
    auto it = entries.find(hfExpertName(body, layer, which, e, mixtral));
    return it == entries.end() ? nullptr : &it->second;
  }

  static bool misaligned(const Entry &e) {
    return reinterpret_cast<uintptr_t>(e.data) % uint64_t(dtypeBytes(*e.dtype)) != 0;
  }

  /// A stack of experts from their tensors, one slab each (copied where a
  /// header of odd length left one misaligned); all of one type.
  SourceTensor expertStack(const std::string &name, const std::vector<int64_t> &expected,
                           int64_t layer, const std::string &which) const {
    SourceTensor out;
    out.shape = expected;
    const std::vector<int64_t> one(expected.begin() + 1, expected.end());
    for (int64_t e = 0; e < expected.front(); ++e) {
      const std::string stored = hfExpertName(body, layer, which, e, mixtral);
      const Entry *x = expertEntry(layer, which, e);
      if (!x)
        missingTensor(where, name, stored,
                      "expert " + std::to_string(e) + " of the model's " +
                          std::to_string(expected.front()) + " (num_experts) is not in the "
                          "checkpoint");
      const std::string &file = shards[x->shard].path();
      if (!x->dtype)
        throw InputError(file + ": tensor '" + stored + "' has dtype " + x->dtypeName +
                         "; kvplan reads F32, F16 and BF16 safetensors");
      checkShape(file, name, stored, x->shape, one);
      if (e > 0 && *x->dtype != out.dtype)
        throw InputError(file + ": tensor '" + stored + "' is " + x->dtypeName + " and expert "
                         "0's is " + dtypeName(out.dtype) + "; kvplan reads a layer's experts "
                         "in one type (save the checkpoint in one dtype)");
      out.dtype = *x->dtype;
      out.slabs.push_back(misaligned(*x) ? realigned(stored, *x) : x->data);
    }
    return out;
  }

  const char *realigned(const std::string &stored, const Entry &x) const {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = owned.find(stored);
    if (it == owned.end())
      it = owned.emplace(stored, std::vector<char>(x.data, x.data + x.bytes)).first;
    return it->second.data();
  }

  /// Whether tensor() hands out a copy of `p` rather than the mapped bytes:
  /// RoPE rows to permute, Gemma's norms to add 1 to, or data at an address
  /// its type cannot be read at.
  bool copied(const std::string &name, const Place &p) const {
    return isRopeRows(name) || (gemma && isGemmaNorm(name)) ||
           reinterpret_cast<uintptr_t>(p.data) % uint64_t(dtypeBytes(*p.entry->dtype)) != 0;
  }

  std::string label;
  std::string where;
  std::vector<MappedFile> shards;
  std::unordered_map<std::string, Entry> entries;
  ModelSpec model;
  int64_t headDim;
  bool gemma;       // Gemma's names and norms
  std::string body; // the decoder's prefix (decoderPrefix)
  bool mixtral;     // Mixtral's names for a mixture of experts
  bool gptOss;      // gpt-oss's names, and its experts in gate_up_proj and down_proj
  uint64_t held = 0; // heldBytes()
  // Permuted (and realigned) copies, kept for the source's lifetime so the
  // pointers handed out stay valid; std::map nodes never move.
  mutable std::mutex mutex;
  mutable std::map<std::string, std::vector<char>> owned;
};

std::string readIndexText(const fs::path &p) {
  std::ifstream in(p, std::ios::binary);
  if (!in)
    throw InputError(p.string() + ": cannot open the safetensors index");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

} // namespace

std::unique_ptr<WeightSource> openSafetensors(const std::string &path, const ModelSpec &model) {
  std::error_code ec;
  fs::path p(path);
  fs::path index;
  fs::path single;
  if (fs::is_directory(p, ec)) {
    if (fs::exists(p / "model.safetensors.index.json", ec))
      index = p / "model.safetensors.index.json";
    else
      single = p / "model.safetensors";
  } else if (path.size() >= 5 && path.compare(path.size() - 5, 5, ".json") == 0) {
    index = p;
  } else {
    single = p;
  }

  std::vector<MappedFile> shards;
  std::unordered_map<std::string, Entry> entries;
  if (!single.empty()) {
    shards.push_back(MappedFile::open(single.string(), "safetensors file"));
    readShard(shards.back(), 0, entries);
    return std::make_unique<SafetensorsSource>("safetensors " + single.string(), single.string(),
                                               std::move(shards), std::move(entries), model);
  }

  const std::string indexPath = index.string();
  nlohmann::json root;
  try {
    root = nlohmann::json::parse(readIndexText(index));
  } catch (const nlohmann::json::exception &e) {
    throw InputError(indexPath + ": corrupt safetensors index (not valid JSON): " + e.what());
  }
  if (!root.is_object() || !root.contains("weight_map") || !root["weight_map"].is_object())
    throw InputError(indexPath + ": corrupt safetensors index: expected an object with a "
                                 "\"weight_map\" object (tensor name -> file)");
  std::map<std::string, size_t> shardOf; // file name -> index in `shards`
  for (auto it = root["weight_map"].begin(); it != root["weight_map"].end(); ++it) {
    if (!it.value().is_string())
      throw InputError(indexPath + ": corrupt safetensors index: weight_map entry '" +
                       it.key() + "' is not a file name");
    const std::string fileName = it.value().get<std::string>();
    bool outside = fileName.empty() || fs::path(fileName).is_absolute();
    for (const fs::path &part : fs::path(fileName))
      outside = outside || part == "..";
    if (outside)
      throw InputError(indexPath + ": weight_map entry '" + it.key() + "' names '" + fileName +
                       "', which is not a file beside the index");
    if (shardOf.count(fileName))
      continue;
    shardOf[fileName] = shards.size();
    shards.push_back(
        MappedFile::open((index.parent_path() / fileName).string(), "safetensors shard"));
    readShard(shards.back(), shards.size() - 1, entries);
  }
  for (auto it = root["weight_map"].begin(); it != root["weight_map"].end(); ++it) {
    auto e = entries.find(it.key());
    const size_t want = shardOf[it.value().get<std::string>()];
    if (e == entries.end() || e->second.shard != want)
      throw InputError(indexPath + ": weight_map puts tensor '" + it.key() + "' in " +
                       it.value().get<std::string>() + ", whose header has no such tensor");
  }
  return std::make_unique<SafetensorsSource>("safetensors index " + indexPath, indexPath,
                                             std::move(shards), std::move(entries), model);
}

} // namespace weights
} // namespace kvplan
