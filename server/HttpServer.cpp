// The HTTP side of kvplan serve. Threads: httplib's pool runs handlers, one
// per connection; one thread steps the scheduler. A handler checks the
// request, submits it, then waits on the request's own queue, which the
// scheduler thread fills through the request's event callback; a streaming
// handler writes each token as a server-sent event as soon as it arrives.
#include "server/HttpServer.h"
#include "server/Harmony.h"
#include "server/HttpConnection.h"
#include "server/Reasoning.h"
#include "server/Responses.h"
#include "server/ToolCalls.h"

#include "runtime/Scheduler.h"
#include "support/Error.h"

#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <deque>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_map>

namespace kvplan::server {

namespace {

using Clock = std::chrono::steady_clock;
using json = OutJson;

double seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

/// One request's generations (its `n` choices), their events handed from
/// the scheduler thread (which appends) to the request's HTTP thread (which
/// takes them), each with its choice's index.
struct Pending {
  struct Choice {
    uint64_t id = 0; // the scheduler's
    int64_t generated = 0;
    Clock::time_point first, last;
    bool finished = false;
  };
  std::mutex m;
  std::condition_variable ready;
  std::deque<std::pair<size_t, TokenEvent>> events;
  std::vector<Choice> choices;
  size_t finishedChoices = 0;
  bool finished = false; // every choice
  int64_t promptTokens = 0, generated = 0; // generated: all choices'
  int64_t cachedTokens = 0; // of the prompt, found in the prefix cache (the first choice's)
  Clock::time_point arrived = Clock::now(), first, last;
};

/// What the request log line says about the request on this HTTP thread:
/// the handler (and a stream's provider, on the same thread) fill it, the
/// logger prints it once the response is written.
struct RequestRecord {
  std::string id, finish, error;
  int64_t prompt = 0, output = 0;
  double ttft = -1, total = 0;
  bool generation = false;
};
thread_local RequestRecord record;

/// httplib 0.11.4 listens with a backlog of 5 (CPPHTTPLIB_LISTEN_BACKLOG,
/// compiled into Debian's library) and does not show its socket: a burst of
/// clients connecting at once overflows that, and the kernel resets some.
/// Calling listen() again on the listening socket raises the backlog; the
/// socket is the one listening on `port`.
void raiseListenBacklog(int port) {
  for (int fd = 0; fd < 4096; ++fd) {
    int listening = 0;
    socklen_t len = sizeof listening;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || !listening) continue;
    sockaddr_storage addr{};
    socklen_t addrLen = sizeof addr;
    if (getsockname(fd, reinterpret_cast<sockaddr *>(&addr), &addrLen) != 0) continue;
    const int bound = addr.ss_family == AF_INET
                          ? ntohs(reinterpret_cast<sockaddr_in *>(&addr)->sin_port)
                      : addr.ss_family == AF_INET6
                          ? ntohs(reinterpret_cast<sockaddr_in6 *>(&addr)->sin6_port)
                          : -1;
    if (bound == port) ::listen(fd, SOMAXCONN);
  }
}

void sendError(httplib::Response &res, const ApiError &e) {
  res.status = e.status;
  if (e.status == 503) res.set_header("Retry-After", "1");
  res.set_content(dumpJson(e.body()), "application/json");
  record.error = e.what();
}

std::string finishName(FinishReason r) { return r == FinishReason::length ? "length" : "stop"; }

/// Why the server, not the model, ended a request: the error a client gets.
ApiError stoppedBy(const TokenEvent &e) {
  if (e.reason == FinishReason::error) return ApiError(500, e.error);
  return ApiError(503, "the server is shutting down");
}
bool serverEnded(FinishReason r) { return r == FinishReason::cancelled || r == FinishReason::error; }
const char *statusName(FinishReason r) {
  return r == FinishReason::cancelled ? "cancelled" : r == FinishReason::error ? "error" : nullptr;
}

void fillRecord(Pending &p, const std::string &finish) {
  std::lock_guard<std::mutex> lock(p.m);
  record.prompt = p.promptTokens;
  record.output = p.generated;
  record.ttft = p.generated ? seconds(p.arrived, p.first) : -1;
  record.total = seconds(p.arrived, Clock::now());
  record.finish = finish;
}

/// tool_choice required or named: the answer is a call, held to a schema.
bool forcedCall(const ApiRequest &a) {
  return a.toolChoice == ToolChoice::required || a.toolChoice == ToolChoice::named;
}

/// The tool a forced call calls in the harmony format, which names it in
/// the message's header, before the arguments: the named one, or the one
/// tool offered. Throws ApiError 400 (param tool_choice) for required
/// among several.
std::string harmonyForcedTool(const ApiRequest &a) {
  if (a.toolChoice == ToolChoice::named) return a.toolName;
  if (a.tools.size() == 1) return a.tools[0].name;
  throw badField("tool_choice", "tool_choice required with several tools is not offered for "
                                "this model: its harmony format names the tool before the "
                                "arguments, so a forced call must know which; name one "
                                "({\"type\": \"function\", \"function\": {\"name\": ...}}), "
                                "or give auto");
}

/// How many most likely tokens the prompt's log-probabilities list (-1:
/// none): echo's with logprobs and vLLM's prompt_logprobs, the longer list
/// when both (each answer cuts its own), which need a @score entry point.
int64_t promptScores(const ApiRequest &a, int64_t scoreRows) {
  if (a.promptLogprobs >= 0 && scoreRows == 0)
    throw badField("logprobs", "echo with logprobs asks for the prompt's log-probabilities, which "
                               "need a @score entry point, and this model's plan has none: "
                               "compile it with --score-rows N (or serve its description with "
                               "--score-rows N)");
  if (a.vllmPromptLogprobs >= 0 && scoreRows == 0)
    throw badField("prompt_logprobs", "prompt_logprobs needs a @score entry point, and this "
                                      "model's plan has none: compile it with --score-rows N (or "
                                      "serve its description with --score-rows N)");
  return std::max(a.promptLogprobs, a.vllmPromptLogprobs);
}

/// vLLM's stop_token_ids (ending the answer as an end-of-sequence id does,
/// also with ignore_eos), allowed_token_ids and min_tokens, checked against
/// the vocabulary and what the request may generate; with
/// include_stop_str_in_output, the request's own stops (not the model's
/// end-of-sequence or turn-end) are sent with the text.
void addVllmStops(const ApiRequest &a, int64_t vocab, GenerationRequest &g) {
  for (int32_t id : a.stopTokenIds) {
    if (id >= vocab)
      throw badField("stop_token_ids", "stop_token_ids names token " + std::to_string(id) +
                                           ", outside the vocabulary [0, " +
                                           std::to_string(vocab) + ")");
    g.stopIds.push_back(id);
  }
  if (a.includeStop) {
    g.sentStopIds = a.stopTokenIds;
    g.sentStopStrings = a.stop;
  }
  if (!a.badWords.empty() && !a.sampling.allowedTokens.empty())
    throw badField("bad_words", "bad_words with allowed_token_ids: together they could leave no "
                                "token to draw; leave the bad ones out of allowed_token_ids");
  if (!a.badWords.empty() && (a.jsonObject || forcedCall(a)))
    throw badField("bad_words", "bad_words with JSON output (response_format, or a forced tool "
                                "call): JSON's own mask decides which tokens may come, and the "
                                "two could leave none; leave out bad_words");
  for (int32_t id : a.sampling.allowedTokens)
    if (id >= vocab)
      throw badField("allowed_token_ids", "allowed_token_ids names token " + std::to_string(id) +
                                              ", outside the vocabulary [0, " +
                                              std::to_string(vocab) + ")");
  if (!a.sampling.allowedTokens.empty() && (a.jsonObject || forcedCall(a)))
    throw badField("allowed_token_ids", "allowed_token_ids with JSON output (response_format, "
                                        "or a forced tool call): JSON's own mask decides which "
                                        "tokens may come; leave out allowed_token_ids");
  const int64_t least = a.sampling.minTokens;
  if (least > g.maxNewTokens)
    throw badField("min_tokens", "min_tokens is " + std::to_string(least) + " but at most " +
                                     std::to_string(g.maxNewTokens) +
                                     " tokens may be generated (max_tokens, or what the context "
                                     "leaves after the prompt): lower min_tokens");
  if (least > 0 && (a.jsonObject || forcedCall(a)))
    throw badField("min_tokens", "min_tokens with JSON output (response_format, or a forced "
                                 "tool call): the answer ends as its JSON closes, whatever its "
                                 "length; leave out min_tokens");
}

/// vLLM's stop_reason: the stop string or stop_token_ids id that ended a
/// choice, null when the model's end of sequence or turn, a closed JSON
/// object or max_tokens did.
json stopReason(const std::vector<std::string> &stop, const std::vector<int32_t> &ids,
               const TokenEvent &last) {
  if (last.reason != FinishReason::stop) return nullptr;
  if (last.stopToken >= 0 && std::find(ids.begin(), ids.end(), last.stopToken) != ids.end())
    return last.stopToken;
  if (!last.stopString.empty() &&
      std::find(stop.begin(), stop.end(), last.stopString) != stop.end())
    return last.stopString;
  return nullptr;
}

/// `scores` with at most `top` most likely tokens each.
std::vector<TokenLogprobs> withTop(std::vector<TokenLogprobs> scores, int64_t top) {
  for (TokenLogprobs &t : scores)
    if (int64_t(t.top.size()) > top) t.top.resize(size_t(top));
  return scores;
}

/// One answer read as it comes: its reasoning apart (a thinking model's),
/// and with tools the text that may be a call held until the end; the
/// tokens whose text went to the reasoning counted. A harmony answer is
/// read from its tokens, its reasoning put before the content when
/// reasoning is not separated.
struct AnswerReader {
  std::optional<ReasoningReader> thought;
  std::optional<ToolCallReader> tools;
  std::optional<HarmonyReader> harmony;
  std::vector<std::pair<int32_t, std::string>> markers; // control tokens read as text
  bool mergeReasoning = false;
  int64_t reasoningTokens = 0;

