// kvplan run: generates text (or token ids) from an artifact or a model.
#include "tools/kvplan/ChatChoice.h"
#include "tools/kvplan/Commands.h"
#include "tools/kvplan/Runnable.h"
#include "tools/kvplan/Speculation.h"

#include "runtime/Engine.h"
#include "runtime/JsonGrammar.h"
#include "runtime/JsonSchema.h"
#include "runtime/Sampler.h"
#include "runtime/Scheduler.h"
#include "server/ChatTemplate.h"
#include "server/Harmony.h"
#include "server/Reasoning.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <unistd.h>

namespace kvplan::cli {

namespace {

using Clock = std::chrono::steady_clock;
double seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

/// Writes generated text to `out` (stdout, or stderr for a thought). On a
/// terminal, control characters other than newline, tab and carriage return
/// are shown as \xNN, so a model's output (random weights emit any byte)
/// cannot drive the terminal.
void emit(const std::string &text, FILE *out = stdout) {
  static const bool ttyOut = isatty(1), ttyErr = isatty(2);
  if (!(out == stderr ? ttyErr : ttyOut)) {
    std::fputs(text.c_str(), out);
    return;
  }
  for (unsigned char c : text) {
    if ((c < 0x20 && c != '\n' && c != '\t' && c != '\r') || c == 0x7f)
      std::fprintf(out, "\\x%02x", c);
    else
      std::fputc(c, out);
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
  int64_t logprobs = -1;      // --logprobs N: JSON lines on stderr (-1: none)
  bool json = false;          // --json: the output is one JSON object
  std::string jsonSchemaFile; // --json-schema: one that this schema accepts
  SpeculateFlags speculate;
  std::vector<std::string> stop, badWords; // --stop, --bad-words (each repeatable)
  std::string stopTokenIds, logitBias, allowedTokenIds;
  bool chat = false;                // --chat: -p is the user's message
  bool interactive = false;         // -i: a conversation, a message a line of stdin
  std::string system, chatTemplate; // --system, --chat-template (with --chat)
  mutable std::optional<ChatChoice> chatChoice; // what --chat-template chose, once asked
  mutable bool promptOpensThought = false;      // the last chat prompt ends inside a thought
};

/// --logit-bias ID:BIAS,ID:BIAS,... (the ranges are the sampler's to check).
std::vector<std::pair<int32_t, double>> parseLogitBias(const std::string &text) {
  std::vector<std::pair<int32_t, double>> out;
  std::stringstream list(text);
  std::string item;
  while (std::getline(list, item, ',')) {
    const size_t colon = item.find(':');
    const char *shape = "' is not ID:BIAS (a token id, a colon, a number: 13:-100)";
    if (colon == std::string::npos) throw InputError("--logit-bias: '" + item + shape);
    int32_t id = 0;
    double bias = 0;
    try {
      const std::vector<int32_t> ids = parseIds(item.substr(0, colon), "--logit-bias");
      if (ids.size() != 1) throw std::invalid_argument("not one id");
      id = ids[0];
      size_t used = 0;
      bias = std::stod(item.substr(colon + 1), &used);
      if (used != item.size() - colon - 1) throw std::invalid_argument("trailing");
    } catch (const std::exception &) {
      throw InputError("--logit-bias: '" + item + shape);
    }
    out.emplace_back(id, bias);
  }
  if (out.empty()) throw InputError("--logit-bias is empty: give ID:BIAS,... (13:-100)");
  return out;
}

/// The flags' own errors, before the model is loaded; the token lists parsed.
void checkRunOptions(RunOptions &o) {
  if (o.interactive) o.chat = true;
  if (!o.logitBias.empty()) o.sampling.logitBias = parseLogitBias(o.logitBias);
  if (!o.allowedTokenIds.empty())
    o.sampling.allowedTokens = parseIds(o.allowedTokenIds, "--allowed-token-ids");
  Sampler check(o.sampling);
  if (!o.badWords.empty() && !o.sampling.allowedTokens.empty())
    throw InputError("--bad-words with --allowed-token-ids: together they could leave no token "
                     "to draw; leave the bad ones out of --allowed-token-ids");
  if (!o.badWords.empty() && (o.json || !o.jsonSchemaFile.empty()))
    throw InputError("--bad-words with --json or --json-schema: JSON's own mask decides which "
                     "tokens may come, and the two could leave none; leave out --bad-words");
  if (!o.chat && (!o.system.empty() || !o.chatTemplate.empty()))
    throw InputError(std::string(o.system.empty() ? "--chat-template" : "--system") +
                     " is for a chat: add --chat (-p is then the user's message)");
  checkChatTemplateFlag(o.chatTemplate);
  if (o.interactive && o.printIds)
    throw InputError("--interactive prints the answers as text; leave out --print-ids");
  if (o.chat && !o.promptIds.empty())
    throw InputError("--chat renders -p TEXT as the user's message in the model's chat "
                     "template; --prompt-ids are a prompt already: give -p or leave out --chat");
  if (o.tokens < 0) throw InputError("-n must be 0 or more, got " + std::to_string(o.tokens));
  if (o.logprobs < -1 || o.logprobs > kMaxTopLogprobs)
    throw InputError("--logprobs takes how many of the most likely tokens to list beside each "
                     "generated one, 0 to " + std::to_string(kMaxTopLogprobs) + "; got " +
                     std::to_string(o.logprobs));
  checkThreadsFlag(o.threads);
  if (!o.promptIds.empty() && o.promptGiven)
    throw InputError("give either -p TEXT or --prompt-ids, not both");
  if (o.sampling.minTokens > o.tokens)
    throw InputError("--min-tokens is " + std::to_string(o.sampling.minTokens) +
                     " but -n asks for at most " + std::to_string(o.tokens) +
                     " tokens; lower --min-tokens or raise -n");
  if ((o.sampling.changesRow() || !o.badWords.empty()) && o.speculate.on())
    throw InputError("--speculate with penalties, --logit-bias, --allowed-token-ids, "
                     "--bad-words or --min-tokens: speculative decoding's acceptance rule knows "
                     "none of them, so the request would only decode; leave out --speculate or "
                     "the others");
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

/// --chat: the template --chat-template names, else the model's own, else
/// the built-in one its tokenizer shows; chosen once.
const ChatChoice &chatChoiceOf(const RunOptions &o, const Runnable &r) {
  if (!o.chatChoice) {
    ChatChoice c = chooseChatTemplate(o.chatTemplate, r, "kvplan run");
    if (c.family == server::ChatTemplate::none && !c.own)
      throw InputError("--chat: this model came with no chat template and its tokenizer shows "
                       "none (a base model?); name one with --chat-template " +
                       std::string(server::kChatTemplateNames) + " or a template file, or "
                       "leave out --chat");
    o.chatChoice = std::move(c);
  }
  return *o.chatChoice;
}

/// --chat: the conversation as the chat template has it, ending where the
/// assistant's answer begins.
std::vector<int32_t> chatIds(const RunOptions &o, const Runnable &r,
                             const std::vector<server::ChatMessage> &messages) {
  const Tokenizer &tok = requireTokenizer(r);
  const ChatChoice &c = chatChoiceOf(o, r);
  // Where the answer begins inside a thought (DeepSeek-R1's prompt opens
  // it), as the server reads it.
  bool &opens = o.promptOpensThought;
  opens = !c.own && server::chatTemplateOpensThought(c.family);
  try {
    return server::tokenizeChat(
        tok, c.own ? c.own->render(messages, {}, nlohmann::ordered_json::object(), &opens)
                   : server::renderChat(c.family, messages));
  } catch (const server::ApiError &e) {
    throw InputError(std::string("--chat: ") + e.what());
  }
}

/// The conversation's first messages: --system's, if given.
std::vector<server::ChatMessage> systemMessages(const RunOptions &o) {
  if (o.system.empty()) return {};
  return {{"system", o.system}};
}

/// --chat: the system message (--system) and the user's (-p).
std::vector<int32_t> chatPrompt(const RunOptions &o, const Runnable &r) {
  std::vector<server::ChatMessage> messages = systemMessages(o);
  messages.push_back({"user", o.prompt});
  return chatIds(o, r, messages);
}

/// The prompt's ids, checked against the model's vocabulary and context.
std::vector<int32_t> preparePrompt(const RunOptions &o, const Runnable &r) {
  std::vector<int32_t> prompt;
  if (!o.promptIds.empty())
    prompt = parseIds(o.promptIds, "--prompt-ids");
  else if (o.chat)
    prompt = chatPrompt(o, r);
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

/// A flag's token id checked against the model's vocabulary.
void checkTokenId(int32_t id, const char *flag, const Runnable &r) {
  if (id >= r.plan.model.vocabSize)
    throw InputError(std::string(flag) + " names token " + std::to_string(id) +
                     ", outside the vocabulary [0, " + std::to_string(r.plan.model.vocabSize) +
                     ")");
}

/// Where generation stops and what it may not draw: the model's and the
/// tokenizer's end-of-sequence ids and, with --chat, the turn's end (unless
/// --ignore-eos); --stop-token-ids and --stop (always); the token flags
/// checked against the vocabulary, --bad-words tokenized.
void holdToStops(RunOptions &o, const Runnable &r, GenerationRequest &req) {
  if (!o.ignoreEos) {
    for (int64_t id : r.plan.model.eosTokenIds) req.stopIds.push_back(int32_t(id));
    if (r.tokenizer)
      for (int32_t id : r.tokenizer->eosIds()) req.stopIds.push_back(id);
    if (o.chat) {
      const server::TurnEnd end = server::turnEnd(chatChoiceOf(o, r).family, *r.tokenizer);
      req.stopIds.insert(req.stopIds.end(), end.ids.begin(), end.ids.end());
      req.stopStrings = end.strings;
    }
  }
  if (!o.stopTokenIds.empty())
    for (int32_t id : parseIds(o.stopTokenIds, "--stop-token-ids")) {
      checkTokenId(id, "--stop-token-ids", r);
      req.stopIds.push_back(id);
    }
  for (const std::string &s : o.stop) {
    if (s.empty()) throw InputError("--stop is empty: give the text that ends the answer");
    req.stopStrings.push_back(s);
  }
  if (!o.stop.empty() && !r.tokenizer)
    throw InputError("--stop needs the model's tokenizer to know the text, and this model has "
                     "none: give --tokenizer FILE, or stop at ids with --stop-token-ids");
  for (const auto &[id, bias] : o.sampling.logitBias) checkTokenId(id, "--logit-bias", r);
  for (int32_t id : o.sampling.allowedTokens) checkTokenId(id, "--allowed-token-ids", r);
  if (!o.badWords.empty()) {
    if (!r.tokenizer)
      throw InputError("--bad-words needs the model's tokenizer, and this model has none: give "
                       "--tokenizer FILE, or ban ids with --logit-bias ID:-100");
    try {
      o.sampling.badWords = badWordSequences(o.badWords, *r.tokenizer);
    } catch (const InputError &e) {
      throw InputError(std::string("--bad-words: ") + e.what());
    }
  }
}

/// Writes the prompt (unless --chat, whose template's markup is not the
/// user's), then each token as it is generated, flushed at once: ids with
/// --print-ids, else text when there is a tokenizer (the scheduler's, which
/// goes on from the prompt's and holds back what could begin a --stop
/// string), else the generated ids alone.
class TokenWriter {
public:
  TokenWriter(bool ids, const Tokenizer *tok) : ids(ids), text(tok && !ids) {
    if (text) stream = std::make_unique<StreamDecoder>(*tok);
  }
  /// --chat with a thinking model (Qwen3, DeepSeek-R1, Magistral): the
  /// answer's reasoning goes to stderr as it comes, so stdout holds the
  /// answer alone; `inThought`: the prompt opened the thought; `markers`:
  /// the control tokens its tags are (Magistral's [THINK]).
  void splitThoughts(bool inThought, const server::ThoughtTags &tags,
                     std::vector<std::pair<int32_t, std::string>> controls) {
    if (text) thoughts.emplace(inThought, tags.open, tags.close);
    markers = std::move(controls);
  }
  /// --chat with a model that speaks harmony (gpt-oss): its analysis to
  /// stderr, its final answer to stdout, read from the tokens.
  void splitHarmony(const server::HarmonyTokens &tokens) {
    if (text && tokens.message >= 0) harmony.emplace(tokens, std::vector<std::string>());
  }
  /// The content written so far (the answer without its reasoning).
  const std::string &content() const { return written; }
  void prompt(const std::vector<int32_t> &prompt) {
    if (ids)
      printIds(prompt, first);
    else if (stream) {
      for (int32_t id : prompt) emit(stream->push(id));
      // A last character the prompt leaves incomplete, as its bytes: the
      // answer's bytes that complete it follow them.
      emit(stream->flush());
    }
    std::fflush(stdout);
  }
  /// A generated token, and the text the scheduler sends with it.
  void generated(int32_t id, const std::string &piece) {
    if (ids)
      printIds({id}, first);
    else if (text)
      write(harmony    ? harmony->feed(id, piece)
            : thoughts ? thoughts->feed(server::withMarker(markers, id, piece))
                       : server::ReasoningReader::Split{"", piece});
    else
      std::printf("%s%d", count == 0 ? "" : " ", id);
    ++count;
    std::fflush(stdout);
  }
  /// The text the scheduler sends as the generation ends (held back so far).
  void last(const std::string &piece) {
    if (!text) return;
    if (harmony) {
      write(harmony->feed(-1, piece));
      const server::HarmonyReader::Result rest = harmony->finish();
      return write({"", rest.content});
    }
    if (!thoughts) return write({"", piece});
    write(thoughts->feed(piece));
    write(thoughts->finish());
  }
  void finish() {
    if (thinking) std::fputs("\n", stderr); // a thought the answer never closed
    std::printf("\n");
    std::fflush(stdout);
  }

private:
  /// The reasoning on stderr, the content on stdout, the thought ended by
  /// a blank line on stderr when the answer begins.
  void write(const server::ReasoningReader::Split &s) {
    if (!s.reasoning.empty()) {
      emit(s.reasoning, stderr);
      thinking = true;
    }
    if (s.content.empty()) return;
    if (thinking) std::fputs("\n\n", stderr);
    thinking = false;
    emit(s.content);
    written += s.content;
  }

  bool ids, text;
  std::optional<server::ReasoningReader> thoughts; // --chat with a thinking model
  std::vector<std::pair<int32_t, std::string>> markers; // its control tokens' tags
  std::optional<server::HarmonyReader> harmony;    // --chat with gpt-oss
  std::string written;                             // content written (by write())
  bool thinking = false;                           // the last text went to stderr
  std::unique_ptr<StreamDecoder> stream; // the prompt's
  bool first = true;  // for printIds
  int64_t count = 0;  // generated tokens written
};

/// One token's log-probability, as --logprobs writes it: its id, the text
/// it adds (Tokenizer::tokenBytes; invalid UTF-8 replaced, "bytes" holds it
/// exactly) where there is a tokenizer, and the log-probability.
nlohmann::ordered_json logprobJson(const TokenLogprob &t, const Tokenizer *tok) {
  nlohmann::ordered_json j = {{"token", t.token}};
  if (tok) {
    const std::string text = tok->tokenBytes(t.token);
    j["text"] = text;
    j["bytes"] = nlohmann::ordered_json::array();
    for (unsigned char c : text) j["bytes"].push_back(int(c));
  }
  j["logprob"] = t.logprob;
  return j;
}

/// --logprobs: a generated token's line on stderr, one JSON object (the
/// token as logprobJson, and "top_logprobs": the most likely at its place,
/// likeliest first), written as the token comes.
void writeLogprobs(const TokenLogprobs &l, const Tokenizer *tok) {
  nlohmann::ordered_json j = logprobJson(l.chosen, tok);
  j["top_logprobs"] = nlohmann::ordered_json::array();
  for (const TokenLogprob &t : l.top) j["top_logprobs"].push_back(logprobJson(t, tok));
  const std::string line =
      j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
  std::fputs(line.c_str(), stderr);
}

struct Generation {
  std::string text; // what the scheduler sent
  int64_t generated = 0;
  double prefillS = 0, decodeS = 0;
  bool contextFull = false;
  std::optional<SpeculationStats> speculation;
};

/// One request through the scheduler (and so the prefix cache): prefill,
/// then decode until -n tokens, a stop (holdToStops) or a full context.
/// `req` holds the prompt, the sampling and the stops.
Generation generate(Engine &engine, const Tokenizer *tok, GenerationRequest req,
                    const RunOptions &o, TokenWriter &out, Speculation *spec) {
  Generation g;
  if (o.tokens == 0) return g;
  const int64_t room = engine.maxSeqLen() - int64_t(req.prompt.size());
  if (room <= 0) {
    g.contextFull = true;
    return g;
  }
  req.maxNewTokens = std::min(o.tokens, room);
  const bool capped = req.maxNewTokens < o.tokens;
  const auto t0 = Clock::now();
  Clock::time_point first = t0;
  req.onEvent = [&](const TokenEvent &e) {
    g.text += e.text;
    if (e.token < 0) {
      out.last(e.text);
      g.contextFull = capped && e.reason == FinishReason::length;
      return;
    }
    if (g.generated++ == 0) first = Clock::now();
    out.generated(e.token, e.text);
    if (e.logprobs) writeLogprobs(*e.logprobs, tok);
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

/// --chat with a model that thinks (its template's family): the reasoning
/// on stderr, the answer on stdout.
void splitThoughts(const RunOptions &o, const Runnable &r, TokenWriter &out) {
  if (!o.chat) return;
  const server::ChatTemplate family = chatChoiceOf(o, r).family;
  if (const auto tags = server::thoughtTags(family, r.tokenizer.get()))
    out.splitThoughts(o.promptOpensThought, *tags,
                      server::answerMarkers(family, *r.tokenizer));
  if (family == server::ChatTemplate::harmony && r.tokenizer)
    out.splitHarmony(server::HarmonyTokens::of(*r.tokenizer));
}

/// The next user message of --interactive: -p first where given, then each
/// line of standard input that is not blank ("> " on stderr where it is a
/// terminal); false at the end of the input.
bool nextMessage(const RunOptions &o, bool &first, std::string &message) {
  if (first) {
    first = false;
    if (!o.prompt.empty()) {
      message = o.prompt;
      return true;
    }
  }
  static const bool tty = isatty(0);
  do {
    if (tty) std::fputs("> ", stderr);
    if (!std::getline(std::cin, message)) return false;
  } while (message.find_first_not_of(" \t\r") == std::string::npos);
  return true;
}

/// --interactive: a conversation, each user message answered in the chat
/// template with the whole conversation before it as the prompt (whose
/// pages the prefix cache mostly holds from the turn before), until the
/// end of the input or of the context. `base` holds the stops and sampling.
int converse(const RunOptions &o, const Runnable &r, Engine &engine,
             const GenerationRequest &base, Speculation *spec) {
  std::vector<server::ChatMessage> messages = systemMessages(o);
  bool first = true;
  std::string message;
  while (nextMessage(o, first, message)) {
    messages.push_back({"user", message});
    GenerationRequest req = base;
    req.prompt = chatIds(o, r, messages);
    if (int64_t(req.prompt.size()) >= engine.maxSeqLen()) {
      std::fprintf(stderr,
                   "[the conversation has %zu tokens, and the context holds %lld: it ends "
                   "here; compile with a larger --max-seq for longer ones]\n",
                   req.prompt.size(), (long long)engine.maxSeqLen());
      return 1;
    }
    TokenWriter out(false, r.tokenizer.get());
    splitThoughts(o, r, out);
    const size_t promptTokens = req.prompt.size();
    const Generation g = generate(engine, r.tokenizer.get(), std::move(req), o, out, spec);
    out.finish();
    if (o.stats) printStats(g, promptTokens, engine.executor());
    // The answer as the next prompt has it: without the white space around
    // it, as chat templates strip a message's content; harmony's final
    // answer alone (its tokens are not text, and its thought is dropped).
    const bool harmony = chatChoiceOf(o, r).family == server::ChatTemplate::harmony;
    const std::string &answer = harmony ? out.content() : g.text;
    const size_t from = answer.find_first_not_of(" \t\r\n"),
                 to = answer.find_last_not_of(" \t\r\n");
    messages.push_back(
        {"assistant", from == std::string::npos ? "" : answer.substr(from, to - from + 1)});
  }
  return 0;
}

int runGenerate(RunOptions o, bool verbose) {
  checkRunOptions(o);
  // The schema before the model loads, so that its errors come first.
  if (!o.jsonSchemaFile.empty()) o.sampling.schema = readJsonSchema(o.jsonSchemaFile);
  ModelOptions target = o.model;
  o.speculate.prepare(target);
  Runnable r = loadRunnable(target, verbose);
  holdToJson(o, r);
  GenerationRequest req;
  if (!o.interactive) req.prompt = preparePrompt(o, r);
  holdToStops(o, r, req);
  req.sampling = o.sampling;
  req.logprobs = o.logprobs;
  const ExecOptions exec{o.threads, !o.noGraphs};
  checkExecFlags(r, exec, o.speculate.draftModel());
  Engine engine(makeExecutor(r, exec), {!o.noPrefixCache});
  if (verbose) std::fprintf(stderr, "running on %s\n", engine.executor().describe().c_str());
  Speculation spec;
  if (o.speculate.on()) spec = makeSpeculation(o.speculate, r, engine, o.sampling, exec, verbose);
  if (o.interactive) return converse(o, r, engine, req, o.speculate.on() ? &spec : nullptr);
  TokenWriter out(o.printIds, r.tokenizer.get());
  if (!o.chat || o.printIds) out.prompt(req.prompt);
  splitThoughts(o, r, out);
  const size_t promptTokens = req.prompt.size();
  const Generation g = generate(engine, r.tokenizer.get(), std::move(req), o, out,
                                o.speculate.on() ? &spec : nullptr);
  out.finish();
  if (g.contextFull)
    std::fprintf(stderr, "[stopped: the context of %lld tokens is full]\n",
                 (long long)engine.maxSeqLen());
  if (o.stats) printStats(g, promptTokens, engine.executor());
  return 0;
}

} // namespace

/// run's flags for where generation stops, what it may draw, and --chat.
void addStopAndChatFlags(CLI::App *cmd, RunOptions &o) {
  // allow_extra_args(false): one string an occurrence, and not CLI11's
  // "[a,b]" list syntax, which would take the brackets off "[/INST]".
  cmd->add_option("--stop", o.stop,
                  "Stop where the text comes to this string, which is not printed (repeatable; "
                  "needs a tokenizer)")
      ->allow_extra_args(false);
  cmd->add_option("--stop-token-ids", o.stopTokenIds,
                  "Stop at these token ids, as at end-of-sequence (also with --ignore-eos): 7,9");
  cmd->add_option("--logit-bias", o.logitBias,
                  "Add to these tokens' logits, each in [-100, 100]: 13:-100,42:2.5 (-100 all "
                  "but bans a token)");
  cmd->add_option("--allowed-token-ids", o.allowedTokenIds,
                  "Draw only these token ids: 5,6,7");
  cmd->add_option("--bad-words", o.badWords,
                  "Never generate this word (repeatable; its tokens alone and after a space, as "
                  "vLLM's bad_words; needs a tokenizer)")
      ->allow_extra_args(false);
  cmd->add_flag("--chat", o.chat,
                "-p is the user's message in the model's chat template, and generation stops "
                "at the turn's end; only the answer is printed (a thinking model's reasoning "
                "on stderr)");
  cmd->add_flag("-i,--interactive", o.interactive,
                "A conversation (--chat): each line of standard input is the user's next "
                "message (-p, if given, the first), answered with the whole conversation "
                "before it; ends at the end of the input");
  cmd->add_option("--system", o.system, "With --chat: the system message");
  cmd->add_option("--chat-template", o.chatTemplate,
                  std::string("With --chat: a template file (.jinja, tokenizer_config.json, "
                              ".gguf) or a built-in template (") +
                      server::kChatTemplateNames +
                      "); default: the model's own, else the built-in one its tokenizer shows");
}

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
  addExecFlags(cmd, o->threads, o->noGraphs);
  cmd->add_flag("--no-prefix-cache", o->noPrefixCache,
                "Keep no KV-cache pages for reuse by later prompts");
  cmd->add_option("--logprobs", o->logprobs,
                  "Write each generated token's log-probability and the N most likely tokens at "
                  "its place (0 to 20) on stderr, a JSON line a token");
  cmd->add_flag("--json", o->json,
                "Generate one JSON object (JSON mode; ends as it closes; needs a tokenizer)");
  cmd->add_option("--json-schema", o->jsonSchemaFile,
                  "Generate one JSON object that the JSON schema in this file accepts "
                  "(structured output, as serve's response_format json_schema)");
  addStopAndChatFlags(cmd, *o);
  o->speculate.add(cmd);
  o->model.addRunnableWeights(cmd);
  cmd->callback([&action, &global, o, p] {
    o->promptGiven = p->count() > 0;
    action = [&global, o] { return runGenerate(*o, global.verbose); };
  });
}

} // namespace kvplan::cli
