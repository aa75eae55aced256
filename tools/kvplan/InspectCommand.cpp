// kvplan inspect: an artifact's manifest and exact memory bill.
#include "tools/kvplan/Commands.h"

#include "formats/ChatTemplateFile.h"
#include "plan/Artifact.h"
#include "plan/Cost.h"
#include "plan/CudaProgram.h"
#include "plan/WeightPacking.h"
#include "support/Format.h"

#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>

namespace kvplan::cli {

namespace {

/// "1 layer", "4 layers".
std::string layerCount(int64_t n, const char *what) {
  return std::to_string(n) + " " + what + (n == 1 ? "" : "s");
}

/// The sliding layers' own pool, where the plan has one.
std::string windowPoolNote(const Plan &p) {
  const KVCacheLayout &w = p.windowCache;
  return "; " + std::to_string(w.pages) + " pages for the " +
         layerCount(w.layers, "sliding-window layer") + " (" + humanBytes(w.bytes()) + ": a sequence holds " +
         withCommas(windowPeakPages(p.model, p.settings)) + " at once under their window of " +
         withCommas(windowPoolWindow(p)) + " keys)";
}

/// The pool in pages and in sequences at full context, which a pool sized
/// for prefix caching (kv_pages) need not hold a whole number of; under a
/// sliding window, a sequence holds fewer pages at once. Where the sliding
/// layers have a pool of their own, that one too.
std::string poolNote(const Plan &p) {
  const KVCacheLayout &kv = p.kvCache;
  const int64_t perSeq = sequencePeakPages(p);
  char held[32];
  if (kv.pages % perSeq == 0)
    std::snprintf(held, sizeof held, "%lld", (long long)(kv.pages / perSeq));
  else
    std::snprintf(held, sizeof held, "%.2f", double(kv.pages) / double(perSeq));
  const bool two = p.windowCache.layers > 0;
  return std::to_string(kv.pages) + " pages x " + std::to_string(kv.pageSize) + " tokens" +
         (two ? " for " + layerCount(kv.layers, "layer") : std::string()) + " (= " +
         held + (kv.pages == perSeq ? " sequence" : " sequences") + " at full context" +
         (perSeq < kv.pagesPerSequence
              ? "; under the sliding window a sequence holds " + withCommas(perSeq) + " of its " +
                    withCommas(kv.pagesPerSequence) + " pages at once"
              : std::string()) +
         ")" + (two ? windowPoolNote(p) : std::string());
}

/// Every line of the bill: each buffer an executor allocates at load.
void printBill(const MemoryBill &bill, const Plan &p, Target target) {
  const bool cuda = target == Target::cuda;
  std::printf("\nmemory bill (bytes, exact: what the %s runtime allocates at load)\n",
              cuda ? "CUDA" : "CPU");
  auto line = [](const std::string &what, int64_t v, const char *note = "") {
    std::printf("  %-22s %22s  %-10s %s\n", what.c_str(), withCommas(v).c_str(),
                humanBytes(v).c_str(), note);
  };
  std::printf("  %-22s %22s\n", "parameters", withCommas(bill.params).c_str());
  if (p.model.moe())
    std::printf("  %-22s %22s  (a token's experts only)\n", "parameters active",
                withCommas(activeParameterCount(p.model)).c_str());
  line("weights", bill.weightsBlobBytes, "the weights section, alignment included");
  line("KV cache", bill.kvCacheBytes, poolNote(p).c_str());
  for (const auto &[name, bytes] : bill.arenaBytes) line("arena (" + name + ")", bytes);
  line("arena (allocated)", bill.arenaAllocBytes, "one arena serves every entry point");
  if (cuda) {
    line("workspace", bill.workspaceBytes, workspaceContents(p).c_str());
    line("reserve", bill.reserveBytes,
         bill.reserveBytes > kCudaRuntimeReserveBytes
             ? "kept free for cuBLAS's handle, NCCL's buffers and the graphs"
             : "kept free for cuBLAS's handle and the graphs");
    line("total (GPU)", bill.totalBytes);
    line("pinned host memory", bill.hostPinnedBytes, "inputs, sampled ids and logits");
    return;
  }
  line("workspace", bill.workspaceBytes, workspaceContents(p).c_str());
  line("total", bill.totalBytes, "whatever the thread count");
}

/// "1, 8, 32", or "none".
std::string rowList(const std::vector<int64_t> &rows) {
  return rows.empty() ? "none" : joinNumbers(rows);
}

/// RoPE in a line: the base, the scaling, and explicit frequency factors
/// (a GGUF's rope_freqs) with runs of equal ones shortened: "1 x10, 1.5, 8 x5".
std::string ropeLine(const RopeSpec &r) {
  std::ostringstream os;
  os << "theta " << r.theta;
  if (r.rotaryDim > 0)
    os << ", rotary_dim " << r.rotaryDim << " (the rest of each head does not turn)";
  if (r.type == RopeType::llama3)
    os << ", llama3 scaling (factor " << r.factor << ", low_freq_factor " << r.lowFreqFactor
       << ", high_freq_factor " << r.highFreqFactor << ", original_max_position_embeddings "
       << r.originalMaxPositions << ")";
  if (r.type == RopeType::linear)
    os << ", linear scaling (factor " << r.factor << ")";
  if (r.type == RopeType::longrope)
    os << ", longrope scaling (original_max_position_embeddings " << r.originalMaxPositions
       << ": the " << (r.freqFactors == r.longFactors ? "long" : "short") << " factors)";
  if (r.type == RopeType::yarn)
    os << ", yarn scaling (factor " << r.factor << " over original_max_position_embeddings "
       << r.originalMaxPositions << ", beta_fast " << r.betaFast << ", beta_slow " << r.betaSlow
       << (r.yarnTruncate ? "" : ", not truncated") << ")";
  if (r.attentionFactor != 1)
    os << ", attention factor " << r.attentionFactor;
  const std::vector<double> &f = r.freqFactors;
  if (!f.empty())
    os << ", frequencies divided by freq_factors";
  for (size_t i = 0, j = 0; i < f.size(); i = j) {
    while (j < f.size() && f[j] == f[i]) ++j;
    os << (i ? ", " : " ") << f[i];
    if (j - i > 1) os << " x" << j - i;
  }
  return os.str();
}

/// A tensor-parallel plan: what each rank holds and what the ranks send.
void printRanks(const Plan &p) {
  const Communication decode = allReduceTraffic(p, "decode", 1);
  const Communication batch = allReduceTraffic(p, "decode", p.entryPoints.at("decode").rows);
  const Communication chunk = allReduceTraffic(p, "prefill", p.entryPoints.at("prefill").rows);
  int64_t cut = 0, whole = 0;
  for (const WeightEntry &w : p.weights) (w.shardDim >= 0 ? cut : whole) += 1;
  std::printf("\ntensor parallel  %lld ranks (run with mpirun -np %lld): the bill below is one "
              "rank's, and every rank's is the same\n",
              (long long)p.ranks(), (long long)p.ranks());
  std::printf("  %lld weights cut between the ranks, %lld replicated\n", (long long)cut,
              (long long)whole);
  for (const WeightEntry &w : p.weights) {
    if (!w.shardWhy.empty()) std::printf("  %s: %s\n", w.name.c_str(), w.shardWhy.c_str());
    if (std::string why = cutGroupsWarning(p, w); !why.empty())
      std::printf("  warning: %s\n", why.c_str());
  }
  std::printf("  all-reduced per decode step: %lld all_reduce ops, %s a row (%s for %lld rows)\n",
              (long long)decode.allReduces, humanBytes(decode.bytes).c_str(),
              humanBytes(batch.bytes).c_str(), (long long)p.entryPoints.at("decode").rows);
  std::printf("  all-reduced per prefill chunk of %lld tokens: %s\n",
              (long long)p.entryPoints.at("prefill").rows, humanBytes(chunk.bytes).c_str());
  std::printf("  sampling sends each rank's best candidates (greedy: 8 bytes a row), never the "
              "logits\n");
}

std::string layerList(const std::vector<int64_t> &layers) {
  std::string s;
  for (int64_t l : layers) s += (s.empty() ? "" : ", ") + std::to_string(l);
  return s;
}

/// What sets a model's layers apart from Llama's besides biases and q/k
/// norms: the window (where the context passes it; the plan's attention ops
/// carry it) and the layers that read every key; Gemma's ways.
std::string modelTraits(const ModelSpec &m, const CompileSettings &s) {
  std::ostringstream os;
  if (m.moe())
    os << ", a mixture of " << m.numExperts << " experts of " << m.expertWidth() << " ("
       << m.expertsPerToken << " a token, their weights "
       << (m.normTopKProb ? "renormalized" : "as routed") << ")";
  if (m.sharedExpert())
    os << " beside a " << (m.sharedExpertGate ? "gated " : "") << "shared expert of "
       << m.sharedExpertIntermediateSize;
  if (m.expertBias) os << ", router and expert biases";
  if (m.activation == Activation::swiglu_oai)
    os << ", clamped SwiGLU (swiglu_oai, limit " << m.swigluLimit << ", alpha " << m.swigluAlpha
       << ")";
  if (m.attentionOutBias) os << ", output projection bias";
  if (m.attentionSinks) os << ", attention sinks";
  if (m.slidingWindow > 0 && m.slidingWindow < s.maxSeqLen) {
    os << ", sliding window " << m.slidingWindow << " keys";
    if (!m.fullAttentionLayers.empty())
      os << " (every key in layers " << layerList(m.fullAttentionLayers) << ")";
  }
  if (m.activation == Activation::gelu_tanh) os << ", GeGLU (gelu_pytorch_tanh)";
  if (m.postNorms) os << ", post-norms";
  if (m.embeddingScale != 1) os << ", embeddings x " << m.embeddingScale;
  if (m.queryPreAttnScalar > 0)
    os << ", softmax over sqrt(" << m.queryPreAttnScalar << ")";
  if (m.attnSoftcap > 0) os << ", scores soft-capped at " << m.attnSoftcap;
  if (m.finalSoftcap > 0)
    os << (m.attnSoftcap > 0 ? ", logits at " : ", logits soft-capped at ") << m.finalSoftcap;
  return os.str();
}

/// The rope line: RoPE's settings, the sliding layers' own base (Gemma 3's)
/// and the layers without it (NoPE).
std::string ropeLine(const ModelSpec &m) {
  std::string line = ropeLine(m.rope);
  if (m.rope.localTheta > 0) {
    std::ostringstream os;
    os << "; the sliding-window layers' theta " << m.rope.localTheta;
    line += os.str();
  }
  if (!m.nopeLayers.empty()) line += "; none in layers " + layerList(m.nopeLayers) + " (NoPE)";
  return line;
}

/// The model line: its shape, and what sets it apart from Llama's layers.
void printModel(const ModelSpec &m, const CompileSettings &s) {
  // A mixture of experts' FFN is its experts (modelTraits), whatever the
  // dense width its config also records.
  const std::string ffn = m.moe() ? "" : ", ffn " + std::to_string(m.intermediateSize);
  std::printf("model     %s: %s, %lld layers, hidden %lld, %lld heads (%lld KV) x %lld%s, "
              "vocab %lld%s%s%s%s\n",
              m.name.c_str(), architectureName(m.architecture), (long long)m.numLayers,
              (long long)m.hiddenSize, (long long)m.numHeads, (long long)m.numKvHeads,
              (long long)m.headDim, ffn.c_str(), (long long)m.vocabSize,
              m.tieWordEmbeddings ? ", tied embeddings" : "",
              m.attentionBias ? ", q/k/v bias" : "", m.qkNorm ? ", q/k norm" : "",
              modelTraits(m, s).c_str());
}

/// The KV cache's pools and layout.
void printKvCache(const Plan &p) {
  const KVCacheLayout &kv = p.kvCache;
  const int64_t atOnce = sequencePeakPages(p);
  std::printf("\nKV cache  %lld pages of %lld tokens (%lld per sequence%s), layout "
              "[layers][k,v][pages][kv_heads][page_size][head_dim]\n",
              (long long)kv.pages, (long long)kv.pageSize, (long long)kv.pagesPerSequence,
              atOnce < kv.pagesPerSequence
                  ? (", " + std::to_string(atOnce) + " at once under the sliding window").c_str()
                  : "");
  if (const KVCacheLayout &w = p.windowCache; w.layers > 0)
    std::printf("          the %s: a pool of their own, %lld pages of %lld tokens (%lld per "
                "sequence at once), through their own page table\n",
                layerCount(w.layers, "sliding-window layer").c_str(), (long long)w.pages,
                (long long)w.pageSize,
                (long long)windowPeakPages(p.model, p.settings));
}

void printHuman(const Artifact &a) {
  const Plan &p = a.plan();
  const ModelSpec &m = p.model;
  const CompileSettings &s = p.settings;
  MemoryBill bill = p.memoryBill();
  std::printf("artifact  %s (format %u, kvplan %s, git %s)\n", a.path().c_str(),
              a.formatVersion(), p.kvplanVersion.c_str(), p.gitHash.c_str());
  printModel(m, s);
  std::printf("rope      %s\n", ropeLine(m).c_str());
  std::printf("settings  target %s, weights %s, KV cache %s, max batch %lld, max seq %lld, "
              "prefill chunk %lld, page %lld tokens, kv pages %lld%s%s%s\n",
              targetName(s.target), s.weightTypesText().c_str(), dtypeName(s.kvDtype),
              (long long)s.maxBatch, (long long)s.maxSeqLen, (long long)s.prefillChunk,
              (long long)s.pageSize, (long long)s.kvPages,
              s.windowKvPages ? (", window kv pages " + std::to_string(s.windowKvPages)).c_str()
                              : "",
              s.speculate ? (", speculate " + std::to_string(s.speculate)).c_str() : "",
              s.scoreRows ? (", score rows " + std::to_string(s.scoreRows)).c_str() : "");
  if (!s.decodeCopies.empty() || !s.prefillCopies.empty())
    std::printf("copies    decode %s, prefill %s rows (a step of few rows runs on the smallest "
                "copy holding them)\n",
                rowList(s.decodeCopies).c_str(), rowList(s.prefillCopies).c_str());
  if (s.memoryBudget > 0)
    std::printf("budget    %s (%s bytes, memory_budget): the bill below is %s bytes less\n",
                formatBytes(uint64_t(s.memoryBudget)).c_str(),
                withCommas(s.memoryBudget).c_str(),
                withCommas(s.memoryBudget - bill.totalBytes).c_str());
  if (p.ranks() > 1) printRanks(p);
  printBill(bill, p, s.target);

  std::printf("\nentry points\n");
  for (const auto &[name, ep] : p.entryPoints)
    std::printf("  %-8s %5lld rows  %4zu steps  %zu args\n", name.c_str(), (long long)ep.rows,
                ep.steps.size(), ep.args.size());
  printKvCache(p);
  std::printf("weights   %zu tensors%s\n", p.weights.size(),
              a.hasSection(kWeightsSection) ? "" : " (not stored: compiled with --weights none)");
  if (a.hasSection(kTokenizerSection)) {
    std::string_view t = a.section(kTokenizerSection);
    std::printf("tokenizer %s\n", std::string(t.substr(0, t.find('\n'))).c_str());
  } else {
    std::printf("tokenizer none (give --tokenizer to run with text)\n");
  }
  if (a.hasSection(kChatTemplateSection)) {
    const ChatTemplateText t =
        parseChatTemplateSection(std::string(a.section(kChatTemplateSection)), a.path());
    std::printf("chat      the model's own template, %zu bytes, from %s\n", t.source.size(),
                t.origin.c_str());
  }
  if (s.target == Target::cuda) {
    std::string archs;
    for (const std::string &arch : p.cudaArchs) archs += (archs.empty() ? "" : ", ") + arch;
    const std::string code = archs.empty()
                                 ? "no machine code (compiled with --arch none: it does not run)"
                                 : "machine code for " + archs;
    std::printf("cuda      %s; the generated source: kvplan inspect --section cuda.source %s\n",
                code.c_str(), a.path().c_str());
    if (a.hasSection(kCudaProgramSection)) {
      std::string_view text = a.section(kCudaProgramSection);
      CudaProgram prog = cudaProgramFromJson(nlohmann::json::parse(text.begin(), text.end()));
      for (const auto &[name, e] : prog.entries) {
        const bool sharded = p.ranks() > 1;
        const LaunchCounts c = countLaunches(e, !sharded);
        std::printf("          %s: %lld kernels and %lld cuBLAS products%s per call (replayed as "
                    "a CUDA graph)\n",
                    name.c_str(), (long long)c.kernels, (long long)c.products,
                    sharded ? (" and " + std::to_string(c.allReduces) + " NCCL all-reduces").c_str()
                            : "");
      }
    }
  }
  std::printf("\nsections\n");
  for (const SectionInfo &sec : a.sections())
    std::printf("  %-17s offset %12llu  size %14s  xxh3 %016llx\n", sec.name.c_str(),
                (unsigned long long)sec.offset, withCommas(int64_t(sec.size)).c_str(),
                (unsigned long long)sec.checksum);
}

} // namespace

void addInspectCommand(CLI::App &app, const GlobalOptions &global, Action &action) {
  auto *cmd = app.add_subcommand("inspect", "Show an artifact's manifest and exact memory bill");
  auto path = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  cmd->add_option("artifact", *path, "The .kvp file")->required();
  cmd->add_flag("--json", *json, "Print one JSON object (integers are exact byte counts)");
  auto section = std::make_shared<std::string>();
  cmd->add_option("--section", *section,
                  "Write one section's bytes to stdout (plan, ir, cuda.source, cuda.program, ...)")
      ->excludes("--json");
  cmd->callback([&action, path, json, section] {
    action = [path, json, section] {
      Artifact a = Artifact::open(*path);
      if (!section->empty()) {
        if (!a.hasSection(*section)) {
          std::string names;
          for (const SectionInfo &s : a.sections()) names += (names.empty() ? "" : ", ") + s.name;
          throw InputError(*path + ": no section '" + *section + "'; it holds " + names);
        }
        if (section->rfind(kWeightsSection, 0) == 0) a.verifySection(*section);
        std::string_view bytes = a.section(*section);
        std::fwrite(bytes.data(), 1, bytes.size(), stdout);
        return 0;
      }
      if (!*json) {
        printHuman(a);
        return 0;
      }
      const Plan &p = a.plan();
      nlohmann::json j = toJson(p.memoryBill());
      j["format_version"] = a.formatVersion();
      j["kvplan_version"] = p.kvplanVersion;
      j["git_hash"] = p.gitHash;
      j["target"] = targetName(p.settings.target);
      j["model"] = toJson(p.model);
      j["settings"] = toJson(p.settings);
      j["has_weights"] = a.hasSection(kWeightsSection);
      if (p.settings.target == Target::cuda) j["cuda_archs"] = p.cudaArchs;
      if (p.ranks() > 1) {
        // The bill above is one rank's; every rank's is the same.
        j["ranks"] = p.ranks();
        j["all_reduce_bytes_per_decode_row"] = allReduceTraffic(p, "decode", 1).bytes;
        j["all_reduce_bytes_per_prefill_chunk"] =
            allReduceTraffic(p, "prefill", p.entryPoints.at("prefill").rows).bytes;
      }
      j["sections"] = nlohmann::json::array();
      for (const SectionInfo &s : a.sections())
        j["sections"].push_back({{"name", s.name}, {"size", s.size}});
      for (const SectionInfo &s : a.sections())
        if (s.name == kWeightsSection) j["weights_hash"] = s.checksum;
      if (a.hasSection(kTokenizerSection)) {
        std::string_view t = a.section(kTokenizerSection);
        j["tokenizer"] = std::string(t.substr(0, t.find('\n')));
      }
      if (a.hasSection(kChatTemplateSection))
        j["chat_template"] = parseChatTemplateSection(
                                 std::string(a.section(kChatTemplateSection)), a.path())
                                 .origin;
      std::cout << j.dump(2) << "\n";
      return 0;
    };
  });
}

} // namespace kvplan::cli