  /// Whether it reads anything: else the text is the content.
  bool reads() const { return thought || tools || harmony; }
  /// The event's reasoning, and the content that may be sent now.
  ReasoningReader::Split feed(const TokenEvent &e) {
    const std::string text = withMarker(markers, e.token, e.text);
    ReasoningReader::Split s = harmony ? harmony->feed(e.token, e.text)
                               : thought ? thought->feed(text)
                                         : ReasoningReader::Split{"", text};
    if (mergeReasoning) s = {"", s.reasoning + s.content};
    if (e.token >= 0 && !s.reasoning.empty() && s.content.empty()) ++reasoningTokens;
    if (tools) s.content = tools->feed(s.content);
    return s;
  }
  /// The last event's, with what was held; the calls, if the held text was.
  ReasoningReader::Split finish(const TokenEvent &last, std::vector<ToolCall> &calls) {
    ReasoningReader::Split s = feed(last);
    if (harmony) {
      HarmonyReader::Result r = harmony->finish();
      s.content += r.content;
      calls = std::move(r.calls);
      return s;
    }
    if (thought) {
      ReasoningReader::Split rest = thought->finish();
      s.reasoning += rest.reasoning;
      s.content += tools ? tools->feed(rest.content) : rest.content;
    }
    if (tools) {
      ToolCallReader::Result r = tools->finish();
      s.content += r.content;
      calls = std::move(r.calls);
    }
    return s;
  }
};

/// A streaming response between calls of its content provider.
struct StreamState {
  std::shared_ptr<Pending> p;
  ResponseHead head;
  std::string echo;
  std::vector<int32_t> prompt;      // with the prompt's log-probabilities:
  std::vector<std::string> pieces;  // its tokens and their pieces of the echo
  int64_t echoTop = -1, vllmTop = -1; // echo's and vLLM's prompt log-probabilities
  bool includeUsage = false, tokenIds = false, done = false;
  TokenText tokenText;       // for log-probabilities
  std::vector<char> first;   // per choice: no chunk sent yet
  std::vector<char> echoed;  // per choice: its echo went
  std::vector<int64_t> sent; // per choice: bytes of its text sent so far
  size_t finished = 0;       // choices whose finish chunk went
  std::vector<AnswerReader> answers; // per choice, where its reasoning or calls are read
  std::vector<std::string> stop;       // the request's, for stop_reason
  std::vector<int32_t> stopTokenIds;

  /// Choice `index`'s echo, before its first event `e` (which carries the
  /// prompt's log-probabilities when they were asked for), with vLLM's
  /// prompt_logprobs (chat: beside the choice, as in its whole response).
  std::string echoChunk(size_t index, const TokenEvent &e) {
    echoed[index] = 1;
    const bool scores = e.promptLogprobs.has_value();
    if (echo.empty() && !(scores && (echoTop >= 0 || vllmTop >= 0))) return "";
    json j = streamChunk(head, int64_t(index), echo, first[index] != 0, std::nullopt,
                         includeUsage);
    first[index] = 0;
    if (scores && echoTop >= 0)
      j["choices"][0]["logprobs"] =
          echoLogprobsJson(prompt, withTop(*e.promptLogprobs, echoTop), pieces, tokenText);
    if (scores && vllmTop >= 0)
      (head.chat ? j : j["choices"][0])["prompt_logprobs"] =
          promptLogprobsJson(*e.promptLogprobs, vllmTop, tokenText);
    sent[index] += int64_t(echo.size());
    return sseEvent(j);
  }

  /// A chunk of choice `index`: `e`'s text (the token's, or the finish's
  /// last), its id with return_token_ids and its log-probabilities when
  /// asked for.
  std::string chunk(size_t index, const std::string &text,
                    const std::optional<std::string> &finish, const TokenEvent *e = nullptr,
                    const json &stopReason = nullptr) {
    json j = streamChunk(head, int64_t(index), text, first[index] != 0, finish, includeUsage);
    first[index] = 0;
    if (finish) j["choices"][0]["stop_reason"] = stopReason;
    const bool token = e && e->token >= 0;
    if (tokenIds) j["choices"][0]["token_ids"] = token ? json::array({e->token}) : json::array();
    if (token && e->logprobs)
      j["choices"][0]["logprobs"] = logprobsJson(head.chat, {*e->logprobs}, {text},
                                                 sent[index], tokenText);
    sent[index] += int64_t(text.size());
    return sseEvent(j);
  }

  /// A chunk of choice `index`'s reasoning: a delta of "reasoning_content".
  std::string reasoningChunk(size_t index, const std::string &reasoning) {
    json j = streamChunk(head, int64_t(index), "", first[index] != 0, std::nullopt, includeUsage);
    first[index] = 0;
    json &delta = j["choices"][0]["delta"];
    delta.erase("content");
    delta["reasoning_content"] = reasoning;
    return sseEvent(j);
  }
};

/// The events that arrived for a stream, waiting a little for some.
std::deque<std::pair<size_t, TokenEvent>> takeEvents(Pending &p) {
  std::deque<std::pair<size_t, TokenEvent>> got;
  std::unique_lock<std::mutex> lock(p.m);
  p.ready.wait_for(lock, std::chrono::milliseconds(50), [&] { return !p.events.empty(); });
  got.swap(p.events);
  return got;
}

/// A streamed /v1/responses between calls of its content provider.
struct ResponsesStreamState {
  std::shared_ptr<Pending> p;
  ResponsesStream out;
  AnswerReader reader;
  bool begun = false, done = false;
};

} // namespace

