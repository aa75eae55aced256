// kvplan serve's HTTP server in process, on loopback, on a tiny compiled
// model with random weights and the byte tokenizer, driven by httplib's
// client: every endpoint and error, streaming against not, greedy output
// against the engine alone, 16 concurrent streams, a client that leaves
// mid-stream, stopping with requests in flight, and the limits on what one
// client may take (header size and count, slow clients, connections).
#include "codegen/Compiler.h"
#include "frontend/ConfigParser.h"
#include "plan/WeightPacking.h"
#include "runtime/Engine.h"
#include "runtime/JsonSchema.h"
#include "tests/common/FailingExecutor.h"
#include "tests/common/ServeCompare.h"
#include "server/HttpServer.h"

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <numeric>
#include <atomic>
#include <cmath>
#include <chrono>
#include <random>
#include <regex>
#include <set>
#include <tuple>
#include <thread>

using namespace kvplan;
using json = nlohmann::json;

namespace {

/// Context 160 (or `context`), 4 sequences at once, pages of 4 tokens.
struct TinyModel {
  ModelConfig cfg;
  Plan plan;
  std::vector<char> weights;
  std::unique_ptr<Tokenizer> tok = makeByteTokenizer(300);

  explicit TinyModel(int context = 160) {
    const std::string text =
        "[model]\nname = \"tiny-serve\"\narchitecture = \"llama\"\nhidden_size = 64\n"
        "intermediate_size = 96\nnum_layers = 2\nnum_heads = 4\nnum_kv_heads = 2\n"
        "vocab_size = 300\nmax_position_embeddings = " + std::to_string(std::max(256, context)) +
        "\nrms_norm_eps = 1e-5\nbos_token_id = 1\neos_token_id = 2\n[compile]\nmax_seq_len = " +
        std::to_string(context) + "\nmax_batch = 4\n"
        "page_size = 4\nprefill_chunk = 8\nweight_dtype = \"f32\"\nkv_dtype = \"f32\"\n"
        "speculate = 4\n"  // a @verify entry point, used only where a proposer is given
        "score_rows = 5\n"; // @score, for echo with logprobs
    cfg = parseTomlSpec(text, "serve.toml", [](const std::string &w) { ADD_FAILURE() << w; });
    validate(cfg);
    plan = compileModel(cfg).plan;
    weights = packWeightsInMemory(plan, *openWeights("random:5", cfg.model));
  }
  Engine engine() const { return Engine(plan, weights.data(), weights.size(), 1); }

  /// Greedy tokens for the prompt on a fresh engine, without the server.
  std::vector<int32_t> alone(const std::vector<int32_t> &prompt, int64_t n) const {
    Engine e = engine();
    return kvplan::testing::runAlone(e, prompt, size_t(n));
  }
};

const TinyModel &model() {
  static const TinyModel m;
  return m;
}

/// Room for prompts that list tools.
const TinyModel &longModel() {
  static const TinyModel m(1536);
  return m;
}

/// Text as the server sends it: JSON carries UTF-8 only, so bytes of a
/// random model's output that are not become U+FFFD.
std::string asSent(const std::string &raw) {
  return json::parse(json(raw).dump(-1, ' ', false, json::error_handler_t::replace))
      .get<std::string>();
}

std::vector<int32_t> randomPrompt(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t;
  for (int i = 0; i < n; ++i) t.push_back(int32_t(3 + rng() % 290));
  return t;
}

/// A server on a free loopback port over its own engine.
struct Running {
  Engine engine;
  server::Server srv;
  explicit Running(server::ServerOptions o = {}, const TinyModel &m = model())
      : engine(m.engine()), srv(engine, m.tok.get(), std::move(o)) {
    srv.start("127.0.0.1", 0);
  }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", srv.port());
    c.set_read_timeout(20, 0);
    return c;
  }
};

httplib::Result post(const Running &r, const std::string &path, const json &body,
                     const httplib::Headers &headers = {}) {
  return r.client().Post(path.c_str(), headers, body.dump(), "application/json");
}

/// What a stream delivered: each event's JSON (without [DONE]), and
/// whether [DONE] closed it.
struct Stream {
  std::vector<json> events;
  bool done = false;
  std::string text;
  std::vector<int32_t> ids;
  int status = 0;
};

/// Posts a streaming request and reads its events; `stopAfter` > 0 closes
/// the connection after that many events.
Stream postStreamBody(const Running &r, const std::string &path, const std::string &body,
                      int stopAfter) {
  Stream s;
  std::string buffer;
  httplib::Request req;
  req.method = "POST";
  req.path = path;
  req.body = body;
  req.set_header("Content-Type", "application/json");
  req.content_receiver = [&](const char *data, size_t n, uint64_t, uint64_t) {
    buffer.append(data, n);
    for (size_t end; (end = buffer.find("\n\n")) != std::string::npos;) {
      std::string event = buffer.substr(0, end), named;
      buffer.erase(0, end + 2);
      if (event.rfind("event: ", 0) == 0) { // the Responses API's typed events
        const size_t line = event.find('\n');
        named = event.substr(7, line - 7);
        event.erase(0, line + 1);
      }
      EXPECT_EQ(event.rfind("data: ", 0), 0u) << event;
      if (event == "data: [DONE]") {
        s.done = true;
        continue;
      }
      json j = json::parse(event.substr(6));
      if (!named.empty()) {
        EXPECT_EQ(j["type"], named);
        EXPECT_EQ(j["sequence_number"], s.events.size()) << "numbered from 0, in order";
        if (named == "response.output_text.delta") s.text += j["delta"].get<std::string>();
      }
      if (j.contains("choices") && !j["choices"].empty()) {
        const json &c = j["choices"][0];
        s.text += c.contains("delta") ? c["delta"].value("content", "") : c.value("text", "");
        if (c.contains("token_ids"))
          for (const json &id : c["token_ids"]) s.ids.push_back(id.get<int32_t>());
      }
      s.events.push_back(std::move(j));
      if (stopAfter > 0 && int(s.events.size()) >= stopAfter) return false;
    }
    return true;
  };
  httplib::Result res = r.client().send(req);
  if (res)
    s.status = res->status;
  else if (stopAfter == 0)
    ADD_FAILURE() << "the request failed: " << httplib::to_string(res.error());
  return s;
}

Stream postStream(const Running &r, const std::string &path, json body, int stopAfter = 0) {
  body["stream"] = true;
  return postStreamBody(r, path, body.dump(), stopAfter);
}

/// Bodies whose members keep the order written (a JSON schema's properties).
using ojson = nlohmann::ordered_json;

Stream postStream(const Running &r, const std::string &path, ojson body) {
  body["stream"] = true;
  return postStreamBody(r, path, body.dump(), 0);
}

httplib::Result post(const Running &r, const std::string &path, const ojson &body) {
  return r.client().Post(path.c_str(), body.dump(), "application/json");
}

/// Waits until `cond` holds, up to 10 s.
template <typename F> bool eventually(F cond) {
  for (int i = 0; i < 1000; ++i) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

json completion(const std::vector<int32_t> &prompt, int maxTokens) {
  return {{"model", "tiny-serve"}, {"prompt", prompt},       {"max_tokens", maxTokens},
          {"temperature", 0},      {"ignore_eos", true},     {"return_token_ids", true}};
}

} // namespace

TEST(Server, HealthModelsAndMetrics) {
  Running r;
  auto health = r.client().Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(json::parse(health->body)["status"], "ok");
  auto models = r.client().Get("/v1/models");
  ASSERT_TRUE(models);
  const json m = json::parse(models->body);
  EXPECT_EQ(m["object"], "list");
  EXPECT_EQ(m["data"][0]["id"], "tiny-serve");
  EXPECT_EQ(m["data"][0]["object"], "model");
  EXPECT_EQ(r.client().Get("/v1/models/tiny-serve")->status, 200);
  EXPECT_EQ(r.client().Get("/v1/models/other")->status, 404);
  auto metrics = r.client().Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
  for (const char *name : {"kvplan_http_requests_total{status=\"200\"}", "kvplan_kv_pages_total 160",
                           "kvplan_kv_pages_used 0", "kvplan_requests_waiting 0",
                           "kvplan_prefix_cache_hit_rate", "kvplan_time_to_first_token_seconds_bucket",
                           "kvplan_time_per_output_token_seconds_count"})
    EXPECT_NE(metrics->body.find(name), std::string::npos) << name;
}

TEST(Server, APortInUseIsAnError) {
  Running r;
  Engine e = model().engine();
  server::Server second(e, model().tok.get(), {});
  EXPECT_THROW(second.start("127.0.0.1", r.srv.port()), InputError);
}

TEST(Server, GreedyCompletionEqualsTheEngineAlone) {
  Running r;
  const std::vector<int32_t> prompt = randomPrompt(12, 1);
  auto res = post(r, "/v1/completions", completion(prompt, 20));
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  const json j = json::parse(res->body);
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["model"], "tiny-serve");
  EXPECT_EQ(j["id"].get<std::string>().rfind("cmpl-", 0), 0u);
  const json &c = j["choices"][0];
  EXPECT_EQ(c["finish_reason"], "length");
  EXPECT_TRUE(c["logprobs"].is_null());
  const std::vector<int32_t> want = model().alone(prompt, 20);
  EXPECT_EQ(c["token_ids"].get<std::vector<int32_t>>(), want);
  EXPECT_EQ(c["text"], asSent(model().tok->decode(want)));
  EXPECT_EQ(j["usage"]["prompt_tokens"], 12);
  EXPECT_EQ(j["usage"]["completion_tokens"], 20);
  EXPECT_EQ(j["usage"]["total_tokens"], 32);
  // The first token comes from prefill, the other 19 from decode steps (the
  // stepping thread counts them after the response may have gone).
  EXPECT_TRUE(eventually([&] {
    return r.client().Get("/metrics")->body.find(
               "kvplan_entry_point_calls_total{entry_point=\"decode\"} 19\n") !=
           std::string::npos;
  })) << r.client().Get("/metrics")->body;
  EXPECT_NE(r.client().Get("/metrics")->body.find(
                "kvplan_entry_point_calls_total{entry_point=\"prefill\"} 2\n"),
            std::string::npos);
}

TEST(Server, SpeculationKeepsGreedyOutputsAndIsCounted) {
  PromptLookup lookup;
  server::ServerOptions o;
  o.proposer = &lookup;
  Running r(o);
  std::vector<int32_t> prompt = randomPrompt(6, 3);
  prompt.insert(prompt.end(), prompt.begin(), prompt.end());
  auto res = post(r, "/v1/completions", completion(prompt, 24));
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(json::parse(res->body)["choices"][0]["token_ids"].get<std::vector<int32_t>>(),
            model().alone(prompt, 24));
  const std::string metrics = r.client().Get("/metrics")->body;
  EXPECT_EQ(metrics.find("kvplan_speculative_verify_calls_total 0\n"), std::string::npos)
      << "a repeated prompt gives prompt lookup something to propose";
  EXPECT_NE(metrics.find("kvplan_speculative_verify_calls_total "), std::string::npos);
  EXPECT_NE(metrics.find("kvplan_speculative_drafts_total{outcome=\"accepted\"} "),
            std::string::npos);
}

