// kvplan serve: the OpenAI-compatible HTTP server (server/HttpServer.h) on
// an artifact or a model, until SIGINT or SIGTERM.
#include "tools/kvplan/ChatChoice.h"
#include "tools/kvplan/Commands.h"
#include "tools/kvplan/Runnable.h"
#include "tools/kvplan/Speculation.h"

#include "runtime/Engine.h"
#include "server/HttpServer.h"
#include "support/Error.h"
#include "support/Format.h"

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <sstream>
#include <unistd.h>

namespace kvplan::cli {

namespace {

struct ServeOptions {
  ModelOptions model;
  std::string host = "127.0.0.1";
  int port = 8000;
  std::string modelName, apiKey, chatTemplate;
  std::string reasoningFormat = "separate";
  std::vector<std::string> allowedOrigins; // --allowed-origins (CORS)
  int64_t maxQueue = 256;
  int threads = 0;
  size_t maxBodyBytes = server::ServerOptions().maxBodyBytes;
  server::HttpLimits limits;
  bool noGraphs = false, noPrefixCache = false, quiet = false;
  SpeculateFlags speculate;
};

// A signal handler may only do what is async-signal-safe: it writes a byte
// to a pipe, and the main thread, blocked reading the pipe, stops the
// server.
int signalPipe[2] = {-1, -1};

extern "C" void onStopSignal(int) {
  const int saved = errno;
  const char c = 1;
  [[maybe_unused]] ssize_t n = write(signalPipe[1], &c, 1);
  errno = saved;
}

void catchStopSignals() {
  if (pipe(signalPipe) != 0) throw std::runtime_error("cannot make a pipe for signals");
  struct sigaction sa = {};
  sa.sa_handler = onStopSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

/// Blocks until SIGINT or SIGTERM; a second one then ends the process at
/// once (the default action), should stopping ever hang.
int waitForStopSignal() {
  char c = 0;
  while (read(signalPipe[0], &c, 1) < 0 && errno == EINTR) {
  }
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
  return c;
}

/// --allowed-origins: "*", or origins as a browser sends them
/// (scheme://host[:port], no path), given comma-separated or repeated.
std::vector<std::string> checkOrigins(const std::vector<std::string> &given) {
  std::vector<std::string> out;
  for (const std::string &list : given) {
    std::stringstream items(list);
    std::string item;
    while (std::getline(items, item, ',')) {
      item.erase(0, item.find_first_not_of(' '));
      item.erase(item.find_last_not_of(' ') + 1);
      const size_t scheme = item.find("://");
      const bool web = item.rfind("http://", 0) == 0 || item.rfind("https://", 0) == 0;
      if (item != "*" && (!web || item.size() == scheme + 3 ||
                          item.find_first_of("/ ?#", scheme + 3) != std::string::npos))
        throw InputError("--allowed-origins: '" + item + "' is not an origin; give "
                         "scheme://host[:port] as the browser sends it (no path or trailing "
                         "slash), like http://localhost:3000, or * for any");
      out.push_back(item);
    }
  }
  return out;
}

server::ServerOptions serverOptions(const ServeOptions &o) {
  if (o.port < 0 || o.port > 65535) throw InputError("--port must be in [0, 65535]");
  if (o.maxQueue < 0) throw InputError("--max-queue must be 0 (no limit) or positive");
  checkThreadsFlag(o.threads);
  for (const auto &[flag, seconds] : {std::pair<const char *, double>{"--read-timeout",
                                                                       o.limits.readTimeout},
                                      {"--idle-timeout", o.limits.idleTimeout},
                                      {"--write-timeout", o.limits.writeTimeout}})
    if (!(seconds > 0) || seconds > 86400)
      throw InputError(std::string(flag) + " must be more than 0 and at most 86400 seconds, got " +
                       CLI::detail::to_string(seconds));
  server::ServerOptions s;
  s.maxBodyBytes = o.maxBodyBytes;
  s.limits = o.limits;
  s.modelName = o.modelName;
  s.maxQueue = o.maxQueue;
  s.apiKey = o.apiKey;
  s.allowedOrigins = checkOrigins(o.allowedOrigins);
  s.logRequests = !o.quiet;
  s.separateReasoning = o.reasoningFormat == "separate";
  checkChatTemplateFlag(o.chatTemplate); // before the model loads
  return s;
}

/// Sequences a model compiled here serves at once when neither its file
/// nor --max-batch says (llama-server's default slots).
constexpr int64_t kServeBatch = 4;
/// Rows of the @score entry point such a model gets when its file does not
/// say (echo with logprobs: the prompt's log-probabilities, this many
/// tokens a call; a call costs about what a prefill chunk of as many does).
constexpr int64_t kServeScoreRows = 32;

/// What the start-up lines say about the batch (the default taken, or a
/// server of one sequence at a time), the sliding layers' own pool and a
/// plan without @score.
void describeServing(const Runnable &r, const Engine &engine) {
  if (r.serveBatchApplied)
    std::fprintf(stderr, "kvplan serve: %lld sequences at once (serve's default) sharing %lld KV "
                 "pages of %lld tokens; --max-batch N and --kv-pages N change them\n",
                 (long long)engine.maxBatch(), (long long)engine.pages().size(),
                 (long long)r.plan.settings.pageSize);
  if (const int64_t budget = r.plan.settings.memoryBudget; budget > 0)
    std::fprintf(stderr, "kvplan serve: a memory bill of %s within the budget of %s "
                 "(memory_budget), %lld KV pages\n",
                 formatBytes(uint64_t(r.plan.memoryBill().totalBytes)).c_str(),
                 formatBytes(uint64_t(budget)).c_str(), (long long)engine.pages().size());
  if (const PagePool *w = engine.windowPages())
    std::fprintf(stderr, "kvplan serve: the %lld sliding-window layers keep their keys and "
                 "values in a pool of their own, %lld pages; --window-kv-pages N changes it\n",
                 (long long)r.plan.windowCache.layers, (long long)w->size());
  if (!r.serveBatchApplied && engine.maxBatch() == 1)
    std::fprintf(stderr, "kvplan serve: max_batch 1: requests run one at a time, the others "
                 "wait their turn; %s --max-batch N to run N at once\n",
                 isArtifactFile(r.source) ? "recompile the model with" : "give");
  if (engine.scoreRows() == 0)
    std::fprintf(stderr, "kvplan serve: the plan has no @score entry point, so echo with "
                 "logprobs (the prompt's log-probabilities) is refused; %s --score-rows N to "
                 "answer it\n",
                 isArtifactFile(r.source) ? "recompile the model with" : "give");
}

int runServe(const ServeOptions &o, bool verbose) {
  server::ServerOptions so = serverOptions(o);
  ModelOptions target = o.model;
  target.serveBatch = kServeBatch;
  target.serveScoreRows = kServeScoreRows;
  o.speculate.prepare(target);
  Runnable r = loadRunnable(target, verbose);
  const ChatChoice chat = chooseChatTemplate(o.chatTemplate, r, "kvplan serve");
  so.chatTemplate = chat.family;
  so.modelTemplate = chat.own;
  const ExecOptions exec{o.threads, !o.noGraphs};
  checkExecFlags(r, exec, o.speculate.draftModel());
  Engine engine(makeExecutor(r, exec), {!o.noPrefixCache});
  // Each request's sampling settings reach the draft model only through
  // the acceptance rule: a draft model proposes greedily here.
  Speculation spec;
  if (o.speculate.on()) {
    spec = makeSpeculation(o.speculate, r, engine, SamplingOptions{}, exec, verbose);
    so.proposer = spec.proposer.get();
    so.speculate = spec.k;
  }
  server::Server srv(engine, r.tokenizer.get(), so);
  catchStopSignals();
  srv.start(o.host, o.port);
  const bool v6 = o.host.find(':') != std::string::npos;
  std::printf("kvplan serve: listening on http://%s%s%s:%d (model %s)\n", v6 ? "[" : "",
              o.host.c_str(), v6 ? "]" : "", srv.port(), srv.modelName().c_str());
  std::fflush(stdout);
  std::fprintf(stderr, "kvplan serve: %s; chat template %s%s; context %lld tokens, max_batch "
               "%lld, %lld KV pages\n",
               engine.executor().describe().c_str(), chat.describe().c_str(),
               !srv.separatesReasoning() ? ""
               : srv.chatTemplate() == server::ChatTemplate::harmony
                   ? " (its analysis channel as reasoning_content)"
               : srv.chatTemplate() == server::ChatTemplate::mistral
                   ? " ([THINK] as reasoning_content)"
                   : " (<think> as reasoning_content)",
               (long long)engine.maxSeqLen(), (long long)engine.maxBatch(),
               (long long)engine.pages().size());
  describeServing(r, engine);
  waitForStopSignal();
  std::fprintf(stderr, "kvplan serve: stopping\n");
  srv.stop();
  std::fprintf(stderr, "kvplan serve: stopped\n");
  return 0;
}

/// What one client may take (docs/server.md, Limits).
void addLimitFlags(CLI::App *cmd, ServeOptions &o) {
  server::HttpLimits &l = o.limits;
  cmd->add_option("--max-body-bytes", o.maxBodyBytes, "Largest request body; larger get 413")
      ->check(CLI::Range(size_t(1), size_t(1) << 40))->capture_default_str()->group("Limits");
  cmd->add_option("--max-header-bytes", l.maxHeaderBytes,
                  "Largest request line and headers together; larger get 431")
      ->check(CLI::Range(size_t(64), size_t(1) << 20))->capture_default_str()->group("Limits");
  cmd->add_option("--max-headers", l.maxHeaders, "Most header fields a request may have; more "
                  "get 431")
      ->check(CLI::Range(1, 10000))->capture_default_str()->group("Limits");
  cmd->add_option("--read-timeout", l.readTimeout,
                  "Seconds a client has to send a whole request from its first byte; then 408")
      ->capture_default_str()->group("Limits");
  cmd->add_option("--idle-timeout", l.idleTimeout,
                  "Seconds a connection may wait for its first or next request")
      ->capture_default_str()->group("Limits");
  cmd->add_option("--write-timeout", l.writeTimeout,
                  "Seconds one write may wait for the client to take bytes; then the "
                  "connection ends")
      ->capture_default_str()->group("Limits");
  cmd->add_option("--max-requests-per-connection", l.maxRequestsPerConnection,
                  "Requests one keep-alive connection may make; then it closes")
      ->check(CLI::Range(1, 1000000))->capture_default_str()->group("Limits");
  cmd->add_option("--max-connections", l.maxConnections,
                  "Connections served at once, a thread each; as many more wait, the rest get "
                  "503 (default: --max-queue + 8)")
      ->check(CLI::Range(1, 100000))->group("Limits");
}

} // namespace

void addServeCommand(CLI::App &app, const GlobalOptions &global, Action &action) {
  auto *cmd = app.add_subcommand("serve", "Serve a model over HTTP with the OpenAI API");
  auto o = std::make_shared<ServeOptions>();
  o->model.addRunnable(cmd);
  cmd->add_option("--host", o->host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", o->port, "Port to listen on (0: any free port)")
      ->capture_default_str();
  cmd->add_option("--model-name", o->modelName,
                  "The model's id in the API (default: the model's name)");
  cmd->add_option("--max-queue", o->maxQueue,
                  "Requests waiting or running at once; more get 503 (0: no limit)")
      ->capture_default_str();
  cmd->add_option("--api-key", o->apiKey, "Require Authorization: Bearer KEY on /v1/");
  cmd->add_option("--allowed-origins", o->allowedOrigins,
                  "CORS: origins whose web pages may call the API from a browser, like "
                  "http://localhost:3000 (comma-separated or repeated), or * for any; "
                  "default: none")
      ->allow_extra_args(false);
  cmd->add_option("--chat-template", o->chatTemplate,
                  std::string("Chat template: a template file (.jinja, tokenizer_config.json, "
                              ".gguf) or a built-in one (") +
                      server::kChatTemplateNames +
                      "); default: the model's own, else the built-in one its tokenizer shows");
  cmd->add_option("--reasoning-format", o->reasoningFormat,
                  "A thinking model's (Qwen3's) <think>...</think> in chat answers: separate "
                  "(as reasoning_content beside the content) or none (all content)")
      ->check(CLI::IsMember({"separate", "none"}));
  addExecFlags(cmd, o->threads, o->noGraphs);
  cmd->add_flag("--no-prefix-cache", o->noPrefixCache,
                "Keep no KV-cache pages for reuse by later prompts");
  cmd->add_flag("--quiet", o->quiet, "Log no line per request");
  o->speculate.add(cmd);
  addLimitFlags(cmd, *o);
  o->model.addRunnableWeights(cmd);
  cmd->callback([&action, &global, o] {
    action = [&global, o] { return runServe(*o, global.verbose); };
  });
}

} // namespace kvplan::cli
