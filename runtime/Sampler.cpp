// Greedy, temperature, top-k and top-p sampling.
#include "runtime/Sampler.h"
#include "formats/Tokenizer.h"

#include "runtime/cpu/Isa.h"
#include "spec/ModelSpec.h"
#include "support/Format.h"

#include <algorithm>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <climits>
#include <cmath>
#include <stdexcept>
#include <string>

namespace kvplan {

int32_t argmax(const float *logits, int64_t vocab) {
  int64_t best = 0;
  for (int64_t i = 1; i < vocab; ++i)
    if (logits[i] > logits[best]) best = i;
  return int32_t(best);
}

std::vector<std::vector<int32_t>> badWordSequences(const std::vector<std::string> &words,
                                                   const Tokenizer &tok) {
  std::vector<std::vector<int32_t>> out;
  for (const std::string &word : words) {
    const size_t from = word.find_first_not_of(" \t\n\r\f\v");
    if (from == std::string::npos)
      throw InputError("a bad word is empty or only white space");
    const std::string bare = word.substr(from);
    std::vector<int32_t> alone = tok.encode(bare, false);
    if (alone.empty()) throw InputError("bad word '" + word + "' has no tokens");
    std::vector<int32_t> spaced = tok.encode(" " + bare, false);
    const bool inner = !spaced.empty() && spaced[0] != alone[0] && spaced.size() == alone.size();
    out.push_back(std::move(alone));
    if (inner) out.push_back(std::move(spaced));
  }
  return out;
}

Sampler::Sampler(const SamplingOptions &options) : opts(options), rng(options.seed) {
  if (!(opts.temperature >= 0) || !std::isfinite(opts.temperature))
    throw InputError("--temperature must be 0 (greedy) or positive, got " +
                     formatNumber(opts.temperature));
  if (opts.topK < 0)
    throw InputError("--top-k must be 0 (no limit) or positive, got " + std::to_string(opts.topK));
  if (!(opts.topP > 0 && opts.topP <= 1))
    throw InputError("--top-p must be in (0, 1], got " + formatNumber(opts.topP));
  if (!(opts.minP >= 0 && opts.minP <= 1))
    throw InputError("--min-p must be in [0, 1] (0: off), got " + formatNumber(opts.minP));
  if (opts.minTokens < 0)
    throw InputError("--min-tokens must be 0 or positive, got " +
                     std::to_string(opts.minTokens));
  if (!(std::fabs(opts.presencePenalty) <= 2))
    throw InputError("--presence-penalty must be in [-2, 2], got " +
                     formatNumber(opts.presencePenalty));
  if (!(std::fabs(opts.frequencyPenalty) <= 2))
    throw InputError("--frequency-penalty must be in [-2, 2], got " +
                     formatNumber(opts.frequencyPenalty));
  if (!(opts.repetitionPenalty > 0) || !std::isfinite(opts.repetitionPenalty))
    throw InputError("--repetition-penalty must be above 0 (1: none), got " +
                     formatNumber(opts.repetitionPenalty));
  for (const auto &[token, bias] : opts.logitBias)
    if (token < 0 || !(std::fabs(bias) <= 100))
      throw InputError("logit bias " + formatNumber(bias) + " for token " +
                       std::to_string(token) + ": expected a token id and a bias in [-100, 100]");
  for (int32_t t : opts.allowedTokens)
    if (t < 0) throw InputError("allowed token " + std::to_string(t) + " is not a token id");
  for (const std::vector<int32_t> &w : opts.badWords) {
    if (w.empty()) throw InputError("a bad word has no tokens");
    for (int32_t t : w)
      if (t < 0) throw InputError("bad word token " + std::to_string(t) + " is not a token id");
  }
  if (opts.json && !opts.badWords.empty())
    throw InputError("bad words with JSON output: JSON's own mask decides which tokens may come, "
                     "and the two together could leave none; leave out the bad words");
  if (!opts.allowedTokens.empty() && !opts.badWords.empty())
    throw InputError("bad words with allowed tokens: together they could leave no token to "
                     "draw; ban tokens by leaving them out of the allowed ones");
  if (opts.json && !opts.allowedTokens.empty())
    throw InputError("allowed tokens with JSON output: JSON's own mask decides which tokens may "
                     "come; leave out the allowed tokens");
  if (opts.json && opts.minTokens > 0)
    throw InputError("--min-tokens with JSON output: the answer ends as its object closes, "
                     "whatever its length; leave out --min-tokens");
  if (opts.schema && !opts.json)
    throw std::logic_error("a JSON schema needs the vocabulary's bytes (json)");
  if (opts.json) schemaState = SchemaState(opts.schema ? opts.schema : JsonSchema::anyObject());
}

void Sampler::setPrompt(const std::vector<int32_t> &tokens) {
  if (opts.repetitionPenalty != 1) prompt.insert(tokens.begin(), tokens.end());
}

const float *Sampler::penalize(const float *logits, int64_t vocab) {
  if (opts.allowedTokens.empty()) {
    penalizedRow.assign(logits, logits + vocab);
  } else { // only the allowed ones, first (as vLLM)
    penalizedRow.assign(size_t(vocab), -INFINITY);
    for (int32_t t : opts.allowedTokens)
      if (t < vocab) penalizedRow[size_t(t)] = logits[t];
  }
  for (const std::vector<int32_t> &w : opts.badWords) { // as vLLM: after the generated tokens
    const size_t before = w.size() - 1;
    if (before > history.size() ||
        !std::equal(w.begin(), w.end() - 1, history.end() - long(before)))
      continue;
    if (w.back() < vocab) penalizedRow[size_t(w.back())] = -INFINITY;
  }
  const double rep = opts.repetitionPenalty;
  auto repeat = [&](int32_t t) {
    if (t < 0 || t >= vocab) return;
    float &l = penalizedRow[size_t(t)];
    l = float(l > 0 ? double(l) / rep : double(l) * rep);
  };
  if (rep != 1) {
    for (int32_t t : prompt) repeat(t);
    for (const auto &[t, n] : drawn)
      if (!prompt.count(t)) repeat(t);
  }
  for (const auto &[t, n] : drawn)
    if (t >= 0 && t < vocab)
      penalizedRow[size_t(t)] = float(double(penalizedRow[size_t(t)]) -
                                      opts.frequencyPenalty * double(n) - opts.presencePenalty);
  for (const auto &[t, bias] : opts.logitBias)
    if (t < vocab) penalizedRow[size_t(t)] = float(double(penalizedRow[size_t(t)]) + bias);
  if (opts.json) opts.json->mask(schemaState, penalizedRow.data(), vocab);
  if (draws < opts.minTokens)
    for (int32_t t : opts.endTokens)
      if (t >= 0 && t < vocab) penalizedRow[size_t(t)] = -INFINITY;
  return penalizedRow.data();
}

DeviceSamplingParams Sampler::deviceRow() {
  if (opts.changesRow())
    throw std::logic_error("a row changed on the host first (changesRow: penalties, biases, "
                           "allowed tokens, bad words, JSON, min_tokens) has no device draw");
  DeviceSamplingParams p;
  p.temperature = float(opts.temperature);
  p.topP = float(opts.topP);
  p.topK = int32_t(std::min<int64_t>(opts.topK, INT32_MAX));
  p.minP = float(opts.minP);
  const bool greedy = opts.greedy();
  p.uniform = greedy ? 0.0f : std::uniform_real_distribution<float>(0.0f, 1.0f)(rng);
  return p;
}

int32_t Sampler::sample(const float *logits, int64_t vocab) {
  const bool penalties = opts.changesRow();
  if (penalties) logits = penalize(logits, vocab);
  int32_t token;
  if (greedy()) {
    token = argmax(logits, vocab);
  } else {
    candidates.resize(size_t(vocab));
    for (int64_t i = 0; i < vocab; ++i) candidates[size_t(i)] = {logits[i], int32_t(i)};
    token = pickCandidate(row(), candidates.data(), candidates.size(), 0);
  }
  if (penalties) ++drawn[token];
  if (!opts.badWords.empty()) history.push_back(token);
  ++draws;
  if (opts.json && !opts.json->advance(schemaState, token))
    throw std::logic_error("JSON mode drew token " + std::to_string(token) +
                           ", which its mask refused");
  return token;
}

RowSampling Sampler::row() {
  RowSampling r{opts.temperature, opts.topP, 0, opts.topK, opts.minP};
  if (!r.greedy()) r.uniform = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
  return r;
}

namespace {

/// The tokens `opts` can draw among `count` candidates, in place: sorted
/// (highest logit first; equal logits in index order, so ties resolve as
/// greedy does), each logit replaced by its unnormalised probability at the
/// temperature; returns how many lead (those min-p keeps, at most the
/// top-k, then the top-p prefix of their mass, or of the whole row's when
/// `rowMass` > 0 and top-k does not cut) and their sum.
size_t keptCandidates(const RowSampling &opts, std::pair<float, int32_t> *cands, size_t count,
                      double rowMass, double &sum) {
  auto byLogit = [](const auto &a, const auto &b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  };
  size_t keep = count;
  if (opts.topK > 0 && size_t(opts.topK) < keep) {
    keep = size_t(opts.topK);
    std::partial_sort(cands, cands + keep, cands + count, byLogit);
  } else {
    std::sort(cands, cands + count, byLogit);
  }
  const double maxLogit = cands[0].first;
  sum = 0;
  for (size_t i = 0; i < keep; ++i) {
    const double p = opts.weight(cands[i].first, maxLogit);
    // min-p: the rest are less likely still (they are sorted).
    if (!opts.minPKeeps(p)) {
      keep = i;
      break;
    }
    cands[i].first = float(p);
    sum += p;
  }
  if (opts.topP < 1) {
    if (rowMass > 0 && opts.minP > 0)
      throw std::logic_error("min-p draws from the whole row, not from candidates");
    const double total = rowMass > 0 && opts.topK == 0 ? rowMass : sum;
    double cumulative = 0;
    for (size_t i = 0; i < keep; ++i) {
      cumulative += cands[i].first / total;
      if (cumulative >= opts.topP) {
        keep = i + 1;
        break;
      }
    }
    sum = 0;
    for (size_t i = 0; i < keep; ++i) sum += cands[i].first;
  }
  return keep;
}

} // namespace

int32_t pickCandidate(const RowSampling &opts, std::pair<float, int32_t> *cands, size_t count,
                      double rowMass) {
  if (count == 0) throw std::logic_error("sampling from no candidates");
  if (opts.greedy()) {
    size_t best = 0;
    for (size_t i = 1; i < count; ++i)
      if (cands[i].first > cands[best].first ||
          (cands[i].first == cands[best].first && cands[i].second < cands[best].second))
        best = i;
    return cands[best].second;
  }
  double sum = 0;
  const size_t keep = keptCandidates(opts, cands, count, rowMass, sum);
  // As std::uniform_real_distribution<double>(0, sum) would draw it.
  double r = opts.uniform * sum;
  for (size_t i = 0; i < keep; ++i) {
    r -= cands[i].first;
    if (r < 0) return cands[i].second;
  }
  return cands[keep - 1].second;
}

void samplingProbabilities(const float *logits, int64_t vocab, const SamplingOptions &o,
                           std::vector<double> &out) {
  out.assign(size_t(vocab), 0.0);
  if (o.greedy()) {
    out[size_t(argmax(logits, vocab))] = 1.0;
    return;
  }
  std::vector<std::pair<float, int32_t>> cands(static_cast<size_t>(vocab));
  for (int64_t i = 0; i < vocab; ++i) cands[size_t(i)] = {logits[i], int32_t(i)};
  double sum = 0;
  const size_t keep = keptCandidates({o.temperature, o.topP, 0, o.topK, o.minP}, cands.data(),
                                     cands.size(), 0, sum);
  // Over the kept weights as stored, so the probabilities sum to 1.
  sum = 0;
  for (size_t i = 0; i < keep; ++i) sum += cands[i].first;
  for (size_t i = 0; i < keep; ++i) out[size_t(cands[i].second)] = cands[i].first / sum;
}

namespace {

#if defined(__x86_64__)
/// e^x for x in [-87.3, 0] (x - n ln 2 by a degree-7 Taylor polynomial,
/// times 2^n), to float precision; below -87.3, about 1e-38.
__attribute__((target("avx2,fma"))) inline __m256 exp256(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.3f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145752f), x); // ln 2, high bits
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.42860677e-6f), r);      // and the rest
  __m256 p = _mm256_set1_ps(1.0f / 5040);
  for (float c : {1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f})
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
  const __m256i scale = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(scale));
}