TEST(Server, AnEngineFailureIsA500AndTheServerGoesOn) {
  std::atomic<bool> failing{true};
  Engine e(std::make_unique<kvplan::testing::FailingExecutor>(model().plan, model().weights, failing));
  server::Server srv(e, model().tok.get(), {});
  srv.start("127.0.0.1", 0);
  httplib::Client c("127.0.0.1", srv.port());
  c.set_read_timeout(20, 0);
  const std::vector<int32_t> prompt = randomPrompt(6, 3);
  auto res = c.Post("/v1/completions", completion(prompt, 4).dump(), "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 500) << res->body;
  const json err = json::parse(res->body)["error"];
  EXPECT_EQ(err["message"], "the engine failed: device lost");
  EXPECT_EQ(err["type"], "server_error");
  failing = false;
  res = c.Post("/v1/completions", completion(prompt, 4).dump(), "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(json::parse(res->body)["choices"][0]["token_ids"].get<std::vector<int32_t>>(),
            model().alone(prompt, 4));
  srv.stop();
}

TEST(Server, StreamingGivesTheSameTextAsNot) {
  Running r;
  json body = completion(randomPrompt(9, 2), 24);
  body["stream_options"] = {{"include_usage", true}};
  auto whole = post(r, "/v1/completions", completion(randomPrompt(9, 2), 24));
  ASSERT_EQ(whole->status, 200);
  const json w = json::parse(whole->body);
  const Stream s = postStream(r, "/v1/completions", body);
  EXPECT_EQ(s.status, 200);
  EXPECT_TRUE(s.done);
  EXPECT_EQ(s.text, w["choices"][0]["text"]);
  EXPECT_EQ(s.ids, w["choices"][0]["token_ids"].get<std::vector<int32_t>>());
  // A chunk per token, the finish chunk, then the usage chunk.
  ASSERT_EQ(s.events.size(), 24u + 2u);
  EXPECT_EQ(s.events[24]["choices"][0]["finish_reason"], "length");
  EXPECT_TRUE(s.events[0]["usage"].is_null());
  EXPECT_TRUE(s.events[25]["choices"].empty());
  EXPECT_EQ(s.events[25]["usage"]["completion_tokens"], 24);
  EXPECT_EQ(s.events[25]["usage"]["prompt_tokens"], 9);
}

// vLLM's bad_words: a one-byte word never comes; a two-byte one's second
// byte never right after its first. Greedy, the answer is the free one up
// to where the ban first bites.
TEST(Server, BadWordsAreNeverGenerated) {
  Running r;
  json body = {{"prompt", "Hello"},   {"max_tokens", 40},         {"temperature", 0},
               {"ignore_eos", true}, {"return_token_ids", true}};
  auto rawOf = [&](const json &b) {
    auto res = post(r, "/v1/completions", b);
    EXPECT_EQ(res->status, 200) << res->body;
    return model().tok->decode(json::parse(res->body)["choices"][0]["token_ids"]);
  };
  const std::string raw = rawOf(body);
  auto printable = [&](size_t i) { return raw[i] > ' ' && raw[i] < 127 && raw[i] != '"'; };
  size_t at = 1;
  while (at + 1 < raw.size() && !(printable(at) && printable(at + 1))) ++at;
  ASSERT_LT(at + 1, raw.size()) << "no two printable bytes in a row in: " << raw;
  const std::string one = raw.substr(at, 1), two = raw.substr(at, 2);
  body["bad_words"] = one;
  std::string got = rawOf(body);
  EXPECT_EQ(got.substr(0, raw.find(one)), raw.substr(0, raw.find(one)));
  EXPECT_EQ(got.find(one), std::string::npos) << got;
  body["bad_words"] = json::array({"  " + two, "never-seen"}); // leading space dropped
  got = rawOf(body);
  EXPECT_EQ(got.substr(0, raw.find(two) + 1), raw.substr(0, raw.find(two) + 1));
  EXPECT_EQ(got.find(two), std::string::npos) << got;
  EXPECT_NE(got, raw);
  // Streamed too.
  body.erase("return_token_ids");
  EXPECT_EQ(postStream(r, "/v1/completions", body).text, asSent(got));
}

TEST(Server, TextPromptsStopStringsEchoAndSeeds) {
  Running r;
  json body = {{"prompt", "Hello"},   {"max_tokens", 40},         {"temperature", 0},
               {"ignore_eos", true}, {"return_token_ids", true}};
  const json full = json::parse(post(r, "/v1/completions", body)->body);
  EXPECT_EQ(full["usage"]["prompt_tokens"], 6); // BOS and five bytes
  const std::string raw = model().tok->decode(full["choices"][0]["token_ids"]);
  EXPECT_EQ(full["choices"][0]["text"], asSent(raw));
  // A stop string (a printable character of the answer) cuts the text
  // before its first appearance; the answer says "stop".
  size_t at = 1;
  while (at < raw.size() && !(raw[at] > ' ' && raw[at] < 127 && raw[at] != '"')) ++at;
  ASSERT_LT(at, raw.size());
  const std::string stop(1, raw[at]);
  body["stop"] = json::array({stop, "never-seen"});
  const json cut = json::parse(post(r, "/v1/completions", body)->body);
  EXPECT_EQ(cut["choices"][0]["text"], asSent(raw.substr(0, raw.find(stop))));
  EXPECT_EQ(cut["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(cut["choices"][0]["stop_reason"], stop); // vLLM's: which stop string
  const Stream streamed = postStream(r, "/v1/completions", body);
  EXPECT_EQ(streamed.text, asSent(raw.substr(0, raw.find(stop))));
  EXPECT_EQ(streamed.events.back()["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(streamed.events.back()["choices"][0]["stop_reason"], stop);
  // vLLM's include_stop_str_in_output: the stop string is sent too.
  body["include_stop_str_in_output"] = true;
  const json with = json::parse(post(r, "/v1/completions", body)->body);
  EXPECT_EQ(with["choices"][0]["text"], asSent(raw.substr(0, raw.find(stop) + 1)));
  EXPECT_EQ(with["choices"][0]["stop_reason"], stop);
  EXPECT_EQ(postStream(r, "/v1/completions", body).text,
            asSent(raw.substr(0, raw.find(stop) + 1)));
  body.erase("include_stop_str_in_output");
  // echo puts the prompt first.
  body.erase("stop");
  body["echo"] = true;
  EXPECT_EQ(json::parse(post(r, "/v1/completions", body)->body)["choices"][0]["text"],
            asSent("Hello" + raw));
  // A seed reproduces a sampled answer.
  json sampled = {{"prompt", "Hi"}, {"max_tokens", 16}, {"seed", 7}, {"top_k", 50},
                  {"return_token_ids", true}};
  EXPECT_EQ(json::parse(post(r, "/v1/completions", sampled)->body)["choices"][0]["token_ids"],
            json::parse(post(r, "/v1/completions", sampled)->body)["choices"][0]["token_ids"]);
}

TEST(Server, ChatWithANamedTemplate) {
  server::ServerOptions o;
  o.chatTemplate = server::ChatTemplate::chatml;
  Running r(o);
  json body = {{"messages", {{{"role", "system"}, {"content", "Be brief."}},
                             {{"role", "user"}, {"content", "Hi"}}}},
               {"max_completion_tokens", 12}, {"temperature", 0}, {"return_token_ids", true}};
  auto res = post(r, "/v1/chat/completions", body);
  ASSERT_EQ(res->status, 200) << res->body;
  const json j = json::parse(res->body);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  // The prompt is the ChatML text in bytes (the byte tokenizer has no
  // special tokens), without BOS.
  const std::string prompt =
      "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
      "<|im_start|>assistant\n";
  EXPECT_EQ(j["usage"]["prompt_tokens"], int64_t(prompt.size()));
  const std::vector<int32_t> ids = j["choices"][0]["token_ids"];
  const std::vector<int32_t> want = model().alone(model().tok->encode(prompt, false), 12);
  EXPECT_TRUE(std::equal(ids.begin(), ids.end(), want.begin())) << "a prefix of the greedy run";
  const Stream s = postStream(r, "/v1/chat/completions", body);
  EXPECT_TRUE(s.done);
  EXPECT_EQ(s.text, j["choices"][0]["message"]["content"]);
  EXPECT_EQ(s.events[0]["object"], "chat.completion.chunk");
  EXPECT_EQ(s.events[0]["choices"][0]["delta"]["role"], "assistant");
}

namespace {

/// The types of a stream's events, in order.
std::vector<std::string> eventTypes(const Stream &s) {
  std::vector<std::string> types;
  for (const json &e : s.events) types.push_back(e["type"]);
  return types;
}

} // namespace

// /v1/responses: instructions and input are the chat's system and user
// messages; the answer, its usage and its end are chat's for the same
// prompt and seed; streamed, the typed events in order add up to the same
// text and end with the same response.
TEST(Server, ResponsesAnswerAsChatDoes) {
  server::ServerOptions o;
  o.chatTemplate = server::ChatTemplate::chatml;
  Running r(o);
  for (int maxTokens : {12, 60}) {
    SCOPED_TRACE(maxTokens);
    const json chatBody = {{"messages", {{{"role", "system"}, {"content", "Be brief."}},
                                         {{"role", "user"}, {"content", "Hi"}}}},
                           {"max_tokens", maxTokens}, {"temperature", 0}};
    const json body = {{"instructions", "Be brief."}, {"input", "Hi"},
                       {"max_output_tokens", maxTokens}, {"temperature", 0},
                       {"metadata", {{"case", "plain"}}}};
    auto c = post(r, "/v1/chat/completions", chatBody);
    auto res = post(r, "/v1/responses", body);
    ASSERT_EQ(res->status, 200) << res->body;
    const json chat = json::parse(c->body), j = json::parse(res->body);
    const bool cut = chat["choices"][0]["finish_reason"] == "length";
    EXPECT_EQ(j["object"], "response");
    EXPECT_EQ(j["id"].get<std::string>().rfind("resp_", 0), 0u);
    EXPECT_EQ(j["status"], cut ? "incomplete" : "completed");
    const json incomplete = cut ? json{{"reason", "max_output_tokens"}} : json(nullptr);
    EXPECT_EQ(j["incomplete_details"], incomplete);
    EXPECT_EQ(j["model"], "tiny-serve");
    EXPECT_EQ(j["instructions"], "Be brief.");
    EXPECT_EQ(j["max_output_tokens"], maxTokens);
    EXPECT_EQ(j["metadata"], json({{"case", "plain"}}));
    EXPECT_EQ(j["store"], false);
    EXPECT_EQ(j["tools"], json::array());
    ASSERT_EQ(j["output"].size(), 1u) << j;
    const json &msg = j["output"][0];
    EXPECT_EQ(msg["type"], "message");
    EXPECT_EQ(msg["role"], "assistant");
    EXPECT_EQ(msg["status"], cut ? "incomplete" : "completed");
    EXPECT_EQ(msg["content"][0]["type"], "output_text");
    EXPECT_EQ(msg["content"][0]["text"], chat["choices"][0]["message"]["content"]);
    EXPECT_EQ(j["usage"]["input_tokens"], chat["usage"]["prompt_tokens"]);
    EXPECT_EQ(j["usage"]["output_tokens"], chat["usage"]["completion_tokens"]);
    EXPECT_EQ(j["usage"]["total_tokens"], chat["usage"]["total_tokens"]);
    EXPECT_EQ(j["usage"]["output_tokens_details"]["reasoning_tokens"], 0);

    const Stream s = postStream(r, "/v1/responses", body);
    EXPECT_EQ(s.status, 200);
    EXPECT_FALSE(s.done) << "the Responses API's stream has no [DONE]";
    EXPECT_EQ(s.text, msg["content"][0]["text"]);
    const std::vector<std::string> types = eventTypes(s);
    ASSERT_GE(types.size(), 8u);
    const std::vector<std::string> head = {"response.created", "response.in_progress",
                                           "response.output_item.added",
                                           "response.content_part.added"};
    EXPECT_TRUE(std::equal(head.begin(), head.end(), types.begin()));
    const std::vector<std::string> tail = {"response.output_text.done",
                                           "response.content_part.done",
                                           "response.output_item.done",
                                           cut ? "response.incomplete" : "response.completed"};
    EXPECT_TRUE(std::equal(tail.begin(), tail.end(), types.end() - 4));
    for (size_t i = 4; i + 4 < types.size(); ++i)
      EXPECT_EQ(types[i], "response.output_text.delta");
    EXPECT_EQ(s.events[1]["response"]["status"], "in_progress");
    const json &last = s.events.back()["response"];
    json streamed = last["output"], whole = j["output"]; // their ids are their requests'
    streamed[0].erase("id");
    whole[0].erase("id");
    EXPECT_EQ(streamed, whole);
    EXPECT_EQ(last["usage"], j["usage"]);
    EXPECT_EQ(last["status"], j["status"]);
    EXPECT_EQ(s.events[types.size() - 4]["text"], msg["content"][0]["text"]);
  }
  // An answer that ends at once (the end-of-sequence id the only one
  // allowed) is completed, with an empty message all the same.
  const json eos = {{"input", "Hi"}, {"allowed_token_ids", {2}}};
  auto res = post(r, "/v1/responses", eos);
  ASSERT_EQ(res->status, 200) << res->body;
  const json j = json::parse(res->body);
  EXPECT_EQ(j["status"], "completed");
  EXPECT_TRUE(j["incomplete_details"].is_null());
  ASSERT_EQ(j["output"].size(), 1u);
  EXPECT_EQ(j["output"][0]["status"], "completed");
  EXPECT_EQ(j["output"][0]["content"][0]["text"], "");
  const Stream s = postStream(r, "/v1/responses", eos);
  const std::vector<std::string> types = eventTypes(s);
  const std::vector<std::string> want = {
      "response.created",          "response.in_progress",       "response.output_item.added",
      "response.content_part.added", "response.output_text.done", "response.content_part.done",
      "response.output_item.done", "response.completed"};
  EXPECT_EQ(types, want);
}

// usage's cached tokens: the prompt tokens the prefix cache held, whole
// pages of 4 of them, the prompt's last token always run again.
TEST(Server, UsageCountsThePromptTokensTheCacheHeld) {
  server::ServerOptions o;
  o.chatTemplate = server::ChatTemplate::chatml;
  Running r(o);
  const std::vector<int32_t> prompt = randomPrompt(30, 11);
  for (int64_t cached : {0, 28}) {
    auto res = post(r, "/v1/completions", completion(prompt, 2));
    ASSERT_EQ(res->status, 200) << res->body;
    EXPECT_EQ(json::parse(res->body)["usage"]["prompt_tokens_details"]["cached_tokens"], cached);
  }
  const json body = {{"input", "Tell me a story."}, {"max_output_tokens", 2}};
  const json first = json::parse(post(r, "/v1/responses", body)->body)["usage"];
  const json again = json::parse(post(r, "/v1/responses", body)->body)["usage"];
  EXPECT_EQ(first["input_tokens_details"]["cached_tokens"], 0);
  EXPECT_EQ(again["input_tokens_details"]["cached_tokens"],
            (first["input_tokens"].get<int64_t>() - 1) / 4 * 4);
  const json chat = {{"messages", {{{"role", "user"}, {"content", "Tell me a story."}}}},
                     {"max_tokens", 2},
                     {"stream_options", {{"include_usage", true}}}};
  const Stream s = postStream(r, "/v1/chat/completions", chat);
  EXPECT_EQ(s.events.back()["usage"]["prompt_tokens_details"]["cached_tokens"],
            (first["input_tokens"].get<int64_t>() - 1) / 4 * 4);
}

// Input items: messages with content parts, a function call and its output
// and a developer message make the prompt the chat messages make (counted
// by /tokenize); what kvplan serve does not do is refused by name.
TEST(Server, ResponsesInputItemsAndRefusals) {
  server::ServerOptions o;
  o.chatTemplate = server::ChatTemplate::chatml;
  Running r(o, longModel());
  const json tool = {{"type", "function"}, {"name", "get_time"},
                     {"parameters", {{"type", "object"}, {"properties", json::object()}}}};
  const json body = {
      {"input",
       {{{"role", "developer"}, {"content", "Use tools."}},
        {{"type", "message"}, {"role", "user"},
         {"content", {{{"type", "input_text"}, {"text", "Time "}},
                      {{"type", "input_text"}, {"text", "now?"}}}}},
        {{"type", "function_call"}, {"call_id", "call_1"}, {"name", "get_time"},
         {"arguments", "{}"}},
        {{"type", "function_call_output"}, {"call_id", "call_1"}, {"output", "noon"}},
        {{"role", "assistant"}, {"content", {{{"type", "output_text"}, {"text", "Noon."}}}}},
        {{"role", "user"}, {"content", "Thanks"}}}},
      {"tools", {tool}}, {"max_output_tokens", 1}};
  const json messages = {
      {{"role", "system"}, {"content", "Use tools."}},
      {{"role", "user"}, {"content", "Time now?"}},
      {{"role", "assistant"}, {"content", nullptr},
       {"tool_calls", {{{"id", "call_1"}, {"type", "function"},
                        {"function", {{"name", "get_time"}, {"arguments", "{}"}}}}}}},
      {{"role", "tool"}, {"tool_call_id", "call_1"}, {"content", "noon"}},
      {{"role", "assistant"}, {"content", "Noon."}},
      {{"role", "user"}, {"content", "Thanks"}}};
  const json chatTool = {{"type", "function"},
                         {"function", {{"name", "get_time"}, {"parameters", tool["parameters"]}}}};
  auto t = post(r, "/tokenize", json{{"messages", messages}, {"tools", {chatTool}}});
  ASSERT_EQ(t->status, 200) << t->body;
  auto res = post(r, "/v1/responses", body);
  ASSERT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(json::parse(res->body)["usage"]["input_tokens"], json::parse(t->body)["count"]);
  EXPECT_EQ(json::parse(res->body)["tools"], json::array({tool}));

  auto refused = [&](json b, const std::string &param, const std::string &words) {
    auto e = post(r, "/v1/responses", b);
    ASSERT_EQ(e->status, 400) << b;
    const json err = json::parse(e->body)["error"];
    EXPECT_EQ(err["param"], param) << err;
    EXPECT_NE(err["message"].get<std::string>().find(words), std::string::npos) << err;
  };
  json b = {{"input", "hi"}};
  refused(json::object(), "input", "input is required");
  refused({{"input", json::array()}}, "input", "a non-empty array");
  b["previous_response_id"] = "resp_1";
  refused(b, "previous_response_id", "send the whole conversation in input");
  refused({{"input", "hi"}, {"tools", {{{"type", "web_search"}}}}}, "tools",
          "calls functions only");
  refused({{"input", {{{"role", "user"}, {"content", {{{"type", "input_image"},
                                                      {"image_url", "x"}}}}}}}},
          "input", "input[0].content[0]: only text parts");
  refused({{"input", {{{"type", "item_reference"}, {"id", "msg_1"}}}}}, "input", "stores none");
  refused({{"input", "hi"}, {"tool_choice", "required"}}, "tool_choice", "needs tools");
  refused({{"input", "hi"}, {"tools", {tool}}, {"tool_choice", {{"type", "function"},
                                                                 {"name", "nope"}}}},
          "tool_choice", "names 'nope'");
  refused({{"input", "hi"}, {"text", {{"format", {{"type", "yaml"}}}}}}, "text",
          "text.format.type must be text, json_object or json_schema");
  refused({{"input", "hi"}, {"max_tokens", 5}}, "max_tokens", "use max_output_tokens");
  refused({{"input", "hi"}, {"max_output_tokens", 0}}, "max_output_tokens", "at least 1");
  refused({{"input", "hi"}, {"background", true}}, "background", "not supported");
  refused({{"input", "hi"}, {"include", {"message.output_text.logprobs"}}}, "include",
          "include \"message.output_text.logprobs\" is not offered");
  // As an agent sends a turn back with store false: its thought only
  // encrypted (nothing to give the model), then its call.
  json turn = body;
  const json encrypted = {{"type", "reasoning"}, {"id", "rs_1"}, {"summary", json::array()},
                          {"encrypted_content", "gAAAA"}};
  turn["input"].insert(turn["input"].begin() + 2, encrypted);
  turn["store"] = false;
  turn["include"] = {"reasoning.encrypted_content"};
  auto agent = post(r, "/v1/responses", turn);
  ASSERT_EQ(agent->status, 200) << agent->body;
  EXPECT_EQ(json::parse(agent->body)["usage"]["input_tokens"], json::parse(t->body)["count"]);
  for (const char *method : {"GET", "GET items", "DELETE"}) {
    SCOPED_TRACE(method);
    const std::string m = method;
    auto got = m == "DELETE"      ? r.client().Delete("/v1/responses/resp_1")
               : m == "GET items" ? r.client().Get("/v1/responses/resp_1/input_items")
                                  : r.client().Get("/v1/responses/resp_1");
    ASSERT_TRUE(got);
    EXPECT_EQ(got->status, 404);
    EXPECT_NE(json::parse(got->body)["error"]["message"].get<std::string>().find(
                  "no response 'resp_1': kvplan serve stores no responses"),
              std::string::npos)
        << got->body;
  }
  refused({{"input", std::string(1600, 'a')}}, "input", "leaves no room to generate");
  refused({{"input", "hi"}, {"max_output_tokens", 1536}}, "max_output_tokens",
          "max_output_tokens is 1536 and the prompt has");
  // Chat's names the length field the request gave.
  for (const char *field : {"max_tokens", "max_completion_tokens"}) {
    auto e = post(r, "/v1/chat/completions",
                  json{{"messages", {{{"role", "user"}, {"content", "hi"}}}}, {field, 1536}});
    ASSERT_EQ(e->status, 400);
    EXPECT_EQ(json::parse(e->body)["error"]["param"], field) << e->body;
  }
}

// A call forced by tool_choice is a function_call item, its arguments
// JSON its parameters accept; streamed, its arguments' events carry them.
TEST(Server, ResponsesCallFunctions) {
  server::ServerOptions o;
  o.chatTemplate = server::ChatTemplate::chatml;
  Running r(o, longModel());
  ojson body = {
      {"input", "Time in Paris?"}, {"max_output_tokens", 300}, {"temperature", 1.0},
      {"logit_bias", {{"37", 4}, {"128", 2}, {"35", -4}, {"13", -4}}},
      {"tools", ojson::parse(R"([{"type": "function", "name": "get_time", "parameters": {
        "type": "object", "properties": {"zone": {"type": "string", "maxLength": 6}},
        "required": ["zone"], "additionalProperties": false}}])")},
      {"tool_choice", "required"}};
  for (int seed : {1, 2}) {
    body["seed"] = seed;
    auto res = post(r, "/v1/responses", body);
    ASSERT_EQ(res->status, 200) << res->body;
    const json j = json::parse(res->body);
    ASSERT_EQ(j["output"].size(), 1u) << j;
    const json &call = j["output"][0];
    EXPECT_EQ(call["type"], "function_call");
    EXPECT_EQ(call["name"], "get_time");
    EXPECT_EQ(call["status"], "completed");
    EXPECT_EQ(call["call_id"].get<std::string>().rfind("call_", 0), 0u) << call;
    const json args = json::parse(call["arguments"].get<std::string>());
    EXPECT_TRUE(args["zone"].is_string()) << args;
    const Stream s = postStream(r, "/v1/responses", body);
    const std::vector<std::string> types = eventTypes(s);
    ASSERT_EQ(types.size(), 7u) << s.events.back();
    EXPECT_EQ(types[2], "response.output_item.added");
    EXPECT_EQ(s.events[2]["item"]["arguments"], "");
    EXPECT_EQ(types[3], "response.function_call_arguments.delta");
    EXPECT_EQ(types[4], "response.function_call_arguments.done");
    EXPECT_EQ(s.events[4]["arguments"], call["arguments"]);
    EXPECT_EQ(types[6], "response.completed");
    EXPECT_EQ(s.events[6]["response"]["output"][0]["arguments"], call["arguments"]);
  }
}

TEST(Server, TokenizeAndDetokenizeAsVllm) {
  server::ServerOptions o;
  o.chatTemplate = server::ChatTemplate::chatml;
  Running r(o);
  auto call = [&](const char *path, const json &body, int status = 200) {
    auto res = post(r, path, body);
    EXPECT_EQ(res->status, status) << body << " " << res->body;
    return json::parse(res->body);
  };
  // The byte tokenizer: BOS is 1, byte b is b + 3.
  std::vector<int32_t> hello = {1};
  for (char c : std::string("Hello")) hello.push_back(int32_t(c) + 3);
  json t = call("/tokenize", {{"prompt", "Hello"}});
  EXPECT_EQ(t["tokens"].get<std::vector<int32_t>>(), hello);
  EXPECT_EQ(t["count"], 6);
  EXPECT_EQ(t["max_model_len"], json::parse(r.client().Get("/v1/models")->body)["data"][0]
                                    ["max_model_len"]);
  EXPECT_TRUE(t["token_strs"].is_null());
  t = call("/tokenize", {{"model", "tiny-serve"}, {"prompt", "Hello"},
                         {"add_special_tokens", false}, {"return_token_strs", true}});
  EXPECT_EQ(t["tokens"].get<std::vector<int32_t>>(),
            std::vector<int32_t>(hello.begin() + 1, hello.end()));
  EXPECT_EQ(t["token_strs"], json({"H", "e", "l", "l", "o"}));
  EXPECT_EQ(call("/detokenize", {{"tokens", hello}})["prompt"], "Hello");
  const std::string utf8 = "h\xc3\xa9llo \xe2\x9c\x93";
  t = call("/tokenize", {{"prompt", utf8}, {"add_special_tokens", false}});
  EXPECT_EQ(t["count"], int64_t(utf8.size()));
  EXPECT_EQ(call("/detokenize", {{"tokens", t["tokens"]}})["prompt"], utf8);
  // Messages are rendered as chat completions render them: the ChatML text
  // in bytes, without BOS unless asked; the count is the chat's prompt_tokens.
  const json messages = {{{"role", "system"}, {"content", "Be brief."}},
                         {{"role", "user"}, {"content", "Hi"}}};
  const std::string chatml =
      "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
      "<|im_start|>assistant\n";
  t = call("/tokenize", {{"messages", messages}});
  EXPECT_EQ(t["count"], int64_t(chatml.size()));
  EXPECT_EQ(call("/detokenize", {{"tokens", t["tokens"]}})["prompt"], chatml);
  EXPECT_EQ(call("/v1/chat/completions", {{"messages", messages}, {"max_tokens", 1}})
                ["usage"]["prompt_tokens"], t["count"]);
  EXPECT_EQ(call("/tokenize", {{"messages", messages}, {"add_special_tokens", true}})["count"],
            int64_t(chatml.size()) + 1);
  // add_generation_prompt false: the prompt ends after the last message.
  const std::string header = "<|im_start|>assistant\n";
  t = call("/tokenize", {{"messages", messages}, {"add_generation_prompt", false}});
  EXPECT_EQ(call("/detokenize", {{"tokens", t["tokens"]}})["prompt"],
            chatml.substr(0, chatml.size() - header.size()));
  // continue_final_message: inside the answer the caller began, which the
  // model goes on with.
  json begun = messages;
  begun.push_back({{"role", "assistant"}, {"content", "Hel"}});
  t = call("/tokenize", {{"messages", begun}, {"continue_final_message", true}});
  EXPECT_EQ(call("/detokenize", {{"tokens", t["tokens"]}})["prompt"], chatml + "Hel");
  const json answer = call("/v1/chat/completions", {{"messages", begun},
                                                    {"continue_final_message", true},
                                                    {"add_generation_prompt", false},
                                                    {"max_tokens", 2}});
  EXPECT_EQ(answer["usage"]["prompt_tokens"], t["count"]);
  begun.back()["content"] = "";
  // What cannot be answered is refused by name.
  for (const auto &[path, body, param] : std::vector<std::tuple<const char *, json, const char *>>{
           {"/tokenize", json::object(), "messages"},
           {"/tokenize", {{"prompt", "a"}, {"messages", messages}}, "prompt"},
           {"/tokenize", {{"prompt", 5}}, "prompt"},
           {"/tokenize", {{"prompt", "a"}, {"model", "other"}}, "model"},
           {"/tokenize",
            {{"messages", messages}, {"add_generation_prompt", true},
             {"continue_final_message", true}},
            "continue_final_message"},
           {"/tokenize", {{"messages", messages}, {"add_generation_prompt", 0}},
            "add_generation_prompt"},
           {"/tokenize", {{"messages", begun}, {"continue_final_message", true}},
            "continue_final_message"},
           {"/v1/chat/completions", {{"messages", begun}, {"continue_final_message", true}},
            "continue_final_message"},
           {"/tokenize", {{"messages", {{{"role", "robot"}}}}}, "messages[0].role"},
           {"/detokenize", json::object(), "tokens"},
           {"/detokenize", {{"tokens", {-1}}}, "tokens"},
           {"/detokenize", {{"tokens", {5000}}}, "tokens"},
           {"/detokenize", {{"tokens", "abc"}}, "tokens"}})
    EXPECT_EQ(call(path, body, 400)["error"]["param"], param) << body;
}

namespace {

/// Each token's log-probability from the engine alone.
std::vector<double> logprobsAlone(const std::vector<int32_t> &prompt,
                                  const std::vector<int32_t> &tokens) {
  Engine e = model().engine();
  return kvplan::testing::logprobsAlone(e, prompt, tokens);
}

} // namespace

TEST(Server, CompletionLogprobsStreamedOrNot) {
  Running r;
  const std::vector<int32_t> prompt = randomPrompt(10, 4);
  json body = completion(prompt, 16);
  body["logprobs"] = 3;
  auto res = post(r, "/v1/completions", body);
  ASSERT_EQ(res->status, 200) << res->body;
  const json whole = json::parse(res->body);
  const json &c = whole["choices"][0];
  const std::vector<int32_t> ids = c["token_ids"];
  const json &lp = c["logprobs"];
  const std::vector<double> want = logprobsAlone(prompt, ids);
  ASSERT_EQ(lp["token_logprobs"].size(), 16u);
  ASSERT_EQ(lp["tokens"].size(), 16u);
  ASSERT_EQ(lp["top_logprobs"].size(), 16u);
  // text_offset: where in the answer's bytes the text each token completes
  // begins (a byte-fallback token that starts a character completes none).
  StreamDecoder completes(*model().tok);
  int64_t offset = 0;
  for (size_t i = 0; i < 16; ++i) {
    SCOPED_TRACE("token " + std::to_string(i));
    const double got = lp["token_logprobs"][i];
    EXPECT_NEAR(got, want[i], 1e-6);
    EXPECT_EQ(lp["tokens"][i], asSent(model().tok->decode({ids[i]})));
    // Greedy: the token drawn is the most likely of the (up to 4, texts
    // may coincide) listed with it.
    const json &top = lp["top_logprobs"][i];
    EXPECT_GE(top.size(), 1u);
    EXPECT_LE(top.size(), 4u);
    for (const auto &[text, value] : top.items()) EXPECT_LE(value.get<double>(), got + 1e-12);
    EXPECT_EQ(lp["text_offset"][i], offset);
    offset += int64_t(completes.push(ids[i]).size());
  }
  // Streamed: each token's chunk carries its own, the same.
  const Stream s = postStream(r, "/v1/completions", body);
  ASSERT_EQ(s.ids, ids);
  for (size_t i = 0; i < 16; ++i) {
    const json &chunk = s.events[i]["choices"][0]["logprobs"];
    ASSERT_EQ(chunk["token_logprobs"].size(), 1u) << s.events[i].dump();
    EXPECT_EQ(chunk["token_logprobs"][0], lp["token_logprobs"][i]);
    EXPECT_EQ(chunk["top_logprobs"][0], lp["top_logprobs"][i]);
    EXPECT_EQ(chunk["text_offset"][0], lp["text_offset"][i]);
  }
  EXPECT_TRUE(s.events[16]["choices"][0]["logprobs"].is_null()); // the finish chunk
  // Without logprobs, none.
  body.erase("logprobs");
  EXPECT_TRUE(json::parse(post(r, "/v1/completions", body)->body)["choices"][0]["logprobs"]
                  .is_null());
}

TEST(Server, EchoWithLogprobsScoresThePrompt) {
  // lm-evaluation-harness's log-likelihood request: the prompt as ids, echo,
  // logprobs, max_tokens 0. Each prompt token's value is its log-softmax
  // given the tokens before it, from the engine alone; the first has null.
  Running r;
  const std::vector<int32_t> prompt = randomPrompt(13, 9);
  json body = completion(prompt, 0);
  body["echo"] = true;
  body["logprobs"] = 2;
  auto res = post(r, "/v1/completions", body);
  ASSERT_EQ(res->status, 200) << res->body;
  const json whole = json::parse(res->body);
  const json &c = whole["choices"][0];
  EXPECT_EQ(c["text"], asSent(model().tok->decode(prompt)));
  EXPECT_EQ(c["finish_reason"], "length");
  EXPECT_EQ(whole["usage"]["completion_tokens"], 0);
  const json &lp = c["logprobs"];
  ASSERT_EQ(lp["tokens"].size(), prompt.size());
  EXPECT_TRUE(lp["token_logprobs"][0].is_null());
  EXPECT_TRUE(lp["top_logprobs"][0].is_null());
  const std::vector<int32_t> rest(prompt.begin() + 1, prompt.end());
  const std::vector<double> want = logprobsAlone({prompt[0]}, rest);
  StreamDecoder pieces(*model().tok);
  int64_t offset = 0;
  for (size_t i = 0; i < prompt.size(); ++i) {
    SCOPED_TRACE("prompt token " + std::to_string(i));
    EXPECT_EQ(lp["tokens"][i], asSent(model().tok->decode({prompt[i]})));
    EXPECT_EQ(lp["text_offset"][i], offset);
    offset += int64_t(pieces.push(prompt[i]).size());
    if (i == 0) continue;
    const double got = lp["token_logprobs"][i];
    EXPECT_NEAR(got, want[i - 1], 1e-6);
    EXPECT_GE(lp["top_logprobs"][i].size(), 1u); // the two most likely and the token
    EXPECT_LE(lp["top_logprobs"][i].size(), 3u);
  }
  // With new tokens, theirs follow the prompt's, offsets after the echo;
  // streamed, the echo's chunk carries the prompt's and each token's its own.
  body["max_tokens"] = 4;
  const json more = json::parse(post(r, "/v1/completions", body)->body)["choices"][0];
  const std::vector<int32_t> ids = more["token_ids"];
  ASSERT_EQ(ids.size(), 4u);
  ASSERT_EQ(more["logprobs"]["tokens"].size(), prompt.size() + 4);
  const std::vector<double> after = logprobsAlone(prompt, ids);
  for (size_t i = 0; i < prompt.size(); ++i)
    EXPECT_EQ(more["logprobs"]["token_logprobs"][i], lp["token_logprobs"][i]);
  for (size_t i = 0; i < 4; ++i) {
    const double got = more["logprobs"]["token_logprobs"][prompt.size() + i];
    EXPECT_NEAR(got, after[i], 1e-6);
  }
  EXPECT_EQ(more["logprobs"]["text_offset"][prompt.size()],
            int64_t(model().tok->decode(prompt).size()));
  const Stream st = postStream(r, "/v1/completions", body);
  ASSERT_EQ(st.ids, ids);
  const json &echoed = st.events[0]["choices"][0];
  EXPECT_EQ(echoed["text"], c["text"]);
  EXPECT_EQ(echoed["logprobs"], lp);
  for (size_t i = 0; i < 4; ++i)
    EXPECT_EQ(st.events[1 + i]["choices"][0]["logprobs"]["token_logprobs"][0],
              more["logprobs"]["token_logprobs"][prompt.size() + i]);
  // max_tokens 0 without echo and logprobs generates nothing: refused.
  body.erase("echo");
  body["max_tokens"] = 0;
  res = post(r, "/v1/completions", body);
  EXPECT_EQ(res->status, 400);
  EXPECT_EQ(json::parse(res->body)["error"]["param"], "max_tokens");
}

// vLLM's prompt_logprobs: each choice carries, for each prompt token after
// the first, its log-probability and rank and the N most likely tokens',
// each against a row the engine computes alone (the prompt's first i
// tokens prefilled); chat carries them once, beside the choices.
TEST(Server, PromptLogprobsAsVllm) {
  Running r;
  const std::vector<int32_t> prompt = randomPrompt(13, 9);
  json body = completion(prompt, 0); // max_tokens 0: the prompt's alone
  body["prompt_logprobs"] = 2;
  auto res = post(r, "/v1/completions", body);
  ASSERT_EQ(res->status, 200) << res->body;
  const json c = json::parse(res->body)["choices"][0];
  const json &pl = c["prompt_logprobs"];
  ASSERT_EQ(pl.size(), prompt.size());
  EXPECT_TRUE(pl[0].is_null());
  Engine e = model().engine();
  const int64_t vocab = e.vocabSize();
  for (size_t i = 1; i < prompt.size(); ++i) {
    SCOPED_TRACE("prompt token " + std::to_string(i));
    const int seq = e.open();
    const float *l = e.prefill(seq, prompt.data(), int64_t(i));
    std::vector<double> row(l, l + vocab);
    e.close(seq);
    double logZ = 0, best = *std::max_element(row.begin(), row.end());
    for (double x : row) logZ += std::exp(x - best);
    logZ = best + std::log(logZ);
    std::vector<int32_t> order(static_cast<size_t>(vocab));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int32_t a, int32_t b) { return row[size_t(a)] > row[size_t(b)]; });
    const int32_t t = prompt[i];
    int64_t rank = 1;
    for (double x : row) rank += x > row[size_t(t)];
    const json &m = pl[i];
    ASSERT_TRUE(m.contains(std::to_string(t))) << m.dump();
    const json &mine = m[std::to_string(t)];
    EXPECT_NEAR(mine["logprob"].get<double>(), row[size_t(t)] - logZ, 1e-5);
    EXPECT_EQ(mine["rank"], rank);
    EXPECT_EQ(mine["decoded_token"], asSent(model().tok->decode({t})));
    EXPECT_EQ(m.size(), rank <= 2 ? 2u : 3u) << m.dump();
    for (int k = 0; k < 2; ++k) {
      const json &alt = m[std::to_string(order[size_t(k)])];
      EXPECT_NEAR(alt["logprob"].get<double>(), row[size_t(order[size_t(k)])] - logZ, 1e-5);
      EXPECT_EQ(alt["rank"], k + 1);
    }
  }
  // With echo and logprobs 1 too: each list is cut to its own length.
  body["echo"] = true;
  body["logprobs"] = 1;
  body["prompt_logprobs"] = 3;
  body["max_tokens"] = 2;
  const json both = json::parse(post(r, "/v1/completions", body)->body)["choices"][0];
  for (size_t i = 1; i < prompt.size(); ++i) {
    EXPECT_LE(both["logprobs"]["top_logprobs"][i].size(), 2u);
    EXPECT_GE(both["prompt_logprobs"][i].size(), 3u);
  }
  // Streamed: the choice's first chunk carries them.
  body.erase("echo");
  body.erase("logprobs");
  body["prompt_logprobs"] = 2;
  const Stream st = postStream(r, "/v1/completions", body);
  EXPECT_EQ(st.events.at(0)["choices"][0]["prompt_logprobs"], pl);
  // Chat: once, beside the choices, as long as the rendered prompt.
  server::ServerOptions o;
  o.chatTemplate = server::ChatTemplate::chatml;
  Running chat(o);
  json ask = {{"messages", {{{"role", "user"}, {"content", "Hi"}}}},
              {"max_completion_tokens", 2}, {"prompt_logprobs", 0}};
  res = post(chat, "/v1/chat/completions", ask);
  ASSERT_EQ(res->status, 200) << res->body;
  const json j = json::parse(res->body);
  EXPECT_EQ(j["prompt_logprobs"].size(), j["usage"]["prompt_tokens"].get<size_t>());
  EXPECT_FALSE(j["choices"][0].contains("prompt_logprobs"));
  for (const char *bad : {"21", "-1", "\"2\"", "1.5"}) {
    res = post(r, "/v1/completions", json::parse(R"({"prompt": "a", "prompt_logprobs": )" +
                                                 std::string(bad) + "}"));
    EXPECT_EQ(res->status, 400) << bad;
    EXPECT_EQ(json::parse(res->body)["error"]["param"], "prompt_logprobs") << bad;
  }
}

TEST(Server, JsonModeAnswersOneObject) {
  // response_format json_object: the answer parses as one JSON object and
  // ends as it closes ("stop"), streamed or not. The random model would
  // write anything: the mask holds it to JSON, and biases (byte b is token
  // b + 3: quotes and closing brackets up, spaces and newlines down) make
  // it write keys and close soon.
  Running r;
  json body = {{"prompt", "Data: "}, {"max_tokens", 150}, {"temperature", 1.0}, {"seed", 6},
               {"response_format", {{"type", "json_object"}}},
               {"logit_bias", {{"37", 4}, {"128", 2}, {"96", 2}, {"35", -4}, {"13", -4}}}};
  auto res = post(r, "/v1/completions", body);
  ASSERT_EQ(res->status, 200) << res->body;
  const json c = json::parse(res->body)["choices"][0];
  const std::string text = c["text"];
  EXPECT_EQ(c["finish_reason"], "stop") << text;
  EXPECT_TRUE(json::accept(text)) << text;
  EXPECT_TRUE(json::parse(text).is_object()) << text;
  EXPECT_GE(json::parse(text).size(), 1u) << text << ": an object with members";
  EXPECT_EQ(text.back(), '}') << "nothing after the object";
  EXPECT_EQ(postStream(r, "/v1/completions", body).text, text);
  // Without it the same request is not JSON.
  body.erase("response_format");
  EXPECT_FALSE(json::accept(json::parse(post(r, "/v1/completions", body)->body)["choices"][0]
                                ["text"].get<std::string>()));
}

TEST(Server, ToolChoiceRequiredAnswersWithACallOfATool) {
  // tool_choice required (or a named tool): the answer is one call, of a
  // tool given, its arguments JSON that its parameters accept; streamed
  // as one tool_calls delta. The model is random: the call's schema holds
  // it, and biases (quotes up, spaces down) make it finish soon.
  server::ServerOptions o;
  o.chatTemplate = server::ChatTemplate::chatml;
  Running r(o, longModel());
  ojson body = {
      {"messages", {{{"role", "user"}, {"content", "Weather in Paris?"}}}},
      {"max_tokens", 300}, {"temperature", 1.0},
      {"logit_bias", {{"37", 4}, {"128", 2}, {"35", -4}, {"13", -4}}},
      {"tools", ojson::parse(R"([
        {"type": "function", "function": {"name": "get_weather", "parameters": {
          "type": "object", "properties": {"city": {"type": "string", "maxLength": 10},
                                           "unit": {"enum": ["c", "f"]}},
          "required": ["city", "unit"], "additionalProperties": false}}},
        {"type": "function", "function": {"name": "get_time", "description": "Now",
          "parameters": {"type": "object", "properties": {"zone": {"type": "string",
                         "maxLength": 6}}, "required": ["zone"]}}}])")},
      {"tool_choice", "required"}};
  auto checkCall = [](const json &call, const std::string &name) {
    EXPECT_EQ(call["type"], "function");
    EXPECT_EQ(call["id"].get<std::string>().rfind("call_", 0), 0u) << call;
    if (!name.empty()) {
      EXPECT_EQ(call["function"]["name"], name);
    }
    const json args = json::parse(call["function"]["arguments"].get<std::string>());
    if (call["function"]["name"] == "get_weather") {
      EXPECT_EQ(args.size(), 2u) << args;
      EXPECT_LE(args["city"].get<std::string>().size(), 40u) << args; // 10 characters of UTF-8
      EXPECT_TRUE(args["unit"] == "c" || args["unit"] == "f") << args;
    } else {
      EXPECT_EQ(call["function"]["name"], "get_time");
      EXPECT_TRUE(args["zone"].is_string()) << args;
    }
  };
  for (const std::string &named : {std::string(), std::string("get_time")}) {
    if (!named.empty())
      body["tool_choice"] = {{"type", "function"}, {"function", {{"name", named}}}};
    for (int seed : {1, 2}) {
      body["seed"] = seed;
      auto res = post(r, "/v1/chat/completions", body);
      ASSERT_EQ(res->status, 200) << res->body;
      const json c = json::parse(res->body)["choices"][0];
      EXPECT_EQ(c["finish_reason"], "tool_calls") << c;
      EXPECT_TRUE(c["message"]["content"].is_null()) << c;
      ASSERT_EQ(c["message"]["tool_calls"].size(), 1u) << c;
      checkCall(c["message"]["tool_calls"][0], named);
      const Stream s = postStream(r, "/v1/chat/completions", body);
      EXPECT_TRUE(s.done);
      EXPECT_EQ(s.text, "");
      ASSERT_GE(s.events.size(), 2u);
      const json delta = s.events[s.events.size() - 2]["choices"][0]["delta"];
      ASSERT_EQ(delta["tool_calls"].size(), 1u) << delta;
      EXPECT_EQ(delta["tool_calls"][0]["index"], 0);
      EXPECT_EQ(delta["tool_calls"][0]["function"], c["message"]["tool_calls"][0]["function"]);
      EXPECT_EQ(s.events.back()["choices"][0]["finish_reason"], "tool_calls");
    }
  }
  // Mistral's template: the call forced after its [TOOL_CALLS] marker and
  // " [", read as the one object; its id 9 letters or digits, which the
  // template takes back.
  {
    server::ServerOptions mo;
    mo.chatTemplate = server::ChatTemplate::mistral;
    Running mistral(mo, longModel());
    body["tool_choice"] = "required";
    body["seed"] = 3;
    auto res = post(mistral, "/v1/chat/completions", body);
    ASSERT_EQ(res->status, 200) << res->body;
    const json c = json::parse(res->body)["choices"][0];
    EXPECT_EQ(c["finish_reason"], "tool_calls") << c;
    ASSERT_EQ(c["message"]["tool_calls"].size(), 1u) << c;
    const json call = c["message"]["tool_calls"][0];
    const std::string id = call["id"];
    EXPECT_EQ(id.size(), 9u) << call;
    EXPECT_TRUE(json::parse(call["function"]["arguments"].get<std::string>()).is_object()) << call;
    // The call and a result sent back render (the id as the template wants it).
    ojson next = body;
    next["tool_choice"] = "auto";
    next["max_tokens"] = 2;
    next["messages"].push_back({{"role", "assistant"}, {"content", nullptr},
                                {"tool_calls", ojson::array({ojson::parse(call.dump())})}});
    next["messages"].push_back({{"role", "tool"}, {"tool_call_id", id}, {"content", "18"}});
    const auto again = post(mistral, "/v1/chat/completions", next);
    EXPECT_EQ(again->status, 200) << again->body;
  }
  // tool_choice none: an answer of text, from a prompt without the tools.
  body["tool_choice"] = "none";
  const json none = json::parse(post(r, "/v1/chat/completions", body)->body);
  EXPECT_TRUE(none["choices"][0]["message"]["content"].is_string()) << none;
  EXPECT_FALSE(none["choices"][0]["message"].contains("tool_calls"));
  const std::string plain = "<|im_start|>user\nWeather in Paris?<|im_end|>\n"
                            "<|im_start|>assistant\n";
  EXPECT_EQ(none["usage"]["prompt_tokens"], int64_t(plain.size()));
  // Refused by name: a parameters keyword a forced call cannot be held to,
  // tools under a template without a tool format.
  body["tool_choice"] = "required";
  body["tools"][0]["function"]["parameters"]["properties"]["city"]["pattern"] = "^(?=[A-Z])";
  auto res = post(r, "/v1/chat/completions", body);
  EXPECT_EQ(res->status, 400);
  EXPECT_EQ(json::parse(res->body)["error"]["param"], "tools") << res->body;
  server::ServerOptions l2;
  l2.chatTemplate = server::ChatTemplate::llama2;
  Running llama2(l2, longModel());
  res = post(llama2, "/v1/chat/completions", body);
  EXPECT_EQ(res->status, 400);
  EXPECT_EQ(json::parse(res->body)["error"]["param"], "tools") << res->body;
}

TEST(Server, JsonSchemaAnswersMeetTheSchema) {
  // response_format json_schema: the answer is an object with the schema's
  // properties in its order, of its types, within its limits and patterns;
  // streamed the same. Biases as above (and commas up) make the random
  // model finish.
  Running r;
  const char *schema = R"({"type": "object", "properties": {
      "name": {"type": "string", "maxLength": 8, "pattern": "^[a-z]+$"},
      "n": {"type": "integer", "minimum": -5, "maximum": 50},
      "tags": {"type": "array", "items": {"enum": ["x", "y z", 7]}, "maxItems": 3},
      "ok": {"type": "boolean"}},
    "required": ["name", "n", "ok"], "additionalProperties": false})";
  ojson body = {{"prompt", "Data: "}, {"max_tokens", 150}, {"temperature", 1.0},
                {"logit_bias", {{"37", 4}, {"128", 2}, {"96", 2}, {"47", 2}, {"35", -4},
                                {"13", -4}}},
                {"response_format", {{"type", "json_schema"},
                                     {"json_schema", {{"name", "thing"}, {"strict", true},
                                                      {"schema", ojson::parse(schema)}}}}}};
  const uint64_t compiledBefore = JsonSchema::cacheHits();
  for (int seed : {1, 2, 3}) {
    body["seed"] = seed;
    auto res = post(r, "/v1/completions", body);
    ASSERT_EQ(res->status, 200) << res->body;
    const json c = json::parse(res->body)["choices"][0];
    const std::string text = c["text"];
    EXPECT_EQ(c["finish_reason"], "stop") << text;
    ASSERT_TRUE(ojson::accept(text)) << text;
    const ojson got = ojson::parse(text);
    std::vector<std::string> keys;
    for (const auto &[k, v] : got.items()) keys.push_back(k);
    const bool tagged = got.contains("tags");
    const std::vector<std::string> order =
        tagged ? std::vector<std::string>{"name", "n", "tags", "ok"}
               : std::vector<std::string>{"name", "n", "ok"};
    EXPECT_EQ(keys, order) << text;
    EXPECT_TRUE(got["name"].is_string() && got["name"].get<std::string>().size() <= 8) << text;
    EXPECT_TRUE(std::regex_match(got["name"].get<std::string>(), std::regex("[a-z]+"))) << text;
    EXPECT_TRUE(got["n"].is_number_integer() && got["n"] >= -5 && got["n"] <= 50) << text;
    EXPECT_TRUE(got["ok"].is_boolean()) << text;
    if (tagged) {
      EXPECT_LE(got["tags"].size(), 3u) << text;
      for (const auto &t : got["tags"])
        EXPECT_TRUE(t == "x" || t == "y z" || t == 7) << text;
    }
    EXPECT_EQ(postStream(r, "/v1/completions", body).text, text);
  }
  // The schema was compiled for the first request, and found for the other
  // five (the seed is no part of it).
  EXPECT_GE(JsonSchema::cacheHits(), compiledBefore + 5);
  // A keyword it cannot hold generation to is refused by its path.
  body["response_format"]["json_schema"]["schema"]["properties"]["name"]["pattern"] = "(a)\\1";
  auto res = post(r, "/v1/completions", body);
  EXPECT_EQ(res->status, 400);
  const json error = json::parse(res->body)["error"];
  EXPECT_EQ(error["param"], "response_format");
  EXPECT_NE(error["message"].get<std::string>().find(
                "response_format.json_schema.schema.properties.name.pattern"),
            std::string::npos)
      << error;
}