struct Server::Impl {
  Impl(Engine &e, const Tokenizer *t, ServerOptions o);
  void routes();
  void responsesRoutes(); // /v1/responses
  bool authorized(const httplib::Request &req, httplib::Response &res) const;
  std::string corsOrigin(const httplib::Request &req) const;
  void preflight(const httplib::Request &req, httplib::Response &res, bool allowed) const;
  void log(const httplib::Request &req, const httplib::Response &res);
  void refused(int status, const std::string &message);
  std::string httpError(const httplib::Request &req, int &status) const;
  void models(httplib::Response &res) const;
  void generate(const httplib::Request &req, httplib::Response &res, bool chat);
  void checkModel(const std::string &model) const;
  void tokenize(const httplib::Request &req, httplib::Response &res) const;
  void detokenize(const httplib::Request &req, httplib::Response &res) const;

  struct Prepared {
    GenerationRequest gen;
    std::string echo;
    /// With the prompt's log-probabilities: each prompt token's piece of
    /// the decoded prompt (for text_offset).
    std::vector<std::string> pieces;
    bool opensThought = false; // the answer begins inside a thought
  };
  /// The chat template's prompt (the model's own, or the built-in one),
  /// ending as `end` says, closing the thought when thinking is off (at a
  /// new answer); `opensThought` set when the answer begins inside a
  /// thought the prompt opened.
  std::vector<ChatPiece> chatPieces(const std::vector<ChatMessage> &messages,
                                    const std::vector<ToolFunction> &tools,
                                    std::optional<bool> enableThinking,
                                    const nlohmann::ordered_json &kwargs, ChatEnd end,
                                    bool *opensThought = nullptr) const;
  std::vector<int32_t> promptOf(const ApiRequest &a, bool *opensThought) const;
  Prepared prepare(const ApiRequest &a) const;
  /// The tokenizer's tokens as JSON mode sees them, made at the first
  /// request that asks.
  std::shared_ptr<const JsonVocabulary> jsonVocabulary() const {
    std::lock_guard<std::mutex> lock(jsonMutex);
    if (!jsonVocab) jsonVocab = std::make_shared<JsonVocabulary>(JsonVocabulary::of(*tokenizer));
    return jsonVocab;
  }
  /// Submits the request's `n` generations (one request each).
  std::shared_ptr<Pending> admit(const GenerationRequest &gen, int64_t n, bool seedGiven);
  /// A token's text beside its log-probability: the bytes it adds to a text
  /// (Tokenizer::tokenBytes: a SentencePiece piece with its leading space),
  /// or "token_id:N" without a tokenizer (as vLLM's return_tokens_as_token_ids).
  std::string tokenText(int32_t id) const {
    return tokenizer ? tokenizer->tokenBytes(id) : "token_id:" + std::to_string(id);
  }
  void onEvent(const std::shared_ptr<Pending> &p, size_t index, const TokenEvent &e);
  void reply(const ApiRequest &a, const ResponseHead &h, const std::shared_ptr<Pending> &p,
             const Prepared &prep, httplib::Response &res);
  void stream(const ApiRequest &a, const ResponseHead &h, const std::shared_ptr<Pending> &p,
              const Prepared &prep, httplib::Response &res);
  bool streamSome(StreamState &s, httplib::DataSink &sink);
  std::string finishEvents(StreamState &s, size_t index, const TokenEvent &e);
  /// Cancels every choice of `p`, when the client is gone or one choice failed.
  void cancelAll(const Pending &p) {
    for (const Pending::Choice &c : p.choices) sched.cancel(c.id);
  }
  /// A stream's client went away: its request is cancelled (unless `done`,
  /// when only its last events were lost), and the stream ends.
  bool clientGone(Pending &p, bool &done);
  void respond(const httplib::Request &req, httplib::Response &res); // /v1/responses
  AnswerReader answerReader(const ApiRequest &a, const Prepared &prep) const;
  void replyResponse(const ResponsesRequest &r, const ResponsesHead &h,
                     const std::shared_ptr<Pending> &p, const Prepared &prep,
                     httplib::Response &res);
  void streamResponse(const ResponsesRequest &r, const ResponsesHead &h,
                      const std::shared_ptr<Pending> &p, const Prepared &prep,
                      httplib::Response &res);
  bool streamResponseSome(ResponsesStreamState &s, httplib::DataSink &sink);
  void responseDone();
  void loop();
  void shutdown();

  Engine &engine;
  const Tokenizer *tokenizer;
  mutable std::mutex jsonMutex;
  mutable std::shared_ptr<const JsonVocabulary> jsonVocab;
  ServerOptions opts;
  ChatTemplate chat = ChatTemplate::none;
  // The model thinks in <think>...</think> (its chat template says so;
  // Magistral in [THINK]...[/THINK], its vocabulary), or speaks harmony
  // (gpt-oss: its answers read from their tokens, these), and its chat
  // answers' reasoning is split from the content (ServerOptions).
  bool thinks = false, harmony = false, splitsReasoning = false;
  ThoughtTags tags;
  HarmonyTokens harmonyTokens;
  // The control tokens answers are read by, as their markers.
  std::vector<std::pair<int32_t, std::string>> markers;
  // The model's own template, which renders the prompts when set.
  std::shared_ptr<const ModelChatTemplate> own;
  Scheduler sched;
  Metrics metrics;
  std::unique_ptr<LimitedHttpServer> server; // made once opts are final
  httplib::Server &http;
  int boundPort = 0;
  int64_t created = std::time(nullptr);

  std::thread stepper, listener;
  std::atomic<bool> running{true}, listenReturned{false};
  std::mutex stopMutex;
  bool stopped = false;

  // Requests submitted and not yet finished, and responses not yet written.
  std::mutex registryMutex;
  std::condition_variable drained;
  std::unordered_map<uint64_t, std::shared_ptr<Pending>> inFlight;
  int64_t responses = 0;
  bool stopping = false;
  std::atomic<uint64_t> nextId{1};
};

/// The options with the connection limit settled: each streaming client
/// holds a thread for its whole answer, so by default enough for a full
/// queue and a few for health checks and metrics beside it.
static ServerOptions settled(ServerOptions o) {
  if (o.limits.maxConnections <= 0)
    o.limits.maxConnections = int(o.maxQueue > 0 ? o.maxQueue + 8 : 264);
  return o;
}

