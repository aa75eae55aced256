// ModelConfig -> llm dialect: the Llama forward pass, one op per step.
#include "frontend/IRBuilder.h"

#include "ir/LLMDialect.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"

#include <algorithm>
#include <cmath>

using namespace mlir;

namespace kvplan {

void loadDialects(MLIRContext &ctx) {
  ctx.loadDialect<llm::LLMDialect, func::FuncDialect>();
}

namespace {

Type elementType(OpBuilder &b, DType t) {
  switch (t) {
  case DType::bf16: return b.getBF16Type();
  case DType::f16: return b.getF16Type();
  case DType::i32: return b.getI32Type();
  case DType::i8: return b.getIntegerType(8);
  case DType::i4: return b.getIntegerType(4);
  case DType::mxfp4: return llm::MXFP4Type::get(b.getContext());
  case DType::f32: break;
  }
  return b.getF32Type();
}

/// Emits the ops of @forward; holds the shapes every op shares.
class ForwardBuilder {
public:
  ForwardBuilder(OpBuilder &b, const ModelConfig &cfg)
      : b(b), m(cfg.model), rows(cfg.compile.maxSeqLen), act(b.getF32Type()) {}

  RankedTensorType rowsOf(int64_t width, Type elt = {}) {
    return RankedTensorType::get({rows, width}, elt ? elt : act);
  }
  FlatSymbolRefAttr w(const std::string &name) { return SymbolRefAttr::get(b.getContext(), name); }
  Location loc(const std::string &name) { return NameLoc::get(b.getStringAttr(name)); }

  Value linear(const std::string &weight, Value x, int64_t out, const std::string &bias = "") {
    return b.create<llm::LinearOp>(loc(weight), TypeRange{rowsOf(out)}, w(weight), x,
                                   bias.empty() ? FlatSymbolRefAttr() : w(bias))
        .getResult(0);
  }

  Value rmsNorm(const std::string &weight, Value x) {
    return b.create<llm::RMSNormOp>(loc(weight), x.getType(), x, w(weight),
                                    b.getF64FloatAttr(m.rmsNormEps));
  }

  /// Each head of `x` normalized on its own (Qwen3's q_norm and k_norm).
  Value headRmsNorm(const std::string &weight, Value x) {
    return b.create<llm::HeadRMSNormOp>(loc(weight), x.getType(), x, w(weight),
                                        b.getF64FloatAttr(m.rmsNormEps),
                                        b.getI64IntegerAttr(m.headDim));
  }

  /// The per-pair frequency divisors (the spec's explicit factors, a GGUF's
  /// rope_freqs, times linear scaling's factor or YaRN's blend); null when
  /// there are none.
  DenseF64ArrayAttr freqFactors(const RopeSpec &r) {
    const std::vector<double> f = ropeDivisors(r, m.headDim);
    return f.empty() ? DenseF64ArrayAttr() : b.getDenseF64ArrayAttr(f);
  }

  /// Whether only part of each head rotates (Phi-4-mini).
  bool partialRope() const { return rotaryWidth(m.rope, m.headDim) < m.headDim; }

  /// The RoPE of layer `l`: the model's, but for a sliding-window layer of
  /// a model whose local layers rotate on their own base, unscaled (Gemma
  /// 3's rope_local_base_freq).
  RopeSpec layerRope(int64_t l) const {
    if (m.rope.localTheta == 0 || !m.slides(l)) return m.rope;
    RopeSpec local;
    local.theta = m.rope.localTheta;
    local.rotaryDim = m.rope.rotaryDim;
    return local;
  }

  /// The softmax scale: 1 / sqrt(head_dim) (Gemma's: 1 / sqrt of its
  /// query_pre_attn_scalar), times the square of RoPE's attention factor
  /// (LongRoPE's, YaRN's), which scales both the query and the key where the model
  /// multiplies cos and sin by it: the keys cached stay unscaled, the
  /// products are the model's. Where only part of a head rotates, the
  /// factor scales only that part, so the rope ops carry it; a layer
  /// without RoPE (NoPE) has no factor.
  double attentionScale(const RopeSpec *rope) const {
    const double f = partialRope() || !rope ? 1.0 : rope->attentionFactor;
    const double d = m.queryPreAttnScalar > 0 ? m.queryPreAttnScalar : double(m.headDim);
    return f * f / std::sqrt(d);
  }

  /// Sliding-window attention's window in layer `l`, where it slides and
  /// the context passes the window: a window of at least max_seq_len keys
  /// is full attention, and no attribute.
  IntegerAttr window(int64_t l) {
    return m.slides(l) && m.slidingWindow < rows ? b.getI64IntegerAttr(m.slidingWindow)
                                                 : IntegerAttr();
  }

