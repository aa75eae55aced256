// The reference forward pass.
#include "tests/unit/ReferenceModel.h"

#include <algorithm>
#include <cmath>

namespace kvplan::test {

namespace {

/// The E2M1 values in code order (OCP: sign, two exponent bits, one
/// mantissa bit), magnitudes only.
constexpr double kE2m1[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};

/// `w`'s group [k0, end) rounded as MXFP4: scale 2^X with X = floor(log2
/// max|w|) - 2, each w / 2^X to the nearest E2M1 value (ties to the even
/// code, saturating at 6), written from the format's definition.
void roundMxfp4Group(const float *w, int64_t k0, int64_t end, float *out) {
  double amax = 0;
  for (int64_t k = k0; k < end; ++k) amax = std::max(amax, std::abs(double(w[k])));
  if (amax == 0) {
    for (int64_t k = k0; k < end; ++k) out[k] = 0;
    return;
  }
  const double scale = std::ldexp(1.0, int(std::floor(std::log2(amax))) - 2);
  for (int64_t k = k0; k < end; ++k) {
    const double v = std::abs(double(w[k])) / scale;
    int best = 0;
    for (int c = 1; c < 8; ++c) {
      const double d = std::abs(v - kE2m1[c]), b = std::abs(v - kE2m1[best]);
      if (d < b || (d == b && c % 2 == 0)) best = c;
    }
    out[k] = float(std::copysign(kE2m1[best] * scale, double(w[k])));
  }
}

} // namespace

ReferenceModel::ReferenceModel(const ModelSpec &m, const WeightSource &source, DType modelDtype,
                               int64_t context, std::optional<DType> expertDtype)
    : spec(m), context(context ? context : m.maxPositions) {
  for (const WeightDecl &d : weightTable(m)) {
    const DType dtype = d.experts() && expertDtype ? *expertDtype : modelDtype;
    SourceTensor t = source.tensor(d.name, d.shape);
    int64_t n = 1;
    for (int64_t s : d.shape) n *= s;
    std::vector<float> f32(static_cast<size_t>(n)), rounded(static_cast<size_t>(n));
    // Exact f32 whatever the source's type (a quantized GGUF dequantized).
    sourceRowsToF32(t, 0, n / d.shape.back(), f32.data());
    if (d.f32) {
      rounded = f32; // kept f32 at any weight type (attention sinks)
    } else if (dtype == DType::i8 && d.matrix()) {
      const int64_t cols = d.shape.back();
      for (int64_t r = 0; r < n / cols; ++r)
        for (int64_t g = 0; g < cols; g += kInt8Group) {
          const int64_t end = std::min(cols, g + kInt8Group);
          double amax = 0;
          for (int64_t k = g; k < end; ++k)
            amax = std::max(amax, double(std::abs(f32[size_t(r * cols + k)])));
          const float scale = float(amax) / 127.0f;
          for (int64_t k = g; k < end; ++k) {
            float q = scale > 0 ? std::nearbyint(f32[size_t(r * cols + k)] * (1.0f / scale)) : 0;
            rounded[size_t(r * cols + k)] = std::clamp(q, -127.0f, 127.0f) * scale;
          }
        }
    } else if (dtype == DType::i4 && d.matrix()) {
      // Per group of 32: 16 levels from the smallest weight to the largest.
      const int64_t cols = d.shape.back();
      for (int64_t r = 0; r < n / cols; ++r)
        for (int64_t g = 0; g < cols; g += kInt4Group) {
          const float *w = f32.data() + r * cols;
          const int64_t end = std::min(cols, g + kInt4Group);
          const float lo = *std::min_element(w + g, w + end), hi = *std::max_element(w + g, w + end);
          const float scale = (hi - lo) / 15.0f;
          for (int64_t k = g; k < end; ++k) {
            const float q = scale > 0 ? std::clamp(std::nearbyint((w[k] - lo) / scale), 0.0f, 15.0f) : 0;
            const float product = q * scale;
            rounded[size_t(r * cols + k)] = product + lo;
          }
        }
    } else if (dtype == DType::mxfp4 && d.matrix()) {
      const int64_t cols = d.shape.back();
      for (int64_t r = 0; r < n / cols; ++r)
        for (int64_t g = 0; g < cols; g += kMxfp4Group)
          roundMxfp4Group(f32.data() + r * cols, g, std::min(cols, g + kMxfp4Group),
                          rounded.data() + r * cols);
    } else if (dtype == DType::bf16 || dtype == DType::f16) {
      std::vector<uint16_t> half(static_cast<size_t>(n));
      convertElements(f32.data(), DType::f32, half.data(), dtype, n);
      convertElements(half.data(), dtype, rounded.data(), DType::f32, n);
    } else {
      rounded = f32;
    }
    weights[d.name] = std::vector<double>(rounded.begin(), rounded.end());
  }
}

namespace {

using Vec = std::vector<double>;

/// The product with matrix `e` of a stack of [out, in] matrices.
Vec matvecAt(const Vec &stack, int64_t e, const Vec &x, int64_t out, int64_t in) {
  Vec y(size_t(out), 0.0);
  const size_t base = size_t(e * out * in);
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < in; ++i)
      y[size_t(o)] += stack[base + size_t(o * in + i)] * x[size_t(i)];
  return y;
}

Vec matvec(const Vec &wt, const Vec &x, int64_t out, int64_t in) {
  return matvecAt(wt, 0, x, out, in);
}

/// SiLU(g) x u, or GELU's tanh form as PyTorch writes it (Gemma's).
double gated(double g, double u, Activation a) {
  const double pi = 3.14159265358979323846;
  return (a == Activation::gelu_tanh
              ? 0.5 * g * (1 + std::tanh(std::sqrt(2 / pi) * (g + 0.044715 * g * g * g)))
              : g / (1 + std::exp(-g))) *
         u;
}

Vec rmsnorm(const Vec &x, const Vec &g, double eps) {
  double ss = 0;
  for (double v : x) ss += v * v;
  double inv = 1.0 / std::sqrt(ss / double(x.size()) + eps);
  Vec y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * inv * g[i];
  return y;
}

/// RMSNorm of each `headDim`-wide head of `x` with the one weight `g`.
void headNorm(Vec &x, const Vec &g, int64_t headDim, double eps) {
  for (size_t h = 0; h < x.size(); h += size_t(headDim)) {
    Vec head = rmsnorm(Vec(x.begin() + std::ptrdiff_t(h), x.begin() + std::ptrdiff_t(h) + headDim),
                       g, eps);
    std::copy(head.begin(), head.end(), x.begin() + std::ptrdiff_t(h));
  }
}

/// YaRN's inverse frequency of pair i as transformers' _compute_yarn_parameters
/// writes it: the interpolated (slowed by the factor) and extrapolated
/// (kept) frequencies mixed by a linear ramp over the correction range, the
/// dimensions where the pretraining context makes beta_fast down to
/// beta_slow turns, rounded outwards unless truncate is false.
double yarnInvFreq(const RopeSpec &r, int64_t dim, int64_t i) {
  const double pi = 3.14159265358979323846;
  auto correctionDim = [&](double rotations) {
    return double(dim) * std::log(double(r.originalMaxPositions) / (rotations * 2 * pi)) /
           (2 * std::log(r.theta));
  };
  double low = correctionDim(r.betaFast), high = correctionDim(r.betaSlow);
  if (r.yarnTruncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, double(dim - 1));
  if (low == high) high += 0.001;
  const double posFreq = std::pow(r.theta, double(2 * i) / double(dim));
  const double extrapolation = 1.0 / posFreq, interpolation = 1.0 / (r.factor * posFreq);
  const double ramp = std::min(std::max((double(i) - low) / (high - low), 0.0), 1.0);
  const double extrapolationFactor = 1 - ramp;
  return interpolation * (1 - extrapolationFactor) + extrapolation * extrapolationFactor;
}

/// RoPE on adjacent pairs, with Llama 3's or linear frequency scaling, YaRN's,
/// explicit per-pair divisors (a GGUF's rope_freqs) or LongRoPE's (the long
/// ones for a context beyond the pretraining one), cos and sin multiplied
/// by the attention factor as transformers does. With partial RoPE only the
/// first rotaryDim dimensions of a head turn (at frequencies of that width)
/// and the rest are left as they are.
void rope(Vec &x, int64_t pos, int64_t headDim, const RopeSpec &r, int64_t context) {
  const double pi = 3.14159265358979323846;
  const int64_t width = r.rotaryDim > 0 ? r.rotaryDim : headDim;
  for (size_t h = 0; h < x.size(); h += size_t(headDim))
    for (int64_t i = 0; i < width / 2; ++i) {
      double freq = 1.0 / std::pow(r.theta, double(2 * i) / double(width));
      if (r.type == RopeType::llama3) {
        double wavelen = 2 * pi / freq;
        double lowWave = double(r.originalMaxPositions) / r.lowFreqFactor;
        double highWave = double(r.originalMaxPositions) / r.highFreqFactor;
        if (wavelen > lowWave) {
          freq = freq / r.factor;
        } else if (wavelen >= highWave) {
          double smooth = (double(r.originalMaxPositions) / wavelen - r.lowFreqFactor) /
                          (r.highFreqFactor - r.lowFreqFactor);
          freq = (1 - smooth) * freq / r.factor + smooth * freq;
        }
      }
      if (r.type == RopeType::linear) freq /= r.factor;
      if (r.type == RopeType::yarn) freq = yarnInvFreq(r, width, i);
      if (r.type == RopeType::longrope)
        freq /= (context > r.originalMaxPositions ? r.longFactors : r.shortFactors)[size_t(i)];
      else if (!r.freqFactors.empty())
        freq /= r.freqFactors[size_t(i)];
      double a = x[h + size_t(2 * i)], b = x[h + size_t(2 * i + 1)];
      double c = std::cos(double(pos) * freq) * r.attentionFactor,
             s = std::sin(double(pos) * freq) * r.attentionFactor;
      x[h + size_t(2 * i)] = a * c - b * s;
      x[h + size_t(2 * i + 1)] = a * s + b * c;
    }
}

} // namespace