Server::Impl::Impl(Engine &e, const Tokenizer *t, ServerOptions o)
    : engine(e), tokenizer(t), opts(settled(std::move(o))), sched(e, t, SchedulerOptions{0, o.proposer, o.speculate}),
      server(std::make_unique<LimitedHttpServer>(
          opts.limits, opts.maxBodyBytes,
          [this](int status, const std::string &message) { refused(status, message); })),
      http(*server) {
  if (opts.modelName.empty()) opts.modelName = e.plan().model.name;
  chat = opts.chatTemplate ? *opts.chatTemplate
                           : detectChatTemplate(t, e.plan().model.architecture);
  if (t) own = opts.modelTemplate;
  const std::optional<ThoughtTags> thought = thoughtTags(chat, t);
  thinks = thought.has_value();
  if (thought) tags = *thought;
  // (A vocabulary without harmony's tokens, the template named anyway,
  // writes its markers as text: the answers are read as text too.)
  if (t && chat == ChatTemplate::harmony) harmonyTokens = HarmonyTokens::of(*t);
  harmony = harmonyTokens.message >= 0;
  splitsReasoning = (thinks || harmony) && opts.separateReasoning;
  if (t) markers = answerMarkers(chat, *t);
  // A stream writes an event per token: without this, Nagle's algorithm
  // holds a write back until the client acknowledges the last one, which
  // a delayed ACK can put off for 40 ms.
  http.set_tcp_nodelay(true);
  // httplib's default also sets SO_REUSEPORT, with which a second server
  // on the same port would bind too and silently take half the clients.
  http.set_socket_options([](int sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  routes();
}

bool Server::Impl::authorized(const httplib::Request &req, httplib::Response &res) const {
  if (opts.apiKey.empty() || req.path.rfind("/v1/", 0) != 0) return true;
  if (req.get_header_value("Authorization") == "Bearer " + opts.apiKey) return true;
  sendError(res, ApiError(401,
                          req.has_header("Authorization")
                              ? "the API key is not valid"
                              : "an API key is required: send Authorization: Bearer KEY",
                          "", "invalid_request_error", "invalid_api_key"));
  return false;
}

/// What Access-Control-Allow-Origin says to `req` (--allowed-origins):
/// its Origin where listed, "*" where any is, "" where none.
std::string Server::Impl::corsOrigin(const httplib::Request &req) const {
  if (opts.allowedOrigins.empty() || !req.has_header("Origin")) return "";
  const std::string origin = req.get_header_value("Origin");
  for (const std::string &allowed : opts.allowedOrigins)
    if (allowed == "*" || allowed == origin) return allowed;
  return "";
}

/// A CORS preflight (OPTIONS): 204, with what the browser may then send
/// where the origin is allowed (without, the browser refuses the call).
void Server::Impl::preflight(const httplib::Request &req, httplib::Response &res,
                             bool allowed) const {
  res.status = 204;
  res.set_header("Allow", "GET, POST, OPTIONS");
  if (!allowed) return;
  res.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
  const std::string asked = req.get_header_value("Access-Control-Request-Headers");
  res.set_header("Access-Control-Allow-Headers", asked.empty() ? "Authorization, Content-Type"
                                                               : asked);
  res.set_header("Access-Control-Max-Age", "600");
}

void Server::Impl::log(const httplib::Request &req, const httplib::Response &res) {
  if (!opts.logRequests || req.method != "POST") return;
  char line[512];
  if (record.generation && record.error.empty())
    std::snprintf(line, sizeof line,
                  "kvplan serve: %s %s %d prompt %lld output %lld ttft %.1f ms total %.1f ms "
                  "finish %s\n",
                  record.id.c_str(), req.path.c_str(), res.status, (long long)record.prompt,
                  (long long)record.output, 1e3 * std::max(record.ttft, 0.0), 1e3 * record.total,
                  record.finish.c_str());
  else
    std::snprintf(line, sizeof line, "kvplan serve: %s %s %d %s\n",
                  record.id.empty() ? "-" : record.id.c_str(), req.path.c_str(), res.status,
                  record.error.c_str());
  std::fputs(line, stderr);
  record = RequestRecord{};
}

/// A response the connection layer wrote itself (431, 408, 503): counted
/// and logged as the others are.
void Server::Impl::refused(int status, const std::string &message) {
  metrics.request(status);
  if (opts.logRequests)
    std::fprintf(stderr, "kvplan serve: - - %d %s\n", status, message.c_str());
}

/// The error body for a status httplib set itself.
std::string Server::Impl::httpError(const httplib::Request &req, int &status) const {
  if (status == 404) return "no such endpoint: " + req.method + " " + req.path;
  if (status == 400 && LimitedHttpServer::requestTooLarge()) status = 413;
  if (status == 413)
    return "the request body is larger than " + std::to_string(opts.maxBodyBytes) +
           " bytes (--max-body-bytes)";
  if (status == 414) return "the request line is longer than 8192 bytes";
  if (status == 400 && LimitedHttpServer::requestTimedOut()) {
    status = 408;
    char limit[32];
    std::snprintf(limit, sizeof limit, "%g", opts.limits.readTimeout);
    return std::string("the request's body did not arrive within ") + limit +
           " s (--read-timeout)";
  }
  return "the request could not be read";
}

void Server::Impl::routes() {
  http.set_pre_routing_handler([this](const httplib::Request &req, httplib::Response &res) {
    record = RequestRecord{};
    // CORS headers first, so that a browser may read errors too.
    const std::string origin = corsOrigin(req);
    if (!origin.empty()) res.set_header("Access-Control-Allow-Origin", origin);
    if (!opts.allowedOrigins.empty()) res.set_header("Vary", "Origin");
    if (req.method == "OPTIONS") { // a preflight carries no API key
      preflight(req, res, !origin.empty());
      return httplib::Server::HandlerResponse::Handled;
    }
    return authorized(req, res) ? httplib::Server::HandlerResponse::Unhandled
                                : httplib::Server::HandlerResponse::Handled;
  });
  // 404, 413, 414 and httplib's own 400s (408 for a body the read
  // timeout cut off) as OpenAI error bodies; the handlers'
  // errors have theirs already.
  http.set_error_handler(httplib::Server::HandlerWithResponse(
      [this](const httplib::Request &req, httplib::Response &res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    const std::string message = httpError(req, res.status);
    sendError(res, ApiError(res.status, message, "", "invalid_request_error",
                            res.status == 404 ? "not_found" : ""));
    return httplib::Server::HandlerResponse::Handled;
  }));
  http.set_exception_handler([](const httplib::Request &, httplib::Response &res,
                                std::exception_ptr ep) {
    std::string what = "internal error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception &e) {
      what += std::string(": ") + e.what();
    } catch (...) {
    }
    sendError(res, ApiError(500, what));
  });
  // Counted before the response is written, so a client that has its answer
  // finds it in /metrics (the logger runs after the write, on the server's thread).
  http.set_post_routing_handler([this](const httplib::Request &, httplib::Response &res) {
    metrics.request(res.status);
  });
  http.set_logger([this](const httplib::Request &req, const httplib::Response &res) {
    log(req, res);
  });
  http.Get("/health", [this](const httplib::Request &, httplib::Response &res) {
    std::lock_guard<std::mutex> lock(registryMutex);
    if (stopping) return sendError(res, ApiError(503, "the server is shutting down"));
    res.set_content("{\"status\":\"ok\"}", "application/json");
  });
  http.Get("/metrics", [this](const httplib::Request &, httplib::Response &res) {
    res.set_content(metrics.render(), "text/plain; version=0.0.4");
  });
  http.Get("/v1/models", [this](const httplib::Request &, httplib::Response &res) {
    models(res);
  });
  http.Get(R"(/v1/models/(.+))", [this](const httplib::Request &req, httplib::Response &res) {
    if (req.matches[1] != opts.modelName)
      return sendError(res, ApiError(404, "no model named '" + req.matches[1].str() + "'",
                                     "model", "invalid_request_error", "model_not_found"));
    models(res);
    res.set_content(dumpJson(json::parse(res.body)["data"][0]), "application/json");
  });
  http.Post("/v1/completions", [this](const httplib::Request &req, httplib::Response &res) {
    generate(req, res, false);
  });
  http.Post("/tokenize", [this](const httplib::Request &req, httplib::Response &res) {
    tokenize(req, res);
  });
  http.Post("/detokenize", [this](const httplib::Request &req, httplib::Response &res) {
    detokenize(req, res);
  });
  http.Post("/v1/chat/completions", [this](const httplib::Request &req, httplib::Response &res) {
    generate(req, res, true);
  });
  responsesRoutes();
}

void Server::Impl::responsesRoutes() {
  http.Post("/v1/responses", [this](const httplib::Request &req, httplib::Response &res) {
    respond(req, res);
  });
  // A stored response's retrieval, deletion or input items: none is kept.
  auto unstored = [](const httplib::Request &req, httplib::Response &res) {
    sendError(res, ApiError(404, "no response '" + req.matches[1].str() +
                                     "': kvplan serve stores no responses (each is \"store\": "
                                     "false); keep what you need from the answer",
                            "", "invalid_request_error", "not_found"));
  };
  http.Get(R"(/v1/responses/([^/]+)(/input_items)?)", unstored);
  http.Delete(R"(/v1/responses/([^/]+))", unstored);
}

void Server::Impl::models(httplib::Response &res) const {
  json model = {{"id", opts.modelName},
                {"object", "model"},
                {"created", created},
                {"owned_by", "kvplan"},
                {"max_model_len", engine.maxSeqLen()},
                {"vocab_size", engine.vocabSize()}}; // for load generators drawing token ids
  json list = {{"object", "list"}, {"data", json::array({model})}};
  res.set_content(dumpJson(list), "application/json");
}

std::vector<ChatPiece> Server::Impl::chatPieces(const std::vector<ChatMessage> &messages,
                                                const std::vector<ToolFunction> &tools,
                                                std::optional<bool> enableThinking,
                                                const nlohmann::ordered_json &kwargs,
                                                ChatEnd end, bool *opensThought) const {
  if (own) {
    // The calls in the answer are read in the family's format.
    if (!tools.empty()) checkToolTemplate(chat);
    return own->render(messages, tools, kwargs, opensThought, end);
  }
  checkBuiltInKwargs(chat, kwargs);
  std::vector<ChatPiece> pieces = renderChat(chat, messages, tools, end, opensThought, kwargs);
  if (end != ChatEnd::generationPrompt) return pieces;
  if (opensThought) *opensThought = chatTemplateOpensThought(chat) && enableThinking != false;
  // Without thinking: an empty thought, already closed.
  if (thinks && enableThinking == false)
    pieces.push_back({ChatPiece::text, noThinkingSuffix(chat)});
  return pieces;
}

std::vector<int32_t> Server::Impl::promptOf(const ApiRequest &a, bool *opensThought) const {
  const std::string field = !a.inputField.empty() ? a.inputField : a.chat ? "messages" : "prompt";
  if (!tokenizer && (a.chat || a.promptText))
    throw badField(field, "this model has no tokenizer: give the prompt as token ids");
  if (a.chat) {
    const bool tools = a.toolChoice != ToolChoice::none;
    nlohmann::ordered_json kwargs = a.templateKwargs;
    if (harmony && a.reasoningEffort && !kwargs.contains("reasoning_effort"))
      kwargs["reasoning_effort"] = harmonyEffort(*a.reasoningEffort);
    std::vector<ChatPiece> pieces =
        chatPieces(a.messages, tools ? a.tools : std::vector<ToolFunction>(), a.enableThinking,
                   kwargs, a.chatEnd, opensThought);
    // A forced call, or JSON mode, in harmony: the answer begins in the
    // call's message, or in the final one.
    std::vector<ChatPiece> forced = harmony && forcedCall(a) ? harmonyOpening(harmonyForcedTool(a))
                                    : harmony && a.jsonObject ? harmonyOpening("")
                                    : forcedCall(a)           ? forcedCallPieces(chat)
                                                              : std::vector<ChatPiece>();
    pieces.insert(pieces.end(), forced.begin(), forced.end());
    return tokenizeChat(*tokenizer, pieces);
  }
  if (a.promptText) return tokenizer->encode(*a.promptText, true);
  for (int32_t t : a.promptIds)
    if (t >= engine.vocabSize())
      throw badField("prompt", "prompt token id " + std::to_string(t) +
                                   " is outside the vocabulary [0, " +
                                   std::to_string(engine.vocabSize()) + ")");
  return a.promptIds;
}

/// The request for the scheduler: the prompt's tokens, how many may
/// follow within the context, sampling and where to stop.
Server::Impl::Prepared Server::Impl::prepare(const ApiRequest &a) const {
  Prepared p;
  GenerationRequest &g = p.gen;
  g.prompt = promptOf(a, &p.opensThought);
  const int64_t n = int64_t(g.prompt.size()), context = engine.maxSeqLen();
  const std::string context_s = std::to_string(context);
  const std::string input = !a.inputField.empty() ? a.inputField : a.chat ? "messages" : "prompt";
  if (n == 0) throw badField(input, "the prompt is empty");
  if (n >= context)
    throw ApiError(400, "the prompt has " + std::to_string(n) + " tokens but the model's context "
                   "is " + context_s + " tokens, which leaves no room to generate",
                   input, "", "context_length_exceeded");
  if (a.maxTokens && n + *a.maxTokens > context)
    throw ApiError(400, a.maxTokensField + " is " + std::to_string(*a.maxTokens) +
                   " and the prompt has " + std::to_string(n) + " tokens: " +
                   std::to_string(n + *a.maxTokens) + " exceed the model's context of " +
                   context_s + " tokens",
                   a.maxTokensField, "", "context_length_exceeded");
  // Defaults: 16 for completions (as OpenAI), the rest of the context for chat.
  g.maxNewTokens = a.maxTokens ? *a.maxTokens : a.chat ? context - n : std::min<int64_t>(16, context - n);
  g.sampling = a.sampling;
  for (const auto &[id, bias] : a.sampling.logitBias)
    if (id >= engine.vocabSize())
      throw badField("logit_bias", "logit_bias names token " + std::to_string(id) +
                                       ", outside the vocabulary [0, " +
                                       std::to_string(engine.vocabSize()) + ")");
  if (!a.seedGiven) g.sampling.seed = std::random_device{}();
  if (!a.ignoreEos) {
    for (int64_t id : engine.plan().model.eosTokenIds) g.stopIds.push_back(int32_t(id));
    if (tokenizer)
      for (int32_t id : tokenizer->eosIds()) g.stopIds.push_back(id);
  }
  g.stopStrings = a.stop;
  g.logprobs = a.logprobs;
  if (a.jsonObject || forcedCall(a)) {
    const char *field = a.jsonObject ? "response_format" : "tool_choice";
    if (!tokenizer)
      throw badField(field, "JSON mode needs the model's tokenizer, and this model has none");
    // A forced tool call is held to the candidate tools' calls.
    const auto schema = !forcedCall(a) ? a.jsonSchema
                        : harmony      ? harmonyCallSchema(a, harmonyForcedTool(a))
                                       : forcedCallSchema(chat, a);
    try {
      g.sampling.json = jsonVocabulary();
      if (schema) {
        g.sampling.json->check(schema);
        g.sampling.schema = schema;
      }
    } catch (const InputError &e) {
      throw badField(field, e.what());
    }
  }
  g.promptLogprobs = promptScores(a, engine.scoreRows());
  if (a.chat && !a.ignoreEos) {
    TurnEnd end = turnEnd(chat, *tokenizer);
    g.stopIds.insert(g.stopIds.end(), end.ids.begin(), end.ids.end());
    g.stopStrings.insert(g.stopStrings.end(), end.strings.begin(), end.strings.end());
  }
  addVllmStops(a, engine.vocabSize(), g);
  if (!a.badWords.empty()) {
    if (!tokenizer)
      throw badField("bad_words", "bad_words need the model's tokenizer, and this model has none");
    try {
      g.sampling.badWords = badWordSequences(a.badWords, *tokenizer);
    } catch (const InputError &e) {
      throw badField("bad_words", e.what());
    }
  }
  if (!g.stopStrings.empty() && !tokenizer)
    throw badField("stop", "stop sequences need a tokenizer, and this model has none");
  if (a.echo)
    p.echo = a.promptText ? *a.promptText : tokenizer ? tokenizer->decode(g.prompt) : "";
  if (a.promptLogprobs >= 0) {
    std::optional<StreamDecoder> d;
    if (tokenizer) d.emplace(*tokenizer);
    for (int32_t t : g.prompt) p.pieces.push_back(d ? d->push(t) : "");
    if (d) p.pieces.back() += d->flush();
  }
  return p;
}

/// Submits the request's `n` generations unless the server is stopping or
/// full; from here on the scheduler thread feeds the returned queue. Choice
/// i draws with seed + i when a seed was given, else with a seed of its own.
std::shared_ptr<Pending> Server::Impl::admit(const GenerationRequest &gen, int64_t n,
                                             bool seedGiven) {
  auto p = std::make_shared<Pending>();
  p->promptTokens = int64_t(gen.prompt.size());
  p->choices.resize(size_t(n));
  std::lock_guard<std::mutex> lock(registryMutex);
  if (stopping) throw ApiError(503, "the server is shutting down");
  if (opts.maxQueue > 0 && int64_t(inFlight.size()) + n > opts.maxQueue)
    throw ApiError(503, "the server is full: " + std::to_string(inFlight.size()) +
                            " requests are waiting or running" +
                            (n > 1 ? " and this one asks for " + std::to_string(n) : "") +
                            "; retry later");
  for (size_t i = 0; i < size_t(n); ++i) {
    GenerationRequest g = gen;
    if (i > 0) g.sampling.seed = seedGiven ? gen.sampling.seed + i : std::random_device{}();
    g.onEvent = [this, p, i](const TokenEvent &e) { onEvent(p, i, e); };
    try {
      p->choices[i].id = sched.submit(std::move(g));
    } catch (const InputError &e) {
      for (size_t j = 0; j < i; ++j) sched.cancel(p->choices[j].id); // they end as cancelled
      throw ApiError(400, e.what());
    }
    inFlight[p->choices[i].id] = p;
  }
  metrics.setInFlight(int64_t(inFlight.size()));
  ++responses;
  return p;
}

/// On the scheduler thread.
void Server::Impl::onEvent(const std::shared_ptr<Pending> &p, size_t index, const TokenEvent &e) {
  const Clock::time_point now = Clock::now();
  Pending::Choice &c = p->choices[index]; // its counts are this thread's
  {
    std::lock_guard<std::mutex> lock(p->m);
    if (e.token >= 0) {
      if (c.generated++ == 0) c.first = now;
      c.last = now;
      if (p->generated++ == 0) p->first = now;
      p->last = now;
    }
  }
  if (e.finished) {
    // Leave the registry before the answer can be sent: a client that sends
    // its next request as soon as it has this one's must find the room free.
    const double ttft = c.generated ? seconds(p->arrived, c.first) : 0;
    const double tpot = c.generated > 1 ? seconds(c.first, c.last) / double(c.generated - 1) : 0;
    metrics.generation(p->promptTokens, c.generated, ttft, tpot,
                       serverEnded(e.reason) ? statusName(e.reason) : finishName(e.reason));
    std::lock_guard<std::mutex> lock(registryMutex);
    inFlight.erase(c.id);
    metrics.setInFlight(int64_t(inFlight.size()));
  }
  {
    std::lock_guard<std::mutex> lock(p->m);
    p->events.emplace_back(index, e);
    if (e.finished) {
      if (index == 0) p->cachedTokens = e.cachedPromptTokens;
      c.finished = true;
      p->finished = ++p->finishedChoices == p->choices.size();
    }
  }
  p->ready.notify_one();
}

void Server::Impl::responseDone() {
  std::lock_guard<std::mutex> lock(registryMutex);
  if (--responses == 0) drained.notify_all();
}

namespace {

/// One choice's whole answer, gathered from its events.
struct ChoiceAnswer {
  std::string text, reasoning; // its content (echo apart) and reasoning
  std::vector<ToolCall> calls;
  json ids = json::array();
  std::vector<TokenLogprobs> logprobs, prompt;
  std::vector<std::string> texts; // each token's, beside its log-probabilities
  TokenEvent last;
};

} // namespace

/// Waits for the whole answer and sends it as one JSON body.
void Server::Impl::reply(const ApiRequest &a, const ResponseHead &h,
                         const std::shared_ptr<Pending> &p, const Prepared &prep,
                         httplib::Response &res) {
  const std::string &echo = prep.echo;
  std::vector<ChoiceAnswer> answers(p->choices.size());
  std::vector<AnswerReader> readers(p->choices.size(), answerReader(a, prep));
  {
    std::unique_lock<std::mutex> lock(p->m);
    p->ready.wait(lock, [&] { return p->finished; });
    for (const auto &[index, e] : p->events) {
      ChoiceAnswer &c = answers[index];
      if (!readers[index].reads()) {
        c.text += e.text;
      } else if (e.finished) {
        const ReasoningReader::Split s = readers[index].finish(e, c.calls);
        c.reasoning += s.reasoning;
        c.text += s.content;
      } else {
        const ReasoningReader::Split s = readers[index].feed(e);
        c.reasoning += s.reasoning;
        c.text += s.content;
      }
      if (e.token >= 0) c.ids.push_back(e.token);
      if (e.logprobs) {
        c.logprobs.push_back(*e.logprobs);
        c.texts.push_back(e.text);
      }
      if (e.promptLogprobs) c.prompt = *e.promptLogprobs;
      if (e.finished) c.last = e;
    }
  }
  for (const ChoiceAnswer &c : answers)
    if (serverEnded(c.last.reason)) {
      fillRecord(*p, statusName(c.last.reason));
      return sendError(res, stoppedBy(c.last));
    }
  json choices = json::array();
  for (size_t i = 0; i < answers.size(); ++i) {
    const ChoiceAnswer &c = answers[i];
    json choice = c.calls.empty()
                      ? completionChoice(h, int64_t(i), echo + c.text, finishName(c.last.reason))
                      : toolCallChoice(h, int64_t(i), c.text, c.calls, "tool_calls");
    if (!c.reasoning.empty()) choice["message"]["reasoning_content"] = c.reasoning;
    choice["stop_reason"] = stopReason(a.stop, a.stopTokenIds, c.last);
    if (a.returnTokenIds) choice["token_ids"] = c.ids;
    const TokenText text = [this](int32_t id) { return tokenText(id); };
    if (a.logprobs >= 0)
      choice["logprobs"] = logprobsJson(h.chat, c.logprobs, c.texts, int64_t(echo.size()), text);
    if (a.promptLogprobs >= 0)
      choice["logprobs"] = echoLogprobsJson(prep.gen.prompt, withTop(c.prompt, a.promptLogprobs),
                                            prep.pieces, text, choice["logprobs"]);
    if (a.vllmPromptLogprobs >= 0 && !a.chat)
      choice["prompt_logprobs"] = promptLogprobsJson(c.prompt, a.vllmPromptLogprobs, text);
    choices.push_back(choice);
  }
  fillRecord(*p, choices[0]["finish_reason"].get<std::string>()); // tool_calls too
  json out = completionResponse(h, choices, {p->promptTokens, p->generated, p->cachedTokens});
  if (a.vllmPromptLogprobs >= 0 && a.chat) // vLLM's chat: once, beside the choices
    out["prompt_logprobs"] = promptLogprobsJson(answers[0].prompt, a.vllmPromptLogprobs,
                                                [this](int32_t id) { return tokenText(id); });
  res.set_content(dumpJson(out), "application/json");
}

/// Answers as server-sent events, each token as it comes.
void Server::Impl::stream(const ApiRequest &a, const ResponseHead &h,
                          const std::shared_ptr<Pending> &p, const Prepared &prep,
                          httplib::Response &res) {
  auto s = std::make_shared<StreamState>();
  s->p = p;
  s->head = h;
  s->echo = prep.echo;
  if (a.promptLogprobs >= 0) { // echo's log-probabilities read them
    s->prompt = prep.gen.prompt;
    s->pieces = prep.pieces;
  }
  s->echoTop = a.promptLogprobs;
  s->vllmTop = a.vllmPromptLogprobs;
  s->includeUsage = a.includeUsage;
  s->tokenIds = a.returnTokenIds;
  s->stop = a.stop;
  s->stopTokenIds = a.stopTokenIds;
  s->tokenText = [this](int32_t id) { return tokenText(id); };
  s->first.assign(p->choices.size(), 1);
  s->echoed.assign(p->choices.size(), 0);
  s->sent.assign(p->choices.size(), 0);
  if (AnswerReader reader = answerReader(a, prep); reader.reads())
    s->answers.assign(p->choices.size(), reader);
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [this, s](size_t, httplib::DataSink &sink) { return streamSome(*s, sink); },
      // Always called, last: however the stream ended, the request ends.
      [this, s](bool) {
        if (!s->done) cancelAll(*s->p);
        responseDone();
      });
}