  Value rope(Value x, Value positions, const std::string &name, const RopeSpec &r) {
    llm::RopeScalingAttr scaling;
    if (r.type == RopeType::llama3)
      scaling = llm::RopeScalingAttr::get(b.getContext(), APFloat(r.factor),
                                          APFloat(r.lowFreqFactor), APFloat(r.highFreqFactor),
                                          r.originalMaxPositions);
    const bool partial = partialRope();
    return b.create<llm::RopeOp>(
        loc(name), x.getType(), x, positions, b.getI64IntegerAttr(m.headDim),
        b.getF64FloatAttr(r.theta), scaling, freqFactors(r),
        partial ? b.getI64IntegerAttr(r.rotaryDim) : IntegerAttr(),
        partial && r.attentionFactor != 1 ? b.getF64FloatAttr(r.attentionFactor) : FloatAttr());
  }

  /// Gemma's post-norm of a sublayer's output, before the residual add.
  Value postNorm(const std::string &weight, Value x) {
    return m.postNorms ? rmsNorm(weight, x) : x;
  }

  /// One decoder layer: pre-norm attention and pre-norm SwiGLU (or GeGLU)
  /// FFN, each added to the residual stream `x` (Gemma's normed again
  /// first).
  Value layer(int64_t i, Value x, Value positions) {
    const std::string l = "layers." + std::to_string(i) + ".";
    const bool bias = m.attentionBias;
    Value n = rmsNorm(l + "attention_norm", x);
    Value q = linear(l + "attention.wq", n, m.qDim(), bias ? l + "attention.bq" : "");
    Value k = linear(l + "attention.wk", n, m.kvDim(), bias ? l + "attention.bk" : "");
    Value v = linear(l + "attention.wv", n, m.kvDim(), bias ? l + "attention.bv" : "");
    if (m.qkNorm) {
      q = headRmsNorm(l + "attention.q_norm", q);
      k = headRmsNorm(l + "attention.k_norm", k);
    }
    // SmolLM3's NoPE layers attend without positions.
    const bool rotates = !std::binary_search(m.nopeLayers.begin(), m.nopeLayers.end(), i);
    const RopeSpec r = layerRope(i);
    if (rotates) {
      q = rope(q, positions, l + "attention.rope_q", r);
      k = rope(k, positions, l + "attention.rope_k", r);
    }
    Value a = b.create<llm::AttentionOp>(
        loc(l + "attention"), q.getType(),
        llm::AttentionMaskAttr::get(b.getContext(), llm::AttentionMask::causal), q, k, v,
        b.getI64IntegerAttr(m.numHeads), b.getI64IntegerAttr(m.numKvHeads),
        b.getI64IntegerAttr(m.headDim), b.getF64FloatAttr(attentionScale(rotates ? &r : nullptr)),
        window(i), m.attnSoftcap > 0 ? b.getF64FloatAttr(m.attnSoftcap) : FloatAttr(),
        m.attentionSinks ? w(l + "attention.sinks") : FlatSymbolRefAttr());
    Value o = postNorm(l + "post_attention_norm",
                       linear(l + "attention.wo", a, m.hiddenSize,
                              m.attentionOutBias ? l + "attention.bo" : ""));
    x = b.create<llm::AddOp>(loc(l + "attention.residual"), x, o);

    Value n2 = rmsNorm(l + "ffn_norm", x);
    Value f = m.moe() ? experts(l, n2) : ffn(l + "feed_forward.", n2, m.intermediateSize);
    Value down = postNorm(l + "post_ffn_norm", f);
    return b.create<llm::AddOp>(loc(l + "feed_forward.residual"), x, down);
  }

  /// The gated FFN of weights `f` w1, w3, w2, `width` features wide:
  /// down(act(gate x) * up x).
  Value ffn(const std::string &f, Value x, int64_t width) {
    Value gate = linear(f + "w1", x, width);
    Value up = linear(f + "w3", x, width);
    Value h = b.create<llm::SwiGLUOp>(loc(f + "swiglu"), gate, up,
                                      m.activation == Activation::gelu_tanh);
    return linear(f + "w2", h, m.hiddenSize);
  }

  /// A mixture of experts' FFN: each row through its top experts (and a
  /// shared expert's dense FFN, gated or not, added in by the op).
  Value experts(const std::string &l, Value x) {
    const std::string e = l + "feed_forward.experts.";
    Value shared;
    FlatSymbolRefAttr sharedGate;
    if (m.sharedExpert()) {
      shared = ffn(l + "feed_forward.shared_expert.", x, m.sharedExpertIntermediateSize);
      if (m.sharedExpertGate) sharedGate = w(l + "feed_forward.shared_expert_gate");
    }
    // gpt-oss's biases and clamped SwiGLU.
    auto bias = [&](const std::string &name) {
      return m.expertBias ? w(l + "feed_forward." + name) : FlatSymbolRefAttr();
    };
    const bool clamped = m.activation == Activation::swiglu_oai;
    return b.create<llm::MoEFFNOp>(
        loc(l + "feed_forward.experts"), x.getType(), x, w(l + "feed_forward.router"),
        w(e + "w1"), w(e + "w3"), w(e + "w2"), b.getI64IntegerAttr(m.expertsPerToken),
        m.normTopKProb ? b.getUnitAttr() : UnitAttr(),
        m.activation == Activation::gelu_tanh ? b.getUnitAttr() : UnitAttr(), shared,
        sharedGate, bias("router_bias"), bias("experts.b1"), bias("experts.b3"),
        bias("experts.b2"), clamped ? b.getF64FloatAttr(m.swigluLimit) : FloatAttr(),
        clamped ? b.getF64FloatAttr(m.swigluAlpha) : FloatAttr());
  }