std::vector<double> ReferenceModel::logits(const std::vector<int32_t> &tokens) const {
  const ModelSpec &m = spec;
  const int64_t H = m.hiddenSize, D = m.headDim, n = int64_t(tokens.size());
  const int64_t q = m.qDim(), kv = m.kvDim(), group = m.numHeads / m.numKvHeads;
  std::vector<Vec> x(static_cast<size_t>(n));
  const Vec &emb = w("tok_embeddings");
  for (int64_t t = 0; t < n; ++t) {
    x[size_t(t)] = Vec(emb.begin() + tokens[size_t(t)] * H, emb.begin() + (tokens[size_t(t)] + 1) * H);
    for (double &v : x[size_t(t)]) v *= double(float(m.embeddingScale)); // Gemma's sqrt(hidden)
  }

  for (int64_t l = 0; l < m.numLayers; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    // Gemma 3: the sliding layers (all but fullAttentionLayers) rotate on
    // their own base, unscaled; the global ones as the model says.
    const bool slides =
        m.slidingWindow > 0 && std::find(m.fullAttentionLayers.begin(),
                                         m.fullAttentionLayers.end(), l) == m.fullAttentionLayers.end();
    RopeSpec rs = m.rope;
    if (slides && m.rope.localTheta > 0) {
      rs = RopeSpec();
      rs.theta = m.rope.localTheta;
      rs.rotaryDim = m.rope.rotaryDim;
    }
    std::vector<Vec> Q(static_cast<size_t>(n)), K(static_cast<size_t>(n)), V(static_cast<size_t>(n));
    for (int64_t t = 0; t < n; ++t) {
      Vec h = rmsnorm(x[size_t(t)], w(p + "attention_norm"), m.rmsNormEps);
      Q[size_t(t)] = matvec(w(p + "attention.wq"), h, q, H);
      K[size_t(t)] = matvec(w(p + "attention.wk"), h, kv, H);
      V[size_t(t)] = matvec(w(p + "attention.wv"), h, kv, H);
      if (m.attentionBias)
        for (int64_t i = 0; i < q; ++i) Q[size_t(t)][size_t(i)] += w(p + "attention.bq")[size_t(i)];
      if (m.attentionBias)
        for (int64_t i = 0; i < kv; ++i) {
          K[size_t(t)][size_t(i)] += w(p + "attention.bk")[size_t(i)];
          V[size_t(t)][size_t(i)] += w(p + "attention.bv")[size_t(i)];
        }
      if (m.qkNorm) { // Qwen3: each head normalized on its own, before RoPE
        headNorm(Q[size_t(t)], w(p + "attention.q_norm"), D, m.rmsNormEps);
        headNorm(K[size_t(t)], w(p + "attention.k_norm"), D, m.rmsNormEps);
      }
      // NoPE layers (SmolLM3's) attend without positions.
      if (std::find(m.nopeLayers.begin(), m.nopeLayers.end(), l) == m.nopeLayers.end()) {
        rope(Q[size_t(t)], t, D, rs, context);
        rope(K[size_t(t)], t, D, rs, context);
      }
    }
    for (int64_t t = 0; t < n; ++t) {
      // Causal attention: token t sees tokens 0..t, or with a sliding
      // window the last `window` of them (those above t - window).
      const int64_t first = slides ? std::max<int64_t>(0, t - m.slidingWindow + 1) : 0;
      const double scaleDim = m.queryPreAttnScalar > 0 ? m.queryPreAttnScalar : double(D);
      Vec att(size_t(q), 0.0);
      for (int64_t h = 0; h < m.numHeads; ++h) {
        const int64_t g = h / group;
        Vec scores(size_t(t + 1 - first));
        double mx = -1e300;
        for (int64_t s = first; s <= t; ++s) {
          double dot = 0;
          for (int64_t i = 0; i < D; ++i)
            dot += Q[size_t(t)][size_t(h * D + i)] * K[size_t(s)][size_t(g * D + i)];
          double score = dot / std::sqrt(scaleDim);
          if (m.attnSoftcap > 0) score = m.attnSoftcap * std::tanh(score / m.attnSoftcap);
          scores[size_t(s - first)] = score;
          mx = std::max(mx, scores[size_t(s - first)]);
        }
        // gpt-oss's sink: one more logit in the softmax (transformers
        // concatenates it to the scores and drops its column after).
        const double sink = m.attentionSinks ? w(p + "attention.sinks")[size_t(h)] : -1e300;
        mx = std::max(mx, sink);
        double sum = m.attentionSinks ? std::exp(sink - mx) : 0.0;
        for (double &v : scores) sum += (v = std::exp(v - mx));
        for (int64_t s = first; s <= t; ++s)
          for (int64_t i = 0; i < D; ++i)
            att[size_t(h * D + i)] +=
                scores[size_t(s - first)] / sum * V[size_t(s)][size_t(g * D + i)];
      }
      Vec o = matvec(w(p + "attention.wo"), att, H, q);
      if (m.attentionOutBias)
        for (int64_t i = 0; i < H; ++i) o[size_t(i)] += w(p + "attention.bo")[size_t(i)];
      if (m.postNorms) o = rmsnorm(o, w(p + "post_attention_norm"), m.rmsNormEps); // Gemma's
      for (int64_t i = 0; i < H; ++i) x[size_t(t)][size_t(i)] += o[size_t(i)];
      Vec h2 = rmsnorm(x[size_t(t)], w(p + "ffn_norm"), m.rmsNormEps);
      Vec down = m.moe() ? experts(p, h2) : ffn(p, h2);
      if (m.postNorms) down = rmsnorm(down, w(p + "post_ffn_norm"), m.rmsNormEps);
      for (int64_t i = 0; i < H; ++i) x[size_t(t)][size_t(i)] += down[size_t(i)];
    }
  }
  Vec last = rmsnorm(x[size_t(n - 1)], w("norm"), m.rmsNormEps);
  Vec out = matvec(w(m.tieWordEmbeddings ? "tok_embeddings" : "output"), last, m.vocabSize, H);
  if (m.finalSoftcap > 0) // Gemma 2's soft-capped logits
    for (double &v : out) v = m.finalSoftcap * std::tanh(v / m.finalSoftcap);
  return out;
}