/// One call of the content provider: writes the events that arrived
/// (waiting a little for some), or notices that the client went away.
bool Server::Impl::streamSome(StreamState &s, httplib::DataSink &sink) {
  std::deque<std::pair<size_t, TokenEvent>> got = takeEvents(*s.p);
  // Between tokens (or while queued) a closed connection shows as not
  // writable; the request is then cancelled at once.
  if (got.empty()) return sink.is_writable() ? true : clientGone(*s.p, s.done);
  std::string out;
  for (const auto &[index, e] : got) {
    if (!s.echoed[index] && !serverEnded(e.reason)) out += s.echoChunk(index, e);
    if (e.finished) {
      out += finishEvents(s, index, e);
      if (s.done) break;
      continue;
    }
    // Reasoning goes apart; with tools, text that may be a call is held
    // until the choice ends.
    if (s.answers.empty()) {
      out += s.chunk(index, e.text, std::nullopt, &e);
      continue;
    }
    const ReasoningReader::Split split = s.answers[index].feed(e);
    if (!split.reasoning.empty()) out += s.reasoningChunk(index, split.reasoning);
    if (split.content.empty() && !s.tokenIds && !e.logprobs) continue;
    out += s.chunk(index, split.content, std::nullopt, &e);
  }
  // (Nothing to write when every event's text was held: a write of no
  // bytes would be the chunk that ends the response.)
  if (!out.empty() && !sink.write(out.data(), out.size())) return clientGone(*s.p, s.done);
  if (s.done) sink.done();
  return true;
}

