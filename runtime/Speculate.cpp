// Proposers, the acceptance rule and the one-sequence speculative loop.
#include "runtime/Speculate.h"

#include "support/Error.h"

#include <algorithm>
#include <cmath>

namespace kvplan {

Draft PromptLookup::propose(uint64_t, const std::vector<int32_t> &c, int64_t max) {
  Draft d;
  const int64_t n = int64_t(c.size());
  if (max <= 0) return d;
  for (int64_t g = std::min(maxNgram, n - 1); g >= minNgram; --g) {
    const int32_t *suffix = c.data() + (n - g);
    // The latest earlier occurrence: it best predicts what comes next.
    for (int64_t i = n - g - 1; i >= 0; --i) {
      if (!std::equal(suffix, suffix + g, c.data() + i)) continue;
      const int64_t from = i + g, to = std::min(n, from + max);
      d.tokens.assign(c.begin() + from, c.begin() + to);
      return d;
    }
  }
  return d;
}

DraftModel::DraftModel(Engine &draft, int64_t targetVocab, const SamplingOptions &sampling,
                       const std::string &draftName)
    : engine(draft), sampling(sampling), rng(sampling.seed ^ 0x9e3779b97f4a7c15ULL) {
  if (draft.vocabSize() != targetVocab)
    throw InputError(draftName + ": the draft model's vocabulary has " +
                     std::to_string(draft.vocabSize()) + " tokens but the target's has " +
                     std::to_string(targetVocab) + "; a draft must share the target's tokenizer");
}

/// Runs the context's tokens the draft has not seen (rolling back what it
/// guessed wrong); returns its logits after the last.
const float *DraftModel::catchUp(Stream &s, const std::vector<int32_t> &context) {
  const int64_t n = int64_t(context.size());
  int64_t same = 0;
  while (same < int64_t(s.tokens.size()) && same < n - 1 && s.tokens[size_t(same)] == context[size_t(same)])
    ++same;
  engine.truncate(s.seq, same);
  s.tokens.assign(context.begin(), context.end());
  return engine.prefill(s.seq, context.data() + same, n - same);
}

Draft DraftModel::propose(uint64_t stream, const std::vector<int32_t> &context, int64_t max) {
  Draft d;
  const int64_t n = int64_t(context.size());
  max = std::min(max, engine.maxSeqLen() - n);
  if (max <= 0 || n == 0) return d;
  Stream &s = streams[stream];
  if (s.seq < 0) s.seq = engine.open();
  try {
    draftAhead(s, context, max, d);
  } catch (const InputError &) {
    // The draft's own pool or context is full (it serves every stream):
    // no proposal this time; the target decodes as without speculation.
    release(stream);
    return Draft{};
  }
  return d;
}

void DraftModel::draftAhead(Stream &s, const std::vector<int32_t> &context, int64_t max,
                            Draft &d) {
  const float *logits = catchUp(s, context);
  const int64_t vocab = engine.vocabSize();
  const bool greedy = sampling.greedy();
  std::vector<double> q;
  for (int64_t j = 0; j < max; ++j) {
    int32_t t;
    if (greedy) {
      t = argmax(logits, vocab);
    } else {
      samplingProbabilities(logits, vocab, sampling, q);
      t = int32_t(std::discrete_distribution<int32_t>(q.begin(), q.end())(rng));
      d.probs.insert(d.probs.end(), q.begin(), q.end());
    }
    d.tokens.push_back(t);
    if (j + 1 < max) {
      logits = engine.decode({s.seq}, {t});
      s.tokens.push_back(t);
    }
  }
}

void DraftModel::release(uint64_t stream) {
  auto it = streams.find(stream);
  if (it == streams.end()) return;
  if (it->second.seq >= 0) engine.close(it->second.seq);
  streams.erase(it);
}

namespace {

int32_t draw(const std::vector<double> &weights, std::mt19937_64 &rng) {
  return int32_t(std::discrete_distribution<int32_t>(weights.begin(), weights.end())(rng));
}

} // namespace

Verdict speculativeSample(const int32_t *drafts, int64_t k, const double *p, const float *q,
                          int64_t vocab, std::mt19937_64 &rng) {
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  std::vector<double> residual(static_cast<size_t>(vocab));
  for (int64_t i = 0; i < k; ++i) {
    const double *pi = p + i * vocab;
    const float *qi = q ? q + i * vocab : nullptr;
    const int32_t x = drafts[i];
    const double qx = qi ? double(qi[x]) : 1.0;
    if (qx > 0 && uniform(rng) < std::min(1.0, pi[x] / qx)) continue;
    // Rejected: draw from max(0, p - q), normalised.
    double sum = 0;
    for (int64_t v = 0; v < vocab; ++v) {
      const double qv = qi ? double(qi[v]) : (v == x ? 1.0 : 0.0);
      sum += residual[size_t(v)] = std::max(0.0, pi[v] - qv);
    }
    // p == q leaves nothing, but then the draft is never rejected; guard
    // against rounding all the same.
    if (sum <= 0) return {i, x};
    return {i, draw(residual, rng)};
  }
  const double *last = p + k * vocab;
  return {k, draw(std::vector<double>(last, last + vocab), rng)};
}

std::mt19937_64 acceptanceRng(const SamplingOptions &o) {
  return std::mt19937_64(o.seed ^ 0x5bd1e995ULL);
}

Verdict judgeDrafts(const Draft &d, const float *logits, int64_t vocab, const SamplingOptions &o,
                    std::mt19937_64 &rng) {
  const int64_t k = int64_t(d.tokens.size());
  if (o.greedy()) {
    int64_t i = 0;
    while (i < k && argmax(logits + i * vocab, vocab) == d.tokens[size_t(i)]) ++i;
    return {i, argmax(logits + i * vocab, vocab)};
  }
  std::vector<double> p(size_t((k + 1) * vocab)), row;
  for (int64_t i = 0; i <= k; ++i) {
    samplingProbabilities(logits + i * vocab, vocab, o, row);
    std::copy(row.begin(), row.end(), p.begin() + i * vocab);
  }
  return speculativeSample(d.tokens.data(), k, p.data(),
                           d.probs.empty() ? nullptr : d.probs.data(), vocab, rng);
}

namespace {

/// The loop's state: what the sequence holds, what was emitted.
struct Run {
  Engine &engine;
  const SpeculativeRequest &req;
  const std::function<void(int32_t)> &onToken;
  std::vector<int32_t> context; // the prompt, then every kept token
  int64_t generated = 0;
  bool done = false;