  OpBuilder &b;
  const ModelSpec &m;
  int64_t rows;
  Type act; // activations are f32; weights carry the compiled dtype
};

} // namespace

OwningOpRef<ModuleOp> buildModelIR(MLIRContext &ctx, const ModelConfig &cfg) {
  loadDialects(ctx);
  OpBuilder b(&ctx);
  const ModelSpec &m = cfg.model;
  const CompileSettings &s = cfg.compile;
  OwningOpRef<ModuleOp> module = ModuleOp::create(FileLineColLoc::get(&ctx, cfg.sourcePath, 1, 1));
  (*module)->setAttr(attr::kModel, b.getStringAttr(m.name));
  (*module)->setAttr(attr::kSettings,
                     llm::SettingsAttr::get(&ctx, targetName(s.target), dtypeName(s.weightDtype),
                                            dtypeName(s.kvDtype), s.maxBatch, s.maxSeqLen,
                                            s.prefillChunk, s.pageSize, s.kvPages));
  if (s.speculate > 0) (*module)->setAttr(attr::kSpeculate, b.getI64IntegerAttr(s.speculate));
  if (s.scoreRows > 0) (*module)->setAttr(attr::kScoreRows, b.getI64IntegerAttr(s.scoreRows));
  if (s.windowKvPages > 0)
    (*module)->setAttr(attr::kWindowKvPages, b.getI64IntegerAttr(s.windowKvPages));
  if (!s.decodeCopies.empty())
    (*module)->setAttr(attr::kDecodeCopies, b.getDenseI64ArrayAttr(s.decodeCopies));
  if (!s.prefillCopies.empty())
    (*module)->setAttr(attr::kPrefillCopies, b.getDenseI64ArrayAttr(s.prefillCopies));
  if (s.l2PrefetchMib > 0)
    (*module)->setAttr(attr::kL2PrefetchMib, b.getI64IntegerAttr(s.l2PrefetchMib));

  if (s.tensorParallel > 1)
    (*module)->setAttr(attr::kTensorParallel, b.getI64IntegerAttr(s.tensorParallel));

  b.setInsertionPointToEnd(module->getBody());
  // int8 and int4 apply to matrices; norm scales and biases stay f32. So do
  // Gemma's at any type: each is 1 + a learned offset, which 16 bits would
  // round (transformers adds the 1 in f32, llama.cpp's files store the sum
  // as f32).
  // A mixture's experts may take a type of their own (expert_dtype).
  Type wElt = elementType(b, s.weightDtype), expertElt = elementType(b, s.expertWeightDtype());
  Type vecElt = isFloatDType(s.weightDtype) && !m.gemma()
                    ? wElt
                    : b.getF32Type();
  for (const WeightDecl &w : weightTable(m)) {
    Type elt = w.experts() ? expertElt : w.matrix() ? wElt : w.f32 ? b.getF32Type() : vecElt;
    b.create<llm::WeightOp>(b.getUnknownLoc(), w.name, RankedTensorType::get(w.shape, elt),
                            ArrayAttr(), llm::ShardAttr());
  }

  ForwardBuilder fb(b, cfg);
  auto ids = RankedTensorType::get({s.maxSeqLen}, b.getI32Type());
  auto logitsType = fb.rowsOf(m.vocabSize, b.getF32Type());
  auto fn = b.create<func::FuncOp>(fb.loc(m.name), "forward",
                                   b.getFunctionType({ids, ids}, {logitsType}));
  fn.setArgAttr(0, attr::kArg, b.getStringAttr("tokens"));
  fn.setArgAttr(1, attr::kArg, b.getStringAttr("positions"));
  Block *entry = fn.addEntryBlock();
  b.setInsertionPointToStart(entry);
  Value tokens = entry->getArgument(0), positions = entry->getArgument(1);

  Value x = b.create<llm::EmbeddingOp>(
      fb.loc("tok_embeddings"), fb.rowsOf(m.hiddenSize), fb.w("tok_embeddings"), tokens,
      m.embeddingScale != 1 ? b.getF64FloatAttr(m.embeddingScale) : FloatAttr());
  for (int64_t i = 0; i < m.numLayers; ++i)
    x = fb.layer(i, x, positions);
  Value n = fb.rmsNorm("norm", x);
  Value logits = b.create<llm::LogitsOp>(
      fb.loc("output"), logitsType, fb.w(m.tieWordEmbeddings ? "tok_embeddings" : "output"), n,
      m.finalSoftcap > 0 ? b.getF64FloatAttr(m.finalSoftcap) : FloatAttr());
  b.create<func::ReturnOp>(fb.loc("output"), logits);
  return module;
}

} // namespace kvplan