/// A choice's finish chunk; once every choice has finished, the usage chunk
/// when asked for and [DONE]. When the server stopped a choice, an error
/// event and [DONE] at once (the other choices are cancelled).
std::string Server::Impl::finishEvents(StreamState &s, size_t index, const TokenEvent &e) {
  std::string out;
  if (serverEnded(e.reason)) {
    out += sseEvent(stoppedBy(e).body());
    fillRecord(*s.p, statusName(e.reason));
    cancelAll(*s.p);
    s.done = true;
    return out + kSseDone;
  }
  std::string text = e.text, finish = finishName(e.reason);
  if (!s.answers.empty()) { // the held reasoning and text: calls, or content after all
    std::vector<ToolCall> calls;
    const ReasoningReader::Split split = s.answers[index].finish(e, calls);
    if (!split.reasoning.empty()) out += s.reasoningChunk(index, split.reasoning);
    text = split.content;
    if (!calls.empty()) {
      if (!text.empty()) out += s.chunk(index, text, std::nullopt);
      out += sseEvent(toolCallChunk(s.head, int64_t(index), calls, s.first[index] != 0,
                                    s.includeUsage));
      s.first[index] = 0;
      text.clear();
      finish = "tool_calls";
    }
  }
  out += s.chunk(index, text, finish, nullptr, stopReason(s.stop, s.stopTokenIds, e));
  if (++s.finished < s.first.size()) return out;
  if (s.includeUsage) {
    std::lock_guard<std::mutex> lock(s.p->m);
    out += sseEvent(usageChunk(s.head, {s.p->promptTokens, s.p->generated, s.p->cachedTokens}));
  }
  fillRecord(*s.p, finish);
  s.done = true;
  return out + kSseDone;
}