TEST(Server, PenaltiesAndLogitBiasReachTheSampler) {
  Running r;
  const std::vector<int32_t> prompt = randomPrompt(8, 6);
  json body = completion(prompt, 12);
  body["logit_bias"] = {{"77", 100}};
  auto res = post(r, "/v1/completions", body);
  ASSERT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(json::parse(res->body)["choices"][0]["token_ids"].get<std::vector<int32_t>>(),
            std::vector<int32_t>(12, 77));
  body.erase("logit_bias");
  body["repetition_penalty"] = 1.4;
  body["frequency_penalty"] = 0.7;
  SamplingOptions o;
  o.repetitionPenalty = 1.4;
  o.frequencyPenalty = 0.7;
  Engine alone = model().engine();
  const json got = json::parse(post(r, "/v1/completions", body)->body);
  EXPECT_EQ(got["choices"][0]["token_ids"].get<std::vector<int32_t>>(),
            kvplan::testing::penalisedAlone(alone, prompt, 12, o));
}

TEST(Server, MinPMinTokensAllowedAndStopTokenIdsReachTheScheduler) {
  Running r;
  const std::vector<int32_t> prompt = randomPrompt(9, 11);
  const std::vector<int32_t> greedy = model().alone(prompt, 12);
  auto ids = [&](const json &body) {
    auto res = post(r, "/v1/completions", body);
    EXPECT_EQ(res->status, 200) << res->body;
    return json::parse(res->body)["choices"][0];
  };
  // min_p 1 keeps only the likeliest token: at temperature 2 the answer is
  // greedy's, which without it (same seeds) it is not.
  json hot = completion(prompt, 12);
  hot["temperature"] = 2.0;
  int differ = 0;
  for (int seed = 0; seed < 3; ++seed) {
    hot["seed"] = seed;
    hot.erase("min_p");
    differ += ids(hot)["token_ids"].get<std::vector<int32_t>>() != greedy;
    hot["min_p"] = 1;
    EXPECT_EQ(ids(hot)["token_ids"].get<std::vector<int32_t>>(), greedy) << "seed " << seed;
  }
  EXPECT_GT(differ, 0) << "temperature 2 alone drew greedy's answer three times";
  // stop_token_ids end the answer (the id unsent), also with ignore_eos,
  // and stop_reason names the id; max_tokens' end has none.
  json body = completion(prompt, 12);
  EXPECT_TRUE(ids(body)["stop_reason"].is_null());
  body["stop_token_ids"] = {greedy[1]};
  const json cut = ids(body);
  EXPECT_EQ(cut["token_ids"].get<std::vector<int32_t>>(), std::vector<int32_t>{greedy[0]});
  EXPECT_EQ(cut["finish_reason"], "stop");
  EXPECT_EQ(cut["stop_reason"], greedy[1]);
  EXPECT_EQ(cut["text"], asSent(model().tok->decode({greedy[0]})));
  // include_stop_str_in_output sends the stop id's text (not its id).
  body["include_stop_str_in_output"] = true;
  const json sent = ids(body);
  EXPECT_EQ(sent["text"], asSent(model().tok->decode({greedy[0], greedy[1]})));
  EXPECT_EQ(sent["token_ids"].get<std::vector<int32_t>>(), std::vector<int32_t>{greedy[0]});
  EXPECT_EQ(sent["stop_reason"], greedy[1]);
  body.erase("include_stop_str_in_output");
  // min_tokens: the stop id is not drawn before 4 tokens.
  body["min_tokens"] = 4;
  const std::vector<int32_t> least = ids(body)["token_ids"].get<std::vector<int32_t>>();
  EXPECT_GE(least.size(), 4u);
  EXPECT_EQ(std::count(least.begin(), least.end(), greedy[1]), 0);
  // Streamed, the finish chunk carries the stop_reason.
  body.erase("min_tokens");
  const Stream st = postStream(r, "/v1/completions", body);
  EXPECT_EQ(st.events.back()["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(st.events.back()["choices"][0]["stop_reason"], greedy[1]);
  // allowed_token_ids: one id, and greedy draws nothing else; two at a
  // temperature, and only they come.
  json allowed = completion(prompt, 12);
  allowed["allowed_token_ids"] = {greedy[2]};
  EXPECT_EQ(ids(allowed)["token_ids"].get<std::vector<int32_t>>(),
            std::vector<int32_t>(12, greedy[2]));
  allowed["allowed_token_ids"] = {greedy[2], 77};
  allowed["temperature"] = 1.5;
  allowed["seed"] = 3;
  const std::vector<int32_t> two = ids(allowed)["token_ids"].get<std::vector<int32_t>>();
  EXPECT_EQ(two.size(), 12u);
  for (int32_t t : two) EXPECT_TRUE(t == greedy[2] || t == 77) << t;
  // What cannot be served is refused by name.
  for (const auto &[field, bad] : std::vector<std::pair<std::string, json>>{
           {"min_p", 1.5}, {"min_p", -0.1}, {"min_p", "high"}, {"min_tokens", -1},
           {"min_tokens", 13}, {"stop_token_ids", 7}, {"stop_token_ids", {-1}},
           {"stop_token_ids", {5000}}, {"stop_token_ids", {"a"}},
           {"allowed_token_ids", json::array()}, {"allowed_token_ids", {5000}},
           {"allowed_token_ids", "a"}}) {
    json b = completion(prompt, 12);
    b[field] = bad;
    auto res = post(r, "/v1/completions", b);
    EXPECT_EQ(res->status, 400) << field << " " << bad;
    EXPECT_EQ(json::parse(res->body)["error"]["param"], field) << res->body;
  }
  for (const auto &[field, value] :
       std::vector<std::pair<std::string, json>>{{"min_tokens", 2}, {"allowed_token_ids", {5}}}) {
    json jsonMode = completion(prompt, 12);
    jsonMode[field] = value;
    jsonMode["response_format"] = {{"type", "json_object"}};
    auto res = post(r, "/v1/completions", jsonMode);
    EXPECT_EQ(res->status, 400) << res->body;
    EXPECT_EQ(json::parse(res->body)["error"]["param"], field) << res->body;
  }
}

TEST(Server, SeveralChoicesAreEachTheirOwnGeneration) {
  Running r;
  const std::vector<int32_t> prompt = randomPrompt(7, 8);
  // Sampled with a seed: choice i is the request with seed + i.
  json body = completion(prompt, 10);
  body["temperature"] = 1.0;
  body["seed"] = 40;
  body["n"] = 3;
  body["best_of"] = 3;
  auto res = post(r, "/v1/completions", body);
  ASSERT_EQ(res->status, 200) << res->body;
  const json whole = json::parse(res->body);
  ASSERT_EQ(whole["choices"].size(), 3u);
  EXPECT_EQ(whole["usage"]["prompt_tokens"], 7);
  EXPECT_EQ(whole["usage"]["completion_tokens"], 30);
  std::set<std::vector<int32_t>> distinct;
  for (int i = 0; i < 3; ++i) {
    const json &c = whole["choices"][size_t(i)];
    EXPECT_EQ(c["index"], i);
    json one = body;
    one.erase("n");
    one.erase("best_of");
    one["seed"] = 40 + i;
    const json alone = json::parse(post(r, "/v1/completions", one)->body)["choices"][0];
    EXPECT_EQ(c["token_ids"], alone["token_ids"]) << "choice " << i;
    EXPECT_EQ(c["text"], alone["text"]);
    distinct.insert(c["token_ids"].get<std::vector<int32_t>>());
  }
  EXPECT_GT(distinct.size(), 1u) << "seeds 40, 41 and 42 draw differently";
  // Streamed: each chunk names its choice; each choice's ids and text are
  // the whole answer's, each ends with its own finish chunk, then one usage
  // chunk and one [DONE].
  body["stream_options"] = {{"include_usage", true}};
  const Stream st = postStream(r, "/v1/completions", body);
  EXPECT_TRUE(st.done);
  std::vector<std::vector<int32_t>> ids(3);
  std::vector<std::string> texts(3);
  std::vector<int> finishes(3);
  for (const json &e : st.events) {
    if (e["choices"].empty()) continue;
    const json &c = e["choices"][0];
    const size_t i = c["index"].get<size_t>();
    ASSERT_LT(i, 3u);
    for (const json &id : c["token_ids"]) ids[i].push_back(id.get<int32_t>());
    texts[i] += c["text"].get<std::string>();
    EXPECT_EQ(finishes[i], 0) << "a chunk after choice " << i << " finished";
    finishes[i] += !c["finish_reason"].is_null();
  }
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(ids[i], whole["choices"][i]["token_ids"].get<std::vector<int32_t>>());
    EXPECT_EQ(texts[i], whole["choices"][i]["text"]);
    EXPECT_EQ(finishes[i], 1);
  }
  EXPECT_EQ(st.events.back()["usage"]["completion_tokens"], 30);
  // Greedy: every choice is the greedy answer.
  json greedy = completion(prompt, 6);
  greedy["n"] = 2;
  const json g = json::parse(post(r, "/v1/completions", greedy)->body);
  const std::vector<int32_t> want = model().alone(prompt, 6);
  for (size_t i = 0; i < 2; ++i)
    EXPECT_EQ(g["choices"][i]["token_ids"].get<std::vector<int32_t>>(), want);
}

TEST(Server, MoreChoicesThanTheQueueHoldsGet503) {
  server::ServerOptions o;
  o.maxQueue = 2;
  Running r(o);
  json body = completion(randomPrompt(4, 9), 3);
  body["n"] = 3;
  auto res = post(r, "/v1/completions", body);
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 503) << res->body;
  body["n"] = 2;
  EXPECT_EQ(post(r, "/v1/completions", body)->status, 200);
}