/// Σ e^(x[i] - best), the exponentials in float, summed in double; and how
/// many x[i] are above `above`.
__attribute__((target("avx2,fma,popcnt"))) double sumExpAvx2(const float *x, int64_t n,
                                                              float best, float above,
                                                              int64_t &count) {
  __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
  const __m256 b = _mm256_set1_ps(best), a = _mm256_set1_ps(above);
  int64_t i = 0, c = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    c += __builtin_popcount(unsigned(_mm256_movemask_ps(_mm256_cmp_ps(v, a, _CMP_GT_OQ))));
    const __m256 e = exp256(_mm256_sub_ps(v, b));
    lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
    hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
  }
  double part[4];
  _mm256_storeu_pd(part, _mm256_add_pd(lo, hi));
  double sum = part[0] + part[1] + part[2] + part[3];
  for (; i < n; ++i) {
    sum += std::exp(x[i] - best);
    c += x[i] > above;
  }
  count = c;
  return sum;
}

__attribute__((target("avx2"))) float maxAvx2(const float *x, int64_t n) {
  __m256 m = _mm256_set1_ps(-INFINITY);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(x + i));
  float lanes[8];
  _mm256_storeu_ps(lanes, m);
  float best = -INFINITY;
  for (float v : lanes) best = v > best ? v : best;
  for (; i < n; ++i) best = x[i] > best ? x[i] : best;
  return best;
}