bool Server::Impl::clientGone(Pending &p, bool &done) {
  if (!done) { // else it had finished, and only its last events were lost
    cancelAll(p);
    fillRecord(p, "cancelled (the client went away)");
  }
  done = true;
  return false;
}

void Server::Impl::generate(const httplib::Request &req, httplib::Response &res, bool chat) {
  record.generation = true;
  try {
    const ApiRequest a = chat ? parseChatRequest(req.body) : parseCompletionRequest(req.body);
    checkModel(a.model);
    Prepared prep = prepare(a);
    const uint64_t n = nextId++;
    ResponseHead h{(chat ? "chatcmpl-" : "cmpl-") + std::to_string(n), std::time(nullptr),
                   opts.modelName, chat};
    record.id = h.id;
    std::shared_ptr<Pending> p = admit(prep.gen, a.n, a.seedGiven);
    if (a.stream)
      return stream(a, h, p, prep, res); // the releaser ends the response
    reply(a, h, p, prep, res);
    responseDone();
  } catch (const ApiError &e) {
    sendError(res, e);
  }
}

void Server::Impl::checkModel(const std::string &model) const {
  if (!model.empty() && model != opts.modelName)
    throw ApiError(400, "no model named '" + model + "': this server serves '" + opts.modelName +
                            "'", "model", "invalid_request_error", "model_not_found");
}

/// vLLM's /tokenize: {"count", "max_model_len", "tokens", "token_strs"}
/// (each token decoded alone, when asked; else null).
void Server::Impl::tokenize(const httplib::Request &req, httplib::Response &res) const {
  try {
    const TokenizeRequest t = parseTokenizeRequest(req.body);
    checkModel(t.model);
    const char *field = t.prompt ? "prompt" : "messages";
    if (!tokenizer) throw badField(field, "this model has no tokenizer to tokenize with");
    std::vector<int32_t> ids;
    if (t.prompt) {
      ids = tokenizer->encode(*t.prompt, t.addSpecialTokens);
    } else {
      ids = tokenizeChat(*tokenizer,
                         chatPieces(t.messages, t.tools, t.enableThinking, t.templateKwargs,
                                    t.chatEnd));
      if (t.addSpecialTokens && tokenizer->bosId() >= 0)
        ids.insert(ids.begin(), tokenizer->bosId());
    }
    OutJson out = {{"count", ids.size()}, {"max_model_len", engine.maxSeqLen()}, {"tokens", ids},
                   {"token_strs", nullptr}};
    if (t.returnTokenStrs) {
      out["token_strs"] = OutJson::array();
      for (int32_t id : ids) out["token_strs"].push_back(tokenText(id));
    }
    res.set_content(dumpJson(out), "application/json");
  } catch (const ApiError &e) {
    sendError(res, e);
  }
}

/// vLLM's /detokenize: {"prompt": the ids' text}.
void Server::Impl::detokenize(const httplib::Request &req, httplib::Response &res) const {
  try {
    const DetokenizeRequest d = parseDetokenizeRequest(req.body);
    checkModel(d.model);
    if (!tokenizer) throw badField("tokens", "this model has no tokenizer to detokenize with");
    for (int32_t id : d.tokens)
      if (id >= engine.vocabSize())
        throw badField("tokens", "token id " + std::to_string(id) +
                                     " is outside the vocabulary [0, " +
                                     std::to_string(engine.vocabSize()) + ")");
    res.set_content(dumpJson(OutJson{{"prompt", tokenizer->decode(d.tokens)}}),
                    "application/json");
  } catch (const ApiError &e) {
    sendError(res, e);
  }
}

void Server::Impl::respond(const httplib::Request &req, httplib::Response &res) {
  record.generation = true;
  try {
    const ResponsesRequest r = parseResponsesRequest(req.body);
    checkModel(r.api.model);
    Prepared prep = prepare(r.api);
    const ResponsesHead h{nextId++, int64_t(std::time(nullptr)), opts.modelName, r.echo};
    record.id = h.id();
    std::shared_ptr<Pending> p = admit(prep.gen, 1, r.api.seedGiven);
    if (r.api.stream) return streamResponse(r, h, p, prep, res); // the releaser ends it
    replyResponse(r, h, p, prep, res);
    responseDone();
  } catch (ApiError &e) {
    // The chat templates' errors name the messages the input became.
    if (e.param == "messages") e.param = "input";
    sendError(res, e);
  }
}