TEST(Server, ChatLogprobsListTheMostLikelyTokens) {
  server::ServerOptions o;
  o.chatTemplate = server::ChatTemplate::chatml;
  Running r(o);
  json body = {{"messages", {{{"role", "user"}, {"content", "Hi"}}}},
               {"max_completion_tokens", 8}, {"temperature", 0}, {"ignore_eos", true},
               {"return_token_ids", true}, {"logprobs", true}, {"top_logprobs", 2}};
  auto res = post(r, "/v1/chat/completions", body);
  ASSERT_EQ(res->status, 200) << res->body;
  const json whole = json::parse(res->body);
  const json &c = whole["choices"][0];
  const std::vector<int32_t> ids = c["token_ids"];
  const json &content = c["logprobs"]["content"];
  ASSERT_EQ(content.size(), ids.size());
  const std::vector<int32_t> prompt = model().tok->encode(
      "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", false);
  const std::vector<double> want = logprobsAlone(prompt, ids);
  for (size_t i = 0; i < ids.size(); ++i) {
    SCOPED_TRACE("token " + std::to_string(i));
    const json &t = content[i];
    const std::string text = model().tok->decode({ids[i]});
    EXPECT_NEAR(t["logprob"].get<double>(), want[i], 1e-6);
    std::vector<int> bytes;
    for (unsigned char b : text) bytes.push_back(b);
    EXPECT_EQ(t["bytes"].get<std::vector<int>>(), bytes);
    ASSERT_EQ(t["top_logprobs"].size(), 2u);
    EXPECT_EQ(t["top_logprobs"][0]["logprob"], t["logprob"]); // greedy: the most likely
    EXPECT_GE(t["top_logprobs"][0]["logprob"].get<double>(),
              t["top_logprobs"][1]["logprob"].get<double>());
  }
  const Stream s = postStream(r, "/v1/chat/completions", body);
  for (size_t i = 0; i < ids.size(); ++i)
    EXPECT_EQ(s.events[i]["choices"][0]["logprobs"]["content"][0], content[i]);
}