/// The first i from `from` on with x[i] >= floor, or n.
__attribute__((target("avx2"))) int64_t nextAtLeastAvx2(const float *x, int64_t from, int64_t n,
                                                        float floor) {
  const __m256 f = _mm256_set1_ps(floor);
  int64_t i = from;
  for (; i + 8 <= n; i += 8) {
    const int mask = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), f, _CMP_GE_OQ));
    if (mask) return i + __builtin_ctz(unsigned(mask));
  }
  for (; i < n && !(x[i] >= floor); ++i) {
  }
  return i;
}
#endif

bool vectorHost() {
#if defined(__x86_64__)
  return cpu::activeIsa() != cpu::Isa::scalar;
#else
  return false;
#endif
}

/// The largest of x[0, n) (NaNs aside).
float maxOf(const float *x, int64_t n) {
#if defined(__x86_64__)
  if (vectorHost()) return maxAvx2(x, n);
#endif
  float best = -INFINITY;
  for (int64_t i = 0; i < n; ++i) best = x[i] > best ? x[i] : best;
  return best;
}

/// The first i from `from` on with x[i] >= floor, or n.
int64_t nextAtLeast(const float *x, int64_t from, int64_t n, float floor) {
#if defined(__x86_64__)
  if (vectorHost()) return nextAtLeastAvx2(x, from, n, floor);
#endif
  int64_t i = from;
  for (; i < n && !(x[i] >= floor); ++i) {
  }
  return i;
}