  /// Passes a kept token on; false once generation ends.
  bool keep(int32_t t) {
    const std::vector<int32_t> &stop = req.stopIds;
    if (std::find(stop.begin(), stop.end(), t) != stop.end()) return !(done = true);
    context.push_back(t);
    onToken(t);
    if (++generated >= req.maxNew) done = true;
    return !done;
  }
};

} // namespace

SpeculationStats generateSpeculatively(Engine &engine, Proposer &proposer,
                                       const SpeculativeRequest &req,
                                       const std::function<void(int32_t)> &onToken) {
  SpeculationStats stats;
  const int64_t k = std::min(req.k > 0 ? req.k : engine.verifyRows() - 1, engine.verifyRows() - 1);
  if (k <= 0)
    throw InputError("speculation needs an artifact compiled with --speculate K");
  const int64_t n = int64_t(req.prompt.size());
  const int64_t maxNew = std::min(req.maxNew, engine.maxSeqLen() - n);
  if (maxNew <= 0) return stats;
  SpeculativeRequest capped = req;
  capped.maxNew = maxNew;
  Run run{engine, capped, onToken, req.prompt};
  Sampler sampler(req.sampling);
  std::mt19937_64 rng = acceptanceRng(req.sampling);
  const int seq = engine.open();
  const uint64_t stream = uint64_t(seq);
  try {
    const int64_t held = engine.reuse(seq, req.prompt.data(), n);
    const float *logits = engine.prefill(seq, req.prompt.data() + held, n - held);
    run.keep(sampler.sample(logits, engine.vocabSize()));
    while (!run.done) {
      const int32_t pending = run.context.back();
      const int64_t room = std::min(k, maxNew - run.generated - 1);
      Draft d = room > 0 ? proposer.propose(stream, run.context, room) : Draft{};
      if (d.tokens.empty()) {
        ++stats.decodeSteps;
        run.keep(sampler.sample(engine.decode({seq}, {pending}), engine.vocabSize()));
        continue;
      }
      std::vector<int32_t> rows = {pending};
      rows.insert(rows.end(), d.tokens.begin(), d.tokens.end());
      const int64_t before = engine.length(seq);
      logits = engine.verify(seq, rows.data(), int64_t(rows.size()));
      const Verdict v = judgeDrafts(d, logits, engine.vocabSize(), req.sampling, rng);
      engine.truncate(seq, before + 1 + v.accepted);
      ++stats.verifySteps;
      stats.proposed += int64_t(d.tokens.size());
      stats.accepted += v.accepted;
      for (int64_t i = 0; i < v.accepted && !run.done; ++i) run.keep(d.tokens[size_t(i)]);
      if (!run.done) run.keep(v.next);
    }
  } catch (...) {
    proposer.release(stream);
    engine.close(seq);
    throw;
  }
  proposer.release(stream);
  engine.close(seq);
  return stats;
}

} // namespace kvplan