TEST(Server, ErrorsNameTheField) {
  server::ServerOptions o;
  o.maxBodyBytes = 4096;
  Running r(o);
  auto expectError = [&](const std::string &path, const std::string &body, int status,
                         const char *param) {
    auto res = r.client().Post(path.c_str(), body, "application/json");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, status) << body;
    const json e = json::parse(res->body)["error"];
    EXPECT_TRUE(e["message"].is_string());
    EXPECT_EQ(e["type"], "invalid_request_error");
    if (param)
      EXPECT_EQ(e["param"], param) << e.dump();
    else
      EXPECT_TRUE(e["param"].is_null()) << e.dump();
  };
  const std::string c = "/v1/completions";
  expectError(c, "{not json", 400, nullptr);
  expectError(c, "[1]", 400, nullptr);
  expectError(c, R"({"max_tokens": 3})", 400, "prompt");
  expectError(c, R"({"prompt": 5})", 400, "prompt");
  expectError(c, R"({"prompt": "a", "temperature": "hot"})", 400, "temperature");
  expectError(c, R"({"prompt": "a", "temperature": 2.5})", 400, "temperature");
  expectError(c, R"({"prompt": "a", "top_p": 0})", 400, "top_p");
  expectError(c, R"({"prompt": "a", "top_k": -2})", 400, "top_k");
  expectError(c, R"({"prompt": "a", "max_tokens": 0})", 400, "max_tokens");
  expectError(c, R"({"prompt": "a", "max_tokens": 1.5})", 400, "max_tokens");
  expectError(c, R"({"prompt": "a", "n": 0})", 400, "n");
  expectError(c, R"({"prompt": "a", "n": 129})", 400, "n");
  expectError(c, R"({"prompt": "a", "n": 2, "best_of": 3})", 400, "best_of");
  expectError(c, R"({"prompt": "a", "logprobs": 21})", 400, "logprobs");
  expectError(c, R"({"prompt": "a", "logit_bias": {"300": 5}})", 400, "logit_bias");
  expectError(c, R"({"prompt": "a", "stop": [1]})", 400, "stop");
  expectError(c, R"({"prompt": "a", "stop": ["a","b","c","d","e"]})", 400, "stop");
  expectError(c, R"({"prompt": "a", "stream": "yes"})", 400, "stream");
  // vLLM's and llama.cpp's fields kvplan does not offer: refused when they
  // ask for something, accepted at their neutral values.
  expectError(c, R"({"prompt": "a", "skip_special_tokens": false})", 400, "skip_special_tokens");
  expectError(c, R"({"prompt": "a", "include_stop_str_in_output": 1})", 400,
              "include_stop_str_in_output");
  expectError(c, R"({"prompt": "a", "guided_json": {"type": "object"}})", 400, "guided_json");
  expectError(c, R"({"prompt": "a", "bad_words": 3})", 400, "bad_words");
  expectError(c, R"({"prompt": "a", "bad_words": [" "]})", 400, "bad_words");
  expectError(c, R"({"prompt": "a", "bad_words": ["x"], "allowed_token_ids": [5]})", 400,
              "bad_words");
  expectError(c, R"({"prompt": "a", "bad_words": "x", "response_format": {"type": )"
                 R"("json_object"}})",
              400, "bad_words");
  std::string many = R"({"prompt": "a", "bad_words": ["x")";
  for (size_t i = 0; i < server::kMaxBadWords; ++i) many += R"(, "x")";
  expectError(c, many + "]}", 400, "bad_words");
  expectError(c, R"({"prompt": "a", "typical_p": 0.9})", 400, "typical_p");
  expectError(c, R"({"prompt": "a", "repeat_penalty": 1.1})", 400, "repeat_penalty");
  expectError("/v1/chat/completions",
              R"({"messages": [{"role": "user", "content": "x"}], "mirostat": 2})", 400,
              "mirostat");
  for (const char *neutral : {R"("skip_special_tokens": true)", R"("repeat_penalty": 1.0)",
                              R"("spaces_between_special_tokens": true)", R"("bad_words": [])",
                              R"("typical_p": 1)", R"("prompt_logprobs": null)"}) {
    auto res = r.client().Post(c, R"({"prompt": [1, 5], "max_tokens": 1, )" +
                                      std::string(neutral) + "}",
                               "application/json");
    EXPECT_EQ(res->status, 200) << neutral << " " << res->body;
  }
  expectError(c, R"({"prompt": "a", "model": "gpt-4"})", 400, "model");
  expectError(c, R"({"prompt": [1, 400]})", 400, "prompt");
  expectError(c, json({{"prompt", randomPrompt(160, 3)}}).dump(), 400, "prompt");
  expectError(c, R"({"prompt": [1, 5], "max_tokens": 159})", 400, "max_tokens");

  const std::string chat = "/v1/chat/completions";
  expectError(chat, R"({"messages": []})", 400, "messages");
  expectError(chat, R"({"messages": [{"role": "robot", "content": "x"}]})", 400,
              "messages[0].role");
  // The byte tokenizer has no chat template.
  expectError(chat, R"({"messages": [{"role": "user", "content": "x"}]})", 400, "messages");
  expectError(c, R"({"prompt": ")" + std::string(5000, 'x') + "\"}", 413, nullptr);
  auto missing = r.client().Get("/v2/nothing");
  EXPECT_EQ(missing->status, 404);
  EXPECT_EQ(json::parse(missing->body)["error"]["code"], "not_found");
}