/// Σ e^(x[i] - best) over a row whose largest value is `best`, and how
/// many x[i] are above `above` (in `count`).
double sumExp(const float *x, int64_t n, float best, float above, int64_t &count) {
#if defined(__x86_64__)
  if (std::isfinite(best) && vectorHost()) return sumExpAvx2(x, n, best, above, count);
#endif
  double sum = 0;
  count = 0;
  for (int64_t i = 0; i < n; ++i) {
    sum += std::exp(x[i] - best);
    count += x[i] > above;
  }
  return sum;
}

} // namespace

TokenLogprobs tokenLogprobs(const float *logits, int64_t vocab, int32_t token, int64_t top) {
  if (token < 0 || token >= vocab || top < 0 || top > kMaxTopLogprobs)
    throw std::logic_error("tokenLogprobs: token " + std::to_string(token) + " of " +
                           std::to_string(vocab) + ", top " + std::to_string(top));
  const float best = maxOf(logits, vocab);
  int64_t likelier = 0; // the token's rank, less one
  const double logZ =
      double(best) + std::log(sumExp(logits, vocab, best, logits[token], likelier));
  TokenLogprobs out;
  out.chosen = {token, double(logits[token]) - logZ, 1 + likelier};
  // The `top` largest logits, kept sorted: higher first, lower id first.
  std::vector<std::pair<float, int32_t>> kept;
  kept.reserve(size_t(top) + 1);
  auto before = [](const std::pair<float, int32_t> &a, const std::pair<float, int32_t> &b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  };
  float floor = -INFINITY; // once `top` are kept, the least of them
  for (int64_t i = 0; top > 0 && (i = nextAtLeast(logits, i, vocab, floor)) < vocab; ++i) {
    const std::pair<float, int32_t> c{logits[i], int32_t(i)};
    if (int64_t(kept.size()) == top && !before(c, kept.back())) continue;
    kept.insert(std::upper_bound(kept.begin(), kept.end(), c, before), c);
    if (int64_t(kept.size()) > top) kept.pop_back();
    if (int64_t(kept.size()) == top) floor = kept.back().first;
  }
  for (const auto &[logit, id] : kept)
    out.top.push_back({id, double(logit) - logZ, int64_t(out.top.size()) + 1});
  return out;
}

} // namespace kvplan
