// Sequences over a compiled plan: prompts run as prefill chunks, then one
// decode step per token for up to max_batch sequences at once; KV-cache
// pages are handed to a sequence from a free list as it grows and returned
// when it ends.
#pragma once

#include "runtime/cpu/CpuExecutor.h"
#include "runtime/Executor.h"
#include "runtime/Sampler.h"

#include <memory>
#include <optional>
#include <random>

#include <cstdint>
#include <vector>

namespace kvplan {

class Engine {
public:
  /// On the CPU.
  Engine(const Plan &plan, const char *weights, uint64_t weightsBytes, int threads);
  /// On any executor (runtime/Executor.h).
  explicit Engine(std::unique_ptr<Executor> executor);

  const Plan &plan() const { return exec->plan(); }
  int threads() const { return exec->threads(); }
  Executor &executor() { return *exec; }
  int64_t vocabSize() const { return plan().model.vocabSize; }
  int64_t maxSeqLen() const { return plan().settings.maxSeqLen; }
  int64_t maxBatch() const { return plan().settings.maxBatch; }

  /// Starts a sequence; throws InputError when max_batch are already open.
  int open();
  /// Ends a sequence and returns its pages to the free list.
  void close(int seq);
  /// Tokens the sequence holds in the cache.
  int64_t length(int seq) const;
  /// KV-cache pages not owned by any sequence.
  int64_t freePages() const { return int64_t(freeList.size()); }

  /// Appends `tokens` to the sequence, running prefill chunks; returns the
  /// logits after the last token (vocab floats, valid until the next call).
  /// Throws InputError when a token is outside the vocabulary or the
  /// sequence would exceed max_seq_len.
  const float *prefill(int seq, const int32_t *tokens, int64_t count);

  /// One decode step: token tokens[i] appended to sequence seqs[i]; returns
  /// [seqs.size(), vocab] logits, row i for seqs[i].
  const float *decode(const std::vector<int> &seqs, const std::vector<int32_t> &tokens);

  /// Sampling for prefillNext/decodeNext (default: greedy). Throws
  /// InputError for bad options, as Sampler does.
  void setSampling(const SamplingOptions &options);
  /// prefill() and decode() that return the next token of each sequence
  /// instead of logits: sampled on the device where the executor can (only
  /// token ids then leave the GPU), else by Sampler here.
  int32_t prefillNext(int seq, const int32_t *tokens, int64_t count);
  std::vector<int32_t> decodeNext(const std::vector<int> &seqs,
                                  const std::vector<int32_t> &tokens);

private:
  void runPrefill(int seq, const int32_t *tokens, int64_t count, bool deviceSampling);
  void runDecode(const std::vector<int> &seqs, const std::vector<int32_t> &tokens,
                 bool deviceSampling);
  void deviceParams(const std::string &entry, int64_t rows);
  void checkToken(int32_t t) const;
  void reserve(int seq, int64_t tokens);
  void checkOpen(int seq) const;
  void init();

  std::unique_ptr<Executor> exec;
  SamplingOptions sampling;
  Sampler hostSampler{SamplingOptions{}};
  std::mt19937_64 deviceRng{0};
  std::vector<DeviceSamplingParams> params;
  int64_t chunk, batch, pagesPerSeq, pageSize;
  std::vector<int32_t> freeList;
  struct Sequence {
    bool open = false;
    int64_t length = 0;
    std::vector<int32_t> pages;
  };
  std::vector<Sequence> seqs;
};

} // namespace kvplan