AnswerReader Server::Impl::answerReader(const ApiRequest &a, const Prepared &prep) const {
  AnswerReader reader;
  if (!a.chat) return reader;
  if (harmony) {
    const bool tools = a.toolChoice != ToolChoice::none;
    std::vector<std::string> names;
    for (const ToolFunction &f : a.tools)
      if (tools) names.push_back(f.name);
    reader.harmony.emplace(harmonyTokens, names, a.parallelToolCalls);
    // The prompt opened the message the answer begins in: a forced call's,
    // JSON mode's final one, or the last message's (continued).
    if (forcedCall(a)) reader.harmony->beginInCall(harmonyForcedTool(a));
    else if (a.jsonObject || a.chatEnd == ChatEnd::continueLastMessage)
      reader.harmony->beginInFinal();
    reader.mergeReasoning = !splitsReasoning;
    return reader;
  }
  if (splitsReasoning) reader.thought.emplace(prep.opensThought, tags.open, tags.close);
  if (a.toolChoice != ToolChoice::none) reader.tools.emplace(chat, a, tokenizer);
  if (reader.reads()) reader.markers = markers;
  return reader;
}

/// Waits for the whole answer and sends the response object.
void Server::Impl::replyResponse(const ResponsesRequest &r, const ResponsesHead &h,
                                 const std::shared_ptr<Pending> &p, const Prepared &prep,
                                 httplib::Response &res) {
  AnswerReader reader = answerReader(r.api, prep);
  ResponsesAnswer answer;
  TokenEvent last;
  {
    std::unique_lock<std::mutex> lock(p->m);
    p->ready.wait(lock, [&] { return p->finished; });
    for (const auto &[index, e] : p->events) {
      if (e.finished) {
        last = e;
        break;
      }
      ReasoningReader::Split s = reader.feed(e);
      answer.reasoning += s.reasoning;
      answer.content += s.content;
    }
  }
  if (serverEnded(last.reason)) {
    fillRecord(*p, statusName(last.reason));
    return sendError(res, stoppedBy(last));
  }
  ReasoningReader::Split s = reader.finish(last, answer.calls);
  answer.reasoning += s.reasoning;
  answer.content += s.content;
  answer.cut = last.reason == FinishReason::length;
  fillRecord(*p, answer.cut ? "length" : answer.calls.empty() ? "stop" : "tool_calls");
  const ResponsesUsage u{p->promptTokens, p->generated, p->cachedTokens, reader.reasoningTokens};
  res.set_content(dumpJson(responseObject(h, answer.cut ? "incomplete" : "completed",
                                          responseOutput(h, answer), responsesUsageJson(u))),
                  "application/json");
}

/// Answers as the Responses API's typed server-sent events.
void Server::Impl::streamResponse(const ResponsesRequest &r, const ResponsesHead &h,
                                  const std::shared_ptr<Pending> &p, const Prepared &prep,
                                  httplib::Response &res) {
  auto s = std::make_shared<ResponsesStreamState>(
      ResponsesStreamState{p, ResponsesStream(h), answerReader(r.api, prep)});
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [this, s](size_t, httplib::DataSink &sink) {
        if (!s->begun) {
          s->begun = true;
          const std::string begun = s->out.begin();
          if (!sink.write(begun.data(), begun.size())) return clientGone(*s->p, s->done);
        }
        return streamResponseSome(*s, sink);
      },
      [this, s](bool) {
        if (!s->done) cancelAll(*s->p);
        responseDone();
      });
}

bool Server::Impl::streamResponseSome(ResponsesStreamState &s, httplib::DataSink &sink) {
  std::deque<std::pair<size_t, TokenEvent>> got = takeEvents(*s.p);
  if (got.empty()) return sink.is_writable() ? true : clientGone(*s.p, s.done);
  std::string out;
  for (const auto &[index, e] : got) {
    if (!e.finished) {
      ReasoningReader::Split split = s.reader.feed(e);
      out += s.out.reasoning(split.reasoning);
      out += s.out.text(split.content);
      continue;
    }
    s.done = true;
    if (serverEnded(e.reason)) {
      fillRecord(*s.p, statusName(e.reason));
      out += s.out.fail(stoppedBy(e));
      break;
    }
    std::vector<ToolCall> calls;
    ReasoningReader::Split split = s.reader.finish(e, calls);
    out += s.out.reasoning(split.reasoning);
    out += s.out.text(split.content);
    const bool cut = e.reason == FinishReason::length;
    fillRecord(*s.p, cut ? "length" : calls.empty() ? "stop" : "tool_calls");
    std::lock_guard<std::mutex> lock(s.p->m);
    out += s.out.finish(calls, cut,
                        {s.p->promptTokens, s.p->generated, s.p->cachedTokens,
                         s.reader.reasoningTokens});
    break;
  }
  if (!out.empty() && !sink.write(out.data(), out.size())) return clientGone(*s.p, s.done);
  if (s.done) sink.done();
  return true;
}

void Server::Impl::loop() {
  while (running) {
    if (opts.beforeStep) opts.beforeStep();
    const bool worked = sched.step();
    metrics.sample(sched);
    if (!worked) sched.waitForWork();
  }
}

/// Refuses new requests, cancels those in flight, waits until their
/// responses are written (a stream's last event says why it stopped), then
/// closes the listener and stops stepping.
void Server::Impl::shutdown() {
  {
    std::unique_lock<std::mutex> lock(registryMutex);
    stopping = true;
    for (const auto &entry : inFlight) sched.cancel(entry.first);
    // A client that reads nothing more cannot hold the shutdown up: its
    // writes time out (--write-timeout) and the response ends.
    drained.wait_for(lock, std::chrono::seconds(30), [&] { return responses == 0; });
  }
  if (listener.joinable()) {
    // stop() does nothing before listen has started; wait for that.
    while (!http.is_running() && !listenReturned) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    http.stop();
    listener.join();
  }
  running = false;
  sched.wake();
  if (stepper.joinable()) stepper.join();
}

Server::Server(Engine &engine, const Tokenizer *tokenizer, ServerOptions options)
    : impl(std::make_unique<Impl>(engine, tokenizer, std::move(options))) {}

Server::~Server() { stop(); }

void Server::start(const std::string &host, int port) {
  Impl &m = *impl;
  const int bound = port == 0 ? m.http.bind_to_any_port(host)
                              : (m.http.bind_to_port(host, port) ? port : -1);
  if (bound < 0)
    throw InputError("cannot listen on " + host + ":" + std::to_string(port) +
                     " (is the address in use, or the host not this machine's?)");
  m.boundPort = bound;
  raiseListenBacklog(bound);
  m.stepper = std::thread([&m] { m.loop(); });
  m.listener = std::thread([&m] {
    m.http.listen_after_bind();
    m.listenReturned = true;
  });
}

int Server::port() const { return impl->boundPort; }
const std::string &Server::modelName() const { return impl->opts.modelName; }
ChatTemplate Server::chatTemplate() const { return impl->chat; }
const ModelChatTemplate *Server::modelTemplate() const { return impl->own.get(); }
bool Server::separatesReasoning() const { return impl->splitsReasoning; }
const Metrics &Server::metrics() const { return impl->metrics; }

void Server::stop() {
  std::lock_guard<std::mutex> lock(impl->stopMutex);
  if (impl->stopped) return;
  impl->stopped = true;
  impl->shutdown();
}

} // namespace kvplan::server
