// Sequence bookkeeping and page allocation around an executor.
#include "runtime/Engine.h"
#include "support/Align.h"

#include <algorithm>

namespace kvplan {

Engine::Engine(const Plan &plan, const char *weights, uint64_t weightsBytes, int threads)
    : exec(std::make_unique<CpuExecutor>(plan, weights, weightsBytes, threads)) {
  init();
}

Engine::Engine(std::unique_ptr<Executor> executor) : exec(std::move(executor)) { init(); }

void Engine::init() {
  const Plan &p = exec->plan();
  chunk = p.entryPoints.at("prefill").rows;
  batch = p.entryPoints.at("decode").rows;
  pagesPerSeq = p.kvCache.pagesPerSequence;
  pageSize = p.kvCache.pageSize;
  // Pages are taken from the back: hand out page 0 first.
  for (int64_t i = p.kvCache.pages - 1; i >= 0; --i) freeList.push_back(int32_t(i));
  seqs.resize(size_t(batch));
}

int Engine::open() {
  for (size_t i = 0; i < seqs.size(); ++i)
    if (!seqs[i].open) {
      seqs[i] = Sequence();
      seqs[i].open = true;
      return int(i);
    }
  throw InputError("all " + std::to_string(batch) +
                   " sequences of the plan are in use (compile with a larger --max-batch)");
}

void Engine::checkOpen(int seq) const {
  if (seq < 0 || size_t(seq) >= seqs.size() || !seqs[size_t(seq)].open)
    throw std::logic_error("sequence " + std::to_string(seq) + " is not open");
}

void Engine::close(int seq) {
  checkOpen(seq);
  Sequence &s = seqs[size_t(seq)];
  for (auto it = s.pages.rbegin(); it != s.pages.rend(); ++it) freeList.push_back(*it);
  s = Sequence();
}

int64_t Engine::length(int seq) const {
  checkOpen(seq);
  return seqs[size_t(seq)].length;
}

void Engine::checkToken(int32_t t) const {
  if (t < 0 || t >= vocabSize())
    throw InputError("token id " + std::to_string(t) + " is outside the vocabulary [0, " +
                     std::to_string(vocabSize()) + ")");
}

void Engine::reserve(int seq, int64_t tokens) {
  Sequence &s = seqs[size_t(seq)];
  if (tokens > maxSeqLen())
    throw InputError("the sequence would hold " + std::to_string(tokens) +
                     " tokens but the plan's context is " + std::to_string(maxSeqLen()) +
                     " (compile with a larger --max-seq)");
  const int64_t need = ceilDiv(tokens, pageSize);
  while (int64_t(s.pages.size()) < need) {
    if (freeList.empty())
      throw InputError("the KV cache has no free page left");
    s.pages.push_back(freeList.back());
    freeList.pop_back();
  }
}

void Engine::setSampling(const SamplingOptions &options) {
  hostSampler = Sampler(options); // validates
  sampling = options;
  deviceRng.seed(options.seed);
}

void Engine::deviceParams(const std::string &entry, int64_t rows) {
  params.resize(size_t(rows));
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  for (DeviceSamplingParams &p : params) {
    p.temperature = float(sampling.temperature);
    p.topP = float(sampling.topP);
    p.topK = int32_t(std::min<int64_t>(sampling.topK, INT32_MAX));
    p.uniform = sampling.temperature > 0 ? uniform(deviceRng) : 0.0f;
  }
  exec->setSampling(entry, params.data(), rows);
}

void Engine::runPrefill(int seq, const int32_t *tokens, int64_t count, bool deviceSampling) {
  checkOpen(seq);
  for (int64_t i = 0; i < count; ++i) checkToken(tokens[i]);
  Sequence &s = seqs[size_t(seq)];
  if (count <= 0)
    throw InputError("a prompt needs at least one token");
  reserve(seq, s.length + count);
  int32_t *tok = exec->tokens("prefill"), *pos = exec->positions("prefill");
  int32_t *table = exec->pageTable("prefill");
  std::fill(table, table + pagesPerSeq, 0);
  std::copy(s.pages.begin(), s.pages.end(), table);
  for (int64_t done = 0; done < count; done += chunk) {
    const int64_t n = std::min(chunk, count - done);
    for (int64_t i = 0; i < chunk; ++i) {
      tok[i] = i < n ? tokens[done + i] : 0;
      pos[i] = i < n ? int32_t(s.length + i) : -1;
    }
    // Only the last chunk's token is kept: draw for it alone.
    if (deviceSampling && done + n == count) deviceParams("prefill", 1);
    exec->run("prefill", n);
    s.length += n;
  }
}

const float *Engine::prefill(int seq, const int32_t *tokens, int64_t count) {
  runPrefill(seq, tokens, count, false);
  return exec->logits("prefill");
}

int32_t Engine::prefillNext(int seq, const int32_t *tokens, int64_t count) {
  const bool device = exec->samplesOnDevice();
  runPrefill(seq, tokens, count, device);
  if (device) return exec->sampled("prefill")[0];
  return hostSampler.sample(exec->logits("prefill"), vocabSize());
}

void Engine::runDecode(const std::vector<int> &which, const std::vector<int32_t> &tokens,
                       bool deviceSampling) {
  if (which.empty() || which.size() != tokens.size() || int64_t(which.size()) > batch)
    throw std::logic_error("decode needs one token for each of 1 to max_batch sequences");
  for (size_t i = 0; i < which.size(); ++i) {
    checkOpen(which[i]);
    checkToken(tokens[i]);
    for (size_t j = 0; j < i; ++j)
      if (which[j] == which[i]) throw std::logic_error("a sequence appears twice in one step");
  }
  for (int s : which) reserve(s, seqs[size_t(s)].length + 1);
  int32_t *tok = exec->tokens("decode"), *pos = exec->positions("decode");
  int32_t *table = exec->pageTable("decode");
  for (int64_t r = 0; r < batch; ++r) {
    int32_t *row = table + r * pagesPerSeq;
    std::fill(row, row + pagesPerSeq, 0);
    if (r < int64_t(which.size())) {
      const Sequence &s = seqs[size_t(which[size_t(r)])];
      std::copy(s.pages.begin(), s.pages.end(), row);
      tok[r] = tokens[size_t(r)];
      pos[r] = int32_t(s.length);
    } else {
      tok[r] = 0;
      pos[r] = -1;
    }
  }
  if (deviceSampling) deviceParams("decode", int64_t(which.size()));
  exec->run("decode", int64_t(which.size()));
  for (int s : which) seqs[size_t(s)].length += 1;
}

const float *Engine::decode(const std::vector<int> &which, const std::vector<int32_t> &tokens) {
  runDecode(which, tokens, false);
  return exec->logits("decode");
}

std::vector<int32_t> Engine::decodeNext(const std::vector<int> &which,
                                        const std::vector<int32_t> &tokens) {
  const bool device = exec->samplesOnDevice();
  runDecode(which, tokens, device);
  std::vector<int32_t> next(which.size());
  if (device) {
    const int32_t *t = exec->sampled("decode");
    std::copy(t, t + which.size(), next.begin());
  } else {
    const float *logits = exec->logits("decode");
    for (size_t i = 0; i < which.size(); ++i)
      next[i] = hostSampler.sample(logits + int64_t(i) * vocabSize(), vocabSize());
  }
  return next;
}

} // namespace kvplan
