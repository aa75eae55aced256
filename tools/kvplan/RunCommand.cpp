// kvplan run: generates text (or token ids) from an artifact or a model.
#include "tools/kvplan/Commands.h"
#include "tools/kvplan/Runnable.h"
#include "tools/kvplan/Speculation.h"

#include "runtime/Engine.h"
#include "runtime/JsonGrammar.h"
#include "runtime/JsonSchema.h"
#include "runtime/Sampler.h"
#include "runtime/Scheduler.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <unistd.h>

namespace kvplan::cli {

namespace {

using Clock = std::chrono::steady_clock;
double seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

/// Writes generated text. On a terminal, control characters other than
/// newline, tab and carriage return are shown as \xNN, so a model's output
/// (random weights emit any byte) cannot drive the terminal.
void emit(const std::string &text) {
  static const bool tty = isatty(1);
  if (!tty) {
    std::fputs(text.c_str(), stdout);
    return;
  }
  for (unsigned char c : text) {
    if ((c < 0x20 && c != '\n' && c != '\t' && c != '\r') || c == 0x7f)
      std::printf("\\x%02x", c);
    else
      std::putchar(c);
  }
}

struct RunOptions {
  ModelOptions model;
  std::string prompt, promptIds;
  bool promptGiven = false;
  int64_t tokens = 256;
  SamplingOptions sampling{1.0, 0, 0.9, 0};
  bool ignoreEos = false, printIds = false, stats = false, noBos = false;
  int threads = 0;
  bool noGraphs = false;
  bool noPrefixCache = false;
  bool json = false;          // --json: the output is one JSON object
  std::string jsonSchemaFile; // --json-schema: one that this schema accepts
  SpeculateFlags speculate;
};

/// The flags' own errors, before the model is loaded.
void checkRunOptions(const RunOptions &o) {
  Sampler check(o.sampling);
  if (o.tokens < 0) throw InputError("-n must be 0 or more, got " + std::to_string(o.tokens));
  checkThreadsFlag(o.threads);
  if (!o.promptIds.empty() && o.promptGiven)
    throw InputError("give either -p TEXT or --prompt-ids, not both");
  if (o.sampling.minTokens > o.tokens)
    throw InputError("--min-tokens is " + std::to_string(o.sampling.minTokens) +
                     " but -n asks for at most " + std::to_string(o.tokens) +
                     " tokens; lower --min-tokens or raise -n");
  if (o.sampling.changesRow() && o.speculate.on())
    throw InputError("--speculate with penalties or --min-tokens: speculative decoding's "
                     "acceptance rule knows neither, so the request would only decode; leave "
                     "out --speculate or the others");
  if ((o.json || !o.jsonSchemaFile.empty()) && o.speculate.on())
    throw InputError("--speculate with --json or --json-schema: JSON's mask is put on each row "
                     "on the host, and speculative decoding knows no mask, so the request would "
                     "only decode; leave out --speculate or the JSON flag");
}

/// --json-schema FILE, compiled (runtime/JsonSchema.h); errors name the file.
std::shared_ptr<const JsonSchema> readJsonSchema(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw InputError(path + ": cannot read the --json-schema file (" + std::strerror(errno) +
                     ")");
  std::ostringstream text;
  text << in.rdbuf();
  nlohmann::ordered_json schema;
  try {
    schema = nlohmann::ordered_json::parse(text.str());
  } catch (const nlohmann::json::exception &e) {
    throw InputError(path + ": the --json-schema file is not JSON: " + e.what());
  }
  try {
    return JsonSchema::compile(schema, "schema");
  } catch (const InputError &e) {
    throw InputError(path + ": " + e.what());
  }
}

/// --json and --json-schema (its schema already compiled into the sampling
/// options): the tokens' bytes from the tokenizer, checked against it.
void holdToJson(RunOptions &o, const Runnable &r) {
  if (!o.json && o.jsonSchemaFile.empty()) return;
  if (!r.tokenizer)
    throw InputError(std::string(o.json ? "--json" : "--json-schema") +
                     " needs the model's tokenizer to know each token's bytes, and this model "
                     "has none: give --tokenizer FILE");
  auto vocab = std::make_shared<const JsonVocabulary>(JsonVocabulary::of(*r.tokenizer));
  if (o.sampling.schema) {
    try {
      vocab->check(*o.sampling.schema);
    } catch (const InputError &e) {
      throw InputError(o.jsonSchemaFile + ": " + e.what());
    }
  }
  o.sampling.json = vocab;
}

/// The prompt's ids, checked against the model's vocabulary and context.
std::vector<int32_t> preparePrompt(const RunOptions &o, const Runnable &r) {
  std::vector<int32_t> prompt;
  if (!o.promptIds.empty())
    prompt = parseIds(o.promptIds, "--prompt-ids");
  else
    prompt = requireTokenizer(r).encode(o.prompt, !o.noBos);
  if (prompt.empty())
    throw InputError("the prompt is empty: give -p TEXT or --prompt-ids (BOS is added to text "
                     "unless --no-bos)");
  for (int32_t id : prompt)
    if (id < 0 || id >= r.plan.model.vocabSize)
      throw InputError("prompt token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                       std::to_string(r.plan.model.vocabSize) + ")");
  if (int64_t(prompt.size()) > r.plan.settings.maxSeqLen)
    throw InputError("the prompt has " + std::to_string(prompt.size()) +
                     " tokens but the model was compiled for a context of " +
                     std::to_string(r.plan.settings.maxSeqLen) +
                     " (compile with a larger --max-seq)");
  return prompt;
}

/// The model's end-of-sequence ids and the tokenizer's.
std::vector<int32_t> stopIds(const Runnable &r) {
  const std::vector<int64_t> &eos = r.plan.model.eosTokenIds;
  std::vector<int32_t> ids(eos.begin(), eos.end());
  if (r.tokenizer)
    for (int32_t id : r.tokenizer->eosIds()) ids.push_back(id);
  return ids;
}

/// Writes the prompt, then each token as it is generated, flushed at once:
/// ids with --print-ids, else text when there is a tokenizer, else the
/// generated ids alone.
class TokenWriter {
public:
  TokenWriter(bool ids, const Tokenizer *tok) : ids(ids) {
    if (!ids && tok) stream = std::make_unique<StreamDecoder>(*tok);
  }
  void prompt(const std::vector<int32_t> &prompt) {
    if (ids)
      printIds(prompt, first);
    else if (stream)
      for (int32_t id : prompt) emit(stream->push(id));
    std::fflush(stdout);
  }
  void generated(int32_t id) {
    if (ids)
      printIds({id}, first);
    else if (stream)
      emit(stream->push(id));
    else
      std::printf("%s%d", count == 0 ? "" : " ", id);
    ++count;
    std::fflush(stdout);
  }
  void finish() {
    if (stream) emit(stream->flush());
    std::printf("\n");
    std::fflush(stdout);
  }

private:
  bool ids;
  std::unique_ptr<StreamDecoder> stream;
  bool first = true; // for printIds
  int64_t count = 0; // generated tokens written
};

struct Generation {
  int64_t generated = 0;
  double prefillS = 0, decodeS = 0;
  bool contextFull = false;
  std::optional<SpeculationStats> speculation;
};

/// One request through the scheduler (and so the prefix cache): prefill,
/// then decode until -n tokens, an end-of-sequence id (unless --ignore-eos)
/// or a full context.
Generation generate(Engine &engine, const Tokenizer *tok, const std::vector<int32_t> &prompt,
                    const std::vector<int32_t> &stop, const RunOptions &o, TokenWriter &out,
                    Speculation *spec) {
  Generation g;
  if (o.tokens == 0) return g;
  GenerationRequest req;
  req.prompt = prompt;
  req.sampling = o.sampling;
  const int64_t room = engine.maxSeqLen() - int64_t(prompt.size());
  if (room <= 0) {
    g.contextFull = true;
    return g;
  }
  req.maxNewTokens = std::min(o.tokens, room);
  if (!o.ignoreEos) req.stopIds = stop;
  const bool capped = req.maxNewTokens < o.tokens;
  const auto t0 = Clock::now();
  Clock::time_point first = t0;
  req.onEvent = [&](const TokenEvent &e) {
    if (e.token < 0) {
      g.contextFull = capped && e.reason == FinishReason::length;
      return;
    }
    if (g.generated++ == 0) first = Clock::now();
    out.generated(e.token);
  };
  SchedulerOptions so;
  if (spec) {
    so.proposer = spec->proposer.get();
    so.speculate = spec->k;
  }
  Scheduler scheduler(engine, tok, so);
  scheduler.submit(std::move(req));
  scheduler.runUntilIdle();
  if (spec) {
    const SchedulerStats &st = scheduler.stats();
    SpeculationStats s;
    s.verifySteps = st.verifyCalls;
    s.decodeSteps = st.decodeCalls;
    s.proposed = st.draftsProposed;
    s.accepted = st.draftsAccepted;
    g.speculation = s;
  }
  g.prefillS = seconds(t0, first);
  g.decodeS = seconds(first, Clock::now());
  return g;
}

void printStats(const Generation &g, size_t promptTokens, Executor &exec) {
  // The first generated token comes from the prefill; each later one from a
  // decode step.
  const int64_t steps = std::max<int64_t>(g.generated - 1, 0);
  std::fprintf(stderr,
               "prefill: %zu tokens in %.3f s (%.1f tok/s); decode: %lld tokens in %.3f s "
               "(%.1f tok/s); %s\n",
               promptTokens, g.prefillS, double(promptTokens) / g.prefillS, (long long)steps,
               g.decodeS, steps ? double(steps) / g.decodeS : 0.0, exec.describe().c_str());
  if (const auto &s = g.speculation)
    std::fprintf(stderr,
                 "speculation: %lld verify steps, %lld decode steps, %lld of %lld drafts kept, "
                 "%.2f tokens per verify step\n",
                 (long long)s->verifySteps, (long long)s->decodeSteps, (long long)s->accepted,
                 (long long)s->proposed, s->tokensPerVerify());
}

int runGenerate(RunOptions o, bool verbose) {
  checkRunOptions(o);
  // The schema before the model loads, so that its errors come first.
  if (!o.jsonSchemaFile.empty()) o.sampling.schema = readJsonSchema(o.jsonSchemaFile);
  ModelOptions target = o.model;
  o.speculate.prepare(target);
  Runnable r = loadRunnable(target, verbose);
  holdToJson(o, r);
  const std::vector<int32_t> prompt = preparePrompt(o, r);
  const ExecOptions exec{o.threads, !o.noGraphs};
  checkExecFlags(r, exec, o.speculate.draftModel());
  Engine engine(makeExecutor(r, exec), {!o.noPrefixCache});
  if (verbose) std::fprintf(stderr, "running on %s\n", engine.executor().describe().c_str());
  Speculation spec;
  if (o.speculate.on()) spec = makeSpeculation(o.speculate, r, engine, o.sampling, exec, verbose);
  TokenWriter out(o.printIds, r.tokenizer.get());
  out.prompt(prompt);
  const Generation g = generate(engine, r.tokenizer.get(), prompt, stopIds(r), o, out,
                                o.speculate.on() ? &spec : nullptr);
  out.finish();
  if (g.contextFull)
    std::fprintf(stderr, "[stopped: the context of %lld tokens is full]\n",
                 (long long)engine.maxSeqLen());
  if (o.stats) printStats(g, prompt.size(), engine.executor());
  return 0;
}

} // namespace

void addRunCommand(CLI::App &app, const GlobalOptions &global, Action &action) {
  auto *cmd = app.add_subcommand("run", "Generate text from an artifact or a model");
  auto o = std::make_shared<RunOptions>();
  o->model.addRunnable(cmd);
  auto *p = cmd->add_option("-p,--prompt", o->prompt, "The prompt text");
  cmd->add_option("--prompt-ids", o->promptIds, "The prompt as token ids: 1,2,3");
  cmd->add_option("-n,--tokens", o->tokens, "New tokens to generate")->capture_default_str();
  cmd->add_option("--temperature", o->sampling.temperature, "0 for greedy")
      ->capture_default_str();
  cmd->add_option("--top-k", o->sampling.topK, "Sample among the K likeliest (0: all)")
      ->capture_default_str();
  cmd->add_option("--top-p", o->sampling.topP, "Sample among the likeliest up to this mass")
      ->capture_default_str();
  cmd->add_option("--min-p", o->sampling.minP,
                  "Sample only among tokens at least this fraction as likely as the likeliest "
                  "(0: off; before top-k and top-p)")
      ->capture_default_str();
  cmd->add_option("--min-tokens", o->sampling.minTokens,
                  "Generate at least this many tokens before an end-of-sequence token ends it");
  cmd->add_option("--seed", o->sampling.seed, "Random seed for sampling")->capture_default_str();
  cmd->add_option("--presence-penalty", o->sampling.presencePenalty,
                  "Subtracted from the logit of every token generated so far, -2 to 2");
  cmd->add_option("--frequency-penalty", o->sampling.frequencyPenalty,
                  "Times the times a token was generated, subtracted from its logit, -2 to 2");
  cmd->add_option("--repetition-penalty", o->sampling.repetitionPenalty,
                  "The logits of tokens in the prompt or generated are divided by it (when "
                  "positive; else multiplied): above 1 discourages repeats")
      ->capture_default_str();
  cmd->add_flag("--ignore-eos", o->ignoreEos, "Do not stop at the end-of-sequence token");
  cmd->add_flag("--no-bos", o->noBos, "Do not put BOS before the prompt text");
  cmd->add_flag("--print-ids", o->printIds,
                "Print the prompt ids then the generated ids, and nothing else, on stdout");
  cmd->add_flag("--stats", o->stats, "Print prefill and decode tokens per second on stderr");
  cmd->add_option("--threads", o->threads,
                  "CPU: threads, at most the machine's hardware threads (default: all of them)");
  cmd->add_flag("--no-graphs", o->noGraphs,
                "CUDA: launch every kernel eagerly instead of replaying CUDA graphs");
  cmd->add_flag("--no-prefix-cache", o->noPrefixCache,
                "Keep no KV-cache pages for reuse by later prompts");
  cmd->add_flag("--json", o->json,
                "Generate one JSON object (JSON mode; ends as it closes; needs a tokenizer)");
  cmd->add_option("--json-schema", o->jsonSchemaFile,
                  "Generate one JSON object that the JSON schema in this file accepts "
                  "(structured output, as serve's response_format json_schema)");
  o->speculate.add(cmd);
  o->model.addRunnableWeights(cmd);
  cmd->callback([&action, &global, o, p] {
    o->promptGiven = p->count() > 0;
    action = [&global, o] { return runGenerate(*o, global.verbose); };
  });
}

} // namespace kvplan::cli