TEST(Server, ApiKey) {
  server::ServerOptions o;
  o.apiKey = "sesame";
  Running r(o);
  const json body = completion({1, 5, 9}, 2);
  auto none = post(r, "/v1/completions", body);
  EXPECT_EQ(none->status, 401);
  EXPECT_EQ(json::parse(none->body)["error"]["code"], "invalid_api_key");
  EXPECT_EQ(post(r, "/v1/completions", body, {{"Authorization", "Bearer wrong"}})->status, 401);
  EXPECT_EQ(r.client().Get("/v1/models")->status, 401);
  EXPECT_EQ(post(r, "/v1/completions", body, {{"Authorization", "Bearer sesame"}})->status, 200);
  EXPECT_EQ(r.client().Get("/health")->status, 200); // for load balancers, no key
}

// CORS (--allowed-origins): a web page of a listed origin may call the API
// from a browser; its preflight needs no key; other origins get no header.
TEST(Server, CrossOriginCallsFromListedOriginsOnly) {
  server::ServerOptions o;
  o.apiKey = "sesame";
  o.allowedOrigins = {"http://localhost:3000", "https://chat.example"};
  Running r(o);
  const httplib::Headers ask = {{"Origin", "http://localhost:3000"},
                                {"Access-Control-Request-Method", "POST"},
                                {"Access-Control-Request-Headers", "authorization,content-type"}};
  auto pre = r.client().Options("/v1/chat/completions", ask);
  ASSERT_TRUE(pre);
  EXPECT_EQ(pre->status, 204);
  EXPECT_EQ(pre->get_header_value("Access-Control-Allow-Origin"), "http://localhost:3000");
  EXPECT_EQ(pre->get_header_value("Access-Control-Allow-Headers"), "authorization,content-type");
  EXPECT_NE(pre->get_header_value("Access-Control-Allow-Methods").find("POST"), std::string::npos);
  const json body = completion({1, 5, 9}, 2);
  auto ok = post(r, "/v1/completions", body,
                 {{"Origin", "https://chat.example"}, {"Authorization", "Bearer sesame"}});
  EXPECT_EQ(ok->status, 200);
  EXPECT_EQ(ok->get_header_value("Access-Control-Allow-Origin"), "https://chat.example");
  EXPECT_EQ(ok->get_header_value("Vary"), "Origin");
  // The page may read the error too.
  auto noKey = post(r, "/v1/completions", body, {{"Origin", "http://localhost:3000"}});
  EXPECT_EQ(noKey->status, 401);
  EXPECT_EQ(noKey->get_header_value("Access-Control-Allow-Origin"), "http://localhost:3000");
  // Another origin: answered, but without the header, so its browser refuses.
  auto other = post(r, "/v1/completions", body,
                    {{"Origin", "http://evil.example"}, {"Authorization", "Bearer sesame"}});
  EXPECT_EQ(other->status, 200);
  EXPECT_FALSE(other->has_header("Access-Control-Allow-Origin"));
  auto otherPre = r.client().Options("/v1/completions", {{"Origin", "http://evil.example"}});
  EXPECT_EQ(otherPre->status, 204);
  EXPECT_FALSE(otherPre->has_header("Access-Control-Allow-Origin"));
  EXPECT_FALSE(otherPre->has_header("Access-Control-Allow-Methods"));
}

TEST(Server, AnyOriginWithAStarAndNoneByDefault) {
  server::ServerOptions o;
  o.allowedOrigins = {"*"};
  Running any(o);
  auto res = any.client().Get("/v1/models", {{"Origin", "http://anything.example:8080"}});
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->get_header_value("Access-Control-Allow-Origin"), "*");
  Running none;
  auto plain = none.client().Get("/v1/models", {{"Origin", "http://localhost:3000"}});
  EXPECT_EQ(plain->status, 200);
  EXPECT_FALSE(plain->has_header("Access-Control-Allow-Origin"));
  auto pre = none.client().Options("/v1/models", {{"Origin", "http://localhost:3000"}});
  EXPECT_EQ(pre->status, 204);
  EXPECT_FALSE(pre->has_header("Access-Control-Allow-Origin"));
}

TEST(Server, FullQueueAnswers503WithRetryAfter) {
  std::atomic<bool> paused{true};
  server::ServerOptions o;
  o.maxQueue = 1;
  o.beforeStep = [&] {
    while (paused) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  };
  Running r(o);
  std::thread first([&] { EXPECT_EQ(post(r, "/v1/completions", completion({1, 5}, 4))->status, 200); });
  // The first is admitted (and held: the scheduler is paused); the next is refused.
  ASSERT_TRUE(eventually([&] { return r.srv.metrics().gauges().inFlight == 1; }));
  httplib::Result refused = post(r, "/v1/completions", completion({1, 6}, 4));
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 503);
  EXPECT_EQ(refused->get_header_value("Retry-After"), "1");
  EXPECT_EQ(json::parse(refused->body)["error"]["type"], "server_error");
  paused = false;
  first.join();
  EXPECT_EQ(post(r, "/v1/completions", completion({1, 6}, 4))->status, 200);
}

TEST(Server, SixteenConcurrentStreamsEachGetTheirOwnAnswer) {
  Running r;
  const int n = 16;
  std::vector<Stream> got(n);
  std::vector<std::thread> clients;
  for (int i = 0; i < n; ++i)
    clients.emplace_back([&, i] {
      got[size_t(i)] = postStream(r, "/v1/completions", completion(randomPrompt(4 + i, 100 + uint32_t(i)), 10 + i));
    });
  for (std::thread &t : clients) t.join();
  for (int i = 0; i < n; ++i) {
    SCOPED_TRACE("client " + std::to_string(i));
    EXPECT_EQ(got[size_t(i)].status, 200);
    EXPECT_TRUE(got[size_t(i)].done);
    const std::vector<int32_t> want = model().alone(randomPrompt(4 + i, 100 + uint32_t(i)), 10 + i);
    EXPECT_EQ(got[size_t(i)].ids, want);
    EXPECT_EQ(got[size_t(i)].text, asSent(model().tok->decode(want)));
  }
  EXPECT_TRUE(eventually([&] { return r.srv.metrics().gauges().pagesUsed == 0; }));
}

TEST(Server, AClientThatLeavesMidStreamFreesItsPages) {
  server::ServerOptions o;
  o.beforeStep = [] { std::this_thread::sleep_for(std::chrono::milliseconds(5)); };
  Running r(o);
  const Stream s = postStream(r, "/v1/completions", completion(randomPrompt(10, 4), 80), 3);
  EXPECT_EQ(s.events.size(), 3u);
  EXPECT_FALSE(s.done);
  // Cancelled within a token or two of the connection closing, long before
  // its 80 tokens: every page is back and the generation counts cancelled.
  EXPECT_TRUE(eventually([&] {
    const std::string m = r.client().Get("/metrics")->body;
    return m.find("kvplan_kv_pages_used 0\n") != std::string::npos &&
           m.find("finish_reason=\"cancelled\"} 1") != std::string::npos;
  }));
  EXPECT_EQ(r.srv.metrics().gauges().running, 0);
  const std::string m = r.client().Get("/metrics")->body;
  const size_t at = m.find("\nkvplan_generation_tokens_total ");
  ASSERT_NE(at, std::string::npos);
  EXPECT_LT(std::stoll(m.substr(at + 32)), 60);
}

TEST(Server, StoppingWithRequestsInFlightEndsThemAndReturns) {
  server::ServerOptions o;
  o.beforeStep = [] { std::this_thread::sleep_for(std::chrono::milliseconds(3)); };
  auto r = std::make_unique<Running>(o);
  std::vector<Stream> streams(3);
  std::vector<int> statuses(3, 0);
  std::vector<std::thread> clients;
  for (int i = 0; i < 3; ++i) {
    clients.emplace_back([&, i] {
      streams[size_t(i)] = postStream(*r, "/v1/completions", completion(randomPrompt(6, uint32_t(i)), 80));
    });
    clients.emplace_back([&, i] {
      statuses[size_t(i)] = post(*r, "/v1/completions", completion(randomPrompt(7, uint32_t(i)), 80))->status;
    });
  }
  // All six admitted (80 tokens take 240 ms at least), some running.
  ASSERT_TRUE(eventually([&] {
    const server::EngineGauges g = r->srv.metrics().gauges();
    return g.inFlight == 6 && g.running > 0;
  }));
  const auto t0 = std::chrono::steady_clock::now();
  r->srv.stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
  for (std::thread &t : clients) t.join();
  for (int i = 0; i < 3; ++i) {
    // Each stream ends with an error event saying why, then [DONE]; each
    // whole answer is a 503 (none could have finished 80 tokens yet).
    EXPECT_TRUE(streams[size_t(i)].done);
    ASSERT_FALSE(streams[size_t(i)].events.empty());
    EXPECT_TRUE(streams[size_t(i)].events.back().contains("error"));
    EXPECT_EQ(statuses[size_t(i)], 503);
  }
  EXPECT_EQ(r->engine.openSequences(), 0);
  EXPECT_EQ(r->engine.pages().available(), r->engine.pages().size());
}

//===----------------------------------------------------------------------===//
// Limits: raw connections send what httplib's client will not
//===----------------------------------------------------------------------===//

namespace {

/// A TCP connection to the server on loopback.
struct Raw {
  int fd = -1;
  explicit Raw(int port) {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(uint16_t(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0) ADD_FAILURE() << "connect";
  }
  ~Raw() { ::close(fd); }
  /// False once the server has closed the connection.
  bool send(const std::string &s) const {
    return ::send(fd, s.data(), s.size(), MSG_NOSIGNAL) == ssize_t(s.size());
  }
  /// Everything until the server closes the connection (or 30 s pass: a
  /// server that never closes fails the test, it does not hang it).
  std::string readAll() const {
    std::string out;
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < until) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      char buf[4096];
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) return out;
      out.append(buf, size_t(n));
    }
    ADD_FAILURE() << "the server did not close the connection; read: " << out;
    return out;
  }
};

/// The status of the first response in `raw`, and its JSON error message.
int statusOf(const std::string &raw) {
  return raw.rfind("HTTP/1.1 ", 0) == 0 ? std::stoi(raw.substr(9, 3)) : 0;
}
std::string messageOf(const std::string &raw) {
  const size_t body = raw.find("\r\n\r\n");
  if (body == std::string::npos) return "(no body)";
  return json::parse(raw.substr(body + 4))["error"]["message"].get<std::string>();
}

std::string headersRequest(int headers) {
  std::string r = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n";
  for (int i = 2; i < headers; ++i) r += "X-H" + std::to_string(i) + ": v\r\n";
  return r + "\r\n";
}

} // namespace

TEST(ServerLimits, OversizedHeadersGet431AndTheServerGoesOn) {
  server::ServerOptions o;
  o.limits.maxHeaderBytes = 2048;
  Running r(o);
  // Through httplib's client, as a real one sends them.
  auto res = r.client().Get("/health", {{"X-Big", std::string(3000, 'x')}});
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 431);
  const json e = json::parse(res->body)["error"];
  EXPECT_EQ(e["message"], "the request's headers are larger than 2048 bytes (--max-header-bytes)");
  EXPECT_EQ(e["type"], "invalid_request_error");
  // A head that never ends is cut off at the limit, not read on.
  Raw endless(r.srv.port());
  std::atomic<bool> sending{true};
  std::thread feeder([&] {
    endless.send("GET /health HTTP/1.1\r\nX-Endless: ");
    while (sending && endless.send(std::string(1024, 'y'))) {
    }
  });
  const std::string raw = endless.readAll();
  sending = false;
  feeder.join();
  EXPECT_EQ(statusOf(raw), 431) << raw;
  // One header over httplib's 8 KiB a line, under a larger total limit.
  server::ServerOptions big;
  big.limits.maxHeaderBytes = 64 << 10;
  Running r2(big);
  auto line = r2.client().Get("/health", {{"X-Big", std::string(9000, 'x')}});
  ASSERT_TRUE(line);
  EXPECT_EQ(line->status, 431);
  EXPECT_EQ(json::parse(line->body)["error"]["message"],
            "a request header is longer than 8192 bytes, the most one header may take");
  EXPECT_EQ(r.client().Get("/health")->status, 200);
  EXPECT_EQ(r2.client().Get("/health", {{"X-Fine", std::string(7000, 'x')}})->status, 200);
  const std::string metrics = r.client().Get("/metrics")->body;
  EXPECT_NE(metrics.find("kvplan_http_requests_total{status=\"431\"} 2"), std::string::npos)
      << metrics;
}

TEST(ServerLimits, TooManyHeadersGet431) {
  server::ServerOptions o;
  o.limits.maxHeaders = 10;
  Running r(o);
  Raw ten(r.srv.port());
  ASSERT_TRUE(ten.send(headersRequest(10)));
  EXPECT_EQ(statusOf(ten.readAll()), 200);
  Raw eleven(r.srv.port());
  ASSERT_TRUE(eleven.send(headersRequest(11)));
  const std::string raw = eleven.readAll();
  EXPECT_EQ(statusOf(raw), 431) << raw;
  EXPECT_EQ(messageOf(raw), "the request has more than 10 headers (--max-headers)");
  EXPECT_EQ(r.client().Get("/health")->status, 200);
}