std::vector<double> ReferenceModel::ffn(const std::string &p, const std::vector<double> &x) const {
  return gatedFfn(p + "feed_forward.", spec.intermediateSize, x);
}

std::vector<double> ReferenceModel::gatedFfn(const std::string &f, int64_t width,
                                             const std::vector<double> &x) const {
  const int64_t H = spec.hiddenSize;
  Vec gate = matvec(w(f + "w1"), x, width, H);
  Vec up = matvec(w(f + "w3"), x, width, H);
  for (size_t i = 0; i < gate.size(); ++i) gate[i] = gated(gate[i], up[i], spec.activation);
  return matvec(w(f + "w2"), gate, H, width);
}

// As transformers' MixtralSparseMoeBlock, Qwen3MoeSparseMoeBlock and
// Qwen2MoeSparseMoeBlock: the softmax of the router's logits, the top
// experts_per_token (torch.topk), their probabilities renormalized where
// norm_topk_prob, each expert's FFN times its weight, summed; then the
// shared expert's FFN, times sigmoid(shared_expert_gate(x)) where gated,
// added.
std::vector<double> ReferenceModel::experts(const std::string &p,
                                            const std::vector<double> &x) const {
  if (spec.expertBias) return gptOssExperts(p, x);
  const int64_t H = spec.hiddenSize, F = spec.expertWidth(), E = spec.numExperts;
  Vec probs = matvec(w(p + "feed_forward.router"), x, E, H);
  const double top = *std::max_element(probs.begin(), probs.end());
  double sum = 0;
  for (double &v : probs) sum += (v = std::exp(v - top));
  for (double &v : probs) v /= sum;
  std::vector<int64_t> order(static_cast<size_t>(E));
  for (int64_t e = 0; e < E; ++e) order[size_t(e)] = e;
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return probs[size_t(a)] > probs[size_t(b)]; });
  order.resize(size_t(spec.expertsPerToken));
  double chosen = 0;
  for (int64_t e : order) chosen += probs[size_t(e)];
  Vec out(size_t(H), 0.0);
  for (int64_t e : order) {
    const std::string s = p + "feed_forward.experts.";
    Vec gate = matvecAt(w(s + "w1"), e, x, F, H), up = matvecAt(w(s + "w3"), e, x, F, H);
    for (size_t i = 0; i < gate.size(); ++i) gate[i] = gated(gate[i], up[i], spec.activation);
    const Vec y = matvecAt(w(s + "w2"), e, gate, H, F);
    const double weight = probs[size_t(e)] / (spec.normTopKProb ? chosen : 1.0);
    for (int64_t i = 0; i < H; ++i) out[size_t(i)] += weight * y[size_t(i)];
  }
  if (!spec.sharedExpert()) return out;
  const Vec shared =
      gatedFfn(p + "feed_forward.shared_expert.", spec.sharedExpertIntermediateSize, x);
  const double gate =
      spec.sharedExpertGate
          ? 1.0 / (1.0 + std::exp(-matvec(w(p + "feed_forward.shared_expert_gate"), x, 1, H)[0]))
          : 1.0;
  for (int64_t i = 0; i < H; ++i) out[size_t(i)] += gate * shared[size_t(i)];
  return out;
}

