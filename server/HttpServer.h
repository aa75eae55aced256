// kvplan serve's HTTP server: the OpenAI API (completions, chat, models)
// and vLLM's tokenize and detokenize, with health and Prometheus metrics,
// over one engine driven by the continuous-batching scheduler.
// docs/server.md has the request's path from the socket to the scheduler
// and back, the threads and the shutdown.
#pragma once

#include "runtime/Engine.h"
#include "runtime/Speculate.h"
#include "server/ChatTemplate.h"
#include "server/Metrics.h"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace kvplan::server {

/// What one client may take of the server: each limit a `kvplan serve`
/// flag (docs/server.md, Limits).
struct HttpLimits {
  size_t maxHeaderBytes = size_t(16) << 10; // request line and headers; more get 431
  int maxHeaders = 100;                     // header fields; more get 431
  /// Seconds to send a whole request, head and body, from its first byte;
  /// a client still sending then gets 408 and is disconnected.
  double readTimeout = 30;
  /// Seconds a connection may wait for its first or next request.
  double idleTimeout = 5;
  /// Seconds one write may wait for the client to take bytes; the
  /// connection ends after that.
  double writeTimeout = 10;
  int maxRequestsPerConnection = 100; // keep-alive: then the connection closes
  /// Connections served at once, a thread each (0: max queue + 8); as many
  /// more wait for a thread, and any beyond those get 503 at once.
  int maxConnections = 0;
};

struct ServerOptions {
  std::string modelName;      // "" : the model's name
  int64_t maxQueue = 256;     // requests waiting or running at once; more get 503
  std::string apiKey;         // "" : no key asked for
  /// CORS: the origins (scheme://host[:port]) whose pages a browser lets
  /// call the API, "*" for any; empty: none (no CORS headers are sent).
  /// Preflight requests (OPTIONS) are answered without the API key.
  std::vector<std::string> allowedOrigins;
  std::optional<ChatTemplate> chatTemplate; // unset: detectChatTemplate()
  /// The model's own chat template, which renders the prompts when set
  /// (else the built-in chatTemplate does); chatTemplate still says how
  /// answers are read (tool calls, thoughts).
  std::shared_ptr<const ModelChatTemplate> modelTemplate;
  /// A thinking model's (one whose vocabulary has <think> and </think>)
  /// chat answers: its <think>...</think> as "reasoning_content" beside the
  /// content (vLLM's and llama.cpp's field), or false: all of it content.
  bool separateReasoning = true;
  size_t maxBodyBytes = size_t(8) << 20;    // larger bodies get 413
  HttpLimits limits;
  bool logRequests = true;    // one line per generation request on stderr
  /// Speculative decoding for every request (SchedulerOptions::proposer;
  /// null: none): the proposer, owned by the caller, and drafts per step.
  Proposer *proposer = nullptr;
  int64_t speculate = 0;
  /// For tests: runs on the scheduler's thread before each step, to slow
  /// or pause it.
  std::function<void()> beforeStep;
};

class Server {
public:
  /// Serves `engine` (which it steps from its own thread from start() to
  /// stop()); `tokenizer` may be null (prompts then come as token ids).
  Server(Engine &engine, const Tokenizer *tokenizer, ServerOptions options);
  ~Server(); // stop()
  Server(const Server &) = delete;
  Server &operator=(const Server &) = delete;

  /// Binds host:port (0: a free port) and serves from background threads.
  /// Throws InputError when the address cannot be bound.
  void start(const std::string &host, int port);
  /// The bound port, once started.
  int port() const;
  const std::string &modelName() const;
  ChatTemplate chatTemplate() const;
  /// The model's own template the prompts are rendered with, or null.
  const ModelChatTemplate *modelTemplate() const;
  /// Whether chat answers' <think>...</think> (harmony's analysis) go to
  /// "reasoning_content".
  bool separatesReasoning() const;
  const Metrics &metrics() const;

  /// Stops: new requests get 503, requests in flight are cancelled and
  /// their clients told, the listener closes, the threads end. Safe from any
  /// thread but a handler's, and more than once.
  void stop();

private:
  struct Impl;
  std::unique_ptr<Impl> impl;
};

} // namespace kvplan::server