TEST(ServerLimits, ASlowClientIsCutOffAfterTheReadTimeout) {
  server::ServerOptions o;
  o.limits.readTimeout = 1;
  Running r(o);
  // A byte every 100 ms: each read is quick, the head never completes.
  for (const std::string &start :
       {std::string("GET /health HTTP/1.1\r\nX-Slow: "),
        std::string("POST /v1/completions HTTP/1.1\r\nContent-Type: application/json\r\n"
                    "Content-Length: 1000\r\n\r\n{\"prompt\": \"")}) {
    Raw slow(r.srv.port());
    std::atomic<bool> sending{true};
    std::thread feeder([&] {
      slow.send(start);
      // Stops by itself after 60 s, should the server never cut it off.
      for (int i = 0; sending && i < 600 && slow.send("a"); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    });
    const std::string raw = slow.readAll();
    sending = false;
    feeder.join();
    EXPECT_EQ(statusOf(raw), 408) << raw;
    EXPECT_NE(messageOf(raw).find("did not arrive within 1 s (--read-timeout)"), std::string::npos)
        << raw;
  }
  EXPECT_EQ(r.client().Get("/health")->status, 200);
}

TEST(ServerLimits, IdleAndKeepAliveConnectionsAreClosed) {
  server::ServerOptions o;
  o.limits.idleTimeout = 0.5;
  o.limits.maxRequestsPerConnection = 2;
  Running r(o);
  Raw idle(r.srv.port());
  EXPECT_EQ(idle.readAll(), ""); // closed without a word
  // Three requests at once: two answered, the second saying it closes.
  Raw pipelined(r.srv.port());
  const std::string get = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_TRUE(pipelined.send(get + get + get));
  const std::string raw = pipelined.readAll();
  size_t responses = 0;
  for (size_t at = 0; (at = raw.find("HTTP/1.1 200", at)) != std::string::npos; ++at) ++responses;
  EXPECT_EQ(responses, 2u) << raw;
  EXPECT_NE(raw.find("Connection: close"), std::string::npos) << raw;
}

TEST(ServerLimits, ConnectionsBeyondTheLimitGet503) {
  server::ServerOptions o;
  o.limits.maxConnections = 1;
  o.limits.idleTimeout = 30;
  Running r(o);
  // One connection holds the only thread, one waits for it; the third is
  // refused at once.
  auto held = std::make_unique<Raw>(r.srv.port());
  auto waiting = std::make_unique<Raw>(r.srv.port());
  Raw refused(r.srv.port());
  const std::string raw = refused.readAll();
  EXPECT_EQ(statusOf(raw), 503) << raw;
  EXPECT_NE(raw.find("Retry-After: 1"), std::string::npos) << raw;
  EXPECT_NE(messageOf(raw).find("--max-connections"), std::string::npos) << raw;
  held.reset();
  waiting.reset();
  EXPECT_TRUE(eventually([&] {
    auto res = r.client().Get("/health");
    return res && res->status == 200;
  }));
}

TEST(ServerLimits, ChunkedBodiesAreHeldToTheBodyLimit) {
  server::ServerOptions o;
  o.maxBodyBytes = 4096;
  Running r(o);
  // httplib checks Content-Length only; a chunked body is cut off too.
  Raw chunked(r.srv.port());
  std::atomic<bool> sending{true};
  std::thread feeder([&] {
    chunked.send("POST /v1/completions HTTP/1.1\r\nContent-Type: application/json\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n");
    const std::string chunk = "400\r\n" + std::string(1024, 'z') + "\r\n";
    for (int i = 0; sending && i < 1000 && chunked.send(chunk); ++i) {
    }
  });
  const std::string raw = chunked.readAll();
  sending = false;
  feeder.join();
  EXPECT_EQ(statusOf(raw), 413) << raw;
  EXPECT_EQ(messageOf(raw), "the request body is larger than 4096 bytes (--max-body-bytes)");
  auto res = r.client().Post("/v1/completions", std::string(5000, ' '), "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 413);
  EXPECT_EQ(r.client().Get("/health")->status, 200);
}

namespace {

/// A byte-level BPE tokenizer.json without merges: byte b is token b (as
/// GPT-2's byte-to-character map writes it), then ChatML's tokens and
/// Qwen3's <think> and </think> (added, not special, as Qwen3 has them);
/// `deepseek`: DeepSeek-R1's <｜User｜> and <｜Assistant｜> in ChatML's
/// places, then its BOS and EOS.
std::string thinkingTokenizerJson(bool deepseek = false) {
  json vocab = json::object();
  int extra = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
    const int cp = printable ? b : 256 + extra++;
    std::string c;
    if (cp < 0x80) {
      c += char(cp);
    } else {
      c += char(0xC0 | (cp >> 6));
      c += char(0x80 | (cp & 0x3F));
    }
    vocab[c] = b;
  }
  json added = json::array();
  std::vector<std::pair<std::string, bool>> tokens = {
      {"<|im_start|>", true}, {"<|im_end|>", true}, {"<think>", false}, {"</think>", false}};
  if (deepseek)
    tokens = {{"<\uFF5CUser\uFF5C>", false},
              {"<\uFF5CAssistant\uFF5C>", false},
              {"<think>", false},
              {"</think>", false},
              {"<\uFF5Cbegin\u2581of\u2581sentence\uFF5C>", true},
              {"<\uFF5Cend\u2581of\u2581sentence\uFF5C>", true}};
  for (size_t i = 0; i < tokens.size(); ++i)
    added.push_back({{"id", 256 + int(i)}, {"content", tokens[i].first},
                     {"special", tokens[i].second}, {"normalized", false}});
  return json{{"added_tokens", added},
              {"pre_tokenizer", {{"type", "ByteLevel"}, {"use_regex", false}}},
              {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array()}}}}
      .dump();
}

constexpr int32_t kThink = 258, kEndThink = 259;

/// The answer the ids spell, split as a Qwen3 reasoning parser does: after
/// a leading <think>, the text up to </think> (newlines right inside the
/// tags dropped) is reasoning and what follows (leading newlines dropped)
/// content; without a leading <think>, all content. `opened` (DeepSeek-R1,
/// whose prompt opened the thought): reasoning from the start, a leading
/// <think> dropped. `tags`: how kThink and kEndThink read (Magistral's
/// [THINK] and [/THINK]).
std::pair<std::string, std::string> thoughtAndAnswer(const std::vector<int32_t> &ids,
                                                     bool opened = false,
                                                     const server::ThoughtTags &tags = {
                                                         "<think>", "</think>"}) {
  std::string reasoning, content;
  const bool leading = !ids.empty() && ids[0] == kThink;
  int state = leading || opened ? 0 : 2; // 0 before </think>, 2 after
  for (size_t i = leading && state == 0 ? 1 : 0; i < ids.size(); ++i) {
    if (state == 0 && ids[i] == kEndThink) {
      state = 1;
      continue;
    }
    const std::string t = ids[i] == kThink      ? tags.open
                          : ids[i] == kEndThink ? tags.close
                                                : std::string(1, char(ids[i]));
    (state == 0 ? reasoning : content) += t;
  }
  while (!reasoning.empty() && reasoning.front() == '\n') reasoning.erase(reasoning.begin());
  if (state != 0)
    while (!reasoning.empty() && reasoning.back() == '\n') reasoning.pop_back();
  if (state == 1)
    while (!content.empty() && content.front() == '\n') content.erase(content.begin());
  return {reasoning, content};
}

/// The reasoning_content deltas of a streamed chat answer, joined.
std::string streamedReasoning(const Stream &s) {
  std::string streamed;
  for (const json &e : s.events)
    if (e.contains("choices") && !e["choices"].empty())
      streamed += e["choices"][0]["delta"].value("reasoning_content", "");
  return streamed;
}

/// One chat answer, whole and streamed: its reasoning_content and content
/// are what its ids spell, split by thoughtAndAnswer; whether it both
/// thought and answered.
bool expectAnswerSplit(const Running &r, const json &body, bool opened,
                       const server::ThoughtTags &tags) {
  auto res = post(r, "/v1/chat/completions", body);
  EXPECT_TRUE(res && res->status == 200) << (res ? res->body : "no response");
  if (!res || res->status != 200) return false;
  const json c = json::parse(res->body)["choices"][0];
  const std::vector<int32_t> ids = c["token_ids"].get<std::vector<int32_t>>();
  const auto [reasoning, content] = thoughtAndAnswer(ids, opened, tags);
  EXPECT_EQ(c["message"].value("reasoning_content", ""), reasoning);
  EXPECT_EQ(c["message"]["content"], content);
  Stream s = postStream(r, "/v1/chat/completions", body);
  EXPECT_EQ(streamedReasoning(s), reasoning);
  EXPECT_EQ(s.text, content);
  EXPECT_EQ(s.ids, ids);
  return !reasoning.empty() && !content.empty();
}

/// Chat request `plain` answered as it is and with enable_thinking false,
/// whose prompt is `more` tokens longer (the thought the template closes).
std::pair<json, json> withAndWithoutThinking(const Running &r, const json &plain, int more) {
  json noThinking = plain;
  noThinking["chat_template_kwargs"] = {{"enable_thinking", false}};
  auto a = post(r, "/v1/chat/completions", plain), b = post(r, "/v1/chat/completions", noThinking);
  EXPECT_TRUE(a && b && a->status == 200 && b->status == 200) << (b ? b->body : "");
  if (!a || !b || a->status != 200 || b->status != 200) return {json(), json()};
  const json ja = json::parse(a->body), jb = json::parse(b->body);
  EXPECT_EQ(jb["usage"]["prompt_tokens"].get<int>(),
            ja["usage"]["prompt_tokens"].get<int>() + more);
  return {ja, jb};
}

/// expectAnswerSplit over 24 seeds of answers of `maxTokens` drawn among
/// <think>, </think>, "a" and a newline (`bias`: logit_bias); how many both
/// thought and answered.
int splitAnswers(const Running &r, int maxTokens, const json &bias, bool opened,
                 const server::ThoughtTags &tags = {"<think>", "</think>"}) {
  int split = 0;
  for (int seed = 1; seed <= 24; ++seed) {
    SCOPED_TRACE(seed);
    json body = {{"messages", {{{"role", "user"}, {"content", "hi"}}}},
                 {"max_tokens", maxTokens},
                 {"temperature", 1},
                 {"seed", seed},
                 {"allowed_token_ids", {kThink, kEndThink, 'a', '\n'}},
                 {"return_token_ids", true}};
    if (!bias.empty()) body["logit_bias"] = bias;
    split += expectAnswerSplit(r, body, opened, tags);
  }
  return split;
}

} // namespace

// A thinking model's answers: drawn from <think>, </think>, "a" and a
// newline, each seed's reasoning_content and content are what its ids
// spell, split by the parser's rule; streamed, the deltas add up to the
// same. chat_template_kwargs enable_thinking false puts Qwen3's empty
// thought in the prompt.
TEST(ServerReasoning, ThoughtsGoToReasoningContent) {
  TinyModel m;
  m.tok = loadTokenizer("hf-bpe", thinkingTokenizerJson());
  Running r({}, m);
  ASSERT_TRUE(r.srv.separatesReasoning());
  // The random model seldom starts with <think>: a nudge.
  const int split = splitAnswers(r, 16, {{std::to_string(kThink), 3}}, false);
  EXPECT_GE(split, 3) << "too few answers both thought and answered to test the split";

  json plain = {{"messages", {{{"role", "user"}, {"content", "hi"}}}}, {"max_tokens", 1}};
  // "<think>\n\n</think>\n\n": <think>, two newlines, </think>, two newlines.
  withAndWithoutThinking(r, plain, 6);
  json bad = plain;
  bad["chat_template_kwargs"] = {{"add_vision_id", true}};
  auto e = post(r, "/v1/chat/completions", bad);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status, 400);
  EXPECT_EQ(json::parse(e->body)["error"]["param"], "chat_template_kwargs") << e->body;

  // --reasoning-format none: all of it content.
  server::ServerOptions o;
  o.separateReasoning = false;
  Running all(o, m);
  EXPECT_FALSE(all.srv.separatesReasoning());
  json body = {{"messages", {{{"role", "user"}, {"content", "hi"}}}}, {"max_tokens", 8},
               {"allowed_token_ids", {kThink}}, {"return_token_ids", true}};
  auto res = post(all, "/v1/chat/completions", body);
  ASSERT_TRUE(res);
  const json c = json::parse(res->body)["choices"][0];
  EXPECT_FALSE(c["message"].contains("reasoning_content"));
  std::string eight;
  for (int i = 0; i < 8; ++i) eight += "<think>";
  EXPECT_EQ(c["message"]["content"], eight);
}

// OpenAI's reasoning effort: none and minimal ask a thinking model not to
// think (the prompt enable_thinking false makes: Qwen3's empty thought, 6
// tokens more), the others leave it thinking; chat_template_kwargs wins.
TEST(ServerReasoning, ReasoningEffortNoneAsksForNoThought) {
  TinyModel m;
  m.tok = loadTokenizer("hf-bpe", thinkingTokenizerJson());
  Running r({}, m);
  auto promptTokens = [&](json extra, bool responses) {
    json body = responses ? json{{"input", "hi"}, {"max_output_tokens", 1}}
                          : json{{"messages", {{{"role", "user"}, {"content", "hi"}}}},
                                 {"max_tokens", 1}};
    body.update(extra);
    auto res = post(r, responses ? "/v1/responses" : "/v1/chat/completions", body);
    EXPECT_EQ(res->status, 200) << res->body;
    const json u = json::parse(res->body)["usage"];
    return (responses ? u["input_tokens"] : u["prompt_tokens"]).get<int64_t>();
  };
  const int64_t thinking = promptTokens(json::object(), false);
  EXPECT_EQ(promptTokens({{"chat_template_kwargs", {{"enable_thinking", false}}}}, false),
            thinking + 6);
  for (const char *effort : {"none", "minimal", "low", "medium", "high", "xhigh"}) {
    SCOPED_TRACE(effort);
    const bool off = std::string(effort) == "none" || std::string(effort) == "minimal";
    EXPECT_EQ(promptTokens({{"reasoning_effort", effort}}, false), thinking + (off ? 6 : 0));
    EXPECT_EQ(promptTokens({{"reasoning", {{"effort", effort}}}}, true), thinking + (off ? 6 : 0));
  }
  EXPECT_EQ(promptTokens({{"reasoning_effort", "none"},
                          {"chat_template_kwargs", {{"enable_thinking", true}}}},
                         false),
            thinking);
  auto bad = post(r, "/v1/chat/completions",
                  json{{"messages", {{{"role", "user"}, {"content", "hi"}}}},
                       {"reasoning_effort", "max"}});
  EXPECT_EQ(bad->status, 400);
  EXPECT_EQ(json::parse(bad->body)["error"]["param"], "reasoning_effort") << bad->body;
  bad = post(r, "/v1/responses", json{{"input", "hi"}, {"reasoning", {{"effort", 3}}}});
  EXPECT_EQ(bad->status, 400);
  EXPECT_EQ(json::parse(bad->body)["error"]["param"], "reasoning.effort") << bad->body;
}

// /v1/responses: a thinking model's thought is a reasoning item before the
// message (chat's reasoning_content, for the same seed), its tokens
// counted; streamed, the reasoning_text deltas come first and add up to it.
TEST(ServerReasoning, ResponsesPutTheThoughtInAReasoningItem) {
  TinyModel m;
  m.tok = loadTokenizer("hf-bpe", thinkingTokenizerJson());
  Running r({}, m);
  int both = 0;
  for (int seed = 1; seed <= 24; ++seed) {
    SCOPED_TRACE(seed);
    const json sampling = {{"temperature", 1}, {"seed", seed},
                           {"allowed_token_ids", {kThink, kEndThink, 'a', '\n'}},
                           {"logit_bias", {{std::to_string(kThink), 3}}}};
    json chat = sampling, body = sampling;
    chat["messages"] = {{{"role", "user"}, {"content", "hi"}}};
    chat["max_tokens"] = 16;
    body["input"] = "hi";
    body["max_output_tokens"] = 16;
    const json c = json::parse(post(r, "/v1/chat/completions", chat)->body)["choices"][0];
    const std::string reasoning = c["message"].value("reasoning_content", "");
    const std::string content = c["message"]["content"];
    auto res = post(r, "/v1/responses", body);
    ASSERT_EQ(res->status, 200) << res->body;
    const json j = json::parse(res->body);
    const json &out = j["output"];
    ASSERT_EQ(out.size(), reasoning.empty() ? 1u : 2u) << j;
    if (!reasoning.empty()) {
      EXPECT_EQ(out[0]["type"], "reasoning");
      EXPECT_EQ(out[0]["content"][0]["type"], "reasoning_text");
      EXPECT_EQ(out[0]["content"][0]["text"], reasoning);
    }
    EXPECT_EQ(out.back()["type"], "message");
    EXPECT_EQ(out.back()["content"][0]["text"], content);
    const int64_t thought = j["usage"]["output_tokens_details"]["reasoning_tokens"];
    EXPECT_EQ(thought > 0, !reasoning.empty()) << j["usage"];
    EXPECT_LE(thought, j["usage"]["output_tokens"].get<int64_t>());
    const Stream s = postStream(r, "/v1/responses", body);
    std::string streamed;
    bool textBegun = false;
    for (const json &e : s.events) {
      if (e["type"] == "response.reasoning_text.delta") {
        EXPECT_FALSE(textBegun) << "reasoning after the message began";
        streamed += e["delta"].get<std::string>();
      }
      textBegun = textBegun || e["type"] == "response.output_text.delta";
    }
    EXPECT_EQ(streamed, reasoning);
    EXPECT_EQ(s.text, content);
    EXPECT_EQ(s.events.back()["response"]["usage"], j["usage"]);
    both += !reasoning.empty() && !content.empty();
  }
  EXPECT_GE(both, 3) << "too few answers both thought and answered to test the split";
}