// As transformers' GptOssMLP: the router's logits plus its bias, the top
// experts_per_token logits (torch.topk) and the softmax of those alone; each
// chosen expert's gate and up (plus their biases) through the clamped
// SwiGLU, (up + 1) x gate x sigmoid(alpha gate) with the gate clamped above
// at the limit and the up to +-limit, then its down (plus its bias), times
// its weight, summed.
std::vector<double> ReferenceModel::gptOssExperts(const std::string &p,
                                                  const std::vector<double> &x) const {
  const int64_t H = spec.hiddenSize, F = spec.expertWidth(), E = spec.numExperts;
  const std::string f = p + "feed_forward.", s = f + "experts.";
  Vec logits = matvec(w(f + "router"), x, E, H);
  for (int64_t e = 0; e < E; ++e) logits[size_t(e)] += w(f + "router_bias")[size_t(e)];
  std::vector<int64_t> top(static_cast<size_t>(E));
  for (int64_t e = 0; e < E; ++e) top[size_t(e)] = e;
  std::stable_sort(top.begin(), top.end(),
                   [&](int64_t a, int64_t b) { return logits[size_t(a)] > logits[size_t(b)]; });
  top.resize(size_t(spec.expertsPerToken));
  const double best = logits[size_t(top[0])];
  double sum = 0;
  for (int64_t e : top) sum += std::exp(logits[size_t(e)] - best);
  const double limit = spec.swigluLimit, alpha = spec.swigluAlpha;
  Vec out(size_t(H), 0.0);
  for (int64_t e : top) {
    Vec gate = matvecAt(w(s + "w1"), e, x, F, H), up = matvecAt(w(s + "w3"), e, x, F, H);
    for (int64_t i = 0; i < F; ++i) {
      const double g = std::min(gate[size_t(i)] + w(s + "b1")[size_t(e * F + i)], limit);
      const double u = std::clamp(up[size_t(i)] + w(s + "b3")[size_t(e * F + i)], -limit, limit);
      gate[size_t(i)] = (u + 1) * (g / (1 + std::exp(-alpha * g)));
    }
    const Vec y = matvecAt(w(s + "w2"), e, gate, H, F);
    const double weight = std::exp(logits[size_t(e)] - best) / sum;
    for (int64_t i = 0; i < H; ++i)
      out[size_t(i)] += weight * (y[size_t(i)] + w(s + "b2")[size_t(e * H + i)]);
  }
  return out;
}

double cosineSimilarity(const float *actual, const std::vector<double> &reference) {
  double dot = 0, a2 = 0, b2 = 0;
  for (size_t i = 0; i < reference.size(); ++i) {
    dot += double(actual[i]) * reference[i];
    a2 += double(actual[i]) * actual[i];
    b2 += reference[i] * reference[i];
  }
  return dot / std::sqrt(a2 * b2);
}

double relativeError(const float *actual, const std::vector<double> &reference) {
  double maxDiff = 0, scale = 0;
  for (size_t i = 0; i < reference.size(); ++i) {
    maxDiff = std::max(maxDiff, std::abs(double(actual[i]) - reference[i]));
    scale = std::max(scale, std::abs(reference[i]));
  }
  return maxDiff / std::max(scale, 1e-30);
}

} // namespace kvplan::test