// DeepSeek-R1's template (told by <｜User｜> and <｜Assistant｜>) opens the
// thought in the prompt: answers drawn from </think>, <think>, "a" and a
// newline are reasoning until </think>, streamed and not; without thinking,
// the prompt closes the thought and the answer is all content.
TEST(ServerReasoning, DeepSeekAnswersBeginInTheThought) {
  TinyModel m;
  m.tok = loadTokenizer("hf-bpe", thinkingTokenizerJson(true));
  Running r({}, m);
  ASSERT_EQ(r.srv.chatTemplate(), server::ChatTemplate::deepseek_r1);
  ASSERT_TRUE(r.srv.separatesReasoning());
  // <BOS> <｜User｜> h i <｜Assistant｜> <think> \n
  json tokenize = {{"messages", {{{"role", "user"}, {"content", "hi"}}}}};
  auto t = post(r, "/tokenize", tokenize);
  ASSERT_TRUE(t);
  ASSERT_EQ(t->status, 200) << t->body;
  EXPECT_EQ(json::parse(t->body)["tokens"].get<std::vector<int32_t>>(),
            (std::vector<int32_t>{260, 256, 'h', 'i', 257, kThink, '\n'}));
  tokenize["chat_template_kwargs"] = {{"enable_thinking", false}};
  t = post(r, "/tokenize", tokenize);
  ASSERT_TRUE(t);
  EXPECT_EQ(json::parse(t->body)["tokens"].get<std::vector<int32_t>>(),
            (std::vector<int32_t>{260, 256, 'h', 'i', 257, kThink, '\n', '\n', kEndThink, '\n',
                                  '\n'}));
  const int split = splitAnswers(r, 12, json::object(), true);
  EXPECT_GE(split, 3) << "too few answers both thought and answered to test the split";

  // Without thinking: "\n</think>\n\n" after the prompt's "<think>\n", and
  // the answer (only "a" allowed) is content.
  json plain = {{"messages", {{{"role", "user"}, {"content", "hi"}}}},
                {"max_tokens", 3},
                {"allowed_token_ids", {'a'}}};
  auto [a, b] = withAndWithoutThinking(r, plain, 4); // null on failure: operator[] stays safe
  EXPECT_EQ(a["choices"][0]["message"]["reasoning_content"], "aaa");
  EXPECT_EQ(b["choices"][0]["message"]["content"], "aaa");
  EXPECT_FALSE(b["choices"][0]["message"].contains("reasoning_content"));
  // Tools: DeepSeek-R1's tool format is not written.
  json tools = plain;
  tools["tools"] = {{{"type", "function"}, {"function", {{"name", "f"}}}}};
  auto e = post(r, "/v1/chat/completions", tools);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status, 400);
  EXPECT_EQ(json::parse(e->body)["error"]["param"], "tools") << e->body;
}

// Magistral (a Mistral vocabulary with [THINK] and [/THINK] control
// tokens, which decode to no text): the thought between them is read from
// the answer's tokens, as for Qwen3's <think>; `kvplan serve`'s log says so.
TEST(ServerReasoning, MagistralThinksBetweenControlTokens) {
  json j = json::parse(thinkingTokenizerJson());
  j["added_tokens"] = json::array();
  const char *tokens[] = {"[INST]", "[/INST]", "[THINK]", "[/THINK]"}; // 256 to 259
  for (int i = 0; i < 4; ++i)
    j["added_tokens"].push_back({{"id", 256 + i}, {"content", tokens[i]}, {"special", true},
                                 {"normalized", false}});
  TinyModel m;
  m.tok = loadTokenizer("hf-bpe", j.dump());
  ASSERT_EQ(m.tok->decode({kThink, 'a', kEndThink}), "a") << "control tokens have no text";
  Running r({}, m);
  ASSERT_EQ(r.srv.chatTemplate(), server::ChatTemplate::mistral);
  ASSERT_TRUE(r.srv.separatesReasoning());
  const int split =
      splitAnswers(r, 16, {{std::to_string(kThink), 3}}, false, {"[THINK]", "[/THINK]"});
  EXPECT_GE(split, 3) << "too few answers both thought and answered to test the split";
}

namespace {

// gpt-oss's tokens in a byte-level vocabulary: harmony's markers, then
// "analysis" and "final" as tokens of their own (added, not special), so
// that answers drawn at random spell channels.
constexpr int32_t kStart = 256, kEnd = 257, kMessage = 258, kChannel = 259, kConstrain = 260,
                  kReturn = 261, kCall = 262, kAnalysis = 263, kFinal = 264;

std::string harmonyTokenizerJson() {
  json j = json::parse(thinkingTokenizerJson());
  json added = json::array();
  const std::pair<const char *, bool> tokens[] = {
      {"<|start|>", true},   {"<|end|>", true},    {"<|message|>", true}, {"<|channel|>", true},
      {"<|constrain|>", true}, {"<|return|>", true}, {"<|call|>", true},   {"analysis", false},
      {"final", false}};
  for (size_t i = 0; i < std::size(tokens); ++i)
    added.push_back({{"id", 256 + int(i)}, {"content", tokens[i].first},
                     {"special", tokens[i].second}, {"normalized", false}});
  j["added_tokens"] = added;
  return j.dump();
}

/// The reasoning and content a harmony answer's ids spell, by the format's
/// rule for the tokens the test draws (markers, "analysis", "final", "a",
/// "b"): a message's header runs to <|message|>, its channel the text right
/// after its first <|channel|> (<|end|> there is nothing); the text of an
/// analysis message is reasoning (one message's from the last's by a
/// newline), of any other content, to <|end|>; markers inside a message are
/// nothing. An answer where no message opened is all content. Third: both
/// in the order they came (--reasoning-format none's content).
std::tuple<std::string, std::string, std::string> harmonySplit(const std::vector<int32_t> &ids) {
  std::string reasoning, content, all, merged;
  bool body = false, opened = false, analysis = false, thought = false, thinking = false;
  std::vector<int32_t> header;
  auto textOf = [](int32_t id) {
    return id == kAnalysis ? std::string("analysis")
           : id == kFinal  ? std::string("final")
                           : std::string(1, char(id));
  };
  for (int32_t id : ids) {
    const bool marker = id >= kStart && id <= kCall;
    if (!marker) all += textOf(id);
    if (!body) {
      if (id == kStart) header.clear();
      else if (id == kMessage) {
        const auto c = std::find(header.begin(), header.end(), kChannel);
        std::string channel;
        for (auto it = c == header.end() ? c : c + 1; it != header.end() && *it != kChannel; ++it)
          channel += textOf(*it);
        analysis = channel == "analysis";
        body = opened = true;
        header.clear();
      } else if (id != kEnd) {
        header.push_back(id);
      }
      continue;
    }
    if (id == kEnd) {
      body = false;
      thought = thought || thinking;
      thinking = false;
    } else if (!marker && analysis) {
      const std::string text = (thought && !thinking ? "\n" : "") + textOf(id);
      reasoning += text;
      merged += text;
      thinking = true;
    } else if (!marker) {
      content += textOf(id);
      merged += textOf(id);
    }
  }
  if (!opened) content = merged = all;
  return {reasoning, content, merged};
}

} // namespace

// gpt-oss (its harmony tokens say so): the prompt is harmony's, with
// OpenAI's reasoning_effort in its system message; answers drawn at random
// among harmony's markers, "analysis", "final", "a" and "b" are read from
// their tokens, streamed and not: the analysis as reasoning_content, the
// rest as content (with --reasoning-format none, all of it in order).
// <|end|> ends a message and not the answer.
TEST(ServerReasoning, HarmonyAnswersAreReadFromTheirTokens) {
  TinyModel m(320); // the system message alone is some 170 bytes
  m.tok = loadTokenizer("hf-bpe", harmonyTokenizerJson());
  Running r({}, m);
  ASSERT_EQ(r.srv.chatTemplate(), server::ChatTemplate::harmony);
  EXPECT_TRUE(r.srv.separatesReasoning());
  server::ServerOptions none;
  none.separateReasoning = false;
  Running all(none, m);
  EXPECT_FALSE(all.srv.separatesReasoning());
  auto t = post(r, "/tokenize", json{{"messages", {{{"role", "user"}, {"content", "hi"}}}}});
  ASSERT_TRUE(t && t->status == 200);
  const std::vector<int32_t> prompt = json::parse(t->body)["tokens"];
  ASSERT_GE(prompt.size(), 20u);
  EXPECT_EQ(prompt[0], kStart);
  EXPECT_EQ(std::vector<int32_t>(prompt.end() - 20, prompt.end()),
            (std::vector<int32_t>{kEnd, kStart, 'u', 's', 'e', 'r', kMessage, 'h', 'i', kEnd,
                                  kStart, 'a', 's', 's', 'i', 's', 't', 'a', 'n', 't'}));
  // "Reasoning: medium" against high (2 bytes fewer) and minimal (low, 3).
  auto promptTokens = [&](const char *effort) {
    json body = {{"messages", {{{"role", "user"}, {"content", "hi"}}}}, {"max_tokens", 1}};
    if (effort) body["reasoning_effort"] = effort;
    auto res = post(r, "/v1/chat/completions", body);
    EXPECT_TRUE(res && res->status == 200) << (res ? res->body : "");
    return res && res->status == 200
               ? json::parse(res->body)["usage"]["prompt_tokens"].get<int>() : -1;
  };
  const int medium = promptTokens(nullptr);
  EXPECT_EQ(promptTokens("high"), medium - 2);
  EXPECT_EQ(promptTokens("minimal"), medium - 3);

  int thought = 0, answered = 0;
  for (int seed = 1; seed <= 40; ++seed) {
    SCOPED_TRACE(seed);
    json body = {{"messages", {{{"role", "user"}, {"content", "hi"}}}},
                 {"max_tokens", 64}, {"temperature", 1}, {"seed", seed},
                 {"allowed_token_ids", {kEnd, kMessage, kChannel, kAnalysis, kFinal}},
                 {"logit_bias", {{std::to_string(kChannel), 2}, {std::to_string(kMessage), 2},
                                 {std::to_string(kAnalysis), 2}}},
                 {"frequency_penalty", 2}, // the random model repeats itself
                 {"return_token_ids", true}};
    auto res = post(r, "/v1/chat/completions", body);
    ASSERT_TRUE(res && res->status == 200) << (res ? res->body : "");
    const json c = json::parse(res->body)["choices"][0];
    const std::vector<int32_t> ids = c["token_ids"];
    EXPECT_EQ(ids.size(), 64u) << "<|end|> does not end the answer";
    const auto [reasoning, content, merged] = harmonySplit(ids);
    EXPECT_EQ(c["message"].value("reasoning_content", ""), reasoning);
    EXPECT_EQ(c["message"]["content"], content);
    const Stream s = postStream(r, "/v1/chat/completions", body);
    EXPECT_EQ(streamedReasoning(s), reasoning);
    EXPECT_EQ(s.text, content);
    EXPECT_EQ(s.ids, ids);
    // /v1/responses: the same answer as a reasoning item and a message.
    json responses = body;
    for (const char *key : {"messages", "max_tokens", "return_token_ids"}) responses.erase(key);
    responses["input"] = "hi";
    responses["max_output_tokens"] = 64;
    auto rr = post(r, "/v1/responses", responses);
    ASSERT_TRUE(rr && rr->status == 200) << (rr ? rr->body : "");
    const json out = json::parse(rr->body)["output"];
    ASSERT_EQ(out.size(), reasoning.empty() ? 1u : 2u) << out;
    if (!reasoning.empty()) {
      EXPECT_EQ(out[0]["content"][0]["text"], reasoning);
    }
    EXPECT_EQ(out.back()["content"][0]["text"], content);
    // --reasoning-format none: the thought and the answer as content.
    auto whole = post(all, "/v1/chat/completions", body);
    ASSERT_TRUE(whole && whole->status == 200);
    const json w = json::parse(whole->body)["choices"][0];
    EXPECT_FALSE(w["message"].contains("reasoning_content"));
    EXPECT_EQ(w["message"]["content"], merged);
    thought += !reasoning.empty();
    answered += !content.empty();
  }
  EXPECT_GE(thought, 3) << "too few answers thought to test the split";
  EXPECT_GE(answered, 3) << "too few answers answered to test the split";
}

// gpt-oss's calls: a forced call opens the call's message in the prompt
// (harmony names the tool before the arguments) and holds the arguments to
// the tool's parameters; JSON mode opens the final message. required among
// several tools cannot say which to open: a clear 400.
TEST(ServerReasoning, HarmonyForcedCallsAndJsonMode) {
  TinyModel m(640); // the system and developer messages are some 460 bytes
  m.tok = loadTokenizer("hf-bpe", harmonyTokenizerJson());
  Running r({}, m);
  const json tool = {{"type", "function"},
                     {"function",
                      {{"name", "count"},
                       {"parameters",
                        {{"type", "object"},
                         {"properties", {{"n", {{"type", "integer"}}}}},
                         {"required", {"n"}},
                         {"additionalProperties", false}}}}}};
  // Biases as JsonModeAnswersOneObject's (byte b is token b here), for
  // JSON that closes soon: quotes and closing brackets up, space down.
  const json kSoonClosed = {{"34", 4}, {"125", 3}, {"93", 2}, {"32", -4},
                            {"10", -4}, {"13", -4}, {"9", -4}};
  json body = {{"messages", {{{"role", "user"}, {"content", "hi"}}}},
               {"max_tokens", 150}, {"temperature", 1.0}, {"seed", 6},
               {"logit_bias", kSoonClosed},
               {"tools", {tool}},
               {"tool_choice", {{"type", "function"}, {"function", {{"name", "count"}}}}}};
  for (bool stream : {false, true}) {
    SCOPED_TRACE(stream);
    json call;
    if (!stream) {
      auto res = post(r, "/v1/chat/completions", body);
      ASSERT_TRUE(res && res->status == 200) << (res ? res->body : httplib::to_string(res.error()));
      const json c = json::parse(res->body)["choices"][0];
      EXPECT_EQ(c["finish_reason"], "tool_calls");
      ASSERT_EQ(c["message"]["tool_calls"].size(), 1u) << c;
      call = c["message"]["tool_calls"][0];
    } else {
      const Stream s = postStream(r, "/v1/chat/completions", body);
      for (const json &e : s.events)
        if (e.contains("choices") && !e["choices"].empty() &&
            e["choices"][0]["delta"].contains("tool_calls"))
          call = e["choices"][0]["delta"]["tool_calls"][0];
      ASSERT_TRUE(call.is_object()) << "no call streamed";
    }
    EXPECT_EQ(call["function"]["name"], "count");
    const json args = json::parse(call["function"]["arguments"].get<std::string>());
    ASSERT_TRUE(args.is_object());
    EXPECT_TRUE(args["n"].is_number_integer()) << args;
    EXPECT_EQ(args.size(), 1u) << args;
  }
  // The one tool offered: required calls it.
  body["tool_choice"] = "required";
  auto one = post(r, "/v1/chat/completions", body);
  ASSERT_TRUE(one && one->status == 200) << (one ? one->body : "");
  EXPECT_EQ(json::parse(one->body)["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
            "count");
  json other = tool;
  other["function"]["name"] = "other";
  body["tools"].push_back(other);
  auto several = post(r, "/v1/chat/completions", body);
  ASSERT_TRUE(several);
  EXPECT_EQ(several->status, 400);
  EXPECT_EQ(json::parse(several->body)["error"]["param"], "tool_choice") << several->body;

  json jsonMode = {{"messages", {{{"role", "user"}, {"content", "hi"}}}},
                   {"max_tokens", 150}, {"temperature", 1.0}, {"seed", 6},
                   {"response_format", {{"type", "json_object"}}},
                   {"logit_bias", kSoonClosed}};
  auto res = post(r, "/v1/chat/completions", jsonMode);
  ASSERT_TRUE(res && res->status == 200) << (res ? res->body : "");
  const json c = json::parse(res->body)["choices"][0];
  EXPECT_FALSE(c["message"].contains("reasoning_content"));
  EXPECT_EQ(c["finish_reason"], "stop") << c;
  const json answer = json::parse(c["message"]["content"].get<std::string>(), nullptr, false);
  EXPECT_TRUE(answer.is_object()) << c;
}
